package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// WireAnswer is an upstream's answer to a query sent in wire form
// (Forwarder.ForwardWire): the datagram as received, its ID the query's,
// when it could be read and checked in wire form, else the message.
type WireAnswer struct {
	// Raw is the answer datagram (nil when Msg is set). dnswire.Walk has
	// read it through: every record is where its header says.
	Raw []byte
	// Rcode is Raw's RCODE, with the extended bits of its OPT record.
	Rcode int
	// Msg is the answer when it came another way: over TCP after a
	// truncated or unusable UDP answer, or as a datagram that dnswire
	// cannot read but miekg/dns can.
	Msg *dns.Msg
}

// truncated reports the answer's TC bit.
func (a WireAnswer) truncated() bool {
	if a.Msg != nil {
		return a.Msg.Truncated
	}
	return dnswire.Flags(a.Raw)&dnswire.FlagTC != 0
}

// wireExchanger is a Transport that can send a query in wire form: plain
// DNS (Plain).
type wireExchanger interface {
	// exchangeWire sends the query q (a packed query with one question and
	// an uncompressed QNAME) and returns the answer, checked as Exchange
	// checks one: a response to q's ID and question. q is not modified.
	exchangeWire(ctx context.Context, q []byte) (WireAnswer, error)
}

// ErrNoWire is ForwardWire's error, before anything is sent, when an
// upstream cannot be asked in wire form (an encrypted one): the caller
// forwards a message instead.
var ErrNoWire = errors.New("an upstream takes no query in wire form")

// ForwardWire is Forward for a query already packed: the query upstreamQuery
// would build, in wire form (a fresh ID, the client's question
// uncompressed, the RD and CD bits, AD, and an OPT of ednsSize with the
// client's DO bit and no option), sent as it is but for its ID, by UDP to
// plain upstreams, with TCP after a truncated or unusable answer. The
// answer is checked, counted and failed over exactly as Forward's; it is
// returned in wire form when dnswire can read it. ForwardWire returns
// ErrNoWire, having sent nothing, when any upstream is not plain DNS.
//
// q's first two octets (its ID) are overwritten: q belongs to ForwardWire
// from the call on and must never be reused (tries that outlive the call
// send their own copies).
func (f *Forwarder) ForwardWire(ctx context.Context, q []byte) (WireAnswer, string, error) {
	if !f.acquire() {
		if next := f.successor.Load(); next != nil {
			return next.ForwardWire(ctx, q)
		}
		return WireAnswer{}, "", errClosed
	}
	defer f.release()
	for _, u := range f.upstreams {
		if u.wire == nil {
			return WireAnswer{}, "", ErrNoWire
		}
	}
	order := f.order()
	f.start()
	if len(order) == 1 {
		up := order[0]
		a, err := f.tryWire(ctx, q, up)
		if err == nil {
			return a, up.addr, nil
		}
		if !callerGaveUp(ctx, err) {
			f.unansweredQueryFailure(up, err)
		}
		return WireAnswer{}, "", oneFailed(up, err)
	}
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	sf := new(queryFailures)
	a, from, err := forwardHedged(ctx, f, order, continued{queryFailures: sf}, f.newWireTry(q, dnswire.ID(q)))
	sf.end(f, answered(err))
	return a, from, err
}

// newWireTry is forwardHedged's newTry for the query q in wire form whose
// own ID is own: each try gets its own copy of q, since a try may outlive
// the query and q with it. q's ID octets are not read: each try writes its
// socket's ID there, a started query's first try too, at any moment.
func (f *Forwarder) newWireTry(q []byte, own uint16) func(up *upstreamState) func(context.Context) (WireAnswer, error) {
	return func(up *upstreamState) func(context.Context) (WireAnswer, error) {
		tq := make([]byte, len(q))
		binary.BigEndian.PutUint16(tq, own)
		copy(tq[2:], q[2:])
		return func(ctx context.Context) (WireAnswer, error) { return f.tryWire(ctx, tq, up) }
	}
}

// tryWire is try for a query in wire form.
func (f *Forwarder) tryWire(ctx context.Context, q []byte, up *upstreamState) (WireAnswer, error) {
	start := time.Now()
	a, err := f.exchangeWire(ctx, q, up)
	f.record(ctx, up, start, err)
	return a, err
}

// exchangeWire is exchange for a query in wire form: an answer whose RCODE
// is a failure (failureRcode) is an *RcodeError holding it as a message.
func (f *Forwarder) exchangeWire(ctx context.Context, q []byte, u *upstreamState) (WireAnswer, error) {
	return usableWire(u.wire.exchangeWire(ctx, q))
}

// usableWire is exchangeWire's check of an answer: one whose RCODE is a
// failure (failureRcode) is an *RcodeError holding it as a message, and
// one with TC set ErrAnswerTruncated, as exchange says (a truncated
// datagram was asked again over TCP before this: only a TCP answer can);
// one with a record miekg/dns does not read alike (asReadable).
func usableWire(a WireAnswer, err error) (WireAnswer, error) {
	if err != nil {
		return WireAnswer{}, asReadable(err)
	}
	if a.Msg != nil {
		if failureRcode(a.Msg.Rcode) {
			return WireAnswer{}, &RcodeError{Rcode: a.Msg.Rcode, Answer: a.Msg}
		}
		if a.Msg.Truncated {
			return WireAnswer{}, ErrAnswerTruncated
		}
		return a, nil
	}
	if failureRcode(a.Rcode) {
		m, err := UnpackAnswer(a.Raw)
		if err != nil {
			return WireAnswer{}, asReadable(err)
		}
		return WireAnswer{}, &RcodeError{Rcode: m.Rcode, Answer: m}
	}
	return a, nil
}

// exchangeWire is Plain's exchange for a query in wire form: over UDP, and
// over TCP (as a message, with a fresh ID, by exchange's TCP code) when
// the UDP answer is truncated or unusable.
func (p *Plain) exchangeWire(ctx context.Context, q []byte) (WireAnswer, error) {
	if p.closed.Load() {
		return WireAnswer{}, errClosed
	}
	raw, err := p.mux.exchangeWire(ctx, q)
	a, err, overTCP := checkUDPWire(raw, q, err)
	if !overTCP {
		return a, err
	}
	return p.exchangeTCPWire(ctx, q, err)
}

// checkUDPWire checks the UDP answer raw to q, or the error err that came
// instead: the answer, or the error, or overTCP when q is to be asked
// again over TCP (the answer is truncated, or unusable at once: err says
// why, or is nil for a truncated one).
func checkUDPWire(raw, q []byte, err error) (a WireAnswer, _ error, overTCP bool) {
	if err == nil {
		a, err = checkWire(raw, q)
	}
	if err == nil && !a.truncated() {
		return a, nil, false
	}
	if err != nil && (!errors.Is(err, ErrAnswerUnusable) || isTimeout(err)) {
		return WireAnswer{}, err, false
	}
	return WireAnswer{}, err, true
}

// exchangeTCPWire asks q again over TCP, as a message, after a UDP answer
// that was truncated or unusable (udpErr, nil for a truncated one). The
// answer, or one with a record miekg/dns does not read (RdataError), has
// q's own ID, not the fresh one it was asked with.
func (p *Plain) exchangeTCPWire(ctx context.Context, q []byte, udpErr error) (WireAnswer, error) {
	qm, err := queryMessage(q)
	if err != nil {
		return WireAnswer{}, err
	}
	resp, err := p.exchangeTCP(ctx, qm, udpErr)
	if rd := (*RdataError)(nil); errors.As(err, &rd) {
		binary.BigEndian.PutUint16(rd.Raw, dnswire.ID(q)) // as resp's, below
	}
	if err != nil {
		return WireAnswer{}, err
	}
	resp.Id = dnswire.ID(q) // as a UDP answer comes back: with q's own
	return WireAnswer{Msg: resp}, nil
}

// queryMessage is the query q as a message, with a fresh ID (RFC 5452
// §4.3): q's own is the constant the wire path packs (upstreamQuery), and
// goes upstream only as the UDP socket replaces it.
func queryMessage(q []byte) (*dns.Msg, error) {
	qm := new(dns.Msg)
	if err := qm.Unpack(q); err != nil {
		return nil, fmt.Errorf("unpacking the query: %w", err)
	}
	qm.Id = queryIDs.next()
	return qm, nil
}

// checkWire checks the datagram raw as checkDatagram checks a message: a
// response with q's ID, opcode and question. It reads raw through (dnswire.Walk);
// one it cannot read so is unpacked and checked as a message, and a
// malformed one is ErrAnswerMalformed, as UnpackAnswer says.
func checkWire(raw, q []byte) (WireAnswer, error) {
	qq, _ := dnswire.ReadQuestion(q)
	rq, rcode, ok := walkAnswer(raw)
	if !ok {
		if dnswire.PointsIntoHeader(raw, rq.End) {
			return WireAnswer{}, fmt.Errorf("%w: a name points into the header", ErrAnswerMalformed)
		}
		return checkAsMessage(raw, q)
	}
	if dnswire.Flags(raw)&dnswire.FlagQR == 0 || dnswire.ID(raw) != dnswire.ID(q) ||
		dnswire.Opcode(dnswire.Flags(raw)) != dnswire.Opcode(dnswire.Flags(q)) {
		return WireAnswer{}, ErrAnswerMismatch
	}
	if rq.Type != qq.Type || rq.Class != qq.Class ||
		!dnswire.EqualFold(raw[dnswire.HeaderLen:rq.NameEnd], q[dnswire.HeaderLen:qq.NameEnd]) {
		return WireAnswer{}, ErrAnswerMismatch
	}
	return WireAnswer{Raw: raw, Rcode: rcode}, nil
}

// walkAnswer reads the answer raw through as checkWire takes it: one
// question, every record read (dnswire.Walk), one OPT record at most, in
// the additional section. rq is its question, rcode its RCODE extended by
// its OPT record's (RFC 6891 §6.1.3); ok is false when raw does not read so.
func walkAnswer(raw []byte) (rq dnswire.Question, rcode int, ok bool) {
	if rq, ok = dnswire.ReadQuestion(raw); !ok || dnswire.QDCount(raw) != 1 {
		return rq, 0, false
	}
	rcode = int(dnswire.Flags(raw) & 0xF)
	opts := 0
	ok = dnswire.Walk(raw, rq.End, func(r dnswire.Record) bool {
		if r.Type == dnswire.TypeOPT {
			if opts++; opts > 1 || r.Section != dnswire.Additional {
				return false
			}
			rcode |= int(raw[r.TTLOff]) << 4
		}
		return true
	})
	return rq, rcode, ok
}

// checkAsMessage unpacks raw and checks it against q as the message path
// checks a datagram (checkDatagram: a failure without a question section
// is asked again over TCP).
func checkAsMessage(raw, q []byte) (WireAnswer, error) {
	resp, err := UnpackAnswer(raw) // never an RdataError: raw does not read through (walkAnswer)
	if err != nil {
		return WireAnswer{}, err
	}
	qm := new(dns.Msg)
	if err := qm.Unpack(q); err != nil {
		return WireAnswer{}, fmt.Errorf("unpacking the query: %w", err)
	}
	// resp has q's ID, whatever it was sent with (exchangeWire).
	if err := checkDatagram(resp, qm); err != nil {
		return WireAnswer{}, err
	}
	return WireAnswer{Msg: resp}, nil
}

// exchangeWire is exchange for a packed query q, sent as it is but for
// its ID: a query ID free on the socket (another, on another socket, if
// a socket error moves it: udpMux.move), written into q, which must not be
// read or written until the exchange ends, nor reused after it (a
// datagram may be sent after an exchange that ctx ended). The answer,
// delivered by that ID, is returned with q's own.
func (m *udpMux) exchangeWire(ctx context.Context, q []byte) ([]byte, error) {
	w := waiters.Get().(*waiter)
	w.err = nil
	own := dnswire.ID(q)
	s, lead, err := m.register(w, q, time.Now())
	if err != nil {
		return nil, err
	}
	s.send(lead, nil)
	raw, ok, err := m.wait(ctx, w)
	if err != nil {
		return nil, err // w may yet get an answer: it is not reused
	}
	if !ok {
		return nil, w.err // closed: not reused
	}
	// deliver removed w from the socket before sending it the answer; an
	// expire that collected it as late just before ends only that
	// registration (waiter.gen), not the next one from the pool.
	w.packet, w.query, w.sock = nil, nil, nil // q and the socket are not kept alive by the pool
	waiters.Put(w)
	return answeredWire(q, own, raw)
}

// answeredWire gives the query q, whose datagram was sent, its own ID
// back, and the answer raw that came for it too.
func answeredWire(q []byte, own uint16, raw []byte) ([]byte, error) {
	binary.BigEndian.PutUint16(q, own)
	if len(raw) < dnswire.HeaderLen {
		return nil, ErrAnswerMalformed
	}
	binary.BigEndian.PutUint16(raw, own)
	return raw, nil
}

// waiters are the waiters of wire exchanges, reused once their answer is
// received (an open, empty channel that nothing else holds).
var waiters = sync.Pool{New: func() any { return &waiter{answer: make(chan []byte, 1)} }}
