package resolver

import (
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTruncatedFailureAskedOverTCP (hickory-dns/hickory-dns#1627, #1629:
// a truncated UDP answer with no records and an error RCODE was taken as
// the upstream's error, not asked again over TCP): TC set means the
// datagram is not the answer, whatever its RCODE (RFC 1035 §4.2.1, RFC
// 7766 §5), so a truncated SERVFAIL, NXDOMAIN, REFUSED or FORMERR is asked
// again over TCP and the client gets the TCP answer, on the wire path
// and the message path alike.
func TestTruncatedFailureAskedOverTCP(t *testing.T) {
	peerNeedAddrs(t)
	rcodes := []int{dns.RcodeServerFailure, dns.RcodeNameError, dns.RcodeRefused, dns.RcodeFormatError}
	up := startUpstreamAt(t, peerUp, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		var i int
		if _, err := fmt.Sscanf(r.Question[0].Name, "tc%d-", &i); err != nil || i >= len(rcodes) {
			return m // a probe
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Answer = nil
			m.Rcode = rcodes[i]
			m.Truncated = true
		}
		return m
	})
	addr := startPeerFence(t, up.addr)
	for i, rcode := range rcodes {
		for _, path := range []string{"wire path", "message path"} {
			t.Run(dns.RcodeToString[rcode]+" "+path, func(t *testing.T) {
				name := fmt.Sprintf("tc%d-%s.example.org.", i, path[:4])
				q := question(name, dns.TypeA, true)
				if path == "message path" {
					// An option of no meaning: the wire path leaves the
					// query to the message path.
					q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}}}
				}
				r := ask(t, addr, peerClient, "udp", q)
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, dns.RcodeToString[r.Rcode])
				assert.False(t, r.Truncated)
				require.Len(t, r.Answer, 1)
				assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
				var tcp bool
				for _, s := range up.queries() {
					tcp = tcp || s.tcp && s.msg.Question[0].Name == name
				}
				assert.True(t, tcp, "asked again over TCP")
			})
		}
	}
}
