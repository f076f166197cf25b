package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// The tests of peer resolvers' bug reports run dnsfence, its upstream and
// its client on addresses of 127.0.79.0/24 of their own: dnsfence on
// peerListen, the upstream on peerUp, the client peerClient, outside the
// blocking policy's range (so every answer is forwarded as it came), and
// peerProxy, a trusted proxy naming its clients by EDNS Client Subnet.
const (
	peerListen = "127.0.79.1"
	peerUp     = "127.0.79.2"
	peerClient = "127.0.79.3"
	peerProxy  = "127.0.79.9"
)

const peerConfig = `listen: ["` + peerListen + `:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.79.0/24", "198.51.100.0/24", "203.0.113.0/24"]
trusted_proxies: ["` + peerProxy + `/32"]
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.79.16/28"]
    block: [lists/tiktok.txt]
`

// peerPaths are the ways a query of these tests reaches the cache: UDP on
// the wire path, UDP on the message path (an EDNS option of no meaning
// besides sends it there: other), and TCP.
var peerPaths = []struct {
	name    string
	network string
	other   bool
}{
	{"udp wire path", "udp", false},
	{"udp message path", "udp", true},
	{"tcp", "tcp", false},
}

// peerNeedAddrs skips the test where 127.0.79.0/24 is not loopback.
func peerNeedAddrs(t *testing.T) {
	t.Helper()
	needLoopback(t, peerListen, peerUp, peerClient, peerProxy)
}

// startPeerFence serves peerConfig with the given upstream until the test
// ends and returns its address.
func startPeerFence(t *testing.T, upstream string) string {
	t.Helper()
	dir := testnet.WriteTree(t, govFiles)
	path := filepath.Join(dir, "dnsfence.yaml")
	text := strings.ReplaceAll(peerConfig, "{{upstreams}}", `["`+upstream+`"]`)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	m := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	log := zaptest.NewLogger(t)
	h := NewHandler(log, snap, m)
	srv := newServer(log, h, h)
	require.NoError(t, srv.Start(cfg.Listen))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	return srv.Addrs()[0]
}

// askPeerUDP sends m over UDP from peerClient and returns the datagram
// that answers it, as received.
func askPeerUDP(t *testing.T, server string, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	require.NoError(t, err)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(peerClient)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(server)))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write(b)
	require.NoError(t, err)
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return buf[:n]
}

// TestUpstreamTrailingOctetsNotRelayed (NLnetLabs/unbound#653: Unbound
// relayed an upstream datagram with 15 octets past its last record, and
// dig warned "Message has 15 extra bytes at end"): an upstream answer
// with octets after the records its header counts reaches the client
// without them, on the wire path and the message path, a miss and a hit.
func TestUpstreamTrailingOctetsNotRelayed(t *testing.T) {
	peerNeedAddrs(t)
	pc, err := net.ListenPacket("udp", peerUp+":0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	serveDatagrams(pc, func(b []byte) []byte {
		q := new(dns.Msg)
		if q.Unpack(b) != nil {
			return nil
		}
		return append(packed(defaultAnswer(nil, q)), "fifteen octets!"...)
	})
	addr := startPeerFence(t, pc.LocalAddr().String())
	cases := []struct {
		name  string
		query func(name string) *dns.Msg
	}{
		{"wire path, no edns", func(name string) *dns.Msg { return question(name, dns.TypeA, false) }},
		{"wire path, edns", func(name string) *dns.Msg { return question(name, dns.TypeA, true) }},
		{"message path", func(name string) *dns.Msg {
			// An option of no meaning: the wire path leaves the query to
			// the message path.
			m := question(name, dns.TypeA, true)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}}}
			return m
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("trail%d.example.org.", i)
			for _, ask := range []string{"miss", "hit"} {
				b := askPeerUDP(t, addr, tc.query(name))
				q, ok := dnswire.ReadQuestion(b)
				require.True(t, ok, "%s: the answer's question reads", ask)
				assert.True(t, dnswire.Walk(b, q.End, func(dnswire.Record) bool { return true }),
					"%s: the answer ends with its last record (%d octets)", ask, len(b))
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(b))
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, ask)
				if assert.Len(t, r.Answer, 1, ask) {
					assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String(), ask)
				}
			}
		})
	}
}
