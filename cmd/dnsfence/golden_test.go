package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		wantCode int
	}{
		{name: "check-lints", config: "testdata/ops/lints.yaml", wantCode: 0},
		{name: "check-clean", config: "testdata/ops/clean.yaml", wantCode: 0},
		{name: "check-badlines", config: "testdata/ops/badlines.yaml", wantCode: 1},
		{name: "check-shipped", config: "../../configs/dnsfence.yaml", wantCode: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCmd("check", "-config", tc.config)
			assert.Equal(t, tc.wantCode, code, out)
			golden(t, tc.name+".txt", out)
		})
	}
}

func TestExplainGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "explain-blocked", args: []string{"10.1.2.3", "WWW.TikTok.com."}},
		{name: "explain-allowed", args: []string{"10.1.2.3", "x.ads.tiktok.com", "HTTPS"}},
		{name: "explain-exemption", args: []string{"10.20.30.4", "www.tiktok.com"}},
		{name: "explain-refused-action", args: []string{"10.50.1.1", "tiktok.com"}},
		{name: "explain-shadow", args: []string{"192.168.1.200", "tiktok.com"}},
		{name: "explain-no-match", args: []string{"10.1.2.3", "nottiktok.com"}},
		{name: "explain-no-policy", args: []string{"172.31.0.1", "tiktok.com"}},
		{name: "explain-not-allowed", args: []string{"203.0.113.9", "tiktok.com"}},
		{name: "explain-json", args: []string{"-json", "10.20.30.4", "www.tiktok.com", "AAAA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"explain", "-config", "testdata/ops/lints.yaml"}, tc.args...)
			code, out := runCmd(args...)
			assert.Equal(t, 0, code, out)
			golden(t, tc.name+".txt", out)
		})
	}
}

func TestExplainResolveGolden(t *testing.T) {
	up := chainUpstream(t, map[string][]string{
		"cloaked.example.": {"cloaked.example. 300 IN CNAME edge.example.net.", "edge.example.net. 300 IN CNAME p16.tiktok.com.", "p16.tiktok.com. 60 IN A 192.0.2.7"},
		"clean.example.":   {"clean.example. 300 IN CNAME cdn.example.net.", "cdn.example.net. 60 IN A 192.0.2.8"},
	})
	dir := writeFiles(t, map[string]string{
		"c.yaml": fmt.Sprintf(`upstreams: ["%s"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["block.txt"]
`, up),
		"block.txt": "tiktok.com\n",
	})
	for _, tc := range []struct{ name, client, qname string }{
		{"explain-resolve-cloaked", "10.1.1.1", "cloaked.example"},
		{"explain-resolve-clean", "10.1.1.1", "clean.example"},
		{"explain-resolve-no-policy", "192.168.0.1", "cloaked.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCmd("explain", "-config", filepath.Join(dir, "c.yaml"), "-resolve", tc.client, tc.qname)
			assert.Equal(t, 0, code, out)
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
	assert.Contains(t, out, "client: ")
	code, out = runCmd("explain", "-config", "testdata/ops/lints.yaml", "10.1.2.3", "tiktok.com", "BOGUS")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, `unknown query type "BOGUS"`)
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
