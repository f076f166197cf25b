package blocklist

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strings"
	"unsafe"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
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
	// ActionPassthru allows: the caller treats the entry as an allow
	// entry, which beats the block entries of every list. (Within one
	// zone the most specific trigger decides, and that may be a block:
	// `*.example.com CNAME rpz-passthru.` with `ads.example.com CNAME .`.)
	ActionPassthru = Action(rpz.Passthru)
)

func (a Action) String() string { return rpz.Action(a).String() }

// ErrConflict is a second trigger for an owner that already has one, with
// another action (an owner can have one CNAME, RFC 1034 §3.6.2). Of two
// block actions the first is kept; a block is kept over an rpz-passthru.
// whichever comes first, so that what the owner gets does not hang on the
// order a file or a transfer lists the two in.
var ErrConflict = errors.New("a second trigger for this owner with another action")

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
	line   int
	action Action
	// spellings counts the zone's records that write this prefix, with
	// this action or another one (a conflict, reported and not applied):
	// one prefix has several spellings (`zz` or the zero groups written
	// out, leading zeros, an IPv4 address mapped into IPv6). An update
	// that deletes one of several is not applied as a change
	// (ErrNotExact): the list is built whole from the zone, which keeps
	// a trigger while another record holds it (the conflicting one, once
	// the trigger that won is deleted).
	spellings int
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
// and '_') is reported with ErrBadChar, or ErrHostPart for a name
// written with a port, a path or a user. A trigger repeated with the same
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
				errs.addOwner(name, t.Line, t.Owner, ErrTooManyLines, false)
				return
			}
			l.zone.lines = max(l.zone.lines, line)
			if t.Prefix.IsValid() {
				b.addIP(t, line, &errs)
				return
			}
			var err error
			if buf, err = foldName(t.Name, buf[:0]); err != nil {
				wildcard := ""
				if t.Wildcard {
					wildcard = "*."
				}
				errs.addOwner(name, t.Line, t.Owner, withHostMeant(wildcard, t.Name, err), false)
				return
			}
			b.addTrigger(buf, t, line, &errs)
		},
		Problem: func(p rpz.Problem) {
			if p.Owner == "" {
				errs.add(name, p.Line, p.Token, p.Err)
				return
			}
			errs.addOwner(name, p.Line, p.Owner, p.Err, p.Kept)
		},
	}
	z, err := read(h)
	if err != nil {
		return nil, err
	}
	l.zone.origin, l.zone.serial, l.zone.soa = z.Origin, z.Serial, z.SOA
	l = b.finish(sum, errs.err())
	return l, l.warn
}

// foldName writes the stored form of a trigger name in presentation form:
// its octets, `\X` and `\DDD` escapes resolved, ASCII letters lowercased,
// labels separated by dots.
func foldName(s string, dst []byte) ([]byte, error) {
	labelLen := 0
	for i := 0; i < len(s); {
		c, n := presname.Octet(s, i)
		i += n
		if n == 1 && c == '.' {
			if labelLen == 0 {
				return nil, ErrEmptyLabel
			}
			dst = append(dst, '.')
			labelLen = 0
			continue
		}
		c = presname.Lower(c)
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

// addTrigger adds the QNAME trigger t, whose name has the stored form
// name, on line.
func (b *builder) addTrigger(name []byte, t rpz.Trigger, line int, errs *errorList) {
	l := b.list
	wildcard, a := t.Wildcard, Action(t.Action)
	id := b.nodeFor(name)
	shift := uint8(0)
	if wildcard {
		shift = 3
	}
	k := l.acts[id]
	if prev := k >> shift & 7; prev != 0 {
		first := l.triggerLine(id, wildcard)
		if Action(prev-1) != a {
			if beats(a, Action(prev-1)) {
				l.acts[id] = k&^(7<<shift) | uint8(a+1)<<shift
				l.setTriggerLine(id, wildcard, line)
				errs.addOwner(l.file, t.Line, t.Owner, conflict(t, Action(prev-1), first), true)
				return
			}
			errs.addOwner(l.file, t.Line, t.Owner, conflict(t, Action(prev-1), first), false)
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
		wild := n.lineNo()
		n.line, n.hi = uint16(line), uint8(line>>16)
		l.setWildLine(id, wild)
	}
	l.count++
	if a == ActionPassthru {
		l.zone.passthru = true
	}
}

// setTriggerLine moves the trigger of node id for the name (or, wildcard,
// for the names below it) to line, keeping the line of its other trigger.
func (l *List) setTriggerLine(id uint32, wildcard bool, line int) {
	n := &l.nodes[id]
	exact, wild := l.acts[id]&7 != 0, l.acts[id]>>3&7 != 0
	if !exact || !wild {
		n.line, n.hi = uint16(line), uint8(line>>16) // the node's one trigger
		return
	}
	other := l.triggerLine(id, true)
	if wildcard {
		other = line
	} else {
		n.line, n.hi = uint16(line), uint8(line>>16)
	}
	l.acts[id] &^= 3 << 6
	delete(l.wildLine, id)
	l.setWildLine(id, other)
}

// beats reports whether a trigger of action a replaces one of action prev
// at the same owner: a block beats a passthru (ErrConflict).
func beats(a, prev Action) bool { return prev == ActionPassthru && a != ActionPassthru }

// setWildLine records the line of the wildcard trigger of node id, which
// has a trigger of its own on the node's line. Zones list `*.name` next
// to `name` (a generated zone, a transfer in canonical order), so the
// usual lines one after, one before or two after the node's are kept in
// bits 6-7 of acts; others in wildLine.
func (l *List) setWildLine(id uint32, line int) {
	switch line - l.nodes[id].lineNo() {
	case 1:
		l.acts[id] |= 1 << 6
	case -1:
		l.acts[id] |= 2 << 6
	case 2:
		l.acts[id] |= 3 << 6
	default:
		if l.wildLine == nil {
			l.wildLine = map[uint32]int{}
		}
		l.wildLine[id] = line
	}
}

// addIP adds the response-IP trigger t, on line.
func (b *builder) addIP(t rpz.Trigger, line int, errs *errorList) {
	l := b.list
	p, a := t.Prefix, Action(t.Action)
	if l.ips == nil {
		l.ips = &bart.Table[ipEntry]{}
	}
	if prev, ok := l.ips.Get(p); ok {
		prev.spellings++
		if beats(a, prev.action) {
			errs.addOwner(l.file, t.Line, t.Owner, conflict(t, prev.action, prev.line), true)
			prev.action, prev.line = a, line
			l.ips.Insert(p, prev)
			return
		}
		l.ips.Insert(p, prev)
		if prev.action != a {
			errs.addOwner(l.file, t.Line, t.Owner, conflict(t, prev.action, prev.line), false)
			return
		}
		l.dups = append(l.dups, Duplicate{Name: prev.name, Line: line, FirstLine: prev.line})
		return
	}
	l.ips.Insert(p, ipEntry{name: p.String(), line: line, action: a, spellings: 1})
	l.ipsMapped = l.ipsMapped || holdsMapped(p)
	l.count++
	if a == ActionPassthru {
		l.zone.passthru = true
	}
}

// conflict is ErrConflict for t, met at an owner that holds a trigger of
// action held on line heldLine (named when the zone has lines). Of the two
// the block is kept over a passthru, else the first.
func conflict(t rpz.Trigger, held Action, heldLine int) error {
	at := ""
	if t.Line != 0 {
		at = fmt.Sprintf(" (line %d)", heldLine)
	}
	switch {
	case Action(t.Action) == ActionPassthru:
		return fmt.Errorf("%w; the block is kept%s: a block beats an rpz-passthru. at one owner", ErrConflict, at)
	case held == ActionPassthru:
		return fmt.Errorf("%w; this one is kept, not the rpz-passthru.%s: a block beats an rpz-passthru. at one owner", ErrConflict, at)
	}
	return fmt.Errorf("%w; the first is kept%s", ErrConflict, at)
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
	return k>>3&7 != 0
}

// trigger is node id's exact or wildcard trigger.
func (l *List) trigger(id uint32, exact bool) Trigger {
	k := l.acts[id]
	if exact {
		return Trigger{Action: Action(k&7 - 1)}
	}
	return Trigger{Action: Action(k>>3&7 - 1), Wildcard: true}
}

// triggerLine is the line of node id's exact or wildcard trigger.
func (l *List) triggerLine(id uint32, wildcard bool) int {
	line := l.nodes[id].lineNo()
	if !wildcard || l.acts[id]&7 == 0 {
		return line
	}
	switch l.acts[id] >> 6 {
	case 1:
		return line + 1
	case 2:
		return line - 1
	case 3:
		return line + 2
	}
	return l.wildLine[id]
}

// MatchIP reports whether addr is inside the prefix of a response-IP
// trigger (`24.0.2.0.192.rpz-ip CNAME .`), returning the entry of the
// longest such prefix, with the prefix in text as its Name (Prefix reads
// it), and its trigger's action. An IPv4-mapped IPv6 address is matched
// as the IPv4 address it maps, and a zone is ignored. Only RPZ lists have
// such entries (HasIPTriggers). MatchIP does not allocate.
//
// RPZ matches an IPv4 address as the IPv4-mapped IPv6 address it stands
// for (BIND keys both families in one tree: `120.6400.c633.ffff.zz` is
// `24.0.100.51.198`, which parseIPTrigger reads alike), so an IPv6 prefix
// shorter than /96 that holds all of ::ffff:0:0/96 (`80.zz.rpz-ip`, ::/80)
// holds every IPv4 address too, and BIND blocks every A record with it.
// Such a prefix is found for an IPv4 address that no IPv4 prefix holds;
// one that does is the longer prefix and wins.
func (l *List) MatchIP(addr netip.Addr) (Entry, Trigger, bool) {
	if l == nil || l.ips == nil {
		return Entry{}, Trigger{}, false
	}
	a := addr.Unmap().WithZone("")
	v, ok := l.ips.Lookup(a)
	if !ok {
		if l.ipsMapped && a.Is4() {
			return l.matchMapped(a)
		}
		return Entry{}, Trigger{}, false
	}
	return Entry{List: l, Name: v.name, Line: v.line}, Trigger{Action: v.action}, true
}

// matchMapped is MatchIP for an IPv4 address a that no IPv4 prefix holds,
// in a list with a prefix that holds all of ::ffff:0:0/96 (ipsMapped): a
// call of its own, so that the second lookup costs MatchIP nothing when
// the list has no such prefix (a second one written in MatchIP made every
// IPv4 miss about 20% slower, BenchmarkMatchIP/miss-v4).
//
//go:noinline
func (l *List) matchMapped(a netip.Addr) (Entry, Trigger, bool) {
	v, ok := l.ips.Lookup(netip.AddrFrom16(a.As16()))
	if !ok {
		return Entry{}, Trigger{}, false
	}
	return Entry{List: l, Name: v.name, Line: v.line}, Trigger{Action: v.action}, true
}

// mappedIPv4 is where RPZ, as BIND, places IPv4 addresses among IPv6 ones.
var mappedIPv4 = netip.MustParsePrefix("::ffff:0:0/96")

// holdsMapped reports whether p is an IPv6 prefix that holds every
// IPv4-mapped address, and so every IPv4 address to RPZ (MatchIP).
func holdsMapped(p netip.Prefix) bool {
	return p.Addr().Is6() && p.Bits() < mappedIPv4.Bits() && p.Contains(mappedIPv4.Addr())
}

// anyHoldsMapped reports whether ips holds a prefix holdsMapped takes: a
// list's ipsMapped again after an update removed one, so that its IPv4
// misses do not keep paying matchMapped's second lookup.
func anyHoldsMapped(ips *bart.Table[ipEntry]) bool {
	for p := range ips.Supernets(mappedIPv4) {
		if holdsMapped(p) {
			return true
		}
	}
	return false
}

// Prefix is the prefix of a response-IP trigger's entry (from MatchIP or
// AllTriggers), read from its Name; false for a name entry.
func (e Entry) Prefix() (netip.Prefix, bool) {
	if e.List == nil || e.List.ips == nil || strings.IndexByte(e.Name, '/') < 0 {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(e.Name)
	return p, err == nil
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

// Owner is the owner name of the RPZ trigger behind an entry and its
// Trigger (as MatchTrigger, MatchIP and AllTriggers give them), fully
// qualified, as the zone has it (lowercase, escapes resolved):
// `*.tiktok.com.rpz.example.gov.` for a wildcard,
// `24.0.2.0.192.rpz-ip.rpz.example.gov.` for a response-IP trigger. For
// a transfer, which has no lines, this is what names the entry. "" for an
// entry of a plain list.
func (e Entry) Owner(t Trigger) string {
	if e.List == nil || e.List.zone == nil {
		return ""
	}
	var rel string
	p, isIP := e.Prefix()
	switch {
	case isIP:
		rel = rpz.IPTrigger(p)
	case t.Wildcard:
		rel = "*." + e.Folded()
	default:
		rel = e.Folded()
	}
	if o := e.List.zone.origin; o != "." && o != "" {
		return rel + "." + o
	}
	return rel + "."
}

// AllTriggers yields every entry with its trigger, in file (or zone)
// order: for a plain list, All's entries with ActionNXDOMAIN; for an RPZ
// list, its name triggers (a name can have two: its own and its `*.`) and
// its response-IP triggers, with the prefix in text as Name.
func (l *List) AllTriggers() iter.Seq2[Entry, Trigger] {
	if l.zone == nil {
		return func(yield func(Entry, Trigger) bool) {
			for e := range l.All() {
				if !yield(e, Trigger{}) {
					return
				}
			}
		}
	}
	return l.allTriggers()
}

// allTriggers is AllTriggers of an RPZ list.
func (l *List) allTriggers() iter.Seq2[Entry, Trigger] {
	type item struct {
		line     int
		id       uint32
		wildcard bool
		ip       *ipEntry
	}
	return func(yield func(Entry, Trigger) bool) {
		items := make([]item, 0, l.count)
		for id := 1; id < len(l.nodes); id++ {
			k := l.live(uint32(id))
			if k&7 != 0 {
				items = append(items, item{line: l.nodes[id].lineNo(), id: uint32(id)})
			}
			if k>>3&7 != 0 {
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
			e, t := Entry{List: l, Line: it.line}, Trigger{}
			if it.ip != nil {
				e.Name, t.Action = it.ip.name, it.ip.action
			} else {
				buf = l.appendName(buf[:0], it.id)
				e.Name, t = string(buf), l.trigger(it.id, !it.wildcard)
			}
			if !yield(e, t) {
				return
			}
		}
		if l.over != nil {
			// Added by Update, after every trigger above.
			for e, t := range l.over.allTriggers() {
				e.List = l
				if !yield(e, t) {
					return
				}
			}
		}
	}
}

// HoldsTrigger reports whether l holds trigger t for name, an entry's
// Name as All and AllTriggers give it (lower case, no trailing dot; a
// response-IP trigger's prefix in text): of an RPZ list, a QNAME trigger
// for name itself or, t.Wildcard, its `*.` trigger, or a response-IP
// trigger for the prefix, with t's action; of a plain list, an entry for
// name (Contains), whatever t. Two copies of a zone hold the same name
// with other triggers when a trigger changed action (`CNAME .` to `CNAME
// rpz-passthru.`) or only one of `name` and `*.name` is left, which
// Contains, by name alone, does not tell apart.
func (l *List) HoldsTrigger(name string, t Trigger) bool {
	if l == nil || l.zone == nil {
		return l.Contains(name)
	}
	if l.count == 0 || name == "" {
		return false
	}
	if strings.IndexByte(name, '/') >= 0 {
		if l.ips == nil {
			return false
		}
		p, err := netip.ParsePrefix(name)
		if err != nil {
			return false
		}
		v, ok := l.ips.Get(p)
		return ok && v.action == t.Action
	}
	if l.over != nil && l.over.HoldsTrigger(name, t) {
		return true
	}
	_, ok := l.baseTrigger(unsafe.Slice(unsafe.StringData(name), len(name)), t.Wildcard, t.Action)
	return ok
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

// IPTriggers yields the response-IP triggers alone, as AllTriggers does
// (the prefix in text as Name), in no set order: a zone of a million name
// triggers and ten of these costs ten.
func (l *List) IPTriggers() iter.Seq2[Entry, Trigger] {
	return func(yield func(Entry, Trigger) bool) {
		if l == nil || l.ips == nil {
			return
		}
		for _, v := range l.ips.All() {
			if !yield(Entry{List: l, Name: v.name, Line: v.line}, Trigger{Action: v.action}) {
				return
			}
		}
	}
}

// IsRPZ reports whether l was read as an RPZ zone: its name entries match
// one name each (or the names below, `*.`), where a plain list's entry
// matches its name and every name below it.
func (l *List) IsRPZ() bool { return l != nil && l.zone != nil }
