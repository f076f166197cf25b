package resolver

import (
	"bytes"
	"strings"

	"github.com/miekg/dns"
)

// resolverArpa is the special-use zone of Discovery of Designated
// Resolvers (RFC 9462): `_dns.resolver.arpa SVCB` asks the resolver a
// client was given by address which encrypted resolvers it designates.
const resolverArpa = "resolver.arpa."

// The locally served zone's SOA and TTLs (RFC 6303 §3: `@ 10800 IN SOA @
// nobody.invalid. 1 3600 1200 604800 10800`, `@ 10800 IN NS @`).
const (
	localTTL     = 10800 // seconds: every record's TTL and the SOA's MINIMUM
	localRname   = "nobody.invalid."
	localRefresh = 3600
	localRetry   = 1200
	localExpire  = 604800
)

// underResolverArpa reports whether qname, a domain name in presentation
// form (any case, any escapes, with or without its trailing dot), is
// resolver.arpa or a name below it. Labels decide, not characters:
// `x\.resolver.arpa.`, whose last labels are "x.resolver" and "arpa", is
// not below it, and `\114esolver.arpa.` is resolver.arpa.
//
// dnsfence designates no resolver, so it answers the whole zone itself:
// RFC 9462 §6.1 says a forwarder SHOULD NOT forward these queries, and one
// forwarded would let the upstream designate its own encrypted resolver,
// which a device could then ask directly, past every policy here.
func underResolverArpa(qname string) bool {
	if strings.IndexByte(qname, '\\') >= 0 {
		return escapedUnderResolverArpa(qname)
	}
	if !strings.HasSuffix(qname, ".") {
		qname += "."
	}
	n, z := len(qname), len(resolverArpa)
	if n < z || !strings.EqualFold(qname[n-z:], resolverArpa) {
		return false
	}
	return n == z || qname[n-z-1] == '.'
}

// escapedUnderResolverArpa is underResolverArpa for a name written with
// escapes: its last two labels as octets (RFC 4343: ASCII letters
// case-insensitively). A name that does not pack is no name at all.
func escapedUnderResolverArpa(qname string) bool {
	var buf [256]byte
	n, err := dns.PackDomainName(dns.Fqdn(qname), buf[:], 0, nil, false)
	if err != nil {
		return false
	}
	var labels [][]byte
	for off := 0; off < n && buf[off] != 0; off += 1 + int(buf[off]) {
		labels = append(labels, buf[off+1:off+1+int(buf[off])])
	}
	k := len(labels)
	return k >= 2 && bytes.EqualFold(labels[k-2], []byte("resolver")) && bytes.EqualFold(labels[k-1], []byte("arpa"))
}

// localReply answers req, whose question name is under resolver.arpa, from
// the locally served empty zone RFC 9462 §6.4 asks for (RFC 6303 §3's
// shape): the SOA and the NS at the apex when asked for them, and NODATA
// (NOERROR, no answer, the SOA in the authority section for RFC 2308
// negative caching) for every other name and type, `_dns.resolver.arpa
// SVCB` included: no resolver is designated.
func localReply(req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	class := recordClass(q.Qclass)
	hdr := func(rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: resolverArpa, Rrtype: rrtype, Class: class, Ttl: localTTL}
	}
	soa := &dns.SOA{Hdr: hdr(dns.TypeSOA), Ns: resolverArpa, Mbox: localRname, Serial: 1,
		Refresh: localRefresh, Retry: localRetry, Expire: localExpire, Minttl: localTTL}
	m := newReply(req, dns.RcodeSuccess)
	apex := strings.EqualFold(dns.Fqdn(q.Name), resolverArpa)
	switch {
	case apex && q.Qtype == dns.TypeSOA:
		m.Answer = []dns.RR{soa}
	case apex && q.Qtype == dns.TypeNS:
		m.Answer = []dns.RR{&dns.NS{Hdr: hdr(dns.TypeNS), Ns: resolverArpa}}
	default:
		m.Ns = []dns.RR{soa}
	}
	return m
}
