package resolver

import (
	"sync"
	"time"
)

// warnEvery is how often one upstream may be named by a warning line.
const warnEvery = 10 * time.Second

// warnLimiter throttles a warning about upstreams (the "upstreams failed"
// line) to one line per upstream per interval: a line is written when at
// least one upstream it names has not been named for the interval, and
// then counts as naming all of them. The lines held back are counted, as
// auditLimiter counts audit lines, and the next line written says how
// many were (all upstreams together, so that lines written plus those
// suppressed are every failure).
type warnLimiter struct {
	mu         sync.Mutex
	every      time.Duration        // 0: warnEvery
	last       map[string]time.Time // when a line last named the upstream
	suppressed int                  // lines held back since the last one written
	lastPrune  time.Time
}

// allow reports whether a line naming upstreams (none: a failure before
// any upstream was asked, which has a key of its own) may be written now,
// and how many lines were suppressed since the last one written.
func (l *warnLimiter) allow(upstreams []string, now time.Time) (bool, int) {
	if len(upstreams) == 0 {
		upstreams = []string{""}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	every := l.every
	if every <= 0 {
		every = warnEvery
	}
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if now.Sub(l.lastPrune) > 10*every {
		for k, t := range l.last {
			if now.Sub(t) > every {
				delete(l.last, k) // due anyway; a reload may have retired it
			}
		}
		l.lastPrune = now
	}
	due := false
	for _, u := range upstreams {
		if t, ok := l.last[u]; !ok || now.Sub(t) >= every {
			due = true
			break
		}
	}
	if !due {
		l.suppressed++
		return false, 0
	}
	for _, u := range upstreams {
		l.last[u] = now
	}
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
