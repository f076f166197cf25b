package resolver

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUpstreamCookieNotRelayed (0xERR0R/blocky#1097, #2252: blocky cached
// an upstream's COOKIE with its answer and replayed it, so dig warned
// "Client COOKIE mismatch" to every later client, and an answer carried a
// cookie or not depending on where it came from): dnsfence implements no
// DNS Cookies (RFC 7873 §5.2.1: a server that does not ignores the
// option), so no answer carries one, whatever the upstream's answer
// holds: not on a miss, not on a hit for a client with another Client
// Cookie, on the wire path, the message path or TCP. Nor does the client's
// cookie go upstream, where the Server Cookie would be another server's.
func TestUpstreamCookieNotRelayed(t *testing.T) {
	peerNeedAddrs(t)
	const serverCookie = "a1a2a3a4a5a6a7a8"
	up := startUpstreamAt(t, peerUp, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if m.IsEdns0() == nil {
			m.SetEdns0(1232, false)
		}
		client := "0102030405060708"
		if opt := r.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if c, ok := o.(*dns.EDNS0_COOKIE); ok && len(c.Cookie) >= 16 {
					client = c.Cookie[:16]
				}
			}
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: client + serverCookie})
		return m
	})
	addr := startPeerFence(t, up.addr)
	for i, tc := range peerPaths {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("cookie%d.example.org.", i)
			for _, cookie := range []string{"1111111111111111", "2222222222222222" + serverCookie} {
				q := question(name, dns.TypeA, true)
				opt := q.IsEdns0()
				opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: cookie})
				if tc.other {
					opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}})
				}
				r := ask(t, addr, peerClient, tc.network, q)
				assert.Equal(t, dns.RcodeSuccess, r.Rcode)
				require.Len(t, r.Answer, 1)
				require.NotNil(t, r.IsEdns0())
				for _, o := range r.IsEdns0().Option {
					assert.NotEqual(t, uint16(dns.EDNS0COOKIE), o.Option(), "client cookie %s: no COOKIE in the answer (%v)", cookie, o)
				}
			}
		})
	}
	for _, s := range up.queries() {
		if opt := s.msg.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				assert.NotEqual(t, uint16(dns.EDNS0COOKIE), o.Option(), "no client cookie upstream")
			}
		}
	}
	assert.Equal(t, len(peerPaths), clientQueries(up), "one upstream query a case: the second is a hit")
}
