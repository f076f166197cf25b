package listen

import (
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// peerListener gives each accepted connection the peer address peer makes
// of the real one: IPv4-mapped, as a dual-stack IPv6 socket (listen on
// [::]) reports its IPv4 clients, or zoned, as a link-local peer arrives.
// The sockets themselves stay on 127.0.156.0/24.
type peerListener struct {
	net.Listener
	peer func(*net.TCPAddr) *net.TCPAddr
}

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return proxyPeer{Conn: c, peer: l.peer(c.RemoteAddr().(*net.TCPAddr))}, nil
}

// remoteRecorder is a Handler that answers every query at once and sends
// the address it was asked for on remotes.
type remoteRecorder struct{ remotes chan net.Addr }

func (h remoteRecorder) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	h.remotes <- w.RemoteAddr()
	m := new(dns.Msg)
	m.SetReply(req)
	_ = w.WriteMsg(m)
	return nil
}

// TestDualStackProxyHeaderBelieved: a trusted proxy reaching a dual-stack
// TCP listener over IPv4 arrives as ::ffff:a.b.c.d; its PROXY header is
// believed all the same (Rules.Trusted is asked with the address
// unmapped, at accept and again when the header arrives), and the query
// is the client's the header names. Asked with the mapped address, the
// header's check failed and closed the proxy's connection: every client
// behind it went unanswered.
func TestDualStackProxyHeaderBelieved(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.156.1:0")
	require.NoError(t, err)
	mapped := func(a *net.TCPAddr) *net.TCPAddr { return &net.TCPAddr{IP: a.IP.To16(), Port: a.Port} }
	const proxy = "127.0.156.3"
	h := remoteRecorder{remotes: make(chan net.Addr, 1)}
	serveTCP(t, peerListener{Listener: inner, peer: mapped}, h, trustingRules{limitRules{Limits{TCPConnections: 8,
		TCPConnectionsPerClient: 1, TCPPipeline: 4, TCPReadTimeout: 10 * time.Second, TCPIdleTimeout: 10 * time.Second}},
		netip.MustParseAddr(proxy)})

	c := sendProxied(t, proxy, inner.Addr().(*net.TCPAddr))
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(readFrame(t, c)), "the proxy's connection is served")
	assert.Equal(t, uint16(1), r.Id)

	pa, ok := (<-h.remotes).(*ProxiedAddr)
	require.True(t, ok, "the query is the client's the header names")
	assert.Equal(t, "192.0.2.7:4000", pa.TCPAddr.AddrPort().String())
	assert.Equal(t, netip.MustParseAddr(proxy), pa.Proxy.Addr().Unmap())
}

// TestDoHLinkLocalProxyBelieved: a trusted proxy that reaches the DoH
// listener from a link-local address arrives with its zone (fe80::3%eth0);
// DoHOptions.Trusted is asked without it (a zoned address is in no
// trusted_proxies prefix), so its X-Forwarded-For names the client. Asked
// with the zone, the proxy was not trusted, and every device behind it
// was decided as the proxy.
func TestDoHLinkLocalProxyBelieved(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.156.1:0")
	require.NoError(t, err)
	proxy := netip.MustParseAddr("fe80::3")
	zoned := func(a *net.TCPAddr) *net.TCPAddr {
		return &net.TCPAddr{IP: proxy.AsSlice(), Port: a.Port, Zone: "eth0"}
	}
	h := remoteRecorder{remotes: make(chan net.Addr, 1)}
	srv := NewDoHServer(DoHOptions{Handler: h, MaxConns: 4, Trusted: func(a netip.Addr) bool { return a == proxy }})
	serveDoHOn(t, srv, peerListener{Listener: inner, peer: zoned})

	m := new(dns.Msg)
	m.SetQuestion("fast.", dns.TypeTXT)
	b, err := m.Pack()
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodGet, "http://"+inner.Addr().String()+DoHPath+"?dns="+base64.RawURLEncoding.EncodeToString(b), nil)
	require.NoError(t, err)
	req.Header.Set("X-Forwarded-For", "192.0.2.8")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	pa, ok := (<-h.remotes).(*ProxiedAddr)
	require.True(t, ok, "the query is the client's X-Forwarded-For names")
	assert.Equal(t, "192.0.2.8:0", pa.TCPAddr.AddrPort().String())
	assert.Equal(t, proxy, pa.Proxy.Addr(), "the proxy, without its zone")
}

// trustedOnceRules trust proxy the first time they are asked only: trust
// withdrawn by a reload between the accept and the PROXY header.
type trustedOnceRules struct {
	limitRules
	proxy netip.Addr
	asked *atomic.Int64
}

func (r trustedOnceRules) Trusted(peer netip.Addr) bool {
	return peer == r.proxy && r.asked.Add(1) == 1
}

// TestProxyHeaderAfterTrustWithdrawnRefused: a PROXY header from a peer
// trusted at accept but no longer when the header arrives (a reload in
// between) is not believed: the connection fails, and its query is
// answered for no one, least of all the client the header names.
func TestProxyHeaderAfterTrustWithdrawnRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.163.40:0")
	require.NoError(t, err)
	const proxy = "127.0.163.41"
	h := remoteRecorder{remotes: make(chan net.Addr, 1)}
	serveTCP(t, ln, h, trustedOnceRules{limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 1, TCPPipeline: 4,
		TCPReadTimeout: 10 * time.Second, TCPIdleTimeout: 10 * time.Second}}, netip.MustParseAddr(proxy), new(atomic.Int64)})

	c := sendProxied(t, proxy, ln.Addr().(*net.TCPAddr))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadFull(c, make([]byte, 2))
	require.Error(t, err, "no answer: the connection fails")
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "closed, not left open: %v", err)
	select {
	case a := <-h.remotes:
		t.Fatalf("answered for %v", a)
	default:
	}
}

// sendProxied connects to server from proxy, a loopback address, and
// writes a PROXY v2 header naming the client 192.0.2.7:4000 (to server's
// address on port 53), then the query "fast." with ID 1; the connection
// is closed when the test ends.
func sendProxied(t *testing.T, proxy string, server *net.TCPAddr) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(proxy)}}
	c, err := d.Dial("tcp", server.String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	header := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr:      &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000},
		DestinationAddr: &net.TCPAddr{IP: server.IP, Port: 53}}
	_, err = header.WriteTo(c)
	require.NoError(t, err)
	_, err = c.Write(frames(t, txtQuery("fast.", 1)))
	require.NoError(t, err)
	return c
}
