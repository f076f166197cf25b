package listen

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the peer of the TCP socket raw has closed
// its end (its FIN, or a reset, has come) and nothing it sent before is
// left unread: a read would return the end at once. It asks the kernel
// without reading (MSG_PEEK, MSG_DONTWAIT) and without the connection's
// read lock, so a read waiting on raw meanwhile is left as it is. A
// socket already closed on this side (its read loop is ending) counts as
// closed too.
func peerClosed(raw syscall.RawConn) bool {
	closed := false
	if err := raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = (n == 0 && err == nil) || err == unix.ECONNRESET
	}); err != nil {
		return true
	}
	return closed
}
