// Command listcheck compares the shipped block lists with reference lists a
// maintainer downloaded, so that refreshing the lists is a review of a diff
// rather than research.
//
// Usage:
//
//	go run ./cmd/listcheck [-lists FILE,FILE,...] [-format FORMAT] [-registrable] REFERENCE...
//
// For every reference file it prints which shipped list covers each of its
// names (a shipped entry equal to the name or a parent of it), the names no
// shipped list covers grouped by registrable domain, the names that fall
// under an entry held for review (a commented-out "# name  # ..." line of a
// shipped list), its wildcard patterns that no shipped entry covers, and
// the lines it could not read. Then, for every shipped list, it prints the
// entries that no reference mentions (no reference name equal to, above or
// below the entry).
//
// With -registrable it also counts the reference's registrable domains
// (eTLD+1 by golang.org/x/net/publicsuffix, the Public Suffix List): each
// domain is counted against the last shipped list needed to cover every
// reference name under it, or as held for review, or as not covered when
// any of those names is in no shipped list.
//
// Reference formats (-format auto picks one per file):
//   - plain: one domain a line; hosts: "0.0.0.0 name ..."; adblock: "||name^"
//     — all three read by blocklist.Parse, so every name means "this domain
//     and every name below it"; also AdGuard's single-pipe anchor "|name^"
//     and "|https://name^" (that name alone, reported "(exact)"). As
//     blocklist.Parse reads any file, one whose name ends in ".rpz" is read
//     as an RPZ zone, and a zone it refuses as a whole is a read error;
//   - adguard: an AdguardTeam/HostlistsRegistry service YAML; its "rules:"
//     entries are Adblock rules, read as above;
//   - v2fly: a v2fly/domain-list-community data/<file>: "domain:x", "full:x",
//     bare "x", "include:y" (read from the same directory), with "@attr"
//     suffixes ignored; "keyword:" and "regexp:" lines are reported as
//     unsupported;
//   - clash: a blackmatrix7/ios_rule_script .list: "DOMAIN-SUFFIX,x",
//     "DOMAIN,x"; other rule types are reported as unsupported.
//
// A rule with a wildcard inside the name ("||p16-tiktok-*.ibyteimg.com^",
// "v*.tiktokcdn-eu.com") is a pattern: its matches cannot be listed, but
// every one of them sits below the labels after its last wildcard
// (ibyteimg.com). A pattern counts as covered by the first shipped list
// with an entry equal to or above those labels; any other pattern is
// reported as "not comparable", not as an unsupported line.
//
// The exit status is 0 when the comparison ran, 2 on a usage or read error.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"go.yaml.in/yaml/v3"
	"golang.org/x/net/publicsuffix"
)

// defaultLists are the shipped lists compared by default, relative to the
// module root.
var defaultLists = []string{
	"configs/lists/tiktok.txt",
	"configs/lists/bytedance.txt",
	"configs/lists/bytedance-cloud.txt",
	"configs/lists/doh-bypass.txt",
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// refName is one name a reference file carries.
type refName struct {
	name  string
	line  int    // line in the file that holds it
	file  string // that file when it is not the reference itself (a v2fly include)
	exact bool   // v2fly "full:" or Clash "DOMAIN,": the name alone
}

// refPattern is a reference rule with a wildcard inside the name
// ("||p16-tiktok-*.ibyteimg.com^"): the names it matches cannot be listed.
type refPattern struct {
	rule   string // the rule as the file has it
	parent string // the name every match sits below ("ibyteimg.com"); "" when none is known
	line   int
}

// reference is a parsed reference file.
type reference struct {
	file        string
	format      string
	names       []refName
	patterns    []refPattern
	unsupported []string // "file:line: text (reason)"
	unlisted    int      // bad lines blocklist.Parse counts but does not name (past its first 100), less the one entry of unsupported that says how many
}

// shipped is one shipped list with its entries held for review.
type shipped struct {
	path string
	list *blocklist.List
	held *blocklist.List // commented-out entries ("# name  # ... REVIEW ...")
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("listcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lists := fs.String("lists", strings.Join(defaultLists, ","), "comma-separated shipped list files to compare")
	format := fs.String("format", "auto", "reference format: auto, plain (also hosts and adblock), adguard, v2fly or clash")
	byDomain := fs.Bool("registrable", false, "also count each reference's registrable domains (eTLD+1) by the shipped list that covers them")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: listcheck [-lists FILE,FILE,...] [-format FORMAT] [-registrable] REFERENCE...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var ships []shipped
	for _, p := range strings.Split(*lists, ",") {
		s, err := loadShipped(strings.TrimSpace(p))
		if err != nil {
			fmt.Fprintln(stderr, "listcheck:", err)
			return 2
		}
		ships = append(ships, s)
	}
	var refs []*reference
	for _, p := range fs.Args() {
		r, err := loadReference(p, *format)
		if err != nil {
			fmt.Fprintln(stderr, "listcheck:", err)
			return 2
		}
		refs = append(refs, r)
	}
	w := bufio.NewWriter(stdout)
	for _, r := range refs {
		reportReference(w, r, ships, *byDomain)
	}
	reportShipped(w, refs, ships)
	if err := w.Flush(); err != nil {
		fmt.Fprintln(stderr, "listcheck:", err)
		return 2
	}
	return 0
}

// heldLine is a commented-out entry of a shipped list: "# name   # comment".
var heldLine = regexp.MustCompile(`^#\s*([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+)\s+#`)

// loadShipped reads a shipped list; its bad lines are an error, since the
// shipped lists are checked by the configs tests.
func loadShipped(path string) (shipped, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return shipped{}, fmt.Errorf("reading shipped list: %w", err)
	}
	l, err := blocklist.Parse(path, data)
	if err != nil {
		return shipped{}, fmt.Errorf("shipped list %s: %w", path, err)
	}
	var held bytes.Buffer
	for _, line := range blocklist.Lines(string(data)) {
		if m := heldLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			held.WriteString(m[1])
		}
		held.WriteByte('\n') // keeps line numbers
	}
	h, err := blocklist.Parse(path+" (held)", held.Bytes())
	if err != nil {
		return shipped{}, fmt.Errorf("shipped list %s, commented-out entries: %w", path, err)
	}
	return shipped{path: path, list: l, held: h}, nil
}

// loadReference reads a reference file in the given format ("auto" picks
// one from the file's name and content).
func loadReference(path, format string) (*reference, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading reference: %w", err)
	}
	if format == "auto" {
		format = detect(path, data)
	}
	r := &reference{file: path, format: format}
	switch format {
	case "plain", "hosts", "adblock":
		r.format = "plain"
		err = r.parseLines(path, data, nil)
	case "adguard":
		err = r.parseAdGuard(path, data)
	case "v2fly":
		err = r.parseV2fly(path, "", map[string]bool{})
	case "clash":
		r.parseClash(path, data)
	default:
		return nil, fmt.Errorf("unknown format %q (want auto, plain, adguard, v2fly or clash)", format)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// detect picks a format from the file name and its first meaningful lines.
func detect(path string, data []byte) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yml", ".yaml":
		return "adguard"
	}
	for n, line := range blocklist.Lines(string(data)) {
		if n > 200 {
			break
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		switch {
		case strings.HasPrefix(line, "DOMAIN-SUFFIX,"), strings.HasPrefix(line, "DOMAIN,"), strings.HasPrefix(line, "DOMAIN-KEYWORD,"):
			return "clash"
		case strings.HasPrefix(line, "domain:"), strings.HasPrefix(line, "full:"), strings.HasPrefix(line, "include:"),
			strings.HasPrefix(line, "regexp:"), strings.HasPrefix(line, "keyword:"):
			return "v2fly"
		}
	}
	return "plain"
}

// parseLines reads plain, hosts and Adblock lines: the rules blocklist.Parse
// does not read (single-pipe anchors and wildcards inside a name) first,
// then the rest with blocklist.Parse. lineOf, when set, maps the line
// numbers of data to the file's own. Its lines that cannot be read are
// unsupported lines; the error is for a file refused as a whole (an RPZ
// zone, for a name ending in .rpz, past the records its reader takes).
func (r *reference) parseLines(file string, data []byte, lineOf func(int) int) error {
	if lineOf == nil {
		lineOf = func(n int) int { return n }
	}
	data = r.parseAnchorsAndPatterns(file, data, lineOf)
	l, err := blocklist.Parse(file, data)
	if l == nil {
		return fmt.Errorf("reading reference: %w", err)
	}
	for e := range l.All() {
		r.names = append(r.names, refName{name: e.Name, line: lineOf(e.Line)})
	}
	listed := len(r.unsupported)
	for _, err := range unwrapJoined(err) {
		var pe *blocklist.ParseError
		if errors.As(err, &pe) {
			r.unsupported = append(r.unsupported, fmt.Sprintf("%s:%d: %s (%v)", file, lineOf(pe.Line), pe.Text, pe.Err))
		} else {
			// "file: N more bad lines not shown", past those named
			r.unsupported = append(r.unsupported, err.Error())
		}
	}
	n, _ := blocklist.BadLines(err) // each error stands for one bad line or more
	r.unlisted += n - (len(r.unsupported) - listed)
	return nil
}

// parseAnchorsAndPatterns takes from data the one-token rules that
// blocklist.Parse rejects but a reference means as names or patterns:
// AdGuard's single-pipe anchor ("|name^", "|https://name^": that name
// alone, in AdGuard's DNS filtering syntax) and a wildcard inside a
// name ("||p16-*.ibyteimg.com^", "v*.tiktokcdn-eu.com"). It returns data
// with those lines blanked, so that line numbers stay the file's.
func (r *reference) parseAnchorsAndPatterns(file string, data []byte, lineOf func(int) int) []byte {
	var rest bytes.Buffer
	for n, line := range blocklist.Lines(string(data)) {
		rule := ruleToken(line)
		taken := true
		switch {
		case rule == "":
			taken = false
		case strings.HasPrefix(rule, "|") && !strings.HasPrefix(rule, "||"):
			r.parseAnchor(file, rule, lineOf(n))
		case isPattern(rule):
			r.patterns = append(r.patterns, refPattern{rule: rule, parent: patternParent(rule), line: lineOf(n)})
		default:
			taken = false
		}
		if !taken {
			rest.WriteString(line)
		}
		rest.WriteByte('\n')
	}
	return rest.Bytes()
}

// ruleToken is a line's one token without its comment, or "" for a blank
// or comment line, a line of more than one token (a hosts line), or a URL.
// Comments are those of blocklist.Parse: a line starting with '#', '!' or
// '[', and '#' after white space.
func ruleToken(line string) string {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' || line[0] == '!' || line[0] == '[' {
		return ""
	}
	for i := 1; i < len(line); i++ {
		if line[i] == '#' && (line[i-1] == ' ' || line[i-1] == '\t') {
			line = strings.TrimSpace(line[:i])
			break
		}
	}
	if strings.ContainsAny(line, " \t") || (strings.Contains(line, "://") && !strings.HasPrefix(line, "|")) {
		return ""
	}
	return line
}

// parseAnchor reads a single-pipe rule: "|" then an optional "http://" or
// "https://", the name, and "^". The rule matches that name alone.
func (r *reference) parseAnchor(file, rule string, line int) {
	bad := func(why error) {
		r.unsupported = append(r.unsupported, fmt.Sprintf("%s:%d: %s (%v)", file, line, rule, why))
	}
	body := rule[1:]
	for _, scheme := range []string{"https://", "http://"} {
		if len(body) >= len(scheme) && strings.EqualFold(body[:len(scheme)], scheme) {
			body = body[len(scheme):]
			break
		}
	}
	switch {
	case strings.Contains(body, "$"):
		bad(blocklist.ErrAdblockOptions)
		return
	case !strings.HasSuffix(body, "^") || strings.Count(body, "^") != 1:
		bad(errAnchorForm)
		return
	}
	body = strings.TrimSuffix(body, "^")
	if strings.Contains(body, "*") {
		r.patterns = append(r.patterns, refPattern{rule: rule, parent: patternParent(body), line: line})
		return
	}
	name, err := blocklist.NormalizeName(body)
	if err != nil {
		bad(err)
		return
	}
	r.names = append(r.names, refName{name: name, line: line, exact: true})
}

// errAnchorForm is why a single-pipe rule is not read.
var errAnchorForm = errors.New("single-pipe rules must have the form |name^ or |https://name^")

// isPattern reports whether a one-token rule has a wildcard inside its name,
// not only the leading "*." that blocklist.Parse reads ("||name^" and plain
// names; "|name^" rules are read by parseAnchor).
func isPattern(rule string) bool {
	name := rule
	if strings.HasPrefix(name, "||") {
		name = strings.TrimPrefix(name, "||")
		if strings.Contains(name, "$") || !strings.HasSuffix(name, "^") {
			return false // blocklist.Parse says what is wrong with it
		}
		name = strings.TrimSuffix(name, "^")
	}
	name = strings.TrimPrefix(name, "*.")
	return strings.Contains(name, "*") && strings.Trim(name, "*.") != ""
}

// patternParent is the name every match of a wildcard pattern sits below:
// the whole labels after its last wildcard ("p16-tiktok-*.ibyteimg.com"
// gives ibyteimg.com, "*-x.cdn.example.com^" gives cdn.example.com). It
// is "" when there is none, or only a top-level label, or it is no valid
// name.
func patternParent(rule string) string {
	name := strings.TrimSuffix(strings.TrimPrefix(rule, "||"), "^")
	after := name[strings.LastIndexByte(name, '*')+1:]
	_, parent, ok := strings.Cut(after, ".")
	if !ok {
		return ""
	}
	parent, err := blocklist.NormalizeName(parent)
	if err != nil {
		return ""
	}
	return parent
}

// unwrapJoined splits an errors.Join result into its errors.
func unwrapJoined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// parseAdGuard reads a HostlistsRegistry service file: its rules are
// Adblock rules, read one a line by blocklist.Parse.
func (r *reference) parseAdGuard(file string, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("reading %s as AdGuard service YAML: %w", file, err)
	}
	var rules []*yaml.Node
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "rules" && n.Content[i+1].Kind == yaml.SequenceNode {
					rules = append(rules, n.Content[i+1].Content...)
					continue
				}
				walk(n.Content[i+1])
			}
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	if len(rules) == 0 {
		return fmt.Errorf("%s: no \"rules:\" list (not an AdGuard service YAML?)", file)
	}
	var text strings.Builder
	lines := make([]int, 0, len(rules))
	for _, n := range rules {
		text.WriteString(strings.TrimSpace(n.Value))
		text.WriteByte('\n')
		lines = append(lines, n.Line)
	}
	return r.parseLines(file, []byte(text.String()), func(i int) int { return lines[i-1] })
}

// parseV2fly reads a v2fly data file and, recursively, the files it
// includes from the same directory; an include's "@attr" filter is ignored
// (every name of the included file counts). via names the include line for
// errors; seen stops include cycles.
func (r *reference) parseV2fly(path, via string, seen map[string]bool) error {
	if seen[path] {
		return nil
	}
	seen[path] = true
	data, err := os.ReadFile(path)
	if err != nil {
		if via != "" {
			return fmt.Errorf("%s: include: %w", via, err)
		}
		return fmt.Errorf("reading reference: %w", err)
	}
	for n, line := range blocklist.Lines(string(data)) {
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		rule := fields[0] // the rest are "@attr" and "&affiliation" tags
		kind, value, ok := strings.Cut(rule, ":")
		if !ok {
			kind, value = "domain", rule
		}
		where := fmt.Sprintf("%s:%d", path, n)
		switch kind {
		case "include":
			if err := r.parseV2fly(filepath.Join(filepath.Dir(path), value), where, seen); err != nil {
				return err
			}
		case "domain", "full":
			name, err := blocklist.NormalizeName(value)
			if err != nil {
				r.unsupported = append(r.unsupported, fmt.Sprintf("%s: %s (%v)", where, rule, err))
				continue
			}
			rn := refName{name: name, line: n, exact: kind == "full"}
			if via != "" {
				rn.file = path
			}
			r.names = append(r.names, rn)
		default: // keyword:, regexp: and anything newer
			r.unsupported = append(r.unsupported, fmt.Sprintf("%s: %s (%s rules are not domain names)", where, rule, kind))
		}
	}
	return nil
}

// parseClash reads a Clash rule-set list (blackmatrix7/ios_rule_script).
func (r *reference) parseClash(file string, data []byte) {
	for n, line := range blocklist.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		parts := strings.Split(line, ",")
		where := fmt.Sprintf("%s:%d", file, n)
		if len(parts) < 2 || (parts[0] != "DOMAIN-SUFFIX" && parts[0] != "DOMAIN") {
			r.unsupported = append(r.unsupported, fmt.Sprintf("%s: %s (not a domain rule)", where, line))
			continue
		}
		name, err := blocklist.NormalizeName(strings.TrimSpace(parts[1]))
		if err != nil {
			r.unsupported = append(r.unsupported, fmt.Sprintf("%s: %s (%v)", where, line, err))
			continue
		}
		r.names = append(r.names, refName{name: name, line: n, exact: parts[0] == "DOMAIN"})
	}
}

// registrable is the name's registrable domain (eTLD+1), or the name itself
// when it has none.
func registrable(name string) string {
	if d, err := publicsuffix.EffectiveTLDPlusOne(name); err == nil {
		return d
	}
	return name
}

// reportReference prints how the shipped lists cover one reference; with
// byDomain, also its registrable domains (see the package doc).
func reportReference(w io.Writer, r *reference, ships []shipped, byDomain bool) {
	header := fmt.Sprintf("%d names", len(r.names))
	if len(r.patterns) > 0 {
		header += fmt.Sprintf(", %d patterns", len(r.patterns))
	}
	fmt.Fprintf(w, "== reference %s (%s): %s, %d unsupported lines\n", r.file, r.format, header, len(r.unsupported)+r.unlisted)
	// A name's or a pattern's state: the index of the first shipped list
	// covering it, then heldState, then missingState. A registrable
	// domain's state is the largest of its names'.
	heldState, missingState := len(ships), len(ships)+1
	covered := make([]int, len(ships))
	coveredPatterns := make([]int, len(ships))
	missing := map[string][]string{}
	held := map[string][]string{}
	domains := map[string]int{}
	note := func(name string, state int) {
		d := registrable(name)
		if old, ok := domains[d]; !ok || state > old {
			domains[d] = state
		}
	}
	// state finds the list covering name, or the held entry over it.
	state := func(name string) (int, string) {
		for i, s := range ships {
			if _, ok := s.list.Match(name); ok {
				return i, ""
			}
		}
		for _, s := range ships {
			if e, ok := s.held.Match(name); ok {
				return heldState, s.path + ": " + e.Folded()
			}
		}
		return missingState, ""
	}
	for _, n := range r.names {
		st, heldBy := state(n.name)
		note(n.name, st)
		if st < len(ships) {
			covered[st]++
			continue
		}
		label := n.name
		if n.exact {
			label += " (exact)"
		}
		at := fmt.Sprintf("line %d", n.line)
		if n.file != "" {
			at = fmt.Sprintf("%s:%d", n.file, n.line)
		}
		if st == heldState {
			held[heldBy] = append(held[heldBy], fmt.Sprintf("%s (%s)", label, at))
		} else {
			d := registrable(n.name)
			missing[d] = append(missing[d], fmt.Sprintf("%s (%s)", label, at))
		}
	}
	var notComparable []string
	for _, p := range r.patterns {
		st, heldBy := missingState, ""
		if p.parent != "" {
			st, heldBy = state(p.parent)
		}
		if st < len(ships) {
			coveredPatterns[st]++
			note(p.parent, st)
			continue
		}
		why := "no shipped entry covers " + p.parent
		switch {
		case p.parent == "":
			why = "no name sits above every match"
		case st == heldState:
			why += "; held for review: " + heldBy
		}
		notComparable = append(notComparable, fmt.Sprintf("%s (line %d; %s)", p.rule, p.line, why))
	}
	for i, s := range ships {
		fmt.Fprintf(w, "  covered by %s: %d", s.path, covered[i])
		if coveredPatterns[i] > 0 {
			fmt.Fprintf(w, " (+%d patterns)", coveredPatterns[i])
		}
		fmt.Fprintln(w)
	}
	if byDomain {
		counts := make([]int, missingState+1)
		for _, st := range domains {
			counts[st]++
		}
		fmt.Fprintf(w, "  registrable domains: %d (each counted against the last list needed to cover all of its names)\n", len(domains))
		for i, s := range ships {
			fmt.Fprintf(w, "    %s: %d\n", s.path, counts[i])
		}
		fmt.Fprintf(w, "    held for review: %d\n", counts[heldState])
		fmt.Fprintf(w, "    not covered: %d\n", counts[missingState])
	}
	printGroups(w, "held for review (commented out in a shipped list)", held)
	printGroups(w, "in no shipped list, by registrable domain", missing)
	if len(notComparable) > 0 {
		fmt.Fprintf(w, "  patterns, not comparable: %d\n", len(notComparable))
		for _, p := range notComparable {
			fmt.Fprintf(w, "    %s\n", p)
		}
	}
	if len(r.unsupported) > 0 {
		fmt.Fprintf(w, "  unsupported lines: %d\n", len(r.unsupported)+r.unlisted)
		for _, u := range r.unsupported {
			fmt.Fprintf(w, "    %s\n", u)
		}
	}
	fmt.Fprintln(w)
}

func printGroups(w io.Writer, title string, groups map[string][]string) {
	if len(groups) == 0 {
		return
	}
	fmt.Fprintf(w, "  %s: %d\n", title, len(groups))
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		fmt.Fprintf(w, "    %s: %s\n", k, strings.Join(groups[k], ", "))
	}
}

// reportShipped prints, per shipped list, the entries that no reference
// mentions: no reference name equals the entry, is a parent of it, or sits
// below it.
func reportShipped(w io.Writer, refs []*reference, ships []shipped) {
	var all bytes.Buffer
	for _, r := range refs {
		for _, n := range r.names {
			all.WriteString(n.name)
			all.WriteByte('\n')
		}
	}
	union, _ := blocklist.Parse("references", all.Bytes()) // names are normalised already
	below := map[string]bool{}                             // every parent of a reference name
	parents := make([]string, 0, union.Len())
	for e := range union.All() {
		parents = append(parents, e.Name)
	}
	for _, r := range refs {
		for _, p := range r.patterns {
			if p.parent != "" { // the pattern's matches sit below it
				parents = append(parents, p.parent)
			}
		}
	}
	for _, name := range parents {
		for {
			below[name] = true
			_, rest, ok := strings.Cut(name, ".")
			if !ok {
				break
			}
			name = rest
		}
	}
	fmt.Fprintf(w, "== shipped entries in none of the %d references\n", len(refs))
	for _, s := range ships {
		var lacking []string
		for e := range s.list.All() {
			if _, ok := union.Match(e.Name); ok || below[e.Name] {
				continue
			}
			lacking = append(lacking, fmt.Sprintf("%s (line %d)", e.Name, e.Line))
		}
		fmt.Fprintf(w, "  %s: %d of %d\n", s.path, len(lacking), s.list.Len())
		for _, l := range lacking {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}
