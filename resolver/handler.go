package resolver

import (
	"context"
	"errors"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
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
)

// Results of one query, as logged and counted.
const (
	ResultBlocked   = "blocked"
	ResultForwarded = "forwarded"
	ResultRefused   = "refused"
	ResultServfail  = "servfail"
	ResultFormerr   = "formerr"
	ResultNotimp    = "notimp"
	ResultBadvers   = "badvers"
	ResultDropped   = "dropped"
	ResultExplained = "explained"
)

// Handler runs the pipeline of one query (DESIGN.md §1) top to bottom.
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
	flight  singleflight.Group          // identical concurrent misses share one upstream query
	// inflight counts queries being answered, so shutdown can wait for them.
	inflight sync.WaitGroup
	// unwatched are the files the reloader cannot watch, for /readyz.
	unwatched atomic.Pointer[[]string]
	// reload is the outcome of the last reload, for /readyz; nil before
	// the first.
	reload atomic.Pointer[ReloadStatus]
}

var _ dns.Handler = (*Handler)(nil)

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
	h.state.Store(s)
	h.metrics.snapshotLoaded(s)
}

// query is one request being answered and what was learnt about it.
type query struct {
	req     *dns.Msg
	w       dns.ResponseWriter
	snap    *Snapshot // the state the whole query is decided with
	fast    bool      // answer only without waiting on an upstream
	waiting bool      // fast stopped before an upstream exchange
	// packBlocked: the answer is a blocked one that writeBlocked packs.
	packBlocked bool
	// cached: the answer is this cache entry, written by writeCached.
	cached    *cacheEntry
	id        Identity
	client    netip.Addr // id.Client's address, for logs and explanations
	tcp       bool
	start     time.Time
	result    string
	policy    ClientRange
	hasPolicy bool
	decision  Decision
	upstream  string
	via       string // the name in the answer that was blocked, for chains
	shadow    bool   // a shadow-mode policy (action: log) would have blocked
}

// ServeDNS answers one query. A panic anywhere below becomes SERVFAIL: every
// query gets exactly one answer and the process stays up.
func (h *Handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	q := h.begin(w, req)
	defer h.end(q)
	h.run(q)
}

// begin starts a query: counted in flight until end.
func (h *Handler) begin(w dns.ResponseWriter, req *dns.Msg) *query {
	h.inflight.Add(1)
	if h.metrics != nil {
		h.metrics.inflight.Inc()
	}
	return &query{req: req, w: w, start: time.Now()}
}

func (h *Handler) end(*query) {
	if h.metrics != nil {
		h.metrics.inflight.Dec()
	}
	h.inflight.Done()
}

// run answers the query. With q.fast set, a query whose answer needs an
// upstream is not answered: run sets q.waiting and returns, and the caller
// runs it again without fast where waiting is fine (the batched UDP loop
// answers blocked and cached queries inline and hands the rest to a
// goroutine). The second run takes up where the first stopped: the client
// is not rate limited twice.
func (h *Handler) run(q *query) {
	w, req := q.w, q.req
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("panic answering query", zap.Any("panic", r), zap.String(logClient, q.client.String()),
				zap.ByteString("stack", debug.Stack()))
			q.waiting = false
			if len(req.Question) > 0 {
				_ = w.WriteMsg(servfailReply(req, dns.ExtendedErrorCodeOther, "internal error"))
			}
		}
	}()
	if q.snap == nil {
		q.snap = h.state.Load()
		q.id, q.tcp = identify(q.snap, w, req)
		q.client = q.id.Client.Addr()
		if !h.admit(q) {
			return
		}
	}
	snap := q.snap

	q.waiting = false
	resp := h.answer(context.Background(), snap, q)
	if q.waiting {
		return // left for a run without fast
	}
	if q.packBlocked {
		if resp = h.writeBlocked(q); resp == nil {
			return
		}
	}
	if q.cached != nil {
		if resp = h.writeCached(q); resp == nil {
			return
		}
	}
	echoECS(resp, q.id.ECS)
	// Names are compressed (RFC 1035 §4.1.4) in every answer: it never
	// makes one longer, and the upstream's answer was compressed too.
	resp.Compress = true
	if limit := q.maxSize(); resp.Len() > limit {
		resp.Truncate(limit)
	}
	h.record(q, resp.Rcode)
	if err := w.WriteMsg(resp); err != nil {
		h.log.Debug("writing answer", zap.Error(err), zap.String(logClient, q.client.String()))
	}
}

// record counts and logs the query before its answer leaves: the audit
// line exists before the client sees the block.
func (h *Handler) record(q *query, rcode int) {
	h.metrics.query(transportName(q.tcp), q.result)
	if e := q.decision.Entry; (q.result == ResultBlocked || q.shadow) && e.List != nil {
		h.metrics.blockedBy(q.policy.Policy.Name, e.List.File(), q.shadow)
	}
	h.logQuery(q.snap, q, rcode)
}

// admit applies the client's rate limit. Over it, a UDP query is dropped
// (an answer would make dnsfence an amplifier) and a TCP one refused.
// Blocked answers count too.
func (h *Handler) admit(q *query) bool {
	snap := q.snap
	limiter := h.limiter.Load()
	if limiter == nil || snap.RateExempt(q.client) || limiter.allow(q.client, q.start) {
		return true
	}
	h.metrics.rateLimited.WithLabelValues(transportName(q.tcp)).Inc()
	if limiter.shouldLog(q.client, q.start) {
		h.log.Warn("client over its rate limit", zap.String(logClient, q.client.String()),
			zap.Float64("rate", snap.Config.RateLimit.Rate), zap.Int("burst", snap.Config.RateLimit.Burst))
	}
	if !q.tcp {
		h.metrics.query(transportName(q.tcp), ResultDropped)
		return false
	}
	q.result = ResultRefused
	h.metrics.query(transportName(q.tcp), q.result)
	_ = q.w.WriteMsg(newReply(q.req, dns.RcodeRefused))
	return false
}

// answer runs the pipeline and returns the reply to send.
func (h *Handler) answer(ctx context.Context, snap *Snapshot, q *query) *dns.Msg {
	req := q.req
	// 1. Receive: the server's accept function has already dropped
	// responses and answered wrong opcodes and question counts; this guards
	// the handler when it is called directly.
	if req.Opcode != dns.OpcodeQuery {
		q.result = ResultNotimp
		return newReply(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 || !validQuestion(req.Question[0]) {
		q.result = ResultFormerr
		return newReply(req, dns.RcodeFormatError)
	}
	if rcode := checkEDNS(req); rcode != dns.RcodeSuccess {
		q.result = ResultFormerr
		if rcode == dns.RcodeBadVers {
			q.result = ResultBadvers
		}
		return newReply(req, rcode)
	}
	question := req.Question[0]
	if question.Qtype == dns.TypeAXFR || question.Qtype == dns.TypeIXFR {
		q.result = ResultRefused
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeNotSupported, "zone transfers are not forwarded")
		return m
	}

	if name, ok := explainName(question); ok {
		return h.explain(snap, q, name)
	}

	// 3. May they ask at all.
	if !snap.Allowed(q.id.Source) {
		q.result = ResultRefused
		return refusedReply(req)
	}

	// 4. Which policy; 5. is the name blocked.
	q.policy, q.hasPolicy = snap.PolicyForPrefix(q.id.Client)
	pol := q.policy.Policy
	if q.hasPolicy && pol.Blocks() {
		q.decision = pol.Decide(question.Name)
		if q.decision.Blocked {
			if pol.Action != config.ActionLog {
				return h.blocked(snap, q)
			}
			q.shadow = true // decided and recorded as a block, but forwarded
		}
	}

	// 7. Forward: the cache first, then the upstreams.
	key := keyOf(req)
	if e, prefetch := h.cache.Load().get(key, q.start); e != nil {
		h.metrics.cacheLookup("hit")
		if prefetch {
			go h.prefetch(snap, e, req.Copy(), key, q.tcp)
		}
		q.upstream = upstreamCache
		if reply, blocked := h.inspect(snap, q, e.msg); blocked {
			return reply
		}
		q.result = ResultForwarded
		if e.msg.Rcode == dns.RcodeServerFailure {
			// Every upstream's SERVFAIL, kept for a few seconds: still a
			// SERVFAIL to the client, and counted as one.
			q.result = ResultServfail
		}
		if q.id.ECS == nil && e.wireForm() != nil {
			q.cached = e // written from its wire form by run
			return nil
		}
		return upstreamReply(req, e.aged(q.start, 0))
	}
	if q.fast {
		q.waiting = true
		return nil
	}
	h.metrics.cacheLookup("miss")
	resp, from, err := h.resolve(ctx, snap, req, key, q.tcp)
	q.upstream = from
	if err != nil {
		q.result = ResultServfail
		var ue *upstream.UpstreamError
		if errors.As(err, &ue) {
			h.warnUpstreams(ue.Upstreams(), q.start, func() []zap.Field {
				return []zap.Field{zap.Error(err), zap.String(logQName, question.Name), zap.String(logCause, ue.Causes())}
			})
			own := *failureAnswer(req, ue)
			return upstreamReply(req, &own)
		}
		h.warnUpstreams(nil, q.start, func() []zap.Field {
			return []zap.Field{zap.Error(err), zap.String(logQName, question.Name)}
		})
		if errors.Is(err, errOverloaded) {
			return servfailReply(req, dns.ExtendedErrorCodeOther, "too many upstream queries in flight")
		}
		return servfailReply(req, dns.ExtendedErrorCodeNetworkError, "no upstream gave a usable answer")
	}
	if reply, blocked := h.inspect(snap, q, resp); blocked {
		return reply
	}
	q.result = ResultForwarded
	reply := upstreamReply(req, resp)
	if from == upstreamStale {
		addEDE(reply, dns.ExtendedErrorCodeStaleAnswer, "every upstream failed; answer from cache past its TTL")
	}
	return reply
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

// inspect is step 8: a CNAME or DNAME chain in the answer that reaches a
// blocked name blocks the answer as the name itself would be, unless the
// question name is explicitly allowed. It runs on cached answers exactly as
// on fresh ones. In shadow mode the block is recorded, not answered.
func (h *Handler) inspect(snap *Snapshot, q *query, resp *dns.Msg) (*dns.Msg, bool) {
	pol := q.policy.Policy
	if !q.hasPolicy || !pol.Blocks() || q.decision.Allowed || q.shadow {
		return nil, false
	}
	d, via, ok := chainDecision(pol, resp)
	if !ok {
		return nil, false
	}
	q.decision, q.via = d, via
	if pol.Action == config.ActionLog {
		q.shadow = true
		return nil, false
	}
	return h.blocked(snap, q), true
}

// Where an answer came from when it was not an upstream.
const (
	upstreamCache = "cache"
	upstreamStale = "cache-stale"
)

// errOverloaded is returned when upstream_inflight queries are already
// waiting on the upstreams.
var errOverloaded = errors.New("too many upstream queries in flight")

// resolve returns a private shallow copy of the upstream answer for a cache
// miss (for upstreamReply, which writes no shared part of it),
// identical concurrent misses sharing one upstream query; when every
// upstream fails (timeouts, errors, unusable answers, or SERVFAIL, REFUSED
// or NOTIMP: Forward's error), a stale cached answer if serve_stale allows
// (RFC 8767 §4), which answer marks with EDE 3.
func (h *Handler) resolve(ctx context.Context, snap *Snapshot, req *dns.Msg, key cacheKey, tcp bool) (*dns.Msg, string, error) {
	now := time.Now()
	msg, upstream, err := h.fetch(ctx, snap, req, key, tcp)
	if err != nil {
		if stale := h.cache.Load().stale(key, now); stale != nil {
			h.metrics.cacheLookup("stale")
			return stale, upstreamStale, nil
		}
		return nil, "", err
	}
	own := *msg
	return &own, upstream, nil
}

// fetch asks the upstreams once for every concurrent identical query and
// caches the answer, or, when every upstream answered SERVFAIL, the failure
// briefly. The returned message is shared: callers copy it.
func (h *Handler) fetch(ctx context.Context, snap *Snapshot, req *dns.Msg, key cacheKey, tcp bool) (*dns.Msg, string, error) {
	type result struct {
		msg      *dns.Msg
		upstream string
	}
	v, err, _ := h.flight.Do(key.flight(tcp), func() (any, error) {
		if !h.slots.acquire() {
			return nil, errOverloaded
		}
		defer h.slots.release()
		msg, from, err := snap.Forwarder().Forward(ctx, req, tcp)
		if err != nil {
			var ue *upstream.UpstreamError
			if errors.As(err, &ue) && ue.AllServfail() {
				h.cache.Load().putFailure(key, failureAnswer(req, ue), time.Now())
			}
			return nil, err
		}
		msg = h.cache.Load().put(key, msg, time.Now())
		return result{msg, from}, nil
	})
	if err != nil {
		return nil, "", err
	}
	r := v.(result)
	return r.msg, r.upstream, nil
}

// failureAnswer is the SERVFAIL for req when no upstream answered usably,
// in the form of an upstream answer, so that it is cached and relayed like
// one: it always has an OPT (upstreamReply drops it for a client without
// EDNS) holding our EDE (UpstreamError.EDE), then the Extended DNS Errors
// of the last upstream answer when it was a SERVFAIL, which may say why
// (DNSSEC Bogus, say), but never EDE 3 or 19: those speak of stale data,
// and a SERVFAIL holds none. The RCODE is always SERVFAIL, never an
// upstream's REFUSED or NOTIMP: those speak of the upstream's dealings with
// dnsfence, not of the client's query.
func failureAnswer(req *dns.Msg, ue *upstream.UpstreamError) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	code, text := ue.EDE()
	opts := []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: code, ExtraText: text}}
	if a := ue.Answer; a != nil && a.Rcode == dns.RcodeServerFailure && a.IsEdns0() != nil {
		for _, o := range a.IsEdns0().Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok && e.InfoCode != dns.ExtendedErrorCodeStaleAnswer &&
				e.InfoCode != dns.ExtendedErrorCodeStaleNXDOMAINAnswer {
				opts = append(opts, e)
			}
		}
	}
	m.SetEdns0(ednsSize, false)
	m.IsEdns0().Option = opts
	return m
}

// prefetch refreshes the cache entry e in the background; when the
// upstreams fail, a later hit tries again.
func (h *Handler) prefetch(snap *Snapshot, e *cacheEntry, req *dns.Msg, key cacheKey, tcp bool) {
	if _, _, err := h.fetch(context.Background(), snap, req, key, tcp); err != nil {
		e.prefetchFailed()
	}
}

// blocked is the blocked answer. The common ones (NXDOMAIN or REFUSED, no
// Client Subnet to echo) are packed straight to bytes in run: blocked
// returns nil for them and q.packBlocked says how.
func (h *Handler) blocked(snap *Snapshot, q *query) *dns.Msg {
	q.result = ResultBlocked
	pol := q.policy.Policy
	if (pol.Action == config.ActionNXDomain || pol.Action == config.ActionRefused) && q.id.ECS == nil {
		q.packBlocked = true
		return nil
	}
	return blockedReply(q.req, pol, q.decision, snap.Config.BlockedTTL, uint32(snap.Loaded.Unix()), q.via != "")
}

// writeBlocked sends the packed blocked answer, or builds the message when
// it would not fit the client's size (a very long name without EDNS).
func (h *Handler) writeBlocked(q *query) *dns.Msg {
	snap, pol := q.snap, q.policy.Policy
	rcode := dns.RcodeNameError
	if pol.Action == config.ActionRefused {
		rcode = dns.RcodeRefused
	}
	bufp := answerBufs.Get().(*[]byte)
	defer answerBufs.Put(bufp)
	b, ok := appendBlocked((*bufp)[:0], q.req, rcode, soaOwner(q.req.Question[0].Name, q.decision, q.via != ""),
		snap.Config.BlockedTTL, uint32(snap.Loaded.Unix()), pol.BlockedText(q.decision.Entry.List.File()), q.maxSize())
	*bufp = b
	if !ok {
		return blockedReply(q.req, pol, q.decision, snap.Config.BlockedTTL, uint32(snap.Loaded.Unix()), q.via != "")
	}
	h.send(q, rcode, b)
	return nil
}

// writeCached sends a cache hit from its wire form, or returns the message
// to send the general way when it would not fit the client's size.
func (h *Handler) writeCached(q *query) *dns.Msg {
	e := q.cached
	bufp := answerBufs.Get().(*[]byte)
	defer answerBufs.Put(bufp)
	b, ok := appendCached((*bufp)[:0], e, q.req, q.start, q.maxSize())
	*bufp = b
	if !ok {
		return upstreamReply(q.req, e.aged(q.start, 0))
	}
	h.send(q, e.msg.Rcode, b)
	return nil
}

// send records the query and writes its packed answer.
func (h *Handler) send(q *query, rcode int, b []byte) {
	h.record(q, rcode)
	if _, err := q.w.Write(b); err != nil {
		h.log.Debug("writing answer", zap.Error(err), zap.String(logClient, q.client.String()))
	}
}

// maxSize is the largest answer the client takes: its UDP size, or a whole
// TCP message.
func (q *query) maxSize() int {
	if q.tcp {
		return dns.MaxMsgSize
	}
	return clientSize(q.req)
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
func (h *Handler) explain(snap *Snapshot, q *query, name string) *dns.Msg {
	req := q.req
	if !snap.ExplainAllowed(q.client) {
		q.result = ResultRefused
		m := newReply(req, dns.RcodeRefused)
		addEDE(m, dns.ExtendedErrorCodeProhibited, "client not in explain_clients")
		return m
	}
	q.result = ResultExplained
	text := snap.Explain(q.client, name, dns.TypeA).String()
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
	return m
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

// checkEDNS is RFC 6891's check of a query's OPT record: more than one OPT,
// or an OPT outside the additional section, is FORMERR (§6.1.1); an EDNS
// version above 0 is BADVERS (§6.1.3), answered with our OPT of version 0.
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
	if opt != nil && opt.Version() != 0 {
		return dns.RcodeBadVers
	}
	return dns.RcodeSuccess
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

// validQuestion rejects meta types that never appear in a question.
func validQuestion(q dns.Question) bool {
	switch q.Qtype {
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeNone:
		return false
	}
	return q.Name != ""
}

// logQuery writes the audit line of a blocked query (log.queries: blocked)
// or of every query (all).
func (h *Handler) logQuery(snap *Snapshot, q *query, rcode int) {
	mode := snap.Config.Log.Queries
	audit := q.result == ResultBlocked || q.shadow
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
	question := q.req.Question
	fields := make([]zap.Field, 0, 14)
	client := q.client.String()
	if q.id.Client.Bits() != q.client.BitLen() {
		client = q.id.Client.String() // a subnet named by ECS
	}
	fields = append(fields, zap.String(logClient, client), zap.String(logResult, q.result))
	fields = append(fields, zap.String(logIdentity, q.id.Via))
	if q.id.Via != IdentityTransport {
		fields = append(fields, zap.String(logSource, q.id.Source.String()))
	}
	if len(question) == 1 {
		fields = append(fields,
			zap.String(logQName, strings.ToLower(question[0].Name)),
			zap.String(logQType, dns.Type(question[0].Qtype).String()))
	}
	fields = append(fields, zap.String(logTransport, transportName(q.tcp)))
	if q.hasPolicy {
		fields = append(fields, zap.String(logPolicy, q.policy.Policy.Name), zap.String(logRange, q.policy.Range.Prefix.String()))
	}
	if e := q.decision.Entry; e.List != nil {
		fields = append(fields,
			zap.String(logList, e.List.File()), zap.Int(logListLine, e.Line), zap.String(logEntry, e.Folded()),
			zap.String(logListHash, e.List.Hash()))
	}
	if q.via != "" {
		fields = append(fields, zap.String(logVia, q.via))
	}
	if q.shadow {
		fields = append(fields, zap.Bool(logShadow, true))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int(logSuppressed, suppressed))
	}
	if q.upstream != "" {
		fields = append(fields, zap.String(logUpstream, q.upstream))
	}
	fields = append(fields, zap.String(logRcode, dns.RcodeToString[rcode]), zap.Duration(logDuration, time.Since(q.start)))
	h.log.Info("query", fields...)
}

func transportName(tcp bool) string {
	if tcp {
		return "tcp"
	}
	return "udp"
}
