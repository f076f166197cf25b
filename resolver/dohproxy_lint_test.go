package resolver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLintPlainDoHListenerWithoutTrustedProxy: an http:// DoH listener is a
// TLS-terminating proxy's backend; without the proxy in trusted_proxies its
// Forwarded and X-Forwarded-For headers are not read, and every device that
// asks through it is decided as the proxy's own address. Measured with
// serve: a request from the proxy naming 10.1.1.1, a device of the blocking
// policy's 10.0.0.0/8, for www.tiktok.com was forwarded (the proxy's
// address is in no policy), and blocked once the proxy was trusted; check
// said nothing. It is a warning at the listener's line when no
// trusted_proxies range can hold the proxy: none at all, or, for a listener
// on a loopback address (the proxy on the same host asks from loopback),
// none holding a loopback address of its family. A listener with TLS
// (https://, or HOST:PORT) is no proxy's backend, and where no policy
// blocks no device is taken out of a block: neither warns.
func TestLintPlainDoHListenerWithoutTrustedProxy(t *testing.T) {
	for _, tc := range []struct {
		name, listen, trusted, want string
		tls, noBlock                bool
	}{
		{name: "loopback listener, no trusted proxy", listen: "http://127.0.0.1:8080", trusted: "[]",
			want: `dnsfence.yaml:3: listen_https[0]: http://127.0.0.1:8080 takes DNS over HTTPS from a TLS-terminating proxy, and no trusted_proxies range holds a loopback address, which a proxy on this host asks from: its Forwarded and X-Forwarded-For headers are not read, and every device asking through it is decided as the proxy's own address, not its own; e.g. trusted_proxies: ["127.0.0.1"]`},
		{name: "IPv6 loopback listener, an IPv4 loopback trusted", listen: "http://[::1]:8080", trusted: `["127.0.0.1"]`,
			want: `listen_https[0]: http://[::1]:8080 takes DNS over HTTPS from a TLS-terminating proxy, and no trusted_proxies range holds a loopback address, which a proxy on this host asks from: its Forwarded and X-Forwarded-For headers are not read, and every device asking through it is decided as the proxy's own address, not its own; e.g. trusted_proxies: ["::1"]`},
		{name: "loopback listener, a forwarder trusted elsewhere", listen: "http://127.0.0.1:8080", trusted: `["10.9.9.9"]`,
			want: `no trusted_proxies range holds a loopback address`},
		{name: "other address, no trusted proxy", listen: "http://10.0.0.53:8080", trusted: "[]",
			want: `dnsfence.yaml:3: listen_https[0]: http://10.0.0.53:8080 takes DNS over HTTPS from a TLS-terminating proxy, and trusted_proxies is empty: its Forwarded and X-Forwarded-For headers are not read, and every device asking through it is decided as the proxy's own address, not its own; list the proxy's address in trusted_proxies`},
		{name: "loopback listener, loopback trusted", listen: "http://127.0.0.1:8080", trusted: `["127.0.0.1"]`},
		{name: "other address, a proxy trusted", listen: "http://10.0.0.53:8080", trusted: `["10.0.0.80"]`},
		{name: "a listener with TLS, no trusted proxy", listen: "https://127.0.0.1:8443", trusted: "[]", tls: true},
		{name: "no policy blocks", listen: "http://127.0.0.1:8080", trusted: "[]", noBlock: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := "upstreams: [\"127.0.0.1:53\"]\nallowed_clients: [\"127.0.0.0/8\", \"::1/128\", \"10.0.0.0/8\"]\nlisten_https: [\"" + tc.listen + "\"]\ntrusted_proxies: " + tc.trusted +
				"\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n"
			if !tc.noBlock {
				cfg += "    block: [tiktok.txt]\n"
			}
			if tc.tls {
				p := newTestPKI(t)
				cfg += fmt.Sprintf("tls: {cert: %q, key: %q}\n", p.certFile, p.keyFile)
			}
			snap, err := buildConfig(t, cfg, map[string]string{"tiktok.txt": "tiktok.com\n"})
			require.NoError(t, err)
			var got []string
			for _, w := range snap.Lint() {
				if strings.Contains(w.Msg, "TLS-terminating proxy") {
					got = append(got, w.String())
				}
			}
			if tc.want == "" {
				assert.Empty(t, got)
				return
			}
			require.Len(t, got, 1, "%q", got)
			assert.Contains(t, got[0], tc.want)
		})
	}
}
