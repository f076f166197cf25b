package resolver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// guardSteps applies each edit as a reload does (held or applied, peaks
// kept), returning the error of each step.
type guardSteps struct {
	t    *testing.T
	path string
	s    *Snapshot
}

func newGuardSteps(t *testing.T, conf string, files map[string]string) *guardSteps {
	path := writeConfig(t, conf, files, "127.0.0.1:1")
	return &guardSteps{t: t, path: path, s: loadSnapshot(t, path, nil)}
}

func (g *guardSteps) step(force bool, edit map[string]string) error {
	g.t.Helper()
	for name, content := range edit {
		require.NoError(g.t, os.WriteFile(filepath.Join(filepath.Dir(g.path), name), []byte(content), 0o644))
	}
	next := loadSnapshot(g.t, g.path, g.s)
	if err := errors.Join(heldChanges(g.s, next)...); err != nil && !force {
		return err
	}
	next.keepPeaks(g.s, force)
	g.s = next
	return nil
}

// Entries of a list moved to another list of the policy, then dropped
// from there: the first list lost 60 of its 90 entries of the last SIGHUP,
// each reload within max_shrink of every list it changed.
func TestBaseLostThroughAnotherListIsHeld(t *testing.T) {
	a := strings.SplitAfter(namesUnder("a", 90), "\n")
	g := newGuardSteps(t, rangesConfig, map[string]string{
		"networks.txt": "127.2.0.0/16\n", "tiktok.txt": namesUnder("a", 90), "bytedance.txt": namesUnder("x", 200)})
	require.NoError(t, g.step(false, map[string]string{
		"tiktok.txt":    namesUnder("b", 60) + strings.Join(a[60:], ""),
		"bytedance.txt": namesUnder("x", 200) + strings.Join(a[:60], ""),
	}), "a reorganisation: a0..a59 still blocked by bytedance.txt")
	err := g.step(false, map[string]string{"bytedance.txt": namesUnder("x", 200)})
	require.ErrorIs(t, err, ErrShrink, "60 of tiktok.txt's 90 entries of the last SIGHUP no longer block")
}

// Response-IP triggers replaced a third at a time: baseReplaced walks
// name triggers only.
func TestAddressTriggerReplacementsAddUpUntilSIGHUP(t *testing.T) {
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]`, `block: ["tiktok.txt", "ip.rpz"]`, 1)
	ips := func(third int, from, to int) string {
		var b strings.Builder
		for i := from; i < to; i++ {
			fmt.Fprintf(&b, "32.%d.%d.0.10.rpz-ip CNAME .\n", i, third)
		}
		return b.String()
	}
	g := newGuardSteps(t, conf, map[string]string{"tiktok.txt": "tiktok.com\n", "ip.rpz": rpzHead + ips(1, 0, 90)})
	var err error
	for i, body := range []string{ips(2, 0, 30) + ips(1, 30, 90), ips(2, 0, 60) + ips(1, 60, 90), ips(2, 0, 90)} {
		if err = g.step(false, map[string]string{"ip.rpz": rpzHead + body}); err != nil {
			t.Logf("step %d held: %v", i+1, err)
			break
		}
	}
	require.ErrorIs(t, err, ErrShrink, "all 90 answer-address triggers of the last SIGHUP replaced, none held")
}

// IXFRs replacing a zone's triggers a third at a time are held at the
// second, measured by Delta against the base (no walk of the zone).
func TestZoneReplacementsAddUpByDelta(t *testing.T) {
	const zone = "rpz.example.gov."
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]`, `block: ["zone.rpz"]`, 1)
	var b strings.Builder
	b.WriteString(rpzHead)
	for i := range 90 {
		fmt.Fprintf(&b, "a%d.example CNAME .\n", i)
	}
	path := writeConfig(t, conf, map[string]string{"zone.rpz": b.String()}, "127.0.0.1:1")
	prev := loadSnapshot(t, path, nil)
	name := filepath.Join(filepath.Dir(path), "zone.rpz")
	recs := func(p string, from, to int) func(rpz.Handler) {
		var rrs []dns.RR
		for i := from; i < to; i++ {
			r, err := dns.NewRR(fmt.Sprintf("%s%d.example.%s 300 IN CNAME .", p, i, zone))
			require.NoError(t, err)
			rrs = append(rrs, r)
		}
		return func(h rpz.Handler) { rpz.FromRecords(zone, rrs, h) }
	}
	var err error
	for step := range 3 {
		n, uerr := prev.Lists[name].Update([32]byte{byte(step + 1)}, uint32(8+step), recs("a", step*30, step*30+30), recs("b", step*30, step*30+30))
		require.NoError(t, uerr)
		next := prev.withList(name, n)
		if err = errors.Join(heldChanges(prev, next)...); err != nil {
			require.Equal(t, 1, step, "held at the second IXFR")
			break
		}
		next.keepPeaks(prev, false)
		prev = next
	}
	require.ErrorIs(t, err, ErrShrink)
	require.Contains(t, err.Error(), "60 of the 90 entries it had at the last start or SIGHUP")
}

// TestReplacedUnderAnApexOnlyListIsHeld: a policy whose RPZ list blocks
// its plain list's names alone (`a0.example CNAME .`, no `*.a0.example`).
// The plain list replaced by other names leaves those names blocked by
// the RPZ list and every name below them (www.a0.example) blocked by
// nothing: its entries no longer block and count against max_shrink.
// Replaced at once, or a third at a time until the sum since the last
// SIGHUP is past max_shrink, the change is held. Before, such an entry
// counted nowhere (its own name still blocked; the names below it are
// its second probe, counted against no list) and both were applied.
func TestReplacedUnderAnApexOnlyListIsHeld(t *testing.T) {
	var apex strings.Builder
	apex.WriteString(rpzHead)
	for i := range 9 {
		fmt.Fprintf(&apex, "a%d.example CNAME .\n", i)
	}
	conf := strings.Replace(rangesConfig, `block: ["tiktok.txt", "bytedance.txt"]`, `block: ["tiktok.txt", "bytedance.txt", "apex.rpz"]`, 1)
	files := map[string]string{"networks.txt": "127.2.0.0/16\n", "tiktok.txt": namesUnder("a", 9), "bytedance.txt": "capcut.com\n", "apex.rpz": apex.String()}
	a := strings.SplitAfter(namesUnder("a", 9), "\n")

	t.Run("at once", func(t *testing.T) {
		g := newGuardSteps(t, conf, files)
		err := g.step(false, map[string]string{"tiktok.txt": namesUnder("b", 9)})
		require.ErrorIs(t, err, ErrShrink)
		require.ErrorContains(t, err, "tiktok.txt: change held: list shrank more than reload.max_shrink allows: 9 of its 9 entries no longer block in policy government-devices")
		require.True(t, g.s.Policies[0].Decide("www.a1.example.").Blocked, "the running state kept")
	})
	t.Run("a third at a time", func(t *testing.T) {
		g := newGuardSteps(t, conf, files)
		require.NoError(t, g.step(false, map[string]string{"tiktok.txt": namesUnder("b", 3) + strings.Join(a[3:], "")}), "3 of 9: within max_shrink")
		err := g.step(false, map[string]string{"tiktok.txt": namesUnder("b", 6) + strings.Join(a[6:], "")})
		require.ErrorIs(t, err, ErrShrink, "6 of the 9 entries of the last SIGHUP no longer block")
		require.True(t, g.s.Policies[0].Decide("www.a4.example.").Blocked, "the running state kept")
	})
}
