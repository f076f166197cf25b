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
	"github.com/stretchr/testify/assert"
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
	certFile, keyFile, first := unwatchedPair(t, ca, dir)
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

// unwatchedPair issues a pair into dir/real and links
// dir/certs/dnsfence.crt and dnsfence.key to it, the tls.cert and tls.key
// of the configuration: the certificate watch watches certs/, and a
// change in real/ is seen only by a SIGHUP (or the poll, a minute on).
// It returns the files in real/ and the certificate's serial number.
func unwatchedPair(t *testing.T, ca *e2eCA, dir string) (certFile, keyFile string, serial int64) {
	t.Helper()
	certFile, keyFile, serial = ca.issue(t, filepath.Join(dir, "real"), "dnsfence", e2eServerName)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "certs"), 0o755))
	require.NoError(t, os.Symlink(certFile, filepath.Join(dir, "certs", "dnsfence.crt")))
	require.NoError(t, os.Symlink(keyFile, filepath.Join(dir, "certs", "dnsfence.key")))
	return certFile, keyFile, serial
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

// linesUntilStopped reads p's log lines until its "stopped" line, 15 s at
// most, and returns their messages in order.
func linesUntilStopped(t *testing.T, p *process) []string {
	t.Helper()
	var msgs []string
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-p.lines:
			msg, _ := m["msg"].(string)
			msgs = append(msgs, msg)
			if msg == "stopped" {
				return msgs
			}
		case <-deadline:
			t.Fatalf("no stopped line: %q", msgs)
		}
	}
}

// TestSIGTERMWaitsForTheSIGHUPCertificateReload: a SIGTERM that comes
// while a SIGHUP reads the certificate (a named pipe whose writer is
// slow) stops once that read is done, the new pair reloaded, rather than
// exit under it; it waits no longer than the shutdown budget ((upstreams
// + 1) × upstream_timeout), and a read not done by then is said at warn.
func TestSIGTERMWaitsForTheSIGHUPCertificateReload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string // upstream_timeout: the budget is twice it
		written bool   // the certificate's writer writes once the listeners are done
	}{
		{"read within the budget", "5s", true},
		{"not read within the budget", "1s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newE2ECA(t, "dnsfence e2e CA")
			dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n", "dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.168.12:0"]
upstreams: ["127.0.168.13:53"]
upstream_timeout: %s
http: ""
tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}
listen_tls: ["127.0.168.12:0"]
policies:
  - name: government-devices
    clients: ["127.0.168.0/30"]
    block: ["lists/tiktok.txt"]
`, tc.timeout)})
			certFile, keyFile, _ := unwatchedPair(t, ca, dir)
			p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))

			newCert, newKey, _ := ca.issue(t, t.TempDir(), "next", e2eServerName)
			require.NoError(t, os.Rename(newKey, keyFile))
			pem, err := os.ReadFile(newCert)
			require.NoError(t, err)
			require.NoError(t, os.Remove(certFile))
			if err := syscall.Mkfifo(certFile, 0o644); err != nil {
				t.Skip("no named pipes here:", err)
			}
			w := startPipeWriter(t, certFile, string(pem))
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
			w.waitOpened(t) // the SIGHUP's certificate reload reads it
			sent := time.Now()
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			p.waitLine(t, "stopped taking queries; answering those in flight")
			if tc.written {
				w.write()
			}
			msgs := linesUntilStopped(t, p)
			const underWay = "stopped with a reload still under way; it applies nothing"
			if tc.written {
				require.Contains(t, msgs, "TLS certificate reloaded", "the stop waited for the SIGHUP's certificate reload: %q", msgs)
				require.NotContains(t, msgs, underWay)
			} else {
				require.Contains(t, msgs, underWay, "%q", msgs)
				require.NotContains(t, msgs, "TLS certificate reloaded")
			}
			p.exited(t, syscall.SIGTERM)
			assert.Less(t, time.Since(sent), 8*time.Second, "the stop waited past its budget")
		})
	}
}

// TestSIGTERMDuringSIGHUPReloadLeavesTheCertificate: a SIGHUP reload that
// a SIGTERM turns into "not applied" (it was reading a list from a named
// pipe) reloads no certificate after it either, though the pair changed:
// a stopping dnsfence applies nothing.
func TestSIGTERMDuringSIGHUPReloadLeavesTheCertificate(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": `
listen: ["127.0.168.14:0"]
upstreams: ["127.0.168.15:53"]
upstream_timeout: 5s
http: ""
reload: {debounce: 50ms}
tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}
listen_tls: ["127.0.168.14:0"]
policies:
  - name: government-devices
    clients: ["127.0.168.0/30"]
    block: ["lists/tiktok.txt"]
`})
	list := filepath.Join(dir, "lists", "tiktok.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(list), 0o755))
	if err := syscall.Mkfifo(list, 0o644); err != nil {
		t.Skip("no named pipes here:", err)
	}
	startPipeWriter(t, list, "tiktok.com\n").write() // the start's read
	certFile, keyFile, _ := unwatchedPair(t, ca, dir)
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))

	// A new pair, which a SIGHUP that completed would serve.
	newCert, newKey, _ := ca.issue(t, t.TempDir(), "next", e2eServerName)
	require.NoError(t, os.Rename(newKey, keyFile))
	require.NoError(t, os.Rename(newCert, certFile))
	w := startPipeWriter(t, list, "tiktok.com\nbytedance.com\n")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	w.waitOpened(t) // the SIGHUP's reload reads the list
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLine(t, "stopped taking queries; answering those in flight")
	w.write()
	msgs := linesUntilStopped(t, p)
	require.Contains(t, msgs, lineNotApplied, "%q", msgs)
	require.NotContains(t, msgs, "TLS certificate reloaded", "a stopping dnsfence reloaded the certificate: %q", msgs)
	p.exited(t, syscall.SIGTERM)
}
