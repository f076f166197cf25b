package resolver

import (
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
)

// ErrExempted marks a reload held because names (or answer addresses) a
// blocking policy blocked would be allowed: an allow list grown or added,
// an RPZ trigger turned `rpz-passthru.`, or devices moved to a blocking
// policy that lets them through. Allowing is the one thing an allow
// entry is for, so, as with an exemption range (carvedOut), any number
// is held: a deliberate one is a SIGHUP away.
var ErrExempted = fmt.Errorf("%w: names a blocking policy blocked would be allowed", ErrHeld)

// A probe is one name or answer address that two policies are asked
// about, standing for every name (address) they decide alike.
//
// Names: the lists' entries are a tree, and a name is decided by the
// entries on its path, so the entries of every list involved and, for an
// entry that matches the names below it too (a plain list's; an RPZ
// list's `*.name`), the name "*.entry", which stands for the names below
// it that no deeper entry holds, are all there is to ask: an allow entry
// above a block entry allows the block entry's probe, one below it is
// blocked in its own.
//
// Addresses: a prefix's first address and the one just past its end,
// of every response-IP trigger of both policies, cut the address space
// into spans that no trigger splits (addressProbes).
type probe struct {
	name string
	addr netip.Addr // an answer address: valid for a response-IP probe
	// block is the file of the block list whose entry the probe is of,
	// counted against it when the entry no longer blocks; "" for an
	// allowing entry's probe, for the second probe of an entry, and for an
	// address (counted by the trigger that blocked it).
	block string
	// below is, for the second probe of a block list's entry ("*.entry"),
	// that list's file: the entry counts against it when the names below
	// it no longer block while its own name still does (another list
	// blocks that name alone, as an RPZ `tiktok.com CNAME .` does).
	below string
}

func (pr probe) String() string {
	if pr.addr.IsValid() {
		return "answer address " + pr.addr.String()
	}
	return pr.name
}

// decide is p's decision for the probe.
func (pr probe) decide(p *Policy) (d Decision) {
	if pr.addr.IsValid() {
		d, _ = p.DecideAddress(pr.addr)
		return d
	}
	return p.Decide(pr.name)
}

// triggerLister is a list that can say every entry and what it does, and
// how many it has: blocklist.List's AllTriggers and Len.
type triggerLister interface {
	AllTriggers() iter.Seq2[blocklist.Entry, blocklist.Trigger]
	Len() int
}

// ipTriggerLister is a list that can say its response-IP triggers alone:
// blocklist.List.IPTriggers.
type ipTriggerLister interface {
	IPTriggers() iter.Seq2[blocklist.Entry, blocklist.Trigger]
}

// rpzList is a list read as an RPZ zone, whose name triggers match one
// name each (or the names below, `*.`): blocklist.List.IsRPZ.
type rpzList interface {
	IsRPZ() bool
}

// What an entry does, to choose the entries a probe is made of: a block
// list's entries block, except its RPZ passthru triggers, which allow;
// every entry of an allow list allows.
func blockingTrigger(t blocklist.Trigger) bool { return t.Action != blocklist.ActionPassthru }
func passthruTrigger(t blocklist.Trigger) bool { return t.Action == blocklist.ActionPassthru }
func anyTrigger(blocklist.Trigger) bool        { return true }

// nameProbes yields the name probes of the entries of lists that keep
// says to, marked as a block list's when block.
func nameProbes(lists []List, keep func(blocklist.Trigger) bool, block bool) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for _, l := range lists {
			tl, ok := l.(triggerLister)
			if !ok {
				continue
			}
			r, ok := l.(rpzList)
			plain := !ok || !r.IsRPZ()
			for e, t := range tl.AllTriggers() {
				if !keep(t) {
					continue
				}
				if _, ip := e.Prefix(); ip {
					continue // addressProbes'
				}
				pr := triggerProbe(e.Name, t.Wildcard, "")
				if block {
					pr.block = l.File()
				}
				if !yield(pr) {
					return
				}
				if plain {
					// The names below the entry, which its own name
					// may not decide for (an RPZ passthru for the apex
					// alone); counted against the list once, above.
					if !yield(probe{name: "*." + e.Name, below: pr.block}) {
						return
					}
				}
			}
		}
	}
}

// addressProbes yields the boundaries of every response-IP trigger of the
// policies (the first address of each prefix, and the one after its last),
// each once: two addresses between which no boundary lies are decided
// alike by every list of them, so these are all there is to ask.
func addressProbes(policies ...*Policy) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		seen := map[netip.Addr]bool{}
		for _, p := range policies {
			for _, l := range slices.Concat(p.Block, p.Allow) {
				il, ok := l.(ipTriggerLister)
				if !ok {
					continue
				}
				for e := range il.IPTriggers() {
					pfx, ok := e.Prefix()
					if !ok {
						continue
					}
					for _, a := range [2]netip.Addr{pfx.Masked().Addr(), pastPrefix(pfx)} {
						if a.IsValid() && !seen[a] {
							seen[a] = true
							if !yield(probe{addr: a}) {
								return
							}
						}
					}
				}
			}
		}
	}
}

// pastPrefix is the address after p's last, or the zero Addr when p ends
// its address space.
func pastPrefix(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return last.Next()
}

// hasAddressTriggers reports whether a list of p has response-IP triggers.
func hasAddressTriggers(p *Policy) bool { return len(p.blockIPs)+len(p.allowIPs) > 0 }

// allowingList is a list that can allow: an allow list (every entry
// allows) or a block list with passthru triggers (those allow).
type allowingList struct {
	l    List
	keep func(blocklist.Trigger) bool
}

// allowingLists is every list of p that can allow.
func allowingLists(p *Policy) []allowingList {
	a := make([]allowingList, 0, len(p.Allow)+len(p.Block))
	for _, l := range p.Allow {
		a = append(a, allowingList{l, anyTrigger})
	}
	for _, l := range p.Block {
		a = append(a, allowingList{l, passthruTrigger})
	}
	return a
}

// allowingProbes yields the name probes of what the lists allow.
func allowingProbes(lists []allowingList) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for _, a := range lists {
			for pr := range nameProbes([]List{a.l}, a.keep, false) {
				if !yield(pr) {
					return
				}
			}
		}
	}
}

// matchesIn reports whether list l has an entry for the name probe pr
// that keep says to.
func matchesIn(l List, pr probe, keep func(blocklist.Trigger) bool) bool {
	_, t, ok := matchTrigger(l, pr.name)
	return ok && keep(t)
}

// unblocked is what was blocked by one policy and is not by another:
// what the other allows (exempted), with what allows it, and the entries
// whose names no entry blocks any more (removed), by their list.
type unblocked struct {
	exempted      map[probe]bool
	exemptedNames []string // the first maxLogged, "name (allowed by file:line)"
	removed       map[string]int
	// removedBelow counts, by list, the entries whose names below no
	// longer block while their own name still does (probe.below);
	// lastRemoved is the probe last counted in removed, whose entry's
	// second probe, yielded next, is then not counted.
	removedBelow map[string]int
	lastRemoved  probe
	counted      map[blocklist.Entry]bool // response-IP triggers counted in removed
	// below is the names below an entry (its second probe, "*.entry")
	// that was blocked and now neither blocks nor allows. No list counts
	// them (an entry counts once, by its own probe), so a move between
	// policies (heldError, strict) holds them on their own: devices moved
	// to an RPZ list that blocks tiktok.com alone keep the apex blocked
	// and lose every name below it. belowNames is the first maxLogged.
	below      int
	belowNames []string
	// lost: some probe blocked by was is neither blocked nor allowed by
	// now, counted against a list or not (an entry's second probe).
	lost bool
}

// compare asks was and now about every probe, adding to what earlier
// calls found. A probe is counted once as exempted; an entry as removed
// once in its own list (the probes are each list's entries, once each),
// so that no set of every probe is kept: a changed list of a million
// entries is walked, not copied.
func (u *unblocked) compare(was, now *Policy, probes iter.Seq[probe]) {
	for pr := range probes {
		before := pr.decide(was)
		if !before.Blocked {
			continue
		}
		after := pr.decide(now)
		switch {
		case after.Blocked:
		case after.Allowed:
			key := probe{name: pr.name, addr: pr.addr}
			if u.exempted[key] {
				continue
			}
			if u.exempted == nil {
				u.exempted = map[probe]bool{}
			}
			u.exempted[key] = true
			if len(u.exemptedNames) < maxLogged {
				by := "allowed"
				if e := after.Entry; e.List != nil {
					by = fmt.Sprintf("allowed by %s:%d", e.List.File(), e.Line)
				}
				u.exemptedNames = append(u.exemptedNames, fmt.Sprintf("%s (%s)", pr, by))
			}
		default:
			u.lost = true
			block := pr.block
			if block == "" && !pr.addr.IsValid() {
				u.below++
				if len(u.belowNames) < maxLogged {
					u.belowNames = append(u.belowNames, pr.name)
				}
			}
			if e := before.Entry; pr.addr.IsValid() && e.List != nil {
				// The trigger that blocked it, once however many
				// boundaries it decided.
				if u.counted[e] {
					continue
				}
				if u.counted == nil {
					u.counted = map[blocklist.Entry]bool{}
				}
				u.counted[e] = true
				block = e.List.File()
			}
			if block != "" {
				if u.removed == nil {
					u.removed = map[string]int{}
				}
				u.removed[block]++
				u.lastRemoved = probe{name: pr.name, block: block}
			}
			if pr.below != "" && (u.lastRemoved.block != pr.below || u.lastRemoved.name != strings.TrimPrefix(pr.name, "*.")) {
				if u.removedBelow == nil {
					u.removedBelow = map[string]int{}
				}
				u.removedBelow[pr.below]++
			}
		}
	}
}

// heldError is the hold of what u found, or nil: every exempted probe,
// and, when strict, every removed one too (a move between policies); what
// says whose decisions they were.
func (u *unblocked) heldError(what string, strict bool) error {
	var parts []string
	if len(u.exempted) > 0 {
		names := "names"
		if len(u.exempted) == 1 {
			names = "name"
		}
		parts = append(parts, fmt.Sprintf("%d %s now allowed (a *.name stands for the names below it), first %s", len(u.exempted), names, strings.Join(u.exemptedNames, ", ")))
	}
	if strict {
		for _, file := range slices.Sorted(maps.Keys(u.removed)) {
			parts = append(parts, fmt.Sprintf("%d of %s no longer listed", u.removed[file], file))
		}
		if u.below > 0 {
			names := "*.names"
			if u.below == 1 {
				names = "*.name"
			}
			parts = append(parts, fmt.Sprintf("%d %s no longer blocked (a *.name stands for the names below it), first %s", u.below, names, strings.Join(u.belowNames, ", ")))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w: %s; SIGHUP accepts it", what, ErrExempted, strings.Join(parts, "; "))
}

// policyUnblocked holds what a reload takes out of the block of a
// blocking policy kept under its name: names (and answer addresses) now
// allowed, any number (ErrExempted), and a block list whose entries no
// longer block (replaced by others, not just fewer: `cp other.txt
// tiktok.txt`) past maxShrink of its entries (ErrShrink; shrunk lists are
// listShrink's). Only a policy whose lists changed is looked at, and only
// entries whose decision a changed list can have turned: a blocking
// entry its own list's new copy lacks or that a changed allowing list (an
// allow list, a block list with passthru triggers) matches, and the
// entries of the changed allowing lists; the rest cost a lookup each. An
// RPZ list an IXFR updated says its own changes (blocklist.List.Delta):
// the triggers it removed are asked, and it counts as an allowing list
// only when it gained a passthru trigger, or lost a `*.` one while it
// holds passthru triggers; a 1M-trigger zone is not walked for a record.
// Block lists' order does not matter: a passthru trigger that matches a
// name beats every list's block (Decide). A policy with response-IP
// triggers has its address boundaries asked (addressProbes: few).
func policyUnblocked(prev, next *Snapshot, maxShrink float64, shrunkLists map[string]bool) []error {
	var errs []error
	for _, np := range next.Policies {
		op := policyNamed(prev, np.Name)
		if op == nil || !blocking(op) || !blocking(np) {
			continue // removedProtection's
		}
		oldAllow, oldBlock, newBlock := byFile(op.Allow), byFile(op.Block), byFile(np.Block)
		var allowing []allowingList  // changed lists that can allow
		changed := map[string]List{} // block lists of op that changed: their new copy, nil if gone
		var changedOld []List        // the running copies of those
		for _, l := range np.Allow {
			if oldAllow[l.File()] != l {
				allowing = append(allowing, allowingList{l, anyTrigger})
			}
		}
		var deltaProbes []probe    // of the changed lists an IXFR's Delta says
		delta := map[string]bool{} // those lists
		for _, l := range op.Block {
			n := newBlock[l.File()]
			if n == l {
				continue
			}
			changed[l.File()] = n
			removed, added, ok := listDelta(l, n)
			if !ok {
				changedOld = append(changedOld, l)
				continue
			}
			delta[l.File()] = true
			uncovered := false
			for _, e := range removed {
				if blockingTrigger(e.Trigger) {
					deltaProbes = append(deltaProbes, triggerProbe(e.Name, e.Trigger.Wildcard, l.File()))
					// A `*.` trigger gone from a list with passthru
					// triggers may leave the names below it to a
					// passthru above it in the list (the most specific
					// trigger of a list decides), names that other
					// lists' entries hold apart from its probe.
					uncovered = uncovered || e.Trigger.Wildcard
				}
			}
			pl, ok := n.(passthruList)
			if ok && pl.HasPassthru() && uncovered || slices.ContainsFunc(added, func(e blocklist.TriggerEntry) bool { return passthruTrigger(e.Trigger) }) {
				allowing = append(allowing, allowingList{n, passthruTrigger})
			}
		}
		for _, l := range np.Block {
			if pl, ok := l.(passthruList); ok && pl.HasPassthru() && oldBlock[l.File()] != l && !delta[l.File()] {
				allowing = append(allowing, allowingList{l, passthruTrigger})
			}
		}
		if len(allowing) == 0 && len(changed) == 0 {
			continue
		}
		// A blocking entry is asked when its list's new copy lacks it or a
		// changed allowing list matches it.
		turned := func(pr probe) bool {
			file := pr.block
			if file == "" {
				file = pr.below
			}
			if n, ok := changed[file]; ok && (n == nil || !matchesIn(n, pr, blockingTrigger)) {
				return true
			}
			return slices.ContainsFunc(allowing, func(a allowingList) bool { return matchesIn(a.l, pr, a.keep) })
		}
		var u unblocked
		if len(allowing) > 0 {
			u.compare(op, np, filterProbes(nameProbes(op.Block, blockingTrigger, true), turned))
		} else {
			u.compare(op, np, filterProbes(nameProbes(changedOld, blockingTrigger, true), turned))
			u.compare(op, np, filterProbes(slices.Values(deltaProbes), turned))
		}
		u.compare(op, np, allowingProbes(allowing))
		if hasAddressTriggers(op) || hasAddressTriggers(np) {
			u.compare(op, np, addressProbes(op, np))
		}
		if err := u.heldError("policy "+np.Name, false); err != nil {
			errs = append(errs, err)
		}
		files := slices.Concat(slices.Collect(maps.Keys(u.removed)), slices.Collect(maps.Keys(u.removedBelow)))
		slices.Sort(files)
		for _, file := range slices.Compact(files) {
			n := u.removed[file] + u.removedBelow[file]
			l, ok := oldBlock[file].(triggerLister)
			if !ok || shrunkLists[file] || !shrunk(float64(l.Len()), float64(l.Len()-n), maxShrink) {
				continue
			}
			shrunkLists[file] = true // one error a list, whichever policies share it
			errs = append(errs, fmt.Errorf("%s: %w: %d of its %d entries no longer block in policy %s (replaced, not only removed; max_shrink %g); SIGHUP accepts it",
				file, ErrShrink, n, l.Len(), np.Name, maxShrink))
		}
		if u.lost {
			errs = append(errs, baseReplaced(prev, np, oldBlock, maxShrink, shrunkLists)...)
		}
	}
	return errs
}

// baseReplaced holds a block list of np when more than maxShrink of the
// entries it had at the last start or SIGHUP (its peak's list) are gone
// from it and no longer block in np: a list replaced a third at a time,
// each change within max_shrink of the state running, is as gone as one
// replaced at once. Every list of np changed since then before this
// reload is walked, not only those this reload changed: entries moved to
// another list of the policy and dropped from there a reload later are
// lost to the first list as surely (for a list's first change the base is
// the state running, which policyUnblocked measured). Called only when
// the reload unblocked something in np (unblocked.lost): otherwise no
// entry of a base can have stopped blocking since the last reload, which
// the guards let through.
func baseReplaced(prev *Snapshot, np *Policy, oldBlock map[string]List, maxShrink float64, shrunkLists map[string]bool) []error {
	var errs []error
	for _, n := range np.Block {
		file := n.File()
		pk := prev.peakOf(file)
		base := pk.list
		old, ok := oldBlock[file]
		if !ok || shrunkLists[file] || base == nil || base == old {
			continue
		}
		total, gone := 0, 0
		gone1 := func(pr probe) bool {
			if !matchesIn(n, pr, blockingTrigger) && !pr.decide(np).Blocked {
				gone++
				return true
			}
			return false
		}
		// One probe an entry (not an entry's second, for the names below).
		entries := filterProbes(nameProbes([]List{base}, blockingTrigger, true), func(pr probe) bool { return pr.block != "" })
		if removed, _, ok := listDelta(base, n); ok && pk.names != nil {
			// A zone updated by IXFRs since the base: the triggers gone
			// since are Delta's, and the base's count is worked out once.
			pk.names.once.Do(func() {
				for range entries {
					pk.names.n++
				}
			})
			total = pk.names.n
			for _, e := range removed {
				if blockingTrigger(e.Trigger) {
					gone1(triggerProbe(e.Name, e.Trigger.Wildcard, file))
				}
			}
		} else {
			// An entry is gone when its name no longer blocks, or the
			// names below it (its second probe, next) no longer do.
			ownGone := false
			for pr := range nameProbes([]List{base}, blockingTrigger, true) {
				switch {
				case pr.block != "":
					total++
					ownGone = gone1(pr)
				case pr.below != "" && !ownGone:
					gone1(pr)
				}
			}
		}
		// Response-IP triggers of the base: gone when the new copy has
		// no blocking trigger for the prefix and its first address no
		// longer blocks in np.
		if il, ok := base.(ipTriggerLister); ok {
			var kept map[netip.Prefix]bool
			for e, t := range il.IPTriggers() {
				pfx, ok := e.Prefix()
				if !ok || !blockingTrigger(t) {
					continue
				}
				if kept == nil {
					kept = map[netip.Prefix]bool{}
					if nl, ok := n.(ipTriggerLister); ok {
						for ne, nt := range nl.IPTriggers() {
							if q, ok := ne.Prefix(); ok && blockingTrigger(nt) {
								kept[q.Masked()] = true
							}
						}
					}
				}
				total++
				if d, _ := np.DecideAddress(pfx.Masked().Addr()); !kept[pfx.Masked()] && !d.Blocked {
					gone++
				}
			}
		}
		if total == 0 || !shrunk(float64(total), float64(total-gone), maxShrink) {
			continue
		}
		shrunkLists[file] = true
		errs = append(errs, fmt.Errorf("%s: %w: %d of the %d entries it had at the last start or SIGHUP no longer block in policy %s (replaced, not only removed; max_shrink %g); SIGHUP accepts it",
			file, ErrShrink, gone, total, np.Name, maxShrink))
	}
	return errs
}

// blocksLess is what devices moved from a range of blocking policy was
// (of the running snapshot) to one of blocking policy now (of the new)
// lose: was's blocked names and addresses that now allows or does not
// list.
func blocksLess(was, now *Policy) *unblocked {
	u := new(unblocked)
	u.compare(was, now, nameProbes(was.Block, blockingTrigger, true))
	u.compare(was, now, allowingProbes(allowingLists(now)))
	if hasAddressTriggers(was) || hasAddressTriggers(now) {
		u.compare(was, now, addressProbes(was, now))
	}
	return u
}

// listDelta is blocklist.List.Delta of the new copy n against old: the
// triggers an IXFR's update removed and added, known without a walk of
// the list. ok is false for lists that are not two copies of one RPZ
// list built whole (a file, a zone transferred whole again).
func listDelta(old, n List) (removed, added []blocklist.TriggerEntry, ok bool) {
	o, ok1 := old.(*blocklist.List)
	l, ok2 := n.(*blocklist.List)
	if !ok1 || !ok2 {
		return nil, nil, false
	}
	return l.Delta(o)
}

// triggerProbe is the name probe of a trigger for name (or, wildcard,
// the names below it) of the block list file ("" for an allowing one).
func triggerProbe(name string, wildcard bool, file string) probe {
	if wildcard {
		name = "*." + name
	}
	return probe{name: name, block: file}
}

// byFile is lists by file name.
func byFile(lists []List) map[string]List {
	m := make(map[string]List, len(lists))
	for _, l := range lists {
		m[l.File()] = l
	}
	return m
}

// filterProbes yields the probes keep says to.
func filterProbes(probes iter.Seq[probe], keep func(probe) bool) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for pr := range probes {
			if keep(pr) && !yield(pr) {
				return
			}
		}
	}
}
