package resolver

import (
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// observed is a logger that writes to the test's log and keeps the lines
// at info and above for the test to look at.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)), logs
}

// auditLine is the last "query" line about qname.
func auditLine(logs *observer.ObservedLogs, qname string) (map[string]any, bool) {
	var found map[string]any
	for _, e := range logs.FilterMessage("query").All() {
		if f := e.ContextMap(); f[logQName] == qname {
			found = f
		}
	}
	return found, found != nil
}

const rpzHead = "$ORIGIN rpz.example.gov.\n$TTL 300\n@ SOA localhost. root.localhost. 7 3600 600 86400 60\n  NS localhost.\n"

const rpzActionsConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: blocked}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["capcut.txt", "policy.rpz"]
  - name: gov-refusing
    clients: ["127.0.0.2/32"]
    block: ["policy.rpz"]
    action: refused
  - name: shadow
    clients: ["127.0.0.4/32"]
    block: ["policy.rpz"]
    action: log
`

var rpzActionsFiles = map[string]string{
	"capcut.txt": "capcut.com\n",
	"policy.rpz": rpzHead + `tiktok.com CNAME .
*.tiktok.com CNAME .
douyin.com CNAME *.
*.douyin.com CNAME *.
bytedance.com CNAME rpz-drop.
press.tiktok.com CNAME rpz-passthru.
newsroom.capcut.com CNAME rpz-passthru.
`,
}

// TestRPZActions: each action of an RPZ trigger, end to end on UDP and
// TCP: NXDOMAIN (the policy's blocked answer), NODATA (NOERROR, no
// records, the SOA), passthru (forwarded, and it beats a block of a list
// before it), drop (no answer at all, counted and audited as dropped).
func TestRPZActions(t *testing.T) {
	up := startUpstream(t, nil)
	log, logs := observed(t)
	f := startFenceLog(t, log, rpzActionsConfig, rpzActionsFiles, up.addr)

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := ask(t, f.addr, "127.0.0.1", network, question("www.tiktok.com.", dns.TypeA, true))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "a wildcard trigger CNAME .")
			require.Len(t, r.Ns, 1)
			assert.Equal(t, "tiktok.com.", r.Ns[0].Header().Name)

			for _, q := range []struct {
				name  string
				qtype uint16
			}{{"douyin.com.", dns.TypeAAAA}, {"a.b.douyin.com.", dns.TypeTXT}, {"douyin.com.", dns.TypeA}} {
				r := ask(t, f.addr, "127.0.0.1", network, question(q.name, q.qtype, true))
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: CNAME *. is NODATA", q.name)
				assert.Empty(t, r.Answer, q.name)
				require.Len(t, r.Ns, 1, q.name)
				soa, ok := r.Ns[0].(*dns.SOA)
				require.True(t, ok, "the SOA for negative caching (RFC 2308 §2.2)")
				assert.Equal(t, "douyin.com.", soa.Hdr.Name)
				assert.Equal(t, uint32(60), soa.Minttl)
				assert.True(t, r.RecursionAvailable)
				assert.False(t, r.Authoritative)
				require.NotNil(t, ede(r))
				assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode)
			}
			// Without EDNS too (the packed answer).
			r = ask(t, f.addr, "127.0.0.1", network, question("douyin.com.", dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.Empty(t, r.Answer)
			assert.Len(t, r.Ns, 1)
			assert.Nil(t, r.IsEdns0())

			for _, name := range []string{"press.tiktok.com.", "newsroom.capcut.com."} {
				r := ask(t, f.addr, "127.0.0.1", network, question(name, dns.TypeA, true))
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: passthru", name)
				require.Len(t, r.Answer, 1, name)
				assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			}
			r = ask(t, f.addr, "127.0.0.1", network, question("www.capcut.com.", dns.TypeA, true))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "the plain list still blocks below its entry")

			_, err := exchangeTimeout(f.addr, "127.0.0.1", network, question("bytedance.com.", dns.TypeA, true), 700*time.Millisecond)
			assert.Error(t, err, "rpz-drop: no answer at all")
		})
	}

	// The policy's action for `CNAME .`; the trigger's own for the others.
	r := ask(t, f.addr, "127.0.0.2", "udp", question("tiktok.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeRefused, r.Rcode)
	r = ask(t, f.addr, "127.0.0.2", "udp", question("douyin.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Empty(t, r.Answer)
	_, err := exchangeTimeout(f.addr, "127.0.0.2", "udp", question("bytedance.com.", dns.TypeA, true), 700*time.Millisecond)
	assert.Error(t, err)

	// Shadow mode forwards every action, and records it.
	for _, name := range []string{"bytedance.com.", "douyin.com."} {
		r = ask(t, f.addr, "127.0.0.4", "udp", question(name, dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, name)
		assert.Len(t, r.Answer, 1, "%s: forwarded in shadow mode", name)
	}

	// Upstream saw the passthru names and the shadow client's two
	// queries, nothing blocked.
	var sent []string
	for _, q := range up.queries() {
		sent = append(sent, q.msg.Question[0].Name+" "+dns.TypeToString[q.msg.Question[0].Qtype])
	}
	assert.ElementsMatch(t, []string{"press.tiktok.com. A", "newsroom.capcut.com. A", "bytedance.com. A", "douyin.com. A"},
		slices.Compact(slices.Sorted(slices.Values(sent))))
	dropped, _ := metricValue(t, f.registry, "dnsfence_queries_total", "transport", "udp", "result", ResultDropped)
	assert.Equal(t, 2.0, dropped)
	dropped, _ = metricValue(t, f.registry, "dnsfence_queries_total", "transport", "tcp", "result", ResultDropped)
	assert.Equal(t, 1.0, dropped)
	blocked, _ := metricValue(t, f.registry, "dnsfence_blocked_total", "policy", "gov", "list", f.dir+"/policy.rpz", "shadow", "false")
	assert.Equal(t, 2.0*6, blocked, "NXDOMAIN, 3 NODATA, NODATA without EDNS and drop, on each transport")

	require.Eventually(t, func() bool { _, ok := auditLine(logs, "bytedance.com."); return ok }, 2*time.Second, 10*time.Millisecond)
	var drop, shadow map[string]any
	for _, e := range logs.FilterMessage("query").All() {
		if f := e.ContextMap(); f[logQName] == "bytedance.com." {
			switch f[logClient] {
			case "127.0.0.1":
				drop = f
			case "127.0.0.4":
				shadow = f
			}
		}
	}
	require.NotNil(t, drop)
	assert.Equal(t, ResultDropped, drop[logResult])
	assert.Equal(t, "bytedance.com", drop[logEntry])
	assert.Equal(t, "bytedance.com.rpz.example.gov.", drop[logOwner])
	assert.Equal(t, "drop", drop[logAction])
	assert.EqualValues(t, 9, drop[logListLine])
	assert.NotContains(t, drop, logRcode, "no answer, no RCODE")
	require.NotNil(t, shadow)
	assert.Equal(t, true, shadow[logShadow])
	assert.Equal(t, ResultForwarded, shadow[logResult])
}

// TestRPZNODATAForAClientNamedByECS: the NODATA of an RPZ `CNAME *.`
// trigger for a client a trusted forwarder names by ECS, whose answer
// echoes the ECS and so is built as a message (blockedReply), not packed:
// NOERROR, no records, the SOA of the trigger (RFC 2308 §2.2) and EDE 15,
// as the packed answer has, whatever the policy's action.
func TestRPZNODATAForAClientNamedByECS(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(rpzActionsConfig, "log: {queries: blocked}", "log: {queries: blocked}\ntrusted_proxies: [\"127.0.0.2/32\"]", 1)
	f := startFence(t, cfg, rpzActionsFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := ask(t, f.addr, "127.0.0.2", network, withECS(question("a.douyin.com.", dns.TypeA, true), "127.0.0.1/32"))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, dns.RcodeToString[r.Rcode])
			assert.Empty(t, r.Answer)
			require.Len(t, r.Ns, 1)
			soa, ok := r.Ns[0].(*dns.SOA)
			require.True(t, ok, "the SOA for negative caching")
			assert.Equal(t, "douyin.com.", soa.Hdr.Name)
			assert.Equal(t, uint32(60), soa.Minttl)
			require.NotNil(t, findECS(r), "the ECS echoed: the answer was built as a message")
			require.NotNil(t, ede(r))
			assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode)
		})
	}
	assert.Zero(t, up.count.Load(), "nothing forwarded")
}

// exchangeTimeout is exchange with a client timeout.
func exchangeTimeout(server, from, network string, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: timeout}
	if from != "" {
		c.Dialer = localDialer(network, from)
	}
	r, _, err := c.Exchange(m, server)
	return r, err
}

const respIPConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: blocked}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["tiktok.txt", "policy.rpz"]
    allow: ["allow.txt"]
  - name: press-office
    clients: ["127.0.0.3/32"]
  - name: shadow
    clients: ["127.0.0.4/32"]
    block: ["policy.rpz"]
    action: log
`

var respIPFiles = map[string]string{
	"tiktok.txt": "tiktok.com\n",
	"allow.txt":  "allowed.example.net\n",
	"policy.rpz": rpzHead + `24.0.100.51.198.rpz-ip CNAME .
32.9.100.51.198.rpz-ip CNAME rpz-passthru.
48.zz.bad.db8.2001.rpz-ip CNAME .
`,
}

// respIPAnswer answers each test name with addresses in or out of the
// listed prefixes.
func respIPAnswer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	switch q.Name {
	case "cdn.example.net.", "allowed.example.net.", "tiktok.com.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN A 198.51.100.7", q.Name))
	case "v6.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN AAAA 2001:db8:bad::1", q.Name))
	case "svc.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN HTTPS 1 . alpn=h2 ipv4hint=192.0.2.1,198.51.100.8", q.Name))
	case "v6hint.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN SVCB 1 svc.example.org. ipv6hint=2001:db8:bad::53", q.Name))
	case "chain.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN CNAME edge.example.org.", q.Name),
			mustRR("edge.example.org. 300 IN A 198.51.100.66"))
	case "pass.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN A 198.51.100.9", q.Name), mustRR("%s 300 IN A 198.51.100.7", q.Name))
	default:
		m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.1", q.Name))
	}
	return m
}

// TestResponseIPTriggers: an upstream answers names no list holds with
// addresses inside a listed prefix; the government client gets the
// blocked answer (A, AAAA, HTTPS and SVCB address hints, behind a CNAME,
// from the cache too), the press office the plain answer; a passthru
// prefix and an allowed name let the answer stand; a listed name is still
// never sent upstream; the audit line names the address and the prefix.
func TestResponseIPTriggers(t *testing.T) {
	up := startUpstream(t, respIPAnswer)
	log, logs := observed(t)
	f := startFenceLog(t, log, respIPConfig, respIPFiles, up.addr)

	// Asked by the press office first: the cached answer is inspected
	// for the government client as a fresh one is.
	r := ask(t, f.addr, "127.0.0.3", "udp", question("cdn.example.net.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "198.51.100.7", r.Answer[0].(*dns.A).A.String())

	for _, tc := range []struct {
		name    string
		qtype   uint16
		blocked bool
	}{
		{"cdn.example.net.", dns.TypeA, true},
		{"v6.example.net.", dns.TypeAAAA, true},
		{"svc.example.net.", dns.TypeHTTPS, true},
		{"v6hint.example.net.", dns.TypeSVCB, true},
		{"chain.example.net.", dns.TypeA, true},
		{"pass.example.net.", dns.TypeA, false},
		{"allowed.example.net.", dns.TypeA, false},
		{"www.example.net.", dns.TypeA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				r := ask(t, f.addr, "127.0.0.1", network, question(tc.name, tc.qtype, true))
				if !tc.blocked {
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, network)
					assert.NotEmpty(t, r.Answer, network)
					continue
				}
				assert.Equal(t, dns.RcodeNameError, r.Rcode, network)
				assert.Empty(t, r.Answer, network)
				require.Len(t, r.Ns, 1, network)
				assert.Equal(t, tc.name, r.Ns[0].Header().Name, "the SOA sits at the question")
				require.NotNil(t, ede(r))
				assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode)
				assert.Contains(t, ede(r).ExtraText, "policy.rpz")
			}
			r := ask(t, f.addr, "127.0.0.3", "udp", question(tc.name, tc.qtype, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "other clients get the plain answer")
			assert.NotEmpty(t, r.Answer)
		})
	}

	r = ask(t, f.addr, "127.0.0.1", "udp", question("tiktok.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	for _, q := range up.queries() {
		assert.NotEqual(t, "tiktok.com.", q.msg.Question[0].Name, "a listed name is never sent upstream")
	}

	r = ask(t, f.addr, "127.0.0.4", "udp", question("cdn.example.net.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "shadow mode forwards")
	require.Eventually(t, func() bool {
		for _, e := range logs.FilterMessage("query").All() {
			if e.ContextMap()[logClient] == "127.0.0.4" {
				return true
			}
		}
		return false
	}, 2*time.Second, 10*time.Millisecond)
	for _, e := range logs.FilterMessage("query").All() {
		fields := e.ContextMap()
		switch {
		case fields[logClient] == "127.0.0.4":
			assert.Equal(t, true, fields[logShadow])
			assert.Equal(t, "198.51.100.7", fields[logVia])
			assert.Equal(t, "198.51.100.0/24", fields[logEntry])
		case fields[logQName] == "v6.example.net.":
			assert.Equal(t, "2001:db8:bad::1", fields[logVia], "the address")
			assert.Equal(t, "2001:db8:bad::/48", fields[logEntry], "the prefix")
			assert.Equal(t, "48.zz.bad.db8.2001.rpz-ip.rpz.example.gov.", fields[logOwner])
		case fields[logQName] == "svc.example.net.":
			assert.Equal(t, "198.51.100.8", fields[logVia])
		}
	}
	line, ok := auditLine(logs, "chain.example.net.")
	require.True(t, ok)
	assert.Equal(t, "198.51.100.66", line[logVia])
	assert.Equal(t, ResultBlocked, line[logResult])

	// `dnsfence explain -resolve` says the same, naming the prefix.
	snap := f.handler.Snapshot()
	e := snap.Explain(netipMustParse("127.0.0.1"), "cdn.example.net.", dns.TypeA)
	resp, _, err := snap.Forwarder().Forward(t.Context(), question("cdn.example.net.", dns.TypeA, false), false)
	require.NoError(t, err)
	snap.ExplainAnswer(&e, resp)
	assert.Equal(t, ResultBlocked, e.Result)
	assert.Contains(t, e.String(), "198.51.100.7 blocked by "+f.dir+"/policy.rpz:5 owner 24.0.100.51.198.rpz-ip.rpz.example.gov.: 198.51.100.0/24")
}

// localDialer dials from the loopback address from.
func localDialer(network, from string) *net.Dialer {
	ip := net.ParseIP(from)
	if network == "tcp" {
		return &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	}
	return &net.Dialer{LocalAddr: &net.UDPAddr{IP: ip}}
}

var respIPPrecedenceFiles = map[string]string{
	"policy.rpz": rpzHead + `16.0.0.64.100.rpz-ip CNAME rpz-passthru.
32.7.113.0.203.rpz-ip CNAME .
32.20.113.0.203.rpz-ip CNAME rpz-passthru.
8.0.0.0.10.rpz-ip CNAME .
16.0.0.16.172.rpz-ip CNAME *.
24.0.2.0.192.rpz-ip CNAME .
32.9.2.0.192.rpz-ip CNAME rpz-passthru.
128.1.zz.db8.2001.rpz-ip CNAME .
`,
}

// TestResponseIPPrecedence: when the addresses of one answer fall under
// several response-IP triggers of one zone, the trigger with the longest
// prefix decides for the whole answer, and of two as long the one holding
// the smaller address, an IPv4 prefix counting as the IPv4-mapped prefix
// it stands for (draft-vixie-dnsop-dns-rpz, Precedence Rules; BIND ARM,
// RPZ rules 4 and 5; BIND 9.18 answers each of these as asserted), in
// whatever order the upstream gives the records. A passthru for one
// address does not let through another that a longer prefix blocks, and a
// shorter prefix's action does not override a longer one's.
func TestResponseIPPrecedence(t *testing.T) {
	records := map[string][]string{
		"passthru-short.example.net.": {"A 100.64.1.1", "A 203.0.113.7"},
		"block-long.example.net.":     {"A 203.0.113.7", "A 100.64.1.1"},
		"nxdomain-short.example.net.": {"A 10.1.2.3", "A 172.16.5.5"},
		"nodata-long.example.net.":    {"A 172.16.5.5", "A 10.1.2.3"},
		"passthru-long.example.net.":  {"A 192.0.2.5", "A 192.0.2.9"},
		"tie-smaller-block.example.":  {"A 203.0.113.20", "A 203.0.113.7"},
		"v6-longer-than-v4.example.":  {"A 100.64.1.1", "AAAA 2001:db8::1"},
		"no-trigger-for-any.example.": {"A 198.18.0.1", "A 198.18.0.2"},
		"passthru-only-tie.example.":  {"A 203.0.113.20", "A 203.0.113.40"},
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		for _, rec := range records[r.Question[0].Name] {
			m.Answer = append(m.Answer, mustRR("%s 300 IN %s", r.Question[0].Name, rec))
		}
		return m
	})
	log, logs := observed(t)
	f := startFenceLog(t, log, rpzActionsConfig, map[string]string{"capcut.txt": "capcut.com\n", "policy.rpz": respIPPrecedenceFiles["policy.rpz"]}, up.addr)

	for _, tc := range []struct {
		name  string
		rcode int    // -1: forwarded, the upstream's records
		via   string // the address whose trigger decided
	}{
		{"passthru-short.example.net.", dns.RcodeNameError, "203.0.113.7"},
		{"block-long.example.net.", dns.RcodeNameError, "203.0.113.7"},
		{"nxdomain-short.example.net.", dns.RcodeSuccess, "172.16.5.5"},
		{"nodata-long.example.net.", dns.RcodeSuccess, "172.16.5.5"},
		{"passthru-long.example.net.", -1, ""},
		{"tie-smaller-block.example.", dns.RcodeNameError, "203.0.113.7"},
		{"v6-longer-than-v4.example.", dns.RcodeNameError, "2001:db8::1"},
		{"no-trigger-for-any.example.", -1, ""},
		{"passthru-only-tie.example.", -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp"} {
				r := ask(t, f.addr, "127.0.0.1", network, question(tc.name, dns.TypeANY, true))
				if tc.rcode < 0 {
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, network)
					assert.Len(t, r.Answer, len(records[tc.name]), network)
					continue
				}
				assert.Equal(t, tc.rcode, r.Rcode, network)
				assert.Empty(t, r.Answer, network)
				require.Len(t, r.Ns, 1, network)
				assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype, network)
				require.NotNil(t, ede(r), network)
				assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode, network)
			}
			if tc.via != "" {
				line, ok := auditLine(logs, tc.name)
				require.True(t, ok)
				assert.Equal(t, tc.via, line[logVia])
			}
		})
	}

	// `dnsfence explain -resolve` reaches the same verdict, and says why
	// the passthru address did not let the answer stand.
	snap := f.handler.Snapshot()
	e := snap.Explain(netipMustParse("127.0.0.1"), "passthru-short.example.net.", dns.TypeA)
	resp, _, err := snap.Forwarder().Forward(t.Context(), question("passthru-short.example.net.", dns.TypeA, false), false)
	require.NoError(t, err)
	snap.ExplainAnswer(&e, resp)
	assert.Equal(t, ResultBlocked, e.Result)
	assert.Contains(t, e.String(), "100.64.1.1 passthru by "+f.dir+"/policy.rpz:5 owner 16.0.0.64.100.rpz-ip.rpz.example.gov.: 100.64.0.0/16, outranked")
	assert.Contains(t, e.String(), "203.0.113.7 blocked by "+f.dir+"/policy.rpz:6")
}

// TestExplainOutrankedOnlyByAddress: explain -resolve marks a passthru
// address "outranked" only when a response-IP trigger of its zone blocked
// the answer. An answer blocked by a name of the same zone that its alias
// chain reaches (a QNAME trigger, which RPZ ranks above every response-IP
// trigger of the zone) was said to be blocked because "a longer prefix of
// the zone holds another address of the answer", of an answer with one
// address and no such prefix.
func TestExplainOutrankedOnlyByAddress(t *testing.T) {
	records := []string{
		"www.chain.example. 300 IN CNAME evil.chain.example.",
		"evil.chain.example. 300 IN CNAME edge.chain.example.",
		"edge.chain.example. 300 IN A 100.64.1.1",
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		for _, rec := range records {
			m.Answer = append(m.Answer, mustRR("%s", rec))
		}
		return m
	})
	log, _ := observed(t)
	f := startFenceLog(t, log, rpzActionsConfig, map[string]string{"capcut.txt": "capcut.com\n",
		"policy.rpz": rpzHead + "evil.chain.example CNAME .\n16.0.0.64.100.rpz-ip CNAME rpz-passthru.\n"}, up.addr)

	r := ask(t, f.addr, "127.0.0.1", "udp", question("www.chain.example.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "the chain reaches a blocked name")

	snap := f.handler.Snapshot()
	e := snap.Explain(netipMustParse("127.0.0.1"), "www.chain.example.", dns.TypeA)
	resp, _, err := snap.Forwarder().Forward(t.Context(), question("www.chain.example.", dns.TypeA, false), false)
	require.NoError(t, err)
	snap.ExplainAnswer(&e, resp)
	assert.Equal(t, ResultBlocked, e.Result)
	require.Len(t, e.Hops, 3)
	assert.False(t, e.Hops[2].Outranked, "blocked by a name, not by a longer prefix")
	assert.NotContains(t, e.String(), "outranked")
}

// TestRPZRelativePassthruTarget: in a zone file whose SOA comes first
// written in full, `CNAME rpz-passthru` without its trailing dot is, to
// BIND, a CNAME to rpz-passthru.rpz.example.gov., which rewrites the
// answer, not the passthru that lets it through. Since owners written
// relative are read below that SOA (22f1d9b), dnsfence took the line as a
// passthru for newsroom.capcut.com, which beats the block of every list:
// capcut.txt blocked it, and it was forwarded (before, the line was
// refused as outside the zone, and it stayed blocked). The line is
// reported and skipped; the name stays blocked, over UDP and TCP.
func TestRPZRelativePassthruTarget(t *testing.T) {
	up := startUpstream(t, nil)
	f, warnings := startFenceWarned(t, rpzActionsConfig, map[string]string{
		"capcut.txt": "capcut.com\n",
		"policy.rpz": "rpz.example.gov. 300 IN SOA localhost. root.localhost. 7 3600 600 86400 60\n" +
			"tiktok.com CNAME .\n" +
			"newsroom.capcut.com CNAME rpz-passthru\n",
	}, up.addr)
	if assert.Len(t, warnings, 1, "the line is reported") {
		assert.Contains(t, warnings[0], "policy.rpz:3: newsroom.capcut.com.rpz.example.gov.: rpz-passthru written without its trailing dot")
	}
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, f.addr, "127.0.0.1", network, question("newsroom.capcut.com.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s: capcut.txt blocks it; the line is no passthru", network)
		r = ask(t, f.addr, "127.0.0.1", network, question("tiktok.com.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s: the zone's owners written relative are below its SOA", network)
	}
}

// TestRPZUnnamedZoneOwnersInFullBlock: in a zone file that does not name
// its zone (`@ SOA` with no $ORIGIN), an owner written in full is read as
// written, a trigger for the name it spells, and reported as kept, not
// skipped: bytedance.com. CNAME . blocked bytedance.com before dnsfence
// learnt to doubt such owners (BIND, given the zone's name by named.conf,
// reads it otherwise), and must still (an upgrade must not unblock it); the
// report is a warning, not a skipped line in dnsfence_skipped_lines. A
// passthru written so is skipped, and the name it meant stays blocked.
func TestRPZUnnamedZoneOwnersInFullBlock(t *testing.T) {
	up := startUpstream(t, nil)
	f, warnings := startFenceWarned(t, rpzActionsConfig, map[string]string{
		"capcut.txt": "capcut.com\n",
		"policy.rpz": "$TTL 300\n@ SOA localhost. root.localhost. 7 3600 600 86400 60\n  NS localhost.\n" +
			"tiktok.com CNAME .\n" +
			"bytedance.com. CNAME .\n" +
			"newsroom.capcut.com. CNAME rpz-passthru.\n",
	}, up.addr)
	require.Len(t, warnings, 2, "%q", warnings)
	assert.Contains(t, warnings[0], "policy.rpz:5: bytedance.com.: owner name written in full")
	assert.Contains(t, warnings[0], "not skipped: read as written, a trigger for bytedance.com, so that it blocks")
	assert.Contains(t, warnings[1], "policy.rpz:6: newsroom.capcut.com.: owner name written in full")
	assert.NotContains(t, warnings[1], "not skipped")
	skipped, _ := metricValue(t, f.registry, "dnsfence_skipped_lines", "file", filepath.Join(f.dir, "policy.rpz"))
	assert.Equal(t, 1.0, skipped, "the passthru is skipped; the block is kept")
	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"tiktok.com.", "bytedance.com.", "newsroom.capcut.com."} {
			r := ask(t, f.addr, "127.0.0.1", network, question(name, dns.TypeA, true))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s %s", network, name)
		}
	}
}

// TestRPZAuditActionIsTheAnswers: the audit line's action is the RPZ
// trigger's own only where that decides the answer (CNAME *. NODATA,
// rpz-drop.). A CNAME . trigger, for a name or a response address, blocks
// with the policy's action, REFUSED or 0.0.0.0 here, and its line must not
// say NXDOMAIN beside the answer the client got.
func TestRPZAuditActionIsTheAnswers(t *testing.T) {
	up := startUpstream(t, nil) // every name 192.0.2.1
	log, logs := observed(t)
	f := startFenceLog(t, log, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: blocked}
policies:
  - name: gov-refusing
    clients: ["127.0.0.2/32"]
    block: ["policy.rpz"]
    action: refused
  - name: gov-null
    clients: ["127.0.0.3/32"]
    block: ["policy.rpz"]
    action: null
`, map[string]string{"policy.rpz": rpzHead + `tiktok.com CNAME .
*.tiktok.com CNAME .
douyin.com CNAME *.
32.1.2.0.192.rpz-ip CNAME .
`}, up.addr)

	for _, tc := range []struct {
		name, from, qname string
		rcode             int
		action            string // "" for none
	}{
		{name: "name trigger, refused", from: "127.0.0.2", qname: "tiktok.com.", rcode: dns.RcodeRefused},
		{name: "wildcard trigger, null", from: "127.0.0.3", qname: "www.tiktok.com.", rcode: dns.RcodeSuccess},
		{name: "response-IP trigger, null", from: "127.0.0.3", qname: "cdn.example.net.", rcode: dns.RcodeSuccess},
		{name: "response-IP trigger, refused", from: "127.0.0.2", qname: "img.example.net.", rcode: dns.RcodeRefused},
		{name: "NODATA trigger keeps its action", from: "127.0.0.2", qname: "douyin.com.", rcode: dns.RcodeSuccess, action: "NODATA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(t, f.addr, tc.from, "udp", question(tc.qname, dns.TypeA, true))
			assert.Equal(t, tc.rcode, r.Rcode)
			var line map[string]any
			require.Eventually(t, func() bool { var ok bool; line, ok = auditLine(logs, tc.qname); return ok }, 2*time.Second, 10*time.Millisecond)
			assert.Equal(t, ResultBlocked, line[logResult])
			assert.NotEmpty(t, line[logOwner], "an RPZ trigger names its owner")
			if tc.action == "" {
				assert.NotContains(t, line, logAction, "the policy's action answered, not the trigger's NXDOMAIN")
			} else {
				assert.Equal(t, tc.action, line[logAction])
			}
			if strings.HasSuffix(tc.qname, ".example.net.") {
				return // explain does not ask the upstream here
			}
			b, err := json.Marshal(f.handler.Snapshot().Explain(netip.MustParseAddr(tc.from), tc.qname, dns.TypeA))
			require.NoError(t, err)
			var e struct {
				Decision struct {
					Entry struct {
						Owner  string `json:"owner"`
						Action string `json:"action"`
					} `json:"entry"`
				} `json:"decision"`
			}
			require.NoError(t, json.Unmarshal(b, &e))
			assert.NotEmpty(t, e.Decision.Entry.Owner, "explain -json names the trigger too")
			assert.Equal(t, tc.action, e.Decision.Entry.Action, "explain -json: %s", b)
		})
	}
}

// A name a block list blocks and a later list's passthru lets through is
// allowed, as a passthru of the list that matched it first is: its answer
// is not inspected, so a response-IP trigger holding its address does not
// block it (Policy.Decide: an allow entry beats every block), where the
// same address in another name's answer is blocked.
func TestRPZLaterPassthruIsAnAllow(t *testing.T) {
	up := startUpstream(t, nil) // 192.0.2.1 for every A question
	f := startFence(t, rpzActionsConfig, map[string]string{
		"capcut.txt": "capcut.com\n",
		"policy.rpz": rpzHead + "newsroom.capcut.com CNAME rpz-passthru.\n32.1.2.0.192.rpz-ip CNAME .\n",
	}, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, f.addr, "127.0.0.1", network, question("newsroom.capcut.com.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: the later list's passthru", network)
		require.Len(t, r.Answer, 1, network)
		assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())

		r = ask(t, f.addr, "127.0.0.1", network, question("other.example.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s: the response-IP trigger blocks another name's answer", network)
	}
}

// An answer's address an allow list's response-IP trigger holds lets the
// answer stand, and explain shows the trigger that allowed it on the
// address's hop (Policy.DecideAddress reports an allow as a decision, as
// it reports a block), not the name's own decision.
func TestExplainShowsTheAddressAllowed(t *testing.T) {
	up := startUpstream(t, nil) // 192.0.2.1 for every A question
	f := startFence(t, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/28"]
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["policy.rpz"]
    allow: ["allow.rpz"]
`, map[string]string{
		"policy.rpz": rpzHead + "24.0.2.0.192.rpz-ip CNAME .\n",
		"allow.rpz":  rpzHead + "32.1.2.0.192.rpz-ip CNAME .\n",
	}, up.addr)
	r := ask(t, f.addr, "127.0.0.1", "udp", question("www.example.", dns.TypeA, true))
	require.Equal(t, dns.RcodeSuccess, r.Rcode, "the allow list's trigger beats the block list's")
	require.Len(t, r.Answer, 1)

	snap := f.handler.Snapshot()
	e := snap.Explain(netipMustParse("127.0.0.1"), "www.example.", dns.TypeA)
	resp, _, err := snap.Forwarder().Forward(t.Context(), question("www.example.", dns.TypeA, false), false)
	require.NoError(t, err)
	snap.ExplainAnswer(&e, resp)
	assert.Equal(t, ResultForwarded, e.Result)
	require.Len(t, e.Hops, 1)
	assert.Equal(t, "192.0.2.1", e.Hops[0].Name, "the hop names the address its trigger holds")
	assert.True(t, e.Hops[0].Decision.Allowed)
	require.NotNil(t, e.Hops[0].Decision.Entry.List)
	assert.Equal(t, "allow.rpz", filepath.Base(e.Hops[0].Decision.Entry.List.File()))
	p, ok := e.Hops[0].Decision.Entry.Prefix()
	assert.True(t, ok)
	assert.Equal(t, "192.0.2.1/32", p.String())
}
