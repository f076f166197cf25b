package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSharedDialFailureCountsOnce: queries that wait together for one
// connection attempt to an encrypted upstream share its failure, and the
// failure counts once against the upstream's health, as one DoQ close
// does (TestDoQCloseCountsOnce): one failed handshake under six queries is
// one failure of 32, where it was six. Each query still fails over to the
// next upstream and is counted in dnsfence_upstream_errors_total.
func TestSharedDialFailureCountsOnce(t *testing.T) {
	const queries = 6
	const stall = 300 * time.Millisecond // the handshake's, so that every query waits for it
	for _, scheme := range []string{"tls", "https", "quic"} {
		t.Run(scheme, func(t *testing.T) {
			var attempts atomic.Int32
			enc := stallingUpstream(t, scheme, stall, &attempts)
			f, plain, reg := failoverForwarder(t, newPKI(t), enc)

			var wg sync.WaitGroup
			for i := range queries {
				wg.Go(func() {
					_, from, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", i), false), false)
					assert.NoError(t, err)
					assert.Equal(t, plain, from, "failed over (or hedged) to the next upstream")
				})
			}
			wg.Wait()
			require.Eventually(t, func() bool { return f.refs.Load() == 0 }, 10*time.Second, 5*time.Millisecond)
			require.Equal(t, int32(1), attempts.Load(), "the queries waited for one attempt")

			w := f.upstreams[0].health.w.Load()
			fails, n := bits.OnesCount32(uint32(w)), int(w>>32)
			assert.Equal(t, 1, fails, "one failed attempt, one failure")
			assert.Equal(t, 1, n, "the window took the attempt once")
			var failed float64
			for _, v := range upstreamErrors(t, reg, enc) {
				failed += v
			}
			assert.Equal(t, float64(queries), failed, "each query's failed exchange is still counted")
		})
	}
}

// stallingUpstream starts an upstream of scheme (tls, https or quic) whose
// every connection attempt fails after stall, counted in attempts, and
// returns its address as configured.
func stallingUpstream(t *testing.T, scheme string, stall time.Duration, attempts *atomic.Int32) string {
	t.Helper()
	var addr string
	if scheme == "quic" {
		// A handshake that fails after a while: no certificate.
		ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{
			NextProtos: []string{"doq"},
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				attempts.Add(1)
				time.Sleep(stall)
				return nil, errors.New("no certificate here")
			},
		}, &quic.Config{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		addr = ln.Addr().String()
	} else {
		// A TLS server that closes every connection unanswered.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				attempts.Add(1)
				go func() {
					time.Sleep(stall)
					_ = c.Close()
				}()
			}
		}()
		addr = ln.Addr().String()
	}
	if scheme == "https" {
		return fmt.Sprintf("https://%s/dns-query#%s", addr, testServerName)
	}
	return fmt.Sprintf("%s://%s#%s", scheme, addr, testServerName)
}

// TestSharedFailureCountedByAQuery: a failed connection attempt that a
// readiness probe (Probe, for /readyz, which counts no failure of its own)
// and a query waited for together counts once against the upstream, by
// the query, whichever of them was given the error first: the probe does
// not use up the one count and leave the query's failure already counted,
// the failure counted by no one (an upstream whose first exchange fails
// is down at once; here it stayed up). The probe makes the attempt and
// the query waits for it: over https the probe's request is the one
// given the attempt's error as it is, the query's is given it shared;
// over tls and quic both are woken when it fails, the probe mostly first.
// Several rounds, each on a Forwarder of its own.
func TestSharedFailureCountedByAQuery(t *testing.T) {
	const rounds = 8
	const stall = 200 * time.Millisecond
	pki := newPKI(t)
	for _, scheme := range []string{"tls", "https", "quic"} {
		t.Run(scheme, func(t *testing.T) {
			for round := range rounds {
				var attempts atomic.Int32
				enc := stallingUpstream(t, scheme, stall, &attempts)
				opts := pki.testOptions(t)
				f, err := New([]string{enc}, opts)
				require.NoError(t, err)
				t.Cleanup(f.Close)
				f.started.Store(true)    // no exploring probes: only the readiness probe and the query
				f.probeEvery = time.Hour // nor the probes of a down upstream
				u := f.upstreams[0]

				var wg sync.WaitGroup
				probe := func() {
					wg.Go(func() {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						defer cancel()
						assert.Error(t, f.Probe(ctx))
					})
				}
				query := func() {
					wg.Go(func() {
						_, _, err := f.Forward(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", round), false), false)
						assert.Error(t, err)
					})
				}
				probe()
				require.Eventually(t, func() bool { return attempts.Load() == 1 }, 5*time.Second, time.Millisecond,
					"the attempt is under way")
				query() // waits for it: stall is long
				wg.Wait()
				require.Eventually(t, func() bool { return f.refs.Load() == 0 }, 5*time.Second, 5*time.Millisecond)
				require.Equal(t, int32(1), attempts.Load(), "round %d: the probe and the query waited for one attempt", round)

				w := u.health.w.Load()
				fails, n := bits.OnesCount32(uint32(w)), int(w>>32)
				assert.Equal(t, 1, fails, "round %d: the query counts the failed attempt", round)
				assert.Equal(t, 1, n, "round %d: the window took it once", round)
				assert.True(t, u.down.Load(), "round %d: its first exchange failed: down", round)
				if t.Failed() {
					return
				}
			}
		})
	}
}
