package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQQueryBeyondStreamLimit: a query that finds every stream the
// upstream allows taken (its MAX_STREAMS, here 1, held by a query it
// does not answer) waits for one until its deadline and fails with it,
// keeping the connection: once the held stream ends, the next query is
// answered on it.
func TestDoQQueryBeyondStreamLimit(t *testing.T) {
	pki := newPKI(t)
	srv := startDoQWith(t, pki.good, &quic.Config{MaxIncomingStreams: 1}, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		q, ok := readDoQQuery(s, conn, str)
		if !ok {
			return
		}
		if q.Question[0].Name == "held.example." {
			<-str.Context().Done() // the client cancelled it
			str.CancelRead(doqRequestCancelled)
			str.CancelWrite(doqRequestCancelled)
			return
		}
		_ = writeFrame(str, answerWithA(q))
		_ = str.Close()
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err, "the connection, made")

	heldCtx, release := context.WithCancel(context.Background())
	held := make(chan error, 1)
	go func() {
		_, err := tr.Exchange(heldCtx, clientQuery("held.example.", false))
		held <- err
	}()
	require.Eventually(t, func() bool { return len(srv.queries()) == 2 }, 5*time.Second, 5*time.Millisecond, "the held query arrived")

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = tr.Exchange(ctx, clientQuery("waits.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Len(t, srv.queries(), 2, "no stream for it")

	release()
	select {
	case err := <-held:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("the held query did not end")
	}
	resp, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 1, srv.connections())
}
