package listen

import "github.com/miekg/dns"

// WireHandler is a Handler that can also answer a query from its wire
// form, without the listener parsing it into a message first: the UDP
// listener offers it every datagram before parsing, and parses and calls
// ServeInline only for those it declines. It is how the commonest queries
// (a blocked name, a cache hit, a plain forward) are answered without
// building a dns.Msg.
type WireHandler interface {
	Handler
	// ServeWire is ServeInline for the datagram b: handled is false when
	// it leaves b to the listener (the message path: any query it does not
	// take in wire form, and anything that is no well-formed query). When
	// handled, it has written the one reply to w and returned nil, or
	// returned resume, as ServeInline does. b belongs to the listener and
	// is reused once ServeWire returns: resume must not read it.
	ServeWire(w ResponseWriter, b []byte) (resume func(), handled bool)
}

// MemoHandler is a WireHandler that keeps, for each UDP read loop, the
// answers it gave that it may give again word for word (the resolver's
// answer memo, as dnsdist's packet cache keeps answers by the query's
// bytes): the loop asks NewMemo for its own when it starts, and Closes it
// when it ends. ServeWire finds the loop's through the writer
// (MemoWriter). Only the loop's goroutine serves queries with it.
type MemoHandler interface {
	WireHandler
	NewMemo() Memo
}

// Memo is one loop's answer memo (MemoHandler.NewMemo).
type Memo interface {
	// Close lets the memo go: the handler forgets it and what it holds.
	Close()
}

// MemoWriter is the ResponseWriter of a datagram a loop with a memo
// serves: Memo is the loop's while the query is served inline, nil once
// the query has left the loop (Detach) or for a loop without one.
type MemoWriter interface {
	Memo() Memo
}

// Detacher is a ResponseWriter whose query can be answered later, from
// any goroutine, with nothing waiting for it: the UDP listener's. A
// Handler that answers a query so (an upstream's reader writes it when
// the answer comes) calls Detach before ServeWire returns handled with no
// resume, and Done exactly once after its write, or instead of one for a
// query it drops; the listener waits for Done before it closes. Within,
// called before the write by a goroutine that reads in batches too (an
// upstream's reader, with its batch), lets the answer wait until that
// batch is read through and go out with the others written in it, with
// one system call and no hand-off to the listener's writer.
type Detacher interface {
	Detach()
	Done()
	Within(b Batcher)
}

// Flusher sends what it has gathered: an upstream socket its queued
// queries.
type Flusher interface {
	Flush()
}

// Batcher is a ResponseWriter whose query was read in a batch with others
// (the UDP listener's): work its queries gather, such as datagrams to one
// upstream, is flushed once the whole batch is read through, with one
// system call instead of one per query. AfterBatch asks for f.Flush then;
// asking twice for one f flushes it once.
type Batcher interface {
	AfterBatch(f Flusher)
}

// ServeDatagram is what the UDP listener does with one datagram b: it
// offers it to a WireHandler, else parses it (AcceptMessage with accept
// and invalid, answering a rejected one through answerReject, which counts
// it with count) and gives the query to h.ServeInline. It returns the
// resume of a query that needs an upstream.
func ServeDatagram(h Handler, w ResponseWriter, b []byte, accept dns.MsgAcceptFunc, invalid dns.MsgInvalidFunc,
	count Counter) (resume func()) {
	if wh, ok := h.(WireHandler); ok {
		if resume, handled := wh.ServeWire(w, b); handled {
			return resume
		}
	}
	req, reject := AcceptMessage(b, accept, invalid)
	if reject != nil {
		answerReject(h, w, reject, count)
	}
	if req == nil {
		return nil
	}
	return h.ServeInline(w, req)
}
