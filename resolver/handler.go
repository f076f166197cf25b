package resolver

import (
	"context"
	"errors"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Log field keys, in one place so the audit trail stays stable.
const (
	logClient     = "client"
	logQName      = "qname"
	logQType      = "qtype"
	logPolicy     = "policy"
	logRange      = "range"
	logList       = "list"
	logListLine   = "line"
	logEntry      = "entry"
	logListHash   = "list_sha256"
	logVia        = "via"
	logResult     = "result"
	logRcode      = "rcode"
	logUpstream   = "upstream"
	logDuration   = "duration"
	logTransport  = "transport"
	logShadow     = "shadow"
	logIdentity   = "identity"
	logSource     = "source"
	logSuppressed = "suppressed"
	logCause      = "cause"
	logReason     = "reason"
	logOwner      = "owner"       // the RPZ trigger's owner name
	logAction     = "action"      // an RPZ trigger's action other than NXDOMAIN (triggerAction)
	logZoneSerial = "zone_serial" // the serial of the zone a transferred list was read from
)

// Results of one query, as logged and counted, and the outcomes of a
// decision (Snapshot.decide) as `dnsfence explain` and the CHAOS explain
// give them: one word set.
const (
	ResultBlocked   = "blocked"
	ResultForwarded = "forwarded"
	ResultRefused   = "refused"
	ResultServfail  = "servfail"
	ResultFormerr   = listen.ResultFormerr
	ResultNotimp    = listen.ResultNotimp
	ResultBadvers   = listen.ResultBadvers
	ResultDropped   = listen.ResultDropped
	ResultExplained = "explained"
	ResultNotify    = "notify" // a DNS NOTIFY (RFC 1996) for a zone source, answered
	// ResultLocal is an answer dnsfence gives from its own zone without
	// asking an upstream: a name in one of localZones.
	ResultLocal = "local"
)

// Handler runs the pipeline of one query (DESIGN.md §1) top to bottom, in
// two steps and one write:
//
//   - ServeInline (answerInline) decides the query without waiting: rate
//     limit, validation, the decision (Snapshot.decide), the cache. It
//     returns a reply, or "needs an upstream".
//   - resume (forward) asks the upstreams and inspects the answer.
//   - write fits the reply to the client, records it once (metrics, then
//     the audit line) and sends it.
//
// A reply is a value: a message, or the blocked answer or a cache hit
// packed to wire form with its RCODE, and the result it is counted as.
type Handler struct {
	// state is the snapshot every query is decided with. Only the reload
	// goroutine stores; a query loads it once and uses that value throughout.
	state   atomic.Pointer[Snapshot]
	log     *zap.Logger
	metrics *Metrics // nil: not counted
	audit   auditLimiter
	// upstreamWarn throttles the "upstreams failed" line: one an upstream
	// per warnEvery, with the count of lines suppressed.
	upstreamWarn warnLimiter
	// cache, slots and limiter outlive snapshots: what they hold (answers,
	// slots taken, clients' tokens) is kept across reloads. Store sets them
	// to each snapshot's settings before publishing it, once a snapshot;
	// no query compares settings. cache and limiter are swapped whole (a
	// Cache and a rateLimiter never change their settings); slots is
	// resized in place.
	cache   atomic.Pointer[Cache]
	limiter atomic.Pointer[rateLimiter] // nil: rate limiting off
	slots   upstreamSlots               // upstream queries in flight
	// waiting counts the queries a listener resumed off its loop (the
	// resume of ServeInline and ServeWire) that have not ended: each holds
	// a goroutine while it waits, and a query that joins another's upstream
	// query takes no slot, so this is what bounds them (waitingLimit).
	waiting atomic.Int64
	flight  singleflight.Group // identical concurrent misses share one upstream query
	// wireFlights is flight for the misses of the wire path.
	wireFlights wireFlights
	// inflight counts queries being answered, from serveInline until the
	// write (after resume, for one that needed it), the upstream
	// refreshes that outlive a query answered at its client response
	// timer (outlive), and prefetches (startPrefetch), so Wait can wait
	// for them (begin, done).
	inflight sync.WaitGroup
	// designated are the encrypted listeners `_dns.resolver.arpa SVCB`
	// designates (RFC 9462): nil until they listen.
	designated atomic.Pointer[designation]
	// unwatched are the files the reloader cannot watch, for /readyz.
	unwatched atomic.Pointer[[]string]
	// reload is the outcome of the last reload, for /readyz; nil before
	// the first.
	reload atomic.Pointer[ReloadStatus]
	// remote are the remote list sources being run, for NOTIFY, /readyz
	// and the metrics; nil when there are none. The Reloader stores it.
	remote atomic.Pointer[remoteSources]
	// held are the remote lists whose newest copy a fail-closed guard
	// holds (the Reloader's setHeld), by entry.
	held sync.Map
	// memos are the UDP read loops' answer memos (answerMemo), emptied
	// when a snapshot replaces the one they were filled with.
	memos memoSet
	// stopping is set by Stopping: /readyz says not ready from then on.
	stopping atomic.Bool
	// serving is set by Serving, once every listener answers: /startupz
	// says started from then on.
	serving atomic.Bool
	// listenersStopped says, for /readyz, why each listener that stopped
	// serving on its own (ListenerStopped) and serves no more
	// (ListenerResumed) stopped, by transport and address; guarded by
	// listenersMu.
	listenersMu      sync.Mutex
	listenersStopped map[string]string
	// readyProbes shares one probe of the upstreams among the /readyz
	// requests that need one at once, by forwarder.
	readyProbes singleflight.Group
}

// Stopping marks the handler as shutting down: /readyz answers 503 from
// now on, so that a load balancer or an anycast health check takes the
// instance out while the queries in flight are answered. Queries are still
// answered as before.
func (h *Handler) Stopping() { h.stopping.Store(true) }

// Serving marks every listener as answering (the lists and ranges loaded,
// the sockets open): /startupz answers 200 from now on.
func (h *Handler) Serving() { h.serving.Store(true) }

var (
	_ dns.Handler    = (*Handler)(nil)
	_ listen.Handler = (*Handler)(nil)
)

// NewHandler returns a Handler serving snap, counting into m (may be nil).
// snap nil is a handler still loading, for /readyz: it answers no query
// until the first Store.
func NewHandler(log *zap.Logger, snap *Snapshot, m *Metrics) *Handler {
	h := &Handler{log: log, metrics: m}
	var first config.Cache
	if snap != nil {
		first = snap.Config.Cache
	}
	h.cache.Store(NewCache(first))
	m.cacheSize(func() float64 { return float64(h.cache.Load().Len()) })
	m.upstreamGauges(func() *upstream.Forwarder {
		if s := h.state.Load(); s != nil {
			return s.Forwarder()
		}
		return nil
	})
	h.Store(snap)
	m.sources(h)
	return h
}

// Snapshot is the state queries are currently decided with.
func (h *Handler) Snapshot() *Snapshot { return h.state.Load() }

// Store publishes a new snapshot; queries already running finish with the
// one they loaded. The cache, the upstream-in-flight bound and the rate
// limiter take its settings first, so that a query that loads it finds
// them applied: the cache keeps its answers, queries holding an upstream
// slot keep it, and clients keep their tokens unless the rate or the burst
// changed. Only one goroutine stores at a time (startup, then the
// reloader).
func (h *Handler) Store(s *Snapshot) {
	if s == nil {
		return
	}
	cfg := s.Config
	h.cache.Store(h.cache.Load().With(cfg.Cache))
	h.slots.resize(cfg.Limits.UpstreamInflight)
	h.limiter.Store(h.limiter.Load().reconfigured(cfg.RateLimit))
	h.logReadiness(h.state.Swap(s), s)
	h.forgetMemos()
	h.metrics.snapshotLoaded(s)
}

// storeLists publishes a snapshot that differs from the one served only in
// a remote list (Reloader.applySource): the settings Store applies are
// unchanged, and the reload metrics are left as they are.
func (h *Handler) storeLists(s *Snapshot) {
	h.logReadiness(h.state.Swap(s), s)
	h.forgetMemos()
	h.metrics.listsLoaded(s)
}

// logReadiness logs, of the snapshot next that replaced prev (nil at
// start), each policy that is not ready (Policy.Ready) and was ready, at
// warn level, and each ready again, at info: its remote block lists have
// a copy. A policy no longer held while a list it still blocks with has no
// copy (sources.servfail_until_ready turned off, shadow mode: SIGHUP) is
// not ready: that list is served empty, which is logged at warn.
func (h *Handler) logReadiness(prev, next *Snapshot) {
	was := map[string][]string{} // the lists without a copy of the policies not ready in prev
	if prev != nil {
		for _, p := range prev.Policies {
			if !p.Ready() {
				was[p.Name] = p.noCopy
			}
		}
	}
	for _, p := range next.Policies {
		switch {
		case !p.Ready() && was[p.Name] == nil:
			h.log.Warn("policy not ready: SERVFAIL to its clients for every name its other lists neither block nor allow, until its remote block lists have a copy (sources.servfail_until_ready)",
				zap.String(logPolicy, p.Name), zap.Strings("lists", p.noCopy))
		case p.Ready() && was[p.Name] != nil:
			if empty := stillWithoutCopy(was[p.Name], next, p); len(empty) > 0 {
				h.log.Warn("policy no longer answers SERVFAIL for its remote block lists without a copy: they block none of their names until their first copy",
					zap.String(logPolicy, p.Name), zap.Strings("lists", empty))
				continue
			}
			h.log.Info("policy ready: its remote block lists have a copy", zap.String(logPolicy, p.Name))
		}
	}
}

// query is one request being answered and what was learnt about it.
type query struct {
	// req is the query as a message; nil for one read from the wire
	// (wire.ok) until request makes it.
	req       *dns.Msg
	wire      wireQuery // the query as read from the wire, when it came by the wire path (ServeWire)
	left      *wireLeft // the wire query's, once it left for an upstream
	w         dns.ResponseWriter
	transport string    // the transport it came over: listen.UDP, listen.TCP, ...
	snap      *Snapshot // the state the whole query is decided with
	id        Identity
	client    netip.Addr // id.Client's address, for logs and explanations
	start     time.Time
	// out is the decision on the question (Snapshot.decide), and on the
	// answer once it is inspected (outcome.inspect).
	out      outcome
	key      cacheKey // the cache and upstream key, once the query got that far
	upstream string
	via      string // the name in the answer that was blocked, for chains
	// memo is the answer memo of the loop serving the wire query inline,
	// which keeps its answer (answerMemo.keep).
	memo *answerMemo
}

// stream reports a transport other than UDP: its answers may take 65,535
// bytes (the transport decides, never the peer's address type: a DNS over
// QUIC peer is a *net.UDPAddr).
func (q *query) stream() bool { return q.transport != listen.UDP }

// upstreamTCP reports whether a cache miss goes upstream over TCP from the
// start: for a query that came over plain TCP (DESIGN.md §1 step 7). A
// query that came encrypted goes over UDP first, as a UDP one does, and
// over TCP when that answer is truncated, so its whole answer still comes
// back without a TCP connection upstream for every miss.
func (q *query) upstreamTCP() bool { return q.transport == listen.TCP }

// maxSize is the largest answer the client takes: its UDP size, or a whole
// message on every other transport.
func (q *query) maxSize() int {
	if q.stream() {
		return dns.MaxMsgSize
	}
	if q.req == nil {
		return q.wire.maxSize()
	}
	return clientSize(q.req)
}

// ServeInline is the listeners' way in (listen.Handler): it decides the
// query in one step and, when the answer needs no upstream (an error, a
// refusal, a block, a cache hit), writes it and returns nil. Otherwise it
// returns resume, which forwards and writes the answer; the listener calls
// it once, where waiting is fine. A panic in either becomes SERVFAIL.
func (h *Handler) ServeInline(w listen.ResponseWriter, req *dns.Msg) (resume func()) {
	q := query{req: req, w: w, transport: w.Transport()}
	if !h.serveInline(&q) {
		return nil
	}
	p := new(query) // only a query that waits on an upstream leaves the stack
	*p = q
	if !h.startWaiting(p) {
		return nil
	}
	return func() {
		defer h.waiting.Add(-1)
		h.resume(p, false)
	}
}

// waitingLimit is how many resumed queries may wait at once (Handler's
// waiting): four times limits.upstream_inflight, and at least 1,024, so
// that the queries joining others' upstream queries have room, while a
// flood of one slow name cannot hold a goroutine a packet.
func waitingLimit(snap *Snapshot) int64 {
	return int64(max(4*snap.Config.Limits.UpstreamInflight, 1024))
}

// startWaiting counts q, which serveInline left waiting on an upstream,
// among those resumed; past waitingLimit it answers q SERVFAIL at once
// (as the upstream slots do, errOverloaded), ends it and reports false.
func (h *Handler) startWaiting(q *query) bool {
	if h.waiting.Add(1) <= waitingLimit(q.snap) {
		return true
	}
	h.waiting.Add(-1)
	defer h.done()
	h.write(q, h.failure(q, errOverloaded))
	return false
}

// ServeDNS answers one query (dns.Handler): ServeInline's step, then
// resume's when the answer needs an upstream, on the caller's goroutine
// and without making resume a func value. A panic anywhere below becomes
// SERVFAIL: every query gets exactly one answer and the process stays up.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	q := query{req: req, w: w, transport: transportOf(w)}
	if h.serveInline(&q) {
		h.resume(&q, false)
	}
}

// Wait waits until no query is being answered and no refresh a query
// answered at its client response timer left going, nor any prefetch, is
// under way (their answers are cached by then), or until ctx ends, then
// returning ctx's error. Server.Shutdown calls it once the listeners have
// stopped taking queries.
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serveInline is the inline step: it decides q and writes the reply when
// one is known without waiting. It reports whether the answer needs an
// upstream instead: then the query stays in flight until resume ends.
func (h *Handler) serveInline(q *query) (needsUpstream bool) {
	h.begin()
	defer func() {
		if r := recover(); r != nil {
			h.failed(q, r)
			needsUpstream = false
		}
		if !needsUpstream {
			h.done()
		}
	}()
	r, ok := h.answerInline(q)
	if !ok {
		return true
	}
	h.write(q, r)
	return false
}

// resume is the upstream step of a query serveInline left: forward (or
// forwardMessage, when asMessage: a miss already counted), then the one
// write, unless the query's client response timer answered it already
// (clientTimer: the reply is none).
func (h *Handler) resume(q *query, asMessage bool) {
	defer h.done()
	defer func() {
		if r := recover(); r != nil && q.claimAnswer() {
			h.failed(q, r)
		}
	}()
	var r reply
	if asMessage {
		r = h.forwardMessage(context.Background(), q)
	} else {
		r = h.forward(context.Background(), q)
	}
	if !r.none() {
		h.write(q, r)
	}
}

// begin counts a query (serveInline), a refresh that outlives its query
// (outlive) or a prefetch (startPrefetch) in flight, for Wait and
// dnsfence_inflight_queries, until done.
func (h *Handler) begin() {
	h.inflight.Add(1)
	if h.metrics != nil {
		h.metrics.inflight.Inc()
	}
}

// done ends what begin counted.
func (h *Handler) done() {
	if h.metrics != nil {
		h.metrics.inflight.Dec()
	}
	h.inflight.Done()
}

// failed answers a query whose handling panicked with SERVFAIL, written
// straight to the client: the panic may have come from write itself. A
// wire query's is packed from what readWireQuery read, not from the query
// unpacked (request), whose own panic here would escape the recover.
func (h *Handler) failed(q *query, r any) {
	h.log.Error("panic answering query", zap.Any("panic", r), zap.String(logClient, q.client.String()),
		zap.ByteString("stack", debug.Stack()))
	if q.req == nil && q.wire.ok {
		a := q.wire.asked()
		if b, err := a.appendServfail(nil, dns.ExtendedErrorCodeOther, internalError); err == nil {
			_, _ = q.w.Write(b)
		}
		return
	}
	if req := q.request(); len(req.Question) > 0 {
		_ = q.w.WriteMsg(servfailReply(req, dns.ExtendedErrorCodeOther, internalError))
	}
}

// serverClassText is the EDE text of the REFUSED to a CHAOS query that is
// no explain question.
const serverClassText = "CHAOS queries are not forwarded"

// unservedClassText is the EDE text of the REFUSED to a query of a class
// that is not forwarded (forwardedClass).
const unservedClassText = "only classes IN and HS are forwarded"

// forwardedClass reports whether a query of class qclass goes upstream:
// IN, HS (zone data like IN's) and ANY (RFC 1035 §3.2.5). CHAOS is
// answered apart.
func forwardedClass(qclass uint16) bool {
	switch qclass {
	case dns.ClassINET, dns.ClassHESIOD, dns.ClassANY:
		return true
	}
	return false
}

// internalError is the EDE text of the SERVFAIL of a query whose handling
// panicked.
const internalError = "internal error"

// answerInline runs the pipeline (DESIGN.md §1) as far as it goes without
// waiting on an upstream, and returns the reply; ok is false when the
// answer needs an upstream, which forward asks (q.key is set then).
func (h *Handler) answerInline(q *query) (r reply, ok bool) {
	if q.wire.ok {
		return h.answerWire(q)
	}
	req := q.req
	q.start = time.Now()
	q.snap = h.state.Load()
	q.id = identify(q.snap, q.w, req)
	q.client = q.id.Client.Addr()
	if r, limited := h.admit(q); limited {
		return r, true
	}
	// An OPT of another VERSION is answered BADVERS before anything else
	// is decided (RFC 6891 §6.1.3, as BIND answers it; the listener's
	// headerReject answers its own rejections so): a NOTIFY, or a question
	// of a meta-TYPE, too; two questions or more stay FORMERR (RFC 9619 §4).
	edns := checkEDNS(req)
	if len(req.Question) <= 1 && edns == dns.RcodeBadVers {
		return msgReply(newReply(req, dns.RcodeBadVers), ResultBadvers), true
	}
	// A NOTIFY for a zone source (RFC 1996) is the primary's, whoever
	// allowed_clients lets ask: it is checked against the primary's
	// address (the socket peer's), and does nothing but ask the source to
	// look.
	if req.Opcode == dns.OpcodeNotify {
		if r, ok := h.notify(q); ok {
			return r, true
		}
	}
	// 1. Receive: the listener's accept function has already dropped
	// responses and answered wrong opcodes and question counts; this guards
	// the handler when it is called directly.
	if req.Opcode != dns.OpcodeQuery {
		return msgReply(newReply(req, dns.RcodeNotImplemented), ResultNotimp), true
	}
	if len(req.Question) != 1 || !validQuestion(req.Question[0]) {
		return msgReply(newReply(req, dns.RcodeFormatError), ResultFormerr), true
	}
	if edns != dns.RcodeSuccess { // BADVERS was answered above
		// A problem with the OPT itself (two, or one outside the
		// additional section): the FORMERR carries our OPT, so that the
		// client can tell it from a server without EDNS (RFC 6891 §7).
		m := newReply(req, edns)
		if m.IsEdns0() == nil {
			m.SetEdns0(ednsSize, misplacedDO(req))
		}
		return msgReply(m, ResultFormerr), true
	}
	// A TSIG record anywhere but last in the additional section, or more
	// than one (RFC 8945 §5.2): the message is dropped and FORMERR
	// returned. IsTsig sees only the last record: a TSIG before the OPT
	// was forwarded as an unsigned query, and its answer went unsigned.
	// So is a TSIG without RDATA, which miekg/dns unpacks with no
	// algorithm name (RFC 1035 §4.1.1: it cannot be interpreted): the
	// NOTAUTH's TSIG that copied it packed without one, and no client
	// could read it.
	if badTSIG(req) {
		return msgReply(newReply(req, dns.RcodeFormatError), ResultFormerr), true
	}
	if strayRecords(req) {
		return msgReply(newReply(req, dns.RcodeFormatError), ResultFormerr), true
	}
	question := req.Question[0]
	// 3. May they ask at all: before anything is answered, a zone
	// transfer's refusal and an explanation too (a client outside
	// allowed_clients gets REFUSED and nothing larger, whatever
	// explain_clients holds).
	if !q.snap.Allowed(q.id.Source) {
		return msgReply(refusedReply(req), ResultRefused), true
	}
	// A query signed with TSIG (RFC 8945): dnsfence shares a key with no
	// client and cannot forward the message unchanged with its TSIG, as
	// §5.5 asks a forwarder to (it asks with its own ID and OPT, which
	// the MAC covers), so it answers as a server that does not know the
	// key (§5.2.1): NOTAUTH, with an unsigned TSIG of error BADKEY
	// (§5.3.2), and the query goes nowhere. Answered as if unsigned, the
	// client's check of the answer fails, and it cannot tell why.
	if tsig := req.IsTsig(); tsig != nil {
		m := newReply(req, dns.RcodeNotAuth)
		m.Extra = append(m.Extra, &dns.TSIG{
			Hdr:       dns.RR_Header{Name: tsig.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: tsig.Algorithm, TimeSigned: tsig.TimeSigned, Fudge: tsig.Fudge,
			OrigId: tsig.OrigId, Error: dns.RcodeBadKey,
		})
		return msgReply(m, ResultRefused), true
	}
	// Two ECS options from a trusted proxy name no one client: not used,
	// and the query refused (RFC 7871 §7.5: an ECS option a forwarder will
	// not use SHOULD get REFUSED), never decided for the proxy itself.
	if q.id.ManyECS {
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeOther, "more than one EDNS Client Subnet option")
		return msgReply(m, ResultRefused), true
	}
	if question.Qtype == dns.TypeAXFR || question.Qtype == dns.TypeIXFR {
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeNotSupported, "zone transfers are not forwarded")
		return msgReply(m, ResultRefused), true
	}

	if name, ok := explainName(question); ok {
		return h.explain(q, name), true
	}

	// 4. Which policy; 5. is the name blocked (decide checks 3 again).
	q.out = q.snap.decideClass(q.id.Source, q.id.Client, question.Name, question.Qclass)
	switch q.out.result {
	case ResultRefused:
		return msgReply(refusedReply(req), ResultRefused), true
	case ResultBlocked:
		return h.blocked(q), true
	}
	// CHAOS data is the answering server's own (RFC 4892's version.bind,
	// hostname.bind, id.server): an upstream's would be the upstream's
	// version and name given as dnsfence's, telling anyone who asks what
	// answers behind it. Not forwarded, and not answered either (BIND's
	// `version none`). HESIOD is zone data like IN's, and forwarded. The
	// wire path takes class IN only.
	if question.Qclass == dns.ClassCHAOS {
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeNotSupported, serverClassText)
		return msgReply(m, ResultRefused), true
	}
	// A class no zone data is in (NONE and 0, never a query's, RFC 2136
	// §2.4, RFC 6895 §3.2; unassigned, private use, reserved): answered
	// as CHAOS is, not forwarded, where an upstream's REFUSED or NOTIMP
	// to it would count against the upstream's health for a query the
	// client made up.
	if !forwardedClass(question.Qclass) {
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeNotSupported, unservedClassText)
		return msgReply(m, ResultRefused), true
	}
	if q.out.result == ResultServfail {
		return msgReply(notReadyReply(req, q.out.policy.Policy), ResultServfail), true
	}
	if q.out.result == ResultLocal {
		return msgReply(h.localReply(q, req), ResultLocal), true
	}

	// 7. Forward: the cache first; the upstreams are resume's.
	q.key = keyOf(req)
	return h.fromCache(q)
}

// fromCache is step 7's cache lookup for q, whose key is set: a hit, or an
// expired answer served stale while stale_refresh_time holds off the
// upstreams that failed to refresh it (unrefreshedEntry); ok is false for
// a miss, which goes upstream (resume).
func (h *Handler) fromCache(q *query) (r reply, ok bool) {
	cache := h.cache.Load()
	if e, prefetch := cache.get(q.key, q.start); e != nil {
		return h.cached(q, e, prefetch), true
	}
	if e := cache.unrefreshedEntry(q.key, q.start); e != nil {
		if stale := e.aged(q.start, staleTTL); stale != nil {
			return h.forwarded(q, stale, upstreamStale, nil), true
		}
		return h.unreadFromCache(q, e, q.start, true), true
	}
	return reply{}, false
}

// admit applies the client's rate limit. Over it, a UDP query is dropped
// (an answer would make dnsfence an amplifier) and one on any other
// transport refused: limited is true and r is that. Blocked answers count
// too, and so do the FORMERR and NOTIMP of messages the listener rejected
// (ServeReject). Every source outside allowed_clients, to be refused,
// shares one bucket (unallowedBucket).
func (h *Handler) admit(q *query) (r reply, limited bool) {
	if !h.overLimit(q) {
		return reply{}, false
	}
	if !q.stream() {
		return reply{result: ResultDropped}, true
	}
	return msgReply(newReply(q.req, dns.RcodeRefused), ResultRefused), true
}

// overLimit takes a token for q's client (admit), and reports whether
// there was none: the client is over its rate limit, which is counted and
// logged at most once a minute.
func (h *Handler) overLimit(q *query) bool {
	snap := q.snap
	limiter := h.limiter.Load()
	if limiter == nil || snap.RateExempt(q.client) {
		return false
	}
	allowed := snap.Allowed(q.id.Source)
	if allowed && limiter.allow(q.client, q.start) || !allowed && limiter.allowUnallowed(q.start) {
		return false
	}
	h.metrics.rateLimited.WithLabelValues(q.transport).Inc()
	switch {
	case allowed && limiter.shouldLog(q.client, q.start):
		h.log.Warn("client over its rate limit", zap.String(logClient, q.client.String()),
			zap.Float64("rate", snap.Config.RateLimit.Rate), zap.Int("burst", snap.Config.RateLimit.Burst))
	case !allowed && limiter.shouldLogUnallowed(q.start):
		h.log.Warn("sources outside allowed_clients over the rate limit they share", zap.String(logClient, q.client.String()),
			zap.Float64("rate", snap.Config.RateLimit.Rate), zap.Int("burst", snap.Config.RateLimit.Burst))
	}
	return true
}

// ServeReject answers a message the listener rejected before any query
// was parsed of it (listen.RejectHandler): reject, its FORMERR or NOTIMP,
// counted as result. Such an answer takes a token of the client's rate
// limit like every other (admit), so that a flood of malformed datagrams
// from spoofed sources is not reflected one for one: over the limit it is
// dropped on UDP, and REFUSED on every other transport. The client is the
// transport peer (or the one a PROXY header named): an EDNS Client Subnet
// option cannot be read from a message that did not parse.
func (h *Handler) ServeReject(w listen.ResponseWriter, reject *dns.Msg, result string) {
	q := query{w: w, transport: w.Transport(), snap: h.state.Load()}
	if q.snap != nil {
		q.start = time.Now()
		q.id, _ = peerIdentity(q.snap, w)
		q.client = q.id.Client.Addr()
		if h.overLimit(&q) {
			if !q.stream() {
				h.metrics.query(q.transport, ResultDropped)
				return
			}
			// reject has the query's ID, opcode, RD bit and OPT.
			reject, result = newReply(reject, dns.RcodeRefused), ResultRefused
		}
	}
	h.metrics.query(q.transport, result)
	_ = w.WriteMsg(reject)
}

var _ listen.RejectHandler = (*Handler)(nil)

// cached is the reply from the cache entry e, inspected as a fresh answer
// would be; prefetch refreshes e in the background.
func (h *Handler) cached(q *query, e *cacheEntry, prefetch bool) reply {
	h.metrics.cacheLookup(cacheHit)
	if prefetch {
		h.startPrefetch(q, e)
	}
	q.upstream = upstreamCache
	if r, replaced := h.inspectEntry(q, e, q.start); replaced {
		return r
	}
	result := e.result()
	// A query with a Client Subnet to echo takes the message, but for an
	// answer that has none (miekg/dns does not unpack it): write echoes
	// it into the packed answer (appendECSEcho).
	if (q.id.ECS == nil || e.message() == nil) && e.wireForm() != nil {
		if r, ok := packedCached(q, e, result); ok {
			return r
		}
	}
	return agedReply(q, e, q.start, result)
}

// agedReply is the reply from e, aged to now, built as a message.
func agedReply(q *query, e *cacheEntry, now time.Time, result string) reply {
	m := e.aged(now, 0)
	if m == nil {
		return malformedReply(q)
	}
	return msgReply(upstreamReply(q.request(), m), result)
}

// malformedReply is the SERVFAIL of a query whose upstream answer, taken
// in wire form, miekg/dns cannot unpack when the message is needed (for
// its inspection, or to fit it to the client): no name in it is sent
// unchecked.
func malformedReply(q *query) reply {
	return msgReply(servfailReply(q.request(), dns.ExtendedErrorCodeNetworkError, "no upstream gave a usable answer"), ResultServfail)
}

// forward is resume's part of the pipeline: the upstreams for a cache
// miss, then the answer's inspection (step 8).
func (h *Handler) forward(ctx context.Context, q *query) reply {
	h.metrics.cacheLookup(cacheMiss)
	if q.wire.ok {
		h.startClientTimer(q.left)
		c := h.fetchWire(ctx, q)
		r, ok := h.wireReply(q, c)
		if c != &q.left.call {
			c.left.release() // joined another's call: its result is taken
		}
		if ok {
			return r
		}
	}
	return h.forwardMessage(ctx, q)
}

// wireReply is forward's reply from the wire call c that asked for q,
// none when q's client response timer answered it meanwhile; ok is false
// when q must go upstream as a message (errNotWire).
func (h *Handler) wireReply(q *query, c *wireCall) (r reply, ok bool) {
	e, resp, upstream, err := h.resolvedWire(q, c)
	switch {
	case errors.Is(err, errNotWire):
		return reply{}, false
	case !q.claimAnswer():
		return reply{}, true
	case e != nil:
		return h.forwardedWire(q, e, upstream), true
	}
	return h.forwarded(q, resp, upstream, err), true
}

// forwardMessage is forward for a query that goes upstream as a message;
// its reply is none when the query's client response timer (a wire
// query's, clientTimer) answered it meanwhile.
func (h *Handler) forwardMessage(ctx context.Context, q *query) reply {
	res, err := h.resolve(ctx, q)
	if !q.claimAnswer() {
		return reply{}
	}
	switch {
	case res.unread == nil:
		return h.forwarded(q, res.msg, res.upstream, err)
	case res.upstream == upstreamStale, res.upstream == upstreamCache:
		return h.unreadFromCache(q, res.unread, time.Now(), res.upstream == upstreamStale)
	}
	return h.forwardedWire(q, res.unread, res.upstream)
}

// forwarded is forward's reply from the upstreams' answer resp as a
// message, from upstream, or their error. It is where every stale answer
// (upstreamStale) is made and counted: when every upstream failed
// (resolve, resolvedWire), while stale_refresh_time holds them off
// (fromCache), and when they have not answered within
// stale_answer_client_timeout (fetchWithin, clientTimer).
func (h *Handler) forwarded(q *query, resp *dns.Msg, upstream string, err error) reply {
	req := q.request()
	q.upstream = upstream
	if err != nil && unreadAnswered(err) {
		// The upstreams' answer, which the cache could not hold
		// (putUnread): no failure to serve an expired answer for.
		return malformedReply(q)
	}
	if err != nil {
		// An answer miekg/dns does not unpack is served stale (or fresh,
		// refreshed meanwhile) from its wire form: Cache.answerOnFailure
		// gives messages.
		if e, stale := h.cache.Load().unreadEntry(q.key, time.Now()); e != nil {
			return h.unreadFromCache(q, e, time.Now(), stale)
		}
		return h.failure(q, err)
	}
	if upstream == upstreamStale {
		h.metrics.cacheLookup(cacheStale)
	}
	if h.inspect(q, resp) {
		return h.blocked(q)
	}
	m := upstreamReply(req, q.out.scrub(resp))
	if upstream == upstreamStale {
		addEDE(m, staleEDE(resp.Rcode), staleText)
	}
	return msgReply(m, ResultForwarded)
}

// unreadFromCache is the reply from e, a cache entry miekg/dns does not
// unpack, at now, to a query whose upstreams failed or are held off
// (stale_refresh_time): served stale, with every TTL 30 and EDE 3 or 19
// (RFC 8767 §4, staleEDE), when stale, else as a hit; packed from its wire
// form (appendCached, staleCached), as forwarded makes the answer of an
// entry with a message, and counted and logged alike.
func (h *Handler) unreadFromCache(q *query, e *cacheEntry, now time.Time, stale bool) reply {
	q.upstream = upstreamCache
	if stale {
		q.upstream = upstreamStale
		h.metrics.cacheLookup(cacheStale)
	}
	if r, replaced := h.inspectEntry(q, e, now); replaced {
		return r
	}
	bufp := answerBufs.Get().(*[]byte)
	a := q.asked()
	b, ok := a.appendCached((*bufp)[:0], e, now, dns.MaxMsgSize)
	if !ok {
		answerBufs.Put(bufp)
		return malformedReply(q)
	}
	if stale {
		b = a.staleCached(b, e)
	}
	*bufp = b
	return reply{wire: b, buf: bufp, rcode: e.rcode, result: e.result(), cached: e}
}

// staleText is the text of a stale answer's Extended DNS Error.
const staleText = "no usable upstream answer in time; answer from cache past its TTL"

// staleEDE is the Extended DNS Error of a stale answer of RCODE rcode: 19
// "Stale NXDOMAIN Answer" for an NXDOMAIN, else 3 "Stale Answer" (RFC 8914
// §4.4, §4.20).
func staleEDE(rcode int) uint16 {
	if rcode == dns.RcodeNameError {
		return dns.ExtendedErrorCodeStaleNXDOMAINAnswer
	}
	return dns.ExtendedErrorCodeStaleAnswer
}

// failure is the SERVFAIL of a query whose upstreams failed with err,
// after the throttled warning.
func (h *Handler) failure(q *query, err error) reply {
	req := q.request()
	qname := req.Question[0].Name
	var ue *upstream.UpstreamError
	if errors.As(err, &ue) {
		h.warnUpstreams(ue.Upstreams(), q.start, func() []zap.Field {
			return []zap.Field{zap.Error(err), zap.String(logQName, qname), zap.String(logCause, ue.Causes())}
		})
		own := *failureAnswer(req, ue)
		return msgReply(upstreamReply(req, &own), ResultServfail)
	}
	h.warnUpstreams(nil, q.start, func() []zap.Field {
		return []zap.Field{zap.Error(err), zap.String(logQName, qname)}
	})
	if errors.Is(err, errOverloaded) {
		return msgReply(servfailReply(req, dns.ExtendedErrorCodeOther, "too many upstream queries in flight"), ResultServfail)
	}
	return msgReply(servfailReply(req, dns.ExtendedErrorCodeNetworkError, "no upstream gave a usable answer"), ResultServfail)
}

// warnUpstreams writes the "upstreams failed" line naming upstreams (nil
// for a failure before any was asked) unless each was named by a line in
// the last warnEvery, with the count of lines suppressed since the last
// one: a dead upstream under load is one line per interval, not one per
// query. lineFields is called only for a line that is written.
func (h *Handler) warnUpstreams(upstreams []string, now time.Time, lineFields func() []zap.Field) {
	ok, suppressed := h.upstreamWarn.allow(upstreams, now)
	if !ok {
		return
	}
	fields := lineFields()
	if len(upstreams) > 0 {
		fields = append(fields, zap.Strings(logUpstream, upstreams))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int(logSuppressed, suppressed))
	}
	h.log.Warn("upstreams failed", fields...)
}

// inspect is step 8 for q's answer resp, fresh or cached
// (outcome.inspect): it reports whether the answer must become the blocked
// answer. In shadow mode the block is recorded, not answered.
func (h *Handler) inspect(q *query, resp *dns.Msg) bool {
	via := q.out.inspect(resp)
	if via == "" {
		return false
	}
	q.via = via
	return q.out.result == ResultBlocked
}

// inspectEntry inspects the answer e holds as inspect does a fresh one,
// unpacking it only when that could change the outcome (outcome.inspects):
// when it names more than the question (cacheEntry.addsNames), or when the
// client's policy has response-IP triggers, which look at every address.
// It returns the reply to give instead of e's (the blocked answer, the
// answer aged to now without the records scrub leaves out, or the
// SERVFAIL of an answer that no longer unpacks) and true, or false.
func (h *Handler) inspectEntry(q *query, e *cacheEntry, now time.Time) (reply, bool) {
	if !q.out.inspects() || !e.addsNames() && !q.out.inspectsAddresses() {
		return reply{}, false
	}
	msg := e.message()
	if msg == nil {
		return malformedReply(q), true
	}
	if h.inspect(q, msg) {
		return h.blocked(q), true
	}
	if q.out.scrub(msg) != msg {
		m := e.aged(now, 0)
		return msgReply(upstreamReply(q.request(), q.out.scrub(m)), e.result()), true
	}
	return reply{}, false
}

// Where an answer came from when it was not an upstream.
const (
	upstreamCache = "cache"
	upstreamStale = "cache-stale"
)

// errOverloaded is returned when upstream_inflight queries are already
// waiting on the upstreams.
var errOverloaded = errors.New("too many upstream queries in flight")

// resolve returns a private shallow copy of the upstream answer for the
// cache miss q (for upstreamReply, which writes no shared part of it),
// identical concurrent misses sharing one upstream query; when every
// upstream fails (timeouts, errors, unusable answers, or SERVFAIL, REFUSED,
// NOTIMP, FORMERR, BADVERS, BADCOOKIE or another failure RCODE: Forward's error), a stale cached answer if serve_stale allows
// (RFC 8767 §4), which forwarded marks with EDE 3 or 19 (staleEDE), or the
// fresh one another upstream query cached meanwhile, as a cache hit
// (Cache.answerOnFailure). An expired answer that may be served stale is returned so as well when the
// upstreams have not answered within stale_answer_client_timeout
// (fetchWithin), unless q is a wire query whose own timer runs
// (clientTimer); one miekg/dns does not unpack as the cache entry
// (fetchResult.unread).
func (h *Handler) resolve(ctx context.Context, q *query) (fetchResult, error) {
	snap, req, key, tcp := q.snap, q.request(), q.key, q.upstreamTCP()
	now := time.Now()
	var res fetchResult
	var err error
	if wait, ok := h.clientTimeout(q, now); ok {
		res, err = h.fetchWithin(ctx, snap, req, key, tcp, wait)
	} else {
		res, err = h.fetch(ctx, snap, req, key, tcp)
	}
	if err != nil {
		if unreadAnswered(err) {
			return fetchResult{}, err // the upstreams' answer, which the cache could not hold (ask): no failure
		}
		if m, from := h.cache.Load().answerOnFailure(key, q.start, time.Now(), upstreamsFailed(err)); m != nil {
			return fetchResult{msg: m, upstream: from}, nil
		}
		return fetchResult{}, err
	}
	if res.msg != nil {
		own := *res.msg
		res.msg = &own
	}
	return res, nil
}

// clientTimeout is Cache.clientTimeout for the message query q at now;
// ok is false for a wire query whose own timer runs (clientTimer).
func (h *Handler) clientTimeout(q *query, now time.Time) (wait time.Duration, ok bool) {
	if q.timer() != nil {
		return 0, false
	}
	return h.cache.Load().clientTimeout(q.key, q.start, now)
}

// upstreamsFailed reports whether err says every upstream was asked and
// failed, rather than that none could be asked (errOverloaded) or that one
// answered with a record miekg/dns does not read (unreadAnswered).
func upstreamsFailed(err error) bool {
	ue, ok := errors.AsType[*upstream.UpstreamError](err)
	return ok && !ue.Answered()
}

// unreadAnswered reports whether err holds an upstream's whole answer
// with a record miekg/dns does not read (upstream.UpstreamError.Answered):
// the upstreams' answer to the query, which ask and storeWire cache and
// the query is given, never a failure that an expired answer is served
// stale for (RFC 8767 §4) or that starts stale_refresh_time.
func unreadAnswered(err error) bool {
	ue, _ := errors.AsType[*upstream.UpstreamError](err) // no allocation: called for every wire answer
	return ue.Answered()
}

// fetch asks the upstreams once for every concurrent identical query and
// caches the answer, or, when every upstream answered SERVFAIL, the failure
// briefly. The returned message is shared: callers copy it.
func (h *Handler) fetch(ctx context.Context, snap *Snapshot, req *dns.Msg, key cacheKey, tcp bool) (fetchResult, error) {
	v, err, _ := h.flight.Do(key.flight(tcp), func() (v any, err error) {
		defer h.recoverShared(key, &err)
		return h.ask(ctx, snap, req, key, tcp)
	})
	return fetched(v, err)
}

// fetchWithin is fetch for a query whose cached answer has expired but may
// be served stale, within RFC 8767 §5's client response timer: when the
// upstreams have not answered within wait, it returns that answer stale
// (upstreamStale), or the fresh one another upstream query has cached
// meanwhile (upstreamCache; Cache.answerAtTimer; an answer miekg/dns does
// not unpack as its entry, Cache.unreadEntry, as clientTimer's fire
// gives it), and the upstream query goes on in the
// background, counted in flight until it ends (outlive), which caches their
// answer, or records their failure for stale_refresh_time, as resolve does
// for a query still waiting for it.
// The queries sharing an upstream query each wait for their own time
// (see clientTimer for why).
func (h *Handler) fetchWithin(ctx context.Context, snap *Snapshot, req *dns.Msg, key cacheKey, tcp bool, wait time.Duration) (fetchResult, error) {
	// The refresh may outlive the query, and a wire query's name is in its
	// own memory (wireQuery.own).
	key.name = strings.Clone(key.name)
	ch := h.flight.DoChan(key.flight(tcp), func() (v any, err error) {
		defer h.recoverShared(key, &err)
		start := time.Now()
		v, err = h.ask(ctx, snap, req, key, tcp)
		if err != nil && upstreamsFailed(err) {
			h.cache.Load().failedRefresh(key, start, time.Now())
		}
		return v, err
	})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case res := <-ch:
		return fetched(res.Val, res.Err)
	case <-timer.C:
	}
	cache, now := h.cache.Load(), time.Now()
	if m, from := cache.answerAtTimer(key, now); m != nil {
		h.outlive(ch)
		return fetchResult{msg: m, upstream: from}, nil
	}
	if e, stale := cache.unreadEntry(key, now); e != nil {
		h.outlive(ch)
		from := upstreamCache
		if stale {
			from = upstreamStale
		}
		return fetchResult{unread: e, upstream: from}, nil
	}
	res := <-ch // gone from the cache: the upstreams' answer, as it comes
	return fetched(res.Val, res.Err)
}

// outlive keeps the upstream query whose result ch gives counted in
// flight (begin) until it ends, for a query fetchWithin answered at its
// timer, which no longer waits for it: Shutdown (Wait) waits for the
// refresh within its budget, so that none writes the cache after the
// server has stopped, and dnsfence_inflight_queries counts it, as a wire
// query answered at its timer stays counted until its refresh ends
// (WireDone, fetchWire). Called while the query is still counted, so
// that Wait never sees the count reach zero in between.
func (h *Handler) outlive(ch <-chan singleflight.Result) {
	h.begin()
	go func() {
		defer h.done()
		<-ch
	}()
}

// recoverShared, deferred by the function of an upstream query that
// identical queries share (fetch's, fetchWithin's), logs its panic and
// makes it the query's error, errSharedPanicked, for whoever still waits
// for it. singleflight would panic again, in each Do caller but, once a
// DoChan caller (fetchWithin) shares the call, on a goroutine of its own
// that nothing recovers, ending the process; and a Do call and a DoChan
// call of one key do share (a wire query whose own timer runs asks with
// Do on the message path, as a prefetch does).
func (h *Handler) recoverShared(key cacheKey, err *error) {
	if r := recover(); r != nil {
		h.log.Error("panic asking the upstreams", zap.Any("panic", r), zap.String(logQName, key.name),
			zap.ByteString("stack", debug.Stack()))
		*err = errSharedPanicked
	}
}

// errSharedPanicked is the error of a shared upstream query that
// panicked (recoverShared).
var errSharedPanicked = errors.New("asking the upstreams failed")

// fetchResult is an upstream answer fetch shares: the message, cached,
// and where it came from; or the cache entry of an answer miekg/dns does
// not unpack, an upstream's (ask), or at a query's client response timer
// (fetchWithin) served stale (upstreamStale) or fresh (upstreamCache).
type fetchResult struct {
	msg      *dns.Msg
	unread   *cacheEntry
	upstream string
}

// fetched is fetch's result from what its upstream query returned.
func fetched(v any, err error) (fetchResult, error) {
	if err != nil {
		return fetchResult{}, err
	}
	return v.(fetchResult), nil
}

// ask asks the upstreams for req, once for every identical query that
// shares it (fetch, fetchWithin), and caches the answer (fetchResult), or,
// when every upstream answered SERVFAIL, the failure briefly. An answer
// miekg/dns does not read is cached here too, in wire form (putUnread),
// as every answer is, so that a refresh no query waits for any more (a
// prefetch, fetchWithin's past the client response timer) caches it.
func (h *Handler) ask(ctx context.Context, snap *Snapshot, req *dns.Msg, key cacheKey, tcp bool) (any, error) {
	if !h.slots.acquire() {
		return nil, errOverloaded
	}
	defer h.slots.release()
	msg, from, err := snap.Forwarder().Forward(ctx, req, tcp)
	if err != nil {
		ue, _ := errors.AsType[*upstream.UpstreamError](err)
		switch {
		case ue.Answered():
			if e, ok := h.cache.Load().putUnread(key, ue.Unread, time.Now()); ok {
				return fetchResult{unread: e, upstream: ue.UnreadFrom}, nil
			}
		case ue != nil && ue.AllServfail():
			h.cache.Load().putFailure(key, failureAnswer(req, ue), time.Now())
		}
		return nil, err
	}
	msg = h.cache.Load().put(key, msg, time.Now())
	return fetchResult{msg: msg, upstream: from}, nil
}

// failureAnswer is the SERVFAIL for req when no upstream answered usably,
// in the form of an upstream answer, so that it is cached and relayed like
// one: it always has an OPT (upstreamReply drops it for a client without
// EDNS) holding the Extended DNS Errors of the last upstream answer when
// it was a SERVFAIL, which may say why (DNSSEC Bogus, say: first, for a
// client that shows one EDE, as Unbound and dnsdist relay it alone), but
// never EDE 3 or 19: those speak of stale data, and a SERVFAIL holds none;
// then our own (UpstreamError.EDE). The RCODE is always SERVFAIL, never an
// upstream's REFUSED, NOTIMP, FORMERR, BADVERS, BADCOOKIE or other RCODE: those speak of the
// upstream's dealings with dnsfence, not of the client's query.
func failureAnswer(req *dns.Msg, ue *upstream.UpstreamError) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	var opts []dns.EDNS0
	if a := ue.Answer; a != nil && a.Rcode == dns.RcodeServerFailure && a.IsEdns0() != nil {
		for _, o := range a.IsEdns0().Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok && e.InfoCode != dns.ExtendedErrorCodeStaleAnswer &&
				e.InfoCode != dns.ExtendedErrorCodeStaleNXDOMAINAnswer {
				opts = append(opts, e)
			}
		}
	}
	code, text := ue.EDE()
	opts = append(opts, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
	m.SetEdns0(ednsSize, false)
	m.IsEdns0().Option = opts
	return m
}

// startPrefetch refreshes the cache entry e, which a lookup for q found
// due and claimed (Cache.get's prefetch), in the background: a claim not
// acted on would leave e never refreshed. The prefetch is counted in
// flight (begin) until it ends, as a refresh that outlives its query is
// (outlive): Shutdown (Wait) waits for it within its budget, so that none
// writes the cache after the server has stopped, and
// dnsfence_inflight_queries counts it. Called while q is still counted,
// so that Wait never sees the count reach zero in between.
func (h *Handler) startPrefetch(q *query, e *cacheEntry) {
	key := q.key
	key.name = strings.Clone(key.name) // a wire query's is the pool's
	req, tcp := q.request().Copy(), q.upstreamTCP()
	// Counted once nothing before the goroutine can fail: a count taken
	// and never ended would hold Shutdown for its whole budget.
	h.begin()
	go h.prefetch(q.snap, e, req, key, tcp)
}

// prefetch refreshes the cache entry e in the background, and ends what
// startPrefetch counted in flight; when the upstreams fail, a later hit
// tries again, and once e has expired the failure is recorded on it
// (Cache.failedPrefetch) for stale_refresh_time, as a query's own refresh
// records it: the queries that found e expired meanwhile joined this
// upstream query, and those answered at their client response timer no
// longer wait for it to record the failure.
func (h *Handler) prefetch(snap *Snapshot, e *cacheEntry, req *dns.Msg, key cacheKey, tcp bool) {
	defer h.done()
	if _, err := h.fetch(context.Background(), snap, req, key, tcp); err != nil {
		e.prefetchFailed()
		if upstreamsFailed(err) {
			h.cache.Load().failedPrefetch(key, e, time.Now())
		}
	}
}

// reply is the one answer to a query, as write sends it: a message, or the
// answer already packed with its RCODE (the blocked answer and a cache
// hit, dnsfence's commonest, which skip building a message). result is how
// the query is counted and logged; a reply of result ResultDropped has
// nothing to send.
type reply struct {
	msg    *dns.Msg
	wire   []byte  // the packed answer, when msg is nil
	buf    *[]byte // wire's buffer, from answerBufs; write gives it back
	rcode  int     // wire's RCODE (write takes msg's from msg)
	result string  // a Result*
	// cached: wire was packed from this cache entry; else it is the
	// blocked answer.
	cached *cacheEntry
}

// msgReply is the reply m, counted as result.
func msgReply(m *dns.Msg, result string) reply { return reply{msg: m, result: result} }

// none reports the zero reply, with no result: the query was answered
// already, by its client response timer (clientTimer), and nothing is to
// be sent or recorded.
func (r reply) none() bool { return r.result == "" }

// blocked is the blocked answer for q under its policy's action. The
// common ones (NXDOMAIN or REFUSED, no Client Subnet to echo) are packed
// straight to bytes by appendBlocked; blockedMsg builds the others.
func (h *Handler) blocked(q *query) reply {
	snap, pol := q.snap, q.out.policy.Policy
	d := q.out.decision
	nodata := d.Trigger.Action == blocklist.ActionNODATA
	if d.Trigger.Action == blocklist.ActionDrop {
		// RPZ rpz-drop: no answer at all, on every transport (as BIND's
		// DROP); counted and logged as dropped.
		return reply{result: ResultDropped}
	}
	action := d.action(pol)
	if (nodata || action == config.ActionNXDomain || action == config.ActionRefused) && q.id.ECS == nil {
		rcode := dns.RcodeNameError
		switch {
		case nodata:
			rcode = dns.RcodeSuccess
		case action == config.ActionRefused:
			rcode = dns.RcodeRefused
		}
		bufp := answerBufs.Get().(*[]byte)
		a := q.asked()
		qname := q.wire.name // lowercase: soaOwner gives the same owner for any spelling
		if q.req != nil {
			qname = q.req.Question[0].Name
		}
		b, ok := a.appendBlocked((*bufp)[:0], rcode, soaOwner(qname, d, q.via != ""),
			snap.Config.BlockedTTL, uint32(snap.Loaded.Unix()), pol.BlockedText(d.Entry.List.File()), dns.MaxMsgSize)
		*bufp = b
		if ok {
			return reply{wire: b, buf: bufp, rcode: rcode, result: ResultBlocked}
		}
		answerBufs.Put(bufp)
	}
	return msgReply(blockedMsg(q), ResultBlocked)
}

// blockedMsg is q's blocked answer as a message.
func blockedMsg(q *query) *dns.Msg {
	snap := q.snap
	return blockedReply(q.request(), q.out.policy.Policy, q.out.decision, snap.Config.BlockedTTL, uint32(snap.Loaded.Unix()), q.via != "")
}

// packedCached is the cache hit e packed from its wire form by
// appendCached; ok is false when it cannot be (the client spells the name
// otherwise), and the message is built instead.
func packedCached(q *query, e *cacheEntry, result string) (reply, bool) {
	bufp := answerBufs.Get().(*[]byte)
	a := q.asked()
	b, ok := a.appendCached((*bufp)[:0], e, q.start, dns.MaxMsgSize)
	*bufp = b
	if !ok {
		answerBufs.Put(bufp)
		return reply{}, false
	}
	return reply{wire: b, buf: bufp, rcode: e.rcode, result: result, cached: e}, true
}

// write is where every answer leaves (DESIGN.md §1 steps 9 and 10): it
// fits r to the client (maxSize; a packed answer too big is built as a
// message and truncated: truncate), records the query (metrics, then the
// audit line, before the client can see the answer) and sends it. A
// dropped query is counted and gets nothing.
func (h *Handler) write(q *query, r reply) {
	if r.result == ResultDropped {
		if q.out.result == ResultBlocked {
			h.record(q, ResultDropped, noRcode) // an RPZ drop: audited like any block
			return
		}
		h.metrics.query(q.transport, ResultDropped)
		return
	}
	if r.buf != nil {
		defer answerBufs.Put(r.buf)
	}
	limit := q.maxSize()
	fits := len(r.wire) <= limit // as packed, before any fitting or ECS echo
	if r.msg == nil && r.cached != nil {
		r.wire = appendECSEcho(r.wire, q.id.ECS) // as echoECS echoes it into a message
	}
	if r.msg == nil && len(r.wire) > limit {
		switch {
		case r.cached != nil && r.cached.message() == nil:
			// No message to fit record by record (an answer miekg/dns
			// does not unpack): without the texts of its Extended DNS
			// Errors, as truncate leaves them out before a record (RFC
			// 8914 §2), else its header and question, with TC set.
			if short := withoutEDETexts(r.wire); len(short) <= limit {
				r.wire = short
			} else {
				a := q.asked()
				r.wire = a.truncatedCached(r.wire, r.cached, q.id.ECS, limit)
			}
		case r.cached != nil:
			// Aged to when it was packed: a fresh answer is younger than
			// its query.
			r = agedReply(q, r.cached, later(q.start, r.cached.stored), r.result)
		default:
			r.msg = blockedMsg(q)
		}
	}
	if m := r.msg; m != nil {
		echoECS(m, q.id.ECS, r.result == ResultLocal)
		// Names are compressed (RFC 1035 §4.1.4) in every answer: it never
		// makes one longer, and the upstream's answer was compressed too.
		m.Compress = true
		if !fitsIn(m, limit) {
			truncate(m, limit)
		}
		r.rcode = m.Rcode
	}
	h.record(q, r.result, r.rcode)
	var err error
	if r.msg != nil {
		err = q.w.WriteMsg(r.msg)
	} else {
		_, err = q.w.Write(r.wire)
	}
	if err != nil {
		h.log.Debug("writing answer", zap.Error(err), zap.String(logClient, q.client.String()))
		return
	}
	if q.memo != nil && fits {
		q.memo.keep(q, r)
	}
}

// truncate cuts m to limit octets, and sets TC only when a record the
// response requires was left out (RFC 2181 §9): one of the answer
// section, or of the authority section but for the NS RRset (and its
// RRSIGs) beside a non-empty answer section. Records the additional
// section has no room for are extra information, and so is the NS RRset
// of a positive answer (RFC 1034 §6.2.1's answer has an empty authority
// section; NSD, Unbound and dnsdist leave it out without TC): §9 says TC
// is not set merely for lack of room for them, as a client would ask
// again over TCP for nothing, and that the RRset that does not fit is then
// left out whole (leaveOutWhole). An authority section of no answer is
// the answer's substance (a negative answer's SOA, a referral's NS), and
// its other records may be required (an NSEC proving a wildcard answer,
// RFC 4035 §3.1.3.3): cutting them sets TC. The records are fitted by the
// octets they pack into (cutToFit, fitsIn), not by dns.Msg.Len, which
// counts an escaped character-string up to four times its octets and so
// cut answers that fit whole. cutToFit, as miekg/dns's Truncate, sets TC
// when any record is left out; Truncate leaves a message whose last record
// is a TSIG as it is, however long: the TSIG is set aside and the rest
// fitted to the room it leaves (fitRecords); it goes back last when it
// fits (packed with the rest), and
// is left out with TC set when it does not (the NOTAUTH to a signed query
// of a 512-octet client, whose TSIG carries the query's key and algorithm
// names, RFC 8945 §5.2.1), so that the client asks again over TCP.
func truncate(m *dns.Msg, limit int) {
	tsig := m.IsTsig()
	if tsig == nil {
		fitRecords(m, limit)
		return
	}
	m.Extra = slices.Clone(m.Extra[:len(m.Extra)-1])
	fitRecords(m, limit-dns.Len(tsig)) // Len of one record: its owner not compressed, never fewer octets
	m.Extra = append(m.Extra, tsig)
	if !fitsIn(m, limit) {
		m.Extra = m.Extra[:len(m.Extra)-1]
		m.Truncated = true
	}
}

// fitRecords is truncate for a message without a TSIG last.
func fitRecords(m *dns.Msg, limit int) {
	tc, answers, authority := m.Truncated, len(m.Answer), m.Ns
	extra := withoutOPT(m.Extra) // a copy: cutToFit moves the OPT last
	all := [...][]dns.RR{m.Answer, m.Ns, slices.Clone(m.Extra)}
	cutToFit(m, limit)
	if !fitsIn(m, limit) || cutsRequired(m, answers, authority) && hasEDEText(m) {
		// cutToFit keeps the OPT whole, and its Extended DNS Errors (an
		// upstream's, copied into it, or dnsfence's own: a stale answer's
		// EDE 3, a block's EDE 15) may alone be over the limit (RFC 6891
		// §7 bounds the whole datagram): then it kept no record. Or they
		// fit, but their texts leave out a record the answer requires,
		// which would set TC and have the client ask again over TCP. The
		// texts go first (shrinkOPT: RFC 8914 §2, they are for people,
		// not for resolution), then, when the OPT is still over the limit
		// alone, the options, and the records are fitted again beside
		// what is left.
		shrinkOPT(m, limit)
		m.Answer, m.Ns, m.Extra = all[0], all[1], all[2]
		cutToFit(m, limit)
	}
	cut := authority[len(m.Ns):] // cutToFit keeps a section's first records
	m.Truncated = tc || cutsRequired(m, answers, authority)
	if m.Truncated {
		return // a part of an RRset may stay (§9); the client asks again
	}
	if len(cut) > 0 {
		m.Ns = leaveOutWhole(m.Ns, cut)
	}
	if kept := withoutOPT(m.Extra); len(kept) < len(extra) {
		kept = leaveOutWhole(kept, extra[len(kept):])
		if opt := m.IsEdns0(); opt != nil {
			kept = append(kept, opt)
		}
		m.Extra = kept
	}
}

// cutsRequired reports whether m, cut by cutToFit from a message of
// answers answer records and the authority section authority, left out a
// record the response requires (truncate): one of the answer section, or
// of the authority section but for the NS RRset beside a non-empty answer.
func cutsRequired(m *dns.Msg, answers int, authority []dns.RR) bool {
	cut := authority[len(m.Ns):] // cutToFit keeps a section's first records
	return len(m.Answer) < answers || len(cut) > 0 && (answers == 0 || !allNS(cut))
}

// hasEDEText reports whether m's OPT holds an Extended DNS Error with a
// text (EXTRA-TEXT, RFC 8914 §2), which shrinkOPT would leave out.
func hasEDEText(m *dns.Msg) bool {
	opt := m.IsEdns0()
	if opt == nil {
		return false
	}
	return slices.ContainsFunc(opt.Option, func(o dns.EDNS0) bool {
		e, ok := o.(*dns.EDNS0_EDE)
		return ok && e.ExtraText != ""
	})
}

// leaveOutWhole drops from kept, the records of a section that fitted,
// those of every RRset of which a record is in cut, the records that did
// not: an RRset that does not fit goes whole, with its RRSIGs (a signed
// RRset is never sent without them, RFC 4035 §3.1.1), its records before
// another RRset's too (RFC 2181 §5: an RRset is every record of one owner,
// class and type, wherever it stands in the section).
func leaveOutWhole(kept, cut []dns.RR) []dns.RR {
	gone := make(map[rrsetKey]bool, len(cut))
	for _, rr := range cut {
		gone[keyOfRRset(rr)] = true
	}
	out := make([]dns.RR, 0, len(kept))
	for _, rr := range kept {
		if !gone[keyOfRRset(rr)] {
			out = append(out, rr)
		}
	}
	return out
}

// rrsetKey names an RRset: its owner (lowercased, RFC 4343), class and
// type (rrsetType: an RRSIG is of the RRset it covers).
type rrsetKey struct {
	owner string
	class uint16
	typ   uint16
}

// keyOfRRset is the RRset rr belongs to.
func keyOfRRset(rr dns.RR) rrsetKey {
	h := rr.Header()
	return rrsetKey{owner: strings.ToLower(h.Name), class: h.Class, typ: rrsetType(rr)}
}

// withoutOPT is a new slice of the records of rrs but OPT records.
func withoutOPT(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// allNS reports whether every record of rrs is an NS record or an RRSIG
// covering NS records.
func allNS(rrs []dns.RR) bool {
	for _, rr := range rrs {
		if rrsetType(rr) != dns.TypeNS {
			return false
		}
	}
	return true
}

// rrsetType is the type of the RRset rr belongs to or, for an RRSIG, the
// type it covers.
func rrsetType(rr dns.RR) uint16 {
	if sig, ok := rr.(*dns.RRSIG); ok {
		return sig.TypeCovered
	}
	return rr.Header().Rrtype
}

// shrinkOPT makes m's OPT record fit an answer of limit octets: the
// Extended DNS Errors' texts go first (RFC 8914 §2: for people, not for
// resolution), then the options. An EDE's code is kept while it fits.
func shrinkOPT(m *dns.Msg, limit int) {
	opt := m.IsEdns0()
	if opt == nil {
		return
	}
	// New options, not the old ones changed: they may be a cached
	// answer's, which other clients read.
	short := make([]dns.EDNS0, len(opt.Option))
	for i, o := range opt.Option {
		short[i] = o
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			short[i] = &dns.EDNS0_EDE{InfoCode: e.InfoCode}
		}
	}
	opt.Option = short
	if !fitsIn(m, limit) {
		opt.Option = nil
	}
}

// noRcode is the rcode recorded for a query that got no answer.
const noRcode = -1

// record counts and logs the query answered with result and rcode
// (noRcode: no answer was sent).
func (h *Handler) record(q *query, result string, rcode int) {
	h.metrics.query(q.transport, result)
	if e := q.out.decision.Entry; (q.out.result == ResultBlocked || q.out.shadow) && e.List != nil {
		h.metrics.blockedBy(q.out.policy.Policy, e.List.File(), q.out.shadow)
	}
	h.logQuery(q, result, rcode)
}

// answerBufs are buffers for packed answers.
var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// explainZone holds the CHAOS TXT questions that ask for an explanation:
// `dig CH TXT www.tiktok.com.explain.dnsfence.` explains www.tiktok.com for
// the asking client.
const explainZone = "explain.dnsfence."

// explainName is the name a CHAOS TXT question below explain.dnsfence.
// asks about, with its trailing dot. The last two labels decide, not the
// last characters: `x\.explain.dnsfence.`, whose labels are "x.explain"
// and "dnsfence", is no explain question.
func explainName(q dns.Question) (string, bool) {
	if q.Qclass != dns.ClassCHAOS || q.Qtype != dns.TypeTXT {
		return "", false
	}
	i, start := dns.PrevLabel(q.Name, 2)
	if start || i == 0 || !blocklist.SameName(q.Name[i:], explainZone) {
		return "", false
	}
	return q.Name[:i], true
}

// txtEscaper writes plain text as a TXT string in presentation form.
var txtEscaper = strings.NewReplacer(`\`, `\\`)

// explain answers the CHAOS explain query with the reason text, one TXT
// string a line, to clients in explain_clients only.
func (h *Handler) explain(q *query, name string) reply {
	req, snap := q.req, q.snap
	if !snap.ExplainAllowed(q.id.Client) {
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeProhibited, "client not in explain_clients")
		return msgReply(m, ResultRefused)
	}
	text := snap.ExplainFor(q.id, name, dns.TypeA).ClientString()
	txt := &dns.TXT{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS}}
	// A TXT string holds at most 255 octets; miekg/dns reads Txt in
	// presentation form, so the backslashes of escaped names are escaped
	// once more to reach the client as written.
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		for len(line) > 255 {
			txt.Txt = append(txt.Txt, txtEscaper.Replace(line[:255]))
			line = line[255:]
		}
		txt.Txt = append(txt.Txt, txtEscaper.Replace(line))
	}
	m := newReply(req, dns.RcodeSuccess)
	m.Answer = []dns.RR{txt}
	return msgReply(m, ResultExplained)
}

// chainDecision looks at every name an answer points the client at, the
// owners of its records and the targets of its aliases (aliasTarget), and
// returns the first that the policy blocks with that name. Each name
// follows the same rule as a question: an allow entry for that name beats
// a block entry. It is the one inspection of an answer: queries (fresh and
// cached answers alike) and explanations call it.
func chainDecision(p *Policy, resp *dns.Msg) (Decision, string, bool) {
	for _, rr := range resp.Answer {
		if name, d := hopDecision(p, rr); d.Blocked {
			return d, name, true
		}
	}
	return Decision{}, "", false
}

// badTSIG reports whether req carries a TSIG record other than one, the
// last record of its additional section (RFC 8945 §5.2), or one without
// RDATA (no algorithm name: a name on the wire has at least the root's).
func badTSIG(req *dns.Msg) bool {
	n := 0
	for _, sec := range [...][]dns.RR{req.Answer, req.Ns, req.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeTSIG {
				n++
			}
		}
	}
	tsig := req.IsTsig()
	return n > 1 || n == 1 && (tsig == nil || tsig.Algorithm == "")
}

// strayRecords reports whether req, a QUERY, carries records no query
// has a place for: any in the answer section, any in the authority
// section but an IXFR's SOA (RFC 1995 §3: the client's version of the
// zone; the IXFR is then refused as a zone transfer), or in the
// additional section any but the OPT and a TSIG. A query asks; records
// beside its question say nothing dnsfence could use (RFC 1035 §4.1.1
// defines no meaning for them), and it was answered for its question
// alone, where Unbound answers FORMERR and NSD, behind dnsdist, too. A
// NOTIFY, whose answer section may carry the zone's SOA (RFC 1996 §3.7),
// is answered before this check.
func strayRecords(req *dns.Msg) bool {
	if len(req.Answer) > 0 {
		return true
	}
	ixfr := len(req.Question) == 1 && req.Question[0].Qtype == dns.TypeIXFR
	for _, rr := range req.Ns {
		if !ixfr || rr.Header().Rrtype != dns.TypeSOA {
			return true
		}
	}
	for _, rr := range req.Extra {
		if t := rr.Header().Rrtype; t != dns.TypeOPT && t != dns.TypeTSIG {
			return true
		}
	}
	return false
}

// checkEDNS is RFC 6891's check of a query's OPT record: more than one OPT,
// an OPT outside the additional section (§6.1.1) or one owned by another
// name than the root (§6.1.2: OWNER MUST be 0, as Unbound and BIND
// require) is FORMERR; an EDNS version above 0 is BADVERS (§6.1.3),
// answered with our OPT of version 0.
// It returns RcodeSuccess for a query without EDNS or with one good OPT.
func checkEDNS(req *dns.Msg) int {
	for _, sec := range [...][]dns.RR{req.Answer, req.Ns} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				return dns.RcodeFormatError
			}
		}
	}
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				return dns.RcodeFormatError
			}
			opt = o
		}
	}
	if opt != nil && opt.Hdr.Name != "." {
		return dns.RcodeFormatError
	}
	if opt != nil && opt.Version() != 0 {
		return dns.RcodeBadVers
	}
	return dns.RcodeSuccess
}

// misplacedDO is the DO bit of the first OPT record in req's answer or
// authority section, where checkEDNS found one.
func misplacedDO(req *dns.Msg) bool {
	for _, sec := range [...][]dns.RR{req.Answer, req.Ns} {
		for _, rr := range sec {
			if o, ok := rr.(*dns.OPT); ok {
				return o.Do()
			}
		}
	}
	return false
}

// hopDecision decides the names one answer record leads to: its owner, then
// the name it is an alias for, if any. It returns the first of them that is
// blocked, else the last with its decision.
func hopDecision(p *Policy, rr dns.RR) (string, Decision) {
	owner := rr.Header().Name
	d := p.Decide(owner)
	target, ok := aliasTarget(rr)
	if d.Blocked || !ok {
		return owner, d
	}
	return target, p.Decide(target)
}

// aliasTarget is the name rr sends the client to instead of its owner: the
// target of a CNAME, a DNAME (the zone that replaces the owner's, RFC
// 6672), or an HTTPS or SVCB record (RFC 9460 §2.4: the service endpoint in
// ServiceMode, the alias in AliasMode). An HTTPS or SVCB target of "." is
// no other name (§2.5: the owner itself in ServiceMode, no service in
// AliasMode). The targets of MX, SRV, NS and the like name servers of the
// owner, not aliases of it, and are not inspected.
func aliasTarget(rr dns.RR) (string, bool) {
	var target string
	switch v := rr.(type) {
	case *dns.CNAME:
		return v.Target, true
	case *dns.DNAME:
		return v.Target, true
	case *dns.HTTPS:
		target = v.Target
	case *dns.SVCB:
		target = v.Target
	default:
		return "", false
	}
	if target == "." {
		return "", false
	}
	return target, true
}

// validQuestion rejects meta types that never appear in a question
// (MetaQType).
func validQuestion(q dns.Question) bool {
	return !MetaQType(q.Qtype) && q.Name != ""
}

// MetaQType reports whether a question of type qtype is a format error:
// 0, OPT, TSIG and TKEY, which are never asked for (RFC 6891 §6.1.1, RFC
// 8945 §4.1, RFC 2930), MAILA and MAILB (RFC 1035 §3.2.3, obsolete), and
// the rest of the meta-TYPE range 128-248 (RFC 6895 §3.1): answered
// FORMERR here, as Unbound and NSD answer them, and never forwarded, where
// an upstream's FORMERR or NOTIMP to them would count against its health
// for a query the client made up. ANY (255) and the zone transfers
// (REFUSED, handled apart) are not among them.
func MetaQType(qtype uint16) bool {
	switch qtype {
	case dns.TypeNone, dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeMAILA, dns.TypeMAILB:
		return true
	}
	return qtype >= 128 && qtype <= 248
}

// logQuery writes the audit line of a blocked query (log.queries: blocked)
// or of every query (all), answered with result and rcode.
func (h *Handler) logQuery(q *query, result string, rcode int) {
	snap := q.snap
	mode := snap.Config.Log.Queries
	audit := q.out.result == ResultBlocked || q.out.shadow
	if mode == "none" || (mode == "blocked" && !audit) {
		return
	}
	var suppressed int
	if audit {
		ok, n := h.audit.allow(q.client, snap.Config.Log.AuditLimit, q.start)
		if !ok {
			return // counted in the metrics all the same
		}
		suppressed = n
	}
	var question []dns.Question
	// keep is the text a field may keep: a wire query's name, and the
	// entry that matched it (a slice of the name), are in memory a later
	// query reuses (the listener's name buffer, a left query's own, which
	// leftPool hands out again), unpacked since or not: a log core may
	// hold a field past this call.
	keep := func(s string) string { return s }
	if q.wire.ok {
		keep = strings.Clone
	}
	if q.req != nil {
		question = q.req.Question
	} else {
		question = []dns.Question{{Name: q.wire.name, Qtype: q.wire.qtype, Qclass: q.wire.qclass}}
	}
	fields := make([]zap.Field, 0, 14)
	client := q.client.String()
	if q.id.Client.Bits() != q.client.BitLen() {
		client = q.id.Client.String() // a subnet named by ECS
	}
	fields = append(fields, zap.String(logClient, client), zap.String(logResult, result))
	fields = append(fields, zap.String(logIdentity, q.id.Via))
	if q.id.Via != IdentityTransport {
		fields = append(fields, zap.String(logSource, q.id.Peer.String()))
	}
	if len(question) == 1 {
		fields = append(fields,
			zap.String(logQName, keep(strings.ToLower(question[0].Name))),
			zap.String(logQType, dns.Type(question[0].Qtype).String()))
	}
	fields = append(fields, zap.String(logTransport, q.transport))
	if o := q.out; o.hasPolicy {
		fields = append(fields, zap.String(logPolicy, o.policy.Policy.Name), zap.String(logRange, o.policy.Range.Prefix.String()))
	}
	if d := q.out.decision; d.Entry.List != nil {
		e := d.Entry
		fields = append(fields, zap.String(logList, e.List.File()))
		if serial, _ := e.List.Serial(); isTransfer(e.List.File()) {
			// A transfer has no lines: the owner names the entry, the
			// serial the content.
			fields = append(fields, zap.Uint32(logZoneSerial, serial))
		} else {
			fields = append(fields, zap.Int(logListLine, e.Line), zap.String(logListHash, e.List.Hash()))
		}
		fields = append(fields, zap.String(logEntry, keep(entryText(d))))
		if owner := e.Owner(d.Trigger); owner != "" {
			fields = append(fields, zap.String(logOwner, owner))
			if action, ok := triggerAction(d); ok {
				fields = append(fields, zap.String(logAction, action))
			}
		}
	}
	if q.via != "" {
		fields = append(fields, zap.String(logVia, q.via))
	}
	if q.out.shadow {
		fields = append(fields, zap.Bool(logShadow, true))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int(logSuppressed, suppressed))
	}
	if q.upstream != "" {
		fields = append(fields, zap.String(logUpstream, q.upstream))
	}
	if rcode != noRcode {
		fields = append(fields, zap.String(logRcode, dns.RcodeToString[rcode]))
	}
	fields = append(fields, zap.Duration(logDuration, time.Since(q.start)))
	h.log.Info("query", fields...)
}
