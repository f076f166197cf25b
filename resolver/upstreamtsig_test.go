package resolver

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// signedAnswer is defaultAnswer with a TSIG record last, as no answer to
// dnsfence's unsigned queries should carry.
func signedAnswer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := defaultAnswer(w, r)
	m.Extra = append(m.Extra, &dns.TSIG{
		Hdr:       dns.RR_Header{Name: "upstream-key.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, TimeSigned: uint64(time.Now().Unix()), Fudge: 300,
		MACSize: 32, MAC: fmt.Sprintf("%064x", 1), OrigId: r.Id,
	})
	return m
}

// TestUpstreamTSIGNotRelayed: an upstream whose answers carry a TSIG
// record (dnsfence signs no query; RFC 8945 §5.3 signs the answer to a
// signed request) answered a query over UDP, and the answer was cached,
// where the same answer over TCP failed (miekg/dns has no secret for it):
// a lone such upstream gave NOERROR or SERVFAIL by the client's transport.
// Now such an answer is malformed on every path: another upstream's
// answer is taken, and with no other the query gets SERVFAIL; no answer
// carries the TSIG.
func TestUpstreamTSIGNotRelayed(t *testing.T) {
	signing := startUpstream(t, signedAnswer)
	good := startUpstream(t, defaultAnswer)
	both := govFence(t, "upstream_timeout: 1s\nupstream_strategy: ordered", signing.addr, good.addr)
	alone := govFence(t, "upstream_timeout: 1s", signing.addr)
	for i, network := range []string{"udp", "tcp", "udp"} { // the last from the cache, if any
		name := fmt.Sprintf("n%d.example.org.", i%2)
		r := ask(t, both.addr, "", network, question(name, dns.TypeA, true))
		assert.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode], network)
		require.NotEmpty(t, r.Answer, network)
		assert.Nil(t, r.IsTsig(), "%s: the upstream's TSIG is not relayed", network)

		r = ask(t, alone.addr, "", network, question(name, dns.TypeA, true))
		assert.Equal(t, dns.RcodeToString[dns.RcodeServerFailure], dns.RcodeToString[r.Rcode], network)
		assert.Nil(t, r.IsTsig(), network)
	}
	v, _ := metricValue(t, alone.registry, "dnsfence_upstream_errors_total", "upstream", signing.addr, "kind", "malformed")
	assert.Positive(t, v)
}

// TestUpstreamTSIGInAnySectionNotRelayed: a TSIG record in the answer or
// authority section of an upstream's answer (RFC 8945 §5.2: it belongs
// last in the additional section, and nowhere in the answer to an
// unsigned query) was taken, relayed and cached where one last in the
// additional section is malformed: checkAnswer looked at that section
// only. Such an answer is malformed too, on UDP (the wire path leaves it
// to the message path, dnswire.Walk not reading a TSIG's RDATA) and TCP.
func TestUpstreamTSIGInAnySectionNotRelayed(t *testing.T) {
	tsig := func(r *dns.Msg) dns.RR {
		return signedAnswer(nil, r).IsTsig()
	}
	for _, tc := range []struct {
		name  string
		place func(m, r *dns.Msg)
	}{
		{name: "answer", place: func(m, r *dns.Msg) { m.Answer = append(m.Answer, tsig(r)) }},
		{name: "authority", place: func(m, r *dns.Msg) { m.Ns = append(m.Ns, tsig(r)) }},
		{name: "additional, before the OPT", place: func(m, r *dns.Msg) { m.Extra = append([]dns.RR{tsig(r)}, m.Extra...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signing := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				m := defaultAnswer(w, r)
				tc.place(m, r)
				return m
			})
			alone := govFence(t, "upstream_timeout: 1s", signing.addr)
			for i, network := range []string{"udp", "tcp", "udp"} { // the last from the cache, if any
				for _, edns := range []bool{true, false} {
					name := fmt.Sprintf("n%d.example.org.", i%2)
					r := ask(t, alone.addr, "", network, question(name, dns.TypeA, edns))
					assert.Equal(t, dns.RcodeToString[dns.RcodeServerFailure], dns.RcodeToString[r.Rcode], "%s, edns %v", network, edns)
					for _, rr := range append(append(r.Answer, r.Ns...), r.Extra...) {
						assert.NotEqual(t, dns.TypeTSIG, rr.Header().Rrtype, "%s, edns %v: %v", network, edns, rr)
					}
				}
			}
			v, _ := metricValue(t, alone.registry, "dnsfence_upstream_errors_total", "upstream", signing.addr, "kind", "malformed")
			assert.Positive(t, v)
		})
	}
}

// sig0Answer is defaultAnswer with an RFC 2535 SIG over its A records in
// the answer section (data, to relay) and a SIG(0) (RFC 2931) last in the
// additional section, which signs the message to dnsfence alone.
func sig0Answer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := defaultAnswer(w, r)
	now := uint32(time.Now().Unix())
	sig := func(name string, covered uint16, class uint16) *dns.SIG {
		return &dns.SIG{RRSIG: dns.RRSIG{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeSIG, Class: class},
			TypeCovered: covered, Algorithm: dns.ECDSAP256SHA256, Expiration: now + 300, Inception: now - 300,
			KeyTag: 4711, SignerName: "upstream.example.", Signature: "c2lnbmF0dXJl"}}
	}
	if len(m.Answer) > 0 {
		data := sig(m.Answer[0].Header().Name, dns.TypeA, dns.ClassINET)
		data.Hdr.Ttl, data.Labels, data.OrigTtl = m.Answer[0].Header().Ttl, 3, m.Answer[0].Header().Ttl
		m.Answer = append(m.Answer, data)
	}
	m.Extra = append(m.Extra, sig(".", 0, dns.ClassANY))
	return m
}

// TestUpstreamSIG0Dropped: an upstream that signs its answers with SIG(0)
// (RFC 2931, which a server may do to any answer) had the signature
// relayed to the client, and cached with the answer, though dnsfence
// changes the message it signs (the ID, the OPT), so that it could only
// fail the client's check, and §3.1 has it never cached. It is now dropped
// on every path (the wire path hands such an answer to the message path);
// a SIG covering a type (RFC 2535 data) is relayed as before.
func TestUpstreamSIG0Dropped(t *testing.T) {
	signing := startUpstream(t, sig0Answer)
	f := govFence(t, "upstream_timeout: 1s", signing.addr)
	for i, network := range []string{"udp", "tcp", "udp", "tcp"} { // the last two from the cache
		name := fmt.Sprintf("s%d.example.org.", i%2)
		r := ask(t, f.addr, "", network, question(name, dns.TypeA, true))
		require.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode], network)
		var covered []string
		for _, rr := range append(append([]dns.RR{}, r.Answer...), r.Extra...) {
			if s, ok := rr.(*dns.SIG); ok {
				covered = append(covered, dns.TypeToString[s.TypeCovered])
			}
		}
		assert.Equal(t, []string{"A"}, covered, "%s %s: the SIG over the A records, and no SIG(0)", network, name)
	}
	v, _ := metricValue(t, f.registry, "dnsfence_upstream_errors_total", "upstream", signing.addr, "kind", "malformed")
	assert.Zero(t, v)
}

// TestUpstreamSIG0NotLastNotRelayed: a SIG(0) (a SIG covering type 0)
// anywhere but last in the additional section (RFC 2931 §3: it must be
// last there) was relayed to the client and cached, where only one last
// there is dropped; BIND's message parser refuses such a message
// (DNS_R_BADSIG0), so a client reading with BIND's library (dig, a BIND
// forwarder) could not read the answer at all. Such an answer is now
// malformed, as a TSIG out of place is: another upstream's answer is
// taken, and with no other the query gets SERVFAIL; no answer carries it.
func TestUpstreamSIG0NotLastNotRelayed(t *testing.T) {
	sig0 := func() dns.RR {
		return &dns.SIG{RRSIG: dns.RRSIG{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSIG, Class: dns.ClassANY},
			Algorithm: dns.ECDSAP256SHA256, Expiration: uint32(time.Now().Unix()) + 300, Inception: uint32(time.Now().Unix()) - 300,
			KeyTag: 4711, SignerName: "upstream.example.", Signature: "c2lnbmF0dXJl"}}
	}
	glue := func() dns.RR {
		rr, err := dns.NewRR("ns.example.org. 300 IN A 192.0.2.53")
		require.NoError(t, err)
		return rr
	}
	for _, tc := range []struct {
		name  string
		place func(m *dns.Msg)
	}{
		{name: "answer", place: func(m *dns.Msg) { m.Answer = append(m.Answer, sig0()) }},
		{name: "authority", place: func(m *dns.Msg) { m.Ns = append(m.Ns, sig0()) }},
		{name: "additional, not last", place: func(m *dns.Msg) { m.Extra = append(append([]dns.RR{sig0()}, m.Extra...), glue()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signing := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				m := defaultAnswer(w, r)
				tc.place(m)
				return m
			})
			good := startUpstream(t, defaultAnswer)
			alone := govFence(t, "upstream_timeout: 1s", signing.addr)
			both := govFence(t, "upstream_timeout: 1s\nupstream_strategy: ordered", signing.addr, good.addr)
			for i, network := range []string{"udp", "tcp", "udp"} { // the last from the cache, if any
				for _, edns := range []bool{true, false} {
					name := fmt.Sprintf("n%d.example.org.", i%2)
					r := ask(t, alone.addr, "", network, question(name, dns.TypeA, edns))
					assert.Equal(t, dns.RcodeToString[dns.RcodeServerFailure], dns.RcodeToString[r.Rcode], "%s, edns %v", network, edns)
					r = ask(t, both.addr, "", network, question(name, dns.TypeA, edns))
					assert.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode], "%s, edns %v", network, edns)
					assert.NotEmpty(t, r.Answer, "%s, edns %v", network, edns)
					for _, rr := range append(append(r.Answer, r.Ns...), r.Extra...) {
						if s, ok := rr.(*dns.SIG); ok {
							assert.NotZero(t, s.TypeCovered, "%s, edns %v: %v", network, edns, rr)
						}
					}
				}
			}
			v, _ := metricValue(t, alone.registry, "dnsfence_upstream_errors_total", "upstream", signing.addr, "kind", "malformed")
			assert.Positive(t, v)
		})
	}
}
