package main

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExplainResolveUpstreamSilent: explain -resolve for a name the
// policy does not block, whose upstream never answers, says why no
// answer was inspected and exits 2 (an error), not 0: a script reads 0 as
// "not blocked", which an unresolved chain of names has not shown.
func TestExplainResolveUpstreamSilent(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.197.1:0") // never read
	require.NoError(t, err)
	t.Cleanup(func() { silent.Close() })
	dir := testnet.WriteTree(t, map[string]string{
		"c.yaml": fmt.Sprintf(`upstreams: ["%s"]
upstream_timeout: 400ms
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["block.txt"]
`, silent.LocalAddr()),
		"block.txt": "tiktok.com\n",
	})
	start := time.Now()
	code, out := runCmd("explain", "-config", filepath.Join(dir, "c.yaml"), "-resolve", "10.1.1.1", "clean.example")
	assert.Equal(t, 2, code, out)
	assert.Contains(t, out, "resolve: no upstream answered: "+silent.LocalAddr().String()+": no answer in time", out)
	assert.NotContains(t, out, "forwarded", "no verdict without the upstream's answer: %s", out)
	assert.Less(t, time.Since(start), 20*time.Second, "explain waited past the upstream timeout")
}
