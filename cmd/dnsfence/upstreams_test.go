package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckAndExplainReadNoResolvConf: check and explain load the
// configuration and its lists only. Upstreams written as a resolv.conf
// path are not read (this one names no nameserver, which serve refuses
// when it starts), and check prints them as written. Before, both read
// it and failed with "no usable upstream".
func TestCheckAndExplainReadNoResolvConf(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	config := filepath.Join(dir, "c.yaml")
	for name, content := range map[string]string{
		rc:                               "# written by a DHCP client that found no server\nsearch example.org\n",
		filepath.Join(dir, "tiktok.txt"): "tiktok.com\n",
		config: `upstreams: ["` + rc + `"]
allowed_clients: ["10.0.0.0/8"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["tiktok.txt"]
`,
	} {
		require.NoError(t, os.WriteFile(name, []byte(content), 0o644))
	}

	code, out := runCmd("check", "-config", config)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "\nupstreams "+rc+"\n")
	assert.Contains(t, out, "\nok\n")

	code, out = runCmd("explain", "-config", config, "10.1.2.3", "www.tiktok.com")
	assert.Equal(t, explainBlocked, code, out)
	code, out = runCmd("explain", "-config", config, "10.1.2.3", "www.example.org")
	assert.Equal(t, explainForwarded, code, out)

	// Asking the upstreams needs them: -resolve reads resolv.conf.
	code, out = runCmd("explain", "-config", config, "-resolve", "10.1.2.3", "www.example.org")
	assert.Equal(t, explainError, code, out)
	assert.Contains(t, out, "no usable upstream")
}
