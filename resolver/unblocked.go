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

// A probe stands for what one list entry matches, to ask two policies
// whether they block it: a name (an RPZ `*.` trigger's probe is a name
// below its owner, "*.owner") or, for a response-IP trigger, the first
// address of its prefix. An entry that overlaps another, above or below
// it, is caught by one of the two entries' probes: an allow entry above a
// block entry allows the block entry's probe, one below it is blocked in
// its own probe.
type probe struct {
	name string
	addr netip.Addr // valid for a response-IP trigger
	// block is the file of the block list whose blocking entry this is
	// the probe of; "" for an allowing entry's.
	block string
}

// probeOf is the probe of a list entry and its trigger.
func probeOf(e blocklist.Entry, t blocklist.Trigger) probe {
	var pr probe
	switch p, ok := e.Prefix(); {
	case ok:
		pr.addr = p.Masked().Addr()
	case t.Wildcard:
		pr.name = "*." + e.Name
	default:
		pr.name = e.Name
	}
	if t.Action != blocklist.ActionPassthru && e.List != nil {
		pr.block = e.List.File()
	}
	return pr
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

// probesOf yields the probes of the entries of lists whose trigger keep
// says to; those of an allow list are allowing whatever their trigger.
func probesOf(lists []List, keep func(blocklist.Trigger) bool) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for _, l := range lists {
			tl, ok := l.(triggerLister)
			if !ok {
				continue
			}
			for e, t := range tl.AllTriggers() {
				if keep(t) && !yield(probeOf(e, t)) {
					return
				}
			}
		}
	}
}

// What a list's entries do: block lists block, except their RPZ passthru
// triggers; every entry of an allow list allows.
func blocks(t blocklist.Trigger) bool   { return t.Action != blocklist.ActionPassthru }
func passthru(t blocklist.Trigger) bool { return t.Action == blocklist.ActionPassthru }
func every(blocklist.Trigger) bool      { return true }

// allowingLists is every list of p that can allow.
func allowingLists(p *Policy) []allowingList {
	var a []allowingList
	for _, l := range p.Allow {
		a = append(a, allowingList{l, every})
	}
	for _, l := range p.Block {
		a = append(a, allowingList{l, passthru})
	}
	return a
}

// unblocked is what was blocked by one policy and is not by another:
// what the other allows (exempted), with what allows it, and the
// blocking entries no entry matches any more (removed), by their list.
type unblocked struct {
	exempted      map[probe]bool
	exemptedNames []string // the first maxLogged, "name (allowed by file:line)"
	removed       map[string]int
}

// compare asks was and now about every probe. A name is counted once as
// exempted; an entry as removed once in its own list (the probes are
// each list's entries, once each), so that no set of every probe is
// kept: a changed list of a million entries is walked, not copied.
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
		case pr.block != "":
			if u.removed == nil {
				u.removed = map[string]int{}
			}
			u.removed[pr.block]++
		}
	}
}

// heldError is the hold of what u found, or nil: every exempted name,
// and, when strict, every removed one too (a move between policies); what
// says whose decisions they were.
func (u *unblocked) heldError(what string, strict bool) error {
	var parts []string
	if len(u.exempted) > 0 {
		parts = append(parts, fmt.Sprintf("%d now allowed, first %s", len(u.exempted), strings.Join(u.exemptedNames, ", ")))
	}
	if strict {
		for _, file := range slices.Sorted(maps.Keys(u.removed)) {
			parts = append(parts, fmt.Sprintf("%d of %s no longer listed", u.removed[file], file))
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
// entry its own list's new copy lacks or that a changed allowing list
// (an allow list, a block list with passthru triggers) matches, and the
// entries of the changed allowing lists. The rest cost a lookup each: a
// changed list of a million entries adds about as much as its diff for
// the log.
func policyUnblocked(prev, next *Snapshot, maxShrink float64, shrunkLists map[string]bool) []error {
	var errs []error
	for _, np := range next.Policies {
		op := policyNamed(prev, np.Name)
		if op == nil || !enforces(op) || !enforces(np) {
			continue // removedProtection's
		}
		oldAllow, oldBlock, newBlock := byFile(op.Allow), byFile(op.Block), byFile(np.Block)
		var allowing []allowingList  // changed lists that can allow
		changed := map[string]List{} // block lists of op that changed: their new copy, nil if gone
		var changedOld []List        // the running copies of those
		for _, l := range np.Allow {
			if oldAllow[l.File()] != l {
				allowing = append(allowing, allowingList{l, every})
			}
		}
		for _, l := range op.Block {
			if n := newBlock[l.File()]; n != l {
				changed[l.File()] = n
				changedOld = append(changedOld, l)
			}
		}
		for _, l := range np.Block {
			if pl, ok := l.(passthruList); ok && pl.HasPassthru() && oldBlock[l.File()] != l {
				allowing = append(allowing, allowingList{l, passthru})
			}
		}
		// An allowing list changed: any blocking entry may be allowed now.
		blockProbes := probesOf(op.Block, blocks)
		switch {
		case len(allowing) == 0 && len(changed) == 0:
			continue
		case len(allowing) == 0:
			blockProbes = probesOf(changedOld, blocks)
		}
		var u unblocked
		u.compare(op, np, concat(filter(blockProbes, func(pr probe) bool {
			if n, ok := changed[pr.block]; ok && (n == nil || !blocksIn(n, pr)) {
				return true
			}
			return slices.ContainsFunc(allowing, func(a allowingList) bool { return a.allows(pr) })
		}), allowingProbes(allowing)))
		if err := u.heldError("policy "+np.Name, false); err != nil {
			errs = append(errs, err)
		}
		for _, file := range slices.Sorted(maps.Keys(u.removed)) {
			l, ok := oldBlock[file].(triggerLister)
			if !ok || shrunkLists[file] || !shrunk(float64(l.Len()), float64(l.Len()-u.removed[file]), maxShrink) {
				continue
			}
			shrunkLists[file] = true // one error a list, whichever policies share it
			errs = append(errs, fmt.Errorf("%s: %w: %d of its %d entries no longer block in policy %s (replaced, not only removed; max_shrink %g); SIGHUP accepts it",
				file, ErrShrink, u.removed[file], l.Len(), np.Name, maxShrink))
		}
	}
	return errs
}

// blocksIn reports whether list l has a blocking trigger for pr.
func blocksIn(l List, pr probe) bool {
	if pr.addr.IsValid() {
		al, ok := l.(addressList)
		if !ok {
			return false
		}
		_, t, ok := al.MatchIP(pr.addr)
		return ok && blocks(t)
	}
	_, t, ok := matchTrigger(l, pr.name)
	return ok && blocks(t)
}

// allowingList is a list that can allow: an allow list (every entry
// allows) or a block list with passthru triggers (those allow).
type allowingList struct {
	l    List
	keep func(blocklist.Trigger) bool
}

// allows reports whether a's list has an entry that allows pr.
func (a allowingList) allows(pr probe) bool {
	if pr.addr.IsValid() {
		al, ok := a.l.(addressList)
		if !ok {
			return false
		}
		_, t, ok := al.MatchIP(pr.addr)
		return ok && a.keep(t)
	}
	_, t, ok := matchTrigger(a.l, pr.name)
	return ok && a.keep(t)
}

// allowingProbes yields the probes of what the lists allow.
func allowingProbes(lists []allowingList) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for _, a := range lists {
			for pr := range probesOf([]List{a.l}, a.keep) {
				pr.block = ""
				if !yield(pr) {
					return
				}
			}
		}
	}
}

// filter yields the probes keep says to.
func filter(probes iter.Seq[probe], keep func(probe) bool) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for pr := range probes {
			if keep(pr) && !yield(pr) {
				return
			}
		}
	}
}

// blocksLess is what devices moved from a range of blocking policy was
// (of the running snapshot) to one of blocking policy now (of the new)
// lose: was's blocked names and addresses that now allows or does not
// list.
func blocksLess(was, now *Policy) *unblocked {
	u := new(unblocked)
	u.compare(was, now, concat(probesOf(was.Block, blocks), allowingProbes(allowingLists(now))))
	return u
}

// byFile is lists by file name.
func byFile(lists []List) map[string]List {
	m := make(map[string]List, len(lists))
	for _, l := range lists {
		m[l.File()] = l
	}
	return m
}

// concat yields the probes of each sequence in turn.
func concat(seqs ...iter.Seq[probe]) iter.Seq[probe] {
	return func(yield func(probe) bool) {
		for _, s := range seqs {
			for pr := range s {
				if !yield(pr) {
					return
				}
			}
		}
	}
}
