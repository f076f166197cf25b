package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// TCPExchanger is a Transport that can also be asked over TCP from the
// start: the Forwarder uses it for a query that came in over TCP (DESIGN.md
// §1 step 7), whose answer may be larger than any UDP answer. Transports
// that are streams already (TLS, HTTPS, QUIC) need not implement it.
type TCPExchanger interface {
	// ExchangeTCP is Exchange over TCP, whatever the answer's size.
	ExchangeTCP(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
}

// Plain is plain DNS (RFC 1035 §4.2) with one upstream: over UDP through
// one shared connected socket (queries told apart by ID, the socket renewed
// after socketMaxQueries queries or socketMaxAge), and over TCP, one
// connection per exchange, when the UDP answer is truncated (TC) or
// unusable (too big for our buffer, malformed, or for another question),
// or when asked with ExchangeTCP. Each exchange is bounded by the timeout
// it was made with, over UDP and TCP each.
type Plain struct {
	addr    string
	timeout time.Duration
	mux     *udpMux
	tcp     *dns.Client
	metrics *Metrics // counts an unusable UDP answer recovered over TCP
	closed  atomic.Bool
}

var (
	_ Transport    = (*Plain)(nil)
	_ TCPExchanger = (*Plain)(nil)
)

// NewPlain returns the plain DNS transport to addr (IP:port) with
// opts.Timeout per exchange, counting into opts.Metrics. It opens no socket
// until the first exchange.
func NewPlain(addr string, opts Options) *Plain {
	return &Plain{
		addr:    addr,
		timeout: opts.Timeout,
		mux:     &udpMux{addr: addr, timeout: opts.Timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: opts.Timeout},
		metrics: opts.Metrics,
	}
}

// resendPolicy is how a plain upstream's unanswered UDP queries are sent
// again: on their socket, with the same ID, after the delay, then after
// twice as long, and so on, up to maxResends times while the query waits
// (its timeout). A datagram lost on the way then costs its query the
// delay rather than the whole timeout (RFC 1035 §4.2.1, RFC 1536 §1: a
// resolver retransmits, backing off). Unbound sends again after its
// retransmission timeout in the same way; dnsdist does not. Whichever
// answer comes first is taken, the others are dropped as late.
type resendPolicy struct {
	// delay is the wait before a query registered now is first sent
	// again; false: it is not (another upstream is up to hedge with).
	delay func() (time.Duration, bool)
	count func() // counts one datagram sent again
}

// maxResends bounds how often one query is sent again: four datagrams in
// all, as the backoff within a 2 s timeout from a 150 ms delay gives. A
// move to a new socket after an ICMP error (udpMux.move) is one of them;
// a query moved after its last is sent that once more, five in all.
const maxResends = 3

// resendDelayFloor is the least resend delay a Forwarder gives a plain
// upstream with the timeout (hedgeDelay's least).
func resendDelayFloor(timeout time.Duration) time.Duration {
	return min(hedgeFloor, timeout/2)
}

// resendUnanswered makes p send its unanswered UDP queries again as
// resendPolicy says: delay gives the wait (at least resendDelayFloor of
// p's timeout), or false for none; count counts each resend. Set before
// p's first exchange.
func (p *Plain) resendUnanswered(delay func() (time.Duration, bool), count func()) {
	p.mux.resend = &resendPolicy{delay: delay, count: count}
}

// Address is the upstream's IP:port.
func (p *Plain) Address() string { return p.addr }

// Exchange asks over UDP, and again over TCP when the UDP answer is
// truncated or unusable (the UDP cause is counted when TCP then answers),
// but for an answer with a record miekg/dns does not read (RdataError).
// The error wraps ErrAnswerUnusable for an answer that cannot be used over
// either, is a timeout (isTimeout) when none came in time, and wraps
// net.ErrClosed after Close. An answer whose RCODE is a failure
// (failureRcode) is an answer: telling those apart is the Forwarder's.
func (p *Plain) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	return p.exchange(ctx, q, false)
}

// ExchangeTCP asks over TCP only, as for a query that came in over TCP.
func (p *Plain) ExchangeTCP(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	return p.exchange(ctx, q, true)
}

// Close retires the UDP socket, which closes once the queries waiting on
// it are answered or time out (the Forwarder closes a transport only when
// no exchange is left on it); TCP connections close with their exchange.
// Later exchanges fail with an error wrapping net.ErrClosed.
func (p *Plain) Close() error {
	p.closed.Store(true)
	p.mux.close()
	return nil
}

// errClosed is the error of an exchange with a closed transport or
// Forwarder.
var errClosed = fmt.Errorf("upstream closed: %w", net.ErrClosed)

// exchange is one exchange over UDP, and over TCP at once when the UDP
// answer is truncated or unusable, or over TCP only.
func (p *Plain) exchange(ctx context.Context, q *dns.Msg, overTCP bool) (*dns.Msg, error) {
	if p.closed.Load() {
		return nil, errClosed
	}
	var resp *dns.Msg
	var err, udpErr error
	if !overTCP {
		resp, err = p.mux.exchange(ctx, q) // the mux keeps the timeout
		if err == nil {
			err = checkDatagram(resp, q)
		}
		rd, unread := errors.AsType[*RdataError](err) // no allocation: err is most often nil
		switch {
		case unread && dnswire.Flags(rd.Raw)&dnswire.FlagTC != 0:
			// Truncated: asked again over TCP, as the wire path does.
			return p.exchangeTCP(ctx, q, nil)
		case unread:
			// The zone's data, which TCP would bring the same: taken as
			// the wire path takes it, not asked again.
			return nil, err
		case errors.Is(err, ErrAnswerUnusable) && !isTimeout(err):
			udpErr = err // the wait ended at once: ask again over TCP
		case err != nil:
			return nil, err
		}
	}
	if overTCP || udpErr != nil || resp.Truncated {
		return p.exchangeTCP(ctx, q, udpErr)
	}
	return resp, nil
}

// exchangeTCP asks q over TCP, within the timeout, and checks the answer.
// udpErr is why the UDP answer could not be used, if it could not: it is
// counted when TCP answers, and part of the error when TCP fails too.
func (p *Plain) exchangeTCP(ctx context.Context, q *dns.Msg, udpErr error) (*dns.Msg, error) {
	tctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	resp, err := p.streamExchange(tctx, q)
	if err != nil {
		err = tcpError(err)
	} else {
		err = checkAnswer(resp, q)
	}
	if udpErr != nil {
		// TCP answered, with a record miekg/dns does not read too (whole
		// or not: asReadable takes a truncated one as it takes one read).
		if _, unread := errors.AsType[*RdataError](err); err != nil && !unread {
			return nil, fmt.Errorf("%w; over tcp: %w", udpErr, err)
		}
		p.metrics.done(p.addr, 0, udpErr) // TCP answered, but the upstream still misbehaved
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// streamExchange is miekg/dns's TCP exchange (Client.ExchangeContext, its
// errors for tcpError to type) but for the answer's parsing, which is
// UnpackAnswer's: an EDNS option dnsfence does not read is ignored
// whatever its data. One connection, q written and one answer read, within
// ctx's deadline. An answer that carries a TSIG is left to checkAnswer
// (miekg/dns's ReadMsg verified it, with no secret: dns.ErrSecret).
func (p *Plain) streamExchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	co, err := p.tcp.DialContext(ctx, p.addr)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = co.SetDeadline(deadline)
	}
	if err := co.WriteMsg(q); err != nil {
		return nil, err
	}
	raw, err := co.ReadMsgHeader(nil)
	if err != nil {
		return nil, err
	}
	resp, err := UnpackAnswer(raw)
	if err != nil {
		return nil, checkUnread(err, q.Id, q)
	}
	if resp.Id != q.Id {
		return nil, dns.ErrId
	}
	return resp, nil
}

// checkAnswer checks that resp answers q: a response, with q's ID, opcode
// (RFC 1035 §4.1.1: copied from the query into the response; an answer of
// another is no answer to a QUERY, and Unbound takes none) and question.
// A failure RCODE without a question section is accepted, to be told
// apart by its RCODE: some servers leave the question out of those (over
// TCP and the encrypted transports; a UDP datagram so is asked again over
// TCP, checkDatagram). An
// answer that carries a TSIG record is malformed: a TSIG signs the answer
// to a signed request (RFC 8945 §5.3), and no query dnsfence sends is
// signed, so it is no data of the answer; relayed, it failed every
// client's check of the answer, and cached it stayed for the answer's
// TTL (RFC 8945 §4: a meta-record, never cached). It is looked for in
// all three sections, over every transport.
//
// A SIG(0) (RFC 2931: a SIG record covering type 0, last in the
// additional section), which a server may add to any answer, is dropped
// from resp: it signs the message between the upstream and dnsfence,
// which then changes it (the ID, the OPT), so that relayed it could only
// fail the client's check, and it is never cached (§3.1). A SIG covering
// any other type is data (RFC 2535's DNSSEC), kept. A SIG(0) anywhere
// else (another section, or followed by a record) makes the answer
// malformed, as BIND's parser takes it (DNS_R_BADSIG0): relayed, a client
// reading with BIND's library could not read it.
func checkAnswer(resp, q *dns.Msg) error {
	if !resp.Response || resp.Id != q.Id || resp.Opcode != q.Opcode {
		return ErrAnswerMismatch
	}
	for s, sec := range [...][]dns.RR{resp.Answer, resp.Ns, resp.Extra} {
		for i, rr := range sec {
			if rr.Header().Rrtype == dns.TypeTSIG {
				return fmt.Errorf("%w: a TSIG record in the answer to an unsigned query", ErrAnswerMalformed)
			}
			if sig, ok := rr.(*dns.SIG); ok && sig.TypeCovered == 0 && (s != 2 || i != len(sec)-1) {
				return fmt.Errorf("%w: a SIG(0) record not last in the additional section", ErrAnswerMalformed)
			}
		}
	}
	if n := len(resp.Extra); n > 0 {
		if sig, ok := resp.Extra[n-1].(*dns.SIG); ok && sig.TypeCovered == 0 {
			resp.Extra = resp.Extra[:n-1]
		}
	}
	if len(resp.Question) == 0 && failureRcode(resp.Rcode) {
		return nil
	}
	if !sameQuestion(resp, q) {
		return ErrAnswerMismatch
	}
	return nil
}

// errQuestionlessDatagram is a UDP answer with a failure RCODE and no
// question section (checkDatagram): it names no query, so it is asked
// again over TCP, as an answer to another question is.
var errQuestionlessDatagram = fmt.Errorf("%w: a failure without a question section, over UDP", ErrAnswerMismatch)

// checkDatagram is checkAnswer for an answer that came as a UDP datagram,
// which an off-path sender can forge: one whose RCODE is a failure and
// that has no question section, which checkAnswer accepts, is
// errQuestionlessDatagram. Such a datagram matches a query by its ID
// alone (the source is the connected socket's), and a socket has up to
// socketMaxQueries queries waiting: each ID a spoofer guesses hits one
// of them with that many times the odds of hitting a given query, and
// taken, it ended the query with a failure, failed over, counted against
// the upstream's health, cached as every upstream's SERVFAIL for up to
// 5 s (RFC 9520) and relayed the spoofer's Extended DNS Errors to the
// client. RFC 5452 §9.1 takes an answer only when its ID, question and
// source match; DNSpooq (CVE-2020-25684, CVE-2020-25686) is dnsmasq
// matching replies by ID and port alone, and TuDoor (CVE-2023-29483) a
// resolver taking the first unverifiable response instead of waiting for
// the real one. Over TCP, which no off-path sender can write into, the
// upstream's own failure is taken as checkAnswer takes it.
func checkDatagram(resp, q *dns.Msg) error {
	if err := checkAnswer(resp, q); err != nil {
		return err
	}
	if len(resp.Question) == 0 {
		return errQuestionlessDatagram
	}
	return nil
}

// checkUnread checks an answer miekg/dns does not read (err, when it is
// an *RdataError), which came with the ID id to the query q, as
// checkAnswer checks a message: a response with the ID it was sent with,
// q's opcode and q's one question (the name compared in wire form,
// without regard to ASCII case, RFC 4343). It returns err, its answer then
// carrying q's ID, or an error wrapping ErrAnswerWrongID or
// ErrAnswerMismatch instead. Any other err is returned as it is.
func checkUnread(err error, id uint16, q *dns.Msg) error {
	var rd *RdataError
	if !errors.As(err, &rd) {
		return err
	}
	b, flags := rd.Raw, dnswire.Flags(rd.Raw)
	if got := dnswire.ID(b); got != id {
		return fmt.Errorf("%w: answer with ID %d to a query with ID %d", ErrAnswerWrongID, got, id)
	}
	if flags&dnswire.FlagQR == 0 || dnswire.Opcode(flags) != q.Opcode || len(q.Question) != 1 {
		return ErrAnswerMismatch
	}
	got, _ := dnswire.ReadQuestion(b) // read through by unpackMsg
	name, _, nerr := dns.UnpackDomainName(b, dnswire.HeaderLen)
	if nerr != nil || !sameQuestionWire(dns.Question{Name: name, Qtype: got.Type, Qclass: got.Class}, q.Question[0]) {
		return ErrAnswerMismatch
	}
	binary.BigEndian.PutUint16(b, q.Id)
	return err
}

// tcpError types an error of miekg/dns's TCP exchange: a wrong ID is
// ErrAnswerWrongID, an answer that does not parse ErrAnswerMalformed
// (UnpackAnswer's, as streamExchange returns it: not every error of
// miekg/dns's unpacking is a *dns.Error).
func tcpError(err error) error {
	var de *dns.Error
	switch {
	case errors.Is(err, ErrAnswerUnusable):
		return err
	case errors.Is(err, dns.ErrId):
		return fmt.Errorf("%w: %w", ErrAnswerWrongID, err)
	case errors.As(err, &de):
		return fmt.Errorf("%w: %w", ErrAnswerMalformed, err)
	}
	return err
}

// sameQuestion compares the answer's question with ours; names compare in
// wire form, case-insensitively (RFC 4343), whatever their presentation
// text.
func sameQuestion(resp, q *dns.Msg) bool {
	if len(resp.Question) != 1 {
		return false
	}
	a, b := resp.Question[0], q.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && blocklist.SameName(a.Name, b.Name)
}

// NewTransport returns the transport for one upstream as configured, by
// the form of addr (ParseAddress, DESIGN.md §8): "IP:port" is plain DNS
// (NewPlain); "tls://", "https://" and "quic://" are DNS over TLS, HTTPS and
// QUIC. It is the default of Options.NewTransport. The error is
// ParseAddress's for an address that does not parse.
func NewTransport(addr string, opts Options) (Transport, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if a.Kind == KindPlain {
		return NewPlain(a.HostPort(), opts), nil
	}
	return newEncrypted(a, opts)
}
