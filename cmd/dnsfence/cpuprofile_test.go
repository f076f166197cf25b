package main

import (
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCPUProfileFlag: serve's -cpuprofile writes a CPU profile (pprof's
// format, gzip-compressed, written whole when profiling stops) to the
// file once SIGTERM stops dnsfence; a file it cannot create stops the
// start, exit 1, naming the file. No other test gave the flag: a
// profile never written, or a start that went on without one, passed.
func TestCPUProfileFlag(t *testing.T) {
	upstream, _ := testUpstream(t)
	dir := govFiles(t, upstream, "")
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"), "-cpuprofile", prof)
	p.stop(t, syscall.SIGTERM)
	f, err := os.Open(prof)
	require.NoError(t, err, "no profile written")
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err, "a pprof profile is gzip-compressed")
	data, err := io.ReadAll(zr)
	require.NoError(t, err, "the profile is cut: profiling never stopped")
	assert.NotEmpty(t, data)

	missing := filepath.Join(dir, "missing", "cpu.pprof")
	code, out := runToExit(t, exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml"), "-cpuprofile", missing))
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, missing)
	assert.NotContains(t, out, "listening", "served without the profile asked for")
}

// TestCPUProfileWhileProfiling: startCPUProfile fails, with no stop to
// call, when a CPU profile is being written already (one a process may
// have), rather than leave serve believing it writes one.
func TestCPUProfileWhileProfiling(t *testing.T) {
	if err := pprof.StartCPUProfile(io.Discard); err != nil {
		t.Skipf("profiling already (go test -cpuprofile): %v", err)
	}
	defer pprof.StopCPUProfile()
	stop, err := startCPUProfile(filepath.Join(t.TempDir(), "cpu.pprof"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cpu profiling already in use")
	assert.Nil(t, stop)
}
