package upstream

import (
	"context"
	"encoding/binary"
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
	WireDone(a WireAnswer, from string, err error, batch listen.Batcher)
}

// StartsWire reports whether StartWire sends a query itself and waits on
// no goroutine: the Forwarder has one upstream, plain DNS. With more, a
// query's hedges and failovers are timed by a goroutine of its own
// (ForwardWire).
func (f *Forwarder) StartsWire() bool {
	if len(f.upstreams) != 1 {
		return false
	}
	_, plain := f.upstreams[0].t.(*Plain)
	return plain
}

// StartWire is ForwardWire without waiting, for a Forwarder that
// StartsWire: it sends q (with batch, when set, once the listener's batch
// is read through: listen.Batcher) and returns, and then.WireDone gets
// the answer, checked, counted and recorded as ForwardWire's. When it
// cannot send q itself (f was retired meanwhile, its successor does not
// StartWire), ForwardWire runs on a goroutine of its own and then gets
// its result. q belongs to StartWire from the call on, as to ForwardWire.
func (f *Forwarder) StartWire(q []byte, then WireThen, batch listen.Batcher) {
	if !f.acquire() {
		if next := f.successor.Load(); next != nil && next.StartsWire() {
			next.StartWire(q, then, batch)
			return
		}
		go func() {
			a, from, err := f.ForwardWire(context.Background(), q)
			then.WireDone(a, from, err, nil)
		}()
		return
	}
	up := f.upstreams[0]
	p := up.t.(*Plain)
	f.start()
	t := wireTries.Get().(*wireTry)
	t.f, t.up, t.p, t.q, t.then, t.start = f, up, p, q, then, time.Now()
	if p.closed.Load() {
		t.answered(nil, errClosed, nil)
		return
	}
	s, id, err := p.mux.register(&t.waiter)
	if err != nil {
		t.answered(nil, err, nil)
		return
	}
	t.own = dnswire.ID(q)
	t.sent = true
	binary.BigEndian.PutUint16(q, id)
	s.send(id, &t.waiter, q, batch)
}

// wireTry is a query StartWire sent: its wait on the socket, and what its
// end needs (tryWire's record, exchangeWire's checks). Reused once done.
type wireTry struct {
	waiter
	f     *Forwarder
	up    *upstreamState
	p     *Plain
	q     []byte
	own   uint16 // q's own ID, back in q once sent
	sent  bool
	then  WireThen
	start time.Time
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
	from := up.addr
	if err != nil {
		from, err = "", oneFailed(up, err)
	}
	// Reused: a sweep that collected its wait as late just before it
	// ended forgets only that registration (waiter.gen), as for the
	// waiters of exchangeWire.
	gen := t.gen
	*t = wireTry{}
	t.gen, t.waiter.then = gen, t
	wireTries.Put(t)
	then.WireDone(a, from, err, batch)
	f.release()
}
