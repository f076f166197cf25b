package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCheckFetchReadsDiskCopy: `check -fetch` with a list's web server
// down and its disk copy in sources.cache_dir reports the disk copy, as
// serve starts from it (and explain reads it); with
// sources.servfail_until_ready the policy is ready. It said "no copy
// (neither the network nor a disk copy gave it)" and "not ready:
// SERVFAIL", though it never read the disk copy and serve answers from it.
func TestCheckFetchReadsDiskCopy(t *testing.T) {
	web := serveWebAt(t, "127.0.88.1", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "capcut.com\n")
	})
	list := web.URL + "/tiktok.txt"
	cfgPath := untilReadyConfig(t, fmt.Sprintf("block: [%q]", list), map[string]string{})

	// The disk copy, as serve keeps it: a source run until its first copy.
	cfg, err := loadConfig(cfgPath)
	require.NoError(t, err)
	src, err := source.NewURL(list, cfg.SourceOptions())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	src.Run(ctx, func(source.Content) error { cancel(); return nil })

	// The network answering: check -fetch reports what it fetched, and
	// explain decides with the list, saying nothing of a disk copy.
	code, out := runCmd("check", "-config", cfgPath, "-fetch")
	assert.Equal(t, 0, code, out)
	assert.Regexp(t, `source `+regexp.QuoteMeta(list)+`: fetched: 11 bytes, 1 entries, sha256 [0-9a-f]{16}\n`, out)
	assert.Contains(t, out, "0 warnings, 0 errors\n", out)
	code, out = runCmd("explain", "-config", cfgPath, "127.0.88.1", "capcut.com")
	assert.Equal(t, explainBlocked, code, out)
	assert.NotContains(t, out, "disk copy", out)
	web.Close()
	_, err = source.Cached(src)
	require.NoError(t, err, "the disk copy is kept")

	code, out = runCmd("check", "-config", cfgPath, "-fetch")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "block "+list+": remote list, 1 entries", out)
	assert.Contains(t, out, "source "+list+": the network failed (", out)
	assert.NotContains(t, out, "no copy", out)
	assert.NotContains(t, out, "not ready", out)
	// The network's failure is a warning (-fetch's help), which -strict
	// fails on.
	assert.Contains(t, out, "warning: remote list "+list+": ", out)
	assert.Contains(t, out, "1 warnings, 0 errors\n", out)
	// explain reads the disk copy, and says so.
	code, out = runCmd("explain", "-config", cfgPath, "127.0.88.1", "capcut.com")
	assert.Equal(t, explainBlocked, code, out)
	assert.Contains(t, out, "note: remote list "+list+": from its disk copy of ", out)
	// Without -fetch nothing is fetched.
	code, out = runCmd("check", "-config", cfgPath)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "block "+list+": remote list, not fetched (check -fetch fetches it once)\n", out)
	assert.NotContains(t, out, "source "+list, out)
}

// serveWebAt serves h over HTTP on a port of the loopback address ip, for
// a list at a URL; the caller closes it.
func serveWebAt(t *testing.T, ip string, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	require.NoError(t, err)
	web := httptest.NewUnstartedServer(h)
	web.Listener.Close()
	web.Listener = ln
	web.Start()
	return web
}
