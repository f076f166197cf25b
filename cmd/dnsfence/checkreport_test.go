package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckFetchReportsEachSource: `check -fetch` says of each remote list
// what it got: the ETag the web server gave a copy fetched, and "not
// fetched" with the cause for one neither the network nor a disk copy
// gave; a policy waiting for two such lists says they "have" a copy to
// wait for; and check prints upstream_ca, the file encrypted upstreams
// are verified against, as serve reads it.
func TestCheckFetchReportsEachSource(t *testing.T) {
	web := serveWebAt(t, "127.0.168.1", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		fmt.Fprint(w, "capcut.com\n")
	})
	defer web.Close()
	list := web.URL + "/bytedance.txt"
	closed, err := net.Listen("tcp", "127.0.168.2:0")
	require.NoError(t, err)
	down := "http://" + closed.Addr().String() // nothing answers once closed
	require.NoError(t, closed.Close())
	downA, downB := down+"/tiktok.txt", down+"/douyin.txt"
	ca := newE2ECA(t, "dnsfence check CA")
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.168.1:0"]
upstreams: ["tls://127.0.168.3:853#dns.test"]
upstream_ca: %q
http: ""
allowed_clients: ["127.0.168.0/24"]
policies:
  - name: government-devices
    clients: ["127.0.168.1/32"]
    block: [%q, %q, %q]
sources: {cache_dir: cache, servfail_until_ready: true}
`, ca.file, list, downA, downB)})
	cfg := filepath.Join(dir, "dnsfence.yaml")

	code, out := runCmd("check", "-config", cfg, "-fetch")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "\nupstream_ca "+ca.file+"\n", out)
	assert.Regexp(t, `\nsource `+regexp.QuoteMeta(list)+`: fetched: 11 bytes, 1 entries, sha256 [0-9a-f]{16}, ETag "v1"\n`, out)
	for _, l := range []string{downA, downB} {
		assert.Regexp(t, `\nsource `+regexp.QuoteMeta(l)+`: not fetched: .*connection refused.*\n`, out)
		assert.Contains(t, out, "  block "+l+": remote list, no copy (neither the network nor a disk copy gave it)\n", out)
	}
	assert.Contains(t, out, "until "+downA+", "+downB+" have a copy (sources.servfail_until_ready)\n", out)
}
