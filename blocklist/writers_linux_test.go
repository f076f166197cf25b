//go:build linux

package blocklist

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestWatcherWaitsForWriterAfterQueueOverflow: the writer watch's event
// queue overflows (its reader starved while another file of the lists
// folder is opened and closed thousands of times), and the kernel drops
// the open and the writes of a writer that truncates the list and pauses
// half way. What the writer watch knew is then no guide: the writer must
// still be found, through /proc, and the half written list not reported.
func TestWatcherWaitsForWriterAfterQueueOverflow(t *testing.T) {
	w, path, noise := overflowWatcher(t)
	waits := make(chan []string, 16)
	w.OnWriterWait(func(open []string, _ time.Duration) { waits <- open })
	require.NoError(t, w.Watch([]string{path}, nil))
	reported := runReporting(t, w, path)
	f := overflowWithWriter(t, w, noise, path)

	select {
	case open := <-waits:
		assert.Equal(t, []string{path}, open)
	case <-time.After(10 * time.Second):
		assert.Fail(t, "the watcher never waited for the writer", "reported: %q", reported())
	}
	require.Never(t, func() bool { return len(reported()) > 0 }, 20*overflowDebounce, overflowDebounce,
		"a file a writer holds open was reported after the writer watch's queue overflowed")
	_, err := f.WriteString("b.example\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Eventually(t, func() bool { return len(reported()) > 0 }, 10*time.Second, overflowDebounce)
	assert.Equal(t, []string{"a.example\nb.example\n"}, reported(), "the complete file, once")
}

// TestHeldOpenDuringAnEventFlood: sync read the writer watch's queue
// until it was empty, and while other processes open and close files of
// a watched folder faster than the events are applied (a tool polling a
// file there; the flood that overflows the queue), it never is: heldOpen,
// which the Watcher asks at every look, and openNow, which a reload and
// a SIGHUP ask, hung for as long as the flood lasted, and with them the
// Watcher and the reloads. sync now reads what was queued when it began.
func TestHeldOpenDuringAnEventFlood(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\n"), 0o644))
	w, err := newWriters()
	require.NoError(t, err)
	closed := false
	t.Cleanup(func() {
		if !closed {
			w.close()
		}
	})
	require.NoError(t, w.add(dir))

	const flood = 4 * time.Second
	began := time.Now()
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEventFloodHelper$")
		cmd.Env = append(os.Environ(), "DNSFENCE_FLOOD_FILE="+filepath.Join(dir, fmt.Sprintf("noise%d", i)),
			"DNSFENCE_FLOOD_FOR="+flood.String())
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "noise1"))
		return err == nil
	}, flood/2, time.Millisecond, "the flood began")

	calls := 0
	for time.Since(began) < flood-2*time.Second {
		asked := time.Now()
		open, _ := w.heldOpen([]string{list})
		took := time.Since(asked)
		assert.Empty(t, open)
		require.Less(t, took, 2*time.Second, "heldOpen waited for the flood to end (call %d)", calls+1)
		calls++
	}
	assert.Positive(t, calls)
	// Nor does closing the writer watch wait for the flood to end.
	asked := time.Now()
	closed = true
	require.NoError(t, w.close())
	assert.Less(t, time.Since(asked), time.Second, "close waited for the flood to end")
}

// TestEventFloodHelper opens and closes the file DNSFENCE_FLOOD_FILE as
// fast as it can for DNSFENCE_FLOOD_FOR, when TestHeldOpenDuringAnEventFlood
// runs it; otherwise it does nothing.
func TestEventFloodHelper(t *testing.T) {
	path := os.Getenv("DNSFENCE_FLOOD_FILE")
	d, err := time.ParseDuration(os.Getenv("DNSFENCE_FLOOD_FOR"))
	if path == "" || err != nil {
		t.Skip("run by TestHeldOpenDuringAnEventFlood")
	}
	for end := time.Now().Add(d); time.Now().Before(end); {
		f, err := os.Create(path)
		if err != nil {
			return
		}
		f.Close()
	}
}

// TestWatcherWaitsAfterQueueOverflowWithProcBlind: after the writer
// watch's queue overflowed, the writers are found again in /proc
// (overflowed). Under the shipped systemd unit (DynamicUser,
// ProtectProc=invisible) and in a Kubernetes pod, /proc shows dnsfence
// no writer of the lists: the writer whose open and writes were dropped
// was held by no one, and its half written list reported after the quiet
// period. With no writer found, a change now waits for the writer wait,
// unchanged, as one no event named does.
func TestWatcherWaitsAfterQueueOverflowWithProcBlind(t *testing.T) {
	procBlind(t)
	w, path, noise := overflowWatcher(t)
	w.SetWriterWait(3 * time.Second)
	require.NoError(t, w.Watch([]string{path}, nil))
	reported := runReporting(t, w, path)
	f := overflowWithWriter(t, w, noise, path)

	require.Never(t, func() bool { return len(reported()) > 0 }, time.Second, overflowDebounce,
		"a half written file was reported after the queue overflowed, /proc showing no writer")
	_, err := f.WriteString("b.example\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Eventually(t, func() bool { return len(reported()) > 0 }, 15*time.Second, overflowDebounce)
	assert.Equal(t, []string{"a.example\nb.example\n"}, reported(), "the complete file, once")
}

// runReporting runs w until the test ends, and returns what it has
// reported so far: the content of path at each change.
func runReporting(t *testing.T, w *Watcher, path string) (reported func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func(c Change) {
			data, err := os.ReadFile(path)
			assert.NoError(t, err)
			mu.Lock()
			got = append(got, string(data))
			mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// overflowWithWriter holds the writer watch's reader, as a starved
// goroutine would be, queues more events than the kernel keeps (fs.inotify.
// max_queued_events, 16384 by default: each open and close of noise is
// two), and then, the queue full, truncates path and writes its first
// line: the writer's open and write are among the events dropped. It
// overflowDebounce is the debounce of overflowWatcher's Watcher.
const overflowDebounce = 20 * time.Millisecond

// overflowWatcher makes a list (old.example) and a file beside it for the
// noise that overflows the writer watch's queue, and a Watcher of
// overflowDebounce, not yet watching, closed at the test's end.
func overflowWatcher(t *testing.T) (w *Watcher, path, noise string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "list.txt")
	noise = filepath.Join(dir, "other.log")
	require.NoError(t, os.WriteFile(path, []byte("old.example\n"), 0o644))
	require.NoError(t, os.WriteFile(noise, nil, 0o644))
	w, err := NewWatcher(overflowDebounce)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	return w, path, noise
}

// returns the writer, still holding path open.
func overflowWithWriter(t *testing.T, w *Watcher, noise, path string) *os.File {
	t.Helper()
	w.writers.readMu.Lock()
	if !overflowQueue(t, noise) {
		w.writers.readMu.Unlock()
		t.FailNow()
	}
	f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("a.example\n")
	}
	w.writers.readMu.Unlock()
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// overflowQueue queues more events than the kernel keeps (fs.inotify.
// max_queued_events, 16384 by default: each open and close of noise is
// two), the writer watch's reader held by the caller. It reports whether
// it could; the caller, holding the reader, fails the test if not.
func overflowQueue(t *testing.T, noise string) bool {
	t.Helper()
	maxQueued := 16384
	if data, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events"); err == nil {
		var n int
		if _, err := fmt.Sscan(string(data), &n); err == nil && n > 0 {
			maxQueued = n
		}
	}
	for range maxQueued/2 + 16 {
		f, err := os.Open(noise)
		if err != nil {
			t.Errorf("opening %s: %v", noise, err)
			return false
		}
		f.Close()
	}
	return true
}

// TestUnsettledSeesAWriterInAFolderNotWatched: a reload reads a list that
// a configuration edit names in a folder the Watcher does not watch yet,
// so no event of its writer was seen: the writer /proc shows holding it,
// just after it wrote half the list, is found all the same, and named.
func TestUnsettledSeesAWriterInAFolderNotWatched(t *testing.T) {
	watched := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(watched, []byte("old.example\n"), 0o644))
	w, err := NewWatcher(20 * time.Millisecond)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	require.NoError(t, w.Watch([]string{watched}, nil))

	const half = "a.example\n"
	added := filepath.Join(t.TempDir(), "new.txt")
	f, err := os.Create(added)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString(half)
	require.NoError(t, err)

	us := Unsettled(w, map[string][32]byte{added: sha256.Sum256([]byte(half)), watched: sha256.Sum256([]byte("old.example\n"))})
	require.Equal(t, []string{added}, unsettledFiles(us), "the writer of a list in a folder not watched")
	assert.Contains(t, us[0].Why, fmt.Sprintf("a writer holds it open (by pid %d (", os.Getpid()))
}

// TestWaitUnheldPassesWritersThatDoNotWrite: at start, a list that a
// process holds open for writing but has not changed for the writer wait
// (a shell's `exec 3>>list`, a tool that opens its files read-write), and
// a named pipe, whose writer holds it until its reader has read it all,
// are not waited for: the start would wait the whole writer wait, and
// then fail, for a writer that is never going to close the file first.
func TestWaitUnheldPassesWritersThatDoNotWrite(t *testing.T) {
	tests := []struct {
		name string
		// file makes the list and holds it open for writing.
		file func(t *testing.T) string
	}{
		{name: "unchanged for the writer wait", file: func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "list.txt")
			require.NoError(t, os.WriteFile(path, []byte("a.example\n"), 0o644))
			long := time.Now().Add(-time.Hour)
			require.NoError(t, os.Chtimes(path, long, long))
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			return path
		}},
		{name: "named pipe", file: func(t *testing.T) string {
			path := namedPipe(t, "list.txt", 0)
			// O_RDWR: a pipe's writer that does not wait for a reader.
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			return path
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.file(t)
			// A writer wait of a minute, of which the test waits 10 s at
			// most: no wait at all is due.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			require.NoError(t, WaitUnheld(ctx, []string{path}, 10*time.Millisecond, time.Minute))
		})
	}
}

// writersOfList is the writer watch of a folder of one list, list.txt
// ("a.example"), which it returns.
func writersOfList(t *testing.T) (*writers, string) {
	t.Helper()
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
	w, err := newWriters()
	require.NoError(t, err)
	t.Cleanup(func() { w.close() })
	require.NoError(t, w.add(dir))
	return w, list
}

// TestWriterOfADroppedFolderNotHeldWhenWatchedAgain: the Watcher stops
// watching a folder no file needs any more and watches it again when a
// list there is named again. A writer that held a list there, and closed
// it while the folder was not watched, does not hold it still: the list,
// complete, would be taken for one caught mid-write until the writer wait.
func TestWriterOfADroppedFolderNotHeldWhenWatchedAgain(t *testing.T) {
	w, list := writersOfList(t)

	f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString("b.example\n")
	require.NoError(t, err)
	open, _ := w.heldOpen([]string{list})
	require.Equal(t, []string{list}, open, "held while its writer has it open")

	// A writer in another folder, still writing, is held all along.
	otherDir := t.TempDir()
	other := filepath.Join(otherDir, "other.txt")
	require.NoError(t, os.WriteFile(other, []byte("c.example\n"), 0o644))
	require.NoError(t, w.add(otherDir))
	g, err := os.OpenFile(other, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	_, err = g.WriteString("d.example\n")
	require.NoError(t, err)

	dir := filepath.Dir(list)
	w.remove(dir)
	require.NoError(t, f.Close())
	require.NoError(t, w.add(dir))
	open, _ = w.heldOpen([]string{list, other})
	assert.Equal(t, []string{other}, open, "held by a writer that closed it while its folder was not watched")
}

// TestHoldersNamesEachWriterOnce: the processes an operator is told hold
// a list open for writing (a refused reload's error) are those that have
// it open for writing, each once however many descriptors it holds, and
// sorted; a process that only reads it is not named.
func TestHoldersNamesEachWriterOnce(t *testing.T) {
	list := filepath.Join(t.TempDir(), "list.txt")
	require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
	for range 2 {
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
	}
	writer := testnet.HoldOpen(t, list, ">>")
	testnet.HoldOpen(t, list, "<") // a reader

	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	want := []string{fmt.Sprintf("pid %d (%s)", os.Getpid(), strings.TrimSpace(string(comm))),
		fmt.Sprintf("pid %d (sleep)", writer.Process.Pid)}
	slices.Sort(want)
	assert.Equal(t, want, Holders([]string{list}))
}

// TestAdoptedWriterCountsFromItsLastWrite: a writer that opened a list
// before its folder was watched (its open never seen) is found in /proc
// and holds the list, a reader's open and close notwithstanding; but the
// writer wait counts from the list's last change, an hour ago here (a
// shell's `exec 3>>list` that wrote once), so a reload does not take the
// list for one being written.
func TestAdoptedWriterCountsFromItsLastWrite(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
	lastWrite := time.Now().Add(-time.Hour).Truncate(time.Second)
	require.NoError(t, os.Chtimes(list, lastWrite, lastWrite))
	f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })

	w, err := newWriters()
	require.NoError(t, err)
	t.Cleanup(func() { w.close() })
	require.NoError(t, w.add(dir))
	r, err := os.Open(list)
	require.NoError(t, err)
	require.NoError(t, r.Close())

	open, last := w.heldOpen([]string{list})
	assert.Equal(t, []string{list}, open, "held by the writer found in /proc")
	assert.True(t, last.Equal(lastWrite), "held since %v, not its last write %v", last, lastWrite)
	assert.Empty(t, w.openNow([]string{list}, time.Minute), "unchanged for the writer wait: not being written")

	// A list whose time is ahead of the clock (copied with its times from
	// a host whose clock is ahead) is held from when its writer was found.
	ahead := filepath.Join(dir, "ahead.txt")
	require.NoError(t, os.WriteFile(ahead, []byte("a.example\n"), 0o644))
	future := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(ahead, future, future))
	g, err := os.OpenFile(ahead, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	w.remove(dir)
	require.NoError(t, w.add(dir))
	open, last = w.heldOpen([]string{ahead})
	assert.Equal(t, []string{ahead}, open, "held by the writer found in /proc")
	assert.False(t, last.After(time.Now()), "held since %v, in the future", last)
}

// TestFolderUnderTwoNamesStillWatchedUnderOne: a lists folder named
// directly and through a symlink is one watch of the kernel's; the
// Watcher dropping the symlink's name (no list named through it any
// more) keeps watching the folder for the lists named directly, whose
// writer is still seen.
func TestFolderUnderTwoNamesStillWatchedUnderOne(t *testing.T) {
	w, list := writersOfList(t)
	dir := filepath.Dir(list)
	link := filepath.Join(t.TempDir(), "lists")
	require.NoError(t, os.Symlink(dir, link))
	require.NoError(t, w.add(link))
	w.remove(link)

	f, err := os.OpenFile(list, os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString("b.exa")
	require.NoError(t, err)
	open, _ := w.heldOpen([]string{list})
	assert.Equal(t, []string{list}, open, "a writer of a list in a folder still watched under its own name")
}

// TestWriterClosedInAnOverflowNotHeld: a writer holds a list, and closes
// it while the writer watch's reader is starved and its queue overflows,
// the close among the events dropped. What was known of the files before
// the overflow is no guide: the list, complete and held by no one /proc
// shows, is not held for the writer wait.
func TestWriterClosedInAnOverflowNotHeld(t *testing.T) {
	w, path, noise := overflowWatcher(t)
	require.NoError(t, w.Watch([]string{path}, nil))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString("a.example\n")
	require.NoError(t, err)
	open, _ := w.writers.heldOpen([]string{path})
	require.Equal(t, []string{path}, open, "held while its writer has it open")

	w.writers.readMu.Lock()
	queued := overflowQueue(t, noise)
	err = f.Close()
	w.writers.readMu.Unlock()
	require.True(t, queued)
	require.NoError(t, err)
	open, _ = w.writers.heldOpen([]string{path})
	assert.Empty(t, open, "held by a writer whose close the overflow dropped")
}

// TestListReplacedUnderItsWriterNotHeld: a writer holds a list, and the
// list is replaced under it (a complete copy renamed over it, as an
// atomic save does) or deleted: the writer now writes a file the list
// is not, and the list is not held for it.
func TestListReplacedUnderItsWriterNotHeld(t *testing.T) {
	tests := []struct {
		name    string
		replace func(t *testing.T, list string)
	}{
		{name: "a complete copy renamed over it", replace: func(t *testing.T, list string) {
			require.NoError(t, os.WriteFile(list+".tmp", []byte("c.example\n"), 0o644))
			require.NoError(t, os.Rename(list+".tmp", list))
		}},
		{name: "deleted", replace: func(t *testing.T, list string) {
			require.NoError(t, os.Remove(list))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, list := writersOfList(t)
			f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
			_, err = f.WriteString("b.exa")
			require.NoError(t, err)
			open, _ := w.heldOpen([]string{list})
			require.Equal(t, []string{list}, open, "held while its writer has it open")

			tc.replace(t, list)
			open, _ = w.heldOpen([]string{list})
			assert.Empty(t, open, "held by the writer of the file it replaced")
		})
	}
}

// TestWatcherLooksAgainAfterAnOverflow: a writer closes a list the
// Watcher waits on while the writer watch's queue overflows, its close
// among the events dropped, so no close tells the Watcher to look again.
// The overflow does: the list, complete and held by no one, is reported
// then, not at the end of the writer wait (a minute here). Another writer
// of the lists folder, a log, shows /proc is not blind to writers.
func TestWatcherLooksAgainAfterAnOverflow(t *testing.T) {
	w, path, noise := overflowWatcher(t)
	w.SetWriterWait(time.Minute)
	waits := make(chan []string, 16)
	w.OnWriterWait(func(open []string, _ time.Duration) { waits <- open })
	require.NoError(t, w.Watch([]string{path}, nil))
	reported := runReporting(t, w, path)
	log, err := os.OpenFile(filepath.Join(filepath.Dir(path), "writer.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { log.Close() })

	f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("a.example\nb.example\n")
	require.NoError(t, err)
	select {
	case open := <-waits:
		assert.Equal(t, []string{path}, open)
	case <-time.After(10 * time.Second):
		f.Close()
		require.FailNow(t, "the watcher never waited for the writer")
	}
	w.writers.readMu.Lock()
	queued := overflowQueue(t, noise)
	err = f.Close()
	w.writers.readMu.Unlock()
	require.True(t, queued)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(reported()) > 0 }, 10*time.Second, overflowDebounce,
		"not reported before the end of the writer wait")
	assert.Equal(t, []string{"a.example\nb.example\n"}, reported(), "the complete file, once")
}

// mergedOpens opens list for writing (appending), then for reading, while
// w's reader is held off, so that the two opens queue unread and the
// kernel merges them into one event (TestWriterHeldThroughMergedOpens).
// The writer is closed at the test's end.
func mergedOpens(t *testing.T, w *writers, list string) (writer, reader *os.File) {
	t.Helper()
	w.readMu.Lock()
	writer, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		w.readMu.Unlock()
		require.NoError(t, err)
	}
	t.Cleanup(func() { writer.Close() })
	reader, err = os.Open(list)
	w.readMu.Unlock()
	require.NoError(t, err)
	return writer, reader
}

// TestWriterHeldThroughMergedOpens: the kernel merges an event into the
// one queued before it when both are the same and unread, so a writer's
// open and a reader's right after it (a backup or an indexer reading the
// list) count as one open. The reader's close then looked like the last
// one, and the list was no longer held while its writer, which had
// written part of it, still had it open: paused longer than the quiet
// period, it would have been read half written. A last close after
// reading with the list modified asks /proc whether a writer is left.
func TestWriterHeldThroughMergedOpens(t *testing.T) {
	w, list := writersOfList(t)
	f, r := mergedOpens(t, w, list)
	_, err := f.WriteString("b.exa")
	require.NoError(t, err)
	open, _ := w.heldOpen([]string{list})
	require.Equal(t, []string{list}, open, "held while its writer has it open")

	require.NoError(t, r.Close())
	open, _ = w.heldOpen([]string{list})
	assert.Equal(t, []string{list}, open, "the reader's close is not the last: the writer still has it open")

	require.NoError(t, f.Close())
	open, _ = w.heldOpen([]string{list})
	assert.Empty(t, open, "the writer's close ends it")
}

// TestWriterCloseTellsTheWatcherOnce: a writer's close of a list it held
// tells the Watcher to look again (closedC), once, whether the Watcher
// is waiting on closedC right then or busy, and whether the close was
// read by a look (heldOpen) or by the writer watch's own reader. Opens,
// writes and readers' closes do not: a tool polling a lists folder would
// otherwise have the Watcher look again at each of its closes.
func TestWriterCloseTellsTheWatcherOnce(t *testing.T) {
	w, list := writersOfList(t)
	told := func() bool {
		select {
		case <-w.closedC():
			return true
		default:
			return false
		}
	}

	_, err := os.ReadFile(list)
	require.NoError(t, err)
	f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString("b.example\n")
	require.NoError(t, err)
	open, _ := w.heldOpen([]string{list})
	require.Equal(t, []string{list}, open, "held while its writer has it open")
	assert.False(t, told(), "told by a reader, an open or a write")

	require.NoError(t, f.Close())
	open, _ = w.heldOpen([]string{list}) // reads the close
	assert.Empty(t, open, "held after its writer closed it")
	assert.True(t, told(), "the writer's close, read while the Watcher was busy, not told")
	assert.False(t, told(), "one close told twice")

	// No look reads the close: the writer watch's reader does, and tells.
	g, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	_, err = g.WriteString("c.example\n")
	require.NoError(t, err)
	require.NoError(t, g.Close())
	select {
	case <-w.closedC():
	case <-time.After(10 * time.Second):
		require.FailNow(t, "a writer's close not told until a look read it")
	}
}

// TestWriterHeldThroughMergedOpensBeforeItWrites: a writer's open and a
// reader's right after it, both unread, merge into one open (see
// TestWriterHeldThroughMergedOpens), and the reader closes before the
// writer has written: its close looked like the last, the list was
// forgotten, and the writer's writes after it, to a list no longer
// known, held nothing. A download that opens the list, is read by a
// backup at once, and stalls after its first half had that half read.
// A write to a list not known to be open asks /proc for its writer.
func TestWriterHeldThroughMergedOpensBeforeItWrites(t *testing.T) {
	w, list := writersOfList(t)
	f, r := mergedOpens(t, w, list)
	require.NoError(t, r.Close())
	w.sync()

	_, err := f.WriteString("b.exa")
	require.NoError(t, err)
	open, _ := w.heldOpen([]string{list})
	assert.Equal(t, []string{list}, open, "a writer that wrote after the reader's close")

	require.NoError(t, f.Close())
	open, _ = w.heldOpen([]string{list})
	assert.Empty(t, open, "the writer's close ends it")
}

// TestWriterGivenUpOnHoldsUntilItWritesAgain: the Watcher gives up on a
// writer that has not closed its list in the writer wait and applies the
// list (forget). The list is then no longer held, so that a later change
// of another list is not reported with it as still open, until its writer
// writes again. A list no writer held is forgotten without harm.
func TestWriterGivenUpOnHoldsUntilItWritesAgain(t *testing.T) {
	w, list := writersOfList(t)
	f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString("b.example\n")
	require.NoError(t, err)
	open, _ := w.heldOpen([]string{list})
	require.Equal(t, []string{list}, open, "held while its writer has it open")

	other := filepath.Join(filepath.Dir(list), "other.txt")
	w.forget([]string{list, other})
	open, _ = w.heldOpen([]string{list, other})
	assert.Empty(t, open, "held after the Watcher gave up on its writer")

	_, err = f.WriteString("c.example\n")
	require.NoError(t, err)
	open, _ = w.heldOpen([]string{list, other})
	assert.Equal(t, []string{list}, open, "not held when its writer wrote again")
}

// TestWriterCountsReadersAroundIt: the writer watch counts a list's opens
// and closes to know when no one is left to write it; /proc shows no
// writer here, as under the shipped unit's ProtectProc=invisible, so the
// count is all there is. A reader that opens and closes the list while a
// writer has it open, not yet written, leaves the writer counted: its
// write holds the list. A reader that opened the list before its folder
// was watched (its open never seen), closing after one seen, counts for
// nothing: the writer that opens the list next is still seen holding it.
// Each open and close is read before the next (sync), so that the kernel
// merges none (TestWriterHeldThroughMergedOpens).
func TestWriterCountsReadersAroundIt(t *testing.T) {
	t.Run("a reader while a writer has not written yet", func(t *testing.T) {
		procBlind(t)
		w, list := writersOfList(t)
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		w.sync()
		_, err = os.ReadFile(list)
		require.NoError(t, err)
		_, err = f.WriteString("b.exa")
		require.NoError(t, err)
		open, _ := w.heldOpen([]string{list})
		assert.Equal(t, []string{list}, open, "a writer that wrote after a reader came and went")
	})
	t.Run("a reader from before the watch", func(t *testing.T) {
		procBlind(t)
		dir := t.TempDir()
		list := filepath.Join(dir, "list.txt")
		require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
		early, err := os.Open(list)
		require.NoError(t, err)
		t.Cleanup(func() { early.Close() })
		w, err := newWriters()
		require.NoError(t, err)
		t.Cleanup(func() { w.close() })
		require.NoError(t, w.add(dir))

		_, err = os.ReadFile(list)
		require.NoError(t, err)
		w.sync()
		require.NoError(t, early.Close())
		w.sync()
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.WriteString("b.exa")
		require.NoError(t, err)
		open, _ := w.heldOpen([]string{list})
		assert.Equal(t, []string{list}, open, "a writer that opened after readers' closes, one of an open never seen")
	})
}

// procBlind makes /proc show no writer (procWriters) until the test ends,
// as under the shipped systemd unit (ProtectProc=invisible, DynamicUser).
func procBlind(t *testing.T) {
	procWriters = func(func(string) bool) map[string]int { return nil }
	t.Cleanup(func() { procWriters = writingNow })
}

// TestListHeldNoLongerThanItsWriter: a list is held while it is written
// and no longer: its writer's close ends the hold while a reader still
// has it open, and a truncate(2) by path made while a reader has it open
// is held until that reader, the last, closes it.
func TestListHeldNoLongerThanItsWriter(t *testing.T) {
	t.Run("the writer closes before a reader", func(t *testing.T) {
		w, list := writersOfList(t)
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.WriteString("b.example\n")
		require.NoError(t, err)
		r, err := os.Open(list)
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		open, _ := w.heldOpen([]string{list})
		require.Equal(t, []string{list}, open, "held while its writer has it open")

		require.NoError(t, f.Close())
		open, _ = w.heldOpen([]string{list})
		assert.Empty(t, open, "held by a reader after its writer closed it")
	})
	t.Run("truncated by path while a reader has it open", func(t *testing.T) {
		w, list := writersOfList(t)
		r, err := os.Open(list)
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		require.NoError(t, os.Truncate(list, 0))
		w.sync()

		require.NoError(t, r.Close())
		open, _ := w.heldOpen([]string{list})
		assert.Empty(t, open, "held after the last to have it open closed it")
	})
}

// TestWriterFoundInProcIsTheLists: a reader's last close of a list that
// was modified while it was open asks /proc whether a writer of the list
// is left (TestWriterHeldThroughMergedOpens). A writer of another list in
// the folder, or of a list of the same name in another folder, is not
// one: a truncate(2) by path made while the reader had the list open ends
// with that close. A writer that is found counts once: its close ends the
// hold, and the list is held by no one after it.
func TestWriterFoundInProcIsTheLists(t *testing.T) {
	t.Run("writers of other lists", func(t *testing.T) {
		w, list := writersOfList(t)
		for _, other := range []string{filepath.Join(filepath.Dir(list), "other.txt"), filepath.Join(t.TempDir(), "list.txt")} {
			f, err := os.OpenFile(other, os.O_CREATE|os.O_WRONLY, 0o644)
			require.NoError(t, err)
			t.Cleanup(func() { f.Close() })
		}
		r, err := os.Open(list)
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		require.NoError(t, os.Truncate(list, 0))
		w.sync()

		require.NoError(t, r.Close())
		open, _ := w.heldOpen([]string{list})
		assert.Empty(t, open, "held for a writer of another list")
	})
	t.Run("the list's writer, once", func(t *testing.T) {
		w, list := writersOfList(t)
		w.readMu.Lock() // the two opens queue unread, and merge
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			w.readMu.Unlock()
			require.NoError(t, err)
		}
		t.Cleanup(func() { f.Close() })
		r, err := os.Open(list)
		w.readMu.Unlock()
		require.NoError(t, err)
		_, err = f.WriteString("b.exa")
		require.NoError(t, err)
		require.NoError(t, r.Close())
		open, _ := w.heldOpen([]string{list})
		require.Equal(t, []string{list}, open, "the reader's close is not the last: the writer still has it open")

		require.NoError(t, f.Close())
		require.NoError(t, os.Truncate(list, 0))
		open, _ = w.heldOpen([]string{list})
		assert.Empty(t, open, "a truncate(2) by path after the writer closed: its open counted twice")
	})
}

// TestWritersAddWatchesAFolderAsItIs: add watches a folder for writers
// once, from what /proc shows then, and again only once it is gone:
//   - added again while watched, it keeps what its events told: a writer
//     seen opening a list, that has written nothing, is not taken for
//     one found in /proc and held;
//   - a folder that does not exist is not watched, and is watched once
//     it does;
//   - a folder deleted is forgotten, and watched anew when made again
//     and added (a lists folder replaced by a deploy);
//   - a writer of a list deleted under it (its /proc link names the list
//     "(deleted)") does not stop the folder being watched.
func TestWritersAddWatchesAFolderAsItIs(t *testing.T) {
	writes := func(t *testing.T, w *writers, list string) {
		t.Helper()
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.WriteString("b.exa")
		require.NoError(t, err)
		open, _ := w.heldOpen([]string{list})
		assert.Equal(t, []string{list}, open, "a writer of a list of the folder")
	}
	t.Run("added again", func(t *testing.T) {
		w, list := writersOfList(t)
		testnet.HoldOpen(t, list, ">>")
		w.sync()
		require.NoError(t, w.add(filepath.Dir(list)))
		open, _ := w.heldOpen([]string{list})
		assert.Empty(t, open, "held for a writer seen opening it that has not written")
	})
	t.Run("not there yet", func(t *testing.T) {
		w, err := newWriters()
		require.NoError(t, err)
		t.Cleanup(func() { w.close() })
		dir := filepath.Join(t.TempDir(), "lists")
		require.Error(t, w.add(dir))
		require.NoError(t, os.Mkdir(dir, 0o755))
		list := filepath.Join(dir, "list.txt")
		require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
		require.NoError(t, w.add(dir))
		writes(t, w, list)
	})
	t.Run("deleted and made again", func(t *testing.T) {
		w, list := writersOfList(t)
		dir := filepath.Dir(list)
		require.NoError(t, os.RemoveAll(dir))
		w.sync()
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
		require.NoError(t, w.add(dir))
		writes(t, w, list)
	})
	t.Run("a writer of a list deleted under it", func(t *testing.T) {
		dir := t.TempDir()
		list := filepath.Join(dir, "list.txt")
		require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
		f, err := os.OpenFile(list, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		require.NoError(t, os.Remove(list))
		require.NoError(t, os.WriteFile(list, []byte("a.example\n"), 0o644))
		w, err := newWriters()
		require.NoError(t, err)
		t.Cleanup(func() { w.close() })
		require.NoError(t, w.add(dir))
		open, _ := w.heldOpen([]string{list})
		assert.Empty(t, open, "held for the writer of the list deleted")
		writes(t, w, list)
	})
}

// TestHeldOpenCountsFromTheLatestWrite: the Watcher waits for the writers
// of the lists it holds until the writer wait has passed since the latest
// write among them (heldOpen's time), not since an earlier one: it would
// give up early on the list written last, and apply it half written. A
// list only read is not held; nor, asked about by a reload (openNow), is
// a list in a watched folder whose writer has written nothing since it
// was seen opening it, though /proc shows that writer and the list is
// new (a shell's `exec 3>>list`).
func TestHeldOpenCountsFromTheLatestWrite(t *testing.T) {
	w, first := writersOfList(t)
	dir := filepath.Dir(first)
	second, read, idle := filepath.Join(dir, "second.txt"), filepath.Join(dir, "read.txt"), filepath.Join(dir, "idle.txt")
	for _, p := range []string{second, read, idle} {
		require.NoError(t, os.WriteFile(p, []byte("a.example\n"), 0o644))
	}
	r, err := os.Open(read)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	testnet.HoldOpen(t, idle, ">>")
	held := func(p string) time.Time {
		t.Helper()
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.WriteString("b.exa")
		require.NoError(t, err)
		open, last := w.heldOpen([]string{p})
		require.Equal(t, []string{p}, open, "held while its writer has it open")
		return last
	}
	secondWrote := held(second)
	firstWrote := held(first)
	require.True(t, firstWrote.After(secondWrote))

	open, last := w.heldOpen([]string{first, second, read, idle})
	assert.Equal(t, []string{first, second}, open)
	assert.True(t, last.Equal(firstWrote), "held since %v, not since the latest write %v", last, firstWrote)
	assert.Equal(t, []string{first, second}, w.openNow([]string{first, second, read, idle}, time.Minute))
}

// TestRenamedListKeepsItsWriter: a list renamed keeps its writer under
// its new name, until its close: a download written to list.part and
// renamed to list.txt while still open and written is held under
// list.txt. The name it left is no longer its writer's: a list saved anew
// under it (an editor that renames the old file away to a backup and
// writes the new one) is not held for the writer of the backup, which
// writes on. What is kept of the files renamed away does not grow with
// those renamed out of the watched folders and never back.
func TestRenamedListKeepsItsWriter(t *testing.T) {
	w, list := writersOfList(t)
	dir := filepath.Dir(list)
	part := filepath.Join(dir, "list.part")
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	_, err = f.WriteString("a.example\nb.exa")
	require.NoError(t, err)
	w.sync()
	require.NoError(t, os.Rename(part, list))
	open, _ := w.heldOpen([]string{part, list})
	assert.Equal(t, []string{list}, open, "a list renamed while its writer has it open")

	backup := list + "~"
	require.NoError(t, os.Rename(list, backup))
	require.NoError(t, os.WriteFile(list, []byte("c.example\n"), 0o644))
	_, err = f.WriteString("mple\n")
	require.NoError(t, err)
	open, _ = w.heldOpen([]string{list, backup})
	assert.Equal(t, []string{backup}, open, "a list saved anew under the name its writer's list left")

	away := t.TempDir()
	for i := range 100 {
		name := fmt.Sprintf("away%d.txt", i)
		g, err := os.Create(filepath.Join(dir, name))
		require.NoError(t, err)
		t.Cleanup(func() { g.Close() })
		require.NoError(t, os.Rename(filepath.Join(dir, name), filepath.Join(away, name)))
	}
	w.sync()
	w.mu.Lock()
	moving := len(w.moving)
	w.mu.Unlock()
	assert.LessOrEqual(t, moving, 64, "files renamed away kept")
}

// TestRemovedFolderLeavesNoWatch: a folder the Watcher no longer needs
// leaves no watch of the kernel's behind (its fdinfo names one line per
// watch): each counts against fs.inotify.max_user_watches, shared by
// every process of the user, and keeps its events coming. A folder still
// watched under another name keeps its one.
func TestRemovedFolderLeavesNoWatch(t *testing.T) {
	w, list := writersOfList(t)
	dir := filepath.Dir(list)
	watches := func() int {
		t.Helper()
		rc, err := w.file.SyscallConn()
		require.NoError(t, err)
		var fd uintptr
		require.NoError(t, rc.Control(func(f uintptr) { fd = f }))
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
		require.NoError(t, err)
		return strings.Count(string(info), "inotify wd:")
	}
	require.Equal(t, 1, watches())

	other := t.TempDir()
	require.NoError(t, w.add(other))
	link := filepath.Join(t.TempDir(), "lists")
	require.NoError(t, os.Symlink(dir, link))
	require.NoError(t, w.add(link))
	require.Equal(t, 2, watches(), "one watch for each folder, under however many names")

	w.remove(other)
	w.remove(link)
	assert.Equal(t, 1, watches(), "watches left of the folders removed")
}

// TestRemovedFolderForgetsOnlyItsLists: a folder the Watcher no longer
// needs forgets what was known of its lists, and only of its lists: a
// writer of a list of a folder still watched, already seen writing, holds
// it still.
func TestRemovedFolderForgetsOnlyItsLists(t *testing.T) {
	w, list := writersOfList(t)
	dropped := t.TempDir()
	require.NoError(t, w.add(dropped))
	for _, p := range []string{list, filepath.Join(dropped, "list.txt")} {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.WriteString("b.exa")
		require.NoError(t, err)
	}
	open, _ := w.heldOpen([]string{list, filepath.Join(dropped, "list.txt")})
	require.Len(t, open, 2, "held while their writers have them open")

	w.remove(dropped)
	open, _ = w.heldOpen([]string{list, filepath.Join(dropped, "list.txt")})
	assert.Equal(t, []string{list}, open)
}

// TestWriterWatchRestsWhenNothingHappens: the writer watch's reader reads
// what the kernel queued and waits for more without spinning: a reader
// that went on reading an empty queue would take a core for as long as
// dnsfence runs. dnsfence's CPU time over two quiet seconds stays far
// below one core's.
func TestWriterWatchRestsWhenNothingHappens(t *testing.T) {
	w, list := writersOfList(t)
	appendTo(t, list, "b.example\n")
	open, _ := w.heldOpen([]string{list})
	require.Empty(t, open)
	used := func() time.Duration {
		var ru unix.Rusage
		require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &ru))
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := used()
	require.Never(t, func() bool { return used()-before > 500*time.Millisecond }, 2*time.Second, 100*time.Millisecond,
		"the writer watch spins while no event comes")
}
