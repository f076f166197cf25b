package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// TestSIGHUPReloadsTheCertificate: a pair rewritten where the folder watch
// cannot see it (tls.cert and tls.key are symlinks into another folder,
// as a secret mounted elsewhere or a network filesystem gives them) is
// served from the SIGHUP on, over DoT, DoH and DoQ, rather than at the
// next poll a minute later; a broken pair then (the key of another
// certificate) is refused at the next SIGHUP, said so in the log, and the
// last good pair is served on.
func TestSIGHUPReloadsTheCertificate(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n", "dnsfence.yaml": `
listen: ["127.0.168.10:0"]
upstreams: ["127.0.168.11:53"]
http: ""
tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}
listen_tls: ["127.0.168.10:0"]
listen_https: ["127.0.168.10:0"]
listen_quic: ["127.0.168.10:0"]
policies:
  - name: government-devices
    clients: ["127.0.168.0/30"]
    block: ["lists/tiktok.txt"]
`})
	real := filepath.Join(dir, "real") // the folder the pair is in; certs/ holds the links the watch watches
	certFile, keyFile, first := ca.issue(t, real, "dnsfence", e2eServerName)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "certs"), 0o755))
	require.NoError(t, os.Symlink(certFile, filepath.Join(dir, "certs", "dnsfence.crt")))
	require.NoError(t, os.Symlink(keyFile, filepath.Join(dir, "certs", "dnsfence.key")))
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	addrs := p.encryptedAddrs(t, "tls", "https", "quic")
	servedSerials := func(t *testing.T, want int64, when string) {
		t.Helper()
		for _, tr := range []string{"tls", "https", "quic"} {
			serial, err := handshakeSerial(ca, tr, addrs[tr])
			require.NoError(t, err, "%s: %s handshake", when, tr)
			require.Equal(t, want, serial, "%s: the certificate a new %s handshake presents", when, tr)
		}
	}
	servedSerials(t, first, "at start")

	// A new pair renamed over the old one, in the folder nobody watches.
	newCert, newKey, second := ca.issue(t, t.TempDir(), "next", e2eServerName)
	require.NoError(t, os.Rename(newKey, keyFile))
	require.NoError(t, os.Rename(newCert, certFile))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitLine(t, "TLS certificate reloaded")
	servedSerials(t, second, "after the SIGHUP")

	// Another certificate's key: refused, and said so; the pair served
	// stays the last good one.
	_, otherKey, _ := ca.issue(t, t.TempDir(), "other", e2eServerName)
	require.NoError(t, os.Rename(otherKey, keyFile))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	refused := p.waitLine(t, "TLS certificate reload refused, still serving the old certificate")
	require.Equal(t, "error", refused["level"])
	require.Contains(t, refused["error"], "private key does not match public key")
	servedSerials(t, second, "after a broken pair's SIGHUP")
	p.stop(t, syscall.SIGTERM)
}

// handshakeSerial makes a new handshake with the encrypted listener at
// addr of transport ("tls", "https" or "quic"), trusting ca, and returns
// the serial number of the certificate it presents.
func handshakeSerial(ca *e2eCA, transport, addr string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cs tls.ConnectionState
	switch transport {
	case "tls", "https":
		alpn := map[string]string{"tls": "dot", "https": "h2"}[transport]
		c, err := (&tls.Dialer{Config: ca.clientTLS(alpn)}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		cs = c.(*tls.Conn).ConnectionState()
	case "quic":
		c, err := quic.DialAddr(ctx, addr, ca.clientTLS("doq"), &quic.Config{})
		if err != nil {
			return 0, err
		}
		defer c.CloseWithError(0, "")
		cs = c.ConnectionState().TLS
	default:
		return 0, fmt.Errorf("no transport %q", transport)
	}
	if len(cs.PeerCertificates) == 0 {
		return 0, fmt.Errorf("%s: no certificate presented", transport)
	}
	return cs.PeerCertificates[0].SerialNumber.Int64(), nil
}
