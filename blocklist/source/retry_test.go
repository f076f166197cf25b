package source

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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
