package resolver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/gaissmai/bart"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Remote lists (DESIGN.md §9): a `block` or `allow` entry that is a URL or
// a zone transfer is a source (package blocklist/source) run by the
// Reloader. Each copy a source delivers is parsed as its list (a text list,
// an RPZ body, or a zone's records with package rpz) and applied as a
// changed file is: a new snapshot with that one list replaced, the
// fail-closed guards, then one atomic store; a copy refused keeps the list
// served. A snapshot holds each remote list under its entry as written,
// with an empty list in its place until a first copy arrives (and /readyz
// not ready until then).

// StartWait bounds how long Start waits for each source's first copy (its
// disk copy, or its first fetch) before the first snapshot is built
// without it.
const StartWait = 10 * time.Second

// remoteSources are the sources being run, as the Handler sees them: for
// NOTIFY, /readyz and the metrics.
type remoteSources struct {
	srcs     []source.Source // in configuration order
	notifier *source.Notifier
	// zones are the apexes the zone sources pull (lowercase, fully
	// qualified): a NOTIFY for any other zone is answered as before
	// sources existed, NOTIMP.
	zones map[string]bool
	// carried are the counts of the sources a reload restarted, by entry
	// (Reloader.carried as it was when srcs were made): the counters
	// collected are these plus the running source's, taken together
	// with srcs so that a scrape never sees the restarted source's count
	// twice, nor none of it.
	carried map[string]sourceCounters
}

// runningSource is one source the Reloader runs, and the lists it built
// from its copies. list and pending are guarded by Reloader.mu.
type runningSource struct {
	src    source.Source
	key    string // the options it was made with, to see them change
	cancel context.CancelFunc
	done   chan struct{}

	// list is built from the copy served (nil before the first); pending
	// from a copy a fail-closed guard held, which SIGHUP applies.
	list    *blocklist.List
	pending *blocklist.List
	// startPeak is the most entries a copy held before the first snapshot
	// had (startShrink): two quick copies, each within max_shrink of the
	// one before, are held once they add up past it, as after it.
	startPeak int
}

// sourceKey identifies the options a source was made with.
func sourceKey(opt source.Options) string {
	key := fmt.Sprintf("%s|%s|%d", opt.Refresh, opt.CacheDir, opt.MaxBytes)
	if k := opt.TSIG; k != nil {
		key += "|" + k.Name + "|" + k.Algorithm + "|" + k.Secret
	}
	return key
}

// Start starts the remote list sources cfg names (each delivers its disk
// copy at once, then fetches), waits up to StartWait for each source to
// have a first copy or to have tried the network once, then builds the
// first snapshot from cfg and those copies once the files it reads are
// read complete (buildSteady: last, as a writer may begin on a list
// while the sources are waited for), connects its upstreams (into the
// Handler's metrics) and publishes it. Copies that arrive later are
// applied as they come. The sources run until ctx ends. cfg is read just
// before Start: if its file changes while Start reads the lists, Start
// reads it again (waiting up to StartWait for the first copies of the
// remote lists the new one adds), and the snapshot's Config is the one it
// built. The
// snapshot's build errors are BuildSnapshot's and ConnectUpstreams';
// ctx's error if ctx ends before the files are read.
func (r *Reloader) Start(ctx context.Context, cfg *config.Config) (*Snapshot, error) {
	r.mu.Lock()
	r.runCtx, r.startCfg = ctx, cfg
	r.syncSources(cfg)
	running := slices.Collect(maps.Values(r.sources))
	r.mu.Unlock()
	waitFirstCopies(ctx, running)
	snap, err := r.buildSteady(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if snap.Config != cfg {
		// What the caller started with cfg (listeners, logger) keeps
		// it until a restart, as after a reload.
		r.started, r.startCfg = cfg, snap.Config
		was := maps.Clone(r.sources)
		r.syncSources(snap.Config)
		r.warnRestartNeeded(cfg, snap.Config)
		// A remote list the configuration read again adds (a list moved
		// to a new URL) is waited for as at a start with it: built
		// empty, it would be served so until its first fetch.
		var added []*runningSource
		for name, rs := range r.sources {
			if was[name] != rs && rs.list == nil {
				added = append(added, rs)
			}
		}
		if len(added) > 0 {
			r.mu.Unlock()
			waitFirstCopies(ctx, added)
			r.mu.Lock()
		}
	}
	// A copy a source delivered while the files were read (applySource
	// had no snapshot to apply it to, and kept it) is taken in.
	for name, rs := range r.sources {
		if l, ok := snap.Lists[name]; ok && rs.list != nil && l != rs.list {
			snap = snap.withList(name, rs.list)
		}
	}
	if err := ConnectUpstreams(r.log.Named("upstream"), snap, nil, r.handler.metrics); err != nil {
		return nil, err
	}
	r.handler.Store(snap)
	return snap, nil
}

// buildSteady builds the first snapshot from cfg and the remote lists'
// copies once the lists, client range files and configuration it reads
// were read complete (blocklist.ReadSteady): no process /proc shows
// holds one open for writing (a file unchanged for reload.writer_wait
// aside), none was written to from just before the read until
// reload.debounce after it began, and each one's content then is the
// content read. A read that was not is read
// again, the configuration with it. A first load has no snapshot to
// measure a shrink against: the first half of a list being written would
// be served, every name after the cut unblocked. After
// reload.writer_wait, a writer that still writes is given up on (warned):
// the last read is served, and the watcher applies the files once
// complete.
func (r *Reloader) buildSteady(ctx context.Context, cfg *config.Config) (*Snapshot, error) {
	build := func(cfg *config.Config) (*Snapshot, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return BuildSnapshotWith(cfg, nil, r.remoteLists(false))
	}
	if cfg.Embedded {
		return build(cfg)
	}
	var snap *Snapshot
	reads := 0
	waited, err := blocklist.ReadSteady(ctx, cfg.PolicyFiles(), cfg.Reload.Debounce, cfg.Reload.WriterWait, func() (map[string][32]byte, error) {
		if reads++; reads > 1 && !blocklist.Irregular(cfg.File) {
			// The configuration may be what changed: read it again.
			// Not a named pipe: its content cannot be compared, and
			// its writer wrote it once, to serve's read.
			// Caught mid-write by a writer /proc does not show, as
			// serve's read may be, it is read again once steady, an
			// error only then. A change meanwhile is seen by
			// ReadSteady, which reads once more.
			next, err := config.LoadSteady(ctx, cfg.File, cfg.Reload.Debounce, cfg.Reload.WriterWait, r.load, nil)
			if err != nil {
				return nil, err
			}
			cfg = next
		}
		var err error
		if snap, err = build(cfg); err != nil {
			return nil, err
		}
		return appliedSums(snap), nil
	})
	switch {
	case errors.Is(err, blocklist.ErrBeingWritten):
		r.log.Warn("loading files still being written after reload.writer_wait; the watcher applies them once complete",
			zap.Duration("writer_wait", cfg.Reload.WriterWait), zap.Error(err))
	case err != nil:
		return nil, err
	case waited > 0:
		r.log.Info("loading files once their writers were done", zap.Duration("waited", waited), zap.Int("reads", reads))
	}
	var held []string
	for _, f := range cfg.PolicyFiles() {
		if p, err := filepath.EvalSymlinks(f); err == nil {
			if p, err = filepath.Abs(p); err == nil {
				held = append(held, p)
			}
		}
	}
	if writers := blocklist.Holders(held); len(writers) > 0 {
		r.log.Warn("loading files a writer still holds open: unchanged for reload.writer_wait",
			zap.Strings("writers", writers), zap.Duration("writer_wait", cfg.Reload.WriterWait))
	}
	return snap, nil
}

// waitFirstCopies waits until each of sources has a first copy or has
// been to the network once (firstCopy), for up to StartWait in all, or
// until ctx ends.
func waitFirstCopies(ctx context.Context, sources []*runningSource) {
	deadline := time.Now().Add(StartWait)
	for _, rs := range sources {
		for !firstCopy(rs.src.Status()) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// prefetchSources starts the sources of the remote lists that the
// configuration on disk names and no source runs yet, and waits for
// the first copies of every list it adds to the running configuration's
// (those another reload under way started among them) as Start does
// (waitFirstCopies; Stop ends the wait), before a reload reads the
// configuration. The reload that applies it then serves their lists: it
// served them empty until the first fetch (seconds, or for good with the
// source unreachable), so a URL swapped for another by SIGHUP unblocked
// the old one's names meanwhile, and a swap in an edit was held as if the
// new list were empty. It returns the sources it waited for, counted in
// r.prefetching until the reload ends (endPrefetch): no other reload
// stops them meanwhile, and the reload that does not apply them stops
// them again.
//
// cfg and err, unless both are nil, are the reload's read of the
// configuration: a reload reads it once (a named pipe's writer writes it
// once, and a pipe with none is waited for once). They are nil when the
// sources were waited for (the configuration may have changed meanwhile)
// or the Reloader was not started.
func (r *Reloader) prefetchSources() (sources []*runningSource, cfg *config.Config, err error) {
	r.mu.Lock()
	started := r.runCtx != nil
	r.mu.Unlock()
	if !started {
		return nil, nil, nil // not started: a Reloader of tests, or `check`
	}
	cfg, err = r.load()
	if err != nil || cfg.Embedded {
		return nil, cfg, err // the reload fails on it, or has no sources
	}
	r.mu.Lock()
	opt := cfg.SourceOptions()
	opt.Log = r.log.Named("source")
	key := sourceKey(opt)
	have := r.servedRemoteLists()
	if r.prefetching == nil {
		r.prefetching = map[*runningSource]int{}
	}
	var added []*runningSource
	for _, name := range cfg.RemoteLists() {
		if slices.Contains(have, name) {
			continue
		}
		rs, ok := r.sources[name]
		if !ok {
			rs = r.startSource(name, opt, key, nil)
			r.sources[name] = rs
		}
		r.prefetching[rs]++
		added = append(added, rs)
	}
	r.mu.Unlock()
	if len(added) == 0 {
		return nil, cfg, nil
	}
	waitFirstCopies(r.stopping, added)
	return added, nil, nil
}

// endPrefetch ends a reload's hold on the sources prefetchSources waited
// for: one that no other reload under way holds and that the
// configuration served does not name (the reload failed, was held, or
// was not applied) stops. Called with r.mu held.
func (r *Reloader) endPrefetch(sources []*runningSource) {
	want := r.servedRemoteLists()
	for _, rs := range sources {
		if r.prefetching[rs]--; r.prefetching[rs] > 0 {
			continue
		}
		delete(r.prefetching, rs)
		if name := rs.src.Name(); r.sources[name] == rs && !slices.Contains(want, name) {
			r.stopSource(name, rs)
		}
	}
}

// stopSource stops the source rs running for the list name and forgets
// it, with the copy a guard held of it (a source started again for the
// name starts from what it delivers). Called with r.mu held.
func (r *Reloader) stopSource(name string, rs *runningSource) {
	rs.cancel()
	delete(r.sources, name)
	r.handler.setHeld(name, false)
}

// servedRemoteLists are the remote lists of the configuration served
// (the one Start starts with before the first snapshot). Called with
// r.mu held.
func (r *Reloader) servedRemoteLists() []string {
	if s := r.handler.Snapshot(); s != nil {
		return s.Config.RemoteLists()
	}
	if r.startCfg != nil {
		return r.startCfg.RemoteLists()
	}
	return nil
}

// withoutCopy names the remote lists next adds to prev's configuration
// that have no copy yet, each with its source's last error: a guard
// measured next with them empty. A list sources.servfail_until_ready
// answers SERVFAIL for (Snapshot.AnswersServfail) is not served empty,
// and not named. Called with r.mu held.
func (r *Reloader) withoutCopy(prev, next *Snapshot) []string {
	var out []string
	for _, name := range next.Config.RemoteLists() {
		if slices.Contains(prev.Config.RemoteLists(), name) || next.AnswersServfail(name) {
			continue
		}
		rs, ok := r.sources[name]
		if ok && (rs.list != nil || rs.pending != nil) {
			continue
		}
		why := "not started"
		if ok {
			if st := rs.src.Status(); st.LastError != nil {
				why = st.LastError.Error()
			} else {
				why = "not fetched yet"
			}
		}
		out = append(out, fmt.Sprintf("%s (%s)", name, why))
	}
	return out
}

// firstCopy reports whether a source has content, or has been to the
// network once (its disk copy, if any, read before).
func firstCopy(st source.Status) bool {
	return st.HasContent || !st.LastSuccess.IsZero() || !st.LastErrorTime.IsZero()
}

// remoteLists are the lists the sources built, by entry; with pending, a
// copy a guard held in place of the one served (SIGHUP).
func (r *Reloader) remoteLists(pending bool) map[string]*blocklist.List {
	out := map[string]*blocklist.List{}
	for name, rs := range r.sources {
		l := rs.list
		if pending && rs.pending != nil {
			l = rs.pending
		}
		if l != nil {
			out[name] = l
		}
	}
	return out
}

// syncSources makes the sources run those cfg names: new entries start,
// entries gone stop, and an entry whose `sources` settings changed
// restarts with the list it had. Called with r.mu held, after the
// snapshot of cfg is published (or before the first).
func (r *Reloader) syncSources(cfg *config.Config) {
	if r.runCtx == nil {
		return // not started: a Reloader of tests, or `check`
	}
	opt := cfg.SourceOptions()
	opt.Log = r.log.Named("source")
	key := sourceKey(opt)
	want := cfg.RemoteLists()
	if r.sources == nil {
		r.sources = map[string]*runningSource{}
	}
	for name, rs := range r.sources {
		if !slices.Contains(want, name) && r.prefetching[rs] > 0 {
			continue // a reload under way waits for it (endPrefetch)
		}
		if !slices.Contains(want, name) || rs.key != key {
			r.stopSource(name, rs)
			if rs.key != key && slices.Contains(want, name) {
				// Its counters go on from the old source's counts: a
				// reload resets no counter. A stopped source counts
				// nothing more (a fetch its stop cuts short is no
				// failure).
				if r.carried == nil {
					r.carried = map[string]sourceCounters{}
				}
				r.carried[name] = r.carried[name].plus(rs.src.Status())
				r.sources[name] = r.startSource(name, opt, key, rs.list)
			} else {
				delete(r.carried, name) // its series go with it
			}
		}
	}
	for _, name := range want {
		if _, ok := r.sources[name]; !ok {
			r.sources[name] = r.startSource(name, opt, key, nil)
		}
	}
	// The Handler's view, for NOTIFY, /readyz and the metrics, is made
	// anew when its sources are not those wanted (any started, stopped
	// or restarted, here or by prefetchSources).
	if rem := r.handler.remote.Load(); rem != nil && slices.EqualFunc(rem.srcs, want,
		func(src source.Source, name string) bool { return r.sources[name].src == src }) {
		return
	}
	rem := &remoteSources{zones: map[string]bool{}, carried: maps.Clone(r.carried)}
	for _, name := range want {
		src := r.sources[name].src
		rem.srcs = append(rem.srcs, src)
		if z, ok := src.(*source.Zone); ok {
			rem.zones[z.Origin()] = true
		}
	}
	if len(rem.zones) > 0 {
		rem.notifier = source.NewNotifier(rem.srcs)
	}
	r.handler.remote.Store(rem)
}

// startSource starts the source of a remote entry, which configuration
// validation has checked.
func (r *Reloader) startSource(name string, opt source.Options, key string, list *blocklist.List) *runningSource {
	src, err := source.New(name, opt)
	if err != nil {
		// Validated with the configuration; a source that cannot be made
		// is reported and leaves its list empty (and /readyz not ready).
		r.log.Error("list source not started", zap.String(logList, name), zap.Error(err))
		src = failedSource{name: name, err: err}
	}
	ctx, cancel := context.WithCancel(r.runCtx)
	rs := &runningSource{src: src, key: key, cancel: cancel, done: make(chan struct{}), list: list}
	r.sourcesRunning.Go(func() {
		defer close(rs.done)
		src.Run(ctx, func(c source.Content) error { return r.applySource(rs, c) })
	})
	return rs
}

// failedSource stands for a source that could not be made: it never has
// content.
type failedSource struct {
	name string
	err  error
}

func (f failedSource) Name() string                                          { return f.name }
func (f failedSource) Run(ctx context.Context, _ func(source.Content) error) { <-ctx.Done() }
func (f failedSource) Fetch(context.Context) (source.Content, error)         { return source.Content{}, f.err }
func (f failedSource) Status() source.Status {
	return source.Status{Name: f.name, LastError: f.err, LastErrorTime: time.Now()}
}

// Wake does nothing: the source never delivers a copy.
func (f failedSource) Wake() {}

// applySource builds the list of a copy a source delivered and applies it
// as a changed file is applied: the running snapshot with that list
// replaced, the fail-closed guards (a list shrinking past
// reload.max_shrink is held until SIGHUP), one atomic store. An error
// refuses the copy: the source counts it as a failure and keeps offering
// the one served.
func (r *Reloader) applySource(rs *runningSource, c source.Content) error {
	if !r.begin() {
		return ErrStopping
	}
	defer r.end()
	start := time.Now()
	name := rs.src.Name()
	r.mu.Lock()
	base := rs.list
	r.mu.Unlock()
	// Parsed outside the lock: a zone of a million records takes a second,
	// and reloads of files need not wait for it.
	l, warn, how, err := buildSourceList(name, c, base)
	if err != nil {
		r.log.Error("list source copy refused, keeping the list served", zap.String(logList, name),
			zap.String("version", c.Version()), zap.Error(err))
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sources[name] != rs {
		return errors.New("the source is no longer configured")
	}
	// The copy served, delivered again: one SIGHUP applied while the
	// source still held the copy before it (acceptPending wakes it), by
	// content hash (the body's; a zone's serial). Its bad lines were
	// logged when it first came, and nothing changes but the source's
	// own copy, which taking it makes the one on disk.
	if base != nil && l.Sum() == base.Sum() && rs.list == base && rs.pending == nil {
		r.log.Info("list source copy is the one served", zap.String(logList, name), zap.String("version", c.Version()))
		return nil
	}
	if warn != nil {
		r.log.Warn("skipped bad lines", zap.String(logList, name), zap.Error(warn))
	}
	prev := r.handler.Snapshot()
	var next *Snapshot
	if prev != nil {
		next = prev.withList(name, l)
	}
	// Before the first snapshot, the copy held (the disk copy, read at
	// start) is what the first snapshot would serve: a network copy that
	// shrank past max_shrink is held, as it would be a moment later,
	// whichever comes first.
	var held error
	if next == nil {
		held = r.startShrink(prev, rs, l)
	} else {
		held = errors.Join(heldChanges(prev, next)...)
	}
	if held != nil {
		rs.pending = l
		r.log.Warn("list source copy held, keeping the list served: SIGHUP applies it", zap.String(logList, name),
			zap.String("version", c.Version()), zap.Error(held))
		r.handler.setHeld(name, true)
		return held
	}
	if next == nil {
		// No snapshot yet (Start builds the first with it), or one that
		// does not use the list any more.
		rs.list, rs.pending = l, nil
		rs.startPeak = max(rs.startPeak, l.Len())
		r.handler.setHeld(name, false)
		r.log.Info("list source loaded", zap.String(logList, name), zap.Int("entries", l.Len()),
			zap.String("version", c.Version()), zap.Bool("from_cache", c.FromCache), zap.Duration("took", time.Since(start)))
		return nil
	}
	next.keepPeaks(prev, false)
	if !r.storeUnlessStopped(func() { r.handler.storeLists(next) }) {
		return ErrStopping
	}
	old := rs.list
	rs.list, rs.pending = l, nil
	r.handler.setHeld(name, false)
	fields := []zap.Field{zap.String(logList, name), zap.Int("entries", l.Len()), zap.String("version", c.Version()),
		zap.String("built", how), zap.Bool("from_cache", c.FromCache), zap.Duration("took", time.Since(start))}
	if c.Kind == source.KindZone {
		// Records of the zone, as the transfer counted them: a diff of a
		// million entries would cost more than the transfer.
		fields = append(fields, zap.String("transfer", c.Transfer), zap.Int("added", c.Added), zap.Int("removed", c.Removed))
	} else {
		d := diffLists(old, l)
		fields = append(fields, zap.Int("added", d.added), zap.Int("removed", d.removed),
			zap.Strings(logAddedEntries, d.addedNames), zap.Strings(logRemovedEntry, d.removedNames))
		if c.ETag != "" {
			fields = append(fields, zap.String("etag", c.ETag))
		}
	}
	r.log.Info("list source applied", fields...)
	if r.AfterReload != nil {
		r.AfterReload(next)
	}
	return nil
}

// startShrink is heldChanges' list guard for a copy l of rs that comes
// before the first snapshot (prev nil): against the copy rs holds and the
// most a copy held before (startPeak), under the starting configuration's
// reload.max_shrink; r.mu is held.
func (r *Reloader) startShrink(prev *Snapshot, rs *runningSource, l *blocklist.List) error {
	if prev != nil || rs.list == nil || r.startCfg == nil {
		return nil
	}
	return listShrink(rs.src.Name(), rs.list.Len(), rs.startPeak, l, r.startCfg.Reload.MaxShrink)
}

// How a source's list was built, for the log.
const (
	builtWhole = "whole"  // parsed from the whole copy
	builtDelta = "update" // the IXFR's changes applied to the list held
)

// buildSourceList parses a copy a source delivered into its list: a body
// as a list file of its name would be (RPZ when the URL's path ends in
// .rpz), a zone's records as RPZ (with base, the list of the copy before,
// only the changes of an IXFR are applied). Bad lines and records are
// skipped and returned as warn; a body of which nothing could be read but
// bad lines is refused (err, onlyBadLines), as a list file is.
func buildSourceList(name string, c source.Content, base *blocklist.List) (l *blocklist.List, warn error, how string, err error) {
	switch c.Kind {
	case source.KindBody:
		if rpzURL(name) {
			l, warn = blocklist.ParseRPZ(name, c.Body)
		} else {
			l, warn = blocklist.Parse(name, c.Body)
		}
	case source.KindZone:
		sum := sha256.Sum256([]byte(c.Zone + " " + strconv.FormatUint(uint64(c.Serial), 10)))
		if d := c.Delta; d != nil && base != nil {
			if serial, _ := base.Serial(); serial == d.From {
				l, err = base.Update(sum, c.Serial,
					func(h rpz.Handler) { rpz.FromRecords(c.Zone, d.Removed, h) },
					func(h rpz.Handler) { rpz.FromRecords(c.Zone, d.Added, h) })
				if err == nil {
					return l, nil, builtDelta, nil
				}
			}
		}
		l, warn = blocklist.FromZone(name, sum, len(c.Records), func(h rpz.Handler) (rpz.Zone, error) {
			return rpz.FromRecords(c.Zone, c.Records, h), nil
		})
	default:
		return nil, nil, "", fmt.Errorf("%s: content of unknown kind %d", name, c.Kind)
	}
	if l == nil {
		return nil, nil, "", fmt.Errorf("%s: %w", name, warn)
	}
	if err := onlyBadLines(fmt.Sprintf("%s (%s)", name, c.Version()), l.Len(), warn); err != nil {
		return nil, nil, "", err
	}
	return l, warn, builtWhole, nil
}

// rpzURL reports whether a URL's path ends in .rpz (any case): its body is
// read as an RPZ zone file.
func rpzURL(name string) bool {
	u, err := url.Parse(name)
	return err == nil && strings.HasSuffix(strings.ToLower(u.Path), ".rpz")
}

// withList is s with the list called name replaced by l (and its bad
// lines by l's): the policies that use it recompiled, the rest shared. It
// is nil when s has no list of that name.
func (s *Snapshot) withList(name string, l *blocklist.List) *Snapshot {
	old, ok := s.Lists[name]
	if !ok {
		return nil
	}
	n := *s
	n.Loaded = time.Now()
	n.Lists = maps.Clone(s.Lists)
	n.Lists[name] = l
	if s.noCopy[name] {
		n.noCopy = maps.Clone(s.noCopy)
		delete(n.noCopy, name)
	}
	n.Warnings = nil
	for _, w := range s.Warnings {
		if !warningOf(w, name) {
			n.Warnings = append(n.Warnings, w)
		}
	}
	if w := l.Warnings(); w != nil {
		n.Warnings = append(n.Warnings, w)
	}
	swap := func(ls []List) []List {
		out := slices.Clone(ls)
		for i, x := range out {
			if x == List(old) {
				out[i] = l
			}
		}
		return out
	}
	policies := make(map[*Policy]*Policy, len(s.Policies))
	n.Policies = make([]*Policy, len(s.Policies))
	for i, p := range s.Policies {
		np := *p
		np.Block, np.Allow = swap(p.Block), swap(p.Allow)
		np.compile()
		np.hasCopy(name)
		policies[p], n.Policies[i] = &np, &np
	}
	n.byClient = new(bart.Table[ClientRange])
	for pfx, cr := range s.byClient.All() {
		cr.Policy = policies[cr.Policy]
		n.byClient.Insert(pfx, cr)
	}
	n.indexBlocking()
	return &n
}

// warningOf reports whether a snapshot warning holds the bad lines of the
// list called name.
func warningOf(w error, name string) bool {
	_, first := blocklist.BadLines(w)
	return first != nil && first.File == name
}

// newWarnings are the warnings of s that prev did not have: all but those
// of the lists s took from prev unchanged (reported when they were read)
// and those of remote lists, whose source logs the bad lines of each copy
// as it reads it (a copy a guard held, which SIGHUP applies, among them).
// A client range file is read at each build, and its bad lines reported
// each time.
func (s *Snapshot) newWarnings(prev *Snapshot) []error {
	var out []error
	for _, w := range s.Warnings {
		_, first := blocklist.BadLines(w)
		if first != nil && config.IsRemote(first.File) {
			continue
		}
		if first != nil && prev != nil {
			if l, ok := s.Lists[first.File]; ok && l == prev.Lists[first.File] {
				continue
			}
		}
		out = append(out, w)
	}
	return out
}

// notify answers a NOTIFY (RFC 1996) for a zone a source pulls with the
// zone sources' Notifier, checked against the packet's own source address
// (the socket peer, never a client a PROXY header or an ECS option names);
// ok is false for an unsigned NOTIFY of any other zone, answered as any
// opcode other than QUERY is (NOTIMP). A signed one of another zone is
// checked and answered as the Notifier answers it (NOTAUTH), signed when
// its TSIG holds (RFC 8945 §5.3): a primary whose zone no source pulls
// any more (a reload removed it) takes an unsigned answer for a failed
// NOTIFY, and sends it again.
func (h *Handler) notify(q *query) (reply, bool) {
	rem := h.remote.Load()
	if rem == nil || rem.notifier == nil || len(q.req.Question) != 1 {
		return reply{}, false
	}
	pulled := rem.zones[strings.ToLower(dns.Fqdn(q.req.Question[0].Name))]
	if !pulled && q.req.IsTsig() == nil {
		return reply{}, false
	}
	if badTSIG(q.req) {
		// A TSIG not last, two, or one without RDATA (RFC 8945 §5.2), as
		// for a query: IsTsig sees none, and the NOTIFY would be taken
		// as unsigned.
		return msgReply(newReply(q.req, dns.RcodeFormatError), ResultFormerr), true
	}
	var tsig error
	if q.req.IsTsig() != nil {
		var wire []byte
		if r, ok := q.w.(listen.Received); ok {
			wire = r.Received()
		}
		tsig = rem.notifier.Verify(q.req, wire)
	}
	m := rem.notifier.Reply(peerAddr(q.w), q.req, tsig)
	if m == nil {
		return reply{}, false
	}
	ruleBuiltAnswer(q.req, m) // before a TSIG signs it
	switch from, zone := peerAddr(q.w), q.req.Question[0].Name; {
	case tsig != nil:
		// Warned of by the zone (at most once a minute), this line for
		// each.
		h.log.Debug("NOTIFY not acted on: its TSIG does not verify", zap.String(logClient, from.String()),
			zap.String(logQName, zone), zap.Error(tsig))
	case m.Rcode == dns.RcodeRefused:
		h.log.Debug("NOTIFY refused: not from the zone's primary", zap.String(logClient, from.String()),
			zap.String(logQName, zone))
	}
	t := m.IsTsig()
	if t == nil {
		return msgReply(m, ResultNotify), true
	}
	b, err := rem.notifier.Pack(m, q.req) // takes the TSIG out of m.Extra
	if err != nil {
		h.log.Error("signing the answer to a NOTIFY", zap.Error(err))
		return msgReply(servfailReply(q.req, dns.ExtendedErrorCodeOther, internalError), ResultServfail), true
	}
	if len(b) > q.maxSize() {
		// A zone and a key name of some hundreds of octets each, to a
		// client of 512: RFC 8945 §5.3 answers with the question and
		// the TSIG alone, signed, TC set and NOERROR, and the primary
		// asks again over TCP. When even that does not fit, TC unsigned.
		m.Extra, m.Truncated, m.Rcode = []dns.RR{t}, true, dns.RcodeSuccess
		if b, err = rem.notifier.Pack(m, q.req); err == nil && len(b) <= q.maxSize() {
			return reply{wire: b, rcode: m.Rcode, result: ResultNotify}, true
		}
		m.Extra = nil
		return msgReply(m, ResultNotify), true
	}
	return reply{wire: b, rcode: m.Rcode, result: ResultNotify}, true
}

// primary reports whether addr is an address a zone source's primary was
// last reached at: one NOTIFY is taken from.
func (h *Handler) primary(addr netip.Addr) bool {
	rem := h.remote.Load()
	return rem != nil && rem.notifier != nil && rem.notifier.Primary(addr)
}

// peerAddr is the packet's own source address: the socket peer, which for
// a connection that began with a PROXY header is the proxy.
func peerAddr(w dns.ResponseWriter) netip.Addr {
	if a, ok := w.RemoteAddr().(*listen.ProxiedAddr); ok {
		return a.Proxy.Addr().Unmap()
	}
	return listen.AddrPortOf(w.RemoteAddr()).Addr().Unmap()
}

// FetchSources fetches each remote list cfg names once and builds its
// list as a delivered copy is built, for `dnsfence check -fetch` and
// `dnsfence explain`: nothing is started and nothing written. With
// diskCopy, a source the network does not answer is read from its disk
// copy in sources.cache_dir instead. Each source's outcome is in its
// SourceReport, in configuration order; the lists are by entry, for
// BuildSnapshotWith.
func FetchSources(ctx context.Context, cfg *config.Config, diskCopy bool) ([]SourceReport, map[string]*blocklist.List) {
	lists := map[string]*blocklist.List{}
	var out []SourceReport
	opt := cfg.SourceOptions()
	for _, name := range cfg.RemoteLists() {
		rep := SourceReport{Name: name}
		src, err := source.New(name, opt)
		if err != nil {
			rep.Err = err
			out = append(out, rep)
			continue
		}
		rep.Content, rep.Err = src.Fetch(ctx)
		if rep.Err != nil && diskCopy {
			if c, err := source.Cached(src); err == nil {
				rep.Content, rep.DiskCopy = c, true
			}
		}
		if rep.Content.Kind != 0 {
			var l *blocklist.List
			l, rep.Warnings, _, err = buildSourceList(name, rep.Content, nil)
			if err != nil {
				rep.Err = errors.Join(rep.Err, err)
			} else {
				rep.List, lists[name] = l, l
			}
		}
		rep.Size = max(len(rep.Content.Records), len(rep.Content.Body))
		rep.Content.Records, rep.Content.Body = nil, nil // the list has what is needed
		out = append(out, rep)
	}
	return out, lists
}

// SourceReport is what FetchSources found of one remote list.
type SourceReport struct {
	Name string
	// Content describes the copy read (its records and body dropped);
	// the zero Content when none was.
	Content source.Content
	// DiskCopy: the network failed (Err says how) and the disk copy was
	// read instead.
	DiskCopy bool
	// Size is the zone's records (its SOA included) or the body's bytes.
	Size     int
	List     *blocklist.List // built from the copy; nil when none was read
	Warnings error           // bad lines and records skipped
	Err      error
}

// acceptPending makes the held copies that next was built with (a
// SIGHUP's) the ones served, and wakes their sources: a source keeps the
// copy before a refused one as its own (its disk copy, serial and status)
// until it delivers one the reload takes, which it would do next at its
// retry (a zone's SOA retry, up to sources.refresh), and a restart with
// the primary or server down meanwhile would serve the copy before the
// change SIGHUP applied.
func (r *Reloader) acceptPending(next *Snapshot) {
	for name, rs := range r.sources {
		if rs.pending != nil && next.Lists[name] == rs.pending {
			rs.list, rs.pending = rs.pending, nil
			r.handler.setHeld(name, false)
			r.log.Info("list source copy applied by SIGHUP", zap.String(logList, name), zap.Int("entries", rs.list.Len()))
			rs.src.Wake()
		}
	}
}
