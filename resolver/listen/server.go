package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Results a listener counts itself, before a Handler sees the query: the
// same words as the Handler's results (resolver.Result*), which are these.
const (
	ResultDropped = "dropped" // no answer: not a query, or nothing to answer
	ResultFormerr = "formerr" // FORMERR: no single question, or a message that does not parse
	ResultNotimp  = "notimp"  // NOTIMP: an opcode other than QUERY
	ResultBadvers = "badvers" // BADVERS: an OPT record of a VERSION other than 0
)

// Limits bound what the listeners take. A Server reads them from Rules:
// the socket buffers and the connection cap when it starts, the others at
// each connection.
type Limits struct {
	TCPConnections          int           // stream connections open at once on each listener: TCP, DoT, DoH, DoQ (read at Start)
	TCPConnectionsPerClient int           // open stream connections of one client network, over every listener (read at accept)
	TCPPipeline             int           // queries of one TCP connection answered at once
	TCPReadTimeout          time.Duration // wait for a new connection's first query, whole
	TCPIdleTimeout          time.Duration // wait for each later query of a connection, whole, from its last answer
	UDPReceiveBuffer        int           // SO_RCVBUF asked for each UDP socket, in bytes (read at Start)
	UDPSendBuffer           int           // SO_SNDBUF asked for each UDP socket, in bytes (read at Start)
}

// Rules are what the listeners decide with, from the state current when
// they decide: admission at accept, PROXY trust when the header arrives,
// limits at each connection.
type Rules interface {
	// Allowed reports whether peer may use the resolver at all.
	Allowed(peer netip.Addr) bool
	// Trusted reports whether peer is a trusted proxy, whose PROXY header
	// names the client.
	Trusted(peer netip.Addr) bool
	// Limits are the bounds of the listeners.
	Limits() Limits
}

// Config is what a Server needs from outside: where queries go, how they
// are counted, and the rules of the moment. Funcs left nil do nothing.
type Config struct {
	Handler Handler
	// Count counts a query the listener answers or drops itself.
	Count Counter
	// Rules returns the rules now; nil while there are none (nothing is
	// admitted then).
	Rules func() Rules
	// Connections counts stream connections admitted (delta 1) and closed
	// (delta -1), by transport.
	Connections func(transport string, delta int)
	// Refused counts a connection closed at accept, by transport and reason
	// (RefusedNotAllowed, RefusedPerClient).
	Refused func(transport, reason string)
	// Closed counts a connection closed for what its client did after it
	// was admitted, by transport and reason (ClosedReasons).
	Closed func(transport, reason string)
	// HandshakeFailed counts a DNS over TLS, HTTPS or QUIC connection,
	// by transport (TLS, HTTPS, QUIC), whose TLS handshake failed: the
	// client sent something (a ClientHello, or bytes that are not TLS)
	// and the handshake did not complete (an untrusted certificate, no
	// shared version or ALPN protocol, a stall, plain DNS to the port).
	// Not counted: a connection closed before its first byte, one the stop
	// ended, one refused at admission.
	HandshakeFailed func(transport string)
	// Sockets is told of the UDP sockets Start opened, with the buffers the
	// kernel granted them.
	Sockets func([]UDPSocket)
	// Stopped, when set, is told that a listener stopped serving on its
	// own, by transport (HTTPS, QUIC), address and the error that stopped
	// it: a DNS over QUIC listener whose transport failed (quic-go ends it
	// on a read error of its socket), a DNS over HTTPS one whose Serve
	// failed. A DNS over QUIC listener is opened again on a new socket at
	// its address (Resumed tells when it serves); a DNS over HTTPS one,
	// whose accept failures are waited out (Patient), stops only if its
	// socket is closed under it, and stays stopped until a restart. Never
	// told at Shutdown. The UDP, TCP and DoT loops wait out their errors
	// and never stop.
	Stopped func(transport, addr string, err error)
	// Resumed, when set, is told that a listener Stopped told of serves
	// again, by transport and address.
	Resumed func(transport, addr string)
	Log     *zap.Logger
}

// Server serves a Handler on UDP and TCP at every listen address (Start),
// and on DNS over TLS, HTTPS and QUIC at theirs (StartEncrypted).
type Server struct {
	cfg Config
	log *zap.Logger
	udp []*udpServer
	tcp []*tcpServer // TCP, and DNS over TLS
	doh []*dohListener
	doq []*doqListener
	// endpoints are the listeners StartEncrypted opened with TLS, in the
	// order it opened them (Endpoints).
	endpoints []Endpoint
	wg        sync.WaitGroup
	// admission decides which connections every stream listener serves.
	admission *admission
	// reopenFirst is the first wait before a stopped DNS over QUIC
	// listener is opened again (serveDoQ): firstReopenWait, shorter in
	// tests.
	reopenFirst time.Duration
}

// New returns a Server for cfg; Start opens its sockets.
func New(cfg Config) *Server {
	if cfg.Count == nil {
		cfg.Count = func(string, string) {}
	}
	if cfg.Connections == nil {
		cfg.Connections = func(string, int) {}
	}
	if cfg.Refused == nil {
		cfg.Refused = func(string, string) {}
	}
	if cfg.Closed == nil {
		cfg.Closed = func(string, string) {}
	}
	if cfg.HandshakeFailed == nil {
		cfg.HandshakeFailed = func(string) {}
	}
	if cfg.Sockets == nil {
		cfg.Sockets = func([]UDPSocket) {}
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Resumed == nil {
		cfg.Resumed = func(string, string) {}
	}
	return &Server{cfg: cfg, log: cfg.Log, admission: newAdmission(cfg), reopenFirst: firstReopenWait}
}

// AcceptQuery is the first look at a packet, before it is parsed: answers
// (QR set) are dropped, because replying to them could loop or reflect;
// opcodes other than QUERY and NOTIFY get NOTIMP, and a question count
// other than one, or more records than a query holds (tooManyRecords),
// FORMERR. A NOTIFY (RFC 1996) goes to the Handler,
// which answers it for the zones it pulls and with NOTIMP otherwise. Every
// listener accepts with it (counting what it rejects), through
// AcceptMessage.
func AcceptQuery(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	if !handledOpcode(dnswire.Opcode(dh.Bits)) {
		return dns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 || tooManyRecords(dh.Ancount, dh.Nscount, dh.Arcount) {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// tooManyRecords reports whether a message whose header counts an, ns and
// ar records in its answer, authority and additional sections holds more
// than any query dnsfence answers can: one in its answer section (a
// NOTIFY's SOA, RFC 1996 §3.7), one in its authority section (an IXFR's
// SOA, RFC 1995 §3) and two in its additional section (the OPT, RFC 6891,
// and a TSIG, RFC 8945 §5.2). The Handler answers any record beyond those
// FORMERR (strayRecords), so such a message is answered FORMERR from its
// header (headerReject), never unpacked: its records would cost the
// parse and nothing else, and compressed to 2-octet pointers to a name of
// up to 255 octets each, 4,096 octets of them unpacked into 216 KB and
// 65,535 into 3.7 MB (CoreDNS's GHSA-mrg3-qvqr-jw29, CVE-2026-82399). The
// bounds are miekg/dns's own default accept function's.
func tooManyRecords(an, ns, ar uint16) bool {
	return an > 1 || ns > 1 || ar > 2
}

// handledOpcode reports whether a message of opcode goes to the Handler:
// QUERY, and NOTIFY (RFC 1996). Every listener answers the others NOTIMP
// itself (AcceptQuery, checkQuery): DoH and DoQ once answered NOTIFY so,
// where UDP, TCP and DoT hand it on.
func handledOpcode(opcode int) bool {
	return opcode == dns.OpcodeQuery || opcode == dns.OpcodeNotify
}

// counted wraps AcceptQuery to count what it drops, since those packets
// never reach the handler. What it rejects is counted where it is
// answered (answerReject): the Handler may drop the answer.
func (s *Server) counted(transport string) dns.MsgAcceptFunc {
	return func(dh dns.Header) dns.MsgAcceptAction {
		action := AcceptQuery(dh)
		if action == dns.MsgIgnore {
			s.cfg.Count(transport, ResultDropped)
		}
		return action
	}
}

// invalid counts packets that did not parse and are dropped: those
// without a full header (any answer could be used to amplify). One with
// a header gets FORMERR, counted where it is answered (answerReject).
func (s *Server) invalid(transport string) dns.MsgInvalidFunc {
	const headerSize = 12
	return func(m []byte, _ error) {
		if len(m) < headerSize {
			s.cfg.Count(transport, ResultDropped)
		}
	}
}

// errNoRules is Start's error before any rules are loaded.
var errNoRules = errors.New("no rules loaded to listen with")

// limits are the current rules' limits, or errNoRules before any are
// loaded.
func (s *Server) limits() (Limits, error) {
	var rules Rules
	if s.cfg.Rules != nil {
		rules = s.cfg.Rules()
	}
	if rules == nil {
		return Limits{}, errNoRules
	}
	return rules.Limits(), nil
}

// Start listens on UDP and TCP at every address ("host:port"). Port 0
// picks one free port used for both transports. On error every socket
// opened so far is closed.
func (s *Server) Start(listen []string) error {
	limits, err := s.limits()
	if err != nil {
		return err
	}
	var socks []UDPSocket
	for _, addr := range listen {
		pcs, ln, err := listenShared(addr, runtime.GOMAXPROCS(0))
		if err != nil {
			s.closeAll()
			return fmt.Errorf("listening on %s: %w%s", addr, err, BindHint(addr, err))
		}
		for _, pc := range pcs {
			info, err := setUDPBuffers(pc.(*net.UDPConn), limits.UDPReceiveBuffer, limits.UDPSendBuffer)
			if err != nil {
				for _, pc := range pcs {
					pc.Close()
				}
				ln.Close()
				s.closeAll()
				return fmt.Errorf("listening on %s: %w", addr, err)
			}
			socks = append(socks, info)
		}
		fromDst := make([]bool, len(pcs))
		for i, pc := range pcs {
			if fromDst[i], err = answerFromDst(pc.(*net.UDPConn)); err != nil {
				for _, pc := range pcs {
					pc.Close()
				}
				ln.Close()
				s.closeAll()
				return fmt.Errorf("listening on %s: asking for each datagram's destination: %w", addr, err)
			}
		}
		if a := pcs[0].LocalAddr().(*net.UDPAddr); a.IP.IsUnspecified() && !fromDst[0] {
			s.log.Warn("UDP answers to a wildcard listen address leave from the address the kernel's routing picks on this system, which clients of another of its addresses drop: listen on each address instead",
				zap.String("address", a.String()))
		}
		for i, pc := range pcs {
			udp := newUDPServer(pc.(*net.UDPConn), fromDst[i], s.cfg.Handler, s.cfg.Count, s.log, s.counted(UDP), s.invalid(UDP))
			s.udp = append(s.udp, udp)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				udp.serve()
			}()
		}
		tcp := newTCPServer(ln, s.cfg, s.log, s.admission, limits.TCPConnections, s.counted(TCP), s.invalid(TCP), nil)
		s.tcp = append(s.tcp, tcp)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tcp.serve()
		}()
		s.log.Info("listening", zap.String("address", pcs[0].LocalAddr().String()),
			zap.Strings("transports", []string{UDP, TCP}), zap.Int("udp_sockets", len(pcs)))
	}
	s.reportBuffers(limits, socks)
	return nil
}

// reportBuffers logs and reports the UDP buffers the kernel granted, with a
// warning when it granted less than asked: the kernel caps SO_RCVBUF at
// twice net.core.rmem_max without an error.
func (s *Server) reportBuffers(limits Limits, socks []UDPSocket) {
	if len(socks) == 0 {
		return
	}
	s.cfg.Sockets(socks)
	rcv, snd := socks[0].ReceiveBuffer, socks[0].SendBuffer
	for _, si := range socks {
		rcv, snd = min(rcv, si.ReceiveBuffer), min(snd, si.SendBuffer)
	}
	s.log.Info("UDP socket buffers", zap.Int("receive_bytes", rcv), zap.Int("send_bytes", snd),
		zap.Int("receive_asked", limits.UDPReceiveBuffer), zap.Int("send_asked", limits.UDPSendBuffer))
	if rcv < limits.UDPReceiveBuffer {
		s.log.Warn("the kernel granted a smaller UDP receive buffer than limits.udp_receive_buffer: raise net.core.rmem_max to at least the value asked",
			zap.Int("receive_bytes", rcv), zap.Int("receive_asked", limits.UDPReceiveBuffer))
	}
	if snd < limits.UDPSendBuffer {
		s.log.Warn("the kernel granted a smaller UDP send buffer than limits.udp_send_buffer: raise net.core.wmem_max to at least the value asked",
			zap.Int("send_bytes", snd), zap.Int("send_asked", limits.UDPSendBuffer))
	}
}

// listenShared opens n UDP sockets sharing addr with SO_REUSEPORT, so the
// kernel spreads queries over n read loops (one per core), and a TCP
// listener on the same port. The TCP listener binds first, then a UDP
// socket without SO_REUSEPORT checks the port free for UDP, then the group
// binds. A process of the same user holding the port with SO_REUSEPORT (a
// second dnsfence started by mistake, or a server of another kind) would
// otherwise be joined: the two share its queries, and the one that should
// not answer answers some. A second dnsfence now fails at its TCP bind,
// before it holds a UDP socket. Port 0 picks one free port for all of
// them: the TCP listener's, which the kernel picks free for TCP (a port an
// outgoing connection had in the last minute, in TIME_WAIT, is not: a UDP
// pick often was, on a machine making many connections). A window remains
// between the probe's close and the group's bind, in which such a process
// could take the port; the probe cannot stay open, as the group could not
// bind beside it.
func listenShared(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	closeAll := func(pcs []net.PacketConn, ln net.Listener) {
		for _, pc := range pcs {
			pc.Close()
		}
		if ln != nil {
			ln.Close()
		}
	}
	for try := 0; ; try++ {
		// again: with port 0, whether to pick another port after err.
		again := func(err error) bool { return port == "0" && try < 10 && errors.Is(err, unix.EADDRINUSE) }
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		at := ln.Addr().String()
		probe, err := net.ListenPacket("udp", at)
		if err != nil {
			ln.Close()
			if again(err) {
				continue // a UDP socket has the TCP pick
			}
			return nil, nil, err
		}
		probe.Close()
		var pcs []net.PacketConn
		for len(pcs) < n && err == nil {
			var pc net.PacketConn
			if pc, err = lc.ListenPacket(context.Background(), "udp", at); err == nil {
				pcs = append(pcs, pc)
			}
		}
		if err == nil {
			return pcs, ln, nil
		}
		closeAll(pcs, ln)
		if !again(err) {
			return nil, nil, err
		}
		// taken since the probe: another port
	}
}

func (s *Server) closeAll() {
	s.stopTaking()
	for _, u := range s.udp {
		u.drain(nil)
	}
	for _, t := range s.tcp {
		t.drain(nil)
	}
	for _, d := range s.doh {
		_ = d.srv.Close()
	}
	for _, q := range s.doq {
		_ = q.srv.Close()
		q.closeSocket()
	}
	s.wg.Wait()
}

// stopTaking stops every transport from taking new queries, at once and
// without waiting: the UDP sockets are no longer read (a query arriving now
// waits in the kernel until the socket closes, unanswered), the TCP and
// TLS listeners close, open TCP and TLS connections read no further
// query, the HTTPS listeners answer every request from now on 503 (they
// close in Shutdown's first step, which sends HTTP/2 clients GOAWAY), and
// the QUIC listeners take no new connection or stream.
func (s *Server) stopTaking() {
	for _, u := range s.udp {
		u.stopReading()
	}
	for _, t := range s.tcp {
		t.stopAccepting()
	}
	for _, d := range s.doh {
		d.srv.stopTaking()
	}
	for _, q := range s.doq {
		q.srv.startDraining()
	}
}

// Shutdown stops every transport from taking new queries first, then waits
// for the queries already taken to be answered, on every transport at
// once, and closes the sockets. ctx bounds the wait: when it ends, what is
// still in flight is abandoned and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopTaking()
	s.log.Info("stopped taking queries; answering those in flight")
	var drains sync.WaitGroup
	for _, u := range s.udp {
		drains.Go(func() { u.drain(ctx.Done()) })
	}
	for _, t := range s.tcp {
		drains.Go(func() { t.drain(ctx.Done()) })
	}
	for _, d := range s.doh {
		drains.Go(func() {
			if d.srv.Shutdown(ctx) != nil {
				_ = d.srv.Close() // ctx ended: abandon what is left
			}
		})
	}
	for _, q := range s.doq {
		drains.Go(func() {
			_ = q.srv.Shutdown(ctx)
			q.closeSocket()
		})
	}
	done := make(chan struct{})
	go func() {
		drains.Wait()
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
