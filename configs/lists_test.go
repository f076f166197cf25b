package configs

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/publicsuffix"
)

var shippedLists = []string{"lists/tiktok.txt", "lists/bytedance.txt", "lists/bytedance-cloud.txt", "lists/doh-bypass.txt"}

// doNotBlock reads the reference's "do not block" names.
func doNotBlock(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../testdata/do-not-block.txt")
	require.NoError(t, err)
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, names)
	return names
}

func TestShippedListsAreSafe(t *testing.T) {
	hazards := doNotBlock(t)
	for _, path := range shippedLists {
		t.Run(filepath.Base(path), func(t *testing.T) {
			l, err := loadList(path, path)
			require.NoError(t, err, "every line parses")
			require.Greater(t, l.Len(), 10)
			assert.Empty(t, l.Duplicates())
			for e := range l.All() {
				suffix, _ := publicsuffix.PublicSuffix(e.Name)
				assert.NotEqual(t, suffix, e.Name, "%s:%d: %s is a public suffix", path, e.Line, e.Name)
			}
			for _, h := range hazards {
				if strings.Contains(h, "*") {
					for e := range l.All() {
						if coversPattern(e.Name, h) {
							t.Errorf("%s:%d: entry %s blocks names of the pattern %s from the do-not-block table", path, e.Line, e.Name, h)
						}
					}
					continue
				}
				// An entry matching a hazard means the entry equals it or
				// is a parent of it.
				if e, ok := l.Match(h); ok {
					t.Errorf("%s:%d: entry %s blocks %s from the do-not-block table", path, e.Line, e.Name, h)
				}
			}
		})
	}
}

// coversPattern reports whether entry equals a name that pattern matches, or
// is a parent of one. pattern is matched label by label from the right with
// path.Match ("ns-*.awsdns-*.org"), so an entry covers it when it has at most
// as many labels and each of its labels matches the pattern's label at the
// same place.
func coversPattern(entry, pattern string) bool {
	el := strings.Split(entry, ".")
	pl := strings.Split(pattern, ".")
	if len(el) > len(pl) {
		return false
	}
	pl = pl[len(pl)-len(el):]
	for i := range el {
		if ok, err := path.Match(pl[i], el[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

func TestCoversPattern(t *testing.T) {
	for _, tc := range []struct {
		entry, pattern string
		want           bool
	}{
		{"awsdns-12.org", "ns-*.awsdns-*.org", true},
		{"ns-1.awsdns-12.org", "ns-*.awsdns-*.org", true},
		{"x.ns-1.awsdns-12.org", "ns-*.awsdns-*.org", false},
		{"awsdns-12.com", "ns-*.awsdns-*.org", false},
		{"awsdns.org", "ns-*.awsdns-*.org", false},
		{"kunlunsl.com", "kunlun*.com", true},
		{"tiktokcdn.com.w.kunlunsl.com", "kunlun*.com", false},
	} {
		t.Run(tc.entry+" "+tc.pattern, func(t *testing.T) {
			assert.Equal(t, tc.want, coversPattern(tc.entry, tc.pattern))
		})
	}
}

// overlaps lists every entry of one list that equals, or sits below, an
// entry of another list, as "file:line: name sits under file:line: name".
func overlaps(lists []*blocklist.List) []string {
	var out []string
	for _, l := range lists {
		for e := range l.All() {
			for _, other := range lists {
				if other == l {
					continue
				}
				if o, ok := other.Match(e.Name); ok {
					out = append(out, fmt.Sprintf("%s:%d: %s sits under %s:%d: %s", l.File(), e.Line, e.Name, other.File(), o.Line, o.Folded()))
				}
			}
		}
	}
	return out
}

func TestOverlaps(t *testing.T) {
	a, err := blocklist.Parse("a.txt", []byte("tiktok.com\nexample.org\n"))
	require.NoError(t, err)
	b, err := blocklist.Parse("b.txt", []byte("x.example.org\nexample.net\ntiktok.com\n"))
	require.NoError(t, err)
	c, err := blocklist.Parse("c.txt", []byte("org.example\nnottiktok.com\n"))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{
		"a.txt:1: tiktok.com sits under b.txt:3: tiktok.com",
		"b.txt:1: x.example.org sits under a.txt:2: example.org",
		"b.txt:3: tiktok.com sits under a.txt:1: tiktok.com",
	}, overlaps([]*blocklist.List{a, b, c}))
}

// TestShippedListsDoNotOverlap: no list holds a name that another list
// already holds or covers (an entry equal to, or below, another list's
// entry), so that every name has one profile and moving an entry between
// lists is one edit.
func TestShippedListsDoNotOverlap(t *testing.T) {
	var lists []*blocklist.List
	for _, path := range shippedLists {
		l, err := loadList(path, path)
		require.NoError(t, err)
		lists = append(lists, l)
	}
	assert.Empty(t, overlaps(lists))
}

// evidenceCode is a header line defining an evidence code:
// "#   CODE  repository path ...".
var evidenceCode = regexp.MustCompile(`^#   ([A-Za-z0-9]{2,})  +\S`)

// TestShippedListsCarryEvidence: every entry's trailing comment names at
// least one evidence code that the list's header defines, and the header
// names every code's public source.
func TestShippedListsCarryEvidence(t *testing.T) {
	for _, path := range shippedLists {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			codes := map[string]bool{}
			lines := strings.Split(string(data), "\n")
			for _, line := range lines {
				if m := evidenceCode.FindStringSubmatch(line); m != nil {
					codes[m[1]] = true
				}
			}
			require.NotEmpty(t, codes, "%s: the header defines no evidence codes", path)
			for i, line := range lines {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				_, comment, ok := strings.Cut(line, "#")
				if !assert.True(t, ok, "%s:%d: entry without an evidence comment", path, i+1) {
					continue
				}
				named := false
				for _, w := range strings.FieldsFunc(comment, func(r rune) bool {
					return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
				}) {
					named = named || codes[w]
				}
				assert.True(t, named, "%s:%d: the comment names no evidence code of the header: %s", path, i+1, comment)
			}
		})
	}
}

// entriesLine is a list header's count: "# Entries: 293 = ...".
var entriesLine = regexp.MustCompile(`^# Entries: ([0-9]+)\b`)

// TestShippedListsCountTheirEntries: a list header that states its number
// of entries ("# Entries: N = ...", the figure README's table repeats)
// states the number the list has.
func TestShippedListsCountTheirEntries(t *testing.T) {
	stated := 0
	for _, path := range shippedLists {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			l, err := blocklist.Parse(path, data)
			require.NoError(t, err)
			for i, line := range strings.Split(string(data), "\n") {
				if m := entriesLine.FindStringSubmatch(line); m != nil {
					stated++
					assert.Equal(t, m[1], fmt.Sprint(l.Len()), "%s:%d: the header's entry count", path, i+1)
				}
			}
		})
	}
	assert.Positive(t, stated, "no list header states its entry count")
}

func TestShippedListsBlockTheObvious(t *testing.T) {
	tiktok, err := loadList("lists/tiktok.txt", "lists/tiktok.txt")
	require.NoError(t, err)
	for _, name := range []string{"www.tiktok.com", "api16-normal-c-useast1a.tiktokv.com", "p16-sign.tiktokcdn-us.com", "v16m.tiktokcdn.com", "musical.ly", "x.tiktokv.com.edgekey.net"} {
		_, ok := tiktok.Match(name)
		assert.True(t, ok, name)
	}
	for _, name := range []string{"nottiktok.com", "akamaized.net", "a.akamaized.net", "edgekey.net", "fastly.net", "app-measurement.com", "kuaishou.com", "example.org"} {
		e, ok := tiktok.Match(name)
		assert.False(t, ok, "%s matched by %s", name, e.Name)
	}
	bytedance, err := loadList("lists/bytedance.txt", "lists/bytedance.txt")
	require.NoError(t, err)
	_, ok := bytedance.Match("www.capcut.com")
	assert.True(t, ok)
}

func TestEmbeddedFilesMatchShipped(t *testing.T) {
	for _, path := range []string{"lists/tiktok.txt", "lists/bytedance.txt", "lists/bytedance-cloud.txt", DefaultName} {
		embedded, err := FS.ReadFile(path)
		require.NoError(t, err)
		onDisk, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, onDisk, embedded, path)
	}
}

// loadList reads and parses a shipped list file.
func loadList(path, name string) (*blocklist.List, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return blocklist.Parse(name, data)
}
