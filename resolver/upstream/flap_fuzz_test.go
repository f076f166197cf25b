package upstream

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// flapRun drives one upstream of a Forwarder through successes and
// failures at times of a clock of the test's (elapsed): each step moves
// the clock on by moving every time the upstream holds back, so that
// flapWindow and flapLogEvery (an hour and six, never reached by a real
// timer) pass at once. The timer a flapping upstream's back up sets (its
// steady line, after flapWindow) is the test's to fire: when the clock
// passes it, steady is called as the timer would, if no back up came
// since.
type flapRun struct {
	f       *Forwarder
	u       *upstreamState
	elapsed time.Duration
	// timer is when the pending steady timer fires (0: none), for the
	// back up it was set at (backUps).
	timer   time.Duration
	backUps int
	timerOf int
}

func newFlapRun(log *zap.Logger) *flapRun {
	f := NewForwarder([]string{"127.0.52.28:9", "127.0.52.28:10"}, time.Second, false)
	f.log, f.flapWindow, f.flapLogEvery = log, time.Hour, 6*time.Hour
	for _, u := range f.upstreams {
		u.probing.Store(true) // no probe goroutine: the test says when it answers
	}
	return &flapRun{f: f, u: f.upstreams[0]}
}

// advance moves the clock on by d, firing the steady timer if it passes.
func (r *flapRun) advance(d time.Duration) {
	r.elapsed += d
	for _, t := range []*atomic.Int64{&r.u.upSince, &r.u.downSince, &r.u.flapLogged} {
		if v := t.Load(); v != 0 {
			t.Store(v - int64(d))
		}
	}
	if r.timer != 0 && r.elapsed >= r.timer {
		r.timer = 0
		if r.timerOf == r.backUps {
			r.f.steady(r.u, r.u.upSince.Load())
		}
	}
}

// succeed records a usable answer from the upstream, now.
func (r *flapRun) succeed() {
	wasDown, flapping := r.u.down.Load(), r.u.flapping.Load()
	r.f.succeeded(r.u, time.Now(), 0)
	if wasDown && !r.u.down.Load() {
		r.backUps++
		if flapping {
			r.timer, r.timerOf = r.elapsed+r.f.flapWindow, r.backUps
		}
	}
}

func (r *flapRun) fail() { r.f.failed(r.u, errors.New("SERVFAIL")) }

// FuzzFlapLog drives an upstream through any sequence of successes,
// failures and waits (one input octet a step: the step in its low two
// bits, the wait before it in the others) and checks the log of its ups
// and downs (logDown, succeeded, steady) against what an operator reads in
// it: every down after the upstream was up flapWindow or more (or never
// down) is logged; while it is down the last line about it says it went
// down (or flaps), never that it is back up; once up flapWindow or more
// the last line is not that it is down; and its health and the routing
// are those of the same run with logging off.
func FuzzFlapLog(f *testing.F) {
	// 0: a failure; 1: a success; 2: nothing; 3: failures until down.
	f.Add([]byte{3, 1})                                     // down, up
	f.Add([]byte{3, 1, 3})                                  // down, up, down at once: flapping
	f.Add([]byte{3, 1, 3, 1, 3, 1, 3, 1})                   // flapping
	f.Add([]byte{3, 1, 3, 1, 4*5 + 2, 3})                   // flapping, steady by its timer, down
	f.Add([]byte{3, 1, 3, 1, 4*5 + 1, 3, 1, 3})             // TestFlappingAgainLogged
	f.Add([]byte{3, 1, 3, 1, 4*5 + 2})                      // TestFlappingUpstreamSteadyUnasked
	f.Add([]byte{3, 1, 3, 1, 3, 1, 4*7 + 2, 3, 1, 3})       // flapping, a flapLogEvery on, flapping again
	f.Add([]byte{3, 1, 4*2 + 1, 4*3 + 1, 4*3 + 0, 0, 3})    // up, successes, waits, failures
	f.Add([]byte{0, 0, 1, 4*1 + 0, 0, 1, 4*3 + 0, 0, 0, 1}) // failures in a window of successes
	gaps := []time.Duration{0, 0, time.Second, 30 * time.Minute, time.Hour - 1, time.Hour, 2 * time.Hour,
		3 * time.Hour, 6 * time.Hour, 7 * time.Hour}
	f.Fuzz(func(t *testing.T, steps []byte) {
		if len(steps) > 64 {
			return
		}
		core, logs := observer.New(zap.InfoLevel)
		r, quiet := newFlapRun(zap.New(core)), newFlapRun(zap.NewNop())
		defer r.f.Close()
		defer quiet.f.Close()
		everDown := false
		var upAt time.Duration // when it last came back up
		for i, s := range steps {
			gap := gaps[int(s>>2)%len(gaps)]
			r.advance(gap)
			quiet.advance(gap)
			wasDown, lines := r.u.down.Load(), logs.Len()
			switch s & 3 {
			case 0, 3: // a failure; 3: failures until it is down
				for n := 0; n == 0 || s&3 == 3 && !r.u.down.Load() && n < 64; n++ {
					r.fail()
					quiet.fail()
				}
			case 1:
				r.succeed()
				quiet.succeed()
			case 2: // time passes
			}
			down := r.u.down.Load()
			if !wasDown && down && (!everDown || r.elapsed-upAt >= r.f.flapWindow) && logs.Len() == lines {
				t.Fatalf("step %d: down after up %v, not logged: %v", i, r.elapsed-upAt, logs.AllUntimed())
			}
			if wasDown && !down {
				upAt = r.elapsed
			}
			everDown = everDown || down
			if all := logs.AllUntimed(); len(all) > 0 {
				last := all[len(all)-1].Message
				downLine := strings.HasPrefix(last, "upstream down") || strings.HasPrefix(last, "upstream flapping")
				if down && !downLine {
					t.Fatalf("step %d: down, and the last line is %q: %v", i, last, all)
				}
				if !down && everDown && r.elapsed-upAt >= r.f.flapWindow && downLine {
					t.Fatalf("step %d: up for %v, and the last line is %q: %v", i, r.elapsed-upAt, last, all)
				}
			}
			if r.u.down.Load() != quiet.u.down.Load() || r.u.health.w.Load() != quiet.u.health.w.Load() ||
				r.u.flapping.Load() != quiet.u.flapping.Load() || r.u.flaps.Load() != quiet.u.flaps.Load() {
				t.Fatalf("step %d: state differs with logging off", i)
			}
			if a, b := r.f.order(), quiet.f.order(); len(a) != len(b) || a[0].addr != b[0].addr {
				t.Fatalf("step %d: routing differs with logging off", i)
			}
		}
	})
}
