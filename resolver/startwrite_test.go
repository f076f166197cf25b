package resolver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// startWriteConfig blocks tiktok.txt for 127.0.70.0/26. Its upstream is
// never asked: every name the test asks is blocked.
const startWriteConfig = `
listen: ["127.0.70.3:0"]
upstreams: ["127.0.70.9:53"]
allowed_clients: ["127.0.70.0/24"]
log: {queries: none}
reload: {debounce: 20ms, writer_wait: 30s}
policies:
  - name: government-devices
    clients: ["127.0.70.0/26"]
    block: ["tiktok.txt"]
`

// TestStartWaitsForAListBeingWritten starts dnsfence while a list is
// being written: truncated, its first half written, its writer paused
// with the file open. The first snapshot has nothing to measure a shrink
// against, so the half was served, and every name after the cut went
// unblocked, with /readyz ready, until the writer was done. Start now
// waits for the writer to close the file, and serves it whole.
func TestStartWaitsForAListBeingWritten(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(startWriteConfig), 0o644))
	list := filepath.Join(dir, "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbyteoversea.com\n"), 0o644))
	// The writer truncates the list and pauses half way.
	writer, err := os.OpenFile(list, os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { writer.Close() })
	_, err = writer.WriteString("tiktok.com\nbyte")
	require.NoError(t, err)

	log, logs := observed(t)
	h, started := startInBackground(t, log, path)
	// Held past the second after which Start logs that it waited, by a
	// margin for the goroutine's start on a busy machine: held exactly a
	// second, a Start that began 20 ms late waited less than one.
	require.Never(t, func() bool { return len(started) > 0 }, 1500*time.Millisecond, 10*time.Millisecond,
		"the first snapshot was built while a writer held its list open, half written")

	_, err = writer.WriteString("oversea.com\n")
	require.NoError(t, err)
	require.NoError(t, writer.Close())
	snap := awaitStart(t, started, "Start did not return once the writer closed the list")
	assert.Equal(t, 2, snap.Lists[list].Len(), "the list whole")
	assert.Empty(t, logs.FilterMessage("loading files a writer still holds open: unchanged for reload.writer_wait").All(),
		"the writer had closed the list")
	assert.NotEmpty(t, logs.FilterMessage("loading files once their writers were done").All())

	srv := NewServer(log, h)
	require.NoError(t, srv.Start([]string{"127.0.70.3:0"}))
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	})
	for _, name := range []string{"tiktok.com.", "byteoversea.com."} {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, srv.Addrs()[0], "127.0.70.4", name), name)
	}
}

// TestStartWaitsForAListWrittenWhileSourcesLoad: Start waited for the
// files to be complete first, and then, up to 10 s, for the remote lists'
// first copies, and read the files only after that. A list a writer
// began on during those seconds (a sync run at boot beside dnsfence) was
// read half written, and its first half served, every name after the cut
// unblocked, until the writer was done. The files are now waited for
// last, right before they are read.
func TestStartWaitsForAListWrittenWhileSourcesLoad(t *testing.T) {
	srvURL, asked, releaseOnce := testnet.HeldList(t, "127.0.72.5:0")

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`
listen: ["127.0.72.3:0"]
upstreams: ["127.0.72.9:53"]
allowed_clients: ["127.0.72.0/24"]
log: {queries: none}
reload: {debounce: 20ms, writer_wait: 30s}
sources: {cache_dir: %q}
policies:
  - name: government-devices
    clients: ["127.0.72.0/26"]
    block: ["tiktok.txt", "%s/remote.txt"]
`, filepath.Join(dir, "cache"), srvURL)), 0o644))
	list := filepath.Join(dir, "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbyteoversea.com\n"), 0o644))

	log, _ := observed(t)
	_, started := startInBackground(t, log, path)
	awaitFetch(t, asked)
	// Start waits for the remote list's first copy, well past the
	// list's quiet period (20 ms).
	require.Never(t, func() bool { return len(started) > 0 }, 500*time.Millisecond, 10*time.Millisecond)

	// A writer truncates the list and pauses half way; then the remote
	// list's copy comes.
	writer, err := os.OpenFile(list, os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { writer.Close() })
	_, err = writer.WriteString("tiktok.com\nbyte")
	require.NoError(t, err)
	releaseOnce()
	require.Never(t, func() bool { return len(started) > 0 }, time.Second, 10*time.Millisecond,
		"the first snapshot was built while a writer held its list open, half written")

	_, err = writer.WriteString("oversea.com\n")
	require.NoError(t, err)
	require.NoError(t, writer.Close())
	snap := awaitStart(t, started, "Start did not return once the writer closed the list")
	assert.Equal(t, 2, snap.Lists[list].Len(), "the list whole")
}

// startInBackground loads the configuration at path and runs a Reloader's
// Start of it on a goroutine, for a Handler it returns; the first
// snapshot arrives on started once Start returns. The sources run until
// the test ends.
func startInBackground(t *testing.T, log *zap.Logger, path string) (*Handler, <-chan *Snapshot) {
	t.Helper()
	cfg, err := config.Load(path)
	require.NoError(t, err)
	h := NewHandler(log, nil, NewMetrics(prometheus.NewRegistry()))
	r := NewReloader(log, h, func() (*config.Config, error) { return config.Load(path) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		// A source dropped while Start ran (a list the configuration
		// read again moved) may still be writing its disk copy into the
		// test's folder, which the folder's own cleanup, after this one,
		// then failed to remove ("directory not empty", seen in CI).
		assert.True(t, r.sourcesStopped(10*time.Second), "the remote list sources stop")
	})
	started := make(chan *Snapshot, 1)
	go func() {
		snap, err := r.Start(ctx, cfg)
		assert.NoError(t, err)
		started <- snap
	}()
	return h, started
}

// TestStartReadsAConfigChangedWhileStarting: serve reads the
// configuration, then Start waits for the remote lists and reads the
// files. A configuration written meanwhile by a writer /proc does not
// show (ProtectProc=invisible) was never looked at again: its first read
// was served, which may be a cut one, policies or lists past the cut
// missing. Start now reads it again when it changed since it was read,
// and serves the snapshot of the new one.
func TestStartReadsAConfigChangedWhileStarting(t *testing.T) {
	srvURL, asked, releaseOnce := testnet.HeldList(t, "127.0.73.5:0")

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	text := func(lists string) string {
		return remoteStartConfig("127.0.73", filepath.Join(dir, "cache"), fmt.Sprintf(`%s"%s/remote.txt"`, lists, srvURL))
	}
	require.NoError(t, os.WriteFile(path, []byte(text("tiktok.txt, ")), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tiktok.txt"), []byte("tiktok.com\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "capcut.txt"), []byte("capcut.com\n"), 0o644))

	log, logs := observed(t)
	_, started := startInBackground(t, log, path)
	awaitFetch(t, asked)
	// Written whole and closed: no writer for /proc to show.
	require.NoError(t, os.WriteFile(path, []byte(text("tiktok.txt, capcut.txt, ")), 0o644))
	releaseOnce()
	snap := awaitStart(t, started, "Start did not return")
	assert.Equal(t, []string{"tiktok.txt", "capcut.txt", srvURL + "/remote.txt"}, snap.Config.Policies[0].Block,
		"the configuration as it is, not as serve first read it")
	require.Contains(t, snap.Lists, filepath.Join(dir, "capcut.txt"))
	assert.Equal(t, 1, snap.Lists[filepath.Join(dir, "capcut.txt")].Len())
	assert.Equal(t, 1, snap.Lists[srvURL+"/remote.txt"].Len(), "the remote list's copy")
	assert.NotEmpty(t, logs.FilterMessage("loading files once their writers were done").All())
}

// TestStartWaitsForARemoteListAConfigReadAgainAdds: Start reads the
// configuration again when it changed while the lists were read. A
// remote list the configuration read again adds (a list moved to a new
// URL) had its source started only after the first snapshot was built,
// with no wait for its first copy: the first snapshot served it empty,
// every name it blocks answered, where a start with that configuration
// waits up to StartWait for the copy.
func TestStartWaitsForARemoteListAConfigReadAgainAdds(t *testing.T) {
	heldURL, asked, releaseOnce := testnet.HeldList(t, "127.0.74.5:0")
	ln, err := net.Listen("tcp", "127.0.74.6:0")
	require.NoError(t, err)
	moved := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("tiktok.com\nbytedance.com\n"))
	}))
	moved.Listener.Close()
	moved.Listener = ln
	moved.Start()
	t.Cleanup(moved.Close)

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	text := func(url string) string {
		return remoteStartConfig("127.0.74", filepath.Join(dir, "cache"), fmt.Sprintf("%q", url))
	}
	require.NoError(t, os.WriteFile(path, []byte(text(heldURL+"/remote.txt")), 0o644))

	log, _ := observed(t)
	_, started := startInBackground(t, log, path)
	awaitFetch(t, asked)
	// The list moved: written whole and closed while Start waits.
	require.NoError(t, os.WriteFile(path, []byte(text(moved.URL+"/remote.txt")), 0o644))
	releaseOnce()
	snap := awaitStart(t, started, "Start did not return")
	require.Contains(t, snap.Lists, moved.URL+"/remote.txt")
	assert.Equal(t, 2, snap.Lists[moved.URL+"/remote.txt"].Len(), "the first snapshot serves the moved list with its first copy")
}

// TestStartReadsAgainAConfigCaughtCutOnItsSecondRead: Start reads the
// configuration again when it changed since serve read it, as written by
// a writer /proc does not show. That second read may catch it cut, as
// serve's first could: serve reads a configuration that does not parse
// again once steady, but Start failed at once, and dnsfence did not
// start.
func TestStartReadsAgainAConfigCaughtCutOnItsSecondRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	text := func(lists string) string {
		return fmt.Sprintf(`
listen: ["127.0.74.3:0"]
upstreams: ["127.0.74.9:53"]
allowed_clients: ["127.0.74.0/24"]
log: {queries: none}
reload: {debounce: 200ms, writer_wait: 30s}
policies:
  - name: government-devices
    clients: ["127.0.74.0/26"]
    block: [%s]
`, lists)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tiktok.txt"), []byte("tiktok.com\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "capcut.txt"), []byte("capcut.com\n"), 0o644))
	require.NoError(t, os.WriteFile(path, []byte(text("tiktok.txt")), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	// Changed since serve read it: Start reads it again.
	whole := text("tiktok.txt, capcut.txt")
	require.NoError(t, os.WriteFile(path, []byte(whole), 0o644))

	log, _ := observed(t)
	h := NewHandler(log, nil, NewMetrics(prometheus.NewRegistry()))
	var once sync.Once
	wrote := make(chan struct{})
	r := NewReloader(log, h, func() (*config.Config, error) {
		once.Do(func() {
			// The unseen writer rewrites it in place: caught cut, then
			// done a moment later.
			cut := len(whole) - len("t.txt]\n")
			require.NoError(t, os.WriteFile(path, []byte(whole[:cut]), 0o644))
			go func() {
				defer close(wrote)
				time.Sleep(50 * time.Millisecond)
				assert.NoError(t, os.WriteFile(path, []byte(whole), 0o644))
			}()
		})
		return config.Load(path)
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	snap, err := r.Start(ctx, cfg)
	<-wrote
	require.NoError(t, err)
	t.Cleanup(func() { snap.Forwarder().Close() })
	assert.Equal(t, []string{"tiktok.txt", "capcut.txt"}, snap.Config.Policies[0].Block)
}

// TestStartDoesNotReadAPipedConfigAgain: a configuration served through
// a named pipe (written once, to serve's read) was read again by Start
// whenever a list changed while the lists were read: the second read
// waited PipeIdle for a writer that had gone, twice (once more as a
// configuration that did not load), and dnsfence did not start. A pipe's
// content cannot be compared: it is not read again.
func TestStartDoesNotReadAPipedConfigAgain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	content := `
listen: ["127.0.74.3:0"]
upstreams: ["127.0.74.9:53"]
allowed_clients: ["127.0.74.0/24"]
log: {queries: none}
reload: {debounce: 500ms, writer_wait: 30s}
policies:
  - name: government-devices
    clients: ["127.0.74.0/26"]
    block: [tiktok.txt]
`
	list := filepath.Join(dir, "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\n"), 0o644))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	// A pipe read again waits PipeIdle for a writer that never comes, then
	// fails: far longer than the start's two quiet periods (1 s), so that
	// a busy machine does not blur the two.
	const idle = 5 * time.Second
	toNamedPipe(t, path, idle)
	go func() {
		if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			_, _ = w.WriteString(content)
			w.Close()
		}
	}()
	cfg, err := config.Load(path)
	require.NoError(t, err)

	log, _ := observed(t)
	h := NewHandler(log, nil, NewMetrics(prometheus.NewRegistry()))
	r := NewReloader(log, h, func() (*config.Config, error) { return config.Load(path) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		// In the quiet period after the first read: read again.
		time.Sleep(100 * time.Millisecond)
		f, err := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			_, _ = f.WriteString("byteoversea.com\n")
			f.Close()
		}
	}()
	start := time.Now()
	snap, err := r.Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { snap.Forwarder().Close() })
	assert.Less(t, time.Since(start), idle, "the pipe was waited for")
	assert.Equal(t, 2, snap.Lists[list].Len(), "the list read again")
}

// remoteStartConfig is a configuration on the addresses of net (three
// octets: "127.0.73") whose one policy blocks the lists of block (YAML
// flow items) for the lower quarter of net's /24; remote lists' copies in
// cache. Its upstream is never asked.
func remoteStartConfig(net, cache, block string) string {
	return fmt.Sprintf(`
listen: ["%[1]s.3:0"]
upstreams: ["%[1]s.9:53"]
allowed_clients: ["%[1]s.0/24"]
log: {queries: none}
reload: {debounce: 20ms, writer_wait: 30s}
sources: {cache_dir: %[2]q}
policies:
  - name: government-devices
    clients: ["%[1]s.0/26"]
    block: [%[3]s]
`, net, cache, block)
}

// awaitStart waits up to 20 s for the snapshot of a Start begun by
// startInBackground, failing the test with msg if none comes; its
// forwarder is closed at the test's end.
func awaitStart(t *testing.T, started <-chan *Snapshot, msg string) *Snapshot {
	t.Helper()
	var snap *Snapshot
	select {
	case snap = <-started:
	case <-time.After(20 * time.Second):
		require.FailNow(t, msg)
	}
	require.NotNil(t, snap)
	t.Cleanup(func() { snap.Forwarder().Close() })
	return snap
}

// awaitFetch waits up to 10 s for heldRemoteList's list to be asked.
func awaitFetch(t *testing.T, asked <-chan struct{}) {
	t.Helper()
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the remote list was not fetched")
	}
}

// TestStartWarnsOfAWriterHoldingAListOpen: a process holds a list open
// for writing when dnsfence starts, and writes nothing. Start waits
// reload.writer_wait for it, serves the list, and says so at warn, naming
// the writer: the list may still change under the state served.
func TestStartWarnsOfAWriterHoldingAListOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(startWriteConfig, "writer_wait: 30s", "writer_wait: 300ms", 1)), 0o644))
	list := filepath.Join(dir, "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbyteoversea.com\n"), 0o644))
	testnet.HoldOpen(t, list, ">>")

	log, logs := observed(t)
	_, started := startInBackground(t, log, path)
	snap := awaitStart(t, started, "Start did not return after reload.writer_wait")
	assert.Equal(t, 2, snap.Lists[list].Len())
	warn := logs.FilterMessage("loading files a writer still holds open: unchanged for reload.writer_wait").All()
	require.Len(t, warn, 1)
	assert.Equal(t, zap.WarnLevel, warn[0].Level)
	assert.NotEmpty(t, warn[0].ContextMap()["writers"])
}

// TestStartRefusesAListOfOnlyBadLines: a list that does not load when
// Start reads it (only bad lines: a web page saved in its place) stops the
// start with ErrOnlyBadLines, and nothing is published: dnsfence does not
// serve the policy with the list missing, every name it named unblocked.
func TestStartRefusesAListOfOnlyBadLines(t *testing.T) {
	path := filepath.Join(testnet.WriteTree(t, map[string]string{"dnsfence.yaml": startWriteConfig, "tiktok.txt": "<html>\n<body>not found</body>\n"}), "dnsfence.yaml")
	cfg, err := config.Load(path)
	require.NoError(t, err)

	err = startRefused(t, path, cfg)
	require.ErrorIs(t, err, ErrOnlyBadLines)
	assert.Contains(t, err.Error(), "tiktok.txt")
}

// TestStartServesAListStillChangingAfterWriterWait: a list whose writer
// goes on changing it past reload.writer_wait is given up on at start:
// Start serves the last read, says so at warn, and does not fail (the
// watcher applies the list once complete). Refusing it would leave a
// device unprotected until the writer stopped, which it may never do.
func TestStartServesAListStillChangingAfterWriterWait(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": strings.Replace(startWriteConfig, "debounce: 20ms, writer_wait: 30s", "debounce: 400ms, writer_wait: 1s", 1),
		"tiktok.txt":    "tiktok.com\n",
	})
	path, list := filepath.Join(dir, "dnsfence.yaml"), filepath.Join(dir, "tiktok.txt")
	// The writer replaces the list every 10 ms, each time with other
	// content, written whole beside it and renamed over it (WriteFile in
	// place truncates first: a read between the two saw an empty list):
	// every read, whose quiet period is 400 ms, sees the list change.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			next := filepath.Join(dir, "tiktok.txt.new")
			assert.NoError(t, os.WriteFile(next, []byte(fmt.Sprintf("tiktok.com\nbyte%d.com\n", i)), 0o644))
			assert.NoError(t, os.Rename(next, list))
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-stopped
	})

	log, logs := observed(t)
	_, started := startInBackground(t, log, path)
	snap := awaitStart(t, started, "Start did not return after reload.writer_wait")
	assert.Positive(t, snap.Lists[list].Len())
	warn := logs.FilterMessage("loading files still being written after reload.writer_wait; the watcher applies them once complete").All()
	require.Len(t, warn, 1)
	assert.Equal(t, zap.WarnLevel, warn[0].Level)
	assert.Contains(t, warn[0].ContextMap()["error"], "tiktok.txt")
}

// TestStartRefusesABrokenUpstreamCA: an upstream_ca bundle that no longer
// loads when Start connects the upstreams (replaced after the
// configuration validated it) stops the start, naming the key, and
// nothing is published: no snapshot serves without its forwarder.
func TestStartRefusesABrokenUpstreamCA(t *testing.T) {
	p := newTestPKI(t)
	pCA, err := os.ReadFile(p.caFile)
	require.NoError(t, err)
	path := writeConfig(t, "listen: [\"127.0.194.4:0\"]\nupstreams: {{upstreams}}\nupstream_ca: upstream-ca.pem\nallowed_clients: [\"10.0.0.0/8\"]\n",
		map[string]string{"upstream-ca.pem": string(pCA)}, "tls://127.0.194.4:853#"+testServerName)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "upstream-ca.pem"), []byte("not a PEM file\n"), 0o644))

	assert.ErrorContains(t, startRefused(t, path, cfg), "upstream_ca")
}

// TestStartRefusesAConfigBrokenWhileStarting: the configuration changed
// since serve read it, and Start reads it again; written broken meanwhile
// (a policy key misspelt), it stops the start with its error rather than
// serving the first read or a configuration of nothing.
func TestStartRefusesAConfigBrokenWhileStarting(t *testing.T) {
	path := filepath.Join(testnet.WriteTree(t, map[string]string{"dnsfence.yaml": startWriteConfig, "tiktok.txt": "tiktok.com\n"}), "dnsfence.yaml")
	cfg, err := config.Load(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(startWriteConfig, "block:", "blokc:", 1)), 0o644))

	require.ErrorContains(t, startRefused(t, path, cfg), "blokc")
}

// startRefused runs a Reloader's Start with cfg, read from path (which
// Start reads again), for a start that fails: it checks that Start
// returned no snapshot and published none, and returns Start's error.
func startRefused(t *testing.T, path string, cfg *config.Config) error {
	t.Helper()
	log, _ := observed(t)
	h := NewHandler(log, nil, NewMetrics(prometheus.NewRegistry()))
	r := NewReloader(log, h, func() (*config.Config, error) { return config.Load(path) })
	snap, err := r.Start(t.Context(), cfg)
	assert.Nil(t, snap, "no snapshot returned")
	assert.Nil(t, h.Snapshot(), "nothing published")
	return err
}
