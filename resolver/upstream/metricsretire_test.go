package upstream

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// upstreamSeries is, by metric family, the upstream label values reg
// exports, sorted and without repeats.
func upstreamSeries(t *testing.T, reg *prometheus.Registry) map[string][]string {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string][]string{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "upstream" {
					out[mf.GetName()] = append(out[mf.GetName()], l.GetValue())
				}
			}
		}
	}
	for name, ups := range out {
		slices.Sort(ups)
		out[name] = slices.Compact(ups)
	}
	return out
}

// malformedCount is reg's dnsfence_upstream_errors_total{kind="malformed"}
// of upstream, -1 without the series.
func malformedCount(t *testing.T, reg *prometheus.Registry, upstream string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != "dnsfence_upstream_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["upstream"] == upstream && labels["kind"] == kindMalformed {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestRetiredUpstreamSeriesRemoved: a reload that drops an upstream drops
// its dnsfence_upstream_* series once the Forwarder that asked it has
// ended its last exchange, where they were exported until the process
// ended (dnsfence_upstreams 1 beside the series of two upstreams, an
// upstream gone from the configuration on the dashboard for ever, and as
// many series again for each address a resolv.conf named over time). An
// upstream the new configuration keeps keeps its series, counts and all
// (a counter never resets on reload), and so does one that a Forwarder
// not yet closed still asks, or that a later reload brought back.
func TestRetiredUpstreamSeriesRemoved(t *testing.T) {
	const a, b, c = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	opts := Options{Timeout: time.Second, Metrics: m}
	family := "dnsfence_upstream_errors_total"

	f1, err := New([]string{a, b}, opts)
	require.NoError(t, err)
	m.done(b, 0, ErrAnswerMalformed)
	f2, err := Rebuild(f1, []string{b, c}, opts)
	require.NoError(t, err)
	f1.Retire(f2) // nothing in flight on f1: it closes at once
	got := upstreamSeries(t, reg)
	for _, name := range []string{family, "dnsfence_upstream_retries_total", "dnsfence_upstream_request_duration_seconds"} {
		assert.Equal(t, []string{b, c}, got[name], "%s once %s was dropped", name, a)
	}
	assert.Equal(t, 1.0, malformedCount(t, reg, b), "%s's count, kept across the reload", b)

	// f2 has a query in flight while two more reloads go c, then back to b.
	require.True(t, f2.acquire())
	f3, err := Rebuild(f2, []string{c}, opts)
	require.NoError(t, err)
	f2.Retire(f3)
	f4, err := Rebuild(f3, []string{b}, opts)
	require.NoError(t, err)
	f3.Retire(f4)
	assert.Equal(t, []string{b, c}, upstreamSeries(t, reg)[family], "%s is still asked by the query in flight on the retired forwarder", c)
	f2.release()
	assert.Equal(t, []string{b}, upstreamSeries(t, reg)[family], "once the last query on a forwarder that asked %s ended", c)
	assert.Equal(t, 1.0, malformedCount(t, reg, b), "%s's count, kept across the reloads", b)

	f4.Close()
	assert.Empty(t, upstreamSeries(t, reg)[family], "once every forwarder is closed")
}

// TestUpstreamHelpNamesEveryLabelValue: the HELP text of
// dnsfence_upstream_errors_total names every kind a series has, and that
// of dnsfence_upstream_retries_total every reason, so that an operator
// reading /metrics learns what a kind such as certificate or protocol
// counts without the README (the kinds list had fallen behind them).
func TestUpstreamHelpNamesEveryLabelValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.start([]string{"127.0.0.1:1"})
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		label := map[string]string{"dnsfence_upstream_errors_total": "kind", "dnsfence_upstream_retries_total": "reason"}[mf.GetName()]
		if label == "" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == label {
					assert.Contains(t, mf.GetHelp(), l.GetValue(), "%s's HELP, %s %s", mf.GetName(), label, l.GetValue())
				}
			}
		}
	}
}
