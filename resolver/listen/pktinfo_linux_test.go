package listen

import (
	"context"
	"net"
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
	"golang.org/x/sys/unix"
)

// TestPktinfoRoundTrip: the control message putSrc writes for an answer's
// source reads back, with dstOf, as that address; what cannot be a source
// (nothing, a multicast address, the unspecified one) reads as none.
func TestPktinfoRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		addr string
		want string // "": none
	}{
		{name: "IPv4", addr: "127.0.0.2", want: "127.0.0.2"},
		{name: "IPv6", addr: "2001:db8::53", want: "2001:db8::53"},
		{name: "IPv4-mapped", addr: "::ffff:192.0.2.1", want: "192.0.2.1"},
		{name: "IPv6 multicast", addr: "ff02::fb"},
		{name: "IPv6 unspecified", addr: "::"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oob := make([]byte, srcOOBSize)
			a := netip.MustParseAddr(tc.addr)
			n := putSrc(oob, a.Unmap())
			want := netip.Addr{}
			if tc.want != "" {
				want = netip.MustParseAddr(tc.want)
			}
			assert.Equal(t, want, dstOf(oob[:n]))
		})
	}
	assert.Equal(t, netip.Addr{}, dstOf(nil), "no control message")
	assert.Equal(t, netip.Addr{}, dstOf(make([]byte, unix.SizeofCmsghdr)), "a zero header")
}

// TestServerOnWildcardAnswersFromTheAddressAsked: a Server listening on
// 0.0.0.0 answers a query sent to 127.0.0.2 from 127.0.0.2, which the
// client's connected socket takes, not from the address the kernel's
// routing picks (127.0.0.1), which it drops; and Start warns of wildcard
// listen addresses only where answers cannot be so sent: on Linux, of
// none, wildcard or not. It binds the wildcard address, so it runs in a
// network namespace of its own.
func TestServerOnWildcardAnswersFromTheAddressAsked(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	core, logs := observer.New(zapcore.WarnLevel)
	var wildcard string
	s := New(Config{
		Handler: &fakeHandler{},
		Rules:   func() Rules { return fakeRules{} },
		Sockets: func(socks []UDPSocket) {
			for _, so := range socks {
				if a := so.Conn.LocalAddr().(*net.UDPAddr); a.IP.IsUnspecified() {
					wildcard = a.String()
				}
			}
		},
		Log: zap.New(core),
	})
	require.NoError(t, s.Start([]string{"127.0.0.1:0", "0.0.0.0:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	require.NotEmpty(t, wildcard)
	_, port, err := net.SplitHostPort(wildcard)
	require.NoError(t, err)

	nc, err := net.Dial("udp", net.JoinHostPort("127.0.0.2", port))
	require.NoError(t, err)
	defer nc.Close()
	require.Equal(t, "127.0.0.1", nc.LocalAddr().(*net.UDPAddr).IP.String(), "routed from 127.0.0.1")
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	c := &dns.Conn{Conn: nc}
	m := new(dns.Msg)
	m.SetQuestion("fast.", dns.TypeTXT)
	require.NoError(t, c.WriteMsg(m))
	r, err := c.ReadMsg()
	require.NoError(t, err, "answered from 127.0.0.2")
	assert.Equal(t, m.Id, r.Id)

	assert.Empty(t, logs.FilterMessageSnippet("wildcard listen address").All(),
		"answers leave from each query's destination: nothing to warn of")
}

// broadcaster is an IPv4 client socket of from that may send to a
// broadcast address (SO_BROADCAST), unconnected: it reads an answer from
// any source.
func broadcaster(t *testing.T, from string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	turnOn(t, c, unix.SOL_SOCKET, unix.SO_BROADCAST)
	return c
}

// askUDP sends c a query of ID id to to and returns the source of its
// answer, failing unless it comes within 5 seconds.
func askUDP(t *testing.T, c *net.UDPConn, to netip.AddrPort, id uint16) netip.Addr {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.WriteToUDPAddrPort(packedQueryOf(t, "bcast.example.org.", id), to)
	require.NoError(t, err)
	buf := make([]byte, 512)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	require.NoError(t, err, "the answer to query %d, sent to %s", id, to)
	m := new(dns.Msg)
	require.NoError(t, m.Unpack(buf[:n]))
	require.Equal(t, id, m.Id)
	return from.Addr().Unmap()
}

// serveWildcard serves echoWire on one UDP socket of network ("udp": the
// dual-stack socket a Server listens on for 0.0.0.0 and [::]; "udp4")
// bound to the wildcard address, answering from each query's destination
// (answerFromDst), until the test ends, and returns its port. One socket,
// not a Server's SO_REUSEPORT group: every socket of a group reads a
// broadcast datagram, and each answers it.
func serveWildcard(t *testing.T, network string) uint16 {
	t.Helper()
	pc, err := net.ListenUDP(network, &net.UDPAddr{})
	require.NoError(t, err)
	fromDst, err := answerFromDst(pc)
	require.NoError(t, err)
	require.True(t, fromDst, "answers from each query's destination")
	s := newUDPServer(pc, fromDst, echoWire{}, func(string, string) {}, zap.NewNop(), AcceptQuery, func([]byte, error) {})
	go s.serve()
	t.Cleanup(func() {
		s.stopReading()
		s.drain(nil)
	})
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// TestUDPWildcardAnswersABroadcastQuery: a query sent to a broadcast
// address, read on a socket bound to a wildcard address, is answered from
// the address of the interface the kernel answers from (IP_PKTINFO's
// ipi_spec_dst), not from the broadcast address, which no datagram leaves
// from: the answer was lost. That holds on a dual-stack socket, whose IPv4
// datagram also comes with an IPV6_PKTINFO naming the broadcast address,
// also after an IPv6 query read into the same slot of the batch, whose
// control messages took less room; and on an IPv4 socket, which asks for
// IP_PKTINFO alone. It binds wildcard addresses and gives lo
// 127.0.190.1/24 with its broadcast address, so it runs in a network
// namespace of its own.
func TestUDPWildcardAnswersABroadcastQuery(t *testing.T) {
	if !testnet.InNetns(t, "addr add 127.0.190.1/24 brd + dev lo") {
		return
	}
	client := netip.MustParseAddr("127.0.190.1")
	bcast := netip.MustParseAddr("127.0.190.255")
	asked := netip.MustParseAddr("127.0.190.2")

	t.Run("dual-stack", func(t *testing.T) {
		port := serveWildcard(t, "udp")
		b := broadcaster(t, client.String())
		assert.Equal(t, client, askUDP(t, b, netip.AddrPortFrom(bcast, port), 1), "answered from the interface's address")
		assert.Equal(t, asked, askUDP(t, b, netip.AddrPortFrom(asked, port), 2), "answered from the address asked")

		v6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
		require.NoError(t, err)
		t.Cleanup(func() { v6.Close() })
		for id := uint16(3); id < 9; id += 2 {
			assert.Equal(t, netip.IPv6Loopback(), askUDP(t, v6, netip.AddrPortFrom(netip.IPv6Loopback(), port), id))
			assert.Equal(t, client, askUDP(t, b, netip.AddrPortFrom(bcast, port), id+1), "after an IPv6 query")
		}
	})
	t.Run("IPv4", func(t *testing.T) {
		port := serveWildcard(t, "udp4")
		b := broadcaster(t, client.String())
		assert.Equal(t, client, askUDP(t, b, netip.AddrPortFrom(bcast, port), 1), "answered from the interface's address")
		assert.Equal(t, asked, askUDP(t, b, netip.AddrPortFrom(asked, port), 2), "answered from the address asked")
	})
}

// TestUDPWildcardAnswersALinkLocalClient: a query from a link-local
// address (fe80::/10, which is reached only through its interface) is
// answered: the interface it was read from (sin6_scope_id) goes with the
// answer, which without it fails to send. And an IPv4 answer sent from
// the same slot of the batch right after it leaves from its query's
// destination: its control message is cleared before it is written,
// else the interface index it has no field for (ipi_ifindex) holds the
// first octets of the IPv6 address before it, an interface that does
// not exist. It binds [::] and adds link-local addresses to lo, so it
// runs in a network namespace of its own.
func TestUDPWildcardAnswersALinkLocalClient(t *testing.T) {
	if !testnet.InNetns(t, "addr add 127.0.190.1/24 dev lo", "addr add fe80::190:1/64 dev lo", "addr add fe80::190:2/64 dev lo") {
		return
	}
	port := serveWildcard(t, "udp")
	ll, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fe80::190:1"), Zone: "lo"})
	require.NoError(t, err)
	t.Cleanup(func() { ll.Close() })
	v4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("127.0.190.1")})
	require.NoError(t, err)
	t.Cleanup(func() { v4.Close() })
	llAsked := netip.MustParseAddr("fe80::190:2").WithZone("lo")
	v4Asked := netip.MustParseAddr("127.0.190.2")
	for id := uint16(1); id < 7; id += 2 {
		assert.Equal(t, llAsked.WithZone(""), askUDP(t, ll, netip.AddrPortFrom(llAsked, port), id).WithZone(""))
		assert.Equal(t, v4Asked, askUDP(t, v4, netip.AddrPortFrom(v4Asked, port), id+1), "after a link-local answer")
	}
}
