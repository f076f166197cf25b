package resolver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
)

// Forwarder sends queries to the upstream resolvers, those up first, by
// the strategy's order. A try that is slow (past hedgeDelay) is joined by a
// try to the next upstream, and a try that fails (a timeout, a network
// error, an unusable answer, or an answer whose RCODE is SERVFAIL, REFUSED
// or NOTIMP) is followed at once by the next; the first usable answer wins.
// Tries beyond a query's first are bounded per upstream (takeRetry), so
// that a burst of failures on one upstream does not flood the next.
//
// Health comes from each upstream's last healthWindow exchanges: an
// upstream is down when more than half of them failed, and a down upstream
// is skipped while others are up, and probed in the background until it
// answers usably again. When every upstream is down, all are tried, the
// ones with the fewest recent failures first, then by round-trip time.
type Forwarder struct {
	addrs     []string // IP:port, in order of preference
	upstreams []*upstreamState
	timeout   time.Duration
	tcp       *dns.Client
	// probeEvery is the pause between probes of a down upstream.
	probeEvery time.Duration
	closed     atomic.Bool
	// started is set by the first query or readiness probe, which starts
	// the background probes (start).
	started atomic.Bool
	// inflight counts the Forward calls under way, for the retry budget.
	inflight atomic.Int64
	// lastOK is when any upstream last answered (unix nanoseconds).
	lastOK atomic.Int64
	// fastest orders healthy upstreams by latency instead of as configured.
	fastest bool
}

// Health and retry parameters.
const (
	// healthWindow is how many of an upstream's latest exchanges (queries
	// and probes) its health is judged by: down when more than half of
	// them failed. One lost datagram among many answers is not a failed
	// upstream; a first exchange that fails is (one failure of one).
	healthWindow = 32
	// hedgeFloor is the least wait before a slow try is joined by a try to
	// the next upstream: above loopback and LAN jitter, below what a
	// client notices. The wait is twice the upstream's smoothed RTT when
	// that is longer, up to a quarter of the upstream timeout (see
	// hedgeDelay).
	hedgeFloor = 150 * time.Millisecond
	// retryFloor and retryShare bound the tries beyond a query's first (a
	// hedge, or a failover after a failure) that may be in flight to one
	// upstream at once: a fifth of the queries in flight, and never fewer
	// than retryFloor (Envoy's retry budget is 20 %, at least 3).
	retryFloor = 16
	retryShare = 5
	// exploreMax bounds the wait of the first probe of an upstream not yet
	// measured (never over the upstream timeout).
	exploreMax = time.Second
)

// upstreamState is the health, latency and sockets of one upstream.
type upstreamState struct {
	addr    string
	down    atomic.Bool  // failed over half its recent exchanges; skipped while others are up
	probing atomic.Bool  // a probe goroutine is running for it
	rtt     atomic.Int64 // smoothed round-trip time in ns; 0 until measured
	health  healthWindowBits
	// retries is the tries beyond their query's first in flight to it.
	retries atomic.Int64
	mux     *udpMux
}

// healthWindowBits is the outcome of an upstream's last healthWindow
// exchanges, one bit each (1: failed), newest lowest, in the low 32 bits,
// and how many bits are filled in the high ones: one word, so that an
// outcome is recorded with one compare-and-swap and no lock.
type healthWindowBits struct{ w atomic.Uint64 }

// record adds one outcome and returns the failures and exchanges in the
// window.
func (h *healthWindowBits) record(failed bool) (fails, n int) {
	for {
		old := h.w.Load()
		b, cnt := uint32(old)<<1, min(old>>32+1, healthWindow)
		if failed {
			b |= 1
		}
		b &= uint32(1<<cnt - 1)
		// A full window of successes stays as it is: no write, so the
		// cores answering through this upstream do not contend for it.
		if nw := cnt<<32 | uint64(b); nw == old || h.w.CompareAndSwap(old, nw) {
			return bits.OnesCount32(b), int(cnt)
		}
	}
}

// reset forgets every outcome but one success: an upstream back up starts
// afresh.
func (h *healthWindowBits) reset() { h.w.Store(1 << 32) }

// failureRatio is the share of failed exchanges in the window; one half
// when there are none.
func (h *healthWindowBits) failureRatio() float64 {
	w := h.w.Load()
	if w>>32 == 0 {
		return 0.5
	}
	return float64(bits.OnesCount32(uint32(w))) / float64(w>>32)
}

// observe folds one round-trip time into the smoothed one (EWMA, 1/4).
func (u *upstreamState) observe(d time.Duration) {
	old := u.rtt.Load()
	if old == 0 {
		u.rtt.Store(max(int64(d), 1))
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

// inherit takes over what prev learnt of the upstreams both forward to
// (round-trip time, recent outcomes, down or up), so that a reload that
// changes the upstreams explores only the new ones. Call it before f is
// used.
func (f *Forwarder) inherit(prev *Forwarder) {
	if prev == nil {
		return
	}
	for _, u := range f.upstreams {
		for _, p := range prev.upstreams {
			if p.addr == u.addr {
				u.rtt.Store(p.rtt.Load())
				u.health.w.Store(p.health.w.Load())
				u.down.Store(p.down.Load())
			}
		}
	}
}

// start runs once, at the first query or readiness probe (not when the
// Forwarder is built: a configuration that `check` loads, or a reload that
// fails, sends nothing): with more than one upstream it probes each not
// yet measured, with a short timeout, so that no client query is the first
// to find a dead one; and it resumes the probes of those down.
func (f *Forwarder) start() {
	if f.started.Load() || !f.started.CompareAndSwap(false, true) {
		return
	}
	for _, u := range f.upstreams {
		switch {
		case u.down.Load():
			f.markDown(u)
		case len(f.upstreams) > 1 && u.rtt.Load() == 0:
			go f.explore(u)
		}
	}
}

// explore probes an upstream not yet measured, waiting min(upstream
// timeout, exploreMax) for the answer: its round-trip time on success, a
// failure (and so down) otherwise.
func (f *Forwarder) explore(u *upstreamState) {
	ctx, cancel := context.WithTimeout(context.Background(), min(f.timeout, exploreMax))
	defer cancel()
	start := time.Now()
	if _, err := f.exchange(ctx, probeQuery(), u, false, nil); err != nil {
		f.failed(u)
		return
	}
	f.succeeded(u, time.Since(start))
}

// probeQuery is the question the probes ask: the root NS set, which any
// recursive resolver has cached.
func probeQuery() *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(".", dns.TypeNS)
	q.SetEdns0(ednsSize, false)
	q.Id = queryIDs.next()
	return q
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

// order is the upstreams to try: those up; only when every upstream is
// down, all of them, the fewest recent failures first, then by smoothed
// round-trip time (never merely as configured: the one that answered last
// is tried before one that never did). With the fastest strategy the ones
// up are tried by smoothed round-trip time, those not measured yet last,
// in configured order; with ordered, in configured order.
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
		slices.SortStableFunc(down, func(a, b *upstreamState) int {
			if c := cmp.Compare(a.health.failureRatio(), b.health.failureRatio()); c != 0 {
				return c
			}
			return byRTT(a, b)
		})
		return down
	}
	if f.fastest && len(up) > 1 {
		slices.SortStableFunc(up, byRTT)
	}
	return up
}

// byRTT orders upstreams by smoothed round-trip time, those not measured
// last.
func byRTT(a, b *upstreamState) int {
	ra, rb := a.rtt.Load(), b.rtt.Load()
	switch {
	case ra == rb:
		return 0
	case ra == 0:
		return 1
	case rb == 0:
		return -1
	}
	return cmp.Compare(ra, rb)
}

func (f *Forwarder) noneDown() bool {
	for _, u := range f.upstreams {
		if u.down.Load() {
			return false
		}
	}
	return true
}

// succeeded records a usable answer from u after took: its round-trip
// time, and, if u was down, that it is up again with its window cleared.
func (f *Forwarder) succeeded(u *upstreamState, took time.Duration) {
	u.observe(took)
	if u.down.Load() {
		u.health.reset()
		u.down.Store(false)
	} else {
		u.health.record(false)
	}
	f.lastOK.Store(time.Now().UnixNano())
}

// failed records a failed exchange with u, and marks it down when more
// than half of its window failed.
func (f *Forwarder) failed(u *upstreamState) {
	if fails, n := u.health.record(true); fails*2 > n {
		f.markDown(u)
	}
}

// markDown marks u down and starts probing it.
func (f *Forwarder) markDown(u *upstreamState) {
	u.down.Store(true)
	if f.closed.Load() || !u.probing.CompareAndSwap(false, true) {
		return
	}
	go f.probe(u)
}

// probe asks a down upstream for the root NS set every probeEvery until it
// answers usably (an RCODE other than SERVFAIL, REFUSED and NOTIMP, the
// rule queries follow) or the Forwarder is closed; each failure is
// recorded in its window, which orders the upstreams when all are down.
func (f *Forwarder) probe(u *upstreamState) {
	defer func() {
		u.probing.Store(false)
		// A failure between the last check and the line above found the
		// probe still running: look again so it is not left unprobed.
		if u.down.Load() && !f.closed.Load() && u.probing.CompareAndSwap(false, true) {
			go f.probe(u)
		}
	}()
	timer := time.NewTimer(f.probeEvery)
	defer timer.Stop()
	for !f.closed.Load() && u.down.Load() {
		<-timer.C
		start := time.Now()
		if _, err := f.exchange(context.Background(), probeQuery(), u, false, nil); err == nil {
			f.succeeded(u, time.Since(start))
			return
		}
		u.health.record(true)
		timer.Reset(f.probeEvery)
	}
}

// Probe asks every upstream at once and reports whether any answered
// usably (as probe does); it
// backs the readiness check when no query has gone upstream lately. A hung
// upstream does not hide a working one.
func (f *Forwarder) Probe(ctx context.Context) error {
	f.start()
	errs := make(chan error, len(f.upstreams))
	for _, u := range f.upstreams {
		go func() {
			start := time.Now()
			if _, err := f.exchange(ctx, probeQuery(), u, false, nil); err != nil {
				errs <- fmt.Errorf("%s: %w", u.addr, err)
				return
			}
			f.succeeded(u, time.Since(start))
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
	kindServfail  = "rcode_servfail"
	kindRefused   = "rcode_refused"
	kindNotimp    = "rcode_notimp"
)

// upstreamErrorKinds is every kind errorKind returns, for series that exist
// from the start.
var upstreamErrorKinds = []string{kindServfail, kindRefused, kindNotimp,
	kindTooBig, kindMalformed, kindMismatch, kindWrongID, kindTimeout, kindNetwork}

// errorKind names the cause of a failed upstream exchange: rcode_servfail,
// rcode_refused, rcode_notimp, too_big, malformed, mismatch, wrong_id,
// timeout or network. An unusable answer names the exchange even when the
// retry over TCP then timed out: an answer came.
func errorKind(err error) string {
	var re *RcodeError
	switch {
	case errors.As(err, &re):
		switch re.Rcode {
		case dns.RcodeServerFailure:
			return kindServfail
		case dns.RcodeRefused:
			return kindRefused
		case dns.RcodeNotImplemented:
			return kindNotimp
		}
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
	Answer    *dns.Msg
	kinds     []string // errorKind of each of Errs
	upstreams []string // the upstream of each of Errs
}

// add records the failure err of a try to upstream.
func (e *UpstreamError) add(upstream string, err error) {
	kind := errorKind(err)
	e.Errs = append(e.Errs, fmt.Errorf("%s: %w", upstream, err))
	e.kinds = append(e.kinds, kind)
	e.upstreams = append(e.upstreams, upstream)
	if kind != kindTimeout {
		e.Timeout = false
	}
	var re *RcodeError
	if errors.As(err, &re) {
		e.Answer = re.Answer
	}
}

// Upstreams is the distinct upstreams that failed, sorted: what the
// failure is about, for a log line.
func (e *UpstreamError) Upstreams() []string {
	out := slices.Clone(e.upstreams)
	slices.Sort(out)
	return slices.Compact(out)
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
		if k != kindServfail {
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
	timedOut := kindTexts[kindTimeout]
	var texts []string
	for _, k := range e.kinds {
		text, ok := kindTexts[k]
		switch {
		case !ok:
			code = dns.ExtendedErrorCodeNetworkError
			text = ErrAnswerUnusable.Error()
		case k != kindTimeout && !strings.HasPrefix(k, "rcode_"):
			code = dns.ExtendedErrorCodeNetworkError
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

// kindTexts is the EDE text of each errorKind.
var kindTexts = map[string]string{
	kindTimeout:   "upstream did not answer in time",
	kindNetwork:   "upstream unreachable: network error",
	kindServfail:  "upstream answered SERVFAIL",
	kindRefused:   "upstream answered REFUSED",
	kindNotimp:    "upstream answered NOTIMP",
	kindTooBig:    ErrAnswerTooBig.Error(),
	kindMalformed: ErrAnswerMalformed.Error(),
	kindMismatch:  ErrAnswerMismatch.Error(),
	kindWrongID:   ErrAnswerWrongID.Error(),
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
// answer (with the upstream's ID) and which upstream gave it.
//
// The upstreams are tried in order (see order). A try not answered within
// hedgeDelay of its upstream is joined by a try to the next upstream (a
// hedge: the first stays in flight, until its own timeout or an answer);
// a try that fails (it times out, cannot reach its upstream, gets an
// unusable answer or one whose RCODE is SERVFAIL, REFUSED or NOTIMP) is
// followed at once by the next. The first usable answer is returned; the
// tries still in flight run on in the background to their own end, and
// are counted by what actually happened to them: a hedged try that loses
// the race is no failure of its upstream unless it times out or fails.
// Every try after the first needs room in its upstream's retry budget
// (takeRetry); a query that finds none waits for room, looking again every
// hedge delay, but gives up once it has taken as long as a full timeout
// on every upstream in turn would. When every try failed the error is an
// *UpstreamError listing them in the order they were sent.
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg, overTCP bool, m *Metrics) (*dns.Msg, string, error) {
	order := f.order()
	f.start() // after order: the first query is not raced by the first probes
	if len(order) == 1 {
		// No second upstream to hedge with: the try runs here.
		up := order[0]
		resp, err := f.try(ctx, upstreamQuery(req), up, overTCP, m)
		if err == nil {
			return resp, up.addr, nil
		}
		uerr := &UpstreamError{Timeout: true}
		uerr.add(up.addr, err)
		return nil, "", uerr
	}
	f.inflight.Add(1)
	defer f.inflight.Add(-1)

	type result struct {
		i    int // the try's place in order
		resp *dns.Msg
		err  error
	}
	// Buffered for every try, so that those still in flight when the
	// query returns finish without a reader.
	results := make(chan result, len(order))
	errs := make([]error, len(order))
	sent, pending := 0, 0
	// send starts the next try; a retry (any try but the first) only if
	// its upstream's budget has room.
	send := func(reason string) bool {
		up := order[sent]
		if reason != "" {
			if !f.takeRetry(up) {
				m.upstreamRetry(up.addr, retryThrottled)
				return false
			}
			m.upstreamRetry(up.addr, reason)
		}
		i := sent
		sent++
		pending++
		// Its own message: a try sets the ID it is sent with, and packing
		// writes the OPT record.
		tq := upstreamQuery(req)
		go func() {
			resp, err := f.try(ctx, tq, up, overTCP, m)
			if reason != "" {
				up.retries.Add(-1)
			}
			results <- result{i, resp, err}
		}()
		return true
	}
	send("")
	// A query that finds its next upstream's budget full waits for room,
	// but never longer than trying each upstream in turn for its whole
	// timeout would take.
	giveUp := time.Now().Add(time.Duration(len(order)) * f.timeout)
	hedge := time.NewTimer(f.hedgeDelay(order[0]))
	defer hedge.Stop()
	for {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				return r.resp, order[r.i].addr, nil
			}
			errs[r.i] = r.err
			if sent < len(order) && ctx.Err() == nil && (send(retryFailover) || time.Now().Before(giveUp)) {
				hedge.Reset(f.hedgeDelay(order[sent-1])) // the next hedge, or another look at the budget
				continue
			}
		case <-hedge.C:
			if sent == len(order) || ctx.Err() != nil {
				break
			}
			reason := retryHedge
			if pending == 0 {
				reason = retryFailover // every try so far failed; the budget was full
			}
			if send(reason) || time.Now().Before(giveUp) {
				hedge.Reset(f.hedgeDelay(order[sent-1]))
				continue
			}
		}
		if pending == 0 {
			uerr := &UpstreamError{Timeout: true}
			for i, err := range errs[:sent] {
				uerr.add(order[i].addr, err)
			}
			return nil, "", uerr
		}
	}
}

// Why a try beyond a query's first was sent, or not: the `reason` label
// of dnsfence_upstream_retries_total.
const (
	retryHedge     = "hedge"     // the try before it was slow
	retryFailover  = "failover"  // the try before it failed
	retryThrottled = "throttled" // not sent: the upstream's retry budget was full
)

// try is one exchange with up, counted in m and recorded in up's health:
// a usable answer is a success, any error a failure, except when ctx ended
// it (the caller gave up: that says nothing of the upstream).
func (f *Forwarder) try(ctx context.Context, q *dns.Msg, up *upstreamState, overTCP bool, m *Metrics) (*dns.Msg, error) {
	start := time.Now()
	resp, err := f.exchange(ctx, q, up, overTCP, m)
	took := time.Since(start)
	m.upstreamDone(up.addr, took, err)
	switch {
	case err == nil:
		f.succeeded(up, took)
	case ctx.Err() == nil:
		f.failed(up)
	}
	return resp, err
}

// hedgeDelay is how long a try to u may go unanswered before the next
// upstream is asked too: twice u's smoothed round-trip time, at least
// hedgeFloor (u not measured yet: hedgeFloor), at most a quarter of the
// timeout (hedgeFloor when that is less), and never over half of it.
func (f *Forwarder) hedgeDelay(u *upstreamState) time.Duration {
	return min(max(2*time.Duration(u.rtt.Load()), hedgeFloor), max(f.timeout/4, hedgeFloor), f.timeout/2)
}

// takeRetry takes room for one more try beyond its query's first to u, if
// fewer than max(retryFloor, queries in flight / retryShare) are in flight
// to it; the caller gives it back (u.retries.Add(-1)) when the try ends.
// It keeps a burst of failures on one upstream (a thousand queries timing
// out together) from landing on the next all at once.
func (f *Forwarder) takeRetry(u *upstreamState) bool {
	limit := max(retryFloor, f.inflight.Load()/retryShare)
	if u.retries.Add(1) > limit {
		u.retries.Add(-1)
		return false
	}
	return true
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
