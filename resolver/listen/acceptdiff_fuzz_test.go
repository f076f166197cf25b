package listen

import (
	"bytes"
	"testing"

	"github.com/miekg/dns"
)

// FuzzAcceptDifferential feeds the same message b to the plain listeners'
// first look (AcceptMessage with AcceptQuery: UDP, TCP, DoT) and to the
// encrypted ones' (checkQuery: DoH, DoQ), whatever its QR bit, opcode and
// section counts: both drop it, both take it as the same query, or both
// answer it themselves with the same reply (same RCODE, FORMERR, NOTIMP or
// BADVERS, same header and OPT, octet for octet once packed).
func FuzzAcceptDifferential(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	plain, _ := q.Pack()
	q.SetEdns0(1232, true)
	withOPT, _ := q.Pack()
	opt := q.IsEdns0()
	opt.SetVersion(1)
	badvers, _ := q.Pack()
	f.Add(plain)
	f.Add(withOPT)
	f.Add(badvers)
	f.Add(withCount(plain, 6, 2))
	f.Add(withCount(withOPT, 8, 2))
	f.Add(withCount(withOPT, 10, 3))
	f.Add(withCount(badvers, 6, 2))
	f.Add(withCount(badvers, 4, 2))
	f.Add(withCount(badvers, 4, 0))
	notify := new(dns.Msg)
	notify.SetNotify("example.org.")
	notify.Answer = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeSOA, Class: dns.ClassINET},
		Ns: "ns.example.org.", Mbox: "h.example.org.", Serial: 2}}
	b, _ := notify.Pack()
	f.Add(b)
	f.Add(withCount(b, 6, 2))
	status := withOPT[:len(withOPT):len(withOPT)]
	status = bytes.Clone(status)
	status[2] |= 2 << 3 // opcode STATUS
	f.Add(status)
	f.Add(withCount(status, 6, 5))
	resp := bytes.Clone(withOPT)
	resp[2] |= 0x80
	f.Add(resp)
	f.Add([]byte{0, 1})

	f.Fuzz(func(t *testing.T, b []byte) {
		req, reject := AcceptMessage(b, AcceptQuery, func([]byte, error) {})
		chk := checkQuery(b)
		if (req != nil) != (chk.req != nil) || (reject != nil) != (chk.reject != nil) {
			t.Fatalf("plain listener: query %v, reject %v; encrypted: query %v, reject %v (result %q)",
				req != nil, reject != nil, chk.req != nil, chk.reject != nil, chk.result)
		}
		pack := func(name string, m *dns.Msg) []byte {
			p, err := m.Pack()
			if err != nil {
				t.Fatalf("%s: does not pack: %v", name, err)
			}
			return p
		}
		if reject != nil {
			if reject.Rcode != chk.reject.Rcode {
				t.Fatalf("plain listener answers %s, encrypted %s", dns.RcodeToString[reject.Rcode], dns.RcodeToString[chk.reject.Rcode])
			}
			if p, e := pack("plain reject", reject), pack("encrypted reject", chk.reject); !bytes.Equal(p, e) {
				t.Fatalf("rejects differ:\nplain %v\nencrypted %v", reject, chk.reject)
			}
		}
		if req != nil {
			if p, e := pack("plain query", req), pack("encrypted query", chk.req); !bytes.Equal(p, e) {
				t.Fatalf("queries differ:\nplain %v\nencrypted %v", req, chk.req)
			}
		}
	})
}
