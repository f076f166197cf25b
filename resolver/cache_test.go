package resolver

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answerWith builds an upstream answer to a question for name/qtype.
func answerWith(name string, qtype uint16, rcode int, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Response = true
	m.Rcode = rcode
	for _, s := range rrs {
		rr := mustRR("%s", s)
		if rr.Header().Rrtype == dns.TypeSOA {
			m.Ns = append(m.Ns, rr)
		} else {
			m.Answer = append(m.Answer, rr)
		}
	}
	return m
}

func TestCacheTTLs(t *testing.T) {
	const soa = "example.org. %d IN SOA ns.example.org. host.example.org. 1 3600 600 86400 %d"
	tests := []struct {
		name    string
		msg     *dns.Msg
		min     uint32
		max     uint32
		wantTTL time.Duration // 0: not cached
	}{
		{name: "positive: smallest record TTL", msg: answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
			"a.example.org. 300 IN CNAME b.example.org.", "b.example.org. 20 IN A 192.0.2.1"), max: 86400, wantTTL: 20 * time.Second},
		{name: "positive: clamped by max_ttl", msg: answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
			"a.example.org. 300 IN A 192.0.2.1"), max: 60, wantTTL: 60 * time.Second},
		{name: "positive: raised by min_ttl", msg: answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
			"a.example.org. 5 IN A 192.0.2.1"), min: 30, max: 86400, wantTTL: 30 * time.Second},
		{name: "positive: TTL 0 not cached", msg: answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
			"a.example.org. 0 IN A 192.0.2.1"), max: 86400},
		{name: "nxdomain: SOA MINIMUM below its TTL", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError,
			sprintf(soa, 3600, 60)), max: 86400, wantTTL: 60 * time.Second},
		{name: "nxdomain: SOA TTL below MINIMUM", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError,
			sprintf(soa, 30, 900)), max: 86400, wantTTL: 30 * time.Second},
		{name: "nodata: SOA", msg: answerWith("x.example.org.", dns.TypeAAAA, dns.RcodeSuccess,
			sprintf(soa, 600, 120)), max: 86400, wantTTL: 120 * time.Second},
		{name: "nxdomain without SOA not cached", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError), max: 86400},
		// After a CNAME chain (RFC 2308 §5): no record past its own TTL,
		// and the negative part no longer than the SOA's MINIMUM.
		{name: "nxdomain after a CNAME: the CNAME's TTL", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError,
			"x.example.org. 30 IN CNAME gone.example.org.", sprintf(soa, 3600, 600)), max: 86400, wantTTL: 30 * time.Second},
		{name: "nxdomain after a CNAME: the SOA MINIMUM", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError,
			"x.example.org. 3600 IN CNAME gone.example.org.", sprintf(soa, 3600, 60)), max: 86400, wantTTL: 60 * time.Second},
		{name: "nodata after a CNAME: the SOA MINIMUM", msg: answerWith("x.example.org.", dns.TypeAAAA, dns.RcodeSuccess,
			"x.example.org. 3600 IN CNAME v4only.example.org.", sprintf(soa, 3600, 60)), max: 86400, wantTTL: 60 * time.Second},
		{name: "nodata after a CNAME: the SOA TTL", msg: answerWith("x.example.org.", dns.TypeAAAA, dns.RcodeSuccess,
			"x.example.org. 3600 IN CNAME v4only.example.org.", sprintf(soa, 45, 900)), max: 86400, wantTTL: 45 * time.Second},
		{name: "nodata after a CNAME without SOA not cached", msg: answerWith("x.example.org.", dns.TypeAAAA, dns.RcodeSuccess,
			"x.example.org. 3600 IN CNAME v4only.example.org."), max: 86400},
		{name: "positive: the CNAME asked for", msg: answerWith("x.example.org.", dns.TypeCNAME, dns.RcodeSuccess,
			"x.example.org. 300 IN CNAME y.example.org."), max: 86400, wantTTL: 300 * time.Second},
		{name: "positive: ANY", msg: answerWith("x.example.org.", dns.TypeANY, dns.RcodeSuccess,
			"x.example.org. 300 IN CNAME y.example.org."), max: 86400, wantTTL: 300 * time.Second},
		{name: "servfail briefly", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeServerFailure), max: 86400, wantTTL: 5 * time.Second},
		{name: "servfail never longer than max_ttl", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeServerFailure), max: 2, wantTTL: 2 * time.Second},
		{name: "refused not cached", msg: answerWith("x.example.org.", dns.TypeA, dns.RcodeRefused), max: 86400},
		{name: "positive: an additional record's TTL", msg: withExtra(answerWith("m.example.org.", dns.TypeMX, dns.RcodeSuccess,
			"m.example.org. 300 IN MX 10 mx.example.org."), "mx.example.org. 20 IN A 192.0.2.25"), max: 86400, wantTTL: 20 * time.Second},
		{name: "positive: an additional TTL 0 not cached", msg: withExtra(answerWith("m.example.org.", dns.TypeMX, dns.RcodeSuccess,
			"m.example.org. 300 IN MX 10 mx.example.org."), "mx.example.org. 0 IN A 192.0.2.25"), max: 86400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The wire path's reading of the same answer decides alike.
			raw, err := tc.msg.Pack()
			require.NoError(t, err)
			var w wireAnswer
			sh, ok := wireOf(raw, &w)
			require.True(t, ok)
			wireTTL, wireOK := sh.cacheTTL(tc.min, tc.max)
			msgTTL, msgOK := cacheTTL(tc.msg, tc.min, tc.max)
			assert.Equal(t, msgTTL, wireTTL, "wire form")
			assert.Equal(t, msgOK, wireOK, "wire form")

			c := NewCache(config.Cache{Size: 100, MinTTL: tc.min, MaxTTL: tc.max})
			key := keyOf(tc.msg)
			now := time.Unix(1_000_000, 0)
			c.put(key, tc.msg, now)
			got, _ := c.get(key, now)
			if tc.wantTTL == 0 {
				assert.Nil(t, got)
				return
			}
			require.NotNil(t, got)
			still, _ := c.get(key, now.Add(tc.wantTTL-time.Millisecond))
			assert.NotNil(t, still, "fresh just before its TTL")
			gone, _ := c.get(key, now.Add(tc.wantTTL))
			assert.Nil(t, gone, "expired at its TTL")
		})
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// withExtra is m with the records rrs in its additional section, and an
// OPT record (whose TTL field holds flags, not a TTL) after them.
func withExtra(m *dns.Msg, rrs ...string) *dns.Msg {
	for _, s := range rrs {
		m.Extra = append(m.Extra, mustRR("%s", s))
	}
	m.SetEdns0(1232, false)
	return m
}

// testutilGauge reads a gauge without labels from the fence's registry.
func testutilGauge(t *testing.T, f *fence, name string) float64 {
	t.Helper()
	mfs, err := f.registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func TestCacheAgesTTLs(t *testing.T) {
	c := NewCache(config.Cache{Size: 100, MaxTTL: 86400})
	msg := answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
		"a.example.org. 300 IN CNAME b.example.org.", "b.example.org. 100 IN A 192.0.2.1")
	key := keyOf(msg)
	now := time.Unix(1_000_000, 0)
	c.put(key, msg, now)
	e, _ := c.get(key, now.Add(40*time.Second))
	require.NotNil(t, e)
	for _, rr := range e.aged(now.Add(40*time.Second), 0).Answer {
		assert.Equal(t, uint32(60), rr.Header().Ttl, "aged from the entry's lifetime: %s", rr)
	}
	assert.Equal(t, uint32(300), msg.Answer[0].Header().Ttl, "the cached message itself is never modified")
}

func TestCacheKeys(t *testing.T) {
	base := question("Example.ORG.", dns.TypeA, false)
	lower := question("example.org.", dns.TypeA, false)
	assert.Equal(t, keyOf(base), keyOf(lower), "names are case-folded")
	withDO := question("example.org.", dns.TypeA, true)
	withDO.IsEdns0().SetDo()
	assert.NotEqual(t, keyOf(lower), keyOf(withDO), "DO bit")
	withCD := question("example.org.", dns.TypeA, false)
	withCD.CheckingDisabled = true
	assert.NotEqual(t, keyOf(lower), keyOf(withCD), "CD bit")
	noRD := question("example.org.", dns.TypeA, false)
	noRD.RecursionDesired = false
	assert.NotEqual(t, keyOf(lower), keyOf(noRD), "RD bit: a cache-only answer is not a recursive one")
	assert.NotEqual(t, keyOf(lower), keyOf(question("example.org.", dns.TypeAAAA, false)), "type")
	chaos := question("example.org.", dns.TypeA, false)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	assert.NotEqual(t, keyOf(lower), keyOf(chaos), "class")

	// Every key above, and each over TCP, coalesces on its own flight key.
	flights := map[string]cacheKey{}
	for _, k := range []cacheKey{keyOf(lower), keyOf(withDO), keyOf(withCD), keyOf(noRD), keyOf(chaos),
		keyOf(question("example.org.", dns.TypeAAAA, false)), {name: "example.org.\x00"}} {
		for _, tcp := range []bool{false, true} {
			f := k.flight(tcp)
			prev, seen := flights[f]
			assert.False(t, seen, "%+v and %+v share the flight key %q", k, prev, f)
			flights[f] = k
		}
	}
}

func TestCacheServeStaleAndPrefetch(t *testing.T) {
	c := NewCache(config.Cache{Size: 100, MaxTTL: 86400, ServeStale: time.Hour, Prefetch: true})
	msg := answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess, "a.example.org. 100 IN A 192.0.2.1")
	key := keyOf(msg)
	now := time.Unix(1_000_000, 0)
	c.put(key, msg, now)

	_, prefetch := c.get(key, now.Add(10*time.Second))
	assert.False(t, prefetch, "not near expiry")
	_, prefetch = c.get(key, now.Add(95*time.Second))
	assert.True(t, prefetch, "popular and within the last tenth of its TTL: the first asker refreshes it")
	e, prefetch := c.get(key, now.Add(96*time.Second))
	assert.False(t, prefetch, "only once")
	e.prefetchFailed()
	_, prefetch = c.get(key, now.Add(97*time.Second))
	assert.True(t, prefetch, "a failed refresh lets the next asker try again")

	fresh, _ := c.get(key, now.Add(101*time.Second))
	assert.Nil(t, fresh)
	expired, past := now.Add(101*time.Second), now.Add(100*time.Second+time.Hour)
	stale := c.stale(key, expired, expired, false)
	require.NotNil(t, stale)
	assert.Equal(t, uint32(30), stale.Answer[0].Header().Ttl)
	assert.Nil(t, c.stale(key, past, past, false), "past the stale window")
}

// TestCacheStaleRefreshTime: an expired answer that every upstream failed
// to refresh is served stale without asking them for stale_refresh_time
// after that failure (RFC 8767 §5's failure recheck timer), then they are
// asked again; a failure that asked no upstream (a local limit) starts no
// such wait, nor does a fresh answer, and 0 turns it off.
func TestCacheStaleRefreshTime(t *testing.T) {
	msg := answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess, "a.example.org. 100 IN A 192.0.2.1")
	key := keyOf(msg)
	now := time.Unix(1_000_000, 0)
	expired := now.Add(200 * time.Second)
	cfg := config.Cache{Size: 100, MaxTTL: 86400, ServeStale: time.Hour, StaleRefreshTime: 30 * time.Second}

	c := NewCache(cfg)
	c.put(key, msg, now)
	assert.Nil(t, c.unrefreshedEntry(key, expired), "no failure yet: ask the upstreams")
	require.NotNil(t, c.stale(key, expired, expired, false))
	assert.Nil(t, c.unrefreshedEntry(key, expired.Add(time.Second)), "no upstream was asked: ask them")

	require.NotNil(t, c.stale(key, expired, expired, true))
	for _, after := range []time.Duration{0, time.Second, 29 * time.Second} {
		e := c.unrefreshedEntry(key, expired.Add(after))
		if assert.NotNil(t, e, "%v after every upstream failed: stale at once", after) {
			assert.Equal(t, uint32(30), e.aged(expired.Add(after), staleTTL).Answer[0].Header().Ttl)
		}
	}
	assert.Nil(t, c.unrefreshedEntry(key, expired.Add(30*time.Second)), "refresh time over: ask again")
	again := expired.Add(31 * time.Second)
	require.NotNil(t, c.stale(key, again, again, true), "they failed again")
	assert.NotNil(t, c.unrefreshedEntry(key, expired.Add(60*time.Second)), "the wait starts at the last failure")
	assert.Nil(t, c.unrefreshedEntry(key, now.Add(100*time.Second+time.Hour)), "past the stale window")

	c.put(key, msg, expired.Add(61*time.Second))
	assert.Nil(t, c.unrefreshedEntry(key, expired.Add(62*time.Second)), "refreshed: a fresh entry has no failure")

	// A refresh begun before the entry was stored (by another upstream
	// query) was not refreshing it: its failure is not the entry's.
	began := expired.Add(60 * time.Second)
	c.failedRefresh(key, began, expired.Add(62*time.Second))
	require.NotNil(t, c.stale(key, began, now.Add(200*time.Second+time.Hour), true), "expired since")
	assert.Nil(t, c.unrefreshedEntry(key, now.Add(200*time.Second+time.Hour)), "no failure of its own: ask the upstreams")

	off := NewCache(config.Cache{Size: 100, MaxTTL: 86400, ServeStale: time.Hour})
	off.put(key, msg, now)
	require.NotNil(t, off.stale(key, expired, expired, true))
	assert.Nil(t, off.unrefreshedEntry(key, expired.Add(time.Second)), "stale_refresh_time 0: ask on every query")
	// Every query, even one received before the failure was recorded (a
	// query of its own failing meanwhile): no wait to be inside of.
	assert.Nil(t, off.unrefreshedEntry(key, expired.Add(-time.Second)), "stale_refresh_time 0: a query received before the failure")

	noStale := NewCache(config.Cache{Size: 100, MaxTTL: 86400, StaleRefreshTime: time.Minute})
	noStale.put(key, msg, now)
	assert.Nil(t, noStale.stale(key, expired, expired, true))
	assert.Nil(t, noStale.unrefreshedEntry(key, expired), "serve_stale off: nothing stale")
}

// TestCacheStaleRefreshTimeByMonotonicClock: stale_refresh_time runs by
// the monotonic clock, as the cache's lifetimes do: the machine's wall
// clock stepped back an hour after every upstream failed to refresh an
// answer (NTP at boot, a VM resumed from a snapshot) does not have the
// answer served stale, the upstreams never asked, for that hour (kept as
// Unix nanoseconds, the failure was an hour in the future), and one
// stepped forward does not end the wait at once.
func TestCacheStaleRefreshTimeByMonotonicClock(t *testing.T) {
	if !testnet.WallSteppable() {
		t.Skip("time.Time's layout changed: testnet.WallStepped no longer steps the wall clock alone")
	}
	msg := answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess, "a.example.org. 100 IN A 192.0.2.1")
	key := keyOf(msg)
	cfg := config.Cache{Size: 100, MaxTTL: 86400, ServeStale: 2 * time.Hour, StaleRefreshTime: 30 * time.Second}
	for _, step := range []time.Duration{-time.Hour, time.Hour} {
		now := time.Now()
		expired := now.Add(200 * time.Second)
		c := NewCache(cfg)
		c.put(key, msg, now)
		require.NotNil(t, c.stale(key, expired, expired, true), "every upstream failed")
		assert.NotNil(t, c.unrefreshedEntry(key, testnet.WallStepped(expired.Add(29*time.Second), step)),
			"wall clock stepped %v, 29 s after the failure: served stale without asking", step)
		assert.Nil(t, c.unrefreshedEntry(key, testnet.WallStepped(expired.Add(31*time.Second), step)),
			"wall clock stepped %v, 31 s after the failure: ask the upstreams again", step)
	}
}

// TestCacheClientTimeout: RFC 8767 §5's client response timer applies to
// a query whose cached answer has expired and may be served stale, and
// runs stale_answer_client_timeout from the query's start; not to a fresh
// answer, one past the stale window, a cached SERVFAIL, nor with the
// timeout or serve_stale off. Once it fires, the answer is served stale
// (TTL 30), unless it is fresh again.
func TestCacheClientTimeout(t *testing.T) {
	msg := answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess, "a.example.org. 100 IN A 192.0.2.1")
	key := keyOf(msg)
	now := time.Unix(1_000_000, 0)
	expired := now.Add(200 * time.Second)
	cfg := config.Cache{Size: 100, MaxTTL: 86400, ServeStale: time.Hour, StaleAnswerClientTimeout: 1800 * time.Millisecond}

	c := NewCache(cfg)
	c.put(key, msg, now)
	_, ok := c.clientTimeout(key, now, now.Add(time.Second))
	assert.False(t, ok, "fresh: a hit, no timer")
	assert.Nil(t, c.staleUnanswered(key, now.Add(time.Second)), "fresh: nothing stale to answer")
	wait, ok := c.clientTimeout(key, expired, expired.Add(300*time.Millisecond))
	assert.True(t, ok, "expired, inside the stale window")
	assert.Equal(t, 1500*time.Millisecond, wait, "from the query's start")
	if st := c.staleUnanswered(key, expired.Add(1800*time.Millisecond)); assert.NotNil(t, st) {
		assert.Equal(t, uint32(30), st.Answer[0].Header().Ttl)
	}
	_, ok = c.clientTimeout(key, now, now.Add(100*time.Second+time.Hour))
	assert.False(t, ok, "past the stale window")
	assert.Nil(t, c.staleUnanswered(key, now.Add(100*time.Second+time.Hour)))

	c.put(key, msg, expired.Add(time.Second))
	assert.Nil(t, c.staleUnanswered(key, expired.Add(2*time.Second)), "refreshed meanwhile: fresh again")

	fail := answerWith("f.example.org.", dns.TypeA, dns.RcodeServerFailure)
	c.put(keyOf(fail), fail, now)
	_, ok = c.clientTimeout(keyOf(fail), now.Add(6*time.Second), now.Add(6*time.Second))
	assert.False(t, ok, "a SERVFAIL is never served stale")

	for _, off := range []config.Cache{
		{Size: 100, MaxTTL: 86400, ServeStale: time.Hour},
		{Size: 100, MaxTTL: 86400, StaleAnswerClientTimeout: time.Second},
	} {
		c := NewCache(off)
		c.put(key, msg, now)
		_, ok := c.clientTimeout(key, expired, expired)
		assert.False(t, ok, "timeout %v, serve_stale %v: no timer", off.StaleAnswerClientTimeout, off.ServeStale)
	}
}

func TestCacheIsBounded(t *testing.T) {
	c := NewCache(config.Cache{Size: 50, MaxTTL: 86400})
	now := time.Now()
	for i := 0; i < 1000; i++ {
		name := "h" + strings.Repeat("x", i%7) + fmt.Sprintf("%d", i) + ".example.org."
		msg := answerWith(name, dns.TypeA, dns.RcodeSuccess, name+" 300 IN A 192.0.2.1")
		c.put(keyOf(msg), msg, now)
	}
	assert.Equal(t, 50, c.Len(), "full, and no more")
}

func TestCacheOverSockets(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		switch r.Question[0].Name {
		case "tc.example.org.":
			if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
				m.Truncated, m.Answer = true, nil
			}
		case "nx.example.org.":
			m.Rcode = dns.RcodeNameError
			m.Answer = nil
			m.Ns = []dns.RR{mustRR("example.org. 300 IN SOA ns.example.org. h.example.org. 1 3600 600 86400 60")}
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)

	r := ask(t, f.addr, "", "udp", question("Cached.Example.ORG.", dns.TypeA, false))
	require.Len(t, r.Answer, 1)
	r = ask(t, f.addr, "", "tcp", question("cached.example.org.", dns.TypeA, false))
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "cached.example.org.", r.Question[0].Name, "the client's own spelling is echoed")
	assert.EqualValues(t, 1, up.count.Load(), "the second asking is a cache hit, whatever the case or transport")

	ask(t, f.addr, "", "udp", question("nx.example.org.", dns.TypeA, false))
	r = ask(t, f.addr, "", "udp", question("nx.example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	require.Len(t, r.Ns, 1)
	assert.LessOrEqual(t, r.Ns[0].Header().Ttl, uint32(60), "negative TTL is the SOA MINIMUM")
	assert.EqualValues(t, 2, up.count.Load(), "NXDOMAIN cached (RFC 2308)")

	// A truncated answer is retried over TCP, and the full answer cached.
	r = ask(t, f.addr, "", "udp", question("tc.example.org.", dns.TypeA, false))
	assert.False(t, r.Truncated)
	before := up.count.Load()
	ask(t, f.addr, "", "udp", question("tc.example.org.", dns.TypeA, false))
	assert.Equal(t, before, up.count.Load())
}

func TestConcurrentMissesShareOneUpstreamQuery(t *testing.T) {
	f, up, release := startHeldFence(t, "")
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := exchange(f.addr, "", "udp", question("same.example.org.", dns.TypeA, false))
			if err == nil && len(r.Answer) == 1 {
				ok.Add(1)
			}
		}()
	}
	require.Eventually(t, func() bool { return up.count.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	// Let every client's query reach the server before the answer.
	require.Eventually(t, func() bool {
		return testutilGauge(t, f, "dnsfence_inflight_queries") == 10
	}, 5*time.Second, 5*time.Millisecond)
	close(release)
	wg.Wait()
	assert.EqualValues(t, 10, ok.Load())
	assert.EqualValues(t, 1, up.count.Load(), "ten identical misses, one upstream query")
}

func TestUpstreamInflightBound(t *testing.T) {
	f, up, release := startHeldFence(t, "limits: {upstream_inflight: 1}")
	done := make(chan *dns.Msg, 1)
	go func() {
		r, _ := exchange(f.addr, "", "udp", question("first.example.org.", dns.TypeA, false))
		done <- r
	}()
	require.Eventually(t, func() bool { return up.count.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	start := time.Now()
	r := ask(t, f.addr, "", "udp", question("second.example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "no slot: SERVFAIL at once, not a pile-up")
	assert.Less(t, time.Since(start), 2*time.Second)
	close(release)
	first := <-done
	require.NotNil(t, first)
	assert.Equal(t, dns.RcodeSuccess, first.Rcode)
}

func TestServeStaleWhenUpstreamsFail(t *testing.T) {
	var alive atomic.Bool
	alive.Store(true)
	up := switchable(t, &alive)
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\ncache: {max_ttl: 1, serve_stale: 1h}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	r := ask(t, f.addr, "", "udp", question("stale.example.org.", dns.TypeA, true))
	require.Len(t, r.Answer, 1)
	alive.Store(false)
	require.Eventually(t, func() bool {
		r, err := exchange(f.addr, "", "udp", question("stale.example.org.", dns.TypeA, true))
		return err == nil && ede(r) != nil && ede(r).InfoCode == dns.ExtendedErrorCodeStaleAnswer
	}, 10*time.Second, 50*time.Millisecond)
	r = ask(t, f.addr, "", "udp", question("stale.example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, uint32(30), r.Answer[0].Header().Ttl)
	// Policy still applies to a stale answer: a blocked name never comes from it.
	r = ask(t, f.addr, "", "udp", question("tiktok.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
}

func TestUpstreamSocketsAreReused(t *testing.T) {
	var mu sync.Mutex
	ports := map[string]bool{}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		mu.Lock()
		ports[w.RemoteAddr().String()] = true
		mu.Unlock()
		return defaultAnswer(w, r)
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for i := 0; i < 50; i++ {
		r := ask(t, f.addr, "", "udp", question(fmt.Sprintf("n%d.example.org.", i), dns.TypeA, false))
		require.Len(t, r.Answer, 1)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, ports, 1, "50 sequential misses over one persistent socket")
}

func TestFastestUpstreamIsPreferred(t *testing.T) {
	slow := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		<-time.After(50 * time.Millisecond) // a distant upstream: latency, not a test wait
		return defaultAnswer(w, r)
	})
	fast := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, slow.addr, fast.addr)
	for i := 0; i < 20; i++ {
		ask(t, f.addr, "", "udp", question(fmt.Sprintf("f%d.example.org.", i), dns.TypeA, false))
	}
	// Client queries: each upstream also gets a probe (the root NS query)
	// that measures it.
	assert.LessOrEqual(t, clientQueries(slow), 2, "after measuring both, the fast one takes the traffic")
	assert.GreaterOrEqual(t, clientQueries(fast), 18)

	ordered := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\nupstream_strategy: ordered", 1)
	g := startFence(t, ordered, testFiles, slow.addr, fast.addr)
	before := clientQueries(slow)
	for i := 0; i < 5; i++ {
		ask(t, g.addr, "", "udp", question(fmt.Sprintf("o%d.example.org.", i), dns.TypeA, false))
	}
	assert.Equal(t, before+5, clientQueries(slow), "ordered: the first upstream while it is up")
}

// TestWireCacheMatchesMessagePath checks the wire-form cache hit against the
// general path (aged copy, upstreamReply), field by field.
func TestWireCacheMatchesMessagePath(t *testing.T) {
	answers := []*dns.Msg{
		answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
			"a.example.org. 300 IN CNAME b.example.org.", "b.example.org. 100 IN A 192.0.2.1", "b.example.org. 100 IN A 192.0.2.2"),
		answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError,
			"example.org. 900 IN SOA ns.example.org. h.example.org. 1 3600 600 86400 120"),
		answerWith("t.example.org.", dns.TypeTXT, dns.RcodeSuccess, `t.example.org. 60 IN TXT "hello" "world"`),
	}
	answers[0].Authoritative, answers[0].AuthenticatedData = true, true
	answers[1].Extra = []dns.RR{mustRR("ns.example.org. 300 IN A 192.0.2.53")}
	withOPT := answerWith("o.example.org.", dns.TypeA, dns.RcodeSuccess, "o.example.org. 60 IN A 192.0.2.9")
	withOPT.SetEdns0(4096, true)
	answers = append(answers, withOPT)

	c := NewCache(config.Cache{Size: 100, MinTTL: 10, MaxTTL: 200})
	start := time.Unix(1_000_000, 0)
	for _, ans := range answers {
		key := keyOf(ans)
		c.put(key, ans, start)
		e, ok := c.t.get(key)
		require.True(t, ok)
		require.NotNil(t, e.wireForm(), "every one of these has a wire form")
		for _, tc := range []struct {
			name    string
			edns    bool
			do      bool
			rd      bool
			upper   bool
			elapsed time.Duration
		}{
			{name: "plain", rd: true},
			{name: "edns do", edns: true, do: true, rd: true, elapsed: 7 * time.Second},
			{name: "no rd upper case", upper: true, elapsed: 90 * time.Second},
			{name: "edns aged out", edns: true, elapsed: 500 * time.Second},
		} {
			t.Run(ans.Question[0].Name+tc.name, func(t *testing.T) {
				name := ans.Question[0].Name
				if tc.upper {
					name = strings.ToUpper(name)
				}
				req := question(name, ans.Question[0].Qtype, tc.edns)
				req.Id = 0x1234
				req.RecursionDesired = tc.rd
				if tc.do {
					req.IsEdns0().SetDo()
				}
				now := start.Add(tc.elapsed)
				b, ok := appendCached(nil, e, req, now, 4096)
				if tc.upper {
					assert.False(t, ok, "another spelling of the name takes the general path")
					return
				}
				require.True(t, ok)
				got := new(dns.Msg)
				require.NoError(t, got.Unpack(b))
				want := upstreamReply(req, e.aged(now, 0))
				wire, err := want.Pack()
				require.NoError(t, err)
				wantMsg := new(dns.Msg)
				require.NoError(t, wantMsg.Unpack(wire))
				assert.Equal(t, wantMsg.String(), got.String())
				assert.Equal(t, wantMsg.MsgHdr, got.MsgHdr)
			})
		}
	}
	// An answer carrying upstream EDNS options keeps the general path.
	ede := answerWith("e.example.org.", dns.TypeA, dns.RcodeServerFailure)
	ede.SetEdns0(1232, false)
	ede.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: 6}}
	assert.Nil(t, makeWire(ede))
}

// TestNodataAfterCNAMEWithoutSOANotCached: an answer whose alias chain
// ends in no record of the type asked is a NODATA (RFC 2308 §2.2: "no
// relevant answers"), and without an SOA it says nothing of how long the
// type's absence holds: it is not cached (§5: negative answers without an
// SOA SHOULD NOT be), like a NODATA or NXDOMAIN without an SOA and without
// a CNAME, rather than kept for the CNAME's hour. The same answer with the
// SOA is cached for the SOA's negative TTL; a question for the CNAME
// itself, or for ANY, is answered by the CNAME and cached for its TTL.
func TestNodataAfterCNAMEWithoutSOANotCached(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		m.Answer = []dns.RR{mustRR("%s 3600 IN CNAME v4only.example.org.", q.Name)}
		if strings.Contains(q.Name, ".soa.") {
			m.Ns = []dns.RR{mustRR("example.org. 3600 IN SOA ns.example.org. h.example.org. 1 3600 600 86400 60")}
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	tests := []struct {
		name   string
		qtype  uint16
		cached bool
	}{
		{name: "alias.example.org.", qtype: dns.TypeAAAA},
		{name: "soa.example.org.", qtype: dns.TypeAAAA, cached: true},
		{name: "cname.example.org.", qtype: dns.TypeCNAME, cached: true},
		{name: "any.example.org.", qtype: dns.TypeANY, cached: true},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+network, func(t *testing.T) {
				name := network + "." + tc.name
				before := up.count.Load()
				for range 2 {
					r := ask(t, f.addr, "", network, question(name, tc.qtype, true))
					assert.Equal(t, dns.RcodeSuccess, r.Rcode)
					require.Len(t, r.Answer, 1)
					assert.Equal(t, dns.TypeCNAME, r.Answer[0].Header().Rrtype)
				}
				want := int64(2)
				if tc.cached {
					want = 1
				}
				assert.Equal(t, want, up.count.Load()-before, "upstream queries for two askings")
			})
		}
	}
}

// TestGlueTTLBoundsTheCachedAnswer: an answer is cached no longer than its
// additional records' TTL (RFC 1035 §3.2.1: the upstream said to ask again
// by then), as Unbound's message cache does. Kept for the MX's five
// minutes, its glue address would be served with TTL 0 all that time.
func TestGlueTTLBoundsTheCachedAnswer(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		q := r.Question[0]
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.%s", q.Name, q.Name)}
		m.Extra = append([]dns.RR{mustRR("mx.%s 1 IN A 192.0.2.25", q.Name)}, m.Extra...)
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			name := network + ".glue.example.org."
			before := up.count.Load()
			asked := func() int64 { return up.count.Load() - before }
			require.Eventually(t, func() bool {
				r := ask(t, f.addr, "127.0.0.4", network, question(name, dns.TypeMX, true))
				require.Len(t, r.Answer, 1)
				require.Len(t, r.Extra, 2, "the glue and the OPT")
				assert.Positive(t, r.Extra[0].Header().Ttl, "no record is served past its TTL")
				return asked() >= 2
			}, 5*time.Second, 100*time.Millisecond, "the answer expires with its glue: the upstream is asked again")
		})
	}
}

// TestLargeAnswersNotCached: an answer over maxCachedAnswer octets (4,096,
// dnsdist's maximumEntrySize) is forwarded every time and never cached,
// on the message path (over TCP, or after a truncated datagram) and the
// wire path alike, so that cache.size bounds the cache's memory: with
// 60 KB answers from a zone anyone can serve, 20,000 entries held 2.2 GB.
// An answer at the bound is cached.
func TestLargeAnswersNotCached(t *testing.T) {
	// txtOf is an answer to r of about n octets: TXT records of 255-octet
	// strings.
	txtOf := func(r *dns.Msg, n int) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		name := r.Question[0].Name
		for left := n; left > 0; left -= 256 + 12 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
				Txt: []string{strings.Repeat("x", 255)}})
		}
		return m
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		size := 60000
		if strings.HasPrefix(r.Question[0].Name, "small.") {
			size = 3500
		}
		m := txtOf(r, size)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated, m.Answer = true, nil
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name   string
		cached bool
	}{{"big.example.org.", false}, {"small.example.org.", true}} {
		for _, network := range []string{"udp", "tcp"} {
			name := network + "." + tc.name
			if tc.cached {
				name = "small." + network + ".example.org."
			}
			before := up.count.Load()
			for range 2 {
				r := ask(t, f.addr, "", network, question(name, dns.TypeTXT, true))
				require.Equal(t, dns.RcodeSuccess, r.Rcode, name)
				if network == "tcp" {
					require.NotEmpty(t, r.Answer, name)
				}
			}
			// Over UDP an upstream query is a truncated datagram and a
			// TCP try; a cached answer's second asking is a hit.
			want := int64(1)
			if network == "udp" {
				want = 2
			}
			if !tc.cached {
				want *= 2
			}
			assert.Equal(t, want, up.count.Load()-before, "%s %s: upstream queries for two askings", network, name)
		}
	}

	// At the bound, both paths: put (a message; its length compressed, as
	// it is served) and putWire (an answer that came in wire form: an
	// encrypted upstream's, or a datagram).
	c := NewCache(config.Cache{Size: 100, MaxTTL: 86400})
	now := time.Now()
	for _, size := range []int{maxCachedAnswer, maxCachedAnswer + 1, 60000} {
		m := sizedAnswer(t, fmt.Sprintf("n%d.example.org.", size), size)
		raw, err := m.Pack()
		require.NoError(t, err)
		require.Len(t, raw, size)
		cached := size <= maxCachedAnswer
		key := keyOf(m)
		e, ok := c.putWire(key, raw, now)
		require.True(t, ok)
		require.NotNil(t, e, "served from, cached or not")
		_, hit := c.t.get(key)
		assert.Equal(t, cached, hit, "putWire, %d octets", size)

		key.qtype = dns.TypeANY // another key for the same answer
		key.sum = cacheKeySum(key)
		m.Compress = false // as unpacked: put measures it compressed
		c.put(key, m, now)
		_, hit = c.t.get(key)
		assert.Equal(t, cached, hit, "put, %d octets", size)
	}
}

// sizedAnswer is a TXT answer for name that packs, compressed, to exactly
// size octets (size ≥ 600).
func sizedAnswer(t *testing.T, name string, size int) *dns.Msg {
	t.Helper()
	m := question(name, dns.TypeTXT, false)
	m.Response, m.Compress = true, true
	txt := func(n int) dns.RR {
		return &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
			Txt: []string{strings.Repeat("x", n)}}
	}
	const rrOver = 2 + 10 + 1 // a compressed owner, type to rdlength, the string's length octet
	for {
		left := size - m.Len() - rrOver
		if left <= 255 {
			m.Answer = append(m.Answer, txt(left))
			break
		}
		m.Answer = append(m.Answer, txt(min(255, left-rrOver)))
	}
	return m
}

// TestLargeAnswerSupersedesStale: an answer that has grown past
// maxCachedAnswer since it was cached is not cached itself, but it
// supersedes the answer cached before, which must not be served stale
// any more: with serve_stale and the client response timer, an upstream
// slower than the timer (a large answer comes over TCP after a truncated
// datagram) would otherwise have the old answer served stale to every
// query for the whole serve-stale window, though the upstream answers
// each refresh.
func TestLargeAnswerSupersedesStale(t *testing.T) {
	var big atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		name := r.Question[0].Name
		if !big.Load() {
			m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 1},
				Txt: []string{"old"}}}
			return m
		}
		time.Sleep(400 * time.Millisecond) // slower than the client response timer
		for range 20 {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
				Txt: []string{strings.Repeat("n", 255)}})
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncated, m.Answer = true, nil
		}
		return m
	})
	f := govFence(t, "upstream_timeout: 5s\ncache: {serve_stale: 1h, stale_answer_client_timeout: 100ms}", up.addr)
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			big.Store(false)
			q := question(network+".grown.example.org.", dns.TypeTXT, true)
			r := ask(t, f.addr, "", network, q)
			require.Len(t, r.Answer, 1)
			require.Eventually(t, func() bool {
				e, _ := f.handler.cache.Load().get(keyOf(q), time.Now())
				return e == nil
			}, 5*time.Second, 10*time.Millisecond, "the small answer expires")
			big.Store(true)

			// The first query after the growth is answered stale by its
			// timer, as RFC 8767 §5 allows; its refresh goes on.
			r = ask(t, f.addr, "", network, q)
			isStaleAnswer(t, q, r)
			require.Eventually(t, func() bool { return testutilGauge(t, f, "dnsfence_inflight_queries") == 0 },
				5*time.Second, 10*time.Millisecond, "the refresh ends")

			// The upstream answered the refresh: the old answer is
			// superseded, and the next query gets the new one.
			r = ask(t, f.addr, "", "tcp", q)
			assert.Empty(t, allEDEs(r), "not the superseded answer, stale")
			assert.Len(t, r.Answer, 20, "the answer the upstream gives now")
		})
	}
}

// TestUncacheableAnswerSupersedesStale: an upstream answer with no cache
// lifetime (a record of TTL 0, a negative answer with an SOA of TTL or
// MINIMUM 0, or one without an SOA, which RFC 2308 §5 says not to cache)
// is not cached, but it supersedes the answer cached before: once the
// upstreams fail, the old answer, which the upstream has since
// contradicted, must not be served stale (Unbound issue 860: an NXDOMAIN
// served stale for ever after the name got an A record of TTL 0; Unbound
// now evicts the cached message when a TTL 0 answer comes, PR 866).
func TestUncacheableAnswerSupersedesStale(t *testing.T) {
	soa := func(name string, ttl, minimum uint32) dns.RR {
		return mustRR("%s %d IN SOA ns.%s host.%s 1 3600 600 86400 %d", name, ttl, name, name, minimum)
	}
	rows := []struct {
		name   string
		before func(m *dns.Msg) // the answer cached, TTL 1
		after  func(m *dns.Msg) // the answer that supersedes it
	}{
		{"a TTL 0 after an NXDOMAIN", func(m *dns.Msg) {
			m.Rcode, m.Ns = dns.RcodeNameError, []dns.RR{soa(m.Question[0].Name, 1, 1)}
		}, func(m *dns.Msg) {
			m.Answer = []dns.RR{mustRR("%s 0 IN A 192.0.2.7", m.Question[0].Name)}
		}},
		{"an NXDOMAIN without SOA after an A", func(m *dns.Msg) {
			m.Answer = []dns.RR{mustRR("%s 1 IN A 192.0.2.1", m.Question[0].Name)}
		}, func(m *dns.Msg) {
			m.Rcode = dns.RcodeNameError
		}},
		{"a NODATA of MINIMUM 0 after an A", func(m *dns.Msg) {
			m.Answer = []dns.RR{mustRR("%s 1 IN A 192.0.2.1", m.Question[0].Name)}
		}, func(m *dns.Msg) {
			m.Ns = []dns.RR{soa(m.Question[0].Name, 300, 0)}
		}},
	}
	// Each row and transport asks a name of its own, whose phase the
	// upstream answers by: 0 before, 1 after, 2 failing. Every name's
	// answer is cached first, so that the second they take to expire is
	// waited for once, not once a name.
	type rowName struct {
		row   int
		phase atomic.Int32
	}
	names := map[string]*rowName{}
	nameOf := func(i int, network string) string {
		return fmt.Sprintf("%s.r%d.superseded.example.org.", network, i)
	}
	networks := []string{"udp", "tcp"}
	for i := range rows {
		for _, network := range networks {
			names[nameOf(i, network)] = &rowName{row: i}
		}
	}
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if r.IsEdns0() != nil {
			m.SetEdns0(1232, false)
		}
		n := names[strings.ToLower(r.Question[0].Name)]
		if n == nil {
			return m // the health probe
		}
		switch n.phase.Load() {
		case 0:
			rows[n.row].before(m)
		case 1:
			rows[n.row].after(m)
		default:
			m.Rcode = dns.RcodeServerFailure
		}
		return m
	})
	f := govFence(t, "cache: {serve_stale: 1h, stale_refresh_time: 0s}", up.addr)
	for i := range rows {
		for _, network := range networks {
			ask(t, f.addr, "", network, question(nameOf(i, network), dns.TypeA, true))
		}
	}
	require.Eventually(t, func() bool {
		for name := range names {
			if e, _ := f.handler.cache.Load().get(keyOf(question(name, dns.TypeA, true)), time.Now()); e != nil {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "the cached answers expire")
	for i, tc := range rows {
		for _, network := range networks {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				name := nameOf(i, network)
				q := question(name, dns.TypeA, true)
				names[name].phase.Store(1)
				r := ask(t, f.addr, "", network, q)
				require.Empty(t, allEDEs(r), "the upstream's new answer, not a stale one")

				names[name].phase.Store(2)
				r = ask(t, f.addr, "", network, q)
				assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "the superseded answer is not served stale")
				for _, e := range allEDEs(r) {
					assert.NotEqual(t, uint16(dns.ExtendedErrorCodeStaleAnswer), e.InfoCode)
					assert.NotEqual(t, uint16(dns.ExtendedErrorCodeStaleNXDOMAINAnswer), e.InfoCode)
				}
			})
		}
	}
}

// TestTruncatedAnswerNotCached: an answer with TC set is never cached, as
// a message (put) or in wire form (putWire): it may lack records, and
// its client is to ask again over TCP (RFC 2181 §9). The forwarder asks
// again over TCP itself before an answer reaches the cache; the cache
// refuses one that would come anyway.
func TestTruncatedAnswerNotCached(t *testing.T) {
	c := NewCache(config.Cache{Size: 100, MaxTTL: 86400})
	now := time.Now()
	msg := answerWith("msg.tc.example.org.", dns.TypeA, dns.RcodeSuccess, "msg.tc.example.org. 300 IN A 192.0.2.1")
	msg.Truncated = true
	c.put(keyOf(msg), msg, now)
	e, _ := c.get(keyOf(msg), now)
	assert.Nil(t, e, "message")

	wire := answerWith("wire.tc.example.org.", dns.TypeA, dns.RcodeSuccess, "wire.tc.example.org. 300 IN A 192.0.2.1")
	wire.Truncated = true
	b, err := wire.Pack()
	require.NoError(t, err)
	_, ok := c.putWire(keyOf(wire), b, now)
	require.True(t, ok)
	e, _ = c.get(keyOf(wire), now)
	assert.Nil(t, e, "wire form")
}

// TestCacheExpiredExactlyAtItsTTL: an answer is fresh until its TTL has
// passed and expired from then on, with no instant between: at its TTL
// a hit misses, and the answer may be served stale (RFC 8767 §4), so a
// failing refresh at that instant still gets the stale answer.
func TestCacheExpiredExactlyAtItsTTL(t *testing.T) {
	c := NewCache(config.Cache{Size: 100, MaxTTL: 86400, ServeStale: time.Hour})
	msg := answerWith("edge.example.org.", dns.TypeA, dns.RcodeSuccess, "edge.example.org. 60 IN A 192.0.2.9")
	key := keyOf(msg)
	now := time.Now()
	c.put(key, msg, now)
	before, at := now.Add(60*time.Second-time.Nanosecond), now.Add(60*time.Second)
	e, _ := c.get(key, before)
	assert.NotNil(t, e, "fresh just before its TTL")
	assert.Nil(t, c.stale(key, before, before, true), "not stale while fresh")
	e, _ = c.get(key, at)
	assert.Nil(t, e, "not fresh at its TTL")
	assert.NotNil(t, c.stale(key, at, at, true), "stale at its TTL")
}
