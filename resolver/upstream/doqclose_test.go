package upstream

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQCloseEndsDial: Close stops a dial in progress (here: to an
// upstream that never answers the QUIC handshake), and the queries
// waiting for it end at once with ErrClosed rather than at the handshake
// timeout, as a query in flight on a connection does (TestEncryptedClose).
func TestDoQCloseEndsDial(t *testing.T) {
	pki := newPKI(t)
	pc, err := net.ListenPacket("udp", "127.0.180.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	initial := make(chan struct{}, 1)
	go func() { // reads the QUIC Initial packets, answers none
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case initial <- struct{}{}:
			default:
			}
		}
	}()
	tr := newEncryptedTransport(t, "quic://"+pc.LocalAddr().String()+"#"+testServerName, pki.testOptions(t))
	done := make(chan error, 2)
	for _, name := range []string{"a.example.", "b.example."} {
		go func() {
			_, err := tr.Exchange(context.Background(), clientQuery(name, false))
			done <- err
		}()
	}
	select {
	case <-initial:
	case <-time.After(5 * time.Second):
		t.Fatal("no dial")
	}
	require.NoError(t, tr.Close())
	for range 2 {
		select {
		case err := <-done:
			assert.ErrorIs(t, err, ErrClosed)
		case <-time.After(2 * time.Second): // the handshake timeout is 5 s
			t.Fatal("a query waited for the dial after Close")
		}
	}
}
