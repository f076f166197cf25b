package resolver

import (
	"net/http"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestForwarderBehindAProxyNamesItsDevicesByECS: a department forwarder
// (127.0.0.8, in trusted_proxies, in no policy) reached through a load
// balancer or DoH reverse proxy (127.0.0.9, trusted too) that names it by
// a PROXY header, Forwarded or X-Forwarded-For asks for its devices by
// ECS, as it does when it asks directly. Its ECS was ignored there, and
// a government device's query was decided for the forwarder and
// forwarded: TikTok over TCP, DoT and DoH, NXDOMAIN over UDP. A client so
// named that is no trusted proxy still cannot pick its policy by ECS.
func TestForwarderBehindAProxyNamesItsDevicesByECS(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	cfg := strings.Replace(encryptedConfig(p), "blocked_ttl: 60", `blocked_ttl: 60
trusted_proxies: ["127.0.0.9/32", "127.0.0.8/32"]`, 1)
	e := startEncryptedFence(t, p, cfg, up.addr)

	const lb, forwarder = "127.0.0.9", "127.0.0.8"
	proxied := func(network, client string, m *dns.Msg) (*dns.Msg, error) {
		if network == "tls" {
			return askDoTOverProxy(e.addrs[listen.TLS], lb, client, nil, p.clientTLS(listen.ALPNDoT), m)
		}
		return askOverProxy(t, e.addr, lb, client, m)
	}
	doh := func(header, value string) func(string, string, *dns.Msg) (*dns.Msg, error) {
		return func(_, client string, m *dns.Msg) (*dns.Msg, error) {
			r, status, err := askDoHForwarded("http://"+e.addrs["http"]+listen.DoHPath, lb, nil, m, header, strings.ReplaceAll(value, "CLIENT", client))
			if err != nil {
				return nil, err
			}
			require.Equal(t, http.StatusOK, status)
			return r, nil
		}
	}
	paths := []struct {
		name    string
		network string
		ask     func(network, client string, m *dns.Msg) (*dns.Msg, error)
	}{
		{name: "TCP, PROXY v2", network: "tcp", ask: proxied},
		{name: "DoT, PROXY v2", network: "tls", ask: proxied},
		{name: "DoH, X-Forwarded-For", ask: doh("X-Forwarded-For", "CLIENT")},
		{name: "DoH, Forwarded", ask: doh("Forwarded", `for="CLIENT:5353"`)},
	}
	cases := []struct {
		name   string
		client string // the client the proxy names
		ecs    string
		want   int
	}{
		{name: "forwarder names a government device", client: forwarder, ecs: "127.0.0.2/32", want: dns.RcodeNameError},
		{name: "forwarder names a network holding government devices", client: forwarder, ecs: "127.0.0.0/24", want: dns.RcodeNameError},
		{name: "forwarder names the press office", client: forwarder, ecs: "127.0.0.3/32", want: dns.RcodeSuccess},
		{name: "a government device cannot name the press office", client: "127.0.0.2", ecs: "127.0.0.3/32", want: dns.RcodeNameError},
		{name: "a device in no policy cannot name a government device", client: "127.0.0.10", ecs: "127.0.0.2/32", want: dns.RcodeSuccess},
	}
	for _, path := range paths {
		for _, tc := range cases {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				m := withECS(question("www.tiktok.com.", dns.TypeA, true), tc.ecs)
				r, err := path.ask(path.network, tc.client, m)
				require.NoError(t, err)
				assert.Equal(t, dns.RcodeToString[tc.want], dns.RcodeToString[r.Rcode])
				if tc.client == forwarder {
					echoed := findECS(r)
					require.NotNil(t, echoed, "the forwarder's option echoed, so that it caches per subnet")
					assert.Equal(t, echoed.SourceNetmask, echoed.SourceScope)
				} else {
					assert.Nil(t, findECS(r), "the option was not used")
				}
			})
		}
	}
	var ecsLines int
	for _, l := range e.logs.FilterMessage("query").All() {
		f := l.ContextMap()
		if f[logIdentity] == IdentityECS {
			ecsLines++
			assert.Equal(t, forwarder, f[logSource], "the source is the forwarder that wrote the option")
		}
	}
	assert.Equal(t, 3*len(paths), ecsLines)
}
