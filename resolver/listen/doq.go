package listen

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
)

// DoQ error codes (RFC 9250 §4.3). Untyped, as they serve both as a
// quic.ApplicationErrorCode (CONNECTION_CLOSE) and as a
// quic.StreamErrorCode (RESET_STREAM, STOP_SENDING).
const (
	// DoQNoError: the connection or stream closes with nothing wrong
	// (an idle connection, a server shutting down).
	DoQNoError = 0x0
	// DoQInternalError: the server could not answer a query (RESET_STREAM,
	// §4.3.2).
	DoQInternalError = 0x1
	// DoQProtocolError: the peer broke the mapping of §4.2 (§4.3.3); the
	// connection is closed.
	DoQProtocolError = 0x2
	// DoQRequestCancelled: the client cancelled a query (§4.3.1).
	DoQRequestCancelled = 0x3
	// DoQExcessiveLoad: the server closes a connection because of load;
	// here, a connection Admit refused.
	DoQExcessiveLoad = 0x4
)

// Defaults of DoQOptions.
const (
	DefaultDoQMaxConns         = 1000
	DefaultDoQMaxStreams       = 100
	DefaultDoQHandshakeTimeout = 5 * time.Second
	DefaultDoQReadTimeout      = 10 * time.Second
	DefaultDoQIdleTimeout      = 30 * time.Second
)

// Bounds of the linger of a graceful shutdown.
const (
	minDoQLinger = 50 * time.Millisecond
	maxDoQLinger = 2 * time.Second
)

// doqWriteTimeout bounds writing one answer: a client that stops granting
// flow-control credit cannot hold a stream.
const doqWriteTimeout = 10 * time.Second

// DoQOptions configures a DoQServer. Handler and TLS are required; a zero
// field takes the default named beside it.
type DoQOptions struct {
	// Handler answers the queries.
	Handler Handler
	// Count, when set, counts the queries the listener answers or refuses
	// itself: ResultBadRequest for each protocol error, "formerr" and
	// "notimp" for the DNS rejections of DESIGN.md §1 step 1,
	// ResultDropped for a query not read whole before the stop (Shutdown)
	// or past QueryBudget. Transport is QUIC.
	Count Counter
	// Log gets lifecycle and protocol-error lines at debug level. Nil:
	// discarded.
	Log *zap.Logger
	// TLS is the server TLS configuration: ServerTLSConfig(store,
	// ALPNDoQ). QUIC always negotiates TLS 1.3.
	TLS *tls.Config
	// Admit, when set, decides whether a connection from peer is served,
	// once the peer's address is proven: before the handshake for an
	// attempt that proved it with a token (a Retry's or NEW_TOKEN's,
	// refused with CONNECTION_REFUSED, as TCP is at accept), else when
	// the handshake is done (refused with DOQ_EXCESSIVE_LOAD). release is
	// called once when the connection closes.
	Admit func(peer netip.Addr) (release func(), ok bool)
	// MaxConns caps the connections open or in handshake at once; a
	// connection attempt beyond it is refused before the handshake with
	// the QUIC transport error CONNECTION_REFUSED. Once half of it is
	// taken, every attempt must first prove its source address with a
	// Retry (verifySourceAddress). Default DefaultDoQMaxConns.
	MaxConns int
	// MaxStreams is how many queries (bidirectional streams) one
	// connection may have open at once (QUIC MAX_STREAMS); a client cannot
	// open more. Default DefaultDoQMaxStreams.
	MaxStreams int
	// HandshakeTimeout bounds the QUIC handshake: a connection attempt
	// whose client falls silent for that long is dropped and its place
	// in MaxConns given back. quic-go's HandshakeIdleTimeout, so a client
	// that keeps sending without finishing is dropped at twice it.
	// Default DefaultDoQHandshakeTimeout.
	HandshakeTimeout time.Duration
	// HandshakeFailed, when set, counts a connection attempt whose QUIC
	// handshake failed (Config.HandshakeFailed; the stop and admission
	// refusals are not counted).
	HandshakeFailed func()
	// Closed, when set, counts a connection closed for what its client
	// did once admitted, by reason (Config.Closed).
	Closed func(reason string)
	// ReadTimeout bounds the arrival of a stream's whole query and its
	// STREAM FIN, and the wait for a connection's first stream after its
	// handshake (the connection is then closed with DOQ_NO_ERROR).
	// Default DefaultDoQReadTimeout.
	ReadTimeout time.Duration
	// IdleTimeout closes a connection, with DOQ_NO_ERROR, when it has had
	// no query in progress for that long since its last (RFC 9250 §5.5).
	// Default DefaultDoQIdleTimeout.
	IdleTimeout time.Duration
	// QueryBudget bounds the octets of the queries held while they
	// arrive, over all the listener's connections, past the first 512 of
	// each stream (queryBudget): a stream whose query would go past it is
	// reset with DOQ_EXCESSIVE_LOAD and counted dropped. Default
	// DefaultQueryBudget.
	QueryBudget int64
}

// DoQServer serves DNS over dedicated QUIC connections (RFC 9250): ALPN
// "doq", one query per client-initiated bidirectional stream (a 2-octet
// length, the message with ID 0, then STREAM FIN), the answer written
// back the same way on that stream. What breaks the mapping closes the
// connection with DOQ_PROTOCOL_ERROR (§4.3.3): a message ID other than 0
// (§4.2.1), a short or extra message, no STREAM FIN within ReadTimeout, a
// message that is not a query, the edns-tcp-keepalive option in any
// message, one answered NOTIMP or FORMERR too (§5.5.2),
// a unidirectional stream (refused by QUIC: MAX_STREAMS 0). Every answer
// with an OPT record is padded (§5.4, doqFrame).
type DoQServer struct {
	opt DoQOptions
	log *zap.Logger

	// open counts connections from their first packet to their close,
	// for MaxConns; changed only in connContext and its AfterFunc.
	open atomic.Int64
	// unproven counts, by client network (ClientNetwork: a /32, or a /56
	// for IPv6, as the per-client cap counts), the connection attempts in
	// handshake whose address is not proven (verifySourceAddress); a
	// network with none has no entry.
	unprovenMu sync.Mutex
	unproven   map[netip.Prefix]int

	mu       sync.Mutex
	tr       *quic.Transport
	ln       *quic.Listener
	conns    map[*doqConn]struct{}
	streams  int                       // queries in progress, over every connection
	reading  map[*quic.Stream]struct{} // streams whose query is still being read
	draining bool                      // Shutdown or Close was called
	closing  bool                      // Close was called
	drained  chan struct{}             // closed when draining and streams is 0
	// stopping is closed when draining starts: a wait to Serve again
	// (Server.serveDoQ) ends at it.
	stopping chan struct{}
	// wg counts the serveConn goroutines; added to under mu while not
	// draining (Serve), so that every Add comes before closeAll's Wait.
	wg sync.WaitGroup
	// afterAccept, when set (by tests, before Serve), runs in Serve
	// between Accept handing out a connection and its being counted in
	// wg: a test holds Serve there across a Close.
	afterAccept func()

	// queries holds the queries arriving to opt.QueryBudget.
	queries queryBudget

	// resetKey makes the stateless reset tokens of every transport Serve
	// opens (RFC 9000 §10.3): a packet of a connection the socket no longer
	// knows, one from before the listener was opened again
	// (Server.serveDoQ), is answered with a stateless reset, and its
	// client drops the connection at once rather than after its idle
	// timeout. It is drawn once for the process and never leaves it: a key
	// shared by instances behind one anycast address or balancer would have
	// one reset another's connections (RFC 9000 §21.11).
	resetKey quic.StatelessResetKey
}

// NewDoQServer returns a DoQServer; Serve runs it.
func NewDoQServer(opt DoQOptions) *DoQServer {
	if opt.MaxConns <= 0 {
		opt.MaxConns = DefaultDoQMaxConns
	}
	if opt.MaxStreams <= 0 {
		opt.MaxStreams = DefaultDoQMaxStreams
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = DefaultDoQHandshakeTimeout
	}
	if opt.ReadTimeout <= 0 {
		opt.ReadTimeout = DefaultDoQReadTimeout
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = DefaultDoQIdleTimeout
	}
	if opt.QueryBudget <= 0 {
		opt.QueryBudget = DefaultQueryBudget
	}
	log := opt.Log
	if log == nil {
		log = zap.NewNop()
	}
	s := &DoQServer{opt: opt, log: log, conns: map[*doqConn]struct{}{}, reading: map[*quic.Stream]struct{}{},
		unproven: map[netip.Prefix]int{}, drained: make(chan struct{}), stopping: make(chan struct{}), queries: queryBudget{max: opt.QueryBudget}}
	_, _ = rand.Read(s.resetKey[:]) // never fails on Linux (Go 1.24+ crashes instead)
	return s
}

// errTooManyConns refuses a connection attempt over MaxConns.
var errTooManyConns = errors.New("doq: connection limit reached")

// Serve serves DoQ on pc until Shutdown or Close, which return it nil;
// else it returns the error that stopped it. pc stays the caller's to
// close.
func (s *DoQServer) Serve(pc net.PacketConn) error {
	if s.opt.TLS == nil || !slices.Contains(s.opt.TLS.NextProtos, ALPNDoQ) {
		return fmt.Errorf("doq: the TLS configuration must offer ALPN %q", ALPNDoQ)
	}
	// The datagrams of services that answer any datagram are dropped
	// before quic-go sees them, whose stateless resets would answer them
	// (doqSocket), and counted.
	drop := func() { s.count(ResultDropped) }
	tr := &quic.Transport{Conn: doqPacketConn(pc, drop), ConnContext: s.connContext, VerifySourceAddress: s.verifySourceAddress, StatelessResetKey: &s.resetKey}
	// Listen, not ListenEarly: no 0-RTT data is taken, as it can be
	// replayed (RFC 9250 §4.5): a NOTIFY or query would be acted on again
	// (TestDoQNoEarlyData).
	ln, err := tr.Listen(s.opt.TLS, &quic.Config{
		HandshakeIdleTimeout: s.opt.HandshakeTimeout,
		// QUIC's own idle timeout silently drops a peer that vanished;
		// keep-alives stop it from dropping a live one whose query is
		// still being forwarded. A connection without queries is closed
		// by checkIdle with DOQ_NO_ERROR.
		MaxIdleTimeout:        s.opt.IdleTimeout,
		KeepAlivePeriod:       s.opt.IdleTimeout / 2,
		MaxIncomingStreams:    int64(s.opt.MaxStreams),
		MaxIncomingUniStreams: -1, // DoQ has no unidirectional streams
		// A query is at most 2+65,535 octets.
		InitialStreamReceiveWindow: 1 << 17,
		MaxStreamReceiveWindow:     1 << 17,
	})
	s.mu.Lock()
	if err != nil {
		// A server closed before Serve ran (a StartEncrypted failing
		// at a later address, a Shutdown right after the start) has had
		// its socket closed too: that is the close asked for, not a
		// listener that failed.
		draining := s.draining
		s.mu.Unlock()
		if draining {
			return nil
		}
		return fmt.Errorf("doq: listening: %w", err)
	}
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		tr.Close()
		return nil
	}
	s.tr, s.ln = tr, ln
	s.mu.Unlock()
	for {
		conn, err := ln.Accept(context.Background())
		if err != nil {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if draining {
				return nil
			}
			return fmt.Errorf("doq: accepting: %w", err)
		}
		if s.afterAccept != nil {
			s.afterAccept()
		}
		// Counted under mu, and only while not draining, as the TCP
		// listener counts its connections: quic-go's Accept still hands
		// out the connections queued before its listener closed, so an
		// Add here could come after closeAll's Wait began, from a zero
		// count, unordered with it (sync.WaitGroup forbids that; the
		// Wait may panic on it, or return before the connection is
		// served). startDraining sets draining under mu before any Wait.
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			_ = conn.CloseWithError(DoQNoError, "server shutting down")
			continue // the queue drained, Accept fails and Serve returns
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// doqUnprovenPerAddress is how many connection attempts one client
// network (ClientNetwork) may have in handshake before it proves its
// address: the next gets a Retry.
const doqUnprovenPerAddress = 4

// verifySourceAddress is the Transport's VerifySourceAddress: whether a
// connection attempt without a token must first prove its source address
// with a Retry (RFC 9000 §8.1.2), one round trip more. Every attempt must
// while half of MaxConns are taken, so that Initials from spoofed
// addresses, which never finish a handshake, cannot hold more than half
// (each holds its place for up to twice HandshakeTimeout); and an attempt
// from a client network that already has doqUnprovenPerAddress in
// handshake unproven, which Admit cannot count before they finish. A proven address
// is admitted before its handshake (connContext).
func (s *DoQServer) verifySourceAddress(a net.Addr) bool {
	if 2*s.open.Load() >= int64(s.opt.MaxConns) {
		return true
	}
	s.unprovenMu.Lock()
	defer s.unprovenMu.Unlock()
	return s.unproven[ClientNetwork(udpPeer(a))] >= doqUnprovenPerAddress
}

// handshakeKey is the connection context key of the func that ends an
// unproven attempt's count in unproven; admittedKey marks a connection
// Admit took before its handshake; handshookKey is the key of the
// *atomic.Bool serveConn sets once the handshake is done.
type (
	handshakeKey struct{}
	admittedKey  struct{}
	handshookKey struct{}
)

// errNotAdmitted refuses a proven connection attempt Admit refused.
var errNotAdmitted = errors.New("doq: connection not admitted")

// connContext counts a connection attempt against MaxConns before its
// handshake, and gives the slot back when the connection ends. An attempt
// whose address is proven is admitted (Admit) now, as TCP is at accept;
// one whose address is not is counted in unproven until its handshake
// ends, and admitted after it (serveConn).
func (s *DoQServer) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	if s.open.Add(1) > int64(s.opt.MaxConns) {
		s.open.Add(-1)
		return nil, errTooManyConns
	}
	context.AfterFunc(ctx, func() { s.open.Add(-1) })
	// A connection that ends before its handshake is done is logged at
	// debug level, as DoT's and DoH's are (handshakeFailed).
	handshook := new(atomic.Bool)
	context.AfterFunc(ctx, func() {
		if cause := context.Cause(ctx); !handshook.Load() && !closedByClientApplication(cause) {
			s.handshakeFailed(info.RemoteAddr, cause)
		}
	})
	ctx = context.WithValue(ctx, handshookKey{}, handshook)
	peer := udpPeer(info.RemoteAddr)
	if info.AddrVerified {
		if s.opt.Admit == nil {
			return ctx, nil
		}
		release, ok := s.opt.Admit(peer)
		if !ok {
			return nil, errNotAdmitted // quic-go cancels ctx: the place is given back
		}
		context.AfterFunc(ctx, release)
		return context.WithValue(ctx, admittedKey{}, true), nil
	}
	network := ClientNetwork(peer)
	s.unprovenMu.Lock()
	s.unproven[network]++
	s.unprovenMu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			s.unprovenMu.Lock()
			defer s.unprovenMu.Unlock()
			if s.unproven[network]--; s.unproven[network] <= 0 {
				delete(s.unproven, network)
			}
		})
	}
	context.AfterFunc(ctx, done)
	return context.WithValue(ctx, handshakeKey{}, done), nil
}

// closedByClientApplication reports whether cause is a close the
// client's application chose: a CONNECTION_CLOSE of type 0x1d, or, in
// the Initial and Handshake packets that carry it while the client cannot
// know whether the listener has 1-RTT keys, of type 0x1c with
// APPLICATION_ERROR (RFC 9000 §10.2.3). quic-go sends one only from a
// connection its Dial returned, its handshake done; a client that fails
// the handshake (a certificate it does not trust, another ALPN) closes
// with CRYPTO_ERROR, and one that gives up on a stalled handshake sends
// nothing. A client that connects and closes at once (a probe, a client
// done with the connection) is often gone before serveConn marks the
// connection handshook, or before quic-go hands it to Accept at all.
func closedByClientApplication(cause error) bool {
	var ae *quic.ApplicationError
	var te *quic.TransportError
	return errors.As(cause, &ae) && ae.Remote ||
		errors.As(cause, &te) && te.Remote && te.ErrorCode == quic.ApplicationErrorErrorCode
}

// udpPeer is a UDP address's IP, unmapped and without a zone, as every
// listener names a peer.
func udpPeer(a net.Addr) netip.Addr {
	return peerAddr(a).Unmap().WithZone("")
}

// Shutdown stops accepting connections and queries, waits for the queries
// in progress to be answered (or ctx to end), lingers for the last answers
// to reach their clients, then closes every connection with DOQ_NO_ERROR.
func (s *DoQServer) Shutdown(ctx context.Context) error {
	s.startDraining()
	var err error
	select {
	case <-s.drained:
		// A connection close discards stream data not yet sent or
		// acknowledged; give the last answers a few round trips.
		linger := time.NewTimer(s.linger())
		select {
		case <-linger.C:
		case <-ctx.Done():
			linger.Stop()
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.closeAll()
	return err
}

// linger is how long the last answers are given to be delivered before a
// graceful close: three of the slowest connection's smoothed round trips
// (a loss and its retransmission), plus a margin, at most maxDoQLinger.
func (s *DoQServer) linger() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rtt time.Duration
	for c := range s.conns {
		rtt = max(rtt, c.conn.ConnectionStats().SmoothedRTT)
	}
	return min(3*rtt+minDoQLinger, maxDoQLinger)
}

// Close closes every connection at once, with DOQ_NO_ERROR.
func (s *DoQServer) Close() error {
	s.mu.Lock()
	s.closing = true // reads end with their connections, not as dropped
	s.mu.Unlock()
	s.startDraining()
	s.closeAll()
	return nil
}

func (s *DoQServer) startDraining() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return
	}
	s.draining = true
	close(s.stopping)
	if s.ln != nil {
		s.ln.Close()
	}
	if !s.closing {
		for st := range s.reading {
			_ = st.SetReadDeadline(time.Now()) // a query not read whole by now is not taken
		}
	}
	if s.streams == 0 {
		close(s.drained)
	}
}

func (s *DoQServer) closeAll() {
	s.mu.Lock()
	for c := range s.conns {
		_ = c.conn.CloseWithError(DoQNoError, "server shutting down")
	}
	tr := s.tr
	s.mu.Unlock()
	if tr != nil {
		tr.Close()
	}
	s.wg.Wait()
}

// readQuery reads st's query, at most max octets, registered in reading
// meanwhile so that the stop can end the read (startDraining). taken is
// false when the stop came first: the read ended by it, or done after it.
// held is what the query took of s.queries, to give back once it is
// answered, whatever the error.
func (s *DoQServer) readQuery(st *quic.Stream, max int64) (b []byte, held int64, taken bool, err error) {
	s.mu.Lock()
	s.reading[st] = struct{}{}
	if s.draining && !s.closing {
		_ = st.SetReadDeadline(time.Now()) // registered after the stop
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.reading, st)
		taken = !s.draining || s.closing || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded))
	}()
	b, held, err = s.queries.read(io.LimitReader(st, max), doqFree)
	return b, held, true, err
}

// streamStarted counts a query in progress; false once draining.
func (s *DoQServer) streamStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.streams++
	return true
}

func (s *DoQServer) streamDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams--; s.streams == 0 && s.draining {
		close(s.drained)
	}
}

func (s *DoQServer) count(result string) {
	if s.opt.Count != nil {
		s.opt.Count(QUIC, result)
	}
}

// doqConn is one client connection.
type doqConn struct {
	conn *quic.Conn

	mu     sync.Mutex
	active int       // streams in progress
	last   time.Time // when the last stream ended (or the connection began)
	asked  bool      // a stream was opened: the idle timeout applies from now on
	idle   *time.Timer

	// unread counts the answers being written on the connection's
	// streams.
	unread unread
}

// serveConn admits a connection and serves its streams, each on its own
// goroutine, until it closes.
func (s *DoQServer) serveConn(conn *quic.Conn) {
	defer s.wg.Done()
	ctx := conn.Context()
	if handshook, ok := ctx.Value(handshookKey{}).(*atomic.Bool); ok {
		handshook.Store(true)
	}
	if done, ok := ctx.Value(handshakeKey{}).(func()); ok {
		done() // the handshake is over: the address is proven now
	}
	if s.opt.Admit != nil && ctx.Value(admittedKey{}) == nil {
		peer := udpPeer(conn.RemoteAddr())
		release, ok := s.opt.Admit(peer)
		if !ok {
			_ = conn.CloseWithError(DoQExcessiveLoad, "connection refused")
			return
		}
		defer release()
	}
	c := &doqConn{conn: conn, last: time.Now()}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		_ = conn.CloseWithError(DoQNoError, "server shutting down")
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	// Stored under c.mu, which checkIdle takes before it resets the
	// timer: a timeout that passes before AfterFunc returns must find it.
	c.mu.Lock()
	c.idle = time.AfterFunc(s.firstQueryTimeout(), func() { s.checkIdle(c) })
	c.mu.Unlock()
	defer c.idle.Stop()

	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return // the connection is closed
		}
		if !s.streamStarted() {
			st.CancelRead(DoQNoError)
			st.CancelWrite(DoQNoError)
			continue
		}
		c.mu.Lock()
		c.active++
		c.asked = true
		c.mu.Unlock()
		streams.Add(1)
		go func() {
			defer streams.Done()
			defer s.streamDone()
			defer func() {
				c.mu.Lock()
				c.active--
				c.last = time.Now()
				c.mu.Unlock()
			}()
			s.serveStream(c, st)
		}()
	}
}

// checkIdle closes c with DOQ_NO_ERROR when it has had no query in
// progress for IdleTimeout, or, before its first query, for
// firstQueryTimeout since its handshake; else it checks again when it
// could have.
func (s *DoQServer) checkIdle(c *doqConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	limit := s.opt.IdleTimeout
	if !c.asked {
		limit = s.firstQueryTimeout()
	}
	wait := limit
	if c.active == 0 {
		since := time.Since(c.last)
		if since >= limit {
			_ = c.conn.CloseWithError(DoQNoError, "idle")
			return
		}
		wait = limit - since
	}
	c.idle.Reset(wait)
}

// firstQueryTimeout is how long a connection may go from its handshake
// to its first stream: ReadTimeout (limits.tcp_read_timeout), as a DNS
// over TCP or TLS connection has for its first query and a DoH one for
// its first request (cappedListener.firstRequest), or IdleTimeout if that
// is shorter. Without it a client held a place in MaxConns, and in its
// per-client count, for the whole IdleTimeout without asking anything.
func (s *DoQServer) firstQueryTimeout() time.Duration {
	return min(s.opt.ReadTimeout, s.opt.IdleTimeout)
}

// handshakeFailed logs at debug level, and counts, a connection attempt
// from client that ended with cause before its QUIC handshake was done: a
// client that does not trust the certificate or offers another ALPN, or
// one that vanished. Not when the stop or an admission refusal ended it
// (an attempt over MaxConns never gets here: connContext refuses it
// before it watches for the handshake's end).
func (s *DoQServer) handshakeFailed(client net.Addr, cause error) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining || errors.Is(cause, errNotAdmitted) {
		return
	}
	if s.opt.HandshakeFailed != nil {
		s.opt.HandshakeFailed()
	}
	if ce := s.log.Check(zap.DebugLevel, "QUIC handshake failed"); ce != nil {
		ce.Write(zap.Stringer("client", client), zap.Error(cause))
	}
}

// protocolError closes conn with DOQ_PROTOCOL_ERROR (RFC 9250 §4.3.3) and
// counts it.
func (s *DoQServer) protocolError(conn *quic.Conn, why string) {
	s.count(ResultBadRequest)
	if ce := s.log.Check(zap.DebugLevel, "doq protocol error"); ce != nil {
		ce.Write(zap.Stringer("client", conn.RemoteAddr()), zap.String("reason", why))
	}
	_ = conn.CloseWithError(DoQProtocolError, why)
}

// serveStream reads the one query of st, has it answered, and writes the
// answer followed by STREAM FIN.
func (s *DoQServer) serveStream(c *doqConn, st *quic.Stream) {
	conn := c.conn
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("doq: answering a query panicked", zap.Any("panic", p))
			st.CancelRead(DoQInternalError)
			st.CancelWrite(DoQInternalError)
		}
	}()
	_ = st.SetReadDeadline(time.Now().Add(s.opt.ReadTimeout))
	b, held, taken, err := s.readQuery(st, 2+dns.MaxMsgSize+1)
	defer s.queries.give(held)
	if !taken {
		// The query's end came after the stop, or had not come: not
		// taken, as a TCP query half read at the stop is not.
		s.count(ResultDropped)
		st.CancelRead(DoQNoError)
		st.CancelWrite(DoQNoError)
		return
	}
	if err != nil {
		var se *quic.StreamError
		var ae *quic.ApplicationError
		switch {
		case errors.Is(err, errQueryBudget):
			// As Unbound resets the streams past its buffers' bound; the
			// query gets no answer.
			s.count(ResultDropped)
			st.CancelRead(DoQExcessiveLoad)
			st.CancelWrite(DoQExcessiveLoad)
		case errors.As(err, &se) && se.Remote:
			// The client cancelled the query (RFC 9250 §4.3.1).
			st.CancelWrite(DoQRequestCancelled)
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.protocolError(conn, "no STREAM FIN after the query")
		case errors.As(err, &ae), errors.Is(err, net.ErrClosed):
			// The connection is gone.
		default:
			st.CancelWrite(DoQInternalError)
		}
		return
	}
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		s.protocolError(conn, "the stream is not one length-prefixed message")
		return
	}
	msg := b[2:]
	if len(msg) < msgHeaderSize {
		s.protocolError(conn, "a message shorter than a DNS header")
		return
	}
	if binary.BigEndian.Uint16(msg) != 0 {
		s.protocolError(conn, "a message ID other than 0")
		return
	}
	chk := checkQuery(msg)
	switch {
	case chk.req == nil && chk.reject == nil:
		s.protocolError(conn, "not a DNS query")
		return
	case hasTCPKeepalive(msg):
		s.protocolError(conn, "the edns-tcp-keepalive option")
		return
	}
	if st.Context().Err() != nil {
		// The client cancelled the query with STOP_SENDING (RFC 9250
		// §4.3.1) before it was read whole, and quic-go reset the
		// stream for it (RFC 9000 §3.5): "Servers SHOULD NOT continue
		// processing a DNS transaction if they receive a STOP_SENDING".
		// Not counted, as a query its client resets is not.
		return
	}
	w := &doqWriter{conn: conn}
	w.received = msg
	if chk.reject != nil {
		answerReject(s.opt.Handler, w, chk.reject, s.opt.Count)
	} else if resume := s.opt.Handler.ServeInline(w, chk.req); resume != nil {
		resume()
	}
	reply, _ := w.held()
	if reply == nil {
		// No answer to give (RFC 9250 §4.3.2).
		st.CancelWrite(DoQInternalError)
		return
	}
	frame := doqFrame(reply)
	// A client that grants no flow-control credit for its answers (RFC
	// 9000 §4.1) while asking more: each would wait here for
	// doqWriteTimeout, up to MaxStreams of them.
	notReading := func() {
		if s.opt.Closed != nil {
			s.opt.Closed(ClosedNotReading)
		}
		_ = conn.CloseWithError(DoQExcessiveLoad, "answers left unread")
	}
	if !c.unread.take(len(frame), notReading) {
		return
	}
	defer c.unread.done(len(frame))
	_ = st.SetWriteDeadline(time.Now().Add(doqWriteTimeout))
	if _, err := st.Write(frame); err != nil {
		st.CancelWrite(DoQInternalError)
		return
	}
	_ = st.Close() // STREAM FIN
}

// doqFrame is the packed answer reply as its stream carries it, its
// length first (RFC 9250 §4.2), padded to a multiple of
// responsePaddingBlock octets when it has an OPT record, whether or not
// its query was padded: RFC 9250 §5.4 has DoQ pad all responses with the
// EDNS(0) Padding option when it does not pad QUIC packets, which quic-go
// offers no way to do, and RFC 7830 §3 lets a responder pad any answer to
// a query with EDNS. An answer to a query without EDNS has no OPT record
// to carry the option, and may not be given one (RFC 6891 §7). An answer
// as the Handler packs it is padded in its octets as the frame is written
// (paddingRoom), the frame the one allocation; any other as padReply
// pads it.
func doqFrame(reply []byte) []byte {
	if rdlen, n, ok := paddingRoom(reply); ok {
		frame := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reply)+4+n), uint16(len(reply)+4+n))
		return appendPadded(frame, reply, rdlen, n)
	}
	_, opt := dnswire.FindOPT(reply)
	reply = padReply(opt, reply)
	frame := make([]byte, 2+len(reply))
	binary.BigEndian.PutUint16(frame, uint16(len(reply)))
	copy(frame[2:], reply)
	return frame
}

// hasTCPKeepalive reports whether the message b, a query checkQuery took
// or one it rejects (NOTIMP, FORMERR), carries the edns-tcp-keepalive
// option (RFC 7828) in the OPT record of any version: RFC 9250 §5.5.2
// makes "a message containing" it a DoQ connection error, whatever else
// is wrong with the message. Read from the octets, as the parsed query
// need not hold it (unpackQuery).
func hasTCPKeepalive(b []byte) bool {
	return dnswire.HasOption(b, dns.EDNS0TCPKEEPALIVE)
}

// doqWriter is the ResponseWriter of one DoQ query.
type doqWriter struct {
	heldReply
	conn *quic.Conn
}

var _ ResponseWriter = (*doqWriter)(nil)
var _ Received = (*doqWriter)(nil)
var _ dns.ConnectionStater = (*doqWriter)(nil)

func (w *doqWriter) Transport() string    { return QUIC }
func (w *doqWriter) RemoteAddr() net.Addr { return w.conn.RemoteAddr() }
func (w *doqWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }

// ConnectionState is the connection's TLS state.
func (w *doqWriter) ConnectionState() *tls.ConnectionState {
	cs := w.conn.ConnectionState().TLS
	return &cs
}
