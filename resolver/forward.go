package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Forwarder sends queries to the upstream resolvers in order, moving to the
// next one on a timeout, a network error or a malformed answer.
type Forwarder struct {
	upstreams []string // IP:port, in order of preference
	timeout   time.Duration
	udp, tcp  *dns.Client
}

// NewForwarder returns a Forwarder over upstreams with a per-try timeout.
func NewForwarder(upstreams []string, timeout time.Duration) *Forwarder {
	return &Forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		udp:       &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsSize},
		tcp:       &dns.Client{Net: "tcp", Timeout: timeout},
	}
}

// Upstreams lists the upstream addresses in order.
func (f *Forwarder) Upstreams() []string { return slices.Clone(f.upstreams) }

// sameAs reports whether f already forwards to upstreams with timeout.
func (f *Forwarder) sameAs(upstreams []string, timeout time.Duration) bool {
	return f != nil && f.timeout == timeout && slices.Equal(f.upstreams, upstreams)
}

// ErrAllUpstreamsFailed is returned when no upstream gave a usable answer.
var ErrAllUpstreamsFailed = errors.New("no upstream answered")

// errMismatch marks an answer that is not for the question asked.
var errMismatch = errors.New("answer does not match the question")

// UpstreamError reports why every upstream failed.
type UpstreamError struct {
	Errs    []error
	Timeout bool // every failure was a timeout: no upstream reachable
}

func (e *UpstreamError) Error() string {
	msgs := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("%v: %s", ErrAllUpstreamsFailed, strings.Join(msgs, "; "))
}

func (e *UpstreamError) Unwrap() error { return ErrAllUpstreamsFailed }

// upstreamQuery is the query sent upstream for req: a fresh ID, the
// question and the RD, CD and AD bits of the client, and our own EDNS (buffer
// ednsSize, the client's DO bit) with none of the client's options: Client
// Subnet, cookies and padding belong to the client's hop, not to ours.
func upstreamQuery(req *dns.Msg) *dns.Msg {
	q := new(dns.Msg)
	q.Id = dns.Id()
	q.Opcode = dns.OpcodeQuery
	q.RecursionDesired = req.RecursionDesired
	q.CheckingDisabled = req.CheckingDisabled
	q.AuthenticatedData = req.AuthenticatedData
	q.Question = []dns.Question{req.Question[0]}
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	q.SetEdns0(ednsSize, do)
	return q
}

// Forward asks the upstreams for req. overTCP sends over TCP from the
// start, as for a query that came in on TCP. It returns the raw upstream
// answer (with the upstream's ID) and which upstream gave it.
func (f *Forwarder) Forward(ctx context.Context, req *dns.Msg, overTCP bool) (*dns.Msg, string, error) {
	q := upstreamQuery(req)
	uerr := &UpstreamError{Timeout: true}
	for _, up := range f.upstreams {
		resp, err := f.exchange(ctx, q, up, overTCP)
		if err == nil {
			return resp, up, nil
		}
		uerr.Errs = append(uerr.Errs, fmt.Errorf("%s: %w", up, err))
		if !isTimeout(err) {
			uerr.Timeout = false
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", uerr
}

// exchange is one try against one upstream, with the retry over TCP of a
// truncated UDP answer.
func (f *Forwarder) exchange(ctx context.Context, q *dns.Msg, upstream string, overTCP bool) (*dns.Msg, error) {
	client := f.udp
	if overTCP {
		client = f.tcp
	}
	tctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	// The client discards UDP answers whose ID differs (late answers to
	// earlier queries, spoofing attempts) and uses a connected socket, so
	// answers from any other address never reach us.
	resp, _, err := client.ExchangeContext(tctx, q, upstream)
	if err == nil && resp.Truncated && !overTCP {
		tctx2, cancel2 := context.WithTimeout(ctx, f.timeout)
		defer cancel2()
		resp, _, err = f.tcp.ExchangeContext(tctx2, q, upstream)
	}
	if err != nil {
		return nil, err
	}
	if !resp.Response || resp.Id != q.Id || !sameQuestion(resp, q) {
		return nil, errMismatch
	}
	return resp, nil
}

// sameQuestion compares the answer's question with ours; names compare
// case-insensitively (RFC 4343).
func sameQuestion(resp, q *dns.Msg) bool {
	if len(resp.Question) != 1 {
		return false
	}
	a, b := resp.Question[0], q.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
