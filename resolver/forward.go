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
// next one on a timeout, a network error or a malformed answer. An upstream
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

// probe asks a down upstream for the root NS set until it answers (with
// any rcode: it is reachable) or the Forwarder is closed.
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
		if _, err := f.exchange(context.Background(), q, u, false); err == nil {
			f.markUp(u)
			return
		}
		timer.Reset(f.probeEvery)
	}
}

// Probe asks every upstream at once and reports whether any answered; it
// backs the readiness check when no query has gone upstream lately. A hung
// upstream does not hide a working one.
func (f *Forwarder) Probe(ctx context.Context) error {
	errs := make(chan error, len(f.upstreams))
	for _, u := range f.upstreams {
		go func() {
			q := new(dns.Msg)
			q.SetQuestion(".", dns.TypeNS)
			q.SetEdns0(ednsSize, false)
			if _, err := f.exchange(ctx, q, u, false); err != nil {
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

// errMismatch marks an answer that is not for the question asked.
var errMismatch = errors.New("answer does not match the question")

// UpstreamError reports why every upstream failed.
type UpstreamError struct {
	Errs    []error
	Timeout bool // every failure was a timeout: no upstream reachable
}

func (e *UpstreamError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("%v: %s", ErrAllUpstreamsFailed, strings.Join(msgs, "; "))
}

func (e *UpstreamError) Unwrap() error { return ErrAllUpstreamsFailed }

// upstreamQuery is the query sent upstream for req: a fresh ID, the
// question and the RD, CD and AD bits of the client, and our own EDNS (buffer
// ednsSize, the client's DO bit) with none of the client's options: Client
// Subnet, cookies and padding belong to the client's hop, not to ours.
func upstreamQuery(req *dns.Msg) *dns.Msg {
	q := new(dns.Msg)
	q.Id = queryIDs.next()
	q.Opcode = dns.OpcodeQuery
	q.RecursionDesired = req.RecursionDesired
	q.CheckingDisabled = req.CheckingDisabled
	q.AuthenticatedData = req.AuthenticatedData
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
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg, overTCP bool, m *Metrics) (*dns.Msg, string, error) {
	q := upstreamQuery(req)
	uerr := &UpstreamError{Timeout: true}
	for _, up := range f.order() {
		start := time.Now()
		resp, err := f.exchange(ctx, q, up, overTCP)
		took := time.Since(start)
		m.upstreamDone(up.addr, took, err)
		if err == nil {
			up.observe(took)
			f.markUp(up)
			return resp, up.addr, nil
		}
		f.markDown(up)
		uerr.Errs = append(uerr.Errs, fmt.Errorf("%s: %w", up.addr, err))
		if !isTimeout(err) {
			uerr.Timeout = false
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", uerr
}

// exchange is one try against one upstream, with the retry over TCP of a
// truncated UDP answer.
func (f *Forwarder) exchange(ctx context.Context, q *dns.Msg, u *upstreamState, overTCP bool) (*dns.Msg, error) {
	var resp *dns.Msg
	var err error
	if !overTCP {
		resp, err = u.mux.exchange(ctx, q) // the mux keeps the timeout
	}
	if overTCP || (err == nil && resp.Truncated) {
		tctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		resp, _, err = f.tcp.ExchangeContext(tctx, q, u.addr)
	}
	if err != nil {
		return nil, err
	}
	if !resp.Response || resp.Id != q.Id || !sameQuestion(resp, q) {
		return nil, errMismatch
	}
	return resp, nil
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
