// Package blocklist parses domain lists and client range files and answers
// whether a name is on a list and which entry (file, line) put it there.
//
// It knows nothing of DNS messages: callers hand it names as strings.
package blocklist

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"hash/maphash"
	"iter"
	"slices"
	"strings"
	"unsafe"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
	"github.com/gaissmai/bart"
)

// maxName is the longest list entry in text form without the trailing dot:
// entries are letters, digits, '-' and '_' only, so their text is their
// octets, and 253 of them with the label lengths and the root make the 255
// octets RFC 1035 §2.3.4 allows on the wire. Query names are not bounded by
// it: Match reads them label by label in wire form (see name.go).
const maxName = 253

// Entry is the list entry that made a name match.
type Entry struct {
	List *List // the list holding the entry
	// Name is the entry, without a trailing dot: lowercase from All; from
	// Match, the matching suffix of the name as given, in presentation form,
	// which may differ in case and may spell octets with escapes
	// (`\116iktok.com` for tiktok.com): Match does not allocate to rewrite
	// it. Folded gives the entry as the list has it.
	Name string
	Line int // line of the entry in the list file; for an RPZ zone transfer, the trigger's position in it
	// An RPZ response-IP trigger (from MatchIP or AllTriggers) has the
	// prefix in text as its Name (`192.0.2.0/24`); Prefix gives it.
	// What an entry does is its Trigger (MatchTrigger, MatchIP,
	// AllTriggers): Entry stays the three fields it has, which the
	// compiler keeps in registers, since Match is on every query's path.
}

// Trigger is what a list entry does when it matches.
type Trigger struct {
	// Action is ActionNXDOMAIN for every entry of a plain list, and an
	// RPZ trigger's own action otherwise.
	Action Action
	// Wildcard marks an RPZ `*.Name` trigger, which matched a name below
	// Name (it does not match Name itself). An entry of a plain list
	// matches Name and every name below it, and is not marked.
	Wildcard bool
}

// Folded is the entry's name as the list has it: lowercase, escapes
// (RFC 1035 §5.1) resolved to their octets. An entry's octets are letters,
// digits, '-' and '_', so the result is plain text; it is e.Name itself,
// without a copy, when that is already so.
func (e Entry) Folded() string {
	plain := true
	for i := 0; i < len(e.Name) && plain; i++ {
		c := e.Name[i]
		plain = c != '\\' && (c < 'A' || c > 'Z')
	}
	if plain {
		return e.Name
	}
	b := make([]byte, 0, len(e.Name))
	for i := 0; i < len(e.Name); {
		c, n := presname.Octet(e.Name, i)
		b = append(b, presname.Lower(c))
		i += n
	}
	return string(b)
}

// Duplicate is an entry that appeared again later in the same file.
type Duplicate struct {
	Name      string
	Line      int // the repeated line, which was skipped
	FirstLine int // the line that was kept
}

// node is one label of the list's tree of names: an entry, or a parent
// domain that entries sit under. 12 bytes; a label is stored once under its
// parent, so entries that share parents (all of a tracker's hosts, say)
// share their storage.
type node struct {
	parent uint32 // index of the parent node; 0 is the root, which has no label
	off    uint32 // the label, in List.labels
	line   uint16 // low 16 bits of the entry's line; a line of 0: not an entry
	hi     uint8  // bits 16-23 of the line: up to 16,777,215 lines
	n      uint8  // label length, at most 63 (labelLen), and hasChildren
}

const (
	labelLen    = 0x3f // node.n's bits of the label's length
	hasChildren = 0x80 // node.n's bit of a node that is another's parent
)

func (n *node) lineNo() int { return int(n.hi)<<16 | int(n.line) }

// size is the length of the node's label.
func (n *node) size() uint32 { return uint32(n.n & labelLen) }

// List is an immutable set of domain suffixes. A name matches when it equals
// an entry or ends in "."+entry.
//
// Entries are kept as a tree of labels, from the top-level domain down, in
// one open-addressing table keyed by (parent, label): a lookup walks the
// name's labels from the right, one probe a label, and never allocates. A
// million entries under a thousand parents take about 31 bytes each (a Go
// map of strings needs more than three times that).
type List struct {
	file   string
	sum    [32]byte
	labels string // every node's label, back to back
	nodes  []node // nodes[0] is the root
	// slots is the table, by (parent, label) hash, linear probing, at
	// most three quarters full: a node index per slot. tags has a byte per
	// slot: 0 for an empty one, else 8 bits of its node's hash, so that a
	// probe reads the next byte and touches a node only when they agree.
	slots []uint32
	tags  []uint8
	seed  maphash.Seed
	count int // entries
	dups  []Duplicate
	// warn is what the build reported beside the list (bad lines and
	// records skipped, or kept in doubt): kept with the list, so that a
	// list reused unchanged (ReadList's prev) or updated (Update) reports
	// what the one it stands for did.
	warn error

	// The rest is for RPZ lists (zone.go); all nil for a plain list.
	// acts holds each node's triggers, parallel to nodes: the action + 1
	// of the trigger for the name itself in bits 0-2, of its `*.` trigger
	// in bits 3-5, 0 where there is none. A node's line is that of its
	// exact trigger when it has one, else that of its wildcard; the
	// wildcard's line of a node that has both is in bits 6-7 when near
	// (setWildLine), else in wildLine.
	acts     []uint8
	wildLine map[uint32]int
	ips      *bart.Table[ipEntry] // response-IP triggers
	// ipsMapped is set once ips holds an IPv6 prefix that holds all of
	// ::ffff:0:0/96 (holdsMapped), which MatchIP then looks up for an
	// IPv4 address no IPv4 prefix holds; never cleared by Update (a
	// removal leaves it costing a lookup, not a wrong answer).
	ipsMapped bool
	zone      *zoneInfo
	// A list Update made shares the tables above with the list it was
	// built whole as, and never writes them: gone marks the triggers
	// removed since (two bits a node: exact, wildcard; nil: none), over
	// holds those added since (nil: none), and ips is a copy when a
	// response-IP trigger changed.
	gone []uint64
	over *List
}

// File is the list's name as the configuration gives it.
func (l *List) File() string { return l.file }

// Hash is the hex SHA-256 of the file content the list was parsed from:
// its raw bytes, a byte-order mark and carriage returns included, as
// sha256sum prints it.
func (l *List) Hash() string { return hex.EncodeToString(l.sum[:]) }

// Sum is the SHA-256 of the file's raw bytes, as Hash.
func (l *List) Sum() [32]byte { return l.sum }

// Len is the number of distinct entries.
func (l *List) Len() int { return l.count }

// Duplicates lists entries that were repeated in the file.
func (l *List) Duplicates() []Duplicate { return l.dups }

// Warnings is the error Parse, ReadList or FromZone returned beside the
// list when it was built (its bad lines and skipped records, see BadLines
// and Skipped), nil for none. A list ReadList reused (prev) or Update made
// has the warnings of the list it was built whole as.
func (l *List) Warnings() error { return l.warn }

// All yields every entry in file order. Each entry's name is built from its
// labels: this is for reports and reloads, not for queries.
//
// Of an RPZ list, All yields every trigger, as AllTriggers does (without
// saying what each does).
func (l *List) All() iter.Seq[Entry] {
	if l.zone != nil {
		return func(yield func(Entry) bool) {
			for e := range l.allTriggers() {
				if !yield(e) {
					return
				}
			}
		}
	}
	return func(yield func(Entry) bool) {
		entries := make([]uint32, 0, l.count)
		for i := range l.nodes {
			if l.nodes[i].lineNo() != 0 {
				entries = append(entries, uint32(i))
			}
		}
		// Stable: the names of one hosts line keep their order.
		slices.SortStableFunc(entries, func(a, b uint32) int { return cmp.Compare(l.nodes[a].lineNo(), l.nodes[b].lineNo()) })
		var buf []byte
		for _, id := range entries {
			buf = l.appendName(buf[:0], id)
			if !yield(Entry{List: l, Name: string(buf), Line: l.nodes[id].lineNo()}) {
				return
			}
		}
	}
}

// appendName appends the full name of node id: its label, then its
// parents' labels, dot-separated.
func (l *List) appendName(b []byte, id uint32) []byte {
	for ; id != 0; id = l.nodes[id].parent {
		if len(b) > 0 {
			b = append(b, '.')
		}
		b = append(b, l.label(id)...)
	}
	return b
}

func (l *List) label(id uint32) string {
	n := &l.nodes[id]
	return l.labels[n.off : n.off+n.size()]
}

// Contains reports whether name, already normalised, is itself an entry:
// of an RPZ list, a trigger for the name or its `*.`, or, for a name that
// is a prefix in text (as All gives them), a response-IP trigger.
func (l *List) Contains(name string) bool {
	if l == nil || l.count == 0 || name == "" {
		return false
	}
	if l.ips != nil && strings.IndexByte(name, '/') >= 0 {
		return l.containsPrefix(name)
	}
	if l.over != nil && l.over.Contains(name) {
		return true
	}
	parent := uint32(0)
	for end := len(name); ; {
		start := strings.LastIndexByte(name[:end], '.') + 1
		id, ok := l.find(parent, name[start:end])
		if !ok {
			return false
		}
		if start == 0 {
			return l.nodes[id].lineNo() != 0 && (l.gone == nil || l.live(id) != 0)
		}
		parent, end = id, start-1
	}
}

// Match reports whether name or one of its parent domains is an entry,
// returning the most specific such entry. name is in presentation form
// (RFC 1035 §5.1), as miekg/dns gives names: labels are compared as the
// octets they stand for, `\DDD` and `\X` escapes resolved, ASCII letters
// case-insensitively (RFC 4343), so `www.\116iktok.com` is www.tiktok.com,
// while `tiktok\.com`, one label holding a dot, is not tiktok.com. A
// trailing dot is optional. The length of the text does not matter: a
// label of 63 octets written as 252 characters of escapes matches like
// any other, and a name too long to exist still matches by its last
// labels. The entry's name is the matching suffix of name as given.
// Match does not allocate.
//
// In an RPZ list, a trigger for a name matches that name only, and a `*.`
// trigger the names below it only (draft-vixie-dnsop-dns-rpz §4.1); the
// most specific trigger that matches is returned, so an exact trigger
// beats a wildcard and a longer wildcard a shorter one. MatchTrigger also
// says what that trigger does.
func (l *List) Match(name string) (Entry, bool) {
	if l == nil || l.count == 0 {
		return Entry{}, false
	}
	name = trimRoot(name)
	best, bestStart := l.walk(name)
	if l.over != nil {
		// The triggers an Update added: the more specific match wins.
		if e, ok := l.over.Match(name); ok && (best == 0 || len(e.Name) > len(name)-bestStart) {
			e.List = l
			return e, true
		}
	}
	if best == 0 {
		return Entry{}, false
	}
	line := l.nodes[best].lineNo()
	if l.acts != nil && bestStart != 0 {
		line = l.triggerLine(best, true)
	}
	return Entry{List: l, Name: name[bestStart:], Line: line}, true
}

// MatchTrigger is Match, and what the entry does: its action (for every
// entry of a plain list ActionNXDOMAIN; ActionPassthru means allowed) and
// whether it is an RPZ wildcard. Match's Entry stays three fields, which
// the compiler keeps in registers: Match is on every query's path.
func (l *List) MatchTrigger(name string) (Entry, Trigger, bool) {
	if l == nil || l.count == 0 {
		return Entry{}, Trigger{}, false
	}
	name = trimRoot(name)
	best, bestStart := l.walk(name)
	if l.over != nil {
		// The triggers an Update added: the more specific match wins.
		if e, t, ok := l.over.MatchTrigger(name); ok && (best == 0 || len(e.Name) > len(name)-bestStart) {
			e.List = l
			return e, t, true
		}
	}
	if best == 0 {
		return Entry{}, Trigger{}, false
	}
	e := Entry{List: l, Name: name[bestStart:], Line: l.nodes[best].lineNo()}
	if l.acts == nil {
		return e, Trigger{}, true
	}
	t := l.trigger(best, bestStart == 0)
	if t.Wildcard {
		e.Line = l.triggerLine(best, true)
	}
	return e, t, true
}

// walk finds the node of the most specific entry that matches name (a
// name in presentation form without its trailing dot), and where in name
// the entry's labels start; node 0 when none matches.
func (l *List) walk(name string) (best uint32, bestStart int) {
	var buf [maxLabel]byte
	parent := uint32(0)
	// Labels from the right; the walk ends at the first one that is not
	// in the list.
	for end := len(name); name != ""; {
		label, start, ok := lookupLabel(name, end, &buf)
		if !ok {
			break
		}
		id, ok := l.find(parent, label)
		if !ok {
			break
		}
		n := &l.nodes[id]
		if n.lineNo() != 0 && (l.acts == nil || l.triggers(id, start == 0)) {
			best, bestStart = id, start
		}
		// No node below this one: no longer entry can match (tiktok.com,
		// a leaf, ends the walk of www.tiktok.com without a probe for www).
		if start == 0 || n.n&hasChildren == 0 {
			break
		}
		parent, end = id, start-1
	}
	return best, bestStart
}

// lookupLabel is the label of name that ends at end, as the table holds
// labels (foldLabel), and where it starts. A label of lower-case letters,
// digits, '-' and '_' only, which most are, is name's own bytes, found
// with one look at each; any other (a capital, an escape, an octet no
// entry holds, a separator that may be escaped) is read by LabelStart and
// foldLabel into buf.
func lookupLabel(name string, end int, buf *[maxLabel]byte) (label string, start int, ok bool) {
	i := end - 1
	for ; i >= 0 && name[i] != '.'; i-- {
		if !entryOctet[name[i]] {
			break
		}
	}
	if i < 0 || name[i] == '.' && (i == 0 || name[i-1] != '\\') {
		if start = i + 1; end-start <= maxLabel {
			return name[start:end], start, true
		}
		return "", start, false
	}
	start = presname.LabelStart(name, end)
	label, ok = foldLabel(name[start:end], buf)
	return label, start, ok
}

// hash places the label under parent in the table.
func (l *List) hash(parent uint32, label string) uint64 {
	return maphash.String(l.seed, label) ^ (uint64(parent)+1)*0x9e3779b97f4a7c15
}

// slotOf is the first slot to probe for the hash h, and the tag of h.
func (l *List) slotOf(h uint64) (int, uint8) {
	// Lemire's multiply-shift maps the low 32 bits onto the table, whose
	// size need not be a power of two; the tag comes from the top bits.
	return int(uint64(uint32(h)) * uint64(len(l.slots)) >> 32), max(uint8(h>>56), 1)
}

// find looks up the node of label under parent.
func (l *List) find(parent uint32, label string) (uint32, bool) {
	if len(l.slots) == 0 {
		return 0, false
	}
	i, tag := l.slotOf(l.hash(parent, label))
	for {
		switch l.tags[i] {
		case 0:
			return 0, false
		case tag:
			id := l.slots[i]
			n := &l.nodes[id]
			if n.parent == parent && int(n.size()) == len(label) && l.labels[n.off:n.off+n.size()] == label {
				return id, true
			}
		}
		if i++; i == len(l.slots) {
			i = 0
		}
	}
}

// tableSize is the number of slots for n nodes: at most three quarters
// full.
func tableSize(n int) int { return max(16, n+n/3+1) }

// builder accumulates entries for a new List.
//
// A list of a million entries has a table of megabytes, and the slot of
// a new label is a random place in it: reading it is a cache miss (and,
// the table's pages being many, a TLB miss), which one name after
// another would wait for in turn, most of the time of a parse. So the
// builder adds the names of a list file a few at a time
// (addLater, flush), each step of their walks down the tree for all of
// them together: it reads the slots that the step looks at, all at once,
// so that the processor fetches them at the same time, and then looks up
// each name's label, in the cache by then.
type builder struct {
	list   *List
	labels strings.Builder
	// last is the last name added, and path the nodes of its labels,
	// from the top-level domain down, for the next names to take those
	// they share with it: path[d] is the node of the label d+1 from the
	// right, a child of path[d-1] (path[0] of the root), for d < depth.
	// last is empty when path could not hold all its labels.
	last  []byte
	path  [maxName/2 + 1]uint32 // a name of 253 octets has at most 127 labels
	depth int
	// queue holds names that wait to be added (addLater), in the order
	// they came; queueNames their text, back to back.
	queue      [queueLen]queued
	queued     int
	queueNames []byte
	touched    uint32 // see readSlots
}

// queueLen is how many names addLater holds before it adds them: enough
// for the misses of that many names to overlap, few enough for their
// slots to stay in the cache until they are written.
const queueLen = 16

// queued is a name that waits to be added.
type queued struct {
	off, n int // the name, in queueNames
	line   int
	at     spot
}

// spot is where the walk of a name down the tree is: at the label
// name[start:end], whose hash under parent is h. The labels right of it
// have their nodes, parent the last of them; those left of it are yet
// to find. When end is 0, parent is the name's own node.
type spot struct {
	parent     uint32
	start, end int
	h          uint64
	// settled: the walk is over, at a label that is to be added under
	// parent (none there, or it is the name's own label, which the walk
	// does not look up: flush reads its slot with those of the other
	// names, and addFrom looks it up), or with the name's node found.
	settled bool
}

func newBuilder(file string, sizeHint int) *builder {
	n := tableSize(sizeHint + sizeHint/8)
	nodes := make([]node, 1, sizeHint+sizeHint/8+1) // the root, then about one node an entry
	return &builder{list: &List{
		file:  file,
		seed:  maphash.MakeSeed(),
		slots: make([]uint32, n),
		tags:  make([]uint8, n),
		nodes: nodes,
	}}
}

// reserve makes room for nodes nodes and labels octets of labels in
// all, the table sized for the nodes.
func (b *builder) reserve(nodes, labels int) {
	l := b.list
	if nodes > cap(l.nodes) {
		// Not slices.Grow, which zeroes the room and so makes it
		// resident: fresh memory is zero, and only what is written is.
		grown := make([]node, len(l.nodes), nodes)
		copy(grown, l.nodes)
		l.nodes = grown
	}
	if n := tableSize(nodes); n > len(l.slots) {
		b.resize(n)
	}
	if more := labels - b.labels.Len(); more > 0 {
		b.labels.Grow(more)
	}
}

// addNode makes node id, of name, an entry of line, or records the
// duplicate when it is one already.
func (b *builder) addNode(id uint32, name []byte, line int) {
	l := b.list
	n := &l.nodes[id]
	if first := n.lineNo(); first != 0 {
		l.dups = append(l.dups, Duplicate{Name: string(name), Line: line, FirstLine: first})
		return
	}
	n.line, n.hi = uint16(line), uint8(line>>16)
	l.count++
}

// addLater adds a normalised name (lowercase, no escapes, at least two
// labels) as an entry of line, and records a repeat as a duplicate; name
// is copied. The name is added with the next ones (flush), at the latest
// when a name is looked up the direct way (nodeFor) or the list is
// finished: names are added, and their nodes made, in the order they
// came, whichever way each takes.
func (b *builder) addLater(name []byte, line int) {
	b.queue[b.queued] = queued{off: len(b.queueNames), n: len(name), line: line}
	b.queueNames = append(b.queueNames, name...)
	if b.queued++; b.queued == len(b.queue) {
		b.flush()
	}
}

// flush adds the names addLater holds, in order: it walks them down the
// tree as far as there are nodes, a label at a time for all of them
// together, then adds the labels left (see builder). The walks only read
// the table: the slots read are a hint, and what the names before in the
// queue add is found when each name is added.
func (b *builder) flush() {
	if b.queued == 0 {
		return
	}
	q := b.queue[:b.queued]
	for i := range q {
		b.start(b.queuedName(i), &q[i].at)
	}
	for b.readSlots(q, false) {
		for i := range q {
			if !q[i].at.settled {
				b.step(b.queuedName(i), &q[i].at)
			}
		}
	}
	b.readSlots(q, true) // where the labels to add go
	var id uint32
	for i := range q {
		name := b.queuedName(i)
		id = b.addFrom(name, q[i].at)
		b.addNode(id, name, q[i].line)
	}
	b.setLast(b.queuedName(len(q)-1), id)
	b.queued, b.queueNames = 0, b.queueNames[:0]
}

// queuedName is the name of queue[i].
func (b *builder) queuedName(i int) []byte {
	return b.queueNames[b.queue[i].off : b.queue[i].off+b.queue[i].n]
}

// readSlots reads the table's slots at the spots of the queued walks
// that have a label there and are settled (the labels to add) or not (the
// labels to look up), as settled says: one read after another, none
// waiting for the one before, so that their cache misses overlap. It
// reports whether there was any.
func (b *builder) readSlots(q []queued, settled bool) bool {
	l := b.list
	any, sum := false, uint32(0)
	for i := range q {
		if at := &q[i].at; at.settled == settled && at.end > 0 {
			s, _ := l.slotOf(at.h)
			sum += uint32(l.tags[s]) + l.slots[s]
			any = true
		}
	}
	b.touched += sum // kept only so that the compiler keeps the reads
	return any
}

// nodeFor finds the node of a normalised name, inserting it and the nodes
// of its parents as needed.
func (b *builder) nodeFor(name []byte) uint32 {
	b.flush() // the names that came before first
	var at spot
	b.start(name, &at)
	for !at.settled {
		b.step(name, &at)
	}
	id := b.addFrom(name, at)
	b.setLast(name, id)
	return id
}

// start begins the walk of a normalised name down the tree: it takes the
// labels, from the right, that the name shares with the last name added
// from path, and stops at the first other one.
//
// Names come in runs under the same parents (the hosts of one tracker, a
// sorted list, the names of one hosts line), so most of a name's parents
// are those of a name a few lines before it, and path has them without
// hashing their labels and probing the table. A node keeps its index,
// label and parent once made, so what path holds stays true whatever came
// since it was set (a duplicate, a line with an error).
func (b *builder) start(name []byte, at *spot) {
	// The labels shared are those of the longest common suffix of the
	// two names that begins a label in both: read from the end, each dot
	// passed closes one, and so does the start of either name if the
	// other has a dot or its start there. from is where they begin in
	// name.
	last := b.last
	i, j, shared, from := len(name), len(last), 0, len(name)
	for i > 0 && j > 0 && name[i-1] == last[j-1] {
		i, j = i-1, j-1
		if name[i] == '.' {
			shared, from = shared+1, i+1
		}
	}
	if i < len(name) && (i == 0 || name[i-1] == '.') && (j == 0 || last[j-1] == '.') {
		shared, from = shared+1, i
	}
	if shared == 0 {
		b.spotAt(at, name, 0, bytes.LastIndexByte(name, '.')+1, len(name))
		return
	}
	parent := b.path[shared-1] // path has every label of last (setLast)
	if from == 0 {
		*at = spot{parent: parent, settled: true}
		return
	}
	end := from - 1
	b.spotAt(at, name, parent, bytes.LastIndexByte(name[:end], '.')+1, end)
}

// spotAt sets at to the spot of the label name[start:end] under parent.
// (Set in place: a spot returned is copied through memory, which the
// parse of a big list measured.)
func (b *builder) spotAt(at *spot, name []byte, parent uint32, start, end int) {
	at.parent, at.start, at.end, at.settled = parent, start, end, start == 0
	at.h = b.hash(parent, name[start:end])
}

// step looks up the label of name at at, a walk not settled: found, the
// walk goes on to the next label; not, the walk is settled there.
func (b *builder) step(name []byte, at *spot) {
	id, ok := b.find(at.parent, name[at.start:at.end], at.h)
	if !ok {
		at.settled = true
		return
	}
	end := at.start - 1
	b.spotAt(at, name, id, bytes.LastIndexByte(name[:end], '.')+1, end)
}

// addFrom finds or adds the labels of name that its settled walk at has
// not found, and returns the name's node.
func (b *builder) addFrom(name []byte, at spot) uint32 {
	if at.end == 0 {
		return at.parent
	}
	id := b.findOrInsert(at.parent, name[at.start:at.end], at.h)
	for start := at.start; start > 0; {
		end := start - 1
		start = bytes.LastIndexByte(name[:end], '.') + 1
		label := name[start:end]
		id = b.findOrInsert(id, label, b.hash(id, label))
	}
	return id
}

// setLast makes name, whose node is id, the last name added: path the
// nodes of id and its parents.
func (b *builder) setLast(name []byte, id uint32) {
	nodes := b.list.nodes
	labels := 0
	for x := id; x != 0; x = nodes[x].parent {
		labels++
	}
	b.depth = min(labels, len(b.path))
	d := labels
	for x := id; x != 0; x = nodes[x].parent {
		if d--; d < len(b.path) {
			b.path[d] = x
		}
	}
	b.last = b.last[:0]
	if b.depth == labels {
		b.last = append(b.last, name...)
	}
}

// isLabel reports whether node id's label is label.
func (b *builder) isLabel(id uint32, label []byte) bool {
	n := &b.list.nodes[id]
	return int(n.size()) == len(label) && b.labels.String()[n.off:n.off+n.size()] == string(label)
}

// hash is List.hash of a label being added.
func (b *builder) hash(parent uint32, label []byte) uint64 {
	return b.list.hash(parent, unsafe.String(unsafe.SliceData(label), len(label)))
}

// find looks up the node of label under parent, whose hash is h.
func (b *builder) find(parent uint32, label []byte, h uint64) (uint32, bool) {
	id, _, ok := b.probe(parent, label, h)
	return id, ok
}

// probe looks for the node of label under parent, whose hash is h: it
// returns the node, or else the empty slot where it goes.
func (b *builder) probe(parent uint32, label []byte, h uint64) (id uint32, slot int, ok bool) {
	l := b.list
	i, tag := l.slotOf(h)
	for l.tags[i] != 0 {
		if l.tags[i] == tag {
			id := l.slots[i]
			if l.nodes[id].parent == parent && b.isLabel(id, label) {
				return id, i, true
			}
		}
		if i++; i == len(l.slots) {
			i = 0
		}
	}
	return 0, i, false
}

// findOrInsert returns the node of label under parent, whose hash is h,
// adding it (not yet an entry) when there is none: one probe sequence for
// both.
func (b *builder) findOrInsert(parent uint32, label []byte, h uint64) uint32 {
	l := b.list
	if tableSize(len(l.nodes)+1) > len(l.slots) {
		b.grow()
	}
	id, i, ok := b.probe(parent, label, h)
	if ok {
		return id
	}
	off := b.labels.Len()
	b.labels.Write(label)
	l.nodes = append(l.nodes, node{parent: parent, off: uint32(off), n: uint8(len(label))})
	l.nodes[parent].n |= hasChildren
	if l.acts != nil {
		l.acts = append(l.acts, 0)
	}
	id = uint32(len(l.nodes) - 1)
	_, tag := l.slotOf(h)
	l.slots[i], l.tags[i] = id, tag
	return id
}

func (l *List) insertSlot(id uint32) {
	i, tag := l.slotOf(l.hash(l.nodes[id].parent, l.label(id)))
	for l.tags[i] != 0 {
		if i++; i == len(l.slots) {
			i = 0
		}
	}
	l.slots[i], l.tags[i] = id, tag
}

func (b *builder) grow() {
	b.resize(len(b.list.slots) * 2)
}

// resize rebuilds the table with n slots.
func (b *builder) resize(n int) {
	l := b.list
	l.labels = b.labels.String()
	l.slots, l.tags = make([]uint32, n), make([]uint8, n)
	for id := 1; id < len(l.nodes); id++ {
		l.insertSlot(uint32(id))
	}
}

// finish completes the list built, of content sum, with the bad lines
// warn its build reported.
func (b *builder) finish(sum [32]byte, warn error) *List {
	b.flush()
	l := b.list
	l.warn = warn
	l.labels = b.labels.String()
	if b.labels.Cap()-b.labels.Len() > b.labels.Len()/4 {
		l.labels = strings.Clone(l.labels) // drop the slack of the builder's growth
	}
	l.sum = sum
	// Release the slack of over-estimated capacity (comment-heavy files,
	// entries sharing their parents).
	if cap(l.nodes)-len(l.nodes) > len(l.nodes)/4 {
		l.nodes = slices.Clone(l.nodes)
	}
	if cap(l.acts)-len(l.acts) > len(l.acts)/4 {
		l.acts = slices.Clone(l.acts)
	}
	// Size the table for the nodes there are when the size hint (the
	// file's line count) was far too high.
	if n := tableSize(len(l.nodes)); n < len(l.slots)/2 {
		b.resize(n)
	}
	return l
}
