package resolver

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckingDisabledAnswerNotServedWithoutCD (coredns/coredns#6186,
// 0xERR0R/blocky#455, NLnetLabs/unbound#649: a validating upstream's
// answer to a query with CD set, data that failed validation, was cached
// and served to later clients that did not set CD, where their own query
// gets SERVFAIL; RFC 4035 §3.2.2): an upstream that answers `dig +cd`
// with the data and a query without CD with SERVFAIL has each client get
// its own, the CD answer first and then, for the same name, SERVFAIL
// twice (the second a cache lookup), on the wire path, the message path
// and TCP. Checked here and right, now held by this test.
func TestCheckingDisabledAnswerNotServedWithoutCD(t *testing.T) {
	peerNeedAddrs(t)
	up := startUpstreamAt(t, peerUp, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.CheckingDisabled {
			return defaultAnswer(w, r)
		}
		return rcodeAnswer(dns.RcodeServerFailure)(w, r)
	})
	addr := startPeerFence(t, up.addr)
	for i, tc := range peerPaths {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("bogus%d.example.org.", i)
			ask := func(cd bool) *dns.Msg {
				q := question(name, dns.TypeA, true)
				if tc.other {
					q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}}}
				}
				q.CheckingDisabled = cd
				return ask(t, addr, peerClient, tc.network, q)
			}
			r := ask(true)
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.True(t, r.CheckingDisabled, "CD copied")
			require.Len(t, r.Answer, 1, "the data, for the client that asked not to have it checked")
			for range 2 {
				r = ask(false)
				assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
				assert.False(t, r.CheckingDisabled)
				assert.Empty(t, r.Answer, "no data that failed validation for a client that did not set CD")
			}
		})
	}
}
