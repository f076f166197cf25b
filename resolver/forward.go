package resolver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
)

// Forwarder sends queries to the upstream resolvers in order, moving to the
// next one on a timeout, a network error, an unusable answer or an answer
// whose RCODE is SERVFAIL, REFUSED or NOTIMP. An upstream
// that fails is marked down and skipped while others are up; a background
// probe brings it back as soon as it answers again.
type Forwarder struct {
	addrs     []string // IP:port, in order of preference
	upstreams []*upstreamState
	timeout   time.Duration
	tcp       *dns.Client
	// probeEvery is the pause between probes of a down upstream.
	probeEvery time.Duration
	closed     atomic.Bool
	// lastOK is when any upstream last answered (unix nanoseconds).
	lastOK atomic.Int64
	// fastest orders healthy upstreams by latency instead of as configured.
	fastest bool
}

// upstreamState is the health, latency and sockets of one upstream.
type upstreamState struct {
	addr    string
	down    atomic.Bool  // failed its last exchange; skipped while others are up
	probing atomic.Bool  // a probe goroutine is running for it
	rtt     atomic.Int64 // smoothed round-trip time in ns; 0 until measured
	mux     *udpMux
}

// observe folds one round-trip time into the smoothed one (EWMA, 1/4).
func (u *upstreamState) observe(d time.Duration) {
	old := u.rtt.Load()
	if old == 0 {
		u.rtt.Store(int64(d))
		return
	}
	u.rtt.Store(old + (int64(d)-old)/4)
}

// NewForwarder returns a Forwarder over upstreams with a per-try timeout;
// fastest tries the healthy upstreams by latency instead of in order.
func NewForwarder(upstreams []string, timeout time.Duration, fastest bool) *Forwarder {
	f := &Forwarder{
		fastest:    fastest,
		addrs:      slices.Clone(upstreams),
		timeout:    timeout,
		tcp:        &dns.Client{Net: "tcp", Timeout: timeout},
		probeEvery: time.Second,
	}
	for _, u := range upstreams {
		f.upstreams = append(f.upstreams, &upstreamState{addr: u, mux: &udpMux{addr: u, timeout: timeout}})
	}
	return f
}

// Upstreams lists the upstream addresses in order.
func (f *Forwarder) Upstreams() []string { return slices.Clone(f.addrs) }

// Close stops the background probes and retires the upstream sockets; they
// close once the queries on them are answered.
func (f *Forwarder) Close() {
	f.closed.Store(true)
	for _, u := range f.upstreams {
		u.mux.close()
	}
}

// LastAnswer is when an upstream last answered; zero if none has.
func (f *Forwarder) LastAnswer() time.Time {
	if ns := f.lastOK.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Down lists the upstreams currently marked down.
func (f *Forwarder) Down() []string {
	var down []string
	for _, u := range f.upstreams {
		if u.down.Load() {
			down = append(down, u.addr)
		}
	}
	return down
}

// order is the upstreams to try: those up, then, only when every upstream
// is down, those down (so that a recovery is seen at once). With the
// fastest strategy the ones up are tried by smoothed round-trip time, those
// not measured yet first, in configured order; with ordered, in configured
// order.
func (f *Forwarder) order() []*upstreamState {
	if len(f.upstreams) == 1 || (!f.fastest && f.noneDown()) {
		return f.upstreams // read only
	}
	up := make([]*upstreamState, 0, len(f.upstreams))
	var down []*upstreamState
	for _, u := range f.upstreams {
		if u.down.Load() {
			down = append(down, u)
		} else {
			up = append(up, u)
		}
	}
	if len(up) == 0 {
		return down
	}
	if f.fastest && len(up) > 1 {
		slices.SortStableFunc(up, func(a, b *upstreamState) int {
			return cmp.Compare(a.rtt.Load(), b.rtt.Load())
		})
	}
	return up
}

func (f *Forwarder) noneDown() bool {
	for _, u := range f.upstreams {
		if u.down.Load() {
			return false
		}
	}
	return true
}

// markDown records a failed exchange and starts probing the upstream.
func (f *Forwarder) markDown(u *upstreamState) {
	u.down.Store(true)
	if f.closed.Load() || !u.probing.CompareAndSwap(false, true) {
		return
	}
	go f.probe(u)
}

func (f *Forwarder) markUp(u *upstreamState) {
	u.down.Store(false)
	f.lastOK.Store(time.Now().UnixNano())
}

// probe asks a down upstream for the root NS set until it answers usably
// (an RCODE other than SERVFAIL, REFUSED and NOTIMP, the rule queries
// follow) or the Forwarder is closed.
func (f *Forwarder) probe(u *upstreamState) {
	defer func() {
		u.probing.Store(false)
		// A failure between the last check and the line above found the
		// probe still running: look again so it is not left unprobed.
		if u.down.Load() && !f.closed.Load() && u.probing.CompareAndSwap(false, true) {
			go f.probe(u)
		}
	}()
	q := new(dns.Msg)
	q.SetQuestion(".", dns.TypeNS)
	q.SetEdns0(ednsSize, false)
	timer := time.NewTimer(f.probeEvery)
	defer timer.Stop()
	for !f.closed.Load() && u.down.Load() {
		<-timer.C
		q.Id = queryIDs.next()
		if _, err := f.exchange(context.Background(), q, u, false, nil); err == nil {
			f.markUp(u)
			return
		}
		timer.Reset(f.probeEvery)
	}
}

// Probe asks every upstream at once and reports whether any answered
// usably (as probe does); it
// backs the readiness check when no query has gone upstream lately. A hung
// upstream does not hide a working one.
func (f *Forwarder) Probe(ctx context.Context) error {
	errs := make(chan error, len(f.upstreams))
	for _, u := range f.upstreams {
		go func() {
			q := new(dns.Msg)
			q.SetQuestion(".", dns.TypeNS)
			q.SetEdns0(ednsSize, false)
			if _, err := f.exchange(ctx, q, u, false, nil); err != nil {
				errs <- fmt.Errorf("%s: %w", u.addr, err)
				return
			}
			f.markUp(u)
			errs <- nil
		}()
	}
	var all []error
	for range f.upstreams {
		if err := <-errs; err == nil {
			return nil
		} else {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// sameAs reports whether f already forwards to upstreams with timeout.
func (f *Forwarder) sameAs(upstreams []string, timeout time.Duration, fastest bool) bool {
	return f != nil && f.timeout == timeout && f.fastest == fastest && slices.Equal(f.addrs, upstreams)
}

// ErrAllUpstreamsFailed is returned when no upstream gave a usable answer.
var ErrAllUpstreamsFailed = errors.New("no upstream answered")

// Kinds of unusable upstream answer, for errors.Is. Each wraps
// ErrAnswerUnusable. An answer for another question, one that does not
// parse, or one too big for the UDP receive buffer ends the wait for it at
// once and the query is asked again over TCP: a datagram is never accepted
// unless its ID, question and source match (RFC 5452 §9.1), and over TCP an
// off-path sender cannot inject one. A datagram with an ID never sent on the
// socket is dropped and the query waits on for its own answer (a spoofer
// cannot end the wait); if none comes, its timeout error is also
// ErrAnswerWrongID, and so counted: the upstream did send something.
var (
	ErrAnswerUnusable  = errors.New("upstream answer unusable")
	ErrAnswerTooBig    = fmt.Errorf("%w: too big for UDP", ErrAnswerUnusable)
	ErrAnswerMalformed = fmt.Errorf("%w: malformed", ErrAnswerUnusable)
	ErrAnswerMismatch  = fmt.Errorf("%w: not for the question asked", ErrAnswerUnusable)
	ErrAnswerWrongID   = fmt.Errorf("%w: query ID never sent", ErrAnswerUnusable)
)

// RcodeError is an upstream answer whose RCODE says the upstream could not
// answer: SERVFAIL, REFUSED or NOTIMP. That upstream counts as failing and
// the next one is asked, as Unbound does with its forwarders.
type RcodeError struct {
	Rcode  int
	Answer *dns.Msg // the upstream's answer, as received
}

func (e *RcodeError) Error() string { return "answered " + dns.RcodeToString[e.Rcode] }

// failureRcode reports whether an upstream answering rcode could not
// answer: a client gets nothing from it that another upstream could not do
// better.
func failureRcode(rcode int) bool {
	return rcode == dns.RcodeServerFailure || rcode == dns.RcodeRefused || rcode == dns.RcodeNotImplemented
}

// Upstream error kinds as counted and logged: the `kind` label of
// dnsfence_upstream_errors_total.
const (
	kindTimeout   = "timeout"
	kindNetwork   = "network"
	kindTooBig    = "too_big"
	kindMalformed = "malformed"
	kindMismatch  = "mismatch"
	kindWrongID   = "wrong_id"
)

// upstreamErrorKinds is every kind errorKind returns, for series that exist
// from the start.
var upstreamErrorKinds = []string{"rcode_servfail", "rcode_refused", "rcode_notimp",
	kindTooBig, kindMalformed, kindMismatch, kindWrongID, kindTimeout, kindNetwork}

// errorKind names the cause of a failed upstream exchange: rcode_servfail,
// rcode_refused, rcode_notimp, too_big, malformed, mismatch, wrong_id,
// timeout or network. An unusable answer names the exchange even when the
// retry over TCP then timed out: an answer came.
func errorKind(err error) string {
	var re *RcodeError
	switch {
	case errors.As(err, &re):
		return "rcode_" + strings.ToLower(dns.RcodeToString[re.Rcode])
	case errors.Is(err, ErrAnswerTooBig):
		return kindTooBig
	case errors.Is(err, ErrAnswerMalformed):
		return kindMalformed
	case errors.Is(err, ErrAnswerMismatch):
		return kindMismatch
	case errors.Is(err, ErrAnswerWrongID):
		return kindWrongID
	case isTimeout(err):
		return kindTimeout
	}
	return kindNetwork
}

// UpstreamError reports why every upstream failed.
type UpstreamError struct {
	Errs    []error
	Timeout bool // every failure was a timeout: no upstream reachable
	// Answer is the last upstream answer whose RCODE was SERVFAIL, REFUSED
	// or NOTIMP; nil when no upstream answered so.
	Answer *dns.Msg
	kinds  []string // errorKind of each of Errs
}

func (e *UpstreamError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("%v: %s", ErrAllUpstreamsFailed, strings.Join(msgs, "; "))
}

func (e *UpstreamError) Unwrap() error { return ErrAllUpstreamsFailed }

// Causes is the distinct error kinds of the failures (see errorKind), in
// the order the upstreams were tried, joined by commas: for the log line.
func (e *UpstreamError) Causes() string {
	var distinct []string
	for _, k := range e.kinds {
		if !slices.Contains(distinct, k) {
			distinct = append(distinct, k)
		}
	}
	return strings.Join(distinct, ",")
}

// allServfail reports whether every upstream answered SERVFAIL: a
// resolution failure that may be cached briefly (RFC 9520).
func (e *UpstreamError) allServfail() bool {
	for _, k := range e.kinds {
		if k != "rcode_servfail" {
			return false
		}
	}
	return len(e.kinds) > 0
}

// EDE is the Extended DNS Error (RFC 8914) for the client: 22 "No
// Reachable Authority" when every upstream timed out or answered with a
// failure RCODE (§4.23: "could not reach ... or they potentially refused
// to reply"), else 23 "Network Error". The text is "no upstream answered
// in time" when every try timed out; else it names each cause once, in the
// order the upstreams were tried, joined by "; ": "upstream did not answer
// in time", "upstream answered SERVFAIL" (REFUSED, NOTIMP), "upstream
// answer unusable: too big for UDP" (malformed, not for the question
// asked, query ID never sent), "upstream unreachable: network error".
func (e *UpstreamError) EDE() (uint16, string) {
	code := uint16(dns.ExtendedErrorCodeNoReachableAuthority)
	const timedOut = "upstream did not answer in time"
	var texts []string
	for i, k := range e.kinds {
		var text string
		switch {
		case k == kindTimeout:
			text = timedOut
		case strings.HasPrefix(k, "rcode_"):
			text = "upstream answered " + strings.ToUpper(strings.TrimPrefix(k, "rcode_"))
		case k == kindNetwork:
			code = dns.ExtendedErrorCodeNetworkError
			text = "upstream unreachable: network error"
		default:
			code = dns.ExtendedErrorCodeNetworkError
			text = unusableText(e.Errs[i])
		}
		if !slices.Contains(texts, text) {
			texts = append(texts, text)
		}
	}
	if len(texts) == 1 && texts[0] == timedOut {
		return code, "no upstream answered in time"
	}
	return code, strings.Join(texts, "; ")
}

// unusableText is the ErrAnswerUnusable kind err wraps, as text.
func unusableText(err error) string {
	for _, kind := range []error{ErrAnswerTooBig, ErrAnswerMalformed, ErrAnswerMismatch, ErrAnswerWrongID} {
		if errors.Is(err, kind) {
			return kind.Error()
		}
	}
	return ErrAnswerUnusable.Error()
}

// upstreamQuery is the query sent upstream for req: a fresh ID, the
// question and the RD and CD bits of the client, AD set (RFC 6840 §5.7: so
// that the upstream says whether it validated the data, which the cache then
// keeps for every later client; replyHeader passes it on only to clients
// that set AD or DO), and our own EDNS (buffer ednsSize, the client's DO
// bit) with none of the client's options: Client Subnet, cookies and padding
// belong to the client's hop, not to ours.
func upstreamQuery(req *dns.Msg) *dns.Msg {
	q := new(dns.Msg)
	q.Id = queryIDs.next()
	q.Opcode = dns.OpcodeQuery
	q.RecursionDesired = req.RecursionDesired
	q.CheckingDisabled = req.CheckingDisabled
	q.AuthenticatedData = true
	q.Question = []dns.Question{req.Question[0]}
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	q.SetEdns0(ednsSize, do)
	return q
}

// Forward asks the upstreams for req. overTCP sends over TCP from the
// start, as for a query that came in on TCP. It returns the raw upstream
// answer (with the upstream's ID) and which upstream gave it. An upstream
// that times out, cannot be reached, gives an unusable answer or answers
// SERVFAIL, REFUSED or NOTIMP is marked down and the next is asked; when
// none is left the error is an *UpstreamError.
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg, overTCP bool, m *Metrics) (*dns.Msg, string, error) {
	q := upstreamQuery(req)
	uerr := &UpstreamError{Timeout: true}
	for _, up := range f.order() {
		start := time.Now()
		resp, err := f.exchange(ctx, q, up, overTCP, m)
		took := time.Since(start)
		m.upstreamDone(up.addr, took, err)
		if err == nil {
			up.observe(took)
			f.markUp(up)
			return resp, up.addr, nil
		}
		f.markDown(up)
		kind := errorKind(err)
		uerr.Errs = append(uerr.Errs, fmt.Errorf("%s: %w", up.addr, err))
		uerr.kinds = append(uerr.kinds, kind)
		if kind != kindTimeout {
			uerr.Timeout = false
		}
		var re *RcodeError
		if errors.As(err, &re) {
			uerr.Answer = re.Answer
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", uerr
}

// exchange is one try against one upstream: over UDP, and over TCP at once
// when the UDP answer is truncated (TC) or unusable (too big for our
// buffer, malformed, or for another question; the UDP cause is counted in
// m, which may be nil). An answer whose RCODE is SERVFAIL, REFUSED or
// NOTIMP is an *RcodeError, for the probes as for queries: an upstream that
// refuses everything stays down.
func (f *Forwarder) exchange(ctx context.Context, q *dns.Msg, u *upstreamState, overTCP bool, m *Metrics) (*dns.Msg, error) {
	var resp *dns.Msg
	var err, udpErr error
	if !overTCP {
		resp, err = u.mux.exchange(ctx, q) // the mux keeps the timeout
		if err == nil {
			err = checkAnswer(resp, q)
		}
		if errors.Is(err, ErrAnswerUnusable) && !isTimeout(err) {
			udpErr = err // the wait ended at once: ask again over TCP
		} else if err != nil {
			return nil, err
		}
	}
	if overTCP || udpErr != nil || resp.Truncated {
		tctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		resp, _, err = f.tcp.ExchangeContext(tctx, q, u.addr)
		if err != nil {
			err = tcpError(err)
		} else {
			err = checkAnswer(resp, q)
		}
		if udpErr != nil {
			if err != nil {
				return nil, fmt.Errorf("%w; over tcp: %w", udpErr, err)
			}
			m.upstreamDone(u.addr, 0, udpErr) // recovered, but the upstream still misbehaved
		}
		if err != nil {
			return nil, err
		}
	}
	if failureRcode(resp.Rcode) {
		return nil, &RcodeError{Rcode: resp.Rcode, Answer: resp}
	}
	return resp, nil
}

// checkAnswer checks that resp answers q: a response, with q's ID and
// question. A failure RCODE without a question section is accepted, to be
// told apart by its RCODE: some servers leave the question out of those.
func checkAnswer(resp, q *dns.Msg) error {
	if !resp.Response || resp.Id != q.Id {
		return ErrAnswerMismatch
	}
	if len(resp.Question) == 0 && failureRcode(resp.Rcode) {
		return nil
	}
	if !sameQuestion(resp, q) {
		return ErrAnswerMismatch
	}
	return nil
}

// tcpError types an error of miekg/dns's TCP exchange: a wrong ID is
// ErrAnswerWrongID, an answer that does not parse ErrAnswerMalformed.
func tcpError(err error) error {
	var de *dns.Error
	switch {
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

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
