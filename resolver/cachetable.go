package resolver

import (
	"math/bits"
	"sync"
	"time"
)

// cacheTable holds the answer cache's entries, at most a bound of them:
// shards by a hash of the name, each a map from the key's 64-bit hash
// (cacheKey.sum) to a slot of a ring that the CLOCK algorithm (second chance) evicts from,
// as a DNS packet cache does it (dnsdist's, Unbound's slabbed LRU). A
// lookup and a store are one map operation each under the shard's lock,
// and a store allocates nothing but when its shard's map and ring grow:
// the entry is the caller's. The map holds hashes rather than keys so
// that it never reads a key's name, elsewhere in memory, to hash or
// compare it (its growth rehashed every name); the slot's key is compared
// instead, so two keys of one hash share a slot, the later evicting the
// earlier, and never answer for each other.
//
// A slot read since the hand last passed it is passed over once more
// (its read bit cleared); the first slot the hand finds unread, or
// expired, is the one a new entry takes. A sweep apart from the hand
// reclaims expired entries, looking at two slots a store, so that expired
// entries leave at about the rate new ones come and Len counts mostly
// live ones; until then an expired entry is held, never served
// (Cache.get and Cache.stale judge by time).
type cacheTable struct {
	shards []cacheShard
	shift  uint // the hash's top bits pick the shard: 64 - log2(len(shards))
}

// cacheShard is one shard of a cacheTable.
type cacheShard struct {
	mu    sync.Mutex
	index map[uint64]int32 // the slot in ring of each key's sum
	ring  []cacheSlot
	hand  int // the next slot the CLOCK hand looks at, to evict
	sweep int // the next slot reclaim looks at
	limit int // the most entries the shard holds
	_     [64]byte
}

// cacheSlot is one cached entry and its key (whose sum is its index
// entry).
type cacheSlot struct {
	key cacheKey
	e   *cacheEntry
	// until is when e expires (stored + keep: its TTL and the serve-stale
	// window), in nanoseconds since cacheEpoch: the sweep and the hand
	// judge a slot without reading its entry, which is elsewhere in
	// memory.
	until int64
	read  bool // read since the hand last passed
}

// cacheEpoch is the origin of cacheSlot.until: a monotonic reading, so
// that the wall clock stepping does not expire an entry early or late.
var cacheEpoch = time.Now()

// sinceEpoch is t in nanoseconds since cacheEpoch.
func sinceEpoch(t time.Time) int64 { return int64(t.Sub(cacheEpoch)) }

// cacheShardSize is the fewest entries a shard is made for: a small cache
// has one shard, holding exactly its bound.
const cacheShardSize = 256

// maxCacheShards bounds the shards of a big cache, enough that the
// listeners' and upstream readers' goroutines seldom meet on a lock.
const maxCacheShards = 64

// newCacheTable returns a table of at most size entries (size ≥ 1), in
// as many shards as size allows, a power of two.
func newCacheTable(size int) *cacheTable {
	n := 1
	for n < maxCacheShards && n*2*cacheShardSize <= size {
		n *= 2
	}
	t := &cacheTable{shards: make([]cacheShard, n), shift: uint(64 - bits.TrailingZeros(uint(n)))}
	for i := range t.shards {
		t.shards[i].index = map[uint64]int32{}
	}
	t.setLimit(size)
	return t
}

// shard is the shard holding the keys of sum h: its top bits pick it.
func (t *cacheTable) shard(h uint64) *cacheShard {
	if len(t.shards) == 1 {
		return &t.shards[0]
	}
	return &t.shards[h>>t.shift]
}

// get returns the entry stored for key, expired or not.
func (t *cacheTable) get(key cacheKey) (*cacheEntry, bool) {
	h := key.sum
	s := t.shard(h)
	s.mu.Lock()
	i, ok := s.index[h]
	var e *cacheEntry
	if ok {
		slot := &s.ring[i]
		if ok = slot.key == key; ok {
			e = slot.e
			if !slot.read {
				slot.read = true // once: a hot entry's slot is not written on every hit
			}
		}
	}
	s.mu.Unlock()
	return e, ok
}

// set stores e for key, replacing what key held; when the shard is full
// it evicts an entry (see cacheTable). now judges expiry.
func (t *cacheTable) set(key cacheKey, e *cacheEntry, now time.Time) {
	h := key.sum
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	until := sinceEpoch(e.stored) + int64(e.keep)
	if i, ok := s.index[h]; ok {
		// The key, with its own name, replaces the slot's, which may be
		// in the old entry's memory (putWire): nothing keeps the old
		// entry. The slot's key may be another of the same hash: it is
		// evicted.
		s.ring[i].e.gone.Store(true)
		s.ring[i].key, s.ring[i].e, s.ring[i].until = key, e, until
		return
	}
	at := sinceEpoch(now)
	s.reclaim(at)
	if len(s.ring) < s.limit {
		s.index[h] = int32(len(s.ring))
		s.ring = append(s.ring, cacheSlot{key: key, e: e, until: until})
		return
	}
	// The new entry takes the victim's slot, and the hand moves past it:
	// it is not looked at again before every other slot has been.
	i := s.victim(at)
	delete(s.index, s.ring[i].key.sum)
	s.ring[i].e.gone.Store(true)
	s.ring[i] = cacheSlot{key: key, e: e, until: until}
	s.index[h] = int32(i)
	s.hand = i + 1
}

// forget removes the entry stored for key, unless it was stored after
// now, for an answer at now that supersedes it and is not cached: too
// large to cache (maxCachedAnswer), or with no cache lifetime (a TTL of
// 0, a negative answer without an SOA: cacheTTL). Left in the cache, the
// old answer, once expired, would be served stale within serve_stale
// when the upstreams next fail, or by the client response timer to every
// query whose upstream takes longer than stale_answer_client_timeout (a
// large answer asked over TCP after a truncated datagram), until the
// window ends, though the upstream has since answered otherwise (as
// Unbound evicts a cached message when a TTL 0 answer comes, PR 866). An
// answer stored by another upstream query since is newer than the one
// that supersedes the entry, and is kept.
func (t *cacheTable) forget(key cacheKey, now time.Time) {
	h := key.sum
	s := t.shard(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.index[h]; ok && s.ring[i].key == key && !s.ring[i].e.stored.After(now) {
		s.remove(int(i))
	}
}

// reclaim looks at the next two slots of its own sweep, apart from the
// CLOCK hand, removing those expired: two, so that the sweep passes every
// slot within some stores even while each store makes the ring one
// longer.
func (s *cacheShard) reclaim(now int64) {
	for range 2 {
		if len(s.ring) == 0 {
			return
		}
		s.sweep %= len(s.ring)
		if s.ring[s.sweep].until <= now {
			s.remove(s.sweep) // the last slot moved in: the sweep stays
			continue
		}
		s.sweep++
	}
}

// victim is the slot the hand evicts next: the first expired or unread
// one at now (sinceEpoch), clearing the read bit of those it passes. An
// entry an answer memo served since the hand last passed (recalled) was
// read. The shard is not empty.
func (s *cacheShard) victim(now int64) int {
	for {
		s.hand %= len(s.ring)
		slot := &s.ring[s.hand]
		if slot.e.recalled.Load() {
			slot.e.recalled.Store(false)
			slot.read = true
		}
		if !slot.read || slot.until <= now {
			return s.hand
		}
		slot.read = false
		s.hand++
	}
}

// remove deletes slot i, moving the ring's last slot into its place.
func (s *cacheShard) remove(i int) {
	s.ring[i].e.gone.Store(true)
	delete(s.index, s.ring[i].key.sum)
	last := len(s.ring) - 1
	if i != last {
		s.ring[i] = s.ring[last]
		s.index[s.ring[i].key.sum] = int32(i)
	}
	s.ring[last] = cacheSlot{}
	s.ring = s.ring[:last]
}

// setLimit bounds the table to size entries (size ≥ 1), evicting at once
// what is over, the expired and the unread first: each shard holds its
// share of size. A table made for one size and bound to one below its
// count of shards holds one entry a shard, a few more than size.
func (t *cacheTable) setLimit(size int) {
	n, now := len(t.shards), sinceEpoch(time.Now())
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.limit = size / n
		if i < size%n || s.limit == 0 {
			s.limit++
		}
		for len(s.ring) > s.limit {
			s.remove(s.victim(now))
		}
		s.mu.Unlock()
	}
}

// len is the number of entries held, expired ones not yet reclaimed among
// them.
func (t *cacheTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.ring)
		s.mu.Unlock()
	}
	return n
}
