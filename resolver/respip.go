package resolver

import (
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// addressDecision is the response-IP half of the answer inspection
// (DESIGN.md §9, §10): every address the answer points the client at, the
// A and AAAA records and the ipv4hint and ipv6hint of HTTPS and SVCB
// records (RFC 9460 §7.3), under the policy's response-IP triggers. An
// address allowed (an allow list's trigger, or a passthru trigger) lets
// the whole answer stand, as an allow entry beats every block; else the
// first address inside a blocked prefix blocks it. It returns that
// decision and the address in text.
func addressDecision(p *Policy, resp *dns.Msg) (Decision, string, bool) {
	var blocked Decision
	var at netip.Addr
	var buf [8]netip.Addr
	for _, rr := range resp.Answer {
		for _, a := range answerAddresses(rr, buf[:0]) {
			d, ok := p.DecideAddress(a)
			switch {
			case !ok:
			case d.Allowed:
				return Decision{}, "", false
			case !blocked.Blocked:
				blocked, at = d, a
			}
		}
	}
	if !blocked.Blocked {
		return Decision{}, "", false
	}
	return blocked, at.String(), true
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
