package upstream

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
)

// HealthCheck is the question (class IN) every probe of an upstream's
// health asks: the probes of a down upstream, the first probe of one not
// yet measured, the check after an answer that leaves its health as it
// was (checkHealth), and the readiness probe behind /readyz (Probe). Its
// answer is judged as a query's: usable unless its RCODE is SERVFAIL,
// REFUSED, NOTIMP, FORMERR, BADVERS, BADCOOKIE or another failureRcode,
// or it is unusable (another question, cut short over TCP); NXDOMAIN and
// NODATA are answers.
//
// The root NS set (DefaultHealthCheck) is what any resolver with root
// hints or a forwarder has cached. An internal-only resolver with
// neither (Windows DNS with its root hints removed, a BIND with only
// internal zones, as on isolated networks) answers it SERVFAIL or
// REFUSED while it answers every name it serves: with the root NS
// question it is never found back up once down and, the only upstream,
// keeps /readyz 503 while no client asks. A name of its own (its AD
// domain's SOA) is the question to ask it (`upstream_health_check`; as
// CoreDNS forward's `health_check … domain FQDN`, coredns/coredns#5121,
// and dnsdist's checkName and checkType).
type HealthCheck struct {
	// Name is a fully qualified domain name, lower case (dns.CanonicalName).
	Name string
	// Qtype is a data RR type (RFC 6895 §3.1), never a meta one.
	Qtype uint16
}

// DefaultHealthCheck is the root NS set: `. IN NS`.
var DefaultHealthCheck = HealthCheck{Name: ".", Qtype: dns.TypeNS}

// String is the question as dig writes it: ". NS", "corp.example. SOA".
func (c HealthCheck) String() string {
	return c.Name + " " + dns.Type(c.Qtype).String() // TYPEnnn when it has no mnemonic (RFC 3597 §5)
}

// orDefault is c, or DefaultHealthCheck for the zero HealthCheck (an
// Options that names none).
func (c HealthCheck) orDefault() HealthCheck {
	if c == (HealthCheck{}) {
		return DefaultHealthCheck
	}
	return c
}

// HealthCheckName checks the name of a health check as written and
// returns it canonical (lower case, fully qualified): a domain name in
// presentation form (RFC 1035 §5.1; escapes `\X` and `\DDD` allowed), a
// trailing dot optional, whose wire form fits 255 octets (RFC 1035
// §3.1), with no white space or control character (a typo, never a name
// meant: write one as `\032`). A name written in Unicode (`behörde.de`)
// is converted to the A-labels its zone holds (`xn--behrde-yxa.de`,
// blocklist.ToASCII: IDNA2008's UTS #46 lookup profile, RFC 5891 §5), as
// list entries and the names explain is given are: its UTF-8 octets are a
// name no server has, which an internal-only upstream answers REFUSED or
// SERVFAIL, failing every check; text that is not UTF-8 or no valid
// internationalised name is an error. So is a name written with a port
// or as a URL (`corp.example:53`, `https://corp.example/`:
// blocklist.HostMeant), whose error ends "did you mean corp.example?".
func HealthCheckName(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("empty")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return "", fmt.Errorf("%q holds white space or a control character, which no domain name is written with", s)
	}
	if host, _ := blocklist.HostMeant(s); host != "" && !strings.Contains(s, `\`) {
		// `corp.example:53`, `https://corp.example/`: DNS lets a label
		// hold those octets, and every probe would ask a name no zone has.
		if _, err := HealthCheckName(host); err == nil {
			return "", fmt.Errorf("%q is not a domain name: a URL, a port, a path or a user is no part of one; did you mean %s?", s, host)
		}
		return "", fmt.Errorf("%q is not a domain name: a URL, a port, a path or a user is no part of one", s)
	}
	ascii, err := blocklist.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a domain name: %w", s, err)
	}
	if _, ok := dns.IsDomainName(ascii); !ok {
		// Why, where it is plain to see (escapes aside: the message only).
		for label := range strings.SplitSeq(strings.TrimSuffix(ascii, "."), ".") {
			switch {
			case label == "":
				return "", fmt.Errorf("%q is not a domain name: an empty label (two dots in a row, or a dot first)", s)
			case len(label) > 63:
				return "", fmt.Errorf("%q is not a domain name: a label over 63 octets (RFC 1035 §2.3.4)", s)
			}
		}
		return "", fmt.Errorf("%q is not a domain name", s)
	}
	if esc, bad := blocklist.BadEscape(ascii); bad {
		return "", fmt.Errorf("%q is not a domain name: %s is no escape (RFC 1035 §5.1: a backslash before a digit begins \\DDD, three decimal digits from 000 to 255)", s, esc)
	}
	// dns.IsDomainName lets names of 256 and 257 octets through
	// (miekg/dns#1552); blocklist.IsDomainName does not.
	if !blocklist.IsDomainName(ascii) {
		return "", fmt.Errorf("%q is not a domain name: over 255 octets (RFC 1035 §3.1)", s)
	}
	return dns.CanonicalName(ascii), nil
}

// nonDataTypes are the RR types below the meta range that no health
// check may ask, each with why: the meta types OPT (RFC 6891 §6.1.1:
// never asked for) and 0, the obsolete MD and MF (RFC 973), and the
// reserved 65535. The whole meta and QTYPE range, 128 to 255, is refused
// apart (metaTypeWhy).
var nonDataTypes = map[uint16]string{
	dns.TypeNone:     "reserved (RFC 6895 §3.1)",
	dns.TypeReserved: "reserved (RFC 6895 §3.1)",
	dns.TypeOPT:      "a meta type (RFC 6895 §3.1: EDNS's pseudo-record)",
	dns.TypeMD:       "obsolete (RFC 973)",
	dns.TypeMF:       "obsolete (RFC 973)",
}

// metaTypeWhy says why a type of the meta and QTYPE range, 128 to 255
// (RFC 6895 §3.1), is no health check's: the zone transfers IXFR and
// AXFR, which a resolver does not answer; ANY, which it may decline (RFC
// 8482 §4: a NOTIMP); and every other one (TKEY, TSIG, MAILA, MAILB, the
// unassigned values and those assigned later, such as NXNAME, 128, RFC
// 9824 §3.5), which a server answers FORMERR, as Unbound, NSD and
// dnsfence itself (resolver.MetaQType) do: each would fail every check
// of every upstream. ok is false for a type outside the range.
func metaTypeWhy(t uint16) (why string, ok bool) {
	switch {
	case t < 128 || t > 255:
		return "", false
	case t == dns.TypeIXFR || t == dns.TypeAXFR:
		return "a zone transfer, not a question a resolver answers", true
	case t == dns.TypeANY:
		return "a meta type that resolvers may decline (RFC 8482 §4), failing every check", true
	case t == dns.TypeMAILA || t == dns.TypeMAILB:
		return "an obsolete meta type (RFC 6895 §3.1), which a server answers FORMERR or NOTIMP, failing every check", true
	}
	return "a meta type (RFC 6895 §3.1: 128 to 255), which a server answers FORMERR (RFC 9824 §3.5 for NXNAME), failing every check", true
}

// HealthCheckType reads the type of a health check as written: the
// mnemonic of a data RR type, in any case ("SOA", "soa", "A"); a meta,
// obsolete or reserved type (nonDataTypes, metaTypeWhy) and an unknown
// mnemonic are errors.
func HealthCheckType(s string) (uint16, error) {
	t, ok := dns.StringToType[strings.ToUpper(s)]
	if !ok {
		return 0, fmt.Errorf("%q is not a DNS record type", s)
	}
	if why, bad := nonDataTypes[t]; bad {
		return 0, fmt.Errorf("%q is %s", s, why)
	}
	if why, bad := metaTypeWhy(t); bad {
		return 0, fmt.Errorf("%q is %s", s, why)
	}
	return t, nil
}
