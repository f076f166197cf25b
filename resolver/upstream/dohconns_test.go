package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHClosedConnectionsForgotten: a connection that closes (here: the
// upstream closed it, and the next query dialled anew) leaves the
// transport's set of connections to close at Close, which holds the open
// ones alone rather than one more for each reconnection of a long run.
func TestDoHClosedConnectionsForgotten(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t)).(*dohTransport)
	conns := func() int {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.conns)
	}
	for i := range 3 {
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		require.NoError(t, err)
		assert.Len(t, resp.Answer, 1)
		require.Equal(t, i+1, srv.connections())
		srv.closeAll()
		require.Eventually(t, func() bool { return conns() == 0 }, 5*time.Second, 5*time.Millisecond,
			"%d connections closed, %d kept", i+1, conns())
	}
}
