package blocklist

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
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

// ParseRanges parses the content of a client range file.
func ParseRanges(name string, data []byte) (*RangeFile, error) {
	rf := &RangeFile{File: name, Sum: sha256.Sum256(data)}
	var errs errorList
	forEachLine(string(data), func(line int, text string) {
		first, rest := nextField(text)
		if rest != "" {
			errs.add(name, line, rest, ErrTrailing)
			return
		}
		if strings.Contains(first, "://") {
			errs.add(name, line, first, ErrRangeURL)
			return
		}
		p, err := ParsePrefix(first)
		if err != nil {
			errs.add(name, line, first, err)
			return
		}
		rf.Ranges = append(rf.Ranges, Range{Prefix: p, File: name, Line: line})
	})
	return rf, errs.err()
}

// ParsePrefix parses an IP address (a /32 or /128) or a CIDR prefix.
// IPv4-mapped IPv6 forms are turned into plain IPv4, because clients are
// matched by their unmapped address. A prefix with host bits set is an error:
// `10.1.2.3/8` is more likely a typo than a wish for 10.0.0.0/8.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, ErrBadRange
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
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%w, did you mean %s", ErrHostBits, p.Masked())
	}
	return p, nil
}
