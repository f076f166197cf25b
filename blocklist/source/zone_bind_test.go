package source

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newKey returns a fresh hmac-sha256 TSIG key.
func newKey(t testing.TB, name string) *TSIG {
	secret := make([]byte, 32)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	return &TSIG{Name: name, Algorithm: "hmac-sha256", Secret: base64.StdEncoding.EncodeToString(secret)}
}

// serveNotify serves n on a UDP port of 127.0.0.1 until the test ends and
// returns the port.
func serveNotify(t testing.TB, n *Notifier) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: n, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
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

// TestZoneFromBINDNotifyIXFR: BIND is the primary of an RPZ zone, with TSIG
// required and ixfr-from-differences; the source transfers it by AXFR,
// then the zone changes, BIND sends NOTIFY to our listener, and the change
// arrives by IXFR in under 2 s.
func TestZoneFromBINDNotifyIXFR(t *testing.T) {
	const zone = "rpz.test."
	key := newKey(t, "xfr-key.")
	port := freePort(t)
	src, err := NewZone(fmt.Sprintf("axfr://127.0.0.1:%d/rpz.test", port), zoneTestOptions(t, key))
	require.NoError(t, err)
	notifyPort := serveNotify(t, NewNotifier([]Source{src}))
	p := startBIND(t, bindConfig{port: port, zone: zone, notifyPort: notifyPort, key: key, ixfrFromDifferences: true},
		rpzZone(zone, 1, "tiktok.com", "bytedance.com"))
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
	p.setZone(rpzZone(zone, 2, "tiktok.com", "douyin.com", "*.douyin.com"), 2)
	if !assert.Eventually(t, func() bool { return rec.count() >= 2 }, 2*time.Second, tick,
		"the change did not arrive within 2 s of the zone's reload") {
		t.Fatalf("status: %+v\nnamed's log:\n%s", src.Status(), p.logText())
	}
	t.Logf("change served %v after the zone file was rewritten", time.Since(start))
	c = rec.last()
	assert.Equal(t, uint32(2), c.Serial)
	assert.Equal(t, TransferIXFR, c.Transfer, "the second transfer is an IXFR")
	assert.Equal(t, 2, c.Added)
	assert.Equal(t, 1, c.Removed)
	assert.Equal(t, []string{"*.douyin.com", "douyin.com", "tiktok.com"}, owners(c))
	require.IsType(t, &dns.SOA{}, c.Records[0])
	assert.Equal(t, uint32(2), c.Records[0].(*dns.SOA).Serial)
	assert.Contains(t, p.logText(), "transfer of 'rpz.test/IN': IXFR started",
		"the primary logged an incremental transfer (not an AXFR-style one)")

	st := src.Status()
	assert.Equal(t, map[string]uint64{TransferAXFR: 1, TransferIXFR: 1}, st.Transfers)
	assert.Equal(t, TransferIXFR, st.LastTransfer)
	assert.Equal(t, uint32(2), st.Serial)
	assert.Equal(t, "2", st.Version)
	assert.Equal(t, 6, st.Records)
	assert.Positive(t, st.NotifiesAccepted)
	assert.Zero(t, st.NotifiesRefused)
	assert.NoError(t, st.LastError)
}
