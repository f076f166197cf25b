package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoTCloseStopsDials: Close while a connection is being dialled (the
// upstream accepted TCP and sends no handshake) ends the dial at once:
// the query waiting for it ends, and the upstream sees the TCP connection
// closed, not held until the dial's timeout. A second Close is no error.
func TestDoTCloseStopsDials(t *testing.T) {
	pki := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			ended <- err
			return
		}
		defer conn.Close()
		close(accepted)
		// Reads the ClientHello and answers nothing, until the client
		// closes (io.EOF) or 10 s pass.
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				ended <- err
				return
			}
		}
	}()
	opts := pki.testOptions(t)
	opts.Timeout = 20 * time.Second
	tr := newEncryptedTransport(t, "tls://"+ln.Addr().String()+"#"+testServerName, opts)
	done := make(chan error, 1)
	go func() {
		_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		done <- err
	}()
	select {
	case <-accepted: // the dial is in its handshake
	case <-time.After(5 * time.Second):
		t.Fatal("no connection attempt")
	}
	require.Len(t, dotConns(tr), 1, "a connection is being dialled")
	require.NoError(t, tr.Close())
	select {
	case err := <-done:
		// ErrClosed, as Close says: not the dial's cancellation, which a
		// query got when Close stopped the dials before it failed the
		// connections (seen once in 21 runs under -race).
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("the query did not end at Close")
	}
	select {
	case err := <-ended:
		assert.NotErrorIs(t, err, context.DeadlineExceeded)
		var ne net.Error
		if assert.Error(t, err) && errors.As(err, &ne) {
			assert.False(t, ne.Timeout(), "the dial held the connection: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the dial's connection was not closed")
	}
	assert.NoError(t, tr.Close(), "closed twice")
}

// TestDoTQueryPacked: a query goes out over DNS over TLS with the EDNS
// options it had, edns-tcp-keepalive among them (RFC 7828: for TCP and
// TLS; only DoQ leaves it out), and one that cannot be packed (two
// questions) fails before anything is sent.
func TestDoTQueryPacked(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	q := clientQuery("keepalive.example.", false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
	assert.Contains(t, sentOptionCodes(t, tr, q, srv.queries), uint16(dns.EDNS0TCPKEEPALIVE))

	twoQuestionsFail(t, tr)
	assert.Len(t, srv.queries(), 1, "nothing sent")
}
