package resolver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/gaissmai/bart"
	"go.uber.org/zap"
)

// ErrHeld marks a reload held by a fail-closed guard: the change would
// widen what government devices can reach at once, which is almost always
// a broken write. SIGHUP accepts it.
var ErrHeld = errors.New("change held")

// ErrShrink marks a reload held because a list lost too many entries at
// once.
var ErrShrink = fmt.Errorf("%w: list shrank more than reload.max_shrink allows", ErrHeld)

// ErrRangeShrink marks a reload held because a client range file lost too
// many ranges, or too many of the addresses its ranges cover, at once.
var ErrRangeShrink = fmt.Errorf("%w: client range file shrank more than reload.max_shrink allows", ErrHeld)

// ErrRangeBadLine marks a reload held because a client range file's
// edit added a bad line and lost addresses it covered: a range written
// wrong (`10.1.0.0/255.255.0.0`) is skipped as a bad line, and its devices
// leave the policy however few they are of the file.
var ErrRangeBadLine = fmt.Errorf("%w: client range file lost addresses beside a new bad line", ErrHeld)

// ErrRemoved marks a reload held because the configuration takes something
// away from a blocking policy: the policy itself, its blocking (no block
// list left, or action log), a block list, an inline range or a client
// file. A truncated configuration does exactly this.
var ErrRemoved = fmt.Errorf("%w: the configuration takes protection away from a blocking policy", ErrHeld)

// ErrIncomplete marks a forced reload refused because a file was still
// being written when the wait for it ran out.
var ErrIncomplete = fmt.Errorf("%w: a file is still being written", ErrHeld)

// ErrNoCopy marks a forced reload refused because a guard held its
// change, measured with a remote list the configuration adds as empty:
// the list's source has no copy yet (unreachable, or slower than
// StartWait). SIGHUP accepts what the guards hold once they were shown
// the lists it will serve.
var ErrNoCopy = fmt.Errorf("%w: a remote list the configuration adds has no copy yet", ErrHeld)

// ErrReadMidWrite marks a reload that applied nothing because a file
// changed, or a writer held it open, while the reload read the files: what
// it read may be a file caught mid-write. A reload of the watcher's leaves
// the change to the watcher, which reports it again once it settles; a
// forced one is refused as ErrIncomplete.
var ErrReadMidWrite = errors.New("files changed while the reload read them")

// errStillChanging marks reloads that applied nothing because files
// changed while they were read (ErrReadMidWrite) for longer than
// reload.writer_wait: a failed reload.
var errStillChanging = errors.New("files kept changing while the reloads read them")

// readMidWriteError is ErrReadMidWrite's: the files that changed, or that
// a writer held, each with why, and every file the reload read (for the
// watcher to watch until they settle).
type readMidWriteError struct {
	files []blocklist.UnsettledFile
	watch []string
}

func (e *readMidWriteError) Error() string {
	parts := make([]string, len(e.files))
	for i, f := range e.files {
		parts[i] = f.File + ": " + f.Why
	}
	return fmt.Sprintf("%s: %s", ErrReadMidWrite, strings.Join(parts, "; "))
}

func (e *readMidWriteError) Unwrap() error { return ErrReadMidWrite }

// ErrStopping is the error of a reload that Stop came before or during:
// it applied nothing.
var ErrStopping = errors.New("dnsfence is stopping")

// DefaultSIGHUPWait bounds how long SIGHUP waits for files that a writer
// holds open or whose content still changes.
const DefaultSIGHUPWait = 5 * time.Second

// maxLogged caps the entries and ranges a reload log line names of each
// kind (added, removed); the counts stay exact.
const maxLogged = 20

// Log field keys of reload lines.
const (
	logTrigger       = "trigger"
	logFiles         = "files"
	logAddedEntries  = "added_entries"
	logRemovedEntry  = "removed_entries"
	logAddedRanges   = "added_ranges"
	logRemovedRanges = "removed_ranges"
	logConfigChanged = "config_changed"
	logCAChanged     = "upstream_ca_changed"
)

// Reload triggers, as the trigger field of the reload log lines.
const (
	TriggerFiles  = "files"  // the watcher saw Files change
	TriggerSIGHUP = "sighup" // SIGHUP: forced, accepts a held change
	TriggerCall   = "call"   // Reload called directly
	// TriggerRetry: a reload that failed reading a file for a reason that
	// passes (readFailedForNow), tried again.
	TriggerRetry = "retry"
)

// firstRetryWait and maxRetryWait bound the wait before a reload that
// failed reading a file for a reason that passes is tried again: the
// first wait, doubling while the reloads go on failing so.
const (
	firstRetryWait = time.Second
	maxRetryWait   = time.Minute
)

// Trigger is what started a reload, for the audit trail.
type Trigger struct {
	Kind  string   // TriggerFiles, TriggerSIGHUP, TriggerCall or TriggerRetry
	Files []string // the files whose change was seen, for TriggerFiles
}

// forced reports whether the trigger accepts a change a guard holds.
func (t Trigger) forced() bool { return t.Kind == TriggerSIGHUP }

// fields are the trigger's log fields.
func (t Trigger) fields() []zap.Field {
	f := []zap.Field{zap.String(logTrigger, t.Kind)}
	if len(t.Files) > 0 {
		f = append(f, zap.Strings(logFiles, t.Files))
	}
	return f
}

// ReloadStatus is the outcome of the last reload, for metrics and health.
type ReloadStatus struct {
	Time        time.Time
	OK          bool
	Err         error
	Held        bool // Err wraps ErrHeld: a guard held the change
	LastSuccess time.Time
	Successes   uint64
	Failures    uint64 // failed and held reloads
	// FailingSince is when the reloads that failed or were held since the
	// last applied one began; zero while the last one applied.
	FailingSince time.Time
}

// Reloader rebuilds the snapshot when the configuration or any file it names
// changes, and publishes it only when everything loaded: anything wrong keeps
// the last good state. It watches through a blocklist.Watcher; SIGHUP calls
// Reload directly.
type Reloader struct {
	handler *Handler
	load    func() (*config.Config, error) // reads the configuration anew
	log     *zap.Logger

	mu      sync.Mutex // serialises reloads from the watcher and SIGHUP
	watcher *blocklist.Watcher
	// watchLost is why watching ended or never started (nil while it
	// runs, or before Watch): every file a later reload reads is reported
	// unwatched for it too.
	watchLost error
	// newWatcher is blocklist.NewWatcher; tests make it fail.
	newWatcher func(debounce time.Duration) (*blocklist.Watcher, error)
	// unwatched is the last set of files reported as not watched, for
	// logging changes only; guarded by unwatchedMu.
	unwatchedMu sync.Mutex
	unwatched   []string

	// AfterReload, when set, runs after each successful reload (main tunes
	// the garbage collector there). Set it before Watch or Reload.
	AfterReload func(*Snapshot)

	// midWriteSince is when the reloads of the watcher that applied
	// nothing because files changed while they were read (ErrReadMidWrite)
	// began, one after another; zero when the last reload was not one.
	// Guarded by mu.
	midWriteSince time.Time

	// sighupWait bounds how long a forced reload waits for files still
	// being written; DefaultSIGHUPWait, shorter in tests.
	sighupWait time.Duration

	// retry tries again a reload that failed reading a file for a reason
	// that passes (readFailedForNow), after retryWait: retryFirst
	// (firstRetryWait, shorter in tests), doubling to maxRetryWait while
	// the reloads fail so. Nil, and retryWait zero, once a reload
	// applies or fails for another reason. Guarded by mu.
	retry      *time.Timer
	retryWait  time.Duration
	retryFirst time.Duration

	status atomic.Pointer[ReloadStatus]

	// runCtx bounds the remote list sources (Start sets it); sources are
	// those running, by entry; startCfg is the configuration Start
	// starts them with, whose guards apply to the copies that come before
	// the first snapshot. All guarded by mu.
	runCtx   context.Context
	sources  map[string]*runningSource
	startCfg *config.Config
	// prefetching counts, for each source, the reloads under way that
	// wait for its first copy (prefetchSources); guarded by mu.
	prefetching map[*runningSource]int
	// carried holds, by entry, the counts of the sources a reload
	// restarted for it (a `sources` setting changed): the
	// dnsfence_source_*_total series go on from them (remoteSources.carried).
	// Guarded by mu.
	carried map[string]sourceCounters
	// sourcesRunning counts the sources' Run calls under way, those of
	// sources dropped since included: each ends once its context is done
	// (runCtx cancelled, or the source dropped), a disk copy it was
	// writing written.
	sourcesRunning sync.WaitGroup

	// started is the configuration of the first snapshot reloaded from,
	// whose sockets and fixed limits are those in effect until a restart
	// (warnRestartNeeded); guarded by mu.
	started *config.Config

	// stopMu orders Stop against the reloads: a reload counts itself in
	// running, and stores its snapshot, only under stopMu and while
	// stopping has not ended, so that once Stop has ended it no reload
	// starts or stores anything, and running only counts down. idle is
	// closed, under stopMu, once stopping has ended and running is 0:
	// Wait's answer, there before Wait asks.
	stopMu  sync.Mutex
	running int
	idle    chan struct{}
	// stopping ends at Stop (under stopMu): a SIGHUP's wait for files
	// being written ends with it.
	stopping   context.Context
	stopReload context.CancelFunc
}

// NewReloader returns a Reloader for the handler's state. load reads the
// configuration (the same way startup did).
func NewReloader(log *zap.Logger, h *Handler, load func() (*config.Config, error)) *Reloader {
	r := &Reloader{handler: h, load: load, log: log, newWatcher: blocklist.NewWatcher, sighupWait: DefaultSIGHUPWait,
		retryFirst: firstRetryWait, idle: make(chan struct{})}
	r.stopping, r.stopReload = context.WithCancel(context.Background())
	r.status.Store(&ReloadStatus{Time: time.Now(), OK: true, LastSuccess: time.Now()})
	return r
}

// Stop ends reloading, at shutdown, before the listeners stop: once it
// returns no reload starts (ReloadFor returns ErrStopping), none under way
// stores its snapshot (it drops it, closing the upstreams it connected),
// no copy of a remote list is applied, and a SIGHUP waiting for files
// being written stops waiting. The snapshot serving then is the last.
// Wait waits for the reloads under way to end.
func (r *Reloader) Stop() {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopping.Err() == nil {
		r.stopReload()
		if r.running == 0 {
			close(r.idle)
		}
	}
}

// Wait waits, after Stop, until no reload is under way, or until ctx ends
// (its error): a reload reading a named pipe may take up to a minute
// (blocklist.PipeIdle for each read), longer than a shutdown may. A
// reload left behind so goes on, and stores nothing, until it ends or the
// process does. With none under way it returns nil, ctx ended or not.
func (r *Reloader) Wait(ctx context.Context) error {
	select {
	case <-r.idle:
		return nil
	default:
	}
	select {
	case <-r.idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the reload under way: %w", ctx.Err())
	}
}

// begin counts a reload in running, unless Stop came first.
func (r *Reloader) begin() bool {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopping.Err() != nil {
		return false
	}
	r.running++
	return true
}

// end ends a reload that begin counted.
func (r *Reloader) end() {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	r.running--
	if r.stopping.Err() != nil && r.running == 0 {
		close(r.idle)
	}
}

// storeUnlessStopped runs store, which publishes a snapshot, unless Stop
// came first.
func (r *Reloader) storeUnlessStopped(store func()) bool {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopping.Err() != nil {
		return false
	}
	store()
	return true
}

// notApplied logs a reload that Stop came before or during, and drops
// next, the snapshot it built if any: the forwarder next connected, when
// it is not prev's, is closed.
func (r *Reloader) notApplied(t Trigger, prev, next *Snapshot) error {
	if next != nil && next.fwd != nil && (prev == nil || next.fwd != prev.fwd) {
		next.fwd.Close()
	}
	r.log.Info("reload not applied: dnsfence is stopping", t.fields()...)
	return ErrStopping
}

// watchedFiles are the configuration file and every file it names, and
// the upstream_ca file the snapshot's upstreams were given: an internal
// CA's bundle renewed in place, before the upstreams' certificates it
// signs, is applied as a list is, not left until a SIGHUP while every
// new connection to those upstreams fails its verification.
func watchedFiles(s *Snapshot) []string {
	if s.Config.Embedded {
		return nil
	}
	files := s.Config.PolicyFiles()
	if s.caFile != "" {
		files = append(files, s.caFile)
	}
	for p := range s.Lists {
		if !config.IsRemote(p) {
			files = append(files, p)
		}
	}
	for p := range s.Ranges {
		files = append(files, p)
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// namedFiles are the local files named by the configuration a reload
// read: cfg's, or, when it did not validate, those loadErr carries
// (config.InvalidError); none when it could not be read or decoded.
func namedFiles(cfg *config.Config, loadErr error) []string {
	if cfg != nil {
		return cfg.LocalFiles()
	}
	if inv, ok := errors.AsType[*config.InvalidError](loadErr); ok {
		return inv.Files
	}
	return nil
}

// appliedSums are the content hashes a snapshot was built from, so that a
// file that changed while it was built is seen as changed.
func appliedSums(s *Snapshot) map[string][32]byte {
	sums := map[string][32]byte{s.Config.File: s.Config.Sum}
	if s.caFile != "" {
		sums[s.caFile] = s.caSum
	}
	for p, l := range s.Lists {
		if !config.IsRemote(p) {
			sums[p] = l.Sum()
		}
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
		r.mu.Lock()
		r.watchLost = err
		r.allUnwatched(snap, err)
		r.mu.Unlock()
		return err
	}
	defer w.Close()
	w.OnUnwatched(r.setUnwatched)
	w.OnFolders(r.handler.metrics.setWatchedFolders)
	w.SetWriterWait(snap.Config.Reload.WriterWait)
	w.OnWriterWait(func(open []string, wait time.Duration) {
		r.log.Info("files changed but a writer still holds them open: applying once it closes them",
			zap.Strings(logFiles, open), zap.Duration("at_most", wait))
	})
	r.mu.Lock()
	r.watcher, r.watchLost = w, nil
	// Files not watched are reported through OnUnwatched from now on;
	// publish where this watcher starts.
	_ = w.Watch(watchedFiles(snap), appliedSums(snap))
	r.setUnwatched(w.Unwatched())
	r.mu.Unlock()
	w.Run(ctx, func(c blocklist.Change) {
		if len(c.Open) > 0 {
			r.log.Warn("applying files a writer still holds open: unchanged for reload.writer_wait",
				zap.Strings(logFiles, c.Open), zap.Duration("writer_wait", r.handler.Snapshot().Config.Reload.WriterWait))
		}
		_ = r.ReloadFor(Trigger{Kind: TriggerFiles, Files: c.Files}) // logged and counted by ReloadFor
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watcher = nil
	if ctx.Err() == nil {
		r.watchLost = errors.New("the file watcher stopped")
		r.allUnwatched(r.handler.Snapshot(), r.watchLost)
		r.handler.metrics.setWatchedFolders(0)
		return r.watchLost
	}
	return nil
}

// KeepWatching runs Watch until ctx ends, and starts it again each time it
// could not start (no inotify instance to be had: fs.inotify.
// max_user_instances reached, EMFILE, ENOMEM) or stopped: after
// firstRetryWait, doubling to maxRetryWait while it keeps failing, from
// firstRetryWait again after a watcher that ran for maxRetryWait. Each
// failure is logged at error level; meanwhile the files are reported not
// watched (/readyz, dnsfence_unwatched_files) and SIGHUP still reloads. A
// watcher started again applies the edits made while none watched, as
// Watch compares the files with what was applied. An embedded
// configuration has nothing to watch: it returns at once.
func (r *Reloader) KeepWatching(ctx context.Context) {
	wait := r.retryFirst
	for {
		began := time.Now()
		err := r.Watch(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		if time.Since(began) >= maxRetryWait {
			wait = r.retryFirst
		}
		r.log.Error("file watching stopped; starting it again, SIGHUP still reloads",
			zap.Duration("in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxRetryWait)
	}
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
	r.log.Warn("files not watched: their edits are applied at the once-a-minute look, or on SIGHUP",
		zap.Strings("files", names), zap.Error(errors.Join(errs...)))
}

// Reload builds a new snapshot from the configuration and the files it
// names and publishes it. force (SIGHUP) accepts a change that a guard
// would hold, once the files are complete (see ReloadFor). On any error the
// running snapshot stays.
func (r *Reloader) Reload(force bool) error {
	if force {
		return r.ReloadFor(Trigger{Kind: TriggerSIGHUP})
	}
	return r.ReloadFor(Trigger{Kind: TriggerCall})
}

// ReloadFor builds a new snapshot from the configuration and the files it
// names and publishes it, logging what changed and what triggered it. On
// any error the running snapshot stays.
//
// The guards hold a change that would take protection away from the
// devices a blocking policy covers at once, which is almost always a
// broken write: a list or client range file shrinking more than
// reload.max_shrink allows (ErrShrink, ErrRangeShrink), or a configuration
// taking something away from a blocking policy (ErrRemoved). A held change
// is logged at warn, counted as held, and waits for SIGHUP.
//
// SIGHUP (TriggerSIGHUP) accepts what the guards hold, but only of files
// that are complete: it first waits, up to DefaultSIGHUPWait, until no
// watched file is held open by a writer and their content is stable over
// reload.debounce, and refuses the reload (ErrIncomplete) otherwise.
//
// Once Stop has begun, ReloadFor applies nothing and returns ErrStopping.
func (r *Reloader) ReloadFor(t Trigger) error {
	if !r.begin() {
		return r.notApplied(t, nil, nil)
	}
	defer r.end()
	var incomplete error
	if t.forced() {
		incomplete = r.waitComplete()
	}
	var prefetched []*runningSource
	var cfg *config.Config
	var loadErr error
	if incomplete == nil {
		// A SIGHUP refused for a file still being written starts no
		// source, and does not wait for one before it says so.
		prefetched, cfg, loadErr = r.prefetchSources()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// On every way out, with mu held: the sources started for a
	// configuration not applied stop again.
	defer r.endPrefetch(prefetched)
	if r.stopping.Err() != nil { // during the wait for files, or for mu
		return r.notApplied(t, nil, nil)
	}
	start := time.Now()
	prev := r.handler.Snapshot()
	var next *Snapshot
	var accepted []error
	err := incomplete
	if err == nil {
		if cfg == nil && loadErr == nil {
			cfg, loadErr = r.load()
		}
		if err = loadErr; err == nil {
			next, accepted, err = r.build(prev, t.forced(), cfg)
		}
	}
	midWrite := errors.Is(err, ErrReadMidWrite)
	if !midWrite || t.forced() {
		r.midWriteSince = time.Time{}
	}
	switch {
	case midWrite && t.forced():
		err = fmt.Errorf("%w, SIGHUP applies only complete files; send it again once the writer has finished: %w", ErrIncomplete, err)
	case midWrite:
		// Not a failure while the files are being written: the watcher
		// measures them against the state served again, and reports them
		// once their writer is done.
		if mid := (*readMidWriteError)(nil); r.watcher != nil && errors.As(err, &mid) {
			// The files of the configuration read too: a list it names
			// anew is the one a writer may hold.
			files := append(watchedFiles(prev), mid.watch...)
			slices.Sort(files)
			_ = r.watcher.Watch(slices.Compact(files), appliedSums(prev))
		}
		if r.midWriteSince.IsZero() {
			r.midWriteSince = time.Now()
		}
		wait := prev.Config.Reload.WriterWait
		since := time.Since(r.midWriteSince)
		if since < wait {
			r.log.Info("files changed while they were read: applying them once they settle", append(t.fields(), zap.Error(err))...)
			return err
		}
		// Files that change while every reload reads them are never
		// applied: a failure, logged, counted and named by /readyz, as a
		// writer that never closes a file is not waited for unseen.
		err = fmt.Errorf("%w, every reload for %s (reload.writer_wait is %s): %w", errStillChanging, since.Round(time.Millisecond), wait, err)
	}
	status := *r.status.Load()
	status.Time = time.Now()
	if err != nil {
		status.OK, status.Err, status.Held = false, err, errors.Is(err, ErrHeld)
		status.Failures++
		if status.FailingSince.IsZero() {
			status.FailingSince = status.Time
		}
		// Logged and counted before the status is published: whoever sees
		// the status finds the line and the metric that explain it.
		wait := r.retryLater(err)
		switch {
		case errors.Is(err, ErrIncomplete):
			r.log.Warn("SIGHUP reload refused, keeping the last good state: a file is still being written",
				append(t.fields(), zap.Error(err))...)
		case errors.Is(err, ErrNoCopy):
			r.log.Warn("SIGHUP reload refused, keeping the last good state: a remote list it adds has no copy yet",
				append(t.fields(), zap.Error(err))...)
		case status.Held:
			r.log.Warn("reload held, keeping the last good state: SIGHUP applies it once the files are complete",
				append(t.fields(), zap.Error(err))...)
		case wait > 0:
			r.log.Error("reload failed, keeping the last good state; trying again", append(t.fields(), zap.Error(err), zap.Duration("in", wait))...)
		default:
			r.log.Error("reload failed, keeping the last good state", append(t.fields(), zap.Error(err))...)
		}
		r.handler.metrics.reloaded(err)
		r.publishStatus(&status)
		if r.watcher != nil {
			switch {
			case status.Held && next != nil:
				// The files of the change held are watched too, with
				// what was read of them: an allow list taken back off
				// the name it allowed is a fix, as SIGHUP is.
				r.watcher.Also(watchedFiles(next), appliedSums(next))
			case !status.Held && !errors.Is(err, ErrIncomplete) && !errors.Is(err, ErrNoCopy):
				// The files the configuration read names are watched
				// too, though not applied: a list it names that is not
				// there yet (the configuration written first) or that
				// failed the reload is applied once it appears or is
				// fixed, as DESIGN §4 promises of every fix.
				r.watcher.Also(namedFiles(cfg, loadErr), nil)
			}
			// A folder that came back is watched although nothing was
			// applied, so that the fix is seen.
			r.watcher.Rearm()
		}
		return err
	}
	if !r.storeUnlessStopped(func() { r.handler.Store(next) }) {
		return r.notApplied(t, prev, next)
	}
	if len(accepted) > 0 {
		r.log.Warn("SIGHUP applied changes that a reload holds", append(t.fields(), zap.Error(errors.Join(accepted...)))...)
	}
	r.handler.metrics.reloaded(nil)
	r.retryLater(nil)
	retireForwarder(prev, next) // queries in flight on it finish there
	r.acceptPending(next)
	r.syncSources(next.Config)
	status.OK, status.Err, status.Held, status.LastSuccess = true, nil, false, status.Time
	status.FailingSince = time.Time{}
	status.Successes++
	r.logChanges(prev, next, t, time.Since(start))
	r.publishStatus(&status)
	if r.AfterReload != nil {
		r.AfterReload(next)
	}
	switch {
	case r.watcher != nil:
		// New files in the configuration, or a swapped symlink, change what
		// is watched; a folder that came back is watched anew. Files not
		// watched are reported through OnUnwatched.
		r.watcher.SetDebounce(next.Config.Reload.Debounce)
		r.watcher.SetWriterWait(next.Config.Reload.WriterWait)
		_ = r.watcher.Watch(watchedFiles(next), appliedSums(next))
	case r.watchLost != nil:
		// Nothing watches: the files this state reads, new ones among
		// them, are all unwatched.
		r.allUnwatched(next, r.watchLost)
	}
	return nil
}

// retryLater schedules a reload after a reload that failed with err, when
// err is a read that failed for a reason that passes (readFailedForNow),
// and returns the wait; otherwise (nil too) it cancels the one scheduled
// and returns 0. No event tells that such a reason has passed: without
// this the state failed to apply until the next edit or SIGHUP. Called
// with mu held.
func (r *Reloader) retryLater(err error) time.Duration {
	if r.retry != nil {
		r.retry.Stop()
		r.retry = nil
	}
	if !readFailedForNow(err) {
		r.retryWait = 0
		return 0
	}
	r.retryWait = min(max(2*r.retryWait, r.retryFirst), maxRetryWait)
	r.retry = time.AfterFunc(r.retryWait, func() {
		// Stop cannot stop the timer (mu may be held by a reload for a
		// minute): a retry due after it does nothing, and logs nothing.
		if r.stopping.Err() == nil {
			_ = r.ReloadFor(Trigger{Kind: TriggerRetry})
		}
	})
	return r.retryWait
}

// readFailedForNow reports whether err is a failure to open or read a
// file that passes without the file changing: the process or the system
// out of file descriptors or memory, an interrupted or timed-out read, an
// NFS file handle gone stale.
func readFailedForNow(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS,
		syscall.EAGAIN, syscall.EINTR, syscall.EIO, syscall.ESTALE, syscall.ETIMEDOUT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// publishStatus makes st the status of the last reload, for /readyz, then
// for Status: whoever has seen a reload's Status finds /readyz saying it
// too (TestReadyzAfterReloadTrouble read /readyz in between once).
func (r *Reloader) publishStatus(st *ReloadStatus) {
	r.handler.reload.Store(st)
	r.status.Store(st)
}

// waitComplete waits until the running state's files, and those the
// configuration on disk names now, are complete (no writer holds one
// open, content stable over reload.debounce), for at most sighupWait; the
// error wraps ErrIncomplete. The configuration's own: a SIGHUP after an
// edit that points a policy at a new list reads that list, which may be
// half written.
func (r *Reloader) waitComplete() error {
	r.mu.Lock()
	w := r.watcher
	r.mu.Unlock()
	snap := r.handler.Snapshot()
	files := watchedFiles(snap)
	if cfg, err := r.load(); err == nil {
		files = append(files, cfg.PolicyFiles()...) // a configuration that does not load fails the reload anyway
		slices.Sort(files)
		files = slices.Compact(files)
	}
	if len(files) == 0 {
		return nil
	}
	err := blocklist.WaitComplete(r.stopping, w, files, snap.Config.Reload.Debounce, r.sighupWait)
	if err != nil {
		return fmt.Errorf("%w, SIGHUP applies only complete files; send it again once the writer has finished: %w", ErrIncomplete, err)
	}
	return nil
}

// build builds a snapshot from the configuration cfg, and, once the
// guards let it through, its forwarder (ConnectUpstreams: the one of
// prev when the upstreams are unchanged). It returns the changes the
// guards hold: as the error unless force, else as accepted. A change held
// returns next too, unconnected and not to be applied: the files it read.
func (r *Reloader) build(prev *Snapshot, force bool, cfg *config.Config) (next *Snapshot, accepted []error, err error) {
	// SIGHUP applies the copies of remote lists a guard held, as it
	// applies the files.
	if r.runCtx == nil {
		next, err = BuildSnapshot(cfg, prev) // no sources run: the remote lists prev has
	} else {
		next, err = BuildSnapshotWith(cfg, prev, r.remoteLists(force))
	}
	if err != nil {
		return nil, nil, err
	}
	// The watcher, or SIGHUP's wait, found the files complete before they
	// were read; a writer that started on one since may have been caught
	// mid-write. Such a read is neither applied nor held nor counted.
	if !next.Config.Embedded {
		if moved := blocklist.Unsettled(r.watcher, appliedSums(next)); len(moved) > 0 {
			return nil, nil, &readMidWriteError{files: moved, watch: watchedFiles(next)}
		}
	}
	for _, w := range next.newWarnings(prev) {
		r.log.Warn("skipped bad lines", zap.Error(w))
	}
	if held := heldChanges(prev, next); len(held) > 0 {
		if !force {
			// next, not applied, says which files the change held
			// read, for the watcher to see their next edit.
			return next, nil, errors.Join(held...)
		}
		// Unless sources.servfail_until_ready answers for such a list
		// (SERVFAIL, not the list served empty): withoutCopy leaves it out.
		if none := r.withoutCopy(prev, next); len(none) > 0 {
			return nil, nil, fmt.Errorf("%w: %s; SIGHUP accepts the change once the list has a copy, or without that list: %w",
				ErrNoCopy, strings.Join(none, ", "), errors.Join(held...))
		}
		accepted = held
	}
	err = ConnectUpstreams(r.log.Named("upstream"), next, prev, r.handler.metrics)
	// The upstream_ca bundle is read by ConnectUpstreams, after the
	// check above: one caught mid-write (its first roots whole, the rest
	// cut short) is no state to apply, nor a broken file to fail the
	// reload for; the watcher applies it once complete.
	if next.caFile != "" && !next.Config.Embedded {
		if moved := blocklist.Unsettled(r.watcher, map[string][32]byte{next.caFile: next.caSum}); len(moved) > 0 {
			if err == nil && next.fwd != prev.fwd {
				next.fwd.Close()
			}
			return nil, nil, &readMidWriteError{files: moved, watch: watchedFiles(next)}
		}
	}
	if err != nil {
		return nil, nil, err
	}
	next.keepPeaks(prev, force)
	if r.started == nil {
		r.started = prev.Config
	}
	r.warnRestartNeeded(r.started, cfg)
	return next, accepted, nil
}

// guardShrink is the reload.max_shrink the guards use: the stricter of the
// running and the new configuration's, so that a write that turns the
// guard off is itself guarded. 0 is off.
func guardShrink(old, cfg *config.Config) float64 {
	a, b := old.Reload.MaxShrink, cfg.Reload.MaxShrink
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// shrunk reports whether n is more than maxShrink below old.
func shrunk(old, n, maxShrink float64) bool { return n < old*(1-maxShrink) }

// peak is the most a list or client range file held since the last start
// or SIGHUP. The shrink guards measure a change against it as well as
// against the state running, so that a list cut by a third, and a third
// again a moment later, is held at the second cut: each change is within
// max_shrink, what the devices lost is not.
type peak struct {
	entries int  // a list's entries
	list    List // the list as it was at the last start or SIGHUP (baseReplaced)
	// names counts list's blocking name triggers, once, for the IXFRs
	// that baseReplaced measures by Delta against list.
	names  *baseCount
	ranges int     // a range file's ranges
	v4, v6 float64 // the IPv4 and IPv6 addresses they cover
	// base is a range file's ranges at the last start or SIGHUP: ranges
	// moved a step at a time, each within max_shrink, lose its devices
	// as surely as a range file cut a step at a time.
	base []blocklist.Range
}

// baseCount is a count worked out once, shared by the snapshots that keep
// one peak.
type baseCount struct {
	once sync.Once
	n    int
}

// peakOf is the most the list or range file at path held in s since the
// last start or SIGHUP (what it holds now, at least).
func (s *Snapshot) peakOf(path string) peak {
	p, ok := s.peaks[path]
	if ok {
		return p
	}
	if l, ok := s.Lists[path]; ok {
		p.entries, p.list, p.names = l.Len(), l, new(baseCount)
	}
	if rf, ok := s.Ranges[path]; ok {
		p.ranges = len(rf.Ranges)
		p.v4, p.v6 = coverage(rf.Ranges)
		p.base = rf.Ranges
	}
	return p
}

// keepPeaks sets next's peaks from prev's, once the guards let next
// through: the most each file held since the last start or SIGHUP, now
// included. reset (SIGHUP, which accepts what the files hold) starts them
// again from what next holds.
func (next *Snapshot) keepPeaks(prev *Snapshot, reset bool) {
	peaks := make(map[string]peak, len(next.Lists)+len(next.Ranges))
	for path, l := range next.Lists {
		p := peak{entries: l.Len(), list: l, names: new(baseCount)}
		if _, ok := prev.Lists[path]; ok && !reset {
			was := prev.peakOf(path)
			p.entries, p.list, p.names = max(p.entries, was.entries), was.list, was.names
		}
		peaks[path] = p
	}
	for path, rf := range next.Ranges {
		p := peaks[path]
		old, ok := prev.Ranges[path]
		switch was := prev.peakOf(path); {
		case !ok || reset:
			p.ranges, p.base = len(rf.Ranges), rf.Ranges
			p.v4, p.v6 = coverage(rf.Ranges)
		case old.Sum == rf.Sum:
			p.ranges, p.v4, p.v6, p.base = was.ranges, was.v4, was.v6, was.base
		default:
			v4, v6 := coverage(rf.Ranges)
			p.ranges, p.v4, p.v6 = max(len(rf.Ranges), was.ranges), max(v4, was.v4), max(v6, was.v6)
			p.base = was.base
		}
		peaks[path] = p
	}
	next.peaks = peaks
}

// heldChanges lists what the fail-closed guards hold in going from prev to
// next, each error naming the file or policy, what it lost and the error
// kind: a block list or range file shrunk (ErrShrink, ErrRangeShrink),
// names or answer addresses a blocking policy blocked now allowed, or
// devices moved to a policy that blocks less (ErrExempted), protection
// taken out of the configuration (ErrRemoved).
func heldChanges(prev, next *Snapshot) []error {
	maxShrink := guardShrink(prev.Config, next.Config)
	if maxShrink <= 0 {
		return nil
	}
	var errs []error
	// Only a block list's shrinking is held: an allow list that shrinks
	// blocks more.
	blockLists := map[string]bool{}
	for _, p := range next.Policies {
		for _, l := range p.Block {
			blockLists[l.File()] = true
		}
	}
	shrunkLists := map[string]bool{}
	for _, path := range slices.Sorted(maps.Keys(next.Lists)) {
		l := next.Lists[path]
		old, ok := prev.Lists[path]
		if !ok || old == l || !blockLists[path] {
			continue
		}
		if err := listShrink(path, old.Len(), prev.peakOf(path).entries, l, maxShrink); err != nil {
			errs = append(errs, err)
			shrunkLists[path] = true
		}
	}
	for _, path := range slices.Sorted(maps.Keys(next.Ranges)) {
		rf := next.Ranges[path]
		old, ok := prev.Ranges[path]
		if !ok || old.Sum == rf.Sum {
			continue
		}
		if err := rangeShrink(old, rf, prev.peakOf(path), maxShrink); err != nil {
			errs = append(errs, err)
		} else if err := rangeLostToBadLines(old, rf, prev.rangeBad[path], next.rangeBad[path]); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, carvedOut(prev, next)...)
	errs = append(errs, policyUnblocked(prev, next, maxShrink, shrunkLists)...)
	errs = append(errs, clientsWidened(prev, next)...)
	return append(errs, removedProtection(prev, next)...)
}

// carvedOut holds a range of a policy that does not block (an exemption,
// a log-only policy, a new one) when devices in it fell to a blocking
// policy before: the most specific range decides, so a narrower range
// added to a file or the configuration takes them out of the block as
// surely as removing theirs. A range of another blocking policy is held
// the same way when that policy blocks less (allows, or does not list,
// something the devices' policy blocked): a carve-out for a team that
// must keep an app. A blocking policy switched off is
// removedProtection's.
func carvedOut(prev, next *Snapshot) []error {
	var errs []error
	// Ranges moved between two blocking policies, by the pair: what the
	// devices lose is the same for every range of a pair, worked out once.
	type pair struct{ was, now *Policy }
	moved := map[pair][]netip.Prefix{}
	wasRange := map[pair]netip.Prefix{} // the range of was the first one fell in
	var pairs []pair
	for _, cr := range next.byClient.AllSorted() {
		if blocking(cr.Policy) {
			was, ok := prev.PolicyForPrefix(cr.Range.Prefix)
			if !ok || !blocking(was.Policy) || was.Policy.Name == cr.Policy.Name {
				continue
			}
			k := pair{was.Policy, cr.Policy}
			if moved[k] == nil {
				pairs = append(pairs, k)
				wasRange[k] = was.Range.Prefix
			}
			moved[k] = append(moved[k], cr.Range.Prefix)
			continue
		}
		if blocking(policyNamed(prev, cr.Policy.Name)) {
			continue
		}
		was, ok := prev.PolicyForPrefix(cr.Range.Prefix)
		if !ok || !blocking(was.Policy) {
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %w: %s of policy %s takes devices of %s out of blocking policy %s; SIGHUP accepts it",
			cr.Policy.Name, ErrRemoved, cr.Range.Prefix, cr.Policy.Name, was.Range.Prefix, was.Policy.Name))
	}
	for _, k := range pairs {
		u := blocksLess(k.was, k.now)
		ranges := moved[k]
		what := fmt.Sprintf("%s of policy %s takes devices of %s out of blocking policy %s",
			ranges[0], k.now.Name, wasRange[k], k.was.Name)
		if len(ranges) > 1 {
			what = fmt.Sprintf("%d ranges of policy %s (first %s) take devices out of blocking policy %s",
				len(ranges), k.now.Name, ranges[0], k.was.Name)
		}
		if err := u.heldError(what, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// clientsWidened holds the client settings that take devices of a
// blocking range out of its policy without touching the range:
// trusted_proxies grown over it (a device there could name any client,
// of any policy or none, by ECS, a PROXY header or Forwarded);
// trusted_proxies no longer holding a proxy, wherever it is (the clients
// it named by ECS or Forwarded are then decided as the proxy itself,
// which hands a forwarder's government devices whatever its own policy,
// or none, lets through, and a load balancer's connections that open
// with a PROXY header fail, so its devices turn to another resolver: no
// address of the proxy tells which it is); and allowed_clients no longer
// holding all of a blocking range, or of a proxy trusted before, trusted
// still or not (its devices, or those the proxy asks for by ECS, get
// REFUSED and turn to whatever other resolver they have, which does not
// block). The two about a trusted proxy apply while some policy blocks:
// with none, nobody is taken out of a block.
func clientsWidened(prev, next *Snapshot) []error {
	var errs []error
	file := next.Config.File
	for p := range next.trusted.All() {
		if _, ok := prev.trusted.LookupPrefix(p); ok {
			continue // trusted before
		}
		for _, t := range next.blockingIn {
			if !t.OverlapsPrefix(p) {
				continue
			}
			cr := overlapping(t, p)
			errs = append(errs, fmt.Errorf("%s: %w: trusted_proxies %s overlaps range %s of blocking policy %s: a device there could name any client by ECS, a PROXY header or Forwarded; SIGHUP accepts it",
				file, ErrRemoved, p, cr.Range.Prefix, cr.Policy.Name))
			break
		}
	}
	for p := range prev.trusted.All() {
		if partOf(next.trusted, p) == allowedAll || len(next.blockingIn) == 0 {
			continue // still trusted, or nothing blocks
		}
		errs = append(errs, fmt.Errorf("%s: %w: trusted_proxies no longer holds %s: the clients it names by ECS or Forwarded would be decided as the proxy itself, and its connections that open with a PROXY header would fail; SIGHUP accepts it",
			file, ErrRemoved, p))
	}
	for _, cr := range next.byClient.AllSorted() {
		if blocking(cr.Policy) && prev.allowedPart(cr.Range.Prefix) == allowedAll && next.allowedPart(cr.Range.Prefix) != allowedAll {
			errs = append(errs, fmt.Errorf("%s: %w: allowed_clients no longer holds all of range %s of blocking policy %s: its devices would get REFUSED and turn to another resolver; SIGHUP accepts it",
				file, ErrRemoved, cr.Range.Prefix, cr.Policy.Name))
		}
	}
	// A forwarder's devices, which it names by ECS, are refused with it:
	// one trusted before, whether trusted still or not (taken out of
	// trusted_proxies too, it is refused all the same, however its own
	// address would be decided).
	for p := range prev.trusted.All() {
		if len(next.blockingIn) > 0 && prev.allowedPart(p) == allowedAll && next.allowedPart(p) != allowedAll {
			errs = append(errs, fmt.Errorf("%s: %w: allowed_clients no longer holds all of trusted proxy %s: the devices it asks for by ECS would get REFUSED and turn to another resolver; SIGHUP accepts it",
				file, ErrRemoved, p))
		}
	}
	return errs
}

// overlapping is a range of t that overlaps p: one holding p, or the first
// inside it.
func overlapping(t *bart.Table[ClientRange], p netip.Prefix) ClientRange {
	if cr, ok := t.LookupPrefix(p); ok {
		return cr
	}
	for _, cr := range t.Subnets(p) {
		return cr
	}
	return ClientRange{}
}

// blocking reports whether p blocks its clients' queries (log-only does
// not).
func blocking(p *Policy) bool { return p.Blocks() && p.Action != config.ActionLog }

// policyNamed is s's policy called name, or nil.
func policyNamed(s *Snapshot, name string) *Policy {
	for _, p := range s.Policies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// listShrink holds the list at path going from old entries to l when it
// lost more than maxShrink (0: never) of old's entries or of peak, the
// most it held since the last start or SIGHUP: cuts each within
// max_shrink are held once they add up past it. A list that does not
// shrink is not held, however far below peak: it was let that far down
// with the guards off (max_shrink 0) or looser, and holding it would
// hold the entries it adds.
func listShrink(path string, old, peak int, l *blocklist.List, maxShrink float64) error {
	if maxShrink <= 0 || l.Len() >= old || !shrunk(float64(max(old, peak)), float64(l.Len()), maxShrink) {
		return nil
	}
	return fmt.Errorf("%s: %w: %s (max_shrink %g); SIGHUP accepts it",
		path, ErrShrink, fell("%s to %s entries", float64(old), float64(peak), float64(l.Len())), maxShrink)
}

// fell says how a measure went from old to n, format taking the two
// (`%s to %s ranges`), and, when it was higher at some point since the
// last start or SIGHUP (peak), that it was: "8 to 4 ranges, 16 at most
// since the last start or SIGHUP".
func fell(format string, old, peak, n float64) string {
	s := fmt.Sprintf(format, countString(old), countString(n))
	if peak > old {
		s += fmt.Sprintf(", %s at most since the last start or SIGHUP", countString(peak))
	}
	return s
}

// rangeShrink holds a client range file that lost more than maxShrink of
// its ranges, or of the IPv4 or IPv6 addresses they cover: a /8 that
// becomes a /24 is one line still, but almost every device it held is
// gone. IPv4 and IPv6 are measured apart, or any IPv6 range would dwarf
// every IPv4 one. Each is measured against old and against pk, the most
// the file held since the last start or SIGHUP, when it fell from old:
// one that did not fall (ranges added) is not held however far below pk,
// as listShrink does not hold a list that grows.
func rangeShrink(old, rf *blocklist.RangeFile, pk peak, maxShrink float64) error {
	var what []string
	old4, old6 := coverage(old.Ranges)
	new4, new6 := coverage(rf.Ranges)
	for _, m := range []struct {
		format       string
		old, peak, n float64
	}{
		{"%s to %s ranges", float64(len(old.Ranges)), float64(pk.ranges), float64(len(rf.Ranges))},
		{"IPv4 addresses covered %s to %s", old4, pk.v4, new4},
		{"IPv6 addresses covered %s to %s", old6, pk.v6, new6},
	} {
		if m.n < m.old && shrunk(max(m.old, m.peak), m.n, maxShrink) {
			what = append(what, fell(m.format, m.old, m.peak, m.n))
		}
	}
	// As many addresses, but others: those no longer covered are lost.
	kept4, kept6 := coverageKept(old.Ranges, rf.Ranges)
	lost4, lost6 := old4-kept4, old6-kept6
	if len(what) == 0 {
		what = noLongerCovered(old4, old6, kept4, kept6, maxShrink)
	}
	if len(what) == 0 && pk.base != nil {
		// Moved a step at a time: against the ranges of the last start
		// or SIGHUP, when this step loses addresses.
		base4, base6 := coverage(pk.base)
		bkept4, bkept6 := coverageKept(pk.base, rf.Ranges)
		if gone4 := base4 - bkept4; lost4 > 0 && gone4 > base4*maxShrink {
			what = append(what, fmt.Sprintf("IPv4 addresses no longer covered %s of the %s covered at the last start or SIGHUP", countString(gone4), countString(base4)))
		}
		if gone6 := base6 - bkept6; lost6 > 0 && gone6 > base6*maxShrink {
			what = append(what, fmt.Sprintf("IPv6 addresses no longer covered %s of the %s covered at the last start or SIGHUP", countString(gone6), countString(base6)))
		}
	}
	if len(what) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w: %s (max_shrink %g); SIGHUP accepts it",
		rf.File, ErrRangeShrink, strings.Join(what, ", "), maxShrink)
}

// rangeLostToBadLines holds a client range file, rf, that covers fewer
// of the addresses old covered (however few: max_shrink is for ranges
// taken out on purpose) while it has a bad line old had not, of warn and
// oldWarn (ParseRanges'; blocklist.NewBadLine: by its text, so that an
// old bad line fixed in the same edit does not hide it, and the error
// names the new line, not one there before): a range edited into one that
// does not parse (a netmask for a prefix length, a typo) is skipped as a
// bad line, and the devices it held would leave their policy, as a bad
// CIDR in `clients` is refused. A range file is written by hand, not
// downloaded: a new bad line in it is a mistake, where a list's may be a
// form dnsfence does not read. Nil when nothing is held.
func rangeLostToBadLines(old, rf *blocklist.RangeFile, oldWarn, warn error) error {
	first, ok := blocklist.NewBadLine(oldWarn, warn)
	if !ok {
		return nil
	}
	old4, old6 := coverage(old.Ranges)
	kept4, kept6 := coverageKept(old.Ranges, rf.Ranges)
	lost := noLongerCovered(old4, old6, kept4, kept6, 0)
	if len(lost) == 0 {
		return nil
	}
	line := "a bad line past those reported one by one"
	if first != nil {
		line = first.Error()
	}
	return fmt.Errorf("%s: %w: %s, beside %s; SIGHUP accepts it", rf.File, ErrRangeBadLine, strings.Join(lost, ", "), line)
}

// noLongerCovered says, IPv4 and IPv6 apart, how many of the addresses a
// range file covered (old4, old6) it covers no longer (of those, kept4
// and kept6 are kept), where that is more than share of them: "IPv4
// addresses no longer covered 128 of 1152". Nil when neither is.
func noLongerCovered(old4, old6, kept4, kept6, share float64) []string {
	var what []string
	for _, f := range [...]struct {
		family    string
		old, kept float64
	}{{"IPv4", old4, kept4}, {"IPv6", old6, kept6}} {
		if lost := f.old - f.kept; lost > f.old*share {
			what = append(what, fmt.Sprintf("%s addresses no longer covered %s of %s", f.family, countString(lost), countString(f.old)))
		}
	}
	return what
}

// coverage counts the IPv4 and IPv6 addresses the ranges cover, each
// address once however many ranges hold it.
func coverage(ranges []blocklist.Range) (v4, v6 float64) {
	for _, p := range disjoint(ranges) {
		n := addresses(p)
		if p.Addr().Is4() {
			v4 += n
		} else {
			v6 += n
		}
	}
	return v4, v6
}

// addresses is how many addresses p covers.
func addresses(p netip.Prefix) float64 { return math.Ldexp(1, p.Addr().BitLen()-p.Bits()) }

// disjoint is ranges as prefixes sorted by address, none inside another:
// a prefix inside one kept is dropped.
func disjoint(ranges []blocklist.Range) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(ranges))
	for _, r := range ranges {
		ps = append(ps, r.Prefix.Masked())
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		// Sorted by address, shorter first: a prefix that overlaps the
		// last one kept is inside it.
		if len(out) > 0 && out[len(out)-1].Overlaps(p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// coverageKept is how many IPv4 and IPv6 addresses both old's ranges and
// rf's cover: what old covers beyond it is lost, moved ranges included.
func coverageKept(old, rf []blocklist.Range) (v4, v6 float64) {
	a, b := disjoint(old), disjoint(rf)
	// Both sorted, each disjoint: two prefixes that overlap are one
	// inside the other, and their overlap is the inner one; the outer may
	// overlap the next prefix of the other list too.
	for i, j := 0, 0; i < len(a) && j < len(b); {
		o, n := a[i], b[j]
		if !o.Overlaps(n) {
			if o.Addr().Less(n.Addr()) {
				i++
			} else {
				j++
			}
			continue
		}
		inner := n
		if o.Bits() > n.Bits() {
			inner = o
			i++
		} else {
			j++
		}
		if inner.Addr().Is4() {
			v4 += addresses(inner)
		} else {
			v6 += addresses(inner)
		}
	}
	return v4, v6
}

// countString prints an address count exactly while it fits, as a power
// of two beyond.
func countString(n float64) string {
	if n < 1<<53 {
		return strconv.FormatFloat(n, 'f', -1, 64)
	}
	return fmt.Sprintf("2^%g", math.Log2(n))
}

// removedProtection lists what the new configuration takes away from each
// policy that blocked in prev: the policy, its blocking, a block list
// (the built-in DoH canary too), an inline range, a client file.
func removedProtection(prev, next *Snapshot) []error {
	nextPolicy := map[string]*Policy{}
	for _, p := range next.Policies {
		nextPolicy[p.Name] = p
	}
	nextConfig := map[string]*config.Policy{}
	for i := range next.Config.Policies {
		nextConfig[next.Config.Policies[i].Name] = &next.Config.Policies[i]
	}
	file := next.Config.File
	var errs []error
	held := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w; SIGHUP accepts it", file, fmt.Sprintf(format, args...), ErrRemoved))
	}
	for i, op := range prev.Policies {
		if !blocking(op) {
			continue
		}
		np, ok := nextPolicy[op.Name]
		if !ok {
			held("blocking policy %q removed", op.Name)
			continue
		}
		if !blocking(np) {
			held("policy %q no longer blocks (action %s, %d block lists)", op.Name, np.Action, len(np.Block))
			continue
		}
		for _, l := range op.Block {
			if !slices.ContainsFunc(np.Block, func(n List) bool { return n.File() == l.File() }) {
				held("block list %s removed from policy %q", l.File(), op.Name)
			}
		}
		// Turned off while a list the policy keeps has no copy, the
		// setting would serve that list empty.
		if idle := stillWithoutCopy(op.noCopy, next, np); len(idle) > 0 && !next.Config.Sources.ServfailUntilReady {
			held("sources.servfail_until_ready turned off while remote block %s no copy: policy %q would serve it empty, its names unblocked",
				listsWithout(idle, func(l string) string { return l }), op.Name)
		}
		opc, npc := &prev.Config.Policies[i], nextConfig[op.Name]
		kept := npc.ClientRanges()
		for _, r := range opc.ClientRanges() {
			if !slices.ContainsFunc(kept, func(n blocklist.Range) bool { return n.Prefix == r.Prefix }) {
				held("range %s removed from policy %q", r.Prefix, op.Name)
			}
		}
		for _, f := range opc.ClientFiles {
			path := prev.Config.Path(f)
			if !slices.ContainsFunc(npc.ClientFiles, func(n string) bool { return next.Config.Path(n) == path }) {
				held("client file %s removed from policy %q", path, op.Name)
			}
		}
	}
	return errs
}

// warnRestartNeeded logs settings that only a restart applies: sockets are
// opened once, and so is the logger (log.format, log.output; its level is
// set anew at each reload). old is the configuration dnsfence started with, not the
// last reload's: its settings are still the ones in effect, so that every
// reload while they differ says so, and one that goes back to them says
// nothing.
func (r *Reloader) warnRestartNeeded(old, cfg *config.Config) {
	if !slices.Equal(old.Listen, cfg.Listen) {
		r.log.Warn("listen changed: restart to apply, still serving the old addresses",
			zap.Strings("running", old.Listen), zap.Strings("configured", cfg.Listen))
	}
	if old.Limits.TCPConnections != cfg.Limits.TCPConnections {
		r.log.Warn("limits.tcp_connections changed: restart to apply",
			zap.Int("tcp_connections", old.Limits.TCPConnections))
	}
	if old.Limits.UDPReceiveBuffer != cfg.Limits.UDPReceiveBuffer || old.Limits.UDPSendBuffer != cfg.Limits.UDPSendBuffer {
		r.log.Warn("limits.udp_receive_buffer or udp_send_buffer changed: restart to apply",
			zap.Int("udp_receive_buffer", old.Limits.UDPReceiveBuffer), zap.Int("udp_send_buffer", old.Limits.UDPSendBuffer))
	}
	for _, l := range []struct {
		key      string
		old, cfg []string
	}{{"listen_tls", old.ListenTLS, cfg.ListenTLS}, {"listen_https", old.ListenHTTPS, cfg.ListenHTTPS}, {"listen_quic", old.ListenQUIC, cfg.ListenQUIC}} {
		if !slices.Equal(l.old, l.cfg) {
			r.log.Warn(l.key+" changed: restart to apply, still serving the old addresses",
				zap.Strings("running", l.old), zap.Strings("configured", l.cfg))
		}
	}
	switch oldCert, oldKey := old.Path(old.TLS.Cert), old.Path(old.TLS.Key); {
	case oldCert == cfg.Path(cfg.TLS.Cert) && oldKey == cfg.Path(cfg.TLS.Key):
	case oldCert == "" && oldKey == "":
		r.log.Warn("tls set: restart to apply; no certificate is loaded until then",
			zap.String("configured_cert", cfg.Path(cfg.TLS.Cert)), zap.String("configured_key", cfg.Path(cfg.TLS.Key)))
	default:
		r.log.Warn("tls.cert or tls.key names other files: restart to apply; the files named at start are still watched and served",
			zap.String("cert", oldCert), zap.String("key", oldKey))
	}
	if len(old.ListenHTTPS)+len(old.ListenQUIC) > 0 && (old.Limits.TCPPipeline != cfg.Limits.TCPPipeline ||
		old.Limits.TCPReadTimeout != cfg.Limits.TCPReadTimeout || old.Limits.TCPIdleTimeout != cfg.Limits.TCPIdleTimeout) {
		r.log.Warn("limits.tcp_pipeline, tcp_read_timeout or tcp_idle_timeout changed: restart to apply to the DNS over HTTPS and QUIC listeners (TCP and DoT apply it at once)",
			zap.Int("tcp_pipeline", old.Limits.TCPPipeline), zap.Duration("tcp_read_timeout", old.Limits.TCPReadTimeout),
			zap.Duration("tcp_idle_timeout", old.Limits.TCPIdleTimeout))
	}
	if old.Log.Format != cfg.Log.Format || old.Log.Output != cfg.Log.Output {
		r.log.Warn("log.format or log.output changed: restart to apply, still logging as before",
			zap.String("running_format", old.Log.Format), zap.String("running_output", old.Log.Output))
	}
	if old.HTTPAddr() != cfg.HTTPAddr() {
		r.log.Warn("http changed: restart to apply, still serving the old address",
			zap.String("running", old.HTTPAddr()), zap.String("configured", cfg.HTTPAddr()))
	}
}

// logChanges logs what a reload changed, for the audit trail: per list
// the entries added and removed, per policy the client ranges added and
// removed (the first maxLogged of each, with exact counts), the
// configuration keys that changed, whether the upstream_ca bundle did
// (upstream_ca_changed: a bundle renewed in place changes nothing else),
// and what triggered the reload.
func (r *Reloader) logChanges(prev, next *Snapshot, t Trigger, took time.Duration) {
	changed := 0
	for _, p := range slices.Sorted(maps.Keys(next.Lists)) {
		l, old := next.Lists[p], prev.Lists[p]
		if l == old {
			continue
		}
		changed++
		d := diffLists(old, l)
		r.log.Info("list reloaded", zap.String(logList, p), zap.Int("entries", l.Len()),
			zap.Int("added", d.added), zap.Int("removed", d.removed), zap.String(logListHash, l.Hash()),
			zap.Strings(logAddedEntries, d.addedNames), zap.Strings(logRemovedEntry, d.removedNames))
	}
	for _, p := range slices.Sorted(maps.Keys(prev.Lists)) {
		if _, ok := next.Lists[p]; !ok {
			changed++
			r.log.Info("list no longer used", zap.String(logList, p), zap.Int("entries", prev.Lists[p].Len()))
		}
	}
	rangesChanged := 0
	before, after := policyRanges(prev), policyRanges(next)
	for _, name := range slices.Sorted(maps.Keys(mergeKeys(before, after))) {
		d := diffRanges(before[name], after[name])
		if d.added == 0 && d.removed == 0 {
			continue
		}
		rangesChanged++
		blocks := slices.ContainsFunc(next.Policies, func(p *Policy) bool { return p.Name == name && blocking(p) })
		r.log.Info("policy ranges changed", zap.String(logPolicy, name), zap.Bool("blocking", blocks),
			zap.Int("ranges", len(after[name])), zap.Int("added", d.added), zap.Int("removed", d.removed),
			zap.Strings(logAddedRanges, d.addedNames), zap.Strings(logRemovedRanges, d.removedNames))
	}
	fields := append(t.fields(), zap.Int("lists_changed", changed), zap.Int("policies_ranges_changed", rangesChanged),
		zap.Strings(logConfigChanged, config.Changes(prev.Config, next.Config)),
		zap.Bool(logCAChanged, prev.caFile != next.caFile || prev.caSum != next.caSum),
		zap.Int("policies", len(next.Policies)), zap.Duration("took", took))
	r.log.Info("reloaded", fields...)
}

// diff is what changed between two sets: counts, and the first maxLogged
// names of each side.
type diff struct {
	added, removed           int
	addedNames, removedNames []string
}

func (d *diff) add(name string) {
	d.added++
	if len(d.addedNames) < maxLogged {
		d.addedNames = append(d.addedNames, name)
	}
}

func (d *diff) remove(name string) {
	d.removed++
	if len(d.removedNames) < maxLogged {
		d.removedNames = append(d.removedNames, name)
	}
}

// diffLists finds the entries in l but not in old, and in old but not in
// l, in file order. An RPZ list's entries are its triggers, each with
// its action (HoldsTrigger): a trigger whose action changed is removed
// with the old and added with the new, and `name` and `*.name` are two
// (changedEntry).
func diffLists(old, l *blocklist.List) diff {
	var d diff
	for e, t := range l.AllTriggers() {
		if old == nil || !old.HoldsTrigger(e.Name, t) {
			d.add(changedEntry(l, e, t))
		}
	}
	if old == nil {
		return d
	}
	for e, t := range old.AllTriggers() {
		if !l.HoldsTrigger(e.Name, t) {
			d.remove(changedEntry(old, e, t))
		}
	}
	return d
}

// changedEntry is an entry of l as the reload log names it: a plain
// list's name; an RPZ trigger's name (or response-IP prefix), `*.name`
// for a wildcard, followed by its action unless it is NXDOMAIN, the block
// a plain list's entry makes (`c.example (action NODATA)`, `192.0.2.0/24
// (action drop)`, `ok.example (action passthru)`).
func changedEntry(l *blocklist.List, e blocklist.Entry, t blocklist.Trigger) string {
	if !l.IsRPZ() {
		return e.Name
	}
	name := e.Name
	if t.Wildcard {
		name = "*." + name
	}
	if t.Action != blocklist.ActionNXDOMAIN {
		name += " (action " + t.Action.String() + ")"
	}
	return name
}

// policyRanges lists each policy's client ranges (inline and from its
// files), by policy name, sorted.
func policyRanges(s *Snapshot) map[string][]netip.Prefix {
	out := map[string][]netip.Prefix{}
	for _, p := range s.Policies {
		out[p.Name] = nil
	}
	for _, cr := range s.byClient.AllSorted() {
		out[cr.Policy.Name] = append(out[cr.Policy.Name], cr.Range.Prefix)
	}
	return out
}

func mergeKeys[V any](a, b map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// diffRanges finds the ranges in after but not before, and the reverse.
func diffRanges(before, after []netip.Prefix) diff {
	var d diff
	had, has := setOf(before), setOf(after)
	for _, p := range after {
		if _, ok := had[p]; !ok {
			d.add(p.String())
		}
	}
	for _, p := range before {
		if _, ok := has[p]; !ok {
			d.remove(p.String())
		}
	}
	return d
}

// setOf is ps as a set, for lookups in O(1) (range files run to tens of
// thousands of lines).
func setOf(ps []netip.Prefix) map[netip.Prefix]struct{} {
	set := make(map[netip.Prefix]struct{}, len(ps))
	for _, p := range ps {
		set[p] = struct{}{}
	}
	return set
}
