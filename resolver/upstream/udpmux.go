package upstream

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Limits on one upstream UDP socket. Many queries share a socket, told
// apart by ID, so that a cache miss costs no socket of its own; renewing the
// socket keeps the source port changing, half of what makes a spoofed
// answer hard to guess (RFC 5452).
const (
	socketMaxQueries = 1000
	socketMaxAge     = 10 * time.Second
)

// upstreamReceiveBuffer is asked for each upstream UDP socket, in bytes:
// up to socketMaxQueries answers may arrive on one at once, about 2 KiB
// each to the kernel, ten times what its usual 208 KiB holds.
const upstreamReceiveBuffer = 2 << 20

// ednsSize is the EDNS buffer size, in bytes, that queries and probes
// advertise upstream (RFC 6891 §6.2.5; 1232, DNS Flag Day 2020): an
// answer larger than that comes truncated and is asked again over TCP.
const ednsSize = 1232

var errSocketClosed = errors.New("upstream socket closed")

// queryIDs draws the IDs of upstream queries, the other half of what makes a
// spoofed answer hard to guess (RFC 5452 §4.3). ChaCha8 is a cryptographically
// strong generator; seeded from crypto/rand it is as unpredictable as
// dns.Id, which costs a getrandom system call (and a stack growth) per ID.
var queryIDs = newIDSource()

type idSource struct {
	mu  sync.Mutex
	rng *rand.ChaCha8
}

func newIDSource() *idSource {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails on Linux (Go 1.24+ crashes instead)
	return &idSource{rng: rand.NewChaCha8(seed)}
}

func (s *idSource) next() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint16(s.rng.Uint64())
}

// udpMux sends queries to one upstream over a shared connected UDP socket:
// a connected socket only receives datagrams from the upstream's address,
// and a reader goroutine hands each answer to the query with its ID.
// Answers whose ID no query is waiting for (late or spoofed) are dropped.
// An answer whose ID a query waits for but that cannot be used (cut short
// by the receive buffer, say) ends that query's wait at once with the
// cause; Plain then asks again over TCP. An ICMP error the kernel reports
// on the socket (socketError) ends the socket, and its queries are moved
// to another one (move).
type udpMux struct {
	addr    string
	timeout time.Duration // how long a query waits for its answer
	// resend, when set, sends a query unanswered for its delay again; set
	// before the first exchange (Plain.resendUnanswered).
	resend *resendPolicy
	// beforeWait, when set (tests only, before the first exchange), runs
	// as a query starts waiting for its answer on answer, before it looks
	// at the answer or at its ctx: tests hold it there until both are
	// ready.
	beforeWait func(ctx context.Context, answer <-chan []byte)
	// beforeMove, when set (tests only), runs in fail once a socket
	// error took the queries off the socket, before they are moved
	// (move): tests end a query's context there.
	beforeMove func()

	mu     sync.Mutex
	cur    *upstreamSocket
	closed bool // the transport is closed: queries still arriving get sockets of their own
}

// upstreamSocket is one connected socket and the queries waiting on it.
type upstreamSocket struct {
	// mux is the mux the socket is one of, which takes its queries when
	// a socket error ends it (fail, move); nil (a socket a test made by
	// hand): they fail with the error.
	mux     *udpMux
	conn    net.Conn
	batch   listen.BatchConn // conn's recvmmsg and sendmmsg; nil: one datagram a call
	born    time.Time
	timeout time.Duration
	resend  *resendPolicy // the mux's; nil: a query is sent once

	mu      sync.Mutex
	pending map[uint16]*waiter
	queue   []queuedQuery // packed queries waiting to be sent
	// spare is the array of the last queue sent, emptied, for the next
	// queue to fill: a queue is not a new allocation every time.
	spare []queuedQuery
	// octets holds the datagrams of queue, copied in by enqueue;
	// spareOctets is the last one sent, emptied.
	octets, spareOctets []byte
	sent                int  // registrations, moved ones (udpMux.move) included
	dead                bool // read or send failed: no more queries
	retired             bool // replaced: closes once its last query is answered
	// issued has bit id set for every query ID sent on the socket, so a
	// datagram for none of them (wrong ID, spoofed) is told apart from a
	// late answer.
	issued [1 << 16 / 64]uint64
	// strays counts datagrams that could not be given to any query: an ID
	// never issued, or too short to carry one; strayKind is the last one's
	// ErrAnswerUnusable kind. A query that times out after strays arrived
	// says so instead of only "no answer in time".
	strays    int
	strayKind error
}

// waiter is a query waiting for its answer. Its deadline is kept by the
// socket's reader, so that a query costs no timer of its own.
type waiter struct {
	answer   chan []byte // the answer; closed, with err set, when there is none
	err      error
	deadline time.Time
	straysAt int // the socket's strays when the query was registered
	// packet is the datagram sent, with the ID it was registered under,
	// kept while the query waits to be sent again (resendPolicy) at
	// resendAt, after waiting resendWait, resends times so far; nil: it is
	// not sent again.
	packet     []byte
	resendAt   time.Time
	resendWait time.Duration
	resends    int
	// gen counts the waiter's registrations, under the socket's mu. A
	// waiter of a wire exchange is pooled and registered again once
	// answered (exchangeWire), possibly under the same ID on the same
	// socket, while expire, which collected it as late just before the
	// answer came, has yet to forget it: expire forgets only the
	// registration it collected.
	gen uint32
	// query is the datagram sent, as registered (with the ID id), kept
	// for as long as the query waits, so that it can be moved to another
	// socket (udpMux.move), which writes the new ID into it (wait sets
	// it at every registration; a pooled waiter has none). sock is the socket it waits on, for udpMux.forget, which
	// sets it to nil under the mux's mu (nobody waits: move drops it);
	// both are set by wait, under the socket's mu and, on a socket of a
	// mux, the mux's. moved is set once the query was moved: a socket
	// error on the socket it moved to ends it.
	query []byte
	id    uint16
	sock  *upstreamSocket
	moved bool
	// then, when set, takes the answer or the error instead of the
	// channel: the wait of a query started by StartWire, which no
	// goroutine waits on.
	then answerTaker
}

// answerTaker takes the end of a wait, the answer or the error: exactly
// once, on the socket's reader goroutine (or on the goroutine that failed
// to send the datagram), where it must not block. batch, when not nil, is
// the reader's batch of answers (listen.Batcher): what the taker gathers
// for it is flushed once the batch is read through. raw is the reader's
// buffer, read again once the call returns: the taker copies what it
// keeps of it.
type answerTaker interface {
	answered(raw []byte, err error, batch listen.Batcher)
}

// fail ends the wait with err: the channel closes, or then takes err.
func (w *waiter) fail(err error, batch listen.Batcher) {
	if w.then != nil {
		w.then.answered(nil, err, batch)
		return
	}
	w.err = err
	close(w.answer)
}

// answered ends the wait with the answer raw, the reader's buffer: then
// takes it during its call (answerTaker), the channel a copy.
func (w *waiter) answered(raw []byte, batch listen.Batcher) {
	if w.then != nil {
		w.then.answered(raw, nil, batch)
		return
	}
	w.answer <- bytes.Clone(raw)
}

// readBatch is what one read of a socket's reader delivers
// (listen.Batcher): the flushes its answers ask for run once all are
// delivered.
type readBatch struct {
	flushers []listen.Flusher
}

// AfterBatch asks for f.Flush once the batch is delivered, once however
// often asked.
func (b *readBatch) AfterBatch(f listen.Flusher) {
	if !slices.Contains(b.flushers, f) {
		b.flushers = append(b.flushers, f)
	}
}

// flush runs the flushes asked for, and empties the batch.
func (b *readBatch) flush() {
	for i, f := range b.flushers {
		f.Flush()
		b.flushers[i] = nil
	}
	b.flushers = b.flushers[:0]
}

// queuedQuery is a packed query waiting in the socket's send queue.
type queuedQuery struct {
	id  uint16
	w   *waiter
	gen uint32 // w's registration that queued it (waiter.gen)
	b   []byte
}

// newUpstreamSocket dials a new socket of m to its upstream and starts
// its reader.
func newUpstreamSocket(m *udpMux) (*upstreamSocket, error) {
	c, err := net.Dial("udp", m.addr)
	if err != nil {
		return nil, err
	}
	s := &upstreamSocket{mux: m, conn: c, born: time.Now(), timeout: m.timeout, resend: m.resend, pending: map[uint16]*waiter{}}
	if uc, ok := c.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(upstreamReceiveBuffer) // best effort: the kernel caps it silently
		s.batch = listen.NewBatchConn(uc)
	}
	go s.read()
	return s, nil
}

// register picks the socket for a new query (socketFor), renewing it when
// it is old, used up or dead, and registers w under a query ID free on it
// (w.id, which a move changes).
// Both happen under m.mu and the socket's mu, held from the pick on, so a
// socket is never retired, nor ended by a socket error, between being
// picked and being waited on. The ID is written into the packed query q
// before w is registered: an answer with that ID may end w at once. A
// copy of q is queued for sending at the same time, under the socket's
// lock, since such an answer may write into q (the wire path puts its own
// ID back): lead is true when the queue was empty, and the caller then
// sends it (send). now is the time the query is sent at, which its
// deadline counts from.
func (m *udpMux) register(w *waiter, q []byte, now time.Time) (s *upstreamSocket, lead bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, err = m.socketFor(1, now); err != nil {
		return nil, false, err
	}
	defer s.mu.Unlock()
	s.sent++
	id := s.freeID()
	binary.BigEndian.PutUint16(q, id) // before w can be answered
	s.wait(id, w, q, now)
	return s, s.enqueue(id, w, q), nil
}

// socketFor returns the socket for n new registrations at now, its mu
// held: the current one, unless it is dead, socketMaxAge old, or would
// pass socketMaxQueries with them, when it is retired and a new one
// dialled. On a closed mux (a query of the old configuration after a
// reload) the new socket is the queries' own, retired at once: it closes
// once they are done with it. m.mu is held.
func (m *udpMux) socketFor(n int, now time.Time) (*upstreamSocket, error) {
	if s := m.cur; s != nil {
		s.mu.Lock()
		if !s.dead && s.sent+n <= socketMaxQueries && now.Sub(s.born) < socketMaxAge {
			return s, nil
		}
		s.mu.Unlock()
		s.retire()
		m.cur = nil
	}
	s, err := newUpstreamSocket(m)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.dead { // its first read failed already
		s.mu.Unlock()
		return nil, errSocketClosed
	}
	if m.closed {
		s.retired = true
	} else {
		m.cur = s
	}
	return s, nil
}

// freeID draws a query ID no query waits on; s.mu is held.
func (s *upstreamSocket) freeID() uint16 {
	id := queryIDs.next()
	for s.pending[id] != nil {
		id = queryIDs.next()
	}
	return id
}

// wait registers w, the wait for the datagram q, under the query ID id,
// which no query waits on, from now; s.mu is held, and on a socket of a
// mux m.mu too (waiter.sock).
func (s *upstreamSocket) wait(id uint16, w *waiter, q []byte, now time.Time) {
	w.gen++
	w.deadline = now.Add(s.timeout)
	w.straysAt = s.strays
	w.query, w.id, w.sock, w.moved = q, id, s, false
	w.packet, w.resends = nil, 0
	if s.resend != nil {
		if wait, ok := s.resend.delay(); ok {
			w.packet, w.resendWait, w.resendAt = q, wait, now.Add(wait)
		}
	}
	s.issued[id/64] |= 1 << (id % 64)
	s.pending[id] = w
}

// close retires the current socket: it closes once its last query is
// answered. Used when the upstreams change.
func (m *udpMux) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.cur != nil {
		m.cur.retire()
		m.cur = nil
	}
}

// exchange sends q with a query ID free on the socket instead of q's own
// (written into the packed datagram: q is not modified) and waits for the
// answer, for the mux's timeout at most, or until ctx ends. The answer,
// delivered by the ID it was sent with, carries q's ID.
func (m *udpMux) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	w := &waiter{answer: make(chan []byte, 1)}
	s, lead, err := m.register(w, b, time.Now())
	if err != nil {
		return nil, err
	}
	s.send(lead, nil)
	raw, ok, err := m.wait(ctx, w)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, w.err
	}
	resp, err := UnpackAnswer(raw)
	if err != nil {
		return nil, checkUnread(err, w.id, q) // the ID it was answered with: moved, another than register's
	}
	resp.Id = q.Id
	return resp, nil
}

// wait is the end of w's wait: its answer, or ok false when the wait
// failed (w.err says why); or ctx's error when ctx ended first, w then
// forgotten (it may yet get an answer). An answer already come when ctx
// ends is taken: select picks either of two ready cases, and a query
// whose goroutine waited for a CPU past its deadline, its answer come in
// time, lost it half the time.
func (m *udpMux) wait(ctx context.Context, w *waiter) (raw []byte, ok bool, err error) {
	if m.beforeWait != nil {
		m.beforeWait(ctx, w.answer)
	}
	select {
	case raw, ok = <-w.answer:
		return raw, ok, nil
	case <-ctx.Done():
		select {
		case raw, ok = <-w.answer:
			return raw, ok, nil
		default:
		}
		m.forget(w)
		return nil, false, ctx.Err()
	}
}

// forget stops the wait w on whichever socket it waits on now (it may
// have been moved since it was registered: move), if it still waits, and
// marks it as waited on by no one (waiter.sock nil): a socket error that
// took it off its socket just before (fail) does not move it, which would
// register it again, and send it again, for nobody.
func (m *udpMux) forget(w *waiter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := w.sock; s != nil {
		s.forget(w.id, w, nil)
	}
	w.sock = nil
}

// UnpackAnswer parses an upstream's answer b, over any transport; one
// that does not parse is ErrAnswerMalformed. An EDNS option dnsfence does
// not read from answers (answerOption) is ignored whatever its data holds
// (RFC 6891 §6.1.2: a requestor ignores an option it does not
// understand), where miekg/dns refuses the whole message for the data of
// some it knows (an EXPIRE of 3 octets, an Extended DNS Error of 1):
// such an answer is parsed again without those options
// (dnswire.WithoutOptions). An answer that parses as it is is parsed
// once, as before.
func UnpackAnswer(b []byte) (*dns.Msg, error) {
	m, err := unpackMsg(b)
	switch {
	case errors.Is(err, ErrAnswerRdata):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrAnswerMalformed, err)
	}
	return m, nil
}

// unpackMsg is UnpackAnswer with miekg/dns's error, for the caller to
// type: the answer, or the error of b as it is, but for an answer whose
// records read through (walkAnswer), whose error is an RdataError (wrapping
// ErrAnswerRdata) with a copy of b without its hop's options (hopOption).
// miekg/dns's errors cannot tell the two apart: those of the SVCB values
// and of the EDNS Client Subnet option are not *dns.Error. An answer
// miekg/dns reads with more than one OPT record, or one outside the
// additional section, is errOPTPlacement (oneOPT), as walkAnswer refuses
// it in wire form; one that ends before the records its header counts is
// errRecordsCut, but for one with TC set and one question, read as its
// header, question and OPT record alone (headerOnly): a truncated answer,
// whose records are not used. The answer, or the RdataError's copy, holds
// the upstream's first Extended DNS Errors only (maxAnswerEDEs).
func unpackMsg(b []byte) (*dns.Msg, error) {
	if len(b) > dnswire.HeaderLen && !dnswire.RecordsWhole(b) {
		// Truncated, and cut short as a truncating server or middlebox
		// may leave it: its records are never used (a datagram is asked
		// again over TCP, a stream's answer is ErrAnswerTruncated), so
		// it is read as its header, question and OPT alone (headerOnly:
		// one of one question), as Unbound falls back to TCP on TC
		// before parsing the datagram.
		if dnswire.Flags(b)&dnswire.FlagTC != 0 {
			if m := headerOnly(b); m != nil {
				return m, nil
			}
		}
		return nil, errRecordsCut
	}
	m := new(dns.Msg)
	err := m.Unpack(b)
	if err == nil {
		return readOPT(m)
	}
	if rest, ok := dnswire.WithoutOptions(b, answerOption); ok {
		if m = new(dns.Msg); m.Unpack(rest) == nil {
			return readOPT(m)
		}
	}
	if _, rcode, ok := walkAnswer(b); ok {
		// Every record reads through: what miekg/dns refuses is the
		// data of one.
		var edes edeCodesRead
		raw, ok := dnswire.WithoutOptions(b, func(code uint16, data []byte) bool {
			return !hopOption(code) && (code != dns.EDNS0EDE || len(data) < 2 || edes.read(binary.BigEndian.Uint16(data)))
		})
		if !ok {
			raw = slices.Clone(b)
		}
		return nil, &RdataError{Raw: raw, rcode: rcode, err: fmt.Errorf("%w: %w", ErrAnswerRdata, err)}
	}
	return nil, err
}

// errRecordsCut is an answer that ends before the questions and records
// its header counts (RFC 1035 §4.1.1; dnswire.RecordsWhole): miekg/dns
// reads such a message as far as it goes, and an answer counting an A
// record and ending after its question was relayed as NODATA, one
// counting two and holding one as the one (and cached so), one counting
// an OPT record it did not hold as an answer without EDNS. Unbound's parser
// refuses it (FORMERR); dnsdist 1.7 relays it as it came. A message that
// is a header alone is read as miekg/dns reads it, without a question
// (a failure some servers send so, which checkAnswer takes by its RCODE
// only, and a UDP one is asked again over TCP), and one with TC set as
// its header, question and OPT alone (a truncated answer: unpackMsg).
var errRecordsCut = errors.New("the message ends before the records its header counts (RFC 1035 §4.1.1)")

// errOPTPlacement is an answer with more than one OPT record, or one in
// its answer or authority section: "it MUST be the only OPT RR in that
// message", in the additional section (RFC 6891 §6.1.1). Which one holds
// the upstream's EDNS (its extended RCODE, its Extended DNS Errors) cannot
// be told, so the answer is not used, as the wire path refuses it
// (walkAnswer). Unbound's parser refuses it too (FORMERR), but for two OPT
// records of one owner and UDP size: one RRset to it, whose last record
// it reads.
var errOPTPlacement = errors.New("more than one OPT record, or one outside the additional section (RFC 6891 §6.1.1)")

// oneOPT returns m, or errOPTPlacement when m has more than one OPT record
// or one outside its additional section.
func oneOPT(m *dns.Msg) (*dns.Msg, error) {
	opts := 0
	for i, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			if rr.Header().Rrtype != dns.TypeOPT {
				continue
			}
			if opts++; opts > 1 || i < 2 {
				return nil, errOPTPlacement
			}
		}
	}
	return m, nil
}

// readOPT is oneOPT, then, for an answer with one OPT, the upstream's
// first Extended DNS Errors only (firstEDEs).
func readOPT(m *dns.Msg) (*dns.Msg, error) {
	m, err := oneOPT(m)
	if err == nil {
		firstEDEs(m)
	}
	return m, err
}

// maxAnswerEDEs is how many of an upstream answer's Extended DNS Errors
// dnsfence reads, and so relays to its client: the first of each
// INFO-CODE, as BIND passes on no more than 3 (DNS_EDE_MAX_ERRORS) and
// ignores a code it holds already. RFC 8914 §3 lets an answer carry
// several and sets no bound: an upstream's hundreds took a client's whole
// UDP size even without their texts, and the resolver's fitting of the
// OPT to it then left out every option, dnsfence's own too (a stale
// answer's EDE 3, a SERVFAIL's reason, the Client Subnet echo that scopes
// the answer, RFC 7871 §7.2.1). Three codes, without their texts, and
// dnsfence's own options fit any client's size beside the header and
// question.
const maxAnswerEDEs = 3

// edeCodesRead is the INFO-CODEs of the Extended DNS Errors read from one
// upstream answer so far.
type edeCodesRead struct {
	codes [maxAnswerEDEs]uint16
	n     int
}

// read reports whether the answer's next Extended DNS Error, of INFO-CODE
// code, is read (maxAnswerEDEs), and counts it when it is.
func (r *edeCodesRead) read(code uint16) bool {
	if r.n == maxAnswerEDEs || slices.Contains(r.codes[:r.n], code) {
		return false
	}
	r.codes[r.n] = code
	r.n++
	return true
}

// firstEDEs leaves out of m's OPT record, in place, the Extended DNS
// Errors dnsfence does not read (maxAnswerEDEs), its other options as
// they are.
func firstEDEs(m *dns.Msg) {
	opt := m.IsEdns0()
	if opt == nil {
		return
	}
	var edes edeCodesRead
	kept := opt.Option[:0]
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); !ok || edes.read(e.InfoCode) {
			kept = append(kept, o)
		}
	}
	clear(opt.Option[len(kept):])
	opt.Option = kept
}

// answerOption reports whether dnsfence reads the EDNS option code, with
// data, from an upstream's answer: an Extended DNS Error (RFC 8914),
// relayed to the client and read in a validating upstream's SERVFAIL
// (failedValidation), when it holds its 2-octet INFO-CODE (an EDE too short
// for one says nothing, and is left out). Padding and the
// edns-tcp-keepalive are dropped from answers (wireQuery.answer), the
// keepalive of a DoQ answer looked for in the octets (dnswire.HasOption);
// every other option is ignored.
func answerOption(code uint16, data []byte) bool {
	return code == dns.EDNS0EDE && len(data) >= 2
}

// upstreamBatch is how many answers one recvmmsg may read from an upstream
// socket, each up to upstreamBuf bytes: the upstream is asked for at most
// ednsSize, so a larger datagram is an upstream ignoring our EDNS size, and
// its query is asked again over TCP (ErrAnswerTooBig). Each buffer has one
// byte more, so that an answer cut short shows even where the kernel does
// not say so (MSG_TRUNC).
const (
	upstreamBatch = 16
	upstreamBuf   = 4096
)

// enqueue queues a copy of the packed query q, sent with ID id for w's
// registration (wait, before), and reports whether the queue was empty;
// s.mu is held. The copy is in
// octets: a query that ends before the queue is sent (an answer spoofed
// with its ID) leaves nothing of its caller's memory in it, which
// StartWire's caller reuses once the query has its answer.
func (s *upstreamSocket) enqueue(id uint16, w *waiter, q []byte) bool {
	if s.queue == nil {
		s.queue, s.spare = s.spare, nil
		s.octets, s.spareOctets = s.spareOctets, nil
	}
	// A queue that outgrows its octets moves on to a larger array; the
	// datagrams queued before stay where they were, kept by the queue.
	at := len(s.octets)
	s.octets = append(s.octets, q...)
	s.queue = append(s.queue, queuedQuery{id, w, w.gen, s.octets[at:len(s.octets):len(s.octets)]})
	return len(s.queue) == 1
}

// send sends the queue with one sendmmsg when register found it empty
// (lead); the others return at once. The lead sends it after letting the
// queries ready to run queue theirs, or, with a batch (a query of a
// listener's batch, started by StartWire), once the batch is read
// through (listen.Batcher), so the batch's queries to one upstream go in
// one sendmmsg. A query whose datagram could not be sent fails at once
// with the error.
func (s *upstreamSocket) send(lead bool, batch listen.Batcher) {
	if !lead {
		return
	}
	if batch != nil {
		batch.AfterBatch(s)
		return
	}
	runtime.Gosched()
	s.Flush()
}

// Flush sends the queries queued on the socket (listen.Flusher): send's
// lead calls it, or the listener at the end of its batch.
func (s *upstreamSocket) Flush() {
	s.mu.Lock()
	queue, octets := s.queue, s.octets
	s.queue, s.octets = nil, nil
	s.mu.Unlock()
	defer func() {
		clear(queue) // the waiters are not kept alive by it
		s.mu.Lock()
		s.spare, s.spareOctets = queue[:0], octets[:0]
		s.mu.Unlock()
	}()
	if s.batch == nil {
		for _, q := range queue {
			if _, err := s.conn.Write(q.b); err != nil && s.sendFailed(q, err) {
				return
			}
		}
		return
	}
	mp := sendMsgs.Get().(*[]ipv4.Message)
	defer sendMsgs.Put(mp)
	msgs := slices.Grow((*mp)[:0], len(queue))[:len(queue)]
	*mp = msgs
	for i, q := range queue {
		if cap(msgs[i].Buffers) == 0 {
			msgs[i].Buffers = make([][]byte, 1)
		}
		msgs[i].Buffers = msgs[i].Buffers[:1]
		msgs[i].Buffers[0] = q.b
	}
	defer func() {
		for i := range msgs {
			msgs[i].Buffers[0] = nil // the datagrams are not kept alive by the pool
		}
	}()
	for i := 0; i < len(msgs); {
		n, err := s.batch.WriteBatch(msgs[i:], 0)
		if err != nil {
			if s.sendFailed(queue[i], err) {
				return
			}
			n = 1
		}
		i += n
	}
}

// sendFailed ends the wait of q, whose datagram could not be sent, and
// reports whether the socket is done for. An error the kernel keeps for
// the socket (an ICMP port or host unreachable that came back for an
// earlier datagram: ECONNREFUSED, EHOSTUNREACH, ENETUNREACH) is reported
// once, to whichever call comes next: a send here, or the reader. It is
// the socket's, not q's, so it ends the socket as a read error does
// (fail): every query waiting on it is moved to another socket, or told
// when it was moved already; otherwise the query whose datagram drew it
// would wait out its whole timeout for an answer that the port refused.
func (s *upstreamSocket) sendFailed(q queuedQuery, err error) bool {
	if socketError(err) {
		s.fail(err)
		return true
	}
	s.end(q.id, q.w, &q.gen, err, nil) // only the registration that queued it: w may be answered and waiting again
	return false
}

// socketError reports an error of a send that the kernel kept for the
// socket rather than the datagram (see sendFailed).
func socketError(err error) bool {
	return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH)
}

// readMsgs are the readers' message arrays and buffers, upstreamBatch
// of upstreamBuf+1 octets: a socket lives for socketMaxQueries queries,
// and each new one's reader takes the arrays of one that ended rather
// than 64 KiB of fresh memory.
var readMsgs = sync.Pool{New: func() any {
	msgs := make([]ipv4.Message, upstreamBatch)
	bufs := make([][]byte, upstreamBatch) // side by side, as the listener's (udpServer.serve)
	for i := range msgs {
		bufs[i] = make([]byte, upstreamBuf+1)
		msgs[i].Buffers = bufs[i : i+1 : i+1]
	}
	return &msgs
}}

// sendMsgs are the message arrays of send's batches, reused.
var sendMsgs = sync.Pool{New: func() any { return new([]ipv4.Message) }}

// sweepEvery is how often the reader ends the waits of queries past their
// deadline, and sends again those past their resend time: a tenth of the
// timeout, so a query waits at most 10 % longer, and with resends a
// quarter of the least resend delay at most.
func (s *upstreamSocket) sweepEvery() time.Duration {
	every := s.timeout / 10
	if s.resend != nil {
		every = min(every, resendDelayFloor(s.timeout)/4)
	}
	return max(every, time.Millisecond)
}

// read delivers answers to waiting queries, reading whatever has arrived
// with one system call, and ends the waits of queries past their deadline,
// until the socket fails or is closed; then every waiting query is told,
// or moved to another socket (fail). A sweep first takes the answers
// that have arrived (drain): a query is late when its answer had not come
// by the sweep's time, not when the reader got to it only after the
// sweep.
func (s *upstreamSocket) read() {
	batch := s.batch
	mp := readMsgs.Get().(*[]ipv4.Message)
	defer readMsgs.Put(mp)
	msgs := *mp
	var sweep time.Time
	var delivered readBatch
	for {
		if now := time.Now(); !now.Before(sweep) {
			// No deadline while drain reads: a read past its deadline
			// fails before it looks (and drain's do not wait anyway).
			_ = s.conn.SetReadDeadline(time.Time{})
			if err := s.drain(msgs, &delivered); err != nil {
				s.fail(err)
				return
			}
			s.expire(now, &delivered)
			delivered.flush()
			sweep = now.Add(s.sweepEvery())
			_ = s.conn.SetReadDeadline(sweep)
		}
		var n int
		var err error
		if batch != nil {
			n, err = batch.ReadBatch(msgs, 0)
		} else {
			msgs[0].N, err = s.conn.Read(msgs[0].Buffers[0])
			n = 1
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // time to sweep
		}
		if err != nil {
			s.fail(err)
			return
		}
		s.deliverRead(msgs[:n], &delivered)
		delivered.flush()
	}
}

// drainReads bounds the reads of one drain: the answers of a socket's
// socketMaxQueries queries, and one more read that finds none.
const drainReads = socketMaxQueries/upstreamBatch + 2

// drain delivers the datagrams queued on the socket, reading without
// waiting (MSG_DONTWAIT) until a read finds fewer than msgs holds, before
// a sweep (read) judges which queries are late. A read deadline that
// passes while the process waits for a CPU ends the reader's wait before
// the poller reports the answer that came meanwhile (the runtime runs
// its timers before it polls), so the reader wakes to sweep with answers
// queued: under -race on a busy machine, a SERVFAIL that came within its
// query's 300 ms was dropped as late and the query failed as unanswered
// (TestStartWireHedged), and on a server short of CPU every such query
// would be a timeout the upstream never had, counted against it.
//
// read clears the read deadline for the drain, and sets the next once
// the sweep is done: a read past its deadline fails without looking, and
// with a sweep due every few tens of milliseconds, a reader that waited
// that long for a CPU between setting the deadline and draining failed
// the socket with "i/o timeout" (under -race beside other work). A read
// error other than EAGAIN is returned, for read to end the socket with
// (fail): a socket error the kernel reports once must not be lost. A
// socket read one datagram a call (batch nil) is not drained.
func (s *upstreamSocket) drain(msgs []ipv4.Message, delivered *readBatch) error {
	if s.batch == nil {
		return nil
	}
	for range drainReads {
		n, err := s.batch.ReadBatch(msgs, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return nil // nothing more
		}
		if err != nil {
			return err
		}
		s.deliverRead(msgs[:n], delivered)
		if n < len(msgs) {
			return nil
		}
	}
	return nil
}

// deliverRead delivers the datagrams msgs read (deliver), closing the
// socket once it is retired and drained, which ends read's loop.
func (s *upstreamSocket) deliverRead(msgs []ipv4.Message, delivered *readBatch) {
	for i := range msgs {
		cut := msgs[i].Flags&unix.MSG_TRUNC != 0 || msgs[i].N > upstreamBuf
		if s.deliver(msgs[i].Buffers[0][:min(msgs[i].N, upstreamBuf)], cut, delivered) {
			s.conn.Close() // retired and drained: ends this loop
		}
	}
}

// fail ends the socket after a read error, or a send's socket error
// (sendFailed): every waiting query is told, but on a socket error
// (socketError: an ICMP unreachable), which moves each query that has not
// moved yet to another socket of the mux, with a new source port and ID
// (move), and fails only those that had moved already. The ICMP message
// names no query, and an off-path sender can forge one quoting the
// socket's addresses and ports (guessing its source port, the
// randomness RFC 5452 §9.2 counts on; "SAD DNS", CVE-2020-25705): were every query on the socket failed by
// it, one forged datagram would fail up to socketMaxQueries queries, each
// a SERVFAIL to its client and a failure against the upstream. Sent
// again, a query to a port that is really closed draws its own ICMP error
// on the second socket, and fails one round trip later; one an attacker
// failed gets its answer, unless the second source port is guessed too.
func (s *upstreamSocket) fail(err error) {
	if errors.Is(err, net.ErrClosed) {
		err = errSocketClosed
	}
	movable := s.mux != nil && socketError(err)
	s.mu.Lock()
	s.dead = true
	var moving []*waiter
	ended := make([]*waiter, 0, len(s.pending))
	for id, w := range s.pending {
		delete(s.pending, id)
		if movable && !w.moved {
			moving = append(moving, w)
		} else {
			ended = append(ended, w)
		}
	}
	s.mu.Unlock()
	s.conn.Close()
	if len(moving) > 0 {
		if s.mux.beforeMove != nil {
			s.mux.beforeMove()
		}
		ended = append(ended, s.mux.move(moving)...)
	}
	for _, w := range ended { // outside the lock: a taker may start another query
		w.fail(err, nil)
	}
}

// move registers the queries ws, taken from a socket a socket error ended
// (fail), on another socket of m (socketFor: the ended one is dead, so
// never it), each under a new query ID written into its datagram
// (waiter.query), with the deadline it had: the move gives it no more
// time. Their datagrams are sent again at once, each counted as a resend
// (dnsfence_upstream_retries_total{reason="resend"}) and as one of the
// query's maxResends (one past them for a query moved after its last:
// the datagrams sent before went to the socket that ended), and each
// query is moved once (waiter.moved). A query whose wait was forgotten since fail
// took it off its socket (udpMux.forget: its context ended) is dropped:
// nobody waits for it. It returns, for the caller to fail, those it did
// not move: those past their deadline, which the ended socket's sweep
// would have failed (sent again, a datagram nobody would wait for), and
// all of them when no socket could be dialled.
func (m *udpMux) move(ws []*waiter) (failed []*waiter) {
	now := time.Now()
	m.mu.Lock()
	ws = slices.DeleteFunc(ws, func(w *waiter) bool {
		if w.sock != nil && !now.Before(w.deadline) {
			failed = append(failed, w)
		}
		return w.sock == nil || !now.Before(w.deadline)
	})
	if len(ws) == 0 {
		m.mu.Unlock()
		return failed
	}
	s, err := m.socketFor(len(ws), now)
	if err != nil {
		m.mu.Unlock()
		return append(failed, ws...)
	}
	lead := false
	for i, w := range ws {
		deadline, resends := w.deadline, w.resends
		id := s.freeID()
		binary.BigEndian.PutUint16(w.query, id) // before w can be answered
		s.wait(id, w, w.query, now)
		// The move's datagram is one of the query's resends (maxResends):
		// a query moved after its last resend is not sent again after it.
		w.deadline, w.moved, w.resends = deadline, true, resends+1
		if w.packet != nil && (w.resends >= maxResends || !w.resendAt.Before(deadline)) {
			w.packet = nil
		}
		if first := s.enqueue(id, w, w.query); i == 0 {
			lead = first
		}
	}
	s.sent += len(ws)
	s.mu.Unlock()
	m.mu.Unlock()
	if s.resend != nil {
		for range ws {
			s.resend.count()
		}
	}
	s.send(lead, nil)
	return failed
}

// expire ends the waits of the queries past their deadline: errNoAnswer,
// or, when datagrams no query could take arrived meanwhile, an error that
// is also of their kind (ErrAnswerWrongID, ErrAnswerMalformed). Then it
// sends again the datagrams of the queries past their resend time.
func (s *upstreamSocket) expire(now time.Time, batch listen.Batcher) {
	late, again := s.late(now)
	for _, q := range late {
		s.end(q.id, q.w, &q.gen, q.err, batch)
	}
	for _, q := range again {
		if _, err := s.conn.Write(q.b); err != nil {
			s.resendFailed(q, err, batch)
			continue
		}
		s.resend.count()
	}
}

// resendFailed ends the wait of the query whose datagram could not be sent
// again, as sendFailed does for a first send, if it still waits with the
// registration the sweep collected.
func (s *upstreamSocket) resendFailed(q resentQuery, err error, batch listen.Batcher) {
	if socketError(err) {
		s.fail(err)
		return
	}
	s.end(q.id, q.w, &q.gen, err, batch)
}

// lateQuery is a registration past its deadline, as expire collected it.
type lateQuery struct {
	id  uint16
	w   *waiter
	gen uint32
	err error
}

// resentQuery is a registration past its resend time, as expire
// collected it, and a copy of its datagram: the query's own may be
// reused once it is answered, which may happen before the copy is sent.
type resentQuery struct {
	id  uint16
	w   *waiter
	gen uint32
	b   []byte
}

// late collects the registrations past their deadline at now, and the
// error each is to end with; and those past their resend time (again),
// whose next resend time it sets: twice the last wait later, unless that
// is the last resend or past the deadline. At most a fifth of the queries
// waiting (never fewer than retryFloor) are sent again in one sweep, as
// the retry budget bounds hedges (takeRetry): the others wait for the
// next sweep, so that a burst of losses does not double the upstream's
// load at once.
func (s *upstreamSocket) late(now time.Time) (late []lateQuery, again []resentQuery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	budget := max(retryFloor, len(s.pending)/retryShare)
	for id, w := range s.pending {
		switch {
		case !now.Before(w.deadline):
			err := errNoAnswer
			if s.strays != w.straysAt {
				err = fmt.Errorf("%w; meanwhile %d datagrams no query could take: %w", errNoAnswer, s.strays-w.straysAt, s.strayKind)
			}
			late = append(late, lateQuery{id, w, w.gen, err})
		case w.packet != nil && !now.Before(w.resendAt) && len(again) < budget:
			again = append(again, resentQuery{id, w, w.gen, bytes.Clone(w.packet)})
			w.resends++
			w.resendWait *= 2
			w.resendAt = now.Add(w.resendWait)
			if w.resends >= maxResends || !w.resendAt.Before(w.deadline) {
				w.packet = nil
			}
		}
	}
	return late, again
}

// errNoAnswer ends the wait of a query whose answer did not come in time.
var errNoAnswer = fmt.Errorf("no answer in time: %w", context.DeadlineExceeded)

// deliver hands one answer to the query waiting for its ID, and reports
// whether the socket is retired with nothing left to wait for. An answer
// cut short by the buffer (cut) ends its query's wait at once with
// ErrAnswerTooBig. A datagram for no waiting query is dropped: a late
// answer silently, one with an ID never sent here, or too short to carry
// an ID, counted as a stray.
func (s *upstreamSocket) deliver(b []byte, cut bool, batch listen.Batcher) bool {
	s.mu.Lock()
	var w *waiter
	var id uint16
	if len(b) >= 12 {
		id = binary.BigEndian.Uint16(b)
		w = s.pending[id]
	}
	switch {
	case len(b) < 12:
		s.strays++
		s.strayKind = ErrAnswerMalformed
	case w != nil:
		delete(s.pending, id)
	case s.issued[id/64]&(1<<(id%64)) == 0:
		s.strays++
		s.strayKind = ErrAnswerWrongID
	}
	done := s.retired && len(s.pending) == 0
	s.mu.Unlock()
	switch {
	case w == nil:
	case cut:
		w.fail(fmt.Errorf("%w: over %d bytes", ErrAnswerTooBig, upstreamBuf), batch)
	default:
		w.answered(b, batch)
	}
	return done
}

// forget stops the wait w of query id, if it is still waiting (the ID may
// since belong to another query). With an error (its datagram could not be
// sent, or its time is up), the wait ends at once with that error.
func (s *upstreamSocket) forget(id uint16, w *waiter, err error) {
	s.end(id, w, nil, err, nil)
}

// end is forget of w's registration gen, when gen is not nil (a
// registration expire collected as late: the waiter may have been
// answered since, and registered again), else of whichever w has; an
// error ends the wait within batch, if not nil.
func (s *upstreamSocket) end(id uint16, w *waiter, gen *uint32, err error, batch listen.Batcher) {
	s.mu.Lock()
	if s.pending[id] == w && (gen == nil || w.gen == *gen) {
		delete(s.pending, id)
	} else {
		w = nil // answered, failed or forgotten already
	}
	done := s.retired && len(s.pending) == 0
	s.mu.Unlock()
	if err != nil && w != nil {
		w.fail(err, batch)
	}
	if done {
		s.conn.Close()
	}
}

// retire takes the socket out of use; it closes once nothing waits on it.
func (s *upstreamSocket) retire() {
	s.mu.Lock()
	s.retired = true
	done := len(s.pending) == 0
	s.mu.Unlock()
	if done {
		s.conn.Close()
	}
}
