package resolver

import (
	"bytes"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// FuzzCacheFootprintPaths feeds any answer b to both paths' estimates of
// the heap it takes as a message, the wire path's (wireOf, from the
// datagram as it came) and the message path's (footprint: a bound from
// the message's fields, heldAtMost, or the message packed again
// uncompressed and walked, heldPacked), and to reflection's count of what
// miekg/dns holds for its records (heldByRecords). For an answer both
// read (wireOf, dns.Msg.Unpack), the walked counts are the same, the OPT
// record aside (wireOf cuts it off), and the bound is not below them, so
// that both paths cache an answer by size alike; and no estimate is below
// reflection's count, which is what bounds the cache's memory.
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
		&dns.TXT{Hdr: hdr(long, dns.TypeTXT), Txt: []string{"a", "b\"c", "", `\001\255`}},
		&dns.NAPTR{Hdr: hdr(long, dns.TypeNAPTR), Flags: "u", Service: `x\007`, Regexp: "!a!b!", Replacement: long},
		&dns.RRSIG{Hdr: hdr(long, dns.TypeRRSIG), TypeCovered: dns.TypeA, SignerName: long, Signature: "AAAAAA=="},
		&dns.NSEC{Hdr: hdr(long, dns.TypeNSEC), NextDomain: long, TypeBitMap: []uint16{dns.TypeA, dns.TypeMX, 1234}},
		&dns.NSEC3{Hdr: hdr(long, dns.TypeNSEC3), Hash: 1, Iterations: 2, SaltLength: 2, Salt: "ABCD", HashLength: 20,
			NextDomain: "2T7B4G4VSA5SMI47K61MV5BV1A22BOJR", TypeBitMap: []uint16{dns.TypeA, dns.TypeRRSIG}},
		&dns.DS{Hdr: hdr(long, dns.TypeDS), KeyTag: 1, Algorithm: 8, DigestType: 2, Digest: "0123456789ABCDEF"},
		&dns.DNSKEY{Hdr: hdr(long, dns.TypeDNSKEY), Flags: 257, Protocol: 3, Algorithm: 8, PublicKey: "AwEAAQ=="},
		&dns.HINFO{Hdr: hdr(long, dns.TypeHINFO), Cpu: "RFC8482", Os: ""},
		&dns.CAA{Hdr: hdr(long, dns.TypeCAA), Tag: "issue", Value: "ca.example"},
		&dns.APL{Hdr: hdr(long, dns.TypeAPL), Prefixes: []dns.APLPrefix{{Network: net.IPNet{IP: net.IPv4(192, 0, 2, 0).To4(), Mask: net.CIDRMask(24, 32)}}}},
		&dns.RFC3597{Hdr: hdr(long, 65280), Rdata: "00ff"},
		&dns.HTTPS{SVCB: dns.SVCB{Hdr: hdr(long, dns.TypeHTTPS), Priority: 1, Target: long, Value: []dns.SVCBKeyValue{
			&dns.SVCBAlpn{Alpn: []string{"h2", "", "h3"}}, &dns.SVCBIPv4Hint{Hint: []net.IP{net.IPv4(192, 0, 2, 1)}},
			&dns.SVCBECHConfig{ECH: []byte{1, 2, 3}}, &dns.SVCBIPv6Hint{Hint: []net.IP{net.ParseIP("2001:db8::1")}}}}})
	b, _ = m.Pack()
	f.Add(b)
	// Long ALPN IDs (room made for an ID every 4 octets) and the types
	// held.go counts field by field beside TXT and keys.
	m.Answer = []dns.RR{&dns.HTTPS{SVCB: dns.SVCB{Hdr: hdr(long, dns.TypeHTTPS), Priority: 1, Target: ".", Value: []dns.SVCBKeyValue{
		&dns.SVCBAlpn{Alpn: []string{strings.Repeat("h", 255), strings.Repeat("i", 255)}}}}},
		&dns.URI{Hdr: hdr(long, dns.TypeURI), Priority: 1, Weight: 2, Target: "https://example.org/"},
		&dns.LOC{Hdr: hdr(long, dns.TypeLOC), Version: 0, Size: 0x12, Latitude: 1 << 31, Longitude: 1 << 31, Altitude: 1e7},
		&dns.OPENPGPKEY{Hdr: hdr(long, dns.TypeOPENPGPKEY), PublicKey: "mQINBFmQINBF"},
		&dns.CERT{Hdr: hdr(long, dns.TypeCERT), Type: 1, KeyTag: 2, Algorithm: 8, Certificate: "AAAA"},
		&dns.DHCID{Hdr: hdr(long, dns.TypeDHCID), Digest: "AAAA"},
		&dns.ZONEMD{Hdr: hdr(long, dns.TypeZONEMD), Serial: 1, Scheme: 1, Hash: 1, Digest: "0011"},
		&dns.RKEY{Hdr: hdr(long, dns.TypeRKEY), Flags: 1, Protocol: 3, Algorithm: 8, PublicKey: "AwEAAQ=="}}
	b, _ = m.Pack()
	f.Add(b)
	escaped := strings.Repeat(`\001`, 60)
	m.Answer = []dns.RR{&dns.CNAME{Hdr: hdr("big.example.org.", dns.TypeCNAME), Target: escaped + ".example.org."},
		&dns.A{Hdr: hdr(escaped+".example.org.", dns.TypeA), A: []byte{192, 0, 2, 1}}}
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
		records := heldByRecords(msg)
		var w wireAnswer
		sh, ok := wireOf(bytes.Clone(b), &w)
		// The wire path cuts off the OPT record, which the entry's message
		// then lacks (cacheEntry.message).
		if opt := msg.IsEdns0(); ok && sh.footprint < records-16-heldBy(reflect.ValueOf(opt)) {
			t.Fatalf("the wire path estimates %d bytes, reflection counts %d for the records alone: %v", sh.footprint, records, msg)
		}
		asMessage := footprint(msg)
		if asMessage < records {
			t.Fatalf("the message path estimates %d bytes, reflection counts %d for the records alone: %v", asMessage, records, msg)
		}
		if packed, walked := heldPacked(msg); walked && heldAtMost(msg) < packed {
			t.Fatalf("the message path's bound %d is under its count %d: %v", heldAtMost(msg), packed, msg)
		}
		if !ok {
			return
		}
		// The message path packs and walks what the wire path walked, its
		// names written out and its OPT left out, where miekg/dns packs
		// the records as they came (not RDATA it unpacked short).
		c := *msg
		c.Compress = false
		c.Extra = slices.DeleteFunc(slices.Clone(c.Extra), func(rr dns.RR) bool { return rr.Header().Rrtype == dns.TypeOPT })
		packed, err := c.Pack()
		came, ok := dnswire.Without(b, func(r dnswire.Record) bool { return r.Type == dns.TypeOPT })
		if err != nil || !ok || !bytes.Equal(packed[dnswire.HeaderLen:], came[dnswire.HeaderLen:]) {
			return
		}
		if packedHeld, walked := heldPacked(&c); walked && packedHeld != sh.footprint {
			t.Fatalf("the wire path estimates %d bytes, the message path %d: %v", sh.footprint, packedHeld, msg)
		}
	})
}

// heldByRecords is what the records of msg take of the heap as reflection
// sees them: each record's place in its section (an interface), its
// value, and what that holds (heldBy).
func heldByRecords(msg *dns.Msg) int {
	n := 0
	for _, sec := range [][]dns.RR{msg.Answer, msg.Ns, msg.Extra} {
		for _, rr := range sec {
			n += 16 + heldBy(reflect.ValueOf(rr))
		}
	}
	return n
}

// heldBy is what v refers to takes of the heap, in bytes: a string's
// octets, a slice's array to its capacity, what a pointer or an interface
// points to, and in turn what those refer to; not v itself.
func heldBy(v reflect.Value) int {
	switch v.Kind() {
	case reflect.String:
		return v.Len()
	case reflect.Slice:
		n := v.Cap() * int(v.Type().Elem().Size())
		for i := range v.Len() {
			n += heldBy(v.Index(i))
		}
		return n
	case reflect.Pointer:
		if v.IsNil() {
			return 0
		}
		return int(v.Elem().Type().Size()) + heldBy(v.Elem())
	case reflect.Interface:
		if v.IsNil() {
			return 0
		}
		if e := v.Elem(); e.Kind() != reflect.Pointer {
			return int(e.Type().Size()) + heldBy(e)
		}
		return heldBy(v.Elem())
	case reflect.Struct:
		n := 0
		for i := range v.NumField() {
			n += heldBy(v.Field(i))
		}
		return n
	case reflect.Array:
		n := 0
		for i := range v.Len() {
			n += heldBy(v.Index(i))
		}
		return n
	}
	return 0
}
