package resolver

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// eachMemo calls f with each of h's memos, under its lock.
func eachMemo(h *Handler, f func(m *answerMemo)) {
	h.memos.mu.Lock()
	defer h.memos.mu.Unlock()
	for m := range h.memos.set {
		m.mu.Lock()
		f(m)
		m.mu.Unlock()
	}
}

// memoCounts is the entries of each of h's loops' memos.
func memoCounts(h *Handler) []int {
	var n []int
	eachMemo(h, func(m *answerMemo) { n = append(n, len(m.entries)) })
	return n
}

// memoHeld is the answers h's memos hold, each counted once: a loop
// keeps its own (each UDP socket's loop answers the queries the kernel
// gives it, by their source port).
func memoHeld(h *Handler) int {
	keys := map[string]bool{}
	eachMemo(h, func(m *answerMemo) {
		for k := range m.entries {
			keys[k] = true
		}
	})
	return len(keys)
}

// sameAnswer asserts that b is a's answer again: the same message but
// for the ID, and TTLs no larger and at most 1 s aged.
func sameAnswer(t *testing.T, a, b *dns.Msg, msg string) {
	t.Helper()
	wa, ta := ttlsZeroed(t, packed(a))
	wb, tb := ttlsZeroed(t, packed(b))
	x, y := new(dns.Msg), new(dns.Msg)
	require.NoError(t, x.Unpack(wa))
	require.NoError(t, y.Unpack(wb))
	x.Id, y.Id = 0, 0
	assert.Equal(t, x.String(), y.String(), msg)
	require.Len(t, tb, len(ta), msg)
	for i := range ta {
		assert.LessOrEqual(t, tb[i], ta[i], "%s: TTL %d", msg, i)
		assert.InDelta(t, ta[i], tb[i], 1, "%s: TTL %d", msg, i)
	}
}

// TestMemoAnswersAsTheFirstTime: a query asked again with the same bytes
// (its ID aside) from the same client gets the answer the first got, from
// the loop's answer memo for a blocked name and a cache hit, and every
// other answer as before; each is counted, and audited under
// log.queries: all, as the first was.
func TestMemoAnswersAsTheFirstTime(t *testing.T) {
	needLoopback(t, "127.0.0.4", "127.0.0.6", "127.0.0.7")
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), testConfig, testFiles, up.addr)
	edns := func(m *dns.Msg) *dns.Msg { m.SetEdns0(1232, true); return m }
	tests := []struct {
		name   string
		from   string
		req    *dns.Msg
		rcode  int
		result string
	}{
		{"blocked", "127.0.0.1", question("www.tiktok.com.", dns.TypeA, false), dns.RcodeNameError, ResultBlocked},
		{"blocked, edns do, mixed case", "127.0.0.1", edns(question("WwW.TikTok.CoM.", dns.TypeAAAA, false)), dns.RcodeNameError, ResultBlocked},
		{"blocked by rule", "127.0.0.1", question("capcut.com.", dns.TypeA, false), dns.RcodeNameError, ResultBlocked},
		{"blocked, refused action", "127.0.0.6", question("tiktok.com.", dns.TypeA, false), dns.RcodeRefused, ResultBlocked},
		{"blocked, null action", "127.0.0.7", question("tiktok.com.", dns.TypeA, false), dns.RcodeSuccess, ResultBlocked},
		{"allowed by exception", "127.0.0.1", question("ads.tiktok.com.", dns.TypeA, false), dns.RcodeSuccess, ResultForwarded},
		{"forwarded, policy", "127.0.0.1", question("memo.example.", dns.TypeA, false), dns.RcodeSuccess, ResultForwarded},
		{"forwarded, no policy", "127.0.0.4", edns(question("memo2.example.", dns.TypeA, false)), dns.RcodeSuccess, ResultForwarded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := logs.FilterMessage("query").Len()
			var first *dns.Msg
			for i := range 4 {
				m := tc.req.Copy()
				m.Id = uint16(1000 + i)
				r := ask(t, f.addr, tc.from, "udp", m)
				require.Equal(t, m.Id, r.Id, "the query's own ID")
				require.Equal(t, tc.rcode, r.Rcode)
				if first == nil {
					first = r
					continue
				}
				sameAnswer(t, first, r, tc.name)
			}
			audited := logs.FilterMessage("query").All()
			require.Len(t, audited, before+4, "an audit line a query")
			var lines []map[string]any
			for _, l := range audited[before:] {
				c := l.ContextMap()
				assert.Equal(t, tc.from, c[logClient])
				assert.Equal(t, tc.result, c[logResult])
				delete(c, logDuration)
				lines = append(lines, c)
			}
			// The memo's lines are the first cache hit's (the second
			// query; the first asked upstream), or the first block's.
			assert.Equal(t, lines[1], lines[2])
			assert.Equal(t, lines[1], lines[3])
			if tc.result == ResultBlocked {
				assert.Equal(t, lines[0], lines[1])
			}
		})
	}
	assert.Equal(t, 5.0*4, queriesCounted(t, f, ResultBlocked, "udp"), "every blocked query counted")
	// Kept: the blocked answers packed whole (not the null action's
	// address, built as a message), and the two cache hits of the names
	// forwarded and of the exception.
	assert.Equal(t, 4+3, memoHeld(f.handler))
	assert.Equal(t, 3, up.distinct(), "each forwarded name asked upstream once")
}

// TestMemoPerClient: the memo keeps answers by the client's address: the
// same bytes from a client of another policy are decided for it.
func TestMemoPerClient(t *testing.T) {
	needLoopback(t, "127.0.0.3")
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	q := question("www.tiktok.com.", dns.TypeA, false)
	for range 3 {
		assert.Equal(t, dns.RcodeNameError, ask(t, f.addr, "127.0.0.1", "udp", q.Copy()).Rcode)
	}
	for range 3 {
		assert.Equal(t, dns.RcodeSuccess, ask(t, f.addr, "127.0.0.3", "udp", q.Copy()).Rcode, "press-office blocks nothing")
	}
	assert.Equal(t, dns.RcodeNameError, ask(t, f.addr, "127.0.0.1", "udp", q.Copy()).Rcode)
}

// TestMemoForgottenOnReload: a reload (a list edited, a policy's action
// changed) empties every loop's memo as the new snapshot is published:
// a name the new list blocks is blocked at its next query, though its
// answer was a cache hit the memo kept, and a blocked answer kept is not
// given again under another action.
func TestMemoForgottenOnReload(t *testing.T) {
	up := startUpstream(t, nil)
	text := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, text, testFiles, up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
	for range 3 {
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "", "memo.example."))
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "www.tiktok.com."))
	}
	require.Equal(t, 2, memoHeld(f.handler), "both answers kept")

	writeAtomic(t, filepath.Join(f.dir, "tiktok.txt"), testFiles["tiktok.txt"]+"memo.example\n")
	require.NoError(t, r.Reload(true))
	assert.Zero(t, memoHeld(f.handler), "emptied with the snapshot's publication")
	for _, m := range memoSnapshots(f.handler) {
		assert.Nil(t, m, "no memo holds the old snapshot")
	}
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "memo.example."), "blocked at the first query after the reload")

	for range 2 {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "www.tiktok.com."))
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	changed := strings.Replace(string(b), `allow: ["allow.txt"]`, `allow: ["allow.txt"]`+"\n    action: refused", 1)
	require.NotEqual(t, string(b), changed)
	writeAtomic(t, path, changed)
	require.NoError(t, r.Reload(true))
	assert.Equal(t, dns.RcodeRefused, rcodeOf(t, f.addr, "", "www.tiktok.com."), "the new action at once")
}

// memoSnapshots is the snapshot each of h's memos was filled with.
func memoSnapshots(h *Handler) []*Snapshot {
	var s []*Snapshot
	eachMemo(h, func(m *answerMemo) { s = append(s, m.snap) })
	return s
}

// TestMemoFollowsTheCache: a cache hit the memo kept is given only while
// the cache holds its entry fresh: expired, the query goes upstream and
// gets the new answer; taken out of the cache (an answer that supersedes
// it, evicted), it is looked up again.
func TestMemoFollowsTheCache(t *testing.T) {
	var n atomic.Int32
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		ttl := uint32(300)
		if strings.HasPrefix(r.Question[0].Name, "short.") {
			ttl = 1
		}
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A: net.IPv4(192, 0, 2, byte(n.Add(1)))})
		return m
	})
	text := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, text, testFiles, up.addr)
	addr := func(name string) string {
		r := ask(t, f.addr, "", "udp", question(name, dns.TypeA, false))
		require.Len(t, r.Answer, 1)
		return r.Answer[0].(*dns.A).A.String()
	}
	first := addr("short.example.")
	assert.Equal(t, first, addr("short.example."))
	assert.Equal(t, first, addr("short.example."), "from the memo")
	require.Equal(t, 1, memoHeld(f.handler))
	time.Sleep(1100 * time.Millisecond)
	assert.NotEqual(t, first, addr("short.example."), "expired: asked upstream again")
	assert.Equal(t, 2, up.distinct())

	kept := addr("gone.example.")
	assert.Equal(t, kept, addr("gone.example."))
	assert.Equal(t, kept, addr("gone.example."), "from the memo")
	key := newCacheKey("gone.example.", dns.TypeA, dns.ClassINET, false, false, true)
	f.handler.cache.Load().t.forget(key, time.Now())
	assert.NotEqual(t, kept, addr("gone.example."), "out of the cache: asked upstream again")
	assert.Equal(t, 4, up.distinct())
}

// TestMemoForgetsAHitTheCacheLetGo: a memo entry whose cache entry the
// cache no longer serves is dropped by the query that finds it so, on the
// loop that holds it, and that query goes upstream as any miss does: the
// memo does not keep alive what the cache let go. (Over the network a
// query may land on another socket's loop, whose memo never held it:
// this drives one loop's memo through ServeWire.)
func TestMemoForgetsAHitTheCacheLetGo(t *testing.T) {
	up := startUpstream(t, nil)
	text := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, text, testFiles, up.addr)
	h := f.handler
	memo := h.NewMemo()
	defer memo.Close()
	m := memo.(*answerMemo)
	remote := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 4), Port: 5300}
	w := &memoWriter{discardWriter: discardWriter{remote: remote}, memo: memo}
	q, err := question("let-go.example.", dns.TypeA, false).Pack()
	require.NoError(t, err)
	serve := func() {
		resume, handled := h.ServeWire(w, q)
		require.True(t, handled)
		if resume != nil {
			resume() // the upstream's answer, off the loop
		}
	}
	source := netipMustParse("127.0.0.4")
	serve() // a miss: asked upstream, and cached
	serve() // a hit, kept
	require.NotNil(t, m.find(h.Snapshot(), source, q), "the hit kept")
	asked := up.distinct()
	key := newCacheKey("let-go.example.", dns.TypeA, dns.ClassINET, false, false, true)
	h.cache.Load().t.forget(key, time.Now())
	serve()
	assert.Equal(t, asked+1, up.distinct(), "out of the cache: asked upstream")
	assert.Nil(t, m.find(h.Snapshot(), source, q), "the entry the cache let go dropped")
}

// TestMemoDrop: drop forgets the entry of one query from one client.
func TestMemoDrop(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	m := f.handler.NewMemo().(*answerMemo)
	defer m.Close()
	a, b := netipMustParse("127.0.0.1"), netipMustParse("127.0.0.2")
	q, err := question("kept.example.", dns.TypeA, false).Pack()
	require.NoError(t, err)
	snap := f.handler.Snapshot()
	require.Nil(t, m.find(snap, a, q))
	for _, src := range []netip.Addr{a, b} {
		m.setKey(src, q)
		m.entries[string(m.key)] = &memoEntry{answer: []byte{0}}
	}
	q[0]++ // another ID: the same query
	require.NotNil(t, m.find(snap, a, q))
	m.drop(a, q)
	assert.Nil(t, m.find(snap, a, q), "dropped")
	assert.NotNil(t, m.find(snap, b, q), "the other client's kept")
}

// TestMemoTakesNoReplacedSnapshot: a loop that looks up its memo with the
// snapshot a reload has just replaced neither keeps it nor fills the memo
// with it.
func TestMemoTakesNoReplacedSnapshot(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	m := f.handler.NewMemo().(*answerMemo)
	defer m.Close()
	old := f.handler.Snapshot()
	cfg, err := config.Load(old.Config.File)
	require.NoError(t, err)
	next, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, ConnectUpstreams(nil, next, old, f.handler.metrics))
	f.handler.Store(next)
	old.Forwarder().Close()
	q, err := question("www.tiktok.com.", dns.TypeA, false).Pack()
	require.NoError(t, err)
	assert.Nil(t, m.find(old, netipMustParse("127.0.0.1"), q))
	assert.Nil(t, m.snap, "the replaced snapshot is not the memo's")
	assert.Nil(t, m.find(next, netipMustParse("127.0.0.1"), q))
	assert.Same(t, next, m.snap)
}

// TestMemoShare: the memos hold memoEntries and memoBytes between them,
// at least 256 entries and 512 KB each.
func TestMemoShare(t *testing.T) {
	var s memoSet
	for _, c := range []struct{ loops, entries, bytes int }{
		{0, memoEntries, memoBytes}, {1, memoEntries, memoBytes}, {2, memoEntries / 2, memoBytes / 2},
		{64, 256, 512 << 10}, {1000, 256, 512 << 10},
	} {
		s.loops.Store(int32(c.loops))
		entries, bytes := s.share()
		assert.Equal(t, c.entries, entries, "%d loops", c.loops)
		assert.Equal(t, c.bytes, bytes, "%d loops", c.loops)
	}
}

// TestMemoBytesBounded: a memo whose entries, with the cache entries
// they keep alive, would pass its share of memoBytes is emptied first;
// what it counts is what it holds.
func TestMemoBytesBounded(t *testing.T) {
	up := startUpstream(t, nil)
	text := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, text, testFiles, up.addr)
	for range 3 {
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "", "bytes.example."))
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "www.tiktok.com."))
	}
	_, share := f.handler.memos.share()
	eachMemo(f.handler, func(m *answerMemo) {
		n := 0
		for k, e := range m.entries {
			n += e.size(len(k))
			if ce, hit := e.hit(); hit {
				assert.Greater(t, e.size(len(k)), memoEntrySize+len(k)+len(ce.wireForm().wire), "the cache entry counted")
			}
		}
		assert.Equal(t, n, m.bytes, "the memo's count is what it holds")
		m.bytes = share // full: the next answer kept empties it
	})
	for range 2 {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "tiktok.com."))
	}
	counts := memoCounts(f.handler)
	assert.Contains(t, counts, 1, "the loop that answered emptied its memo and kept the answer")
}

// TestMemoBounded: a loop's memo holds at most its share of memoEntries
// answers; a full one is emptied and filled again.
func TestMemoBounded(t *testing.T) {
	up := startUpstream(t, nil)
	text := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}", 1)
	f := startFence(t, text, testFiles, up.addr)
	snap := f.handler.Snapshot()
	entries, _ := f.handler.memos.share()
	eachMemo(f.handler, func(m *answerMemo) {
		m.snap = snap
		for i := range entries {
			m.entries[string(rune(i))+"filler"] = &memoEntry{}
		}
	})
	for range 2 {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "www.tiktok.com."))
	}
	counts := memoCounts(f.handler)
	assert.Contains(t, counts, 1, "the loop that answered emptied its full memo and kept the answer")
	for _, c := range counts {
		assert.LessOrEqual(t, c, entries)
	}
}

// TestCacheRecall: an entry a memo kept is served while the table holds
// it and it is fresh, outside the last tenth of its TTL when prefetch is
// on (get decides on a refresh there), each time counted as a hit (hit).
func TestCacheRecall(t *testing.T) {
	t0 := time.Now()
	for _, prefetch := range []bool{false, true} {
		c := NewCache(config.Cache{Size: 16, Prefetch: prefetch})
		e := &cacheEntry{stored: t0, ttl: 100 * time.Second}
		assert.True(t, c.recallable(e, t0.Add(50*time.Second)))
		assert.Equal(t, !prefetch, c.recallable(e, t0.Add(95*time.Second)), "prefetch %v: the last tenth", prefetch)
		assert.False(t, c.recallable(e, t0.Add(100*time.Second)), "expired")
		assert.Zero(t, e.hits.Load(), "recallable counts nothing")
		c.hit(e)
		if prefetch {
			assert.Equal(t, int32(1), e.hits.Load(), "the hit counted, as get counts it")
		} else {
			assert.Zero(t, e.hits.Load(), "no count to keep without prefetch, as get")
		}
		e.gone.Store(true)
		assert.False(t, c.recallable(e, t0.Add(time.Second)), "no longer the table's")
	}
}

// TestCacheEntryGone: the table marks every entry it lets go.
func TestCacheEntryGone(t *testing.T) {
	now := time.Now()
	c := NewCache(config.Cache{Size: 1})
	entry := func() *cacheEntry { return &cacheEntry{stored: now, ttl: time.Hour, keep: time.Hour} }
	k1 := newCacheKey("a.example.", dns.TypeA, dns.ClassINET, false, false, true)
	k2 := newCacheKey("b.example.", dns.TypeA, dns.ClassINET, false, false, true)
	a, b, d := entry(), entry(), entry()
	c.t.set(k1, a, now)
	c.t.set(k1, b, now)
	assert.True(t, a.gone.Load(), "replaced")
	c.t.set(k2, d, now)
	assert.True(t, b.gone.Load(), "evicted")
	c.t.forget(k2, now)
	assert.True(t, d.gone.Load(), "forgotten")
}

// TestCacheKeepsWhatAMemoServes: an entry served from an answer memo
// since the CLOCK hand last passed is read, as one get returned: the hand
// passes it once, and evicts another.
func TestCacheKeepsWhatAMemoServes(t *testing.T) {
	now := time.Now()
	c := NewCache(config.Cache{Size: 2})
	entry := func() *cacheEntry { return &cacheEntry{stored: now, ttl: time.Hour, keep: time.Hour} }
	key := func(n string) cacheKey { return newCacheKey(n, dns.TypeA, dns.ClassINET, false, false, true) }
	hot, cold := entry(), entry()
	c.t.set(key("hot.example."), hot, now)
	c.t.set(key("cold.example."), cold, now)
	c.hit(hot) // served from a memo, never through get
	c.t.set(key("new.example."), entry(), now)
	assert.False(t, hot.gone.Load(), "the entry a memo serves stays")
	assert.True(t, cold.gone.Load(), "the unread one goes")
	assert.False(t, hot.recalled.Load(), "the hand took the mark as it passed")
}

// TestMemoClosedWithItsLoop: a loop's memo is let go when the listener
// stops, with what it holds.
func TestMemoClosedWithItsLoop(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for range 2 {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "www.tiktok.com."))
	}
	require.NotEmpty(t, memoCounts(f.handler))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, f.server.Shutdown(ctx))
	assert.Empty(t, memoCounts(f.handler), "every loop's memo closed")
}
