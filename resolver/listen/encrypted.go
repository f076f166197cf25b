package listen

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// ResultBadRequest is the Counter result of a request an encrypted
// listener refuses without any DNS answer: an HTTP 4xx from the DoH
// listener (no or bad dns=, wrong content type, body too large, wrong
// method), a DoQ stream closed with DOQ_PROTOCOL_ERROR.
const ResultBadRequest = "bad_request"

// Counter results of queries a listener answers itself, as the TCP and
// UDP listeners count them.
const (
	resultFormerr = "formerr"
	resultNotimp  = "notimp"
)

// msgHeaderSize is the size of the DNS message header (RFC 1035 §4.1.1).
const msgHeaderSize = 12

// responsePaddingBlock is the block size responses to padded queries are
// padded to (RFC 8467 §4.1, Block-Length Padding, recommended 468).
const responsePaddingBlock = 468

// queryCheck is what a stream listener makes of a message before the
// Handler sees it.
type queryCheck struct {
	req    *dns.Msg // a query for the Handler, or nil
	reject *dns.Msg // a FORMERR or NOTIMP reply the listener sends itself, or nil
	result string   // the Counter result of reject, or of refusing (neither set)
}

// checkQuery applies to a DoH or DoQ message the rules the UDP and TCP
// listeners apply before the Handler (DESIGN.md §1 step 1): no full
// header, or QR set (an answer, not a query): refused, result
// ResultBadRequest (the caller answers HTTP 400, or closes the DoQ
// connection with DOQ_PROTOCOL_ERROR); an opcode the Handler does not
// answer (handledOpcode): NOTIMP; a question count other than one (in
// the header or in fact), or a body that does not parse: FORMERR; either
// of the first two BADVERS when the OPT record is of a VERSION other
// than 0 (headerReject). A
// NOTIMP or FORMERR to a message with an OPT record carries one, as
// AcceptMessage's do (RFC 6891 §7).
func checkQuery(b []byte) queryCheck {
	if len(b) < msgHeaderSize {
		return queryCheck{result: ResultBadRequest}
	}
	bits := binary.BigEndian.Uint16(b[2:])
	qdcount := binary.BigEndian.Uint16(b[4:])
	const qr = 1 << 15
	if bits&qr != 0 {
		return queryCheck{result: ResultBadRequest}
	}
	reply := func(rcode int, result string) queryCheck {
		return queryCheck{reject: rejectReply(b, rcode), result: result}
	}
	header := func(rcode int, result string) queryCheck {
		chk := queryCheck{reject: headerReject(b, rcode), result: result}
		if chk.reject.Rcode == dns.RcodeBadVers {
			chk.result = ResultBadvers
		}
		return chk
	}
	if !handledOpcode(dnswire.Opcode(bits)) {
		return header(dns.RcodeNotImplemented, resultNotimp)
	}
	if qdcount != 1 || tooManyRecords(dnswire.ANCount(b), dnswire.NSCount(b), dnswire.ARCount(b)) {
		return header(dns.RcodeFormatError, resultFormerr)
	}
	// miekg/dns stops reading questions where the message ends, whatever
	// QDCOUNT said: a header claiming one question and none after it
	// parses with none, one cut short after its name or QTYPE parses
	// with QTYPE or QCLASS 0, and one whose name is a pointer reads
	// another name (questionSound); so it stops reading records too
	// (dnswire.RecordsWhole); and it takes options RFCs make format errors
	// (optionsSound), and refuses some that dnsfence ignores (unpackQuery).
	req := unpackQuery(b)
	if req == nil || len(req.Question) != 1 || !questionSound(b) || !dnswire.RecordsWhole(b) || !optionsSound(b) {
		return reply(dns.RcodeFormatError, resultFormerr)
	}
	return queryCheck{req: req}
}

// hasPadding reports whether m's OPT record carries an EDNS(0) Padding
// option (RFC 7830).
func hasPadding(m *dns.Msg) bool {
	opt := m.IsEdns0()
	if opt == nil {
		return false
	}
	for _, o := range opt.Option {
		if o.Option() == dns.EDNS0PADDING {
			return true
		}
	}
	return false
}

// paddedQuery reports whether a query asks for a padded answer (RFC 7830
// §3): req's OPT record carries the Padding option, or, for a message the
// listener rejected without parsing it (req nil), the OPT record of its
// bytes b does (dnswire.HasOption), so that its FORMERR or NOTIMP is padded too.
func paddedQuery(req *dns.Msg, b []byte) bool {
	if req != nil {
		return hasPadding(req)
	}
	return dnswire.HasOption(b, dns.EDNS0PADDING)
}

// padReply pads the packed reply b to a multiple of responsePaddingBlock
// octets when padded (the query was: paddedQuery) and the reply has an
// OPT record to carry the Padding option (RFC 7830 §3, RFC 8467 §4.1):
// an encrypted answer's length then says little about the name asked.
// Responders MUST pad the answer to a padded query, a FORMERR or NOTIMP
// as much as any. Any Padding option the reply had is replaced. It
// returns b unchanged when there is nothing to pad, when b does not
// parse, or when padding would take the reply past 65,535 octets. A reply
// as the Handler packs it (paddingRoom) is padded in its octets, one
// allocation; any other is parsed and packed again.
func padReply(padded bool, b []byte) []byte {
	if !padded {
		return b
	}
	if rdlen, n, ok := paddingRoom(b); ok {
		return appendPadded(make([]byte, 0, len(b)+4+n), b, rdlen, n)
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return b
	}
	// Unpack built m fresh: its OPT record may be changed in place.
	opt := m.IsEdns0()
	if opt == nil {
		return b
	}
	kept := opt.Option[:0]
	for _, o := range opt.Option {
		if o.Option() != dns.EDNS0PADDING {
			kept = append(kept, o)
		}
	}
	pad := &dns.EDNS0_PADDING{}
	opt.Option = append(kept, pad)
	m.Compress = true // as miekg/dns packs what it reads compressed
	unpadded, err := m.Pack()
	if err != nil {
		return b
	}
	n, ok := paddingLen(len(unpadded))
	if !ok {
		return b
	}
	pad.Padding = make([]byte, n)
	out, err := m.Pack()
	if err != nil || len(out) != len(unpadded)+n {
		return b
	}
	return out
}

// paddingRoom is, for a packed reply b whose OPT record is its last
// record and carries whole options of which none is a Padding option (a
// reply as the Handler packs it), the offset of that record's RDLENGTH
// and the length n of the Padding option's data that takes b to a
// multiple of responsePaddingBlock octets, the option's 4 octets of code
// and length included (RFC 8467 §4.1). ok is false for any other reply,
// or when b so padded would be longer than 65,535 octets (padReply then
// parses and packs it again). Read from the octets, so that padding such
// a reply costs no more than the copy the frame makes, not a parse and two
// packings, and pads an answer miekg/dns does not read.
func paddingRoom(b []byte) (rdlen, n int, ok bool) {
	off, ok := dnswire.FindOPT(b)
	if !ok {
		return 0, 0, false
	}
	start := off + 10 // the RDATA: after TYPE, CLASS, TTL and RDLENGTH
	if start+int(binary.BigEndian.Uint16(b[off+8:])) != len(b) {
		return 0, 0, false // another record follows, or b ends short
	}
	for rdata := b[start:]; len(rdata) > 0; {
		code, _, rest, whole := dnswire.NextOption(rdata)
		if !whole || code == dns.EDNS0PADDING {
			return 0, 0, false
		}
		rdata = rest
	}
	if n, ok = paddingLen(len(b) + 4); !ok {
		return 0, 0, false
	}
	return off + 8, n, true
}

// paddingLen is the length of the Padding option's data that takes a
// reply of total octets, the option's 4 octets of code and length
// included, to a multiple of responsePaddingBlock octets (RFC 8467 §4.1);
// ok is false when the reply so padded would be longer than 65,535 octets.
func paddingLen(total int) (n int, ok bool) {
	n = (responsePaddingBlock - total%responsePaddingBlock) % responsePaddingBlock
	return n, total+n <= dns.MaxMsgSize
}

// appendPadded appends to dst the reply b with a Padding option of n
// octets of zeros after the last option of its OPT record, whose RDLENGTH
// is at rdlen in b (paddingRoom).
func appendPadded(dst, b []byte, rdlen, n int) []byte {
	at := len(dst) + rdlen
	dst = append(dst, b...)
	binary.BigEndian.PutUint16(dst[at:], binary.BigEndian.Uint16(b[rdlen:])+4+uint16(n))
	dst = binary.BigEndian.AppendUint16(dst, dns.EDNS0PADDING)
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	return append(dst, make([]byte, n)...)
}

// cacheMaxAge is the HTTP freshness lifetime of a DoH answer in seconds
// (RFC 8484 §5.1): the smallest TTL of the answer and authority sections,
// and with an SOA in the authority section at most that SOA's MINIMUM
// (the negative-caching TTL of RFC 2308 §5 is the smaller of the SOA's
// TTL and MINIMUM, for an NXDOMAIN or NODATA at the end of a CNAME chain
// too). An answer with no records at all (SERVFAIL, REFUSED, FORMERR)
// gets 0: not to be reused. So does a negative answer without an SOA (an
// NXDOMAIN, or a NOERROR with no record of the type asked, after a CNAME
// chain too): RFC 2308 §5 says it SHOULD NOT be cached, and dnsfence's
// own cache keeps it for no time (resolver.answerLifetime); the CNAME's
// TTL would deny the name or type for as long as the alias lasts.
func cacheMaxAge(m *dns.Msg) uint32 {
	ttl := uint32(math.MaxUint32)
	found, soa := false, false
	for i, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT || h.Rrtype == dns.TypeSIG || h.Rrtype == dns.TypeTSIG {
				continue
			}
			found = true
			ttl = min(ttl, h.Ttl)
			if s, ok := rr.(*dns.SOA); ok && i == 1 {
				ttl, soa = min(ttl, s.Minttl), true
			}
		}
	}
	if !found || negative(m) && !soa {
		return 0
	}
	return ttl
}

// negative reports whether m is an NXDOMAIN or a NODATA: a NOERROR
// without a relevant answer (Relevant).
func negative(m *dns.Msg) bool {
	return m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess && !Relevant(m)
}

// Relevant reports whether m's answer section holds a record answering its
// question (dnswire.Answers: RFC 2308 §2.2); a NOERROR without one is a
// NODATA, after a CNAME chain too. Without one question, whether the
// answer section holds any record.
func Relevant(m *dns.Msg) bool {
	if len(m.Question) != 1 {
		return len(m.Answer) > 0
	}
	qtype := m.Question[0].Qtype
	return slices.ContainsFunc(m.Answer, func(rr dns.RR) bool { return dnswire.Answers(qtype, rr.Header().Rrtype) })
}
