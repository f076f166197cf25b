package resolver

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
)

// maxBuckets bounds the rate limiter's memory. Past it, idle clients are
// forgotten; if it is still full (a flood from many spoofed sources), new
// clients share one overflow bucket (one a shard). A bucket is a value of
// its shard's map, 40 octets with its key and 95 with the map's room: a
// full limiter holds 25 MB, where a *rate.Limiter and a *bucket of times
// for each, keyed by netip.Prefix, held 240 octets a bucket, 63 MB
// (Unbound's ratelimit-size and ip-ratelimit-size are 4 MB).
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
	// perNano is rate in tokens a nanosecond.
	perNano float64
}

// unallowedBucket is the bucket that every source outside allowed_clients
// shares: such a source is refused, and as often as not spoofed, so it
// takes no bucket of its own (a flood of them would fill the limiter and
// send every allowed client new to it to the overflow bucket), and the
// REFUSED answers sent to all of them together are held to one client's
// rate (dnsfence reflects no more towards many spoofed victims than
// towards one).
type unallowedBucket struct {
	mu sync.Mutex // guards bucket
	bucket
}

// limitShard holds the buckets of the client networks that hash to it.
type limitShard struct {
	mu        sync.Mutex
	buckets   map[networkKey]bucket
	overflow  bucket
	lastPrune time.Time
	_         [64]byte // keeps neighbouring shards' locks off one cache line
}

// networkKey is a client network (listen.ClientNetwork: a /32 or a /56)
// as the 16 octets of its address: an IPv4 one IPv4-mapped, which no
// IPv6 /56 is, since its last nine octets are zero.
type networkKey [16]byte

// bucket is a token bucket, as golang.org/x/time/rate's Limiter takes
// tokens (a full bucket to start with, refilled at the rate up to the
// burst), kept as a value of its shard's map and changed under its lock.
type bucket struct {
	tokens float64 // at last
	// last and logged are times in nanoseconds since cacheEpoch, a
	// monotonic reading (sinceEpoch), as x/time/rate compared time.Time
	// values by their monotonic readings: a wall clock stepped back an
	// hour (NTP at boot, a VM resumed) would otherwise refill no bucket
	// for that hour, and rate-limit every client at once.
	last   int64 // the last take: when the client was last seen
	logged int64 // the last log line about it; 0 for none
}

// take refills b for the time since its last take and takes a token,
// reporting false when there was none.
func (b *bucket) take(r *rateLimiter, now int64) bool {
	if elapsed := now - b.last; elapsed > 0 {
		b.tokens = min(b.tokens+float64(elapsed)*r.perNano, float64(r.burst))
	}
	b.last = max(b.last, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refilled reports whether b holds its burst again at now.
func (b *bucket) refilled(r *rateLimiter, now int64) bool {
	return b.tokens+float64(now-b.last)*r.perNano >= float64(r.burst)
}

// newRateLimiter returns the limiter of cfg, or nil when cfg turns rate
// limiting off (a rate of 0).
func newRateLimiter(cfg config.RateLimit) *rateLimiter {
	if cfg.Rate <= 0 {
		return nil
	}
	r := &rateLimiter{rate: cfg.Rate, burst: cfg.Burst, seed: maphash.MakeSeed(), perNano: cfg.Rate / 1e9}
	for i := range r.shards {
		s := &r.shards[i]
		s.buckets = map[networkKey]bucket{}
		s.overflow = r.full()
	}
	r.unallowed.bucket = r.full()
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

// full is a bucket of burst tokens, as a client's starts.
func (r *rateLimiter) full() bucket { return bucket{tokens: float64(r.burst)} }

func (r *rateLimiter) shardOf(k networkKey) *limitShard {
	return &r.shards[maphash.Bytes(r.seed, k[:])>>(64-limitShardBits)]
}

// networkKeyOf is the key of a client network.
func networkKeyOf(network netip.Prefix) networkKey { return network.Addr().As16() }

// allow takes a token for client, reporting false when it is over its
// rate. A nil limiter (rate limiting off) allows everything.
func (r *rateLimiter) allow(client netip.Addr, now time.Time) bool {
	if r == nil {
		return true
	}
	key := networkKeyOf(listen.ClientNetwork(client))
	s := r.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.take(r, key, now)
}

// allowUnallowed takes a token for a source outside allowed_clients from
// the bucket all of them share, reporting false when they are over its
// rate. A nil limiter allows everything.
func (r *rateLimiter) allowUnallowed(now time.Time) bool {
	if r == nil {
		return true
	}
	u := &r.unallowed
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.take(r, sinceEpoch(now))
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
	key := networkKeyOf(listen.ClientNetwork(client))
	s := r.shardOf(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[key]
	if !ok {
		return s.overflow.mayLog(now)
	}
	logs := b.mayLog(now)
	s.buckets[key] = b
	return logs
}

// mayLog reports whether b's client, over its limit, may be logged now:
// once a minute at most. The caller holds the lock that guards b.
func (b *bucket) mayLog(now time.Time) bool {
	t := sinceEpoch(now)
	if b.logged != 0 && t-b.logged < int64(time.Minute) {
		return false
	}
	b.logged = t
	return true
}

// take takes a token from the bucket of key, made full when it has none
// (or from the overflow bucket); s.mu is held.
func (s *limitShard) take(r *rateLimiter, key networkKey, now time.Time) bool {
	t := sinceEpoch(now)
	if b, ok := s.buckets[key]; ok {
		allowed := b.take(r, t)
		s.buckets[key] = b
		return allowed
	}
	const most = maxBuckets / limitShards
	// A full shard is swept for idle buckets once a second at most, any
	// other once a minute: sweeping a full shard (4,096 buckets, the best
	// part of a millisecond under the shard's lock) for every new client
	// let a flood of spoofed sources, each a new client, make each of its
	// queries cost that once the shards were full.
	if now.Sub(s.lastPrune) > time.Minute || len(s.buckets) >= most && now.Sub(s.lastPrune) > time.Second {
		// A bucket idle for a minute and refilled to its burst changes
		// nothing for its client when forgotten. A minute alone refills
		// no bucket whose burst takes longer at its rate (a burst of 120
		// at 1 a second): forgetting it drained gave its client a full
		// burst anew every minute.
		for k, b := range s.buckets {
			if t-b.last > int64(time.Minute) && b.refilled(r, t) {
				delete(s.buckets, k)
			}
		}
		s.lastPrune = now
	}
	if len(s.buckets) >= most {
		return s.overflow.take(r, t)
	}
	b := r.full()
	b.last = t
	allowed := b.take(r, t)
	s.buckets[key] = b
	return allowed
}
