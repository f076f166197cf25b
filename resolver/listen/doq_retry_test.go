package listen

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unprovenClient is a QUIC client that sends its first packet (an
// Initial) and nothing after, as a spoofed source address does: it never
// finishes a handshake, nor answers a Retry. It records the long-header
// packet types it is sent.
type unprovenClient struct {
	net.PacketConn
	mu    sync.Mutex
	sent  bool
	types []byte // the first octet of each packet received, masked to its form and type
}

func (u *unprovenClient) WriteTo(b []byte, a net.Addr) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.sent {
		return len(b), nil
	}
	u.sent = true
	return u.PacketConn.WriteTo(b, a)
}

func (u *unprovenClient) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := u.PacketConn.ReadFrom(b)
	if n > 0 {
		u.mu.Lock()
		u.types = append(u.types, b[0]&0xf0)
		u.mu.Unlock()
	}
	return n, a, err
}

func (u *unprovenClient) SetReadBuffer(n int) error {
	return u.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (u *unprovenClient) SetWriteBuffer(n int) error {
	return u.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

// quicRetry is the first octet of a QUIC version 1 Retry packet, masked:
// long header, fixed bit, type 3 (RFC 9000 §17.2.5).
const quicRetry = 0xf0

// gotRetry reports whether the server sent u a Retry.
func (u *unprovenClient) gotRetry() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.types {
		if t == quicRetry {
			return true
		}
	}
	return false
}

// startUnproven begins a connection attempt to d from ip that stops after
// its first Initial, and returns its client once the server has answered
// it (with its handshake or a Retry).
func startUnproven(t *testing.T, d *doqSetup, ip string) *unprovenClient {
	t.Helper()
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	require.NoError(t, err)
	u := &unprovenClient{PacketConn: udp}
	tr := &quic.Transport{Conn: u}
	t.Cleanup(func() {
		_ = tr.Close()
		_ = udp.Close()
	})
	server, err := net.ResolveUDPAddr("udp", d.addr)
	require.NoError(t, err)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = tr.Dial(ctx, server, clientTLS(d.ca, ALPNDoQ), &quic.Config{Versions: []quic.Version{quic.Version1}})
	}()
	require.Eventually(t, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.types) > 0
	}, 5*time.Second, 5*time.Millisecond, "the server answers the Initial from %s", ip)
	return u
}

// dialFrom opens a DoQ connection to d from ip, following a Retry as any
// QUIC client does.
func dialFrom(t *testing.T, d *doqSetup, ip string) (*quic.Conn, error) {
	t.Helper()
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	require.NoError(t, err)
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() {
		_ = tr.Close()
		_ = udp.Close()
	})
	server, err := net.ResolveUDPAddr("udp", d.addr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return tr.Dial(ctx, server, clientTLS(d.ca, ALPNDoQ), &quic.Config{})
}

// TestDoQRetryUnderLoad: once half of MaxConns are taken, a connection
// attempt must prove its source address with a Retry (RFC 9000 §8.1.2),
// so that Initials from spoofed addresses, which never finish, hold half
// the places at most; a real client follows the Retry and is served.
// Before, every attempt took a place from its first Initial until its
// handshake timed out, and such a flood shut every DoQ client out.
func TestDoQRetryUnderLoad(t *testing.T) {
	d := newDoQSetup(t, func(o *DoQOptions) {
		o.MaxConns = 8
		o.HandshakeTimeout = 5 * time.Second // the unproven attempts stay in handshake for the test
	})
	for i := range 4 {
		u := startUnproven(t, d, netip.AddrFrom4([4]byte{127, 0, 1, byte(2 + i)}).String())
		assert.False(t, u.gotRetry(), "attempt %d, under half of MaxConns: no Retry", i)
	}
	assert.Equal(t, int64(4), d.srv.open.Load())

	for i := range 8 {
		u := startUnproven(t, d, netip.AddrFrom4([4]byte{127, 0, 2, byte(2 + i)}).String())
		assert.True(t, u.gotRetry(), "attempt %d, with half of MaxConns taken: a Retry", i)
	}
	assert.Equal(t, int64(4), d.srv.open.Load(), "an attempt that does not follow its Retry takes no place")

	c, err := dialFrom(t, d, "127.0.3.2")
	require.NoError(t, err, "a real client follows the Retry")
	t.Cleanup(func() { _ = c.CloseWithError(0, "") })
	r, err := doqExchange(c, query("www.example.org."))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
}

// TestDoQRetryPerAddress: one address may have doqUnprovenPerAddress
// connection attempts in handshake before it proves itself; the next gets
// a Retry, and once proven it is admitted (Admit, the per-client cap)
// before its handshake, as TCP is at accept. Before, Admit ran only after
// the handshake, so one address's unfinished attempts could fill every
// place whatever tcp_connections_per_client said. A connection so
// admitted gives its admission back when it ends.
func TestDoQRetryPerAddress(t *testing.T) {
	var mu sync.Mutex
	admitted := map[netip.Addr]int{}
	const perClient = 2
	d := newDoQSetup(t, func(o *DoQOptions) {
		o.MaxConns = 100
		o.HandshakeTimeout = 5 * time.Second
		o.IdleTimeout = time.Second // ends a connection whose CONNECTION_CLOSE was lost
		o.Admit = func(peer netip.Addr) (func(), bool) {
			mu.Lock()
			defer mu.Unlock()
			if admitted[peer] >= perClient {
				return nil, false
			}
			admitted[peer]++
			return func() {
				mu.Lock()
				defer mu.Unlock()
				admitted[peer]--
			}, true
		}
	})
	const ip = "127.0.4.2"
	for i := range doqUnprovenPerAddress {
		assert.False(t, startUnproven(t, d, ip).gotRetry(), "attempt %d", i)
	}
	for i := range 4 {
		assert.True(t, startUnproven(t, d, ip).gotRetry(), "attempt %d past %d in handshake: a Retry", i, doqUnprovenPerAddress)
	}
	assert.Equal(t, int64(doqUnprovenPerAddress), d.srv.open.Load())

	// Proven by the Retry, the address is admitted before its handshake:
	// perClient connections, then CONNECTION_REFUSED.
	var proven []*quic.Conn
	for i := range perClient {
		c, err := dialFrom(t, d, ip)
		require.NoError(t, err, "connection %d", i)
		t.Cleanup(func() { _ = c.CloseWithError(0, "") })
		proven = append(proven, c)
	}
	_, err := dialFrom(t, d, ip)
	var te *quic.TransportError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, quic.ConnectionRefused, te.ErrorCode)

	// A connection admitted before its handshake gives its admission back
	// when it ends, and the address is admitted again. A query first: the
	// handshake confirmed (HANDSHAKE_DONE), the client's CONNECTION_CLOSE
	// goes in a 1-RTT packet the server can read, not in Handshake ones
	// it may have dropped the keys of. Were it lost all the same (seen
	// once in some 70 runs beside other tests on a loaded machine), the
	// idle timeout of a second ends the connection.
	_, err = doqExchange(proven[0], query("www.example.org."))
	require.NoError(t, err)
	require.NoError(t, proven[0].CloseWithError(0, ""))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return admitted[netip.MustParseAddr(ip)] == perClient-1
	}, 5*time.Second, 5*time.Millisecond, "the closed connection's admission released")
	again, err := dialFrom(t, d, ip)
	require.NoError(t, err, "admitted in the place given back")
	t.Cleanup(func() { _ = again.CloseWithError(0, "") })

	// Another address is not held back by the first's.
	c, err := dialFrom(t, d, "127.0.4.3")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.CloseWithError(0, "") })
	r, err := doqExchange(c, query("www.example.org."))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
}

// TestDoQUnprovenCountsByClientNetwork: unproven attempts are counted by
// client network, a /56 for IPv6 as tcp_connections_per_client counts,
// so a host rotating its source address within its /64 gets a Retry as
// one address does; every count ends with its attempt.
func TestDoQUnprovenCountsByClientNetwork(t *testing.T) {
	s := NewDoQServer(DoQOptions{MaxConns: 100})
	from := func(ip string) net.Addr { return &net.UDPAddr{IP: net.ParseIP(ip), Port: 4433} }
	var cancels []context.CancelFunc
	for i := range doqUnprovenPerAddress {
		a := from(fmt.Sprintf("2001:db8:0:1::%x", i+1))
		assert.False(t, s.verifySourceAddress(a), "attempt %d", i)
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		_, err := s.connContext(ctx, &quic.ClientInfo{RemoteAddr: a})
		require.NoError(t, err)
	}
	assert.True(t, s.verifySourceAddress(from("2001:db8:0:1::ffff")), "another address of the same /64")
	assert.True(t, s.verifySourceAddress(from("2001:db8:0:ff::1")), "of the same /56")
	assert.False(t, s.verifySourceAddress(from("2001:db8:0:100::1")), "of another /56")
	assert.False(t, s.verifySourceAddress(from("192.0.2.1")))
	for _, cancel := range cancels {
		cancel()
	}
	require.Eventually(t, func() bool {
		s.unprovenMu.Lock()
		defer s.unprovenMu.Unlock()
		return len(s.unproven) == 0 && s.open.Load() == 0
	}, 5*time.Second, 5*time.Millisecond, "every count ends with its attempt")
	assert.False(t, s.verifySourceAddress(from("2001:db8:0:1::ffff")))
}

// TestDoQUnprovenCountKeepsTheLastAttempt: when one of a client
// network's two unproven attempts ends, the other is still counted, so
// that doqUnprovenPerAddress more in handshake, not one more, get a
// Retry.
func TestDoQUnprovenCountKeepsTheLastAttempt(t *testing.T) {
	s := NewDoQServer(DoQOptions{MaxConns: 100})
	a := &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4433}
	attempt := func() context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := s.connContext(ctx, &quic.ClientInfo{RemoteAddr: a})
		require.NoError(t, err)
		return cancel
	}
	first := attempt()
	defer attempt()() // the second, ended last
	first()
	require.Eventually(t, func() bool { return s.open.Load() == 1 }, 5*time.Second, time.Millisecond, "the first attempt ended")
	require.Eventually(t, func() bool {
		s.unprovenMu.Lock()
		defer s.unprovenMu.Unlock()
		return s.unproven[ClientNetwork(udpPeer(a))] != 2
	}, 5*time.Second, time.Millisecond)
	for i := 1; i < doqUnprovenPerAddress; i++ {
		assert.False(t, s.verifySourceAddress(a), "attempt %d in handshake", i)
		defer attempt()()
	}
	assert.True(t, s.verifySourceAddress(a), "%d in handshake", doqUnprovenPerAddress)
}

// TestDoQHandshakeDoneIsNoLongerUnproven: a connection whose handshake
// is done has proven its address and leaves the unproven count of its
// client network then, not when it closes: doqUnprovenPerAddress open
// connections from one address do not make its next attempt wait for a
// Retry.
func TestDoQHandshakeDoneIsNoLongerUnproven(t *testing.T) {
	d := newDoQSetup(t, func(o *DoQOptions) { o.MaxConns = 100 })
	const ip = "127.0.166.10"
	for i := range doqUnprovenPerAddress {
		c, err := dialFrom(t, d, ip)
		require.NoError(t, err, "connection %d", i)
		t.Cleanup(func() { _ = c.CloseWithError(0, "") })
		_, err = doqExchange(c, query("www.blocked.test")) // served: past serveConn's start
		require.NoError(t, err)
	}
	d.srv.unprovenMu.Lock()
	left := len(d.srv.unproven)
	d.srv.unprovenMu.Unlock()
	assert.Zero(t, left, "networks with attempts counted unproven")
	assert.False(t, startUnproven(t, d, ip).gotRetry(), "a Retry for the attempt after %d open connections", doqUnprovenPerAddress)
}
