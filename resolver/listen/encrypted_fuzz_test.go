package listen

import (
	"encoding/binary"
	"net/http"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
)

// FuzzForwardedFor: any Forwarded or X-Forwarded-For header from a
// trusted proxy either names a valid client address or is an error;
// nothing panics.
func FuzzForwardedFor(f *testing.F) {
	for _, seed := range [][2]string{
		{"for=192.0.2.60;proto=http;by=203.0.113.43", ""},
		{`for="[2001:db8:cafe::17]:4711"`, ""},
		{`for=192.0.2.43, for="[2001:db8::1]", for=unknown`, ""},
		{`for="_gazonk"`, ""},
		{`for="a\"b";x="c,d", for=10.0.0.1`, ""},
		{"", "203.0.113.195, 70.41.3.18, 150.172.238.178"},
		{"", "[2001:db8::1]:80"},
		{"", "::ffff:10.0.0.1"},
	} {
		f.Add(seed[0], seed[1])
	}
	trusted := func(a netip.Addr) bool { return a.IsPrivate() }
	f.Fuzz(func(t *testing.T, fw, xff string) {
		h := http.Header{}
		if fw != "" {
			h.Set("Forwarded", fw)
		}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		client, ok, err := forwardedClient(h, trusted)
		if err != nil && ok {
			t.Fatalf("both a client and an error: %v", err)
		}
		if ok && (!client.Addr().IsValid() || client.Addr().Is4In6() || client.Addr().Zone() != "") {
			t.Fatalf("client %v is not a plain address", client)
		}
	})
}

// FuzzCheckQuery: any message is either a query for the Handler, a
// FORMERR or NOTIMP reply with the query's ID, or refused; nothing
// panics, and padding a reply keeps it parseable.
func FuzzCheckQuery(f *testing.F) {
	for _, name := range []string{"example.org", "www.blocked.test"} {
		m := query(name)
		b, _ := m.Pack()
		f.Add(b)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 7)})
		b, _ = m.Pack()
		f.Add(b)
	}
	// Padded queries the listener rejects: two questions, opcode STATUS.
	two := query("example.org")
	two.Question = append(two.Question, two.Question[0])
	two.IsEdns0().Option = append(two.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 5)})
	b, _ := two.Pack()
	f.Add(b)
	two.Question, two.Opcode = two.Question[:1], dns.OpcodeStatus
	b, _ = two.Pack()
	f.Add(b)
	// Opcode STATUS in a message of EDNS version 1: BADVERS, counted
	// badvers, not notimp (headerReject).
	two.IsEdns0().SetVersion(1)
	b, _ = two.Pack()
	f.Add(b)
	f.Add([]byte{0, 0, 0x28, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		chk := checkQuery(b)
		switch {
		case chk.req != nil && chk.reject != nil:
			t.Fatal("both a query and a rejection")
		case chk.reject != nil:
			if !chk.reject.Response || chk.reject.Id != uint16(b[0])<<8|uint16(b[1]) {
				t.Fatalf("bad rejection %v", chk.reject)
			}
			want := map[int]string{dns.RcodeFormatError: resultFormerr, dns.RcodeNotImplemented: resultNotimp, dns.RcodeBadVers: ResultBadvers}
			if r, ok := want[chk.reject.Rcode]; !ok || chk.result != r {
				t.Fatalf("result %q for %s", chk.result, dns.RcodeToString[chk.reject.Rcode])
			}
			packed, err := chk.reject.Pack()
			if err != nil {
				t.Fatalf("rejection does not pack: %v", err)
			}
			padded := padReply(paddedQuery(nil, b), packed)
			if err := new(dns.Msg).Unpack(padded); err != nil {
				t.Fatalf("padded rejection does not parse: %v", err)
			}
			if dnswire.HasOption(b, dns.EDNS0PADDING) && len(padded)%responsePaddingBlock != 0 {
				t.Fatalf("rejection padded to %d octets", len(padded))
			}
		case chk.req != nil:
			if len(chk.req.Question) != 1 || chk.req.Response {
				t.Fatalf("not one question: %v", chk.req)
			}
			reply := new(dns.Msg)
			reply.SetReply(chk.req)
			if chk.req.IsEdns0() != nil {
				reply.SetEdns0(1232, false)
			}
			packed, err := reply.Pack()
			if err != nil {
				return
			}
			padded := padReply(paddedQuery(chk.req, b), packed)
			if err := new(dns.Msg).Unpack(padded); err != nil {
				t.Fatalf("padded reply does not parse: %v", err)
			}
			if hasPadding(chk.req) && reply.IsEdns0() != nil && len(padded)%responsePaddingBlock != 0 {
				t.Fatalf("padded to %d octets", len(padded))
			}
			// DoQ pads every answer with an OPT record (RFC 9250 §5.4).
			frame := doqFrame(packed)
			if err := new(dns.Msg).Unpack(frame[2:]); err != nil {
				t.Fatalf("DoQ answer does not parse: %v", err)
			}
			if int(binary.BigEndian.Uint16(frame)) != len(frame)-2 {
				t.Fatalf("DoQ answer of %d octets framed as %d", len(frame)-2, binary.BigEndian.Uint16(frame))
			}
			if reply.IsEdns0() != nil && (len(frame)-2)%responsePaddingBlock != 0 {
				t.Fatalf("DoQ answer padded to %d octets", len(frame)-2)
			}
		default:
			if chk.result != ResultBadRequest {
				t.Fatalf("refused with result %q", chk.result)
			}
		}
	})
}
