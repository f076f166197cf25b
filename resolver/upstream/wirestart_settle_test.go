package upstream

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// letGo waits until f holds no reference and counts no query in flight:
// every try, hedge and failover of the queries it was asked has ended.
// Neither count may go below zero: each was taken once and given back
// once (a reference held for good keeps a retired Forwarder's sockets
// open; one given back twice closes them under the queries of another).
func letGo(t *testing.T, f *Forwarder) {
	t.Helper()
	var refs, inflight int64
	settled := func() bool {
		refs, inflight = f.refs.Load(), f.inflight.Load()
		return refs <= 0 && inflight <= 0
	}
	if !assert.Eventually(t, settled, 10*time.Second, 5*time.Millisecond) {
		t.Fatalf("never let go: %d references held, %d queries in flight", refs, inflight)
	}
	assert.Zero(t, refs, "references given back")
	assert.Zero(t, inflight, "queries in flight")
}

// gatedUpstream is an upstream on ip that answers the health check at
// once and any other question with the default answer once release is
// closed (10 s at most); asked is closed at the first such question.
func gatedUpstream(t *testing.T, ip string) (u *testUpstream, asked <-chan struct{}, release chan<- struct{}) {
	t.Helper()
	a, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	u = startUpstreamOn(t, ip, func(w dns.ResponseWriter, q *dns.Msg) *dns.Msg {
		if q.Question[0].Name != "." {
			once.Do(func() { close(a) })
			select {
			case <-r:
			case <-time.After(10 * time.Second): // the test fails on its own
			}
		}
		return defaultAnswer(w, q)
	})
	return u, a, r
}

// within waits for ch to close, failing the test after 5 s.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal(what)
	}
}

// askWire asks f the wire query q, by StartWire (started) or ForwardWire,
// and returns the result, and then, which StartWire gave it (nil for
// ForwardWire).
func askWire(t *testing.T, f *Forwarder, q []byte, started bool) (wireResult, thenChan) {
	t.Helper()
	if !started {
		var r wireResult
		r.a, r.from, r.err = f.ForwardWire(context.Background(), q)
		return r, nil
	}
	then := make(thenChan, 2)
	f.StartWire(q, then, nil)
	return then.wait(t), then
}

// TestWireQueryLetsGo: a wire query, started or forwarded, whatever way
// it ends (answered, failed, failed over, hedged, every try failed; one
// upstream or two), gives back every reference on its Forwarder and its
// count of queries in flight, once, when it has its one result and its
// tries have ended.
func TestWireQueryLetsGo(t *testing.T) {
	const ip = "127.0.185.1"
	answers := func(t *testing.T) string { return startUpstreamOn(t, ip, nil).addr }
	refuses := func(t *testing.T) string {
		return startUpstreamOn(t, ip, rcodeAnswer(dns.RcodeRefused)).addr
	}
	servfails := func(t *testing.T) string {
		return startUpstreamOn(t, ip, rcodeAnswer(dns.RcodeServerFailure)).addr
	}
	silent := func(t *testing.T) string {
		return startUpstreamOn(t, ip, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if r.Question[0].Name == "." {
				return defaultAnswer(w, r) // up, for the probes
			}
			return nil
		}).addr
	}
	for _, tc := range []struct {
		name      string
		upstreams []func(t *testing.T) string
		from      int // the upstream that answers; -1: every try fails
		// slowHedge gives the first upstream a hedge delay of 2 s: its
		// failure comes while it is asked alone.
		slowHedge bool
	}{
		{name: "one upstream, answered", upstreams: []func(*testing.T) string{answers}, from: 0},
		{name: "one upstream, failed", upstreams: []func(*testing.T) string{refuses}, from: -1},
		{name: "first answers", upstreams: []func(*testing.T) string{answers, answers}, from: 0, slowHedge: true},
		{name: "first fails, failed over", upstreams: []func(*testing.T) string{refuses, answers}, from: 1, slowHedge: true},
		{name: "first silent, hedged", upstreams: []func(*testing.T) string{silent, answers}, from: 1},
		{name: "every try fails", upstreams: []func(*testing.T) string{refuses, servfails}, from: -1, slowHedge: true},
	} {
		for _, started := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, started %v", tc.name, started), func(t *testing.T) {
				var addrs []string
				for _, up := range tc.upstreams {
					addrs = append(addrs, up(t))
				}
				timeout := 800 * time.Millisecond // the silent upstream's try ends soon after its hedge
				if tc.slowHedge {
					timeout = 8 * time.Second
				}
				f := NewForwarder(addrs, timeout, false)
				defer f.Close()
				if tc.slowHedge {
					f.upstreams[0].rtt.Store(int64(time.Second)) // measured, so not explored either
					require.Equal(t, 2*time.Second, f.hedgeDelay(f.upstreams[0]))
				}
				r, then := askWire(t, f, wireQuestion("let-go.example.org.", dns.TypeA), started)
				if tc.from < 0 {
					var ue *UpstreamError
					require.ErrorAs(t, r.err, &ue)
					assert.Equal(t, addrs, ue.upstreams, "every upstream's failure, the first try's first")
					assert.Empty(t, r.from)
				} else {
					require.NoError(t, r.err)
					assert.Equal(t, addrs[tc.from], r.from)
				}
				letGo(t, f)
				assert.Empty(t, then, "WireDone was called again")
			})
		}
	}
}

// TestStartWireBothTriesAnswer: a started query whose first try and hedge
// both answer, in either order, ends once, with the answer that came
// first: the later one, settled after the query was done, is dropped.
func TestStartWireBothTriesAnswer(t *testing.T) {
	for _, hedgeFirst := range []bool{false, true} {
		name := "first try first"
		if hedgeFirst {
			name = "hedge first"
		}
		t.Run(name, func(t *testing.T) {
			a, aAsked, aRelease := gatedUpstream(t, "127.0.185.2")
			b, bAsked, bRelease := gatedUpstream(t, "127.0.185.2")
			f := NewForwarder([]string{a.addr, b.addr}, 4*time.Second, false)
			defer f.Close()
			f.started.Store(true) // no probes: the hedge delay is hedgeFloor
			then := make(thenChan, 2)
			f.StartWire(wireQuestion("both.example.org.", dns.TypeA), then, nil)
			within(t, aAsked, "the first upstream was never asked")
			within(t, bAsked, "the hedge never went out")
			winner, sooner, later := a.addr, aRelease, bRelease
			if hedgeFirst {
				winner, sooner, later = b.addr, bRelease, aRelease
			}
			close(sooner)
			r := then.wait(t)
			require.NoError(t, r.err)
			assert.Equal(t, winner, r.from)
			close(later)
			letGo(t, f)
			assert.Empty(t, then, "WireDone was called again, with the later answer")
		})
	}
}

// TestStartWireHedgesAfterTheFirstsDelay: a started query's first try is
// hedged after its own upstream's hedge delay (twice its round-trip time),
// not another upstream's: a first upstream measured at 1 s is given 2 s,
// though the next one, not measured, would be hedged after 150 ms.
func TestStartWireHedgesAfterTheFirstsDelay(t *testing.T) {
	a, aAsked, aRelease := gatedUpstream(t, "127.0.185.3")
	bAsked := make(chan struct{})
	var once sync.Once
	b := startUpstreamOn(t, "127.0.185.3", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "." {
			once.Do(func() { close(bAsked) })
		}
		return defaultAnswer(w, r)
	})
	f := NewForwarder([]string{a.addr, b.addr}, 8*time.Second, false)
	defer f.Close()
	f.started.Store(true) // no probes: the second upstream stays unmeasured
	f.upstreams[0].rtt.Store(int64(time.Second))
	require.Equal(t, 2*time.Second, f.hedgeDelay(f.upstreams[0]))
	require.Equal(t, hedgeFloor, f.hedgeDelay(f.upstreams[1]))
	then := make(thenChan, 2)
	start := time.Now()
	f.StartWire(wireQuestion("delay.example.org.", dns.TypeA), then, nil)
	within(t, aAsked, "the first upstream was never asked")
	select {
	case <-bAsked:
		t.Fatal("hedged within 1 s: not after the first upstream's hedge delay of 2 s")
	case <-time.After(time.Until(start.Add(time.Second))):
	}
	close(aRelease)
	r := then.wait(t)
	require.NoError(t, r.err)
	assert.Equal(t, a.addr, r.from)
}

// TestWireQueryJudgesTheFirstTrysFailure: a wire query, started or
// forwarded, whose first try is answered SERVFAIL (no Extended DNS Error
// of validation) and whose failover is answered has that SERVFAIL judged
// a failure of the first upstream (queryFailures), as Forward's is
// (TestFailedValidationNotAFailureWhenAnotherAnswers): down.
func TestWireQueryJudgesTheFirstTrysFailure(t *testing.T) {
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started %v", started), func(t *testing.T) {
			a := startUpstreamOn(t, "127.0.185.4", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name == "." {
					return defaultAnswer(w, r) // the health check
				}
				return rcodeAnswer(dns.RcodeServerFailure)(w, r)
			})
			b := startUpstreamOn(t, "127.0.185.4", nil)
			f := NewForwarder([]string{a.addr, b.addr}, 8*time.Second, false)
			defer f.Close()
			f.started.Store(true)                        // no probes: the first upstream is asked first
			f.upstreams[0].rtt.Store(int64(time.Second)) // no hedge: the SERVFAIL comes while it is asked alone
			r, _ := askWire(t, f, wireQuestion("servfail-first.example.org.", dns.TypeA), started)
			require.NoError(t, r.err)
			require.Equal(t, b.addr, r.from)
			require.Eventually(t, func() bool { return len(f.Down()) == 1 }, 5*time.Second, 5*time.Millisecond,
				"a SERVFAIL another upstream answered is a failure")
			assert.Equal(t, []string{a.addr}, f.Down())
		})
	}
}

// TestWireQueryStartsProbes: a Forwarder's first query, a wire one too,
// started or forwarded, starts its probes (start): an upstream not
// measured yet is explored, though no query went to it.
func TestWireQueryStartsProbes(t *testing.T) {
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started %v", started), func(t *testing.T) {
			a := startUpstreamOn(t, "127.0.185.5", nil)
			var probes atomic.Int64
			b := startUpstreamOn(t, "127.0.185.5", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name == "." {
					probes.Add(1)
				}
				return defaultAnswer(w, r)
			})
			f := NewForwarder([]string{a.addr, b.addr}, 8*time.Second, false)
			defer f.Close()
			f.upstreams[0].rtt.Store(int64(time.Second)) // measured: asked first, and no hedge
			r, _ := askWire(t, f, wireQuestion("probes.example.org.", dns.TypeA), started)
			require.NoError(t, r.err)
			require.Equal(t, a.addr, r.from)
			require.Eventually(t, func() bool { return probes.Load() > 0 }, 5*time.Second, 5*time.Millisecond,
				"the second upstream explored")
		})
	}
}

// TestStartWireUnreadHedgeNamesItsUpstream: a started query ended by its
// hedge's whole answer with a record miekg/dns does not read, while the
// first try is still in flight, fails with that answer and names only
// the upstream that gave it: the first try, which has not failed, has no
// error to list (hedgedWire.failure).
func TestStartWireUnreadHedgeNamesItsUpstream(t *testing.T) {
	silent := startUpstreamOn(t, "127.0.185.13", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			return defaultAnswer(w, r) // up, for the probes
		}
		return nil
	}).addr
	second := startUpstreamOn(t, "127.0.185.13", truncatedThenUnread(t))
	f := NewForwarder([]string{silent, second.addr}, time.Minute, false)
	defer f.Close()
	then := make(thenChan, 2)
	f.StartWire(wireQuestion("c.svcb.example.", dns.TypeHTTPS), then, nil)
	r := then.wait(t) // within 5 s: not after the first try's minute
	var ue *UpstreamError
	require.ErrorAs(t, r.err, &ue)
	assert.Equal(t, second.addr, ue.UnreadFrom)
	assert.Equal(t, []string{second.addr}, ue.upstreams, "the first try, still in flight, did not fail")
}
