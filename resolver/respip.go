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
// IPv4-mapped addresses are unmapped.
func answerAddresses(rr dns.RR, buf []netip.Addr) []netip.Addr {
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			buf = append(buf, a.Unmap())
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
