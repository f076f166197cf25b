package resolver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRemoteListSwappedForAnother: a configuration that names a remote
// list in place of another (the list moved to a new host) was applied
// with the new list empty, its source started only once the snapshot was
// published: after SIGHUP the old list's names were answered for the
// seconds of the first fetch, and for good with the new host
// unreachable, /readyz the only sign. (The watcher holds such an edit, as
// it holds every block list taken out of a policy.) A reload now starts the
// sources of the lists it adds and waits for their first copies (up to
// StartWait) before it reads the configuration, and SIGHUP refuses a
// change the guards hold when one of them still has no copy.
func TestRemoteListSwappedForAnother(t *testing.T) {
	up := startUpstream(t, nil)
	body := names(8, "tiktok.com", "douyin.com")
	srv := startListServer(t, map[string]string{"/a.txt": body, "/b.txt": body, "/c.txt": body})
	// A port nothing listens on, held so that no other test process takes
	// it: its list's fetch fails at once.
	down := "http://" + testnet.RefusingAddr(t) + "/d.txt"

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	configure := func(url string) { writeOneListConfig(t, path, up.addr, url) }
	configure(srv.URL + "/a.txt")
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))

	t.Run("SIGHUP", func(t *testing.T) {
		f.reloader.mu.Lock()
		old := f.reloader.sources[srv.URL+"/a.txt"]
		f.reloader.mu.Unlock()
		require.NotNil(t, old)
		configure(srv.URL + "/b.txt")
		require.NoError(t, f.reloader.Reload(true))
		require.Eventually(t, func() bool {
			select {
			case <-old.done:
				return true
			default:
				return false
			}
		}, 10*time.Second, 5*time.Millisecond, "the source of the list taken out still runs")
		assert.Equal(t, 10, f.handler.Snapshot().Lists[srv.URL+"/b.txt"].Len(), "served with its first copy")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."), "right after the reload")
		assert.Equal(t, srv.URL+"/b.txt", f.status(t, srv.URL+"/b.txt").Name, "the source /readyz and the metrics see")
	})

	t.Run("an edit: held as a list removed, then SIGHUP", func(t *testing.T) {
		configure(srv.URL + "/c.txt")
		require.ErrorIs(t, f.reloader.Reload(false), ErrRemoved)
		require.NoError(t, f.reloader.Reload(true))
		assert.Equal(t, 10, f.handler.Snapshot().Lists[srv.URL+"/c.txt"].Len(), "served with its first copy")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
	})

	t.Run("SIGHUP to a list with no copy: refused", func(t *testing.T) {
		configure(down)
		err := f.reloader.Reload(true)
		require.ErrorIs(t, err, ErrNoCopy)
		assert.Contains(t, err.Error(), down+" (")
		assert.Contains(t, err.Error(), "connection refused", "the source's last error says why it has no copy")
		assert.True(t, logged(f.logs, "list source failed; no copy yet, so its list blocks none of its names", map[string]any{"source": down}),
			"the source SIGHUP started logs its failure")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."), "the running state kept")
		assert.NotEmpty(t, f.logs.FilterMessage("SIGHUP reload refused, keeping the last good state: a remote list it adds has no copy yet").All())
		f.reloader.mu.Lock()
		_, running := f.reloader.sources[down]
		f.reloader.mu.Unlock()
		assert.False(t, running, "the refused list's source stopped again")

		// Without the unreachable list, the change is the operator's.
		configure(srv.URL + "/a.txt")
		require.NoError(t, f.reloader.Reload(true))
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
	})
}

// TestPrefetchedSourceOwnedByItsReload: a reload that fails stopped every
// source the running configuration does not name, those another reload
// under way had started and was waiting for among them; and a reload did
// not wait for a source another one had started and that had no copy
// yet. An edit's reload (held: the old list taken out) running while a
// SIGHUP waited for the new list's first copy stopped that source: the
// SIGHUP waited out StartWait and was refused (ErrNoCopy, "not started")
// though the copy came within a second. A reload that does not apply
// (Stop came first, or a read mid-write) left the sources it started
// running, unconfigured, until the next reload.
func TestPrefetchedSourceOwnedByItsReload(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/a.txt": names(8, "tiktok.com", "douyin.com")})
	slowURL, asked, release := testnet.HeldList(t, "127.0.74.7:0")
	slow := slowURL + "/b.txt"

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	configure := func(url string) { writeOneListConfig(t, path, up.addr, url) }
	configure(srv.URL + "/a.txt")
	f := startSourceFence(t, dir, "127.0.0.1:0")
	running := func(name string) bool {
		f.reloader.mu.Lock()
		defer f.reloader.mu.Unlock()
		_, ok := f.reloader.sources[name]
		return ok
	}

	configure(slow)
	sighup := make(chan error, 1)
	go func() { sighup <- f.reloader.Reload(true) }()
	awaitFetch(t, asked)
	edit := make(chan error, 1)
	go func() { edit <- f.reloader.Reload(false) }()
	time.Sleep(300 * time.Millisecond) // the edit's reload reads the configuration meanwhile
	began := time.Now()
	release()
	select {
	case err := <-sighup:
		require.NoError(t, err)
	case <-time.After(2 * StartWait):
		require.FailNow(t, "SIGHUP did not return")
	}
	assert.Less(t, time.Since(began), StartWait/2, "SIGHUP waited out StartWait")
	assert.Equal(t, 1, f.handler.Snapshot().Lists[slow].Len(), "served with its first copy")
	<-edit
	assert.True(t, running(slow))

	// A reload Stop comes before: the source it started stops again.
	stalledURL, asked2, _ := testnet.HeldList(t, "127.0.74.8:0")
	stalled := stalledURL + "/c.txt"
	configure(stalled)
	stopped := make(chan error, 1)
	go func() { stopped <- f.reloader.Reload(true) }()
	select {
	case <-asked2:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the stalled list was not fetched")
	}
	f.reloader.Stop()
	require.ErrorIs(t, <-stopped, ErrStopping)
	assert.False(t, running(stalled), "the source of a reload not applied still runs")
}

// TestSIGHUPRefusedIncompleteDoesNotPrefetch: a SIGHUP refused because a
// file is still being written (ErrIncomplete) applies nothing, but it
// started the sources of the lists the configuration on disk adds (a
// half-written one's among them) and waited up to StartWait for their
// first copies before it said so.
func TestSIGHUPRefusedIncompleteDoesNotPrefetch(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/a.txt": names(8, "tiktok.com"), "/b.txt": names(8, "douyin.com")})
	slowURL, asked, _ := testnet.HeldList(t, "127.0.74.9:0")
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	text := func(url string) string {
		return fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s/a.txt", "%s/b.txt"]
sources: {refresh: 1h, cache_dir: cache}
`, up.addr, srv.URL, url)
	}
	require.NoError(t, os.WriteFile(path, []byte(text(srv.URL)), 0o644))
	f := startSourceFence(t, dir, "127.0.0.1:0")
	f.reloader.sighupWait = 300 * time.Millisecond

	// A writer that keeps writing: the configuration is never complete.
	require.NoError(t, os.WriteFile(path, []byte(text(slowURL)), 0o644))
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if w, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0); err == nil {
				_, _ = fmt.Fprintf(w, "# %d\n", i)
				w.Close()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-wrote })
	start := time.Now()
	err := f.reloader.Reload(true)
	require.ErrorIs(t, err, ErrIncomplete)
	assert.Less(t, time.Since(start), StartWait/2, "waited for the sources of a reload refused")
	select {
	case <-asked:
		t.Error("the added list's source started for a reload refused")
	default:
	}
}

// TestBrokenConfigWithSourcesKeepsTheState: a started Reloader (remote
// list sources running, as in production) reads the configuration before
// a reload to start the sources it adds; a configuration that does not
// load fails the reload there, and the running state, its remote list
// with it, goes on serving, on SIGHUP as on an edit.
func TestBrokenConfigWithSourcesKeepsTheState(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/a.txt": names(8, "tiktok.com")})
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	writeOneListConfig(t, path, up.addr, srv.URL+"/a.txt")
	f := startSourceFence(t, dir, "127.0.0.1:0")
	require.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.1", "tiktok.com."))
	good := f.handler.Snapshot()

	require.NoError(t, os.WriteFile(path, []byte("policies: [\n"), 0o644))
	for _, force := range []bool{false, true} {
		err := f.reloader.Reload(force)
		require.Error(t, err, "SIGHUP %v", force)
		assert.NotErrorIs(t, err, ErrHeld)
		assert.Same(t, good, f.handler.Snapshot(), "the running state kept")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.1", "tiktok.com."))
	}
	assert.EqualValues(t, 2, f.reloader.Status().Failures)
}

// writeOneListConfig writes, at path, a configuration that forwards to
// upstream and blocks the one list url for 127.0.0.1, its copies kept in
// the folder's cache.
func writeOneListConfig(t *testing.T, path, upstream, url string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s"]
sources: {refresh: 1h, cache_dir: cache}
`, upstream, url)), 0o644))
}
