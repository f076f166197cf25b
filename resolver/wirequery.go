package resolver

import (
	"encoding/binary"
	"sync"
	"unsafe"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
)

// The wire path: a UDP query is read from its bytes (header, question,
// OPT) and, when it has the common shape, decided, answered from the cache
// or blocked, and forwarded without a dns.Msg ever being built for it, as
// dnsdist forwards. Everything else (other transports, other opcodes or
// classes, an ECS option a trusted proxy sent, a name with octets that
// need escapes, any message that is not plainly one question with at most
// an OPT) is left to the listener, which parses it and takes the message
// path; the two give the same answers (TestWirePathMatchesMessagePath).

// maxWireQuery is the largest query the wire path takes, in octets: a
// question of 255 octets, a header and an OPT with a little room for
// options fit. A larger query takes the message path.
const maxWireQuery = 512

// wireQuery is a query read from the wire: ok when the query came that
// way.
type wireQuery struct {
	ok bool
	// b is the datagram: the listener's buffer while the query is decided
	// inline, a copy of its own once it leaves for an upstream (own).
	b      []byte
	q      dnswire.Question
	flags  uint16
	edns   bool
	do     bool
	size   uint16 // the OPT's UDP payload size
	ecs    bool   // the OPT holds an EDNS Client Subnet option
	qtype  uint16
	qclass uint16
	// name is QNAME in presentation form, lowercase: in a pooled buffer
	// (names) while the query is decided inline, a string of its own
	// once it leaves (own). It is the name decided and the cache key's.
	name string
}

// nameBufs holds the buffers of the names of queries decided inline, so
// that deciding one allocates nothing.
var nameBufs = sync.Pool{New: func() any { return new([maxNameText]byte) }}

// maxNameText is the longest QNAME the wire path writes as text: 255
// octets on the wire are at most 254 characters with the trailing dot.
const maxNameText = 256

// readWireQuery reads b as a query for the wire path; ok is false for
// anything it does not take. The name is written lowercase into buf and
// points there.
func readWireQuery(b []byte, buf *[maxNameText]byte) (wq wireQuery, ok bool) {
	if len(b) < dnswire.HeaderLen || len(b) > maxWireQuery {
		return wq, false
	}
	flags := dnswire.Flags(b)
	// A query (QR clear) of opcode QUERY with one question, nothing in
	// the answer and authority sections, and at most the OPT after it.
	if flags&(dnswire.FlagQR|0x7800) != 0 || dnswire.QDCount(b) != 1 || dnswire.ANCount(b) != 0 ||
		dnswire.NSCount(b) != 0 || dnswire.ARCount(b) > 1 {
		return wq, false
	}
	q, ok := dnswire.ReadQuestion(b)
	if !ok || q.Class != dns.ClassINET {
		return wq, false // CHAOS (explain) and other classes: the message path
	}
	if MetaQType(q.Type) || q.Type == dns.TypeAXFR || q.Type == dns.TypeIXFR {
		return wq, false // refused or FORMERR: the message path says which
	}
	wq = wireQuery{ok: true, b: b, q: q, flags: flags, qtype: q.Type, qclass: q.Class}
	off := q.End
	if dnswire.ARCount(b) == 1 {
		// The OPT record (RFC 6891 §6.1.2): the root, TYPE 41, the UDP
		// size, extended RCODE, version 0 (else BADVERS: the message
		// path), the DO bit, and options.
		if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT || b[off+6] != 0 {
			return wq, false
		}
		wq.edns = true
		wq.size = binary.BigEndian.Uint16(b[off+3:])
		wq.do = b[off+7]&0x80 != 0
		end := off + 11 + int(binary.BigEndian.Uint16(b[off+9:]))
		if end != len(b) {
			return wq, false
		}
		for o := off + 11; o < end; {
			if o+4 > end {
				return wq, false
			}
			code, n := binary.BigEndian.Uint16(b[o:]), int(binary.BigEndian.Uint16(b[o+2:]))
			if o+4+n > end || !plainOption(code, b[o+4:o+4+n]) {
				return wq, false
			}
			wq.ecs = wq.ecs || code == dns.EDNS0SUBNET
			o += 4 + n
		}
	} else if off != len(b) {
		return wq, false
	}
	// The name as text: labels of letters, digits, '-' and '_' only, so
	// that the text is the octets (no escapes) and lowercasing it is
	// folding it (RFC 4343).
	n := 0
	for o := dnswire.HeaderLen; b[o] != 0; o += 1 + int(b[o]) {
		for _, c := range b[o+1 : o+1+int(b[o])] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return wireQuery{}, false
			}
			buf[n] = c
			n++
		}
		buf[n] = '.'
		n++
	}
	if n == 0 {
		buf[0] = '.'
		n = 1
	}
	// The string lives in buf, which the caller holds until the query has
	// been answered inline or has made a name of its own (own).
	wq.name = unsafe.String(&buf[0], n)
	return wq, true
}

// plainOption reports whether a query's EDNS option of code with data is
// one miekg/dns unpacks whatever its data (padding, NSID, the DNSSEC
// algorithm lists), or a well-formed cookie or Client Subnet
// (dnswire.OptionSound): options the wire path ignores, as the message
// path does, knowing that the listener would not have answered FORMERR
// for them. Any other option takes the message path.
func plainOption(code uint16, data []byte) bool {
	switch code {
	case dns.EDNS0PADDING, dns.EDNS0NSID, dns.EDNS0DAU, dns.EDNS0DHU, dns.EDNS0N3U:
		return true
	case dns.EDNS0COOKIE, dns.EDNS0SUBNET:
		return dnswire.OptionSound(code, data)
	}
	return false
}

// asked is what the query's answer takes from it.
func (wq *wireQuery) asked() asked {
	return asked{
		id: dnswire.ID(wq.b), opcode: dns.OpcodeQuery,
		rd: wq.flags&dnswire.FlagRD != 0, cd: wq.flags&dnswire.FlagCD != 0, ad: wq.flags&dnswire.FlagAD != 0,
		edns: wq.edns, do: wq.do,
		qnameWire: wq.b[dnswire.HeaderLen:wq.q.NameEnd], qtype: wq.qtype, qclass: wq.qclass,
	}
}

// key is the query's cache key, as keyOf makes it.
func (wq *wireQuery) key() cacheKey {
	return newCacheKey(wq.name, wq.qtype, wq.qclass, wq.do, wq.flags&dnswire.FlagCD != 0, wq.flags&dnswire.FlagRD != 0)
}

// maxSize is clientSize for the query.
func (wq *wireQuery) maxSize() int {
	size := dns.MinMsgSize
	if wq.edns {
		size = max(int(wq.size), dns.MinMsgSize)
	}
	return min(size, ednsSize)
}

// own gives the query copies of its own of the datagram and the name, for
// when it leaves the listener's hands (resume), and returns the query to
// send upstream (upstreamQuery), made after them: all three in buf when
// they fit, else in one new allocation. The name then lives in buf's
// memory (wireLeft.mem): what keeps it longer than the query, a cache
// key stored (Cache.put, Cache.putWire) or a prefetch, copies it.
func (wq *wireQuery) own(buf []byte) (upq []byte) {
	need := len(wq.b) + len(wq.name) + wq.q.End + 11
	mem := buf[:0]
	if need > cap(buf) {
		mem = make([]byte, 0, need)
	}
	mem, wq.b, wq.name = appendOwned(mem, wq.b, wq.name)
	return wq.upstreamQuery(mem[len(mem):len(mem):need])
}

// upstreamQuery writes into b the query upstream.Forwarder.ForwardWire
// sends for this one (upstreamQuery's, in wire form): ID 0 (the transport
// sets its own), RD and CD as the client set them, AD, the question as
// asked, and an OPT of our buffer size with the client's DO bit and no
// option: Client Subnet, cookies and padding belong to the client's hop.
func (wq *wireQuery) upstreamQuery(b []byte) []byte {
	flags := wq.flags&(dnswire.FlagRD|dnswire.FlagCD) | dnswire.FlagAD
	b = append(b, 0, 0, byte(flags>>8), byte(flags), 0, 1, 0, 0, 0, 0, 0, 1)
	b = append(b, wq.b[dnswire.HeaderLen:wq.q.End]...)
	var do byte
	if wq.do {
		do = 0x80
	}
	return append(b, 0, 0, byte(dns.TypeOPT), byte(ednsSize>>8), byte(ednsSize&0xFF), 0, 0, do, 0, 0, 0)
}

// request is the query as a message: the one it came as, or the datagram
// of a wire query unpacked at the first need (an answer the wire path does
// not pack: a refusal, a blocked answer of another action, a failure).
func (q *query) request() *dns.Msg {
	if q.req == nil {
		m := new(dns.Msg)
		if err := m.Unpack(q.wire.b); err != nil {
			// readWireQuery read it through: this cannot happen.
			panic("unpacking a query the wire path read: " + err.Error())
		}
		q.req = m
	}
	return q.req
}

// asked is what q's answer takes from it.
func (q *query) asked() asked {
	if q.req == nil {
		return q.wire.asked()
	}
	return askedOf(q.req)
}

// ServeWire is the wire path's way in (listen.WireHandler): it answers a
// UDP query of the common shape from its bytes, as ServeInline would, and
// leaves anything else to the listener (handled false).
func (h *Handler) ServeWire(w listen.ResponseWriter, b []byte) (resume func(), handled bool) {
	if w.Transport() != listen.UDP {
		return nil, false
	}
	snap := h.state.Load()
	if snap == nil {
		return nil, false
	}
	memo := memoOf(w)
	if memo != nil && len(b) >= dnswire.HeaderLen && len(b) <= maxWireQuery {
		if source, ok := memoSource(w); ok {
			if e := memo.find(snap, source, b); e != nil {
				if h.serveRecalled(w, b, snap, e) {
					return nil, true
				}
				// A cache hit whose cache entry is no longer served as it
				// was kept: forgotten, so that the memo does not hold what
				// the cache let go, and the query read and answered as any
				// is, whose answer is kept in the entry's place.
				memo.drop(source, b)
			}
		}
	}
	buf := nameBufs.Get().(*[maxNameText]byte)
	defer nameBufs.Put(buf)
	wq, ok := readWireQuery(b, buf)
	if !ok {
		return nil, false
	}
	id, believeECS := peerIdentity(snap, w)
	if believeECS && wq.ecs {
		return nil, false // the client is the one ECS names: the message path reads it
	}
	return h.serveWire(query{w: w, transport: listen.UDP, wire: wq, snap: snap, id: id, memo: memo})
}

// serveWire is ServeWire's for the wire query q: answered inline, or
// left to wait on an upstream.
func (h *Handler) serveWire(q query) (resume func(), handled bool) {
	if !h.serveInline(&q) {
		return nil, true
	}
	p := leave(q)
	if h.startWire(p) {
		return nil, true
	}
	if !h.startWaiting(p) {
		p.left.release()
		return nil, true
	}
	return func() {
		defer h.waiting.Add(-1)
		defer p.left.release()
		h.resume(p, false)
	}, true
}

// leave is a wire query that waits on an upstream, off the stack: only
// such a query leaves it, with its own copies of what the listener and the
// pool will reuse, and the decision remade on them (its entry points into
// the name).
func leave(q query) *query {
	l := leftPool.Get().(*wireLeft)
	l.query = q
	l.refs.Store(1)
	p := &l.query
	p.left = l
	p.memo = nil // the loop's, which it leaves
	l.upq = p.wire.own(l.mem[:])
	p.out = p.snap.decide(p.id.Source, p.id.Client, p.wire.name)
	p.key.name = p.wire.name
	return p
}
