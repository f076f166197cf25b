package upstream

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wireResult is what a WireThen was given.
type wireResult struct {
	a    WireAnswer
	from string
	err  error
}

// thenChan is a WireThen that passes its one result on.
type thenChan chan wireResult

func (c thenChan) WireDone(a WireAnswer, from string, err error, _ listen.Batcher) {
	a.Raw = bytes.Clone(a.Raw) // the reader's buffer: WireDone copies what it keeps
	c <- wireResult{a, from, err}
}

// wait is the result, or a failure when none came or a second one did.
func (c thenChan) wait(t *testing.T) wireResult {
	t.Helper()
	var r wireResult
	select {
	case r = <-c:
	case <-time.After(5 * time.Second):
		t.Fatal("WireDone was never called")
	}
	select {
	case <-c:
		t.Fatal("WireDone was called twice")
	case <-time.After(20 * time.Millisecond):
	}
	return r
}

// batchRecorder is a listen.Batcher that keeps the flushers asked for.
type batchRecorder struct {
	mu       sync.Mutex
	flushers []listen.Flusher
}

func (b *batchRecorder) AfterBatch(f listen.Flusher) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushers = append(b.flushers, f)
}

// wireQuestion is a query as the wire path sends it: upstreamQuery's.
func wireQuestion(name string, qtype uint16) []byte {
	q := upstreamQuery(question(name, qtype, true))
	q.Id = 0x1234
	return packed(q)
}

// TestStartWireAnswers: StartWire sends the query from the caller (after
// the batch, with one), and WireDone gets the answer on the socket's
// reader, with the query's own ID, as ForwardWire would return it.
func TestStartWireAnswers(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, time.Second, false)
	defer f.Close()
	require.True(t, f.StartsWire())

	t.Run("alone", func(t *testing.T) {
		then := make(thenChan, 2)
		q := wireQuestion("alone.example.org.", dns.TypeA)
		f.StartWire(q, then, nil)
		r := then.wait(t)
		require.NoError(t, r.err)
		assert.Equal(t, up.addr, r.from)
		require.NotNil(t, r.a.Raw)
		assert.Equal(t, uint16(0x1234), dnswire.ID(r.a.Raw))
		assert.Equal(t, uint16(0x1234), dnswire.ID(q), "the query has its own ID back")
		m := new(dns.Msg)
		require.NoError(t, m.Unpack(r.a.Raw))
		require.Len(t, m.Answer, 1)
		assert.Equal(t, "192.0.2.1", m.Answer[0].(*dns.A).A.String())
	})

	t.Run("in a batch", func(t *testing.T) {
		batch := new(batchRecorder)
		thens := make([]thenChan, 3)
		for i := range thens {
			thens[i] = make(thenChan, 2)
			f.StartWire(wireQuestion("batch.example.org.", dns.TypeA), thens[i], batch)
		}
		batch.mu.Lock()
		require.Len(t, batch.flushers, 1, "one flush for the batch's queries to one socket")
		fl := batch.flushers[0]
		batch.mu.Unlock()
		select {
		case r := <-thens[0]:
			t.Fatalf("answered before the batch was flushed: %+v", r)
		case <-time.After(50 * time.Millisecond):
		}
		fl.Flush()
		for _, then := range thens {
			r := then.wait(t)
			require.NoError(t, r.err)
			assert.NotNil(t, r.a.Raw)
		}
	})
}

// TestStartWireFailures: a try StartWire sent ends as ForwardWire's would:
// a timeout, a refused port, a truncated answer asked again over TCP, a
// SERVFAIL, and a retired Forwarder.
func TestStartWireFailures(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		f := NewForwarder([]string{silentUpstream(t)}, 200*time.Millisecond, false)
		defer f.Close()
		then := make(thenChan, 2)
		start := time.Now()
		f.StartWire(wireQuestion("silent.example.org.", dns.TypeA), then, nil)
		r := then.wait(t)
		var ue *UpstreamError
		require.ErrorAs(t, r.err, &ue)
		assert.True(t, ue.Timeout)
		assert.Empty(t, r.from)
		assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	})
	t.Run("refused", func(t *testing.T) {
		f := NewForwarder([]string{closedPort(t)}, time.Second, false)
		defer f.Close()
		// The kernel reports the port unreachable on a later call: ask
		// until it has.
		var r wireResult
		for range 3 {
			then := make(thenChan, 2)
			f.StartWire(wireQuestion("refused.example.org.", dns.TypeA), then, nil)
			if r = then.wait(t); r.err != nil && !isTimeout(r.err) {
				break
			}
		}
		var ue *UpstreamError
		require.ErrorAs(t, r.err, &ue)
		assert.ErrorContains(t, r.err, "refused")
	})
	t.Run("truncated: TCP", func(t *testing.T) {
		up := startUpstream(t, bigAnswer)
		f := NewForwarder([]string{up.addr}, time.Second, false)
		defer f.Close()
		then := make(thenChan, 2)
		f.StartWire(wireQuestion("big.example.org.", dns.TypeTXT), then, nil)
		r := then.wait(t)
		require.NoError(t, r.err)
		require.NotNil(t, r.a.Msg, "asked again over TCP, as a message")
		assert.Equal(t, uint16(0x1234), r.a.Msg.Id)
		assert.Equal(t, 5666, r.a.Msg.Len())
	})
	t.Run("servfail", func(t *testing.T) {
		up := startUpstream(t, rcodeAnswer(dns.RcodeServerFailure))
		f := NewForwarder([]string{up.addr}, time.Second, false)
		defer f.Close()
		then := make(thenChan, 2)
		f.StartWire(wireQuestion("fail.example.org.", dns.TypeA), then, nil)
		r := then.wait(t)
		var ue *UpstreamError
		require.ErrorAs(t, r.err, &ue)
		assert.True(t, ue.AllServfail())
	})
	t.Run("retired", func(t *testing.T) {
		up := startUpstream(t, nil)
		f := NewForwarder([]string{up.addr}, time.Second, false)
		f.Close()
		then := make(thenChan, 2)
		f.StartWire(wireQuestion("closed.example.org.", dns.TypeA), then, nil)
		r := then.wait(t)
		assert.ErrorIs(t, r.err, net.ErrClosed)

		next := NewForwarder([]string{up.addr}, time.Second, false)
		defer next.Close()
		g := NewForwarder([]string{up.addr}, time.Second, false)
		g.Retire(next)
		then = make(thenChan, 2)
		g.StartWire(wireQuestion("next.example.org.", dns.TypeA), then, nil)
		r = then.wait(t)
		require.NoError(t, r.err, "asked by the successor")
		assert.NotNil(t, r.a.Raw)
	})
}

// TestStartsWire: plain upstreams are started; an encrypted one takes no
// query in wire form.
func TestStartsWire(t *testing.T) {
	a, b := startUpstream(t, nil), startUpstream(t, nil)
	one := NewForwarder([]string{a.addr}, time.Second, false)
	defer one.Close()
	two := NewForwarder([]string{a.addr, b.addr}, time.Second, false)
	defer two.Close()
	dot := NewForwarder([]string{a.addr, "tls://127.0.0.1:853#dns.example.net"}, time.Second, false)
	defer dot.Close()
	assert.True(t, one.StartsWire())
	assert.True(t, two.StartsWire())
	assert.False(t, dot.StartsWire())
}

// batchedThen is a WireThen that asks the batch it is given for a flush.
type batchedThen struct {
	batched chan bool
	flushed chan struct{}
}

func (b *batchedThen) WireDone(_ WireAnswer, _ string, _ error, batch listen.Batcher) {
	b.batched <- batch != nil
	if batch != nil {
		batch.AfterBatch(b)
		batch.AfterBatch(b)
	}
}

func (b *batchedThen) Flush() { b.flushed <- struct{}{} }

// TestStartWireWithinReaderBatch: the reader calls WireDone with its
// batch, and flushes what WireDone asked for once, after the answers it
// read together are delivered.
func TestStartWireWithinReaderBatch(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, time.Second, false)
	defer f.Close()
	then := &batchedThen{batched: make(chan bool, 1), flushed: make(chan struct{}, 2)}
	f.StartWire(wireQuestion("within.example.org.", dns.TypeA), then, nil)
	select {
	case batched := <-then.batched:
		require.True(t, batched, "the reader's batch")
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	select {
	case <-then.flushed:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader never flushed its batch")
	}
	select {
	case <-then.flushed:
		t.Fatal("flushed twice")
	case <-time.After(50 * time.Millisecond):
	}
}

// countingAnswer is the default answer, counting the queries answered
// but the Forwarder's probes (of the root).
func countingAnswer(n *atomic.Int64) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "." {
			n.Add(1)
		}
		return defaultAnswer(w, r)
	}
}

// TestStartWireHedged: with more than one upstream, a started query's
// first try that is slow is hedged, one that fails is failed over at
// once, and one that answers in time is the only try; when every try
// fails, the error names each upstream.
func TestStartWireHedged(t *testing.T) {
	ask := func(t *testing.T, f *Forwarder, name string) (wireResult, time.Duration) {
		t.Helper()
		then := make(thenChan, 2)
		start := time.Now()
		f.StartWire(wireQuestion(name, dns.TypeA), then, nil)
		r := then.wait(t)
		return r, time.Since(start) - 20*time.Millisecond // wait's check for a second call
	}
	// slowToHedge gives f's first upstream a measured round-trip time of
	// 500 ms, and so a hedge delay of 1 s (f's timeout is 4 s or more),
	// which it returns: a try answered at once is answered within it
	// however busy the machine. With hedgeFloor's 150 ms, an answer at
	// once (even a REFUSED) came after the hedge in 3 runs of 20 under
	// -race beside other work: the try was hedged, and the hedge answered
	// first, or a failure was counted as a hedge's.
	slowToHedge := func(t *testing.T, f *Forwarder) time.Duration {
		t.Helper()
		f.upstreams[0].rtt.Store(int64(500 * time.Millisecond)) // measured, so not explored either
		delay := f.hedgeDelay(f.upstreams[0])
		require.Equal(t, time.Second, delay)
		return delay
	}
	t.Run("first answers", func(t *testing.T) {
		var first, second atomic.Int64
		a, b := startUpstream(t, countingAnswer(&first)), startUpstream(t, countingAnswer(&second))
		f := NewForwarder([]string{a.addr, b.addr}, 4*time.Second, false)
		defer f.Close()
		delay := slowToHedge(t, f)
		r, took := ask(t, f, "first.example.org.")
		require.NoError(t, r.err)
		assert.Equal(t, a.addr, r.from)
		time.Sleep(delay - took + 50*time.Millisecond) // past the hedge delay, when a hedge would have gone
		assert.Equal(t, int64(1), first.Load())
		if took < delay { // answered within the hedge delay (not so on a machine too slow)
			assert.Zero(t, second.Load(), "no hedge for a try answered in time")
		}
	})
	// counted is a Forwarder over upstreams whose metrics go to reg.
	counted := func(t *testing.T, reg *prometheus.Registry, timeout time.Duration, upstreams ...string) *Forwarder {
		t.Helper()
		f, err := New(upstreams, Options{Timeout: timeout, Metrics: NewMetrics(reg)})
		require.NoError(t, err)
		t.Cleanup(f.Close)
		return f
	}
	t.Run("slow first: hedged", func(t *testing.T) {
		b := startUpstream(t, nil)
		reg := prometheus.NewRegistry()
		// The first try's timeout, 4 s, is far beyond the hedge (150 ms,
		// hedgeFloor): with 2 s, and the answer wanted within 1 s, a run
		// under -race beside other work took 1.6 s.
		f := counted(t, reg, 4*time.Second, silentUpstream(t), b.addr)
		r, took := ask(t, f, "hedged.example.org.")
		require.NoError(t, r.err)
		assert.Equal(t, b.addr, r.from)
		require.NotNil(t, r.a.Raw)
		assert.Equal(t, uint16(0x1234), dnswire.ID(r.a.Raw), "the hedge's answer has the query's own ID too")
		assert.GreaterOrEqual(t, took, hedgeFloor)
		assert.Less(t, took, 2*time.Second, "well before the first try's timeout")
		assert.Equal(t, map[string]float64{retryHedge: 1}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", b.addr, "reason"))
	})
	t.Run("failing first: failed over at once", func(t *testing.T) {
		b := startUpstream(t, nil)
		first := startUpstream(t, rcodeAnswer(dns.RcodeRefused))
		reg := prometheus.NewRegistry()
		f := counted(t, reg, 4*time.Second, first.addr, b.addr)
		delay := slowToHedge(t, f)
		r, took := ask(t, f, "failover.example.org.")
		require.NoError(t, r.err)
		assert.Equal(t, b.addr, r.from)
		assert.Less(t, took, delay, "before the hedge delay")
		assert.Equal(t, map[string]float64{retryFailover: 1}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", b.addr, "reason"),
			"failed over, not hedged: no wait for the hedge delay")
	})
	t.Run("first fails after the hedge: failed over at once", func(t *testing.T) {
		// A fails once the hedge to B (150 ms, hedgeFloor) has reached B,
		// and before B's own hedge delay would ask C (B's round-trip time
		// taken as 1 s: twice that, 2 s): C is asked as a failover. A
		// waits for the hedge's arrival, not for a time: with A failing
		// 500 ms in, and 900 ms for B's hedge delay, runs under -race
		// beside other work saw the hedge to B go after A's failure, or
		// A's failure come after B's hedge delay (2 of 40; with 50 and
		// 100 ms to spare before, more). D, after C, is never asked: the
		// first try's failure fails over once, not to every upstream left
		// (C's hedge delay is 2 s too, far beyond its answer).
		servfail := rcodeAnswer(dns.RcodeServerFailure)
		silent, hedged := askedSilentUpstream(t)
		a := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if r.Question[0].Name != "." {
				select {
				case <-hedged:
				case <-time.After(10 * time.Second): // the test fails: C's counts are not a failover's
				}
			}
			return servfail(w, r)
		})
		c := startUpstream(t, nil)
		var dAsked atomic.Int64
		d := startUpstream(t, countingAnswer(&dAsked))
		reg := prometheus.NewRegistry()
		f, err := New([]string{a.addr, silent, c.addr, d.addr}, Options{Timeout: 8 * time.Second, Metrics: NewMetrics(reg)})
		require.NoError(t, err)
		t.Cleanup(f.Close)
		f.upstreams[1].rtt.Store(int64(time.Second)) // measured, so not explored either
		f.upstreams[2].rtt.Store(int64(time.Second))
		require.Equal(t, 2*time.Second, f.hedgeDelay(f.upstreams[1]))
		r, _ := ask(t, f, "third.example.org.")
		require.NoError(t, r.err)
		assert.Equal(t, c.addr, r.from)
		assert.Zero(t, dAsked.Load(), "the fourth upstream was asked")
		assert.Empty(t, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", d.addr, "reason"), "no try went to the fourth upstream")
		assert.Equal(t, map[string]float64{retryHedge: 1}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", silent, "reason"))
		assert.Equal(t, map[string]float64{retryFailover: 1}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", c.addr, "reason"),
			"the first try's failure fails over at once, not at the next hedge")
	})
	t.Run("every try fails", func(t *testing.T) {
		a, b := silentUpstream(t), startUpstream(t, rcodeAnswer(dns.RcodeServerFailure))
		f := NewForwarder([]string{a, b.addr}, 300*time.Millisecond, false)
		defer f.Close()
		r, took := ask(t, f, "fails.example.org.")
		var ue *UpstreamError
		require.ErrorAs(t, r.err, &ue)
		assert.Empty(t, r.from)
		assert.Equal(t, []string{a, b.addr}, ue.upstreams, "the first try's failure first")
		assert.GreaterOrEqual(t, took, 250*time.Millisecond, "the first try's own timeout")
		assert.NotNil(t, ue.Answer, "the SERVFAIL answer is kept")
	})
}

// TestStartWireHedgeThrottled: a started query whose hedge finds the next
// upstream's retry budget full waits for room, up to its give-up time,
// and fails with its first try's error when none comes.
func TestStartWireHedgeThrottled(t *testing.T) {
	silent := silentUpstream(t)
	b := startUpstream(t, nil)
	f := NewForwarder([]string{silent, b.addr}, 300*time.Millisecond, false)
	defer f.Close()
	f.upstreams[1].retries.Store(retryFloor) // the budget is full
	then := make(thenChan, 2)
	f.StartWire(wireQuestion("throttled.example.org.", dns.TypeA), then, nil)
	r := then.wait(t)
	var ue *UpstreamError
	require.ErrorAs(t, r.err, &ue)
	assert.Equal(t, []string{silent}, ue.upstreams, "the other upstream was never asked")
	assert.True(t, ue.Timeout)
}

// TestStartWireQueuesACopy: a query queued for its batch's flush is sent
// as it was when StartWire took it, whatever its caller writes into its
// memory once the query has its result, which may come before the flush:
// a spoofed answer with the query's ID (here from the upstream's own
// address). With more than one upstream, StartWire writes nothing into
// the caller's q at all: its tries, which may outlive the result, work on
// a copy.
func TestStartWireQueuesACopy(t *testing.T) {
	for _, upstreams := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d upstreams", upstreams), func(t *testing.T) {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer pc.Close()
			addrs := []string{pc.LocalAddr().String()}
			if upstreams == 2 {
				addrs = append(addrs, startUpstream(t, nil).addr)
			}
			f := NewForwarder(addrs, time.Second, false) // in order: the raw socket first
			defer f.Close()
			// No exploring probes: one queued first on the raw socket
			// would be the lead that flushes its queue, so the query
			// would go out with the probe, not at the batch's flush.
			f.started.Store(true)

			batch := new(batchRecorder)
			then := make(thenChan, 2)
			q := wireQuestion("queued.example.org.", dns.TypeA)
			want := bytes.Clone(q)
			f.StartWire(q, then, batch)
			if upstreams == 2 {
				assert.Equal(t, want, q, "the socket's ID went into a copy")
			}
			// The datagram queued, with the ID the socket gave it.
			mux := f.upstreams[0].t.(*Plain).mux
			mux.mu.Lock()
			s := mux.cur
			mux.mu.Unlock()
			var queued []byte
			s.mu.Lock()
			for _, e := range s.queue {
				if bytes.Equal(e.b[2:], want[2:]) {
					queued = bytes.Clone(e.b)
				}
			}
			local := s.conn.LocalAddr().(*net.UDPAddr)
			s.mu.Unlock()
			require.NotNil(t, queued, "queued for the batch")
			assert.Equal(t, want[2:], queued[2:])
			// Its answer before the flush, to the socket's own address.
			m := new(dns.Msg)
			require.NoError(t, m.Unpack(queued))
			r := new(dns.Msg)
			r.SetReply(m)
			reply, err := r.Pack()
			require.NoError(t, err)
			_, err = pc.WriteToUDP(reply, local)
			require.NoError(t, err)
			res := then.wait(t)
			require.NoError(t, res.err)

			if upstreams == 2 {
				assert.Equal(t, want, q, "the socket wrote into a copy, not the caller's q")
			}
			for i := range q {
				q[i] = 0xEE // the caller reuses its memory
			}
			batch.mu.Lock()
			require.Len(t, batch.flushers, 1)
			batch.flushers[0].Flush()
			batch.mu.Unlock()
			// The upstream reads the datagram as queued.
			buf := make([]byte, 512)
			require.NoError(t, pc.SetReadDeadline(time.Now().Add(2*time.Second)))
			for {
				n, _, err := pc.ReadFromUDP(buf)
				require.NoError(t, err)
				if got := new(dns.Msg); got.Unpack(buf[:n]) == nil && got.Question[0].Name == "queued.example.org." {
					assert.Equal(t, queued, buf[:n], "the datagram as StartWire took it")
					break
				}
			}
		})
	}
}
