package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoTFrameNoMessage: a frame that holds no DNS message breaks the
// connection, even when its first octets are the ID of the query in
// flight: it is never handed to that query as its answer, and the query
// is sent once more on a new connection. Shorter than a DNS header (an
// empty frame too), or cut short by the end of the stream.
func TestDoTFrameNoMessage(t *testing.T) {
	pki := newPKI(t)
	// firstAnswer serves the first connection: it reads one query and
	// writes what frame gives for it.
	firstAnswer := func(frame func(q []byte) []byte, thenClose bool) func(*dotTestServer, net.Conn) {
		return func(s *dotTestServer, conn net.Conn) {
			if s.accepted.Load() != 1 && !thenClose {
				serveFrames(answerWithA)(s, conn)
				return
			}
			defer conn.Close()
			b, err := readFrame(conn)
			if err != nil {
				return
			}
			s.rec.add(b)
			if _, err := conn.Write(frame(b)); err != nil || thenClose {
				return
			}
			_, _ = io.Copy(io.Discard, conn) // until the client closes
		}
	}
	for _, tc := range []struct {
		name  string
		frame func(q []byte) []byte
	}{
		{"3 octets with the query's ID", func(q []byte) []byte { return []byte{0, 3, q[0], q[1], 0x80} }},
		{"11 octets with the query's ID", func(q []byte) []byte { return append([]byte{0, 11}, q[:11]...) }},
		{"empty", func([]byte) []byte { return []byte{0, 0} }},
		{"1 octet", func(q []byte) []byte { return []byte{0, 1, q[0]} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDoT(t, pki.good, firstAnswer(tc.frame, false))
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			require.NoError(t, err)
			require.Len(t, resp.Answer, 1)
			assert.Equal(t, "a.example.", resp.Answer[0].Header().Name)
			assert.Equal(t, 2, srv.connections(), "the connection was given up")
			assert.Len(t, srv.queries(), 2)
		})
	}
	t.Run("12 octets, a header alone, is a message", func(t *testing.T) {
		// A failure without a question section, as some servers send
		// (TestEncryptedQuestionlessOnlyForFailures): the smallest answer.
		srv := startDoT(t, pki.good, firstAnswer(func(q []byte) []byte {
			return []byte{0, 12, q[0], q[1], 0x80, dns.RcodeServerFailure, 0, 0, 0, 0, 0, 0, 0, 0}
		}, false))
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		require.NoError(t, err)
		assert.Equal(t, dns.RcodeServerFailure, resp.Rcode)
		assert.Equal(t, 1, srv.connections(), "the connection was kept")
	})
	t.Run("cut short", func(t *testing.T) {
		// Every connection: a frame that says 100 octets, the first 12 of
		// the answer (its header, with the query's ID), then the end.
		srv := startDoT(t, pki.good, firstAnswer(func(q []byte) []byte {
			m := new(dns.Msg)
			if m.Unpack(q) != nil {
				return nil
			}
			b, err := answerWithA(m).Pack()
			if err != nil {
				return nil
			}
			return append([]byte{0, 100}, b[:12]...)
		}, true))
		tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
		resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		assert.Nil(t, resp)
		var broken *brokenConnError
		assert.True(t, errors.As(err, &broken), "the connection broke: %v", err)
		assert.ErrorContains(t, err, "the connection broke: unexpected EOF")
		assert.NotErrorIs(t, err, ErrAnswerUnusable)
		assert.Equal(t, 2, srv.connections(), "tried once more, not again")
	})
}

// TestDoTAnswersKeepConnectionFromSilent: a connection is found silent
// when nothing was read on it for a whole timeout, counted from the last
// frame read, not from the dial: a query that times out on a connection
// that answers others keeps it. The connection here is made to look
// dialled an hour ago.
func TestDoTAnswersKeepConnectionFromSilent(t *testing.T) {
	tr, srv, c := dialledNeverAnswering(t, newPKI(t))
	c.mu.Lock()
	c.lastRead = time.Now().Add(-time.Hour)
	c.mu.Unlock()
	_, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
	require.NoError(t, err, "an answer read now")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = tr.Exchange(ctx, clientQuery("never.example.", false))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	resp, err := tr.Exchange(context.Background(), clientQuery("c.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.Equal(t, 1, srv.connections(), "the connection was kept")
}

// TestDoTCloseClosesConnections: Close ends each connection of the pool
// (its read loop closes it, with close_notify): the upstream reads the end
// of the stream, rather than holding the connection until its idle
// timeout.
func TestDoTCloseClosesConnections(t *testing.T) {
	pki := newPKI(t)
	ended := make(chan error, 1)
	srv := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
		defer conn.Close()
		for {
			b, err := readFrame(conn)
			if err != nil {
				ended <- err
				return
			}
			q := new(dns.Msg)
			if q.Unpack(b) != nil || writeFrame(conn, answerWithA(q)) != nil {
				ended <- errors.New("the query could not be answered")
				return
			}
		}
	})
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	select {
	case err := <-ended:
		assert.ErrorIs(t, err, io.EOF, "the connection ended with close_notify")
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not closed")
	}
}
