package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Server serves a Handler on UDP and TCP at every listen address.
type Server struct {
	handler *Handler
	log     *zap.Logger
	udp     []*udpServer
	tcp     []*tcpServer
	addrs   []string
	wg      sync.WaitGroup
	// admission decides which connections every stream listener serves.
	admission *admission
}

// NewServer returns a Server for h; Start opens its sockets.
func NewServer(log *zap.Logger, h *Handler) *Server {
	return &Server{handler: h, log: log, admission: newAdmission(h, log)}
}

// acceptQuery is the first look at a packet, before it is parsed: answers
// (QR set) are dropped, because replying to them could loop or reflect;
// opcodes other than QUERY get NOTIMP and a question count other than one
// gets FORMERR.
func acceptQuery(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

// counted wraps acceptQuery to count what it rejects or drops, since those
// packets never reach the handler.
func (s *Server) counted(transport string) dns.MsgAcceptFunc {
	return func(dh dns.Header) dns.MsgAcceptAction {
		action := acceptQuery(dh)
		switch action {
		case dns.MsgIgnore:
			s.handler.metrics.query(transport, ResultDropped)
		case dns.MsgReject:
			s.handler.metrics.query(transport, ResultFormerr)
		case dns.MsgRejectNotImplemented:
			s.handler.metrics.query(transport, ResultNotimp)
		}
		return action
	}
}

// invalid counts packets that did not parse: without a full header they are
// dropped (any answer could be used to amplify); with one, the server
// answered FORMERR.
func (s *Server) invalid(transport string) dns.MsgInvalidFunc {
	const headerSize = 12
	return func(m []byte, _ error) {
		if len(m) < headerSize {
			s.handler.metrics.query(transport, ResultDropped)
		} else {
			s.handler.metrics.query(transport, ResultFormerr)
		}
	}
}

// Start listens on UDP and TCP at every address. Port 0 picks one free port
// used for both transports. On error every socket opened so far is closed.
func (s *Server) Start(listen []string) error {
	limits := s.handler.Snapshot().Config.Limits
	var socks []udpSocketInfo
	for _, addr := range listen {
		pcs, ln, err := listenShared(addr, runtime.GOMAXPROCS(0))
		if err != nil {
			s.closeAll()
			return fmt.Errorf("listening on %s: %w", addr, err)
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
		s.addrs = append(s.addrs, pcs[0].LocalAddr().String())
		for _, pc := range pcs {
			udp := newUDPServer(pc.(*net.UDPConn), s.handler, s.log, s.counted("udp"), s.invalid("udp"))
			s.udp = append(s.udp, udp)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				udp.serve()
			}()
		}
		tcp := newTCPServer(ln, s.handler, s.log, s.admission, limits.TCPConnections,
			s.counted("tcp"), s.invalid("tcp"))
		s.tcp = append(s.tcp, tcp)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tcp.serve()
		}()
		s.log.Info("listening", zap.String("address", pcs[0].LocalAddr().String()),
			zap.Strings("transports", []string{"udp", "tcp"}), zap.Int("udp_sockets", len(pcs)))
	}
	s.reportBuffers(limits, socks)
	return nil
}

// reportBuffers logs and exports the UDP buffers the kernel granted, with a
// warning when it granted less than asked: the kernel caps SO_RCVBUF at
// twice net.core.rmem_max without an error.
func (s *Server) reportBuffers(limits config.Limits, socks []udpSocketInfo) {
	if len(socks) == 0 {
		return
	}
	s.handler.metrics.udpSockets(socks)
	rcv, snd := socks[0].receiveBuffer, socks[0].sendBuffer
	for _, si := range socks {
		rcv, snd = min(rcv, si.receiveBuffer), min(snd, si.sendBuffer)
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
// listener on the same port. Port 0 picks one free port for all of them.
func listenShared(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
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
	closeAll := func(pcs []net.PacketConn) {
		for _, pc := range pcs {
			pc.Close()
		}
	}
	for try := 0; ; try++ {
		first, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			return nil, nil, err
		}
		pcs := []net.PacketConn{first}
		actual := net.JoinHostPort(host, strconv.Itoa(first.LocalAddr().(*net.UDPAddr).Port))
		for len(pcs) < n && err == nil {
			var pc net.PacketConn
			if pc, err = lc.ListenPacket(context.Background(), "udp", actual); err == nil {
				pcs = append(pcs, pc)
			}
		}
		var ln net.Listener
		if err == nil {
			ln, err = net.Listen("tcp", actual)
		}
		if err == nil {
			return pcs, ln, nil
		}
		closeAll(pcs)
		// With port 0 the kernel's UDP pick may be taken on TCP: try again.
		if port != "0" || try >= 10 {
			return nil, nil, err
		}
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
	s.wg.Wait()
}

// stopTaking stops every transport from taking new queries, at once and
// without waiting: the UDP sockets are no longer read (a query arriving now
// waits in the kernel until the socket closes, unanswered), the TCP
// listeners close, and open TCP connections read no further query.
func (s *Server) stopTaking() {
	for _, u := range s.udp {
		u.stopReading()
	}
	for _, t := range s.tcp {
		t.stopAccepting()
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
	done := make(chan struct{})
	go func() {
		drains.Wait()
		s.wg.Wait()
		s.handler.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
