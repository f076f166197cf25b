package listen

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ALPN protocol IDs of the encrypted transports.
const (
	ALPNDoT   = "dot"      // DNS over TLS, RFC 7858 (IANA ALPN registry)
	ALPNDoQ   = "doq"      // DNS over QUIC, RFC 9250 §4.1
	ALPNHTTP2 = "h2"       // DNS over HTTPS on HTTP/2, RFC 8484
	ALPNHTTP1 = "http/1.1" // DNS over HTTPS on HTTP/1.1
)

// ServerTLSConfig is the server side of every encrypted listener: TLS 1.2
// at least (1.3 preferred, as crypto/tls negotiates; DoQ requires 1.3 and
// quic-go enforces it), the certificate current in store at each
// handshake, session resumption by tickets (RFC 7858 §3.4 and RFC 8446;
// crypto/tls rotates the ticket keys itself), and alpn offered in order.
// A client that offers ALPN without one of alpn fails the handshake; one
// that offers none is served.
func ServerTLSConfig(store *CertStore, alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: store.GetCertificate,
		NextProtos:     alpn,
	}
}

// TLSConn is a server TLS connection whose handshake must finish within a
// timeout: a client that opens a connection and stalls (sends nothing, or
// half a ClientHello) is closed when it runs out, so it holds a connection
// slot for that long at most. The handshake runs on the first Read or
// Write (or an explicit Handshake), on the goroutine serving the
// connection, never in an accept loop.
//
// For DNS over TLS (RFC 7858) the TCP server wraps each accepted
// connection with ServerTLS after admission and after any PROXY protocol
// header (a proxy sends that header in the clear, before the client's TLS
// bytes); NetConn gives the connection beneath.
type TLSConn struct {
	*tls.Conn
	timeout time.Duration

	once sync.Once
	err  error // the handshake's outcome, set once
}

// ServerTLS starts the server side of TLS on c with cfg (see
// ServerTLSConfig; its NextProtos should be ALPNDoT for DNS over TLS). The
// handshake must complete within handshakeTimeout (> 0) or c is closed.
func ServerTLS(c net.Conn, cfg *tls.Config, handshakeTimeout time.Duration) *TLSConn {
	return &TLSConn{Conn: tls.Server(&heardConn{Conn: c}, cfg), timeout: handshakeTimeout}
}

// handshakeFailed reports whether c's TLS handshake failed: it did not
// complete, though the client sent something (a ClientHello, or bytes
// that are not TLS). A connection closed, or left idle, before its first
// byte is no TLS client: a load balancer's TCP health check, a port scan.
func handshakeFailed(c *tls.Conn) bool {
	h, ok := c.NetConn().(interface{ heard() bool })
	return ok && h.heard() && !c.ConnectionState().HandshakeComplete
}

// heardConn notes whether its peer has sent anything (handshakeFailed).
type heardConn struct {
	net.Conn
	got atomic.Bool
}

func (c *heardConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.got.Load() {
		c.got.Store(true)
	}
	return n, err
}

func (c *heardConn) heard() bool { return c.got.Load() }

// NetConn is the connection beneath (rawConn).
func (c *heardConn) NetConn() net.Conn { return c.Conn }

// Handshake runs the TLS handshake once, within the timeout; later calls
// return the first outcome. On failure the connection is closed.
func (c *TLSConn) Handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		// HandshakeContext closes the connection when ctx ends first.
		if c.err = c.Conn.HandshakeContext(ctx); c.err != nil {
			_ = c.Conn.NetConn().Close()
		}
	})
	return c.err
}

// Read reads decrypted bytes, completing the handshake first.
func (c *TLSConn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// Write writes b encrypted, completing the handshake first.
func (c *TLSConn) Write(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
