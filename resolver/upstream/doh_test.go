package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHHTTP2: queries go as HTTP/2 streams of one connection, as POST
// application/dns-message to the URL's path, with the server name as the
// authority.
func TestDoHHTTP2(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	var mu sync.Mutex
	var reqs []*http.Request
	srv.setBefore(func(_ http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		reqs = append(reqs, r.Clone(context.Background()))
		mu.Unlock()
		return false
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	exchangeConcurrently(t, tr, 30)
	exchangeConcurrently(t, tr, 5)
	assert.Equal(t, 1, srv.connections(), "35 queries, one connection")
	versions := srv.httpVersions()
	require.Len(t, versions, 35)
	for _, v := range versions {
		assert.Equal(t, 2, v, "HTTP/2")
	}
	_, port, err := net.SplitHostPort(srv.srv.Listener.Addr().String())
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	for _, r := range reqs {
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "/dns-query", r.URL.Path)
		assert.Equal(t, testServerName+":"+port, r.Host)
		assert.Equal(t, "application/dns-message", r.Header.Get("Content-Type"))
		assert.Equal(t, "application/dns-message", r.Header.Get("Accept"))
	}
}

// TestDoHBadAnswers: an answer that is not status 200 with an
// application/dns-message body of at most 65,535 octets is an ErrProtocol
// naming what was wrong, sent once (the upstream answered: no retry), and
// never taken for an answer.
func TestDoHBadAnswers(t *testing.T) {
	pki := newPKI(t)
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter)
		status int // the HTTPStatusError's, 0 for none
		want   string
	}{
		{"server error", func(w http.ResponseWriter) { http.Error(w, "down", http.StatusServiceUnavailable) }, 503, "http status 503 Service Unavailable"},
		{"not found", func(w http.ResponseWriter) { http.Error(w, "no", http.StatusNotFound) }, 404, "http status 404"},
		{"redirect not followed", func(w http.ResponseWriter) {
			w.Header().Set("Location", "https://elsewhere.test/dns-query")
			w.WriteHeader(http.StatusFound)
		}, 302, "http status 302"},
		{"html", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>captive portal</html>"))
		}, 0, `content type "text/html"`},
		{"no content type", func(w http.ResponseWriter) {
			w.Header()["Content-Type"] = nil
			_, _ = w.Write(make([]byte, 40))
		}, 0, "content type"},
		{"body over 65535", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/dns-message")
			_, _ = w.Write(make([]byte, 70000))
		}, 0, "answer body over 65535 octets"},
		{"not dns", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/dns-message")
			_, _ = w.Write([]byte("hello"))
		}, 0, "malformed answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDoH(t, pki.good, answerWithA)
			srv.setBefore(func(w http.ResponseWriter, _ *http.Request) bool {
				tc.answer(w)
				return true
			})
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			assert.Nil(t, resp)
			assert.ErrorIs(t, err, ErrProtocol)
			assert.ErrorContains(t, err, tc.want)
			var se *HTTPStatusError
			if tc.status != 0 {
				require.ErrorAs(t, err, &se)
				assert.Equal(t, tc.status, se.Status)
			} else {
				assert.False(t, errors.As(err, &se))
			}
			assert.Len(t, srv.httpVersions(), 1, "sent once")
		})
	}
}

// TestDoHBrokenConnection: a query on a connection that breaks under it is
// sent once more on a new connection.
func TestDoHBrokenConnection(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	var first sync.Once
	srv.setBefore(func(http.ResponseWriter, *http.Request) bool {
		broke := false
		first.Do(func() {
			srv.closeAll()
			broke = true
		})
		return broke
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 2, srv.connections())
	assert.Len(t, srv.httpVersions(), 2, "the query went out twice")
}

// TestDoHHostName: an https upstream written with a host name connects to
// the addresses Options.Resolve gives for it, and verifies the certificate
// for that name.
func TestDoHHostName(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	_, port, err := net.SplitHostPort(srv.srv.Listener.Addr().String())
	require.NoError(t, err)
	upstream := "https://" + testServerName + ":" + port + "/dns-query"

	var mu sync.Mutex
	var asked []string
	opts := pki.testOptions(t)
	opts.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, host)
		// The first address refuses: the next one is tried.
		return []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}, nil
	}
	tr := newEncryptedTransport(t, upstream, opts)
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	mu.Lock()
	assert.Equal(t, []string{testServerName}, asked)
	mu.Unlock()

	t.Run("lookup fails", func(t *testing.T) {
		opts := pki.testOptions(t)
		opts.Resolve = func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") }
		tr := newEncryptedTransport(t, upstream, opts)
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.Nil(t, resp)
		assert.ErrorContains(t, err, "looking up dns.test: no such host")
	})
	t.Run("no address", func(t *testing.T) {
		opts := pki.testOptions(t)
		opts.Resolve = func(context.Context, string) ([]netip.Addr, error) { return nil, nil }
		tr := newEncryptedTransport(t, upstream, opts)
		_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.ErrorContains(t, err, "looking up dns.test: no address")
	})
	t.Run("address", func(t *testing.T) {
		tr := newEncryptedTransport(t, upstream, opts)
		assert.Equal(t, upstream, tr.Address())
		assert.True(t, strings.HasPrefix(tr.(*dohTransport).url, "https://dns.test:"))
	})
}
