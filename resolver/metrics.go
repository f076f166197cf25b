package resolver

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are dnsfence's Prometheus series. Labels stay low-cardinality:
// transports, results, policy and list names, upstream addresses; never
// client addresses or query names.
type Metrics struct {
	queries         *prometheus.CounterVec // transport, result
	blocked         *prometheus.CounterVec // policy, list, shadow
	upstreamSeconds *prometheus.HistogramVec
	upstreamErrors  *prometheus.CounterVec // upstream, kind
	upstreamRetries *prometheus.CounterVec // upstream, reason
	listEntries     *prometheus.GaugeVec   // list
	reloads         *prometheus.CounterVec // result
	reloadSuccess   prometheus.Gauge
	inflight        prometheus.Gauge
	rateLimited     *prometheus.CounterVec // transport
	cacheLookups    map[string]prometheus.Counter
	reg             prometheus.Registerer

	// queryCounters caches the queries counters by transport and result so
	// the hot path does no label lookups.
	queryCounters map[[2]string]prometheus.Counter
}

// Query results that appear as the `result` label.
var queryResults = []string{ResultBlocked, ResultForwarded, ResultRefused, ResultServfail, ResultFormerr, ResultNotimp, ResultBadvers, ResultDropped, ResultExplained}

// NewMetrics registers dnsfence's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_queries_total",
			Help: "Queries answered (or dropped), by transport and result.",
		}, []string{"transport", "result"}),
		blocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_blocked_total",
			Help: "Blocked queries by policy and list; shadow=\"true\" for policies in shadow mode (action: log), which were forwarded.",
		}, []string{"policy", "list", "shadow"}),
		upstreamSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dnsfence_upstream_request_duration_seconds",
			Help:    "Duration of successful upstream exchanges, by upstream.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"upstream"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_upstream_errors_total",
			Help: "Failed upstream exchanges, and unusable UDP answers recovered over TCP, by upstream and kind (timeout, network, too_big, malformed, mismatch, wrong_id, rcode_servfail, rcode_refused, rcode_notimp).",
		}, []string{"upstream", "kind"}),
		upstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_upstream_retries_total",
			Help: "Tries beyond a query's first, by the upstream they went to and reason: hedge (the try before was slow), failover (it failed), throttled (not sent: the upstream's retry budget was full).",
		}, []string{"upstream", "reason"}),
		listEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnsfence_list_entries",
			Help: "Entries in each loaded list.",
		}, []string{"list"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_reloads_total",
			Help: "Reloads by result (success, failure).",
		}, []string{"result"}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_reload_last_success_timestamp_seconds",
			Help: "Unix time of the last successful load or reload.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_inflight_queries",
			Help: "Queries being answered right now.",
		}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_ratelimited_total",
			Help: "Queries over a client's rate limit, by transport (dropped on UDP, refused on TCP).",
		}, []string{"transport"}),
		queryCounters: map[[2]string]prometheus.Counter{},
		cacheLookups:  map[string]prometheus.Counter{},
		reg:           reg,
	}
	cacheVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnsfence_cache_lookups_total",
		Help: "Cache lookups for forwarded queries by result (hit, miss, stale).",
	}, []string{"result"})
	reg.MustRegister(cacheVec)
	for _, r := range []string{"hit", "miss", "stale"} {
		m.cacheLookups[r] = cacheVec.WithLabelValues(r)
	}
	reg.MustRegister(m.queries, m.blocked, m.upstreamSeconds, m.upstreamErrors, m.upstreamRetries, m.listEntries,
		m.reloads, m.reloadSuccess, m.inflight, m.rateLimited)
	for _, tr := range []string{"udp", "tcp"} {
		for _, r := range queryResults {
			m.queryCounters[[2]string{tr, r}] = m.queries.WithLabelValues(tr, r)
		}
	}
	return m
}

// query counts one answered query.
func (m *Metrics) query(transport, result string) {
	if m == nil {
		return
	}
	if c, ok := m.queryCounters[[2]string{transport, result}]; ok {
		c.Inc()
		return
	}
	m.queries.WithLabelValues(transport, result).Inc()
}

// cacheSize exposes the cache's entry count.
func (m *Metrics) cacheSize(f func() float64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dnsfence_cache_entries",
		Help: "Answers in the cache.",
	}, f))
}

func (m *Metrics) cacheLookup(result string) {
	if m == nil {
		return
	}
	m.cacheLookups[result].Inc()
}

func (m *Metrics) blockedBy(policy, list string, shadow bool) {
	if m == nil {
		return
	}
	m.blocked.WithLabelValues(policy, list, strconv.FormatBool(shadow)).Inc()
}

// upstreamDone counts one upstream exchange: its duration when it
// succeeded, else its error under the kind errorKind names.
func (m *Metrics) upstreamDone(upstream string, took time.Duration, err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.upstreamSeconds.WithLabelValues(upstream).Observe(took.Seconds())
		return
	}
	m.upstreamErrors.WithLabelValues(upstream, errorKind(err)).Inc()
}

// upstreamRetry counts one try beyond a query's first to upstream (reason
// hedge or failover), or one not sent (throttled).
func (m *Metrics) upstreamRetry(upstream, reason string) {
	if m == nil {
		return
	}
	m.upstreamRetries.WithLabelValues(upstream, reason).Inc()
}

// snapshotLoaded records list sizes and a successful load.
func (m *Metrics) snapshotLoaded(s *Snapshot) {
	if m == nil {
		return
	}
	m.listEntries.Reset()
	for path, l := range s.Lists {
		m.listEntries.WithLabelValues(path).Set(float64(l.Len()))
	}
	m.reloadSuccess.Set(float64(s.Loaded.Unix()))
}

func (m *Metrics) reloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("success").Inc()
	} else {
		m.reloads.WithLabelValues("failure").Inc()
	}
}
