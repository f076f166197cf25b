package resolver

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
)

// Cache bounds.
const (
	servfailTTL = 5 * time.Second // upstream SERVFAIL answers, at most (issue: "briefly")
	staleTTL    = 30              // TTL of a stale answer served, in seconds (RFC 8767 §4)
	prefetchAt  = 10              // prefetch when under 1/prefetchAt of the TTL is left
	prefetchMin = 2               // ... and the entry was read at least this often
	// maxCachedAnswer is the largest answer cached, in octets of its wire
	// form, so that cache.size bounds the cache's memory: 20,000 answers
	// of 3,850 octets held 162 MB of heap (message and wire form), where
	// 20,000 of 60 KB over TCP held 1.78 GB, a cache any client could fill
	// in half a minute with the names of a zone that serves such answers.
	// dnsdist's packet cache has the same bound (maximumEntrySize, 4,096);
	// a larger answer is forwarded every time, identical queries still
	// sharing one, and removes the answer it supersedes (cacheTable.forget),
	// as an answer with no cache lifetime does.
	maxCachedAnswer = 4096
	// maxCachedFootprint bounds what an answer cached takes of the heap as
	// a message (footprint), in bytes, beside its wire form: an answer of
	// 4,096 octets may hold 250 records whose names are pointers to one
	// of up to 255 octets, each unpacked into a record of its own with its
	// names written out, 72 KB for 236 A records, 116 KB for 153 MINFO
	// records of three names each (measured: 20,000 entries, the default
	// cache.size, would hold 1.4 and 2.3 GB); or RDATA miekg/dns holds in
	// many times its octets, 66 KB for one NSEC record's type bitmap, 82
	// KB for a TXT record of empty strings, 88 KB for an APL record
	// (dnswire.Record.Held). BIND 9's max-records-per-type
	// (CVE-2024-1737) bounds the records of an RRset in its cache for
	// the same reason. Such an answer is forwarded every time, as one over
	// maxCachedAnswer octets is. Twice maxCachedAnswer keeps a cached
	// entry at about 12 KB at most, message and wire form, Go's rounding
	// of allocations to size classes aside (under a fifth more), and
	// caches the answers of a few dozen records that resolvers give.
	maxCachedFootprint = 2 * maxCachedAnswer
	// recordOverhead is what one record takes of the heap unpacked, in
	// bytes, beyond what it holds (dnswire.Record.Held): its object, its
	// header, its place in its section's slice. 76 to 94 bytes measured
	// for A, AAAA, CNAME, MX, TXT and MINFO records (miekg/dns v1.1.73,
	// 64-bit Go).
	recordOverhead = 96
)

// cacheKey identifies a cached upstream answer: the case-folded name, type,
// class, and the DO, CD and RD bits, which change what the upstream returns
// (an RD=0 answer may be a partial one from the upstream's cache). Make one
// with newCacheKey, which sets its sum.
type cacheKey struct {
	name       string
	qtype      uint16
	qclass     uint16
	do, cd, rd bool
	// sum is the key's 64-bit hash (cacheKeySum), made once with the key:
	// the cache table and the wire calls under way find a key by it, a
	// miss's three lookups and two stores without hashing the name again.
	sum uint64
}

// newCacheKey is the key of name (case-folded), type, class and bits,
// with its sum.
func newCacheKey(name string, qtype, qclass uint16, do, cd, rd bool) cacheKey {
	k := cacheKey{name: name, qtype: qtype, qclass: qclass, do: do, cd: cd, rd: rd}
	k.sum = cacheKeySum(k)
	return k
}

// cacheKeySeed is the seed of every cache key's sum: one a process, as a
// key is made before it is known which cache table will hold it, and
// random, so that no client can choose names that fall on one shard or
// index entry.
var cacheKeySeed = maphash.MakeSeed()

// cacheKeySum is k's 64-bit hash: the name's, with the type, class and
// bits folded into its low 35 bits, so that the keys of one name all
// differ and share the shard its top bits pick (cacheTable.shard).
func cacheKeySum(k cacheKey) uint64 {
	var bits uint64
	if k.do {
		bits |= 1
	}
	if k.cd {
		bits |= 2
	}
	if k.rd {
		bits |= 4
	}
	return maphash.String(cacheKeySeed, k.name) ^ (uint64(k.qtype) | uint64(k.qclass)<<16 | bits<<32)
}

func keyOf(req *dns.Msg) cacheKey {
	q := req.Question[0]
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	return newCacheKey(strings.ToLower(q.Name), q.Qtype, q.Qclass, do, req.CheckingDisabled, req.RecursionDesired)
}

// flight is the key's singleflight key, with the transport of the upstream
// query: the name, then type, class and bits as bytes, in one allocation.
func (k cacheKey) flight(tcp bool) string {
	var sb strings.Builder
	sb.Grow(len(k.name) + 5)
	sb.WriteString(k.name)
	sb.WriteByte(byte(k.qtype >> 8))
	sb.WriteByte(byte(k.qtype))
	sb.WriteByte(byte(k.qclass >> 8))
	sb.WriteByte(byte(k.qclass))
	var bits byte
	for i, b := range []bool{k.do, k.cd, k.rd, tcp} {
		if b {
			bits |= 1 << i
		}
	}
	sb.WriteByte(bits)
	return sb.String()
}

// cacheEntry is an upstream answer as received: a message (put), or the
// wire form it came in (putWire). Neither is ever modified: every reader
// gets a copy with its TTLs aged. An answer forwarded in wire form and not
// cached is an entry too, never stored, from which its client's answer is
// packed like a hit's.
type cacheEntry struct {
	// msg is the answer as a message: set by put before the entry is
	// stored; for an entry made by putWire, unpacked from wire at the first
	// reader that needs it (message). Read it through message.
	msg         *dns.Msg
	msgOnce     sync.Once
	rcode       int // the answer's RCODE
	stored      time.Time
	ttl         time.Duration // fresh for this long
	keep        time.Duration // kept for this long: ttl, and the serve-stale window after it
	minTTL      uint32        // the clamp applied to every record's TTL, in seconds
	maxTTL      uint32        // seconds
	life        uint32        // the cap on every TTL, in seconds: ttl, or no cap (^0) for an answer with no cache lifetime
	hits        atomic.Int32
	prefetching atomic.Bool
	// gone says the table holds the entry no more (replaced, evicted,
	// forgotten or reclaimed): an answer memo that kept it serves it no
	// more either (Cache.recallable).
	gone atomic.Bool
	// recalled says an answer memo served the entry since the CLOCK hand
	// last passed it: a hit the table did not see (cacheShard.victim).
	recalled atomic.Bool
	// refreshFailed is when every upstream last failed to refresh the
	// expired entry (failedAt; 0: never), for stale_refresh_time: by the
	// monotonic clock, as the entry's lifetime is, so that the wall clock
	// stepped back an hour does not serve it stale, the upstreams never
	// asked, for that hour.
	refreshFailed atomic.Int64
	wireOnce      sync.Once
	// wire is the wire form: set by putWire before the entry is stored;
	// for an entry made by put, made at its first hit (wireForm). nil: the
	// general path answers hits.
	wire *wireAnswer
	// ownWire holds putWire's wire form, in the entry's allocation.
	ownWire wireAnswer
}

// wireForm is the entry's wire form, made once, at its first hit: most
// cached answers of a busy resolver are never asked again.
func (e *cacheEntry) wireForm() *wireAnswer {
	e.wireOnce.Do(func() {
		if e.wire == nil {
			e.wire = makeWire(e.msg)
		}
	})
	return e.wire
}

// message is the entry's answer as a message, unpacked once from its wire
// form when it came that way; nil when miekg/dns cannot unpack it.
func (e *cacheEntry) message() *dns.Msg {
	e.msgOnce.Do(func() {
		if e.msg == nil && e.wire != nil {
			m := new(dns.Msg)
			if m.Unpack(e.wire.wire) == nil {
				e.msg = m
			}
		}
	})
	return e.msg
}

// result is the query result of an answer from e: forwarded, or, for
// every upstream's SERVFAIL kept for a few seconds, still a SERVFAIL to
// the client, and counted as one.
func (e *cacheEntry) result() string {
	if e.rcode == dns.RcodeServerFailure {
		return ResultServfail
	}
	return ResultForwarded
}

// addsNames reports whether the answer may point the client at a name
// other than the one it asked for (wireAnswer.qnameOnly): only then can
// inspecting it change anything.
func (e *cacheEntry) addsNames() bool {
	w := e.wireForm()
	return w == nil || !w.qnameOnly
}

// ttlAt is the TTL a record cached with ttl has elapsed seconds after the
// entry was stored: clamped to [minTTL, maxTTL] and the entry's life,
// counting down to 0.
func (e *cacheEntry) ttlAt(ttl, elapsed uint32) uint32 {
	t := min(max(receivedTTL(ttl), e.minTTL), e.maxTTL, e.life)
	if t > elapsed {
		return t - elapsed
	}
	return 0
}

// Cache holds upstream answers. It knows nothing of policies: the policy is
// decided before the cache is asked, and the CNAME-cloaking inspection runs
// on cached answers exactly as on fresh ones, so no client gets an answer
// its policy forbids because another client's query filled the cache.
//
// A Cache applies the settings of one snapshot and never changes them:
// Handler.Store makes the next snapshot's with With, which shares the
// entries, so that a reload keeps what was cached and no query reads a
// setting that changes under it.
type Cache struct {
	t   *cacheTable  // shared by every Cache made With from one NewCache
	cfg config.Cache // read-only
}

// NewCache returns a cache of at most cfg.Size entries.
func NewCache(cfg config.Cache) *Cache {
	return &Cache{t: newCacheTable(max(cfg.Size, 1)), cfg: cfg}
}

// With returns a cache holding c's entries that applies cfg from now on:
// the entries are bounded to cfg.Size at once (the unread go first, see
// cacheTable), and what is cached next is clamped and kept as cfg says. c
// itself is unchanged but for its bound, shared with the result.
func (c *Cache) With(cfg config.Cache) *Cache {
	if cfg.Size != c.cfg.Size {
		c.t.setLimit(max(cfg.Size, 1))
	}
	return &Cache{t: c.t, cfg: cfg}
}

// Len is the number of cached answers, expired ones the cache has not yet
// reclaimed among them (cacheTable).
func (c *Cache) Len() int { return c.t.len() }

// get returns the fresh entry for key, read-only, or nil. prefetch says
// the caller should refresh it in the background: it is popular, in the
// last tenth of its TTL, and nobody else is refreshing it.
func (c *Cache) get(key cacheKey, now time.Time) (e *cacheEntry, prefetch bool) {
	cfg := &c.cfg
	if e = c.fresh(key, now); e == nil {
		return nil, false
	}
	if !cfg.Prefetch {
		return e, false // no hit count to keep: a write to the entry on every hit
	}
	hits := e.hits.Add(1)
	prefetch = hits >= prefetchMin && e.ttl-now.Sub(e.stored) < e.ttl/prefetchAt &&
		e.prefetching.CompareAndSwap(false, true)
	return e, prefetch
}

// fresh is the entry for key still within its TTL at now, read-only, or
// nil: get without the hit count.
func (c *Cache) fresh(key cacheKey, now time.Time) *cacheEntry {
	if c.cfg.Size == 0 {
		return nil
	}
	e, ok := c.t.get(key)
	if !ok || now.Sub(e.stored) >= e.ttl {
		return nil
	}
	return e
}

// recallable reports whether e, an entry an answer memo kept from an
// earlier hit (answerMemo), is served at now as get would serve it: it is
// still the table's, and fresh. In the last tenth of its TTL with
// prefetch on, it is not: the query takes get, which decides whether to
// refresh it. The hit is hit's to count.
func (c *Cache) recallable(e *cacheEntry, now time.Time) bool {
	if c.cfg.Size == 0 || e.gone.Load() {
		return false
	}
	age := now.Sub(e.stored)
	return age < e.ttl && (!c.cfg.Prefetch || e.ttl-age >= e.ttl/prefetchAt)
}

// hit counts a hit on e served from an answer memo (recallable), as get
// counts one: for prefetch, and for the CLOCK hand, which keeps an entry
// read since it last passed (recalled; written once a pass, not on every
// hit).
func (c *Cache) hit(e *cacheEntry) {
	if !e.recalled.Load() {
		e.recalled.Store(true)
	}
	if c.cfg.Prefetch {
		e.hits.Add(1)
	}
}

// prefetchFailed lets the next hit near expiry refresh the entry again.
func (e *cacheEntry) prefetchFailed() { e.prefetching.Store(false) }

// stale returns an expired answer still inside the serve-stale window, for
// when every upstream failed (RFC 8767 §4), at now, for a query that found
// the answer expired at start. A cached SERVFAIL is no answer and is never
// served stale; nor is an entry fresh at now, which another upstream query
// stored meanwhile (answerOnFailure gives that one as it is). failed says
// the upstreams were asked and failed (not a local limit): then the entry
// the query was refreshing is served stale at once for stale_refresh_time
// (failedRefresh, unrefreshedEntry).
func (c *Cache) stale(key cacheKey, start, now time.Time, failed bool) *dns.Msg {
	e := c.expiredEntry(key, now)
	if e == nil {
		return nil
	}
	if failed {
		c.failedRefresh(key, start, now)
	}
	return e.aged(now, staleTTL)
}

// answerOnFailure is the answer for key of a query received at start
// whose own upstream query failed, at now (after the failure): the
// expired answer, served stale (stale, upstreamStale: TTL 30 and EDE 3 or
// 19, RFC 8767 §4), or, when another upstream query has refreshed it
// meanwhile (another transport's, a prefetch), the fresh one as a cache
// hit gives it (upstreamCache: its remaining TTL, no EDE), as
// answerAtTimer does at a query's client response timer. failed is
// stale's. nil when there is neither: the query gets the upstreams'
// failure.
func (c *Cache) answerOnFailure(key cacheKey, start, now time.Time, failed bool) (*dns.Msg, string) {
	if m := c.stale(key, start, now, failed); m != nil {
		return m, upstreamStale
	}
	return c.freshAnswer(key, now)
}

// unrefreshedEntry is the expired entry for key, to be served stale
// without asking the upstreams, when every upstream failed to refresh it
// less than stale_refresh_time ago: RFC 8767 §5's failure recheck timer
// (refresh from failing upstreams at most that often; BIND's
// stale-refresh-time), which also spares every client the wait for the
// upstreams' timeouts during an outage. nil otherwise: ask them.
func (c *Cache) unrefreshedEntry(key cacheKey, now time.Time) *cacheEntry {
	if c.cfg.StaleRefreshTime <= 0 {
		return nil
	}
	e := c.staleEntry(key, now)
	if e == nil {
		return nil
	}
	failed := e.refreshFailed.Load()
	if failed == 0 || sinceEpoch(now)-failed >= int64(c.cfg.StaleRefreshTime) {
		return nil
	}
	return e
}

// unreadEntry is the entry answerOnFailure and answerAtTimer find for key
// at now but cannot give, having no message to give it as (an answer
// miekg/dns does not unpack): the expired one, to be served stale (stale
// true), or the fresh one another upstream query cached meanwhile. nil
// when there is none, or they could give it.
func (c *Cache) unreadEntry(key cacheKey, now time.Time) (e *cacheEntry, stale bool) {
	if e = c.expiredEntry(key, now); e != nil {
		stale = true
	} else if e = c.fresh(key, now); e == nil || e.rcode == dns.RcodeServerFailure {
		return nil, false
	}
	if e.message() != nil {
		return nil, false
	}
	return e, stale
}

// staleUnanswered returns the expired answer for key, to be served stale
// to a query the upstreams have not answered within
// stale_answer_client_timeout (RFC 8767 §5's client response timer,
// clientTimeout); nil when there is none, or when the entry is fresh
// again (refreshed meanwhile: answerAtTimer gives that one).
func (c *Cache) staleUnanswered(key cacheKey, now time.Time) *dns.Msg {
	e := c.expiredEntry(key, now)
	if e == nil {
		return nil
	}
	return e.aged(now, staleTTL)
}

// answerAtTimer is the answer for key of a query whose client response
// timer has run out (clientTimer, fetchWithin), at now: the expired answer,
// served stale (staleUnanswered, upstreamStale), or, when another upstream
// query has refreshed it meanwhile (another transport's, a prefetch), the
// fresh one (upstreamCache; fresh, without get's hit count). nil when
// there is neither (gone from the cache, or a SERVFAIL cached meanwhile):
// the query waits for its own upstream query.
func (c *Cache) answerAtTimer(key cacheKey, now time.Time) (*dns.Msg, string) {
	if m := c.staleUnanswered(key, now); m != nil {
		return m, upstreamStale
	}
	return c.freshAnswer(key, now)
}

// freshAnswer is the fresh answer for key at now, aged to now, from
// upstreamCache, for a query whose upstream query another one overtook
// (answerAtTimer, answerOnFailure): fresh, without get's hit count, and
// never a cached SERVFAIL. nil when there is none.
func (c *Cache) freshAnswer(key cacheKey, now time.Time) (*dns.Msg, string) {
	if e := c.fresh(key, now); e != nil && e.rcode != dns.RcodeServerFailure {
		if m := e.aged(now, 0); m != nil {
			return m, upstreamCache
		}
	}
	return nil, ""
}

// clientTimeout is how much longer a query received at start may wait, at
// now, for the upstreams' answer for key before it is answered stale
// (staleUnanswered): RFC 8767 §5's client response timer,
// stale_answer_client_timeout from the query's start. ok is false when no
// timer applies: the timeout or serve_stale is off, or key has no expired
// answer that may be served stale; the query waits for the upstreams, as
// any miss does.
func (c *Cache) clientTimeout(key cacheKey, start, now time.Time) (wait time.Duration, ok bool) {
	if !c.clientTimerOn() || c.expiredEntry(key, now) == nil {
		return 0, false
	}
	return c.cfg.StaleAnswerClientTimeout - now.Sub(start), true
}

// clientTimerOn reports whether a query may have a client response timer
// at all (clientTimeout): the timeout and serve_stale on, and a cache. It
// reads the settings only, so that a miss with either off (serve_stale
// is, by default) asks no clock.
func (c *Cache) clientTimerOn() bool {
	return c.cfg.StaleAnswerClientTimeout > 0 && c.cfg.ServeStale > 0 && c.cfg.Size != 0
}

// failedRefresh records that every upstream failed, at now, to refresh the
// answer for key, on the entry the refresh was for: one expired at start,
// when the refresh began (or the query that asked for it came), that may
// be served stale. stale calls it for a query whose own upstream query
// failed, fetchWithin for a refresh no query waits for any more. An entry
// another upstream query (another transport's, a prefetch) stored since
// start is not expired at start and keeps no failure: once it expires,
// the upstreams are asked for it, not held off for stale_refresh_time.
func (c *Cache) failedRefresh(key cacheKey, start, now time.Time) {
	if e := c.expiredEntry(key, start); e != nil {
		e.refreshFailed.Store(failedAt(now))
	}
}

// failedAt is now as refreshFailed keeps it: sinceEpoch, never 0.
func failedAt(now time.Time) int64 {
	if t := sinceEpoch(now); t != 0 {
		return t
	}
	return 1
}

// failedPrefetch records that every upstream failed, at now, to refresh
// e, the entry for key a prefetch was for (it began while e was fresh),
// when e is still the entry and has expired: the prefetch was then the
// refresh of an expired answer, which failedRefresh records for
// stale_refresh_time. Nothing is recorded on an entry still fresh (the
// next hit prefetches again) or one another upstream query stored since.
func (c *Cache) failedPrefetch(key cacheKey, e *cacheEntry, now time.Time) {
	if c.expiredEntry(key, now) == e {
		e.refreshFailed.Store(failedAt(now))
	}
}

// expiredEntry is the entry staleEntry finds, when it is no longer fresh.
func (c *Cache) expiredEntry(key cacheKey, now time.Time) *cacheEntry {
	e := c.staleEntry(key, now)
	if e == nil || now.Sub(e.stored) < e.ttl {
		return nil
	}
	return e
}

// staleEntry is the entry for key that may be served stale at now: expired
// or not, inside the serve-stale window, and no SERVFAIL; nil when there
// is none or serve_stale is off.
func (c *Cache) staleEntry(key cacheKey, now time.Time) *cacheEntry {
	if c.cfg.ServeStale <= 0 || c.cfg.Size == 0 {
		return nil
	}
	e, ok := c.t.get(key)
	if !ok || !c.servable(e, now) || e.rcode == dns.RcodeServerFailure {
		return nil
	}
	return e
}

// put caches an upstream answer for as long as RFC 2308 and the TTL bounds
// allow; answers that may not be cached are left out, and remove the
// answer they supersede (cacheTable.forget). Cached or not, it
// returns the answer with its TTLs clamped (clamped), and for a key without
// the DO bit without DNSSEC records (withoutDNSSEC), which is what is
// cached and what the first client gets, so that it carries the same TTLs
// and records as every later cache hit (DESIGN.md §10). msg itself is not
// modified.
func (c *Cache) put(key cacheKey, msg *dns.Msg, now time.Time) *dns.Msg {
	cfg := &c.cfg
	if !key.do {
		msg = withoutDNSSEC(msg, key.qtype)
	}
	ttl, ok := cacheTTL(msg, cfg.MinTTL, cfg.MaxTTL)
	msg = clamped(msg, cfg.MinTTL, cfg.MaxTTL, ttl, ok)
	if cfg.Size == 0 || msg.Truncated {
		return msg
	}
	if !ok || ttl <= 0 || tooLargeToCache(msg) {
		c.t.forget(key, now)
		return msg
	}
	keep := ttl + cfg.ServeStale
	if msg.Rcode == dns.RcodeServerFailure {
		keep = ttl // never served stale
	}
	key.name = strings.Clone(key.name) // a wire query's is in its own memory (wireQuery.own)
	c.t.set(key, &cacheEntry{msg: msg, rcode: msg.Rcode, stored: now, ttl: ttl, keep: keep, minTTL: cfg.MinTTL, maxTTL: cfg.MaxTTL,
		life: uint32(ttl / time.Second)}, now)
	return msg
}

// tooLargeToCache reports whether msg packed (compressed, as it is
// served) is over maxCachedAnswer octets, or takes more than
// maxCachedFootprint bytes of the heap (footprint). The uncompressed
// length as dns.Msg.Len counts it, which is cheaper to take and never
// smaller, settles the common answer; one it puts over maxCachedAnswer is
// measured packed (fitsIn: Len counts some fields over their octets, a
// padded base64 signature by 2, and the wire path caches by octets).
func tooLargeToCache(msg *dns.Msg) bool {
	if footprint(msg) > maxCachedFootprint {
		return true
	}
	m := *msg
	m.Compress = false
	n := m.Len()
	if n <= maxCachedAnswer {
		return false
	}
	m.Compress = true
	return !fitsIn(&m, maxCachedAnswer)
}

// footprint is the heap m takes, in bytes, as the wire path counts an
// answer's (wireShape.footprint): the header and question as their
// octets, each record's dnswire.Record.Held and recordOverhead. The
// bound heldAtMost settles most answers without packing m; the rest are
// packed and counted so (heldPacked).
func footprint(m *dns.Msg) int {
	if n := heldAtMost(m); n <= maxCachedFootprint {
		return n
	}
	n, _ := heldPacked(m)
	return n
}

// heldAtMost bounds footprint from m's fields, without packing it: the
// names of the commonest types as the strings they are, which is what
// Record.Held counts them as; the RDATA of any other type at
// dnswire.OpaqueFactor an octet of the record's length uncompressed
// (dns.Len), and one more (dns.Len counts a TXT record of no string as
// none, which packs as one).
func heldAtMost(m *dns.Msg) int {
	n := dnswire.HeaderLen
	for _, q := range m.Question {
		n += len(q.Name) + 1 + 4 // a name's octets are at most its text and the root's
	}
	for _, sec := range [...][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			n += recordOverhead + len(rr.Header().Name) + 10
			switch rr := rr.(type) {
			case *dns.A:
				n += 4
			case *dns.AAAA:
				n += 16
			case *dns.CNAME:
				n += len(rr.Target)
			case *dns.DNAME:
				n += len(rr.Target)
			case *dns.NS:
				n += len(rr.Ns)
			case *dns.PTR:
				n += len(rr.Ptr)
			case *dns.MX:
				n += 2 + len(rr.Mx)
			case *dns.SOA:
				n += len(rr.Ns) + len(rr.Mbox) + 20
			default:
				n += dnswire.OpaqueFactor * (dns.Len(rr) + 1)
			}
		}
	}
	return n
}

// heldPacked is footprint from m packed uncompressed and read with
// dnswire.Walk; walked is false for a message it does not read (one of
// the types whose names Walk does not read), counted at
// dnswire.OpaqueFactor an octet, recordOverhead a record.
func heldPacked(m *dns.Msg) (held int, walked bool) {
	u := *m
	u.Compress = false
	opaque := func(n int) int { return dnswire.OpaqueFactor*n + recordOverhead*(len(m.Answer)+len(m.Ns)+len(m.Extra)) }
	b, err := u.Pack()
	if err != nil {
		return opaque(u.Len()), false
	}
	q, ok := dnswire.ReadQuestion(b)
	held = q.End // the header and the question
	if dnswire.QDCount(b) != 1 || !ok || !dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		held += r.Held + recordOverhead
		return true
	}) {
		return opaque(len(b)), false
	}
	return held, true
}

// withoutDNSSEC is msg without the records that authenticate DNSSEC data
// (dnssecRecord) but those the question of type qtype asks for, for a
// query without the DO bit: RFC 4035 §3.2.1 has the server side strip
// them (MUST), as Unbound does; an upstream that sends them whatever
// the DO bit of dnsfence's query would otherwise hand them to a client
// that cannot read them. It copies only when a record goes: msg when none
// does, else a shallow copy with new section arrays.
func withoutDNSSEC(msg *dns.Msg, qtype uint16) *dns.Msg {
	in := func(section int) func(dns.RR) bool {
		return func(rr dns.RR) bool { return dnssecRecord(rr.Header().Rrtype, qtype, section) }
	}
	if !slices.ContainsFunc(msg.Answer, in(dnswire.Answer)) && !slices.ContainsFunc(msg.Ns, in(dnswire.Authority)) &&
		!slices.ContainsFunc(msg.Extra, in(dnswire.Additional)) {
		return msg
	}
	out := *msg
	out.Answer = slices.DeleteFunc(slices.Clone(msg.Answer), in(dnswire.Answer))
	out.Ns = slices.DeleteFunc(slices.Clone(msg.Ns), in(dnswire.Authority))
	out.Extra = slices.DeleteFunc(slices.Clone(msg.Extra), in(dnswire.Additional))
	return &out
}

// dnssecRecord reports whether a record of type rrtype in section of
// the answer to a question of type qtype is one a query without the DO
// bit must not get (withoutDNSSEC): an RRSIG, NSEC or NSEC3 (RFC 4035
// §3.2.1, RFC 5155 §7.2), unless it answers the question (of its own
// type, or ANY: "MUST NOT strip any DNSSEC RR types that the initiating
// query explicitly requested").
func dnssecRecord(rrtype, qtype uint16, section int) bool {
	switch rrtype {
	case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3:
		return section != dnswire.Answer || !dnswire.Answers(qtype, rrtype)
	}
	return false
}

// putWire is put for an answer in wire form, b (an upstream's datagram,
// which the entry copies): it returns the entry the answer is served
// from, stored when RFC 2308 and the TTL bounds let it be cached, with its
// TTLs clamped as put clamps them. The entry, its copy of b and of the
// key's name are one allocation (newWireEntry). ok is false for an answer
// the wire cache cannot hold (wireOf), or that holds DNSSEC records a
// query without the DO bit must not get (withoutDNSSEC): the caller takes
// the message path with it.
func (c *Cache) putWire(key cacheKey, b []byte, now time.Time) (*cacheEntry, bool) {
	return c.putWireEDE(key, b, nil, now)
}

// putWireEDE is putWire for an answer whose upstream Extended DNS Errors,
// edes (EDNS options, each its code, length and data), were taken out of
// its OPT record (putUnread): they are passed on after the client's OPT
// (wireAnswer.edes).
func (c *Cache) putWireEDE(key cacheKey, b, edes []byte, now time.Time) (*cacheEntry, bool) {
	cfg := &c.cfg
	e, mem := newWireEntry(len(b) + len(key.name))
	_, b, key.name = appendOwned(mem, b, key.name)
	e.stored, e.minTTL, e.maxTTL, e.life = now, cfg.MinTTL, cfg.MaxTTL, ^uint32(0)
	sh, ok := wireOf(b, &e.ownWire)
	if !ok || sh.dnssec && !key.do {
		return nil, false // the message path's put strips the DNSSEC records
	}
	e.wire = &e.ownWire
	e.ownWire.edes = edes
	ttl, hasLife := sh.cacheTTL(cfg.MinTTL, cfg.MaxTTL)
	e.rcode, e.ttl = sh.rcode, ttl
	if hasLife {
		e.life = uint32(ttl / time.Second)
	}
	if cfg.Size == 0 || sh.truncated {
		return e, true
	}
	if !hasLife || ttl <= 0 || len(b) > maxCachedAnswer || sh.footprint > maxCachedFootprint {
		c.t.forget(key, now)
		return e, true
	}
	e.keep = ttl + cfg.ServeStale
	if sh.rcode == dns.RcodeServerFailure {
		e.keep = ttl // never served stale
	}
	c.t.set(key, e, now)
	return e, true
}

// putUnread is putWire for an upstream's whole answer with a record
// miekg/dns does not read, b (an RdataError's octets, or a datagram's),
// which an exempt client gets as the upstream sent it (README, Answer
// inspection) but for what is done to every answer read: its Extended
// DNS Errors are passed on and its other EDNS options are not (its OPT,
// when it has options or is not last, goes: the EDEs are kept apart,
// wireAnswer.edes, and the client gets its own OPT), and a query without
// the DO bit gets none of its DNSSEC records (dnssecRecord, as put's
// withoutDNSSEC strips them). The records kept then have their names
// written out in full (dnswire.Without), as one may have pointed into a
// record left out. putWire alone cannot take such an answer, which was
// SERVFAIL, or on the wire path an expired answer served stale for it.
// ok is false for an answer dnswire does not read through.
func (c *Cache) putUnread(key cacheKey, b []byte, now time.Time) (*cacheEntry, bool) {
	q, ok := dnswire.ReadQuestion(b)
	if !ok {
		return nil, false
	}
	leftOut := func(r dnswire.Record) bool {
		return r.Type == dnswire.TypeOPT || !key.do && dnssecRecord(r.Type, q.Type, r.Section)
	}
	var edes []byte
	rebuild, opt, options := false, false, -1
	if !dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		switch {
		case r.Type == dnswire.TypeOPT:
			opt = true
			if r.End != r.RdOff {
				options, edes = r.RdOff, answerEDEs(b[r.RdOff:r.End])
			}
		case opt || leftOut(r):
			rebuild = true // a record after the OPT, or one to leave out
		}
		return true
	}) {
		return nil, false
	}
	switch {
	case rebuild:
		// Every name written out: one may point into a record left out.
		if b, ok = dnswire.Without(b, leftOut); !ok {
			return nil, false
		}
	case options >= 0:
		// The OPT, the last record, is all that changes: its options
		// cut off (wireOf then cuts the OPT), every other octet as the
		// upstream sent it, its compression kept (README, step 9).
		b = bytes.Clone(b[:options])
		binary.BigEndian.PutUint16(b[options-2:], 0) // RDLENGTH
	}
	return c.putWireEDE(key, b, edes, now)
}

// answerEDEs is the Extended DNS Errors of the OPT RDATA rdata, as the
// options they are (code, length, data), those too short for an
// INFO-CODE left out as the message path leaves them (answerOption); nil
// when there is none.
func answerEDEs(rdata []byte) []byte {
	var edes []byte
	for len(rdata) > 0 {
		code, data, rest, ok := dnswire.NextOption(rdata)
		if !ok {
			break
		}
		if code == dns.EDNS0EDE && len(data) >= 2 {
			edes = append(edes, rdata[:len(rdata)-len(rest)]...)
		}
		rdata = rest
	}
	return edes
}

// appendOwned appends b and name to mem and returns mem, and the copies
// of b and name in it: what a wire query (wireQuery.own) or a cache entry
// (putWire) keeps of its datagram and its name, in memory of its own.
func appendOwned(mem, b []byte, name string) ([]byte, []byte, string) {
	mem = append(mem, b...)
	b = mem[len(mem)-len(b) : len(mem) : len(mem)]
	mem = append(mem, name...)
	return mem, b, unsafe.String(unsafe.SliceData(mem[len(mem)-len(name):]), len(name))
}

// entryWith is a cache entry and, in the same allocation, mem: room for
// its wire form and its key's name (newWireEntry). M is an array of
// octets.
type entryWith[M any] struct {
	cacheEntry
	mem M
}

// newEntryWith makes an entryWith[M] and returns its entry and its room,
// empty.
func newEntryWith[M any]() (*cacheEntry, []byte) {
	x := new(entryWith[M])
	return &x.cacheEntry, unsafe.Slice((*byte)(unsafe.Pointer(&x.mem)), unsafe.Sizeof(x.mem))[:0]
}

// wireEntrySizes are the rooms newWireEntry makes in an entry's own
// allocation, each with the entry (208 octets) an allocator's size class,
// smallest first.
var wireEntrySizes = [...]struct {
	room int
	make func() (*cacheEntry, []byte)
}{
	{112, newEntryWith[[112]byte]},
	{176, newEntryWith[[176]byte]},
	{304, newEntryWith[[304]byte]},
	{432, newEntryWith[[432]byte]},
	{560, newEntryWith[[560]byte]},
	{816, newEntryWith[[816]byte]},
	{1328, newEntryWith[[1328]byte]},
}

// newWireEntry makes an entry with room for n octets, empty: in the
// entry's own allocation up to 1,328 octets (wireEntrySizes), else in a
// second one.
func newWireEntry(n int) (*cacheEntry, []byte) {
	for _, c := range wireEntrySizes {
		if n <= c.room {
			return c.make()
		}
	}
	return new(cacheEntry), make([]byte, 0, n)
}

// clamped is msg with every record TTL (OPT aside) bounded to [minTTL,
// maxTTL] seconds and, when the answer has a cache lifetime life (hasLife),
// to life as well: the TTLs a cache hit of it would carry at once. It copies
// only what changes: msg when no TTL does, else a shallow copy whose
// changed records are new.
func clamped(msg *dns.Msg, minTTL, maxTTL uint32, life time.Duration, hasLife bool) *dns.Msg {
	limit := maxTTL
	if hasLife {
		limit = min(limit, uint32(life/time.Second))
	}
	var out *dns.Msg
	for i, sec := range [...]*[]dns.RR{&msg.Answer, &msg.Ns, &msg.Extra} {
		for j, rr := range *sec {
			h := rr.Header()
			ttl := min(max(receivedTTL(h.Ttl), minTTL), limit)
			if h.Rrtype == dns.TypeOPT || ttl == h.Ttl {
				continue
			}
			if out == nil {
				c := *msg
				out = &c
				out.Answer, out.Ns, out.Extra = slices.Clone(msg.Answer), slices.Clone(msg.Ns), slices.Clone(msg.Extra)
			}
			rs := [...]*[]dns.RR{&out.Answer, &out.Ns, &out.Extra}[i]
			rr = dns.Copy(rr)
			rr.Header().Ttl = ttl
			(*rs)[j] = rr
		}
	}
	if out == nil {
		return msg
	}
	return out
}

// putFailure caches a SERVFAIL answer as put does (briefly, RFC 9520 §3.2),
// unless key holds an answer that is fresh or still inside the serve-stale
// window: a failure never displaces an answer that may yet be served.
func (c *Cache) putFailure(key cacheKey, msg *dns.Msg, now time.Time) {
	if e, ok := c.t.get(key); ok && e.rcode != dns.RcodeServerFailure && c.servable(e, now) {
		return
	}
	c.put(key, msg, now)
}

// servable reports whether e may still be served at now: fresh, or inside
// the serve-stale window as it is now and as it was when e was stored (its
// keep), so that a reload that widens the window serves no entry stored
// without one.
func (c *Cache) servable(e *cacheEntry, now time.Time) bool {
	return now.Sub(e.stored) < min(e.ttl+c.cfg.ServeStale, e.keep)
}

// cacheTTL is how long an answer may be cached: the smallest TTL of its
// records, OPT aside (clamped to [minTTL, maxTTL], in seconds), and with
// an SOA in the authority section at most that SOA's MINIMUM: a negative
// answer's TTL is the smaller of the SOA's TTL and MINIMUM (RFC 2308 §5),
// after a CNAME chain too, and no record of the answer may be served past
// its own, an additional record's (glue) among them: kept longer, it would
// be served with TTL 0 for the rest of the answer's life, though its
// upstream said to ask again (RFC 1035 §3.2.1; Unbound's message cache
// takes the smallest TTL of every section too). NXDOMAIN and NODATA
// without an SOA are not cached, a NODATA after a CNAME chain among them
// (answerLifetime); an upstream SERVFAIL is, briefly.
func cacheTTL(m *dns.Msg, minTTL, maxTTL uint32) (time.Duration, bool) {
	ttl, soa := ^uint32(0), false
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				ttl = min(ttl, receivedTTL(rr.Header().Ttl))
			}
		}
	}
	for _, rr := range m.Ns {
		if s, ok := rr.(*dns.SOA); ok {
			ttl, soa = min(ttl, s.Minttl), true
			break
		}
	}
	return answerLifetime(m.Rcode, listen.Relevant(m), ttl, soa, minTTL, maxTTL)
}

// receivedTTL is a record's TTL as received, read as RFC 2181 §8 says: a
// TTL with its most significant bit set is treated as zero (a TTL is at
// most 2^31 - 1), not clamped to max_ttl and cached for as long.
func receivedTTL(ttl uint32) uint32 {
	if ttl > config.MaxTTL {
		return 0
	}
	return ttl
}

// answerLifetime is cacheTTL's verdict from what it read of an answer
// (message or wire form): its RCODE, whether its answer section holds a
// record of the type asked (relevant), the smallest TTL of its records, OPT
// aside (and of the authority SOA's MINIMUM, when soa says it
// has one). A NOERROR answer without a relevant record is a NODATA (RFC
// 2308 §2.2), after a CNAME chain too: like an NXDOMAIN, it is cached only
// with an SOA, whose TTL and MINIMUM bound how long the type's absence
// holds (§5: negative answers without an SOA SHOULD NOT be cached). Kept
// for the CNAME's TTL instead, it would deny the type for as long as the
// alias lasts.
func answerLifetime(rcode int, relevant bool, ttl uint32, soa bool, minTTL, maxTTL uint32) (time.Duration, bool) {
	clamp := func(t uint32) time.Duration {
		return time.Duration(min(max(t, minTTL), maxTTL)) * time.Second
	}
	switch rcode {
	case dns.RcodeServerFailure:
		return min(servfailTTL, clamp(uint32(servfailTTL/time.Second))), true
	case dns.RcodeNameError, dns.RcodeSuccess:
	default:
		return 0, false
	}
	if negative := rcode == dns.RcodeNameError || !relevant; negative && !soa {
		return 0, false
	}
	return clamp(ttl), true
}

// aged copies the cached answer with every TTL clamped to the entry's
// lifetime and reduced by the time since it was stored (so the SOA of a
// negative answer counts down from its negative TTL, RFC 2308 §5); fixed > 0
// sets every TTL to it instead (stale answers). It is nil for an answer
// held in wire form that miekg/dns cannot unpack.
func (e *cacheEntry) aged(now time.Time, fixed uint32) *dns.Msg {
	msg := e.message()
	if msg == nil {
		return nil
	}
	m := msg.Copy()
	elapsed := uint32(max(now.Sub(e.stored), 0) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT {
				continue
			}
			if fixed > 0 {
				h.Ttl = fixed
				continue
			}
			h.Ttl = e.ttlAt(h.Ttl, elapsed)
		}
	}
	return m
}
