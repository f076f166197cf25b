package resolver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRateLimiterLogsOnceAMinute: a client over its rate limit is logged
// the first time (also in the server's first minute) and then at most once
// a minute, each client network on its own; the sources outside
// allowed_clients, which share one bucket, are logged once a minute
// together. A nil limiter (rate limiting off) allows everything and logs
// nothing. The clock is synthetic: a minute cannot be waited for.
func TestRateLimiterLogsOnceAMinute(t *testing.T) {
	l := newRateLimiter(config.RateLimit{Rate: 0.001, Burst: 1})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	start := cacheEpoch.Add(time.Second) // a server up for a second
	at := func(d time.Duration) time.Time { return start.Add(d) }

	// c is another client network of a's shard, which holds the two
	// buckets side by side and has one overflow bucket.
	_, inAsShard := shardWalk(l, a)
	c := inAsShard()
	for _, x := range []netip.Addr{a, b, c} {
		require.True(t, l.allow(x, start), "%s: the burst", x)
		require.False(t, l.allow(x, start), "%s: over the limit", x)
	}
	assert.True(t, l.shouldLog(a, start), "the first time over")
	assert.False(t, l.shouldLog(a, at(time.Second)), "not again within the minute")
	assert.True(t, l.shouldLog(b, at(time.Second)), "another client network is logged on its own")
	assert.True(t, l.shouldLog(c, at(time.Second)), "also one of the same shard")
	assert.False(t, l.shouldLog(a, at(59*time.Second)))
	assert.True(t, l.shouldLog(a, at(time.Minute)), "a minute after the last line")
	assert.False(t, l.shouldLog(a, at(61*time.Second)))
	assert.True(t, l.shouldLog(a, at(2*time.Minute+time.Second)))
	assert.False(t, l.shouldLog(b, at(30*time.Second)))

	require.True(t, l.allowUnallowed(start), "the shared burst")
	require.False(t, l.allowUnallowed(start))
	assert.True(t, l.shouldLogUnallowed(start))
	assert.False(t, l.shouldLogUnallowed(at(time.Second)))
	assert.True(t, l.shouldLogUnallowed(at(61*time.Second)))

	var off *rateLimiter
	assert.True(t, off.allow(a, start))
	assert.True(t, off.allowUnallowed(start))
	assert.False(t, off.shouldLog(a, start))
	assert.False(t, off.shouldLogUnallowed(start))
}

// TestRateLimiterSweepsAShardOnceAMinute: a shard that is not full is
// swept for idle buckets when a new client network comes and the last
// sweep is more than a minute old, not at every new client (which cost a
// sweep of up to 4,096 buckets under the shard's lock each); a sweep
// forgets the buckets idle for more than a minute (and refilled), and
// keeps the others. Forgetting a refilled bucket changes nothing a
// client sees, so the test counts the shard's buckets.
func TestRateLimiterSweepsAShardOnceAMinute(t *testing.T) {
	l := newRateLimiter(config.RateLimit{Rate: 1, Burst: 1})
	s, nextInShard := shardWalk(l, netip.MustParseAddr("192.0.2.1"))
	t0 := cacheEpoch.Add(time.Hour)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	steps := []struct {
		at   time.Duration
		held int
		why  string
	}{
		{0, 1, "the first client; the shard swept (never before)"},
		{50 * time.Second, 2, "no sweep within the minute"},
		{time.Minute, 3, "a minute since the sweep is not more than a minute"},
		{62 * time.Second, 3, "swept: the first, idle 62 s, forgotten"},
		{63 * time.Second, 4, "no sweep a second after one"},
		{121 * time.Second, 5, "59 s after the sweep: buckets idle 71 s and 61 s kept until the next"},
		{123 * time.Second, 3, "swept: idle 73, 63 and 61 s forgotten, idle 60 s and 2 s kept"},
	}
	for _, st := range steps {
		require.True(t, l.allow(nextInShard(), at(st.at)), "at %v", st.at)
		assert.Equal(t, st.held, len(s.buckets), "at %v: %s", st.at, st.why)
	}
}

// TestRateLimiterFullShard: a shard holding its share of maxBuckets puts
// every new client network in its overflow bucket, shared, and logged
// once a minute for all of them (a flood of spoofed sources is one line,
// and takes no bucket of its own); it is swept once a second rather than
// once a minute, so that buckets idle for a minute give their room back
// to new clients within a second of being forgettable.
func TestRateLimiterFullShard(t *testing.T) {
	const most = maxBuckets / limitShards
	l := newRateLimiter(config.RateLimit{Rate: 1, Burst: 1})
	s, nextInShard := shardWalk(l, netip.MustParseAddr("10.0.0.0"))
	t0 := cacheEpoch.Add(time.Hour)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	first := nextInShard()
	require.True(t, l.allow(first, t0)) // the shard's first sweep
	for range most - 1 {
		require.True(t, l.allow(nextInShard(), at(50*time.Second)))
	}
	require.True(t, l.allow(first, at(50*time.Second)), "refilled")
	require.Equal(t, most, len(s.buckets))

	// Full: a sweep at 61 s (a minute since the first) forgets nothing
	// idle 11 s, and new clients share the overflow bucket.
	x, y := nextInShard(), nextInShard()
	assert.True(t, l.allow(x, at(61*time.Second)), "the overflow bucket's burst")
	assert.False(t, l.allow(y, at(61*time.Second)), "shared with the next new client")
	assert.Equal(t, most, len(s.buckets), "no bucket past the shard's share")
	assert.True(t, l.shouldLog(x, at(61*time.Second)))
	assert.False(t, l.shouldLog(y, at(62*time.Second)), "one line a minute for the overflow's clients together")
	assert.Equal(t, most, len(s.buckets), "logging takes no bucket either")

	// 112 s: 51 s since the last sweep, the full shard is swept again;
	// the buckets of 50 s, idle 62 s, are forgotten, and a new client has
	// a bucket of its own.
	z := nextInShard()
	assert.True(t, l.allow(z, at(112*time.Second)))
	assert.Equal(t, 1, len(s.buckets), "the idle buckets forgotten, the new client's kept")
}

// shardWalk returns the shard of l that holds from's client network, and
// a function giving, call after call, the next address after from (in
// address order) whose client network that shard holds too.
func shardWalk(l *rateLimiter, from netip.Addr) (*limitShard, func() netip.Addr) {
	shard := func(x netip.Addr) *limitShard { return l.shardOf(networkKeyOf(listen.ClientNetwork(x))) }
	s, next := shard(from), from
	return s, func() netip.Addr {
		for {
			next = next.Next()
			if shard(next) == s {
				return next
			}
		}
	}
}
