package resolver

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// identityConfig: 127.0.0.2 is a trusted forwarder; 127.0.0.3 is itself a
// government device; 10/8 is the government range with the press office
// 10.20.30.0/24 exempt.
const identityConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/8", "10.0.0.0/8"]
trusted_proxies: ["127.0.0.2/32"]
log: {queries: all}
policies:
  - name: gov
    clients: ["10.0.0.0/8", "127.0.0.3/32"]
    block: ["tiktok.txt"]
  - name: press
    clients: ["10.20.30.0/24"]
`

// withECS adds an EDNS Client Subnet option for prefix to m.
func withECS(m *dns.Msg, prefix string) *dns.Msg {
	ip, n, err := net.ParseCIDR(prefix)
	if err != nil {
		panic(err)
	}
	bits, _ := n.Mask.Size()
	e := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(bits), Address: ip.To4()}
	if ip.To4() == nil {
		e.Family, e.Address = 2, ip
	}
	if m.IsEdns0() == nil {
		m.SetEdns0(1232, false)
	}
	opt := m.IsEdns0()
	opt.Option = append(opt.Option, e)
	return m
}

func TestClientIdentityFromECS(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), identityConfig, testFiles, up.addr)
	tests := []struct {
		name      string
		from      string
		ecs       string
		wantRcode int
		wantScope int // echoed ECS scope; -1: no ECS in the answer
	}{
		{name: "untrusted ECS cannot move a government device out", from: "127.0.0.3", ecs: "10.20.30.4/32", wantRcode: dns.RcodeNameError, wantScope: -1},
		{name: "untrusted ECS cannot move a client in", from: "127.0.0.1", ecs: "10.1.2.3/32", wantRcode: dns.RcodeSuccess, wantScope: -1},
		{name: "trusted ECS moves the client in", from: "127.0.0.2", ecs: "10.1.2.3/32", wantRcode: dns.RcodeNameError, wantScope: 32},
		{name: "trusted ECS subnet inside the range", from: "127.0.0.2", ecs: "10.1.2.0/24", wantRcode: dns.RcodeNameError, wantScope: 24},
		{name: "trusted ECS selects the exemption", from: "127.0.0.2", ecs: "10.20.30.0/24", wantRcode: dns.RcodeSuccess, wantScope: 24},
		{name: "trusted ECS wider than the exemption gets the wider policy", from: "127.0.0.2", ecs: "10.20.0.0/16", wantRcode: dns.RcodeNameError, wantScope: 16},
		// No range holds all of 10.0.0.0/7, but the government range 10/8
		// lies inside it: its devices may be asking (fail closed).
		{name: "trusted ECS wider than the government range gets its policy", from: "127.0.0.2", ecs: "10.0.0.0/7", wantRcode: dns.RcodeNameError, wantScope: 7},
		{name: "trusted forwarder without ECS is itself", from: "127.0.0.2", wantRcode: dns.RcodeSuccess, wantScope: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := question("www.tiktok.com.", dns.TypeA, true)
			if tc.ecs != "" {
				withECS(m, tc.ecs)
			}
			r := ask(t, f.addr, tc.from, "udp", m)
			assert.Equal(t, tc.wantRcode, r.Rcode, dns.RcodeToString[r.Rcode])
			if tc.wantRcode == dns.RcodeNameError {
				// Built as a message when ECS is echoed, packed otherwise:
				// the same SOA either way.
				require.Len(t, r.Ns, 1)
				assert.Equal(t, "tiktok.com.", r.Ns[0].Header().Name, "the SOA's owner is the matched entry")
				lines := logs.FilterMessage("query").All()
				require.NotEmpty(t, lines)
				audit := lines[len(lines)-1].ContextMap()
				assert.Equal(t, "NXDOMAIN", audit[logRcode], "the audit line's RCODE is the answer's")
				if tc.wantScope > 0 && tc.wantScope < 32 {
					assert.Equal(t, tc.ecs, audit[logClient], "the audit line names the subnet ECS gave")
				}
			}
			var echoed *dns.EDNS0_SUBNET
			if opt := r.IsEdns0(); opt != nil {
				for _, o := range opt.Option {
					if e, ok := o.(*dns.EDNS0_SUBNET); ok {
						echoed = e
					}
				}
			}
			if tc.wantScope < 0 {
				assert.Nil(t, echoed)
			} else {
				require.NotNil(t, echoed, "ECS echoed so a caching forwarder keeps answers per subnet")
				assert.EqualValues(t, tc.wantScope, echoed.SourceScope)
			}
		})
	}
	for _, q := range up.queries() {
		assert.Nil(t, findECS(q.msg), "ECS never reaches the upstream")
	}
	var sawECS bool
	for _, e := range logs.FilterMessage("query").All() {
		m := e.ContextMap()
		if m[logIdentity] == IdentityECS {
			sawECS = true
			assert.Equal(t, "127.0.0.2", m[logSource])
		}
	}
	assert.True(t, sawECS, "logs say which source gave the identity")
}

// ecsWiderConfig: 127.0.0.2 is a trusted forwarder. gov holds
// 10.128.0.0/9, the single device 127.0.0.3 and, from a client file,
// 10.1.5.5 and 10.20.30.200 (a government device inside the press
// office's exempt /24); refusing, after gov in the file, holds
// 10.1.0.0/16.
const ecsWiderConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/8", "10.0.0.0/8"]
trusted_proxies: ["127.0.0.2/32"]
explain_clients: ["127.0.0.0/8", "10.0.0.0/8"]
log: {queries: all}
policies:
  - name: gov
    clients: ["10.128.0.0/9", "127.0.0.3/32"]
    client_files: ["devices.txt"]
    block: ["tiktok.txt"]
  - name: press
    clients: ["10.20.30.0/24"]
  - name: refusing
    clients: ["10.1.0.0/16"]
    block: ["tiktok.txt"]
    action: refused
`

// TestECSWiderThanABlockingRange: a trusted forwarder's ECS network that no
// range of a blocking policy holds whole, while one lies inside it, stands
// for devices that may be in that range, so that policy decides (fail
// closed). A forwarder passes on a client's SOURCE PREFIX-LENGTH down to 0
// (RFC 7871 §7.1.2) and truncates every client to /24 by default (Unbound's
// max-client-subnet-ipv4), wider than a /32 government device; before, such
// a network got no policy, or the exemption that held it, and TikTok.
// Networks held whole by a blocking policy, or by an exemption with no
// blocking range inside, keep their policy. The audit line names the
// range that decided; the answer's aliases are inspected under that
// policy; the ECS scope echoed is the whole source prefix.
func TestECSWiderThanABlockingRange(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "cloaked.example." {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR("cloaked.example. 300 IN CNAME p16.tiktokcdn.com."), mustRR("p16.tiktokcdn.com. 300 IN A 192.0.2.5")}
		return m
	})
	core, logs := observer.New(zap.InfoLevel)
	files := map[string]string{"devices.txt": "10.1.5.5\n10.20.30.200\n"}
	maps.Copy(files, testFiles)
	f := startFenceLog(t, zap.New(core), ecsWiderConfig, files, up.addr)
	tests := []struct {
		name      string
		ecs       string            // the option, as withECS writes it
		opt       *dns.EDNS0_SUBNET // an option withECS cannot write, instead
		qname     string            // www.tiktok.com. when empty
		wantRcode int
		wantRange string // the audit line's range
	}{
		{name: "source /0 passed on by the forwarder", ecs: "10.1.2.3/0", wantRcode: dns.RcodeNameError, wantRange: "10.1.5.5/32"},
		{name: "source /1", ecs: "10.1.2.3/1", wantRcode: dns.RcodeNameError, wantRange: "10.1.5.5/32"},
		{name: "a /32 government device truncated to /24", ecs: "127.0.0.0/24", wantRcode: dns.RcodeNameError, wantRange: "127.0.0.3/32"},
		{name: "family 0 without an address (dig +subnet=0)", opt: &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 0, SourceNetmask: 0},
			wantRcode: dns.RcodeNameError, wantRange: "10.1.5.5/32"},
		{name: "ipv6 ::/0 stands for ipv4 devices too", opt: &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 2, SourceNetmask: 0, Address: net.IPv6zero},
			wantRcode: dns.RcodeNameError, wantRange: "10.1.5.5/32"},
		{name: "the exemption's /24 holds a government device", ecs: "10.20.30.0/24", wantRcode: dns.RcodeNameError, wantRange: "10.20.30.200/32"},
		// refusing's 10.1.0.0/16 comes first in address order, gov first in
		// the configuration.
		{name: "of several blocking policies inside, the configuration's first", ecs: "10.0.0.0/8", wantRcode: dns.RcodeNameError, wantRange: "10.1.5.5/32"},
		{name: "cname cloaking inspected under the blocking policy", ecs: "127.0.0.0/24", qname: "cloaked.example.",
			wantRcode: dns.RcodeNameError, wantRange: "127.0.0.3/32"},
		// Unchanged.
		{name: "held whole by a blocking policy keeps it", ecs: "10.1.0.0/16", wantRcode: dns.RcodeRefused, wantRange: "10.1.0.0/16"},
		{name: "held whole by an exemption with no blocking range inside", ecs: "10.20.30.0/25", wantRcode: dns.RcodeSuccess, wantRange: "10.20.30.0/24"},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+" over "+network, func(t *testing.T) {
				qname := tc.qname
				if qname == "" {
					qname = "www.tiktok.com."
				}
				m := question(qname, dns.TypeA, true)
				if tc.opt != nil {
					m.IsEdns0().Option = append(m.IsEdns0().Option, tc.opt)
				} else {
					withECS(m, tc.ecs)
				}
				source := findECS(m).SourceNetmask
				logs.TakeAll()
				r := ask(t, f.addr, "127.0.0.2", network, m)
				assert.Equal(t, tc.wantRcode, r.Rcode, "got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
				if tc.wantRcode != dns.RcodeSuccess {
					assert.Empty(t, r.Answer)
				}
				echoed := findECS(r)
				require.NotNil(t, echoed, "ECS echoed")
				assert.Equal(t, source, echoed.SourceScope, "scope: the whole source prefix")
				lines := logs.FilterMessage("query").All()
				require.Len(t, lines, 1)
				assert.Equal(t, tc.wantRange, lines[0].ContextMap()[logRange])
			})
		}
	}

	chaos := func(t *testing.T, ecs string) string {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("www.tiktok.com.explain.dnsfence.", dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		m.SetEdns0(1232, false)
		r := ask(t, f.addr, "127.0.0.2", "tcp", withECS(m, ecs))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1, r.String())
		return strings.Join(r.Answer[0].(*dns.TXT).Txt, "\n")
	}
	t.Run("explain: wider than a blocking range, in no range", func(t *testing.T) {
		text := chaos(t, "127.0.0.0/24")
		assert.Contains(t, text, "client 127.0.0.0/24 (EDNS Client Subnet from trusted proxy 127.0.0.2)\n")
		assert.Contains(t, text, "  proxy 127.0.0.2 allowed by allowed_clients range 127.0.0.0/8\n")
		assert.Regexp(t, `\n  subnet 127\.0\.0\.0/24 is wider than range 127\.0\.0\.3/32 \(\S+:\d+\) of blocking policy \\"gov\\": `+
			`its devices may be in that range, so that policy applies \(fail closed\)\n`, text)
		assert.Contains(t, text, "  instead of no policy: no range holds the whole subnet\n")
		assert.Contains(t, text, "  www.tiktok.com. blocked by ")
		assert.True(t, strings.HasSuffix(text, "verdict: blocked (NXDOMAIN)"), text)
	})
	t.Run("explain: the exemption's /24 holds a government device", func(t *testing.T) {
		text := chaos(t, "10.20.30.0/24")
		assert.Contains(t, text, "is wider than range 10.20.30.200/32 (")
		assert.Regexp(t, `\n  instead of policy \\"press\\" from range 10\.20\.30\.0/24 \(\S+:\d+\), which holds the whole subnet\n`, text)
		assert.True(t, strings.HasSuffix(text, "verdict: blocked (NXDOMAIN)"), text)
	})
	t.Run("explain: held whole by an exemption with no blocking range inside", func(t *testing.T) {
		text := chaos(t, "10.20.30.0/25")
		assert.NotContains(t, text, "wider than")
		assert.Contains(t, text, `policy \"press\" (exemption: no block lists) from range 10.20.30.0/24`)
		assert.True(t, strings.HasSuffix(text, "verdict: forwarded (from upstream)"), text)
	})
}

// ecsNestedConfig: 127.0.0.2 is a trusted forwarder. gov holds 10.0.0.0/8
// and the device 127.0.0.3, blocks TikTok and allows larksuite.com; strict,
// inside gov's /8 with 10.1.2.0/26 and beside it with the device
// 127.0.0.4, also blocks ByteDance's other apps, larksuite.com among them,
// and one answer address (a response-IP trigger).
const ecsNestedConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/8", "10.0.0.0/8"]
trusted_proxies: ["127.0.0.2/32"]
explain_clients: ["127.0.0.0/8", "10.0.0.0/8"]
log: {queries: all}
policies:
  - name: gov
    clients: ["10.0.0.0/8", "127.0.0.3/32"]
    block: ["tiktok.txt"]
    allow: ["lark.txt"]
  - name: strict
    clients: ["10.1.2.0/26", "127.0.0.4/32"]
    block: ["tiktok.txt", "bytedance.txt", "lark.txt", "ip.rpz"]
`

// TestECSNetworkDecidedByEveryBlockingPolicyInIt: a trusted forwarder's
// ECS network may hold devices of every blocking policy with a range in
// it, so a name (or an answer) is blocked when any of them blocks it: a
// stricter policy nested in a wider one's range (10.1.2.0/26 in 10.0.0.0/8:
// a forwarder's /24 of it got gov's decision alone, and CapCut), or two
// beside each other in a network neither holds (127.0.0.0/24: the
// configuration's first decided alone). Over the cache as well as fresh
// answers; a network with one blocking policy only is unchanged.
func TestECSNetworkDecidedByEveryBlockingPolicyInIt(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		switch r.Question[0].Name {
		case "cloaked.example.":
			m.Answer = []dns.RR{mustRR("cloaked.example. 300 IN CNAME capcut.com."), mustRR("capcut.com. 300 IN A 192.0.2.7")}
		case "addr.example.":
			m.Answer = []dns.RR{mustRR("addr.example. 300 IN A 192.0.2.5")}
		default:
			return defaultAnswer(w, r)
		}
		return m
	})
	core, logs := observer.New(zap.InfoLevel)
	files := map[string]string{
		"lark.txt": "larksuite.com\n",
		"ip.rpz":   rpzHead + "32.5.2.0.192.rpz-ip CNAME .\n",
	}
	maps.Copy(files, testFiles)
	f := startFenceLog(t, zap.New(core), ecsNestedConfig, files, up.addr)
	tests := []struct {
		ecs, qname string
		wantRcode  int
		wantRange  string // the audit line's
	}{
		{"10.1.2.0/24", "capcut.com.", dns.RcodeNameError, "10.1.2.0/26"},
		{"10.1.2.0/24", "larksuite.com.", dns.RcodeNameError, "10.1.2.0/26"}, // gov allows it, strict blocks it
		{"10.1.2.0/24", "www.tiktok.com.", dns.RcodeNameError, "10.0.0.0/8"},
		{"10.1.2.0/24", "cloaked.example.", dns.RcodeNameError, "10.1.2.0/26"}, // a CNAME to a name strict blocks
		{"10.1.2.0/24", "addr.example.", dns.RcodeNameError, "10.1.2.0/26"},    // an address strict blocks
		{"10.1.2.0/24", "www.example.org.", dns.RcodeSuccess, "10.0.0.0/8"},
		{"10.0.0.0/8", "capcut.com.", dns.RcodeNameError, "10.1.2.0/26"},
		{"127.0.0.0/24", "capcut.com.", dns.RcodeNameError, "127.0.0.4/32"},
		{"127.0.0.0/24", "cloaked.example.", dns.RcodeNameError, "127.0.0.4/32"},
		// One blocking policy: unchanged.
		{"10.1.3.0/24", "capcut.com.", dns.RcodeSuccess, "10.0.0.0/8"},
		{"10.1.3.0/24", "larksuite.com.", dns.RcodeSuccess, "10.0.0.0/8"},
		{"10.1.3.0/24", "addr.example.", dns.RcodeSuccess, "10.0.0.0/8"},
		{"10.1.2.0/26", "www.example.org.", dns.RcodeSuccess, "10.1.2.0/26"},
		{"10.1.2.0/26", "addr.example.", dns.RcodeNameError, "10.1.2.0/26"},
	}
	for _, tc := range tests {
		// Twice: the second answer comes from the cache.
		for _, pass := range []string{"fresh", "cached"} {
			t.Run(tc.ecs+" "+tc.qname+" "+pass, func(t *testing.T) {
				logs.TakeAll()
				r := ask(t, f.addr, "127.0.0.2", "udp", withECS(question(tc.qname, dns.TypeA, true), tc.ecs))
				assert.Equal(t, tc.wantRcode, r.Rcode, "got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
				if tc.wantRcode != dns.RcodeSuccess {
					assert.Empty(t, r.Answer)
				}
				lines := logs.FilterMessage("query").All()
				require.Len(t, lines, 1)
				assert.Equal(t, tc.wantRange, lines[0].ContextMap()[logRange])
			})
		}
	}

	t.Run("explain names every policy the network is decided with", func(t *testing.T) {
		m := chaosQuestion("larksuite.com.explain.dnsfence.")
		m.SetEdns0(1232, false)
		r := ask(t, f.addr, "127.0.0.2", "tcp", withECS(m, "10.1.2.0/24"))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1, r.String())
		text := strings.Join(r.Answer[0].(*dns.TXT).Txt, "\n")
		assert.Regexp(t, `\n  subnet 10\.1\.2\.0/24 is wider than range 10\.1\.2\.0/26 \(\S+\) of blocking policy \\"strict\\"`, text)
		assert.Regexp(t, `\n  and blocking policy \\"gov\\" from range 10\.0\.0\.0/8 \(\S+\): its devices may be in the subnet too`, text)
		assert.NotContains(t, text, "instead of policy", "gov decides too")
		assert.Regexp(t, `\n  larksuite\.com\. blocked by \S+lark\.txt:1: larksuite\.com\n`, text)
		assert.Regexp(t, `\n  under policy \\"gov\\": larksuite\.com\. allowed by \S+lark\.txt:1`, text)
		assert.True(t, strings.HasSuffix(text, "verdict: blocked (NXDOMAIN)"), text)

		snap := f.handler.Snapshot()
		id := Identity{Source: netip.MustParseAddr("127.0.0.2"), Client: netip.MustParsePrefix("10.1.2.0/24"), Via: IdentityECS}
		e := snap.ExplainFor(id, "cloaked.example.", dns.TypeA)
		require.Equal(t, ResultForwarded, e.Result, "the name itself is on no list")
		resp := new(dns.Msg)
		resp.SetQuestion("cloaked.example.", dns.TypeA)
		resp.Answer = []dns.RR{mustRR("cloaked.example. 300 IN CNAME capcut.com."), mustRR("capcut.com. 300 IN A 192.0.2.7")}
		snap.ExplainAnswer(&e, resp)
		assert.Equal(t, ResultBlocked, e.Result)
		assert.Equal(t, "strict", e.Range.Policy.Name, "the answer is blocked by strict")
		assert.Contains(t, e.String(), "capcut.com. blocked by ")
	})
}

// TestExplainOverECSNeedsTheWholeNetwork: the device asking through a
// trusted forwarder may be anywhere in the ECS network, so explain_clients
// must hold all of it, not its first address: a /24 whose first half is
// in explain_clients is refused, and so is a /0 (both families) unless
// both are.
func TestExplainOverECSNeedsTheWholeNetwork(t *testing.T) {
	up := startUpstream(t, nil)
	for _, tc := range []struct {
		explain, ecs string
		want         int
	}{
		{`["10.0.0.0/25"]`, "10.0.0.0/25", dns.RcodeSuccess},
		{`["10.0.0.0/25"]`, "10.0.0.0/26", dns.RcodeSuccess},
		{`["10.0.0.0/25"]`, "10.0.0.5/32", dns.RcodeSuccess},
		{`["10.0.0.0/25"]`, "10.0.0.0/24", dns.RcodeRefused}, // its first address is in, half of it is not
		{`["0.0.0.0/0"]`, "0.0.0.0/0", dns.RcodeRefused},     // a /0 stands for IPv6 devices too
		{`["0.0.0.0/0", "::/0"]`, "0.0.0.0/0", dns.RcodeSuccess},
	} {
		t.Run(tc.explain+" "+tc.ecs, func(t *testing.T) {
			conf := strings.Replace(ecsWiderConfig, `explain_clients: ["127.0.0.0/8", "10.0.0.0/8"]`, "explain_clients: "+tc.explain, 1)
			files := map[string]string{"devices.txt": "10.1.5.5\n"}
			maps.Copy(files, testFiles)
			f := startFence(t, conf, files, up.addr)
			m := chaosQuestion("www.tiktok.com.explain.dnsfence.")
			m.SetEdns0(1232, false)
			r := ask(t, f.addr, "127.0.0.2", "udp", withECS(m, tc.ecs))
			assert.Equal(t, tc.want, r.Rcode, "got %s", dns.RcodeToString[r.Rcode])
		})
	}
}

// TestECSWiderThanABlockingRangeAfterAListChange: a remote list's new copy
// is swapped into the snapshot with its policies remade (withList), and a
// network wider than the government range is decided with the new copy
// too, as the range's own devices are.
func TestECSWiderThanABlockingRangeAfterAListChange(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": names(8, "tiktok.com")})
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.0/28"]
trusted_proxies: ["127.0.0.2/32"]
policies:
  - name: gov
    clients: ["127.0.0.3/32"]
    block: ["%s/tiktok.txt"]
sources: {refresh: 1s, cache_dir: cache}
`, up.addr, srv.URL)})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	wide := func() int {
		return ask(t, f.addr, "127.0.0.2", "udp", withECS(question("capcut.com.", dns.TypeA, true), "127.0.0.0/24")).Rcode
	}
	require.Equal(t, dns.RcodeSuccess, wide(), "not on the first copy")
	srv.set("/tiktok.txt", names(8, "tiktok.com", "capcut.com"), "")
	f.eventuallyRcode(t, "127.0.0.3", "capcut.com.", dns.RcodeNameError, 10*time.Second)
	assert.Equal(t, dns.RcodeNameError, wide(), "the wider network is decided with the new copy")
}

// TestECSWiderThanABlockingRangeEncrypted: DNS over TLS, HTTPS and QUIC
// read a trusted proxy's ECS option as UDP and TCP do, so a network wider
// than the government range 127.0.0.0/30 gets its policy, and two options
// get REFUSED.
func TestECSWiderThanABlockingRangeEncrypted(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	cfg := proxiedEncryptedConfig(p)
	e := startEncryptedFence(t, p, cfg, up.addr)
	for _, a := range encryptedAskers(e) {
		t.Run(a.name, func(t *testing.T) {
			r, err := a.ask("127.0.0.9", withECS(question("www.tiktok.com.", dns.TypeA, true), "127.0.0.0/24"))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
			r, err = a.ask("127.0.0.9", withECS(withECS(question("www.tiktok.com.", dns.TypeA, true), "127.0.0.1/32"), "127.0.0.8/32"))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeRefused, r.Rcode, "two ECS options: got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
		})
	}
}

// TestTwoECSOptionsRefused: a trusted forwarder's query with two ECS
// options names no one client. RFC 7871 does not say what a server does
// with one (BIND takes the first); taking either lets a device whose own
// option a forwarder passes on ahead of the one it adds pick its policy,
// and deciding for the forwarder itself puts it in none. It is REFUSED
// (RFC 7871 §7.5: an ECS option a forwarder will not use) over UDP and
// TCP. From anyone else ECS is ignored, one option or two.
func TestTwoECSOptionsRefused(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), identityConfig, testFiles, up.addr)
	two := func() *dns.Msg {
		// The device's own option first: the exemption; then the
		// forwarder's: a government device.
		return withECS(withECS(question("www.tiktok.com.", dns.TypeA, true), "10.20.30.4/32"), "10.1.2.3/32")
	}
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, f.addr, "127.0.0.2", network, two())
		assert.Equal(t, dns.RcodeRefused, r.Rcode, "trusted over %s: got %s %v", network, dns.RcodeToString[r.Rcode], r.Answer)
		assert.Empty(t, r.Answer)
		require.NotNil(t, ede(r))
		assert.Equal(t, dns.ExtendedErrorCodeOther, ede(r).InfoCode, "EDE 0 Other")
		assert.Equal(t, "more than one EDNS Client Subnet option", ede(r).ExtraText)
		r = ask(t, f.addr, "127.0.0.3", network, two())
		assert.Equal(t, dns.RcodeNameError, r.Rcode, "untrusted government device over %s: ECS ignored", network)
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
	// The refusal is the forwarder's: neither option named its client.
	refused := 0
	for _, e := range logs.FilterMessage("query").All() {
		if m := e.ContextMap(); m[logResult] == ResultRefused {
			refused++
			assert.Equal(t, "127.0.0.2", m[logClient])
			assert.Equal(t, IdentityTransport, m[logIdentity])
		}
	}
	assert.Equal(t, 2, refused, "one audit line for each refusal")
}

func TestECSPrefixParsing(t *testing.T) {
	tests := []struct {
		name string
		ecs  dns.EDNS0_SUBNET
		want string
	}{
		{name: "ipv4 host", ecs: dns.EDNS0_SUBNET{Family: 1, SourceNetmask: 32, Address: net.IP{10, 1, 2, 3}}, want: "10.1.2.3/32"},
		{name: "ipv4 masked", ecs: dns.EDNS0_SUBNET{Family: 1, SourceNetmask: 20, Address: net.IP{10, 1, 255, 3}}, want: "10.1.240.0/20"},
		{name: "ipv6", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 56, Address: net.ParseIP("2001:db8:1:2:3::1")}, want: "2001:db8:1::/56"},
		// IPv4 written as IPv4-mapped IPv6 is IPv4, as a mapped source
		// address is (DESIGN.md §1.2).
		{name: "ipv4-mapped host", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 128, Address: net.ParseIP("::ffff:10.1.2.3")}, want: "10.1.2.3/32"},
		{name: "ipv4-mapped network", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 120, Address: net.ParseIP("::ffff:10.1.2.3")}, want: "10.1.2.0/24"},
		{name: "ipv4-mapped, all of ipv4", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 96, Address: net.ParseIP("::ffff:10.1.2.3")}, want: "0.0.0.0/0"},
		{name: "shorter than the mapping: ipv6", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 80, Address: net.ParseIP("::ffff:10.1.2.3")}, want: "::/80"},
		{name: "one bit shorter than the mapping: ipv6", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 95, Address: net.ParseIP("::ffff:10.1.2.3")}, want: "::fffe:0:0/95"},
		{name: "family 2 with an ipv4 address", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 24, Address: net.IP{10, 1, 2, 3}}},
		{name: "ipv4 mask too long", ecs: dns.EDNS0_SUBNET{Family: 1, SourceNetmask: 33, Address: net.IP{10, 1, 2, 3}}},
		{name: "ipv6 mask too long", ecs: dns.EDNS0_SUBNET{Family: 2, SourceNetmask: 129, Address: net.ParseIP("2001:db8::1")}},
		// FAMILY 0 with no address (dig +subnet=0): any device.
		{name: "family 0, no address", ecs: dns.EDNS0_SUBNET{Family: 0, SourceNetmask: 0}, want: "::/0"},
		{name: "family 0 with a prefix", ecs: dns.EDNS0_SUBNET{Family: 0, SourceNetmask: 8, Address: net.IP{10, 0, 0, 0}}},
		{name: "unknown family", ecs: dns.EDNS0_SUBNET{Family: 3, SourceNetmask: 8, Address: net.IP{10, 0, 0, 0}}},
		{name: "family mismatch", ecs: dns.EDNS0_SUBNET{Family: 1, SourceNetmask: 24, Address: net.ParseIP("2001:db8::1")}},
		{name: "no address", ecs: dns.EDNS0_SUBNET{Family: 1, SourceNetmask: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := ecsPrefix(&tc.ecs)
			if tc.want == "" {
				assert.False(t, ok, "got %s", p)
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.want, p.String())
		})
	}
}

// askOverProxy sends a PROXY v2 header naming client, then a query.
func askOverProxy(t *testing.T, server, from, client string, m *dns.Msg) (*dns.Msg, error) {
	t.Helper()
	return askOverProxyAs(t, server, from, client, proxyproto.TCPv4, m)
}

// askOverProxyAs is askOverProxy with the header's transport protocol:
// proxyproto.UDPv4 or UDPv6 for a client that asked the proxy over UDP.
func askOverProxyAs(t *testing.T, server, from, client string, proto proxyproto.AddressFamilyAndProtocol, m *dns.Msg) (*dns.Msg, error) {
	t.Helper()
	c, err := proxiedConn(server, from, client, proto, nil)
	require.NoError(t, err)
	defer c.Close()
	dc := &dns.Conn{Conn: c}
	require.NoError(t, c.SetDeadline(time.Now().Add(2*time.Second)))
	require.NoError(t, dc.WriteMsg(m))
	return dc.ReadMsg()
}

// askDoTOverProxy is askOverProxy over DoT: from the loopback address
// from, the PROXY v2 header naming client (dst as proxiedConn takes it),
// then a TLS handshake with cfg and the query.
func askDoTOverProxy(server, from, client string, dst net.Addr, cfg *tls.Config, m *dns.Msg) (*dns.Msg, error) {
	raw, err := proxiedConn(server, from, client, proxyproto.TCPv4, dst)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	dc := &dns.Conn{Conn: c}
	if err := dc.WriteMsg(m); err != nil {
		return nil, err
	}
	return dc.ReadMsg()
}

// proxiedConn dials server over TCP from the loopback address from and
// sends a PROXY v2 header naming client (port 40000) as having asked over
// proto; the header's destination is dst, or the connection's own
// address when dst is nil.
func proxiedConn(server, from, client string, proto proxyproto.AddressFamilyAndProtocol, dst net.Addr) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", server)
	if err != nil {
		return nil, err
	}
	own := c.RemoteAddr().(*net.TCPAddr)
	var src net.Addr = &net.TCPAddr{IP: net.ParseIP(client), Port: 40000}
	switch {
	case dst != nil:
	case proto.IsDatagram():
		src, dst = &net.UDPAddr{IP: net.ParseIP(client), Port: 40000}, &net.UDPAddr{IP: own.IP, Port: own.Port}
	default:
		dst = own
	}
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proto, SourceAddr: src, DestinationAddr: dst}
	if _, err := h.WriteTo(c); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func TestClientIdentityFromProxyProtocol(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), identityConfig, testFiles, up.addr)

	r, err := askOverProxy(t, f.addr, "127.0.0.2", "10.1.2.3", question("www.tiktok.com.", dns.TypeA, false))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "trusted proxy names a government client")

	r, err = askOverProxy(t, f.addr, "127.0.0.2", "10.20.30.4", question("www.tiktok.com.", dns.TypeA, false))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "trusted proxy names an exempt client")

	// From an untrusted peer the header is not believed: it is read as DNS,
	// which it is not, so no answer for the claimed client comes back.
	r, err = askOverProxy(t, f.addr, "127.0.0.1", "10.1.2.3", question("www.tiktok.com.", dns.TypeA, false))
	if err == nil {
		assert.NotEqual(t, dns.RcodeNameError, r.Rcode)
	}

	var proxied int
	for _, e := range logs.FilterMessage("query").All() {
		if e.ContextMap()[logIdentity] == IdentityProxy {
			proxied++
		}
	}
	assert.Equal(t, 2, proxied)
	// Plain TCP from the trusted proxy, without a header, still works.
	r = ask(t, f.addr, "127.0.0.2", "tcp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
}

// TestProxyHeaderOfAUDPClient: a trusted proxy that relays a query its
// client sent over UDP on a TCP connection says so in its PROXY v2 header
// (UDP over IPv4, 0x12; over IPv6, 0x22), as dnsdist does towards a
// TCP-only or DoT backend; the header names the client all the same. It
// was taken for the proxy itself, so a government device's query got the
// proxy's policy and was forwarded.
func TestProxyHeaderOfAUDPClient(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, identityConfig, testFiles, up.addr)

	tests := []struct {
		name   string
		proto  proxyproto.AddressFamilyAndProtocol
		client string
		want   int
	}{
		{name: "TCP over IPv4", proto: proxyproto.TCPv4, client: "10.1.2.3", want: dns.RcodeNameError},
		{name: "UDP over IPv4", proto: proxyproto.UDPv4, client: "10.1.2.3", want: dns.RcodeNameError},
		{name: "UDP over IPv6, IPv4-mapped", proto: proxyproto.UDPv6, client: "::ffff:10.1.2.3", want: dns.RcodeNameError},
		{name: "UDP over IPv4, exempt client", proto: proxyproto.UDPv4, client: "10.20.30.4", want: dns.RcodeSuccess},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := askOverProxyAs(t, f.addr, "127.0.0.2", tc.client, tc.proto, question("www.tiktok.com.", dns.TypeA, false))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeToString[tc.want], dns.RcodeToString[r.Rcode])
		})
	}
}

func TestRateLimit(t *testing.T) {
	up := startUpstream(t, nil)
	// One token in 1,000 s: no token comes back during the test however
	// slowly a busy machine runs it (at rate 1 the TCP query below found a
	// refilled bucket under -race on a loaded machine).
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nrate_limit: {rate: 0.001, burst: 5, exempt: []}", 1)
	f := startFence(t, cfg, testFiles, up.addr)

	const sent = 20
	var answered atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < sent; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
			if _, _, err := c.Exchange(question("www.tiktok.com.", dns.TypeA, false), f.addr); err == nil {
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.GreaterOrEqual(t, answered.Load(), int64(5), "the burst is answered")
	assert.LessOrEqual(t, answered.Load(), int64(7), "the rest is dropped")
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	defer srv.Close()
	_, body := get(t, srv.URL+"/metrics")
	dropped := sent - answered.Load()
	assert.Contains(t, body, "dnsfence_ratelimited_total{transport=\"udp\"} "+strconv.FormatInt(dropped, 10)+"\n")
	assert.Contains(t, body, "dnsfence_queries_total{result=\"dropped\",transport=\"udp\"} "+strconv.FormatInt(dropped, 10)+"\n")

	// Over the limit on TCP: REFUSED, never silence.
	r := ask(t, f.addr, "", "tcp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeRefused, r.Rcode)
	// Another client has its own bucket.
	r = ask(t, f.addr, "127.0.0.2", "udp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
}

func TestLoopbackIsExemptByDefault(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`upstreams: ["127.0.0.1:53"]`), nil)
	require.NoError(t, err)
	assert.Equal(t, float64(config.DefaultRate), cfg.RateLimit.Rate)
	assert.Equal(t, 2*config.DefaultRate, cfg.RateLimit.Burst)
	assert.Equal(t, []string{"127.0.0.0/8", "::1/128"}, cfg.RateLimit.Exempt)
}

func TestTCPPipelineAnswersInOrderOfCompletion(t *testing.T) {
	up, letGo := startSlowUpstream(t)
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 5s", 1)
	f := startFence(t, cfg, testFiles, up.addr)

	c, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	dc := &dns.Conn{Conn: c}
	slow := question("slow.example.org.", dns.TypeA, false)
	slow.Id = 1
	fast := question("fast.example.org.", dns.TypeA, false)
	fast.Id = 2
	require.NoError(t, dc.WriteMsg(slow))
	require.NoError(t, dc.WriteMsg(fast))
	first, err := dc.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(2), first.Id, "the fast answer is not held behind the slow one")
	letGo()
	second, err := dc.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(1), second.Id)
	assert.Equal(t, "slow.example.org.", second.Question[0].Name)
}

func TestTCPConnectionCap(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nlimits: {tcp_connections: 2, tcp_read_timeout: 10s}", 1)
	f := startFence(t, cfg, testFiles, up.addr)

	hold1, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer hold1.Close()
	hold2, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer hold2.Close()
	// Both slots are taken: a third connection is not served...
	third, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer third.Close()
	dc := &dns.Conn{Conn: third}
	require.NoError(t, dc.WriteMsg(question("example.org.", dns.TypeA, false)))
	require.NoError(t, third.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err = dc.ReadMsg()
	require.Error(t, err, "over the cap")
	// ...until a slot frees.
	hold1.Close()
	require.NoError(t, third.SetReadDeadline(time.Now().Add(5*time.Second)))
	r, err := dc.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
}

func TestHostileInput(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nlimits: {tcp_read_timeout: 300ms, tcp_idle_timeout: 300ms}", 1)
	f := startFence(t, cfg, testFiles, up.addr)

	// A slow-loris client: a length prefix byte, then nothing.
	loris, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer loris.Close()
	_, err = loris.Write([]byte{0})
	require.NoError(t, err)

	// 1,000 garbage UDP packets of random sizes, one of 65,000 bytes.
	g, err := net.Dial("udp", f.addr)
	require.NoError(t, err)
	defer g.Close()
	buf := make([]byte, 65000)
	_, _ = rand.Read(buf)
	_, _ = g.Write(buf)
	for i := 0; i < 1000; i++ {
		n := 1 + int(binary.BigEndian.Uint16(buf[2*i:]))%1500
		_, _ = g.Write(buf[i : i+n])
	}
	// A 64 KiB TCP message of garbage.
	big, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer big.Close()
	frame := make([]byte, 2+65535)
	binary.BigEndian.PutUint16(frame, 65535)
	copy(frame[2:], buf)
	_, err = big.Write(frame)
	require.NoError(t, err)

	// The flood may overrun the socket buffer while it lasts (the kernel
	// drops packets, ours too, and clients retry); once it is read, normal
	// queries are answered at the usual speed.
	require.Eventually(t, func() bool {
		c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
		r, _, err := c.Exchange(question("probe.example.org.", dns.TypeA, false), f.addr)
		return err == nil && r.Rcode == dns.RcodeSuccess
	}, 10*time.Second, 10*time.Millisecond)
	for _, network := range []string{"udp", "tcp"} {
		start := time.Now()
		r := ask(t, f.addr, "", network, question("example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Less(t, time.Since(start), time.Second, network)
		r = ask(t, f.addr, "", network, question("tiktok.com.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
	}
	// The slow-loris connection is closed after the read timeout.
	require.NoError(t, loris.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = loris.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed it, not our deadline: %v", err)
}

// switchable answers only while alive; otherwise it is silent.
func switchable(t *testing.T, alive *atomic.Bool) *testUpstream {
	return startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if !alive.Load() {
			return nil
		}
		return defaultAnswer(w, r)
	})
}

func TestUpstreamFaults(t *testing.T) {
	t.Run("dead first upstream costs a hedge delay, never a timeout, then is marked down", func(t *testing.T) {
		up := startUpstream(t, nil)
		cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 1s", 1)
		dead := silentUpstream(t)
		f := startFence(t, cfg, testFiles, dead, up.addr)
		for i := 0; i < 5; i++ {
			start := time.Now()
			r := ask(t, f.addr, "", "udp", question(fmt.Sprintf("n%d.example.org.", i), dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.Less(t, time.Since(start), 500*time.Millisecond, "the live upstream is asked long before the dead one times out")
		}
		require.Eventually(t, func() bool { return slices.Equal(f.handler.Snapshot().Forwarder().Down(), []string{dead}) },
			5*time.Second, 20*time.Millisecond, "its own tries time out: marked down")
	})

	t.Run("all dead is SERVFAIL in budget, and recovery needs no restart", func(t *testing.T) {
		var alive atomic.Bool
		up := switchable(t, &alive)
		f := startFence(t, testConfig, testFiles, up.addr)
		start := time.Now()
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
		assert.Less(t, time.Since(start), 2*time.Second, "one 300 ms try, generous bound")
		alive.Store(true)
		require.Eventually(t, func() bool {
			r, err := exchange(f.addr, "", "udp", question("example.org.", dns.TypeA, false))
			return err == nil && r.Rcode == dns.RcodeSuccess
		}, 10*time.Second, 50*time.Millisecond)
		require.Eventually(t, func() bool { return len(f.handler.Snapshot().Forwarder().Down()) == 0 },
			10*time.Second, 20*time.Millisecond, "marked up again")
	})

	t.Run("answer with the wrong ID is discarded", func(t *testing.T) {
		good := startUpstream(t, nil)
		liar := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			m := defaultAnswer(w, r)
			m.Id++
			m.Answer = []dns.RR{mustRR("%s 300 IN A 6.6.6.6", r.Question[0].Name)}
			return m
		})
		f := startFence(t, testConfig, testFiles, liar.addr, good.addr)
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
		require.Len(t, r.Answer, 1)
		assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
	})

	t.Run("answer from the wrong address is discarded", func(t *testing.T) {
		good := startUpstream(t, nil)
		spoofer, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		defer spoofer.Close()
		victim := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			// Answer correctly in every way but from another port.
			m := defaultAnswer(w, r)
			m.Answer = []dns.RR{mustRR("%s 300 IN A 6.6.6.6", r.Question[0].Name)}
			b, err := m.Pack()
			if err == nil {
				_, _ = spoofer.WriteTo(b, w.RemoteAddr())
			}
			return nil
		})
		f := startFence(t, testConfig, testFiles, victim.addr, good.addr)
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
		require.Len(t, r.Answer, 1)
		assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
	})
}

// TestNoCrossClientLeak is the regression test for CoreDNS's old bug: a
// client in a blocking policy must never receive a positive answer that a
// query of another client put into a cache.
func TestNoCrossClientLeak(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "cloaked.example." {
			m.Answer = []dns.RR{mustRR("cloaked.example. 300 IN CNAME p16.tiktokcdn.com."), mustRR("p16.tiktokcdn.com. 300 IN A 192.0.2.5")}
		} else {
			m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.6", r.Question[0].Name)}
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, name := range []string{"cloaked.example.", "www.tiktok.com."} {
		// The press office (exempt) asks first; its positive answer may be
		// cached...
		r := ask(t, f.addr, "127.0.0.3", "udp", question(name, dns.TypeA, false))
		require.Equal(t, dns.RcodeSuccess, r.Rcode, name)
		require.NotEmpty(t, r.Answer)
		// ...a government device then asks the same, over both transports.
		for _, network := range []string{"udp", "tcp"} {
			r = ask(t, f.addr, "127.0.0.1", network, question(name, dns.TypeA, false))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s over %s", name, network)
			assert.Empty(t, r.Answer)
		}
	}
}

func TestDoHCanary(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "blocked_ttl: 60", "blocked_ttl: 60\nexplain_clients: [\"127.0.0.0/28\"]", 1) + `  - name: canary-off
    clients: ["127.0.0.9/32"]
    block: ["tiktok.txt"]
    doh_canary: false
`
	f := startFence(t, cfg, testFiles, up.addr)
	tests := []struct {
		name      string
		from      string
		wantRcode int
	}{
		{name: "blocking policy answers the canary NXDOMAIN", from: "127.0.0.1", wantRcode: dns.RcodeNameError},
		{name: "so does a policy of action refused", from: "127.0.0.6", wantRcode: dns.RcodeNameError},
		{name: "and one of action null, not 0.0.0.0", from: "127.0.0.7", wantRcode: dns.RcodeNameError},
		{name: "exemption does not", from: "127.0.0.3", wantRcode: dns.RcodeSuccess},
		{name: "no policy does not", from: "127.0.0.8", wantRcode: dns.RcodeSuccess},
		{name: "turned off per policy", from: "127.0.0.9", wantRcode: dns.RcodeSuccess},
	}
	// Firefox's canary, and the two names Apple has networks answer
	// NXDOMAIN for to turn iCloud Private Relay off, which sends every
	// DNS query of the device through Apple's relay, past dnsfence.
	canaries := []string{"use-application-dns.net.", "mask.icloud.com.", "mask-h2.icloud.com."}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range canaries {
				for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS} {
					r := ask(t, f.addr, tc.from, "udp", question(name, qtype, true))
					assert.Equal(t, tc.wantRcode, r.Rcode, "%s %s", name, dns.TypeToString[qtype])
					if tc.wantRcode == dns.RcodeNameError {
						assert.Empty(t, r.Answer, "%s %s", name, dns.TypeToString[qtype])
						assert.Contains(t, ede(r).ExtraText, DoHCanaryList)
					}
				}
				if tc.wantRcode == dns.RcodeNameError {
					// explain says the answer the canary gets, not the action's.
					m := question(name+"explain.dnsfence.", dns.TypeTXT, false)
					m.Question[0].Qclass = dns.ClassCHAOS
					r := ask(t, f.addr, tc.from, "udp", m)
					require.Len(t, r.Answer, 1)
					assert.Contains(t, strings.Join(r.Answer[0].(*dns.TXT).Txt, "\n"), "verdict: blocked (NXDOMAIN)", name)
				}
			}
		})
	}
}

// TestDoHCanaryListedByTheOperator: a block list of the operator's own
// that lists the canary (a DoH-bypass list, an RPZ feed) comes before the
// built-in one in the policy, and its entry was the one that blocked:
// under action null the canary got A 0.0.0.0 and under refused REFUSED,
// where README promises NXDOMAIN whatever the action. It gets NXDOMAIN,
// on the wire path (UDP, no EDNS), the message path and TCP, and explain
// says so; doh_canary: false still leaves it to the policy's action.
func TestDoHCanaryListedByTheOperator(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "blocked_ttl: 60", "blocked_ttl: 60\nexplain_clients: [\"127.0.0.0/28\"]", 1) + `  - name: null-listing
    clients: ["127.0.0.10/32"]
    block: ["bypass.txt", "tiktok.txt"]
    action: null
  - name: refused-listing
    clients: ["127.0.0.11/32"]
    block: ["bypass.txt"]
    action: refused
  - name: rpz-listing
    clients: ["127.0.0.12/32"]
    block: ["bypass.rpz"]
    action: null
  - name: canary-off-listing
    clients: ["127.0.0.13/32"]
    block: ["bypass.txt"]
    action: null
    doh_canary: false
`
	files := map[string]string{
		"bypass.txt": "dns.google\nuse-application-dns.net\n",
		"bypass.rpz": rpzHead + "use-application-dns.net CNAME .\n",
	}
	maps.Copy(files, testFiles)
	f := startFence(t, cfg, files, up.addr)
	for _, tc := range []struct {
		from      string
		wantRcode int
	}{
		{"127.0.0.10", dns.RcodeNameError},
		{"127.0.0.11", dns.RcodeNameError},
		{"127.0.0.12", dns.RcodeNameError},
		{"127.0.0.13", dns.RcodeSuccess}, // the operator's own entry, its policy's null
	} {
		for _, network := range []string{"udp", "tcp"} {
			for _, edns := range []bool{false, true} {
				for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
					r := ask(t, f.addr, tc.from, network, question("use-application-dns.net.", qtype, edns))
					what := fmt.Sprintf("from %s over %s, EDNS %v, %s", tc.from, network, edns, dns.TypeToString[qtype])
					assert.Equal(t, tc.wantRcode, r.Rcode, what)
					if tc.wantRcode == dns.RcodeNameError {
						assert.Empty(t, r.Answer, what)
						if edns {
							assert.Contains(t, ede(r).ExtraText, DoHCanaryList, what)
						}
					}
				}
			}
		}
		if tc.wantRcode == dns.RcodeNameError {
			m := question("use-application-dns.net.explain.dnsfence.", dns.TypeTXT, false)
			m.Question[0].Qclass = dns.ClassCHAOS
			r := ask(t, f.addr, tc.from, "udp", m)
			require.Len(t, r.Answer, 1)
			assert.Contains(t, strings.Join(r.Answer[0].(*dns.TXT).Txt, "\n"), "verdict: blocked (NXDOMAIN)", tc.from)
		}
	}
	// The list's other names keep the policy's action.
	r := ask(t, f.addr, "127.0.0.10", "udp", question("dns.google.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "0.0.0.0", r.Answer[0].(*dns.A).A.String())
	r = ask(t, f.addr, "127.0.0.11", "udp", question("dns.google.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeRefused, r.Rcode)
	assert.Zero(t, up.count.Load(), "blocked: nothing went upstream")
}

// The block of a DoH canary name an operator's list holds names the
// first list that matched it where the built-in list changes nothing of
// the answer: under action nxdomain, whose every block is NXDOMAIN, and
// with doh_canary off, where no list is the canary's (Policy.compile
// takes the built-in list alone as the canary, and only when the action
// is not nxdomain). The EDE text and the audit line name the operator's
// list, not a later one that lists the name too.
func TestDoHCanaryNamedByTheFirstListThatMatched(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := testConfig + `  - name: nxdomain-listing
    clients: ["127.0.0.8/32"]
    block: ["bypass.txt", "other.txt"]
  - name: canary-off-listing
    clients: ["127.0.0.9/32"]
    block: ["bypass.txt", "other.txt"]
    action: null
    doh_canary: false
`
	files := map[string]string{
		"bypass.txt": "use-application-dns.net\n",
		"other.txt":  "use-application-dns.net\n",
	}
	maps.Copy(files, testFiles)
	f := startFence(t, cfg, files, up.addr)
	for _, tc := range []struct {
		from      string
		wantRcode int
	}{
		{"127.0.0.8", dns.RcodeNameError},
		{"127.0.0.9", dns.RcodeSuccess}, // the operator's entry, its policy's null
	} {
		r := ask(t, f.addr, tc.from, "udp", question("use-application-dns.net.", dns.TypeA, true))
		assert.Equal(t, tc.wantRcode, r.Rcode, tc.from)
		require.NotNil(t, ede(r), tc.from)
		assert.Contains(t, ede(r).ExtraText, "/bypass.txt", tc.from)
		assert.NotContains(t, ede(r).ExtraText, "other.txt", tc.from)
		assert.NotContains(t, ede(r).ExtraText, DoHCanaryList, tc.from)
	}
	assert.Zero(t, up.count.Load(), "blocked: nothing went upstream")
}

func TestShippedDoHBypassList(t *testing.T) {
	up := startUpstream(t, nil)
	files := map[string]string{}
	maps.Copy(files, testFiles)
	data, err := os.ReadFile("../configs/lists/doh-bypass.txt")
	require.NoError(t, err)
	files["bytedance.txt"] = string(data) // in the government policy's block
	f := startFence(t, testConfig, files, up.addr)
	for _, name := range []string{"dns.google.", "mozilla.cloudflare-dns.com.", "dns.quad9.net.", "dns.nextdns.io.", "abc123.dns.nextdns.io."} {
		r := ask(t, f.addr, "", "udp", question(name, dns.TypeHTTPS, false))
		assert.Equal(t, dns.RcodeNameError, r.Rcode, name)
	}
	for _, name := range []string{"google.com.", "quad9.net.", "www.cloudflare.com."} {
		r := ask(t, f.addr, "", "udp", question(name, dns.TypeA, false))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: only the resolver names, never the provider", name)
	}
}

// An ECS network held whole by a range of a blocking policy is decided by
// that range, and is not "wider" than it (PolicyForClient): the flag that
// makes explain say a range inside the network decides it is set only
// when the network does hold a range of a blocking policy it is not held
// by.
func TestECSNetworkInsideABlockingRangeIsNotWider(t *testing.T) {
	s := loadSnapshot(t, writeConfig(t, ecsWiderConfig, map[string]string{
		"devices.txt": "10.1.5.5\n10.20.30.200\n",
		"tiktok.txt":  "tiktok.com\n",
	}, "127.0.0.1:1"), nil)
	for _, tc := range []struct {
		client, policy string
		wider          bool
	}{
		{"10.200.0.0/16", "gov", false},    // inside gov's 10.128.0.0/9
		{"10.1.0.0/24", "refusing", false}, // inside refusing's 10.1.0.0/16
		{"10.0.0.0/8", "gov", true},        // holds gov's /9, in no range
	} {
		cr, ok, wider := s.PolicyForClient(netip.MustParsePrefix(tc.client))
		require.True(t, ok, tc.client)
		assert.Equal(t, tc.policy, cr.Policy.Name, tc.client)
		assert.Equal(t, tc.wider, wider, tc.client)
	}
	// An IPv6 network holds no IPv4 device (unless it holds all of
	// ::ffff:0:0/96: devicesIn), so the IPv4 ranges of gov do not decide it.
	_, ok, _ := s.PolicyForClient(netip.MustParsePrefix("2001:db8::/56"))
	assert.False(t, ok, "an IPv6 network in no range, with no blocking range inside")
}
