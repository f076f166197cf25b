package listen

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWorkerPoolRunsEveryJob: jobs past the pool's workers, and past its
// cap, still run at once; workers that are done take the next jobs; close
// ends the idle ones.
func TestWorkerPoolRunsEveryJob(t *testing.T) {
	p := newWorkerPool(2)
	release := make(chan struct{})
	started := make(chan int, 10)
	for i := 0; i < 5; i++ { // 2 workers and 3 goroutines of their own, all blocked
		p.run(func() { started <- i; <-release })
	}
	got := map[int]bool{}
	for range 5 {
		got[<-started] = true
	}
	assert.Len(t, got, 5, "no job waits for a worker")
	assert.Len(t, p.running, 2, "at most 2 workers")
	close(release)
	done := make(chan struct{})
	require.Eventually(t, func() bool {
		select {
		case p.jobs <- func() { close(done) }: // an idle worker takes it
			return true
		default:
			return false
		}
	}, 5*time.Second, time.Millisecond)
	<-done
	p.close()
	require.Eventually(t, func() bool { return len(p.running) == 0 }, 5*time.Second, time.Millisecond, "idle workers end on close")
}
