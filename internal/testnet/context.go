package testnet

import (
	"context"
	"testing"
	"time"
)

// lateTimerContext is a context whose deadline passes before it is done.
type lateTimerContext struct {
	context.Context // done late after deadline
	deadline        time.Time
}

func (c lateTimerContext) Deadline() (time.Time, bool) { return c.deadline, true }

// WithLateTimer returns a context whose deadline is timeout from now and
// which is done late after that: the gap in which a dial, read or write
// given its deadline has timed out while ctx.Err() is still nil. The
// network poller's timer and the context's fire apart; under -race on a
// busy machine the context's fired late enough for a DoT write that timed
// out at the deadline to be retried on a new connection (CI,
// TestDoTWriteEndsAtTheQueryDeadline). The context is cancelled when t
// ends.
func WithLateTimer(t testing.TB, timeout, late time.Duration) context.Context {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(late))
	t.Cleanup(cancel)
	return lateTimerContext{ctx, deadline}
}
