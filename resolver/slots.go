package resolver

import "sync/atomic"

// upstreamSlots bounds the queries waiting on the upstreams at once
// (limits.upstream_inflight). The bound is set by Handler.Store from each
// snapshot: a reload that lowers it applies to the next query, and the
// queries already holding a slot keep it until they finish.
type upstreamSlots struct {
	used  atomic.Int64 // slots held
	limit atomic.Int64 // the most that may be held
}

// acquire takes a slot, reporting false when all are held.
func (s *upstreamSlots) acquire() bool {
	for {
		n := s.used.Load()
		if n >= s.limit.Load() {
			return false
		}
		if s.used.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release gives back a slot acquire took.
func (s *upstreamSlots) release() { s.used.Add(-1) }

// resize sets the bound to n slots.
func (s *upstreamSlots) resize(n int) { s.limit.Store(int64(n)) }
