package resolver

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// ecsAlsoAllowsConfig: gov, with 10.0.0.0/8, holds the whole of an ECS
// network 10.1.2.0/24 and decides it first: it blocks tiktok.com and
// allows gov-partner.example; strict, nested in it with 10.1.2.0/26,
// blocks capcut.com and allows partner.example.
const ecsAlsoAllowsConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.181.0/24", "10.0.0.0/8"]
trusted_proxies: ["127.0.181.2/32"]
log: {queries: all}
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["tiktok.txt"]
    allow: ["gov-partner.txt"]
  - name: strict
    clients: ["10.1.2.0/26"]
    block: ["bytedance.txt"]
    allow: ["partner.txt"]
`

// TestECSAnswerOfANamePolicyAllows: each policy deciding for an ECS
// network, the one holding it and those with a range inside it
// (Snapshot.alsoDeciding), asks about the answer only of a name it
// neither blocks nor allows, as a policy does for its own clients
// (outcome.inspectsOwn), fresh and from the cache: partner.example, which
// strict allows, keeps its alias into capcut.com, which strict blocks and
// gov does not; gov-partner.example, which gov allows, keeps its alias
// into tiktok.com, which gov blocks and strict does not. The same aliases
// of names on no list are blocked.
func TestECSAnswerOfANamePolicyAllows(t *testing.T) {
	needLoopback(t, "127.0.181.2")
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		switch name := r.Question[0].Name; name {
		case "partner.example.", "other.example.":
			m.Answer = []dns.RR{mustRR("%s 300 IN CNAME edge.capcut.com.", name), mustRR("edge.capcut.com. 300 IN A 192.0.2.8")}
		case "gov-partner.example.", "gov-other.example.":
			m.Answer = []dns.RR{mustRR("%s 300 IN CNAME www.tiktok.com.", name), mustRR("www.tiktok.com. 300 IN A 192.0.2.9")}
		default:
			return defaultAnswer(w, r)
		}
		return m
	})
	core, logs := observer.New(zap.InfoLevel)
	files := map[string]string{"partner.txt": "partner.example\n", "gov-partner.txt": "gov-partner.example\n"}
	maps.Copy(files, testFiles)
	f := startFenceLog(t, zap.New(core), ecsAlsoAllowsConfig, files, up.addr)
	for _, tc := range []struct {
		qname      string
		wantRcode  int
		wantResult string // the audit line's
	}{
		{"partner.example.", dns.RcodeSuccess, ResultForwarded},
		{"other.example.", dns.RcodeNameError, ResultBlocked},
		{"gov-partner.example.", dns.RcodeSuccess, ResultForwarded},
		{"gov-other.example.", dns.RcodeNameError, ResultBlocked},
	} {
		for _, pass := range []string{"fresh", "cached"} {
			t.Run(tc.qname+" "+pass, func(t *testing.T) {
				logs.TakeAll()
				r := ask(t, f.addr, "127.0.181.2", "udp", withECS(question(tc.qname, dns.TypeA, true), "10.1.2.0/24"))
				assert.Equal(t, tc.wantRcode, r.Rcode, "got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
				if tc.wantRcode == dns.RcodeSuccess {
					assert.Len(t, r.Answer, 2)
				} else {
					assert.Empty(t, r.Answer)
				}
				lines := logs.FilterMessage("query").All()
				require.Len(t, lines, 1)
				assert.Equal(t, tc.wantResult, lines[0].ContextMap()[logResult])
			})
		}
	}
}

// TestECSExtraSectionsOfAnotherPolicy: the records of an answer's
// authority and additional sections that are a blocked name's are left
// out under every policy deciding for an ECS network (outcome.scrub), the
// policies with a range inside it as well as the one holding it: from
// 10.1.2.0/24 the address of mx.capcut.com (strict's) goes as well as
// that of mx.tiktok.com (gov's), and so does the NS at capcut.com; from
// 10.1.3.0/24, gov's alone, only gov's. Fresh and from the cache, over UDP
// and TCP.
func TestECSExtraSectionsOfAnotherPolicy(t *testing.T) {
	needLoopback(t, "127.0.181.2")
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "mail.example.net." {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR("mail.example.net. 300 IN MX 10 mx.example.net.")}
		m.Ns = []dns.RR{mustRR("capcut.com. 300 IN NS ns.example.net."), mustRR("example.net. 300 IN NS ns.example.net.")}
		m.Extra = []dns.RR{mustRR("mx.capcut.com. 300 IN A 192.0.2.25"), mustRR("mx.tiktok.com. 300 IN A 192.0.2.26"),
			mustRR("mx.example.net. 300 IN A 192.0.2.27")}
		return m
	})
	files := map[string]string{"partner.txt": "partner.example\n", "gov-partner.txt": "gov-partner.example\n"}
	maps.Copy(files, testFiles)
	f := startFence(t, ecsAlsoAllowsConfig, files, up.addr)
	owners := func(rrs []dns.RR) []string {
		var out []string
		for _, rr := range rrs {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				out = append(out, h.Name+" "+dns.TypeToString[h.Rrtype])
			}
		}
		return out
	}
	for _, tc := range []struct {
		ecs             string
		wantNs, wantExt []string
	}{
		{"10.1.2.0/24", []string{"example.net. NS"}, []string{"mx.example.net. A"}},
		{"10.1.3.0/24", []string{"capcut.com. NS", "example.net. NS"}, []string{"mx.capcut.com. A", "mx.example.net. A"}},
	} {
		for _, network := range []string{"udp", "udp", "tcp"} { // fresh, then cached
			r := ask(t, f.addr, "127.0.181.2", network, withECS(question("mail.example.net.", dns.TypeMX, true), tc.ecs))
			require.Equal(t, dns.RcodeSuccess, r.Rcode, "%s over %s", tc.ecs, network)
			assert.Len(t, r.Answer, 1)
			assert.Equal(t, tc.wantNs, owners(r.Ns), "%s over %s", tc.ecs, network)
			assert.Equal(t, tc.wantExt, owners(r.Extra), "%s over %s", tc.ecs, network)
		}
	}
}

// TestExemptionAllowListDecidesNothing: a policy with no block lists (an
// exemption) forwards every name, and its allow list decides nothing:
// a name on it is explained as forwarded, not allowed, with no decision
// of the policy, and its query's audit line names no list entry.
func TestExemptionAllowListDecidesNothing(t *testing.T) {
	needLoopback(t, "127.0.181.3")
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.181.0/24"]
log: {queries: all}
policies:
  - name: press
    clients: ["127.0.181.3/32"]
    allow: ["allow.txt"]
`, testFiles, up.addr)
	e := f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.181.3"), "ads.tiktok.com.", dns.TypeA)
	assert.Equal(t, ResultForwarded, e.Result)
	assert.Equal(t, Decision{}, e.Decision)
	assert.True(t, strings.HasSuffix(e.String(), "verdict: forwarded (from upstream)\n"), e.String())

	r := ask(t, f.addr, "127.0.181.3", "udp", question("ads.tiktok.com.", dns.TypeA, true))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	lines := logs.FilterMessage("query").All()
	require.Len(t, lines, 1)
	assert.Equal(t, "press", lines[0].ContextMap()[logPolicy])
	assert.NotContains(t, lines[0].ContextMap(), logList)
}
