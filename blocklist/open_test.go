package blocklist

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNonRegularFileReadIsBounded: Open bounds how long a pipe may stay
// silent (PipeIdle a read), but nothing bounds a file that is not regular
// and never stops sending: a character device (/dev/zero, /dev/urandom
// named as a list, range or configuration file, or a symlink swapped to
// one) has no deadline at all (SetReadDeadline fails and is ignored), and
// a pipe whose writer keeps writing (`yes tiktok.com > list.txt`) renews
// PipeIdle with every read. ReadList, ReadFile and config.Load read such a
// file whole (io.ReadAll) under the Reloader's lock: the reload, and every
// one after it, waits until memory runs out.
func TestNonRegularFileReadIsBounded(t *testing.T) {
	idle := PipeIdle
	PipeIdle = 200 * time.Millisecond
	t.Cleanup(func() { PipeIdle = idle })

	t.Run("character device", func(t *testing.T) {
		f, err := Open("/dev/zero")
		if err != nil {
			t.Skip("no /dev/zero:", err)
		}
		defer f.Close()
		// 1 GiB at most (into io.Discard), so that a failing run ends.
		n, err := io.Copy(io.Discard, io.LimitReader(f, 1<<30))
		require.Error(t, err, "/dev/zero read %d bytes without error: ReadList would read it for ever", n)
	})

	t.Run("pipe that keeps sending", func(t *testing.T) {
		path := namedPipe(t, "list.txt", 0)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			w, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			defer w.Close()
			tick := time.NewTicker(20 * time.Millisecond) // well within PipeIdle
			defer tick.Stop()
			for deadline := time.After(6 * time.Second); ; {
				select {
				case <-stop:
					return
				case <-deadline:
					return
				case <-tick.C:
					if _, err := w.WriteString("tiktok.com\n"); err != nil {
						return
					}
				}
			}
		}()
		start := time.Now()
		_, err := ReadFile(path)
		took := time.Since(start)
		require.Less(t, took, 3*time.Second, "a pipe read for %s (err %v): as long as its writer writes", took, err)
		require.Error(t, err)
	})
}

// TestHashFileLeavesAPipesWriterAlone: the watcher's hash (Run, and
// WaitComplete on SIGHUP) opened a named pipe to see that it is one,
// releasing a writer waiting in open(2) (`gen > list.txt`) into a pipe it
// closed at once: what the writer wrote was lost (EPIPE, or discarded
// with the pipe), and the reload that followed waited PipeIdle and failed.
func TestHashFileLeavesAPipesWriterAlone(t *testing.T) {
	path := namedPipe(t, "list.txt", 500*time.Millisecond)
	wrote := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(path, os.O_WRONLY, 0) // waits for a reader
		if err != nil {
			wrote <- err
			return
		}
		_, err = w.WriteString("tiktok.com\ncapcut.com\n")
		wrote <- errors.Join(err, w.Close())
	}()
	time.Sleep(100 * time.Millisecond) // the writer waits in open(2)
	st := hashFile(path)
	time.Sleep(100 * time.Millisecond) // the watcher's debounce before the reload
	l, _, err := ReadList(path, nil)
	require.NoError(t, err, "the writer's list was lost to the watcher's hash (state %+v, writer: %v)", st, func() error {
		select {
		case err := <-wrote:
			return err
		default:
			return nil
		}
	}())
	require.Equal(t, 2, l.Len())
}

// TestRegularFileIsReadWhole: the bounds of a file that is not regular
// (maxPipeBytes, PipeIdle) are not a regular file's, which is read to its
// end however long it is.
func TestRegularFileIsReadWhole(t *testing.T) {
	most := maxPipeBytes
	maxPipeBytes = 8
	t.Cleanup(func() { maxPipeBytes = most })
	path := filepath.Join(t.TempDir(), "list.txt")
	want := []byte("tiktok.com\ncapcut.com\n")
	require.NoError(t, os.WriteFile(path, want, 0o644))
	got, err := ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// TestPipeOfOneOctet: a named pipe's end of file after what its writer
// wrote, one octet as much as more, is the end of the file, not a writer
// still to come waited for until PipeIdle.
func TestPipeOfOneOctet(t *testing.T) {
	path := namedPipe(t, "list.txt", 2*time.Second)
	wrote := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(path, os.O_WRONLY, 0) // waits for the reader
		if err == nil {
			_, err = w.WriteString("x")
			w.Close()
		}
		wrote <- err
	}()
	got, err := ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, []byte("x"), got)
	require.NoError(t, <-wrote)
}

// namedPipe makes a named pipe called name in a directory of the test's
// own and returns its path, with PipeIdle set to idle for the test (0:
// left as it is); the test is skipped where named pipes cannot be made.
func namedPipe(t *testing.T, name string, idle time.Duration) string {
	t.Helper()
	if idle > 0 {
		old := PipeIdle
		PipeIdle = idle
		t.Cleanup(func() { PipeIdle = old })
	}
	path := filepath.Join(t.TempDir(), name)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip("no named pipes here:", err)
	}
	return path
}
