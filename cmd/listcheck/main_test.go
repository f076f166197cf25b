package main

import (
	"bytes"
	"errors"
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
// registrable domain, names under a held (commented-out) entry, patterns
// no shipped entry covers, unsupported lines, and shipped entries that no
// reference mentions.
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

== reference testdata/adblock.txt (plain): 1 names, 1 patterns, 1 unsupported lines
  covered by testdata/shipped/a.txt: 0
  covered by testdata/shipped/b.txt: 1
  patterns, not comparable: 1
    ||v*.tiktokcdn-eu.com^ (line 3; no shipped entry covers tiktokcdn-eu.com)
  unsupported lines: 1
    testdata/adblock.txt:4: ||x.example.com^$dnstype=AAAA (adblock options ($...) are not supported)

== reference testdata/tiktok.yml (adguard): 4 names, 1 patterns, 0 unsupported lines
  covered by testdata/shipped/a.txt: 1
  covered by testdata/shipped/b.txt: 0
  held for review (commented out in a shipped list): 1
    testdata/shipped/a.txt: volces.com: sub.volces.com (line 8)
  in no shipped list, by registrable domain: 2
    bytegoofy.com: bytegoofy.com (line 7)
    p16-tiktokcdn-com.akamaized.net: p16-tiktokcdn-com.akamaized.net (exact) (line 10)
  patterns, not comparable: 1
    ||v*.tiktokcdn-eu.com^ (line 9; no shipped entry covers tiktokcdn-eu.com)

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

// TestAnchorsAndPatterns: AdGuard's single-pipe anchor is read as that
// name alone (with or without a URL scheme, in any case); a wildcard inside
// a name is a pattern, covered when a shipped entry sits above every name
// it can match and reported as not comparable otherwise (with the held
// entry when one is over it); malformed anchors stay unsupported lines.
func TestAnchorsAndPatterns(t *testing.T) {
	var out, errOut bytes.Buffer
	rc := run([]string{fixtureLists, "-registrable", "testdata/anchors.txt"}, &out, &errOut)
	require.Equal(t, 0, rc, errOut.String())
	assert.Empty(t, errOut.String())
	want := `== reference testdata/anchors.txt (plain): 3 names, 6 patterns, 4 unsupported lines
  covered by testdata/shipped/a.txt: 2 (+3 patterns)
  covered by testdata/shipped/b.txt: 0
  registrable domains: 3 (each counted against the last list needed to cover all of its names)
    testdata/shipped/a.txt: 2
    testdata/shipped/b.txt: 0
    held for review: 0
    not covered: 1
  in no shipped list, by registrable domain: 1
    p16-tiktokcdn-com.akamaized.net: p16-tiktokcdn-com.akamaized.net (exact) (line 3)
  patterns, not comparable: 3
    ||v*.tiktokcdn-eu.com^ (line 8; no shipped entry covers tiktokcdn-eu.com)
    ||tiktok.*^ (line 9; no name sits above every match)
    ||x*.sub.volces.com^ (line 10; no shipped entry covers sub.volces.com; held for review: testdata/shipped/a.txt: volces.com)
  unsupported lines: 4
    testdata/anchors.txt:11: |pipopay.com^$important (adblock options ($...) are not supported)
    testdata/anchors.txt:12: |pipopay.com (single-pipe rules must have the form |name^ or |https://name^)
    testdata/anchors.txt:13: |https://bad_name..com^ (empty label)
    testdata/anchors.txt:14: p16-*.hosts.example (wildcards are only allowed as a leading "*.")

== shipped entries in none of the 1 references
  testdata/shipped/a.txt: 2 of 4
    snssdk.com (line 4)
    onlyshipped.com (line 5)
  testdata/shipped/b.txt: 2 of 2
    capcut.com (line 2)
    larksuite.com.ttdns2.com (line 3)
`
	assert.Equal(t, want, out.String())
}

// TestPatternParent: the name above every match of a pattern is made of
// the whole labels after its last wildcard, in stored form; there is none
// when the wildcard is in the last label or only a top-level label follows.
func TestPatternParent(t *testing.T) {
	for _, tc := range []struct {
		rule, want string
		pattern    bool
	}{
		{"||p16-tiktok-*.ibyteimg.com^", "ibyteimg.com", true},
		{"v*.tiktokcdn-eu.com", "tiktokcdn-eu.com", true},
		{"*.p16-*-va.Tiktok.COM", "tiktok.com", true},
		{"||*x*.a.b.example^", "a.b.example", true},
		{"p16-*-tiktok.cdn.example.com", "cdn.example.com", true},
		{"||tiktok.*^", "", true},
		{"tiktok*.com", "", true}, // only a top-level label after the wildcard
		{"||tiktok.com.*.net^", "net", true},
		{"||*.tiktok.com^", "", false},    // blocklist.Parse reads it
		{"*.tiktok.com", "", false},       // blocklist.Parse reads it
		{"tiktok.com", "", false},         // no wildcard
		{"||p16-*.x.com^$all", "", false}, // options: blocklist.Parse reports them
		{"*", "", false},
		{"||*^", "", false},                         // no name at all
		{"||p16-*.x.com", "", false},                // no "^": blocklist.Parse reports it
		{"||p16.*.tiktok.com^", "tiktok.com", true}, // a label that is only the wildcard
	} {
		t.Run(tc.rule, func(t *testing.T) {
			assert.Equal(t, tc.pattern, isPattern(tc.rule))
			if tc.pattern {
				got := patternParent(tc.rule)
				if tc.want == "net" {
					assert.Empty(t, got, "a single label is no parent a list could hold")
					return
				}
				assert.Equal(t, tc.want, got)
			}
		})
	}
}

// TestRuleToken: a line's one token is found as blocklist.Parse finds a
// line's content: white space around it dropped, comment lines ('#', '!',
// '[') and a '#' comment after white space (a space or a tab, with or
// without one after the '#') cut off; a '#' inside the token is part of it.
func TestRuleToken(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"  |tiktok.com^\t", "|tiktok.com^"},
		{"v*.tiktokcdn-eu.com", "v*.tiktokcdn-eu.com"},
		{"#v*.tiktokcdn-eu.com", ""},
		{"!v*.tiktokcdn-eu.com", ""},
		{"[v*.tiktokcdn-eu.com]", ""},
		{"", ""},
		{"x", "x"},
		{"v*.tiktokcdn-eu.com # a comment", "v*.tiktokcdn-eu.com"},
		{"v*.tiktokcdn-eu.com #comment", "v*.tiktokcdn-eu.com"},
		{"v*.tiktokcdn-eu.com\t#comment", "v*.tiktokcdn-eu.com"},
		{"v*.tiktokcdn-eu.com #", "v*.tiktokcdn-eu.com"},
		{"v*.tiktokcdn-eu.com#comment", "v*.tiktokcdn-eu.com#comment"},
		{"0.0.0.0 p16-*.tiktok.com", ""},                             // a hosts line
		{"https://p16-*.tiktok.com/", ""},                            // a URL
		{"|https://p16-*.tiktok.com^", "|https://p16-*.tiktok.com^"}, // an anchor
	} {
		t.Run(tc.line, func(t *testing.T) {
			assert.Equal(t, tc.want, ruleToken(tc.line))
		})
	}
}

// TestRegistrable: -registrable counts each registrable domain of a
// reference against the last shipped list needed to cover all of its
// names; one name in no list makes the domain not covered, and a name
// under a held entry makes it held (unless another is in no list).
func TestRegistrable(t *testing.T) {
	dir := t.TempDir()
	first := filepath.Join(dir, "first.txt")
	second := filepath.Join(dir, "second.txt")
	require.NoError(t, os.WriteFile(first, []byte("tiktok.com  # A: X\nsnssdk.com  # A: X\n# volces.com  # E: X REVIEW\n# cdn.example.org  # E: X REVIEW\n"), 0o644))
	require.NoError(t, os.WriteFile(second, []byte("capcut.com  # C: X\nlark.snssdk.com  # C: X\nlarksuite.com.ttdns2.com  # C: X\nbyteimg.com  # C: X\n"), 0o644))
	for _, tc := range []struct {
		name string
		ref  string
		want string // the registrable-domain lines
	}{
		{"one list covers all", "tiktok.com\nwww.tiktok.com\nsnssdk.com\n",
			"registrable domains: 2 (each counted against the last list needed to cover all of its names)\n    FIRST: 2\n    SECOND: 0\n    held for review: 0\n    not covered: 0\n"},
		{"second list needed", "capcut.com\nwww.capcut.com\n",
			"registrable domains: 1 (each counted against the last list needed to cover all of its names)\n    FIRST: 0\n    SECOND: 1\n    held for review: 0\n    not covered: 0\n"},
		{"mixed: first and second", "tiktok.com\ncapcut.com\nbyteimg.com\np16.byteimg.com\n",
			"registrable domains: 3 (each counted against the last list needed to cover all of its names)\n    FIRST: 1\n    SECOND: 2\n    held for review: 0\n    not covered: 0\n"},
		{"one name in no list", "larksuite.com.ttdns2.com\ntiktok.com.ttdns2.com\n",
			"registrable domains: 1 (each counted against the last list needed to cover all of its names)\n    FIRST: 0\n    SECOND: 0\n    held for review: 0\n    not covered: 1\n"},
		{"held", "volces.com\napi.volces.com\n",
			"registrable domains: 1 (each counted against the last list needed to cover all of its names)\n    FIRST: 0\n    SECOND: 0\n    held for review: 1\n    not covered: 0\n"},
		{"held and missing in one domain", "api.volces.com\na.cdn.example.org\nwww.example.org\n",
			"registrable domains: 2 (each counted against the last list needed to cover all of its names)\n    FIRST: 0\n    SECOND: 0\n    held for review: 1\n    not covered: 1\n"},
		// A domain's state is its worst name's, whatever their order.
		{"missing before covered in one domain", "tiktok.com.ttdns2.com\nlarksuite.com.ttdns2.com\n",
			"registrable domains: 1 (each counted against the last list needed to cover all of its names)\n    FIRST: 0\n    SECOND: 0\n    held for review: 0\n    not covered: 1\n"},
		{"missing before held in one domain", "www.example.org\na.cdn.example.org\n",
			"registrable domains: 1 (each counted against the last list needed to cover all of its names)\n    FIRST: 0\n    SECOND: 0\n    held for review: 0\n    not covered: 1\n"},
		{"covered pattern counts, not-comparable does not", "||p16-*.tiktok.com^\n||p16-*.unknown.example^\n",
			"registrable domains: 1 (each counted against the last list needed to cover all of its names)\n    FIRST: 1\n    SECOND: 0\n    held for review: 0\n    not covered: 0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := filepath.Join(t.TempDir(), "ref.txt")
			require.NoError(t, os.WriteFile(ref, []byte(tc.ref), 0o644))
			var out, errOut bytes.Buffer
			require.Equal(t, 0, run([]string{"-lists=" + first + "," + second, "-registrable", ref}, &out, &errOut), errOut.String())
			got := strings.NewReplacer(first, "FIRST", second, "SECOND").Replace(out.String())
			assert.Contains(t, got, "\n  "+tc.want)
		})
	}
	t.Run("off by default", func(t *testing.T) {
		var out, errOut bytes.Buffer
		require.Equal(t, 0, run([]string{"-lists=" + first, "testdata/plain.txt"}, &out, &errOut), errOut.String())
		assert.NotContains(t, out.String(), "registrable domains:")
	})
}

// TestShippedEntryMentionedBelow: a shipped entry is mentioned by a
// reference name below it and by a pattern whose matches sit below it, so
// it is not listed as in no reference; one covered pattern is counted; a
// reference name that is itself a public suffix is its own group.
func TestShippedEntryMentionedBelow(t *testing.T) {
	dir := t.TempDir()
	ship := filepath.Join(dir, "ship.txt")
	require.NoError(t, os.WriteFile(ship, []byte("tiktok.com\nsnssdk.com\ncapcut.com\n"), 0o644))
	ref := filepath.Join(dir, "ref.txt")
	require.NoError(t, os.WriteFile(ref, []byte("www.tiktok.com\n||p16-*.capcut.com^\nakamaized.net\n"), 0o644))
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{"-lists=" + ship, ref}, &out, &errOut), errOut.String())
	want := `== reference REF (plain): 2 names, 1 patterns, 0 unsupported lines
  covered by SHIP: 1 (+1 patterns)
  in no shipped list, by registrable domain: 1
    akamaized.net: akamaized.net (line 3)

== shipped entries in none of the 1 references
  SHIP: 1 of 3
    snssdk.com (line 2)
`
	assert.Equal(t, want, strings.NewReplacer(ship, "SHIP", ref, "REF").Replace(out.String()))
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

// TestDetectLines: auto detection reads the first 200 lines, each trimmed,
// past blank, comment and one-octet lines.
func TestDetectLines(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"indented, after blank and short lines", "\n   \n!\n#\nx\n  DOMAIN-SUFFIX,tiktok.com\n", "clash"},
		{"on line 200", strings.Repeat("tiktok.com\n", 199) + "DOMAIN,tiktok.com\n", "clash"},
		{"on line 201", strings.Repeat("tiktok.com\n", 200) + "DOMAIN,tiktok.com\n", "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, detect("ref", []byte(tc.data)))
		})
	}
}

// TestAdGuardNestedRules: the "rules:" lists of an AdGuard file are found
// at any depth (HostlistsRegistry's combined services file holds one per
// service), with their lines; a list under another key is not rules.
func TestAdGuardNestedRules(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "services.yml")
	require.NoError(t, os.WriteFile(ref, []byte(`blocked_services:
  - id: tiktok
    tags: [pipopay.com]
    rules:
      - '||tiktok.com^'
      - '||ttapis.com^'
  - id: capcut
    rules:
      - '||capcut.com^'
`), 0o644))
	var out, errOut bytes.Buffer
	require.Equal(t, 0, run([]string{fixtureLists, ref}, &out, &errOut), errOut.String())
	want := `== reference REF (adguard): 3 names, 0 unsupported lines
  covered by testdata/shipped/a.txt: 1
  covered by testdata/shipped/b.txt: 1
  in no shipped list, by registrable domain: 1
    ttapis.com: ttapis.com (line 6)

`
	got, _, _ := strings.Cut(strings.ReplaceAll(out.String(), ref, "REF"), "== shipped entries")
	assert.Equal(t, want, got)
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
	// A commented-out entry held for review is read as an entry: one no
	// list can hold is as much an error as a bad shipped line.
	badHeld := filepath.Join(dir, "held.txt")
	require.NoError(t, os.WriteFile(badHeld, []byte("tiktok.com\n# "+strings.Repeat("a", 64)+".com  # E: X REVIEW\n"), 0o644))
	badYAML := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(badYAML, []byte("rules: [\n"), 0o644))
	// A zone whose $GENERATE lines make more records than the RPZ reader
	// takes: refused as a whole, so nothing of it can be compared.
	refusedZone := filepath.Join(dir, "big.rpz")
	require.NoError(t, os.WriteFile(refusedZone, []byte("$TTL 60\n@ SOA a. b. 1 2 3 4 5\n"+
		"$GENERATE 1-40000 x$.tiktok.com CNAME .\n$GENERATE 1-40000 y$.tiktok.com CNAME .\n"), 0o644))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no reference", []string{fixtureLists}, "usage: listcheck"},
		{"usage names the flags", []string{fixtureLists}, "comma-separated shipped list files to compare"},
		// The flag error on stderr, and no report of what follows it.
		{"unknown flag", []string{fixtureLists, "-nope", "testdata/plain.txt"}, "flag provided but not defined: -nope"},
		{"absent reference", []string{fixtureLists, filepath.Join(dir, "absent")}, "reading reference"},
		{"unknown format", []string{fixtureLists, "-format=csv", "testdata/plain.txt"}, `unknown format "csv"`},
		{"absent include", []string{fixtureLists, "-format=v2fly", badInclude}, "include"},
		{"YAML without rules", []string{fixtureLists, noRules}, `no "rules:" list`},
		{"absent shipped list", []string{"-lists=" + filepath.Join(dir, "absent"), "testdata/plain.txt"}, "reading shipped list"},
		{"bad shipped line", []string{"-lists=" + badShipped, "testdata/plain.txt"}, "adblock options"},
		{"bad held entry", []string{"-lists=" + badHeld, "testdata/plain.txt"}, "shipped list " + badHeld + ", commented-out entries: " + badHeld + " (held):2: "},
		{"bad YAML", []string{fixtureLists, badYAML}, "reading " + badYAML + " as AdGuard service YAML: "},
		{"refused RPZ reference", []string{fixtureLists, refusedZone}, "reading reference: " + refusedZone + ":4: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			assert.Equal(t, 2, run(tc.args, &out, &errOut))
			assert.Empty(t, out.String())
			assert.Contains(t, errOut.String(), tc.want)
		})
	}
}

// TestUnreadLinesReported: every line a reference has that listcheck cannot
// read as a name is listed with its file and line, in every format, and
// the lines past those blocklist.Parse reports one by one are counted; the
// readable lines around them still count.
func TestUnreadLinesReported(t *testing.T) {
	many := "tiktok.com\n" + strings.Repeat("||x.com^$third-party\n", 102)
	for _, tc := range []struct {
		name, format, ref string
		want              string // the report's lines from the first one that differs by format
	}{
		{"plain, two bad lines", "plain", "tiktok.com\n||a.com^$third-party\n||b.com^$dnstype=A\n|a.com^^\n",
			"1 names, 3 unsupported lines\n  covered by testdata/shipped/a.txt: 1\n  covered by testdata/shipped/b.txt: 0\n" +
				"  unsupported lines: 3\n" +
				"    REF:4: |a.com^^ (single-pipe rules must have the form |name^ or |https://name^)\n" +
				"    REF:2: ||a.com^$third-party (adblock options ($...) are not supported)\n" +
				"    REF:3: ||b.com^$dnstype=A (adblock options ($...) are not supported)\n\n"},
		{"plain, more than are listed", "plain", many,
			"1 names, 102 unsupported lines\n  covered by testdata/shipped/a.txt: 1\n  covered by testdata/shipped/b.txt: 0\n  unsupported lines: 102\n" +
				"    REF:2: ||x.com^$third-party (adblock options ($...) are not supported)\n" +
				"    REF:3: ||x.com^$third-party (adblock options ($...) are not supported)\n"},
		{"plain, the rest counted", "plain", many + "|pipopay.com\n",
			"1 names, 103 unsupported lines\n  covered by testdata/shipped/a.txt: 1\n  covered by testdata/shipped/b.txt: 0\n  unsupported lines: 103\n" +
				"    REF:104: |pipopay.com (single-pipe rules must have the form |name^ or |https://name^)\n    REF:2: "},
		{"plain, the rest named", "plain", many,
			"    REF:101: ||x.com^$third-party (adblock options ($...) are not supported)\n    REF: 2 more bad lines not shown\n\n"},
		{"v2fly", "v2fly", "domain:tiktok.com\ndomain:bad_name..com\nfull:x..com @cn\n",
			"1 names, 2 unsupported lines\n  covered by testdata/shipped/a.txt: 1\n  covered by testdata/shipped/b.txt: 0\n" +
				"  unsupported lines: 2\n    REF:2: domain:bad_name..com (empty label)\n    REF:3: full:x..com (empty label)\n\n"},
		{"clash", "clash", "  DOMAIN-SUFFIX,tiktok.com  \n   \nDOMAIN-SUFFIX,bad_name..com\nDOMAIN,pipopay.com\n",
			"2 names, 1 unsupported lines\n  covered by testdata/shipped/a.txt: 1\n  covered by testdata/shipped/b.txt: 0\n" +
				"  in no shipped list, by registrable domain: 1\n    pipopay.com: pipopay.com (exact) (line 4)\n" +
				"  unsupported lines: 1\n    REF:3: DOMAIN-SUFFIX,bad_name..com (empty label)\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := filepath.Join(t.TempDir(), "ref")
			require.NoError(t, os.WriteFile(ref, []byte(tc.ref), 0o644))
			var out, errOut bytes.Buffer
			require.Equal(t, 0, run([]string{fixtureLists, "-format=" + tc.format, ref}, &out, &errOut), errOut.String())
			report := strings.ReplaceAll(out.String(), ref, "REF")
			assert.Contains(t, report, tc.want)
		})
	}
}

// failingWriter is an output that cannot be written (a closed pipe, a full
// disk).
type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// TestRunWriteError: a report that cannot be written exits 2 and says why
// on stderr, so that a lost report is never taken for a clean run.
func TestRunWriteError(t *testing.T) {
	var errOut bytes.Buffer
	rc := run([]string{fixtureLists, "testdata/plain.txt"}, failingWriter{errors.New("no space left on device")}, &errOut)
	assert.Equal(t, 2, rc)
	assert.Equal(t, "listcheck: no space left on device\n", errOut.String())
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
