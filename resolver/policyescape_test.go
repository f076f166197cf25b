package resolver

import (
	"net"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestECSMappedIPv6IsIPv4: a trusted proxy that names a government client
// by an ECS option of family 2 holding the IPv4-mapped address
// ::ffff:127.0.0.2 (as a dual-stack proxy sees an IPv4 client) must get the
// government policy, as the same address as a packet source does (DESIGN
// §1.2: IPv4-mapped IPv6 is unmapped).
func TestECSMappedIPv6IsIPv4(t *testing.T) {
	up := startUpstream(t, nil)
	cfg := testConfig + "trusted_proxies: [\"127.0.0.9/32\"]\n"
	f := startFence(t, cfg, testFiles, up.addr)

	for _, tc := range []struct {
		name   string
		family uint16
		mask   uint8
		addr   net.IP
	}{
		{"ipv4", 1, 32, net.ParseIP("127.0.0.2").To4()},
		{"mapped /128", 2, 128, net.ParseIP("::ffff:127.0.0.2")},
		{"mapped /126", 2, 126, net.ParseIP("::ffff:127.0.0.0")}, // 127.0.0.0/30, the range itself
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := question("www.tiktok.com.", dns.TypeA, true)
			opt := req.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: tc.family, SourceNetmask: tc.mask, Address: tc.addr})
			r := ask(t, f.addr, "127.0.0.9", "udp", req)
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "government client named by ECS %s got %s", tc.addr, dns.RcodeToString[r.Rcode])
		})
	}
}

// TestEverySpellingOfABlockedName: every spelling of a blocked name is blocked, and
// look-alikes are not.
func TestEverySpellingOfABlockedName(t *testing.T) {
	block, err := blocklist.Parse("b.txt", []byte("tiktok.com\n0.0.0.0 a.example b.example # c\r\n||capcut.com^\n.dot.example.\nUPPER.Example\n"))
	require.NoError(t, err)
	p := &Policy{Name: "gov", Block: []List{block}}
	p.compile()
	for _, n := range []string{
		"tiktok.com", "tiktok.com.", "TIKTOK.COM.", "www.tiktok.com.", `\116iktok.com.`, `www.\084IKTOK.com.`,
		"a.b.tiktok.com.", `x.tiktok.\099om.`,
		"b.example.", "x.a.example.", "capcut.com.", "y.dot.example.", "upper.example.", "*.tiktok.com.",
		`\*.tiktok.com.`, `x\000y.tiktok.com.`,
	} {
		assert.True(t, p.Decide(n).Blocked, "%q not blocked", n)
	}
	for _, n := range []string{"nottiktok.com.", "tiktok.com.example.org.", "tiktok.co.", `tiktok\.com.`, "c.", ".", "com.", "example."} {
		assert.False(t, p.Decide(n).Blocked, "%q blocked", n)
	}
}

// TestCachedAliasInspectedForGovernment: an answer first fetched for a client
// outside any policy (127.0.0.8) and cached is inspected when a government
// client (127.0.0.2) asks: CNAME targets, owners in another case, HTTPS
// alias targets, over UDP (wire path) and TCP (message path).
func TestCachedAliasInspectedForGovernment(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch q.Name {
		case "cname.example.":
			m.Answer = append(m.Answer, mustRR("CNAME.EXAMPLE. 300 IN CNAME WWW.TikTok.COM."), mustRR("WWW.TikTok.COM. 300 IN A 192.0.2.7"))
		case "https.example.":
			m.Answer = append(m.Answer, mustRR("https.example. 300 IN HTTPS 0 edge.tiktok.com."))
		case "svc.example.":
			m.Answer = append(m.Answer, mustRR("svc.example. 300 IN HTTPS 1 edge.TIKTOKCDN.com. alpn=h2"))
		case "dname.example.":
			m.Answer = append(m.Answer, mustRR("example. 300 IN DNAME tiktok.com."), mustRR("dname.example. 300 IN CNAME dname.tiktok.com."))
		default:
			return defaultAnswer(w, r)
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name  string
		qtype uint16
	}{{"cname.example.", dns.TypeA}, {"https.example.", dns.TypeHTTPS}, {"svc.example.", dns.TypeHTTPS}, {"dname.example.", dns.TypeA}} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+network, func(t *testing.T) {
				for _, edns := range []bool{false, true} {
					r := ask(t, f.addr, "127.0.0.8", network, question(tc.name, tc.qtype, edns))
					require.Equal(t, dns.RcodeSuccess, r.Rcode)
					r = ask(t, f.addr, "127.0.0.2", network, question(tc.name, tc.qtype, edns))
					assert.Equal(t, dns.RcodeNameError, r.Rcode, "cached answer served to government client")
				}
			})
		}
	}
}
