package resolver

import (
	"bytes"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzCacheFootprintPaths feeds any answer b to both paths' estimates of
// the heap it takes as a message: the wire path's (wireOf: the header and
// question, each record's dnswire.Record.Wide and recordOverhead, its OPT
// aside) and the message path's (footprint: miekg/dns's uncompressed
// length and recordOverhead a record). For an answer both read (wireOf,
// dns.Msg.Unpack), they differ by the OPT record alone, dns.Len of it and
// recordOverhead (107 bytes for an OPT without options, the only one
// wireOf takes), so that both paths cache it by size alike; but for
// character-strings with octets miekg/dns escapes, which the message path
// counts escaped, as miekg/dns holds them, and the wire path as octets.
func FuzzCacheFootprintPaths(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("big.example.org.", dns.TypeA)
	m := new(dns.Msg)
	m.SetReply(q)
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 300}
	}
	long := strings.Repeat("l", 60) + "." + strings.Repeat("m", 60) + ".example.org."
	m.Answer = []dns.RR{&dns.CNAME{Hdr: hdr("big.example.org.", dns.TypeCNAME), Target: long}}
	for i := range 20 {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(long, dns.TypeA), A: []byte{192, 0, 2, byte(i)}})
	}
	m.Ns = []dns.RR{&dns.SOA{Hdr: hdr("example.org.", dns.TypeSOA), Ns: "ns." + long, Mbox: "h." + long, Serial: 1, Minttl: 60}}
	m.Extra = []dns.RR{&dns.MINFO{Hdr: hdr(long, dns.TypeMINFO), Rmail: long, Email: "e." + long}}
	m.Compress = true
	b, _ := m.Pack()
	f.Add(b)
	m.SetEdns0(1232, true)
	b, _ = m.Pack()
	f.Add(b)
	m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(long, dns.TypeMX), Mx: long, Preference: 1},
		&dns.SRV{Hdr: hdr(long, dns.TypeSRV), Target: long},
		&dns.TXT{Hdr: hdr(long, dns.TypeTXT), Txt: []string{"a", "b\"c"}},
		&dns.NAPTR{Hdr: hdr(long, dns.TypeNAPTR), Flags: "u", Service: "x", Regexp: "!a!b!", Replacement: long},
		&dns.RRSIG{Hdr: hdr(long, dns.TypeRRSIG), TypeCovered: dns.TypeA, SignerName: long, Signature: "AAAA"},
		&dns.NSEC{Hdr: hdr(long, dns.TypeNSEC), NextDomain: long, TypeBitMap: []uint16{dns.TypeA, dns.TypeMX}},
		&dns.HTTPS{SVCB: dns.SVCB{Hdr: hdr(long, dns.TypeHTTPS), Priority: 1, Target: long}})
	b, _ = m.Pack()
	f.Add(b)

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 65535 {
			return
		}
		msg := new(dns.Msg)
		if msg.Unpack(b) != nil {
			return
		}
		var w wireAnswer
		sh, ok := wireOf(bytes.Clone(b), &w)
		if !ok {
			return
		}
		c := *msg
		c.Compress = false
		asMessage := footprint(c.Len(), msg)
		optPart := 0
		if opt := msg.IsEdns0(); opt != nil {
			optPart = dns.Len(opt) + recordOverhead
		}
		// miekg/dns counts a character-string (TXT, HINFO, NAPTR, CAA)
		// as it holds it, escaped (\DDD, \", \\): the message path's
		// estimate may be higher than the wire path's there, never lower.
		escaped := strings.Contains(msg.String(), `\`)
		if asMessage-optPart < sh.footprint || !escaped && asMessage-optPart != sh.footprint {
			t.Fatalf("the wire path estimates %d bytes, the message path %d (OPT %d): %v", sh.footprint, asMessage, optPart, msg)
		}
	})
}
