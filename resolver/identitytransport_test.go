package resolver

import (
	"fmt"
	"net"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestHandlerServedByMiekgServer: a Handler served by a plain dns.Server
// (a library caller's, whose ResponseWriter is no listen.ResponseWriter)
// tells UDP from TCP by the peer's address: an answer larger than a UDP
// client without EDNS takes (512 octets) is truncated over UDP and whole
// over TCP.
func TestHandlerServedByMiekgServer(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 40 {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(192, 0, 2, byte(i+1))})
		}
		return m
	})
	cfg, err := config.Load(writeConfig(t, fmt.Sprintf("upstreams: {{upstreams}}\nallowed_clients: [%q]\nlog: {queries: none}\n", "127.0.196.0/24"), nil, up.addr))
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	m := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	t.Cleanup(func() { snap.Forwarder().Close() })
	h := NewHandler(zap.NewNop(), snap, m)
	pc, ln, err := testnet.ListenBothOn("127.0.196.1")
	require.NoError(t, err)
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h})

	r := ask(t, pc.LocalAddr().String(), "127.0.196.2", "udp", question("big.example.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.True(t, r.Truncated, "over UDP, with %d answers", len(r.Answer))
	assert.Less(t, len(r.Answer), 40)

	r = ask(t, ln.Addr().String(), "127.0.196.2", "tcp", question("big.example.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.False(t, r.Truncated, "over TCP")
	assert.Len(t, r.Answer, 40)
}
