package upstream

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// holdCore is a zapcore.Core that holds the write of one message until
// release is closed, saying when it began (held): a goroutine paused
// between a change of an upstream's state and its line.
type holdCore struct {
	zapcore.Core
	message string
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (c *holdCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, c)
}

func (c *holdCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if e.Message == c.message {
		c.once.Do(func() { close(c.held) })
		<-c.release
	}
	return c.Core.Write(e, fields)
}

// TestDownLineAfterBackUpLine: an upstream found back up while queries to
// it fail at once is marked down again by them; the lines must come in
// the order of the changes, so that the last says it is down. succeeded
// marked it up and then logged it, and failed marked it down and logged it
// in between: 'upstream back up' came last, with the upstream down (and
// left so while no probe finds it up: its line unwritten, a failed whose
// markDown ran after succeeded's change would also mark it down silently).
func TestDownLineAfterBackUpLine(t *testing.T) {
	obs, logs := observer.New(zap.InfoLevel)
	core := &holdCore{Core: obs, message: "upstream back up", held: make(chan struct{}), release: make(chan struct{})}
	f := NewForwarder([]string{"127.0.52.28:9", "127.0.52.28:10"}, time.Second, false)
	defer f.Close()
	f.log = zap.New(core)
	u := f.upstreams[0]
	u.probing.Store(true) // no probe: the test says when it answers
	fail := errors.New("SERVFAIL")
	f.failed(u, fail)
	require.True(t, u.down.Load())

	upDone, downDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(upDone); f.succeeded(u, time.Now(), 0) }()
	select { // marked up, its line not yet written
	case <-core.held:
	case <-time.After(5 * time.Second):
		t.Fatal("no 'upstream back up' line")
	}
	go func() {
		defer close(downDone)
		f.failed(u, fail)
		f.failed(u, fail) // 2 of 3 failed: down
	}()
	select { // the failures go first, or wait for the line before them
	case <-downDone:
	case <-time.After(100 * time.Millisecond):
	}
	close(core.release)
	<-upDone
	<-downDone

	require.True(t, u.down.Load())
	all := logs.AllUntimed()
	require.NotEmpty(t, all)
	last := all[len(all)-1].Message
	assert.True(t, strings.HasPrefix(last, "upstream flapping") || strings.HasPrefix(last, "upstream down"),
		"down, and the last line is %q", last)
}

// TestTwoBackUpsOneSteadyLine: two answers that find a flapping upstream
// down at once (two probes' answers, a slow upstream) both brought it back
// up, one after the other under its lock: the second overwrote the first's
// time back up, whose steady timer then found its time gone, and set no
// timer of its own (the upstream was up by then), so no line ever said the
// upstream steady and 'upstream flapping' stayed its last line while up.
// The second now finds it up and counts a success, and the first's timer
// says it steady.
func TestTwoBackUpsOneSteadyLine(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := NewForwarder([]string{"127.0.52.29:9", "127.0.52.29:10"}, time.Second, false)
	defer f.Close()
	f.log, f.flapWindow = zap.New(core), 50*time.Millisecond
	u := f.upstreams[0]
	u.probing.Store(true) // no probe: the test says when it answers
	u.down.Store(true)
	u.flapping.Store(true)

	u.lines.Lock() // both answers come while the lock is held
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { f.succeeded(u, time.Now(), 0) })
	}
	time.Sleep(50 * time.Millisecond) // both wait for the lock (if not, the second finds u up: no race to see)
	u.lines.Unlock()
	wg.Wait()
	require.False(t, u.down.Load())
	assert.Eventually(t, func() bool { return logs.FilterMessageSnippet("steady after flapping").Len() == 1 },
		2*time.Second, 5*time.Millisecond, "%v", logs.AllUntimed())
}

// TestDownAfterTheFlapWindowBeforeItsSteadyTimer: a flapping upstream
// back up for flapWindow, whose steady timer has not run yet (a timer
// fires apart from the clock logDown reads, late under load), and that is
// marked down now, is said steady, with its bout's downs not logged,
// before it is said down: as when the timer fired first. Before, its
// down line came alone, and the timer, finding it down, said nothing:
// the bout's count of unlogged downs was lost, and the log read "flapping"
// then "down" for an upstream that had been steady in between.
func TestDownAfterTheFlapWindowBeforeItsSteadyTimer(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f := NewForwarder([]string{"127.0.90.1:9", "127.0.90.1:10"}, time.Second, false)
	defer f.Close()
	f.log, f.flapWindow = zap.New(core), time.Hour // its timer never fires here
	u := f.upstreams[0]
	u.probing.Store(true) // no probe: the test says when it answers
	u.down.Store(true)
	u.flapping.Store(true)
	u.flaps.Store(3)
	f.succeeded(u, time.Now(), 0) // back up: no line while it flaps, a steady timer set
	require.False(t, u.down.Load())
	u.upSince.Add(-int64(f.flapWindow)) // up for flapWindow now, the timer not run

	fail := errors.New("SERVFAIL")
	for n := 0; !u.down.Load() && n < 64; n++ {
		f.failed(u, fail)
	}
	require.True(t, u.down.Load())
	all := logs.AllUntimed()
	require.Len(t, all, 2, "%v", all)
	assert.Equal(t, "upstream back up and steady after flapping", all[0].Message)
	assert.EqualValues(t, 3, all[0].ContextMap()["flaps_not_logged"])
	assert.True(t, strings.HasPrefix(all[1].Message, "upstream down"), "%q", all[1].Message)
	assert.False(t, u.flapping.Load())
}
