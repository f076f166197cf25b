package resolver

import (
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// extraSectionAnswers are upstream answers whose authority or additional
// section holds records of a blocked name (glue, an MX or SRV target's
// address, an NS at a blocked name, an alias into one) beside an answer
// section that names nothing blocked.
var extraSectionAnswers = map[string]extraSectionAnswer{
	"glue.example.net.": {
		answer: []string{"glue.example.net. 300 IN A 192.0.2.1"},
		ns:     []string{"example.net. 300 IN NS ns1.tiktok.com.", "example.net. 300 IN NS ns.example.net."},
		extra:  []string{"ns1.tiktok.com. 300 IN A 192.0.2.53", "ns.example.net. 300 IN A 192.0.2.54"},
	},
	"mail.example.net.": {
		answer: []string{"mail.example.net. 300 IN MX 10 mx.tiktokcdn.com."},
		extra:  []string{"mx.tiktokcdn.com. 300 IN A 192.0.2.25", "mx.tiktokcdn.com. 300 IN AAAA 2001:db8::25"},
	},
	"authority.example.net.": {
		answer: []string{"authority.example.net. 300 IN A 192.0.2.2"},
		ns:     []string{"tiktok.com. 300 IN NS ns.example.net."},
	},
	"alias.example.net.": {
		answer: []string{"alias.example.net. 300 IN A 192.0.2.3"},
		extra:  []string{"svc.example.net. 300 IN CNAME www.tiktok.com.", "svc.example.net. 300 IN HTTPS 1 edge.capcut.com. alpn=h2"},
	},
	// Signed RRsets: the NS and DS at tiktok.com with their RRSIGs, an
	// HTTPS RRset of an unblocked name one of whose records points into a
	// blocked name, and a CNAME into one, each with its RRSIG
	// (TestExtraSectionsLeaveOutWholeRRsets).
	"signed.example.net.": {
		answer: []string{"signed.example.net. 300 IN A 192.0.2.6"},
		ns: []string{"tiktok.com. 300 IN NS ns.example.net.",
			"tiktok.com. 300 IN RRSIG NS 8 2 300 20300101000000 20200101000000 12345 tiktok.com. AAAA",
			"tiktok.com. 300 IN DS 12345 8 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
			"tiktok.com. 300 IN RRSIG DS 8 2 300 20300101000000 20200101000000 12345 com. AAAA",
			"example.net. 300 IN NS ns.example.net.",
			"example.net. 300 IN RRSIG NS 8 2 300 20300101000000 20200101000000 12345 example.net. AAAA"},
		extra: []string{"svc.example.net. 300 IN HTTPS 1 edge.capcut.com. alpn=h2",
			"svc.example.net. 300 IN HTTPS 2 svc.example.net. alpn=h2",
			"svc.example.net. 300 IN RRSIG HTTPS 8 3 300 20300101000000 20200101000000 12345 example.net. AAAA",
			"cname.example.net. 300 IN CNAME www.tiktok.com.",
			"cname.example.net. 300 IN RRSIG CNAME 8 3 300 20300101000000 20200101000000 12345 example.net. AAAA",
			"ns.example.net. 300 IN A 192.0.2.54",
			"ns.example.net. 300 IN RRSIG A 8 3 300 20300101000000 20200101000000 12345 example.net. AAAA"},
	},
	// DNSSEC denial of existence owned by a blocked name: kept, so that a
	// validating device can believe the NXDOMAIN.
	"tiktok0.com.": {
		rcode: dns.RcodeNameError,
		ns: []string{"com. 900 IN SOA a.gtld-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400",
			"tiktok.com. 900 IN NSEC tiktok1.com. NS DS RRSIG NSEC",
			"tiktok.com. 900 IN RRSIG NSEC 8 2 900 20300101000000 20200101000000 12345 com. AAAA"},
	},
	// The same proof beside an RRSIG owned by tiktok.com over its DS,
	// whose RRset is not there: it proves nothing and is a blocked name's
	// record, left out (FuzzScrub found it kept: proofType kept every
	// RRSIG of the authority section).
	"tiktok2.com.": {
		rcode: dns.RcodeNameError,
		ns: []string{"com. 900 IN SOA a.gtld-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400",
			"tiktok.com. 900 IN NSEC tiktok3.com. NS DS RRSIG NSEC",
			"tiktok.com. 900 IN RRSIG NSEC 8 2 900 20300101000000 20200101000000 12345 com. AAAA",
			"tiktok.com. 900 IN RRSIG DS 8 2 900 20300101000000 20200101000000 12345 com. AAAA"},
	},
	// Records owned by a blocked name whose targets are not: a cache
	// downstream would take tiktok.com's alias from them and answer
	// tiktok.com itself, never asking again. Owned by a blocked name,
	// they are left out whatever they point to.
	"owned.example.net.": {
		answer: []string{"owned.example.net. 300 IN A 192.0.2.6"},
		ns:     []string{"tiktok.com. 300 IN DNAME cdn.example.org."},
		extra: []string{"tiktok.com. 300 IN CNAME cdn.example.org.",
			"www.tiktok.com. 300 IN HTTPS 1 cdn.example.org. ipv4hint=192.0.2.7"},
	},
	// The question is allowed: its whole answer stands (README, the
	// precedence of allow).
	"ads.tiktok.com.": {
		answer: []string{"ads.tiktok.com. 300 IN A 192.0.2.4"},
		extra:  []string{"www.tiktok.com. 300 IN A 192.0.2.5"},
	},
}

// extraSectionAnswer is an upstream answer of extraSectionAnswers, in
// master file text, by section.
type extraSectionAnswer struct {
	rcode             int
	answer, ns, extra []string
}

// fill sets m's RCODE to a's and appends a's records to its sections.
func (a extraSectionAnswer) fill(m *dns.Msg) {
	m.Rcode = a.rcode
	for _, s := range a.answer {
		m.Answer = append(m.Answer, mustRR("%s", s))
	}
	for _, s := range a.ns {
		m.Ns = append(m.Ns, mustRR("%s", s))
	}
	for _, s := range a.extra {
		m.Extra = append(m.Extra, mustRR("%s", s))
	}
}

// extraSectionUpstream answers r with its name's extraSectionAnswers
// entry, and an OPT of 4096 with r's DO bit when r has an OPT.
func extraSectionUpstream(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	extraSectionAnswers[strings.ToLower(r.Question[0].Name)].fill(m)
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(4096, opt.Do())
	}
	return m
}

// TestExtraSectionsLeaveOutBlockedNames: an answer that stands for a
// government device carries no record of a name its policy blocks in its
// authority or additional section (an A record of ns1.tiktok.com as glue,
// the address of an MX target under tiktokcdn.com), fresh or from the
// cache, over UDP (the wire path, with and without EDNS) and TCP, whoever
// filled the cache; the rest of the answer stands. The press office, and
// a client in no policy, get the upstream's answer whole. Such records were
// relayed: a device that takes an address from the additional section (an
// MX or SRV client, a cache downstream) reached a blocked name.
func TestExtraSectionsLeaveOutBlockedNames(t *testing.T) {
	up := startUpstream(t, extraSectionUpstream)
	f := startFence(t, testConfig, testFiles, up.addr)
	owners := func(rrs []dns.RR) []string {
		var names []string
		for _, rr := range rrs {
			if rr.Header().Rrtype != dns.TypeOPT {
				names = append(names, strings.ToLower(rr.Header().Name)+" "+dns.TypeToString[rr.Header().Rrtype])
			}
		}
		return names
	}
	whole := func(rrs []string) []string {
		var names []string
		for _, s := range rrs {
			rr := mustRR("%s", s)
			names = append(names, strings.ToLower(rr.Header().Name)+" "+dns.TypeToString[rr.Header().Rrtype])
		}
		return names
	}
	for _, tc := range []struct {
		qname           string
		qtype           uint16
		wantNs, wantExt []string // what a government device gets
	}{
		{"glue.example.net.", dns.TypeA, []string{"example.net. NS", "example.net. NS"}, []string{"ns.example.net. A"}},
		{"mail.example.net.", dns.TypeMX, nil, nil},
		{"authority.example.net.", dns.TypeA, nil, nil},
		{"alias.example.net.", dns.TypeA, nil, nil},
		{"tiktok0.com.", dns.TypeA, []string{"com. SOA", "tiktok.com. NSEC", "tiktok.com. RRSIG"}, nil},
		{"tiktok2.com.", dns.TypeA, []string{"com. SOA", "tiktok.com. NSEC", "tiktok.com. RRSIG"}, nil},
		{"owned.example.net.", dns.TypeA, nil, nil},
		{"ads.tiktok.com.", dns.TypeA, nil, []string{"www.tiktok.com. A"}},
	} {
		t.Run(tc.qname, func(t *testing.T) {
			a := extraSectionAnswers[tc.qname]
			// The exempt press office first: its answer fills the cache.
			for _, from := range []string{"127.0.0.3", "127.0.0.8"} {
				r := ask(t, f.addr, from, "udp", doQuestion(tc.qname, tc.qtype))
				require.Equal(t, a.rcode, r.Rcode, from)
				assert.Equal(t, whole(a.answer), owners(r.Answer), from)
				assert.Equal(t, whole(a.ns), owners(r.Ns), from)
				assert.Equal(t, whole(a.extra), owners(r.Extra), from)
			}
			for _, ask1 := range []struct {
				network string
				edns    bool
			}{{"udp", true}, {"udp", false}, {"tcp", true}} {
				req := question(tc.qname, tc.qtype, false)
				if ask1.edns {
					req = doQuestion(tc.qname, tc.qtype)
				}
				r := ask(t, f.addr, "127.0.0.1", ask1.network, req)
				require.Equal(t, a.rcode, r.Rcode, ask1)
				assert.Equal(t, whole(a.answer), owners(r.Answer), ask1)
				wantNs := tc.wantNs
				if !ask1.edns {
					wantNs = slices.DeleteFunc(slices.Clone(wantNs), func(s string) bool {
						return strings.HasSuffix(s, " NSEC") || strings.HasSuffix(s, " RRSIG")
					}) // no DO: no DNSSEC records (RFC 4035 §3.2.1)
				}
				assert.Equal(t, wantNs, owners(r.Ns), ask1)
				assert.Equal(t, tc.wantExt, owners(r.Extra), ask1)
			}
		})
	}
	// A government device asking first gets the fresh answer so, and the
	// press office after it the whole answer from the cache.
	t.Run("fresh", func(t *testing.T) {
		r := ask(t, f.addr, "127.0.0.1", "udp", question("glue.example.net.", dns.TypeAAAA, true))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Equal(t, []string{"example.net. NS", "example.net. NS"}, owners(r.Ns))
		assert.Equal(t, []string{"ns.example.net. A"}, owners(r.Extra))
		r = ask(t, f.addr, "127.0.0.3", "udp", question("glue.example.net.", dns.TypeAAAA, true))
		assert.Equal(t, []string{"ns1.tiktok.com. A", "ns.example.net. A"}, owners(r.Extra))
	})
}

// doQuestion is question with EDNS and the DO bit set.
func doQuestion(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, true)
	return m
}

// TestExtraSectionsShadowModeWhole: a policy in shadow mode (action: log)
// only records what it would block and forwards the answer untouched, so
// a device of such a policy gets an answer's glue for ns1.tiktok.com, an
// NS at tiktok.com and an alias into a blocked name whole, fresh and from
// the cache, over UDP (the wire path) and TCP. scrub left them out, as if
// the policy blocked: a shadow-mode trial changed the answers it was
// there to watch.
func TestExtraSectionsShadowModeWhole(t *testing.T) {
	up := startUpstream(t, extraSectionUpstream)
	shadow := strings.Replace(testConfig, "    allow: [\"allow.txt\"]\n", "    allow: [\"allow.txt\"]\n    action: log\n", 1)
	require.NotEqual(t, testConfig, shadow)
	f := startFence(t, shadow, testFiles, up.addr)
	// Shadow mode still records a blocked question and forwards it.
	r := ask(t, f.addr, "127.0.0.1", "udp", question("www.tiktok.com.", dns.TypeA, true))
	require.NotEqual(t, dns.RcodeNameError, r.Rcode, "shadow mode forwards")
	for _, qname := range []string{"glue.example.net.", "mail.example.net.", "authority.example.net.", "alias.example.net."} {
		a := extraSectionAnswers[qname]
		got := func(rrs []dns.RR) []string {
			var out []string
			for _, rr := range rrs {
				if rr.Header().Rrtype != dns.TypeOPT {
					out = append(out, rr.String())
				}
			}
			return out
		}
		for _, network := range []string{"udp", "udp", "tcp"} { // fresh, then cached
			r := ask(t, f.addr, "127.0.0.1", network, question(qname, dns.TypeA, true))
			require.Equal(t, dns.RcodeSuccess, r.Rcode, qname)
			assert.Len(t, got(r.Ns), len(a.ns), "%s over %s: %v", qname, network, got(r.Ns))
			assert.Len(t, got(r.Extra), len(a.extra), "%s over %s: %v", qname, network, got(r.Extra))
		}
	}
}

// TestExtraSectionsLeaveOutWholeRRsets: scrub leaves out a whole RRset and
// the RRSIGs that cover it, never a part of one: a validating device (a
// DNSSEC-validating stub or cache downstream) checks the signature over
// the RRset as it was signed, and an RRSIG without its RRset, or over an
// RRset with a record missing, makes it call the answer Bogus (Unbound
// fails a message any of whose authority RRsets does not verify). The NS and
// DS at tiktok.com went and their RRSIGs stayed (proofType kept every
// RRSIG of the authority section), the HTTPS record into capcut.com went
// and its RRset's other record and RRSIG stayed, and the CNAME into
// www.tiktok.com went and its RRSIG stayed.
func TestExtraSectionsLeaveOutWholeRRsets(t *testing.T) {
	const qname = "signed.example.net."
	a := extraSectionAnswers[qname]
	up := startUpstream(t, extraSectionUpstream)
	f := startFence(t, testConfig, testFiles, up.addr)
	rrsets := func(rrs []dns.RR) []string {
		var out []string
		for _, rr := range rrs {
			h := rr.Header()
			switch v := rr.(type) {
			case *dns.OPT:
				continue
			case *dns.RRSIG:
				out = append(out, strings.ToLower(h.Name)+" RRSIG "+dns.TypeToString[v.TypeCovered])
			default:
				out = append(out, strings.ToLower(h.Name)+" "+dns.TypeToString[h.Rrtype])
			}
		}
		return out
	}
	for _, ask1 := range []struct{ from, network string }{
		{"127.0.0.1", "udp"}, {"127.0.0.1", "udp"}, {"127.0.0.1", "tcp"}, // fresh, then cached
	} {
		r := ask(t, f.addr, ask1.from, ask1.network, doQuestion(qname, dns.TypeA))
		require.Equal(t, dns.RcodeSuccess, r.Rcode, ask1)
		assert.Equal(t, []string{"example.net. NS", "example.net. RRSIG NS"}, rrsets(r.Ns), ask1)
		assert.Equal(t, []string{"ns.example.net. A", "ns.example.net. RRSIG A"}, rrsets(r.Extra), ask1)
	}
	// The press office gets every RRset whole.
	r := ask(t, f.addr, "127.0.0.3", "udp", doQuestion(qname, dns.TypeA))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Len(t, rrsets(r.Ns), len(a.ns))
	assert.Len(t, rrsets(r.Extra), len(a.extra))
}

// TestWireOfSignedProof: the wire cache marks a signed negative answer,
// its SOA, NSEC and the RRSIG over the NSEC, as naming only the question
// (qnameOnly), so its cache hits take the fast path; beside an RRSIG over
// a DS, which scrub may leave out, it does not.
func TestWireOfSignedProof(t *testing.T) {
	for _, tc := range []struct {
		qname         string
		wantQnameOnly bool
	}{{"tiktok0.com.", true}, {"tiktok2.com.", false}} {
		t.Run(tc.qname, func(t *testing.T) {
			a := extraSectionAnswers[tc.qname]
			m := answerWith(tc.qname, dns.TypeA, a.rcode)
			m = withSections(m, a.ns, nil)
			m.SetEdns0(1232, true)
			b, err := m.Pack()
			require.NoError(t, err)
			var w wireAnswer
			_, ok := wireOf(b, &w)
			require.True(t, ok)
			assert.Equal(t, tc.wantQnameOnly, w.qnameOnly)
		})
	}
}

// TestExtraSectionsProofOnlyInAuthority: scrub keeps a blocked name's SOA
// and NSEC (proofType) in the authority section alone, where they prove a
// negative answer; in the additional section they prove nothing and are
// left out as any record of a blocked name is. Fresh and from the cache,
// over UDP and TCP.
func TestExtraSectionsProofOnlyInAuthority(t *testing.T) {
	needLoopback(t, "127.0.181.1")
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name != "proof.example.net." {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR("proof.example.net. 300 IN A 192.0.2.1")}
		m.Ns = []dns.RR{mustRR("tiktok.com. 900 IN NSEC tiktok1.com. NS DS RRSIG NSEC")}
		m.Extra = []dns.RR{mustRR("tiktok.com. 900 IN SOA a.gtld-servers.net. nstld.verisign-grs.com. 1 1800 900 604800 86400"),
			mustRR("tiktok.com. 900 IN NSEC tiktok1.com. NS DS RRSIG NSEC")}
		m.SetEdns0(4096, true)
		return m
	})
	f := startFence(t, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.181.0/24"]
policies:
  - name: gov
    clients: ["127.0.181.1/32"]
    block: ["tiktok.txt"]
`, testFiles, up.addr)
	for _, network := range []string{"udp", "udp", "tcp"} { // fresh, then cached
		r := ask(t, f.addr, "127.0.181.1", network, doQuestion("proof.example.net.", dns.TypeA))
		require.Equal(t, dns.RcodeSuccess, r.Rcode, network)
		assert.Len(t, r.Answer, 1, network)
		require.Len(t, r.Ns, 1, network)
		assert.Equal(t, dns.TypeNSEC, r.Ns[0].Header().Rrtype, network)
		assert.Equal(t, []dns.RR{r.IsEdns0()}, r.Extra, "%s: only the OPT", network)
	}
}
