package resolver

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestNamedPipeListIsNotReloadedAgainAndAgain: a list served through a
// named pipe by a generator (`while :; do gen > tiktok.txt; done`) is read
// by the reload (ReadList reads a pipe whole). But the watcher hashes a
// file that is not regular as empty, while Watch takes the applied list's
// sum (the content's) as what was reported: every reload that applies is
// followed, two debounce periods later, by another, for ever (with a
// one-shot writer: by one that waits PipeIdle and fails, so the status is
// failed and /readyz turns 503 after unready_after). And each hash opens
// the pipe, releasing a writer waiting in open(2) into a pipe that is
// closed at once: what it writes is lost.
func TestNamedPipeListIsNotReloadedAgainAndAgain(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, reloadConfig, testFiles, up.addr)
	r := watching(t, f, zap.NewNop())
	list := filepath.Join(f.dir, "tiktok.txt")
	content := testFiles["tiktok.txt"] + "lemon8-app.com\n"
	toNamedPipe(t, list, 500*time.Millisecond)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			w, err := os.OpenFile(list, os.O_WRONLY, 0) // waits for a reader
			if err != nil {
				return
			}
			select {
			case <-stop:
				w.Close()
				return
			default:
			}
			_, _ = w.WriteString(content)
			w.Close()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		// Release the writer from its open(2).
		if rd, err := os.OpenFile(list, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-done
			rd.Close()
		}
	})
	require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "", "lemon8-app.com.") == dns.RcodeNameError },
		10*time.Second, 10*time.Millisecond, "the piped list applies")
	time.Sleep(500 * time.Millisecond)
	st := r.Status()
	before := st.Successes + st.Failures
	time.Sleep(2 * time.Second)
	st = r.Status()
	assert.Equal(t, before, st.Successes+st.Failures, "reloads with nothing changed: %d more in 2s (last error %v)",
		st.Successes+st.Failures-before, st.Err)
}

// TestPipeListSharedByPoliciesIsWaitedForOnce: README says a list
// replaced by a named pipe is waited for "10 s at most". BuildSnapshot
// used to read a list once per policy naming it when the read failed
// (loadList kept only lists that loaded), so a pipe named by testConfig's
// three policies held every reload 3 x PipeIdle (30 s) and was reported
// three times; a failed list is now read once, its error kept.
func TestPipeListSharedByPoliciesIsWaitedForOnce(t *testing.T) {
	path := writeConfig(t, testConfig, testFiles, "127.0.0.1:53")
	list := filepath.Join(filepath.Dir(path), "tiktok.txt")
	toNamedPipe(t, list, 300*time.Millisecond)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	start := time.Now()
	_, err = BuildSnapshot(cfg, nil)
	took := time.Since(start)
	require.Error(t, err)
	require.Less(t, took, 2*blocklist.PipeIdle, "the pipe was waited for %s: %v", took, err)
}

// toNamedPipe replaces the file at path with a named pipe no one writes
// yet, and makes blocklist.PipeIdle idle until the test ends, so that
// waiting for the pipe takes a moment; the test skips where there are no
// named pipes.
func toNamedPipe(t *testing.T, path string, idle time.Duration) {
	t.Helper()
	was := blocklist.PipeIdle
	blocklist.PipeIdle = idle
	t.Cleanup(func() { blocklist.PipeIdle = was })
	require.NoError(t, os.Remove(path))
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Skip("no named pipes here:", err)
	}
}

// TestMarkupHintLeavesAPipeAlone: a list replaced by a named pipe whose
// writer sends only bad lines is refused (ErrOnlyBadLines). markupHint,
// which looks for a web page in the refused file, must not open the pipe
// again: an open read end releases the next writer waiting in open(2)
// into a pipe no one reads (what it writes is lost), and markupHint
// returned without closing it, so it stayed open after BuildSnapshot.
func TestMarkupHintLeavesAPipeAlone(t *testing.T) {
	path := writeConfig(t, testConfig, testFiles, "127.0.0.1:53")
	list := filepath.Join(filepath.Dir(path), "tiktok.txt")
	toNamedPipe(t, list, 2*time.Second)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	wrote := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(list, os.O_WRONLY, 0) // waits for the reload's reader
		if err == nil {
			_, err = w.WriteString("<html><body>not a list</body></html>\n")
			w.Close()
		}
		wrote <- err
	}()
	_, err = BuildSnapshot(cfg, nil)
	require.ErrorIs(t, err, ErrOnlyBadLines)
	require.NoError(t, <-wrote)
	// A writer that does not wait opens only while a reader is there.
	w, err := os.OpenFile(list, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err == nil {
		w.Close()
	}
	assert.ErrorIs(t, err, syscall.ENXIO, "the named pipe is still open for reading after BuildSnapshot")
}

// TestPipeConfigIsReadOncePerReload: a reload reads the configuration
// once. prefetchSources read it as well, before the reload did: a
// configuration (or an upstream_ca) replaced by a named pipe with no
// writer held every reload 2 x PipeIdle (README: "waits for its writer
// 10 s at most"), and a one-shot writer's content went to the first
// read, the reload's own finding the pipe empty.
func TestPipeConfigIsReadOncePerReload(t *testing.T) {
	srv := startListServer(t, map[string]string{"/a.txt": names(8, "tiktok.com")})
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:53"]
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["`+srv.URL+`/a.txt"]
sources: {refresh: 1h, cache_dir: cache}
`), 0o644))
	f := startSourceFence(t, dir, "127.0.0.1:0")
	content, err := os.ReadFile(path)
	require.NoError(t, err)

	toNamedPipe(t, path, time.Second)
	start := time.Now()
	require.Error(t, f.reloader.Reload(false))
	assert.Less(t, time.Since(start), 1800*time.Millisecond, "the named pipe was waited for twice")

	// A one-shot writer: the reload reads what it writes.
	done := make(chan struct{})
	go func() {
		defer close(done)
		w, err := os.OpenFile(path, os.O_WRONLY, 0) // waits for a reader
		if err == nil {
			_, _ = w.WriteString(string(content))
			w.Close()
		}
	}()
	t.Cleanup(func() {
		// Release the writer from its open(2) if no reload read.
		if rd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-done
			rd.Close()
		}
	})
	assert.NoError(t, f.reloader.Reload(false))
}
