package listen

import (
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"syscall"
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

// trustingRules allow every loopback peer, trust proxy, and have limits.
type trustingRules struct {
	limitRules
	proxy netip.Addr
}

func (r trustingRules) Trusted(peer netip.Addr) bool { return peer == r.proxy }

// startServerAt starts a Server of cfg on addr (host:0) as startServer does
// on 127.0.0.1, and returns it with its address.
func startServerAt(t *testing.T, addr string, cfg Config) (*Server, string) {
	t.Helper()
	var bound string
	cfg.Sockets = func(socks []UDPSocket) { bound = socks[0].Conn.LocalAddr().String() }
	if cfg.Log == nil {
		cfg.Log = zaptest.NewLogger(t)
	}
	s := New(cfg)
	require.NoError(t, s.Start([]string{addr}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, bound
}

// holds is what a's books hold for the client network of peer: its
// connections counted open, and how many of them reclaim may ask about;
// ok is false when the network has no entry.
func (a *admission) holds(peer netip.Addr) (open, reclaimable int, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.clients[ClientNetwork(peer)]
	if c == nil {
		return 0, 0, false
	}
	return c.open, len(c.finished), true
}

// networks is how many client networks a's books hold.
func (a *admission) networks() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.clients)
}

// TestPerClientCapHoldsAfterAConnectionCloses: a client network at
// limits.tcp_connections_per_client (2) that closes one connection gets
// one place back, not its whole cap: its next connection is admitted and
// the one after is refused, with a reset. Admission's books follow: one connection
// counted while one is open, nothing kept for a closed one, and no entry
// left once every connection has closed (the map is bounded by the
// connections open, not by every client ever seen).
func TestPerClientCapHoldsAfterAConnectionCloses(t *testing.T) {
	var open atomic.Int64
	s, addr := startServerAt(t, "127.0.156.1:0", Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Rules: func() Rules {
			return limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 2, TCPPipeline: 4,
				TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute}}
		},
		Connections: func(_ string, delta int) { open.Add(int64(delta)) },
	})
	const client = "127.0.156.2"
	peer := netip.MustParseAddr(client)

	first, err := askTCPFrom(t, client, addr)
	require.NoError(t, err)
	second, err := askTCPFrom(t, client, addr)
	require.NoError(t, err)
	require.NoError(t, first.Close())
	require.Eventually(t, func() bool { return open.Load() == 1 }, 10*time.Second, 5*time.Millisecond,
		"the closed connection no longer counted")
	n, reclaimable, ok := s.admission.holds(peer)
	require.True(t, ok, "the network's open connection is still counted")
	assert.Equal(t, 1, n, "connections counted for the network")
	assert.Equal(t, 1, reclaimable, "the closed connection is not kept for reclaim")

	third, err := askTCPFrom(t, client, addr)
	require.NoError(t, err, "the place the closed connection gave back")
	_, err = askTCPFrom(t, client, addr)
	require.Error(t, err, "a third connection open at once is over the cap")
	assertResetAtAccept(t, client, addr)

	require.NoError(t, second.Close())
	require.NoError(t, third.Close())
	require.Eventually(t, func() bool { return open.Load() == 0 }, 10*time.Second, 5*time.Millisecond,
		"every connection closed")
	assert.Equal(t, 0, s.admission.networks(), "no entry kept for a network with no connection open")
}

// assertResetAtAccept dials addr from src, sending nothing, and asserts
// that the listener refuses the connection with a reset (SO_LINGER 0: no
// FIN handshake, no TIME_WAIT kept for it) and neither closes it with a
// FIN nor leaves it open. A client that sent a query first would get a
// reset either way: the kernel resets a socket closed with data unread.
func assertResetAtAccept(t *testing.T, src, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "reset, not closed or left open: %v", err)
}

// TestTrustedProxyConnectionLeavesTheGauge: a trusted proxy's connection,
// admitted outside the per-client cap, is counted in the connections
// gauge (Config.Connections) while it is open and no longer once it
// closes, as any client's is.
func TestTrustedProxyConnectionLeavesTheGauge(t *testing.T) {
	const proxy = "127.0.156.3"
	var open atomic.Int64
	_, addr := startServerAt(t, "127.0.156.1:0", Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Rules: func() Rules {
			return trustingRules{limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 1, TCPPipeline: 4,
				TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute}}, netip.MustParseAddr(proxy)}
		},
		Connections: func(_ string, delta int) { open.Add(int64(delta)) },
	})
	co, err := askTCPFrom(t, proxy, addr)
	require.NoError(t, err)
	co2, err := askTCPFrom(t, proxy, addr)
	require.NoError(t, err, "a trusted proxy is not held to the per-client cap")
	assert.Equal(t, int64(2), open.Load())
	require.NoError(t, co.Close())
	require.Eventually(t, func() bool { return open.Load() == 1 }, 10*time.Second, 5*time.Millisecond,
		"the proxy's closed connection counted off once")
	require.NoError(t, co2.Close())
	require.Eventually(t, func() bool { return open.Load() == 0 }, 10*time.Second, 5*time.Millisecond,
		"and its other one")
}

// TestDoHRefusedPeerIsResetAndHoldsNoPlace: a DoH connection Admit
// refuses (allowed_clients, the per-client cap) is reset at accept, as a
// TCP one is, and gives its listener place back: with MaxConns 1, three
// refused connections in a row leave the place to the next peer admitted.
func TestDoHRefusedPeerIsResetAndHoldsNoPlace(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	srv := NewDoHServer(DoHOptions{Handler: &fakeHandler{release: make(chan struct{})}, Trusted: trustNone, MaxConns: 1,
		Admit: func(netip.Addr) (func(), bool) {
			if refuse.Load() {
				return nil, false
			}
			return func() {}, true
		}})
	addr := serveDoH(t, srv, "127.0.156.1")

	for range 3 {
		assertResetAtAccept(t, "127.0.156.2", addr)
	}

	refuse.Store(false)
	m := new(dns.Msg)
	m.SetQuestion("fast.", dns.TypeTXT)
	b, err := m.Pack()
	require.NoError(t, err)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + DoHPath + "?dns=" + base64.RawURLEncoding.EncodeToString(b))
	require.NoError(t, err, "the listener's one place is free")
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(body))
	assert.Equal(t, m.Id, r.Id)
}

// TestNoRulesAdmitsNoOne: with no Rules loaded (Config.Rules unset, or
// giving nil) admission refuses every connection, counted as not_allowed
// and none counted open: nothing loaded, nobody is allowed yet. Start
// needs Rules, so no socket reaches this; admit is asked directly.
func TestNoRulesAdmitsNoOne(t *testing.T) {
	for _, rules := range []func() Rules{nil, func() Rules { return nil }} {
		var refused []string
		open := 0
		a := newAdmission(Config{Rules: rules, Log: zaptest.NewLogger(t),
			Connections: func(_ string, delta int) { open += delta },
			Refused:     func(_, reason string) { refused = append(refused, reason) }})
		_, ok := a.admit(TCP, netip.MustParseAddr("127.0.156.2"))
		assert.False(t, ok)
		assert.Equal(t, []string{RefusedNotAllowed}, refused)
		assert.Zero(t, open)
	}
}

// TestAdmissionRefusalCountedAndLogged: a connection refused at accept is
// counted by its reason (not_allowed for a peer outside allowed_clients,
// per_client_limit for one whose network holds its cap) and logged at
// debug level with the client, the transport and the reason; an admitted
// one is neither.
func TestAdmissionRefusalCountedAndLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var refused []string
	a := newAdmission(Config{Rules: func() Rules { return limitRules{limits: Limits{TCPConnectionsPerClient: 1}} },
		Log: zap.New(core), Connections: func(string, int) {},
		Refused: func(transport, reason string) { refused = append(refused, transport+"/"+reason) }})
	client := netip.MustParseAddr("127.0.163.20")
	_, ok := a.admit(TLS, client)
	require.True(t, ok)
	assert.Empty(t, refused)
	assert.Zero(t, logs.Len())

	_, ok = a.admit(TLS, client)
	assert.False(t, ok, "over the per-client cap")
	_, ok = a.admit(HTTPS, netip.MustParseAddr("192.0.2.1"))
	assert.False(t, ok, "outside allowed_clients")
	assert.Equal(t, []string{TLS + "/" + RefusedPerClient, HTTPS + "/" + RefusedNotAllowed}, refused)
	lines := logs.FilterMessage("connection refused at accept").All()
	require.Len(t, lines, 2)
	for i, want := range []map[string]any{
		{logClient: "127.0.163.20", logTransport: TLS, logReason: RefusedPerClient},
		{logClient: "192.0.2.1", logTransport: HTTPS, logReason: RefusedNotAllowed},
	} {
		assert.Equal(t, zapcore.DebugLevel, lines[i].Level)
		assert.Equal(t, want, lines[i].ContextMap())
	}
}

// prefixRules allow the peers inside allowed (Prefix.Contains, as
// allowed_clients matches: an IPv4-mapped or zoned address is inside no
// prefix), trust none, and cap each client network at one connection.
type prefixRules struct{ allowed []netip.Prefix }

func (r prefixRules) Allowed(peer netip.Addr) bool {
	for _, p := range r.allowed {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}
func (prefixRules) Trusted(netip.Addr) bool { return false }
func (prefixRules) Limits() Limits          { return Limits{TCPConnectionsPerClient: 1} }

// TestPerClientCapIsPerIPv6Network: an IPv6 client is counted by its /56
// (ClientNetwork), as the rate limiter counts it: a second address inside
// the /56 shares the first's cap, an address in the next /56 has its own.
func TestPerClientCapIsPerIPv6Network(t *testing.T) {
	a := newAdmission(Config{Log: zaptest.NewLogger(t), Connections: func(string, int) {}, Refused: func(string, string) {},
		Rules: func() Rules { return prefixRules{allowed: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}} }})

	for _, tc := range []struct {
		peer  string
		admit bool
	}{
		{"2001:db8:0:100::1", true},
		{"2001:db8:0:1ff:ffff::2", false}, // the same /56: over its cap of 1
		{"2001:db8:0:200::1", true},       // the next /56
		{"2001:db8:1:100::1", true},       // the same /56 of another /48
	} {
		_, ok := a.admit(TCP, netip.MustParseAddr(tc.peer))
		assert.Equal(t, tc.admit, ok, tc.peer)
	}
	assert.Equal(t, netip.MustParsePrefix("2001:db8:0:100::/56"), ClientNetwork(netip.MustParseAddr("2001:db8:0:1ff::1")))
	assert.Equal(t, netip.MustParsePrefix("127.0.189.7/32"), ClientNetwork(netip.MustParseAddr("127.0.189.7")))
}

// TestAdmissionReclaimLogged: a connection admitted through reclaim (a
// connection of its network at the cap found finished by its client) is
// logged at debug level with the client network, so that an operator who
// sees a client at its cap can tell its places are given back; a refusal
// at the cap with none finished logs no reclaim.
func TestAdmissionReclaimLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var refused []string
	a := newAdmission(Config{Rules: func() Rules { return limitRules{limits: Limits{TCPConnectionsPerClient: 1}} },
		Log: zap.New(core), Connections: func(string, int) {},
		Refused: func(_, reason string) { refused = append(refused, reason) }})
	client := netip.MustParseAddr("127.0.189.20")
	first, ok := a.admit(TCP, client)
	require.True(t, ok)
	var finished atomic.Bool
	first.slot.reclaimable(finished.Load)

	_, ok = a.admit(TCP, client)
	assert.False(t, ok, "at the cap, its one connection not finished")
	assert.Equal(t, []string{RefusedPerClient}, refused)
	assert.Zero(t, logs.FilterMessage("a connection its client has closed counted no more").Len())

	finished.Store(true)
	_, ok = a.admit(TCP, client)
	require.True(t, ok, "the finished connection's place")
	lines := logs.FilterMessage("a connection its client has closed counted no more").All()
	require.Len(t, lines, 1)
	assert.Equal(t, zapcore.DebugLevel, lines[0].Level)
	assert.Equal(t, map[string]any{logClient: "127.0.189.20/32"}, lines[0].ContextMap())
}
