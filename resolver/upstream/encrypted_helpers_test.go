package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testServerName is the name the test servers' good certificate carries.
const testServerName = "dns.test"

// testPKI is the certificates of a test: a trusted CA with a certificate
// for dns.test and one for another name, and an untrusted CA with a
// certificate for dns.test. Each pair is also written as PEM files.
type testPKI struct {
	dir       string
	caFile    string // the trusted CA, for LoadRoots
	good      tls.Certificate
	wrongName tls.Certificate
	untrusted tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCA(t, "dnsfence test CA")
	other, otherKey := newCA(t, "untrusted test CA")
	p := &testPKI{dir: dir, caFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.caFile, "CERTIFICATE", ca.Raw)
	p.good = newLeaf(t, dir, "good", testServerName, ca, caKey)
	p.wrongName = newLeaf(t, dir, "wrong-name", "other.test", ca, caKey)
	p.untrusted = newLeaf(t, dir, "untrusted", testServerName, other, otherKey)
	return p
}

// files are the PEM certificate chain and key of one of the pairs, by the
// name newLeaf gave it.
func (p *testPKI) files(name string) (cert, key string) {
	return filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
}

func newCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

// issueLeaf signs tmpl (its serial and names given) with ca as a server
// certificate valid from an hour ago for a day, for a new P-256 key; it
// returns the certificate's DER and the key.
func issueLeaf(t *testing.T, tmpl *x509.Certificate, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage, tmpl.ExtKeyUsage = x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	return der, key
}

// newLeaf makes a server certificate for name signed by ca, writes it (with
// the CA after it) and its key to dir/base.crt and dir/base.key.
func newLeaf(t *testing.T, dir, base, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	der, key := issueLeaf(t, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
	}, ca, caKey)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	require.NoError(t, os.WriteFile(certFile, chain, 0o600))
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	return pair
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// testOptions are the transport options of a test: the test CA trusted
// (with the system's roots), a timeout long enough for a loaded machine.
func (p *testPKI) testOptions(t *testing.T) Options {
	t.Helper()
	roots, err := LoadRoots(p.caFile)
	require.NoError(t, err)
	return Options{Timeout: 5 * time.Second, RootCAs: roots}
}

// answerWithA is what the test upstreams say: A 192.0.2.1 for the question's
// name, and when the query has EDNS, an OPT carrying Padding of their own
// (as servers pad answers to encrypted clients, RFC 8467 §4.1), which the
// transport must not pass on.
func answerWithA(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	rr, err := dns.NewRR(fmt.Sprintf("%s 300 IN A 192.0.2.1", q.Question[0].Name))
	if err != nil {
		panic(err)
	}
	m.Answer = []dns.RR{rr}
	if opt := q.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
		ropt := m.IsEdns0()
		ropt.Option = append(ropt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 100)})
	}
	return m
}

// clientQuery is a query for name as a client sends it: a random ID, RD, and
// EDNS with a buffer size and the DO bit unless noEDNS.
func clientQuery(name string, noEDNS bool) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if !noEDNS {
		q.SetEdns0(1232, true)
	}
	return q
}

// plainTestUpstream is a plain DNS server on 127.0.0.1 answering with answer.
func plainTestUpstream(t *testing.T, answer func(*dns.Msg) *dns.Msg) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if m := answer(r); m != nil {
			_ = w.WriteMsg(m)
		}
	})}
	testnet.Serve(t, srv)
	return pc.LocalAddr().String()
}

// queryRecorder keeps what a test server received.
type queryRecorder struct {
	mu      sync.Mutex
	queries [][]byte // each query's message as it came, without framing
}

func (r *queryRecorder) add(b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, append([]byte(nil), b...))
}

func (r *queryRecorder) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.queries...)
}

// failoverForwarder is a Forwarder of the encrypted upstream enc, then a
// plain one answering A 192.0.2.1 (plain), counting into reg, that sends
// no probes: only the test's queries reach the upstreams.
func failoverForwarder(t *testing.T, pki *testPKI, enc string) (f *Forwarder, plain string, reg *prometheus.Registry) {
	t.Helper()
	plain = plainTestUpstream(t, answerWithA)
	reg = prometheus.NewRegistry()
	opts := pki.testOptions(t)
	opts.Metrics = NewMetrics(reg)
	f, err := New([]string{enc, plain}, opts)
	require.NoError(t, err)
	t.Cleanup(f.Close)
	f.started.Store(true)
	return f, plain, reg
}

// checkSilentRedialled asks tr three times, of an upstream that answers
// the first query on its first connection and nothing more on it: the
// second query fails (with wantErr, when not nil), and the third must be
// answered on a second connection (connections counts the upstream's).
func checkSilentRedialled(t *testing.T, tr Transport, wantErr error, connections func() int) {
	t.Helper()
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err, "the first connection answers once")
	_, err = tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.Error(t, err, "then falls silent")
	if wantErr != nil {
		require.ErrorIs(t, err, wantErr)
	}
	resp, err := tr.Exchange(context.Background(), clientQuery("c.example.", false))
	require.NoError(t, err, "the next query goes on a new connection")
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 2, connections())
}

// sentOptionCodes asks q over tr and returns the EDNS option codes of the
// one query the test server recorded (sent), in the order it got them.
func sentOptionCodes(t *testing.T, tr Transport, q *dns.Msg, sent func() [][]byte) []uint16 {
	t.Helper()
	_, err := tr.Exchange(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, sent(), 1)
	m := new(dns.Msg)
	require.NoError(t, m.Unpack(sent()[0]))
	var codes []uint16
	if o := m.IsEdns0(); assert.NotNil(t, o, "the query sent has no OPT") {
		for _, e := range o.Option {
			codes = append(codes, e.Option())
		}
	}
	return codes
}

// twoQuestionsFail asks tr a query of two questions, which cannot be
// packed: it fails naming them, with no answer. The caller checks that
// nothing went out.
func twoQuestionsFail(t *testing.T, tr Transport) {
	t.Helper()
	two := clientQuery("one.example.", false)
	two.Question = append(two.Question, dns.Question{Name: "two.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	resp, err := tr.Exchange(context.Background(), two)
	assert.Nil(t, resp)
	assert.ErrorContains(t, err, "2 questions")
}
