package listen

import (
	"sync"
	"sync/atomic"
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

// TestWorkerPoolSaysEachJobDone: done is called after every job, one a
// worker runs and one past max on a goroutine of its own alike: the UDP
// server counts the queries it resumed with it, and its shutdown waits
// for them.
func TestWorkerPoolSaysEachJobDone(t *testing.T) {
	p := newWorkerPool(1)
	defer p.close()
	var jobs sync.WaitGroup
	p.done = jobs.Done
	release := make(chan struct{})
	const n = 3 // a worker, and 2 goroutines of their own
	jobs.Add(n)
	for range n {
		p.run(func() { <-release })
	}
	close(release)
	finished := make(chan struct{})
	go func() { jobs.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("a job was not said done")
	}
}

// TestWorkerPoolIdleWorkerEnds: a worker that waits its idle time for a
// job ends, having run its last job once, and the next job starts
// another.
func TestWorkerPoolIdleWorkerEnds(t *testing.T) {
	p := newWorkerPool(1)
	p.idle = 50 * time.Millisecond
	defer p.close()
	var runs, dones atomic.Int64
	p.done = func() { dones.Add(1) }
	p.run(func() { runs.Add(1) })
	require.Eventually(t, func() bool { return len(p.running) == 0 }, 5*time.Second, time.Millisecond, "the idle worker ended")
	assert.Equal(t, int64(1), runs.Load(), "runs of the job")
	assert.Equal(t, int64(1), dones.Load(), "done called")
	ran := make(chan struct{})
	p.run(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the job after the worker ended did not run")
	}
}
