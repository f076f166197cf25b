package listen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// UDPSocket is one listening UDP socket and what the kernel says of it.
type UDPSocket struct {
	Conn          *net.UDPConn
	Inode         uint64 // names the socket in /proc/net/udp and udp6
	ReceiveBuffer int    // SO_RCVBUF granted, in bytes
	SendBuffer    int    // SO_SNDBUF granted, in bytes
}

// setUDPBuffers asks the kernel for receive and send buffers of the given
// sizes in bytes (SO_RCVBUF, SO_SNDBUF) and returns what it granted, read
// back with getsockopt: Linux doubles the value asked for its bookkeeping
// and caps it at twice net.core.rmem_max (wmem_max), silently.
func setUDPBuffers(c *net.UDPConn, receive, send int) (UDPSocket, error) {
	var info UDPSocket
	if err := c.SetReadBuffer(receive); err != nil {
		return info, fmt.Errorf("setting the UDP receive buffer: %w", err)
	}
	if err := c.SetWriteBuffer(send); err != nil {
		return info, fmt.Errorf("setting the UDP send buffer: %w", err)
	}
	return UDPSocketOf(c)
}

// UDPSocketOf reads the socket's inode and the buffer sizes the kernel
// granted it now; an error when the socket is closed or the calls fail.
func UDPSocketOf(c *net.UDPConn) (UDPSocket, error) {
	info := UDPSocket{Conn: c}
	rc, err := c.SyscallConn()
	if err != nil {
		return info, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if e := unix.Fstat(int(fd), &st); e != nil {
			serr = fmt.Errorf("fstat of the UDP socket: %w", e)
			return
		}
		info.Inode = uint64(st.Ino)
		var e1, e2 error
		info.ReceiveBuffer, e1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		info.SendBuffer, e2 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		if e := errors.Join(e1, e2); e != nil {
			serr = fmt.Errorf("reading the UDP socket buffers: %w", e)
		}
	})
	return info, errors.Join(err, serr)
}

// DropCounter sums the kernel's drop counters of the listening UDP
// sockets, read from /proc/net/udp and udp6 at each scrape: cheaper than
// SO_RXQ_OVFL, which would add a control message to every datagram the
// batched read loop takes. Where /proc is missing it reads 0. Make one
// with NewDropCounter; it is safe for concurrent use.
type DropCounter struct {
	mu     sync.Mutex
	inodes map[uint64]bool
	// last is the highest count seen of each socket, kept once the socket
	// is closed, so that the sum never goes down.
	last map[uint64]uint64
}

// procUDPFiles are the kernel's tables of UDP sockets, IPv4 and IPv6.
var procUDPFiles = []string{"/proc/net/udp", "/proc/net/udp6"}

// NewDropCounter returns a counter of no sockets, reading 0.
func NewDropCounter() *DropCounter { return &DropCounter{last: map[uint64]uint64{}} }

// Add counts the drops of the socket inode (UDPSocket.Inode) from now on.
func (d *DropCounter) Add(inode uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inodes == nil {
		d.inodes = map[uint64]bool{}
	}
	d.inodes[inode] = true
}

// Total is the counter's value now: datagrams dropped on arrival, summed
// over every socket added, closed ones included.
func (d *DropCounter) Total() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.inodes) > 0 {
		now := map[uint64]uint64{}
		for _, path := range procUDPFiles {
			f, err := os.Open(path)
			if err != nil {
				continue // no /proc (not Linux), or no IPv6
			}
			_ = parseProcUDPDrops(f, d.inodes, now) // a torn last line: the rest still counts
			f.Close()
		}
		for inode, n := range now {
			d.last[inode] = max(d.last[inode], n)
		}
	}
	var sum uint64
	for _, n := range d.last {
		sum += n
	}
	return float64(sum)
}

// parseProcUDPDrops reads a /proc/net/udp or udp6 table and stores into
// out the drops column of each socket whose inode is in want. A line is
//
//	sl local rem st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer drops
//
// (the header names two columns where the lines have one).
func parseProcUDPDrops(r io.Reader, want map[uint64]bool, out map[uint64]uint64) error {
	const inodeField, dropsField = 9, 12
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false // the header
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) <= dropsField {
			return fmt.Errorf("reading UDP socket table: short line %q", sc.Text())
		}
		inode, err := strconv.ParseUint(f[inodeField], 10, 64)
		if err != nil {
			return fmt.Errorf("reading UDP socket table: inode: %w", err)
		}
		if !want[inode] {
			continue
		}
		drops, err := strconv.ParseUint(f[dropsField], 10, 64)
		if err != nil {
			return fmt.Errorf("reading UDP socket table: drops: %w", err)
		}
		out[inode] = drops
	}
	return sc.Err()
}
