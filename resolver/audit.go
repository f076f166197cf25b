package resolver

import (
	"net/netip"
	"sync"
	"time"
)

// maxAuditClients bounds the audit limiter's memory, about 130 octets a
// client: 8.5 MB. Clients come by the million to a flood of blocked
// queries from an IPv6 network or through a trusted proxy's ECS, each
// address a client, and every window was kept a minute, one with lines
// suppressed until its client asked again: 1,000,000 addresses held 131
// MB. Past it, the windows whose minute is over are forgotten, those with
// lines suppressed too (their count is lost to the log, not to the
// metrics); if it is still full, new clients share one overflow window,
// as the rate limiter's new clients share its overflow bucket.
const maxAuditClients = 1 << 16

// auditLimiter caps audit lines per client per minute. A client over its
// cap loses lines, not counts: the next line it gets says how many were
// suppressed.
type auditLimiter struct {
	mu        sync.Mutex
	clients   map[netip.Addr]*auditWindow // at most maxAuditClients
	overflow  auditWindow                 // the clients past maxAuditClients
	lastPrune time.Time
	lastFull  time.Time // when a full map was last swept
}

type auditWindow struct {
	start      time.Time
	lines      int
	suppressed int
}

// allow reports whether client may have another audit line now, and how
// many of its lines were suppressed since its last one.
func (a *auditLimiter) allow(client netip.Addr, perMinute int, now time.Time) (bool, int) {
	if perMinute <= 0 {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.clients == nil {
		a.clients = map[netip.Addr]*auditWindow{}
	}
	if now.Sub(a.lastPrune) > time.Minute {
		for c, w := range a.clients {
			if now.Sub(w.start) > time.Minute && w.suppressed == 0 {
				delete(a.clients, c)
			}
		}
		a.lastPrune = now
	}
	w := a.clients[client]
	if w == nil {
		w = a.newWindow(client, now)
	}
	if now.Sub(w.start) >= time.Minute {
		w.start, w.lines = now, 0
	}
	if w.lines >= perMinute {
		w.suppressed++
		return false, 0
	}
	w.lines++
	n := w.suppressed
	w.suppressed = 0
	if w == &a.overflow {
		// The overflow window's suppressed lines are those of every client
		// sharing it: reported on this client's line, they would credit it
		// with other addresses' blocked queries. Lost to the log, as a
		// forgotten window's are, not to the metrics.
		n = 0
	}
	return true, n
}

// newWindow adds client's window, or returns the overflow window when
// the map is full even after the windows over are swept (once a second at
// most: a sweep of a full map takes the best part of a millisecond under
// the lock). a.mu is held.
func (a *auditLimiter) newWindow(client netip.Addr, now time.Time) *auditWindow {
	if len(a.clients) >= maxAuditClients && now.Sub(a.lastFull) > time.Second {
		for c, w := range a.clients {
			if now.Sub(w.start) >= time.Minute {
				delete(a.clients, c)
			}
		}
		a.lastFull = now
	}
	if len(a.clients) >= maxAuditClients {
		return &a.overflow
	}
	w := &auditWindow{start: now}
	a.clients[client] = w
	return w
}
