package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCert is a self-signed certificate for dns.test valid from an hour
// ago to notAfter, with server-auth usage unless eku says otherwise, and
// its key, both PEM.
func testCert(t *testing.T, notAfter time.Time, eku ...x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "dns.test"},
		DNSNames:              []string{"dns.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           eku,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// TestCheckCertificate: the pair is read as the listeners read it, with
// the expiry returned, and every way it can be unusable is an *Error at
// tls.cert's line naming the file and the cause.
func TestCheckCertificate(t *testing.T) {
	later := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	good, goodKey := testCert(t, later)
	_, otherKey := testCert(t, later)
	expired, expiredKey := testCert(t, time.Now().Add(-time.Minute))
	client, clientKey := testCert(t, later, x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name      string
		cert, key []byte
		want      string // in the error; "" for a good pair
	}{
		{name: "good pair", cert: good, key: goodKey},
		{name: "key of another certificate", cert: good, key: otherKey, want: "private key does not match public key"},
		{name: "expired", cert: expired, key: expiredKey, want: "certificate expired"},
		{name: "not for servers", cert: client, key: clientKey, want: "does not include TLS server authentication"},
		{name: "not PEM", cert: []byte("hello\n"), key: goodKey, want: "no PEM CERTIFICATE block"},
		{name: "key and certificate swapped", cert: goodKey, key: good, want: "no PEM CERTIFICATE block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testnet.WriteTree(t, map[string]string{"certs/dnsfence.crt": string(tc.cert), "certs/dnsfence.key": string(tc.key)})
			path := filepath.Join(dir, "c.yaml")
			cfg, err := Parse(path, []byte(`upstreams: ["127.0.0.1:53"]
listen_tls: ["127.0.0.1:853"]
tls:
  cert: certs/dnsfence.crt
  key: certs/dnsfence.key
`), os.ReadFile)
			require.NoError(t, err, "the content is read by CheckCertificate, not by Parse")
			leaf, err := cfg.CheckCertificate()
			if tc.want == "" {
				require.NoError(t, err)
				assert.True(t, leaf.NotAfter.Equal(later), "expiry %s, want %s", leaf.NotAfter, later)
				return
			}
			require.Error(t, err)
			var ce *Error
			require.True(t, errors.As(err, &ce))
			assert.Equal(t, 4, ce.Line)
			assert.Equal(t, "tls.cert", ce.Key)
			assert.Contains(t, err.Error(), path+":4: tls.cert: ")
			assert.Contains(t, err.Error(), filepath.Join(dir, "certs/dnsfence.crt"))
			assert.Contains(t, err.Error(), tc.want)
			assert.Nil(t, leaf)
		})
	}

	t.Run("no tls", func(t *testing.T) {
		cfg, err := Parse("c.yaml", []byte(`upstreams: ["127.0.0.1:53"]`), nil)
		require.NoError(t, err)
		leaf, err := cfg.CheckCertificate()
		assert.NoError(t, err)
		assert.Nil(t, leaf)
	})
}

// TestEncryptedKeysAccepted: the configuration of DESIGN.md §8 parses, with
// its paths relative to the configuration file.
func TestEncryptedKeysAccepted(t *testing.T) {
	cert, key := testCert(t, time.Now().Add(time.Hour))
	dir := testnet.WriteTree(t, map[string]string{
		"certs/dnsfence.crt": string(cert), "certs/dnsfence.key": string(key), "certs/pdns-ca.pem": string(cert),
	})
	cfg, err := Parse(filepath.Join(dir, "c.yaml"), []byte(`
tls:
  cert: certs/dnsfence.crt
  key: certs/dnsfence.key
listen_tls:   ["127.0.0.1:853"]
listen_https: ["127.0.0.1:443", "https://[::1]:443", "http://127.0.0.1:8080"]
listen_quic:  ["127.0.0.1:853"]
upstreams:
  - "9.9.9.9:53"
  - "tls://9.9.9.9:853#dns.quad9.net"
  - "https://9.9.9.9/dns-query#dns.quad9.net"
  - "https://dns.quad9.net/dns-query"
  - "quic://9.9.9.9:853#dns.quad9.net"
upstream_ca: certs/pdns-ca.pem
`), os.ReadFile)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "certs/dnsfence.crt"), cfg.Path(cfg.TLS.Cert))
	assert.Equal(t, filepath.Join(dir, "certs/pdns-ca.pem"), cfg.Path(cfg.UpstreamCA))
	assert.Equal(t, []string{"127.0.0.1:853"}, cfg.ListenTLS)
	assert.Len(t, cfg.ListenHTTPS, 3)
	assert.Len(t, cfg.Upstreams, 5)
	_, err = cfg.CheckCertificate()
	assert.NoError(t, err)

	// Plain HTTP alone needs no certificate.
	_, err = Parse(filepath.Join(dir, "c.yaml"), []byte(`upstreams: ["127.0.0.1:53"]
listen_https: ["http://127.0.0.1:8080"]
`), os.ReadFile)
	assert.NoError(t, err)
}

// TestTLSListeners: the listeners dnsfence terminates TLS for are
// listen_tls, listen_https but its http:// ones, and listen_quic, in that
// order; an http:// DoH listener alone is encrypted (by the proxy in
// front) but designates nothing (RFC 9462 §4), nor does ddr: false.
func TestTLSListeners(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		cfg                  Config
		want                 []string
		encrypted, designate bool
	}{
		{name: "none", cfg: Config{DDR: true}},
		{name: "every kind", cfg: Config{DDR: true, ListenTLS: []string{"127.0.0.1:853"}, ListenHTTPS: []string{"https://[::1]:443", "http://127.0.0.1:8080/", "127.0.0.1:443"}, ListenQUIC: []string{"127.0.0.1:8853"}},
			want: []string{"127.0.0.1:853", "[::1]:443", "127.0.0.1:443", "127.0.0.1:8853"}, encrypted: true, designate: true},
		{name: "every kind, ddr false", cfg: Config{ListenTLS: []string{"127.0.0.1:853"}, ListenQUIC: []string{"127.0.0.1:8853"}},
			want: []string{"127.0.0.1:853", "127.0.0.1:8853"}, encrypted: true},
		{name: "an http:// DoH listener alone", cfg: Config{DDR: true, ListenHTTPS: []string{"http://127.0.0.1:8080"}}, encrypted: true},
		{name: "quic alone", cfg: Config{DDR: true, ListenQUIC: []string{"127.0.0.1:8853"}}, want: []string{"127.0.0.1:8853"}, encrypted: true, designate: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.cfg.TLSListeners())
			assert.Equal(t, tc.encrypted, tc.cfg.Encrypted())
			assert.Equal(t, tc.designate, tc.cfg.Designates())
		})
	}
}
