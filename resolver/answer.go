package resolver

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
)

// ednsSize is the EDNS buffer size dnsfence advertises and uses upstream
// (listen.EDNSSize).
const ednsSize = listen.EDNSSize

// SOA fields of blocked answers other than the TTLs, which are blocked_ttl.
const (
	soaMname   = "blocked.dnsfence.invalid."
	soaRname   = "hostmaster.dnsfence.invalid."
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// newReply starts one of dnsfence's own answers to req: the header by
// replyHeader (no AD: dnsfence validates nothing itself), the question
// echoed, and an OPT record only when the query carried one (RFC 6891 §7).
func newReply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	replyHeader(req, &m.MsgHdr, false)
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
	}
	return m
}

// replyHeader sets every header bit of an answer to req by rule, whatever
// an upstream or the cache had (DESIGN.md §10). Every answer dnsfence
// sends, its own, forwarded or cached, packed or not, takes its header
// from here:
//   - ID and opcode of the query; QR set.
//   - AA clear: a forwarder is no authority (RFC 1035 §4.1.1); only the
//     answers of dnsfence's own zones set it afterwards (localZone.reply).
//   - TC clear: it is set only when the reply is fitted to the client.
//   - RD and CD copied from the query (RFC 1035 §4.1.1, RFC 4035 §3.2.2).
//   - RA set on an answer to QUERY: dnsfence offers recursion to every
//     client it answers; clear on an answer to any other opcode (NOTIMP,
//     and NOTIFY's), which recursion has nothing to do with, as BIND sets
//     it only for QUERY (Unbound's NOTIMP only echoes the query's own
//     bits), and as ISC's genreport checks its "opcode" tests.
//   - AD only when upstreamAD (the upstream vouched for the data) and the
//     query set AD or DO (RFC 6840 §5.8).
//   - Z clear.
//
// The RCODE is left as it is.
func replyHeader(req *dns.Msg, h *dns.MsgHdr, upstreamAD bool) {
	a := askedOf(req)
	a.replyHeader(h, upstreamAD)
}

// ruleBuiltAnswer sets the header and the OPT record of m, an answer to
// req built outside these rules (the zone sources' Notifier answers a
// NOTIFY with miekg/dns's SetReply, which copies RD and CD only for
// QUERY, and an OPT of buffer 4,096 without DO), by the rules of every
// answer of dnsfence's: the header by replyHeader, but AA, which the
// builder decides; the OPT with dnsfence's buffer size, version 0 and no
// flag but the query's DO (RFC 3225 §3: the DO bit of the query MUST be
// copied in the response; RFC 6891 §6.1.4).
func ruleBuiltAnswer(req, m *dns.Msg) {
	a := askedOf(req)
	aa := m.Authoritative
	a.replyHeader(&m.MsgHdr, false)
	m.Authoritative = aa
	opt := m.IsEdns0()
	if opt == nil {
		return
	}
	opt.SetUDPSize(ednsSize)
	opt.SetVersion(0)
	opt.Hdr.Ttl &^= 0xFFFF // the flags: DO alone, set below
	opt.SetDo(a.do)
}

// asked is what an answer takes from its query: the header bits
// replyHeader copies, the question as the client spelt it, and whether it
// had EDNS with the DO bit. It is read from a message (askedOf) or from the
// wire (wireQuery.asked), so that answers packed without a message follow
// the one set of rules whichever way their query came.
type asked struct {
	id            uint16
	opcode        int
	rd, cd, ad    bool
	edns, do      bool
	qname         string // the question name as asked, presentation form (from a message)
	qnameWire     []byte // the question name as asked, wire form (from the wire); nil: pack qname
	qtype, qclass uint16
}

// askedOf reads what an answer takes from the query req.
func askedOf(req *dns.Msg) asked {
	a := asked{id: req.Id, opcode: req.Opcode, rd: req.RecursionDesired, cd: req.CheckingDisabled, ad: req.AuthenticatedData}
	if opt := req.IsEdns0(); opt != nil {
		a.edns, a.do = true, opt.Do()
	}
	if len(req.Question) > 0 {
		q := req.Question[0]
		a.qname, a.qtype, a.qclass = q.Name, q.Qtype, q.Qclass
	}
	return a
}

// replyHeader is the rules of replyHeader for a query read as a.
func (a *asked) replyHeader(h *dns.MsgHdr, upstreamAD bool) {
	h.Id = a.id
	h.Response = true
	h.Opcode = a.opcode
	h.Authoritative = false
	h.Truncated = false
	h.RecursionDesired = a.rd
	h.RecursionAvailable = a.opcode == dns.OpcodeQuery
	h.Zero = false
	h.AuthenticatedData = upstreamAD && (a.ad || a.do)
	h.CheckingDisabled = a.cd
}

// appendQName appends the question name as asked, uncompressed.
func (a *asked) appendQName(b []byte) ([]byte, error) {
	if a.qnameWire != nil {
		return append(b, a.qnameWire...), nil
	}
	return appendName(b, a.qname)
}

// appendOPT appends dnsfence's OPT record for an answer to a (RFC 6891
// §6.1.2): the root owner, our buffer size, extended RCODE and version 0,
// the client's DO bit, and options of optLen octets, which the caller
// appends next. It bumps ARCOUNT in the header at b[hdr:].
func (a *asked) appendOPT(b []byte, hdr, optLen int) []byte {
	b = append(b, 0) // root
	b = binary.BigEndian.AppendUint16(b, dns.TypeOPT)
	b = binary.BigEndian.AppendUint16(b, ednsSize)
	var ttlFlags uint32 // extended RCODE 0, version 0
	if a.do {
		ttlFlags |= 1 << 15
	}
	b = binary.BigEndian.AppendUint32(b, ttlFlags)
	b = binary.BigEndian.AppendUint16(b, uint16(optLen))
	binary.BigEndian.PutUint16(b[hdr+10:], binary.BigEndian.Uint16(b[hdr+10:])+1)
	return b
}

// headerFlags packs h's opcode, bits and low four RCODE bits as the wire's
// second header word, for the answers packed without a dns.Msg.
func headerFlags(h *dns.MsgHdr) uint16 {
	f := uint16(h.Opcode&0xF)<<11 | uint16(h.Rcode&0xF)
	for _, b := range [...]struct {
		set bool
		bit uint16
	}{
		{h.Response, dnswire.FlagQR}, {h.Authoritative, dnswire.FlagAA}, {h.Truncated, dnswire.FlagTC}, {h.RecursionDesired, dnswire.FlagRD},
		{h.RecursionAvailable, dnswire.FlagRA}, {h.Zero, dnswire.FlagZ}, {h.AuthenticatedData, dnswire.FlagAD}, {h.CheckingDisabled, dnswire.FlagCD},
	} {
		if b.set {
			f |= b.bit
		}
	}
	return f
}

// addEDE attaches an Extended DNS Error (RFC 8914) when the reply has EDNS.
func addEDE(m *dns.Msg, code uint16, text string) {
	if opt := m.IsEdns0(); opt != nil {
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
	}
}

// refusedReply answers a client outside allowed_clients.
func refusedReply(req *dns.Msg) *dns.Msg {
	m := newReply(req, dns.RcodeRefused)
	addEDE(m, dns.ExtendedErrorCodeProhibited, "client not allowed")
	return m
}

// servfailReply answers when no upstream gave a usable answer.
func servfailReply(req *dns.Msg, ede uint16, text string) *dns.Msg {
	m := newReply(req, dns.RcodeServerFailure)
	addEDE(m, ede, text)
	return m
}

// notReadyReply answers a query that the policy pol cannot decide yet
// (Policy.Ready): SERVFAIL with Extended DNS Error 14, Not Ready ("not
// fully functional when the query was received", RFC 8914 §4.15), its text
// naming the lists without a copy. Never cached.
func notReadyReply(req *dns.Msg, pol *Policy) *dns.Msg {
	return servfailReply(req, dns.ExtendedErrorCodeNotReady, pol.noCopyText)
}

// blockedReply is the answer for a blocked name under the policy's action.
// owner is the name the SOA is owned by: the matched entry when it is the
// question name or a parent of it, else the question name itself (a CNAME
// chain block), so that the SOA always sits at or above the question as RFC
// 2308 negative caching expects. ttl is the TTL of every record and the
// SOA's MINIMUM, in seconds (blocked_ttl); serial is the SOA's SERIAL, the
// snapshot's load time in Unix seconds.
func blockedReply(req *dns.Msg, p *Policy, d Decision, ttl uint32, serial uint32, chain bool) *dns.Msg {
	q := req.Question[0]
	owner := soaOwner(q.Name, d, chain)
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: owner, Rrtype: dns.TypeSOA, Class: recordClass(q.Qclass), Ttl: ttl},
		Ns:      soaMname,
		Mbox:    soaRname,
		Serial:  serial,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  ttl,
	}
	var m *dns.Msg
	switch {
	case d.Trigger.Action == blocklist.ActionNODATA:
		// RPZ `CNAME *.`: the name exists, without records of this type
		// (RFC 2308 §2.2), whatever the policy's action.
		m = newReply(req, dns.RcodeSuccess)
		m.Ns = []dns.RR{soa}
	case d.action(p) == config.ActionRefused:
		m = newReply(req, dns.RcodeRefused)
	case d.action(p) == config.ActionNull:
		m = newReply(req, dns.RcodeSuccess)
		hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: recordClass(q.Qclass), Ttl: ttl}
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: net.IPv4zero.To4()}}
		case dns.TypeAAAA:
			m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: net.IPv6zero}}
		default:
			m.Ns = []dns.RR{soa} // NODATA
		}
	default:
		m = newReply(req, dns.RcodeNameError)
		m.Ns = []dns.RR{soa}
	}
	addEDE(m, dns.ExtendedErrorCodeBlocked, p.BlockedText(d.Entry.List.File()))
	return m
}

// recordClass is the class of the records of dnsfence's own answer to a
// question of class qclass: that class, as an answer comes from a zone of
// the class asked (RFC 1034 §4.3.2; a CHAOS query's NXDOMAIN with an IN
// SOA is FORMERR to BIND), except for ANY and NONE, which are QCLASS
// values no record has (RFC 1035 §3.2.5, RFC 2136 §1.3): IN for those.
func recordClass(qclass uint16) uint16 {
	if qclass == dns.ClassANY || qclass == dns.ClassNONE {
		return dns.ClassINET
	}
	return qclass
}

// soaOwner is the owner of a blocked answer's SOA: the matched entry, which
// is the question name or a parent of it; for a CNAME chain block, whose
// entry matched another name, the question name.
func soaOwner(qname string, d Decision, chain bool) string {
	if chain {
		return strings.ToLower(dns.Fqdn(qname))
	}
	// Match gives the entry as the question's own suffix: with the
	// question's trailing dot it is the owner, lowercased without a copy
	// when it is lowercase already. A suffix spelt with escapes
	// (`\116iktok.com`) is written as the list has it.
	if e, end := d.Entry.Name, len(qname)-1; end >= len(e) && qname[end] == '.' && qname[end-len(e):end] == e &&
		strings.IndexByte(e, '\\') < 0 {
		return strings.ToLower(qname[end-len(e):])
	}
	return d.Entry.Folded() + "."
}

// soaNames is the SOA's MNAME and RNAME in wire form, packed once.
var soaNames = func() []byte {
	b := make([]byte, 256)
	off, err := dns.PackDomainName(soaMname, b, 0, nil, false)
	if err == nil {
		off, err = dns.PackDomainName(soaRname, b, off, nil, false)
	}
	if err != nil {
		panic(err)
	}
	return b[:off]
}()

// appendBlocked packs the NXDOMAIN, NODATA (rcode NOERROR) or REFUSED
// blocked answer to the query read as a straight into b: the same message
// blockedReply builds (header, question as asked, for NXDOMAIN and NODATA
// the SOA, and OPT with EDE 15 when the query had EDNS), without building
// it, because this is the answer dnsfence gives most. ttl and serial are as
// for blockedReply (seconds). It reports false when the answer would not
// fit maxSize (octets); the caller then builds it the general way.
func (a *asked) appendBlocked(b []byte, rcode int, owner string, ttl, serial uint32, ede string, maxSize int) ([]byte, bool) {
	hdr := dns.MsgHdr{Rcode: rcode}
	a.replyHeader(&hdr, false)
	flags := headerFlags(&hdr)
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, a.id)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, 1) // question
	b = binary.BigEndian.AppendUint16(b, 0) // answer
	withSOA := rcode == dns.RcodeNameError || rcode == dns.RcodeSuccess
	nscount := uint16(0)
	if withSOA {
		nscount = 1
	}
	b = binary.BigEndian.AppendUint16(b, nscount) // authority: the SOA
	b = binary.BigEndian.AppendUint16(b, 0)       // additional: the OPT, counted by appendOPT
	var err error
	qstart := len(b)
	if b, err = a.appendQName(b); err != nil {
		return b, false
	}
	qend := len(b)
	b = binary.BigEndian.AppendUint16(b, a.qtype)
	b = binary.BigEndian.AppendUint16(b, a.qclass)
	if withSOA {
		// A compression pointer is an offset in the message, which starts
		// at b[start:], not in b.
		owned, err := appendOwner(b[start:], owner, qstart-start, qend-start)
		if err != nil {
			return b, false
		}
		b = append(b[:start], owned...)
		b = binary.BigEndian.AppendUint16(b, dns.TypeSOA)
		b = binary.BigEndian.AppendUint16(b, recordClass(a.qclass))
		b = binary.BigEndian.AppendUint32(b, ttl)
		b = binary.BigEndian.AppendUint16(b, uint16(len(soaNames)+20))
		b = append(b, soaNames...)
		for _, v := range [...]uint32{serial, soaRefresh, soaRetry, soaExpire, ttl} {
			b = binary.BigEndian.AppendUint32(b, v)
		}
	}
	if a.edns {
		b = a.appendOPT(b, start, 4+2+len(ede))
		b = binary.BigEndian.AppendUint16(b, dns.EDNS0EDE)
		b = binary.BigEndian.AppendUint16(b, uint16(2+len(ede)))
		b = binary.BigEndian.AppendUint16(b, dns.ExtendedErrorCodeBlocked)
		b = append(b, ede...)
	}
	return b, len(b)-start <= maxSize
}

// appendServfail packs into b the SERVFAIL servfailReply builds for the
// query read as a (header, question as asked, and OPT with the Extended
// DNS Error ede, text, RFC 8914, when the query had EDNS), without
// unpacking the query: for a wire query whose handling panicked, where
// nothing more may fail (Handler.failed).
func (a *asked) appendServfail(b []byte, ede uint16, text string) ([]byte, error) {
	hdr := dns.MsgHdr{Rcode: dns.RcodeServerFailure}
	a.replyHeader(&hdr, false)
	start := len(b)
	b = binary.BigEndian.AppendUint16(b, a.id)
	b = binary.BigEndian.AppendUint16(b, headerFlags(&hdr))
	b = append(b, 0, 1, 0, 0, 0, 0, 0, 0) // a question; the OPT is counted by appendOPT
	b, err := a.appendQName(b)
	if err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, a.qtype)
	b = binary.BigEndian.AppendUint16(b, a.qclass)
	if a.edns {
		b = a.appendOPT(b, start, 4+2+len(text))
		b = binary.BigEndian.AppendUint16(b, dns.EDNS0EDE)
		b = binary.BigEndian.AppendUint16(b, uint16(2+len(text)))
		b = binary.BigEndian.AppendUint16(b, ede)
		b = append(b, text...)
	}
	return b, nil
}

// compressName replaces the name packed at b[start:] with a compression
// pointer (RFC 1035 §4.1.4) to the same octets at a label boundary of the
// name packed at b[nameStart:nameEnd], as miekg/dns compresses the owner of
// a blocked answer's SOA against the question; b is returned unchanged when
// the name is no such suffix.
func compressName(b []byte, start, nameStart, nameEnd int) []byte {
	name := b[start:]
	for off := nameStart; off < nameEnd && off <= 0x3FFF; off += 1 + int(b[off]) {
		if bytes.Equal(b[off:nameEnd], name) {
			return binary.BigEndian.AppendUint16(b[:start], 0xC000|uint16(off))
		}
		if b[off] == 0 {
			break
		}
	}
	return b
}

// appendOwner appends the name owner, a blocked answer's SOA owner, for a
// message whose question name is at b[qstart:qend], uncompressed: a
// pointer to the question name's suffix that spells owner octet for
// octet, found without packing owner (the usual case: soaOwner gives the
// question's own suffix, lowercase); else owner packed and compressed by
// compressName, which gives the same pointer when there is one.
func appendOwner(b []byte, owner string, qstart, qend int) ([]byte, error) {
	if off, ok := suffixAt(b[qstart:qend], owner); ok && qstart+off <= 0x3FFF {
		return binary.BigEndian.AppendUint16(b, 0xC000|uint16(qstart+off)), nil
	}
	ostart := len(b)
	b, err := appendName(b, owner)
	if err != nil {
		return b, err
	}
	return compressName(b, ostart, qstart, qend), nil
}

// suffixAt is the offset in the uncompressed wire name w of the suffix
// that the fully qualified name owner spells, octet for octet; false when
// there is none, or owner is the root or has escapes (then its wire form
// is not its text's).
func suffixAt(w []byte, owner string) (int, bool) {
	if len(owner) < 2 || owner[len(owner)-1] != '.' || strings.IndexByte(owner, '\\') >= 0 {
		return 0, false
	}
	off := len(w) - (len(owner) + 1) // a name of n labels is one octet longer on the wire
	i := 0
	for i < off && i < len(w) && w[i] != 0 && w[i]&0xC0 == 0 {
		i += 1 + int(w[i])
	}
	if off < 0 || i != off {
		return 0, false
	}
	p := 0 // where in owner the label at w[i] is
	for i < len(w) && w[i] != 0 {
		l := int(w[i])
		if l&0xC0 != 0 || i+1+l > len(w) || p+l >= len(owner) || owner[p+l] != '.' || string(w[i+1:i+1+l]) != owner[p:p+l] ||
			strings.IndexByte(owner[p:p+l], '.') >= 0 { // a label with a dot octet is not owner's labels
			return 0, false
		}
		i, p = i+1+l, p+l+1
	}
	return off, p == len(owner) && i == len(w)-1
}

// appendName appends a name in wire form, uncompressed.
func appendName(b []byte, name string) ([]byte, error) {
	start := len(b)
	b = slices.Grow(b, 256)[:start+256]
	off, err := dns.PackDomainName(name, b, start, nil, false)
	if err != nil {
		return b[:start], err
	}
	return b[:off], nil
}

// clientSize is the largest UDP answer the client accepts: its EDNS buffer
// size, at least 512 (RFC 6891 §6.2.5) and at most what we advertise.
func clientSize(req *dns.Msg) int {
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	return min(size, ednsSize)
}

// upstreamReply turns a private copy of an upstream answer into the
// client's: the client's question restored, the header by replyHeader, and
// EDNS rebuilt for this hop: our buffer size and the client's DO bit,
// keeping the upstream's Extended DNS Errors (RFC 8914: they tell the client
// why an answer failed), and no OPT at all when the client sent none.
// The copy may be shallow: the section arrays and records it shares are
// never written, and the additional section is rebuilt into a new array.
func upstreamReply(req, m *dns.Msg) *dns.Msg {
	m.Question = req.Question
	replyHeader(req, &m.MsgHdr, m.AuthenticatedData)
	var edes []dns.EDNS0
	extra := make([]dns.RR, 0, len(m.Extra))
	for _, rr := range m.Extra {
		if opt, ok := rr.(*dns.OPT); ok {
			for _, o := range opt.Option {
				if e, ok := o.(*dns.EDNS0_EDE); ok {
					edes = append(edes, e)
				}
			}
			continue
		}
		extra = append(extra, rr)
	}
	m.Extra = extra
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
		m.IsEdns0().Option = edes
	} else if m.Rcode > 0xF {
		// An extended RCODE cannot be expressed without OPT.
		m.Rcode = dns.RcodeServerFailure
	}
	return m
}
