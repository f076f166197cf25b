package blocklist

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// steadyReader is a read for ReadSteady of one file: it reads the file,
// records what it read, and runs after (if set) once it has.
type steadyReader struct {
	path  string
	reads []string
	after func(read int)
}

func (r *steadyReader) read() (map[string][32]byte, error) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return nil, err
	}
	r.reads = append(r.reads, string(data))
	if r.after != nil {
		r.after(len(r.reads))
	}
	return map[string][32]byte{r.path: sha256.Sum256(data)}, nil
}

// appendTo appends text to path and closes it: a write /proc cannot show
// afterwards, as under ProtectProc=invisible.
func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(text)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// TestReadSteady: what dnsfence reads at start stands only if each file
// was the same before, during and a quiet period after the read, and no
// writer held it. Before, start waited for the quiet period and then
// read, which added the period to every start (a million-entry list took
// 0.55 s to be ready for 0.35 s of reading) and did not look at the file
// again once read: a writer /proc does not show that went on meanwhile
// had its first half served.
func TestReadSteady(t *testing.T) {
	const quiet = 100 * time.Millisecond
	ctx := t.Context()
	newList := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "tiktok.txt")
		require.NoError(t, os.WriteFile(path, []byte("tiktok.com\n"), 0o644))
		return path
	}

	t.Run("steady: one read, no wait", func(t *testing.T) {
		path := newList(t)
		r := &steadyReader{path: path}
		began := time.Now()
		waited, err := ReadSteady(ctx, []string{path}, quiet, time.Minute, r.read)
		require.NoError(t, err)
		assert.Zero(t, waited)
		assert.Equal(t, []string{"tiktok.com\n"}, r.reads)
		assert.GreaterOrEqual(t, time.Since(began), quiet, "stands once the quiet period has passed")
	})

	t.Run("the quiet period runs while the files are read", func(t *testing.T) {
		// Not a timing of the machine: with a quiet period of a minute,
		// a read that waited for it first would not begin within the
		// test's 10 s.
		path := newList(t)
		const long = time.Minute
		readBegan := make(chan time.Duration, 1)
		began := time.Now()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			_, _ = ReadSteady(cctx, []string{path}, long, 2*long, func() (map[string][32]byte, error) {
				readBegan <- time.Since(began)
				data, err := os.ReadFile(path)
				return map[string][32]byte{path: sha256.Sum256(data)}, err
			})
		}()
		select {
		case <-readBegan:
		case <-time.After(10 * time.Second):
			require.FailNow(t, "the read waited for the quiet period")
		}
	})

	t.Run("changed while read: read again", func(t *testing.T) {
		path := newList(t)
		r := &steadyReader{path: path, after: func(read int) {
			if read == 1 {
				appendTo(t, path, "byteoversea.com\n")
			}
		}}
		waited, err := ReadSteady(ctx, []string{path}, quiet, time.Minute, r.read)
		require.NoError(t, err)
		assert.Positive(t, waited)
		assert.Equal(t, []string{"tiktok.com\n", "tiktok.com\nbyteoversea.com\n"}, r.reads)
	})

	t.Run("changed in the quiet period after the read: read again", func(t *testing.T) {
		// The write comes 20 ms into a quiet period of a second: the
		// margin is for a busy machine, not a timing of it.
		const long = time.Second
		path := newList(t)
		wrote := make(chan error, 1)
		r := &steadyReader{path: path, after: func(read int) {
			if read == 1 {
				go func() {
					time.Sleep(20 * time.Millisecond)
					f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
					if err == nil {
						_, err = f.WriteString("byteoversea.com\n")
						err = errors.Join(err, f.Close())
					}
					wrote <- err
				}()
			}
		}}
		_, err := ReadSteady(ctx, []string{path}, long, time.Minute, r.read)
		require.NoError(t, err)
		require.NoError(t, <-wrote)
		require.GreaterOrEqual(t, len(r.reads), 2, "the first read stood")
		assert.Equal(t, "tiktok.com\nbyteoversea.com\n", r.reads[len(r.reads)-1])
	})

	t.Run("changed before the read: read again", func(t *testing.T) {
		// The configuration is read before Start: a change between that
		// read and ReadSteady's look is a change.
		path := newList(t)
		stale := sha256.Sum256([]byte("tiktok"))
		calls := 0
		_, err := ReadSteady(ctx, []string{path}, quiet, time.Minute, func() (map[string][32]byte, error) {
			if calls++; calls == 1 {
				return map[string][32]byte{path: stale}, nil
			}
			data, err := os.ReadFile(path)
			return map[string][32]byte{path: sha256.Sum256(data)}, err
		})
		require.NoError(t, err)
		assert.Equal(t, 2, calls)
	})

	t.Run("a writer holds it open: not read until it closes", func(t *testing.T) {
		path := newList(t)
		f, err := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteString("tiktok.com\nbyte")
		require.NoError(t, err)
		r := &steadyReader{path: path}
		result := make(chan error, 1)
		go func() {
			_, err := ReadSteady(ctx, []string{path}, quiet, time.Minute, r.read)
			result <- err
		}()
		writerFinishes(t, f, result)
		assert.Equal(t, []string{"tiktok.com\nbyteoversea.com\n"}, r.reads, "read once, whole")
	})

	t.Run("a file the first read named: not read again until its writer closes", func(t *testing.T) {
		// The files are the configuration's; a read reads the lists it
		// names too, and a writer that starts on one after the first
		// read is waited for as on the configuration.
		config := newList(t)
		list := filepath.Join(filepath.Dir(config), "bytedance.txt")
		require.NoError(t, os.WriteFile(list, []byte("tiktok.com\n"), 0o644))
		opened := make(chan *os.File, 1)
		var reads []string
		read := func() (map[string][32]byte, error) {
			sums := map[string][32]byte{}
			for _, p := range []string{config, list} {
				data, err := os.ReadFile(p)
				if err != nil {
					return nil, err
				}
				sums[p] = sha256.Sum256(data)
				if p == list {
					reads = append(reads, string(data))
				}
			}
			if len(reads) == 1 {
				f, err := os.OpenFile(list, os.O_TRUNC|os.O_WRONLY, 0)
				if err != nil {
					return nil, err
				}
				if _, err := f.WriteString("tiktok.com\nbyte"); err != nil {
					return nil, errors.Join(err, f.Close())
				}
				opened <- f
			}
			return sums, nil
		}
		result := make(chan error, 1)
		go func() {
			_, err := ReadSteady(ctx, []string{config}, quiet, time.Minute, read)
			result <- err
		}()
		var f *os.File
		select {
		case f = <-opened:
		case err := <-result:
			require.FailNow(t, "returned before the writer began", "%v", err)
		}
		writerFinishes(t, f, result)
		assert.Equal(t, []string{"tiktok.com\n", "tiktok.com\nbyteoversea.com\n"}, reads, "the list read again once, whole")
	})

	t.Run("a writer opens it during the read, writing nothing yet: read again once it closes", func(t *testing.T) {
		// The content and the stat are as read: only the writer /proc
		// shows after the read says the read may not stand.
		path := newList(t)
		opened := make(chan *os.File, 1)
		r := &steadyReader{path: path, after: func(read int) {
			if read == 1 {
				f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				require.NoError(t, err)
				opened <- f
			}
		}}
		result := make(chan error, 1)
		go func() {
			_, err := ReadSteady(ctx, []string{path}, quiet, time.Minute, r.read)
			result <- err
		}()
		var f *os.File
		select {
		case f = <-opened:
		case err := <-result:
			require.FailNow(t, "returned before the writer opened", "%v", err)
		}
		t.Cleanup(func() { f.Close() })
		writerFinishes(t, f, result)
		assert.Equal(t, []string{"tiktok.com\n", "tiktok.com\noversea.com\n"}, r.reads, "read again once, whole")
	})

	t.Run("the wait for a writer ends with ctx: nothing read", func(t *testing.T) {
		path := newList(t)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.WriteString("byte")
		require.NoError(t, err)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		r := &steadyReader{path: path}
		_, err = ReadSteady(cctx, []string{path}, quiet, time.Minute, r.read)
		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, r.reads, "a file a writer holds is not read once the wait is given up")
	})

	t.Run("never steady: the last read stands after writer_wait, named", func(t *testing.T) {
		path := newList(t)
		r := &steadyReader{path: path}
		r.after = func(read int) { appendTo(t, path, fmt.Sprintf("n%d.tiktok.com\n", read)) }
		_, err := ReadSteady(ctx, []string{path}, 20*time.Millisecond, 300*time.Millisecond, r.read)
		require.ErrorIs(t, err, ErrBeingWritten)
		// No process holds the file: the message ends with the wait, naming
		// no holder (not " (by )").
		assert.Equal(t, path+": still being written: still changing or held open by a writer after 300ms", err.Error())
		assert.GreaterOrEqual(t, len(r.reads), 2)
	})

	t.Run("a read error is returned at once", func(t *testing.T) {
		path := newList(t)
		calls := 0
		bad := errors.New("line 3: not a name")
		_, err := ReadSteady(ctx, []string{path}, quiet, time.Minute, func() (map[string][32]byte, error) {
			calls++
			return nil, bad
		})
		require.ErrorIs(t, err, bad)
		assert.Equal(t, 1, calls)
	})
}

// writerFinishes checks that ReadSteady, whose error comes on result, does
// not return (for 500 ms) while f, the list it reads, is held by its
// writer, then ends the writer's line "oversea.com", closes f and waits for
// ReadSteady to return without error.
func writerFinishes(t *testing.T, f *os.File, result <-chan error) {
	t.Helper()
	require.Never(t, func() bool { return len(result) > 0 }, 500*time.Millisecond, 10*time.Millisecond,
		"returned while the writer held the list")
	_, err := f.WriteString("oversea.com\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	select {
	case err := <-result:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		require.FailNow(t, "ReadSteady did not return after the writer closed")
	}
}
