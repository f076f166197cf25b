//go:build linux

package blocklist

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writers knows which files in the folders it watches a writer still holds
// open. The kernel reports every open of a file (IN_OPEN, which does not
// say for what), every modification (IN_MODIFY: a write, or an open with
// O_TRUNC) and every close, telling a close after writing
// (IN_CLOSE_WRITE) from one after reading (IN_CLOSE_NOWRITE). A file is
// held from a modification made while it is open until a close-for-writing,
// or until nothing has it open: a `truncate -s 0`, which modifies a file
// nobody has open, holds nothing. fsnotify v1.10 keeps the open and close
// events to itself, so this is a second inotify instance on the same
// folders.
//
// What it cannot see: a file written through mmap (no IN_MODIFY), a writer
// that opened the file before its folder was watched and that /proc does
// not show (writingNow: another user's process, dnsfence not root), and
// a second writer that has not written yet when the first one closes. For those, and for a
// writer that never closes the file, the Watcher's quiet period stays the
// rule.
type writers struct {
	file *os.File // the inotify instance, read by the goroutine run starts
	// readMu is held by whoever reads the instance and applies what it
	// read (run, sync), so that events are applied in the order queued.
	// It is taken before mu.
	readMu sync.Mutex

	mu   sync.Mutex
	wds  map[int32][]string // watch descriptor: the folders watched through it
	dirs map[string]int32   // folder: its watch descriptor
	// files are the files of the watched folders that are open or held,
	// by absolute path.
	files map[string]*openFile
	// moving holds the state of a file renamed away (IN_MOVED_FROM), by
	// the rename's cookie, until its IN_MOVED_TO.
	moving map[uint32]*openFile
	// closed is signalled when a held file is closed, so that the Watcher
	// looks again at once.
	closed chan struct{}
	done   chan struct{}
	// closing is set by close, so that run stops reading a queue that
	// never empties (see sync) and close does not wait for the flood to
	// end.
	closing atomic.Bool
	// blindOverflow is set when the queue overflowed and /proc showed no
	// writer of the watched folders' files (overflowed), until the Watcher
	// takes it (takeBlindOverflow).
	blindOverflow atomic.Bool
}

// procWriters is writingNow, through which every look for writers in
// /proc goes; tests make it see nothing, as /proc does under the shipped
// systemd unit (ProtectProc=invisible, DynamicUser).
var procWriters = writingNow

// openFile is what is known of one file's openers.
type openFile struct {
	opens int // opens not yet closed, as seen since the folder was watched
	// modified is the time of the last modification made while the file
	// was open; zero when no writer holds it.
	modified time.Time
}

// writerEvents are the events writers asks for on each folder.
const writerEvents = unix.IN_OPEN | unix.IN_MODIFY | unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE | unix.IN_ONLYDIR

// newWriters starts an inotify instance and the goroutine that reads it.
func newWriters() (*writers, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("starting the writer watch: %w", err)
	}
	w := &writers{
		file: os.NewFile(uintptr(fd), "inotify-writers"), // non-blocking: read through the runtime poller
		wds:  map[int32][]string{}, dirs: map[string]int32{}, files: map[string]*openFile{},
		moving: map[uint32]*openFile{}, closed: make(chan struct{}, 1), done: make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// close stops the instance and waits for its goroutine.
func (w *writers) close() error {
	w.closing.Store(true)
	err := w.file.Close()
	<-w.done
	return err
}

// add watches dir for writers.
func (w *writers) add(dir string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.dirs[dir]; ok {
		return nil
	}
	wd, err := w.addWatch(dir)
	if err != nil {
		return fmt.Errorf("watching %s for writers: %w", dir, err)
	}
	w.dirs[dir] = wd
	w.wds[wd] = append(w.wds[wd], dir)
	w.adoptWriters(dir, time.Now())
	return nil
}

// adoptWriters holds the files of dir that a process has open for
// writing now. A writer that opened a file before its folder was watched
// is never seen opening it: a lists folder deleted and made again, and a
// list downloaded into it at once, is watched again only at the next
// re-arm, and the download's first half, stable while the network
// pauses, would be taken for the whole file. w.mu must be held.
func (w *writers) adoptWriters(dir string, now time.Time) int {
	adopted := 0
	for target, n := range procWriters(func(p string) bool { return filepath.Dir(p) == dir }) {
		adopted++
		f := w.files[target]
		if f == nil {
			f = &openFile{}
			w.files[target] = f
		}
		// Its close-for-writing ends it, as for a writer seen opening; the
		// writer wait counts from the file's last change, which is when
		// this writer last wrote, if it wrote at all.
		f.opens += n
		f.modified = now
		if fi, err := os.Stat(target); err == nil && fi.ModTime().Before(now) {
			f.modified = fi.ModTime()
		}
	}
	return adopted
}

// openNow is heldOpen, and, for those of paths whose folder is not
// watched (a list a configuration edit names in a new folder), whether a
// process has them open for writing now: the checks before and after a
// reload reads its files must not take a writer they could not watch for
// none. A file unchanged for wait is not counted, whoever holds it: the
// Watcher applies it then (a writer that never closes it), and one found
// in /proc may never have written at all (a shell's `exec 3>>list`, a tool
// that opens its files read-write), so a SIGHUP waiting for it to close
// would be refused for as long as it runs.
func (w *writers) openNow(paths []string, wait time.Duration) []string {
	w.sync()
	now := time.Now()
	var open []string
	unwatched := map[string]bool{}
	w.mu.Lock()
	for _, p := range paths {
		if f, ok := w.files[p]; ok && !f.modified.IsZero() && now.Sub(f.modified) < wait {
			open = append(open, p)
		}
		if _, ok := w.dirs[filepath.Dir(p)]; !ok {
			unwatched[p] = true
		}
	}
	w.mu.Unlock()
	if len(unwatched) > 0 {
		open = append(open, writingFor(slices.Collect(maps.Keys(unwatched)), wait)...)
	}
	slices.Sort(open)
	return slices.Compact(open)
}

// writingFor returns those of paths that a process /proc shows has open
// for writing now (writingNow), leaving out a file unchanged for wait:
// one found in /proc may never write at all (a shell's `exec 3>>list`).
// A named pipe is left out too: it is read once, to its writer's end,
// and its writer holds it open until then.
func writingFor(paths []string, wait time.Duration) []string {
	want := map[string]bool{}
	for _, p := range paths {
		want[p] = true
	}
	now := time.Now()
	var open []string
	for p := range procWriters(func(p string) bool { return want[p] }) {
		fi, err := os.Stat(p)
		if err == nil && (!fi.Mode().IsRegular() || now.Sub(fi.ModTime()) >= wait) {
			continue
		}
		open = append(open, p)
	}
	return open
}

// writingNow counts, by path, the descriptors open for writing on the
// files that match, as /proc shows them: those of dnsfence's own user's
// processes, or of every process when it runs as root. A writer dnsfence
// may not see stays unseen, and the quiet period rules it.
func writingNow(match func(path string) bool) map[string]int {
	out := map[string]int{}
	writerFDs(match, func(_, path string) bool {
		out[path]++
		return true
	})
	return out
}

// writerInProc reports whether /proc shows a process that has the file
// name of the folder watched as wd open for writing (procWriters; the
// kernel's name of the folder must be one of those it is watched under).
func (w *writers) writerInProc(wd int32, name string) bool {
	return len(procWriters(func(p string) bool {
		return filepath.Base(p) == name && slices.Contains(w.wds[wd], filepath.Dir(p))
	})) > 0
}

// Holders names the processes that have one of paths (absolute, as the
// kernel resolves them: the last of a symlink chain) open for writing
// now, as "pid N (command)", sorted: what an operator told that a file is
// still being written needs to find the writer. Only processes /proc
// shows (writingNow's) are named.
func Holders(paths []string) []string {
	want := map[string]bool{}
	for _, p := range paths {
		want[p] = true
	}
	var out []string
	writerFDs(func(p string) bool { return want[p] }, func(pid, _ string) bool {
		comm, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
		out = append(out, fmt.Sprintf("pid %s (%s)", pid, strings.TrimSpace(string(comm))))
		return false // each process once
	})
	slices.Sort(out)
	return out
}

// writerFDs calls found with each descriptor open for writing on a file
// whose path (absolute, as readlink gives it) matches, that /proc shows:
// its process's pid and the path. found reports whether to go on with
// the rest of that process's descriptors.
func writerFDs(match func(path string) bool, found func(pid, path string) (more bool)) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, proc := range procs {
		if _, err := strconv.Atoi(proc.Name()); err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", proc.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or another user's
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !filepath.IsAbs(target) || !match(target) ||
				!openForWriting(filepath.Join("/proc", proc.Name(), "fdinfo", fd.Name())) {
				continue
			}
			if !found(proc.Name(), target) {
				break
			}
		}
	}
}

// openForWriting reports whether the descriptor whose /proc fdinfo file is
// info was opened for writing (O_WRONLY or O_RDWR).
func openForWriting(info string) bool {
	data, err := os.ReadFile(info)
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&unix.O_ACCMODE != unix.O_RDONLY
		}
	}
	return false
}

func (w *writers) addWatch(dir string) (int32, error) {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return 0, err
	}
	var wd int
	var addErr error
	if err := rc.Control(func(fd uintptr) {
		wd, addErr = unix.InotifyAddWatch(int(fd), dir, writerEvents)
	}); err != nil {
		return 0, err
	}
	return int32(wd), addErr
}

// remove stops watching dir and forgets its files.
func (w *writers) remove(dir string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wd, ok := w.dirs[dir]
	if !ok {
		return
	}
	delete(w.dirs, dir)
	w.wds[wd] = slices.DeleteFunc(w.wds[wd], func(d string) bool { return d == dir })
	if len(w.wds[wd]) == 0 {
		// The same folder under two names shares one watch descriptor:
		// drop it with its last name.
		delete(w.wds, wd)
		if rc, err := w.file.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(wd)) })
		}
	}
	w.forgetDir(dir)
}

// forgetDir drops what is known of the files in dir. w.mu must be held.
func (w *writers) forgetDir(dir string) {
	for p := range w.files {
		if filepath.Dir(p) == dir {
			delete(w.files, p)
		}
	}
}

// overflowed starts again from what /proc shows after the kernel dropped
// events because the queue was full (IN_Q_OVERFLOW: the reader starved
// while thousands of events came): an open, a write or a close may be
// among those lost, so what was known of the files is no guide. A
// writer that truncated a list and paused half way, its open and writes
// dropped, would be held by no one, and the half written list applied
// after a quiet period; a close dropped would hold a file for the writer
// wait. The writers /proc shows hold their files again, as for a folder
// watched anew (adoptWriters); the Watcher is told to look again. When
// /proc shows no writer, it may be blind to them (the shipped systemd
// unit's ProtectProc=invisible and DynamicUser, a Kubernetes sidecar in
// another process namespace): no writer can be known, and the Watcher is
// told so (takeBlindOverflow), to apply a change only once unchanged for
// the writer wait, as one no event named. w.mu must be held.
func (w *writers) overflowed(now time.Time) {
	clear(w.files)
	clear(w.moving)
	adopted := 0
	for dir := range w.dirs {
		adopted += w.adoptWriters(dir, now)
	}
	if adopted == 0 {
		w.blindOverflow.Store(true)
	}
	select {
	case w.closed <- struct{}{}:
	default:
	}
}

// heldOpen returns those of paths that a writer holds open, with the time
// of the latest modification among them, once every event queued before
// it is applied (sync): run lags them by as much as the scheduler lets
// it, by thousands of events after a queue overflow (overflowed), and a
// writer's open not yet read would leave its half written file held by
// no one.
func (w *writers) heldOpen(paths []string) ([]string, time.Time) {
	w.sync()
	w.mu.Lock()
	defer w.mu.Unlock()
	var open []string
	var last time.Time
	for _, p := range paths {
		if f, ok := w.files[p]; ok && !f.modified.IsZero() {
			open = append(open, p)
			if f.modified.After(last) {
				last = f.modified
			}
		}
	}
	return open, last
}

// forget drops paths from the held set: a writer that never closed them
// has been given up on, and a later write marks them again.
func (w *writers) forget(paths []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range paths {
		if f, ok := w.files[p]; ok {
			f.modified = time.Time{}
		}
	}
}

// takeBlindOverflow reports, once, that the queue overflowed and /proc
// showed no writer then (overflowed).
func (w *writers) takeBlindOverflow() bool { return w.blindOverflow.Swap(false) }

// closedC is signalled each time a held file is closed.
func (w *writers) closedC() <-chan struct{} { return w.closed }

// run reads events until the instance is closed.
func (w *writers) run() {
	defer close(w.done)
	rc, err := w.file.SyscallConn()
	if err != nil {
		return
	}
	var buf [eventBuffer]byte
	var rerr error
	// Read returns only once the callback reports done: when the instance
	// broke, or was closed (its error).
	_ = rc.Read(func(fd uintptr) bool {
		rerr = w.drain(int(fd), buf[:], -1)
		return rerr != nil
	})
	// Closed, or broken: files stay as last known, and one held for good
	// falls back to the Watcher's writer wait.
}

// sync applies the events the kernel has queued and run has not read
// yet: a check made after it sees every open and write made before it.
// run reads on its own goroutine, woken by the runtime's poller, and lags
// the writes by as much as the scheduler lets it (milliseconds on busy
// cores): a writer that opened a list with O_TRUNC and wrote its first
// half just before a reload read it was not yet known when Unsettled
// asked, and the half was applied.
//
// It reads only the octets queued when it begins (FIONREAD), not until
// the queue is empty: while other processes open and close files of a
// watched folder faster than events are applied (a tool polling a file
// there, shell loops; thousands a second, the flood that overflows the
// queue), the queue never empties, and heldOpen, openNow and every
// Watcher look waiting on them hung for as long as the flood lasted.
func (w *writers) sync() {
	rc, err := w.file.SyscallConn()
	if err != nil {
		return
	}
	var buf [eventBuffer]byte
	_ = rc.Control(func(fd uintptr) {
		w.readMu.Lock()
		defer w.readMu.Unlock()
		// FIONREAD, TIOCINQ as x/sys/unix names it on Linux: the octets
		// of the events queued.
		queued, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ)
		if err != nil {
			queued = syncFallback
		}
		_ = w.drain(int(fd), buf[:], queued)
	})
}

// syncFallback bounds what sync reads should FIONREAD fail: all the
// events of a full queue (fs.inotify.max_queued_events, 16384 by
// default) and more.
const syncFallback = 16 << 20

// drain reads and applies the events queued on the instance fd, through
// buf, until none is left (nil), the read fails (its error: the instance
// broke), or, for a limit of 0 or more, at least limit octets were read.
// Each read is applied under readMu, so that run and sync apply events
// in the order queued; a drain without a limit (run's) takes readMu one
// read at a time, so that a sync is never kept waiting by a queue that
// never empties. A drain with a limit (sync's) is called with readMu
// held.
func (w *writers) drain(fd int, buf []byte, limit int) error {
	for read := 0; limit < 0 || read < limit; {
		if limit < 0 {
			w.readMu.Lock()
		}
		n, err := unix.Read(fd, buf)
		if err == nil && n > 0 {
			w.events(buf[:n], time.Now())
			read += n
		}
		if limit < 0 {
			w.readMu.Unlock()
			if w.closing.Load() {
				return os.ErrClosed
			}
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return nil
		case err != nil:
			return err
		case n <= 0:
			return nil
		}
	}
	return nil
}

// eventBuffer is the size of a read of the instance: room for many
// events, and for one with the longest name.
const eventBuffer = unix.SizeofInotifyEvent * 256

// events applies the events of one read.
func (w *writers) events(buf []byte, now time.Time) {
	n := len(buf)
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		nameAt := off + unix.SizeofInotifyEvent
		end := min(nameAt+int(ev.Len), n)
		name := unix.ByteSliceToString(buf[nameAt:end])
		w.handle(ev.Wd, ev.Mask, ev.Cookie, name, now)
		off = nameAt + int(ev.Len)
	}
}

// handle applies one event.
func (w *writers) handle(wd int32, mask, cookie uint32, name string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if mask&unix.IN_IGNORED != 0 {
		// The folder went away: its watch is gone, and so are its files.
		for _, dir := range w.wds[wd] {
			delete(w.dirs, dir)
			w.forgetDir(dir)
		}
		delete(w.wds, wd)
		return
	}
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.overflowed(now)
		return
	}
	if name == "" {
		return // an event of the folder itself
	}
	closed := false
	for _, dir := range w.wds[wd] {
		p := filepath.Join(dir, name)
		f := w.files[p]
		switch {
		case mask&unix.IN_OPEN != 0:
			if f == nil {
				f = &openFile{}
				w.files[p] = f
			}
			f.opens++
		case mask&unix.IN_MODIFY != 0:
			if f == nil || f.opens <= 0 && f.modified.IsZero() {
				// Not known to be open, it may still have a writer: one
				// whose open the kernel merged into a reader's (see the
				// closes below), forgotten at that reader's close. /proc
				// tells, once: its open, if still to be read (one with
				// O_TRUNC is reported after the truncation), counts then,
				// and its close-for-writing ends it. Else it is
				// truncate(2), or a writer from before the watch /proc
				// does not show: the quiet period rules.
				if !w.writerInProc(wd, name) {
					break
				}
				if f == nil {
					f = &openFile{}
					w.files[p] = f
				}
			}
			f.modified = now
		case mask&(unix.IN_CLOSE_WRITE|unix.IN_CLOSE_NOWRITE) != 0:
			if f == nil {
				break // opened before the folder was watched
			}
			f.opens--
			// A close after writing ends the writer; the last close of
			// any kind leaves no one to write, unless /proc shows a
			// writer left: the kernel merges an event into the one
			// queued before it when both are the same and unread, so a
			// writer's open and a reader's right after it count as one,
			// and the reader's close looks like the last.
			if !f.modified.IsZero() && f.opens <= 0 && mask&unix.IN_CLOSE_WRITE == 0 && w.writerInProc(wd, name) {
				f.opens = 1 // the writer's, whose close ends it
			}
			if !f.modified.IsZero() && (mask&unix.IN_CLOSE_WRITE != 0 || f.opens <= 0) {
				f.modified = time.Time{}
				closed = true
			}
			if f.opens <= 0 && f.modified.IsZero() {
				delete(w.files, p)
			}
		case mask&unix.IN_MOVED_FROM != 0:
			if f != nil {
				w.moving[cookie] = f
				delete(w.files, p)
			}
		case mask&unix.IN_MOVED_TO != 0:
			// A file renamed in keeps what was known of it under its old
			// name (a writer may still write to it there).
			if m, ok := w.moving[cookie]; ok {
				w.files[p] = m
			} else {
				delete(w.files, p)
			}
		case mask&unix.IN_DELETE != 0:
			delete(w.files, p)
		}
	}
	if mask&unix.IN_MOVED_TO != 0 {
		delete(w.moving, cookie)
	}
	if len(w.moving) > 64 {
		// A file renamed out of the watched folders never comes back
		// under its cookie; do not keep them.
		clear(w.moving)
	}
	if closed {
		select {
		case w.closed <- struct{}{}:
		default:
		}
	}
}
