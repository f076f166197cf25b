package listen

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// churnListener fails every other Accept with EMFILE: a process at its
// file descriptor limit while connections come and go, each one closed
// freeing the descriptor the next accept takes.
type churnListener struct {
	net.Listener
	n int
}

func (l *churnListener) Accept() (net.Conn, error) {
	l.n++
	if l.n%2 == 1 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	a, b := net.Pipe()
	_ = b.Close()
	return a, nil
}

// TestAcceptFailuresBetweenSuccessesThrottled: failures that come between
// accepted connections (out of file descriptors while connections churn)
// wrote a warn line each, up to 200 a second, since each accepted
// connection started the waits again from 5 ms: the line a second that
// failWait promises held only for failures in a row. Each run of failures
// still starts at 5 ms, but its first line is written once a second at
// most, and the next line written says how many were not.
func TestAcceptFailuresBetweenSuccessesThrottled(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	ln := Patient(&churnListener{}, zap.New(core))
	const accepted = 40
	start := time.Now()
	for range accepted {
		c, err := ln.Accept()
		require.NoError(t, err)
		_ = c.Close()
	}
	took := time.Since(start)
	warned := logs.FilterMessage("accepting a TCP connection").All()
	require.NotEmpty(t, warned)
	assert.LessOrEqual(t, len(warned), int(took/time.Second)+1,
		"%d failures between accepted connections in %s", accepted, took.Round(time.Millisecond))
	assert.Less(t, took, accepted*20*time.Millisecond, "each run of failures still waits 5 ms first")

	// A second later the next failure is logged, with the count held back.
	time.Sleep(time.Second)
	c, err := ln.Accept()
	require.NoError(t, err)
	_ = c.Close()
	last := logs.FilterMessage("accepting a TCP connection").All()
	require.Len(t, last, len(warned)+1)
	assert.EqualValues(t, accepted+1-len(last), last[len(last)-1].ContextMap()["suppressed"],
		"lines written plus those suppressed are every failure")
}

// TestFailWaitSteps: failWait's waits start at 5 ms and double while
// failures go on; the first failure of a run is not logged when a line
// was written less than acceptRetryMax before, and the next line written
// carries `suppressed`, the failures not logged since (absent at 0). A
// stop ends the wait with false, its end with true; reset starts the
// waits again from 5 ms.
func TestFailWaitSteps(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	stop := make(chan struct{})
	close(stop)
	failed := errors.New("accept: too many open files")
	var f failWait
	lines := func() []map[string]any {
		var all []map[string]any
		for _, l := range logs.TakeAll() {
			all = append(all, l.ContextMap())
		}
		return all
	}

	assert.False(t, f.wait(log, "accepting", failed, stop), "the stop ends the wait")
	assert.Equal(t, 5*time.Millisecond, f.d)
	got := lines()
	require.Len(t, got, 1, "the first failure is logged")
	assert.NotContains(t, got[0], "suppressed")

	assert.False(t, f.wait(log, "accepting", failed, stop))
	assert.Equal(t, 10*time.Millisecond, f.d)
	require.Len(t, lines(), 1, "a failure within a run is logged")

	f.reset()
	assert.Zero(t, f.d)
	assert.False(t, f.wait(log, "accepting", failed, stop))
	assert.Equal(t, 5*time.Millisecond, f.d, "from 5 ms again")
	assert.Empty(t, lines(), "a new run's first failure, a line written just before: not logged")

	assert.False(t, f.wait(log, "accepting", failed, stop))
	got = lines()
	require.Len(t, got, 1)
	assert.Equal(t, int64(1), got[0]["suppressed"])

	assert.True(t, f.wait(nil, "accepting", failed, make(chan struct{})), "waited out, no stop")
	assert.Empty(t, lines(), "no log, no line")
}
