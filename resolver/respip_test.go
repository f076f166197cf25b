package resolver

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// ecsAddressAllowConfig: gov, with 10.0.0.0/8, lets 192.0.2.5 through by
// an allow list's response-IP trigger and 192.0.2.6 by a passthru trigger
// of a block list; strict, nested in it with 10.1.2.0/26, blocks both.
const ecsAddressAllowConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/8", "10.0.0.0/8"]
trusted_proxies: ["127.0.0.2/32"]
log: {queries: all}
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["tiktok.txt", "gov-ip.rpz"]
    allow: ["allow-ip.rpz"]
  - name: strict
    clients: ["10.1.2.0/26"]
    block: ["strict-ip.rpz"]
`

// TestAddressAllowedByOnePolicyIsStillAskedOfTheOthers: an answer address
// that the policy of the client's range lets through (an allow list's
// response-IP trigger, or a block list's passthru trigger) is allowed for
// that policy alone: when the client is an ECS network that holds a range
// of another blocking policy, that policy still decides on the answer, and
// its block of the address blocks it (as it blocks a name gov allows,
// TestECSNetworkDecidedByEveryBlockingPolicyInIt). A network of gov alone
// gets the answer, and its audit line says it was forwarded, not blocked.
func TestAddressAllowedByOnePolicyIsStillAskedOfTheOthers(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		switch r.Question[0].Name {
		case "allowed.example.":
			m.Answer = []dns.RR{mustRR("allowed.example. 300 IN A 192.0.2.5")}
		case "passthru.example.":
			m.Answer = []dns.RR{mustRR("passthru.example. 300 IN A 192.0.2.6")}
		default:
			return defaultAnswer(w, r)
		}
		return m
	})
	core, logs := observer.New(zap.InfoLevel)
	files := map[string]string{
		"allow-ip.rpz":  rpzHead + "32.5.2.0.192.rpz-ip CNAME .\n",
		"gov-ip.rpz":    rpzHead + "32.6.2.0.192.rpz-ip CNAME rpz-passthru.\n32.9.113.0.203.rpz-ip CNAME .\n",
		"strict-ip.rpz": rpzHead + "24.0.2.0.192.rpz-ip CNAME .\n",
	}
	maps.Copy(files, testFiles)
	f := startFenceLog(t, zap.New(core), ecsAddressAllowConfig, files, up.addr)
	for _, tc := range []struct {
		ecs, qname string
		wantRcode  int
		wantRange  string // the audit line's
	}{
		{"10.1.2.0/24", "allowed.example.", dns.RcodeNameError, "10.1.2.0/26"},
		{"10.1.2.0/24", "passthru.example.", dns.RcodeNameError, "10.1.2.0/26"},
		{"10.1.3.0/24", "allowed.example.", dns.RcodeSuccess, "10.0.0.0/8"},
		{"10.1.3.0/24", "passthru.example.", dns.RcodeSuccess, "10.0.0.0/8"},
	} {
		for _, pass := range []string{"fresh", "cached"} {
			t.Run(tc.ecs+" "+tc.qname+" "+pass, func(t *testing.T) {
				logs.TakeAll()
				r := ask(t, f.addr, "127.0.0.2", "udp", withECS(question(tc.qname, dns.TypeA, true), tc.ecs))
				assert.Equal(t, tc.wantRcode, r.Rcode, "got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
				want := ResultForwarded
				if tc.wantRcode != dns.RcodeSuccess {
					assert.Empty(t, r.Answer)
					want = ResultBlocked
				} else {
					assert.Len(t, r.Answer, 1)
				}
				lines := logs.FilterMessage("query").All()
				require.Len(t, lines, 1)
				assert.Equal(t, tc.wantRange, lines[0].ContextMap()[logRange])
				assert.Equal(t, want, lines[0].ContextMap()[logResult])
			})
		}
	}
}

// TestAddressPassthruBeatsAnotherListsBlock: a passthru trigger that
// decides for an answer in one block list lets the answer stand against a
// trigger of another block list that blocks the same address, whichever
// list comes first (as Decide's passthru beats every list's block of a
// name); another address of no passthru is still blocked.
func TestAddressPassthruBeatsAnotherListsBlock(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		switch r.Question[0].Name {
		case "pass.example.":
			m.Answer = []dns.RR{mustRR("pass.example. 300 IN A 192.0.2.6")}
		case "block.example.":
			m.Answer = []dns.RR{mustRR("block.example. 300 IN A 192.0.2.7")}
		default:
			return defaultAnswer(w, r)
		}
		return m
	})
	log, logs := observed(t)
	f := startFenceLog(t, log, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: all}
policies:
  - name: pass-first
    clients: ["127.0.0.1/32"]
    block: ["pass.rpz", "block.rpz"]
  - name: block-first
    clients: ["127.0.0.3/32"]
    block: ["block.rpz", "pass.rpz"]
`, map[string]string{
		"pass.rpz":  rpzHead + "32.6.2.0.192.rpz-ip CNAME rpz-passthru.\n32.9.113.0.203.rpz-ip CNAME .\n",
		"block.rpz": rpzHead + "24.0.2.0.192.rpz-ip CNAME .\n",
	}, up.addr)
	for _, client := range []string{"127.0.0.1", "127.0.0.3"} {
		r := ask(t, f.addr, client, "udp", question("pass.example.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: the passthru of one list beats the block of the other", client)
		assert.Len(t, r.Answer, 1, client)
		r = ask(t, f.addr, client, "udp", question("block.example.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s: an address of no passthru", client)
		assert.Empty(t, r.Answer, client)
		line, ok := auditLine(logs, "block.example.")
		require.True(t, ok)
		assert.Equal(t, "192.0.2.7", line[logVia], client)
		assert.Equal(t, "192.0.2.0/24", line[logEntry], client)
	}
}

// TestResponseIPPrecedenceAcrossFamilies: an IPv4 prefix ranks as the
// IPv4-mapped IPv6 prefix it stands for, 96 bits longer, among the IPv6
// prefixes of its zone (BIND keys both families in one tree): a /32 beats
// an IPv6 /64, an IPv6 /121 beats a /24 (121 > 120), and a /24 ties with
// an IPv6 /120, which the smaller address breaks, an IPv4 address (in
// ::ffff:0:0/96) being smaller than one in 2001:db8::/32. In each case the
// trigger that should lose is a passthru, so a wrong ranking lets the
// answer through; the upstream gives the records in both orders. An IPv4
// address an upstream writes as an IPv4-mapped AAAA record is decided and
// named as the IPv4 address.
func TestResponseIPPrecedenceAcrossFamilies(t *testing.T) {
	records := map[string][]string{
		"v4-32-beats-v6-64.example.":  {"A 203.0.113.7", "AAAA 2001:db8:64::5"},
		"v6-121-beats-v4-24.example.": {"A 192.0.2.5", "AAAA 2001:db8:1::5"},
		"v4-24-ties-v6-120.example.":  {"A 198.51.100.5", "AAAA 2001:db8:2::5"},
		"mapped.example.":             {"AAAA ::ffff:198.51.100.7"},
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		name := r.Question[0].Name
		rrs := records[strings.TrimPrefix(name, "rev.")]
		if strings.HasPrefix(name, "rev.") { // the other order
			rrs = slices.Clone(rrs)
			slices.Reverse(rrs)
		}
		for _, rec := range rrs {
			m.Answer = append(m.Answer, mustRR("%s 300 IN %s", name, rec))
		}
		return m
	})
	log, logs := observed(t)
	f := startFenceLog(t, log, rpzActionsConfig, map[string]string{"capcut.txt": "capcut.com\n", "policy.rpz": rpzHead + `32.7.113.0.203.rpz-ip CNAME .
64.zz.64.db8.2001.rpz-ip CNAME rpz-passthru.
24.0.2.0.192.rpz-ip CNAME rpz-passthru.
121.zz.1.db8.2001.rpz-ip CNAME .
24.0.100.51.198.rpz-ip CNAME .
120.zz.2.db8.2001.rpz-ip CNAME rpz-passthru.
`}, up.addr)
	for _, tc := range []struct {
		name, via, entry string
	}{
		{"v4-32-beats-v6-64.example.", "203.0.113.7", "203.0.113.7/32"},
		{"v6-121-beats-v4-24.example.", "2001:db8:1::5", "2001:db8:1::/121"},
		{"v4-24-ties-v6-120.example.", "198.51.100.5", "198.51.100.0/24"},
		{"mapped.example.", "198.51.100.7", "198.51.100.0/24"},
	} {
		for _, name := range []string{tc.name, "rev." + tc.name} {
			t.Run(name, func(t *testing.T) {
				r := ask(t, f.addr, "127.0.0.1", "udp", question(name, dns.TypeANY, true))
				assert.Equal(t, dns.RcodeNameError, r.Rcode, "%v", r.Answer)
				assert.Empty(t, r.Answer)
				line, ok := auditLine(logs, name)
				require.True(t, ok)
				assert.Equal(t, tc.via, line[logVia])
				assert.Equal(t, tc.entry, line[logEntry])
			})
		}
	}
}
