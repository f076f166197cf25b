package main

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStopSaysWhatOutlastedTheShutdownBudget: a connection to the DNS
// over HTTPS listener that sends nothing (not even its TLS hello) keeps
// the HTTP server's shutdown waiting for up to its header timeout (5 s),
// longer than the shutdown budget ((upstreams + 1) × upstream_timeout,
// 1 s here). dnsfence stops at the end of the budget, exit 0, and says at
// warn that the shutdown did not finish, and why.
func TestStopSaysWhatOutlastedTheShutdownBudget(t *testing.T) {
	ca := newE2ECA(t, "dnsfence e2e CA")
	dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n", "dnsfence.yaml": `
listen: ["127.0.197.6:0"]
upstreams: ["127.0.197.7:53"]
upstream_timeout: 500ms
http: ""
tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}
listen_https: ["127.0.197.6:0"]
policies:
  - name: government-devices
    clients: ["127.0.197.0/30"]
    block: ["lists/tiktok.txt"]
`})
	ca.issue(t, filepath.Join(dir, "certs"), "dnsfence", e2eServerName)
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	addrs := p.encryptedAddrs(t, "https")
	c, err := net.DialTimeout("tcp", addrs["https"], 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	// The listener accepts it before the stop: a connection still in the
	// kernel's backlog is closed with the listener and holds nothing (on a
	// busy machine the signal came first, and the stop ended within its
	// budget).
	time.Sleep(350 * time.Millisecond)

	sent := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	var msgs []string
	var warn map[string]any
	deadline := time.After(15 * time.Second)
	for done := false; !done; {
		select {
		case m := <-p.lines:
			msg, _ := m["msg"].(string)
			msgs = append(msgs, msg)
			if msg == "shutdown" {
				warn = m
			}
			done = msg == "stopped"
		case <-deadline:
			t.Fatalf("no stopped line: %q", msgs)
		}
	}
	require.NotNil(t, warn, "no shutdown warn: %q", msgs)
	assert.Equal(t, "warn", warn["level"])
	assert.Equal(t, "context deadline exceeded", warn["error"])
	p.exited(t, syscall.SIGTERM)
	assert.Less(t, time.Since(sent), 4*time.Second, "the stop waited past its budget")
}
