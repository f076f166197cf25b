package source

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestNotifyNotActedOnIsLogged: a NOTIFY from an address not the
// primary's, or signed with a key that does not verify, is not acted on,
// and says so in the log (RFC 1996 §3.10: "produce an error message in
// its operations log"), once a NotifyWarnInterval for each reason with the
// count of those not logged, and in NotifiesRefused. dnsfence logged
// either at debug level alone (off by default), and did not count the
// second: a primary whose NOTIFYs leave from another of its addresses, or
// carry another key, had its changes wait for the zone's refresh with
// nothing in the log or /metrics to say why.
func TestNotifyNotActedOnIsLogged(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	key := newKey(t, "xfr-key.")
	z, err := NewZone("axfr://127.0.0.1:5300/rpz.test", Options{TSIG: key, Log: zap.New(core)})
	require.NoError(t, err)
	n := NewNotifier([]Source{z})
	primary, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.49.3")
	unsigned := new(dns.Msg)
	unsigned.SetNotify("rpz.test.")
	notPrimary := "NOTIFY refused: not from an address of the zone's primary; the primary must send it from one " +
		"(BIND notify-source, Knot remote via, NSD outgoing-interface)"
	badTSIG := "NOTIFY not acted on: its TSIG does not verify with sources.tsig"

	for range 3 {
		assert.Equal(t, dns.RcodeRefused, n.Reply(other, unsigned, nil).Rcode)
	}
	lines := logs.FilterMessage(notPrimary).AllUntimed()
	require.Len(t, lines, 1, "one line for three")
	assert.Equal(t, map[string]any{"source": z.Name(), "from": "127.0.49.3", "primary": []any{"127.0.0.1"},
		"not_logged_since": int64(0)}, lines[0].ContextMap())
	assert.Equal(t, zapcore.WarnLevel, lines[0].Level)
	assert.EqualValues(t, 3, z.Status().NotifiesRefused)

	// Signed with another secret, from the primary's address.
	wrong := newKey(t, key.Name)
	signed := new(dns.Msg)
	signed.SetNotify("rpz.test.")
	signed.SetTsig(wrong.Name, dns.HmacSHA256, 300, time.Now().Unix())
	wire, _, err := dns.TsigGenerate(signed, wrong.Secret, "", false)
	require.NoError(t, err)
	req := new(dns.Msg)
	require.NoError(t, req.Unpack(wire))
	verr := n.Verify(req, wire)
	require.ErrorIs(t, verr, dns.ErrSig)
	assert.Equal(t, dns.RcodeNotAuth, n.Reply(primary, req, verr).Rcode)
	lines = logs.FilterMessage(badTSIG).AllUntimed()
	require.Len(t, lines, 1, "a reason of its own")
	assert.Equal(t, "127.0.0.1", lines[0].ContextMap()["from"])
	assert.Contains(t, fmt.Sprint(lines[0].ContextMap()["error"]), "the MAC is not that of key xfr-key.")
	assert.EqualValues(t, 4, z.Status().NotifiesRefused)
	assert.EqualValues(t, 0, z.Status().NotifiesAccepted)
	assert.Empty(t, z.notify, "no check asked for")

	// A NotifyWarnInterval later, the next one is logged with the count
	// of those that were not.
	z.mu.Lock()
	z.warned[notifyNotPrimary].last = time.Now().Add(-NotifyWarnInterval)
	z.mu.Unlock()
	n.Reply(other, unsigned, nil)
	lines = logs.FilterMessage(notPrimary).AllUntimed()
	require.Len(t, lines, 2)
	assert.EqualValues(t, 2, lines[1].ContextMap()["not_logged_since"])

	// From the primary, unsigned: acted on, nothing logged.
	before := logs.Len()
	assert.Equal(t, dns.RcodeSuccess, n.Reply(primary, unsigned, nil).Rcode)
	assert.Equal(t, before, logs.Len())
}

// TestNotifyFromAnotherAddressOfNSD: NSD sends its NOTIFYs from another of
// its addresses (outgoing-interface 127.0.49.3) than the one the entry
// names (127.0.49.2): they are refused, as BIND refuses a NOTIFY from a
// host not among a zone's primaries (RFC 1996 §3.10), and the warning
// names the address they came from; the change arrives at the next
// check.
func TestNotifyFromAnotherAddressOfNSD(t *testing.T) {
	const zone = "rpz.test."
	core, logs := observer.New(zapcore.WarnLevel)
	key := newKey(t, "xfr-key.")
	port := testnet.FreePort(t, "127.0.49.2")
	opt := zoneTestOptions(t, key)
	opt.Log = zap.New(core)
	src, err := NewZone(fmt.Sprintf("axfr://127.0.49.2:%d/rpz.test", port), opt)
	require.NoError(t, err)
	notifyPort := serveNotify(t, NewNotifier([]Source{src}))
	p := startNSD(t, primaryConfig{ip: "127.0.49.2", port: port, zone: zone, key: key,
		notify: fmt.Sprintf("127.0.0.1:%d", notifyPort), notifySource: "127.0.49.3"}, rpzZone(zone, 1, "tiktok.com"))
	rec := run(t, src)
	rec.waitCount(t, 1)
	p.setZone(rpzZone(zone, 2, "tiktok.com", "douyin.com"), 2)
	require.Eventually(t, func() bool {
		return logs.FilterMessageSnippet("NOTIFY refused").FilterField(zap.String("from", "127.0.49.3")).Len() > 0
	}, waitFor, tick, "NSD's NOTIFY refused and logged; NSD's log:\n%s", p.logText())
	assert.Positive(t, src.Status().NotifiesRefused)
	assert.Zero(t, src.Status().NotifiesAccepted)
	assert.Equal(t, 1, rec.count(), "not acted on")
	require.True(t, src.Notify(netip.MustParseAddr("127.0.49.2")), "the next check")
	assert.Equal(t, []string{"douyin.com", "tiktok.com"}, owners(rec.waitCount(t, 2)))
}

// TestNotifyOfOneSourceOfTwoNotWarned: two sources may pull one zone,
// each from its own primary (NewNotifier keeps every source of an apex).
// A NOTIFY from either primary is acted on by its source and answered
// NOERROR; the other source, whose primary did not send it, has nothing
// to warn of, nor to count. Each such NOTIFY was logged by the other
// source as 'NOTIFY refused: not from an address of the zone's primary',
// telling the operator to change a primary that was right, and counted
// refused in its dnsfence_source_notifies_total though it was answered
// NOERROR and acted on. A NOTIFY neither source takes is still logged
// and counted refused, by each.
func TestNotifyOfOneSourceOfTwoNotWarned(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	var zones []*Zone
	var srcs []Source
	for _, primary := range []string{"127.0.0.1", "127.0.49.2"} {
		z, err := NewZone("axfr://"+primary+":5300/rpz.test", Options{Log: zap.New(core)})
		require.NoError(t, err)
		zones, srcs = append(zones, z), append(srcs, z)
	}
	n := NewNotifier(srcs)
	notify := new(dns.Msg)
	notify.SetNotify("rpz.test.")
	notPrimary := "NOTIFY refused: not from an address of the zone's primary; the primary must send it from one " +
		"(BIND notify-source, Knot remote via, NSD outgoing-interface)"

	for i, from := range []string{"127.0.0.1", "127.0.49.2"} {
		assert.Equal(t, dns.RcodeSuccess, n.Reply(netip.MustParseAddr(from), notify, nil).Rcode, from)
		assert.Len(t, zones[i].notify, 1, "%s: its source looks", from)
	}
	assert.Empty(t, logs.FilterMessage(notPrimary).AllUntimed(), "acted on: nothing to warn of")
	for _, z := range zones {
		assert.EqualValues(t, 1, z.Status().NotifiesAccepted, z.Name())
		assert.Zero(t, z.Status().NotifiesRefused, "%s: the other's NOTIFY was acted on, not refused", z.Name())
	}

	assert.Equal(t, dns.RcodeRefused, n.Reply(netip.MustParseAddr("127.0.49.3"), notify, nil).Rcode)
	lines := logs.FilterMessage(notPrimary).AllUntimed()
	require.Len(t, lines, 2, "a line from each source")
	for i, l := range lines {
		assert.Equal(t, zones[i].Name(), l.ContextMap()["source"])
		assert.Equal(t, "127.0.49.3", l.ContextMap()["from"])
	}
	for _, z := range zones {
		assert.EqualValues(t, 1, z.Status().NotifiesRefused, z.Name())
	}
}
