package upstream

import (
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
type Metrics struct {
	seconds *prometheus.HistogramVec // upstream
	errors  *prometheus.CounterVec   // upstream, kind
	retries *prometheus.CounterVec   // upstream, reason
	reg     prometheus.Registerer

	mu sync.Mutex
	// users counts, by upstream, the Forwarders that forward to it and
	// are not closed yet (start, stop): the series of an upstream are
	// removed when its last one closes.
	users map[string]int
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
			Help: "Tries beyond a query's first, by the upstream they went to and reason: hedge (the try before was slow), failover (it failed), throttled (not sent: the upstream's retry budget was full), resend (the same datagram sent again to the only upstream, unanswered within its delay).",
		}, []string{"upstream", "reason"}),
		reg: reg,
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
// retry reason, so that a network team's alerts see them from the start;
// a new Forwarder calls it, and stop once it has closed.
func (m *Metrics) start(upstreams []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users == nil {
		m.users = map[string]int{}
	}
	for _, u := range upstreams {
		m.users[u]++
		for _, kind := range errorKinds {
			m.errors.WithLabelValues(u, kind)
		}
		for _, reason := range []string{retryHedge, retryFailover, retryThrottled, retryResend} {
			m.retries.WithLabelValues(u, reason)
		}
	}
}

// stop is start's end, for a Forwarder that has closed (its last exchange
// has ended, so nothing of it counts again): the series of each of its
// upstreams that no other open Forwarder asks are removed, so that an
// upstream a reload dropped (or a resolv.conf no longer names) is not
// exported beside dnsfence_upstreams for as long as the process runs. An
// upstream kept keeps its series and counts: a reload resets no counter.
func (m *Metrics) stop(upstreams []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range upstreams {
		if m.users[u]--; m.users[u] > 0 {
			continue
		}
		delete(m.users, u)
		m.seconds.DeleteLabelValues(u)
		m.errors.DeletePartialMatch(prometheus.Labels{"upstream": u})
		m.retries.DeletePartialMatch(prometheus.Labels{"upstream": u})
	}
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
