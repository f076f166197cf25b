package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// systemRootsCase names, in the environment of the test binary
// TestLoadRootsWithTheSystemRoots runs again, the case that run checks.
const systemRootsCase = "DNSFENCE_TEST_SYSTEM_ROOTS_CASE"

// TestLoadRootsWithTheSystemRoots: upstream_ca adds to the system's roots
// and does without them. The system's roots are read once a process, so
// each case runs in a test binary of its own, with SSL_CERT_FILE and
// SSL_CERT_DIR saying what the system trusts, and asks a DoT upstream
// whose certificate the system's CA signed ("system and upstream_ca"), or
// the upstream_ca's, on a machine with no system roots at all, where
// x509.SystemCertPool fails ("upstream_ca alone").
func TestLoadRootsWithTheSystemRoots(t *testing.T) {
	if name := os.Getenv(systemRootsCase); name != "" {
		systemRootsChild(t, name)
		return
	}
	pki := newPKI(t)
	other, _ := newCA(t, "another test CA")
	otherFile := filepath.Join(t.TempDir(), "other.pem")
	writePEM(t, otherFile, "CERTIFICATE", other.Raw)
	none := filepath.Join(t.TempDir(), "none")
	// SSL_CERT_FILE naming a directory: a read error other than "no such
	// file", and no roots, fail x509.SystemCertPool.
	unreadable := t.TempDir()
	for _, tc := range []struct {
		name, system, upstreamCA string
	}{
		// The upstream's CA is the system's; upstream_ca holds another.
		{"system and upstream_ca", pki.caFile, otherFile},
		// No system roots; upstream_ca is the upstream's CA.
		{"upstream_ca alone", unreadable, pki.caFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestLoadRootsWithTheSystemRoots$", "-test.count=1", "-test.timeout=60s", "-test.v")
			cmd.Env = append(os.Environ(), systemRootsCase+"="+tc.name,
				"SSL_CERT_FILE="+tc.system, "SSL_CERT_DIR="+none,
				"DNSFENCE_TEST_UPSTREAM_CA="+tc.upstreamCA, "DNSFENCE_TEST_PKI="+pki.dir)
			out, err := cmd.CombinedOutput()
			assert.NoError(t, err, "%s", out)
		})
	}
}

// systemRootsChild is one case of TestLoadRootsWithTheSystemRoots, in the
// test binary run for it.
func systemRootsChild(t *testing.T, name string) {
	if name == "upstream_ca alone" {
		_, err := x509.SystemCertPool()
		require.Error(t, err, "the case needs a machine with no system roots")
	}
	pool, err := LoadRoots(os.Getenv("DNSFENCE_TEST_UPSTREAM_CA"))
	require.NoError(t, err, name)
	require.NotNil(t, pool, name)
	dir := os.Getenv("DNSFENCE_TEST_PKI")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "good.crt"), filepath.Join(dir, "good.key"))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.192.1:0")
	require.NoError(t, err)
	srv := startDoTOn(t, ln, cert, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, "tls://"+srv.addr+"#"+testServerName, Options{Timeout: 5 * time.Second, RootCAs: pool})
	resp, err := tr.Exchange(context.Background(), clientQuery("roots.example.", false))
	require.NoError(t, err, name)
	assert.Len(t, resp.Answer, 1, name)
}
