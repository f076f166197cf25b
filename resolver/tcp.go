package resolver

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"
)

// tcpWriteTimeout bounds one answer's write: a client that stops reading
// cannot hold a goroutine.
const tcpWriteTimeout = 10 * time.Second

// proxyHeaderTimeout bounds the wait for a trusted proxy's PROXY header.
const proxyHeaderTimeout = 2 * time.Second

// tcpServer serves DNS over TCP. It is ours rather than miekg/dns's because
// miekg/dns answers the queries of one connection strictly one after
// another, while DNS over TCP allows pipelining (RFC 7766 §6.2.1.1): here
// every query of a connection is answered as soon as it is ready, so a slow
// upstream answer does not hold up the ones behind it. Framing and parsing
// are miekg/dns's; the accept decisions are the UDP server's.
type tcpServer struct {
	ln      net.Listener
	handler *Handler
	log     *zap.Logger
	accept  dns.MsgAcceptFunc
	invalid dns.MsgInvalidFunc

	closing atomic.Bool
	mu      sync.Mutex
	conns   map[*tcpConn]struct{}
	wg      sync.WaitGroup // connection goroutines
}

// newTCPServer wraps ln with the connection cap and, for trusted proxies
// only, PROXY protocol v2 parsing.
func newTCPServer(ln net.Listener, h *Handler, log *zap.Logger, maxConns int,
	accept dns.MsgAcceptFunc, invalid dns.MsgInvalidFunc) *tcpServer {
	limited := netutil.LimitListener(ln, maxConns)
	pl := &proxyproto.Listener{
		Listener:          limited,
		ReadHeaderTimeout: proxyHeaderTimeout,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			if a, ok := o.Upstream.(*net.TCPAddr); ok {
				if snap := h.Snapshot(); snap != nil && snap.Trusted(a.AddrPort().Addr().Unmap()) {
					return proxyproto.USE, nil // a header is read if present
				}
			}
			return proxyproto.SKIP, nil // anyone else: the bytes are DNS
		},
	}
	return &tcpServer{ln: pl, handler: h, log: log, accept: accept, invalid: invalid, conns: map[*tcpConn]struct{}{}}
}

// tcpConn is one client connection.
type tcpConn struct {
	net.Conn
	writeMu sync.Mutex
	remote  net.Addr // the client, resolved after the first read
	once    sync.Once
}

// remoteAddr is the client's address: the PROXY header's source when a
// trusted proxy sent one, else the peer.
func (c *tcpConn) remoteAddr() net.Addr {
	c.once.Do(func() {
		c.remote = c.Conn.RemoteAddr()
		pc, ok := c.Conn.(*proxyproto.Conn)
		if !ok || pc.ProxyHeader() == nil {
			return
		}
		peer, ok := pc.Raw().RemoteAddr().(*net.TCPAddr)
		if !ok {
			return
		}
		c.remote = peer // a header without a TCP source (LOCAL, UNIX): the proxy itself
		if client, ok := pc.RemoteAddr().(*net.TCPAddr); ok && pc.ProxyHeader().Command.IsProxy() {
			c.remote = &ProxiedAddr{TCPAddr: client, Proxy: peer.AddrPort()}
		}
	})
	return c.remote
}

// writeFrame writes one length-prefixed message.
func (c *tcpConn) writeFrame(b []byte) error {
	if len(b) > dns.MaxMsgSize {
		return errors.New("message too large for TCP")
	}
	frame := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(frame, uint16(len(b)))
	copy(frame[2:], b)
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
	if _, err := c.Write(frame); err != nil {
		// A client that does not read, or a half-written frame: the stream
		// cannot go on. Closing ends the read loop too.
		c.Close()
		return err
	}
	return nil
}

// serve accepts connections until the listener is closed.
func (s *tcpServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accepting a TCP connection", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		conn := &tcpConn{Conn: c}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// serveConn reads the queries of one connection and answers each in its own
// goroutine, at most limits.tcp_pipeline at once. The first query must
// arrive within the read timeout, later ones within the idle timeout, each
// whole: a client sending a byte at a time cannot hold a connection longer.
func (s *tcpServer) serveConn(c *tcpConn) {
	var pending sync.WaitGroup
	defer func() {
		pending.Wait() // every query read gets its answer before the close
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	limits := s.handler.Snapshot().Config.Limits
	slots := make(chan struct{}, limits.TCPPipeline)
	timeout := limits.TCPReadTimeout
	for !s.closing.Load() {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		if s.closing.Load() {
			return // shutdown set its deadline before ours
		}
		var length uint16
		if err := binary.Read(c, binary.BigEndian, &length); err != nil {
			return
		}
		m := make([]byte, length)
		if _, err := io.ReadFull(c, m); err != nil {
			return
		}
		timeout = limits.TCPIdleTimeout
		slots <- struct{}{}
		pending.Add(1)
		go func() {
			defer pending.Done()
			defer func() { <-slots }()
			s.serveMessage(c, m)
		}()
	}
}

// serveMessage answers one message of the connection.
func (s *tcpServer) serveMessage(c *tcpConn, m []byte) {
	w := &tcpWriter{conn: c}
	req, reject := acceptMessage(m, s.accept, s.invalid)
	if reject != nil {
		_ = w.WriteMsg(reject)
	}
	if req != nil {
		s.handler.ServeDNS(w, req)
	}
}

// shutdown stops accepting, lets every connection finish the queries it
// has read, and waits for them or until done is closed.
func (s *tcpServer) shutdown(done <-chan struct{}) {
	s.mu.Lock()
	s.closing.Store(true)
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now()) // unblock the read; answers still go out
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	finished := make(chan struct{})
	go func() { s.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-done:
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	}
}

// tcpWriter is the dns.ResponseWriter of one query on a tcpConn.
type tcpWriter struct {
	conn *tcpConn
}

var _ dns.ResponseWriter = (*tcpWriter)(nil)

func (w *tcpWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }
func (w *tcpWriter) RemoteAddr() net.Addr { return w.conn.remoteAddr() }
func (w *tcpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	return w.conn.writeFrame(b)
}
func (w *tcpWriter) Write(b []byte) (int, error) { return len(b), w.conn.writeFrame(b) }
func (w *tcpWriter) Close() error                { return nil } // the connection outlives one query
func (w *tcpWriter) TsigStatus() error           { return nil }
func (w *tcpWriter) TsigTimersOnly(bool)         {}
func (w *tcpWriter) Hijack()                     {}
