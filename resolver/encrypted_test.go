package resolver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testServerName is the name the test certificates carry (and 127.0.0.1).
const testServerName = "dns.test"

// testPKI is a CA made for one test and a server pair it signed, on disk.
type testPKI struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dnsfence resolver test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: testServerName},
		DNSNames:    []string{testServerName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	p := &testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"),
		pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	require.NoError(t, os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	require.NoError(t, os.WriteFile(p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return p
}

// clientTLS trusts the test CA, for name.
func (p *testPKI) clientTLS(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: p.pool, ServerName: testServerName, NextProtos: alpn, MinVersion: tls.VersionTLS12}
}

// encryptedFence is a fence serving testConfig on every transport.
type encryptedFence struct {
	*fence
	pki   *testPKI
	addrs map[string]string // by transport; "http" for the plain DoH listener
	cert  *Certificate
	logs  *observer.ObservedLogs
}

// encryptedConfig is testConfig with every encrypted listener on a free
// port and the test pair.
func encryptedConfig(p *testPKI) string {
	return strings.Replace(testConfig, `listen: ["127.0.0.1:0"]`, fmt.Sprintf(`listen: ["127.0.0.1:0"]
tls: {cert: %q, key: %q}
listen_tls: ["127.0.0.1:0"]
listen_https: ["127.0.0.1:0", "http://127.0.0.1:0"]
listen_quic: ["127.0.0.1:0"]`, p.certFile, p.keyFile), 1)
}

// startEncryptedFence serves text (with {{upstreams}}) as the binary does:
// the certificate opened, UDP/TCP then the encrypted listeners started.
func startEncryptedFence(t *testing.T, p *testPKI, text string, upstreams ...string) *encryptedFence {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	dir := testnet.WriteTree(t, testFiles)
	quoted := make([]string, len(upstreams))
	for i, u := range upstreams {
		quoted[i] = `"` + u + `"`
	}
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(text, "{{upstreams}}", "["+strings.Join(quoted, ", ")+"]")), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	h := NewHandler(log, snap, m)
	cert, err := OpenCertificate(log, cfg, m)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cert.Close() })
	srv := NewServer(log, h)
	require.NoError(t, srv.Start(cfg.Listen))
	require.NoError(t, srv.StartEncrypted(cfg, cert))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	e := &encryptedFence{fence: &fence{addr: srv.Addrs()[0], handler: h, server: srv, dir: dir, registry: reg}, pki: p,
		addrs: map[string]string{}, cert: cert, logs: logs}
	for _, l := range logs.FilterMessage("listening").All() {
		f := l.ContextMap()
		tr := fmt.Sprint(f["transports"].([]any)[0])
		if url, _ := f["url"].(string); strings.HasPrefix(url, "http://") {
			tr = "http"
		}
		e.addrs[tr] = f["address"].(string)
	}
	return e
}

// proxiedEncryptedConfig is encryptedConfig with 127.0.0.9 a trusted
// proxy.
func proxiedEncryptedConfig(p *testPKI) string {
	return strings.Replace(encryptedConfig(p), "blocked_ttl: 60", `blocked_ttl: 60
trusted_proxies: ["127.0.0.9/32"]`, 1)
}

// plainHTTPFrom is an HTTP client (for the http:// DoH listener) that
// connects from the local address from.
func plainHTTPFrom(from string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 5 * time.Second}
}

// dotAsk asks m over DNS over TLS from the local address from.
func (e *encryptedFence) dotAsk(from string, m *dns.Msg) (*dns.Msg, error) {
	return unpackAnswer(e.dotWire(from, m))
}

// dotWire is dotAsk's answer as its octets came.
func (e *encryptedFence) dotWire(from string, m *dns.Msg) ([]byte, error) {
	return askDoTWire(e.addrs[listen.TLS], from, e.pki.clientTLS(listen.ALPNDoT), m)
}

// dohAsk asks m over DNS over HTTPS (or plain HTTP when plain) from the
// local address from, by GET or POST.
func (e *encryptedFence) dohAsk(from string, m *dns.Msg, get, plain bool) (*dns.Msg, error) {
	return unpackAnswer(e.dohWire(from, m, get, plain))
}

// dohWire is dohAsk's answer as its octets came (the response body).
func (e *encryptedFence) dohWire(from string, m *dns.Msg, get, plain bool) ([]byte, error) {
	url := "https://" + e.addrs[listen.HTTPS] + listen.DoHPath
	if plain {
		url = "http://" + e.addrs["http"] + listen.DoHPath
	}
	return askDoHWire(url, from, e.pki.clientTLS(), m, get)
}

// doqAsk asks m over DNS over QUIC from the local address from.
func (e *encryptedFence) doqAsk(from string, m *dns.Msg) (*dns.Msg, error) {
	return unpackAnswer(e.doqWire(from, m))
}

// doqWire is doqAsk's answer as its octets came, without their length.
func (e *encryptedFence) doqWire(from string, m *dns.Msg) ([]byte, error) {
	return askDoQWire(e.addrs[listen.QUIC], from, e.pki.clientTLS(listen.ALPNDoQ), m)
}

// unpackAnswer is the message b, an answer's octets, or err.
func unpackAnswer(b []byte, err error) (*dns.Msg, error) {
	if err != nil {
		return nil, err
	}
	r := new(dns.Msg)
	return r, r.Unpack(b)
}

// askDoT asks m of the DNS over TLS server at addr from the local address
// from, with cfg.
func askDoT(addr, from string, cfg *tls.Config, m *dns.Msg) (*dns.Msg, error) {
	return unpackAnswer(askDoTWire(addr, from, cfg, m))
}

// askDoTWire is askDoT's answer as its octets came, without their length.
func askDoTWire(addr, from string, cfg *tls.Config, m *dns.Msg) ([]byte, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	dc := &dns.Conn{Conn: c}
	if err := dc.WriteMsg(m); err != nil {
		return nil, err
	}
	return dc.ReadMsgHeader(nil)
}

// askDoH asks m at the DNS over HTTPS url (or plain HTTP) from the local
// address from, with cfg, by GET or POST; an answer over HTTPS must come
// over HTTP/2 (the ALPN dnsfence is designated with). The transport is
// given a copy of cfg: net/http's Transport writes its ALPN IDs into the
// configuration it holds, which tests running side by side share.
func askDoH(url, from string, cfg *tls.Config, m *dns.Msg, get bool) (*dns.Msg, error) {
	return unpackAnswer(askDoHWire(url, from, cfg, m, get))
}

// askDoHWire is askDoH's answer as its octets came (the response body).
func askDoHWire(url, from string, cfg *tls.Config, m *dns.Msg, get bool) ([]byte, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: cfg.Clone(), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	b, err := m.Pack()
	if err != nil {
		return nil, err
	}
	resp, body, err := dohRoundTrip(c, url, get, b)
	if err != nil {
		return nil, err
	}
	if resp.TLS != nil && resp.ProtoMajor != 2 {
		return nil, fmt.Errorf("DNS over HTTPS over %s, not HTTP/2", resp.Proto)
	}
	return body, nil
}

// askDoHForwarded POSTs m to the DoH url (https:// with cfg, or http://)
// from the local address from, with header's name and value pairs added
// (Forwarded, X-Forwarded-For: a proxy's), and returns the HTTP status
// and, for 200, the answer.
func askDoHForwarded(url, from string, cfg *tls.Config, m *dns.Msg, header ...string) (*dns.Msg, int, error) {
	b, err := m.Pack()
	if err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", listen.DoHContentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: cfg.Clone(), ForceAttemptHTTP2: true} // as askDoH
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, err
	}
	r := new(dns.Msg)
	return r, resp.StatusCode, r.Unpack(body)
}

// dohRoundTrip sends the DNS message b to the DoH url by GET or POST and
// returns the response (its body read and closed) and its body; a status
// other than 200 is an error naming it and the body.
func dohRoundTrip(c *http.Client, url string, get bool, b []byte) (*http.Response, []byte, error) {
	var resp *http.Response
	var err error
	if get {
		resp, err = c.Get(url + "?dns=" + base64.RawURLEncoding.EncodeToString(b))
	} else {
		resp, err = c.Post(url, listen.DoHContentType, bytes.NewReader(b))
	}
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("http status %d: %s", resp.StatusCode, body)
	}
	return resp, body, nil
}

// askDoQ asks m of the DNS over QUIC server at addr from the local address
// from, with cfg.
func askDoQ(addr, from string, cfg *tls.Config, m *dns.Msg) (*dns.Msg, error) {
	return unpackAnswer(askDoQWire(addr, from, cfg, m))
}

// askDoQWire is askDoQ's answer as its octets came, without their length.
func askDoQWire(addr, from string, cfg *tls.Config, m *dns.Msg) ([]byte, error) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(from, "0"))
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	qt := &quic.Transport{Conn: pc}
	defer qt.Close()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := qt.Dial(ctx, raddr, cfg, &quic.Config{})
	if err != nil {
		return nil, err
	}
	defer c.CloseWithError(0, "")
	st, err := c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	q := m.Copy()
	q.Id = 0 // RFC 9250 §4.2.1
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
		return nil, err
	}
	_ = st.Close()
	out, err := io.ReadAll(st)
	if err != nil {
		return nil, err
	}
	if len(out) < 2 || int(binary.BigEndian.Uint16(out)) != len(out)-2 {
		return nil, fmt.Errorf("not one framed answer: %d octets", len(out))
	}
	return out[2:], nil
}

// asker asks a query over one transport of an encryptedFence, from a
// source address ("" for any).
type asker struct {
	name      string
	transport string
	ask       func(from string, m *dns.Msg) (*dns.Msg, error)
	// wire, for an encrypted transport, is ask's answer as its octets
	// came: the length an observer sees.
	wire func(from string, m *dns.Msg) ([]byte, error)
}

// encryptedAskers ask a query over each encrypted transport.
func encryptedAskers(e *encryptedFence) []asker {
	return []asker{
		{"tls", listen.TLS, e.dotAsk, e.dotWire},
		{"https GET", listen.HTTPS, func(from string, m *dns.Msg) (*dns.Msg, error) { return e.dohAsk(from, m, true, false) },
			func(from string, m *dns.Msg) ([]byte, error) { return e.dohWire(from, m, true, false) }},
		{"https POST", listen.HTTPS, func(from string, m *dns.Msg) (*dns.Msg, error) { return e.dohAsk(from, m, false, false) },
			func(from string, m *dns.Msg) ([]byte, error) { return e.dohWire(from, m, false, false) }},
		{"http POST behind a proxy", listen.HTTPS, func(from string, m *dns.Msg) (*dns.Msg, error) { return e.dohAsk(from, m, false, true) },
			func(from string, m *dns.Msg) ([]byte, error) { return e.dohWire(from, m, false, true) }},
		{"quic", listen.QUIC, e.doqAsk, e.doqWire},
	}
}

// everyAsker asks a query over UDP, TCP and each encrypted transport.
func everyAsker(e *encryptedFence) []asker {
	return append([]asker{
		{"udp", listen.UDP, func(from string, m *dns.Msg) (*dns.Msg, error) { return exchange(e.addr, from, "udp", m) }, nil},
		{"tcp", listen.TCP, func(from string, m *dns.Msg) (*dns.Msg, error) { return exchange(e.addr, from, "tcp", m) }, nil},
	}, encryptedAskers(e)...)
}

// TestEncryptedTransportsSamePipeline: over DNS over TLS, HTTPS (GET, POST,
// and plain HTTP for a proxy) and QUIC, the whole pipeline decides as on
// UDP: a government device gets NXDOMAIN with EDE 15 for a blocked name,
// never sent upstream; anyone else gets the upstream's answer; a client
// outside allowed_clients gets nothing at all (closed at accept); every
// query is counted with its transport.
func TestEncryptedTransportsSamePipeline(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	for _, tr := range []string{listen.TLS, listen.HTTPS, "http", listen.QUIC} {
		require.NotEmpty(t, e.addrs[tr], "listening on %s", tr)
	}
	for _, a := range encryptedAskers(e) {
		t.Run(a.name, func(t *testing.T) {
			before := up.count.Load()
			r, err := a.ask("127.0.0.2", question("www.tiktok.com.", dns.TypeA, true))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeNameError, r.Rcode)
			assert.True(t, r.Response)
			assert.True(t, r.RecursionAvailable)
			require.Len(t, r.Ns, 1)
			assert.Equal(t, "tiktok.com.", r.Ns[0].Header().Name)
			require.NotNil(t, ede(r))
			assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode)
			assert.Contains(t, ede(r).ExtraText, "government-devices")
			assert.Equal(t, before, up.count.Load(), "a blocked query never goes upstream")

			// The same name from outside the government range: the
			// upstream's answer (a fresh name each time, not a cache hit).
			name := strings.ReplaceAll(a.name, " ", "-") + ".www.tiktok.com."
			r, err = a.ask("127.0.0.8", question(name, dns.TypeA, true))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			require.Len(t, r.Answer, 1)
			assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			assert.Equal(t, before+1, up.count.Load())
			seen := up.queries()
			assert.False(t, seen[len(seen)-1].tcp, "upstream over UDP first, as for a UDP query; TCP only on truncation")

			// Outside allowed_clients (127.0.0.0/28): refused at accept.
			_, err = a.ask("127.0.0.20", question("example.org.", dns.TypeA, true))
			assert.Error(t, err)
		})
	}
	body := scrape(t, e.registry)
	for _, want := range []string{
		`dnsfence_queries_total{result="blocked",transport="tls"} 1`,
		`dnsfence_queries_total{result="blocked",transport="https"} 3`,
		`dnsfence_queries_total{result="blocked",transport="quic"} 1`,
		`dnsfence_queries_total{result="forwarded",transport="tls"} 1`,
		`dnsfence_queries_total{result="forwarded",transport="https"} 3`,
		`dnsfence_queries_total{result="forwarded",transport="quic"} 1`,
		`dnsfence_connections_refused_total{reason="not_allowed",transport="tls"} 1`,
		`dnsfence_connections_refused_total{reason="not_allowed",transport="https"} 3`,
		`dnsfence_connections_refused_total{reason="not_allowed",transport="quic"} 1`,
		`dnsfence_queries_total{result="bad_request",transport="https"} 0`,
		`dnsfence_tls_handshake_failures_total{transport="tls"} 0`,
		`dnsfence_tls_handshake_failures_total{transport="https"} 0`,
		`dnsfence_tls_handshake_failures_total{transport="quic"} 0`,
	} {
		assert.Contains(t, body, want+"\n")
	}

	// A device offering DoH's ALPN to the DoT port fails its handshake:
	// counted.
	c, err := tls.Dial("tcp", e.addrs[listen.TLS], p.clientTLS(listen.ALPNHTTP2))
	if err == nil {
		_, err = c.Read(make([]byte, 1)) // TLS 1.3 clients learn of a refusal on read
		c.Close()
	}
	require.Error(t, err)
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, e.registry), `dnsfence_tls_handshake_failures_total{transport="tls"} 1`+"\n")
	}, 5*time.Second, 10*time.Millisecond)

	// A DoH request without a query is a bad request, counted.
	resp, err := http.Get("http://" + e.addrs["http"] + listen.DoHPath)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, scrape(t, e.registry), `dnsfence_queries_total{result="bad_request",transport="https"} 1`+"\n")
	assert.Contains(t, scrape(t, e.registry), `dnsfence_tls_certificate_expiry_timestamp_seconds `)
}

// TestEncryptedAnswersNotFitted: only a UDP answer is fitted to the
// client's EDNS size. An answer larger than the query's 512-octet EDNS
// size comes whole over TLS, HTTPS and QUIC (whose peer is a
// *net.UDPAddr: the transport decides, not the address type), while UDP
// gets it truncated with TC.
func TestEncryptedAnswersNotFitted(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		for i := range 40 {
			m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "%02d %s"`, r.Question[0].Name, i, strings.Repeat("x", 60)))
		}
		return m
	})
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	query := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		m.SetEdns0(512, false)
		return m
	}
	r := ask(t, e.addr, "127.0.0.8", "udp", query("big.example."))
	assert.True(t, r.Truncated, "UDP is fitted to 512 octets")
	assert.Less(t, len(r.Answer), 41)
	for _, a := range encryptedAskers(e) {
		t.Run(a.name, func(t *testing.T) {
			for _, name := range []string{"big.example.", strings.ReplaceAll(a.name, " ", "-") + ".big.example."} { // a cache hit, then a miss
				r, err := a.ask("127.0.0.8", query(name))
				require.NoError(t, err)
				assert.Equal(t, dns.RcodeSuccess, r.Rcode)
				assert.False(t, r.Truncated, "%s: not truncated", name)
				assert.Len(t, r.Answer, 41, name)
				assert.Greater(t, r.Len(), 2048)
			}
		})
	}
}

// TestEncryptedRejectsCarryOPT: the FORMERR and NOTIMP an encrypted
// listener answers itself, before the Handler, carry an OPT record when
// the message had one, with its DO bit, over every transport as over UDP
// and TCP (RFC 6891 §7: a responder MUST include an OPT record in its
// response to a request that had one; a client otherwise takes the server
// for one without EDNS).
func TestEncryptedRejectsCarryOPT(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	twoQuestions, status := rejectedQueries()
	twoQuestions.IsEdns0().SetDo()
	for _, a := range encryptedAskers(e) {
		t.Run(a.name, func(t *testing.T) {
			for _, tc := range []struct {
				name  string
				m     *dns.Msg
				rcode int
				do    bool
			}{
				{name: "two questions", m: twoQuestions, rcode: dns.RcodeFormatError, do: true},
				{name: "opcode STATUS", m: status, rcode: dns.RcodeNotImplemented},
			} {
				r, err := a.ask("127.0.0.8", tc.m)
				require.NoError(t, err, tc.name)
				assert.Equal(t, tc.rcode, r.Rcode, tc.name)
				opt := r.IsEdns0()
				if assert.NotNil(t, opt, "%s: the query's OPT answered with one", tc.name) {
					assert.Equal(t, tc.do, opt.Do(), "%s: the DO bit echoed", tc.name)
				}
			}
		})
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// rejectedQueries are queries with EDNS that an encrypted listener answers
// itself: one with two questions (FORMERR) and one of opcode STATUS
// (NOTIMP).
func rejectedQueries() (twoQuestions, status *dns.Msg) {
	twoQuestions = question("example.org.", dns.TypeA, true)
	twoQuestions.Question = append(twoQuestions.Question, dns.Question{Name: "example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	status = question("example.org.", dns.TypeA, true)
	status.Opcode = dns.OpcodeStatus
	return twoQuestions, status
}

// TestEncryptedRejectsPadded: a padded query gets a padded answer over
// every encrypted transport, a FORMERR or NOTIMP the listener answers
// itself as much as an answer from the Handler (RFC 7830 §3: responders
// MUST pad the response to a query with the Padding option; RFC 8467
// §4.1's 468-octet blocks), so that its length does not tell an observer
// what was asked.
func TestEncryptedRejectsPadded(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	padded := func(m *dns.Msg) *dns.Msg {
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 128-m.Len()%128-4)})
		return m
	}
	twoQuestions, status := rejectedQueries()
	for _, a := range encryptedAskers(e) {
		t.Run(a.name, func(t *testing.T) {
			for _, tc := range []struct {
				name  string
				m     *dns.Msg
				rcode int
			}{
				{name: "answered", m: padded(question("www.tiktok.com.", dns.TypeA, true)), rcode: dns.RcodeNameError},
				{name: "two questions", m: padded(twoQuestions.Copy()), rcode: dns.RcodeFormatError},
				{name: "opcode STATUS", m: padded(status.Copy()), rcode: dns.RcodeNotImplemented},
			} {
				b, err := a.wire("127.0.0.2", tc.m)
				require.NoError(t, err, tc.name)
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(b), tc.name)
				assert.Equal(t, tc.rcode, r.Rcode, tc.name)
				opt := r.IsEdns0()
				require.NotNil(t, opt, tc.name)
				var pad *dns.EDNS0_PADDING
				for _, o := range opt.Option {
					if o, ok := o.(*dns.EDNS0_PADDING); ok {
						pad = o
					}
				}
				require.NotNil(t, pad, "%s: the answer carries the Padding option", tc.name)
				// Its length as it came, which an observer sees (not
				// as miekg/dns packs it again: the listener pads the
				// Handler's octets as they are).
				assert.Zero(t, len(b)%468, "%s: %d octets, not a multiple of 468", tc.name, len(b))
			}
		})
	}
}

// scrape returns the registry's metrics in the text format.
func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// answerA is a listen.Handler that answers every query inline with one A
// record.
type answerA string

func (a answerA) ServeInline(w listen.ResponseWriter, req *dns.Msg) func() {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if req.Question[0].Qtype == dns.TypeA {
		m.Answer = append(m.Answer, mustRR("%s 60 IN A %s", req.Question[0].Name, string(a)))
	}
	_ = w.WriteMsg(m)
	return nil
}

// startDoH serves h over DNS over HTTPS with p's pair on addr until the
// test ends, returning the address.
func startDoH(t *testing.T, p *testPKI, addr string, h listen.Handler) (string, error) {
	t.Helper()
	store, err := listen.NewCertStore(p.certFile, p.keyFile, listen.CertOptions{})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := listen.NewDoHServer(listen.DoHOptions{Handler: h, TLS: listen.ServerTLSConfig(store, listen.ALPNHTTP2, listen.ALPNHTTP1)})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), nil
}

// TestHTTPSUpstreamByName: an https upstream written with a host name is
// looked up through the plain upstreams of the list, verified against
// upstream_ca, and looked up again on reload: when the name moves to
// another address, the next query after a reload goes there.
func TestHTTPSUpstreamByName(t *testing.T) {
	p := newTestPKI(t)
	first, err := startDoH(t, p, "127.0.0.1:0", answerA("192.0.2.11"))
	require.NoError(t, err)
	_, port, _ := net.SplitHostPort(first)
	_, err = startDoH(t, p, "127.0.0.2:"+port, answerA("192.0.2.12"))
	if err != nil {
		t.Skipf("port %s taken on 127.0.0.2: %v", port, err)
	}
	var target atomic.Value
	target.Store("127.0.0.1")
	// The plain upstream knows dns.test only: any other name is REFUSED,
	// so an answer to another name can only have come over HTTPS.
	plain := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case !strings.EqualFold(q.Name, testServerName+"."):
			m.Rcode = dns.RcodeRefused
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, mustRR("%s 60 IN A %s", q.Name, target.Load()))
		}
		return m
	})
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", fmt.Sprintf("upstream_timeout: 2s\nupstream_strategy: ordered\nupstream_ca: %q", p.caFile), 1)
	f := startFence(t, cfg, testFiles, "https://"+testServerName+":"+port+"/dns-query", plain.addr)

	r := ask(t, f.addr, "127.0.0.8", "udp", question("one.example.", dns.TypeA, true))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "192.0.2.11", r.Answer[0].(*dns.A).A.String(), "over HTTPS to the address the plain upstream gave")
	looked := 0
	for _, q := range plain.queries() {
		if strings.EqualFold(q.msg.Question[0].Name, testServerName+".") {
			looked++
		}
	}
	assert.Positive(t, looked, "the name was looked up through the plain upstream")

	// The name moves; a reload (nothing else changed) looks it up again.
	target.Store("127.0.0.2")
	rl := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) {
		return config.Load(filepath.Join(f.dir, "dnsfence.yaml"))
	})
	before := f.handler.Snapshot().Forwarder()
	require.NoError(t, rl.Reload(false))
	assert.NotSame(t, before, f.handler.Snapshot().Forwarder(), "a reload makes the https transport anew")
	r = ask(t, f.addr, "127.0.0.8", "udp", question("two.example.", dns.TypeA, true))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "192.0.2.12", r.Answer[0].(*dns.A).A.String(), "the new address after the reload")
}

// TestCertificateReloads: the certificate reloads when its files change;
// a refused pair is logged at error with the reason and counted, the old
// pair still served (and /readyz is not its business); a good one is
// logged at info with its expiry, counted, and its expiry exported.
// Reload (SIGHUP) reads the files at once.
func TestCertificateReloads(t *testing.T) {
	p := newTestPKI(t)
	core, logs := observer.New(zapcore.InfoLevel)
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf("upstreams: [\"127.0.0.1:53\"]\ntls: {cert: %q, key: %q}\nlisten_tls: [\"127.0.0.1:0\"]\n", p.certFile, p.keyFile)})
	cfg, err := config.Load(filepath.Join(dir, "dnsfence.yaml"))
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	cert, err := OpenCertificate(zap.New(core), cfg, NewMetrics(reg))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cert.Close() })
	first := cert.Store.Leaf().Raw
	expiryIs(t, reg, cert.Store.NotAfter())

	replace := func(path, from string) {
		t.Helper()
		b, err := os.ReadFile(from)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path+".tmp", b, 0o600))
		require.NoError(t, os.Rename(path+".tmp", path))
	}
	// A key that is not the certificate's: refused, the old pair kept.
	other := newTestPKI(t)
	replace(p.keyFile, other.keyFile)
	require.Eventually(t, func() bool {
		return logs.FilterMessage("TLS certificate reload refused, still serving the old certificate").Len() == 1
	},
		10*time.Second, 10*time.Millisecond)
	refused := logs.FilterMessage("TLS certificate reload refused, still serving the old certificate").All()[0]
	assert.Equal(t, zapcore.ErrorLevel, refused.Level)
	assert.Contains(t, refused.ContextMap()["error"], "private key does not match public key")
	assert.Equal(t, first, cert.Store.Leaf().Raw, "the old pair is still served")
	assert.Contains(t, scrape(t, reg), `dnsfence_tls_certificate_reloads_total{result="failure"} 1`+"\n")

	// The matching certificate arrives: the new pair is served.
	replace(p.certFile, other.certFile)
	require.Eventually(t, func() bool { return logs.FilterMessage("TLS certificate reloaded").Len() == 1 },
		10*time.Second, 10*time.Millisecond)
	assert.Equal(t, zapcore.InfoLevel, logs.FilterMessage("TLS certificate reloaded").All()[0].Level)
	assert.NotEqual(t, first, cert.Store.Leaf().Raw)
	assert.Contains(t, scrape(t, reg), `dnsfence_tls_certificate_reloads_total{result="success"} 1`+"\n")
	expiryIs(t, reg, cert.Store.NotAfter())

	// SIGHUP with nothing changed says nothing; with a change, reloads.
	cert.Reload()
	assert.Equal(t, 1, logs.FilterMessage("TLS certificate reloaded").Len())
	var nilCert *Certificate
	nilCert.Reload() // no tls configured: nothing to do
	assert.NoError(t, nilCert.Close())
}

// gauge is the value of the unlabelled gauge called name.
// expiryIs asserts that the certificate expiry gauge holds notAfter as a
// Unix time, under its name and under the deprecated name it had first.
func expiryIs(t *testing.T, reg *prometheus.Registry, notAfter time.Time) {
	t.Helper()
	assert.Equal(t, float64(notAfter.Unix()), gauge(t, reg, "dnsfence_tls_certificate_expiry_timestamp_seconds"))
	assert.Equal(t, float64(notAfter.Unix()), gauge(t, reg, "dnsfence_tls_certificate_expiry_seconds"), "the deprecated name")
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

// TestEncryptedProxiesTrusted: who is asking, behind a proxy, on the
// encrypted transports: a DoH request's X-Forwarded-For (on the http://
// listener a TLS-terminating proxy uses) and a DoT connection's PROXY v2
// header name the client only when the peer is in trusted_proxies;
// anyone else's are ignored (DoH) or break the handshake (DoT).
func TestEncryptedProxiesTrusted(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	cfg := proxiedEncryptedConfig(p)
	e := startEncryptedFence(t, p, cfg, up.addr)

	doh := func(from string, header ...string) (*dns.Msg, int) {
		t.Helper()
		r, status, err := askDoHForwarded("http://"+e.addrs["http"]+listen.DoHPath, from, nil, question("www.tiktok.com.", dns.TypeA, true), header...)
		require.NoError(t, err)
		return r, status
	}
	xff := func(from, client string) *dns.Msg {
		t.Helper()
		r, status := doh(from, "X-Forwarded-For", client)
		require.Equal(t, http.StatusOK, status)
		return r
	}
	assert.Equal(t, dns.RcodeNameError, xff("127.0.0.9", "127.0.0.2").Rcode, "a trusted proxy names a government device")
	assert.Equal(t, dns.RcodeSuccess, xff("127.0.0.9", "127.0.0.8").Rcode, "a trusted proxy names another client")
	assert.Equal(t, dns.RcodeSuccess, xff("127.0.0.8", "127.0.0.2").Rcode, "an untrusted peer's header is ignored")
	// A proxy that appends to X-Forwarded-For (nginx, HAProxy's
	// forwardfor) passes a Forwarded header through as the device wrote
	// it: the government device 127.0.0.2 naming a client in no policy
	// there is refused, not answered for that client. Headers that agree
	// are believed.
	r, status := doh("127.0.0.9", "Forwarded", "for=127.0.0.8", "X-Forwarded-For", "127.0.0.2")
	assert.Equal(t, http.StatusBadRequest, status, "headers that disagree: %v", r)
	r, status = doh("127.0.0.9", "X-Forwarded-For", "127.0.0.8, 127.0.0.2", "Forwarded", `for="127.0.0.2:4000"`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "headers that agree name the government device")

	dot := func(from, client string) (*dns.Msg, error) {
		return askDoTOverProxy(e.addrs[listen.TLS], from, client, nil, p.clientTLS(listen.ALPNDoT), question("www.tiktok.com.", dns.TypeA, true))
	}
	r, err := dot("127.0.0.9", "127.0.0.2")
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "PROXY v2 from a trusted proxy names a government device")
	r, err = dot("127.0.0.9", "127.0.0.8")
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	_, err = dot("127.0.0.8", "127.0.0.2")
	assert.Error(t, err, "a PROXY header from anyone else is not a TLS handshake")
}

// TestDoHAnswersArePrivate: a DoH GET is one URL for every client (ID 0,
// RFC 8484 §4.1) while its answer depends on who asks, so the answer is
// marked private: a shared HTTP cache in front (a TLS-terminating proxy
// with a cache, a CDN) must not serve a client in no policy's answer to a
// government device asking the same URL (RFC 9111 §5.2.2.7).
func TestDoHAnswersArePrivate(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	m := question("www.tiktok.com.", dns.TypeA, false)
	govRcode, govCC := dohGet(t, e.addrs["http"], "127.0.0.1", m)
	otherRcode, otherCC := dohGet(t, e.addrs["http"], "127.0.0.8", m)
	require.Equal(t, dns.RcodeNameError, govRcode, "government-devices")
	require.Equal(t, dns.RcodeSuccess, otherRcode, "no policy: the same URL, another answer")
	assert.Equal(t, "private, max-age=60", govCC)
	assert.Equal(t, "private, max-age=300", otherCC)
}

// TestDoHNegativeWithoutSOANotHTTPCached: a negative answer without an
// SOA (RFC 2308 §5: SHOULD NOT be cached) gets max-age=0 over DoH, as
// dnsfence's own cache keeps it for no time; a NODATA or NXDOMAIN at the
// end of a CNAME chain among them. Before, Cache-Control said the CNAME's
// TTL (an hour here), so a browser's HTTP cache was told there is no AAAA
// for alias.example.org for an hour, the very thing 5db0b3c stopped the
// cache from doing.
func TestDoHNegativeWithoutSOANotHTTPCached(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		cname := func(target string) dns.RR {
			rr, err := dns.NewRR(q.Name + " 3600 IN CNAME " + target)
			require.NoError(t, err)
			return rr
		}
		switch q.Name {
		case "alias.example.org.": // A only: AAAA is a NODATA after the CNAME
			m.Answer = append(m.Answer, cname("v4only.example.org."))
			if q.Qtype == dns.TypeA {
				rr, err := dns.NewRR("v4only.example.org. 300 IN A 192.0.2.1")
				require.NoError(t, err)
				m.Answer = append(m.Answer, rr)
			}
		case "gone.example.org.":
			m.Rcode = dns.RcodeNameError
			m.Answer = append(m.Answer, cname("nx.example.org."))
		}
		return m
	})
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	ask := func(name string, qtype uint16) (int, string) {
		return dohGet(t, e.addrs["http"], "127.0.0.8", question(name, qtype, false))
	}
	for _, tc := range []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		maxAge string
	}{
		{"A through the CNAME: positive", "alias.example.org.", dns.TypeA, dns.RcodeSuccess, "private, max-age=300"},
		{"CNAME asked: positive", "alias.example.org.", dns.TypeCNAME, dns.RcodeSuccess, "private, max-age=3600"},
		{"NODATA after the CNAME, no SOA", "alias.example.org.", dns.TypeAAAA, dns.RcodeSuccess, "private, max-age=0"},
		{"NXDOMAIN after the CNAME, no SOA", "gone.example.org.", dns.TypeA, dns.RcodeNameError, "private, max-age=0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcode, cc := ask(tc.qname, tc.qtype)
			assert.Equal(t, tc.rcode, rcode)
			assert.Equal(t, tc.maxAge, cc)
		})
	}
}

// dohGet asks m (its ID made 0) by DoH GET from the plain-HTTP listener at
// addr, from the source address from, and returns the answer's RCODE and
// the Cache-Control header; any status but 200 fails the test.
func dohGet(t *testing.T, addr, from string, m *dns.Msg) (rcode int, cacheControl string) {
	t.Helper()
	m = m.Copy()
	m.Id = 0
	b, err := m.Pack()
	require.NoError(t, err)
	resp, err := plainHTTPFrom(from).Get("http://" + addr + listen.DoHPath + "?dns=" + base64.RawURLEncoding.EncodeToString(b))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(body))
	return r.Rcode, resp.Header.Get("Cache-Control")
}

// TestDoTPipelineAnswersInOrderOfCompletion: queries pipelined on one DNS
// over TLS connection are answered as each is ready (RFC 7858 §3.3: "MUST
// ... process such queries in parallel ... send responses out of order"),
// through the whole pipeline as TestTCPPipelineAnswersInOrderOfCompletion
// over TCP: a blocked answer, and a forwarded one, are not held behind a
// forwarded query whose upstream is slow, sent first; that one is answered
// once its upstream answers.
func TestDoTPipelineAnswersInOrderOfCompletion(t *testing.T) {
	up, letGo := startSlowUpstream(t)
	p := newTestPKI(t)
	cfg := strings.Replace(encryptedConfig(p), "upstream_timeout: 300ms", "upstream_timeout: 5s", 1)
	e := startEncryptedFence(t, p, cfg, up.addr)

	c, err := tls.Dial("tcp", e.addrs[listen.TLS], p.clientTLS(listen.ALPNDoT))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	dc := &dns.Conn{Conn: c}
	slow := question("slow.example.org.", dns.TypeA, false)
	blocked := question("www.tiktok.com.", dns.TypeA, false)
	fast := question("fast.example.org.", dns.TypeA, false)
	slow.Id, blocked.Id, fast.Id = 1, 2, 3
	for _, m := range []*dns.Msg{slow, blocked, fast} {
		require.NoError(t, dc.WriteMsg(m))
	}
	got := map[uint16]*dns.Msg{}
	for range 2 {
		r, err := dc.ReadMsg()
		require.NoError(t, err)
		got[r.Id] = r
	}
	if assert.Contains(t, got, uint16(2), "the blocked answer is not held behind the slow one") {
		assert.Equal(t, dns.RcodeNameError, got[2].Rcode)
	}
	if assert.Contains(t, got, uint16(3), "the fast answer is not held behind the slow one") {
		assert.Equal(t, dns.RcodeSuccess, got[3].Rcode)
		assert.Equal(t, "fast.example.org.", got[3].Question[0].Name)
	}
	letGo()
	r, err := dc.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(1), r.Id)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Equal(t, "slow.example.org.", r.Question[0].Name)
}

// TestKeepaliveTimeoutInQuery: an edns-tcp-keepalive option with a
// TIMEOUT (OPTION-LENGTH 2) in a query over TCP or DNS over TLS gets
// FORMERR (RFC 7828 §3.2), with an OPT, and does not go upstream; one
// without a TIMEOUT is forwarded, and over UDP and HTTPS the option is
// ignored (RFC 7828 §3.2: MUST ignore it over UDP) whatever it holds. The
// TIMEOUT was taken over TCP and DNS over TLS as over UDP. (DNS over QUIC
// closes the connection for the option at all, RFC 9250 §5.5.2: its own
// tests.)
func TestKeepaliveTimeoutInQuery(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	keepalive := func(data ...byte) *dns.Msg {
		m := question("keepalive.example.org.", dns.TypeA, true)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0TCPKEEPALIVE, Data: data}}
		return m
	}
	askers := slices.DeleteFunc(everyAsker(e), func(a asker) bool { return a.transport == listen.QUIC })
	for _, a := range askers {
		t.Run(a.name, func(t *testing.T) {
			stream := a.name == "tcp" || a.name == "tls"
			before := up.count.Load()
			r, err := a.ask("127.0.0.8", keepalive(0, 100))
			require.NoError(t, err)
			if stream {
				assert.Equal(t, dns.RcodeFormatError, r.Rcode, "a TIMEOUT: %s", dns.RcodeToString[r.Rcode])
				assert.NotNil(t, r.IsEdns0(), "the query had an OPT: so has its answer (RFC 6891 §7)")
				assert.Equal(t, before, up.count.Load(), "nothing went upstream")
			} else {
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, "a TIMEOUT, ignored: %s", dns.RcodeToString[r.Rcode])
			}
			r, err = a.ask("127.0.0.8", keepalive())
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "no TIMEOUT: %s", dns.RcodeToString[r.Rcode])
		})
	}
}

// TestUnreadOptionsIgnored: an EDNS option dnsfence does not read is
// ignored whatever its data holds (RFC 6891 §6.1.2), over UDP, TCP and
// every encrypted transport: the query is answered as if it had none, and
// the option is not echoed; the options of an OPT of VERSION 1 are that
// version's, and the query gets BADVERS (§6.1.3). Each of these got FORMERR
// (and DoQ's none of them a closed connection), miekg/dns refusing the
// whole query for data it reads otherwise (dig +ednsopt=1:ff, +ednsopt=9:
// 000001, +edns=1 +noednsneg +ednsopt=8:ff; an edns-tcp-keepalive of one
// octet, which RFC 7828 §3.2.1 has a server ignore over UDP). A keepalive
// of one octet is still FORMERR over TCP and DNS over TLS, and closes a
// DoQ connection (TestKeepaliveTimeoutInQuery's rules).
func TestUnreadOptionsIgnored(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	withOption := func(version uint8, code uint16, data ...byte) *dns.Msg {
		m := question("option.example.org.", dns.TypeA, true)
		m.IsEdns0().SetVersion(version)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: code, Data: data}}
		return m
	}
	askers := everyAsker(e)
	for i, tc := range []struct {
		name   string
		m      *dns.Msg
		rcode  int
		stream bool // over TCP, DNS over TLS and QUIC: the keepalive's rules
	}{
		{name: "LLQ of 1 octet", m: withOption(0, dns.EDNS0LLQ, 0xff), rcode: dns.RcodeSuccess},
		{name: "UPDATE-LEASE of 3 octets", m: withOption(0, dns.EDNS0UL, 0, 0, 1), rcode: dns.RcodeSuccess},
		{name: "EXPIRE of 3 octets", m: withOption(0, dns.EDNS0EXPIRE, 0, 0, 1), rcode: dns.RcodeSuccess},
		{name: "Extended DNS Error of 1 octet", m: withOption(0, dns.EDNS0EDE, 0), rcode: dns.RcodeSuccess},
		{name: "Report-Channel not a name", m: withOption(0, dns.EDNS0REPORTING, 0xff), rcode: dns.RcodeSuccess},
		{name: "ZONEVERSION of 1 octet", m: withOption(0, dns.EDNS0ZONEVERSION, 1), rcode: dns.RcodeSuccess},
		{name: "unassigned option 100", m: withOption(0, 100, 1, 2), rcode: dns.RcodeSuccess},
		{name: "keepalive of 1 octet", m: withOption(0, dns.EDNS0TCPKEEPALIVE, 1), rcode: dns.RcodeSuccess, stream: true},
		{name: "version 1, Client Subnet of 1 octet", m: withOption(1, dns.EDNS0SUBNET, 0xff), rcode: dns.RcodeBadVers},
		{name: "version 1, EXPIRE of 3 octets", m: withOption(1, dns.EDNS0EXPIRE, 0, 0, 1), rcode: dns.RcodeBadVers},
	} {
		for j, a := range askers {
			t.Run(tc.name+" "+a.name, func(t *testing.T) {
				m := tc.m.Copy()
				m.Question[0].Name = fmt.Sprintf("o%d-%d.example.org.", i, j) // not cached: each is forwarded
				before := up.count.Load()
				r, err := a.ask("127.0.0.8", m)
				if tc.stream && a.transport == listen.QUIC {
					assert.Error(t, err, "the connection closed (RFC 9250 §5.5.2)")
					return
				}
				require.NoError(t, err)
				want := tc.rcode
				if tc.stream && (a.transport == listen.TCP || a.transport == listen.TLS) {
					want = dns.RcodeFormatError
				}
				assert.Equal(t, want, r.Rcode, "%s", dns.RcodeToString[r.Rcode])
				opt := r.IsEdns0()
				if assert.NotNil(t, opt, "the query had an OPT: so has its answer (RFC 6891 §7)") {
					assert.Zero(t, opt.Version())
					for _, o := range opt.Option {
						assert.Equal(t, uint16(dns.EDNS0PADDING), o.Option(), "no option echoed but padding")
					}
				}
				if want == dns.RcodeSuccess {
					assert.NotEmpty(t, r.Answer, "the upstream's answer")
					assert.Equal(t, before+1, up.count.Load(), "forwarded")
				} else {
					assert.Equal(t, before, up.count.Load(), "nothing went upstream")
				}
			})
		}
	}
}

// TestBadVersionBeforeHeaderChecks: a message whose OPT is of VERSION 1
// gets BADVERS, with an OPT of version 0 and its DO bit, whatever its
// opcode and question count (RFC 6891 §6.1.3, as BIND answers it), over
// UDP, TCP and every encrypted transport, and nothing goes upstream: an
// unknown opcode with no question (dig +edns=1 +noednsneg +opcode=15
// +header-only), UPDATE, NOTIFY, no question and a question of a
// meta-TYPE got NOTIMP or FORMERR, the listener or the Handler deciding
// them before the version, so that a client that speaks another version
// was not told to fall back to 0. Two questions stay FORMERR (RFC 9619
// §4: MUST; BIND decides it before the version). The same messages of
// version 0 get what they got.
func TestBadVersionBeforeHeaderChecks(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	askers := everyAsker(e)
	withOpcode := func(opcode int) *dns.Msg {
		m := question("version.example.org.", dns.TypeSOA, true)
		m.Opcode = opcode
		return m
	}
	noQuestion := withOpcode(15)
	noQuestion.Question = nil
	queryNoQuestion := withOpcode(dns.OpcodeQuery)
	queryNoQuestion.Question = nil
	twoQuestions := question("version.example.org.", dns.TypeA, true)
	twoQuestions.Question = append(twoQuestions.Question, dns.Question{Name: "example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	for _, tc := range []struct {
		name     string
		m        *dns.Msg
		version0 int  // the RCODE of the same message of version 0
		formerr  bool // FORMERR of version 1 too
	}{
		{name: "opcode 15 without a question", m: noQuestion, version0: dns.RcodeNotImplemented},
		{name: "opcode STATUS", m: withOpcode(dns.OpcodeStatus), version0: dns.RcodeNotImplemented},
		{name: "UPDATE", m: withOpcode(dns.OpcodeUpdate), version0: dns.RcodeNotImplemented},
		{name: "NOTIFY", m: withOpcode(dns.OpcodeNotify), version0: dns.RcodeNotImplemented},
		{name: "no question", m: queryNoQuestion, version0: dns.RcodeFormatError},
		{name: "two questions", m: twoQuestions, version0: dns.RcodeFormatError, formerr: true},
		{name: "a meta-TYPE", m: question("version.example.org.", dns.TypeOPT, true), version0: dns.RcodeFormatError},
	} {
		for _, a := range askers {
			t.Run(tc.name+" "+a.name, func(t *testing.T) {
				for _, version := range []uint8{1, 0} {
					m := tc.m.Copy()
					m.IsEdns0().SetVersion(version)
					m.IsEdns0().SetDo()
					r, err := a.ask("127.0.0.8", m)
					require.NoError(t, err, "version %d", version)
					want := tc.version0
					if version != 0 && !tc.formerr {
						want = dns.RcodeBadVers
					}
					assert.Equal(t, want, r.Rcode, "version %d: %s", version, dns.RcodeToString[r.Rcode])
					assert.Equal(t, m.Opcode, r.Opcode, "version %d: the opcode echoed", version)
					if opt := r.IsEdns0(); assert.NotNil(t, opt, "version %d: an OPT (RFC 6891 §7)", version) {
						assert.Zero(t, opt.Version(), "the version spoken")
						assert.True(t, opt.Do(), "DO copied")
					}
				}
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestAuditLineNamesTheProxy: a query whose client a trusted proxy named
// (PROXY v2 on TCP and DoT, X-Forwarded-For on DoH) is logged with
// "identity": "proxy", the client in "client" and the proxy in "source",
// as the README says and as an ECS-named client's line has it
// (TestClientIdentityFromECS). "source" held the client a second time, so
// the audit trail did not say which load balancer or forwarder a blocked
// query came through.
func TestAuditLineNamesTheProxy(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, proxiedEncryptedConfig(p), up.addr)
	blocked := question("www.tiktok.com.", dns.TypeA, true)

	r, err := askOverProxy(t, e.addr, "127.0.0.9", "127.0.0.2", blocked)
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "tcp")

	r, err = askDoTOverProxy(e.addrs[listen.TLS], "127.0.0.9", "127.0.0.2", nil, p.clientTLS(listen.ALPNDoT), blocked)
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "tls")

	r, status, err := askDoHForwarded("http://"+e.addrs["http"]+listen.DoHPath, "127.0.0.9", nil, blocked, "X-Forwarded-For", "127.0.0.2")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "https")

	seen := map[string]bool{}
	for _, l := range e.logs.FilterMessage("query").All() {
		f := l.ContextMap()
		if f[logIdentity] != IdentityProxy {
			continue
		}
		tr := fmt.Sprint(f["transport"])
		seen[tr] = true
		assert.Equal(t, "127.0.0.2", f[logClient], tr)
		assert.Equal(t, "127.0.0.9", f[logSource], "%s: the proxy the query came through", tr)
	}
	assert.Equal(t, map[string]bool{listen.TCP: true, listen.TLS: true, listen.HTTPS: true}, seen)
}

// TestReadyzNamesAStoppedListener: a listener that stopped serving on its
// own (listen.Config.Stopped, wired to Handler.ListenerStopped) turns
// /readyz 503, naming it, so that a load balancer takes out an instance
// whose DNS over QUIC clients get no answer; the other transports still
// answer. Before, /readyz said ready and the error log alone told. Once
// the listener serves again (Handler.ListenerResumed: a DoQ listener is
// opened again) it is ready again.
func TestReadyzNamesAStoppedListener(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	srv := httptest.NewServer(HTTPHandler(e.handler, e.registry, time.Minute))
	t.Cleanup(srv.Close)
	code, body := get(t, srv.URL+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	e.handler.ListenerStopped(listen.QUIC, e.addrs[listen.QUIC], errors.New("doq: accepting: read udp: use of closed network connection"))
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not ready: the quic listener on "+e.addrs[listen.QUIC]+" stopped: doq: accepting: read udp: use of closed network connection; it is being opened again\n", body)
	r, err := e.dotAsk("127.0.0.1", question("www.example.org.", dns.TypeA, true))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the other listeners answer")

	// Opened again, it is ready; a DoH listener stopped stays named until
	// a restart.
	e.handler.ListenerStopped(listen.HTTPS, e.addrs[listen.HTTPS], errors.New("accept tcp: use of closed network connection"))
	e.handler.ListenerResumed(listen.QUIC, e.addrs[listen.QUIC])
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not ready: the https listener on "+e.addrs[listen.HTTPS]+" stopped: accept tcp: use of closed network connection; restart dnsfence\n", body)
	e.handler.ListenerResumed(listen.HTTPS, e.addrs[listen.HTTPS])
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code, body)
}

// TestStartupzNamesAListenerOnlyARestartBringsBack: /startupz, which the
// image's Docker HEALTHCHECK asks (Swarm and autoheal restart an
// unhealthy container), turns 503 while a listener that stopped serving
// on its own stays stopped until a restart (a DoH one whose socket was
// closed under it: its line says "restart dnsfence"), naming it: said
// "started: every listener answers" instead, nothing ever restarted it.
// A DNS over QUIC listener, opened again by itself, does not count; nor
// do upstreams, which stay /readyz's.
func TestStartupzNamesAListenerOnlyARestartBringsBack(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	srv := httptest.NewServer(HTTPHandler(e.handler, e.registry, time.Minute))
	t.Cleanup(srv.Close)
	code, body := get(t, srv.URL+"/startupz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "before Serving: %s", body)
	e.handler.Serving()
	code, body = get(t, srv.URL+"/startupz")
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, "started: every listener answers\n", body)

	e.handler.ListenerStopped(listen.QUIC, e.addrs[listen.QUIC], errors.New("doq: accepting: read udp: use of closed network connection"))
	code, body = get(t, srv.URL+"/startupz")
	assert.Equal(t, http.StatusOK, code, "a DoQ listener is opened again by itself: %s", body)

	e.handler.ListenerStopped(listen.HTTPS, e.addrs[listen.HTTPS], errors.New("accept tcp: use of closed network connection"))
	code, body = get(t, srv.URL+"/startupz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not serving: the https listener on "+e.addrs[listen.HTTPS]+" stopped: accept tcp: use of closed network connection; restart dnsfence\n", body)
	r, err := e.dotAsk("127.0.0.1", question("www.example.org.", dns.TypeA, true))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the other listeners answer")

	e.handler.ListenerResumed(listen.HTTPS, e.addrs[listen.HTTPS])
	e.handler.ListenerResumed(listen.QUIC, e.addrs[listen.QUIC])
	code, body = get(t, srv.URL+"/startupz")
	assert.Equal(t, http.StatusOK, code, body)
}

// TestHTTPSUpstreamByNameThroughTheSystemResolver: an https upstream
// written with a host name and no plain upstream beside it is looked up
// by the system's resolver (here from /etc/hosts: localhost), where
// TestHTTPSUpstreamByName looks it up through a plain upstream.
func TestHTTPSUpstreamByNameThroughTheSystemResolver(t *testing.T) {
	if !hostsFileNames("localhost") || !hostsFirst() {
		t.Skip("this machine's resolver may ask a DNS server for localhost: /etc/hosts does not name it, or nsswitch.conf does not read it first")
	}
	p := newTestPKI(t)
	addr, err := startDoH(t, p, "127.0.0.1:0", answerA("192.0.2.11"))
	require.NoError(t, err)
	_, port, _ := net.SplitHostPort(addr)
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", fmt.Sprintf("upstream_timeout: 2s\nupstream_ca: %q", p.caFile), 1)
	f := startFence(t, cfg, testFiles, "https://localhost:"+port+"/dns-query#"+testServerName)

	r := ask(t, f.addr, "127.0.0.8", "udp", question("one.example.", dns.TypeA, true))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "192.0.2.11", r.Answer[0].(*dns.A).A.String(), "over HTTPS to the address /etc/hosts gives localhost")
}
