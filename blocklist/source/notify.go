package source

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Notifier answers DNS NOTIFY (RFC 1996) for the zone sources it was built
// with, and tells the matching source to check its primary at once. It is
// safe for concurrent use and holds no state of its own: build a new one
// when the set of sources changes.
//
// The answer to a NOTIFY:
//   - from an address of the zone's primary: NOERROR, AA set, the question
//     echoed (RFC 1996 §4.7), and the source checks the primary's SOA (at
//     once, or at the end of the second after the last check a NOTIFY
//     asked for: see Zone.Notify);
//   - from any other address: REFUSED, and nothing happens but a
//     warning, and a count of refused for each source of the zone, as
//     for a signed one whose TSIG does not verify (when no source of the
//     zone takes it: two may pull it from two primaries; one that does
//     counts it accepted, the other neither);
//   - for a zone no source pulls: NOTAUTH (as BIND answers);
//   - with a question count other than 1: FORMERR; with a QTYPE other than
//     SOA or a class other than IN: NOTIMP.
//
// A NOTIFY is authenticated by its source address: it is a hint to look,
// and the look itself, the SOA query and the transfer, is signed and
// verified when sources.tsig is set. A NOTIFY may come signed too (BIND
// signs it for `also-notify { ADDRESS key NAME; }`): its TSIG is then
// checked as a server checks a request's (RFC 8945 §5.2), and a NOTIFY
// whose key is not a zone's, or whose MAC or time is wrong, gets NOTAUTH
// with the TSIG error (BADKEY, BADSIG, BADTIME) and is not acted on. The
// answer to one whose signature holds is signed with the same key (§5.3),
// which the primary requires: it takes an unsigned answer to a signed
// NOTIFY for a failed one, and sends it again. An unsigned NOTIFY is
// still taken from the primary's address, as before.
type Notifier struct {
	zones map[string][]*Zone // by apex
	keys  map[string]*TSIG   // the zones' TSIG keys, by name
}

// NewNotifier returns a Notifier for the Zone sources among srcs.
func NewNotifier(srcs []Source) *Notifier {
	n := &Notifier{zones: map[string][]*Zone{}, keys: map[string]*TSIG{}}
	for _, s := range srcs {
		if z, ok := s.(*Zone); ok {
			n.zones[z.zone] = append(n.zones[z.zone], z)
			if k := z.client.tsig; k != nil {
				n.keys[k.Name] = k
			}
		}
	}
	return n
}

// Primary reports whether addr is an address the primary of one of the
// zones was last reached at: one a NOTIFY is taken from.
func (n *Notifier) Primary(addr netip.Addr) bool {
	for _, zones := range n.zones {
		for _, z := range zones {
			if z.primary(addr) {
				return true
			}
		}
	}
	return false
}

// Verify checks the TSIG of req, a signed message whose octets as received
// are wire (what the MAC covers, RFC 8945 §4.3): nil when the signature
// holds; dns.ErrSecret when no zone has its key, known by name and
// algorithm both (§5.2.1), as when wire is nil; errMACSize for a MAC of a
// length §5.2.2.1 rules out; dns.ErrSig for a wrong MAC (§5.2.2);
// dns.ErrTime when its time is outside its fudge (§5.2.3); errTruncated
// for a right MAC truncated (§5.2.4).
// Reply takes the result.
func (n *Notifier) Verify(req *dns.Msg, wire []byte) error {
	t := req.IsTsig()
	if t == nil {
		return errors.New("the message is not signed")
	}
	k := n.keys[strings.ToLower(t.Hdr.Name)]
	if k == nil || wire == nil || dns.CanonicalName(t.Algorithm) != k.Algorithm {
		return fmt.Errorf("%w: key %s of algorithm %s is not sources.tsig", dns.ErrSecret, t.Hdr.Name, t.Algorithm)
	}
	// A MAC of another length than the algorithm's (RFC 8945 §5.2.2.1):
	// longer, or shorter than 10 octets or half of it, is a format
	// error; else it is truncated, checked as far as it goes, and then
	// too short for sources.tsig, which truncates none (§5.2.4).
	full := macSize(k.Algorithm)
	if n := int(t.MACSize); n > full || n < max(10, full/2) {
		return fmt.Errorf("%w: %d octets, where %s has %d (RFC 8945 §5.2.2.1)", errMACSize, n, k.Algorithm, full)
	}
	// TsigVerify writes into the octets it checks (the ID, the record
	// count): wire is the listener's, so a copy.
	switch err := dns.TsigVerifyWithProvider(slices.Clone(wire), hmacTSIG{secret: k.Secret}, "", false); {
	case errors.Is(err, dns.ErrTime):
		return fmt.Errorf("%w: signed at %s, more than its fudge of %d s from now", err,
			time.Unix(int64(t.TimeSigned), 0).UTC().Format(time.RFC3339), t.Fudge)
	case err != nil:
		return fmt.Errorf("%w: the MAC is not that of key %s", err, t.Hdr.Name)
	case int(t.MACSize) < full:
		return fmt.Errorf("%w: %d octets of %d", errTruncated, t.MACSize, full)
	}
	return nil
}

// errMACSize is Verify's error for a MAC whose length RFC 8945 §5.2.2.1
// rules out: Reply answers FORMERR.
var errMACSize = errors.New("the TSIG's MAC is of a length no key truncates it to")

// errTruncated is Verify's error for a MAC truncated as RFC 8945 §5.2.2.1
// allows, which sources.tsig does not (BADTRUNC, §5.2.4).
var errTruncated = errors.New("the TSIG's MAC is truncated, and sources.tsig is not")

// macSize is the length of algorithm's MAC, whole.
func macSize(algorithm string) int {
	if h := hashOf(algorithm); h != nil {
		return h().Size()
	}
	return 0
}

// hashOf is the hash of a TSIG algorithm: nil for one miekg/dns does not
// sign with.
func hashOf(algorithm string) func() hash.Hash {
	switch dns.CanonicalName(algorithm) {
	case dns.HmacSHA1:
		return sha1.New
	case dns.HmacSHA224:
		return sha256.New224
	case dns.HmacSHA256:
		return sha256.New
	case dns.HmacSHA384:
		return sha512.New384
	case dns.HmacSHA512:
		return sha512.New
	}
	return nil
}

// Reply answers the NOTIFY req, which came from the address from, and acts
// on it. from must be the packet's own source address (the socket peer),
// never an address the message names (EDNS Client Subnet, PROXY,
// Forwarded): it is what authenticates an unsigned NOTIFY. tsig is what
// Verify says of req's TSIG; it is not read for an unsigned req. The answer to
// a signed req ends in a TSIG record, which Pack signs. Reply returns nil
// when req is not a NOTIFY (opcode 4): the caller answers that as it
// answers any other opcode.
func (n *Notifier) Reply(from netip.Addr, req *dns.Msg, tsig error) *dns.Msg {
	if req.Opcode != dns.OpcodeNotify || req.Response {
		return nil
	}
	t := req.IsTsig()
	if t == nil {
		return n.answer(from, req)
	}
	if rcode := signedRcode(tsig); rcode != dns.RcodeSuccess {
		// Not acted on, and answered NOTAUTH (RFC 8945 §5.2), or FORMERR
		// for a MAC of a length ruled out (§5.2.2.1); counted refused and
		// logged by the zone it names.
		if len(req.Question) == 1 {
			for _, z := range n.zones[strings.ToLower(req.Question[0].Name)] {
				z.rejectNotify(notifyBadTSIG, from, tsig)
			}
		}
		m := newAnswer(req)
		if errors.Is(tsig, errMACSize) {
			m.Rcode = dns.RcodeFormatError
			return m
		}
		m.Rcode = dns.RcodeNotAuth
		m.Extra = append(m.Extra, answerTSIG(t, rcode))
		return m
	}
	m := n.answer(from, req)
	m.Extra = append(m.Extra, answerTSIG(t, dns.RcodeSuccess))
	return m
}

// answer is Reply's answer to the NOTIFY req whose TSIG, if any, holds.
func (n *Notifier) answer(from netip.Addr, req *dns.Msg) *dns.Msg {
	m := newAnswer(req)
	if len(req.Question) != 1 {
		m.Question = nil
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	if q.Qtype != dns.TypeSOA || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	zones := n.zones[strings.ToLower(q.Name)]
	if len(zones) == 0 {
		m.Rcode = dns.RcodeNotAuth
		return m
	}
	accepted := false
	for _, z := range zones {
		if z.Notify(from) {
			accepted = true
		}
	}
	if !accepted {
		// Counted refused and warned of only when no source took it: two
		// sources may pull the zone from two primaries, and a NOTIFY one
		// acts on is no other primary's mistake.
		for _, z := range zones {
			z.rejectNotify(notifyNotPrimary, from, nil)
		}
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	return m
}

// newAnswer is the empty answer to req, with an OPT when req has one.
func newAnswer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	if req.IsEdns0() != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	return m
}

// signedRcode is the TSIG error of a request whose check (Verify) gave
// err: NOERROR when it holds.
func signedRcode(err error) int {
	switch {
	case err == nil:
		return dns.RcodeSuccess
	case errors.Is(err, dns.ErrTime):
		return dns.RcodeBadTime
	case errors.Is(err, dns.ErrSig):
		return dns.RcodeBadSig
	case errors.Is(err, errTruncated):
		return dns.RcodeBadTrunc
	}
	return dns.RcodeBadKey
}

// answerTSIG is the TSIG record of the answer to a request signed with t,
// of TSIG error rcode (RFC 8945 §5.3): signed (by Pack) at the time of
// answering, but for BADTIME, which keeps the request's time and tells
// the server's in Other Data (§5.2.3), and BADKEY and BADSIG, which go
// unsigned (§5.3.2).
func answerTSIG(t *dns.TSIG, rcode int) *dns.TSIG {
	now := uint64(time.Now().Unix())
	a := &dns.TSIG{
		Hdr:       dns.RR_Header{Name: t.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: t.Algorithm, TimeSigned: now, Fudge: t.Fudge, OrigId: t.OrigId, Error: uint16(rcode),
	}
	switch rcode {
	case dns.RcodeBadTime:
		var other [8]byte
		binary.BigEndian.PutUint64(other[:], now)
		a.TimeSigned, a.OtherLen, a.OtherData = t.TimeSigned, 6, hex.EncodeToString(other[2:])
	case dns.RcodeBadKey, dns.RcodeBadSig:
		a.TimeSigned = t.TimeSigned
	}
	return a
}

// Pack packs m, Reply's answer to req: signed with req's key, over req's
// MAC (RFC 8945 §4.3.1), when it ends in a TSIG that is to be signed. A
// BADKEY or BADSIG one is packed as it is, unsigned, with the request's
// time: miekg/dns's TsigGenerate writes a time of 0 into it, which BIND
// reads first, and logs the NOTIFY as failed for 'clocks are
// unsynchronized', where its key is what differs.
func (n *Notifier) Pack(m, req *dns.Msg) ([]byte, error) {
	t, reqTSIG := m.IsTsig(), req.IsTsig()
	if t == nil || reqTSIG == nil || t.Error == dns.RcodeBadKey || t.Error == dns.RcodeBadSig {
		return m.Pack()
	}
	secret := ""
	if k := n.keys[strings.ToLower(t.Hdr.Name)]; k != nil {
		secret = k.Secret
	}
	b, _, err := dns.TsigGenerate(m, secret, reqTSIG.MAC, false)
	return b, err
}
