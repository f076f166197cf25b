package main

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
	binenc "encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The end-to-end tests of the encrypted transports (DESIGN.md §8) run the
// built binary against real clients: kdig (+tls, +https), curl, and a Go
// DNS over QUIC client, with certificates made in the test.

// e2eServerName is the name the test certificates are issued for.
const e2eServerName = "dns.test"

// e2eCA is a certificate authority made for one test.
type e2eCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	file   string // the CA certificate, PEM
	pool   *x509.CertPool
	serial atomic.Int64
}

func newE2ECA(t *testing.T, cn string) *e2eCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	ca := &e2eCA{cert: cert, key: key, file: filepath.Join(t.TempDir(), "ca.pem"), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	require.NoError(t, os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	ca.serial.Store(100)
	return ca
}

// issue writes a server pair for name (and 127.0.0.1) into dir as
// base.crt and base.key, and returns the files and the serial number.
func (ca *e2eCA) issue(t *testing.T, dir, base, name string) (certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial = ca.serial.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile, serial
}

// clientTLS trusts ca alone, for e2eServerName, without session
// resumption (each connection a full handshake).
func (ca *e2eCA) clientTLS(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: ca.pool, ServerName: e2eServerName, NextProtos: alpn, MinVersion: tls.VersionTLS12}
}

// freePort is a loopback TCP port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// encryptedAddrs reads the listening lines that follow the first one
// (startBinary's) until every transport asked for has an address:
// "tls", "https", "http" (DoH without TLS) and "quic".
func (p *process) encryptedAddrs(t *testing.T, want ...string) map[string]string {
	t.Helper()
	addrs := map[string]string{}
	deadline := time.After(20 * time.Second)
	for {
		done := true
		for _, w := range want {
			done = done && addrs[w] != ""
		}
		if done {
			return addrs
		}
		select {
		case m := <-p.lines:
			if m["msg"] != "listening" {
				continue
			}
			trs, _ := m["transports"].([]any)
			if len(trs) != 1 {
				continue
			}
			tr := fmt.Sprint(trs[0])
			if url, _ := m["url"].(string); strings.HasPrefix(url, "http://") {
				tr = "http"
			}
			addrs[tr], _ = m["address"].(string)
		case err := <-p.done:
			t.Fatalf("dnsfence exited: %v", err)
		case <-deadline:
			t.Fatalf("no listening line for every one of %v: %v", want, addrs)
		}
	}
}

// kdig runs kdig against addr with args and returns its output.
func kdig(t *testing.T, ca *e2eCA, addr string, args ...string) string {
	t.Helper()
	bin := testnet.NeedProgram(t, "kdig", "knot-dnsutils")
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	all := append([]string{"@" + host, "-p", port, "+tls-ca=" + ca.file, "+tls-hostname=" + e2eServerName, "+time=5", "+retry=0"}, args...)
	out, err := exec.Command(bin, all...).CombinedOutput()
	require.NoError(t, err, "kdig %v: %s", all, out)
	return string(out)
}

// kdigStatus is the RCODE in kdig's output.
func kdigStatus(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`status: ([A-Z]+)`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	return m[1]
}

// curlDoH asks m of the DoH listener at addr with curl, by POST or GET,
// from the local address from, and returns the HTTP status, the HTTP
// version and the answer (nil unless 200).
func curlDoH(t *testing.T, ca *e2eCA, addr, from string, m *dns.Msg, get bool) (status, version string, answer *dns.Msg) {
	t.Helper()
	bin := testnet.NeedProgram(t, "curl", "curl")
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	wire, err := m.Pack()
	require.NoError(t, err)
	dir := t.TempDir()
	body := filepath.Join(dir, "answer")
	args := []string{"-sS", "--max-time", "10", "--cacert", ca.file, "--resolve", e2eServerName + ":" + port + ":127.0.0.1",
		"--interface", from, "-o", body, "-w", "%{http_code} %{http_version}"}
	url := "https://" + e2eServerName + ":" + port + "/dns-query"
	if get {
		args = append(args, url+"?dns="+base64.RawURLEncoding.EncodeToString(wire))
	} else {
		q := filepath.Join(dir, "query")
		require.NoError(t, os.WriteFile(q, wire, 0o600))
		args = append(args, "-H", "Content-Type: application/dns-message", "--data-binary", "@"+q, url)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "curl %v: %s", args, out)
	status, version, _ = strings.Cut(strings.TrimSpace(string(out)), " ")
	if status != "200" {
		return status, version, nil
	}
	b, err := os.ReadFile(body)
	require.NoError(t, err)
	answer = new(dns.Msg)
	require.NoError(t, answer.Unpack(b))
	return status, version, answer
}

// doqAsk asks m over DNS over QUIC at addr from the local address from,
// trusting ca.
func doqAsk(ca *e2eCA, addr, from string, m *dns.Msg) (*dns.Msg, error) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(from, "0"))
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tr.Dial(ctx, raddr, ca.clientTLS("doq"), &quic.Config{})
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
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(append(binenc.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
		return nil, err
	}
	_ = st.Close() // STREAM FIN: the query is complete
	out, err := io.ReadAll(st)
	if err != nil {
		return nil, err
	}
	if len(out) < 2 || int(binenc.BigEndian.Uint16(out)) != len(out)-2 {
		return nil, fmt.Errorf("not one framed answer: %d octets", len(out))
	}
	r := new(dns.Msg)
	return r, r.Unpack(out[2:])
}

// ednsQuery is a query for name A with EDNS.
func ednsQuery(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.SetEdns0(1232, false)
	return m
}

// answerEDE is the Extended DNS Error of m, or nil.
func answerEDE(m *dns.Msg) *dns.EDNS0_EDE {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// metricsText scrapes the binary's /metrics at addr and returns its
// dnsfence_ lines (so that a failed assertion prints only those).
func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out strings.Builder
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "dnsfence_") && !strings.HasSuffix(line, " 0\n") {
			out.WriteString(line)
		}
	}
	return out.String()
}

// encryptedFiles is a configuration serving every transport with a fresh
// pair, the government range 127.0.0.0/30 blocking tiktok.com, and
// extra lines; it returns the configuration's path.
func encryptedFiles(t *testing.T, ca *e2eCA, upstreams []string, extra string) (config, certFile, keyFile string) {
	t.Helper()
	quoted := make([]string, len(upstreams))
	for i, u := range upstreams {
		quoted[i] = fmt.Sprintf("%q", u)
	}
	dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n"})
	certFile, keyFile, _ = ca.issue(t, filepath.Join(dir, "certs"), "dnsfence", e2eServerName)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), fmt.Appendf(nil, `
listen: ["127.0.0.1:0"]
upstreams: [%s]
tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}
listen_tls: ["127.0.0.1:0"]
listen_https: ["127.0.0.1:0"]
listen_quic: ["127.0.0.1:0"]
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
%s`, strings.Join(quoted, ", "), extra), 0o644))
	return filepath.Join(dir, "dnsfence.yaml"), certFile, keyFile
}

// TestEncryptedEndToEnd drives the built binary with real clients over
// each encrypted transport (kdig +tls, kdig +https, curl POST and GET, a
// Go DoQ client): from the government range (127.0.0.1) a blocked name
// gets NXDOMAIN with EDE 15 and never reaches the upstream; from outside
// it (127.0.1.1) the upstream's answer. /metrics counts each transport.
func TestEncryptedEndToEnd(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	upstream, count := testUpstream(t)
	httpAddr := "127.0.0.1:" + freePort(t)
	config, _, _ := encryptedFiles(t, ca, []string{upstream}, fmt.Sprintf("http: %q\n", httpAddr))
	p := startBinary(t, "-config", config)
	addrs := p.encryptedAddrs(t, "tls", "https", "quic")

	for _, tc := range []struct {
		name string
		// ask asks name from the local address from: the RCODE, the EDE
		// code (-1 without), and the first A record ("" without).
		ask func(t *testing.T, from, name string) (rcode string, ede int, a string)
	}{
		{"kdig +tls", func(t *testing.T, from, name string) (string, int, string) {
			return parseKdig(t, kdig(t, ca, addrs["tls"], "-b", from, "+tls", name))
		}},
		{"kdig +https", func(t *testing.T, from, name string) (string, int, string) {
			return parseKdig(t, kdig(t, ca, addrs["https"], "-b", from, "+https", name))
		}},
		{"kdig +https-get", func(t *testing.T, from, name string) (string, int, string) {
			return parseKdig(t, kdig(t, ca, addrs["https"], "-b", from, "+https-get", name))
		}},
		{"curl POST", func(t *testing.T, from, name string) (string, int, string) {
			status, version, r := curlDoH(t, ca, addrs["https"], from, ednsQuery(name), false)
			require.Equal(t, "200", status)
			assert.Equal(t, "2", version, "HTTP/2")
			return parseMsg(r)
		}},
		{"curl GET", func(t *testing.T, from, name string) (string, int, string) {
			status, _, r := curlDoH(t, ca, addrs["https"], from, ednsQuery(name), true)
			require.Equal(t, "200", status)
			return parseMsg(r)
		}},
		{"Go DoQ", func(t *testing.T, from, name string) (string, int, string) {
			r, err := doqAsk(ca, addrs["quic"], from, ednsQuery(name))
			require.NoError(t, err)
			return parseMsg(r)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := count.Load()
			rcode, ede, a := tc.ask(t, "127.0.0.1", "www.tiktok.com")
			assert.Equal(t, "NXDOMAIN", rcode, "a government device")
			assert.Equal(t, int(dns.ExtendedErrorCodeBlocked), ede, "EDE 15 (Blocked)")
			assert.Empty(t, a)
			assert.Equal(t, before, count.Load(), "a blocked query never reaches the upstream")

			// A fresh name, so that the answer comes from the upstream.
			name := strings.NewReplacer(" ", "-", "+", "").Replace(tc.name) + ".www.tiktok.com"
			rcode, _, a = tc.ask(t, "127.0.1.1", name)
			assert.Equal(t, "NOERROR", rcode, "outside the government range")
			assert.Equal(t, "192.0.2.1", a, "the upstream's answer")
			assert.Equal(t, before+1, count.Load())
		})
	}
	body := metricsText(t, httpAddr)
	for _, want := range []string{
		`dnsfence_queries_total{result="blocked",transport="tls"} 1`,
		`dnsfence_queries_total{result="blocked",transport="https"} 4`,
		`dnsfence_queries_total{result="blocked",transport="quic"} 1`,
		`dnsfence_queries_total{result="forwarded",transport="tls"} 1`,
		`dnsfence_queries_total{result="forwarded",transport="https"} 4`,
		`dnsfence_queries_total{result="forwarded",transport="quic"} 1`,
	} {
		assert.Contains(t, body, want+"\n")
	}
	assert.Regexp(t, `dnsfence_tls_certificate_expiry_timestamp_seconds \d`, body)
	p.stop(t, syscall.SIGTERM)
}

// parseKdig reads the RCODE, the EDE code (-1 without) and the first A
// record ("" without) from kdig's output.
func parseKdig(t *testing.T, out string) (rcode string, ede int, a string) {
	t.Helper()
	ede = -1
	if m := regexp.MustCompile(`EDE: (\d+) \(`).FindStringSubmatch(out); m != nil {
		_, _ = fmt.Sscan(m[1], &ede)
	}
	if m := regexp.MustCompile(`(?m)^[^;\s]\S*\s+\d+\s+IN\s+A\s+(\S+)`).FindStringSubmatch(out); m != nil {
		a = m[1]
	}
	return kdigStatus(t, out), ede, a
}

// parseMsg is parseKdig for a message.
func parseMsg(r *dns.Msg) (rcode string, ede int, a string) {
	ede = -1
	if e := answerEDE(r); e != nil {
		ede = int(e.InfoCode)
	}
	for _, rr := range r.Answer {
		if rec, ok := rr.(*dns.A); ok {
			a = rec.A.String()
			break
		}
	}
	return dns.RcodeToString[r.Rcode], ede, a
}

// dohClient is an HTTP/2 client of the test's DoH listener that keeps
// every request on one connection (MaxConnsPerHost 1: requests beyond the
// server's stream limit wait for a stream; Go's
// StrictMaxConcurrentRequests stalls here instead).
func dohClient(ca *e2eCA) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   ca.clientTLS(),
		ForceAttemptHTTP2: true,
		MaxConnsPerHost:   1,
	}}
}

// dohPost asks m by POST with c and returns the status and the answer.
func dohPost(c *http.Client, addr string, m *dns.Msg) (int, *dns.Msg, error) {
	b, err := m.Pack()
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Post("https://"+addr+"/dns-query", "application/dns-message", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, err
	}
	r := new(dns.Msg)
	return resp.StatusCode, r, r.Unpack(body)
}

// TestEncryptedHostileInputEndToEnd: a TLS handshake that stalls is
// closed at limits.tcp_read_timeout, on DoT and DoH; a 70 KB POST gets
// 413 and a 10 KB dns= 414, counted as bad_request; one client's 1,000
// streams on one connection are all answered; and through all of it
// another client's queries are answered at once.
func TestEncryptedHostileInputEndToEnd(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	upstream, _ := testUpstream(t)
	httpAddr := "127.0.0.1:" + freePort(t)
	config, _, _ := encryptedFiles(t, ca, []string{upstream},
		fmt.Sprintf("http: %q\nlog: {queries: none}\nrate_limit: {rate: 0}\nlimits: {tcp_read_timeout: 1s}\n", httpAddr))
	p := startBinary(t, "-config", config)
	addrs := p.encryptedAddrs(t, "tls", "https", "quic")
	others := dohClient(ca)
	othersUnaffected := func(t *testing.T) {
		t.Helper()
		start := time.Now()
		status, r, err := dohPost(others, addrs["https"], ednsQuery("www.tiktok.com"))
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		rcode, _, _ := parseKdig(t, kdig(t, ca, addrs["tls"], "+tls", "www.tiktok.com"))
		assert.Equal(t, "NXDOMAIN", rcode)
		assert.Less(t, time.Since(start), 5*time.Second)
	}

	t.Run("stalled handshakes", func(t *testing.T) {
		for _, tr := range []string{"tls", "https"} {
			c, err := net.Dial("tcp", addrs[tr])
			require.NoError(t, err)
			defer c.Close()
			// Half a TLS record header, then nothing.
			_, err = c.Write([]byte{0x16, 0x03})
			require.NoError(t, err)
			othersUnaffected(t)
			require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
			start := time.Now()
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			assert.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: the server closed the stalled connection: %v", tr, err)
			assert.Less(t, time.Since(start), 8*time.Second, tr)
		}
	})

	t.Run("oversized requests", func(t *testing.T) {
		c := dohClient(ca)
		resp, err := c.Post("https://"+addrs["https"]+"/dns-query", "application/dns-message", bytes.NewReader(make([]byte, 70<<10)))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "a 70 KB POST")
		resp, err = c.Get("https://" + addrs["https"] + "/dns-query?dns=" + strings.Repeat("A", 10<<10))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusRequestURITooLong, resp.StatusCode, "a 10 KB dns=")
		resp, err = c.Get("https://" + addrs["https"] + "/dns-query")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "no dns=")
		othersUnaffected(t)
		assert.Contains(t, metricsText(t, httpAddr), `dnsfence_queries_total{result="bad_request",transport="https"} 3`+"\n")
	})

	t.Run("1,000 streams on one connection", func(t *testing.T) {
		c := dohClient(ca)
		// The connection's first request, alone: a connection must bring
		// one within twice tcp_read_timeout (2 s here) of its accept, and
		// the handshake and that request, made while 1,000 goroutines
		// start, took longer on a busy machine under -race (2 of the
		// streams then failed with EOF as the connection closed).
		status, r, err := dohPost(c, addrs["https"], ednsQuery("first.www.tiktok.com"))
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, dns.RcodeNameError, r.Rcode)
		var wg sync.WaitGroup
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		for i := range 1000 {
			wg.Go(func() {
				status, r, err := dohPost(c, addrs["https"], ednsQuery(fmt.Sprintf("s%d.www.tiktok.com", i)))
				if err == nil && status == http.StatusOK && r.Rcode == dns.RcodeNameError {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d: %v", status, err))
				}
			})
		}
		othersUnaffected(t)
		wg.Wait()
		assert.EqualValues(t, 1000, ok.Load(), "every stream answered (%d failed, the first: %v)", failed.Load(), firstErr.Load())
		othersUnaffected(t)
	})
	p.stop(t, syscall.SIGTERM)
}

// answeringUpstream answers A ip for every name, on UDP and TCP, counting
// the queries.
func answeringUpstream(t *testing.T, ip string) (string, *atomic.Int64) {
	t.Helper()
	count := new(atomic.Int64)
	addr := serveUDPAndTCP(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		count.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A " + ip)
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	}))
	return addr, count
}

// encryptedUpstream is a second dnsfence serving DoT, DoH and DoQ with
// the pair certFile/keyFile, forwarding to a plain upstream that answers
// A ip: an encrypted upstream for the dnsfence under test.
type encryptedUpstream struct {
	addrs   map[string]string
	queries *atomic.Int64 // queries its own upstream received
}

func startEncryptedUpstream(t *testing.T, certFile, keyFile, ip string) *encryptedUpstream {
	t.Helper()
	up, count := answeringUpstream(t, ip)
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: [%q]
http: ""
log: {queries: none}
tls: {cert: %q, key: %q}
listen_tls: ["127.0.0.1:0"]
listen_https: ["127.0.0.1:0"]
listen_quic: ["127.0.0.1:0"]
`, up, certFile, keyFile)})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	return &encryptedUpstream{addrs: p.encryptedAddrs(t, "tls", "https", "quic"), queries: count}
}

// forwarder runs the binary forwarding to upstreams (in order, with
// extra configuration lines, which set http or turn it off) and returns it.
func forwarder(t *testing.T, upstreams []string, extra string) *process {
	t.Helper()
	quoted := make([]string, len(upstreams))
	for i, u := range upstreams {
		quoted[i] = fmt.Sprintf("%q", u)
	}
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: [%s]
upstream_strategy: ordered
%s`, strings.Join(quoted, ", "), extra)})
	return startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
}

// TestEncryptedUpstreamsEndToEnd: the built binary forwards over DNS over
// TLS to a real Unbound (tls-service-key), and over HTTPS and QUIC to a
// second dnsfence, verifying their certificates against upstream_ca; an
// https upstream written with a host name is looked up through the plain
// upstreams. Upstreams whose certificate carries the wrong name, or
// comes from a root not trusted, fail over to the next in the list (a
// plain one here): they never answer, and the second dnsfence's own
// upstream never sees the query.
func TestEncryptedUpstreamsEndToEnd(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	ca := newE2ECA(t, "dnsfence e2e CA")
	untrustedCA := newE2ECA(t, "a CA nobody trusts")
	dir := t.TempDir()
	goodCert, goodKey, _ := ca.issue(t, dir, "good", e2eServerName)
	wrongCert, wrongKey, _ := ca.issue(t, dir, "wrong-name", "other.test")
	untrustedCert, untrustedKey, _ := untrustedCA.issue(t, dir, "untrusted", e2eServerName)
	trust := fmt.Sprintf("upstream_ca: %q\nhttp: \"\"\n", ca.file)

	unbound := testnet.StartUnboundDoT(t, goodCert, goodKey, "example.", "www.example. 300 IN A 192.0.2.53")
	good := startEncryptedUpstream(t, goodCert, goodKey, "192.0.2.77")

	answerOf := func(t *testing.T, p *process, name string) string {
		t.Helper()
		out := p.dig(t, name)
		require.Contains(t, out, "status: NOERROR", out)
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\.\s+\d+\s+IN\s+A\s+(\S+)`).FindStringSubmatch(out)
		require.NotNil(t, m, out)
		return m[1]
	}

	t.Run("tls to Unbound", func(t *testing.T) {
		p := forwarder(t, []string{"tls://" + unbound + "#" + e2eServerName}, trust)
		assert.Equal(t, "192.0.2.53", answerOf(t, p, "www.example"))
		assert.Contains(t, p.dig(t, "nothing.example"), "status: NXDOMAIN", "Unbound's NXDOMAIN comes back as it is")
	})
	t.Run("https to dnsfence", func(t *testing.T) {
		before := good.queries.Load()
		p := forwarder(t, []string{"https://" + good.addrs["https"] + "/dns-query#" + e2eServerName}, trust)
		assert.Equal(t, "192.0.2.77", answerOf(t, p, "h.example"))
		assert.Greater(t, good.queries.Load(), before)
	})
	t.Run("quic to dnsfence", func(t *testing.T) {
		before := good.queries.Load()
		p := forwarder(t, []string{"quic://" + good.addrs["quic"] + "#" + e2eServerName}, trust)
		assert.Equal(t, "192.0.2.77", answerOf(t, p, "q.example"))
		assert.Greater(t, good.queries.Load(), before)
	})
	t.Run("https by name, looked up through the plain upstream", func(t *testing.T) {
		// The plain upstream knows dns.test and refuses the rest: an
		// answer to another name came over HTTPS.
		names := serveUDPAndTCP(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			if !strings.EqualFold(r.Question[0].Name, e2eServerName+".") {
				m.Rcode = dns.RcodeRefused
			} else if r.Question[0].Qtype == dns.TypeA {
				rr, _ := dns.NewRR(e2eServerName + ". 60 IN A 127.0.0.1")
				m.Answer = append(m.Answer, rr)
			}
			_ = w.WriteMsg(m)
		}))
		_, port, _ := net.SplitHostPort(good.addrs["https"])
		p := forwarder(t, []string{"https://" + e2eServerName + ":" + port + "/dns-query", names}, trust)
		assert.Equal(t, "192.0.2.77", answerOf(t, p, "n.example"))
	})
	t.Run("wrong name and untrusted root fail over", func(t *testing.T) {
		wrong := startEncryptedUpstream(t, wrongCert, wrongKey, "192.0.2.66")
		untrusted := startEncryptedUpstream(t, untrustedCert, untrustedKey, "192.0.2.66")
		fallback, _ := answeringUpstream(t, "192.0.2.99")
		var upstreams []string
		for _, u := range []*encryptedUpstream{wrong, untrusted} {
			upstreams = append(upstreams,
				"tls://"+u.addrs["tls"]+"#"+e2eServerName,
				"https://"+u.addrs["https"]+"/dns-query#"+e2eServerName,
				"quic://"+u.addrs["quic"]+"#"+e2eServerName)
		}
		httpAddr := "127.0.0.1:" + freePort(t)
		p := forwarder(t, append(upstreams, fallback), fmt.Sprintf("upstream_ca: %q\nhttp: %q\nupstream_timeout: 3s\n", ca.file, httpAddr))
		for i := range 3 {
			assert.Equal(t, "192.0.2.99", answerOf(t, p, fmt.Sprintf("f%d.example", i)), "only the plain upstream answers")
		}
		assert.Zero(t, wrong.queries.Load(), "a query never went through the upstream with the wrong name")
		assert.Zero(t, untrusted.queries.Load(), "nor through the one with an untrusted root")
		body := metricsText(t, httpAddr)
		for _, u := range upstreams {
			assert.Regexp(t, `dnsfence_upstream_errors_total\{kind="certificate",upstream="`+regexp.QuoteMeta(u)+`"\} [1-9]`, body)
		}
	})
}

// TestCertRotationUnderLoadEndToEnd: the pair is replaced on disk (key,
// then certificate, each renamed over the old file, as cert-manager and
// certbot do) while clients keep making new DoT, DoH and DoQ connections
// and one DoT connection made before keeps asking: new handshakes present
// the new certificate, the old connection goes on, and no query is lost.
func TestCertRotationUnderLoadEndToEnd(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	upstream, _ := testUpstream(t)
	config, certFile, keyFile := encryptedFiles(t, ca, []string{upstream}, "http: \"\"\nlog: {queries: none}\nrate_limit: {rate: 0}\n")
	first := ca.serial.Load()
	p := startBinary(t, "-config", config)
	addrs := p.encryptedAddrs(t, "tls", "https", "quic")

	var (
		mu      sync.Mutex
		seen    = map[string]map[int64]int{} // transport -> serial -> handshakes
		queries atomic.Int64
		lost    atomic.Int64
		lostErr atomic.Value
	)
	record := func(transport string, cs tls.ConnectionState, r *dns.Msg, err error) {
		if err == nil && r.Rcode != dns.RcodeNameError {
			err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
		}
		if err != nil {
			lost.Add(1)
			lostErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", transport, err))
			return
		}
		queries.Add(1)
		if len(cs.PeerCertificates) == 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[transport] == nil {
			seen[transport] = map[int64]int{}
		}
		seen[transport][cs.PeerCertificates[0].SerialNumber.Int64()]++
	}
	sawNew := func(transport string, serial int64) bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[transport][serial] > 0
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var load sync.WaitGroup
	// Each client makes a new connection, a full handshake, per query.
	dot := func() {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addrs["tls"], ca.clientTLS("dot"))
		if err != nil {
			record("tls", tls.ConnectionState{}, nil, err)
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		dc := &dns.Conn{Conn: c}
		err = dc.WriteMsg(ednsQuery("www.tiktok.com"))
		var r *dns.Msg
		if err == nil {
			r, err = dc.ReadMsg()
		}
		record("tls", c.ConnectionState(), r, err)
	}
	doh := func() {
		tr := &http.Transport{TLSClientConfig: ca.clientTLS(), ForceAttemptHTTP2: true, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		b, _ := ednsQuery("www.tiktok.com").Pack()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post("https://"+addrs["https"]+"/dns-query",
			"application/dns-message", bytes.NewReader(b))
		if err != nil {
			record("https", tls.ConnectionState{}, nil, err)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		r := new(dns.Msg)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("http status %d", resp.StatusCode)
		}
		if err == nil {
			err = r.Unpack(body)
		}
		record("https", *resp.TLS, r, err)
	}
	doq := func() {
		qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer qcancel()
		c, err := quic.DialAddr(qctx, addrs["quic"], ca.clientTLS("doq"), &quic.Config{})
		if err != nil {
			record("quic", tls.ConnectionState{}, nil, err)
			return
		}
		defer c.CloseWithError(0, "")
		st, err := c.OpenStreamSync(qctx)
		if err != nil {
			record("quic", tls.ConnectionState{}, nil, err)
			return
		}
		q := ednsQuery("www.tiktok.com")
		q.Id = 0
		b, _ := q.Pack()
		_ = st.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = st.Write(append(binenc.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
		_ = st.Close()
		var out []byte
		if err == nil {
			out, err = io.ReadAll(st)
		}
		r := new(dns.Msg)
		if err == nil && len(out) > 2 {
			err = r.Unpack(out[2:])
		} else if err == nil {
			err = fmt.Errorf("%d octets", len(out))
		}
		record("quic", c.ConnectionState().TLS, r, err)
	}
	for _, client := range []func(){dot, dot, doh, doq} {
		load.Go(func() {
			for i := 0; i < 100000 && ctx.Err() == nil; i++ {
				client()
			}
		})
	}
	// A DoT connection from before the rotation keeps asking on it.
	old, err := tls.Dial("tcp", addrs["tls"], ca.clientTLS("dot"))
	require.NoError(t, err)
	defer old.Close()
	load.Go(func() {
		dc := &dns.Conn{Conn: old}
		pace := time.NewTicker(5 * time.Millisecond) // one query a tick on the kept connection
		defer pace.Stop()
		for i := 0; i < 100000 && ctx.Err() == nil; i++ {
			_ = old.SetDeadline(time.Now().Add(10 * time.Second))
			err := dc.WriteMsg(ednsQuery("www.tiktok.com"))
			var r *dns.Msg
			if err == nil {
				r, err = dc.ReadMsg()
			}
			record("tls (kept)", old.ConnectionState(), r, err)
			select {
			case <-pace.C:
			case <-ctx.Done():
			}
		}
	})
	for _, tr := range []string{"tls", "https", "quic"} {
		require.Eventually(t, func() bool { return sawNew(tr, first) }, 20*time.Second, 10*time.Millisecond, "%s under load", tr)
	}

	// Rotate: a new pair written beside, then renamed over the old one.
	newCert, newKey, second := ca.issue(t, t.TempDir(), "next", e2eServerName)
	require.NoError(t, os.Rename(newKey, keyFile))
	require.NoError(t, os.Rename(newCert, certFile))
	for _, tr := range []string{"tls", "https", "quic"} {
		require.Eventually(t, func() bool { return sawNew(tr, second) }, 20*time.Second, 10*time.Millisecond,
			"new %s handshakes present the new certificate", tr)
	}
	reloaded := p.waitLine(t, "TLS certificate reloaded")
	assert.NotEmpty(t, reloaded["not_after"])
	before := queries.Load()
	require.Eventually(t, func() bool { return queries.Load() > before+20 }, 20*time.Second, 10*time.Millisecond, "load goes on")
	cancel()
	load.Wait()

	assert.Zero(t, lost.Load(), "no query lost; the first failure: %v", lostErr.Load())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[int64]int{first: seen["tls (kept)"][first]}, seen["tls (kept)"], "the connection made before keeps its certificate")
	t.Logf("%d queries answered; handshakes by transport and serial: %v", queries.Load(), seen)
	p.stop(t, syscall.SIGTERM)
}

// TestCheckCertificateEndToEnd: `dnsfence check` reads the pair as serve
// does, prints its expiry, and fails, as serve does, on a pair that
// cannot be served, naming the configuration line and the cause.
func TestCheckCertificateEndToEnd(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	config, certFile, keyFile := encryptedFiles(t, ca, []string{"127.0.0.1:53"}, "http: \"\"\n")
	code, out := runCmd("check", "-config", config)
	assert.Equal(t, 0, code, out)
	assert.Regexp(t, `tls\.cert \S+/certs/dnsfence\.crt: expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in 0 days\)`, out)
	assert.Contains(t, out, "listen_tls 127.0.0.1:0\n")
	started, serveOut := serveOutcome(t, config)
	assert.True(t, started, serveOut)

	// Another certificate's key: both refuse, at tls.cert's line.
	_, otherKey, _ := ca.issue(t, t.TempDir(), "other", e2eServerName)
	b, err := os.ReadFile(otherKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyFile, b, 0o600))
	code, out = runCmd("check", "-config", config)
	assert.Equal(t, 1, code, out)
	assert.Regexp(t, `dnsfence\.yaml:4: tls\.cert: tls\.cert \S+ and tls\.key \S+: tls: private key does not match public key`, out)
	started, serveOut = serveOutcome(t, config)
	assert.False(t, started)
	assert.Contains(t, serveOut, "tls: private key does not match public key")
	assert.Contains(t, serveOut, "dnsfence.yaml:4: tls.cert")

	// A certificate file that holds no certificate.
	require.NoError(t, os.WriteFile(certFile, []byte("not a certificate\n"), 0o600))
	code, out = runCmd("check", "-config", config)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "no PEM CERTIFICATE block")
}

// TestDDREndToEnd: `dnsfence check` names the target devices are sent to,
// serve logs it, and against the built binary `dig _dns.resolver.arpa
// SVCB` (RFC 9462) gets the binary's own encrypted listeners, DoH, DoT and
// DoQ in that order, each at the port it listens on, and kdig, told only
// what the DoT and DoH records say (address hint, port, target as the
// name the certificate must carry), gets the government device's NXDOMAIN
// over each.
func TestDDREndToEnd(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	upstream, count := testUpstream(t)
	config, _, _ := encryptedFiles(t, ca, []string{upstream}, "http: \"127.0.0.1:0\"\n")
	code, out := runCmd("check", "-config", config)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "ddr _dns.resolver.arpa SVCB designates "+e2eServerName+". (RFC 9462)\n", "check names the target")
	p := startBinary(t, "-config", config)
	addrs := p.encryptedAddrs(t, "tls", "https", "quic")
	line := p.waitLine(t, "designating the encrypted listeners to devices that ask _dns.resolver.arpa SVCB (RFC 9462)")
	assert.Equal(t, e2eServerName+".", line["target"], "serve logs the target")

	out = p.dig(t, "_dns.resolver.arpa", "SVCB", "+short")
	// dig 9.18 prints dohpath as key7.
	re := regexp.MustCompile(`^(\d+) (\S+) alpn="(\S+)" port=(\d+) ipv4hint=(\S+)(?: key7="(\S+)")?$`)
	var got [][]string
	for line := range strings.Lines(strings.TrimSpace(out)) {
		m := re.FindStringSubmatch(strings.TrimSpace(line))
		require.NotNil(t, m, "an SVCB record: %q in %s", line, out)
		got = append(got, m[1:])
	}
	require.Len(t, got, 3, out)
	for i, want := range []struct{ alpn, transport, dohpath string }{
		{"h2", "https", "/dns-query{?dns}"}, {"dot", "tls", ""}, {"doq", "quic", ""},
	} {
		_, port, err := net.SplitHostPort(addrs[want.transport])
		require.NoError(t, err)
		assert.Equal(t, []string{fmt.Sprint(i + 1), e2eServerName + ".", want.alpn, port, "127.0.0.1", want.dohpath}, got[i], out)
	}
	for _, rec := range got[:2] {
		kdigArgs := []string{"-b", "127.0.0.1", "+tls", "www.tiktok.com"}
		if rec[2] == "h2" {
			kdigArgs[2] = "+https=" + strings.TrimSuffix(rec[5], "{?dns}")
		}
		rcode, ede, _ := parseKdig(t, kdig(t, ca, net.JoinHostPort(rec[4], rec[3]), kdigArgs...))
		assert.Equal(t, "NXDOMAIN", rcode, rec[2])
		assert.Equal(t, 15, ede, rec[2])
	}
	assert.Zero(t, count.Load(), "neither the designation nor the blocked names went upstream")
}
