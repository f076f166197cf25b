package listen

import (
	"net"

	"golang.org/x/net/ipv4"
)

// doqSocket is the DNS over QUIC listener's socket as quic-go reads it: a
// datagram from the port of a service that answers any datagram
// (reflectingPort: echo, daytime, QOTD, chargen, time, ...) or from port
// 0 is dropped unread, as the DNS over UDP listener drops it. quic-go
// answers a datagram that reads as a short-header packet of a connection
// it does not know (its first octet has 0x40 set and 0x80 clear, as every
// ASCII letter, capital or small, has) with a stateless reset (RFC 9000
// §10.3), to any source, before anything of dnsfence sees it and without
// a rate limit: one such datagram forged from a QOTD, daytime or chargen
// service had the listener and the service answer each other for ever
// (red team: 20,000 datagrams in under 2 s, from each of those ports).
// RFC 9000 §10.3.3's rule, a reset shorter than the packet it answers,
// ends such a loop with another QUIC endpoint or an echo service, never
// with a service whose answer does not shrink. No QUIC client sends from
// these ports.
//
// It keeps quic-go's batched reads with their control messages (ECN, the
// destination address of a wildcard listener): it is a *net.UDPConn that
// also reads batches itself (quic-go takes a socket's own ReadBatch),
// and drops the reflected datagrams from each batch.
type doqSocket struct {
	*net.UDPConn
	batch BatchConn
	drop  func() // counts a datagram dropped
}

// doqPacketConn is the socket pc as the DoQ listener's quic.Transport reads it:
// a doqSocket for a UDP socket, else pc with its reads filtered alike.
// drop is called for each datagram dropped, as the DNS over UDP listener
// counts each (ResultDropped).
func doqPacketConn(pc net.PacketConn, drop func()) net.PacketConn {
	if c, ok := pc.(*net.UDPConn); ok {
		return &doqSocket{UDPConn: c, batch: xnetBatch(c), drop: drop}
	}
	return unreflectedPacketConn{PacketConn: pc, drop: drop}
}

// ReadBatch is BatchConn's, less the datagrams from reflecting ports;
// it waits until one other comes.
func (c *doqSocket) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	for {
		n, err := c.batch.ReadBatch(ms, flags) // n is -1 with some errors
		if n > 0 {
			kept := withoutReflected(ms[:n])
			for range n - kept {
				c.drop()
			}
			n = kept
		}
		if n != 0 || err != nil {
			return n, err
		}
	}
}

// ReadFrom is net.PacketConn's, less the datagrams from reflecting ports
// (quic-go reads so where the system has no batched reads).
func (c *doqSocket) ReadFrom(b []byte) (int, net.Addr, error) {
	return unreflectedPacketConn{PacketConn: c.UDPConn, drop: c.drop}.ReadFrom(b)
}

// ReadMsgUDP is net.UDPConn's, less the datagrams from reflecting ports.
func (c *doqSocket) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	for {
		n, oobn, flags, addr, err = c.UDPConn.ReadMsgUDP(b, oob)
		if err != nil || addr == nil || !reflectingPort(addr.Port) {
			return n, oobn, flags, addr, err
		}
		c.drop()
	}
}

// unreflectedPacketConn is a socket other than a *net.UDPConn, its reads
// filtered as doqSocket's are.
type unreflectedPacketConn struct {
	net.PacketConn
	drop func()
}

// ReadFrom is net.PacketConn's, less the datagrams from reflecting ports,
// each counted (drop).
func (c unreflectedPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		if err != nil || !reflectedFrom(addr) {
			return n, addr, err
		}
		c.drop()
	}
}

// reflectedFrom reports whether a datagram from addr is one the
// listeners drop unread (reflectingPort).
func reflectedFrom(addr net.Addr) bool {
	a, ok := addr.(*net.UDPAddr)
	return ok && reflectingPort(a.Port)
}

// withoutReflected moves the messages of ms not from a reflecting port to
// its front and returns how many there are. Each message keeps its own
// buffers (quic-go pairs a message's buffer with the pool buffer it
// returns it to): a message kept is copied into the buffers of the one
// before it that was dropped, never swapped with it.
func withoutReflected(ms []ipv4.Message) int {
	kept := 0
	for i := range ms {
		if reflectedFrom(ms[i].Addr) {
			continue
		}
		if kept != i {
			to, from := &ms[kept], &ms[i]
			to.N = copy(to.Buffers[0], from.Buffers[0][:from.N])
			to.NN = copy(to.OOB, from.OOB[:from.NN])
			to.Flags, to.Addr = from.Flags, from.Addr
		}
		kept++
	}
	return kept
}
