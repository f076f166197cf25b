package blocklist

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher reports when the content of a set of files has changed and
// settled. It watches the files' folders, not the files, so that atomic
// saves (write a temporary file, rename it over), editors that replace the
// file, `cp`, and Kubernetes ConfigMap updates (a `..data` symlink swapped by
// rename) are all seen.
//
// Every event on a watched path means "maybe changed". After a quiet
// debounce period the files are hashed; once two hashes one debounce apart
// agree, the content is stable (a writer that truncates and then writes in
// pieces is never reported half way), and the change is reported only if the
// hashes differ from those last reported.
type Watcher struct {
	fsw      *fsnotify.Watcher
	debounce time.Duration

	mu       sync.Mutex
	files    []string        // the files whose content matters
	relevant map[string]bool // those files and every symlink on the way to their content
	dirs     map[string]bool // folders added to fsw
	reported map[string]fileState
	recheck  chan struct{} // Watch asks Run to look again

	// onSettle, when set (by tests, before Run), is called each time the
	// files have settled, saying whether that was reported as a change.
	onSettle func(changed bool)
}

// fileState is a file's content hash, or that it could not be read.
type fileState struct {
	sum     [32]byte
	missing bool
}

// NewWatcher returns a Watcher with the given debounce period.
func NewWatcher(debounce time.Duration) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("starting file watcher: %w", err)
	}
	return &Watcher{fsw: fsw, debounce: debounce, relevant: map[string]bool{}, dirs: map[string]bool{},
		recheck: make(chan struct{}, 1)}, nil
}

// Close stops watching.
func (w *Watcher) Close() error { return w.fsw.Close() }

// Watch replaces the set of watched files. known holds the content hashes
// the caller has already applied (by path); a change since then, even one
// made before the folders were watched, is signalled by the check Watch
// schedules. Files not in known count as applied as they are now.
func (w *Watcher) Watch(files []string, known map[string][32]byte) error {
	relevant := map[string]bool{}
	var errs []error
	abs := make([]string, 0, len(files))
	for _, f := range files {
		a, err := filepath.Abs(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		abs = append(abs, a)
		for _, p := range symlinkChain(a) {
			relevant[p] = true
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for p := range relevant {
		dir := filepath.Dir(p)
		if w.dirs[dir] {
			continue
		}
		if err := w.fsw.Add(dir); err != nil {
			errs = append(errs, fmt.Errorf("watching %s: %w", dir, err))
			continue
		}
		w.dirs[dir] = true
	}
	w.files, w.relevant = abs, relevant
	knownAbs := map[string][32]byte{}
	for p, sum := range known {
		if a, err := filepath.Abs(p); err == nil {
			knownAbs[a] = sum
		}
	}
	w.reported = make(map[string]fileState, len(abs))
	for _, a := range abs {
		if sum, ok := knownAbs[a]; ok {
			w.reported[a] = fileState{sum: sum}
		} else {
			w.reported[a] = hashFile(a)
		}
	}
	select {
	case w.recheck <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// symlinkChain lists path and every symlink met while resolving it, so that
// a swap of any link on the way (a ConfigMap's `..data`) is seen. Each
// prefix of the path is resolved in turn.
func symlinkChain(path string) []string {
	chain := []string{path}
	seen := map[string]bool{}
	for i := 0; i < 40; i++ { // bounded like the kernel's symlink limit
		resolved, link := firstLink(path)
		if link == "" || seen[link] {
			break
		}
		seen[link] = true
		chain = append(chain, link, resolved)
		path = resolved
	}
	return chain
}

// firstLink finds the first symlink among the prefixes of path and returns
// the path with that link replaced by its target.
func firstLink(path string) (resolved, link string) {
	dir, rest := path, ""
	var prefixes []string
	for {
		prefixes = append(prefixes, dir)
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	for i := len(prefixes) - 1; i >= 0; i-- {
		p := prefixes[i]
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(p)
		if err != nil {
			return path, ""
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		rest, _ = filepath.Rel(p, path)
		return filepath.Join(target, rest), p
	}
	return path, ""
}

func hashFiles(files []string) map[string]fileState {
	out := make(map[string]fileState, len(files))
	for _, f := range files {
		out[f] = hashFile(f)
	}
	return out
}

// hashFile hashes a file as it streams by: a million-entry list is never
// held in memory for it.
func hashFile(path string) fileState {
	f, err := os.Open(path)
	if err != nil {
		return fileState{missing: true}
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fileState{missing: true}
	}
	var st fileState
	h.Sum(st.sum[:0])
	return st
}

func sameStates(a, b map[string]fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Run watches until ctx ends, calling changed (on this goroutine) each time
// the files' content has changed and settled. changed may call Watch.
// Watch errors from the operating system (such as a queue overflow) are
// treated as a possible change.
func (w *Watcher) Run(ctx context.Context, changed func()) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var pending map[string]fileState // hashes at the last quiet tick
	arm := func() { timer.Reset(w.debounce) }
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			w.mu.Lock()
			hit := w.relevant[ev.Name]
			w.mu.Unlock()
			if hit {
				pending = nil
				arm()
			}
		case _, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			pending = nil
			arm()
		case <-w.recheck:
			pending = nil
			arm()
		case <-timer.C:
			w.mu.Lock()
			files, reported := w.files, w.reported
			w.mu.Unlock()
			now := hashFiles(files)
			if pending == nil || !sameStates(now, pending) {
				pending = now // not settled yet: look again after a quiet period
				arm()
				continue
			}
			pending = nil
			changes := !sameStates(now, reported) // else touched, rewritten with the same bytes, or chmod
			if changes {
				w.mu.Lock()
				w.reported = now
				w.mu.Unlock()
				changed()
			}
			if w.onSettle != nil {
				w.onSettle(changes)
			}
		}
	}
}
