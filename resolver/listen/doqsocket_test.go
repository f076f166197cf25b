package listen

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/ipv4"
)

// quoteOfTheDay is what a QOTD service (RFC 865) sends to any datagram: to
// quic-go, a short-header packet (0x40 set in 'T') of a connection it does
// not know, long enough to be answered with a stateless reset.
var quoteOfTheDay = []byte("The only thing we have to fear is fear itself. F. D. Roosevelt\r\n")

// TestDoQDropsReflectedDatagrams: a datagram from the port of a service
// that answers any datagram (reflectingPort) gets nothing from the DoQ
// listener, as from the DNS over UDP one. quic-go answered it with a
// stateless reset, which such a service answers in turn: one datagram
// forged from a QOTD, daytime or chargen port had the two exchange
// datagrams without end (red team: 20,000 in under 2 s), rate limit or
// none. The same datagram from an ordinary port still gets its reset;
// the listener reads its socket in order, so once that reset is back the
// first datagram has been read (and dropped). In a network namespace of
// its own, whose root may bind the low ports.
func TestDoQDropsReflectedDatagrams(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	d := newDoQSetup(t, nil)
	server, err := net.ResolveUDPAddr("udp", d.addr)
	require.NoError(t, err)
	send := func(port int) *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		require.NoError(t, err, "bind port %d", port)
		t.Cleanup(func() { c.Close() })
		_, err = c.WriteToUDP(quoteOfTheDay, server)
		require.NoError(t, err)
		return c
	}
	for _, port := range []int{7, 11, 13, 17, 19, 37, 464} {
		reflecting := send(port)
		ordinary := send(0)
		require.NoError(t, ordinary.SetReadDeadline(time.Now().Add(5*time.Second)))
		b := make([]byte, 1500)
		n, _, err := ordinary.ReadFromUDP(b)
		require.NoError(t, err, "the stateless reset to an ordinary port, sent after port %d's datagram", port)
		assert.Less(t, n, len(quoteOfTheDay), "a stateless reset is shorter than the packet it answers")

		require.NoError(t, reflecting.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
		_, _, err = reflecting.ReadFromUDP(b)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "nothing sent to port %d", port)
	}
	// Each was read before the ordinary datagram sent after it, whose
	// reset came back: counted dropped, as over UDP.
	assert.Equal(t, 7, d.counts.get(QUIC, ResultDropped), "the seven datagrams from the services' ports counted dropped")
}

// TestWithoutReflected: the messages of a batch from reflecting ports are
// dropped, the others moved to the front in order, each slot keeping its
// own buffers (quic-go returns a slot's buffer to its pool by the slot).
func TestWithoutReflected(t *testing.T) {
	ports := []int{5353, 17, 7, 40000, 19, 53, 0}
	ms := make([]ipv4.Message, len(ports))
	bufs := make([][]byte, len(ports))
	for i, p := range ports {
		bufs[i] = make([]byte, 64)
		ms[i].Buffers = [][]byte{bufs[i]}
		ms[i].OOB = make([]byte, 16)
		ms[i].N = copy(bufs[i], []byte{byte(i), byte(i)})
		ms[i].NN = copy(ms[i].OOB, []byte{byte(i)})
		ms[i].Addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p}
	}
	n := withoutReflected(ms)
	require.Equal(t, 3, n)
	for i, from := range []int{0, 3, 5} {
		assert.Equal(t, ports[from], ms[i].Addr.(*net.UDPAddr).Port)
		assert.Equal(t, []byte{byte(from), byte(from)}, ms[i].Buffers[0][:ms[i].N])
		assert.Equal(t, []byte{byte(from)}, ms[i].OOB[:ms[i].NN])
		assert.Same(t, &bufs[i][0], &ms[i].Buffers[0][0], "slot %d keeps its buffer", i)
	}
}

// TestDoQSocketKeepsBatchedReads: the socket quic-go is given is still a
// UDP socket to it (ECN and the destination address of a wildcard
// listener come as control messages) and reads its own batches, which
// quic-go takes instead of making its own of the file descriptor.
func TestDoQSocketKeepsBatchedReads(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	c := doqPacketConn(pc, func() {})
	_, ok := c.(quic.OOBCapablePacketConn)
	assert.True(t, ok, "an OOBCapablePacketConn")
	_, ok = c.(interface {
		ReadBatch([]ipv4.Message, int) (int, error)
	})
	assert.True(t, ok, "reads its own batches")
}

// TestDoQWildcardAnswersFromTheAddressAsked: a DoQ listener on 0.0.0.0 or
// [::] answers each packet from the address it was sent to, which quic-go
// learns from the packet's control message (IP_PKTINFO, IPV6_PKTINFO)
// read with it: the reflecting-port filter quic-go reads through
// (doqSocket) must hand on the control messages of the batches it
// filters. Without them the kernel's route picks the source (127.0.0.1
// for 127.0.0.2, ::1 for ::2) and a client taking packets only from the
// address it asked, as a connected socket does, never completes a
// handshake. It binds wildcard addresses and adds ::2 to lo, so it runs
// in a network namespace of its own.
func TestDoQWildcardAnswersFromTheAddressAsked(t *testing.T) {
	if !testnet.InNetns(t, "addr add ::2/128 dev lo") {
		return
	}
	tests := []struct {
		name   string
		listen string
		from   string // the client's address
		to     string // the address asked
	}{
		{name: "IPv4 socket, another address", listen: "0.0.0.0:0", from: "127.0.0.1", to: "127.0.0.2"},
		{name: "IPv6 socket, another address", listen: "[::]:0", from: "::1", to: "::2"},
		{name: "IPv6 socket, IPv4 client of another address", listen: "[::]:0", from: "127.0.0.1", to: "127.0.0.2"},
	}
	setups := map[string]*doqSetup{}
	for _, tc := range tests {
		if setups[tc.listen] == nil {
			setups[tc.listen] = newDoQSetupAt(t, tc.listen, nil, nil)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := setups[tc.listen]
			_, port, err := net.SplitHostPort(d.addr)
			require.NoError(t, err)
			server, err := net.ResolveUDPAddr("udp", net.JoinHostPort(tc.to, port))
			require.NoError(t, err)
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(tc.from)})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			only := &onlyFrom{PacketConn: c, from: unmapped(server.AddrPort())}
			tr := &quic.Transport{Conn: only}
			t.Cleanup(func() { tr.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			qc, err := tr.Dial(ctx, server, clientTLS(d.ca, ALPNDoQ), &quic.Config{})
			require.NoError(t, err, "a handshake with %s (packets from elsewhere: %d)", server, only.others.Load())
			t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
			r, err := doqExchange(qc, query("www.blocked.test."))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "blocked")
			assert.Zero(t, only.others.Load(), "packets from an address other than the one asked")
		})
	}
}

// onlyFrom is a client's socket that takes datagrams from one address
// only, as a connected socket does (quic-go cannot write on one), and
// counts the others.
type onlyFrom struct {
	net.PacketConn
	from   netip.AddrPort
	others atomic.Int64
}

func (c *onlyFrom) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		if a, ok := addr.(*net.UDPAddr); ok && unmapped(a.AddrPort()) == c.from {
			return n, addr, nil
		}
		c.others.Add(1)
	}
}

// unmapped is a with an IPv4 address as itself, not IPv4-mapped IPv6.
func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// TestDoQSocketDropsOnEveryRead: each read quic-go may make of the DoQ
// listener's socket drops the datagrams from reflecting ports and counts
// them: the batches of Linux, FreeBSD and macOS (ReadBatch), and the
// single reads of Windows, OpenBSD and the rest (ReadFrom), of a
// *net.UDPConn or of a socket of another type; ReadMsgUDP too. A datagram
// from port 7 is sent before one from an ordinary port, and the read
// gives the second. In a network namespace of its own, whose root may
// bind the low ports.
func TestDoQSocketDropsOnEveryRead(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	type read func(c net.PacketConn, b []byte) (int, net.Addr, error)
	readFrom := func(c net.PacketConn, b []byte) (int, net.Addr, error) { return c.ReadFrom(b) }
	readMsgUDP := func(c net.PacketConn, b []byte) (int, net.Addr, error) {
		n, _, _, addr, err := c.(*doqSocket).ReadMsgUDP(b, make([]byte, 128))
		return n, addr, err
	}
	readBatch := func(c net.PacketConn, b []byte) (int, net.Addr, error) {
		ms := []ipv4.Message{{Buffers: [][]byte{b}, OOB: make([]byte, 128)}, {Buffers: [][]byte{make([]byte, len(b))}, OOB: make([]byte, 128)}}
		n, err := c.(*doqSocket).ReadBatch(ms, 0)
		if err != nil || n < 1 {
			return 0, nil, err
		}
		return ms[0].N, ms[0].Addr, nil
	}
	tests := []struct {
		name  string
		other bool // the socket given is not a *net.UDPConn
		read  read
	}{
		{name: "ReadBatch", read: readBatch},
		{name: "ReadFrom", read: readFrom},
		{name: "ReadMsgUDP", read: readMsgUDP},
		{name: "ReadFrom of another type of socket", other: true, read: readFrom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			require.NoError(t, err)
			t.Cleanup(func() { pc.Close() })
			var given net.PacketConn = pc
			if tc.other {
				given = struct{ net.PacketConn }{pc}
			}
			dropped := 0
			c := doqPacketConn(given, func() { dropped++ })
			send := func(port int, text string) *net.UDPAddr {
				s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
				require.NoError(t, err, "bind port %d", port)
				t.Cleanup(func() { s.Close() })
				_, err = s.WriteTo([]byte(text), pc.LocalAddr())
				require.NoError(t, err)
				return s.LocalAddr().(*net.UDPAddr)
			}
			send(7, "from echo")
			ordinary := send(0, "from an ordinary port")
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(5*time.Second)))
			b := make([]byte, 1500)
			n, addr, err := tc.read(c, b)
			require.NoError(t, err)
			assert.Equal(t, "from an ordinary port", string(b[:n]))
			require.IsType(t, &net.UDPAddr{}, addr)
			assert.Equal(t, ordinary.Port, addr.(*net.UDPAddr).Port)
			assert.Equal(t, 1, dropped, "the datagram from port 7 counted dropped")
		})
	}
}
