package blocklist

import (
	"os"
	"path/filepath"
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

// FuzzParse checks that no input crashes the parser and that every stored
// entry is a valid normalised name that matches itself and its subdomains.
func FuzzParse(f *testing.F) {
	seedFiles(f, "*.list")
	f.Fuzz(func(t *testing.T, data []byte) {
		l, _ := Parse("fuzz.txt", data)
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
func FuzzParseRanges(f *testing.F) {
	seedFiles(f, "*.ranges")
	f.Fuzz(func(t *testing.T, data []byte) {
		rf, _ := ParseRanges("fuzz.txt", data)
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
