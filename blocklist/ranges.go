package blocklist

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Range is one client range and where it was written.
type Range struct {
	Prefix netip.Prefix
	File   string
	Line   int
}

// RangeFile is a parsed client range file.
type RangeFile struct {
	File   string
	Sum    [32]byte // SHA-256 of the file's raw bytes
	Ranges []Range
}

// ParseRanges parses the content of a client range file. Only `#` starts
// a comment (at the start of a line or after white space): every other
// line that is not blank is a range or a bad line reported as file:line.
// The Adblock comments and headers of a list (`!`, `[`) are bad lines here,
// each said why: `[2001:db8::]/32` is an IPv6 range written as in a URL,
// `!10.0.0.0/8` a range meant to be left out, and neither may be dropped
// without a word.
func ParseRanges(name string, data []byte) (*RangeFile, error) {
	rf := &RangeFile{File: name, Sum: sha256.Sum256(data)}
	var errs errorList
	for line, text := range Lines(string(data)) {
		text, ok := commentless(text)
		if !ok {
			continue
		}
		first, rest := nextField(text)
		switch cr := strings.IndexByte(text, '\r'); {
		case cr >= 0:
			errs.add(name, line, text[:cr], ErrLoneCR)
			continue
		case text[0] == '!':
			errs.add(name, line, text, ErrRangeExclude)
			continue
		case text[0] == '[' && rest != "":
			errs.add(name, line, text, ErrBadRange) // an INI section, an Adblock header
			continue
		case rest != "":
			errs.add(name, line, rest, ErrTrailing)
			continue
		case strings.Contains(first, "://"):
			errs.add(name, line, first, ErrRangeURL)
			continue
		}
		p, err := ParsePrefix(first)
		if err != nil {
			errs.add(name, line, first, err)
			continue
		}
		rf.Ranges = append(rf.Ranges, Range{Prefix: p, File: name, Line: line})
	}
	return rf, errs.err()
}

// bracketed says what is wrong with s, a range starting with `[`: an
// address in brackets (`[2001:db8::1]`, `[2001:db8::]/32`, `[10.0.0.0/8]`)
// is named with the range meant, anything else (an INI section) is not a
// range.
func bracketed(s string) error {
	inner, bits, _ := strings.Cut(s[1:], "]")
	if strings.HasPrefix(inner, "[") {
		return ErrBadRange // not parsed again: one level a bracket would be O(n^2)
	}
	if bits == "" || bits[0] == '/' && !strings.Contains(inner, "/") {
		if p, err := ParsePrefix(inner + bits); err == nil {
			return fmt.Errorf("%w, did you mean %s", ErrRangeBrackets, p)
		}
	}
	return ErrBadRange
}

// Meant is the message for s when err, from ParsePrefix, knows the range
// meant: `"10.1.2.3/24" has host bits set; did you mean 10.1.2.0/24?`, or
// `"[2001:db8::]/32": a client range is written without brackets; did
// you mean 2001:db8::/32?`. ok is false for any other error.
func Meant(s string, err error) (msg string, ok bool) {
	what, meant, ok := strings.Cut(err.Error(), ", did you mean ")
	if !ok {
		return "", false
	}
	if errors.Is(err, ErrHostBits) {
		return fmt.Sprintf("%q has host bits set; did you mean %s?", s, meant), true
	}
	return fmt.Sprintf("%q: %s; did you mean %s?", s, what, meant), true
}

// ParsePrefix parses an IP address (a /32 or /128) or a CIDR prefix.
// IPv4-mapped IPv6 forms are turned into plain IPv4, because clients are
// matched by their unmapped address. A prefix with host bits set is an error:
// `10.1.2.3/8` is more likely a typo than a wish for 10.0.0.0/8. So are an
// address in brackets (ErrRangeBrackets) and an IPv4-compatible one
// (ErrIPv4Compatible); those three errors end with ", did you mean" and
// the range meant.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = addressText(s)
	if strings.HasPrefix(s, "[") {
		return netip.Prefix{}, bracketed(s)
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, lengthProblem(s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, ErrBadRange
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, ErrBadRange
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, ErrBadRange
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if a := p.Addr().As16(); p.Addr().Is6() && strings.Contains(s, ".") && [12]byte(a[:12]) == [12]byte{} && p.Bits() >= 96 {
		// `::10.0.0.1`: an IPv4-compatible address (RFC 4291 §2.5.5.1,
		// deprecated), which no client has: an IPv4 client is matched by
		// its IPv4 address. The range meant is named without host bits
		// (::10.1.2.3/120 is 10.1.2.0/24), so that it is one taken.
		return netip.Prefix{}, fmt.Errorf("%w, did you mean %s", ErrIPv4Compatible,
			netip.PrefixFrom(netip.AddrFrom4([4]byte(a[12:])), p.Bits()-96).Masked())
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%w, did you mean %s", ErrHostBits, p.Masked())
	}
	return p, nil
}

// PrefixLengthError is a CIDR prefix whose length its address cannot
// have ("10.0.0.0/33", "10.0.0.0/-1", "2001:db8::/129"): a bad range
// (errors.Is ErrBadRange) whose message says what is wrong with it.
type PrefixLengthError struct {
	Bits int // the length written
	Max  int // the address's length in bits: 32 or 128
}

func (e *PrefixLengthError) Error() string {
	if e.Bits < 0 {
		return fmt.Sprintf("prefix length /%d is negative (an IPv%d prefix is /0 to /%d)", e.Bits, e.Version(), e.Max)
	}
	return fmt.Sprintf("prefix length /%d is longer than an IPv%d address (at most /%d)", e.Bits, e.Version(), e.Max)
}

// Version is the IP version of the address: 4 or 6.
func (e *PrefixLengthError) Version() int {
	if e.Max == 32 {
		return 4
	}
	return 6
}

func (e *PrefixLengthError) Is(target error) bool { return target == ErrBadRange }

// lengthProblem is why s, a range with a slash that netip does not parse,
// is no range: a *PrefixLengthError when s is an address (without a zone)
// and a decimal length out of its range, ErrBadRange otherwise.
func lengthProblem(s string) error {
	slash := strings.LastIndexByte(s, '/')
	a, aerr := netip.ParseAddr(s[:slash])
	n, nerr := strconv.Atoi(s[slash+1:])
	if aerr != nil || a.Zone() != "" || nerr != nil || 0 <= n && n <= a.BitLen() {
		return ErrBadRange
	}
	return &PrefixLengthError{Bits: n, Max: a.BitLen()}
}

// addressText is s, an address or range as a file or the configuration
// writes it, with the characters no reader tells from an address's ASCII
// read as that ASCII, as UTS #46 reads them in a list's name
// (normalizeEntry: `tiktok\u200b.com` and `ｔｉｋｔｏｋ.com` are
// tiktok.com): format characters (Unicode category Cf: zero-width spaces
// and joiners, the word joiner, a byte-order mark inside a line, the soft
// hyphen, bidirectional marks) left out, the full-width forms of ASCII
// (U+FF01–U+FF5E, as an input method in full-width mode types digits, dots,
// colons and the slash) mapped to it, and the ideographic full stops
// (U+3002, U+FF61) to '.'. Without it a client range line copied from a
// web page with a zero-width space was a bad line, skipped, and the
// devices of a government range were forwarded as in no policy, and a
// hosts line `０.０.０.０ tiktok.com` blocked nothing, while the names
// beside them, spelled alike, were read. s itself, not a copy, when
// nothing is mapped (strings.Map): every address of every list and range
// file but these.
func addressText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < utf8.RuneSelf:
			return r
		case unicode.Is(unicode.Cf, r):
			return -1
		case 0xFF01 <= r && r <= 0xFF5E:
			return r - 0xFF01 + '!'
		case r == 0x3002 || r == 0xFF61:
			return '.'
		}
		return r
	}, s)
}
