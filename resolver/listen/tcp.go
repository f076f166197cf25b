package listen

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
)

// tcpWriteTimeout bounds one answer's write: a client that stops reading
// cannot hold a goroutine.
const tcpWriteTimeout = 10 * time.Second

// unreadMax bounds the answers of one TCP, DoT, DoH or DoQ connection
// waiting to be written (octets): past it the client is taken as not reading
// and the connection is closed (ClosedNotReading), so that the answers its
// pipelined queries produce are not held for the write timeout (10 s), up
// to limits.tcp_pipeline of 64 KiB each (4 MiB a connection, 128 MiB a
// client at the defaults). Answers being sent count too, so a client that
// reads is closed when more than this is ready at once (quic-go's Write
// returns once congestion control has let the answer out, HTTP/2 sends
// one stream at a time): measured with a reading client and 64 answers
// ready together, 16,000 octets each pass on every transport, 20,000
// close DoH and DoQ. 512 KiB closed DoQ at 12,000. Unbound bounds the
// same with stream-wait-size (4 MB over all streams, answers dropped).
const unreadMax = 1 << 20

// unread counts the octets of a connection's answers waiting to be written
// (unreadMax).
type unread struct {
	octets atomic.Int64
	closed atomic.Bool // notReading ran
}

// take counts n more octets waiting and reports whether they fit: past
// unreadMax they are not counted, and notReading (which closes the
// connection and counts it, ClosedNotReading) runs, once. The caller
// gives n back (done) once its answer is written.
func (u *unread) take(n int, notReading func()) bool {
	if u.octets.Add(int64(n)) <= unreadMax {
		return true
	}
	u.octets.Add(-int64(n))
	if u.closed.CompareAndSwap(false, true) {
		notReading()
	}
	return false
}

// done gives back n octets take counted.
func (u *unread) done(n int) { u.octets.Add(-int64(n)) }

// proxyHeaderTimeout bounds the wait for a trusted proxy's PROXY header.
const proxyHeaderTimeout = 2 * time.Second

// tcpServer serves DNS over TCP. It is ours rather than miekg/dns's because
// miekg/dns answers the queries of one connection strictly one after
// another, while DNS over TCP allows pipelining (RFC 7766 §6.2.1.1): here
// every query of a connection is answered as soon as it is ready, so a slow
// upstream answer does not hold up the ones behind it. Framing and parsing
// are miekg/dns's; the accept decisions are the UDP server's.
//
// The same server is DNS over TLS (RFC 7858) when tls is set: each
// admitted connection, after its PROXY header if a trusted proxy sends
// one, is wrapped with ServerTLS, so DoT has TCP's framing, pipelining,
// limits and timeouts, and its transport name is TLS.
type tcpServer struct {
	ln        net.Listener
	transport string      // TCP, or TLS when tls is set
	tls       *tls.Config // nil: plain TCP
	handler   Handler
	count     Counter
	rules     func() Rules
	log       *zap.Logger
	admission *admission
	// handshakeFailures counts a failed DNS over TLS handshake
	// (Config.HandshakeFailed).
	handshakeFailures func(transport string)
	closedConns       func(transport, reason string) // Config.Closed
	accept            dns.MsgAcceptFunc
	invalid           dns.MsgInvalidFunc
	// slots holds a token per connection accepted and not yet closed:
	// limits.tcp_connections. When it is full the listener is not
	// accepted from, so new connections wait in the kernel's backlog.
	slots chan struct{}

	closing  atomic.Bool
	stopping chan struct{} // closed by stopAccepting
	stop1    sync.Once
	drain1   sync.Once
	mu       sync.Mutex
	conns    map[*tcpConn]struct{}
	wg       sync.WaitGroup // connection goroutines
}

// newTCPServer serves ln for cfg's Handler with at most maxConns
// connections open, each admitted by a, and PROXY protocol v2 read from
// trusted proxies only. With tlsConfig set it serves DNS over TLS.
func newTCPServer(ln net.Listener, cfg Config, log *zap.Logger, a *admission, maxConns int,
	accept dns.MsgAcceptFunc, invalid dns.MsgInvalidFunc, tlsConfig *tls.Config) *tcpServer {
	transport := TCP
	if tlsConfig != nil {
		transport = TLS
	}
	return &tcpServer{ln: ln, transport: transport, tls: tlsConfig, handler: cfg.Handler, count: cfg.Count, rules: cfg.Rules, log: log,
		admission: a, handshakeFailures: cfg.HandshakeFailed, closedConns: cfg.Closed, accept: accept, invalid: invalid,
		slots: make(chan struct{}, maxConns), stopping: make(chan struct{}), conns: map[*tcpConn]struct{}{}}
}

// tcpConn is one client connection.
type tcpConn struct {
	net.Conn
	// proxy is the PROXY protocol reader beneath, for a trusted proxy's
	// connection (under TLS, Conn is the TLS connection above it).
	proxy   *proxyproto.Conn
	writeMu sync.Mutex
	// out holds the frames written while the read loop holds them (hold),
	// sent together by send: the answers to the queries of one read go
	// out in one write, one TLS record on DNS over TLS. Under writeMu.
	out     []byte
	holding bool // under writeMu: frames wait in out for send
	// broken is set once a write failed and closed the connection: the
	// read loop stops, rather than answer what it has buffered to no one.
	broken atomic.Bool
	// unread counts the answers in writeFrame: being written, or
	// waiting for writeMu.
	unread unread
	// closed counts the connection closed for its client (Config.Closed).
	closed  func(reason string)
	remote  net.Addr // the client, resolved after the first read
	once    sync.Once
	release func() // returns the connection's admission

	// idleMu guards inflight, stopped and the read deadlines set after
	// the first query: the connection is idle only once every query read
	// on it has its answer (RFC 7766 §3), and its idle timeout runs from
	// then, not from the last query read, so a query sent while another
	// waits on its upstream is still read.
	idleMu   sync.Mutex
	inflight int  // queries read and not yet answered by their resume
	stopped  bool // stopAccepting set its past deadline: it stays

	// raw is the TCP socket beneath, which finished asks; nil when the
	// listener's connections are not plain TCP.
	raw syscall.RawConn
	// waiting: the read loop has no whole query buffered, and is about
	// to wait for the next (sending the answers it holds first).
	waiting atomic.Bool
}

// finished reports whether the client has finished with the connection:
// the read loop has no query buffered (waiting), every query read has its
// answer, sent (none held for send, none being written: a half-closed
// client may still read them, and one slow to read them holds up the
// write), and the client has closed its end with nothing left unread
// (peerClosed). The read loop has then only to read the close and end;
// admission counts the connection no more (reclaim). Plain TCP only:
// crypto/tls reads ahead of what it has given the read loop (records
// taken from the socket with the one read, a client's close_notify), so
// on DNS over TLS nothing unread in the socket says nothing of the
// queries still to be read.
func (c *tcpConn) finished() bool {
	if c.raw == nil || !c.waiting.Load() {
		return false
	}
	c.idleMu.Lock()
	idle := c.inflight == 0
	c.idleMu.Unlock()
	if !idle || !c.writeMu.TryLock() { // TryLock: reclaim runs on an accept, and must not wait on a write
		return false
	}
	sent := len(c.out) == 0
	c.writeMu.Unlock()
	// No query can come after the close peerClosed sees, so a read loop
	// that wakes meanwhile finds only the close.
	return sent && peerClosed(c.raw)
}

// remoteAddr is the client's address: the PROXY header's source when a
// trusted proxy sent one, else the peer.
func (c *tcpConn) remoteAddr() net.Addr {
	c.once.Do(func() {
		c.remote = c.Conn.RemoteAddr()
		pc := c.proxy
		if pc == nil {
			pc, _ = c.Conn.(*proxyproto.Conn)
		}
		if pc == nil || pc.ProxyHeader() == nil {
			return
		}
		peer, ok := pc.Raw().RemoteAddr().(*net.TCPAddr)
		if !ok {
			return
		}
		c.remote = peer // a header without an IP source (LOCAL, UNSPEC, UNIX): the proxy itself
		if client, ok := proxiedSource(pc.RemoteAddr()); ok && pc.ProxyHeader().Command.IsProxy() {
			c.remote = &ProxiedAddr{TCPAddr: client, Proxy: peer.AddrPort()}
		}
	})
	return c.remote
}

// proxiedSource is the client a PROXY header's source address names,
// whichever transport the header gives it: a proxy that relays a query its
// client sent over UDP on a TCP or TLS connection says UDP (0x12, 0x22 in
// PROXY v2), as dnsdist does for such a query to a TCP-only or DoT backend,
// and the address is that client's all the same. Taking the proxy for the
// client there would give a government device's query the proxy's policy.
func proxiedSource(a net.Addr) (*net.TCPAddr, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a, true
	case *net.UDPAddr:
		return &net.TCPAddr{IP: a.IP, Port: a.Port, Zone: a.Zone}, true
	}
	return nil, false
}

// tcpOutMax bounds the frames held for one write (octets): past it they
// are sent at once, so a held write stays one TLS record or a few.
const tcpOutMax = 16 << 10

// tcpKeep is the most a connection keeps of a buffer between queries
// (octets): the room of the common query or answer. A larger one is
// dropped once used, so that an idle connection holds little memory
// whatever it was once asked.
const tcpKeep = 4 << 10

// tcpSmallQuery is the size of the buffer a connection keeps for its
// queries (octets): a query with EDNS, padded to 128-octet blocks (RFC
// 8467), fits. A larger one gets a buffer of its own.
const tcpSmallQuery = 512

// writeFrame writes one length-prefixed message: at once, or, while the
// read loop holds the connection's answers (hold), with the others at its
// send.
func (c *tcpConn) writeFrame(b []byte) error {
	if len(b) > dns.MaxMsgSize {
		return errors.New("message too large for TCP")
	}
	n := 2 + len(b)
	if !c.unread.take(n, c.notReading) {
		return errNotReading
	}
	defer c.unread.done(n)
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.out = binary.BigEndian.AppendUint16(c.out, uint16(len(b)))
	c.out = append(c.out, b...)
	if c.holding && len(c.out) < tcpOutMax {
		return nil
	}
	return c.flushLocked()
}

// hold makes the answers written from now wait until send.
func (c *tcpConn) hold() {
	c.writeMu.Lock()
	c.holding = true
	c.writeMu.Unlock()
}

// send writes the answers held and stops holding them.
func (c *tcpConn) send() {
	c.writeMu.Lock()
	c.holding = false
	_ = c.flushLocked() // a failure closes the connection and sets broken
	c.writeMu.Unlock()
}

// flushLocked writes out, with writeMu held.
func (c *tcpConn) flushLocked() error {
	if len(c.out) == 0 {
		return nil
	}
	_ = c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
	_, err := c.Write(c.out)
	c.out = c.out[:0]
	if cap(c.out) > tcpKeep {
		c.out = nil // a large answer's buffer is not kept for the connection's life
	}
	if err != nil {
		// A client that does not read, or a half-written frame: the stream
		// cannot go on. Closing ends the read loop too, and broken stops it
		// answering the queries it has buffered.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.notReading()
		}
		c.broken.Store(true)
		c.abort()
		return err
	}
	return nil
}

// errNotReading is the error of an answer not written because its client
// left unreadMax of answers unread.
var errNotReading = errors.New("the client reads no answers")

// notReading closes the connection of a client that does not read its
// answers, once, and counts it (ClosedNotReading). The write under way
// fails at once; the answers waiting are dropped.
func (c *tcpConn) notReading() {
	if c.broken.CompareAndSwap(false, true) {
		if c.closed != nil { // nil on a connection no listener made
			c.closed(ClosedNotReading)
		}
		c.abort()
	}
}

// abort closes the socket beneath TLS and the PROXY protocol at once, for
// a stream that can carry nothing more: a write failed, maybe with a TLS
// record cut part way, or the client reads nothing. crypto/tls's Close
// would first write close_notify, appended to the cut record (garbage to
// the client), after waiting up to 5 s for room in a send buffer the
// client does not empty, with writeMu held.
func (c *tcpConn) abort() { _ = rawConn(c.Conn).Close() }

// acceptRetryMax is the longest wait before accepting again after Accept
// failed (out of file descriptors): net/http's.
const acceptRetryMax = time.Second

// failWait waits out an accept or a read that failed (out of file
// descriptors, the kernel out of memory), which lasts until connections
// close or memory frees: 5 ms after the first failure, doubled while they
// keep failing, at most acceptRetryMax (as net/http does; Unbound stops
// accepting for 2 s), so the log has a line a second rather than a
// hundred, and a core does not spin on the error. A success starts the
// waits again from 5 ms (reset), but not the log's: the first failure of
// a run is logged only when no line was written for acceptRetryMax, so
// that failures between accepted connections (out of file descriptors
// while connections come and go, each close freeing the descriptor the
// next accept takes) are not a line each, up to 200 a second. The next
// line written carries `suppressed`, the failures not logged since the
// last one.
type failWait struct {
	d          time.Duration
	logged     time.Time // when a line was last written
	suppressed int       // failures not logged since
}

// wait logs err under msg at warn level (nothing with a nil log), at most
// a line per acceptRetryMax for the first failure of each run, and waits
// the next wait; false when stop closes first.
func (f *failWait) wait(log *zap.Logger, msg string, err error, stop <-chan struct{}) bool {
	first := f.d == 0
	f.d = min(max(2*f.d, 5*time.Millisecond), acceptRetryMax)
	if log != nil {
		now := time.Now()
		if first && !f.logged.IsZero() && now.Sub(f.logged) < acceptRetryMax {
			f.suppressed++
		} else {
			fields := []zap.Field{zap.Error(err), zap.Duration("retry_in", f.d)}
			if f.suppressed > 0 {
				fields = append(fields, zap.Int("suppressed", f.suppressed))
			}
			log.Warn(msg, fields...)
			f.logged, f.suppressed = now, 0
		}
	}
	select {
	case <-time.After(f.d):
		return true
	case <-stop:
		return false
	}
}

// reset starts the waits again from 5 ms, after a success.
func (f *failWait) reset() { f.d = 0 }

// Patient returns ln with its Accept failures waited out (failWait) and
// logged at warn level under "accepting a TCP connection" (nothing with a
// nil log), whatever the error: Accept returns only a connection, or
// net.ErrClosed once the listener is closed. net/http's Serve waits out
// only the errors it counts as temporary and stops for good on the others
// (ENOBUFS, ENOMEM, EPERM from accept(2)), leaving an endpoint dead while
// dnsfence runs on; it logs them only to the server's ErrorLog. One
// goroutine may call Accept at a time, as net/http does.
func Patient(ln net.Listener, log *zap.Logger) net.Listener {
	return &patientListener{Listener: ln, log: log, closed: make(chan struct{})}
}

type patientListener struct {
	net.Listener
	log       *zap.Logger
	retry     failWait
	closeOnce sync.Once
	closed    chan struct{}
}

func (l *patientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		switch {
		case err == nil:
			l.retry.reset()
			return c, nil
		case errors.Is(err, net.ErrClosed):
			return nil, err
		case !l.retry.wait(l.log, "accepting a TCP connection", err, l.closed):
			return nil, net.ErrClosed
		}
	}
}

func (l *patientListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// serve accepts connections until the listener is closed.
func (s *tcpServer) serve() {
	var retry failWait
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.stopping:
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.slots
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if !retry.wait(s.log, "accepting a TCP connection", err, s.stopping) {
				return
			}
			continue
		}
		retry.reset()
		conn := s.admit(c)
		if conn == nil {
			<-s.slots
			continue
		}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			conn.Close()
			conn.release()
			<-s.slots
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// admit applies the admission rules to a new connection. A refused one is
// closed at once with a reset (SO_LINGER 0: no FIN handshake, no TIME_WAIT
// kept for it) and nil returned. A trusted proxy's connection reads a PROXY
// protocol header if one comes first; anyone else's bytes are DNS (or, on
// DNS over TLS, the TLS handshake, which a proxy's header precedes in the
// clear). The header is believed only if its sender is still a trusted
// proxy under the rules current when it arrives: else the connection fails
// and closes.
func (s *tcpServer) admit(c net.Conn) *tcpConn {
	accepted := c
	peer := peerAddr(c.RemoteAddr())
	adm, ok := s.admission.admit(s.transport, peer)
	if !ok {
		if tc, isTCP := c.(*net.TCPConn); isTCP {
			_ = tc.SetLinger(0)
		}
		c.Close()
		return nil
	}
	var pc *proxyproto.Conn
	if adm.proxy {
		pc = proxyproto.NewConn(c, proxyproto.WithPolicy(proxyproto.USE),
			proxyproto.SetReadHeaderTimeout(proxyHeaderTimeout), proxyproto.ValidateHeader(s.trustedHeader(peer)))
		c = pc
	}
	if s.tls != nil {
		// The handshake runs on the connection's first read, on its own
		// goroutine, bounded like the first query.
		c = ServerTLS(c, s.tls, s.handshakeTimeout())
	}
	conn := &tcpConn{Conn: c, proxy: pc, release: adm.release,
		closed: func(reason string) { s.closedConns(s.transport, reason) }}
	if tc, isTCP := accepted.(*net.TCPConn); isTCP && adm.slot != nil && s.tls == nil {
		if raw, err := tc.SyscallConn(); err == nil {
			conn.raw = raw
			adm.slot.reclaimable(conn.finished)
		}
	}
	return conn
}

// handshakeTimeout bounds a DNS over TLS handshake: limits.tcp_read_timeout,
// the time a new connection has for its first query, which the handshake
// comes before.
func (s *tcpServer) handshakeTimeout() time.Duration {
	if r := s.rules(); r != nil && r.Limits().TCPReadTimeout > 0 {
		return r.Limits().TCPReadTimeout
	}
	return DefaultDoQHandshakeTimeout
}

// errUntrustedProxy fails a PROXY header from a peer that is no longer a
// trusted proxy.
var errUntrustedProxy = errors.New("PROXY header from a peer that is not a trusted proxy")

// trustedHeader checks, when a PROXY header arrives from peer, that peer is
// a trusted proxy under the rules of that moment: a reload since the
// accept may have withdrawn its trust.
func (s *tcpServer) trustedHeader(peer netip.Addr) proxyproto.Validator {
	peer = peer.Unmap().WithZone("")
	return func(*proxyproto.Header) error {
		if r := s.rules(); r == nil || !r.Trusted(peer) {
			return errUntrustedProxy
		}
		return nil
	}
}

// tcpReadBuffer is the read buffer of a connection (octets): room for the
// many small queries a pipelining client sends in one segment or TLS record.
const tcpReadBuffer = 4 << 10

// serveConn reads the queries of one connection and answers each: inline
// on this goroutine when the handler can (a blocked or cached answer),
// else on a goroutine of its own, at most limits.tcp_pipeline at once, so
// that answers go out as they are ready, in any order (RFC 7766 §6.2.1.1).
// The inline answers to the queries of one read are held and written
// together before the next wait for input. The first query must arrive
// within the read timeout, later ones within the idle timeout of the
// connection's last answer (while a query waits on its upstream the
// connection is not idle: awaitQuery), each whole: a client sending a
// byte at a time cannot hold a connection longer.
func (s *tcpServer) serveConn(c *tcpConn) {
	var pending sync.WaitGroup
	defer func() {
		c.send()
		pending.Wait() // every query taken from the buffer gets its answer before the close
		if s.closing.Load() && !c.broken.Load() {
			c.closeGently()
		} else {
			c.Close()
		}
		c.release()
		<-s.slots
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	rules := s.rules()
	if rules == nil {
		return
	}
	limits := rules.Limits()
	slots := make(chan struct{}, limits.TCPPipeline)
	timeout := limits.TCPReadTimeout
	r := bufio.NewReaderSize(takenBefore{c, &s.closing}, tcpReadBuffer)
	var length [2]byte
	var small []byte // the buffer of queries up to tcpSmallQuery octets, kept
	holding := false
	for !s.closing.Load() && !c.broken.Load() {
		if !frameBuffered(r) {
			// Nothing left to answer but what is held, and the read
			// below may wait: the answers go now.
			c.waiting.Store(true)
			if holding {
				c.send()
				holding = false
			}
		}
		if !c.awaitQuery(timeout) || s.closing.Load() {
			return // shutdown set its deadline before ours
		}
		if _, err := io.ReadFull(r, length[:]); err != nil {
			s.handshakeFailed(c, err)
			return
		}
		c.waiting.Store(false)
		n := int(binary.BigEndian.Uint16(length[:]))
		var m []byte
		switch {
		case n > tcpSmallQuery:
			m = make([]byte, n) // a large message's buffer is not kept
		case small == nil:
			small = make([]byte, tcpSmallQuery)
			fallthrough
		default:
			m = small[:n]
		}
		if _, err := io.ReadFull(r, m); err != nil {
			return
		}
		timeout = limits.TCPIdleTimeout
		if !holding {
			c.hold()
			holding = true
		}
		resume := s.serveMessage(c, m)
		if resume == nil {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			c.send() // waiting for a slot: the answers ready go first
			holding = false
			slots <- struct{}{}
		}
		pending.Add(1)
		c.began()
		go func() {
			defer pending.Done()
			defer func() { <-slots }()
			defer c.answered(limits.TCPIdleTimeout)
			resume()
		}()
	}
}

// awaitQuery sets the deadline of the read of the next query: timeout
// from now when every query read is answered; none while one waits on
// its resume, whose answer starts the idle timeout (answered). It
// reports false once stopAccepting has set its past deadline.
func (c *tcpConn) awaitQuery(timeout time.Duration) bool {
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	if c.stopped {
		return false
	}
	var deadline time.Time
	if c.inflight == 0 {
		deadline = time.Now().Add(timeout)
	}
	_ = c.SetReadDeadline(deadline)
	return true
}

// began counts a query handed to its resume.
func (c *tcpConn) began() {
	c.idleMu.Lock()
	c.inflight++
	c.idleMu.Unlock()
}

// answered counts a resume's query answered; the last of them starts the
// idle timeout, for the query being read or the next.
func (c *tcpConn) answered(idle time.Duration) {
	c.idleMu.Lock()
	defer c.idleMu.Unlock()
	if c.inflight--; c.inflight == 0 && !c.stopped {
		_ = c.SetReadDeadline(time.Now().Add(idle))
	}
}

// stopReading makes the read under way, and every later one, fail at
// once; no answer moves the deadline again.
func (c *tcpConn) stopReading() {
	c.idleMu.Lock()
	c.stopped = true
	_ = c.SetReadDeadline(time.Now())
	c.idleMu.Unlock()
}

// handshakeFailed logs at debug level, as the DoH listener's net/http
// does, a DNS over TLS connection whose read ended with err before its
// TLS handshake completed: a client that does not trust the certificate,
// shares no TLS version or ALPN protocol with it, stalls, or speaks plain
// DNS to the TLS port (Unbound logs each too). It counts it too
// (Config.HandshakeFailed) when the client sent anything. A connection
// the stop ended is neither.
func (s *tcpServer) handshakeFailed(c *tcpConn, err error) {
	tc, ok := c.Conn.(*TLSConn)
	if !ok || s.closing.Load() || tc.ConnectionState().HandshakeComplete {
		return
	}
	if handshakeFailed(tc.Conn) {
		s.handshakeFailures(TLS)
	}
	if ce := s.log.Check(zap.DebugLevel, "TLS handshake failed"); ce != nil {
		ce.Write(zap.String("transport", TLS), zap.Stringer("client", c.remoteAddr()), zap.Error(err))
	}
}

// frameBuffered reports whether r holds a whole length-prefixed message,
// which reading takes no wait for.
func frameBuffered(r *bufio.Reader) bool {
	n := r.Buffered()
	if n < 2 {
		return false
	}
	length, _ := r.Peek(2)
	return n >= 2+int(binary.BigEndian.Uint16(length))
}

// serveMessage answers one message m of the connection (m is the read
// loop's buffer: nothing keeps it), returning the handler's resume when
// the answer needs one.
func (s *tcpServer) serveMessage(c *tcpConn, m []byte) (resume func()) {
	w := &tcpWriter{conn: c, transport: s.transport, received: m}
	req, reject := AcceptMessage(m, s.accept, s.invalid)
	if req != nil && keepaliveTimeout(m) {
		req, reject = nil, rejectReply(m, dns.RcodeFormatError)
	}
	// RFC 7830 §3, RFC 8467 §4.1: a padded query gets a padded answer,
	// on DNS over TLS; a rejected one too.
	w.pad = s.tls != nil && paddedQuery(req, m)
	if reject != nil {
		answerReject(s.handler, w, reject, s.count)
	}
	if req == nil {
		return nil
	}
	resume = s.handler.ServeInline(w, req)
	w.received = nil // m is the read loop's: resume must not see it
	return resume
}

// keepaliveTimeout reports whether the query m, which AcceptMessage
// took, carries an edns-tcp-keepalive option with a TIMEOUT: RFC 7828 §3.2
// has a client omit it in queries (OPTION-LENGTH 0) and a server answer
// FORMERR to one that gives it over TCP, as Unbound does (with
// edns-tcp-keepalive on); DNS over TLS is TCP too (RFC 7858 §3.4). Over
// UDP the option MUST be ignored (ibid.); DNS over QUIC closes the
// connection for the option at all (RFC 9250 §5.5.2, DoQServer); DNS over
// HTTPS has no TCP connection of its own for it to keep, and takes it.
func keepaliveTimeout(m []byte) bool {
	return !eachOption(m, func(code uint16, data []byte) bool {
		return code != dns.EDNS0TCPKEEPALIVE || len(data) == 0
	})
}

// takenBefore reads the connection until stopped is set: what a read
// brings in after that is not taken (an error, the connection's loop
// ends). stopAccepting's past deadline fails a read not yet begun, but
// the runtime's poller, woken by it, still takes bytes that arrive before
// the connection's goroutine runs again (as it did on UDP:
// udpServer.stopReading).
type takenBefore struct {
	net.Conn
	stopped *atomic.Bool
}

func (t takenBefore) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	if t.stopped.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	return n, err
}

// stopLinger is how long a connection closed by the stop waits, after its
// last answer and its FIN, for the client to close its side: net/http's
// rstAvoidanceDelay.
const stopLinger = 500 * time.Millisecond

// closeGently closes a connection the stop has ended, once its answers
// are written, as net/http's closeWriteAndWait does: close_notify on DNS
// over TLS, a FIN, then what the client sends meanwhile (queries pipelined
// after the stop) read and dropped until it closes too, for at most
// stopLinger (or until drain's deadline closes the connection). A plain
// Close with those queries unread makes the kernel reset the connection
// (RFC 1122 §4.2.2.13), throwing away the answers in its send queue that
// have not reached the client yet.
func (c *tcpConn) closeGently() {
	defer c.Close()
	if tc, ok := c.Conn.(*TLSConn); ok {
		// At most crypto/tls's 5 s write deadline, for a client that
		// reads nothing; drain's deadline closes the socket beneath.
		_ = tc.CloseWrite()
	}
	raw := rawConn(c.Conn)
	cw, ok := raw.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	// stopAccepting may set its past deadline after ours, when it reaches
	// this connection late: the linger goes on to its end.
	end := time.Now().Add(stopLinger)
	for {
		_ = raw.SetReadDeadline(end)
		_, err := io.Copy(io.Discard, raw)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(end) {
			return
		}
	}
}

// rawConn is the TCP connection beneath c's TLS and PROXY protocol layers.
func rawConn(c net.Conn) net.Conn {
	for {
		switch w := c.(type) {
		case interface{ NetConn() net.Conn }: // *TLSConn, *tls.Conn
			c = w.NetConn()
		case *proxyproto.Conn:
			c = w.Raw()
		default:
			return c
		}
	}
}

// stopAccepting closes the listener and makes every open connection stop
// reading queries, without waiting: the queries a connection has read are
// still answered on it, and no query that arrives after it returns is.
func (s *tcpServer) stopAccepting() {
	s.stop1.Do(func() {
		s.mu.Lock()
		s.closing.Store(true)
		for c := range s.conns {
			c.stopReading() // unblock the read; answers still go out
		}
		s.mu.Unlock()
		close(s.stopping)
		_ = s.ln.Close()
	})
}

// drain waits for every connection to finish the queries it has read, or
// until done is closed, when the connections left are closed. Call
// stopAccepting first.
func (s *tcpServer) drain(done <-chan struct{}) {
	s.drain1.Do(func() {
		finished := make(chan struct{})
		go func() { s.wg.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-done:
			s.mu.Lock()
			for c := range s.conns {
				// The socket itself: a TLS Close would first wait, for up
				// to 5 s, to write close_notify to a client reading nothing.
				rawConn(c.Conn).Close()
			}
			s.mu.Unlock()
		}
	})
}

// tcpWriter is the ResponseWriter of one query on a tcpConn.
type tcpWriter struct {
	conn      *tcpConn
	transport string
	// pad is set when the query was padded on DNS over TLS: the answer is
	// padded too (padReply). Never on TCP.
	pad bool
	// received is the message's octets while ServeInline runs (Received).
	received []byte
}

var (
	_ ResponseWriter = (*tcpWriter)(nil)
	_ Received       = (*tcpWriter)(nil)
)

func (w *tcpWriter) Received() []byte { return w.received }

func (w *tcpWriter) Transport() string    { return w.transport }
func (w *tcpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *tcpWriter) RemoteAddr() net.Addr { return w.conn.remoteAddr() }
func (w *tcpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	return w.conn.writeFrame(padReply(w.pad, b))
}
func (w *tcpWriter) Write(b []byte) (int, error) {
	return len(b), w.conn.writeFrame(padReply(w.pad, b))
}
func (w *tcpWriter) Close() error        { return nil } // the connection outlives one query
func (w *tcpWriter) TsigStatus() error   { return nil }
func (w *tcpWriter) TsigTimersOnly(bool) {}
func (w *tcpWriter) Hijack()             {}
