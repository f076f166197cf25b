package resolver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// seriesConfig blocks the list file {{list}} for 127.0.0.1 and forwards to
// {{upstreams}}, in order.
const seriesConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
upstream_strategy: ordered
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
reload: {debounce: 5ms}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s"]
`

// labelValues returns, for each series of the metrics whose name starts
// with prefix, the value of its label, once each.
func labelValues(t *testing.T, reg *prometheus.Registry, prefix, label string) map[string]bool {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	values := map[string]bool{}
	for _, mf := range mfs {
		if len(mf.GetName()) < len(prefix) || mf.GetName()[:len(prefix)] != prefix {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					values[l.GetValue()] = true
				}
			}
		}
	}
	return values
}

// TestRemovedListsAndUpstreamsLeaveNoSeries: the series of a block list
// or an upstream that a reload took out of the configuration go with it,
// so that /metrics (and the memory behind it) stays the size of the
// configuration however many reloads renamed lists or moved upstreams (a
// list file named by date, rotated daily by config management; upstreams
// moved with a provider). Before the fix every list and upstream ever
// configured kept its dnsfence_blocked_total series, its 14 error and 4
// retry series and its histogram until a restart: 30 reloads left 31
// lists and 32 upstreams in /metrics, a soak of 800 such reloads 812
// dnsfence_blocked_total series and 1 MB more heap (prometheus/prometheus
// #19131 and kubernetes/ingress-nginx #2716 fixed the same).
func TestRemovedListsAndUpstreamsLeaveNoSeries(t *testing.T) {
	up := startUpstream(t, nil)
	list := func(i int) string { return fmt.Sprintf("v%d.txt", i) }
	f := startFence(t, fmt.Sprintf(seriesConfig, list(0)), map[string]string{list(0): "v0.example\n"}, up.addr, closedPort(t))
	path := filepath.Join(f.dir, "dnsfence.yaml")
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	const reloads = 30
	for i := 1; i <= reloads; i++ {
		require.NoError(t, os.WriteFile(filepath.Join(f.dir, list(i)), []byte(fmt.Sprintf("v%d.example\n", i)), 0o644))
		text := strings.Replace(fmt.Sprintf(seriesConfig, list(i)), "{{upstreams}}", fmt.Sprintf("[%q, %q]", up.addr, closedPort(t)), 1)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		require.NoError(t, r.Reload(true)) // SIGHUP: a list taken out of a policy is held otherwise
		// A query blocked by the list, and one forwarded (the forwarder
		// probes both upstreams at its first query).
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.1", fmt.Sprintf("www.v%d.example.", i)))
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.1", fmt.Sprintf("q%d.example.org.", i)))
	}
	upstreams := f.handler.Snapshot().Forwarder().Upstreams()
	require.Len(t, upstreams, 2)
	// A retired forwarder's series go once its transports close, when
	// its last exchange (the probe of the upstream taken out) has ended.
	require.Eventually(t, func() bool {
		return len(labelValues(t, f.registry, "dnsfence_upstream_", "upstream")) == len(upstreams)
	}, 10*time.Second, 10*time.Millisecond, "upstreams in /metrics: %v, configured: %v",
		labelValues(t, f.registry, "dnsfence_upstream_", "upstream"), upstreams)
	for _, u := range upstreams {
		assert.True(t, labelValues(t, f.registry, "dnsfence_upstream_errors_total", "upstream")[u], "%s: its series stay", u)
	}
	configured := map[string]bool{}
	for _, p := range f.handler.Snapshot().Policies {
		for _, l := range p.Block {
			configured[l.File()] = true
		}
	}
	require.True(t, configured[filepath.Join(f.dir, list(reloads))])
	assert.Equal(t, configured, labelValues(t, f.registry, "dnsfence_blocked_total", "list"), "lists in dnsfence_blocked_total")
	assert.Contains(t, scrape(t, f.registry), fmt.Sprintf(`dnsfence_blocked_total{list=%q,policy="gov",shadow="false"} 1`,
		filepath.Join(f.dir, list(reloads))), "the series of the list configured counts on")
}

// TestBlockedSeriesOfAListTakenOutStayGone: a query still deciding on the
// snapshot before a reload (waiting on the upstream, its answer's CNAME
// chain then blocked by a list the reload took out) does not bring back
// the dnsfence_blocked_total series the reload deleted. Before the fix it
// made it anew, and the series of a list no longer configured stayed in
// /metrics until the next reload, for days if none came.
func TestBlockedSeriesOfAListTakenOutStayGone(t *testing.T) {
	asked, release := make(chan struct{}, 1), make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "cdn.example.org." {
			asked <- struct{}{}
			<-release
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60},
				Target: "www.v0.example."})
		}
		return m
	})
	list := func(i int) string { return fmt.Sprintf("v%d.txt", i) }
	files := map[string]string{list(0): "v0.example\n", list(1): "v1.example\n"}
	f := startFence(t, fmt.Sprintf(seriesConfig, list(0)), files, up.addr)
	path := filepath.Join(f.dir, "dnsfence.yaml")
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	old := filepath.Join(f.dir, list(0))
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.1", "www.v0.example."))
	require.True(t, labelValues(t, f.registry, "dnsfence_blocked_total", "list")[old])

	rcode := make(chan int, 1)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("cdn.example.org.", dns.TypeA)
		resp, _, err := new(dns.Client).Exchange(q, f.addr)
		if err != nil {
			rcode <- -1
			return
		}
		rcode <- resp.Rcode
	}()
	select {
	case <-asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the query did not reach the upstream")
	}
	text := strings.Replace(fmt.Sprintf(seriesConfig, list(1)), "{{upstreams}}", fmt.Sprintf("[%q]", up.addr), 1)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	require.NoError(t, r.Reload(true))
	require.False(t, labelValues(t, f.registry, "dnsfence_blocked_total", "list")[old], "the reload deleted the series of %s", old)
	close(release)
	require.Equal(t, dns.RcodeNameError, <-rcode, "decided on the snapshot it began with: blocked by %s", old)

	assert.False(t, labelValues(t, f.registry, "dnsfence_blocked_total", "list")[old],
		"the series of %s, which the configuration no longer blocks with", old)
	assert.True(t, labelValues(t, f.registry, "dnsfence_blocked_total", "list")[filepath.Join(f.dir, list(1))])
}
