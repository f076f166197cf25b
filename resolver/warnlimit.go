package resolver

import (
	"sync"
	"time"
)

// warnEvery is how often a warning about one thing (an upstream, a set
// of upstreams) may be logged.
const warnEvery = 10 * time.Second

// warnLimiter lets one warning line a key (the upstreams a failure is
// about) through per interval, as auditLimiter does for audit lines: the
// lines in between are counted, not written, and the next line written for
// the key says how many were suppressed. Keys are few (sets of configured
// upstreams) but a reload may retire them, so idle ones with nothing to
// report are pruned.
type warnLimiter struct {
	mu        sync.Mutex
	every     time.Duration // 0: warnEvery
	keys      map[string]*warnWindow
	lastPrune time.Time
}

type warnWindow struct {
	last       time.Time // when the key's last line was written
	suppressed int
}

// allow reports whether a line about key may be written now, and how many
// lines about it were suppressed since its last one.
func (l *warnLimiter) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	every := l.every
	if every <= 0 {
		every = warnEvery
	}
	if l.keys == nil {
		l.keys = map[string]*warnWindow{}
	}
	if now.Sub(l.lastPrune) > 10*every {
		for k, w := range l.keys {
			if now.Sub(w.last) > 10*every && w.suppressed == 0 {
				delete(l.keys, k)
			}
		}
		l.lastPrune = now
	}
	w := l.keys[key]
	if w == nil {
		l.keys[key] = &warnWindow{last: now}
		return true, 0
	}
	if now.Sub(w.last) < every {
		w.suppressed++
		return false, 0
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	return true, n
}

// setEvery changes the interval (tests).
func (l *warnLimiter) setEvery(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.every = d
}
