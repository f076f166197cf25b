package resolver

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/require"
)

// TestPipeListSharedByPoliciesIsWaitedForOnce: README says a list
// replaced by a named pipe is waited for "10 s at most". BuildSnapshot
// reads a list once per policy naming it when the read fails (loadList
// keeps only lists that loaded), so a pipe named by testConfig's three
// policies holds every reload 3 x PipeIdle (30 s), and reports it three
// times.
func TestPipeListSharedByPoliciesIsWaitedForOnce(t *testing.T) {
	idle := blocklist.PipeIdle
	blocklist.PipeIdle = 300 * time.Millisecond
	t.Cleanup(func() { blocklist.PipeIdle = idle })
	path := writeConfig(t, testConfig, testFiles, "127.0.0.1:53")
	list := filepath.Join(filepath.Dir(path), "tiktok.txt")
	require.NoError(t, os.Remove(list))
	if err := syscall.Mkfifo(list, 0o644); err != nil {
		t.Skip(err)
	}
	cfg, err := config.Load(path)
	require.NoError(t, err)
	start := time.Now()
	_, err = BuildSnapshot(cfg, nil)
	took := time.Since(start)
	require.Error(t, err)
	require.Less(t, took, 2*blocklist.PipeIdle, "the pipe was waited for %s: %v", took, err)
}
