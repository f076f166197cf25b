package resolver

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// udpUpstream is a loopback UDP upstream (no TCP side) for the health
// tests: it answers each query with defaultAnswer, packed by miekg/dns,
// unless told to drop it (every dropEvery-th client query, or all of them
// when silent) or to hold its answer for stall. Probes (the root NS query)
// are answered like any query unless silent, and are counted apart.
type udpUpstream struct {
	addr      string
	dropEvery int64         // 0: drop none
	silent    bool          // bound, but never answers
	stall     time.Duration // answers come this much later

	queries     atomic.Int64 // client queries received (probes excluded)
	probes      atomic.Int64
	dropped     atomic.Int64
	outstanding atomic.Int64 // client queries received and not yet answered
	peak        atomic.Int64 // the most outstanding at once
}

// start serves u on 127.0.0.1 until the test ends.
func (u *udpUpstream) start(t *testing.T) *udpUpstream {
	t.Helper()
	pc := testnet.ServeQuestions(t, func(pc net.PacketConn, q *dns.Msg, from net.Addr) {
		if q.Question[0].Name == "." {
			u.probes.Add(1)
			if !u.silent {
				_, _ = pc.WriteTo(packed(defaultAnswer(nil, q)), from)
			}
			return
		}
		nth := u.queries.Add(1)
		if u.silent || (u.dropEvery > 0 && nth%u.dropEvery == 0) {
			u.dropped.Add(1)
			return
		}
		b := packed(defaultAnswer(nil, q))
		if u.stall == 0 {
			_, _ = pc.WriteTo(b, from)
			return
		}
		if now := u.outstanding.Add(1); now > u.peak.Load() {
			u.peak.Store(now) // only the serving goroutine raises it
		}
		time.AfterFunc(u.stall, func() {
			u.outstanding.Add(-1)
			_, _ = pc.WriteTo(b, from)
		})
	})
	u.addr = pc.LocalAddr().String()
	return u
}

// quietConfig is govConfig with extra lines and no query log lines: the
// load tests send hundreds of queries.
func quietConfig(extra string) string {
	return strings.Replace(fmt.Sprintf(govConfig, extra), "log: {queries: all}", "log: {queries: none}", 1)
}

// quietFence serves quietConfig(extra) with upstreams.
func quietFence(t *testing.T, extra string, upstreams ...string) *fence {
	t.Helper()
	return startFence(t, quietConfig(extra), govFiles, upstreams...)
}

// loadResult is what a bounded load saw.
type loadResult struct {
	total, slow, servfail, failed int // failed: no answer at all
}

// runLoad sends n queries for distinct names (prefix0.example.org. …) to
// addr over network at about qps a second, each from its own client, and
// waits for every answer; slow counts those that took longer than slow.
// It stops by itself: n queries, each with a 5 s client timeout.
func runLoad(t *testing.T, addr, network, prefix string, n, qps int, slow time.Duration) loadResult {
	t.Helper()
	var (
		mu  sync.Mutex
		res = loadResult{total: n}
		wg  sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / time.Duration(qps))
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r, err := exchange(addr, "", network, question(fmt.Sprintf("%s%d.example.org.", prefix, i), dns.TypeA, true))
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				res.failed++
			case r.Rcode == dns.RcodeServerFailure:
				res.servfail++
			}
			if took > slow {
				res.slow++
			}
		}()
	}
	wg.Wait()
	return res
}

// TestLossDoesNotCascade (#17 item 1): with a dead first upstream and a
// healthy second one that loses one datagram in 150, a loss costs at most
// its own query: the second upstream is not marked down by one loss, so
// queries do not fall back to waiting on the dead one. Before, each loss
// marked it down, every query then waited out the dead one's timeout until
// the next probe, and about a quarter of the queries took over a second.
func TestLossDoesNotCascade(t *testing.T) {
	const n, timeout = 600, 2 * time.Second
	for _, strategy := range []string{config.StrategyOrdered, config.StrategyFastest} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			dead := (&udpUpstream{silent: true}).start(t)
			lossy := (&udpUpstream{dropEvery: 150}).start(t)
			f := quietFence(t, fmt.Sprintf("upstream_timeout: %s\nupstream_strategy: %s", timeout, strategy), dead.addr, lossy.addr)
			res := runLoad(t, f.addr, "udp", "l", n, 200, timeout/2)
			t.Logf("%+v; lossy upstream: %d queries, %d dropped; dead: %d", res, lossy.queries.Load(), lossy.dropped.Load(), dead.queries.Load())
			require.GreaterOrEqual(t, lossy.dropped.Load(), int64(3), "the upstream lost datagrams")
			// A lost datagram may cost its own query (no live upstream to
			// hedge to once the dead one is down): 4 of 600 here. Before,
			// about 150 per loss.
			assert.Less(t, res.slow, n/50, "queries slower than upstream_timeout/2")
			assert.Less(t, res.servfail+res.failed, n/50, "SERVFAIL or no answer")
			assert.Equal(t, []string{dead.addr}, f.handler.Snapshot().Forwarder().Down(), "the lossy upstream is up")
			// Its exploring probe gives up after a second: until then (200
			// queries) it may be asked first. Before, the first 2 s went
			// to it, and every loss on the other sent queries back to it.
			assert.Less(t, dead.queries.Load(), int64(n/2), "the dead upstream is skipped once known dead")
		})
	}
}

// TestHedgedTry: an upstream that answers every query, but only after
// 2 s of a 5 s timeout, is joined by a try to the next upstream well
// before (at most a quarter of the timeout), over UDP and over TCP; its
// late answers are not failures: it is not marked down and no error is
// counted for it, and they count as answers (their round-trip time). The
// stall leaves 3 s to the timeout: at 1.2 s of 2 s, a CI run under load
// saw 7 of 24 late answers come after the timeout, counted as timeouts.
func TestHedgedTry(t *testing.T) {
	const n, timeout, stall = 24, 5 * time.Second, 2 * time.Second
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			slow := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name != "." {
					<-time.After(stall) // the fake upstream's own pace
				}
				return defaultAnswer(w, r)
			})
			good := startUpstream(t, nil)
			f := quietFence(t, fmt.Sprintf("upstream_timeout: %s\nupstream_strategy: ordered", timeout), slow.addr, good.addr)
			res := runLoad(t, f.addr, network, "h", n, 20, stall)
			t.Logf("%+v", res)
			assert.Zero(t, res.servfail+res.failed)
			assert.Less(t, res.slow, n/4, "queries slower than the stall (the hedge goes at most at timeout/4); before, every one")
			assert.Equal(t, n, clientQueries(slow), "each query asked the slow upstream first")
			assert.GreaterOrEqual(t, clientQueries(good), n*3/4, "and the next one after the hedge delay")
			require.Eventually(t, func() bool {
				return metricSum(t, f, "dnsfence_upstream_request_duration_seconds_count", "upstream", slow.addr) >= n/2
			}, 5*time.Second, 20*time.Millisecond, "the slow upstream's late answers count as answers")
			assert.Empty(t, upstreamErrors(t, f.registry, slow.addr), "losing the race is no failure")
			assert.Empty(t, f.handler.Snapshot().Forwarder().Down())
			assert.GreaterOrEqual(t, metricSum(t, f, "dnsfence_upstream_retries_total", "upstream", good.addr, "reason", "hedge"), n*3/4)
		})
	}
}

// metricSum sums the samples of the metric name (a histogram's count with
// the _count suffix) whose labels have the given name=value pairs.
func metricSum(t *testing.T, f *fence, name string, labels ...string) int {
	t.Helper()
	mfs, err := f.registry.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != strings.TrimSuffix(name, "_count") {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return int(sum)
}

// TestRetryHerdIsBounded: 300 queries in a burst wait on a dead first
// upstream; the tries they send to the second (hedges, and failovers once
// the first times out) are bounded: at most a fifth of the queries in
// flight (at least 16) are in flight to it at once. Before, all the
// queries timed out on the first together and landed on the second at
// once.
func TestRetryHerdIsBounded(t *testing.T) {
	const n = 300
	dead := (&udpUpstream{silent: true}).start(t)
	held := (&udpUpstream{stall: 400 * time.Millisecond}).start(t)
	f := quietFence(t, "upstream_timeout: 1s\nupstream_strategy: ordered", dead.addr, held.addr)
	res := runLoad(t, f.addr, "udp", "herd", n, 2000, 5*time.Second)
	t.Logf("%+v; second upstream: %d queries, peak %d outstanding", res, held.queries.Load(), held.peak.Load())
	assert.Positive(t, held.queries.Load())
	assert.LessOrEqual(t, held.peak.Load(), int64(n/3), "retries in flight to the second upstream at once")
	assert.Positive(t, metricSum(t, f, "dnsfence_upstream_retries_total", "upstream", held.addr, "reason", "throttled"), "some retries waited for the budget")
}

// TestFastestExploresUnmeasured (#17 item 2): with upstream_strategy
// fastest, an upstream not measured yet is explored by a probe with a
// short timeout and tried after the measured ones, never by client
// queries at the full timeout; the same after a reload that adds it.
// Before, an unmeasured upstream sorted first: after the first answer, the
// next queries each waited 2 s on the dead one.
func TestFastestExploresUnmeasured(t *testing.T) {
	const n, timeout = 20, 2 * time.Second
	extra := fmt.Sprintf("upstream_timeout: %s\nupstream_strategy: fastest", timeout)
	sequential := func(t *testing.T, f *fence, prefix string) (slow int) {
		t.Helper()
		for i := 0; i < n; i++ {
			start := time.Now()
			r := ask(t, f.addr, "", "udp", question(fmt.Sprintf("%s%d.example.org.", prefix, i), dns.TypeA, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			if time.Since(start) > timeout/2 {
				slow++
			}
		}
		return slow
	}
	for _, deadFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("dead first=%v", deadFirst), func(t *testing.T) {
			dead := (&udpUpstream{silent: true}).start(t)
			good := (&udpUpstream{}).start(t)
			ups := []string{good.addr, dead.addr}
			if deadFirst {
				ups = []string{dead.addr, good.addr}
			}
			f := quietFence(t, extra, ups...)
			assert.Zero(t, sequential(t, f, "s"), "queries slower than upstream_timeout/2")
			assert.LessOrEqual(t, dead.queries.Load(), int64(2), "client queries sent to the unmeasured dead upstream")
			require.Eventually(t, func() bool { return dead.probes.Load() >= 1 }, 5*time.Second, 10*time.Millisecond, "explored by a probe")
		})
	}

	t.Run("after a reload that adds an upstream", func(t *testing.T) {
		dead := (&udpUpstream{silent: true}).start(t)
		good := (&udpUpstream{}).start(t)
		f := quietFence(t, extra, good.addr)
		assert.Zero(t, sequential(t, f, "before"))
		path := f.handler.Snapshot().Config.File
		cfg := quietConfig(extra)
		cfg = strings.ReplaceAll(cfg, "{{upstreams}}", fmt.Sprintf("[%q, %q]", good.addr, dead.addr))
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
		require.NoError(t, r.Reload(false))
		require.Equal(t, []string{good.addr, dead.addr}, f.handler.Snapshot().Forwarder().Upstreams())
		assert.Zero(t, sequential(t, f, "after"), "queries slower than upstream_timeout/2")
		assert.LessOrEqual(t, dead.queries.Load(), int64(1), "client queries sent to the unmeasured dead upstream")
		require.Eventually(t, func() bool { return dead.probes.Load() >= 1 }, 5*time.Second, 10*time.Millisecond, "explored by a probe")
	})

	t.Run("a reload keeps what was learnt of the upstreams it keeps", func(t *testing.T) {
		dead := (&udpUpstream{silent: true}).start(t)
		good := (&udpUpstream{}).start(t)
		added := (&udpUpstream{}).start(t)
		f := quietFence(t, extra, dead.addr, good.addr)
		sequential(t, f, "before")
		before := f.handler.Snapshot().Forwarder()
		require.Eventually(t, func() bool { return slices.Contains(before.Down(), dead.addr) }, 5*time.Second, 10*time.Millisecond)
		path := f.handler.Snapshot().Config.File
		cfg := strings.ReplaceAll(quietConfig(extra), "{{upstreams}}", fmt.Sprintf("[%q, %q, %q]", dead.addr, good.addr, added.addr))
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
		r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
		require.NoError(t, r.Reload(false))
		after := f.handler.Snapshot().Forwarder()
		require.NotSame(t, before, after, "a new forwarder for the new upstream list")
		assert.Contains(t, after.Down(), dead.addr, "still down after the reload, before any query")
		queried := dead.queries.Load()
		assert.Zero(t, sequential(t, f, "after"), "queries slower than upstream_timeout/2")
		assert.Equal(t, queried, dead.queries.Load(), "no client query goes to the upstream known dead")
	})
}

// TestUpstreamWarnThrottled: failing upstreams under load write one
// "upstreams failed" line per upstream per interval, not one per query;
// the next line says how many were suppressed, so that lines written plus
// lines suppressed are every failure.
func TestUpstreamWarnThrottled(t *testing.T) {
	const n = 300
	core, logs := observer.New(zap.WarnLevel)
	a, b := closedPort(t), closedPort(t)
	f := startFenceLog(t, zap.New(core), quietConfig("upstream_timeout: 1s"), govFiles, a, b)
	res := runLoad(t, f.addr, "udp", "w", n, 500, 5*time.Second)
	require.Equal(t, n, res.servfail, "every query failed")
	first := logs.FilterMessage("upstreams failed").Len()
	assert.Positive(t, first)
	assert.LessOrEqual(t, first, 2, "at most one line for each of the two upstreams in the interval; before, one a query")

	// After the interval, the next failure writes a line with the count of
	// those suppressed.
	f.handler.upstreamWarn.setEvery(time.Millisecond)
	failures := n
	require.Eventually(t, func() bool {
		r, err := exchange(f.addr, "", "udp", question(fmt.Sprintf("last%d.example.org.", failures), dns.TypeA, true))
		if err == nil && r.Rcode == dns.RcodeServerFailure {
			failures++
		}
		return logs.FilterMessage("upstreams failed").Len() > first
	}, 5*time.Second, 10*time.Millisecond)
	lines := logs.FilterMessage("upstreams failed").All()
	written, suppressed := len(lines), int64(0)
	for _, l := range lines {
		if s, ok := l.ContextMap()[logSuppressed]; ok {
			suppressed += s.(int64)
		}
	}
	assert.Positive(t, suppressed)
	assert.Equal(t, failures, written+int(suppressed), "every failed query is either a line or counted in one")
	last := lines[len(lines)-1].ContextMap()
	assert.Contains(t, last, logUpstream)
	assert.Contains(t, last[logUpstream], a, "the line names the upstreams")
}

// TestLostDatagramSentAgain: with one upstream, a query whose datagram
// the upstream lost is sent to it again after the resend delay (150 ms
// here) and answered, where before it waited out upstream_timeout and got
// SERVFAIL; the resend is counted, reason resend.
func TestLostDatagramSentAgain(t *testing.T) {
	var mu sync.Mutex
	seen := map[dns.Question]int{}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		mu.Lock()
		seen[r.Question[0]]++
		first := seen[r.Question[0]] == 1
		mu.Unlock()
		if first {
			return nil // lost
		}
		return defaultAnswer(w, r)
	})
	f := startFence(t, strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 2s", 1), testFiles, up.addr)
	r := ask(t, f.addr, "127.0.0.3", "udp", question("lost.example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, int64(2), up.datagrams.Load(), "sent twice")
	assert.Equal(t, 1, up.distinct(), "as one query: the same ID")
	assert.Equal(t, int64(1), up.count.Load(), "count counts it once, as distinct does")
	assert.Equal(t, 1, metricSum(t, f, "dnsfence_upstream_retries_total", "upstream", up.addr, "reason", "resend"))
}

// TestUpstreamDownAndBackUpLogged: the forwarder ConnectUpstreams makes
// logs to the logger it is given (serve's "upstream" child) an upstream
// it marks down (here the only one, failing every query with SERVFAIL),
// and the probe that finds it back up once it answers again.
func TestUpstreamDownAndBackUpLogged(t *testing.T) {
	needLoopback(t, "127.0.158.2")
	var failing atomic.Bool
	failing.Store(true)
	up := startUpstreamAt(t, "127.0.158.2", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if failing.Load() {
			return rcodeAnswer(dns.RcodeServerFailure)(w, r)
		}
		return defaultAnswer(w, r)
	})
	cfg, err := config.Load(writeConfig(t, quietConfig("upstream_timeout: 1s"), govFiles, up.addr))
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	core, logs := observer.New(zap.InfoLevel)
	require.NoError(t, ConnectUpstreams(zap.New(core), snap, nil, nil))
	fwd := snap.Forwarder()
	t.Cleanup(fwd.Close)

	var n atomic.Int64
	require.Eventually(t, func() bool {
		_, _, _ = fwd.Forward(context.Background(), question(fmt.Sprintf("d%d.example.org.", n.Add(1)), dns.TypeA, true), false)
		return logs.FilterMessageSnippet("upstream down").Len() > 0
	}, 10*time.Second, 20*time.Millisecond, "marked down, and the line written")
	assert.Equal(t, []string{up.addr}, fwd.Down())
	down := logs.FilterMessageSnippet("upstream down").All()
	require.Len(t, down, 1)
	assert.Equal(t, up.addr, down[0].ContextMap()["upstream"])

	failing.Store(false)
	require.Eventually(t, func() bool { return logs.FilterMessage("upstream back up").Len() > 0 }, 10*time.Second, 20*time.Millisecond,
		"its probe, every second, finds it back up, and the line is written")
	assert.Empty(t, fwd.Down())
	back := logs.FilterMessage("upstream back up").All()
	require.Len(t, back, 1)
	assert.Equal(t, up.addr, back[0].ContextMap()["upstream"])
}
