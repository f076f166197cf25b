package resolver

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// detachedRecorder is a UDP ResponseWriter that can be detached and that
// gathers flushers as the UDP listener's batch does (listen.Detacher,
// listen.Batcher); the answers of detached queries come from other
// goroutines.
type detachedRecorder struct {
	remote   net.Addr
	mu       sync.Mutex
	written  [][]byte
	detached int
	done     chan struct{} // one token per Done
	flushers []listen.Flusher
}

func newDetachedRecorder() *detachedRecorder {
	return &detachedRecorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 5300}, done: make(chan struct{}, 8)}
}

func (r *detachedRecorder) Transport() string { return listen.UDP }
func (r *detachedRecorder) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}
func (r *detachedRecorder) RemoteAddr() net.Addr { return r.remote }
func (r *detachedRecorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = r.Write(b)
	return err
}
func (r *detachedRecorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.written = append(r.written, append([]byte(nil), b...))
	return len(b), nil
}
func (r *detachedRecorder) Close() error        { return nil }
func (r *detachedRecorder) TsigStatus() error   { return nil }
func (r *detachedRecorder) TsigTimersOnly(bool) {}
func (r *detachedRecorder) Hijack()             {}
func (r *detachedRecorder) Detach() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.detached++
}
func (r *detachedRecorder) Done()                 { r.done <- struct{}{} }
func (r *detachedRecorder) Within(listen.Batcher) {}
func (r *detachedRecorder) AfterBatch(f listen.Flusher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushers = append(r.flushers, f)
}

// flush ends the batch: what its queries gathered is sent.
func (r *detachedRecorder) flush() {
	r.mu.Lock()
	fs := r.flushers
	r.flushers = nil
	r.mu.Unlock()
	for _, f := range fs {
		f.Flush()
	}
}

// answers waits for n Done calls, then returns the answers written.
func (r *detachedRecorder) answers(t *testing.T, n int) []*dns.Msg {
	t.Helper()
	for range n {
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Fatal("the detached query was never done")
		}
	}
	select {
	case <-r.done:
		t.Fatal("Done was called more than once a query")
	case <-time.After(20 * time.Millisecond):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ms []*dns.Msg
	for _, b := range r.written {
		m := new(dns.Msg)
		require.NoError(t, m.Unpack(b))
		ms = append(ms, m)
	}
	return ms
}

// TestWireMissAnsweredByUpstreamReader: a UDP cache miss with one plain
// upstream is sent from the listener's goroutine, not resumed on a worker;
// its datagram goes out only once the listener's batch is read through
// (AfterBatch), and the upstream's reader writes the answer and says Done
// once.
func TestWireMissAnsweredByUpstreamReader(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	w := newDetachedRecorder()
	m := question("reader.example.org.", dns.TypeA, true)
	m.Id = 0x4242

	resume, handled := f.handler.ServeWire(w, packed(m))
	require.True(t, handled)
	require.Nil(t, resume, "no worker: the upstream's reader answers")
	w.mu.Lock()
	assert.Equal(t, 1, w.detached)
	assert.Len(t, w.flushers, 1, "the datagram waits for the end of the batch")
	w.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, up.count.Load(), "nothing is sent before the batch ends")

	w.flush()
	got := w.answers(t, 1)
	require.Len(t, got, 1)
	assert.Equal(t, uint16(0x4242), got[0].Id)
	assert.Equal(t, dns.RcodeSuccess, got[0].Rcode)
	require.Len(t, got[0].Answer, 1)
	assert.Equal(t, "192.0.2.1", got[0].Answer[0].(*dns.A).A.String())
	assert.Equal(t, int64(1), up.count.Load())

	// Cached now: the next one is answered inline.
	w2 := newDetachedRecorder()
	resume, handled = f.handler.ServeWire(w2, packed(m))
	require.True(t, handled)
	require.Nil(t, resume)
	assert.Zero(t, w2.detached)
	assert.Len(t, w2.written, 1)
	assert.Equal(t, int64(1), up.count.Load())
	assert.Equal(t, int64(0), f.handler.slots.used.Load(), "the upstream slot is given back")
}

// TestWireMissKeepsItsAnswer: the upstream socket's reader hands a
// started miss the answer in its own buffer, which it reads the next
// answers into; the cache entry keeps a copy, and its key a copy of the
// name, so that each name is answered from the cache with its own answer
// after many more have come through the same buffers.
func TestWireMissKeepsItsAnswer(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		var n int
		_, _ = fmt.Sscanf(r.Question[0].Name, "n%d.", &n)
		m.Answer = []dns.RR{mustRR("%s 300 IN A 198.51.%d.%d", r.Question[0].Name, n/256, n%256)}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	miss := func(n int) (*dns.Msg, *detachedRecorder) {
		w := newDetachedRecorder()
		m := question(fmt.Sprintf("n%d.example.org.", n), dns.TypeA, true)
		resume, handled := f.handler.ServeWire(w, packed(m))
		require.True(t, handled)
		require.Nil(t, resume)
		w.flush()
		got := w.answers(t, 1)
		require.Len(t, got, 1)
		return got[0], w
	}
	const names = 150 // over two batches of the reader's buffers
	for n := range names {
		got, w := miss(n)
		assert.Equal(t, 1, w.detached, "a miss, started")
		require.Len(t, got.Answer, 1)
		assert.Equal(t, fmt.Sprintf("198.51.%d.%d", n/256, n%256), got.Answer[0].(*dns.A).A.String())
	}
	asked := up.count.Load() // names, or a few more if an answer was late and asked again
	require.GreaterOrEqual(t, asked, int64(names))
	for n := range names {
		w := newDetachedRecorder()
		resume, handled := f.handler.ServeWire(w, packed(question(fmt.Sprintf("n%d.example.org.", n), dns.TypeA, true)))
		require.True(t, handled)
		require.Nil(t, resume)
		assert.Zero(t, w.detached, "a hit, answered inline")
		require.Len(t, w.written, 1)
		got := new(dns.Msg)
		require.NoError(t, got.Unpack(w.written[0]))
		require.Len(t, got.Answer, 1)
		assert.Equal(t, fmt.Sprintf("198.51.%d.%d", n/256, n%256), got.Answer[0].(*dns.A).A.String(), "n%d", n)
	}
	assert.Equal(t, asked, up.count.Load(), "every hit from the cache")
}

// TestWireMissSharedWhileStarted: an identical miss while one started by
// the listener is under way waits for its answer on a worker (resume), and
// the upstream is asked once.
func TestWireMissSharedWhileStarted(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	first, second := newDetachedRecorder(), newDetachedRecorder()
	m := question("shared.example.org.", dns.TypeAAAA, false)

	resume, handled := f.handler.ServeWire(first, packed(m))
	require.True(t, handled)
	require.Nil(t, resume)
	resume, handled = f.handler.ServeWire(second, packed(m))
	require.True(t, handled)
	require.NotNil(t, resume, "the second waits for the first's call")
	waited := make(chan struct{})
	go func() {
		resume()
		close(waited)
	}()
	first.flush()
	assert.Len(t, first.answers(t, 1), 1)
	<-waited
	second.mu.Lock()
	assert.Len(t, second.written, 1)
	second.mu.Unlock()
	assert.Equal(t, int64(1), up.count.Load())

	// A query that saw the miss, but whose resume runs only once the
	// started one is answered, takes the answer from the cache.
	m = question("late.example.org.", dns.TypeA, false)
	first, late := newDetachedRecorder(), newDetachedRecorder()
	resume, _ = f.handler.ServeWire(first, packed(m))
	require.Nil(t, resume)
	resume, _ = f.handler.ServeWire(late, packed(m))
	require.NotNil(t, resume)
	first.flush()
	assert.Len(t, first.answers(t, 1), 1)
	resume()
	require.Len(t, late.written, 1)
	assert.Equal(t, int64(2), up.count.Load(), "late.example.org. asked once")
}

// TestWireMissResumedWhenNotStarted: a listener that cannot answer later
// (no listen.Detacher), or an upstream that takes no query in wire form,
// gets the resume of before, counted among the queries waiting
// (Handler.waiting) until it is answered; two plain upstreams are started
// (their hedge and failover come later, if at all).
func TestWireMissResumedWhenNotStarted(t *testing.T) {
	up := startUpstream(t, nil)
	m := question("resumed.example.org.", dns.TypeA, true)

	f := startFence(t, testConfig, testFiles, up.addr)
	w := &rawRecorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 5300}}
	resume, handled := f.handler.ServeWire(w, packed(m))
	require.True(t, handled)
	require.NotNil(t, resume, "a writer that cannot be detached")
	assert.Equal(t, int64(1), f.handler.waiting.Load(), "the resumed query counts among those waiting")
	resume()
	require.Len(t, w.written, 1)
	assert.Zero(t, f.handler.waiting.Load(), "answered, it counts no longer (else waitingLimit refuses every query)")

	second := startUpstream(t, nil)
	f2 := startFence(t, testConfig, testFiles, up.addr, second.addr)
	d := newDetachedRecorder()
	resume, handled = f2.handler.ServeWire(d, packed(m))
	require.True(t, handled)
	require.Nil(t, resume, "two plain upstreams are started")
	d.flush()
	got := d.answers(t, 1)
	require.Len(t, got, 1)
	assert.Equal(t, dns.RcodeSuccess, got[0].Rcode)

	f3 := startFence(t, testConfig, testFiles, up.addr, "tls://127.0.0.1:1#dns.example.net")
	d = newDetachedRecorder()
	resume, handled = f3.handler.ServeWire(d, packed(m))
	require.True(t, handled)
	require.NotNil(t, resume, "an encrypted upstream takes the resume")
	assert.Zero(t, d.detached)
	resume() // over TLS first: nothing listens there, so the other answers
	require.Len(t, d.written, 1)
}

// TestWireMissFailureServfailOrStale: a started miss that the upstream
// does not answer in time gets the SERVFAIL of the resumed path, and one
// cached earlier is answered stale.
func TestWireMissFailureServfailOrStale(t *testing.T) {
	var silent sync.Map // names the upstream does not answer
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, ok := silent.Load(r.Question[0].Name); ok {
			return nil
		}
		a := answerWith(r.Question[0].Name, dns.TypeA, dns.RcodeSuccess, r.Question[0].Name+" 1 IN A 192.0.2.9")
		a.Id = r.Id
		return a
	})
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\ncache: {max_ttl: 1, serve_stale: 1h}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	ask := func(name string) *dns.Msg {
		t.Helper()
		w := newDetachedRecorder()
		resume, _ := f.handler.ServeWire(w, packed(question(name, dns.TypeA, true)))
		require.Nil(t, resume)
		w.flush()
		got := w.answers(t, 1)
		require.Len(t, got, 1)
		return got[0]
	}

	silent.Store("silent.example.org.", true)
	assert.Equal(t, dns.RcodeServerFailure, ask("silent.example.org.").Rcode)

	require.Len(t, ask("stale.example.org.").Answer, 1)
	time.Sleep(1100 * time.Millisecond) // past max_ttl: a miss again
	silent.Store("stale.example.org.", true)
	stale := ask("stale.example.org.")
	assert.Equal(t, dns.RcodeSuccess, stale.Rcode)
	require.Len(t, stale.Answer, 1)
	assert.Equal(t, "192.0.2.9", stale.Answer[0].(*dns.A).A.String())
	assert.Contains(t, stale.String(), "Stale Answer", "EDE 3")
	assert.Equal(t, int64(0), f.handler.slots.used.Load())
}

// TestClientTimerClaim: the upstream side's claim of a query's answer
// stops its client response timer and keeps fire from answering, should
// its time have come while claim held the lock (fire then reads nothing,
// not even the query, which may be reused by then); once fire has
// answered, the claim fails and the upstream side writes nothing.
func TestClientTimerClaim(t *testing.T) {
	tm := &clientTimer{t: time.AfterFunc(time.Hour, func() {})}
	require.True(t, tm.claim(), "nothing answered yet: the upstream side's")
	assert.False(t, tm.t.Stop(), "claim stopped the timer")
	assert.NotPanics(t, tm.fire, "claimed: fire reads nothing") // its handler and query are nil
	assert.True(t, tm.claim(), "claimed again: still the upstream side's")

	fired := &clientTimer{t: time.AfterFunc(time.Hour, func() {}), answered: true}
	defer fired.t.Stop()
	assert.False(t, fired.claim(), "fire answered: not the upstream side's")
}

// TestWireDoneNoWireTakesMessagePath: a started miss whose Forwarder was
// replaced meanwhile by one that takes no wire query (upstream.ErrNoWire)
// is asked again as a message, off the reader, and answered once; those
// waiting on its call go the message path too.
func TestWireDoneNoWireTakesMessagePath(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	h := f.handler
	w, p, c := leftWire(t, h, "nowire.example.org.", "a miss")

	p.left.WireDone(upstream.WireAnswer{}, "", upstream.ErrNoWire, nil)
	got := w.answers(t, 1)
	require.Len(t, got, 1)
	assert.Equal(t, dns.RcodeSuccess, got[0].Rcode)
	require.Len(t, got[0].Answer, 1)
	assert.ErrorIs(t, c.err, errNotWire)
	assert.Equal(t, int64(0), h.slots.used.Load())
	assert.Equal(t, int64(1), up.count.Load())
	h.wireFlights.mu.Lock()
	assert.Empty(t, h.wireFlights.calls)
	h.wireFlights.mu.Unlock()
}

// TestWireQueryOwn: a query leaving the listener copies its datagram and
// builds its upstream query in the buffer it is given when both fit, and
// in an allocation of their own otherwise; either way the copy is the
// datagram and the upstream query is the one it would be built as.
func TestWireQueryOwn(t *testing.T) {
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example.org."
	for _, name := range []string{"short.example.org.", long} {
		m := question(name, dns.TypeAAAA, true)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 64)})
		b := packed(m)
		var nameBuf [maxNameText]byte
		wq, ok := readWireQuery(bytes.Clone(b), &nameBuf)
		require.True(t, ok, name)
		want := wq.upstreamQuery(nil)

		var l wireLeft
		buf := l.mem[:]
		upq := wq.own(buf)
		clear(nameBuf[:]) // the listener's, reused by the next query
		assert.Equal(t, b, wq.b, "the datagram's copy")
		assert.Equal(t, want, upq, "the upstream query")
		assert.Equal(t, strings.ToLower(name), wq.name, "the name's copy")
		fits := len(b)+len(name)+len(want) <= len(buf)
		at := len(b) + len(name)
		inBuf := at < len(buf) && &upq[0] == &buf[at] && unsafe.StringData(wq.name) == &buf[len(b)]
		assert.Equal(t, fits, inBuf, "%s: %d+%d+%d octets in the buffer", name, len(b), len(name), len(want))
	}
}

// TestWireMissLeavesWithItsDecision: a miss decided inline, on the name
// in the listener's buffer (nameBufs), leaves with its decision made again
// on its own copy of the name (leave): the allow entry that let it
// through, a slice of the name, is logged as it matched though the
// listener's buffer holds the next query's name by the time the answer
// comes.
func TestWireMissLeavesWithItsDecision(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), testConfig, testFiles, up.addr)
	w := &rawRecorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
	resume, handled := f.handler.ServeWire(w, packed(question("ads.tiktok.com.", dns.TypeA, true)))
	require.True(t, handled)
	require.NotNil(t, resume, "a writer that cannot be detached: resumed")
	// The listener decides its next query in the buffer it got back.
	buf := nameBufs.Get().(*[maxNameText]byte)
	copy(buf[:], "xxxxxxxxxxxxxxxxxxxxxxxx")
	nameBufs.Put(buf)
	resume()
	require.Len(t, w.written, 1)
	lines := logs.FilterMessage("query").All()
	require.Len(t, lines, 1)
	m := lines[0].ContextMap()
	assert.Equal(t, "ads.tiktok.com.", m[logQName])
	assert.Equal(t, "ads.tiktok.com", m[logEntry], "the allow entry")
}

// TestJoinWireOnlyTheSameKey: a miss joins the call under way for its very
// key, found by the key's sum; a key of another name with the same sum
// asks on its own, and its end leaves the other's call registered.
func TestJoinWireOnlyTheSameKey(t *testing.T) {
	h := new(Handler)
	left := func(k cacheKey) *query {
		l := new(wireLeft)
		l.call.left = l
		l.left = l
		l.key = k
		l.refs.Store(1)
		return &l.query
	}
	k1 := newCacheKey("one.example.", dns.TypeA, dns.ClassINET, false, false, true)
	k2 := newCacheKey("two.example.", dns.TypeA, dns.ClassINET, false, false, true)
	k2.sum = k1.sum // as if the two names had one sum
	q1, q2, q3 := left(k1), left(k2), left(k1)

	c1, lead := h.joinWire(q1)
	require.True(t, lead)
	c2, lead := h.joinWire(q2)
	require.True(t, lead, "a key of another name is not joined")
	assert.NotSame(t, c1, c2)
	c3, lead := h.joinWire(q3)
	require.False(t, lead, "the same key joins")
	assert.Same(t, c1, c3)
	assert.Equal(t, int32(2), q1.left.refs.Load(), "the joiner holds the leader's query")

	h.endWire(q2, c2)
	c4, lead := h.joinWire(left(k1))
	require.False(t, lead, "the end of the other name's call left this one's registered")
	assert.Same(t, c1, c4)

	h.endWire(q1, c1)
	assert.Empty(t, h.wireFlights.calls)
	_, lead = h.joinWire(left(k1))
	assert.True(t, lead, "a new call once the first ended")
}

// TestFetchWirePrefetchesWhatItClaims: a query that waited for a worker
// and finds its answer cached meanwhile (fetchWire's second look) takes
// it, and refreshes it when the lookup found it due for a prefetch: the
// lookup claims the refresh, so that no other hit starts it.
func TestFetchWirePrefetchesWhatItClaims(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\ncache: {prefetch: true}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	h := f.handler
	const name = "due.example.org."
	p := leftQuery(t, h, newDetachedRecorder(), name, "a miss")
	defer h.done() // the query's end, which no answer written here makes

	// Cached meanwhile, 95 s into a TTL of 100 s, and read once before.
	now := time.Now()
	msg := answerWith(name, dns.TypeA, dns.RcodeSuccess, name+" 100 IN A 192.0.2.1")
	h.cache.Load().put(p.key, msg, now.Add(-95*time.Second))
	e, due := h.cache.Load().get(p.key, now)
	require.NotNil(t, e)
	require.False(t, due, "read once: not yet popular")

	c := h.fetchWire(t.Context(), p)
	require.NoError(t, c.err)
	assert.Same(t, e, c.e, "the cached answer, not asked again")
	assert.Eventually(t, func() bool { return up.count.Load() == 1 }, 2*time.Second, 5*time.Millisecond,
		"the refresh the lookup claimed went upstream")
	assert.Eventually(t, func() bool {
		fresh, _ := h.cache.Load().get(p.key, time.Now())
		return fresh != nil && fresh != e
	}, 2*time.Second, 5*time.Millisecond, "and replaced the entry")
}

// TestNoWireAfterTheClientTimerAnsweredOnce: a wire query whose expired
// answer its client response timer (stale_answer_client_timeout) has
// already served stale, and whose Forwarder was then replaced by one that
// takes no wire query (upstream.ErrNoWire), is asked again as a message
// to refresh the cache, and its client gets no second answer: one answer
// a query.
func TestNoWireAfterTheClientTimerAnsweredOnce(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms",
		"upstream_timeout: 300ms\ncache: {max_ttl: 1, serve_stale: 1h, stale_refresh_time: 0s, stale_answer_client_timeout: 50ms}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	h := f.handler
	const name = "nowire.example.org."
	require.Equal(t, dns.RcodeSuccess, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true)).Rcode)
	time.Sleep(1100 * time.Millisecond) // past max_ttl: the answer expired, servable stale

	w, p, _ := leftWire(t, h, name, "expired: the upstreams are asked")
	h.startClientTimer(p.left)
	require.NotNil(t, p.timer(), "the client response timer runs")
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.written) == 1
	}, 5*time.Second, 5*time.Millisecond, "the timer answers stale")

	p.left.WireDone(upstream.WireAnswer{}, "", upstream.ErrNoWire, nil)
	got := w.answers(t, 1)
	require.Len(t, got, 1, "the stale answer, and nothing after it")
	if e := ede(got[0]); assert.NotNil(t, e) {
		assert.Equal(t, dns.ExtendedErrorCodeStaleAnswer, e.InfoCode)
	}
	require.Eventually(t, func() bool { return up.count.Load() == 2 }, 5*time.Second, 5*time.Millisecond,
		"the message path asked the upstream again, for the cache")
}

// leftQuery takes a UDP query for name A, with DO, from client w through
// the wire path as far as its listener leaving it to a worker: h must
// find no answer to give at once (why says why). The caller ends the
// query (h.done) unless an answer written ends it.
func leftQuery(t *testing.T, h *Handler, w *detachedRecorder, name, why string) *query {
	t.Helper()
	var buf [maxNameText]byte
	wq, ok := readWireQuery(packed(question(name, dns.TypeA, true)), &buf)
	require.True(t, ok)
	snap := h.Snapshot()
	id, _ := peerIdentity(snap, w)
	q := query{w: w, transport: listen.UDP, wire: wq, snap: snap, id: id}
	require.True(t, h.serveInline(&q), why)
	return leave(q)
}

// leftWire takes a UDP query for name A, with DO, through the wire path
// as far as its listener leaving it to the upstreams: h must find no
// answer to give at once (why says why: a miss, an answer expired), and
// the query leads the call it joins. w is the query's client, p the query
// left, c its call.
func leftWire(t *testing.T, h *Handler, name, why string) (w *detachedRecorder, p *query, c *wireCall) {
	t.Helper()
	w = newDetachedRecorder()
	p = leftQuery(t, h, w, name, why)
	require.True(t, h.slots.acquire())
	c, lead := h.joinWire(p)
	require.True(t, lead)
	p.left.h = h
	return w, p, c
}
