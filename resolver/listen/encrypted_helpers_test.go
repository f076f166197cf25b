package listen

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"io"
	"maps"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// testServerName is the name every test certificate carries.
const testServerName = "dns.test"

// testCA is a certificate authority made for one test.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pemOut []byte
	pool   *x509.CertPool
	file   string // the CA certificate, PEM, for curl and kdig
	serial atomic.Int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dnsfence test CA"},
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
	ca := &testCA{cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.pemOut = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	ca.file = filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca.file, ca.pemOut, 0o600))
	ca.serial.Store(100)
	return ca
}

// leafOpts changes what issue makes.
type leafOpts struct {
	notAfter time.Time          // default: a day from now
	eku      []x509.ExtKeyUsage // default: server auth
	key      crypto.Signer      // default: a new ECDSA P-256 key
}

// shortRSAKey is an RSA key of bits bits made from two primes, as an old
// or embedded tool made them: crypto/rsa (Go 1.24) no longer generates,
// nor signs with, one shorter than 1,024 bits, yet x509 still parses it.
func shortRSAKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	e := big.NewInt(65537)
	one := big.NewInt(1)
	for {
		p, err := rand.Prime(rand.Reader, bits/2)
		require.NoError(t, err)
		q, err := rand.Prime(rand.Reader, bits-bits/2)
		require.NoError(t, err)
		n := new(big.Int).Mul(p, q)
		if p.Cmp(q) == 0 || n.BitLen() != bits {
			continue
		}
		phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
		d := new(big.Int).ModInverse(e, phi)
		if d == nil {
			continue
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: int(e.Int64())}, D: d, Primes: []*big.Int{p, q}}
		k.Precompute()
		return k
	}
}

// issue makes a leaf for testServerName and 127.0.0.1, signed by ca, and
// returns its PEM chain, its PEM key and its serial number.
func (ca *testCA) issue(t *testing.T, o leafOpts) (certPEM, keyPEM []byte, serial int64) {
	t.Helper()
	key := o.key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		key = k
	}
	serial = ca.serial.Add(1)
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(24 * time.Hour)
	}
	if o.eku == nil {
		o.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: testServerName},
		DNSNames:     []string{testServerName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  o.eku,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return certPEM, keyPEM, serial
}

// certFiles is a certificate pair on disk.
type certFiles struct {
	dir, cert, key string
}

// writePair writes a fresh pair from ca into a new folder and returns it
// with the serial.
func writePair(t *testing.T, ca *testCA) (certFiles, int64) {
	t.Helper()
	c, k, serial := ca.issue(t, leafOpts{})
	dir := t.TempDir()
	f := certFiles{dir: dir, cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	require.NoError(t, os.WriteFile(f.cert, c, 0o600))
	require.NoError(t, os.WriteFile(f.key, k, 0o600))
	return f, serial
}

// renameOver replaces path with content the way an atomic writer does.
func renameOver(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, content, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// askDoQNotReading dials addr over DoQ from the address from (any when
// empty) with stream windows of 1 KiB that it never reads open, and asks
// up to 64 queries for "big." (answers of about 60,000 octets wait for
// credit), stopping once the connection is closed. It returns the
// connection, closed at the test's end.
func askDoQNotReading(t *testing.T, ca *testCA, from, addr string) *quic.Conn {
	t.Helper()
	b, err := txtQuery("big.", 0).Pack()
	require.NoError(t, err)
	var laddr *net.UDPAddr
	if from != "" {
		laddr = &net.UDPAddr{IP: net.ParseIP(from)}
	}
	pc, err := net.ListenUDP("udp", laddr)
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	raddr, err := net.ResolveUDPAddr("udp", addr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := quic.Dial(ctx, pc, raddr, clientTLS(ca, ALPNDoQ),
		&quic.Config{InitialStreamReceiveWindow: 1 << 10, MaxStreamReceiveWindow: 1 << 10})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.CloseWithError(0, "") })
	for range 64 {
		st, err := c.OpenStreamSync(ctx)
		if err != nil {
			break // closed already
		}
		_, _ = st.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
		_ = st.Close()
	}
	return c
}

// clientTLS is a client configuration trusting ca, without session
// resumption, so that each connection sees the certificate served now.
func clientTLS(ca *testCA, alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: ca.pool, ServerName: testServerName, NextProtos: alpn, MinVersion: tls.VersionTLS12}
}

// testUpstream is a plain DNS upstream on 127.0.0.1: A 192.0.2.1 with TTL
// 300 for every name; a name under slow.test. waits until releaseSlow (or
// 10 s).
type testUpstream struct {
	addr    string
	waiting atomic.Int64 // slow queries waiting now

	mu   sync.Mutex
	gate chan struct{} // closed by releaseSlow
}

// releaseSlow answers every slow query waiting now.
func (u *testUpstream) releaseSlow() {
	u.mu.Lock()
	defer u.mu.Unlock()
	close(u.gate)
	u.gate = make(chan struct{})
}

func (u *testUpstream) currentGate() chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gate
}

func newTestUpstream(t *testing.T) *testUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	u := &testUpstream{addr: pc.LocalAddr().String(), gate: make(chan struct{})}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		if dns.IsSubDomain("slow.test.", q.Name) {
			gate := u.currentGate()
			u.waiting.Add(1)
			select {
			case <-gate:
			case <-time.After(10 * time.Second):
			}
			u.waiting.Add(-1)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 300 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(1232, opt.Do())
		}
		_ = w.WriteMsg(m)
	})}
	testnet.Serve(t, srv)
	t.Cleanup(u.releaseSlow) // before the server's shutdown: cleanups run last first
	return u
}

// seen is what the test handler learnt of one query.
type seen struct {
	transport string
	remote    net.Addr
	id        uint16
	received  []byte // the message's octets, as the writer's Received gave them
}

// testHandler is the listen.Handler of these tests: names under
// blocked.test. get NXDOMAIN inline (with an SOA of TTL 60 and EDE 15
// when the query has EDNS), names under drop.test. no answer, every other
// query is forwarded to the upstream from resume.
type testHandler struct {
	upstream string

	mu       sync.Mutex
	seen     map[string]seen // by QNAME
	inflight atomic.Int64
	maxIn    atomic.Int64 // the most queries in progress at once
	resumed  atomic.Int64 // queries answered through resume
}

var _ Handler = (*testHandler)(nil)

func newTestHandler(u *testUpstream) *testHandler {
	return &testHandler{upstream: u.addr, seen: map[string]seen{}}
}

func (h *testHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	q := req.Question[0]
	h.mu.Lock()
	s := seen{transport: w.Transport(), remote: w.RemoteAddr(), id: req.Id}
	if r, ok := w.(Received); ok {
		s.received = slices.Clone(r.Received())
	}
	h.seen[strings.ToLower(q.Name)] = s
	h.mu.Unlock()
	if dns.IsSubDomain("drop.test.", strings.ToLower(q.Name)) {
		return nil // no answer at all
	}
	if dns.IsSubDomain("blocked.test.", strings.ToLower(q.Name)) {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNameError)
		m.RecursionAvailable = true
		soa, _ := dns.NewRR("blocked.test. 60 IN SOA blocked.test. hostmaster.blocked.test. 1 3600 600 86400 60")
		m.Ns = append(m.Ns, soa)
		if req.IsEdns0() != nil {
			m.SetEdns0(1232, false)
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeBlocked, ExtraText: "test"})
		}
		_ = w.WriteMsg(m)
		return nil
	}
	return func() {
		n := h.inflight.Add(1)
		defer h.inflight.Add(-1)
		for {
			old := h.maxIn.Load()
			if n <= old || h.maxIn.CompareAndSwap(old, n) {
				break
			}
		}
		h.resumed.Add(1)
		fwd := req.Copy()
		fwd.Id = dns.Id()
		c := &dns.Client{Net: "udp", Timeout: 15 * time.Second}
		resp, _, err := c.Exchange(fwd, h.upstream)
		if err != nil {
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
			_ = w.WriteMsg(m)
			return
		}
		resp.Id = req.Id
		_ = w.WriteMsg(resp)
	}
}

func (h *testHandler) seenFor(name string) (seen, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.seen[dns.Fqdn(strings.ToLower(name))]
	return s, ok
}

// counts is a Counter that remembers.
type counts struct {
	mu sync.Mutex
	m  map[string]int // "transport/result"
}

func (c *counts) count(transport, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[transport+"/"+result]++
}

func (c *counts) get(transport, result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[transport+"/"+result]
}

// all is a copy of every count, keyed "transport/result".
func (c *counts) all() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// query builds a query for name (type A) with ID 0 and EDNS.
func query(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Id = 0
	m.SetEdns0(1232, false)
	return m
}

func mustPack(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	require.NoError(t, err)
	return b
}

// dotExchange sends m over an established DNS over TLS (or TCP) stream and
// reads one answer.
func streamExchange(c net.Conn, m *dns.Msg) (*dns.Msg, error) {
	b, err := m.Pack()
	if err != nil {
		return nil, err
	}
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	if _, err := c.Write(append(frame, b...)); err != nil {
		return nil, err
	}
	var n uint16
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	return r, r.Unpack(buf)
}

// startStore loads files into a CertStore watching them, with a short
// debounce and poll, reporting to the returned channel.
func startStore(t *testing.T, f certFiles, poll time.Duration) (*CertStore, chan error) {
	t.Helper()
	reports := make(chan error, 100)
	s, err := NewCertStore(f.cert, f.key, CertOptions{Debounce: 50 * time.Millisecond, Poll: poll,
		OnReload: func(_ time.Time, err error) {
			select {
			case reports <- err:
			default:
			}
		}})
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() { _ = s.Close() })
	return s, reports
}

// trustNone is a Trusted function that trusts nobody.
func trustNone(netip.Addr) bool { return false }
