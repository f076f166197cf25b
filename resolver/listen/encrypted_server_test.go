package listen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// proxyRules allow loopback but 127.0.0.9, and trust 127.0.0.3 as a proxy.
type proxyRules struct{}

func (proxyRules) Allowed(peer netip.Addr) bool {
	return peer.IsLoopback() && peer != netip.MustParseAddr("127.0.0.9")
}
func (proxyRules) Trusted(peer netip.Addr) bool { return peer == netip.MustParseAddr("127.0.0.3") }
func (proxyRules) Limits() Limits {
	return Limits{TCPConnections: 16, TCPConnectionsPerClient: 8, TCPPipeline: 8, TCPReadTimeout: 2 * time.Second,
		TCPIdleTimeout: 5 * time.Second, UDPReceiveBuffer: 1 << 16, UDPSendBuffer: 1 << 16}
}

// encryptedSetup is a Server listening on UDP/TCP and every encrypted
// transport, with the addresses it logged.
type encryptedSetup struct {
	ca      *testCA
	up      *testUpstream
	handler *testHandler
	counts  *counts
	srv     *Server
	addrs   map[string]string // transport (and "http" for plain DoH) -> address

	mu      sync.Mutex
	refused map[string]int // transport/reason
	stopped []string       // transport address: error, as Config.Stopped tells
	resumed []string       // transport address, as Config.Resumed tells
}

func newEncryptedSetup(t *testing.T) *encryptedSetup {
	t.Helper()
	e := &encryptedSetup{ca: newTestCA(t), counts: &counts{}, addrs: map[string]string{}, refused: map[string]int{}}
	files, _ := writePair(t, e.ca)
	store, _ := startStore(t, files, time.Hour)
	e.up = newTestUpstream(t)
	e.handler = newTestHandler(e.up)
	core, logs := observer.New(zapcore.InfoLevel)
	e.srv = New(Config{
		Handler: e.handler,
		Count:   e.counts.count,
		Rules:   func() Rules { return proxyRules{} },
		Refused: func(transport, reason string) {
			e.mu.Lock()
			e.refused[transport+"/"+reason]++
			e.mu.Unlock()
		},
		Stopped: func(transport, addr string, err error) {
			e.mu.Lock()
			e.stopped = append(e.stopped, fmt.Sprintf("%s %s: %v", transport, addr, err))
			e.mu.Unlock()
		},
		Resumed: func(transport, addr string) {
			e.mu.Lock()
			e.resumed = append(e.resumed, transport+" "+addr)
			e.mu.Unlock()
		},
		Log: zap.New(core),
	})
	require.NoError(t, e.srv.Start([]string{"127.0.0.1:0"}))
	require.NoError(t, e.srv.StartEncrypted(Encrypted{
		TLS: []string{"127.0.0.1:0"}, HTTPS: []string{"127.0.0.1:0", "http://127.0.0.1:0"}, QUIC: []string{"127.0.0.1:0"}, Cert: store,
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.srv.Shutdown(ctx)
	})
	for _, l := range logs.FilterMessage("listening").All() {
		fields := l.ContextMap()
		addr, _ := fields["address"].(string)
		transports, _ := fields["transports"].([]any)
		tr, _ := transports[0].(string)
		if url, _ := fields["url"].(string); strings.HasPrefix(url, "http://") {
			tr = "http"
		}
		e.addrs[tr] = addr
	}
	for _, tr := range []string{UDP, TLS, HTTPS, "http", QUIC} {
		require.NotEmpty(t, e.addrs[tr], "no listening line for %s: %v", tr, e.addrs)
	}
	return e
}

// dialTLS opens a DNS over TLS connection from the local address from,
// first sending header in the clear when it is not nil.
func (e *encryptedSetup) dialTLS(t *testing.T, from string, header *proxyproto.Header) (*tls.Conn, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.Dial("tcp", e.addrs[TLS])
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { raw.Close() })
	if header != nil {
		if _, err := header.WriteTo(raw); err != nil {
			return nil, err
		}
	}
	c := tls.Client(raw, clientTLS(e.ca, ALPNDoT))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, c.Handshake()
}

// TestServerEncryptedListeners: StartEncrypted serves DNS over TLS,
// HTTPS (TLS and plain http://) and QUIC with the Server's Handler, each
// query told its transport; DoT is the TCP server under TLS, so it
// pipelines (an inline answer overtakes one waiting on its upstream on the
// same connection), pads the answer to a padded query, admits by the
// rules at accept, and believes a PROXY v2 header (sent in the clear
// before the handshake) from a trusted proxy only.
func TestServerEncryptedListeners(t *testing.T) {
	e := newEncryptedSetup(t)

	t.Run("DoT pipelines", func(t *testing.T) {
		c, err := e.dialTLS(t, "127.0.0.1", nil)
		require.NoError(t, err)
		assert.Equal(t, ALPNDoT, c.ConnectionState().NegotiatedProtocol)
		slow, blocked := query("a.slow.test"), query("x.blocked.test")
		slow.Id, blocked.Id = 1, 2
		for _, m := range []*dns.Msg{slow, blocked} {
			b := mustPack(t, m)
			_, err := c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
			require.NoError(t, err)
		}
		dc := &dns.Conn{Conn: c}
		r, err := dc.ReadMsg()
		require.NoError(t, err)
		assert.Equal(t, uint16(2), r.Id, "the inline answer first")
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		require.Eventually(t, func() bool { return e.up.waiting.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
		e.up.releaseSlow()
		r, err = dc.ReadMsg()
		require.NoError(t, err)
		assert.Equal(t, uint16(1), r.Id)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1)
		s, ok := e.handler.seenFor("a.slow.test")
		require.True(t, ok)
		assert.Equal(t, TLS, s.transport)
		assert.Equal(t, "127.0.0.1", s.remote.(*net.TCPAddr).IP.String())
	})

	t.Run("DoT pads answers to padded queries", func(t *testing.T) {
		c, err := e.dialTLS(t, "127.0.0.1", nil)
		require.NoError(t, err)
		q := query("p.blocked.test")
		q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 20)})
		b := mustPack(t, q)
		_, err = c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
		require.NoError(t, err)
		var n [2]byte
		_, err = io.ReadFull(c, n[:])
		require.NoError(t, err)
		raw := make([]byte, int(n[0])<<8|int(n[1]))
		_, err = io.ReadFull(c, raw)
		require.NoError(t, err)
		assert.Zero(t, len(raw)%responsePaddingBlock, "answer of %d octets", len(raw))
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(raw))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		assert.True(t, hasPadding(r))
		r, err = streamExchange(c, query("u.blocked.test"))
		require.NoError(t, err)
		assert.False(t, hasPadding(r), "no padding for an unpadded query")
	})

	t.Run("DoT PROXY header from a trusted proxy", func(t *testing.T) {
		h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 853}}
		c, err := e.dialTLS(t, "127.0.0.3", h)
		require.NoError(t, err)
		r, err := streamExchange(c, query("proxied.blocked.test"))
		require.NoError(t, err)
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		s, ok := e.handler.seenFor("proxied.blocked.test")
		require.True(t, ok)
		pa, isProxied := s.remote.(*ProxiedAddr)
		require.True(t, isProxied, "remote %T %v", s.remote, s.remote)
		assert.Equal(t, "198.51.100.7", pa.IP.String())
		assert.Equal(t, "127.0.0.3", pa.Proxy.Addr().String())
		assert.Equal(t, TLS, s.transport)

		// The same header from a peer that is not a trusted proxy is
		// bytes of a TLS handshake: it fails, nothing is answered.
		_, err = e.dialTLS(t, "127.0.0.1", h)
		assert.Error(t, err)
	})

	t.Run("DoT admits by the rules", func(t *testing.T) {
		_, err := e.dialTLS(t, "127.0.0.9", nil)
		assert.Error(t, err)
		e.mu.Lock()
		defer e.mu.Unlock()
		assert.Equal(t, 1, e.refused[TLS+"/"+RefusedNotAllowed])
	})

	t.Run("DoT counts what it rejects itself", func(t *testing.T) {
		c, err := e.dialTLS(t, "127.0.0.1", nil)
		require.NoError(t, err)
		q := query("notimp.test")
		q.Opcode = dns.OpcodeStatus
		r, err := streamExchange(c, q)
		require.NoError(t, err)
		assert.Equal(t, dns.RcodeNotImplemented, r.Rcode)
		assert.Equal(t, 1, e.counts.get(TLS, ResultNotimp))
	})

	t.Run("DoH over TLS and plain HTTP", func(t *testing.T) {
		d := &dohSetup{ca: e.ca}
		for _, tc := range []struct{ name, url string }{
			{"https", "https://" + e.addrs[HTTPS] + DoHPath},
			{"http", "http://" + e.addrs["http"] + DoHPath},
		} {
			name := tc.name + ".blocked.test"
			r, resp := dohGet(t, d.client(false), tc.url, query(name))
			assert.Equal(t, dns.RcodeNameError, r.Rcode)
			if tc.name == "https" {
				assert.Equal(t, 2, resp.ProtoMajor, "HTTP/2 over TLS")
			}
			s, ok := e.handler.seenFor(name)
			require.True(t, ok)
			assert.Equal(t, HTTPS, s.transport)
		}
		assert.Zero(t, e.counts.get(HTTPS, ResultBadRequest))
	})

	t.Run("DoQ", func(t *testing.T) {
		d := &doqSetup{ca: e.ca, addr: e.addrs[QUIC]}
		c, err := d.dial(t)
		require.NoError(t, err)
		r, err := doqExchange(c, query("q.blocked.test"))
		require.NoError(t, err)
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		s, ok := e.handler.seenFor("q.blocked.test")
		require.True(t, ok)
		assert.Equal(t, QUIC, s.transport)
		assert.IsType(t, &net.UDPAddr{}, s.remote)
	})
}

// TestServerEndpointsAreItsTLSListeners: Endpoints, which Discovery of
// Designated Resolvers hands to clients, are the listeners serving TLS,
// DNS over TLS, HTTPS and QUIC in that order, at the addresses they are
// bound to; the http:// DNS over HTTPS listener, whose TLS a proxy in front
// terminates, is not among them: a client sent there would speak TLS to a
// plain HTTP port.
func TestServerEndpointsAreItsTLSListeners(t *testing.T) {
	e := newEncryptedSetup(t)
	var want []Endpoint
	for _, tr := range []string{TLS, HTTPS, QUIC} {
		want = append(want, Endpoint{Transport: tr, Addr: netip.MustParseAddrPort(e.addrs[tr])})
	}
	assert.Equal(t, want, e.srv.Endpoints())
}

// TestServerDoTFramesAcrossRecords: DNS over TLS queries whose 2-octet
// length and message do not come in one TLS record are read whole: a
// length alone in its record and its message cut in two, then three
// pipelined queries in two records cut inside the third one's length
// (RFC 7766 §8 asks senders to write the length and message together,
// but a stream keeps no message boundaries, and some clients write them
// apart). crypto/tls makes each Write a record of its own. Each query is
// answered, by its ID.
func TestServerDoTFramesAcrossRecords(t *testing.T) {
	e := newEncryptedSetup(t)
	c, err := e.dialTLS(t, "127.0.0.1", nil)
	require.NoError(t, err)
	dc := &dns.Conn{Conn: c}
	frame := func(name string, id uint16) []byte {
		m := query(name)
		m.Id = id
		b := mustPack(t, m)
		return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
	}

	one := frame("one.example.org", 1)
	for _, record := range [][]byte{one[:2], one[2:7], one[7:]} {
		_, err := c.Write(record)
		require.NoError(t, err)
	}
	r, err := dc.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(1), r.Id)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)

	var three []byte
	for id, name := range []string{"two.example.org", "three.example.org", "four.example.org"} {
		three = append(three, frame(name, uint16(id+2))...)
	}
	cut := len(three) - len(frame("four.example.org", 4)) + 1 // inside the last length
	for _, record := range [][]byte{three[:cut], three[cut:]} {
		_, err := c.Write(record)
		require.NoError(t, err)
	}
	seen := map[uint16]bool{}
	for range 3 {
		r, err := dc.ReadMsg()
		require.NoError(t, err)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		seen[r.Id] = true
	}
	assert.Equal(t, map[uint16]bool{2: true, 3: true, 4: true}, seen)
}

// TestServerShutdownEncrypted: Shutdown stops every encrypted listener
// from taking new connections at once, and answers the queries they had
// taken (one waiting on its upstream on each of DoT, DoH and DoQ) before
// it returns.
func TestServerShutdownEncrypted(t *testing.T) {
	e := newEncryptedSetup(t)
	dot, err := e.dialTLS(t, "127.0.0.1", nil)
	require.NoError(t, err)
	d := &doqSetup{ca: e.ca, addr: e.addrs[QUIC]}
	doq, err := d.dial(t)
	require.NoError(t, err)

	type result struct {
		transport string
		r         *dns.Msg
		err       error
	}
	results := make(chan result, 3)
	go func() {
		r, err := streamExchange(dot, query("dot.slow.test"))
		results <- result{TLS, r, err}
	}()
	go func() {
		r, err := doqExchange(doq, query("doq.slow.test"))
		results <- result{QUIC, r, err}
	}()
	go func() {
		c := (&dohSetup{ca: e.ca}).client(false)
		resp, err := c.Post("https://"+e.addrs[HTTPS]+DoHPath, DoHContentType, strings.NewReader(string(mustPack(t, query("doh.slow.test")))))
		if err != nil {
			results <- result{HTTPS, nil, err}
			return
		}
		defer resp.Body.Close()
		m := new(dns.Msg)
		buf := make([]byte, 65535)
		n, _ := resp.Body.Read(buf)
		results <- result{HTTPS, m, m.Unpack(buf[:n])}
	}()
	require.Eventually(t, func() bool { return e.up.waiting.Load() == 3 }, 10*time.Second, 5*time.Millisecond)

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- e.srv.Shutdown(ctx)
	}()
	for _, addr := range []string{e.addrs[TLS], e.addrs[HTTPS]} {
		require.Eventually(t, func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err != nil
		}, 5*time.Second, 5*time.Millisecond, "%s stops taking connections", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = quic.DialAddr(ctx, e.addrs[QUIC], clientTLS(e.ca, ALPNDoQ), &quic.Config{})
	assert.Error(t, err, "no new DoQ connection")
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned with queries in flight: %v", err)
	default:
	}

	e.up.releaseSlow()
	for range 3 {
		res := <-results
		require.NoError(t, res.err, res.transport)
		assert.Equal(t, dns.RcodeSuccess, res.r.Rcode, res.transport)
		assert.Len(t, res.r.Answer, 1, res.transport)
	}
	require.NoError(t, <-stopped)
}

// vanishedClient is the socket of a QUIC client that sent its first
// Initial and was gone: every later datagram is dropped and nothing is
// read (a client that lost its network, or a spoofed source address).
// It is not a *net.UDPConn, whose batched reads and writes quic-go would
// use instead of ReadFrom and WriteTo.
type vanishedClient struct {
	net.PacketConn
	mu   sync.Mutex
	sent bool
	gone chan struct{}
}

func (v *vanishedClient) WriteTo(b []byte, a net.Addr) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.sent {
		return len(b), nil
	}
	v.sent = true
	return v.PacketConn.WriteTo(b, a)
}

func (v *vanishedClient) ReadFrom([]byte) (int, net.Addr, error) {
	<-v.gone
	return 0, nil, net.ErrClosed
}

func (v *vanishedClient) Close() error {
	close(v.gone)
	return v.PacketConn.Close()
}

func (v *vanishedClient) SetReadBuffer(n int) error {
	return v.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (v *vanishedClient) SetWriteBuffer(n int) error {
	return v.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

// oneDoQRules allow loopback, one stream connection at a time, and
// tcp_read_timeout 500 ms.
type oneDoQRules struct{}

func (oneDoQRules) Allowed(peer netip.Addr) bool { return peer.IsLoopback() }
func (oneDoQRules) Trusted(netip.Addr) bool      { return false }
func (oneDoQRules) Limits() Limits {
	return Limits{TCPConnections: 1, TCPConnectionsPerClient: 8, TCPPipeline: 8, TCPReadTimeout: 500 * time.Millisecond,
		TCPIdleTimeout: 5 * time.Second, UDPReceiveBuffer: 1 << 16, UDPSendBuffer: 1 << 16}
}

// TestServerDoQStalledHandshake: a QUIC handshake whose client vanished
// after its first Initial holds a DoQ connection place for
// limits.tcp_read_timeout, as a stalled TLS handshake does on DoT and DoH
// (README: "a stalled TLS handshake is closed after
// limits.tcp_read_timeout"), not for DoQ's own default of 5 s.
func TestServerDoQStalledHandshake(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	srv := New(Config{Handler: newTestHandler(newTestUpstream(t)), Rules: func() Rules { return oneDoQRules{} }})
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := probe.LocalAddr().(*net.UDPAddr)
	require.NoError(t, probe.Close())
	require.NoError(t, srv.StartEncrypted(Encrypted{QUIC: []string{addr.String()}, Cert: store}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := quic.DialAddr(ctx, addr.String(), clientTLS(ca, ALPNDoQ), &quic.Config{})
		if err == nil {
			_ = c.CloseWithError(0, "")
		}
		return err
	}

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	vanished := &vanishedClient{PacketConn: udp, gone: make(chan struct{})}
	tr := &quic.Transport{Conn: vanished}
	t.Cleanup(func() {
		_ = vanished.Close() // the Transport does not close a socket it was given
		_ = tr.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = tr.Dial(ctx, addr, clientTLS(ca, ALPNDoQ), &quic.Config{})
	cancel()
	require.Error(t, err, "the vanished client never completes its handshake")
	stalled := time.Now()

	var te *quic.TransportError
	require.ErrorAs(t, dial(), &te, "the stalled handshake holds the one place")
	assert.Equal(t, quic.ConnectionRefused, te.ErrorCode)
	require.Eventually(t, func() bool { return dial() == nil }, 10*time.Second, 50*time.Millisecond)
	assert.Less(t, time.Since(stalled), 2500*time.Millisecond,
		"the place came back after tcp_read_timeout (500 ms), not DoQ's default handshake timeout (5 s)")
}

// TestEncryptedHandshakeFailures: a connection whose TLS or QUIC
// handshake fails (a client that shares no ALPN protocol with the
// listener, one that does not trust its certificate, plain DNS to the DoT
// port) is logged at debug level with the client's address and why (DoH's
// by net/http) and counted by transport: an operator whose devices cannot
// connect sees that they cannot, and why. One closed before its first
// byte (a load balancer's TCP check) is not counted, nor one the stop
// ended.
func TestEncryptedHandshakeFailures(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	core, logs := observer.New(zapcore.DebugLevel)
	var mu sync.Mutex
	failed := map[string]int{}
	srv := New(Config{Handler: newTestHandler(newTestUpstream(t)), Rules: func() Rules { return proxyRules{} }, Log: zap.New(core),
		HandshakeFailed: func(transport string) {
			mu.Lock()
			defer mu.Unlock()
			failed[transport]++
		}})
	require.NoError(t, srv.StartEncrypted(Encrypted{TLS: []string{"127.0.0.1:0"}, HTTPS: []string{"127.0.0.1:0"},
		QUIC: []string{"127.0.0.1:0"}, Cert: store}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	addrs := map[string]string{}
	for _, ep := range srv.Endpoints() {
		addrs[ep.Transport] = ep.Addr.String()
	}
	counted := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(failed)
	}

	// Connected and closed with nothing sent: no TLS client.
	for _, tr := range []string{TLS, HTTPS} {
		c, err := net.Dial("tcp", addrs[tr])
		require.NoError(t, err)
		require.NoError(t, c.Close())
	}
	require.Eventually(t, func() bool { return logs.FilterMessage("TLS handshake failed").Len() == 1 }, 5*time.Second, 10*time.Millisecond,
		"the closed DoT connection is logged")

	untrusting := newTestCA(t) // another CA: the listener's certificate is not trusted
	for _, tc := range []struct {
		transport string
		cfg       *tls.Config
	}{
		{TLS, clientTLS(ca, "h2")},
		{TLS, clientTLS(untrusting, ALPNDoT)},
		{HTTPS, clientTLS(ca, ALPNDoT)},
		{HTTPS, clientTLS(untrusting, ALPNHTTP2)},
	} {
		c, err := tls.Dial("tcp", addrs[tc.transport], tc.cfg)
		if err == nil {
			// TLS 1.3 clients learn of a server's refusal on read.
			_, err = streamExchange(c, query("example.org"))
			c.Close()
		}
		require.Error(t, err, tc.transport)
	}
	// Plain DNS to the DoT port.
	c, err := net.Dial("tcp", addrs[TLS])
	require.NoError(t, err)
	_, _ = streamExchange(c, query("example.org"))
	c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, cfg := range []*tls.Config{clientTLS(ca, "doq-i02"), clientTLS(untrusting, ALPNDoQ)} {
		c, err := quic.DialAddr(ctx, addrs[QUIC], cfg, &quic.Config{})
		if err == nil {
			_ = c.CloseWithError(0, "")
		}
		require.Error(t, err)
	}
	want := map[string]int{TLS: 3, HTTPS: 2, QUIC: 2}
	assert.Eventually(t, func() bool { return maps.Equal(counted(), want) }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, want, counted(), "each failed handshake counted once, the silent connections not")
	for _, msg := range []string{"TLS handshake failed", "QUIC handshake failed"} {
		n := want[QUIC]
		if msg == "TLS handshake failed" {
			n = want[TLS] + 1 // and the silent connection
		}
		require.Eventually(t, func() bool { return logs.FilterMessage(msg).Len() == n }, 5*time.Second, 10*time.Millisecond,
			"%s: logged once for each failed connection", msg)
		for _, l := range logs.FilterMessage(msg).All() {
			assert.Equal(t, zapcore.DebugLevel, l.Level)
			assert.Contains(t, l.ContextMap()["client"], "127.0.0.1:", msg)
			assert.NotEmpty(t, l.ContextMap()["error"], msg)
			t.Logf("%s: %v", msg, l.ContextMap())
		}
	}
	// DoH's are net/http's own log lines.
	require.Eventually(t, func() bool { return logs.FilterMessageSnippet("TLS handshake error").Len() >= want[HTTPS] }, 5*time.Second,
		10*time.Millisecond, "DoH's failed handshakes logged")

	// A stop ends handshakes under way: not counted. The listener has
	// read the client's ClientHello once its ServerHello arrives.
	c, err = net.Dial("tcp", addrs[TLS])
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(clientHello(t, clientTLS(ca, ALPNDoT)))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.NoError(t, err, "the ServerHello")
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	require.NoError(t, srv.Shutdown(sctx))
	assert.Equal(t, want, counted())
}

// clientHello is the first flight a TLS client with cfg sends: its
// ClientHello record.
func clientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	client, capture := net.Pipe()
	defer capture.Close()
	go func() {
		defer client.Close()
		_ = tls.Client(client, cfg).Handshake() // ends when capture closes
	}()
	b := make([]byte, 1<<16)
	n, err := capture.Read(b) // crypto/tls writes the flight in one Write
	require.NoError(t, err)
	return b[:n]
}

// TestServerReopensAStoppedQUICListener: a DNS over QUIC listener whose
// transport failed (its socket closed under it, as quic-go ends a listener
// on a read error of its socket) stayed stopped, its clients unanswered,
// until dnsfence was restarted. It is now opened again at its address on
// a new socket, a second later, told to Config.Resumed, and answers. A
// connection from before, which the new socket does not know, is ended at
// its next packet by a stateless reset (RFC 9000 §10.3), not left to its
// client's idle timeout.
func TestServerReopensAStoppedQUICListener(t *testing.T) {
	e := newEncryptedSetup(t)
	addr := e.addrs[QUIC]
	require.NoError(t, askDoQ(e.ca, addr))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	old, err := quic.DialAddr(ctx, addr, clientTLS(e.ca, ALPNDoQ), &quic.Config{MaxIdleTimeout: time.Minute})
	require.NoError(t, err)
	defer old.CloseWithError(0, "")
	_, err = doqExchange(old, query("fast."))
	require.NoError(t, err)
	require.NoError(t, e.srv.doq[0].socket().Close())
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.stopped) == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.resumed) == 1
	}, 10*time.Second, 5*time.Millisecond, "opened again")
	e.mu.Lock()
	assert.Equal(t, []string{QUIC + " " + addr}, e.resumed)
	e.mu.Unlock()
	require.NoError(t, askDoQ(e.ca, addr), "answered at the same address")

	go func() { _, _ = doqExchange(old, query("fast.")) }()
	select {
	case <-old.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection from before the reopen is still open")
	}
	var reset *quic.StatelessResetError
	assert.ErrorAs(t, context.Cause(old.Context()), &reset)
}

// closeTold is a socket that tells closed when Close is called on it.
type closeTold struct {
	net.PacketConn
	once   sync.Once
	closed chan struct{}
}

func (c *closeTold) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.PacketConn.Close()
}

// TestServerReopenDuringShutdownLeavesNoSocket: a DNS over QUIC listener
// being opened again (serveDoQ) when Shutdown began put its new socket in
// after Shutdown had closed the one it found, and nothing closed the new
// one: Shutdown returned with the address still bound (an in-process
// restart, or the next test, could not listen there), and Resumed was told
// of a listener that no longer serves. Here Shutdown begins while the
// stopped listener is being told Stopped, and has closed the old socket
// before the reopen's wait: the reopen either sees the stop, or opens a
// socket that must be closed. The wait's select picks either when both are
// ready, so the race is run several times.
func TestServerReopenDuringShutdownLeavesNoSocket(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	h := newTestHandler(newTestUpstream(t))
	for i := range 12 {
		var srv *Server
		var resumed atomic.Int64
		shutdown := make(chan error, 1)
		told := &closeTold{closed: make(chan struct{})}
		srv = New(Config{
			Handler: h,
			Rules:   func() Rules { return proxyRules{} },
			Stopped: func(string, string, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				go func() { defer cancel(); shutdown <- srv.Shutdown(ctx) }()
				// Shutdown has closed the socket it found (told) once
				// the listener's stop was begun: the reopen comes after.
				select {
				case <-told.closed:
				case <-time.After(10 * time.Second):
					t.Error("Shutdown did not close the listener's socket")
				}
			},
			Resumed: func(string, string) { resumed.Add(1) },
		})
		srv.reopenFirst = time.Nanosecond
		require.NoError(t, srv.StartEncrypted(Encrypted{QUIC: []string{"127.0.0.1:0"}, Cert: store}))
		l := srv.doq[0]
		addr := l.socket().LocalAddr().String()
		l.mu.Lock()
		served := l.pc
		told.PacketConn = served
		l.pc = told
		l.mu.Unlock()
		require.NoError(t, served.Close()) // quic-go ends the listener: Stopped
		select {
		case err := <-shutdown:
			require.NoError(t, err, "run %d", i)
		case <-time.After(15 * time.Second):
			t.Fatalf("run %d: Shutdown did not return", i)
		}
		require.False(t, testnet.UDPBoundHere(t, addr), "run %d: the address is still bound after Shutdown", i)
		assert.Zero(t, resumed.Load(), "run %d: Resumed told after Shutdown", i)
	}
}

// TestServerStoppedListenerTold: a DNS over QUIC listener whose transport
// fails (here its socket closed under it, as quic-go ends a listener on a
// read error of its socket) is told to Config.Stopped, with its address
// and the error, so that /readyz can say so; it was logged alone, and the
// instance said ready while its DoQ clients got no answer. A Shutdown
// tells nothing.
func TestServerStoppedListenerTold(t *testing.T) {
	e := newEncryptedSetup(t)
	require.Len(t, e.srv.doq, 1)
	require.NoError(t, e.srv.doq[0].pc.Close())
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.stopped) == 1
	}, 10*time.Second, 5*time.Millisecond)
	e.mu.Lock()
	assert.Contains(t, e.stopped[0], QUIC+" "+e.addrs[QUIC]+": ")
	e.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.srv.Shutdown(ctx))
	e.mu.Lock()
	defer e.mu.Unlock()
	assert.Len(t, e.stopped, 1, "the other listeners' Shutdown is not a stop: %v", e.stopped)
}

// failingReads is a listener's UDP socket whose reads fail with ENOBUFS,
// the socket left open, once fail is set (and a datagram wakes the read
// waiting): a read error quic-go does not take as temporary, as the
// kernel gives under memory pressure. It is not a *net.UDPConn, so that
// quic-go reads it with ReadFrom.
type failingReads struct {
	net.PacketConn
	fail atomic.Bool
}

func (f *failingReads) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := f.PacketConn.ReadFrom(b)
	if f.fail.Load() {
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", syscall.ENOBUFS)}
	}
	return n, a, err
}

func (f *failingReads) SetReadBuffer(n int) error {
	return f.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (f *failingReads) SetWriteBuffer(n int) error {
	return f.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

// askDoQ asks "fast." over DNS over QUIC at addr, trusting ca: nil when it
// is answered NOERROR.
func askDoQ(ca *testCA, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, addr, clientTLS(ca, ALPNDoQ), &quic.Config{})
	if err != nil {
		return err
	}
	defer c.CloseWithError(0, "")
	r, err := doqExchange(c, query("fast."))
	if err == nil && r.Rcode != dns.RcodeSuccess {
		err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	return err
}

// TestServerReopensAfterAReadFailure: a DNS over QUIC listener that quic-go
// ended on a read error of its socket, the socket still open (ENOBUFS,
// ENOMEM), is opened again at its address: its old socket is closed first,
// which alone frees the port. Left open, every reopen failed on the port
// it held, and the listener stayed stopped.
func TestServerReopensAfterAReadFailure(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	var stopped, resumed atomic.Int32
	h := newTestHandler(newTestUpstream(t))
	s := New(Config{Handler: h, Rules: func() Rules { return proxyRules{} }, Log: zaptest.NewLogger(t),
		Stopped: func(string, string, error) { stopped.Add(1) }, Resumed: func(string, string) { resumed.Add(1) }})
	s.reopenFirst = time.Nanosecond
	pc, err := net.ListenPacket("udp", "127.0.186.1:0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	sock := &failingReads{PacketConn: pc}
	l := &doqListener{srv: NewDoQServer(DoQOptions{Handler: h, TLS: ServerTLSConfig(store, ALPNDoQ)}), pc: sock}
	s.doq = append(s.doq, l)
	s.wg.Go(func() { s.serveDoQ(l) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	require.NoError(t, askDoQ(ca, addr))

	sock.fail.Store(true)
	wake, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer wake.Close()
	require.Eventually(t, func() bool {
		_, _ = wake.Write([]byte{0}) // a datagram to end the read waiting
		return stopped.Load() == 1
	}, 10*time.Second, 20*time.Millisecond, "the read failure ended the listener")
	require.Eventually(t, func() bool { return resumed.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "opened again")
	require.NoError(t, askDoQ(ca, addr), "answered at the same address")
}

// TestServerReopenBacksOffWhileItsPortIsTaken: a stopped DNS over QUIC
// listener, logged at error level as being opened again, whose port
// another socket took is opened again after a wait that doubles from the
// first at each failure, each failure logged with the wait before the
// next, and is told resumed once the port is free.
func TestServerReopenBacksOffWhileItsPortIsTaken(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	var resumed atomic.Int32
	core, logs := observer.New(zapcore.InfoLevel)
	s := New(Config{Handler: newTestHandler(newTestUpstream(t)), Rules: func() Rules { return proxyRules{} }, Log: zap.New(core),
		Resumed: func(string, string) { resumed.Add(1) }})
	const first = 400 * time.Millisecond // time for the port to be taken
	s.reopenFirst = first
	require.NoError(t, s.StartEncrypted(Encrypted{QUIC: []string{"127.0.186.1:0"}, Cert: store}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	addr := s.doq[0].socket().LocalAddr().String()
	require.NoError(t, s.doq[0].socket().Close())
	taker, err := net.ListenPacket("udp", addr)
	require.NoError(t, err)
	failed := func() []observer.LoggedEntry {
		return logs.FilterMessage("listener stopped: opening it again failed").All()
	}
	require.Eventually(t, func() bool { return len(failed()) >= 2 }, 10*time.Second, 5*time.Millisecond,
		"reopening at the taken port failed twice")
	require.NoError(t, taker.Close())
	require.Eventually(t, func() bool { return resumed.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "opened again")
	var retries []time.Duration
	for _, e := range failed()[:2] {
		d, _ := e.ContextMap()["retry_in"].(time.Duration)
		retries = append(retries, d)
	}
	assert.Equal(t, []time.Duration{2 * first, 4 * first}, retries, "the wait doubles from the first")
	// The stop is logged as one that is being mended, not one that needs
	// a restart.
	stops := logs.FilterMessage("listener stopped: opening it again").All()
	require.Len(t, stops, 1)
	assert.Equal(t, zapcore.ErrorLevel, stops[0].Level)
	assert.Equal(t, QUIC, stops[0].ContextMap()["transport"])
	assert.Equal(t, addr, stops[0].ContextMap()["address"])
	assert.Len(t, logs.FilterMessage("listener opened again").All(), 1, "the reopen logged")
	assert.NoError(t, askDoQ(ca, addr), "answered at the same address")
}

// serverRules allow loopback but 127.0.186.9, trust 127.0.186.3 as a
// proxy, and set limits.
type serverRules struct{ limits Limits }

func (serverRules) Allowed(peer netip.Addr) bool {
	return peer.IsLoopback() && peer != netip.MustParseAddr("127.0.186.9")
}
func (serverRules) Trusted(peer netip.Addr) bool { return peer == netip.MustParseAddr("127.0.186.3") }
func (r serverRules) Limits() Limits             { return r.limits }

// ruledServer is a Server serving one encrypted listener alone under
// serverRules.
type ruledServer struct {
	ca      *testCA
	handler *testHandler
	addr    string
	refused atomic.Int32 // connections Config.Refused was told of
}

// startRuled starts a Server with one listener of transport (HTTPS or
// QUIC) on 127.0.186.1 under serverRules of limits, shut down when the
// test ends.
func startRuled(t *testing.T, transport string, limits Limits) *ruledServer {
	t.Helper()
	d := &ruledServer{ca: newTestCA(t)}
	files, _ := writePair(t, d.ca)
	store, _ := startStore(t, files, time.Hour)
	d.handler = newTestHandler(newTestUpstream(t))
	s := New(Config{Handler: d.handler, Rules: func() Rules { return serverRules{limits} }, Log: zaptest.NewLogger(t),
		Refused: func(string, string) { d.refused.Add(1) }})
	enc := Encrypted{Cert: store}
	switch transport {
	case HTTPS:
		enc.HTTPS = []string{"127.0.186.1:0"}
	case QUIC:
		enc.QUIC = []string{"127.0.186.1:0"}
	default:
		t.Fatalf("startRuled: transport %q", transport)
	}
	require.NoError(t, s.StartEncrypted(enc))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	d.addr = s.Endpoints()[0].Addr.String()
	return d
}

// client is an HTTP/2 client of d connecting from the loopback address from.
func (d *ruledServer) client(from string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: clientTLS(d.ca), ForceAttemptHTTP2: true}}
}

// h2Conn opens a TLS connection to d speaking HTTP/2 from 127.0.186.2,
// its client preface and SETTINGS sent.
func (d *ruledServer) h2Conn(t *testing.T) (*tls.Conn, *http2.Framer) {
	t.Helper()
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.186.2")}}
	conn, err := tls.DialWithDialer(dialer, "tcp", d.addr, clientTLS(d.ca, "h2"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	require.NoError(t, fr.WriteSettings())
	return conn, fr
}

// endedWithin reports whether the server ends conn within d, what it
// sends before read and dropped.
func endedWithin(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// serverLimits are Limits as a Server takes them, generous but for what
// a test sets.
func serverLimits(edit func(*Limits)) Limits {
	l := Limits{TCPConnections: 16, TCPConnectionsPerClient: 8, TCPPipeline: 8, TCPReadTimeout: 3 * time.Second,
		TCPIdleTimeout: 5 * time.Second, UDPReceiveBuffer: 1 << 16, UDPSendBuffer: 1 << 16}
	if edit != nil {
		edit(&l)
	}
	return l
}

// TestServerDoHTakesTheRules: a Server's DNS over HTTPS listener takes
// the rules as its other listeners do: Forwarded and X-Forwarded-For are
// believed from a trusted proxy only (from any client, a device could
// name itself another to take its policy), a client allowed_clients
// leaves out is refused at accept, and tcp_connections (the listener's
// connection cap), tcp_pipeline (HTTP/2's concurrent streams),
// tcp_read_timeout (a connection's first request, twice it) and
// tcp_idle_timeout bound it, not DoHServer's defaults.
func TestServerDoHTakesTheRules(t *testing.T) {
	t.Run("forwarded from a trusted proxy only", func(t *testing.T) {
		d := startRuled(t, HTTPS, serverLimits(nil))
		for _, tc := range []struct{ from, name, remote string }{
			{from: "127.0.186.3", name: "proxied.example.", remote: "192.0.2.7"},
			{from: "127.0.186.2", name: "direct.example.", remote: "127.0.186.2"},
		} {
			req, err := http.NewRequest(http.MethodPost, "https://"+d.addr+DoHPath, bytes.NewReader(mustPack(t, query(tc.name))))
			require.NoError(t, err)
			req.Header.Set("Content-Type", DoHContentType)
			req.Header.Set("X-Forwarded-For", "192.0.2.7")
			resp, err := d.client(tc.from).Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			seen, ok := d.handler.seenFor(tc.name)
			require.True(t, ok)
			remote, err := netip.ParseAddrPort(seen.remote.String())
			require.NoError(t, err)
			assert.Equal(t, tc.remote, remote.Addr().String(), "the client of a request from %s", tc.from)
		}
	})
	t.Run("a client allowed_clients leaves out refused", func(t *testing.T) {
		d := startRuled(t, HTTPS, serverLimits(nil))
		_, err := d.client("127.0.186.9").Post("https://"+d.addr+DoHPath, DoHContentType, bytes.NewReader(mustPack(t, query("refused.example."))))
		require.Error(t, err)
		_, asked := d.handler.seenFor("refused.example.")
		assert.False(t, asked, "the query reached the Handler")
		assert.Positive(t, d.refused.Load(), "Config.Refused told")
	})
	t.Run("tcp_pipeline is the streams of a connection", func(t *testing.T) {
		d := startRuled(t, HTTPS, serverLimits(func(l *Limits) { l.TCPPipeline = 7 }))
		_, fr := d.h2Conn(t)
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		settings, ok := f.(*http2.SettingsFrame)
		require.True(t, ok, "the server's first frame is %T", f)
		streams, ok := settings.Value(http2.SettingMaxConcurrentStreams)
		require.True(t, ok)
		assert.Equal(t, uint32(7), streams)
	})
	t.Run("a connection without a request closed at twice tcp_read_timeout", func(t *testing.T) {
		d := startRuled(t, HTTPS, serverLimits(func(l *Limits) { l.TCPReadTimeout = 400 * time.Millisecond }))
		conn, _ := d.h2Conn(t)
		assert.True(t, endedWithin(conn, 6*time.Second), "open past 6 s (DoHServer's default: 10 s)")
	})
	t.Run("an idle connection closed at tcp_idle_timeout", func(t *testing.T) {
		d := startRuled(t, HTTPS, serverLimits(func(l *Limits) { l.TCPIdleTimeout = time.Second }))
		conn, fr := d.h2Conn(t)
		var hbuf bytes.Buffer
		enc := hpack.NewEncoder(&hbuf)
		q := base64.RawURLEncoding.EncodeToString(mustPack(t, query("fast.")))
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", testServerName},
			{":path", DoHPath + "?dns=" + q}} {
			require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
		}
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndHeaders: true, EndStream: true}))
		// The answer, then nothing until the server ends the connection.
		assert.True(t, endedWithin(conn, 8*time.Second), "open past 8 s (DoHServer's default: 60 s)")
		_, asked := d.handler.seenFor("fast.")
		assert.True(t, asked, "the request was served")
	})
	t.Run("tcp_connections caps the listener", func(t *testing.T) {
		d := startRuled(t, HTTPS, serverLimits(func(l *Limits) { l.TCPConnections = 2 }))
		first, _ := d.h2Conn(t)
		d.h2Conn(t)
		third := make(chan error, 1)
		go func() {
			dialer := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.186.2")}}
			conn, err := tls.DialWithDialer(dialer, "tcp", d.addr, clientTLS(d.ca, "h2"))
			if err == nil {
				conn.Close()
			}
			third <- err
		}()
		select {
		case err := <-third:
			t.Fatalf("a third connection served at a cap of 2: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
		first.Close()
		select {
		case err := <-third:
			assert.NoError(t, err, "the third connection once the first closed")
		case <-time.After(10 * time.Second):
			t.Fatal("the third connection not served once the first closed")
		}
	})
}

// dial opens a DNS over QUIC connection to d from the loopback address
// from, closed when the test ends.
func (d *ruledServer) dial(t *testing.T, from string) (*quic.Conn, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)})
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	raddr, err := net.ResolveUDPAddr("udp", d.addr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := quic.Dial(ctx, pc, raddr, clientTLS(d.ca, ALPNDoQ), &quic.Config{})
	if err == nil {
		t.Cleanup(func() { _ = c.CloseWithError(0, "") })
	}
	return c, err
}

// closedWithin reports whether c ends within d.
func closedWithin(c *quic.Conn, d time.Duration) bool {
	select {
	case <-c.Context().Done():
		return true
	case <-time.After(d):
		return false
	}
}

// TestServerDoQTakesTheRules: a Server's DNS over QUIC listener takes the
// rules as its other listeners do: a client allowed_clients leaves out is
// refused, and tcp_pipeline (the streams a connection may open),
// tcp_read_timeout (a query's arrival) and tcp_idle_timeout bound it, not
// DoQServer's defaults.
func TestServerDoQTakesTheRules(t *testing.T) {
	t.Run("a client allowed_clients leaves out refused", func(t *testing.T) {
		d := startRuled(t, QUIC, serverLimits(nil))
		c, err := d.dial(t, "127.0.186.9")
		if err == nil {
			_, err = doqExchange(c, query("refused.example."))
		}
		require.Error(t, err)
		_, asked := d.handler.seenFor("refused.example.")
		assert.False(t, asked, "the query reached the Handler")
		assert.Positive(t, d.refused.Load(), "Config.Refused told")
	})
	t.Run("tcp_pipeline is the streams of a connection", func(t *testing.T) {
		d := startRuled(t, QUIC, serverLimits(func(l *Limits) { l.TCPPipeline = 3 }))
		c, err := d.dial(t, "127.0.186.2")
		require.NoError(t, err)
		for i := range 3 {
			_, err := c.OpenStream()
			require.NoError(t, err, "stream %d", i+1)
		}
		_, err = c.OpenStream()
		var limit *quic.StreamLimitReachedError
		assert.ErrorAs(t, err, &limit, "a fourth stream opened at tcp_pipeline 3")
	})
	t.Run("a query not ended within tcp_read_timeout ends its connection", func(t *testing.T) {
		d := startRuled(t, QUIC, serverLimits(func(l *Limits) { l.TCPReadTimeout = 400 * time.Millisecond }))
		c, err := d.dial(t, "127.0.186.2")
		require.NoError(t, err)
		st, err := c.OpenStream()
		require.NoError(t, err)
		_, err = st.Write(frames(t, query("half.example."))[:5])
		require.NoError(t, err)
		assert.True(t, closedWithin(c, 6*time.Second), "open past 6 s (DoQServer's default: 10 s)")
	})
	t.Run("an idle connection closed at tcp_idle_timeout", func(t *testing.T) {
		d := startRuled(t, QUIC, serverLimits(func(l *Limits) { l.TCPIdleTimeout = time.Second }))
		c, err := d.dial(t, "127.0.186.2")
		require.NoError(t, err)
		_, err = doqExchange(c, query("fast."))
		require.NoError(t, err)
		assert.True(t, closedWithin(c, 8*time.Second), "open past 8 s (DoQServer's default: 30 s)")
	})
}

// TestServerToldOfClientsNotReading: a DNS over HTTPS or QUIC connection
// closed because its client grants no flow-control credit for its answers
// while asking more (DoHServer's and DoQServer's Closed) is told to
// Config.Closed with its transport and ClosedNotReading, as a TCP one is:
// dnsfence_connections_closed_total counts it.
func TestServerToldOfClientsNotReading(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	var mu sync.Mutex
	var closed []string
	told := func(transport string) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(closed, transport+" "+ClosedNotReading)
	}
	s := New(Config{Handler: &slowBigAnswers{}, Rules: func() Rules {
		return serverRules{serverLimits(func(l *Limits) { l.TCPPipeline = 64 })}
	}, Log: zaptest.NewLogger(t), Closed: func(transport, reason string) {
		mu.Lock()
		defer mu.Unlock()
		closed = append(closed, transport+" "+reason)
	}})
	require.NoError(t, s.StartEncrypted(Encrypted{HTTPS: []string{"127.0.186.1:0"}, QUIC: []string{"127.0.186.1:0"}, Cert: store}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	addrs := map[string]string{}
	for _, e := range s.Endpoints() {
		addrs[e.Transport] = e.Addr.String()
	}
	big, err := txtQuery("big.", 0).Pack()
	require.NoError(t, err)

	t.Run(HTTPS, func(t *testing.T) {
		// The smallest windows net/http allows, and no body read: answers
		// of about 60,000 octets wait for credit. One connection: asked
		// 64 requests at once, net/http dials one for each (64 dials
		// measured), and no connection has more than 1 MiB unread.
		dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.186.2")}}
		tr := &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: clientTLS(ca), ForceAttemptHTTP2: true,
			MaxConnsPerHost: 1, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 1 << 10}}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var bodies sync.WaitGroup
		for range 64 {
			bodies.Go(func() {
				resp, err := c.Post("https://"+addrs[HTTPS]+DoHPath, DoHContentType, bytes.NewReader(big))
				if err == nil {
					t.Cleanup(func() { resp.Body.Close() }) // unread until the test ends
				}
			})
		}
		require.Eventually(t, func() bool { return told(HTTPS) }, 10*time.Second, 5*time.Millisecond)
		bodies.Wait()
	})
	t.Run(QUIC, func(t *testing.T) {
		askDoQNotReading(t, ca, "127.0.186.2", addrs[QUIC])
		require.Eventually(t, func() bool { return told(QUIC) }, 10*time.Second, 5*time.Millisecond)
	})
}
