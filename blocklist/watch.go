package blocklist

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
//
// A folder can go away and come back (`rm -rf lists; mkdir lists`, a new
// folder renamed into place, its parent recreated): the operating system
// drops the watch of a folder that is deleted or moved, so the Watcher
// re-arms before every hash, on every call to Watch or Rearm and once a
// rearmInterval. Re-arming watches each file's folder as it is now (a
// folder that took the old one's name is watched anew) or, while the folder
// is missing, its nearest existing ancestor, so that its return is seen.
// The folders above each watched folder are watched too: a folder moved
// with its parent keeps its watch on the moved folder and gives no event,
// and only a parent's watch sees the name taken by another. A
// folder that cannot be watched (the system's watch limit, permissions)
// leaves its files unwatched; OnUnwatched says which.
//
// Stable content is not enough for a writer that pauses (a script writing
// a list in pieces, a configuration written by a slow generator): on Linux
// the Watcher also follows, through a second inotify instance on the same
// folders, which files a writer has modified and not yet closed, and
// reports nothing while one of the watched files is held so. Once the
// writer closes the file the change is reported at once. A writer that
// keeps the file open for good is given up on after the content has stayed
// the same for the writer wait (SetWriterWait, default DefaultWriterWait):
// the change is then reported with Change.Open naming the files.
type Watcher struct {
	fsw     *fsnotify.Watcher
	writers *writers
	// debounce is the quiet period, in nanoseconds: SetDebounce changes it
	// while Run goes on, for the next event.
	debounce atomic.Int64
	// add starts watching a folder: fsw.Add, which tests make fail.
	add func(dir string) error
	// lookEvery is how often Run re-arms and hashes the files without an
	// event: rearmInterval, which tests shorten.
	lookEvery time.Duration

	mu    sync.Mutex
	files []string // the files whose content matters, absolute
	// set are the files Watch set, absolute: files holds them, and those
	// the last Also added.
	set []string
	// relevant are the paths whose events mean "look again": the files,
	// every symlink on the way to their content, the folders watched for
	// them, and each missing folder on the way to a file.
	relevant map[string]bool
	dirs     map[string]os.FileInfo // folders added to fsw, as they were when added
	// ancestors are the folders above those of dirs, added to fsw as
	// they were when added: a folder moved with its parent (`mv etc
	// etc.old; mv etc.new etc`) keeps its watch on the moved folder and
	// tells nothing, and only the parent's watch sees the swap. Best
	// effort: one that cannot be watched leaves the minute's look.
	ancestors map[string]os.FileInfo
	unwatched map[string]error // files whose folder could not be watched, and why
	reported  map[string]fileState
	recheck   chan struct{} // Watch and Rearm ask Run to look again
	// onUnwatched is called, with mu held, each time the set of unwatched
	// files changes.
	onUnwatched func(map[string]error)
	// onFolders is told, with mu held, how many folders are watched after
	// each re-arm.
	onFolders func(n int)

	// writerWait is how long a file a writer still holds open must stay
	// unchanged before it is reported all the same, in nanoseconds.
	writerWait atomic.Int64
	// onWriterWait, set before Run, is told each time a settled change
	// waits for writers to close files.
	onWriterWait func(open []string, wait time.Duration)

	// onSettle, when set (by tests, before Run), is called each time the
	// files have settled, saying whether that was reported as a change.
	onSettle func(changed bool)
}

// DefaultWriterWait is how long a changed file that a writer still holds
// open must stay unchanged before it is reported anyway: the writer may
// never close it. A writer pausing that long in the middle of a file is
// rare; a shorter wait would serve its half-written content.
const DefaultWriterWait = 30 * time.Second

// Change is one settled change of the watched files.
type Change struct {
	// Files are the watched files (absolute paths, sorted) whose content
	// differs from what was last reported: changed, created or deleted.
	Files []string
	// Open are files that a writer still held open when the change was
	// reported, after they had stayed unchanged for the writer wait: their
	// content may be incomplete. Empty in the usual case.
	Open []string
}

// rearmInterval is how often Run re-arms and looks at the files without
// any event: the kernel drops a watch silently when its file system is
// unmounted, and some changes give no event at all (see Run).
const rearmInterval = time.Minute

// maxArmPasses bounds the passes of one re-arm; each pass after the first
// looks again because a folder appeared or vanished while it armed.
const maxArmPasses = 8

// fileState is a file's content hash, or that it could not be read.
type fileState struct {
	sum     [32]byte
	missing bool
	// irregular: not a regular file (a named pipe), which is neither opened
	// nor read; its state is that it is one.
	irregular bool
}

// NewWatcher returns a Watcher with the given debounce period.
func NewWatcher(debounce time.Duration) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("starting file watcher: %w", err)
	}
	wr, err := newWriters()
	if err != nil {
		fsw.Close()
		return nil, fmt.Errorf("starting file watcher: %w", err)
	}
	w := &Watcher{fsw: fsw, writers: wr, add: fsw.Add, lookEvery: rearmInterval,
		relevant: map[string]bool{}, dirs: map[string]os.FileInfo{}, ancestors: map[string]os.FileInfo{}, unwatched: map[string]error{},
		recheck: make(chan struct{}, 1)}
	w.debounce.Store(int64(debounce))
	w.writerWait.Store(int64(DefaultWriterWait))
	return w, nil
}

// Close stops watching.
func (w *Watcher) Close() error { return errors.Join(w.fsw.Close(), w.writers.close()) }

// SetDebounce sets the quiet period (d > 0), as a reload of
// reload.debounce does. It may be called at any time: the next event is
// debounced by it.
func (w *Watcher) SetDebounce(d time.Duration) {
	if d > 0 {
		w.debounce.Store(int64(d))
	}
}

// SetWriterWait sets how long a changed file that a writer still holds
// open must stay unchanged before it is reported anyway (d > 0; default
// DefaultWriterWait). It may be called at any time.
func (w *Watcher) SetWriterWait(d time.Duration) {
	if d > 0 {
		w.writerWait.Store(int64(d))
	}
}

// OnWriterWait sets fn to be told, once each time, that a settled change
// is not reported because writers still hold open files (absolute paths),
// and how long it waits at most. fn runs on Run's goroutine. Call it
// before Run.
func (w *Watcher) OnWriterWait(fn func(open []string, wait time.Duration)) { w.onWriterWait = fn }

// OnUnwatched sets fn to be told, each time it changes, which files are not
// watched (by absolute path) and why: an empty map once all are watched
// again. fn runs with the Watcher's lock held and must not call it. Set it
// before Watch.
func (w *Watcher) OnUnwatched(fn func(unwatched map[string]error)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onUnwatched = fn
}

// Unwatched returns the files (absolute paths) whose folder could not be
// watched at the last re-arm, and why.
func (w *Watcher) Unwatched() map[string]error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.unwatched)
}

// Watch replaces the set of watched files and re-arms. known holds the
// content hashes the caller has already applied (by path); a change since
// then, even one made before the folders were watched, is signalled by the
// check Watch schedules. Files not in known count as applied as they are
// now. The error joins the reasons files could not be watched.
func (w *Watcher) Watch(files []string, known map[string][32]byte) error {
	var errs []error
	abs := make([]string, 0, len(files))
	for _, f := range files {
		a, err := filepath.Abs(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		abs = append(abs, a)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.files, w.set = abs, abs
	w.arm()
	for _, f := range slices.Sorted(maps.Keys(w.unwatched)) {
		errs = append(errs, w.unwatched[f])
	}
	knownAbs := map[string][32]byte{}
	for p, sum := range known {
		if a, err := filepath.Abs(p); err == nil {
			knownAbs[a] = sum
		}
	}
	w.reported = make(map[string]fileState, len(abs))
	for _, a := range abs {
		if sum, ok := knownAbs[a]; ok && !Irregular(a) {
			w.reported[a] = fileState{sum: sum}
		} else {
			w.reported[a] = hashFile(a)
		}
	}
	w.askRecheck()
	return errors.Join(errs...)
}

// Rearm watches the folders of the files as they are now, keeping what has
// been reported: a reload that failed calls it, so that a folder that came
// back is watched although nothing was applied. A change made while a
// folder was not watched is reported by the check Rearm then schedules.
func (w *Watcher) Rearm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.arm() {
		w.askRecheck()
	}
}

// Also adds files to those watched, keeping what has been reported of the
// others, until the next Watch sets the files anew. They replace those the
// call before added (Watch's stay): a reload reads the configuration
// anew, and the files it names now are those whose edits matter, so the
// files watched stay those of the state served and of the last
// configuration read, however many reloads fail in between (a
// configuration written with a new list name each time, every one
// added for good, had each hashed at every look). A reload that was not
// applied calls it with the files its configuration names, so that a file
// that configuration named before it existed (a new list, a new range
// file, in a folder that may not exist yet either: its nearest existing
// ancestor is watched meanwhile) is seen when it appears, and an edit of
// one it read (a list whose content failed the reload, or an allow list a
// guard held) is seen when made. known holds, as for Watch, the content
// hashes the reload read, where it read them all (a held reload). An
// added file not in known that is missing is reported when it appears;
// one that is there is reported, as a change: the reload may have read it
// before its last write. Either way the files are looked at once more, a
// debounce away: an event before a file is watched goes unheard (its
// folder watched for another file, it was not about a watched one), and a
// write after the reload's read (the known hash), or a file created after
// its Stat here, would otherwise wait for the minute's look and then the
// writer wait, as a change no event told of.
func (w *Watcher) Also(files []string, known map[string][32]byte) {
	knownAbs := map[string][32]byte{}
	for p, sum := range known {
		if a, err := filepath.Abs(p); err == nil {
			knownAbs[a] = sum
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	watched := slices.Clone(w.set)
	// Run reads reported outside mu: it is replaced, never written to.
	reported := maps.Clone(w.reported)
	if reported == nil {
		reported = map[string]fileState{}
	}
	for _, f := range files {
		a, err := filepath.Abs(f)
		if err != nil || slices.Contains(watched, a) {
			continue
		}
		watched = append(watched, a)
		if slices.Contains(w.files, a) {
			continue // added before: what has been reported of it stands
		}
		sum, ok := knownAbs[a]
		switch _, err := os.Stat(a); {
		case Irregular(a):
			reported[a] = fileState{irregular: true} // not read to compare, as Watch has it
		case ok:
			reported[a] = fileState{sum: sum}
		case err != nil:
			reported[a] = fileState{missing: true}
		} // else not in reported: the look reports it
	}
	if slices.Equal(watched, w.files) {
		return
	}
	for p := range reported {
		if !slices.Contains(watched, p) {
			delete(reported, p) // dropped: if added again, looked at anew
		}
	}
	w.files, w.reported = watched, reported
	w.arm()
	w.askRecheck()
}

func (w *Watcher) askRecheck() {
	select {
	case w.recheck <- struct{}{}:
	default:
	}
}

// arm makes the watched folders match the files as they are now, and
// reports whether it started watching a folder (so a change made before
// may have gone unseen). w.mu must be held.
func (w *Watcher) arm() (added bool) {
	for range maxArmPasses {
		again, addedNow := w.armPass()
		added = added || addedNow
		if !again {
			break
		}
	}
	if w.onFolders != nil {
		w.onFolders(len(w.dirs))
	}
	return added
}

// OnFolders sets fn to be told how many folders are watched after every
// re-arm (a count that drops to 0 means edits go unseen). fn runs with the
// Watcher's lock held and must not call it. Set it before Watch.
func (w *Watcher) OnFolders(fn func(n int)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onFolders = fn
}

// armPass is one pass of arm. It reports whether to look again: a folder
// was added, and another may have appeared on the way to a file before
// the watch began, or a folder vanished while it was armed.
func (w *Watcher) armPass() (again, added bool) {
	relevant := map[string]bool{}
	want := map[string][]string{} // folder to watch: the files that need it
	for _, f := range w.files {
		for _, p := range symlinkChain(f) {
			relevant[p] = true
			dir := nearestDir(filepath.Dir(p), relevant)
			relevant[dir] = true // its own deletion or move is reported by its name
			if !slices.Contains(want[dir], f) {
				want[dir] = append(want[dir], f)
			}
		}
	}
	watching := map[string]bool{}
	for _, d := range w.fsw.WatchList() {
		watching[d] = true
	}
	unwatched := map[string]error{}
	for dir, files := range want {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			again = true // gone since nearestDir saw it
			continue
		}
		if old, ok := w.dirs[dir]; ok && watching[dir] && os.SameFile(old, fi) {
			continue
		}
		if watching[dir] {
			_ = w.fsw.Remove(dir) // another folder took the name: drop the old one's watch
		}
		w.writers.remove(dir)
		delete(w.dirs, dir)
		err = w.add(dir)
		if err == nil {
			if err = w.writers.add(dir); err != nil {
				_ = w.fsw.Remove(dir) // half watched is not watched: say so
			}
		}
		if err != nil {
			for _, f := range files {
				unwatched[f] = fmt.Errorf("%s: not watched: watching %s: %w", f, dir, err)
			}
			continue
		}
		w.dirs[dir] = fi
		again, added = true, true
	}
	above := map[string]bool{} // folders above those of want, each path on the way to one relevant
	for dir := range want {
		for parent, child := filepath.Dir(dir), dir; parent != child; parent, child = filepath.Dir(parent), parent {
			relevant[child] = true // its rename or deletion is an event of parent's watch
			if _, ok := want[parent]; !ok {
				above[parent] = true
			}
		}
	}
	for dir := range w.dirs {
		if _, ok := want[dir]; !ok {
			if !above[dir] {
				_ = w.fsw.Remove(dir) // the folder came back, or no file needs it
			}
			w.writers.remove(dir)
			delete(w.dirs, dir)
		}
	}
	for dir := range w.ancestors {
		if !above[dir] {
			if _, ok := want[dir]; !ok {
				_ = w.fsw.Remove(dir)
			}
			delete(w.ancestors, dir)
		}
	}
	for dir := range above {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			continue // gone: the folders below it are too, and the pass after looks again
		}
		if old, ok := w.ancestors[dir]; ok && watching[dir] && os.SameFile(old, fi) {
			continue
		}
		if watching[dir] {
			_ = w.fsw.Remove(dir) // another folder took the name, or it was a folder of files: watch it anew
		}
		delete(w.ancestors, dir)
		if w.add(dir) == nil {
			w.ancestors[dir] = fi
		}
	}
	w.relevant = relevant
	if !sameErrors(w.unwatched, unwatched) {
		w.unwatched = unwatched
		if w.onUnwatched != nil {
			w.onUnwatched(maps.Clone(unwatched))
		}
	}
	return again, added
}

// nearestDir returns dir if it is a folder, else its nearest ancestor that
// is, marking each missing path on the way in relevant: its creation is
// what the ancestor's watch waits for.
func nearestDir(dir string, relevant map[string]bool) string {
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		relevant[dir] = true
		dir = parent
	}
}

func sameErrors(a, b map[string]error) bool {
	return maps.EqualFunc(a, b, func(x, y error) bool { return x.Error() == y.Error() })
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
// held in memory for it. A file that is not regular (a named pipe) is not
// opened, let alone read: what the watcher read of a pipe the reload would
// not get, and opening it releases a writer waiting in open(2) into a pipe
// closed a moment later. Its state is that it is not regular (irregular),
// which Watch reports as applied too: a pipe's content cannot be compared.
func hashFile(path string) fileState {
	if Irregular(path) {
		return fileState{irregular: true}
	}
	f, err := Open(path)
	if err != nil {
		return fileState{missing: true}
	}
	defer f.Close()
	h := sha256.New()
	if !f.Regular() {
		return fileState{irregular: true} // swapped in since the Stat
	}
	if _, err := io.Copy(h, f); err != nil {
		return fileState{missing: true}
	}
	var st fileState
	h.Sum(st.sum[:0])
	return st
}

// Irregular reports whether path (its symlinks followed) is a file that is
// not regular and not a folder: a named pipe, a device.
func Irregular(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.Mode().IsRegular() && !fi.IsDir()
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
// the files' content has changed and settled: stable over a debounce
// period, and no watched file held open by a writer that modified it (or,
// for a writer that never closes it, unchanged for the writer wait).
// changed may call Watch. Watch errors from the operating system (such as
// a queue overflow) are treated as a possible change. Run re-arms before
// each hash and once a rearmInterval, when it also hashes the files: a
// content other than the one last reported is looked at as after an
// event, and reported once unchanged for the writer wait (unseen). That
// takes, within a look, a change no event told of: a file
// on a file system inotify does not see changed by another machine (NFS,
// SMB, FUSE: fsnotify's documented limit), a folder that could not be
// watched (OnUnwatched), or a read that failed for a moment (out of file
// descriptors) and was reported as the file missing, whose reload then
// failed. CoreDNS's hosts plugin looks every 5 s, Blocky at its refresh.
func (w *Watcher) Run(ctx context.Context, changed func(Change)) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	rearm := time.NewTicker(w.lookEvery)
	defer rearm.Stop()
	var pending map[string]fileState // hashes at the last quiet tick
	var pendingAt time.Time          // when pending was hashed first
	waiting := false                 // a settled change waits for writers; told once
	// unseen says a look found the change, no event: no writer of it can
	// be known (another machine's, on NFS; a folder not watched), and it
	// is reported only once unchanged for the writer wait, as a change a
	// writer never closes is; a quiet debounce alone would apply a file
	// such a writer paused in.
	unseen := false
	arm := func() { timer.Reset(time.Duration(w.debounce.Load())) }
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
		case <-w.writers.closedC():
			// A writer closed a file: look again now, keeping what was
			// hashed, so that settled content is reported at once. Or the
			// writer watch's queue overflowed, and /proc showed no writer:
			// one that opened a file among the events lost is unknown,
			// and a change waits for the writer wait, as an unseen one
			// (the look's heldOpen may read the overflow first).
			if w.writers.takeBlindOverflow() {
				pending, unseen = nil, true
			}
			arm()
		case <-rearm.C:
			w.mu.Lock()
			added := w.arm()
			files, reported := w.files, w.reported
			w.mu.Unlock()
			// A look already under way (pending) or waiting for a writer
			// hashes the files itself.
			if added {
				pending = nil
				arm()
			} else if pending == nil && !waiting && len(changedFiles(hashFiles(files), reported)) > 0 {
				pending, unseen = nil, true
				arm()
			}
		case <-timer.C:
			// Re-arm first: a change made before a folder is watched
			// again is in the hash that follows, one made after is an event.
			w.mu.Lock()
			w.arm()
			files, reported := w.files, w.reported
			relevant := slices.Collect(maps.Keys(w.relevant))
			w.mu.Unlock()
			now := hashFiles(files)
			if pending == nil || !sameStates(now, pending) {
				pending, pendingAt = now, time.Now() // not settled yet: look again after a quiet period
				arm()
				continue
			}
			if wait := time.Duration(w.writerWait.Load()) - time.Since(pendingAt); unseen && wait > 0 {
				timer.Reset(wait)
				continue
			}
			change := Change{Files: changedFiles(now, reported)} // none: touched, rewritten with the same bytes, or chmod
			if len(change.Files) > 0 {
				open, last := w.writers.heldOpen(relevant)
				if w.writers.takeBlindOverflow() {
					// heldOpen read an overflow /proc showed no writer
					// for: look again, as at the signal below.
					pending, unseen = nil, true
					arm()
					continue
				}
				if len(open) > 0 {
					slices.Sort(open)
					if wait := time.Duration(w.writerWait.Load()) - time.Since(last); wait > 0 {
						if !waiting && w.onWriterWait != nil {
							w.onWriterWait(open, wait)
						}
						waiting = true
						timer.Reset(wait) // a close, or a write, looks again sooner
						continue
					}
					w.writers.forget(open) // given up on; a later write holds them again
					change.Open = open
				}
			}
			pending, waiting, unseen = nil, false, false
			if len(change.Files) > 0 {
				w.mu.Lock()
				w.reported = now
				w.mu.Unlock()
				changed(change)
			}
			if w.onSettle != nil {
				w.onSettle(len(change.Files) > 0)
			}
		}
	}
}

// changedFiles lists, sorted, the files whose state in now differs from
// reported.
func changedFiles(now, reported map[string]fileState) []string {
	var out []string
	for f, st := range now {
		if old, ok := reported[f]; !ok || old != st {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// ErrBeingWritten marks files that were still being written when a wait
// for their content to be complete ran out.
var ErrBeingWritten = errors.New("still being written")

// UnsettledFile is a file Unsettled found that may not have been read
// complete, and why, for an error naming it.
type UnsettledFile struct {
	File string
	// Why is "it changed since it was read", or "a writer holds it open"
	// and the processes /proc names as writing it.
	Why string
}

// Unsettled returns, sorted by file, those of the files in sums (each
// with the content hash it was read with) that may not have been read
// complete: their content is not that any more (changed, or gone, since),
// or a writer holds the file open now (as far as w knows; w may be nil).
// Run and WaitComplete find the files complete before a reload reads
// them, but a writer may start on one in between (the reload reads after
// the others have been parsed, a second or more behind a large list):
// what the reload read of it may be a file caught mid-write, and is not
// to be applied. A file that is not regular (a named pipe) is left out:
// it is read once, to its writer's end, and cannot be compared.
func Unsettled(w *Watcher, sums map[string][32]byte) []UnsettledFile {
	var out []UnsettledFile
	for p, sum := range sums {
		a, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		st := hashFile(a)
		switch {
		case st.irregular:
		case st.missing || st.sum != sum:
			out = append(out, UnsettledFile{File: p, Why: "it changed since it was read"})
		case w != nil:
			if open := w.writers.openNow(symlinkChain(a), time.Duration(w.writerWait.Load())); len(open) > 0 {
				out = append(out, UnsettledFile{File: p, Why: "a writer holds it open" + holdersOf([]string{a})})
			}
		}
	}
	slices.SortFunc(out, func(x, y UnsettledFile) int { return strings.Compare(x.File, y.File) })
	return out
}

// holdersOf says which processes hold files open for writing, for an
// error about them: " (by pid N (command), …)", or nothing when /proc
// names none (another user's process, a writer gone since).
func holdersOf(files []string) string {
	var resolved []string
	for _, f := range files {
		chain := symlinkChain(f)
		resolved = append(resolved, chain[len(chain)-1])
	}
	if h := Holders(resolved); len(h) > 0 {
		return " (by " + strings.Join(h, ", ") + ")"
	}
	return ""
}

// WaitComplete waits until files are complete: none is held open by a
// writer that modified it (as far as w knows; w may be nil when nothing is
// watched) and their content is the same twice, quiet apart. A forced
// reload calls it so that it never applies a file caught mid-write. After
// limit it gives up with an error wrapping ErrBeingWritten that names the
// files; it returns ctx's error if ctx ends first.
func WaitComplete(ctx context.Context, w *Watcher, files []string, quiet, limit time.Duration) error {
	return waitComplete(ctx, func(chain []string) []string {
		if w == nil {
			return nil
		}
		return w.writers.openNow(chain, time.Duration(w.writerWait.Load()))
	}, files, quiet, limit)
}

// WaitCompleteUnwatched is WaitComplete before any Watcher runs, at
// start: the writers are the processes /proc shows holding one of the
// files open for writing (see Watcher), a file unchanged for writerWait
// not counted, as a Watcher gives up on a writer that never closes; it
// gives up itself after writerWait. serve waits so for a configuration
// that did not parse at its first read (it may have been caught
// mid-write by a writer /proc does not show).
func WaitCompleteUnwatched(ctx context.Context, files []string, quiet, writerWait time.Duration) error {
	return waitComplete(ctx, func(chain []string) []string { return writingFor(chain, writerWait) }, files, quiet, writerWait)
}

// WaitUnheld waits, before any Watcher runs, until no process /proc shows
// holds one of files open for writing (a file unchanged for writerWait
// not counted, as in WaitCompleteUnwatched), looking every poll, for up
// to writerWait. After that it gives up with an error wrapping
// ErrBeingWritten that names the files and their writers; it returns
// ctx's error if ctx ends first. It does not wait for a quiet period:
// ReadSteady checks the content after reading it.
func WaitUnheld(ctx context.Context, files []string, poll, writerWait time.Duration) error {
	_, chain, err := absChains(files)
	if err != nil {
		return err
	}
	_, err = waitUnheld(ctx, chain, max(poll, 10*time.Millisecond), writerWait, time.Now().Add(writerWait))
	return err
}

// waitUnheld is WaitUnheld for every path on the way to the files, until
// deadline; held reports whether a writer was found at all.
func waitUnheld(ctx context.Context, chain []string, poll, writerWait time.Duration, deadline time.Time) (held bool, err error) {
	for {
		open := writingFor(chain, writerWait)
		if len(open) == 0 {
			return held, nil
		}
		held = true
		if !time.Now().Before(deadline) {
			slices.Sort(open)
			return held, fmt.Errorf("%s: %w: a writer still holds it open after %s%s", strings.Join(slices.Compact(open), ", "), ErrBeingWritten, writerWait, holdersOf(open))
		}
		if err := sleepCtx(ctx, min(poll, max(time.Until(deadline), time.Millisecond))); err != nil {
			return held, err
		}
	}
}

// ReadSteady calls read, at start (before any Watcher runs), until what
// it read of the files it names was read complete, and returns how long
// it waited before the read that stood. read reads the files and returns
// the content hash it read each one with, by path (relative paths are
// taken from the working folder); files are those the first read will
// read, and a later read may read others (a configuration read again).
// waited is 0 when the first read stood and no writer was waited for.
// A read stands when, for every file it read:
//   - no process /proc shows held it open for writing before the read
//     (a file unchanged for writerWait aside; while one does, ReadSteady
//     waits) nor does once the read is done and quiet has passed since
//     it began;
//   - it was not written to from just before the read until quiet or
//     more after the read began and the read was done (its size and
//     modification time), and its content then was the content read.
//
// The quiet period runs while the files are parsed, where a wait for it
// before the read (WaitCompleteUnwatched) added it to every start: a
// million-entry list takes longer to read than the default debounce.
// A file that is not regular (a named pipe) is read once, to its
// writer's end, and not compared. After writerWait, ReadSteady gives
// up: the last read stands, and the error wraps ErrBeingWritten, naming
// the files. It returns read's error as soon as read fails, and ctx's if
// ctx ends first. Before, dnsfence started while a list was being written
// (a download, a generator that writes in pieces and pauses) read and
// served its first half until the writer was done: every name after the
// cut unblocked, with nothing logged and /readyz ready, since a first
// load has nothing to measure a shrink against.
func ReadSteady(ctx context.Context, files []string, quiet, writerWait time.Duration, read func() (map[string][32]byte, error)) (waited time.Duration, err error) {
	start := time.Now()
	deadline := start.Add(writerWait)
	quiet = max(quiet, 10*time.Millisecond)
	for again := false; ; again = true {
		abs, chain, err := absChains(files)
		if err != nil {
			return 0, err
		}
		held, err := waitUnheld(ctx, chain, quiet, writerWait, deadline)
		if err != nil && ctx.Err() != nil {
			return 0, err
		}
		began := time.Now()
		if held || again {
			waited = began.Sub(start)
		}
		before := statFiles(abs)
		sums, err := read()
		if err != nil {
			return 0, err
		}
		if err := sleepCtx(ctx, time.Until(began.Add(quiet))); err != nil {
			return 0, err
		}
		files = slices.Collect(maps.Keys(sums))
		moved := unsteady(before, sums, writerWait)
		if len(moved) == 0 {
			return waited, nil
		}
		if !time.Now().Before(deadline) {
			return waited, fmt.Errorf("%s: %w: still changing or held open by a writer after %s%s", strings.Join(moved, ", "), ErrBeingWritten, writerWait, holdersOf(moved))
		}
	}
}

// unsteady lists, sorted, the files of sums (each with the hash it was
// read with) that may not have been read complete: modified since just
// before the read (before, by absolute path: another file, size or
// modification time), or holding other content than was read, or held
// open by a writer now (writingFor). Named pipes are left out. The
// content is compared after the read only: a hash before it too cost a
// million-entry list's start 35-50 ms, and the modification time says
// whether it was written to meanwhile (where it may lag, as on NFS, the
// content read is still the content there).
func unsteady(before map[string]os.FileInfo, sums map[string][32]byte, writerWait time.Duration) []string {
	var out, chain []string
	for p, sum := range sums {
		a, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		then, known := before[a]
		if known && then != nil && !then.Mode().IsRegular() {
			continue
		}
		now := hashFile(a)
		switch {
		case now.irregular:
		case !known || then == nil || now.missing || now.sum != sum || !sameStat(then, a):
			out = append(out, p)
		default:
			chain = append(chain, symlinkChain(a)...)
		}
	}
	if open := writingFor(chain, writerWait); len(open) > 0 {
		// Which of the files a writer holds: writingFor names paths on
		// the way to them, the sums the configured ones.
		for p := range sums {
			if a, err := filepath.Abs(p); err == nil && slices.ContainsFunc(symlinkChain(a), func(c string) bool { return slices.Contains(open, c) }) {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// statFiles stats each of files (symlinks followed), by path: nil for
// one that cannot be.
func statFiles(files []string) map[string]os.FileInfo {
	out := make(map[string]os.FileInfo, len(files))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			fi = nil
		}
		out[f] = fi
	}
	return out
}

// sameStat reports whether path is still the file then describes, of the
// same size and modification time: not written to since.
func sameStat(then os.FileInfo, path string) bool {
	now, err := os.Stat(path)
	return err == nil && os.SameFile(then, now) && then.Size() == now.Size() && then.ModTime().Equal(now.ModTime())
}

// absChains returns files as absolute paths, and every path on the way
// to each (symlinkChain): a writer is seen on the real one.
func absChains(files []string) (abs, chain []string, err error) {
	for _, f := range files {
		a, err := filepath.Abs(f)
		if err != nil {
			return nil, nil, err
		}
		abs = append(abs, a)
		chain = append(chain, symlinkChain(a)...)
	}
	return abs, chain, nil
}

// sleepCtx sleeps for d, or until ctx ends, and returns ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitComplete is WaitComplete with open saying which of the paths (every
// path on the way to each file) a writer holds open now.
func waitComplete(ctx context.Context, open func(chain []string) []string, files []string, quiet, limit time.Duration) error {
	abs, chain, err := absChains(files)
	if err != nil {
		return err
	}
	quiet = max(quiet, 10*time.Millisecond)
	deadline := time.Now().Add(limit)
	before := hashFiles(abs)
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		now := hashFiles(abs)
		open := open(chain)
		if len(open) == 0 && sameStates(now, before) {
			return nil
		}
		if !time.Now().Before(deadline) {
			if len(open) > 0 {
				slices.Sort(open)
				return fmt.Errorf("%s: %w: a writer still holds it open after %s%s", strings.Join(slices.Compact(open), ", "), ErrBeingWritten, limit, holdersOf(open))
			}
			return fmt.Errorf("%s: %w: its content still changed after %s", strings.Join(changedFiles(now, before), ", "), ErrBeingWritten, limit)
		}
		before = now
		timer.Reset(min(quiet, max(time.Until(deadline), time.Millisecond)))
	}
}
