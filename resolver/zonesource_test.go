package resolver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// zoneConfig serves one government client, 127.0.0.2, the only client
// allowed (the primary, 127.0.0.1, is not), with the zone entry as its
// block list.
func zoneConfig(t *testing.T, upstream, entry string, key testnet.BINDKey) string {
	return testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
upstreams: ["%s"]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.2/32"]
log: {queries: blocked}
policies:
  - name: gov
    clients: ["127.0.0.2/32"]
    block: ["%s"]
sources: {cache_dir: cache, tsig: %s}
`, upstream, entry, tsigYAML(key))})
}

// notifyFrom sends a NOTIFY for zone to the fence from a loopback address.
func notifyFrom(t *testing.T, addr, from, zone string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetNotify(zone)
	return ask(t, addr, from, "udp", m)
}

// TestZoneSource: BIND is the primary of an RPZ zone that dnsfence
// transfers with TSIG and blocks by (each action, response-IP triggers,
// the unsupported records reported with their owners and skipped); the
// zone changes, BIND's NOTIFY reaches dnsfence's own listener (from an
// address allowed_clients does not hold) and the change is served in
// under 2 s by IXFR; a NOTIFY from elsewhere is refused; the primary
// stops and dnsfence keeps blocking; dnsfence restarted while the primary
// is down blocks at once from sources.cache_dir; the primary returns with
// a new serial, which is picked up.
func TestZoneSource(t *testing.T) {
	const zone = "rpz.test."
	up := startUpstream(t, respIPAnswer)
	key := testnet.NewBINDKey(t, "xfr-key.")
	port := testnet.FreePort(t, "127.0.0.1")
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, NotifyPort: port, Key: &key, IXFR: true}, testnet.RPZText(zone, 1,
		"tiktok.com CNAME .", "*.tiktok.com CNAME .", "douyin.com CNAME *.", "bytedance.com CNAME rpz-drop.",
		"24.0.100.51.198.rpz-ip CNAME .",
		"note TXT \"local data\"", "ns1.example.rpz-nsdname CNAME .", "32.1.0.0.127.rpz-client-ip CNAME ."))
	entry := p.Entry()
	dir := zoneConfig(t, up.addr, entry, key)
	f := startSourceFence(t, dir, listen)
	const gov = "127.0.0.2"

	t.Run("transfers and blocks", func(t *testing.T) {
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "www.tiktok.com."), "in the first snapshot")
		r := ask(t, f.addr, gov, "udp", question("douyin.com.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Empty(t, r.Answer, "NODATA")
		_, err := exchangeTimeout(f.addr, gov, "udp", question("bytedance.com.", dns.TypeA, true), 500*time.Millisecond)
		assert.Error(t, err, "drop")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "cdn.example.net."), "a response-IP trigger")
		assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.example.org."))
		assert.Equal(t, dns.RcodeRefused, f.rcode(t, "127.0.0.1", "www.example.org."), "127.0.0.1 is no client")

		st := f.status(t, entry)
		assert.Equal(t, uint32(1), st.Serial)
		assert.Equal(t, source.TransferAXFR, st.LastTransfer)
		ready, why := f.ready(t)
		assert.True(t, ready, why)
		line, ok := auditLine(f.logs, "www.tiktok.com.")
		require.True(t, ok)
		assert.Equal(t, entry, line[logList])
		assert.Equal(t, "*.tiktok.com.rpz.test.", line[logOwner], "the owner names the entry")
		assert.EqualValues(t, 1, line[logZoneSerial])
		assert.NotContains(t, line, logListLine, "a transfer has no lines")
		e := f.handler.Snapshot().Explain(netipMustParse(gov), "www.tiktok.com.", dns.TypeA)
		assert.Contains(t, e.String(), fmt.Sprintf("www.tiktok.com. blocked by %s serial 1, owner *.tiktok.com.rpz.test.: *.tiktok.com", entry))

		var text string
		for _, l := range f.logs.FilterMessage("skipped bad lines").All() {
			text += fmt.Sprint(l.ContextMap()["error"])
		}
		for _, owner := range []string{"note.rpz.test.", "ns1.example.rpz-nsdname.rpz.test.", "32.1.0.0.127.rpz-client-ip.rpz.test."} {
			assert.Contains(t, text, entry+" "+owner+": ")
		}
	})

	t.Run("NOTIFY, then the change by IXFR in under 2 s", func(t *testing.T) {
		start := time.Now()
		p.SetZone(testnet.RPZText(zone, 2, "tiktok.com CNAME .", "*.tiktok.com CNAME .", "bytedance.com CNAME rpz-drop.",
			"capcut.com CNAME .", "24.0.100.51.198.rpz-ip CNAME .",
			"note TXT \"local data\"", "ns1.example.rpz-nsdname CNAME .", "32.1.0.0.127.rpz-client-ip CNAME ."), 2)
		f.eventuallyRcode(t, gov, "capcut.com.", dns.RcodeNameError, 2*time.Second)
		t.Logf("change served %v after the zone file was rewritten", time.Since(start))
		assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "douyin.com."))
		r := ask(t, f.addr, gov, "udp", question("douyin.com.", dns.TypeA, true))
		assert.NotEmpty(t, r.Answer, "douyin.com is no longer listed")
		st := f.status(t, entry)
		assert.Equal(t, source.TransferIXFR, st.LastTransfer)
		assert.Positive(t, st.NotifiesAccepted, "the primary's NOTIFY, from outside allowed_clients")
		assert.True(t, p.Logged("transfer of 'rpz.test/IN': IXFR started"), "named logs an IXFR; its log:\n%s", p.Log())
		require.Eventually(t, func() bool {
			return logged(f.logs, "list source applied", map[string]any{logList: entry, "built": builtDelta, "transfer": "IXFR",
				"added": 1, "removed": 1, "version": "serial 2"})
		}, time.Second, 10*time.Millisecond)
		v, _ := metricValue(t, f.registry, "dnsfence_source_serial", "source", entry)
		assert.Equal(t, 2.0, v)
		v, _ = metricValue(t, f.registry, "dnsfence_source_transfers_total", "source", entry, "type", "IXFR")
		assert.Equal(t, 1.0, v)
		v, _ = metricValue(t, f.registry, "dnsfence_source_entries", "source", entry)
		assert.Equal(t, 5.0, v)
	})

	t.Run("NOTIFY from another address or for another zone", func(t *testing.T) {
		before := f.status(t, entry).NotifiesRefused
		r := notifyFrom(t, f.addr, "127.0.0.2", zone)
		assert.Equal(t, dns.RcodeRefused, r.Rcode, "not the primary's address")
		assert.Equal(t, before+1, f.status(t, entry).NotifiesRefused)
		r = notifyFrom(t, f.addr, "127.0.0.1", "other.test.")
		assert.Equal(t, dns.RcodeNotImplemented, r.Rcode, "a zone no source pulls: as before sources")
		r = notifyFrom(t, f.addr, "127.0.0.1", zone)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.True(t, r.Authoritative)
		assert.Equal(t, dns.OpcodeNotify, r.Opcode)
		v, _ := metricValue(t, f.registry, "dnsfence_source_notifies_total", "source", entry, "result", "refused")
		assert.Equal(t, 1.0, v)
		v, _ = metricValue(t, f.registry, "dnsfence_source_notifies_total", "source", entry, "result", "accepted")
		assert.Equal(t, float64(f.status(t, entry).NotifiesAccepted), v)
		assert.GreaterOrEqual(t, v, 1.0, "the primary's NOTIFY just answered")
		v, _ = metricValue(t, f.registry, "dnsfence_queries_total", "transport", "udp", "result", ResultNotify)
		assert.GreaterOrEqual(t, v, 3.0)
	})

	t.Run("the primary stops: dnsfence keeps blocking", func(t *testing.T) {
		p.Stop()
		notifyFrom(t, f.addr, "127.0.0.1", zone) // look now
		// A refused UDP query fails at once, unless the kernel holds back
		// the ICMP that says so (rate limited): then the source's 30 s
		// timeout.
		require.Eventually(t, func() bool { return f.status(t, entry).LastError != nil }, 40*time.Second, 20*time.Millisecond)
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "capcut.com."))
		ready, why := f.ready(t)
		assert.True(t, ready, why)
		assert.Contains(t, why, "serving the last good copy (version 2")
	})

	t.Run("restarted while the primary is down: blocks at once from the disk copy", func(t *testing.T) {
		f.stop()
		g := startSourceFence(t, dir, listen)
		assert.Equal(t, dns.RcodeNameError, g.rcode(t, gov, "capcut.com."), "at once")
		assert.Equal(t, dns.RcodeNameError, g.rcode(t, gov, "www.tiktok.com."))
		st := g.status(t, entry)
		assert.True(t, st.FromCache)
		assert.Equal(t, uint32(2), st.Serial)

		// The primary returns with a new serial: its NOTIFY at load.
		p.Restart(testnet.RPZText(zone, 3, "tiktok.com CNAME .", "*.tiktok.com CNAME .", "bytedance.com CNAME rpz-drop.",
			"capcut.com CNAME .", "24.0.100.51.198.rpz-ip CNAME .", "lemon8.com CNAME ."))
		g.eventuallyRcode(t, gov, "lemon8.com.", dns.RcodeNameError, 10*time.Second)
		assert.Equal(t, uint32(3), g.status(t, entry).Serial)
		assert.False(t, g.status(t, entry).FromCache)
	})
}

// TestZoneSourceTSIG: the right key transfers; a wrong one never does,
// and /readyz says which source has no copy and why.
func TestZoneSourceTSIG(t *testing.T) {
	const zone = "rpz.test."
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: &key}, testnet.RPZText(zone, 1, "tiktok.com CNAME ."))
	for _, tc := range []struct {
		name string
		key  testnet.BINDKey
		want string
	}{
		{name: "right key", key: key},
		{name: "wrong secret", key: testnet.BINDKey{Name: key.Name, Algorithm: key.Algorithm, Secret: testnet.NewBINDKey(t, "xfr-key.").Secret}, want: "BADSIG"},
		{name: "wrong name", key: testnet.BINDKey{Name: "other-key.", Algorithm: key.Algorithm, Secret: key.Secret}, want: "BADKEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startSourceFence(t, zoneConfig(t, up.addr, p.Entry(), tc.key), "127.0.0.1:0")
			if tc.want == "" {
				assert.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.2", "tiktok.com."))
				ready, why := f.ready(t)
				assert.True(t, ready, why)
				return
			}
			require.Eventually(t, func() bool { return f.status(t, p.Entry()).LastError != nil }, 5*time.Second, 20*time.Millisecond)
			assert.ErrorContains(t, f.status(t, p.Entry()).LastError, tc.want)
			assert.ErrorIs(t, f.status(t, p.Entry()).LastError, source.ErrTSIG)
			assert.Equal(t, dns.RcodeSuccess, f.rcode(t, "127.0.0.2", "tiktok.com."), "nothing to block with")
			ready, why := f.ready(t)
			assert.False(t, ready)
			assert.True(t, strings.HasPrefix(why, "not ready: remote lists without a copy"), why)
			assert.Contains(t, why, p.Entry())
			assert.Contains(t, why, tc.want)
			v, _ := metricValue(t, f.registry, "dnsfence_source_has_content", "source", p.Entry())
			assert.Zero(t, v)
		})
	}
}
