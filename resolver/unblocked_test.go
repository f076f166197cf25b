package resolver

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// movesConfig is rangesConfig with a second blocking policy whose range
// file the government range may be moved into: what that policy blocks
// and allows is filled in by each case.
const movesConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
policies:
  - name: government-devices
    client_files: ["networks.txt"]
    block: ["tiktok.txt", "bytedance.txt"]
  - name: team
    client_files: ["team.txt"]
    {{team}}
`

// Devices moved to another blocking policy are held when they lose
// anything the government policy blocked: a list the other policy does
// not have, or a name under a block entry that its allow list or a
// passthru trigger lets through (which the government policy's own
// entries, all still blocked there, do not show). A move to a policy
// that blocks as much applies.
func TestRangeMovedToAPolicyThatBlocksLessIsHeldForEachName(t *testing.T) {
	tests := []struct {
		name  string
		team  string // the team policy's block and allow keys
		files map[string]string
		held  string // in the error; "" when the move applies
	}{
		{
			name: "a block list the other policy lacks",
			team: `block: ["bytedance.txt"]`,
			held: "1 of tiktok.txt no longer listed; 1 *.name no longer blocked (a *.name stands for the names below it), first *.tiktok.com; SIGHUP accepts it",
		},
		{
			name:  "an allow entry below a block entry",
			team:  `block: ["tiktok.txt", "bytedance.txt"]` + "\n    allow: [\"www.txt\"]",
			files: map[string]string{"www.txt": "www.tiktok.com\n"},
			held:  "www.tiktok.com (allowed by www.txt:1)",
		},
		{
			name:  "a passthru trigger below a block entry",
			team:  `block: ["tiktok.txt", "bytedance.txt", "pass.rpz"]`,
			files: map[string]string{"pass.rpz": rpzHead + "www.tiktok.com CNAME rpz-passthru.\n"},
			held:  "www.tiktok.com (allowed by pass.rpz:5)",
		},
		{
			name: "a policy that blocks as much",
			team: `block: ["bytedance.txt", "tiktok.txt"]`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := rangesFiles("127.2.0.0/16\n")
			files["team.txt"] = "127.0.0.40/32\n"
			for name, content := range tc.files {
				files[name] = content
			}
			prev, next := snapshotsOf(t, strings.Replace(movesConfig, "{{team}}", tc.team, 1), files,
				map[string]string{"team.txt": "127.0.0.40/32\n127.2.0.0/17\n"})
			err := errors.Join(heldChanges(prev, next)...)
			if tc.held == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrExempted)
			msg := strings.ReplaceAll(err.Error(), filepath.Dir(prev.Config.File)+"/", "")
			assert.Contains(t, msg, "127.2.0.0/17 of policy team takes devices of 127.2.0.0/16 out of blocking policy government-devices")
			assert.Contains(t, msg, tc.held)
		})
	}
}

// Devices moved to a blocking policy whose RPZ list blocks tiktok.com
// alone (no `*.tiktok.com`) keep the apex blocked and lose every name
// below it, which the government policy's plain entry blocked: the move
// is held, and the devices' www.tiktok.com stays blocked until SIGHUP.
func TestRangeMovedToAnApexOnlyBlockIsHeld(t *testing.T) {
	const ip = "127.0.174.1"
	up := startUpstreamAt(t, ip, nil)
	files := rangesFiles("127.0.174.0/24\n")
	files["team.txt"] = "127.0.0.40/32\n"
	files["apex.rpz"] = rpzHead + "tiktok.com CNAME .\n"
	f := startFenceAt(t, ip, strings.Replace(movesConfig, "{{team}}", `block: ["apex.rpz", "bytedance.txt"]`, 1), files, up.addr)
	r := reloaderOf(f)
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.174.5", "www.tiktok.com."))

	writeAtomic(t, filepath.Join(f.dir, "team.txt"), "127.0.0.40/32\n127.0.174.0/25\n")
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrExempted)
	assert.Equal(t, "127.0.174.0/25 of policy team takes devices of 127.0.174.0/24 out of blocking policy government-devices: "+
		"change held: names a blocking policy blocked would be allowed: 1 *.name no longer blocked (a *.name stands for the names below it), first *.tiktok.com; SIGHUP accepts it", err.Error())
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.174.5", "www.tiktok.com."), "government device released at once")

	require.NoError(t, r.Reload(true), "SIGHUP applies it")
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.174.5", "www.tiktok.com."))
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.174.5", "tiktok.com."))
}

// The guard asks a policy's answer-address boundaries whenever either
// side has response-IP triggers: an allow list's as well as a block
// list's (one list of each, here), a boundary just past a prefix (a
// passthru /24 widened to the /23 around it, inside a blocked /16), and
// triggers replaced by others of the same count, which no size guard
// sees, count against their list.
func TestAnswerAddressChangesAreHeld(t *testing.T) {
	const kept = "16.0.0.0.10.rpz-ip CNAME .\n24.0.2.0.10.rpz-ip CNAME rpz-passthru.\n"
	const blocked = "24.0.2.0.192.rpz-ip CNAME .\n24.0.3.0.192.rpz-ip CNAME .\n24.0.4.0.192.rpz-ip CNAME .\n"
	base := map[string]string{
		"tiktok.txt": "tiktok.com\n",
		"cdn.rpz":    rpzHead + kept + blocked,
		"allow.rpz":  rpzHead + "32.1.100.51.198.rpz-ip CNAME rpz-passthru.\n",
		"allow.txt":  "press.example\n",
	}
	tests := []struct {
		name, file, content string
		kind                error
		held                string
	}{
		{"an allow list's answer address over a blocked /24", "allow.rpz",
			rpzHead + "32.1.100.51.198.rpz-ip CNAME rpz-passthru.\n24.0.2.0.192.rpz-ip CNAME rpz-passthru.\n",
			ErrExempted, "1 name now allowed (a *.name stands for the names below it), first answer address 192.0.2.0 (allowed by "},
		{"a passthru /24 widened to its /23", "cdn.rpz",
			rpzHead + "16.0.0.0.10.rpz-ip CNAME .\n23.0.2.0.10.rpz-ip CNAME rpz-passthru.\n" + blocked,
			ErrExempted, "answer address 10.0.3.0 (allowed by "},
		{"response-IP triggers replaced", "cdn.rpz",
			rpzHead + kept + strings.ReplaceAll(blocked, ".192.", ".203."),
			ErrShrink, "cdn.rpz: change held: list shrank more than reload.max_shrink allows: 3 of its 5 entries no longer block in policy government-devices"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev, next := snapshotsOf(t, rpzGuardConfig, base, map[string]string{tc.file: tc.content})
			err := errors.Join(heldChanges(prev, next)...)
			require.ErrorIs(t, err, tc.kind)
			assert.Contains(t, err.Error(), tc.held)
		})
	}
}

// Two lists holding the same names, both replaced: each is held for its
// own entries, though the first list's entry is the one that decided
// every name before.
func TestListsSharingNamesReplacedAreEachHeld(t *testing.T) {
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"], files["bytedance.txt"] = namesUnder("a", 4), namesUnder("a", 4)
	prev, next := snapshotsOf(t, rangesConfig, files, map[string]string{"tiktok.txt": namesUnder("b", 4), "bytedance.txt": namesUnder("c", 4)})
	err := errors.Join(heldChanges(prev, next)...)
	require.ErrorIs(t, err, ErrShrink)
	for _, file := range []string{"tiktok.txt", "bytedance.txt"} {
		assert.Contains(t, err.Error(), file+": change held: list shrank more than reload.max_shrink allows: 4 of its 4 entries no longer block")
	}
}

// A held exemption says how many names are allowed now, each once
// however many probes asked it (a block entry's and the allow entry's
// own), and lists the first maxLogged of them.
func TestExemptionErrorCountsEachNameOnce(t *testing.T) {
	dir := func(s *Snapshot) string { return filepath.Dir(s.Config.File) + "/" }
	tests := []struct {
		name  string
		files map[string]string // rpzGuardConfig's, edited
		want  string            // the error, the files' folder cut
	}{
		{"one name", map[string]string{"allow.rpz": rpzHead + "www.tiktok.com CNAME rpz-passthru.\n"},
			"policy government-devices: change held: names a blocking policy blocked would be allowed: " +
				"1 name now allowed (a *.name stands for the names below it), first www.tiktok.com (allowed by allow.rpz:5); SIGHUP accepts it"},
		{"a name and the names below, asked twice", map[string]string{"allow.txt": "tiktok.com\n"},
			"policy government-devices: change held: names a blocking policy blocked would be allowed: " +
				"2 names now allowed (a *.name stands for the names below it), first tiktok.com (allowed by allow.txt:1), *.tiktok.com (allowed by allow.txt:1); SIGHUP accepts it"},
	}
	base := map[string]string{"tiktok.txt": "tiktok.com\n", "cdn.rpz": rpzHead, "allow.rpz": rpzHead, "allow.txt": ""}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev, next := snapshotsOf(t, rpzGuardConfig, base, tc.files)
			err := errors.Join(heldChanges(prev, next)...)
			require.ErrorIs(t, err, ErrExempted)
			assert.Equal(t, tc.want, strings.ReplaceAll(err.Error(), dir(prev), ""))
		})
	}
	t.Run("more than are listed", func(t *testing.T) {
		names := namesUnder("a", maxLogged+5)
		prev, next := snapshotsOf(t, rpzGuardConfig, map[string]string{"tiktok.txt": names, "cdn.rpz": rpzHead, "allow.rpz": rpzHead, "allow.txt": ""},
			map[string]string{"allow.txt": names})
		err := errors.Join(heldChanges(prev, next)...)
		require.ErrorIs(t, err, ErrExempted)
		assert.Contains(t, err.Error(), fmt.Sprintf("%d names now allowed", 2*(maxLogged+5)))
		assert.Equal(t, maxLogged, strings.Count(err.Error(), "(allowed by "))
	})
}

// A policy that blocks from this reload on (shadow mode turned off, or a
// new policy) took nothing out of a block: it applies whatever its lists
// hold, replaced in the same write or not.
func TestPolicyStartingToBlockApplies(t *testing.T) {
	shadow := strings.Replace(rangesConfig, `    block: ["tiktok.txt", "bytedance.txt"]`,
		`    block: ["tiktok.txt", "bytedance.txt"]`+"\n    action: log", 1)
	added := rangesConfig + `  - name: contractors
    clients: ["127.3.0.0/16"]
    block: ["contractors.txt"]
`
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"] = namesUnder("a", 4)
	tests := []struct {
		name, was, now string
		list           string // the list replaced with the configuration
	}{
		{"shadow mode turned off", shadow, rangesConfig, "tiktok.txt"},
		{"a blocking policy added", rangesConfig, added, "contractors.txt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev, next := snapshotsOf(t, tc.was, files, map[string]string{
				"dnsfence.yaml": strings.ReplaceAll(tc.now, "{{upstreams}}", `["127.0.0.1:1"]`),
				tc.list:         namesUnder("b", 4),
			})
			require.NoError(t, errors.Join(heldChanges(prev, next)...))
		})
	}
}

// A list whose response-IP triggers are all replaced by as many name
// triggers keeps its size and leaves the policy no answer address to
// block: the addresses it blocked are asked all the same, and held.
func TestResponseIPTriggersTurnedToNamesAreHeld(t *testing.T) {
	prev, next := snapshotsOf(t, rpzGuardConfig, map[string]string{"tiktok.txt": "tiktok.com\n", "allow.rpz": rpzHead, "allow.txt": "",
		"cdn.rpz": rpzHead + "24.0.2.0.192.rpz-ip CNAME .\n24.0.3.0.192.rpz-ip CNAME .\n24.0.4.0.192.rpz-ip CNAME .\n"},
		map[string]string{"cdn.rpz": rpzHead + "a.example CNAME .\nb.example CNAME .\nc.example CNAME .\n"})
	err := errors.Join(heldChanges(prev, next)...)
	require.ErrorIs(t, err, ErrShrink)
	assert.Contains(t, err.Error(), "cdn.rpz: change held: list shrank more than reload.max_shrink allows: 3 of its 3 entries no longer block in policy government-devices")
}

// A block list two blocking policies share, cut or replaced past
// max_shrink at once or a third at a time, is held by one error: the
// first guard that holds it (the size, the entries no longer blocking,
// or those of the last SIGHUP) marks it for the rest.
func TestListSharedByPoliciesIsHeldOnce(t *testing.T) {
	shared := rangesConfig + `  - name: contractors
    clients: ["127.3.0.0/16"]
    block: ["tiktok.txt"]
`
	tests := []struct {
		name  string
		edits []string // tiktok.txt, one reload each; the last is held
	}{
		{"cut", []string{namesUnder("b", 2)}},
		{"replaced", []string{namesUnder("b", 9)}},
		{"replaced a third at a time", []string{
			namesUnder("b", 3) + strings.Join(strings.SplitAfter(namesUnder("a", 9), "\n")[3:], ""),
			namesUnder("b", 6) + strings.Join(strings.SplitAfter(namesUnder("a", 9), "\n")[6:], ""),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := rangesFiles("127.2.0.0/16\n")
			files["tiktok.txt"] = namesUnder("a", 9)
			g := newGuardSteps(t, shared, files)
			last := len(tc.edits) - 1
			for _, edit := range tc.edits[:last] {
				require.NoError(t, g.step(false, map[string]string{"tiktok.txt": edit}))
			}
			err := g.step(false, map[string]string{"tiktok.txt": tc.edits[last]})
			require.ErrorIs(t, err, ErrShrink)
			assert.Equal(t, 1, strings.Count(err.Error(), "tiktok.txt: change held"), "%v", err)
		})
	}
}

// Entries moved to another list of the policy still block: a list that
// lost a few of its last SIGHUP's entries a reload at a time, and gave
// others to bytedance.txt, is applied while what no list blocks any more
// stays within max_shrink.
func TestEntriesMovedToAnotherListAreNotCountedGone(t *testing.T) {
	a := strings.SplitAfter(namesUnder("a", 10), "\n")
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"] = namesUnder("a", 10)
	g := newGuardSteps(t, rangesConfig, files)
	require.NoError(t, g.step(false, map[string]string{"tiktok.txt": namesUnder("b", 2) + strings.Join(a[2:], "")}))
	require.NoError(t, g.step(false, map[string]string{
		"tiktok.txt":    namesUnder("b", 2) + strings.Join(a[5:9], ""),
		"bytedance.txt": "capcut.com\n" + strings.Join(a[2:5], ""),
	}), "a0, a1 and a9 no longer blocked: 3 of 10; a2..a4 moved")
}

// Devices moved to another blocking policy are held when they lose an
// answer address the government policy blocked: its response-IP list
// missing there, or one address of the blocked /24 allowed.
func TestRangeMovedToAPolicyThatBlocksFewerAddressesIsHeld(t *testing.T) {
	conf := strings.Replace(movesConfig, `block: ["tiktok.txt", "bytedance.txt"]`, `block: ["tiktok.txt", "bytedance.txt", "ip.rpz"]`, 1)
	tests := []struct {
		name, team, held string
	}{
		{"the response-IP list lacking", `block: ["tiktok.txt", "bytedance.txt"]`, "1 of ip.rpz no longer listed; SIGHUP accepts it"},
		{"an address allowed", `block: ["tiktok.txt", "bytedance.txt", "ip.rpz"]` + "\n    allow: [\"pass.rpz\"]",
			"answer address 192.0.2.1 (allowed by pass.rpz:5)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := rangesFiles("127.2.0.0/16\n")
			files["team.txt"] = "127.0.0.40/32\n"
			files["ip.rpz"] = rpzHead + "24.0.2.0.192.rpz-ip CNAME .\n"
			files["pass.rpz"] = rpzHead + "32.1.2.0.192.rpz-ip CNAME rpz-passthru.\n"
			prev, next := snapshotsOf(t, strings.Replace(conf, "{{team}}", tc.team, 1), files,
				map[string]string{"team.txt": "127.0.0.40/32\n127.2.0.0/17\n"})
			err := errors.Join(heldChanges(prev, next)...)
			require.ErrorIs(t, err, ErrExempted)
			assert.Contains(t, strings.ReplaceAll(err.Error(), filepath.Dir(prev.Config.File)+"/", ""), tc.held)
		})
	}
}

// The answer addresses a list blocked at the last SIGHUP are gone from
// it only when the list no longer has a blocking trigger for the prefix
// and the policy no longer blocks its first address: a trigger kept whose
// first address a passthru /24 lets through (as it did before), one moved
// to another list, and the passthru triggers themselves are not lost, so
// two of five blocking triggers lost a reload at a time apply.
func TestAnswerAddressBaseCountsWhatNoLongerBlocks(t *testing.T) {
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]`, `block: ["tiktok.txt", "cdn.rpz", "other.rpz"]`, 1)
	const (
		kept = "16.0.0.0.10.rpz-ip CNAME .\n24.0.0.0.10.rpz-ip CNAME rpz-passthru.\n" +
			"32.1.0.0.172.rpz-ip CNAME rpz-passthru.\n32.2.0.0.172.rpz-ip CNAME rpz-passthru.\n" +
			"32.3.0.0.172.rpz-ip CNAME rpz-passthru.\n32.4.0.0.172.rpz-ip CNAME rpz-passthru.\n"
		b1, b2, b3, b4 = "24.0.1.0.192.rpz-ip CNAME .\n", "24.0.2.0.192.rpz-ip CNAME .\n", "24.0.3.0.192.rpz-ip CNAME .\n", "24.0.4.0.192.rpz-ip CNAME .\n"
	)
	g := newGuardSteps(t, conf, map[string]string{"tiktok.txt": "tiktok.com\n", "allow.rpz": rpzHead, "allow.txt": "",
		"cdn.rpz": rpzHead + kept + b1 + b2 + b3 + b4, "other.rpz": rpzHead + "x.example CNAME .\n"})
	require.NoError(t, g.step(false, map[string]string{"cdn.rpz": rpzHead + kept + "24.0.11.0.192.rpz-ip CNAME .\n" + b2 + b3 + b4}))
	require.NoError(t, g.step(false, map[string]string{
		"cdn.rpz":   rpzHead + kept + "24.0.11.0.192.rpz-ip CNAME .\n" + b4,
		"other.rpz": rpzHead + "x.example CNAME .\n" + b3,
	}), "192.0.1.0/24 and 192.0.2.0/24 no longer blocked: 2 of 5; 192.0.3.0/24 moved")
}

// A /24 trigger inside a /16 of the same list, both replaced: the /16's
// addresses on either side of the /24 are asked apart, with the /24's in
// between, and the /16 still counts once.
func TestNestedAddressTriggersReplacedCountOnceEach(t *testing.T) {
	prev, next := snapshotsOf(t, rpzGuardConfig, map[string]string{"tiktok.txt": "tiktok.com\n", "allow.rpz": rpzHead, "allow.txt": "",
		"cdn.rpz": rpzHead + "16.0.0.0.10.rpz-ip CNAME .\n24.0.5.0.10.rpz-ip CNAME .\nx.example CNAME .\ny.example CNAME .\n"},
		map[string]string{"cdn.rpz": rpzHead + "16.0.0.0.11.rpz-ip CNAME .\n24.0.5.0.11.rpz-ip CNAME .\nz.example CNAME .\ny.example CNAME .\n"})
	err := errors.Join(heldChanges(prev, next)...)
	require.ErrorIs(t, err, ErrShrink)
	assert.Contains(t, err.Error(), "3 of its 4 entries no longer block in policy government-devices")
}

// IXFRs that take passthru triggers out of a zone block more: measured by
// Delta against the zone of the last SIGHUP, only blocking triggers count
// as gone, so one of six replaced and one more removed, with three
// passthru triggers, apply.
func TestZoneUpdatesRemovingPassthruAreNotCountedGone(t *testing.T) {
	const zone = "rpz.example.gov."
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]`, `block: ["zone.rpz"]`, 1)
	var b strings.Builder
	b.WriteString(rpzHead)
	for i := range 6 {
		fmt.Fprintf(&b, "a%d.example CNAME .\n", i)
	}
	for i := range 3 {
		fmt.Fprintf(&b, "p%d.example CNAME rpz-passthru.\n", i)
	}
	path := writeConfig(t, conf, map[string]string{"zone.rpz": b.String()}, "127.0.0.1:1")
	prev := loadSnapshot(t, path, nil)
	name := filepath.Join(filepath.Dir(path), "zone.rpz")
	recs := func(lines ...string) func(rpz.Handler) {
		var rrs []dns.RR
		for _, l := range lines {
			target := "." // a0..a5 block, p0..p2 let through
			if strings.HasPrefix(l, "p") {
				target = "rpz-passthru."
			}
			r, err := dns.NewRR(l + "." + zone + " 300 IN CNAME " + target)
			require.NoError(t, err)
			rrs = append(rrs, r)
		}
		return func(h rpz.Handler) { rpz.FromRecords(zone, rrs, h) }
	}
	for step, change := range [][2][]string{
		{{"a0.example"}, {"b0.example"}},
		{{"a1.example", "p0.example", "p1.example", "p2.example"}, nil},
	} {
		n, err := prev.Lists[name].Update([32]byte{byte(step + 1)}, uint32(8+step), recs(change[0]...), recs(change[1]...))
		require.NoError(t, err)
		next := prev.withList(name, n)
		require.NoError(t, errors.Join(heldChanges(prev, next)...), "IXFR %d", step+1)
		next.keepPeaks(prev, false)
		prev = next
	}
}

// Devices moved to a policy whose RPZ list blocks each apex of the
// government list alone lose the names below every one: all are counted,
// the first maxLogged named.
func TestRangeMovedToApexOnlyBlocksNamesTheFirstOnes(t *testing.T) {
	n := maxLogged + 5
	var apex strings.Builder
	apex.WriteString(rpzHead)
	for i := range n {
		fmt.Fprintf(&apex, "a%d.example CNAME .\n", i)
	}
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"], files["team.txt"], files["apex.rpz"] = namesUnder("a", n), "127.0.0.40/32\n", apex.String()
	prev, next := snapshotsOf(t, strings.Replace(movesConfig, "{{team}}", `block: ["apex.rpz", "bytedance.txt"]`, 1), files,
		map[string]string{"team.txt": "127.0.0.40/32\n127.2.0.0/17\n"})
	err := errors.Join(heldChanges(prev, next)...)
	require.ErrorIs(t, err, ErrExempted)
	assert.Contains(t, err.Error(), fmt.Sprintf("%d *.names no longer blocked (a *.name stands for the names below it), first *.a0.example, ", n))
	assert.Equal(t, maxLogged, strings.Count(err.Error(), "*.a"), "%v", err)
}

// A list of one entry at the last SIGHUP that grew, then lost that entry,
// lost all it had: held, though against the state running it lost only
// half.
func TestSingleEntryBaseLostIsHeld(t *testing.T) {
	files := rangesFiles("127.2.0.0/16\n")
	g := newGuardSteps(t, rangesConfig, files)
	require.NoError(t, g.step(false, map[string]string{"tiktok.txt": "tiktok.com\nx.example\n"}))
	err := g.step(false, map[string]string{"tiktok.txt": "x.example\n"})
	require.ErrorIs(t, err, ErrShrink)
	assert.Contains(t, err.Error(), "tiktok.txt: change held: list shrank more than reload.max_shrink allows: 1 of the 1 entries it had at the last start or SIGHUP no longer block")
}
