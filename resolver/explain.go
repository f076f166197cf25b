package resolver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
)

// outcome is the decision on one query before and after its answer: the
// one decision function (decide, then inspect) that queries, the CHAOS
// explain and `dnsfence explain` share (DESIGN.md §1 steps 3 to 5, and 8).
type outcome struct {
	// result is ResultRefused (outside allowed_clients), ResultBlocked,
	// ResultLocal (a name in one of localZones, answered here),
	// ResultServfail (policy's lists not ready: Policy.Ready), or
	// ResultForwarded (also in shadow mode, and for an allowed name).
	result    string
	local     *localZone  // the zone of a ResultLocal
	policy    ClientRange // the range whose policy decides (Snapshot.PolicyForClient), when hasPolicy
	hasPolicy bool
	decision  Decision // the name under the policy's lists, when the policy blocks anything
	shadow    bool     // a shadow-mode policy (action: log) blocks it: recorded as a block, forwarded
	// wider: the client is a network wider than policy's range, a range of
	// a blocking policy inside it, which decides for the whole network
	// (fail closed).
	wider bool
	// also are ranges of the other blocking policies with a range inside
	// the client network (Snapshot.alsoDeciding) that neither block nor
	// allow the name: inspect asks each of them about the answer, as
	// decide asked them about the name.
	also []ClientRange
}

// decide is steps 3 to 5 for a query from source (the transport peer,
// which allowed_clients applies to) deciding for client (the network
// policies are matched against: source itself, or what a trusted proxy
// named; PolicyForClient says which policy a network gets) and asking for
// qname in class IN (the wire path's and explain's; decideClass for the
// message path's other classes).
func (s *Snapshot) decide(source netip.Addr, client netip.Prefix, qname string) outcome {
	return s.decideClass(source, client, qname, dns.ClassINET)
}

// decideClass is decide for a question of class qclass: the local zones
// are names of class IN (QCLASS ANY too, which asks every class); a name
// of another class (HESIOD) is decided as any other name.
func (s *Snapshot) decideClass(source netip.Addr, client netip.Prefix, qname string, qclass uint16) outcome {
	// 3. May they ask at all.
	if !s.Allowed(source) {
		return outcome{result: ResultRefused}
	}
	// 4. Which policy; 5. is the name blocked.
	o := outcome{result: ResultForwarded}
	o.policy, o.hasPolicy, o.wider = s.PolicyForClient(client)
	// The local zones are answered here for everyone it lets ask,
	// whatever the policy: never forwarded (localZones).
	if qclass == dns.ClassINET || qclass == dns.ClassANY {
		if z, ok := localZoneOf(qname); ok {
			o.result, o.local = ResultLocal, z
			return o
		}
	}
	if pol := o.policy.Policy; o.hasPolicy && pol.Blocks() {
		o.decision = pol.Decide(qname)
		if o.decision.Blocked {
			o.block(o.decision)
			return o
		}
	}
	// A network whose devices may be in ranges of several blocking
	// policies is blocked by any of them (fail closed): a stricter policy
	// nested in a wider one, or two beside each other.
	others := s.alsoDeciding(client, o.policy.Policy)
	ask := others[:0] // those that neither block nor allow the name
	for _, cr := range others {
		d := cr.Policy.Decide(qname)
		if d.Blocked {
			o.policy, o.hasPolicy, o.wider = cr, true, true
			o.block(d)
			return o
		}
		if !d.Allowed {
			ask = append(ask, cr)
		}
	}
	if len(ask) > 0 {
		o.also = ask
	}
	// A remote block list without a copy yet, with
	// sources.servfail_until_ready: the name is not one the other lists
	// block or allow, and that list may hold it (fail closed).
	if o.hasPolicy && !o.decision.Allowed && !o.policy.Policy.Ready() {
		o.result = ResultServfail
		return o
	}
	for _, cr := range ask {
		if !cr.Policy.Ready() {
			// cr decides, as a block of it does: its decision on the
			// name, which is on none of its lists (ask), replaces the
			// first policy's (an allow of its own, say).
			o.policy, o.hasPolicy, o.wider = cr, true, true
			o.decision = Decision{}
			o.result = ResultServfail
			return o
		}
	}
	return o
}

// block records d, a block by the outcome's policy: a blocked query, or in
// shadow mode (action: log) a block recorded and forwarded.
func (o *outcome) block(d Decision) {
	o.decision = d
	if o.policy.Policy.Action == config.ActionLog {
		o.shadow = true
	} else {
		o.result = ResultBlocked
	}
}

// inspect is step 8 on the answer resp of a forwarded query: a CNAME or
// DNAME chain (any alias chainDecision follows) that reaches a blocked
// name blocks the answer as the name itself would be, and so does, when
// the policy has response-IP triggers, an address of the answer inside a
// blocked prefix (addressDecision); unless the question name is explicitly
// allowed. In shadow mode the block is recorded, not answered. It returns
// the name (or the address) in the answer that was blocked, and "" when
// the answer stands. It runs on cached answers exactly as on fresh ones.
func (o *outcome) inspect(resp *dns.Msg) (via string) {
	if !o.inspects() {
		return ""
	}
	if o.inspectsOwn() {
		if d, via, ok := answerDecision(o.policy.Policy, resp); ok {
			o.block(d)
			return via
		}
	}
	for _, cr := range o.also {
		if d, via, ok := answerDecision(cr.Policy, resp); ok {
			o.policy, o.hasPolicy, o.wider = cr, true, true
			o.block(d)
			return via
		}
	}
	return ""
}

// scrub is the rest of step 8 for an answer resp that stands (inspect
// found nothing to block it for): the records of its authority and
// additional sections that are a blocked name's, owned by one or an alias
// of one (hopDecision), under any policy inspect asks, are left out: glue
// for a name server under a blocked domain, the addresses of an MX or SRV
// target under one, an alias into one. A device that takes an address
// from those sections (a mail or SRV client, a cache downstream) would
// otherwise reach the blocked name without asking for it. The authority
// section's SOA and DNSSEC denial of existence (NSEC, NSEC3 and the
// RRSIGs over them, RFC 4035 §3.1.3) are kept (proofType): they hold no
// address, and a validating device needs them whole to believe an answer
// (the NSEC owned by tiktok.com. that proves tiktok0.com. does not
// exist); an RRSIG over any other type is a blocked name's as its RRset
// is. It returns resp itself when nothing is left out, else a shallow
// copy with sections of its own. wireAnswer.qnameOnly marks the answers
// it cannot change.
func (o *outcome) scrub(resp *dns.Msg) *dns.Msg {
	if !o.inspects() {
		return resp
	}
	ns, nsCut := o.leaveOutBlocked(resp.Ns, true)
	extra, extraCut := o.leaveOutBlocked(resp.Extra, false)
	if !nsCut && !extraCut {
		return resp
	}
	m := *resp
	m.Ns, m.Extra = ns, extra
	return &m
}

// leaveOutBlocked is scrub for one section (the authority section when
// authority is set): rrs without the records a policy inspect asks blocks
// (blockedExtra), a new slice when any is left out (cut). A record left
// out takes its whole RRset (owner, class and type) and the RRSIGs that
// cover it along (leaveOutWhole, as a truncation does): a validating
// device checks each RRSIG over the RRset as it was signed (RFC 4035
// §5.3), and part of an RRset, or an RRSIG without its RRset, does not
// verify.
func (o *outcome) leaveOutBlocked(rrs []dns.RR, authority bool) (kept []dns.RR, cut bool) {
	var blocked []dns.RR
	for _, rr := range rrs {
		if o.blockedExtra(rr, authority) {
			blocked = append(blocked, rr)
		}
	}
	if len(blocked) == 0 {
		return rrs, false
	}
	return leaveOutWhole(rrs, blocked), true
}

// blockedExtra reports whether rr, a record of the authority (authority
// set) or additional section, is a blocked name's under a policy inspect
// asks (scrub).
func (o *outcome) blockedExtra(rr dns.RR, authority bool) bool {
	t := rr.Header().Rrtype
	if t == dns.TypeOPT || authority && proofType(rrsetType(rr)) {
		return false
	}
	if o.inspectsOwn() && leavesOut(o.policy.Policy) {
		if _, d := hopDecision(o.policy.Policy, rr); d.Blocked {
			return true
		}
	}
	for _, cr := range o.also {
		if !leavesOut(cr.Policy) {
			continue
		}
		if _, d := hopDecision(cr.Policy, rr); d.Blocked {
			return true
		}
	}
	return false
}

// leavesOut reports whether scrub leaves out the records p blocks: not
// for a policy in shadow mode (action: log), which records what it would
// block and forwards every answer untouched.
func leavesOut(p *Policy) bool {
	return p.Action != config.ActionLog
}

// proofType reports the RRsets of an authority section that scrub keeps
// whoever owns them, by their type (rrsetType: for an RRSIG, the type it
// covers): the SOA of a negative answer (RFC 2308) and the DNSSEC records
// that prove it (RFC 4035 §3.1.3), with their RRSIGs. An RRSIG over an NS,
// DS or any other RRset is not kept so: it is a blocked name's as that
// RRset is, and is left out with it, or alone.
func proofType(t uint16) bool {
	switch t {
	case dns.TypeSOA, dns.TypeNSEC, dns.TypeNSEC3:
		return true
	}
	return false
}

// answerDecision is pol's block of the answer resp: a name its alias
// chain reaches (chainDecision), else, when pol has response-IP triggers,
// an address in it (addressDecision).
func answerDecision(pol *Policy, resp *dns.Msg) (d Decision, via string, ok bool) {
	d, via, ok = chainDecision(pol, resp)
	if !ok && pol.InspectsAddresses() {
		d, via, ok = addressDecision(pol, resp)
	}
	return d, via, ok
}

// inspects reports whether inspect looks at the answer at all: whether
// anything in it could change the outcome. The wire path unpacks an answer
// only for the queries that do, and then only when the answer holds a name
// other than the question's (cacheEntry.addsNames) or a policy asked has
// response-IP triggers (Handler.inspectEntry, inspectsAddresses): the
// question's name was decided already. An inspection of anything else in
// an answer must change Handler.inspectEntry too.
func (o *outcome) inspects() bool {
	return o.result == ResultForwarded && !o.shadow && (o.inspectsOwn() || o.also != nil)
}

// inspectsOwn reports whether the outcome's own policy asks about the
// answer: it blocks something and did not allow the name.
func (o *outcome) inspectsOwn() bool {
	return o.hasPolicy && o.policy.Policy.Blocks() && !o.decision.Allowed
}

// inspectsAddresses reports whether a policy inspect asks has response-IP
// triggers, which look at every address of the answer.
func (o *outcome) inspectsAddresses() bool {
	if o.inspectsOwn() && o.policy.Policy.InspectsAddresses() {
		return true
	}
	return slices.ContainsFunc(o.also, func(cr ClientRange) bool { return cr.Policy.InspectsAddresses() })
}

// Explanation is the decision for one client and name, with every reason.
type Explanation struct {
	Client    netip.Addr
	Name      string
	Typed     string // the name as a person typed it, when that was Unicode: Name is its ASCII form
	Type      string
	Allowed   bool          // the client is inside allowed_clients
	AllowedBy netip.Prefix  // the allowed_clients range holding it
	HasPolicy bool          // a policy range holds the client
	Range     ClientRange   // the range whose policy decides (Snapshot.PolicyForClient), when HasPolicy
	Beaten    []ClientRange // wider ranges holding the client that lost to Range
	Decision  Decision
	Hops      []Hop // the names of the upstream answer, with -resolve
	Rcode     string
	// ZoneTransfer: the type is AXFR or IXFR, which a query from an
	// allowed client gets REFUSED for whatever its policy says, as
	// dnsfence forwards no zone transfer (Handler's step 3).
	ZoneTransfer bool
	// Result is the outcome, in the words of a query's result:
	// ResultRefused, ResultBlocked, ResultLocal or ResultForwarded.
	Result string
	// Shadow: a shadow-mode policy (action: log) blocks it; the query is
	// forwarded and recorded as a block.
	Shadow bool
	// Subnet is the network an EDNS Client Subnet option from the trusted
	// proxy Proxy named, which policies are matched against; allowed_clients
	// applies to Proxy. Subnet is invalid when the client is an address.
	Subnet netip.Prefix
	Proxy  netip.Addr
	// Wider: Subnet is wider than Range, a range of a blocking policy inside
	// it, so that policy decides (fail closed, Snapshot.PolicyForClient);
	// Held is the range holding the whole of Subnet whose policy it would
	// otherwise get, when HasHeld.
	Wider   bool
	Held    ClientRange
	HasHeld bool
	// Also are ranges of the other blocking policies Subnet is decided
	// with, one each: their devices may be in it too, so a name (or an
	// answer) any of them blocks is blocked (Snapshot.alsoDeciding).
	Also []ClientRange

	// also is the outcome's, for ExplainAnswer's inspection under the
	// policies of Also that did not allow the name.
	also []ClientRange
	// local is the outcome's: the zone of a ResultLocal.
	local *localZone
}

// Hop is one name of an upstream answer's chain and its decision.
type Hop struct {
	Record   string // the record as text
	Name     string // the name decided: the target of an alias (aliasTarget), else the owner; a blocked owner first
	Decision Decision
	// Outranked marks an address a passthru trigger holds whose zone
	// blocked the answer all the same, by the longer prefix holding
	// another of its addresses (addressDecision).
	Outranked bool
}

// Explain decides name for client exactly as a query from client would be
// (Snapshot.decide), and says why. It does not look at upstream answers;
// ExplainAnswer adds that.
func (s *Snapshot) Explain(client netip.Addr, name string, qtype uint16) Explanation {
	client = client.Unmap()
	return s.explainQuery(client, hostPrefix(client), name, qtype)
}

// ExplainFor is Explain for the client a query identifies (identify): a
// network an ECS option from a trusted proxy names is explained as that
// network, with allowed_clients applied to the proxy, as the query is
// decided.
func (s *Snapshot) ExplainFor(id Identity, name string, qtype uint16) Explanation {
	e := s.explainQuery(id.Source, id.Client, name, qtype)
	if id.Via == IdentityECS {
		e.Subnet, e.Proxy = id.Client, id.Source
	}
	return e
}

// explainQuery is Explain for a query from source deciding for client
// (decide's arguments).
func (s *Snapshot) explainQuery(source netip.Addr, client netip.Prefix, name string, qtype uint16) Explanation {
	e := Explanation{Client: client.Addr(), Name: dns.Fqdn(name), Type: dns.Type(qtype).String()}
	e.set(s.decide(source, client, e.Name))
	e.AllowedBy, _, e.Allowed = s.allowed.LookupPrefixLPM(hostPrefix(source))
	if !e.Allowed {
		// The range the client would have, for the reason text.
		e.Range, e.HasPolicy, e.Wider = s.PolicyForClient(client)
		return e
	}
	s.explainRanges(&e, client)
	if qtype == dns.TypeAXFR || qtype == dns.TypeIXFR {
		e.ZoneTransfer, e.Result, e.Shadow, e.Decision = true, ResultRefused, false, Decision{}
		e.Rcode = "REFUSED, Extended DNS Error 21 (Not Supported)"
	}
	return e
}

// explainRanges sets the ranges that e's range (its policy) is decided
// beside, for the network client: Also, Held when e is Wider, else
// Beaten. ExplainAnswer sets them again when a policy of Also blocks the
// answer and so becomes e's.
func (s *Snapshot) explainRanges(e *Explanation, client netip.Prefix) {
	e.Also, e.Beaten, e.Held, e.HasHeld = nil, nil, ClientRange{}, false
	if e.HasPolicy {
		held, ok := s.PolicyForPrefix(client)
		ok = ok && e.Wider && blocking(held.Policy) && held.Policy != e.Range.Policy
		if ok {
			e.Also = append(e.Also, held) // decided first, and did not block
		}
		for _, cr := range s.alsoDeciding(client, e.Range.Policy) {
			if !ok || cr.Policy != held.Policy { // held names that policy already
				e.Also = append(e.Also, cr)
			}
		}
	}
	if e.Wider {
		e.Held, e.HasHeld = s.PolicyForPrefix(client)
	} else if e.HasPolicy {
		for _, cr := range s.byClient.Supernets(client) {
			if cr.Range.Prefix != e.Range.Range.Prefix {
				e.Beaten = append(e.Beaten, cr)
			}
		}
	}
}

// set takes the decision o and says what the client gets for it.
func (e *Explanation) set(o outcome) {
	e.Result, e.Shadow = o.result, o.shadow
	e.Range, e.HasPolicy, e.Wider, e.Decision = o.policy, o.hasPolicy, o.wider, o.decision
	e.also, e.local = o.also, o.local
	switch {
	case o.result == ResultRefused:
		e.Rcode = "REFUSED"
	case o.result == ResultLocal:
		e.Rcode = dns.RcodeToString[o.local.rcodeOf(e.Name)] + " from dnsfence's own zone " + o.local.apex
	case o.result == ResultServfail:
		e.Rcode = "SERVFAIL, Extended DNS Error 14 (Not Ready)"
	case o.shadow:
		e.Rcode = "from upstream (shadow mode records a block)"
	case o.result == ResultBlocked && o.decision.Trigger.Action == blocklist.ActionDrop:
		e.Rcode = "no answer at all: the RPZ trigger's action is rpz-drop"
	case o.result == ResultBlocked && o.decision.Trigger.Action == blocklist.ActionNODATA:
		e.Rcode = "NOERROR without records (NODATA): the RPZ trigger's action is CNAME *."
	case o.result == ResultBlocked:
		switch o.decision.action(e.Range.Policy) {
		case config.ActionRefused:
			e.Rcode = "REFUSED"
		case config.ActionNull:
			e.Rcode = "NOERROR (0.0.0.0 / :: / NODATA)"
		default:
			e.Rcode = "NXDOMAIN"
		}
	default:
		e.Rcode = "from upstream"
	}
}

// outcome is the decision e holds.
func (e *Explanation) outcome() outcome {
	return outcome{result: e.Result, policy: e.Range, hasPolicy: e.HasPolicy, wider: e.Wider, decision: e.Decision, shadow: e.Shadow,
		also: e.also, local: e.local}
}

// Forwarded reports whether the query is sent upstream and answered as the
// upstream answers (not refused, not blocked, not in shadow mode): the
// explanations whose upstream answer ExplainAnswer inspects.
func (e *Explanation) Forwarded() bool { return e.Result == ResultForwarded && !e.Shadow }

// verdict is the word `dnsfence explain` prints for the outcome: the
// result, "allowed" for a name an allow entry lets through, and "shadow"
// for a block in shadow mode.
func (e *Explanation) verdict() string {
	switch {
	case e.Shadow:
		return "shadow"
	case e.Result == ResultForwarded && e.Decision.Allowed:
		return "allowed"
	}
	return e.Result
}

// ExplainAnswer adds an upstream answer to an explanation that was
// forwarded: each record of the answer with the decision on the name it
// leads to (the target of a CNAME, DNAME, HTTPS or SVCB record, else its
// owner), and the outcome the answer inspection reaches, with the same
// functions as a query (hopDecision, outcome.inspect).
func (s *Snapshot) ExplainAnswer(e *Explanation, resp *dns.Msg) {
	if !e.Forwarded() {
		return
	}
	// Inspected first: when a policy of Also blocks the answer, the hops
	// are shown under it.
	o := e.outcome()
	blocked := o.inspect(resp) != ""
	if blocked {
		first := e.Range.Policy
		e.set(o)
		if e.Range.Policy != first && e.Subnet.IsValid() {
			// A policy of Also (of a network only: alsoDeciding) blocks
			// the answer and decides: the others are beside it.
			s.explainRanges(e, e.Subnet)
		}
	}
	inspect := e.HasPolicy && e.Range.Policy.Blocks() && !e.Range.Policy.Decide(e.Name).Allowed
	for _, rr := range resp.Answer {
		h := Hop{Record: strings.ReplaceAll(rr.String(), "\t", " "), Name: rr.Header().Name}
		if target, ok := aliasTarget(rr); ok {
			h.Name = target
		}
		if inspect {
			h.Name, h.Decision = hopDecision(e.Range.Policy, rr)
		}
		if inspect && !h.Decision.Blocked && e.Range.Policy.InspectsAddresses() {
			var buf [8]netip.Addr
			for _, a := range answerAddresses(rr, buf[:0]) {
				if d, ok := e.Range.Policy.DecideAddress(a); ok {
					h.Name, h.Decision = a.String(), d
					break
				}
			}
			// Outranked by a prefix only: a name of the zone the chain
			// reaches (chainDecision) blocks before any address is asked.
			_, isIP := h.Decision.Entry.Prefix()
			_, byIP := e.Decision.Entry.Prefix()
			h.Outranked = isIP && byIP && h.Decision.Allowed && e.Decision.Blocked && h.Decision.Entry.List == e.Decision.Entry.List
		}
		e.Hops = append(e.Hops, h)
	}
	if !blocked {
		e.Rcode = dns.RcodeToString[resp.Rcode] + " from upstream"
	}
}

// String is the explanation as `dnsfence explain` prints it.
func (e Explanation) String() string {
	return e.text(func(list string) string { return list })
}

// ClientString is String as a DNS client is answered it (the CHAOS
// explain query): remote lists named without their query string or
// fragment (source.ClientName), as in a blocked answer's EDE text.
func (e Explanation) ClientString() string { return e.text(source.ClientName) }

// text is the explanation with remote lists named by listName.
func (e Explanation) text(listName func(string) string) string {
	var b strings.Builder
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "client %s (EDNS Client Subnet from trusted proxy %s)\n", e.Subnet, e.Proxy)
	} else {
		fmt.Fprintf(&b, "client %s\n", e.Client)
	}
	if !e.Allowed {
		b.WriteString("  not in allowed_clients: every UDP query is REFUSED, every TCP connection closed at accept\n")
		if e.HasPolicy {
			fmt.Fprintf(&b, "  policy %q range %s (%s) holds it, but that range is only partly inside allowed_clients:\n"+
				"  add the range to allowed_clients, or these devices cannot resolve at all\n",
				e.Range.Policy.Name, e.Range.Range.Prefix, where(e.Range.Range))
		}
		fmt.Fprintf(&b, "verdict: %s (%s)\n", e.verdict(), e.Rcode)
		return b.String()
	}
	if e.Subnet.IsValid() {
		fmt.Fprintf(&b, "  proxy %s allowed by allowed_clients range %s\n", e.Proxy, e.AllowedBy)
	} else {
		fmt.Fprintf(&b, "  allowed by allowed_clients range %s\n", e.AllowedBy)
	}
	if e.Wider {
		fmt.Fprintf(&b, "  subnet %s is wider than range %s (%s) of blocking policy %q: its devices may be in that range, so that policy applies (fail closed)\n",
			e.Subnet, e.Range.Range.Prefix, where(e.Range.Range), e.Range.Policy.Name)
		if e.HasHeld && !blocking(e.Held.Policy) {
			fmt.Fprintf(&b, "  instead of policy %q from range %s (%s), which holds the whole subnet\n",
				e.Held.Policy.Name, e.Held.Range.Prefix, where(e.Held.Range))
		} else if !e.HasHeld {
			b.WriteString("  instead of no policy: no range holds the whole subnet\n")
		}
	}
	if !e.HasPolicy {
		b.WriteString("  in no policy range: queries are forwarded untouched\n")
	} else {
		fmt.Fprintf(&b, "  policy %q (%s) from range %s (%s)\n", e.Range.Policy.Name, e.Range.Policy.Kind(),
			e.Range.Range.Prefix, where(e.Range.Range))
		for _, cr := range e.Beaten {
			fmt.Fprintf(&b, "  beats wider range %s of policy %q (%s)\n", cr.Range.Prefix, cr.Policy.Name, where(cr.Range))
		}
	}
	for _, cr := range e.Also {
		fmt.Fprintf(&b, "  and blocking policy %q from range %s (%s): its devices may be in the subnet too, and a name any of these policies blocks is blocked\n",
			cr.Policy.Name, cr.Range.Prefix, where(cr.Range))
	}
	fmt.Fprintf(&b, "name %s type %s", e.Name, e.Type)
	if e.Typed != "" {
		fmt.Fprintf(&b, " (typed as %s)", e.Typed)
	}
	b.WriteString("\n")
	if e.ZoneTransfer {
		b.WriteString("  a zone transfer: refused before any policy, as dnsfence forwards none\n")
		fmt.Fprintf(&b, "verdict: %s (%s)\n", e.verdict(), e.Rcode)
		return b.String()
	}
	if e.Result == ResultLocal {
		fmt.Fprintf(&b, "  in %s, which dnsfence answers itself for every client: %s\n", e.local.apex, e.local.why)
		fmt.Fprintf(&b, "verdict: %s (%s)\n", e.verdict(), e.Rcode)
		return b.String()
	}
	if e.HasPolicy && e.Range.Policy.Blocks() {
		fmt.Fprintf(&b, "  %s\n", describe(e.Name, decisionOfName(e), listName))
	}
	for _, cr := range e.Also {
		fmt.Fprintf(&b, "  under policy %q: %s\n", cr.Policy.Name, describe(e.Name, cr.Policy.Decide(e.Name), listName))
	}
	if e.Result == ResultServfail {
		fmt.Fprintf(&b, "  policy %q is not ready: remote block %s no copy yet; with sources.servfail_until_ready, every name its other lists neither block nor allow gets SERVFAIL until then\n",
			e.Range.Policy.Name, listsWithout(e.Range.Policy.noCopy, listName))
	}
	inspected := e.HasPolicy && e.Range.Policy.Blocks() && !decisionOfName(e).Allowed
	for i, h := range e.Hops {
		fmt.Fprintf(&b, "  answer %d: %s\n", i+1, h.Record)
		switch {
		case inspected && h.Outranked:
			fmt.Fprintf(&b, "    %s passthru by %s: %s, outranked: a longer prefix of the zone holds another address of the answer\n",
				h.Name, entryWhere(h.Decision, listName), entryText(h.Decision))
		case inspected:
			fmt.Fprintf(&b, "    %s\n", describe(h.Name, h.Decision, listName))
		}
	}
	if len(e.Hops) > 0 && !inspected {
		b.WriteString("  the answer is not inspected: no blocking policy applies, or the question name is allowed\n")
	}
	fmt.Fprintf(&b, "verdict: %s (%s)\n", e.verdict(), e.Rcode)
	return b.String()
}

// decisionOfName is the decision on the question name itself, which a
// chain block replaces in e.Decision.
func decisionOfName(e Explanation) Decision {
	if len(e.Hops) > 0 && e.Decision.Blocked {
		return e.Range.Policy.Decide(e.Name)
	}
	return e.Decision
}

func describe(name string, d Decision, listName func(string) string) string {
	switch {
	case d.Blocked:
		return fmt.Sprintf("%s blocked by %s: %s%s", name, entryWhere(d, listName), entryText(d), actionNote(d))
	case d.Allowed:
		return fmt.Sprintf("%s allowed by %s: %s (allow beats block)", name, entryWhere(d, listName), entryText(d))
	}
	return fmt.Sprintf("%s is on no list of the policy", name)
}

// entryWhere names where a list entry was written: `file:line` for a list
// file, `URL line N (sha256 HEX)` for a list fetched by URL, `axfr://...
// serial N, owner OWNER` for a zone transfer, which has no lines; an RPZ
// file or URL adds the trigger's owner name. A remote list is named by
// listName.
func entryWhere(d Decision, listName func(string) string) string {
	e := d.Entry
	l := e.List
	file := l.File()
	if isTransfer(file) {
		serial, _ := l.Serial()
		return fmt.Sprintf("%s serial %d, owner %s", listName(file), serial, e.Owner(d.Trigger))
	}
	var b strings.Builder
	if config.IsRemote(file) {
		fmt.Fprintf(&b, "%s line %d (sha256 %s)", listName(file), e.Line, l.Hash())
	} else {
		fmt.Fprintf(&b, "%s:%d", file, e.Line)
	}
	if owner := e.Owner(d.Trigger); owner != "" {
		fmt.Fprintf(&b, " owner %s", owner)
	}
	return b.String()
}

// entryText is the entry itself: the name, `*.name` for an RPZ wildcard,
// or the prefix of a response-IP trigger.
func entryText(d Decision) string {
	e := d.Entry
	if d.Trigger.Wildcard {
		return "*." + e.Folded()
	}
	return e.Folded()
}

// triggerAction is the action of d's RPZ trigger when that, not the
// policy's action, decides the answer: NODATA (CNAME *.), drop
// (rpz-drop.) or passthru (rpz-passthru.). ok is false for a CNAME .
// trigger (ActionNXDOMAIN, as every plain list entry is), which blocks
// with the policy's action: under `refused` or `null` a line saying
// NXDOMAIN would contradict the REFUSED or 0.0.0.0 the client got.
func triggerAction(d Decision) (string, bool) {
	if d.Trigger.Action == blocklist.ActionNXDOMAIN {
		return "", false
	}
	return d.Trigger.Action.String(), true
}

// actionNote says what an RPZ trigger does when it is not the policy's
// blocked answer.
func actionNote(d Decision) string {
	switch d.Trigger.Action {
	case blocklist.ActionNODATA:
		return " (action NODATA: CNAME *.)"
	case blocklist.ActionDrop:
		return " (action drop: rpz-drop.)"
	}
	return ""
}

// isTransfer reports whether a list came by zone transfer (axfr://): its
// entries have no lines, their owner names them, and its version is the
// zone's serial.
func isTransfer(list string) bool {
	return len(list) > len("axfr://") && strings.EqualFold(list[:len("axfr://")], "axfr://")
}

func where(r blocklist.Range) string {
	if r.Line > 0 {
		return fmt.Sprintf("%s:%d", r.File, r.Line)
	}
	return r.File
}

// jsonEntry is a list entry in JSON output: for an RPZ trigger, its owner
// and action too; for a zone transfer, the serial (and no line); for a
// URL, the body's SHA-256.
type jsonEntry struct {
	List   string `json:"list"`
	Line   int    `json:"line,omitempty"`
	Entry  string `json:"entry"`
	Owner  string `json:"owner,omitempty"`
	Action string `json:"action,omitempty"`
	Serial *int64 `json:"serial,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

type jsonDecision struct {
	Name    string     `json:"name"`
	Blocked bool       `json:"blocked"`
	Allowed bool       `json:"allowed"`
	Entry   *jsonEntry `json:"entry,omitempty"`
}

type jsonRange struct {
	Policy string `json:"policy"`
	Range  string `json:"range"`
	File   string `json:"file"`
	Line   int    `json:"line,omitempty"`
}

type jsonHop struct {
	Record   string       `json:"record"`
	Decision jsonDecision `json:"decision"`
}

// jsonAlso is a policy of Explanation.Also and its decision on the name,
// when its lists were asked (not for a name in a local zone).
type jsonAlso struct {
	jsonRange
	Decision *jsonDecision `json:"decision,omitempty"`
}

type jsonExplanation struct {
	Client    string        `json:"client"`
	Subnet    string        `json:"subnet,omitempty"` // an ECS network from proxy
	Proxy     string        `json:"proxy,omitempty"`
	Allowed   bool          `json:"allowed"`
	AllowedBy string        `json:"allowed_by,omitempty"`
	Policy    *jsonRange    `json:"policy,omitempty"`
	Action    string        `json:"action,omitempty"`
	Exemption bool          `json:"exemption,omitempty"`
	Beaten    []jsonRange   `json:"beats,omitempty"`
	Also      []jsonAlso    `json:"also,omitempty"` // the other blocking policies the subnet is decided under
	Name      string        `json:"name"`
	Typed     string        `json:"typed,omitempty"`
	Type      string        `json:"type"`
	Decision  *jsonDecision `json:"decision,omitempty"`
	// LocalZone and LocalReason: the name is in one of dnsfence's own
	// zones, answered without asking the policies' lists.
	LocalZone   string `json:"local_zone,omitempty"`
	LocalReason string `json:"local_reason,omitempty"`
	// NotReady are the policy's remote block lists without a copy yet
	// when it answers SERVFAIL for them (sources.servfail_until_ready).
	NotReady []string  `json:"not_ready,omitempty"`
	Answer   []jsonHop `json:"answer,omitempty"`
	Verdict  string    `json:"verdict"`
	Rcode    string    `json:"rcode"`
}

func toJSONDecision(name string, d Decision) jsonDecision {
	j := jsonDecision{Name: name, Blocked: d.Blocked, Allowed: d.Allowed}
	if e := d.Entry; e.List != nil {
		j.Entry = &jsonEntry{List: e.List.File(), Line: e.Line, Entry: entryText(d), Owner: e.Owner(d.Trigger)}
		if action, ok := triggerAction(d); ok && e.List.Origin() != "" {
			j.Entry.Action = action
		}
		switch {
		case isTransfer(e.List.File()):
			serial, _ := e.List.Serial()
			v := int64(serial)
			j.Entry.Line, j.Entry.Serial = 0, &v
		case config.IsRemote(e.List.File()):
			j.Entry.SHA256 = e.List.Hash()
		}
	}
	return j
}

func toJSONRange(cr ClientRange) jsonRange {
	return jsonRange{Policy: cr.Policy.Name, Range: cr.Range.Prefix.String(), File: cr.Range.File, Line: cr.Range.Line}
}

// MarshalJSON gives the same content as String, as JSON.
func (e Explanation) MarshalJSON() ([]byte, error) {
	j := jsonExplanation{Client: e.Client.String(), Allowed: e.Allowed, Name: e.Name, Typed: e.Typed, Type: e.Type,
		Verdict: e.verdict(), Rcode: e.Rcode}
	if e.Allowed {
		j.AllowedBy = e.AllowedBy.String()
	}
	if e.Subnet.IsValid() {
		j.Subnet, j.Proxy = e.Subnet.String(), e.Proxy.String()
	}
	// A name in a local zone is answered before any list is asked: as
	// String, no decision of a policy on it, and the zone instead.
	local := e.Result == ResultLocal
	if local {
		j.LocalZone, j.LocalReason = e.local.apex, e.local.why
	}
	if e.Result == ResultServfail {
		j.NotReady = e.Range.Policy.noCopy
	}
	for _, cr := range e.Also {
		a := jsonAlso{jsonRange: toJSONRange(cr)}
		if !local {
			d := toJSONDecision(e.Name, cr.Policy.Decide(e.Name))
			a.Decision = &d
		}
		j.Also = append(j.Also, a)
	}
	if e.HasPolicy {
		r := toJSONRange(e.Range)
		j.Policy, j.Action, j.Exemption = &r, string(e.Range.Policy.Action), !e.Range.Policy.Blocks()
		for _, cr := range e.Beaten {
			j.Beaten = append(j.Beaten, toJSONRange(cr))
		}
		if e.Range.Policy.Blocks() && !local {
			d := toJSONDecision(e.Name, decisionOfName(e))
			j.Decision = &d
		}
	}
	for _, h := range e.Hops {
		j.Answer = append(j.Answer, jsonHop{Record: h.Record, Decision: toJSONDecision(h.Name, h.Decision)})
	}
	return json.Marshal(j)
}

// Kind is how explain and check name what a policy does: "action X", or,
// with no block lists, that it is an exemption (its action is never used).
func (p *Policy) Kind() string {
	if !p.Blocks() {
		return "exemption: no block lists"
	}
	return "action " + string(p.Action)
}
