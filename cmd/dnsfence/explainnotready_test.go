package main

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExplainServfailUntilReadyOtherLists: with sources.servfail_until_ready,
// explain goes on without a remote list neither the network nor a disk
// copy gives only when the setting answers SERVFAIL for it: a block list
// of a policy not in shadow mode. A remote allow list without a copy (or a
// shadow policy's block list) is answered for by no SERVFAIL: the verdict
// hangs on it, and explain fails for want of it (2), as without the
// setting. It said "blocked" (1) for a name that allow list may allow,
// with a note that the setting answers SERVFAIL for the list.
func TestExplainServfailUntilReadyOtherLists(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.88.1:0")
	require.NoError(t, err)
	down := fmt.Sprintf("http://%s/allow.txt", ln.Addr()) // nothing answers once closed
	require.NoError(t, ln.Close())
	for _, tc := range []struct{ name, policy string }{
		{"allow list", fmt.Sprintf("block: [local.txt]\n    allow: [%q]", down)},
		{"shadow policy's block list", fmt.Sprintf("block: [%q, local.txt]\n    action: log", down)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := untilReadyConfig(t, tc.policy, map[string]string{"local.txt": "tiktok.com\n"})
			code, out := runCmd("explain", "-config", cfg, "127.0.88.1", "tiktok.com")
			assert.Equal(t, explainError, code, out)
			assert.Contains(t, out, "dnsfence explain: remote list "+down+": neither the network nor a disk copy gave it")
			assert.NotContains(t, out, "answers SERVFAIL for it")
		})
	}
}

// untilReadyConfig writes, beside files, a configuration whose one policy,
// government-devices for 127.0.88.1, has the lines policy (indented as its
// keys), with sources.servfail_until_ready; it returns the file's path.
func untilReadyConfig(t *testing.T, policy string, files map[string]string) string {
	t.Helper()
	files["dnsfence.yaml"] = fmt.Sprintf(`
listen: ["127.0.88.1:0"]
upstreams: ["127.0.88.1:53"]
allowed_clients: ["127.0.88.0/24"]
policies:
  - name: government-devices
    clients: ["127.0.88.1/32"]
    %s
sources: {cache_dir: cache, servfail_until_ready: true}
`, policy)
	return filepath.Join(testnet.WriteTree(t, files), "dnsfence.yaml")
}
