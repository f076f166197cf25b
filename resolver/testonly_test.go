package resolver

import (
	"net"
	"time"
)

// Helpers that only tests use, kept out of the binary.

// listenBoth opens UDP and TCP on the same address and port.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	pcs, ln, err := listenShared(addr, 1)
	if err != nil {
		return nil, nil, err
	}
	return pcs[0], ln, nil
}

// setEvery changes the interval.
func (l *warnLimiter) setEvery(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.every = d
}

// Status is the outcome of the last reload.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

// Addrs are the addresses actually listened on (with the real port when
// port 0 was asked for).
func (s *Server) Addrs() []string { return s.addrs }
