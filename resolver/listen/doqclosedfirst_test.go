package listen

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQServeAfterCloseIsNoFailure: a DoQServer closed, and its socket
// closed, before Serve runs (a StartEncrypted that fails at a later
// address closes the DoQ listener it opened, whose serving goroutine may
// not have started yet; a Shutdown right after the start) returns nil
// from Serve, as at any Close: its caller would otherwise report the
// listener stopped (an error line, /readyz 503 through Config.Stopped)
// for a close that was asked for.
func TestDoQServeAfterCloseIsNoFailure(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	for _, shutdown := range []bool{false, true} {
		s := NewDoQServer(DoQOptions{Handler: newTestHandler(newTestUpstream(t)), Count: (&counts{}).count, TLS: ServerTLSConfig(store, ALPNDoQ)})
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		if shutdown {
			require.NoError(t, s.Shutdown(t.Context()))
		} else {
			require.NoError(t, s.Close())
		}
		require.NoError(t, pc.Close())
		assert.NoError(t, s.Serve(pc), "shutdown %v", shutdown)
	}
}
