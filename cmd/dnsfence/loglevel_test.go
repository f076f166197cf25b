package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReloadAppliesLogLevel: log.level applies at a reload, as Unbound's
// verbosity does at `unbound-control reload`. Before the fix the reload
// named log.level in its config_changed but dnsfence went on logging at
// the level it started with, and said nothing: the debug line of a
// connection refused at accept never came.
func TestReloadAppliesLogLevel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	write := func(level string) {
		t.Helper()
		require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`listen: ["127.0.54.1:0"]
upstreams: ["127.0.54.2:53"]
http: ""
allowed_clients: ["127.0.54.0/30"]
log: {level: %s}
policies:
  - name: government-devices
    clients: ["127.0.54.0/30"]
    block: ["tiktok.txt"]
`, level)), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tiktok.txt"), []byte("tiktok.com\n"), 0o644))
	write("info")
	p := startBinary(t, "-config", path)

	refusedFrom(p, "127.0.54.9") // at info: no line

	write("debug")
	p.waitLine(t, "reloaded") // lines before it, the one above included, are passed over
	awaitRefusedLine(t, p, "127.0.54.9", `log.level: debug applied by a reload`)
	p.stop(t, syscall.SIGTERM)
}

// TestStartAppliesALogLevelReadAnew: a configuration changed while
// dnsfence starts (here while it waits for a remote list's first copy)
// is read again by the start, and the level it names applies from the
// first answer, as a reload's does: serve built its logger from its own
// first read, at info.
func TestStartAppliesALogLevelReadAnew(t *testing.T) {
	srvURL, asked, release := testnet.HeldList(t, "127.0.54.20:0")

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	write := func(level string) error {
		return os.WriteFile(path, []byte(fmt.Sprintf(`listen: ["127.0.54.21:0"]
upstreams: ["127.0.54.22:53"]
http: ""
allowed_clients: ["127.0.54.16/30"]
log: {level: %s}
reload: {debounce: 20ms}
sources: {cache_dir: %q}
policies:
  - name: government-devices
    clients: ["127.0.54.16/30"]
    block: ["tiktok.txt", "%s/remote.txt"]
`, level, filepath.Join(dir, "cache"), srvURL)), 0o644)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tiktok.txt"), []byte("tiktok.com\n"), 0o644))
	require.NoError(t, write("info"))
	rewritten := make(chan error, 1)
	go func() {
		select {
		case <-asked:
		case <-time.After(20 * time.Second):
		}
		// Written whole and closed while the start waits for the copy.
		rewritten <- write("debug")
		release()
	}()
	p := startBinary(t, "-config", path)
	require.NoError(t, <-rewritten)
	awaitRefusedLine(t, p, "127.0.54.25", "log.level: debug read anew by the start")
	p.stop(t, syscall.SIGTERM)
}

// refusedFrom opens a TCP connection to p from client, an address outside
// allowed_clients: p closes it at accept, with a line at debug level.
func refusedFrom(p *process, client string) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(client)}, Timeout: time.Second}
	c, err := d.Dial("tcp", p.addr)
	if err != nil {
		return // reset before the dial returned
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = c.Read(make([]byte, 1)) // the reset
	_ = c.Close()
}

// awaitRefusedLine connects from client (refusedFrom) until p logs its
// "connection refused at accept" line at debug level, for up to 10 s;
// what names the level being checked.
func awaitRefusedLine(t *testing.T, p *process, client, what string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		refusedFrom(p, client)
		select {
		case m := <-p.lines:
			if m["msg"] == "connection refused at accept" {
				assert.Equal(t, "debug", m["level"])
				assert.Equal(t, client, m["client"])
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf(`%s: no "connection refused at accept" line`, what)
		}
	}
}
