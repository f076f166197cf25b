package blocklist

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireTree checks the label tree of l: every node is found under its
// parent by its label, so no two nodes have the same parent and label,
// and the entries are the nodes with a line.
func requireTree(t testing.TB, l *List) {
	t.Helper()
	entries := 0
	for id := 1; id < len(l.nodes); id++ {
		n := l.nodes[id]
		got, ok := l.find(n.parent, l.label(uint32(id)))
		require.True(t, ok, "node %d (%q) not found under its parent", id, l.label(uint32(id)))
		require.Equal(t, uint32(id), got, "two nodes for %q under node %d", l.label(uint32(id)), n.parent)
		if n.lineNo() != 0 {
			entries++
		}
	}
	if l.acts == nil {
		require.Equal(t, l.Len(), entries)
	}
}

// TestParseSharedSuffixes covers names taking the parents they share with
// the name before them (builder.start): across a line with an error, a
// duplicate and a hosts line; a name that is a parent of the one before,
// or whose parent that one is; names that share the text of a suffix but
// not its labels; and more names than the builder holds at once (queueLen),
// with the duplicates and the parents among them.
func TestParseSharedSuffixes(t *testing.T) {
	lines := []string{
		"a.b.example.com",                         // 1
		"c.b.example.com",                         // 2: b.example.com from the name before
		"bad..b.example.com",                      // 3: an error
		"d.b.example.com",                         // 4
		"a.b.example.com",                         // 5: a duplicate of line 1
		"e.b.example.com",                         // 6
		"b.example.com",                           // 7: a parent of the name before, not yet an entry
		"x.e.b.example.com",                       // 8: below the name before but one
		"xb.example.com",                          // 9: "b.example.com" as text, not as labels
		"b.example.org",                           // 10
		"com.b.example.org",                       // 11: a label of another name's parents
		"0.0.0.0 f.b.example.com g.b.example.com", // 12: a hosts line of two names
		"*.h.b.example.com",                       // 13: the general way
		"||i.b.example.com^",                      // 14
		"B.Example.COM.",                          // 15: a duplicate of line 7, in upper case
		"example.com",                             // 16: the parent of them all
		"xx.b.example.com",                        // 17
		"x.b.example.com",                         // 18: the end of the name before
	}
	want := []string{
		"a.b.example.com@1", "c.b.example.com@2", "d.b.example.com@4", "e.b.example.com@6",
		"b.example.com@7", "x.e.b.example.com@8", "xb.example.com@9", "b.example.org@10",
		"com.b.example.org@11", "f.b.example.com@12", "g.b.example.com@12", "h.b.example.com@13",
		"i.b.example.com@14", "example.com@16", "xx.b.example.com@17", "x.b.example.com@18",
	}
	dups := []Duplicate{{Name: "a.b.example.com", Line: 5, FirstLine: 1}, {Name: "b.example.com", Line: 15, FirstLine: 7}}
	// Then names of a few parents in turn, some new ones, and repeats, for
	// several times the names the builder holds at once.
	for i := 0; i < 5*queueLen; i++ {
		line := len(lines) + 1
		name := fmt.Sprintf("h%d.t%d.example.net", i, i%3)
		if i%7 == 6 {
			name = fmt.Sprintf("h%d.t%d.example.net", i-6, (i-6)%3)
			dups = append(dups, Duplicate{Name: name, Line: line, FirstLine: line - 6})
		} else {
			want = append(want, fmt.Sprintf("%s@%d", name, line))
		}
		lines = append(lines, name)
	}
	l, err := Parse("shared.txt", []byte(strings.Join(lines, "\n")+"\n"))
	require.Error(t, err)
	assert.Equal(t, `shared.txt:3: empty label: "bad..b.example.com"`, err.Error())
	assert.Equal(t, want, entries(l))
	assert.Equal(t, dups, l.Duplicates())
	requireTree(t, l)

	assertMatches(t, l, map[string]string{
		"y.a.b.example.com.":    "a.b.example.com",
		"y.b.example.com.":      "b.example.com",
		"y.x.e.b.example.com.":  "x.e.b.example.com",
		"y.xb.example.com.":     "xb.example.com",
		"y.com.b.example.org.":  "com.b.example.org",
		"y.example.com.":        "example.com",
		"h5.t2.example.net.":    "h5.t2.example.net",
		"x.h70.t1.example.net.": "h70.t1.example.net",
	})
	for _, query := range []string{"example.org.", "c.example.org.", "t0.example.net.", "example.net.", "com."} {
		_, ok := l.Match(query)
		assert.False(t, ok, query)
	}
}

// TestBuilderStart checks which labels a name takes from the last name
// added (builder.start): those of the longest common suffix of the two
// that begins a label in both, and then the first label of its own.
func TestBuilderStart(t *testing.T) {
	for _, tc := range []struct {
		last, name string
		shared     string // the labels taken from the last name
		next       string // the label the walk goes on with; "" for none: the name's node was found
	}{
		{"a.b.example.com", "c.b.example.com", "b.example.com", "c"},
		{"a.b.example.com", "b.example.com", "b.example.com", ""},
		{"a.b.example.com", "a.b.example.com", "a.b.example.com", ""},
		{"b.example.com", "a.b.example.com", "b.example.com", "a"},
		{"xb.example.com", "b.example.com", "example.com", "b"},
		{"b.example.com", "xb.example.com", "example.com", "xb"},
		{"xx.b.example.com", "x.b.example.com", "b.example.com", "x"},
		{"x.b.example.com", "xx.b.example.com", "b.example.com", "xx"},
		{"example.com", "com.example.com", "example.com", "com"},
		{"example.com", "example.org", "", "org"},
		{"com.example", "example.com", "", "com"},
		{"a.example.com", "a.example.co", "", "co"},
		{"", "a.example.com", "", "com"}, // the first name
	} {
		t.Run(tc.last+" "+tc.name, func(t *testing.T) {
			b := newBuilder("t.txt", 4)
			if tc.last != "" {
				b.nodeFor([]byte("other.example.com")) // nodes the names do not share
				b.nodeFor([]byte(tc.last))
			}
			var at spot
			b.start([]byte(tc.name), &at)
			l := b.list
			l.labels = b.labels.String()
			var want uint32 // the node of the shared labels
			for _, label := range slices.Backward(strings.Split(tc.shared, ".")) {
				if label != "" {
					var ok bool
					want, ok = l.find(want, label)
					require.True(t, ok, label)
				}
			}
			assert.Equal(t, want, at.parent, "the node of %q", tc.shared)
			if tc.next == "" {
				assert.True(t, at.settled)
				assert.Zero(t, at.end)
				return
			}
			assert.Equal(t, tc.next, tc.name[at.start:at.end])
			assert.Equal(t, at.start == 0, at.settled, "settled at the name's own label")
			assert.Equal(t, l.hash(at.parent, tc.next), at.h)
		})
	}
}

// TestBuilderQueuedAsDirect checks that names added later (addLater, as
// Parse adds them) make the same nodes, in the same order, as names each
// added at once (nodeFor, as an RPZ zone adds them), and so the same
// list, whatever the two ways are mixed.
func TestBuilderQueuedAsDirect(t *testing.T) {
	var names []string
	for i := 0; i < 3*queueLen+5; i++ {
		switch i % 5 {
		case 0:
			names = append(names, fmt.Sprintf("h%d.t%d.example.com", i, i%4))
		case 1:
			names = append(names, fmt.Sprintf("n%d.new%d.example.org", i, i)) // a new parent
		case 2:
			names = append(names, fmt.Sprintf("new%d.example.org", i-1)) // the parent just made
		case 3:
			names = append(names, fmt.Sprintf("h%d.t%d.example.com", i-3, (i-3)%4)) // a repeat
		case 4:
			names = append(names, fmt.Sprintf("x.h%d.t%d.example.com", i-4, (i-4)%4)) // below one
		}
	}
	want := buildWith(t, names, func(int) bool { return true })
	for name, direct := range map[string]func(int) bool{
		"queued":  func(int) bool { return false },
		"mixed":   func(i int) bool { return i%queueLen == 3 },
		"every 2": func(i int) bool { return i%2 == 0 },
	} {
		t.Run(name, func(t *testing.T) {
			requireSameList(t, want, buildWith(t, names, direct))
		})
	}
}

// buildWith builds a list of names, normalised, each on its own line,
// adding those that direct says with nodeFor and the others with addLater.
func buildWith(t testing.TB, names []string, direct func(i int) bool) *List {
	b := newBuilder("t.txt", 4) // too small: the table grows
	for i, name := range names {
		if direct(i) {
			b.addNode(b.nodeFor([]byte(name)), []byte(name), i+1)
		} else {
			b.addLater([]byte(name), i+1)
		}
	}
	l := b.finish([32]byte{}, nil)
	requireTree(t, l)
	return l
}

// requireSameList checks that got has the nodes, labels and entries of
// want, in the same order.
func requireSameList(t testing.TB, want, got *List) {
	t.Helper()
	require.Equal(t, want.nodes, got.nodes)
	require.Equal(t, want.labels, got.labels)
	require.Equal(t, want.dups, got.dups)
	require.Equal(t, want.count, got.count)
	require.Equal(t, entries(want), entries(got))
}

// TestRPZBlockBeatsPassthruAtOneOwner: an owner with two triggers, an
// rpz-passthru. and a block (an owner has one CNAME, RFC 1034 §3.6.2;
// BIND and NSD refuse such a zone) kept the first. Written passthru first,
// or sent so by a primary, the name was let through; written block first,
// blocked: what a government device got hung on the order of two records.
// The block is now kept whichever comes first, for a name, a wildcard and
// a response-IP prefix, with the line of the block and the passthru
// reported; of two block actions the first is still kept.
func TestRPZBlockBeatsPassthruAtOneOwner(t *testing.T) {
	l, err := Parse("policy.rpz", []byte(zoneHead+strings.Join([]string{
		"a.example CNAME rpz-passthru.",           // 5
		"a.example CNAME .",                       // 6: kept over line 5
		"b.example CNAME .",                       // 7
		"b.example CNAME rpz-passthru.",           // 8: skipped
		"c.example CNAME rpz-drop.",               // 9
		"*.c.example CNAME rpz-passthru.",         // 10
		"*.c.example CNAME *.",                    // 11: kept over line 10
		"d.example CNAME rpz-passthru.",           // 12
		"*.d.example CNAME .",                     // 13
		"d.example CNAME rpz-drop.",               // 14: kept over line 12
		"*.e.example CNAME rpz-passthru.",         // 15
		"e.example CNAME .",                       // 16
		"*.e.example CNAME .",                     // 17: kept over line 15
		"f.example CNAME .",                       // 18
		"f.example CNAME rpz-drop.",               // 19: both block, the first kept
		"24.0.2.0.192.rpz-ip CNAME rpz-passthru.", // 20
		"24.0.2.0.192.rpz-ip CNAME .",             // 21: kept over line 20
		"32.9.2.0.192.rpz-ip CNAME .",             // 22
		"32.9.2.0.192.rpz-ip CNAME rpz-passthru.", // 23: skipped
	}, "\n")+"\n"))
	require.Error(t, err)
	got := triggerLines(l)
	assert.ElementsMatch(t, []string{
		"a.example@6 NXDOMAIN wildcard=false",
		"b.example@7 NXDOMAIN wildcard=false",
		"c.example@9 drop wildcard=false",
		"c.example@11 NODATA wildcard=true",
		"d.example@14 drop wildcard=false",
		"d.example@13 NXDOMAIN wildcard=true",
		"e.example@16 NXDOMAIN wildcard=false",
		"e.example@17 NXDOMAIN wildcard=true",
		"f.example@18 NXDOMAIN wildcard=false",
		"192.0.2.0/24@21 NXDOMAIN wildcard=false",
		"192.0.2.9/32@22 NXDOMAIN wildcard=false",
	}, got)
	assert.Equal(t, 11, l.Len())
	for name, want := range map[string]Action{"a.example.": ActionNXDOMAIN, "b.example.": ActionNXDOMAIN,
		"x.c.example.": ActionNODATA, "d.example.": ActionDrop, "x.e.example.": ActionNXDOMAIN} {
		_, tr, ok := l.MatchTrigger(name)
		require.True(t, ok, name)
		assert.Equal(t, want, tr.Action, name)
	}
	for _, addr := range []string{"192.0.2.1", "192.0.2.9"} {
		_, tr, ok := l.MatchIP(netip.MustParseAddr(addr))
		require.True(t, ok, addr)
		assert.Equal(t, ActionNXDOMAIN, tr.Action, addr)
	}
	var lines []string
	for _, e := range leaves(err) {
		lines = append(lines, e.Error())
	}
	assert.Equal(t, []string{
		`policy.rpz:6: a.example.rpz.example.gov.: a second trigger for this owner with another action; this one is kept, not the rpz-passthru. (line 5): a block beats an rpz-passthru. at one owner`,
		`policy.rpz:8: b.example.rpz.example.gov.: a second trigger for this owner with another action; the block is kept (line 7): a block beats an rpz-passthru. at one owner`,
		`policy.rpz:11: *.c.example.rpz.example.gov.: a second trigger for this owner with another action; this one is kept, not the rpz-passthru. (line 10): a block beats an rpz-passthru. at one owner`,
		`policy.rpz:14: d.example.rpz.example.gov.: a second trigger for this owner with another action; this one is kept, not the rpz-passthru. (line 12): a block beats an rpz-passthru. at one owner`,
		`policy.rpz:17: *.e.example.rpz.example.gov.: a second trigger for this owner with another action; this one is kept, not the rpz-passthru. (line 15): a block beats an rpz-passthru. at one owner`,
		`policy.rpz:19: f.example.rpz.example.gov.: a second trigger for this owner with another action; the first is kept (line 18)`,
		`policy.rpz:21: 24.0.2.0.192.rpz-ip.rpz.example.gov.: a second trigger for this owner with another action; this one is kept, not the rpz-passthru. (line 20): a block beats an rpz-passthru. at one owner`,
		`policy.rpz:23: 32.9.2.0.192.rpz-ip.rpz.example.gov.: a second trigger for this owner with another action; the block is kept (line 22): a block beats an rpz-passthru. at one owner`,
	}, lines)
	requireTree(t, l)

	// A transfer sends records in no order a zone's author chose: the
	// block is kept either way.
	for _, order := range [][]string{{"CNAME rpz-passthru.", "CNAME ."}, {"CNAME .", "CNAME rpz-passthru."}} {
		records := rrs(t,
			"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
			"tiktok.com.rpz.example.gov. 60 "+order[0],
			"tiktok.com.rpz.example.gov. 60 "+order[1],
		)
		x, err := transferListWarned(records)
		require.ErrorIs(t, err, ErrConflict)
		assert.NotContains(t, err.Error(), "(line", "a transfer has no lines")
		_, tr, ok := x.MatchTrigger("tiktok.com.")
		require.True(t, ok)
		assert.Equal(t, ActionNXDOMAIN, tr.Action, "%v", order)
	}
}

// triggerLines writes each trigger of l as "name@line action wildcard=bool".
func triggerLines(l *List) []string {
	var out []string
	for e, tr := range l.AllTriggers() {
		out = append(out, fmt.Sprintf("%s@%d %v wildcard=%v", e.Name, e.Line, tr.Action, tr.Wildcard))
	}
	return out
}

// TestRPZSharedSuffixes covers the parents an RPZ zone's triggers share
// with the trigger before them (builder.start): a trigger and its
// wildcard, a repeat, a conflict, a skipped record and an escaped owner in
// between.
func TestRPZSharedSuffixes(t *testing.T) {
	l, err := Parse("policy.rpz", []byte(zoneHead+strings.Join([]string{
		"a.b.example.com CNAME .",           // 5
		"*.a.b.example.com CNAME *.",        // 6
		"c.b.example.com CNAME rpz-drop.",   // 7
		"c.b.example.com CNAME .",           // 8: a conflict
		"d.b.example.com A 192.0.2.1",       // 9: skipped
		`\100.b.example.com CNAME .`,        // 10: d.b.example.com
		"a.b.example.com CNAME .",           // 11: a repeat
		"b.example.com CNAME rpz-passthru.", // 12
		"xb.example.com CNAME .",            // 13
		"x.a.b.example.com CNAME .",         // 14
	}, "\n")+"\n"))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrConflict)
	got := triggerLines(l)
	assert.Equal(t, []string{
		"a.b.example.com@5 NXDOMAIN wildcard=false",
		"a.b.example.com@6 NODATA wildcard=true",
		"c.b.example.com@7 drop wildcard=false",
		"d.b.example.com@10 NXDOMAIN wildcard=false",
		"b.example.com@12 passthru wildcard=false",
		"xb.example.com@13 NXDOMAIN wildcard=false",
		"x.a.b.example.com@14 NXDOMAIN wildcard=false",
	}, got)
	assert.Equal(t, []Duplicate{{Name: "a.b.example.com", Line: 11, FirstLine: 5}}, l.Duplicates())
	requireTree(t, l)
	e, tr, ok := l.MatchTrigger("y.a.b.example.com.")
	require.True(t, ok)
	assert.Equal(t, Entry{List: l, Name: "a.b.example.com", Line: 6}, e)
	assert.Equal(t, Trigger{Action: ActionNODATA, Wildcard: true}, tr)

	// A transfer adds its triggers the same way.
	x := transferList(t, rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"a.b.example.com.rpz.example.gov. 60 CNAME .",
		"c.b.example.com.rpz.example.gov. 60 CNAME .",
		"b.example.com.rpz.example.gov. 60 CNAME .",
		"xb.example.com.rpz.example.gov. 60 CNAME .",
	))
	var names []string
	for e := range x.All() {
		names = append(names, e.Name)
	}
	assert.Equal(t, []string{"a.b.example.com", "c.b.example.com", "b.example.com", "xb.example.com"}, names)
	requireTree(t, x)
}

// TestPlainName checks plainName, normalizeEntry's way for ASCII names,
// against normalizeAny, its general way: it takes every ASCII name that
// one takes, stores it the same, and leaves the rest to it.
func TestPlainName(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	for _, s := range []string{
		"tiktok.com", "TikTok.COM", "tiktok.com.", "_dmarc.tiktok.com", "a-b.c_d.0-9", "1.2.3.4",
		label63 + ".com", strings.Repeat("a", 64) + ".com", "com." + label63, "com." + label63 + "a",
		strings.Repeat("abcdefghi.", 25) + "com", strings.Repeat("abcdefghi.", 25) + "comx", // 253 and 254 octets
		strings.Repeat("a.", 126) + "a", strings.Repeat(".", 253), strings.Repeat("a.", 128),
		"", ".", "..", "com", "COM.", ".tiktok.com", "tiktok..com", "tiktok.com..", "tik tok.com",
		"tik$tok.com", "tiktok.com/", "bücher.example", "*.tiktok.com", "tiktok.com\x00",
	} {
		pn, ok := plainName(s, []byte("x"))
		n, err := normalizeAny(s, []byte("x"))
		if ok {
			assert.NoError(t, err, "%q", s)
			assert.Equal(t, string(n), string(pn), "%q", s)
		} else {
			assert.True(t, err != nil || !isASCII(s), "plainName does not take %q", s)
		}
	}
}

// isASCII reports whether s is ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// TestFastWayAsGeneralWay parses lines that plainEntry takes, and lines
// that it nearly takes, both as they are and indented, which sends every
// line the general way (lineContent removes the indent): the list, the
// duplicates and the errors are the same.
func TestFastWayAsGeneralWay(t *testing.T) {
	for _, line := range []string{
		"tiktok.com", "TikTok.COM.", "1.2.3.4", "1.2.3.4.", "1.2.3.a", "a.1.2.3", "0.0.0.0 tiktok.com",
		"0.0.0.0 TikTok.com.", "127.0.0.1 tiktok.com", "0.0.0.0 0.0.0.0", "0.0.0.0 localhost",
		"0.0.0.0 localhost.localdomain", "0.0.0.0 LocalHost.LocalDomain", "0.0.0.0 localhost.localdomain.",
		"127.0.0.1 1.2.3.4", "0.0.0.0 com", "0.0.0.0  tiktok.com", "0.0.0.0\ttiktok.com", "0.0.0.0 a.com b.com",
		"0.0.0.1 tiktok.com", "0.0.0.0 ", "0.0.0.0", "::1 tiktok.com", "tiktok.com.", "tiktok.com..",
		"com", "bücher.example", "a-b_c.example", strings.Repeat("a", 64) + ".com",
		strings.Repeat("abcdefghi.", 25) + "com", "tiktok.com#x", "tiktok.com #x", "tiktok.com:443",
		"0.0.0.0a.example", "0.0.0.01.example", "0.0.0.0.example", "127.0.0.1.example",
	} {
		data := "first.example\n" + line + "\n" + line + "\nlast.example\n"
		l, err := Parse("f.txt", []byte(data))
		g, gerr := Parse("f.txt", []byte(indented(data)))
		assert.Equal(t, entries(g), entries(l), "%q", line)
		assert.Equal(t, g.Duplicates(), l.Duplicates(), "%q", line)
		assert.Equal(t, fmt.Sprint(gerr), fmt.Sprint(err), "%q", line)
	}
}

// indented is data with a space before every line, after its byte-order
// mark if it has one (Lines removes that at the start of a line only).
func indented(data string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(data, "\n") {
		if line == "" {
			continue
		}
		rest, bom := strings.CutPrefix(line, byteOrderMark)
		if bom {
			b.WriteString(byteOrderMark)
		}
		b.WriteString(" ")
		b.WriteString(rest)
	}
	return b.String()
}

// TestParseUnicodeLongerThanFile parses names whose punycode is longer
// than the file: Parse makes room for as many label octets as the file
// has, which is room enough for every other name.
func TestParseUnicodeLongerThanFile(t *testing.T) {
	l, err := Parse("u.txt", []byte("ü.ü\nä.ö"))
	require.NoError(t, err)
	assert.Equal(t, []string{"xn--tda.xn--tda@1", "xn--4ca.xn--nda@2"}, entries(l))
	requireTree(t, l)
}
