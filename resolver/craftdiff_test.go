package resolver

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// craftAnswer is the crafted upstream's answer to r: its first label says
// what it answers.
func craftAnswer(r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	name := q.Name
	label := strings.ToLower(name[:strings.IndexByte(name, '.')])
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = false
	m.RecursionAvailable = true
	soa := mustRR("craft.test. 900 IN SOA ns.craft.test. host.craft.test. 1 3600 600 86400 120")
	do := r.IsEdns0() != nil && r.IsEdns0().Do()
	switch label {
	case "ad":
		m.AuthenticatedData = true
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.8", name)}
	case "upper":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.9", strings.ToUpper(name))}
	case "lowerq":
		m.Question[0].Name = strings.ToLower(name)
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.9", strings.ToLower(name))}
	case "dupes":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name), mustRR("%s 300 IN A 192.0.2.1", name)}
	case "otherclass":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name), mustRR(`%s 300 CH TXT "chaos"`, name)}
	case "unrelated":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name), mustRR("elsewhere.craft.test. 300 IN A 192.0.2.2")}
	case "outoforder":
		m.Answer = []dns.RR{mustRR("b.craft.test. 300 IN A 192.0.2.3"), mustRR("%s 300 IN CNAME b.craft.test.", name)}
	case "interleaved":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name), mustRR("%s 300 IN AAAA 2001:db8::1", name), mustRR("%s 300 IN A 192.0.2.2", name)}
	case "nodatanosoa":
	case "nxnosoa":
		m.Rcode = dns.RcodeNameError
	case "nx":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	case "yx":
		m.Rcode = dns.RcodeYXDomain
		m.Answer = []dns.RR{mustRR("%s 300 IN DNAME %s.craft.test.", name, strings.Repeat("x", 60))}
	case "aa":
		m.Authoritative = true
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name)}
	case "zbit":
		m.Zero = true
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name)}
	case "ra0":
		m.RecursionAvailable = false
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name)}
	case "ttltop":
		m.Answer = []dns.RR{mustRR("%s 2147483649 IN A 192.0.2.1", name)}
	case "rrsigfirst":
		m.Answer = []dns.RR{mustRR("%s 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 1 craft.test. AAAA", name),
			mustRR("%s 300 IN A 192.0.2.1", name)}
	case "alwayssigned":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name),
			mustRR("%s 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 1 craft.test. AAAA", name)}
		m.Ns = []dns.RR{mustRR("craft.test. 300 IN NSEC z.craft.test. A RRSIG NSEC")}
	case "casedata":
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME WwW.CrAfT.TeSt.", name), mustRR("WwW.CrAfT.TeSt. 300 IN A 192.0.2.1")}
	case "empty":
		m.Answer = []dns.RR{mustRR("%s 300 IN TYPE65010 \\# 0", name)}
	case "glue":
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.craft.test.", name)}
		m.Ns = []dns.RR{mustRR("craft.test. 300 IN NS ns.craft.test.")}
		m.Extra = []dns.RR{mustRR("mx.craft.test. 300 IN A 192.0.2.25"), mustRR("ns.craft.test. 300 IN AAAA 2001:db8::53")}
	case "refnoaa":
		m.Ns = []dns.RR{mustRR("sub.craft.test. 300 IN NS ns.sub.craft.test.")}
		m.Extra = []dns.RR{mustRR("ns.sub.craft.test. 300 IN A 192.0.2.53")}
	case "soaanswer":
		m.Answer = []dns.RR{soa}
	case "nxcname":
		m.Rcode = dns.RcodeNameError
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME gone.craft.test.", name)}
		m.Ns = []dns.RR{soa}
	// Names like the blocked tiktok.com that are not it (one label
	// "tiktok.com", a label "com\000", a name below another top-level
	// label...): a client whose policy blocks tiktok.com gets these
	// answers whole.
	case "la1", "la2", "la3", "la4", "la5", "la6", "la7", "la8":
		target := map[string]string{"la1": `tiktok\.com.`, "la2": `tiktok.com\000.`, "la3": `tiktok.com.\000.`, "la4": `xtiktok.com.`,
			"la5": `tiktok.co.`, "la6": `tiktok.com.craft.test.`, "la7": `tiktok\046com.`, "la8": `tiktok.com\.`}[label]
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME %s", name, target), mustRR("%s 300 IN A 192.0.2.1", target)}
		m.Ns = []dns.RR{mustRR("craft.test. 300 IN NS %s", target)}
		m.Extra = []dns.RR{mustRR("%s 300 IN AAAA 2001:db8::1", target)}
	case "lh1", "lh2":
		target := map[string]string{"lh1": `tiktok\.com.`, "lh2": `tiktok.com\000.`}[label]
		m.Answer = []dns.RR{mustRR("%s 300 IN HTTPS 1 %s alpn=h2", name, target)}
	default:
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name)}
	}
	// sizeN: an answer of N octets with an OPT record (of 11), N-11
	// without: a TXT record of the question name made to measure.
	if n, err := strconv.Atoi(strings.TrimPrefix(label, "size")); err == nil && strings.HasPrefix(label, "size") {
		fixed := 12 + len(name) + 1 + 4 + 2 + 10 + 11 // header, question, owner pointer, RR header, OPT
		txt := n - fixed
		var strs []string
		for txt > 0 {
			k := min(txt-1, 255)
			strs = append(strs, fmt.Sprintf("%q", strings.Repeat("s", k)))
			txt -= k + 1
		}
		m.Answer = []dns.RR{mustRR("%s 300 IN TXT %s", name, strings.Join(strs, " "))}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(1232, do)
		switch label {
		case "ede":
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: "from upstream"}}
		case "nsid":
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6e7364"}}
		case "optdo":
			m.IsEdns0().SetDo(true)
		}
	}
	return m
}

// startCraftUpstream serves craftAnswer on 127.0.68.5, UDP and TCP.
func startCraftUpstream(t *testing.T) string {
	t.Helper()
	pc, ln, err := testnet.ListenBothOn("127.0.68.5")
	require.NoError(t, err)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := craftAnswer(r)
		m.Compress = true
		_ = w.WriteMsg(m)
	})
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h})
	return pc.LocalAddr().String()
}

// TestDifferentialCrafted is TestDifferentialAgainstNSD against an
// upstream that sends answers NSD does not (craftAnswer), each asked
// spelt as written and in mixed case.
func TestDifferentialCrafted(t *testing.T) {
	wire, msg, taken := startDiffFence(t, startCraftUpstream(t))
	var qs []diffQuery
	for _, l := range []string{"ad", "upper", "lowerq", "dupes", "otherclass", "unrelated", "outoforder", "interleaved", "nodatanosoa",
		"nxnosoa", "nx", "yx", "aa", "zbit", "ra0", "ttltop", "rrsigfirst", "alwayssigned", "casedata", "empty", "glue", "refnoaa",
		"soaanswer", "nxcname", "ede", "nsid", "optdo", "plain",
		"size511", "size512", "size513", "size700", "size701", "size1231", "size1232", "size1233",
		"la1", "la2", "la3", "la4", "la5", "la6", "la7", "la8", "lh1", "lh2"} {
		qs = append(qs, diffQuery{name: l + ".craft.test.", qtype: dns.TypeA}, diffQuery{name: strings.ToUpper(l[:1]) + l[1:] + ".CrAfT.test.", qtype: dns.TypeA})
	}
	// Other classes forwarded (HESIOD, ANY), and the types that ask for
	// the DNSSEC records a query without DO does not get otherwise.
	for _, l := range []string{"plain", "alwayssigned", "rrsigfirst", "otherclass", "nx", "glue", "ede"} {
		qs = append(qs, diffQuery{name: l + ".craft.test.", qtype: dns.TypeA, qclass: dns.ClassHESIOD},
			diffQuery{name: l + ".craft.test.", qtype: dns.TypeAAAA, qclass: dns.ClassANY},
			diffQuery{name: l + ".craft.test.", qtype: dns.TypeANY}, diffQuery{name: l + ".craft.test.", qtype: dns.TypeRRSIG})
	}
	// What the upstream answers dnsfence's query (ours: EDNS 1232 with the
	// client's DO bit), as the client reads it: names in the form
	// unpacking gives, the question as the client asked it.
	reference := func(m *dns.Msg, s diffShape) *dns.Msg {
		upq := m.Copy()
		upq.SetEdns0(ednsSize, s.do)
		want := craftAnswer(upq)
		if !s.edns {
			want.Extra = withoutOPT(want.Extra)
		}
		want.Question = m.Question
		b, err := want.Pack()
		require.NoError(t, err)
		want = new(dns.Msg)
		require.NoError(t, want.Unpack(b))
		return want
	}
	start := time.Now()
	n := runDifferential(t, diffServers{wire: wire, msg: msg, taken: taken}, qs, reference, nil)
	t.Logf("%d answers compared in %v", n, time.Since(start))
}
