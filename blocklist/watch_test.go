package blocklist

import (
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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
		w.Run(ctx, func() {
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
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Watch([]string{path}, map[string][32]byte{path: sha256.Sum256([]byte("old.example\n"))}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 1)
	go w.Run(ctx, func() { changed <- struct{}{} })
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("a change made before Watch was not reported")
	}
}
