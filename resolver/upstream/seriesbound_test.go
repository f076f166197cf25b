package upstream

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upstreamsInSeries returns the upstream label values of reg's series,
// of every family (upstreamSeries), sorted and once each.
func upstreamsInSeries(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	var out []string
	for _, ups := range upstreamSeries(t, reg) {
		out = append(out, ups...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestUpstreamSeriesLastWhileAForwarderNamesThem: an upstream's series
// stay while any Forwarder not yet closed names it, and go with the last
// one, also when New fails on a later upstream of the list (a reload's
// configuration that is not applied) or the forwarder is closed without
// a successor. Before the fix each Forwarder made left its upstreams'
// series for good.
func TestUpstreamSeriesLastWhileAForwarderNamesThem(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := Options{Timeout: time.Second, Metrics: NewMetrics(reg)}
	a, b := "127.0.0.1:1053", "127.0.0.1:2053"

	_, err := New([]string{b, "tls://127.0.0.1:853"}, opts) // no name to verify: fails
	require.Error(t, err)
	assert.Empty(t, upstreamsInSeries(t, reg), "a Forwarder that could not be made")

	first, err := New([]string{a, b}, opts)
	require.NoError(t, err)
	second, err := Rebuild(first, []string{a}, Options{Timeout: 2 * time.Second, Metrics: opts.Metrics})
	require.NoError(t, err)
	require.NotSame(t, first, second)
	assert.ElementsMatch(t, []string{a, b}, upstreamsInSeries(t, reg), "both still open")
	first.Retire(second)
	assert.Equal(t, []string{a}, upstreamsInSeries(t, reg), "b went with the forwarder retired; a stays with its successor")
	second.Close()
	assert.Empty(t, upstreamsInSeries(t, reg))
}
