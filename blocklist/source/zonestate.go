package source

import (
	"errors"
	"strings"

	"github.com/miekg/dns"
)

// zoneCopy is the zone a Zone source holds, kept so that an IXFR's deltas
// (RFC 1995) can be applied to it without a pass over the whole zone: the
// records sit at fixed positions (a removed one leaves a nil hole until the
// next compaction), and an index by owner name finds a record to remove.
//
// It is owned by Run's goroutine. The slices handed to the receiver are
// fresh copies; the records themselves are shared and never changed.
type zoneCopy struct {
	soa  *dns.SOA
	rrs  []dns.RR // every record but the SOA; nil where one was removed
	live int      // the non-nil records of rrs
	// index maps a lowercase owner name to the last position of rrs
	// holding a record of that owner; next chains each position to the
	// previous one of the same owner (-1 ends the chain).
	index map[string]int32
	next  []int32
}

// newZoneCopy indexes soa and rrs (which it keeps).
func newZoneCopy(soa *dns.SOA, rrs []dns.RR) *zoneCopy {
	z := &zoneCopy{soa: soa, rrs: rrs, live: len(rrs)}
	z.reindex()
	return z
}

func (z *zoneCopy) reindex() {
	z.index = make(map[string]int32, len(z.rrs))
	z.next = make([]int32, len(z.rrs))
	for i, rr := range z.rrs {
		z.link(int32(i), rr)
	}
}

func (z *zoneCopy) link(pos int32, rr dns.RR) {
	owner := lowerName(rr.Header().Name)
	if head, ok := z.index[owner]; ok {
		z.next[pos] = head
	} else {
		z.next[pos] = -1
	}
	z.index[owner] = pos
}

// lowerName returns name in lowercase ASCII, without allocating when it is
// already (as zone data almost always is).
func lowerName(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// find returns the position of a live record equal to rr (RFC 1995: same
// owner, type, class and RDATA; the TTL aside), skipping positions in
// skip, or -1.
func (z *zoneCopy) find(rr dns.RR, skip map[int32]bool) int32 {
	pos, ok := z.index[lowerName(rr.Header().Name)]
	if !ok {
		return -1
	}
	for ; pos >= 0; pos = z.next[pos] {
		if old := z.rrs[pos]; old != nil && !skip[pos] && dns.IsDuplicate(old, rr) {
			return pos
		}
	}
	return -1
}

// records returns a fresh slice of the zone: the SOA, then every record.
func (z *zoneCopy) records() []dns.RR {
	out := make([]dns.RR, 0, z.live+1)
	out = append(out, z.soa)
	for _, rr := range z.rrs {
		if rr != nil {
			out = append(out, rr)
		}
	}
	return out
}

// ixfrDiff is one difference sequence of an IXFR answer (RFC 1995 §4):
// the zone at serial from.Serial becomes the zone at to.Serial by removing
// del and adding add.
type ixfrDiff struct {
	from, to *dns.SOA
	del, add []dns.RR
}

// errNotExact says an IXFR does not fit the zone held (a record to remove
// is not there, a sequence starts from another serial): the copy and the
// primary disagree, and only an AXFR can mend it.
var errNotExact = errors.New("IXFR does not apply to the zone held")

// zoneChange is the net effect of an IXFR's sequences, not yet committed.
type zoneChange struct {
	soa     *dns.SOA
	removed map[int32]bool // positions of z.rrs removed
	added   []dns.RR       // records to add, none already in the zone
}

// plan works out the net effect of diffs on z without changing z, or
// returns errNotExact.
func (z *zoneCopy) plan(diffs []ixfrDiff) (*zoneChange, error) {
	ch := &zoneChange{soa: z.soa, removed: map[int32]bool{}}
	// added holds the records added so far in order (nil where a later
	// sequence removed one again), byOwner their positions.
	var added []dns.RR
	byOwner := map[string][]int{}
	findAdded := func(rr dns.RR) int {
		for _, i := range byOwner[lowerName(rr.Header().Name)] {
			if added[i] != nil && dns.IsDuplicate(added[i], rr) {
				return i
			}
		}
		return -1
	}
	for _, d := range diffs {
		if d.from.Serial != ch.soa.Serial {
			return nil, errNotExact
		}
		for _, rr := range d.del {
			if i := findAdded(rr); i >= 0 {
				added[i] = nil
				continue
			}
			pos := z.find(rr, ch.removed)
			if pos < 0 {
				return nil, errNotExact
			}
			ch.removed[pos] = true
		}
		for _, rr := range d.add {
			if findAdded(rr) >= 0 || z.find(rr, ch.removed) >= 0 {
				continue // already there: a record is in a zone once
			}
			owner := lowerName(rr.Header().Name)
			byOwner[owner] = append(byOwner[owner], len(added))
			added = append(added, rr)
		}
		ch.soa = d.to
	}
	for _, rr := range added {
		if rr != nil {
			ch.added = append(ch.added, rr)
		}
	}
	return ch, nil
}

// preview returns the zone as it is after ch, without changing z.
func (z *zoneCopy) preview(ch *zoneChange) []dns.RR {
	out := make([]dns.RR, 0, z.live-len(ch.removed)+len(ch.added)+1)
	out = append(out, ch.soa)
	for i, rr := range z.rrs {
		if rr != nil && !ch.removed[int32(i)] {
			out = append(out, rr)
		}
	}
	return append(out, ch.added...)
}

// commit applies ch to z.
func (z *zoneCopy) commit(ch *zoneChange) {
	z.soa = ch.soa
	for pos := range ch.removed {
		z.rrs[pos] = nil
	}
	z.live -= len(ch.removed)
	for _, rr := range ch.added {
		z.rrs = append(z.rrs, rr)
		z.next = append(z.next, -1)
		z.link(int32(len(z.rrs)-1), rr)
	}
	z.live += len(ch.added)
	// Holes cost memory and time on every copy: compact once they are a
	// quarter of the zone.
	if holes := len(z.rrs) - z.live; holes > 1024 && holes > len(z.rrs)/4 {
		z.rrs = z.records()[1:]
		z.reindex()
	}
}

// overlap counts the records of rrs that z holds: with it, an AXFR that
// replaces z can say how many records it adds and removes.
func (z *zoneCopy) overlap(rrs []dns.RR) int {
	n := 0
	for _, rr := range rrs {
		if z.find(rr, nil) >= 0 {
			n++
		}
	}
	return n
}
