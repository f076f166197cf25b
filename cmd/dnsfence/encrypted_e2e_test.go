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

// needProgram returns the path of a program the test needs; without it the
// test is skipped, except under CI=true, where it fails.
func needProgram(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
			if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
				return filepath.Join(dir, name)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true: apt-get install %s", name, pkg)
		}
		t.Skipf("%s not found; install it with: apt-get install %s", name, pkg)
	}
	return p
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
	bin := needProgram(t, "kdig", "knot-dnsutils")
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
	bin := needProgram(t, "curl", "curl")
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
	dir := writeFiles(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n"})
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
	assert.Regexp(t, `dnsfence_tls_certificate_expiry_seconds \d`, body)
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
