package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQAnswersKeepConnectionFromSilent: a DoQ connection is given up as
// silent only when a query timed out on it and no answer came in on it for
// a whole timeout, counted from the last answer, or from the dial before
// the first: a query that times out on a new connection, or on one that
// answers others, keeps it, as over DoT and DoH
// (TestDoHAnswersKeepConnectionFromSilent); and a query that fails
// otherwise (its stream reset by the upstream, which is an answer) keeps
// even a connection that had been silent. The connection is made to look
// an hour old.
func TestDoQAnswersKeepConnectionFromSilent(t *testing.T) {
	pki := newPKI(t)
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		q, ok := readDoQQuery(s, conn, str)
		if !ok {
			return
		}
		switch q.Question[0].Name {
		case "never.example.":
			<-str.Context().Done()
		case "reset.example.":
			str.CancelWrite(doqInternalError)
		default:
			_ = writeFrame(str, answerWithA(q))
			_ = str.Close()
		}
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t)).(*doqTransport)
	never := func(d time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := tr.Exchange(ctx, clientQuery("never.example.", false))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	answered := func(name string) {
		t.Helper()
		resp, err := tr.Exchange(context.Background(), clientQuery(name, false))
		require.NoError(t, err)
		assert.Len(t, resp.Answer, 1)
	}
	anHourOld := func() {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		require.NotNil(t, tr.conn)
		tr.conn.answered.mark(time.Now().Add(-time.Hour))
	}

	never(time.Second) // on the connection just made
	answered("a.example.")
	require.Equal(t, 1, srv.connections(), "a new connection is not silent")

	anHourOld()
	answered("b.example.")
	never(300 * time.Millisecond)
	answered("c.example.")
	require.Equal(t, 1, srv.connections(), "a connection that answered since is not silent")

	anHourOld()
	_, err := tr.Exchange(context.Background(), clientQuery("reset.example.", false))
	var de *DoQError
	require.ErrorAs(t, err, &de)
	assert.True(t, de.Stream)
	answered("d.example.")
	assert.Equal(t, 1, srv.connections(), "a stream reset is no silence")
	assert.Empty(t, srv.closeCodes())
}
