package rpz

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// parseIPTrigger reads the labels of a response-IP trigger before its
// `rpz-ip` label: the prefix length, then the address with its parts in
// reverse order. IPv4: four decimal octets (`24.0.2.0.192` is
// 192.0.2.0/24). IPv6: 16-bit groups in hexadecimal, where one `zz`
// stands for the run of zero groups that `::` stands for in RFC 4291 §2.2
// text (`48.zz.db8.2001` is 2001:db8::/48; `128.1.zz.db8.2001` is
// 2001:db8::1/128). The prefix must have no host bits set, as a client
// range must not. An IPv4-mapped IPv6 prefix (longer than ::ffff:0:0/96)
// is the IPv4 prefix, since answers are matched by their unmapped address;
// ::ffff:0:0/96 itself is refused, as IPv4's /0 is.
func parseIPTrigger(s string) (netip.Prefix, error) {
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return netip.Prefix{}, fmt.Errorf("%w: %q has no address", ErrAddress, s)
	}
	bits, err := prefixLength(labels[0])
	if err != nil {
		return netip.Prefix{}, err
	}
	parts := labels[1:]
	var addr netip.Addr
	zz := false
	for _, p := range parts {
		zz = zz || strings.EqualFold(p, "zz")
	}
	if len(parts) < 4 && !zz && !slices.ContainsFunc(parts, notDecimal) {
		// `24.2.0.192`: an octet left out (BIND's form has all four, a
		// zero one too), not an IPv6 address of three groups.
		return netip.Prefix{}, fmt.Errorf("%w: %s is %s, an IPv4 address has 4, zeros written too (24.0.2.0.192.rpz-ip is 192.0.2.0/24)",
			ErrAddress, strings.Join(parts, "."), counted(len(parts), "octet"))
	}
	if len(parts) == 4 && !zz {
		var a [4]byte
		for i, p := range parts {
			v, err := strconv.ParseUint(p, 10, 8)
			if err != nil || len(p) > 1 && p[0] == '0' {
				return netip.Prefix{}, fmt.Errorf("%w: %q is not an IPv4 octet", ErrAddress, p)
			}
			a[3-i] = byte(v)
		}
		addr = netip.AddrFrom4(a)
	} else {
		if addr, err = ipv6(parts); err != nil {
			return netip.Prefix{}, err
		}
	}
	if bits > addr.BitLen() {
		return netip.Prefix{}, fmt.Errorf("%w: /%d is longer than the %d bits of %s", ErrPrefixLength, bits, addr.BitLen(), addr)
	}
	p := netip.PrefixFrom(addr, bits)
	if addr.Is4In6() && bits == 96 {
		// An IPv4 prefix of length 0, which prefixLength refuses
		// written so; BIND has no name for it and applies none. Told
		// before host bits: with them cleared it is still this prefix,
		// and a prefix offered as meant is one a trigger takes.
		return netip.Prefix{}, fmt.Errorf("%w: %s holds every IPv4 address, as an IPv4 prefix of length 0 would", ErrPrefixLength, p)
	}
	if p.Masked() != p {
		return netip.Prefix{}, &PrefixMeantError{Prefix: p, Meant: p.Masked()}
	}
	if addr.Is4In6() && bits > 96 {
		p = netip.PrefixFrom(addr.Unmap(), bits-96)
	}
	return p, nil
}

// PrefixMeantError is an rpz-ip trigger's prefix with host bits set
// (ErrHostBits, which errors.Is finds): Meant is the prefix meant, Prefix
// with them cleared, one a trigger takes (IPTrigger names it).
type PrefixMeantError struct {
	Prefix, Meant netip.Prefix
}

func (e *PrefixMeantError) Error() string {
	return fmt.Sprintf("%v: %s, did you mean %s", ErrHostBits, e.Prefix, e.Meant)
}

func (e *PrefixMeantError) Unwrap() error { return ErrHostBits }

// counted is n and noun, plural but for one: "1 octet", "3 octets".
func counted(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// notDecimal reports whether the label s is not a decimal number.
func notDecimal(s string) bool {
	return s == "" || strings.Trim(s, "0123456789") != ""
}

// prefixLength reads the first label: decimal, 1 to 128 (a length of 0
// would match every address).
func prefixLength(s string) (int, error) {
	v, err := strconv.ParseUint(s, 10, 8)
	if err != nil || len(s) > 1 && s[0] == '0' || v == 0 || v > 128 {
		return 0, fmt.Errorf("%w: %q is not 1 to 32 (IPv4) or 1 to 128 (IPv6)", ErrPrefixLength, s)
	}
	return int(v), nil
}

// ipv6 reads the reversed groups of an IPv6 trigger.
func ipv6(parts []string) (netip.Addr, error) {
	var groups []uint16 // in address order
	zzAt := -1
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		if strings.EqualFold(p, "zz") {
			if zzAt >= 0 {
				return netip.Addr{}, ErrZZ
			}
			zzAt = len(groups)
			continue
		}
		v, err := strconv.ParseUint(p, 16, 16)
		if err != nil || len(p) > 4 {
			return netip.Addr{}, fmt.Errorf("%w: %q is not an IPv6 group (1 to 4 hexadecimal digits)", ErrAddress, p)
		}
		groups = append(groups, uint16(v))
	}
	switch {
	case zzAt < 0 && len(groups) != 8:
		return netip.Addr{}, fmt.Errorf("%w: %s, an IPv6 address has 8 (or zz for a run of zeros)", ErrAddress, counted(len(groups), "group"))
	case zzAt >= 0 && len(groups) > 7:
		return netip.Addr{}, fmt.Errorf("%w: zz with %d other groups stands for no group", ErrZZ, len(groups))
	}
	var a [16]byte
	fill := func(i int, g uint16) { a[2*i], a[2*i+1] = byte(g>>8), byte(g) }
	if zzAt < 0 {
		for i, g := range groups {
			fill(i, g)
		}
	} else {
		for i, g := range groups[:zzAt] {
			fill(i, g)
		}
		tail := groups[zzAt:]
		for i, g := range tail {
			fill(8-len(tail)+i, g)
		}
	}
	return netip.AddrFrom16(a), nil
}

// IPTrigger is the owner name, relative to the zone apex, of the
// response-IP trigger for p: `24.0.2.0.192.rpz-ip` for 192.0.2.0/24,
// `48.zz.db8.2001.rpz-ip` for 2001:db8::/48 (zz for the longest run of
// two or more zero groups, the first of equals, as `::` in RFC 5952 §4.2).
func IPTrigger(p netip.Prefix) string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(p.Bits()))
	a := p.Addr()
	if a.Is4() {
		o := a.As4()
		for i := 3; i >= 0; i-- {
			b.WriteByte('.')
			b.WriteString(strconv.Itoa(int(o[i])))
		}
		b.WriteString(".rpz-ip")
		return b.String()
	}
	o := a.As16()
	var g [8]uint16
	for i := range g {
		g[i] = uint16(o[2*i])<<8 | uint16(o[2*i+1])
	}
	zStart, zLen := -1, 1
	for i := 0; i < 8; {
		if g[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && g[j] == 0 {
			j++
		}
		if j-i > zLen {
			zStart, zLen = i, j-i
		}
		i = j
	}
	for i := 7; i >= 0; i-- {
		if zStart >= 0 && i >= zStart && i < zStart+zLen {
			if i == zStart {
				b.WriteString(".zz")
			}
			continue
		}
		b.WriteByte('.')
		b.WriteString(strconv.FormatUint(uint64(g[i]), 16))
	}
	b.WriteString(".rpz-ip")
	return b.String()
}
