package blocklist

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// updateAlphabet is the records FuzzUpdateMatchesWhole builds zones and
// IXFRs of: four owners, each with its name's trigger and its wildcard
// under four actions (so that an owner can hold two triggers, the second
// skipped as ErrConflict, and a name's two triggers change apart), two
// response-IP prefixes under two actions, one prefix spelled two ways, and
// an owner no entry can hold (reported, skipped).
var updateAlphabet = func() []string {
	var out []string
	for _, owner := range []string{"tiktok.com", "www.tiktok.com", "capcut.com", "lemon8.com"} {
		for _, wild := range []string{"", "*."} {
			for _, action := range []string{".", "*.", "rpz-passthru.", "rpz-drop."} {
				out = append(out, fmt.Sprintf("%s%s.%s 60 CNAME %s", wild, owner, updateZone, action))
			}
		}
	}
	for _, prefix := range []string{"24.0.2.0.192", "32.1.2.0.192"} {
		for _, action := range []string{".", "rpz-passthru."} {
			out = append(out, fmt.Sprintf("%s.rpz-ip.%s 60 CNAME %s", prefix, updateZone, action))
		}
	}
	return append(out,
		"128.zz.1.2.0.192.rpz-ip."+updateZone+" 60 CNAME .", // ::ffff:192.0.2.1/128: 32.1.2.0.192 spelled again
		`b\@d.example.`+updateZone+" 60 CNAME .",
	)
}()

// FuzzUpdateMatchesWhole: a chain of IXFRs applied by Update gives, each
// time Update applies one, the list FromZone builds from the zone as it
// then is: the same verdict for every name and address asked, the same
// number of entries and of bad records; when Update says it cannot
// (ErrNotExact, its only error), the list is built whole, as the zone
// source does. Delta between two copies of one list built whole is what a
// walk of both finds. The zone's records are those of the first five
// bytes' bits, in the alphabet's order; then 0xff starts the next IXFR,
// and each other byte removes (bit 7 clear) or adds (set) a record of the
// alphabet; a record removed that the zone does not hold, or added that it
// does, is left out of the IXFR, as a primary's differences never hold it.
// The fifth byte's top bit (past the alphabet's 38) puts maxReported
// conflicts of other owners before the zone's records.
func FuzzUpdateMatchesWhole(f *testing.F) {
	f.Add([]byte{0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x84})
	f.Add([]byte{0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x84, 0xff, 0x04})
	f.Add([]byte{0x03, 0x00, 0x01, 0x00, 0x00, 0x80, 0x82, 0xff, 0x01, 0x10})
	f.Add([]byte{0x00, 0x00, 0x00, 0x00, 0x0f, 0x20, 0xa2, 0xff, 0x22, 0xa1})
	f.Add([]byte{0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0xa1, 0xff, 0x21, 0xff, 0xa5})
	f.Add([]byte{0x03, 0x00, 0x00, 0x00, 0x80, 0x00}) // TestUpdateAtAnOwnerPastTheReportedOnes
	names := []string{"tiktok.com", "x.tiktok.com", "www.tiktok.com", "y.www.tiktok.com", "capcut.com",
		"z.capcut.com", "lemon8.com", "a.b.lemon8.com", "com", "douyin.com"}
	addrs := []string{"192.0.2.1", "192.0.2.9", "198.51.100.1"}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 5 || len(data) > 64 {
			return
		}
		var zone []string // the zone's records, in order
		if data[4]&0x80 != 0 {
			// maxReported conflicts first: the alphabet's own reported
			// records are then counted, not named.
			for i := range maxReported {
				owner := fmt.Sprintf("n%d.filler.%s", i, updateZone)
				zone = append(zone, owner+" 60 CNAME .", owner+" 60 CNAME *.")
			}
		}
		for k := range len(updateAlphabet) {
			if data[k/8]&(1<<(k%8)) != 0 {
				zone = append(zone, updateAlphabet[k])
			}
		}
		whole := func() *List {
			l, warn := transferListWarned(rrs(t, append([]string{updateZone + " 60 SOA a. b. 1 2 3 4 5"}, zone...)...))
			require.NotNil(t, l, "FromZone: %v", warn)
			return l
		}
		l := whole()
		base := l // the list built whole the copies since came from
		var ixfrs [][2][]string
		for _, b := range data[5:] {
			if b == 0xff || len(ixfrs) == 0 {
				ixfrs = append(ixfrs, [2][]string{})
				if b == 0xff {
					continue
				}
			}
			rec := updateAlphabet[int(b&0x7f)%len(updateAlphabet)]
			d := &ixfrs[len(ixfrs)-1]
			if b&0x80 == 0 {
				d[0] = append(d[0], rec)
			} else {
				d[1] = append(d[1], rec)
			}
		}
		for i, d := range ixfrs {
			var del, add []string
			for _, r := range d[0] {
				if j := slices.Index(zone, r); j >= 0 {
					zone = slices.Delete(zone, j, j+1)
					del = append(del, r)
				}
			}
			for _, r := range d[1] {
				if !slices.Contains(zone, r) {
					zone = append(zone, r)
					add = append(add, r)
				}
			}
			want := whole()
			prev := l
			next, err := l.Update([32]byte{byte(i + 1)}, uint32(i+2), feed(rrs(t, del...)), feed(rrs(t, add...)))
			if err != nil {
				require.ErrorIs(t, err, ErrNotExact, "IXFR %d", i)
				require.Nil(t, next)
				l, base = want, want
				continue
			}
			l = next
			what := fmt.Sprintf("IXFR %d (-%q +%q) to %q", i, del, add, zone)
			require.Equal(t, verdicts(want, names, addrs), verdicts(l, names, addrs), what)
			require.Equal(t, want.Len(), l.Len(), "%s: entries", what)
			wantBad, _ := BadLines(want.Warnings())
			gotBad, _ := BadLines(l.Warnings())
			require.Equal(t, wantBad, gotBad, "%s: bad records", what)

			for _, from := range []*List{prev, base} {
				removed, added, ok := l.Delta(from)
				require.True(t, ok, "%s: copies of one list", what)
				wr, wa := walkDelta(from, l)
				require.Equal(t, wr, deltaText(removed), "%s: removed since %p", what, from)
				require.Equal(t, wa, deltaText(added), "%s: added since %p", what, from)
			}
		}
	})
}

// walkDelta is Delta found by walking both lists' name triggers: those
// old holds that l does not hold with the same action (removed) and those
// l holds that old does not (added), as deltaText writes them.
func walkDelta(old, l *List) (removed, added []string) {
	triggers := func(x *List) map[string]string {
		m := map[string]string{}
		for e, tr := range x.AllTriggers() {
			if !strings.Contains(e.Name, "/") { // a response-IP trigger names its prefix
				m[triggerKey(e.Name, tr)] = tr.Action.String()
			}
		}
		return m
	}
	was, now := triggers(old), triggers(l)
	for k, a := range was {
		if now[k] != a {
			removed = append(removed, k+" "+a)
		}
	}
	for k, a := range now {
		if was[k] != a {
			added = append(added, k+" "+a)
		}
	}
	slices.Sort(removed)
	slices.Sort(added)
	return removed, added
}

// deltaText is Delta's entries as walkDelta writes them, sorted.
func deltaText(es []TriggerEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, triggerKey(e.Name, e.Trigger)+" "+e.Trigger.Action.String())
	}
	slices.Sort(out)
	return out
}

// triggerKey names a name trigger: the name, `*.` before it for a
// wildcard.
func triggerKey(name string, tr Trigger) string {
	if tr.Wildcard {
		return "*." + strings.ToLower(name)
	}
	return strings.ToLower(name)
}
