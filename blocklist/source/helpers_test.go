package source

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitFor is how long a test waits for something that should happen at
// once (a delivery, a refusal) before it fails.
const waitFor = 5 * time.Second

// tick is how often require.Eventually looks.
const tick = 10 * time.Millisecond

// receiver records what a source delivers; refuse, when set, refuses it.
type receiver struct {
	mu     sync.Mutex
	got    []Content
	refuse error
}

func (r *receiver) deliver(c Content) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse != nil {
		return r.refuse
	}
	r.got = append(r.got, c)
	return nil
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *receiver) last() Content {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return Content{}
	}
	return r.got[len(r.got)-1]
}

func (r *receiver) setRefuse(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refuse = err
}

// waitCount waits until the receiver holds n copies and returns the n-th.
func (r *receiver) waitCount(t *testing.T, n int) Content {
	t.Helper()
	require.Eventually(t, func() bool { return r.count() >= n }, waitFor, tick, "waiting for delivery %d", n)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[n-1]
}

// run starts src.Run until the test ends and returns its receiver.
func run(t *testing.T, src Source) *receiver {
	t.Helper()
	rec := &receiver{}
	runWith(t, src, rec)
	return rec
}

// runWith starts src.Run delivering to rec until the test ends or the
// returned stop is called; stop waits for Run to return.
func runWith(t *testing.T, src Source, rec *receiver) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, rec.deliver)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitFor):
				t.Error("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// corrupt changes the last byte of the file at path.
func corrupt(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	data[len(data)-1] ^= 1
	return os.WriteFile(path, data, 0o600)
}

// waitError waits until the source's last error matches target (errors.Is)
// and returns its status.
func waitError(t *testing.T, src Source, target error) Status {
	t.Helper()
	require.Eventually(t, func() bool { return errors.Is(src.Status().LastError, target) }, waitFor, tick,
		"waiting for error %v; status: %+v", target, src.Status())
	return src.Status()
}

// waitFile waits until a file exists (a disk copy is renamed into place
// whole).
func waitFile(t *testing.T, path string) {
	t.Helper()
	require.Eventually(t, func() bool { _, err := os.Stat(path); return err == nil }, waitFor, tick, "waiting for %s", path)
}

// waitStatus waits until the source's status satisfies ok (it is updated
// just after a delivery returns) and returns it.
func waitStatus(t *testing.T, src Source, ok func(Status) bool) Status {
	t.Helper()
	require.Eventually(t, func() bool { return ok(src.Status()) }, waitFor, tick, "status: %+v", src.Status())
	return src.Status()
}
