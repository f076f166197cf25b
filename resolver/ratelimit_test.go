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
	shard := func(x netip.Addr) *limitShard { return l.shardOf(networkKeyOf(listen.ClientNetwork(x))) }
	c := a.Next()
	for shard(c) != shard(a) {
		c = c.Next()
	}
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
