package listen

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// rawBatch reads and writes batches of datagrams on a UDP socket with
// recvmmsg and sendmmsg, issued as raw system calls inside the runtime
// poller's callbacks. x/net's ReadBatch and WriteBatch make the same calls
// as blocking system calls, and with one P (the server pinned to one core,
// so GOMAXPROCS=1) the runtime's monitor takes the P away from every call
// that lasts over 20 µs, as a batch of 64 sends does, and wakes another
// thread to hold it: about one context switch per ten queries, measured.
// The socket is non-blocking, so these calls never block: when nothing can
// be read or sent the poller waits, as it does for x/net.
//
// Each message must have one buffer, and may have control messages (OOB):
// a wildcard listener's read their destinations and set their answers'
// sources with them. Reads and writes may run at the same time, and so may
// two writes.
type rawBatch struct {
	rc   syscall.RawConn
	ipv6 bool // the socket's family: addresses are written as IPv6
	rd   mmsgScratch
	wrMu sync.Mutex
	wr   mmsgScratch
	// rdCall and wrCall are the poller callbacks of the two directions,
	// made once (a callback made per call would be an allocation per
	// system call); wrCall is used under wrMu, rdCall by the one reader.
	rdCall, wrCall *mmsgCall
}

// mmsgCall is one recvmmsg or sendmmsg call made inside the poller: its
// arguments, its results, and the callback the poller runs.
type mmsgCall struct {
	trap  uintptr
	hdrs  []mmsghdr
	n     int
	errno syscall.Errno
	// dontWait ends the call at EAGAIN instead of having the poller wait
	// (ReadBatch's MSG_DONTWAIT).
	dontWait bool
	fn       func(fd uintptr) bool
}

func newMmsgCall(trap uintptr) *mmsgCall {
	c := &mmsgCall{trap: trap}
	c.fn = func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall6(c.trap, fd, uintptr(unsafe.Pointer(&c.hdrs[0])), uintptr(len(c.hdrs)), 0, 0, 0)
			if e != unix.EINTR {
				c.n, c.errno = int(r), e
				return e != unix.EAGAIN || c.dontWait
			}
		}
	}
	return c
}

// errNothingQueued is ReadBatch's EAGAIN with MSG_DONTWAIT, made once: a
// reader that looks before each sweep of its socket meets it every time
// nothing arrived, and must not allocate for it.
var errNothingQueued = os.NewSyscallError("recvmmsg", unix.EAGAIN)

var _ BatchConn = (*rawBatch)(nil)

// mmsghdr is the kernel's struct mmsghdr: Go pads it as C does, to 64 bytes
// on 64-bit systems and 32 on 32-bit ones.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

// mmsgScratch is the kernel-facing form of one batch.
type mmsgScratch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrAny
	// written is how many headers from the first the kernel may have
	// written since they were last set (ReadBatch).
	written int
}

// setBuffer points message i at buf.
func (s *mmsgScratch) setBuffer(i int, buf []byte) {
	s.iovs[i] = unix.Iovec{Base: unsafe.SliceData(buf)}
	s.iovs[i].SetLen(len(buf))
	s.hdrs[i] = mmsghdr{hdr: unix.Msghdr{Iov: &s.iovs[i], Iovlen: 1}}
}

// setControl gives message i the control messages in oob: to read into,
// or to send; none when oob is empty.
func (s *mmsgScratch) setControl(i int, oob []byte) {
	h := &s.hdrs[i].hdr
	h.Control = nil
	h.SetControllen(0)
	if len(oob) > 0 {
		h.Control = unsafe.SliceData(oob)
		h.SetControllen(len(oob))
	}
}

func (s *mmsgScratch) prepare(n int) {
	if cap(s.hdrs) < n {
		s.hdrs = make([]mmsghdr, n)
		s.iovs = make([]unix.Iovec, n)
		s.names = make([]unix.RawSockaddrAny, n)
		s.written = 0 // every header is new, and set as its buffer is
	}
	s.hdrs, s.iovs, s.names = s.hdrs[:n], s.iovs[:n], s.names[:n]
}

// NewBatchConn is the batched reads and writes of c: recvmmsg and sendmmsg
// made inside the runtime poller (rawBatch), or x/net's where the socket
// offers no raw access.
func NewBatchConn(c *net.UDPConn) BatchConn {
	if b, err := newRawBatch(c); err == nil {
		return b
	}
	return xnetBatch(c)
}

func newRawBatch(c *net.UDPConn) (*rawBatch, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	a, _ := c.LocalAddr().(*net.UDPAddr)
	return &rawBatch{rc: rc, ipv6: a == nil || a.IP.To4() == nil,
		rdCall: newMmsgCall(unix.SYS_RECVMMSG), wrCall: newMmsgCall(unix.SYS_SENDMMSG)}, nil
}

// ReadBatch reads at least one datagram, waiting for it (but with
// MSG_DONTWAIT in flags: BatchConn), and at most len(ms); it sets N, NN,
// Flags and Addr (a *net.UDPAddr) of each read. A *net.UDPAddr already in
// Addr is overwritten in place rather than a new one made: the caller that
// keeps an address past the next read copies it.
func (b *rawBatch) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	s := &b.rd
	s.prepare(len(ms))
	// A read loop passes the same buffers call after call: a header is
	// written again only when its buffer changed or the kernel wrote to it
	// (msg_namelen, msg_flags) in the calls before, not all len(ms) of them
	// for the few datagrams a call reads at a moderate rate.
	reset := min(s.written, len(ms))
	for i := range ms {
		buf, oob := ms[i].Buffers[0], ms[i].OOB
		if iov := &s.iovs[i]; i < reset || iov.Base != unsafe.SliceData(buf) || uint64(iov.Len) != uint64(len(buf)) ||
			s.hdrs[i].hdr.Control != unsafe.SliceData(oob) {
			s.setBuffer(i, buf)
			s.setControl(i, oob)
			s.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
			s.hdrs[i].hdr.Namelen = unix.SizeofSockaddrAny
		}
	}
	if s.written <= len(ms) {
		s.written = 0
	}
	b.rdCall.dontWait = flags&unix.MSG_DONTWAIT != 0
	n, err := b.call(unix.SYS_RECVMMSG, s.hdrs)
	if err != nil {
		s.written = len(ms) // what the kernel wrote before it failed is not known
		return 0, err
	}
	s.written = max(s.written, n)
	for i := 0; i < n; i++ {
		ms[i].N = int(s.hdrs[i].len)
		ms[i].NN = int(s.hdrs[i].hdr.Controllen)
		ms[i].Flags = int(s.hdrs[i].hdr.Flags)
		reuse, _ := ms[i].Addr.(*net.UDPAddr)
		ms[i].Addr = nil
		if a := udpAddrOf(&s.names[i], reuse); a != nil {
			ms[i].Addr = a
		}
	}
	return n, nil
}

// WriteBatch sends ms, each to its Addr (nil on a connected socket) with
// its OOB, and returns how many were sent; an error is the first
// message's. A message whose address cannot be written is sent by no
// call, and fails as first.
func (b *rawBatch) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	b.wrMu.Lock()
	defer b.wrMu.Unlock()
	s := &b.wr
	s.prepare(len(ms))
	for i := range ms {
		s.setBuffer(i, ms[i].Buffers[0])
		s.setControl(i, ms[i].OOB)
		if a, ok := ms[i].Addr.(*net.UDPAddr); ok && a != nil {
			l, err := b.putAddr(&s.names[i], a)
			if err != nil {
				if i == 0 {
					return 0, err
				}
				s.hdrs = s.hdrs[:i] // send those before it; the caller comes back for it
				break
			}
			s.hdrs[i].hdr.Name = (*byte)(unsafe.Pointer(&s.names[i]))
			s.hdrs[i].hdr.Namelen = l
		}
	}
	return b.call(unix.SYS_SENDMMSG, s.hdrs)
}

// call makes the recvmmsg or sendmmsg call on hdrs when the socket is
// ready (again when a signal interrupted it); when it is not, the poller
// waits.
func (b *rawBatch) call(trap uintptr, hdrs []mmsghdr) (int, error) {
	name, wait, c := "recvmmsg", b.rc.Read, b.rdCall
	if trap == unix.SYS_SENDMMSG {
		name, wait, c = "sendmmsg", b.rc.Write, b.wrCall
	}
	c.hdrs, c.n, c.errno = hdrs, 0, 0
	err := wait(c.fn)
	n, errno := c.n, c.errno
	c.hdrs = nil
	if err != nil {
		return 0, err
	}
	if errno == unix.EAGAIN { // only a read with MSG_DONTWAIT ends so
		return 0, errNothingQueued
	}
	if errno != 0 {
		return 0, os.NewSyscallError(name, errno)
	}
	return n, nil
}

var errAddrFamily = errors.New("IPv6 destination on an IPv4 socket")

// putAddr writes a as the socket's family of sockaddr and returns its size.
func (b *rawBatch) putAddr(sa *unix.RawSockaddrAny, a *net.UDPAddr) (uint32, error) {
	port := [2]byte{byte(a.Port >> 8), byte(a.Port)}
	if !b.ipv6 {
		ip4 := a.IP.To4()
		if ip4 == nil {
			return 0, errAddrFamily
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET}
		*(*[2]byte)(unsafe.Pointer(&sa4.Port)) = port
		copy(sa4.Addr[:], ip4)
		return unix.SizeofSockaddrInet4, nil
	}
	sa6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
	*sa6 = unix.RawSockaddrInet6{Family: unix.AF_INET6}
	*(*[2]byte)(unsafe.Pointer(&sa6.Port)) = port
	copy(sa6.Addr[:], a.IP.To16())
	if a.Zone != "" {
		// Zones read by udpAddrOf are interface numbers; a name costs a
		// lookup of the interfaces.
		if n, err := strconv.ParseUint(a.Zone, 10, 32); err == nil {
			sa6.Scope_id = uint32(n)
		} else if ifi, err := net.InterfaceByName(a.Zone); err == nil {
			sa6.Scope_id = uint32(ifi.Index)
		}
	}
	return unix.SizeofSockaddrInet6, nil
}

// udpAddrOf is the address the kernel wrote into sa, or nil for none:
// written into reuse when it is not nil (its IP's array reused too), so
// that a read loop makes no address per datagram.
func udpAddrOf(sa *unix.RawSockaddrAny, reuse *net.UDPAddr) *net.UDPAddr {
	a := reuse
	if a == nil {
		a = new(net.UDPAddr)
	}
	switch sa.Addr.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		// The IPv4-in-IPv6 form net.IPv4 gives.
		a.IP = append(a.IP[:0], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, sa4.Addr[0], sa4.Addr[1], sa4.Addr[2], sa4.Addr[3])
		a.Port, a.Zone = int(p[0])<<8|int(p[1]), ""
		return a
	case unix.AF_INET6:
		sa6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		a.IP = append(a.IP[:0], sa6.Addr[:]...)
		a.Port, a.Zone = int(p[0])<<8|int(p[1]), ""
		if sa6.Scope_id != 0 {
			a.Zone = strconv.FormatUint(uint64(sa6.Scope_id), 10) // the interface's number: no lookup per datagram
		}
		return a
	}
	return nil
}
