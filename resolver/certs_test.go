package resolver

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestOpenCertificateOfAPairNotServed: OpenCertificate refuses a pair
// whose key is another certificate's, naming the configuration's line of
// tls.cert (CheckCertificate's error, not the store's); and, given no
// Metrics (a library caller's choice, as elsewhere), loads and reloads a
// good pair.
func TestOpenCertificateOfAPairNotServed(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSignedPair(t, dir, "served", []string{"dns.example.gov"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	_, otherKey := selfSignedPair(t, dir, "other", []string{"dns.example.gov"}, nil)
	load := func(key string) *config.Config {
		cfgDir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf("upstreams: [\"127.0.0.1:53\"]\ntls: {cert: %q, key: %q}\nlisten_tls: [\"127.0.0.1:0\"]\n", certFile, key)})
		cfg, err := config.Load(filepath.Join(cfgDir, "dnsfence.yaml"))
		require.NoError(t, err)
		return cfg
	}

	cert, err := OpenCertificate(zap.NewNop(), load(otherKey), nil)
	require.Error(t, err)
	assert.Nil(t, cert)
	assert.Contains(t, err.Error(), "dnsfence.yaml:2: tls.cert")
	assert.Contains(t, err.Error(), "private key does not match public key")

	cert, err = OpenCertificate(zap.NewNop(), load(keyFile), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cert.Close() })
	b, err := os.ReadFile(certFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(certFile, b, 0o600))
	cert.Reload()
	assert.Equal(t, []string{"dns.example.gov"}, cert.Store.Leaf().DNSNames)
}
