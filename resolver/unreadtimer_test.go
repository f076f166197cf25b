package resolver

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// unreadClient is a client in no policy of govConfig (its policy covers
// 127.0.0.0/24 only): it gets an answer miekg/dns does not read as the
// upstream sent it.
const unreadClient = "127.0.81.4"

// heldUpstream is an upstream answering as unreadHintAnswer does, which
// holds its answers to every question but the probes' while held. Over
// UDP it answers those with TC set and no record, so that the wire path
// too gets the answer miekg/dns does not read from its retry over TCP
// (as the message path does), not as a datagram it takes whole. Its HTTPS
// record has TTL 1 until the first hold, and 300 from then on (the held
// answers and every later one), so that a refresh's answer outlives the
// test's next queries however slow the machine (as holdingUpstream's).
type heldUpstream struct {
	*testUpstream
	held     atomic.Pointer[chan struct{}] // the hold under way, to wait on
	heldOnce atomic.Bool                   // hold was called: TTL 300
	next     atomic.Pointer[chan struct{}] // holdNext's hold, for the next TCP query alone
}

// startHeldUpstream starts a heldUpstream on 127.0.0.1, not held.
func startHeldUpstream(t *testing.T) *heldUpstream {
	t.Helper()
	u := &heldUpstream{}
	u.testUpstream = startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		if q.Name == "." {
			return defaultAnswer(w, r)
		}
		if hold := u.held.Load(); hold != nil {
			<-*hold
		}
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			m := new(dns.Msg).SetReply(r)
			m.Truncated = true
			return m
		}
		if next := u.next.Swap(nil); next != nil {
			<-*next
		}
		if q.Qtype != dns.TypeHTTPS || !dns.IsSubDomain("svcb.example.", q.Name) {
			return unreadHintAnswer(w, r)
		}
		rr := hintRecord(q.Name, 1, ".")
		rr.Hdr.Ttl = 1
		if u.heldOnce.Load() {
			rr.Hdr.Ttl = 300
		}
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		m.Answer = []dns.RR{rr}
		writeUnread(w, m)
		return nil
	})
	return u
}

// tcpQueries counts the queries the upstream received over TCP but the
// probes': one a refresh.
func (u *heldUpstream) tcpQueries() int {
	n := 0
	for _, q := range u.queries() {
		if q.tcp && q.msg.Question[0].Name != "." {
			n++
		}
	}
	return n
}

// hold holds the upstream's answers until the function it returns, or the
// test's end, lets them go.
func (u *heldUpstream) hold(t *testing.T) (letGo func()) {
	t.Helper()
	ch := make(chan struct{})
	u.heldOnce.Store(true)
	u.held.Store(&ch)
	var once sync.Once
	letGo = func() {
		once.Do(func() {
			u.held.Store(nil)
			close(ch)
		})
	}
	t.Cleanup(letGo) // registered after the fence's: runs before it stops
	return letGo
}

// holdNext holds the upstream's answer to the next query it receives over
// TCP alone, until the test's end (answers from then on have TTL 300, as
// after hold); the function it returns tells whether that query came.
func (u *heldUpstream) holdNext(t *testing.T) (came func() bool) {
	t.Helper()
	ch := make(chan struct{})
	u.heldOnce.Store(true)
	u.next.Store(&ch)
	t.Cleanup(func() { close(ch) }) // registered after the fence's: runs before it stops
	return func() bool { return u.next.Load() == nil }
}

// staleUnread asserts that b is the answer miekg/dns does not read served
// stale: its HTTPS record, every TTL 30 and EDE 3 (RFC 8767 §4, RFC 8914
// §4.4).
func staleUnread(t *testing.T, b []byte, what string) {
	t.Helper()
	require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, what)
	assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what)
	assert.EqualValues(t, 1, dnswire.ANCount(b), "%s: the HTTPS record", what)
	if ede := rawOptions(t, b)[dns.EDNS0EDE]; assert.GreaterOrEqual(t, len(ede), 2, "%s: an EDE", what) {
		assert.Equal(t, []byte{0, byte(dns.ExtendedErrorCodeStaleAnswer)}, ede[:2], "%s: EDE 3", what)
	}
	q, ok := dnswire.ReadQuestion(b)
	require.True(t, ok, what)
	require.True(t, dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		if r.Type != dnswire.TypeOPT {
			assert.EqualValues(t, 30, r.TTL, "%s: TTL", what)
		}
		return true
	}), what)
}

// TestUnreadServedStaleAtClientTimeout: an expired answer miekg/dns does
// not read is served stale at stale_answer_client_timeout while the
// upstreams are slow to refresh it (RFC 8767 §5's client response timer),
// like any other, to a client whose policy does not inspect it: every TTL
// 30, EDE 3. UDP (the wire path's own timer, clientTimer) and TCP (the
// message path's, fetchWithin). Before, the query waited for the
// upstreams' failure (upstream_timeout, 3 s here) to be answered stale.
// Its audit line names the stale cache as its upstream.
func TestUnreadServedStaleAtClientTimeout(t *testing.T) {
	needLoopback(t, unreadClient)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			up := startHeldUpstream(t)
			core, logs := observer.New(zap.InfoLevel)
			f := startFenceLog(t, zap.New(core), fmt.Sprintf(govConfig, "upstream_timeout: 3s\ncache: {max_ttl: 1, serve_stale: 1h, stale_answer_client_timeout: 200ms}"), govFiles, up.addr)
			q := question("a.svcb.example.", dns.TypeHTTPS, true)
			b := askOctets(t, f.addr, unreadClient, network, q)
			require.EqualValues(t, 1, dnswire.ANCount(b), "the fresh answer")
			require.Nil(t, rawOptions(t, b)[dns.EDNS0EDE], "the fresh answer")

			up.hold(t)
			var took time.Duration
			require.Eventually(t, func() bool {
				start := time.Now()
				b = askOctets(t, f.addr, unreadClient, network, q)
				took = time.Since(start)
				return rawOptions(t, b)[dns.EDNS0EDE] != nil
			}, 10*time.Second, 50*time.Millisecond, "the cached answer expires")
			staleUnread(t, b, "at the timer")
			assert.Less(t, took, 2*time.Second, "answered at the timer (200 ms), not at the upstreams' failure (3 s)")
			lines := logs.FilterMessage("query").All()
			require.NotEmpty(t, lines)
			assert.Equal(t, upstreamStale, lines[len(lines)-1].ContextMap()[logUpstream], "the stale answer's audit line says so")
		})
	}
}

// TestUnreadRefreshNoQueryWaitsForCached: an upstream's answer miekg/dns
// does not read that refreshes an expired or expiring answer is cached
// when no query waits for it any more, as any answer is: the refresh of
// a query answered stale at stale_answer_client_timeout (RFC 8767 §5: the
// refresh goes on and its answer is cached), on the wire path's timer
// (UDP) and the message path's (TCP), and a prefetch (cache.prefetch).
// The next query is then a cache hit of the new answer, and the upstream
// is not asked again. Before, the answer was dropped: the entry stayed
// expired, and the next query asked the upstream again; each hit near
// expiry prefetched again, and the entry expired all the same.
func TestUnreadRefreshNoQueryWaitsForCached(t *testing.T) {
	needLoopback(t, unreadClient)
	ttlOf := func(b []byte) uint32 {
		q, ok := dnswire.ReadQuestion(b)
		require.True(t, ok)
		ttl := uint32(0)
		require.True(t, dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
			if r.Type == dns.TypeHTTPS {
				ttl = r.TTL
			}
			return true
		}))
		return ttl
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run("timer/"+network, func(t *testing.T) {
			// The first answer lives 1 s, the refresh's 300 s
			// (heldUpstream): with max_ttl 1 the refresh's lived 1 s too,
			// and under -race beside other work (1 run of 20) the test's
			// next query came after it, asked the upstream again.
			up := startHeldUpstream(t)
			f := govFence(t, "upstream_timeout: 3s\ncache: {serve_stale: 1h, stale_answer_client_timeout: 200ms}", up.addr)
			q := question("a.svcb.example.", dns.TypeHTTPS, true)
			b := askOctets(t, f.addr, unreadClient, network, q)
			require.EqualValues(t, 1, dnswire.ANCount(b), "the fresh answer")

			letGo := up.hold(t)
			require.Eventually(t, func() bool {
				b = askOctets(t, f.addr, unreadClient, network, q)
				return rawOptions(t, b)[dns.EDNS0EDE] != nil
			}, 10*time.Second, 50*time.Millisecond, "the cached answer expires")
			staleUnread(t, b, "at the timer")

			letGo()
			require.Eventually(t, func() bool { return gauge(t, f.registry, "dnsfence_inflight_queries") == 0 },
				5*time.Second, 10*time.Millisecond, "the refresh ends")
			asked := up.tcpQueries()
			b = askOctets(t, f.addr, unreadClient, network, q)
			assert.EqualValues(t, 1, dnswire.ANCount(b), "the HTTPS record")
			assert.Nil(t, rawOptions(t, b)[dns.EDNS0EDE], "fresh: the refresh's answer, cached")
			assert.Equal(t, asked, up.tcpQueries(), "a cache hit: the upstream is not asked again")
		})
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run("prefetch/"+network, func(t *testing.T) {
			// A TTL of 5 s is prefetched in its last 500 ms (prefetchAt),
			// which the hit that starts the prefetch must fall in, as in
			// TestShutdownWaitsForPrefetch. The test waits for the answer
			// to be due (untilPrefetchDue) and for the prefetch to end,
			// asking nothing meanwhile: before, it asked every 20 ms with
			// a TTL of 2 s, and under -race beside other work (5 runs of
			// 20) the prefetch, over UDP then TCP, was answered after the
			// answer expired and a query in between was a miss, or no
			// query fell in the 200 ms at all.
			const ttl = 5
			up := startHeldUpstream(t) // TTL 1, never held: min_ttl makes it 5
			f := govFence(t, fmt.Sprintf("cache: {min_ttl: %d, prefetch: true}", ttl), up.addr)
			q := question("a.svcb.example.", dns.TypeHTTPS, true)
			b := askOctets(t, f.addr, unreadClient, network, q)
			require.EqualValues(t, ttl, ttlOf(b), "the fresh answer")
			require.Equal(t, 1, up.tcpQueries())
			b = askOctets(t, f.addr, unreadClient, network, q)
			require.Nil(t, rawOptions(t, b)[dns.EDNS0EDE], "a hit: the answer is popular")
			old := untilPrefetchDue(t, f, q)

			b = askOctets(t, f.addr, unreadClient, network, q)
			require.Nil(t, rawOptions(t, b)[dns.EDNS0EDE], "a hit, which prefetches")
			require.Eventually(t, func() bool { return gauge(t, f.registry, "dnsfence_inflight_queries") == 0 },
				5*time.Second, 10*time.Millisecond, "the prefetch ends")
			require.Equal(t, 2, up.tcpQueries(), "the prefetch asked the upstream")
			e, ok := f.handler.cache.Load().t.get(keyOf(q))
			require.True(t, ok, "the prefetch's answer is cached")
			assert.True(t, e.stored.After(old.stored), "the prefetch's answer replaced the old one")

			// The prefetch's answer is served, a hit: more than the old
			// one had left (under a tenth of its TTL: 1 s at most).
			b = askOctets(t, f.addr, unreadClient, network, q)
			assert.Greater(t, ttlOf(b), uint32(1), "the prefetch's answer")
			assert.Nil(t, rawOptions(t, b)[dns.EDNS0EDE])
			assert.Equal(t, 2, up.tcpQueries(), "one prefetch, cached: no other prefetch, no miss")
			misses, _ := metricValue(t, f.registry, "dnsfence_cache_lookups_total", "result", "miss")
			assert.Equal(t, 1.0, misses, "the first query's miss only: the prefetch refreshed the answer")
		})
	}
}

// TestUnreadRefreshedMeanwhileIsFreshAtTimer: a query whose cached answer
// (one miekg/dns does not read) has expired waits for its upstream query
// within stale_answer_client_timeout; when a query over the other
// transport, which asks apart, has refreshed the answer meanwhile, the
// first is answered at its timer with the refreshed answer as a cache
// hit (Cache.answerAtTimer, unreadEntry): its own TTL, no EDE, not
// counted stale, its audit line naming the cache (not the stale cache).
// UDP waiting (the wire path's timer, clientTimer) and TCP (the message
// path's, fetchWithin).
func TestUnreadRefreshedMeanwhileIsFreshAtTimer(t *testing.T) {
	needLoopback(t, unreadClient)
	other := map[string]string{"udp": "tcp", "tcp": "udp"}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			up := startHeldUpstream(t)
			core, logs := observer.New(zap.InfoLevel)
			f := startFenceLog(t, zap.New(core), fmt.Sprintf(govConfig, "upstream_timeout: 10s\ncache: {serve_stale: 1h, stale_answer_client_timeout: 2s}"), govFiles, up.addr)
			q := question("a.svcb.example.", dns.TypeHTTPS, true)
			b := askOctets(t, f.addr, unreadClient, network, q)
			require.EqualValues(t, 1, dnswire.ANCount(b), "the fresh answer")
			require.Eventually(t, func() bool {
				e, ok := f.handler.cache.Load().t.get(keyOf(q))
				return ok && time.Since(e.stored) > e.ttl
			}, 10*time.Second, 10*time.Millisecond, "the cached answer expires")

			came := up.holdNext(t)
			answered := make(chan []byte, 1)
			go func() { answered <- askOctets(t, f.addr, unreadClient, network, q) }()
			require.Eventually(t, came, 5*time.Second, 10*time.Millisecond, "the first query's refresh is held")
			b = askOctets(t, f.addr, unreadClient, other[network], q)
			require.Nil(t, rawOptions(t, b)[dns.EDNS0EDE], "the %s query's own refresh: fresh", other[network])
			stale, _ := metricValue(t, f.registry, "dnsfence_cache_lookups_total", "result", "stale")

			select {
			case b = <-answered:
			case <-time.After(10 * time.Second):
				t.Fatal("no answer at the client timer")
			}
			assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF))
			assert.EqualValues(t, 1, dnswire.ANCount(b), "the HTTPS record")
			assert.Nil(t, rawOptions(t, b)[dns.EDNS0EDE], "fresh: no Stale Answer EDE")
			qs, ok := dnswire.ReadQuestion(b)
			require.True(t, ok)
			require.True(t, dnswire.Walk(b, qs.End, func(r dnswire.Record) bool {
				if r.Type == dns.TypeHTTPS {
					assert.Greater(t, r.TTL, uint32(200), "the refreshed answer's TTL (300), not a stale one's 30")
				}
				return true
			}))
			after, _ := metricValue(t, f.registry, "dnsfence_cache_lookups_total", "result", "stale")
			assert.Equal(t, stale, after, "not counted stale")
			lines := logs.FilterMessage("query").All()
			require.NotEmpty(t, lines)
			assert.Equal(t, upstreamCache, lines[len(lines)-1].ContextMap()[logUpstream], "the audit line names the cache")
		})
	}
}
