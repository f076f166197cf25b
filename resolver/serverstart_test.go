package resolver

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// TestServerStartReportsABusyAddress: a listen address another socket
// holds is Start's error, and a listen_tls one StartEncrypted's, for the
// binary to exit on, not a Server that serves nothing there.
func TestServerStartReportsABusyAddress(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	busy, err := net.Listen("tcp", "127.0.192.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = busy.Close() })

	t.Run("listen", func(t *testing.T) {
		srv := NewServer(zaptest.NewLogger(t), e.handler)
		assert.Error(t, srv.Start([]string{busy.Addr().String()}))
	})
	t.Run("listen_tls", func(t *testing.T) {
		srv := NewServer(zaptest.NewLogger(t), e.handler)
		assert.Error(t, srv.StartEncrypted(&config.Config{ListenTLS: []string{busy.Addr().String()}}, e.cert))
	})
}

// TestShutdownEndedWithQueriesInFlight: a Shutdown whose ctx ends while a
// query is still waiting for its upstream returns ctx's error, so that the
// caller knows an answer was abandoned, not nil as if every query taken
// had been answered.
func TestShutdownEndedWithQueriesInFlight(t *testing.T) {
	f, up, release := startHeldFence(t, "")
	t.Cleanup(func() { close(release) })
	done := make(chan error, 1)
	go func() {
		_, err := exchange(f.addr, "", "udp", question("slow.example.org.", dns.TypeA, false))
		done <- err
	}()
	require.Eventually(t, func() bool { return up.count.Load() == 1 }, 5*time.Second, 5*time.Millisecond)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := f.server.Shutdown(ctx)
	assert.True(t, errors.Is(err, context.Canceled), "Shutdown returned %v", err)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client's exchange never ended")
	}
}
