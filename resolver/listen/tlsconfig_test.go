package listen

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHandshakeFailedNeedsAByte: a DoT connection counts as a failed TLS
// handshake (handshakeFailed) once its client has sent anything, a single
// octet included, and its handshake did not complete; one closed before
// its first octet (a load balancer's TCP check) is no TLS client, and one
// whose handshake completed has not failed.
func TestHandshakeFailedNeedsAByte(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	ln, err := net.Listen("tcp", "127.0.189.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })

	for _, tc := range []struct {
		name string
		// client runs on its own goroutine with the client's end.
		client     func(c net.Conn) error
		complete   bool // the handshake completes
		wantFailed bool
	}{
		{name: "closed with nothing sent", client: func(c net.Conn) error { return c.Close() }},
		{name: "one octet sent, then closed", client: func(c net.Conn) error {
			if _, err := c.Write([]byte{0x16}); err != nil {
				return err
			}
			return c.Close()
		}, wantFailed: true},
		{name: "a completed handshake", client: func(c net.Conn) error {
			tc := tls.Client(c, clientTLS(ca, ALPNDoT))
			defer tc.Close()
			return tc.Handshake()
		}, complete: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			done := make(chan error, 1)
			go func() { done <- tc.client(c) }()
			sc, err := ln.Accept()
			require.NoError(t, err)
			t.Cleanup(func() { sc.Close() })

			conn := ServerTLS(sc, ServerTLSConfig(store, ALPNDoT), 10*time.Second)
			herr := conn.Handshake()
			select {
			case err := <-done:
				require.NoError(t, err, "the client")
			case <-time.After(10 * time.Second):
				t.Fatal("the client did not finish")
			}
			assert.Equal(t, tc.complete, herr == nil, "handshake: %v", herr)
			assert.Equal(t, tc.wantFailed, handshakeFailed(conn.Conn))
		})
	}
}
