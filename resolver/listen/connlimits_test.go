package listen

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// limitRules allow every loopback peer, trust none, and have limits.
type limitRules struct{ limits Limits }

func (limitRules) Allowed(peer netip.Addr) bool { return peer.IsLoopback() }
func (limitRules) Trusted(netip.Addr) bool      { return false }
func (r limitRules) Limits() Limits             { return r.limits }

// startLimited starts a Server on 127.0.0.1 with fakeHandler and limits,
// and returns its address.
func startLimited(t *testing.T, limits Limits) string {
	t.Helper()
	_, addr := startServer(t, Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Rules:   func() Rules { return limitRules{limits} },
	})
	return addr
}

// startServer starts a Server of cfg on 127.0.0.1 (its Sockets set, its
// Log a test logger when unset), shut down when the test ends, and
// returns it with its address, UDP's and TCP's.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	var addr string
	cfg.Sockets = func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() }
	if cfg.Log == nil {
		cfg.Log = zaptest.NewLogger(t)
	}
	s := New(cfg)
	require.NoError(t, s.Start([]string{"127.0.0.1:0"}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, addr
}

// askTCPFrom dials addr over TCP from the loopback address src and asks
// "fast." on the connection, which it returns with the error of the
// exchange (nil: answered). A connection refused at accept may fail as
// early as the dial (its reset can beat connect's return).
func askTCPFrom(t *testing.T, src, addr string) (*dns.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	co := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion("fast.", dns.TypeTXT)
	if err := co.WriteMsg(m); err != nil {
		return co, err
	}
	_, err = co.ReadMsg()
	return co, err
}

// TestPerClientCapIsPerIPv4Address: limits.tcp_connections_per_client
// counts the connections of one client network, which for IPv4 is one
// address (ClientNetwork: /32; /56 for IPv6): a second address of the
// same /24 has its own cap, while the first address's next connection
// over the cap is refused.
func TestPerClientCapIsPerIPv4Address(t *testing.T) {
	addr := startLimited(t, Limits{TCPConnections: 8, TCPConnectionsPerClient: 1, TCPPipeline: 4,
		TCPReadTimeout: 10 * time.Second, TCPIdleTimeout: 10 * time.Second})

	_, err := askTCPFrom(t, "127.0.127.1", addr)
	require.NoError(t, err, "the first connection of 127.0.127.1")
	_, err = askTCPFrom(t, "127.0.127.1", addr)
	require.Error(t, err, "the second connection of 127.0.127.1 is over its cap")
	_, err = askTCPFrom(t, "127.0.127.2", addr)
	require.NoError(t, err, "127.0.127.2 is a client network of its own")
}

// TestTCPIdleTimeoutAfterTheFirstQuery: a connection waits
// limits.tcp_read_timeout for its first query and
// limits.tcp_idle_timeout for each later one, counted from its last
// answer, also when every answer was given inline (no resume). With a
// read timeout of a minute and an idle timeout of 100 ms, a connection
// answered once is closed by the listener long before the client's own
// deadline of 30 s.
func TestTCPIdleTimeoutAfterTheFirstQuery(t *testing.T) {
	addr := startLimited(t, Limits{TCPConnections: 8, TCPConnectionsPerClient: 8, TCPPipeline: 4,
		TCPReadTimeout: time.Minute, TCPIdleTimeout: 100 * time.Millisecond})

	co, err := askTCPFrom(t, "127.0.127.3", addr)
	require.NoError(t, err)
	require.NoError(t, co.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = co.Conn.Read(make([]byte, 1))
	require.Error(t, err)
	assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "closed by the listener's idle timeout, not the client's deadline: %v", err)
	assert.ErrorIs(t, err, io.EOF)
}

// TestAnswerAfterStopLeavesTheReadStopped: once stopAccepting has set a
// connection's read deadline in the past (stopReading), the end of a
// query in flight (answered) does not set the idle deadline again: the
// read loop's blocked read would otherwise wait for the idle timeout (an
// hour here) instead of ending at once, and hold Shutdown. A real TCP
// connection on loopback; the read is given 30 s, against an hour.
func TestAnswerAfterStopLeavesTheReadStopped(t *testing.T) {
	client, server := tcpPair(t, "127.0.0.1")

	c := &tcpConn{Conn: server}
	c.began() // a query in flight: no read deadline
	require.True(t, c.awaitQuery(time.Hour))
	c.stopReading()
	c.answered(time.Hour)

	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()
	select {
	case err := <-read:
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	case <-time.After(30 * time.Second):
		client.Close()
		server.Close()
		t.Fatal("the read of a stopped connection waited for its idle timeout")
	}
	assert.False(t, c.awaitQuery(time.Hour), "a stopped connection awaits no more queries")
}

// TestAnswersReadyGoOutWhileThePipelineIsFull: a connection whose
// pipeline is full (limits.tcp_pipeline queries waiting on their resume)
// sends the answers it holds before it waits for a slot: a client that
// sent a query answered inline, then two that wait on their upstream
// with a pipeline of one, gets the first answer while the others wait.
// Held until a slot came free, it waited on the slowest upstream.
func TestAnswersReadyGoOutWhileThePipelineIsFull(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{})}
	_, addr := startServer(t, Config{
		Handler: h,
		Rules: func() Rules {
			return limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 8, TCPPipeline: 1,
				TCPReadTimeout: 10 * time.Second, TCPIdleTimeout: 10 * time.Second}}
		},
	})
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(release) // before startServer's Shutdown, which waits for the held queries

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var frames []byte
	for _, name := range []string{"fast.", "slow.", "slow."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		b, err := m.Pack()
		require.NoError(t, err)
		frames = binary.BigEndian.AppendUint16(frames, uint16(len(b)))
		frames = append(frames, b...)
	}
	_, err = c.Write(frames) // one write: every frame is read from the buffer at once
	require.NoError(t, err)
	co := &dns.Conn{Conn: c}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	r, err := co.ReadMsg()
	require.NoError(t, err, "the inline answer while the pipeline is full")
	assert.Equal(t, "fast.", r.Question[0].Name)
	release()
	for range 2 {
		r, err := co.ReadMsg()
		require.NoError(t, err)
		assert.Equal(t, "slow.", r.Question[0].Name)
	}
}

// TestRefusedConnectionsHoldNoListenerPlace: a connection refused at
// accept (its client over limits.tcp_connections_per_client) gives its
// place among limits.tcp_connections back at once: a client refused
// again and again cannot fill the listener's places and keep every other
// client out.
func TestRefusedConnectionsHoldNoListenerPlace(t *testing.T) {
	addr := startLimited(t, Limits{TCPConnections: 2, TCPConnectionsPerClient: 1, TCPPipeline: 4,
		TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute})

	_, err := askTCPFrom(t, "127.0.127.4", addr)
	require.NoError(t, err, "the first connection of 127.0.127.4, kept open")
	for i := range 3 {
		_, err := askTCPFrom(t, "127.0.127.4", addr)
		require.Error(t, err, "connection %d of 127.0.127.4 is over its cap", i+2)
	}
	_, err = askTCPFrom(t, "127.0.127.5", addr)
	require.NoError(t, err, "127.0.127.5 takes the listener's second place")
}

// TestClosedConnectionReleasesItsAdmission: a connection that ends gives
// back its admission: the connections gauge (Config.Connections) is back
// at zero, and its client, at its cap while the connection was open, is
// admitted again.
func TestClosedConnectionReleasesItsAdmission(t *testing.T) {
	var open atomic.Int64
	_, addr := startServer(t, Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Rules: func() Rules {
			return limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 1, TCPPipeline: 4,
				TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute}}
		},
		Connections: func(_ string, delta int) { open.Add(int64(delta)) },
	})

	co, err := askTCPFrom(t, "127.0.127.6", addr)
	require.NoError(t, err)
	assert.Equal(t, int64(1), open.Load())
	require.NoError(t, co.Close())
	require.Eventually(t, func() bool { return open.Load() == 0 }, 10*time.Second, 5*time.Millisecond,
		"the closed connection no longer counted")
	_, err = askTCPFrom(t, "127.0.127.6", addr)
	require.NoError(t, err, "its client is admitted again")
}

// TestDoTHandshakeWaitsTheReadTimeout: a DNS over TLS connection has
// limits.tcp_read_timeout for its handshake, as a TCP connection has for
// its first query, not a default of its own (DefaultDoQHandshakeTimeout,
// 5 s): a client whose ClientHello comes 6 s after its connection, within
// a read timeout of a minute, is served.
func TestDoTHandshakeWaitsTheReadTimeout(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	core, logs := observer.New(zapcore.InfoLevel)
	s := New(Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Rules: func() Rules {
			return limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 8, TCPPipeline: 4,
				TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute}}
		},
		Log: zap.New(core),
	})
	require.NoError(t, s.StartEncrypted(Encrypted{TLS: []string{"127.0.0.1:0"}, Cert: store}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	lines := logs.FilterMessage("listening").All()
	require.Len(t, lines, 1)
	addr, _ := lines[0].ContextMap()["address"].(string)
	require.NotEmpty(t, addr)

	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { raw.Close() })
	time.Sleep(DefaultDoQHandshakeTimeout + time.Second)
	c := tls.Client(raw, clientTLS(ca, ALPNDoT))
	require.NoError(t, c.SetDeadline(time.Now().Add(30*time.Second)))
	require.NoError(t, c.Handshake(), "the handshake within the read timeout")
	co := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion("fast.", dns.TypeTXT)
	require.NoError(t, co.WriteMsg(m))
	r, err := co.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, m.Id, r.Id)
}

// TestShutdownEndsIdleConnectionsAtOnce: Shutdown stops the read of every
// open TCP connection (stopAccepting, stopReading): an idle connection,
// with a minute of its idle timeout left, is closed and Shutdown returns
// without waiting for that timeout or for its own deadline (30 s here).
func TestShutdownEndsIdleConnectionsAtOnce(t *testing.T) {
	s, addr := startServer(t, Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Rules: func() Rules {
			return limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 8, TCPPipeline: 4,
				TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute}}
		},
	})
	co, err := askTCPFrom(t, "127.0.127.7", addr)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx), "the idle connection ended before the deadline")
	require.NoError(t, co.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = co.Conn.Read(make([]byte, 1))
	require.Error(t, err)
	assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "closed by the listener: %v", err)
}

// TestShutdownPastItsDeadlineClosesConnections: a Shutdown whose deadline
// ends with a query still waiting on its upstream (a resume that never
// returns) closes the query's connection, rather than leave it open after
// Shutdown has returned.
func TestShutdownPastItsDeadlineClosesConnections(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{})}
	s, addr := startServer(t, Config{
		Handler: h,
		Rules: func() Rules {
			return limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 8, TCPPipeline: 4,
				TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute}}
		},
	})
	t.Cleanup(func() { close(h.release) })

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	co := &dns.Conn{Conn: c}
	m := new(dns.Msg)
	m.SetQuestion("slow.", dns.TypeTXT)
	require.NoError(t, co.WriteMsg(m))
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.transports) == 1
	}, 10*time.Second, time.Millisecond, "the query waits on its resume")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, s.Shutdown(ctx), context.DeadlineExceeded)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "closed by the listener: %v", err)
}

// TestUDPDatagramOverTheBufferDropped: a datagram larger than the
// listener's read buffer (udpReadBuf; MSG_TRUNC) is no DNS query anyone
// sends: it is dropped unanswered and counted, not read cut short as a
// query of its first 4,096 octets. A query sent after it is answered.
func TestUDPDatagramOverTheBufferDropped(t *testing.T) {
	var mu sync.Mutex
	counted := map[string]int{}
	_, addr := startServer(t, Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Count: func(transport, result string) {
			mu.Lock()
			counted[transport+"/"+result]++
			mu.Unlock()
		},
		Rules: func() Rules { return fakeRules{} },
	})

	c, err := net.Dial("udp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	big := new(dns.Msg)
	big.SetQuestion("fast.", dns.TypeTXT)
	big.Id = 1111
	big.SetEdns0(1232, false)
	big.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, udpReadBuf)}}
	b, err := big.Pack()
	require.NoError(t, err)
	require.Greater(t, len(b), udpReadBuf)
	_, err = c.Write(b)
	require.NoError(t, err)

	small := new(dns.Msg)
	small.SetQuestion("fast.", dns.TypeTXT)
	small.Id = 2222
	co := &dns.Conn{Conn: c}
	require.NoError(t, co.WriteMsg(small))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	r, err := co.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, small.Id, r.Id, "the first answer is the small query's: the large datagram got none")
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, counted[UDP+"/"+ResultDropped], "the large datagram counted as dropped")
}
