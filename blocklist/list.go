// Package blocklist parses domain lists and client range files and answers
// whether a name is on a list and which entry (file, line) put it there.
//
// It knows nothing of DNS messages: callers hand it names as strings.
package blocklist

import (
	"encoding/hex"
	"hash/maphash"
	"iter"
	"strings"
)

// maxName is the longest domain name in presentation form without the
// trailing dot (RFC 1035 §2.3.4 allows 255 octets on the wire).
const maxName = 253

// Entry is the list entry that made a name match.
type Entry struct {
	List *List  // the list holding the entry
	Name string // the entry, normalised: lowercase, no trailing dot
	Line int    // line of the entry in the list file
}

// Duplicate is an entry that appeared again later in the same file.
type Duplicate struct {
	Name      string
	Line      int // the repeated line, which was skipped
	FirstLine int // the line that was kept
}

// record locates one entry inside List.names: 8 bytes, so a million
// entries cost 8 MB of records.
type record struct {
	off  uint32
	line uint16 // low 16 bits of the line
	hi   uint8  // bits 16-23 of the line: up to 16,777,215 lines
	n    uint8
}

func (r record) lineNo() int { return int(r.hi)<<16 | int(r.line) }

// List is an immutable set of domain suffixes. A name matches when it equals
// an entry or ends in "."+entry.
//
// Entries are stored back to back in one string and found through an
// open-addressing table of record indexes, which keeps a million entries in
// about 36 bytes each (a Go map of strings needs three times that) and keeps
// lookups free of allocations.
type List struct {
	file  string
	sum   [32]byte
	names string   // every entry, back to back
	recs  []record // entries in file order
	slots []uint32 // 0 = empty, else index+1 into recs; len is a power of two
	seed  maphash.Seed
	dups  []Duplicate
}

// File is the list's name as the configuration gives it.
func (l *List) File() string { return l.file }

// Hash is the hex SHA-256 of the file content the list was parsed from.
func (l *List) Hash() string { return hex.EncodeToString(l.sum[:]) }

// Sum is the raw SHA-256 of the file content.
func (l *List) Sum() [32]byte { return l.sum }

// Len is the number of distinct entries.
func (l *List) Len() int { return len(l.recs) }

// Duplicates lists entries that were repeated in the file.
func (l *List) Duplicates() []Duplicate { return l.dups }

// All yields every entry in file order.
func (l *List) All() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for _, r := range l.recs {
			if !yield(l.entry(r)) {
				return
			}
		}
	}
}

// Contains reports whether name, already normalised, is itself an entry.
func (l *List) Contains(name string) bool {
	var buf [maxName + 2]byte
	if len(name) > len(buf) {
		return false
	}
	_, ok := l.find(append(buf[:0], name...))
	return ok
}

// Match reports whether name or one of its parent domains is an entry,
// returning the most specific such entry. name may be in any case and may
// carry a trailing dot; escaped dots (`\.`) inside a label are not label
// boundaries. Match does not allocate.
func (l *List) Match(name string) (Entry, bool) {
	if l == nil || len(l.recs) == 0 {
		return Entry{}, false
	}
	var buf [maxName + 2]byte
	b, ok := fold(name, buf[:0])
	if !ok {
		return Entry{}, false
	}
	for i := 0; ; {
		if r, ok := l.find(b[i:]); ok {
			return l.entry(r), true
		}
		i = nextLabel(b, i)
		if i < 0 {
			return Entry{}, false
		}
	}
}

func (l *List) entry(r record) Entry {
	return Entry{List: l, Name: l.names[r.off : r.off+uint32(r.n)], Line: r.lineNo()}
}

// find looks up an exact entry.
func (l *List) find(b []byte) (record, bool) {
	if len(l.slots) == 0 {
		return record{}, false
	}
	mask := uint64(len(l.slots) - 1)
	for h := maphash.Bytes(l.seed, b) & mask; ; h = (h + 1) & mask {
		s := l.slots[h]
		if s == 0 {
			return record{}, false
		}
		r := l.recs[s-1]
		if int(r.n) == len(b) && l.names[r.off:r.off+uint32(r.n)] == string(b) {
			return r, true
		}
	}
}

// fold copies name into dst lowercased, without a trailing dot. It reports
// false for names that cannot be on any list (empty or too long).
func fold(name string, dst []byte) ([]byte, bool) {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > maxName+1 {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

// nextLabel returns the index of the label after the one starting at i, or
// -1 when the label at i is the last. A dot escaped with a backslash is part
// of its label.
func nextLabel(b []byte, i int) int {
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++ // skip the escaped byte; \DDD digits are never dots
		case '.':
			if j+1 < len(b) {
				return j + 1
			}
			return -1
		}
	}
	return -1
}

// builder accumulates entries for a new List.
type builder struct {
	list  *List
	names strings.Builder
}

func newBuilder(file string, sizeHint int) *builder {
	n := 16
	for n < sizeHint*2 {
		n <<= 1
	}
	return &builder{list: &List{
		file:  file,
		seed:  maphash.MakeSeed(),
		slots: make([]uint32, n),
		recs:  make([]record, 0, sizeHint),
	}}
}

// add inserts a normalised name; a repeat is recorded as a duplicate.
func (b *builder) add(name []byte, line int) {
	l := b.list
	l.names = b.names.String() // view of what is written so far, for find
	if r, ok := l.find(name); ok {
		l.dups = append(l.dups, Duplicate{Name: string(name), Line: line, FirstLine: r.lineNo()})
		return
	}
	if (len(l.recs)+1)*2 > len(l.slots) {
		b.grow()
	}
	off := b.names.Len()
	b.names.Write(name)
	l.recs = append(l.recs, record{off: uint32(off), line: uint16(line), hi: uint8(line >> 16), n: uint8(len(name))})
	l.names = b.names.String()
	l.insertSlot(len(l.recs)-1, name)
}

func (l *List) insertSlot(idx int, name []byte) {
	mask := uint64(len(l.slots) - 1)
	h := maphash.Bytes(l.seed, name) & mask
	for l.slots[h] != 0 {
		h = (h + 1) & mask
	}
	l.slots[h] = uint32(idx + 1)
}

func (b *builder) grow() {
	l := b.list
	l.slots = make([]uint32, len(l.slots)*2)
	for i, r := range l.recs {
		l.insertSlot(i, []byte(l.names[r.off:r.off+uint32(r.n)]))
	}
}

func (b *builder) finish(sum [32]byte) *List {
	l := b.list
	l.names = b.names.String()
	if b.names.Cap()-b.names.Len() > b.names.Len()/4 {
		l.names = strings.Clone(l.names) // drop the slack of the estimate
	}
	l.sum = sum
	// Release the slack of over-estimated capacity (comment-heavy files).
	if cap(l.recs)-len(l.recs) > len(l.recs)/4 {
		l.recs = append([]record(nil), l.recs...)
	}
	return l
}
