package resolver

import (
	"net/netip"
	"sync"
	"time"
)

// auditLimiter caps audit lines per client per minute. A client over its
// cap loses lines, not counts: the next line it gets says how many were
// suppressed.
type auditLimiter struct {
	mu        sync.Mutex
	clients   map[netip.Addr]*auditWindow
	lastPrune time.Time
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
	if w == nil || now.Sub(w.start) >= time.Minute {
		if w == nil {
			w = &auditWindow{}
			a.clients[client] = w
		}
		w.start, w.lines = now, 0
	}
	if w.lines >= perMinute {
		w.suppressed++
		return false, 0
	}
	w.lines++
	n := w.suppressed
	w.suppressed = 0
	return true, n
}
