package blocklist

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// watchRecorder runs a Watcher and records the content of the watched file
// each time a change is reported.
type watchRecorder struct {
	mu       sync.Mutex
	contents []string
}

func (r *watchRecorder) last() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.contents) == 0 {
		return "", 0
	}
	return r.contents[len(r.contents)-1], len(r.contents)
}

// startWatch watches file (and extra) and records its content on every
// reported change.
func startWatch(t *testing.T, file string, extra ...string) *watchRecorder {
	t.Helper()
	return startWatchSettling(t, nil, file, extra...)
}

// startWatchSettling is startWatch with the watcher's onSettle hook set.
func startWatchSettling(t *testing.T, onSettle func(changed bool), file string, extra ...string) *watchRecorder {
	t.Helper()
	w, err := NewWatcher(50 * time.Millisecond)
	require.NoError(t, err)
	w.onSettle = onSettle
	require.NoError(t, w.Watch(append([]string{file}, extra...), nil))
	ctx, cancel := context.WithCancel(context.Background())
	rec := &watchRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func(Change) {
			data, err := os.ReadFile(file)
			if err != nil {
				data = []byte("<missing>")
			}
			rec.mu.Lock()
			rec.contents = append(rec.contents, string(data))
			rec.mu.Unlock()
			if err != nil {
				return // a failed reload keeps watching what it watched
			}
			// A reload re-watches, as the resolver does after a ConfigMap
			// swap, saying which content it applied: a change made since
			// is still reported.
			_ = w.Watch(append([]string{file}, extra...), map[string][32]byte{file: sha256.Sum256(data)})
		})
	}()
	t.Cleanup(func() { cancel(); <-done; w.Close() })
	return rec
}

func eventually(t *testing.T, rec *watchRecorder, want string) {
	t.Helper()
	require.Eventually(t, func() bool {
		got, _ := rec.last()
		return got == want
	}, 10*time.Second, 10*time.Millisecond, "want content %q", want)
}

func TestWatcherSeesEveryKindOfSave(t *testing.T) {
	tests := []struct {
		name string
		save func(t *testing.T, path, content string)
	}{
		{name: "in-place append", save: func(t *testing.T, path, content string) {
			old, err := os.ReadFile(path)
			require.NoError(t, err)
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteString(content[len(old):])
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{name: "write temp and rename", save: func(t *testing.T, path, content string) {
			tmp := path + ".tmp"
			require.NoError(t, os.WriteFile(tmp, []byte(content), 0o644))
			require.NoError(t, os.Rename(tmp, path))
		}},
		{name: "cp over the file", save: func(t *testing.T, path, content string) {
			src := filepath.Join(t.TempDir(), "src.txt")
			require.NoError(t, os.WriteFile(src, []byte(content), 0o644))
			out, err := exec.Command("cp", src, path).CombinedOutput()
			require.NoError(t, err, string(out))
		}},
		{name: "delete then recreate", save: func(t *testing.T, path, content string) {
			require.NoError(t, os.Remove(path))
			require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list.txt")
			require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
			rec := startWatch(t, path)
			tc.save(t, path, "a.example\nb.example\n")
			eventually(t, rec, "a.example\nb.example\n")
			tc.save(t, path, "a.example\nb.example\nc.example\n")
			eventually(t, rec, "a.example\nb.example\nc.example\n")
		})
	}
}

func TestWatcherReportsDeleteAndReturn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
	rec := startWatch(t, path)
	require.NoError(t, os.Remove(path))
	eventually(t, rec, "<missing>")
	require.NoError(t, os.WriteFile(path, []byte("back.example\n"), 0o644))
	eventually(t, rec, "back.example\n")
}

func TestWatcherConfigMapSymlinkSwap(t *testing.T) {
	// The layout kubelet writes for a ConfigMap volume:
	//   dir/..2026_a/list.txt, dir/..data -> ..2026_a, dir/list.txt -> ..data/list.txt
	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "..2026_a"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "..2026_a", "list.txt"), []byte("v1.example\n"), 0o644))
	require.NoError(t, os.Symlink("..2026_a", filepath.Join(dir, "..data")))
	require.NoError(t, os.Symlink("..data/list.txt", filepath.Join(dir, "list.txt")))
	path := filepath.Join(dir, "list.txt")
	rec := startWatch(t, path)

	swap := func(version, content string) {
		require.NoError(t, os.Mkdir(filepath.Join(dir, version), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, version, "list.txt"), []byte(content), 0o644))
		require.NoError(t, os.Symlink(version, filepath.Join(dir, "..data_tmp")))
		require.NoError(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	swap("..2026_b", "v2.example\n")
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "..2026_a")))
	eventually(t, rec, "v2.example\n")
	swap("..2026_c", "v3.example\n")
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "..2026_b")))
	eventually(t, rec, "v3.example\n")
}

func TestWatcherWaitsForStableContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
	rec := startWatch(t, path)

	// Truncate, then write in two pieces faster than the debounce: the
	// half-written state must never be reported.
	f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("a.example\nb.exa")
	require.NoError(t, err)
	_, err = f.WriteString("mple\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	eventually(t, rec, "a.example\nb.example\n")
	rec.mu.Lock()
	defer rec.mu.Unlock()
	assert.Equal(t, []string{"a.example\nb.example\n"}, rec.contents, "only the settled content is reported")
}

func TestWatcherIgnoresUnchangedContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "list.txt")
	require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
	settled := make(chan bool, 16)
	rec := startWatchSettling(t, func(changed bool) { settled <- changed }, path)
	waitSettled := func() bool {
		t.Helper()
		select {
		case changed := <-settled:
			return changed
		case <-time.After(10 * time.Second):
			require.FailNow(t, "the watcher never settled")
			return false
		}
	}
	require.False(t, waitSettled(), "the check Watch schedules finds the content applied")

	// Touches that leave the content as it was: they settle, unreported.
	require.NoError(t, os.Chmod(path, 0o600))
	require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o600))          // same bytes
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.txt"), nil, 0o644)) // not watched
	assert.False(t, waitSettled(), "touched, not changed")
	_, n := rec.last()
	assert.Zero(t, n)

	// A real change afterwards is reported, once.
	require.NoError(t, os.WriteFile(path, []byte("b.example\n"), 0o600))
	for !waitSettled() {
	}
	eventually(t, rec, "b.example\n")
	_, n = rec.last()
	assert.Equal(t, 1, n)
}

func TestWatcherSeesChangesMadeBeforeWatching(t *testing.T) {
	// The caller applied "old" but the file already holds "new" when the
	// folder gets watched: no event will come, and the change must still be
	// reported.
	path := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(path, []byte("new.example\n"), 0o644))
	// The debounce is the one a reload set last (SetDebounce, of
	// reload.debounce), not the one the Watcher was made with: with an
	// hour, nothing would be reported here.
	w, err := NewWatcher(time.Hour)
	require.NoError(t, err)
	defer w.Close()
	w.SetDebounce(20 * time.Millisecond)
	require.NoError(t, w.Watch([]string{path}, map[string][32]byte{path: sha256.Sum256([]byte("old.example\n"))}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 1)
	go w.Run(ctx, func(Change) { changed <- struct{}{} })
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("a change made before Watch was not reported")
	}
}

// waitQuiet waits until the watcher settles without a change to report:
// every check scheduled so far is over.
func waitQuiet(t *testing.T, settled <-chan bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case changed := <-settled:
			if !changed {
				return
			}
		case <-deadline:
			require.FailNow(t, "the watcher never settled without a change")
		}
	}
}

// TestWatcherFolderComesBack replaces the folder of a watched file (or the
// file itself, or a folder above it) the ways operators do, and checks that
// the new content is reported and that a later edit is reported too: the
// watch is re-armed on the folder that came back, with no reload needed.
func TestWatcherFolderComesBack(t *testing.T) {
	tests := []struct {
		name    string
		replace func(t *testing.T, base, lists, file, content string)
	}{
		{name: "folder deleted and recreated", replace: func(t *testing.T, _, lists, file, content string) {
			require.NoError(t, os.RemoveAll(lists))
			require.NoError(t, os.Mkdir(lists, 0o755))
			require.NoError(t, os.WriteFile(file, []byte(content), 0o644))
		}},
		{name: "folder moved away, another renamed in", replace: func(t *testing.T, base, lists, file, content string) {
			next := filepath.Join(base, "lists.new")
			require.NoError(t, os.Mkdir(next, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(next, filepath.Base(file)), []byte(content), 0o644))
			require.NoError(t, os.Rename(lists, filepath.Join(base, "lists.old")))
			require.NoError(t, os.Rename(next, lists))
			require.NoError(t, os.RemoveAll(filepath.Join(base, "lists.old")))
		}},
		{name: "folder renamed over an emptied one", replace: func(t *testing.T, base, lists, file, content string) {
			next := filepath.Join(base, "lists.new")
			require.NoError(t, os.Mkdir(next, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(next, filepath.Base(file)), []byte(content), 0o644))
			require.NoError(t, os.Remove(file))
			// rename(2) replaces an empty folder; os.Rename refuses to.
			require.NoError(t, syscall.Rename(next, lists))
		}},
		{name: "file replaced by a folder and back", replace: func(t *testing.T, _, _, file, content string) {
			require.NoError(t, os.Remove(file))
			require.NoError(t, os.Mkdir(file, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(file, "inner.txt"), []byte("x.example\n"), 0o644))
			require.NoError(t, os.RemoveAll(file))
			require.NoError(t, os.WriteFile(file, []byte(content), 0o644))
		}},
		{name: "parent folder deleted and recreated", replace: func(t *testing.T, base, lists, file, content string) {
			require.NoError(t, os.RemoveAll(base))
			require.NoError(t, os.MkdirAll(lists, 0o755))
			require.NoError(t, os.WriteFile(file, []byte(content), 0o644))
		}},
		// fsnotify/fsnotify#694: a folder moved with its parent keeps its
		// watch on the moved folder, and no event tells of it; only the
		// parent's watch sees the swap (a release folder renamed into
		// place). It was seen at the minute's look only.
		{name: "parent folder moved away, another renamed in", replace: func(t *testing.T, base, _, file, content string) {
			next := base + ".new"
			require.NoError(t, os.MkdirAll(filepath.Join(next, "lists"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(next, "lists", filepath.Base(file)), []byte(content), 0o644))
			require.NoError(t, os.Rename(base, base+".old"))
			require.NoError(t, os.Rename(next, base))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, lists, file, rec, settled := watchedListFolder(t, "a.example\n")

			tc.replace(t, base, lists, file, "b.example\n")
			eventually(t, rec, "b.example\n")
			// Once the check that the reload's Watch schedules is over, only
			// a watch on the folder that came back can see an edit: in place,
			// and by an atomic save.
			waitQuiet(t, settled)
			require.NoError(t, os.WriteFile(file, []byte("c.example\n"), 0o644))
			eventually(t, rec, "c.example\n")
			waitQuiet(t, settled)
			require.NoError(t, os.WriteFile(file+".tmp", []byte("d.example\n"), 0o644))
			require.NoError(t, os.Rename(file+".tmp", file))
			eventually(t, rec, "d.example\n")
		})
	}
}

// listFolder writes content to etc/lists/list.txt in a new temporary
// folder: base is etc, lists the folder, file the list.
func listFolder(t *testing.T, content string) (base, lists, file string) {
	t.Helper()
	base = filepath.Join(t.TempDir(), "etc")
	lists = filepath.Join(base, "lists")
	file = filepath.Join(lists, "list.txt")
	require.NoError(t, os.MkdirAll(lists, 0o755))
	require.NoError(t, os.WriteFile(file, []byte(content), 0o644))
	return base, lists, file
}

// watchedListFolder writes content to etc/lists/list.txt (listFolder) and
// watches the list until it has settled once: settled receives each later
// settling.
func watchedListFolder(t *testing.T, content string) (base, lists, file string, rec *watchRecorder, settled chan bool) {
	t.Helper()
	base, lists, file = listFolder(t, content)
	settled = make(chan bool, 64)
	rec = startWatchSettling(t, func(changed bool) { settled <- changed }, file)
	waitQuiet(t, settled)
	return base, lists, file, rec, settled
}

// TestWatcherWriterInAFolderThatCameBack deletes the lists folder, makes
// it again and starts a writer on the list at once, before the watcher
// watches the folder again (a download into a folder made anew): the
// writer's open is never seen, and the first half of the list, stable
// while the writer pauses, was reported as the list. The writers of a
// folder are looked up when it is watched.
func TestWatcherWriterInAFolderThatCameBack(t *testing.T) {
	const first, rest = "a.example\n", "b.example\nc.example\n"
	_, lists, file, rec, _ := watchedListFolder(t, "old.example\n")

	require.NoError(t, os.RemoveAll(lists))
	require.NoError(t, os.Mkdir(lists, 0o755))
	f, err := os.Create(file)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString(first)
	require.NoError(t, err)
	require.Never(t, func() bool { got, _ := rec.last(); return got == first }, time.Second, 10*time.Millisecond,
		"the half the writer has written was reported")
	_, err = f.WriteString(rest)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	eventually(t, rec, first+rest)
}

// TestUnsettledSeesAWriterThatJustWrote starts a writer (another
// process) that truncates the list, writes its first line and pauses,
// and asks Unsettled about that line the moment the writer says it wrote:
// the writer watch's goroutine had often not read the open and the write
// yet (run lags the kernel by as long as the scheduler takes to wake it),
// and the half was taken for a file no writer holds, so a reload that
// read it just before applied it.
func TestUnsettledSeesAWriterThatJustWrote(t *testing.T) {
	const half = "a.example\n"
	file := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(file, []byte("old.example\n"), 0o644))
	w, err := NewWatcher(50 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	require.NoError(t, w.Watch([]string{file}, nil))
	for i := range 40 {
		cmd := exec.Command("sh", "-c", `exec 3>"$0" && printf 'a.example\n' >&3 && echo written && exec sleep 600`, file)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "written\n", line)
		assert.Equal(t, []string{file}, unsettledFiles(Unsettled(w, map[string][32]byte{file: sha256.Sum256([]byte(half))})),
			"write %d: a writer holding the list, half written, was not seen", i)
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
	}
}

// TestUnsettledComparesWhatWasRead: a file whose content is what was read
// is settled; one changed or gone since is not; a named pipe, read once
// to its writer's end, is never compared (its state is that it is one),
// so a reload that read a list from a pipe is not refused as changed.
func TestUnsettledComparesWhatWasRead(t *testing.T) {
	dir := t.TempDir()
	same, changed, gone := filepath.Join(dir, "same.txt"), filepath.Join(dir, "changed.txt"), filepath.Join(dir, "gone.txt")
	require.NoError(t, os.WriteFile(same, []byte("a.example\n"), 0o644))
	require.NoError(t, os.WriteFile(changed, []byte("b.example\nc.example\n"), 0o644))
	pipe := namedPipe(t, "list.txt", 0)
	read := sha256.Sum256([]byte("a.example\n"))
	us := Unsettled(nil, map[string][32]byte{same: read, changed: sha256.Sum256([]byte("b.example\n")), gone: read, pipe: read})
	assert.Equal(t, []string{changed, gone}, unsettledFiles(us))
	for _, u := range us {
		assert.Equal(t, "it changed since it was read", u.Why, u.File)
	}
}

// unsettledFiles are the files of Unsettled's answer.
func unsettledFiles(us []UnsettledFile) []string {
	var files []string
	for _, u := range us {
		files = append(files, u.File)
	}
	return files
}

// TestWatcherFolderGoneThenBack deletes the folder and lets the deletion be
// reported (a reload that fails) before the folder returns: the watcher
// itself must see the folder come back, with no reload to re-arm it.
func TestWatcherFolderGoneThenBack(t *testing.T) {
	tests := []struct {
		name   string
		remove func(base, lists string) error
	}{
		{name: "folder", remove: func(_, lists string) error { return os.RemoveAll(lists) }},
		{name: "parent folder", remove: func(base, _ string) error { return os.RemoveAll(base) }},
		{name: "folder moved away", remove: func(base, lists string) error { return os.Rename(lists, filepath.Join(base, "lists.old")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, lists, file, rec, settled := watchedListFolder(t, "a.example\n")

			require.NoError(t, tc.remove(base, lists))
			eventually(t, rec, "<missing>")
			require.NoError(t, os.MkdirAll(lists, 0o755))
			require.NoError(t, os.WriteFile(file, []byte("b.example\n"), 0o644))
			eventually(t, rec, "b.example\n")
			waitQuiet(t, settled)
			require.NoError(t, os.WriteFile(file, []byte("c.example\n"), 0o644))
			eventually(t, rec, "c.example\n")
		})
	}
}

// TestWatcherReportsUnwatchedFiles makes the watch of one folder fail, as
// the system's watch limit does, and checks that its file is reported as
// not watched, then watched again once the folder can be watched, after
// which its edits are reported.
func TestWatcherReportsUnwatchedFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good", "list.txt")
	bad := filepath.Join(dir, "bad", "list.txt")
	for _, p := range []string{good, bad} {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte("a.example\n"), 0o644))
	}
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	defer w.Close()
	var failing atomic.Bool
	failing.Store(true)
	w.add = func(d string) error {
		if failing.Load() && d == filepath.Dir(bad) {
			return syscall.ENOSPC
		}
		return w.fsw.Add(d)
	}
	reports := make(chan map[string]error, 16)
	w.OnUnwatched(func(u map[string]error) { reports <- u })

	err = w.Watch([]string{good, bad}, nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), bad+": not watched: watching "+filepath.Dir(bad))
	select {
	case u := <-reports:
		require.Len(t, u, 1)
		assert.ErrorIs(t, u[bad], syscall.ENOSPC)
	default:
		require.FailNow(t, "OnUnwatched was not called")
	}
	assert.Equal(t, []string{bad}, slices.Collect(maps.Keys(w.Unwatched())))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var changes atomic.Int64
	settled := make(chan bool, 16)
	w.onSettle = func(changed bool) { settled <- changed }
	go w.Run(ctx, func(Change) { changes.Add(1) })
	waitQuiet(t, settled) // Watch's look is over

	// A change made while the folder is not watched, which no event
	// tells of, is reported by the look Rearm schedules once it watches
	// the folder, not at the minute's look.
	require.NoError(t, os.WriteFile(bad, []byte("b.example\n"), 0o644))
	failing.Store(false)
	w.Rearm()
	select {
	case u := <-reports:
		assert.Empty(t, u, "watched again")
	default:
		require.FailNow(t, "OnUnwatched was not told the file is watched again")
	}
	assert.Empty(t, w.Unwatched())
	require.Eventually(t, func() bool { return changes.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, os.WriteFile(bad, []byte("c.example\n"), 0o644))
	require.Eventually(t, func() bool { return changes.Load() == 2 }, 10*time.Second, 5*time.Millisecond)
}

// TestWatcherRearmKeepsWatchesAsTheyAre: a re-arm (Rearm, the minute's
// look, each look after an event) leaves a folder watched as it was, its
// watch not dropped and added anew (an event in between is lost), and
// schedules no look when it started watching nothing.
func TestWatcherRearmKeepsWatchesAsTheyAre(t *testing.T) {
	_, _, file := listFolder(t, "a.example\n")
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	defer w.Close()
	var adds atomic.Int64
	w.add = func(d string) error {
		adds.Add(1)
		return w.fsw.Add(d)
	}
	require.NoError(t, w.Watch([]string{file}, nil))
	require.NotZero(t, adds.Load())
	select {
	case <-w.recheck: // Watch's look
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Watch scheduled no look")
	}
	adds.Store(0)
	w.Rearm()
	assert.Zero(t, adds.Load(), "folders added again")
	assert.Empty(t, w.recheck, "a look scheduled with no folder newly watched")
}

// TestWatcherDropsFoldersNoFileNeeds: Watch with files in another folder
// stops watching the old one and the folders above it that the new files
// do not need: each watch left behind counts against the system's limit
// (fs.inotify.max_user_watches), which, reached, leaves files unwatched.
// What is watched is the list's folder (the one OnFolders counts) and
// each folder above it, nothing else.
func TestWatcherDropsFoldersNoFileNeeds(t *testing.T) {
	oldBase, oldLists, oldFile := listFolder(t, "a.example\n")
	_, newLists, newFile := listFolder(t, "a.example\n")
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	defer w.Close()
	folders := -1
	w.OnFolders(func(n int) { folders = n })
	require.NoError(t, w.Watch([]string{oldFile}, nil))
	require.Subset(t, w.fsw.WatchList(), []string{oldLists, oldBase})
	require.NoError(t, w.Watch([]string{newFile}, nil))
	assert.NotContains(t, w.fsw.WatchList(), oldLists)
	assert.NotContains(t, w.fsw.WatchList(), oldBase)
	want := []string{newLists}
	for dir := newLists; filepath.Dir(dir) != dir; dir = filepath.Dir(dir) {
		want = append(want, filepath.Dir(dir))
	}
	assert.ElementsMatch(t, want, w.fsw.WatchList())
	assert.Equal(t, 1, folders)
}

// runUnseen runs a Watcher on a list (a.example) whose folder cannot be
// watched, so that no event ever tells of its changes, as on an NFS mount
// written by another machine: the look, every 50 ms, alone finds them, and
// reports a change once unchanged for writerWait. Changes come on the
// channel.
func runUnseen(t *testing.T, writerWait time.Duration) (*Watcher, string, chan Change) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nfs", "list.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	w.lookEvery = 50 * time.Millisecond
	w.SetWriterWait(writerWait)
	w.add = func(d string) error { return syscall.ENOSPC } // no event ever comes
	require.Error(t, w.Watch([]string{path}, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	changes := make(chan Change, 16)
	go w.Run(ctx, func(c Change) { changes <- c })
	return w, path, changes
}

// TestWatcherSeesChangesNoEventTells: a change that gives no event, as
// one made on an NFS, SMB or FUSE mount by another machine (inotify sees
// only this kernel's writes) or in a folder that cannot be watched, is
// reported all the same within a look (rearmInterval, a minute; here
// shortened), once, and the unchanged files are not reported at each
// look. Before, such a change waited for a SIGHUP or for an event from
// another file of the folder, and a read that failed for want of file
// descriptors, reported as the file missing, left the reload that failed
// on it failed until then.
func TestWatcherSeesChangesNoEventTells(t *testing.T) {
	w, path, changes := runUnseen(t, 100*time.Millisecond) // a change no event told of waits out the writer wait
	require.Never(t, func() bool { return len(changes) > 0 }, 5*w.lookEvery, 10*time.Millisecond,
		"nothing changed: nothing reported at each look")
	require.NoError(t, os.WriteFile(path, []byte("b.example\n"), 0o644))
	select {
	case c := <-changes:
		assert.Equal(t, []string{path}, c.Files)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the change was never reported")
	}
	require.Never(t, func() bool { return len(changes) > 0 }, 5*w.lookEvery, 10*time.Millisecond, "reported once")
}

// TestWatcherWaitsOutChangesNoEventTells: a change only the look finds
// (another machine's write to a list on NFS, a folder not watched) has a
// writer the watcher cannot know of, which may pause in the middle of the
// file: it is reported once unchanged for the writer wait, as a change a
// writer never closes is, not after a quiet debounce, which reported the
// half-written list (here within 100 ms of the pause, a list that lost
// its last names to every device of a blocking policy).
func TestWatcherWaitsOutChangesNoEventTells(t *testing.T) {
	const half, whole = "a.example\nb.exa", "a.example\nb.example\n"
	// A writer wait of 2 s leaves the 600 ms window below 1.4 s to spare:
	// with 1 s, the test's goroutine held up 400 ms between the two writes
	// (a loaded machine under -race) saw the half file reported.
	w, path, changes := runUnseen(t, 2*time.Second)
	require.Never(t, func() bool { return len(changes) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"nothing changed: nothing reported at the looks")

	require.NoError(t, os.WriteFile(path, []byte(half), 0o644))
	require.Never(t, func() bool { return len(changes) > 0 }, 600*time.Millisecond, 10*time.Millisecond,
		"the half-written file reported after a quiet debounce")
	require.NoError(t, os.WriteFile(path, []byte(whole), 0o644))
	select {
	case c := <-changes:
		assert.Equal(t, []string{path}, c.Files)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the change was never reported")
	}
	w.mu.Lock()
	assert.Equal(t, fileState{sum: sha256.Sum256([]byte(whole))}, w.reported[path], "the whole file reported")
	w.mu.Unlock()
	require.Never(t, func() bool { return len(changes) > 0 }, 300*time.Millisecond, 10*time.Millisecond, "reported once")
}

// TestWatcherWaitsForWriterToClose writes a watched file the way a script
// that pauses does: part of it, a pause longer than the debounce, the
// rest, then close. Nothing may be reported until the writer closes the
// file; then the whole content is reported, once.
func TestWatcherWaitsForWriterToClose(t *testing.T) {
	const first, rest = "a.example\nb.example\n", "c.example\nd.example\n"
	tests := []struct {
		name string
		// open starts the writer on path and writes first; the file it
		// returns is written to and closed by the test.
		open func(t *testing.T, path string) *os.File
	}{
		{name: "truncate and write in place", open: func(t *testing.T, path string) *os.File {
			f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteString(first)
			require.NoError(t, err)
			return f
		}},
		{name: "truncate, pause before any write", open: func(t *testing.T, path string) *os.File {
			f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
			require.NoError(t, err)
			return f
		}},
		{name: "append", open: func(t *testing.T, path string) *os.File {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteString(first)
			require.NoError(t, err)
			return f
		}},
		{name: "temporary file renamed over while still open", open: func(t *testing.T, path string) *os.File {
			f, err := os.Create(path + ".tmp")
			require.NoError(t, err)
			_, err = f.WriteString(first)
			require.NoError(t, err)
			require.NoError(t, os.Rename(path+".tmp", path))
			return f
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list.txt")
			require.NoError(t, os.WriteFile(path, []byte("old.example\n"), 0o644))
			const debounce = 20 * time.Millisecond
			w, err := NewWatcher(debounce)
			require.NoError(t, err)
			t.Cleanup(func() { w.Close() })
			waits := make(chan []string, 16)
			w.OnWriterWait(func(open []string, _ time.Duration) { waits <- open })
			require.NoError(t, w.Watch([]string{path}, nil))
			var mu sync.Mutex
			var got []string
			reported := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				w.Run(ctx, func(c Change) {
					data, err := os.ReadFile(path)
					assert.NoError(t, err)
					assert.Empty(t, c.Open, "the writer closed the file")
					assert.Equal(t, []string{path}, c.Files)
					mu.Lock()
					got = append(got, string(data))
					mu.Unlock()
				})
			}()
			t.Cleanup(func() { cancel(); <-done })

			f := tc.open(t, path)
			// The change settles (stable over the debounce) while the
			// writer holds the file: the watcher says it waits...
			select {
			case open := <-waits:
				assert.Equal(t, []string{path}, open)
			case <-time.After(10 * time.Second):
				require.FailNow(t, "the watcher never waited for the writer")
			}
			// ...and reports nothing however long the writer pauses.
			require.Never(t, func() bool { return len(reported()) > 0 }, 20*debounce, debounce,
				"a file a writer holds open was reported")
			_, err = f.WriteString(rest)
			require.NoError(t, err)
			require.Never(t, func() bool { return len(reported()) > 0 }, 5*debounce, debounce)
			require.NoError(t, f.Close())
			require.Eventually(t, func() bool { return len(reported()) > 0 }, 10*time.Second, 5*time.Millisecond)
			want := first + rest
			if tc.name == "append" {
				want = "old.example\n" + want
			}
			if tc.name == "truncate, pause before any write" {
				want = rest
			}
			assert.Equal(t, []string{want}, reported(), "only the complete content, once")
			assert.Empty(t, waits, "the wait for the writer told once, not again at its write")
		})
	}
}

// TestWatcherNotHeldWithoutWriter changes a watched file with no writer
// holding it open: truncate(2) by path (`truncate -s 0`), and a write
// while a reader keeps the file open. The change is reported after the
// quiet period, never waited for, and never reported as still open.
func TestWatcherNotHeldWithoutWriter(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{name: "truncate by path", change: func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 0))
		}},
		{name: "written and closed while a reader holds it", change: func(t *testing.T, path string) {
			r, err := os.Open(path)
			require.NoError(t, err)
			t.Cleanup(func() { r.Close() })
			require.NoError(t, os.WriteFile(path, []byte("new.example\n"), 0o644))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list.txt")
			require.NoError(t, os.WriteFile(path, []byte("old.example\n"), 0o644))
			w, err := NewWatcher(20 * time.Millisecond)
			require.NoError(t, err)
			t.Cleanup(func() { w.Close() })
			var waited atomic.Bool
			w.OnWriterWait(func([]string, time.Duration) { waited.Store(true) })
			require.NoError(t, w.Watch([]string{path}, nil))
			changes := make(chan Change, 4)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); w.Run(ctx, func(c Change) { changes <- c }) }()
			t.Cleanup(func() { cancel(); <-done })

			tc.change(t, path)
			select {
			case c := <-changes:
				assert.Equal(t, []string{path}, c.Files)
				assert.Empty(t, c.Open)
			case <-time.After(10 * time.Second):
				require.FailNow(t, "the change was never reported")
			}
			assert.False(t, waited.Load(), "no writer to wait for")
		})
	}
}

// TestWatcherGivesUpOnWriterThatNeverCloses holds a changed file open for
// good: once its content has stayed the same for the writer wait, the
// change is reported, naming the file as still open.
func TestWatcherGivesUpOnWriterThatNeverCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(path, []byte("old.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	const wait = 400 * time.Millisecond
	w.SetWriterWait(wait)
	require.NoError(t, w.Watch([]string{path}, nil))
	changes := make(chan Change, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx, func(c Change) { changes <- c }) }()
	t.Cleanup(func() { cancel(); <-done })

	f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	wrote := time.Now()
	_, err = f.WriteString("new.example\n")
	require.NoError(t, err)
	select {
	case c := <-changes:
		assert.GreaterOrEqual(t, time.Since(wrote), wait, "reported before the writer wait")
		assert.Equal(t, []string{path}, c.Files)
		assert.Equal(t, []string{path}, c.Open)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "a file held open for good was never reported")
	}
}

// TestWaitComplete is what SIGHUP waits on: complete content passes after
// one quiet period; a file a writer holds open passes once it is closed,
// and fails, naming the file, when the writer outlasts the limit.
func TestWaitComplete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	require.NoError(t, w.Watch([]string{path}, nil))
	ctx := t.Context()

	require.NoError(t, WaitComplete(ctx, w, []string{path}, 20*time.Millisecond, time.Second))
	require.NoError(t, WaitComplete(ctx, nil, []string{path}, 20*time.Millisecond, time.Second), "no watcher: stable content passes")

	f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("a.exa")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		open, _ := w.writers.heldOpen([]string{path})
		return len(open) == 1
	}, 10*time.Second, 5*time.Millisecond)
	err = WaitComplete(ctx, w, []string{path}, 20*time.Millisecond, 200*time.Millisecond)
	require.ErrorIs(t, err, ErrBeingWritten)
	assert.Contains(t, err.Error(), fmt.Sprintf("%s: still being written: a writer still holds it open after 200ms (by pid %d (", path, os.Getpid()))

	result := make(chan error, 1)
	go func() { result <- WaitComplete(ctx, w, []string{path}, 20*time.Millisecond, 10*time.Second) }()
	_, err = f.WriteString("mple\n")
	require.NoError(t, err)
	require.Never(t, func() bool { return len(result) > 0 }, 200*time.Millisecond, 10*time.Millisecond, "returned while the writer held the file")
	require.NoError(t, f.Close())
	select {
	case err := <-result:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "WaitComplete did not return after the writer closed")
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "a.example\n", string(data))
}

// runWatching watches files (Watch, no content known) and runs the
// watcher, 20 ms debounce, until the test ends; changes come on the
// channel.
func runWatching(t *testing.T, files ...string) (*Watcher, chan Change) {
	t.Helper()
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	require.NoError(t, w.Watch(files, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	changes := make(chan Change, 16)
	go w.Run(ctx, func(c Change) { changes <- c })
	return w, changes
}

// TestWatcherAlsoWatchesFilesAFailedReloadNamed: Also adds the files a
// configuration that failed its reload names. One missing then (a list
// the configuration was written before, in a folder not there yet
// either) is reported when it appears, and only then; one there already
// is reported once, as the reload may have read it before its last
// write, whose event came before it was watched; the files watched before
// are reported as ever. Before Also, a reload's failure left the watcher
// with the files of the state served, and the list, once written, was
// never applied.
func TestWatcherAlsoWatchesFilesAFailedReloadNamed(t *testing.T) {
	dir := t.TempDir()
	served := filepath.Join(dir, "served.txt")
	there := filepath.Join(dir, "there.txt")
	later := filepath.Join(dir, "new", "deeper", "later.txt")
	require.NoError(t, os.WriteFile(served, []byte("a.example\n"), 0o644))
	require.NoError(t, os.WriteFile(there, []byte("b.example\n"), 0o644))
	w, changes := runWatching(t, served)
	next := func(what string) Change {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-time.After(10 * time.Second):
			require.FailNow(t, "never reported: "+what)
			return Change{}
		}
	}

	w.Also([]string{served, there, later}, nil)
	assert.Equal(t, []string{there}, next("the file there when added").Files)
	require.Never(t, func() bool { return len(changes) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"the missing file is not reported while it is missing, the file there only once")

	require.NoError(t, os.MkdirAll(filepath.Dir(later), 0o755))
	require.NoError(t, os.WriteFile(later, []byte("c.example\n"), 0o644))
	assert.Equal(t, []string{later}, next("the missing file once it appears").Files)

	require.NoError(t, os.WriteFile(served, []byte("d.example\n"), 0o644))
	assert.Equal(t, []string{served}, next("a file watched before").Files)

	// A held reload read its files whole, and says what it read: a file
	// as read is not reported, its next edit is.
	read := filepath.Join(dir, "read.txt")
	require.NoError(t, os.WriteFile(read, []byte("e.example\n"), 0o644))
	w.Also([]string{read}, map[string][32]byte{read: sha256.Sum256([]byte("e.example\n"))})
	require.Never(t, func() bool { return len(changes) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"a file as the reload read it is no change")
	require.NoError(t, os.WriteFile(read, []byte("f.example\n"), 0o644))
	assert.Equal(t, []string{read}, next("an edit of a file the reload read").Files)
}

// TestWatcherAlsoReplacesTheFilesItAddedBefore: each Also call names the
// files of the configuration a reload read last, and those replace what
// the call before added (Watch's files stay). Before, every failed reload
// added its files for good, until a reload applied: a configuration
// regenerated with a new list name at each write (lists/v1.txt,
// lists/v2.txt, …) while its lists lag behind grew the watched files by
// one a failed reload, each hashed at every look (measured: 201 files
// watched after 200 such reloads, not 2).
func TestWatcherAlsoReplacesTheFilesItAddedBefore(t *testing.T) {
	dir := t.TempDir()
	served := filepath.Join(dir, "served.txt")
	require.NoError(t, os.WriteFile(served, []byte("a.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	require.NoError(t, w.Watch([]string{served}, nil))
	watched := func() ([]string, int) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return slices.Clone(w.files), len(w.reported)
	}

	for i := range 200 {
		w.Also([]string{served, filepath.Join(dir, "lists", fmt.Sprintf("v%d.txt", i))}, nil)
	}
	files, reported := watched()
	if assert.Equal(t, 2, len(files), "files watched") {
		assert.Equal(t, []string{served, filepath.Join(dir, "lists", "v199.txt")}, files, "Watch's files and the last call's")
	}
	assert.Equal(t, 2, reported, "what was reported of the files dropped is dropped too")

	w.Also(nil, nil) // a configuration that names nothing (it did not parse)
	files, _ = watched()
	if assert.Equal(t, 1, len(files), "files watched") {
		assert.Equal(t, []string{served}, files, "Watch's files stay")
	}
}

// TestWatcherAlsoLooksAtAFileChangedSinceTheReloadRead: a file Also adds
// with the hash a held reload read it with, but written since (after the
// reload's read, before Also: its folder watched already for another
// file, the write's event was not about a watched file and went unheard),
// is reported at the next look, a debounce away. Before, Also asked for
// no look when every file was known and no folder was added: the write
// waited for the minute's look, and then the writer wait (30 s by
// default) as a change no event told of.
func TestWatcherAlsoLooksAtAFileChangedSinceTheReloadRead(t *testing.T) {
	dir := t.TempDir()
	served := filepath.Join(dir, "served.txt")
	allow := filepath.Join(dir, "allow.txt")
	require.NoError(t, os.WriteFile(served, []byte("a.example\n"), 0o644))
	require.NoError(t, os.WriteFile(allow, []byte("b.example\n"), 0o644))
	w, changes := runWatching(t, served)

	// The reload read "b.example\n"; the file was written since.
	require.NoError(t, os.WriteFile(allow, []byte("c.example\n"), 0o644))
	time.Sleep(100 * time.Millisecond) // the write's event, unheard, is past
	w.Also([]string{served, allow}, map[string][32]byte{allow: sha256.Sum256([]byte("b.example\n"))})
	select {
	case c := <-changes:
		assert.Equal(t, []string{allow}, c.Files)
	case <-time.After(5 * time.Second):
		t.Fatal("the write after the reload's read was not reported")
	}
}

// TestWatcherAlsoTakesANamedPipeAsItIs: a named pipe that Also adds (a
// failed reload's configuration names it as a list) is not read to be
// compared, and is no change: it is reported neither when added nor at
// the looks after, which would start a reload at each; the other files
// are reported as ever.
func TestWatcherAlsoTakesANamedPipeAsItIs(t *testing.T) {
	dir := t.TempDir()
	served := filepath.Join(dir, "served.txt")
	pipe := filepath.Join(dir, "pipe.txt")
	require.NoError(t, os.WriteFile(served, []byte("a.example\n"), 0o644))
	require.NoError(t, syscall.Mkfifo(pipe, 0o600))
	w, changes := runWatching(t, served)

	w.Also([]string{served, pipe}, nil)
	require.Never(t, func() bool { return len(changes) > 0 }, 500*time.Millisecond, 10*time.Millisecond,
		"the named pipe is no change")
	require.NoError(t, os.WriteFile(served, []byte("b.example\n"), 0o644))
	select {
	case c := <-changes:
		assert.Equal(t, []string{served}, c.Files)
	case <-time.After(10 * time.Second):
		t.Fatal("the edit of the file served was not reported")
	}
}

// TestWatcherRunReturnsWhenClosed: Run returns once the Watcher is
// closed (its event channels closed), its context still live, rather
// than spin on the closed channels.
func TestWatcherRunReturnsWhenClosed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(file, []byte("a.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, w.Watch([]string{file}, nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(t.Context(), func(Change) {})
	}()
	require.NoError(t, w.Close())
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// TestWatcherMinutesLookWatchesAFolderAgain: a folder that could not be
// watched (OnUnwatched) and is watched again at the minute's look, which
// no Rearm asked for, has its files looked at a debounce away: a change
// made while it was not watched, which no event told of, is reported
// then, as after Rearm, not after the writer wait as a change the look
// found by hashing (here a minute: the 10 s the test waits).
func TestWatcherMinutesLookWatchesAFolderAgain(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad", "list.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(bad), 0o755))
	require.NoError(t, os.WriteFile(bad, []byte("a.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	defer w.Close()
	w.SetWriterWait(time.Minute)
	w.lookEvery = 100 * time.Millisecond
	var failing, wrote atomic.Bool
	failing.Store(true)
	w.add = func(d string) error {
		if d == filepath.Dir(bad) {
			if failing.Load() {
				return syscall.ENOSPC
			}
			// Written just before the watch begins, the folder not
			// watched: no event tells of it, and no look before this
			// one can have hashed it.
			if !wrote.Swap(true) {
				if err := os.WriteFile(bad, []byte("b.example\n"), 0o644); err != nil {
					return err
				}
			}
		}
		return w.fsw.Add(d)
	}
	require.ErrorIs(t, w.Watch([]string{bad}, nil), syscall.ENOSPC)
	settled := make(chan bool, 16)
	w.onSettle = func(changed bool) { settled <- changed }
	changes := make(chan Change, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx, func(c Change) { changes <- c })
	waitQuiet(t, settled) // Watch's look is over

	failing.Store(false)
	select {
	case c := <-changes:
		assert.Equal(t, []string{bad}, c.Files)
		assert.Empty(t, w.Unwatched())
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the change was not reported a debounce after the folder was watched again")
	}
}
