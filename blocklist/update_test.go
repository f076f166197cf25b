package blocklist

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const updateZone = "rpz.example.gov."

func rrs(t testing.TB, lines ...string) []dns.RR {
	t.Helper()
	out := make([]dns.RR, 0, len(lines))
	for _, s := range lines {
		rr, err := dns.NewRR(s)
		require.NoError(t, err, s)
		out = append(out, rr)
	}
	return out
}

func transferList(t testing.TB, records []dns.RR) *List {
	t.Helper()
	l, err := transferListWarned(records)
	require.NoError(t, err)
	return l
}

// transferListWarned is the list a zone transfer of records builds, and
// what FromZone says of its records (a conflict, a record skipped).
func transferListWarned(records []dns.RR) (*List, error) {
	return FromZone("axfr://127.0.0.1/rpz.example.gov", [32]byte{}, len(records), func(h rpz.Handler) (rpz.Zone, error) {
		return rpz.FromRecords(updateZone, records, h), nil
	})
}

func feed(records []dns.RR) func(rpz.Handler) {
	return func(h rpz.Handler) { rpz.FromRecords(updateZone, records, h) }
}

// verdicts is what l answers for each name and address: the action and
// owner of the trigger that matches, or "-".
func verdicts(l *List, names []string, addrs []string) []string {
	var out []string
	for _, n := range names {
		if e, t, ok := l.MatchTrigger(n); ok {
			out = append(out, n+" "+t.Action.String()+" "+e.Owner(t))
		} else {
			out = append(out, n+" -")
		}
	}
	for _, a := range addrs {
		if e, t, ok := l.MatchIP(netip.MustParseAddr(a)); ok {
			out = append(out, a+" "+t.Action.String()+" "+e.Owner(t))
		} else {
			out = append(out, a+" -")
		}
	}
	return out
}

// TestUpdate applies IXFR-style changes to a list and checks that it then
// answers exactly as a list built from the whole new zone, and that the
// list it started from is unchanged.
func TestUpdate(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"rpz.example.gov. 60 NS a.",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"*.tiktok.com.rpz.example.gov. 60 CNAME .",
		"douyin.com.rpz.example.gov. 60 CNAME *.",
		"*.bytedance.com.rpz.example.gov. 60 CNAME rpz-drop.",
		"press.tiktok.com.rpz.example.gov. 60 CNAME rpz-passthru.",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .",
		"48.zz.db8.2001.rpz-ip.rpz.example.gov. 60 CNAME rpz-drop.",
	)
	names := []string{"tiktok.com.", "www.tiktok.com.", "press.tiktok.com.", "douyin.com.", "a.douyin.com.",
		"bytedance.com.", "x.bytedance.com.", "capcut.com.", "www.capcut.com.", "lemon8.com.", "a.b.lemon8.com."}
	addrs := []string{"192.0.2.1", "198.51.100.7", "2001:db8::1", "2001:db8:1::1"}
	for _, tc := range []struct {
		name           string
		removed, added []string
	}{
		{name: "add names and a prefix",
			added: []string{"capcut.com.rpz.example.gov. 60 CNAME .", "*.lemon8.com.rpz.example.gov. 60 CNAME *.",
				"24.0.100.51.198.rpz-ip.rpz.example.gov. 60 CNAME ."}},
		{name: "remove the exact trigger of a name that keeps its wildcard",
			removed: []string{"tiktok.com.rpz.example.gov. 60 CNAME ."}},
		{name: "remove the wildcard of a name that keeps its exact trigger",
			removed: []string{"*.tiktok.com.rpz.example.gov. 60 CNAME ."}},
		{name: "remove both, then a passthru below goes on alone",
			removed: []string{"tiktok.com.rpz.example.gov. 60 CNAME .", "*.tiktok.com.rpz.example.gov. 60 CNAME ."}},
		{name: "change an action",
			removed: []string{"douyin.com.rpz.example.gov. 60 CNAME *."},
			added:   []string{"douyin.com.rpz.example.gov. 60 CNAME rpz-drop."}},
		{name: "remove prefixes",
			removed: []string{"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .", "48.zz.db8.2001.rpz-ip.rpz.example.gov. 60 CNAME rpz-drop."}},
		{name: "add below a removed name",
			removed: []string{"tiktok.com.rpz.example.gov. 60 CNAME ."},
			added:   []string{"a.b.tiktok.com.rpz.example.gov. 60 CNAME *."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := transferList(t, base)
			before := verdicts(old, names, addrs)
			removed, added := rrs(t, tc.removed...), rrs(t, tc.added...)
			l, err := old.Update([32]byte{2}, 2, feed(removed), feed(added))
			require.NoError(t, err)

			var whole []dns.RR
			for _, rr := range base {
				if !slices.ContainsFunc(removed, func(r dns.RR) bool { return dns.IsDuplicate(r, rr) }) {
					whole = append(whole, rr)
				}
			}
			want := transferList(t, append(whole, added...))
			assert.Equal(t, verdicts(want, names, addrs), verdicts(l, names, addrs))
			assert.Equal(t, want.Len(), l.Len())
			assert.Equal(t, before, verdicts(old, names, addrs), "the list updated from is unchanged")
			assert.Equal(t, len(base)-2, old.Len())
			serial, soa := l.Serial()
			assert.Equal(t, uint32(2), serial)
			assert.True(t, soa, "the update's serial is an SOA's, which every IXFR carries")
			assert.Equal(t, [32]byte{2}, l.Sum())
			var got, all []string
			for e, t := range l.AllTriggers() {
				got = append(got, e.Owner(t)+" "+t.Action.String())
			}
			for e, t := range want.AllTriggers() {
				all = append(all, e.Owner(t)+" "+t.Action.String())
			}
			assert.ElementsMatch(t, all, got)
		})
	}
}

// TestUpdateChained applies updates to updated lists, as IXFR after IXFR
// does: a trigger added then removed, a trigger removed then added back
// with another action, the lists updated from unchanged, and every list
// answering as one built whole from its zone; past MaxOverlay changes,
// Update asks for a whole build.
func TestUpdateChained(t *testing.T) {
	zone := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"*.tiktok.com.rpz.example.gov. 60 CNAME .",
		"douyin.com.rpz.example.gov. 60 CNAME *.",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .",
	)
	names := []string{"tiktok.com.", "www.tiktok.com.", "douyin.com.", "a.douyin.com.", "capcut.com.", "a.capcut.com.", "lemon8.com."}
	addrs := []string{"192.0.2.1", "198.51.100.1"}
	steps := []struct{ removed, added []string }{
		{added: []string{"capcut.com.rpz.example.gov. 60 CNAME .", "*.capcut.com.rpz.example.gov. 60 CNAME rpz-drop."}},
		{removed: []string{"capcut.com.rpz.example.gov. 60 CNAME .", "douyin.com.rpz.example.gov. 60 CNAME *."},
			added: []string{"lemon8.com.rpz.example.gov. 60 CNAME .", "24.0.100.51.198.rpz-ip.rpz.example.gov. 60 CNAME ."}},
		{removed: []string{"*.capcut.com.rpz.example.gov. 60 CNAME rpz-drop.", "24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME ."},
			added: []string{"douyin.com.rpz.example.gov. 60 CNAME rpz-drop.", "capcut.com.rpz.example.gov. 60 CNAME rpz-passthru."}},
	}
	l := transferList(t, zone)
	var lists []*List
	var wants [][]string
	for i, st := range steps {
		removed, added := rrs(t, st.removed...), rrs(t, st.added...)
		next, err := l.Update([32]byte{byte(i)}, uint32(i+2), feed(removed), feed(added))
		require.NoError(t, err, "step %d", i)
		zone = slices.DeleteFunc(zone, func(rr dns.RR) bool {
			return slices.ContainsFunc(removed, func(r dns.RR) bool { return dns.IsDuplicate(r, rr) })
		})
		zone = append(zone, added...)
		want := transferList(t, zone)
		assert.Equal(t, verdicts(want, names, addrs), verdicts(next, names, addrs), "step %d", i)
		assert.Equal(t, want.Len(), next.Len(), "step %d", i)
		for name := range want.All() {
			assert.True(t, next.Contains(name.Name), "step %d: %s", i, name.Name)
		}
		lists, wants = append(lists, next), append(wants, verdicts(want, names, addrs))
		l = next
	}
	for i, l := range lists {
		assert.Equal(t, wants[i], verdicts(l, names, addrs), "list %d unchanged by the updates after it", i)
	}

	var many []dns.RR
	for i := range MaxOverlay + 1 {
		many = append(many, &dns.CNAME{Hdr: dns.RR_Header{Name: fmt.Sprintf("n%d.example.%s", i, updateZone), Rrtype: dns.TypeCNAME,
			Class: dns.ClassINET, Ttl: 60}, Target: "."})
	}
	_, err := l.Update([32]byte{}, 9, feed(nil), feed(many))
	assert.ErrorIs(t, err, ErrNotExact, "too many changes since the whole build")

	// MaxOverlay changes since the whole build are kept as changes; one
	// more is not.
	fresh := transferList(t, rrs(t, "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5"))
	u, err := fresh.Update([32]byte{}, 2, feed(nil), feed(many[:MaxOverlay]))
	require.NoError(t, err)
	assert.Equal(t, MaxOverlay, u.Len())
	_, err = fresh.Update([32]byte{}, 2, feed(nil), feed(many))
	assert.ErrorIs(t, err, ErrNotExact, "one change over MaxOverlay")
}

// TestUpdatedMatchDoesNotAllocate: a list Update made matches without
// allocating, as a list built whole does.
func TestUpdatedMatchDoesNotAllocate(t *testing.T) {
	l := transferList(t, rrs(t, "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5", "tiktok.com.rpz.example.gov. 60 CNAME .",
		"*.douyin.com.rpz.example.gov. 60 CNAME ."))
	u, err := l.Update([32]byte{}, 2, feed(rrs(t, "tiktok.com.rpz.example.gov. 60 CNAME .")),
		feed(rrs(t, "*.tiktok.com.rpz.example.gov. 60 CNAME .")))
	require.NoError(t, err)
	for _, name := range []string{"www.tiktok.com.", "tiktok.com.", "a.douyin.com.", "example.org."} {
		assert.Zero(t, testing.AllocsPerRun(100, func() { u.Match(name) }), name)
	}
}

// TestUpdateAddedWildcardLosesToHeldName: a wildcard an update adds
// above a name the list holds does not take that name over, nor the names
// below it that the held trigger's own wildcard matches: the most specific
// trigger wins (draft-vixie-dnsop-dns-rpz §5.4), whichever of the list
// built whole and the triggers added since holds it, as in the list built
// whole from the new zone. And a trigger the update removed is no longer
// one the list contains.
func TestUpdateAddedWildcardLosesToHeldName(t *testing.T) {
	zone := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"www.tiktok.com.rpz.example.gov. 60 CNAME .",
		"*.www.tiktok.com.rpz.example.gov. 60 CNAME rpz-drop.",
		"douyin.com.rpz.example.gov. 60 CNAME .",
	)
	removed := rrs(t, "douyin.com.rpz.example.gov. 60 CNAME .")
	added := rrs(t, "*.tiktok.com.rpz.example.gov. 60 CNAME rpz-passthru.")
	l, err := transferList(t, zone).Update([32]byte{2}, 2, feed(removed), feed(added))
	require.NoError(t, err)
	want := transferList(t, append(rrs(t, zone[0].String(), zone[1].String(), zone[2].String()), added...))
	names := []string{"www.tiktok.com.", "a.www.tiktok.com.", "m.tiktok.com.", "douyin.com."}
	assert.Equal(t, []string{
		"www.tiktok.com. NXDOMAIN www.tiktok.com.rpz.example.gov.",
		"a.www.tiktok.com. drop *.www.tiktok.com.rpz.example.gov.",
		"m.tiktok.com. passthru *.tiktok.com.rpz.example.gov.",
		"douyin.com. -",
	}, verdicts(l, names, nil))
	assert.Equal(t, verdicts(want, names, nil), verdicts(l, names, nil))
	for _, n := range names[:3] {
		e, ok := l.Match(n)
		we, _ := want.Match(n)
		require.True(t, ok, n)
		assert.Equal(t, we.Name, e.Name, n)
		assert.Same(t, l, e.List, "%s: the entry is the updated list's, whichever part of it holds the trigger", n)
		te, _, ok := l.MatchTrigger(n)
		require.True(t, ok, n)
		assert.Same(t, l, te.List, n)
	}
	assert.False(t, l.Contains("douyin.com"), "removed by the update")
	assert.True(t, l.Contains("www.tiktok.com"))
	assert.True(t, l.Contains("tiktok.com"), "its wildcard, added by the update")
}

// TestUpdateLastLine: an update adds its triggers on the lines after the
// list's last, up to line 16,777,215 (an entry's line is kept in 24
// bits); past it the update is not exact, and the list is built whole
// (which reports the triggers it cannot hold), not given a trigger whose
// line wraps around to 0, which is no trigger. Adding an rpz-passthru.
// makes the list one that has a passthru.
func TestUpdateLastLine(t *testing.T) {
	at := func(line int) *List {
		l, err := FromZone("long.rpz", [32]byte{}, 1, func(h rpz.Handler) (rpz.Zone, error) {
			h.Trigger(rpz.Trigger{Owner: "tiktok.com", Line: line, Name: "tiktok.com"})
			return rpz.Zone{Origin: updateZone}, nil
		})
		require.NoError(t, err)
		return l
	}
	add := feed(rrs(t, "douyin.com.rpz.example.gov. 60 CNAME rpz-passthru."))
	old := at(maxLine - 1)
	require.False(t, old.HasPassthru())
	l, err := old.Update([32]byte{}, 2, feed(nil), add)
	require.NoError(t, err)
	e, tr, ok := l.MatchTrigger("douyin.com")
	require.True(t, ok)
	assert.Equal(t, maxLine, e.Line)
	assert.Equal(t, ActionPassthru, tr.Action)
	assert.True(t, l.HasPassthru())
	assert.False(t, old.HasPassthru(), "the list updated is unchanged")

	_, err = at(maxLine).Update([32]byte{}, 2, feed(nil), add)
	assert.ErrorIs(t, err, ErrNotExact)
}

// TestUpdateNotExact: a change that does not fit the list fails with
// ErrNotExact and leaves the list as it was, so that the caller builds the
// list from the whole zone.
func TestUpdateNotExact(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .",
	)
	for _, tc := range []struct {
		name           string
		removed, added []string
	}{
		{name: "remove a name not held", removed: []string{"douyin.com.rpz.example.gov. 60 CNAME ."}},
		{name: "remove with another action", removed: []string{"tiktok.com.rpz.example.gov. 60 CNAME *."}},
		{name: "remove a wildcard not held", removed: []string{"*.tiktok.com.rpz.example.gov. 60 CNAME ."}},
		{name: "remove a prefix not held", removed: []string{"24.0.3.0.192.rpz-ip.rpz.example.gov. 60 CNAME ."}},
		{name: "remove a prefix with another action", removed: []string{"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME rpz-passthru."}},
		{name: "add a name held", added: []string{"tiktok.com.rpz.example.gov. 60 CNAME ."}},
		{name: "add a conflicting action", added: []string{"tiktok.com.rpz.example.gov. 60 CNAME rpz-drop."}},
		{name: "add a prefix held", added: []string{"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME ."}},
		{name: "add local data", added: []string{"x.rpz.example.gov. 60 A 192.0.2.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := transferList(t, base)
			l, err := old.Update([32]byte{}, 2, feed(rrs(t, tc.removed...)), feed(rrs(t, tc.added...)))
			assert.ErrorIs(t, err, ErrNotExact)
			assert.Nil(t, l)
			_, tr, ok := old.MatchTrigger("tiktok.com.")
			require.True(t, ok)
			assert.Equal(t, ActionNXDOMAIN, tr.Action)
			_, tr, ok = old.MatchIP(netip.MustParseAddr("192.0.2.7"))
			require.True(t, ok)
			assert.Equal(t, ActionNXDOMAIN, tr.Action)
			assert.Equal(t, 2, old.Len())
		})
	}
	plain, err := Parse("l.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	_, err = plain.Update([32]byte{}, 1, feed(nil), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact, "only an RPZ list has triggers to change")

	// One prefix spelt by two records (192.0.2.0/24, and the same as an
	// IPv4-mapped IPv6 /120): removing one is the whole zone's to say,
	// which still holds the other.
	spelt := transferList(t, append(base, rrs(t, "120.200.c000.ffff.zz.rpz-ip.rpz.example.gov. 60 CNAME .")...))
	l, err := spelt.Update([32]byte{}, 2, feed(rrs(t, "24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .")), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact, "one of two spellings removed")
	assert.Nil(t, l)
	_, _, ok := spelt.MatchIP(netip.MustParseAddr("192.0.2.7"))
	assert.True(t, ok, "the list as it was")
}

// BenchmarkUpdate1M applies 100 changes to a 1,000,000-trigger list.
func BenchmarkUpdate1M(b *testing.B) {
	const n = 1_000_000
	records := make([]dns.RR, 0, n+1)
	records = append(records, &dns.SOA{Hdr: dns.RR_Header{Name: updateZone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "a.", Mbox: "b.", Serial: 1})
	cname := func(i int) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: fmt.Sprintf("host-%d.tracker%d.example.com.%s", i, i%1000, updateZone),
			Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "."}
	}
	for i := range n {
		records = append(records, cname(i))
	}
	l := transferList(b, records)
	var removed, added []dns.RR
	for i := range 50 {
		removed = append(removed, cname(i))
		added = append(added, cname(n+i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Update([32]byte{}, 2, feed(removed), feed(added)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDelta: the triggers one updated copy of a list lost and gained
// against another copy of the same list, through chained updates, from
// the changes alone (a trigger put back is no change, an action changed
// is one removed and one added); lists built apart are not compared.
func TestDelta(t *testing.T) {
	base := transferList(t, rrs(t,
		"tiktok.com.rpz.example.gov. 300 IN CNAME .",
		"*.tiktok.com.rpz.example.gov. 300 IN CNAME .",
		"capcut.com.rpz.example.gov. 300 IN CNAME .",
		"lemon8.com.rpz.example.gov. 300 IN CNAME .",
	))
	str := func(es []TriggerEntry) []string {
		var out []string
		for _, e := range es {
			name := e.Name
			if e.Trigger.Wildcard {
				name = "*." + name
			}
			out = append(out, name+" "+e.Trigger.Action.String())
		}
		slices.Sort(out)
		return out
	}
	// One: capcut.com gone, *.tiktok.com turned passthru, douyin.com new.
	one, err := base.Update([32]byte{1}, 2,
		feed(rrs(t, "capcut.com.rpz.example.gov. 300 IN CNAME .", "*.tiktok.com.rpz.example.gov. 300 IN CNAME .")),
		feed(rrs(t, "*.tiktok.com.rpz.example.gov. 300 IN CNAME rpz-passthru.", "douyin.com.rpz.example.gov. 300 IN CNAME .")))
	require.NoError(t, err)
	removed, added, ok := one.Delta(base)
	require.True(t, ok)
	assert.Equal(t, []string{"*.tiktok.com NXDOMAIN", "capcut.com NXDOMAIN"}, str(removed))
	assert.Equal(t, []string{"*.tiktok.com passthru", "douyin.com NXDOMAIN"}, str(added))
	for _, e := range removed {
		assert.Same(t, base, e.List)
	}

	// Two, from one: capcut.com back, douyin.com gone again, lemon8.com gone.
	two, err := one.Update([32]byte{2}, 3,
		feed(rrs(t, "douyin.com.rpz.example.gov. 300 IN CNAME .", "lemon8.com.rpz.example.gov. 300 IN CNAME .")),
		feed(rrs(t, "capcut.com.rpz.example.gov. 300 IN CNAME .")))
	require.NoError(t, err)
	removed, added, ok = two.Delta(one)
	require.True(t, ok)
	assert.Equal(t, []string{"douyin.com NXDOMAIN", "lemon8.com NXDOMAIN"}, str(removed))
	assert.Equal(t, []string{"capcut.com NXDOMAIN"}, str(added))
	// Against the list built whole: capcut.com is no change.
	removed, added, ok = two.Delta(base)
	require.True(t, ok)
	assert.Equal(t, []string{"*.tiktok.com NXDOMAIN", "lemon8.com NXDOMAIN"}, str(removed))
	assert.Equal(t, []string{"*.tiktok.com passthru"}, str(added))

	_, _, ok = base.Delta(transferList(t, rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME .")))
	assert.False(t, ok, "built apart")
	plain, _ := Parse("x.txt", []byte("tiktok.com\n"))
	_, _, ok = plain.Delta(plain)
	assert.False(t, ok, "not an RPZ list")
}

// TestUpdateKeepsWarnings: a list Update makes reports the records its
// zone skipped, as the list built whole from the new zone would; removing
// a skipped record is not exact (the list built whole no longer reports
// it).
func TestUpdateKeepsWarnings(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"local.example.rpz.example.gov. 60 A 192.0.2.1",
	)
	old, warn := transferListWarned(base)
	require.Error(t, warn)
	assert.Equal(t, warn, old.Warnings())
	assert.Equal(t, map[string]int{"axfr://127.0.0.1/rpz.example.gov": 1}, Skipped(old.Warnings()))

	l, err := old.Update([32]byte{}, 2, feed(nil), feed(rrs(t, "douyin.com.rpz.example.gov. 60 CNAME .")))
	require.NoError(t, err)
	assert.Equal(t, warn, l.Warnings(), "the skipped record is still in the zone")

	l, err = l.Update([32]byte{}, 3, feed(rrs(t, "local.example.rpz.example.gov. 60 A 192.0.2.1")), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact, "a skipped record removed")
	assert.Nil(t, l)
}

// TestUpdateAtReportedOwnerNotExact: a zone with two triggers at one owner
// (the block kept, the passthru reported as ErrConflict): an update that
// removes one of them is not exact, so that the list built whole reports
// what the zone then holds (nothing), where the updated list kept the
// stale conflict in its Warnings.
func TestUpdateAtReportedOwnerNotExact(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME rpz-passthru.",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"douyin.com.rpz.example.gov. 60 CNAME .",
	)
	old, warn := transferListWarned(base)
	require.ErrorIs(t, warn, ErrConflict)
	l, err := old.Update([32]byte{}, 2, feed(rrs(t, "TikTok.com.rpz.example.gov. 60 CNAME rpz-passthru.")), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact, "a trigger of a reported owner removed")
	assert.Nil(t, l)
	l, err = old.Update([32]byte{}, 2, feed(rrs(t, "TIKTOK.com.rpz.example.gov. 60 CNAME .")), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact, "the trigger held for a reported owner removed, its owner in other capitals")
	assert.Nil(t, l)
	l, err = old.Update([32]byte{}, 2, feed(rrs(t, "douyin.com.rpz.example.gov. 60 CNAME .")), feed(nil))
	require.NoError(t, err, "another owner")
	assert.Equal(t, warn, l.Warnings())
}

// TestHoldsTrigger checks HoldsTrigger against every trigger a list and
// an update of it hold, and against the same names with the other
// action, the other of name and `*.name`, and names they do not hold:
// the triggers an update removed (gone from the table) and added (in the
// overlay), a trigger removed and added back with another action, and
// response-IP triggers, whose action counts too.
func TestHoldsTrigger(t *testing.T) {
	old := transferList(t, rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"*.tiktok.com.rpz.example.gov. 60 CNAME .",
		"douyin.com.rpz.example.gov. 60 CNAME *.",
		"capcut.com.rpz.example.gov. 60 CNAME .",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME ."))
	l, err := old.Update([32]byte{2}, 2,
		feed(rrs(t, "tiktok.com.rpz.example.gov. 60 CNAME .", "douyin.com.rpz.example.gov. 60 CNAME *.",
			"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME .")),
		feed(rrs(t, "douyin.com.rpz.example.gov. 60 CNAME rpz-drop.", "*.capcut.com.rpz.example.gov. 60 CNAME rpz-passthru.",
			"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME *.")))
	require.NoError(t, err)
	holds := func(l *List) []string {
		var out []string
		for _, name := range []string{"tiktok.com", "douyin.com", "capcut.com", "192.0.2.0/24", "192.0.2.0/25", "example.com"} {
			for _, wildcard := range []bool{false, true} {
				for a := ActionNXDOMAIN; a <= ActionPassthru; a++ {
					if strings.Contains(name, "/") && wildcard {
						continue
					}
					if l.HoldsTrigger(name, Trigger{Action: a, Wildcard: wildcard}) {
						out = append(out, fmt.Sprintf("%s %v %v", name, wildcard, a))
					}
				}
			}
		}
		return out
	}
	assert.Equal(t, []string{"tiktok.com false NXDOMAIN", "tiktok.com true NXDOMAIN", "douyin.com false NODATA",
		"capcut.com false NXDOMAIN", "192.0.2.0/24 false NXDOMAIN"}, holds(old))
	assert.Equal(t, []string{"tiktok.com true NXDOMAIN", "douyin.com false drop",
		"capcut.com false NXDOMAIN", "capcut.com true passthru", "192.0.2.0/24 false NODATA"}, holds(l))
	for _, l := range []*List{old, l} {
		for e, tr := range l.AllTriggers() {
			assert.True(t, l.HoldsTrigger(e.Name, tr), "%s %+v", e.Name, tr)
		}
	}
	plain, err := Parse("tiktok.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	assert.True(t, plain.HoldsTrigger("tiktok.com", Trigger{}))
	assert.False(t, plain.HoldsTrigger("douyin.com", Trigger{}))
	var none *List
	assert.False(t, none.HoldsTrigger("tiktok.com", Trigger{}))
}

// TestUpdateSignedZone applies an IXFR of a signed policy zone as a
// change: its RRSIG and NSEC records (the apex SOA's RRSIG goes and comes
// with every serial) are no triggers and nothing the list reports, so
// they do not make the update inexact (which would build the whole zone
// again at every serial of a signed zone).
func TestUpdateSignedZone(t *testing.T) {
	const sig = " 13 3 300 20300101000000 20260101000000 12345 rpz.example.gov. " +
		"eiNTHjjuzHHrlsJKV9Gi8SXiDJKtnCBC7R6M1yx2zrs1YiAOoBkIQbVS fh7nh3JHTh0aIbiG6Hjqgos6KOUI8Q=="
	old := transferList(t, rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"rpz.example.gov. 60 RRSIG SOA"+sig,
		"rpz.example.gov. 60 NSEC tiktok.com.rpz.example.gov. SOA RRSIG NSEC",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"tiktok.com.rpz.example.gov. 60 RRSIG CNAME"+sig,
		"tiktok.com.rpz.example.gov. 60 NSEC rpz.example.gov. CNAME RRSIG NSEC"))
	require.NoError(t, old.Warnings())
	l, err := old.Update([32]byte{2}, 2,
		feed(rrs(t, "rpz.example.gov. 60 RRSIG SOA"+sig, "tiktok.com.rpz.example.gov. 60 NSEC rpz.example.gov. CNAME RRSIG NSEC")),
		feed(rrs(t, "rpz.example.gov. 60 RRSIG SOA"+strings.Replace(sig, "12345", "12346", 1),
			"tiktok.com.rpz.example.gov. 60 NSEC douyin.com.rpz.example.gov. CNAME RRSIG NSEC",
			"douyin.com.rpz.example.gov. 60 CNAME .",
			"douyin.com.rpz.example.gov. 60 RRSIG CNAME"+sig,
			"douyin.com.rpz.example.gov. 60 NSEC rpz.example.gov. CNAME RRSIG NSEC")))
	require.NoError(t, err)
	assert.Equal(t, []string{"tiktok.com NXDOMAIN tiktok.com.rpz.example.gov.", "douyin.com NXDOMAIN douyin.com.rpz.example.gov."},
		verdicts(l, []string{"tiktok.com", "douyin.com"}, nil))
	assert.NoError(t, l.Warnings())
}

// TestUpdateBesideAReportedOwnerApplies: in a zone with a reported owner
// (two triggers at tiktok.com, ErrConflict), an IXFR's changes at other
// owners are applied, not only accepted: a block trigger removed stops
// matching and one added matches.
func TestUpdateBesideAReportedOwnerApplies(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME rpz-passthru.",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"douyin.com.rpz.example.gov. 60 CNAME .",
	)
	old, warn := transferListWarned(base)
	require.ErrorIs(t, warn, ErrConflict)
	l, err := old.Update([32]byte{1}, 2, feed(rrs(t, "douyin.com.rpz.example.gov. 60 CNAME .")), feed(rrs(t, "capcut.com.rpz.example.gov. 60 CNAME .")))
	require.NoError(t, err)
	names := []string{"tiktok.com", "douyin.com", "capcut.com"}
	assert.Equal(t, []string{"tiktok.com NXDOMAIN tiktok.com.rpz.example.gov.", "douyin.com -", "capcut.com NXDOMAIN capcut.com.rpz.example.gov."},
		verdicts(l, names, nil))
	assert.Equal(t, []string{"tiktok.com NXDOMAIN tiktok.com.rpz.example.gov.", "douyin.com NXDOMAIN douyin.com.rpz.example.gov.", "capcut.com -"},
		verdicts(old, names, nil), "the list updated is unchanged")
}

// TestDeltaOfListsOfOneShapeBuiltApart: two zones built whole, of as many
// triggers with the same actions but other names, are not two copies of
// one list: Delta has no answer, so that the guard walks them.
func TestDeltaOfListsOfOneShapeBuiltApart(t *testing.T) {
	a := transferList(t, rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME .", "capcut.com.rpz.example.gov. 300 IN CNAME ."))
	b := transferList(t, rrs(t, "douyin.com.rpz.example.gov. 300 IN CNAME .", "lemon8.com.rpz.example.gov. 300 IN CNAME ."))
	removed, added, ok := b.Delta(a)
	assert.False(t, ok)
	assert.Empty(t, removed)
	assert.Empty(t, added)
	_, _, ok = a.Delta(nil)
	assert.False(t, ok, "no list to compare with")
}

// TestUpdateRemovesATriggerAnUpdateAdded: a trigger an earlier IXFR added
// (held apart from the table the list was built with) is removed by a
// later one that removes it alone, and only with the action it holds.
func TestUpdateRemovesATriggerAnUpdateAdded(t *testing.T) {
	base := transferList(t, rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME ."))
	one, err := base.Update([32]byte{1}, 2, feed(nil), feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME rpz-passthru.")))
	require.NoError(t, err)
	require.Equal(t, []string{"x.example passthru x.example.rpz.example.gov."}, verdicts(one, []string{"x.example"}, nil))

	_, err = one.Update([32]byte{2}, 3, feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME .")), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact, "x.example is held as a passthru, not a block")

	two, err := one.Update([32]byte{2}, 3, feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME rpz-passthru.")), feed(nil))
	require.NoError(t, err)
	assert.Equal(t, []string{"x.example -", "tiktok.com NXDOMAIN tiktok.com.rpz.example.gov."}, verdicts(two, []string{"x.example", "tiktok.com"}, nil))
}

// TestDeltaOfAnAddedTriggerTurnedPassthru: a trigger an earlier IXFR
// added, turned from a block to a passthru by a later one, is a change
// Delta reports both ways (the block removed, of the list before; the
// passthru added, of the list after), so that the resolver's guard asks
// the name the passthru now lets through.
func TestDeltaOfAnAddedTriggerTurnedPassthru(t *testing.T) {
	base := transferList(t, rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME ."))
	one, err := base.Update([32]byte{1}, 2, feed(nil), feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME .")))
	require.NoError(t, err)
	two, err := one.Update([32]byte{2}, 3, feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME .")),
		feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME rpz-passthru.")))
	require.NoError(t, err)
	removed, added, ok := two.Delta(one)
	require.True(t, ok)
	require.Len(t, removed, 1)
	require.Len(t, added, 1)
	assert.Equal(t, "x.example NXDOMAIN", removed[0].Name+" "+removed[0].Trigger.Action.String())
	assert.Same(t, one, removed[0].List)
	assert.Equal(t, "x.example passthru", added[0].Name+" "+added[0].Trigger.Action.String())
	assert.Same(t, two, added[0].List)
}

// TestUpdateOfTriggersAnUpdateAdded: a name trigger an earlier IXFR added
// is held (adding it again is not exact), and a response-IP trigger it
// added is one record's, which a later IXFR removes.
func TestUpdateOfTriggersAnUpdateAdded(t *testing.T) {
	base := transferList(t, rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME ."))
	one, err := base.Update([32]byte{1}, 2, feed(nil), feed(rrs(t,
		"x.example.rpz.example.gov. 300 IN CNAME .", "24.0.2.0.192.rpz-ip.rpz.example.gov. 300 IN CNAME .")))
	require.NoError(t, err)

	_, err = one.Update([32]byte{2}, 3, feed(nil), feed(rrs(t, "x.example.rpz.example.gov. 300 IN CNAME .")))
	assert.ErrorIs(t, err, ErrNotExact, "x.example added twice")

	two, err := one.Update([32]byte{2}, 3, feed(rrs(t, "24.0.2.0.192.rpz-ip.rpz.example.gov. 300 IN CNAME .")), feed(nil))
	require.NoError(t, err)
	assert.Equal(t, []string{"x.example NXDOMAIN x.example.rpz.example.gov.", "192.0.2.1 -"}, verdicts(two, []string{"x.example"}, []string{"192.0.2.1"}))
}

// TestUpdateAddingAnIPv4PrefixKeepsTheOneHoldingIPv4: an IXFR that adds
// an IPv4 prefix to a zone whose `80.zz.rpz-ip` (all of ::ffff:0:0/96)
// holds every IPv4 address keeps that prefix matching them; and a nil
// list is no RPZ list to update.
func TestUpdateAddingAnIPv4PrefixKeepsTheOneHoldingIPv4(t *testing.T) {
	old := transferList(t, rrs(t, "80.zz.rpz-ip.rpz.example.gov. 60 CNAME ."))
	l, err := old.Update([32]byte{2}, 2, feed(nil), feed(rrs(t, "24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME rpz-passthru.")))
	require.NoError(t, err)
	_, tr, ok := l.MatchIP(netip.MustParseAddr("198.51.100.1"))
	assert.True(t, ok, "::/80 still holds every IPv4 address")
	assert.Equal(t, ActionNXDOMAIN, tr.Action)
	_, tr, _ = l.MatchIP(netip.MustParseAddr("192.0.2.1"))
	assert.Equal(t, ActionPassthru, tr.Action)

	l, err = (*List)(nil).Update([32]byte{}, 1, feed(nil), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact)
	assert.Nil(t, l)
}

// TestDeltaAgainstALaterCopy: Delta is symmetric in which of the two was
// made from the other: the list built whole against its update reports
// the update's removals as added and its additions as removed.
func TestDeltaAgainstALaterCopy(t *testing.T) {
	base := transferList(t, rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME .", "capcut.com.rpz.example.gov. 300 IN CNAME ."))
	one, err := base.Update([32]byte{1}, 2, feed(rrs(t, "capcut.com.rpz.example.gov. 300 IN CNAME .")),
		feed(rrs(t, "douyin.com.rpz.example.gov. 300 IN CNAME .")))
	require.NoError(t, err)
	removed, added, ok := base.Delta(one)
	require.True(t, ok)
	require.Len(t, removed, 1)
	require.Len(t, added, 1)
	assert.Equal(t, "douyin.com", removed[0].Name)
	assert.Same(t, one, removed[0].List)
	assert.Equal(t, "capcut.com", added[0].Name)
	assert.Same(t, base, added[0].List)
}

// TestUpdateAtEitherReportedOwnerNotExact: with two owners reported (two
// triggers each), an update at either one is not exact.
func TestUpdateAtEitherReportedOwnerNotExact(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME rpz-passthru.",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		"capcut.com.rpz.example.gov. 60 CNAME rpz-passthru.",
		"capcut.com.rpz.example.gov. 60 CNAME .",
	)
	old, warn := transferListWarned(base)
	require.ErrorIs(t, warn, ErrConflict)
	for _, owner := range []string{"tiktok.com", "capcut.com"} {
		l, err := old.Update([32]byte{}, 2, feed(rrs(t, owner+".rpz.example.gov. 60 CNAME .")), feed(nil))
		assert.ErrorIs(t, err, ErrNotExact, owner)
		assert.Nil(t, l)
	}
}

// TestDeltaOfANodesTwoTriggersApart: a name's wildcard trigger removed by
// one IXFR and its exact trigger by the next are two bits of one node in
// the gone set; Delta between the two copies reports the exact trigger
// removed, read from its own bit and not the wildcard's beside it.
func TestDeltaOfANodesTwoTriggersApart(t *testing.T) {
	base := transferList(t, rrs(t,
		"tiktok.com.rpz.example.gov. 300 IN CNAME .",
		"*.tiktok.com.rpz.example.gov. 300 IN CNAME .",
	))
	one, err := base.Update([32]byte{1}, 2, feed(rrs(t, "*.tiktok.com.rpz.example.gov. 300 IN CNAME .")), feed(nil))
	require.NoError(t, err)
	two, err := one.Update([32]byte{2}, 3, feed(rrs(t, "tiktok.com.rpz.example.gov. 300 IN CNAME .")), feed(nil))
	require.NoError(t, err)

	removed, added, ok := two.Delta(one)
	require.True(t, ok)
	assert.Empty(t, added)
	require.Len(t, removed, 1)
	assert.Equal(t, "tiktok.com", removed[0].Name)
	assert.False(t, removed[0].Trigger.Wildcard)
	assert.Same(t, one, removed[0].List)

	// And back: the copy before reports the exact trigger added.
	removed, added, ok = one.Delta(two)
	require.True(t, ok)
	assert.Empty(t, removed)
	require.Len(t, added, 1)
	assert.Equal(t, "tiktok.com", added[0].Name)
	assert.Same(t, one, added[0].List)
}

// TestUpdateAtAnOwnerPastTheReportedOnes: a zone with more problems than
// are reported one by one (maxReported) names no owner past them, so any
// of them may be one whose kept trigger an update removes while the zone
// still holds the one skipped beside it: every update of such a list is
// not exact, and the list built whole says what the zone holds. Before,
// the IXFR removing tiktok.com's kept NXDOMAIN (its NODATA skipped, the
// 101st conflict) was applied, and tiktok.com was no longer blocked
// while the zone still blocked it.
func TestUpdateAtAnOwnerPastTheReportedOnes(t *testing.T) {
	base := rrs(t, "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5")
	for i := range maxReported {
		owner := fmt.Sprintf("n%d.example.rpz.example.gov.", i)
		base = append(base, rrs(t, owner+" 60 CNAME .", owner+" 60 CNAME *.")...)
	}
	base = append(base, rrs(t, "tiktok.com.rpz.example.gov. 60 CNAME .", "tiktok.com.rpz.example.gov. 60 CNAME *.")...)
	old, warn := transferListWarned(base)
	require.ErrorIs(t, warn, ErrConflict)
	n, _ := BadLines(warn)
	require.Equal(t, maxReported+1, n, "tiktok.com's conflict is past the ones reported")

	gone := rrs(t, "tiktok.com.rpz.example.gov. 60 CNAME .")
	l, err := old.Update([32]byte{}, 2, feed(gone), feed(nil))
	assert.ErrorIs(t, err, ErrNotExact)
	assert.Nil(t, l)

	// What the zone holds after that IXFR: tiktok.com's NODATA.
	var whole []dns.RR
	for _, rr := range base {
		if !dns.IsDuplicate(rr, gone[0]) {
			whole = append(whole, rr)
		}
	}
	want, _ := transferListWarned(whole)
	assert.Equal(t, []string{"tiktok.com NODATA tiktok.com.rpz.example.gov."}, verdicts(want, []string{"tiktok.com"}, nil))
}

// TestUpdateOfAnOwnerNoListHolds: a trigger added or removed whose name
// has an octet no list entry holds (FromZone reports it, ErrBadChar) makes
// the update inexact, so that the list is built whole and reports it; it
// is not stored (nor looked for) under a name of no labels.
func TestUpdateOfAnOwnerNoListHolds(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"rpz.example.gov. 60 NS a.",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
	)
	bad := rrs(t, `bad\!name.example.rpz.example.gov. 60 CNAME .`)
	_, warn := transferListWarned(append(slices.Clone(base), bad...))
	require.ErrorIs(t, warn, ErrBadChar, "FromZone reports it")
	for _, tc := range []struct {
		name           string
		removed, added []dns.RR
	}{
		{name: "added", added: bad},
		{name: "removed", removed: bad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := transferList(t, base).Update([32]byte{2}, 2, feed(tc.removed), feed(tc.added))
			require.ErrorIs(t, err, ErrNotExact)
			assert.ErrorIs(t, err, ErrBadChar)
			assert.Nil(t, l)
		})
	}
}
