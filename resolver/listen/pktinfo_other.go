//go:build !linux

package listen

import (
	"net"
	"net/netip"
)

// Where the system has no IP_PKTINFO to set an answer's source, a socket
// bound to a wildcard address answers from the address the kernel's
// routing picks, which on a host of several addresses may not be the one
// the query was sent to (Start warns of it).
const dstOOBSize, srcOOBSize = 0, 0

// answerFromDst reports that c's answers cannot be sent from each query's
// destination here.
func answerFromDst(*net.UDPConn) (bool, error) { return false, nil }

// dstOf is never called here: no read has control messages.
func dstOf([]byte) netip.Addr { return netip.Addr{} }

// putSrc is never called here: no answer has a source to set.
func putSrc([]byte, netip.Addr) int { return 0 }
