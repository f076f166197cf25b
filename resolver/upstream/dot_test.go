package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// exchangeConcurrently sends n queries at once, for n0.example. to n<n-1>.example.,
// and checks each gets the answer to its own question with its own ID.
func exchangeConcurrently(t *testing.T, tr Transport, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			q := clientQuery(fmt.Sprintf("n%d.example.", i), false)
			q.Id = uint16(1000 + i)
			resp, err := tr.Exchange(context.Background(), q)
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", q.Question[0].Name, err)
			case resp.Id != q.Id || len(resp.Question) != 1 || resp.Question[0].Name != q.Question[0].Name || len(resp.Answer) != 1:
				errs <- fmt.Errorf("%s: wrong answer %v", q.Question[0].Name, resp)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
}

// TestDoTOutOfOrder: answers that come back in another order than the
// queries went out each reach their own query (RFC 7766 §7).
func TestDoTOutOfOrder(t *testing.T) {
	pki := newPKI(t)
	const n = 8
	srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
		defer conn.Close()
		// Read n queries, then answer them last first.
		var qs []*dns.Msg
		for len(qs) < n {
			b, err := readFrame(conn)
			if err != nil {
				return
			}
			s.rec.add(b)
			q := new(dns.Msg)
			if q.Unpack(b) != nil {
				return
			}
			qs = append(qs, q)
		}
		for i := len(qs) - 1; i >= 0; i-- {
			if writeFrame(conn, answerWithA(qs[i])) != nil {
				return
			}
		}
		_, _ = readFrame(conn) // until the client closes
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	exchangeConcurrently(t, tr, n)
	assert.Equal(t, 1, srv.connections(), "n < dotPipeline queries share one connection")
}

// TestDoTPool: 50 queries at once use at most dotPoolSize connections, and
// later ones reuse them.
func TestDoTPool(t *testing.T) {
	pki := newPKI(t)
	// Each answer waits until every query has arrived, so all 50 are in
	// flight at once.
	const n = 50
	var arrived atomic.Int32
	all := make(chan struct{})
	srv := startDoT(t, pki.good, serveFrames(func(q *dns.Msg) *dns.Msg {
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(25 * time.Second):
		}
		return answerWithA(q)
	}))
	// Every answer waits for the last of 50 queries, which waits for up to
	// dotPoolSize TLS handshakes: under -race on a busy 2-core machine
	// that has taken over 5 s, so the exchange timeout is generous here.
	opts := pki.testOptions(t)
	opts.Timeout = 30 * time.Second
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	exchangeConcurrently(t, tr, n)
	assert.LessOrEqual(t, srv.connections(), dotPoolSize)
	assert.Greater(t, srv.connections(), 1, "more than dotPipeline queries in flight open a second connection")
	before := srv.connections()
	exchangeConcurrently(t, tr, 10)
	assert.Equal(t, before, srv.connections(), "the pool's connections are reused")
}

// TestDoTBrokenConnection: a connection the upstream closes is redialled;
// a query in flight on it when it closes is sent once more on a new one,
// but not twice.
func TestDoTBrokenConnection(t *testing.T) {
	pki := newPKI(t)
	t.Run("closed under a query", func(t *testing.T) {
		// The first connection is closed as its first query arrives.
		srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
			if s.accepted.Load() == 1 {
				b, err := readFrame(conn)
				if err == nil {
					s.rec.add(b)
				}
				_ = conn.Close()
				return
			}
			serveFrames(answerWithA)(s, conn)
		})
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		require.NoError(t, err)
		assert.Len(t, resp.Answer, 1)
		assert.Equal(t, 2, srv.connections())
		assert.Len(t, srv.queries(), 2, "the query went out twice, once on each connection")
	})
	t.Run("closed while idle", func(t *testing.T) {
		srv := startDoT(t, pki.good, serveFrames(answerWithA))
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		require.NoError(t, err)
		srv.closeAll()
		resp, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
		require.NoError(t, err)
		assert.Len(t, resp.Answer, 1)
		assert.Equal(t, 2, srv.connections())
	})
	t.Run("every connection closed: one retry", func(t *testing.T) {
		srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
			b, err := readFrame(conn)
			if err == nil {
				s.rec.add(b)
			}
			_ = conn.Close()
		})
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.Nil(t, resp)
		assert.ErrorContains(t, err, "the upstream closed the connection")
		assert.Equal(t, 2, srv.connections(), "tried once more, not again")
		assert.Len(t, srv.queries(), 2)
	})
}

// TestDoTAbandonedID: an answer that comes after its query gave up is not
// taken for a later query's, and the connection goes on serving.
func TestDoTAbandonedID(t *testing.T) {
	pki := newPKI(t)
	release := make(chan struct{})
	srv := startDoT(t, pki.good, serveFrames(answeredOnRelease(release)))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := tr.Exchange(ctx, clientQuery("slow.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	dt := tr.(*dotTransport)
	held := func() (abandoned, waiting int) {
		dt.mu.Lock()
		defer dt.mu.Unlock()
		require.Len(t, dt.conns, 1)
		c := dt.conns[0]
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.abandoned, len(c.waiting)
	}
	abandoned, waiting := held()
	assert.Equal(t, 1, abandoned, "the abandoned query's ID stays taken")
	assert.Equal(t, 1, waiting)
	close(release) // the late answer arrives now
	require.Eventually(t, func() bool { a, w := held(); return a == 0 && w == 0 }, 5*time.Second, 5*time.Millisecond,
		"the late answer frees the ID")
	exchangeConcurrently(t, tr, 10)
	assert.Equal(t, 1, srv.connections())
}

// TestDoTBadFrame: a frame too short for a DNS message breaks the
// connection; the query is retried on a new one.
func TestDoTBadFrame(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
		if s.accepted.Load() == 1 {
			defer conn.Close()
			if b, err := readFrame(conn); err == nil {
				s.rec.add(b)
			}
			_, _ = conn.Write([]byte{0, 3, 1, 2, 3})
			_, _ = readFrame(conn)
			return
		}
		serveFrames(answerWithA)(s, conn)
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 2, srv.connections())
}

// TestDoTUnknownIDBreaksConnection: a frame whose ID no query on the
// connection was sent with, in flight or abandoned (TestDoTAbandonedID),
// says the upstream's side of the connection answers something other than
// our queries (a proxy in front that mixes up its backends' IDs): the
// connection is given up and the query in flight sent once more on a new
// one. Before, the frame was dropped as a duplicate, and every query on
// the connection timed out, up to dotPipeline of them while it stayed the
// least loaded, its stream of wrong frames keeping it from being found
// silent; given the same server, dnsproxy, CoreDNS forward and Unbound
// each lost no query.
func TestDoTUnknownIDBreaksConnection(t *testing.T) {
	pki := newPKI(t)
	var answered atomic.Bool
	srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
		if s.accepted.Load() != 1 {
			serveFrames(answerWithA)(s, conn)
			return
		}
		serveFrames(func(q *dns.Msg) *dns.Msg {
			m := answerWithA(q)
			if answered.Swap(true) {
				m.Id ^= 0x5a5a // another ID than the query's
			}
			return m
		})(s, conn)
	})
	opts := pki.testOptions(t)
	opts.Timeout = time.Second
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err, "the first connection answers once")
	resp, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err, "then answers another ID: the query goes again on a new connection")
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, "b.example.", resp.Answer[0].Header().Name)
	assert.Equal(t, 2, srv.connections())
	assert.Len(t, srv.queries(), 3)
}

// TestDoTAbandonedExpire: the IDs of queries the upstream never answers
// are freed after dotAbandonedFor, so a busy connection does not run out of
// them.
func TestDoTAbandonedExpire(t *testing.T) {
	tr, _, c := dialledNeverAnswering(t, newPKI(t))
	abandonPipeline(t, tr, c)
	c.mu.Lock()
	// Make half of them old enough to expire.
	n := 0
	for id := range c.abandonedAt {
		if n < dotPipeline/2 {
			c.abandonedAt[id] = time.Now().Add(-dotAbandonedFor - time.Second)
		}
		n++
	}
	c.mu.Unlock()
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.Equal(t, dotPipeline/2, c.abandoned, "the old ones expired, the young ones stay")
	assert.Len(t, c.waiting, dotPipeline/2)
	assert.Len(t, c.abandonedAt, dotPipeline/2)
}

// TestDoTSilentConnectionRedialled: an upstream that stops answering on a
// connection it keeps open (a hung server, a middlebox holding the TCP
// session) costs the query that times out on it, not every query after:
// a connection with nothing read for a whole timeout is given up, and the
// next query dials a new one. Before, queries went on timing out on it
// until dotPipeline of them had been abandoned.
func TestDoTSilentConnectionRedialled(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
		if s.accepted.Load() != 1 {
			serveFrames(answerWithA)(s, conn)
			return
		}
		defer conn.Close()
		answered := false
		for {
			b, err := readFrame(conn)
			if err != nil {
				return
			}
			s.rec.add(b)
			if answered {
				continue // hung: reads on, answers nothing
			}
			q := new(dns.Msg)
			if q.Unpack(b) != nil || writeFrame(conn, answerWithA(q)) != nil {
				return
			}
			answered = true
		}
	})
	opts := pki.testOptions(t)
	opts.Timeout = time.Second // a first handshake under -race on a busy machine: 300 ms failed in CI
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	checkSilentRedialled(t, tr, nil, srv.connections)
}

// TestDoTWriteEndsAtTheQueryDeadline: a query's frame is written by the
// query's own deadline, not within a whole upstream_timeout counted from
// the write. An upstream that reads nothing (its TCP window shut) holds
// the write of a large query; before, that write, and the queries waiting
// to write behind it, went on for the transport's timeout (20 s here)
// whatever the query's deadline (500 ms). The server then reads what
// reached it: fewer octets than the frames hold, or no write was held by
// full socket buffers and the test would pass without the fix.
func TestDoTWriteEndsAtTheQueryDeadline(t *testing.T) {
	pki := newPKI(t)
	release := make(chan struct{})
	// received counts the octets that reached the server, over every
	// connection it served (a query whose write ended at its deadline may
	// be tried once more on a new one, which carries nothing).
	var received atomic.Int64
	var serving, served atomic.Int32
	srv := startDoTOn(t, narrowListener(t), pki.good, func(_ *dotTestServer, conn net.Conn) {
		serving.Add(1)
		defer served.Add(1)
		// Reads nothing while the queries run: the client's frames fill
		// the socket buffers. Then it reads what reached it.
		select {
		case <-release:
		case <-t.Context().Done():
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.Copy(io.Discard, conn)
		received.Add(n)
	})
	opts := pki.testOptions(t)
	opts.Timeout = 20 * time.Second
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	// Four frames of 60 kB: more than the narrow connection takes before
	// a write blocks (about 100 kB).
	const n = 4
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, n)
	var frames int64 // the octets of every frame, as written
	for i := range n {
		q := clientQuery(fmt.Sprintf("big%d.example.", i), false)
		opt := q.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: make([]byte, 60000)})
		wq, err := packPadded(q, false)
		require.NoError(t, err)
		frames += int64(len(wq.withID(0, true)))
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := tr.Exchange(ctx, q)
			results <- result{err, time.Since(start)}
		}()
	}
	for range n {
		select {
		case r := <-results:
			assert.ErrorIs(t, r.err, context.DeadlineExceeded)
			assert.Less(t, r.took, 5*time.Second, "the query outlasted its deadline: %v", r.err)
		case <-time.After(30 * time.Second):
			t.Fatal("a query did not end")
		}
	}
	// The precondition: a write was held, part written, when its deadline
	// came. Every frame whole at the server would mean the buffers took
	// them all, no write blocked, and the deadline of a write was never
	// tried.
	close(release)
	require.Eventually(t, func() bool { return serving.Load() > 0 && served.Load() == serving.Load() }, 10*time.Second, 5*time.Millisecond,
		"the server read what reached it")
	t.Logf("%d of the frames' %d octets reached the server", received.Load(), frames)
	assert.Less(t, received.Load(), frames, "the server received every frame: no write was held by full socket buffers")
}

// narrowListener is a TCP listener on 127.0.0.1 whose connections take
// little before a writer to them blocks while nothing is read: a small
// receive buffer, and a small MSS, by which Linux also sizes the writer's
// send buffer. About 100 kB in all, against megabytes on loopback.
func narrowListener(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 536))
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// TestDoTNoWriteTooCloseToTheDeadline: a query with less than minWriteTime
// left is not written (a write its deadline cuts off, even before the
// first octet, leaves a TLS connection that writes no more, failing every
// query pipelined on it): it ends with DeadlineExceeded, and the
// connection goes on serving the next query.
func TestDoTNoWriteTooCloseToTheDeadline(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("first.example.", false))
	require.NoError(t, err)
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), minWriteTime/5)
		_, err := tr.Exchange(ctx, clientQuery("late.example.", false))
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	}
	_, err = tr.Exchange(context.Background(), clientQuery("next.example.", false))
	require.NoError(t, err)
	assert.Len(t, srv.queries(), 2, "no late query was written")
	assert.Equal(t, 1, srv.connections(), "the connection was kept")
}

// TestDoTServerName: the TLS ClientHello dnsfence sends to a tls://
// upstream names the server the #NAME of its address (RFC 7858 §4.2, RFC
// 8310 §8.1: the authentication domain name, sent in SNI, RFC 6066 §3),
// written in any case and with or without its final dot, not the address,
// on the first connection and on a redial (TLS session resumption
// included); a server that picks its certificate by the name sent
// (several resolvers on one address) then shows the right one. A #NAME
// that is an IP address is sent as no name at all (RFC 6066 §3: "Literal
// IPv4 and IPv6 addresses are not permitted"), and the certificate is
// verified for that address.
func TestDoTServerName(t *testing.T) {
	pki := newPKI(t)
	ipLeaf, ipCA := newIPLeaf(t)
	opts := pki.testOptions(t)
	opts.RootCAs.AddCert(ipCA)
	var mu sync.Mutex
	var sent []string
	cfg := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		// Every ClientHello, a resumption's too (which picks no
		// certificate).
		mu.Lock()
		sent = append(sent, hello.ServerName)
		mu.Unlock()
		return nil, nil
	}, GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		switch hello.ServerName {
		case testServerName:
			return &pki.good, nil
		case "":
			return &ipLeaf, nil
		}
		return &pki.wrongName, nil
	}}
	for _, tc := range []struct {
		name, suffix, want string
	}{
		{"name", "#" + testServerName, testServerName},
		{"name in capitals with a final dot", "#DNS.Test.", testServerName},
		{"an IP address", "#127.0.0.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			srv := startDoTWith(t, ln, cfg, serveFrames(answerWithA))
			mu.Lock()
			sent = nil
			mu.Unlock()
			tr := newEncryptedTransport(t, "tls://"+srv.addr+tc.suffix, opts)
			for i := range 2 {
				q := clientQuery(fmt.Sprintf("sni%d.example.", i), false)
				resp, err := tr.Exchange(context.Background(), q)
				require.NoError(t, err, "exchange %d", i)
				assert.Len(t, resp.Answer, 1)
				srv.closeAll() // the next exchange dials again
			}
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, sent, 2, "one handshake a connection")
			for i, name := range sent {
				assert.Equal(t, tc.want, name, "handshake %d", i)
			}
			assert.Equal(t, []bool{false, true}, srv.resumed(), "the redial resumed the session")
		})
	}
}

// newIPLeaf is a certificate for the address 127.0.0.1 alone, and the CA
// that signed it, for a client to trust.
func newIPLeaf(t *testing.T) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	ca, caKey := newCA(t, "dnsfence test CA for addresses")
	der, key := issueLeaf(t, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, caKey)
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, ca
}
