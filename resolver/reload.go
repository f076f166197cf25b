package resolver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"go.uber.org/zap"
)

// ErrHeld marks a reload held by a fail-closed guard: the change would
// widen what government devices can reach at once, which is almost always
// a broken write. SIGHUP accepts it.
var ErrHeld = errors.New("change held")

// ErrShrink marks a reload held because a list lost too many entries at
// once.
var ErrShrink = fmt.Errorf("%w: list shrank more than reload.max_shrink allows", ErrHeld)

// ReloadStatus is the outcome of the last reload, for metrics and health.
type ReloadStatus struct {
	Time        time.Time
	OK          bool
	Err         error
	LastSuccess time.Time
	Successes   uint64
	Failures    uint64
}

// Reloader rebuilds the snapshot when the configuration or any file it names
// changes, and publishes it only when everything loaded: anything wrong keeps
// the last good state. It watches through a blocklist.Watcher; SIGHUP calls
// Reload directly.
type Reloader struct {
	handler *Handler
	load    func() (*Config, error) // reads the configuration anew
	log     *zap.Logger

	mu      sync.Mutex // serialises reloads from the watcher and SIGHUP
	watcher *blocklist.Watcher
	// newWatcher is blocklist.NewWatcher; tests make it fail.
	newWatcher func(debounce time.Duration) (*blocklist.Watcher, error)
	// unwatched is the last set of files reported as not watched, for
	// logging changes only; guarded by unwatchedMu.
	unwatchedMu sync.Mutex
	unwatched   []string

	// AfterReload, when set, runs after each successful reload (main tunes
	// the garbage collector there). Set it before Watch or Reload.
	AfterReload func(*Snapshot)

	status atomic.Pointer[ReloadStatus]
}

// NewReloader returns a Reloader for the handler's state. load reads the
// configuration (the same way startup did).
func NewReloader(log *zap.Logger, h *Handler, load func() (*Config, error)) *Reloader {
	r := &Reloader{handler: h, load: load, log: log, newWatcher: blocklist.NewWatcher}
	r.status.Store(&ReloadStatus{Time: time.Now(), OK: true, LastSuccess: time.Now()})
	return r
}

// Status is the outcome of the last reload.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

// watchedFiles are the configuration file and every file it names.
func watchedFiles(s *Snapshot) []string {
	if s.Config.Embedded {
		return nil
	}
	files := []string{s.Config.File}
	for p := range s.Lists {
		files = append(files, p)
	}
	for p := range s.Ranges {
		files = append(files, p)
	}
	for _, pc := range s.Config.Policies {
		for _, f := range slices.Concat(pc.ClientFiles, pc.Block, pc.Allow) {
			files = append(files, s.Config.Path(f))
		}
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// appliedSums are the content hashes a snapshot was built from, so that a
// file that changed while it was built is seen as changed.
func appliedSums(s *Snapshot) map[string][32]byte {
	sums := map[string][32]byte{s.Config.File: s.Config.Sum}
	for p, l := range s.Lists {
		sums[p] = l.Sum()
	}
	for p, rf := range s.Ranges {
		sums[p] = rf.Sum
	}
	return sums
}

// Watch reloads on every settled change of the watched files until ctx
// ends. With the embedded default there is nothing to watch. Files that
// cannot be watched (the folder's watch failed, or watching stopped) are
// logged at warn, counted in dnsfence_unwatched_files and named by
// /readyz, so a lost watch is never silent.
func (r *Reloader) Watch(ctx context.Context) error {
	snap := r.handler.Snapshot()
	if snap.Config.Embedded {
		return nil
	}
	w, err := r.newWatcher(snap.Config.Reload.Debounce)
	if err != nil {
		r.allUnwatched(snap, err)
		return err
	}
	defer w.Close()
	w.OnUnwatched(r.setUnwatched)
	r.mu.Lock()
	r.watcher = w
	// Files not watched are reported through OnUnwatched from now on;
	// publish where this watcher starts.
	_ = w.Watch(watchedFiles(snap), appliedSums(snap))
	r.setUnwatched(w.Unwatched())
	r.mu.Unlock()
	w.Run(ctx, func() {
		if err := r.Reload(false); err != nil {
			return // logged and counted by Reload
		}
	})
	r.mu.Lock()
	r.watcher = nil
	r.mu.Unlock()
	if ctx.Err() == nil {
		err := errors.New("the file watcher stopped")
		r.allUnwatched(r.handler.Snapshot(), err)
		return err
	}
	return nil
}

// allUnwatched reports every file of snap as not watched, for err.
func (r *Reloader) allUnwatched(snap *Snapshot, err error) {
	files := map[string]error{}
	for _, f := range watchedFiles(snap) {
		files[f] = err
	}
	r.setUnwatched(files)
}

// setUnwatched publishes the files that are not watched, by path, with the
// reason for each: for /readyz, the metric, and a warning when the set
// changes.
func (r *Reloader) setUnwatched(files map[string]error) {
	names := slices.Sorted(maps.Keys(files))
	r.handler.unwatched.Store(&names)
	r.handler.metrics.setUnwatched(len(names))
	r.unwatchedMu.Lock()
	defer r.unwatchedMu.Unlock()
	if slices.Equal(names, r.unwatched) {
		return
	}
	was := r.unwatched
	r.unwatched = names
	if len(names) == 0 {
		r.log.Info("every file is watched again", zap.Strings("files", was))
		return
	}
	errs := make([]error, 0, len(names))
	for _, n := range names {
		errs = append(errs, files[n])
	}
	r.log.Warn("files not watched: their edits are not applied until they are watched again or SIGHUP",
		zap.Strings("files", names), zap.Error(errors.Join(errs...)))
}

// Reload builds a new snapshot from the configuration and the files it
// names and publishes it. force accepts a shrink that the max_shrink guard
// would hold (SIGHUP). On any error the running snapshot stays.
func (r *Reloader) Reload(force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	prev := r.handler.Snapshot()
	next, err := r.build(prev, force)
	status := *r.status.Load()
	status.Time = time.Now()
	if err != nil {
		status.OK, status.Err = false, err
		status.Failures++
		r.status.Store(&status)
		r.handler.metrics.reloaded(err)
		r.log.Error("reload failed, keeping the last good state", zap.Error(err))
		if r.watcher != nil {
			// A folder that came back is watched although nothing was
			// applied, so that the fix is seen.
			r.watcher.Rearm()
		}
		return err
	}
	r.handler.Store(next)
	r.handler.metrics.reloaded(nil)
	if prev.Forwarder != next.Forwarder {
		prev.Forwarder.Close() // stop its probes; queries in flight finish
	}
	status.OK, status.Err, status.LastSuccess = true, nil, status.Time
	status.Successes++
	r.status.Store(&status)
	r.logChanges(prev, next, time.Since(start))
	if r.AfterReload != nil {
		r.AfterReload(next)
	}
	if r.watcher != nil {
		// New files in the configuration, or a swapped symlink, change what
		// is watched; a folder that came back is watched anew. Files not
		// watched are reported through OnUnwatched.
		_ = r.watcher.Watch(watchedFiles(next), appliedSums(next))
	}
	return nil
}

func (r *Reloader) build(prev *Snapshot, force bool) (*Snapshot, error) {
	cfg, err := r.load()
	if err != nil {
		return nil, err
	}
	next, err := BuildSnapshot(cfg, prev)
	if err != nil {
		return nil, err
	}
	for _, w := range next.Warnings {
		r.log.Warn("skipped bad lines", zap.Error(w))
	}
	if maxShrink := *cfg.Reload.MaxShrink; maxShrink > 0 && !force {
		var errs []error
		for path, l := range next.Lists {
			old, ok := prev.Lists[path]
			if !ok || old == l {
				continue
			}
			if float64(l.Len()) < float64(old.Len())*(1-maxShrink) {
				errs = append(errs, fmt.Errorf("%s: %w: %d to %d entries (max_shrink %g); SIGHUP accepts it",
					path, ErrShrink, old.Len(), l.Len(), maxShrink))
			}
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
	}
	r.warnRestartNeeded(prev.Config, cfg)
	return next, nil
}

// warnRestartNeeded logs settings that only a restart applies: sockets are
// opened once.
func (r *Reloader) warnRestartNeeded(old, cfg *Config) {
	if !slices.Equal(old.Listen, cfg.Listen) {
		r.log.Warn("listen changed: restart to apply, still serving the old addresses",
			zap.Strings("running", old.Listen), zap.Strings("configured", cfg.Listen))
	}
	if old.Limits.TCPConnections != cfg.Limits.TCPConnections || old.Limits.UpstreamInflight != cfg.Limits.UpstreamInflight {
		r.log.Warn("limits.tcp_connections and limits.upstream_inflight changed: restart to apply",
			zap.Int("tcp_connections", old.Limits.TCPConnections), zap.Int("upstream_inflight", old.Limits.UpstreamInflight))
	}
	if old.Limits.UDPReceiveBuffer != cfg.Limits.UDPReceiveBuffer || old.Limits.UDPSendBuffer != cfg.Limits.UDPSendBuffer {
		r.log.Warn("limits.udp_receive_buffer or udp_send_buffer changed: restart to apply",
			zap.Int("udp_receive_buffer", old.Limits.UDPReceiveBuffer), zap.Int("udp_send_buffer", old.Limits.UDPSendBuffer))
	}
	if old.HTTPAddr() != cfg.HTTPAddr() {
		r.log.Warn("http changed: restart to apply, still serving the old address",
			zap.String("running", old.HTTPAddr()), zap.String("configured", cfg.HTTPAddr()))
	}
}

// logChanges logs, per list, the entries added and removed and the new hash.
func (r *Reloader) logChanges(prev, next *Snapshot, took time.Duration) {
	paths := make([]string, 0, len(next.Lists))
	for p := range next.Lists {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	changed := 0
	for _, p := range paths {
		l, old := next.Lists[p], prev.Lists[p]
		if l == old {
			continue
		}
		changed++
		added, removed := diffLists(old, l)
		r.log.Info("list reloaded", zap.String(logList, p), zap.Int("entries", l.Len()),
			zap.Int("added", added), zap.Int("removed", removed), zap.String(logListHash, l.Hash()))
	}
	for p, old := range prev.Lists {
		if _, ok := next.Lists[p]; !ok {
			changed++
			r.log.Info("list no longer used", zap.String(logList, p), zap.Int("entries", old.Len()))
		}
	}
	r.log.Info("reloaded", zap.Int("lists_changed", changed), zap.Int("policies", len(next.Policies)),
		zap.Duration("took", took))
}

// diffLists counts entries in l but not in old, and in old but not in l.
func diffLists(old, l *blocklist.List) (added, removed int) {
	if old == nil {
		return l.Len(), 0
	}
	for e := range l.All() {
		if !old.Contains(e.Name) {
			added++
		}
	}
	for e := range old.All() {
		if !l.Contains(e.Name) {
			removed++
		}
	}
	return added, removed
}
