package configs

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestShippedRPZBlocksTheDefaultLists reads rpz/tiktok.rpz as dnsfence
// reads an .rpz list and checks that it gives every name the verdict of
// the default block lists: each entry and the names below it blocked with
// NXDOMAIN, the opt-in cloud list's entries only where a default list
// blocks them too, and nothing of the do-not-block table. (The file being
// current with the lists is TestShippedRPZIsCurrent, in cmd/rpzgen.)
func TestShippedRPZBlocksTheDefaultLists(t *testing.T) {
	zone, err := loadList("rpz/tiktok.rpz", "rpz/tiktok.rpz")
	require.NoError(t, err, "every record applies")
	assert.Empty(t, zone.Duplicates())
	_, soa := zone.Serial()
	assert.True(t, soa, "the zone has an SOA")
	var defaults []*blocklist.List
	for _, path := range []string{"lists/tiktok.txt", "lists/bytedance.txt"} {
		l, err := loadList(path, path)
		require.NoError(t, err)
		defaults = append(defaults, l)
		for e := range l.All() {
			for _, q := range []string{e.Name, "www." + e.Name, "a.b." + e.Name} {
				_, tr, ok := zone.MatchTrigger(q)
				if assert.True(t, ok, "%s:%d: %s is not blocked by the zone", path, e.Line, q) {
					assert.Equal(t, blocklist.ActionNXDOMAIN, tr.Action, q)
				}
			}
		}
	}
	blockedByDefault := func(name string) bool {
		for _, l := range defaults {
			if _, ok := l.Match(name); ok {
				return true
			}
		}
		return false
	}
	cloud, err := loadList("lists/bytedance-cloud.txt", "lists/bytedance-cloud.txt")
	require.NoError(t, err)
	for e := range cloud.All() {
		_, ok := zone.Match(e.Name)
		assert.Equal(t, blockedByDefault(e.Name), ok, "opt-in entry %s", e.Name)
	}
	for _, h := range doNotBlock(t) {
		if _, ok := zone.Match(h); ok {
			t.Errorf("the zone blocks %s from the do-not-block table", h)
		}
	}
}

// TestShippedRPZLoadsInPrimaries loads rpz/tiktok.rpz as BIND and NSD load
// a zone they serve, under a zone name of a department's choosing: the
// file is meant for them.
func TestShippedRPZLoadsInPrimaries(t *testing.T) {
	for _, tc := range []struct {
		tool, pkg string
		args      []string
		want      string
	}{
		{"named-checkzone", "bind9-utils", []string{"-k", "fail", "-n", "fail", "tiktok.rpz.example.gov", "rpz/tiktok.rpz"}, "OK"},
		{"nsd-checkzone", "nsd", []string{"tiktok.rpz.example.gov", "rpz/tiktok.rpz"}, "is ok"},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			path, err := exec.LookPath(tc.tool)
			if err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("%s is required under CI=true: apt-get install %s", tc.tool, tc.pkg)
				}
				t.Skipf("%s not installed (apt-get install %s)", tc.tool, tc.pkg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, tc.args...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), tc.want)
		})
	}
}
