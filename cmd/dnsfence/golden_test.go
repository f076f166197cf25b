package main

import (
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/golden/name, rewriting it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./cmd/dnsfence -update to create it")
	assert.Equal(t, string(want), got)
}

// runCmd runs the command line in-process and returns exit code and output.
func runCmd(args ...string) (int, string) {
	var out bytes.Buffer
	code := run(args, &out, &out)
	return code, out.String()
}

func TestCheckGolden(t *testing.T) {
	tests := []struct {
		name     string
		config   string
		strict   bool
		wantCode int
	}{
		{name: "check-lints", config: "testdata/ops/lints.yaml", wantCode: 0},
		{name: "check-lints-proxies", config: "testdata/ops/lints-proxies.yaml", wantCode: 0},
		{name: "check-lints-proxies-strict", config: "testdata/ops/lints-proxies.yaml", strict: true, wantCode: 1},
		{name: "check-clean", config: "testdata/ops/clean.yaml", wantCode: 0},
		// upstream_health_check as the probes ask it: canonical.
		{name: "check-internal-health-check", config: "testdata/ops/internal.yaml", wantCode: 0},
		// Serve skips bad lines and starts, so check passes them with warnings
		// (the systemd unit runs check before every start and reload) ...
		{name: "check-badlines", config: "testdata/ops/badlines.yaml", wantCode: 0},
		// ... and -strict fails on them, for a team's CI.
		{name: "check-badlines-strict", config: "testdata/ops/badlines.yaml", strict: true, wantCode: 1},
		// A configuration without a block list serves, and blocks nothing.
		{name: "check-nopolicy", config: "testdata/ops/nopolicy.yaml", wantCode: 0},
		{name: "check-nopolicy-strict", config: "testdata/ops/nopolicy.yaml", strict: true, wantCode: 1},
		{name: "check-shipped", config: "../../configs/dnsfence.yaml", wantCode: 0},
		{name: "check-shipped-strict", config: "../../configs/dnsfence.yaml", strict: true, wantCode: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"check", "-config", tc.config}
			if tc.strict {
				args = append(args, "-strict")
			}
			code, out := runCmd(args...)
			assert.Equal(t, tc.wantCode, code, out)
			golden(t, tc.name+".txt", out)
		})
	}
}

func TestExplainGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int // 0 forwarded, 1 blocked, 3 refused
	}{
		{name: "explain-blocked", args: []string{"10.1.2.3", "WWW.TikTok.com."}, wantCode: 1},
		{name: "explain-allowed", args: []string{"10.1.2.3", "x.ads.tiktok.com", "HTTPS"}, wantCode: 0},
		{name: "explain-exemption", args: []string{"10.20.30.4", "www.tiktok.com"}, wantCode: 0},
		{name: "explain-refused-action", args: []string{"10.50.1.1", "tiktok.com"}, wantCode: 1},
		{name: "explain-shadow", args: []string{"192.168.1.200", "tiktok.com"}, wantCode: 0},
		{name: "explain-no-match", args: []string{"10.1.2.3", "nottiktok.com"}, wantCode: 0},
		{name: "explain-no-policy", args: []string{"172.31.0.1", "tiktok.com"}, wantCode: 0},
		{name: "explain-not-allowed", args: []string{"203.0.113.9", "tiktok.com"}, wantCode: 3},
		{name: "explain-resolver-arpa", args: []string{"10.1.2.3", "_dns.resolver.arpa", "SVCB"}, wantCode: 0},
		{name: "explain-resolver-arpa-json", args: []string{"-json", "10.1.2.3", "_dns.resolver.arpa", "SVCB"}, wantCode: 0},
		{name: "explain-json", args: []string{"-json", "10.20.30.4", "www.tiktok.com", "AAAA"}, wantCode: 0},
		// Flags anywhere among the arguments.
		{name: "explain-json", args: []string{"10.20.30.4", "www.tiktok.com", "AAAA", "-json"}, wantCode: 0},
		{name: "explain-blocked", args: []string{"10.1.2.3", "-config", "testdata/ops/lints.yaml", "WWW.TikTok.com."}, wantCode: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"explain", "-config", "testdata/ops/lints.yaml"}, tc.args...)
			code, out := runCmd(args...)
			assert.Equal(t, tc.wantCode, code, out)
			golden(t, tc.name+".txt", out)
		})
	}
}

// TestExplainNetworkGolden: a CLIENT network is explained as a trusted
// proxy's EDNS Client Subnet option names it: under every blocking policy
// whose devices may be in it (a government /26 inside a department's /8).
func TestExplainNetworkGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{name: "explain-network-nested-blocks", args: []string{"10.1.2.0/24", "capcut.com"}, wantCode: 1},
		{name: "explain-network-allowed-by-one", args: []string{"10.1.2.0/24", "x.ads.tiktok.com"}, wantCode: 1},
		{name: "explain-network-one-policy", args: []string{"-proxy", "10.9.9.9", "10.1.3.0/24", "capcut.com"}, wantCode: 0},
		{name: "explain-network-untrusted-proxy", args: []string{"-proxy", "10.1.1.1", "10.1.2.0/24", "capcut.com"}, wantCode: 2},
		{name: "explain-network-host-bits", args: []string{"10.1.2.3/24", "capcut.com"}, wantCode: 2},
		{name: "explain-network-json", args: []string{"-json", "10.1.2.0/24", "x.ads.tiktok.com"}, wantCode: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCmd(append([]string{"explain", "-config", "testdata/ops/ecs.yaml"}, tc.args...)...)
			assert.Equal(t, tc.wantCode, code, out)
			golden(t, tc.name+".txt", out)
		})
	}
	code, out := runCmd("explain", "-config", "testdata/ops/lints.yaml", "10.1.2.0/24", "capcut.com")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "testdata/ops/lints.yaml has no trusted_proxies: explain one address")
}

func TestExplainResolveGolden(t *testing.T) {
	up := chainUpstream(t, map[string][]string{
		"cloaked.example.": {"cloaked.example. 300 IN CNAME edge.example.net.", "edge.example.net. 300 IN CNAME p16.tiktok.com.", "p16.tiktok.com. 60 IN A 192.0.2.7"},
		"clean.example.":   {"clean.example. 300 IN CNAME cdn.example.net.", "cdn.example.net. 60 IN A 192.0.2.8"},
	})
	dir := testnet.WriteTree(t, map[string]string{
		"c.yaml": fmt.Sprintf(`upstreams: ["%s"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["block.txt"]
`, up),
		"block.txt": "tiktok.com\n",
	})
	for _, tc := range []struct {
		name, client, qname string
		wantCode            int // 1: the chain is blocked
	}{
		{"explain-resolve-cloaked", "10.1.1.1", "cloaked.example", 1},
		{"explain-resolve-clean", "10.1.1.1", "clean.example", 0},
		{"explain-resolve-no-policy", "192.168.0.1", "cloaked.example", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCmd("explain", "-config", filepath.Join(dir, "c.yaml"), "-resolve", tc.client, tc.qname)
			assert.Equal(t, tc.wantCode, code, out)
			golden(t, tc.name+".txt", strings.ReplaceAll(out, dir, "$DIR"))
		})
	}
}

func TestExplainUsage(t *testing.T) {
	code, out := runCmd("explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "usage: dnsfence explain")
	code, out = runCmd("explain", "-config", "testdata/ops/lints.yaml", "not-an-ip", "tiktok.com")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, `client: "not-an-ip" is neither an IP address nor a network (10.1.2.0/24); the order is CLIENT NAME`)
	assert.NotContains(t, out, "ParseAddr", "no Go words")
	code, out = runCmd("explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "BOGUS")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, `unknown query type "BOGUS"`)

	// A NAME pasted as a URL, with a port, a path or white space is no
	// question: explained as written it is on no list, "forwarded" (exit
	// 0), which a script reads as "not blocked" for a blocked site.
	for _, tc := range []struct{ name, want string }{
		{"https://www.tiktok.com/@user", `"https://www.tiktok.com/@user" is not a domain name: a URL, a port, a path or white space is no part of one; did you mean www.tiktok.com?`},
		{"http://user@www.TikTok.com:8080/x?y#z", "did you mean www.TikTok.com?"},
		{"www.tiktok.com:443", "did you mean www.tiktok.com?"},
		{"www.tiktok.com:", "did you mean www.tiktok.com?"}, // the port left out
		{"bücher.example:443", "did you mean bücher.example?"},
		{"\u0300a.example:443", `is not a domain name: a URL, a port, a path or white space is no part of one; e.g. www.tiktok.com`},
		{"www.tiktok.com/@user", "did you mean www.tiktok.com?"},
		{"www.tiktok.com ", "did you mean www.tiktok.com?"},
		{"bü cher.example", `"bü cher.example" is not a domain name: a URL, a port, a path or white space is no part of one; e.g. www.tiktok.com`},
		{"www tiktok com", `"www tiktok com" is not a domain name: a URL, a port, a path or white space is no part of one; e.g. www.tiktok.com`},
		{"https://", "e.g. www.tiktok.com"},
		// An address and port pasted, which no URL parses.
		{"[2001:db8::1]:443", `"[2001:db8::1]:443" is not a domain name: a URL, a port, a path or white space is no part of one; e.g. www.tiktok.com`},
	} {
		code, out := runCmd("explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", tc.name)
		assert.Equal(t, 2, code, "%s: %s", tc.name, out)
		assert.Contains(t, out, "dnsfence explain: name: ", tc.name)
		assert.Contains(t, out, tc.want, tc.name)
	}
	// Escapes are taken as written: a label may hold a / or a :.
	code, out = runCmd("explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", `a\/b.tiktok.com`)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "verdict: blocked")
}

// TestExplainClientForms: CLIENT is read as client ranges are, and as the
// listeners read a peer: an IPv4-mapped address or network is its IPv4
// form, an address's zone is dropped, and a range written in brackets, an
// IPv4-compatible address (with dots or in hex) or a network with host bits set is refused
// with the range meant.
func TestExplainClientForms(t *testing.T) {
	explain := func(client string) (int, string) {
		return runCmd("explain", "-config", "testdata/ops/ecs.yaml", client, "capcut.com")
	}
	for alias, client := range map[string]string{
		"::ffff:10.1.2.3":     "10.1.2.3",
		"::ffff:10.1.2.0/120": "10.1.2.0/24",
		"fe80::1%eth0":        "fe80::1",
		"2001:db8::1":         "2001:db8::1",
	} {
		wantCode, want := explain(client)
		code, out := explain(alias)
		assert.Equal(t, wantCode, code, alias)
		assert.Equal(t, want, out, "%s explained as %s", alias, client)
	}
	for client, want := range map[string]string{
		"10.1.2.3/24":            `client: "10.1.2.3/24" has host bits set; did you mean 10.1.2.0/24?`,
		"[2001:db8::]/32":        `client: "[2001:db8::]/32": a client range is written without brackets; did you mean 2001:db8::/32?`,
		"[10.1.2.3]":             `client: "[10.1.2.3]": a client range is written without brackets; did you mean 10.1.2.3/32?`,
		"::10.1.2.3":             `client: "::10.1.2.3": an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client; did you mean 10.1.2.3/32?`,
		"::a01:200/120":          `client: "::a01:200/120": an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client; did you mean 10.1.2.0/24?`,
		"::a01:203%eth0":         `client: "::a01:203%eth0": an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client; did you mean 10.1.2.3/32?`,
		"0.0.0.0":                `client: "0.0.0.0": the unspecified address (0.0.0.0, ::) is every address only where a server listens; as a client range it matches no client; did you mean 0.0.0.0/0?`,
		"10.1.2.0/33":            `client: "10.1.2.0/33": prefix length /33 is longer than an IPv4 address (at most /32); a network is its first address and a length, e.g. 10.1.2.0/24`,
		"2001:db8::/-8":          `client: "2001:db8::/-8": prefix length /-8 is negative (an IPv6 prefix is /0 to /128); a network is its first address and a length, e.g. 10.1.2.0/24`,
		"10.1.2.0/x":             `client: "10.1.2.0/x": the prefix length after the slash is missing or not a number; a network is its first address and a length, e.g. 10.1.2.0/24`,
		"10.1.2.0/255.255.255.0": `client: "10.1.2.0/255.255.255.0": a netmask after the slash, where a CIDR prefix has a length; did you mean 10.1.2.0/24?`,
		"10.1.2.0-10.1.2.255":    `client: "10.1.2.0-10.1.2.255": a range written first-last is not read (write it as CIDR prefixes); did you mean 10.1.2.0/24?`,
		"10.1/16":                `client: "10.1/16": an IPv4 address is four numbers (a.b.c.d); did you mean 10.1.0.0/16?`,
		"10.1.2":                 `client: "10.1.2": an IPv4 address is four numbers (a.b.c.d); a network is its first address and a length`,
		"www.tiktok.com":         `client: "www.tiktok.com" is neither an IP address nor a network (10.1.2.0/24); the order is CLIENT NAME`,
	} {
		code, out := explain(client)
		assert.Equal(t, 2, code, client)
		assert.Contains(t, out, want)
	}
}

// TestExplainClientZoneHidesNoForm: a zone on CLIENT is dropped, and the
// address is then read as any other: `::10.1.2.3%eth0` is the
// IPv4-compatible form refused without the zone, not the IPv6 client
// ::a01:203 (the zone's branch returned it before ParsePrefix saw it).
func TestExplainClientZoneHidesNoForm(t *testing.T) {
	code, out := runCmd("explain", "-config", "testdata/ops/ecs.yaml", "::10.1.2.3%eth0", "capcut.com")
	assert.Equal(t, 2, code, out)
	assert.Contains(t, out, `client: "::10.1.2.3%eth0": an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client; did you mean 10.1.2.3/32?`)

	wantCode, want := runCmd("explain", "-config", "testdata/ops/ecs.yaml", "10.1.2.3", "capcut.com")
	code, out = runCmd("explain", "-config", "testdata/ops/ecs.yaml", "::ffff:10.1.2.3%eth0", "capcut.com")
	assert.Equal(t, wantCode, code)
	assert.Equal(t, want, out, "an IPv4-mapped address with a zone is its IPv4 form")
}

func TestVersionFlag(t *testing.T) {
	code, out := runCmd("-version")
	assert.Equal(t, 0, code)
	assert.True(t, strings.HasPrefix(out, "dnsfence "), out)
	assert.Contains(t, out, "go1.")
}

func TestGCPercent(t *testing.T) {
	tests := []struct {
		live uint64
		want int
	}{
		{live: 0, want: 100},
		{live: 4 << 20, want: 100}, // a small deployment keeps Go's default
		{live: 8 << 20, want: 100}, // headroom equals the live heap
		{live: 16 << 20, want: 50},
		{live: 36 << 20, want: 22}, // a million-entry list
		{live: 1 << 30, want: 20},  // never below 20
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, gcPercent(tc.live), "live %d MB", tc.live>>20)
	}
}

// TestWithGCPercent: the start's lint runs at its own GC target, and the
// target after it is the one before, or the one a reload's tuneGC set
// while it ran. A GOGC the operator set is never changed.
func TestWithGCPercent(t *testing.T) {
	t.Setenv("GOGC", "") // the test binary's, if any, aside
	prior := debug.SetGCPercent(40)
	defer debug.SetGCPercent(prior)

	var during int
	withGCPercent(lintGCPercent, func() { during = currentGCPercent() })
	assert.Equal(t, lintGCPercent, during)
	assert.Equal(t, 40, currentGCPercent(), "the target before the lint")

	var reload int
	withGCPercent(lintGCPercent, func() {
		tuneGC(zap.NewNop())
		reload = currentGCPercent()
	})
	require.NotEqual(t, 40, reload, "the test's heap is small: tuneGC keeps Go's default")
	assert.Equal(t, reload, currentGCPercent(), "a reload's target, set during the lint, stays")

	t.Setenv("GOGC", "70")
	debug.SetGCPercent(70)
	calls := 0
	withGCPercent(lintGCPercent, func() { during = currentGCPercent(); calls++ })
	assert.Equal(t, 70, during, "GOGC set by the operator")
	assert.Equal(t, 1, calls, "f runs once")
	assert.Equal(t, 70, currentGCPercent())
	tuneGC(zap.NewNop()) // a reload's
	assert.Equal(t, 70, currentGCPercent(), "a reload leaves GOGC's target")
}

// TestTuneGCLogsTheTarget: tuneGC logs the live heap it measured and the
// GC target it set (the "memory" line at start and after each reload,
// the numbers behind the process's RSS); under GOGC it sets none, and
// says nothing.
func TestTuneGCLogsTheTarget(t *testing.T) {
	t.Setenv("GOGC", "") // the test binary's, if any, aside
	prior := debug.SetGCPercent(40)
	defer debug.SetGCPercent(prior)
	core, logs := observer.New(zap.InfoLevel)
	tuneGC(zap.New(core))
	lines := logs.FilterMessage("memory").All()
	require.Len(t, lines, 1)
	fields := lines[0].ContextMap()
	assert.Positive(t, fields["heap_live_bytes"])
	assert.EqualValues(t, currentGCPercent(), fields["gc_percent"], "the target set")

	t.Setenv("GOGC", "70")
	core, logs = observer.New(zap.InfoLevel)
	tuneGC(zap.New(core))
	assert.Zero(t, logs.Len(), "GOGC's target is the operator's")
}

// currentGCPercent reads the GC target without changing it.
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestCommandLine: help, usage and mistakes on the command line never start
// a server, and say what to do.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"help lists every command", []string{"help"}, 0, []string{"serve", "check", "explain", "health", "version", "help",
			"\nFlags may stand anywhere among a command's arguments. `dnsfence help COMMAND` lists them.\n"}},
		{"-h lists every command", []string{"-h"}, 0, []string{"check", "explain", "strict"}},
		{"--help lists every command", []string{"--help"}, 0, []string{"check", "explain"}},
		{"help of one command lists its flags", []string{"help", "explain"}, 0, []string{"usage: dnsfence explain [FLAGS] CLIENT NAME [TYPE]\n", "\nflags:\n", "-json", "-resolve", "-config",
			"exit 0 forwarded (or answered from dnsfence's own zones), 1 blocked, 2 error, 3 refused"}},
		{"a command's -h", []string{"check", "-h"}, 0, []string{"-strict", "-config"}},
		{"unknown command", []string{"bogus"}, 2, []string{"dnsfence: unknown command \"bogus\"\n\nusage: dnsfence", "commands:"}},
		{"help of an unknown command", []string{"help", "bogus"}, 2, []string{`unknown command "bogus"`, "commands:"}},
		{"serve takes no arguments", []string{"serve", "dnsfence.yaml"}, 2, []string{`unexpected argument "dnsfence.yaml"`, "-config dnsfence.yaml"}},
		{"a bare config path", []string{"-config", "x.yaml", "y.yaml"}, 2, []string{`unexpected argument "y.yaml"`}},
		{"a flag before the command", []string{"-config", "x.yaml", "check"}, 2,
			[]string{`unexpected argument "check" (the command comes first, its flags after it: ` + "`dnsfence check -config FILE`)"}},
		{"a flag before the command, and the command's flags", []string{"-config", "x.yaml", "check", "-strict"}, 2,
			[]string{`unexpected argument "check" (the command comes first, its flags after it: ` + "`dnsfence check -config FILE`)"}},
		{"a flag before explain", []string{"-config=x.yaml", "explain", "10.1.2.3", "tiktok.com", "-json"}, 2,
			[]string{`unexpected argument "explain" (the command comes first, its flags after it: ` + "`dnsfence explain -config FILE`)"}},
		{"a config path as the command", []string{"configs/dnsfence.yaml"}, 2,
			[]string{`unknown command "configs/dnsfence.yaml" (a configuration file? ` + "`dnsfence -config configs/dnsfence.yaml`)"}},
		{"unknown flag", []string{"check", "-bogus"}, 2, []string{"flag provided but not defined: -bogus", "usage: dnsfence check"}},
		// After "--" every argument is a positional one, a flag's form too
		// (parseFlags), and serve finds a command there as before it.
		{"explain after --", []string{"explain", "-config", "testdata/ops/lints.yaml", "--", "10.1.2.3", "tiktok.com", "-json"}, 2, []string{`unknown query type "-json"`}},
		{"explain after a first --", []string{"explain", "--", "10.1.2.3", "tiktok.com", "-json"}, 2, []string{`unknown query type "-json"`}},
		{"a command after --", []string{"-config", "x.yaml", "--", "check"}, 2,
			[]string{`unexpected argument "check" (the command comes first, its flags after it: ` + "`dnsfence check -config FILE`)"}},
		{"an empty argument", []string{"-config", "x.yaml", ""}, 2, []string{`dnsfence serve: unexpected argument ""`}},
		{"a short unknown flag before the command", []string{"-q", "check"}, 2,
			[]string{`unexpected argument "check" (the command comes first, its flags after it: ` + "`dnsfence check -config FILE`)"}},
		{"a bool flag before the command", []string{"-version", "check"}, 2,
			[]string{`unexpected argument "check" (the command comes first, its flags after it: ` + "`dnsfence check -config FILE`)"}},
		{"a bad flag before a last --", []string{"-bogus", "--"}, 2, []string{"flag provided but not defined: -bogus", "usage: dnsfence serve"}},
		// A misspelt command or flag is named with the one meant, as a
		// misspelt key of the configuration is.
		{"a misspelt command", []string{"chek", "-config", "x.yaml"}, 2, []string{`dnsfence: unknown command "chek"; did you mean check?`, "commands:"}},
		{"help of a misspelt command", []string{"help", "explian"}, 2, []string{`dnsfence help: unknown command "explian"; did you mean explain?`}},
		{"a misspelt flag", []string{"check", "-strictt"}, 2, []string{"flag provided but not defined: -strictt\ndid you mean -strict?\n\nusage: dnsfence check [FLAGS]\n"}},
		{"a misspelt flag of serve, with two dashes", []string{"--confg", "x.yaml"}, 2, []string{"flag provided but not defined: -confg\ndid you mean -config?\n", "usage: dnsfence serve"}},
		// Another DNS server's flag for its configuration file: Unbound's and
		// Blocky's -c, CoreDNS's -conf, dnsmasq's -C and --conf-file.
		{"unbound's -c", []string{"check", "-c", "x.yaml"}, 2, []string{"flag provided but not defined: -c\ndid you mean -config?\n", "usage: dnsfence check"}},
		{"coredns's -conf", []string{"-conf", "x.yaml"}, 2, []string{"flag provided but not defined: -conf\ndid you mean -config?\n", "usage: dnsfence serve"}},
		{"dnsmasq's --conf-file", []string{"explain", "--conf-file=x.yaml", "10.1.2.3", "tiktok.com"}, 2, []string{"flag provided but not defined: -conf-file\ndid you mean -config?\n"}},
		{"dnsmasq's -C", []string{"check", "-C", "x.yaml"}, 2, []string{"flag provided but not defined: -C\ndid you mean -config?\n"}},
		{"explain needs a client and a name", []string{"explain", "10.1.2.3"}, 2, []string{"dnsfence explain: 1 argument (10.1.2.3); give CLIENT NAME [TYPE]", "usage: dnsfence explain"}},
		{"health's help names every exit code", []string{"help", "health"}, 0, []string{"exit 0 ready, 1 not ready or unreachable, 2 bad command line"}},
		{"explain with no arguments", []string{"explain"}, 2, []string{"dnsfence explain: no arguments; give CLIENT NAME [TYPE]", "usage: dnsfence explain"}},
		{"explain with too many", []string{"explain", "10.1.2.3", "tiktok.com", "A", "IN"}, 2, []string{"dnsfence explain: 4 arguments (10.1.2.3 tiktok.com A IN); give CLIENT NAME [TYPE]"}},
		{"explain with a bad client", []string{"explain", "not-an-ip", "tiktok.com"}, 2, []string{"client"}},
		{"explain with a bad type", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "BOGUS"}, 2, []string{`unknown query type "BOGUS"`}},
		// A type by number, as dig takes one (RFC 3597 §5): TYPE65 is HTTPS.
		{"explain with a type by number", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "type65"}, 1, []string{"name tiktok.com. type HTTPS", "verdict: blocked"}},
		{"explain with a type no mnemonic names", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "TYPE4000"}, 1, []string{"type TYPE4000"}},
		// Types the server answers before any policy are explained so:
		// a zone transfer REFUSED, a meta type FORMERR (nothing to explain).
		{"explain of a zone transfer", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "AXFR"}, 3,
			[]string{"a zone transfer: refused before any policy", "verdict: refused (REFUSED, Extended DNS Error 21 (Not Supported))"}},
		{"explain of a meta type", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "TYPE41"}, 2,
			[]string{"dnsfence explain: OPT is a meta type, which no question may ask (RFC 6895 §3.1): dnsfence answers FORMERR to one and forwards nothing"}},
		{"explain with type 0", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "TYPE0"}, 2, []string{`unknown query type "TYPE0"`}},
		{"explain with a type over 65535", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "TYPE65536"}, 2, []string{`unknown query type "TYPE65536"`}},
		{"explain with an empty label", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "www..tiktok.com"}, 2,
			[]string{`dnsfence explain: name: "www..tiktok.com" is not a domain name`}},
		{"explain with a label over 63 octets", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", strings.Repeat("a", 64) + ".tiktok.com"}, 2,
			[]string{"is not a domain name"}},
		{"explain with a name of 256 octets", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 51) + ".tiktok.com"}, 2,
			[]string{"is not a domain name (an empty label, a label over 63 octets, or over 255 octets in all)"}},
		{"explain with a bad escape", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", `tiktok\999.com`}, 2,
			[]string{`dnsfence explain: name: "tiktok\\999.com" is not a domain name: \999 is no escape (RFC 1035 §5.1: a backslash before a digit begins \DDD, three decimal digits from 000 to 255, as dig reads it); e.g. www.tiktok.com`}},
		{"explain with a missing config", []string{"explain", "-config", "testdata/missing.yaml", "10.1.2.3", "tiktok.com"}, 2, []string{"missing.yaml"}},
		{"an empty -config to check", []string{"check", "-config", ""}, 2, []string{"dnsfence check: -config is empty; give the configuration file, or leave -config out for the embedded default"}},
		{"an empty -config= to explain", []string{"explain", "-config=", "10.1.2.3", "tiktok.com"}, 2, []string{"dnsfence explain: -config is empty"}},
		{"an empty -config to serve", []string{"-config", ""}, 2, []string{"dnsfence serve: -config is empty"}},
		{"check takes no arguments", []string{"check", "x.yaml"}, 2, []string{`dnsfence check: unexpected argument "x.yaml" (give the configuration with -config)`}},
		{"health takes no arguments", []string{"health", "127.0.0.1:9153"}, 2, []string{`dnsfence health: unexpected argument "127.0.0.1:9153" (give the address with -url)`}},
		{"explain of a name with a user", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "user@www.tiktok.com"}, 2,
			[]string{`dnsfence explain: name: "user@www.tiktok.com" is not a domain name: a URL, a port, a path or white space is no part of one; did you mean www.tiktok.com?`}},
		// A NAME pasted with a port, a path, a user or white space names the
		// host meant when there is one.
		{"explain of a name with a port", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "www.tiktok.com:443"}, 2,
			[]string{`"www.tiktok.com:443" is not a domain name: a URL, a port, a path or white space is no part of one; did you mean www.tiktok.com?`}},
		{"explain of a name with a path", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "www.tiktok.com/path"}, 2,
			[]string{`"www.tiktok.com/path" is not a domain name: a URL, a port, a path or white space is no part of one; did you mean www.tiktok.com?`}},
		{"explain of a name after an @", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "@www.tiktok.com"}, 2,
			[]string{`"@www.tiktok.com" is not a domain name: a URL, a port, a path or white space is no part of one; did you mean www.tiktok.com?`}},
		{"explain of a name with a space", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "www tiktok.com"}, 2,
			[]string{`"www tiktok.com" is not a domain name: a URL, a port, a path or white space is no part of one; e.g. www.tiktok.com`}},
		{"explain of a path", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "/tiktok.com"}, 2,
			[]string{`"/tiktok.com" is not a domain name: a URL, a port, a path or white space is no part of one; e.g. www.tiktok.com`}},
		{"explain with the smallest type by number", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "TYPE1"}, 1, []string{"name tiktok.com. type A\n"}},
		{"explain with a type by number over 32767", []string{"explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "TYPE65280"}, 1, []string{"name tiktok.com. type TYPE65280\n"}},
		// A -proxy written IPv4-mapped is the IPv4 proxy trusted_proxies names.
		{"explain with an IPv4-mapped -proxy", []string{"explain", "-config", "testdata/ops/ecs.yaml", "-proxy", "::ffff:10.9.9.9", "10.1.3.0/24", "capcut.com"}, 0,
			[]string{"(EDNS Client Subnet from trusted proxy 10.9.9.9)"}},
		{"explain with a -proxy that is no address", []string{"explain", "-config", "testdata/ops/ecs.yaml", "-proxy", "bogus", "10.1.2.0/24", "capcut.com"}, 2,
			[]string{"dnsfence explain: -proxy: ", `"bogus"`}},
		{"version", []string{"version"}, 0, []string{"dnsfence"}},
		{"version takes no arguments", []string{"version", "check"}, 2, []string{`dnsfence version: unexpected argument "check" (version takes no arguments)`}},
		{"version's -h", []string{"version", "-h"}, 0, []string{"usage: dnsfence version\n"}},
		{"-version", []string{"-version"}, 0, []string{"dnsfence"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A server never returns on its own: each row must.
			type result struct {
				code int
				out  string
			}
			done := make(chan result, 1)
			go func() { code, out := runCmd(tc.args...); done <- result{code, out} }()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("still running after 10 s: it started a server")
			}
			assert.Equal(t, tc.wantCode, r.code, r.out)
			for _, w := range tc.want {
				assert.Contains(t, r.out, w)
			}
			// A stray argument is said once: the command named after
			// serve's flags stops serve at that, not again as serve's
			// own argument.
			if strings.Contains(r.out, "unexpected argument") {
				assert.Equal(t, 1, strings.Count(r.out, "unexpected argument"), r.out)
			}
			// So is a bad argument of explain: the first check that
			// refuses it ends the command.
			assert.LessOrEqual(t, strings.Count(r.out, "dnsfence explain: "), 1, r.out)
		})
	}
}

// TestLaptopFriendlyDropsUnavailableAddresses: the embedded default skips a
// listen address this machine cannot bind (192.0.2.1 is on no interface)
// and keeps the others.
func TestLaptopFriendlyDropsUnavailableAddresses(t *testing.T) {
	cfg := &config.Config{Listen: []string{"127.0.0.1:5353", "192.0.2.1:5353", "[::1]:5353"}}
	core, logs := observer.New(zap.WarnLevel)
	laptopFriendly(zap.New(core), cfg)
	assert.NotContains(t, cfg.Listen, "192.0.2.1:5353")
	assert.Contains(t, cfg.Listen, "127.0.0.1:5353")
	// Each address dropped is said, at warn.
	warned := logs.FilterMessage("not listening on an address this machine lacks").All()
	if assert.Len(t, warned, 1) {
		assert.Equal(t, "192.0.2.1:5353", warned[0].ContextMap()["address"])
	}
	// One address left is enough.
	cfg = &config.Config{Listen: []string{"127.0.0.1:5353", "192.0.2.1:5353"}}
	laptopFriendly(zap.NewNop(), cfg)
	assert.Equal(t, []string{"127.0.0.1:5353"}, cfg.Listen)
}

// TestHealthCommand: `dnsfence health` (Docker's HEALTHCHECK) exits 0 only
// for a 200 from /readyz, and says what is wrong otherwise.
func TestHealthCommand(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ready")
	}))
	defer ready.Close()
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready: reload held", http.StatusServiceUnavailable)
	}))
	defer notReady.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	code, out := runCmd("health", "-url", ready.URL+"/readyz")
	assert.Equal(t, 0, code, out)
	assert.Equal(t, "200 OK ready\n", out, "the body's own newline, and no other")
	// A body without a final newline gets one: the shell's prompt, or
	// the next line of a log, starts on a line of its own.
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ready")
	}))
	defer bare.Close()
	code, out = runCmd("health", "-url", bare.URL+"/readyz")
	assert.Equal(t, 0, code, out)
	assert.Equal(t, "200 OK ready\n", out)
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer empty.Close()
	code, out = runCmd("health", "-url", empty.URL+"/readyz")
	assert.Equal(t, 0, code, out)
	assert.Equal(t, "200 OK \n", out)
	code, out = runCmd("health", "-url", notReady.URL+"/readyz")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "reload held")
	code, out = runCmd("health", "-url", closed.URL+"/readyz", "-timeout", "1s")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "dnsfence health: Get ")
	assert.Contains(t, out, "connection refused")
	// Refused: the likely causes are named.
	assert.Contains(t, out, "dnsfence health: nothing listens at "+strings.TrimPrefix(closed.URL, "http://")+": is dnsfence running, with its http address there? give that address with -url")

	// Flags that cannot ask are command-line errors, said before any
	// request: a timeout of 0 or less would wait for ever on a dnsfence
	// that takes the connection and never answers.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no timeout", []string{"-timeout", "0s"}, "-timeout 0s is not a positive duration"},
		{"negative timeout", []string{"-timeout", "-1s"}, "-timeout -1s is not a positive duration"},
		{"address without a scheme", []string{"-url", "127.0.0.1:9153"}, `-url "127.0.0.1:9153" is not an http:// or https:// URL`},
		{"another scheme", []string{"-url", "ftp://127.0.0.1/readyz"}, `-url "ftp://127.0.0.1/readyz" is not an http:// or https:// URL`},
		{"no host", []string{"-url", "http:///readyz"}, `-url "http:///readyz" is not an http:// or https:// URL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"health", "-url", ready.URL + "/readyz"}, tc.args...)
			code, out := runCmd(args...)
			assert.Equal(t, 2, code, out)
			assert.Contains(t, out, "dnsfence health: "+tc.want)
			assert.NotContains(t, out, "200 OK", "asked all the same")
		})
	}
}

// TestDockerfileHealthcheck: the image's HEALTHCHECK runs a command the
// binary has, against /startupz (never /readyz: configs'
// TestDockerHealthcheckIsNoReadiness says why), an endpoint the binary
// serves (TestStartupzOnceListenersAnswer).
func TestDockerfileHealthcheck(t *testing.T) {
	data, err := os.ReadFile("../../configs/deploy/Dockerfile")
	require.NoError(t, err)
	assert.Contains(t, string(data), `CMD ["/dnsfence", "health", "-url", "http://127.0.0.1:9153/startupz"]`)
	// The command exists, takes -url, and asks /readyz by default.
	c, ok := commandNamed("health")
	require.True(t, ok)
	url := c.flags().Lookup("url")
	require.NotNil(t, url)
	assert.Equal(t, "http://127.0.0.1:9153/readyz", url.DefValue)
}

// TestLaptopFriendlyKeepsAllWhenNoneWorks: with no address the machine can
// bind, the list stays as it is, so the start fails naming them instead of
// serving nothing.
func TestLaptopFriendlyKeepsAllWhenNoneWorks(t *testing.T) {
	cfg := &config.Config{Listen: []string{"192.0.2.1:5353", "198.51.100.1:5353"}}
	laptopFriendly(zap.NewNop(), cfg)
	assert.Equal(t, []string{"192.0.2.1:5353", "198.51.100.1:5353"}, cfg.Listen)
}

// TestTopLevelHelpIsHelp: -h, -help and --help as the first argument print
// what `dnsfence help` prints, exit 0: the commands, and not serve's
// usage after them.
func TestTopLevelHelpIsHelp(t *testing.T) {
	code, want := runCmd("help")
	require.Equal(t, 0, code, want)
	for _, flag := range []string{"-h", "-help", "--help"} {
		code, out := runCmd(flag)
		assert.Equal(t, 0, code, out)
		assert.Equal(t, want, out, flag)
	}
}
