package upstream

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRebuildKeepsOrRenews: a reload keeps the running Forwarder when
// nothing about its upstreams changed, and makes a new one (which inherits
// the health learnt) when the roots change, or whenever an https upstream
// is written with a host name, so that the name is looked up anew on
// reload (DESIGN.md §8).
func TestRebuildKeepsOrRenews(t *testing.T) {
	caFile := newPKI(t).caFile
	roots1, err := LoadRoots(caFile)
	require.NoError(t, err)
	roots2, err := LoadRoots(caFile) // the same file read again: equal pools
	require.NoError(t, err)
	system, err := LoadRoots("")
	require.NoError(t, err)

	for _, tc := range []struct {
		name  string
		addrs []string
		roots [2]*x509.CertPool
		same  bool
	}{
		{name: "plain, unchanged", addrs: []string{"127.0.0.1:53"}, same: true},
		{name: "encrypted by IP, same roots read twice", addrs: []string{"tls://127.0.0.1:853#dns.test", "https://127.0.0.1/dns-query#dns.test"},
			roots: [2]*x509.CertPool{roots1, roots2}, same: true},
		{name: "upstream_ca dropped", addrs: []string{"quic://127.0.0.1:853#dns.test"}, roots: [2]*x509.CertPool{roots1, system}},
		{name: "upstream_ca added", addrs: []string{"tls://127.0.0.1:853#dns.test"}, roots: [2]*x509.CertPool{nil, roots1}},
		{name: "https by name", addrs: []string{"127.0.0.1:53", "https://dns.test/dns-query"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Timeout: time.Second, RootCAs: tc.roots[0]}
			prev, err := New(tc.addrs, opts)
			require.NoError(t, err)
			t.Cleanup(prev.Close)
			prev.upstreams[0].rtt.Store(int64(7 * time.Millisecond))
			opts.RootCAs = tc.roots[1]
			next, err := Rebuild(prev, tc.addrs, opts)
			require.NoError(t, err)
			if tc.same {
				assert.Same(t, prev, next)
				return
			}
			t.Cleanup(next.Close)
			assert.NotSame(t, prev, next)
			assert.Equal(t, int64(7*time.Millisecond), next.upstreams[0].rtt.Load(), "what was learnt is inherited")
		})
	}
}
