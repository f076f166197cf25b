package upstream

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// onlyDoTConn is the one connection of tr's pool.
func onlyDoTConn(t *testing.T, tr Transport) *dotConn {
	t.Helper()
	dt := tr.(*dotTransport)
	dt.mu.Lock()
	defer dt.mu.Unlock()
	require.Len(t, dt.conns, 1)
	return dt.conns[0]
}

// dialled starts a DoT upstream answering as answer does and a transport
// to it with one connection made (first.example. asked): the transport,
// the upstream and that connection.
func dialled(t *testing.T, pki *testPKI, answer func(*dns.Msg) *dns.Msg) (Transport, *dotTestServer, *dotConn) {
	t.Helper()
	srv := startDoT(t, pki.good, serveFrames(answer))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("first.example.", false))
	require.NoError(t, err)
	return tr, srv, onlyDoTConn(t, tr)
}

// dialledNeverAnswering is dialled with an upstream that answers every
// query but those for never.example., which it leaves unanswered.
func dialledNeverAnswering(t *testing.T, pki *testPKI) (Transport, *dotTestServer, *dotConn) {
	t.Helper()
	return dialled(t, pki, func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Name == "never.example." {
			return nil
		}
		return answerWithA(q)
	})
}

// answeredOnRelease answers as answerWithA, but a query for slow.example.
// only once release is closed (10 s at most).
func answeredOnRelease(release <-chan struct{}) func(*dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Name == "slow.example." {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		return answerWithA(q)
	}
}

// abandonPipeline asks tr never.example. with a 20 ms deadline until
// dotPipeline queries are abandoned on c (at most 100 tries), and
// requires that many.
func abandonPipeline(t *testing.T, tr Transport, c *dotConn) {
	t.Helper()
	abandoned := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.abandoned
	}
	for i := 0; i < 100 && abandoned() < dotPipeline; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := tr.Exchange(ctx, clientQuery("never.example.", false))
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	require.Equal(t, dotPipeline, abandoned())
}

// TestDoTIDNotReusedWhileTaken: a query's ID is never one still taken on
// its connection, here by an abandoned query whose answer may yet come:
// the late answer would be taken for the new query's (RFC 7766 §7: IDs
// unique among the queries in flight on a connection). The connection's
// ID generator is set to draw the abandoned query's ID first for the
// next query too.
func TestDoTIDNotReusedWhileTaken(t *testing.T) {
	release := make(chan struct{})
	tr, srv, c := dialled(t, newPKI(t), answeredOnRelease(release))
	t.Cleanup(func() { close(release) })
	seed := [32]byte{1, 2, 3}
	reseed := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.ids = rand.NewChaCha8(seed)
	}

	reseed()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := tr.Exchange(ctx, clientQuery("slow.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	reseed() // the next draw is the abandoned query's ID
	resp, err := tr.Exchange(context.Background(), clientQuery("next.example.", false))
	require.NoError(t, err)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, "next.example.", resp.Answer[0].Header().Name)

	ids := map[string]uint16{}
	for _, b := range srv.queries() {
		q := new(dns.Msg)
		require.NoError(t, q.Unpack(b))
		ids[q.Question[0].Name] = q.Id
	}
	require.Contains(t, ids, "slow.example.")
	require.Contains(t, ids, "next.example.")
	assert.NotEqual(t, ids["slow.example."], ids["next.example."], "an ID still taken was given to another query")
	assert.Equal(t, 1, srv.connections())
}

// TestDoTUnsentQueryFreesItsID: a query whose deadline comes while it
// waits for its turn to write (another frame being written) sends
// nothing, and frees the ID it took: it is neither in flight nor
// abandoned, and no answer can come for it. Kept, such IDs piled up on
// the connection, never expired, until it ran out (dotMaxInflight).
func TestDoTUnsentQueryFreesItsID(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("first.example.", false))
	require.NoError(t, err)
	c := onlyDoTConn(t, tr)

	c.wturn <- struct{}{} // another frame being written, for as long as the test says
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_, err := tr.Exchange(ctx, clientQuery("unsent.example.", false))
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	c.mu.Lock()
	waiting, abandoned := len(c.waiting), c.abandoned
	c.mu.Unlock()
	assert.Zero(t, waiting, "IDs of queries never sent still taken")
	assert.Zero(t, abandoned)
	<-c.wturn

	resp, err := tr.Exchange(context.Background(), clientQuery("next.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Len(t, srv.queries(), 2, "no unsent query was written")
	assert.Equal(t, 1, srv.connections(), "the connection was kept")
}

// TestDoTAbandonedExpireTheOldOnes: of the abandoned queries' IDs, those
// abandoned more than dotAbandonedFor ago are freed and the others kept
// (TestDoTAbandonedExpire counts them; here, which ones): a young one's
// answer may still come, and must not be taken for another query's.
func TestDoTAbandonedExpireTheOldOnes(t *testing.T) {
	tr, _, c := dialledNeverAnswering(t, newPKI(t))
	abandonPipeline(t, tr, c)
	c.mu.Lock()
	var young []uint16
	n := 0
	for id := range c.abandonedAt {
		if n < dotPipeline/2 {
			c.abandonedAt[id] = time.Now().Add(-dotAbandonedFor - time.Second)
		} else {
			young = append(young, id)
		}
		n++
	}
	c.mu.Unlock()
	_, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	var left []uint16
	for id := range c.waiting {
		left = append(left, id)
	}
	slices.Sort(young)
	slices.Sort(left)
	assert.Equal(t, young, left, "the IDs still taken are the young ones")
}

// TestDoTLateAnswerFreesAbandonedID: the late answer to an abandoned
// query frees its ID whole, with the time it was abandoned at: a time
// left behind would later expire (expireAbandoned) whatever query then
// holds the ID, freeing it under that query, and count one abandoned
// query fewer than there are.
func TestDoTLateAnswerFreesAbandonedID(t *testing.T) {
	release := make(chan struct{})
	tr, _, c := dialled(t, newPKI(t), answeredOnRelease(release))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := tr.Exchange(ctx, clientQuery("slow.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	held := func() (waiting, abandoned, abandonedAt int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.waiting), c.abandoned, len(c.abandonedAt)
	}
	w, a, at := held()
	require.Equal(t, []int{1, 1, 1}, []int{w, a, at}, "the abandoned query's ID is taken")
	close(release)
	require.Eventually(t, func() bool { w, _, _ := held(); return w == 0 }, 5*time.Second, 5*time.Millisecond,
		"the late answer frees the ID")
	w, a, at = held()
	assert.Equal(t, []int{0, 0, 0}, []int{w, a, at}, "waiting, abandoned, abandonedAt")
}
