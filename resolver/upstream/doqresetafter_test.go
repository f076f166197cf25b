package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQResetAfterAnswer: an upstream that writes a whole answer and then
// resets the stream instead of ending it with STREAM FIN (RFC 9250 §4.2)
// has cancelled it: the answer is not taken, and the query fails with the
// reset's code. The reset comes well after the answer, so that the answer
// has been read and the transport is waiting for the stream's end; a
// reset that overtook it would fail the query the same way.
func TestDoQResetAfterAnswer(t *testing.T) {
	pki := newPKI(t)
	srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		if q, ok := readDoQQuery(s, conn, str); ok {
			_ = writeFrame(str, answerWithA(q))
			time.Sleep(400 * time.Millisecond)
			str.CancelWrite(doqInternalError)
		}
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	assert.Nil(t, resp, "the answer of a stream reset is not taken")
	var de *DoQError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, &DoQError{Code: doqInternalError, Stream: true}, de)
}
