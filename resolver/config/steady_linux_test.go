package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLoadSteady: LoadSteady waits for a writer of the configuration
// that /proc shows, up to writerWait, and then reads the file as it is,
// telling gaveUp why (serve prints it: the start took writer_wait
// longer); a ctx that ends during a wait ends LoadSteady with its
// error, the file not read (again), and gaveUp not told of a wait that
// was cut short rather than given up.
func TestLoadSteady(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte("upstreams: [\"192.0.2.53:53\"]\n"), 0o600))
	// A writer that stays: the file open for writing here, its
	// modification time ahead so that it is never taken as abandoned.
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Close() })
	ahead := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(path, ahead, ahead))

	t.Run("a writer that stays past writer_wait", func(t *testing.T) {
		loads := 0
		var told []error
		cfg, err := LoadSteady(context.Background(), path, 10*time.Millisecond, 400*time.Millisecond,
			func() (*Config, error) { loads++; return Load(path) },
			func(err error) { told = append(told, err) })
		require.NoError(t, err)
		assert.Equal(t, []string{"192.0.2.53:53"}, cfg.Upstreams)
		assert.Equal(t, 1, loads)
		require.Len(t, told, 1)
		assert.ErrorIs(t, told[0], blocklist.ErrBeingWritten)
	})

	t.Run("ctx ended while a writer holds the file", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		loads, told := 0, 0
		cfg, err := LoadSteady(ctx, path, 10*time.Millisecond, time.Minute,
			func() (*Config, error) { loads++; return Load(path) },
			func(error) { told++ })
		assert.ErrorIs(t, err, context.Canceled)
		assert.Nil(t, cfg)
		assert.Zero(t, loads, "the file read after ctx ended")
		assert.Zero(t, told, "gaveUp told of a wait ctx cut short")
	})

	require.NoError(t, w.Close())
	t.Run("a read that fails is read again once the file is quiet", func(t *testing.T) {
		loads := 0
		cfg, err := LoadSteady(context.Background(), path, 10*time.Millisecond, time.Minute,
			func() (*Config, error) {
				if loads++; loads == 1 {
					return nil, errors.New("cut at a line")
				}
				return Load(path)
			}, nil)
		require.NoError(t, err)
		assert.Equal(t, []string{"192.0.2.53:53"}, cfg.Upstreams)
		assert.Equal(t, 2, loads)
	})

	t.Run("ctx ended before the second read", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		loads, told := 0, 0
		cfg, err := LoadSteady(ctx, path, 10*time.Millisecond, time.Minute,
			func() (*Config, error) { loads++; cancel(); return nil, errors.New("cut at a line") },
			func(error) { told++ })
		assert.ErrorIs(t, err, context.Canceled)
		assert.Nil(t, cfg)
		assert.Equal(t, 1, loads, "the file read again after ctx ended")
		assert.Zero(t, told)
	})
}
