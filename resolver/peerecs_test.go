package resolver

import (
	"fmt"
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCacheHitEchoesItsOwnClientSubnet (AdguardTeam/AdGuardHome#4382, the
// dnsproxy cache under it: an answer served from the cache echoed the
// EDNS Client Subnet of the query that filled it, not the asker's, and a
// forwarder that checks the echo, as RFC 7871 §9.2 has it, drops such an
// answer): the clients a trusted proxy names share one cache entry when
// their policy is the same, and each answer, the miss's and the hit's,
// echoes the option of the query it answers, on the UDP wire path, the
// message path and TCP.
func TestCacheHitEchoesItsOwnClientSubnet(t *testing.T) {
	peerNeedAddrs(t)
	up := startUpstreamAt(t, peerUp, nil)
	addr := startPeerFence(t, up.addr)
	subnets := []net.IP{net.IPv4(198, 51, 100, 0).To4(), net.IPv4(203, 0, 113, 0).To4()}
	for i, tc := range peerPaths {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("ecs%d.example.org.", i)
			for _, subnet := range subnets {
				q := question(name, dns.TypeA, true)
				opt := q.IsEdns0()
				opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: subnet})
				if tc.other {
					opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}})
				}
				r := ask(t, addr, peerProxy, tc.network, q)
				assert.Equal(t, dns.RcodeSuccess, r.Rcode)
				require.Len(t, r.Answer, 1)
				echoed := findECS(r)
				require.NotNil(t, echoed, "%s: ECS echoed", subnet)
				assert.Equal(t, subnet.String(), echoed.Address.String(), "the asker's own subnet")
				assert.EqualValues(t, 24, echoed.SourceNetmask)
				assert.EqualValues(t, 24, echoed.SourceScope, "scope: the whole source prefix")
			}
		})
	}
	assert.Equal(t, len(peerPaths), clientQueries(up), "one upstream query a case: the second subnet's is a hit")
}
