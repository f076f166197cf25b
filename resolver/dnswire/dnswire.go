// Package dnswire reads DNS messages in wire form (RFC 1035 §4.1) without
// unpacking them into a dns.Msg: the header, the question, and each
// record's place, type and TTL. It is what lets the commonest queries and
// upstream answers pass through dnsfence as bytes, patched in place (an ID,
// header bits, TTLs, the OPT record), the way dnsdist forwards them;
// anything it cannot read exactly is left to miekg/dns and the message
// path. It allocates nothing for a message of up to 4,160 octets (Labels).
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

// Opcode is the OPCODE of a header's flags word (Flags): its four bits
// after QR (RFC 1035 §4.1.1).
func Opcode(flags uint16) int { return int(flags>>11) & 0xF }

// EDNS option codes this package checks (OptionSound).
const (
	OptionSubnet = 8  // EDNS Client Subnet, RFC 7871
	OptionCookie = 10 // DNS Cookie, RFC 7873
)

// OptionSound reports whether the EDNS option code, with data, of a
// query is well formed where its RFC asks a server to answer FORMERR to
// one that is not. Any other option is sound: unknown options are
// ignored (RFC 6891 §6.1.2).
//   - COOKIE (RFC 7873 §5.2.2): a Client Cookie of 8 octets, alone or
//     followed by a Server Cookie of 8 to 32 (RFC 9018 §4): 8, or 16 to
//     40 octets in all. Shorter, 9 to 15, or longer MUST get FORMERR.
//   - Client Subnet (RFC 7871 §6): see subnetSound.
func OptionSound(code uint16, data []byte) bool {
	switch code {
	case OptionCookie:
		return len(data) == 8 || len(data) >= 16 && len(data) <= 40
	case OptionSubnet:
		return subnetSound(data)
	}
	return true
}

// subnetSound reports whether data is a well-formed Client Subnet option
// (RFC 7871 §6): FAMILY 1 (IPv4) or 2 (IPv6) with SOURCE and SCOPE
// PREFIX-LENGTHs no longer than the address, and an ADDRESS of exactly
// the octets SOURCE PREFIX-LENGTH needs with no bit set past it: too many
// octets, or bits past the prefix, SHOULD get FORMERR, and too few are no
// address the option's prefix can be read from. FAMILY 0 is taken with a
// SOURCE PREFIX-LENGTH of 0 and no address (dig's +subnet=0), as
// miekg/dns takes it.
func subnetSound(data []byte) bool {
	if len(data) < 4 {
		return false
	}
	family, source, scope := binary.BigEndian.Uint16(data), int(data[2]), int(data[3])
	addr := data[4:]
	switch family {
	case 0:
		return source == 0 && len(addr) == 0
	case 1:
		if source > 32 || scope > 32 {
			return false
		}
	case 2:
		if source > 128 || scope > 128 {
			return false
		}
	default:
		return false
	}
	if len(addr) != (source+7)/8 {
		return false
	}
	return source%8 == 0 || addr[len(addr)-1]&(0xFF>>(source%8)) == 0
}

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
	TypeANY   = 255
	ClassINET = 1
)

// Answers reports whether an answer record of type rrtype answers a
// question of type qtype (RFC 2308 §2.2's "relevant answer"): it is of that
// type, or the question is for every type (ANY). A CNAME or DNAME that
// leads elsewhere answers only a question for its own type.
func Answers(qtype, rrtype uint16) bool {
	return rrtype == qtype || qtype == TypeANY
}

// Other types whose RDATA holds names (rdataFits).
const (
	typeMD       = 3
	typeMF       = 4
	typeMB       = 7
	typeMG       = 8
	typeMR       = 9
	typeMINFO    = 14
	typeRP       = 17
	typeAFSDB    = 18
	typeRT       = 21
	typeNSAPPTR  = 23
	typeSIG      = 24
	typePX       = 26
	typeNXT      = 30
	typeSRV      = 33
	typeNAPTR    = 35
	typeKX       = 36
	typeIPSECKEY = 45
	typeRRSIG    = 46
	typeNSEC     = 47
	typeHIP      = 55
	typeTALINK   = 58
	typeSVCB     = 64
	typeHTTPS    = 65
	typeLP       = 107
	typeTKEY     = 249
	typeTSIG     = 250
	typeAMTRELAY = 260
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

// Labels marks where, in one message, the labels of the names read so far
// start: the only places a compression pointer may point to. RFC 1035
// §4.1.4 has a pointer replace a name or its last labels "with a pointer
// to a prior occurance of the same name"; miekg/dns follows a pointer
// anywhere (into the header, a TTL, RDATA), and the wire path rewrites
// some of those octets (the ID and flags, TTLs, the cut-off OPT) after
// inspecting the answer, so a name that points there would read one way
// when inspected and another at the client. A name read with Labels points
// only backwards, at a label of a name already read, whose octets the wire
// path never rewrites: it reads the same before and after.
//
// The zero Labels knows no name and records none (a name with a pointer
// does not read); Reset readies it for a message.
type Labels struct {
	n     int // offsets below n are marked; those above cannot be pointed at
	small [labelsInline / 64]uint64
	big   []uint64 // for a message longer than labelsInline octets
}

// labelsInline is how many offsets Labels marks without allocating: any
// UDP answer an upstream socket takes (4,096 octets) and a little more.
const labelsInline = 4160

// maxPointerTarget bounds the offsets a pointer can name (14 bits).
const maxPointerTarget = 1 << 14

// Reset readies l for a message of msgLen octets, with no name read yet.
// It allocates only for a message longer than 4,160 octets.
func (l *Labels) Reset(msgLen int) {
	l.n = min(msgLen, maxPointerTarget)
	l.big = nil
	if l.n > labelsInline {
		l.big = make([]uint64, (l.n+63)/64)
		return
	}
	clear(l.small[:(l.n+63)/64])
}

func (l *Labels) words() []uint64 {
	if l.big != nil {
		return l.big
	}
	return l.small[:]
}

func (l *Labels) add(off int) {
	if off < l.n {
		l.words()[off/64] |= 1 << (off % 64)
	}
}

func (l *Labels) has(off int) bool {
	return off < l.n && l.words()[off/64]&(1<<(off%64)) != 0
}

// What reading a name or a message came to.
const (
	read       = iota
	unread     // not read: miekg/dns may still unpack it
	intoHeader // a name points into the header, where no name is
)

// nameEnd returns the offset just past the name at off in msg, following
// no pointer (a pointer ends the name in place) but checking, through
// every pointer, that the name is well formed: labels of at most 63
// octets, at most 255 octets in all, and every pointer pointing backwards,
// before the name at off starts, at the start of a label of a name already
// read with seen (RFC 1035 §4.1.4), so that the name has no loop and reads
// the same whatever the octets outside names hold. The labels written at
// off (before any pointer) are marked in seen. result is read when the
// name reads so; else it says why not (a name miekg/dns would not unpack,
// or one that points elsewhere), and seen may hold marks of part of it.
func nameEnd(msg []byte, off int, seen *Labels) (end int, result int) {
	end, _, result = nameSpan(msg, off, seen)
	return end, result
}

// nameSpan is nameEnd, and also the name's length as miekg/dns holds it
// unpacked (text): its labels through every pointer in presentation form
// (RFC 1035 §5.1), each followed by a dot, an octet miekg/dns escapes
// counted as its escape (labelText), the root alone as "."; in
// characters, which are bytes of the string UnpackDomainName returns.
func nameSpan(msg []byte, off int, seen *Labels) (end, text, result int) {
	start := off
	end = -1
	length, ptrs := 0, 0
	for {
		if off >= len(msg) {
			return 0, 0, unread
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if end < 0 {
					end = off + 1
				}
				return end, max(text, 1), read
			}
			// Labels and their length octets take at most 254 octets,
			// the root the last (miekg/dns's budget).
			length += 1 + c
			if length >= maxNameWire || off+1+c > len(msg) {
				return 0, 0, unread
			}
			if end < 0 {
				seen.add(off) // a label written here, not reached by a pointer
			}
			text += 1 // the dot after it
			for _, b := range msg[off+1 : off+1+c] {
				text += int(labelText[b])
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(msg) {
				return 0, 0, unread
			}
			if end < 0 {
				end = off + 2
			}
			if ptrs++; ptrs > maxPointers {
				return 0, 0, unread
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
			if off < HeaderLen {
				return 0, 0, intoHeader
			}
			if off >= start || !seen.has(off) {
				return 0, 0, unread // not a prior name's label: a TTL, RDATA, itself
			}
		default:
			return 0, 0, unread // 0x40 and 0x80: no such label types (RFC 6891 §5)
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
	// Held bounds what the record takes of the heap unpacked by
	// miekg/dns v1.1.73, in bytes, beyond a fixed cost a record (its RR
	// value and its place in a section's slice, which the caller counts):
	// every name Walk reads in it (its owner, the names of rdataLayout in
	// its RDATA) as the string miekg/dns holds, through every pointer, in
	// presentation form (nameSpan), 10 for TYPE to RDLENGTH, and its other
	// RDATA as miekg/dns unpacks it (rdataHeld). A record of 16 octets
	// whose three names are pointers to one of 255 plain octets holds 772;
	// a label of octets below 0x20 is held in four times its length
	// (\DDD).
	Held int
}

// Walk reads every record after the question (which ends at qend) in
// order and calls fn with each; fn returning false stops the walk, and
// Walk then returns false. It checks that each owner name is well formed,
// that the RDATA of the types whose shape it knows holds just that (an
// address of A or AAAA; the names of NS, CNAME, PTR, DNAME, MX, SOA, SRV,
// SVCB, HTTPS, RRSIG, NSEC and the other types miekg/dns reads names in:
// rdataFits) and that the records end where the message does; any other
// RDATA is opaque. Every name it reads, the question's first, may point
// only at a label of a name read before it (nameEnd), so that the names
// read the same whatever the octets outside them (ID, flags, counts, TTLs,
// opaque RDATA) hold. It returns false for a message it cannot read so,
// which miekg/dns may still unpack: the caller then takes the message
// path.
func Walk(msg []byte, qend int, fn func(r Record) bool) bool {
	return walk(msg, qend, fn) == read
}

// PointsIntoHeader reports whether a name in msg, read as Walk reads it,
// is a compression pointer into the header. No name is there (RFC 1035
// §4.1.4): such a name reads as whatever the ID, flags and counts make of
// it, which differ between the upstream's datagram, the answer as
// checked and the answer the client gets. It is a malformed message, not
// one to unpack otherwise. Names Walk does not read (opaque RDATA) are not
// looked at.
func PointsIntoHeader(msg []byte, qend int) bool {
	return walk(msg, qend, func(Record) bool { return true }) == intoHeader
}

// walk is Walk, saying why a message did not read.
func walk(msg []byte, qend int, fn func(r Record) bool) int {
	if len(msg) < HeaderLen || qend < HeaderLen || qend > len(msg) {
		return unread // no header to count the records by, or no question where qend says
	}
	var seen Labels
	seen.Reset(len(msg))
	if qend > HeaderLen {
		// The question's name: uncompressed (ReadQuestion), the first a
		// pointer may point at.
		if end, r := nameEnd(msg, HeaderLen, &seen); r != read || end+4 != qend {
			return max(r, unread)
		}
	}
	counts := [3]int{int(ANCount(msg)), int(NSCount(msg)), int(ARCount(msg))}
	off := qend
	for sec, n := range counts {
		for range n {
			end, text, res := nameSpan(msg, off, &seen)
			if res != read || end+10 > len(msg) {
				return max(res, unread)
			}
			r := Record{
				Section: sec + 1, Off: off, TTLOff: end + 4, RdOff: end + 10,
				Type: binary.BigEndian.Uint16(msg[end:]), Class: binary.BigEndian.Uint16(msg[end+2:]),
				TTL: binary.BigEndian.Uint32(msg[end+4:]),
			}
			r.End = r.RdOff + int(binary.BigEndian.Uint16(msg[end+8:]))
			if r.End > len(msg) {
				return unread
			}
			res, held := rdataFits(msg, r, &seen)
			if res != read {
				return res
			}
			r.Held = text + 10 + held
			if !fn(r) {
				return unread
			}
			off = r.End
		}
	}
	if off != len(msg) {
		return unread
	}
	return read
}

// RDATA layouts of the types miekg/dns reads names in (v1.1.73, the
// types' unpack functions), by what follows the names.
const (
	nameOnly = iota // the names fill the RDATA
	nameThen        // opaque octets follow the names
	soaTail         // SOA's five 32-bit fields follow the names
)

// rdataLayout is where the names miekg/dns reads in the RDATA of r are:
// names of them after skip octets, then what rest says. names is 0 for a
// type with none (its RDATA opaque to Walk, or an address rdataFits
// checks). res is unread for a type whose names miekg/dns reads but Walk
// does not (HIP, IPSECKEY, AMTRELAY, TKEY, TSIG), for a SIG(0) (RFC 2931),
// which the message path drops, and for a NAPTR whose strings leave its
// RDATA.
func rdataLayout(msg []byte, r Record) (skip, names, rest, res int) {
	names, rest = 1, nameOnly
	switch r.Type {
	case TypeNS, TypeCNAME, TypePTR, TypeDNAME, typeMD, typeMF, typeMB, typeMG, typeMR, typeNSAPPTR:
	case TypeMX, typeAFSDB, typeRT, typeKX, typeLP:
		skip = 2
	case TypeSOA:
		names, rest = 2, soaTail
	case typeMINFO, typeRP, typeTALINK:
		names = 2
	case typePX:
		skip, names = 2, 2
	case typeSRV:
		skip = 6
	case typeSVCB, typeHTTPS:
		skip, rest = 2, nameThen
	case typeRRSIG, typeSIG:
		if r.Type == typeSIG && (r.End-r.RdOff < 2 || binary.BigEndian.Uint16(msg[r.RdOff:]) == 0) {
			return 0, 0, 0, unread // a SIG(0)
		}
		skip, rest = 18, nameThen
	case typeNSEC, typeNXT:
		rest = nameThen
	case typeNAPTR:
		// ORDER, PREFERENCE, then FLAGS, SERVICES and REGEXP, each a
		// character-string, then REPLACEMENT (RFC 3403 §4.1).
		skip = 4
		for range 3 {
			if r.RdOff+skip >= r.End {
				return 0, 0, 0, unread
			}
			skip += 1 + int(msg[r.RdOff+skip])
		}
	case typeHIP, typeIPSECKEY, typeAMTRELAY, typeTKEY, typeTSIG:
		return 0, 0, 0, unread
	default:
		return 0, 0, 0, read
	}
	return skip, names, rest, read
}

// rdataFits checks the RDATA of the types whose shape Walk knows, and
// reads the names in it with seen: every name miekg/dns would read there
// (rdataLayout), so that none of them can point where Walk has not
// looked. A type whose names miekg/dns reads but Walk does not does not
// fit, nor does a SIG(0). held is what the RDATA takes unpacked
// (Record.Held): its names as text, the octets before them (NAPTR's
// character-strings escaped) and after them as rdataHeld has them.
func rdataFits(msg []byte, r Record, seen *Labels) (res, held int) {
	switch r.Type {
	case TypeA:
		return fits(r.End-r.RdOff == 4), 4
	case TypeAAAA:
		return fits(r.End-r.RdOff == 16), 16
	}
	skip, names, rest, res := rdataLayout(msg, r)
	if res != read {
		return res, 0
	}
	if names == 0 {
		return read, rdataHeld(r.Type, msg[r.RdOff:r.End])
	}
	end, text, res := rdataNames(msg, r, skip, names, seen)
	if res != read {
		return res, 0
	}
	held = skip + text
	if r.Type == typeNAPTR {
		// ORDER, PREFERENCE, and three character-strings as text.
		strs, _, _ := stringsHeld(msg[r.RdOff+4 : r.RdOff+skip])
		held = 4 + strs + text
	}
	switch rest {
	case nameThen:
		return read, held + tailHeld(r.Type, msg[end:r.End])
	case soaTail:
		return fits(end == r.End-20), held + 20
	}
	return fits(end == r.End), held
}

// fits is read when ok, else unread.
func fits(ok bool) int {
	if ok {
		return read
	}
	return unread
}

// rdataNames reads names names of r's RDATA after skip octets, and returns
// where the last ends and their length as text (nameSpan); they must not
// leave the RDATA.
func rdataNames(msg []byte, r Record, skip, names int, seen *Labels) (end, text, res int) {
	off := r.RdOff + skip
	if off > r.End {
		return 0, 0, unread
	}
	for range names {
		end, n, res := nameSpan(msg[:r.End], off, seen)
		if res != read {
			return 0, 0, res
		}
		text += n
		off = end
	}
	return off, text, read
}

// Without is msg, which Walk reads through, without the records drop
// reports (the question stays), as a new message: every name of the
// records kept, their owners and the names in their RDATA that Walk reads
// (rdataLayout), is written out in full, since it may have pointed into a
// record left out. ok is false for a message Walk does not read, or one
// that would be longer than a message may be.
func Without(msg []byte, drop func(r Record) bool) (out []byte, ok bool) {
	q, ok := ReadQuestion(msg)
	if !ok {
		return nil, false
	}
	out = append(make([]byte, 0, len(msg)+64), msg[:q.End]...)
	var counts [4]uint16 // by section
	ok = Walk(msg, q.End, func(r Record) bool {
		if drop(r) {
			return true
		}
		var kept bool
		out, kept = appendRecord(out, msg, r)
		counts[r.Section]++
		return kept
	})
	if !ok || len(out) > 0xFFFF {
		return nil, false
	}
	for sec := Answer; sec <= Additional; sec++ {
		binary.BigEndian.PutUint16(out[4+2*sec:], counts[sec])
	}
	return out, true
}

// appendRecord appends the record r of msg to out, its names written out
// in full (Without).
func appendRecord(out, msg []byte, r Record) ([]byte, bool) {
	out, _, ok := appendName(out, msg, r.Off)
	if !ok {
		return out, false
	}
	out = append(out, msg[r.TTLOff-4:r.TTLOff+4]...) // TYPE, CLASS, TTL
	rdlen := len(out)
	out = append(out, 0, 0)
	skip, names, _, res := rdataLayout(msg, r)
	if res != read {
		return out, false
	}
	off := r.RdOff
	if names > 0 {
		out = append(out, msg[off:off+skip]...)
		off += skip
		for range names {
			if out, off, ok = appendName(out, msg[:r.End], off); !ok {
				return out, false
			}
		}
	}
	out = append(out, msg[off:r.End]...)
	n := len(out) - rdlen - 2
	binary.BigEndian.PutUint16(out[rdlen:], uint16(n))
	return out, n <= 0xFFFF
}

// appendName appends the name at off in msg, which Walk has read, to out
// without compression, following its pointers; end is where the name at
// off ends (after its first pointer, or its root label).
func appendName(out, msg []byte, off int) (_ []byte, end int, ok bool) {
	end = -1
	for range maxNameWire + maxPointers { // each step a label or a pointer
		if off >= len(msg) {
			return out, 0, false
		}
		c := int(msg[off])
		switch {
		case c == 0:
			if end < 0 {
				end = off + 1
			}
			return append(out, 0), end, true
		case c&0xC0 == 0xC0:
			if off+2 > len(msg) {
				return out, 0, false
			}
			if end < 0 {
				end = off + 2
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
		case c&0xC0 != 0 || off+1+c > len(msg):
			return out, 0, false
		default:
			out = append(out, msg[off:off+1+c]...)
			off += 1 + c
		}
	}
	return out, 0, false
}

// SOAMinimum is the MINIMUM field of the SOA record r (RFC 1035 §3.3.13),
// which Walk has checked: the last four octets of its RDATA.
func SOAMinimum(msg []byte, r Record) uint32 {
	return binary.BigEndian.Uint32(msg[r.End-4:])
}

// FindOPT is the offset in b, which has a header, of the first OPT record
// of its additional section, after the record's owner name (at its TYPE);
// ok is false when there is none, or b cannot be read so far. It reads only
// the names' lengths (a compression pointer ends a name: SkipName), the
// types and the RDATA lengths, so that it finds the OPT of a message that
// does not parse otherwise (an option's data, an unknown opcode's
// sections). The record's fixed fields (10 octets) are in b.
func FindOPT(b []byte) (off int, ok bool) {
	off, ok = SkipQuestions(b)
	if !ok {
		return 0, false
	}
	an, ns, ar := int(ANCount(b)), int(NSCount(b)), int(ARCount(b))
	for i := range an + ns + ar {
		if off, ok = SkipName(b, off); !ok || off+10 > len(b) {
			return 0, false
		}
		if i >= an+ns && binary.BigEndian.Uint16(b[off:]) == TypeOPT {
			return off, true
		}
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:]))
	}
	return 0, false
}

// SkipName returns the offset after the name at off in b, reading only
// its labels' lengths (a compression pointer ends a name); ok is false
// when b ends first or a length is of a reserved kind.
func SkipName(b []byte, off int) (end int, ok bool) {
	for off < len(b) {
		switch c := b[off]; {
		case c == 0:
			return off + 1, true
		case c&0xC0 == 0xC0: // a pointer ends the name
			return off + 2, off+2 <= len(b)
		case c&0xC0 != 0:
			return 0, false
		default:
			off += 1 + int(c)
		}
	}
	return 0, false
}

// SkipQuestions returns the offset after the question section of b, as
// QDCOUNT gives it; ok is false when b has no whole header, or ends before
// the last question's QTYPE and QCLASS do.
func SkipQuestions(b []byte) (end int, ok bool) {
	if len(b) < HeaderLen {
		return 0, false
	}
	off := HeaderLen
	for range QDCount(b) {
		if off, ok = SkipName(b, off); !ok || off+4 > len(b) {
			return 0, false
		}
		off += 4
	}
	return off, true
}

// RecordsWhole reports whether the message b holds every question its
// QDCOUNT counts and every record its ANCOUNT, NSCOUNT and ARCOUNT count,
// each whole (RFC 1035 §4.1.1), reading only the names' lengths, the fixed
// fields and RDLENGTH; false when b has no whole header. Octets after the
// last record are not looked at. miekg/dns stops reading records where
// the message ends, whatever the counts said, and returns no error: a
// query claiming an OPT (or any record) and ending before it parsed as one
// without, where NSD, Unbound and dnsdist answer FORMERR; and an upstream
// answer counting an A record and ending after its question parsed as
// NODATA, where Unbound's parser refuses it (FORMERR).
func RecordsWhole(b []byte) bool {
	off, ok := SkipQuestions(b)
	if !ok {
		return false
	}
	for range int(ANCount(b)) + int(NSCount(b)) + int(ARCount(b)) {
		if off, ok = SkipName(b, off); !ok || off+10 > len(b) {
			return false
		}
		if off += 10 + int(binary.BigEndian.Uint16(b[off+8:])); off > len(b) {
			return false
		}
	}
	return true
}

// WithoutOptions is a copy of the message b whose first OPT record keeps
// only the options keep takes (given each option's code and data), in
// their order; an OPT of a VERSION other than 0 keeps none, its options
// being that version's, which dnsfence does not read (RFC 6891 §6.1.3).
// ok is false when b has no OPT record, or its RDATA is not made of whole
// options or ends past b (miekg/dns refuses those, and so does dnsfence).
//
// miekg/dns refuses a whole message for the data of an option it knows
// and dnsfence may not read (an LLQ, UPDATE-LEASE, EXPIRE, Extended DNS
// Error, Report-Channel or ZONEVERSION option of a length or form other
// than its RFC's, an edns-tcp-keepalive of one octet), where RFC 6891
// §6.1.2 has a responder and a requestor alike ignore an option they do
// not understand: a query (listen's unpackQuery) or an upstream's answer
// (upstream.UnpackAnswer) that does not parse as it is is parsed again
// from this copy, without the options it is not read for.
func WithoutOptions(b []byte, keep func(code uint16, data []byte) bool) (rest []byte, ok bool) {
	off, ok := FindOPT(b)
	if !ok {
		return nil, false
	}
	start := off + 10 // the RDATA: after TYPE, CLASS, TTL and RDLENGTH
	end := start + int(binary.BigEndian.Uint16(b[off+8:]))
	if end > len(b) {
		return nil, false
	}
	version := b[off+5] // after TYPE, CLASS and EXTENDED-RCODE
	rest = append(make([]byte, 0, len(b)), b[:start]...)
	for rdata := b[start:end]; len(rdata) > 0; {
		code, data, after, whole := NextOption(rdata)
		if !whole {
			return nil, false
		}
		if version == 0 && keep(code, data) {
			rest = append(rest, rdata[:len(rdata)-len(after)]...)
		}
		rdata = after
	}
	binary.BigEndian.PutUint16(rest[off+8:], uint16(len(rest)-start))
	return append(rest, b[end:]...), true
}

// HasOption reports whether the message b carries the EDNS option code in
// its first OPT record, of any version, whatever its data, even one its
// RDATA cuts short: read from the octets, for an option whose presence
// alone matters (the edns-tcp-keepalive over DNS over QUIC, RFC 9250
// §5.5.2; the Padding of a query rejected unparsed, RFC 7830 §3), which a
// parsed message need not hold (WithoutOptions).
func HasOption(b []byte, code uint16) bool {
	rdata, _, ok := OPTData(b)
	for ok && len(rdata) >= 4 {
		if binary.BigEndian.Uint16(rdata) == code {
			return true
		}
		_, _, rdata, ok = NextOption(rdata)
	}
	return false
}

// OPTData is the RDATA of the first OPT record of b (FindOPT), cut where
// b ends if its RDLENGTH runs past that, and the record's VERSION; ok is
// false when b has no OPT record. NextOption reads the options from it.
func OPTData(b []byte) (rdata []byte, version uint8, ok bool) {
	off, ok := FindOPT(b)
	if !ok {
		return nil, 0, false
	}
	start := off + 10 // the RDATA: after TYPE, CLASS, TTL and RDLENGTH
	end := min(start+int(binary.BigEndian.Uint16(b[off+8:])), len(b))
	return b[start:end], b[off+5], true // VERSION: after TYPE, CLASS and EXTENDED-RCODE
}

// NextOption splits the first EDNS option off rdata, an OPT record's
// RDATA or what is left of it: its OPTION-CODE, its OPTION-DATA and the
// options after it (RFC 6891 §6.1.2). ok is false when rdata does not
// begin with a whole option: fewer than 4 octets, or an OPTION-LENGTH
// running past rdata.
func NextOption(rdata []byte) (code uint16, data, rest []byte, ok bool) {
	if len(rdata) < 4 {
		return 0, nil, nil, false
	}
	n := 4 + int(binary.BigEndian.Uint16(rdata[2:]))
	if n > len(rdata) {
		return 0, nil, nil, false
	}
	return binary.BigEndian.Uint16(rdata), rdata[4:n], rdata[n:], true
}
