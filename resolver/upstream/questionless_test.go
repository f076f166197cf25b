package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEncryptedQuestionlessOnlyForFailures: an answer without a question
// section cannot be matched to the query; the plain transport accepts one
// only for SERVFAIL, REFUSED and NOTIMP (checkAnswer, failureRcode). The
// encrypted transports (wireQuery.answer) accept any non-zero RCODE, so an
// NXDOMAIN (or YXDOMAIN, NOTAUTH...) with no question is taken as the
// answer to whatever was asked.
func TestEncryptedQuestionlessOnlyForFailures(t *testing.T) {
	pki := newPKI(t)
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, pki.good, func(q *dns.Msg) *dns.Msg {
				m := new(dns.Msg)
				m.SetRcode(q, dns.RcodeNameError)
				m.Question = nil
				return m
			})
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			resp, err := tr.Exchange(context.Background(), clientQuery("www.example.", false))
			if err == nil {
				require.NotNil(t, resp)
				assert.Failf(t, "question-less NXDOMAIN accepted", "rcode %s, %d questions", dns.RcodeToString[resp.Rcode], len(resp.Question))
				return
			}
			assert.ErrorIs(t, err, ErrProtocol)
		})
	}
}

// TestPlainQuestionlessOnlyForFailures is the plain transport's rule, for
// comparison: the same answer is a mismatch.
func TestPlainQuestionlessOnlyForFailures(t *testing.T) {
	q := clientQuery("www.example.", false)
	m := new(dns.Msg)
	m.SetRcode(q, dns.RcodeNameError)
	m.Question = nil
	assert.ErrorIs(t, checkAnswer(m, q), ErrAnswerMismatch)
}

// TestDoHUpstreamOverItsStreamLimit: a DoH upstream whose HTTP/2
// MAX_CONCURRENT_STREAMS is smaller than the queries in flight. The
// transport keeps MaxConnsPerHost 1; do the queries beyond the limit wait
// for a stream, or stall until the timeout?
func TestDoHUpstreamOverItsStreamLimit(t *testing.T) {
	pki := newPKI(t)
	var active, peak atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := active.Add(1)
			defer active.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			body, _ := io.ReadAll(r.Body)
			q := new(dns.Msg)
			if q.Unpack(body) != nil {
				http.Error(w, "bad", 400)
				return
			}
			time.Sleep(300 * time.Millisecond)
			b, _ := answerWithA(q).Pack()
			w.Header().Set("Content-Type", dohMediaType)
			_, _ = w.Write(b)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.good}, NextProtos: []string{"h2"}},
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: 2},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	opts := pki.testOptions(t)
	opts.Timeout = 3 * time.Second
	tr := newEncryptedTransport(t, "https://"+ln.Addr().String()+"/dns-query#"+testServerName, opts)
	// Warm the connection so the server's SETTINGS are known.
	_, err = tr.Exchange(context.Background(), clientQuery("warm.example.", false))
	require.NoError(t, err)

	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	took := make([]time.Duration, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, errs[i] = tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", i), false))
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	t.Logf("peak concurrent requests at the server: %d; took %v", peak.Load(), took)
	for i, err := range errs {
		assert.NoError(t, err, "query %d after %v", i, took[i])
	}
}
