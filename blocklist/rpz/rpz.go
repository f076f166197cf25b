// Package rpz reads Response Policy Zones (RPZ, draft-vixie-dnsop-dns-rpz;
// the format BIND, Unbound, Knot Resolver and PowerDNS consume) from zone
// files and from zone transfers, and turns their records into the triggers
// and actions dnsfence applies. It is the one place besides the resolver
// that knows miekg/dns: the blocklist package builds its lists from the
// Triggers this package hands it.
//
// Supported, as RPZ defines them (owner names relative to the zone apex):
//
//	example.com         CNAME .              ; NXDOMAIN for example.com
//	*.example.com       CNAME .              ; NXDOMAIN for every name below it, not example.com itself
//	example.com         CNAME *.             ; NODATA
//	example.com         CNAME rpz-passthru.  ; allow: beats every block
//	example.com         CNAME rpz-drop.      ; no answer
//	24.0.2.0.192.rpz-ip CNAME .              ; an answer holding an address in 192.0.2.0/24
//	48.zz.db8.2001.rpz-ip CNAME .            ; ... in 2001:db8::/48
//
// SOA and NS records at the apex are the zone's own and are read silently,
// and so are a signed zone's DNSSEC records (dnssecRecord), as BIND reads
// them.
// Every other record (local data such as A, AAAA or TXT at a trigger, a
// CNAME to another name, the rpz-tcp-only action, NSDNAME, NSIP and
// client-IP triggers) is reported as a Problem and skipped; the rest of the
// zone still applies.
package rpz

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
	"github.com/miekg/dns"
)

// Action is what a trigger does to a query or answer it matches.
type Action uint8

const (
	// NXDOMAIN answers that the name does not exist: `CNAME .`.
	NXDOMAIN Action = iota
	// NODATA answers that the name has no records of the asked type:
	// `CNAME *.`.
	NODATA
	// Drop sends no answer at all: `CNAME rpz-drop.`.
	Drop
	// Passthru exempts the name from every block: `CNAME rpz-passthru.`.
	Passthru
)

func (a Action) String() string {
	switch a {
	case NXDOMAIN:
		return "NXDOMAIN"
	case NODATA:
		return "NODATA"
	case Drop:
		return "drop"
	case Passthru:
		return "passthru"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Target is the CNAME target that writes the action in a zone.
func (a Action) Target() string {
	switch a {
	case NODATA:
		return "*."
	case Drop:
		return "rpz-drop."
	case Passthru:
		return "rpz-passthru."
	}
	return "."
}

// Trigger is one applied record of a zone: a QNAME trigger (Name) or a
// response-IP trigger (Prefix), and its action.
type Trigger struct {
	// Owner is the record's owner name as the zone gives it, fully
	// qualified, in presentation form (RFC 1035 §5.1).
	Owner string
	// Line is the line of the record in the file; 0 for a record of a
	// zone transfer, which has no lines (its owner names it).
	Line int
	// Name is the QNAME trigger: the owner without the zone apex and,
	// for a wildcard, without its leading `*.`; presentation form, as
	// written (case and escapes kept), no trailing dot. Empty for a
	// response-IP trigger.
	Name string
	// Wildcard marks a `*.Name` trigger: it matches every name below
	// Name, and not Name itself.
	Wildcard bool
	// Prefix is the response-IP trigger's prefix; the zero Prefix for a
	// QNAME trigger.
	Prefix netip.Prefix
	Action Action
}

// Problem is a record that was reported and skipped (or, Kept, applied
// as read), or a line the zone parser could not read.
type Problem struct {
	Line  int    // as Trigger.Line: 0 for a record of a zone transfer
	Owner string // the record's owner name; empty for a syntax error
	Token string // for a syntax error, the text it stopped at
	Err   error  // what is wrong, wrapping one of the Err values below
	// Kept marks a record applied as read, whose meaning is in doubt
	// (ErrUnnamedZone): reported, not skipped.
	Kept bool
}

// Handler receives what a zone holds, in zone order. Either func may be
// nil.
type Handler struct {
	Trigger func(Trigger)
	Problem func(Problem)
}

// Zone is what a zone says of itself.
type Zone struct {
	// Origin is the zone apex, fully qualified: the name given for a
	// transfer; for a file, the owner of its SOA record when that is its
	// first record, else its first $ORIGIN, else the root. A name a file
	// writes relative with no $ORIGIN in effect is below the SOA owner
	// when the SOA comes first written in full (BIND requires the zone to
	// be named so), else below the root; in a file whose SOA comes first
	// owned by @ with no $ORIGIN, which names no zone, an owner written in
	// full is read as written and reported (Problem.Kept, ErrUnnamedZone),
	// or, for a passthru, skipped.
	Origin string
	// Serial is the SOA serial (RFC 1035 §3.3.13); SOA reports whether
	// the zone had an SOA record at its apex.
	Serial uint32
	SOA    bool
	// Triggers and Problems count what was handed to the Handler.
	Triggers, Problems int
}

// Reasons a record is skipped. Problems wrap them; test with errors.Is.
var (
	ErrLocalData        = errors.New("local data is not supported")
	ErrRewrite          = errors.New("a CNAME to another name (a rewrite) is not supported")
	ErrNoTarget         = errors.New("a CNAME without a target")
	ErrTCPOnly          = errors.New("the rpz-tcp-only action is not supported")
	ErrUnknownAction    = errors.New("unknown RPZ action")
	ErrNSDNAME          = errors.New("NSDNAME triggers (rpz-nsdname) are not supported")
	ErrNSIP             = errors.New("NSIP triggers (rpz-nsip) are not supported")
	ErrClientIP         = errors.New("client-IP triggers (rpz-client-ip) are not supported: the policy's clients choose who is blocked")
	ErrUnknownLabel     = errors.New("unknown RPZ trigger label")
	ErrOutsideZone      = errors.New("owner name is outside the zone")
	ErrUnnamedZone      = errors.New("owner name written in full (ending in a dot), or below an $ORIGIN given after the SOA, in a zone file that does not name its zone (its SOA owned by @ with no $ORIGIN before it): BIND takes the zone's name from named.conf and reads this as a trigger below it, dnsfence cannot tell which; put $ORIGIN with the zone's name before the SOA, or write the owner relative to the SOA with no $ORIGIN")
	ErrRelativePassthru = errors.New("rpz-passthru written without its trailing dot is no passthru: BIND reads it below the zone, as a CNAME to another name (write rpz-passthru. with the dot)")
	ErrOriginTwice      = errors.New("owner name ends in the zone's name twice: written without its trailing dot, a name in full is read below the zone, as BIND reads it (tiktok.com.rpz.example.gov, in zone rpz.example.gov, is the trigger for tiktok.com.rpz.example.gov, which no query asks for); write tiktok.com.rpz.example.gov. or tiktok.com")
	ErrNoOwner          = errors.New("no owner name: a record that leaves it out repeats the owner of the record before, and there is none")
	ErrApexData         = errors.New("a record at the zone apex other than SOA and NS is not a trigger")
	ErrSecondSOA        = errors.New("a second SOA record at the zone apex: a zone has exactly one (RFC 1035 §5.2), and BIND refuses a file with two")
	ErrWildcard         = errors.New("a wildcard is only a leading \"*.\" label")
	ErrWideWildcard     = errors.New("a wildcard of a single label would block a whole top-level domain")
	ErrClass            = errors.New("only class IN records are triggers")
	ErrSyntax           = errors.New("zone syntax")
	ErrPrefixLength     = errors.New("bad prefix length in rpz-ip trigger")
	ErrAddress          = errors.New("bad address in rpz-ip trigger")
	ErrZZ               = errors.New("bad zz in rpz-ip trigger: it stands for one run of zero groups of an IPv6 address, once")
	ErrHostBits         = errors.New("rpz-ip prefix has host bits set")
	ErrGenerated        = fmt.Errorf("$GENERATE directives made more than %d records", maxGenerated)
)

// maxGenerated bounds the records the $GENERATE directives of one file make
// beyond one a directive: one directive's whole range (dns.ZoneParser's
// limit is 65,535 steps). A file past it is refused whole (Parse's
// ErrGenerated), as a body over sources.max_bytes is: a list server's body
// of some hundred octets would otherwise make millions of triggers (20
// lines made 1,310,720 in 3 s, 44 MB of heap), a few thousand lines
// enough to exhaust memory at every fetch.
const maxGenerated = 1 << 16

// Parse reads an RPZ zone file from r, as dns.ZoneParser reads zone files
// (RFC 1035 §5; $ORIGIN, $TTL and $GENERATE, not $INCLUDE), and hands each
// trigger and problem to h in file order. A byte-order mark at the start
// of a line and CRLF line ends are read as if absent. A line the zone
// parser cannot read is a Problem wrapping ErrSyntax, and parsing resumes
// with the next line (with the $ORIGIN in effect; a following line that
// leaves out its owner name is then reported, as it has no owner to
// repeat). file names the input in problems. The error is that of reading
// r, if any, or ErrGenerated (as `file:line: ...`, the line of the
// directive that went past the bound) for a file whose $GENERATE
// directives make more than maxGenerated records.
func Parse(file string, r io.Reader, h Handler) (Zone, error) {
	lr := newLineReader(r, noOrigin)
	d := decoder{h: h}
	generated, lastLine := 0, 0
	for {
		base := lr.line
		zp := dns.NewZoneParser(lr, lr.origin, "")
		zp.SetDefaultTTL(3600)
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			// A line makes one record, but a $GENERATE directive's
			// line every record of its range.
			if lr.start == lastLine {
				if generated++; generated > maxGenerated {
					return d.zone, fmt.Errorf("%s:%d: %w in the file; refused", file, lr.start, ErrGenerated)
				}
			}
			newLine := lr.start != lastLine
			lastLine = lr.start
			esc, bad := lr.badEscape[lr.start]
			if !bad {
				// An owner left out repeats the one before, and a
				// relative one ends in the $ORIGIN: either may carry
				// an escape written on another line.
				esc, bad = presname.BadEscape(rr.Header().Name)
			}
			if bad {
				// BIND refuses the zone (DNS_R_BADESCAPE); here the
				// line, whose names are not those written.
				if newLine {
					d.problem(Problem{Line: lr.start, Token: esc, Err: fmt.Errorf("%w: a malformed escape (RFC 1035 §5.1: a backslash before a digit begins \\DDD, three decimal digits from 000 to 255)", ErrSyntax)})
				}
				continue
			}
			if !d.apexKnown {
				d.setApex(rr, lr.firstOrigin)
			}
			d.record(rr, lr.start)
		}
		if lr.err != nil && lr.err != io.EOF {
			return d.zone, fmt.Errorf("reading %s: %w", file, lr.err)
		}
		err := zp.Err()
		if err == nil {
			break
		}
		line, token, msg := syntaxError(err)
		d.problem(Problem{Line: base + line - 1, Token: token, Err: fmt.Errorf("%w: %s", ErrSyntax, msg)})
		if lr.read == 0 || !lr.Resume(base+line-1) {
			break // nothing read (it would stop at the same place again), or nothing left
		}
	}
	return d.zone, nil
}

// syntaxError takes the line (counted from the parser's first line), the
// token and the message out of a zone parser error, which prints them as
// `dns: MESSAGE: "TOKEN" at line: L:C` and has no accessors.
func syntaxError(err error) (line int, token, msg string) {
	s := strings.TrimPrefix(err.Error(), "dns: ")
	i := strings.LastIndex(s, " at line: ")
	if i < 0 {
		return 1, "", s
	}
	pos := s[i+len(" at line: "):]
	s = s[:i]
	if l, _, ok := strings.Cut(pos, ":"); ok {
		line, _ = strconv.Atoi(l)
	}
	if line < 1 {
		line = 1
	}
	if j := strings.LastIndex(s, `: "`); j >= 0 {
		if t, err := strconv.Unquote(s[j+2:]); err == nil {
			return line, t, s[:j]
		}
	}
	return line, "", s
}

// FromRecords reads the records of a zone transfer (AXFR, RFC 5936, or
// the zone as an IXFR leaves it) of the zone apex zone, handing each
// trigger and problem to h in order, with Line 0. The SOA that a transfer
// repeats at its end is read once; nil records are skipped.
func FromRecords(zone string, rrs []dns.RR, h Handler) Zone {
	return FromSeq(zone, slices.Values(rrs), h)
}

// FromSeq is FromRecords for records that arrive one by one (the
// envelopes of a transfer), so that a large zone is never held whole.
func FromSeq(zone string, rrs iter.Seq[dns.RR], h Handler) Zone {
	d := decoder{h: h, zone: Zone{Origin: dns.CanonicalName(zone)}, apexKnown: true}
	for rr := range rrs {
		if rr != nil {
			d.record(rr, 0)
		}
	}
	return d.zone
}

// noOrigin is the origin a zone file is read with until it gives one
// ($ORIGIN): a name no zone has, so that a name the file writes relative
// (without a trailing dot) can be told from one it writes in full
// (fromFile).
const noOrigin = "dnsfence-no-origin.invalid."

// decoder turns records into triggers.
type decoder struct {
	h         Handler
	zone      Zone
	apexKnown bool
	// unnamed marks a file whose first record is its SOA owned by @ (or
	// by a relative name) with no $ORIGIN before it: BIND takes the
	// zone's name from named.conf, and reads a relative owner as below
	// it, as dnsfence does (below the root, Origin), and an owner written
	// in full as itself, which must then end in that name dnsfence does
	// not know (ErrUnnamedZone).
	unnamed bool
	// base is what noOrigin stands for in a file: the zone's name when
	// its SOA comes first written in full (BIND requires the zone named
	// so), else the root; "" for a transfer.
	base string
}

// setApex fixes the zone apex from the first record: its owner when it is
// an SOA, else the first $ORIGIN, else the root. An SOA owned by @ with no
// $ORIGIN names no zone: the root then, and the zone unnamed.
func (d *decoder) setApex(rr dns.RR, firstOrigin string) {
	d.apexKnown, d.base = true, "."
	switch {
	case rr.Header().Rrtype == dns.TypeSOA:
		o, relative := fromFile(rr.Header().Name, ".")
		d.zone.Origin, d.unnamed = dns.CanonicalName(o), relative
		if !relative {
			d.base = d.zone.Origin
		}
	case firstOrigin != "":
		o, _ := fromFile(firstOrigin, ".")
		d.zone.Origin = dns.CanonicalName(o)
	default:
		d.zone.Origin = "."
	}
}

// fromFile is a name as the zone parser read it from a file, fully
// qualified: a name written relative with no $ORIGIN in effect (it ends
// in noOrigin) is taken below origin, and wasRelative reports so.
func fromFile(name, origin string) (_ string, wasRelative bool) {
	rel, ok := relative(name, noOrigin)
	switch {
	case !ok:
		return name, false
	case rel == "":
		return origin, true
	case origin == ".":
		return rel + ".", true
	}
	return rel + "." + origin, true
}

func (d *decoder) problem(p Problem) {
	d.zone.Problems++
	if d.h.Problem != nil {
		d.h.Problem(p)
	}
}

func (d *decoder) trigger(t Trigger) {
	d.zone.Triggers++
	if d.h.Trigger != nil {
		d.h.Trigger(t)
	}
}

// record applies or reports one record found at line.
func (d *decoder) record(rr dns.RR, line int) {
	hdr := rr.Header()
	owner, relName := hdr.Name, false
	if d.base != "" { // a file's: a transfer's names are in full
		owner, relName = fromFile(hdr.Name, d.base)
	}
	bad := func(err error) { d.problem(Problem{Line: line, Owner: owner, Err: err}) }
	if owner == "" {
		d.problem(Problem{Line: line, Err: ErrNoOwner})
		return
	}
	// An owner in full in a file that names no zone: BIND reads it below
	// the zone named.conf names, which dnsfence cannot know. It is read as
	// written, the apex the root, as it always was (a block stays a block:
	// fail closed), and reported as kept; a passthru so read is skipped,
	// since it would let through a name the zone may never have meant.
	doubt := d.unnamed && !relName && owner != "."
	rel, ok := relative(owner, d.zone.Origin)
	if !ok {
		bad(ErrOutsideZone)
		return
	}
	if endsInZone(rel, d.zone.Origin) {
		bad(ErrOriginTwice)
		return
	}
	if dnssecRecord(hdr.Rrtype, rel == "") {
		return
	}
	if rel == "" {
		switch hdr.Rrtype {
		case dns.TypeSOA:
			soa, ok := rr.(*dns.SOA)
			switch {
			case !ok:
			case !d.zone.SOA:
				d.zone.SOA, d.zone.Serial = true, soa.Serial
			case d.base != "":
				// A file's; a transfer repeats its SOA at the end.
				bad(fmt.Errorf("%w; the first's serial %d is kept", ErrSecondSOA, d.zone.Serial))
			}
		case dns.TypeNS:
		default:
			bad(fmt.Errorf("%w (%s record)", ErrApexData, dns.TypeToString[hdr.Rrtype]))
		}
		return
	}
	if hdr.Class != dns.ClassINET {
		bad(fmt.Errorf("%w (class %s)", ErrClass, dns.Class(hdr.Class)))
		return
	}
	// The trigger kind is in the owner's last label before the apex,
	// read as the octets it spells (`rpz\-ip` is rpz-ip to BIND).
	start := presname.LabelStart(rel, len(rel))
	kind, _ := octetText(rel[start:])
	kind = strings.ToLower(kind)
	var (
		t   = Trigger{Owner: owner, Line: line}
		err error
	)
	switch kind {
	case "rpz-ip":
		if start == 0 {
			err = fmt.Errorf("%w: no prefix before rpz-ip", ErrPrefixLength)
		} else if ip, ok := octetText(rel[:start-1]); !ok {
			err = fmt.Errorf("%w: %q has a dot inside a label", ErrAddress, rel[:start-1])
		} else {
			t.Prefix, err = parseIPTrigger(ip)
		}
	case "rpz-nsdname":
		err = ErrNSDNAME
	case "rpz-nsip":
		err = ErrNSIP
	case "rpz-client-ip":
		err = ErrClientIP
	default:
		if strings.HasPrefix(kind, "rpz-") {
			err = fmt.Errorf("%w %s", ErrUnknownLabel, rel[start:])
			break
		}
		t.Name, t.Wildcard, err = qnameTrigger(rel)
	}
	if err != nil {
		bad(err)
		return
	}
	cname, ok := rr.(*dns.CNAME)
	if !ok {
		bad(fmt.Errorf("%w (%s record; the actions are CNAME ., *., rpz-passthru. and rpz-drop.)", ErrLocalData, dns.TypeToString[hdr.Rrtype]))
		return
	}
	target, relTarget := cname.Target, false
	if d.base != "" {
		target, relTarget = fromFile(target, ".") // a relative target is taken below the root, as it always was
	}
	if t.Action, err = action(target, rel); err == nil && relTarget && t.Action == Passthru {
		// BIND reads it below the zone: a CNAME to another name, which
		// rewrites the answer, never the passthru that lets it through
		// and beats every block of every list. Blocking targets written
		// so (rpz-drop, *) stay actions: they block either way.
		err = ErrRelativePassthru
	}
	if err != nil {
		bad(err)
		return
	}
	if doubt {
		if t.Action == Passthru {
			bad(ErrUnnamedZone)
			return
		}
		d.problem(Problem{Line: line, Owner: owner, Kept: true,
			Err: fmt.Errorf("%w; not skipped: read as written, a trigger for %s, so that it blocks", ErrUnnamedZone, triggerText(t))})
	}
	d.trigger(t)
}

// dnssecRecord reports whether a record of type rrtype (at the zone apex,
// apex) is one of a signed zone's DNSSEC records, which are the zone's
// own, as its apex SOA and NS are, and no policy: RRSIG and NSEC at any
// owner, NSEC3 at the hashed owners of its chain (RFC 4034, RFC 5155),
// and at the apex DNSKEY, NSEC3PARAM, CDS and CDNSKEY (RFC 7344), ZONEMD
// (RFC 8976), and the private type 65534 BIND keeps its signing state in
// (its default sig-signing-type), which a transfer from it carries. BIND
// applies a signed policy zone's triggers and passes over these records;
// so does record, silently. A DNSKEY or CDS below the apex is data, and
// stays local data.
func dnssecRecord(rrtype uint16, apex bool) bool {
	switch rrtype {
	case dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3:
		return true
	case dns.TypeDNSKEY, dns.TypeNSEC3PARAM, dns.TypeCDS, dns.TypeCDNSKEY, dns.TypeZONEMD, bindSigningType:
		return apex
	}
	return false
}

// bindSigningType is BIND's sig-signing-type by default: the private
// type (RFC 6895 §3.1's 65280-65534) of the records at a signed zone's
// apex that say which keys have signed it.
const bindSigningType = 65534

// triggerText is the name or prefix t triggers for, in text.
func triggerText(t Trigger) string {
	switch {
	case t.Prefix.IsValid():
		return t.Prefix.String()
	case t.Wildcard:
		return "the names below " + t.Name
	}
	return t.Name
}

// action reads the CNAME target of a trigger, compared as the octets it
// spells, as BIND compares it: `\*.` and `\042.` are `*.`, `rpz\-drop.`
// is `rpz-drop.` (a file's escapes are kept in target).
func action(target, rel string) (Action, error) {
	switch {
	case target == "":
		return 0, ErrNoTarget
	case isName(target, "."):
		return NXDOMAIN, nil
	case isName(target, "*."):
		return NODATA, nil
	case isName(target, "rpz-passthru."):
		return Passthru, nil
	case isName(target, "rpz-drop."):
		return Drop, nil
	case isName(target, "rpz-tcp-only."):
		return 0, ErrTCPOnly
	}
	if t := dns.CanonicalName(target); strings.HasPrefix(t, "rpz-") && dns.CountLabel(t) == 1 {
		return 0, fmt.Errorf("%w %s", ErrUnknownAction, target)
	}
	if dns.CanonicalName(target) == dns.CanonicalName(rel+".") {
		return 0, fmt.Errorf("%w (a CNAME to the trigger itself is the old passthru form: write rpz-passthru.): %s", ErrRewrite, target)
	}
	return 0, fmt.Errorf("%w (the actions are CNAME ., *., rpz-passthru. and rpz-drop.): %s", ErrRewrite, target)
}

// qnameTrigger splits a relative owner into the trigger name and whether
// it is a wildcard: its first label spells the one octet `*`, written
// `*`, `\*` or `\042`, as BIND reads each.
func qnameTrigger(rel string) (string, bool, error) {
	name, wildcard := rel, false
	first := rel[:firstLabelEnd(rel)]
	if first == rel && isStar(first) {
		return "", false, ErrWideWildcard
	}
	if isStar(first) {
		name, wildcard = rel[len(first)+1:], true
	}
	for end := len(name); end > 0; {
		start := presname.LabelStart(name, end)
		if isStar(name[start:end]) {
			return "", false, ErrWildcard
		}
		if start == 0 {
			break
		}
		end = start - 1
	}
	if wildcard && presname.LabelStart(name, len(name)) == 0 {
		return "", false, ErrWideWildcard
	}
	return name, wildcard, nil
}

// octetText is a presentation-form name (or part of one) with its escapes
// resolved, labels still separated by dots: `32.\049.2.0.192` is
// `32.1.2.0.192`. ok is false when an escape spells a dot, which the text
// could not tell from a separator. A name without escapes is itself.
func octetText(name string) (_ string, ok bool) {
	if strings.IndexByte(name, '\\') < 0 {
		return name, true
	}
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name); {
		c, n := presname.Octet(name, i)
		if c == '.' && n > 1 {
			return "", false
		}
		b = append(b, c)
		i += n
	}
	return string(b), true
}

// firstLabelEnd is where the first label of a presentation-form name
// ends: at its first dot not escaped, or at its end.
func firstLabelEnd(name string) int {
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '\\':
			i++ // the escaped byte; the digits of \DDD are no dots
		case '.':
			return i
		}
	}
	return len(name)
}

// isStar reports whether a label in presentation form spells the one
// octet `*`.
func isStar(label string) bool {
	if label == "" {
		return false
	}
	c, n := presname.Octet(label, 0)
	return c == '*' && n == len(label)
}

// endsInZone reports whether rel, an owner relative to the zone apex
// origin, ends in the apex's name (or is it): `tiktok.com.rpz.example.gov`
// in zone rpz.example.gov, an owner meant in full and written without its
// trailing dot, which BIND reads below the zone and so as a trigger no
// query meets, while dnsfence before 22f1d9b read it, in a file whose SOA
// comes first written in full, as the trigger for tiktok.com: the change
// of meaning is reported (ErrOriginTwice), not silent. It does not
// allocate (a transfer calls it for every record).
func endsInZone(rel, origin string) bool {
	if origin == "." || rel == "" {
		return false
	}
	z := origin[:len(origin)-1]
	if len(rel) == len(z) {
		return strings.EqualFold(rel, z)
	}
	cut := len(rel) - len(z) - 1
	return cut > 0 && rel[cut] == '.' && !presname.Escaped(rel, cut) && strings.EqualFold(rel[cut+1:], z)
}

// relative is owner without the apex origin (both fully qualified,
// presentation form), compared label by label as DNS compares names (the
// octets, escapes resolved, ASCII letters in any case); "" for the apex
// itself. It reports false for an owner outside the zone. It does not
// allocate: a transfer of a million records calls it a million times.
func relative(owner, origin string) (string, bool) {
	if !dns.IsFqdn(owner) || !dns.IsFqdn(origin) {
		return "", false
	}
	if origin == "." {
		if owner == "." {
			return "", true
		}
		return owner[:len(owner)-1], true
	}
	if owner == "." {
		return "", false
	}
	// The common case, an owner that ends in the origin as written, with
	// an unescaped dot before it: no label-by-label walk.
	if cut := len(owner) - len(origin) - 1; cut > 0 && owner[cut] == '.' && owner[cut+1:] == origin && !presname.Escaped(owner, cut) {
		return owner[:cut], true
	}
	o, r := owner[:len(owner)-1], origin[:len(origin)-1]
	for oe, re := len(o), len(r); ; {
		ostart, rstart := presname.LabelStart(o, oe), presname.LabelStart(r, re)
		if !sameLabel(o[ostart:oe], r[rstart:re]) {
			return "", false
		}
		switch {
		case rstart == 0 && ostart == 0:
			return "", true
		case rstart == 0:
			return o[:ostart-1], true
		case ostart == 0:
			return "", false
		}
		oe, re = ostart-1, rstart-1
	}
}

// isName reports whether the fully qualified name (presentation form) is
// name, compared as relative compares names.
func isName(target, name string) bool {
	rel, ok := relative(target, name)
	return ok && rel == ""
}

// sameLabel reports whether two labels in presentation form are the same
// octets, ASCII letters compared in any case (RFC 4343).
func sameLabel(a, b string) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, na := presname.Octet(a, i)
		cb, nb := presname.Octet(b, j)
		if presname.Lower(ca) != presname.Lower(cb) {
			return false
		}
		i, j = i+na, j+nb
	}
	return i == len(a) && j == len(b)
}
