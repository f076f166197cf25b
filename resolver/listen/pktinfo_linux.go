package listen

import (
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A UDP socket bound to a wildcard address (0.0.0.0, [::]) reads queries
// sent to every address of the host, but an answer sent without saying
// its source leaves from the address the kernel's routing picks: to a
// query sent to a secondary address, a VIP or an anycast address, that is
// another one, and the client drops it. Such a socket asks the kernel for
// each datagram's destination (IP_PKTINFO, IPV6_PKTINFO in a control
// message) and sends the answer from it, as miekg/dns (CoreDNS) and
// dnsdist do.

// Sizes of the control messages: what a read takes (both kinds: a dual-stack
// socket may be given both for an IPv4 datagram) and what an answer carries
// (one).
var (
	dstOOBSize = unix.CmsgSpace(unix.SizeofInet4Pktinfo) + unix.CmsgSpace(unix.SizeofInet6Pktinfo)
	srcOOBSize = max(unix.CmsgSpace(unix.SizeofInet4Pktinfo), unix.CmsgSpace(unix.SizeofInet6Pktinfo))
)

// answerFromDst has the kernel give each datagram read on c its destination
// address when c is bound to a wildcard address, and reports whether it
// does: the UDP loop then answers each from that address. On an IPv6
// socket it asks for IPv4's too, for the IPv4 clients of a dual-stack one;
// that may fail on an IPv6-only socket, which has none.
func answerFromDst(c *net.UDPConn) (bool, error) {
	a, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || !a.IP.IsUnspecified() {
		return false, nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if a.IP.To4() != nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	})
	if err = errors.Join(err, serr); err != nil {
		return false, err
	}
	return true, nil
}

// dstOf is the address a datagram was sent to, from the control messages
// oob read with it, or the zero Addr when they do not say or it cannot be
// an answer's source. For IPv4 it is ipi_spec_dst: the destination of a
// datagram sent to one of the host's addresses, and for one sent to a
// broadcast or multicast address, the address of its interface that the
// kernel would answer from.
func dstOf(oob []byte) netip.Addr {
	var v4, v6 netip.Addr
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			v4 = netip.AddrFrom4(info.Spec_dst)
			if v4.IsUnspecified() {
				v4 = netip.AddrFrom4(info.Addr)
			}
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			v6 = netip.AddrFrom16(info.Addr).Unmap()
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	a := v4
	if !a.IsValid() || a.IsUnspecified() {
		a = v6
	}
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return netip.Addr{}
	}
	return a
}

// putSrc writes into oob, which holds srcOOBSize bytes, the control message
// that sends a datagram from src, and returns its length: IP_PKTINFO for an
// IPv4 address (to an IPv4 client of a dual-stack socket too, which the
// kernel sends as IPv4), IPV6_PKTINFO for an IPv6 one; the interface is the
// route's.
func putSrc(oob []byte, src netip.Addr) int {
	clear(oob[:srcOOBSize])
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Pointer(&oob[unix.CmsgLen(0)])
	if src.Is4() {
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		(*unix.Inet4Pktinfo)(data).Spec_dst = src.As4()
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	}
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	(*unix.Inet6Pktinfo)(data).Addr = src.As16()
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
}
