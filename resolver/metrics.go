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
	listEntries     *prometheus.GaugeVec   // list
	reloads         *prometheus.CounterVec // result
	reloadSuccess   prometheus.Gauge
	inflight        prometheus.Gauge
	rateLimited     *prometheus.CounterVec // transport
	connsRefused    *prometheus.CounterVec // transport, reason
	connsOpen       *prometheus.GaugeVec   // transport
	udpBuffer       *prometheus.GaugeVec   // direction
	udpDrops        *udpDropCounter
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
			Help: "Failed upstream exchanges, by upstream and kind (timeout, network, mismatch).",
		}, []string{"upstream", "kind"}),
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
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_connections_refused_total",
			Help: "Connections closed at accept, by transport and reason (not_allowed: outside allowed_clients; per_client_limit: the client already holds limits.tcp_connections_per_client).",
		}, []string{"transport", "reason"}),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnsfence_connections_open",
			Help: "Connections open now, by transport; limits.tcp_connections bounds them.",
		}, []string{"transport"}),
		udpBuffer: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnsfence_udp_socket_buffer_bytes",
			Help: "Kernel buffer granted to the listening UDP sockets (the smallest of them), by direction (receive, send); limits.udp_receive_buffer and udp_send_buffer ask for it.",
		}, []string{"direction"}),
		udpDrops:      &udpDropCounter{last: map[uint64]uint64{}},
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
	drops := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dnsfence_udp_receive_drops_total",
		Help: "Datagrams the kernel dropped on arrival at the listening UDP sockets, mostly because the receive buffer was full (the drops column of /proc/net/udp and udp6).",
	}, m.udpDrops.total)
	reg.MustRegister(m.queries, m.blocked, m.upstreamSeconds, m.upstreamErrors, m.listEntries,
		m.reloads, m.reloadSuccess, m.inflight, m.rateLimited, m.connsRefused, m.connsOpen, m.udpBuffer, drops)
	for _, tr := range []string{"udp", "tcp"} {
		for _, r := range queryResults {
			m.queryCounters[[2]string{tr, r}] = m.queries.WithLabelValues(tr, r)
		}
	}
	for _, r := range refusedReasons {
		m.connsRefused.WithLabelValues("tcp", r)
	}
	m.connsOpen.WithLabelValues("tcp")
	return m
}

// connectionRefused counts a connection closed at accept.
func (m *Metrics) connectionRefused(transport, reason string) {
	if m == nil {
		return
	}
	m.connsRefused.WithLabelValues(transport, reason).Inc()
}

// connectionOpened and connectionClosed track the connections served.
func (m *Metrics) connectionOpened(transport string) {
	if m == nil {
		return
	}
	m.connsOpen.WithLabelValues(transport).Inc()
}

func (m *Metrics) connectionClosed(transport string) {
	if m == nil {
		return
	}
	m.connsOpen.WithLabelValues(transport).Dec()
}

// udpSockets records the listening UDP sockets: their kernel drop counters
// are summed at each scrape, and the smallest buffers granted are exported.
func (m *Metrics) udpSockets(socks []udpSocketInfo) {
	if m == nil || len(socks) == 0 {
		return
	}
	rcv, snd := socks[0].receiveBuffer, socks[0].sendBuffer
	for _, s := range socks {
		m.udpDrops.add(s.inode)
		rcv, snd = min(rcv, s.receiveBuffer), min(snd, s.sendBuffer)
	}
	m.udpBuffer.WithLabelValues("receive").Set(float64(rcv))
	m.udpBuffer.WithLabelValues("send").Set(float64(snd))
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

func (m *Metrics) upstreamDone(upstream string, took time.Duration, err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.upstreamSeconds.WithLabelValues(upstream).Observe(took.Seconds())
		return
	}
	kind := "network"
	switch {
	case isTimeout(err):
		kind = "timeout"
	case err == errMismatch:
		kind = "mismatch"
	}
	m.upstreamErrors.WithLabelValues(upstream, kind).Inc()
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
