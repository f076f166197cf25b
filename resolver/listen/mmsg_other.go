//go:build !linux

package listen

import "net"

// NewBatchConn is the batched reads and writes of c: x/net's, where the raw
// system calls of mmsg_linux.go are not available.
func NewBatchConn(c *net.UDPConn) BatchConn { return xnetBatch(c) }
