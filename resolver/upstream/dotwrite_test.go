package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoTWriteOnAClosedConnectionRetried: a query waiting for its turn
// to write on a connection that the upstream then closes fails its write
// (the connection is closed under it); the query went nowhere, and it is
// sent on a new connection, as one in flight on a connection that breaks
// is, not failed with the write's error.
func TestDoTWriteOnAClosedConnectionRetried(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("first.example.", false))
	require.NoError(t, err)
	c := onlyDoTConn(t, tr)

	c.wturn <- struct{}{} // another frame being written
	type result struct {
		resp *dns.Msg
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := tr.Exchange(context.Background(), clientQuery("held.example.", false))
		done <- result{resp, err}
	}()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.waiting) == 1
	}, 5*time.Second, 5*time.Millisecond, "the query took its ID and waits to write")
	srv.closeAll()
	// Closed on our side too: the read loop closes it once it has failed.
	require.Eventually(t, func() bool { return c.conn.NetConn().SetWriteDeadline(time.Time{}) != nil },
		5*time.Second, 5*time.Millisecond, "the connection closed")
	<-c.wturn

	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Len(t, r.resp.Answer, 1)
		assert.Equal(t, "held.example.", r.resp.Answer[0].Header().Name)
	case <-time.After(10 * time.Second):
		t.Fatal("the query did not end")
	}
	assert.Equal(t, 2, srv.connections())
}
