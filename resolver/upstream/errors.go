package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
)

// ErrAllUpstreamsFailed is returned when no upstream gave a usable answer.
var ErrAllUpstreamsFailed = errors.New("no upstream answered")

// Kinds of unusable upstream answer, for errors.Is. Each wraps
// ErrAnswerUnusable. An answer for another question, one that does not
// parse, or one too big for the UDP receive buffer ends the wait for it at
// once and the query is asked again over TCP: a datagram is never accepted
// unless its ID, question and source match (RFC 5452 §9.1), and over TCP an
// off-path sender cannot inject one. An answer with TC set that came over
// TCP or an encrypted transport (ErrAnswerTruncated) has no larger
// transport left to be asked over: it is unusable, and the next upstream is
// asked. A datagram with an ID never sent on the
// socket is dropped and the query waits on for its own answer (a spoofer
// cannot end the wait); if none comes, its timeout error is also
// ErrAnswerWrongID, and so counted: the upstream did send something.
var (
	ErrAnswerUnusable  = errors.New("upstream answer unusable")
	ErrAnswerTooBig    = fmt.Errorf("%w: too big for UDP", ErrAnswerUnusable)
	ErrAnswerMalformed = fmt.Errorf("%w: malformed", ErrAnswerUnusable)
	ErrAnswerMismatch  = fmt.Errorf("%w: not for the question asked", ErrAnswerUnusable)
	ErrAnswerWrongID   = fmt.Errorf("%w: query ID never sent", ErrAnswerUnusable)
	ErrAnswerTruncated = fmt.Errorf("%w: truncated over a stream", ErrAnswerUnusable)
	// ErrAnswerRdata is a malformed answer whose every record reads
	// (dnswire.Walk: the header, the question, each record's owner, type,
	// class, TTL and RDLENGTH, the names in its RDATA) but the RDATA of
	// one of which miekg/dns will not unpack: an HTTPS record whose
	// ipv6hint holds an IPv4-mapped address, SVCB keys out of order, a
	// mandatory key list of odd length. Such data is the zone's, which
	// any name's owner writes and a recursive upstream passes on as it
	// is, so it speaks of the query, not of the upstream: a whole answer
	// is the upstream's answer (RdataError.answer), any other is judged
	// by its RCODE and TC bit as a readable one is (asReadable).
	ErrAnswerRdata = fmt.Errorf("%w: a record's data miekg/dns does not read", ErrAnswerMalformed)
)

// RdataError is an ErrAnswerRdata with the answer's octets: the zone's
// data, which a client whose answer needs no inspection gets as the
// upstream sent it (README, Answer inspection), whichever transport the
// answer came over; the wire path's cache holds it so, and the message
// path takes it from here (UpstreamError.Unread).
//
// Each transport checks it against its query as checkAnswer checks a
// message (checkUnread): an RdataError an exchange returns is to the
// query's question, and carries the query's ID.
type RdataError struct {
	Raw   []byte // the answer as it came but for its hop's options (hopOption), the caller's to keep
	rcode int    // its RCODE, extended by its OPT record's
	err   error
}

func (e *RdataError) Error() string { return e.err.Error() }
func (e *RdataError) Unwrap() error { return e.err }

// answer reports whether e is a whole answer: TC clear (a truncated one is
// asked again over TCP, or cut short with nothing larger left to ask
// over, as exchange says) and an RCODE that is no failure (failureRcode).
// Such an answer is the upstream's answer to its query, as the wire path
// takes it (checkWire): the next upstream is not asked.
func (e *RdataError) answer() bool {
	return dnswire.Flags(e.Raw)&dnswire.FlagTC == 0 && !failureRcode(e.rcode)
}

// unreadAnswer reports whether err is an exchange's whole answer with a
// record miekg/dns does not read (RdataError.answer).
func unreadAnswer(err error) bool {
	rd, ok := errors.AsType[*RdataError](err) // no allocation: called for every try
	return ok && rd.answer()
}

// asReadable is the error of an exchange that ended with err, an
// RdataError that is no whole answer (RdataError.answer), as that of the
// same answer miekg/dns reads: one whose RCODE is a failure
// (failureRcode) an *RcodeError holding its header, question and OPT
// record (headerOnly: what the SERVFAIL tracker, failedValidation,
// declinedANY and refusedNoRecursion read, and the Extended DNS Errors
// relayed), one with TC set ErrAnswerTruncated (it came over a stream, or
// over TCP after a truncated datagram: Plain.exchange asks again so). It
// is then counted by its RCODE or as truncated, failed over, and judged
// as a readable one is: a truncated answer counts against its upstream's
// health, a SERVFAIL is judged by the query's end (queryFailures). The
// record the name's owner wrote makes the answer no less cut short or
// failed. Any other err is returned as it is. The order is exchange's:
// the RCODE first.
func asReadable(err error) error {
	rd, ok := errors.AsType[*RdataError](err) // no allocation: called for every failed try
	if !ok || rd.answer() {
		return err
	}
	if failureRcode(rd.rcode) {
		return &RcodeError{Rcode: rd.rcode, Answer: headerOnly(rd.Raw)}
	}
	return ErrAnswerTruncated
}

// headerOnly is the answer raw, which dnswire.Walk reads through (or a
// truncated one that ends before its records: unpackMsg), without its
// records but its OPT, when that is whole: its header, question and EDNS
// (its Extended DNS Errors), as a message; nil when raw does not count
// one question (QDCOUNT 1: else its question, as ReadQuestion reads it,
// is none, or not all, and miekg/dns read what followed as records), or
// has no whole question, or miekg/dns does not unpack even that.
func headerOnly(raw []byte) *dns.Msg {
	q, ok := dnswire.ReadQuestion(raw)
	if !ok || dnswire.QDCount(raw) != 1 {
		return nil
	}
	b := append(make([]byte, 0, q.End+64), raw[:q.End]...)
	clear(b[6:dnswire.HeaderLen]) // no answer, authority or additional record
	if off, ok := dnswire.FindOPT(raw); ok && off+10 <= len(raw) {
		end := off + 10 + int(binary.BigEndian.Uint16(raw[off+8:]))
		if end <= len(raw) {
			b = append(append(b, 0), raw[off:end]...) // owned by the root
			binary.BigEndian.PutUint16(b[10:], 1)
		}
	}
	m, err := unpackMsg(b)
	if err != nil {
		return nil
	}
	return m
}

// RcodeError is an upstream answer whose RCODE says the upstream could not
// answer: SERVFAIL, REFUSED, NOTIMP, or FORMERR, BADVERS, BADCOOKIE, or
// one no query is answered with (failureRcode).
// That upstream counts as failing and the next one is asked, as Unbound
// does with its forwarders. The Forwarder makes it of such an answer from
// any Transport.
type RcodeError struct {
	Rcode  int
	Answer *dns.Msg // the upstream's answer, as received
}

func (e *RcodeError) Error() string { return "answered " + dns.RcodeToString[e.Rcode] }

// failureRcode reports whether an upstream answering rcode could not
// answer: a client gets nothing from it that another upstream could not do
// better. FORMERR, BADVERS and BADCOOKIE are among them: they speak of
// the query dnsfence sent, not of the client's, which dnsfence read and
// checked itself (RFC 1035 §4.1.1: FORMERR, "unable to interpret the
// query"; a server without EDNS answers our OPT record so, RFC 6891 §7;
// BADVERS, to our EDNS version 0, RFC 6891 §6.1.3; BADCOOKIE, of the
// cookie of dnsfence's hop, RFC 7873 §5.2.3, which sends none: the
// client's cookie stays on the client's). Relayed, they would tell a
// client whose query was well formed that it was not, and a client that
// sent no cookie a BADCOOKIE, which RFC 7873 §5.2.1 never gives it.
// So is every RCODE but NOERROR, NXDOMAIN and YXDOMAIN (a DNAME
// substitution too long, RFC 6672 §2.2): the others answer UPDATE (RFC
// 2136: YXRRSET, NXRRSET, NOTAUTH, NOTZONE), DSO (RFC 8490: DSOTYPENI),
// TSIG and TKEY (RFC 8945, RFC 2930), or are unassigned, and no query
// is answered with one (Unbound answers SERVFAIL for them too).
func failureRcode(rcode int) bool {
	switch rcode {
	case dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeYXDomain:
		return false
	}
	return true
}

// sharedFailure is one event that fails several queries at once (a
// connection attempt they all waited for, a DoQ connection the upstream
// closed with an error code under them): it is one failure of the
// upstream, not one per query, so that it alone cannot mark the upstream
// down. Each query gets it as its own error (share), fails over, and is
// counted in dnsfence_upstream_errors_total by its cause; the first of
// them recorded in the upstream's health window counts it there
// (countsAgainst), the others are left out. The count is taken where a
// failure is recorded, not where the error is handed out, so that an
// exchange that records none (a readiness probe, Probe; a try whose
// caller gave up) does not use it up and leave the event counted by no
// one.
type sharedFailure struct{ counted atomic.Bool }

// share is err as one query's share of s; nil for nil.
func (s *sharedFailure) share(err error) error {
	if err == nil {
		return nil
	}
	return &sharedError{error: err, of: s}
}

// sharedError is a query's share of a sharedFailure.
type sharedError struct {
	error
	of *sharedFailure
}

func (e *sharedError) Unwrap() error { return e.error }

// countsAgainst reports whether a failed exchange, about to be recorded in
// its upstream's health window, counts against the upstream: any failure
// but the share of a sharedFailure another exchange has counted already.
// Call it only to record the failure when it reports true.
func countsAgainst(err error) bool {
	var se *sharedError
	return !errors.As(err, &se) || se.of.counted.CompareAndSwap(false, true)
}

// Upstream error kinds as counted and logged: the `kind` label of
// dnsfence_upstream_errors_total. errorKind names the kind of any
// Transport's error.
const (
	kindTimeout   = "timeout"
	kindNetwork   = "network"
	kindTooBig    = "too_big"
	kindMalformed = "malformed"
	kindMismatch  = "mismatch"
	kindWrongID   = "wrong_id"
	kindTruncated = "truncated"
	kindServfail  = "rcode_servfail"
	kindRefused   = "rcode_refused"
	kindNotimp    = "rcode_notimp"
	kindFormerr   = "rcode_formerr"
	kindBadvers   = "rcode_badvers"
	kindBadcookie = "rcode_badcookie"
	// kindOtherRcode: an RCODE no query is answered with (failureRcode).
	kindOtherRcode = "rcode_other"
	// kindCertificate: an encrypted upstream's certificate did not verify
	// (wrong name, untrusted root, expired).
	kindCertificate = "certificate"
	// kindProtocol: an encrypted upstream broke its transport's protocol
	// (ErrProtocol: an HTTP status other than 2xx, a DoQ error code), or
	// ended the handshake with a TLS alert (isTLSAlert).
	kindProtocol = "protocol"
)

// errorKinds is every kind errorKind returns, for series that exist from
// the start.
var errorKinds = []string{kindServfail, kindRefused, kindNotimp, kindFormerr, kindBadvers, kindBadcookie, kindOtherRcode,
	kindTooBig, kindMalformed, kindMismatch, kindWrongID, kindTruncated, kindCertificate, kindProtocol, kindTimeout, kindNetwork}

// errorKind names the cause of a failed upstream exchange: rcode_servfail,
// rcode_refused, rcode_notimp, rcode_formerr, rcode_badvers,
// rcode_badcookie, rcode_other, too_big, malformed, mismatch, wrong_id,
// truncated, certificate, protocol, timeout or network (errorKinds). An unusable answer
// names the exchange even when the retry over TCP then timed out: an
// answer came.
func errorKind(err error) string {
	var re *RcodeError
	switch {
	case errors.As(err, &re):
		switch re.Rcode {
		case dns.RcodeServerFailure:
			return kindServfail
		case dns.RcodeRefused:
			return kindRefused
		case dns.RcodeNotImplemented:
			return kindNotimp
		case dns.RcodeFormatError:
			return kindFormerr
		case dns.RcodeBadVers:
			return kindBadvers
		case dns.RcodeBadCookie:
			return kindBadcookie
		}
		return kindOtherRcode
	case errors.Is(err, ErrAnswerTooBig):
		return kindTooBig
	case errors.Is(err, ErrAnswerMalformed):
		return kindMalformed
	case errors.Is(err, ErrAnswerMismatch):
		return kindMismatch
	case errors.Is(err, ErrAnswerWrongID):
		return kindWrongID
	case errors.Is(err, ErrAnswerTruncated):
		return kindTruncated
	case isCertificateError(err):
		return kindCertificate
	case errors.Is(err, ErrProtocol), isTLSAlert(err):
		return kindProtocol
	case isTimeout(err):
		return kindTimeout
	}
	return kindNetwork
}

// isTimeout reports an exchange, or a dial, read or handshake, that ran
// out of time: a context deadline, or a network error that says it timed
// out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// UpstreamError reports why every upstream failed.
type UpstreamError struct {
	Errs    []error
	Timeout bool // every failure was a timeout: no upstream reachable
	// Answer is the last upstream answer whose RCODE was a failure
	// (failureRcode); nil when no upstream answered so.
	Answer *dns.Msg
	// Unread is the upstream answer with a record miekg/dns does not
	// read that ended the query (RdataError.answer), as it came but for
	// its hop's options, with the query's ID and question; nil when no
	// upstream answered so.
	Unread []byte
	// UnreadFrom is the upstream that sent Unread.
	UnreadFrom string
	kinds      []string // errorKind of each of Errs
	upstreams  []string // the upstream of each of Errs
}

// Answered reports whether the query that ended with e was answered all
// the same: an upstream's whole answer with a record miekg/dns does not
// read ended it (Unread), the upstreams' answer to the query, which is
// given and cached as any answer is, never a failure of theirs. False for
// a nil e, so that it answers for any error: errors.AsType's result.
func (e *UpstreamError) Answered() bool { return e != nil && e.Unread != nil }

// add records the failure err of a try to upstream.
func (e *UpstreamError) add(upstream string, err error) {
	kind := errorKind(err)
	e.Errs = append(e.Errs, fmt.Errorf("%s: %w", upstream, err))
	e.kinds = append(e.kinds, kind)
	e.upstreams = append(e.upstreams, upstream)
	if kind != kindTimeout {
		e.Timeout = false
	}
	var re *RcodeError
	if errors.As(err, &re) {
		e.Answer = re.Answer
	}
	var rd *RdataError
	if errors.As(err, &rd) && rd.answer() {
		e.Unread, e.UnreadFrom = rd.Raw, upstream
	}
}

// Upstreams is the distinct upstreams that failed, sorted: what the
// failure is about, for a log line.
func (e *UpstreamError) Upstreams() []string {
	out := slices.Clone(e.upstreams)
	slices.Sort(out)
	return slices.Compact(out)
}

func (e *UpstreamError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("%v: %s", ErrAllUpstreamsFailed, strings.Join(msgs, "; "))
}

func (e *UpstreamError) Unwrap() error { return ErrAllUpstreamsFailed }

// Causes is the distinct error kinds of the failures (see errorKind), in
// the order the upstreams were tried, joined by commas: for the log line.
func (e *UpstreamError) Causes() string {
	var distinct []string
	for _, k := range e.kinds {
		if !slices.Contains(distinct, k) {
			distinct = append(distinct, k)
		}
	}
	return strings.Join(distinct, ",")
}

// AllServfail reports whether every upstream answered SERVFAIL: a
// resolution failure that may be cached briefly (RFC 9520).
func (e *UpstreamError) AllServfail() bool {
	for _, k := range e.kinds {
		if k != kindServfail {
			return false
		}
	}
	return len(e.kinds) > 0
}

// EDE is the Extended DNS Error (RFC 8914) for the client: 22 "No
// Reachable Authority" when every upstream timed out or answered with a
// failure RCODE (§4.23: "could not reach ... or they potentially refused
// to reply"), else 23 "Network Error". The text is "no upstream answered
// in time" when every try timed out; else it names each cause once, in the
// order the upstreams were tried, joined by "; ": "upstream did not answer
// in time", "upstream answered SERVFAIL" (REFUSED, NOTIMP), "upstream
// answer unusable: too big for UDP" (malformed, not for the question
// asked, query ID never sent), "upstream unreachable: network error".
func (e *UpstreamError) EDE() (uint16, string) {
	code := uint16(dns.ExtendedErrorCodeNoReachableAuthority)
	timedOut := kindTexts[kindTimeout]
	var texts []string
	for _, k := range e.kinds {
		text, ok := kindTexts[k]
		switch {
		case !ok:
			code = dns.ExtendedErrorCodeNetworkError
			text = ErrAnswerUnusable.Error()
		case k != kindTimeout && !strings.HasPrefix(k, "rcode_"):
			code = dns.ExtendedErrorCodeNetworkError
		}
		if !slices.Contains(texts, text) {
			texts = append(texts, text)
		}
	}
	if len(texts) == 1 && texts[0] == timedOut {
		return code, "no upstream answered in time"
	}
	return code, strings.Join(texts, "; ")
}

// kindTexts is the EDE text of each errorKind.
var kindTexts = map[string]string{
	kindTimeout:     "upstream did not answer in time",
	kindNetwork:     "upstream unreachable: network error",
	kindServfail:    "upstream answered SERVFAIL",
	kindRefused:     "upstream answered REFUSED",
	kindNotimp:      "upstream answered NOTIMP",
	kindFormerr:     "upstream answered FORMERR",
	kindBadvers:     "upstream answered BADVERS",
	kindBadcookie:   "upstream answered BADCOOKIE",
	kindOtherRcode:  "upstream answered an RCODE no query is answered with",
	kindTooBig:      ErrAnswerTooBig.Error(),
	kindMalformed:   ErrAnswerMalformed.Error(),
	kindMismatch:    ErrAnswerMismatch.Error(),
	kindWrongID:     ErrAnswerWrongID.Error(),
	kindTruncated:   ErrAnswerTruncated.Error(),
	kindCertificate: "upstream certificate did not verify",
	kindProtocol:    ErrProtocol.Error(),
}

// isTLSAlert reports whether err is the upstream ending a TLS handshake
// with an alert, over TLS (crypto/tls's "remote error") or QUIC (a
// CRYPTO_ERROR it sent, RFC 9001 §4.8): no ALPN protocol in common (RFC
// 7301 §3.2), a TLS version it does not take. The path to it works; the
// two ends do not agree.
func isTLSAlert(err error) bool {
	var oe *net.OpError
	var te *quic.TransportError
	return errors.As(err, &oe) && oe.Op == "remote error" ||
		errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError()
}

// isCertificateError reports whether err is a TLS certificate that did not
// verify, as crypto/tls reports it for TLS and QUIC alike.
func isCertificateError(err error) bool {
	var ve *tls.CertificateVerificationError
	var he x509.HostnameError
	var ue x509.UnknownAuthorityError
	var ie x509.CertificateInvalidError
	return errors.As(err, &ve) || errors.As(err, &he) || errors.As(err, &ue) || errors.As(err, &ie)
}
