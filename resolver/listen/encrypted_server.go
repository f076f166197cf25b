package listen

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Encrypted are the addresses of a Server's encrypted listeners and the
// certificate they serve (DESIGN.md §8).
type Encrypted struct {
	// TLS are DNS over TLS addresses (RFC 7858), "host:port".
	TLS []string
	// HTTPS are DNS over HTTPS addresses (RFC 8484), as ParseDoHListen
	// reads them: "host:port" or "https://host:port" over TLS,
	// "http://host:port" without (behind a TLS-terminating proxy).
	HTTPS []string
	// QUIC are DNS over QUIC addresses (RFC 9250), "host:port".
	QUIC []string
	// Cert is the server certificate of every listener above but the
	// http:// ones; required when there is such a listener.
	Cert *CertStore
}

// Endpoint is one encrypted listener a Server opened with TLS: what a
// client needs to reach it.
type Endpoint struct {
	// Transport is TLS, HTTPS or QUIC.
	Transport string
	// Addr is the address the listener is bound to, its port the one
	// picked for port 0; an unspecified address (0.0.0.0, ::) serves
	// every address of the host (:: IPv4 as well).
	Addr netip.AddrPort
}

// Endpoints are the encrypted listeners StartEncrypted opened with TLS
// (DNS over HTTPS's http:// listeners, whose TLS a proxy in front
// terminates, are not among them), in the order of its addresses: DNS
// over TLS, then HTTPS, then QUIC.
func (s *Server) Endpoints() []Endpoint { return s.endpoints }

// dohListener is one DNS over HTTPS listener of a Server.
type dohListener struct {
	srv *DoHServer
}

// doqListener is one DNS over QUIC listener of a Server, with its socket.
type doqListener struct {
	srv    *DoQServer
	mu     sync.Mutex
	pc     net.PacketConn // the socket served; serveDoQ replaces it
	closed bool           // closeSocket was called: no socket replaces pc
}

// socket is the socket the listener serves, or last served.
func (l *doqListener) socket() net.PacketConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pc
}

// closeSocket closes the listener's socket for good, at Shutdown or
// Close: one serveDoQ opens after it is closed at once.
func (l *doqListener) closeSocket() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	_ = l.pc.Close()
}

// firstReopenWait and maxReopenWait bound the wait before a DNS over QUIC
// listener that stopped is opened again: the first wait, doubled while
// opening or serving fails at once.
const (
	firstReopenWait = time.Second
	maxReopenWait   = time.Minute
)

// serveDoQ serves l until Shutdown. quic-go ends a listener on a read
// error of its socket that it does not take as temporary (ENOMEM, ENOBUFS,
// the socket closed under it); the listener is then told stopped (Config.
// Stopped: /readyz 503) and its socket replaced by a new one at the same
// address, after firstReopenWait doubling to maxReopenWait while that
// fails, and told resumed once it serves again. Before, it stayed stopped,
// its DoQ clients unanswered, until dnsfence was restarted.
func (s *Server) serveDoQ(l *doqListener) {
	addr := l.socket().LocalAddr().String()
	wait := time.Duration(0)
	for {
		served := time.Now()
		err := l.srv.Serve(l.socket())
		if err == nil {
			return // Shutdown or Close
		}
		if time.Since(served) > maxReopenWait {
			wait = 0 // it served a while: a new failure, not the last one again
		}
		s.stopped(QUIC, addr, err)
		for {
			wait = min(max(2*wait, s.reopenFirst), maxReopenWait)
			select {
			case <-time.After(wait):
			case <-l.srv.stopping:
				return
			}
			_ = l.socket().Close()
			pc, err := net.ListenPacket("udp", addr)
			if err == nil {
				l.mu.Lock()
				closed := l.closed
				if !closed {
					l.pc = pc
				}
				l.mu.Unlock()
				if closed { // Shutdown came in between
					_ = pc.Close()
					return
				}
				break
			}
			s.log.Warn("listener stopped: opening it again failed", zap.String("transport", QUIC),
				zap.String("address", addr), zap.Error(err), zap.Duration("retry_in", min(2*wait, maxReopenWait)))
		}
		s.log.Info("listener opened again", zap.String("transport", QUIC), zap.String("address", addr))
		s.cfg.Resumed(QUIC, addr)
	}
}

// errNoCert is StartEncrypted's error when a listener needs a certificate
// and none was given.
var errNoCert = errors.New("an encrypted listener needs a certificate (tls.cert and tls.key)")

// StartEncrypted listens with DNS over TLS, HTTPS and QUIC at e's
// addresses, with the Handler, Counter, rules and admission of the UDP and
// TCP listeners: the same connection cap per client (counted over every
// stream transport), allowed_clients at accept, PROXY protocol v2 (DoT)
// and Forwarded/X-Forwarded-For (DoH) believed from trusted proxies only.
// Each listener takes limits as TCP does: DoT reads them at each
// connection, like TCP; DoH and DoQ read tcp_connections (their
// connection cap), tcp_pipeline (queries in progress per connection),
// tcp_read_timeout (a query's arrival, and the TLS handshake) and
// tcp_idle_timeout now. Port 0 picks a free port for each address. On
// error every socket the Server opened, by Start too, is closed.
func (s *Server) StartEncrypted(e Encrypted) error {
	limits, err := s.limits()
	if err != nil {
		return err
	}
	fail := func(addr string, err error) error {
		s.closeAll()
		return fmt.Errorf("listening on %s: %w%s", addr, err, BindHint(addr, err))
	}
	tlsConfig := func(addr string, alpn ...string) (*tls.Config, error) {
		if e.Cert == nil {
			return nil, fail(addr, errNoCert)
		}
		return ServerTLSConfig(e.Cert, alpn...), nil
	}
	for _, addr := range e.TLS {
		cfg, err := tlsConfig(addr, ALPNDoT)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(addr, err)
		}
		dot := newTCPServer(ln, s.cfg, s.log, s.admission, limits.TCPConnections, s.counted(TLS), s.invalid(TLS), cfg)
		s.tcp = append(s.tcp, dot)
		s.endpoint(TLS, ln.Addr())
		s.wg.Go(dot.serve)
		s.log.Info("listening", zap.String("address", ln.Addr().String()), zap.Strings("transports", []string{TLS}))
	}
	for _, addr := range e.HTTPS {
		hostport, plain, err := ParseDoHListen(addr)
		if err != nil {
			return fail(addr, err)
		}
		var cfg *tls.Config
		if !plain {
			if cfg, err = tlsConfig(addr, ALPNHTTP2, ALPNHTTP1); err != nil {
				return err
			}
		}
		ln, err := net.Listen("tcp", hostport)
		if err != nil {
			return fail(addr, err)
		}
		srv := NewDoHServer(DoHOptions{
			Handler:         s.cfg.Handler,
			Count:           s.cfg.Count,
			Log:             s.log.Named("doh"),
			HandshakeFailed: func() { s.cfg.HandshakeFailed(HTTPS) },
			Closed:          func(reason string) { s.cfg.Closed(HTTPS, reason) },
			TLS:             cfg,
			Trusted:         s.trusted,
			Admit:           s.admitter(HTTPS),
			// At the cap the listener is not accepted from, as on TCP.
			MaxConns:          limits.TCPConnections,
			MaxStreams:        limits.TCPPipeline,
			ReadHeaderTimeout: limits.TCPReadTimeout,
			IdleTimeout:       limits.TCPIdleTimeout,
		})
		s.doh = append(s.doh, &dohListener{srv: srv})
		if !plain {
			s.endpoint(HTTPS, ln.Addr())
		}
		s.wg.Go(func() {
			if err := srv.Serve(ln); err != nil {
				s.stopped(HTTPS, ln.Addr().String(), err)
			}
		})
		scheme := "https"
		if plain {
			scheme = "http"
		}
		s.log.Info("listening", zap.String("address", ln.Addr().String()), zap.Strings("transports", []string{HTTPS}),
			zap.String("url", scheme+"://"+ln.Addr().String()+DoHPath))
	}
	for _, addr := range e.QUIC {
		cfg, err := tlsConfig(addr, ALPNDoQ)
		if err != nil {
			return err
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fail(addr, err)
		}
		srv := NewDoQServer(DoQOptions{
			Handler:    s.cfg.Handler,
			Count:      s.cfg.Count,
			Log:        s.log.Named("doq"),
			TLS:        cfg,
			Admit:      s.admitter(QUIC),
			MaxConns:   limits.TCPConnections,
			MaxStreams: limits.TCPPipeline,
			// A stalled handshake holds a connection place: as long as
			// on DoT and DoH, not DoQ's own default.
			HandshakeTimeout: limits.TCPReadTimeout,
			HandshakeFailed:  func() { s.cfg.HandshakeFailed(QUIC) },
			Closed:           func(reason string) { s.cfg.Closed(QUIC, reason) },
			ReadTimeout:      limits.TCPReadTimeout,
			IdleTimeout:      limits.TCPIdleTimeout,
		})
		s.endpoint(QUIC, pc.LocalAddr())
		l := &doqListener{srv: srv, pc: pc}
		s.doq = append(s.doq, l)
		s.wg.Go(func() { s.serveDoQ(l) })
		s.log.Info("listening", zap.String("address", pc.LocalAddr().String()), zap.Strings("transports", []string{QUIC}))
	}
	return nil
}

// stopped logs that the transport's listener at addr stopped serving for
// err, and tells Config.Stopped.
func (s *Server) stopped(transport, addr string, err error) {
	msg := "listener stopped: restart dnsfence to serve on it again"
	if transport == QUIC {
		msg = "listener stopped: opening it again"
	}
	s.log.Error(msg, zap.String("transport", transport), zap.String("address", addr), zap.Error(err))
	if s.cfg.Stopped != nil {
		s.cfg.Stopped(transport, addr, err)
	}
}

// endpoint records a listener StartEncrypted opened with TLS at addr.
func (s *Server) endpoint(transport string, addr net.Addr) {
	s.endpoints = append(s.endpoints, Endpoint{Transport: transport, Addr: AddrPortOf(addr)})
}

// trusted reports whether peer is a trusted proxy under the rules of the
// moment (the DoH listeners ask at each request).
func (s *Server) trusted(peer netip.Addr) bool {
	if s.cfg.Rules == nil {
		return false
	}
	r := s.cfg.Rules()
	return r != nil && r.Trusted(peer)
}

// admitter is the admission of connections on transport, for the DoH and
// DoQ listeners.
func (s *Server) admitter(transport string) func(netip.Addr) (func(), bool) {
	return func(peer netip.Addr) (func(), bool) {
		adm, ok := s.admission.admit(transport, peer)
		return adm.release, ok
	}
}
