package resolver

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWildcardListenAnswersFromTheAddressAsked: on a UDP socket bound to
// 0.0.0.0 or [::], each answer leaves from the address its query was sent
// to, not the one the kernel's routing picks (127.0.0.1 for 127.0.0.2,
// ::1 for ::2), which a client's connected socket drops, as dig does: a
// blocked answer and a cache hit written in the read loop's batch, and a
// cache miss answered later, once the upstream has answered. It binds
// wildcard addresses and adds ::2 to lo, so it runs in a network
// namespace of its own.
func TestWildcardListenAnswersFromTheAddressAsked(t *testing.T) {
	if !testnet.InNetns(t, "addr add ::2/128 dev lo") {
		return
	}
	up := startUpstream(t, nil)
	tests := []struct {
		name   string
		listen string
		from   string // the client's address, in the government-devices policy
		to     string // the address asked
	}{
		{name: "IPv4 socket, its routed address", listen: "0.0.0.0:0", from: "127.0.0.1", to: "127.0.0.1"},
		{name: "IPv4 socket, another address", listen: "0.0.0.0:0", from: "127.0.0.1", to: "127.0.0.2"},
		{name: "IPv6 socket, its routed address", listen: "[::]:0", from: "::1", to: "::1"},
		{name: "IPv6 socket, another address", listen: "[::]:0", from: "::1", to: "::2"},
		{name: "IPv6 socket, IPv4 client", listen: "[::]:0", from: "127.0.0.1", to: "127.0.0.1"},
		{name: "IPv6 socket, IPv4 client of another address", listen: "[::]:0", from: "127.0.0.1", to: "127.0.0.2"},
	}
	fences := map[string]*fence{}
	for _, tc := range tests {
		if fences[tc.listen] == nil {
			fences[tc.listen] = startFenceOn(t, tc.listen, up.addr)
		}
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, port, err := net.SplitHostPort(fences[tc.listen].addr)
			require.NoError(t, err)
			server := net.JoinHostPort(tc.to, port)

			r := askConnected(t, server, tc.from, question("tiktok.com.", dns.TypeA, false))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "blocked")

			name := fmt.Sprintf("wildcard-%d.example.org.", i)
			before := up.count.Load()
			r = askConnected(t, server, tc.from, question(name, dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "cache miss")
			require.Len(t, r.Answer, 1, "cache miss")
			assert.Equal(t, before+1, up.count.Load(), "a cache miss goes upstream")

			r = askConnected(t, server, tc.from, question(name, dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "cache hit")
			require.Len(t, r.Answer, 1, "cache hit")
			assert.Equal(t, before+1, up.count.Load(), "a cache hit does not go upstream")
		})
	}
}

// askConnected sends m over UDP from the address from to server on a
// connected socket, which takes only datagrams from server's address, and
// returns the answer.
func askConnected(t *testing.T, server, from string, m *dns.Msg) *dns.Msg {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}
	nc, err := d.DialContext(t.Context(), "udp", server)
	require.NoError(t, err)
	c := &dns.Conn{Conn: nc}
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(2*time.Second)))
	require.NoError(t, c.WriteMsg(m))
	r, err := c.ReadMsg()
	require.NoError(t, err, "no answer from %s: one from another address is not taken", server)
	require.Equal(t, m.Id, r.Id)
	return r
}
