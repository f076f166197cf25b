package source

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newKey returns a fresh hmac-sha256 TSIG key.
func newKey(t testing.TB, name string) *TSIG {
	k := testnet.NewBINDKey(t, name)
	return &TSIG{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
}

// serveNotify serves n on a port of 127.0.0.1, over UDP and TCP (Knot
// sends NOTIFY over TCP), until the test ends and returns the port.
func serveNotify(t testing.TB, n *Notifier) int {
	t.Helper()
	pc, l := listenBoth(t)
	// dns.Server checks a signed message's TSIG with the zones' secrets
	// and signs the answer to one (TsigStatus and WriteMsg), as the
	// resolver's listeners do with Notifier.Verify and Notifier.Pack.
	secrets := map[string]string{}
	for name, k := range n.keys {
		secrets[name] = k.Secret
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if req.Response {
			return // never answer an answer
		}
		from := netip.MustParseAddrPort(w.RemoteAddr().String()).Addr().Unmap()
		m := n.Reply(from, req, w.TsigStatus())
		if m == nil {
			m = new(dns.Msg)
			m.SetRcode(req, dns.RcodeNotImplemented)
		}
		_ = w.WriteMsg(m)
	})
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: handler, TsigSecret: secrets},
		&dns.Server{Listener: l, Handler: handler, TsigSecret: secrets, ReadTimeout: 5 * time.Second})
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// owners returns the owner names of the zone's CNAME records, relative to
// the zone, sorted.
func owners(c Content) []string {
	var out []string
	for _, rr := range c.Records {
		if rr.Header().Rrtype == dns.TypeCNAME {
			out = append(out, strings.TrimSuffix(rr.Header().Name, "."+c.Zone))
		}
	}
	slices.Sort(out)
	return out
}

// zoneTestOptions are the options of a zone test: a refresh far away, so
// that only a NOTIFY (or the test) makes the source look again.
func zoneTestOptions(t testing.TB, key *TSIG) Options {
	return Options{Refresh: time.Hour, CacheDir: t.TempDir(), MaxBytes: 64 << 20, Timeout: 2 * time.Second, TSIG: key}
}

// TestZoneFromBINDNotify: BIND is the primary of an RPZ zone, with TSIG
// required; the source transfers it by AXFR, then the zone changes, BIND
// sends NOTIFY to our listener, and the change arrives in under 2 s, not
// counting the wait for the end of the second after the check BIND's
// NOTIFY at its start led to (NotifyInterval): by IXFR with
// ixfr-from-differences, by an AXFR-style answer without.
func TestZoneFromBINDNotify(t *testing.T) {
	for _, tc := range []struct {
		name                string
		ixfrFromDifferences bool
		wantTransfer        string
		wantLog             string
	}{
		{name: "ixfr-from-differences", ixfrFromDifferences: true, wantTransfer: TransferIXFR,
			wantLog: "transfer of 'rpz.test/IN': IXFR started"},
		{name: "no journal", wantTransfer: TransferAXFR, wantLog: "transfer of 'rpz.test/IN': AXFR-style IXFR started"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const zone = "rpz.test."
			key := newKey(t, "xfr-key.")
			port := testnet.FreePort(t, "127.0.0.1")
			src, err := NewZone(fmt.Sprintf("axfr://127.0.0.1:%d/rpz.test", port), zoneTestOptions(t, key))
			require.NoError(t, err)
			notifyPort := serveNotify(t, NewNotifier([]Source{src}))
			p := testnet.StartBIND(t, &testnet.BIND{Port: port, Zone: zone, NotifyPort: notifyPort, Key: bindKey(key),
				IXFR: tc.ixfrFromDifferences}, rpzZone(zone, 1, "tiktok.com", "bytedance.com"))
			rec := run(t, src)

			c := rec.waitCount(t, 1)
			assert.Equal(t, KindZone, c.Kind)
			assert.Equal(t, zone, c.Zone)
			assert.Equal(t, uint32(1), c.Serial)
			assert.Equal(t, TransferAXFR, c.Transfer)
			require.IsType(t, &dns.SOA{}, c.Records[0])
			assert.Len(t, c.Records, 5, "SOA, NS, A and two CNAMEs; no trailing SOA")
			assert.Equal(t, []string{"bytedance.com", "tiktok.com"}, owners(c))
			assert.Zero(t, c.Added)
			assert.Zero(t, c.Removed)
			assert.Equal(t, "serial 1", c.Version())

			start := time.Now()
			p.SetZone(rpzZone(zone, 2, "tiktok.com", "douyin.com", "*.douyin.com"), 2)
			if !assert.Eventually(t, func() bool { return rec.count() >= 2 }, NotifyInterval+2*time.Second, tick,
				"the change did not arrive within 2 s (and NotifyInterval) of the zone's reload") {
				t.Fatalf("status: %+v\nnamed's log:\n%s", src.Status(), p.Log())
			}
			t.Logf("change served %v after the zone file was rewritten", time.Since(start))
			c = rec.last()
			assert.Equal(t, uint32(2), c.Serial)
			assert.Equal(t, tc.wantTransfer, c.Transfer)
			assert.Equal(t, 2, c.Added)
			assert.Equal(t, 1, c.Removed)
			assert.Equal(t, []string{"*.douyin.com", "douyin.com", "tiktok.com"}, owners(c))
			if tc.wantTransfer == TransferIXFR {
				require.NotNil(t, c.Delta, "an IXFR copy carries its changes")
				assert.Equal(t, uint32(1), c.Delta.From)
				assert.Equal(t, []string{"*.douyin.com", "douyin.com"}, owners(Content{Zone: zone, Records: c.Delta.Added}))
				assert.Equal(t, []string{"bytedance.com"}, owners(Content{Zone: zone, Records: c.Delta.Removed}))
			} else {
				assert.Nil(t, c.Delta, "a whole zone carries no changes")
			}
			require.IsType(t, &dns.SOA{}, c.Records[0])
			assert.Equal(t, uint32(2), c.Records[0].(*dns.SOA).Serial)
			// Logged once the transfer is sent: a moment after, maybe.
			assert.Eventually(t, func() bool { return strings.Contains(p.Log(), tc.wantLog) }, waitFor, tick,
				"what the primary logged of the second transfer: %q", tc.wantLog)

			st := waitStatus(t, src, func(st Status) bool { return st.Serial == 2 })
			wantTransfers := map[string]uint64{TransferAXFR: 1}
			wantTransfers[tc.wantTransfer]++
			assert.Equal(t, wantTransfers, st.Transfers)
			assert.Equal(t, tc.wantTransfer, st.LastTransfer)
			assert.Equal(t, uint32(2), st.Serial)
			assert.Equal(t, "2", st.Version)
			assert.Equal(t, 6, st.Records)
			assert.Positive(t, st.NotifiesAccepted)
			assert.Zero(t, st.NotifiesRefused)
			assert.NoError(t, st.LastError)
		})
	}
}

// TestZoneTSIGWithBIND: the primary requires a key; the right key
// transfers (a zone of many messages, each signed and chained to the one
// before, RFC 8945 §5.3.1), and every wrong one fails loudly with nothing
// delivered.
func TestZoneTSIGWithBIND(t *testing.T) {
	const zone = "rpz.test."
	key := newKey(t, "xfr-key.")
	names := []string{"tiktok.com"}
	for i := range 5000 {
		names = append(names, fmt.Sprintf("name%d.example", i))
	}
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: bindKey(key)}, rpzZone(zone, 1, names...))
	other := newKey(t, "xfr-key.")
	for _, tc := range []struct {
		name string
		key  *TSIG
		want string // "": transfers
		is   error
	}{
		{name: "right key", key: key},
		{name: "wrong secret", key: other, want: "BADSIG", is: ErrTSIG},
		{name: "unknown key name", key: &TSIG{Name: "other-key.", Algorithm: "hmac-sha256", Secret: key.Secret}, want: "BADKEY", is: ErrTSIG},
		{name: "wrong algorithm", key: &TSIG{Name: key.Name, Algorithm: "hmac-sha512", Secret: key.Secret}, want: "BADKEY", is: ErrTSIG},
		{name: "no key", want: "REFUSED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewZone(p.Entry(), zoneTestOptions(t, tc.key))
			require.NoError(t, err)
			rec := run(t, src)
			if tc.want == "" {
				c := rec.waitCount(t, 1)
				got := owners(c)
				assert.Len(t, got, len(names))
				assert.Contains(t, got, "tiktok.com")
				// named logs the transfer's end after it has sent the last
				// message, so the line may come a moment after the zone.
				var m []string
				require.Eventually(t, func() bool {
					m = regexp.MustCompile(`AXFR ended: (\d+) messages`).FindStringSubmatch(p.Log())
					return m != nil
				}, waitFor, tick, "named logs the transfer")
				assert.Greater(t, atoi(t, m[1]), 1, "the zone took several signed messages")
				return
			}
			require.Eventually(t, func() bool { return src.Status().LastError != nil }, waitFor, tick)
			st := src.Status()
			assert.ErrorContains(t, st.LastError, tc.want)
			if tc.is != nil {
				assert.ErrorIs(t, st.LastError, tc.is)
			}
			assert.False(t, st.HasContent)
			assert.Equal(t, 0, rec.count())
		})
	}
}

// TestZoneTruncatingKeyWithBIND: a BIND primary whose key is
// hmac-sha256-128 (a MAC truncated to 16 octets, RFC 8945 §5.2.2.1)
// answers dnsfence's whole MAC with a whole one, so sources.tsig, whose
// key is whole, transfers from it (a signed NOTIFY from it, BIND's own
// request, comes truncated: TestSignedNotifyTruncatedMAC).
func TestZoneTruncatingKeyWithBIND(t *testing.T) {
	const zone = "rpz.test."
	key := newKey(t, "xfr-key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: &testnet.BINDKey{Name: key.Name, Algorithm: "hmac-sha256-128", Secret: key.Secret}}, rpzZone(zone, 1, "tiktok.com"))
	src, err := NewZone(p.Entry(), zoneTestOptions(t, key))
	require.NoError(t, err)
	c := run(t, src).waitCount(t, 1)
	assert.Equal(t, []string{"tiktok.com"}, owners(c))
	assert.True(t, p.Logged("AXFR started: TSIG xfr-key"), "named logs the signed transfer; its log:\n%s", p.Log())
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// TestZoneWrongKeyKeepsZoneWithBIND: the primary's key changes (and the
// zone with it); the source's transfer fails with a TSIG error and the
// zone held stays.
func TestZoneWrongKeyKeepsZoneWithBIND(t *testing.T) {
	const zone = "rpz.test."
	key := newKey(t, "xfr-key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: bindKey(key)}, rpzZone(zone, 1, "tiktok.com"))
	src, err := NewZone(p.Entry(), zoneTestOptions(t, key))
	require.NoError(t, err)
	rec := run(t, src)
	rec.waitCount(t, 1)

	p.Key = bindKey(newKey(t, "xfr-key."))
	p.WriteConfig()
	p.SetZone(rpzZone(zone, 2, "douyin.com"), 2)
	poke(t, src)
	st := waitError(t, src, ErrTSIG)
	assert.ErrorContains(t, st.LastError, "BADSIG")
	assert.Equal(t, uint32(1), st.Serial)
	assert.True(t, st.HasContent)
	assert.Equal(t, 1, rec.count())
	assert.Equal(t, []string{"tiktok.com"}, owners(rec.last()))
}

// TestZonePrimaryDownWithBIND: the primary stops; the zone held stays;
// a source restarted while the primary is down delivers the disk copy at
// once; the primary comes back with a new serial, which is picked up.
func TestZonePrimaryDownWithBIND(t *testing.T) {
	const zone = "rpz.test."
	key := newKey(t, "xfr-key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: bindKey(key), IXFR: true}, rpzZone(zone, 1, "tiktok.com", "bytedance.com"))
	opt := zoneTestOptions(t, key)
	first, err := NewZone(p.Entry(), opt)
	require.NoError(t, err)
	rec := &receiver{}
	stop := runWith(t, first, rec)
	rec.waitCount(t, 1)
	waitFile(t, cachePath(opt.CacheDir, first.Name()))

	p.Stop()
	poke(t, first)
	require.Eventually(t, func() bool { return first.Status().LastError != nil }, waitFor, tick)
	st := first.Status()
	assert.True(t, st.HasContent)
	assert.Equal(t, uint32(1), st.Serial)
	assert.Equal(t, 1, rec.count(), "the zone held stays")
	stop()

	// Restart with the primary down: the disk copy at once.
	opt.Refresh = 200 * time.Millisecond
	second, err := NewZone(p.Entry(), opt)
	require.NoError(t, err)
	rec2 := run(t, second)
	c := rec2.waitCount(t, 1)
	assert.True(t, c.FromCache)
	assert.Equal(t, TransferCache, c.Transfer)
	assert.Equal(t, uint32(1), c.Serial)
	assert.Equal(t, []string{"bytedance.com", "tiktok.com"}, owners(c))
	require.Eventually(t, func() bool { return second.Status().ConsecutiveFailures >= 2 }, waitFor, tick)
	st = second.Status()
	assert.True(t, st.HasContent)
	assert.True(t, st.FromCache)
	assert.Empty(t, Missing([]Source{second}))

	// The primary returns with a new serial.
	p.WriteZone(rpzZone(zone, 2, "tiktok.com", "douyin.com"))
	p.Start()
	c = rec2.waitCount(t, 2)
	assert.Equal(t, uint32(2), c.Serial)
	assert.Equal(t, []string{"douyin.com", "tiktok.com"}, owners(c))
	require.Eventually(t, func() bool { st := second.Status(); return st.LastError == nil && !st.FromCache }, waitFor, tick)
}

// TestZoneLongNamesSignedWithBIND: a zone and a key name of some hundreds
// of octets each make BIND's signed answer to the SOA query (over UDP,
// 512 octets without EDNS) too big: BIND 9.18 answers TC, NOERROR, with
// no question and the TSIG alone, signed (RFC 8945 §5.3). The SOA query
// took that for an answer to another question and failed, at every look,
// so the zone was never transferred; it now asks again over TCP, as for
// any TC answer, and the zone arrives.
func TestZoneLongNamesSignedWithBIND(t *testing.T) {
	label := strings.Repeat("a", 60)
	zone := strings.Repeat(label+".", 3) + strings.Repeat("a", 50) + ".rpz.test."
	key := newKey(t, strings.Repeat(strings.Repeat("k", 60)+".", 4)+"key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: bindKey(key)}, rpzZone(zone, 1, "tiktok.com"))
	src, err := NewZone(p.Entry(), zoneTestOptions(t, key))
	require.NoError(t, err)
	c := run(t, src).waitCount(t, 1)
	assert.Equal(t, []string{"tiktok.com"}, owners(c))
	assert.Equal(t, uint32(1), c.Serial)
}
