package resolver

import (
	"fmt"
	"iter"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"golang.org/x/net/publicsuffix"
)

// Warning is a likely mistake in a configuration that loads: it works, but
// probably not as meant.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string {
	if w.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", w.File, w.Line, w.Msg)
	}
	return fmt.Sprintf("%s: %s", w.File, w.Msg)
}

// Lint looks for likely mistakes: a configuration that blocks nothing, a
// block list or client range file that holds nothing, a range a policy
// lists twice, ranges no client can reach, exemptions
// that exempt nothing, blocking policies nested in each other, ranges only
// partly inside allowed_clients, blocking policies of one address family
// where allowed_clients admits the other, names both blocked and allowed by
// one policy, allow entries above (or at) block entries (lintAllowOver),
// http:// DoH listeners whose proxy no trusted_proxies range holds, the
// same list twice in one policy, the same entry (the same names) in two
// lists of one policy, list entries that are public suffixes, and
// duplicate entries.
// Warnings come sorted by file and line.
func (s *Snapshot) Lint() []Warning {
	var ws []Warning
	ranges := s.allRanges()
	for _, cr := range ranges {
		r := cr.Range
		var narrower []netip.Prefix
		var wider []ClientRange
		for p := range s.byClient.Subnets(r.Prefix) {
			if p != r.Prefix {
				narrower = append(narrower, p)
			}
		}
		for p, other := range s.byClient.Supernets(r.Prefix) {
			if p != r.Prefix {
				wider = append(wider, other)
			}
		}
		if covered(r.Prefix, narrower) {
			ws = append(ws, Warning{r.File, r.Line, fmt.Sprintf(
				"range %s of policy %q is shadowed entirely by narrower ranges: it selects no client", r.Prefix, cr.Policy.Name)})
		}
		if !cr.Policy.Blocks() && !slices.ContainsFunc(wider, func(w ClientRange) bool { return w.Policy.Blocks() }) {
			ws = append(ws, Warning{r.File, r.Line, fmt.Sprintf(
				"exemption %s of policy %q sits inside no blocking range: it exempts nothing", r.Prefix, cr.Policy.Name)})
		}
		if s.allowedPart(r.Prefix) == allowedSome {
			ws = append(ws, Warning{r.File, r.Line, fmt.Sprintf(
				"range %s of policy %q is only partly inside allowed_clients: its other clients get REFUSED for every query", r.Prefix, cr.Policy.Name)})
		}
		if cr.Policy.Blocks() {
			// A trusted proxy of more than one address over a blocking
			// range lets every device there name another client and
			// leave the policy: the start of what a reload holds as
			// protection taken away (clientsWidened). One address, the
			// forwarder's own, is the usual setup. Proxies wholly inside
			// a narrower range are that range's devices, not this one's
			// (forwarders in an exemption have no policy to leave); a
			// narrower blocking range warns of them itself.
			for t := range s.trusted.All() {
				inNarrower := slices.ContainsFunc(narrower, func(n netip.Prefix) bool {
					return n.Bits() <= t.Bits() && n.Contains(t.Addr())
				})
				if t.Overlaps(r.Prefix) && !t.IsSingleIP() && !inNarrower {
					ws = append(ws, Warning{r.File, r.Line, fmt.Sprintf(
						"range %s of blocking policy %q overlaps trusted_proxies %s: every device there may name another client by ECS, a PROXY header or Forwarded, and so leave the policy; list only the forwarders' own addresses",
						r.Prefix, cr.Policy.Name, t)})
					break
				}
			}
			for _, w := range wider {
				if w.Policy.Blocks() && w.Policy != cr.Policy {
					ws = append(ws, Warning{r.File, r.Line, fmt.Sprintf(
						"range %s of blocking policy %q overlaps range %s of blocking policy %q (%s): its clients get %q only",
						r.Prefix, cr.Policy.Name, w.Range.Prefix, w.Policy.Name, where(w.Range), cr.Policy.Name)})
				}
			}
		}
	}
	for _, p := range s.Policies {
		for _, al := range p.Allow {
			allow, ok := al.(*blocklist.List)
			if !ok {
				continue
			}
			for _, bl := range p.Block {
				block, ok := bl.(*blocklist.List)
				if !ok {
					continue
				}
				// A block list's passthru allows: no block.
				for sh := range shared(block, allow, func(bt, _ blocklist.Trigger) bool { return bt.Action != blocklist.ActionPassthru }) {
					ws = append(ws, Warning{allow.File(), sh.entry.Line, fmt.Sprintf(
						"%s is both allowed and blocked (%s:%d) in policy %q; allow wins", sh.name(), block.File(), sh.line, p.Name)})
				}
			}
		}
	}
	if !slices.ContainsFunc(s.Policies, (*Policy).Blocks) {
		// Loads, serves, and stops nothing: what dnsfence is for is
		// missing (a policies section dropped, or every block list
		// emptied out of the configuration).
		ws = append(ws, Warning{s.Config.File, 0,
			"no policy has a block list: every query is forwarded untouched, dnsfence blocks nothing"})
	}
	for _, rp := range s.repeats {
		r, prior := rp[0].Range, rp[1].Range
		ws = append(ws, Warning{r.File, r.Line, fmt.Sprintf(
			"range %s of policy %q is listed already (%s): it stays the policy's while either lists it",
			r.Prefix, rp[0].Policy.Name, where(prior))})
	}
	ws = append(ws, s.lintRepeats()...)
	ws = append(ws, s.lintAllowOver()...)
	ws = append(ws, s.lintEmpty()...)
	ws = append(ws, s.lintOneFamily(ranges)...)
	ws = append(ws, s.lintOpen()...)
	ws = append(ws, s.lintPorts()...)
	ws = append(ws, s.lintPlainDoH()...)
	ws = append(ws, s.lintRate()...)
	ws = append(ws, s.lintMaxBytes()...)
	ws = append(ws, s.lintBroadcast()...)
	ws = append(ws, s.lintPlainAtTLS()...)
	for _, path := range sortedKeys(s.Lists) {
		l := s.Lists[path]
		for e, t := range l.AllTriggers() {
			if _, ip := e.Prefix(); ip || l.IsRPZ() && !t.Wildcard {
				// A response-IP trigger names no domain, and an RPZ
				// trigger for a name matches that name only: neither
				// blocks the domains registered under a suffix.
				continue
			}
			if suffix, _ := publicsuffix.PublicSuffix(e.Name); suffix == e.Name {
				does := "blocks"
				if t.Action == blocklist.ActionPassthru {
					// `*.co.uk CNAME rpz-passthru.`: the widest allow there is.
					does = "lets through, past the block entries of every list,"
				}
				ws = append(ws, Warning{path, e.Line, fmt.Sprintf(
					"%s is a public suffix: it %s every domain registered under it", e.Name, does)})
			}
		}
		for _, d := range l.Duplicates() {
			ws = append(ws, Warning{path, d.Line, fmt.Sprintf("duplicate entry %s (first on line %d)", d.Name, d.FirstLine)})
		}
	}
	sort.SliceStable(ws, func(i, j int) bool {
		if ws[i].File != ws[j].File {
			return ws[i].File < ws[j].File
		}
		return ws[i].Line < ws[j].Line
	})
	return ws
}

// allRanges lists every policy range in table order.
func (s *Snapshot) allRanges() []ClientRange {
	var out []ClientRange
	for _, cr := range s.byClient.AllSorted() {
		out = append(out, cr)
	}
	return out
}

// covered reports whether the prefixes in subs, each inside p, together
// cover every address of p.
func covered(p netip.Prefix, subs []netip.Prefix) bool {
	var inside []netip.Prefix
	for _, q := range subs {
		if q.Overlaps(p) {
			if q.Bits() <= p.Bits() {
				return true // q holds all of p
			}
			inside = append(inside, q)
		}
	}
	if len(inside) == 0 || p.Bits() == p.Addr().BitLen() {
		return false
	}
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hi := netip.PrefixFrom(upperHalf(p), p.Bits()+1)
	return covered(lo, inside) && covered(hi, inside)
}

// upperHalf is the first address of the upper half of p.
func upperHalf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bit := p.Bits()
	b[bit/8] |= 0x80 >> (bit % 8)
	a, _ := netip.AddrFromSlice(b)
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lintOneFamily finds blocking policies whose ranges are all IPv4 (or all
// IPv6) while allowed_clients admits clients of the other family in ranges
// where no policy lists any range. A dual-stack government device asks
// over either family: over the one its policy does not list it is in no
// policy, and every name is forwarded. Loopback is left out (the machine
// itself); an allowed range with a policy range in it, blocking or not,
// was thought of. A family no client can ask from is left out too: with
// every listener on an address of the other family (the default
// 127.0.0.1:5353, an IPv4 address of the host) and no trusted proxy to
// name a client, no device asks over it. One warning a family, at the
// first such policy's first range, naming every such policy.
func (s *Snapshot) lintOneFamily(ranges []ClientRange) []Warning {
	askable := s.askableFamilies()
	first := map[*Policy]blocklist.Range{}
	var has [2]map[*Policy]bool // by family: 0 IPv4, 1 IPv6
	has[0], has[1] = map[*Policy]bool{}, map[*Policy]bool{}
	for _, cr := range ranges {
		if _, ok := first[cr.Policy]; !ok {
			first[cr.Policy] = cr.Range
		}
		has[family(cr.Range.Prefix.Addr())][cr.Policy] = true
	}
	var ws []Warning
	for f, name := range []string{"IPv4", "IPv6"} {
		other := 1 - f
		var names []string
		var at blocklist.Range
		for _, p := range s.Policies {
			if p.Blocks() && has[f][p] && !has[other][p] {
				if names == nil {
					at = first[p]
				}
				names = append(names, strconv.Quote(p.Name))
			}
		}
		var open []string
		for _, a := range s.Config.AllowedPrefixes() {
			if family(a.Addr()) == other && !a.Addr().IsLoopback() && !slices.ContainsFunc(ranges, func(cr ClientRange) bool { return cr.Range.Prefix.Overlaps(a) }) {
				open = append(open, a.String())
			}
		}
		if names == nil || open == nil || !askable[other] {
			continue
		}
		otherName := []string{"IPv4", "IPv6"}[other]
		who := "blocking policy " + names[0] + " lists"
		if len(names) > 1 {
			who = "blocking policies " + strings.Join(names, ", ") + " list"
		}
		ws = append(ws, Warning{at.File, at.Line, fmt.Sprintf(
			"%s %s ranges only, while allowed_clients admits %s clients where no policy lists a range (%s): a dual-stack device that asks over %s is in no policy and gets every name; add the devices' %s ranges to the policy, or take those ranges out of allowed_clients",
			who, name, otherName, strings.Join(open, ", "), otherName, otherName)})
	}
	return ws
}

// askableFamilies reports, by family (0 IPv4, 1 IPv6), whether a client
// of it other than the machine itself can ask dnsfence: a listener (plain
// or encrypted) on an address of that family that is not loopback, or on a
// wildcard one (one dual-stack socket, 0.0.0.0 as [::]), or a trusted
// proxy, which names clients of either family. An address that does not
// parse counts for both.
func (s *Snapshot) askableFamilies() (askable [2]bool) {
	if len(s.Config.TrustedPrefixes()) > 0 {
		return [2]bool{true, true}
	}
	addrs := slices.Concat(s.Config.Listen, s.Config.ListenTLS, s.Config.ListenQUIC)
	for _, a := range s.Config.ListenHTTPS {
		if hostport, _, err := listen.ParseDoHListen(a); err == nil {
			a = hostport
		}
		addrs = append(addrs, a)
	}
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		switch ip := ap.Addr().Unmap(); {
		case err != nil || ip.IsUnspecified():
			return [2]bool{true, true}
		case ip.IsLoopback():
			// The machine itself, left out of the ranges named too.
		default:
			askable[family(ip)] = true
		}
	}
	return askable
}

// family is 0 for an IPv4 address, 1 for IPv6.
func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// lintRepeats finds a list named twice in one policy, and an entry that two
// block (or two allow) lists of one policy both hold: harmless, but a sign
// of lists that were meant to differ. Each pair of lists is reported once.
func (s *Snapshot) lintRepeats() []Warning {
	var ws []Warning
	seen := map[[2]string]bool{}
	for _, pc := range s.Config.Policies {
		for _, kind := range []struct {
			key   string
			files []string
			// same says whether two triggers of the same names do
			// the same: in block lists, a passthru lets through what
			// a block of another list blocks (lintAllowOver warns of
			// it); in allow lists, every entry allows.
			same func(a, b blocklist.Trigger) bool
		}{
			{"block", pc.Block, func(a, b blocklist.Trigger) bool {
				return (a.Action == blocklist.ActionPassthru) == (b.Action == blocklist.ActionPassthru)
			}},
			{"allow", pc.Allow, func(a, b blocklist.Trigger) bool { return true }},
		} {
			first := map[string]int{} // path to its first index
			var lists []*blocklist.List
			for j, f := range kind.files {
				path := s.Config.Path(f)
				if i, ok := first[path]; ok {
					msg := fmt.Sprintf("policy %q names %s list %s twice", pc.Name, kind.key, f)
					if line := pc.Line(kind.key, i); line > 0 {
						msg += fmt.Sprintf(" (first at line %d)", line)
					}
					ws = append(ws, Warning{File: s.Config.File, Line: pc.Line(kind.key, j), Msg: msg + "; keep one"})
					continue
				}
				first[path] = j
				if l, ok := s.Lists[path]; ok {
					lists = append(lists, l)
				}
			}
			for i, a := range lists {
				for _, b := range lists[i+1:] {
					pair := [2]string{a.File(), b.File()}
					if seen[pair] {
						continue
					}
					seen[pair] = true
					for sh := range shared(a, b, kind.same) {
						ws = append(ws, Warning{b.File(), sh.entry.Line, fmt.Sprintf("%s is also in %s:%d", sh.name(), a.File(), sh.line)})
					}
				}
			}
		}
	}
	return ws
}

// canaryEffect is what a device does when a name of the built-in DoH
// canary list (dohCanary) is not NXDOMAIN.
var canaryEffect = map[string]string{
	"use-application-dns.net": "Firefox then turns its own DNS over HTTPS on and sends its queries past dnsfence",
	"mask.icloud.com":         "Apple devices then keep iCloud Private Relay on and send their DNS past dnsfence",
	"mask-h2.icloud.com":      "Apple devices then keep iCloud Private Relay on and send their DNS past dnsfence",
}

// lintAllowOver warns of an entry that lets names a policy's block
// entries hold through, where check said nothing of it (only an allow
// list's entry of the same names was warned of, "both allowed and
// blocked"): an allow entry above a block entry (`google.com`, allowed
// for mail, above doh-bypass.txt's `dns.google.com`; `icloud.com`, above
// the built-in DoH canary's `mask.icloud.com`), or at one of another
// kind (a plain list's `x.example` over an RPZ `*.x.example CNAME .`, an
// RPZ allow trigger `x.example` over a plain list's x.example), or an RPZ
// passthru trigger above or at one. Allow beats block, so those block
// entries block nothing in that policy: a DoH-bypass entry let through
// lets the devices' own encrypted DNS on, past dnsfence and every block
// list, and a canary name let through turns Firefox's DoH or iCloud
// Private Relay on. One
// warning an allowing entry and policy, at the entry's line, naming the
// first block entries it lets through and, for canary names, what the
// devices then do.
func (s *Snapshot) lintAllowOver() []Warning {
	var ws []Warning
	for _, p := range s.Policies {
		if !p.Blocks() || len(p.Allow) == 0 && len(p.passthru) == 0 {
			continue
		}
		type at struct {
			file string
			line int
		}
		var order []at
		groups := map[at]*allowOver{}
		for _, l := range p.Block {
			bl, ok := l.(*blocklist.List)
			if !ok {
				continue
			}
			for e, t := range bl.AllTriggers() {
				if t.Action == blocklist.ActionPassthru {
					continue
				}
				over, let, ok := p.allowedOver(bl, e, t)
				if !ok {
					continue
				}
				file := over.List.File()
				allowList := slices.ContainsFunc(p.Allow, func(l List) bool { return l.File() == file })
				if allowList && sameEntry(over, e) {
					// An allow list's entry of the same names is
					// the "both allowed and blocked" warning (shared):
					// one warning a pair of lines.
					continue
				}
				k := at{file, over.Line}
				g := groups[k]
				if g == nil {
					g = &allowOver{entry: over.Name, policy: p.Name, passthru: !allowList}
					groups[k] = g
					order = append(order, k)
				}
				g.add(let, bl.File(), e.Line)
			}
		}
		for _, k := range order {
			ws = append(ws, Warning{k.file, k.line, groups[k].String()})
		}
	}
	return ws
}

// allowedOver is the entry that lets all that block entry e (with
// trigger t) of list from blocks through in p, at or above it, and what
// it lets through, as the warning names it: for a name, the allow entry or
// passthru trigger Decide finds for the name e blocks (e.Name), or else
// for the names below it that no deeper entry holds ("*." and e.Name, a
// probe as unblocked.go's), when e blocks those (a plain list's entry, an
// RPZ `*.` trigger). So `*.tracker.com CNAME rpz-passthru.` over a plain
// list's tracker.com lets *.tracker.com through, while `*.example.com
// CNAME rpz-passthru.` over `*.ads.example.com CNAME .` of the same zone
// lets nothing through (the longer trigger decides the names below
// ads.example.com). For a response-IP prefix, the allow or passthru trigger
// DecideAddress finds for its first address, when that trigger's prefix
// holds the whole of e's (a longer one lets part of it through, and a
// shorter one beside that longer one is not looked for). ok is false when
// nothing lets e through. A name that nothing may let through (mayAllow)
// is not looked up.
func (p *Policy) allowedOver(from List, e blocklist.Entry, t blocklist.Trigger) (over blocklist.Entry, let string, ok bool) {
	if pfx, ip := e.Prefix(); ip {
		d, ok := p.DecideAddress(pfx.Addr())
		if !ok || !d.Allowed || d.Entry.List == nil || mappedBits(d.Entry) > mappedBits(e) {
			return blocklist.Entry{}, "", false
		}
		return d.Entry, e.Name, true
	}
	// e blocks e.Name unless it is a `*.` trigger, and the names below
	// it unless it is an RPZ trigger for the name alone.
	below := t.Wildcard || e.List == nil || !e.List.IsRPZ()
	if !p.mayAllow(from, e.Name, below) {
		return blocklist.Entry{}, "", false
	}
	var probes [2]string
	if !t.Wildcard {
		probes[0] = e.Name
	}
	if below {
		probes[1] = "*." + e.Name
	}
	for _, name := range probes {
		if name == "" {
			continue
		}
		if d := p.Decide(name); d.Allowed && d.Entry.List != nil {
			return d.Entry, name, true
		}
	}
	return blocklist.Entry{}, "", false
}

// holdsTriggerList is a list that says whether it holds a trigger of a
// name: blocklist.List.HoldsTrigger.
type holdsTriggerList interface {
	HoldsTrigger(name string, t blocklist.Trigger) bool
}

// containsList is a list that says whether a name is itself an entry:
// blocklist.List.Contains.
type containsList interface {
	Contains(name string) bool
}

// passthruBelow is an RPZ `*.` rpz-passthru. trigger, as HoldsTrigger
// takes it.
var passthruBelow = blocklist.Trigger{Action: blocklist.ActionPassthru, Wildcard: true}

// mayAllow reports whether Decide may find an allow list's entry or a
// passthru trigger for name or, below, for the names below it: one at
// name or above it, of an allow list, or of a passthru list other than
// from, the block list whose entry name is (there the entry is the most
// specific trigger for what it blocks). It may say true where Decide
// allows nothing, never false where Decide allows. It looks name up as it
// is: allowedOver's probe of the names below a name is "*."+name, which
// Decide asks every list about, so that each trigger of a zone of a
// million block triggers and some passthru ones was a string and a walk
// of every list, for the few that an allowing entry is above.
func (p *Policy) mayAllow(from List, name string, below bool) bool {
	for _, l := range p.Allow {
		if _, ok := l.Match(name); ok {
			return true // an entry at name or above it
		}
		if cl, ok := l.(containsList); !ok || below && cl.Contains(name) {
			return true // an RPZ `*.` trigger of name
		}
	}
	for _, j := range p.passthru {
		l := p.Block[j]
		if l == from {
			continue
		}
		_, mt, ok := matchTrigger(l, name)
		if ok && mt.Action == blocklist.ActionPassthru {
			return true
		}
		if !below {
			continue
		}
		// The names below name: name's own `*.` trigger, else the
		// `*.` trigger of the nearest parent that has one, which
		// MatchTrigger finds for name unless name has a trigger of
		// its own.
		hl, hok := l.(holdsTriggerList)
		if !hok || hl.HoldsTrigger(name, passthruBelow) || ok && !mt.Wildcard {
			return true
		}
	}
	return false
}

// allowOver is what one allowing entry of a policy lets through
// (lintAllowOver).
type allowOver struct {
	entry, policy string
	passthru      bool     // the entry is an RPZ passthru of a block list, not an allow list's
	canary        []string // the canary names it lets through
	// canaryToo are the block entries of other lists that are canary
	// names (a DoH-bypass list's mask.icloud.com), "file:line" by name:
	// where the policy has the canary, named as the canary's, not twice.
	canaryToo [][2]string
	blocked   []string // the first other block entries, "name (file:line)"
	n         int      // every block entry it lets through
	below     bool     // one of them is below entry, not entry itself
}

func (g *allowOver) add(name, file string, line int) {
	g.n++
	g.below = g.below || name != g.entry
	switch {
	case file == DoHCanaryList:
		g.canary = append(g.canary, name)
	case canaryEffect[name] != "":
		g.canaryToo = append(g.canaryToo, [2]string{name, fmt.Sprintf("%s:%d", file, line)})
	case len(g.blocked) < 3:
		g.blocked = append(g.blocked, fmt.Sprintf("%s (%s:%d)", name, file, line))
	}
}

// String is the warning: what g's entry lets through, what devices then
// do, and what to write instead.
func (g *allowOver) String() string {
	var too, blocked []string // where the canary's names are listed too; the other block entries named
	for _, c := range g.canaryToo {
		if slices.Contains(g.canary, c[0]) {
			too = append(too, c[1])
		} else {
			blocked = append(blocked, fmt.Sprintf("%s (%s)", c[0], c[1]))
		}
	}
	blocked = append(blocked, g.blocked...)
	var b strings.Builder
	if !g.below {
		// An entry for a name a block entry of another kind holds
		// too: an RPZ passthru trigger for it, or an allow list's
		// entry of the name and the names below it over an RPZ
		// trigger for the name alone, or the reverse.
		fmt.Fprintf(&b, "%s is let through in policy %q", g.entry, g.policy)
		if len(blocked) > 0 {
			if g.passthru {
				b.WriteString(" by an RPZ passthru")
			}
			fmt.Fprintf(&b, ", past %s", joinAnd(blocked))
		}
	} else {
		let := append(slices.Clone(g.canary), blocked...)
		if more := g.n - len(let) - len(too); more > 0 {
			let = append(let, count(more, "more block entry", "more block entries"))
		}
		fmt.Fprintf(&b, "%s lets %s through in policy %q", g.entry, joinAnd(let), g.policy)
	}
	if len(g.canary) > 0 {
		var effects []string
		for _, c := range g.canary {
			if ef := canaryEffect[c]; !slices.Contains(effects, ef) {
				effects = append(effects, ef)
			}
		}
		b.WriteString(", past doh_canary")
		if len(too) > 0 {
			fmt.Fprintf(&b, " (listed in %s too)", joinAnd(too))
		}
		fmt.Fprintf(&b, ": %s", strings.Join(effects, "; "))
	} else if g.below {
		b.WriteString(", past its block lists (allow beats block)")
	}
	switch {
	case g.below && strings.Contains(g.entry, "/"):
		fmt.Fprintf(&b, "; allow only the addresses meant inside %s", g.entry)
	case g.below:
		fmt.Fprintf(&b, "; allow only the names meant below %s (e.g. www.%s)", g.entry, g.entry)
	default:
		b.WriteString("; take it out")
	}
	switch {
	case len(g.canary) > 0 && len(too) > 0:
		// doh_canary: false alone leaves those entries let through.
		b.WriteString(", or set doh_canary: false and take those entries out to say so")
	case len(g.canary) > 0:
		b.WriteString(", or set doh_canary: false to say so")
	default:
		b.WriteString(", or take the block entries out if letting them through is meant")
	}
	return b.String()
}

// joinAnd joins items as a sentence does: "a", "a and b", "a, b and c".
func joinAnd(items []string) string {
	if len(items) <= 1 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// lintEmpty warns of each block list that holds no entry and each client
// range file that holds no range (no line, or comments only), at the
// configuration's line naming it: the list blocks nothing, the file puts
// no device in its policy (one of a policy with no other range is refused,
// BuildSnapshot). Such a file is most often what a sync, a template or a
// ConfigMap key that came out empty wrote; a running dnsfence holds it
// (the reload guards), but a start has nothing before it, and check is
// what runs first. Remote lists are left out: check without -fetch has no
// copy of them to count, and a fetch says what it got.
func (s *Snapshot) lintEmpty() []Warning {
	var ws []Warning
	for _, pc := range s.Config.Policies {
		for j, f := range pc.Block {
			if l, ok := s.Lists[s.Config.Path(f)]; ok && !config.IsRemote(f) && l.Len() == 0 {
				ws = append(ws, Warning{s.Config.File, pc.Line("block", j), fmt.Sprintf(
					"block list %s of policy %q holds no entry: it blocks nothing", f, pc.Name)})
			}
		}
		for j, f := range pc.ClientFiles {
			if rf, ok := s.Ranges[s.Config.Path(f)]; ok && len(rf.Ranges) == 0 {
				ws = append(ws, Warning{s.Config.File, pc.Line("client_files", j), fmt.Sprintf(
					"client range file %s of policy %q holds no range: it puts no device in the policy", f, pc.Name)})
			}
		}
	}
	return ws
}

// lintPlainDoH warns of an http:// DNS over HTTPS listener, a
// TLS-terminating proxy's backend, that no trusted_proxies range can hold
// the proxy of: none at all, or, for a listener on a loopback address,
// whose proxy is on this host and asks from loopback, none holding a
// loopback address of its family. The proxy's Forwarded and
// X-Forwarded-For headers are then not read, and every device asking
// through it is decided as the proxy's own address: with the proxy's
// address in no blocking range, a government device got every name over
// DoH that it was refused over plain DNS, and check said nothing. Only
// while some policy blocks: with none, no device is taken out of a block.
func (s *Snapshot) lintPlainDoH() []Warning {
	if !slices.ContainsFunc(s.Policies, (*Policy).Blocks) {
		return nil
	}
	var ws []Warning
	for i, l := range s.Config.ListenHTTPS {
		hostport, plain, err := listen.ParseDoHListen(l)
		if err != nil || !plain {
			continue
		}
		var msg string
		if ap, err := netip.ParseAddrPort(hostport); err == nil && ap.Addr().Unmap().IsLoopback() {
			lo, loopback := netip.IPv6Loopback(), netip.PrefixFrom(netip.IPv6Loopback(), 128)
			if ap.Addr().Unmap().Is4() {
				lo, loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.MustParsePrefix("127.0.0.0/8")
			}
			if s.trusted.OverlapsPrefix(loopback) {
				continue
			}
			msg = fmt.Sprintf("no trusted_proxies range holds a loopback address, which a proxy on this host asks from: %s; e.g. trusted_proxies: [%q]", plainDoHEffect, lo)
		} else if s.trusted.Size() == 0 {
			msg = "trusted_proxies is empty: " + plainDoHEffect + "; list the proxy's address in trusted_proxies"
		} else {
			continue
		}
		ws = append(ws, Warning{s.Config.File, s.Config.Line("listen_https", i), fmt.Sprintf(
			"listen_https[%d]: %s takes DNS over HTTPS from a TLS-terminating proxy, and %s", i, l, msg)})
	}
	return ws
}

// plainDoHEffect is what an http:// DoH listener whose proxy is not
// trusted does (lintPlainDoH).
const plainDoHEffect = "its Forwarded and X-Forwarded-For headers are not read, and every device asking through it is decided as the proxy's own address, not its own"

// globalUnicast is the IPv6 global unicast space (RFC 4291 §2.4).
var globalUnicast = netip.MustParsePrefix("2000::/3")

// lintOpen warns of an allowed_clients range as wide as a whole part of
// the Internet: an IPv4 range wider than a /8 (every one holds public
// addresses; a department's own, 10.0.0.0/8 among them, is a /8 at most)
// or an IPv6 range wider than a /16 that holds global unicast addresses
// (fc00::/7, the unique local ones, holds none). Served on an address the
// Internet reaches, dnsfence then answers whoever asks: an open resolver,
// which reflection attacks use to flood a third party with answers to
// queries spoofed from its address (RFC 5358; a Pi-hole left so was used
// for one, pi-hole/FTL#1076), and which hands anyone what the upstreams
// resolve. It loads, since it may be meant behind a firewall, but check
// says so, and check -strict fails on it.
func (s *Snapshot) lintOpen() []Warning {
	var ws []Warning
	for i, a := range s.Config.AllowedPrefixes() {
		if a.Addr().Is4() && a.Bits() >= 8 || a.Addr().Is6() && (a.Bits() >= 16 || !a.Overlaps(globalUnicast)) {
			continue
		}
		ws = append(ws, Warning{s.Config.File, s.Config.AllowedLine(i), fmt.Sprintf(
			"allowed_clients %s admits addresses of the whole Internet: on an address reachable from outside, dnsfence answers anyone, an open resolver that reflection attacks use (RFC 5358); list the department's own ranges",
			a)})
	}
	return ws
}

// lintPorts warns of DNS over HTTPS on plain DNS's port and plain DNS on
// HTTPS's, in upstreams, listen_https and listen: a plain upstream's
// address with https:// put before it, or a DoH server's written as a
// plain upstream. Neither is refused, as port 853 for plain DNS is (RFC
// 7858 §3.1 forbids that; no RFC forbids these), but neither reaches the
// server meant: a plain DNS server does not speak HTTPS, nor a DoH server
// plain DNS, so every query to it fails over to the other upstreams, and a
// device looking for a listener on its usual port finds none.
func (s *Snapshot) lintPorts() []Warning {
	var ws []Warning
	warn := func(key string, i int, format string, args ...any) {
		ws = append(ws, Warning{s.Config.File, s.Config.Line(key, i), fmt.Sprintf("%s[%d]: ", key, i) + fmt.Sprintf(format, args...)})
	}
	for i, u := range s.Config.Upstreams {
		a, err := upstream.ParseAddress(u)
		if err != nil || config.IsResolvConf(u) {
			continue
		}
		switch {
		case a.Kind == upstream.KindHTTPS && a.Port == upstream.PlainPort:
			fix := upstream.Address{Kind: a.Kind, Host: a.Host, Port: upstream.DoHPort, Path: a.Path, ServerName: a.ServerName}
			warn("upstreams", i, "%q: DNS over HTTPS on port 53, the port of plain DNS, which DoH servers do not listen on; they listen on 443: %s", u, fix)
		case a.Kind == upstream.KindPlain && a.Port == upstream.DoHPort:
			doh := upstream.Address{Kind: upstream.KindHTTPS, Host: a.Host, Port: upstream.DoHPort, Path: "/dns-query", ServerName: "NAME"}
			warn("upstreams", i, "%q: plain DNS to port 443, the port of HTTPS, which a DNS over HTTPS server there does not answer; for DNS over HTTPS write %s (NAME: the name its certificate carries), for plain DNS %s",
				u, doh, net.JoinHostPort(a.Host, strconv.Itoa(upstream.PlainPort)))
		}
	}
	for i, l := range s.Config.ListenHTTPS {
		// An http:// listener is a TLS-terminating proxy's backend, on
		// whatever port the proxy is given.
		hostport, plain, err := listen.ParseDoHListen(l)
		if ap, perr := netip.ParseAddrPort(hostport); err == nil && perr == nil && !plain && ap.Port() == upstream.PlainPort {
			warn("listen_https", i, "%s: DNS over HTTPS on port 53, the port of plain DNS: devices look for it on 443, and their plain DNS over TCP sent there meets TLS; e.g. %s",
				l, netip.AddrPortFrom(ap.Addr(), upstream.DoHPort))
		}
	}
	for i, l := range s.Config.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil && ap.Port() == upstream.DoHPort {
			warn("listen", i, "%s: plain DNS on port 443, the port of HTTPS, where devices look for DNS over HTTPS (listen_https), not plain DNS; e.g. %s",
				l, netip.AddrPortFrom(ap.Addr(), upstream.PlainPort))
		}
	}
	return ws
}

// sharedEntry is an entry of one list that another holds too (shared).
type sharedEntry struct {
	entry   blocklist.Entry
	trigger blocklist.Trigger
	line    int // the other list's line of it
}

// name is the entry as its list has it: a `*.` trigger with its `*.`,
// which says that it is the names below entry.Name.
func (sh sharedEntry) name() string {
	if sh.trigger.Wildcard {
		return "*." + sh.entry.Name
	}
	return sh.entry.Name
}

// shared yields each entry of b that a holds as an entry of the same
// names (heldAs), with a's line of it, when same says the two triggers
// (a's, b's) do the same. Two entries of one name and other kinds are
// not the same: a plain list's x means x and the names below it, an RPZ
// trigger x means x alone, `*.x` the names below x alone (Decide).
func shared(a, b *blocklist.List, same func(at, bt blocklist.Trigger) bool) iter.Seq[sharedEntry] {
	return func(yield func(sharedEntry) bool) {
		var ips map[netip.Prefix]ipTrigger
		for e, t := range b.AllTriggers() {
			if !a.Contains(e.Name) {
				continue
			}
			if ips == nil && a.HasIPTriggers() {
				ips = ipTriggers(a)
			}
			m, mt, ok := heldAs(a, ips, e, t)
			if !ok || !same(mt, t) {
				continue
			}
			if !yield(sharedEntry{e, t, m.Line}) {
				return
			}
		}
	}
}

// heldAs is a's entry of the same names as e, with trigger t, an entry
// of another list that a Contains, and its trigger: for a response-IP
// trigger, a's trigger of that prefix (from ips, ipTriggers of a); for a
// name, a plain list's entry of a plain list's, or an RPZ list's trigger
// of the same kind (the name's own or its `*.`) of an RPZ list's. Match
// alone finds no entry for the name of a `*.` trigger, which matches
// the names below it, nor for a prefix in text.
func heldAs(a *blocklist.List, ips map[netip.Prefix]ipTrigger, e blocklist.Entry, t blocklist.Trigger) (blocklist.Entry, blocklist.Trigger, bool) {
	if pfx, ip := e.Prefix(); ip {
		it, ok := ips[pfx.Masked()]
		return blocklist.Entry{List: a, Name: e.Name, Line: it.line}, it.trigger, ok
	}
	if a.IsRPZ() != e.List.IsRPZ() {
		return blocklist.Entry{}, blocklist.Trigger{}, false
	}
	name := e.Name
	if t.Wildcard {
		name = "*." + e.Name
	}
	m, mt, ok := a.MatchTrigger(name)
	// Of one name, MatchTrigger of the name finds its own trigger, of
	// the `*.` name its `*.` trigger (not a parent's `*.`: another name).
	return m, mt, ok && m.Name == e.Name
}

// sameEntry reports whether over, the allow entry Decide found for a
// name probe of block entry e (allowedOver), is an entry of e's names:
// the pair shared finds. Of one name, an RPZ allow list's entry is of
// e's kind when e is an RPZ trigger too: the probe of a trigger for the
// name alone, the name, matches no `*.` trigger of it, and that of a `*.`
// trigger, `*.name`, no trigger for the name alone.
func sameEntry(over, e blocklist.Entry) bool {
	if over.Name != e.Name {
		return false
	}
	return over.List.IsRPZ() == e.List.IsRPZ() // a prefix: two RPZ lists' triggers
}

// ipTrigger is a response-IP trigger's line and what it does.
type ipTrigger struct {
	line    int
	trigger blocklist.Trigger
}

// ipTriggers is every response-IP trigger of l, by its prefix.
func ipTriggers(l *blocklist.List) map[netip.Prefix]ipTrigger {
	m := map[netip.Prefix]ipTrigger{}
	for e, t := range l.IPTriggers() {
		if pfx, ok := e.Prefix(); ok {
			m[pfx.Masked()] = ipTrigger{e.Line, t}
		}
	}
	return m
}

// lintRate warns of a rate_limit.rate under one query a second, 0 (off)
// left out: a device asks several names for each page or app it opens,
// an A and an AAAA query for each, and every query past a client's rate
// is dropped unanswered, so past its first burst almost none of a
// device's queries gets through (`rate: 0.5`, or 0.001, meant as
// something else). The rate is queries a second per client; the default
// is 200.
//
// It warns too of a burst of 1 at a rate of one query a second or more
// (a lower rate is warned of already): a device sends the A and the AAAA
// query for a name together, and the second is dropped unanswered (serve
// with `rate: 200, burst: 1` answered the A and never the AAAA), so
// the device waits out its timeout for every name.
func (s *Snapshot) lintRate() []Warning {
	r := s.Config.RateLimit.Rate
	switch b := s.Config.RateLimit.Burst; {
	case r <= 0:
		return nil
	case r < 1:
		return []Warning{{s.Config.File, s.Config.Line("rate_limit.rate", 0), fmt.Sprintf(
			"rate_limit.rate: %s is under one query a second a client: a device asks several names for each page or app it opens (an A and an AAAA query each), and every query past its rate is dropped unanswered, so almost none gets through; give queries a second, e.g. rate: %d (the default), or rate: 0 to turn rate limiting off",
			strconv.FormatFloat(r, 'g', -1, 64), config.DefaultRate)}}
	case b < 2:
		return []Warning{{s.Config.File, s.Config.Line("rate_limit.burst", 0), fmt.Sprintf(
			"rate_limit.burst: %d lets a client ask one query at a time: a device sends the A and the AAAA query for a name together, and the second is dropped unanswered, so the device waits out its timeout; give 2 or more, e.g. burst: %d (twice the rate, as when left out)",
			b, int(2*r))}}
	}
	return nil
}

// smallURLList is the sources.max_bytes under which a list at a URL is
// taken for a unit slip (lintMaxBytes): 4 KiB, about 250 names of a
// plain list, one page. A list published at a URL is a feed kept by
// others that grows (the small public ones hold thousands of names), and
// a cap is meant to guard memory (the default is 64 MiB), not to refuse
// a list of a few hundred names; `max_bytes: 64` or `1024` is MiB or KiB
// written as bytes.
const smallURLList = 4096

// lintMaxBytes warns of a sources.max_bytes under smallURLList while a
// policy lists a list at a URL: a body over it is refused, and the list
// blocks none of its names until it has a copy, then keeps its last. A
// one-name body is a list, so it is no error. Zone transfers are left
// out: an RPZ zone of a few triggers transfers in a few hundred bytes,
// and a max_bytes below any zone's smallest transfer is refused already.
func (s *Snapshot) lintMaxBytes() []Warning {
	n := s.Config.Sources.MaxBytes
	if n >= smallURLList {
		return nil
	}
	remote := s.Config.RemoteLists()
	i := slices.IndexFunc(remote, func(e string) bool {
		return !strings.HasPrefix(strings.ToLower(e), "axfr://")
	})
	if i < 0 {
		return nil
	}
	return []Warning{{s.Config.File, s.Config.Line("sources.max_bytes", 0), fmt.Sprintf(
		"sources.max_bytes: %d bytes is under 4 KiB, and %s is a list at a URL: a body over it is refused, so the list blocks none of its names until it has a copy that fits, then keeps its last; give the size in bytes, not KiB or MiB, e.g. max_bytes: %d (64 MiB, the default)",
		n, remote[i], config.DefaultSourceMaxBytes)}}
}

// lintBroadcast warns of a listener on 255.255.255.255, the IPv4 limited
// broadcast address (also written IPv4-mapped), in listen, listen_tls,
// listen_https or listen_quic. serve binds it and logs "listening", but
// it is no address of the host's: devices are given a host's own address
// as their DNS server, and no TCP connection is made to a broadcast
// address. A subnet's broadcast address (10.0.0.255 of a /24) is left
// out: the text alone does not say which subnet an address is of.
func (s *Snapshot) lintBroadcast() []Warning {
	var ws []Warning
	for _, k := range []struct {
		key   string
		addrs []string
	}{{"listen", s.Config.Listen}, {"listen_tls", s.Config.ListenTLS}, {"listen_https", s.Config.ListenHTTPS}, {"listen_quic", s.Config.ListenQUIC}} {
		for i, l := range k.addrs {
			hostport := l
			if k.key == "listen_https" {
				hp, _, err := listen.ParseDoHListen(l)
				if err != nil {
					continue
				}
				hostport = hp
			}
			ap, err := netip.ParseAddrPort(hostport)
			if err != nil || ap.Addr().Unmap() != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				continue
			}
			ws = append(ws, Warning{s.Config.File, s.Config.Line(k.key, i), fmt.Sprintf(
				"%s[%d]: %s: 255.255.255.255 is the broadcast address, no address of this host: serve binds it, but devices send their queries to a host's own address, and no TCP connection is made to a broadcast address; e.g. %s for every address of the host, or the host's own address",
				k.key, i, l, netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port()))})
		}
	}
	return ws
}

// lintPlainAtTLS warns of a plain upstream at one of dnsfence's own
// listen_tls addresses (as a forwarding loop is matched: the address, or
// 127.0.0.1 or ::1 on the port of a wildcard one). It is not refused:
// dnsfence holds only the TCP port there, so whatever answers on UDP is
// another server, or nothing (serve, with nothing there: "connection
// refused", every query SERVFAIL), and a truncated answer retried over
// TCP meets dnsfence's own TLS. An upstream DNS over TLS was most likely
// meant, written without tls://.
func (s *Snapshot) lintPlainAtTLS() []Warning {
	var ws []Warning
	for i, u := range s.Config.Upstreams {
		a, err := upstream.ParseAddress(u)
		if err != nil || config.IsResolvConf(u) || a.Kind != upstream.KindPlain {
			continue
		}
		ip, err := netip.ParseAddr(a.Host)
		if err != nil {
			continue
		}
		j := s.Config.PlainUpstreamAtTLS(netip.AddrPortFrom(ip, a.Port))
		if j < 0 {
			continue
		}
		ws = append(ws, Warning{s.Config.File, s.Config.Line("upstreams", i), fmt.Sprintf(
			"upstreams[%d]: %q: plain DNS to dnsfence's own DNS over TLS listener (listen_tls[%d] %s): dnsfence holds only its TCP port, so whatever answers on UDP there is another server, or nothing, and an answer retried over TCP meets TLS; give the resolvers dnsfence forwards to",
			i, u, j, s.Config.ListenTLS[j])})
	}
	return ws
}
