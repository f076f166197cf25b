package resolver

import (
	"cmp"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// namesConfig: 127.0.0.0/24 is the government range with one list holding
// tiktok.com; 127.0.0.1 may ask the CHAOS explain query.
const namesConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.0.0/8"]
explain_clients: ["127.0.0.1/32"]
log: {queries: blocked}
policies:
  - name: gov
    clients: ["127.0.0.0/24"]
    block: ["lists/tiktok.txt"]
`

var namesFiles = map[string]string{"lists/tiktok.txt": "tiktok.com\n"}

// rep is a label of n copies of the presentation text of one octet.
func rep(octet string, n int) string { return strings.Repeat(octet, n) }

// wireLen is the length of name in wire form.
func wireLen(t *testing.T, name string) int {
	t.Helper()
	var b [512]byte
	n, err := dns.PackDomainName(name, b[:], 0, nil, false)
	require.NoError(t, err, name)
	return n
}

// canonical is name as it comes back from the wire: the presentation form
// miekg/dns gives every name it unpacks.
func canonical(t *testing.T, name string) string {
	t.Helper()
	var b [512]byte
	n, err := dns.PackDomainName(name, b[:], 0, nil, false)
	require.NoError(t, err, name)
	s, _, err := dns.UnpackDomainName(b[:n], 0)
	require.NoError(t, err, name)
	return s
}

// escapedNames are names whose presentation text differs from their octets:
// each is blocked (under tiktok.com) or not exactly as its wire form is.
var escapedNames = []struct {
	name    string
	qname   string
	blocked bool
	wire    int // the name's length in wire form, when the case is about it
}{
	{name: "label of 63 octets 0x01", qname: rep(`\001`, 63) + ".tiktok.com.", blocked: true, wire: 76},
	{name: "label of 60 octets 0x01", qname: rep(`\001`, 60) + ".tiktok.com.", blocked: true},
	{name: "name of 255 octets", qname: rep(`\001`, 63) + "." + rep(`\255`, 63) + "." + rep(`\000`, 63) + "." + rep("a", 50) + ".tiktok.com.", blocked: true, wire: 255},
	{name: "four labels of 63 escaped octets", qname: rep(`\200`, 63) + "." + rep(`\(`, 62) + "." + rep(`\.`, 61) + ".www.tiktok.com.", blocked: true},
	{name: "escaped letters spell tiktok", qname: `www.\116\105\107\116\111\107.com.`, blocked: true},
	{name: "escaped upper-case letter", qname: `www.\084IKTOK.COM.`, blocked: true},
	{name: "escaped specials in a label", qname: `\(\)\"\;\@\ \\.tiktok.com.`, blocked: true},
	{name: "escaped dot inside a lower label", qname: `a\.b.tiktok.com.`, blocked: true},
	{name: "octets 0 and 255", qname: `\000\255.tiktok.com.`, blocked: true},
	{name: "single label tiktok.com is not the name tiktok.com", qname: `tiktok\.com.`},
	{name: "single label www.tiktok.com under nothing", qname: `www\.tiktok\.com.`},
	{name: "escaped dot joins the last labels", qname: `www.tiktok\.com.`},
	{name: "escaped dot joins the entry labels under another zone", qname: `tiktok\.com.example.`},
	{name: "control octet in the entry label", qname: `tik\000tok.com.`},
	{name: "look-alike with escapes", qname: rep(`\001`, 63) + `.not\116iktok.com.`},
}

// TestEscapedNamesAreMatchedInWireForm: a name is blocked or not by its
// wire-form labels, whatever its presentation text looks like or however
// long it is; the block is audited and explained with the entry that made
// it.
func TestEscapedNamesAreMatchedInWireForm(t *testing.T) {
	up := startUpstream(t, nil)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), namesConfig, namesFiles, up.addr)
	list := filepath.Join(f.dir, "lists/tiktok.txt")
	for _, tc := range escapedNames {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wire != 0 {
				require.Equal(t, tc.wire, wireLen(t, tc.qname))
			}
			first := up.count.Load()
			for _, network := range []string{"udp", "tcp"} {
				logs.TakeAll()
				before := up.count.Load()
				req := question(tc.qname, dns.TypeA, true)
				r := ask(t, f.addr, "127.0.0.9", network, req)
				require.Len(t, r.Question, 1)
				assert.Equal(t, canonical(t, tc.qname), r.Question[0].Name, "question echoed")
				if !tc.blocked {
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, network)
					assert.Len(t, r.Answer, 1)
					assert.Equal(t, first+1, up.count.Load(), "forwarded once, then from the cache")
					assert.Zero(t, logs.FilterMessage("query").Len(), "no audit line")
					continue
				}
				assert.Equal(t, dns.RcodeNameError, r.Rcode, network)
				assert.Empty(t, r.Answer)
				assert.Equal(t, before, up.count.Load(), "never sent upstream")
				require.Len(t, r.Ns, 1)
				assert.Equal(t, "tiktok.com.", r.Ns[0].Header().Name, "SOA owned by the entry")
				e := ede(r)
				require.NotNil(t, e)
				assert.Equal(t, `blocked by policy "gov", list `+list, e.ExtraText)
				lines := logs.FilterMessage("query").All()
				require.Len(t, lines, 1, "one audit line")
				audit := lines[0].ContextMap()
				assert.Equal(t, "tiktok.com", audit[logEntry])
				assert.Equal(t, list, audit[logList])
				assert.EqualValues(t, 1, audit[logListLine])
				assert.Equal(t, strings.ToLower(canonical(t, tc.qname)), audit[logQName])
			}

			x := f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.0.9"), tc.qname, dns.TypeA)
			if !tc.blocked {
				assert.Equal(t, ResultForwarded, x.Result)
				assert.Contains(t, x.String(), "is on no list of the policy")
				return
			}
			assert.Equal(t, ResultBlocked, x.Result)
			assert.Contains(t, x.String(), " blocked by "+list+":1: tiktok.com\n")
		})
	}
}

// TestChaosExplainOfEscapedNames: the CHAOS explain query decides the name
// below .explain.dnsfence. by its wire form too, and only a name whose last
// two labels are explain and dnsfence is an explain query.
func TestChaosExplainOfEscapedNames(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, namesConfig, namesFiles, up.addr)
	list := filepath.Join(f.dir, "lists/tiktok.txt")
	chaos := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		m.Question[0].Qclass = dns.ClassCHAOS
		return ask(t, f.addr, "", "tcp", m) // long names make long explanations
	}
	text := func(t *testing.T, r *dns.Msg) string {
		require.Len(t, r.Answer, 1, r.String())
		// miekg/dns gives TXT strings in presentation form; a long line
		// comes in 255-octet pieces.
		return strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(strings.Join(r.Answer[0].(*dns.TXT).Txt, ""))
	}
	for _, tc := range escapedNames {
		if wireLen(t, tc.qname)+len("explain.dnsfence.") > 255 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			r := chaos(tc.qname + "explain.dnsfence.")
			require.Equal(t, dns.RcodeSuccess, r.Rcode)
			if tc.blocked {
				assert.Contains(t, text(t, r), " blocked by "+list+":1: tiktok.com")
				assert.Contains(t, text(t, r), "verdict: blocked (NXDOMAIN)")
			} else {
				assert.Contains(t, text(t, r), "verdict: forwarded")
			}
		})
	}
	assert.Zero(t, up.count.Load(), "explain queries never go upstream")
	t.Run("escaped dot before explain is no explain query", func(t *testing.T) {
		// Its labels are www, "tiktok.explain" and dnsfence: an ordinary
		// CHAOS question, refused as every one that is no explain question
		// (TestServerClassesNotForwarded), not explained.
		r := chaos(`www.tiktok\.explain.dnsfence.`)
		for _, rr := range r.Answer {
			assert.NotContains(t, rr.String(), "verdict")
		}
		assert.Equal(t, dns.RcodeRefused, r.Rcode)
		assert.Empty(t, r.Answer)
		assert.Zero(t, up.count.Load())
	})
}

// aliasAnswers are upstream answers, by question name, that point the
// client at other names.
var aliasAnswers = map[string][]string{
	"cname-63.example.":      {"cname-63.example. 300 IN CNAME " + rep(`\001`, 63) + ".tiktok.com.", rep(`\001`, 63) + ".tiktok.com. 300 IN A 192.0.2.1"},
	"cname-255.example.":     {"cname-255.example. 300 IN CNAME " + rep(`\001`, 63) + "." + rep(`\255`, 63) + "." + rep(`\000`, 63) + "." + rep("a", 50) + ".tiktok.com."},
	"cname-letters.example.": {`cname-letters.example. 300 IN CNAME edge.\116\105\107\084\079\075.com.`},
	"cname-label.example.":   {`cname-label.example. 300 IN CNAME tiktok\.com.`, `tiktok\.com. 300 IN A 192.0.2.1`},
	"cname-labels.example.":  {`cname-labels.example. 300 IN CNAME www.tiktok\.com.`},
	"dname.example.":         {"dname.example. 300 IN DNAME tiktok.com."},
	"dname-chain.example.":   {"dname-chain.example. 300 IN CNAME www.hop.example.", "hop.example. 300 IN DNAME tiktok.com."},
	"https-alias.example.":   {"https-alias.example. 300 IN HTTPS 0 www.tiktok.com."},
	"https-service.example.": {"https-service.example. 300 IN HTTPS 1 www.tiktok.com. alpn=h2 ipv4hint=192.0.2.1"},
	"https-escaped.example.": {"https-escaped.example. 300 IN HTTPS 1 " + rep(`\001`, 63) + ".tiktok.com. alpn=h2"},
	"https-chain.example.":   {"https-chain.example. 300 IN CNAME hop.example.", "hop.example. 300 IN HTTPS 0 p16.tiktok.com."},
	"https-self.example.":    {"https-self.example. 300 IN HTTPS 1 . alpn=h2 ipv4hint=192.0.2.1"},
	"https-clean.example.":   {"https-clean.example. 300 IN HTTPS 0 cdn.example.net."},
	"svcb-alias.example.":    {"svcb-alias.example. 300 IN SVCB 0 www.tiktok.com."},
	"svcb-service.example.":  {"svcb-service.example. 300 IN SVCB 1 api.tiktok.com. port=443"},
	"svcb-self.example.":     {"svcb-self.example. 300 IN SVCB 1 . port=443"},
	"mx.example.":            {"mx.example. 300 IN MX 10 mail.tiktok.com."},
	"srv.example.":           {"srv.example. 300 IN SRV 0 0 443 svc.tiktok.com."},
	"ns.example.":            {"ns.example. 300 IN NS ns1.tiktok.com."},
}

// aliasUpstream answers from aliasAnswers. An answer whose chain ends in
// no record of the type asked is a NODATA (RFC 2308 §2.2), and carries the
// SOA an authoritative server's NODATA does, so that it is cached (§5).
func aliasUpstream(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	relevant := false
	for _, s := range aliasAnswers[strings.ToLower(r.Question[0].Name)] {
		rr := mustRR("%s", s)
		m.Answer = append(m.Answer, rr)
		relevant = relevant || rr.Header().Rrtype == r.Question[0].Qtype
	}
	if !relevant {
		m.Ns = []dns.RR{mustRR("example. 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 300")}
	}
	return m
}

// TestAnswerInspectionFollowsAliases: every name an answer points the
// client at is inspected, fresh from the upstream and from the cache: the
// targets of CNAME, DNAME, HTTPS and SVCB records, spelt with escapes or
// not, but not the servers an MX, SRV or NS record names. An explanation of
// the same answer reaches the same verdict.
func TestAnswerInspectionFollowsAliases(t *testing.T) {
	up := startUpstream(t, aliasUpstream)
	f := startFence(t, namesConfig, namesFiles, up.addr)
	list := filepath.Join(f.dir, "lists/tiktok.txt")
	tests := []struct {
		qname   string
		qtype   uint16
		blocked string // the answer's name that is blocked; "" when none
		// hop is the name explain -resolve says the answer's one record
		// leads to, when checked: the alias target, else the owner.
		hop string
	}{
		{qname: "cname-63.example.", qtype: dns.TypeA, blocked: rep(`\001`, 63) + ".tiktok.com."},
		{qname: "cname-255.example.", qtype: dns.TypeA, blocked: rep(`\001`, 63) + "." + rep(`\255`, 63) + "." + rep(`\000`, 63) + "." + rep("a", 50) + ".tiktok.com."},
		{qname: "cname-letters.example.", qtype: dns.TypeA, blocked: "edge.tikTOK.com."},
		{qname: "cname-label.example.", qtype: dns.TypeA},
		{qname: "cname-labels.example.", qtype: dns.TypeA},
		{qname: "dname.example.", qtype: dns.TypeDNAME, blocked: "tiktok.com."},
		{qname: "dname-chain.example.", qtype: dns.TypeA, blocked: "tiktok.com."}, // the DNAME without the CNAME it makes
		{qname: "https-alias.example.", qtype: dns.TypeHTTPS, blocked: "www.tiktok.com."},
		{qname: "https-service.example.", qtype: dns.TypeHTTPS, blocked: "www.tiktok.com."},
		{qname: "https-escaped.example.", qtype: dns.TypeHTTPS, blocked: rep(`\001`, 63) + ".tiktok.com."},
		{qname: "https-chain.example.", qtype: dns.TypeHTTPS, blocked: "p16.tiktok.com."},
		{qname: "https-self.example.", qtype: dns.TypeHTTPS, hop: "https-self.example."},
		{qname: "https-clean.example.", qtype: dns.TypeHTTPS, hop: "cdn.example.net."},
		{qname: "svcb-alias.example.", qtype: dns.TypeSVCB, blocked: "www.tiktok.com."},
		{qname: "svcb-service.example.", qtype: dns.TypeSVCB, blocked: "api.tiktok.com."},
		{qname: "svcb-self.example.", qtype: dns.TypeSVCB, hop: "svcb-self.example."},
		{qname: "mx.example.", qtype: dns.TypeMX, hop: "mx.example."},
		{qname: "srv.example.", qtype: dns.TypeSRV, hop: "srv.example."},
		{qname: "ns.example.", qtype: dns.TypeNS, hop: "ns.example."},
	}
	for _, tc := range tests {
		t.Run(tc.qname, func(t *testing.T) {
			before := up.count.Load()
			for _, from := range []string{"127.0.0.9", "127.0.0.10", "127.0.1.1"} {
				r := ask(t, f.addr, from, "udp", question(tc.qname, tc.qtype, true))
				if tc.blocked == "" || from == "127.0.1.1" { // 127.0.1.1 is in no policy
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, from)
					assert.Len(t, r.Answer, len(aliasAnswers[tc.qname]), from)
					continue
				}
				assert.Equal(t, dns.RcodeNameError, r.Rcode, from)
				assert.Empty(t, r.Answer, "no part of the answer leaks")
				require.Len(t, r.Ns, 1)
				assert.Equal(t, tc.qname, r.Ns[0].Header().Name, "SOA at the question name")
				e := ede(r)
				require.NotNil(t, e)
				assert.Equal(t, `blocked by policy "gov", list `+list, e.ExtraText)
			}
			assert.Equal(t, before+1, up.count.Load(), "one upstream query; the others from the cache")

			// The answer as explain -resolve gets it: through the wire.
			wire, err := aliasUpstream(nil, question(tc.qname, tc.qtype, false)).Pack()
			require.NoError(t, err)
			resp := new(dns.Msg)
			require.NoError(t, resp.Unpack(wire))
			x := f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.0.9"), tc.qname, tc.qtype)
			f.handler.Snapshot().ExplainAnswer(&x, resp)
			if tc.blocked == "" {
				assert.Equal(t, ResultForwarded, x.Result)
				assert.NotContains(t, x.String(), " blocked by ")
				if tc.hop != "" && assert.Len(t, x.Hops, 1) {
					assert.Equal(t, tc.hop, x.Hops[0].Name, "the name the record leads to")
				}
				return
			}
			assert.Equal(t, ResultBlocked, x.Result)
			assert.Contains(t, x.String(), "    "+canonical(t, tc.blocked)+" blocked by "+list+":1: tiktok.com\n")
		})
	}
}

// TestExplainName: a CHAOS TXT question is an explain question when its
// last two labels are explain and dnsfence, whatever the case; escaped dots
// are not label boundaries.
func TestExplainName(t *testing.T) {
	for _, tc := range []struct {
		qname  string
		class  uint16
		qtype  uint16
		want   string
		wantOK bool
	}{
		{qname: "www.tiktok.com.explain.dnsfence.", want: "www.tiktok.com.", wantOK: true},
		{qname: "WWW.x.EXPLAIN.DnsFence.", want: "WWW.x.", wantOK: true},
		{qname: `x\\.explain.dnsfence.`, want: `x\\.`, wantOK: true},
		{qname: rep(`\001`, 63) + ".explain.dnsfence.", want: rep(`\001`, 63) + ".", wantOK: true},
		{qname: "explain.dnsfence."},
		{qname: "dnsfence."},
		{qname: `x\.explain.dnsfence.`},
		{qname: `\.explain.dnsfence.`},
		{qname: `x.explain\.dnsfence.`},
		{qname: "x.notexplain.dnsfence."},
		{qname: "www.tiktok.com.explain.dnsfence.", class: dns.ClassINET},
		{qname: "www.tiktok.com.explain.dnsfence.", qtype: dns.TypeA},
	} {
		q := dns.Question{Name: tc.qname, Qclass: cmp.Or(tc.class, dns.ClassCHAOS), Qtype: cmp.Or(tc.qtype, dns.TypeTXT)}
		got, ok := explainName(q)
		assert.Equal(t, tc.wantOK, ok, tc.qname)
		assert.Equal(t, tc.want, got, tc.qname)
	}
}
