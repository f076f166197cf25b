package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHAddressNotLookedUp: a DoH upstream written with an IP address
// connects to it; Options.Resolve (the plain upstreams, which may not read
// an address as a name) is asked only for a host name.
func TestDoHAddressNotLookedUp(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	opts := pki.testOptions(t)
	opts.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
		t.Errorf("%s looked up", host)
		return nil, errors.New("no lookups here")
	}
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
}

// TestDoHDialAfterClose: a connection whose dial ends after Close (net/http
// dials on for a request Close cancelled) is closed at once, not handed to
// net/http's pool to stay open, pinged, after the transport was retired.
func TestDoHDialAfterClose(t *testing.T) {
	pki := newPKI(t)
	addr, ended := endedConnection(t, nil)
	opts := pki.testOptions(t)
	opts.Timeout = time.Second
	tr := newEncryptedTransport(t, "https://"+addr+"/dns-query#"+testServerName, opts).(*dohTransport)
	require.NoError(t, tr.Close())
	dial := tr.dialTLS(clientTLS(testServerName, opts.RootCAs, "h2", "http/1.1"))
	c, err := dial(context.Background(), "tcp", "")
	if c != nil {
		_ = c.Close()
	}
	assert.Nil(t, c)
	require.ErrorIs(t, err, ErrClosed)
	waitEnded(t, ended)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	assert.Empty(t, tr.conns)
}

// TestDoHFailedHandshakeClosesConnection: a connection whose TLS handshake
// fails (here: the upstream's certificate carries another name) is closed,
// not left open on both ends until the transport is.
func TestDoHFailedHandshakeClosesConnection(t *testing.T) {
	pki := newPKI(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{pki.wrongName}, NextProtos: []string{"h2", "http/1.1"}}
	addr, ended := endedConnection(t, func(c net.Conn) { _ = tls.Server(c, cfg).Handshake() })
	tr := newEncryptedTransport(t, "https://"+addr+"/dns-query#"+testServerName, pki.testOptions(t))
	_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	var he x509.HostnameError
	require.ErrorAs(t, err, &he)
	waitEnded(t, ended)
}

// endedConnection listens on 127.0.180.1 until the test ends for one
// connection, runs first on it (when not nil), then reads it to its end,
// which closes ended; it returns the address.
func endedConnection(t *testing.T, first func(net.Conn)) (addr string, ended <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.180.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	done := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if first != nil {
			first(c)
		}
		_, _ = io.Copy(io.Discard, c)
		close(done)
	}()
	return ln.Addr().String(), done
}

// waitEnded waits, within a bound, for endedConnection's connection to end.
func waitEnded(t *testing.T, ended <-chan struct{}) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection is still open")
	}
}

// TestDoHCloseEndsQueryAwaitingConnection: Close ends a query still
// waiting for its connection (here: the upstream's name being looked up)
// at once, with ErrClosed, as it ends one in flight on a connection
// (TestDoHCloseConnections): net/http goes on with a dial after the
// request that began it is cancelled, and the query must not wait for it.
func TestDoHCloseEndsQueryAwaitingConnection(t *testing.T) {
	pki := newPKI(t)
	looking, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(release) })
	opts := pki.testOptions(t)
	opts.Resolve = func(ctx context.Context, _ string) ([]netip.Addr, error) {
		close(looking)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-release:
			return nil, errors.New("released")
		}
	}
	tr := newEncryptedTransport(t, "https://"+testServerName+":443/dns-query", opts)
	done := make(chan error, 1)
	go func() {
		_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
		done <- err
	}()
	<-looking
	require.NoError(t, tr.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(2 * time.Second): // the upstream timeout is 5 s
		t.Fatal("the query went on after Close")
	}
}
