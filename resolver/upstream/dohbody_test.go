package upstream

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHLargestAnswer: an answer body of 65,535 octets, the largest DNS
// message there is, is taken whole (one octet more is refused:
// TestDoHBadAnswers).
func TestDoHLargestAnswer(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	srv.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
		q := dohQuery(r)
		require.NotNil(t, q)
		m := answerWithA(q)
		pad := m.IsEdns0().Option[0].(*dns.EDNS0_PADDING)
		pad.Padding = nil
		b, err := m.Pack()
		require.NoError(t, err)
		pad.Padding = make([]byte, dns.MaxMsgSize-len(b))
		b, err = m.Pack()
		require.NoError(t, err)
		require.Len(t, b, dns.MaxMsgSize)
		w.Header().Set("Content-Type", dohMediaType)
		_, _ = w.Write(b)
		return true
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, "192.0.2.1", resp.Answer[0].(*dns.A).A.String())
}

// TestDoHErrorStatusKeepsConnection: an HTTP/1.1 answer with an error
// status has its short body read to the end, so that the connection,
// which carries one request at a time, is kept for the next query rather
// than closed and dialled anew.
func TestDoHErrorStatusKeepsConnection(t *testing.T) {
	pki := newPKI(t)
	srv := startDoHWith(t, pki.good, answerWithA, false)
	var requests atomic.Int32
	srv.setBefore(func(w http.ResponseWriter, _ *http.Request) bool {
		if requests.Add(1) != 2 {
			return false
		}
		http.Error(w, "the backend is down", http.StatusServiceUnavailable)
		return true
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err, "over HTTP/1.1 from now on")
	_, err = tr.Exchange(context.Background(), clientQuery("b.example.", false))
	var se *HTTPStatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusServiceUnavailable, se.Status)
	resp, err := tr.Exchange(context.Background(), clientQuery("c.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, []int{1, 1, 1}, srv.httpVersions())
	assert.Equal(t, 2, srv.connections(), "the first query's, then one for the others")
}

// TestDoHHTTP1LeavesNoConnectionOpen: over an upstream that speaks only
// HTTP/1.1, no connection is left open unused: not the first one, made
// through the HTTP/2 transport before the upstream was known to answer
// over HTTP/1.1 (nothing would use it again), and not one whose answer
// was refused unread (a captive portal's HTML page: net/http keeps a
// connection whose body is neither read to its end nor closed).
func TestDoHHTTP1LeavesNoConnectionOpen(t *testing.T) {
	pki := newPKI(t)
	srv := startDoHWith(t, pki.good, answerWithA, false)
	var requests atomic.Int32
	srv.setBefore(func(w http.ResponseWriter, _ *http.Request) bool {
		if requests.Add(1) != 2 {
			return false
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>captive portal</html>"))
		return true
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.open() == 0 }, 5*time.Second, 5*time.Millisecond,
		"the HTTP/2 transport's connection is still open")
	_, err = tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.ErrorIs(t, err, ErrProtocol)
	require.Eventually(t, func() bool { return srv.open() == 0 }, 5*time.Second, 5*time.Millisecond,
		"the connection of the refused answer is still open")
	assert.Equal(t, []int{1, 1}, srv.httpVersions())
}
