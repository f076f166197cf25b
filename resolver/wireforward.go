package resolver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

// errNotWire is resolveWire's error when the query must go upstream as a
// message: nothing was sent.
var errNotWire = errors.New("not forwarded in wire form")

// wireLeft is a wire query that left the listener for an upstream: the
// query, and what it needs only then.
type wireLeft struct {
	query
	call wireCall
	// upq is the query to send upstream, once: ForwardWire takes it.
	upq []byte
}

// wireCall is one upstream query in wire form that identical concurrent
// misses share (the wire path's singleflight): the first one asks, the
// others wait on wg and take its result.
type wireCall struct {
	wg       sync.WaitGroup
	e        *cacheEntry // the answer in wire form, or
	msg      *dns.Msg    // the answer as a message (shared: copy it), or
	err      error       // the error
	upstream string
}

// wireFlights are the wire calls under way, by cache key.
type wireFlights struct {
	mu    sync.Mutex
	calls map[cacheKey]*wireCall
}

// resolveWire is resolve for a wire query: the answer in wire form (e), or
// as a private shallow copy of a message (an answer the wire cache cannot
// hold, or a stale one), and where it came from; errNotWire when it must
// go upstream as a message.
func (h *Handler) resolveWire(ctx context.Context, q *query) (*cacheEntry, *dns.Msg, string, error) {
	now := time.Now()
	c := h.fetchWire(ctx, q)
	switch {
	case errors.Is(c.err, errNotWire):
		return nil, nil, "", c.err
	case c.err != nil:
		if stale := h.cache.Load().stale(q.key, now); stale != nil {
			h.metrics.cacheLookup("stale")
			return nil, stale, upstreamStale, nil
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
	f := &h.wireFlights
	f.mu.Lock()
	if lead, ok := f.calls[q.key]; ok {
		f.mu.Unlock()
		lead.wg.Wait()
		return lead
	}
	c := q.left.wireCall()
	c.wg.Add(1)
	if f.calls == nil {
		f.calls = map[cacheKey]*wireCall{}
	}
	f.calls[q.key] = c
	f.mu.Unlock()
	c.err = errAbandoned // until it ends: a panic below leaves this for those waiting
	defer func() {
		f.mu.Lock()
		delete(f.calls, q.key)
		f.mu.Unlock()
		c.wg.Done()
	}()
	c.e, c.msg, c.upstream, c.err = h.askWire(ctx, q)
	return c
}

// errAbandoned is the result of a wire call whose asking query failed.
var errAbandoned = errors.New("the query asking upstream failed")

// wireCall is the call of the query that left.
func (l *wireLeft) wireCall() *wireCall { return &l.call }

// askWire asks the upstreams for q in wire form and caches the answer:
// putWire, or put for an answer that came as a message or that the wire
// cache cannot hold; a SERVFAIL from every upstream is cached briefly, as
// fetch does.
func (h *Handler) askWire(ctx context.Context, q *query) (*cacheEntry, *dns.Msg, string, error) {
	if !h.slots.acquire() {
		return nil, nil, "", errOverloaded
	}
	defer h.slots.release()
	a, from, err := q.snap.Forwarder().ForwardWire(ctx, q.left.upq)
	if errors.Is(err, upstream.ErrNoWire) {
		return nil, nil, "", errNotWire
	}
	if err != nil {
		var ue *upstream.UpstreamError
		if errors.As(err, &ue) && ue.AllServfail() {
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
		msg = new(dns.Msg)
		if err := msg.Unpack(a.Raw); err != nil {
			return nil, nil, "", fmt.Errorf("%w: %w", upstream.ErrAnswerMalformed, err)
		}
	}
	return nil, cache.put(q.key, msg, time.Now()), from, nil
}

// forwardedWire is forward's reply from an answer in wire form: inspected
// as any answer is (as a message, for the clients whose policy looks), and
// packed like a cache hit at the moment it was stored.
func (h *Handler) forwardedWire(q *query, e *cacheEntry, from string) reply {
	q.upstream = from
	if r, replaced := h.inspectEntry(q, e); replaced {
		return r
	}
	bufp := answerBufs.Get().(*[]byte)
	a := q.asked()
	b, ok := a.appendCached((*bufp)[:0], e, e.stored, dns.MaxMsgSize)
	*bufp = b
	if !ok {
		answerBufs.Put(bufp)
		return agedReply(q, e, e.stored, ResultForwarded)
	}
	return reply{wire: b, buf: bufp, rcode: e.rcode, result: ResultForwarded, cached: e}
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
	}
	// 7. Forward: the cache first; the upstreams are resume's.
	q.key = q.wire.key()
	e, prefetch := h.cache.Load().get(q.key, q.start)
	if e == nil {
		return reply{}, false
	}
	return h.cached(q, e, prefetch), true
}

// later is the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
