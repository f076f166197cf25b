package dnswire

import (
	"encoding/binary"
	"math/bits"
)

// What RDATA takes of the heap as miekg/dns v1.1.73 unpacks it
// (Record.Held), in bytes on 64-bit Go, for a cache that bounds the heap
// its answers take (the resolver's maxCachedFootprint). Octets are not
// what bounds it: miekg/dns holds names and character-strings as
// presentation text, up to four characters an octet (\DDD); a type bitmap
// as a uint16 a type, up to 16 bytes an octet; each character-string of a
// TXT record as a string header of 16 bytes for as little as its length
// octet. Measured on answers of about 4,000 octets: 66 KB for one NSEC
// record's bitmap, 82 KB for a TXT record of empty strings, 88 KB for an
// APL record, 41 KB for an HTTPS record's ALPN list of one-octet IDs
// (resolver's TestHeldBoundsTheHeap logs them).
const (
	// stringHeader is a string's header in a slice, its pointer and
	// length.
	stringHeader = 16
	// typeBit is a type of a type bitmap (RFC 4034 §4.1.2): a uint16 in
	// a slice grown by append.
	typeBit = 4
	// svcParam is a SvcParam (RFC 9460 §2.2) beyond its value: the
	// interface in a slice grown by append, and the value's struct.
	svcParam = 64
	// ednsOption is an EDNS option (RFC 6891 §6.1.2) beyond twice its
	// value (hexadecimal, as a cookie or an NSID is held): the interface
	// in a slice grown by append, the option's struct, an address.
	ednsOption = 96
)

// OpaqueFactor bounds the bytes miekg/dns v1.1.73 holds for an octet of
// the RDATA of a type Record.Held does not model, any of them, and so of
// a whole message packed uncompressed: the most is an APL record of empty
// IPv6 prefixes (RFC 3123), 4 octets for a prefix of 56 bytes in a slice
// grown by append, an address and a mask of 16 each.
const OpaqueFactor = 40

// More record types (rdataHeld).
const (
	typeHINFO      = 13
	typeTXT        = 16
	typeKEY        = 25
	typeLOC        = 29
	typeCERT       = 37
	typeDS         = 43
	typeSSHFP      = 44
	typeDNSKEY     = 48
	typeDHCID      = 49
	typeNSEC3      = 50
	typeNSEC3PARAM = 51
	typeTLSA       = 52
	typeSMIMEA     = 53
	typeNINFO      = 56
	typeRKEY       = 57
	typeCDS        = 59
	typeCDNSKEY    = 60
	typeOPENPGPKEY = 61
	typeCSYNC      = 62
	typeZONEMD     = 63
	typeSPF        = 99
	typeURI        = 256
	typeCAA        = 257
	typeAVC        = 258
	typeRESINFO    = 261
	typeTA         = 32768
	typeDLV        = 32769
)

// SvcParamKeys whose values miekg/dns holds in more than their octets
// (RFC 9460 §14.3.2).
const (
	svcALPN     = 1
	svcIPv4Hint = 4
	svcIPv6Hint = 6
)

// labelText is how many characters miekg/dns writes an octet of a label
// as (UnpackDomainName): \DDD outside printable ASCII, \X for the
// characters special in a name, the octet itself otherwise.
var labelText = escapes(".'@;()\" \\")

// stringText is labelText for an octet of a character-string
// (unpackString), where only the quote and the backslash are special.
var stringText = escapes("\"\\")

// escapes is the characters each octet is written as, special being the
// printable ones written with a backslash.
func escapes(special string) (w [256]uint8) {
	for b := range w {
		w[b] = 1
		if b < ' ' || b > '~' {
			w[b] = 4
		}
	}
	for _, c := range []byte(special) {
		w[c] = 2
	}
	return w
}

// rdataHeld is what RDATA rd of type t, which holds no name Walk reads,
// takes unpacked: the types of common answers as their fields are held
// (text, hex, base64, type bitmaps; CAA, URI and keys too, whose sets a
// site publishes run to a few KB counted at OpaqueFactor), any other
// OpaqueFactor times its octets.
func rdataHeld(t uint16, rd []byte) int {
	switch t {
	case typeTXT, typeSPF, typeAVC, typeNINFO, typeRESINFO:
		return stringList(rd)
	case typeHINFO:
		if n, count, ok := stringsHeld(rd); ok && count == 2 {
			return n
		}
	case typeDNSKEY, typeCDNSKEY, typeKEY, typeRKEY:
		return fixedThen(rd, 4, base64Len)
	case typeOPENPGPKEY, typeDHCID:
		return base64Len(len(rd))
	case typeCERT:
		return fixedThen(rd, 5, base64Len)
	case typeZONEMD:
		return fixedThen(rd, 6, hexLen)
	case typeLOC:
		if len(rd) == 16 { // fixed fields only (RFC 1876 §2)
			return 16
		}
	case typeURI:
		return fixedThen(rd, 4, octets) // the target as it is (RFC 7553 §4.5)
	case typeCAA:
		// Flags, the tag a character-string, the value as it is (RFC 8659 §4.1).
		if len(rd) >= 2 && len(rd) >= 2+int(rd[1]) {
			tag, _, _ := stringsHeld(rd[1 : 2+int(rd[1])])
			return 1 + tag + len(rd) - 2 - int(rd[1])
		}
	case typeDS, typeCDS, typeTA, typeDLV:
		return fixedThen(rd, 4, hexLen)
	case typeTLSA, typeSMIMEA:
		return fixedThen(rd, 3, hexLen)
	case typeSSHFP:
		return fixedThen(rd, 2, hexLen)
	case typeCSYNC:
		if len(rd) >= 6 {
			return 6 + bitmapHeld(rd[6:])
		}
	case typeNSEC3PARAM:
		if len(rd) >= 5 && len(rd) == 5+int(rd[4]) {
			return 5 + hexLen(int(rd[4]))
		}
	case typeNSEC3:
		return nsec3Held(rd)
	case TypeOPT:
		return optionsHeld(rd)
	}
	if !ownStruct(t) {
		return hexLen(len(rd)) // RFC 3597's \# form
	}
	return OpaqueFactor * len(rd)
}

// ownStruct reports whether miekg/dns v1.1.73 unpacks RDATA of type t into
// a struct of the type's own (dns.TypeToRR); any other it holds as a
// string of hexadecimal (dns.RFC3597).
func ownStruct(t uint16) bool {
	switch {
	case t >= 1 && t <= 65:
		return t != 11 && t != 22 && t != 34 && t != 38 && t != 40 && t != 54
	case t >= 99 && t <= 109:
		return t != 103
	}
	switch t {
	case 128, 249, 250, 255, 256, 257, 258, 260, 261, 32768, 32769:
		return true
	}
	return false
}

// tailHeld is what the RDATA after the names of a type whose names do not
// end it (rdataLayout's nameThen) takes unpacked.
func tailHeld(t uint16, rd []byte) int {
	switch t {
	case typeRRSIG, typeSIG:
		return base64Len(len(rd)) // the signature
	case typeNSEC, typeNXT:
		return bitmapHeld(rd)
	case typeSVCB, typeHTTPS:
		return svcParamsHeld(rd)
	}
	return OpaqueFactor * len(rd)
}

// fixedThen is what RDATA rd of fixed fields of n octets followed by a
// field held as text of text(octets) characters takes.
func fixedThen(rd []byte, n int, text func(int) int) int {
	if len(rd) < n {
		return OpaqueFactor * len(rd)
	}
	return n + text(len(rd)-n)
}

// octets is the characters n octets take held as a string of them.
func octets(n int) int { return n }

// hexLen is the characters n octets take in hexadecimal.
func hexLen(n int) int { return 2 * n }

// base64Len is the characters n octets take in padded base64 (RFC 4648 §4).
func base64Len(n int) int { return (n + 2) / 3 * 4 }

// base32Len is the characters n octets take in unpadded base32 (RFC 4648
// §7, NSEC3's next hashed owner name, RFC 5155 §3.3).
func base32Len(n int) int { return (8*n + 4) / 5 }

// stringsHeld returns what the character-strings of b take unpacked,
// and how many there are: each is its length octet, then that many
// octets (RFC 1035 §3.3); ok is false when one leaves b. A string is held
// as its octets, or, with an octet escaped (stringText), in a buffer
// grown as it is written: three times its text bounds that (twice its
// octets at first, then grown by append), Go's rounding to a size class
// too.
func stringsHeld(b []byte) (n, count int, ok bool) {
	for len(b) > 0 {
		l := int(b[0])
		if 1+l > len(b) {
			return 0, 0, false
		}
		text := 0
		for _, c := range b[1 : 1+l] {
			text += int(stringText[c])
		}
		if text > l {
			text *= 3
		}
		n += text
		b = b[1+l:]
		count++
	}
	return n, count, true
}

// stringList is what a list of character-strings filling b (TXT's) takes
// unpacked: each string (stringsHeld), and the slice they are appended to
// (appendedList).
func stringList(b []byte) int {
	n, count, ok := stringsHeld(b)
	if !ok {
		return OpaqueFactor * len(b)
	}
	return n + appendedList(count)
}

// appendedList is the bytes of a slice of count strings appended one at a
// time to none (unpackTxt): Go's append doubles its capacity up to 256
// elements, a power of two at least count (16 bytes for one string, 64
// for three), and grows it by less than twice after that.
func appendedList(count int) int {
	if count <= 256 {
		return stringHeader * (1 << bits.Len(uint(max(count, 1)-1)))
	}
	return stringHeader * 2 * count
}

// bitmapHeld is what a type bitmap b takes unpacked: typeBit for each type
// in it, each window a window number, a length of 1 to 32 and that many
// octets of bits, the windows in increasing order (RFC 4034 §4.1.2);
// malformed, OpaqueFactor an octet (miekg/dns does not unpack it: a
// window cut short, empty, over 32 octets or out of order).
func bitmapHeld(b []byte) int {
	types := 0
	last := -1
	for rest := b; len(rest) > 0; {
		if len(rest) < 2 || int(rest[0]) <= last || rest[1] == 0 || rest[1] > 32 || 2+int(rest[1]) > len(rest) {
			return OpaqueFactor * len(b)
		}
		last = int(rest[0])
		for _, c := range rest[2 : 2+int(rest[1])] {
			types += bits.OnesCount8(c)
		}
		rest = rest[2+int(rest[1]):]
	}
	return types * typeBit
}

// nsec3Held is what NSEC3 RDATA rd takes unpacked (RFC 5155 §3.2): the
// salt in hexadecimal, the next hashed owner name in base32, the type
// bitmap.
func nsec3Held(rd []byte) int {
	if len(rd) < 5 || len(rd) < 6+int(rd[4]) {
		return OpaqueFactor * len(rd)
	}
	salt := int(rd[4])
	hash := int(rd[5+salt])
	bitmap := 6 + salt + hash
	if bitmap > len(rd) {
		return OpaqueFactor * len(rd)
	}
	return 6 + hexLen(salt) + base32Len(hash) + bitmapHeld(rd[bitmap:])
}

// optionsHeld is what the options b of an OPT record take unpacked:
// ednsOption each and twice its value, but a Report-Channel option's
// (RFC 9567 §6.1), whose value is a domain name: miekg/dns v1.1.73
// (EDNS0_REPORTING.unpack) holds it as text, up to four characters an
// octet (\DDD, labelText) and the root's dot.
func optionsHeld(b []byte) int {
	return tlvHeld(b, func(code int, v []byte) int {
		if code == ednsReportChannel {
			return ednsOption + 4*len(v) + 1
		}
		return ednsOption + 2*len(v)
	})
}

// ednsReportChannel is the EDNS option code of an agent domain to report
// errors to (RFC 9567 §6.1).
const ednsReportChannel = 18

// tlvHeld is what the options or SvcParams b take unpacked, each a 16-bit
// code, a 16-bit length and a value of that many octets, held(code, value)
// for each; past where b stops being so, OpaqueFactor an octet.
func tlvHeld(b []byte, held func(code int, v []byte) int) int {
	n := 0
	for len(b) > 0 {
		if len(b) < 4 {
			return n + OpaqueFactor*len(b)
		}
		end := 4 + int(binary.BigEndian.Uint16(b[2:]))
		if end > len(b) {
			return n + OpaqueFactor*len(b)
		}
		n += held(int(binary.BigEndian.Uint16(b)), b[4:end])
		b = b[end:]
	}
	return n
}

// svcParamsHeld is what the SvcParams b of an SVCB or HTTPS record take
// unpacked (RFC 9460 §2.2): svcParam each, and its value, an ALPN list's
// strings as alpnHeld has them, an address hint's addresses as net.IP
// values.
func svcParamsHeld(b []byte) int {
	return tlvHeld(b, func(key int, v []byte) int {
		switch key {
		case svcALPN:
			return svcParam + alpnHeld(v)
		case svcIPv4Hint:
			return svcParam + len(v)/4*(24+8) // a slice header and its address
		case svcIPv6Hint:
			return svcParam + len(v)/16*(24+16)
		}
		return svcParam + len(v)
	})
}

// alpnHeld is what the value v of an ALPN SvcParam (RFC 9460 §7.1.1), a
// list of protocol IDs each a length octet and that many octets, takes
// unpacked: each ID a string of its octets as they are, in a slice that
// miekg/dns v1.1.73 (SVCBAlpn.unpack) makes with room for an ID every 4
// octets of v, a string header each, and grows by append when there are
// more (up to twice their number). Room made, not IDs found, is what a
// list of long IDs takes: IDs of 255 octets are held in 5 bytes an octet
// of v (4 of them the room for IDs not there), not 1. A v that is not
// such a list does not unpack; it is counted as IDs of no octets.
func alpnHeld(v []byte) int {
	_, count, ok := stringsHeld(v)
	if !ok {
		return len(v) * 2 * stringHeader
	}
	return len(v) - count + stringHeader*max(len(v)/4, 2*count)
}
