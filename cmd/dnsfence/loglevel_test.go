package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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

	// A TCP connection from outside allowed_clients is closed at accept,
	// with a line at debug level.
	refused := func() {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.54.9")}, Timeout: time.Second}
		c, err := d.Dial("tcp", p.addr)
		if err != nil {
			return // reset before the dial returned
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = c.Read(make([]byte, 1)) // the reset
		_ = c.Close()
	}
	refused() // at info: no line

	write("debug")
	p.waitLine(t, "reloaded") // lines before it, the one above included, are passed over
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		refused()
		select {
		case m := <-p.lines:
			if m["msg"] == "connection refused at accept" {
				assert.Equal(t, "debug", m["level"])
				assert.Equal(t, "127.0.54.9", m["client"])
				done = true
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal(`log.level: debug applied by a reload: no "connection refused at accept" line`)
		}
	}
	p.stop(t, syscall.SIGTERM)
}
