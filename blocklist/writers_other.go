//go:build !linux

package blocklist

import "time"

// writers is a no-op where the kernel does not say when a writer closes a
// file: the Watcher's quiet period is the only rule there.
type writers struct{ closed chan struct{} }

func newWriters() (*writers, error) { return &writers{closed: make(chan struct{})}, nil }

func (w *writers) close() error                             { return nil }
func (w *writers) add(string) error                         { return nil }
func (w *writers) remove(string)                            {}
func (w *writers) heldOpen([]string) ([]string, time.Time)  { return nil, time.Time{} }
func (w *writers) forget([]string)                          {}
func (w *writers) openNow([]string, time.Duration) []string { return nil }
func (w *writers) closedC() <-chan struct{}                 { return w.closed }
func (w *writers) takeBlindOverflow() bool                  { return false }

// writingFor finds no writer where /proc does not say which files a
// process has open.
func writingFor([]string, time.Duration) []string { return nil }

// Holders names no process where /proc does not say which files a process
// has open.
func Holders([]string) []string { return nil }
