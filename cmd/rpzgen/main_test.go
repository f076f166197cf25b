package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestShippedRPZIsCurrent fails when configs/rpz/tiktok.rpz is out of
// date with the lists it is made from: it runs the rpzgen command that
// configs/embed.go gives to go generate, with -check.
func TestShippedRPZIsCurrent(t *testing.T) {
	src, err := os.ReadFile("../../configs/embed.go")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^//go:generate go run \.\./cmd/rpzgen (.*)$`).FindSubmatch(src)
	require.NotNil(t, m, "configs/embed.go has the go:generate line of rpzgen")
	t.Chdir("../../configs")
	var out, errOut bytes.Buffer
	rc := run(append([]string{"-check"}, strings.Fields(string(m[1]))...), &out, &errOut, time.Now)
	assert.Equal(t, 0, rc, "configs/rpz/tiktok.rpz is out of date with the lists: run go generate ./configs\n%s", errOut.String())
	assert.Contains(t, out.String(), "is up to date")
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "block.txt")
	allow := filepath.Join(dir, "allow.txt")
	zone := filepath.Join(dir, "out.rpz")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbytedance.com # comment\n"), 0o644))
	require.NoError(t, os.WriteFile(allow, []byte("ok.bytedance.com\n"), 0o644))
	day := func(s string) func() time.Time {
		return func() time.Time {
			d, err := time.Parse("2006-01-02", s)
			require.NoError(t, err)
			return d
		}
	}
	gen := func(now func() time.Time, extra ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		rc := run(append(append([]string{"-o", zone, "-allow", allow}, extra...), list), &out, &errOut, now)
		return rc, out.String(), errOut.String()
	}
	serialOf := func() uint32 {
		data, err := os.ReadFile(zone)
		require.NoError(t, err)
		l, err := blocklist.Parse(zone, data)
		require.NoError(t, err)
		s, ok := l.Serial()
		require.True(t, ok)
		return s
	}

	rc, out, errOut := gen(day("2026-03-04"))
	require.Equal(t, 0, rc, errOut)
	assert.Equal(t, "wrote "+zone+" (serial 2026030400)\n", out)
	first, err := os.ReadFile(zone)
	require.NoError(t, err)
	l, err := blocklist.Parse(zone, first)
	require.NoError(t, err)
	for q, want := range map[string]blocklist.Action{"tiktok.com": blocklist.ActionNXDOMAIN, "a.tiktok.com": blocklist.ActionNXDOMAIN,
		"ok.bytedance.com": blocklist.ActionPassthru, "x.ok.bytedance.com": blocklist.ActionPassthru, "www.bytedance.com": blocklist.ActionNXDOMAIN} {
		_, tr, ok := l.MatchTrigger(q)
		require.True(t, ok, q)
		assert.Equal(t, want, tr.Action, q)
	}

	rc, out, _ = gen(day("2026-03-05"))
	assert.Equal(t, 0, rc)
	assert.Equal(t, zone+" is up to date (serial 2026030400)\n", out, "an unchanged zone keeps its serial")
	again, err := os.ReadFile(zone)
	require.NoError(t, err)
	assert.Equal(t, first, again)

	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbytedance.com # comment\ncapcut.com\n"), 0o644))
	rc, _, errOut = gen(day("2026-03-04"), "-check")
	assert.Equal(t, 1, rc)
	assert.Contains(t, errOut, "out of date")
	unchanged, err := os.ReadFile(zone)
	require.NoError(t, err)
	assert.Equal(t, first, unchanged, "-check writes nothing")

	rc, _, _ = gen(day("2026-03-04"))
	assert.Equal(t, 0, rc)
	assert.Equal(t, uint32(2026030401), serialOf(), "a second change on the same day")
	rc, _, _ = gen(day("2026-03-04"), "-check")
	assert.Equal(t, 0, rc)

	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\n"), 0o644))
	rc, _, _ = gen(day("2026-04-01"))
	assert.Equal(t, 0, rc)
	assert.Equal(t, uint32(2026040100), serialOf(), "a later day")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 3, "no temporary file is left behind")

	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbad..name\n"), 0o644))
	rc, _, errOut = gen(day("2026-04-02"))
	assert.Equal(t, 2, rc)
	assert.Contains(t, errOut, "block.txt:2: empty label")
	assert.Equal(t, uint32(2026040100), serialOf(), "a bad list changes nothing")

	var o, e bytes.Buffer
	assert.Equal(t, 2, run([]string{list}, &o, &e, time.Now), "-o is required")
	assert.Equal(t, 2, run([]string{"-o", zone}, &o, &e, time.Now), "a list is required")
	assert.Equal(t, 2, run([]string{"-o", zone, filepath.Join(dir, "missing.txt")}, &o, &e, time.Now))
}

func TestNextSerial(t *testing.T) {
	day := time.Date(2026, 3, 4, 23, 59, 0, 0, time.UTC)
	for _, tc := range []struct{ old, want uint32 }{
		{0, 2026030400},
		{7, 2026030400},
		{2026030300, 2026030400},
		{2026030400, 2026030401},
		{2026030499, 2026030500},
		{4000000000, 4000000001},
	} {
		assert.Equal(t, tc.want, NextSerial(tc.old, day), "after %d", tc.old)
	}
}
