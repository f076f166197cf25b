package resolver

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/dnsfence/dnsfence/resolver/listen"
)

// The answer memo: each UDP read loop keeps the blocked answers and cache
// hits it gave, by the client's address and the query's bytes after its
// ID, and gives the next query with the same bytes from the same address
// the same answer without reading or deciding it again, as dnsdist's
// packet cache answers by the query's bytes. Whatever the answer depends
// on is in the key or in the snapshot: the client's address decides its
// identity, allowed_clients and policy (peerIdentity: a UDP query's is
// its peer's, unless a trusted proxy's ECS option names the client, which
// the wire path leaves to the message path), the bytes decide the name,
// type, flags, EDNS size and DO bit; the blocked answer's TTL and SOA
// serial are the snapshot's. So the memo holds the entries of one
// snapshot: a new one (Handler.Store, storeLists) empties every loop's
// memo before its first query, and a loop that finds its memo made with
// another snapshot empties it. A cache hit is kept as its entry, aged to
// each query as a hit is (appendCached), and served only while the cache
// holds it fresh (Cache.recallable). The rate limit, the metrics and the
// audit line are every query's, remembered or not.
//
// Nothing on the memo's path reads the query beyond its bytes, decides,
// or packs the blocked answer: a query's work is a map lookup and a copy.
// With nothing of a query's in the CPU's caches between two queries (a
// core idle at 5,000 queries a second), what a query touches is what it
// costs (README, Performance).

// idLen is the length of a message's ID, the key's part of the header
// that is not: RFC 1035 §4.1.1.
const idLen = 2

// memoEntries is the most answers all loops' memos hold together, and
// memoBytes the most heap they keep, with the cache entries of their hits
// (memoEntry.size): each loop holds its share of both (memoSet.share),
// and empties its memo when full to fill it again with what is asked
// next.
const (
	memoEntries = 16384
	memoBytes   = 32 << 20
)

// maxMemoQuery is the longest query kept, in octets: a question of the
// longest name (255 octets), a header and an OPT with 16 octets of
// options (a client cookie takes 12). Longer ones (padded) are answered
// as every query is.
const maxMemoQuery = 12 + 255 + 4 + 11 + 16

// answerMemo is one UDP read loop's memo (listen.MemoHandler).
type answerMemo struct {
	h *Handler
	// mu is taken by the loop while it looks up or keeps an answer, and
	// by Store while it empties the memo: it is the loop's alone but for
	// that.
	mu sync.Mutex
	// snap is the snapshot the entries were decided with.
	snap    *Snapshot
	entries map[string]*memoEntry
	bytes   int // what the entries keep (memoEntry.size)
	// key is the key of the query looked up last, in memory reused.
	key []byte
}

// memoEntry is an answer the memo gives again, with what the query that
// got it was made of.
type memoEntry struct {
	// wire is the query as read, with a name of its own and no datagram:
	// each query that finds the entry brings its own, the same bytes
	// with its own ID.
	wire wireQuery
	id   Identity
	out  outcome // the decision, made on wire.name (its entry is a slice of it)
	// answer is a blocked answer as it was sent, to send again with the
	// query's ID; nil for a cache hit.
	answer []byte
	rcode  int
	// cached is the cache entry of a cache hit, nil for a blocked answer.
	// The memo keeps it alive after the cache let it go, until the memo
	// drops the entry (the next query finds it gone) or is emptied: its
	// bytes count against the memo's (memoBytes).
	cached *cacheEntry
}

// hit reports whether the entry is a cache hit's, and its cache entry.
func (e *memoEntry) hit() (*cacheEntry, bool) { return e.cached, e.cached != nil }

// size is what the entry keeps of the heap, in bytes, roughly: the entry,
// its key, name and blocked answer, and the cache entry of a hit: its
// wire form's octets, and twice as many for the message it may be
// unpacked into (maxCachedFootprint's bound, twice maxCachedAnswer).
func (e *memoEntry) size(key int) int {
	n := memoEntrySize + key + len(e.wire.name) + len(e.answer)
	if e.cached != nil {
		if w := e.cached.wireForm(); w != nil {
			n += 3 * len(w.wire)
		}
	}
	return n
}

// memoEntrySize is a memoEntry's own size, in bytes, with its map slot.
const memoEntrySize = 480

// memoSet is the memos of the loops that run, for Store to empty.
type memoSet struct {
	mu  sync.Mutex
	set map[*answerMemo]struct{}
	// loops is len(set), read without the lock by share.
	loops atomic.Int32
}

// share is the most entries one loop's memo holds, and the most bytes:
// memoEntries and memoBytes split between the loops that run (a listen
// address has a socket a core), at least 256 entries and 512 KB.
func (s *memoSet) share() (entries, bytes int) {
	n := max(int(s.loops.Load()), 1)
	return max(memoEntries/n, 256), max(memoBytes/n, 512<<10)
}

// NewMemo is a memo for a UDP read loop (listen.MemoHandler).
func (h *Handler) NewMemo() listen.Memo {
	m := &answerMemo{h: h, entries: map[string]*memoEntry{}, key: make([]byte, 0, net.IPv6len+maxWireQuery)}
	h.memos.mu.Lock()
	if h.memos.set == nil {
		h.memos.set = map[*answerMemo]struct{}{}
	}
	h.memos.set[m] = struct{}{}
	h.memos.loops.Store(int32(len(h.memos.set)))
	h.memos.mu.Unlock()
	return m
}

var _ listen.MemoHandler = (*Handler)(nil)

// Close forgets the memo, whose loop has ended (listen.Memo).
func (m *answerMemo) Close() {
	m.h.memos.mu.Lock()
	delete(m.h.memos.set, m)
	m.h.memos.loops.Store(int32(len(m.h.memos.set)))
	m.h.memos.mu.Unlock()
	m.empty(nil)
}

// forgetMemos empties every loop's memo, after the snapshot that filled
// them was replaced: nothing decided with it is given again, and nothing
// of it is kept alive by a loop that has no query to notice.
func (h *Handler) forgetMemos() {
	h.memos.mu.Lock()
	defer h.memos.mu.Unlock()
	for m := range h.memos.set {
		m.empty(nil)
	}
}

// empty drops every entry; snap is the snapshot the memo is for next.
func (m *answerMemo) empty(snap *Snapshot) {
	m.mu.Lock()
	clear(m.entries)
	m.bytes = 0
	m.snap = snap
	m.mu.Unlock()
}

// memoOf is the memo of the loop serving w's query inline, or nil.
func memoOf(w listen.ResponseWriter) *answerMemo {
	if mw, ok := w.(listen.MemoWriter); ok {
		m, _ := mw.Memo().(*answerMemo)
		return m
	}
	return nil
}

// memoSource is the client address a UDP query from w is remembered by:
// its identity's Source (peerIdentity), unmapped and without a zone.
func memoSource(w listen.ResponseWriter) (netip.Addr, bool) {
	a, ok := w.RemoteAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	return a.AddrPort().Addr().Unmap().WithZone(""), true
}

// setKey makes the memo's key of the query b from source.
func (m *answerMemo) setKey(source netip.Addr, b []byte) {
	a := source.As16()
	m.key = append(append(m.key[:0], a[:]...), b[idLen:]...)
}

// find is the entry for the query b from source, decided with snap, or
// nil.
func (m *answerMemo) find(snap *Snapshot, source netip.Addr, b []byte) *memoEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snap != snap {
		clear(m.entries)
		m.bytes = 0
		m.snap = nil
		if m.h.state.Load() == snap {
			// Not a query that loaded the snapshot just replaced: the
			// memo would keep that one alive until its next query.
			m.snap = snap
		}
		return nil
	}
	m.setKey(source, b)
	return m.entries[string(m.key)]
}

// drop forgets the entry for the query b from source: its cache entry is
// no longer served as it was kept.
func (m *answerMemo) drop(source netip.Addr, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setKey(source, b)
	if e, ok := m.entries[string(m.key)]; ok {
		m.bytes -= e.size(len(m.key))
		delete(m.entries, string(m.key))
	}
}

// keep remembers r, the answer just written to the wire query q served
// inline, when it is one the memo gives again: a blocked answer packed
// whole, or a cache hit packed from its entry, to a client no ECS option
// named, with nothing in q's outcome that the answer's inspection
// changed.
func (m *answerMemo) keep(q *query, r reply) {
	if !q.wire.ok || q.req != nil || q.id.ECS != nil || q.id.Via != IdentityTransport || r.msg != nil || r.wire == nil ||
		len(q.wire.b) > maxMemoQuery {
		return
	}
	e := &memoEntry{rcode: r.rcode}
	switch {
	case r.cached != nil && q.out.result == ResultForwarded && r.result == r.cached.result() &&
		(!q.out.inspects() || !r.cached.addsNames() && !q.out.inspectsAddresses()):
		// inspectEntry had nothing to look at: the outcome is the
		// decision's, as it will be for the next query.
		e.cached = r.cached
	case r.cached == nil && r.result == ResultBlocked && q.out.result == ResultBlocked && q.via == "":
		e.answer = append([]byte(nil), r.wire...)
	default:
		return
	}
	name := strings.Clone(q.wire.name)
	e.wire, e.id = q.wire, q.id
	e.wire.b, e.wire.name = nil, name
	// The decision again, on the entry's own name: q's entry is a slice of
	// the listener's buffer. The same snapshot decides the same.
	e.out = q.snap.decide(q.id.Source, q.id.Client, name)
	if e.out.result != q.out.result || e.out.shadow != q.out.shadow {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snap != q.snap || m.h.state.Load() != q.snap {
		return // replaced meanwhile: Store has emptied the memo, or will
	}
	m.setKey(q.id.Source, q.wire.b)
	size := e.size(len(m.key))
	if old, ok := m.entries[string(m.key)]; ok {
		m.bytes -= old.size(len(m.key))
	}
	if entries, bytes := m.h.memos.share(); len(m.entries) >= entries || m.bytes+size > bytes {
		clear(m.entries)
		m.bytes = 0
	}
	m.entries[string(m.key)] = e
	m.bytes += size
}

// serveRecalled answers the datagram b, a query from w's client with the
// bytes of the one the memo entry e was kept for, and reports whether it
// did: the memo's own way through, which takes the rate limit, records the
// query (metrics, audit line) and writes the answer as serveInline does,
// and nothing else: no reading, deciding, packing or fitting (the answer
// was fitted to these bytes), and no in-flight count (answered within
// the loop, which the listener's shutdown waits for before Wait). A cache
// hit whose entry is no longer served as it was is left to the handler's
// path (false), which asks the cache.
func (h *Handler) serveRecalled(w listen.ResponseWriter, b []byte, snap *Snapshot, e *memoEntry) (answered bool) {
	q := query{w: w, transport: listen.UDP, wire: e.wire, snap: snap, id: e.id, start: time.Now()}
	q.wire.b = b
	q.client = q.id.Client.Addr()
	defer func() {
		if r := recover(); r != nil {
			h.failed(&q, r)
			answered = true
		}
	}()
	c := h.cache.Load()
	ce, hit := e.hit()
	if hit && !c.recallable(ce, q.start) {
		return false
	}
	if r, limited := h.admit(&q); limited {
		h.write(&q, r)
		return true
	}
	q.out = e.out // admitted: a drop above was of nothing decided (write)
	var r reply
	if !hit {
		// The answer as sent, with this query's ID: the entry is the
		// loop's, whose goroutine alone uses it.
		copy(e.answer, b[:idLen])
		r = reply{wire: e.answer, rcode: e.rcode, result: ResultBlocked}
	} else {
		c.hit(ce)
		var ok bool
		if r, ok = packedCached(&q, ce, ce.result()); !ok {
			// Packed once for these bytes, so never; but were it so,
			// the hit as cached gives it.
			h.write(&q, h.cached(&q, ce, false))
			return true
		}
		defer answerBufs.Put(r.buf)
		h.metrics.cacheLookup(cacheHit)
		q.upstream = upstreamCache
	}
	h.record(&q, r.result, r.rcode)
	if _, err := w.Write(r.wire); err != nil {
		h.log.Debug("writing answer", zap.Error(err), zap.String(logClient, q.client.String()))
	}
	return true
}
