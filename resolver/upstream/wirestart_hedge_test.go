package upstream

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHedgingStopsOnceAnswered: with three upstreams, a query whose first
// try answers after the hedge to the second was sent (and before the
// second answers) is done: nothing more is sent, for ForwardWire and for a
// started query alike (whose hedges went on to the third upstream before
// settle stopped them).
func TestHedgingStopsOnceAnswered(t *testing.T) {
	for _, started := range []bool{false, true} {
		name := "ForwardWire"
		if started {
			name = "StartWire"
		}
		t.Run(name, func(t *testing.T) {
			bAddr, bAsked := askedSilentUpstream(t)
			a := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name != "." {
					<-bAsked // answers only once the hedge to b is out
				}
				return defaultAnswer(w, r)
			})
			var third atomic.Int64
			c := startUpstream(t, countingAnswer(&third))
			f := NewForwarder([]string{a.addr, bAddr, c.addr}, 2*time.Second, false)
			defer f.Close()
			q := wireQuestion("hedge-after.example.org.", dns.TypeA)
			var r wireResult
			if started {
				then := make(thenChan, 2)
				f.StartWire(q, then, nil)
				r = then.wait(t)
			} else {
				var err error
				r.a, r.from, err = f.ForwardWire(context.Background(), q)
				r.err = err
			}
			require.NoError(t, r.err)
			assert.Equal(t, a.addr, r.from)
			time.Sleep(4 * hedgeFloor)
			assert.Zero(t, third.Load(), "the query was answered by the first upstream: the third must not be asked")
		})
	}
}

// TestStartWireHedgeRunsOn: a started query answered by its first try
// after the hedge to a silent upstream went out leaves that hedge running
// to its own timeout, as a hedge of Forward does (README: the slower try
// counts for its upstream by what happened to it): it is counted as the
// timeout it is, never as a network error that the upstream did not have
// (the hedge ended by dnsfence itself when the query had its answer).
func TestStartWireHedgeRunsOn(t *testing.T) {
	silent, asked := askedSilentUpstream(t)
	a := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "." {
			<-asked // answers only once the hedge to the silent upstream is out
		}
		return defaultAnswer(w, r)
	})
	reg := prometheus.NewRegistry()
	f, err := New([]string{a.addr, silent}, Options{Timeout: 500 * time.Millisecond, Metrics: NewMetrics(reg)})
	require.NoError(t, err)
	defer f.Close()
	then := make(thenChan, 2)
	f.StartWire(wireQuestion("runs-on.example.org.", dns.TypeA), then, nil)
	r := then.wait(t)
	require.NoError(t, r.err)
	assert.Equal(t, a.addr, r.from)
	assert.Equal(t, map[string]float64{retryHedge: 1}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", silent, "reason"))
	errs := func() map[string]float64 {
		return upstreamCounts(t, reg, "dnsfence_upstream_errors_total", silent, "kind")
	}
	require.Eventually(t, func() bool { return len(errs()) > 0 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, map[string]float64{kindTimeout: 1}, errs(), "the hedge ran to its own timeout")
}

// TestStartWireHedgeTimerSetBeforeItFires: a started query's hedge timer
// may fire before newHedgedWire has stored it (a hedge delay of a
// millisecond or two: half an upstream_timeout that short; or a
// goroutine descheduled between the two), and the hedge's settle then
// read h.timer unordered with that store: a data race (-race saw it under
// load), and a nil timer's Stop had it ever come first. 200 queries with a
// 1 ms hedge delay, the first upstream silent: run under -race, as CI
// runs it, the store and the read must be ordered. Each query ends, by
// an answer or a failure.
func TestStartWireHedgeTimerSetBeforeItFires(t *testing.T) {
	silent := silentUpstream(t)
	b := startUpstream(t, nil)
	f := NewForwarder([]string{silent, b.addr}, 2*time.Millisecond, false)
	defer f.Close()
	q := wireQuestion("hedge-timer.example.org.", dns.TypeA)
	for range 200 {
		then := make(thenChan, 2)
		f.StartWire(q, then, nil)
		select {
		case <-then:
		case <-time.After(5 * time.Second):
			t.Fatal("WireDone was never called")
		}
	}
}
