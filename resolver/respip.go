package resolver

import (
	"net"
	"net/netip"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
)

// addressDecision is the response-IP half of the answer inspection
// (DESIGN.md §9, §10): every address the answer points the client at, the
// A and AAAA records and the ipv4hint and ipv6hint of HTTPS and SVCB
// records (RFC 9460 §7.3), under the policy's response-IP triggers. An
// address an allow list's trigger holds lets the whole answer stand, as an
// allow entry beats every block. In a block list, one trigger decides for
// the whole answer, as RPZ chooses among the response-IP triggers of one
// zone (draft-vixie-dnsop-dns-rpz, Precedence Rules; BIND ARM, "Response
// Policy Zone (RPZ) Rewriting", rules 4 and 5): the one with the longest
// prefix holding any of its addresses, of two as long the one holding the
// smaller address (addressTrigger). A passthru trigger deciding so lets the
// answer stand, beating a block of any list, as Decide's passthru does;
// but a passthru for one address no longer lets through another address
// that a longer prefix of the same zone blocks. Else the first list whose
// deciding trigger blocks blocks the answer. It returns that decision and
// the address in text.
func addressDecision(p *Policy, resp *dns.Msg) (Decision, string, bool) {
	var buf [8]netip.Addr
	for _, l := range p.allowIPs {
		for _, rr := range resp.Answer {
			for _, a := range answerAddresses(rr, buf[:0]) {
				if _, _, ok := l.MatchIP(a); ok {
					return Decision{}, "", false
				}
			}
		}
	}
	var blocked Decision
	var at netip.Addr
	for _, l := range p.blockIPs {
		d, a, ok := addressTrigger(l, resp)
		switch {
		case !ok:
		case d.Allowed:
			return Decision{}, "", false
		case !blocked.Blocked:
			blocked, at = d, a
		}
	}
	if !blocked.Blocked {
		return Decision{}, "", false
	}
	return blocked, at.String(), true
}

// addressTrigger is the response-IP trigger of l that decides for the
// answer resp, and the address it holds: of the triggers holding an
// address of the answer, the one with the longest prefix, and of those as
// long, the one holding the smallest address. Lengths and addresses are
// compared as RPZ compares them, an IPv4 prefix as the IPv4-mapped IPv6
// prefix it stands for (/24 as /120), so that the choice does not depend
// on the order of the records. ok is false when no trigger holds an
// address of the answer.
func addressTrigger(l addressList, resp *dns.Msg) (d Decision, at netip.Addr, ok bool) {
	var buf [8]netip.Addr
	best := -1
	for _, rr := range resp.Answer {
		for _, a := range answerAddresses(rr, buf[:0]) {
			e, t, ok := l.MatchIP(a)
			if !ok {
				continue
			}
			n := mappedBits(e)
			if n < best || n == best && !mappedLess(a, at) {
				continue
			}
			best, at = n, a
			d = Decision{Entry: e, Trigger: t}
			if t.Action == blocklist.ActionPassthru {
				d.Allowed = true
			} else {
				d.Blocked = true
			}
		}
	}
	return d, at, best >= 0
}

// mappedBits is the length of a response-IP entry's prefix, an IPv4
// prefix counted as the IPv4-mapped IPv6 prefix it stands for.
func mappedBits(e blocklist.Entry) int {
	p, ok := e.Prefix()
	if !ok {
		return 0
	}
	if p.Addr().Is4() {
		return p.Bits() + 96
	}
	return p.Bits()
}

// mappedLess reports whether a is smaller than b, IPv4 addresses compared
// as the IPv4-mapped IPv6 addresses they stand for.
func mappedLess(a, b netip.Addr) bool {
	return netip.AddrFrom16(a.As16()).Less(netip.AddrFrom16(b.As16()))
}

// answerAddresses appends to buf the addresses rr points the client at:
// an A or AAAA record's, or an HTTPS or SVCB record's address hints.
// IPv4-mapped addresses are unmapped. An IPv6 address in the NAT64
// Well-Known Prefix 64:ff9b::/96 (RFC 6052 §2.1), which a DNS64 upstream
// synthesizes from an A record (RFC 6147) and which a device behind NAT64
// reaches the IPv4 address through, is followed by that IPv4 address, so
// that an IPv4 trigger applies to it as to the A record.
func answerAddresses(rr dns.RR, buf []netip.Addr) []netip.Addr {
	add := func(ip net.IP) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		a = a.Unmap()
		buf = append(buf, a)
		if v4, ok := nat64Embedded(a); ok {
			buf = append(buf, v4)
		}
	}
	var params []dns.SVCBKeyValue
	switch v := rr.(type) {
	case *dns.A:
		add(v.A)
	case *dns.AAAA:
		add(v.AAAA)
	case *dns.HTTPS:
		params = v.Value
	case *dns.SVCB:
		params = v.Value
	}
	for _, kv := range params {
		switch h := kv.(type) {
		case *dns.SVCBIPv4Hint:
			for _, ip := range h.Hint {
				add(ip)
			}
		case *dns.SVCBIPv6Hint:
			for _, ip := range h.Hint {
				add(ip)
			}
		}
	}
	return buf
}

// nat64WKP is the NAT64 Well-Known Prefix (RFC 6052 §2.1).
var nat64WKP = netip.MustParsePrefix("64:ff9b::/96")

// nat64Embedded is the IPv4 address a inside the NAT64 Well-Known Prefix
// stands for (its last 32 bits, RFC 6052 §2.2); ok is false for any other
// address. Network-specific NAT64 prefixes, whose length and so the
// place of the IPv4 address only the network's operator knows, are not
// read.
func nat64Embedded(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() || !nat64WKP.Contains(a) {
		return netip.Addr{}, false
	}
	b := a.As16()
	return netip.AddrFrom4([4]byte(b[12:])), true
}
