package listen

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// framingServer is the smallest DNS over TLS server: it wraps each
// accepted connection with ServerTLS, as the TCP server does, and answers
// its length-prefixed queries one after another through h.
type framingServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	open map[net.Conn]struct{}
}

func startFramingServer(t *testing.T, h Handler, cfg *tls.Config, handshakeTimeout time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &framingServer{ln: ln, open: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			c := ServerTLS(raw, cfg, handshakeTimeout)
			s.mu.Lock()
			s.open[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.open, c)
					s.mu.Unlock()
				}()
				s.serveConn(c, h)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return ln.Addr().String()
}

func (s *framingServer) serveConn(c *TLSConn, h Handler) {
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		chk := checkQuery(b)
		w := &dotTestWriter{conn: c}
		switch {
		case chk.reject != nil:
			_ = w.WriteMsg(chk.reject)
		case chk.req != nil:
			if resume := h.ServeInline(w, chk.req); resume != nil {
				resume()
			}
		default:
			return
		}
		reply, _ := w.held()
		if reply == nil {
			return
		}
		reply = padReply(paddedQuery(chk.req, b), reply)
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(reply))), reply...)); err != nil {
			return
		}
	}
}

// dotTestWriter is the framing server's ResponseWriter.
type dotTestWriter struct {
	heldReply
	conn *TLSConn
}

func (w *dotTestWriter) Transport() string    { return TLS }
func (w *dotTestWriter) RemoteAddr() net.Addr { return w.conn.RemoteAddr() }
func (w *dotTestWriter) LocalAddr() net.Addr  { return w.conn.LocalAddr() }

// dotSetup is a framing DoT server over a fresh certificate.
type dotSetup struct {
	ca      *testCA
	files   certFiles
	serial  int64
	store   *CertStore
	handler *testHandler
	up      *testUpstream
	addr    string
}

func newDoTSetup(t *testing.T, handshakeTimeout time.Duration) *dotSetup {
	t.Helper()
	d := &dotSetup{ca: newTestCA(t)}
	d.files, d.serial = writePair(t, d.ca)
	d.store, _ = startStore(t, d.files, time.Hour)
	d.up = newTestUpstream(t)
	d.handler = newTestHandler(d.up)
	d.addr = startFramingServer(t, d.handler, ServerTLSConfig(d.store, ALPNDoT), handshakeTimeout)
	return d
}

// TestDoTAnswers: the TLS side of DNS over TLS (RFC 7858): ALPN "dot",
// TLS 1.2 at least, the store's certificate, session resumption, and the
// blocked and forwarded answers through it.
func TestDoTAnswers(t *testing.T) {
	d := newDoTSetup(t, 2*time.Second)
	cfg := clientTLS(d.ca, ALPNDoT)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)

	c, err := tls.Dial("tcp", d.addr, cfg)
	require.NoError(t, err)
	defer c.Close()
	st := c.ConnectionState()
	assert.Equal(t, ALPNDoT, st.NegotiatedProtocol)
	assert.Equal(t, uint16(tls.VersionTLS13), st.Version)
	assert.Equal(t, d.serial, st.PeerCertificates[0].SerialNumber.Int64())

	r, err := streamExchange(c, query("www.blocked.test"))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	require.Len(t, r.Ns, 1)
	assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype)
	r, err = streamExchange(c, query("example.org"))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
	s, ok := d.handler.seenFor("example.org")
	require.True(t, ok)
	assert.Equal(t, TLS, s.transport)
	assert.Equal(t, int64(1), d.handler.resumed.Load(), "the forwarded query went through resume")
	// Read once more so the TLS 1.3 session ticket is taken in.
	_, err = streamExchange(c, query("www.blocked.test"))
	require.NoError(t, err)
	c.Close()

	c2, err := tls.Dial("tcp", d.addr, cfg)
	require.NoError(t, err)
	defer c2.Close()
	assert.True(t, c2.ConnectionState().DidResume, "the second connection resumes the session")
	r, err = streamExchange(c2, query("example.net"))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)

	// TLS 1.2 is still served.
	cfg12 := clientTLS(d.ca, ALPNDoT)
	cfg12.MaxVersion = tls.VersionTLS12
	c3, err := tls.Dial("tcp", d.addr, cfg12)
	require.NoError(t, err)
	defer c3.Close()
	assert.Equal(t, uint16(tls.VersionTLS12), c3.ConnectionState().Version)
	r, err = streamExchange(c3, query("www.blocked.test"))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
}

// TestDoTRefusesOldTLSAndOtherALPN: TLS 1.1 and a client that wants
// another application protocol fail the handshake; a client offering no
// ALPN is served.
func TestDoTRefusesOldTLSAndOtherALPN(t *testing.T) {
	d := newDoTSetup(t, 2*time.Second)
	tests := []struct {
		name string
		cfg  func() *tls.Config
		ok   bool
	}{
		{"no ALPN", func() *tls.Config { return clientTLS(d.ca) }, true},
		{"ALPN h2 only", func() *tls.Config { return clientTLS(d.ca, "h2") }, false},
		{"TLS 1.1", func() *tls.Config {
			c := clientTLS(d.ca, ALPNDoT)
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
			return c
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", d.addr, tc.cfg())
			if !tc.ok {
				if err == nil {
					// TLS 1.3 clients learn of a server's refusal on read.
					_, err = streamExchange(c, query("example.org"))
					c.Close()
				}
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			r, err := streamExchange(c, query("example.org"))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		})
	}
}

// TestDoTStalledHandshake: a client that opens a connection and stalls
// the handshake is closed when the handshake timeout runs out, and other
// clients are served meanwhile.
func TestDoTStalledHandshake(t *testing.T) {
	const timeout = 500 * time.Millisecond
	d := newDoTSetup(t, timeout)
	tests := []struct {
		name string
		send []byte
	}{
		{"sends nothing", nil},
		// A TLS record header announcing a ClientHello that never comes.
		{"half a ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stalled, err := net.Dial("tcp", d.addr)
			require.NoError(t, err)
			defer stalled.Close()
			if tc.send != nil {
				_, err = stalled.Write(tc.send)
				require.NoError(t, err)
			}
			start := time.Now()

			// Another client is answered while the stalled one is open.
			c, err := tls.Dial("tcp", d.addr, clientTLS(d.ca, ALPNDoT))
			require.NoError(t, err)
			r, err := streamExchange(c, query("www.blocked.test"))
			c.Close()
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeNameError, r.Rcode)

			// The stalled connection is closed by the server.
			_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadAll(stalled)
			var ne net.Error
			assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed it before the client gave up")
			assert.Less(t, time.Since(start), timeout+2*time.Second)
			assert.GreaterOrEqual(t, time.Since(start), timeout-50*time.Millisecond)
		})
	}
}

// TestDoTKdig: kdig +tls against the TLS wrapper.
func TestDoTKdig(t *testing.T) {
	kdig := testnet.NeedProgram(t, "kdig", "knot-dnsutils")
	d := newDoTSetup(t, 2*time.Second)
	host, port, _ := net.SplitHostPort(d.addr)
	tests := []struct {
		name, qname, status, answer string
	}{
		{"blocked", "www.blocked.test", "NXDOMAIN", ""},
		{"forwarded", "example.org", "NOERROR", "192.0.2.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(kdig, "@"+host, "-p", port, "+tls-ca="+d.ca.file, "+tls-hostname="+testServerName,
				"+timeout=5", "+retry=0", tc.qname, "A").CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), "status: "+tc.status, "%s", out)
			assert.Contains(t, string(out), "TLS session (TLS1.3)", "%s", out)
			if tc.answer != "" {
				assert.Contains(t, string(out), tc.answer)
			} else {
				assert.Contains(t, string(out), "SOA")
			}
			assert.True(t, strings.Contains(string(out), "TCP") || strings.Contains(string(out), "TLS"), "%s", out)
		})
	}
}
