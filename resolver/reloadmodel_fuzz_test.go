package resolver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The reload model: a folder holding a configuration with one blocking
// policy (a client range file, an optional inline range, block lists
// chosen from three files) and one exempt policy, changed a step at a
// time and reloaded as the watcher or SIGHUP would. After each reload the
// names answered NXDOMAIN to each client must be those of the state the
// model says is in force: a change that narrows what devices reach is
// applied, one that widens it past what README's fail-closed table lets
// through is held (SIGHUP applies it), and a broken file is never
// applied. Every hold and refusal must show in the reloader's status,
// the metrics, the log and /readyz. The model reads a file's entries
// and ranges with blocklist.Parse and ParseRanges, whose own fuzz targets
// check them; what it decides from them is its own.

// The model's files, in the folder of the configuration.
const (
	modelRanges = "ranges.txt"
	modelInline = "127.0.82.64/28" // the blocking policy's inline range, when the configuration has it
)

// modelListFiles are the list files a configuration edit can put in or
// take out of the blocking policy.
var modelListFiles = []string{"a.txt", "b.txt", "c.txt"}

// modelNames are the names the lists are written from: a small tree, so
// that lists overlap (n5 in a and b) and hold names below another's (b's
// w.n1 below a's n1).
var modelNames = []string{
	"n0.example", "n1.example", "n2.example", "n3.example", "n4.example", "n5.example",
	"n6.example", "n7.example", "n8.example", "n9.example", "n10.example", "n11.example",
	"w.n1.example", "w.n6.example",
}

// modelRangeLines are the client ranges the range file is written from:
// eight /30s, two /28s holding four each, and a /26.
var modelRangeLines = []string{
	"127.0.82.16/30", "127.0.82.20/30", "127.0.82.24/30", "127.0.82.28/30",
	"127.0.82.32/30", "127.0.82.36/30", "127.0.82.40/30", "127.0.82.44/30",
	"127.0.82.16/28", "127.0.82.32/28", "127.0.82.128/26",
}

// modelProbeClients are asked about every probe name: one address of each
// /30, the inline range, the /26, an address in no policy and the exempt
// press office.
var modelProbeClients = []string{
	"127.0.82.17", "127.0.82.21", "127.0.82.25", "127.0.82.29", "127.0.82.33", "127.0.82.37",
	"127.0.82.41", "127.0.82.45", "127.0.82.65", "127.0.82.130", "127.0.82.200", "127.0.82.250",
}

// modelProbeNames are the list names, names below them, and a name no
// list holds.
var modelProbeNames = slices.Concat(modelNames, []string{"z.n0.example", "z.n5.example", "z.w.n6.example", "other.example"})

// modelShrinks are the reload.max_shrink values a configuration edit sets.
var modelShrinks = []float64{0, 0.25, 0.5, 0.75}

// modelConfig is what the model writes as dnsfence.yaml.
type modelConfig struct {
	lists     []string // block lists of the blocking policy, of modelListFiles
	rangeFile bool     // client_files: [ranges.txt]
	inline    bool     // clients: [modelInline]
	maxShrink float64
	broken    bool // a YAML syntax error appended
}

// text is the configuration as written.
func (c modelConfig) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, `listen: ["127.0.82.1:0"]
upstreams: ["127.0.82.9:53"]
allowed_clients: ["127.0.82.0/24"]
log: {queries: none}
reload: {debounce: 10ms, max_shrink: %g, unready_after: 1ns}
policies:
  - name: government-devices
`, c.maxShrink)
	if c.inline {
		fmt.Fprintf(&b, "    clients: [%q]\n", modelInline)
	}
	if c.rangeFile {
		fmt.Fprintf(&b, "    client_files: [%q]\n", modelRanges)
	}
	quoted := make([]string, len(c.lists))
	for i, l := range c.lists {
		quoted[i] = fmt.Sprintf("%q", l)
	}
	fmt.Fprintf(&b, "    block: [%s]\n", strings.Join(quoted, ", "))
	b.WriteString("  - name: press-office\n    clients: [\"127.0.82.250/32\"]\n")
	if c.broken {
		b.WriteString("policies: [\n\t- broken\n")
	}
	return b.String()
}

// modelFile is a list or range file on disk: content, or missing, or a
// folder in its place.
type modelFile struct {
	content []byte
	missing bool
	dir     bool
}

// modelList is a list file as the model reads it.
type modelList struct {
	content []byte
	entries []string // the names of its entries
	n       int      // blocklist.List.Len
}

// modelRangeFile is a range file as the model reads it.
type modelRangeFile struct {
	content []byte
	ranges  []netip.Prefix
	bad     []string // the text of each of its bad lines (blocklist.ParseError.Text)
}

// modelPeak is what a list or range file held since the last start or
// SIGHUP: the most entries (ranges, addresses), and what it was then.
type modelPeak struct {
	entries int
	base    []string // a list's entries then
	ranges  int
	v4      float64
	rbase   []netip.Prefix
}

// modelState is a state in force: the configuration and the files it
// names, as read.
type modelState struct {
	cfg    modelConfig
	lists  map[string]modelList
	ranges *modelRangeFile // nil without client_files
	peaks  map[string]modelPeak
}

// reloadModel is the disk and the state the model says is served.
type reloadModel struct {
	cfg     modelConfig
	files   map[string]modelFile
	applied *modelState
}

// The outcomes of a reload.
const (
	modelApplied = "applied"
	modelHeld    = "held"
	modelFailed  = "failed"
	// modelRefused: SIGHUP refused, a file read mid-write (counted held).
	modelRefused = "refused"
	// modelMidWrite: the watcher's reload read a file mid-write: nothing
	// applied, nothing counted, the change left to the watcher.
	modelMidWrite = "mid-write"
)

// read is the disk as a state, or why it cannot be loaded: a broken
// configuration, a file missing or a folder, a file of only bad lines, a
// blocking policy left with no range.
func (m *reloadModel) read() (*modelState, string) {
	if m.cfg.broken {
		return nil, "configuration does not parse"
	}
	if !m.cfg.inline && !m.cfg.rangeFile {
		return nil, "policy has no clients"
	}
	s := &modelState{cfg: m.cfg, lists: map[string]modelList{}}
	for _, name := range m.cfg.lists {
		f := m.files[name]
		if f.missing || f.dir {
			return nil, name + " unreadable"
		}
		l, err := blocklist.Parse(name, f.content)
		if l.Len() == 0 && err != nil {
			return nil, name + " has only bad lines"
		}
		ml := modelList{content: f.content, n: l.Len()}
		for e := range l.All() {
			ml.entries = append(ml.entries, e.Name)
		}
		s.lists[name] = ml
	}
	if m.cfg.rangeFile {
		f := m.files[modelRanges]
		if f.missing || f.dir {
			return nil, "range file unreadable"
		}
		rf, err := blocklist.ParseRanges(modelRanges, f.content)
		if len(rf.Ranges) == 0 && err != nil {
			return nil, "range file has only bad lines"
		}
		if len(rf.Ranges) == 0 && !m.cfg.inline {
			return nil, "no client range left"
		}
		s.ranges = &modelRangeFile{content: f.content, bad: badTexts(err)}
		allowed := netip.MustParsePrefix("127.0.82.0/24")
		for _, r := range rf.Ranges {
			if !r.Prefix.Overlaps(allowed) {
				return nil, "range outside allowed_clients"
			}
			s.ranges.ranges = append(s.ranges.ranges, r.Prefix.Masked())
		}
	}
	return s, ""
}

// badTexts is the text of each bad line err reports (the model's files
// have fewer than are reported one by one).
func badTexts(err error) []string {
	var out []string
	for _, e := range leafErrors(err) {
		if pe, ok := errors.AsType[*blocklist.ParseError](e); ok {
			out = append(out, pe.Text)
		}
	}
	return out
}

// newText reports whether now holds a text more times than was does: a
// bad line the edit added, whatever it fixed.
func newText(was, now []string) bool {
	n := map[string]int{}
	for _, t := range was {
		n[t]++
	}
	for _, t := range now {
		if n[t]--; n[t] < 0 {
			return true
		}
	}
	return false
}

// blocks reports whether the state's blocking policy blocks name: a list
// entry is the name or one above it.
func (s *modelState) blocks(name string) bool {
	for _, l := range s.lists {
		for _, e := range l.entries {
			if name == e || strings.HasSuffix(name, "."+e) {
				return true
			}
		}
	}
	return false
}

// covers reports whether a client is in the blocking policy's ranges
// (none of which the exempt policy's /32 is inside).
func (s *modelState) covers(client netip.Addr) bool {
	if s.cfg.inline && netip.MustParsePrefix(modelInline).Contains(client) {
		return true
	}
	return s.ranges != nil && slices.ContainsFunc(s.ranges.ranges, func(p netip.Prefix) bool { return p.Contains(client) })
}

// nxdomain is every probe "client name" the state answers NXDOMAIN.
func (s *modelState) nxdomain() []string {
	var out []string
	if len(s.cfg.lists) == 0 {
		return nil
	}
	for _, c := range modelProbeClients {
		if !s.covers(netip.MustParseAddr(c)) {
			continue
		}
		for _, n := range modelProbeNames {
			if s.blocks(n) {
				out = append(out, c+" "+n)
			}
		}
	}
	return out
}

// addressSet is every IPv4 address the ranges cover, each once.
func addressSet(ranges []netip.Prefix) map[netip.Addr]bool {
	set := map[netip.Addr]bool{}
	for _, p := range ranges {
		for a := p.Masked().Addr(); a.IsValid() && p.Contains(a); a = a.Next() {
			set[a] = true
		}
	}
	return set
}

// kept counts the addresses of was that now holds too.
func kept(was, now map[netip.Addr]bool) float64 {
	n := 0
	for a := range was {
		if now[a] {
			n++
		}
	}
	return float64(n)
}

// held is why README's fail-closed table holds going from the state in
// force to next, or "". A measure is held against the most since the
// last start or SIGHUP only when this change lowers it: one the guards
// let fall with max_shrink 0 or looser is not a reason to hold what is
// added after.
func (m *reloadModel) held(next *modelState) string {
	prev := m.applied
	ms := guardShrink(&config.Config{Reload: config.Reload{MaxShrink: prev.cfg.maxShrink}},
		&config.Config{Reload: config.Reload{MaxShrink: next.cfg.maxShrink}})
	if ms <= 0 {
		return "" // max_shrink 0 turns every guard off
	}
	if narrowsOnly(prev, next) {
		return "" // more entries, more ranges: applied at once
	}
	// A block list losing more than max_shrink of its entries, against
	// the state in force and the most since the last start or SIGHUP.
	for _, name := range next.cfg.lists {
		old, ok := prev.lists[name]
		l := next.lists[name]
		if !ok || bytes.Equal(old.content, l.content) {
			continue
		}
		if l.n < old.n && shrunk(float64(max(old.n, prev.peaks[name].entries)), float64(l.n), ms) {
			return name + " lost entries"
		}
	}
	wasBlocking, blocking := len(prev.cfg.lists) > 0, len(next.cfg.lists) > 0
	if wasBlocking && blocking {
		// Entries that no longer block: past max_shrink of a list's own,
		// or of those it had at the last start or SIGHUP once any entry
		// no longer blocks.
		lost := false
		for _, name := range prev.cfg.lists {
			old := prev.lists[name]
			if l, ok := next.lists[name]; ok && bytes.Equal(old.content, l.content) {
				continue
			}
			removed := 0
			for _, e := range old.entries {
				if !next.blocks(e) {
					removed++
				}
			}
			lost = lost || removed > 0
			if _, ok := next.lists[name]; ok && shrunk(float64(old.n), float64(old.n-removed), ms) {
				return name + ": entries no longer block"
			}
		}
		for _, name := range next.cfg.lists {
			if _, ok := prev.lists[name]; !ok || !lost {
				continue
			}
			base := prev.peaks[name].base
			gone := 0
			for _, e := range base {
				if !next.blocks(e) {
					gone++
				}
			}
			if len(base) > 0 && shrunk(float64(len(base)), float64(len(base)-gone), ms) {
				return name + ": entries of the last start or SIGHUP no longer block"
			}
		}
	}
	if wasBlocking {
		switch {
		case !blocking:
			return "policy no longer blocks"
		case slices.ContainsFunc(prev.cfg.lists, func(l string) bool { return !slices.Contains(next.cfg.lists, l) }):
			return "block list removed"
		case prev.cfg.inline && !next.cfg.inline:
			return "inline range removed"
		case prev.cfg.rangeFile && !next.cfg.rangeFile:
			return "client file removed"
		}
	}
	if prev.ranges != nil && next.ranges != nil && !bytes.Equal(prev.ranges.content, next.ranges.content) {
		pk := prev.peaks[modelRanges]
		was, now := addressSet(prev.ranges.ranges), addressSet(next.ranges.ranges)
		base := addressSet(pk.rbase)
		old4, new4 := float64(len(was)), float64(len(now))
		oldN, newN := len(prev.ranges.ranges), len(next.ranges.ranges)
		lost := old4 - kept(was, now)
		switch {
		case newN < oldN && shrunk(float64(max(oldN, pk.ranges)), float64(newN), ms):
			return "range file lost ranges"
		case new4 < old4 && shrunk(max(old4, pk.v4), new4, ms):
			return "range file lost addresses"
		case lost > old4*ms:
			return "range file moved"
		case lost > 0 && float64(len(base))-kept(base, now) > float64(len(base))*ms:
			return "range file moved since the last start or SIGHUP"
		case lost > 0 && newText(prev.ranges.bad, next.ranges.bad):
			return "range file lost addresses beside a new bad line"
		}
	}
	return ""
}

// narrowsOnly reports whether going from prev to next takes nothing away
// from the blocking policy: every list kept with every entry, every range
// kept, lists and ranges added at most (max_shrink changed or not). Such
// a change blocks more devices or names, never fewer.
func narrowsOnly(prev, next *modelState) bool {
	for _, name := range prev.cfg.lists {
		l, ok := next.lists[name]
		if !ok || slices.ContainsFunc(prev.lists[name].entries, func(e string) bool { return !slices.Contains(l.entries, e) }) {
			return false
		}
	}
	if prev.cfg.inline && !next.cfg.inline {
		return false
	}
	if prev.ranges == nil {
		return true
	}
	return next.ranges != nil && !slices.ContainsFunc(prev.ranges.ranges, func(p netip.Prefix) bool { return !slices.Contains(next.ranges.ranges, p) })
}

// apply makes next the state in force, with the peaks kept since the
// last start or SIGHUP (reset: SIGHUP starts them again).
func (m *reloadModel) apply(next *modelState, reset bool) {
	prev := m.applied
	next.peaks = map[string]modelPeak{}
	for name, l := range next.lists {
		pk := modelPeak{entries: l.n, base: l.entries}
		if _, ok := prev.lists[name]; ok && !reset {
			was := prev.peaks[name]
			pk.entries, pk.base = max(pk.entries, was.entries), was.base
		}
		next.peaks[name] = pk
	}
	if rf := next.ranges; rf != nil {
		v4 := float64(len(addressSet(rf.ranges)))
		pk := modelPeak{ranges: len(rf.ranges), v4: v4, rbase: rf.ranges}
		if was := prev.peaks[modelRanges]; prev.ranges != nil && !reset {
			if bytes.Equal(prev.ranges.content, rf.content) {
				pk = was
			} else {
				pk.ranges, pk.v4, pk.rbase = max(pk.ranges, was.ranges), max(v4, was.v4), was.rbase
			}
		}
		next.peaks[modelRanges] = pk
	}
	m.applied = next
}

// reload is what a reload of the disk must do, and why.
func (m *reloadModel) reload(force bool) (outcome, why string) {
	next, broken := m.read()
	if broken != "" {
		return modelFailed, broken
	}
	why = m.held(next)
	if why != "" && !force {
		return modelHeld, why
	}
	m.apply(next, force)
	return modelApplied, why
}

// readMidWrite is what a reload must do whose read of the files is
// caught mid-write by a writer that starts once it read the
// configuration: fail on what it read, or apply nothing.
func (m *reloadModel) readMidWrite(force bool) (outcome, why string) {
	if _, broken := m.read(); broken != "" {
		return modelFailed, broken
	}
	if force {
		return modelRefused, "a file changed while it was read"
	}
	return modelMidWrite, "a file changed while it was read"
}

// linesOf is what a list or range file on disk holds, an entry or range
// a line, for an edit to start from: nothing when it is not a file.
func (m *reloadModel) linesOf(name string, parse func([]byte) []string) []string {
	f := m.files[name]
	if f.missing || f.dir {
		return nil
	}
	return parse(f.content)
}

// listLines are the names of a list file's entries.
func listLines(data []byte) []string {
	l, _ := blocklist.Parse("x.txt", data)
	var out []string
	for e := range l.All() {
		out = append(out, e.Name)
	}
	return out
}

// rangeLines are the ranges of a client range file, as text.
func rangeLines(data []byte) []string {
	rf, _ := blocklist.ParseRanges("x.txt", data)
	var out []string
	for _, r := range rf.Ranges {
		out = append(out, r.Prefix.String())
	}
	return out
}

// edited is lines with k of them (from the one at at) removed, and k of
// universe they lack added, when remove and add say to.
func edited(lines, universe []string, k, at int, remove, add bool) []string {
	out := slices.Clone(lines)
	if remove && len(out) > 0 {
		k := min(k, len(out))
		at %= len(out)
		for range k {
			out = slices.Delete(out, at%len(out), at%len(out)+1)
		}
	}
	if add {
		var missing []string
		for _, u := range universe {
			if !slices.Contains(lines, u) && !slices.Contains(out, u) {
				missing = append(missing, u)
			}
		}
		for i := range min(k, len(missing)) {
			out = append(out, missing[(at+i)%len(missing)])
		}
	}
	return out
}

// fileOp is an edit of a list or range file: what it does to the lines
// (universe: the lines it may add), given an argument.
func fileOp(kind, arg byte, lines, universe []string) (content []byte, what string) {
	k, at := int(arg&0x0f), int(arg>>4)
	join := func(ls []string) []byte {
		if len(ls) == 0 {
			return nil
		}
		return []byte(strings.Join(ls, "\n") + "\n")
	}
	switch kind {
	case 0:
		return join(edited(lines, universe, k, at, true, false)), fmt.Sprintf("remove %d", k)
	case 1:
		return join(edited(lines, universe, k, at, false, true)), fmt.Sprintf("add %d", k)
	case 2:
		return join(edited(lines, universe, k, at, true, true)), fmt.Sprintf("replace %d", k)
	case 3:
		return nil, "empty"
	case 4:
		// Cut mid-line, as a writer that stopped part way leaves it.
		full := join(lines)
		if len(full) < 2 {
			return full, "truncate (too short)"
		}
		cut := 1 + int(arg)%(len(full)-1)
		return full[:cut], fmt.Sprintf("truncate at %d of %d", cut, len(full))
	case 5:
		if arg&1 != 0 {
			return []byte("<html>\n<body>not a list</body>\n"), "only bad lines"
		}
		out := slices.Clone(lines)
		if arg&2 != 0 && len(out) > 0 {
			// A line written wrong: what it held lost to a bad line.
			i := at % len(out)
			out[i] += "/!"
			return join(out), fmt.Sprintf("line %d written wrong", i+1)
		}
		out = slices.Insert(out, at%(len(out)+1), "bad entry!")
		return join(out), "a bad line"
	}
	return nil, ""
}

// modelOps names the operations, by the first octet of each.
var modelOps = []string{
	"list edit", "list missing or a folder", "range file edit", "range file missing or a folder",
	"configuration toggles a block list", "configuration toggles the client file", "configuration toggles the inline range",
	"configuration sets max_shrink", "configuration broken", "watcher reload", "SIGHUP",
	"configuration written while a reload reads it",
}

// modelRun holds the model and the reloader under test.
type modelRun struct {
	t       *testing.T
	dir     string
	model   *reloadModel
	h       *Handler
	r       *Reloader
	reg     *prometheus.Registry
	logs    *observer.ObservedLogs
	steps   []string
	results map[string]float64 // reloads_total by result, as the model counts them
	last    string             // the outcome of the last reload counted
	// rewrite, when set, is written as the configuration once the
	// reloader read it loads times more (then rewrite is nil again).
	rewrite *modelConfig
	loads   int
}

func (run *modelRun) write(name string, f modelFile) {
	t := run.t
	path := filepath.Join(run.dir, name)
	require.NoError(t, os.RemoveAll(path))
	switch {
	case f.dir:
		require.NoError(t, os.Mkdir(path, 0o755))
	case !f.missing:
		tmp := path + ".tmp"
		require.NoError(t, os.WriteFile(tmp, f.content, 0o644))
		require.NoError(t, os.Rename(tmp, path))
	}
	run.model.files[name] = f
}

func (run *modelRun) writeConfig(c modelConfig) {
	t := run.t
	path := filepath.Join(run.dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path+".tmp", []byte(c.text()), 0o644))
	require.NoError(t, os.Rename(path+".tmp", path))
	run.model.cfg = c
}

// step applies one operation; reloads check the reloader against the
// model.
func (run *modelRun) step(op, target, arg byte) {
	m := run.model
	name := modelListFiles[int(target)%len(modelListFiles)]
	cfg := m.cfg
	cfg.lists = slices.Clone(cfg.lists)
	cfg.broken = false
	switch int(op) % len(modelOps) {
	case 0:
		content, what := fileOp(target/3%6, arg, m.linesOf(name, listLines), modelNames)
		run.steps = append(run.steps, fmt.Sprintf("%s: %s", name, what))
		run.write(name, modelFile{content: content})
	case 1:
		run.steps = append(run.steps, fmt.Sprintf("%s: missing %v, a folder %v", name, arg&1 == 0, arg&1 != 0))
		run.write(name, modelFile{missing: arg&1 == 0, dir: arg&1 != 0})
	case 2:
		content, what := fileOp(target%6, arg, m.linesOf(modelRanges, rangeLines), modelRangeLines)
		run.steps = append(run.steps, fmt.Sprintf("%s: %s", modelRanges, what))
		run.write(modelRanges, modelFile{content: content})
	case 3:
		run.steps = append(run.steps, fmt.Sprintf("%s: missing %v, a folder %v", modelRanges, arg&1 == 0, arg&1 != 0))
		run.write(modelRanges, modelFile{missing: arg&1 == 0, dir: arg&1 != 0})
	case 4:
		if i := slices.Index(cfg.lists, name); i >= 0 {
			cfg.lists = slices.Delete(cfg.lists, i, i+1)
		} else {
			cfg.lists = append(cfg.lists, name)
		}
		run.steps = append(run.steps, fmt.Sprintf("config: block %v", cfg.lists))
		run.writeConfig(cfg)
	case 5:
		cfg.rangeFile = !cfg.rangeFile
		run.steps = append(run.steps, fmt.Sprintf("config: client file %v", cfg.rangeFile))
		run.writeConfig(cfg)
	case 6:
		cfg.inline = !cfg.inline
		run.steps = append(run.steps, fmt.Sprintf("config: inline range %v", cfg.inline))
		run.writeConfig(cfg)
	case 7:
		cfg.maxShrink = modelShrinks[int(arg)%len(modelShrinks)]
		run.steps = append(run.steps, fmt.Sprintf("config: max_shrink %g", cfg.maxShrink))
		run.writeConfig(cfg)
	case 8:
		cfg.broken = true
		run.steps = append(run.steps, "config: broken")
		run.writeConfig(cfg)
	case 9:
		run.reload(false, nil)
	case 10:
		run.reload(true, nil)
	case 11:
		// A configuration edit written while a reload reads the files.
		if i := slices.Index(cfg.lists, name); i >= 0 && arg&2 != 0 {
			cfg.lists = slices.Delete(cfg.lists, i, i+1)
		} else {
			cfg.maxShrink = modelShrinks[int(arg>>2)%len(modelShrinks)]
		}
		run.steps = append(run.steps, fmt.Sprintf("config written while read: %+v", cfg))
		run.reload(arg&1 != 0, &cfg)
	}
}

// reload reloads as the watcher (force false) or SIGHUP would, and checks
// the outcome, the names blocked, and what shows of it, against the
// model. A rewrite is a configuration written while the reload reads the
// files, just after the reload read the configuration: a file read
// mid-write.
func (run *modelRun) reload(force bool, rewrite *modelConfig) {
	t := run.t
	trigger := Trigger{Kind: TriggerFiles, Files: []string{filepath.Join(run.dir, "dnsfence.yaml")}}
	run.loads = 1
	if force {
		trigger = Trigger{Kind: TriggerSIGHUP}
		run.loads = 2 // SIGHUP reads it first for the files to wait for
	}
	var want, why string
	if rewrite == nil || rewrite.text() == run.model.cfg.text() {
		want, why = run.model.reload(force)
	} else {
		want, why = run.model.readMidWrite(force)
		run.rewrite = rewrite
	}
	run.steps = append(run.steps, fmt.Sprintf("reload (%s): want %s %s", trigger.Kind, want, why))
	steps := strings.Join(run.steps, "\n")
	run.logs.TakeAll()
	before := run.r.Status()
	err := run.r.ReloadFor(trigger)
	if rewrite != nil {
		require.Nil(t, run.rewrite, "the configuration was not read as often as the model says")
		run.model.cfg = *rewrite
	}
	st := run.r.Status()
	logged := func(level zapcore.Level, msg string) {
		require.Equal(t, 1, run.logs.FilterLevelExact(level).FilterMessageSnippet(msg).Len(), "log %q; steps:\n%s", msg, steps)
	}
	switch want {
	case modelApplied:
		require.NoError(t, err, "steps:\n%s", steps)
		require.True(t, st.OK, "steps:\n%s", steps)
		if why != "" {
			logged(zapcore.WarnLevel, "SIGHUP applied changes that a reload holds")
		}
	case modelHeld:
		require.ErrorIs(t, err, ErrHeld, "steps:\n%s", steps)
		require.True(t, st.Held && !st.OK, "steps:\n%s", steps)
		logged(zapcore.WarnLevel, "reload held, keeping the last good state")
	case modelRefused:
		require.ErrorIs(t, err, ErrIncomplete, "steps:\n%s", steps)
		require.True(t, st.Held && !st.OK, "steps:\n%s", steps)
		logged(zapcore.WarnLevel, "SIGHUP reload refused, keeping the last good state: a file is still being written")
	case modelMidWrite:
		require.ErrorIs(t, err, ErrReadMidWrite, "steps:\n%s", steps)
		require.Equal(t, before, st, "a read caught mid-write is neither applied nor counted; steps:\n%s", steps)
		logged(zapcore.InfoLevel, "files changed while they were read: applying them once they settle")
	case modelFailed:
		require.Error(t, err, "steps:\n%s", steps)
		require.NotErrorIs(t, err, ErrHeld, "steps:\n%s", steps)
		require.True(t, !st.Held && !st.OK, "steps:\n%s", steps)
		logged(zapcore.ErrorLevel, "reload failed, keeping the last good state")
	}
	if want != modelMidWrite {
		run.last = want
		result := map[string]string{modelApplied: reloadSucceeded, modelHeld: reloadHeld, modelRefused: reloadHeld, modelFailed: reloadFailed}[want]
		run.results[result]++
	}
	for _, r := range []string{reloadSucceeded, reloadHeld, reloadFailed} {
		n, _ := metricValue(t, run.reg, "dnsfence_reloads_total", "result", r)
		require.Equal(t, run.results[r], n, "dnsfence_reloads_total{result=%q}; steps:\n%s", r, steps)
	}
	held, _ := metricValue(t, run.reg, "dnsfence_reload_held")
	require.Equal(t, bit(run.last == modelHeld || run.last == modelRefused), held, "dnsfence_reload_held; steps:\n%s", steps)
	ok, _ := metricValue(t, run.reg, "dnsfence_reload_ok")
	require.Equal(t, bit(run.last == modelApplied), ok, "dnsfence_reload_ok; steps:\n%s", steps)
	if run.last != modelApplied {
		// unready_after is 1ns: /readyz says so before it asks an upstream.
		ready, reason := run.h.ready(context.Background(), 0)
		require.False(t, ready, "steps:\n%s", steps)
		what := "reloads have been held"
		if run.last == modelFailed {
			what = "reloads have failed"
		}
		require.Contains(t, reason, what, "steps:\n%s", steps)
	}
	run.checkBlocked(steps)
}

// checkBlocked compares the probes the handler's snapshot answers
// NXDOMAIN (Explain: the decision queries take) with the model's.
func (run *modelRun) checkBlocked(steps string) {
	snap := run.h.Snapshot()
	var got []string
	for _, c := range modelProbeClients {
		for _, n := range modelProbeNames {
			if snap.Explain(netip.MustParseAddr(c), n, dns.TypeA).Rcode == "NXDOMAIN" {
				got = append(got, c+" "+n)
			}
		}
	}
	require.Equal(run.t, run.model.applied.nxdomain(), got, "probes answered NXDOMAIN; steps:\n%s", steps)
}

// startModel writes the first state and serves it.
func startModel(t *testing.T, first byte) *modelRun {
	dir := t.TempDir()
	run := &modelRun{t: t, dir: dir, results: map[string]float64{},
		model: &reloadModel{files: map[string]modelFile{}}}
	join := func(ls ...string) modelFile { return modelFile{content: []byte(strings.Join(ls, "\n") + "\n")} }
	run.write("a.txt", join(modelNames[0:6]...))
	run.write("b.txt", join(append(slices.Clone(modelNames[5:10]), "w.n1.example")...))
	run.write("c.txt", join(modelNames[9:12]...))
	run.write(modelRanges, join(modelRangeLines[0], modelRangeLines[1], modelRangeLines[9], modelRangeLines[10]))
	cfg := modelConfig{lists: []string{"a.txt", "b.txt"}, rangeFile: true, inline: first&1 != 0,
		maxShrink: modelShrinks[1+int(first>>1)%(len(modelShrinks)-1)]}
	run.writeConfig(cfg)
	first0, broken := run.model.read()
	require.Empty(t, broken)
	run.model.applied = &modelState{cfg: first0.cfg, lists: first0.lists, ranges: first0.ranges}
	run.model.apply(first0, true)

	path := filepath.Join(dir, "dnsfence.yaml")
	c, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(c, nil)
	require.NoError(t, err)
	run.reg = prometheus.NewRegistry()
	m := NewMetrics(run.reg)
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	core, logs := observer.New(zap.InfoLevel)
	run.logs = logs
	run.h = NewHandler(zap.New(core), snap, m)
	t.Cleanup(func() { run.h.Snapshot().Forwarder().Close() })
	run.last = modelApplied
	run.r = NewReloader(zap.New(core), run.h, func() (*config.Config, error) {
		c, err := config.Load(path)
		if run.rewrite != nil {
			if run.loads--; run.loads == 0 {
				require.NoError(t, os.WriteFile(path, []byte(run.rewrite.text()), 0o644))
				run.rewrite = nil
			}
		}
		return c, err
	})
	run.steps = []string{fmt.Sprintf("start: %+v", cfg)}
	run.checkBlocked("start")
	return run
}

// FuzzReloadSequence runs up to 12 operations on the model's folder
// (list and range file edits: entries removed, added or replaced around
// max_shrink, emptied, cut mid-line, a bad line or only bad ones, the file
// deleted or a folder in its place; configuration edits: a block list, the
// client file or the inline range put in or taken out, max_shrink set, the
// YAML broken; reloads as the watcher's and SIGHUP's, and either reading
// a configuration written while it reads the files), each three octets:
// operation, target, argument. The first octet chooses the inline range
// and the starting max_shrink. A last watcher reload and SIGHUP end every
// sequence.
func FuzzReloadSequence(f *testing.F) {
	const (
		listEdit, listGone, rangeEdit, rangeGone, cfgList, cfgFile, cfgInline, cfgShrink, cfgBroken, watch, hup, midWrite = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
	)
	// list edit targets: target%3 the list, target/3%6 the edit (remove,
	// add, replace, empty, truncate, bad line).
	list := func(file, edit byte) byte { return edit*3 + file }
	for _, seed := range [][]byte{
		{2, listEdit, list(0, 0), 0x02, watch, 0, 0},                                          // a loses 2 of 6 at max_shrink 0.5: applied
		{2, listEdit, list(0, 0), 0x04, watch, 0, 0, hup, 0, 0},                               // a loses 4 of 6: held, SIGHUP applies
		{0, listEdit, list(1, 1), 0x03, watch, 0, 0},                                          // b gains 3: applied
		{2, listEdit, list(1, 2), 0x16, watch, 0, 0, hup, 0, 0},                               // b's 6 replaced: held
		{2, listEdit, list(0, 3), 0, watch, 0, 0, listEdit, list(0, 1), 0x01, watch, 0, 0},    // a emptied: held; a later edit waits with it
		{2, listEdit, list(0, 4), 0x09, watch, 0, 0, hup, 0, 0},                               // a cut mid-line
		{2, listEdit, list(1, 4), 0xf0, watch, 0, 0},                                          // b cut near its end
		{2, listEdit, list(0, 5), 0x00, watch, 0, 0},                                          // a bad line, skipped
		{2, listEdit, list(0, 5), 0x01, watch, 0, 0, hup, 0, 0},                               // only bad lines: refused, SIGHUP too
		{2, listGone, 0, 0, watch, 0, 0, hup, 0, 0},                                           // a deleted
		{2, listGone, 1, 1, watch, 0, 0, hup, 0, 0, listEdit, list(1, 1), 0x06, hup, 0, 0},    // b a folder, then a file again
		{2, listEdit, list(0, 0), 0x02, watch, 0, 0, listEdit, list(0, 0), 0x02, watch, 0, 0}, // cuts that add up past max_shrink
		{2, rangeEdit, 0, 0x01, watch, 0, 0, rangeEdit, 0, 0x01, watch, 0, 0},                 // range file loses 1 of 4, then another
		{2, rangeEdit, 1, 0x03, watch, 0, 0},                                                  // range file gains 3
		{2, rangeEdit, 2, 0x34, watch, 0, 0, hup, 0, 0},                                       // ranges moved
		{3, rangeEdit, 3, 0, watch, 0, 0, hup, 0, 0},                                          // range file emptied, an inline range left
		{2, rangeEdit, 3, 0, watch, 0, 0, hup, 0, 0},                                          // range file emptied, no range left: refused
		{2, rangeEdit, 4, 0x21, watch, 0, 0},                                                  // range file cut mid-line
		{2, rangeEdit, 5, 0x00, watch, 0, 0, rangeEdit, 5, 0x01, watch, 0, 0},                 // a bad range line, then only bad lines
		{2, rangeEdit, 5, 0x02, watch, 0, 0, hup, 0, 0},                                       // a /30 of 88 addresses written wrong: held, SIGHUP applies
		{2, listEdit, list(0, 5), 0x12, watch, 0, 0},                                          // an entry of a written wrong: 1 of 6, applied
		{2, rangeGone, 0, 0, watch, 0, 0, rangeGone, 0, 1, hup, 0, 0},                         // range file moved away, then a folder
		{2, cfgList, 0, 0, watch, 0, 0, hup, 0, 0, cfgList, 0, 0, watch, 0, 0},                // a dropped from the policy: held; added back
		{2, cfgList, 2, 0, watch, 0, 0},                                                       // c added: applied
		{2, cfgList, 0, 0, cfgList, 1, 0, watch, 0, 0, hup, 0, 0},                             // every list dropped: no longer blocks
		{3, cfgFile, 0, 0, watch, 0, 0, hup, 0, 0, cfgFile, 0, 0, watch, 0, 0},                // client file dropped, inline range left
		{2, cfgInline, 0, 0, watch, 0, 0, cfgInline, 0, 0, watch, 0, 0},                       // inline range added, then dropped
		{2, cfgShrink, 0, 0, listEdit, list(0, 3), 0, watch, 0, 0},                            // max_shrink 0 in the same write: guarded by the running value
		{0, cfgShrink, 0, 0, watch, 0, 0, listEdit, list(0, 3), 0, watch, 0, 0},               // max_shrink 0 applied, then the guards are off
		{2, cfgShrink, 0, 1, watch, 0, 0, listEdit, list(0, 0), 0x02, watch, 0, 0},            // max_shrink 0.25, then a cut of 2 of 6
		{2, cfgBroken, 0, 0, watch, 0, 0, hup, 0, 0, cfgShrink, 0, 2, watch, 0, 0},
		// Guards off, a cut, guards on: an entry or a range added was held
		// (testdata/fuzz/FuzzReloadSequence), as was an entry added after
		// max_shrink was lowered.
		{2, cfgShrink, 0, 0, watch, 0, 0, listEdit, list(0, 0), 0x05, watch, 0, 0, cfgShrink, 0, 2, watch, 0, 0, listEdit, list(0, 1), 0x01, watch, 0, 0},
		{2, cfgShrink, 0, 0, watch, 0, 0, rangeEdit, 0, 0x33, watch, 0, 0, cfgShrink, 0, 2, watch, 0, 0, rangeEdit, 1, 0x01, watch, 0, 0},
		{2, listEdit, list(0, 0), 0x03, watch, 0, 0, cfgShrink, 0, 1, watch, 0, 0, listEdit, list(0, 1), 0x01, watch, 0, 0}, // configuration broken, then fixed
		{2, midWrite, 0, 0x02, watch, 0, 0},                        // a dropped while the watcher's reload reads: nothing, then held
		{2, midWrite, 0, 0x05, hup, 0, 0},                          // max_shrink written while SIGHUP reads: refused, then applied
		{2, cfgBroken, 0, 0, midWrite, 1, 0x03, watch, 0, 0},       // broken when read, fixed meanwhile: failed
		{2, listEdit, list(0, 3), 0, midWrite, 1, 0x0d, hup, 0, 0}, // a emptied, SIGHUP refused mid-write, then applies it
	} {
		f.Add(seed)
	}
	f.Fuzz(runReloadSequence)
}

// runReloadSequence is FuzzReloadSequence's run of data.
func runReloadSequence(t *testing.T, data []byte) {
	if len(data) == 0 {
		return
	}
	run := startModel(t, data[0])
	ops := data[1:]
	for i := 0; i+2 < len(ops) && i/3 < 12; i += 3 {
		run.step(ops[i], ops[i+1], ops[i+2])
	}
	run.reload(false, nil)
	run.reload(true, nil)
}
