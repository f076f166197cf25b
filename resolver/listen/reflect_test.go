package listen

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// TestQueriesFromReflectingPortsDropped: a UDP query from the port of a
// service that answers any datagram (echo 7, Active Users 11, daytime 13,
// Quote of the Day 17, chargen 19, time 37, kpasswd 464) is dropped
// unread and counted, as BIND drops all but 11 and 17
// (ns_client_dropport): a query forged from one had dnsfence and the
// service answer each other, without end from a source exempt from the
// rate limit (loopback is, by default). The same query from an ordinary
// port, and from 53 (a forwarder with a fixed query-source port), is
// answered. In a network namespace of its own, whose root may bind the
// low ports.
func TestQueriesFromReflectingPortsDropped(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	h := &fakeHandler{}
	var mu sync.Mutex
	dropped := 0
	var addr string
	s := New(Config{
		Handler: h,
		Count: func(transport, result string) {
			if transport == UDP && result == ResultDropped {
				mu.Lock()
				dropped++
				mu.Unlock()
			}
		},
		Rules:   func() Rules { return fakeRules{} },
		Sockets: func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() },
		Log:     zaptest.NewLogger(t),
	})
	require.NoError(t, s.Start([]string{"127.0.0.1:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	server, err := net.ResolveUDPAddr("udp", addr)
	require.NoError(t, err)

	ask := func(port int) *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		require.NoError(t, err, "bind port %d", port)
		t.Cleanup(func() { c.Close() })
		m := new(dns.Msg)
		m.SetQuestion("fast.", dns.TypeTXT)
		b, err := m.Pack()
		require.NoError(t, err)
		_, err = c.WriteToUDP(b, server)
		require.NoError(t, err)
		return c
	}

	for i, port := range []int{7, 11, 13, 17, 19, 37, 464} {
		c := ask(port)
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return dropped == i+1
		}, 5*time.Second, 5*time.Millisecond, "the query from port %d is counted as dropped", port)
		// Counted as dropped, it was not answered; nothing waits to be read.
		require.NoError(t, c.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
		_, _, err := c.ReadFromUDP(make([]byte, 512))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "no answer to port %d", port)
	}
	for _, port := range []int{53, 0} { // 0: an ephemeral port the kernel picks
		c := ask(port)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		b := make([]byte, 512)
		n, _, err := c.ReadFromUDP(b)
		require.NoError(t, err, "an answer to %s", c.LocalAddr())
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(b[:n]))
		assert.Equal(t, "fast.", r.Question[0].Name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Len(t, h.transports, 2, "the handler saw only the two answered queries")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 7, dropped, "only the seven queries from the services' ports")
}

// TestReflectingPort: the ports dropped are the forged 0 and the seven
// services that answer any datagram; the DNS ports and every other are
// not. QOTD (17, RFC 865) and Active Users (11, RFC 866) answer whatever
// datagram comes, as echo, daytime, chargen and time do (RFCs 862 to 868,
// Windows' Simple TCP/IP Services among them): a quote sent to dnsfence
// reads as a query (ASCII text has QR clear) and is answered NOTIMP or
// FORMERR, which the service answers with another quote (red team: 20,000
// datagrams in under 2 s from one, with the rate limit off).
func TestReflectingPort(t *testing.T) {
	for _, p := range []int{0, 7, 11, 13, 17, 19, 37, 464} {
		assert.True(t, reflectingPort(p), "port %d", p)
	}
	for _, p := range []int{1, 9, 53, 123, 853, 1024, 5353, 32768, 65535} {
		assert.False(t, reflectingPort(p), "port %d", p)
	}
}
