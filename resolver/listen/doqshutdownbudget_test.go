package listen

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQShutdownBudgetEnds: a query still unanswered when Shutdown's
// context ends does not hold the connections open: they are closed with
// DOQ_NO_ERROR then, the query getting no answer, rather than once its
// upstream answers, and Shutdown returns the context's error. (It returns
// only once the query's handler has: the close comes first.)
func TestDoQShutdownBudgetEnds(t *testing.T) {
	d := newDoQSetup(t, nil)
	c, err := d.dial(t)
	require.NoError(t, err)
	done, shut := shutdownWhileAsked(t, d, c, 400*time.Millisecond)
	released := false
	defer func() {
		if !released {
			d.up.releaseSlow()
		}
	}()
	assert.Equal(t, int64(DoQNoError), closeCode(c), "closed with DOQ_NO_ERROR at the context's end, the query still held upstream")
	select {
	case a := <-done:
		assert.Error(t, a.err, "the held query gets no answer")
	case <-time.After(5 * time.Second):
		t.Error("the held query not ended by the close")
	}
	d.up.releaseSlow()
	released = true
	select {
	case err := <-shut:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown still running 10 s after the held query was released")
	}
}
