package upstream

import (
	"context"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOrderWithOneDown: with an upstream down, the ones up are tried in
// configured order under the ordered strategy, whatever their round-trip
// times, and by smoothed round-trip time under fastest (order). The
// ordered strategy was tested only with none down.
func TestOrderWithOneDown(t *testing.T) {
	for _, tc := range []struct {
		fastest bool
		want    []int
	}{
		{fastest: false, want: []int{1, 2}},
		{fastest: true, want: []int{2, 1}},
	} {
		f := NewForwarder([]string{"127.0.0.1:9", "127.0.0.1:10", "127.0.0.1:11"}, time.Second, tc.fastest)
		f.Close() // no probes
		f.upstreams[0].down.Store(true)
		f.upstreams[1].rtt.Store(int64(50 * time.Millisecond))
		f.upstreams[2].rtt.Store(int64(5 * time.Millisecond))
		var got []int
		for _, u := range f.order() {
			got = append(got, indexOf(f.upstreams, u))
		}
		assert.Equal(t, tc.want, got, "fastest %v", tc.fastest)
	}
}

// TestSmoothedRTT: an upstream's round-trip time is smoothed over its
// answers (observe: the first sets it, each later one moves it a quarter
// of the way), so that the fastest strategy and the hedge delay follow an
// upstream that slows down, not only its first answer.
func TestSmoothedRTT(t *testing.T) {
	u := new(upstreamState)
	u.observe(40 * time.Millisecond)
	assert.Equal(t, int64(40*time.Millisecond), u.rtt.Load())
	u.observe(80 * time.Millisecond)
	assert.Equal(t, int64(50*time.Millisecond), u.rtt.Load(), "a quarter of the way to 80 ms")
	u.observe(10 * time.Millisecond)
	assert.Equal(t, int64(40*time.Millisecond), u.rtt.Load(), "a quarter of the way to 10 ms")
}

// TestAnswersMeasured: an upstream's usable answers, to a query and to a
// probe, set its smoothed round-trip time (succeeded), which orders the
// upstreams under fastest and sets the hedge delay; TestSmoothedRTT
// asks observe alone.
func TestAnswersMeasured(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	u := f.upstreams[0]
	_, _, err := f.Forward(context.Background(), clientQuery("measured.example.", false), false)
	require.NoError(t, err)
	assert.Positive(t, u.rtt.Load(), "measured by a query's answer")
	u.rtt.Store(0)
	require.NoError(t, f.Probe(context.Background()))
	assert.Positive(t, u.rtt.Load(), "measured by a probe's answer")
}

// TestAnswerClearsSilent: an upstream whose health check timed out is
// silent, and while it is, a query's own timeout is a failure of it
// (unansweredQueryFailure); its next answer ends that (succeeded). An
// upstream back up that then times out on a name whose zone does not
// answer (while it answers the health check) is not marked down for it:
// its health is checked, and stays as it was.
func TestAnswerClearsSilent(t *testing.T) {
	var silent atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if silent.Load() || r.Question[0].Name == "slow.example." {
			return nil
		}
		return defaultAnswer(w, r)
	})
	f := NewForwarder([]string{up.addr}, 200*time.Millisecond, false)
	f.probeEvery = 20 * time.Millisecond
	t.Cleanup(f.Close)
	u := f.upstreams[0]

	silent.Store(true)
	_, _, err := f.Forward(context.Background(), clientQuery("a.example.", false), false)
	require.Error(t, err)
	require.Eventually(t, func() bool { return u.silent.Load() && len(f.Down()) == 1 }, 10*time.Second, 5*time.Millisecond,
		"its health check timed out: silent, and down")

	silent.Store(false)
	require.Eventually(t, func() bool { return len(f.Down()) == 0 }, 10*time.Second, 5*time.Millisecond, "back up at a probe")
	assert.False(t, u.silent.Load(), "its answer ended the silence")

	for range 3 {
		_, _, err := f.Forward(context.Background(), clientQuery("slow.example.", false), false)
		require.Error(t, err)
	}
	w := u.health.w.Load()
	assert.Zero(t, bits.OnesCount32(uint32(w)), "no failure for the silent name of an upstream that answers")
	assert.Empty(t, f.Down())
}

// TestFailedProbesCounted: each failed probe of a down upstream is
// recorded in its window (probe), which orders the upstreams when every
// one is down (TestAllDownOrder): an upstream that has refused every
// probe for a while is behind one that failed once.
func TestFailedProbesCounted(t *testing.T) {
	f := NewForwarder([]string{closedPort(t)}, time.Second, false)
	f.probeEvery = 20 * time.Millisecond
	t.Cleanup(f.Close)
	u := f.upstreams[0]
	_, _, err := f.Forward(context.Background(), clientQuery("a.example.", false), false)
	require.Error(t, err)
	require.Len(t, f.Down(), 1)
	require.Eventually(t, func() bool {
		w := u.health.w.Load()
		return w>>32 >= 5 && bits.OnesCount32(uint32(w)) == int(w>>32)
	}, 10*time.Second, 5*time.Millisecond, "the refused probes fill its window with failures")
}

// TestRetryBudget: the tries beyond their query's first in flight to one
// upstream are at most a fifth of the queries in flight, and never fewer
// than retryFloor (takeRetry; Envoy's budget is 20 %, at least 3): the
// retryFloor-th is taken, the next is not until one is given back.
func TestRetryBudget(t *testing.T) {
	f := NewForwarder([]string{"127.0.0.1:9", "127.0.0.1:10"}, time.Second, false)
	f.Close()
	u := f.upstreams[1]
	for i := range retryFloor {
		require.True(t, f.takeRetry(u), "retry %d of %d", i+1, retryFloor)
	}
	assert.False(t, f.takeRetry(u), "one over the floor")
	assert.Equal(t, int64(retryFloor), u.retries.Load(), "the refused retry took nothing")
	u.retries.Add(-1)
	assert.True(t, f.takeRetry(u), "room again once one ended")

	f.inflight.Store(200 * retryShare)
	for range 200 - retryFloor {
		require.True(t, f.takeRetry(u))
	}
	assert.False(t, f.takeRetry(u), "a fifth of the queries in flight")
}

// TestRetryBudgetGivenBack: a try beyond its query's first gives its
// room in its upstream's retry budget back when it ends (forwardHedged),
// one each, whether it followed a failure (a failover) or a slow try (a
// hedge), and the query's first try takes none: a budget that lost or
// kept room at each retry would let a burst through, or throttle every
// failover for good, as a query of its own does not show.
func TestRetryBudgetGivenBack(t *testing.T) {
	b := startUpstream(t, nil)
	for _, first := range []string{closedPort(t), silentUpstream(t)} {
		f := NewForwarder([]string{first, b.addr}, 2*time.Second, false)
		t.Cleanup(f.Close)
		f.started.Store(true) // no probes: the first upstream is asked first
		_, from, err := f.Forward(context.Background(), clientQuery("budget.example.", false), false)
		require.NoError(t, err)
		require.Equal(t, b.addr, from)
		// The try that answered gave its room back before its answer
		// reached the query.
		assert.Equal(t, int64(0), f.upstreams[1].retries.Load(), "the second upstream's budget after %s", first)
		assert.Equal(t, int64(0), f.upstreams[0].retries.Load(), "the first try took no room")
		assert.Equal(t, int64(0), f.inflight.Load(), "the query no longer in flight: the budget's share is of those that are")
	}
}

// TestThrottledFailoverCountedAsFailover: a query whose first try failed
// and whose failover found the next upstream's retry budget full waits for
// room (forwardHedged); the try it sends once there is room follows a
// failure, not a slow try, and is counted in
// dnsfence_upstream_retries_total as a failover, not as a hedge.
func TestThrottledFailoverCountedAsFailover(t *testing.T) {
	b := startUpstream(t, nil)
	reg := prometheus.NewRegistry()
	f, err := New([]string{closedPort(t), b.addr}, Options{Timeout: 2 * time.Second, Metrics: NewMetrics(reg)})
	require.NoError(t, err)
	t.Cleanup(f.Close)
	f.started.Store(true) // no probes: the first upstream is asked first
	f.upstreams[1].retries.Store(retryFloor)

	type result struct {
		from string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, from, err := f.Forward(context.Background(), clientQuery("throttled.example.", false), false)
		done <- result{from, err}
	}()
	require.Eventually(t, func() bool {
		return upstreamCounts(t, reg, "dnsfence_upstream_retries_total", b.addr, "reason")[retryThrottled] > 0
	}, 10*time.Second, 5*time.Millisecond, "the failover throttled")
	f.upstreams[1].retries.Add(-retryFloor)
	r := <-done
	require.NoError(t, r.err)
	assert.Equal(t, b.addr, r.from)
	got := upstreamCounts(t, reg, "dnsfence_upstream_retries_total", b.addr, "reason")
	assert.Equal(t, float64(1), got[retryFailover], "sent as a failover once there was room: %v", got)
	assert.Zero(t, got[retryHedge], "no hedge: every try before it had failed: %v", got)
}

// TestHedgeDelay: a try's hedge delay is twice its upstream's smoothed
// round-trip time, at least hedgeFloor, at most a quarter of the timeout
// (hedgeFloor when that is less), and never over half of the timeout: a
// timeout of 200 ms hedges after 100 ms, not after the 150 ms floor.
func TestHedgeDelay(t *testing.T) {
	for _, tc := range []struct {
		timeout, rtt, want time.Duration
	}{
		{timeout: 2 * time.Second, rtt: 0, want: hedgeFloor},
		{timeout: 2 * time.Second, rtt: 100 * time.Millisecond, want: 200 * time.Millisecond},
		{timeout: 2 * time.Second, rtt: time.Second, want: 500 * time.Millisecond},
		{timeout: 400 * time.Millisecond, rtt: 100 * time.Millisecond, want: hedgeFloor},
		{timeout: 200 * time.Millisecond, rtt: 0, want: 100 * time.Millisecond},
		{timeout: 200 * time.Millisecond, rtt: time.Second, want: 100 * time.Millisecond},
	} {
		f := NewForwarder([]string{"127.0.0.1:9"}, tc.timeout, false)
		f.Close()
		u := f.upstreams[0]
		u.rtt.Store(int64(tc.rtt))
		assert.Equal(t, tc.want, f.hedgeDelay(u), "timeout %v, rtt %v", tc.timeout, tc.rtt)
	}
}

// TestSocketRenewed: an upstream's shared UDP socket takes
// socketMaxQueries queries, and the next one goes out from a new socket
// (RFC 5452 §9.2: a new source port, but for the kernel picking the same
// one again), as does the first once the socket is socketMaxAge old.
func TestSocketRenewed(t *testing.T) {
	var mu sync.Mutex
	var ports []int
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		mu.Lock()
		ports = append(ports, w.RemoteAddr().(*net.UDPAddr).Port)
		mu.Unlock()
		return defaultAnswer(w, r)
	})
	p := NewPlain(up.addr, Options{Timeout: 5 * time.Second})
	t.Cleanup(func() { _ = p.Close() })
	// ask sends one query and returns the socket it went out on.
	ask := func() *upstreamSocket {
		t.Helper()
		_, err := p.Exchange(context.Background(), question("renew.example.org.", dns.TypeA, false))
		require.NoError(t, err)
		p.mux.mu.Lock()
		defer p.mux.mu.Unlock()
		return p.mux.cur
	}
	first := ask()
	for i := range socketMaxQueries - 1 {
		require.True(t, first == ask(), "query %d on the first socket", i+2)
	}
	assert.True(t, first != ask(), "the next query on a new socket")
	mu.Lock()
	require.Len(t, ports, socketMaxQueries+1)
	for i, port := range ports[:socketMaxQueries] {
		require.Equal(t, ports[0], port, "query %d from the first socket's port", i+1)
	}
	mu.Unlock()

	s := ask()
	s.mu.Lock()
	s.born = s.born.Add(-socketMaxAge)
	s.mu.Unlock()
	assert.True(t, s != ask(), "the socket's age is up: a new one")
}

// TestStartExploresOnce: the first query starts the Forwarder (start):
// each upstream not yet measured gets one probe (explore), whatever the
// queries after it, and one that does not answer it is down before any
// query is sent to it.
func TestStartExploresOnce(t *testing.T) {
	var mu sync.Mutex
	ids := map[uint16]bool{}
	silent := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			mu.Lock()
			ids[r.Id] = true
			mu.Unlock()
		}
		return nil
	})
	good := startUpstream(t, nil)
	f := NewForwarder([]string{good.addr, silent.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	for range 5 {
		_, from, err := f.Forward(context.Background(), clientQuery("start.example.", false), false)
		require.NoError(t, err)
		require.Equal(t, good.addr, from)
	}
	time.Sleep(100 * time.Millisecond) // well within the explore's 1 s wait
	mu.Lock()
	explored := len(ids)
	mu.Unlock()
	assert.Equal(t, 1, explored, "probes of the unmeasured upstream")
	require.Eventually(t, func() bool { return f.upstreams[1].down.Load() }, 10*time.Second, 5*time.Millisecond,
		"down by its explore, never asked a query")
}

// TestInheritedDownProbed: an upstream down in the Forwarder a reload
// replaced is down in the new one, and probed once it starts (inherit,
// start): it comes back up without a query going to it.
func TestInheritedDownProbed(t *testing.T) {
	a, b := startUpstream(t, nil), startUpstream(t, nil)
	prev := NewForwarder([]string{a.addr, b.addr}, time.Second, false)
	prev.Close() // no probes of its own
	prev.upstreams[1].down.Store(true)
	f, err := Rebuild(prev, []string{a.addr, b.addr}, Options{Timeout: 2 * time.Second})
	require.NoError(t, err)
	require.NotSame(t, prev, f, "another timeout: a new Forwarder")
	t.Cleanup(f.Close)
	f.probeEvery = 20 * time.Millisecond
	require.Equal(t, []string{b.addr}, f.Down(), "inherited")
	_, from, err := f.Forward(context.Background(), clientQuery("inherited.example.", false), false)
	require.NoError(t, err)
	require.Equal(t, a.addr, from)
	require.Eventually(t, func() bool { return len(f.Down()) == 0 }, 10*time.Second, 5*time.Millisecond, "back up at a probe")
}
