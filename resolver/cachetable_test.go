package resolver

import (
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tableKey is the cache key of name, type A.
func tableKey(name string) cacheKey { return newCacheKey(name, 1, 1, false, false, true) }

// tableEntry is an entry stored at stored and kept for keep.
func tableEntry(stored time.Time, keep time.Duration) *cacheEntry {
	return &cacheEntry{stored: stored, ttl: keep, keep: keep}
}

func TestCacheTableSecondChance(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(4)
	require.Len(t, tab.shards, 1)
	for i := range 4 {
		tab.set(tableKey(fmt.Sprint(i)), tableEntry(now, time.Hour), now)
	}
	// 0 and 2 are read: the next two stores evict 1 and 3, the unread.
	for _, k := range []string{"0", "2"} {
		_, ok := tab.get(tableKey(k))
		require.True(t, ok)
	}
	tab.set(tableKey("new1"), tableEntry(now, time.Hour), now)
	tab.set(tableKey("new2"), tableEntry(now, time.Hour), now)
	assert.Equal(t, 4, tab.len())
	for k, want := range map[string]bool{"0": true, "2": true, "new1": true, "new2": true, "1": false, "3": false} {
		_, ok := tab.get(tableKey(k))
		assert.Equal(t, want, ok, k)
	}
}

func TestCacheTableReplaces(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(2)
	first, second := tableEntry(now, time.Hour), tableEntry(now, time.Hour)
	tab.set(tableKey("a"), first, now)
	tab.set(tableKey("a"), second, now)
	e, ok := tab.get(tableKey("a"))
	require.True(t, ok)
	assert.Same(t, second, e)
	assert.Equal(t, 1, tab.len())
}

func TestCacheTableReclaimsExpired(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(100)
	for i := range 10 {
		tab.set(tableKey(fmt.Sprint("short", i)), tableEntry(now, time.Second), now)
	}
	// Each store reclaims the expired entry under the hand: the expired
	// leave as new entries come, though the table is far from full.
	later := now.Add(2 * time.Second)
	for i := range 20 {
		tab.set(tableKey(fmt.Sprint("long", i)), tableEntry(later, time.Hour), later)
	}
	assert.Equal(t, 20, tab.len())
	for i := range 10 {
		_, ok := tab.get(tableKey(fmt.Sprint("short", i)))
		assert.False(t, ok, i)
	}
	// A full table evicts an expired entry before an unread live one,
	// even one read since the hand passed it.
	tab = newCacheTable(2)
	tab.set(tableKey("expires"), tableEntry(now, time.Second), now)
	tab.set(tableKey("lives"), tableEntry(now, time.Hour), now)
	tab.get(tableKey("expires"))
	tab.set(tableKey("new"), tableEntry(later, time.Hour), later)
	_, ok := tab.get(tableKey("lives"))
	assert.True(t, ok)
	_, ok = tab.get(tableKey("expires"))
	assert.False(t, ok)
}

func TestCacheTableBounds(t *testing.T) {
	now := time.Now()
	// The 300,000 keys every case stores, made once: under -race making
	// them (fmt and the key's hash) took a third of the test's time when
	// each of the five cases made its own.
	keys := make([]cacheKey, 300000)
	for i := range keys {
		keys[i] = tableKey(fmt.Sprint(i, ".example."))
	}
	for _, tc := range []struct {
		name         string
		size, shards int
		shrink       int // setLimit after filling, 0: none
		most         int // Len after 300,000 stores, at most
	}{
		{name: "one shard", size: 300, shards: 1, most: 300},
		{name: "sharded", size: 10000, shards: 32, most: 10000},
		{name: "many shards", size: 200000, shards: maxCacheShards, most: 200000},
		{name: "shrunk", size: 200000, shards: maxCacheShards, shrink: 1000, most: 1000},
		// Bound far below the shards' count: each shard holds one.
		{name: "shrunk below the shards", size: 200000, shards: maxCacheShards, shrink: 10, most: maxCacheShards},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newCacheTable(tc.size)
			require.Len(t, tab.shards, tc.shards)
			for _, k := range keys {
				tab.set(k, tableEntry(now, time.Hour), now)
			}
			full := min(tc.size, len(keys))
			if tc.shrink > 0 {
				tab.setLimit(tc.shrink)
				full = min(tc.shrink, tc.most)
			}
			assert.LessOrEqual(t, tab.len(), tc.most)
			// Every shard fills: the bound is near size, not far under it.
			assert.GreaterOrEqual(t, tab.len(), full*9/10)
			// Every shard's map and ring agree (plain comparisons: the
			// 200,000 slots' assert.Equal calls were a tenth of the test's
			// time under -race).
			for i := range tab.shards {
				s := &tab.shards[i]
				assert.Len(t, s.index, len(s.ring))
				for j, slot := range s.ring {
					if sum := cacheKeySum(slot.key); sum != slot.key.sum {
						t.Errorf("shard %d slot %d (%s): sum %#x, the key's is %#x", i, j, slot.key.name, slot.key.sum, sum)
					}
					if at, ok := s.index[slot.key.sum]; !ok || at != int32(j) {
						t.Errorf("shard %d slot %d (%s): the index has %d (%t), not %d", i, j, slot.key.name, at, ok, j)
					}
				}
			}
		})
	}
}

func TestCacheTableConcurrent(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(2000)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20000 {
				k := tableKey(fmt.Sprint(i%5000, ".example."))
				if i%3 == g%3 {
					tab.set(k, tableEntry(now, time.Duration(i%7)*time.Second), now.Add(time.Duration(i%11)*time.Second))
				} else if e, ok := tab.get(k); ok {
					_ = e.stored
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, tab.len(), 2000)
}

// TestCacheStoresCopies: put and putWire keep copies of the key's name
// (a wire query's is in memory of its own that outlives nothing) and
// putWire of the answer (the upstream reader's buffer): the buffers they
// were given may be written over once they return.
func TestCacheStoresCopies(t *testing.T) {
	now := time.Now()
	c := NewCache(config.Cache{Size: 100, MaxTTL: 86400})
	for _, viaWire := range []bool{true, false} {
		t.Run(fmt.Sprint("wire ", viaWire), func(t *testing.T) {
			name := fmt.Sprintf("copy-%t.example.org.", viaWire)
			msg := answerWith(name, dns.TypeA, dns.RcodeSuccess, name+" 300 IN A 192.0.2.7")
			raw, err := msg.Pack()
			require.NoError(t, err)
			nameBuf := []byte(name)
			key := keyOf(msg)
			key.name = unsafe.String(&nameBuf[0], len(nameBuf))
			if viaWire {
				_, ok := c.putWire(key, raw, now)
				require.True(t, ok)
			} else {
				c.put(key, msg, now)
			}
			for i := range nameBuf {
				nameBuf[i] = 'x'
			}
			clear(raw)
			e, _ := c.get(keyOf(msg), now)
			require.NotNil(t, e, "found by the name as it was")
			if viaWire {
				got := new(dns.Msg)
				require.NoError(t, got.Unpack(e.wire.wire))
				require.Len(t, got.Answer, 1)
				assert.Equal(t, "192.0.2.7", got.Answer[0].(*dns.A).A.String())
			}
		})
	}
}

// TestNewWireEntryRoom: an entry's room holds what it was made for, in
// the entry's own allocation up to the largest size class.
func TestNewWireEntryRoom(t *testing.T) {
	for _, n := range []int{0, 1, 112, 113, 176, 300, 432, 560, 800, 1328, 1329, 4000} {
		e, mem := newWireEntry(n)
		require.NotNil(t, e)
		assert.Zero(t, len(mem))
		assert.GreaterOrEqual(t, cap(mem), n)
		start := uintptr(unsafe.Pointer(e))
		at := uintptr(unsafe.Pointer(unsafe.SliceData(mem[:1])))
		// The room of the entry's own allocation starts where the entry
		// ends. (An address range would also hold a second allocation
		// that happens to start in the next span, right after the
		// entry's: the check failed so once in a few thousand runs.)
		own := at == start+unsafe.Sizeof(*e)
		assert.Equal(t, n <= 1328, own, "n=%d", n)
	}
}

// FuzzCacheTable runs a sequence of stores, lookups, bound changes and
// passing time against the table and checks it against what it must
// hold: a key found holds the entry last stored for it, an entry just
// stored is found, the table keeps within its bound, and every shard's
// map and ring agree.
func FuzzCacheTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 7, 3, 3, 200, 4, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		start := time.Now()
		now := start
		size := 8
		tab := newCacheTable(size)
		last := map[cacheKey]*cacheEntry{} // the entry last stored for each key
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%4, ops[i+1]
			key := tableKey(fmt.Sprint(arg%24, ".example."))
			switch op {
			case 0: // store, kept for 1-8 s
				e := tableEntry(now, time.Duration(1+arg%8)*time.Second)
				tab.set(key, e, now)
				last[key] = e
				got, ok := tab.get(key)
				require.True(t, ok, "just stored")
				require.Same(t, e, got)
			case 1: // look up
				if got, ok := tab.get(key); ok {
					require.Same(t, last[key], got, "the entry last stored")
				}
			case 2: // time passes, 0-3 s
				now = now.Add(time.Duration(arg%4) * time.Second)
			case 3: // a new bound, 1-16
				size = 1 + int(arg%16)
				tab.setLimit(size)
			}
			n := 0
			for j := range tab.shards {
				s := &tab.shards[j]
				require.Len(t, s.index, len(s.ring))
				require.LessOrEqual(t, len(s.ring), s.limit)
				for k, slot := range s.ring {
					require.Equal(t, cacheKeySum(slot.key), slot.key.sum)
					require.Equal(t, int32(k), s.index[slot.key.sum])
					require.Same(t, last[slot.key], slot.e)
				}
				n += len(s.ring)
			}
			require.LessOrEqual(t, n, size)
		}
	})
}

// TestCacheTableReplaceKeepsNoOldName: storing again for a key puts the
// new key, with its own name, in the slot, so that nothing of the old
// entry (whose memory held the old key's name) stays reachable.
func TestCacheTableReplaceKeepsNoOldName(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(10)
	oldName, newName := []byte("same.example."), []byte("same.example.")
	k1, k2 := tableKey(unsafe.String(&oldName[0], len(oldName))), tableKey(unsafe.String(&newName[0], len(newName)))
	tab.set(k1, tableEntry(now, time.Hour), now)
	tab.set(k2, tableEntry(now, time.Hour), now)
	s := tab.shard(k2.sum)
	require.Len(t, s.ring, 1)
	assert.Same(t, &newName[0], unsafe.StringData(s.ring[0].key.name), "the slot's key")
}

// TestCacheTableKeysOfOneName: the keys of one name that differ in type,
// class or a bit are entries of their own.
func TestCacheTableKeysOfOneName(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(100)
	base := newCacheKey("one.example.", 1, 1, false, false, false)
	keys := []cacheKey{base}
	for _, change := range []func(*cacheKey){
		func(k *cacheKey) { k.qtype = 28 },
		func(k *cacheKey) { k.qtype = 1 << 15 },
		func(k *cacheKey) { k.qclass = 3 },
		func(k *cacheKey) { k.qclass = 255 },
		func(k *cacheKey) { k.do = true },
		func(k *cacheKey) { k.cd = true },
		func(k *cacheKey) { k.rd = true },
		func(k *cacheKey) { k.do, k.cd, k.rd = true, true, true },
		func(k *cacheKey) { k.qtype, k.qclass = 0xffff, 0xffff },
	} {
		k := base
		change(&k)
		k.sum = cacheKeySum(k)
		keys = append(keys, k)
	}
	entries := map[cacheKey]*cacheEntry{}
	for _, k := range keys {
		entries[k] = tableEntry(now, time.Hour)
		tab.set(k, entries[k], now)
	}
	assert.Equal(t, len(keys), tab.len())
	for _, k := range keys {
		got, ok := tab.get(k)
		require.True(t, ok, "%+v", k)
		assert.Same(t, entries[k], got, "%+v", k)
	}
}

// TestCacheTableHashCollision: two keys of one 64-bit sum (made here by
// giving the second the first's) never answer for each other; a store
// for the second takes the slot, evicting the first.
func TestCacheTableHashCollision(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(10)
	k1, k2 := tableKey("first.example."), tableKey("second.example.")
	require.NotEqual(t, k1.sum, k2.sum)
	k2.sum = k1.sum
	e1, e2 := tableEntry(now, time.Hour), tableEntry(now, time.Hour)
	tab.set(k1, e1, now)

	_, ok := tab.get(k2)
	assert.False(t, ok, "k1's entry is not k2's")
	tab.set(k2, e2, now)
	got, ok := tab.get(k2)
	require.True(t, ok)
	assert.Same(t, e2, got)
	_, ok = tab.get(k1)
	assert.False(t, ok, "k2's entry is not k1's")
	assert.Equal(t, 1, tab.len(), "k1 evicted")
	s := tab.shard(k1.sum)
	assert.Equal(t, k2, s.ring[s.index[k1.sum]].key)
}

// TestCacheKeySum: a key's sum is made from every field of the key, the
// same for the same key however it was made (from a message, from wire
// form), and outlives a cache resize.
func TestCacheKeySum(t *testing.T) {
	req := new(dns.Msg)
	req.SetQuestion("Sum.Example.", dns.TypeAAAA)
	req.SetEdns0(1232, true)
	k := keyOf(req)
	assert.Equal(t, newCacheKey("sum.example.", dns.TypeAAAA, dns.ClassINET, true, false, true), k)
	assert.Equal(t, cacheKeySum(k), k.sum)
	raw, err := req.Pack()
	require.NoError(t, err)
	var name [maxNameText]byte
	wq, ok := readWireQuery(raw, &name)
	require.True(t, ok)
	assert.Equal(t, k, wq.key(), "the wire path's key")
	for _, other := range []cacheKey{
		newCacheKey("sum.example", dns.TypeAAAA, dns.ClassINET, true, false, true),
		newCacheKey("sum.example.", dns.TypeA, dns.ClassINET, true, false, true),
		newCacheKey("sum.example.", dns.TypeAAAA, dns.ClassCHAOS, true, false, true),
		newCacheKey("sum.example.", dns.TypeAAAA, dns.ClassINET, false, false, true),
		newCacheKey("sum.example.", dns.TypeAAAA, dns.ClassINET, true, true, true),
		newCacheKey("sum.example.", dns.TypeAAAA, dns.ClassINET, true, false, false),
	} {
		assert.NotEqual(t, k.sum, other.sum, "%+v", other)
	}
}

// TestCacheTableShrinkEvictsExpiredFirst: a smaller bound evicts expired
// entries before live ones, read or not.
func TestCacheTableShrinkEvictsExpiredFirst(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(4)
	for _, k := range []string{"live1", "gone1", "live2", "gone2"} {
		keep := time.Hour
		if k[:4] == "gone" {
			keep = time.Nanosecond
		}
		tab.set(tableKey(k), tableEntry(now.Add(-time.Second), keep), now)
		tab.get(tableKey(k))
	}
	tab.setLimit(2)
	for k, want := range map[string]bool{"live1": true, "live2": true, "gone1": false, "gone2": false} {
		_, ok := tab.get(tableKey(k))
		assert.Equal(t, want, ok, k)
	}
}

// TestCacheStaleWithinItsKeep: an answer is served stale only inside the
// serve-stale window it was stored with as well as today's, so a reload
// that turns serve-stale on serves nothing stored without it; and a
// cache turned off serves nothing stale.
func TestCacheStaleWithinItsKeep(t *testing.T) {
	now := time.Now()
	msg := answerWith("keep.example.org.", dns.TypeA, dns.RcodeSuccess, "keep.example.org. 60 IN A 192.0.2.8")
	key := keyOf(msg)

	off := NewCache(config.Cache{Size: 100, MaxTTL: 86400})
	off.put(key, msg, now)
	on := off.With(config.Cache{Size: 100, MaxTTL: 86400, ServeStale: time.Hour})
	expired := now.Add(61 * time.Second)
	assert.Nil(t, on.stale(key, expired, expired, true), "stored with no window")
	on.put(key, msg, now)
	assert.NotNil(t, on.stale(key, expired, expired, true), "stored with one")

	disabled := on.With(config.Cache{Size: 0, MaxTTL: 86400, ServeStale: time.Hour})
	assert.Nil(t, disabled.stale(key, expired, expired, true), "the cache is off")
}

// TestCachedServfailLeavesAtItsTTL: a SERVFAIL cached (briefly, RFC 9520
// §3.2) is never served stale, so it is kept no longer than its TTL
// whatever the serve-stale window, as a message (put) or in wire form
// (putWire): once expired, the next store reclaims it, and a full cache
// evicts it rather than an answer that may still be served.
func TestCachedServfailLeavesAtItsTTL(t *testing.T) {
	for _, form := range []string{"message", "wire"} {
		t.Run(form, func(t *testing.T) {
			c := NewCache(config.Cache{Size: 2, MaxTTL: 86400, ServeStale: time.Hour})
			now := time.Now()
			live := answerWith("live.example.org.", dns.TypeA, dns.RcodeSuccess, "live.example.org. 3600 IN A 192.0.2.1")
			failed := answerWith("failed.example.org.", dns.TypeA, dns.RcodeServerFailure)
			next := answerWith("next.example.org.", dns.TypeA, dns.RcodeSuccess, "next.example.org. 3600 IN A 192.0.2.2")
			c.put(keyOf(live), live, now)
			if form == "wire" {
				b, err := failed.Pack()
				require.NoError(t, err)
				_, ok := c.putWire(keyOf(failed), b, now)
				require.True(t, ok)
			} else {
				c.put(keyOf(failed), failed, now)
			}
			e, _ := c.get(keyOf(failed), now)
			require.NotNil(t, e, "the SERVFAIL is cached")
			expired := now.Add(servfailTTL)
			c.put(keyOf(next), next, expired)
			assert.Equal(t, 2, c.Len())
			for _, m := range []*dns.Msg{live, next} {
				e, _ := c.get(keyOf(m), expired)
				assert.NotNil(t, e, "%s: still cached", m.Question[0].Name)
			}
			assert.Nil(t, c.stale(keyOf(failed), expired, expired, true), "a SERVFAIL is never served stale")
		})
	}
}

// TestCacheTableEvictsAtExpiry: an entry is expired from the instant its
// keep ends (a hit and a stale answer judge it so: Cache.fresh,
// Cache.servable), and the CLOCK hand evicts it then, read or not, before
// any live entry: no second chance is given to what can no longer be
// served, at the cost of an unread live entry.
func TestCacheTableEvictsAtExpiry(t *testing.T) {
	now := time.Now()
	tab := newCacheTable(3)
	require.Len(t, tab.shards, 1)
	for _, k := range []string{"expires", "live-read", "live-unread"} {
		keep := time.Hour
		if k == "expires" {
			keep = time.Second
		}
		tab.set(tableKey(k), tableEntry(now, keep), now)
	}
	tab.get(tableKey("expires"))
	tab.get(tableKey("live-read"))
	// At the instant "expires" expires; the sweep (reclaim) looks at the
	// two live entries, so that the hand decides.
	at := now.Add(time.Second)
	tab.set(tableKey("new"), tableEntry(at, time.Hour), at)
	for k, want := range map[string]bool{"live-read": true, "live-unread": true, "new": true, "expires": false} {
		_, ok := tab.get(tableKey(k))
		assert.Equal(t, want, ok, k)
	}
}

// TestCacheTableShares: the shards' bounds add up to the table's bound,
// the remainder of its division among the shards spread over the first
// ones, and a table bound below its count of shards (cache.size lowered
// by a reload) holds one entry a shard, never none: each shard takes
// stores, and a shard of no room would have none to evict from.
func TestCacheTableShares(t *testing.T) {
	for _, size := range []int{1, 3, 511, 1001, 20_000, 32_767, 100_003} {
		tab := newCacheTable(size)
		total := 0
		for i := range tab.shards {
			total += tab.shards[i].limit
		}
		assert.Equal(t, size, total, "%d entries in %d shards", size, len(tab.shards))
	}
	tab := newCacheTable(100_000)
	require.Len(t, tab.shards, maxCacheShards)
	tab.setLimit(10)
	now := time.Now()
	for i := range 100 * maxCacheShards { // every shard gets some
		tab.set(tableKey(fmt.Sprint("below", i)), tableEntry(now, time.Hour), now)
	}
	for i := range tab.shards {
		assert.Equal(t, 1, tab.shards[i].limit, "shard %d", i)
	}
	assert.Equal(t, maxCacheShards, tab.len())
}
