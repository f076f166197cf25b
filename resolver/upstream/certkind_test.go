package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCertificateKindOfAnyVerifyError: an encrypted upstream whose
// certificate crypto/tls does not verify for a reason other than its name,
// its root or its validity (here a critical extension x509 does not know,
// RFC 5280 §4.2: "MUST reject the certificate") is counted as kind
// "certificate", and its client's EDE says so, on every encrypted
// transport, as a wrong name or an untrusted root is
// (TestForwarderEncryptedFailover): not "network", which sends an
// operator to the firewall.
func TestCertificateKindOfAnyVerifyError(t *testing.T) {
	ca, caKey := newCA(t, "dnsfence test CA for extensions")
	der, key := issueLeaf(t, &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: testServerName},
		DNSNames:     []string{testServerName},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Critical: true, Value: []byte{5, 0}},
		},
	}, ca, caKey)
	cert := tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, cert, answerWithA)
			reg := prometheus.NewRegistry()
			enc := srv.upstream(testServerName)
			f, err := New([]string{enc}, Options{Timeout: 5 * time.Second, RootCAs: roots, Metrics: NewMetrics(reg)})
			require.NoError(t, err)
			t.Cleanup(f.Close)
			resp, _, err := f.Forward(t.Context(), clientQuery("a.example.", false), false)
			assert.Nil(t, resp)
			var ue *UpstreamError
			require.ErrorAs(t, err, &ue)
			assert.Equal(t, "certificate", ue.Causes())
			code, text := ue.EDE()
			assert.Equal(t, uint16(dns.ExtendedErrorCodeNetworkError), code)
			assert.Equal(t, "upstream certificate did not verify", text)
			assert.Contains(t, upstreamErrors(t, reg, enc), "certificate")
			assert.NotContains(t, upstreamErrors(t, reg, enc), "network")
			assert.Empty(t, srv.queries(), "no query is sent over an unverified connection")
		})
	}
}
