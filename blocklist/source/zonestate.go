package source

import (
	"errors"
	"hash/maphash"
	"math/bits"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// zoneCopy is the zone a Zone source holds, kept so that an IXFR's deltas
// (RFC 1995) can be applied to it without a pass over the whole zone: the
// records sit at fixed positions (a removed one is marked dead until the
// next compaction), and an index by owner name finds a record to remove.
//
// The index is a flat open-addressing hash table of positions rather than
// a Go map of strings: for a zone of a million records it is built in a
// fraction of the time and a quarter of the memory.
//
// It is owned by Run's goroutine. The slices handed to the receiver are
// fresh copies; the records themselves are shared and never changed.
type zoneCopy struct {
	soa  *dns.SOA
	rrs  []dns.RR // every record but the SOA, removed ones included
	dead []bool   // the records of rrs removed
	live int      // the records of rrs not removed

	seed maphash.Seed
	// slots is the hash table: each slot is 0 (empty) or holds, in its low
	// 32 bits, 1 + the last position of rrs with a given owner name
	// (lowercase) and, in its high 32 bits, the top of that name's hash,
	// so that a probe compares names only when the hashes agree. next
	// chains each position to the previous one with the same owner (-1
	// ends the chain). Dead records stay in the chains, skipped by find,
	// so that an owner's slot always names a record with that owner.
	slots []uint64
	next  []int32
	used  int // the slots not empty

	// released is set once the records were let go (release) because a
	// whole zone replaces them: soa and live stay; prints holds a
	// fingerprint of each record, sorted, so that overlap can still count
	// what the new zone keeps. A released copy plans no IXFR.
	released bool
	prints   []uint64
}

// newZoneCopy indexes soa and rrs (which it keeps), each record once: a
// record repeated in a whole zone (the same owner in any case, type,
// class and RDATA, whatever the TTL: a primary whose database holds a
// row twice) is one record (RFC 2181 §5: servers suppress such
// duplicates), so that an IXFR that removes it removes it, as RFC 1995
// removes a record from the zone. Kept twice, one removal left the other
// in place: a primary that turned `ok CNAME rpz-passthru.` into
// `ok CNAME .` left the passthru, which beats the block, in the zone held.
func newZoneCopy(soa *dns.SOA, rrs []dns.RR) *zoneCopy {
	z := &zoneCopy{soa: soa, rrs: rrs, dead: make([]bool, len(rrs)), live: len(rrs), seed: maphash.MakeSeed()}
	z.reindex()
	z.dropRepeats()
	return z
}

// pairwiseRepeats is the most records of one owner before a record that
// dropRepeats compares it with one by one; past it, only those with its
// repeatKey.
const pairwiseRepeats = 16

// dropRepeats marks dead every record of the zone that repeats one before
// it (dns.IsDuplicate), in time linear in the records: a record is
// compared one by one with the records of its owner before it only while
// they are few, else with those of its repeatKey. Compared one by one, an
// owner of many records (a primary's TXT or A records at one name) took
// time in their square: 20,000 took 12 s, at every AXFR and every start
// from the disk copy.
func (z *zoneCopy) dropRepeats() {
	type group struct {
		owner string
		key   uint64
	}
	var (
		before  = make([]int32, len(z.rrs)) // the records of the owner before each
		groups  map[group][]int32           // the live records of the owners past pairwiseRepeats
		scratch []byte
	)
	drop := func(i int32) {
		z.dead[i] = true
		z.live--
	}
	grouped := func(i int32) group {
		if scratch == nil {
			groups, scratch = map[group][]int32{}, make([]byte, dns.MaxMsgSize)
		}
		return group{lowerName(z.rrs[i].Header().Name), repeatKey(z.seed, z.rrs[i], scratch)}
	}
	for i, rr := range z.rrs {
		prev := z.next[i]
		if prev < 0 {
			continue // the first of its owner: most records
		}
		before[i] = before[prev] + 1
		if before[i] <= pairwiseRepeats {
			for pos := prev; pos >= 0; pos = z.next[pos] {
				if !z.dead[pos] && dns.IsDuplicate(z.rrs[pos], rr) {
					drop(int32(i))
					break
				}
			}
			continue
		}
		if before[i] == pairwiseRepeats+1 {
			for pos := prev; pos >= 0; pos = z.next[pos] { // the owner's records so far, live and unique
				if !z.dead[pos] {
					g := grouped(pos)
					groups[g] = append(groups[g], pos)
				}
			}
		}
		g := grouped(int32(i))
		if slices.ContainsFunc(groups[g], func(pos int32) bool { return dns.IsDuplicate(z.rrs[pos], rr) }) {
			drop(int32(i))
			continue
		}
		groups[g] = append(groups[g], int32(i))
	}
}

// repeatKey hashes rr so that two records dns.IsDuplicate calls the same
// (of one owner) have the same key: its type, class and RDATA in wire
// form, uncompressed (packedForCompare), with every octet in lower case
// (the names in RDATA compare in any case) and the TTL aside. A record
// that does not pack is keyed by its type and class alone.
func repeatKey(seed maphash.Seed, rr dns.RR, scratch []byte) uint64 {
	b, owner, err := packedForCompare(rr, scratch)
	if err != nil {
		h := rr.Header()
		return uint64(h.Rrtype)<<16 | uint64(h.Class)
	}
	rest := b[owner:]
	for i, c := range rest {
		if 'A' <= c && c <= 'Z' {
			rest[i] = c + 'a' - 'A'
		}
	}
	return maphash.Bytes(seed, rest)
}

// reindex builds the hash table for every record of rrs.
func (z *zoneCopy) reindex() {
	z.slots = make([]uint64, 1<<bits.Len(uint(2*len(z.rrs)+1024)))
	z.next = make([]int32, len(z.rrs))
	z.used = 0
	for i, rr := range z.rrs {
		z.link(int32(i), rr)
	}
}

// link puts the record at pos, rr, at the head of its owner's chain.
func (z *zoneCopy) link(pos int32, rr dns.RR) {
	slot, tag, head := z.slot(lowerName(rr.Header().Name))
	z.next[pos] = head
	if head < 0 {
		z.used++
	}
	z.slots[slot] = tag | uint64(pos+1)
}

// slot returns the slot of owner (lowercase), the tag of its hash, and the
// position at the head of its chain: -1 when owner has no slot yet, the
// slot then being the empty one where it goes.
func (z *zoneCopy) slot(owner string) (slot int, tag uint64, head int32) {
	h := maphash.String(z.seed, owner)
	tag = h &^ (1<<32 - 1)
	mask := len(z.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := z.slots[i]
		if e == 0 {
			return i, tag, -1
		}
		if e&^(1<<32-1) == tag {
			pos := int32(uint32(e)) - 1
			if lowerName(z.rrs[pos].Header().Name) == owner {
				return i, tag, pos
			}
		}
	}
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

// release lets the records go, keeping the SOA, the count and a
// fingerprint of each record (64 bits, against the 100-odd bytes of a
// record in memory): a whole zone is about to replace them, and holding
// both at once would double the memory of a large zone. If the new zone
// never arrives, the next IXFR finds nothing to apply its differences to,
// and an AXFR follows.
func (z *zoneCopy) release() {
	if z.released {
		return
	}
	prints := make([]uint64, 0, z.live)
	scratch := make([]byte, dns.MaxMsgSize)
	for i, rr := range z.rrs {
		if !z.dead[i] {
			prints = append(prints, fingerprint(z.seed, rr, scratch))
		}
	}
	slices.Sort(prints)
	*z = zoneCopy{soa: z.soa, live: z.live, seed: z.seed, released: true, prints: prints}
}

// fingerprint hashes a record as RFC 1995 compares records: owner name in
// any case, type, class and RDATA, the TTL aside. A CNAME, which almost
// every record of an RPZ zone is, is hashed from its names as they are;
// any other record from its wire form.
func fingerprint(seed maphash.Seed, rr dns.RR, scratch []byte) uint64 {
	if c, ok := rr.(*dns.CNAME); ok {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteString(lowerName(c.Hdr.Name))
		h.WriteByte(0)
		h.WriteString(lowerName(c.Target))
		return h.Sum64() ^ uint64(c.Hdr.Class)<<16 ^ uint64(dns.TypeCNAME)
	}
	b, _, err := packedForCompare(rr, scratch)
	if err != nil {
		return maphash.String(seed, strings.ToLower(rr.String()))
	}
	return maphash.Bytes(seed, b)
}

// packedForCompare packs rr into scratch as RFC 1995 compares records:
// uncompressed, its owner name in lower case and its TTL zeroed. owner is
// where the owner name's last (root) label starts: the type, class, TTL
// and RDATA follow it.
func packedForCompare(rr dns.RR, scratch []byte) (b []byte, owner int, err error) {
	n, err := dns.PackRR(rr, scratch, 0, nil, false)
	if err != nil {
		return nil, 0, err
	}
	b = scratch[:n]
	for owner < len(b) && b[owner] != 0 {
		end := min(owner+1+int(b[owner]), len(b))
		for i := owner + 1; i < end; i++ {
			if 'A' <= b[i] && b[i] <= 'Z' {
				b[i] += 'a' - 'A'
			}
		}
		owner = end
	}
	if ttl := owner + 1 + 4; ttl+4 <= len(b) {
		clear(b[ttl : ttl+4])
	}
	return b, min(owner, len(b)), nil
}

// find returns the position of a live record equal to rr (RFC 1995: same
// owner, type, class and RDATA; the TTL aside), skipping positions in
// skip, or -1.
func (z *zoneCopy) find(rr dns.RR, skip map[int32]bool) int32 {
	if z.released {
		return -1
	}
	_, _, head := z.slot(lowerName(rr.Header().Name))
	for pos := head; pos >= 0; pos = z.next[pos] {
		if !z.dead[pos] && !skip[pos] && dns.IsDuplicate(z.rrs[pos], rr) {
			return pos
		}
	}
	return -1
}

// findRemoved returns the position of a record in removed equal to rr,
// its TTL included, or -1.
func (z *zoneCopy) findRemoved(rr dns.RR, removed map[int32]bool) int32 {
	if z.released {
		return -1
	}
	_, _, head := z.slot(lowerName(rr.Header().Name))
	for pos := head; pos >= 0; pos = z.next[pos] {
		if removed[pos] && z.rrs[pos].Header().Ttl == rr.Header().Ttl && dns.IsDuplicate(z.rrs[pos], rr) {
			return pos
		}
	}
	return -1
}

// records returns a fresh slice of the zone: the SOA, then every record.
func (z *zoneCopy) records() []dns.RR {
	return z.preview(&zoneChange{soa: z.soa})
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
	if z.released {
		return nil, errNotExact
	}
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
			if pos := z.findRemoved(rr, ch.removed); pos >= 0 {
				delete(ch.removed, pos) // removed and added back as it was
				continue
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

// preview returns the zone as it is after ch, without changing z: the
// SOA, the records kept in order, then those added.
func (z *zoneCopy) preview(ch *zoneChange) []dns.RR {
	removed := make([]int32, 0, len(ch.removed))
	for pos := range ch.removed {
		removed = append(removed, pos)
	}
	slices.Sort(removed)
	removed = append(removed, int32(len(z.rrs))) // a sentinel past the end
	out := make([]dns.RR, 0, z.live-len(ch.removed)+len(ch.added)+1)
	out = append(out, ch.soa)
	start := 0
	for _, stop := range removed {
		for i := start; i < int(stop); i++ {
			if !z.dead[i] {
				out = append(out, z.rrs[i])
			}
		}
		start = int(stop) + 1
	}
	return append(out, ch.added...)
}

// commit applies ch to z.
func (z *zoneCopy) commit(ch *zoneChange) {
	z.soa = ch.soa
	for pos := range ch.removed {
		z.dead[pos] = true
	}
	z.live -= len(ch.removed)
	for _, rr := range ch.added {
		z.rrs = append(z.rrs, rr)
		z.dead = append(z.dead, false)
		z.next = append(z.next, -1)
		if 2*(z.used+1) > len(z.slots) {
			// The table grows with the zone, new owners and all: a full
			// one has no empty slot to end a probe, and slot would
			// look for one forever.
			z.reindex()
			continue
		}
		z.link(int32(len(z.rrs)-1), rr)
	}
	z.live += len(ch.added)
	// Dead records cost memory and time on every copy, and a full table
	// long probes: start afresh once the dead are a quarter of the zone
	// or the table is over half full.
	if holes := len(z.rrs) - z.live; holes > 1024 && holes > len(z.rrs)/4 || 2*z.used > len(z.slots) {
		z.rrs = z.records()[1:]
		z.dead = make([]bool, len(z.rrs))
		z.reindex()
	}
}

// overlap counts the records of rrs that z holds: with it, an AXFR that
// replaces z can say how many records it adds and removes.
func (z *zoneCopy) overlap(rrs []dns.RR) int {
	if z.released {
		// Both sides as sorted fingerprints, walked together: a binary
		// search a record would miss the cache twenty times each.
		scratch := make([]byte, dns.MaxMsgSize)
		prints := make([]uint64, len(rrs))
		for i, rr := range rrs {
			prints[i] = fingerprint(z.seed, rr, scratch)
		}
		slices.Sort(prints)
		n := 0
		for i, j := 0, 0; i < len(prints) && j < len(z.prints); {
			switch {
			case prints[i] < z.prints[j]:
				i++
			case prints[i] > z.prints[j]:
				j++
			default:
				n++
				i++
				j++
			}
		}
		return n
	}
	n := 0
	for _, rr := range rrs {
		if z.find(rr, nil) >= 0 {
			n++
		}
	}
	return n
}
