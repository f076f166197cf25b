package resolver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnreadTruncatedFitsTheClient: an answer miekg/dns does not read
// that is too large for a UDP client's size has the upstream's Extended
// DNS Error passed on with it fitted as a message's is (shrinkOPT): its
// text goes, its code stays, so that the datagram is within the size the
// client gave (RFC 6891 §7); the answer, which fits without the text, is
// then given whole with TC clear (it went as its header and question
// with TC set until the texts went before records,
// TestEDETextsGoBeforeRecordsUnread; one too large even so still does).
// Over TCP the client gets the EDE whole. Before, it went
// whole over UDP too: 600 octets of text made a 512-octet client's
// datagram larger than its size, from the upstream and from the cache.
func TestUnreadTruncatedFitsTheClient(t *testing.T) {
	const client = "127.0.84.4" // in no policy of govConfig: its answers are not inspected
	needLoopback(t, client)
	text := strings.Repeat("x", 600)
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		if q.Qtype != dns.TypeHTTPS {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		m.Answer = []dns.RR{hintRecord(q.Name, 1, ".")}
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: text}}
		writeUnread(w, m)
		return nil
	})
	f := govFence(t, "upstream_timeout: 2s", up.addr)
	whole := append([]byte{0, 0}, text...)
	for _, network := range []string{"udp", "tcp"} {
		name := network + ".svcb.example."
		for i := range 2 { // the upstream's answer, then the cache's
			what := fmt.Sprintf("%s, %d", network, i)
			q := question(name, dns.TypeHTTPS, true)
			q.IsEdns0().SetUDPSize(512)
			b := askOctets(t, f.addr, client, network, q)
			require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, what)
			assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what)
			if network == "tcp" {
				assert.Equal(t, whole, rawOptions(t, b)[dns.EDNS0EDE], "%s: the upstream's EDE", what)
				assert.Equal(t, uint16(1), dnswire.ANCount(b), "%s: the answer", what)
				continue
			}
			assert.LessOrEqual(t, len(b), 512, "%s: within the client's size", what)
			// Without the text the answer fits: whole, TC clear, as a
			// message's is (TestEDETextsGoBeforeRecordsUnread).
			assert.Zero(t, dnswire.Flags(b)&dnswire.FlagTC, "%s: TC clear", what)
			assert.Equal(t, uint16(1), dnswire.ANCount(b), "%s: the answer", what)
			assert.Equal(t, []byte{0, 0}, rawOptions(t, b)[dns.EDNS0EDE], "%s: the EDE's code, not its text", what)
		}
		assert.Equal(t, 1, countQueries(up, name), "%s: cached", network)
	}
}
