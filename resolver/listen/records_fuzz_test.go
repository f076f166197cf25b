package listen

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// rawOPT reports whether the additional section of b, a message with a
// header, holds a record of type OPT whose fixed fields are there, read
// label by label and record by record apart from dnswire.FindOPT: a query whose
// records are cut short after such an OPT still had one (RFC 6891 §7).
func rawOPT(b []byte) bool {
	off := 12
	name := func() bool {
		for off < len(b) {
			c := int(b[off])
			switch {
			case c == 0:
				off++
				return true
			case c >= 0xC0:
				off += 2
				return off <= len(b)
			case c >= 0x40:
				return false
			}
			off += 1 + c
		}
		return false
	}
	for range binary.BigEndian.Uint16(b[4:]) {
		if !name() || off+4 > len(b) {
			return false
		}
		off += 4
	}
	an := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:]))
	for i := range an + int(binary.BigEndian.Uint16(b[10:])) {
		if !name() || off+10 > len(b) {
			return false
		}
		if i >= an && b[off] == 0 && b[off+1] == byte(dns.TypeOPT) {
			return true
		}
		off += 10 + int(b[off+8])<<8 + int(b[off+9])
	}
	return false
}

// FuzzRecordsWhole: dnswire.RecordsWhole never panics on a message with a header,
// and on one that miekg/dns unpacks whole (every question whole) it says
// what miekg/dns found: exactly the ANCOUNT, NSCOUNT and ARCOUNT records
// the header counts (RFC 1035 §4.1.1). The plain listeners (AcceptMessage)
// and the encrypted ones (checkQuery) take and reject alike every message
// with a header, QR clear and opcode QUERY, and each FORMERR they send
// themselves has the query's ID, opcode, RD and CD, RA set, no AD, and an OPT exactly
// when the query carries one (RFC 6891 §7).
func FuzzRecordsWhole(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	plain, _ := q.Pack()
	q.SetEdns0(1232, true)
	withOPT, _ := q.Pack()
	f.Add(plain)
	f.Add(withOPT)
	f.Add(withCount(plain, 6, 1))
	f.Add(withCount(plain, 8, 1))
	f.Add(withCount(plain, 10, 1))
	f.Add(withCount(withOPT, 10, 2))
	f.Add(append(withCount(withOPT, len(withOPT)-2, 4), 0, 8))
	f.Add(withCount(withOPT, 10, 0)) // trailing octets after the counted records
	a := new(dns.Msg)
	a.SetQuestion("example.org.", dns.TypeA)
	a.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: []byte{192, 0, 2, 1}}}
	a.Ns = []dns.RR{&dns.NS{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeNS, Class: dns.ClassINET}, Ns: "ns.example.org."}}
	a.SetEdns0(1232, false)
	a.Extra = append(a.Extra, &dns.TSIG{Hdr: dns.RR_Header{Name: "key.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, TimeSigned: 1, Fudge: 300, MACSize: 32, MAC: string(bytes.Repeat([]byte("ab"), 32))})
	a.Compress = true
	b, _ := a.Pack()
	f.Add(b)
	f.Add(b[:len(b)-1])

	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < msgHeaderSize {
			return
		}
		whole := dnswire.RecordsWhole(b)
		m := new(dns.Msg)
		if _, questions := dnswire.SkipQuestions(b); m.Unpack(b) == nil && questions {
			an, ns, ar := binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
			want := len(m.Answer) == int(an) && len(m.Ns) == int(ns) && len(m.Extra) == int(ar)
			if whole != want {
				t.Fatalf("RecordsWhole %v; miekg/dns read %d/%d/%d records of %d/%d/%d", whole, len(m.Answer), len(m.Ns), len(m.Extra), an, ns, ar)
			}
		}
		_, _ = AcceptMessage(b, accept, func([]byte, error) {}) // any header

		bits := binary.BigEndian.Uint16(b[2:])
		if bits&(1<<15) != 0 || dnswire.Opcode(bits) != dns.OpcodeQuery {
			return
		}
		req, reject := AcceptMessage(b, AcceptQuery, func([]byte, error) {})
		chk := checkQuery(b)
		if (req != nil) != (chk.req != nil) || (reject != nil) != (chk.reject != nil) {
			t.Fatalf("plain listener: query %v, reject %v; encrypted: query %v, reject %v", req != nil, reject != nil, chk.req != nil, chk.reject != nil)
		}
		if req != nil && !whole {
			t.Fatal("a query whose records are cut short taken")
		}
		edns := rawOPT(b)
		// FORMERR; but a message counting more records than a query
		// holds is rejected from its header (tooManyRecords), BADVERS
		// when it carries an OPT of another version (headerReject).
		rcode := dns.RcodeFormatError
		if off, ok := dnswire.FindOPT(b); ok && b[off+5] != 0 && dnswire.QDCount(b) == 1 &&
			tooManyRecords(dnswire.ANCount(b), dnswire.NSCount(b), dnswire.ARCount(b)) {
			rcode = dns.RcodeBadVers
		}
		for name, r := range map[string]*dns.Msg{"plain": reject, "encrypted": chk.reject} {
			if r == nil {
				continue
			}
			if r.Id != binary.BigEndian.Uint16(b) || !r.Response || !r.RecursionAvailable || r.Opcode != dns.OpcodeQuery ||
				r.RecursionDesired != (bits&(1<<8) != 0) || r.CheckingDisabled != (bits&(1<<4) != 0) || r.AuthenticatedData ||
				r.Rcode != rcode {
				t.Fatalf("%s: reject %v to ID %d, flags %#04x", name, &r.MsgHdr, binary.BigEndian.Uint16(b), bits)
			}
			if (r.IsEdns0() != nil) != edns {
				t.Fatalf("%s: reject with OPT %v, the query's %v", name, r.IsEdns0() != nil, edns)
			}
			if len(r.Question)+len(r.Answer)+len(r.Ns) != 0 {
				t.Fatalf("%s: reject %v", name, r)
			}
			if _, err := r.Pack(); err != nil {
				t.Fatalf("%s: the reject does not pack: %v", name, err)
			}
		}
	})
}

// withCount is a copy of the message b with the 16-bit count at octet at
// (4 QDCOUNT, 6 ANCOUNT, 8 NSCOUNT, 10 ARCOUNT) set to n.
func withCount(b []byte, at, n int) []byte {
	b = bytes.Clone(b)
	b[at], b[at+1] = byte(n>>8), byte(n)
	return b
}
