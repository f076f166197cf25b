package upstream

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// closingListener closes the first n connections it accepts at once,
// before any TLS handshake: an upstream that fails its first connection
// attempts, then serves.
type closingListener struct {
	net.Listener
	n      int32
	closed atomic.Int32
}

func (l *closingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.closed.Load() >= l.n {
			return c, err
		}
		l.closed.Add(1)
		_ = c.Close()
	}
}

// TestDoTFailedDialsLeaveThePool: a connection attempt that fails is the
// query's error, tried once (the queries that waited for it share its
// failure), and leaves the pool: more failed attempts than the pool has
// places do not fill it with dead connections, and the first attempt that
// succeeds serves.
func TestDoTFailedDialsLeaveThePool(t *testing.T) {
	pki := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	const failing = dotPoolSize + 1
	cl := &closingListener{Listener: ln, n: failing}
	srv := startDoTOn(t, cl, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	for i := range failing {
		resp, err := tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("q%d.example.", i), false))
		assert.Nil(t, resp)
		require.Error(t, err, "attempt %d", i)
		assert.ErrorContains(t, err, "connecting over tls", "attempt %d", i)
		assert.Equal(t, int32(i+1), cl.closed.Load(), "attempt %d: one connection attempt", i)
		require.Eventually(t, func() bool { return len(dotConns(tr)) == 0 }, 5*time.Second, 5*time.Millisecond,
			"attempt %d left the pool", i)
	}
	resp, err := tr.Exchange(context.Background(), clientQuery("served.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 1, srv.connections())
}

// TestDoTWriteCutNoTryOfTheOthers: when a query's frame is cut by its own
// deadline, the connection breaks for every query on it (writeCutError);
// for a query in flight there, that break was dnsfence's doing, no try of
// its own: it is sent on a new connection, and when that one too breaks
// under it, once more. Counted as a try, the second break failed it.
// The first connection's upstream reads nothing, so that the big frames
// fill its narrow socket buffers (TestDoTWriteEndsAtTheQueryDeadline);
// the second closes under the query; the third answers.
func TestDoTWriteCutNoTryOfTheOthers(t *testing.T) {
	pki := newPKI(t)
	srv := startDoTOn(t, narrowListener(t), pki.good, func(s *dotTestServer, conn net.Conn) {
		switch s.accepted.Load() {
		case 1:
			<-t.Context().Done() // reads nothing
		case 2:
			defer conn.Close()
			for {
				b, err := readFrame(conn)
				if err != nil {
					return
				}
				q := new(dns.Msg)
				if q.Unpack(b) == nil && q.Question[0].Name == "inflight.example." {
					return // closed under the query
				}
			}
		default:
			serveFrames(answerWithA)(s, conn)
		}
	})
	opts := pki.testOptions(t)
	opts.Timeout = 20 * time.Second
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	type result struct {
		resp *dns.Msg
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := tr.Exchange(ctx, clientQuery("inflight.example.", false))
		inflight <- result{resp, err}
	}()
	require.Eventually(t, func() bool {
		conns := dotConns(tr)
		if len(conns) != 1 {
			return false
		}
		conns[0].mu.Lock()
		defer conns[0].mu.Unlock()
		return len(conns[0].waiting) == 1
	}, 5*time.Second, 5*time.Millisecond, "the query is on the first connection")

	// Three frames of 60 kB, more than the narrow connection takes: one is
	// cut at the deadline they share.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	const n = 3
	errs := make(chan error, n)
	for i := range n {
		q := clientQuery(fmt.Sprintf("big%d.example.", i), false)
		opt := q.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: make([]byte, 60000)})
		go func() {
			_, err := tr.Exchange(ctx, q)
			errs <- err
		}()
	}
	for range n {
		select {
		case err := <-errs:
			require.ErrorIs(t, err, context.DeadlineExceeded)
		case <-time.After(30 * time.Second):
			t.Fatal("a big query did not end")
		}
	}
	select {
	case r := <-inflight:
		require.NoError(t, r.err, "the query in flight")
		require.Len(t, r.resp.Answer, 1)
		assert.Equal(t, "inflight.example.", r.resp.Answer[0].Header().Name)
	case <-time.After(30 * time.Second):
		t.Fatal("the query in flight did not end")
	}
	assert.Equal(t, 3, srv.connections())
}
