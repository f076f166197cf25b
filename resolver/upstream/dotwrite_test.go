package upstream

import (
	"context"
	"fmt"
	"net"
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

// TestDoTOneWriterAtATime: frames are written one at a time, each by its
// own query's deadline: a query that comes while another's frame is held
// (the upstream reading nothing, its narrow socket buffers full) waits for
// its turn, and its deadline, coming first, ends its wait, not the other
// query's write. Written at once, the later query's write deadline was
// the connection's, and cut the held frame: the connection broke.
func TestDoTOneWriterAtATime(t *testing.T) {
	pki := newPKI(t)
	release := make(chan struct{})
	srv := startDoTOn(t, narrowListener(t), pki.good, func(s *dotTestServer, conn net.Conn) {
		select {
		case <-release:
		case <-t.Context().Done():
			return
		}
		serveFrames(answerWithA)(s, conn)
	})
	opts := pki.testOptions(t)
	opts.Timeout = 20 * time.Second
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	// Four frames of 60 kB, more than the narrow connection takes: a
	// write is held until the upstream reads.
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		q := clientQuery(fmt.Sprintf("big%d.example.", i), false)
		opt := q.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: make([]byte, 60000)})
		go func() {
			_, err := tr.Exchange(context.Background(), q)
			errs <- err
		}()
	}
	var c *dotConn
	require.Eventually(t, func() bool {
		conns := dotConns(tr)
		if len(conns) != 1 {
			return false
		}
		c = conns[0]
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.waiting) == n
	}, 10*time.Second, 5*time.Millisecond, "both big queries on the connection")
	require.Eventually(t, func() bool { return len(c.wturn) == 1 }, 10*time.Second, time.Millisecond,
		"a frame being written")

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := tr.Exchange(ctx, clientQuery("small.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	assert.NoError(t, broken, "the connection broke")
	// The precondition: a big frame's write was still held. Else the
	// small query was written in its turn, and no write of two was tried.
	assert.Len(t, c.wturn, 1, "no write held when the small query ended")

	close(release)
	for range n {
		select {
		case err := <-errs:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("a big query did not end")
		}
	}
	assert.Equal(t, 1, srv.connections())
}
