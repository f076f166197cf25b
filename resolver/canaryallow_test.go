package resolver

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLintAllowOverDoHCanary: an allow entry above a name of the built-in
// DoH canary (icloud.com, allowed for iCloud mail or photos, holds
// mask.icloud.com and mask-h2.icloud.com), or an RPZ passthru trigger over
// one, lets that name through past doh_canary, which a blocking policy has
// unless it says doh_canary: false: Apple devices then keep iCloud Private
// Relay on and send their DNS through Apple's relay, past every block list.
// check said nothing of it. It is a warning at the entry's line, naming
// the canary names it lets through; an allow entry of the canary name
// itself is the "both allowed and blocked" warning already, and one that
// holds no canary name, or a policy without the canary, warns of nothing.
func TestLintAllowOverDoHCanary(t *testing.T) {
	const relay = "iCloud Private Relay"
	for _, tc := range []struct {
		name, allow, block, canary string
		want                       []string // warnings that mention doh_canary
		shared                     bool     // "both allowed and blocked" of mask.icloud.com
	}{
		{name: "a parent in an allow list", allow: "# iCloud mail\nicloud.com\n",
			want: []string{`allow.txt:2: icloud.com lets mask.icloud.com and mask-h2.icloud.com through in policy "gov", past doh_canary: Apple devices then keep ` + relay + ` on and send their DNS past dnsfence; allow only the names meant below icloud.com (e.g. www.icloud.com), or set doh_canary: false to say so`}},
		{name: "a wildcard in an allow list", allow: "*.icloud.com\n",
			want: []string{`allow.txt:1: icloud.com lets mask.icloud.com and mask-h2.icloud.com through in policy "gov", past doh_canary:`}},
		{name: "an RPZ passthru wildcard in a block list", block: "$ORIGIN rpz.example.\n*.icloud.com CNAME rpz-passthru.\n",
			want: []string{`feed.rpz:2: icloud.com lets mask.icloud.com and mask-h2.icloud.com through in policy "gov", past doh_canary:`}},
		{name: "Firefox's canary as an RPZ passthru in a block list", block: "$ORIGIN rpz.example.\nuse-application-dns.net CNAME rpz-passthru.\n",
			want: []string{`feed.rpz:2: use-application-dns.net is let through in policy "gov", past doh_canary: Firefox then turns its own DNS over HTTPS on and sends its queries past dnsfence; take it out, or set doh_canary: false to say so`}},
		{name: "a parent of canary names a block list holds too", allow: "icloud.com\n", block: "$ORIGIN rpz.example.\nmask.icloud.com CNAME .\nmask-h2.icloud.com CNAME .\n",
			want: []string{`allow.txt:1: icloud.com lets mask.icloud.com and mask-h2.icloud.com through in policy "gov", past doh_canary (listed in feed.rpz:2 and feed.rpz:3 too): Apple devices then keep ` + relay + ` on and send their DNS past dnsfence; allow only the names meant below icloud.com (e.g. www.icloud.com), or set doh_canary: false and take those entries out to say so`}},
		{name: "the canary name itself in an allow list", allow: "mask.icloud.com\n", shared: true},
		{name: "a name below icloud.com", allow: "www.icloud.com\n"},
		{name: "doh_canary off", allow: "icloud.com\n", canary: "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"tiktok.txt": "tiktok.com\n", "allow.txt": tc.allow}
			cfg := "upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    allow: [allow.txt]\n"
			if tc.block != "" {
				files["feed.rpz"] = tc.block
				cfg += "    block: [tiktok.txt, feed.rpz]\n"
			} else {
				cfg += "    block: [tiktok.txt]\n"
			}
			if tc.allow == "" {
				files["allow.txt"] = "ads.tiktok.com\n"
			}
			if tc.canary != "" {
				cfg += "    doh_canary: " + tc.canary + "\n"
			}
			cfg += "  - name: press\n    clients: [\"10.1.0.0/16\"]\n    allow: [allow.txt]\n" // no block lists: no canary
			snap, err := buildConfig(t, cfg, files)
			require.NoError(t, err)
			var got []string
			shared := false
			for _, w := range snap.Lint() {
				if strings.Contains(w.Msg, "doh_canary") {
					got = append(got, strings.ReplaceAll(w.String(), filepath.Dir(snap.Config.File)+string(filepath.Separator), ""))
				}
				shared = shared || strings.Contains(w.Msg, "mask.icloud.com is both allowed and blocked")
			}
			require.Len(t, got, len(tc.want), "%q", got)
			for i, want := range tc.want {
				assert.Contains(t, got[i], want)
			}
			assert.Equal(t, tc.shared, shared)
		})
	}
}

// TestLintAllowOverBlockEntries: an allow entry above block entries of
// its policy (google.com, allowed for mail, above a DoH-bypass list's
// dns.google.com) lets them through, as allow beats block: the block
// entries block nothing there, and a DoH resolver let through is the
// devices' way past dnsfence. check warned only of an allow entry of the
// same name. It is a warning at the allow entry's line, naming the first
// three block entries with their lines and counting the rest; an allow
// entry below a block entry (a carve-out, ads.tiktok.com under
// tiktok.com) warns of nothing, nor does one in a policy that blocks
// nothing, nor does a passthru `*.name` beside an RPZ trigger for name
// alone. An RPZ passthru of a name a plain block list holds is named as
// such, and a passthru `*.name` over a plain entry of name lets the names
// below it through (`*.name`). A `*.` block trigger is judged by the names
// below it: under a wider passthru `*.` of its own zone (a carve-back, the
// longer trigger wins there) it lets nothing through, though Decide of
// its name alone is allowed.
func TestLintAllowOverBlockEntries(t *testing.T) {
	for _, tc := range []struct {
		name, allow, block, feed string
		want                     []string
	}{
		{name: "a parent of DoH resolvers", allow: "# mail\ngoogle.com\n", block: "dns.google.com\ncloudflare-dns.com\ndns64.dns.google.com\n",
			want: []string{`allow.txt:2: google.com lets dns.google.com (doh.txt:1) and dns64.dns.google.com (doh.txt:3) through in policy "gov", past its block lists (allow beats block); allow only the names meant below google.com (e.g. www.google.com), or take the block entries out if letting them through is meant`}},
		{name: "many entries counted", allow: "bytedance.com\n", block: "a.bytedance.com\nb.bytedance.com\nc.bytedance.com\nd.bytedance.com\ne.bytedance.com\n",
			want: []string{`allow.txt:1: bytedance.com lets a.bytedance.com (doh.txt:1), b.bytedance.com (doh.txt:2), c.bytedance.com (doh.txt:3) and 2 more block entries through in policy "gov"`}},
		{name: "a carve-out below a block entry", allow: "ads.tiktok.com\n", block: "dns.google.com\n"},
		{name: "an RPZ passthru of a name a block list holds", allow: "ads.tiktok.com\n", block: "dns.google.com\n", feed: "$ORIGIN rpz.example.\ndns.google.com CNAME rpz-passthru.\n",
			want: []string{`feed.rpz:2: dns.google.com is let through in policy "gov" by an RPZ passthru, past dns.google.com (doh.txt:1); take it out, or take the block entries out if letting them through is meant`}},
		{name: "an RPZ passthru of the names below a plain block entry", allow: "ads.tiktok.com\n", block: "tracker.example\n", feed: "$ORIGIN rpz.example.\n*.tracker.example CNAME rpz-passthru.\n",
			want: []string{`feed.rpz:2: tracker.example lets *.tracker.example (doh.txt:1) through in policy "gov", past its block lists (allow beats block); allow only the names meant below tracker.example (e.g. www.tracker.example)`}},
		{name: "a wildcard block trigger under a wider passthru of its own zone (a carve-back)", allow: "ads.tiktok.com\n", block: "dns.google.com\n",
			feed: "$ORIGIN rpz.example.\n*.example.com CNAME rpz-passthru.\n*.ads.example.com CNAME .\n"},
		{name: "an exact block trigger beside a passthru `*.` of its name", allow: "ads.tiktok.com\n", block: "dns.google.com\n",
			feed: "$ORIGIN rpz.example.\ntracker.example CNAME .\n*.tracker.example CNAME rpz-passthru.\n"},
		{name: "a wildcard block trigger under a parent allow entry", allow: "example.com\n", block: "dns.google.com\n", feed: "$ORIGIN rpz.example.\n*.ads.example.com CNAME .\n",
			want: []string{`allow.txt:1: example.com lets *.ads.example.com (feed.rpz:2) through in policy "gov"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"tiktok.txt": "tiktok.com\n", "doh.txt": tc.block, "allow.txt": tc.allow}
			block := "[tiktok.txt, doh.txt]"
			if tc.feed != "" {
				files["feed.rpz"] = tc.feed
				block = "[tiktok.txt, doh.txt, feed.rpz]"
			}
			snap, err := buildConfig(t, "upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    allow: [allow.txt]\n    block: "+block+
				"\n  - name: press\n    clients: [\"10.1.0.0/16\"]\n    allow: [allow.txt]\n", files)
			require.NoError(t, err)
			assertAllowOver(t, snap, tc.want)
		})
	}
}

// TestLintAllowOverResponseIPTriggers: the same for response-IP triggers:
// an allow list's trigger, or a passthru trigger, whose prefix holds the
// whole of a block trigger's (10.0.0.0/8 over 10.0.0.5/32; ::/80, which
// holds every IPv4 address to RPZ, over an IPv4 one) lets every answer it
// would block through. A narrower allow trigger (a carve-out), a wider
// passthru in the block trigger's own zone (where the longer prefix
// decides) and the same prefix in an allow list (the "both allowed and
// blocked" warning) warn of nothing new. A passthru of another block
// list lets a block trigger of its own prefix through too, named as an
// RPZ passthru's, and one over a block of its prefix and one inside it
// names both.
func TestLintAllowOverResponseIPTriggers(t *testing.T) {
	const zone = "$ORIGIN rpz.example.\n"
	for _, tc := range []struct {
		name, allow, block, block2 string
		want                       []string
	}{
		{name: "a wider allow trigger", allow: zone + "8.0.0.0.10.rpz-ip CNAME rpz-passthru.\n",
			block: zone + "32.5.0.0.10.rpz-ip CNAME .\n24.0.0.0.10.rpz-ip CNAME .\n32.1.2.0.192.rpz-ip CNAME .\n",
			want:  []string{`allow.rpz:2: 10.0.0.0/8 lets 10.0.0.5/32 (feed.rpz:2) and 10.0.0.0/24 (feed.rpz:3) through in policy "gov", past its block lists (allow beats block); allow only the addresses meant inside 10.0.0.0/8, or take the block entries out if letting them through is meant`}},
		{name: "an allow trigger holding every IPv4 address", allow: zone + "80.zz.rpz-ip CNAME .\n",
			block: zone + "32.5.0.0.10.rpz-ip CNAME .\n",
			want:  []string{`allow.rpz:2: ::/80 lets 10.0.0.5/32 (feed.rpz:2) through in policy "gov"`}},
		{name: "a wider passthru in the block trigger's own list, where the longer prefix wins", allow: zone + "ads.tiktok.com CNAME .\n",
			block: zone + "32.5.0.0.10.rpz-ip CNAME .\n80.zz.rpz-ip CNAME rpz-passthru.\n"},
		{name: "a narrower allow trigger", allow: zone + "32.5.0.0.10.rpz-ip CNAME rpz-passthru.\n", block: zone + "8.0.0.0.10.rpz-ip CNAME .\n"},
		{name: "the same prefix", allow: zone + "8.0.0.0.10.rpz-ip CNAME rpz-passthru.\n", block: zone + "8.0.0.0.10.rpz-ip CNAME .\n"},
		{name: "the same prefix as a passthru of another block list", allow: zone + "ads.tiktok.com CNAME .\n",
			block: zone + "24.0.0.0.10.rpz-ip CNAME .\n", block2: zone + "24.0.0.0.10.rpz-ip CNAME rpz-passthru.\n",
			want: []string{`feed2.rpz:2: 10.0.0.0/24 is let through in policy "gov" by an RPZ passthru, past 10.0.0.0/24 (feed.rpz:2); take it out, or take the block entries out if letting them through is meant`}},
		{name: "a passthru of another block list over a block of its prefix and one inside it", allow: zone + "ads.tiktok.com CNAME .\n",
			block: zone + "32.5.0.0.10.rpz-ip CNAME .\n8.0.0.0.10.rpz-ip CNAME .\n", block2: zone + "8.0.0.0.10.rpz-ip CNAME rpz-passthru.\n",
			want: []string{`feed2.rpz:2: 10.0.0.0/8 lets 10.0.0.5/32 (feed.rpz:2) and 10.0.0.0/8 (feed.rpz:3) through in policy "gov", past its block lists (allow beats block); allow only the addresses meant inside 10.0.0.0/8`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"tiktok.txt": "tiktok.com\n", "allow.rpz": tc.allow, "feed.rpz": tc.block}
			block := "[tiktok.txt, feed.rpz]"
			if tc.block2 != "" {
				files["feed2.rpz"] = tc.block2
				block = "[tiktok.txt, feed.rpz, feed2.rpz]"
			}
			snap, err := buildConfig(t, "upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    allow: [allow.rpz]\n    block: "+block+"\n", files)
			require.NoError(t, err)
			assertAllowOver(t, snap, tc.want)
		})
	}
}

// assertAllowOver checks snap's allow-over warnings (allowOverWarnings):
// as many as want, each holding its want, in order.
func assertAllowOver(t *testing.T, snap *Snapshot, want []string) {
	t.Helper()
	got := allowOverWarnings(snap)
	require.Len(t, got, len(want), "%q", got)
	for i, w := range want {
		assert.Contains(t, got[i], w)
	}
}

// allowOverWarnings is snap's warnings of entries that let block entries
// through (lintAllowOver), their files named relative to the
// configuration's folder.
func allowOverWarnings(snap *Snapshot) []string {
	var got []string
	for _, w := range snap.Lint() {
		if strings.Contains(w.Msg, " through in policy ") {
			got = append(got, strings.ReplaceAll(w.String(), filepath.Dir(snap.Config.File)+string(filepath.Separator), ""))
		}
	}
	return got
}

// TestLintSharedEntryKinds: "both allowed and blocked", and "is also in"
// of two block (or two allow) lists, say that two entries are the same:
// they mean the same names. A plain list's entry means its name and the
// names below it, an RPZ trigger its name alone, a `*.` trigger the names
// below its name alone, a response-IP trigger its prefix. An allow zone's
// `x.example` was "both allowed and blocked" against a block zone's
// `*.x.example`, though Decide allows x.example and blocks the names below
// it, and so was every other pairing of one name. Now two entries of one
// name and other kinds are no shared entry: where the allow entry holds
// (some of) what the block entry blocks, lintAllowOver names what it lets
// through (its skip of the "both allowed and blocked" pairs is of the same
// entry only, so each pair of lines has one warning); where the two mean
// other names (`x.example` and `*.x.example`) neither warns. A block list's
// passthru is no block: against an allow entry it is no "both allowed and
// blocked", and against another block list's block of the same names no
// "also in", where lintAllowOver says it lets that block through.
func TestLintSharedEntryKinds(t *testing.T) {
	const zone = "$ORIGIN rpz.example.\n"
	plain := "x.example\n"
	exact, wild := zone+"x.example CNAME .\n", zone+"*.x.example CNAME .\n"
	exactPass, wildPass := zone+"x.example CNAME rpz-passthru.\n", zone+"*.x.example CNAME rpz-passthru.\n"
	const take = "; take it out, or take the block entries out if letting them through is meant"
	const below = `, past its block lists (allow beats block); allow only the names meant below x.example (e.g. www.x.example), or take the block entries out if letting them through is meant`
	for _, tc := range []struct {
		name         string
		allow, block string // the first list, the second (mode)
		mode         string // "allow-block" (default), "block-block", "allow-allow"
		want         []string
	}{
		{name: "plain allow, plain block", allow: plain, block: plain,
			want: []string{`a.txt:1: x.example is both allowed and blocked (b.txt:1) in policy "gov"; allow wins`}},
		{name: "plain allow, exact block trigger", allow: plain, block: exact,
			want: []string{`a.txt:1: x.example is let through in policy "gov", past x.example (b.rpz:2)` + take}},
		{name: "plain allow, `*.` block trigger", allow: plain, block: wild,
			want: []string{`a.txt:1: x.example lets *.x.example (b.rpz:2) through in policy "gov"` + below}},
		{name: "exact allow trigger, plain block", allow: exact, block: plain,
			want: []string{`a.rpz:2: x.example is let through in policy "gov", past x.example (b.txt:1)` + take}},
		{name: "exact allow trigger, exact block trigger", allow: exactPass, block: exact,
			want: []string{`a.rpz:2: x.example is both allowed and blocked (b.rpz:2) in policy "gov"; allow wins`}},
		{name: "exact allow trigger, `*.` block trigger", allow: exact, block: wild},
		{name: "`*.` allow trigger, plain block", allow: wild, block: plain,
			want: []string{`a.rpz:2: x.example lets *.x.example (b.txt:1) through in policy "gov"` + below}},
		{name: "`*.` allow trigger, exact block trigger", allow: wildPass, block: exact},
		{name: "`*.` allow trigger, `*.` block trigger", allow: wild, block: wild,
			want: []string{`a.rpz:2: *.x.example is both allowed and blocked (b.rpz:2) in policy "gov"; allow wins`}},
		{name: "plain allow, exact passthru in a block list", allow: plain, block: exactPass},
		{name: "`*.` allow trigger, `*.` passthru in a block list", allow: wild, block: wildPass},
		{name: "one prefix", allow: zone + "8.0.0.0.10.rpz-ip CNAME .\n", block: zone + "8.0.0.0.10.rpz-ip CNAME .\n",
			want: []string{`a.rpz:2: 10.0.0.0/8 is both allowed and blocked (b.rpz:2) in policy "gov"; allow wins`}},
		{name: "block lists: plain, plain", mode: "block-block", allow: plain, block: plain,
			want: []string{`b.txt:1: x.example is also in a.txt:1`}},
		{name: "block lists: plain, exact trigger", mode: "block-block", allow: plain, block: exact},
		{name: "block lists: exact trigger, plain", mode: "block-block", allow: exact, block: plain},
		{name: "block lists: `*.` trigger, exact trigger", mode: "block-block", allow: wild, block: exact},
		{name: "block lists: a parent's `*.` trigger and an exact trigger, `*.` trigger", mode: "block-block",
			allow: wild + "a.x.example CNAME .\n", block: zone + "*.a.x.example CNAME .\n"},
		{name: "block lists: `*.` trigger, `*.` trigger", mode: "block-block", allow: wild, block: wild,
			want: []string{`b.rpz:2: *.x.example is also in a.rpz:2`}},
		{name: "block lists: exact passthru, exact trigger", mode: "block-block", allow: exactPass, block: exact,
			want: []string{`a.rpz:2: x.example is let through in policy "gov" by an RPZ passthru, past x.example (b.rpz:2)` + take}},
		{name: "block lists: exact passthru, exact passthru", mode: "block-block", allow: exactPass, block: exactPass,
			want: []string{`b.rpz:2: x.example is also in a.rpz:2`}},
		{name: "allow lists: exact trigger, exact passthru", mode: "allow-allow", allow: exact, block: exactPass,
			want: []string{`b.rpz:2: x.example is also in a.rpz:2`}},
		{name: "allow lists: exact trigger, plain", mode: "allow-allow", allow: exact, block: plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"tiktok.txt": "tiktok.com\n"}
			name := func(base, text string) string {
				if strings.HasPrefix(text, "$") {
					base += ".rpz"
				} else {
					base += ".txt"
				}
				files[base] = text
				return base
			}
			a, b := name("a", tc.allow), name("b", tc.block)
			lists := "    allow: [" + a + "]\n    block: [tiktok.txt, " + b + "]\n"
			switch tc.mode {
			case "block-block":
				lists = "    block: [" + a + ", " + b + "]\n"
			case "allow-allow":
				lists = "    allow: [" + a + ", " + b + "]\n    block: [tiktok.txt]\n"
			}
			snap, err := buildConfig(t, "upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n"+lists, files)
			require.NoError(t, err)
			var got []string
			for _, w := range snap.Lint() {
				for _, says := range []string{" is also in ", " is both allowed and blocked ", " through in policy "} {
					if strings.Contains(w.Msg, says) {
						got = append(got, strings.ReplaceAll(w.String(), filepath.Dir(snap.Config.File)+string(filepath.Separator), ""))
						break
					}
				}
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestLintAllowOverPassthruOfAnotherZone: lintAllowOver looks names up
// only where an allow entry or a passthru trigger of another list may
// match (mayAllow), not by Decide of every block trigger, and must still
// find each passthru of another zone that decides a block trigger's
// names: a `*.` passthru of the same name; a parent's `*.` passthru; a
// parent's one where the other zone has a trigger of the name itself,
// which MatchTrigger finds instead; and an RPZ allow list's `*.` trigger
// of a plain entry's name. The passthrus of the block trigger's own zone
// decide nothing for it (its own trigger is the most specific).
func TestLintAllowOverPassthruOfAnotherZone(t *testing.T) {
	const zone = "$ORIGIN rpz.example.\n"
	for _, tc := range []struct {
		name, block, feed, feed2, allow string
		want                            []string
	}{
		{name: "a `*.` passthru of the name", feed: zone + "*.x.example CNAME .\n", feed2: zone + "*.x.example CNAME rpz-passthru.\n",
			want: []string{`feed2.rpz:2: x.example lets *.x.example (feed.rpz:2) through in policy "gov"`}},
		{name: "a parent's `*.` passthru", feed: zone + "*.x.b.example CNAME .\n", feed2: zone + "*.b.example CNAME rpz-passthru.\n",
			want: []string{`feed2.rpz:2: b.example lets *.x.b.example (feed.rpz:2) through in policy "gov"`}},
		{name: "a parent's `*.` passthru where the zone blocks the name itself", feed: zone + "*.x.b.example CNAME .\n",
			feed2: zone + "*.b.example CNAME rpz-passthru.\nx.b.example CNAME .\n",
			want:  []string{`feed2.rpz:2: b.example lets *.x.b.example (feed.rpz:2) through in policy "gov"`}},
		{name: "a parent's `*.` passthru in the block trigger's own zone", feed: zone + "*.x.b.example CNAME .\n*.b.example CNAME rpz-passthru.\n"},
		{name: "an allow zone's `*.` trigger of a plain entry's name", block: "x.example\n", allow: zone + "*.x.example CNAME .\n",
			want: []string{`allow.rpz:2: x.example lets *.x.example (doh.txt:1) through in policy "gov"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"feed.rpz": tc.feed, "allow.rpz": zone + "ads.tiktok.com CNAME .\n", "doh.txt": "dns.google.com\n"}
			block := "[feed.rpz"
			if tc.feed == "" {
				files["feed.rpz"] = zone + "tiktok.com CNAME .\n"
			}
			if tc.block != "" {
				files["doh.txt"] = tc.block
			}
			block += ", doh.txt"
			if tc.feed2 != "" {
				files["feed2.rpz"] = tc.feed2
				block += ", feed2.rpz"
			}
			if tc.allow != "" {
				files["allow.rpz"] = tc.allow
			}
			snap, err := buildConfig(t, "upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    allow: [allow.rpz]\n    block: "+block+"]\n", files)
			require.NoError(t, err)
			assertAllowOver(t, snap, tc.want)
		})
	}
}
