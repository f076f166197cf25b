package resolver

import (
	"context"
	"net/netip"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"go.uber.org/zap"
)

// Server serves a Handler on UDP and TCP at every listen address, and on
// the encrypted transports at theirs: the listeners of package listen, wired to the Handler, its metrics and the
// snapshot current at each decision.
type Server struct {
	handler *Handler
	ln      *listen.Server
	// sockets are the listening UDP sockets, once started.
	sockets []listen.UDPSocket
}

// NewServer returns a Server for h; Start opens its sockets.
func NewServer(log *zap.Logger, h *Handler) *Server { return newServer(log, h, h) }

// newServer is NewServer with the listener's queries served by serve, which
// answers them as h would (tests wrap h in it).
func newServer(log *zap.Logger, h *Handler, serve listen.Handler) *Server {
	s := &Server{handler: h}
	m := h.metrics
	s.ln = listen.New(listen.Config{
		Handler: serve,
		Count:   m.query,
		Rules: func() listen.Rules {
			if snap := h.Snapshot(); snap != nil {
				return listenRules{snap: snap, h: h}
			}
			return nil
		},
		Connections:     m.connections,
		Refused:         m.connectionRefused,
		Closed:          m.connectionClosed,
		HandshakeFailed: m.handshakeFailed,
		Sockets: func(socks []listen.UDPSocket) {
			s.sockets = socks
			m.udpSockets(socks)
		},
		Stopped: h.ListenerStopped,
		Resumed: h.ListenerResumed,
		Log:     log,
	})
	return s
}

// Start listens on UDP and TCP at every address. Port 0 picks one free port
// used for both transports. On error every socket opened so far is closed.
func (s *Server) Start(addrs []string) error { return s.ln.Start(addrs) }

// StartEncrypted listens with DNS over TLS, HTTPS and QUIC at cfg's
// listen_tls, listen_https and listen_quic addresses (DESIGN.md §8),
// serving cert (nil when every address is plain http://). The queries go
// through the same Handler, with the same admission, trust and limits, as
// on UDP and TCP (listen.Server.StartEncrypted), and those with TLS are
// the resolvers `_dns.resolver.arpa SVCB` designates (RFC 9462). On error every socket the
// Server opened is closed.
func (s *Server) StartEncrypted(cfg *config.Config, cert *Certificate) error {
	e := listen.Encrypted{TLS: cfg.ListenTLS, HTTPS: cfg.ListenHTTPS, QUIC: cfg.ListenQUIC}
	if cert != nil {
		e.Cert = cert.Store
	}
	if err := s.ln.StartEncrypted(e); err != nil {
		return err
	}
	if cert != nil {
		s.handler.designate(s.ln.Endpoints(), cert.Store)
		// What `check` warns about the designation, for the certificate
		// served now and for each one a reload serves.
		warn := s.handler.warnDesignation
		cert.served.Store(&warn)
		warn(cert.Store.Leaf())
	}
	return nil
}

// Shutdown stops every transport from taking new queries first, then waits
// for the queries already taken to be answered, on every transport at
// once, and closes the sockets. ctx bounds the wait: when it ends, what is
// still in flight is abandoned and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.ln.Shutdown(ctx); err != nil {
		return err
	}
	return s.handler.Wait(ctx)
}

// listenRules are a snapshot's rules for the listeners.
type listenRules struct {
	snap *Snapshot
	h    *Handler
}

// Allowed admits allowed_clients, and a zone source's primary, whose
// NOTIFY may come over TCP (RFC 1996 §3.1: BIND's after one unanswered
// over UDP) from outside allowed_clients. Its queries are still REFUSED.
func (r listenRules) Allowed(peer netip.Addr) bool {
	return r.snap.Allowed(peer) || r.h != nil && r.h.primary(peer)
}
func (r listenRules) Trusted(peer netip.Addr) bool { return r.snap.Trusted(peer) }
func (r listenRules) Limits() listen.Limits {
	l := r.snap.Config.Limits
	return listen.Limits{
		TCPConnections:          l.TCPConnections,
		TCPConnectionsPerClient: l.TCPConnectionsPerClient,
		TCPPipeline:             l.TCPPipeline,
		TCPReadTimeout:          l.TCPReadTimeout,
		TCPIdleTimeout:          l.TCPIdleTimeout,
		UDPReceiveBuffer:        l.UDPReceiveBuffer,
		UDPSendBuffer:           l.UDPSendBuffer,
	}
}
