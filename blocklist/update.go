package blocklist

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"unsafe"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
)

// ErrNotExact says a change does not fit the list it is applied to (a
// trigger to remove is not there, a trigger to add is already there or is
// not one dnsfence applies): build the list from the whole zone instead.
var ErrNotExact = errors.New("the change does not apply exactly to the list held")

// Update returns a new List: l, an RPZ list of a zone transfer (FromZone),
// with the triggers that remove hands its rpz.Handler taken out and those
// that add hands it put in, as an IXFR changes a zone (RFC 1995). l is not
// changed; the new list shares nothing with it that either could write.
// sum and serial identify the new content (Sum, Serial). Call rpz.FromSeq
// or rpz.FromRecords with the handler, for the removed and the added
// records of the zone apex.
//
// The cost is one copy of l's tables plus the changes, not a pass over
// every record of the zone: a hundred changes to a million-trigger zone
// take milliseconds where FromZone takes a second. Update is exact or it
// fails: a trigger to remove that l does not hold with that action, a
// trigger to add that l already holds, or an added record that is not a
// trigger dnsfence applies (which FromZone would report) returns an error
// wrapping ErrNotExact and no List; the caller then builds the list from
// the whole zone with FromZone, which reports what is wrong.
func (l *List) Update(sum [32]byte, serial uint32, remove, add func(rpz.Handler)) (*List, error) {
	if l == nil || l.zone == nil {
		return nil, fmt.Errorf("%w: not an RPZ list", ErrNotExact)
	}
	n := l.clone()
	b := &builder{list: n}
	b.labels.Grow(len(l.labels) + 1024)
	b.labels.WriteString(l.labels)
	n.labels = b.labels.String()
	var bad error
	fail := func(err error) {
		if bad == nil {
			bad = err
		}
	}
	var buf []byte
	remove(rpz.Handler{Trigger: func(t rpz.Trigger) {
		if bad == nil {
			var err error
			buf, err = n.removeTrigger(t, buf)
			fail(err)
		}
	}})
	add(rpz.Handler{
		Trigger: func(t rpz.Trigger) {
			if bad == nil {
				var err error
				buf, err = b.addExact(t, buf)
				fail(err)
			}
		},
		Problem: func(p rpz.Problem) { fail(fmt.Errorf("%s: %w", p.Owner, p.Err)) },
	})
	if bad != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotExact, bad)
	}
	n.zone.serial, n.zone.soa = serial, true
	return b.finish(sum), nil
}

// clone copies everything of l that Update writes.
func (l *List) clone() *List {
	n := *l
	n.nodes = slices.Clone(l.nodes)
	n.slots = slices.Clone(l.slots)
	n.acts = slices.Clone(l.acts)
	n.dups = nil // of the file or transfer l was built from, not of this content
	if l.wildLine != nil {
		n.wildLine = maps.Clone(l.wildLine)
	}
	if l.ips != nil {
		n.ips = l.ips.Clone()
	}
	z := *l.zone
	n.zone = &z
	return &n
}

// removeTrigger takes trigger t out of l, which must hold it with its
// action.
func (l *List) removeTrigger(t rpz.Trigger, buf []byte) ([]byte, error) {
	if t.Prefix.IsValid() {
		if l.ips == nil {
			return buf, fmt.Errorf("%s: not held", t.Owner)
		}
		prev, ok := l.ips.Get(t.Prefix)
		if !ok || prev.action != Action(t.Action) {
			return buf, fmt.Errorf("%s: not held", t.Owner)
		}
		l.ips.Delete(t.Prefix)
		l.count--
		return buf, nil
	}
	var err error
	if buf, err = foldName(t.Name, buf[:0]); err != nil {
		return buf, fmt.Errorf("%s: %w", t.Owner, err)
	}
	id, ok := l.findName(buf)
	shift := uint8(0)
	if t.Wildcard {
		shift = 3
	}
	if !ok || l.acts[id]>>shift&7 != uint8(t.Action)+1 {
		return buf, fmt.Errorf("%s: not held", t.Owner)
	}
	nd := &l.nodes[id]
	wildLine, hasWild := l.wildLine[id]
	l.acts[id] &^= 7 << shift
	delete(l.wildLine, id)
	switch {
	case l.acts[id] == 0: // no trigger left on the node: a parent only
		nd.line, nd.hi = 0, 0
	case !t.Wildcard && hasWild: // the wildcard's line moves back to the node
		nd.line, nd.hi = uint16(wildLine), uint8(wildLine>>16)
	}
	l.count--
	return buf, nil
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

// addExact adds trigger t, which the list must not hold yet, with the
// next line after every trigger held (a transfer's triggers are numbered
// in order).
func (b *builder) addExact(t rpz.Trigger, buf []byte) ([]byte, error) {
	l := b.list
	l.zone.lines++
	line := l.zone.lines
	if line > maxLine {
		return buf, ErrTooManyLines
	}
	var errs errorList
	before := l.count
	if t.Prefix.IsValid() {
		b.addIP(t.Prefix, line, Action(t.Action), &errs, t)
	} else {
		var err error
		if buf, err = foldName(t.Name, buf[:0]); err != nil {
			return buf, fmt.Errorf("%s: %w", t.Owner, err)
		}
		b.addTrigger(buf, line, t.Wildcard, Action(t.Action), &errs, t)
	}
	if err := errs.err(); err != nil {
		return buf, err
	}
	if l.count != before+1 {
		return buf, fmt.Errorf("%s: already held", t.Owner)
	}
	return buf, nil
}
