// Package presname reads domain names in presentation form (RFC 1035
// §5.1), as miekg/dns writes the names it unpacks, octet by octet and
// without allocating: a dot separates labels unless escaped, `\X` stands
// for the octet X and `\DDD` for the octet of decimal value DDD. blocklist
// and blocklist/rpz share it.
package presname

import (
	"strings"

	"github.com/miekg/dns"
)

// IsDomainName reports whether s is a domain name in presentation form
// whose wire form fits the 255 octets of RFC 1035 §3.1 (a trailing dot
// optional: the root label is counted either way). dns.IsDomainName alone
// lets names of 256 and 257 octets through
// (https://github.com/miekg/dns/issues/1552, still so in v1.1.73), and
// miekg/dns packs them as they are: no query can carry such a name.
// A malformed \DDD escape (BadEscape) makes s no domain name either.
func IsDomainName(s string) bool {
	if _, ok := dns.IsDomainName(s); !ok {
		return false
	}
	if _, bad := BadEscape(s); bad {
		return false
	}
	var wire [255]byte
	_, err := dns.PackDomainName(dns.Fqdn(s), wire[:], 0, nil, false)
	return err == nil
}

// BadEscape finds the first escape of the presentation-form name s that
// RFC 1035 §5.1 does not allow, and returns it as written (a backslash
// and its digits) and true, or "" and false. A backslash before a digit
// begins \DDD, three decimal digits of value 0 to 255: `\2.` and `\999`
// are none, and BIND refuses both (DNS_R_BADESCAPE), where miekg/dns
// reads the first as the octet `2` and wraps the second to `\231`, a name
// other than the one written. A backslash before any other byte quotes
// it, and one that ends s is dns.IsDomainName's to refuse.
func BadEscape(s string) (string, bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if !IsDigit(s[i+1]) {
			i++ // \X: the quoted byte is no escape's start
			continue
		}
		n := 1
		for n < 3 && i+1+n < len(s) && IsDigit(s[i+1+n]) {
			n++
		}
		esc := s[i : i+1+n]
		if n < 3 || int(s[i+1]-'0')*100+int(s[i+2]-'0')*10+int(s[i+3]-'0') > 255 {
			return esc, true
		}
		i += 3
	}
	return "", false
}

// LabelStart is where the label that ends at end (before a separator, or
// at the end of name) starts: after the last separator before end, or at
// 0. A dot is a separator unless escaped, that is, unless an odd number of
// backslashes precede it (an escape is a backslash and one byte, or three
// digits, so a run of backslashes pairs up from its left).
func LabelStart(name string, end int) int {
	for {
		i := strings.LastIndexByte(name[:end], '.')
		if i < 0 {
			return 0
		}
		if !Escaped(name, i) {
			return i + 1
		}
		end = i
	}
}

// Escaped reports whether the byte at i of a presentation-form name is
// Escaped: preceded by an odd number of backslashes.
func Escaped(name string, i int) bool {
	n := 0
	for i-n > 0 && name[i-n-1] == '\\' {
		n++
	}
	return n%2 == 1
}

// Octet is the octet the presentation text s spells at i, and how many
// bytes of s spell it: `\DDD` (decimal; values over 255 wrap as miekg/dns
// packs them), `\X`, or a plain byte. A backslash that ends s is itself.
func Octet(s string, i int) (byte, int) {
	c := s[i]
	if c != '\\' || i+1 == len(s) {
		return c, 1
	}
	if i+3 < len(s) && IsDigit(s[i+1]) && IsDigit(s[i+2]) && IsDigit(s[i+3]) {
		return byte(int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')), 4
	}
	return s[i+1], 2
}

func IsDigit(c byte) bool { return '0' <= c && c <= '9' }

// Lower folds an ASCII upper-case letter; every other octet is itself
// (RFC 4343: only ASCII letters compare case-insensitively).
func Lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
