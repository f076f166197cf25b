package upstream

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Forwarder sends queries to the upstream resolvers, those up first, by
// the strategy's order. A try that is slow (past hedgeDelay) is joined by a
// try to the next upstream, and a try that fails (a timeout, a network
// error, an unusable answer, or an answer whose RCODE is SERVFAIL, REFUSED,
// NOTIMP, FORMERR, BADVERS, BADCOOKIE or another RCODE no query is
// answered with: failureRcode) is followed at once by the
// next; the first usable answer wins.
// Tries beyond a query's first are bounded per upstream (takeRetry), so
// that a burst of failures on one upstream does not flood the next.
//
// Health comes from each upstream's last healthWindow exchanges: an
// upstream is down when more than half of them failed, and a down upstream
// is skipped while others are up, and probed in the background until it
// answers usably again. When every upstream is down, all are tried, the
// ones with the fewest recent failures first, then by round-trip time.
//
// The upstreams are Transports (plain DNS, and the encrypted kinds), each
// made by Options.NewTransport: health, failover and the strategy are the
// same for all. A Forwarder is retired (Retire, Close) when a reload
// replaces it; its transports close once the exchanges under way on them
// end.
type Forwarder struct {
	addrs     []string // as configured, in order of preference
	upstreams []*upstreamState
	timeout   time.Duration // one exchange with one upstream
	metrics   *Metrics      // nil: not counted
	// probeEvery is the pause between probes of a down upstream.
	probeEvery time.Duration
	// flapWindow and flapLogEvery damp the log of a flapping upstream
	// (logDown): flapWindow, flapLogEvery by default.
	flapWindow, flapLogEvery time.Duration
	// closed is set by Retire: no more probes, and Forward and Probe go to
	// the successor.
	closed atomic.Bool
	// successor takes the queries that reach f once it is retired; nil:
	// they fail (net.ErrClosed). Set before closed.
	successor atomic.Pointer[Forwarder]
	// refs counts the exchanges that may still use the transports: Forward
	// and Probe calls, the tries they leave running, probes. The last to
	// end after Retire closes the transports (closeTransports).
	refs      atomic.Int64
	closeOnce sync.Once
	// started is set by the first query or readiness probe, which starts
	// the background probes (start).
	started atomic.Bool
	// inflight counts the queries under way that may hedge or fail over
	// (Forward and ForwardWire with more than one upstream, and a started
	// query's hedgedWire until it ends), for the retry budget; the caller
	// of forwardHedged counts its query.
	inflight atomic.Int64
	// lastOK is when any upstream last answered (clockReading; 0: none).
	lastOK atomic.Int64
	// fastest orders healthy upstreams by latency instead of as configured.
	fastest bool
	// check is the question every probe of an upstream's health asks
	// (Options.HealthCheck; probeQuery).
	check HealthCheck
	// roots verified the encrypted upstreams' certificates (Options.RootCAs).
	roots *x509.CertPool
	log   *zap.Logger // an upstream marked down or back up (Options.Log)
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
	// flapWindow: an upstream marked down again less than this after its
	// probe found it back up is flapping (logDown).
	flapWindow = 10 * time.Second
	// flapLogEvery: a flapping upstream is logged once in this long.
	flapLogEvery = time.Minute
)

// upstreamState is the health, latency and transport of one upstream.
type upstreamState struct {
	addr    string
	t       Transport
	tcp     TCPExchanger  // t's, when it has one: for queries that came over TCP
	wire    wireExchanger // t's, when it has one: for queries forwarded in wire form
	down    atomic.Bool   // failed over half its recent exchanges; skipped while others are up
	probing atomic.Bool   // a probe goroutine is running for it
	rtt     atomic.Int64  // smoothed round-trip time in ns; 0 until measured
	health  healthWindowBits
	// downSince is when it was last marked down (clockReading), for
	// the log line when it is back up.
	downSince atomic.Int64
	// upSince is when it was last found back up (clockReading; 0 while
	// never down), flapping is set while it is marked down again within
	// flapWindow of that, flaps counts such downs not yet logged, and
	// flapLogged is when the last was (logDown).
	upSince    atomic.Int64
	flapping   atomic.Bool
	flaps      atomic.Int64
	flapLogged atomic.Int64
	// lines is held over a change of down and the line that says so
	// (succeeded, failed, steady), so that the lines come in the order
	// of the changes: a back up whose line was written after the down
	// that followed it left 'upstream back up' last, the upstream down.
	lines sync.Mutex
	// checking is set while a check of its health runs (checkHealth), and
	// checked is when the last one began (clockReading; 0: none yet).
	checking atomic.Bool
	checked  atomic.Int64
	// silent is set when a check of its health timed out (askHealth) and
	// cleared by its next answer (succeeded): while it is, a query's own
	// timeout is a failure of it (unansweredQueryFailure).
	silent atomic.Bool
	// retries is the tries beyond their query's first in flight to it.
	retries atomic.Int64
	// seconds is its series of dnsfence_upstream_seconds, found once
	// rather than by label at each answer; nil without metrics.
	seconds prometheus.Observer
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

// Options configure a Forwarder and the transports it makes.
type Options struct {
	// Timeout bounds one exchange with one upstream; each transport keeps
	// it itself (a try costs no timer of the Forwarder's). It must be
	// positive.
	Timeout time.Duration
	// Fastest tries the healthy upstreams by smoothed round-trip time
	// instead of as configured.
	Fastest bool
	// HealthCheck is the question the probes of the upstreams' health and
	// the readiness probe ask (`upstream_health_check`); the zero value is
	// DefaultHealthCheck, the root NS set.
	HealthCheck HealthCheck
	// Metrics counts exchanges, errors and retries; nil counts nothing.
	Metrics *Metrics
	// Log has a line for each upstream marked down (a warning, with the
	// failure that did it) and back up; nil logs nothing.
	Log *zap.Logger
	// NewTransport makes the transport of one upstream address as
	// configured; nil is NewTransport.
	NewTransport func(addr string, opts Options) (Transport, error)
	// RootCAs verifies an encrypted upstream's certificate: LoadRoots gives
	// the system's roots plus `upstream_ca`. nil means the system's roots.
	// Certificates are always verified; there is no way to turn that off.
	RootCAs *x509.CertPool
	// Resolve looks up the host of an https upstream written with a name
	// (https://dns.example.net/dns-query), each time a connection to it is
	// made, so that a new transport (on reload) looks it up afresh. nil
	// means the system's resolver. Unused for the other kinds, whose host
	// is an IP.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
}

// New returns a Forwarder over the upstreams addrs, in order of
// preference, each with the transport opts.NewTransport makes of it. It
// sends nothing until the first Forward or Probe. It fails when addrs is
// empty, opts.Timeout is not positive, or a transport cannot be made.
func New(addrs []string, opts Options) (*Forwarder, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no upstream")
	}
	if opts.Timeout <= 0 {
		return nil, fmt.Errorf("upstream timeout %s: not positive", opts.Timeout)
	}
	newTransport := opts.NewTransport
	if newTransport == nil {
		newTransport = NewTransport
	}
	f := &Forwarder{
		fastest:      opts.Fastest,
		check:        opts.HealthCheck.orDefault(),
		addrs:        slices.Clone(addrs),
		timeout:      opts.Timeout,
		metrics:      opts.Metrics,
		probeEvery:   time.Second,
		flapWindow:   flapWindow,
		flapLogEvery: flapLogEvery,
		roots:        opts.RootCAs,
		log:          opts.Log,
	}
	if f.log == nil {
		f.log = zap.NewNop()
	}
	// Counted before the observers are taken: a Forwarder closing
	// meanwhile, the last to name an upstream of addrs, would otherwise
	// delete the series an observer below was taken from, and the
	// durations of this one go to no series. A failure below ends the
	// count (closeTransports).
	opts.Metrics.start(addrs)
	for _, addr := range addrs {
		t, err := newTransport(addr, opts)
		if err != nil {
			f.closeTransports()
			return nil, err
		}
		u := &upstreamState{addr: addr, t: t, seconds: opts.Metrics.observer(addr)}
		u.tcp, _ = t.(TCPExchanger)
		u.wire, _ = t.(wireExchanger)
		f.upstreams = append(f.upstreams, u)
	}
	for _, u := range f.upstreams {
		if p, ok := u.t.(*Plain); ok {
			p.resendUnanswered(func() (time.Duration, bool) { return f.resendDelay(u) },
				func() { f.metrics.retry(u.addr, retryResend) })
		}
	}
	return f, nil
}

// Rebuild returns the Forwarder for the upstreams addrs with opts: prev
// itself when it already forwards to them with the same timeout, strategy,
// health check and roots, and none of them is an https upstream written
// with a host name; else a new one (New) that has inherited what prev learnt of the
// upstreams both forward to, so that a reload that changes the upstreams
// explores only the new ones. An https upstream's name is looked up when
// its transport connects, so a reload (which makes new transports) looks
// it up anew, as DESIGN.md §8 asks. prev may be nil. The caller retires
// prev (Retire) once the new one serves.
func Rebuild(prev *Forwarder, addrs []string, opts Options) (*Forwarder, error) {
	if prev != nil && prev.timeout == opts.Timeout && prev.fastest == opts.Fastest && prev.check == opts.HealthCheck.orDefault() &&
		slices.Equal(prev.addrs, addrs) &&
		sameRoots(prev.roots, opts.RootCAs) && !slices.ContainsFunc(addrs, namedHTTPS) {
		return prev, nil
	}
	f, err := New(addrs, opts)
	if err != nil {
		return nil, err
	}
	f.inherit(prev)
	return f, nil
}

// sameRoots reports whether two root pools hold the same certificates (nil
// is the system's roots).
func sameRoots(a, b *x509.CertPool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

// namedHTTPS reports an https upstream whose host is a name, looked up when
// it connects.
func namedHTTPS(addr string) bool {
	a, err := ParseAddress(addr)
	if err != nil || a.Kind != KindHTTPS {
		return false
	}
	_, err = netip.ParseAddr(a.Host)
	return err != nil
}

// inherit takes over what prev learnt of the upstreams both forward to
// (round-trip time, recent outcomes, down or up). Call it before f is
// used. An upstream down in prev is probed by f with f's health check
// once f starts, so that a reload that changes upstream_health_check
// brings back an upstream that only the old question kept down.
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
				u.downSince.Store(p.downSince.Load())
			}
		}
	}
}

// start runs once, at the first query or readiness probe (not when the
// Forwarder is built, so that building one sends nothing): with more than
// one upstream it probes each not yet measured, with a short timeout, so
// that no client query is the first to find a dead one; and it resumes the
// probes of those down.
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
	if !f.acquire() {
		return
	}
	f.askHealth(u, min(f.timeout, exploreMax))
}

// askHealth asks u the health check (probeQuery: the root NS set unless
// upstream_health_check names another question), waiting up to timeout,
// and records the outcome in its health as a query's is: explore's and
// checkHealth's one exchange. The caller has acquired f; askHealth
// releases it.
func (f *Forwarder) askHealth(u *upstreamState, timeout time.Duration) {
	defer f.release()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := f.exchange(ctx, f.probeQuery(), u, false)
	switch {
	case err == nil:
		f.succeeded(u, start, time.Since(start))
	case countsAgainst(err):
		if timedOut(err) {
			u.silent.Store(true)
		}
		f.failed(u, err)
	}
}

// probeQuery is the query every probe of an upstream's health sends
// (askHealth, probe, Probe): f's health check (HealthCheck; by default
// the root NS set, which any recursive resolver with root hints or a
// forwarder has cached), class IN, RD set, with EDNS (buffer ednsSize)
// and a fresh ID.
func (f *Forwarder) probeQuery() *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(f.check.Name, f.check.Qtype)
	q.SetEdns0(ednsSize, false)
	q.Id = queryIDs.next()
	return q
}

// Upstreams lists the upstream addresses in order.
func (f *Forwarder) Upstreams() []string { return slices.Clone(f.addrs) }

// Timeout is how long one exchange with one upstream may take.
func (f *Forwarder) Timeout() time.Duration { return f.timeout }

// HealthCheck is the question f's probes ask the upstreams.
func (f *Forwarder) HealthCheck() HealthCheck { return f.check }

// Retire takes f out of service once successor serves in its place (a
// reload that changed the upstreams): its probes stop, the Forward and
// Probe calls that reach f from now on (a query that loaded the old
// snapshot a moment before the swap) go to successor, and f's transports
// close once the exchanges under way on them have ended, so that a query
// in flight still gets its answer. With a nil successor, later calls fail
// with an error wrapping net.ErrClosed. Retiring a retired Forwarder does
// nothing; a Forwarder is never its own successor.
func (f *Forwarder) Retire(successor *Forwarder) {
	if successor == f || f.closed.Load() {
		return
	}
	f.successor.Store(successor)
	f.closed.Store(true)
	if f.refs.Load() == 0 {
		f.closeTransports()
	}
}

// Close retires f with no successor (Retire(nil)): for a Forwarder that
// no reload replaces, as at shutdown or in `explain -resolve`.
func (f *Forwarder) Close() { f.Retire(nil) }

// acquire takes a reference on the transports for one exchange (or a
// Forward or Probe call), unless f is retired; release gives it back.
func (f *Forwarder) acquire() bool {
	f.refs.Add(1)
	if f.closed.Load() {
		f.release()
		return false
	}
	return true
}

// release gives back a reference; the last one after Retire closes the
// transports.
func (f *Forwarder) release() {
	if f.refs.Add(-1) == 0 && f.closed.Load() {
		f.closeTransports()
	}
}

// closeTransports closes every upstream's transport, once, and then ends
// f's count in the upstream series (Metrics.stop): an upstream no other
// open Forwarder names has its series deleted.
func (f *Forwarder) closeTransports() {
	f.closeOnce.Do(func() {
		for _, u := range f.upstreams {
			_ = u.t.Close() // nothing is left to report it to
		}
		f.metrics.stop(f.addrs) // New started the count (Metrics.start) before any failure
	})
}

// LastAnswer is when an upstream last answered; zero if none has.
func (f *Forwarder) LastAnswer() time.Time {
	if ns := f.lastOK.Load(); ns != 0 {
		return clockTime(ns)
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

// succeeded records a usable answer from u, asked at start, after took:
// its round-trip time, and, if u was down, that it is up again with its
// window cleared (logged, but while it flaps: see logDown).
func (f *Forwarder) succeeded(u *upstreamState, start time.Time, took time.Duration) {
	u.observe(took)
	if u.silent.Load() {
		u.silent.Store(false)
	}
	now := start.Add(took) // without asking the clock again
	if u.down.Load() && f.backUp(u, now) {
		return
	}
	u.health.record(false)
	if up := u.upSince.Load(); u.flapping.Load() && now.Sub(clockTime(up)) >= f.flapWindow {
		f.steady(u, up)
	}
	f.lastOK.Store(clockReading(now))
}

// backUp is succeeded for u found down, at now: it brings u back up with
// its window cleared, and reports false when another success did so
// first, while this one waited for u.lines (two probes' answers at once):
// that one's upSince and steady timer stand, and this is a success of an
// upstream up. Overwritten, the timer found its time gone and no line said
// the upstream steady, flapping its last line while up.
func (f *Forwarder) backUp(u *upstreamState, now time.Time) bool {
	u.lines.Lock()
	defer u.lines.Unlock()
	if !u.down.Load() {
		return false
	}
	u.health.reset()
	up := clockReading(now)
	u.upSince.Store(up)
	u.down.Store(false)
	f.lastOK.Store(up)
	switch {
	case f.closed.Load():
	case !u.flapping.Load():
		f.log.Info("upstream back up", zap.String("upstream", u.addr),
			zap.Duration("down_for", time.Since(clockTime(u.downSince.Load())).Round(time.Millisecond)))
	default:
		// Its back up goes unlogged: said steady after flapWindow if it
		// is still up then, whether or not a query asks it meanwhile (a
		// second upstream of an ordered list gets none once the first is
		// back).
		time.AfterFunc(f.flapWindow, func() { f.steady(u, up) })
	}
	return true
}

// steady logs that u, flapping, has been up since up (Unix nanoseconds)
// for flapWindow: once a bout, and only while it is still up since then.
func (f *Forwarder) steady(u *upstreamState, up int64) {
	u.lines.Lock()
	defer u.lines.Unlock()
	if u.down.Load() || u.upSince.Load() != up || f.closed.Load() || !u.flapping.CompareAndSwap(true, false) {
		return
	}
	f.steadyLine(u)
}

// steadyLine says that u, which flapped, has been up for flapWindow, with
// the downs of its bout not logged; u.lines is held and u.flapping was
// just cleared.
func (f *Forwarder) steadyLine(u *upstreamState) {
	f.log.Info("upstream back up and steady after flapping", zap.String("upstream", u.addr),
		zap.Int64("flaps_not_logged", u.flaps.Swap(0)))
}

// failed records a failed exchange with u, failing with err, and marks
// it down when more than half of its window failed: logged as a warning
// naming err, as dnsdist logs a backend marked down, since a client sees
// nothing of it while another upstream answers (an encrypted upstream
// whose certificate expired, say).
// A retired Forwarder (Retire) logs nothing: the exchanges it finishes
// after a reload would otherwise log a change its successor, which keeps
// the upstream's health from then on, never made, or log one twice.
func (f *Forwarder) failed(u *upstreamState, err error) {
	if fails, n := u.health.record(true); fails*2 > n {
		u.lines.Lock()
		defer u.lines.Unlock()
		if !u.down.Load() {
			// downSince is written before down is, so that a success that
			// finds u down reads when it went down, not the time before.
			now := time.Now()
			u.downSince.Store(clockReading(now))
			if u.down.CompareAndSwap(false, true) && !f.closed.Load() {
				f.logDown(u, now, err, fails, n)
			}
		}
		f.markDown(u)
	}
}

// logDown logs u marked down at now by err, its window's fails of n
// exchanges failed. An upstream marked down again within flapWindow of
// its probe finding it back up is flapping: one that answers the probe's
// health check (the root NS query by default) and fails the clients'
// queries (a forwarder whose own upstream is down answers that query from
// its cache) went down and back
// up every second or two, each time with a warning and a line back up.
// Its downs are logged once a flapLogEvery, with how many there were, its
// back ups not at all, and one line says when it stays up for flapWindow
// (succeeded). The downs of an upstream that is not flapping are each
// logged, and so is the first of each bout of flapping.
func (f *Forwarder) logDown(u *upstreamState, now time.Time, err error, fails, n int) {
	up := u.upSince.Load()
	if up == 0 || now.Sub(clockTime(up)) >= f.flapWindow {
		if u.flapping.Swap(false) {
			// Up for flapWindow, and its steady timer, due by now, has
			// not run (a timer fires apart from the clock read here, late
			// under load): it would find u down and say nothing, the
			// bout's unlogged downs with it. Its line goes first, as
			// when the timer fired before this down.
			f.steadyLine(u)
		}
		f.log.Warn(f.downLine(), zap.String("upstream", u.addr), zap.Error(err), zap.Int("failed", fails), zap.Int("exchanges", n))
		return
	}
	// The first down of a bout is logged however soon after the last
	// bout's line: the line before it said the upstream was back up.
	first := !u.flapping.Swap(true)
	if first {
		u.flaps.Store(0)
	}
	flaps := u.flaps.Add(1)
	last := u.flapLogged.Load()
	if !first && last != 0 && now.Sub(clockTime(last)) < f.flapLogEvery || !u.flapLogged.CompareAndSwap(last, clockReading(now)) {
		return
	}
	u.flaps.Add(-flaps)
	f.log.Warn("upstream flapping: down again soon after its probe found it up; logged once a minute while it flaps",
		zap.String("upstream", u.addr), zap.Error(err), zap.Int64("flaps", flaps),
		zap.Duration("up_for", now.Sub(clockTime(up)).Round(time.Millisecond)))
}

// downLine is the warning of an upstream marked down, which says what
// the queries do meanwhile: with one upstream, they still go to it.
func (f *Forwarder) downLine() string {
	if len(f.upstreams) == 1 {
		return "upstream down: the only upstream, still asked, and probed every second"
	}
	return "upstream down: skipped while another is up, probed every second"
}

// markDown marks u down and starts probing it.
func (f *Forwarder) markDown(u *upstreamState) {
	u.down.Store(true)
	if f.closed.Load() || !u.probing.CompareAndSwap(false, true) {
		return
	}
	go f.probe(u)
}

// probe asks a down upstream the health check (probeQuery; the root NS
// set by default) every probeEvery until it
// answers usably (an RCODE that is no failureRcode, the rule queries
// follow) or the Forwarder is closed; each failure is
// recorded in its window, which orders the upstreams when all are down.
// Each probe waits for its answer on its own goroutine, up to the
// timeout, while the next ones go out on time: an upstream that answers
// again is found within probeEvery, not once a probe sent while it was
// silent has timed out.
func (f *Forwarder) probe(u *upstreamState) {
	defer func() {
		u.probing.Store(false)
		// A failure between the last check and the line above found the
		// probe still running: look again so it is not left unprobed.
		if u.down.Load() && !f.closed.Load() && u.probing.CompareAndSwap(false, true) {
			go f.probe(u)
		}
	}()
	tick := time.NewTicker(f.probeEvery)
	defer tick.Stop()
	for !f.closed.Load() && u.down.Load() {
		<-tick.C
		if !u.down.Load() || !f.acquire() {
			return
		}
		go func() {
			defer f.release()
			start := time.Now()
			_, err := f.exchange(context.Background(), f.probeQuery(), u, false)
			if err == nil {
				f.succeeded(u, start, time.Since(start))
				return
			}
			// A probe sent while the upstream was silent may time out
			// after another brought it back: that says nothing of it now.
			if countsAgainst(err) && u.down.Load() {
				u.health.record(true)
			}
		}()
	}
}

// Probe asks every upstream the health check (probeQuery) at once and
// reports whether any answered usably (as probe does); it backs the
// readiness check when no query has
// gone upstream lately. A hung upstream does not hide a working one. The
// error joins each upstream's; on a retired Forwarder, Probe asks its
// successor.
func (f *Forwarder) Probe(ctx context.Context) error {
	if !f.acquire() {
		if next := f.successor.Load(); next != nil {
			return next.Probe(ctx)
		}
		return errClosed
	}
	defer f.release()
	f.start()
	errs := make(chan error, len(f.upstreams))
	for _, u := range f.upstreams {
		f.refs.Add(1) // the probe may outlive the call: held by f's own
		go func() {
			defer f.release()
			start := time.Now()
			if _, err := f.exchange(ctx, f.probeQuery(), u, false); err != nil {
				errs <- fmt.Errorf("%s: %w", u.addr, err)
				return
			}
			f.succeeded(u, start, time.Since(start))
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
// start, as for a query that came in on TCP (to the transports that have
// TCP, TCPExchanger). It returns the raw upstream answer (with the ID of
// the query sent upstream, not req's) and which upstream gave it.
//
// The upstreams are tried in order (see order). A try not answered within
// hedgeDelay of its upstream is joined by a try to the next upstream (a
// hedge: the first stays in flight, until its own timeout or an answer);
// a try that fails (it times out, cannot reach its upstream, gets an
// unusable answer or one whose RCODE is a failure, failureRcode) is
// followed at once by the next. The first usable answer is returned; the
// tries still in flight run on in the background to their own end, and
// are counted by what actually happened to them: a hedged try that loses
// the race is no failure of its upstream unless it times out or fails.
// Every try after the first needs room in its upstream's retry budget
// (takeRetry); a query that finds none waits for room, looking again every
// hedge delay, but gives up once it has taken as long as a full timeout
// on every upstream in turn would. When every try failed the error is an
// *UpstreamError listing them in the order they were sent. On a retired
// Forwarder, Forward asks its successor (see Retire).
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg, overTCP bool) (*dns.Msg, string, error) {
	if !f.acquire() {
		if next := f.successor.Load(); next != nil {
			return next.Forward(ctx, req, overTCP)
		}
		return nil, "", errClosed
	}
	defer f.release()
	order := f.order()
	f.start() // after order: the first query is not raced by the first probes
	if len(order) == 1 {
		// No second upstream to hedge with: the try runs here.
		up := order[0]
		resp, err := f.try(ctx, upstreamQuery(req), up, overTCP)
		if err == nil {
			return resp, up.addr, nil
		}
		if !callerGaveUp(ctx, err) {
			f.unansweredQueryFailure(up, err)
		}
		return nil, "", oneFailed(up, err)
	}
	f.inflight.Add(1)
	defer f.inflight.Add(-1)
	sf := new(queryFailures)
	resp, from, err := forwardHedged(ctx, f, order, continued{queryFailures: sf}, func(up *upstreamState) func(context.Context) (*dns.Msg, error) {
		// Its own message: a try sets the ID it is sent with, and packing
		// writes the OPT record.
		tq := upstreamQuery(req)
		return func(ctx context.Context) (*dns.Msg, error) { return f.try(ctx, tq, up, overTCP) }
	})
	sf.end(f, answered(err))
	return resp, from, err
}

// answered reports whether a query that ended with err was answered: err
// is nil, or holds an upstream's whole answer with a record miekg/dns does
// not read (UpstreamError.Answered).
func answered(err error) bool {
	ue, _ := errors.AsType[*UpstreamError](err) // no allocation: called for every query
	return err == nil || ue.Answered()
}

// oneFailed is the error of a query whose one try, to up, failed with err.
func oneFailed(up *upstreamState, err error) error {
	uerr := &UpstreamError{Timeout: true}
	uerr.add(up.addr, err)
	return uerr
}

// forwardHedged is Forward's hedging and failover over the upstreams of
// order (more than one), whatever form the query takes: newTry, called
// where the query waits, makes the try to up that then runs on its own
// goroutine (counted and recorded, as try does). from is a query whose
// first try went to an upstream before order (a started query's hedge or
// failover); the zero value, a query's own start. Each try's SERVFAIL,
// REFUSED, NOTIMP or timeout (mayBeOfTheQuery) goes to
// from.queryFailures, which the caller ends when the query has its
// result.
// The caller holds a reference on f, and counts the query in f.inflight.
func forwardHedged[A any](ctx context.Context, f *Forwarder, order []*upstreamState, from continued,
	newTry func(up *upstreamState) func(context.Context) (A, error)) (A, string, error) {
	var none A

	type result struct {
		i    int // the try's place in order
		resp A
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
				f.metrics.retry(up.addr, retryThrottled)
				return false
			}
			f.metrics.retry(up.addr, reason)
		}
		i := sent
		sent++
		pending++
		try := newTry(up)
		f.refs.Add(1) // the try may outlive the call: held by f's own
		go func() {
			defer f.release()
			resp, err := try(ctx)
			if reason != "" {
				up.retries.Add(-1)
			}
			from.queryFailures.add(ctx, f, up, err)
			results <- result{i, resp, err}
		}()
		return true
	}
	send(from.reason)
	// A query that finds its next upstream's budget full waits for room,
	// but never longer than trying each upstream in turn for its whole
	// timeout would take.
	giveUp := from.giveUp
	if giveUp.IsZero() {
		giveUp = time.Now().Add(time.Duration(len(order)) * f.timeout)
	}
	// The next hedge, or look at the budget, comes the hedge delay of the
	// upstream asked last after it was asked (a continued query's first
	// try's, while the budget has let none of these be sent).
	asked := func() *upstreamState {
		if sent == 0 {
			return from.after
		}
		return order[sent-1]
	}
	hedge := time.NewTimer(f.hedgeDelay(asked()))
	defer hedge.Stop()
	// next sends the next try for reason, or, when its budget is full,
	// waits for room while there is time: either way the hedge timer is
	// set again, for the next hedge or another look at the budget. False
	// when there is no upstream left to ask, or no time.
	next := func(reason string) bool {
		if sent == len(order) || ContextErr(ctx) != nil || !send(reason) && !time.Now().Before(giveUp) {
			return false
		}
		hedge.Reset(f.hedgeDelay(asked()))
		return true
	}
	firstFailed := from.firstFailed // nil, never ready, for a query's own start
	for {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				return r.resp, order[r.i].addr, nil
			}
			errs[r.i] = r.err
			if unreadAnswer(r.err) {
				return none, "", tried(order, errs)
			}
			if next(retryFailover) {
				continue
			}
		case <-firstFailed:
			// The continued query's first try, still in flight when it
			// came here, failed: fail over at once, as after a try here.
			firstFailed = nil
			if next(retryFailover) {
				continue
			}
		case <-hedge.C:
			reason := retryHedge
			if pending == 0 && firstFailed == nil {
				reason = retryFailover // every try so far failed; the budget was full
			}
			if next(reason) {
				continue
			}
		}
		if pending == 0 {
			return none, "", tried(order, errs)
		}
	}
}

// tried is the *UpstreamError of a query's tries that ended, errs[i]
// the error of its try to order[i] (nil for one not sent or still in
// flight), in the order they were sent.
func tried(order []*upstreamState, errs []error) *UpstreamError {
	uerr := &UpstreamError{Timeout: true}
	for i, err := range errs {
		if err != nil {
			uerr.add(order[i].addr, err)
		}
	}
	return uerr
}

// continued is a query that forwardHedged continues after its first try
// went to an upstream before the ones it is given (after): the retry
// reason of its first try there (a hedge or a failover, which needs room
// in the retry budget like any other), and when it gives up waiting for
// room (its start, plus a full timeout on every upstream, as if
// forwardHedged had had it from the start).
type continued struct {
	after  *upstreamState
	reason string
	giveUp time.Time
	// queryFailures takes the SERVFAILs, REFUSEDs, NOTIMPs and timeouts
	// of the query's tries, which its end judges (queryFailures.end); nil
	// judges none.
	queryFailures *queryFailures
	// firstFailed is closed when the first try, still in flight when
	// forwardHedged took over, fails; nil when it had failed already.
	firstFailed <-chan struct{}
}

// Why a try beyond a query's first was sent, or not: the `reason` label
// of dnsfence_upstream_retries_total.
const (
	retryHedge     = "hedge"     // the try before it was slow
	retryFailover  = "failover"  // the try before it failed
	retryThrottled = "throttled" // not sent: the upstream's retry budget was full
	retryResend    = "resend"    // sent again to the only upstream: no answer within its delay; or from a new socket after an ICMP error (udpMux.move)
)

// try is one exchange with up, counted and recorded in up's health: a
// usable answer is a success, any error a failure, except when ctx ended
// it (the caller gave up: that says nothing of the upstream).
func (f *Forwarder) try(ctx context.Context, q *dns.Msg, up *upstreamState, overTCP bool) (*dns.Msg, error) {
	start := time.Now()
	resp, err := f.exchange(ctx, q, up, overTCP)
	f.record(ctx, up, start, err)
	return resp, err
}

// record counts an exchange with up that began at start and ended with
// err (a whole answer with a record miekg/dns does not read is an answer,
// RdataError.answer), and keeps it in up's health: a success, or a
// failure unless ctx ended it or another query counted its cause already
// (sharedFailure: countsAgainst is asked only for a failure that is to be
// recorded).
func (f *Forwarder) record(ctx context.Context, up *upstreamState, start time.Time, err error) {
	if unreadAnswer(err) {
		err = nil // an answer, as the wire path takes it (checkWire)
	}
	took := time.Since(start)
	if err == nil && up.seconds != nil {
		up.seconds.Observe(took.Seconds())
	} else {
		f.metrics.done(up.addr, took, err)
	}
	switch {
	case err == nil:
		f.succeeded(up, start, took)
	case ContextErr(ctx) != nil:
	case mayBeOfTheQuery(err):
		// Judged by the query's end: a failure of up when another
		// upstream answered the query, else a health check (queryFailures).
	case ofTheQuery(err):
		f.checkHealth(up, time.Now())
	case countsAgainst(err):
		f.failed(up, err)
	}
}

// queryFailures are the SERVFAILs, REFUSEDs, NOTIMPs and timeouts
// (mayBeOfTheQuery) one query's tries got (a query of more than one
// upstream), judged when the query ends (end): when another upstream
// answered it usably, such an answer without a DNSSEC Extended DNS Error,
// or such a silence, spoke of the upstream, not of the query (a forwarder
// whose own upstream is down, which still answers the health check, the
// root NS query by default, from its cache; a dead upstream), and is a
// failure of it; when none did, it leaves the upstream's health as it was and has it checked
// (unansweredQueryFailure). A try that ends after the query did is judged
// as it ends.
type queryFailures struct {
	mu       sync.Mutex
	ended    bool
	answered bool
	ups      []*upstreamState
	errs     []error
}

// add takes the outcome err of a try to up made under ctx: kept when it
// is a SERVFAIL, a REFUSED, a NOTIMP or a timeout (mayBeOfTheQuery),
// judged at once when the query has ended; not one the caller's giving up
// made (callerGaveUp).
func (s *queryFailures) add(ctx context.Context, f *Forwarder, up *upstreamState, err error) {
	if s == nil || !mayBeOfTheQuery(err) || callerGaveUp(ctx, err) {
		return
	}
	s.mu.Lock()
	if !s.ended {
		s.ups, s.errs = append(s.ups, up), append(s.errs, err)
		s.mu.Unlock()
		return
	}
	answered := s.answered
	s.mu.Unlock()
	f.judgeQueryFailure(up, err, answered)
}

// end judges the SERVFAILs, REFUSEDs, NOTIMPs and timeouts of a query
// that ended, answered or not.
func (s *queryFailures) end(f *Forwarder, answered bool) {
	s.mu.Lock()
	s.ended, s.answered = true, answered
	ups, errs := s.ups, s.errs
	s.ups, s.errs = nil, nil
	s.mu.Unlock()
	for i, up := range ups {
		f.judgeQueryFailure(up, errs[i], answered)
	}
}

// judgeQueryFailure records up's SERVFAIL, REFUSED, NOTIMP or timeout
// err to a query that another upstream answered usably (answered) or
// that none did.
func (f *Forwarder) judgeQueryFailure(up *upstreamState, err error, answered bool) {
	if answered && !failedValidation(err) {
		if countsAgainst(err) { // a timeout may be a connection's, shared by its queries
			f.failed(up, err)
		}
		return
	}
	f.unansweredQueryFailure(up, err)
}

// unansweredQueryFailure is what up's SERVFAIL, REFUSED, NOTIMP or
// timeout err to a query no other upstream answered does: its health is
// left as it was and checked (checkHealth). A timeout while up's last
// check timed out too, with no answer of up's since (silent), is a
// failure of it: an upstream gone silent, once one check has shown it, is
// marked down at the pace of its queries' timeouts, as it was before
// timeouts were judged here, not at the pace of one check an
// upstream_timeout (seventeen checks for one that answered before, 34 s at
// the default 2 s).
func (f *Forwarder) unansweredQueryFailure(up *upstreamState, err error) {
	if timedOut(err) && up.silent.Load() {
		if countsAgainst(err) { // a timeout may be a connection's, shared by its queries
			f.failed(up, err)
		}
		return
	}
	if mayBeOfTheQuery(err) {
		f.checkHealth(up, time.Now())
	}
}

// callerGaveUp reports whether err is a timeout of a try made under ctx
// once ctx has ended: the caller giving up (a client gone, the query's
// own deadline), which says nothing of the upstream (record records
// nothing for it) and needs no check of its health.
func callerGaveUp(ctx context.Context, err error) bool {
	return timedOut(err) && ContextErr(ctx) != nil
}

// checkEvery is how often at most an upstream's health is checked after
// an answer that leaves it as it was (checkHealth).
const checkEvery = 100 * time.Millisecond

// checkHealth asks u the health check (probeQuery), as a probe does,
// after an answer of u's that speaks of its query (ofTheQuery), and records the
// outcome in its health: such an answer leaves the health as it was
// because another query would have been answered, and an upstream that
// gives it to every query is broken all the same (a validator whose clock
// or trust anchor is wrong fails every name, the root's among them, with
// a DNSSEC EDE; an upstream refusing every query, with RD clear in its
// answers or not: an access-control that leaves dnsfence out), and
// without the check would never be marked down, every query going to it
// first. One check at a time, at most every checkEvery:
// clients asking for bogus names add at most ten health checks a second
// to a healthy validator, which answers them from its cache (the root NS
// set by default).
func (f *Forwarder) checkHealth(u *upstreamState, at time.Time) {
	now := clockReading(at)
	if last := u.checked.Load(); last != 0 && now-last < int64(checkEvery) || !u.checking.CompareAndSwap(false, true) {
		return
	}
	if !f.acquire() {
		u.checking.Store(false)
		return
	}
	u.checked.Store(now)
	go func() {
		defer u.checking.Store(false)
		f.askHealth(u, f.timeout)
	}()
}

// ofTheQuery reports whether err is an upstream's answer that speaks of
// the query, not of the upstream's health, which it leaves as it was: a
// declined ANY, a REFUSED without RD (any other SERVFAIL, REFUSED or
// NOTIMP is judged by the query's end: queryFailures). A client can send
// such queries again and again; none of them may have an upstream that
// answers every other query marked down. An answer with a record miekg/dns
// does not read is judged as the same answer read would be (asReadable): a
// whole one is an answer (record), a truncated one or one whose RCODE is a
// failure is what a readable one is; the name's owner wrote the record,
// not the RCODE or the TC bit.
func ofTheQuery(err error) bool {
	return declinedANY(err) || refusedNoRecursion(err)
}

// refusedNoRecursion reports whether err is an upstream's REFUSED to a
// query without RD, which dnsfence sends on as the client sent it (RFC
// 1035 §4.1.1: the client asks for the upstream's cache, not for
// recursion): a recursive server may refuse it, and Unbound does for every
// client its access-control allows without allow_snoop (its default, with
// EDE 20 "Not Authoritative"), against cache snooping. It speaks of the
// query, not of the upstream's health, which it leaves as it was, so that
// a client sending RD=0 (dig +norec, a snooping scan) cannot have
// upstreams that answer every recursive query marked down: 40 of them had
// dnsfence mark its one Unbound 1.17 upstream down, where an Unbound
// forwarder and dnsdist 1.7 relayed the REFUSED and kept it up. The query
// still fails over and is counted by its RCODE. RFC 1035 §4.1.1 has RD
// copied into the answer, so the answer's RD is the query's.
func refusedNoRecursion(err error) bool {
	var re *RcodeError
	return errors.As(err, &re) && re.Rcode == dns.RcodeRefused && re.Answer != nil && !re.Answer.RecursionDesired
}

// answeredServfail reports whether err is an upstream's SERVFAIL: a
// recursive server's word that it could not resolve the name asked (a
// lame or unreachable zone, RFC 1035 §4.1.1), or a validator's that the
// data failed DNSSEC validation (RFC 4035 §5.5; with an Extended DNS Error
// saying why, RFC 8914 codes 1, 2, 5 to 12, or without one: Unbound's
// default is ede: no). When no upstream answers the query, it speaks of
// the zone asked about, not of the upstream, whose health it leaves as it
// was, so that a client asking for a lame or bogus name (every query,
// again and again: nothing a client can fix) cannot have upstreams that
// answer every other name marked down: 40 such queries marked a healthy
// validating Unbound 1.17 down. The query still fails over to the next
// upstream, whose view may differ (another trust anchor, another path to
// the zone), and is counted by its RCODE in dnsfence_upstream_errors_total.
// When another upstream answers the query, the SERVFAIL spoke of the
// upstream that gave it (a forwarder whose own upstream is down answers
// the health check, the root NS query by default, from its cache, and
// SERVFAILs every other name), and is a failure of it but for a failed
// validation (queryFailures); record
// leaves a SERVFAIL to the query's end.
func answeredServfail(err error) bool {
	re, ok := errors.AsType[*RcodeError](err) // no allocation: called for every try
	return ok && re.Rcode == dns.RcodeServerFailure
}

// mayBeOfTheQuery reports whether err is an upstream's answer, or its
// silence, that may speak of the query asked rather than of the upstream,
// judged by the query's end (queryFailures): a SERVFAIL
// (answeredServfail), a REFUSED or NOTIMP to a recursive query other
// than ANY (declinedTheQuery), or no answer in time (timedOut).
func mayBeOfTheQuery(err error) bool {
	return answeredServfail(err) || declinedTheQuery(err) || timedOut(err)
}

// timedOut reports whether err is a try that ran out of its own time
// (errorKind's timeout: an answer that came unusable, or datagrams no
// query could take meanwhile, are kinds of their own, failures of the
// upstream). A recursive upstream still resolving a name whose zone's
// servers do not answer (or an authoritative one, like tinydns, that
// never answers a name it has no data for) is silent past
// upstream_timeout for that name and answers every other: like a
// SERVFAIL, the silence may speak of the name, not of the upstream. When
// another upstream answers the query in time it is a failure of the
// silent one (queryFailures), so a dead upstream beside a live one is
// marked down as before; when none does, the upstream's health is left
// as it was and checked with the health check (the root NS query by
// default), whose own timeout counts (askHealth), so that clients asking
// again and again for names of such a
// zone cannot have upstreams that answer every other name marked down:
// 40 of them marked two upstreams down, as CoreDNS marked 8.8.8.8 bad for
// `ANY isc.org` timing out (coredns/coredns#1091, #1504; "It marks the
// upstream as dead; which is wrong", #1834).
func timedOut(err error) bool {
	return err != nil && isTimeout(err) && errorKind(err) == kindTimeout
}

// declinedTheQuery reports whether err is an upstream's REFUSED or NOTIMP
// to a query that is neither without RD (refusedNoRecursion) nor of QTYPE
// ANY (declinedANY): a resolver's policy for the name asked (Unbound's
// `local-zone: "…" refuse`, AdGuard Home's `blocking_mode: refused`, a
// dnsdist RCodeAction(DNSRCode.REFUSED) for a name), a kind of query it
// does not take (ControlD's resolvers answered NOTIMP to QTYPE HTTPS,
// which browsers ask for every name, TechnitiumSoftware/DnsServer#569;
// systemd-resolved's stub NOTIMP to a query with DO set,
// systemd/systemd#17218), or its access-control refusing dnsfence every
// query. When no upstream answers the query, it is judged as a SERVFAIL
// is: the upstream's health is left as it was and checked with the health
// check (the root NS query by default), which an access-control refuses
// too, so that devices asking again and again for such a name or type cannot have upstreams that
// answer every other query marked down: 40 of them marked two upstreams
// down and flapping, as CoreDNS forward's health marked an upstream for a
// refused query (coredns/coredns#486). When another upstream answers the
// query, the REFUSED or NOTIMP is a failure of the upstream that gave it.
func declinedTheQuery(err error) bool {
	re, ok := errors.AsType[*RcodeError](err) // no allocation: called for every try
	return ok && (re.Rcode == dns.RcodeRefused || re.Rcode == dns.RcodeNotImplemented) &&
		!refusedNoRecursion(err) && !declinedANY(err)
}

// failedValidation reports whether err is a validating upstream's SERVFAIL
// whose Extended DNS Error says the data failed DNSSEC validation (RFC
// 8914 §4.2, §4.3 and §4.6 to §4.13: codes 1, 2 and 5 to 12, DNSSEC Bogus
// and Signature Expired among them). Another upstream that answers the
// same query usably may not validate: such a SERVFAIL is never a failure
// of the validator (queryFailures), so that clients asking for bogus names
// cannot have every query sent to the upstream that does not validate.
func failedValidation(err error) bool {
	var re *RcodeError
	if !errors.As(err, &re) || re.Rcode != dns.RcodeServerFailure || re.Answer == nil {
		return false
	}
	opt := re.Answer.IsEdns0()
	if opt == nil {
		return false
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			switch e.InfoCode {
			case dns.ExtendedErrorCodeUnsupportedDNSKEYAlgorithm, dns.ExtendedErrorCodeUnsupportedDSDigestType,
				dns.ExtendedErrorCodeDNSSECIndeterminate, dns.ExtendedErrorCodeDNSBogus,
				dns.ExtendedErrorCodeSignatureExpired, dns.ExtendedErrorCodeSignatureNotYetValid,
				dns.ExtendedErrorCodeDNSKEYMissing, dns.ExtendedErrorCodeRRSIGsMissing,
				dns.ExtendedErrorCodeNoZoneKeyBitSet, dns.ExtendedErrorCodeNSECMissing:
				return true
			}
		}
	}
	return false
}

// declinedANY reports whether err is an upstream's NOTIMP or REFUSED to a
// query of QTYPE ANY, which a server may decline (RFC 8482 §4; Cloudflare's
// resolvers answer NOTIMP): it speaks of the query, not of the upstream's
// health, which it leaves as it was, so that a client asking ANY (qmail
// does) cannot have upstreams that answer every other query marked down.
// The query still fails over to the next upstream, and is counted by its
// RCODE in dnsfence_upstream_errors_total.
func declinedANY(err error) bool {
	var re *RcodeError
	if !errors.As(err, &re) || re.Answer == nil || len(re.Answer.Question) != 1 {
		return false
	}
	return re.Answer.Question[0].Qtype == dns.TypeANY &&
		(re.Rcode == dns.RcodeNotImplemented || re.Rcode == dns.RcodeRefused)
}

// hedgeDelay is how long a try to u may go unanswered before the next
// upstream is asked too: twice u's smoothed round-trip time, at least
// hedgeFloor (u not measured yet: hedgeFloor), at most a quarter of the
// timeout (hedgeFloor when that is less), and never over half of it.
func (f *Forwarder) hedgeDelay(u *upstreamState) time.Duration {
	return min(max(2*time.Duration(u.rtt.Load()), hedgeFloor), max(f.timeout/4, hedgeFloor), f.timeout/2)
}

// resendDelay is how long a UDP query to u may go unanswered before it is
// sent to u again (resendPolicy): its hedge delay, when no other upstream
// is up to hedge a lost datagram with; false when one is, or when u is
// down itself (more datagrams would not bring it back, and an overloaded
// upstream would drop more).
func (f *Forwarder) resendDelay(u *upstreamState) (time.Duration, bool) {
	if u.down.Load() {
		return 0, false
	}
	for _, o := range f.upstreams {
		if o != u && !o.down.Load() {
			return 0, false
		}
	}
	return f.hedgeDelay(u), true
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

// exchange is one try against one upstream over its transport (over TCP
// from the start when overTCP and the transport has TCP). Whatever the
// transport, an answer that is not a response to q (its ID and question)
// is ErrAnswerMismatch, one whose RCODE is a failure (failureRcode) an
// *RcodeError, for the probes as for queries (an upstream that refuses
// everything stays down), and one with TC set ErrAnswerTruncated: it came
// over a stream, or over TCP after a truncated UDP answer, so it is cut
// short with nothing larger left to ask over (RFC 1035 §4.2.2), and
// relayed it would reach the client as a whole answer (the client's TC is
// dnsfence's own, set only when it cuts the answer itself). An answer with
// a record miekg/dns does not read is held to the same (asReadable): only
// a whole one is the upstream's answer.
func (f *Forwarder) exchange(ctx context.Context, q *dns.Msg, u *upstreamState, overTCP bool) (*dns.Msg, error) {
	var resp *dns.Msg
	var err error
	if overTCP && u.tcp != nil {
		resp, err = u.tcp.ExchangeTCP(ctx, q)
	} else {
		resp, err = u.t.Exchange(ctx, q)
	}
	if err != nil {
		return nil, asReadable(err)
	}
	if err := checkAnswer(resp, q); err != nil {
		return nil, err
	}
	if failureRcode(resp.Rcode) {
		return nil, &RcodeError{Rcode: resp.Rcode, Answer: resp}
	}
	if resp.Truncated {
		return nil, ErrAnswerTruncated
	}
	return resp, nil
}
