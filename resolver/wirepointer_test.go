package resolver

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawDatagramUpstream is a UDP upstream (no TCP: a retry over TCP is
// refused) that answers every query with the octets answer makes of it.
func rawDatagramUpstream(t *testing.T, answer func(q []byte) []byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	serveDatagrams(pc, answer)
	return pc.LocalAddr().String()
}

// headerPointerAnswer answers q with a CNAME whose target, and the owner of
// the A record after it, are a compression pointer to offset 0: the ID.
// dnsfence's wire path checks and inspects the answer with ID 0 there
// (the root name), but sends the client the same octets under the client's
// ID; a client whose ID is 0xC000|X reads a pointer to offset X, where a
// TXT record owned by the question name (not an alias: never followed)
// holds the octets of www.tiktok.com. It returns the answer and X.
func headerPointerAnswer(q []byte) ([]byte, int) {
	qq, ok := dnswire.ReadQuestion(q)
	if !ok {
		return nil, 0
	}
	name := []byte{3, 'w', 'w', 'w', 6, 't', 'i', 'k', 't', 'o', 'k', 3, 'c', 'o', 'm', 0}
	b := make([]byte, 0, 512)
	b = append(b, q[0], q[1], 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0)
	b = append(b, q[dnswire.HeaderLen:qq.End]...)
	// qname TXT "<www.tiktok.com. in wire form>"
	b = append(b, 0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 1, 44, 0, byte(1+len(name)), byte(len(name)))
	x := len(b)
	b = append(b, name...)
	// qname CNAME <pointer to 0>
	b = append(b, 0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 1, 44, 0, 2, 0xC0, 0x00)
	// <pointer to 0> A 192.0.2.66
	b = append(b, 0xC0, 0x00, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 66)
	return b, x
}

// TestWirePointerIntoHeaderFailsClosed: a compression pointer into the
// header of an upstream answer made the wire path send a blocking client a
// CNAME to a blocked name that its inspection never saw (it inspected the
// name with the cached ID, 0, and the client decodes it with its own ID).
// The answer must be blocked (NXDOMAIN) or refused as malformed
// (SERVFAIL), never NOERROR with a chain to www.tiktok.com.
func TestWirePointerIntoHeaderFailsClosed(t *testing.T) {
	up := rawDatagramUpstream(t, func(q []byte) []byte {
		a, _ := headerPointerAnswer(q)
		return a
	})
	f := startFence(t, testConfig, testFiles, up)
	m := question("cloak.eq.example.", dns.TypeA, false)
	probe, _ := m.Pack()
	_, x := headerPointerAnswer(probe)
	m.Id = 0xC000 | uint16(x) // the client picks the ID that points at x

	raw := askRaw(t, f.addr, "127.0.0.1", packed(m)) // 127.0.0.1: the blocking policy
	require.GreaterOrEqual(t, len(raw), dnswire.HeaderLen)
	assert.Equal(t, m.Id, binary.BigEndian.Uint16(raw))
	r := assertNoTikTokInAnswer(t, raw)
	assert.Contains(t, []int{dns.RcodeNameError, dns.RcodeServerFailure}, r.Rcode)
}

// assertNoTikTokInAnswer checks that raw, an answer to a blocking client,
// can be read and names www.tiktok.com. neither as an owner nor as a
// CNAME target in its answer section, and returns it read.
func assertNoTikTokInAnswer(t *testing.T, raw []byte) *dns.Msg {
	t.Helper()
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(raw), "the client can read the answer")
	t.Logf("answer to a blocking client:\n%s", r)
	for _, rr := range r.Answer {
		name := rr.Header().Name
		if c, ok := rr.(*dns.CNAME); ok {
			name = c.Target
		}
		assert.NotEqual(t, "www.tiktok.com.", name, "a blocked name reaches a blocking client: %s", rr)
	}
	return r
}

// ttlPointerAnswer answers q with a CNAME whose target, and the owner of
// the A record after it, are a compression pointer into the TTL of the
// first record (a TXT owned by the question name). As received, those TTL
// octets are 0x00010000, whose third octet 0 reads as the root name: what
// dnswire.Walk checks and what the inspection unpacks (cacheEntry.message
// unpacks the bytes as received). The answer's lifetime is the smallest
// TTL, 0xC000|X, so the wire path clamps that TTL to it when it packs the
// answer (appendCached, cacheEntry.ttlAt): the client then reads a pointer
// to X, where the TXT holds www.tiktok.com. in wire form. No client
// cooperation is needed.
func ttlPointerAnswer(q []byte) []byte {
	qq, ok := dnswire.ReadQuestion(q)
	if !ok {
		return nil
	}
	name := []byte{3, 'w', 'w', 'w', 6, 't', 'i', 'k', 't', 'o', 'k', 3, 'c', 'o', 'm', 0}
	b := make([]byte, 0, 512)
	b = append(b, q[0], q[1], 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0)
	b = append(b, q[dnswire.HeaderLen:qq.End]...)
	// qname 65536 TXT "<www.tiktok.com. in wire form>"
	ttl := len(b) + 6
	b = append(b, 0xC0, 0x0C, 0, 16, 0, 1, 0, 1, 0, 0, 0, byte(1+len(name)), byte(len(name)))
	x := len(b)
	b = append(b, name...)
	ptr := []byte{0xC0 | byte((ttl+2)>>8), byte(ttl + 2)} // the TTL's last two octets
	life := []byte{0, 0, 0xC0 | byte(x>>8), byte(x)}
	// qname <life> CNAME <pointer into the TXT's TTL>
	b = append(b, 0xC0, 0x0C, 0, 5, 0, 1)
	b = append(b, life...)
	b = append(b, 0, 2)
	b = append(b, ptr...)
	// <pointer into the TXT's TTL> <life> A 192.0.2.66
	b = append(b, ptr...)
	b = append(b, 0, 1, 0, 1)
	b = append(b, life...)
	b = append(b, 0, 4, 192, 0, 2, 66)
	return b
}

// TestWirePointerIntoTTLFailsClosed: the wire path inspects an upstream
// answer as received but sends it with its TTLs patched; a name that
// points into a TTL reads one way in the inspection and another at the
// client. A blocking client must never get NOERROR with a chain to
// www.tiktok.com. The message path, which repacks what it inspected, is
// checked alike.
func TestWirePointerIntoTTLFailsClosed(t *testing.T) {
	up := rawDatagramUpstream(t, ttlPointerAnswer)
	p := startWirePair(t, testConfig, up)
	for _, tc := range []struct{ name, server string }{{"message path", p.msg}, {"wire path", p.wire}} {
		t.Run(tc.name, func(t *testing.T) {
			m := question("ttl.eq.example.", dns.TypeA, true)
			raw := askRaw(t, tc.server, "127.0.0.1", packed(m)) // 127.0.0.1: the blocking policy
			assertNoTikTokInAnswer(t, raw)
		})
	}
}

// compressedAnswer is an upstream that answers as miekg/dns packs, with
// compression: every name that repeats one before it points at that
// one's labels, in owner names and in the RDATA of CNAME, MX, NS, SOA,
// SRV, HTTPS and RRSIG alike. The first label of the question says what.
func compressedAnswer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	switch strings.ToLower(q.Name[:strings.IndexByte(q.Name, '.')]) {
	case "chain":
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME b.cz.example.", q.Name), mustRR("b.cz.example. 200 IN CNAME c.b.cz.example."),
			mustRR("c.b.cz.example. 100 IN A 192.0.2.7"), mustRR("c.b.cz.example. 100 IN RRSIG A 8 4 100 20300101000000 20200101000000 1 cz.example. AAAA")}
	case "mx":
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mail.cz.example.", q.Name), mustRR("%s 300 IN MX 20 mail2.mail.cz.example.", q.Name)}
		m.Ns = []dns.RR{mustRR("cz.example. 3000 IN NS ns.cz.example.")}
		m.Extra = []dns.RR{mustRR("mail.cz.example. 400 IN A 192.0.2.25"), mustRR("ns.cz.example. 500 IN AAAA 2001:db8::53")}
	case "nx":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{mustRR("cz.example. 900 IN SOA ns.cz.example. host.ns.cz.example. 1 3600 600 86400 120")}
	case "srv":
		m.Answer = []dns.RR{mustRR("%s 300 IN SRV 0 5 443 svc.cz.example.", q.Name)}
		m.Extra = []dns.RR{mustRR("svc.cz.example. 300 IN A 192.0.2.30")}
	case "https":
		m.Answer = []dns.RR{mustRR("%s 300 IN HTTPS 1 cdn.cz.example. alpn=h2", q.Name)}
		m.Extra = []dns.RR{mustRR("cdn.cz.example. 300 IN A 192.0.2.31")}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
	}
	m.Compress = true
	_ = w.WriteMsg(m)
	return nil
}

// TestWirePathKeepsCompressedAnswers: answers compressed as real servers
// compress them (to the labels of names before) stay on the wire path:
// checked, cached and served as the bytes received (Cache.putWire), not
// unpacked and repacked; and a blocking client's inspection of them still
// sees every name.
func TestWirePathKeepsCompressedAnswers(t *testing.T) {
	up := startUpstream(t, compressedAnswer)
	f := startFence(t, testConfig, testFiles, up.addr)
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		records int // in the answer, authority and additional sections, OPT aside
		do      bool
	}{
		// With DO: an RRSIG is for a client that asks for DNSSEC records
		// (RFC 4035 §3.2.1; TestDNSSECRecordsOnlyWithDO).
		{name: "cname chain", qname: "chain.cz.example.", qtype: dns.TypeA, records: 4, do: true},
		{name: "mx with glue", qname: "mx.cz.example.", qtype: dns.TypeMX, records: 5},
		{name: "soa in authority", qname: "nx.cz.example.", qtype: dns.TypeA, rcode: dns.RcodeNameError, records: 1},
		{name: "srv target", qname: "srv.cz.example.", qtype: dns.TypeSRV, records: 2},
		{name: "https target", qname: "https.cz.example.", qtype: dns.TypeHTTPS, records: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := question(tc.qname, tc.qtype, true)
			if tc.do {
				q.IsEdns0().SetDo()
			}
			r := ask(t, f.addr, "127.0.0.4", "udp", q) // 127.0.0.4: no policy, nothing inspected
			require.Equal(t, tc.rcode, r.Rcode, "%s", r)
			assert.Len(t, append(append(append([]dns.RR(nil), r.Answer...), r.Ns...), r.Extra[:len(r.Extra)-1]...), tc.records)
			e, _ := f.handler.cache.Load().get(keyOf(q), time.Now())
			require.NotNil(t, e, "the answer is cached")
			assert.Same(t, &e.ownWire, e.wire, "the answer was cached as received (putWire)")
			// A blocking client's inspection reads the same answer.
			b := ask(t, f.addr, "127.0.0.1", "udp", q)
			assert.Equal(t, r.Rcode, b.Rcode)
			if assert.Len(t, b.Answer, len(r.Answer)) {
				for i := range r.Answer {
					assert.True(t, dns.IsDuplicate(r.Answer[i], b.Answer[i]), "%s\n%s", r.Answer[i], b.Answer[i])
				}
			}
		})
	}
}
