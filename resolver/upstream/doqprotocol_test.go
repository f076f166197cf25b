package upstream

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQProtocolErrorResendsOthers: when one query's answer breaks the
// protocol and the client closes the connection with DOQ_PROTOCOL_ERROR
// (RFC 9250 §4.3.3), a query in flight on it is sent once more on a new
// connection and answered: the close is the client's own, not the
// upstream's error code, which would fail it over (TestDoQErrors,
// TestDoQExcessiveLoadFailsOver).
func TestDoQProtocolErrorResendsOthers(t *testing.T) {
	pki := newPKI(t)
	held := make(chan struct{})
	var first atomic.Pointer[quic.Conn]
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		first.CompareAndSwap(nil, conn)
		q, ok := readDoQQuery(s, conn, str)
		switch {
		case !ok:
		case first.Load() == conn && q.Question[0].Name == "held.example.":
			close(held)
			<-str.Context().Done() // until the client closes the connection
		case first.Load() == conn: // bad.example.
			m := answerWithA(q)
			m.Id = 77
			_ = writeFrame(str, m)
			_ = str.Close()
		default:
			_ = writeFrame(str, answerWithA(q))
			_ = str.Close()
		}
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	done := make(chan error, 1)
	go func() {
		resp, err := tr.Exchange(context.Background(), clientQuery("held.example.", false))
		if err == nil && len(resp.Answer) != 1 {
			err = errors.New("no answer")
		}
		done <- err
	}()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the held query did not arrive")
	}
	_, err := tr.Exchange(context.Background(), clientQuery("bad.example.", false))
	require.ErrorIs(t, err, ErrProtocol)
	assert.ErrorContains(t, err, "answer with ID 77")
	select {
	case err := <-done:
		require.NoError(t, err, "the held query was sent once more")
	case <-time.After(5 * time.Second):
		t.Fatal("the held query did not end")
	}
	assert.Equal(t, 2, srv.connections())
	require.Eventually(t, func() bool { return len(srv.closeCodes()) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, []uint64{doqProtocolError}, srv.closeCodes(), "the client closed it with DOQ_PROTOCOL_ERROR")
}
