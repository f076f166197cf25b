package listen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// dohSetup is a DoH server over a fresh certificate, on 127.0.0.1.
type dohSetup struct {
	ca      *testCA
	files   certFiles
	serial  int64
	store   *CertStore
	up      *testUpstream
	handler *testHandler
	counts  *counts
	srv     *DoHServer
	addr    string
	url     string // https://127.0.0.1:port/dns-query (http:// when plain)
}

func newDoHSetup(t *testing.T, plain bool, tune func(*DoHOptions)) *dohSetup {
	t.Helper()
	d := &dohSetup{ca: newTestCA(t), counts: &counts{}}
	d.files, d.serial = writePair(t, d.ca)
	d.store, _ = startStore(t, d.files, time.Hour)
	d.up = newTestUpstream(t)
	d.handler = newTestHandler(d.up)
	opt := DoHOptions{Handler: d.handler, Count: d.counts.count, Trusted: trustNone}
	if !plain {
		opt.TLS = ServerTLSConfig(d.store, ALPNHTTP2, ALPNHTTP1)
	}
	if tune != nil {
		tune(&opt)
	}
	d.srv = NewDoHServer(opt)
	d.addr = serveDoH(t, d.srv, "127.0.0.1")
	scheme := "https"
	if plain {
		scheme = "http"
	}
	d.url = scheme + "://" + d.addr + DoHPath
	return d
}

// serveDoH serves srv on a free TCP port of ip until the test ends (a
// graceful Shutdown of 5 s at most, then Close, and Serve's return
// checked), and returns the address.
func serveDoH(t *testing.T, srv *DoHServer, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	require.NoError(t, err)
	serveDoHOn(t, srv, ln)
	return ln.Addr().String()
}

// serveDoHOn is serveDoH on the listener ln.
func serveDoHOn(t *testing.T, srv *DoHServer, ln net.Listener) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
		assert.NoError(t, <-served)
	})
}

// client is an HTTP client trusting the test CA; http1 keeps it to
// HTTP/1.1, else it speaks HTTP/2.
func (d *dohSetup) client(http1 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: clientTLS(d.ca), ForceAttemptHTTP2: !http1}
	if http1 {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		tr.Protocols = p
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// dohGet asks m by GET ?dns= and returns the answer and the response.
func dohGet(t *testing.T, c *http.Client, url string, m *dns.Msg) (*dns.Msg, *http.Response) {
	t.Helper()
	resp, err := c.Get(url + "?dns=" + base64.RawURLEncoding.EncodeToString(mustPack(t, m)))
	require.NoError(t, err)
	return readDoHAnswer(t, resp), resp
}

// dohPost asks m by POST and returns the answer and the response.
func dohPost(t *testing.T, c *http.Client, url string, m *dns.Msg) (*dns.Msg, *http.Response) {
	t.Helper()
	resp, err := c.Post(url, DoHContentType, bytes.NewReader(mustPack(t, m)))
	require.NoError(t, err)
	return readDoHAnswer(t, resp), resp
}

func readDoHAnswer(t *testing.T, resp *http.Response) *dns.Msg {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	assert.Equal(t, DoHContentType, resp.Header.Get("Content-Type"))
	m := new(dns.Msg)
	require.NoError(t, m.Unpack(body))
	return m
}

// TestDoHAnswers: blocked and forwarded answers over HTTP/2 and HTTP/1.1,
// GET and POST, with ID 0 echoed, Cache-Control from the TTLs, and the
// Handler told the transport and the peer.
func TestDoHAnswers(t *testing.T) {
	d := newDoHSetup(t, false, nil)
	tests := []struct {
		name   string
		http1  bool
		post   bool
		qname  string
		rcode  int
		maxAge string
	}{
		{"h2 GET blocked", false, false, "a.blocked.test", dns.RcodeNameError, "private, max-age=60"},
		{"h2 POST blocked", false, true, "b.blocked.test", dns.RcodeNameError, "private, max-age=60"},
		{"h2 GET forwarded", false, false, "a.example.org", dns.RcodeSuccess, "private, max-age=300"},
		{"h2 POST forwarded", false, true, "b.example.org", dns.RcodeSuccess, "private, max-age=300"},
		{"http/1.1 GET blocked", true, false, "c.blocked.test", dns.RcodeNameError, "private, max-age=60"},
		{"http/1.1 POST forwarded", true, true, "c.example.org", dns.RcodeSuccess, "private, max-age=300"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := d.client(tc.http1)
			ask := dohGet
			if tc.post {
				ask = dohPost
			}
			r, resp := ask(t, c, d.url, query(tc.qname))
			wantMajor := 2
			if tc.http1 {
				wantMajor = 1
			}
			assert.Equal(t, wantMajor, resp.ProtoMajor)
			assert.Equal(t, tc.rcode, r.Rcode)
			assert.Equal(t, uint16(0), r.Id)
			assert.True(t, r.Response)
			assert.Equal(t, tc.maxAge, resp.Header.Get("Cache-Control"))
			require.Len(t, r.Question, 1)
			assert.Equal(t, dns.Fqdn(tc.qname), r.Question[0].Name)
			if tc.rcode == dns.RcodeSuccess {
				require.Len(t, r.Answer, 1)
				assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			} else {
				require.Len(t, r.Ns, 1)
				assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype)
				require.NotNil(t, r.IsEdns0())
				require.Len(t, r.IsEdns0().Option, 1)
				assert.Equal(t, dns.ExtendedErrorCodeBlocked, r.IsEdns0().Option[0].(*dns.EDNS0_EDE).InfoCode)
			}
			s, ok := d.handler.seenFor(tc.qname)
			require.True(t, ok)
			assert.Equal(t, HTTPS, s.transport)
			ta, isTCP := s.remote.(*net.TCPAddr)
			require.True(t, isTCP, "remote %T", s.remote)
			assert.Equal(t, "127.0.0.1", ta.IP.String())
		})
	}
	assert.Equal(t, int64(3), d.handler.resumed.Load(), "forwarded queries went through resume")
}

// TestDoHStatusCodes: every request without a usable query gets its own
// status (RFC 8484 §4.1, RFC 9110) and is counted; nothing reaches the
// Handler.
func TestDoHStatusCodes(t *testing.T) {
	d := newDoHSetup(t, false, nil)
	good := base64.RawURLEncoding.EncodeToString(mustPack(t, query("example.org")))
	padded := ""
	for i := 1; !strings.HasSuffix(padded, "="); i++ { // a query whose length is not a multiple of 3
		padded = base64.URLEncoding.EncodeToString(mustPack(t, query(strings.Repeat("p", i)+".example.org")))
	}
	big := make([]byte, 70<<10)
	copy(big, mustPack(t, query("big.example.org")))
	target := func(n int) string { // a GET's request target of n octets
		return DoHPath + "?dns=" + strings.Repeat("A", n-len(DoHPath+"?dns="))
	}
	tests := []struct {
		name        string
		method      string
		target      string // after the host
		contentType string
		body        []byte
		chunked     bool // the body's length not given (HTTP/1.1 chunked)
		status      int
		allow       string
	}{
		{name: "GET without dns", method: "GET", target: DoHPath, status: 400},
		{name: "GET with empty dns", method: "GET", target: DoHPath + "?dns=", status: 400},
		{name: "GET with padded dns", method: "GET", target: DoHPath + "?dns=" + padded, status: 400},
		{name: "GET with standard base64", method: "GET", target: DoHPath + "?dns=" + strings.ReplaceAll(good, "_", "/") + "+", status: 400},
		{name: "GET with not base64", method: "GET", target: DoHPath + "?dns=%25%25%25", status: 400},
		{name: "GET with a line break in dns", method: "GET", target: DoHPath + "?dns=" + good[:8] + "%0D%0A" + good[8:], status: 400},
		{name: "GET with two dns", method: "GET", target: DoHPath + "?dns=" + good + "&dns=" + good, status: 400},
		{name: "GET with a short message", method: "GET", target: DoHPath + "?dns=AAAA", status: 400},
		{name: "GET with 10 KB dns", method: "GET", target: DoHPath + "?dns=" + strings.Repeat("A", 10<<10), status: 414},
		{name: "GET of 8000 octets", method: "GET", target: target(maxDoHURI), status: 400}, // not a message, but not too long
		{name: "GET of 8001 octets", method: "GET", target: target(maxDoHURI + 1), status: 414},
		{name: "GET with a bad query string", method: "GET", target: DoHPath + "?dns=" + good + "&x=%zz", status: 400},
		{name: "POST 70 KB of unknown length", method: "POST", target: DoHPath, contentType: DoHContentType, body: big, chunked: true, status: 413},
		{name: "POST 70 KB", method: "POST", target: DoHPath, contentType: DoHContentType, body: big, status: 413},
		{name: "POST text/plain", method: "POST", target: DoHPath, contentType: "text/plain", body: mustPack(t, query("example.org")), status: 415},
		{name: "POST without Content-Type", method: "POST", target: DoHPath, body: mustPack(t, query("example.org")), status: 415},
		{name: "POST empty", method: "POST", target: DoHPath, contentType: DoHContentType, status: 400},
		{name: "PUT", method: "PUT", target: DoHPath, contentType: DoHContentType, body: mustPack(t, query("example.org")), status: 405, allow: "GET, POST"},
		{name: "HEAD", method: "HEAD", target: DoHPath + "?dns=" + good, status: 405, allow: "GET, POST"},
		{name: "other path", method: "GET", target: "/resolve?dns=" + good, status: 404},
		{name: "root", method: "GET", target: "/", status: 404},
	}
	for _, http1 := range []bool{false, true} {
		c := d.client(http1)
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s http1=%v", tc.name, http1), func(t *testing.T) {
				before := d.counts.get(HTTPS, ResultBadRequest)
				var body io.Reader
				if tc.body != nil {
					body = bytes.NewReader(tc.body)
				}
				if tc.chunked {
					body = io.MultiReader(body) // hides the length
				}
				req, err := http.NewRequest(tc.method, "https://"+d.addr+tc.target, body)
				require.NoError(t, err)
				if tc.contentType != "" {
					req.Header.Set("Content-Type", tc.contentType)
				}
				resp, err := c.Do(req)
				require.NoError(t, err)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				assert.Equal(t, tc.status, resp.StatusCode)
				assert.NotEqual(t, DoHContentType, resp.Header.Get("Content-Type"))
				assert.Equal(t, tc.allow, resp.Header.Get("Allow"))
				if tc.status != 404 {
					assert.Equal(t, before+1, d.counts.get(HTTPS, ResultBadRequest), "counted")
				}
			})
		}
	}
	d.handler.mu.Lock()
	defer d.handler.mu.Unlock()
	assert.Empty(t, d.handler.seen, "no bad request reached the Handler")
}

// TestDoHRejectsAsTCPDoes: a message the DNS listeners answer themselves
// (an opcode other than QUERY and NOTIFY, two questions, a question cut
// short) gets that DNS answer over DoH too, counted; a NOTIFY goes to the
// Handler, as AcceptQuery sends it there, with its octets as they came
// (Received: a signed one's MAC covers them); a query the Handler drops
// gets 403; an answer sent as a query gets 400.
func TestDoHRejectsAsTCPDoes(t *testing.T) {
	d := newDoHSetup(t, false, nil)
	c := d.client(false)
	status := query("example.org")
	status.Opcode = dns.OpcodeStatus
	notify := query("notify.blocked.test")
	notify.Opcode = dns.OpcodeNotify
	two := query("example.org")
	two.Question = append(two.Question, dns.Question{Name: "example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	r, _ := dohPost(t, c, d.url, status)
	assert.Equal(t, dns.RcodeNotImplemented, r.Rcode)
	assert.False(t, r.RecursionAvailable, "RA only for QUERY, as BIND answers")
	assert.Equal(t, 1, d.counts.get(HTTPS, resultNotimp))
	dohPost(t, c, d.url, notify)
	s, ok := d.handler.seenFor("notify.blocked.test")
	if assert.True(t, ok, "the NOTIFY went to the Handler") {
		assert.Equal(t, mustPack(t, notify), s.received)
	}
	assert.Equal(t, 1, d.counts.get(HTTPS, resultNotimp), "not answered by the listener")
	r, resp := dohPost(t, c, d.url, two)
	assert.Equal(t, dns.RcodeFormatError, r.Rcode)
	assert.Equal(t, "private, max-age=0", resp.Header.Get("Cache-Control"))
	assert.Equal(t, 1, d.counts.get(HTTPS, resultFormerr))

	// A question cut short before its QCLASS is FORMERR (RFC 1035
	// §4.1.2), never a question of class 0 for the Handler.
	cut := query("example.org")
	cut.Extra = nil
	b := mustPack(t, cut)
	resp4, err := c.Post(d.url, DoHContentType, bytes.NewReader(b[:len(b)-2]))
	require.NoError(t, err)
	body, err := io.ReadAll(resp4.Body)
	resp4.Body.Close()
	require.NoError(t, err)
	r = new(dns.Msg)
	require.NoError(t, r.Unpack(body))
	assert.Equal(t, dns.RcodeFormatError, r.Rcode)
	assert.Equal(t, 2, d.counts.get(HTTPS, resultFormerr))

	// A query the Handler drops gets 403, a refusal by policy: over HTTP
	// something is said, and it is no DNS answer.
	resp3, err := c.Post(d.url, DoHContentType, bytes.NewReader(mustPack(t, query("x.drop.test"))))
	require.NoError(t, err)
	body3, err := io.ReadAll(resp3.Body)
	resp3.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, resp3.StatusCode)
	assert.Equal(t, whyDropped+"\n", string(body3))
	assert.NotEqual(t, DoHContentType, resp3.Header.Get("Content-Type"))

	answer := query("example.org")
	answer.Response = true
	resp2, err := c.Post(d.url, DoHContentType, bytes.NewReader(mustPack(t, answer)))
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp2.StatusCode)
}

// TestDoHPlainHTTP: an http:// listen address serves DoH without TLS.
func TestDoHPlainHTTP(t *testing.T) {
	d := newDoHSetup(t, true, nil)
	c := &http.Client{Timeout: 5 * time.Second}
	r, resp := dohGet(t, c, d.url, query("www.blocked.test"))
	assert.Equal(t, 1, resp.ProtoMajor)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	r, _ = dohPost(t, c, d.url, query("example.org"))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	s, ok := d.handler.seenFor("example.org")
	require.True(t, ok)
	assert.Equal(t, HTTPS, s.transport)
}

// TestDoHPlainHTTP2: the http:// listener serves HTTP/2 with prior
// knowledge (h2c) as well as HTTP/1.1, for a TLS-terminating proxy that
// forwards its clients' HTTP/2 as it is (RFC 8484 §5.2: HTTP/2 is the
// minimum RECOMMENDED version; Unbound's cleartext DoH speaks only h2c).
func TestDoHPlainHTTP2(t *testing.T) {
	d := newDoHSetup(t, true, nil)
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: protocols}}
	t.Cleanup(c.CloseIdleConnections)
	r, resp := dohGet(t, c, d.url, query("www.blocked.test"))
	assert.Equal(t, 2, resp.ProtoMajor, "HTTP/2 without TLS")
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	r, resp = dohPost(t, c, d.url, query("example.org"))
	assert.Equal(t, 2, resp.ProtoMajor, "HTTP/2 without TLS")
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Equal(t, DoHContentType, resp.Header.Get("Content-Type"))
	s, ok := d.handler.seenFor("example.org")
	require.True(t, ok)
	assert.Equal(t, HTTPS, s.transport)
}

// TestDoHForwardedFor: Forwarded and X-Forwarded-For name the client only
// when the peer is a trusted proxy; then the Handler sees a *ProxiedAddr.
func TestDoHForwardedFor(t *testing.T) {
	var trustPeer atomic.Bool
	trusted := func(a netip.Addr) bool {
		switch a.String() {
		case "127.0.0.1":
			return trustPeer.Load()
		case "10.9.9.9", "2001:db8::99":
			return true // a second proxy in the chain
		}
		return false
	}
	d := newDoHSetup(t, false, func(o *DoHOptions) { o.Trusted = trusted })
	c := d.client(false)
	tests := []struct {
		name    string
		trusted bool
		header  map[string][]string
		status  int
		client  string // "" for the peer itself, as a *net.TCPAddr
	}{
		{name: "untrusted peer: header ignored", header: map[string][]string{"X-Forwarded-For": {"10.1.2.3"}}},
		{name: "untrusted peer: Forwarded ignored", header: map[string][]string{"Forwarded": {"for=10.1.2.3"}}},
		{name: "trusted, no header", trusted: true},
		{name: "trusted, X-Forwarded-For", trusted: true, header: map[string][]string{"X-Forwarded-For": {"10.1.2.3"}}, client: "10.1.2.3:0"},
		{name: "trusted, X-Forwarded-For chain read from the right", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"192.0.2.66, 10.1.2.3, 10.9.9.9"}}, client: "10.1.2.3:0"},
		{name: "trusted, two X-Forwarded-For lines", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"192.0.2.66", "10.1.2.4"}}, client: "10.1.2.4:0"},
		{name: "trusted, Forwarded", trusted: true, header: map[string][]string{"Forwarded": {"for=10.1.2.5;proto=https"}}, client: "10.1.2.5:0"},
		{name: "trusted, Forwarded IPv6 with port", trusted: true,
			header: map[string][]string{"Forwarded": {`for="[2001:db8::7]:4711";by=10.9.9.9`}}, client: "[2001:db8::7]:4711"},
		{name: "trusted, Forwarded chain", trusted: true,
			header: map[string][]string{"Forwarded": {`for=192.0.2.66, for="[2001:db8::8]", for="[2001:db8::99]"`}}, client: "[2001:db8::8]:0"},
		{name: "trusted, Forwarded and X-Forwarded-For agree", trusted: true,
			header: map[string][]string{"Forwarded": {`for="10.1.2.6:4711"`}, "X-Forwarded-For": {"192.0.2.66, 10.1.2.6"}}, client: "10.1.2.6:4711"},
		// The proxy appended to one, the client wrote the other: which is
		// which is not known, so neither is believed.
		{name: "trusted, Forwarded and X-Forwarded-For disagree", trusted: true,
			header: map[string][]string{"Forwarded": {"for=10.1.2.6"}, "X-Forwarded-For": {"10.1.2.7"}}, status: 400},
		{name: "trusted, X-Forwarded-For disagrees with Forwarded", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"10.1.2.6"}, "Forwarded": {"for=192.0.2.66, for=10.1.2.7"}}, status: 400},
		// A chain whose nearer proxy (10.9.9.9) writes X-Forwarded-For
		// only, the farther one both: Forwarded names a proxy, no client.
		{name: "trusted chain, Forwarded names only a proxy", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"10.1.2.3, 10.9.9.9"}, "Forwarded": {"for=10.9.9.9"}}, client: "10.1.2.3:0"},
		{name: "trusted chain, X-Forwarded-For names only a proxy", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"10.9.9.9"}, "Forwarded": {"for=10.1.2.3, for=10.9.9.9"}}, client: "10.1.2.3:0"},
		// A trusted hop that writes no header, behind a proxy that sets
		// X-Forwarded-For to it: the Forwarded header is the device's.
		{name: "trusted, X-Forwarded-For names a proxy that is not Forwarded's", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"10.9.9.9"}, "Forwarded": {"for=10.7.7.7"}}, status: 400},
		// Each header names only trusted proxies, the one ending the
		// other's list: neither names a client, and the leftmost of
		// each, taken for it, differ.
		{name: "trusted, Forwarded and X-Forwarded-For name only proxies", trusted: true,
			header: map[string][]string{"Forwarded": {"for=10.9.9.9"}, "X-Forwarded-For": {"2001:db8::99, 10.9.9.9"}}, status: 400},
		{name: "trusted, an empty X-Forwarded-For beside Forwarded", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {""}, "Forwarded": {"for=10.1.2.4"}}, client: "10.1.2.4:0"},
		// A trusted proxy named by the one header that is not the one
		// ending the other's list: the chain is not one proxy's, so
		// neither header is believed.
		{name: "trusted, Forwarded names a proxy other than the one ending X-Forwarded-For", trusted: true,
			header: map[string][]string{"X-Forwarded-For": {"10.1.2.3, 2001:db8::99"}, "Forwarded": {"for=10.9.9.9"}}, status: 400},
		// RFC 7239's grammar: an empty element (a leading comma), elements
		// and pairs without spaces between them, and quoted-pairs (RFC 9110
		// §5.6.4) in a quoted-string, one of them an escaped quote.
		{name: "trusted, Forwarded with an empty element", trusted: true,
			header: map[string][]string{"Forwarded": {", for=10.1.2.5"}}, client: "10.1.2.5:0"},
		{name: "trusted, Forwarded without spaces", trusted: true,
			header: map[string][]string{"Forwarded": {"for=192.0.2.66,proto=https;for=10.1.2.5"}}, client: "10.1.2.5:0"},
		{name: "trusted, Forwarded quoted-pairs", trusted: true,
			header: map[string][]string{"Forwarded": {`for="10.1.2.\5";by="x\"y"`}}, client: "10.1.2.5:0"},
		{name: "trusted, X-Forwarded-For garbage beside Forwarded", trusted: true,
			header: map[string][]string{"Forwarded": {"for=10.1.2.6"}, "X-Forwarded-For": {"client.example"}}, status: 400},
		{name: "trusted, IPv4-mapped unmapped", trusted: true, header: map[string][]string{"X-Forwarded-For": {"::ffff:10.1.2.8"}}, client: "10.1.2.8:0"},
		{name: "trusted, Forwarded unknown", trusted: true, header: map[string][]string{"Forwarded": {"for=unknown"}}, status: 400},
		{name: "trusted, Forwarded obfuscated", trusted: true, header: map[string][]string{"Forwarded": {"for=_hidden"}}, status: 400},
		{name: "trusted, Forwarded without for", trusted: true, header: map[string][]string{"Forwarded": {"proto=https"}}, status: 400},
		{name: "trusted, X-Forwarded-For garbage", trusted: true, header: map[string][]string{"X-Forwarded-For": {"client.example"}}, status: 400},
		// X-Real-IP, the one address the nearest proxy saw (nginx's
		// `proxy_set_header X-Real-IP $remote_addr`, as Technitium's and
		// AdGuard Home's guides write it), read as a list of one.
		{name: "untrusted peer: X-Real-IP ignored", header: map[string][]string{"X-Real-IP": {"10.1.2.3"}}},
		{name: "trusted, X-Real-IP", trusted: true, header: map[string][]string{"X-Real-IP": {"10.1.2.9"}}, client: "10.1.2.9:0"},
		{name: "trusted, X-Real-IP IPv6", trusted: true, header: map[string][]string{"X-Real-IP": {"2001:db8::9"}}, client: "[2001:db8::9]:0"},
		{name: "trusted, X-Real-IP and X-Forwarded-For agree", trusted: true,
			header: map[string][]string{"X-Real-IP": {"10.1.2.9"}, "X-Forwarded-For": {"192.0.2.66, 10.1.2.9"}}, client: "10.1.2.9:0"},
		// A proxy that sets X-Real-IP alone passes the device's own
		// X-Forwarded-For through: neither is believed.
		{name: "trusted, X-Real-IP and X-Forwarded-For disagree", trusted: true,
			header: map[string][]string{"X-Real-IP": {"10.1.2.9"}, "X-Forwarded-For": {"10.1.2.7"}}, status: 400},
		{name: "trusted, X-Real-IP and Forwarded disagree", trusted: true,
			header: map[string][]string{"X-Real-IP": {"10.1.2.9"}, "Forwarded": {"for=10.1.2.7"}}, status: 400},
		// A chain whose farther proxy (10.9.9.9) appends to
		// X-Forwarded-For and whose nearer one sets X-Real-IP to it.
		{name: "trusted chain, X-Real-IP names only a proxy", trusted: true,
			header: map[string][]string{"X-Real-IP": {"10.9.9.9"}, "X-Forwarded-For": {"10.1.2.3, 10.9.9.9"}}, client: "10.1.2.3:0"},
		// The same chain, its nearer proxy passing X-Forwarded-For on as
		// the farther one wrote it (nginx with X-Real-IP set alone).
		{name: "trusted chain, X-Real-IP names only a proxy, X-Forwarded-For passed on", trusted: true,
			header: map[string][]string{"X-Real-IP": {"10.9.9.9"}, "X-Forwarded-For": {"10.1.2.3"}}, client: "10.1.2.3:0"},
		{name: "trusted, X-Real-IP list", trusted: true, header: map[string][]string{"X-Real-IP": {"10.1.2.9, 10.1.2.8"}}, status: 400},
		{name: "trusted, X-Real-IP garbage", trusted: true, header: map[string][]string{"X-Real-IP": {"client.example"}}, status: 400},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			trustPeer.Store(tc.trusted)
			qname := fmt.Sprintf("q%d.blocked.test", i)
			req, err := http.NewRequest("GET", d.url+"?dns="+base64.RawURLEncoding.EncodeToString(mustPack(t, query(qname))), nil)
			require.NoError(t, err)
			for k, vs := range tc.header {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			resp, err := c.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tc.status != 0 {
				assert.Equal(t, tc.status, resp.StatusCode)
				_, ok := d.handler.seenFor(qname)
				assert.False(t, ok, "not answered for the wrong client")
				return
			}
			require.Equal(t, http.StatusOK, resp.StatusCode)
			s, ok := d.handler.seenFor(qname)
			require.True(t, ok)
			if tc.client == "" {
				ta, isTCP := s.remote.(*net.TCPAddr)
				require.True(t, isTCP, "remote %T", s.remote)
				assert.Equal(t, "127.0.0.1", ta.IP.String())
				return
			}
			pa, isProxied := s.remote.(*ProxiedAddr)
			require.True(t, isProxied, "remote %T", s.remote)
			assert.Equal(t, tc.client, pa.TCPAddr.AddrPort().String())
			assert.Equal(t, "127.0.0.1", pa.Proxy.Addr().String())
		})
	}
}

// TestDoHCurl: curl --data-binary POST and GET ?dns=, over HTTP/2.
func TestDoHCurl(t *testing.T) {
	curl := testnet.NeedProgram(t, "curl", "curl")
	d := newDoHSetup(t, false, nil)
	dir := t.TempDir()
	tests := []struct {
		name, qname string
		post        bool
		rcode       int
	}{
		{"POST blocked", "www.blocked.test", true, dns.RcodeNameError},
		{"POST forwarded", "example.org", true, dns.RcodeSuccess},
		{"GET blocked", "m.blocked.test", false, dns.RcodeNameError},
		{"GET forwarded", "example.net", false, dns.RcodeSuccess},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("answer%d", i))
			args := []string{"-sS", "--max-time", "10", "--cacert", d.ca.file, "--http2",
				"-o", out, "-w", "%{http_code} %{http_version} %{content_type}"}
			if tc.post {
				qfile := filepath.Join(dir, fmt.Sprintf("query%d", i))
				require.NoError(t, os.WriteFile(qfile, mustPack(t, query(tc.qname)), 0o600))
				args = append(args, "-H", "Content-Type: "+DoHContentType, "--data-binary", "@"+qfile, d.url)
			} else {
				args = append(args, d.url+"?dns="+base64.RawURLEncoding.EncodeToString(mustPack(t, query(tc.qname))))
			}
			stdout, err := exec.Command(curl, args...).CombinedOutput()
			require.NoError(t, err, "%s", stdout)
			assert.Equal(t, "200 2 "+DoHContentType, string(stdout))
			b, err := os.ReadFile(out)
			require.NoError(t, err)
			m := new(dns.Msg)
			require.NoError(t, m.Unpack(b))
			assert.Equal(t, tc.rcode, m.Rcode)
			assert.Equal(t, dns.Fqdn(tc.qname), m.Question[0].Name)
		})
	}
}

// TestDoHKdig: kdig +https, POST and GET.
func TestDoHKdig(t *testing.T) {
	kdig := testnet.NeedProgram(t, "kdig", "knot-dnsutils")
	d := newDoHSetup(t, false, nil)
	host, port, _ := net.SplitHostPort(d.addr)
	tests := []struct {
		name, qname, status, answer string
		get                         bool
	}{
		{"POST blocked", "www.blocked.test", "NXDOMAIN", "SOA", false},
		{"POST forwarded", "example.org", "NOERROR", "192.0.2.1", false},
		{"GET blocked", "k.blocked.test", "NXDOMAIN", "SOA", true},
		{"GET forwarded", "example.net", "NOERROR", "192.0.2.1", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"@" + host, "-p", port, "+https", "+tls-ca=" + d.ca.file, "+tls-hostname=" + testServerName,
				"+timeout=5", "+retry=0"}
			if tc.get {
				args = append(args, "+https-get")
			}
			out, err := exec.Command(kdig, append(args, tc.qname, "A")...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), "status: "+tc.status, "%s", out)
			assert.Contains(t, string(out), tc.answer, "%s", out)
			s, ok := d.handler.seenFor(tc.qname)
			require.True(t, ok, "%s", out)
			assert.Equal(t, HTTPS, s.transport)
		})
	}
}

// TestDoHStalledHandshake: a connection that never finishes its TLS
// handshake is closed after the read-header timeout; others are served
// meanwhile.
func TestDoHStalledHandshake(t *testing.T) {
	const timeout = 500 * time.Millisecond
	d := newDoHSetup(t, false, func(o *DoHOptions) { o.ReadHeaderTimeout = timeout })
	stalled, err := net.Dial("tcp", d.addr)
	require.NoError(t, err)
	defer stalled.Close()
	start := time.Now()
	r, _ := dohGet(t, d.client(false), d.url, query("www.blocked.test"))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(stalled)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed it")
	assert.Less(t, time.Since(start), timeout+2*time.Second)
}

// TestDoHSilentConnectionAfterHandshake: a connection that finishes its
// TLS handshake and then sends no request is closed within twice the
// read-header timeout of its accept, over HTTP/2 as over HTTP/1.1, and its
// place is given back: net/http alone waits 10 s for an HTTP/2 client's
// preface, whatever the timeouts, and then IdleTimeout for its first
// request, so a client could hold places for 10 s and more each without a
// query, where a plain DNS over TCP connection holds one for
// tcp_read_timeout.
func TestDoHSilentConnectionAfterHandshake(t *testing.T) {
	const timeout = 300 * time.Millisecond
	var released atomic.Int64
	d := newDoHSetup(t, false, func(o *DoHOptions) {
		o.ReadHeaderTimeout = timeout
		o.IdleTimeout = 5 * time.Second
		o.Admit = func(netip.Addr) (func(), bool) { return func() { released.Add(1) }, true }
	})
	tests := []struct {
		name    string
		alpn    string
		preface bool // the client sends the HTTP/2 preface and SETTINGS, then nothing
	}{
		{name: "HTTP/2, nothing after the handshake", alpn: ALPNHTTP2},
		{name: "HTTP/2, preface and no request", alpn: ALPNHTTP2, preface: true},
		{name: "HTTP/1.1, nothing after the handshake", alpn: ALPNHTTP1},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", d.addr, clientTLS(d.ca, tc.alpn))
			require.NoError(t, err)
			defer c.Close()
			require.Equal(t, tc.alpn, c.ConnectionState().NegotiatedProtocol)
			if tc.preface {
				_, err := io.WriteString(c, http2.ClientPreface)
				require.NoError(t, err)
				require.NoError(t, http2.NewFramer(c, nil).WriteSettings())
			}
			start := time.Now()
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			_, err = io.Copy(io.Discard, c) // until the server closes
			var ne net.Error
			require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server closed it")
			assert.Less(t, time.Since(start), 2*timeout+time.Second, "closed after %v", time.Since(start))
			require.Eventually(t, func() bool { return released.Load() == int64(i+1) }, 5*time.Second, 10*time.Millisecond,
				"its place given back")
		})
	}
	// A client that asks in time is served.
	r, _ := dohGet(t, d.client(false), d.url, query("www.blocked.test"))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
}

// TestDoHConnectionCap: at MaxConns, a new connection waits until one
// closes; Admit refuses a peer at accept.
func TestDoHConnectionCap(t *testing.T) {
	var refuse atomic.Bool
	var released atomic.Int64
	d := newDoHSetup(t, false, func(o *DoHOptions) {
		o.MaxConns = 1
		o.IdleTimeout = 300 * time.Millisecond
		o.Admit = func(netip.Addr) (func(), bool) {
			if refuse.Load() {
				return nil, false
			}
			return func() { released.Add(1) }, true
		}
	})
	first := d.client(false)
	r, _ := dohGet(t, first, d.url, query("a.blocked.test"))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	// A second client waits for the first's idle connection to close.
	start := time.Now()
	r, _ = dohGet(t, d.client(false), d.url, query("b.blocked.test"))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "served only after the first connection closed")
	require.Eventually(t, func() bool { return released.Load() >= 1 }, 5*time.Second, 10*time.Millisecond)

	refuse.Store(true)
	require.Eventually(t, func() bool { return released.Load() == 2 }, 5*time.Second, 10*time.Millisecond, "idle closed")
	_, err := d.client(false).Get(d.url + "?dns=" + base64.RawURLEncoding.EncodeToString(mustPack(t, query("c.blocked.test"))))
	require.Error(t, err, "a refused peer is reset at accept")
}

// h2Frames opens an HTTP/2 connection to d's listener, with the client
// preface and settings sent, for a test to write frames of its own; the
// connection closes when the test ends.
func h2Frames(t *testing.T, d *dohSetup) (*tls.Conn, *http2.Framer) {
	t.Helper()
	conn, err := tls.Dial("tcp", d.addr, clientTLS(d.ca, "h2"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.Equal(t, "h2", conn.ConnectionState().NegotiatedProtocol)
	_, err = conn.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	require.NoError(t, fr.WriteSettings())
	return conn, fr
}

// TestDoHManyStreams: a client that opens 1,000 streams on one HTTP/2
// connection, ignoring the server's stream limit, gets the excess refused
// and holds at most MaxStreams queries in progress, while another
// client's queries are answered.
func TestDoHManyStreams(t *testing.T) {
	const maxStreams = 20
	d := newDoHSetup(t, false, func(o *DoHOptions) { o.MaxStreams = maxStreams })

	conn, fr := h2Frames(t, d)

	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	const streams = 1000
	for i := range streams {
		hbuf.Reset()
		q := base64.RawURLEncoding.EncodeToString(mustPack(t, query(fmt.Sprintf("s%d.slow.test", i))))
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", testServerName},
			{":path", DoHPath + "?dns=" + q}} {
			require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
		}
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hbuf.Bytes(),
			EndStream: true, EndHeaders: true}))
	}
	// Read the server's frames: the refusals of the streams over the limit.
	var refused atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				refused.Add(1)
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.GoAwayFrame:
				return
			}
		}
	}()
	require.Eventually(t, func() bool { return d.up.waiting.Load() > 0 }, 5*time.Second, 10*time.Millisecond)

	// Meanwhile another client is answered, blocked and forwarded.
	other := d.client(false)
	for i := range 20 {
		r, _ := dohGet(t, other, d.url, query(fmt.Sprintf("o%d.blocked.test", i)))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		r, _ = dohPost(t, other, d.url, query(fmt.Sprintf("o%d.example.org", i)))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	}
	require.Eventually(t, func() bool { return refused.Load() >= streams-maxStreams }, 10*time.Second, 10*time.Millisecond,
		"streams over the limit are refused (%d refused)", refused.Load())
	assert.LessOrEqual(t, d.up.waiting.Load(), int64(maxStreams), "at most MaxStreams queries of one connection in progress")
	assert.LessOrEqual(t, d.handler.maxIn.Load(), int64(maxStreams+1), "the greedy connection's queries, plus one of the other client's")
	d.up.releaseSlow() // let the slow queries finish
	conn.Close()
	<-readDone
}

// TestDoHResetStreamNotBadRequest: an HTTP/2 client that resets its POST
// stream (RST_STREAM) before the body ended sent no bad request and gets
// no 400: it is not counted bad_request, as a DoQ client that cancels its
// stream is not. A POST whose body is no DNS message still is.
func TestDoHResetStreamNotBadRequest(t *testing.T) {
	d := newDoHSetup(t, false, nil)
	conn, fr := h2Frames(t, d)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	post := func(id uint32) {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", testServerName},
			{":path", DoHPath}, {"content-type", DoHContentType}} {
			require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
		}
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}))
	}
	const resets = 20
	id := uint32(1)
	for range resets {
		post(id)
		require.NoError(t, fr.WriteData(id, false, mustPack(t, query("example.org"))[:5]))
		require.NoError(t, fr.WriteRSTStream(id, http2.ErrCodeCancel))
		id += 2
	}
	bad := id
	post(bad)
	require.NoError(t, fr.WriteData(bad, true, []byte{1, 2, 3, 4, 5}))

	dec := hpack.NewDecoder(4096, nil)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var statuses []string
	for {
		f, err := fr.ReadFrame()
		require.NoError(t, err, "the 400 of the bad POST")
		if h, ok := f.(*http2.HeadersFrame); ok {
			fields, err := dec.DecodeFull(h.HeaderBlockFragment())
			require.NoError(t, err)
			for _, hf := range fields {
				if hf.Name == ":status" {
					statuses = append(statuses, fmt.Sprintf("%d:%s", h.StreamID, hf.Value))
				}
			}
			if h.StreamID == bad {
				break
			}
		}
	}
	assert.Equal(t, []string{fmt.Sprintf("%d:400", bad)}, statuses, "no answer to the reset streams")
	require.Eventually(t, func() bool { return d.counts.get(HTTPS, ResultBadRequest) >= 1 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, d.counts.get(HTTPS, ResultBadRequest), "the bad POST counted, none of the %d reset streams", resets)
}

// TestDoHGracefulShutdown: Shutdown lets a query in progress finish.
func TestDoHGracefulShutdown(t *testing.T) {
	d := newDoHSetup(t, false, nil)
	c := d.client(false)
	got := make(chan int, 1)
	go func() {
		resp, err := c.Get(d.url + "?dns=" + base64.RawURLEncoding.EncodeToString(mustPack(t, query("x.slow.test"))))
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	require.Eventually(t, func() bool { return d.up.waiting.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, d.srv.Shutdown(ctx))
	}()
	d.up.releaseSlow()
	assert.Equal(t, http.StatusOK, <-got)
	wg.Wait()
}

// TestForwardedDeviceCannotChooseClient: whatever a device writes in
// any of the three headers, one or two trusted proxies appending to one or
// both lists, or setting X-Real-IP, leave it its own address or an error
// (400), never a client of its choice (forwardedClient), over every such
// combination.
func TestForwardedDeviceCannotChooseClient(t *testing.T) {
	const dev, p1, victim = "10.1.2.3", "10.9.9.9", "10.7.7.7"
	trusted := func(a netip.Addr) bool { return a.String() == p1 || a.String() == "10.9.9.8" }
	devVals := [][]string{nil, {""}, {"10.9.9.8"}, {victim}, {victim + ", 10.9.9.8"}, {"10.9.9.8, " + victim}, {dev}, {"10.9.9.8", victim}}
	// A hop appends to X-Forwarded-For, appends to Forwarded, or sets
	// X-Real-IP to the address it saw (nginx's proxy_set_header), any
	// two or all three of these.
	type hop struct{ xff, fwd, xri bool }
	var hops []hop
	for i := 1; i < 8; i++ {
		hops = append(hops, hop{i&1 != 0, i&2 != 0, i&4 != 0})
	}
	chains := [][]hop{}
	for _, a := range hops {
		chains = append(chains, []hop{a})
		for _, b := range hops {
			if !a.xff && !a.fwd && b.xri {
				// A farther hop that sets X-Real-IP alone, which the
				// nearer one sets again to the farther's address,
				// leaves the device's address nowhere: the hop writes
				// nothing that reaches dnsfence, and a trusted proxy
				// must (README: Encrypted DNS). Its device's headers
				// then look like those of a chain that passed them on.
				continue
			}
			chains = append(chains, []hop{a, b})
		}
	}
	for _, dr := range []string{"", victim, "10.9.9.8", dev} {
		for _, dx := range devVals {
			for _, df := range devVals {
				for _, chain := range chains {
					xri := dr
					xff := strings.Join(dx, ", ")
					var fwd []string
					for _, v := range df {
						if v == "" {
							continue
						}
						for _, n := range strings.Split(v, ", ") {
							fwd = append(fwd, "for="+n)
						}
					}
					hasX, hasF := dx != nil, len(fwd) > 0
					from := dev
					for _, h := range chain {
						if h.xff {
							if hasX && xff != "" {
								xff += ", " + from
							} else {
								xff = from
							}
							hasX = true
						}
						if h.fwd {
							fwd = append(fwd, "for="+from)
							hasF = true
						}
						if h.xri {
							xri = from
						}
						from = p1
					}
					hdr := http.Header{}
					if xri != "" {
						hdr.Set("X-Real-IP", xri)
					}
					if hasX {
						hdr.Set("X-Forwarded-For", xff)
					}
					if hasF {
						hdr.Set("Forwarded", strings.Join(fwd, ", "))
					}
					c, ok, err := forwardedClient(hdr, trusted)
					if err == nil && (!ok || c.Addr().String() != dev) {
						t.Errorf("%v: client %v ok %v", hdr, c, ok)
					}
				}
			}
		}
	}
}

// TestForwardedUnclosedQuoteNamesNoClient: a device that opens a
// quoted-string in its own Forwarded element and never closes it (RFC 7239
// §4, RFC 9110 §5.6.4) must not swallow the element a trusted proxy
// appends to the same line (nginx's `proxy_set_header Forwarded
// "$http_forwarded, for=$remote_addr"`): read as quoted text, the proxy's
// entry vanished and the device's own for= named the client of its choice.
// Such a header is malformed: the request gets 400, never an answer.
func TestForwardedUnclosedQuoteNamesNoClient(t *testing.T) {
	const dev, victim = "10.1.2.3", "10.7.7.7"
	trusted := func(a netip.Addr) bool { return a.String() == "127.0.0.1" }
	tests := []struct {
		name, device string
	}{
		{name: "quote opened in another parameter", device: `for=` + victim + `;x="`},
		{name: "quote opened after a backslash", device: `for=` + victim + `;x=\"`},
		{name: "quote left open by a final backslash", device: `for=` + victim + `;by="a\`},
		{name: "quote opened in a second element", device: `for=192.0.2.1, for=` + victim + `;proto="https`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Forwarded", tc.device+", for="+dev) // the proxy appends to the device's line
			client, ok, err := forwardedClient(h, trusted)
			assert.Error(t, err, "client %v ok %v", client, ok)
			assert.False(t, ok)
		})
	}

	d := newDoHSetup(t, false, func(o *DoHOptions) { o.Trusted = trusted })
	req, err := http.NewRequest("GET", d.url+"?dns="+base64.RawURLEncoding.EncodeToString(mustPack(t, query("q.blocked.test"))), nil)
	require.NoError(t, err)
	req.Header.Set("Forwarded", tests[0].device+", for="+dev)
	resp, err := d.client(false).Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	_, seen := d.handler.seenFor("q.blocked.test")
	assert.False(t, seen, "not answered for a client the device chose")
}

// TestDoHClientNotReadingIsClosed: an HTTP/2 client that grants no
// flow-control credit for its answers while asking more has its connection
// closed once unreadMax of answers wait to be written, counted as
// not_reading, rather than each answer held for the write timeout, up to
// MaxStreams of them.
func TestDoHClientNotReadingIsClosed(t *testing.T) {
	closed := &closedLog{}
	d := newDoHSetup(t, false, func(o *DoHOptions) {
		o.Handler = &slowBigAnswers{}
		o.MaxStreams = 64
		o.Closed = closed.addReason
	})
	// The smallest windows net/http allows, opened only as bodies are
	// read, and no body is: answers of about 60,000 octets wait for credit.
	// One connection at a time: net/http may dial one for each request
	// asked at once, and spread over many none has unreadMax waiting
	// (TestServerToldOfClientsNotReading).
	tr := &http.Transport{TLSClientConfig: clientTLS(d.ca), ForceAttemptHTTP2: true, MaxConnsPerHost: 1,
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 1 << 10}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	query := mustPack(t, txtQuery("big.", 0))
	var bodies sync.WaitGroup
	for range 64 {
		bodies.Go(func() {
			resp, err := c.Post(d.url, DoHContentType, bytes.NewReader(query))
			if err == nil {
				t.Cleanup(func() { resp.Body.Close() }) // unread until the test ends
			}
		})
	}
	closed.wait(t, 10*time.Second)
	bodies.Wait()
	// Once for each connection closed: net/http's client asks the queries
	// the close failed again, on a new connection, which is closed too.
	for _, reason := range closed.all() {
		assert.Equal(t, ClosedNotReading, reason)
	}
}

// TestDoHBodyBudget: POST bodies that a client starts and never ends are
// held by the listener until ReadTimeout; past the first 512 octets of
// each they take from one budget over all its connections, and a POST
// that would go past it gets 503, counted dropped, while a query that
// fits in 512 octets is answered, as is the large one once the budget is
// given back. Without the budget 60 connections of 64 such bodies held
// 212 MB.
func TestDoHBodyBudget(t *testing.T) {
	d := newDoHSetup(t, false, func(o *DoHOptions) {
		o.BodyBudget = 4096
		o.ReadTimeout = time.Minute // the held body outlasts a slow run
	})
	conn := holdDoHBody(t, d)
	large := paddedBody(t, 2000) // 2,050 octets: 3,584 of the budget past its first 512
	status := postStatus(t, d)
	// The held body has its 3,584 (holdDoHBody): 512 are left, less than
	// the large body's first 1,024 past its free ones.
	require.Equal(t, http.StatusServiceUnavailable, status(large), "a body past the budget answered while another one held it")
	// The 512 it took before it went past are given back as its handler
	// returns, which net/http may let come after the 503 is read.
	assert.Eventually(t, func() bool { return d.srv.bodies.held.Load() == heldDoHBody }, 5*time.Second, 5*time.Millisecond,
		"the refused body's octets given back")
	assert.Equal(t, http.StatusOK, status(mustPack(t, query("small.example.org"))), "a query of 512 octets or less takes no budget")
	assert.GreaterOrEqual(t, d.counts.get(HTTPS, ResultDropped), 1, "the 503 counted dropped")

	conn.Close() // the held body's stream ends with its connection
	require.Eventually(t, func() bool { return status(large) == http.StatusOK }, 5*time.Second, 10*time.Millisecond,
		"the budget given back")
}

// TestDoHBodyBudgetQueryOf512: a query of exactly 512 octets takes no
// budget either, over HTTP/2, whose body gives its end only on a read
// after its last octets: with the budget held by another client's body,
// it is answered, not refused 503.
func TestDoHBodyBudgetQueryOf512(t *testing.T) {
	d := newDoHSetup(t, false, func(o *DoHOptions) {
		o.BodyBudget = heldDoHBody + 256 // less than 512 more
		o.ReadTimeout = time.Minute      // the held body outlasts a slow run
	})
	conn := holdDoHBody(t, d)
	t.Cleanup(func() { conn.Close() })
	q512 := paddedBody(t, 512-len(paddedBody(t, 0)))
	require.Len(t, q512, 512)
	status := postStatus(t, d)
	require.Equal(t, http.StatusServiceUnavailable, status(paddedBody(t, 2000)), "the budget is held")
	for range 5 {
		assert.Equal(t, http.StatusOK, status(q512), "a query of 512 octets takes no budget")
	}
}

// TestDoHBodyBudgetFilledToItsBound: the budget is the octets the bodies
// may hold, not one fewer: a body that takes all of it is held (and read
// on), and only the next one past it is refused 503.
func TestDoHBodyBudgetFilledToItsBound(t *testing.T) {
	d := newDoHSetup(t, false, func(o *DoHOptions) {
		o.BodyBudget = heldDoHBody
		o.ReadTimeout = time.Minute // the held body outlasts a slow run
	})
	conn := holdDoHBody(t, d)
	t.Cleanup(func() { conn.Close() })
	status := postStatus(t, d)
	assert.Equal(t, http.StatusServiceUnavailable, status(paddedBody(t, 600)), "a body past the budget answered")
	assert.Equal(t, http.StatusOK, status(mustPack(t, query("small.example.org"))), "a query of 512 octets or less takes no budget")
}

// heldDoHBody is the budget holdDoHBody's body takes: 4,000 octets, the
// first 512 free, then its buffer grown to 1,024, 2,048 and 4,096.
const heldDoHBody = 512 + 1024 + 2048

// holdDoHBody starts a POST on a connection of its own whose body of
// 4,000 octets never ends (heldDoHBody of the budget) and returns the
// connection, whose close gives the budget back.
func holdDoHBody(t *testing.T, d *dohSetup) net.Conn {
	t.Helper()
	conn, fr := h2Frames(t, d)
	go func() { // the server's frames, read so that it never waits on them
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", testServerName},
		{":path", DoHPath}, {"content-type", DoHContentType}} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndHeaders: true}))
	require.NoError(t, fr.WriteData(1, false, make([]byte, 4000)))
	require.Eventually(t, func() bool { return d.srv.bodies.held.Load() == heldDoHBody }, 5*time.Second, 5*time.Millisecond,
		"the listener holds the unended body")
	return conn
}

// paddedBody is a query with size octets of EDNS padding, packed.
func paddedBody(t *testing.T, size int) []byte { return mustPack(t, withPadding(size)) }

// postStatus is a function that POSTs a body to d and returns the status.
func postStatus(t *testing.T, d *dohSetup) func(body []byte) int {
	c := d.client(false)
	return func(body []byte) int {
		resp, err := c.Post(d.url, DoHContentType, bytes.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
}

// unpackableHandler answers every query with a reply miekg/dns cannot
// pack (an owner name with an empty label), so that its WriteMsg fails.
type unpackableHandler struct{}

func (unpackableHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "a..example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
	_ = w.WriteMsg(m)
	return nil
}

// oversizedHandler answers every query with raw octets one past the
// 65,535 a DNS message can hold (RFC 1035 §4.2.2's length field), so
// that its Write is refused.
type oversizedHandler struct{}

func (oversizedHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	_, _ = w.Write(make([]byte, dns.MaxMsgSize+1))
	return nil
}

// TestDoHWriteFailedIsNoDrop: a reply the Handler wrote and the listener
// could not take (it does not pack, or it is longer than 65,535 octets)
// is the server's fault, a 500 "no answer", not the 403 "query dropped
// by policy" of a query the Handler dropped without a word: that one
// would tell the client its query was blocked, and contradict the
// query's count and audit line.
func TestDoHWriteFailedIsNoDrop(t *testing.T) {
	for name, h := range map[string]Handler{"unpackable": unpackableHandler{}, "oversized": oversizedHandler{}} {
		t.Run(name, func(t *testing.T) {
			addr := serveDoH(t, NewDoHServer(DoHOptions{Handler: h, Trusted: trustNone}), "127.0.159.1")
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Post("http://"+addr+DoHPath, DoHContentType, bytes.NewReader(mustPack(t, query("example.org"))))
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
			assert.Equal(t, "no answer\n", string(body))
		})
	}
}

// TestNewDoHServerDefaults: a zero DoHOptions field takes the default
// named beside it, and a field given, however small, is kept: the cap of
// connections, of HTTP/2 streams, the four timeouts and the body budget
// reach the http.Server and the listener as set.
func TestNewDoHServerDefaults(t *testing.T) {
	s := NewDoHServer(DoHOptions{Handler: unpackableHandler{}})
	assert.Equal(t, DefaultDoHMaxConns, s.opt.MaxConns)
	assert.Equal(t, DefaultDoHMaxStreams, s.srv.HTTP2.MaxConcurrentStreams)
	assert.Equal(t, DefaultDoHReadHeaderTimeout, s.srv.ReadHeaderTimeout)
	assert.Equal(t, DefaultDoHReadTimeout, s.srv.ReadTimeout)
	assert.Equal(t, DefaultDoHWriteTimeout, s.srv.WriteTimeout)
	assert.Equal(t, DefaultDoHIdleTimeout, s.srv.IdleTimeout)
	assert.Equal(t, int64(DefaultQueryBudget), s.bodies.max)
	assert.NotNil(t, s.opt.Log)

	s = NewDoHServer(DoHOptions{Handler: unpackableHandler{}, MaxConns: 1, MaxStreams: 1, BodyBudget: 1,
		ReadHeaderTimeout: time.Millisecond, ReadTimeout: 2 * time.Millisecond,
		WriteTimeout: 3 * time.Millisecond, IdleTimeout: 4 * time.Millisecond})
	assert.Equal(t, 1, s.opt.MaxConns)
	assert.Equal(t, 1, s.srv.HTTP2.MaxConcurrentStreams)
	assert.Equal(t, time.Millisecond, s.srv.ReadHeaderTimeout)
	assert.Equal(t, 2*time.Millisecond, s.srv.ReadTimeout)
	assert.Equal(t, 3*time.Millisecond, s.srv.WriteTimeout)
	assert.Equal(t, 4*time.Millisecond, s.srv.IdleTimeout)
	assert.Equal(t, int64(1), s.bodies.max)
}

// TestDoHFailedHandshakeUncounted: a DoH listener given no
// HandshakeFailed (DoHOptions: optional) still serves after a client
// fails its TLS handshake, here by speaking plain HTTP to it: net/http's
// ConnState hook, which counts such a connection, calls no counter that
// is not there.
func TestDoHFailedHandshakeUncounted(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	srv := NewDoHServer(DoHOptions{Handler: newTestHandler(newTestUpstream(t)), Trusted: trustNone,
		TLS: ServerTLSConfig(store, ALPNHTTP2, ALPNHTTP1)})
	addr := serveDoH(t, srv, "127.0.163.1")

	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = io.WriteString(c, "GET "+DoHPath+" HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, _ = io.Copy(io.Discard, c) // net/http answers 400 and closes
	c.Close()

	d := &dohSetup{ca: ca}
	r, _ := dohPost(t, d.client(false), "https://"+addr+DoHPath, query("example.org"))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the listener still serves")
}

// octetsHandler answers every query with the octets reply returns for
// it, written as they are (ResponseWriter.Write), as a Handler does with
// an answer it holds packed.
type octetsHandler struct{ reply func(req *dns.Msg) []byte }

func (h octetsHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	_, _ = w.Write(h.reply(req))
	return nil
}

// TestDoHCacheControlOfAnswerWrittenAsOctets: an answer the Handler
// wrote as octets, not as a *dns.Msg, gets its Cache-Control max-age from
// its TTLs too (RFC 8484 §5.1), in decimal; octets that do not unpack get
// max-age=0, whatever records unpacked before the one cut short.
func TestDoHCacheControlOfAnswerWrittenAsOctets(t *testing.T) {
	var broken atomic.Bool
	h := octetsHandler{reply: func(req *dns.Msg) []byte {
		m := new(dns.Msg)
		m.SetReply(req)
		rr, _ := dns.NewRR(req.Question[0].Name + " 300 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		if broken.Load() {
			extra, _ := dns.NewRR("extra.example.org. 300 IN TXT \"x\"")
			m.Extra = append(m.Extra, extra)
		}
		b, _ := m.Pack()
		if broken.Load() {
			b = b[:len(b)-3] // the additional record cut short, after a whole answer
		}
		return b
	}}
	addr := serveDoH(t, NewDoHServer(DoHOptions{Handler: h, Trusted: trustNone}), "127.0.163.2")
	c := &http.Client{Timeout: 10 * time.Second}
	r, resp := dohPost(t, c, "http://"+addr+DoHPath, query("example.org"))
	require.Len(t, r.Answer, 1)
	assert.Equal(t, "private, max-age=300", resp.Header.Get("Cache-Control"))

	broken.Store(true)
	resp, err := c.Post("http://"+addr+DoHPath, DoHContentType, bytes.NewReader(mustPack(t, query("example.org"))))
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "private, max-age=0", resp.Header.Get("Cache-Control"))
}

// TestDoHRequestStopsTheFirstRequestTimer: a connection whose first
// request came in time is not closed by the first-request timer
// (cappedListener.firstRequest, twice ReadHeaderTimeout): it serves its
// next request after that time as it served the first.
func TestDoHRequestStopsTheFirstRequestTimer(t *testing.T) {
	const timeout = 400 * time.Millisecond // the first request must come within twice it, under load too
	var admitted atomic.Int64
	srv := NewDoHServer(DoHOptions{Handler: octetsHandler{reply: func(req *dns.Msg) []byte {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNameError)
		b, _ := m.Pack()
		return b
	}}, Trusted: trustNone, ReadHeaderTimeout: timeout, IdleTimeout: 10 * time.Second,
		Admit: func(netip.Addr) (func(), bool) { admitted.Add(1); return func() {}, true }})
	addr := serveDoH(t, srv, "127.0.163.3")
	c := &http.Client{Timeout: 10 * time.Second}
	dohPost(t, c, "http://"+addr+DoHPath, query("example.org"))
	time.Sleep(2*timeout + 400*time.Millisecond) // past the timer, had it run on
	dohPost(t, c, "http://"+addr+DoHPath, query("example.org"))
	assert.Equal(t, int64(1), admitted.Load(), "both requests on the one connection")
}

// TestDoHAnswersOverAMebibyteOnOneConnection: the octets of the answers
// written on a connection are given back once each is written
// (unreadMax bounds those waiting, not those sent): a client that reads
// its answers gets more than unreadMax of them on one connection.
func TestDoHAnswersOverAMebibyteOnOneConnection(t *testing.T) {
	big := bigOctets()
	var admitted atomic.Int64
	srv := NewDoHServer(DoHOptions{Handler: big, Trusted: trustNone,
		Admit: func(netip.Addr) (func(), bool) { admitted.Add(1); return func() {}, true }})
	addr := serveDoH(t, srv, "127.0.163.4")
	c := &http.Client{Timeout: 10 * time.Second}
	total := 0
	for total <= 2*unreadMax {
		resp, err := c.Post("http://"+addr+DoHPath, DoHContentType, bytes.NewReader(mustPack(t, query("big.example.org"))))
		require.NoError(t, err, "after %d octets of answers", total)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "after %d octets of answers", total)
		total += len(body)
	}
	assert.Equal(t, int64(1), admitted.Load(), "every answer on the one connection")
}

// localHandler answers NXDOMAIN inline and keeps the LocalAddr its writer
// gave for the last query.
type localHandler struct {
	mu    sync.Mutex
	local net.Addr
}

func (h *localHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	h.mu.Lock()
	h.local = w.LocalAddr()
	h.mu.Unlock()
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeNameError)
	_ = w.WriteMsg(m)
	return nil
}

func (h *localHandler) last() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.local.String()
}

// TestDoHLocalAddr: the writer's LocalAddr is the address the client
// connected to over HTTPS, and the unspecified address for a request
// over plain HTTP (a proxy in front, whose address is not known here)
// and for one a trusted proxy relayed naming its client.
func TestDoHLocalAddr(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	h := &localHandler{}
	proxy := netip.MustParseAddr("127.0.163.7")
	trusted := func(a netip.Addr) bool { return a == proxy }
	tlsAddr := serveDoH(t, NewDoHServer(DoHOptions{Handler: h, Trusted: trusted,
		TLS: ServerTLSConfig(store, ALPNHTTP2, ALPNHTTP1)}), "127.0.163.5")
	plainAddr := serveDoH(t, NewDoHServer(DoHOptions{Handler: h, Trusted: trustNone}), "127.0.163.6")
	unspecified := (&net.TCPAddr{}).String()

	d := &dohSetup{ca: ca}
	dohPost(t, d.client(false), "https://"+tlsAddr+DoHPath, query("example.org"))
	assert.Equal(t, tlsAddr, h.last(), "over HTTPS")

	dohPost(t, &http.Client{Timeout: 10 * time.Second}, "http://"+plainAddr+DoHPath, query("example.org"))
	assert.Equal(t, unspecified, h.last(), "over plain HTTP")

	tr := &http.Transport{TLSClientConfig: clientTLS(ca), ForceAttemptHTTP2: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: proxy.AsSlice()}}).DialContext}
	req, err := http.NewRequest(http.MethodPost, "https://"+tlsAddr+DoHPath, bytes.NewReader(mustPack(t, query("example.org"))))
	require.NoError(t, err)
	req.Header.Set("Content-Type", DoHContentType)
	req.Header.Set("X-Forwarded-For", "192.0.2.7")
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	readDoHAnswer(t, resp)
	assert.Equal(t, unspecified, h.last(), "relayed by a trusted proxy")
}

// TestHeldReplyKeepsTheFirst: the writer of a DoH or DoQ query keeps
// the first reply written, up to 65,535 octets (RFC 1035 §4.2.2), and
// refuses, with an error, a second one and one longer than that (marked
// failed); Write returns the octets it took.
func TestHeldReplyKeepsTheFirst(t *testing.T) {
	var h heldReply
	first := make([]byte, dns.MaxMsgSize)
	first[0] = 1
	n, err := h.Write(first)
	require.NoError(t, err, "65,535 octets fit")
	assert.Equal(t, dns.MaxMsgSize, n)
	n, err = h.Write([]byte{2})
	assert.Error(t, err, "a second reply")
	assert.Zero(t, n)
	assert.Error(t, h.WriteMsg(query("example.org")), "a second reply")
	got, _ := h.held()
	assert.Equal(t, first, got)
	assert.False(t, h.writeFailed())

	var over heldReply
	n, err = over.Write(make([]byte, dns.MaxMsgSize+1))
	assert.Error(t, err)
	assert.Zero(t, n)
	got, _ = over.held()
	assert.Nil(t, got)
	assert.True(t, over.writeFailed())
}

// TestDoHPostOfTheLongestMessage: a POST body of 65,535 octets, the
// longest DNS message (RFC 8484 §6), is a query like any other, not 413.
func TestDoHPostOfTheLongestMessage(t *testing.T) {
	addr := serveDoH(t, NewDoHServer(DoHOptions{Handler: &localHandler{}, Trusted: trustNone}), "127.0.163.8")
	longest := query("longest.example.org")
	longest.IsEdns0().Option = append(longest.IsEdns0().Option,
		&dns.EDNS0_PADDING{Padding: make([]byte, dns.MaxMsgSize-len(mustPack(t, longest))-4)})
	require.Len(t, mustPack(t, longest), dns.MaxMsgSize)
	r, _ := dohPost(t, &http.Client{Timeout: 10 * time.Second}, "http://"+addr+DoHPath, longest)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
}

// TestDoHBodyCutShortIsBadRequest: a POST whose body stops coming before
// its Content-Length, its client still there, gets 400 once ReadTimeout
// ends the read, counted once as a bad request.
func TestDoHBodyCutShortIsBadRequest(t *testing.T) {
	c := &counts{}
	srv := NewDoHServer(DoHOptions{Handler: &localHandler{}, Trusted: trustNone, Count: c.count,
		ReadTimeout: 300 * time.Millisecond})
	addr := serveDoH(t, srv, "127.0.163.10")
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	body := mustPack(t, query("example.org"))
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: dnsfence\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
		DoHPath, DoHContentType, len(body), body[:10])
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, whyBodyUnread+"\n", string(got))
	assert.Equal(t, 1, c.get(HTTPS, ResultBadRequest))
}
