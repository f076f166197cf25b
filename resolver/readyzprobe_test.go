package resolver

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestReadyzProbesOnceForConcurrentRequests: /readyz requests that find no
// recent upstream answer share one probe of the upstreams. Before the fix
// each request sent its own probe to every upstream, so whoever reached the
// http address (every replica's load balancer, a scraper, anyone on a
// network it was opened to) made dnsfence send the upstreams one query per
// request per upstream while they were failing, the moment they were
// least able to take it.
func TestReadyzProbesOnceForConcurrentRequests(t *testing.T) {
	// SERVFAIL, after a moment: no usable answer, so every request probes.
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		time.Sleep(100 * time.Millisecond)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)

	const requests = 40
	var wg sync.WaitGroup
	start := make(chan struct{})
	codes := make(chan int, requests)
	for range requests {
		wg.Go(func() {
			<-start
			code, _ := get(t, srv.URL+"/readyz")
			codes <- code
		})
	}
	close(start)
	wg.Wait()
	close(codes)
	for code := range codes {
		assert.Equal(t, http.StatusServiceUnavailable, code)
	}
	assert.LessOrEqual(t, up.count.Load(), int64(4), "%d /readyz requests at once", requests)
}

// TestReadyzWithoutUpstreamsConnected: a handler serving a snapshot no
// ConnectUpstreams connected (a library caller that skipped it) is not
// ready, and says why, rather than failing the request.
func TestReadyzWithoutUpstreamsConnected(t *testing.T) {
	cfg, err := config.Load(writeConfig(t, testConfig, testFiles, closedPort(t)))
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	h := NewHandler(zap.NewNop(), snap, NewMetrics(reg))
	srv := httptest.NewServer(HTTPHandler(h, reg, time.Minute))
	t.Cleanup(srv.Close)
	code, body := get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "not ready: no upstreams connected")
}
