package upstream

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/listen"
)

// LoadRoots is the pool that verifies upstream certificates: the system's
// roots plus every certificate in caFile (`upstream_ca`, PEM; it may start
// with a byte-order mark and use CRLF line ends). caFile "" gives the
// system's roots alone. A file that cannot be read, holds no certificate, or
// holds a block that is not a certificate (a private key given by mistake),
// does not decode (cut short) or does not parse is an error naming the
// file and the block.
func LoadRoots(caFile string) (*x509.CertPool, error) {
	pool, _, err := LoadRootsSum(caFile)
	return pool, err
}

// LoadRootsSum is LoadRoots, with the SHA-256 of the caFile content the
// pool was made from (zero for caFile ""): whoever watches the file for a
// renewed bundle (a CA rotated in place) compares it with the content on
// disk, which may have changed since.
func LoadRootsSum(caFile string) (pool *x509.CertPool, sum [sha256.Size]byte, err error) {
	pool, err = x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots here: upstream_ca alone
	}
	if caFile == "" {
		return pool, sum, nil
	}
	// Through blocklist.ReadFile: configuration validation reads it on
	// every reload, and os.ReadFile's open(2) of a named pipe with no
	// writer would hold that reload, and every one after it, for ever.
	data, err := blocklist.ReadFile(caFile)
	if err != nil {
		return nil, sum, fmt.Errorf("reading upstream_ca: %w", err)
	}
	sum = sha256.Sum256(data)
	// Each block must decode where it begins (listen.DecodePEM): a
	// bundle cut short in its second root was served with its first
	// alone.
	blocks, err := listen.DecodePEM(data)
	if err != nil {
		return nil, sum, fmt.Errorf("upstream_ca %s: %w", caFile, err)
	}
	for i, block := range blocks {
		if block.Type != "CERTIFICATE" {
			return nil, sum, fmt.Errorf("upstream_ca %s: PEM block %d is a %s, not a CERTIFICATE", caFile, i+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, sum, fmt.Errorf("upstream_ca %s: PEM block %d: %w", caFile, i+1, err)
		}
		pool.AddCert(cert)
	}
	if len(blocks) == 0 {
		return nil, sum, fmt.Errorf("upstream_ca %s: no PEM certificate in it", caFile)
	}
	return pool, sum, nil
}

// clientTLS is the TLS configuration for connections to one upstream:
// TLS 1.2 or later, the certificate verified against roots (nil: the
// system's) for serverName, the given ALPN protocols, and a session cache
// for resumption (RFC 5077, RFC 8446 §2.2) so that a redial costs one round
// trip less.
func clientTLS(serverName string, roots *x509.CertPool, alpn ...string) *tls.Config {
	return &tls.Config{
		ServerName:         serverName,
		RootCAs:            roots,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         alpn,
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}
}
