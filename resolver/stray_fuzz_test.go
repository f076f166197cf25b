package resolver

import (
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// refStray is strayRecords read from the wire, by section and type
// (dnswire.Walk), apart from miekg/dns: a query has no record in its
// answer section, none in its authority section but the SOA of an IXFR
// (RFC 1995 §3), and none in its additional section but an OPT (RFC 6891)
// and a TSIG (RFC 8945). ok is false when Walk cannot read the message.
func refStray(b []byte) (stray, ok bool) {
	q, ok := dnswire.ReadQuestion(b)
	if !ok || dnswire.QDCount(b) != 1 {
		return false, false
	}
	ok = dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		switch r.Section {
		case dnswire.Answer:
			stray = true
		case dnswire.Authority:
			stray = stray || q.Type != dns.TypeIXFR || r.Type != dns.TypeSOA
		default:
			stray = stray || r.Type != dns.TypeOPT && r.Type != dns.TypeTSIG
		}
		return true
	})
	return stray, ok
}

// FuzzStrayRecords checks strayRecords against refStray on every message
// both miekg/dns and dnswire.Walk read whole.
func FuzzStrayRecords(f *testing.F) {
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	a, _ := dns.NewRR("example.org. 60 IN A 192.0.2.1")
	soa, _ := dns.NewRR("example.org. 60 IN SOA ns.example.org. h.example.org. 1 2 3 4 5")
	tsig := &dns.TSIG{Hdr: dns.RR_Header{Name: "key.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, TimeSigned: 1, Fudge: 300, MACSize: 2, MAC: "abcd"}
	for _, tc := range []struct {
		qtype         uint16
		an, ns, extra []dns.RR
	}{
		{qtype: dns.TypeA},
		{qtype: dns.TypeA, an: []dns.RR{a}},
		{qtype: dns.TypeA, ns: []dns.RR{soa}},
		{qtype: dns.TypeIXFR, ns: []dns.RR{soa}},
		{qtype: dns.TypeIXFR, ns: []dns.RR{a}},
		{qtype: dns.TypeIXFR, ns: []dns.RR{soa, soa}},
		{qtype: dns.TypeA, extra: []dns.RR{a}},
		{qtype: dns.TypeA, extra: []dns.RR{tsig}},
		{qtype: dns.TypeA, an: []dns.RR{tsig}},
	} {
		m := question("example.org.", tc.qtype, true)
		m.Answer, m.Ns = tc.an, tc.ns
		m.Extra = append(m.Extra, tc.extra...)
		add(m)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil || len(m.Question) != 1 {
			return
		}
		want, ok := refStray(b)
		if !ok || len(m.Answer) != int(dnswire.ANCount(b)) || len(m.Ns) != int(dnswire.NSCount(b)) || len(m.Extra) != int(dnswire.ARCount(b)) {
			return
		}
		if got := strayRecords(m); got != want {
			t.Fatalf("strayRecords %v, want %v: %s", got, want, m)
		}
	})
}
