package resolver

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
)

// The wire path's cache miss: the query goes upstream as bytes (the
// client's question, our header bits and OPT: wireQuery.upstreamQuery),
// the answer comes back as bytes, is cached as bytes (putWire) and is
// packed for the client like a cache hit. A message is unpacked only for
// an answer that is inspected (a client whose policy blocks) or that the
// wire cache cannot hold; an upstream that takes no wire query (an
// encrypted one) sends the query back to the message path.
//
// With plain upstreams, a UDP miss waits on no goroutine (startWire): the
// listener's loop sends it upstream, with the rest of its batch's misses
// in one sendmmsg, and the upstream socket's reader caches, inspects and
// writes the answer (WireDone), within its own batch of answers, as
// dnsdist's query and responder threads do; only a hedge or failover to
// another upstream takes a goroutine (upstream.StartWire). Otherwise (an
// encrypted upstream, a query sharing another's call, a listener that
// cannot answer later) the query is resumed on a worker, which waits.

// errNotWire is resolvedWire's error when the query must go upstream as a
// message: nothing was sent.
var errNotWire = errors.New("not forwarded in wire form")

// wireLeft is a wire query that left the listener for an upstream: the
// query, and what it needs only then. One that went out with StartWire
// and came back to WireDone is reused (leftPool) once nothing reads it:
// at the cache-miss rate its 900 octets a query were a fifth of the
// allocator's and the collector's work.
type wireLeft struct {
	query
	h    *Handler // the handler answering it, for WireDone
	call wireCall
	// upq is the query to send upstream, once: ForwardWire takes it.
	upq []byte
	// refs counts who may still read the wireLeft: the query itself until
	// its answer is written, and each query that joined its call
	// (joinWire) until it has taken the result. The last to let go
	// (release) puts it back in leftPool when reuse is set.
	refs atomic.Int32
	// reuse is set by WireDone: the query went out with StartWire, which
	// keeps nothing of upq once the answer is in (everything that outlives
	// it works on copies), so the memory may be reused.
	reuse bool
	// timer is the query's client response timer, when one runs
	// (startClientTimer); nil otherwise. Here rather than in query: only a
	// wire query has one, and query is what every miss of the message
	// path allocates (ServeInline).
	timer *clientTimer
	// mem holds the query's own copy of its datagram and name, and upq
	// after them, when all fit (wireQuery.own): the common query leaves
	// with no allocation of its own.
	mem [328]byte
}

// leftPool holds the wireLeft structs whose queries are answered.
var leftPool = sync.Pool{New: func() any {
	l := new(wireLeft)
	l.call.left = l
	return l
}}

// release lets go of l: the query's own reference, or a joiner's.
func (l *wireLeft) release() {
	if l.refs.Add(-1) != 0 || !l.reuse {
		return
	}
	releasedLeft(l)
	l.query, l.h, l.upq, l.reuse, l.timer = query{}, nil, nil, false, nil
	l.call.e, l.call.msg, l.call.err, l.call.upstream = nil, nil, nil, ""
	leftPool.Put(l)
}

// releasedLeft sees each wireLeft about to be reused: tests overwrite its
// memory, so that anything still reading it reads nonsense.
var releasedLeft = func(*wireLeft) {}

// wireCall is one upstream query in wire form that identical concurrent
// misses share (the wire path's singleflight): the first one asks, the
// others wait on wg and take its result.
type wireCall struct {
	left     *wireLeft // the query that asks; joiners hold a reference on it
	wg       sync.WaitGroup
	e        *cacheEntry // the answer in wire form, or
	msg      *dns.Msg    // the answer as a message (shared: copy it), or
	err      error       // the error
	upstream string
}

// wireFlights are the wire calls under way, by their cache key's sum
// (cacheKey.sum): a call is joined only by a query of its very key.
type wireFlights struct {
	mu    sync.Mutex
	calls map[uint64]*wireCall
}

// resolvedWire is resolve for a wire query, from the call c that asked
// the upstreams for it: the answer in wire form (e), or as a private
// shallow copy of a message (an answer the wire cache cannot hold, or,
// when every upstream failed, Cache.answerOnFailure's: a stale one or the
// fresh one another upstream query cached meanwhile), and where it came
// from; errNotWire when it must go upstream as a message. An upstream's
// answer with a record miekg/dns does not read is their answer (storeWire
// cached it: e); one the wire cache cannot hold is returned as the error
// that holds it (unreadAnswered), no failure to be answered stale for.
func (h *Handler) resolvedWire(q *query, c *wireCall) (*cacheEntry, *dns.Msg, string, error) {
	switch {
	case errors.Is(c.err, errNotWire), unreadAnswered(c.err):
		return nil, nil, "", c.err
	case c.err != nil:
		if m, from := h.cache.Load().answerOnFailure(q.key, q.start, time.Now(), upstreamsFailed(c.err)); m != nil {
			return nil, m, from, nil
		}
		return nil, nil, "", c.err
	case c.msg != nil:
		own := *c.msg
		return nil, &own, c.upstream, nil
	}
	return c.e, nil, c.upstream, nil
}

// fetchWire asks the upstreams once for every concurrent identical wire
// query, as fetch does for messages, and returns the call that did.
func (h *Handler) fetchWire(ctx context.Context, q *query) *wireCall {
	c, lead := h.joinWire(q)
	if !lead {
		c.wg.Wait() // the caller lets go of c.left once it has the result
		return c
	}
	defer h.endWire(q, c)
	// The inline step found no answer, but the query asking for it (one
	// startWire sent, while q waited for a worker) may have cached it and
	// ended since: take that rather than ask again. Looked up only now
	// that q leads, so that no such ending can slip in between.
	if e, prefetch := h.cache.Load().get(q.key, time.Now()); e != nil {
		if prefetch {
			h.startPrefetch(q, e)
		}
		c.e, c.upstream, c.err = e, upstreamCache, nil
		return c
	}
	c.e, c.msg, c.upstream, c.err = h.askWire(ctx, q)
	return c
}

// joinWire returns the call under way for q's key (lead false: wait on its
// wg for its result, then release its left, which joinWire took a
// reference on), or registers q's own (lead true: the caller asks,
// sets the result and ends the call with endWire). A call under way for
// another key of the same sum is left alone: q asks on its own, and its
// call is not registered.
func (h *Handler) joinWire(q *query) (c *wireCall, lead bool) {
	f := &h.wireFlights
	f.mu.Lock()
	defer f.mu.Unlock()
	other, ok := f.calls[q.key.sum]
	if ok && other.left.key == q.key {
		other.left.refs.Add(1)
		return other, false
	}
	c = q.left.wireCall()
	c.wg.Add(1)
	if !ok {
		if f.calls == nil {
			f.calls = map[uint64]*wireCall{}
		}
		f.calls[q.key.sum] = c
	}
	c.err = errAbandoned // until it ends: a panic before leaves this for those waiting
	return c, true
}

// endWire ends the call c that q leads: those waiting take its result.
func (h *Handler) endWire(q *query, c *wireCall) {
	f := &h.wireFlights
	f.mu.Lock()
	if f.calls[q.key.sum] == c {
		delete(f.calls, q.key.sum)
	}
	f.mu.Unlock()
	c.wg.Done()
}

// errAbandoned is the result of a wire call whose asking query failed.
var errAbandoned = errors.New("the query asking upstream failed")

// wireCall is the call of the query that left.
func (l *wireLeft) wireCall() *wireCall { return &l.call }

// askWire asks the upstreams for q in wire form and caches the answer
// (storeWire).
func (h *Handler) askWire(ctx context.Context, q *query) (*cacheEntry, *dns.Msg, string, error) {
	if !h.slots.acquire() {
		return nil, nil, "", errOverloaded
	}
	defer h.slots.release()
	a, from, err := q.snap.Forwarder().ForwardWire(ctx, q.left.upq)
	return h.storeWire(q, a, from, err)
}

// storeWire caches the upstreams' answer a to q, from the upstream from,
// or their error err: putWire, or put for an answer that came as a
// message or that the wire cache cannot hold; a SERVFAIL from every
// upstream is cached briefly, as fetch does. An upstream's whole answer
// with a record miekg/dns does not read (the error's, unreadAnswered; or
// a datagram's putWire cannot take as it came) is cached with putUnread,
// whether q still waits for it or its client response timer answered it
// meanwhile. It returns the answer as cached,
// or the error (errNotWire when q must go upstream as a message).
func (h *Handler) storeWire(q *query, a upstream.WireAnswer, from string, err error) (*cacheEntry, *dns.Msg, string, error) {
	if errors.Is(err, upstream.ErrNoWire) {
		return nil, nil, "", errNotWire
	}
	if err != nil {
		ue, _ := errors.AsType[*upstream.UpstreamError](err)
		switch {
		case ue.Answered():
			if e, ok := h.cache.Load().putUnread(q.key, ue.Unread, time.Now()); ok {
				return e, nil, ue.UnreadFrom, nil
			}
		case ue != nil && ue.AllServfail():
			h.cache.Load().putFailure(q.key, failureAnswer(q.request(), ue), time.Now())
		}
		return nil, nil, "", err
	}
	cache := h.cache.Load()
	msg := a.Msg
	if msg == nil {
		if e, ok := cache.putWire(q.key, a.Raw, time.Now()); ok {
			return e, nil, from, nil
		}
		if msg, err = upstream.UnpackAnswer(a.Raw); err != nil {
			rd, unread := errors.AsType[*upstream.RdataError](err)
			if !unread {
				return nil, nil, "", err
			}
			// A whole datagram (usableWire) with a record miekg/dns does
			// not read that putWire cannot take as it came: the
			// upstream's answer all the same.
			if e, ok := cache.putUnread(q.key, rd.Raw, time.Now()); ok {
				return e, nil, from, nil
			}
			return nil, nil, "", &upstream.UpstreamError{Unread: rd.Raw, UnreadFrom: from}
		}
	}
	return nil, cache.put(q.key, msg, time.Now()), from, nil
}

// startWire sends q, a cache miss in wire form, upstream without a
// goroutine waiting for it, as a dnsdist-style forwarder does: the
// upstream socket's reader answers it (WireDone) when the answer comes.
// It reports false, having done nothing, when q is to be resumed on a
// goroutine instead: its listener cannot answer it later (no
// listen.Detacher), an upstream takes no query in wire form
// (upstream.Forwarder.StartsWire), an identical query is already asking
// (q waits for its answer), or every upstream slot is taken.
func (h *Handler) startWire(q *query) bool {
	d, ok := q.w.(listen.Detacher)
	f := q.snap.Forwarder()
	if !ok || !f.StartsWire() {
		return false
	}
	if !h.slots.acquire() {
		return false
	}
	if c, lead := h.joinWire(q); !lead {
		c.left.release()
		h.slots.release()
		return false // resume's fetchWire waits for the call under way
	}
	h.metrics.cacheLookup(cacheMiss)
	d.Detach()
	h.startClientTimer(q.left) // detached first: the timer may answer it
	batch, _ := q.w.(listen.Batcher)
	q.left.h = h
	f.StartWire(q.left.upq, q.left, batch)
	return true
}

// WireDone is the end of the upstream query startWire sent
// (upstream.WireThen): the answer is cached, inspected, packed and
// written as resume does it, where the upstream's reader calls it, and
// within its batch when it has one, to go out with the batch's other
// answers; nothing is written when the query's client response timer
// answered it stale meanwhile (clientTimer). Only a Forwarder replaced
// meanwhile by one with encrypted upstreams (upstream.ErrNoWire) sends
// the query to the message path, which waits, on a goroutine of its own.
func (l *wireLeft) WireDone(a upstream.WireAnswer, from string, err error, batch listen.Batcher) {
	h, q, c := l.h, &l.query, &l.call
	d := q.w.(listen.Detacher)
	if errors.Is(err, upstream.ErrNoWire) {
		c.err = errNotWire // those waiting take the message path too
		h.endWire(q, c)
		h.slots.release()
		go func() {
			defer d.Done()
			defer l.release() // not reused: the message path may have q's memory
			h.resume(q, true)
		}()
		return
	}
	l.reuse = true
	defer l.release()
	defer d.Done()
	defer h.done()
	defer func() {
		if r := recover(); r != nil && q.claimAnswer() {
			h.failed(q, r)
		}
	}()
	func() {
		defer h.endWire(q, c)
		defer h.slots.release()
		c.e, c.msg, c.upstream, c.err = h.storeWire(q, a, from, err)
	}()
	r, _ := h.wireReply(q, c) // never errNotWire: that was ErrNoWire above
	if r.none() {
		return // answered stale by its timer, which wrote outside the batch
	}
	if batch != nil {
		d.Within(batch) // only now: the timer's write, if any, read it
	}
	h.write(q, r)
}

// clientTimer is RFC 8767 §5's client response timer of a wire query
// whose cached answer has expired but may be served stale: when it fires
// before the upstreams' answer is given, it answers the query stale
// (fire), and the query's upstream side, once the upstreams answer or
// fail, caches the answer or records the failure (stale_refresh_time) as
// ever, and sends nothing (claim). A wire query has a timer of its own
// because no goroutine may be waiting for it (startWire: WireDone answers
// it); a message query waits for its time in fetchWithin.
//
// Every query has its own timer, from when it was received, one that
// joins an upstream query under way (a wire call, or fetch's singleflight
// call) too, not the timer of the query that asked: RFC 8767 §5 starts
// the timer when a query is received, so that every client waits at most
// stale_answer_client_timeout and, however late it joined, gives the
// upstreams that long to answer it fresh; and the shared calls keep no
// state for it.
type clientTimer struct {
	h *Handler
	l *wireLeft // the query's; read by fire only until claim has run
	// mu orders fire and claim: whichever runs first decides who answers,
	// and fire writes holding it, so that claim returns only once the
	// stale answer is sent (the query's memory is then reused).
	mu sync.Mutex
	t  *time.Timer
	// answered is set by fire once it answers; claimed by claim, after
	// which fire does nothing.
	answered, claimed bool
}

// startClientTimer starts the client response timer of l's query, a wire
// query that left for the upstreams, when one applies
// (Cache.clientTimeout). With serve_stale off (the default) it costs a
// comparison. It takes the wireLeft, not the query: a *query it kept
// would move every ServeDNS query to the heap.
func (h *Handler) startClientTimer(l *wireLeft) {
	q := &l.query
	c := h.cache.Load()
	if !c.clientTimerOn() {
		return // serve_stale off, the default: no clock asked
	}
	wait, ok := c.clientTimeout(q.key, q.start, time.Now())
	if !ok {
		return
	}
	q.request() // read by fire and by the upstream side: made before either
	t := &clientTimer{h: h, l: l}
	l.timer = t
	t.mu.Lock()
	t.t = time.AfterFunc(wait, t.fire)
	t.mu.Unlock()
}

// fire answers the query stale, or fresh when another upstream query has
// refreshed the answer meanwhile (Cache.answerAtTimer; Cache.unreadEntry
// for an answer miekg/dns does not unpack), unless the
// upstream side has claimed its answer or the cache holds neither (the
// upstream side then gives the upstreams' answer). A panic from the
// look-up on answers it SERVFAIL, as one anywhere in the query's handling
// does: nothing recovers one on the timer's goroutine, and the process
// would end.
func (t *clientTimer) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claimed {
		return
	}
	h, q := t.h, &t.l.query
	defer func() {
		if r := recover(); r != nil {
			t.answered = true
			h.failed(q, r)
		}
	}()
	cache, now := h.cache.Load(), time.Now()
	if m, from := cache.answerAtTimer(q.key, now); m != nil {
		t.answered = true
		h.write(q, h.forwarded(q, m, from, nil))
		return
	}
	// An answer miekg/dns does not unpack, from its wire form.
	if e, stale := cache.unreadEntry(q.key, now); e != nil {
		t.answered = true
		h.write(q, h.unreadFromCache(q, e, now, stale))
	}
}

// claim reports whether the query's answer is still the upstream side's
// to give, and then keeps fire from giving one: false once fire has
// answered the query stale.
func (t *clientTimer) claim() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.answered {
		return false
	}
	if !t.claimed {
		t.claimed = true
		t.t.Stop()
	}
	return true
}

// timer is q's client response timer, when one runs (a wire query's).
func (q *query) timer() *clientTimer {
	if q.left == nil {
		return nil
	}
	return q.left.timer
}

// claimAnswer is clientTimer.claim for q: true, for a query without a
// timer, or when the upstream side is to answer it; false when the timer
// answered it stale. Called once the upstreams' answer or failure is in,
// before the reply is made (the timer's fire makes one with q too).
func (q *query) claimAnswer() bool {
	t := q.timer()
	return t == nil || t.claim()
}

// forwardedWire is forward's reply from an answer in wire form: inspected
// as any answer is (as a message, for the clients whose policy looks), and
// packed like a cache hit at the moment it was stored.
func (h *Handler) forwardedWire(q *query, e *cacheEntry, from string) reply {
	q.upstream = from
	if r, replaced := h.inspectEntry(q, e, e.stored); replaced {
		return r
	}
	result := e.result()
	bufp := answerBufs.Get().(*[]byte)
	a := q.asked()
	b, ok := a.appendCached((*bufp)[:0], e, e.stored, dns.MaxMsgSize)
	*bufp = b
	if !ok {
		answerBufs.Put(bufp)
		return agedReply(q, e, e.stored, result)
	}
	return reply{wire: b, buf: bufp, rcode: e.rcode, result: result, cached: e}
}

// answerWire is answerInline for a wire query: readWireQuery has done the
// checks of step 1, ServeWire the snapshot and the identity.
func (h *Handler) answerWire(q *query) (r reply, ok bool) {
	q.start = time.Now()
	q.client = q.id.Client.Addr()
	if r, limited := h.admit(q); limited {
		return r, true
	}
	// 3. May they ask at all; 4. which policy; 5. is the name blocked.
	q.out = q.snap.decide(q.id.Source, q.id.Client, q.wire.name)
	switch q.out.result {
	case ResultRefused:
		return msgReply(refusedReply(q.request()), ResultRefused), true
	case ResultBlocked:
		return h.blocked(q), true
	case ResultLocal:
		return msgReply(h.localReply(q, q.request()), ResultLocal), true
	case ResultServfail:
		return msgReply(notReadyReply(q.request(), q.out.policy.Policy), ResultServfail), true
	}
	// 7. Forward: the cache first; the upstreams are resume's.
	q.key = q.wire.key()
	return h.fromCache(q)
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
