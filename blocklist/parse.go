package blocklist

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"golang.org/x/net/idna"
)

// maxLine is the last line a list entry can be on (records keep 24 bits).
const maxLine = 1<<24 - 1

// maxReported bounds how many bad lines of one file are reported one by one;
// a file of binary junk must not turn into a million log lines.
const maxReported = 100

// ParseError is one bad line of a list or range file, or one skipped
// record of an RPZ zone. The line is skipped; the rest of the file still
// loads.
type ParseError struct {
	File string
	Line int    // 0 for a record of a zone transfer, which has no lines
	Text string // the offending token
	// Owner is the owner name of the RPZ record that was skipped; then
	// the error reads `file:line: owner: what is wrong`, or for a zone
	// transfer `name owner: what is wrong`.
	Owner string
	Err   error // what is wrong with it
	// Kept marks an RPZ record that was applied as read, not skipped: its
	// meaning is in doubt (rpz.ErrUnnamedZone), so it is reported.
	Kept bool
}

// Error is the report of the line, every URL in it with its user
// information hidden (RedactURLs): a reason may quote the line's data
// (an RPZ record's CNAME target), as Text does.
func (e *ParseError) Error() string {
	switch {
	case e.Owner == "":
		return RedactURLs(fmt.Sprintf("%s:%d: %v: %q", e.File, e.Line, e.Err, e.Text))
	case e.Line > 0:
		return RedactURLs(fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Owner, e.Err))
	}
	return RedactURLs(fmt.Sprintf("%s %s: %v", e.File, e.Owner, e.Err))
}

func (e *ParseError) Unwrap() error { return e.Err }

// Reasons a line is rejected. Tests and callers match them with errors.Is.
var (
	ErrEmptyLabel     = errors.New("empty label")
	ErrLongLabel      = errors.New("label longer than 63 octets")
	ErrLongName       = errors.New("name longer than 253 octets")
	ErrBadChar        = errors.New("invalid character in name")
	ErrSingleLabel    = errors.New("a single label would block a whole top-level domain")
	ErrWildcard       = errors.New("wildcards are only allowed as a leading \"*.\"")
	ErrAdblockOptions = errors.New("adblock options ($...) are not supported")
	ErrAdblockForm    = errors.New("adblock rules must have the form ||name^")
	ErrException      = errors.New("exception rules (@@) are not supported")
	ErrAddrOnly       = errors.New("an address alone is not a domain name")
	ErrBadAddr        = errors.New("invalid IP address")
	ErrTrailing       = errors.New("unexpected text after the entry")
	ErrIDNA           = errors.New("invalid internationalised name")
	ErrNotUTF8Name    = errors.New("a name that is not UTF-8 text (a Latin-1 or Windows-1252 letter?); save the list as UTF-8")
	ErrTooManyLines   = errors.New("list files end at line 16,777,215")
	ErrURL            = errors.New("a URL is not a list entry")
	ErrHostPart       = errors.New("a port, a path or a user is no part of a name")
	ErrRegex          = errors.New("regular expressions (/.../) are not supported (write the names they are meant to block)")
	ErrDirective      = errors.New("a dnsmasq or unbound directive is not a list entry")
	ErrZoneRecord     = errors.New("a DNS zone record is not a list entry (a Response Policy Zone is read from a file whose name ends in .rpz)")
	ErrCosmetic       = errors.New("an Adblock cosmetic rule (##, #@#, #$#, …) hides part of a web page and blocks no name")
	ErrGluedComment   = errors.New(`a "#" glued to a name starts no comment (in a line that is not a hosts line, a comment starts the line or follows white space)`)
	ErrGluedAddress   = errors.New("an address glued to a name")
	ErrLoneCR         = errors.New("a carriage return inside the line: lines that end in CR alone (as classic Mac OS saved them) are one line here; save the file with LF or CRLF line ends")
	// ErrInclude is an Adblock/AdGuard `!#include` directive: the names of
	// the file it names would not be in the list, so it is reported, not
	// skipped as the comment its "!" looks like.
	ErrInclude = errors.New(`"!#include" is not followed (name the included list in the policy itself)`)
	// ErrBracketLine is a line in brackets whole that is no list syntax's
	// header (headerLine): a JSON array pasted as a list, a name written as
	// an INI section, a name that starts like a header
	// (`[adguard.tiktok.com]`). Skipped as a header, its names were dropped without a
	// word, and a list of such lines loaded empty.
	ErrBracketLine = errors.New("a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …])")
)

// LineMeantError is a bad line for which one line can be meant, and its
// message offers it, as RangeMeantError does for a client range: Err says
// what is wrong (errors.Is finds ErrGluedAddress, ErrHostPart, ErrURL,
// ErrGluedComment, ErrDirective, ErrException, ErrBracketLine or
// ErrAddrOnly), Meant is the line to write, one a list of its kind takes
// (a policy zone's record for ErrAddrOnly, an owner name for a policy
// zone's ErrHostPart), and Name or Prefix what that line blocks. Its
// message is the one the line always had.
type LineMeantError struct {
	Err   error
	Meant string
	// Name is the name, in stored form, that Meant blocks with the names
	// below it (below it alone for an owner `*.name`); "" for ErrAddrOnly.
	Name string
	// Prefix is, for ErrAddrOnly, the address whose answers Meant, a
	// response-IP trigger, blocks.
	Prefix netip.Prefix
	// Allow marks Meant as a line of a list under a policy's allow (an
	// exception rule's), where it lets Name through.
	Allow bool
	msg   string
}

func (e *LineMeantError) Error() string { return e.msg }

func (e *LineMeantError) Unwrap() error { return e.Err }

// hostsNames are the standard entries of a hosts file; a hosts-format list
// copied from /etc/hosts carries them and they are skipped silently: those
// of StevenBlack's hosts and Debian's, and Red Hat's (Fedora, RHEL, Amazon
// Linux: `127.0.0.1 localhost localhost.localdomain localhost4
// localhost4.localdomain4`, and the same with 6 on `::1`).
var hostsNames = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "local": true,
	"broadcasthost": true, "ip6-localhost": true, "ip6-loopback": true,
	"ip6-localnet": true, "ip6-mcastprefix": true, "ip6-allnodes": true,
	"ip6-allrouters": true, "ip6-allhosts": true, "0.0.0.0": true,
	"localhost4": true, "localhost4.localdomain4": true,
	"localhost6": true, "localhost6.localdomain6": true,
}

// Parse builds a List from file content. name is how errors and matches
// refer to the file. Every accepted form means "this domain and every name
// below it": `example.com`, `*.example.com`, `.example.com`, hosts lines
// (`0.0.0.0 a.example b.example`) and Adblock rules (`||example.com^`,
// with `$important` or `^|`, and `||*.example.com^`; see stripForm).
// The file may start with a byte-order mark and use CRLF line ends (see
// Lines).
//
// A name ending in `.rpz` (any case) is read as a Response Policy Zone
// instead: see FromZone and package rpz.
func Parse(name string, data []byte) (*List, error) {
	if isRPZ(name) {
		return parseRPZ(name, data)
	}
	p := newTextParser(name, data)
	p.parse(unsafe.String(unsafe.SliceData(data), len(data)), 1)
	l := p.b.finish(sha256.Sum256(data), p.errs.err())
	return l, l.warn
}

// textParser reads the lines of a list file into a List, the whole file
// at once (Parse) or a piece of whole lines after another (readText).
type textParser struct {
	name string
	b    *builder
	errs errorList
	buf  [maxName + 2]byte
}

// newTextParser starts a list sized for the lines of data: about an
// entry a line, and the file less its line ends as room for the labels.
// The labels the list keeps are octets of the file's lines (but for the
// punycode of a Unicode name, which can be longer), so that room holds
// them all: they are written once and not copied again and again as the
// room grows, and what is never written of it is never touched. finish
// trims what is left over.
func newTextParser(name string, data []byte) *textParser {
	newlines := bytes.Count(data, []byte{'\n'})
	b := newBuilder(name, newlines+1)
	b.labels.Grow(len(data) - newlines)
	return &textParser{name: name, b: b}
}

// parse reads the lines of data, whole lines numbered from first, and
// returns the number of the line after them. data is read in place: every
// entry is copied into the list and every error text is cloned.
func (p *textParser) parse(data string, first int) int {
	next := first
	for line, text := range linesFrom(data, first) {
		next = line + 1
		// Most lines of most lists are a name alone or a hosts line of
		// one name: plainEntry reads them in one pass, and leaves every
		// other line to the general way.
		if line <= maxLine {
			if n, ok := plainEntry(text, p.buf[:0]); ok {
				p.b.addLater(n, line)
				continue
			}
		}
		if directive := strings.TrimSpace(text); strings.HasPrefix(directive, "!#include") {
			p.errs.add(p.name, line, directive, ErrInclude)
			continue
		}
		if text, ok := lineContent(text); ok {
			p.parseLine(line, text)
		}
	}
	return next
}

// parseLine reads a line the general way, as lineContent hands it over:
// every form, every error.
func (p *textParser) parseLine(line int, text string) {
	name, b, errs := p.name, p.b, &p.errs
	if line > maxLine {
		errs.add(name, line, "", ErrTooManyLines)
		return
	}
	first, rest := nextField(text)
	if strings.IndexByte(first, ':') >= 0 && strings.Contains(first, "://") {
		errs.add(name, line, first, urlEntry(first))
		return
	}
	// An address spelled with characters no reader tells from its ASCII
	// (a zero-width space, full-width digits: addressText) is that
	// address, as the names beside it are read so spelled.
	if addr := addressText(first); looksLikeAddr(addr) { // checked first: ParseAddr allocates its error
		a, err := netip.ParseAddr(addr)
		if err != nil {
			errs.add(name, line, first, ErrBadAddr)
			return
		}
		if rest == "" {
			errs.add(name, line, first, addrOnly(a))
			return
		}
		// hosts line: every further field is a name, up to a `#`, which
		// starts a comment there even glued to a name (hosts(5); glibc
		// cuts the line at its first `#`): `0.0.0.0 tiktok.com#ads`
		// blocks tiktok.com, as the system reading that hosts file would.
		for rest != "" {
			var host string
			host, rest = nextField(rest)
			if i := strings.IndexByte(host, '#'); i >= 0 {
				host, rest = host[:i], ""
				if host == "" {
					break
				}
			}
			if hostsNames[strings.ToLower(host)] {
				continue
			}
			if i := strings.IndexByte(host, '\r'); i >= 0 {
				if i > 0 {
					host = host[:i]
				} // else a field the CR opens (white space before it), quoted whole: "\r0.0.0.0"
				errs.add(name, line, host, ErrLoneCR)
				continue
			}
			var n []byte
			bare, err := bareName(host)
			if err == nil {
				n, err = entryName(bare, p.buf[:0])
			}
			if err != nil {
				errs.add(name, line, host, err) // the field as written
			} else {
				b.addLater(n, line)
			}
		}
		return
	}
	if rest != "" {
		p.bad(line, text, first, rest, rest, ErrTrailing)
		return
	}
	entry, err := stripForm(first)
	if err == nil {
		var n []byte
		if n, err = entryName(entry, p.buf[:0]); err == nil {
			b.addLater(n, line)
			return
		}
	}
	p.bad(line, text, first, rest, first, err)
}

// bareName is the name of an entry written without adblock decoration,
// alone on its line or as a hosts line's field, which may carry a leading
// `*.` or `.`, meaning the same as the name without it (this name and
// the names below it, as every entry means): `0.0.0.0 *.tiktok.com`, as
// Blocky's hostsFile users and some hosts lists write it, blocks what
// `*.tiktok.com` alone does, not nothing. Any other wildcard is an error.
func bareName(field string) (string, error) {
	name := field
	if rest, ok := strings.CutPrefix(field, "*."); ok {
		name = rest
	} else if rest, ok := strings.CutPrefix(field, "."); ok {
		name = rest
	}
	if strings.Contains(name, "*") {
		return "", ErrWildcard
	}
	return name, nil
}

// bad reports the line text (first its first field, rest the others),
// which is no entry, as token and err say, or, when it is another
// program's syntax, as that (otherSyntax): asked only of a bad line, so
// that the lines that are entries pay nothing for it.
func (p *textParser) bad(line int, text, first, rest, token string, err error) {
	if i := strings.IndexByte(text, '\r'); i >= 0 {
		token, err = text[:i], ErrLoneCR
	} else if other := otherSyntax(text, first, rest); other != nil {
		token, err = text, other
	}
	p.errs.add(p.name, line, token, err)
}

// entryName is the stored form of a name of a line (normalizeEntry),
// appended to dst, or what is wrong with it. A name of digits and dots alone is
// an address, however it is written (`||10.0.0.1^`, `*.10.0.0.1`, the
// names of a hosts line, full-width digits), as a line of an address
// alone is (ErrAddrOnly, or ErrBadAddr for digits that are no address):
// no query is for such a name, so the entry would block nothing while the
// line meant to block the address, and, counted as an entry, it would let
// a file of nothing but addresses load as a list. An IPv6 address there
// (`||2001:db8::1^`, `0.0.0.0 ::1`), which no name can be, is named as
// one too, not as an invalid character.
func entryName(s string, dst []byte) ([]byte, error) {
	if addr, name, ok := gluedAddress(s); ok {
		// The line meant is offered only when it is one a list takes.
		n, err := entryName(name, nil)
		if err != nil {
			return nil, fmt.Errorf("%w (a hosts line without white space after its address), and %q: %w", ErrGluedAddress, name, err)
		}
		if hostsNames[strings.ToLower(name)] {
			// `127.0.0.1localhost.localdomain`: the line meant is a
			// hosts file's standard entry, which a list skips; offered,
			// it would block nothing.
			return nil, fmt.Errorf("%w (a hosts line without white space after its address, its name %s a standard entry of a hosts file, which a list skips)", ErrGluedAddress, name)
		}
		return nil, &LineMeantError{Err: ErrGluedAddress, Meant: addr + " " + name, Name: string(n),
			msg: fmt.Sprintf(`%v (a hosts line without white space after its address; write "%s %s")`, ErrGluedAddress, addr, name)}
	}
	n, err := normalizeEntry(s, dst)
	if err != nil {
		if a, aerr := netip.ParseAddr(s); aerr == nil {
			return nil, addrOnly(a)
		}
		return nil, withHostMeant("", s, err)
	}
	if name := unsafe.String(unsafe.SliceData(n), len(n)); hasNonDigit(name) {
		if '0' <= n[0] && n[0] <= '9' && glued(name) {
			// Glued only as read: `0.0.0.0\u200btiktok.com`,
			// `０.０.０.０tiktok.com` (a zero-width space, full-width
			// digits: IDNA maps them away, as addressText does for an
			// address). Reported as the glued name it reads as.
			return entryName(string(n), nil)
		}
		return n, nil
	}
	if a, err := netip.ParseAddr(string(n)); err == nil {
		return nil, addrOnly(a)
	}
	return nil, ErrBadAddr
}

// withHostMeant is err, why the name s is refused, unless s is a name
// written with a port, a path or a user (`tiktok.com:443`,
// `tiktok.com/@user`, `user@tiktok.com`: HostMeant) whose name alone is an
// entry: then ErrHostPart, naming that entry after prefix (a policy
// zone's wildcard trigger's `*.`).
func withHostMeant(prefix, s string, err error) error {
	if host, _ := HostMeant(s); host != "" {
		if n, herr := entryName(host, nil); herr == nil {
			return &LineMeantError{Err: ErrHostPart, Meant: prefix + string(n), Name: string(n),
				msg: fmt.Sprintf("%v (write the name alone: %s%s)", ErrHostPart, prefix, n)}
		}
	}
	return err
}

// addrOnly is ErrAddrOnly, wrapped, for an address a written where a name
// belongs. A list blocks names, so the line blocks nothing; Blocky reads
// an address in a denylist as "block every answer that holds it", and what
// does that here is a policy zone's Response IP Address trigger
// (draft-vixie-dnsop-dns-rpz), which the error names for a as a /32 or
// /128 (`32.1.0.0.10.rpz-ip`), a's zone dropped and an IPv4-mapped a read
// as IPv4, as a policy zone matches an answer's addresses. So is an
// IPv4-compatible a (`::10.0.0.1`, `::a00:1`; not ::1 or ::), as a client
// range written so is (ParsePrefix): its own trigger, for the deprecated
// IPv6 address, meets no A record, only an AAAA that holds it.
func addrOnly(a netip.Addr) error {
	a = a.WithZone("").Unmap()
	if inCompatible(a) && a != netip.IPv6Loopback() && a != netip.IPv6Unspecified() {
		a = netip.AddrFrom4([4]byte(a.AsSlice()[12:]))
	}
	p := netip.PrefixFrom(a, a.BitLen())
	return &LineMeantError{Err: ErrAddrOnly, Meant: rpz.IPTrigger(p) + " CNAME .", Prefix: p,
		msg: fmt.Sprintf(`%v (to block the answers that hold %s, as Blocky reads an address in a denylist, write "%s CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through)`,
			ErrAddrOnly, a, rpz.IPTrigger(p))}
}

// plainEntry is the stored form of the name of a line that is a name
// alone or a hosts line of one name, in ASCII, in any case, with or
// without a trailing dot (`tiktok.com`, `WWW.Example.com.`,
// `0.0.0.0 tiktok.com`); false for any other line, which Parse then
// reads the general way. Those lines are most lines of most lists, and
// every step of the general way but normalizeEntry returns them as they
// are: they have no comment, URL, decoration or wildcard, no white space
// but the one after a hosts line's address (lineContent, nextField,
// stripForm), and their name is not all digits and dots (looksLikeAddr for
// a name alone, entryName for a hosts line's). What is left is
// normalizeEntry, which plainName does in one pass.
func plainEntry(text string, dst []byte) ([]byte, bool) {
	name, hosts := cutHostsAddr(text)
	n, ok := plainName(name, dst)
	switch {
	case !ok:
		return nil, false
	case hosts && hostsNames[string(n[len(dst):])]:
		return nil, false // skipped, the general way (which looks it up as written)
	case !hasNonDigit(name):
		return nil, false // all digits and dots: an address, which the general way reports
	case '0' <= name[0] && name[0] <= '9':
		if _, _, glued := gluedAddress(name); glued {
			return nil, false // an address glued to a name, which the general way reports
		}
	}
	return n, true
}

// gluedAddress reads s, a list entry, as a hosts line that lost the white
// space after its address: an IPv4 address in dotted-decimal form with a
// name glued to it, `0.0.0.0stratum.wemineftc.com`, as hundreds of lines
// of a threat list once were (hagezi/dns-blocklists issue 1508). Read as a
// name, no device asks for it, and the name meant is blocked nowhere. A
// name whose labels after four of digits go on after a dot
// (`0.0.0.0.example.org`, `10.0.0.1.nip.io`) is a name, and so is one
// whose fourth label has more than three digits or goes on with a hyphen
// or an underscore (`192.0.2.1-tiktok.com`: a lost space leaves no name
// starting so). What follows must start a name, a letter: an address
// followed by `/8` (a client range in a list), `#`, `,` or `@` is none,
// and is reported as what it is, not with a line to write that is no
// better.
func gluedAddress(s string) (addr, name string, ok bool) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 || strings.Count(s[:i], ".") != 3 { // checked first: ParseAddr allocates its error
		return "", "", false
	}
	if r, _ := utf8.DecodeRuneInString(s[i:]); !unicode.IsLetter(r) {
		return "", "", false
	}
	if a, err := netip.ParseAddr(s[:i]); err != nil || !a.Is4() {
		return "", "", false
	}
	return s[:i], s[i:], true
}

// glued reports whether s is an address glued to a name (gluedAddress).
func glued(s string) bool {
	_, _, ok := gluedAddress(s)
	return ok
}

// cutHostsAddr removes the address of a hosts line that starts with one
// of the two that hosts-format lists use, and one space after it.
func cutHostsAddr(text string) (string, bool) {
	if name, ok := strings.CutPrefix(text, "0.0.0.0 "); ok {
		return name, true
	}
	return strings.CutPrefix(text, "127.0.0.1 ")
}

// hasNonDigit reports whether s has an octet other than a digit or a dot,
// so that looksLikeAddr does not take it for an address (s has no colon).
// It reads s from the end, where the letters of the top-level domain
// usually answer at once.
func hasNonDigit(s string) bool {
	for i := len(s) - 1; i >= 0; i-- {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return true
		}
	}
	return false
}

// plainName is normalizeEntry for a name in ASCII that it accepts, which
// is what nearly every entry is, reading the name once: it appends the
// stored form to dst. For anything else (Unicode to convert, an octet,
// label or length normalizeEntry refuses) it reports false and writes
// nothing that counts, and normalizeEntry's general way, normalizeAny,
// converts the name or says what is wrong with it.
func plainName(s string, dst []byte) ([]byte, bool) {
	s = strings.TrimSuffix(s, ".")
	if len(s) > maxName || s == "" {
		return nil, false
	}
	// The octets are read without a branch on any, their kinds gathered:
	// a loop that stops at each dot costs more than this one, which
	// counts the dots and notes two in a row.
	// (dots can wrap around only past 255 dots, and so past two in a
	// row, which twoDots catches.)
	var kinds, dots, twoDots, last byte
	for i := 0; i < len(s); i++ {
		k := octetKind[s[i]]
		kinds |= k
		dots += k & kindDot
		twoDots |= k & last
		last = k
	}
	switch {
	case kinds&kindNotEntry != 0:
		return nil, false // an octet no entry has
	case twoDots&kindDot != 0, s[0] == '.', s[len(s)-1] == '.':
		return nil, false // an empty label
	case dots == 0:
		return nil, false // a single label
	case len(s) > maxLabel && !labelsFit(s):
		return nil, false // a long label (only a name that long can have one)
	}
	// Written whole, not an octet at a time: most names are lowercase
	// already, and a store an octet would be many more stores.
	off := len(dst)
	dst = append(dst, s...)
	if kinds&kindUpper != 0 {
		for i := off; i < len(dst); i++ {
			dst[i] = presname.Lower(dst[i])
		}
	}
	return dst, true
}

// labelsFit reports whether every label of s is at most 63 octets long.
func labelsFit(s string) bool {
	for s != "" {
		n := strings.IndexByte(s, '.')
		if n < 0 {
			n = len(s)
		}
		if n > maxLabel {
			return false
		}
		s = s[min(n+1, len(s)):]
	}
	return true
}

// The kinds of octets in the names plainName reads (octetKind).
const (
	kindDot      = 1 << iota // a dot; the lowest bit, for plainName to count them
	kindUpper                // an upper-case letter, which is stored lowered
	kindNotEntry             // an octet that no entry has (entryOctet), in either case
)

// octetKind is the kind of each octet, 0 for those an entry stores as
// they are.
var octetKind = func() (t [256]byte) {
	for c := range t {
		switch lc := presname.Lower(byte(c)); {
		case c == '.':
			t[c] = kindDot
		case !entryOctet[lc]:
			t[c] = kindNotEntry
		case lc != byte(c):
			t[c] = kindUpper
		}
	}
	return t
}()

// urlEntry says what to write instead of a URL: the name of the site it
// points at, or, for a list published at a URL, to name the URL in the
// policy itself (its block or allow), where dnsfence fetches and polls it
// (DESIGN.md §9).
func urlEntry(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("%w (write the name alone, e.g. tiktok.com)", ErrURL)
	}
	if last := path.Base("/" + u.Path); last != "/" && (strings.Contains(last, ".") || last == "hosts") {
		return fmt.Errorf("%w (to use the list published there, name its URL in the policy's block or allow, as a list file is named there, not in a list)", ErrURL)
	}
	if _, err := netip.ParseAddr(u.Hostname()); err == nil {
		return fmt.Errorf("%w (and lists hold names, not addresses)", ErrURL)
	}
	if n, err := entryName(u.Hostname(), nil); err == nil {
		return &LineMeantError{Err: ErrURL, Meant: u.Hostname(), Name: string(n),
			msg: fmt.Sprintf("%v (write the name alone: %s)", ErrURL, u.Hostname())}
	}
	return fmt.Errorf("%w (write the name alone, e.g. tiktok.com)", ErrURL)
}

// otherSyntax says what a line (text, as lineContent gives it; first its
// first field, rest the others) of another program's syntax is: a line in
// brackets whole that is no header (bracketLine), an Adblock or Blocky regular expression
// (`/^ads?\./`, `/ads/$important`), a name with a comment glued to it
// (`tiktok.com#ads`, as hosts(5) writes one), a zone file's record (a policy zone
// in a file not named *.rpz), an Adblock cosmetic rule
// (`tiktok.com##.banner`, `tiktok.com#$#body { }`), or a dnsmasq (`address=/a.com/0.0.0.0`,
// `server=/a.com/`) or unbound (`local-zone: "a.com" always_nxdomain`)
// directive, which names the name to write instead. Read as names, their
// reason would be beside the point (`invalid IP address: "local-zone:"`,
// `wildcards are only allowed as a leading "*."` for a regular
// expression's `*`). nil for any other line.
func otherSyntax(text, first, rest string) error {
	if err := bracketLine(text); err != nil {
		return err
	}
	if len(text) > 1 && text[0] == '/' && (text[len(text)-1] == '/' || strings.Contains(text, "/$")) {
		return ErrRegex
	}
	if i := strings.IndexByte(first, '#'); i > 0 {
		if strings.IndexByte(first[i+1:], '#') >= 0 {
			return ErrCosmetic
		}
		// `tiktok.com#ads`: hosts(5) and Blocky read a comment there,
		// which a list line here is not (a cosmetic rule, `name##…`,
		// must not read as name); say so, and what to write.
		entry, err := stripForm(first[:i])
		if e, ok := errors.AsType[*LineMeantError](err); ok && e.Err == ErrException {
			// `@@||tiktok.com^#ads`: the exception's own hint, the `#`
			// read as the comment it was meant as.
			return e
		}
		if err == nil {
			n, err := entryName(entry, nil)
			if e, ok := errors.AsType[*LineMeantError](err); ok && e.Err == ErrGluedAddress {
				// `0.0.0.0tiktok.com#ads`: the line meant is the hosts
				// line, where the `#` starts a comment, glued or not.
				return e
			}
			if err == nil {
				return &LineMeantError{Err: ErrGluedComment, Meant: string(n), Name: string(n),
					msg: fmt.Sprintf("%v (to block %s and the names below it, write %s, then white space before the #)", ErrGluedComment, n, n)}
			}
		}
	}
	if head, names, ok := strings.Cut(first, "=/"); ok {
		switch head {
		case "address", "server", "local", "ipset", "nftset":
			domain, _, _ := strings.Cut(names, "/")
			return directiveError(domain)
		}
	}
	switch first {
	case "local-zone:", "local-data:", "server:":
		domain, _ := nextField(rest)
		domain, _ = nextField(strings.ReplaceAll(domain, `"`, " "))
		return directiveError(domain)
	}
	if zoneRecord(first, rest) {
		return ErrZoneRecord
	}
	return nil
}

// zoneRecord reports a line of a zone file (RFC 1035 §5.1): a `$TTL`,
// `$ORIGIN` or `$INCLUDE` directive, or a record, its owner first, then an
// optional TTL and class, then a type a policy zone has (`*.tiktok.com
// CNAME .`, `tiktok.com 300 IN CNAME rpz-passthru.`).
func zoneRecord(first, rest string) bool {
	switch strings.ToUpper(first) {
	case "$TTL", "$ORIGIN", "$INCLUDE":
		return true
	}
	field, rest := nextField(rest)
	if field != "" && !hasNonDigit(field) {
		field, rest = nextField(rest) // the TTL
	}
	if strings.EqualFold(field, "IN") {
		field, _ = nextField(rest)
	}
	switch strings.ToUpper(field) {
	case "SOA", "NS", "CNAME", "DNAME", "A", "AAAA", "TXT", "PTR", "MX", "SVCB", "HTTPS":
		return true
	}
	return false
}

// directiveError is ErrDirective naming the entry to write instead, should
// the directive be meant to block: one may forward or rewrite its name
// instead (`server=/a.com/10.0.0.53`, `local-zone: "a.com" transparent`).
// Only a name a list takes is named, in the form it stores: a directive's
// domain may be a single label (`local=/lan/`), dnsmasq's `#` (every
// domain), an address's reverse zone or no name at all, and writing it
// would be a bad line again.
func directiveError(domain string) error {
	n, err := entryName(domain, nil)
	if err != nil {
		return ErrDirective
	}
	return &LineMeantError{Err: ErrDirective, Meant: string(n), Name: string(n),
		msg: fmt.Sprintf("%v (to block %s and the names below it, write %s)", ErrDirective, n, n)}
}

// onlyImportant reports options, a rule's text after its `$`, that are
// `important` alone, as AdGuard reads them: in any case, and repeated or
// with an empty option beside it (`$IMPORTANT`, `$important,`), which
// AdGuard's rule engine blocks on as on `$important`.
func onlyImportant(options string) bool {
	important := false
	for opt := range strings.SplitSeq(options, ",") {
		switch {
		case strings.EqualFold(opt, "important"):
			important = true
		case opt != "":
			return false
		}
	}
	return important
}

// stripForm removes the decoration of the accepted entry forms.
func stripForm(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "@@"):
		// An exception rule allows what its rule would block. Where a name
		// is allowed is the policy's allow key, not a line: the same file
		// may be a block list elsewhere, where reading it would block.
		// The rule is read once, not again for each further `@@`: a line
		// of `@` alone would recurse once for every two of its octets,
		// and a list's line has no bound but the file's (a URL's copy up
		// to sources.max_bytes).
		if strings.HasPrefix(s[2:], "@@") {
			return "", ErrException
		}
		if name, err := stripForm(s[2:]); err == nil {
			// A name of digits and dots is an address (entryName), which
			// an allow list refuses as a block list does: no hint then.
			n, err := entryName(name, nil)
			if e, ok := errors.AsType[*LineMeantError](err); ok && e.Err == ErrHostPart {
				// `@@||tiktok.com:443^`: the name alone is meant, as it
				// is for the rule without the `@@`.
				n, err = []byte(e.Name), nil
			}
			if err == nil {
				return "", &LineMeantError{Err: ErrException, Meant: string(n), Name: string(n), Allow: true,
					msg: fmt.Sprintf("%v (to allow %s and the names below it, write %s in a list under a policy's allow, unless an $important rule of this list covers it, which ranks above the exception)", ErrException, n, n)}
			}
		}
		return "", ErrException
	case strings.HasPrefix(s, "||"):
		s = s[2:]
		if i := strings.IndexByte(s, '$'); i >= 0 {
			// $important ranks a rule above exception rules (AdGuard DNS
			// filtering syntax), which a list here has none of: the rule
			// blocks what it blocks without it. Every other option
			// narrows, widens or turns the rule (client, dnstype,
			// denyallow, badfilter, dnsrewrite) or is not for DNS.
			if !onlyImportant(s[i+1:]) {
				return "", ErrAdblockOptions
			}
			s = s[:i]
		}
		// `^|`: the address ends there, as it does after `^` closing a name.
		s = strings.TrimSuffix(s, "|")
		if !strings.HasSuffix(s, "^") || strings.Count(s, "^") != 1 {
			return "", ErrAdblockForm
		}
		// `||*.name^` is the names below name: read as `*.name` is.
		s = strings.TrimPrefix(s[:len(s)-1], "*.")
	case strings.HasPrefix(s, "|"), strings.HasSuffix(s, "^"):
		// `|name^` (that name alone) and `name^` (any name ending in it,
		// `xname` too) are not this or the names below it.
		return "", ErrAdblockForm
	default:
		return bareName(s)
	}
	if strings.Contains(s, "*") {
		return "", ErrWildcard
	}
	return s, nil
}

// NormalizeName turns a name as a user or a list writes it (any case,
// Unicode, optional trailing dot) into the form lists store: lowercase ASCII
// (punycode), no trailing dot.
func NormalizeName(s string) (string, error) {
	var buf [maxName + 2]byte
	n, err := normalizeEntry(s, buf[:0])
	if err != nil {
		return "", err
	}
	return string(n), nil
}

// ToASCII converts a name written in Unicode (`bücher.example`) to the
// ASCII form DNS carries and lists store (`xn--bcher-kva.example`): each
// label mapped and checked by the UTS #46 lookup profile of IDNA2008
// (golang.org/x/net/idna Lookup) and written in punycode (RFC 3492). List
// entries are converted with it, and so is every name a person types
// (explain), so that both meet. A name that is ASCII already is returned
// as it is; a trailing dot is kept. An invalid name returns an error
// wrapping ErrIDNA.
func ToASCII(name string) (string, error) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			if !utf8.ValidString(name) {
				// idna would map the byte to U+FFFD and return the
				// punycode of that: an entry no one meant.
				return "", ErrNotUTF8Name
			}
			root := strings.HasSuffix(name, ".")
			a, err := idna.Lookup.ToASCII(strings.TrimSuffix(name, "."))
			if err != nil {
				return "", fmt.Errorf("%w: %v", ErrIDNA, err)
			}
			if root {
				a += "."
			}
			return a, nil
		}
	}
	return name, nil
}

// normalizeEntry validates a domain name and writes its stored form to dst.
func normalizeEntry(s string, dst []byte) ([]byte, error) {
	if n, ok := plainName(s, dst); ok {
		return n, nil
	}
	return normalizeAny(s, dst)
}

// normalizeAny is normalizeEntry's general way, for a name plainName
// does not take: it converts Unicode names (ToASCII) and says what is
// wrong with a name it refuses.
func normalizeAny(s string, dst []byte) ([]byte, error) {
	s, err := ToASCII(strings.TrimSuffix(s, "."))
	if err != nil {
		return nil, err
	}
	if len(s) > maxName {
		return nil, ErrLongName
	}
	labels, labelLen := 1, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if labelLen == 0 {
				return nil, ErrEmptyLabel
			}
			labels++
			labelLen = 0
		case entryOctet[presname.Lower(c)]:
			// The octets Match can find (entryOctet): one table for both.
			c = presname.Lower(c)
			labelLen++
		default:
			return nil, ErrBadChar
		}
		if labelLen > maxLabel {
			return nil, ErrLongLabel
		}
		dst = append(dst, c)
	}
	if labelLen == 0 {
		return nil, ErrEmptyLabel
	}
	if labels < 2 {
		return nil, ErrSingleLabel
	}
	return dst, nil
}

// lineContent is the content of a list file's line as the general way
// reads it (parseLine): without surrounding white space and comments;
// false for a blank or comment line. Besides `#` comments (commentless),
// lines starting with `!` are Adblock comments, and a list syntax's
// header (headerLine: `[Adblock Plus 2.0]`, a comment after it or not)
// is skipped. Any other line that starts with `[` is read, and reported,
// as the general way reads it: `[*.]tiktok.com` (Chrome's pattern for a
// site and the names below it), `["tiktok.com", "bytedance.com"]` (a
// JSON array), `[tiktok.com]` and `[adguard.tiktok.com]` were meant to
// block, and skipped like a header they blocked nothing and nobody was
// told. A client range file has no such lines: ParseRanges reads with
// commentless alone.
func lineContent(text string) (string, bool) {
	text = strings.TrimSpace(text)
	if text != "" && text[0] == '!' {
		return "", false
	}
	text, ok := commentless(text)
	if ok && headerLine(text) {
		return "", false
	}
	return text, ok
}

// headerLine reports a line in brackets whole (without its comment) that
// names the list syntax of the file, as Adblock Plus (`[Adblock Plus
// 2.0]`, `[Adblock]`), AdGuard (`[AdGuard]`, `[Adblock Plus 2.0;
// AdGuard]`) and uBlock Origin (`[uBlock Origin]`) write their first
// line, in any case: what the filter engines of those programs skip as a
// header (uBlock Origin skips any line starting `[adblock`). A line that
// starts so but holds a name a list takes (bracketName:
// `[adguard.tiktok.com]`, `[AdBlock tiktok.com]`; or holdsName, whatever
// is around it: `[adblock:tiktok.com]`, `[AdGuard @@||tiktok.com^]`,
// `[AdGuard ||tiktok.com^$client=10.0.0.1]`) is no header: skipped, that
// name was blocked nowhere and nobody was told. Any other line in
// brackets is no header either (bracketLine says what it is).
func headerLine(text string) bool {
	inner, ok := inBrackets(text)
	if !ok {
		return false
	}
	inner = strings.TrimSpace(inner)
	for _, syntax := range [...]string{"adblock", "adguard", "ublock"} {
		if len(inner) >= len(syntax) && strings.EqualFold(inner[:len(syntax)], syntax) {
			_, named := bracketName(inner)
			return !named && !holdsName(inner)
		}
	}
	return false
}

// holdsName reports whether s holds a name a list would take (entryName)
// anywhere, whatever separates it from the rest: a run of the characters
// a name is written with (nameRune), its leading dots left out.
// bracketName reads fields as entries (`||douyin.com^`), this the names
// in any other text around them: a rule that is no entry
// (`@@||tiktok.com^`, `||tiktok.com^$client=…`), a name after a colon or
// a bar.
func holdsName(s string) bool {
	isSep := func(r rune) bool { return !nameRune(r) }
	for run := range strings.FieldsFuncSeq(s, isSep) {
		if n, err := entryName(strings.TrimLeft(run, "."), nil); err == nil && !numericTLD(n) {
			return true
		}
	}
	return false
}

// nameRune reports whether a name can be written with r: an ASCII
// letter, digit, `-`, `_` or dot; or a character IDNA's UTS #46 lookup
// (ToASCII) takes as a label of its own (a combining mark after a
// letter, as it stands in a name: alone, it is no label) that is a
// Unicode letter, digit or mark, or that it maps to those alone: the
// full stops it reads as a dot (`。`, `．`, `｡`), the symbols it reads
// as letters (`ⓣ`, `🄰`, `™`, `㎏`), or nothing (a soft hyphen, a
// zero-width space: entryName reads `tiktok­.com` as tiktok.com, so it
// splits no name). Alone, not after a Latin letter: a right-to-left
// letter after one breaks the Bidi rule (RFC 5893) and would be refused.
// A character IDNA refuses (`⒈`, `⑴`: digits it reads as "1." and "(1)"
// outside names only) or keeps as a symbol (`—`, `✓`) is no name's
// character.
func nameRune(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '.' || entryOctet[presname.Lower(byte(r))]
	}
	probe, lead := string(r), 0
	if unicode.IsMark(r) {
		probe, lead = "a"+probe, 1
	}
	a, err := idna.Lookup.ToASCII(probe)
	switch {
	case err != nil:
		return false
	case unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r):
		return true
	case strings.HasPrefix(a, "xn--"):
		return false
	}
	for i := lead; i < len(a); i++ {
		if a[i] != '.' && !entryOctet[presname.Lower(a[i])] {
			return false
		}
	}
	return true
}

// inBrackets is what is inside text, a line in brackets whole; false for
// any other line.
func inBrackets(text string) (string, bool) {
	if len(text) < 2 || text[0] != '[' || text[len(text)-1] != ']' {
		return "", false
	}
	return text[1 : len(text)-1], true
}

// bracketName is the stored form of the first name a list would take
// among the fields of inner, what is inside a line in brackets (its
// fields apart by white space, quotes, commas, semicolons and brackets,
// each read as a line of one field is: `"tiktok.com",`, `||douyin.com^`);
// false when no field is one (`Adblock Plus 2.0`: a single label and a
// version are no names).
func bracketName(inner string) ([]byte, bool) {
	inner = strings.Map(func(r rune) rune {
		switch r {
		case '"', '\'', ',', ';', '[', ']':
			return ' '
		}
		return r
	}, inner)
	for field := range strings.FieldsSeq(inner) {
		entry, err := stripForm(field)
		if err != nil {
			continue
		}
		if n, err := entryName(entry, nil); err == nil && !numericTLD(n) {
			return n, true
		}
	}
	return nil, false
}

// numericTLD reports whether the last label of n, a name in stored form,
// is digits alone: no top-level domain is (RFC 3696 §2), and in a line
// in brackets such a "name" is a version (`[AdGuard v1.0]`, `[uBlock
// Origin v1.2.3]`), not one the line means to block.
func numericTLD(n []byte) bool {
	last := n[bytes.LastIndexByte(n, '.')+1:]
	return len(last) > 0 && !slices.ContainsFunc(last, func(c byte) bool { return c < '0' || c > '9' })
}

// bracketLine is ErrBracketLine for text, a line in brackets whole that
// is no header, naming the first name in it a list would take, should
// there be one (bracketName: `["tiktok.com", "x.com"]`, `[tiktok.com]`,
// `[0.0.0.0 tiktok.com]`); nil for a line not in brackets whole.
func bracketLine(text string) error {
	inner, ok := inBrackets(text)
	if !ok {
		return nil
	}
	if n, ok := bracketName(inner); ok {
		return &LineMeantError{Err: ErrBracketLine, Meant: string(n), Name: string(n),
			msg: fmt.Sprintf("%v (write each name on a line of its own: %s)", ErrBracketLine, n)}
	}
	return ErrBracketLine
}

// commentless is text without surrounding white space and without its
// comment; false for a blank line or a comment. `#` starts a comment at the
// start of a line or after white space (so `example.com##.ad`, an Adblock
// cosmetic rule, is rejected rather than read as example.com).
func commentless(text string) (string, bool) {
	text = strings.TrimSpace(text)
	if text == "" || text[0] == '#' {
		return "", false
	}
	for i := 1; i < len(text); i++ {
		if text[i] != '#' {
			continue
		}
		if r, _ := utf8.DecodeLastRuneInString(text[:i]); blank(r) {
			return strings.TrimSpace(text[:i]), true
		}
	}
	return text, true
}

// blank reports the white space that separates the fields of a line and
// comes before its comment: Unicode's, as around the line (strings.TrimSpace),
// so that a no-break space (U+00A0), an ideographic space (U+3000) and the
// like, which a line copied from a web page or a document carries, are
// white space there too; but not a carriage return, which ends a line.
func blank(r rune) bool {
	return r == ' ' || r == '\t' || r != '\r' && unicode.IsSpace(r)
}

// blankAt reports whether s holds blank white space at i, and its length
// in octets.
func blankAt(s string, i int) (int, bool) {
	if c := s[i]; c < utf8.RuneSelf {
		return 1, c == ' ' || c == '\t' || c == '\v' || c == '\f'
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	return n, blank(r)
}

// nextField splits off the first white-space separated field. A printable
// ASCII octet, nearly every one of a line, is passed over without a call:
// a hosts file's lines are read field by field, and taking every octet
// through blank took a fifth longer over a 1,000,000-line hosts file.
func nextField(s string) (field, rest string) {
	s = trimBlank(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && c < utf8.RuneSelf {
			continue
		}
		n, ok := blankAt(s, i)
		if ok {
			return s[:i], trimBlank(s[i+n:])
		}
		i += n - 1
	}
	return s, ""
}

// trimBlank drops leading white space (blank).
func trimBlank(s string) string {
	for len(s) > 0 {
		if c := s[0]; c > ' ' && c < utf8.RuneSelf {
			break
		}
		n, ok := blankAt(s, 0)
		if !ok {
			break
		}
		s = s[n:]
	}
	return s
}

// looksLikeAddr reports text that was meant as an address, whether or
// not it parses as one: digits and dots with at least one digit (IPv4;
// dots alone, `.` the root, are a name of empty labels), or hexadecimal
// digits, dots and at least one colon (IPv6), either with a `%zone`
// (`fe80::1%lo0`, `0.0.0.0%lo0` of a hosts file). Other text with a colon
// (`tiktok.com:443`, v2fly's `full:tiktok.com`, and `ad.de:443`, whose
// letters are all hexadecimal) is not taken for an address: it is
// reported as the name it is.
func looksLikeAddr(s string) bool {
	if i := strings.IndexByte(s, '%'); i >= 0 {
		s = s[:i]
	}
	colon, hex, dot, digit := false, false, false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			digit = true
		case c == '.':
			dot = true
		case c == ':':
			if dot && hex {
				// An IPv6 address has dots only in its IPv4 tail, of
				// digits, after its last colon: this is a name and a
				// port (`dead.beef:80`, `ad.de:443`; `10.0.0.1:53` is
				// still the invalid address it is).
				return false
			}
			colon = true
		case 'a' <= c|0x20 && c|0x20 <= 'f':
			hex = true
		default:
			return false
		}
	}
	return colon || digit && !hex
}

// errorList collects the bad lines of one file, bounded by maxReported.
type errorList struct {
	errs    []error
	dropped int // past maxReported
	skipped int // of those dropped, the ones not kept (ParseError.Kept)
	file    string
}

func (e *errorList) add(file string, line int, text string, err error) {
	e.file = file
	if len(e.errs) >= maxReported {
		e.dropped++
		e.skipped++
		return
	}
	e.errs = append(e.errs, &ParseError{File: file, Line: line, Text: reportedText(text), Err: err})
}

// maxReportedText bounds the octets of a bad line's text that its
// ParseError keeps: more than any name a line can spell (253 octets,
// 1,012 with each one escaped as \DDD). A list's lines are as long as
// its body, up to sources.max_bytes for a URL's: a body of 100 lines of
// one 600,000-octet token each was kept whole in the snapshot's warnings
// (a heap of 191 MB for a list of one entry) and logged as one line of
// 60 MB.
const maxReportedText = 1024

// reportedText is a copy of text (which may be a slice of the file) to
// report, the user information of a URL in it hidden (RedactURLs: a list
// URL pasted into a list or range file may carry its password or token,
// and the report is logged), then cut after maxReportedText octets, at a
// UTF-8 character's start, with how long it was. Hidden before the cut,
// so that a cut inside the user information cannot keep its start.
func reportedText(text string) string {
	text = RedactURLs(text)
	if len(text) <= maxReportedText {
		return strings.Clone(text)
	}
	cut := maxReportedText
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d octets)", text[:cut], len(text))
}

// addOwner records a skipped RPZ record, or with kept one applied as read
// whose meaning is in doubt (ParseError.Kept).
func (e *errorList) addOwner(file string, line int, owner string, err error, kept bool) {
	e.file = file
	if len(e.errs) >= maxReported {
		e.dropped++
		if !kept {
			e.skipped++
		}
		return
	}
	owner = reportedText(owner)
	e.errs = append(e.errs, &ParseError{File: file, Line: line, Text: owner, Owner: owner, Err: err, Kept: kept})
}

func (e *errorList) err() error {
	if e.dropped > 0 {
		e.errs = append(e.errs, &moreBadLines{file: e.file, n: e.dropped, skipped: e.skipped})
	}
	return errors.Join(e.errs...)
}

// moreBadLines stands for the bad lines of a file past maxReported: counted,
// not reported one by one.
type moreBadLines struct {
	file    string
	n       int
	skipped int // of n, those not kept
}

func (e *moreBadLines) Error() string {
	return fmt.Sprintf("%s: %d more bad lines not shown", e.file, e.n)
}

// BadLines counts the bad lines (or skipped records) in warn, the error
// Parse, ReadList, FromZone or ParseRanges return beside what they
// loaded, those past the ones reported one by one included, and returns
// the first; 0 and nil for a nil warn.
func BadLines(warn error) (n int, first *ParseError) {
	eachBadLine(warn, func(_ string, lines, _ int, pe *ParseError) {
		n += lines
		if first == nil {
			first = pe
		}
	})
	return n, first
}

// NewBadLine reports whether warn, the bad lines of a file's new content
// (as BadLines reads it), has a bad line that oldWarn, those of its
// content before, does not: first is the first line reported whose text
// (ParseError.Text) oldWarn does not report as many times, so that a bad
// line kept from before, moved or not, is not new, and one fixed while
// another is broken leaves the other new though the count is as it was.
// Past the lines reported one by one (maxReported), counted, not named, a
// new one cannot be ruled out: a warn that has such lines is ok, with
// first nil when none of those named is new (fail closed: a line fixed
// and another broken past the first 100 leave the count as it was).
func NewBadLine(oldWarn, warn error) (first *ParseError, ok bool) {
	was, wasN := map[string]int{}, 0
	eachBadLine(oldWarn, func(_ string, lines, _ int, pe *ParseError) {
		wasN += lines
		if pe != nil {
			was[pe.Text]++
		}
	})
	n, unnamed := 0, false
	eachBadLine(warn, func(_ string, lines, _ int, pe *ParseError) {
		n += lines
		switch {
		case pe == nil:
			unnamed = true
		case first != nil:
		case was[pe.Text] > 0:
			was[pe.Text]--
		default:
			first = pe
		}
	})
	return first, first != nil || n > wasN || unnamed
}

// Skipped counts, by file, the lines and records warn (as BadLines reads
// it, or several such joined) reports skipped, those past the ones
// reported one by one included: a record applied as read whose meaning is
// in doubt (ParseError.Kept) is not counted. Files with none are absent.
func Skipped(warn error) map[string]int {
	out := map[string]int{}
	eachBadLine(warn, func(file string, _, skipped int, _ *ParseError) {
		if skipped > 0 && file != "" {
			out[file] += skipped
		}
	})
	return out
}

// eachBadLine calls f for each report in warn: a ParseError (pe; one line,
// skipped unless Kept), a count of lines not reported one by one (pe nil),
// or another error (one line of no file, skipped).
func eachBadLine(warn error, f func(file string, lines, skipped int, pe *ParseError)) {
	var pe *ParseError
	var more *moreBadLines
	switch j, ok := warn.(interface{ Unwrap() []error }); {
	case ok:
		for _, e := range j.Unwrap() {
			eachBadLine(e, f)
		}
	case errors.As(warn, &more):
		f(more.file, more.n, more.skipped, nil)
	case errors.As(warn, &pe):
		skipped := 1
		if pe.Kept {
			skipped = 0
		}
		f(pe.File, 1, skipped, pe)
	case warn != nil:
		f("", 1, 1, nil)
	}
}
