package resolver

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReloadResizesUpstreamInflight: limits.upstream_inflight applies at
// reload to the next query, lowered or raised, and the queries that hold
// a slot keep it (before, the bound was fixed at start).
func TestReloadResizesUpstreamInflight(t *testing.T) {
	f, up, release := startHeldFence(t, "limits: {upstream_inflight: 3}")
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	type result struct {
		name string
		r    *dns.Msg
		err  error
	}
	done := make(chan result, 3)
	hold := func(name string) {
		go func() {
			r, err := exchange(f.addr, "", "udp", question(name, dns.TypeA, false))
			done <- result{name, r, err}
		}()
	}
	hold("held1.example.org.")
	hold("held2.example.org.")
	require.Eventually(t, func() bool { return up.count.Load() == 2 }, 5*time.Second, 5*time.Millisecond)

	reconfigure(t, f, "upstream_inflight: 3", "upstream_inflight: 2")
	start := time.Now()
	r := ask(t, f.addr, "", "udp", question("over.example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "the lowered bound applies to the next query")
	if e := ede(r); assert.NotNil(t, e) {
		assert.Equal(t, "too many upstream queries in flight", e.ExtraText)
	}
	assert.Less(t, time.Since(start), 2*time.Second, "at once, not after a wait")
	// The message path's (TCP) too: EDE 0 (Other), counted as servfail.
	r = ask(t, f.addr, "", "tcp", question("over-tcp.example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "over TCP")
	if e := ede(r); assert.NotNil(t, e) {
		assert.Equal(t, dns.ExtendedErrorCodeOther, e.InfoCode)
		assert.Equal(t, "too many upstream queries in flight", e.ExtraText)
	}
	assert.Equal(t, 1.0, queriesCounted(t, f, ResultServfail, "tcp"))
	assert.EqualValues(t, 2, up.count.Load(), "the queries over the bound never reached the upstream")

	reconfigure(t, f, "upstream_inflight: 2", "upstream_inflight: 3")
	hold("held3.example.org.")
	require.Eventually(t, func() bool { return up.count.Load() == 3 }, 5*time.Second, 5*time.Millisecond,
		"the raised bound lets the next query through")

	close(release)
	released = true
	for range 3 {
		select {
		case res := <-done:
			require.NoError(t, res.err, res.name)
			assert.Equal(t, dns.RcodeSuccess, res.r.Rcode, res.name)
		case <-time.After(10 * time.Second):
			t.Fatal("a held query never finished")
		}
	}
	assert.Zero(t, f.handler.slots.used.Load(), "every slot given back")
}

// TestReloadAppliesCacheSettings: a reload's cache settings apply to the
// next query (TTL clamps on the next answer cached, the cache turned off
// and on) while what was cached stays cached.
func TestReloadAppliesCacheSettings(t *testing.T) {
	up := startUpstream(t, nil) // TTL 300
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\ncache: {size: 100, max_ttl: 600}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	ttlOf := func(name string) uint32 {
		t.Helper()
		r := ask(t, f.addr, "", "udp", question(name, dns.TypeA, false))
		require.Len(t, r.Answer, 1, name)
		return r.Answer[0].Header().Ttl
	}
	assert.Equal(t, uint32(300), ttlOf("before.example.org."))
	asked := up.count.Load()

	reconfigure(t, f, "max_ttl: 600", "max_ttl: 60")
	assert.Equal(t, uint32(60), ttlOf("after.example.org."), "the new max_ttl clamps the next answer")
	assert.Equal(t, uint32(60), ttlOf("after.example.org."), "and its cache hits")
	assert.Equal(t, asked+1, up.count.Load(), "one upstream query for the new name")
	assert.LessOrEqual(t, ttlOf("before.example.org."), uint32(300), "an answer cached before the reload is still a hit")
	assert.Equal(t, asked+1, up.count.Load())

	reconfigure(t, f, "size: 100", "size: 0")
	for i := range 2 {
		assert.Equal(t, uint32(60), ttlOf("off.example.org."), "ask %d", i)
	}
	assert.Equal(t, asked+3, up.count.Load(), "size 0: every query goes upstream")

	reconfigure(t, f, "size: 0", "size: 100")
	for range 2 {
		ttlOf("on.example.org.")
	}
	assert.Equal(t, asked+4, up.count.Load(), "the cache is back on: the second query is a hit")
}

// TestReloadRateLimit: a reload that keeps rate_limit's rate and burst
// keeps every client's tokens; one that changes them starts every client
// afresh with the new setting, and rate 0 turns limiting off.
func TestReloadRateLimit(t *testing.T) {
	up := startUpstream(t, nil)
	// One token in 1,000 s: none comes back during the test.
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nrate_limit: {rate: 0.001, burst: 2, exempt: []}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	rcodes := func(n int) []string {
		t.Helper()
		var out []string
		for i := range n {
			r := ask(t, f.addr, "", "tcp", question(fmt.Sprintf("q%d.example.org.", i), dns.TypeA, false))
			out = append(out, dns.RcodeToString[r.Rcode])
		}
		return out
	}
	assert.Equal(t, []string{"NOERROR", "NOERROR", "REFUSED"}, rcodes(3), "burst 2, then refused on TCP")
	before := f.handler.limiter.Load()

	reconfigure(t, f, "blocked_ttl: 60", "blocked_ttl: 30")
	assert.Same(t, before, f.handler.limiter.Load(), "the same rate and burst: the same limiter")
	assert.Equal(t, []string{"REFUSED"}, rcodes(1), "still over the limit: its tokens were kept")

	reconfigure(t, f, "burst: 2", "burst: 3")
	assert.Equal(t, []string{"NOERROR", "NOERROR", "NOERROR", "REFUSED"}, rcodes(4), "the new burst, from a full bucket")

	reconfigure(t, f, "rate: 0.001", "rate: 0")
	assert.Nil(t, f.handler.limiter.Load())
	assert.Equal(t, []string{"NOERROR", "NOERROR", "NOERROR", "NOERROR"}, rcodes(4), "rate 0: no limit")
}

// TestRateLimiterShards: clients are limited one network each whatever
// shard they fall in, and the overflow bucket of a full shard is shared.
func TestRateLimiterShards(t *testing.T) {
	l := newRateLimiter(config.RateLimit{Rate: 0.001, Burst: 1})
	now := time.Unix(1000, 0)
	for i := range 1000 {
		a := netipMustParse(fmt.Sprintf("10.%d.%d.1", i/256, i%256))
		assert.True(t, l.allow(a, now), "first query of %s", a)
		assert.False(t, l.allow(a, now), "second query of %s", a)
	}
	assert.True(t, l.allow(netipMustParse("2001:db8:0:100::1"), now))
	assert.False(t, l.allow(netipMustParse("2001:db8:0:1ff::2"), now), "the same /56")
	assert.True(t, l.allow(netipMustParse("2001:db8:0:200::1"), now), "another /56")
	used := 0
	for i := range l.shards {
		used += min(len(l.shards[i].buckets), 1)
	}
	assert.Greater(t, used, limitShards/2, "clients spread over the shards")
	var off *rateLimiter
	assert.True(t, off.allow(netipMustParse("10.0.0.1"), now), "nil: no limit")
}

// TestRateLimiterFullIsSmall: a limiter that a flood of new client
// networks (spoofed sources, or the /56s of an IPv6 network) has filled
// holds its maxBuckets buckets in 25 MB of heap. A *rate.Limiter
// and a *bucket of times for each, keyed by netip.Prefix, held 240
// octets a bucket: 63 MB, where Unbound's ratelimit-size is 4 MB.
func TestRateLimiterFullIsSmall(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	l := newRateLimiter(config.RateLimit{Rate: 200, Burst: 400})
	now := time.Unix(1000, 0)
	for i := range 2 * maxBuckets {
		b := netip.MustParseAddr("fd00::").As16()
		b[4], b[5], b[6] = byte(i>>16), byte(i>>8), byte(i) // a /56 each
		l.allow(netip.AddrFrom16(b), now)
	}
	held := 0
	for i := range l.shards {
		held += len(l.shards[i].buckets)
	}
	used := heap() - before
	runtime.KeepAlive(l)
	t.Logf("%d buckets in %.1f MB, %d octets each", held, float64(used)/1e6, used/uint64(held))
	assert.Greater(t, held, maxBuckets*9/10, "the limiter filled")
	assert.Less(t, used, uint64(32<<20), "a full limiter's heap")
}

// TestRateLimiterFullShardsStayCheap: once a flood of spoofed sources has
// filled every shard, each further new source goes to the overflow bucket
// at about the cost of a known client's query: a full shard is not swept
// for idle buckets again for every new source (4,096 buckets under the
// shard's lock each time made 20,000 new sources cost many times what
// filling the whole limiter did). Idle buckets are still forgotten.
func TestRateLimiterFullShardsStayCheap(t *testing.T) {
	l := newRateLimiter(config.RateLimit{Rate: 200, Burst: 400})
	now := time.Unix(1000, 0)
	n := uint32(0)
	next := func() netip.Addr {
		n++
		return netip.AddrFrom4([4]byte{10 | byte(n>>24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	start := time.Now()
	for filled := 0; filled < maxBuckets; { // every shard full, none over
		a := next()
		if s := l.shard(listen.ClientNetwork(a)); len(s.buckets) < maxBuckets/limitShards {
			l.allow(a, now)
			filled++
		}
	}
	fill := time.Since(start)
	const spoofed = 20000
	start = time.Now()
	for i := range spoofed {
		assert.True(t, l.allow(next(), now.Add(2*time.Second+time.Duration(i)*time.Microsecond)))
	}
	flood := time.Since(start)
	t.Logf("%d sources filled the limiter in %v; %d more took %v", maxBuckets, fill, spoofed, flood)
	assert.Less(t, flood, fill, "new sources past a full limiter cost more than filling it")

	l.allow(next(), now.Add(2*time.Minute))
	held := 0
	for i := range l.shards {
		held += len(l.shards[i].buckets)
	}
	assert.Less(t, held, maxBuckets, "idle buckets of a full limiter not forgotten")
}

// TestRateLimiterShardsAreKeyed: which shard holds a client network is
// decided by a hash keyed afresh for each limiter, so sources cannot be
// chosen to fall in one shard: the networks that share a shard in one
// limiter spread over most shards in another. Before, the hash was a fixed
// multiplication: networks found to share a shard shared it in every
// dnsfence, and a 64th of the limiter's addresses filled one shard.
func TestRateLimiterShardsAreKeyed(t *testing.T) {
	cfg := config.RateLimit{Rate: 10, Burst: 10}
	a, b := newRateLimiter(cfg), newRateLimiter(cfg)
	index := func(l *rateLimiter, key netip.Prefix) int {
		s := l.shard(key)
		for i := range l.shards {
			if &l.shards[i] == s {
				return i
			}
		}
		t.Fatalf("%s: no shard", key)
		return -1
	}
	var together []netip.Prefix // networks that share a's shard 0
	for i := range 1 << 14 {
		key := listen.ClientNetwork(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}))
		if index(a, key) == 0 {
			together = append(together, key)
		}
	}
	require.Greater(t, len(together), 128, "about a 64th of 16,384 networks")
	shards := map[int]bool{}
	for _, key := range together {
		shards[index(b, key)] = true
	}
	assert.Greater(t, len(shards), limitShards/2, "%d networks of one shard of a fall in %d shards of b", len(together), len(shards))
}
