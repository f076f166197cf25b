// Package dnswire reads DNS messages in wire form (RFC 1035 §4.1) without
// unpacking them into a dns.Msg: the header, the question, and each
// record's place, type and TTL. It is what lets the commonest queries and
// upstream answers pass through dnsfence as bytes, patched in place (an ID,
// header bits, TTLs, the OPT record), the way dnsdist forwards them;
// anything it cannot read exactly is left to miekg/dns and the message
// path. It allocates nothing.
package dnswire

import "encoding/binary"

// HeaderLen is the length of the DNS header (RFC 1035 §4.1.1), in octets.
const HeaderLen = 12

// Header flag bits of the second 16-bit header word (RFC 1035 §4.1.1, RFC
// 4035 §3.2 for AD and CD).
const (
	FlagQR = 1 << 15
	FlagAA = 1 << 10
	FlagTC = 1 << 9
	FlagRD = 1 << 8
	FlagRA = 1 << 7
	FlagZ  = 1 << 6
	FlagAD = 1 << 5
	FlagCD = 1 << 4
)

// Record types and classes this package looks into.
const (
	TypeA     = 1
	TypeNS    = 2
	TypeCNAME = 5
	TypeSOA   = 6
	TypePTR   = 12
	TypeMX    = 15
	TypeAAAA  = 28
	TypeDNAME = 39
	TypeOPT   = 41
	ClassINET = 1
)

// maxPointers bounds the compression pointers followed in one name, as
// miekg/dns does: more is a loop.
const maxPointers = 126

// maxNameWire is the longest name in wire form (RFC 1035 §2.3.4), octets.
const maxNameWire = 255

// Header words.
func ID(b []byte) uint16      { return binary.BigEndian.Uint16(b[0:]) }
func Flags(b []byte) uint16   { return binary.BigEndian.Uint16(b[2:]) }
func QDCount(b []byte) uint16 { return binary.BigEndian.Uint16(b[4:]) }
func ANCount(b []byte) uint16 { return binary.BigEndian.Uint16(b[6:]) }
func NSCount(b []byte) uint16 { return binary.BigEndian.Uint16(b[8:]) }
func ARCount(b []byte) uint16 { return binary.BigEndian.Uint16(b[10:]) }

// NameEnd returns the offset just past the name at off in msg, following
// no pointer (a pointer ends the name in place) but checking, through
// every pointer, that the name is well formed: labels of at most 63
// octets, at most 255 octets in all, pointers inside msg and no loop. ok
// is false for a name miekg/dns would not unpack.
func NameEnd(msg []byte, off int) (end int, ok bool) {
	end = -1
	length, ptrs := 0, 0
	for {
		if off >= len(msg) {
			return 0, false
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if end < 0 {
					end = off + 1
				}
				return end, true
			}
			// Labels and their length octets take at most 254 octets,
			// the root the last (miekg/dns's budget).
			length += 1 + c
			if length >= maxNameWire || off+1+c > len(msg) {
				return 0, false
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(msg) {
				return 0, false
			}
			if end < 0 {
				end = off + 2
			}
			if ptrs++; ptrs > maxPointers {
				return 0, false
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
		default:
			return 0, false // 0x40 and 0x80: no such label types (RFC 6891 §5)
		}
	}
}

// Question is the one question of a message, as offsets into it.
type Question struct {
	NameEnd int // QNAME is msg[HeaderLen:NameEnd], uncompressed
	End     int // the offset after QTYPE and QCLASS
	Type    uint16
	Class   uint16
}

// ReadQuestion reads the question of a message with QDCOUNT 1 that starts
// at HeaderLen; its name must be uncompressed (a question's name has
// nothing before it to point at).
func ReadQuestion(msg []byte) (Question, bool) {
	off := HeaderLen
	for {
		if off >= len(msg) {
			return Question{}, false
		}
		c := int(msg[off])
		if c == 0 {
			off++
			break
		}
		if c > 63 || off+1+c > len(msg) || off+1+c-HeaderLen >= maxNameWire {
			return Question{}, false
		}
		off += 1 + c
	}
	if off+4 > len(msg) {
		return Question{}, false
	}
	return Question{NameEnd: off, End: off + 4, Type: binary.BigEndian.Uint16(msg[off:]), Class: binary.BigEndian.Uint16(msg[off+2:])}, true
}

// EqualFold reports whether two names in uncompressed wire form are the
// same name: the same labels, ASCII letters compared without case (RFC
// 4343).
func EqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x != y && lower(x) != lower(y) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Sections of a message, as Walk gives them.
const (
	Answer     = 1
	Authority  = 2
	Additional = 3
)

// Record is one resource record of a message, as offsets into it.
type Record struct {
	Section int // Answer, Authority or Additional
	Off     int // where the record starts: its owner name
	TTLOff  int // where its TTL is (for OPT, the extended RCODE and flags)
	RdOff   int // where its RDATA starts
	End     int // the offset after its RDATA
	Type    uint16
	Class   uint16
	TTL     uint32
}

// Walk reads every record after the question (which ends at qend) in
// order and calls fn with each; fn returning false stops the walk, and
// Walk then returns false. It checks that each owner name is well formed,
// that the RDATA of the types whose shape it knows holds just that (an
// address of A or AAAA, the names of NS, CNAME, PTR, DNAME, MX and SOA) and
// that the records end where the message does; any other RDATA is opaque.
// It returns false for a message it cannot read so, which miekg/dns may
// still unpack: the caller then takes the message path.
func Walk(msg []byte, qend int, fn func(r Record) bool) bool {
	counts := [3]int{int(ANCount(msg)), int(NSCount(msg)), int(ARCount(msg))}
	off := qend
	for sec, n := range counts {
		for range n {
			end, ok := NameEnd(msg, off)
			if !ok || end+10 > len(msg) {
				return false
			}
			r := Record{
				Section: sec + 1, Off: off, TTLOff: end + 4, RdOff: end + 10,
				Type: binary.BigEndian.Uint16(msg[end:]), Class: binary.BigEndian.Uint16(msg[end+2:]),
				TTL: binary.BigEndian.Uint32(msg[end+4:]),
			}
			r.End = r.RdOff + int(binary.BigEndian.Uint16(msg[end+8:]))
			if r.End > len(msg) || !rdataFits(msg, r) || !fn(r) {
				return false
			}
			off = r.End
		}
	}
	return off == len(msg)
}

// rdataFits checks the RDATA of the types whose shape Walk knows.
func rdataFits(msg []byte, r Record) bool {
	switch r.Type {
	case TypeA:
		return r.End-r.RdOff == 4
	case TypeAAAA:
		return r.End-r.RdOff == 16
	case TypeNS, TypeCNAME, TypePTR, TypeDNAME:
		end, ok := NameEnd(msg, r.RdOff)
		return ok && end == r.End
	case TypeMX:
		end, ok := NameEnd(msg, r.RdOff+2)
		return r.RdOff+2 <= r.End && ok && end == r.End
	case TypeSOA:
		end, ok := NameEnd(msg, r.RdOff)
		if !ok || end > r.End {
			return false
		}
		end, ok = NameEnd(msg, end)
		return ok && end+20 == r.End
	}
	return true
}

// SOAMinimum is the MINIMUM field of the SOA record r (RFC 1035 §3.3.13),
// which Walk has checked: the last four octets of its RDATA.
func SOAMinimum(msg []byte, r Record) uint32 {
	return binary.BigEndian.Uint32(msg[r.End-4:])
}
