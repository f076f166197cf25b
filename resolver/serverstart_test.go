package resolver

import (
	"net"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/config"
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
