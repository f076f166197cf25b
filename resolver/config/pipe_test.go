package config

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/require"
)

// TestUpstreamCANamedPipeDoesNotStopLoad: config.Load reads the file
// upstream_ca names (checkEncrypted -> upstream.LoadRoots) with
// os.ReadFile, whose open(2) of a named pipe with no writer waits for ever.
// Every reload loads the configuration under the Reloader's lock, so one
// upstream_ca replaced by a pipe stops every reload (and every remote
// list's apply, which takes the same lock) for good, as a list file did
// before 89e9113. It must fail after blocklist.PipeIdle like a list.
func TestUpstreamCANamedPipeDoesNotStopLoad(t *testing.T) {
	idle := blocklist.PipeIdle
	blocklist.PipeIdle = 200 * time.Millisecond
	t.Cleanup(func() { blocklist.PipeIdle = idle })
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := syscall.Mkfifo(ca, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`upstreams: ["tls://127.0.0.1:853#dns.test"]
upstream_ca: ca.pem
`), 0o600))
	require.Error(t, loadWithin5s(t, path, ca))
}

// TestNamedPipeListNotOpenedByCheck: a policy's list file may be a named
// pipe (blocklist.Open reads one with a deadline). validatePolicyFiles
// opens each list file to say, at its key and line, one dnsfence may
// not read (canOpen), but open(2) of a pipe without a writer waits for
// ever: the check must leave a pipe unopened, so that the configuration
// loads, as a reload must under the Reloader's lock.
func TestNamedPipeListNotOpenedByCheck(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "block.txt")
	if err := syscall.Mkfifo(list, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`upstreams: ["192.0.2.53:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [block.txt]
`), 0o600))
	require.NoError(t, loadWithin5s(t, path, list))
}

// loadWithin5s is Load's error for the configuration at path, which names
// the named pipe pipe; the test fails when Load has not returned within
// 5 s, the pipe then opened for writing so that the goroutine left in
// open(2) ends before the next tests.
func loadWithin5s(t *testing.T, path, pipe string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := Load(path); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		if f, err := os.OpenFile(pipe, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		t.Fatalf("config.Load still reading %s (a named pipe) after 5s", filepath.Base(pipe))
		return nil
	}
}
