package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
)

// DoQ error codes (RFC 9250 §4.3), sent in QUIC's CONNECTION_CLOSE,
// RESET_STREAM and STOP_SENDING.
const (
	doqNoError          = 0x0 // DOQ_NO_ERROR: closing, nothing wrong
	doqInternalError    = 0x1 // DOQ_INTERNAL_ERROR: the peer could not process the query
	doqProtocolError    = 0x2 // DOQ_PROTOCOL_ERROR: the peer broke RFC 9250
	doqRequestCancelled = 0x3 // DOQ_REQUEST_CANCELLED: the client gave up on the query
	doqExcessiveLoad    = 0x4 // DOQ_EXCESSIVE_LOAD: the server is overloaded
	doqUnspecifiedError = 0x5 // DOQ_UNSPECIFIED_ERROR
)

// doqIdleTimeout is the QUIC idle timeout of a DoQ connection (RFC 9000
// §10.1): one unused for so long is closed, and the next query dials anew.
const doqIdleTimeout = 30 * time.Second

// DoQError is a DoQ stream reset or connection closed by the upstream with
// an error code (RFC 9250 §4.3). It is an ErrProtocol.
type DoQError struct {
	Code   uint64 // the error code: DOQ_INTERNAL_ERROR is 1, DOQ_EXCESSIVE_LOAD 4...
	Stream bool   // the query's stream was reset; false: the whole connection was closed
}

func (e *DoQError) Error() string {
	what := "closed the connection"
	if e.Stream {
		what = "reset the query's stream"
	}
	return fmt.Sprintf("the upstream %s with %s", what, doqCodeName(e.Code))
}

// Unwrap makes a DoQError an ErrProtocol.
func (e *DoQError) Unwrap() error { return ErrProtocol }

// doqCodeName names a DoQ error code as RFC 9250 §8.4 does.
func doqCodeName(code uint64) string {
	switch code {
	case doqNoError:
		return "DOQ_NO_ERROR (0)"
	case doqInternalError:
		return "DOQ_INTERNAL_ERROR (1)"
	case doqProtocolError:
		return "DOQ_PROTOCOL_ERROR (2)"
	case doqRequestCancelled:
		return "DOQ_REQUEST_CANCELLED (3)"
	case doqExcessiveLoad:
		return "DOQ_EXCESSIVE_LOAD (4)"
	case doqUnspecifiedError:
		return "DOQ_UNSPECIFIED_ERROR (5)"
	}
	return fmt.Sprintf("error code %#x", code)
}

// doqTransport sends queries to one DNS-over-QUIC upstream (RFC 9250) on
// one kept connection, each query on a bidirectional stream of its own
// (§4.2): a 2-octet length, the query with ID 0 (§4.2.1), then STREAM FIN;
// the answer comes back the same way on the same stream. A query whose ctx
// ends cancels its stream with DOQ_REQUEST_CANCELLED (§4.3.2). An answer
// that breaks the protocol (a non-zero ID, FIN before the whole message,
// more than one answer, edns-tcp-keepalive: §4.3.3, §5.5.2) closes the
// connection with DOQ_PROTOCOL_ERROR. A connection that closes or breaks
// is dialled anew, and a query in flight on it is sent once more, unless
// the upstream closed it with an error code (DOQ_EXCESSIVE_LOAD...): that
// query fails with a *DoQError, and the Forwarder asks the next upstream.
// Such a close is one failure of the upstream, whatever the queries in
// flight on it: each query fails with its share of it (sharedFailure).
type doqTransport struct {
	addr    Address
	tls     *tls.Config
	quic    *quic.Config
	timeout time.Duration
	life    context.Context // ends at Close: stops a dial in progress
	stop    context.CancelFunc

	mu      sync.Mutex
	conn    *doqConn // the kept connection; nil or closed: dial anew
	dialing *doqDial // the dial in progress, if any, shared by the queries waiting for it
	closed  bool
}

// doqConn is a connection of a doqTransport.
type doqConn struct {
	*quic.Conn
	// closed makes the upstream's close of the connection with an error
	// code one failure of its health, whatever the number of queries in
	// flight on it.
	closed sharedFailure
	// answered is when an answer last came in on the connection (the
	// dial's end before the first). QUIC acknowledges packets below DNS,
	// so a server that no longer answers on a connection keeps it from
	// going idle.
	answered lastAnswer
}

// lastAnswer is when an answer last came in on a kept DoQ or DoH
// connection (clockReading), to find the connection silent as
// dotConn.silent finds a DoT one: a query that timed out gives its
// connection up when no answer came in on it for a whole timeout.
type lastAnswer struct{ at atomic.Int64 }

// mark records an answer (or the connection's dial) at now.
func (l *lastAnswer) mark(now time.Time) { l.at.Store(clockReading(now)) }

// silent reports whether no answer came in for a whole timeout before now.
func (l *lastAnswer) silent(now time.Time, timeout time.Duration) bool {
	return now.Sub(clockTime(l.at.Load())) >= timeout
}

// doqDial is a dial in progress.
type doqDial struct {
	done chan struct{} // closed when conn or err is set
	conn *doqConn
	err  error
	// failure makes err one failure of the upstream, whatever the number
	// of queries that waited for the dial.
	failure sharedFailure
}

func newDoQ(addr Address, opts Options) *doqTransport {
	life, stop := context.WithCancel(context.Background())
	return &doqTransport{
		addr: addr,
		tls:  clientTLS(addr.ServerName, opts.RootCAs, "doq"),
		quic: &quic.Config{
			HandshakeIdleTimeout: opts.Timeout,
			MaxIdleTimeout:       doqIdleTimeout,
			// DoQ uses the client's bidirectional streams alone (RFC 9250
			// §4.2): the server may open none.
			MaxIncomingStreams:    -1,
			MaxIncomingUniStreams: -1,
		},
		timeout: opts.Timeout,
		life:    life,
		stop:    stop,
	}
}

// Address is the upstream as configured: "quic://9.9.9.9:853#dns.quad9.net".
func (t *doqTransport) Address() string { return t.addr.String() }

// Exchange sends q and waits for its answer (see Transport and
// doqTransport). Errors are those listed at ErrProtocol.
func (t *doqTransport) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	wq, err := packPadded(q, true)
	if err != nil {
		return nil, err
	}
	return exchangeRetrying(ctx, t.timeout, "dns over quic", wq, t.isClosed, t.try)
}

// try sends the query on a stream of the kept connection and reads its
// answer. A query whose whole timeout passed with no answer read on the
// connection, its own or another's, gives the connection up: the
// upstream stopped answering on it (a hung server behind a QUIC stack
// that still acknowledges, or one restarted without a stateless reset,
// whose connection quic-go keeps until its idle timeout), and the next
// query dials anew rather than time out on it too. Queries still in
// flight on it are sent once more on the new one (brokenConnError).
func (t *doqTransport) try(ctx context.Context, wq *wireQuery) (*dns.Msg, error) {
	conn, err := t.connection(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := t.ask(ctx, conn, wq)
	if err != nil && errors.Is(ContextErr(ctx), context.DeadlineExceeded) && conn.answered.silent(time.Now(), t.timeout) {
		t.forget(conn)
		_ = conn.CloseWithError(doqNoError, errSilent.Error())
	}
	return resp, err
}

// ask sends the query on a stream of conn and reads its answer.
func (t *doqTransport) ask(ctx context.Context, conn *doqConn, wq *wireQuery) (*dns.Msg, error) {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, t.streamError(conn, err)
	}
	stop := context.AfterFunc(ctx, func() {
		str.CancelWrite(doqRequestCancelled)
		str.CancelRead(doqRequestCancelled)
	})
	defer stop()
	if _, err := str.Write(wq.withID(0, true)); err != nil {
		return nil, t.streamError(conn, err)
	}
	if err := str.Close(); err != nil { // STREAM FIN: the query is complete
		return nil, t.streamError(conn, err)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(str, hdr[:]); err != nil {
		return nil, t.streamError(conn, err)
	}
	b := make([]byte, int(hdr[0])<<8|int(hdr[1]))
	if _, err := io.ReadFull(str, b); err != nil {
		return nil, t.streamError(conn, err)
	}
	conn.answered.mark(time.Now())
	// The server ends the stream after its answer (§4.2); anything more on
	// it is a second answer, which a query never has.
	var more [1]byte
	if n, err := str.Read(more[:]); n > 0 {
		return nil, t.protocolError(conn, fmt.Errorf("%w: more than one answer on a stream", ErrProtocol))
	} else if err != io.EOF {
		return nil, t.streamError(conn, err)
	}
	resp, err := wq.answer(b, 0)
	switch {
	case errors.Is(err, ErrProtocol):
		return nil, t.protocolError(conn, err)
	case err != nil:
		return nil, err
	}
	return resp, nil
}

// connection is the kept connection, dialled (once for all the queries
// that wait for it) when there is none or it has closed.
func (t *doqTransport) connection(ctx context.Context) (*doqConn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	if t.conn != nil && t.conn.Context().Err() == nil {
		conn := t.conn
		t.mu.Unlock()
		return conn, nil
	}
	d := t.dialing
	if d == nil {
		d = &doqDial{done: make(chan struct{})}
		t.dialing = d
		go t.dial(d)
	}
	t.mu.Unlock()
	select {
	case <-d.done:
		return d.conn, d.failure.share(d.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// dial connects, with the QUIC handshake, within the transport's timeout.
func (t *doqTransport) dial(d *doqDial) {
	defer close(d.done)
	ctx, cancel := context.WithTimeout(t.life, t.timeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, t.addr.HostPort(), t.tls, t.quic)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dialing = nil
	switch {
	case t.closed:
		if conn != nil {
			_ = conn.CloseWithError(doqNoError, "")
		}
		d.err = ErrClosed
	case err != nil:
		d.err = fmt.Errorf("connecting over quic: %w", typedDialError(err))
	default:
		c := &doqConn{Conn: conn}
		c.answered.mark(time.Now())
		t.conn, d.conn = c, c
	}
}

// streamError types an error of a query's stream: the stream reset, or
// the connection closed, by the upstream with an error code is a
// *DoQError; the connection closing or breaking under the query otherwise
// (DOQ_NO_ERROR, an idle timeout, a stateless reset, the network) is a
// *brokenConnError (the query is sent once more); a stream ending before
// the whole answer came is a protocol error.
func (t *doqTransport) streamError(conn *doqConn, err error) error {
	var se *quic.StreamError
	var ae *quic.ApplicationError
	switch {
	case errors.As(err, &se) && se.Remote:
		return &DoQError{Code: uint64(se.ErrorCode), Stream: true}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return t.protocolError(conn, fmt.Errorf("%w: the stream ended before the whole answer", ErrProtocol))
	case conn.Context().Err() == nil && !connectionClosed(err):
		// A stream may see the connection's close before its context
		// is cancelled: the close error itself says so.
		return fmt.Errorf("dns over quic: %w", err)
	}
	t.forget(conn)
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode != doqNoError {
		// The upstream closed the connection with an error code: it is
		// overloaded (DOQ_EXCESSIVE_LOAD), or failed, or found us at fault
		// (RFC 9250 §4.3). That is its answer, as a stream reset is: the
		// query is not sent again on a new connection at once, which to an
		// overloaded server is more load, but fails over to the next
		// upstream, and this one counts as failing, as after a REFUSED
		// answer: once for the close, not once for each query in flight
		// on the connection, so that one close (a server restarting) does
		// not mark the upstream down at once. The next query to it dials
		// anew.
		return conn.closed.share(fmt.Errorf("dns over quic: %w: %w", &DoQError{Code: uint64(ae.ErrorCode)}, err))
	}
	return &brokenConnError{err: err}
}

// connectionClosed reports an error that ends the whole QUIC connection
// (a stream returns it once the connection is closed), rather than one
// stream.
func connectionClosed(err error) bool {
	var (
		ae *quic.ApplicationError
		te *quic.TransportError
		it *quic.IdleTimeoutError
		ht *quic.HandshakeTimeoutError
		sr *quic.StatelessResetError
	)
	return errors.As(err, &ae) || errors.As(err, &te) || errors.As(err, &it) || errors.As(err, &ht) || errors.As(err, &sr)
}

// protocolError closes conn with DOQ_PROTOCOL_ERROR, as RFC 9250 §4.3.3
// asks of a peer that finds the protocol broken; err (an ErrProtocol)
// says why.
func (t *doqTransport) protocolError(conn *doqConn, err error) error {
	t.forget(conn)
	_ = conn.CloseWithError(doqProtocolError, err.Error())
	return fmt.Errorf("dns over quic: %w", err)
}

// forget drops conn as the kept connection, if it still is.
func (t *doqTransport) forget(conn *doqConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == conn {
		t.conn = nil
	}
}

func (t *doqTransport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Close closes the connection with DOQ_NO_ERROR; queries in flight get
// ErrClosed.
func (t *doqTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	conn := t.conn
	t.conn = nil
	t.mu.Unlock()
	t.stop()
	if conn != nil {
		_ = conn.CloseWithError(doqNoError, "")
	}
	return nil
}
