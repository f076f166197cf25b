package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
)

// defaultEncryptedTimeout is Options.Timeout when it is 0: the default
// upstream_timeout.
const defaultEncryptedTimeout = 2 * time.Second

// maxStreamMessage is the largest DNS message a 2-octet length field or a DoH
// body can carry (RFC 1035 §4.2.2, RFC 8484 §6).
const maxStreamMessage = 65535

// Errors of the encrypted transports, for errors.Is and errors.As.
// Besides these, an Exchange error is, by cause:
//
//   - a timeout: errors.Is(err, context.DeadlineExceeded), or a net.Error
//     whose Timeout() is true (a dial or handshake that timed out); a
//     cancelled ctx gives context.Canceled;
//   - a certificate that does not verify: errors.As with
//     *tls.CertificateVerificationError, and with the x509 error inside it
//     (x509.HostnameError for a wrong name, x509.UnknownAuthorityError for
//     an untrusted root, x509.CertificateInvalidError for an expired one);
//   - ErrConnRefused, ErrProtocol (with *HTTPStatusError and *DoQError),
//     ErrClosed, below;
//   - anything else is a network failure (a reset, an unreachable host).
var (
	// ErrClosed: Exchange after Close, or a query in flight when Close was
	// called. It wraps net.ErrClosed, as Transport requires. (QUIC errors
	// also wrap net.ErrClosed: test for ErrClosed itself to tell the
	// transport's own closing apart.)
	ErrClosed = fmt.Errorf("upstream transport closed: %w", net.ErrClosed)
	// ErrConnRefused: the upstream refused the connection: a TCP reset to
	// the connect (nothing listens there), or QUIC's CONNECTION_REFUSED.
	// A closed UDP port shows over QUIC as a handshake timeout, as quic-go
	// does not see ICMP errors.
	ErrConnRefused = errors.New("upstream refused the connection")
	// ErrProtocol: the upstream broke its transport's protocol: an answer
	// that does not parse, that is not a response, that answers another
	// question or carries another ID, a DoH answer with an HTTP status other
	// than 2xx (*HTTPStatusError), another content type or a body over
	// 65,535 octets, a DoQ stream or connection reset with an error code
	// (*DoQError), a DoQ answer with a non-zero ID or the
	// edns-tcp-keepalive option (RFC 9250 §4.3.3, §5.5.2).
	ErrProtocol = errors.New("upstream broke the protocol")
)

// newEncrypted builds the transport for an encrypted upstream: DNS over
// TLS, HTTPS or QUIC. It makes no connection: the first Exchange does. Plain
// upstreams are not built here (the error says so): NewTransport makes
// those with NewPlain.
func newEncrypted(addr Address, opts Options) (Transport, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultEncryptedTimeout
	}
	switch addr.Kind {
	case KindTLS:
		return newDoT(addr, opts), nil
	case KindHTTPS:
		return newDoH(addr, opts), nil
	case KindQUIC:
		return newDoQ(addr, opts), nil
	}
	return nil, fmt.Errorf("%s: newEncrypted builds encrypted upstreams only, not %s ones", addr, addr.Kind)
}

// wireQuery is a query packed for an encrypted upstream.
type wireQuery struct {
	q      *dns.Msg // the caller's query, unchanged
	wire   []byte   // the padded query, with ID 0; transports patch in their own
	hadOPT bool     // q has an OPT record: if not, the answer's is removed
	// noKeepalive: the transport forbids edns-tcp-keepalive (DoQ, RFC 9250
	// §5.5.2); an answer carrying it is a protocol error.
	noKeepalive bool
}

// Padding block length for queries (RFC 8467 §4.1: "Block-Length Padding",
// recommended 128 octets for queries).
const queryPaddingBlock = 128

// ednsNoOPTSize is the UDP payload size of the OPT record added to a query
// that had none, to carry its padding: the DNS flag day 2020 size. Over a
// stream transport it only tells the upstream we speak EDNS.
const ednsNoOPTSize = 1232

// packPadded packs a copy of q for an encrypted upstream: ID 0, and EDNS(0)
// Padding that makes the message a multiple of 128 octets long (RFC 8467
// §4.1), in q's OPT record or in one added for it. A Padding option q
// already has is replaced. dropKeepalive leaves out edns-tcp-keepalive,
// which DoQ forbids (RFC 9250 §5.5.2). q is not modified.
func packPadded(q *dns.Msg, dropKeepalive bool) (*wireQuery, error) {
	if len(q.Question) != 1 {
		return nil, fmt.Errorf("packing query: %d questions, not 1", len(q.Question))
	}
	m := *q // shallow: the records are shared and not changed
	m.Id = 0
	m.Compress = false
	orig := q.IsEdns0()
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: ednsNoOPTSize}}
	if orig != nil {
		opt.Hdr.Class = orig.Hdr.Class
		opt.Hdr.Ttl = orig.Hdr.Ttl // extended RCODE, version, DO and the other flags
		for _, o := range orig.Option {
			if o.Option() == dns.EDNS0PADDING || dropKeepalive && o.Option() == dns.EDNS0TCPKEEPALIVE {
				continue
			}
			opt.Option = append(opt.Option, o)
		}
	}
	pad := &dns.EDNS0_PADDING{}
	opt.Option = append(opt.Option, pad)
	m.Extra = make([]dns.RR, 0, len(q.Extra)+1)
	for _, rr := range q.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			m.Extra = append(m.Extra, rr)
		}
	}
	// OPT goes before a TSIG or SIG(0), which must come last.
	at := len(m.Extra)
	if at > 0 {
		if t := m.Extra[at-1].Header().Rrtype; t == dns.TypeTSIG || t == dns.TypeSIG {
			at--
		}
	}
	m.Extra = append(m.Extra[:at], append([]dns.RR{opt}, m.Extra[at:]...)...)
	// Pack once with an empty Padding option (its 4-octet header counts),
	// then again with the padding that fills the block.
	b, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("packing query: %w", err)
	}
	if r := len(b) % queryPaddingBlock; r != 0 {
		pad.Padding = make([]byte, queryPaddingBlock-r)
		if b, err = m.Pack(); err != nil {
			return nil, fmt.Errorf("packing query: %w", err)
		}
	}
	if len(b) > maxStreamMessage {
		return nil, fmt.Errorf("packing query: %d octets, more than %d", len(b), maxStreamMessage)
	}
	return &wireQuery{q: q, wire: b, hadOPT: orig != nil, noKeepalive: dropKeepalive}, nil
}

// withID is the packed query with its ID set to id, in a new buffer with
// room for a 2-octet length field before it when framed (DoT, DoQ).
func (w *wireQuery) withID(id uint16, framed bool) []byte {
	off := 0
	if framed {
		off = 2
	}
	b := make([]byte, off+len(w.wire))
	copy(b[off:], w.wire)
	if framed {
		b[0], b[1] = byte(len(w.wire)>>8), byte(len(w.wire))
	}
	b[off], b[off+1] = byte(id>>8), byte(id)
	return b
}

// answer unpacks an upstream's answer to w, sent with ID id: a response to
// the same question (names compared in wire form, case-insensitively), or
// an error wrapping ErrProtocol. The answer gets the caller's ID back, loses
// the hop-by-hop EDNS options (Padding, edns-tcp-keepalive: RFC 7830 §3,
// RFC 7828 §3.3.2), and loses its OPT record altogether when the caller's
// query had none: that OPT was only added to carry padding. Options
// dnsfence does not read are ignored whatever their data (UnpackAnswer).
// An answer with a record miekg/dns does not read is its RdataError,
// checked and given the caller's ID as one it reads (checkUnread).
func (w *wireQuery) answer(b []byte, id uint16) (*dns.Msg, error) {
	if w.noKeepalive && dnswire.HasOption(b, dns.EDNS0TCPKEEPALIVE) {
		// In the octets: the answer as parsed need not hold it (unpackMsg),
		// nor can one miekg/dns does not read.
		return nil, fmt.Errorf("%w: edns-tcp-keepalive in the answer", ErrProtocol)
	}
	resp, err := unpackMsg(b)
	switch {
	case errors.Is(err, ErrAnswerRdata):
		// The zone's data, not a broken upstream: its connection and
		// the other queries on it stay, when it answers the query.
		if cerr := checkUnread(err, id, w.q); cerr != err {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, cerr)
		}
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w: malformed answer: %w", ErrProtocol, err)
	}
	switch {
	case !resp.Response:
		return nil, fmt.Errorf("%w: a query came back, not an answer", ErrProtocol)
	case resp.Id != id:
		return nil, fmt.Errorf("%w: answer with ID %d to a query with ID %d", ErrProtocol, resp.Id, id)
	case len(resp.Question) == 0 && failureRcode(resp.Rcode):
		// Some servers leave the question out of a failure (SERVFAIL,
		// REFUSED, NOTIMP), as checkAnswer allows on every transport: the
		// RCODE still says what happened. Any other answer must say what
		// it answers.
	case len(resp.Question) != 1 || !sameQuestionWire(resp.Question[0], w.q.Question[0]):
		return nil, fmt.Errorf("%w: answer for another question", ErrProtocol)
	}
	resp.Id = w.q.Id
	if opt := resp.IsEdns0(); opt != nil {
		kept := opt.Option[:0]
		for _, o := range opt.Option {
			if !hopOption(o.Option()) {
				kept = append(kept, o)
			}
		}
		opt.Option = kept
		if !w.hadOPT {
			if resp.Rcode > 0xF {
				return nil, fmt.Errorf("%w: extended RCODE %d in the answer to a query without EDNS", ErrProtocol, resp.Rcode)
			}
			extra := resp.Extra[:0]
			for _, rr := range resp.Extra {
				if rr.Header().Rrtype != dns.TypeOPT {
					extra = append(extra, rr)
				}
			}
			resp.Extra = extra
		}
	}
	return resp, nil
}

// hopOption reports whether an answer's EDNS option code is its hop's
// alone: Padding and edns-tcp-keepalive (RFC 7830 §3, RFC 7828 §3.3.2),
// which an answer dnsfence relays leaves out.
func hopOption(code uint16) bool {
	return code == dns.EDNS0PADDING || code == dns.EDNS0TCPKEEPALIVE
}

// sameQuestionWire compares two questions, names in wire form and without
// regard to ASCII case (RFC 4343), whatever their presentation text.
func sameQuestionWire(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && blocklist.SameName(a.Name, b.Name)
}

// exchangeCtxError is the error for an exchange whose ctx ended (ContextErr):
// ctx's own error (context.DeadlineExceeded or context.Canceled), with
// what was being done and, when there is one, what had gone wrong before.
func exchangeCtxError(ctx context.Context, doing string, cause error) error {
	err := ContextErr(ctx)
	if cause != nil && !errors.Is(cause, err) && !isTimeout(cause) {
		return fmt.Errorf("%s: %w (after: %v)", doing, err, cause)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// ContextErr is ctx.Err(), or context.DeadlineExceeded once ctx's
// deadline has passed though ctx is not done yet. A dial, read or write
// given ctx's deadline can time out in that gap: the network poller's
// timer and the context's fire apart, and under load the context's fires
// late. Its error is then the query's deadline, as when ctx ended first,
// not a connection that broke or an upstream that failed: a DoT write
// that timed out at the deadline was retried on a new connection, and its
// second timeout returned as "the connection broke" (CI, under -race).
// Whoever decides after a failed exchange whether to try again asks this,
// not ctx.Err().
func ContextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// typedDialError types an error of making a connection: a refused connection
// wraps ErrConnRefused.
func typedDialError(err error) error {
	var te *quic.TransportError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &te) && te.Remote && te.ErrorCode == quic.ConnectionRefused {
		return fmt.Errorf("%w: %w", ErrConnRefused, err)
	}
	return err
}

// exchangeRetrying is the exchange of a connection-keeping transport (DoT,
// DoQ): try sends wq on a kept connection, and when that connection broke
// under it (a *brokenConnError) it is tried once more on a new one, all
// within timeout. A connection that broke because another query's frame
// was cut at that query's deadline (a *writeCutError) was no fault of the
// upstream's nor of this query's try: the query goes to a new connection
// without its counting as a try. doing names the transport in a timeout's error ("dns
// over tls"); closed, when not nil, reports the transport closed, which
// ends the exchange with ErrClosed.
func exchangeRetrying(ctx context.Context, timeout time.Duration, doing string, wq *wireQuery,
	closed func() bool, try func(context.Context, *wireQuery) (*dns.Msg, error)) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var broken error // an earlier try's connection broke
	for tries := 0; ; {
		resp, err := try(ctx, wq)
		switch {
		case err == nil:
			return resp, nil
		case closed != nil && closed():
			return nil, ErrClosed
		case ContextErr(ctx) != nil:
			return nil, exchangeCtxError(ctx, doing, broken)
		}
		if _, ok := errors.AsType[*brokenConnError](err); !ok {
			return nil, err
		}
		if _, cut := errors.AsType[*writeCutError](err); !cut {
			if tries++; tries == 2 {
				return nil, err
			}
		}
		broken = err
	}
}
