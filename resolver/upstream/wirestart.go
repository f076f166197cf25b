package upstream

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
)

// WireThen takes the end of a query started by StartWire: the answer and
// the upstream that gave it, or the error, as ForwardWire returns them.
type WireThen interface {
	// WireDone is called exactly once: on the upstream socket's reader
	// goroutine when the answer or the timeout comes, where it must not
	// block (no other answer on the socket is read meanwhile), with the
	// reader's batch, whose flushes run once the answers read with this
	// one are delivered; or with a nil batch, on a goroutine of its own
	// after a retry over TCP or when StartWire could not send the query
	// itself, or on the caller's when the datagram could not be sent.
	// a.Raw may be the reader's buffer, which it reads the next answers
	// into once WireDone returns: WireDone copies what it keeps.
	WireDone(a WireAnswer, from string, err error, batch listen.Batcher)
}

// StartsWire reports whether StartWire sends a query itself: every
// upstream is plain DNS.
func (f *Forwarder) StartsWire() bool {
	for _, u := range f.upstreams {
		if _, plain := u.t.(*Plain); !plain {
			return false
		}
	}
	return true
}

// StartWire is ForwardWire without waiting, for a Forwarder that
// StartsWire: it sends q to the first upstream in order (with batch, when
// set, once the listener's batch is read through: listen.Batcher) and
// returns, and then.WireDone gets the answer, checked, counted and
// recorded as ForwardWire's. With more than one upstream, a first try
// that fails, or is not answered within its hedge delay, is followed by
// ForwardWire's hedging and failover over the others, on a goroutine of
// their own, while it stays in flight (hedgedWire); no goroutine exists
// for a query until then. When StartWire cannot send q itself (f was
// retired meanwhile, its successor does not StartWire), ForwardWire runs
// on a goroutine of its own and then gets its result. q belongs to
// StartWire from the call on until then.WireDone is called, not after:
// the caller may reuse its memory once then has the result. What outlives
// that (the hedges and failovers, ForwardWire on a goroutine, a datagram
// queued for the batch's flush) works on copies.
func (f *Forwarder) StartWire(q []byte, then WireThen, batch listen.Batcher) {
	if !f.acquire() {
		if next := f.successor.Load(); next != nil && next.StartsWire() {
			next.StartWire(q, then, batch)
			return
		}
		own := bytes.Clone(q) // ForwardWire's tries may start after then has the result
		go func() {
			a, from, err := f.ForwardWire(context.Background(), own)
			then.WireDone(a, from, err, nil)
		}()
		return
	}
	order := f.order()
	if len(order) > 1 {
		// The first try may still be waiting on its socket, and the
		// others be starting, when then has the result: they must not
		// read or write the caller's q.
		q = bytes.Clone(q)
	}
	f.start() // after order: the first query is not raced by the first probes
	up := order[0]
	p := up.t.(*Plain)
	t := wireTries.Get().(*wireTry)
	t.f, t.up, t.p, t.q, t.then, t.start = f, up, p, q, then, time.Now()
	if len(order) > 1 {
		t.hedged = newHedgedWire(f, order, q, then)
	}
	if p.closed.Load() {
		t.answered(nil, errClosed, nil)
		return
	}
	// Set up before the waiter is registered: from then on the reader
	// may end it (a late or spoofed answer with its ID) and recycle t.
	t.own, t.sent = dnswire.ID(q), true
	s, lead, err := p.mux.register(&t.waiter, q, t.start)
	if err != nil {
		t.answered(nil, err, nil)
		return
	}
	// t itself is not touched again here: it may be ended and recycled
	// already. Its waiter's address stays in the send queue, where only a
	// send failure uses it, to end a registration of that very address.
	s.send(lead, batch)
}

// wireTry is a query StartWire sent: its wait on the socket, and what its
// end needs (tryWire's record, exchangeWire's checks). Reused once done.
type wireTry struct {
	waiter
	f     *Forwarder
	up    *upstreamState
	p     *Plain
	q     []byte
	own   uint16 // q's own ID, back in q once answered
	sent  bool   // q was given to the socket: its ID is the socket's
	then  WireThen
	start time.Time
	// hedged, with more than one upstream, decides between this first
	// try and the hedges and failovers after it; then is its.
	hedged *hedgedWire
}

var wireTries = sync.Pool{New: func() any {
	t := new(wireTry)
	t.waiter.then = t
	return t
}}

// answered is the end of the try's wait on its socket (answerTaker): the
// UDP answer, checked as Plain.exchangeWire checks it, and asked again
// over TCP (on a goroutine of its own) when it must be.
func (t *wireTry) answered(raw []byte, err error, batch listen.Batcher) {
	if t.sent && err == nil {
		raw, err = answeredWire(t.q, t.own, raw)
	}
	a, err, overTCP := checkUDPWire(raw, t.q, err)
	if overTCP {
		go func() {
			a, err := t.p.exchangeTCPWire(context.Background(), t.q, err)
			t.end(a, err, nil)
		}()
		return
	}
	t.end(a, err, batch)
}

// end records the try (as tryWire does) and gives its result to then.
func (t *wireTry) end(a WireAnswer, err error, batch listen.Batcher) {
	a, err = usableWire(a, err)
	f, up, then := t.f, t.up, t.then
	f.record(context.Background(), up, t.start, err)
	if h := t.hedged; h != nil {
		t.recycle()
		h.queryFailures.add(context.Background(), f, up, err)
		h.firstEnded(a, up.addr, err, batch)
		f.release()
		return
	}
	from := up.addr
	if err != nil {
		f.unansweredQueryFailure(up, err)
		from, err = "", oneFailed(up, err)
	}
	t.recycle()
	then.WireDone(a, from, err, batch)
	f.release()
}

// recycle puts the ended try back in the pool. A sweep that collected its
// wait as late just before it ended forgets only that registration
// (waiter.gen), as for the waiters of exchangeWire.
func (t *wireTry) recycle() {
	gen := t.gen
	*t = wireTry{}
	t.gen, t.waiter.then = gen, t
	wireTries.Put(t)
}

// hedgedWire is a started query with more than one upstream: its first
// try (a wireTry) and, once that fails or is slow (its hedge delay), the
// tries to the others in order, as forwardHedged makes them on a
// goroutine of their own (rest). The first usable answer goes to then;
// when every try failed, the error lists them all, the first try's first.
// It holds a reference on f, and counts in f's queries in flight, until
// then has its result.
type hedgedWire struct {
	f     *Forwarder
	order []*upstreamState
	q     []byte // the first try's query: the other tries copy it (newWireTry)
	own   uint16 // q's own ID
	then  WireThen
	timer *time.Timer // the first try's hedge delay
	start time.Time
	// queryFailures takes the SERVFAILs, REFUSEDs, NOTIMPs and timeouts
	// of every try, judged when then has the result (end).
	queryFailures queryFailures

	mu       sync.Mutex
	state    int                // hedgeWaiting, hedgeRest, hedgeDone
	stopRest context.CancelFunc // ends the others' hedges and failovers once the query has its result
	// firstFailed is closed when the first try fails while the others
	// are being asked (a hedge went out first): they fail over at once.
	firstFailed chan struct{}
	firstDone   bool
	firstErr    error
	restDone    bool
	restErr     error
}

// The states of a hedgedWire.
const (
	hedgeWaiting = iota // the first try alone
	hedgeRest           // the other upstreams asked too
	hedgeDone           // then has its result
)

func newHedgedWire(f *Forwarder, order []*upstreamState, q []byte, then WireThen) *hedgedWire {
	h := &hedgedWire{f: f, order: order, q: q, own: dnswire.ID(q), then: then, start: time.Now()}
	f.refs.Add(1) // held by f's own until then has the result
	f.inflight.Add(1)
	// Stored under mu, which askRest takes first: a delay that passes
	// before AfterFunc returns (or a goroutine descheduled in between)
	// must find the timer there, not read the field unordered with this
	// store, or nil.
	h.mu.Lock()
	h.timer = time.AfterFunc(f.hedgeDelay(order[0]), func() { h.askRest(retryHedge) })
	h.mu.Unlock()
	return h
}

// firstEnded takes the first try's result: a failure while it was alone
// asks the others at once (unless its hedge delay just passed and they
// are being asked); anything else (an answer with a record miekg/dns does
// not read too: the upstream's, unreadAnswer) is settled by settle.
func (h *hedgedWire) firstEnded(a WireAnswer, from string, err error, batch listen.Batcher) {
	h.mu.Lock()
	if err != nil && !unreadAnswer(err) && h.state == hedgeWaiting {
		h.firstDone, h.firstErr = true, err
		h.mu.Unlock()
		if h.timer.Stop() { // else it is asking the others already
			go h.askRest(retryFailover)
		}
		return
	}
	h.settle(true, a, from, err, batch)
}

// askRest asks the other upstreams, hedging and failing over among them
// as ForwardWire does, unless the query is no longer waiting on its first
// try alone, and settles their result.
func (h *hedgedWire) askRest(reason string) {
	h.mu.Lock()
	if h.state != hedgeWaiting {
		h.mu.Unlock()
		return
	}
	h.state = hedgeRest
	ctx, cancel := context.WithCancel(context.Background())
	h.stopRest = cancel
	var firstFailed chan struct{}
	if !h.firstDone { // a hedge: the first try may still fail, and fail over then
		firstFailed = make(chan struct{})
		h.firstFailed = firstFailed
	}
	h.mu.Unlock()
	defer cancel()
	f := h.f
	f.refs.Add(1) // forwardHedged's, while it runs: the query's own goes when it ends
	defer f.release()
	giveUp := h.start.Add(time.Duration(len(h.order)) * f.timeout)
	// ctx ends the hedging and failover once the query has its result
	// (stopRest), not the tries sent: each runs on to its own answer or
	// timeout and counts for its upstream by what happened to it, as
	// Forward's do (a try ended here would count as a network error the
	// upstream never had, and a silent upstream only hedged to would
	// never be found down).
	newTry := f.newWireTry(h.q, h.own)
	a, from, err := forwardHedged(ctx, f, h.order[1:], continued{h.order[0], reason, giveUp, &h.queryFailures, firstFailed},
		func(up *upstreamState) func(context.Context) (WireAnswer, error) {
			try := newTry(up)
			return func(ctx context.Context) (WireAnswer, error) { return try(context.WithoutCancel(ctx)) }
		})
	h.mu.Lock()
	h.settle(false, a, from, err, nil)
}

// settle takes the result of one side (first: the first try; else the
// others'), with h.mu held, which it releases: a usable answer wins
// unless the other side's did, and so does an upstream's whole answer
// with a record miekg/dns does not read (the first try's unreadAnswer,
// the others' answered), as forwardHedged takes it, ending the query with
// the failures so far; a failure waits for the other side, and when both
// have failed the query ends with every failure.
func (h *hedgedWire) settle(first bool, a WireAnswer, from string, err error, batch listen.Batcher) {
	if h.state == hedgeDone {
		h.mu.Unlock()
		return
	}
	unread := err != nil && (first && unreadAnswer(err) || !first && answered(err))
	if err == nil || unread {
		h.state = hedgeDone
		if unread {
			h.failed(first, err)
			err = h.failure()
		}
		stopRest := h.stopRest
		h.mu.Unlock()
		h.timer.Stop()
		if stopRest != nil {
			stopRest() // no more hedges or failovers for a query answered
		}
		h.end(a, from, err, batch)
		return
	}
	h.failed(first, err)
	if first && h.firstFailed != nil {
		close(h.firstFailed)
	}
	both := h.firstDone && h.restDone
	if both {
		h.state = hedgeDone
	}
	h.mu.Unlock()
	if both {
		h.end(WireAnswer{}, "", h.failure(), batch)
	}
}

// failed keeps the error err of one side (first: the first try; else the
// others'), with h.mu held.
func (h *hedgedWire) failed(first bool, err error) {
	if first {
		h.firstDone, h.firstErr = true, err
	} else {
		h.restDone, h.restErr = true, err
	}
}

// failure is the error of a query whose tries ended without a usable
// answer: the first try's, then the others' in the order they were sent
// (a side still in flight, when an answer with a record miekg/dns does
// not read ended the query, has none).
func (h *hedgedWire) failure() error {
	uerr := &UpstreamError{Timeout: true}
	if h.firstErr != nil {
		uerr.add(h.order[0].addr, h.firstErr)
	}
	var rest *UpstreamError // forwardHedged's every failure is one
	if errors.As(h.restErr, &rest) {
		for i, err := range rest.Errs {
			uerr.add(rest.upstreams[i], errors.Unwrap(err))
		}
	}
	return uerr
}

// end gives then its result, once, and lets go of f.
func (h *hedgedWire) end(a WireAnswer, from string, err error, batch listen.Batcher) {
	h.f.inflight.Add(-1)
	h.then.WireDone(a, from, err, batch)
	h.queryFailures.end(h.f, answered(err))
	h.f.release()
}
