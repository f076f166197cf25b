package blocklist

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
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
		p, err := taken(inner + bits)
		if err == nil {
			return &RangeMeantError{Err: ErrRangeBrackets, Meant: p}
		}
		if bits == "" && errors.Is(err, ErrRangeName) {
			return err // `[gov]`: a name, an INI section
		}
	}
	return ErrBadRange
}

// RangeMeantError is a range ParsePrefix refuses though only one range
// can be meant by it: Err says what is wrong (ErrHostBits,
// ErrRangeBrackets, ErrIPv4Compatible, ErrUnspecified, ErrRangeZone,
// ErrLengthZero, ErrShortIPv4, ErrRangeDash, ErrNetmask: errors.Is finds
// it) and Meant is the range meant, one ParsePrefix takes. Its message is Err's with
// ", did you mean" and Meant.
type RangeMeantError struct {
	Err   error
	Meant netip.Prefix
}

func (e *RangeMeantError) Error() string {
	return fmt.Sprintf("%v, did you mean %s", e.Err, e.Meant)
}

func (e *RangeMeantError) Unwrap() error { return e.Err }

// Meant is the message for s when err, from ParsePrefix, knows the range
// meant (a RangeMeantError): `"10.1.2.3/24" has host bits set; did you
// mean 10.1.2.0/24?`, or `"[2001:db8::]/32": a client range is written
// without brackets; did you mean 2001:db8::/32?`. ok is false for any
// other error.
func Meant(s string, err error) (msg string, ok bool) {
	e, ok := errors.AsType[*RangeMeantError](err)
	if !ok {
		return "", false
	}
	if errors.Is(e.Err, ErrHostBits) {
		return fmt.Sprintf("%q has host bits set; did you mean %s?", s, e.Meant), true
	}
	return fmt.Sprintf("%q: %v; did you mean %s?", s, e.Err, e.Meant), true
}

// ParsePrefix parses an IP address (a /32 or /128) or a CIDR prefix.
// IPv4-mapped IPv6 forms are turned into plain IPv4, because clients are
// matched by their unmapped address. A prefix with host bits set is an
// error: `10.1.2.3/8` is more likely a typo than a wish for 10.0.0.0/8. So
// are an address in brackets (ErrRangeBrackets), an IPv4-compatible one
// (ErrIPv4Compatible: ::10.0.0.1 or ::a00:1, but for ::1) and the
// unspecified address alone (ErrUnspecified: 0.0.0.0 or ::, meant as
// every address of its family); those four are a RangeMeantError naming
// the range meant. Text that is no range gets an error saying why
// (rangeShape: a first-last range, a netmask, a zone, a name, …), with the
// range meant where only one can be.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = addressText(s)
	if strings.HasPrefix(s, "[") {
		return netip.Prefix{}, bracketed(s)
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, rangeShape(s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, rangeShape(s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, ErrMappedShort
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if a := p.Addr().As16(); inCompatible(p.Addr()) && p.Bits() >= 96 &&
		(strings.Contains(s, ".") || (p != netip.PrefixFrom(netip.IPv6Loopback(), 128) && p != netip.PrefixFrom(netip.IPv6Unspecified(), 128))) {
		// `::10.0.0.1`: an IPv4-compatible address (RFC 4291 §2.5.5.1,
		// deprecated), which no client has: an IPv4 client is matched by
		// its IPv4 address. So is it in hex (`::a00:1`, as netip and
		// Python's ipaddress print ::10.0.0.1), but for `::1` and `::`,
		// the loopback and unspecified addresses. The range meant is named
		// without host bits (::10.1.2.3/120 is 10.1.2.0/24), so that it is
		// one taken.
		return netip.Prefix{}, &RangeMeantError{Err: ErrIPv4Compatible,
			Meant: meantTaken(netip.PrefixFrom(netip.AddrFrom4([4]byte(a[12:])), p.Bits()-96).Masked())}
	}
	if p.Bits() == p.Addr().BitLen() && p.Addr().IsUnspecified() {
		// `0.0.0.0`, as a listen address is written for every address:
		// no packet comes from it, so as a range it held no client, and
		// a policy of it blocked no device.
		return netip.Prefix{}, &RangeMeantError{Err: ErrUnspecified, Meant: netip.PrefixFrom(p.Addr(), 0)}
	}
	if p.Masked() != p {
		return netip.Prefix{}, &RangeMeantError{Err: ErrHostBits, Meant: p.Masked()}
	}
	return p, nil
}

// IPv4Compatible is the IPv4 address that a embeds when a is an
// IPv4-compatible IPv6 address (::a.b.c.d, RFC 4291 §2.5.5.1, deprecated:
// `::10.0.0.1`, or `::a00:1` as Go and Python print it), and false for
// any other a. Such an address embeds an IPv4 unicast address, never one
// of 0.0.0.0/8: ::1, :: and ::2 are IPv6 addresses as written. No host
// has one and no route leads to one: a listener on it cannot bind, and
// an upstream at it never answers. The address meant is the IPv4 one, as
// for a client range (ParsePrefix, which refuses ::2 too).
func IPv4Compatible(a netip.Addr) (netip.Addr, bool) {
	v4 := a.As16()
	if !inCompatible(a) || v4[12] == 0 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v4[12:])), true
}

// Kinds of address that no exchange with a server can succeed at
// (Unusable), in a few words each.
const (
	// UnusableCompatible is an IPv4-compatible address
	// (IPv4Compatible): no host has one.
	UnusableCompatible = "IPv4-compatible"
	// UnusableLinkLocal is an IPv6 link-local address (fe80::/10)
	// without a zone: it is on every link, and a socket reaches it only
	// through the interface its zone names (connect fails with EINVAL
	// without one).
	UnusableLinkLocal = "link-local without a zone"
	// UnusableMulticast is a multicast address: a group sends no answer
	// (a server answers from its own unicast address), and TCP cannot
	// connect to a group.
	UnusableMulticast = "multicast"
	// UnusableBroadcast is 255.255.255.255: the kernel sends nothing
	// there from a socket without SO_BROADCAST, and TCP cannot connect
	// to it.
	UnusableBroadcast = "broadcast"
)

// Unusable is the kind of address a is (UnusableCompatible,
// UnusableLinkLocal, UnusableMulticast, UnusableBroadcast) when no
// exchange with a server there can succeed, or "" when a is none of
// them. An upstream's, a list URL's or a zone primary's address of these
// fails every exchange.
func Unusable(a netip.Addr) string {
	a = a.Unmap()
	if _, ok := IPv4Compatible(a); ok {
		return UnusableCompatible
	}
	switch {
	case a.Is6() && a.IsLinkLocalUnicast() && a.Zone() == "":
		return UnusableLinkLocal
	case a.IsMulticast():
		return UnusableMulticast
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return UnusableBroadcast
	}
	return ""
}

// inCompatible reports whether a is in ::/96, the block of the
// IPv4-compatible IPv6 addresses (RFC 4291 §2.5.5.1, deprecated), ::1 and
// :: among them.
func inCompatible(a netip.Addr) bool {
	b := a.As16()
	return a.Is6() && [12]byte(b[:12]) == [12]byte{}
}

// taken is the range ParsePrefix takes for s, or the one it names as
// meant for s (a RangeMeantError), so that a range offered as meant is
// always one taken, and a range with two faults is meant as it is with
// one: `[::10.0.0.1]` and `::10.0.0.1%eth0` are 10.0.0.1/32. But for host
// bits: which of the address and the length is wrong is a guess, and with
// a second fault beside it (`[10.1.2.3/8]`, `10.0.0.0/00`) two, so s is
// not taken.
func taken(s string) (netip.Prefix, error) {
	p, err := ParsePrefix(s)
	if m, ok := errors.AsType[*RangeMeantError](err); ok && !errors.Is(m.Err, ErrHostBits) {
		return m.Meant, nil
	}
	return p, err
}

// meantTaken is p, a range another form was read as, as taken reads it
// written plainly: `::0.0.0.0` and `0.0.0.0/255.255.255.255` are
// 0.0.0.0/32, which is ErrUnspecified's, and mean 0.0.0.0/0.
func meantTaken(p netip.Prefix) netip.Prefix {
	if q, err := taken(p.String()); err == nil {
		return q
	}
	return p
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

// Reasons a text is not a client range (ParsePrefix, ParseRanges).
// ErrBadRange is the reason that says no more; those that end in ", did
// you mean" and the range meant are read by Meant.
var (
	ErrBadRange       = errors.New("not an IP address or CIDR prefix")
	ErrHostBits       = errors.New("prefix has host bits set")
	ErrRangeURL       = errors.New("a URL is not a client range (write an IP address or CIDR prefix, e.g. 10.0.0.0/8; ranges at URLs are not supported yet)")
	ErrRangeBrackets  = errors.New("a client range is written without brackets")
	ErrIPv4Compatible = errors.New("an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client")
	ErrUnspecified    = errors.New("the unspecified address (0.0.0.0, ::) is every address only where a server listens; as a client range it matches no client")
	ErrRangeExclude   = errors.New(`"!" is neither a comment nor an exclusion in a client range file (comments start with "#"; to leave devices out, put their range in a policy of its own)`)
	ErrRangeName      = errors.New("a name is not a client range (write its IP address or CIDR prefix)")
	ErrRangeDash      = errors.New("a range written first-last is not read (write it as CIDR prefixes)")
	ErrRangeList      = errors.New("several ranges in one entry (write one range a line)")
	ErrRangeZone      = errors.New("a zone (%…) has no place in a client range: clients are matched by their address alone")
	ErrNetmask        = errors.New("a netmask after the slash, where a CIDR prefix has a length")
	ErrLengthZero     = errors.New("a prefix length is written without leading zeros")
	ErrLengthText     = errors.New("the prefix length after the slash is missing or not a number")
	ErrShortIPv4      = errors.New("an IPv4 address is four numbers (a.b.c.d)")
	ErrMappedShort    = errors.New("an IPv4-mapped prefix (::ffff:a.b.c.d/n) is /96 or longer: a shorter one holds addresses that are not IPv4")
)

// rangeShape is why s, an address or prefix netip does not read (or an
// address with a zone), is no client range, with the range meant where
// one is certain: a URL (ErrRangeURL); several ranges (ErrRangeList:
// `10.0.0.0/8,10.1.0.0/16`); a first-last range (ErrRangeDash, meant when
// it is one prefix: `10.0.0.0-10.0.0.255` is 10.0.0.0/24); a zone
// (ErrRangeZone, meant the address without it); an IPv4 address of fewer
// than four parts (ErrShortIPv4; with a length, meant padded with zeros,
// as BIND reads `10/8` in an address match list); a name (ErrRangeName); a
// netmask (ErrNetmask: `/255.255.255.0` is /24); a length out of range
// (*PrefixLengthError), with leading zeros (ErrLengthZero) or not a
// number (ErrLengthText); ErrBadRange for anything else. Its own checks
// run on a failure alone: a range that parses costs none of them.
func rangeShape(s string) error {
	addr, length, slash := strings.Cut(s, "/")
	switch {
	case strings.Contains(s, "://"):
		return ErrRangeURL
	case len(strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' })) > 1:
		return ErrRangeList
	case !slash && firstLast(s):
		return dashRange(s)
	case len(strings.Fields(s)) > 1:
		return ErrRangeList
	case strings.Contains(addr, "%"):
		unzoned, _, _ := strings.Cut(addr, "%")
		if slash {
			unzoned += "/" + length
		}
		if p, err := taken(unzoned); err == nil {
			return &RangeMeantError{Err: ErrRangeZone, Meant: p}
		}
		return ErrRangeZone
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addressShape(addr, length, slash)
	}
	if mask, err := netip.ParseAddr(length); err == nil {
		return netmask(a, mask)
	}
	n, err := strconv.Atoi(length)
	switch {
	case err != nil:
		return ErrLengthText
	case n < 0 || n > a.BitLen():
		return &PrefixLengthError{Bits: n, Max: a.BitLen()}
	case length[0] == '0':
		if p, err := taken(addr + "/" + strconv.Itoa(n)); err == nil {
			return &RangeMeantError{Err: ErrLengthZero, Meant: p}
		}
		return ErrLengthZero
	}
	return ErrBadRange // a length with a sign: `/+8`
}

// firstLast reports whether s, a range without a slash, is written
// first-last: two parts around one dash, neither a name, and the last an
// address's shape (a dot or a colon in it) where the first has a zone,
// whose interface name may hold the dash (`fe80::1%vlan-10`).
func firstLast(s string) bool {
	first, last, ok := strings.Cut(s, "-")
	return ok && !strings.Contains(last, "-") && !NameLike(first) && !NameLike(last) &&
		(!strings.Contains(first, "%") || strings.ContainsAny(last, ".:"))
}

// addressShape is why addr, the part of a range before its slash (length
// after it, if slash), is no address: ErrShortIPv4 for one to three
// decimal octets, ErrRangeName for a name, ErrBadRange otherwise.
func addressShape(addr, length string, slash bool) error {
	if parts := strings.Split(addr, "."); len(parts) < 4 && !slices.ContainsFunc(parts, notOctet) {
		if slash {
			padded := addr + strings.Repeat(".0", 4-len(parts)) + "/" + length
			if p, err := taken(padded); err == nil {
				return &RangeMeantError{Err: ErrShortIPv4, Meant: p}
			}
		}
		return ErrShortIPv4
	}
	if NameLike(addr) {
		return ErrRangeName
	}
	return ErrBadRange
}

// NameLike reports whether s, which netip does not read as an address,
// is meant as a name: it has a letter, and no colon (which IPv6's
// hexadecimal letters come with). Range and address checks tell a name
// written where an address belongs by it.
func NameLike(s string) bool {
	return strings.IndexFunc(s, unicode.IsLetter) >= 0 && !strings.Contains(s, ":")
}

// notOctet reports whether s is not an IPv4 address's part as netip reads
// one: a decimal number from 0 to 255 without leading zeros.
func notOctet(s string) bool {
	n, err := strconv.Atoi(s)
	return err != nil || n < 0 || n > 255 || strconv.Itoa(n) != s
}

// dashRange is ErrRangeDash for s, a first-last range, with the prefix
// meant when the two ends are the first and last address of one.
func dashRange(s string) error {
	first, last, _ := strings.Cut(s, "-")
	a, aerr := netip.ParseAddr(strings.TrimSpace(first))
	b, berr := netip.ParseAddr(strings.TrimSpace(last))
	if aerr != nil || berr != nil || a.Zone() != "" || b.Zone() != "" || a.BitLen() != b.BitLen() {
		return ErrRangeDash
	}
	for bits := a.BitLen(); bits >= 0; bits-- {
		p := netip.PrefixFrom(a, bits)
		if p.Masked().Addr() != a {
			break
		}
		if next := b.Next(); p.Contains(b) && (!next.IsValid() || !p.Contains(next)) {
			// The prefix as the first address is written, so that it is
			// read as a line holding it would be: `::10.0.0.0` is
			// IPv4-compatible, and means 10.0.0.0/24.
			if q, err := taken(strings.TrimSpace(first) + "/" + strconv.Itoa(bits)); err == nil {
				return &RangeMeantError{Err: ErrRangeDash, Meant: q}
			}
			break
		}
	}
	return ErrRangeDash
}

// netmask is ErrNetmask for a, an address written with mask after its
// slash (`10.1.2.0/255.255.255.0`), with the prefix meant when mask is an
// IPv4 netmask (its ones first) and a an IPv4 address.
func netmask(a, mask netip.Addr) error {
	if a.Is4() && mask.Is4() {
		m := binary.BigEndian.Uint32(mask.AsSlice())
		if zeros := ^m; zeros&(zeros+1) == 0 {
			return &RangeMeantError{Err: ErrNetmask, Meant: meantTaken(netip.PrefixFrom(a, 32-bits.OnesCount32(zeros)).Masked())}
		}
	}
	return ErrNetmask
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
