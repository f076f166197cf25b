package upstream

import (
	"context"
	"fmt"
	"math/bits"
	"strings"
	"sync"
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

// TestAllDownOrder: when every upstream is down, the one with the fewest
// recent failures is tried first, then the faster; the configured order
// only breaks ties. Before, every upstream down meant configured order:
// the dead first upstream before the one that had just lost one datagram.
func TestAllDownOrder(t *testing.T) {
	type state struct {
		outcomes string // oldest first: s success, f failure
		rtt      time.Duration
	}
	tests := []struct {
		name   string
		states []state // by configured order, all down
		want   []int   // configured positions, in the order tried
	}{
		{name: "fewer failures first", states: []state{{"ffff", 0}, {"sssssf", 20 * time.Millisecond}}, want: []int{1, 0}},
		{name: "same failures: faster first", states: []state{{"sf", 50 * time.Millisecond}, {"sf", 5 * time.Millisecond}}, want: []int{1, 0}},
		{name: "same failures: measured before unmeasured", states: []state{{"f", 0}, {"f", 30 * time.Millisecond}}, want: []int{1, 0}},
		{name: "tie: configured order", states: []state{{"ff", 0}, {"ff", 0}, {"sf", 0}}, want: []int{2, 0, 1}},
		// The cases below pin the ratio and the unmeasured rule from the
		// other side: a mutant of failureRatio or byRTT that only the
		// cases above were asked about survived them.
		{name: "same failures: measured before unmeasured listed after it", states: []state{{"f", 30 * time.Millisecond}, {"f", 0}}, want: []int{0, 1}},
		{name: "one exchange that failed is all failed", states: []state{{"f", 0}, {"sff", 0}}, want: []int{1, 0}},
		{name: "the same share failed: a tie", states: []state{{"f", 0}, {"ff", 0}}, want: []int{0, 1}},
		{name: "no outcome counts as half failed", states: []state{{"", 0}, {"sssf", 0}, {"sfff", 0}}, want: []int{1, 0, 2}},
		{name: "a full window: the share of its 32", states: []state{{"f" + strings.Repeat("s", 31), 50 * time.Millisecond}, {strings.Repeat("s", 31) + "f", 5 * time.Millisecond}}, want: []int{1, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addrs := make([]string, len(tc.states))
			for i := range addrs {
				addrs[i] = fmt.Sprintf("127.0.0.1:%d", 9+i)
			}
			f := NewForwarder(addrs, time.Second, false)
			f.Close() // no probes
			for i, st := range tc.states {
				u := f.upstreams[i]
				for _, o := range st.outcomes {
					u.health.record(o == 'f')
				}
				u.rtt.Store(int64(st.rtt))
				u.down.Store(true)
			}
			var got []int
			for _, u := range f.order() {
				got = append(got, indexOf(f.upstreams, u))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func indexOf(us []*upstreamState, u *upstreamState) int {
	for i, v := range us {
		if v == u {
			return i
		}
	}
	return -1
}

// TestHealthWindow: an upstream is down when more than half of its last 32
// exchanges failed; one failure among successes is not enough, and a first
// exchange that fails is. A usable answer brings a down upstream back with
// a clean window.
func TestHealthWindow(t *testing.T) {
	tests := []struct {
		name     string
		outcomes string // s success, f failure, in order
		down     bool
	}{
		{name: "first exchange fails", outcomes: "f", down: true},
		{name: "one loss among answers", outcomes: strings.Repeat("s", 31) + "f", down: false},
		{name: "a loss right after the first answer", outcomes: "sf", down: false},
		{name: "half failed", outcomes: strings.Repeat("sf", 16), down: false},
		{name: "over half failed", outcomes: strings.Repeat("sf", 16) + "f", down: true},
		{name: "old failures leave the window", outcomes: strings.Repeat("f", 5) + strings.Repeat("s", 32) + "ff", down: false},
		{name: "back up on an answer, window cleared", outcomes: strings.Repeat("f", 40) + "s" + "f", down: false},
		{name: "down again after two more failures", outcomes: strings.Repeat("f", 40) + "s" + "ff", down: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := NewForwarder([]string{"127.0.0.1:9"}, time.Second, false)
			f.Close() // no probes
			u := f.upstreams[0]
			for _, o := range tc.outcomes {
				if o == 'f' {
					f.failed(u, ErrAnswerMalformed)
				} else {
					f.succeeded(u, time.Now(), time.Millisecond)
				}
			}
			assert.Equal(t, tc.down, u.down.Load())
		})
	}
}

// TestRefusedPortFailsEveryQuery: queries sharing a socket to a closed
// port all fail at once with a network error. The kernel reports the ICMP
// port unreachable of one datagram once, to whichever call comes next; when
// that was another query's send, the query whose datagram drew it was left
// waiting out its whole timeout (seen when a probe and a client query went
// to a dead upstream together).
func TestRefusedPortFailsEveryQuery(t *testing.T) {
	const rounds, timeout = 30, 2 * time.Second
	type outcome struct {
		err  error
		took time.Duration
	}
	out := make(chan outcome, 2*rounds)
	for i := 0; i < rounds; i++ {
		m := &udpMux{addr: closedPort(t), timeout: timeout}
		t.Cleanup(m.close)
		for j := 0; j < 2; j++ {
			go func() {
				start := time.Now()
				_, err := m.exchange(context.Background(), question(fmt.Sprintf("r%d-%d.example.org.", i, j), dns.TypeA, false))
				out <- outcome{err, time.Since(start)}
			}()
		}
	}
	slow := 0
	for i := 0; i < 2*rounds; i++ {
		o := <-out
		require.Error(t, o.err)
		assert.False(t, isTimeout(o.err), "a refused query is a network error: %v", o.err)
		if o.took > timeout/2 {
			slow++
		}
	}
	assert.Zero(t, slow, "queries that waited for a timeout")
}

// TestProbedEverySecond: a down upstream is probed every probeEvery
// (README: "probed every second"), whether or not the probe before has
// its answer yet: one that answers again while a probe sent to it when
// silent waits out its timeout is back up at the next probe. Before, the
// next probe waited for that timeout and then a pause, so an upstream
// back after an outage was found a timeout plus a second later (3 s at
// the default 2 s; dnsdist's health check finds it within its 1 s
// interval), and with every upstream down clients waited that long.
func TestProbedEverySecond(t *testing.T) {
	u, answer := probedSilent(t, 5*time.Second, 100*time.Millisecond)
	answer() // the first probe goes unanswered, waiting out its 5 s
	back := time.Now()
	require.Eventually(t, func() bool { return !u.down.Load() }, 10*time.Second, 5*time.Millisecond)
	assert.Less(t, time.Since(back), time.Second, "back up at the next probe, not once the silent probe timed out")
}

// probedSilent is the upstream of a Forwarder over it alone (timeout
// its query timeout, probeEvery its probe interval), marked down and
// probed once, silent to that probe; from answer on it answers.
func probedSilent(t *testing.T, timeout, probeEvery time.Duration) (u *upstreamState, answer func()) {
	t.Helper()
	var answering atomic.Bool
	probed := make(chan struct{})
	var once sync.Once
	up := startUpstream(t, func(_ dns.ResponseWriter, q *dns.Msg) *dns.Msg {
		if !answering.Load() {
			once.Do(func() { close(probed) })
			return nil // silent
		}
		return defaultAnswer(nil, q)
	})
	f := NewForwarder([]string{up.addr}, timeout, false)
	t.Cleanup(f.Close)
	f.probeEvery = probeEvery
	u = f.upstreams[0]
	f.markDown(u)
	select {
	case <-probed:
	case <-time.After(5 * time.Second):
		t.Fatal("the down upstream was never probed")
	}
	return u, func() { answering.Store(true) }
}

// TestProbeBackUpIsAnAnswer: the probe's answer that brings a down
// upstream back up is an answer of it (LastAnswer, which /readyz reads
// before it probes itself), as any other usable answer is.
func TestProbeBackUpIsAnAnswer(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, time.Second, false)
	t.Cleanup(f.Close)
	f.probeEvery = 20 * time.Millisecond
	u := f.upstreams[0]
	require.True(t, f.LastAnswer().IsZero())
	f.markDown(u)
	require.Eventually(t, func() bool { return !u.down.Load() }, 10*time.Second, 5*time.Millisecond, "back up at a probe")
	require.Eventually(t, func() bool { return !f.LastAnswer().IsZero() }, 5*time.Second, 5*time.Millisecond,
		"the probe's answer is the upstream's last answer")
}

// TestOneProbeAtATime: a down upstream has one probe loop however often
// it is marked down (each failure past half its window marks it again):
// a loop per failure would multiply the probes an upstream already in
// trouble gets, every probeEvery.
func TestOneProbeAtATime(t *testing.T) {
	var probes atomic.Int64
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			probes.Add(1)
		}
		return nil // silent: it stays down
	})
	f := NewForwarder([]string{up.addr}, 100*time.Millisecond, false)
	t.Cleanup(f.Close)
	f.probeEvery = 200 * time.Millisecond
	u := f.upstreams[0]
	for range 20 {
		f.failed(u, ErrAnswerMalformed)
	}
	require.True(t, u.down.Load())
	require.Eventually(t, func() bool { return probes.Load() > 0 }, 10*time.Second, 5*time.Millisecond, "probed")
	before := probes.Load()
	time.Sleep(time.Second)
	// One loop sends five in the second (a ticker drops the ticks a slow
	// machine misses: never more); twenty loops, a hundred.
	assert.LessOrEqual(t, probes.Load()-before, int64(8), "probes in a second at one each %v", f.probeEvery)
}

// closeCounted is a Transport whose closes are counted.
type closeCounted struct {
	Transport
	closes *atomic.Int64
}

func (c closeCounted) Close() error {
	c.closes.Add(1)
	return c.Transport.Close()
}

// TestProbesLetTheTransportClose: the probes of a down upstream each hold
// the Forwarder's transports while they run, and only then (probe's
// acquire and release): once it is closed and they have ended, its
// transport closes. A probe that took no reference, or kept one, left the
// count off and the transport open (or closed under a query in flight).
func TestProbesLetTheTransportClose(t *testing.T) {
	var closes atomic.Int64
	f, err := New([]string{closedPort(t)}, Options{Timeout: time.Second, NewTransport: func(addr string, opts Options) (Transport, error) {
		tr, err := NewTransport(addr, opts)
		return closeCounted{tr, &closes}, err
	}})
	require.NoError(t, err)
	f.probeEvery = 20 * time.Millisecond
	u := f.upstreams[0]
	f.markDown(u)
	require.Eventually(t, func() bool { return u.health.w.Load()>>32 >= 3 }, 10*time.Second, 5*time.Millisecond, "probes refused")
	assert.GreaterOrEqual(t, f.refs.Load(), int64(0), "references held")
	f.Close()
	require.Eventually(t, func() bool { return closes.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the transport closed once the probes ended")
	assert.Equal(t, int64(0), f.refs.Load())
}

// TestLateFailuresOfAnAnsweredQuery: the tries of a query still in
// flight when another upstream answered it, here two hedged tries to
// silent upstreams, are each judged as they end (queryFailures.add), a
// failure of their upstream since the query was answered, and let the
// transports go: once the Forwarder is closed, every transport
// closes. The second late failure once waited for a lock the first kept.
func TestLateFailuresOfAnAnsweredQuery(t *testing.T) {
	var closes atomic.Int64
	good := startUpstream(t, nil)
	f, err := New([]string{silentUpstream(t), silentUpstream(t), good.addr}, Options{Timeout: time.Second,
		NewTransport: func(addr string, opts Options) (Transport, error) {
			tr, err := NewTransport(addr, opts)
			return closeCounted{tr, &closes}, err
		}})
	require.NoError(t, err)
	f.started.Store(true) // no first probes
	_, from, err := f.Forward(context.Background(), clientQuery("late.example.", false), false)
	require.NoError(t, err)
	require.Equal(t, good.addr, from, "after two hedges (150 ms each), well before the silent tries time out (1 s)")
	require.Eventually(t, func() bool { return len(f.Down()) == 2 }, 10*time.Second, 5*time.Millisecond,
		"each silent upstream down by its late timeout: another upstream answered the query")
	f.Close()
	require.Eventually(t, func() bool { return closes.Load() == 3 }, 10*time.Second, 5*time.Millisecond,
		"the transports closed once the late tries ended")
}

// TestProbeAsksOverUDP: a probe asks as a query does, over UDP first: an
// upstream whose TCP port takes connections and never answers (a
// firewall that lets UDP through alone) is found back up by its probes.
func TestProbeAsksOverUDP(t *testing.T) {
	pc, ln := listenBoth(t)
	t.Cleanup(func() { ln.Close() }) // held, never accepted: TCP hangs
	udpOnly := &testUpstream{addr: pc.LocalAddr().String()}
	udpOnly.servers = []*dns.Server{{PacketConn: pc, Handler: udpOnly}}
	testnet.Serve(t, udpOnly.servers...)
	f := NewForwarder([]string{udpOnly.addr}, 300*time.Millisecond, false)
	t.Cleanup(f.Close)
	f.probeEvery = 20 * time.Millisecond
	u := f.upstreams[0]
	f.markDown(u)
	require.Eventually(t, func() bool { return !u.down.Load() }, 10*time.Second, 5*time.Millisecond, "back up at a probe over UDP")

	// So does the first probe of an upstream not yet measured (explore,
	// askHealth).
	g := NewForwarder([]string{udpOnly.addr, closedPort(t)}, 2*time.Second, false)
	t.Cleanup(g.Close)
	g.start()
	require.Eventually(t, func() bool { return g.upstreams[0].rtt.Load() > 0 }, 10*time.Second, 5*time.Millisecond, "measured over UDP")
	assert.Zero(t, g.upstreams[0].downSince.Load(), "never marked down: the probe over TCP would have timed out")
}

// TestLateProbeTimeoutAfterBackUp: a probe sent while the upstream was
// silent that times out after another probe found it back up says
// nothing of it now (probe): its window, cleared when it came back,
// holds no failure for it.
func TestLateProbeTimeoutAfterBackUp(t *testing.T) {
	const timeout = 400 * time.Millisecond
	u, answer := probedSilent(t, timeout, 50*time.Millisecond) // this probe times out
	answer()
	require.Eventually(t, func() bool { return !u.down.Load() }, 10*time.Second, 5*time.Millisecond, "back up at a later probe")
	time.Sleep(timeout + 400*time.Millisecond) // the silent probe has timed out by now
	assert.Zero(t, bits.OnesCount32(uint32(u.health.w.Load())), "a failure recorded for the probe sent while it was silent")
	assert.False(t, u.down.Load())
}

// TestDownAndBackUpLogged: an upstream marked down is logged once, as a
// warning naming the failure that did it, however many queries and probes
// fail while it stays down, and once as it comes back up, with how long it
// was down: an encrypted upstream whose certificate expired while another
// answers was seen only in dnsfence_upstream_errors_total, where dnsdist
// logs every backend it marks down.
func TestDownAndBackUpLogged(t *testing.T) {
	var refusing atomic.Bool
	var asked atomic.Int64
	refusing.Store(true)
	up := startUpstream(t, func(_ dns.ResponseWriter, q *dns.Msg) *dns.Msg {
		asked.Add(1)
		m := defaultAnswer(nil, q)
		if refusing.Load() {
			m.Rcode, m.Answer = dns.RcodeRefused, nil
		}
		return m
	})
	core, logs := observer.New(zap.InfoLevel)
	f, err := New([]string{up.addr}, Options{Timeout: time.Second, Log: zap.New(core)})
	require.NoError(t, err)
	defer f.Close()
	f.probeEvery = 20 * time.Millisecond
	for range 5 {
		_, _, err := f.Forward(context.Background(), clientQuery("a.example.", false), false)
		require.Error(t, err)
	}
	require.Eventually(t, func() bool { return asked.Load() >= 10 }, 5*time.Second, 5*time.Millisecond, "probed while down")
	down := logs.FilterMessageSnippet("upstream down").AllUntimed()
	require.Len(t, down, 1, "one line while it stays down")
	assert.Equal(t, zap.WarnLevel, down[0].Level)
	assert.Equal(t, "upstream down: the only upstream, still asked, and probed every second", down[0].Message,
		"no other upstream to skip it for")
	fields := down[0].ContextMap()
	assert.Equal(t, up.addr, fields["upstream"])
	assert.Contains(t, fields["error"], "REFUSED")

	refusing.Store(false)
	require.Eventually(t, func() bool { return len(f.Down()) == 0 }, 5*time.Second, 5*time.Millisecond)
	back := logs.FilterMessage("upstream back up").AllUntimed()
	require.Len(t, back, 1)
	assert.Equal(t, up.addr, back[0].ContextMap()["upstream"])
	assert.Positive(t, back[0].ContextMap()["down_for"])
	_, _, err = f.Forward(context.Background(), clientQuery("b.example.", false), false)
	require.NoError(t, err)
	assert.Equal(t, 2, logs.Len(), "nothing more while it answers")
}

// TestRetiredForwarderLogsNoChange: a Forwarder retired by a reload logs
// no upstream down or back up for the exchanges it still finishes: its
// successor keeps the upstreams' health, and would log the same change
// again, or never log the back up that follows the retired one's down.
func TestRetiredForwarderLogsNoChange(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	f, err := New([]string{"127.0.0.1:9"}, Options{Timeout: time.Second, Log: zap.New(core)})
	require.NoError(t, err)
	next, err := New([]string{"127.0.0.1:9"}, Options{Timeout: time.Second})
	require.NoError(t, err)
	defer next.Close()
	f.Retire(next)
	u := f.upstreams[0]
	f.failed(u, ErrAnswerMalformed)
	require.True(t, u.down.Load())
	f.succeeded(u, time.Now(), time.Millisecond)
	require.False(t, u.down.Load())
	assert.Zero(t, logs.Len(), "%v", logs.AllUntimed())
}

// TestFlappingUpstreamLoggedOnce: an upstream that answers the probe's
// root NS query from its cache and SERVFAILs every client query that
// another upstream answers (a forwarder whose own upstream is down) is
// found back up by each probe and marked down again by the next query:
// it logged a warning and a line back up each time, a pair a second at
// the default probe interval. Now its first down is logged, then one
// line saying it flaps (once a flapLogEvery), nothing for each flap; and
// once it answers again and stays up for flapWindow, one line says so.
func TestFlappingUpstreamLoggedOnce(t *testing.T) {
	mode, flaky, f, logs := flappingPair(t)
	f.probeEvery, f.flapWindow = 20*time.Millisecond, 2*time.Second
	u := f.upstreams[0]

	// Queries for 1.5 s, at most 300: each probe (every 20 ms) brings
	// the flaky one back up, and the next query that tries it SERVFAILs.
	var backUps int
	wasDown := false
	for i, start := 0, time.Now(); i < 300 && time.Since(start) < 1500*time.Millisecond; i++ {
		_, _, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("n%d.example.", i), false), false)
		require.NoError(t, err, "the good upstream answers")
		if d := u.down.Load(); wasDown && !d {
			backUps++
		}
		wasDown = u.down.Load()
		time.Sleep(5 * time.Millisecond)
	}
	require.GreaterOrEqual(t, backUps, 5, "it flapped")
	assert.Len(t, logs.FilterMessage("upstream down: skipped while another is up, probed every second").AllUntimed(), 1, "the first down")
	assert.Len(t, logs.FilterMessage("upstream back up").AllUntimed(), 1, "the first back up")
	flapping := logs.FilterMessageSnippet("upstream flapping").AllUntimed()
	require.Len(t, flapping, 1, "one line while it flaps, inside flapLogEvery")
	assert.Equal(t, zap.WarnLevel, flapping[0].Level)
	assert.Equal(t, flaky.addr, flapping[0].ContextMap()["upstream"])
	assert.Contains(t, flapping[0].ContextMap()["error"], "SERVFAIL")

	// It answers again: back up at the next probe, and steady once up
	// for flapWindow while it answers.
	mode.Store(flapAnswers)
	require.Eventually(t, func() bool {
		_, _, err := f.Forward(context.Background(), clientQuery("steady.example.", false), false)
		require.NoError(t, err)
		return logs.FilterMessageSnippet("steady after flapping").Len() == 1
	}, 5*time.Second, 50*time.Millisecond)
	steady := logs.FilterMessageSnippet("steady after flapping").AllUntimed()
	assert.Positive(t, steady[0].ContextMap()["flaps_not_logged"])
	assert.False(t, u.down.Load())
	assert.Equal(t, 4, logs.Len(), "%v", logs.AllUntimed())
}

// TestFlappingAgainLogged: an upstream that flapped, was logged steady,
// went down and back up (both logged) and then down again within
// flapWindow is flapping anew: that down was not logged when the last
// flap line was less than flapLogEvery before, so the last line said it
// was back up while it was down, and stayed down. The first down of each
// bout of flapping is logged.
func TestFlappingAgainLogged(t *testing.T) {
	mode, _, f, logs := flappingPair(t)
	f.probeEvery, f.flapWindow = 20*time.Millisecond, 300*time.Millisecond
	u := f.upstreams[0]
	i := 0
	query := func() {
		i++
		_, _, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("n%d.example.", i), false), false)
		require.NoError(t, err, "the good upstream answers")
	}
	count := func(snippet string) int { return logs.FilterMessageSnippet(snippet).Len() }

	// A first bout of flapping, logged, then steady.
	require.Eventually(t, func() bool { query(); return count("upstream flapping") == 1 }, 5*time.Second, 5*time.Millisecond)
	mode.Store(flapAnswers)
	require.Eventually(t, func() bool { query(); return count("steady after flapping") == 1 }, 5*time.Second, 20*time.Millisecond)

	// Down, long after it came back: logged; and back up: logged.
	mode.Store(flapBroken)
	require.Eventually(t, func() bool { query(); return count("upstream back up") == 3 }, 5*time.Second, 5*time.Millisecond,
		"%v", logs.AllUntimed())
	require.Equal(t, 2, count("upstream down"), "%v", logs.AllUntimed())

	// Down again at once, and for good: a second bout, whose first down
	// says so, the last line not being that it is back up.
	mode.Store(flapDead)
	require.Eventually(t, func() bool { query(); return u.down.Load() }, 5*time.Second, 5*time.Millisecond)
	all := logs.AllUntimed()
	require.NotEmpty(t, all)
	last := all[len(all)-1]
	assert.Equal(t, zap.WarnLevel, last.Level, "%v", all)
	assert.Contains(t, last.Message, "upstream flapping", "%v", all)
	assert.Equal(t, 2, count("upstream flapping"), "%v", all)
}

// TestFlappingUpstreamSteadyUnasked: a flapping upstream's back ups are
// not logged, and the line saying it is steady came only with a query it
// answered flapWindow after its probe found it up: one no query asks
// once it answers again (the second of an ordered list, its first back)
// stayed 'flapping' in the log, up for good. It is said steady
// flapWindow after it came back, asked or not.
func TestFlappingUpstreamSteadyUnasked(t *testing.T) {
	mode, _, f, logs := flappingPair(t)
	f.probeEvery, f.flapWindow = 20*time.Millisecond, 300*time.Millisecond
	u := f.upstreams[0]
	i := 0
	require.Eventually(t, func() bool {
		i++
		_, _, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("n%d.example.", i), false), false)
		require.NoError(t, err, "the good upstream answers")
		return logs.FilterMessageSnippet("upstream flapping").Len() == 1
	}, 5*time.Second, 5*time.Millisecond)

	// It answers again, and no query asks it.
	mode.Store(flapAnswers)
	require.Eventually(t, func() bool { return logs.FilterMessageSnippet("steady after flapping").Len() == 1 },
		5*time.Second, 20*time.Millisecond, "%v", logs.AllUntimed())
	assert.False(t, u.down.Load())
	assert.False(t, u.flapping.Load())
}

// How flappingPair's flaky upstream answers.
const (
	flapAnswers = iota // every query
	flapBroken         // the probe's root NS query only: SERVFAIL to the others
	flapDead           // SERVFAIL to all
)

// flappingPair is a Forwarder of two upstreams, ordered, logging into
// logs: flaky, which answers as mode says (flapBroken at first), and one
// that answers all.
func flappingPair(t *testing.T) (mode *atomic.Int32, flaky *testUpstream, f *Forwarder, logs *observer.ObservedLogs) {
	t.Helper()
	mode = new(atomic.Int32)
	mode.Store(flapBroken)
	flaky = startUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, q)
		probe := q.Question[0].Name == "." && q.Question[0].Qtype == dns.TypeNS
		if mo := mode.Load(); mo == flapDead || mo == flapBroken && !probe {
			m.Rcode, m.Answer = dns.RcodeServerFailure, nil
		}
		return m
	})
	good := startUpstream(t, defaultAnswer)
	core, observed := observer.New(zap.InfoLevel)
	f, err := New([]string{flaky.addr, good.addr}, Options{Timeout: time.Second, Log: zap.New(core)})
	require.NoError(t, err)
	t.Cleanup(f.Close)
	return mode, flaky, f, observed
}
