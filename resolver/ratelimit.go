package resolver

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"golang.org/x/time/rate"
)

// maxBuckets bounds the rate limiter's memory. Past it, idle clients are
// forgotten; if it is still full (a flood from many spoofed sources), new
// clients share one overflow bucket (one a shard).
const maxBuckets = 1 << 18

// limitShards is how many parts the rate limiter's buckets are split into,
// each with its own lock, so that queries of different clients rarely wait
// on each other.
const (
	limitShardBits = 6
	limitShards    = 1 << limitShardBits
)

// rateLimiter is a token bucket per client network: a /32 for IPv4, a /56
// for IPv6 (one customer's allocation, so one host cannot escape by
// rotating addresses). A rateLimiter is made for one setting of rate_limit
// and never changes it: Handler.Store makes a new one when a reload changes
// the rate or the burst (every client starts afresh then) and keeps the
// running one otherwise, so that no query compares settings.
type rateLimiter struct {
	rate   float64 // queries a second; above 0
	burst  int     // queries
	shards [limitShards]limitShard
	// seed keys the hash that picks a client network's shard, so that
	// sources cannot be chosen to fall in one shard (filling its buckets
	// with a 64th of the addresses, and sending its new clients to the
	// overflow bucket).
	seed maphash.Seed
	// unallowed is the one bucket of every source outside
	// allowed_clients (allowUnallowed).
	unallowed unallowedBucket
}

// unallowedBucket is the bucket that every source outside allowed_clients
// shares: such a source is refused, and as often as not spoofed, so it
// takes no bucket of its own (a flood of them would fill the limiter and
// send every allowed client new to it to the overflow bucket), and the
// REFUSED answers sent to all of them together are held to one client's
// rate (dnsfence reflects no more towards many spoofed victims than
// towards one).
type unallowedBucket struct {
	mu sync.Mutex // guards logged (lim is safe on its own)
	bucket
}

// limitShard holds the buckets of the client networks that hash to it.
type limitShard struct {
	mu        sync.Mutex
	buckets   map[netip.Prefix]*bucket
	overflow  *bucket
	lastPrune time.Time
	_         [64]byte // keeps neighbouring shards' locks off one cache line
}

type bucket struct {
	lim    *rate.Limiter
	seen   time.Time
	logged time.Time
}

// newRateLimiter returns the limiter of cfg, or nil when cfg turns rate
// limiting off (a rate of 0).
func newRateLimiter(cfg config.RateLimit) *rateLimiter {
	if cfg.Rate <= 0 {
		return nil
	}
	r := &rateLimiter{rate: cfg.Rate, burst: cfg.Burst, seed: maphash.MakeSeed()}
	for i := range r.shards {
		s := &r.shards[i]
		s.buckets = map[netip.Prefix]*bucket{}
		s.overflow = &bucket{lim: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst)}
	}
	r.unallowed.lim = rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst)
	return r
}

// reconfigured is the limiter for cfg: r itself, buckets and all, when cfg
// has r's rate and burst, else a new one. r may be nil (off).
func (r *rateLimiter) reconfigured(cfg config.RateLimit) *rateLimiter {
	if r == nil && cfg.Rate <= 0 || r != nil && r.rate == cfg.Rate && r.burst == cfg.Burst {
		return r
	}
	return newRateLimiter(cfg)
}

// shard is the part of the limiter that holds key's bucket.
func (r *rateLimiter) shard(key netip.Prefix) *limitShard {
	a := key.Addr().As16()
	return &r.shards[maphash.Bytes(r.seed, a[:])>>(64-limitShardBits)]
}

// allow takes a token for client, reporting false when it is over its
// rate. A nil limiter (rate limiting off) allows everything.
func (r *rateLimiter) allow(client netip.Addr, now time.Time) bool {
	if r == nil {
		return true
	}
	key := listen.ClientNetwork(client)
	s := r.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bucketFor(r, key, now).lim.AllowN(now, 1)
}

// allowUnallowed takes a token for a source outside allowed_clients from
// the bucket all of them share, reporting false when they are over its
// rate. A nil limiter allows everything.
func (r *rateLimiter) allowUnallowed(now time.Time) bool {
	return r == nil || r.unallowed.lim.AllowN(now, 1)
}

// shouldLogUnallowed reports whether the sources outside allowed_clients
// being over their shared rate may be logged now: once a minute at most.
func (r *rateLimiter) shouldLogUnallowed(now time.Time) bool {
	if r == nil {
		return false
	}
	u := &r.unallowed
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.mayLog(now)
}

// shouldLog reports whether an over-limit client may be logged now: once a
// minute at most.
func (r *rateLimiter) shouldLog(client netip.Addr, now time.Time) bool {
	if r == nil {
		return false
	}
	key := listen.ClientNetwork(client)
	s := r.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		b = s.overflow
	}
	return b.mayLog(now)
}

// mayLog reports whether b's client, over its limit, may be logged now:
// once a minute at most. The caller holds the lock that guards b.
func (b *bucket) mayLog(now time.Time) bool {
	if now.Sub(b.logged) < time.Minute {
		return false
	}
	b.logged = now
	return true
}

// bucketFor finds or makes the bucket of key; s.mu is held.
func (s *limitShard) bucketFor(r *rateLimiter, key netip.Prefix, now time.Time) *bucket {
	if b := s.buckets[key]; b != nil {
		b.seen = now
		return b
	}
	const most = maxBuckets / limitShards
	// A full shard is swept for idle buckets once a second at most, any
	// other once a minute: sweeping a full shard (4,096 buckets, the best
	// part of a millisecond under the shard's lock) for every new client
	// let a flood of spoofed sources, each a new client, make each of its
	// queries cost that once the shards were full.
	if now.Sub(s.lastPrune) > time.Minute || len(s.buckets) >= most && now.Sub(s.lastPrune) > time.Second {
		// A bucket idle for a minute has refilled: forgetting it changes
		// nothing for its client.
		for k, b := range s.buckets {
			if now.Sub(b.seen) > time.Minute {
				delete(s.buckets, k)
			}
		}
		s.lastPrune = now
	}
	if len(s.buckets) >= most {
		return s.overflow
	}
	b := &bucket{lim: rate.NewLimiter(rate.Limit(r.rate), r.burst), seen: now}
	s.buckets[key] = b
	return b
}
