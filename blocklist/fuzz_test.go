package blocklist

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// seedFiles adds every file of testdata/ matching pattern to the corpus.
func seedFiles(f *testing.F, pattern string) {
	paths, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
}

// windowsSaved is data as a Windows editor saves it: a byte-order mark
// first and CRLF line ends. It reports false for data that already starts
// with a mark (a second one is no longer the file's mark).
func windowsSaved(data []byte) ([]byte, bool) {
	if bytes.HasPrefix(data, []byte(byteOrderMark)) {
		return nil, false
	}
	return append([]byte(byteOrderMark), bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))...), true
}

// seedWindows adds seeds with byte-order marks and CRLF line ends in the
// places they occur.
func seedWindows(f *testing.F, lines ...string) {
	f.Add([]byte(byteOrderMark + strings.Join(lines, "\r\n") + "\r\n"))
	f.Add([]byte(byteOrderMark + strings.Join(lines, "\r\n")))
	f.Add([]byte(byteOrderMark + "\r\n" + strings.Join(lines, "\n")))
	f.Add([]byte(lines[0] + "\r\n" + byteOrderMark + strings.Join(lines[1:], "\r\n")))
	f.Add([]byte(byteOrderMark + byteOrderMark + lines[0] + "\r\r\n"))
	f.Add([]byte(byteOrderMark))
}

// entries lists a list's entries as name@line, in file order.
func entries(l *List) []string {
	var out []string
	for e := range l.All() {
		out = append(out, e.Name+"@"+strconv.Itoa(e.Line)) // fmt's "%s@%d", a tenth of TestReadTextAsParse under -race
	}
	return out
}

// FuzzParse checks that no input crashes the parser, that every stored
// entry is a valid normalised name that matches itself and its subdomains,
// and that the input saved the Windows way (byte-order mark, CRLF) parses
// to the same entries and errors.
func FuzzParse(f *testing.F) {
	seedFiles(f, "*.list")
	seedWindows(f, "0.0.0.0 tiktok.com", "*.tiktokv.com", ".tiktokcdn.com", "||capcut.com^", "# c", "bad..x")
	seedWindows(f, "0.0.0.0tik..tok.com", "0.0.0.0a", "https://localhost/", "https://tik..tok.com/", "0.0.0.0tiktok.com")
	seedWindows(f, "tiktok.com:443", "user@tiktok.com", "*.tiktok.com/@x?y#z", "0.0.0.0 tik.tok:", "||b\u00fccher.example:8080^")
	for _, tc := range lineMeantCases {
		f.Add([]byte(tc.line + "\n"))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz.txt", data)
		if l.Warnings() != err {
			t.Fatalf("the list keeps %v, Parse returned %v", l.Warnings(), err)
		}
		if n, _ := BadLines(err); Skipped(err)["fuzz.txt"] != n {
			t.Fatalf("Skipped counts %d of the %d bad lines", Skipped(err)["fuzz.txt"], n)
		}
		if win, ok := windowsSaved(data); ok {
			wl, werr := Parse("fuzz.txt", win)
			if !slices.Equal(entries(l), entries(wl)) || fmt.Sprint(err) != fmt.Sprint(werr) {
				t.Fatalf("saved the Windows way, %q parses to %v (%v), not %v (%v)", data, entries(wl), werr, entries(l), err)
			}
		}
		for e := range l.All() {
			n, err := NormalizeName(e.Name)
			if err != nil || n != e.Name {
				t.Fatalf("stored entry %q is not normalised (%q, %v)", e.Name, n, err)
			}
			if u, _ := idna.Punycode.ToUnicode(e.Name); strings.ContainsRune(u, utf8.RuneError) {
				if line := lineOf(data, e.Line); !strings.Contains(strings.ToLower(line), "xn--") && !strings.Contains(line, "\uFFFD") {
					t.Fatalf("entry %q (%q) stands for U+FFFD, not written on its line %d: %q", e.Name, u, e.Line, line)
				}
			}
			// The subdomain is matched by e or by an entry more specific
			// that holds it too (`x.a` and `x.x.a` both listed: x.x.a),
			// named as the query spells it.
			q := "x." + strings.ToUpper(e.Name)
			m, ok := l.Match(q + ".")
			if !ok || !strings.HasSuffix("x."+e.Name, m.Folded()) || len(m.Folded()) < len(e.Name) ||
				!strings.HasSuffix(q, m.Name) || !strings.EqualFold(m.Name, m.Folded()) {
				t.Fatalf("entry %q does not match its subdomain (got %q)", e.Name, m.Name)
			}
		}
		checkLinesAccounted(t, data, l, err)
		checkHeaders(t, data)
		checkBracketReports(t, data, err)
		checkOffersTaken(t, err)
	})
}

// offered finds the line a bad line's message says to write instead, in
// each of the ways the messages say it.
var offered = []*regexp.Regexp{
	regexp.MustCompile(`; write "([^"]+)"\)`),                            // an address glued to a name
	regexp.MustCompile(`write the name alone: ([^)]+)\)`),                // a URL
	regexp.MustCompile(`write ([^ ,)]+), then white space before the #`), // name#comment
	regexp.MustCompile(`and the names below it, write ([^ ,)]+)\)`),      // a directive
	regexp.MustCompile(`write ([^ ,)]+) in a list under a policy's allow`),
	regexp.MustCompile(`write each name on a line of its own: ([^)]+)\)`),
}

// TestOfferedFindsEachOffer: each of offered finds the line its message
// offers, so that checkOffersTaken cannot go quiet when a message's
// words change: one no pattern finds is never parsed again.
func TestOfferedFindsEachOffer(t *testing.T) {
	for i, tc := range []struct{ line, offer string }{
		{"0.0.0.0tiktok.com", "0.0.0.0 tiktok.com"},
		{"https://www.tiktok.com/@x", "www.tiktok.com"},
		{"tiktok.com#c", "tiktok.com"},
		{"server=/tiktok.com/10.0.0.53", "tiktok.com"},
		{"@@||tiktok.com^", "tiktok.com"},
		{"[tiktok.com, x.com]", "tiktok.com"},
	} {
		_, err := Parse("x.txt", []byte(tc.line+"\n"))
		if err == nil {
			t.Fatalf("%q: no error", tc.line)
		}
		if m := offered[i].FindStringSubmatch(err.Error()); m == nil || m[1] != tc.offer {
			t.Errorf("offered[%d] finds %q in %v, not %q", i, m, err, tc.offer)
		}
	}
}

// checkOffersTaken: the line a bad line's message offers (`write
// "0.0.0.0 tiktok.com"`) is one a list takes, not a bad line again; it is
// a LineMeantError's, and blocks what that error says (checkMeant).
func checkOffersTaken(t *testing.T, err error) {
	t.Helper()
	for _, pe := range parseErrors(err) {
		e, typed := errors.AsType[*LineMeantError](pe.Err)
		if typed {
			checkMeant(t, pe, e)
		}
		for _, re := range offered {
			if m := re.FindStringSubmatch(pe.Err.Error()); m != nil {
				if _, err := Parse("offer.txt", []byte(m[1]+"\n")); err != nil {
					t.Fatalf("%v offers %q, which is refused: %v", pe, m[1], err)
				}
				if !typed {
					t.Fatalf("%v offers %q, and is no LineMeantError", pe, m[1])
				}
			}
		}
	}
}

// checkMeant: e, the error of the bad line pe, offers its Meant in its
// message, and Meant, read as a line of a list (or, for an address, as a
// record of a policy zone), is taken and blocks what e says: Name and the
// names below it, or the answers that hold Prefix's address.
func checkMeant(t *testing.T, pe *ParseError, e *LineMeantError) {
	t.Helper()
	if !strings.Contains(e.Error(), e.Meant) {
		t.Fatalf("%v: the line meant, %q, is not in the message", pe, e.Meant)
	}
	if e.Prefix.IsValid() {
		l, err := Parse("meant.rpz", []byte(e.Meant+"\n"))
		if err != nil {
			t.Fatalf("%v: the record meant, %q, is refused: %v", pe, e.Meant, err)
		}
		m, tr, ok := l.MatchIP(e.Prefix.Addr())
		if mp, _ := m.Prefix(); !ok || mp != e.Prefix || tr.Action != ActionNXDOMAIN {
			t.Fatalf("%v: the record meant, %q, blocks %v with %v (%v), not %v", pe, e.Meant, mp, tr, ok, e.Prefix)
		}
		return
	}
	l, err := Parse("meant.txt", []byte(e.Meant+"\n"))
	if err != nil || l.Len() != 1 {
		t.Fatalf("%v: the line meant, %q, is refused or no single entry (%d): %v", pe, e.Meant, l.Len(), err)
	}
	for _, q := range []string{e.Name, "x." + e.Name} {
		if m, ok := l.Match(q); !ok || m.Folded() != e.Name {
			t.Fatalf("%v: the line meant, %q, blocks %q as %q (%v), not as %q", pe, e.Meant, q, m.Name, ok, e.Name)
		}
	}
}

// lineOf is line n (1-based) of data, or "" past its end.
func lineOf(data []byte, n int) string {
	lines := strings.Split(string(data), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return lines[n-1]
}

// FuzzParseFastWay checks the way Parse reads most lines (plainEntry)
// against the general way, which reads every line as Parse read them all
// before: the same data with every line indented (lineContent removes the
// indent, and plainEntry takes no line that starts with a space) gives
// the same entries, duplicates and errors.
func FuzzParseFastWay(f *testing.F) {
	seedFiles(f, "*.list")
	for _, s := range []string{
		"tiktok.com\nTikTok.COM.\n0.0.0.0 tiktok.com\n127.0.0.1 WWW.tiktok.com.\n",
		"1.2.3.4\n0.0.0.0 1.2.3.4\n0.0.0.0 0.0.0.0\n0.0.0.0 localhost.localdomain.\n0.0.0.01.example\n",
		"com\n.com\ncom.\na..b\n" + strings.Repeat("a", 64) + ".com\n" + strings.Repeat("abcdefghi.", 25) + "com\n",
		"\ufeffa.example\r\n\ufeff\ufeffb.example\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz.txt", data)
		g, gerr := Parse("fuzz.txt", []byte(indented(string(data))))
		if !slices.Equal(entries(l), entries(g)) || !slices.Equal(l.Duplicates(), g.Duplicates()) || fmt.Sprint(err) != fmt.Sprint(gerr) {
			t.Fatalf("%q parses to %v %v (%v), and indented to %v %v (%v)", data, entries(l), l.Duplicates(), err, entries(g), g.Duplicates(), gerr)
		}
	})
}

// FuzzPlainName checks plainName, normalizeEntry's way for names in
// ASCII, against normalizeAny, its general way: a name plainName takes,
// normalizeAny takes and stores the same, and plainName takes every name
// in ASCII that normalizeAny takes.
func FuzzPlainName(f *testing.F) {
	for _, s := range []string{"tiktok.com", "TikTok.COM.", "_a-b.0-9", "a..b", ".a.b", "a.b..", "a", "a.", ".",
		strings.Repeat("a", 63) + ".b", strings.Repeat("a", 64) + ".b", strings.Repeat("a.", 126) + "a", strings.Repeat(".", 256),
		"bücher.example", "a b.c", "a\x00.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pn, ok := plainName(s, nil)
		n, err := normalizeAny(s, nil)
		switch {
		case ok && (err != nil || string(n) != string(pn)):
			t.Fatalf("plainName(%q) = %q, normalizeAny: %q, %v", s, pn, n, err)
		case err == nil && !utf8.ValidString(s):
			t.Fatalf("normalizeAny takes %q, which is not UTF-8, as %q", s, n)
		case !ok && err == nil && isASCII(s):
			t.Fatalf("plainName does not take %q, normalizeAny does (%q)", s, n)
		}
	})
}

// FuzzBuilderQueued checks that names added later, a few at a time
// (addLater, as Parse adds them), make the same list, with the same nodes
// in the same order, as names added one at a time (nodeFor, as an RPZ
// zone adds them). The names are the lines of data that are names.
func FuzzBuilderQueued(f *testing.F) {
	f.Add([]byte("a.b.example.com\nc.b.example.com\nb.example.com\nxb.example.com\na.b.example.com\nx.a.b.example.com\n"))
	f.Add([]byte(strings.Repeat("h1.t1.example\nh2.t2.example\nnew.t1.example\nt2.example\n", 9)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var names []string
		for line := range strings.Lines(string(data)) {
			if n, err := NormalizeName(strings.TrimSuffix(line, "\n")); err == nil {
				names = append(names, n)
			}
		}
		want := buildWith(t, names, func(int) bool { return true })
		requireSameList(t, want, buildWith(t, names, func(int) bool { return false }))
		requireSameList(t, want, buildWith(t, names, func(i int) bool { return i%3 == 1 }))
	})
}

// FuzzParseRPZ checks that no input crashes the RPZ reader (package rpz
// and the list it builds), that every problem is a ParseError of the file,
// and that every entry matches as its trigger says: an exact trigger its
// name, a wildcard the names below, a response-IP trigger its prefix's
// address. The zone saved the Windows way gives the same entries.
func FuzzParseRPZ(f *testing.F) {
	seedFiles(f, "*.rpz")
	seedWindows(f, "$ORIGIN rpz.example.", "@ SOA a. b. 1 2 3 4 5", "a.example CNAME .", "*.a.example CNAME *.",
		"32.1.2.0.192.rpz-ip CNAME rpz-drop.", "128.1.zz.db8.2001.rpz-ip CNAME rpz-passthru.", "x A 192.0.2.1", "bad CNAME . junk")
	for _, s := range []string{"a CNAME (\n.)\n", "\"q\n;(\nb CNAME .\n", "$GENERATE 1-3 h$ CNAME .\n", "$INCLUDE x\nb CNAME .\n",
		"a CNAME\nb CNAME .\n", "  CNAME .\n", "@ CNAME .\n", "$ORIGIN .\n* CNAME .\n",
		"corp\\2.example CNAME .\nx\\256 CNAME .\ny CNAME rpz-\\10\n", "a\\\\2 ( CNAME\n \\2. )\n",
		"*.tiktok.com:443 CNAME .\ntiktok.com/x CNAME rpz-passthru.\nuser@TikTok.com. CNAME .\n",
		"24.1.2.0.192.rpz-ip CNAME .\n120.1.200.c000.ffff.zz.rpz-ip CNAME .\n96.1.0.ffff.zz.rpz-ip CNAME .\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.Contains(bytes.ToUpper(data), []byte("$GENERATE")) {
			// Up to 65,536 records a line, each checked below: too slow
			// to fuzz. TestRPZGenerate covers the directive.
			t.Skip()
		}
		l, err := Parse("fuzz.rpz", data)
		if l != nil && l.Warnings() != err {
			t.Fatalf("the list keeps %v, Parse returned %v", l.Warnings(), err)
		}
		// Every report is skipped but those kept (ParseError.Kept).
		reports, _ := BadLines(err)
		kept := 0
		for _, e := range leaves(err) {
			var pe *ParseError
			if errors.As(e, &pe) && pe.Kept {
				kept++
			}
		}
		if skipped := Skipped(err)["fuzz.rpz"]; skipped > reports-kept || reports <= maxReported && skipped != reports-kept {
			t.Fatalf("Skipped counts %d of %d reports, %d of them kept", skipped, reports, kept)
		}
		for _, e := range leaves(err) {
			var pe *ParseError
			if e != nil && !errors.As(e, &pe) && !strings.HasPrefix(e.Error(), "fuzz.rpz: ") {
				t.Fatalf("error %v is no ParseError", e)
			}
			if pe != nil && pe.File != "fuzz.rpz" {
				t.Fatalf("error %v names %q", e, pe.File)
			}
		}
		if win, ok := windowsSaved(data); ok && !bytes.ContainsAny(data, "\"\r") {
			wl, _ := Parse("fuzz.rpz", win)
			if !slices.Equal(entries(l), entries(wl)) {
				t.Fatalf("saved the Windows way, %q parses to %v, not %v", data, entries(wl), entries(l))
			}
		}
		n := 0
		for e, tr := range l.AllTriggers() {
			n++
			if p, isIP := e.Prefix(); isIP {
				m, _, ok := l.MatchIP(p.Addr())
				mp, _ := m.Prefix()
				if !ok || mp.Bits() < p.Bits() || !mp.Contains(p.Addr()) {
					t.Fatalf("trigger %s does not match its address (got %v, %v)", e.Name, mp, ok)
				}
				continue
			}
			if n, err := NormalizeName(e.Name); err != nil && !errors.Is(err, ErrSingleLabel) || err == nil && n != e.Name {
				t.Fatalf("stored entry %q is not normalised (%q, %v)", e.Name, n, err)
			}
			q := e.Name
			if tr.Wildcard {
				q = `\000.` + q // a label no entry holds: the wildcard is the most specific trigger
			}
			m, mt, ok := l.MatchTrigger(strings.ToUpper(q))
			if !ok || m.Line != e.Line || mt != tr {
				t.Fatalf("trigger %+v %+v: MatchTrigger(%q) = %+v %+v, %v", e, tr, q, m, mt, ok)
			}
			if m2, ok := l.Match(strings.ToUpper(q)); !ok || m2 != m {
				t.Fatalf("Match(%q) = %+v, %v; MatchTrigger gives %+v", q, m2, ok, m)
			}
		}
		if n != l.Len() {
			t.Fatalf("All yields %d entries, Len is %d", n, l.Len())
		}
		checkSecondSOA(t, data, err)
		checkOwnersMeant(t, err)
	})
}

// checkOwnersMeant: the owner name a skipped record's report offers
// (`write the name alone: *.tiktok.com`, a LineMeantError), written as a
// record's owner, is taken as the trigger it says: Name itself, or for
// `*.`, the names below it.
func checkOwnersMeant(t *testing.T, err error) {
	t.Helper()
	for _, pe := range parseErrors(err) {
		if e, ok := errors.AsType[*rpz.PrefixMeantError](pe.Err); ok {
			// An rpz-ip trigger with host bits: the prefix meant, as a
			// trigger, is taken and holds the addresses of Meant.
			owner := rpz.IPTrigger(e.Meant)
			l, err := Parse("meant.rpz", []byte(owner+" CNAME .\n"))
			if _, _, ok := l.MatchIP(e.Meant.Addr()); err != nil || !ok {
				t.Fatalf("%v: the prefix meant, %s, as %s, is refused or matches not its address (%v): %v", pe, e.Meant, owner, ok, err)
			}
			continue
		}
		e, ok := errors.AsType[*LineMeantError](pe.Err)
		if !ok {
			if strings.Contains(pe.Err.Error(), "write the name alone") || strings.Contains(pe.Err.Error(), "did you mean") {
				t.Fatalf("%v offers an owner, and is no LineMeantError", pe)
			}
			continue
		}
		if !strings.Contains(e.Error(), e.Meant) {
			t.Fatalf("%v: the owner meant, %q, is not in the message", pe, e.Meant)
		}
		l, err := Parse("meant.rpz", []byte(e.Meant+" CNAME .\n"))
		if err != nil || l.Len() != 1 {
			t.Fatalf("%v: the owner meant, %q, is refused or no single trigger (%d): %v", pe, e.Meant, l.Len(), err)
		}
		// The owner meant is a wildcard when the owner written is one.
		wild := strings.HasPrefix(e.Meant, "*.")
		if wild != strings.HasPrefix(pe.Owner, "*.") {
			t.Fatalf("%v: the owner meant, %q, is a wildcard or not as the owner written is not", pe, e.Meant)
		}
		q := e.Name
		if wild {
			q = "x." + q
		}
		if m, tr, ok := l.MatchTrigger(q); !ok || m.Folded() != e.Name || tr.Wildcard != wild {
			t.Fatalf("%v: the owner meant, %q, triggers for %q as %q %+v (%v)", pe, e.Meant, q, m.Name, tr, ok)
		}
	}
}

// FuzzParseRanges checks that no input crashes the range parser, that
// every range is canonical, and that every line that is not blank or a `#`
// comment is a range or a reported bad line: none is skipped without a
// word.
//
// The input saved the Windows way gives the same ranges and errors.
func FuzzParseRanges(f *testing.F) {
	seedFiles(f, "*.ranges")
	seedWindows(f, "127.0.0.0/24", "# c", "2001:db8::/32 # v6", "10.0.0.0/33")
	seedWindows(f, "[2001:db8::]/32", "!10.0.0.0/8", "[section]", "\t[10.0.0.0/8] # x")
	seedWindows(f, "::10.1.2.3/120", "10.1.2.3/24", "[::10.0.0.1]")
	seedWindows(f, "10.0.0.0-10.0.0.255", "10/8", "10.1.2.3/255.255.255.0", "fe80::%eth0/64", "10.0.0.1/032", "2001:db8::-2001:db8::ff")
	seedWindows(f, "::10.0.0.0-::10.0.0.255", "::ffff:10.0.0.0-::ffff:10.0.0.255", "[::1]", "::1-::1")
	seedWindows(f, "::a00:0/120", "::a00:0-::a00:ff", "::/96", "::2", "::", "::0.0.0.1", "0.0.0.0", "::ffff:0.0.0.0/128", "0.0.0.0-0.0.0.0")
	seedWindows(f, "::0.0.0.0", "0.0.0.0/255.255.255.255", "[0.0.0.0]")
	seedWindows(f, "::10.0.0.2%eth0", "[10.1.2.3/24]", "10.1.2.3/024", "[fe80::1%eth0]", "[::a00:1]/128")
	f.Fuzz(func(t *testing.T, data []byte) {
		rf, err := ParseRanges("fuzz.txt", data)
		if n, _ := BadLines(err); n <= maxReported {
			seen := map[int]bool{}
			for _, r := range rf.Ranges {
				seen[r.Line] = true
			}
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					seen[e.(*ParseError).Line] = true
				}
			}
			for line, text := range Lines(string(data)) {
				if text = strings.TrimSpace(text); text != "" && text[0] != '#' && !seen[line] {
					t.Fatalf("line %d %q is neither a range nor reported", line, text)
				}
			}
		}
		if win, ok := windowsSaved(data); ok {
			wrf, werr := ParseRanges("fuzz.txt", win)
			if !slices.Equal(rf.Ranges, wrf.Ranges) || fmt.Sprint(err) != fmt.Sprint(werr) {
				t.Fatalf("saved the Windows way, %q parses to %v (%v), not %v (%v)", data, wrf.Ranges, werr, rf.Ranges, err)
			}
		}
		for _, r := range rf.Ranges {
			if r.Prefix.Masked() != r.Prefix || r.Prefix.Addr().Is4In6() {
				t.Fatalf("range %s is not canonical", r.Prefix)
			}
			// Nor is it one that matches no client: IPv4-compatible (RFC
			// 4291 §2.5.5.1), written with dots or in hex (::1 alone is
			// the loopback address), or the unspecified address alone.
			if inCompatible(r.Prefix.Addr()) && r.Prefix.Bits() >= 96 && r.Prefix != netip.PrefixFrom(netip.IPv6Loopback(), 128) ||
				r.Prefix.Addr().IsUnspecified() && r.Prefix.Bits() == r.Prefix.Addr().BitLen() {
				t.Fatalf("range %s (line %d) matches no client", r.Prefix, r.Line)
			}
		}
		for _, pe := range parseErrors(err) {
			// A range named as meant is one taken.
			e, typed := errors.AsType[*RangeMeantError](pe.Err)
			if typed != strings.Contains(pe.Err.Error(), ", did you mean ") {
				t.Fatalf("%v: a range offered is not a RangeMeantError's, or one is not offered", pe)
			}
			if typed {
				// (So it is not IPv4-compatible either: ParsePrefix
				// refuses those, written with dots or in hex.)
				if _, err := ParsePrefix(e.Meant.String()); err != nil {
					t.Fatalf("%v: the range meant is refused: %v", pe, err)
				}
			}
			// A range in brackets or with a zone is meant as it reads
			// without them, whatever else is wrong with it: `[::10.0.0.1]`
			// is 10.0.0.1/32.
			// (ParsePrefix's error, not the line's: a line may have
			// another fault, a carriage return inside it.)
			if meant, err := taken(unbracketedUnzoned(pe.Text)); err == nil {
				_, perr := ParsePrefix(pe.Text)
				if e, ok := errors.AsType[*RangeMeantError](perr); !ok || e.Meant != meant {
					t.Fatalf("%q is meant as %s, not offered: %v", pe.Text, meant, perr)
				}
			}
		}
	})
}

// unbracketedUnzoned is s, a range, without its brackets
// (`[2001:db8::]/32`) or its zone (`fe80::1%eth0.10/64`: an address's
// characters, then a zone of letters, digits, dots and underscores, as
// interfaces are named), or "" when it has neither.
func unbracketedUnzoned(s string) string {
	addr, length, slash := strings.Cut(s, "/")
	if inner, ok := strings.CutPrefix(addr, "["); ok {
		if addr, ok = strings.CutSuffix(inner, "]"); !ok || strings.ContainsAny(addr, "[]/") {
			return ""
		}
	} else {
		var zone string
		if addr, zone, ok = strings.Cut(addr, "%"); !ok || zone == "" || strings.ContainsFunc(zone, func(r rune) bool {
			return r >= utf8.RuneSelf || !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '.' && r != '_'
		}) || strings.ContainsFunc(addr, func(r rune) bool {
			return !strings.ContainsRune("0123456789abcdefABCDEF:.", r) // one address (not a-b%0)
		}) {
			return ""
		}
	}
	if slash {
		return addr + "/" + length
	}
	return addr
}

// FuzzMatch compares Match with a plain reference on any query name: the
// name read into wire-form labels the obvious way (refLabels, itself checked
// against miekg/dns's packing wherever miekg/dns packs the name), and an
// entry matching when it equals the name's last labels, octet by octet,
// ASCII letters folded; the most specific entry wins. Seeds cover escapes
// (\DDD, \X, escaped dots and backslashes), labels of 63 octets whose text
// is 252 bytes, names of 255 octets, empty labels and odd bytes.
func FuzzMatch(f *testing.F) {
	entries := []string{"tiktok.com", "a.b.example.org", "example.org", "x-y.co", "deep.a.b.c.d.e.f.net", "under_score.example"}
	l, err := Parse("fuzz.txt", []byte(strings.Join(entries, "\n")))
	if err != nil {
		f.Fatal(err)
	}
	seeds := []string{"www.tiktok.com.", "TIKTOK.COM", `x\.tiktok.com.`, `x\\.tiktok.com.`, "a.b.example.org.", "b.example.org",
		"..example.org.", "com.", "", ".", `tiktok\.com.`, `www.\116\105\107\116\111\107.com.`, `www.\084IKTOK.COM`,
		`\(\)\"\;.tiktok.com`, `tik\000tok.com`, `\300iktok.com`, `tiktok.com\`, `tiktok.com\.`, `tiktok.com\\.`,
		`a.\b.example.org`, `x.\101.b.example.org.`, `under\_score.example`, `tiktok.\c\o\m`, `tiktok.co\109.`,
		strings.Repeat(`\001`, 63) + ".tiktok.com.", strings.Repeat(`\001`, 64) + ".tiktok.com.",
		strings.Repeat(`\001`, 63) + "." + strings.Repeat(`\255`, 63) + "." + strings.Repeat(`\000`, 63) + "." + strings.Repeat("a", 50) + ".tiktok.com.",
		strings.Repeat("a.", 200) + "tiktok.com", strings.Repeat("a.", 120) + "deep.a.b.c.d.e.f.net",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	ref := map[string]int{} // by the entry's labels, each after its length
	for i, e := range entries {
		ref[labelKey(strings.Split(e, "."))] = i + 1
	}
	f.Fuzz(func(t *testing.T, name string) {
		labels := refLabels(name)
		checkRefLabels(t, name, labels)
		want, wantLine := "", 0
		for k := range labels {
			folded := make([]string, len(labels)-k)
			for i, lb := range labels[k:] {
				folded[i] = asciiLower(lb)
			}
			if line, hit := ref[labelKey(folded)]; hit {
				want, wantLine = strings.Join(folded, "."), line
				break
			}
		}
		got, ok := l.Match(name)
		if ok != (want != "") || (ok && (got.Folded() != want || got.Line != wantLine)) {
			t.Fatalf("Match(%q) = %q (%q) line %d, %v; want %q line %d", name, got.Name, got.Folded(), got.Line, ok, want, wantLine)
		}
		if ok && !strings.HasSuffix(name, got.Name) && !strings.HasSuffix(name, got.Name+".") {
			t.Fatalf("Match(%q): entry name %q is not the name's own suffix", name, got.Name)
		}
	})
}

// FuzzMatchRPZ compares Match on an RPZ list with a plain reference of RPZ
// QNAME semantics (draft-vixie-dnsop-dns-rpz §4.1): the trigger for the
// name itself if there is one, else the `*.` trigger of its longest proper
// suffix; names read into labels by refLabels, as FuzzMatch does.
func FuzzMatchRPZ(f *testing.F) {
	triggers := []struct {
		owner  string
		action Action
	}{
		{"tiktok.com", ActionNXDOMAIN},
		{"*.tiktok.com", ActionNODATA},
		{"ok.tiktok.com", ActionPassthru},
		{"*.a.b.example", ActionDrop},
		{"*.b.example", ActionNXDOMAIN},
		{"b.example", ActionPassthru},
		{"*.under_score.example", ActionNODATA},
		{"exact.only.example", ActionDrop},
		{"*.x.exact.only.example", ActionNXDOMAIN},
	}
	var text strings.Builder
	text.WriteString("$ORIGIN rpz.fuzz.\n")
	type refEntry struct {
		line   int
		action Action
	}
	exact, below := map[string]refEntry{}, map[string]refEntry{}
	for i, tr := range triggers {
		fmt.Fprintf(&text, "%s CNAME %s\n", tr.owner, rpz.Action(tr.action).Target())
		name, wild := strings.CutPrefix(tr.owner, "*.")
		m := exact
		if wild {
			m = below
		}
		m[labelKey(strings.Split(name, "."))] = refEntry{i + 2, tr.action}
	}
	l, err := Parse("fuzz.rpz", []byte(text.String()))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"tiktok.com.", "www.tiktok.com", "ok.tiktok.com", "x.ok.tiktok.com", "a.b.example", "x.a.b.example",
		"b.example", "x.b.example", `x.\097.b.example`, "exact.only.example", "y.exact.only.example", "z.x.exact.only.example",
		`\000.tiktok.com`, `TIKTOK.COM`, `tiktok\.com`, strings.Repeat(`\001`, 63) + ".b.example", "", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		labels := refLabels(name)
		for i, lb := range labels {
			labels[i] = asciiLower(lb)
		}
		var want refEntry
		wantName, wantWild := "", false
		if e, ok := exact[labelKey(labels)]; ok && len(labels) > 0 {
			want, wantName = e, strings.Join(labels, ".")
		} else {
			for k := 1; k < len(labels); k++ {
				if e, ok := below[labelKey(labels[k:])]; ok {
					want, wantName, wantWild = e, strings.Join(labels[k:], "."), true
					break
				}
			}
		}
		got, tr, ok := l.MatchTrigger(name)
		if ok != (wantName != "") || ok && (got.Folded() != wantName || got.Line != want.line || tr != (Trigger{Action: want.action, Wildcard: wantWild})) {
			t.Fatalf("MatchTrigger(%q) = %+v %+v (%q), %v; want %q %+v wildcard %v", name, got, tr, got.Folded(), ok, wantName, want, wantWild)
		}
		if m, ok2 := l.Match(name); ok2 != ok || m != got {
			t.Fatalf("Match(%q) = %+v, %v; MatchTrigger gives %+v", name, m, ok2, got)
		}
	})
}

// refLabels reads a presentation-form name (RFC 1035 §5.1) into its labels
// as octet strings, the plain way: `\DDD` is the octet of DDD (wrapping past
// 255, as miekg/dns packs it), `\X` is X, an unescaped dot ends a label,
// and a final unescaped dot is the root.
func refLabels(name string) []string {
	if name == "." {
		return nil
	}
	var labels []string
	var cur []byte
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '\\' && i+3 < len(name) && presname.IsDigit(name[i+1]) && presname.IsDigit(name[i+2]) && presname.IsDigit(name[i+3]):
			v, _ := strconv.Atoi(name[i+1 : i+4])
			cur = append(cur, byte(v%256))
			i += 3
		case c == '\\' && i+1 < len(name):
			cur = append(cur, name[i+1])
			i++
		case c == '.':
			labels = append(labels, string(cur))
			cur = cur[:0]
			if i == len(name)-1 {
				return labels
			}
		default:
			cur = append(cur, c)
		}
	}
	if name != "" {
		labels = append(labels, string(cur))
	}
	return labels
}

// checkRefLabels checks the reference against miekg/dns: wherever it packs
// the name, its wire-form labels are the reference's. A name ending in a
// lone backslash is no presentation form (miekg/dns misreads it after a
// multi-byte rune) and is skipped.
func checkRefLabels(t *testing.T, name string, labels []string) {
	body := trimRoot(name)
	if name == "" || (body != "" && body[len(body)-1] == '\\' && !presname.Escaped(body, len(body)-1)) {
		return
	}
	var wire [1024]byte
	n, err := dns.PackDomainName(body+".", wire[:], 0, nil, false)
	if err != nil {
		return
	}
	var packed []string
	for off := 0; off < n && wire[off] != 0; off += 1 + int(wire[off]) {
		packed = append(packed, string(wire[off+1:off+1+int(wire[off])]))
	}
	if !slices.Equal(packed, labels) {
		t.Fatalf("reference labels of %q are %q; miekg/dns packs %q", name, labels, packed)
	}
}

// labelKey encodes labels unambiguously, whatever octets they hold.
func labelKey(labels []string) string {
	var b strings.Builder
	for _, lb := range labels {
		fmt.Fprintf(&b, "%d:%s", len(lb), lb)
	}
	return b.String()
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = presname.Lower(c)
	}
	return string(b)
}

// FuzzSameName compares SameName with the reference labels of both names.
func FuzzSameName(f *testing.F) {
	for _, p := range [][2]string{
		{"www.tiktok.com.", `WWW.\116iktok.com`}, {`a\.b.example`, "a.b.example"}, {`a\\.`, `a\\`}, {`a\.`, "a"}, {`a\.`, `a\092`}, {`a\12`, "a12"},
		{`\065`, "a"}, {`\300`, ","}, {".", ""}, {"a..b", "a..b"}, {strings.Repeat(`\001`, 63), strings.Repeat("\x01", 63)},
	} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		la, lb := refLabels(a), refLabels(b)
		want := len(la) == len(lb)
		for i := 0; want && i < len(la); i++ {
			want = asciiLower(la[i]) == asciiLower(lb[i])
		}
		if got := SameName(a, b); got != want {
			t.Fatalf("SameName(%q, %q) = %v; want %v (labels %q, %q)", a, b, got, want, la, lb)
		}
	})
}

// checkLinesAccounted fails t when a line of data (a list Parse read as
// l, reporting warn) is dropped without a word: every line that is not
// blank, a comment (`#` or `!` first) or a list header (headerLine) must
// be an entry, a duplicate, a reported bad line, or a hosts line whose
// names are all standard ones (hostsNames) or none before its comment.
// Past maxReported bad lines only the count is kept, and nothing is
// checked.
func checkLinesAccounted(t *testing.T, data []byte, l *List, warn error) {
	if n, _ := BadLines(warn); n > maxReported {
		return
	}
	seen := map[int]bool{}
	for e := range l.All() {
		seen[e.Line] = true
	}
	for _, d := range l.Duplicates() {
		seen[d.Line] = true
	}
	for _, pe := range parseErrors(warn) {
		seen[pe.Line] = true
	}
	for line, text := range Lines(string(data)) {
		text = strings.TrimSpace(text)
		if text == "" || text[0] == '#' || text[0] == '!' || seen[line] {
			continue
		}
		if c, ok := commentless(text); ok && headerLine(c) {
			continue
		}
		if first, rest := nextField(text); rest != "" {
			if _, err := netip.ParseAddr(first); err == nil && hostsNamesOnly(rest) {
				continue
			}
		}
		t.Fatalf("line %d %q is neither an entry, a duplicate, a header nor reported", line, text)
	}
}

// hostsNamesOnly reports the fields of a hosts line after its address,
// up to a `#`, that are all standard names (hostsNames), or none.
func hostsNamesOnly(rest string) bool {
	for rest != "" {
		var host string
		host, rest = nextField(rest)
		if i := strings.IndexByte(host, '#'); i >= 0 {
			return i == 0 || hostsNames[strings.ToLower(host[:i])]
		}
		if !hostsNames[strings.ToLower(host)] {
			return false
		}
	}
	return true
}

// checkHeaders fails t for a line of data skipped as a list header
// (headerLine) that holds a name a list would take (entryName): any run
// of the octets a name is written with (ASCII letters, digits, `-`, `_`
// and dots, and Unicode letters, digits and marks), once each character
// is mapped as IDNA maps it (`ⓣ` a `t`, `。` a dot), whatever separates it
// from the rest of the line. Skipped, that name would be blocked nowhere
// and nobody told.
func checkHeaders(t *testing.T, data []byte) {
	for line, text := range Lines(string(data)) {
		text = strings.TrimSpace(text)
		if text == "" || text[0] == '!' {
			continue
		}
		c, ok := commentless(text)
		if !ok || !headerLine(c) {
			continue
		}
		for _, run := range nameRuns(c) {
			// A "name" under a top-level domain of digits alone is a
			// version (`[AdGuard v1.0]`): no such domain exists.
			n, err := entryName(strings.TrimLeft(run, "."), nil)
			tld := string(n[bytes.LastIndexByte(n, '.')+1:])
			if err == nil && strings.Trim(tld, "0123456789") != "" {
				t.Fatalf("line %d %q is skipped as a header, but holds the name %q (%s)", line, text, run, n)
			}
		}
	}
}

// nameRuns splits s at every character no name is written with, after
// mapping each character IDNA maps to ASCII (alone) to that, or
// leaving out one it maps to nothing (a soft hyphen), and taking one it
// refuses in a name (`⒈`) for a space.
func nameRuns(s string) []string {
	var mapped strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			mapped.WriteRune(r)
			continue
		}
		// Alone (a right-to-left letter after a Latin one breaks the
		// Bidi rule), but a mark after a letter.
		probe, lead := string(r), 0
		if unicode.IsMark(r) {
			probe, lead = "x"+probe, 1
		}
		switch a, err := idna.Lookup.ToASCII(probe); {
		case err != nil: // refused in a name: it ends one
			mapped.WriteByte(' ')
		case !strings.HasPrefix(a, "xn--"):
			mapped.WriteString(a[lead:])
		default:
			mapped.WriteRune(r)
		}
	}
	return strings.FieldsFunc(mapped.String(), func(r rune) bool {
		if r < utf8.RuneSelf {
			return r != '.' && !entryOctet[presname.Lower(byte(r))]
		}
		return !unicode.IsLetter(r) && !unicode.IsNumber(r) && !unicode.IsMark(r)
	})
}

// checkBracketReports fails t for a line reported as ErrBracketLine
// naming a name (`write each name on a line of its own: NAME`) that is
// not a stored name or, on a line in ASCII, not in the line (in any case).
func checkBracketReports(t *testing.T, data []byte, warn error) {
	const lead = "write each name on a line of its own: "
	for _, pe := range parseErrors(warn) {
		if !errors.Is(pe.Err, ErrBracketLine) {
			continue
		}
		msg := pe.Err.Error()
		i := strings.LastIndex(msg, lead)
		if i < 0 {
			continue
		}
		n := strings.TrimSuffix(msg[i+len(lead):], ")")
		line := lineOf(data, pe.Line)
		if norm, err := NormalizeName(n); err != nil || norm != n {
			t.Fatalf("line %d %q reported naming %q, which is no stored name (%q, %v)", pe.Line, line, n, norm, err)
		}
		if isASCII(line) && !strings.Contains(strings.ToLower(line), n) {
			t.Fatalf("line %d %q reported naming %q, which is not in it", pe.Line, line, n)
		}
	}
}

// checkSecondSOA fails t when a policy zone file's (data, which Parse
// read reporting warn) second SOA at its apex is not reported
// (rpz.ErrSecondSOA) once each, or another record is; and when the
// file's records, read as a zone transfer with its SOA repeated at the
// end (rpz.FromRecords), report ErrSecondSOA at all. The reference reads
// the file with miekg/dns's zone parser: checked for a file it reads
// without error whose first record is an SOA, which names the apex.
func checkSecondSOA(t *testing.T, data []byte, warn error) {
	if n, _ := BadLines(warn); n > maxReported || bytes.Contains(data, []byte(byteOrderMark)) {
		return
	}
	reported := 0
	for _, pe := range parseErrors(warn) {
		if errors.Is(pe.Err, rpz.ErrSecondSOA) {
			reported++
		}
	}
	const noOrigin = "dnsfence-no-origin.invalid." // rpz's origin until $ORIGIN
	zp := dns.NewZoneParser(bytes.NewReader(data), noOrigin, "")
	zp.SetDefaultTTL(3600)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok && len(rrs) < 10_000; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if zp.Err() != nil || len(rrs) == 0 || rrs[0].Header().Rrtype != dns.TypeSOA {
		return
	}
	// The apex is the first SOA's owner, written relative (with no
	// $ORIGIN before it) taken below the root; a name written relative
	// is below the apex so named, or below the root for an SOA written
	// relative (the zone unnamed).
	apex, base := rrs[0].Header().Name, rrs[0].Header().Name
	if SameName(apex, noOrigin) {
		apex, base = ".", "."
	} else if rel, ok := strings.CutSuffix(apex, "."+noOrigin); ok {
		apex, base = rel+".", "."
	}
	inFull := func(name string) string {
		if SameName(name, noOrigin) {
			return base
		}
		if rel, ok := strings.CutSuffix(name, "."+noOrigin); ok {
			if base == "." {
				return rel + "."
			}
			return rel + "." + base
		}
		return name
	}
	want := 0
	xfr := make([]dns.RR, 0, len(rrs)+1)
	for i, rr := range rrs {
		rr = dns.Copy(rr)
		rr.Header().Name = inFull(rr.Header().Name)
		if i > 0 && rr.Header().Rrtype == dns.TypeSOA && SameName(rr.Header().Name, apex) {
			want++
		}
		xfr = append(xfr, rr)
	}
	if reported != want {
		t.Fatalf("%q: %d second SOA records at the apex %s, %d reported (%v)", data, want, apex, reported, warn)
	}
	xfr = append(xfr, xfr[0])
	rpz.FromRecords(apex, xfr, rpz.Handler{Problem: func(p rpz.Problem) {
		if errors.Is(p.Err, rpz.ErrSecondSOA) {
			t.Fatalf("%q read as a transfer: %s reported: %v", data, p.Owner, p.Err)
		}
	}})
}
