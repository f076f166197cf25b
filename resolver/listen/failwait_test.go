package listen

import (
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
