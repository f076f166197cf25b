package listen

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// TestPktinfoRoundTrip: the control message putSrc writes for an answer's
// source reads back, with dstOf, as that address; what cannot be a source
// (nothing, a multicast address, the unspecified one) reads as none.
func TestPktinfoRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		addr string
		want string // "": none
	}{
		{name: "IPv4", addr: "127.0.0.2", want: "127.0.0.2"},
		{name: "IPv6", addr: "2001:db8::53", want: "2001:db8::53"},
		{name: "IPv4-mapped", addr: "::ffff:192.0.2.1", want: "192.0.2.1"},
		{name: "IPv6 multicast", addr: "ff02::fb"},
		{name: "IPv6 unspecified", addr: "::"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oob := make([]byte, srcOOBSize)
			a := netip.MustParseAddr(tc.addr)
			n := putSrc(oob, a.Unmap())
			want := netip.Addr{}
			if tc.want != "" {
				want = netip.MustParseAddr(tc.want)
			}
			assert.Equal(t, want, dstOf(oob[:n]))
		})
	}
	assert.Equal(t, netip.Addr{}, dstOf(nil), "no control message")
	assert.Equal(t, netip.Addr{}, dstOf(make([]byte, unix.SizeofCmsghdr)), "a zero header")
}

// TestServerOnWildcardAnswersFromTheAddressAsked: a Server listening on
// 0.0.0.0 answers a query sent to 127.0.0.2 from 127.0.0.2, which the
// client's connected socket takes, not from the address the kernel's
// routing picks (127.0.0.1), which it drops; and Start warns of wildcard
// listen addresses only where answers cannot be so sent: on Linux, of
// none, wildcard or not. It binds the wildcard address, so it runs in a
// network namespace of its own.
func TestServerOnWildcardAnswersFromTheAddressAsked(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	core, logs := observer.New(zapcore.WarnLevel)
	var wildcard string
	s := New(Config{
		Handler: &fakeHandler{},
		Rules:   func() Rules { return fakeRules{} },
		Sockets: func(socks []UDPSocket) {
			for _, so := range socks {
				if a := so.Conn.LocalAddr().(*net.UDPAddr); a.IP.IsUnspecified() {
					wildcard = a.String()
				}
			}
		},
		Log: zap.New(core),
	})
	require.NoError(t, s.Start([]string{"127.0.0.1:0", "0.0.0.0:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	require.NotEmpty(t, wildcard)
	_, port, err := net.SplitHostPort(wildcard)
	require.NoError(t, err)

	nc, err := net.Dial("udp", net.JoinHostPort("127.0.0.2", port))
	require.NoError(t, err)
	defer nc.Close()
	require.Equal(t, "127.0.0.1", nc.LocalAddr().(*net.UDPAddr).IP.String(), "routed from 127.0.0.1")
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	c := &dns.Conn{Conn: nc}
	m := new(dns.Msg)
	m.SetQuestion("fast.", dns.TypeTXT)
	require.NoError(t, c.WriteMsg(m))
	r, err := c.ReadMsg()
	require.NoError(t, err, "answered from 127.0.0.2")
	assert.Equal(t, m.Id, r.Id)

	assert.Empty(t, logs.FilterMessageSnippet("wildcard listen address").All(),
		"answers leave from each query's destination: nothing to warn of")
}
