package blocklist

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
	"unicode"
	"unsafe"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
)

// Names arrive in presentation form (RFC 1035 §5.1), as miekg/dns writes
// the names it unpacks: a dot separates labels unless escaped, and `\X`
// stands for the octet X, `\DDD` for the octet of decimal value DDD. Only
// the octets count. The text of a name is up to four times longer than its
// wire form (`\001`), so nothing here is bounded by the length of the text.
// Escapes never hide a separator: a dot is one unless escaped, and nothing
// but a backslash escapes.

// maxLabel is the longest label, in octets (RFC 1035 §2.3.4).
const maxLabel = 63

// foldLabel writes the octets of the label text s to buf, ASCII letters in
// lower case, and returns them. It reports false for a label no list can
// hold: longer than 63 octets, or with an octet that is not a letter, a
// digit, '-' or '_' (normalizeEntry accepts no other), so that a label of
// 63 escaped control octets costs no more than its first. The result
// aliases buf.
func foldLabel(s string, buf *[maxLabel]byte) (string, bool) {
	n := 0
	for i := 0; i < len(s); {
		c, k := s[i], 1
		if c == '\\' {
			c, k = presname.Octet(s, i)
		}
		c = presname.Lower(c)
		if n == len(buf) || !entryOctet[c] {
			return "", false
		}
		buf[n] = c
		n++
		i += k
	}
	return unsafe.String(&buf[0], n), true
}

// entryOctet marks the octets a stored entry's labels are made of.
var entryOctet = func() (t [256]bool) {
	for c := range t {
		t[c] = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
	}
	return t
}()

// IsDomainName reports whether s is a domain name in presentation form
// that a query can carry: labels of 1 to 63 octets, 255 octets in all in
// wire form (RFC 1035 §3.1), a trailing dot optional. Where
// dns.IsDomainName lets names of 256 and 257 octets through, it does not.
// A malformed \DDD escape (BadEscape) makes s no domain name either.
func IsDomainName(s string) bool { return presname.IsDomainName(s) }

// HostMeant is the domain name s was meant to be when s is one written
// with the parts of a URL or an address around it, as a name is pasted
// from a browser, a proxy's log or a firewall rule: a whole URL
// (`https://www.tiktok.com/@user`), a port (`tiktok.com:443`, or a colon
// with none after it), a path, a query or a fragment (`tiktok.com/x?y#z`),
// a user (`user@tiktok.com`), or white space around it. host is that
// name as written (its case kept), "" when no domain name of two labels
// or more is left once those parts are dropped (`[2001:db8::1]:443`,
// `10.0.0.1:53`, `a b.com`, `localhost:8080`); parts reports
// whether s has any of them (`:/@?#` or white space; DNS lets a label
// hold those octets, but no host name has them).
func HostMeant(s string) (host string, parts bool) {
	if !strings.ContainsFunc(s, notInHostName) {
		return "", false
	}
	host = strings.TrimSpace(s)
	if u, err := url.Parse(host); err == nil && u.Scheme != "" && u.Host != "" {
		host = u.Hostname()
	} else if strings.Contains(host, "://") {
		return "", true // a URL with no host, or one that does not parse
	} else {
		if i := strings.IndexAny(host, "/?#"); i >= 0 {
			host = host[:i]
		}
		if i := strings.LastIndex(host, "@"); i >= 0 {
			host = host[i+1:]
		}
		if h, port, err := net.SplitHostPort(host); err == nil && strings.Trim(port, "0123456789") == "" {
			host = h
		}
	}
	if _, err := netip.ParseAddr(host); err == nil || !strings.Contains(strings.TrimSuffix(host, "."), ".") ||
		strings.ContainsFunc(host, notInHostName) || !IsDomainName(host) {
		// An address is no name (`10.0.0.1:53`), one label is no name
		// a list blocks, and what stands before a slash is often no
		// host: RFC 2317's classless reverse names
		// (`0/26.2.0.192.in-addr.arpa`) hold one in their first label.
		return "", true
	}
	return host, true
}

// notInHostName reports the characters of a URL, a port, a path or a
// user, and white space, which a name pasted from elsewhere carries and a
// host name never does.
func notInHostName(r rune) bool { return strings.ContainsRune(":/@?#", r) || unicode.IsSpace(r) }

// BadEscape finds the first escape of the presentation-form name s that
// RFC 1035 §5.1 does not allow (`\2.`, `\999`: a backslash before a digit
// begins \DDD, three decimal digits of value 0 to 255), and returns it as
// written and true, or "" and false. miekg/dns takes such an escape as
// another octet than the one meant, as BIND does not.
func BadEscape(s string) (string, bool) { return presname.BadEscape(s) }

// SameName reports whether a and b, in presentation form, are the same
// domain name: the same octets label by label, ASCII letters compared
// case-insensitively (RFC 4343), a trailing dot optional. `www.\116iktok.com.`
// is `WWW.TikTok.com`; `a\.b.example` is not `a.b.example`. It does not
// allocate.
func SameName(a, b string) bool {
	ai, bi := 0, 0
	a, b = trimRoot(a), trimRoot(b)
	for ai < len(a) && bi < len(b) {
		ca, na := presname.Octet(a, ai)
		cb, nb := presname.Octet(b, bi)
		// A separator is an unescaped dot; an escaped one is an octet.
		if (na == 1 && ca == '.') != (nb == 1 && cb == '.') || presname.Lower(ca) != presname.Lower(cb) {
			return false
		}
		ai, bi = ai+na, bi+nb
	}
	return ai == len(a) && bi == len(b)
}

// trimRoot removes a trailing unescaped dot (`a\\.` ends in the root, `a\.`
// in an escaped dot).
func trimRoot(s string) string {
	if s == "" || s[len(s)-1] != '.' || presname.Escaped(s, len(s)-1) {
		return s
	}
	return s[:len(s)-1]
}
