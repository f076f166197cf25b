package source

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRetryAfter: after failures in a row a source waits a second, then
// twice as long each time, at most sources.refresh; while it has no copy,
// at most NoCopyRetry too. Before, a URL or zone with no copy (a first
// start with its server down) backed off to the whole refresh: with the
// default hour, after 34 minutes of failures the next try came 34 minutes
// later, and then every hour, its names unblocked (or, with
// servfail_until_ready, its policies' clients answered SERVFAIL) all the
// while a server back up waited for it.
func TestRetryAfter(t *testing.T) {
	waits := func(refresh time.Duration, hasCopy bool, n int) []time.Duration {
		backoff := time.Second
		var out []time.Duration
		for range n {
			out = append(out, retryAfter(&backoff, refresh, hasCopy))
		}
		return out
	}
	s := time.Second
	assert.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, time.Minute, time.Minute, time.Minute},
		waits(time.Hour, false, 9), "no copy: a minute at most")
	assert.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 64 * s, 128 * s, 256 * s, 512 * s, 1024 * s, 2048 * s, time.Hour, time.Hour},
		waits(time.Hour, true, 14), "a copy served: up to the refresh")
	assert.Equal(t, []time.Duration{s, 2 * s, 4 * s, 5 * s, 5 * s}, waits(5*s, false, 5), "a refresh under a minute caps it first")
	assert.Equal(t, []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}, waits(50*time.Millisecond, true, 2))
}

// maintenanceServer serves the list "tiktok.com\n" over HTTP on
// loopback, but answers the requests fails picks (numbered from 1) 503,
// with retryAfter as their Retry-After ("": none); requests counts every
// request.
func maintenanceServer(t *testing.T, fails func(n int64) bool, retryAfter string) (srv *httptest.Server, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if fails(requests.Add(1)) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "tiktok.com\n")
	}))
	t.Cleanup(srv.Close)
	return srv, requests
}

// TestNoCopyRetried: a URL and a zone source without a copy, whose server
// or primary refuses, try again at the cap (lowered here to 20 ms) with
// an hour's refresh, and deliver the first copy soon after it is served.
// Passing hasCopy wrong to retryAfter would leave them backing off from a
// second: the fifth try 15 s after the first.
func TestNoCopyRetried(t *testing.T) {
	noCopyRetry = 20 * time.Millisecond
	t.Cleanup(func() { noCopyRetry = NoCopyRetry })
	const tries = 5
	opt := Options{Refresh: time.Hour, CacheDir: t.TempDir(), MaxBytes: 1 << 20, Timeout: 5 * time.Second}

	// A Retry-After of an hour is held to the cap too (honourRetryAfter):
	// taken whole, the list waited the hour with no copy.
	for _, retryAfter := range []string{"", "3600"} {
		t.Run("URL/Retry-After_"+retryAfter, func(t *testing.T) {
			srv, requests := maintenanceServer(t, func(n int64) bool { return n < tries }, retryAfter)
			src, err := NewURL(srv.URL+"/l.txt", opt)
			require.NoError(t, err)
			rec := run(t, src)
			rec.waitCount(t, 1)
			assert.GreaterOrEqual(t, requests.Load(), int64(tries))
		})
	}

	t.Run("zone", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "tiktok.com"), nil)
		p.update(func(p *fakePrimary) { p.axfrRcode = dns.RcodeRefused })
		_, rec := startZone(t, p, opt)
		axfrs := func() int {
			n := 0
			for _, qt := range p.asked() {
				if qt == dns.TypeAXFR {
					n++
				}
			}
			return n
		}
		require.Eventually(t, func() bool { return axfrs() >= tries }, waitFor, tick, "%d transfers refused", tries)
		p.update(func(p *fakePrimary) { p.axfrRcode = dns.RcodeSuccess })
		rec.waitCount(t, 1)
	})
}

// TestJitter: each wait of a source is less a random part of it, a tenth
// at most, so that a fleet started together does not ask a server in
// step; it is never longer, so the bounds above hold.
func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{time.Second, time.Minute, time.Hour, 50 * time.Millisecond} {
		seen := map[time.Duration]bool{}
		least := d
		for range 1000 {
			j := jitter(d)
			require.LessOrEqual(t, j, d)
			require.GreaterOrEqual(t, j, d-d/10, "%v", d)
			seen[j] = true
			least = min(least, j)
		}
		assert.Greater(t, len(seen), 500, "%v: drawn at random", d)
		// All of the tenth is drawn from: a thousand draws below an
		// eleventh would come once in 10^41 runs.
		assert.Less(t, least, d-d/11, "%v: up to a tenth taken, not less", d)
	}
	assert.Equal(t, time.Duration(9), jitter(9), "too short to take from")
	assert.Zero(t, jitter(0))
}

// TestSourceWaitsAreJittered: a URL's and a zone's waits, after a success
// and after a failure, each go through jitter (TestJitter: what it does).
func TestSourceWaitsAreJittered(t *testing.T) {
	var mu sync.Mutex
	var asked []time.Duration
	jitterWait = func(d time.Duration) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, d)
		return 10 * time.Millisecond // the next try soon
	}
	t.Cleanup(func() { jitterWait = jitter }) // after the sources stopped: cleanups run last first
	jittered := func(want ...time.Duration) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, d := range want {
				if !slices.Contains(asked, d) {
					return false
				}
			}
			return true
		}
	}
	opt := Options{Refresh: time.Hour, CacheDir: t.TempDir(), MaxBytes: 1 << 20, Timeout: 5 * time.Second}

	t.Run("URL", func(t *testing.T) {
		// The first and third requests fail: the backoff starts again
		// from a second after the success between them.
		srv, _ := maintenanceServer(t, func(n int64) bool { return n == 1 || n == 3 }, "")
		src, err := NewURL(srv.URL+"/l.txt", opt)
		require.NoError(t, err)
		rec := run(t, src)
		rec.waitCount(t, 1)
		require.Eventually(t, jittered(time.Second, time.Hour), waitFor, tick, "the backoff's second and the refresh")
		backoffs := func() []time.Duration {
			mu.Lock()
			defer mu.Unlock()
			var out []time.Duration
			for _, d := range asked {
				if d != time.Hour {
					out = append(out, d)
				}
			}
			return out
		}
		require.Eventually(t, func() bool { return len(backoffs()) >= 2 }, waitFor, tick)
		assert.Equal(t, []time.Duration{time.Second, time.Second}, backoffs()[:2], "the waits after a failure")
	})

	mu.Lock()
	asked = nil
	mu.Unlock()
	t.Run("zone", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "tiktok.com"), nil)
		p.update(func(p *fakePrimary) { p.axfrRcode = dns.RcodeRefused })
		_, rec := startZone(t, p, opt)
		require.Eventually(t, jittered(time.Second), waitFor, tick, "the backoff's second")
		p.update(func(p *fakePrimary) { p.axfrRcode = dns.RcodeSuccess })
		rec.waitCount(t, 1)
		soa := testSOA(testZone, 1)
		require.Eventually(t, jittered(soaTimer(soa.Refresh, opt.Refresh)), waitFor, tick, "the SOA refresh timer after the transfer")
	})
}
