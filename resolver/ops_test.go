package resolver

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// metricLines returns the lines of the exposition that start with prefix.
func metricLines(body, prefix string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func TestMetricsAfterRealQueries(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)

	ask(t, f.addr, "", "udp", question("www.tiktok.com.", dns.TypeA, false))      // blocked by tiktok.txt
	ask(t, f.addr, "", "tcp", question("tiktok.com.", dns.TypeAAAA, false))       // blocked, tcp
	ask(t, f.addr, "", "udp", question("api.capcut.com.", dns.TypeA, false))      // blocked by bytedance.txt
	ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))         // forwarded
	ask(t, f.addr, "127.0.0.20", "udp", question("a.example.", dns.TypeA, false)) // refused
	ask(t, f.addr, "", "udp", question("example.org.", dns.TypeOPT, false))       // formerr

	// A query leaves the in-flight gauge just after its answer is written,
	// so the client can read the answer first: wait for the gauge.
	var code int
	var body string
	require.Eventually(t, func() bool {
		code, body = get(t, srv.URL+"/metrics")
		return strings.Contains(body, "dnsfence_inflight_queries 0\n")
	}, 5*time.Second, 5*time.Millisecond, "in-flight gauge back to 0")
	require.Equal(t, http.StatusOK, code)
	dir := f.dir
	for _, want := range []string{
		`dnsfence_queries_total{result="blocked",transport="udp"} 2`,
		`dnsfence_queries_total{result="blocked",transport="tcp"} 1`,
		`dnsfence_queries_total{result="forwarded",transport="udp"} 1`,
		`dnsfence_queries_total{result="refused",transport="udp"} 1`,
		`dnsfence_queries_total{result="formerr",transport="udp"} 1`,
		`dnsfence_blocked_total{list="` + dir + `/tiktok.txt",policy="government-devices",shadow="false"} 2`,
		`dnsfence_blocked_total{list="` + dir + `/bytedance.txt",policy="government-devices",shadow="false"} 1`,
		`dnsfence_list_entries{list="` + dir + `/tiktok.txt"} 3`,
		`dnsfence_list_entries{list="` + dir + `/allow.txt"} 2`,
		`dnsfence_upstream_request_duration_seconds_count{upstream="` + up.addr + `"} 1`,
		`dnsfence_inflight_queries 0`,
	} {
		assert.Contains(t, body, want+"\n")
	}
	assert.Len(t, metricLines(body, "dnsfence_reload_last_success_timestamp_seconds "), 1)
}

func TestUpstreamErrorsAreCounted(t *testing.T) {
	up := startUpstream(t, nil)
	dead := closedPort(t)
	f := startFence(t, testConfig, testFiles, dead, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, `dnsfence_upstream_errors_total{kind="network",upstream="`+dead+`"} 1`+"\n")
	assert.Equal(t, []string{dead}, f.handler.Snapshot().Forwarder().Down())
}

// TestReadinessCountsInWords: /readyz counts one list and one policy in
// the singular ("1 policies" before).
func TestReadinessCountsInWords(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
log: {queries: none}
policies:
  - name: government-devices
    clients: ["127.0.1.0/24"]
    block: ["tiktok.txt"]
`, map[string]string{"tiktok.txt": "tiktok.com\n"}, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	code, body := get(t, srv.URL+"/readyz")
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "ready: 1 list, 1 policy, upstreams down: 0 of 1")
}

func TestReadiness(t *testing.T) {
	up := startUpstream(t, nil)
	reg := prometheus.NewRegistry()
	h := NewHandler(zap.NewNop(), nil, NewMetrics(reg))
	srv := httptest.NewServer(HTTPHandler(h, reg, 200*time.Millisecond))
	t.Cleanup(srv.Close)

	code, body := get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "still loading")
	code, _ = get(t, srv.URL+"/healthz")
	assert.Equal(t, http.StatusOK, code, "alive while loading")

	dir := testnet.WriteTree(t, testFiles)
	cfg, err := config.Parse(dir+"/c.yaml", []byte(strings.ReplaceAll(testConfig, "{{upstreams}}", `["`+up.addr+`"]`)), readFileOS)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, ConnectUpstreams(nil, snap, nil, h.metrics))
	h.Store(snap)
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "ready: 3 lists, 4 policies")
	assert.Positive(t, up.count.Load(), "a quiet resolver probes its upstream")

	up.stop()
	require.Eventually(t, func() bool {
		code, _ := get(t, srv.URL+"/readyz")
		return code == http.StatusServiceUnavailable
	}, 10*time.Second, 20*time.Millisecond)
	_, body = get(t, srv.URL+"/readyz")
	assert.Contains(t, body, "no upstream answered in the last 200ms")
}

func TestShadowMode(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if strings.HasPrefix(r.Question[0].Name, "cloaked.") {
			m.Answer = []dns.RR{mustRR("%s 300 IN CNAME x.tiktokcdn.com.", r.Question[0].Name), mustRR("x.tiktokcdn.com. 60 IN A 192.0.2.99")}
		}
		return m
	})
	cfg := strings.Replace(testConfig, "action: null", "action: log", 1)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), strings.Replace(cfg, "log: {queries: all}", "log: {queries: blocked}", 1), testFiles, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)

	// 127.0.0.7 is in the shadow policy: a blocked name is forwarded...
	r := ask(t, f.addr, "127.0.0.7", "udp", question("www.tiktok.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Nil(t, ede(r))
	r = ask(t, f.addr, "127.0.0.7", "udp", question("cloaked.example.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Len(t, r.Answer, 2)
	assert.EqualValues(t, 2, up.count.Load())

	// ...but recorded exactly as a block would be.
	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, `dnsfence_blocked_total{list="`+f.dir+`/tiktok.txt",policy="nulling",shadow="true"} 2`+"\n")
	assert.Contains(t, body, `dnsfence_queries_total{result="forwarded",transport="udp"} 2`+"\n")
	lines := logs.FilterMessage("query").All()
	require.Len(t, lines, 2)
	for _, l := range lines {
		m := l.ContextMap()
		assert.Equal(t, true, m[logShadow])
		assert.Equal(t, "nulling", m[logPolicy])
		assert.Equal(t, "tiktok.com", lines[0].ContextMap()[logEntry])
	}
	assert.Equal(t, "x.tiktokcdn.com.", lines[1].ContextMap()[logVia])
}

func TestAuditLimit(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: blocked, audit_limit: 3}", 1)
	f := startFenceLog(t, zap.New(core), cfg, testFiles, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	for i := 0; i < 10; i++ {
		ask(t, f.addr, "", "udp", question("tiktok.com.", dns.TypeA, false))
	}
	ask(t, f.addr, "127.0.0.2", "udp", question("tiktok.com.", dns.TypeA, false))
	lines := logs.FilterMessage("query").All()
	require.Len(t, lines, 4, "3 for the looping client, 1 for the other")
	assert.Equal(t, "127.0.0.2", lines[3].ContextMap()[logClient])
	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, `dnsfence_queries_total{result="blocked",transport="udp"} 11`+"\n", "counters stay exact")
}

func TestAuditLimiterReportsSuppressed(t *testing.T) {
	var a auditLimiter
	c := netipMustParse("10.0.0.1")
	now := time.Unix(1000, 0)
	for i := 0; i < 2; i++ {
		ok, n := a.allow(c, 2, now)
		assert.True(t, ok)
		assert.Zero(t, n)
	}
	for i := 0; i < 5; i++ {
		ok, _ := a.allow(c, 2, now)
		assert.False(t, ok)
	}
	ok, n := a.allow(c, 2, now.Add(time.Minute))
	assert.True(t, ok)
	assert.Equal(t, 5, n, "the next line says how many were suppressed")
}

// floodAddr is the i-th address of fd00::/96, one of a flood's clients.
func floodAddr(i int) netip.Addr {
	b := netip.MustParseAddr("fd00::").As16()
	b[12], b[13], b[14], b[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return netip.AddrFrom16(b)
}

// TestAuditLimiterBounded floods the audit limiter with the addresses of
// an IPv6 network, each over its cap so that its window has lines
// suppressed: every window was kept (1,000,000 addresses held 131 MB), so
// the addresses a flood of blocked queries can bring, a trusted proxy's
// ECS or a /64's, took memory without bound.
func TestAuditLimiterBounded(t *testing.T) {
	var a auditLimiter
	addr := floodAddr
	now := time.Unix(1000, 0)
	const clients = maxAuditClients + 1000
	granted := 0
	for i := 0; i < clients; i++ {
		for j := 0; j < 3; j++ {
			if ok, _ := a.allow(addr(i), 2, now); ok {
				granted++
			}
		}
	}
	assert.LessOrEqual(t, len(a.clients), maxAuditClients, "windows held past the bound")
	assert.Equal(t, 2*maxAuditClients+2, granted, "the clients past the bound share one window")

	// A minute on, the windows over, suppressed lines and all, make room.
	later := now.Add(time.Minute + time.Second)
	ok, n := a.allow(addr(clients), 2, later)
	assert.True(t, ok)
	assert.Zero(t, n)
	assert.Equal(t, 1, len(a.clients), "the windows over forgotten once the limiter is full")
	ok, n = a.allow(addr(0), 2, later)
	assert.True(t, ok)
	assert.Zero(t, n, "a forgotten window's count is gone")
}

// TestAuditOverflowSuppressedNotMisattributed: the lines suppressed in
// the overflow window, which clients new to a full limiter share, are not
// reported as suppressed on another client's line: an audit line says
// how many of its own client's lines were left out (README: Audit trail),
// and a device that had none left out must not be credited with a flood
// of other addresses' blocked queries. The flood's 65,536 addresses keep
// their windows (each asks again within the minute), so the limiter stays
// full.
func TestAuditOverflowSuppressedNotMisattributed(t *testing.T) {
	var a auditLimiter
	addr := floodAddr
	flood := func(now time.Time) {
		for i := range maxAuditClients {
			a.allow(addr(i), 1, now)
		}
	}
	now := time.Unix(1000, 0)
	flood(now)
	other, device := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	ok, _ := a.allow(other, 1, now)
	require.True(t, ok, "the overflow window's line")
	for range 5 {
		ok, _ = a.allow(other, 1, now)
		require.False(t, ok, "suppressed")
	}
	later := now.Add(time.Minute + time.Second)
	flood(later) // the flood goes on: the limiter stays full
	ok, n := a.allow(device, 1, later)
	require.True(t, ok)
	assert.Zero(t, n, "none of the device's lines was suppressed")
}

func TestChaosExplain(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "blocked_ttl: 60", "blocked_ttl: 60\nexplain_clients: [\"127.0.0.1/32\", \"127.0.0.3/32\"]", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	chaos := func(from, name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		return ask(t, f.addr, from, "udp", m)
	}

	r := chaos("", "www.TikTok.com.explain.dnsfence.")
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	txt := r.Answer[0].(*dns.TXT)
	assert.Equal(t, uint16(dns.ClassCHAOS), txt.Hdr.Class)
	// miekg/dns keeps TXT strings in presentation form, quotes escaped.
	unescape := strings.NewReplacer(`\"`, `"`).Replace
	text := unescape(strings.Join(txt.Txt, "\n"))
	assert.Contains(t, text, "client 127.0.0.1")
	assert.Contains(t, text, `policy "government-devices" (action nxdomain) from range 127.0.0.0/30`)
	assert.Contains(t, text, "www.TikTok.com. blocked by "+f.dir+"/tiktok.txt:2: tiktok.com")
	assert.Contains(t, text, "verdict: blocked (NXDOMAIN)")

	// The reason is for the asking client: the press office is exempt.
	r = chaos("127.0.0.3", "www.tiktok.com.explain.dnsfence.")
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	text = unescape(strings.Join(r.Answer[0].(*dns.TXT).Txt, "\n"))
	assert.Contains(t, text, `policy "press-office"`)
	assert.Contains(t, text, "verdict: forwarded")

	// A client outside explain_clients is refused, and told why (with
	// EDNS, an Extended DNS Error).
	m := new(dns.Msg)
	m.SetQuestion("www.tiktok.com.explain.dnsfence.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	m.SetEdns0(1232, false)
	r = ask(t, f.addr, "127.0.0.2", "udp", m)
	assert.Equal(t, dns.RcodeRefused, r.Rcode)
	assert.Empty(t, r.Answer)
	if e := ede(r); assert.NotNil(t, e, "the refusal says why") {
		assert.Equal(t, dns.ExtendedErrorCodeProhibited, e.InfoCode)
		assert.Equal(t, "client not in explain_clients", e.ExtraText)
	}
	assert.Zero(t, up.count.Load(), "explain queries never go upstream")
	assert.Equal(t, 2.0, queriesCounted(t, f, ResultExplained, "udp"), "counted as explained")
	assert.Equal(t, 1.0, queriesCounted(t, f, ResultRefused, "udp"), "the refusal counted as refused")
}

// TestChaosExplainLinesOf255Octets: a TXT string holds 255 octets (RFC
// 1035 §3.3.14), and the CHAOS explanation gives a line a string: a line
// of 255 octets is one string, with no empty one after it, and one of 256
// two, of 255 and 1. The names are sized so that the explanation's line
// naming them is that long.
func TestChaosExplainLinesOf255Octets(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	from := netip.MustParseAddr("127.0.0.1")
	name := func(k int) string { // 3 labels of 60, one of k, and example.org.
		return strings.Repeat(strings.Repeat("a", 60)+".", 3) + strings.Repeat("b", k) + ".example.org."
	}
	lines := func(name string) []string {
		return strings.Split(strings.TrimSuffix(f.handler.Snapshot().Explain(from, name, dns.TypeA).ClientString(), "\n"), "\n")
	}
	longest := func(name string) int {
		n := 0
		for _, l := range lines(name) {
			n = max(n, len(l))
		}
		return n
	}
	for _, want := range []int{255, 256} {
		k := 1
		for k < 60 && longest(name(k)) < want {
			k++
		}
		require.Equal(t, want, longest(name(k)), "no name makes a line of %d octets", want)
		qname := name(k) + "explain.dnsfence."
		m := new(dns.Msg)
		m.SetQuestion(qname, dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		r := ask(t, f.addr, "", "tcp", m)
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1)
		unescape := strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace
		var got []string
		for _, s := range r.Answer[0].(*dns.TXT).Txt {
			got = append(got, unescape(s))
		}
		var wantTxt []string
		for _, l := range lines(name(k)) {
			for len(l) > 255 {
				wantTxt = append(wantTxt, l[:255])
				l = l[255:]
			}
			wantTxt = append(wantTxt, l)
		}
		assert.Equal(t, wantTxt, got, "a line of %d octets", want)
	}
}

// TestBlockedCountedAcrossReload: a blocked query counts in
// dnsfence_blocked_total under its policy's and list's names whichever
// snapshot it was decided on: the latest, whose series the load resolved
// for the query path (Metrics.blockedCounters, keyed by the policy the
// query holds), and the one before a reload, which a query in flight may
// still hold, whose policy is not among them.
func TestBlockedCountedAcrossReload(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	old := f.handler.state.Load()
	next, err := BuildSnapshot(old.Config, old)
	require.NoError(t, err)
	f.handler.Store(next)

	policy := func(s *Snapshot) *Policy {
		for _, p := range s.Policies {
			if p.Name == "government-devices" {
				return p
			}
		}
		t.Fatal("no policy government-devices")
		return nil
	}
	list := f.dir + "/tiktok.txt"
	count := func() float64 {
		v, _ := metricValue(t, f.registry, "dnsfence_blocked_total", "policy", "government-devices", "list", list, "shadow", "false")
		return v
	}
	// A map lookup, not testify's Contains: that compares keys deeply, and
	// the two policies are equal but for being two.
	counters := *f.handler.metrics.blockedCounters.Load()
	resolved := func(p *Policy) bool {
		for _, s := range counters[p] {
			if s.list == list && !s.shadow {
				return true
			}
		}
		return false
	}
	require.True(t, resolved(policy(next)), "the latest snapshot's series are resolved at its load")
	require.False(t, resolved(policy(old)), "the snapshot's before are not")

	before := count()
	f.handler.metrics.blockedBy(policy(next), list, false)
	f.handler.metrics.blockedBy(policy(old), list, false)
	assert.Equal(t, before+2, count())
}

// TestBlockedOnOldSnapshotThenReload: a blocked query counted from the
// snapshot before a reload (blockedBy's path under the lock keepBlocked
// deletes with) leaves that lock free: the next reload stores its
// snapshot, and the next such query counts, instead of both waiting for
// ever and the resolver serving its old lists from then on.
func TestBlockedOnOldSnapshotThenReload(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	old := f.handler.state.Load()
	var oldPolicy *Policy
	for _, p := range old.Policies {
		if p.Name == "government-devices" {
			oldPolicy = p
		}
	}
	require.NotNil(t, oldPolicy)
	list := f.dir + "/tiktok.txt"
	count := func() float64 {
		v, _ := metricValue(t, f.registry, "dnsfence_blocked_total", "policy", "government-devices", "list", list, "shadow", "false")
		return v
	}
	next, err := BuildSnapshot(old.Config, old)
	require.NoError(t, err)
	f.handler.Store(next)
	before := count()

	done := make(chan struct{})
	go func() {
		defer close(done)
		f.handler.metrics.blockedBy(oldPolicy, list, false)
		last, err := BuildSnapshot(next.Config, next)
		if !assert.NoError(t, err) {
			return
		}
		f.handler.Store(last)
		f.handler.metrics.blockedBy(oldPolicy, list, false)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a reload after a query counted from an older snapshot did not finish")
	}
	assert.Equal(t, before+2, count())
}

// TestREADMEQueryResults: README's row for dnsfence_queries_total names
// every result the counter has, bad_request (DoH and DoQ requests refused
// without a DNS answer) among them: an operator reading it learns what
// each transport counts.
func TestREADMEQueryResults(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	var row string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `dnsfence_queries_total{transport,result}`") {
			row = line
		}
	}
	require.NotEmpty(t, row, "README has a row for dnsfence_queries_total")
	for _, r := range queryResults {
		assert.Contains(t, row, "`"+r+"`", "README names the result %q", r)
	}
}

// TestMetricSeriesBoundedByQueries: what a client puts in its queries (the
// name, the type, the class, its own address, the transport's options)
// never becomes a label value, so no client can grow /metrics (CoreDNS's
// `type` label made coredns_dns_request_duration_seconds huge,
// coredns/coredns#4507). After one query of each outcome, forty more of
// the same outcomes with other names, types and client addresses add no
// series, and no label holds a name asked.
func TestMetricSeriesBoundedByQueries(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	round := func(from, to int) {
		for i := from; i < to; i++ {
			network := []string{"udp", "tcp"}[i%2]
			qtype := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, uint16(1000 + i)}[i%4]
			r := ask(t, f.addr, "", network, question(fmt.Sprintf("n%d.example.org.", i), qtype, i%3 == 0))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			r = ask(t, f.addr, []string{"127.0.0.1", "127.0.0.2", "127.0.0.5"}[i%3], network, question(fmt.Sprintf("b%d.tiktok.com.", i), qtype, true))
			assert.Equal(t, dns.RcodeNameError, r.Rcode)
			// Over UDP: a TCP connection from outside allowed_clients is
			// closed at accept.
			r = ask(t, f.addr, fmt.Sprintf("127.0.0.%d", 20+i), "udp", question(fmt.Sprintf("r%d.example.org.", i), qtype, false))
			assert.Equal(t, dns.RcodeRefused, r.Rcode)
			q := question(fmt.Sprintf("c%d.example.org.", i), qtype, false)
			q.Question[0].Qclass = uint16(100 + i)
			ask(t, f.addr, "", network, q)
			q = question(fmt.Sprintf("u%d.example.org.", i), qtype, false)
			q.Opcode = dns.OpcodeUpdate
			r = ask(t, f.addr, "", network, q)
			assert.Equal(t, dns.RcodeNotImplemented, r.Rcode)
		}
	}
	series := func() (int, []string) {
		mfs, err := f.registry.Gather()
		require.NoError(t, err)
		n := 0
		var values []string
		for _, mf := range mfs {
			n += len(mf.GetMetric())
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					values = append(values, l.GetValue())
				}
			}
		}
		return n, values
	}
	// A query leaves the in-flight gauge just after its answer is written.
	idle := func() bool {
		mfs, err := f.registry.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "dnsfence_inflight_queries" {
				return mf.GetMetric()[0].GetGauge().GetValue() == 0
			}
		}
		return false
	}
	round(0, 4) // one of each outcome, type and transport
	require.Eventually(t, idle, 5*time.Second, 5*time.Millisecond, "in-flight gauge back to 0")
	before, _ := series()
	round(4, 44)
	require.Eventually(t, idle, 5*time.Second, 5*time.Millisecond, "in-flight gauge back to 0")
	after, values := series()
	assert.Equal(t, before, after, "forty queries of other names, types, classes and clients add no series")
	for _, v := range values {
		assert.NotContains(t, v, ".example.org", "a name asked is no label value")
		assert.NotContains(t, v, "tiktok.com.", "a name asked is no label value")
	}
}

// TestAuditLineSaysHowManyWereSuppressed: the first audit line a client
// gets once its minute is over says how many of its blocked queries were
// not logged in the minute before (suppressed), so that lines written plus
// lines suppressed are every block; a line with none suppressed says
// nothing of it.
func TestAuditLineSaysHowManyWereSuppressed(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: blocked, audit_limit: 2}", 1)
	f := startFenceLog(t, zap.New(core), cfg, testFiles, up.addr)
	for range 5 {
		ask(t, f.addr, "", "udp", question("tiktok.com.", dns.TypeA, false))
	}
	lines := logs.FilterMessage("query").All()
	require.Len(t, lines, 2, "the limit's 2, then 3 suppressed")
	for _, l := range lines {
		assert.NotContains(t, l.ContextMap(), logSuppressed)
	}
	// The client's minute over, as if a minute had passed.
	a := &f.handler.audit
	a.mu.Lock()
	w := a.clients[netipMustParse("127.0.0.1")]
	require.NotNil(t, w)
	w.start = w.start.Add(-time.Minute - time.Second)
	a.mu.Unlock()
	ask(t, f.addr, "", "udp", question("tiktok.com.", dns.TypeA, false))
	lines = logs.FilterMessage("query").All()
	require.Len(t, lines, 3)
	assert.EqualValues(t, 3, lines[2].ContextMap()[logSuppressed])
}
