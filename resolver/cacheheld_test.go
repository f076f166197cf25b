package resolver

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heavyShapes are answers whose RDATA miekg/dns unpacks into many times
// its octets (dnswire.Record.Held), by the query type that gets each and
// a record repeated, or grown, until the answer fills its size:
// a type bitmap held as a uint16 a type, a TXT record of empty strings
// held as a string header each, a TXT record of octets held as \DDD, an
// APL record of empty prefixes, an HTTPS record of empty ALPN IDs, an
// HTTPS record of ALPN IDs of 255 octets (miekg/dns makes room for an ID
// every 4 octets of the list, a string header of 16 bytes each), CAA
// records (a tag and a value, each a string), and A records under a name
// of octets held as \DDD. Measured at about 4,000 octets (the \DDD
// strings at 815, where dns.Msg.Len, which counts their escapes, reaches
// 4,000) before Held counted them: 66, 82, 4, 88, 41 and 232 KB of heap,
// estimated at the answer's octets (4 to 8 KB); the long ALPN IDs 20 KB,
// estimated at 5 KB before Held counted the room made for them.
var heavyShapes = []struct {
	name  string
	qtype uint16
	grow  func(m *dns.Msg, owner string, step int)
}{
	{"bitmap", dns.TypeNSEC, func(m *dns.Msg, owner string, step int) {
		var types []uint16
		for t := 1; t <= 512*(step+1); t++ {
			types = append(types, uint16(t))
		}
		m.Answer = []dns.RR{&dns.NSEC{Hdr: heavyHeader(owner, dns.TypeNSEC), NextDomain: "\\000." + owner, TypeBitMap: types}}
	}},
	{"empty-strings", dns.TypeTXT, func(m *dns.Msg, owner string, step int) {
		m.Answer = []dns.RR{&dns.TXT{Hdr: heavyHeader(owner, dns.TypeTXT), Txt: make([]string, 64*(step+1))}}
	}},
	{"escaped-strings", dns.TypeTXT, func(m *dns.Msg, owner string, step int) {
		txt := make([]string, step+1)
		for i := range txt {
			txt[i] = strings.Repeat(`\001`, 255)
		}
		m.Answer = []dns.RR{&dns.TXT{Hdr: heavyHeader(owner, dns.TypeTXT), Txt: txt}}
	}},
	{"apl", dns.TypeAPL, func(m *dns.Msg, owner string, step int) {
		prefixes := make([]dns.APLPrefix, 32*(step+1))
		for i := range prefixes {
			prefixes[i].Network = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		m.Answer = []dns.RR{&dns.APL{Hdr: heavyHeader(owner, dns.TypeAPL), Prefixes: prefixes}}
	}},
	{"alpn", dns.TypeHTTPS, func(m *dns.Msg, owner string, step int) {
		alpn := make([]string, 32*(step+1))
		for i := range alpn {
			alpn[i] = "h"
		}
		m.Answer = []dns.RR{&dns.HTTPS{SVCB: dns.SVCB{Hdr: heavyHeader(owner, dns.TypeHTTPS), Priority: 1, Target: ".",
			Value: []dns.SVCBKeyValue{&dns.SVCBAlpn{Alpn: alpn}}}}}
	}},
	{"long-alpn", dns.TypeHTTPS, func(m *dns.Msg, owner string, step int) {
		alpn := make([]string, step+1)
		for i := range alpn {
			alpn[i] = strings.Repeat("h", 255)
		}
		m.Answer = []dns.RR{&dns.HTTPS{SVCB: dns.SVCB{Hdr: heavyHeader(owner, dns.TypeHTTPS), Priority: 1, Target: ".",
			Value: []dns.SVCBKeyValue{&dns.SVCBAlpn{Alpn: alpn}}}}}
	}},
	{"caa", dns.TypeCAA, func(m *dns.Msg, owner string, step int) {
		m.Answer = nil
		for range 8 * (step + 1) {
			m.Answer = append(m.Answer, &dns.CAA{Hdr: heavyHeader(owner, dns.TypeCAA), Tag: "issue", Value: "ca.example"})
		}
	}},
	{"escaped-names", dns.TypeA, func(m *dns.Msg, owner string, step int) {
		label := strings.Repeat(`\001`, 63)
		target := label + "." + label + "." + label + "." + owner
		m.Answer = []dns.RR{&dns.CNAME{Hdr: heavyHeader(owner, dns.TypeCNAME), Target: target}}
		for i := range step + 1 {
			m.Answer = append(m.Answer, &dns.A{Hdr: heavyHeader(target, dns.TypeA), A: net.IPv4(192, 0, 2, byte(i))})
		}
	}},
}

func heavyHeader(owner string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: 3600}
}

// heavyAnswer is the answer to q of the shape at most size octets packed
// (compressed), grown as far as it fits (the largest step, found by
// doubling and halving: a server answering in time).
//
// The step found last for the same shape, size and length of name is
// tried first (heavySteps): where it still fits and the step after it
// does not, it is the step the search would find, in 2 packs rather than
// about 20 (TestHeavyAnswersNotCached asks 1,600 of these answers: their
// packing under -race was most of its 32 s).
func heavyAnswer(q *dns.Msg, shape int, size int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable, m.Compress = true, true
	if opt := q.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
	}
	fits := func(step int) bool {
		heavyShapes[shape].grow(m, q.Question[0].Name, step)
		b, err := m.Pack()
		return err == nil && len(b) <= size
	}
	key := heavyStepKey{shape: shape, size: size, nameLen: len(q.Question[0].Name), edns: q.IsEdns0() != nil}
	if hint, ok := heavySteps.Load(key); ok {
		if step := hint.(int); !fits(step+1) && fits(step) {
			return m
		}
	}
	if !fits(0) {
		m.Answer = nil
		return m
	}
	low, high := 0, 1 // fits(low), and high is past it
	for fits(high) {
		low, high = high, 2*high
	}
	for high-low > 1 {
		if mid := (low + high) / 2; fits(mid) {
			low = mid
		} else {
			high = mid
		}
	}
	fits(low)
	heavySteps.Store(key, low)
	return m
}

// heavyStepKey is what heavyAnswer's step is remembered by: the shape,
// the size in octets, and the question's name's length and EDNS.
type heavyStepKey struct {
	shape, size, nameLen int
	edns                 bool
}

// heavySteps holds the step heavyAnswer found last for each heavyStepKey:
// a hint it checks before it takes it.
var heavySteps sync.Map

// unpackedHeap is the heap a message unpacked from b takes, in bytes,
// measured over 200 copies; records is what its records take, the heap
// of the message with none of them aside.
func unpackedHeap(t *testing.T, b []byte) (heap, records int) {
	keep := make([]*dns.Msg, 200)
	before := heapAlloc()
	for i := range keep {
		keep[i] = new(dns.Msg)
		require.NoError(t, keep[i].Unpack(b))
	}
	after := heapAlloc()
	runtime.KeepAlive(keep)
	heap = int(after-before) / len(keep)
	if dnswire.ANCount(b)+dnswire.NSCount(b)+dnswire.ARCount(b) == 0 {
		return heap, 0
	}
	none := append([]byte(nil), b[:dnswire.HeaderLen]...)
	none[6], none[7], none[8], none[9], none[10], none[11] = 0, 0, 0, 0, 0, 0
	q, _ := dnswire.ReadQuestion(b)
	base, _ := unpackedHeap(t, append(none, b[dnswire.HeaderLen:q.End]...))
	return heap, heap - base
}

// TestHeldBoundsTheHeap: what the cache counts of an answer (footprint,
// the message path's, and wireOf's, the wire path's) is not below the
// heap miekg/dns takes for its records unpacked, a fifth aside for Go's
// rounding of allocations to size classes, for answers whose RDATA
// unpacks into many times its octets (heavyShapes), small and large;
// those over maxCachedFootprint are not cached. Measured before: 4 to 8
// KB estimated for 21 to 232 KB.
func TestHeldBoundsTheHeap(t *testing.T) {
	for i, shape := range heavyShapes {
		for _, size := range []int{1100, 2200, 4000} {
			q := new(dns.Msg)
			q.SetQuestion("heavy.example.org.", shape.qtype)
			m := heavyAnswer(q, i, size)
			b, err := m.Pack()
			require.NoError(t, err)
			var w wireAnswer
			sh, ok := wireOf(append([]byte(nil), b...), &w)
			require.True(t, ok, "%s: the wire path reads it", shape.name)
			asMessage := footprint(m)
			heap, records := unpackedHeap(t, b)
			t.Logf("%s, %d octets: %d bytes of heap (%d the records), %d estimated (wire path), %d (message path)",
				shape.name, len(b), heap, records, sh.footprint, asMessage)
			require.NotEmpty(t, m.Answer, "%s, %d octets", shape.name, size)
			assert.GreaterOrEqual(t, sh.footprint*6/5, records, "%s, %d octets: the wire path's estimate", shape.name, len(b))
			assert.GreaterOrEqual(t, asMessage*6/5, records, "%s, %d octets: the message path's estimate", shape.name, len(b))
			if records > maxCachedFootprint*6/5 {
				assert.True(t, tooLargeToCache(m), "%s, %d octets: cached", shape.name, len(b))
			}
		}
	}
}

// TestCommonAnswersStillCached: answers resolvers give every day fit in
// maxCachedFootprint as counted (wireOf, footprint): the bound on what
// miekg/dns holds does not stop them being cached.
func TestCommonAnswersStillCached(t *testing.T) {
	cdn := "e1234.dscx.akamaiedge-staging.example-cdn.net."
	rsa := strings.Repeat("A", 344)  // an RSA-2048 signature, base64
	ecdsa := strings.Repeat("B", 88) // an ECDSA P-256 signature
	answers := map[string][]string{
		"20 A under a CDN name": func() []string {
			rrs := []string{"www.example.org. 300 IN CNAME " + cdn}
			for i := range 20 {
				rrs = append(rrs, fmt.Sprintf("%s 20 IN A 192.0.2.%d", cdn, i))
			}
			return rrs
		}(),
		"12 TXT of 230 octets": func() []string {
			var rrs []string
			for i := range 12 {
				rrs = append(rrs, fmt.Sprintf(`example.org. 300 IN TXT "v=%d %s"`, i, strings.Repeat("k", 225)))
			}
			return rrs
		}(),
		"40 TXT of 60 octets (site verifications)": func() []string {
			var rrs []string
			for i := range 40 {
				rrs = append(rrs, fmt.Sprintf(`example.org. 300 IN TXT "site-verification=%02d%s"`, i, strings.Repeat("k", 40)))
			}
			return rrs
		}(),
		"AAAA signed twice": {
			"example.org. 300 IN AAAA 2001:db8::1",
			"example.org. 300 IN RRSIG AAAA 8 2 300 20261231000000 20261201000000 12345 example.org. " + rsa,
			"example.org. 300 IN RRSIG AAAA 13 2 300 20261231000000 20261201000000 23456 example.org. " + ecdsa,
		},
		"signed NSEC3 NXDOMAIN": {
			"example.org. 300 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 300",
			"example.org. 300 IN RRSIG SOA 13 2 300 20261231000000 20261201000000 23456 example.org. " + ecdsa,
			"2t7b4g4vsa5smi47k61mv5bv1a22bojr.example.org. 300 IN NSEC3 1 0 0 - 2T7B4G4VSA5SMI47K61MV5BV1A22BOJS A NS SOA RRSIG DNSKEY NSEC3PARAM",
			"2t7b4g4vsa5smi47k61mv5bv1a22bojr.example.org. 300 IN RRSIG NSEC3 13 3 300 20261231000000 20261201000000 23456 example.org. " + ecdsa,
			"3t7b4g4vsa5smi47k61mv5bv1a22bojr.example.org. 300 IN NSEC3 1 0 0 - 3T7B4G4VSA5SMI47K61MV5BV1A22BOJS A AAAA",
			"3t7b4g4vsa5smi47k61mv5bv1a22bojr.example.org. 300 IN RRSIG NSEC3 13 3 300 20261231000000 20261201000000 23456 example.org. " + ecdsa,
			"4t7b4g4vsa5smi47k61mv5bv1a22bojr.example.org. 300 IN NSEC3 1 0 0 - 4T7B4G4VSA5SMI47K61MV5BV1A22BOJS MX TXT",
			"4t7b4g4vsa5smi47k61mv5bv1a22bojr.example.org. 300 IN RRSIG NSEC3 13 3 300 20261231000000 20261201000000 23456 example.org. " + ecdsa,
		},
		"13 CAA of a site with five CAs": func() []string {
			var rrs []string
			for _, ca := range []string{"comodoca.com", "digicert.com; cansignhttpexchanges=yes", "letsencrypt.org", "pki.goog; cansignhttpexchanges=yes", "ssl.com", "sectigo.com"} {
				rrs = append(rrs, `example.org. 300 IN CAA 0 issue "`+ca+`"`, `example.org. 300 IN CAA 0 issuewild "`+ca+`"`)
			}
			return append(rrs, `example.org. 300 IN CAA 0 iodef "mailto:tls-abuse@example.org"`)
		}(),
		"OPENPGPKEY of an RSA-4096 key": {
			"c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.org. 300 IN OPENPGPKEY " + strings.Repeat("mQINBF", 400),
		},
		"HTTPS with ECH": {
			`example.org. 300 IN HTTPS 1 . alpn="h3,h2" ipv4hint=192.0.2.1,192.0.2.2 ech=` + strings.Repeat("AEX+DQBB", 30) + ` ipv6hint=2001:db8::1,2001:db8::2`,
		},
	}
	for name, rrs := range answers {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		m.Response, m.Compress = true, true
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			require.NoError(t, err, s)
			m.Answer = append(m.Answer, rr)
		}
		b, err := m.Pack()
		require.NoError(t, err)
		var w wireAnswer
		sh, ok := wireOf(b, &w)
		require.True(t, ok, name)
		t.Logf("%s: %d octets, %d bytes estimated", name, len(b), sh.footprint)
		assert.LessOrEqual(t, sh.footprint, maxCachedFootprint, name)
		assert.False(t, tooLargeToCache(m), name)
	}
}

// heavyUpstream answers a query for a name "heavy<i>-…" with the answer
// of heavyShapes[i] that fills 1,232 octets over UDP, 4,000 over TCP;
// any other name gets the default answer.
func heavyUpstream(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	var shape int
	if _, err := fmt.Sscanf(r.Question[0].Name, "heavy%d-", &shape); err != nil || shape >= len(heavyShapes) {
		return defaultAnswer(w, r)
	}
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	return heavyAnswer(r, shape, heavySize(udp))
}

// heavySize is the size of heavyUpstream's answers, in octets.
func heavySize(udp bool) int {
	if udp {
		return 1232
	}
	return 4000
}

// TestHeavyAnswersNotCached: answers whose RDATA unpacks into many times
// its octets (heavyShapes) are relayed whole but not cached, over UDP
// (the wire path) and TCP (the message path), so that an entry stays
// within about 12 KB; one that unpacks into less than
// maxCachedFootprint would be (tooLargeToCache says which).
// Measured before: 14 to 61 KB of heap an answer over UDP, every one of
// them cached.
func TestHeavyAnswersNotCached(t *testing.T) {
	up := startUpstream(t, heavyUpstream)
	// Answers built by packing (about 20 packs each, more under -race):
	// timeouts are not this test's subject (TestManyRecordAnswersBoundedInTheCache).
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 5s", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	for i, shape := range heavyShapes {
		for _, network := range []string{"udp", "tcp"} {
			const n = 100
			name := func(j int) string { return fmt.Sprintf("heavy%d-%s-%d.example.org.", i, network, j) }
			before := heapAlloc()
			for j := range n {
				r := ask(t, f.addr, "127.0.0.1", network, question(name(j), shape.qtype, true))
				require.Equal(t, dns.RcodeSuccess, r.Rcode, "%s %s", shape.name, network)
				require.NotEmpty(t, r.Answer, "%s %s: relayed whole (TC %v)", shape.name, network, r.Truncated)
			}
			perAnswer := (heapAlloc() - before) / n
			t.Logf("%s over %s: %d bytes of heap an answer", shape.name, network, perAnswer)
			assert.Less(t, perAnswer, int64(12<<10), "%s over %s: the cache holds what the answers unpack into", shape.name, network)

			count := up.count.Load()
			ask(t, f.addr, "127.0.0.1", network, question(name(0), shape.qtype, true))
			if tooLargeToCache(heavyAnswer(question(name(0), shape.qtype, true), i, heavySize(network == "udp"))) {
				assert.Greater(t, up.count.Load(), count, "%s over %s: answered from the cache", shape.name, network)
			} else {
				assert.Equal(t, count, up.count.Load(), "%s over %s: not cached", shape.name, network)
			}
		}
	}
}

// TestReportChannelOptionsHeld: an upstream's OPT record, which the
// message path keeps in what it caches, is counted as miekg/dns holds
// its options: a Report-Channel option's agent domain (RFC 9567) as
// text, up to four characters an octet (\DDD). Measured before: 13
// options of 4 labels of 62 octets escaped, 3,395 octets, took 14 KB of
// heap and were estimated at 8,080 bytes, so cached.
func TestReportChannelOptionsHeld(t *testing.T) {
	label := strings.Repeat(`\001`, 62)
	agent := label + "." + label + "." + label + "." + label + "."
	for _, n := range []int{1, 6, 13} {
		m := new(dns.Msg)
		m.SetQuestion("report.example.org.", dns.TypeA)
		m.Response, m.Compress = true, true
		m.Answer = []dns.RR{&dns.A{Hdr: heavyHeader("report.example.org.", dns.TypeA), A: net.IPv4(192, 0, 2, 1)}}
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}}
		for range n {
			opt.Option = append(opt.Option, &dns.EDNS0_REPORTING{Code: dns.EDNS0REPORTING, AgentDomain: agent})
		}
		m.Extra = []dns.RR{opt}
		b, err := m.Pack()
		require.NoError(t, err)
		got := new(dns.Msg)
		require.NoError(t, got.Unpack(b))
		heap, records := unpackedHeap(t, b)
		asMessage := footprint(got)
		t.Logf("%d options, %d octets: %d bytes of heap (%d the records), %d estimated", n, len(b), heap, records, asMessage)
		assert.GreaterOrEqual(t, asMessage*6/5, records, "%d options", n)
		if records > maxCachedFootprint*6/5 {
			assert.True(t, tooLargeToCache(got), "%d options: cached", n)
		}
	}
}

// TestFootprintOfCommonAnswerPacksNothing: the message path bounds a
// common answer's footprint from its fields (heldAtMost), without packing
// it: a CNAME chain to four A records takes no allocation. Measured
// before f8f55bb: one, and 1.6 µs a put.
func TestFootprintOfCommonAnswerPacksNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without the race detector (.ci/run)")
	}
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	m.Response = true
	cdn := "e1234.dscx.akamaiedge-staging.example-cdn.net."
	m.Answer = []dns.RR{&dns.CNAME{Hdr: heavyHeader("www.example.org.", dns.TypeCNAME), Target: cdn}}
	for i := range 4 {
		m.Answer = append(m.Answer, &dns.A{Hdr: heavyHeader(cdn, dns.TypeA), A: net.IPv4(192, 0, 2, byte(i)).To4()})
	}
	var n int
	allocs := testing.AllocsPerRun(100, func() { n = footprint(m) })
	assert.Zero(t, allocs, "footprint packed the answer")
	packed, walked := heldPacked(m)
	require.True(t, walked)
	assert.GreaterOrEqual(t, n, packed, "the bound is under the packed count")
}
