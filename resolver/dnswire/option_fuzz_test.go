package dnswire

import (
	"net/netip"
	"testing"
)

// refOptionSound is OptionSound written apart from it, from the RFCs:
// RFC 7873 §5.2.2 (a COOKIE of 8 octets, or 16 to 40) and RFC 7871 §6 (a
// Client Subnet of FAMILY 1 or 2 whose SOURCE and SCOPE PREFIX-LENGTHs fit
// the address, exactly ceil(SOURCE/8) address octets and no bit set past
// SOURCE; FAMILY 0 only as /0 with no address). It reads the address as a
// netip.Prefix and asks that masking it change nothing.
func refOptionSound(code uint16, data []byte) bool {
	switch code {
	case 10:
		switch n := len(data); {
		case n == 8:
			return true
		case n < 16 || n > 40:
			return false
		}
		return true
	case 8:
	default:
		return true
	}
	if len(data) < 4 {
		return false
	}
	family, source, scope, addr := int(data[0])<<8|int(data[1]), int(data[2]), int(data[3]), data[4:]
	var full []byte
	switch family {
	case 0:
		return source == 0 && len(addr) == 0
	case 1:
		full = make([]byte, 4)
	case 2:
		full = make([]byte, 16)
	default:
		return false
	}
	bits := len(full) * 8
	if source > bits || scope > bits {
		return false
	}
	if len(addr)*8 < source || len(addr)*8 >= source+8 {
		return false // not ceil(source/8) octets
	}
	copy(full, addr)
	a, _ := netip.AddrFromSlice(full)
	p := netip.PrefixFrom(a, source)
	return p.Masked() == p
}

// FuzzOptionSound checks OptionSound against refOptionSound, for any
// option code and data.
func FuzzOptionSound(f *testing.F) {
	for _, s := range []struct {
		code uint16
		data []byte
	}{
		{OptionCookie, make([]byte, 8)},
		{OptionCookie, make([]byte, 7)},
		{OptionCookie, make([]byte, 9)},
		{OptionCookie, make([]byte, 15)},
		{OptionCookie, make([]byte, 16)},
		{OptionCookie, make([]byte, 40)},
		{OptionCookie, make([]byte, 41)},
		{OptionCookie, nil},
		{OptionSubnet, []byte{0, 1, 24, 0, 10, 20, 30}},
		{OptionSubnet, []byte{0, 1, 24, 0, 10, 20, 30, 4}},
		{OptionSubnet, []byte{0, 1, 24, 0, 10}},
		{OptionSubnet, []byte{0, 1, 23, 0, 10, 20, 31}},
		{OptionSubnet, []byte{0, 1, 25, 0, 10, 20, 30, 0x80}}, // 4 octets for 25 bits
		{OptionSubnet, []byte{0, 1, 33, 0, 10, 20, 30, 4, 0}},
		{OptionSubnet, []byte{0, 1, 32, 33, 10, 20, 30, 4}},
		{OptionSubnet, []byte{0, 1, 32, 32, 10, 20, 30, 4}}, // SCOPE the whole address: sound
		{OptionSubnet, []byte{0, 1, 0, 0}},
		{OptionSubnet, []byte{0, 2, 56, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0}},
		{OptionSubnet, []byte{0, 2, 128, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{OptionSubnet, append([]byte{0, 2, 128, 128, 0x20, 0x01, 0x0d, 0xb8}, make([]byte, 12)...)}, // both the whole address: sound
		{OptionSubnet, []byte{0, 2, 129, 0}},
		// SOURCE or SCOPE past 128 for IPv6, with the octets SOURCE would
		// take: not sound (the IPv4 seeds above have their neighbours).
		{OptionSubnet, append([]byte{0, 2, 129, 0}, make([]byte, 17)...)},
		{OptionSubnet, []byte{0, 2, 0, 129}},
		{OptionSubnet, []byte{0, 0, 0, 0}},
		{OptionSubnet, []byte{0, 0, 0, 0, 1}},
		{OptionSubnet, []byte{0, 0, 8, 0, 1}},
		{OptionSubnet, []byte{0, 3, 0, 0}},
		{OptionSubnet, []byte{0, 1, 0}},
		{12, nil},
	} {
		f.Add(s.code, s.data)
	}
	f.Fuzz(func(t *testing.T, code uint16, data []byte) {
		if code&1 == 0 && code < 32 {
			code = []uint16{OptionSubnet, OptionCookie}[code>>1&1] // most inputs on the two options checked
		}
		if got, want := OptionSound(code, data), refOptionSound(code, data); got != want {
			t.Fatalf("OptionSound(%d, % x) = %v, want %v", code, data, got, want)
		}
	})
}
