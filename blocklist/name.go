package blocklist

import (
	"strings"
	"unsafe"
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

// labelStart is where the label that ends at end (before a separator, or
// at the end of name) starts: after the last separator before end, or at
// 0. A dot is a separator unless escaped, that is, unless an odd number of
// backslashes precede it (an escape is a backslash and one byte, or three
// digits, so a run of backslashes pairs up from its left).
func labelStart(name string, end int) int {
	for {
		i := strings.LastIndexByte(name[:end], '.')
		if i < 0 {
			return 0
		}
		if !escaped(name, i) {
			return i + 1
		}
		end = i
	}
}

// escaped reports whether the byte at i of a presentation-form name is
// escaped: preceded by an odd number of backslashes.
func escaped(name string, i int) bool {
	n := 0
	for i-n > 0 && name[i-n-1] == '\\' {
		n++
	}
	return n%2 == 1
}

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
			c, k = octet(s, i)
		}
		c = lower(c)
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

// octet is the octet the presentation text s spells at i, and how many
// bytes of s spell it: `\DDD` (decimal; values over 255 wrap as miekg/dns
// packs them), `\X`, or a plain byte. A backslash that ends s is itself.
func octet(s string, i int) (byte, int) {
	c := s[i]
	if c != '\\' || i+1 == len(s) {
		return c, 1
	}
	if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
		return byte(int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')), 4
	}
	return s[i+1], 2
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// lower folds an ASCII upper-case letter; every other octet is itself
// (RFC 4343: only ASCII letters compare case-insensitively).
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// SameName reports whether a and b, in presentation form, are the same
// domain name: the same octets label by label, ASCII letters compared
// case-insensitively (RFC 4343), a trailing dot optional. `www.\116iktok.com.`
// is `WWW.TikTok.com`; `a\.b.example` is not `a.b.example`. It does not
// allocate.
func SameName(a, b string) bool {
	ai, bi := 0, 0
	a, b = trimRoot(a), trimRoot(b)
	for ai < len(a) && bi < len(b) {
		ca, na := octet(a, ai)
		cb, nb := octet(b, bi)
		// A separator is an unescaped dot; an escaped one is an octet.
		if (na == 1 && ca == '.') != (nb == 1 && cb == '.') || lower(ca) != lower(cb) {
			return false
		}
		ai, bi = ai+na, bi+nb
	}
	return ai == len(a) && bi == len(b)
}

// trimRoot removes a trailing unescaped dot (`a\\.` ends in the root, `a\.`
// in an escaped dot).
func trimRoot(s string) string {
	if s == "" || s[len(s)-1] != '.' || escaped(s, len(s)-1) {
		return s
	}
	return s[:len(s)-1]
}
