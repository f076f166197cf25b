package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// testServer is an encrypted DNS server of a test, on 127.0.0.1.
type testServer interface {
	// upstream is the server's address as an upstream, with name after #.
	upstream(name string) string
	// connections is how many connections it accepted.
	connections() int
	// queries are the queries it received, as they came (no framing).
	queries() [][]byte
	// closeAll closes every connection it has, as a server closing idle
	// connections does.
	closeAll()
	// resumed says, for each connection's TLS handshake in the order they
	// completed, whether it resumed an earlier session.
	resumed() []bool
}

// resumptions records whether TLS handshakes resumed a session.
type resumptions struct {
	mu  sync.Mutex
	did []bool
}

func (r *resumptions) add(did bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.did = append(r.did, did)
}

func (r *resumptions) resumed() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.did...)
}

// encryptedKinds are the encrypted transports, each with a test server speaking it
// that answers each query with answer (nil: never answers).
var encryptedKinds = []struct {
	name  string
	start func(t *testing.T, cert tls.Certificate, answer func(*dns.Msg) *dns.Msg) testServer
}{
	{"tls", func(t *testing.T, cert tls.Certificate, answer func(*dns.Msg) *dns.Msg) testServer {
		return startDoT(t, cert, serveFrames(answer))
	}},
	{"https", func(t *testing.T, cert tls.Certificate, answer func(*dns.Msg) *dns.Msg) testServer {
		return startDoH(t, cert, answer)
	}},
	{"quic", func(t *testing.T, cert tls.Certificate, answer func(*dns.Msg) *dns.Msg) testServer {
		return startDoQ(t, cert, serveDoQ(answer))
	}},
}

// dotTestServer is a DNS-over-TLS server whose connections serve runs.
type dotTestServer struct {
	addr     string
	accepted atomic.Int32
	rec      queryRecorder
	resumptions
	mu    sync.Mutex
	conns []net.Conn
}

func startDoT(t *testing.T, cert tls.Certificate, serve func(*dotTestServer, net.Conn)) *dotTestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return startDoTOn(t, ln, cert, serve)
}

// startDoTOn is startDoT on a TCP listener of the test's making (one whose
// sockets take little before a writer blocks, say).
func startDoTOn(t *testing.T, tcp net.Listener, cert tls.Certificate, serve func(*dotTestServer, net.Conn)) *dotTestServer {
	t.Helper()
	return startDoTWith(t, tcp, &tls.Config{Certificates: []tls.Certificate{cert}}, serve)
}

// startDoTWith is startDoTOn with the server's TLS configuration (its
// certificates, or how it picks one), to which it adds the ALPN "dot" and
// TLS 1.2 or later.
func startDoTWith(t *testing.T, tcp net.Listener, cfg *tls.Config, serve func(*dotTestServer, net.Conn)) *dotTestServer {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"dot"}
	cfg.MinVersion = tls.VersionTLS12
	ln := tls.NewListener(tcp, cfg)
	s := &dotTestServer{addr: ln.Addr().String()}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			go func() {
				tc := conn.(*tls.Conn)
				if tc.Handshake() != nil {
					_ = conn.Close()
					return
				}
				s.add(tc.ConnectionState().DidResume)
				serve(s, conn)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.closeAll()
	})
	return s
}

// closeAll closes every connection the server accepted, as a server
// closing idle connections does.
func (s *dotTestServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}

func (s *dotTestServer) upstream(name string) string { return "tls://" + s.addr + "#" + name }
func (s *dotTestServer) connections() int            { return int(s.accepted.Load()) }
func (s *dotTestServer) queries() [][]byte           { return s.rec.all() }

// readFrame reads one length-prefixed DNS message.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, int(hdr[0])<<8|int(hdr[1]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// writeFrame writes m with its 2-octet length.
func writeFrame(w io.Writer, m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
	return err
}

// serveFrames serves a DoT connection as a pipelining server does: each
// query answered in its own goroutine, so answers go out in the order they
// are ready.
func serveFrames(answer func(*dns.Msg) *dns.Msg) func(*dotTestServer, net.Conn) {
	return func(s *dotTestServer, conn net.Conn) {
		defer conn.Close()
		var wmu sync.Mutex
		for {
			b, err := readFrame(conn)
			if err != nil {
				return
			}
			s.rec.add(b)
			go func() {
				q := new(dns.Msg)
				if q.Unpack(b) != nil {
					return
				}
				if m := answer(q); m != nil {
					wmu.Lock()
					defer wmu.Unlock()
					_ = writeFrame(conn, m)
				}
			}()
		}
	}
}

// dohTestServer is a DNS-over-HTTPS server (RFC 8484, POST) that forwards
// each query to a plain DNS upstream.
type dohTestServer struct {
	srv      *httptest.Server
	accepted atomic.Int32
	ended    atomic.Int32 // connections closed (or hijacked)
	rec      queryRecorder
	mu       sync.Mutex
	protos   []int      // the HTTP major version of each request
	active   []net.Conn // connections that became active (once for resumed)
	conns    []net.Conn // the connections, for closing them under a query
	resumptions
	// before, if set, runs first for each request; true: it has answered.
	before func(w http.ResponseWriter, r *http.Request) bool
}

func startDoH(t *testing.T, cert tls.Certificate, answer func(*dns.Msg) *dns.Msg) *dohTestServer {
	t.Helper()
	return startDoHWith(t, cert, answer, true)
}

// startDoHWith is startDoH, speaking HTTP/1.1 alone unless http2.
func startDoHWith(t *testing.T, cert tls.Certificate, answer func(*dns.Msg) *dns.Msg, http2 bool) *dohTestServer {
	t.Helper()
	up := plainTestUpstream(t, answer)
	s := &dohTestServer{}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.protos = append(s.protos, r.ProtoMajor)
		before := s.before
		s.mu.Unlock()
		if before != nil && before(w, r) {
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/dns-query" {
			http.Error(w, "POST /dns-query only", http.StatusMethodNotAllowed)
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/dns-message" {
			http.Error(w, "not application/dns-message", http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 65536))
		if err != nil {
			return
		}
		s.rec.add(body)
		q := new(dns.Msg)
		if err := q.Unpack(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c := &dns.Client{Net: "udp"}
		resp, _, err := c.ExchangeContext(r.Context(), q, up)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		b, err := resp.Pack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/dns-message")
		_, _ = w.Write(b)
	}))
	s.srv.EnableHTTP2 = http2
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the tests make fail
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if !http2 {
		s.srv.TLS.NextProtos = []string{"http/1.1"}
	}
	s.srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if tc, ok := c.(*tls.Conn); ok && st == http.StateActive {
			s.mu.Lock()
			seen := slices.Contains(s.active, c)
			s.active = append(s.active, c)
			s.mu.Unlock()
			if !seen {
				s.add(tc.ConnectionState().DidResume)
			}
		}
		if st == http.StateClosed || st == http.StateHijacked {
			s.ended.Add(1)
		}
		if st == http.StateNew {
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *dohTestServer) upstream(name string) string {
	return "https://" + s.srv.Listener.Addr().String() + "/dns-query#" + name
}
func (s *dohTestServer) connections() int  { return int(s.accepted.Load()) }
func (s *dohTestServer) queries() [][]byte { return s.rec.all() }

// open is how many of its connections are still open.
func (s *dohTestServer) open() int { return int(s.accepted.Load() - s.ended.Load()) }

func (s *dohTestServer) setBefore(f func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before = f
}

func (s *dohTestServer) httpVersions() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.protos...)
}

// closeAll closes the connections the server accepted, under any request
// in flight on them.
func (s *dohTestServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}

// doqTestServer is a DNS-over-QUIC server whose streams serve runs.
type doqTestServer struct {
	addr     string
	accepted atomic.Int32
	rec      queryRecorder
	mu       sync.Mutex
	closed   []error // why each connection closed, as its context's cause says
	conns    []*quic.Conn
	resumptions
}

func startDoQ(t *testing.T, cert tls.Certificate, serve func(*doqTestServer, *quic.Conn, *quic.Stream)) *doqTestServer {
	t.Helper()
	return startDoQWith(t, cert, &quic.Config{}, serve)
}

// startDoQWith is startDoQ with the server's QUIC configuration (the
// streams it lets a client open, say).
func startDoQWith(t *testing.T, cert tls.Certificate, conf *quic.Config, serve func(*doqTestServer, *quic.Conn, *quic.Stream)) *doqTestServer {
	t.Helper()
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"doq"},
		MinVersion:   tls.VersionTLS13,
	}, conf)
	require.NoError(t, err)
	s := &doqTestServer{addr: ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, conn)
			s.mu.Unlock()
			go func() {
				select {
				case <-conn.HandshakeComplete():
					s.add(conn.ConnectionState().TLS.DidResume)
				case <-conn.Context().Done():
				}
			}()
			go func() {
				<-conn.Context().Done()
				s.mu.Lock()
				s.closed = append(s.closed, context.Cause(conn.Context()))
				s.mu.Unlock()
			}()
			go func() {
				for {
					str, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					go serve(s, conn, str)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
	})
	return s
}

func (s *doqTestServer) upstream(name string) string { return "quic://" + s.addr + "#" + name }
func (s *doqTestServer) connections() int            { return int(s.accepted.Load()) }
func (s *doqTestServer) queries() [][]byte           { return s.rec.all() }

// closeAll closes every connection with DOQ_NO_ERROR, as a server closing
// idle connections does.
func (s *doqTestServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.CloseWithError(doqNoError, "")
	}
	s.conns = nil
}

// closeCodes are the DoQ error codes the server's connections were closed
// with by the client.
func (s *doqTestServer) closeCodes() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var codes []uint64
	for _, err := range s.closed {
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.Remote {
			codes = append(codes, uint64(ae.ErrorCode))
		}
	}
	return codes
}

// serveDoQ serves a DoQ stream as RFC 9250 §4.2 has it: the query is read
// to the client's STREAM FIN, answered on the same stream, and the stream
// ended. With no answer it waits until the client gives up the stream.
func serveDoQ(answer func(*dns.Msg) *dns.Msg) func(*doqTestServer, *quic.Conn, *quic.Stream) {
	return func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		q, ok := readDoQQuery(s, conn, str)
		if !ok {
			return
		}
		m := answer(q)
		if m == nil {
			<-str.Context().Done()
			return
		}
		_ = writeFrame(str, m)
		_ = str.Close()
	}
}

// readDoQQuery reads a stream's query, up to its FIN, and records it; a
// query that breaks RFC 9250 (not one whole message, a non-zero ID) closes
// the connection with DOQ_PROTOCOL_ERROR.
func readDoQQuery(s *doqTestServer, conn *quic.Conn, str *quic.Stream) (*dns.Msg, bool) {
	b, err := io.ReadAll(io.LimitReader(str, 65538))
	if err != nil {
		return nil, false
	}
	q := new(dns.Msg)
	if len(b) < 2 || len(b)-2 != int(b[0])<<8|int(b[1]) || q.Unpack(b[2:]) != nil || q.Id != 0 {
		_ = conn.CloseWithError(doqProtocolError, "bad query")
		return nil, false
	}
	s.rec.add(b[2:])
	return q, true
}
