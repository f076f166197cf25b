package upstream

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHRequestURL: the URL a DoH upstream is asked at names the server
// as its certificate does, with the port only when it is not 443 (the
// authority https has by default, RFC 9110 §4.2.2), and an IPv6 address
// in brackets, with a port or without (RFC 3986 §3.2.2): net/http reads
// the authority back as that host, or, unbracketed, refuses every
// request.
func TestDoHRequestURL(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream string
		url      string
		host     string // the request's authority, as net/http reads it
	}{
		{"name", "https://dns.example/dns-query", "https://dns.example/dns-query", "dns.example"},
		{"name and port", "https://dns.example:8443/q", "https://dns.example:8443/q", "dns.example:8443"},
		{"ipv4 as its name", "https://192.0.2.1/dns-query#192.0.2.1", "https://192.0.2.1/dns-query", "192.0.2.1"},
		{"ipv4 named", "https://192.0.2.1:4443/dns-query#dns.example", "https://dns.example:4443/dns-query", "dns.example:4443"},
		{"ipv6 as its name", "https://[2001:db8::1]/dns-query#2001:db8::1", "https://[2001:db8::1]/dns-query", "[2001:db8::1]"},
		{"ipv6 as its name and port", "https://[2001:db8::1]:8443/dns-query#2001:db8::1", "https://[2001:db8::1]:8443/dns-query", "[2001:db8::1]:8443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := ParseAddress(tc.upstream)
			require.NoError(t, err)
			tr := newDoH(addr, Options{})
			t.Cleanup(func() { _ = tr.Close() })
			assert.Equal(t, tc.url, tr.url)
			req, err := http.NewRequest(http.MethodPost, tr.url, http.NoBody)
			require.NoError(t, err)
			assert.Equal(t, tc.host, req.URL.Host)
		})
	}
}

// TestDoHAsksNoCompression: DoH requests, over HTTP/2 and over HTTP/1.1
// once an upstream answered so, ask for no content coding (no
// Accept-Encoding: net/http would ask for gzip): a DNS message is taken as
// the octets that came, within the 65,535 the body may hold, never
// inflated from a smaller body.
func TestDoHAsksNoCompression(t *testing.T) {
	pki := newPKI(t)
	for _, http2 := range []bool{true, false} {
		t.Run(fmt.Sprintf("http2 %v", http2), func(t *testing.T) {
			srv := startDoHWith(t, pki.good, answerWithA, http2)
			requests := recordRequests(srv)
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			for _, name := range []string{"a.example.", "b.example."} {
				_, err := tr.Exchange(context.Background(), clientQuery(name, false))
				require.NoError(t, err)
			}
			reqs := requests()
			require.Len(t, reqs, 2)
			for _, r := range reqs {
				assert.Empty(t, r.Header.Values("Accept-Encoding"), "HTTP/%d", r.ProtoMajor)
			}
		})
	}
}

// TestDoHQueryPacked: a query goes out over DNS over HTTPS with the EDNS
// options it had, edns-tcp-keepalive among them (only DoQ leaves it out),
// as over DoT (TestDoTQueryPacked), and one that cannot be packed (two
// questions) fails before anything is sent.
func TestDoHQueryPacked(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	q := clientQuery("keepalive.example.", false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
	assert.Contains(t, sentOptionCodes(t, tr, q, srv.queries), uint16(dns.EDNS0TCPKEEPALIVE))

	twoQuestionsFail(t, tr)
	assert.Len(t, srv.queries(), 1, "nothing sent")
}
