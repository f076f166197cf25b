package listen

import (
	"net"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// BatchConn reads and writes batches of datagrams on one UDP socket: what
// ipv4.PacketConn and ipv6.PacketConn share. NewBatchConn makes one; the
// listeners and the upstream sockets use it.
type BatchConn interface {
	// ReadBatch reads at least one datagram, waiting for it, and at most
	// len(ms), each into its message's one buffer and its control
	// messages into its OOB; it sets N, NN, Flags and Addr (a
	// *net.UDPAddr) of each read and returns how many were read. With
	// MSG_DONTWAIT in flags it does not wait: when no datagram is queued
	// it fails at once with EAGAIN (errors.Is(err, unix.EAGAIN)), as
	// x/net's does, so that a reader can take what arrived before it
	// acts on the time (the read deadline need only be in the future).
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	// WriteBatch sends ms, each to its Addr (nil on a connected socket)
	// with the control messages in its OOB, and returns how many were
	// sent; an error is the first unsent one's.
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// xnetBatch is x/net's recvmmsg and sendmmsg on c (one datagram a call
// where the system has no such calls).
func xnetBatch(c *net.UDPConn) BatchConn {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(c)
	}
	return ipv6.NewPacketConn(c)
}
