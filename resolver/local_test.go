package resolver

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLocalZoneOf(t *testing.T) {
	for name, want := range map[string]string{
		"resolver.arpa.":           "resolver.arpa.",
		"resolver.arpa":            "resolver.arpa.",
		"RESOLVER.Arpa.":           "resolver.arpa.",
		"_dns.resolver.arpa.":      "resolver.arpa.",
		"_DNS.RESOLVER.ARPA":       "resolver.arpa.",
		"a.b.c.resolver.arpa.":     "resolver.arpa.",
		`x\\.resolver.arpa.`:       "resolver.arpa.", // the label `x\`, then resolver, arpa
		`x\.resolver.arpa.`:        "",               // the label "x.resolver", then arpa
		`x\\\.resolver.arpa.`:      "",
		`\114esolver.arpa.`:        "resolver.arpa.",
		`_dns.resolver.\065RPA`:    "resolver.arpa.",
		`resolver\.arpa.`:          "", // one label
		`x.resolver\046arpa.`:      "", // \046 is a dot inside a label
		"xresolver.arpa.":          "",
		"resolver.arpa.example.":   "",
		"arpa.":                    "",
		"in-addr.arpa.":            "",
		"10.in-addr.arpa.":         "", // a department's upstream answers its own reverse zones
		"ipv4only.arpa.":           "", // a DNS64 upstream synthesizes its AAAA (RFC 7050)
		"home.arpa.":               "",
		"esolver.arpa.":            "",
		".":                        "",
		"":                         "",
		"_dns.resolver.arpa.net.":  "",
		"_dns.resolver-arpa.":      "",
		"www.tiktok.com.":          "",
		"use-application-dns.net.": "",
		"onion.":                   "onion.",
		"duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.": "onion.",
		"x.ONION":            "onion.",
		"onion.example.":     "",
		`x.\111nion.`:        "onion.",
		`x\.onion`:           "", // one label
		`onion\.`:            "",
		"xonion.":            "",
		"invalid.":           "invalid.",
		"anything.invalid.":  "invalid.",
		`a\.b.invalid.`:      "invalid.",
		"invalid.example.":   "",
		"localhost.":         "localhost.",
		"LocalHost":          "localhost.",
		"app.localhost.":     "localhost.",
		"localhost.example.": "",
		"mylocalhost.":       "",
		"test.":              "", // RFC 6761 §6.2: not special to caching servers
		// Octets other than ASCII letters are compared as they are (RFC
		// 4343), not folded as Unicode: 0xC5 0xBF is ſ (U+017F), whose
		// Unicode folding is s.
		`localho\197\191t.`:          "",
		`_dns.re\197\191olver.arpa.`: "",
		"localho\u017ft.":            "",
		"example.":                   "",
	} {
		z, ok := localZoneOf(name)
		got := ""
		if ok {
			got = z.apex
		}
		assert.Equal(t, want, got, "%q", name)
	}
}

// TestLocalZonesServedLocally: the local zones (resolver.arpa, RFC 9462
// DDR; onion; invalid; localhost) are answered from dnsfence's own records
// and never forwarded, on the wire path (UDP) and the message path (TCP),
// to every client allowed_clients lets ask, whatever its policy.
func TestLocalZonesServedLocally(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		// What an upstream designating its own resolver would say, and an
		// answer for every other name.
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR(`%s 300 IN SVCB 1 dns.upstream.example. alpn=dot ipv4hint=192.0.2.53`, r.Question[0].Name)}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	asked := func(t *testing.T, name string, qtype uint16, from, network string, edns bool, rcode int) *dns.Msg {
		t.Helper()
		q := question(name, qtype, edns)
		r := ask(t, f.addr, from, network, q)
		require.Equal(t, q.Id, r.Id)
		require.Equal(t, rcode, r.Rcode, "%s %s", name, dns.TypeToString[qtype])
		assert.True(t, r.Response && r.RecursionAvailable && r.Authoritative && !r.Truncated, "QR, RA and AA: the zone is dnsfence's own")
		assert.Equal(t, q.RecursionDesired, r.RecursionDesired)
		require.Len(t, r.Question, 1)
		assert.Equal(t, q.Question[0], r.Question[0], "question echoed as asked")
		assert.Equal(t, edns, r.IsEdns0() != nil, "an OPT only when the query had one (RFC 6891 §7)")
		return r
	}
	// wantSOA checks the SOA of a negative answer: RFC 6303 §3's, whose
	// TTL and MINIMUM are ttl.
	wantSOA := func(t *testing.T, apex string, rr dns.RR, ttl uint32) {
		t.Helper()
		soa, ok := rr.(*dns.SOA)
		require.True(t, ok, "%v", rr)
		assert.Equal(t, apex, soa.Hdr.Name)
		assert.Equal(t, uint16(dns.ClassINET), soa.Hdr.Class)
		assert.Equal(t, ttl, soa.Hdr.Ttl)
		assert.Equal(t, ttl, soa.Minttl, "the negative TTL")
		assert.Equal(t, apex, soa.Ns)
		assert.Equal(t, "nobody.invalid.", soa.Mbox)
	}
	zones := []struct {
		apex  string
		below []string // names below the apex, as clients spell them
		rcode int      // below the apex
	}{
		{"resolver.arpa.", []string{"_dns.resolver.arpa.", "_DNS.Resolver.ARPA.", "x.y.resolver.arpa."}, dns.RcodeSuccess},
		{"onion.", []string{"duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.", "X.Onion."}, dns.RcodeNameError},
		{"invalid.", []string{"host.invalid.", "a.b.INVALID."}, dns.RcodeNameError},
		{"localhost.", []string{"app.localhost.", "LOCALHOST."}, dns.RcodeSuccess},
	}
	clients := map[string]string{
		"a blocking policy": "127.0.0.1", "an exemption": "127.0.0.3", "no policy": "127.0.0.8",
		"action refused": "127.0.0.6",
	}
	queries := 0
	for who, from := range clients {
		for _, network := range []string{"udp", "tcp"} {
			for _, edns := range []bool{true, false} {
				for _, z := range zones {
					for _, name := range append([]string{z.apex}, z.below...) {
						for _, qtype := range []uint16{dns.TypeSVCB, dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS, dns.TypeTXT} {
							rcode := z.rcode
							if name == z.apex {
								rcode = dns.RcodeSuccess // the apex exists
							}
							r := asked(t, name, qtype, from, network, edns, rcode)
							queries++
							if z.apex == "localhost." && (qtype == dns.TypeA || qtype == dns.TypeAAAA) {
								require.Len(t, r.Answer, 1, "%s %s", name, dns.TypeToString[qtype])
								assert.Equal(t, name, r.Answer[0].Header().Name)
								assert.Equal(t, uint32(10800), r.Answer[0].Header().Ttl)
								if a, ok := r.Answer[0].(*dns.A); ok {
									assert.Equal(t, "127.0.0.1", a.A.String())
								} else {
									assert.Equal(t, "::1", r.Answer[0].(*dns.AAAA).AAAA.String())
								}
								assert.Empty(t, r.Ns)
								continue
							}
							assert.Empty(t, r.Answer, "%s %s from %s over %s", name, dns.TypeToString[qtype], who, network)
							require.Len(t, r.Ns, 1)
							// RFC 6303 §3's 10800 s, but for the DDR
							// question, which no encrypted listener
							// here answers: as long as a designation
							// (TestDDROff).
							ttl := uint32(10800)
							if qtype == dns.TypeSVCB && strings.EqualFold(name, "_dns.resolver.arpa.") {
								ttl = ddrTTL
							}
							wantSOA(t, z.apex, r.Ns[0], ttl)
						}
					}
					// The apex's own SOA and NS are the zone's records.
					r := asked(t, z.apex, dns.TypeSOA, from, network, edns, dns.RcodeSuccess)
					require.Len(t, r.Answer, 1)
					wantSOA(t, z.apex, r.Answer[0], 10800)
					assert.Empty(t, r.Ns)
					r = asked(t, strings.ToUpper(z.apex), dns.TypeNS, from, network, edns, dns.RcodeSuccess)
					require.Len(t, r.Answer, 1)
					ns, ok := r.Answer[0].(*dns.NS)
					require.True(t, ok)
					assert.Equal(t, z.apex, ns.Ns)
					assert.Equal(t, uint32(10800), ns.Hdr.Ttl)
					queries += 2
				}
			}
		}
	}
	assert.Zero(t, up.count.Load(), "nothing in a local zone reaches an upstream")

	// Outside allowed_clients: REFUSED, as for any name.
	r := ask(t, f.addr, "127.0.0.20", "udp", question("_dns.resolver.arpa.", dns.TypeSVCB, true))
	assert.Equal(t, dns.RcodeRefused, r.Rcode)

	// Names that only look like them are forwarded as any other, and so
	// are the special-use zones left to the upstream.
	forwarded := []string{"resolver.arpa.example.", "xresolver.arpa.", "onion.example.", "mylocalhost.",
		"10.in-addr.arpa.", "ipv4only.arpa.", "home.arpa.", "test."}
	for _, name := range forwarded {
		r := ask(t, f.addr, "127.0.0.8", "udp", question(name, dns.TypeSVCB, true))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.NotEmpty(t, r.Answer, name)
	}
	assert.Equal(t, int64(len(forwarded)), up.count.Load())

	body := scrape(t, f.registry)
	assert.Contains(t, body, fmt.Sprintf(`dnsfence_queries_total{result="local",transport="udp"} %d`+"\n", queries/2))
	assert.Contains(t, body, fmt.Sprintf(`dnsfence_queries_total{result="local",transport="tcp"} %d`+"\n", queries/2))
}

// TestExplainLocalZones: `dnsfence explain` (and so the CHAOS explain)
// says that a local zone's names are answered here, and why.
func TestExplainLocalZones(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for name, want := range map[string]string{
		"_dns.resolver.arpa": "verdict: local (NOERROR from dnsfence's own zone resolver.arpa.)",
		"x.onion":            "verdict: local (NXDOMAIN from dnsfence's own zone onion.)",
	} {
		e := f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.0.1"), name, dns.TypeSVCB)
		assert.Equal(t, ResultLocal, e.Result)
		assert.False(t, e.Forwarded())
		text := e.String()
		assert.Contains(t, text, `policy "government-devices"`)
		assert.Contains(t, text, "which dnsfence answers itself for every client")
		assert.Contains(t, text, want)
		assert.NotContains(t, text, "on no list")
	}
}

// FuzzLocalZoneOf: the look-up agrees with octetLocalZoneOf, which reads
// every name as octets, for any name that is one (packs).
func FuzzLocalZoneOf(f *testing.F) {
	for _, s := range []string{"_dns.resolver.arpa.", `x\.resolver.arpa.`, `\114esolver.arpa`, "x.onion", `x.\111nion.`,
		"localhost", "a.invalid.", "www.tiktok.com.", "in-addr.arpa.", `x\\.onion.`, ".", "localho\u017ft.", `localho\197\191t.`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		var buf [256]byte
		if _, err := dns.PackDomainName(dns.Fqdn(name), buf[:], 0, nil, false); err != nil {
			return
		}
		z, ok := localZoneOf(name)
		ref, refOK := octetLocalZoneOf(name)
		if ok != refOK || z != ref {
			t.Fatalf("localZoneOf(%q) = %v %v, reading octets gives %v %v", name, z, ok, ref, refOK)
		}
	})
}

// TestServerClassesNotForwarded: a CHAOS query that is no explain question
// (version.bind, id.server, hostname.bind: the answering server's own
// data, RFC 4892) is REFUSED with EDE 21, never forwarded: the upstream's
// version and name are not dnsfence's, and not for anyone who asks. A
// HESIOD query, zone data like IN's, is forwarded. A blocked name is still
// blocked in the class asked (TestBlockedAnswerInTheQuestionsClass) and
// the explain zone answers (TestChaosExplainOfEscapedNames).
func TestServerClassesNotForwarded(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: r.Question[0].Qclass, Ttl: 0},
			Txt: []string{"9.16.1-Ubuntu"}}}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, from := range []string{"127.0.0.1", "127.0.0.8"} { // a blocking policy, none
		for _, network := range []string{"udp", "tcp"} {
			for _, name := range []string{"version.bind.", "VERSION.SERVER.", "id.server.", "hostname.bind.", "authors.bind.", "example.org.", "localhost."} {
				m := question(name, dns.TypeTXT, true)
				m.Question[0].Qclass = dns.ClassCHAOS
				r := ask(t, f.addr, from, network, m)
				desc := fmt.Sprintf("CH %s from %s over %s", name, from, network)
				assert.Equal(t, dns.RcodeRefused, r.Rcode, desc)
				assert.Empty(t, r.Answer, desc)
				assert.Equal(t, m.Question, r.Question, desc)
				if e := ede(r); assert.NotNil(t, e, desc) {
					assert.Equal(t, dns.ExtendedErrorCodeNotSupported, e.InfoCode)
					assert.Equal(t, "CHAOS queries are not forwarded", e.ExtraText)
				}
			}
		}
	}
	assert.Zero(t, up.count.Load(), "no CHAOS query reached the upstream")
	for _, network := range []string{"udp", "tcp"} {
		assert.Equal(t, 14.0, queriesCounted(t, f, ResultRefused, network), "CHAOS refusals over %s counted as refused", network)
	}
	for _, network := range []string{"udp", "tcp"} {
		m := question("jdoe.passwd.ns.example.", dns.TypeTXT, true)
		m.Question[0].Qclass = dns.ClassHESIOD
		r := ask(t, f.addr, "127.0.0.1", network, m)
		require.Equal(t, dns.RcodeSuccess, r.Rcode, network)
		require.Len(t, r.Answer, 1, network)
		assert.Equal(t, uint16(dns.ClassHESIOD), r.Answer[0].Header().Class)
	}
	assert.Equal(t, int64(2), up.count.Load(), "HESIOD is forwarded")
}

// TestLocalZonesAreNotFoldedAsUnicode: a name whose label holds the
// octets of ſ (U+017F, which Unicode folds to s) where localhost or
// resolver.arpa has an s is another name, forwarded as any other: names
// are compared as octets, ASCII letters without case (RFC 4343). Before,
// `localho\197\191t.` got 127.0.0.1 from dnsfence and
// `_dns.re\197\191olver.arpa.` an empty answer.
func TestLocalZonesAreNotFoldedAsUnicode(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR(`%s 300 IN A 192.0.2.7`, r.Question[0].Name)}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, name := range []string{`localho\197\191t.`, `app.localho\197\191t.`, `_dns.re\197\191olver.arpa.`} {
		for _, network := range []string{"udp", "tcp"} {
			r := ask(t, f.addr, "127.0.0.8", network, question(name, dns.TypeA, true))
			require.Equal(t, dns.RcodeSuccess, r.Rcode, name)
			require.Len(t, r.Answer, 1, "%s over %s", name, network)
			assert.Equal(t, "192.0.2.7", r.Answer[0].(*dns.A).A.String(), "%s over %s: the upstream's answer", name, network)
		}
	}
	assert.Equal(t, int64(3), up.count.Load(), "each name forwarded (over TCP from the cache)")
}

// TestExplainLocalZonesSaysTheAnswersRcode: `dnsfence explain` (and the
// CHAOS explain) gives the RCODE a query for the name gets: NOERROR at a
// zone's apex, which exists (the query's answer is NODATA, or the apex's
// SOA or NS), the zone's own below it. Before, `dnsfence explain CLIENT
// onion` said NXDOMAIN, and a query for onion. got NOERROR.
func TestExplainLocalZonesSaysTheAnswersRcode(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, name := range []string{"onion.", "ONION.", "x.onion.", "invalid.", "a.invalid.", "localhost.", "a.localhost.",
		"resolver.arpa.", "_dns.resolver.arpa."} {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeSOA, dns.TypeTXT} {
			r := ask(t, f.addr, "127.0.0.1", "udp", question(name, qtype, true))
			e := f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.0.1"), name, qtype)
			require.Equal(t, ResultLocal, e.Result)
			want := dns.RcodeToString[r.Rcode] + " from dnsfence's own zone "
			assert.True(t, strings.HasPrefix(e.Rcode, want), "%s %s: explained %q, answered %s", name, dns.TypeToString[qtype],
				e.Rcode, dns.RcodeToString[r.Rcode])
		}
	}
	assert.Zero(t, up.count.Load())
}

// TestLocalZoneApexHoweverSpelt: a zone's apex is its apex in any
// spelling, as localZoneOf reads it: `\111nion.` is onion., whose SOA is
// the answer, not NXDOMAIN.
func TestLocalZoneApexHoweverSpelt(t *testing.T) {
	for _, name := range []string{"onion.", "OnIoN.", `\111nion.`, `\105nvalid`} {
		z, ok := localZoneOf(name)
		require.True(t, ok, name)
		req := question(name, dns.TypeSOA, false)
		r := z.reply(req)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, name)
		require.Len(t, r.Answer, 1, name)
		assert.IsType(t, &dns.SOA{}, r.Answer[0])
	}
}

// TestExplainLocalZonesJSON: `dnsfence explain -json` says what String
// says of a name in a local zone: the zone and why, and no decision of a
// policy's lists, which were never asked. Before, it gave the zero
// decision as the policy's, "blocked": false, here for a name the
// policy's list does block (example.onion is on it), and no zone.
func TestExplainLocalZonesJSON(t *testing.T) {
	files := maps.Clone(testFiles)
	files["tiktok.txt"] += "example.onion\n"
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, files, up.addr)
	snap := f.handler.Snapshot()
	require.True(t, snap.Explain(netip.MustParseAddr("127.0.0.1"), "x.example.onion", dns.TypeA).Result == ResultLocal)
	for _, tc := range []struct {
		name, client string
	}{
		{"x.example.onion", "127.0.0.1"},    // a blocking policy
		{"x.example.onion", "127.0.0.6"},    // another
		{"_dns.resolver.arpa", "127.0.0.8"}, // no policy
	} {
		e := snap.Explain(netip.MustParseAddr(tc.client), tc.name, dns.TypeA)
		b, err := json.Marshal(e)
		require.NoError(t, err)
		var j map[string]any
		require.NoError(t, json.Unmarshal(b, &j))
		assert.Equal(t, "local", j["verdict"], "%s", b)
		assert.NotContains(t, j, "decision", "no list was asked: %s", b)
		z, _ := localZoneOf(tc.name)
		assert.Equal(t, z.apex, j["local_zone"], "%s", b)
		assert.Equal(t, z.why, j["local_reason"], "%s", b)
		assert.NotContains(t, e.String(), "on no list")
	}
}

// TestLocalZoneAnswerECSScope: through a trusted proxy, a local zone's
// answer, the same for every client, echoes the proxy's ECS option with
// scope 0 (RFC 7871 §7.2.1), so that the proxy caches it once for all; a
// blocked answer, decided for the client's network, keeps its scope.
func TestLocalZoneAnswerECSScope(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, identityConfig, testFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		for name, want := range map[string]uint8{"_dns.resolver.arpa.": 0, "localhost.": 0, "www.tiktok.com.": 24} {
			r := ask(t, f.addr, "127.0.0.2", network, withECS(question(name, dns.TypeA, true), "10.1.2.0/24"))
			e := findECS(r)
			require.NotNil(t, e, "%s over %s", name, network)
			assert.Equal(t, uint8(24), e.SourceNetmask)
			assert.Equal(t, want, e.SourceScope, "%s over %s", name, network)
		}
	}
	assert.Zero(t, up.count.Load())
}

// TestLocalZonesAreClassIN: the local zones are names of class IN (and of
// QCLASS ANY, which asks for every class): a HESIOD question for
// localhost or resolver.arpa is forwarded as any HESIOD question, never
// answered with an A record or an SOA of class HS.
func TestLocalZonesAreClassIN(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"localhost.", "_dns.resolver.arpa."} {
			m := question(name, dns.TypeA, true)
			m.Question[0].Qclass = dns.ClassHESIOD
			r := ask(t, f.addr, "127.0.0.8", network, m)
			assert.False(t, r.Authoritative, "%s over %s: not dnsfence's own answer", name, network)
		}
		m := question("localhost.", dns.TypeA, true)
		m.Question[0].Qclass = dns.ClassANY
		r := ask(t, f.addr, "127.0.0.8", network, m)
		require.Len(t, r.Answer, 1, network)
		assert.Equal(t, "127.0.0.1", r.Answer[0].(*dns.A).A.String())
		assert.Equal(t, uint16(dns.ClassINET), r.Answer[0].Header().Class)
	}
	assert.Equal(t, int64(2), up.count.Load(), "each HESIOD question forwarded (over TCP, the answer cached over UDP)")
}

// octetLocalZoneOf is localZoneOf's reference: the name packed to wire
// form, its last labels compared as octets (RFC 4343: ASCII letters
// case-insensitively, every other octet as itself, not Unicode's folding,
// which takes the octets of ſ (U+017F) for an s). A name that does not
// pack is no name at all.
func octetLocalZoneOf(qname string) (*localZone, bool) {
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(qname), buf[:], 0, nil, false)
	if err != nil {
		return nil, false
	}
	var labels [][]byte
	for off := 0; off < n && buf[off] != 0; off += 1 + int(buf[off]) {
		labels = append(labels, buf[off+1:off+1+int(buf[off])])
	}
	for i := range localZones {
		z := &localZones[i]
		apex := strings.Split(strings.TrimSuffix(z.apex, "."), ".")
		if len(labels) < len(apex) {
			continue
		}
		tail := labels[len(labels)-len(apex):]
		match := true
		for j, l := range apex {
			match = match && dnswire.EqualFold(tail[j], []byte(l))
		}
		if match {
			return z, true
		}
	}
	return nil, false
}

// TestLocalZonesAnswerANY: an ANY question for a name of dnsfence's own
// zones gets every record the zone has at that name (the apex's SOA and
// NS, localhost's addresses), as an authoritative server gives them (BIND's
// empty zones; RFC 1035 §3.2.3's "all records"), not NODATA, which says
// the name has none. A name with none gets the zone's negative answer.
func TestLocalZonesAnswerANY(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name  string
		rcode int
		want  []uint16 // the answer's types, in order; none: a negative answer
	}{
		{"resolver.arpa.", dns.RcodeSuccess, []uint16{dns.TypeSOA, dns.TypeNS}},
		{"Onion.", dns.RcodeSuccess, []uint16{dns.TypeSOA, dns.TypeNS}},
		{"invalid.", dns.RcodeSuccess, []uint16{dns.TypeSOA, dns.TypeNS}},
		{"LocalHost.", dns.RcodeSuccess, []uint16{dns.TypeSOA, dns.TypeNS, dns.TypeA, dns.TypeAAAA}},
		{"app.localhost.", dns.RcodeSuccess, []uint16{dns.TypeA, dns.TypeAAAA}},
		{"x.resolver.arpa.", dns.RcodeSuccess, nil},
		{"_dns.resolver.arpa.", dns.RcodeSuccess, nil}, // designating nothing: no listener is encrypted
		{"x.onion.", dns.RcodeNameError, nil},
		{"a.b.invalid.", dns.RcodeNameError, nil},
	} {
		for _, network := range []string{"udp", "tcp"} {
			q := question(tc.name, dns.TypeANY, true)
			r := ask(t, f.addr, "127.0.0.1", network, q)
			require.Equal(t, tc.rcode, r.Rcode, "%s ANY over %s", tc.name, network)
			assert.True(t, r.Authoritative && !r.Truncated, tc.name)
			var got []uint16
			for _, rr := range r.Answer {
				got = append(got, rr.Header().Rrtype)
				assert.True(t, strings.EqualFold(tc.name, rr.Header().Name), "owner %s, asked %s", rr.Header().Name, tc.name)
				assert.Equal(t, uint32(10800), rr.Header().Ttl)
			}
			assert.Equal(t, tc.want, got, "%s ANY over %s", tc.name, network)
			if tc.want == nil {
				require.Len(t, r.Ns, 1, "the SOA of a negative answer")
				assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype)
			} else {
				assert.Empty(t, r.Ns)
			}
		}
	}
	assert.Zero(t, up.count.Load(), "nothing in a local zone reaches an upstream")
}
