package listen

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCertStoreReloadsOnChange replaces the pair the ways renewal tools
// do; each is seen and served.
func TestCertStoreReloadsOnChange(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name    string
		setup   func(t *testing.T) certFiles          // the files the store is given
		replace func(t *testing.T, f certFiles) int64 // installs a new pair, returns its serial
	}{
		{
			name:  "rewritten in place",
			setup: func(t *testing.T) certFiles { f, _ := writePair(t, ca); return f },
			replace: func(t *testing.T, f certFiles) int64 {
				c, k, serial := ca.issue(t, leafOpts{})
				require.NoError(t, os.WriteFile(f.key, k, 0o600))
				require.NoError(t, os.WriteFile(f.cert, c, 0o600))
				return serial
			},
		},
		{
			name:  "renamed over",
			setup: func(t *testing.T) certFiles { f, _ := writePair(t, ca); return f },
			replace: func(t *testing.T, f certFiles) int64 {
				c, k, serial := ca.issue(t, leafOpts{})
				renameOver(t, f.key, k)
				renameOver(t, f.cert, c)
				return serial
			},
		},
		{
			// cert-manager and Kubernetes secret volumes: tls.crt ->
			// ..data/tls.crt, ..data -> ..2024_x; a renewal makes a new
			// timestamped folder and swaps ..data in one rename.
			name: "kubernetes ..data symlink swap",
			setup: func(t *testing.T) certFiles {
				dir := t.TempDir()
				c, k, _ := ca.issue(t, leafOpts{})
				gen := filepath.Join(dir, "..gen1")
				require.NoError(t, os.Mkdir(gen, 0o700))
				require.NoError(t, os.WriteFile(filepath.Join(gen, "tls.crt"), c, 0o600))
				require.NoError(t, os.WriteFile(filepath.Join(gen, "tls.key"), k, 0o600))
				require.NoError(t, os.Symlink("..gen1", filepath.Join(dir, "..data")))
				require.NoError(t, os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt")))
				require.NoError(t, os.Symlink("..data/tls.key", filepath.Join(dir, "tls.key")))
				return certFiles{dir: dir, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
			},
			replace: func(t *testing.T, f certFiles) int64 {
				c, k, serial := ca.issue(t, leafOpts{})
				gen := filepath.Join(f.dir, "..gen2")
				require.NoError(t, os.Mkdir(gen, 0o700))
				require.NoError(t, os.WriteFile(filepath.Join(gen, "tls.crt"), c, 0o600))
				require.NoError(t, os.WriteFile(filepath.Join(gen, "tls.key"), k, 0o600))
				require.NoError(t, os.Symlink("..gen2", filepath.Join(f.dir, "..data_tmp")))
				require.NoError(t, os.Rename(filepath.Join(f.dir, "..data_tmp"), filepath.Join(f.dir, "..data")))
				return serial
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			// A poll far longer than the test: only the watch can see it.
			s, reports := startStore(t, f, time.Hour)
			before := s.Leaf().SerialNumber.Int64()
			serial := tc.replace(t, f)
			require.NotEqual(t, before, serial)
			require.Eventually(t, func() bool { return s.Leaf().SerialNumber.Int64() == serial },
				5*time.Second, 10*time.Millisecond, "the new pair is served")
			cert, err := s.GetCertificate(nil)
			require.NoError(t, err)
			assert.Equal(t, serial, cert.Leaf.SerialNumber.Int64())
			// The last report is the success; a half-written moment
			// (new key, old cert) may have been reported before it.
			var last error
			for drained := false; !drained; {
				select {
				case last = <-reports:
				default:
					drained = true
				}
			}
			assert.NoError(t, last)
		})
	}
}

// TestCertStoreKeepsOldOnBadPair: a pair that cannot be served is
// refused, reported once with the reason, and the old pair stays.
func TestCertStoreKeepsOldOnBadPair(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	tests := []struct {
		name string
		pair func(t *testing.T) (cert, key []byte)
		want string // in the error
	}{
		{"key of another certificate", func(t *testing.T) ([]byte, []byte) {
			c, _, _ := ca.issue(t, leafOpts{})
			_, k, _ := other.issue(t, leafOpts{})
			return c, k
		}, "private key does not match public key"},
		{"not PEM", func(t *testing.T) ([]byte, []byte) {
			_, k, _ := ca.issue(t, leafOpts{})
			return []byte("this is not a certificate\n"), k
		}, "no PEM CERTIFICATE block"},
		{"truncated certificate", func(t *testing.T) ([]byte, []byte) {
			c, k, _ := ca.issue(t, leafOpts{})
			return c[:len(c)/2], k
		}, "tls.cert"},
		// Caught while the writer was in the intermediate: it was served
		// as the leaf alone.
		{"chain cut short in its intermediate", func(t *testing.T) ([]byte, []byte) {
			c, k, _ := ca.issue(t, leafOpts{})
			return cat(c, ca.pemOut[:len(ca.pemOut)/2]), k
		}, "PEM block 2 does not decode"},
		{"expired", func(t *testing.T) ([]byte, []byte) {
			c, k, _ := ca.issue(t, leafOpts{notAfter: time.Now().Add(-time.Minute)})
			return c, k
		}, "certificate expired"},
		{"client certificate", func(t *testing.T) ([]byte, []byte) {
			c, k, _ := ca.issue(t, leafOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			return c, k
		}, "extended key usage"},
		{"RSA key too short to sign a handshake", func(t *testing.T) ([]byte, []byte) {
			c, k, _ := ca.issue(t, leafOpts{key: shortRSAKey(t, 768)})
			return c, k
		}, "cannot sign a TLS handshake"},
		{"ECDSA key on P-224, which TLS 1.3 cannot sign with", func(t *testing.T) ([]byte, []byte) {
			c, k, _ := ca.issue(t, leafOpts{key: ecdsaKey(t, elliptic.P224())})
			return c, k
		}, "cannot sign a TLS handshake"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, serial := writePair(t, ca)
			s, reports := startStore(t, f, time.Hour)
			c, k := tc.pair(t)
			require.NoError(t, os.WriteFile(f.key, k, 0o600))
			require.NoError(t, os.WriteFile(f.cert, c, 0o600))
			var err error
			require.Eventually(t, func() bool {
				select {
				case err = <-reports:
					return err != nil && strings.Contains(err.Error(), tc.want)
				default:
					return false
				}
			}, 5*time.Second, 10*time.Millisecond, "a report naming %q", tc.want)
			assert.Contains(t, err.Error(), "keeping the certificate expiring")
			assert.Equal(t, serial, s.Leaf().SerialNumber.Int64(), "the old pair is still served")
			// Read again: the same bad content is not reported twice.
			changed, err := s.Reload()
			assert.False(t, changed)
			assert.NoError(t, err)
		})
	}
}

// TestCertStorePollBackstop: a change the folder watch cannot see (the
// target of a symlink, rewritten in another folder) is found by the poll.
func TestCertStorePollBackstop(t *testing.T) {
	ca := newTestCA(t)
	real, _ := writePair(t, ca)
	dir := t.TempDir()
	f := certFiles{dir: dir, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	require.NoError(t, os.Symlink(real.cert, f.cert))
	require.NoError(t, os.Symlink(real.key, f.key))
	s, _ := startStore(t, f, 100*time.Millisecond)
	c, k, serial := ca.issue(t, leafOpts{})
	require.NoError(t, os.WriteFile(real.key, k, 0o600))
	require.NoError(t, os.WriteFile(real.cert, c, 0o600))
	require.Eventually(t, func() bool { return s.Leaf().SerialNumber.Int64() == serial },
		5*time.Second, 10*time.Millisecond)
}

// TestNewCertStoreRefusesBadPair: nothing is served from a bad pair at
// start either; the error names the file.
func TestNewCertStoreRefusesBadPair(t *testing.T) {
	ca := newTestCA(t)
	f, _ := writePair(t, ca)
	_, k, _ := ca.issue(t, leafOpts{})
	require.NoError(t, os.WriteFile(f.key, k, 0o600))
	_, err := NewCertStore(f.cert, f.key, CertOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), f.cert)
	_, err = NewCertStore(filepath.Join(f.dir, "missing.crt"), f.key, CertOptions{})
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestCheckPair is what `dnsfence check` says of a pair.
func TestCheckPair(t *testing.T) {
	ca := newTestCA(t)
	notAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	tests := []struct {
		name    string
		opts    leafOpts
		swapKey bool
		// chain, when set, makes tls.cert from the leaf's PEM and the
		// CA's; keyFile, the key file from the key's PEM.
		chain   func(leaf, ca []byte) []byte
		keyFile func(key []byte) []byte
		wantErr error
		want    string
		// handshake: what a real TLS handshake with the pair does
		// ("" skips it): the pair check must agree with it.
		handshake string
	}{
		{name: "good", opts: leafOpts{notAfter: notAfter}},
		{name: "expired", opts: leafOpts{notAfter: time.Now().Add(-time.Hour)}, wantErr: ErrCertExpired},
		{name: "mismatched key", swapKey: true, want: "does not match"},
		// Go's crypto/rsa signs with no RSA key under 1,024 bits (Go
		// 1.24): every handshake would end in an internal_error alert.
		{name: "RSA key of 768 bits", opts: leafOpts{notAfter: notAfter, key: shortRSAKey(t, 768)}, want: "cannot sign a TLS handshake",
			handshake: "768-bit keys are insecure"},
		{name: "RSA key of 2048 bits", opts: leafOpts{notAfter: notAfter, key: shortRSAKey(t, 2048)}, handshake: "ok"},
		// TLS 1.3 signs with ECDSA on P-256, P-384 and P-521 only (RFC
		// 8446 §4.2.3): a P-224 key parses and signs, but serves no
		// TLS 1.3 handshake, and DoQ has no other version.
		{name: "ECDSA key on P-224", opts: leafOpts{notAfter: notAfter, key: ecdsaKey(t, elliptic.P224())}, want: "cannot sign a TLS handshake",
			handshake: "unsupported certificate curve (P-224)"},
		{name: "ECDSA key on P-384", opts: leafOpts{notAfter: notAfter, key: ecdsaKey(t, elliptic.P384())}, handshake: "ok"},
		{name: "Ed25519 key", opts: leafOpts{notAfter: notAfter, key: ed25519Key(t)}, handshake: "ok"},
		{name: "leaf and intermediate", opts: leafOpts{notAfter: notAfter}, chain: func(leaf, ca []byte) []byte { return cat(leaf, ca) }},
		// tls.X509KeyPair passes over a block that does not decode: each
		// of these was served as the leaf alone, which a client that
		// needs the intermediate cannot verify.
		{name: "intermediate cut short", opts: leafOpts{notAfter: notAfter},
			chain: func(leaf, ca []byte) []byte { return cat(leaf, ca[:len(ca)/2]) }, want: "PEM block 2 does not decode"},
		{name: "intermediate's END line missing, a block after", opts: leafOpts{notAfter: notAfter},
			chain: func(leaf, ca []byte) []byte {
				return cat(leaf, []byte(strings.Replace(string(ca), "-----END CERTIFICATE-----", "", 1)), ca)
			}, want: "PEM block 2 does not decode"},
		{name: "intermediate's base64 broken", opts: leafOpts{notAfter: notAfter},
			chain: func(leaf, ca []byte) []byte {
				return cat(leaf, []byte(strings.Replace(string(ca), "\n", "\n!!!!\n", 2)))
			},
			want: "PEM block 2 does not decode"},
		{name: "key cut short", opts: leafOpts{notAfter: notAfter},
			keyFile: func(key []byte) []byte { return key[:len(key)/2] }, want: "tls.key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, k, _ := ca.issue(t, tc.opts)
			if tc.swapKey {
				_, k, _ = ca.issue(t, tc.opts)
			}
			if tc.chain != nil {
				c = tc.chain(c, ca.pemOut)
			}
			if tc.keyFile != nil {
				k = tc.keyFile(k)
			}
			cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
			require.NoError(t, os.WriteFile(cf, c, 0o600))
			require.NoError(t, os.WriteFile(kf, k, 0o600))
			if tc.handshake != "" {
				err := handshakeWith(t, ca, c, k)
				if tc.handshake == "ok" {
					require.NoError(t, err, "a real handshake with the pair")
				} else {
					require.ErrorContains(t, err, tc.handshake, "a real handshake with the pair")
				}
			}
			got, err := CheckPair(cf, kf)
			switch {
			case tc.wantErr != nil:
				assert.ErrorIs(t, err, tc.wantErr)
			case tc.want != "":
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
			default:
				require.NoError(t, err)
				assert.True(t, got.NotAfter.Equal(notAfter), "notAfter %s, want %s", got.NotAfter, notAfter)
			}
		})
	}
}

// TestParsePairByteOrderMark: a tls.cert or tls.key saved with a UTF-8
// byte order mark (Notepad's "UTF-8 with BOM"), or a chain joined with
// cat from files each saved so, is the pair it holds, served whole, as
// every other file dnsfence reads may start with one (DESIGN.md §10).
// tls.X509KeyPair reads the raw bytes, where DecodePEM's blocks were
// checked: a mark at the start of a file failed the pair ("failed to find
// any PEM data"), and one before the intermediate had it passed over and
// the leaf served alone, which `check` called good.
func TestParsePairByteOrderMark(t *testing.T) {
	ca := newTestCA(t)
	leaf, key, _ := ca.issue(t, leafOpts{notAfter: time.Now().Add(24 * time.Hour)})
	bom := []byte("\ufeff")
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }
	tests := []struct {
		name      string
		cert, key []byte
		chain     int // certificates served
	}{
		{"tls.cert starts with a byte order mark", cat(bom, leaf), key, 1},
		{"tls.key starts with a byte order mark", leaf, cat(bom, key), 1},
		{"intermediate's file with a byte order mark", cat(leaf, bom, ca.pemOut), key, 2},
		{"chain of two files each with a byte order mark", cat(bom, leaf, bom, ca.pemOut), key, 2},
		{"chain with CRLF line ends and byte order marks", crlf(cat(bom, leaf, bom, ca.pemOut)), crlf(cat(bom, key)), 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePair("c.pem", "k.pem", tc.cert, tc.key, time.Now())
			require.NoError(t, err)
			assert.Equal(t, tc.chain, len(p.cert.Certificate), "certificates served")
		})
	}
}

// cat is the parts one after the other, in a new slice.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestCheckPairNamedPipe: tls.cert read with os.ReadFile, whose open(2)
// of a named pipe with no writer waits for ever, held `check`, start and
// every reload that reads the pair (SIGHUP) for good. It must fail after
// blocklist.PipeIdle, as a list or upstream_ca does.
func TestCheckPairNamedPipe(t *testing.T) {
	idle := blocklist.PipeIdle
	blocklist.PipeIdle = 200 * time.Millisecond
	t.Cleanup(func() { blocklist.PipeIdle = idle })
	ca := newTestCA(t)
	_, k, _ := ca.issue(t, leafOpts{notAfter: time.Now().Add(time.Hour)})
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := syscall.Mkfifo(cf, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	require.NoError(t, os.WriteFile(kf, k, 0o600))
	done := make(chan error, 1)
	go func() { _, err := CheckPair(cf, kf); done <- err }()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "reading tls.cert")
	case <-time.After(5 * time.Second):
		// The goroutine stays in open(2): release it for the next tests.
		if f, err := os.OpenFile(cf, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		t.Fatal("CheckPair still reading tls.cert (a named pipe) after 5s")
	}
}

// handshakeWith runs one TLS 1.3 handshake over a pipe, the server serving
// the pair certPEM, keyPEM, the client trusting ca, and returns the
// server's error.
func handshakeWith(t *testing.T, ca *testCA, certPEM, keyPEM []byte) error {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err, "the pair parses")
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	client := tls.Client(cc, &tls.Config{RootCAs: ca.pool, ServerName: testServerName, MinVersion: tls.VersionTLS13})
	go func() { _ = client.Handshake(); cc.Close() }()
	server := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13})
	return server.Handshake()
}

// ecdsaKey is a new ECDSA key on curve.
func ecdsaKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	require.NoError(t, err)
	return k
}

// ed25519Key is a new Ed25519 key.
func ed25519Key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return k
}
