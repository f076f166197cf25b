package upstream

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dotConns is tr's pool as it is now.
func dotConns(tr Transport) []*dotConn {
	dt := tr.(*dotTransport)
	dt.mu.Lock()
	defer dt.mu.Unlock()
	return append([]*dotConn(nil), dt.conns...)
}

// TestDoTAbandonedQueriesCountAsLoad: the queries abandoned on a
// connection (their IDs taken until an answer comes or dotAbandonedFor
// passes) count in its load as queries in flight do: dotPipeline of them
// and the next query opens another connection, rather than join the
// queries its upstream leaves unanswered.
func TestDoTAbandonedQueriesCountAsLoad(t *testing.T) {
	tr, srv, c := dialledNeverAnswering(t, newPKI(t))
	abandonPipeline(t, tr, c)
	require.Equal(t, 1, srv.connections())
	resp, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 2, srv.connections(), "the next query went on a new connection")
}

// TestDoTPoolBounds: a connection with dotMaxInflight IDs taken takes no
// more queries (a new connection is opened instead), and when each of
// dotPoolSize connections is so, a query fails at once rather than open
// another; while the pool is full of busy connections (dotPipeline
// queries each) but with IDs to spare, a query goes on one of them.
func TestDoTPoolBounds(t *testing.T) {
	pki := newPKI(t)
	t.Run("every ID taken", func(t *testing.T) {
		srv := startDoT(t, pki.good, serveFrames(answerWithA))
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		for i := range dotPoolSize {
			resp, err := tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", i), false))
			require.NoError(t, err, "query %d", i)
			require.Len(t, resp.Answer, 1)
			require.Equal(t, i+1, srv.connections(), "query %d on a new connection", i)
			// Every ID of the newest connection taken, as by abandoned
			// queries whose answers may still come.
			conns := dotConns(tr)
			require.Len(t, conns, i+1)
			c := conns[i]
			c.mu.Lock()
			for id := 0; len(c.waiting) < dotMaxInflight; id++ {
				if _, ok := c.waiting[uint16(id)]; !ok {
					c.waiting[uint16(id)] = nil
				}
			}
			c.mu.Unlock()
		}
		resp, err := tr.Exchange(context.Background(), clientQuery("over.example.", false))
		assert.Nil(t, resp)
		assert.ErrorContains(t, err, fmt.Sprintf("%d queries in flight on each of %d connections", dotMaxInflight, dotPoolSize))
		assert.Equal(t, dotPoolSize, srv.connections(), "no connection beyond the pool's")
	})
	t.Run("every connection busy", func(t *testing.T) {
		srv := startDoT(t, pki.good, serveFrames(answerWithA))
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		busy := func(c *dotConn, n int) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.load += n // as queries between pick and release
		}
		var conns []*dotConn
		for i := range dotPoolSize {
			_, err := tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", i), false))
			require.NoError(t, err, "query %d", i)
			require.Equal(t, i+1, srv.connections(), "query %d on a new connection", i)
			conns = dotConns(tr)
			busy(conns[i], dotPipeline)
		}
		t.Cleanup(func() {
			for _, c := range conns {
				busy(c, -dotPipeline)
			}
		})
		resp, err := tr.Exchange(context.Background(), clientQuery("more.example.", false))
		require.NoError(t, err, "the pool is full, its connections take more")
		assert.Len(t, resp.Answer, 1)
		assert.Equal(t, dotPoolSize, srv.connections())
	})
}

// TestDoTBrokenConnectionsLeaveThePool: a connection that broke leaves
// the pool, and with it its place: an upstream that closes its idle
// connections, time after time, never fills the pool with dead ones.
func TestDoTBrokenConnectionsLeaveThePool(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	for i := range 2 * dotPoolSize {
		resp, err := tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", i), false))
		require.NoError(t, err, "query %d", i)
		require.Len(t, resp.Answer, 1)
		srv.closeAll()
		require.Eventually(t, func() bool { return len(dotConns(tr)) == 0 }, 5*time.Second, 5*time.Millisecond,
			"the closed connection left the pool")
	}
	assert.Equal(t, 2*dotPoolSize, srv.connections())
}

// TestDoTConnectionsDrawTheirOwnIDs: each connection draws its query IDs
// from a generator seeded at random: two connections, one after the
// other, do not send the same IDs (nor would two dnsfence processes).
func TestDoTConnectionsDrawTheirOwnIDs(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	const n = 3
	for round := range 2 {
		for i := range n {
			_, err := tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("r%dq%d.example.", round, i), false))
			require.NoError(t, err)
		}
		srv.closeAll()
		require.Eventually(t, func() bool { return len(dotConns(tr)) == 0 }, 5*time.Second, 5*time.Millisecond)
	}
	require.Equal(t, 2, srv.connections())
	var ids [2][]uint16
	for _, b := range srv.queries() {
		q := new(dns.Msg)
		require.NoError(t, q.Unpack(b))
		var round, i int
		_, err := fmt.Sscanf(q.Question[0].Name, "r%dq%d.example.", &round, &i)
		require.NoError(t, err)
		ids[round] = append(ids[round], q.Id)
	}
	require.Len(t, ids[0], n)
	assert.NotEqual(t, ids[0], ids[1], "both connections sent the IDs %v", ids[0])
}
