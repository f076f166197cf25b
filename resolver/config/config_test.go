package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestConfigDefaults(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"l.txt": "tiktok.com\n"})
	path := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
upstreams: ["127.0.0.1:53"]
policies:
  - name: p
    clients: ["10.0.0.0/8"]
    block: ["l.txt"]
`), 0o644))
	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, []string{DefaultListen}, cfg.Listen)
	assert.Equal(t, DefaultAllowedClients, cfg.AllowedClients)
	assert.Equal(t, uint32(60), cfg.BlockedTTL)
	assert.Equal(t, 2*time.Second, cfg.UpstreamTimeout)
	assert.Equal(t, ActionNXDomain, cfg.Policies[0].Action)
	assert.Equal(t, "json", cfg.Log.Format)
	assert.Equal(t, "blocked", cfg.Log.Queries)
	assert.Equal(t, "info", cfg.Log.Level)
	assert.Equal(t, DefaultHTTP, cfg.HTTPAddr())
	assert.Equal(t, 200*time.Millisecond, cfg.Reload.Debounce)
	assert.Equal(t, 0.5, cfg.Reload.MaxShrink)
	assert.Equal(t, 20000, cfg.Cache.Size)
	assert.Equal(t, 30*time.Second, cfg.Cache.StaleRefreshTime, "RFC 8767 §5's failure recheck timer")
	assert.Equal(t, 1800*time.Millisecond, cfg.Cache.StaleAnswerClientTimeout, "RFC 8767 §5's client response timer")
	assert.Equal(t, 32, cfg.Limits.TCPConnectionsPerClient)
	assert.Equal(t, 4<<20, cfg.Limits.UDPReceiveBuffer)
	assert.Equal(t, 4<<20, cfg.Limits.UDPSendBuffer)
	assert.Equal(t, filepath.Join(dir, "l.txt"), cfg.Path("l.txt"), "relative to the config's folder")
	assert.Equal(t, "/abs/l.txt", cfg.Path("/abs/l.txt"))
	assert.Equal(t, time.Hour, cfg.Sources.Refresh)
	assert.Equal(t, int64(64<<20), cfg.Sources.MaxBytes)
	assert.Empty(t, cfg.RemoteLists())
	assert.Equal(t, upstream.HealthCheck{Name: ".", Qtype: dns.TypeNS}, cfg.HealthCheck(), "the root NS query, as before the key")
}

// TestConfigHealthCheck: upstream_health_check is read into the question
// the probes ask, canonical (lower case, fully qualified), each part left
// out the root NS query's; a change of it is a change of the
// configuration (Changes), as the reload logs it.
func TestConfigHealthCheck(t *testing.T) {
	load := func(t *testing.T, text string) *Config {
		t.Helper()
		cfg, err := Parse("c.yaml", []byte("upstreams: [\"127.0.0.1:53\"]\n"+text), nil)
		require.NoError(t, err, text)
		return cfg
	}
	for _, tc := range []struct {
		name, yaml string
		want       upstream.HealthCheck
	}{
		{"left out", "", upstream.DefaultHealthCheck},
		{"no value", "upstream_health_check:\n", upstream.DefaultHealthCheck},
		{"an AD domain's SOA", "upstream_health_check: {name: corp.example., type: SOA}\n", upstream.HealthCheck{Name: "corp.example.", Qtype: dns.TypeSOA}},
		{"canonical", "upstream_health_check: {name: Corp.EXAMPLE, type: soa}\n", upstream.HealthCheck{Name: "corp.example.", Qtype: dns.TypeSOA}},
		{"the name alone", "upstream_health_check: {name: corp.example}\n", upstream.HealthCheck{Name: "corp.example.", Qtype: dns.TypeNS}},
		{"the type alone", "upstream_health_check: {type: SOA}\n", upstream.HealthCheck{Name: ".", Qtype: dns.TypeSOA}},
		{"an A record", "upstream_health_check: {name: dc1.corp.example., type: A}\n", upstream.HealthCheck{Name: "dc1.corp.example.", Qtype: dns.TypeA}},
		{"a Unicode name: its A-labels", "upstream_health_check: {name: Behörde.Example, type: SOA}\n", upstream.HealthCheck{Name: "xn--behrde-yxa.example.", Qtype: dns.TypeSOA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, load(t, tc.yaml).HealthCheck())
		})
	}
	old := load(t, "")
	changed := load(t, "upstream_health_check: {name: corp.example., type: SOA}\n")
	assert.Equal(t, []string{"upstream_health_check.name", "upstream_health_check.type"}, Changes(old, changed))
	assert.Empty(t, Changes(old, load(t, "upstream_health_check: {name: \".\", type: NS}\n")), "the default written out")
}

// TestConfigListenByMergeKey: listen given by a YAML merge key (<<) is
// not in the file's mapping as written, but it is decoded: it is served,
// not replaced with the default 127.0.0.1:5353 that check then printed
// with no word (8ef8c18 took "not written" for "left out").
func TestConfigListenByMergeKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte("<<: {listen: [\"127.0.0.1:53\", \"[::1]:53\"]}\nupstreams: [\"192.0.2.53:53\"]\n"), 0o644))
	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1:53", "[::1]:53"}, cfg.Listen)
}

// TestConfigMergeKeysBounded: merge keys (<<) of mappings that merge
// twenty of the one before, eight deep, name 20^8 mappings in 1 KB. The
// decoder refuses the file at once (excessive aliasing), but the shape
// check listed the keys of every merged mapping first, each time it was
// merged: Parse, and with it check and a reload, ran for hours on it.
func TestConfigMergeKeysBounded(t *testing.T) {
	items := []string{"&m0 {level: info}"}
	for i := 1; i < 8; i++ {
		items = append(items, fmt.Sprintf("&m%d {<<: [%s]}", i, strings.Repeat(fmt.Sprintf("*m%d, ", i-1), 19)+fmt.Sprintf("*m%d", i-1)))
	}
	data := []byte("upstreams: [\"192.0.2.53:53\"]\nlog: {<<: [" + strings.Join(items, ", ") + "]}\n")
	done := make(chan error, 1)
	go func() {
		_, err := Parse("c.yaml", data, os.ReadFile)
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "anchors and aliases (& and *) expand to too much")
	case <-time.After(10 * time.Second):
		t.Fatalf("Parse of a %d-byte file still running after 10 s", len(data))
	}
}

// TestConfigSyntaxErrorPastAMegabyte: the line of a syntax error is found
// again by reading the file up to each line from the parser's on
// (syntaxLine), within a megabyte read in all; past that, the error is
// at the parser's own line, not at none or at line 1.
func TestConfigSyntaxErrorPastAMegabyte(t *testing.T) {
	data := []byte(strings.Repeat("# a comment line of a long file\n", 40000) + "log: level: info\nupstreams: [\"9.9.9.9:53\"]\n")
	_, err := Parse("c.yaml", data, os.ReadFile)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, 40001, ce.Line)
	assert.Contains(t, ce.Err.Error(), `a second "key:" on one line`)
}

// TestConfigLocalFiles: the files on this machine a configuration names,
// as Path resolves them against its folder: the file itself, client files
// and list files (not a URL, a zone transfer or an empty path), then the
// upstream_ca bundle (not one written as a URL); none for the embedded
// default. Path leaves "" as it is, not the folder.
func TestConfigLocalFiles(t *testing.T) {
	dir := t.TempDir()
	c := &Config{File: filepath.Join(dir, "c.yaml"), UpstreamCA: "certs/ca.pem", Policies: []Policy{{
		ClientFiles: []string{"networks/government.txt"},
		Block:       []string{"lists/tiktok.txt", "https://lists.example/ads.txt", "axfr://192.0.2.1/rpz.example."},
		Allow:       []string{"/etc/dnsfence/allow.txt", ""},
	}}}
	policyFiles := []string{c.File, filepath.Join(dir, "networks", "government.txt"), filepath.Join(dir, "lists", "tiktok.txt"), "/etc/dnsfence/allow.txt"}
	assert.Equal(t, policyFiles, c.PolicyFiles())
	assert.Equal(t, append(slices.Clone(policyFiles), filepath.Join(dir, "certs", "ca.pem")), c.LocalFiles())
	assert.Equal(t, "", c.Path(""))
	for _, ca := range []string{"", "https://ca.example/ca.pem"} {
		c.UpstreamCA = ca
		assert.Equal(t, policyFiles, c.LocalFiles(), "upstream_ca %q", ca)
	}
	c.Embedded = true
	for _, ca := range []string{"", "certs/ca.pem"} {
		c.UpstreamCA = ca
		assert.Empty(t, c.PolicyFiles())
		assert.Empty(t, c.LocalFiles(), "upstream_ca %q", ca)
	}
}

// TestConfigWrittenZero: a key written with 0 is taken as written, and
// a key with no value as left out. `rate_limit: {rate: 0}` turned the
// README's "rate: 0 turns it off" into the default 200 a second, because
// the default was applied to every zero; the zeros that mean nothing are
// errors (TestConfigMessages' numbers and durations tables).
func TestConfigWrittenZero(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"l.txt": "tiktok.com\n"})
	load := func(t *testing.T, extra string) *Config {
		t.Helper()
		path := filepath.Join(dir, "c.yaml")
		require.NoError(t, os.WriteFile(path, []byte("upstreams: [\"127.0.0.1:53\"]\n"+extra), 0o644))
		cfg, err := Load(path)
		require.NoError(t, err)
		return cfg
	}
	cfg := load(t, "rate_limit: {rate: 0}\nblocked_ttl: 0\ncache: {max_ttl: 0}\n")
	assert.Zero(t, cfg.RateLimit.Rate, "rate 0 is off")
	assert.Zero(t, cfg.RateLimit.Burst, "no default burst for no rate")
	assert.Zero(t, cfg.BlockedTTL)
	assert.Zero(t, cfg.Cache.MaxTTL)

	cfg = load(t, "rate_limit: {rate: 50}\n")
	assert.Equal(t, 50.0, cfg.RateLimit.Rate)
	assert.Equal(t, 100, cfg.RateLimit.Burst, "the default burst is twice the rate written")

	cfg = load(t, "upstream_timeout:\nrate_limit: {rate: ~, burst: null}\nlimits: {tcp_connections: null}\nblocked_ttl: ~\n"+
		"reload: {max_shrink: ~, unready_after: null}\ncache: {size: ~}\n")
	assert.Equal(t, DefaultUpstreamTimeout, cfg.UpstreamTimeout, "no value: the default")
	assert.Equal(t, float64(DefaultRate), cfg.RateLimit.Rate)
	assert.Equal(t, 2*DefaultRate, cfg.RateLimit.Burst)
	assert.Equal(t, DefaultTCPConnections, cfg.Limits.TCPConnections)
	assert.Equal(t, uint32(DefaultBlockedTTL), cfg.BlockedTTL)
	assert.Equal(t, DefaultMaxShrink, cfg.Reload.MaxShrink)
	assert.Equal(t, DefaultUnreadyAfter, cfg.Reload.UnreadyAfter)
	assert.Equal(t, DefaultCacheSize, cfg.Cache.Size)

	cfg = load(t, "reload: {max_shrink: 0, unready_after: 0s}\ncache: {size: 0, stale_refresh_time: 0s, stale_answer_client_timeout: 0s}\n")
	assert.Zero(t, cfg.Reload.MaxShrink, "0 turns the shrink guard off")
	assert.Zero(t, cfg.Reload.UnreadyAfter, "0 is never unready")
	assert.Zero(t, cfg.Cache.Size, "0 turns the cache off")
	assert.Zero(t, cfg.Cache.StaleRefreshTime, "0 asks the upstreams on every query")
	assert.Zero(t, cfg.Cache.StaleAnswerClientTimeout, "0 waits for the upstreams")

	cfg = load(t, "cache: {serve_stale: 1h, stale_answer_client_timeout: 200ms}\n")
	assert.Equal(t, 200*time.Millisecond, cfg.Cache.StaleAnswerClientTimeout)

	cfg = load(t, "allowed_clients: []\nexplain_clients: []\nrate_limit: {exempt: []}\n")
	assert.Empty(t, cfg.AllowedPrefixes(), "an empty list allows no client, not the default ranges")
	assert.Empty(t, cfg.ExplainPrefixes())
	assert.Empty(t, cfg.RateLimit.ExemptPrefixes())
}

// TestConfigSources checks the remote lists and the sources settings as
// the resolver takes them.
func TestConfigSources(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"l.txt": "tiktok.com\n"})
	path := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`
upstreams: ["127.0.0.1:53"]
policies:
  - name: p
    clients: ["10.0.0.0/8"]
    block: ["l.txt", "https://lists.example.gov/t.txt", "axfr://127.0.0.1:5300/rpz.example.gov"]
    allow: ["https://lists.example.gov/t.txt"]
  - name: q
    clients: ["10.1.0.0/16"]
    block: ["axfr://127.0.0.1:5300/rpz.example.gov"]
sources:
  refresh: 5m
  cache_dir: state
  tsig: {name: xfr-key, secret: "c2VjcmV0LWtleS1mb3ItdGVzdHM="}
`), 0o644))
	cfg, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"https://lists.example.gov/t.txt", "axfr://127.0.0.1:5300/rpz.example.gov"}, cfg.RemoteLists(), "each once, in file order")
	assert.Equal(t, "https://lists.example.gov/t.txt", cfg.Path("https://lists.example.gov/t.txt"), "a remote list names no file")
	opt := cfg.SourceOptions()
	assert.Equal(t, 5*time.Minute, opt.Refresh)
	assert.Equal(t, filepath.Join(dir, "state"), opt.CacheDir, "relative to the configuration's folder")
	assert.Equal(t, int64(DefaultSourceMaxBytes), opt.MaxBytes)
	require.NotNil(t, opt.TSIG)
	assert.Equal(t, DefaultTSIGAlgorithm, opt.TSIG.Algorithm)
	assert.Equal(t, "xfr-key", opt.TSIG.Name)
}

func TestConfigActions(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"nxdomain", "nxdomain"}, {"refused", "refused"}, {"null", "null"}, {"NXDOMAIN", "NXDOMAIN"}, {"~", "nxdomain"},
	} {
		cfg, err := Parse("c.yaml", []byte(`upstreams: ["127.0.0.1:53"]
policies: [{name: p, clients: ["10.0.0.0/8"], action: `+tc.yaml+`}]`), nil)
		if tc.want == "NXDOMAIN" {
			require.Error(t, err, "actions are lowercase words")
			continue
		}
		require.NoError(t, err, tc.yaml)
		assert.Equal(t, Action(tc.want), cfg.Policies[0].Action, tc.yaml)
	}
}

// TestConfigErrors checks every error message against golden files: each
// names the file, the line and the key, and all of them come at once.
func TestConfigErrors(t *testing.T) {
	inputs, err := filepath.Glob("testdata/config/*.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, inputs)
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			require.NoError(t, err)
			name := "testdata/config/" + filepath.Base(in)
			_, err = Parse(name, data, os.ReadFile)
			require.Error(t, err)
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			got := err.Error() + "\n"
			if *update {
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			assert.Equal(t, string(want), got)
		})
	}
}

func TestResolveUpstreams(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"resolv.conf": `# generated
nameserver 127.0.0.53
nameserver 127.0.0.1
nameserver ::1
nameserver fe80::1%eth0
nameserver ::10.0.0.1
nameserver
options edns0
search example.org
`})
	rc := filepath.Join(dir, "resolv.conf")
	tests := []struct {
		name   string
		listen []string
		want   []string
		self   []string // ResolvConfLeftOut: the nameservers left out as dnsfence
	}{
		{name: "all nameservers on port 53", listen: []string{"127.0.0.1:5353"}, want: []string{"127.0.0.53:53", "127.0.0.1:53", "[::1]:53"}},
		{name: "skips itself", listen: []string{"127.0.0.1:53"}, want: []string{"127.0.0.53:53", "[::1]:53"}, self: []string{"127.0.0.1:53"}},
		{name: "wildcard listen on 53 skips loopback", listen: []string{"0.0.0.0:53", "[::]:53"}, want: nil, self: []string{"127.0.0.53:53", "127.0.0.1:53", "[::1]:53"}},
		// Go listens on 0.0.0.0 with one dual-stack socket, as on [::]:
		// ::1 reaches it too.
		{name: "0.0.0.0 on 53 skips ::1 too", listen: []string{"0.0.0.0:53"}, want: nil, self: []string{"127.0.0.53:53", "127.0.0.1:53", "[::1]:53"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &Config{Listen: tc.listen, Upstreams: []string{rc, "127.0.0.9:5300"}}
			got, err := cfg.ResolveUpstreams()
			require.NoError(t, err)
			assert.Equal(t, append(tc.want, "127.0.0.9:5300"), got)
			var self, zoned []string
			selfAPs, zonedAPs := cfg.ResolvConfLeftOut()
			for _, ap := range selfAPs {
				self = append(self, ap.String())
			}
			for _, ap := range zonedAPs {
				zoned = append(zoned, ap.String())
			}
			assert.Equal(t, tc.self, self)
			assert.Equal(t, []string{"[fe80::1%eth0]:53", "[::a00:1]:53"}, zoned, "left out: the forwarder takes no zone, and no IPv4-compatible address")
		})
	}
}

// TestSystemResolverIsSelf: the system resolver is dnsfence alone when
// every nameserver of its resolv.conf is one of dnsfence's listen
// addresses (or a loopback address under a wildcard one on port 53), or
// when it names none and dnsfence listens on 127.0.0.1:53 or [::1]:53,
// where a resolver goes then; a nameserver of another host, or a file
// that cannot be read, says it is not. A link-local nameserver with a
// zone, which upstreams leave out, is one the system resolver asks:
// dnsfence only when dnsfence listens there. The forwarder refuses a
// DoH upstream by name when it is (its lookup would come back).
func TestSystemResolverIsSelf(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{
		"self":     "nameserver 127.0.0.1\n",
		"resolved": "nameserver 127.0.0.53\n",
		"zoned":    "nameserver fe80::1%eth0\n",
		"mixed":    "nameserver 127.0.0.1\nnameserver 192.0.2.53\n",
		"none":     "# no nameserver\nsearch example.org\n",
		"docker":   "nameserver 127.0.0.11\n",
		"fourth":   "nameserver 127.0.0.1\nnameserver ::1\nnameserver 127.0.0.1\nnameserver 192.0.2.53\n",
	})
	tests := []struct {
		file   string
		listen []string
		want   bool
	}{
		{"self", []string{"127.0.0.1:53"}, true},
		{"self", []string{"0.0.0.0:53"}, true},
		{"self", []string{"127.0.0.1:5353"}, false},
		{"resolved", []string{"127.0.0.53:53"}, true},
		{"mixed", []string{"127.0.0.1:53"}, false},
		{"none", []string{"127.0.0.1:53"}, true},
		{"none", []string{"[::1]:53"}, true},
		{"none", []string{"[::]:53"}, true},
		{"none", []string{"127.0.0.1:5353", "192.0.2.1:53"}, false},
		{"zoned", []string{"[::1]:53"}, false},
		{"zoned", []string{"127.0.0.1:53", "[fe80::1%eth0]:5353"}, false},
		{"zoned", []string{"[fe80::1%eth0]:53"}, true},
		{"zoned", []string{"[fe80::1%eth1]:53"}, false},
		{"zoned", []string{"[fe80::1]:53"}, true},
		{"docker", []string{"0.0.0.0:53"}, true},
		{"docker", []string{"127.0.0.1:53"}, false},
		{"missing", []string{"127.0.0.1:53"}, false},
		{"fourth", []string{"0.0.0.0:53"}, true},
	}
	for _, tc := range tests {
		cfg := &Config{Listen: tc.listen}
		assert.Equal(t, tc.want, cfg.SystemResolverIsSelf(filepath.Join(dir, tc.file)), "%s with listen %v", tc.file, tc.listen)
	}
}

// TestPlainUpstreamLoops: a resolv.conf nameserver left out as dnsfence
// itself is refused as a forwarding loop when written in upstreams only
// when it is one of dnsfence's listen addresses, or 127.0.0.1 or ::1 on
// the port of a wildcard one (IPv4-mapped or not); another loopback
// address under a wildcard (Docker's embedded DNS at 127.0.0.11) is
// taken as another server.
func TestPlainUpstreamLoops(t *testing.T) {
	tests := []struct {
		listen []string
		ap     string
		want   bool
	}{
		{[]string{"0.0.0.0:53"}, "127.0.0.1:53", true},
		{[]string{"0.0.0.0:53"}, "[::ffff:127.0.0.1]:53", true},
		{[]string{"0.0.0.0:53"}, "[::1]:53", true},
		{[]string{"0.0.0.0:53"}, "127.0.0.11:53", false},
		{[]string{"0.0.0.0:53"}, "127.0.0.1:5353", false},
		{[]string{"127.0.0.53:53"}, "127.0.0.53:53", true},
		{[]string{"127.0.0.1:5353", "127.0.0.53:53"}, "127.0.0.53:53", true},
		{[]string{"127.0.0.53:53"}, "127.0.0.1:53", false},
	}
	for _, tc := range tests {
		cfg := &Config{Listen: tc.listen}
		assert.Equal(t, tc.want, cfg.PlainUpstreamLoops(netip.MustParseAddrPort(tc.ap)), "%s with listen %v", tc.ap, tc.listen)
	}
}

// TestParseEmbedded: the built-in default configuration may name no
// upstreams (a resolv.conf naming none falls back at start) and names
// files compiled in, which are not looked for on disk; the same text
// as a file on disk is refused for both.
func TestParseEmbedded(t *testing.T) {
	noFiles := func(string) ([]byte, error) { return nil, os.ErrNotExist }
	data := []byte("policies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    block: [lists/tiktok.txt]\n")
	cfg, err := ParseEmbedded("embedded:dnsfence.yaml", data, noFiles)
	require.NoError(t, err)
	assert.True(t, cfg.Embedded)
	assert.Equal(t, []string{"lists/tiktok.txt"}, cfg.Policies[0].Block)
	_, err = Parse("embedded:dnsfence.yaml", data, noFiles)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `policies[0].block[0]: file "lists/tiktok.txt" does not exist`)
	assert.Contains(t, err.Error(), "upstreams: at least one upstream is required")
}

// TestUpstreamWithoutPort: a plain upstream written as an IP address
// alone is on port 53, as CoreDNS's forward, Unbound's forward-addr and
// Blocky's upstreams take one, and is written so from then on (the
// forwarder, check and the metrics' upstream label see IP:53); one
// written with its port is left as written.
func TestUpstreamWithoutPort(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte(`upstreams: ["9.9.9.9", "2620:fe::fe", "[2620:fe::10]", "::ffff:192.0.2.1", "149.112.112.112:5353"]`+"\n"), nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"9.9.9.9:53", "[2620:fe::fe]:53", "[2620:fe::10]:53", "[::ffff:192.0.2.1]:53", "149.112.112.112:5353"}, cfg.Upstreams)
	got, err := cfg.ResolveUpstreams()
	require.NoError(t, err)
	assert.Equal(t, cfg.Upstreams, got)
}

// TestLoadUnreadableFile: a configuration file that cannot be read is an
// *Error like every other configuration problem, naming the file and why.
func TestLoadUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path, want string
		notExist         bool
	}{
		{name: "missing", path: filepath.Join(dir, "missing.yaml"), want: "reading the configuration: no such file or directory", notExist: true},
		{name: "a folder", path: dir, want: "reading the configuration: is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path)
			require.Error(t, err)
			var ce *Error
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tc.path, ce.File)
			assert.Zero(t, ce.Line)
			assert.Equal(t, tc.path+": "+tc.want, err.Error())
			assert.Equal(t, tc.notExist, errors.Is(err, fs.ErrNotExist))
		})
	}
}

// TestConfigUnopenableListNamesItsKey: a list or range file that exists
// but cannot be opened (a socket; a file dnsfence's user may not read)
// was let through by the configuration, which only looked for it, and
// the list reader then said "reading list: open unread.txt: permission
// denied", with no key and no line of the configuration.
func TestConfigUnopenableListNamesItsKey(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"l.txt": "tiktok.com\n", "unread.txt": "tiktok.com\n", "ranges.txt": "10.0.0.0/8\n"})
	sock, err := net.Listen("unix", filepath.Join(dir, "sock.txt"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sock.Close() })
	require.NoError(t, os.Chmod(filepath.Join(dir, "unread.txt"), 0))
	require.NoError(t, os.Chmod(filepath.Join(dir, "ranges.txt"), 0))
	tests := []struct {
		name, policy, want string
		unprivileged       bool // root reads a file of mode 000
	}{
		{name: "socket", policy: `block: ["sock.txt"]`,
			want: `c.yaml:5: policies[0].block[0]: file "` + filepath.Join(dir, "sock.txt") + `" cannot be read: no such device or address; give the path of a file the user dnsfence runs as can read`},
		{name: "mode 000 list", policy: `allow: ["unread.txt"]`, unprivileged: true,
			want: `c.yaml:5: policies[0].allow[0]: file "` + filepath.Join(dir, "unread.txt") + `" cannot be read: permission denied; give the path of a file the user dnsfence runs as can read`},
		{name: "mode 000 range file", policy: `client_files: ["ranges.txt"]`, unprivileged: true,
			want: `c.yaml:5: policies[0].client_files[0]: file "` + filepath.Join(dir, "ranges.txt") + `" cannot be read: permission denied; give the path of a file the user dnsfence runs as can read`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.unprivileged && os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 000")
			}
			path := filepath.Join(dir, "c.yaml")
			require.NoError(t, os.WriteFile(path, []byte("upstreams: [\"192.0.2.53:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    "+tc.policy+"\n"), 0o644))
			_, err := Load(path)
			require.Error(t, err)
			assert.Equal(t, dir+string(filepath.Separator)+tc.want, err.Error())
		})
	}
}

// TestChanges: Changes names what a reload logs as config_changed: a
// top-level key, a section's key by its dotted name, each policy by name
// (its keys, or the policy added or removed), in the file's order, and
// nothing for a file that reads the same.
func TestChanges(t *testing.T) {
	load := func(t *testing.T, text string) *Config {
		t.Helper()
		cfg, err := Parse("c.yaml", []byte("upstreams: [\"127.0.0.1:53\"]\n"+text), nil)
		require.NoError(t, err, text)
		return cfg
	}
	const a, b, c = "  - {name: a, clients: [10.1.0.0/16]}\n", "  - {name: b, clients: [10.2.0.0/16]}\n", "  - {name: c, clients: [10.3.0.0/16]}\n"
	old := load(t, "blocked_ttl: 60\nreload: {max_shrink: 0.5}\npolicies:\n"+a+b)
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"the same file", "blocked_ttl: 60\nreload: {max_shrink: 0.5}\npolicies:\n" + a + b, nil},
		{"the same policies in another order", "blocked_ttl: 60\nreload: {max_shrink: 0.5}\npolicies:\n" + b + a, nil},
		{"a top-level key", "blocked_ttl: 30\nreload: {max_shrink: 0.5}\npolicies:\n" + a + b, []string{"blocked_ttl"}},
		{"a section's key", "blocked_ttl: 60\nreload: {max_shrink: 0.25}\npolicies:\n" + a + b, []string{"reload.max_shrink"}},
		{"a policy's keys", "blocked_ttl: 60\nreload: {max_shrink: 0.5}\npolicies:\n" + a + "  - {name: b, clients: [10.9.0.0/16], action: refused}\n", []string{"policies[b].clients", "policies[b].action"}},
		{"a policy added", "blocked_ttl: 60\nreload: {max_shrink: 0.5}\npolicies:\n" + a + c + b, []string{"policies[c] added"}},
		{"a policy removed", "blocked_ttl: 60\nreload: {max_shrink: 0.5}\npolicies:\n" + b, []string{"policies[a] removed"}},
		{"a policy renamed, and more", "blocked_ttl: 61\nreload: {max_shrink: 0.4}\npolicies:\n" + c + b, []string{"blocked_ttl", "reload.max_shrink", "policies[c] added", "policies[a] removed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, Changes(old, load(t, tc.text)))
		})
	}
}

// TestConfigRangesAndLines: the ranges a configuration gives are parsed
// in file order, each with the line check and the lint name it by
// (AllowedLine, Config.Line, ClientRanges, Policy.Line), and a line asked of an entry the
// key does not have is 0.
func TestConfigRangesAndLines(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"l.txt": "tiktok.com\n", "a.txt": "ads.tiktok.com\n", "r.txt": "10.9.0.0/16\n"})
	path := filepath.Join(dir, "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`upstreams: ["192.0.2.53:53"]
allowed_clients:
  - 10.0.0.0/8
  - 2001:db8::/32
trusted_proxies: [192.0.2.1/32]
explain_clients: [10.1.0.0/16]
rate_limit: {exempt: [10.2.0.0/16]}
policies:
  - name: gov
    clients:
      - 10.3.0.0/16
      - 10.4.0.0/16
    client_files: [r.txt]
    block:
      - l.txt
      - l.txt
    allow: [a.txt]
`), 0o644))
	cfg, err := Load(path)
	require.NoError(t, err)
	pfx := netip.MustParsePrefix
	assert.Equal(t, []netip.Prefix{pfx("10.0.0.0/8"), pfx("2001:db8::/32")}, cfg.AllowedPrefixes())
	assert.Equal(t, []int{3, 4, 0}, []int{cfg.AllowedLine(0), cfg.AllowedLine(1), cfg.AllowedLine(2)})
	assert.Equal(t, []int{1, 0, 0, 3}, []int{cfg.Line("upstreams", 0), cfg.Line("upstreams", 1), cfg.Line("listen", 0), cfg.Line("allowed_clients", 0)},
		"Line: an entry's line; 0 past the entries, and for a key left out")
	assert.Equal(t, []netip.Prefix{pfx("192.0.2.1/32")}, cfg.TrustedPrefixes())
	assert.Equal(t, []netip.Prefix{pfx("10.1.0.0/16")}, cfg.ExplainPrefixes())
	assert.Equal(t, []netip.Prefix{pfx("10.2.0.0/16")}, cfg.RateLimit.ExemptPrefixes())
	p := &cfg.Policies[0]
	assert.Equal(t, []blocklist.Range{{Prefix: pfx("10.3.0.0/16"), File: path, Line: 11}, {Prefix: pfx("10.4.0.0/16"), File: path, Line: 12}}, p.ClientRanges())
	assert.Equal(t, []int{13, 15, 16, 17, 0, 0, 0}, []int{p.Line("client_files", 0), p.Line("block", 0), p.Line("block", 1), p.Line("allow", 0), p.Line("allow", 1), p.Line("block", -1), p.Line("clients", 0)})

	def, err := Parse("c.yaml", []byte(`upstreams: ["192.0.2.53:53"]`+"\n"), nil)
	require.NoError(t, err)
	assert.Equal(t, DefaultAllowedClients, def.AllowedClients)
	assert.Len(t, def.AllowedPrefixes(), len(DefaultAllowedClients))
	assert.Zero(t, def.AllowedLine(0), "a default range has no line")
	assert.Equal(t, []netip.Prefix{pfx("127.0.0.0/8"), pfx("::1/128")}, def.ExplainPrefixes(), "explain_clients left out: loopback only")
}

// TestResolveUpstreamsNotText: a resolv.conf that is not text (a binary
// copied over it) is an error naming the file, not nameservers read from
// whatever lines it has.
func TestResolveUpstreamsNotText(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{"resolv.conf": "nameserver 192.0.2.1\n\x00\x01\x02\n"})
	cfg := &Config{Listen: []string{"127.0.0.1:5353"}, Upstreams: []string{filepath.Join(dir, "resolv.conf")}}
	got, err := cfg.ResolveUpstreams()
	require.ErrorIs(t, err, blocklist.ErrNotText)
	assert.Contains(t, err.Error(), filepath.Join(dir, "resolv.conf"))
	assert.Nil(t, got)
}
