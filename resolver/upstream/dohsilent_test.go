package upstream

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHAnswersKeepConnectionFromSilent: a DoH connection is found silent
// when no response came in on it for a whole timeout, counted from the
// last response, or from the connect before the first: a query that times
// out on a new connection, or on one that answers others, keeps it, as
// over DoT (TestDoTAnswersKeepConnectionFromSilent). The connection is
// then made to look an hour old.
func TestDoHAnswersKeepConnectionFromSilent(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	srv.setBefore(func(_ http.ResponseWriter, r *http.Request) bool {
		body, err := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		q := new(dns.Msg)
		if err == nil && q.Unpack(body) == nil && q.Question[0].Name == "never.example." {
			<-r.Context().Done()
			return true
		}
		return false
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t)).(*dohTransport)
	never := func(d time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := tr.Exchange(ctx, clientQuery("never.example.", false))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}

	never(time.Second) // on the connection just made
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	require.Equal(t, 1, srv.connections(), "a new connection is not silent")

	tr.mu.Lock()
	require.Len(t, tr.conns, 1)
	for c := range tr.conns {
		c.answered.mark(time.Now().Add(-time.Hour))
	}
	tr.mu.Unlock()
	_, err = tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err, "a response read now")
	never(300 * time.Millisecond)
	resp, err := tr.Exchange(context.Background(), clientQuery("c.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 1, srv.connections(), "the connection was kept")
}
