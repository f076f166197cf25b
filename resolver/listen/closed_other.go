//go:build !linux

package listen

import "syscall"

// peerClosed reports false here: a connection its client closed keeps its
// place under the per-client cap until its read loop reads the close.
func peerClosed(syscall.RawConn) bool { return false }
