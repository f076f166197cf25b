package resolver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

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
	var snap *Snapshot
	select {
	case snap = <-started:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Start did not return once the writer closed the list")
	}
	require.NotNil(t, snap)
	assert.Equal(t, 2, snap.Lists[list].Len(), "the list whole")
	assert.NotEmpty(t, logs.FilterMessage("loading files once their writers were done").All())

	srv := NewServer(log, h)
	require.NoError(t, srv.Start([]string{"127.0.70.3:0"}))
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		h.Snapshot().Forwarder().Close()
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
	asked := make(chan struct{}, 1)
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.72.5:0")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
		_, _ = w.Write([]byte("douyin.com\n"))
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseOnce)

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
`, filepath.Join(dir, "cache"), srv.URL)), 0o644))
	list := filepath.Join(dir, "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbyteoversea.com\n"), 0o644))

	log, _ := observed(t)
	_, started := startInBackground(t, log, path)
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the remote list was not fetched")
	}
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
	var snap *Snapshot
	select {
	case snap = <-started:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "Start did not return once the writer closed the list")
	}
	require.NotNil(t, snap)
	t.Cleanup(func() { snap.Forwarder().Close() })
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
	t.Cleanup(cancel)
	started := make(chan *Snapshot, 1)
	go func() {
		snap, err := r.Start(ctx, cfg)
		assert.NoError(t, err)
		started <- snap
	}()
	return h, started
}
