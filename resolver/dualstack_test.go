package resolver

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDualStackListenersDecideIPv4ClientsByIPv4Ranges: an IPv4 client of a
// dual-stack wildcard socket arrives as ::ffff:a.b.c.d on every
// transport, and is decided, admitted and refused by its IPv4 address:
// missed by the IPv4 ranges, a government device would be in no policy
// (or, outside every range of allowed_clients written in IPv4, refused
// everywhere). Each listener names its peer on its own path (UDP, TCP
// and DoT admission, DoH's request, DoQ's connection), so each is asked.
// It binds wildcard addresses, so it runs in a network namespace of its
// own.
func TestDualStackListenersDecideIPv4ClientsByIPv4Ranges(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	text := strings.Replace(testConfig, `listen: ["127.0.0.1:0"]`, fmt.Sprintf(`listen: ["[::]:0"]
tls: {cert: %q, key: %q}
listen_tls: ["[::]:0"]
listen_https: ["[::]:0", "http://[::]:0"]
listen_quic: ["[::]:0"]`, p.certFile, p.keyFile), 1)
	e := startEncryptedFence(t, p, text, up.addr)
	at := func(transport, host string) string {
		addr := e.addr
		if transport != "udp" && transport != "tcp" {
			addr = e.addrs[transport]
		}
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		return net.JoinHostPort(host, port)
	}
	transports := []struct {
		name string
		ask  func(host, from string, m *dns.Msg) (*dns.Msg, error)
	}{
		{name: "udp", ask: func(host, from string, m *dns.Msg) (*dns.Msg, error) {
			return exchange(at("udp", host), from, "udp", m)
		}},
		{name: "tcp", ask: func(host, from string, m *dns.Msg) (*dns.Msg, error) {
			return exchange(at("tcp", host), from, "tcp", m)
		}},
		{name: "dot", ask: func(host, from string, m *dns.Msg) (*dns.Msg, error) {
			return askDoT(at(listen.TLS, host), from, p.clientTLS(listen.ALPNDoT), m)
		}},
		{name: "doh", ask: func(host, from string, m *dns.Msg) (*dns.Msg, error) {
			return askDoH("https://"+at(listen.HTTPS, host)+listen.DoHPath, from, p.clientTLS(), m, false)
		}},
		{name: "doh over plain http", ask: func(host, from string, m *dns.Msg) (*dns.Msg, error) {
			return askDoH("http://"+at("http", host)+listen.DoHPath, from, nil, m, true)
		}},
		{name: "doq", ask: func(host, from string, m *dns.Msg) (*dns.Msg, error) {
			return askDoQ(at(listen.QUIC, host), from, p.clientTLS(listen.ALPNDoQ), m)
		}},
	}
	clients := []struct {
		name, host, from string
		want             int // -1: refused, at accept or with REFUSED
	}{
		{name: "IPv4 government device", host: "127.0.0.1", from: "127.0.0.2", want: dns.RcodeNameError},
		{name: "IPv4 government device from a client file", host: "127.0.0.1", from: "127.0.0.5", want: dns.RcodeNameError},
		{name: "IPv4 press office", host: "127.0.0.1", from: "127.0.0.3", want: dns.RcodeSuccess},
		{name: "IPv4 outside allowed_clients", host: "127.0.0.1", from: "127.0.0.20", want: -1},
		{name: "IPv6 government device", host: "::1", from: "::1", want: dns.RcodeNameError},
	}
	for _, tr := range transports {
		for _, c := range clients {
			t.Run(tr.name+"/"+c.name, func(t *testing.T) {
				r, err := tr.ask(c.host, c.from, question("www.tiktok.com.", dns.TypeA, true))
				if c.want < 0 {
					if err == nil {
						assert.Equal(t, "REFUSED", dns.RcodeToString[r.Rcode])
					}
					return
				}
				require.NoError(t, err)
				assert.Equal(t, dns.RcodeToString[c.want], dns.RcodeToString[r.Rcode])
			})
		}
	}
}
