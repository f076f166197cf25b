package resolver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestSnapshotGaugesNeverSeenHalfMade: a scrape during a reload sees the
// lists' and policies' series of the snapshot before or of the one after,
// whole: never emptied and half filled again, as GaugeVec.Reset and one
// Set or Inc a series left them between two calls. dnsfence_policy_ranges
// summed over the blocking policies (DnsfenceNoBlockingRanges' expression)
// must not dip below the ranges both snapshots have, nor a list's series,
// or a range file's skipped_lines, vanish.
func TestSnapshotGaugesNeverSeenHalfMade(t *testing.T) {
	files := map[string]string{
		"tiktok.txt": "tiktok.com\nbytedance.com\n",
		"ranges.txt": "10.1.0.0/16\n10.2.0.0/16\n10.3.0.0/16\n10.4.0.0/16\n",
	}
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
allowed_clients: ["10.0.0.0/8"]
policies:
  - name: gov
    clients: ["10.9.0.0/16", "10.10.0.0/16"]
    client_files: ["ranges.txt"]
    block: ["tiktok.txt"]
  - name: press
    clients: ["10.1.2.0/24"]
`, files)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.snapshotLoaded(snap)

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			m.listsLoaded(snap)
		}
	})
	var torn []string
	for range 2000 {
		families, err := reg.Gather()
		require.NoError(t, err)
		ranges, lists, skipped := 0.0, 0, 0
		for _, mf := range families {
			switch mf.GetName() {
			case "dnsfence_policy_ranges":
				for _, s := range mf.GetMetric() {
					for _, l := range s.GetLabel() {
						if l.GetName() == "blocking" && l.GetValue() == "true" {
							ranges += s.GetGauge().GetValue()
						}
					}
				}
			case "dnsfence_list_entries":
				lists = len(mf.GetMetric())
			case "dnsfence_skipped_lines":
				skipped = len(mf.GetMetric())
			}
		}
		if ranges != 6 || lists != 1 || skipped != 2 {
			torn = append(torn, fmt.Sprintf("blocking ranges %v, list series %d, skipped_lines series %d", ranges, lists, skipped))
		}
	}
	stop.Store(true)
	wg.Wait()
	assert.Empty(t, torn, "want 6 blocking ranges, 1 list, 2 files in every scrape")
}

// TestAlertedSeriesExistAtZero: the series an alert watches for a rise
// exist at zero from the start, before the first reload or rate-limited
// query: dnsfence_reloads_total by each result (a held or failed reload
// alerts on increase()) and dnsfence_ratelimited_total by each transport.
// A series that appears at its first count has no rise for increase() to
// see, so the first held reload would not alert.
func TestAlertedSeriesExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	for _, r := range []string{reloadSucceeded, reloadFailed, reloadHeld} {
		v, ok := metricValue(t, reg, "dnsfence_reloads_total", "result", r)
		assert.True(t, ok, "dnsfence_reloads_total{result=%q}", r)
		assert.Zero(t, v)
	}
	for _, tr := range transports {
		v, ok := metricValue(t, reg, "dnsfence_ratelimited_total", "transport", tr)
		assert.True(t, ok, "dnsfence_ratelimited_total{transport=%q}", tr)
		assert.Zero(t, v)
	}
}

// TestSeriesByTransportAtStart: a fresh Metrics has the per-transport
// series README lists and no others: dnsfence_queries_total's bad_request
// for HTTPS and QUIC only (no other transport answers a request without
// DNS), and dnsfence_connections_open for each transport with
// connections, at zero, so that a dashboard shows the listeners idle
// rather than absent.
func TestSeriesByTransportAtStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	for _, tr := range transports {
		_, ok := metricValue(t, reg, "dnsfence_queries_total", "transport", tr, "result", listen.ResultBadRequest)
		assert.Equal(t, tr == listen.HTTPS || tr == listen.QUIC, ok, "bad_request series of %s", tr)
		v, ok := metricValue(t, reg, "dnsfence_connections_open", "transport", tr)
		assert.Equal(t, tr != listen.UDP, ok, "connections_open series of %s", tr)
		assert.Zero(t, v)
	}
}

// TestScrapeBeforeTheFirstSnapshot: serve answers /metrics from before
// Start has built the first snapshot (the lists may take a while to
// load): a scrape then reads the upstream gauges of no forwarder, zero
// upstreams and none down, rather than failing.
func TestScrapeBeforeTheFirstSnapshot(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewHandler(zap.NewNop(), nil, NewMetrics(reg))
	for _, name := range []string{"dnsfence_upstreams", "dnsfence_upstreams_down"} {
		v, ok := metricValue(t, reg, name)
		assert.True(t, ok, name)
		assert.Zero(t, v, name)
	}
}
