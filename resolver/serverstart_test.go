package resolver

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
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

// TestDesignationWarnedAtStart: what `check` warns about the designation
// (DesignationCheck) serve logs as the encrypted listeners start, for the
// certificate served then, and not only at a reload: here a listen address
// devices reach while every encrypted listener is on loopback. The address
// is only the configuration's: the test listens on loopback alone.
func TestDesignationWarnedAtStart(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	text := strings.Replace(encryptedConfig(p), `listen: ["127.0.0.1:0"]`, `listen: ["192.0.2.1:53"]`, 1)
	dir := testnet.WriteTree(t, testFiles)
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(text, "{{upstreams}}", `["`+up.addr+`"]`)), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	m := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(core)
	h := NewHandler(log, snap, m)
	cert, err := OpenCertificate(log, cfg, m)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cert.Close() })
	_, ws := DesignationCheck(cfg, cert.Store.Leaf())
	require.Len(t, ws, 1)

	srv := NewServer(log, h)
	require.NoError(t, srv.StartEncrypted(&config.Config{ListenTLS: []string{"127.0.192.1:0"}}, cert))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	assert.Equal(t, 1, logs.FilterMessage(ws[0].Msg).Len(), "warned at start")
}

// TestServerStartBeforeTheFirstSnapshot: the handler serve makes has no
// snapshot until every list has loaded; a Server started before it has
// no rules to listen with (allowed_clients, limits) and says so, rather
// than listening with none or failing on the missing snapshot.
func TestServerStartBeforeTheFirstSnapshot(t *testing.T) {
	h := NewHandler(zaptest.NewLogger(t), nil, NewMetrics(prometheus.NewRegistry()))
	srv := NewServer(zaptest.NewLogger(t), h)
	assert.ErrorContains(t, srv.Start([]string{"127.0.192.1:0"}), "no rules loaded")
}
