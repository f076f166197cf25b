package resolver

import (
	"net/netip"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"golang.org/x/time/rate"
)

// maxBuckets bounds the rate limiter's memory. Past it, idle clients are
// forgotten; if it is still full (a flood from many spoofed sources), new
// clients share one overflow bucket.
const maxBuckets = 1 << 18

// rateLimiter is a token bucket per client network: a /32 for IPv4, a /56
// for IPv6 (one customer's allocation, so one host cannot escape by
// rotating addresses).
type rateLimiter struct {
	mu        sync.Mutex
	rate      float64 // the settings the buckets were made with
	burst     int
	buckets   map[netip.Prefix]*bucket
	overflow  *bucket
	lastPrune time.Time
}

type bucket struct {
	lim    *rate.Limiter
	seen   time.Time
	logged time.Time
}

// limitKey is the network a client is limited as.
func limitKey(a netip.Addr) netip.Prefix {
	bits := 32
	if a.Is6() {
		bits = 56
	}
	p, _ := a.Prefix(bits)
	return p
}

// allow takes a token for client, reporting false when it is over its rate.
func (r *rateLimiter) allow(snap *Snapshot, client netip.Addr, now time.Time) bool {
	cfg := snap.Config.RateLimit
	if cfg.Rate <= 0 || snap.RateExempt(client) {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bucketFor(cfg, limitKey(client), now).lim.AllowN(now, 1)
}

// shouldLog reports whether an over-limit client may be logged now: once a
// minute at most.
func (r *rateLimiter) shouldLog(client netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[limitKey(client)]
	if b == nil {
		b = r.overflow
	}
	if b == nil || now.Sub(b.logged) < time.Minute {
		return false
	}
	b.logged = now
	return true
}

// bucketFor finds or makes the bucket of key; r.mu is held.
func (r *rateLimiter) bucketFor(cfg config.RateLimit, key netip.Prefix, now time.Time) *bucket {
	if r.buckets == nil || r.rate != cfg.Rate || r.burst != cfg.Burst {
		// New settings (or first use): start every client afresh.
		r.rate, r.burst = cfg.Rate, cfg.Burst
		r.buckets = map[netip.Prefix]*bucket{}
		r.overflow = &bucket{lim: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst)}
	}
	if b := r.buckets[key]; b != nil {
		b.seen = now
		return b
	}
	if len(r.buckets) >= maxBuckets || now.Sub(r.lastPrune) > time.Minute {
		// A bucket idle for a minute has refilled: forgetting it changes
		// nothing for its client.
		for k, b := range r.buckets {
			if now.Sub(b.seen) > time.Minute {
				delete(r.buckets, k)
			}
		}
		r.lastPrune = now
	}
	if len(r.buckets) >= maxBuckets {
		return r.overflow
	}
	b := &bucket{lim: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst), seen: now}
	r.buckets[key] = b
	return b
}
