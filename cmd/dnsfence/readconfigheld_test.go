package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadConfigHeldPastTheWriterWait: a configuration a writer holds
// open, and keeps writing to, for longer than the writer wait is read as
// it is then, and serve says so on stderr, naming the file and that a
// writer still holds it: the operator learns why the start took that
// long, and that what it serves may be a half-written file. It takes
// blocklist.DefaultWriterWait (30 s).
func TestReadConfigHeldPastTheWriterWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`listen: ["127.0.197.2:0"]
upstreams: ["127.0.197.3:53"]
http: ""
`), 0o644))
	writer, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { writer.Close() })
	// The writer goes on writing: the file's modification time stays
	// within the writer wait, so that the wait does not count it gone.
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				_ = os.Chtimes(path, now, now)
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })

	var stderr strings.Builder
	start := time.Now()
	cfg, sig, err := readConfig(path, make(chan os.Signal), &stderr)
	require.NoError(t, err)
	require.Nil(t, sig)
	assert.Equal(t, []string{"127.0.197.3:53"}, cfg.Upstreams)
	assert.GreaterOrEqual(t, time.Since(start), blocklist.DefaultWriterWait, "read before the writer wait ended")
	assert.Contains(t, stderr.String(), "reading the configuration as it is: "+path+": ")
	assert.Contains(t, stderr.String(), "a writer still holds it open after 30s")
}
