package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExplainIDNGolden: a name typed in Unicode is explained in the ASCII
// form DNS carries, converted as list entries are, so it meets an entry
// written either way.
func TestExplainIDNGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "explain-idn-unicode", args: []string{"10.1.2.3", "bücher.example"}},
		{name: "explain-idn-upper-subdomain", args: []string{"10.1.2.3", "www.BÜCHER.example.", "HTTPS"}},
		{name: "explain-idn-unicode-entry", args: []string{"10.1.2.3", "münchen.example"}},
		{name: "explain-idn-punycode-query", args: []string{"10.1.2.3", "xn--mnchen-3ya.example"}},
		{name: "explain-idn-json", args: []string{"-json", "10.1.2.3", "bücher.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"explain", "-config", "testdata/ops/idn.yaml"}, tc.args...)
			code, out := runCmd(args...)
			assert.Equal(t, explainBlocked, code, "every name here is on a list: %s", out)
			assert.NotContains(t, out, "on no list")
			golden(t, tc.name+".txt", out)
		})
	}
	t.Run("invalid name", func(t *testing.T) {
		// A label may not start with a combining mark (RFC 5891
		// §5.4); "bü cher.example", with its space, is said to be no
		// name for the space (TestExplainUsage).
		code, out := runCmd("explain", "-config", "testdata/ops/idn.yaml", "10.1.2.3", "\u0300b\u00fccher.example")
		assert.Equal(t, 2, code)
		assert.Contains(t, out, "name: invalid internationalised name")
		assert.Equal(t, 1, strings.Count(out, "dnsfence explain: "), "said once, the first check ending the command: %s", out)
	})
}

// TestExplainResolveAliasesGolden: explain -resolve inspects HTTPS and SVCB
// targets as the query path does, and leaves MX targets alone.
func TestExplainResolveAliasesGolden(t *testing.T) {
	up := chainUpstream(t, map[string][]string{
		"alias.example.":   {"alias.example. 300 IN HTTPS 0 www.tiktok.com."},
		"service.example.": {"service.example. 300 IN HTTPS 1 . alpn=h2", "service.example. 300 IN HTTPS 2 edge.tiktok.com. alpn=h2 ipv4hint=192.0.2.7"},
		"svcb.example.":    {`svcb.example. 300 IN SVCB 1 \001\001.tiktok.com. port=443`},
		"mail.example.":    {"mail.example. 300 IN MX 10 mx.tiktok.com."},
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
		name, qname, qtype string
		wantCode           int
	}{
		{"explain-resolve-https-alias", "alias.example", "HTTPS", explainBlocked},
		{"explain-resolve-https-service", "service.example", "HTTPS", explainBlocked},
		{"explain-resolve-svcb-escaped", "svcb.example", "SVCB", explainBlocked},
		{"explain-resolve-mx", "mail.example", "MX", explainForwarded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCmd("explain", "-config", filepath.Join(dir, "c.yaml"), "-resolve", "10.1.1.1", tc.qname, tc.qtype)
			assert.Equal(t, tc.wantCode, code, out)
			golden(t, tc.name+".txt", strings.ReplaceAll(out, dir, "$DIR"))
		})
	}
}

// TestEndToEndEscapedNamesWithDig: names whose presentation text is far
// longer than their wire form, asked with dig exactly as a person would
// (`dig "$(printf '\\001%.0s' $(seq 63)).tiktok.com"`), are blocked from
// the government range, audited and explained with the entry.
func TestEndToEndEscapedNamesWithDig(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, count := testUpstream(t)
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
explain_clients: ["127.0.0.1/32"]
policies:
  - name: gov
    clients: ["127.0.0.0/24"]
    block: ["lists/tiktok.txt"]
`, upstream),
		"lists/tiktok.txt": "tiktok.com\n",
	})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	label63 := strings.Repeat(`\001`, 63)
	for _, tc := range []struct {
		name    string
		qname   string
		blocked bool
	}{
		{name: "63 octets of 0x01", qname: label63 + ".tiktok.com", blocked: true},
		{name: "60 octets of 0x01", qname: strings.Repeat(`\001`, 60) + ".tiktok.com", blocked: true},
		{name: "255 octets", qname: label63 + "." + strings.Repeat(`\255`, 63) + "." + strings.Repeat(`\000`, 63) + "." + strings.Repeat("a", 50) + ".tiktok.com", blocked: true},
		{name: "escaped letters", qname: `www.\116\105\107\084\079\075.com`, blocked: true},
		{name: "one label holding a dot", qname: `tiktok\.com`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := count.Load()
			out := p.dig(t, tc.qname)
			if !tc.blocked {
				assert.Contains(t, out, "status: NOERROR")
				assert.Contains(t, out, "192.0.2.1")
				assert.Equal(t, before+1, count.Load())
				return
			}
			assert.Contains(t, out, "status: NXDOMAIN")
			assert.Regexp(t, `(?m)^tiktok\.com\.\s+60\s+IN\s+SOA\s`, out)
			assert.Contains(t, out, "EDE: 15 (Blocked)")
			assert.Equal(t, before, count.Load(), "never sent upstream")
			audit := p.waitLine(t, "query")
			assert.Equal(t, "blocked", audit["result"])
			assert.Equal(t, "tiktok.com", audit["entry"])
			assert.EqualValues(t, 1, audit["line"])
		})
	}
	out := p.dig(t, "CH", "TXT", label63+".tiktok.com.explain.dnsfence.")
	require.Contains(t, out, "status: NOERROR")
	assert.Contains(t, out, "verdict: blocked (NXDOMAIN)")
	assert.Contains(t, out, "tiktok.txt:1: tiktok.com")
}
