package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckReadsResolvConfAsServeDoes: check loads everything serve does
// at start, upstreams written as a resolv.conf path included, and exits 1
// when serve would refuse them; explain decides without upstreams and
// reads none. A resolv.conf that names no nameserver, which serve refuses,
// passed check before (it printed the path as written, and the systemd
// unit's check before a start or reload said ok).
func TestCheckReadsResolvConfAsServeDoes(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	config := filepath.Join(dir, "c.yaml")
	for name, content := range map[string]string{
		rc:                               "# written by a DHCP client that found no server\nsearch example.org\n",
		filepath.Join(dir, "tiktok.txt"): "tiktok.com\n",
		config: `upstreams: ["./resolv.conf"]
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
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "upstreams: no usable upstream: ./resolv.conf names no nameserver but dnsfence itself")
	assert.NotContains(t, out, "\nok\n")

	code, out = runCmd("explain", "-config", config, "10.1.2.3", "www.tiktok.com")
	assert.Equal(t, explainBlocked, code, out)
	code, out = runCmd("explain", "-config", config, "10.1.2.3", "www.example.org")
	assert.Equal(t, explainForwarded, code, out)

	// Asking the upstreams needs them: -resolve reads resolv.conf.
	code, out = runCmd("explain", "-config", config, "-resolve", "10.1.2.3", "www.example.org")
	assert.Equal(t, explainError, code, out)
	assert.Contains(t, out, "no usable upstream")

	// A nameserver, read from the configuration's folder whatever the
	// working directory: check prints what serve will forward to.
	require.NoError(t, os.WriteFile(rc, []byte("nameserver 192.0.2.53\nnameserver ::1\n"), 0o644))
	code, out = runCmd("check", "-config", config)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "\nupstreams ./resolv.conf\n  forwards to 192.0.2.53:53 [::1]:53\n")
}

// TestCheckResolvConfOfADockerNetwork: a container's resolv.conf in a
// user-defined Docker network names Docker's embedded DNS, 127.0.0.11,
// which dnsfence listening on a wildcard address on port 53 leaves out as
// itself; the error says how to forward to it, and written so it is taken
// as another server, as check then shows.
func TestCheckResolvConfOfADockerNetwork(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "c.yaml")
	write := func(upstreams string) {
		t.Helper()
		require.NoError(t, os.WriteFile(config, []byte(`listen: ["[::]:53"]
upstreams: [`+upstreams+`]
allowed_clients: ["10.0.0.0/8"]
`), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.11\noptions ndots:0\n"), 0o644))
	write(`"./resolv.conf"`)
	code, out := runCmd("check", "-config", config)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "./resolv.conf names no nameserver but dnsfence itself")
	assert.Contains(t, out, `Docker's embedded DNS at 127.0.0.11, is taken as another server when written so: upstreams: ["127.0.0.11:53"]`)

	write(`"127.0.0.11:53"`)
	code, out = runCmd("check", "-config", config)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "\nupstreams 127.0.0.11:53\n")
}

// TestCheckResolvConfOfItsOwnStubAddress: dnsfence listening on a loopback
// address of its own (127.0.0.53:53, where systemd-resolved's stub was)
// with a resolv.conf naming that address leaves it out as itself, as
// under a wildcard address; but the error must not offer to forward to
// it written as an upstream, which is the forwarding loop check refuses.
func TestCheckResolvConfOfItsOwnStubAddress(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "c.yaml")
	write := func(upstreams string) {
		t.Helper()
		require.NoError(t, os.WriteFile(config, []byte(`listen: ["127.0.0.53:53"]
upstreams: [`+upstreams+`]
allowed_clients: ["10.0.0.0/8"]
`), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.53\n"), 0o644))
	write(`"./resolv.conf"`)
	code, out := runCmd("check", "-config", config)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "./resolv.conf names no nameserver but dnsfence itself")
	assert.NotContains(t, out, `is taken as another server when written so`)

	write(`"127.0.0.53:53"`) // what the hint offered: refused as a loop
	code, out = runCmd("check", "-config", config)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "is dnsfence itself")
}

// TestCheckUpstreamFixIsNotItself: an upstream written without brackets
// gets the value it likely meant, but never one of dnsfence's own listen
// addresses, which the forwarding loop check refuses (checkLoop): the
// error says that instead. Before, "::1:5399" beside [::1]:5399 was
// answered "write [::1]:5399". An IP address alone is on port 53, and is
// refused as a loop when that is dnsfence itself (127.0.0.53 beside
// listen 127.0.0.53:53), taken when it is not (127.0.0.54).
func TestCheckUpstreamFixIsNotItself(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "c.yaml")
	for _, c := range []struct{ upstream, self, says string }{
		{"127.0.0.53", "127.0.0.53:53", `"127.0.0.53" (port 53) is dnsfence itself`},
		{"::1:5399", "[::1]:5399", `"[::1]:5399" is dnsfence itself`},
		{"localhost:5300", "127.0.0.1:5300", `"127.0.0.1:5300" is dnsfence itself (listen[2] 0.0.0.0:5300)`}, // 0.0.0.0:5300 takes it
	} {
		require.NoError(t, os.WriteFile(config, []byte(`listen: ["127.0.0.53:53", "[::1]:5399", "0.0.0.0:5300"]
upstreams: ["`+c.upstream+`"]
allowed_clients: ["10.0.0.0/8"]
`), 0o644))
		code, out := runCmd("check", "-config", config)
		assert.Equal(t, 1, code, out)
		assert.NotContains(t, out, "write "+c.self, c.upstream)
		assert.Contains(t, out, c.says, c.upstream)
	}
	require.NoError(t, os.WriteFile(config, []byte(`listen: ["127.0.0.53:53"]
upstreams: ["127.0.0.54"]
allowed_clients: ["10.0.0.0/8"]
`), 0o644))
	code, out := runCmd("check", "-config", config)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "upstreams 127.0.0.54:53", "another address is taken, on port 53")
}
