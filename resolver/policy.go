package resolver

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/gaissmai/bart"
)

// List is what a policy needs of a domain list: a match with the entry that
// made it, and a name for logs and answers.
type List interface {
	Match(name string) (blocklist.Entry, bool)
	File() string
}

// triggerList is a list whose entries carry RPZ actions: blocklist.List's
// MatchTrigger.
type triggerList interface {
	MatchTrigger(name string) (blocklist.Entry, blocklist.Trigger, bool)
}

// matchTrigger matches name in l with its trigger; a list without
// triggers blocks with NXDOMAIN.
func matchTrigger(l List, name string) (blocklist.Entry, blocklist.Trigger, bool) {
	if tl, ok := l.(triggerList); ok {
		return tl.MatchTrigger(name)
	}
	e, ok := l.Match(name)
	return e, blocklist.Trigger{}, ok
}

// addressList is what a list with response-IP triggers (an RPZ list)
// offers besides List: blocklist.List.MatchIP.
type addressList interface {
	MatchIP(addr netip.Addr) (blocklist.Entry, blocklist.Trigger, bool)
	HasIPTriggers() bool
}

// passthruList is a list that may hold allow entries among its block
// entries (an RPZ list's `CNAME rpz-passthru.` triggers).
type passthruList interface {
	HasPassthru() bool
}

// Policy is one compiled entry of `policies`: what to do for names asked by
// the clients in its ranges.
type Policy struct {
	Name   string
	Action config.Action
	Block  []List
	Allow  []List
	// blockedText is the EDE text for each block list, by list name, made
	// once so that a blocked answer formats nothing.
	blockedText map[string]string
	// passthru holds the indexes in Block of the lists with passthru
	// entries (RPZ `rpz-passthru.`), which beat a block entry of any list;
	// empty for a policy of plain lists, which then pays nothing for them.
	passthru []int
	// blockIPs and allowIPs are the block and allow lists with response-IP
	// triggers; both empty (and the answers' addresses never looked at)
	// unless an RPZ list has some.
	blockIPs, allowIPs []addressList
	// canary is the built-in DoH canary list when the policy has it
	// (doh_canary), else nil: a name it matches is blocked as the
	// canary, whichever block list matched it first (Decide). Nil under
	// action nxdomain too, whose every block is the canary's NXDOMAIN:
	// there the first list's entry stands, and a blocked name is not
	// looked up a second time.
	canary List
	// noCopy are the remote block lists, by entry as written, that have
	// no copy yet while sources.servfail_until_ready holds; nil in shadow
	// mode (action: log), which answers nothing itself. A name the
	// policy's other lists neither block nor allow is answered SERVFAIL
	// until they have one (Snapshot.decide, notReadyReply), with
	// noCopyText, made once, as its EDE text.
	noCopy     []string
	noCopyText string
}

// compile works out what the policy's lists need besides a name match:
// the EDE texts, the lists with passthru entries and those with
// response-IP triggers. BuildSnapshot calls it once Block and Allow are
// complete.
func (p *Policy) compile() {
	p.blockedText = make(map[string]string, len(p.Block))
	p.passthru, p.blockIPs, p.allowIPs, p.canary = nil, nil, nil, nil
	for i, l := range p.Block {
		p.blockedText[l.File()] = blockedText(p.Name, l.File())
		if l.File() == DoHCanaryList && p.Action != config.ActionNXDomain {
			p.canary = l
		}
		if pl, ok := l.(passthruList); ok && pl.HasPassthru() {
			p.passthru = append(p.passthru, i)
		}
		if al, ok := l.(addressList); ok && al.HasIPTriggers() {
			p.blockIPs = append(p.blockIPs, al)
		}
	}
	for _, l := range p.Allow {
		if al, ok := l.(addressList); ok && al.HasIPTriggers() {
			p.allowIPs = append(p.allowIPs, al)
		}
	}
}

// BlockedText is the EDE 15 text naming the policy and the list.
func (p *Policy) BlockedText(list string) string {
	if t, ok := p.blockedText[list]; ok {
		return t
	}
	return blockedText(p.Name, list)
}

// blockedText is the EDE 15 text of a block by policy's list: a remote
// list named without its query string or fragment (source.ClientName),
// which every client shown a block would read.
func blockedText(policy, list string) string {
	return fmt.Sprintf("blocked by policy %q, list %s", policy, source.ClientName(list))
}

// notReadyText is the EDE text of the SERVFAIL a policy's client gets while
// its remote block lists noCopy have no copy (sources.servfail_until_ready),
// naming each as blockedText does: without a query string or fragment.
// At most notReadyNamed lists are named, and how many more: the text goes
// in every such answer, over UDP too, where a long one would truncate it.
func notReadyText(policy string, noCopy []string) string {
	named, more := noCopy, ""
	if len(noCopy) > notReadyNamed {
		named, more = noCopy[:notReadyNamed], " (and "+count(len(noCopy)-notReadyNamed, "more list", "more lists")+")"
	}
	return fmt.Sprintf("policy %q not ready: %s no copy yet%s", policy, listsWithout(named, source.ClientName), more)
}

// notReadyNamed is how many lists notReadyText names.
const notReadyNamed = 3

// listsWithout is "list L has" or "lists L1, L2 have", each list named by
// listName.
func listsWithout(lists []string, listName func(string) string) string {
	names := make([]string, len(lists))
	for i, l := range lists {
		names[i] = listName(l)
	}
	if len(names) == 1 {
		return "list " + names[0] + " has"
	}
	return "lists " + strings.Join(names, ", ") + " have"
}

// await sets the remote block lists the policy waits for a copy of
// (noCopy), and their EDE text; none makes it ready.
func (p *Policy) await(lists []string) {
	p.noCopy, p.noCopyText = nil, ""
	if len(lists) > 0 {
		p.noCopy, p.noCopyText = lists, notReadyText(p.Name, lists)
	}
}

// hasCopy takes the remote list name off noCopy: it has a copy now
// (Snapshot.withList). p is a copy of the policy, whose noCopy it must not
// share.
func (p *Policy) hasCopy(name string) {
	if slices.Contains(p.noCopy, name) {
		p.await(slices.DeleteFunc(slices.Clone(p.noCopy), func(l string) bool { return l == name }))
	}
}

// stillWithoutCopy are those of lists (remote block lists a policy waited
// for in the snapshot before next) that p, next's policy of that name,
// still blocks with and next still has no copy of: those it serves empty
// unless it waits for them.
func stillWithoutCopy(lists []string, next *Snapshot, p *Policy) []string {
	return slices.DeleteFunc(slices.Clone(lists), func(l string) bool {
		return !next.noCopy[l] || !slices.ContainsFunc(p.Block, func(n List) bool { return n.File() == l })
	})
}

// Ready reports whether the policy decides every name: false while a
// remote block list of it has no copy and sources.servfail_until_ready
// holds.
func (p *Policy) Ready() bool { return len(p.noCopy) == 0 }

// AnswersServfail reports whether sources.servfail_until_ready answers for
// the remote list name (by entry as written) while it has no copy: every
// policy that names it holds it among those it is not ready for, a block
// list of a policy not in shadow mode. An allow list, or a shadow
// policy's block list, is served empty.
func (s *Snapshot) AnswersServfail(name string) bool {
	cfg := s.Config
	if !cfg.Sources.ServfailUntilReady {
		return false
	}
	named := func(lists []string) bool {
		return slices.ContainsFunc(lists, func(f string) bool { return cfg.Path(f) == name })
	}
	for i, pc := range cfg.Policies {
		if named(pc.Allow) || named(pc.Block) && !slices.Contains(s.Policies[i].noCopy, name) {
			return false
		}
	}
	return true
}

// NotReady are the remote block lists, by entry as written, that keep the
// policy from being Ready; nil when it is.
func (p *Policy) NotReady() []string { return slices.Clone(p.noCopy) }

// Blocks reports whether the policy can block anything at all; an exemption
// policy has no block lists.
func (p *Policy) Blocks() bool { return p != nil && len(p.Block) > 0 }

// Decision is the verdict on one name under one policy.
type Decision struct {
	Blocked bool
	Allowed bool            // an allow entry matched; it beats every block entry
	Entry   blocklist.Entry // the entry behind the verdict; Entry.List is nil when nothing matched
	// Trigger is what Entry does: its RPZ action (NXDOMAIN for every entry
	// of a plain list) and whether it is a `*.` trigger.
	Trigger blocklist.Trigger
}

// Decide applies the policy's lists to a name: allow lists first, because an
// allow entry beats every block entry. Every entry of an allow list allows,
// whatever its RPZ action. In a block list, an RPZ passthru entry
// (`CNAME rpz-passthru.`) is an allow entry too, and beats a block entry
// of any list, before or after it; any other entry blocks with its action
// (Decision.Trigger.Action: NXDOMAIN for every entry of a plain list, the trigger's
// own for an RPZ list). A name the built-in DoH canary list matches is
// that list's block whichever list matched it first, unless that list's
// entry has an action of its own (an RPZ `CNAME *.` or `rpz-drop.`): an
// operator's DoH-bypass list or RPZ feed listing use-application-dns.net
// comes before the built-in list, and its entry would take the policy's
// action (null's 0.0.0.0, refused's REFUSED), not the NXDOMAIN the canary
// gets whatever the action (Decision.action).
func (p *Policy) Decide(name string) Decision {
	for _, l := range p.Allow {
		if e, ok := l.Match(name); ok {
			return Decision{Allowed: true, Entry: e}
		}
	}
	for i, l := range p.Block {
		e, t, ok := matchTrigger(l, name)
		if !ok {
			continue
		}
		if t.Action == blocklist.ActionPassthru {
			return Decision{Allowed: true, Entry: e, Trigger: t}
		}
		// The lists before i matched nothing; a passthru entry of a later
		// list still beats this block.
		for _, j := range p.passthru {
			if j <= i {
				continue
			}
			if a, at, ok := matchTrigger(p.Block[j], name); ok && at.Action == blocklist.ActionPassthru {
				return Decision{Allowed: true, Entry: a, Trigger: at}
			}
		}
		if t.Action == blocklist.ActionNXDOMAIN && p.canary != nil && l != p.canary {
			if ce, ct, ok := matchTrigger(p.canary, name); ok {
				return Decision{Blocked: true, Entry: ce, Trigger: ct}
			}
		}
		return Decision{Blocked: true, Entry: e, Trigger: t}
	}
	return Decision{}
}

// DecideAddress applies the policy's response-IP triggers to an address of
// an upstream answer, as Decide applies its lists to a name: a trigger of
// an allow list, or a passthru trigger of a block list, allows the address
// and beats every block; else the first block list's trigger (the longest
// prefix of that list holding addr) blocks with its action. ok is false
// when no trigger holds addr.
func (p *Policy) DecideAddress(addr netip.Addr) (d Decision, ok bool) {
	for _, l := range p.allowIPs {
		if e, t, ok := l.MatchIP(addr); ok {
			return Decision{Allowed: true, Entry: e, Trigger: t}, true
		}
	}
	for _, l := range p.blockIPs {
		e, t, ok := l.MatchIP(addr)
		if !ok {
			continue
		}
		if t.Action == blocklist.ActionPassthru {
			return Decision{Allowed: true, Entry: e, Trigger: t}, true
		}
		if !d.Blocked {
			d = Decision{Blocked: true, Entry: e, Trigger: t}
		}
	}
	return d, d.Blocked
}

// InspectsAddresses reports whether the policy has response-IP triggers,
// so that the addresses of its clients' answers are looked at.
func (p *Policy) InspectsAddresses() bool { return len(p.blockIPs) > 0 }

// ClientRange is a policy range and where it was written.
type ClientRange struct {
	Policy *Policy
	Range  blocklist.Range
}

// Snapshot is the complete, immutable state one query is decided with: the
// configuration, the policies with their lists, the range tables, and the
// forwarder to the upstreams. A reload builds a new Snapshot and publishes
// it with one atomic store; a published Snapshot is never modified.
//
// Every field, and everything a field reaches (the Config, the Policies and
// their lists, the maps), is read-only once BuildSnapshot returns: code
// that needs another value builds another Snapshot. Readers share it
// without locks, so a write would be a data race with every query in
// flight. TestSnapshotIsReadOnly runs queries of every kind, explain, lint
// and reloads against one snapshot and checks that nothing it reaches
// changed.
type Snapshot struct {
	Config   *config.Config
	Policies []*Policy
	Lists    map[string]*blocklist.List      // by resolved path
	Ranges   map[string]*blocklist.RangeFile // by resolved path
	Loaded   time.Time
	// Warnings are the bad lines of the snapshot's lists and client range
	// files, one error a file that has any (blocklist.BadLines reads one):
	// those of a list reused unchanged or kept from the snapshot before
	// included (blocklist.List.Warnings).
	Warnings []error

	// fwd asks the upstreams: set once by ConnectUpstreams before the
	// snapshot is published, never after (Forwarder reads it).
	fwd *upstream.Forwarder
	// caFile is the upstream_ca file fwd's roots were read from, and
	// caSum the SHA-256 of the content read: set with fwd, "" when no
	// roots were read from a file. It is watched as the configuration
	// is (watchedFiles), so that a bundle renewed in place reaches the
	// upstreams without a SIGHUP. ConnectUpstreams sets both once the
	// file was read, even when it did not parse: the reload tells a
	// bundle caught mid-write from a broken one by them.
	caFile string
	caSum  [32]byte

	byClient *bart.Table[ClientRange]
	// repeats are the ranges a policy lists again (inline and in a client
	// file, or twice in files), each with the range it repeats, for Lint.
	repeats [][2]ClientRange
	// rangeBad holds, by path, the bad lines of each client range file
	// that has any (ParseRanges' warning), for the reload guard
	// (rangeLostToBadLines).
	rangeBad map[string]error

	allowed *bart.Table[struct{}]
	trusted *bart.Table[struct{}]
	explain *bart.Table[struct{}]
	exempt  *bart.Table[struct{}] // rate_limit.exempt

	// blockingIn holds the ranges of each blocking policy (blocking), a
	// table a policy in the configuration's order, for PolicyForClient: the
	// first policy with a range inside a network is found without walking
	// every range inside it (a /0 holds them all). indexBlocking makes it
	// from byClient wherever byClient is made.
	blockingIn []*bart.Table[ClientRange]

	// noCopy holds the remote lists without a copy yet, by entry as
	// written, whatever sources.servfail_until_ready says (Policy.noCopy
	// holds those it applies to).
	noCopy map[string]bool

	// peaks holds, by path, the most each list and client range file held
	// since the last start or SIGHUP, for the shrink guards (keepPeaks; a
	// path missing holds its peak now, as in the first snapshot).
	peaks map[string]peak
}

// DoHCanaryList is the built-in list name that blocks Firefox's canary.
const DoHCanaryList = "builtin:doh-canary"

// action is the action a block by d takes under p: p's, but nxdomain for
// the built-in DoH canary list whatever p's action: Mozilla asks networks
// for NXDOMAIN, and Firefox versions before the 0.0.0.0 rule took a null
// action's address as "no filtering here" and turned their own DoH on,
// past dnsfence; a REFUSED sends a stub on to its next nameserver.
func (d Decision) action(p *Policy) config.Action {
	if d.Entry.List != nil && d.Entry.List.File() == DoHCanaryList {
		return config.ActionNXDomain
	}
	return p.Action
}

// dohCanary is the built-in list of the names a network answers NXDOMAIN
// for to turn a device's own encrypted DNS off, which would bypass
// dnsfence: use-application-dns.net tells Firefox not to enable its
// DNS-over-HTTPS (Mozilla's canary domain), and mask.icloud.com and
// mask-h2.icloud.com tell Apple devices that iCloud Private Relay, which
// sends every DNS query of the device through Apple's relay, is not
// allowed on this network (Apple's "Prepare your network or web server
// for iCloud Private Relay").
var dohCanary = sync.OnceValue(func() *blocklist.List {
	l, err := blocklist.Parse(DoHCanaryList, []byte("use-application-dns.net\nmask.icloud.com\nmask-h2.icloud.com\n"))
	if err != nil {
		panic(err)
	}
	return l
})

// FallbackUpstreams serve the embedded default when /etc/resolv.conf names
// no usable resolver: Quad9, which does not log client addresses.
var FallbackUpstreams = []string{"9.9.9.9:53", "149.112.112.112:53"}

// PolicyFor returns the policy of the most specific range holding addr.
func (s *Snapshot) PolicyFor(addr netip.Addr) (ClientRange, bool) {
	return s.byClient.Lookup(addr)
}

// PolicyForPrefix returns the policy of the most specific range holding the
// whole of client: a network named by ECS can only select a policy whose
// range contains all of it.
func (s *Snapshot) PolicyForPrefix(client netip.Prefix) (ClientRange, bool) {
	if client.Bits() == client.Addr().BitLen() {
		return s.byClient.Lookup(client.Addr())
	}
	return s.byClient.LookupPrefix(client)
}

// PolicyForClient returns the policy a query for client is decided with.
// For a single address it is PolicyFor's. A shorter network (an EDNS
// Client Subnet source prefix from a trusted proxy) stands for devices
// anywhere inside it: RFC 7871 §7.1.2 lets a forwarder pass on a client's
// prefix as short as /0, and forwarders truncate every client to /24 or /56
// by default (§11.1), often wider than a government range. So the policy
// of the most specific range holding the whole network (PolicyForPrefix)
// stands only when it is blocking; otherwise, when a range of a blocking
// policy lies inside the network, its devices may be there, and that
// policy decides instead (fail closed): of several, the first in the
// configuration's policy order, so the choice never depends on the table's
// layout. wider reports that case: cr.Range is inside client. The other
// blocking policies with a range inside the network decide with it
// (alsoDeciding): a name any of them blocks is blocked.
func (s *Snapshot) PolicyForClient(client netip.Prefix) (cr ClientRange, ok, wider bool) {
	if client.Bits() == client.Addr().BitLen() {
		cr, ok = s.byClient.Lookup(client.Addr())
		return cr, ok, false
	}
	cr, ok = s.byClient.LookupPrefix(client)
	if ok && blocking(cr.Policy) {
		return cr, ok, false
	}
	if in, found := s.blockingInside(client); found {
		return in, true, true
	}
	return cr, ok, false
}

// mappedIPv4 is where IPv4 addresses sit in IPv6 (::ffff:0:0/96).
var mappedIPv4 = netip.MustParsePrefix("::ffff:0:0/96")

// blockingInside returns a range of the first blocking policy that has one
// inside client (blockingRanges).
func (s *Snapshot) blockingInside(client netip.Prefix) (ClientRange, bool) {
	for cr := range s.blockingRanges(client) {
		return cr, true
	}
	return ClientRange{}, false
}

// blockingRanges yields, for each blocking policy with a range inside the
// network client (in each family it holds devices of, devicesIn), in the
// configuration's order, the first such range in address order.
func (s *Snapshot) blockingRanges(client netip.Prefix) iter.Seq[ClientRange] {
	nets := devicesIn(client)
	return func(yield func(ClientRange) bool) {
		for _, t := range s.blockingIn {
			if cr, ok := firstSubnet(t, nets); ok && !yield(cr) {
				return
			}
		}
	}
}

// devicesIn is the network client as the networks of each family it
// holds devices of: client, and the whole other family (the second, else
// invalid) for an IPv6 network holding all of ::ffff:0:0/96, which ecsPrefix
// reads as IPv4, and for a /0 of either family (RFC 7871 §7.1.2: no
// address at all).
func devicesIn(client netip.Prefix) [2]netip.Prefix {
	nets := [2]netip.Prefix{client}
	switch {
	case client.Addr().Is6() && client.Bits() <= mappedIPv4.Bits() && client.Contains(mappedIPv4.Addr()):
		nets[1] = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	case client.Bits() == 0:
		nets[1] = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	return nets
}

// firstSubnet is the first range of t inside one of nets, in their order.
func firstSubnet(t *bart.Table[ClientRange], nets [2]netip.Prefix) (ClientRange, bool) {
	for _, n := range nets {
		for _, cr := range t.Subnets(n) { // none for the invalid zero Prefix
			return cr, true
		}
	}
	return ClientRange{}, false
}

// alsoDeciding returns, for a network client, a range inside it of each
// blocking policy other than first (blockingRanges): their devices may be
// in the network as well as first's, so a query for it is blocked when any
// of them blocks (decide, inspect). Nothing for a single address, which
// one range decides. A slice, not an iterator: the loops of the query path
// over an iterator's closure moved the outcome, and with it every query,
// to the heap (3 to 6 allocations a query for a single address too).
func (s *Snapshot) alsoDeciding(client netip.Prefix, first *Policy) []ClientRange {
	if client.Bits() == client.Addr().BitLen() {
		return nil
	}
	var out []ClientRange
	for cr := range s.blockingRanges(client) {
		if cr.Policy != first {
			out = append(out, cr)
		}
	}
	return out
}

// indexBlocking makes blockingIn from byClient and Policies.
func (s *Snapshot) indexBlocking() {
	tables := make(map[*Policy]*bart.Table[ClientRange])
	s.blockingIn = nil
	for _, p := range s.Policies {
		if blocking(p) {
			tables[p] = new(bart.Table[ClientRange])
			s.blockingIn = append(s.blockingIn, tables[p])
		}
	}
	for pfx, cr := range s.byClient.All() {
		if t := tables[cr.Policy]; t != nil {
			t.Insert(pfx, cr)
		}
	}
}

// Allowed reports whether addr may use the resolver at all.
func (s *Snapshot) Allowed(addr netip.Addr) bool {
	return s.allowed.Contains(addr)
}

// Trusted reports whether addr is a trusted proxy whose client identity
// options are believed.
func (s *Snapshot) Trusted(addr netip.Addr) bool {
	return s.trusted.Contains(addr)
}

// ExplainAllowed reports whether client may ask the CHAOS explain query: an
// address in explain_clients, or a network (an ECS option's, whose asking
// device may be anywhere in it) every address of which is, both families
// of a network standing for both (devicesIn).
func (s *Snapshot) ExplainAllowed(client netip.Prefix) bool {
	if client.Bits() == client.Addr().BitLen() {
		return s.explain.Contains(client.Addr())
	}
	for _, n := range devicesIn(client) {
		if _, ok := s.explain.LookupPrefix(n); n.IsValid() && !ok {
			return false
		}
	}
	return true
}

// RateExempt reports whether addr is never rate limited.
func (s *Snapshot) RateExempt(addr netip.Addr) bool {
	return s.exempt.Contains(addr)
}

// Forwarder is what asks the upstreams for the queries decided with s: the
// one ConnectUpstreams gave it, kept across reloads that do not change the
// upstreams; nil for a snapshot that BuildSnapshot alone made (`check`,
// `explain`).
func (s *Snapshot) Forwarder() *upstream.Forwarder { return s.fwd }

// PolicyTable exposes every range for `check` and `explain`.
func (s *Snapshot) PolicyTable() *bart.Table[ClientRange] { return s.byClient }

// BuildSnapshot loads every list and range file the configuration names and
// compiles the policies. Files whose content is unchanged since prev are
// reused without parsing. Bad lines are skipped and returned in Warnings; a
// file that cannot be read, a list file of only bad lines (ErrOnlyBadLines:
// not one entry, but lines), a range claimed by two policies, or a policy
// whose client files yield no usable range while it has no other
// (ErrNoClientRanges) fails the build so that the caller keeps its last
// good snapshot. It reads the configuration and the files it names only:
// no resolv.conf and no upstream (ConnectUpstreams does that for a
// snapshot that serves).
//
// A remote list (config.IsRemote: a URL or a zone transfer) is not read
// here: it keeps the list prev has under its entry, or is an empty list
// until its source delivers a copy (BuildSnapshotWith gives them).
func BuildSnapshot(cfg *config.Config, prev *Snapshot) (*Snapshot, error) {
	var remote map[string]*blocklist.List
	if prev != nil {
		remote = map[string]*blocklist.List{}
		for name, l := range prev.Lists {
			if config.IsRemote(name) && !prev.noCopy[name] { // a stand-in is no copy
				remote[name] = l
			}
		}
	}
	return BuildSnapshotWith(cfg, prev, remote)
}

// BuildSnapshotWith is BuildSnapshot with the lists of the remote entries
// given, by entry as written: those the sources built from their copies
// (the Reloader's), or fetched once (FetchSources). A remote entry remote
// does not hold gets an empty list.
func BuildSnapshotWith(cfg *config.Config, prev *Snapshot, remote map[string]*blocklist.List) (*Snapshot, error) {
	s := &Snapshot{
		Config:   cfg,
		Lists:    map[string]*blocklist.List{},
		Ranges:   map[string]*blocklist.RangeFile{},
		Loaded:   time.Now(),
		byClient: new(bart.Table[ClientRange]),
		allowed:  new(bart.Table[struct{}]),
		trusted:  new(bart.Table[struct{}]),
		explain:  new(bart.Table[struct{}]),
		exempt:   new(bart.Table[struct{}]),
	}
	for _, p := range cfg.AllowedPrefixes() {
		s.allowed.Insert(p, struct{}{})
	}
	for _, p := range cfg.TrustedPrefixes() {
		s.trusted.Insert(p, struct{}{})
	}
	for _, p := range cfg.ExplainPrefixes() {
		s.explain.Insert(p, struct{}{})
	}
	for _, p := range cfg.RateLimit.ExemptPrefixes() {
		s.exempt.Insert(p, struct{}{})
	}
	var fatal []error
	s.rangeBad = map[string]error{}
	failed := map[string]bool{} // lists that did not load, read once (a pipe waits PipeIdle)
	s.noCopy = map[string]bool{}
	noCopy := s.noCopy
	loadList := func(path string) List {
		path = cfg.Path(path)
		if l, ok := s.Lists[path]; ok {
			return l
		}
		if failed[path] {
			return nil
		}
		if config.IsRemote(path) {
			l := remote[path]
			if l == nil {
				l, _ = blocklist.Parse(path, nil) // no copy yet: nothing to match
				noCopy[path] = true
			}
			if w := l.Warnings(); w != nil {
				s.Warnings = append(s.Warnings, w)
			}
			s.Lists[path] = l
			return l
		}
		l, _, err := readList(cfg, path, prev.list(path))
		if err == nil {
			err = onlyBadLines(path, l.Len(), l.Warnings())
			if err != nil && !cfg.Embedded {
				err = markupHint(path, err)
			}
		}
		if err != nil {
			fatal = append(fatal, fmt.Errorf("reading list: %w", err))
			failed[path] = true
			return nil
		}
		if w := l.Warnings(); w != nil {
			s.Warnings = append(s.Warnings, w)
		}
		s.Lists[path] = l
		return l
	}
	for i := range cfg.Policies {
		pc := &cfg.Policies[i]
		p := &Policy{Name: pc.Name, Action: pc.Action}
		var waiting []string // block lists without a copy it answers SERVFAIL for
		for _, f := range pc.Block {
			if l := loadList(f); l != nil {
				p.Block = append(p.Block, l)
			}
			if path := cfg.Path(f); noCopy[path] && cfg.Sources.ServfailUntilReady && pc.Action != config.ActionLog {
				waiting = append(waiting, path)
			}
		}
		p.await(waiting)
		for _, f := range pc.Allow {
			if l := loadList(f); l != nil {
				p.Allow = append(p.Allow, l)
			}
		}
		if len(p.Block) > 0 && (pc.DoHCanary == nil || *pc.DoHCanary) {
			p.Block = append(p.Block, dohCanary())
		}
		p.compile()
		ranges := pc.ClientRanges()
		var empty []error // client files that yield no range, and why
		for _, f := range pc.ClientFiles {
			path := cfg.Path(f)
			rf, ok := s.Ranges[path]
			if !ok {
				data, err := cfg.ReadFile(path)
				if err == nil {
					err = blocklist.CheckText(path, data)
				}
				if err != nil {
					fatal = append(fatal, fmt.Errorf("reading client ranges: %w", err))
					continue
				}
				var warn error
				rf, warn = blocklist.ParseRanges(path, data)
				if warn != nil {
					s.Warnings = append(s.Warnings, warn)
					s.rangeBad[path] = warn
				}
				s.Ranges[path] = rf
			}
			if len(rf.Ranges) == 0 {
				if err := onlyBadLines(path, 0, s.rangeBad[path]); err != nil {
					// A web page or a misformatted export: its devices
					// would be in no policy, whatever else the policy
					// holds. Refused, as a list of only bad lines is.
					fatal = append(fatal, fmt.Errorf("reading client ranges: %w", err))
					continue
				}
				empty = append(empty, noRanges(path, p.Name))
			}
			ranges = append(ranges, rf.Ranges...)
		}
		if len(ranges) == 0 && len(empty) > 0 {
			// A policy that applies to no client silently leaves every
			// device it was meant for to a wider policy or to none (a ban
			// that fails open): refuse it, as a bad CIDR in `clients` is.
			fatal = append(fatal, empty...)
		}
		for _, r := range ranges {
			if prior, dup := s.byClient.Get(r.Prefix); dup {
				if prior.Policy == p {
					// Harmless to the decision, but a likely mistake
					// (Lint): one of the two lists is edited, and the
					// range stays.
					s.repeats = append(s.repeats, [2]ClientRange{{Policy: p, Range: r}, prior})
					continue
				}
				fatal = append(fatal, fmt.Errorf("%s:%d: range %s of policy %q is already a range of policy %q (%s:%d); the same range in two policies is ambiguous",
					r.File, r.Line, r.Prefix, p.Name, prior.Policy.Name, prior.Range.File, prior.Range.Line))
				continue
			}
			s.byClient.Insert(r.Prefix, ClientRange{Policy: p, Range: r})
		}
		s.Policies = append(s.Policies, p)
	}
	fatal = append(fatal, s.rangesNotAllowed()...)
	if len(fatal) > 0 {
		return nil, errors.Join(fatal...)
	}
	s.indexBlocking()
	return s, nil
}

// ErrNoClientRanges marks a client file that yields no usable range for a
// policy that has no other: the policy would apply to no device.
var ErrNoClientRanges = errors.New("no usable client range")

// noRanges is the error for the client file at path, of policy, that
// holds no range and no bad line (one with bad lines only is refused
// whatever the policy: onlyBadLines).
func noRanges(path, policy string) error {
	return fmt.Errorf("%s: %w for policy %q, which has no other range: it would apply to no device (the file holds no ranges)", path, ErrNoClientRanges, policy)
}

// list is the list the snapshot loaded from path; nil for none, or no
// snapshot.
func (s *Snapshot) list(path string) *blocklist.List {
	if s == nil {
		return nil
	}
	return s.Lists[path]
}

// ErrOnlyBadLines marks a list, a file or a remote list's copy, that has
// lines but not one entry could be read of them: onlyBadLines.
var ErrOnlyBadLines = errors.New("not one entry could be read")

// onlyBadLines is the error for the file what (a list file, a source's
// copy and its version, a client range file) that yields entries entries
// and the bad lines warn, when it has no entry but bad lines: no file is
// all junk. It is an HTML page or a file of another format saved under
// the file's name, and loaded it would block nothing (or, as an allow
// list, allow nothing; as a range file, hold no device) while looking
// loaded; refused, a file stops the start, fails `check` and fails the
// reload, which keeps the last good state, and a copy keeps the one
// served. nil otherwise: a file with no lines, or only comments, is
// empty. The rule is the same for block and allow lists, local and
// remote alike.
func onlyBadLines(what string, entries int, warn error) error {
	if warn == nil || entries > 0 {
		return nil
	}
	n, first := blocklist.BadLines(warn)
	lines := "bad lines"
	if n == 1 {
		lines = "bad line"
	}
	if first == nil {
		return fmt.Errorf("%s: %w, only %d %s: %w", what, ErrOnlyBadLines, n, lines, warn)
	}
	return fmt.Errorf("%s: %w, only %d %s, the first %v; refusing it", what, ErrOnlyBadLines, n, lines, first)
}

// markupHint adds to err, a list file's onlyBadLines error, what the file
// is when it starts as a web page does: a page saved in place of the list.
// A file that is not regular is not opened again: an open read end of a
// named pipe releases a writer waiting in open(2) into a pipe closed at
// once, and what it writes is lost.
func markupHint(path string, err error) error {
	if fi, serr := os.Stat(path); serr != nil || !fi.Mode().IsRegular() {
		return err
	}
	f, oerr := blocklist.Open(path)
	if oerr != nil {
		return err
	}
	defer f.Close()
	if !f.Regular() { // replaced since the Stat
		return err
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	if start := blocklist.Markup(head[:n]); start != "" {
		return fmt.Errorf("%w (it starts with %q: a web page saved in place of the list? save the raw list)", err, start)
	}
	return err
}

// readList reads and parses the list file at path, or returns prev, the
// list it gave before, when it has not changed (blocklist.ReadList). The
// embedded default's files are read with the configuration's ReadFile.
func readList(cfg *config.Config, path string, prev *blocklist.List) (l *blocklist.List, warn, err error) {
	if cfg.Embedded {
		return blocklist.ParseRead(path, prev, cfg.ReadFile)
	}
	return blocklist.ReadList(path, prev)
}

// rangesNotAllowed reports every policy range that no allowed_clients range
// reaches: its clients would get REFUSED for every query, a silent outage
// for the devices the policy was written for. A range only partly inside
// allowed_clients is a Lint warning instead.
func (s *Snapshot) rangesNotAllowed() []error {
	var errs []error
	for _, cr := range s.byClient.AllSorted() {
		if s.allowedPart(cr.Range.Prefix) == allowedNone {
			r := cr.Range
			errs = append(errs, fmt.Errorf("%s:%d: range %s of policy %q is outside allowed_clients: every query from it would be REFUSED; add it (or a range holding it) to allowed_clients",
				r.File, r.Line, r.Prefix, cr.Policy.Name))
		}
	}
	return errs
}

// How much of a prefix allowed_clients holds.
const (
	allowedNone = iota
	allowedSome
	allowedAll
)

// allowedPart says whether allowed_clients holds all of p, some of it, or
// none of it.
func (s *Snapshot) allowedPart(p netip.Prefix) int { return partOf(s.allowed, p) }

// partOf says whether the prefixes of t hold all of p, some of it, or none
// of it (allowedAll, allowedSome, allowedNone).
func partOf(t *bart.Table[struct{}], p netip.Prefix) int {
	if _, _, ok := t.LookupPrefixLPM(p); ok {
		return allowedAll
	}
	var inside []netip.Prefix
	for q := range t.Subnets(p) {
		inside = append(inside, q)
	}
	switch {
	case len(inside) == 0:
		return allowedNone
	case covered(p, inside):
		return allowedAll
	}
	return allowedSome
}
