package blocklist

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"unsafe"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/gaissmai/bart"
)

// ErrNotExact says a change does not fit the list it is applied to (a
// trigger to remove is not there, a trigger to add is already there or is
// not one dnsfence applies), or that the changes since the list was built
// whole have grown past MaxOverlay: build the list from the whole zone
// instead.
var ErrNotExact = errors.New("the change does not apply exactly to the list held")

// MaxOverlay bounds the triggers an updated list holds besides those of
// the list it was built whole as: past it, Update returns ErrNotExact and
// the caller builds the list whole again.
const MaxOverlay = 16384

// Update returns a new List: l, an RPZ list (FromZone), with the triggers
// that remove hands its rpz.Handler taken out and those that add hands it
// put in, as an IXFR changes a zone (RFC 1995). Call rpz.FromSeq or
// rpz.FromRecords with the handler, for the removed and the added records
// of the zone apex. sum and serial identify the new content (Sum,
// Serial).
//
// l is not changed, and the new list shares l's tables without writing
// them: the triggers removed are marked in a bit set of its own, those
// added held in a small list of their own that Match also looks in (the
// most specific trigger of either wins, as in one list). A hundred changes
// to a zone of a million triggers so cost well under a millisecond and
// almost no memory, where FromZone takes a second and the zone's size
// again. Updates of an updated list carry its changes on; once they are
// more than MaxOverlay, Update fails with ErrNotExact, so that the caller
// builds the list whole again and Match stays one table's walk.
//
// Update is exact or it fails: a trigger to remove that the list does not
// hold with that action, a trigger to add that it already holds, or a
// record added or removed that is not a trigger dnsfence applies (which
// FromZone reports: the list's Warnings would no longer be the zone's)
// returns an error wrapping ErrNotExact and no List; the
// caller then builds the list from the whole zone with FromZone, which
// reports what is wrong.
func (l *List) Update(sum [32]byte, serial uint32, remove, add func(rpz.Handler)) (*List, error) {
	if l == nil || l.zone == nil {
		return nil, fmt.Errorf("%w: not an RPZ list", ErrNotExact)
	}
	n := *l
	z := *l.zone
	n.zone, n.sum, n.dups = &z, sum, nil
	n.zone.serial, n.zone.soa = serial, true
	u := updater{list: &n, over: map[string]overTrigger{}}
	if l.over != nil {
		for e, t := range l.over.allTriggers() {
			u.over[overKey(e.Name, t.Wildcard)] = overTrigger{name: e.Name, wildcard: t.Wildcard, action: t.Action, line: e.Line}
		}
	}
	// A record of the change that the list would report (a bad owner, an
	// unsupported trigger) makes the update inexact: the list built whole
	// reports it, and its warnings are then those of the zone it holds
	// (the list updated keeps l's, for the records that stay).
	problem := func(p rpz.Problem) { u.fail(fmt.Errorf("%s: %w", p.Owner, p.Err)) }
	// A trigger at an owner the list reports (a second trigger there with
	// another action, skipped as ErrConflict) changes what is reported of
	// it: removing the kept one leaves the report stale, and the list
	// built whole says what the zone now holds. Past the records reported
	// by name (maxReported), any owner may be one: every trigger changed
	// is then inexact.
	reported, named := reportedOwners(l.warn)
	checked := func(apply func(rpz.Trigger)) func(rpz.Trigger) {
		if len(reported) == 0 && named {
			return apply
		}
		return func(t rpz.Trigger) {
			switch {
			case !named:
				u.fail(fmt.Errorf("%s: the list reports more records than it names (%d), which may be at this owner", t.Owner, maxReported))
			case reported[strings.ToLower(t.Owner)]:
				u.fail(fmt.Errorf("%s: an owner whose records the list reports", t.Owner))
			default:
				apply(t)
			}
		}
	}
	remove(rpz.Handler{Trigger: checked(u.remove), Problem: problem})
	add(rpz.Handler{Trigger: checked(u.add), Problem: problem})
	if u.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotExact, u.err)
	}
	if len(u.over) > MaxOverlay {
		return nil, fmt.Errorf("%w: %d triggers changed since the list was built whole", ErrNotExact, len(u.over))
	}
	if u.overChanged {
		n.over = u.overlay()
	}
	return &n, nil
}

// updater applies one Update's changes to list, a shallow copy of the list
// updated: it copies what it writes (the bit set of removed triggers, the
// response-IP table) before the first write.
type updater struct {
	list        *List
	over        map[string]overTrigger // the triggers added since the list was built whole, by overKey
	overChanged bool
	goneCopied  bool
	ipsCopied   bool
	buf         []byte
	err         error
}

// overTrigger is a trigger added by Update.
type overTrigger struct {
	name     string
	wildcard bool
	action   Action
	line     int
}

func overKey(name string, wildcard bool) string {
	if wildcard {
		return "*." + name
	}
	return name
}

func (u *updater) fail(err error) {
	if u.err == nil {
		u.err = err
	}
}

// remove takes trigger t out: of the triggers added since the list was
// built whole, or else of those it was built with (marked gone).
func (u *updater) remove(t rpz.Trigger) {
	if u.err != nil {
		return
	}
	l := u.list
	if t.Prefix.IsValid() {
		u.copyIPs()
		prev, ok := l.ips.Get(t.Prefix)
		if !ok || prev.action != Action(t.Action) {
			u.fail(fmt.Errorf("%s: not held", t.Owner))
			return
		}
		if prev.spellings > 1 {
			// Another record of the zone writes the same prefix: which
			// of them an update leaves is the whole zone's to say.
			u.fail(fmt.Errorf("%s: one of %d spellings of %s", t.Owner, prev.spellings, prev.name))
			return
		}
		l.ips.Delete(t.Prefix)
		if holdsMapped(t.Prefix) {
			l.ipsMapped = anyHoldsMapped(l.ips)
		}
		l.count--
		return
	}
	name, err := u.fold(t)
	if err != nil {
		u.fail(err)
		return
	}
	key := overKey(name, t.Wildcard)
	if o, ok := u.over[key]; ok {
		if o.action != Action(t.Action) {
			u.fail(fmt.Errorf("%s: held with another action", t.Owner))
			return
		}
		delete(u.over, key)
		u.overChanged = true
		l.count--
		return
	}
	id, ok := l.baseTrigger(u.buf, t.Wildcard, Action(t.Action))
	if !ok {
		u.fail(fmt.Errorf("%s: not held", t.Owner))
		return
	}
	if !u.goneCopied {
		if l.gone == nil {
			l.gone = make([]uint64, (2*len(l.nodes)+63)/64)
		} else {
			l.gone = slices.Clone(l.gone)
		}
		u.goneCopied = true
	}
	bit := goneBit(id, t.Wildcard)
	l.gone[bit/64] |= 1 << (bit % 64)
	l.count--
}

// add puts trigger t in, with the next line after every trigger held (a
// transfer's triggers are numbered in order).
func (u *updater) add(t rpz.Trigger) {
	if u.err != nil {
		return
	}
	l := u.list
	if l.zone.lines++; l.zone.lines > maxLine {
		u.fail(ErrTooManyLines)
		return
	}
	line := l.zone.lines
	if t.Action == rpz.Passthru {
		l.zone.passthru = true
	}
	if t.Prefix.IsValid() {
		u.copyIPs()
		if _, ok := l.ips.Get(t.Prefix); ok {
			u.fail(fmt.Errorf("%s: already held", t.Owner)) // or another spelling of it: see remove
			return
		}
		l.ips.Insert(t.Prefix, ipEntry{name: t.Prefix.String(), line: line, action: Action(t.Action), spellings: 1})
		l.ipsMapped = l.ipsMapped || holdsMapped(t.Prefix)
		l.count++
		return
	}
	name, err := u.fold(t)
	if err != nil {
		u.fail(err)
		return
	}
	key := overKey(name, t.Wildcard)
	if _, ok := u.over[key]; ok {
		u.fail(fmt.Errorf("%s: already held", t.Owner))
		return
	}
	if _, ok := l.liveBaseTrigger(u.buf, t.Wildcard); ok {
		u.fail(fmt.Errorf("%s: already held", t.Owner))
		return
	}
	u.over[key] = overTrigger{name: name, wildcard: t.Wildcard, action: Action(t.Action), line: line}
	u.overChanged = true
	l.count++
}

// fold is t's name as a list stores it, in u.buf too.
func (u *updater) fold(t rpz.Trigger) (string, error) {
	var err error
	if u.buf, err = foldName(t.Name, u.buf[:0]); err != nil {
		return "", fmt.Errorf("%s: %w", t.Owner, err)
	}
	return string(u.buf), nil
}

func (u *updater) copyIPs() {
	if u.ipsCopied {
		return
	}
	if u.list.ips != nil {
		u.list.ips = u.list.ips.Clone()
	} else {
		u.list.ips = &bart.Table[ipEntry]{}
	}
	u.ipsCopied = true
}

// overlay builds the list of the triggers added since the list was built
// whole; nil when there are none.
func (u *updater) overlay() *List {
	if len(u.over) == 0 {
		return nil
	}
	l := u.list
	b := newBuilder(l.file, len(u.over))
	o := b.list
	o.acts = make([]uint8, 1, cap(o.nodes))
	z := *l.zone
	o.zone = &z
	var errs errorList
	for _, t := range slices.SortedFunc(maps.Values(u.over), func(a, b overTrigger) int { return cmp.Compare(a.line, b.line) }) {
		b.addTrigger([]byte(t.name), rpz.Trigger{Owner: t.name, Wildcard: t.wildcard, Action: rpz.Action(t.action)}, t.line, &errs)
	}
	return b.finish(l.sum, nil)
}

// goneBit is the bit of the gone set that marks node id's exact or
// wildcard trigger removed.
func goneBit(id uint32, wildcard bool) uint32 {
	if wildcard {
		return 2*id + 1
	}
	return 2 * id
}

// live is node id's triggers (as acts holds them) less those Update
// removed.
func (l *List) live(id uint32) uint8 {
	k := l.acts[id]
	if l.gone == nil {
		return k
	}
	if bit := goneBit(id, false); l.gone[bit/64]>>(bit%64)&1 != 0 {
		k &^= 7
	}
	if bit := goneBit(id, true); l.gone[bit/64]>>(bit%64)&1 != 0 {
		k &^= 7 << 3
	}
	return k
}

// baseTrigger finds the node of a stored name whose live exact or
// wildcard trigger has action a, among the triggers the list was built
// with.
func (l *List) baseTrigger(name []byte, wildcard bool, a Action) (uint32, bool) {
	id, ok := l.liveBaseTrigger(name, wildcard)
	if !ok {
		return 0, false
	}
	shift := uint8(0)
	if wildcard {
		shift = 3
	}
	return id, l.live(id)>>shift&7 == uint8(a)+1
}

// liveBaseTrigger finds the node of a stored name with a live exact or
// wildcard trigger among those the list was built with.
func (l *List) liveBaseTrigger(name []byte, wildcard bool) (uint32, bool) {
	id, ok := l.findName(name)
	if !ok {
		return 0, false
	}
	shift := uint8(0)
	if wildcard {
		shift = 3
	}
	return id, l.live(id)>>shift&7 != 0
}

// findName finds the node of a stored name.
func (l *List) findName(name []byte) (uint32, bool) {
	parent := uint32(0)
	for end := len(name); ; {
		start := lastDot(name[:end]) + 1
		label := name[start:end]
		id, ok := l.find(parent, unsafe.String(unsafe.SliceData(label), len(label)))
		if !ok {
			return 0, false
		}
		if start == 0 {
			return id, true
		}
		parent, end = id, start-1
	}
}

func lastDot(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '.' {
			return i
		}
	}
	return -1
}

// Delta is how l differs from old when one was made from the other by
// Update, any number of times (an IXFR's copy and the copy before it):
// the name triggers old holds that l does not hold with the same action
// (removed, with old's action) and those l holds that old does not
// (added, with l's), each once, from the changes alone: the bit sets of
// removed triggers (two bits a node: 31,250 words for a million) and the
// overlays of added ones are compared, the names of the changed triggers
// alone built, not a walk of the zone's names (59 us against 364 ms for a
// record of a million-trigger zone in TestZoneUpdateGuarded's setting). ok is
// false when the two are not copies of one list built whole; only a walk
// of both compares those. Response-IP triggers are not compared.
func (l *List) Delta(old *List) (removed, added []TriggerEntry, ok bool) {
	if l == nil || old == nil || l.zone == nil || old.zone == nil || len(l.nodes) == 0 || len(l.nodes) != len(old.nodes) ||
		&l.nodes[0] != &old.nodes[0] || len(l.acts) == 0 || len(l.acts) != len(old.acts) || &l.acts[0] != &old.acts[0] {
		return nil, nil, false
	}
	var buf []byte
	for w := range max(len(l.gone), len(old.gone)) {
		var was, now uint64
		if w < len(old.gone) {
			was = old.gone[w]
		}
		if w < len(l.gone) {
			now = l.gone[w]
		}
		for x := was ^ now; x != 0; x &= x - 1 {
			bit := uint32(w*64 + bits.TrailingZeros64(x))
			id, wildcard := bit/2, bit%2 == 1
			buf = l.appendName(buf[:0], id)
			e := TriggerEntry{Entry: Entry{Name: string(buf), Line: l.triggerLine(id, wildcard)}, Trigger: l.trigger(id, !wildcard)}
			if was&(1<<(bit%64)) == 0 { // live in old, gone in l
				e.List = old
				removed = append(removed, e)
			} else {
				e.List = l
				added = append(added, e)
			}
		}
	}
	overs := func(o *List) map[string]TriggerEntry {
		m := map[string]TriggerEntry{}
		if o != nil {
			for e, t := range o.allTriggers() {
				m[overKey(e.Name, t.Wildcard)] = TriggerEntry{Entry: e, Trigger: t}
			}
		}
		return m
	}
	was, now := overs(old.over), overs(l.over)
	for _, k := range slices.Sorted(maps.Keys(was)) {
		if n, ok := now[k]; !ok || n.Trigger != was[k].Trigger {
			e := was[k]
			e.List = old
			removed = append(removed, e)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if o, ok := was[k]; !ok || o.Trigger != now[k].Trigger {
			e := now[k]
			e.List = l
			added = append(added, e)
		}
	}
	// A trigger of the list built whole removed by one update and added
	// back by a later one is gone from the table and in the overlay: no
	// change.
	key := func(e TriggerEntry) string {
		return overKey(e.Name, e.Trigger.Wildcard) + " " + e.Trigger.Action.String()
	}
	both := map[string]bool{}
	for _, e := range removed {
		both[key(e)] = true
	}
	back := map[string]bool{}
	for _, e := range added {
		if both[key(e)] {
			back[key(e)] = true
		}
	}
	keep := func(e TriggerEntry) bool { return back[key(e)] }
	return slices.DeleteFunc(removed, keep), slices.DeleteFunc(added, keep), true
}

// TriggerEntry is an entry with what it does, as Delta reports them.
type TriggerEntry struct {
	Entry
	Trigger Trigger
}

// reportedOwners is the owner names (lower case) of the records warn, a
// list's Warnings, reports one by one, and whether those are every record
// it reports: false when some are counted, not named (past maxReported,
// moreBadLines), or reported without a ParseError.
func reportedOwners(warn error) (owners map[string]bool, named bool) {
	named = true
	eachBadLine(warn, func(_ string, _, _ int, pe *ParseError) {
		switch {
		case pe == nil:
			named = false
		case pe.Owner != "":
			if owners == nil {
				owners = map[string]bool{}
			}
			owners[strings.ToLower(pe.Owner)] = true
		}
	})
	return owners, named
}
