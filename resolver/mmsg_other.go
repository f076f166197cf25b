//go:build !linux

package resolver

import "net"

// newBatchConn is the batched reads and writes of c: x/net's, where the raw
// system calls of mmsg_linux.go are not available.
func newBatchConn(c *net.UDPConn) batchConn { return xnetBatch(c) }
