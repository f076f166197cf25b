package resolver

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rfcAnswer is the upstream of these tests: the first label of the
// question says what it answers.
func rfcAnswer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := rfcMsg(r)
	m.Compress = true
	_ = w.WriteMsg(m)
	return nil
}

func rfcMsg(r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	name := q.Name
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	label := strings.ToLower(name[:strings.IndexByte(name, '.')])
	soa := mustRR("rv.example. 900 IN SOA ns.rv.example. host.rv.example. 1 3600 600 86400 120")
	switch label {
	case "soattl":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	case "ttl0":
		m.Answer = []dns.RR{mustRR("%s 0 IN A 192.0.2.1", name)}
	case "bigttl":
		m.Answer = []dns.RR{mustRR("%s 2147483649 IN A 192.0.2.1", name)}
	case "addl":
		m.Answer = []dns.RR{mustRR("%s 60 IN MX 10 mx.rv.example.", name)}
		m.Extra = []dns.RR{mustRR("mx.rv.example. 3600 IN A 192.0.2.25")}
	case "aa":
		m.Authoritative = true
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.2", name)}
	case "rrsig":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.3", name),
			mustRR("%s 300 IN RRSIG A 8 3 300 20300101000000 20200101000000 12345 rv.example. AAAA", name)}
	case "nsec":
		// A NODATA proved by an NSEC, signed.
		m.Ns = []dns.RR{soa, mustRR("rv.example. 900 IN RRSIG SOA 8 2 900 20300101000000 20200101000000 12345 rv.example. AAAA"),
			mustRR("%s 900 IN NSEC z.rv.example. A RRSIG NSEC", name),
			mustRR("%s 900 IN RRSIG NSEC 8 3 900 20300101000000 20200101000000 12345 rv.example. AAAA", name)}
	case "mid":
		// About 700 octets: over 512, under 1232.
		for i := range 16 {
			m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "%s"`, name, strings.Repeat(string(rune('a'+i)), 30)))
		}
	case "midextra":
		// Answers that fit 512 and additional records that do not.
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.rv.example.", name)}
		for i := range 12 {
			m.Extra = append(m.Extra, mustRR(`mx.rv.example. 300 IN TXT "%s"`, strings.Repeat(string(rune('a'+i)), 40)))
		}
	case "lower":
		m.Question[0].Name = strings.ToLower(name)
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.4", strings.ToLower(name))}
	default:
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name)}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(1232, true) // DO set whatever was asked
		switch label {
		case "cookie":
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708a1a2a3a4a5a6a7a8"}}
		case "nsid":
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6162"}}
		case "longede":
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: strings.Repeat("x", 600)}}
		case "padded":
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, 20)}}
		}
	}
	return m
}

type rfcCase struct {
	name   string
	qname  string
	qtype  uint16
	from   string
	edns   bool
	do, ad bool
	cd     bool
	size   uint16
}

func (tc rfcCase) pack(t *testing.T) (*dns.Msg, []byte) {
	m := question(tc.qname, tc.qtype, false)
	m.Id = 0x3c3c
	m.AuthenticatedData, m.CheckingDisabled = tc.ad, tc.cd
	if tc.edns {
		size := tc.size
		if size == 0 {
			size = 1232
		}
		m.SetEdns0(size, tc.do)
	}
	q, err := m.Pack()
	require.NoError(t, err)
	return m, q
}

// checkRFC checks one answer against the rules every answer follows.
func checkRFC(t *testing.T, round string, m *dns.Msg, raw []byte) *dns.Msg {
	t.Helper()
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(raw), round)
	limit := 512
	if o := m.IsEdns0(); o != nil {
		limit = min(max(int(o.UDPSize()), 512), ednsSize)
	}
	assert.LessOrEqual(t, len(raw), limit, "%s: never longer than the client's size", round)
	assert.Equal(t, m.Id, r.Id, round)
	assert.True(t, r.Response, round)
	assert.False(t, r.Authoritative, "%s: AA never set", round)
	assert.True(t, r.RecursionAvailable, round)
	assert.Equal(t, m.RecursionDesired, r.RecursionDesired, round)
	assert.Equal(t, m.CheckingDisabled, r.CheckingDisabled, round)
	assert.False(t, r.Zero, round)
	require.Len(t, r.Question, 1, round)
	assert.Equal(t, m.Question[0], r.Question[0], "%s: the question as asked", round)
	if o := m.IsEdns0(); o == nil {
		assert.Nil(t, r.IsEdns0(), "%s: no OPT without one asked", round)
	} else if ro := r.IsEdns0(); assert.NotNil(t, ro, "%s: an OPT", round) {
		assert.Equal(t, o.Do(), ro.Do(), "%s: DO echoed", round)
		assert.Equal(t, uint16(ednsSize), ro.UDPSize(), round)
		for _, opt := range ro.Option {
			assert.Equal(t, uint16(dns.EDNS0EDE), opt.Option(), "%s: no upstream option leaks", round)
		}
	}
	if !(m.AuthenticatedData || m.IsEdns0() != nil && m.IsEdns0().Do()) {
		assert.False(t, r.AuthenticatedData, round)
	}
	for _, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT {
				assert.Less(t, rr.Header().Ttl, uint32(1)<<31, "%s: TTL below 2^31", round)
			}
		}
	}
	return r
}

// TestWirePathMatchesMessagePathByRFC compares the wire path with the message
// path and with the RFCs for upstream answers of unusual shapes.
func TestWirePathMatchesMessagePathByRFC(t *testing.T) {
	up := startUpstream(t, rfcAnswer)
	text := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 2s", 1)
	p := startWirePair(t, text, up.addr)
	tests := []rfcCase{
		{name: "soa ttl", qname: "soattl.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "ttl 0", qname: "ttl0.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "big ttl", qname: "bigttl.rv.example.", qtype: dns.TypeA, from: "127.0.0.4"},
		{name: "additional ttl", qname: "addl.rv.example.", qtype: dns.TypeMX, from: "127.0.0.4", edns: true},
		{name: "aa", qname: "aa.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "upstream do, client none", qname: "plain.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "cookie", qname: "cookie.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "nsid", qname: "nsid.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "padded", qname: "padded.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "mid no edns", qname: "mid.rv.example.", qtype: dns.TypeTXT, from: "127.0.0.4"},
		{name: "mid edns 512", qname: "mid.rv.example.", qtype: dns.TypeTXT, from: "127.0.0.4", edns: true, size: 512},
		{name: "mid edns 600 do", qname: "mid.rv.example.", qtype: dns.TypeTXT, from: "127.0.0.4", edns: true, size: 600, do: true},
		{name: "midextra no edns", qname: "midextra.rv.example.", qtype: dns.TypeMX, from: "127.0.0.4"},
		{name: "midextra edns 512", qname: "midextra.rv.example.", qtype: dns.TypeMX, from: "127.0.0.4", edns: true, size: 512},
		{name: "long upstream ede, edns 512", qname: "longede.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, size: 512},
		{name: "lower upstream", qname: "LoWeR.rv.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "blocked long mixed case", qname: strings.Repeat("Ab", 25) + "." + strings.Repeat("cD", 25) + "." + strings.Repeat("eF", 25) + "." + strings.Repeat("gH", 25) + ".WWW.TIKTOK.COM.", qtype: dns.TypeA, from: "127.0.0.1"},
		{name: "blocked long edns 512", qname: strings.Repeat("ab", 25) + "." + strings.Repeat("cd", 25) + "." + strings.Repeat("ef", 25) + "." + strings.Repeat("gh", 25) + ".www.tiktok.com.", qtype: dns.TypeA, from: "127.0.0.1", edns: true, size: 512},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, q := tc.pack(t)
			for _, round := range memoRounds {
				wire := askRaw(t, p.wire, tc.from, q)
				msg := askRaw(t, p.msg, tc.from, q)
				checkRFC(t, "wire "+round, m, wire)
				checkRFC(t, "msg "+round, m, msg)
				w, wttls := ttlsZeroed(t, wire)
				g, gttls := ttlsZeroed(t, msg)
				assert.Equal(t, g, w, "%s: the same answer, octet for octet", round)
				if assert.Len(t, wttls, len(gttls)) {
					for i := range wttls {
						assert.InDelta(t, gttls[i], wttls[i], 1, "%s: TTL %d", round, i)
					}
				}
			}
		})
	}
}

// TestCacheHitInAnotherSpelling: a hit asked in another spelling than the
// miss that filled the cache.
func TestCacheHitInAnotherSpelling(t *testing.T) {
	up := startUpstream(t, rfcAnswer)
	text := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 2s", 1)
	p := startWirePair(t, text, up.addr)
	for i, name := range []string{"case.rv.example.", "CaSe.rv.example.", "CASE.RV.EXAMPLE."} {
		tc := rfcCase{qname: name, qtype: dns.TypeA, from: "127.0.0.4", edns: i == 1}
		m, q := tc.pack(t)
		wire := askRaw(t, p.wire, tc.from, q)
		msg := askRaw(t, p.msg, tc.from, q)
		checkRFC(t, "wire "+name, m, wire)
		checkRFC(t, "msg "+name, m, msg)
		w, _ := ttlsZeroed(t, wire)
		g, _ := ttlsZeroed(t, msg)
		assert.Equal(t, g, w, name)
	}
}

// TestDNSSECRecordsOnlyWithDO: an upstream that signs its answers whatever
// the DO bit of dnsfence's query (rfcAnswer) gives RRSIG, NSEC and NSEC3
// records only to a client that set DO; a client without it gets the
// answer stripped of them, first from the upstream and then from the
// cache, on the wire path and the message path alike (RFC 4035 §3.2.1:
// "If the DO bit in an initiating query is not set, the name server side
// MUST strip any authenticating DNSSEC RRs from the response", as Unbound
// does), but for those the question asks for.
func TestDNSSECRecordsOnlyWithDO(t *testing.T) {
	up := startUpstream(t, rfcAnswer)
	text := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 2s", 1)
	p := startWirePair(t, text, up.addr)
	tests := []struct {
		rfcCase
		want []uint16 // the types of the answer and authority records, in order
	}{
		{rfcCase{name: "signed, no edns", qname: "rrsig.rv.example.", qtype: dns.TypeA}, []uint16{dns.TypeA}},
		{rfcCase{name: "signed, edns", qname: "rrsig.rv.example.", qtype: dns.TypeA, edns: true}, []uint16{dns.TypeA}},
		{rfcCase{name: "signed, do", qname: "rrsig.rv.example.", qtype: dns.TypeA, edns: true, do: true},
			[]uint16{dns.TypeA, dns.TypeRRSIG}},
		{rfcCase{name: "nodata, edns", qname: "nsec.rv.example.", qtype: dns.TypeAAAA, edns: true}, []uint16{dns.TypeSOA}},
		{rfcCase{name: "nodata, do", qname: "nsec.rv.example.", qtype: dns.TypeAAAA, edns: true, do: true},
			[]uint16{dns.TypeSOA, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeRRSIG}},
		{rfcCase{name: "rrsig asked for", qname: "rrsig.rv.example.", qtype: dns.TypeRRSIG, edns: true},
			[]uint16{dns.TypeA, dns.TypeRRSIG}},
		{rfcCase{name: "any asked for", qname: "rrsig.rv.example.", qtype: dns.TypeANY, edns: true},
			[]uint16{dns.TypeA, dns.TypeRRSIG}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, q := tc.pack(t)
			for _, round := range memoRounds {
				for path, server := range map[string]string{"wire": p.wire, "msg": p.msg} {
					r := checkRFC(t, path+" "+round, m, askRaw(t, server, "127.0.0.4", q))
					var got []uint16
					for _, rr := range append(r.Answer, r.Ns...) {
						got = append(got, rr.Header().Rrtype)
					}
					assert.Equal(t, tc.want, got, "%s %s", path, round)
				}
			}
		})
	}
}
