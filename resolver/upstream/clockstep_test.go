package upstream

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestUpstreamTimesByMonotonicClock: the times an upstream keeps (when
// any upstream last answered, when its health was last checked, when it
// came back up, when a kept DoQ or DoH connection last had an answer) are
// measured by the monotonic clock, so that the machine's wall clock
// stepped by an hour (NTP at boot, a VM resumed from a snapshot) changes
// none of the intervals read from them. Kept as Unix nanoseconds, a clock
// stepped back an hour had /readyz say ready without asking an upstream
// for that hour, no upstream's health checked, a steady upstream's next
// down logged as flapping, and a silent connection kept; one stepped
// forward had a connection dropped at the first timeout.
func TestUpstreamTimesByMonotonicClock(t *testing.T) {
	if !testnet.WallSteppable() {
		t.Skip("time.Time's layout changed: testnet.WallStepped no longer steps the wall clock alone")
	}
	// after is when something happened ago before now, as time.Now then
	// read it: with the wall clock an hour ahead of now's, since it was
	// stepped back an hour meanwhile (step -1h), or an hour behind.
	after := func(ago, step time.Duration) time.Time {
		return testnet.WallStepped(time.Now().Add(-ago), -step)
	}
	for _, step := range []time.Duration{-time.Hour, time.Hour} {
		t.Run("last answer, clock stepped "+step.String(), func(t *testing.T) {
			f := NewForwarder([]string{closedPort(t)}, time.Second, false)
			t.Cleanup(f.Close)
			f.succeeded(f.upstreams[0], after(40*time.Second, step), time.Millisecond)
			// /readyz asks the upstreams when none answered within 30 s.
			assert.InDelta(t, 40, time.Since(f.LastAnswer()).Seconds(), 5, "the answer was 40 s ago")
		})

		t.Run("health check, clock stepped "+step.String(), func(t *testing.T) {
			var roots atomic.Int32
			up := startUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) *dns.Msg {
				if q.Question[0].Name == "." {
					roots.Add(1)
				}
				return defaultAnswer(w, q)
			})
			f := NewForwarder([]string{up.addr}, time.Second, false)
			t.Cleanup(f.Close)
			u := f.upstreams[0]
			f.checkHealth(u, after(time.Second, step))
			require.Eventually(t, func() bool { return roots.Load() == 1 && !u.checking.Load() }, 5*time.Second, 10*time.Millisecond)
			f.checkHealth(u, time.Now())
			require.Eventually(t, func() bool { return roots.Load() == 2 }, 5*time.Second, 10*time.Millisecond,
				"a check a second after the last one, checkEvery (%v) being over, asks again", checkEvery)
			f.checkHealth(u, time.Now())
			f.checkHealth(u, time.Now())
			require.Eventually(t, func() bool { return !u.checking.Load() }, 5*time.Second, 10*time.Millisecond)
			assert.Equal(t, int32(2), roots.Load(), "checks within checkEvery of the last ask nothing")
		})

		t.Run("flapping, clock stepped "+step.String(), func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			f, err := New([]string{closedPort(t), closedPort(t)}, Options{Timeout: time.Second, Log: zap.New(core)})
			require.NoError(t, err)
			t.Cleanup(f.Close)
			u := f.upstreams[0]
			u.probing.Store(true) // no probe goroutine: the test says when it answers
			u.downSince.Store(1)
			u.down.Store(true)
			// Back up 20 s ago, twice flapWindow: a down now is a down,
			// not a flap.
			require.True(t, f.backUp(u, after(2*f.flapWindow, step)))
			for !u.down.Load() {
				f.failed(u, errors.New("test failure"))
			}
			var msgs []string
			for _, e := range logs.All() {
				msgs = append(msgs, e.Message)
			}
			assert.Equal(t, []string{"upstream back up", f.downLine()}, msgs)
			assert.False(t, u.flapping.Load())
		})

		t.Run("silent connection, clock stepped "+step.String(), func(t *testing.T) {
			var l lastAnswer
			l.mark(after(1500*time.Millisecond, step))
			assert.False(t, l.silent(time.Now(), 2*time.Second), "an answer 1.5 s ago, within a timeout of 2 s")
			assert.True(t, l.silent(time.Now(), time.Second), "no answer for a whole timeout of 1 s")
		})

		// The step between the answer and now: the time clockTime gives
		// back must carry a monotonic reading for now.Sub to use it.
		t.Run("silent connection, clock stepped since the answer "+step.String(), func(t *testing.T) {
			var l lastAnswer
			l.mark(time.Now().Add(-1500 * time.Millisecond))
			now := testnet.WallStepped(time.Now(), step)
			assert.False(t, l.silent(now, 2*time.Second), "an answer 1.5 s ago, within a timeout of 2 s")
			assert.True(t, l.silent(now, time.Second), "no answer for a whole timeout of 1 s")
		})
	}
}
