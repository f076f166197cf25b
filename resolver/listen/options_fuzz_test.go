package listen

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// refSound is RFC 7873 §5.2.2 and RFC 7871 §6 for one option, written
// apart from dnswire.OptionSound: a COOKIE of 8 octets or 16 to 40; a
// Client Subnet of FAMILY 1 or 2 whose prefixes fit the address, with
// exactly the octets SOURCE PREFIX-LENGTH needs and no bit past it, or
// FAMILY 0 as /0 with no address.
func refSound(code uint16, data []byte) bool {
	switch code {
	case dns.EDNS0COOKIE:
		return len(data) == 8 || 16 <= len(data) && len(data) <= 40
	case dns.EDNS0SUBNET:
	default:
		return true
	}
	if len(data) < 4 {
		return false
	}
	source, scope, addr := int(data[2]), int(data[3]), data[4:]
	full := map[uint16]int{1: 4, 2: 16}[binary.BigEndian.Uint16(data)]
	if binary.BigEndian.Uint16(data) == 0 {
		return source == 0 && len(addr) == 0
	}
	if full == 0 || source > full*8 || scope > full*8 || len(addr) != (source+7)/8 {
		return false
	}
	a, _ := netip.AddrFromSlice(append(append([]byte(nil), addr...), make([]byte, full-len(addr))...))
	return netip.PrefixFrom(a, source).Masked().Addr() == a
}

// optQuery is a query for example.org A with an OPT whose RDATA is
// rdata, and a second OPT after it when two is set.
func optQuery(rdata []byte, two bool) []byte {
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	b, _ := q.Pack()
	opt := func(rdata []byte) {
		b = append(b, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, byte(len(rdata)>>8), byte(len(rdata)))
		b = append(b, rdata...)
		b[11]++
	}
	opt(rdata)
	if two {
		opt(nil)
	}
	return b
}

// FuzzOptionsSound builds queries around any OPT RDATA and checks the
// listeners' option checks against refSound: a query with an option
// refSound calls malformed gets FORMERR from the plain listeners
// (AcceptMessage) and the encrypted ones (checkQuery) alike, and neither
// takes a query the other refuses, its OPT cut short, counted wrong, or
// doubled; keepaliveTimeout, on a query taken, says whether an
// edns-tcp-keepalive option carries a TIMEOUT.
func FuzzOptionsSound(f *testing.F) {
	opt := func(code uint16, data ...byte) []byte {
		return append([]byte{byte(code >> 8), byte(code), byte(len(data) >> 8), byte(len(data))}, data...)
	}
	cat := func(bs ...[]byte) (out []byte) {
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for _, rdata := range [][]byte{
		nil,
		opt(dns.EDNS0COOKIE, 1, 2, 3, 4, 5, 6, 7, 8),
		opt(dns.EDNS0COOKIE, 1, 2, 3, 4, 5, 6, 7),
		opt(dns.EDNS0COOKIE, make([]byte, 41)...),
		opt(dns.EDNS0SUBNET, 0, 1, 24, 0, 10, 20, 30),
		opt(dns.EDNS0SUBNET, 0, 1, 24, 0, 10, 20, 30, 4),
		opt(dns.EDNS0SUBNET, 0, 1, 23, 0, 10, 20, 31),
		opt(dns.EDNS0SUBNET, 0, 0, 0, 0),
		opt(dns.EDNS0SUBNET, 0, 2, 48, 0, 0x20, 1, 0xd, 0xb8, 0, 1),
		opt(dns.EDNS0TCPKEEPALIVE),
		opt(dns.EDNS0TCPKEEPALIVE, 0, 100),
		opt(dns.EDNS0TCPKEEPALIVE, 0, 0),
		opt(dns.EDNS0TCPKEEPALIVE, 1),
		cat(opt(dns.EDNS0PADDING, 0, 0, 0), opt(dns.EDNS0TCPKEEPALIVE, 0, 9)),
		cat(opt(dns.EDNS0COOKIE, 1, 2, 3, 4, 5, 6, 7, 8), opt(dns.EDNS0SUBNET, 0, 1, 8, 0, 10, 0)),
		cat(opt(dns.EDNS0COOKIE, 1, 2, 3, 4, 5, 6, 7, 8), []byte{0, 11, 0}),
		{0, 11, 0, 2, 0},
	} {
		f.Add(rdata, byte(0))
	}
	f.Add(opt(dns.EDNS0TCPKEEPALIVE, 0, 100), byte(1))
	f.Add(opt(dns.EDNS0TCPKEEPALIVE, 0, 100), byte(2))
	f.Add(opt(dns.EDNS0COOKIE, 1, 2, 3, 4, 5, 6, 7, 8), byte(4))
	f.Fuzz(func(t *testing.T, rdata []byte, mode byte) {
		if len(rdata) > 1024 {
			return
		}
		b := optQuery(rdata, mode&1 != 0)
		switch {
		case mode&2 != 0 && len(b) > 12: // cut short
			b = b[:len(b)-1-int(mode>>2)%len(b[12:])]
		case mode&4 != 0: // RDLENGTH one more than the RDATA
			b[len(b)-len(rdata)-1]++
		}
		req, reject := AcceptMessage(b, AcceptQuery, func([]byte, error) {})
		chk := checkQuery(b)
		if (req != nil) != (chk.req != nil) || (reject != nil) != (chk.reject != nil) {
			t.Fatalf("plain listener: query %v, reject %v; encrypted: query %v, reject %v", req != nil, reject != nil, chk.req != nil, chk.reject != nil)
		}
		var timeout bool
		if req != nil {
			// As serveMessage calls it: on a query AcceptMessage took,
			// whose records are whole (its octets exactly, no spare
			// capacity to read past them into).
			timeout = keepaliveTimeout(slices.Clip(b))
		}
		if mode&6 != 0 {
			return
		}
		// The RDATA as options, as RFC 6891 §6.1.2 lays them out.
		sound, whole, wantTimeout := true, true, false
		for r := rdata; len(r) > 0; {
			if len(r) < 4 || 4+int(binary.BigEndian.Uint16(r[2:])) > len(r) {
				whole = false
				break
			}
			code, data := binary.BigEndian.Uint16(r), r[4:4+int(binary.BigEndian.Uint16(r[2:]))]
			sound = sound && refSound(code, data)
			wantTimeout = wantTimeout || code == dns.EDNS0TCPKEEPALIVE && len(data) > 0
			r = r[4+len(data):]
		}
		if !sound && req != nil {
			t.Fatalf("a malformed option taken: % x", rdata)
		}
		if req != nil && whole && timeout != wantTimeout {
			t.Fatalf("keepaliveTimeout %v, want %v: % x", timeout, wantTimeout, rdata)
		}
		if req != nil && !whole {
			t.Fatalf("OPT RDATA not made of whole options taken: % x", rdata)
		}
	})
}
