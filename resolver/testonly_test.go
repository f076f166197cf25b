package resolver

import (
	"net/netip"
	"slices"
	"time"

	"github.com/miekg/dns"
)

// Helpers that only tests use, kept out of the binary.

// setEvery changes the interval.
func (l *warnLimiter) setEvery(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.every = d
}

// sourcesStopped waits, up to timeout, until every remote list source the
// reloader started has returned from Run (after Start's context is
// cancelled), so that none writes a disk copy into a folder a test's
// cleanup removes; it reports whether they did.
func (r *Reloader) sourcesStopped(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		r.sourcesRunning.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Status is the outcome of the last reload.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

// Addrs are the addresses actually listened on (with the real port when
// port 0 was asked for): those of the UDP sockets, which each listen
// address has, on the port its TCP listener shares.
func (s *Server) Addrs() []string {
	var addrs []string
	for _, u := range s.sockets {
		if a := u.Conn.LocalAddr().String(); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// dnssecOK reports the query's DO bit (RFC 3225).
func dnssecOK(req *dns.Msg) bool {
	opt := req.IsEdns0()
	return opt != nil && opt.Do()
}

// appendBlocked is asked.appendBlocked for the query req.
func appendBlocked(b []byte, req *dns.Msg, rcode int, owner string, ttl, serial uint32, ede string, maxSize int) ([]byte, bool) {
	a := askedOf(req)
	return a.appendBlocked(b, rcode, owner, ttl, serial, ede, maxSize)
}

// appendCached is asked.appendCached for the query req.
func appendCached(b []byte, e *cacheEntry, req *dns.Msg, now time.Time, maxSize int) ([]byte, bool) {
	a := askedOf(req)
	return a.appendCached(b, e, now, maxSize)
}

// shard is the part of the limiter that holds the bucket of the client
// network key.
func (r *rateLimiter) shard(key netip.Prefix) *limitShard {
	return r.shardOf(networkKeyOf(key))
}
