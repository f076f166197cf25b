package resolver

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// wireAnswer is a cached answer in wire form, so that a cache hit is a copy
// and a few patches (ID, flags, TTLs, OPT) instead of a deep copy and a
// pack. An answer forwarded in wire form has it from the start (wireOf);
// one cached as a message gets it at its first hit (makeWire). Answers it
// cannot express (with upstream EDNS options or an extended RCODE) have
// none and take the general path.
type wireAnswer struct {
	wire     []byte  // as received or packed (compressed), without OPT, ID 0
	ttls     []ttlAt // every record's TTL
	qnameEnd int     // end of the question name
	// qnameOnly: every record of the answer section is owned by the
	// question name and is no alias (CNAME, DNAME, HTTPS, SVCB), the
	// authority section holds nothing but an SOA and DNSSEC denial of
	// existence, and RRSIGs over them (proofType, wireRRsetType), and the
	// additional section nothing but the OPT, so the answer points the client at no name but the one it
	// asked for, which was decided already: inspecting it (chainDecision)
	// cannot block it, nor scrub leave anything out.
	qnameOnly bool
	// edes are the upstream's Extended DNS Errors (EDNS options, each its
	// code, length and data), passed on after the client's OPT: set only
	// for an answer miekg/dns does not read (Cache.putUnread); any other
	// answer with options takes the general path.
	edes []byte
	// inline holds ttls for the commonest answers, of a few records.
	inline [4]ttlAt
}

// ttlAt is a record's TTL as cached, and where it is in the wire form.
type ttlAt struct {
	off int32
	ttl uint32
}

// makeWire packs m for the wire cache; nil when it cannot be used.
func makeWire(m *dns.Msg) *wireAnswer {
	if m.Rcode > 0xF || len(m.Question) != 1 {
		return nil
	}
	c := *m // shallow: only Extra and Id change, in the copy
	c.Id = 0
	c.Extra = nil
	for _, rr := range m.Extra {
		if opt, ok := rr.(*dns.OPT); ok {
			if len(opt.Option) > 0 {
				return nil // upstream EDEs and the like: the general path keeps them
			}
			continue
		}
		c.Extra = append(c.Extra, rr)
	}
	c.Compress = true
	wire, err := c.Pack()
	if err != nil {
		return nil
	}
	w := new(wireAnswer)
	if _, ok := wireOf(wire, w); !ok {
		return nil
	}
	return w
}

// wireShape is what the cache needs to know of an answer in wire form to
// decide how long it may be kept (cacheTTL's inputs).
type wireShape struct {
	rcode     int
	truncated bool
	relevant  bool   // the answer section holds a record of the type asked (dnswire.Answers)
	minTTL    uint32 // the smallest TTL of the records, OPT aside; ^0 for none
	soa       bool   // the authority section holds an SOA: soaTTL is the smaller of its TTL and MINIMUM
	soaTTL    uint32
	// dnssec: the answer holds a DNSSEC record that a query without the
	// DO bit must not get (dnssecRecord).
	dnssec bool
	// footprint is the heap the answer takes as a message (footprint),
	// its OPT aside: the header and the question as their octets, each
	// record's dnswire.Record.Held, and recordOverhead a record.
	footprint int
}

// wireOf reads the answer b (a datagram or a packed message with one
// question) into w for the wire cache: its OPT record, which must be the
// last record and carry no option and no extended RCODE, is cut off (the
// client gets its own), and the ID zeroed; b itself is reused. ok is false
// for an answer the wire cache cannot hold, or that dnswire cannot read.
func wireOf(b []byte, w *wireAnswer) (wireShape, bool) {
	var sh wireShape
	if len(b) < dnswire.HeaderLen || dnswire.QDCount(b) != 1 {
		return sh, false
	}
	q, ok := dnswire.ReadQuestion(b)
	if !ok {
		return sh, false
	}
	flags := dnswire.Flags(b)
	sh.rcode, sh.truncated, sh.minTTL = int(flags&0xF), flags&dnswire.FlagTC != 0, ^uint32(0)
	records := int(dnswire.ANCount(b)) + int(dnswire.NSCount(b)) + int(dnswire.ARCount(b))
	w.qnameEnd, w.qnameOnly, w.ttls = q.NameEnd, true, w.inline[:0]
	if records > len(w.inline) {
		w.ttls = make([]ttlAt, 0, records)
	}
	qname := b[dnswire.HeaderLen:q.NameEnd]
	sh.footprint = q.End // the header and the question, uncompressed
	opt := -1            // where the OPT record starts
	ok = dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		if opt >= 0 {
			return false // a record after the OPT
		}
		if r.Type == dnswire.TypeOPT {
			// Only in the additional section, with no option and no
			// extended RCODE (RFC 6891 §6.1.3).
			if r.Section != dnswire.Additional || r.End != r.RdOff || b[r.TTLOff] != 0 {
				return false
			}
			opt = r.Off
			return true
		}
		w.ttls = append(w.ttls, ttlAt{off: int32(r.TTLOff), ttl: r.TTL})
		sh.footprint += r.Held + recordOverhead
		sh.dnssec = sh.dnssec || dnssecRecord(r.Type, q.Type, r.Section)
		sh.minTTL = min(sh.minTTL, receivedTTL(r.TTL))
		if r.Section == dnswire.Answer {
			sh.relevant = sh.relevant || dnswire.Answers(q.Type, r.Type)
			if w.qnameOnly {
				w.qnameOnly = !aliasType(r.Type) && ownedBy(b, r, qname)
			}
		} else if r.Section == dnswire.Additional || !proofType(wireRRsetType(b, r)) {
			w.qnameOnly = false // a record scrub may leave out
		}
		if r.Section == dnswire.Authority && r.Type == dnswire.TypeSOA && !sh.soa {
			sh.soa, sh.soaTTL = true, min(receivedTTL(r.TTL), dnswire.SOAMinimum(b, r))
		}
		return true
	})
	if !ok {
		return sh, false
	}
	if opt >= 0 {
		b = b[:opt]
		binary.BigEndian.PutUint16(b[10:], dnswire.ARCount(b)-1)
	}
	binary.BigEndian.PutUint16(b, 0)
	w.wire = b
	return sh, true
}

// wireRRsetType is rrsetType for the record r of b: the type an RRSIG
// covers, the first octets of its RDATA; 0 for one too short to say.
func wireRRsetType(b []byte, r dnswire.Record) uint16 {
	if r.Type != dns.TypeRRSIG {
		return r.Type
	}
	if r.End-r.RdOff < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(b[r.RdOff:])
}

// aliasType reports the types whose target aliasTarget follows.
func aliasType(t uint16) bool {
	return t == dns.TypeCNAME || t == dns.TypeDNAME || t == dns.TypeHTTPS || t == dns.TypeSVCB
}

// ownedBy reports whether the record r of b is owned by the question name
// qname: a pointer to it, or the same octets (RFC 4343: without case).
func ownedBy(b []byte, r dnswire.Record, qname []byte) bool {
	if binary.BigEndian.Uint16(b[r.Off:]) == 0xC000|dnswire.HeaderLen {
		return true
	}
	end := r.Off + len(qname)
	return end <= len(b) && dnswire.EqualFold(b[r.Off:end], qname) && r.TTLOff-4 == end
}

// cacheTTL is cacheTTL (cache.go) for an answer read by wireOf.
func (sh *wireShape) cacheTTL(minTTL, maxTTL uint32) (time.Duration, bool) {
	ttl := sh.minTTL
	if sh.soa {
		ttl = min(ttl, sh.soaTTL)
	}
	return answerLifetime(sh.rcode, sh.relevant, ttl, sh.soa, minTTL, maxTTL)
}

// appendCached writes into b the answer from the entry e to the query read
// as a: the header by replyHeader, TTLs aged to now as cacheEntry.aged
// ages them, and our OPT (buffer 1232, the client's DO bit) when the query
// had EDNS. It reports false when the general path must answer instead:
// the client spells the name otherwise (and e has a message to build the
// answer from), or the answer would not fit maxSize (octets).
func (a *asked) appendCached(b []byte, e *cacheEntry, now time.Time, maxSize int) ([]byte, bool) {
	w := e.wireForm()
	b = append(b[:0], w.wire...)
	cached := binary.BigEndian.Uint16(w.wire[2:])
	hdr := dns.MsgHdr{Rcode: int(cached & 0xF)}
	a.replyHeader(&hdr, cached&dnswire.FlagAD != 0)
	binary.BigEndian.PutUint16(b[0:], hdr.Id)
	binary.BigEndian.PutUint16(b[2:], headerFlags(&hdr))
	// The cached question's spelling must be the client's: records compress
	// their names against it, so it is not rewritten in place. A client
	// spelling the name otherwise (DNS 0x20) takes the general path, which
	// builds the answer as a message, unless the entry has none (an answer
	// miekg/dns does not unpack): its question is then rewritten in place,
	// the same octets but for their case, and the names compressed against
	// it read in the client's spelling too (names compare without case,
	// RFC 4343).
	qname := w.wire[dnswire.HeaderLen:w.qnameEnd]
	asked := a.qnameWire
	if asked == nil {
		var scratch [256]byte // zeroed only here: a UDP hit has qnameWire
		n, err := dns.PackDomainName(a.qname, scratch[:], 0, nil, false)
		if err != nil {
			return b, false
		}
		asked = scratch[:n]
	}
	if !bytes.Equal(asked, qname) {
		if !dnswire.EqualFold(asked, qname) || e.message() != nil {
			return b, false
		}
		copy(b[dnswire.HeaderLen:], asked)
	}
	elapsed := uint32(max(now.Sub(e.stored), 0) / time.Second)
	for _, t := range w.ttls {
		binary.BigEndian.PutUint32(b[t.off:], e.ttlAt(t.ttl, elapsed))
	}
	if a.edns {
		b = appendOption(a.appendOPT(b, 0, 0), w.edes)
	}
	return b, len(b) <= maxSize
}

// truncatedCached cuts b, the answer appendCached packed from e to the
// query read as a, to its header and question, with TC set and no record
// but our OPT (when the query had EDNS): the answer to a UDP client too
// small for it when e holds no message to fit to the client record by
// record (cacheEntry.message: an answer miekg/dns does not unpack). The
// client asks again over TCP (RFC 1035 §4.2.1, RFC 2181 §9), and gets it
// whole, as dnsdist truncates an answer it cannot fit. The OPT carries the
// client's Client Subnet echo (appendECSEcho, ecs) and the upstream's
// Extended DNS Errors (wireAnswer.edes), fitted to the client's limit as
// a message's are (shrinkOPT): their texts go first, then they. An
// upstream's EDE text can alone be larger than the client's size.
func (a *asked) truncatedCached(b []byte, e *cacheEntry, ecs *dns.EDNS0_SUBNET, limit int) []byte {
	b = b[:e.wireForm().qnameEnd+4] // the question: its name, type and class
	binary.BigEndian.PutUint16(b[2:], binary.BigEndian.Uint16(b[2:])|dnswire.FlagTC)
	clear(b[6:dnswire.HeaderLen]) // no answer, authority or additional record
	if !a.edns {
		return b
	}
	question, edes := len(b), e.wireForm().edes
	for _, options := range [][]byte{edes, appendEDECodes(nil, edes), nil} {
		if b = appendECSEcho(appendOption(a.appendOPT(b[:question], 0, 0), options), ecs); len(b) <= limit {
			break
		}
	}
	return b
}

// withoutEDETexts cuts every Extended DNS Error in the OPT record that
// ends b (an answer packed from a cache entry: appendCached, staleCached,
// appendECSEcho) to its INFO-CODE, in place, the other options as they
// are (appendEDECodes): b as truncate leaves an answer's texts out before
// any of its records (RFC 8914 §2: for people, not for resolution). b as
// it is when it ends in no OPT record.
func withoutEDETexts(b []byte) []byte {
	off, ok := dnswire.FindOPT(b) // at its TYPE
	if !ok {
		return b
	}
	rdata := off + 10
	if rdata+int(binary.BigEndian.Uint16(b[off+8:])) != len(b) {
		return b
	}
	b = appendEDECodes(b[:rdata], bytes.Clone(b[rdata:]))
	binary.BigEndian.PutUint16(b[off+8:], uint16(len(b)-rdata))
	return b
}

// appendEDECodes appends to dst the EDNS options of options (an OPT
// record's RDATA, or a run of it) with every Extended DNS Error cut to its
// 2-octet INFO-CODE, its text left out (RFC 8914 §2), every other option
// as it is; a tail that is no whole option is appended as it is (those
// appendOPT's callers write are whole). options must not share memory
// with dst's room.
func appendEDECodes(dst, options []byte) []byte {
	for len(options) > 0 {
		code, data, rest, ok := dnswire.NextOption(options)
		if !ok {
			return append(dst, options...)
		}
		if code == dns.EDNS0EDE && len(data) > 2 {
			data = data[:2]
		}
		dst = binary.BigEndian.AppendUint16(dst, code)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(data)))
		dst = append(dst, data...)
		options = rest
	}
	return dst
}

// appendECSEcho adds to b, an answer packed from a cache entry ending in
// our OPT (appendCached, truncatedCached), the Client Subnet option
// echoECS adds to an answer built as a message (RFC 7871 §7.2.1), packed
// as miekg/dns packs that one; b as it is for a query of no Client Subnet
// (ecs nil). Only an answer miekg/dns does not unpack, which has no
// message to add it to, is packed for a query with one.
func appendECSEcho(b []byte, ecs *dns.EDNS0_SUBNET) []byte {
	if ecs == nil {
		return b
	}
	m := new(dns.Msg)
	m.SetEdns0(ednsSize, false)
	echoECS(m, ecs, false)
	packed, err := m.Pack()
	if err != nil {
		return b
	}
	return appendOption(b, packed[dnswire.HeaderLen+11:]) // after the header and the OPT's fixed fields
}

// staleCached makes b, the answer appendCached packed from e to the query
// read as a, a stale one, as Cache.stale and forwarded make one from a
// message: every TTL 30 and, when the query had EDNS, EDE 3 "Stale
// Answer", or 19 "Stale NXDOMAIN Answer" for an NXDOMAIN (RFC 8767 §4,
// RFC 8914 §4.4, §4.20).
func (a *asked) staleCached(b []byte, e *cacheEntry) []byte {
	for _, t := range e.wireForm().ttls {
		binary.BigEndian.PutUint32(b[t.off:], staleTTL)
	}
	if !a.edns {
		return b
	}
	option := binary.BigEndian.AppendUint16(nil, dns.EDNS0EDE)
	option = binary.BigEndian.AppendUint16(option, uint16(2+len(staleText)))
	option = binary.BigEndian.AppendUint16(option, staleEDE(e.rcode))
	return appendOption(b, append(option, staleText...))
}

// appendOption adds the EDNS option (its code, length and data; or
// several, one after the other) to b's OPT record, the last record of b;
// b as it is when it has none there, or option is empty.
func appendOption(b, option []byte) []byte {
	if len(option) == 0 {
		return b
	}
	off, ok := dnswire.FindOPT(b) // at its TYPE
	if !ok || off+10+int(binary.BigEndian.Uint16(b[off+8:])) != len(b) {
		return b
	}
	binary.BigEndian.PutUint16(b[off+8:], binary.BigEndian.Uint16(b[off+8:])+uint16(len(option)))
	return append(b, option...)
}
