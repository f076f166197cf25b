package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const fixtureLists = "-lists=testdata/shipped/a.txt,testdata/shipped/b.txt"

// TestRunFixtures runs the tool on one fixture of every format and checks
// the whole report: coverage per shipped list, names in no list grouped by
// registrable domain, names under a held (commented-out) entry, unsupported
// lines, and shipped entries that no reference mentions.
func TestRunFixtures(t *testing.T) {
	var out, errOut bytes.Buffer
	rc := run([]string{fixtureLists, "testdata/plain.txt", "testdata/hosts", "testdata/adblock.txt",
		"testdata/tiktok.yml", "testdata/v2fly/data/tiktok", "testdata/clash.list"}, &out, &errOut)
	require.Equal(t, 0, rc, errOut.String())
	assert.Empty(t, errOut.String())
	want := `== reference testdata/plain.txt (plain): 4 names, 0 unsupported lines
  covered by testdata/shipped/a.txt: 2
  covered by testdata/shipped/b.txt: 0
  in no shipped list, by registrable domain: 1
    ttapis.com: ttapis.com (line 4), api16-core.ttapis.com (line 5)

== reference testdata/hosts (plain): 3 names, 0 unsupported lines
  covered by testdata/shipped/a.txt: 1
  covered by testdata/shipped/b.txt: 0
  in no shipped list, by registrable domain: 1
    pipopay.com: new.pipopay.com (line 4), pay.pipopay.com (line 4)

== reference testdata/adblock.txt (plain): 1 names, 2 unsupported lines
  covered by testdata/shipped/a.txt: 0
  covered by testdata/shipped/b.txt: 1
  unsupported lines: 2
    testdata/adblock.txt:3: ||v*.tiktokcdn-eu.com^ (wildcards are only allowed as a leading "*.")
    testdata/adblock.txt:4: ||x.example.com^$important (adblock options ($...) are not supported)

== reference testdata/tiktok.yml (adguard): 3 names, 1 unsupported lines
  covered by testdata/shipped/a.txt: 1
  covered by testdata/shipped/b.txt: 0
  held for review (commented out in a shipped list): 1
    testdata/shipped/a.txt: volces.com: sub.volces.com (line 8)
  in no shipped list, by registrable domain: 1
    bytegoofy.com: bytegoofy.com (line 7)
  unsupported lines: 1
    testdata/tiktok.yml:9: ||v*.tiktokcdn-eu.com^ (wildcards are only allowed as a leading "*.")

== reference testdata/v2fly/data/tiktok (v2fly): 5 names, 2 unsupported lines
  covered by testdata/shipped/a.txt: 2
  covered by testdata/shipped/b.txt: 0
  in no shipped list, by registrable domain: 3
    appsflyersdk.com: roovza.launches.appsflyersdk.com (exact) (line 5)
    tiktokcdn.com: tiktokcdn.com (line 4)
    ttadsmanager.com: ads.ttadsmanager.com (exact) (testdata/v2fly/data/tiktok-ads:3)
  unsupported lines: 2
    testdata/v2fly/data/tiktok:6: keyword:tiktok (keyword rules are not domain names)
    testdata/v2fly/data/tiktok:7: regexp:^p16-.*\.tiktokcdn\.com$ (regexp rules are not domain names)

== reference testdata/clash.list (clash): 2 names, 2 unsupported lines
  covered by testdata/shipped/a.txt: 0
  covered by testdata/shipped/b.txt: 1
  in no shipped list, by registrable domain: 1
    douyin.com: douyin.com (line 2)
  unsupported lines: 2
    testdata/clash.list:4: IP-CIDR,1.2.3.4/32,no-resolve (not a domain rule)
    testdata/clash.list:5: PROCESS-NAME,com.zhiliaoapp.musically (not a domain rule)

== shipped entries in none of the 6 references
  testdata/shipped/a.txt: 2 of 4
    snssdk.com (line 4)
    onlyshipped.com (line 5)
  testdata/shipped/b.txt: 1 of 2
    larksuite.com.ttdns2.com (line 3)
`
	assert.Equal(t, want, out.String())
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"testdata/plain.txt", "plain"},
		{"testdata/hosts", "plain"},
		{"testdata/adblock.txt", "plain"},
		{"testdata/tiktok.yml", "adguard"},
		{"testdata/v2fly/data/tiktok", "v2fly"},
		{"testdata/v2fly/data/tiktok-ads", "v2fly"},
		{"testdata/clash.list", "clash"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			require.NoError(t, err)
			assert.Equal(t, tc.want, detect(tc.file, data))
		})
	}
}

// TestRunErrors: usage and read errors exit 2 with a message, never a
// partial report.
func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	badInclude := filepath.Join(dir, "data")
	require.NoError(t, os.WriteFile(badInclude, []byte("domain:tiktok.com\ninclude:absent\n"), 0o644))
	noRules := filepath.Join(dir, "x.yml")
	require.NoError(t, os.WriteFile(noRules, []byte("id: x\nname: X\n"), 0o644))
	badShipped := filepath.Join(dir, "bad.txt")
	require.NoError(t, os.WriteFile(badShipped, []byte("tiktok.com\n||x.com^$third-party\n"), 0o644))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no reference", []string{fixtureLists}, "usage: listcheck"},
		{"absent reference", []string{fixtureLists, filepath.Join(dir, "absent")}, "reading reference"},
		{"unknown format", []string{fixtureLists, "-format=csv", "testdata/plain.txt"}, `unknown format "csv"`},
		{"absent include", []string{fixtureLists, "-format=v2fly", badInclude}, "include"},
		{"YAML without rules", []string{fixtureLists, noRules}, `no "rules:" list`},
		{"absent shipped list", []string{"-lists=" + filepath.Join(dir, "absent"), "testdata/plain.txt"}, "reading shipped list"},
		{"bad shipped line", []string{"-lists=" + badShipped, "testdata/plain.txt"}, "adblock options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			assert.Equal(t, 2, run(tc.args, &out, &errOut))
			assert.Empty(t, out.String())
			assert.Contains(t, errOut.String(), tc.want)
		})
	}
}

// TestShippedListsLoad: the default shipped lists load with no error, and
// the cloud list's REVIEW entries are read as held, not blocked.
func TestShippedListsLoad(t *testing.T) {
	for _, p := range defaultLists {
		s, err := loadShipped(filepath.Join("..", "..", p))
		require.NoError(t, err, p)
		assert.Positive(t, s.list.Len(), p)
	}
	s, err := loadShipped("../../configs/lists/bytedance-cloud.txt")
	require.NoError(t, err)
	e, ok := s.held.Match("api.volces.com")
	assert.True(t, ok, "volces.com is held for review")
	assert.Equal(t, "volces.com", e.Folded())
	_, ok = s.list.Match("api.volces.com")
	assert.False(t, ok, "volces.com is not blocked")
}

// TestWindowsFiles: a reference saved the Windows way (a byte-order mark,
// CRLF line ends) gives the same report as the plain file, in every format
// that listcheck reads line by line.
func TestWindowsFiles(t *testing.T) {
	for _, tc := range []struct{ file, format string }{
		{"testdata/clash.list", "clash"},
		{"testdata/v2fly/data/tiktok", "v2fly"},
		{"testdata/plain.txt", "plain"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			// The whole folder, so that v2fly's include: lines find theirs.
			dir := t.TempDir()
			entries, err := os.ReadDir(filepath.Dir(tc.file))
			require.NoError(t, err)
			for _, e := range entries {
				if e.IsDir() {
					continue
				}
				data, err := os.ReadFile(filepath.Join(filepath.Dir(tc.file), e.Name()))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()),
					append([]byte("\ufeff"), strings.ReplaceAll(string(data), "\n", "\r\n")...), 0o644))
			}
			windows := filepath.Join(dir, filepath.Base(tc.file))
			report := func(path string) string {
				var out, errOut bytes.Buffer
				require.Equal(t, 0, run([]string{fixtureLists, path}, &out, &errOut), errOut.String())
				return strings.ReplaceAll(out.String(), path, "REF")
			}
			assert.Equal(t, report(tc.file), report(windows))
		})
	}
}
