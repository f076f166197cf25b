package blocklist

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"iter"
	"net/netip"
	"slices"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/gaissmai/bart"
)

// Action is what a list entry asks for when it matches. Every entry of a
// plain list (names, hosts and Adblock lines) blocks with NXDOMAIN, the
// zero Action; an RPZ trigger carries its own (draft-vixie-dnsop-dns-rpz
// §5: `CNAME .`, `CNAME *.`, `CNAME rpz-drop.`, `CNAME rpz-passthru.`).
type Action uint8

const (
	// ActionNXDOMAIN blocks with NXDOMAIN (RFC 8020: the name and every
	// name below it do not exist).
	ActionNXDOMAIN = Action(rpz.NXDOMAIN)
	// ActionNODATA blocks with NOERROR and no answer records (RFC 2308
	// §2.2).
	ActionNODATA = Action(rpz.NODATA)
	// ActionDrop blocks by sending no answer at all.
	ActionDrop = Action(rpz.Drop)
	// ActionPassthru allows: the entry is an allow entry, and beats every
	// block entry, of this list and of every other list.
	ActionPassthru = Action(rpz.Passthru)
)

func (a Action) String() string { return rpz.Action(a).String() }

// ErrConflict is a second trigger for an owner that already has one, with
// another action (an owner can have one CNAME, RFC 1034 §3.6.2).
var ErrConflict = errors.New("a second trigger for this owner with another action; the first is kept")

// zoneInfo is what an RPZ list knows of its zone.
type zoneInfo struct {
	origin   string
	serial   uint32
	soa      bool
	passthru bool // the list has an ActionPassthru trigger
	// lines is the last line (for a transfer: position) of a trigger,
	// after which Update numbers the triggers it adds.
	lines int
}

// ipEntry is one response-IP trigger.
type ipEntry struct {
	name   string // the prefix in text, made once so that MatchIP formats nothing
	prefix netip.Prefix
	line   int
	action Action
}

// isRPZ reports whether a list file is read as an RPZ zone: its name ends
// in `.rpz`.
func isRPZ(name string) bool {
	return len(name) > len(".rpz") && strings.EqualFold(name[len(name)-len(".rpz"):], ".rpz")
}

// ParseRPZ reads data as an RPZ zone file whatever name says (Parse reads
// names ending in .rpz so): for a list whose name is no file name, such as
// a URL whose path ends in .rpz. The error is as FromZone's.
func ParseRPZ(name string, data []byte) (*List, error) { return parseRPZ(name, data) }

// parseRPZ reads an RPZ zone file (Parse of a name ending in .rpz).
func parseRPZ(name string, data []byte) (*List, error) {
	return FromZone(name, sha256.Sum256(data), bytes.Count(data, []byte{'\n'})+1, func(h rpz.Handler) (rpz.Zone, error) {
		return rpz.Parse(name, bytes.NewReader(data), h)
	})
}

// FromZone builds a List from a Response Policy Zone. read is called once
// with the rpz.Handler that takes the zone's triggers and problems: call
// rpz.Parse (a zone file, as Parse does for names ending in .rpz) or
// rpz.FromRecords / rpz.FromSeq (a zone transfer) with it, and return what
// they return. name is how errors and matches refer to the list (a file,
// or the source of a transfer); sum identifies the content (Sum); sizeHint
// is about how many records to expect.
//
// QNAME triggers become name entries (Match) and response-IP triggers
// prefix entries (MatchIP), each with its action. Owner names are read as
// the octets they spell (DESIGN.md §10), folded to lower case; an owner
// with an octet no list entry can hold (other than letters, digits, '-'
// and '_') is reported with ErrBadChar. A trigger repeated with the same
// action is a Duplicate; with another action it is reported with
// ErrConflict and the first is kept.
//
// The error joins a *ParseError for each record that was reported and
// skipped, as `file:line: owner: what is wrong` (for a transfer, which has
// no lines: `name owner: what is wrong`); the List holds the rest. If read
// returns an error, FromZone returns it and no List.
func FromZone(name string, sum [32]byte, sizeHint int, read func(rpz.Handler) (rpz.Zone, error)) (*List, error) {
	b := newBuilder(name, sizeHint)
	l := b.list
	l.acts = make([]uint8, 1, cap(l.nodes))
	l.zone = &zoneInfo{}
	var errs errorList
	var buf []byte
	seq := 0
	h := rpz.Handler{
		Trigger: func(t rpz.Trigger) {
			seq++
			line := t.Line
			if line == 0 {
				line = seq // a transfer has no lines: its position among the triggers
			}
			if line > maxLine {
				errs.addOwner(name, t.Line, t.Owner, ErrTooManyLines)
				return
			}
			l.zone.lines = max(l.zone.lines, line)
			if t.Prefix.IsValid() {
				b.addIP(t.Prefix, line, Action(t.Action), &errs, t)
				return
			}
			var err error
			if buf, err = foldName(t.Name, buf[:0]); err != nil {
				errs.addOwner(name, t.Line, t.Owner, err)
				return
			}
			b.addTrigger(buf, line, t.Wildcard, Action(t.Action), &errs, t)
		},
		Problem: func(p rpz.Problem) {
			if p.Owner == "" {
				errs.add(name, p.Line, p.Token, p.Err)
				return
			}
			errs.addOwner(name, p.Line, p.Owner, p.Err)
		},
	}
	z, err := read(h)
	if err != nil {
		return nil, err
	}
	l.zone.origin, l.zone.serial, l.zone.soa = z.Origin, z.Serial, z.SOA
	return b.finish(sum), errs.err()
}

// foldName writes the stored form of a trigger name in presentation form:
// its octets, `\X` and `\DDD` escapes resolved, ASCII letters lowercased,
// labels separated by dots.
func foldName(s string, dst []byte) ([]byte, error) {
	labelLen := 0
	for i := 0; i < len(s); {
		c, n := octet(s, i)
		i += n
		if n == 1 && c == '.' {
			if labelLen == 0 {
				return nil, ErrEmptyLabel
			}
			dst = append(dst, '.')
			labelLen = 0
			continue
		}
		c = lower(c)
		if !entryOctet[c] {
			return nil, ErrBadChar
		}
		if labelLen++; labelLen > maxLabel {
			return nil, ErrLongLabel
		}
		dst = append(dst, c)
	}
	if labelLen == 0 {
		return nil, ErrEmptyLabel
	}
	return dst, nil
}

// addTrigger adds a QNAME trigger for the stored name.
func (b *builder) addTrigger(name []byte, line int, wildcard bool, a Action, errs *errorList, t rpz.Trigger) {
	l := b.list
	id := b.nodeFor(name)
	shift := uint8(0)
	if wildcard {
		shift = 3
	}
	k := l.acts[id]
	if prev := k >> shift & 7; prev != 0 {
		first := l.triggerLine(id, wildcard)
		if Action(prev-1) != a {
			errs.addOwner(l.file, t.Line, t.Owner, ErrConflict)
			return
		}
		display := string(name)
		if wildcard {
			display = "*." + display
		}
		l.dups = append(l.dups, Duplicate{Name: display, Line: line, FirstLine: first})
		return
	}
	l.acts[id] = k | uint8(a+1)<<shift
	n := &l.nodes[id]
	switch {
	case n.lineNo() == 0:
		n.line, n.hi = uint16(line), uint8(line>>16)
	case wildcard: // the name's own trigger came first and keeps the node's line
		l.setWildLine(id, line)
	default: // the wildcard came first: its line moves aside
		l.setWildLine(id, n.lineNo())
		n.line, n.hi = uint16(line), uint8(line>>16)
	}
	l.count++
	if a == ActionPassthru {
		l.zone.passthru = true
	}
}

func (l *List) setWildLine(id uint32, line int) {
	if l.wildLine == nil {
		l.wildLine = map[uint32]int{}
	}
	l.wildLine[id] = line
}

// addIP adds a response-IP trigger.
func (b *builder) addIP(p netip.Prefix, line int, a Action, errs *errorList, t rpz.Trigger) {
	l := b.list
	if l.ips == nil {
		l.ips = &bart.Table[ipEntry]{}
	}
	if prev, ok := l.ips.Get(p); ok {
		if prev.action != a {
			errs.addOwner(l.file, t.Line, t.Owner, ErrConflict)
			return
		}
		l.dups = append(l.dups, Duplicate{Name: prev.name, Line: line, FirstLine: prev.line})
		return
	}
	l.ips.Insert(p, ipEntry{name: p.String(), prefix: p, line: line, action: a})
	l.count++
	if a == ActionPassthru {
		l.zone.passthru = true
	}
}

// triggers reports whether node id holds a trigger for the name itself
// (exact) or for the names below it.
func (l *List) triggers(id uint32, exact bool) bool {
	k := l.acts[id]
	if l.gone != nil {
		k = l.live(id)
	}
	if exact {
		return k&7 != 0
	}
	return k>>3 != 0
}

// trigger fills in the action, wildcard and line of the trigger of node
// id that matched.
func (l *List) trigger(e *Entry, id uint32, exact bool) {
	k := l.acts[id]
	if exact {
		e.Action = Action(k&7 - 1)
		return
	}
	e.Action, e.Wildcard = Action(k>>3-1), true
	e.Line = l.triggerLine(id, true)
}

// triggerLine is the line of node id's exact or wildcard trigger.
func (l *List) triggerLine(id uint32, wildcard bool) int {
	if wildcard && l.acts[id]&7 != 0 {
		return l.wildLine[id]
	}
	return l.nodes[id].lineNo()
}

// MatchIP reports whether addr is inside the prefix of a response-IP
// trigger (`24.0.2.0.192.rpz-ip CNAME .`), returning the entry of the
// longest such prefix, with its Prefix, its Action and the prefix in text
// as its Name. An IPv4-mapped IPv6 address is matched as the IPv4 address
// it maps. Only RPZ lists have such entries. MatchIP does not allocate.
func (l *List) MatchIP(addr netip.Addr) (Entry, bool) {
	if l == nil || l.ips == nil {
		return Entry{}, false
	}
	v, ok := l.ips.Lookup(addr.Unmap().WithZone(""))
	if !ok {
		return Entry{}, false
	}
	return Entry{List: l, Name: v.name, Line: v.line, Action: v.action, Prefix: v.prefix}, true
}

// HasIPTriggers reports whether MatchIP can match anything, so that a
// caller can skip looking at the addresses of answers when no list has
// response-IP triggers.
func (l *List) HasIPTriggers() bool { return l != nil && l.ips != nil }

// HasPassthru reports whether the list has ActionPassthru entries (names
// or prefixes), which a caller must look for even after another list has
// blocked: an allow entry beats every block entry.
func (l *List) HasPassthru() bool { return l != nil && l.zone != nil && l.zone.passthru }

// Origin is the apex of the zone an RPZ list was read from, fully
// qualified (`rpz.example.gov.`); "" for a plain list.
func (l *List) Origin() string {
	if l == nil || l.zone == nil {
		return ""
	}
	return l.zone.origin
}

// Serial is the SOA serial of the zone an RPZ list was read from, and
// whether it had an SOA.
func (l *List) Serial() (uint32, bool) {
	if l == nil || l.zone == nil {
		return 0, false
	}
	return l.zone.serial, l.zone.soa
}

// Owner is the owner name of the RPZ trigger behind an entry, fully
// qualified, as the zone writes it (lowercase, escapes resolved):
// `*.tiktok.com.rpz.example.gov.` for a wildcard, `24.0.2.0.192.rpz-ip.rpz.example.gov.`
// for a response-IP trigger. For a transfer, which has no lines, this is
// what names the entry. "" for an entry of a plain list.
func (e Entry) Owner() string {
	if e.List == nil || e.List.zone == nil {
		return ""
	}
	var rel string
	switch {
	case e.Prefix.IsValid():
		rel = rpz.IPTrigger(e.Prefix)
	case e.Wildcard:
		rel = "*." + e.Folded()
	default:
		rel = e.Folded()
	}
	if o := e.List.zone.origin; o != "." && o != "" {
		return rel + "." + o
	}
	return rel + "."
}

// allTriggers yields every trigger of an RPZ list in zone order: name
// triggers with their Action and Wildcard, then the response-IP triggers
// among them by line, with Prefix set and the prefix in text as Name.
func (l *List) allTriggers() iter.Seq[Entry] {
	type item struct {
		line     int
		id       uint32
		wildcard bool
		ip       *ipEntry
	}
	return func(yield func(Entry) bool) {
		items := make([]item, 0, l.count)
		for id := 1; id < len(l.nodes); id++ {
			k := l.live(uint32(id))
			if k&7 != 0 {
				items = append(items, item{line: l.nodes[id].lineNo(), id: uint32(id)})
			}
			if k>>3 != 0 {
				items = append(items, item{line: l.triggerLine(uint32(id), true), id: uint32(id), wildcard: true})
			}
		}
		if l.ips != nil {
			for _, v := range l.ips.All() {
				items = append(items, item{line: v.line, ip: &v})
			}
		}
		slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(a.line, b.line) })
		var buf []byte
		for _, it := range items {
			var e Entry
			if it.ip != nil {
				e = Entry{List: l, Name: it.ip.name, Line: it.line, Action: it.ip.action, Prefix: it.ip.prefix}
			} else {
				buf = l.appendName(buf[:0], it.id)
				e = Entry{List: l, Name: string(buf), Line: it.line, Wildcard: it.wildcard}
				l.trigger(&e, it.id, !it.wildcard)
				e.Line = it.line
			}
			if !yield(e) {
				return
			}
		}
		if l.over != nil {
			// Added by Update, after every trigger above.
			for e := range l.over.All() {
				e.List = l
				if !yield(e) {
					return
				}
			}
		}
	}
}

// containsPrefix reports whether the prefix in text s is a response-IP
// trigger.
func (l *List) containsPrefix(s string) bool {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return false
	}
	_, ok := l.ips.Get(p)
	return ok
}
