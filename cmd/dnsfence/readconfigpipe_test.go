package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReadConfigPipeNotReadTwice: serve reads a configuration that does
// not parse again once steady. A named pipe's content cannot be compared
// for steadiness, and a second read takes the writer's next write: a
// one-shot writer's broken configuration was reported as "nothing was
// written to the named pipe" after another PipeIdle, the parse error that
// says what is wrong lost.
func TestReadConfigPipeNotReadTwice(t *testing.T) {
	was := blocklist.PipeIdle
	blocklist.PipeIdle = time.Second
	t.Cleanup(func() { blocklist.PipeIdle = was })
	path := filepath.Join(t.TempDir(), "dnsfence.yaml")
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skip("no named pipes here:", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w, err := os.OpenFile(path, os.O_WRONLY, 0) // waits for a reader
		if err == nil {
			_, _ = w.WriteString("listen: [\"127.0.74.1:0\"]\nupstreams: 127.0.74.9:53]\n")
			w.Close()
		}
	}()
	t.Cleanup(func() {
		if rd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-done
			rd.Close()
		}
	})
	var stderr strings.Builder
	start := time.Now()
	_, _, err := readConfig(path, make(chan os.Signal), &stderr)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "named pipe", "the second read's error, not the configuration's")
	assert.Contains(t, err.Error(), "upstreams")
	assert.Less(t, time.Since(start), blocklist.PipeIdle, "the pipe was waited for again")
}
