package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The monitoring tests check configs/monitoring: the alert rules with
// promtool (unit tests included), the dashboard's shape, and then every
// dashboard query and alert expression against a real Prometheus that
// scrapes a running dnsfence.

// monitoringDir holds alerts.yaml, alerts_test.yaml and dashboard.json.
const monitoringDir = "../../configs/monitoring"

// alertRule is one rule of alerts.yaml.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadAlerts(t *testing.T) []alertRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(monitoringDir, "alerts.yaml"))
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(data, &file))
	var rules []alertRule
	for _, g := range file.Groups {
		rules = append(rules, g.Rules...)
	}
	require.NotEmpty(t, rules)
	return rules
}

// TestAlertRules runs promtool on the rules and their unit tests.
func TestAlertRules(t *testing.T) {
	promtool := testnet.NeedProgram(t, "promtool", "prometheus")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "check rules", args: []string{"check", "rules", "alerts.yaml"}},
		{name: "test rules", args: []string{"test", "rules", "alerts_test.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(promtool, tc.args...)
			cmd.Dir = monitoringDir
			out, err := cmd.CombinedOutput()
			assert.NoError(t, err, "promtool %s:\n%s", strings.Join(tc.args, " "), out)
			assert.Contains(t, string(out), "SUCCESS")
		})
	}
}

// grouping matches the label list of an aggregation or a vector match.
var grouping = regexp.MustCompile(`\b(?:by|on)\s*\(([^)]*)\)`)

// TestAlertRulesShape checks what promtool does not: every alert tells the
// on-call how bad and what to do, alerts per instance, and is unit tested
// both firing and not firing.
func TestAlertRulesShape(t *testing.T) {
	rules := loadAlerts(t)
	data, err := os.ReadFile(filepath.Join(monitoringDir, "alerts_test.yaml"))
	require.NoError(t, err)
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(data, &tests))
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			assert.False(t, seen[r.Alert], "alert defined twice")
			seen[r.Alert] = true
			assert.Regexp(t, `^Dnsfence[A-Z][A-Za-z]+$`, r.Alert)
			assert.Contains(t, []string{"critical", "warning", "info"}, r.Labels["severity"])
			assert.NotEmpty(t, r.For, "a for: duration keeps one bad scrape from paging")
			assert.NotEmpty(t, r.Annotations["summary"])
			assert.Greater(t, len(r.Annotations["description"]), 80, "the description says what to do")
			assert.True(t, fires[r.Alert], "alerts_test.yaml has no case where %s fires", r.Alert)
			assert.True(t, quiet[r.Alert], "alerts_test.yaml has no case where %s stays quiet", r.Alert)
			for _, m := range grouping.FindAllStringSubmatch(r.Expr, -1) {
				labels := strings.Split(strings.ReplaceAll(m[1], " ", ""), ",")
				assert.Contains(t, labels, "instance", "%q: instances alert separately", m[0])
				assert.Contains(t, labels, "job", "%q: instances alert separately", m[0])
			}
		})
	}
	for name := range fires {
		assert.True(t, seen[name], "alerts_test.yaml tests %s, which alerts.yaml does not define", name)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int    `json:"schemaVersion"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Templating    struct {
		List []dashVariable `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

type dashDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	Datasource *dashDatasource `json:"datasource"`
}

type dashPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *dashDatasource `json:"datasource"`
	GridPos     struct {
		H int `json:"h"`
		W int `json:"w"`
		X int `json:"x"`
		Y int `json:"y"`
	} `json:"gridPos"`
	Targets []struct {
		Expr         string          `json:"expr"`
		RefID        string          `json:"refId"`
		LegendFormat string          `json:"legendFormat"`
		Datasource   *dashDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // of a collapsed row
}

// loadDashboard returns the dashboard and its panels, rows' panels
// included.
func loadDashboard(t *testing.T) (dashboard, []dashPanel) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(monitoringDir, "dashboard.json"))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(data, &d))
	var all []dashPanel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	return d, all
}

// templateVariable matches Grafana's variable syntaxes: $name, ${name},
// ${name:format} and [[name]].
var templateVariable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// expandVariables substitutes Grafana template variables in expr with
// values; a variable values has no entry for is an error.
func expandVariables(expr string, values map[string]string) (string, error) {
	var unknown []string
	out := templateVariable.ReplaceAllStringFunc(expr, func(m string) string {
		sub := templateVariable.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := values[name]
		if !ok {
			unknown = append(unknown, m)
			return m
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown template variables %v in %q", unknown, expr)
	}
	return out, nil
}

// grafanaRegexValue formats one value of a multi-value variable the way
// Grafana's Prometheus data source does for a =~ matcher: regex
// metacharacters are escaped, the backslashes doubled for the PromQL
// string.
func grafanaRegexValue(v string) string {
	var b strings.Builder
	for _, r := range v {
		switch {
		case r == '\\':
			b.WriteString(`\\\\`)
		case strings.ContainsRune(`$^*{}[]'+?.()|`, r):
			b.WriteString(`\\`)
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// selector matches a metric selector with its label matchers, and
// metricName a metric name anywhere in an expression.
var (
	selector   = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}`)
	metricName = regexp.MustCompile(`\b(?:dnsfence_\w+|process_\w+|up)\b`)
)

// TestDashboardShape checks the dashboard imports and filters as it should:
// a data source variable on every panel and query, job and instance
// variables in every selector, unique ids, and panels inside the 24-column
// grid without overlap.
func TestDashboardShape(t *testing.T) {
	d, panels := loadDashboard(t)
	assert.GreaterOrEqual(t, d.SchemaVersion, 36)
	assert.Equal(t, "dnsfence", d.UID)
	vars := map[string]dashVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	require.Contains(t, vars, "datasource")
	assert.Equal(t, "datasource", vars["datasource"].Type)
	assert.JSONEq(t, `"prometheus"`, string(vars["datasource"].Query))
	for _, name := range []string{"job", "instance"} {
		require.Contains(t, vars, name)
		assert.Equal(t, "query", vars[name].Type)
		assert.Regexp(t, `^label_values\(.+, `+name+`\)$`, vars[name].Definition)
		require.NotNil(t, vars[name].Datasource)
		assert.Equal(t, "${datasource}", vars[name].Datasource.UID)
	}
	assert.True(t, vars["instance"].Multi && vars["instance"].IncludeAll, "one instance or all of them")

	ids := map[int]string{}
	type cell struct{ x, y int }
	taken := map[cell]string{}
	targets := 0
	for _, p := range panels {
		t.Run(p.Title, func(t *testing.T) {
			assert.NotContains(t, ids, p.ID, "panel id %d is used twice", p.ID)
			ids[p.ID] = p.Title
			assert.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24)
			assert.Positive(t, p.GridPos.W)
			assert.Positive(t, p.GridPos.H)
			for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
				for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
					if other, ok := taken[cell{x, y}]; ok {
						t.Errorf("overlaps panel %q at x=%d y=%d", other, x, y)
					}
					taken[cell{x, y}] = p.Title
				}
			}
			if p.Type == "row" {
				return
			}
			assert.Contains(t, []string{"timeseries", "stat"}, p.Type)
			assert.NotEmpty(t, p.Title)
			assert.NotEmpty(t, p.Description, "the panel says what it shows")
			require.NotNil(t, p.Datasource)
			assert.Equal(t, dashDatasource{Type: "prometheus", UID: "${datasource}"}, *p.Datasource)
			require.NotEmpty(t, p.Targets)
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				targets++
				assert.NotEmpty(t, tg.Expr)
				assert.NotEmpty(t, tg.LegendFormat)
				assert.False(t, refs[tg.RefID], "refId %s twice", tg.RefID)
				refs[tg.RefID] = true
				require.NotNil(t, tg.Datasource)
				assert.Equal(t, "${datasource}", tg.Datasource.UID)
				for _, m := range selector.FindAllStringSubmatch(tg.Expr, -1) {
					assert.Contains(t, m[2], `job=~"$job"`, "%s: filtered by the job variable", m[0])
					assert.Contains(t, m[2], `instance=~"$instance"`, "%s: filtered by the instance variable", m[0])
				}
				for _, loc := range metricName.FindAllStringIndex(tg.Expr, -1) {
					assert.True(t, loc[1] < len(tg.Expr) && tg.Expr[loc[1]] == '{',
						"%s in %q has no selector with the job and instance variables", tg.Expr[loc[0]:loc[1]], tg.Expr)
				}
				_, err := expandVariables(tg.Expr, map[string]string{"job": "j", "instance": "i", "__rate_interval": "1m"})
				assert.NoError(t, err, "only the dashboard's variables and $__rate_interval")
			}
		})
	}
	assert.GreaterOrEqual(t, targets, 20)
}

// startProcess starts cmd and returns once ready has returned true for a
// line of its standard error; the process is killed when the test ends.
func startProcess(t *testing.T, cmd *exec.Cmd, ready func(line string) bool) {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	isReady := make(chan struct{})
	exited := make(chan error, 1)
	tail := make(chan []string, 1) // the last lines, for a failure message
	tail <- nil
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		readySeen := false
		for sc.Scan() {
			lines := append(<-tail, sc.Text())
			tail <- lines[max(0, len(lines)-20):]
			if !readySeen && ready(sc.Text()) {
				readySeen = true
				close(isReady)
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case err := <-exited:
			exited <- err
		case <-time.After(15 * time.Second):
			t.Errorf("%s did not exit after SIGKILL", cmd.Path)
		}
	})
	select {
	case <-isReady:
	case err := <-exited:
		exited <- err
		lines := <-tail
		tail <- lines
		t.Fatalf("%s exited before it was ready: %v\n%s", cmd.Path, err, strings.Join(lines, "\n"))
	case <-time.After(30 * time.Second):
		lines := <-tail
		tail <- lines
		t.Fatalf("%s not ready after 30s:\n%s", cmd.Path, strings.Join(lines, "\n"))
	}
}

// promAPI queries a Prometheus server's HTTP API.
type promAPI struct {
	base   string
	client *http.Client
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// number returns the sample's value.
func (s promSample) number() float64 {
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// get calls an API endpoint and decodes its data into out.
func (p promAPI) get(path string, params url.Values, out any) error {
	resp, err := p.client.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: decoding the answer (HTTP %d): %w", path, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, out)
}

// query evaluates expr now; the result must be an instant vector.
func (p promAPI) query(expr string) ([]promSample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("%q gives a %s, not an instant vector", expr, data.ResultType)
	}
	var samples []promSample
	return samples, json.Unmarshal(data.Result, &samples)
}

// rpzPrimary answers as an authoritative primary of zone (an FQDN) holding
// records (master-file lines) beside its SOA, serial 1: the SOA to an SOA
// query, the zone in one message to an AXFR, REFUSED to anything else.
func rpzPrimary(t *testing.T, zone string, records ...string) dns.Handler {
	t.Helper()
	soa, err := dns.NewRR(zone + " 300 IN SOA ns." + zone + " admin." + zone + " 1 3600 600 86400 300")
	require.NoError(t, err)
	rrs := []dns.RR{soa}
	for _, r := range records {
		rr, err := dns.NewRR(r)
		require.NoError(t, err)
		rrs = append(rrs, rr)
	}
	rrs = append(rrs, soa)
	return dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		switch q := r.Question[0]; {
		case !strings.EqualFold(q.Name, zone):
			m.Rcode = dns.RcodeRefused
		case q.Qtype == dns.TypeSOA:
			m.Answer = []dns.RR{soa}
		case q.Qtype == dns.TypeAXFR:
			m.Answer = rrs
		default:
			m.Rcode = dns.RcodeRefused
		}
		_ = w.WriteMsg(m)
	})
}

// exchangeFrom sends one query for qname A from the loopback address from,
// waiting at most timeout.
func exchangeFrom(network, from, server, qname string, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: timeout}
	ip := net.ParseIP(from)
	if network == "tcp" {
		c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: timeout}
	} else {
		c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: ip}, Timeout: timeout}
	}
	m := new(dns.Msg)
	m.SetQuestion(qname, dns.TypeA)
	r, _, err := c.Exchange(m, server)
	return r, err
}

// TestMonitoringAgainstPrometheus runs dnsfence with traffic of every kind
// and a real Prometheus scraping it every second with alerts.yaml loaded,
// then checks that every dashboard query returns data, that the dashboard
// shows every dnsfence series, and that every alert rule evaluates without
// error, the ones this traffic must trigger included.
func TestMonitoringAgainstPrometheus(t *testing.T) {
	prometheus := testnet.NeedProgram(t, "prometheus", "prometheus")
	started := time.Now()

	upstream := serveUDPAndTCP(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		switch q := r.Question[0]; {
		case dns.IsSubDomain("fail.example.", q.Name):
			m.Rcode = dns.RcodeServerFailure
		case q.Qtype == dns.TypeA:
			rr, _ := dns.NewRR(q.Name + " 300 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	}))
	// A list from a URL, an RPZ zone by AXFR, and a certificate for DNS
	// over TLS that expires in a day: the dnsfence_source_* series (a zone
	// source's serial, transfers and NOTIFYs too) and dnsfence_tls_*
	// series exist.
	lists := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "capcut.com")
	}))
	t.Cleanup(lists.Close)
	primary := serveUDPAndTCP(t, rpzPrimary(t, "rpz.test.", "douyin.com.rpz.test. 300 IN CNAME ."))
	tlsDir := t.TempDir()
	certFile, keyFile, _ := newE2ECA(t, "monitoring CA").issue(t, tlsDir, "server", e2eServerName)
	// 127.0.0.0/30 is the government range, 127.0.0.4/31 other allowed
	// clients, 127.0.0.6 a client over its rate limit, 127.0.0.9 outside
	// allowed_clients (and not rate limited, so its REFUSED is not dropped).
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
listen_tls: ["127.0.0.1:0"]
tls: {cert: %q, key: %q}
upstreams: ["%s"]
http: "127.0.0.1:0"
allowed_clients: ["127.0.0.0/29"]
rate_limit: {rate: 1, burst: 1, exempt: ["127.0.0.0/30", "127.0.0.4/31", "127.0.0.8/29"]}
log: {queries: none}
sources: {cache_dir: %q}
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt", "%s/bytedance.txt", "axfr://%s/rpz.test"]
  - name: press-office
    clients: ["127.0.0.2/32"]
`, certFile, keyFile, upstream, filepath.Join(tlsDir, "cache"), lists.URL, primary),
		"lists/tiktok.txt": "tiktok.com\nbad..example\n",
	})
	var dnsAddr, httpAddr string
	startProcess(t, exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml")), func(line string) bool {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			switch m["msg"] {
			case "http endpoint listening":
				httpAddr, _ = m["address"].(string)
			case "listening":
				dnsAddr, _ = m["address"].(string)
			}
		}
		return dnsAddr != "" && httpAddr != ""
	})

	// A fresh probe asks a new name under qname each round: a cache miss,
	// so an upstream exchange, and a SERVFAIL not served from the cache.
	probes := []struct {
		name, network, from, qname string
		fresh                      bool
		rcode                      int
	}{
		{name: "blocked", network: "udp", from: "127.0.0.1", qname: "www.tiktok.com.", rcode: dns.RcodeNameError},
		{name: "forwarded, then cached", network: "udp", from: "127.0.0.5", qname: "www.example.org.", rcode: dns.RcodeSuccess},
		{name: "forwarded over TCP", network: "tcp", from: "127.0.0.5", qname: "www.example.net.", rcode: dns.RcodeSuccess},
		{name: "outside allowed_clients", network: "udp", from: "127.0.0.9", qname: "www.example.org.", rcode: dns.RcodeRefused},
		{name: "upstream SERVFAIL", network: "udp", from: "127.0.0.5", qname: "fail.example.", fresh: true, rcode: dns.RcodeServerFailure},
		{name: "forwarded, a fresh name", network: "udp", from: "127.0.0.5", qname: "example.org.", fresh: true, rcode: dns.RcodeSuccess},
	}
	qname := func(i int, qname string, fresh bool) string {
		if fresh {
			return fmt.Sprintf("q%d.%s", i, qname)
		}
		return qname
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			r, err := exchangeFrom(p.network, p.from, dnsAddr, qname(0, p.qname, p.fresh), 2*time.Second)
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeToString[p.rcode], dns.RcodeToString[r.Rcode])
			if p.rcode == dns.RcodeSuccess {
				require.Len(t, r.Answer, 1)
				assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			}
		})
	}
	limited := 0
	for range 3 {
		if r, err := exchangeFrom("tcp", "127.0.0.6", dnsAddr, "www.example.org.", 2*time.Second); err == nil && r.Rcode == dns.RcodeRefused {
			limited++
		}
	}
	assert.Positive(t, limited, "a client over rate 1 burst 1 is refused on TCP")
	_, err := exchangeFrom("tcp", "127.0.0.9", dnsAddr, "www.example.org.", 2*time.Second)
	assert.Error(t, err, "a TCP connection from outside allowed_clients is closed at accept")

	// Traffic goes on while Prometheus scrapes, so that every rate has data.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range 900 {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, p := range probes {
				_, _ = exchangeFrom(p.network, p.from, dnsAddr, qname(i+1, p.qname, p.fresh), 500*time.Millisecond)
			}
			_, _ = exchangeFrom("tcp", "127.0.0.6", dnsAddr, "www.example.org.", 500*time.Millisecond)
		}
	}()
	t.Cleanup(func() { close(stop); <-stopped })

	alertsFile, err := filepath.Abs(filepath.Join(monitoringDir, "alerts.yaml"))
	require.NoError(t, err)
	promDir := t.TempDir()
	promConfig := filepath.Join(promDir, "prometheus.yml")
	require.NoError(t, os.WriteFile(promConfig, []byte(fmt.Sprintf(`
global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: dnsfence
    static_configs: [{targets: [%q]}]
`, alertsFile, httpAddr)), 0o644))
	listening := regexp.MustCompile(`msg="Listening on".*address=(127\.0\.0\.1:\d+)`)
	var promAddr string
	startProcess(t, exec.Command(prometheus, "--config.file="+promConfig, "--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address=127.0.0.1:0", "--log.level=info"), func(line string) bool {
		if m := listening.FindStringSubmatch(line); m != nil {
			promAddr = m[1]
		}
		return promAddr != ""
	})
	api := promAPI{base: "http://" + promAddr, client: &http.Client{Timeout: 5 * time.Second}}
	t.Logf("Prometheus listening after %v", time.Since(started).Round(time.Millisecond))

	// Six successful scrapes: a rate over 10s has several samples.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		s, err := api.query(`sum_over_time(up{job="dnsfence"}[1m])`)
		require.NoError(c, err)
		require.Len(c, s, 1)
		assert.GreaterOrEqual(c, s[0].number(), 6.0)
	}, 40*time.Second, 250*time.Millisecond, "Prometheus did not scrape dnsfence six times")
	t.Logf("dnsfence scraped six times after %v", time.Since(started).Round(time.Millisecond))

	d, panels := loadDashboard(t)
	instance := httpAddr
	values := map[string]string{
		"job":             "dnsfence",
		"instance":        grafanaRegexValue(instance),
		"__rate_interval": "10s",
		"__interval":      "1s",
		"__range":         "1m",
	}
	t.Run("variables", func(t *testing.T) {
		want := map[string]string{"job": "dnsfence", "instance": instance}
		labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			m := labelValues.FindStringSubmatch(v.Definition)
			require.NotNil(t, m, "variable %s: %q", v.Name, v.Definition)
			match, err := expandVariables(m[1], values)
			require.NoError(t, err)
			var got []string
			require.NoError(t, api.get("/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {match}}, &got))
			assert.Contains(t, got, want[v.Name], "variable %s", v.Name)
		}
	})

	var exprs []string
	for _, p := range panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
			expr, err := expandVariables(tg.Expr, values)
			require.NoError(t, err)
			t.Run(p.Title+"/"+tg.RefID, func(t *testing.T) {
				assert.EventuallyWithT(t, func(c *assert.CollectT) {
					s, err := api.query(expr)
					require.NoError(c, err)
					require.NotEmpty(c, s, "no data: %s", expr)
					assert.True(c, slices.ContainsFunc(s, func(s promSample) bool {
						v := s.number()
						return !math.IsNaN(v) && !math.IsInf(v, 0)
					}), "no sample is a number: %s: %v", expr, s)
				}, 15*time.Second, 250*time.Millisecond)
			})
		}
	}

	var names []struct {
		Name string `json:"__name__"`
	}
	require.NoError(t, api.get("/api/v1/series", url.Values{"match[]": {`{__name__=~"dnsfence_.+", job="dnsfence"}`}}, &names))
	exported := map[string]bool{}
	for _, n := range names {
		exported[n.Name] = true
	}
	require.Greater(t, len(exported), 20)
	all := strings.Join(exprs, "\n")
	// A name kept for old alerts, beside the one that replaced it: the
	// dashboard shows the new one.
	deprecated := map[string]string{
		"dnsfence_tls_certificate_expiry_seconds": "dnsfence_tls_certificate_expiry_timestamp_seconds",
	}
	t.Run("every series on the dashboard", func(t *testing.T) {
		for name := range exported {
			if now, ok := deprecated[name]; ok {
				assert.NotContains(t, all, name+"{", "a panel shows the deprecated %s", name)
				assert.True(t, exported[now], "%s deprecated for %s, which is not exported", name, now)
				continue
			}
			base := strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
			assert.True(t, strings.Contains(all, name+"{") || strings.Contains(all, base+"_bucket{"),
				"no panel shows %s", name)
		}
	})

	// What each alert's expression gives against this traffic: "fires" (a
	// series for this instance), "quiet" (nothing), or "either".
	wantAlerts := map[string]string{
		"DnsfenceDown":               "quiet",
		"DnsfenceAbsent":             "quiet",
		"DnsfenceNoGovernmentRange":  "quiet",
		"DnsfenceUpstreamsDown":      "either", // the SERVFAIL marks the upstream down, the next answer up
		"DnsfenceUpstreamDown":       "quiet",
		"DnsfenceServfailRatio":      "fires", // one SERVFAIL in every seven answers
		"DnsfenceBlockedRateDropped": "quiet", // no day of history
		"DnsfenceReloadFailing":      "quiet",
		"DnsfenceReloadHeld":         "quiet",
		"DnsfenceRateLimiting":       "fires", // 127.0.0.6
		"DnsfenceFilesNotWatched":    "quiet",
		"DnsfenceUDPDrops":           "quiet",
		"DnsfenceSkippedLines":       "fires", // bad..example
		// The test's certificate expires in a day.
		"DnsfenceCertificateExpiresSoon": "fires",
		"DnsfenceCertificateExpiring":    "fires",
		"DnsfenceSourceNoCopy":           "quiet",
		"DnsfenceSourceStale":            "quiet",
		"DnsfenceSourceHeld":             "quiet",
		"DnsfenceSourceDiskCopyFailing":  "quiet",
	}
	rules := loadAlerts(t)
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			want, ok := wantAlerts[r.Alert]
			require.True(t, ok, "add %s to wantAlerts", r.Alert)
			for _, name := range regexp.MustCompile(`\bdnsfence_\w+`).FindAllString(r.Expr, -1) {
				assert.True(t, exported[name], "%s is not a series dnsfence exports", name)
			}
			assert.EventuallyWithT(t, func(c *assert.CollectT) {
				s, err := api.query(r.Expr)
				require.NoError(c, err)
				switch want {
				case "fires":
					require.Len(c, s, 1)
					assert.Equal(c, instance, s[0].Metric["instance"])
					assert.Equal(c, "dnsfence", s[0].Metric["job"])
				case "quiet":
					assert.Empty(c, s)
				}
			}, 15*time.Second, 250*time.Millisecond)
		})
	}

	// Prometheus itself evaluates the loaded rules without error.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		require.NoError(c, api.get("/api/v1/rules", nil, &data))
		loaded := 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				loaded++
				assert.Equal(c, "ok", r.Health, "rule %s: %s", r.Name, r.LastError)
				assert.Empty(c, r.LastError, "rule %s", r.Name)
			}
		}
		assert.Equal(c, len(rules), loaded)
	}, 15*time.Second, 250*time.Millisecond)
	t.Logf("took %v", time.Since(started).Round(time.Millisecond))
}
