package blocklist

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
		out = append(out, fmt.Sprintf("%s@%d", e.Name, e.Line))
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
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse("fuzz.txt", data)
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
			m, ok := l.Match("x." + strings.ToUpper(e.Name) + ".")
			if !ok || !strings.HasSuffix(e.Name, m.Folded()) || m.Name != strings.ToUpper(m.Folded()) {
				t.Fatalf("entry %q does not match its subdomain (got %q)", e.Name, m.Name)
			}
		}
	})
}

// FuzzParseRanges checks that no input crashes the range parser and that
// every range is canonical.
//
// The input saved the Windows way gives the same ranges and errors.
func FuzzParseRanges(f *testing.F) {
	seedFiles(f, "*.ranges")
	seedWindows(f, "127.0.0.0/24", "# c", "2001:db8::/32 # v6", "10.0.0.0/33")
	f.Fuzz(func(t *testing.T, data []byte) {
		rf, err := ParseRanges("fuzz.txt", data)
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
		}
	})
}

// FuzzMatch compares Match with a plain reference, a map of entries tried
// at every label boundary of the folded name from the left (most specific
// first), on any query name: escapes, odd bytes, empty labels.
func FuzzMatch(f *testing.F) {
	entries := []string{"tiktok.com", "a.b.example.org", "example.org", "x-y.co", "deep.a.b.c.d.e.f.net"}
	l, err := Parse("fuzz.txt", []byte(strings.Join(entries, "\n")))
	if err != nil {
		f.Fatal(err)
	}
	lines := map[string]int{}
	for i, e := range entries {
		lines[e] = i + 1
	}
	for _, s := range []string{"www.tiktok.com.", "TIKTOK.COM", `x\.tiktok.com.`, `x\\.tiktok.com.`, "a.b.example.org.", "b.example.org", "..example.org.", "com.", "", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, ok := l.Match(name)
		var buf [maxName + 2]byte
		folded, valid := fold(name, buf[:0])
		want, wantOK := "", false
		for i := 0; valid && i >= 0; i = nextLabel(folded, i) {
			if _, hit := lines[string(folded[i:])]; hit {
				want, wantOK = string(folded[i:]), true
				break
			}
		}
		if ok != wantOK || (ok && (got.Folded() != want || got.Line != lines[want])) {
			t.Fatalf("Match(%q) = %q line %d, %v; want %q, %v", name, got.Name, got.Line, ok, want, wantOK)
		}
	})
}
