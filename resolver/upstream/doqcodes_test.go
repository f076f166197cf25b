package upstream

import (
	"context"
	"fmt"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQErrorCodeNames: the error of a query whose stream the upstream
// reset names the code as RFC 9250 §8.4 does, each of the six, and an
// unregistered code by its number: it is what the log says of the
// upstream's failure.
func TestDoQErrorCodeNames(t *testing.T) {
	pki := newPKI(t)
	for _, tc := range []struct {
		code uint64
		want string
	}{
		{doqNoError, "DOQ_NO_ERROR (0)"},
		{doqInternalError, "DOQ_INTERNAL_ERROR (1)"},
		{doqProtocolError, "DOQ_PROTOCOL_ERROR (2)"},
		{doqRequestCancelled, "DOQ_REQUEST_CANCELLED (3)"},
		{doqExcessiveLoad, "DOQ_EXCESSIVE_LOAD (4)"},
		{doqUnspecifiedError, "DOQ_UNSPECIFIED_ERROR (5)"},
		{0xd098e, "error code 0xd098e"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			srv := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
				if _, ok := readDoQQuery(s, conn, str); ok {
					str.CancelWrite(quic.StreamErrorCode(tc.code))
				}
			})
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			assert.Nil(t, resp)
			var de *DoQError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, &DoQError{Code: tc.code, Stream: true}, de)
			assert.EqualError(t, de, fmt.Sprintf("the upstream reset the query's stream with %s", tc.want))
		})
	}
}
