package upstream

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the upstream series of dnsfence's Prometheus registry:
// dnsfence_upstream_request_duration_seconds{upstream},
// dnsfence_upstream_errors_total{upstream,kind},
// dnsfence_upstream_retries_total{upstream,reason}, and with Watch
// dnsfence_upstreams and dnsfence_upstreams_down. A nil *Metrics counts
// nothing.
//
// The series of an upstream last as long as a Forwarder that forwards to
// it: once no Forwarder left open (not yet closed, or retired with
// exchanges still going) names it, a reload took it out of the
// configuration, and its series are deleted, so that /metrics stays the
// size of the configuration however many reloads moved the upstreams.
type Metrics struct {
	seconds *prometheus.HistogramVec // upstream
	errors  *prometheus.CounterVec   // upstream, kind
	retries *prometheus.CounterVec   // upstream, reason
	reg     prometheus.Registerer

	mu sync.Mutex
	// open counts, by upstream, the Forwarders between start and stop
	// that forward to it.
	open map[string]int
}

// NewMetrics registers the upstream series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dnsfence_upstream_request_duration_seconds",
			Help:    "Duration of successful upstream exchanges, by upstream.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"upstream"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_upstream_errors_total",
			// The kinds from errorKinds, so that the HELP names each
			// kind a series has (certificate and protocol were left out).
			Help: "Failed upstream exchanges, and unusable UDP answers recovered over TCP, by upstream and kind (" + strings.Join(errorKinds, ", ") + ").",
		}, []string{"upstream", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_upstream_retries_total",
			Help: "Tries beyond a query's first, by the upstream they went to and reason: hedge (the try before was slow), failover (it failed), throttled (not sent: the upstream's retry budget was full), resend (the same datagram sent again to its upstream: unanswered within its delay while no other upstream is up, or once from a new socket after an ICMP unreachable ended the socket it waited on).",
		}, []string{"upstream", "reason"}),
		reg:  reg,
		open: map[string]int{},
	}
	reg.MustRegister(m.seconds, m.errors, m.retries)
	return m
}

// Watch exposes how many upstreams the forwarder current returns has and
// how many of them are down, read at each scrape (none while current
// returns nil).
func (m *Metrics) Watch(current func() *Forwarder) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dnsfence_upstreams",
		Help: "Upstreams configured.",
	}, func() float64 {
		if f := current(); f != nil {
			return float64(len(f.upstreams))
		}
		return 0
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dnsfence_upstreams_down",
		Help: "Upstreams currently judged down (skipped while another is up, probed back).",
	}, func() float64 {
		if f := current(); f != nil {
			return float64(len(f.Down()))
		}
		return 0
	}))
}

// start makes the series of upstreams exist at zero: every error kind and
// retry reason, so that a network team's alerts see them from the start.
// It counts one Forwarder more forwarding to each, until its stop.
func (m *Metrics) start(upstreams []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range distinct(upstreams) {
		m.open[u]++
	}
	for _, u := range upstreams {
		for _, kind := range errorKinds {
			m.errors.WithLabelValues(u, kind)
		}
		for _, reason := range []string{retryHedge, retryFailover, retryThrottled, retryResend} {
			m.retries.WithLabelValues(u, reason)
		}
	}
}

// stop is start's end, called once the Forwarder's transports are closed
// (no exchange of it is left to count): the series of an upstream that no
// Forwarder still open forwards to are deleted.
func (m *Metrics) stop(upstreams []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range distinct(upstreams) {
		if m.open[u]--; m.open[u] > 0 {
			continue
		}
		delete(m.open, u)
		m.seconds.DeleteLabelValues(u)
		m.errors.DeletePartialMatch(prometheus.Labels{"upstream": u})
		m.retries.DeletePartialMatch(prometheus.Labels{"upstream": u})
	}
}

// distinct returns upstreams sorted, each once.
func distinct(upstreams []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(upstreams)))
}

// observer is the upstream's series of the exchange durations; nil
// without metrics.
func (m *Metrics) observer(upstream string) prometheus.Observer {
	if m == nil {
		return nil
	}
	return m.seconds.WithLabelValues(upstream)
}

// done counts one upstream exchange: its duration when it succeeded, else
// its error under the kind errorKind names.
func (m *Metrics) done(upstream string, took time.Duration, err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.seconds.WithLabelValues(upstream).Observe(took.Seconds())
		return
	}
	m.errors.WithLabelValues(upstream, errorKind(err)).Inc()
}

// retry counts one try beyond a query's first to upstream (reason hedge,
// failover or resend), or one not sent (throttled).
func (m *Metrics) retry(upstream, reason string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(upstream, reason).Inc()
}
