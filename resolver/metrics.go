package resolver

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are dnsfence's Prometheus series. Labels stay low-cardinality:
// transports, results, policy and list names, upstream addresses; never
// client addresses or query names.
type Metrics struct {
	queries         *prometheus.CounterVec // transport, result
	blocked         *prometheus.CounterVec // policy, list, shadow
	upstreamMetrics *upstream.Metrics      // the dnsfence_upstream* series
	listEntries     *snapshotGauges        // list
	reloads         *prometheus.CounterVec // result
	reloadSuccess   prometheus.Gauge
	reloadOK        prometheus.Gauge // 1: the last reload applied; 0: it failed or was held
	reloadHeld      prometheus.Gauge // 1 while a change is held by a guard
	policyRanges    *snapshotGauges  // policy, blocking
	skippedLines    *snapshotGauges  // file
	unwatched       prometheus.Gauge
	watchedFolders  prometheus.Gauge
	inflight        prometheus.Gauge
	rateLimited     *prometheus.CounterVec // transport
	connsRefused    *prometheus.CounterVec // transport, reason
	connsClosed     *prometheus.CounterVec // transport, reason
	handshakes      *prometheus.CounterVec // transport: failed TLS handshakes
	connsOpen       *prometheus.GaugeVec   // transport
	udpBuffer       *prometheus.GaugeVec   // direction
	udpDrops        *listen.DropCounter
	cacheLookups    [len(cacheResults)]prometheus.Counter // by cacheResult
	cert            certMetrics                           // the server certificate's series, once one is loaded
	reg             prometheus.Registerer

	// queryCounters holds the dnsfence_queries_total counters by the
	// index of their transport in transports and of their result in
	// queryResults (labelIndex), so that a query hashes no label.
	queryCounters [][]prometheus.Counter
	// blockedCounters holds the dnsfence_blocked_total counter of every
	// block list of the snapshot served, by its policy (the pointer the
	// query holds), then file and shadow mode among the policy's few
	// lists, so that a blocked query finds its series without hashing
	// label values or taking the vector's lock. listsLoaded replaces the
	// whole map.
	blockedCounters atomic.Pointer[map[*Policy][]blockedSeries]
	// blockedMu guards blockedWanted, the label values (policy, list,
	// shadow) of the dnsfence_blocked_total series of the snapshot last
	// loaded (listsLoaded), the only series that exist: keepBlocked
	// deletes those of lists no policy of the next blocks with any more,
	// and blockedBy makes none outside them, so that the series stay
	// those of the configuration however many reloads renamed lists.
	blockedMu     sync.Mutex
	blockedWanted map[[3]string]bool
}

// blockedSeries is one dnsfence_blocked_total series of a policy, as the
// query path knows it.
type blockedSeries struct {
	list    string
	shadow  bool
	counter prometheus.Counter
}

// Query results that appear as the `result` label; ResultBadRequest only
// with HTTPS and QUIC.
var queryResults = []string{ResultBlocked, ResultForwarded, ResultRefused, ResultServfail, ResultFormerr, ResultNotimp, ResultBadvers, ResultDropped, ResultExplained, ResultNotify, ResultLocal, listen.ResultBadRequest}

// labelIndex is the index of v in values, or -1. The values are the
// constants a query's label is one of, so the comparison that matches is
// mostly of one string with itself.
func labelIndex(values []string, v string) int {
	for i, w := range values {
		if w == v {
			return i
		}
	}
	return -1
}

// NewMetrics registers dnsfence's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_queries_total",
			Help: "Queries answered (or dropped), by transport (udp, tcp, tls, https, quic) and result; bad_request: a DoH request answered with an HTTP 4xx, or a DoQ stream that broke RFC 9250.",
		}, []string{"transport", "result"}),
		blocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_blocked_total",
			Help: "Blocked queries by policy and list; shadow=\"true\" for policies in shadow mode (action: log), which were forwarded.",
		}, []string{"policy", "list", "shadow"}),
		upstreamMetrics: upstream.NewMetrics(reg),
		blockedWanted:   map[[3]string]bool{},
		listEntries: newSnapshotGauges("dnsfence_list_entries",
			"Entries in each loaded list.", "list"),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_reloads_total",
			Help: "Reloads by result: success, failure (the last good state kept), or held (a fail-closed guard kept it until SIGHUP).",
		}, []string{"result"}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_reload_last_success_timestamp_seconds",
			Help: "Unix time of the last successful load or reload.",
		}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_reload_ok",
			Help: "1 when the last load or reload was applied; 0 when it failed or was held, so the running state is older than the files on disk.",
		}),
		reloadHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_reload_held",
			Help: "1 while a change is held by a fail-closed guard (a list or range file shrinking past reload.max_shrink, a blocking policy losing its ranges or lists) until SIGHUP accepts it.",
		}),
		policyRanges: newSnapshotGauges("dnsfence_policy_ranges",
			"Client ranges of each policy, inline and from its client_files; blocking is false for exemptions.", "policy", "blocking"),
		skippedLines: newSnapshotGauges("dnsfence_skipped_lines",
			"Bad lines skipped in each list and client range file at its last load.", "file"),
		unwatched: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_unwatched_files",
			Help: "Files dnsfence reads (config, lists, client range files, upstream_ca) whose changes it cannot watch for; their edits are applied at the once-a-minute look, or on SIGHUP. /readyz names them.",
		}),
		watchedFolders: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_watched_folders",
			Help: "Folders watched for changes to the config, lists and client range files (0 with the embedded default, which has no files).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dnsfence_inflight_queries",
			Help: "Queries being answered right now; a query answered stale at its client response timer (cache.stale_answer_client_timeout) counts until its upstream refresh ends, and a prefetch (cache.prefetch) counts until it ends.",
		}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_ratelimited_total",
			Help: "Queries over a client's rate limit, by transport (dropped on UDP, refused on TCP).",
		}, []string{"transport"}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_connections_refused_total",
			Help: "Connections closed at accept, by transport and reason (not_allowed: outside allowed_clients; per_client_limit: the client already holds limits.tcp_connections_per_client).",
		}, []string{"transport", "reason"}),
		connsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_connections_closed_total",
			Help: "Connections closed for what the client did after it was admitted, by transport and reason (not_reading: it left its answers unread, a write blocked for the write timeout or more answers waiting than one connection may hold).",
		}, []string{"transport", "reason"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dnsfence_tls_handshake_failures_total",
			Help: "Connections to the DNS over TLS, HTTPS and QUIC listeners whose TLS handshake failed after the client sent something (an untrusted or expired certificate, a name or address the certificate lacks, no shared TLS version or ALPN protocol, a stall, plain DNS or HTTP to the port), by transport (tls, https, quic); the listeners log each at debug level.",
		}, []string{"transport"}),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnsfence_connections_open",
			Help: "Connections open now, by transport; limits.tcp_connections bounds them.",
		}, []string{"transport"}),
		udpBuffer: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dnsfence_udp_socket_buffer_bytes",
			Help: "Kernel buffer granted to the listening UDP sockets (the smallest of them), by direction (receive, send); limits.udp_receive_buffer and udp_send_buffer ask for it.",
		}, []string{"direction"}),
		udpDrops: listen.NewDropCounter(),
		reg:      reg,
	}
	cacheVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnsfence_cache_lookups_total",
		Help: "Cache lookups for forwarded queries by result (hit, miss, stale: an expired answer served because the upstreams failed, or did not answer within cache.stale_answer_client_timeout).",
	}, []string{"result"})
	reg.MustRegister(cacheVec)
	for i, r := range cacheResults {
		m.cacheLookups[i] = cacheVec.WithLabelValues(r)
	}
	drops := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dnsfence_udp_receive_drops_total",
		Help: "Datagrams the kernel dropped on arrival at the listening UDP sockets, mostly because the receive buffer was full (the drops column of /proc/net/udp and udp6).",
	}, m.udpDrops.Total)
	reg.MustRegister(m.queries, m.blocked, m.listEntries,
		m.reloads, m.reloadSuccess, m.reloadOK, m.reloadHeld, m.policyRanges, m.skippedLines, m.unwatched, m.watchedFolders, m.inflight, m.rateLimited,
		m.connsRefused, m.connsClosed, m.handshakes, m.connsOpen, m.udpBuffer, drops)
	// Series a network team alerts on exist from the start, at zero.
	for _, tr := range transports {
		m.rateLimited.WithLabelValues(tr)
	}
	for _, r := range []string{reloadSucceeded, reloadFailed, reloadHeld} {
		m.reloads.WithLabelValues(r)
	}
	m.queryCounters = make([][]prometheus.Counter, len(transports))
	for i, tr := range transports {
		m.queryCounters[i] = make([]prometheus.Counter, len(queryResults))
		for j, r := range queryResults {
			// A request the DoH or DoQ listener refuses without a DNS
			// answer; no other transport has the series.
			if r != listen.ResultBadRequest || tr == listen.HTTPS || tr == listen.QUIC {
				m.queryCounters[i][j] = m.queries.WithLabelValues(tr, r)
			}
		}
	}
	m.blockedCounters.Store(&map[*Policy][]blockedSeries{})
	for _, tr := range streamTransports {
		for _, r := range listen.RefusedReasons() {
			m.connsRefused.WithLabelValues(tr, r)
		}
		for _, r := range listen.ClosedReasons() {
			m.connsClosed.WithLabelValues(tr, r)
		}
		m.connsOpen.WithLabelValues(tr)
	}
	for _, tr := range encryptedTransports {
		m.handshakes.WithLabelValues(tr)
	}
	return m
}

// transports are the transport label's values: every listener's.
var transports = []string{listen.UDP, listen.TCP, listen.TLS, listen.HTTPS, listen.QUIC}

// streamTransports are the transports with connections.
var streamTransports = []string{listen.TCP, listen.TLS, listen.HTTPS, listen.QUIC}

// encryptedTransports are the transports with a TLS handshake.
var encryptedTransports = []string{listen.TLS, listen.HTTPS, listen.QUIC}

// handshakeFailed counts a connection whose TLS handshake failed.
func (m *Metrics) handshakeFailed(transport string) {
	if m == nil {
		return
	}
	m.handshakes.WithLabelValues(transport).Inc()
}

// connectionRefused counts a connection closed at accept.
func (m *Metrics) connectionRefused(transport, reason string) {
	if m == nil {
		return
	}
	m.connsRefused.WithLabelValues(transport, reason).Inc()
}

// connectionClosed counts a connection closed for what its client did.
func (m *Metrics) connectionClosed(transport, reason string) {
	if m == nil {
		return
	}
	m.connsClosed.WithLabelValues(transport, reason).Inc()
}

// connections tracks the connections served: delta 1 for one opened, -1
// for one closed.
func (m *Metrics) connections(transport string, delta int) {
	if m == nil {
		return
	}
	m.connsOpen.WithLabelValues(transport).Add(float64(delta))
}

// udpSockets records the listening UDP sockets: their kernel drop counters
// are summed at each scrape, and the smallest buffers granted are exported.
func (m *Metrics) udpSockets(socks []listen.UDPSocket) {
	if m == nil || len(socks) == 0 {
		return
	}
	rcv, snd := socks[0].ReceiveBuffer, socks[0].SendBuffer
	for _, s := range socks {
		m.udpDrops.Add(s.Inode)
		rcv, snd = min(rcv, s.ReceiveBuffer), min(snd, s.SendBuffer)
	}
	m.udpBuffer.WithLabelValues("receive").Set(float64(rcv))
	m.udpBuffer.WithLabelValues("send").Set(float64(snd))
}

// query counts one answered query.
func (m *Metrics) query(transport, result string) {
	if m == nil {
		return
	}
	if t, r := labelIndex(transports, transport), labelIndex(queryResults, result); t >= 0 && r >= 0 {
		if c := m.queryCounters[t][r]; c != nil {
			c.Inc()
			return
		}
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

// cacheLookup counts one lookup of the cache with its result.
func (m *Metrics) cacheLookup(r cacheResult) {
	if m == nil {
		return
	}
	m.cacheLookups[r].Inc()
}

// cacheResult is a result of a cache lookup: an index of cacheResults.
type cacheResult int

const (
	cacheHit cacheResult = iota
	cacheMiss
	cacheStale
)

// cacheResults are the result label's values of dnsfence_cache_lookups_total.
var cacheResults = [...]string{cacheHit: "hit", cacheMiss: "miss", cacheStale: "stale"}

// blockedBy counts one query blocked (or, shadow, logged) by list in
// policy p.
func (m *Metrics) blockedBy(p *Policy, list string, shadow bool) {
	if m == nil {
		return
	}
	for _, s := range (*m.blockedCounters.Load())[p] {
		if s.list == list && s.shadow == shadow {
			s.counter.Inc()
			return
		}
	}
	// A query still on a snapshot older than the counters (its policy
	// is not the one of the snapshot served): counted into the series of
	// the configuration served when it has the same policy, list and
	// mode, and not at all when a reload took that list out of the
	// policy (or the policy away). That series was deleted with it
	// (keepBlocked), and made anew it would stay in /metrics, a list no
	// longer configured, until the next reload: a query blocked from an
	// upstream answer's CNAME chain ends well after the reload it
	// straddles. Checked under the lock keepBlocked deletes with.
	labels := [3]string{p.Name, list, strconv.FormatBool(shadow)}
	m.blockedMu.Lock()
	defer m.blockedMu.Unlock()
	if m.blockedWanted[labels] {
		m.blocked.WithLabelValues(labels[:]...).Inc()
	}
}

// keepBlocked deletes the dnsfence_blocked_total series of the snapshot
// loaded before (blockedWanted) that are not among wanted, the series of
// the snapshot just loaded: those of block lists that a reload took out
// of a policy, or of a policy gone. A list blocked with again starts from
// zero, which Prometheus' rate() reads as a counter reset.
func (m *Metrics) keepBlocked(wanted map[[3]string]bool) {
	m.blockedMu.Lock()
	defer m.blockedMu.Unlock()
	for labels := range m.blockedWanted {
		if !wanted[labels] {
			m.blocked.DeleteLabelValues(labels[:]...)
		}
	}
	m.blockedWanted = wanted
}

// snapshotLoaded records list sizes, ranges per policy, skipped lines and a
// successful load, and makes the series of the snapshot's blocking lists
// exist at zero (those of its upstreams exist from when its forwarder was
// made).
func (m *Metrics) snapshotLoaded(s *Snapshot) {
	if m == nil {
		return
	}
	m.listsLoaded(s)
	m.reloadSuccess.Set(float64(s.Loaded.Unix()))
	m.reloadOK.Set(1)
	m.reloadHeld.Set(0)
}

// listsLoaded records what snapshotLoaded records of the lists, for a
// snapshot in which a remote list changed: a reload's outcome is not
// touched.
func (m *Metrics) listsLoaded(s *Snapshot) {
	if m == nil {
		return
	}
	entries := gaugeValues{}
	for path, l := range s.Lists {
		entries[[2]string{path}] = float64(l.Len())
	}
	m.listEntries.replace(entries)
	ranges := gaugeValues{}
	for _, p := range s.Policies {
		ranges[[2]string{p.Name, strconv.FormatBool(p.Blocks())}] = 0
	}
	for _, cr := range s.byClient.AllSorted() {
		ranges[[2]string{cr.Policy.Name, strconv.FormatBool(cr.Policy.Blocks())}]++
	}
	m.policyRanges.replace(ranges)
	skipped := gaugeValues{}
	for path := range s.Lists {
		skipped[[2]string{path}] = 0
	}
	for path := range s.Ranges {
		skipped[[2]string{path}] = 0
	}
	for file, n := range blocklist.Skipped(errors.Join(s.Warnings...)) {
		skipped[[2]string{file}] = float64(n)
	}
	m.skippedLines.replace(skipped)
	counters := map[*Policy][]blockedSeries{}
	wanted := map[[3]string]bool{}
	for _, p := range s.Policies {
		shadow := p.Action == config.ActionLog
		for _, l := range p.Block {
			labels := [3]string{p.Name, l.File(), strconv.FormatBool(shadow)}
			wanted[labels] = true
			counters[p] = append(counters[p], blockedSeries{l.File(), shadow, m.blocked.WithLabelValues(labels[:]...)})
		}
	}
	m.blockedCounters.Store(&counters)
	m.keepBlocked(wanted)
}

// Outcomes of a reload, as the result label of dnsfence_reloads_total.
const (
	reloadSucceeded = "success"
	reloadFailed    = "failure"
	reloadHeld      = "held"
)

// reloaded counts a reload: err nil applied it (snapshotLoaded has set the
// gauges), a held change (ErrHeld) or any other error kept the last good
// state. dnsfence_reload_held says what the reloader's status does: the
// last reload was held; a failure after a held one clears it (SIGHUP
// would not apply the held change, the broken file is what to fix).
func (m *Metrics) reloaded(err error) {
	if m == nil {
		return
	}
	switch {
	case err == nil:
		m.reloads.WithLabelValues(reloadSucceeded).Inc()
	case errors.Is(err, ErrHeld):
		m.reloads.WithLabelValues(reloadHeld).Inc()
		m.reloadOK.Set(0)
		m.reloadHeld.Set(1)
	default:
		m.reloads.WithLabelValues(reloadFailed).Inc()
		m.reloadOK.Set(0)
		m.reloadHeld.Set(0)
	}
}

// upstreamGauges exposes how many upstreams there are and how many are
// down, read from the forwarder current returns at each scrape.
func (m *Metrics) upstreamGauges(current func() *upstream.Forwarder) {
	if m == nil {
		return
	}
	m.upstreamMetrics.Watch(current)
}

// setUnwatched records how many files cannot be watched.
func (m *Metrics) setUnwatched(n int) {
	if m == nil {
		return
	}
	m.unwatched.Set(float64(n))
}

// setWatchedFolders records how many folders the watcher watches.
func (m *Metrics) setWatchedFolders(n int) {
	if m == nil {
		return
	}
	m.watchedFolders.Set(float64(n))
}

// snapshotGauges are gauges whose series all describe one snapshot (its
// lists' entries, its policies' ranges): replace swaps the whole set at
// once, so that a scrape during a reload sees the set before it or the
// set after, never one emptied by GaugeVec.Reset and half filled again
// (a blocking policy with a few of its ranges, a list with no series),
// which a dashboard or a recording rule would take for a real change.
type snapshotGauges struct {
	desc   *prometheus.Desc
	labels int
	series atomic.Pointer[[]prometheus.Metric]
}

// gaugeValues are a snapshotGauges' values by their label values, in the
// order of its labels (one or two; a second left "" for one).
type gaugeValues map[[2]string]float64

func newSnapshotGauges(name, help string, labels ...string) *snapshotGauges {
	return &snapshotGauges{desc: prometheus.NewDesc(name, help, labels, nil), labels: len(labels)}
}

// replace makes values the series, all in one store.
func (g *snapshotGauges) replace(values gaugeValues) {
	series := make([]prometheus.Metric, 0, len(values))
	for labels, v := range values {
		series = append(series, prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, labels[:g.labels]...))
	}
	g.series.Store(&series)
}

// Describe implements prometheus.Collector.
func (g *snapshotGauges) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector: the series of the last
// replace, none before the first.
func (g *snapshotGauges) Collect(ch chan<- prometheus.Metric) {
	if series := g.series.Load(); series != nil {
		for _, m := range *series {
			ch <- m
		}
	}
}
