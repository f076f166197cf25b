package resolver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// listsConfig keeps its block list in a folder of its own, next to the
// configuration, as departments lay them out.
const listsConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
blocked_ttl: 60
log: {queries: none}
reload: {debounce: 20ms}
policies:
  - name: gov
    clients: ["127.0.0.0/24"]
    block: ["lists/tiktok.txt"]
`

// TestReloadFolderComesBack replaces the lists folder of a running resolver
// the ways operators do and checks over a real socket that the new content
// is applied and that a later edit is applied too: the folder that came
// back is watched again, with or without SIGHUP.
func TestReloadFolderComesBack(t *testing.T) {
	tests := []struct {
		name string
		// replace puts content in place of lists/tiktok.txt.
		replace func(t *testing.T, r *Reloader, dir, content string)
	}{
		{name: "folder deleted, the failed reload seen, then recreated", replace: func(t *testing.T, r *Reloader, dir, content string) {
			before := r.Status().Failures
			require.NoError(t, os.RemoveAll(filepath.Join(dir, "lists")))
			require.Eventually(t, func() bool { return r.Status().Failures > before }, 10*time.Second, 5*time.Millisecond)
			require.NoError(t, os.Mkdir(filepath.Join(dir, "lists"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "lists", "tiktok.txt"), []byte(content), 0o644))
		}},
		{name: "folder deleted and recreated, then SIGHUP", replace: func(t *testing.T, r *Reloader, dir, content string) {
			require.NoError(t, os.RemoveAll(filepath.Join(dir, "lists")))
			require.NoError(t, os.Mkdir(filepath.Join(dir, "lists"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "lists", "tiktok.txt"), []byte(content), 0o644))
			require.NoError(t, r.Reload(true))
		}},
		{name: "folder moved away, the failed reload seen, another renamed in", replace: func(t *testing.T, r *Reloader, dir, content string) {
			next := filepath.Join(dir, "lists.new")
			require.NoError(t, os.Mkdir(next, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(next, "tiktok.txt"), []byte(content), 0o644))
			before := r.Status().Failures
			require.NoError(t, os.Rename(filepath.Join(dir, "lists"), filepath.Join(dir, "lists.old")))
			require.Eventually(t, func() bool { return r.Status().Failures > before }, 10*time.Second, 5*time.Millisecond)
			require.NoError(t, os.Rename(next, filepath.Join(dir, "lists")))
		}},
		{name: "folder swapped by rename", replace: func(t *testing.T, _ *Reloader, dir, content string) {
			next := filepath.Join(dir, "lists.new")
			require.NoError(t, os.Mkdir(next, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(next, "tiktok.txt"), []byte(content), 0o644))
			require.NoError(t, os.Rename(filepath.Join(dir, "lists"), filepath.Join(dir, "lists.old")))
			require.NoError(t, os.Rename(next, filepath.Join(dir, "lists")))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, nil)
			f := startFence(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, up.addr)
			r := watching(t, f, zap.NewNop())
			blocked := func(name string) func() bool {
				return func() bool { return rcodeOf(t, f.addr, "127.0.0.9", name) == dns.RcodeNameError }
			}
			require.True(t, blocked("tiktok.com.")())
			require.False(t, blocked("swapped.example.")())

			tc.replace(t, r, f.dir, "tiktok.com\nswapped.example\n")
			require.Eventually(t, blocked("www.swapped.example."), 10*time.Second, 10*time.Millisecond)

			// An edit of the configuration, applied, so every check the
			// last reload scheduled is over: only a watch on the folder
			// that came back can see the edit after it.
			conf := filepath.Join(f.dir, "dnsfence.yaml")
			good, err := os.ReadFile(conf)
			require.NoError(t, err)
			writeAtomic(t, conf, strings.Replace(string(good), "blocked_ttl: 60", "blocked_ttl: 30", 1))
			require.Eventually(t, func() bool { return f.handler.Snapshot().Config.BlockedTTL == 30 },
				10*time.Second, 10*time.Millisecond)

			list := filepath.Join(f.dir, "lists", "tiktok.txt")
			require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nswapped.example\nlater.example\n"), 0o644))
			require.Eventually(t, blocked("later.example."), 10*time.Second, 10*time.Millisecond)
			writeAtomic(t, list, "tiktok.com\nlater.example\nlast.example\n")
			require.Eventually(t, blocked("last.example."), 10*time.Second, 10*time.Millisecond)
			assert.False(t, blocked("swapped.example.")(), "the edit replaced the list")
			assert.Empty(t, *f.handler.unwatched.Load(), "every file watched")
		})
	}
}

// TestUnwatchedFilesAreVisible makes the file watcher fail to start (as
// the system's inotify limit does) and checks that the lost watch is loud:
// a warning naming the files, dnsfence_unwatched_files (present, zero,
// before), and /readyz naming them while still serving.
func TestUnwatchedFilesAreVisible(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, reloadConfig, testFiles, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)

	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_unwatched_files 0\n", "zero from start, not absent")
	assert.Contains(t, body, "\ndnsfence_watched_folders 0\n", "zero before the watcher runs, not absent")
	code, body := get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.NotContains(t, body, "not watched")

	core, logs := observer.New(zap.InfoLevel)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
	limit := errors.New("too many open files")
	r.newWatcher = func(time.Duration) (*blocklist.Watcher, error) { return nil, limit }
	require.ErrorIs(t, r.Watch(t.Context()), limit)

	files := []string{path}
	for _, name := range []string{"allow.txt", "bytedance.txt", "networks.txt", "tiktok.txt"} {
		files = append(files, filepath.Join(f.dir, name))
	}
	_, body = get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_unwatched_files 5\n")
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code, "the loaded lists still serve")
	assert.Contains(t, body, "not watched")
	for _, file := range files {
		assert.Contains(t, body, file)
	}
	warn := logs.FilterMessageSnippet("files not watched").All()
	require.Len(t, warn, 1)
	assert.Equal(t, zap.WarnLevel, warn[0].Level)
	assert.ElementsMatch(t, files, warn[0].ContextMap()["files"])
	assert.Contains(t, warn[0].ContextMap()["error"], "too many open files")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "tiktok.com."), "still blocking")

	// A SIGHUP that adds a list while nothing watches: the new list is
	// unwatched too (it was not counted before the fix).
	extra := filepath.Join(f.dir, "extra.txt")
	require.NoError(t, os.WriteFile(extra, []byte("example.net\n"), 0o644))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(b), `allow: ["allow.txt"]`, `allow: ["allow.txt", "extra.txt"]`, 1)), 0o644))
	require.NoError(t, r.Reload(true))
	require.Contains(t, f.handler.Snapshot().Lists, extra, "the reload read the new list")
	_, body = get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_unwatched_files 6\n")
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, extra)

	// Watching works again: the files are watched, the gauge is zero, and
	// /readyz no longer names them.
	r.newWatcher = blocklist.NewWatcher
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, r.Watch(ctx))
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		_, body := get(t, srv.URL+"/metrics")
		return strings.Contains(body, "\ndnsfence_unwatched_files 0\n")
	}, 10*time.Second, 10*time.Millisecond)
	_, body = get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_watched_folders 1\n", "the config and every list sit in one folder")
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.NotContains(t, body, "not watched")
	assert.Len(t, logs.FilterMessage("every file is watched again").All(), 1)
}

// TestKeepWatchingStartsTheWatcherAgain: no inotify instance could be
// had when watching began (fs.inotify.max_user_instances reached), and
// dnsfence never tried again: a list edited after the limit freed was
// applied only at a SIGHUP or a restart, while README promised the
// minute's look. KeepWatching tries again, after 1 s doubling to 1 min
// (shorter here), logging each failure; the watcher that starts applies
// the edit made while none watched, and later ones.
func TestKeepWatchingStartsTheWatcherAgain(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, up.addr)
	core, logs := observer.New(zap.InfoLevel)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
	r.retryFirst = 20 * time.Millisecond
	limit := errors.New("too many open files")
	var tries atomic.Int32
	r.newWatcher = func(debounce time.Duration) (*blocklist.Watcher, error) {
		if tries.Add(1) <= 3 {
			return nil, limit
		}
		return blocklist.NewWatcher(debounce)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.KeepWatching(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	blocked := func(name string) func() bool {
		return func() bool { return rcodeOf(t, f.addr, "127.0.0.9", name) == dns.RcodeNameError }
	}
	list := filepath.Join(f.dir, "lists", "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nmeanwhile.example\n"), 0o644))
	require.Eventually(t, blocked("meanwhile.example."), 10*time.Second, 10*time.Millisecond,
		"the edit made while nothing watched, applied once the watcher started")
	require.Eventually(t, func() bool { return len(*f.handler.unwatched.Load()) == 0 }, 10*time.Second, 10*time.Millisecond)
	failed := logs.FilterMessageSnippet("file watching stopped; starting it again").All()
	require.Len(t, failed, 3)
	assert.Equal(t, zap.ErrorLevel, failed[0].Level)
	assert.Contains(t, failed[0].ContextMap()["error"], "too many open files")
	assert.Equal(t, []any{20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond},
		[]any{failed[0].ContextMap()["in"], failed[1].ContextMap()["in"], failed[2].ContextMap()["in"]}, "doubling")

	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nmeanwhile.example\nlater.example\n"), 0o644))
	require.Eventually(t, blocked("later.example."), 10*time.Second, 10*time.Millisecond, "and later edits")
}

// TestLostWatcherIsLoudAndWatchedAgain: a watcher that was running stops
// (its inotify instance gone: the events channel closes). Until a new one
// runs, the loss must be loud, as one that never started is
// (TestUnwatchedFilesAreVisible): an error line, every file counted in
// dnsfence_unwatched_files and named by /readyz (still ready: the loaded
// state serves), dnsfence_watched_folders 0. KeepWatching starts a new
// watcher, which applies the edit made while none watched, and the
// files are watched again. No test stopped a running watcher before:
// dropping what Watch does when Run ends survived every test.
func TestLostWatcherIsLoudAndWatchedAgain(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.InfoLevel)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
	r.retryFirst = time.Millisecond
	// The first watcher is kept to be stopped; the second waits for the
	// test to have seen the loss.
	first := make(chan *blocklist.Watcher, 1)
	release := make(chan struct{})
	var made atomic.Int32
	r.newWatcher = func(debounce time.Duration) (*blocklist.Watcher, error) {
		w, err := blocklist.NewWatcher(debounce)
		if made.Add(1) == 1 {
			first <- w
		} else {
			<-release
		}
		return w, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.KeepWatching(ctx)
	}()
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
		cancel()
		<-done
	})
	metric := func(name string) string {
		_, body := get(t, srv.URL+"/metrics")
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v
			}
		}
		return "absent"
	}
	w := <-first
	// The configuration's folder and the lists folder.
	require.Eventually(t, func() bool { return metric("dnsfence_watched_folders") == "2" }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, "0", metric("dnsfence_unwatched_files"))

	_ = w.Close() // the watcher stops: Run returns (the writer watch may say it was closed already)
	list := filepath.Join(f.dir, "lists", "tiktok.txt")
	require.Eventually(t, func() bool { return metric("dnsfence_unwatched_files") == "2" }, 10*time.Second, 5*time.Millisecond,
		"the configuration and its list")
	assert.Equal(t, "0", metric("dnsfence_watched_folders"))
	code, body := get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code, "the loaded state still serves")
	assert.Contains(t, body, "not watched")
	assert.Contains(t, body, path)
	assert.Contains(t, body, list)
	// KeepWatching logs once Watch has returned.
	require.Eventually(t, func() bool { return logs.FilterMessageSnippet("file watching stopped; starting it again").Len() > 0 },
		10*time.Second, 5*time.Millisecond)
	stopped := logs.FilterMessageSnippet("file watching stopped; starting it again").All()
	require.Len(t, stopped, 1)
	assert.Equal(t, zap.ErrorLevel, stopped[0].Level)
	assert.Contains(t, stopped[0].ContextMap()["error"], "the file watcher stopped")
	warn := logs.FilterMessageSnippet("files not watched").All()
	require.Len(t, warn, 1)
	assert.ElementsMatch(t, []string{path, list}, warn[0].ContextMap()["files"])

	// A SIGHUP while nothing watches that adds a list: it is unwatched too.
	extra := filepath.Join(f.dir, "lists", "extra.txt")
	require.NoError(t, os.WriteFile(extra, []byte("example.net\n"), 0o644))
	conf, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(conf), `block: ["lists/tiktok.txt"]`, `block: ["lists/tiktok.txt", "lists/extra.txt"]`, 1)), 0o644))
	require.NoError(t, r.Reload(true))
	require.Contains(t, f.handler.Snapshot().Lists, extra)
	assert.Equal(t, "3", metric("dnsfence_unwatched_files"))
	_, body = get(t, srv.URL+"/readyz")
	assert.Contains(t, body, extra)

	// An edit while nothing watches, then a watcher again: the edit is
	// applied, and later ones.
	blocked := func(name string) func() bool {
		return func() bool { return rcodeOf(t, f.addr, "127.0.0.9", name) == dns.RcodeNameError }
	}
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nmeanwhile.example\n"), 0o644))
	released = true
	close(release)
	require.Eventually(t, blocked("meanwhile.example."), 10*time.Second, 10*time.Millisecond,
		"the edit made while nothing watched, applied once a watcher runs again")
	require.Eventually(t, func() bool { return metric("dnsfence_unwatched_files") == "0" }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return metric("dnsfence_watched_folders") == "2" }, 10*time.Second, 5*time.Millisecond)
	_, body = get(t, srv.URL+"/readyz")
	assert.NotContains(t, body, "not watched")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nmeanwhile.example\nlater.example\n"), 0o644))
	require.Eventually(t, blocked("later.example."), 10*time.Second, 10*time.Millisecond, "and later edits")
	assert.Empty(t, logs.FilterMessageSnippet("a writer still holds open").All(), "no writer held a file")
	assert.Empty(t, logs.FilterMessageSnippet("SIGHUP applied changes").All(), "nothing was held")
}

// TestKeepWatchingReturnsForTheEmbeddedDefault: the embedded default has
// no file to watch; KeepWatching returns at once, and logs no failure to
// start watching again and again.
func TestKeepWatchingReturnsForTheEmbeddedDefault(t *testing.T) {
	path := writeConfig(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, "127.0.149.1:53") // never asked
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	cfg.Embedded = true // as the built-in default is, its files compiled in
	core, logs := observer.New(zap.InfoLevel)
	r := NewReloader(zap.New(core), NewHandler(zap.NewNop(), snap, nil), nil)
	r.retryFirst = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.KeepWatching(ctx)
	}()
	require.Eventually(t, func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}, 10*time.Second, 5*time.Millisecond, "KeepWatching returned without its context ending")
	assert.Empty(t, logs.FilterMessageSnippet("file watching stopped").All())
}

// TestWatchClosesItsWatcher: the inotify instances a watcher opens are
// closed when Watch returns. KeepWatching starts a watcher again each
// time one stops; one left open each time would use up
// fs.inotify.max_user_instances, after which no watcher starts at all.
func TestWatchClosesItsWatcher(t *testing.T) {
	if testnet.InotifyInstances() < 0 {
		t.Skip("no /proc/self/fd here")
	}
	up := startUpstream(t, nil)
	f := startFence(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, up.addr)
	before := testnet.InotifyInstances()
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, r.Watch(ctx))
	}()
	require.Eventually(t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.watcher != nil
	}, 10*time.Second, 5*time.Millisecond)
	assert.Greater(t, testnet.InotifyInstances(), before, "the watcher's")
	cancel()
	<-done
	assert.LessOrEqual(t, testnet.InotifyInstances(), before, "Watch returned with its watcher's inotify instances open")
}

// TestReadyzNamesASingleUnwatchedFile: one file not watched (its folder
// alone could not be watched) is named by /readyz and counted, as several
// are; /readyz stays ready.
func TestReadyzNamesASingleUnwatchedFile(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
	list := filepath.Join(f.dir, "lists", "tiktok.txt")
	r.setUnwatched(map[string]error{list: errors.New(list + ": not watched: watching " + filepath.Dir(list) + ": no space left on device")})
	code, body := get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "files not watched")
	assert.Contains(t, body, list)
	_, body = get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_unwatched_files 1\n")
}

// TestKeepWatchingStopsWhileWaitingToRetry: a watcher that cannot start
// is tried again after a wait; a stop (its context ended) during that
// wait ends KeepWatching at once, not after the wait (up to a minute,
// past a shutdown's budget).
func TestKeepWatchingStopsWhileWaitingToRetry(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, listsConfig, map[string]string{"lists/tiktok.txt": "tiktok.com\n"}, up.addr)
	core, logs := observer.New(zap.InfoLevel)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.New(core), f.handler, func() (*config.Config, error) { return config.Load(path) })
	r.retryFirst = time.Hour
	r.newWatcher = func(time.Duration) (*blocklist.Watcher, error) { return nil, errors.New("too many open files") }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.KeepWatching(ctx)
	}()
	require.Eventually(t, func() bool {
		return logs.FilterMessageSnippet("file watching stopped; starting it again").Len() == 1
	}, 10*time.Second, 5*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("KeepWatching did not return once its context ended")
	}
}
