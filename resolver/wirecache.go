package resolver

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/miekg/dns"
)

// wireAnswer is a cached answer in wire form, so that a cache hit is a copy
// and a few patches (ID, flags, the question's spelling, TTLs, OPT) instead
// of a deep copy and a pack. It is made once, when the answer is cached;
// answers it cannot express (with upstream EDNS options or an extended
// RCODE) have none and take the general path.
type wireAnswer struct {
	wire     []byte   // compressed, no OPT, ID 0
	ttlOffs  []int    // offset of every record's TTL
	ttls     []uint32 // the TTL each had
	qnameEnd int      // end of the question name
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
	w := &wireAnswer{wire: wire}
	off, ok := skipName(wire, 12)
	if !ok {
		return nil
	}
	w.qnameEnd = off
	off += 4 // type, class
	records := int(binary.BigEndian.Uint16(wire[6:])) + int(binary.BigEndian.Uint16(wire[8:])) + int(binary.BigEndian.Uint16(wire[10:]))
	for i := 0; i < records; i++ {
		if off, ok = skipName(wire, off); !ok || off+10 > len(wire) {
			return nil
		}
		w.ttlOffs = append(w.ttlOffs, off+4)
		w.ttls = append(w.ttls, binary.BigEndian.Uint32(wire[off+4:]))
		off += 10 + int(binary.BigEndian.Uint16(wire[off+8:]))
	}
	if off != len(wire) {
		return nil
	}
	return w
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, bool) {
	for off < len(b) {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, true
		case l&0xC0 == 0xC0:
			return off + 2, off+2 <= len(b)
		case l&0xC0 != 0:
			return 0, false
		default:
			off += 1 + l
		}
	}
	return 0, false
}

// appendCached writes the client's answer from a cached entry: the header
// by replyHeader, TTLs aged as cacheEntry.aged does, and our OPT (buffer 1232, the client's DO bit) when the query had
// EDNS. It reports false when the general path must answer instead (the
// answer would not fit maxSize).
func appendCached(b []byte, e *cacheEntry, req *dns.Msg, now time.Time, maxSize int) ([]byte, bool) {
	w := e.wireForm()
	b = append(b[:0], w.wire...)
	cached := binary.BigEndian.Uint16(w.wire[2:])
	hdr := dns.MsgHdr{Rcode: int(cached & 0xF)}
	replyHeader(req, &hdr, cached&flagAD != 0)
	binary.BigEndian.PutUint16(b[0:], hdr.Id)
	binary.BigEndian.PutUint16(b[2:], headerFlags(&hdr))
	// The cached question's spelling must be the client's: records compress
	// their names against it, so it cannot be rewritten in place. A client
	// spelling the name otherwise (DNS 0x20) takes the general path.
	var scratch [256]byte
	if n, err := dns.PackDomainName(req.Question[0].Name, scratch[:], 0, nil, false); err != nil ||
		!bytes.Equal(scratch[:n], w.wire[12:w.qnameEnd]) {
		return b, false
	}
	elapsed := uint32(now.Sub(e.stored) / time.Second)
	life := uint32(e.ttl / time.Second)
	for i, off := range w.ttlOffs {
		t := min(max(w.ttls[i], e.minTTL), e.maxTTL, life)
		if t > elapsed {
			t -= elapsed
		} else {
			t = 0
		}
		binary.BigEndian.PutUint32(b[off:], t)
	}
	if opt := req.IsEdns0(); opt != nil {
		b = append(b, 0) // root
		b = binary.BigEndian.AppendUint16(b, dns.TypeOPT)
		b = binary.BigEndian.AppendUint16(b, ednsSize)
		var ttlFlags uint32
		if opt.Do() {
			ttlFlags |= 1 << 15
		}
		b = binary.BigEndian.AppendUint32(b, ttlFlags)
		b = binary.BigEndian.AppendUint16(b, 0)
		binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
	}
	return b, len(b) <= maxSize
}
