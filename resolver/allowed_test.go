package resolver

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// buildConfig writes the configuration text and files to a temporary
// folder and builds the snapshot serve would start with.
func buildConfig(t testing.TB, text string, files map[string]string) (*Snapshot, error) {
	t.Helper()
	dir := testnet.WriteTree(t, files)
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	return BuildSnapshot(cfg, nil)
}

// TestPolicyRangeOutsideAllowedClients: a policy for clients that may not
// ask at all is a silent outage for those devices, so it is an error at
// start and reload (inline and from a range file, IPv4 and IPv6); a range
// only partly inside allowed_clients is a warning, and explain says why its
// other clients are refused.
func TestPolicyRangeOutsideAllowedClients(t *testing.T) {
	files := map[string]string{"tiktok.txt": "tiktok.com\n", "ranges.txt": "# government\n2001:db8:10::/48\n"}
	for _, tc := range []struct {
		name, clients, files, allowed string
		wantErr                       string
	}{
		{name: "IPv4 range outside the default", clients: `["198.51.100.0/24"]`, wantErr: `dnsfence.yaml:6: range 198.51.100.0/24 of policy "gov" is outside allowed_clients`},
		{name: "global IPv6 range outside the default", clients: `["2001:db8:10::/48"]`, wantErr: `range 2001:db8:10::/48 of policy "gov" is outside allowed_clients`},
		{name: "range file outside the default", clients: `[]`, files: `["ranges.txt"]`, wantErr: `ranges.txt:2: range 2001:db8:10::/48 of policy "gov" is outside allowed_clients`},
		{name: "inside a wider allowed range", clients: `["10.1.0.0/16", "fd00:1::/48"]`},
		{name: "covered by two allowed halves", clients: `["10.0.0.0/8"]`, allowed: `["10.0.0.0/9", "10.128.0.0/9"]`},
		{name: "listed in allowed_clients", clients: `["2001:db8:10::/48"]`, allowed: `["2001:db8::/32"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := "upstreams: [\"127.0.0.1:53\"]\n"
			if tc.allowed != "" {
				cfg += "allowed_clients: " + tc.allowed + "\n"
			} else {
				cfg += "\n"
			}
			cfg += "policies:\n  - name: gov\n    block: [tiktok.txt]\n    clients: " + tc.clients + "\n"
			if tc.files != "" {
				cfg += "    client_files: " + tc.files + "\n"
			}
			snap, err := buildConfig(t, cfg, files)
			if tc.wantErr == "" {
				require.NoError(t, err)
				assert.Empty(t, snap.Lint())
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			assert.Contains(t, err.Error(), "add it (or a range holding it) to allowed_clients")
		})
	}

	t.Run("partly inside: a warning, and explain says why", func(t *testing.T) {
		snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
allowed_clients: ["10.0.0.0/16"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
`, files)
		require.NoError(t, err)
		var msgs []string
		for _, w := range snap.Lint() {
			msgs = append(msgs, w.String())
		}
		assert.Contains(t, strings.Join(msgs, "\n"), `dnsfence.yaml:6: range 10.0.0.0/8 of policy "gov" is only partly inside allowed_clients`)
		e := snap.Explain(netip.MustParseAddr("10.200.0.1"), "www.tiktok.com", dns.TypeA)
		assert.Equal(t, ResultRefused, e.Result)
		assert.Contains(t, e.String(), `policy "gov" range 10.0.0.0/8`)
		assert.Contains(t, e.String(), "add the range to allowed_clients")
	})
}

// TestLintOneFamily: a blocking policy of IPv4 ranges only, while
// allowed_clients admits IPv6 clients (fc00::/7 by default), let a
// dual-stack government device that asked over IPv6 have every name, and
// nothing said so. It is one warning a family, at the first such policy's
// first range; loopback and allowed ranges that some policy's range sits
// in (an exemption is a decision) are not named.
func TestLintOneFamily(t *testing.T) {
	files := map[string]string{"tiktok.txt": "tiktok.com\n", "gov6.txt": "# v6 devices\n2001:db8:6::/48\n"}
	for _, tc := range []struct {
		name, config string
		want         string // a regexp; "" for no such warning
	}{
		{name: "IPv4 only under the default allowed_clients", config: `listen: ["[::]:5353"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
`, want: `dnsfence\.yaml:6: blocking policy "gov" lists IPv4 ranges only, while allowed_clients admits IPv6 clients where no policy lists a range \(fc00::/7\): a dual-stack device that asks over IPv6 is in no policy and gets every name; add the devices' IPv6 ranges to the policy, or take those ranges out of allowed_clients$`},
		{name: "IPv6 only from a range file, IPv4 allowed", config: `listen: ["[::]:5353"]
allowed_clients: ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "2001:db8::/32"]
policies:
  - name: gov
    block: [tiktok.txt]
    client_files: [gov6.txt]
`, want: `gov6\.txt:2: blocking policy "gov" lists IPv6 ranges only, while allowed_clients admits IPv4 clients where no policy lists a range \(10\.0\.0\.0/8\): a dual-stack device that asks over IPv4`},
		{name: "two policies, one warning", config: `listen: ["[::]:5353"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
  - name: lab
    block: [tiktok.txt]
    clients: ["192.168.0.0/16"]
`, want: `dnsfence\.yaml:6: blocking policies "gov", "lab" list IPv4 ranges only, while allowed_clients admits IPv6 clients where no policy lists a range \(fc00::/7\)`},
		{name: "both families", config: `listen: ["[::]:5353"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8", "fd00:10::/32"]
`},
		{name: "loopback alone of the other family", config: `listen: ["[::]:5353"]
allowed_clients: ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
`},
		{name: "the other family given to an exemption", config: `listen: ["[::]:5353"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
  - name: press
    clients: ["fd00:20::/32"]
`},
		{name: "an exemption alone", config: `listen: ["[::]:5353"]
policies:
  - name: press
    clients: ["10.0.0.0/8"]
`},
		{name: "no listener takes IPv6 but from the machine", config: `listen: ["127.0.0.1:5353", "10.0.0.53:53", "[::1]:5353"]
listen_https: ["http://10.0.0.53:8053"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
`},
		{name: "an IPv6 DoH listener", config: `listen_https: ["http://[fd00::53]:8053"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
`, want: `dnsfence\.yaml:6: blocking policy "gov" lists IPv4 ranges only, while allowed_clients admits IPv6 clients`},
		{name: "IPv4 listeners behind a trusted proxy", config: `listen: ["10.0.0.53:53"]
trusted_proxies: ["10.0.0.2/32"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients: ["10.0.0.0/8"]
`, want: `dnsfence\.yaml:7: blocking policy "gov" lists IPv4 ranges only, while allowed_clients admits IPv6 clients`},
		{name: "IPv6 listeners behind a trusted proxy", config: `listen: ["[fd00::53]:53"]
trusted_proxies: ["fd00::2/128"]
allowed_clients: ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "2001:db8::/32"]
policies:
  - name: gov
    block: [tiktok.txt]
    client_files: [gov6.txt]
`, want: `gov6\.txt:2: blocking policy "gov" lists IPv6 ranges only, while allowed_clients admits IPv4 clients`},
		{name: "at the policy's first range", config: `listen: ["[::]:5353"]
policies:
  - name: gov
    block: [tiktok.txt]
    clients:
      - 10.0.0.0/8
      - 192.168.0.0/16
`, want: `dnsfence\.yaml:7: blocking policy "gov" lists IPv4 ranges only`},
		{name: "IPv6 only, no listener takes IPv4", config: `listen: ["[fd00::53]:53"]
allowed_clients: ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "2001:db8::/32"]
policies:
  - name: gov
    block: [tiktok.txt]
    client_files: [gov6.txt]
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := buildConfig(t, "upstreams: [\"127.0.0.1:53\"]\n"+tc.config, files)
			require.NoError(t, err)
			var found []string
			for _, w := range snap.Lint() {
				if strings.Contains(w.Msg, "ranges only") {
					found = append(found, w.String())
				}
			}
			if tc.want == "" {
				assert.Empty(t, found)
				return
			}
			require.Len(t, found, 1)
			assert.Regexp(t, tc.want, found[0])
		})
	}
}

// TestLintRepeats: the same list twice in one policy, and the same entry in
// two block lists of one policy, are warnings naming both places, the
// configuration's lines included.
func TestLintRepeats(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block:
      - tiktok.txt
      - bytedance.txt
      - ./tiktok.txt
    allow: [allow.txt, allow.txt]
  - name: other
    clients: ["10.1.0.0/16"]
    block: [tiktok.txt, bytedance.txt]
`, map[string]string{"tiktok.txt": "tiktok.com\ncapcut.com\n", "bytedance.txt": "# ByteDance\nbytedance.com\ncapcut.com\n", "allow.txt": "ads.tiktok.com\n"})
	require.NoError(t, err)
	var msgs []string
	for _, w := range snap.Lint() {
		msgs = append(msgs, w.String())
	}
	all := strings.Join(msgs, "\n")
	assert.Contains(t, all, `dnsfence.yaml:8: policy "gov" names block list ./tiktok.txt twice (first at line 6); keep one`)
	assert.Contains(t, all, `dnsfence.yaml:9: policy "gov" names allow list allow.txt twice (first at line 9); keep one`)
	assert.Contains(t, all, "bytedance.txt:3: capcut.com is also in ")
	assert.Contains(t, all, "tiktok.txt:2")
	assert.Equal(t, 1, strings.Count(all, "capcut.com is also in"), "each pair of lists once: %s", all)
}

// TestLintEmptyFiles: a block list with no entry (empty, blank lines,
// comments only) and a client range file with no range, beside another
// range of its policy, load and serve: the list blocks nothing, the file
// puts no device in its policy. check said "0 warnings, ok" of them, so a
// sync or a template that wrote an empty file passed a team's check
// -strict, and a dnsfence started with it (no reload guard has anything
// before a start) blocked nothing for those devices. Each is now a warning
// at the configuration's line naming it; an empty allow list, which only
// blocks more, is not, nor are lists and files that hold something.
func TestLintEmptyFiles(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    client_files: [empty-ranges.txt, ranges.txt]
    block:
      - empty.txt
      - comments.txt
      - tiktok.txt
    allow: [empty.txt]
  - name: phones
    client_files: [phones.txt, blank-ranges.txt]
    block: [blank.txt]
`, map[string]string{
		"empty.txt": "", "comments.txt": "# tiktok.com, once the sync has run\n", "blank.txt": "\n\r\n\n",
		"tiktok.txt": "tiktok.com\n", "empty-ranges.txt": "", "ranges.txt": "10.1.0.0/16\n",
		"phones.txt": "172.16.0.0/12\n", "blank-ranges.txt": "# none yet\n\n",
	})
	require.NoError(t, err)
	var got []string
	for _, w := range snap.Lint() {
		if strings.Contains(w.Msg, "holds no") {
			got = append(got, w.String())
		}
	}
	dir := filepath.Dir(snap.Config.File)
	assert.Equal(t, []string{
		filepath.Join(dir, "dnsfence.yaml") + `:5: client range file empty-ranges.txt of policy "gov" holds no range: it puts no device in the policy`,
		filepath.Join(dir, "dnsfence.yaml") + `:7: block list empty.txt of policy "gov" holds no entry: it blocks nothing`,
		filepath.Join(dir, "dnsfence.yaml") + `:8: block list comments.txt of policy "gov" holds no entry: it blocks nothing`,
		filepath.Join(dir, "dnsfence.yaml") + `:12: client range file blank-ranges.txt of policy "phones" holds no range: it puts no device in the policy`,
		filepath.Join(dir, "dnsfence.yaml") + `:13: block list blank.txt of policy "phones" holds no entry: it blocks nothing`,
	}, got)
}

// TestLintOpenResolver: allowed_clients that admit a whole part of the
// Internet (0.0.0.0/0, ::/0, an IPv4 range wider than a /8, an IPv6 one
// wider than a /16 over global unicast space) are a warning: on an address
// reachable from outside, dnsfence answers anyone, the open resolver a
// Pi-hole left so became for a reflection attack (pi-hole/FTL#1076).
// check said "0 warnings, ok" of `allowed_clients: ["0.0.0.0/0", "::/0"]`.
// The private and loopback defaults, a department's public /16 and the
// unique local fc00::/7 are not.
func TestLintOpenResolver(t *testing.T) {
	for _, tc := range []struct {
		allowed string
		want    []string
	}{
		{`["0.0.0.0/0", "::/0"]`, []string{"0.0.0.0/0", "::/0"}},
		{`["0.0.0.0/1", "128.0.0.0/1", "2000::/3"]`, []string{"0.0.0.0/1", "128.0.0.0/1", "2000::/3"}},
		{`["10.0.0.0/8", "51.140.0.0/16", "2a00:1234::/32", "fc00::/7", "127.0.0.0/8", "::1/128"]`, nil},
		{`["10.0.0.0/8", "2a00::/16", "2a00::/15"]`, []string{"2a00::/15"}}, // a /16 of global unicast is not yet the Internet
		{``, nil}, // the defaults: loopback and private
	} {
		t.Run(tc.allowed, func(t *testing.T) {
			allowed := ""
			if tc.allowed != "" {
				allowed = "allowed_clients: " + tc.allowed + "\n"
			}
			snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
`+allowed+`policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt]
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
			require.NoError(t, err)
			var got []string
			for _, w := range snap.Lint() {
				if strings.Contains(w.Msg, "open resolver") {
					assert.Equal(t, 2, w.Line, "the line of the range in allowed_clients")
					got = append(got, strings.Fields(w.Msg)[1])
				}
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestLintRangeListedTwice: a range a policy lists both inline and in a
// client file, or in two files, is a warning (it stays the policy's while
// either still lists it, so editing one does not take it away); the
// decision is unchanged. Inline twice is an error of the configuration.
func TestLintRangeListedTwice(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    client_files: [a.txt, b.txt]
    block: [tiktok.txt]
`, map[string]string{"tiktok.txt": "tiktok.com\n", "a.txt": "10.0.0.0/8\n172.16.0.0/12\n", "b.txt": "# again\n172.16.0.0/12\n"})
	require.NoError(t, err)
	var msgs []string
	for _, w := range snap.Lint() {
		msgs = append(msgs, w.String())
	}
	all := strings.Join(msgs, "\n")
	assert.Regexp(t, `a\.txt:1: range 10\.0\.0\.0/8 of policy "gov" is listed already \(\S*dnsfence\.yaml:4\)`, all)
	assert.Regexp(t, `b\.txt:2: range 172\.16\.0\.0/12 of policy "gov" is listed already \(\S*a\.txt:2\)`, all)
	assert.Equal(t, 2, strings.Count(all, "is listed already"), all)
	cr, ok := snap.PolicyForPrefix(netip.MustParsePrefix("172.16.1.0/24"))
	require.True(t, ok)
	assert.Equal(t, "gov", cr.Policy.Name)
}

// TestLintPublicSuffixRPZ: only a trigger that blocks the domains under a
// public suffix is warned about: an RPZ `*.co.uk`, not `co.uk` itself
// (an RPZ trigger for a name matches that name only) and not a response-IP
// trigger, whose prefix in text (`2001:db8::1/128`, one "label" to the
// public suffix list) names no domain; a plain list's `co.uk` is.
func TestLintPublicSuffixRPZ(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [policy.rpz, plain.txt]
`, map[string]string{
		"policy.rpz": "$ORIGIN rpz.example.gov.\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n" +
			"co.uk CNAME .\n" + // line 3
			"*.co.uk CNAME .\n" + // line 4
			"128.1.zz.db8.2001.rpz-ip CNAME .\n" + // line 5
			"48.zz.b.db8.2001.rpz-ip CNAME .\n" + // line 6
			"24.0.2.0.192.rpz-ip CNAME .\n" + // line 7
			"*.org.uk CNAME rpz-passthru.\n", // line 8
		"plain.txt": "com.au\n",
	})
	require.NoError(t, err)
	var msgs []string
	for _, w := range snap.Lint() {
		msgs = append(msgs, w.String())
	}
	all := strings.Join(msgs, "\n")
	assert.Contains(t, all, "policy.rpz:4: co.uk is a public suffix")
	assert.Contains(t, all, "plain.txt:1: com.au is a public suffix")
	// A passthru of a suffix allows what it names, it blocks nothing.
	assert.Contains(t, all, "policy.rpz:8: org.uk is a public suffix: it lets through, past the block entries of every list, every domain registered under it")
	assert.Equal(t, 3, strings.Count(all, "is a public suffix"), all)
}

// TestLintTrustedProxiesOverBlockingRange: trusted_proxies wider than one
// address over a blocking range (0.0.0.0/0, a whole /24 of devices) was
// accepted at start with no word, though every device there may then name
// another client by ECS and leave the policy, and a reload that grows
// trusted_proxies so is held as protection taken away; a forwarder's own
// address inside the range is not warned about.
func TestLintTrustedProxiesOverBlockingRange(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
trusted_proxies: ["0.0.0.0/0", "10.1.0.53/32", "192.168.7.0/24"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt]
  - name: lab
    clients: ["192.168.7.0/25"]
    block: [tiktok.txt]
  - name: press
    clients: ["10.20.30.0/24"]
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
	require.NoError(t, err)
	var msgs []string
	for _, w := range snap.Lint() {
		msgs = append(msgs, w.String())
	}
	all := strings.Join(msgs, "\n")
	assert.Regexp(t, `dnsfence\.yaml:5: range 10\.0\.0\.0/8 of blocking policy "gov" overlaps trusted_proxies 0\.0\.0\.0/0: every device there may name another client`, all)
	assert.Regexp(t, `dnsfence\.yaml:8: range 192\.168\.7\.0/25 of blocking policy "lab" overlaps trusted_proxies (0\.0\.0\.0/0|192\.168\.7\.0/24)`, all)
	assert.Equal(t, 2, strings.Count(all, "overlaps trusted_proxies"), "one a range, the exemption none: %s", all)

	snap, err = buildConfig(t, `upstreams: ["127.0.0.1:53"]
trusted_proxies: ["10.1.0.53/32", "::1/128"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt]
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
	require.NoError(t, err)
	for _, w := range snap.Lint() {
		assert.NotContains(t, w.String(), "trusted_proxies", "a forwarder's own address")
	}

	// Forwarders inside an exemption are no devices of the blocking
	// range: the exemption's narrower range is theirs, there is no
	// policy for them to leave. One range of them reaching past it is.
	snap, err = buildConfig(t, `upstreams: ["127.0.0.1:53"]
trusted_proxies: ["10.20.30.0/29", "172.16.0.0/23"]
policies:
  - name: gov
    clients: ["10.0.0.0/8", "172.16.0.0/16"]
    block: [tiktok.txt]
  - name: press
    clients: ["10.20.30.0/24", "172.16.0.0/24"]
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
	require.NoError(t, err)
	msgs = nil
	for _, w := range snap.Lint() {
		if strings.Contains(w.String(), "trusted_proxies") {
			msgs = append(msgs, w.String())
		}
	}
	require.Len(t, msgs, 1, "the forwarders in the exemption: %s", msgs)
	assert.Contains(t, msgs[0], `range 172.16.0.0/16 of blocking policy "gov" overlaps trusted_proxies 172.16.0.0/23`)
}

// TestLintPortsOfOtherProtocols: DNS over HTTPS on port 53 and plain DNS on
// port 443 load (no RFC forbids them, as RFC 7858 §3.1 forbids plain DNS
// on 853, which is refused) but are warnings naming the key, its entry, its
// line and the address meant: a plain upstream's address with https://
// put before it reaches a server that does not speak HTTPS, a DoH server
// written as a plain upstream one that does not answer plain DNS. An
// http:// DoH listener (a proxy's backend, on any port) and the usual
// ports are not warned of for their port (the http:// one is for its
// proxy, which no trusted_proxies range holds: lintPlainDoH).
func TestLintPortsOfOtherProtocols(t *testing.T) {
	pki := newTestPKI(t)
	snap, err := buildConfig(t, fmt.Sprintf(`listen: ["127.0.0.1:5300", "127.0.0.2:443"]
tls: {cert: %q, key: %q}
listen_https: ["127.0.0.3:53", "https://[::2]:53", "http://127.0.0.4:53", "127.0.0.5:443"]
upstreams:
  - "https://192.0.2.1:53/dns-query#dns.example.net"
  - "192.0.2.2:443"
  - "https://[2001:db8::1]:53#dns.example.net"
  - "[2001:db8::2]:443"
  - "https://dns.example.net:53/q"
  - "https://192.0.2.3/dns-query#dns.example.net"
  - "192.0.2.4:53"
  - "192.0.2.5"
policies:
  - name: gov
    clients: ["10.0.0.0/8", "fc00::/7"]
    block: [tiktok.txt]
`, pki.certFile, pki.keyFile), map[string]string{"tiktok.txt": "tiktok.com\n"})
	require.NoError(t, err)
	var got []string
	for _, w := range snap.Lint() {
		got = append(got, w.String())
	}
	file := snap.Config.File
	assert.Equal(t, []string{
		file + `:1: listen[1]: 127.0.0.2:443: plain DNS on port 443, the port of HTTPS, where devices look for DNS over HTTPS (listen_https), not plain DNS; e.g. 127.0.0.2:53`,
		file + `:3: listen_https[0]: 127.0.0.3:53: DNS over HTTPS on port 53, the port of plain DNS: devices look for it on 443, and their plain DNS over TCP sent there meets TLS; e.g. 127.0.0.3:443`,
		file + `:3: listen_https[1]: https://[::2]:53: DNS over HTTPS on port 53, the port of plain DNS: devices look for it on 443, and their plain DNS over TCP sent there meets TLS; e.g. [::2]:443`,
		file + `:3: listen_https[2]: http://127.0.0.4:53 takes DNS over HTTPS from a TLS-terminating proxy, and no trusted_proxies range holds a loopback address, which a proxy on this host asks from: its Forwarded and X-Forwarded-For headers are not read, and every device asking through it is decided as the proxy's own address, not its own; e.g. trusted_proxies: ["127.0.0.1"]`,
		file + `:5: upstreams[0]: "https://192.0.2.1:53/dns-query#dns.example.net": DNS over HTTPS on port 53, the port of plain DNS, which DoH servers do not listen on; they listen on 443: https://192.0.2.1:443/dns-query#dns.example.net`,
		file + `:6: upstreams[1]: "192.0.2.2:443": plain DNS to port 443, the port of HTTPS, which a DNS over HTTPS server there does not answer; for DNS over HTTPS write https://192.0.2.2:443/dns-query#NAME (NAME: the name its certificate carries), for plain DNS 192.0.2.2:53`,
		file + `:7: upstreams[2]: "https://[2001:db8::1]:53#dns.example.net": DNS over HTTPS on port 53, the port of plain DNS, which DoH servers do not listen on; they listen on 443: https://[2001:db8::1]:443/dns-query#dns.example.net`,
		file + `:8: upstreams[3]: "[2001:db8::2]:443": plain DNS to port 443, the port of HTTPS, which a DNS over HTTPS server there does not answer; for DNS over HTTPS write https://[2001:db8::2]:443/dns-query#NAME (NAME: the name its certificate carries), for plain DNS [2001:db8::2]:53`,
		file + `:9: upstreams[4]: "https://dns.example.net:53/q": DNS over HTTPS on port 53, the port of plain DNS, which DoH servers do not listen on; they listen on 443: https://dns.example.net:443/q`,
	}, got)
}

// TestLintShadowedRange: a range is shadowed when narrower ranges cover
// every address of it, half by half down to single addresses, and only
// then: two /32s shadow their /31, two /17s their /16; a /30 with three of
// its four addresses, or two not adjacent, still selects a client.
func TestLintShadowedRange(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gov, lab string
		shadowed bool
	}{
		{name: "a /31 by its two addresses", gov: `["10.0.0.0/31"]`, lab: `["10.0.0.0/32", "10.0.0.1/32"]`, shadowed: true},
		{name: "a /16 by its two halves", gov: `["10.0.0.0/16"]`, lab: `["10.0.0.0/17", "10.0.128.0/17"]`, shadowed: true},
		{name: "a /30 but for its last address", gov: `["10.0.0.0/30"]`, lab: `["10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32"]`},
		{name: "a /30 by its first and third addresses", gov: `["10.0.0.0/30"]`, lab: `["10.0.0.0/32", "10.0.0.2/32"]`},
		{name: "a /16 by its lower half", gov: `["10.0.0.0/16"]`, lab: `["10.0.0.0/17"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: `+tc.gov+`
    block: [tiktok.txt]
  - name: lab
    clients: `+tc.lab+`
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
			require.NoError(t, err)
			var found []string
			for _, w := range snap.Lint() {
				if strings.Contains(w.Msg, "shadowed") {
					found = append(found, w.String())
				}
			}
			if !tc.shadowed {
				assert.Empty(t, found)
				return
			}
			require.Len(t, found, 1)
			assert.Regexp(t, `dnsfence\.yaml:4: range 10\.0\.0\.0/\d+ of policy "gov" is shadowed entirely by narrower ranges: it selects no client$`, found[0])
		})
	}
}

// TestLintSharedEntriesEach: every entry two block lists of one policy
// both hold is a warning of its own, not the first alone.
func TestLintSharedEntriesEach(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt, bytedance.txt]
`, map[string]string{"tiktok.txt": "tiktok.com\ncapcut.com\nlemon8-app.com\n", "bytedance.txt": "capcut.com\nbytedance.com\nlemon8-app.com\n"})
	require.NoError(t, err)
	var found []string
	for _, w := range snap.Lint() {
		if strings.Contains(w.Msg, "is also in") {
			found = append(found, w.String())
		}
	}
	require.Len(t, found, 2, "%s", found)
	assert.Regexp(t, `bytedance\.txt:1: capcut\.com is also in .*tiktok\.txt:2$`, found[0])
	assert.Regexp(t, `bytedance\.txt:3: lemon8-app\.com is also in .*tiktok\.txt:3$`, found[1])
}

// TestLintTrustedProxiesAsANarrowerRange: trusted proxies that are a
// narrower range of another policy exactly, not only inside one, are that
// range's devices, not the blocking range's: no warning.
func TestLintTrustedProxiesAsANarrowerRange(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
trusted_proxies: ["10.20.30.0/24"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt]
  - name: press
    clients: ["10.20.30.0/24"]
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
	require.NoError(t, err)
	for _, w := range snap.Lint() {
		assert.NotContains(t, w.String(), "trusted_proxies")
	}
}

// TestLintEmptyLeavesRemoteListsOut: a remote list without a copy yet (check
// without -fetch, a first start) holds no entry, but is no empty list to
// warn of: the fetch says what it got.
func TestLintEmptyLeavesRemoteListsOut(t *testing.T) {
	snap, err := buildConfig(t, `upstreams: ["127.0.0.1:53"]
sources: {cache_dir: cache}
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt, "https://lists.example.invalid/bytedance.txt"]
`, map[string]string{"tiktok.txt": "tiktok.com\n", "cache/.keep": ""})
	require.NoError(t, err)
	for _, w := range snap.Lint() {
		assert.NotContains(t, w.Msg, "holds no entry")
	}
}

// TestLintRepeatsAtLineOne: a list named twice in a policy written on the
// configuration's first line names that line as the first naming.
func TestLintRepeatsAtLineOne(t *testing.T) {
	snap, err := buildConfig(t, `policies: [{name: gov, clients: ["10.0.0.0/8"], block: [tiktok.txt, tiktok.txt]}]
upstreams: ["127.0.0.1:53"]
`, map[string]string{"tiktok.txt": "tiktok.com\n"})
	require.NoError(t, err)
	var found []string
	for _, w := range snap.Lint() {
		if strings.Contains(w.Msg, "twice") {
			found = append(found, w.String())
		}
	}
	require.Len(t, found, 1)
	assert.Regexp(t, `dnsfence\.yaml:1: policy "gov" names block list tiktok\.txt twice \(first at line 1\); keep one$`, found[0])
}

// TestLintSharedEntriesNameTheirLine: the line a shared entry is named at
// in the other list is that entry's own. It was Match's, which finds no
// entry for the name of an RPZ `*.` trigger (the trigger matches the
// names below it, not the name) nor for a response-IP trigger's prefix
// in text, and so named line 0 of the list: `x.example is also in
// a.rpz:0` of two zones' `*.x.example`, and `10.0.0.0/8 is both allowed
// and blocked (block.rpz:0)` of one prefix in an allow and a block zone.
func TestLintSharedEntriesNameTheirLine(t *testing.T) {
	const zone = "$ORIGIN rpz.example.\n; a comment line\n"
	for _, tc := range []struct {
		name, allow, block, block2 string
		want                       string
	}{
		{name: "a `*.` trigger in two block zones", allow: "ads.tiktok.com\n",
			block: zone + "*.x.example CNAME .\n", block2: zone + "other.example CNAME .\n*.x.example CNAME .\n",
			want: `b2.rpz:4: *.x.example is also in b.rpz:3`},
		{name: "a `*.` trigger in an allow and a block zone", allow: zone + "*.x.example CNAME rpz-passthru.\n",
			block: zone + "other.example CNAME .\n*.x.example CNAME .\n",
			want:  `a.rpz:3: *.x.example is both allowed and blocked (b.rpz:4) in policy "gov"; allow wins`},
		{name: "a prefix in two block zones", allow: "ads.tiktok.com\n",
			block: zone + "8.0.0.0.10.rpz-ip CNAME .\n", block2: zone + "other.example CNAME .\n8.0.0.0.10.rpz-ip CNAME .\n",
			want: `b2.rpz:4: 10.0.0.0/8 is also in b.rpz:3`},
		{name: "a prefix in an allow and a block zone", allow: zone + "8.0.0.0.10.rpz-ip CNAME rpz-passthru.\n",
			block: zone + "other.example CNAME .\n8.0.0.0.10.rpz-ip CNAME .\n",
			want:  `a.rpz:3: 10.0.0.0/8 is both allowed and blocked (b.rpz:4) in policy "gov"; allow wins`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"a.rpz": tc.allow, "b.rpz": tc.block, "tiktok.txt": "tiktok.com\n"}
			allow, block := "a.rpz", "[tiktok.txt, b.rpz]"
			if !strings.HasPrefix(tc.allow, "$") {
				files["a.txt"], allow = tc.allow, "a.txt"
				delete(files, "a.rpz")
			}
			if tc.block2 != "" {
				files["b2.rpz"], block = tc.block2, "[tiktok.txt, b.rpz, b2.rpz]"
			}
			snap, err := buildConfig(t, "upstreams: [\"127.0.0.1:53\"]\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    allow: ["+allow+"]\n    block: "+block+"\n", files)
			require.NoError(t, err)
			var got []string
			for _, w := range snap.Lint() {
				if strings.Contains(w.Msg, " is also in ") || strings.Contains(w.Msg, " is both allowed and blocked ") {
					got = append(got, strings.ReplaceAll(w.String(), filepath.Dir(snap.Config.File)+string(filepath.Separator), ""))
				}
			}
			assert.Equal(t, []string{tc.want}, got)
		})
	}
}
