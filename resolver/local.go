package resolver

import (
	"net"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
)

// localZone is a special-use zone dnsfence answers itself, for every
// client allowed_clients lets ask, and never forwards: the RFCs that
// reserve these names ask a caching or forwarding server not to send them
// on.
type localZone struct {
	apex  string // the zone's name, lowercase, with its trailing dot
	rcode int    // NOERROR (the zone exists, without data) or NXDOMAIN (no name exists)
	// loopback: an A question for any name in it gets 127.0.0.1, AAAA ::1
	// (localhost).
	loopback bool
	// why is the rule, as explain prints it after "which dnsfence answers
	// itself for every client: " (and -json as local_reason).
	why string
}

// localZones are the zones answered locally (Unbound serves these too by
// default, and more: test., home.arpa. and the RFC 6303 reverse zones).
// The rest of RFC 6761's and RFC 6303's names are forwarded on purpose: a
// department's upstream answers its own private reverse zones and
// home.arpa, and a DNS64 upstream synthesizes ipv4only.arpa's
// AAAA for NAT64 prefix discovery (RFC 7050), which an answer here would
// break.
var localZones = [...]localZone{
	// Discovery of Designated Resolvers: `_dns.resolver.arpa SVCB` asks
	// the resolver a client was given by address which encrypted
	// resolvers it designates. RFC 9462 §6.1: a forwarder SHOULD NOT
	// forward it (forwarded, the upstream would designate its own
	// resolver, which a device could then ask directly, past every policy
	// here); §6.4: a locally served zone (RFC 6303); §4: the SVCB records
	// of the resolvers it designates, dnsfence's own encrypted listeners
	// (Handler.localReply), and NODATA when it designates none.
	{apex: "resolver.arpa.", rcode: dns.RcodeSuccess,
		why: "resolver.arpa is never forwarded (RFC 9462 §6.1); _dns.resolver.arpa SVCB names dnsfence's own encrypted listeners, if it has any and ddr is not false, and every other question gets NODATA (§4)"},
	// RFC 7686 §2: caching DNS servers MUST answer NXDOMAIN for .onion
	// names (a query sent on leaks the Tor service the device wants).
	{apex: "onion.", rcode: dns.RcodeNameError, why: "onion names are never looked up (RFC 7686 §2)"},
	// RFC 6761 §6.4: caching DNS servers SHOULD answer NXDOMAIN for
	// .invalid names themselves.
	{apex: "invalid.", rcode: dns.RcodeNameError, why: "invalid names are never looked up (RFC 6761 §6.4)"},
	// RFC 6761 §6.3: caching DNS servers SHOULD answer address queries for
	// localhost names with the loopback address, and others negatively.
	{apex: "localhost.", rcode: dns.RcodeSuccess, loopback: true,
		why: "localhost names are the loopback address (RFC 6761 §6.3)"},
}

// The SOA and TTLs of every local zone (RFC 6303 §3: `@ 10800 IN SOA @
// nobody.invalid. 1 3600 1200 604800 10800`, `@ 10800 IN NS @`).
const (
	localTTL     = 10800 // seconds: every record's TTL and the SOA's MINIMUM
	localRname   = "nobody.invalid."
	localRefresh = 3600
	localRetry   = 1200
	localExpire  = 604800
)

// localZoneOf returns the local zone qname is in, if any: qname is a
// domain name in presentation form (any case, any escapes, with or without
// its trailing dot). Labels decide, not characters, as for the explain
// zone (explainName): `x\.resolver.arpa.`, whose last labels are
// "x.resolver" and "arpa", is in none, and `\114esolver.arpa.` is
// resolver.arpa.
func localZoneOf(qname string) (*localZone, bool) {
	// The TLD's length first: every query asks, and most for a TLD of
	// another length (com, net, org) than any zone's. A TLD written with
	// an escape (`\111nion`) may have any length.
	name := strings.TrimSuffix(qname, ".")
	tld, escaped := 0, false
	for i := len(name) - 1; i >= 0 && name[i] != '.'; i-- {
		if name[i] == '\\' {
			escaped = true
			break
		}
		tld++
	}
	switch {
	case escaped:
	case tld == len("arpa"), tld == len("onion"), tld == len("invalid"), tld == len("localhost"):
	default:
		return nil, false
	}
	if escaped || strings.IndexByte(name, '\\') >= 0 {
		// Escapes (`x\.resolver.arpa`, `\114esolver.arpa`): labels as
		// octets.
		for i := range localZones {
			z := &localZones[i]
			at, short := dns.PrevLabel(qname, dns.CountLabel(z.apex))
			if !short && blocklist.SameName(qname[at:], z.apex) {
				return z, true
			}
		}
		return nil, false
	}
	for i := range localZones {
		z := &localZones[i]
		apex := z.apex[:len(z.apex)-1]
		n := len(name) - len(apex)
		if n >= 0 && strings.EqualFold(name[n:], apex) && (n == 0 || name[n-1] == '.') {
			return z, true
		}
	}
	return nil, false
}

// reply answers req, whose question name is in z, from z's own records:
// the SOA and the NS at the apex when asked for them, an address in a
// loopback zone, every one of those the name has for ANY (RFC 1035
// §3.2.3, as an authoritative server answers it: NODATA would say the
// name has none), and otherwise z's negative answer (NODATA, or NXDOMAIN)
// with the SOA in the authority section for RFC 2308 negative caching.
func (z *localZone) reply(req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	class := recordClass(q.Qclass)
	hdr := func(name string, rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: rrtype, Class: class, Ttl: localTTL}
	}
	soa := &dns.SOA{Hdr: hdr(z.apex, dns.TypeSOA), Ns: z.apex, Mbox: localRname, Serial: 1,
		Refresh: localRefresh, Retry: localRetry, Expire: localExpire, Minttl: localTTL}
	apex := z.isApex(q.Name)
	m := newReply(req, z.rcodeOf(q.Name))
	// The one answer dnsfence is an authority for (RFC 1035 §4.1.1): the
	// zone is its own, as BIND's empty zones and Unbound's local zones
	// are theirs (replyHeader clears AA on every other answer).
	m.Authoritative = true
	all := q.Qtype == dns.TypeANY
	if apex && (all || q.Qtype == dns.TypeSOA) {
		m.Answer = append(m.Answer, soa)
	}
	if apex && (all || q.Qtype == dns.TypeNS) {
		m.Answer = append(m.Answer, &dns.NS{Hdr: hdr(z.apex, dns.TypeNS), Ns: z.apex})
	}
	if z.loopback && (all || q.Qtype == dns.TypeA) {
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(q.Name, dns.TypeA), A: net.IPv4(127, 0, 0, 1).To4()})
	}
	if z.loopback && (all || q.Qtype == dns.TypeAAAA) {
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(q.Name, dns.TypeAAAA), AAAA: net.IPv6loopback})
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{soa}
	}
	return m
}

// isApex reports whether qname, a name in z however spelt, is z's apex:
// it has as many labels.
func (z *localZone) isApex(qname string) bool {
	return dns.CountLabel(qname) == dns.CountLabel(z.apex)
}

// rcodeOf is the RCODE of z's answer for qname, a name in z, whatever the
// type asked: NOERROR at the apex, which exists in every zone, z's own
// below it.
func (z *localZone) rcodeOf(qname string) int {
	if z.isApex(qname) {
		return dns.RcodeSuccess
	}
	return z.rcode
}
