package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startNamed starts BIND's named as the primary of the RPZ zone rpz.test.
// for the end-to-end tests of remote lists: transfers signed with
// xfr-key. (hmac-sha256) only, IXFR from differences, NOTIFY to notifyPort
// of 127.0.0.1.
func startNamed(t *testing.T, notifyPort int, zoneText string) *testnet.BIND {
	key := testnet.NewBINDKey(t, "xfr-key.")
	return testnet.StartBIND(t, &testnet.BIND{Zone: "rpz.test.", NotifyPort: notifyPort, Key: &key, IXFR: true}, zoneText)
}

func rpzZone(serial uint32, records ...string) string {
	return fmt.Sprintf("$ORIGIN rpz.test.\n$TTL 60\n@ SOA localhost. admin.rpz.test. %d 3600 600 86400 60\n@ NS localhost.\n%s\n",
		serial, strings.Join(records, "\n"))
}

// httpStatus GETs url and returns the status and body.
func httpStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestRemoteListsEndToEnd runs the built binary as many secondaries of a
// BIND primary are run: `check -fetch` fetches each remote list once and
// reports it; dnsfence transfers the zone (TSIG) and fetches a URL and
// blocks by both; BIND's NOTIFY to dnsfence's own port makes a change
// served in under 2 s; `explain` names the zone, serial and owner;
// restarted with the primary and the web server down, dnsfence blocks at
// once from sources.cache_dir; the primary back with a new serial is
// picked up.
func TestRemoteListsEndToEnd(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, _ := testUpstream(t)
	port := testnet.FreePort(t, "127.0.0.1")
	n := startNamed(t, port, rpzZone(1, "tiktok.com CNAME .", "*.tiktok.com CNAME .", "douyin.com CNAME *."))
	const listBody = "# from the central team\ncapcut.com\n"
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, listBody)
	}))
	list := web.URL + "/bytedance.txt"
	httpPort := testnet.FreePort(t, "127.0.0.1")
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:%d"]
upstreams: ["%s"]
http: "127.0.0.1:%d"
allowed_clients: ["127.0.0.0/8"]
policies:
  - name: government-devices
    clients: ["127.0.0.1/32"]
    block: ["%s", "%s"]
sources:
  refresh: 1h
  cache_dir: cache
  tsig: {name: xfr-key., algorithm: hmac-sha256, secret: %q}
`, port, upstream, httpPort, n.Entry(), list, n.Key.Secret)})
	cfg := filepath.Join(dir, "dnsfence.yaml")

	code, out := runCmd("check", "-config", cfg, "-fetch")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "source "+n.Entry()+": fetched: zone rpz.test. serial 1, 5 records, 3 entries")
	assert.Contains(t, out, fmt.Sprintf("source %s: fetched: %d bytes, 1 entries, sha256 ", list, len(listBody)))
	assert.Contains(t, out, "0 warnings, 0 errors")
	code, out = runCmd("check", "-config", cfg)
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "block "+n.Entry()+": remote list, not fetched (check -fetch fetches it once)")
	_, err := os.Stat(filepath.Join(dir, "cache"))
	assert.ErrorIs(t, err, os.ErrNotExist, "check writes nothing")

	p := startBinary(t, "-config", cfg)
	assert.Equal(t, "NXDOMAIN", p.status(t, "www.tiktok.com"))
	assert.Equal(t, "NXDOMAIN", p.status(t, "capcut.com"))
	out = p.dig(t, "douyin.com", "AAAA")
	assert.Contains(t, out, "status: NOERROR")
	assert.Contains(t, out, "ANSWER: 0, AUTHORITY: 1")
	assert.Equal(t, "NOERROR", p.status(t, "www.example.org"))
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	status, body := httpStatus(t, ready)
	assert.Equal(t, http.StatusOK, status, body)

	start := time.Now()
	n.SetZone(rpzZone(2, "tiktok.com CNAME .", "*.tiktok.com CNAME .", "douyin.com CNAME *.", "lemon8.com CNAME ."), 2)
	require.Eventually(t, func() bool { return p.status(t, "lemon8.com") == "NXDOMAIN" }, 2*time.Second, 20*time.Millisecond,
		"the change within 2 s of the primary's NOTIFY")
	t.Logf("change served %v after the zone file was rewritten", time.Since(start))
	assert.True(t, n.Logged("transfer of 'rpz.test/IN': IXFR started"), "the second transfer is an IXFR; named's log:\n%s", n.Log())
	status, body = httpStatus(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, fmt.Sprintf(`dnsfence_source_serial{source=%q} 2`, n.Entry()))
	assert.Contains(t, body, fmt.Sprintf(`dnsfence_source_transfers_total{source=%q,type="IXFR"} 1`, n.Entry()))
	assert.Contains(t, body, fmt.Sprintf(`dnsfence_source_entries{source=%q} 1`, list))

	code, out = runCmd("explain", "-config", cfg, "127.0.0.1", "www.tiktok.com")
	assert.Equal(t, explainBlocked, code, out)
	assert.Contains(t, out, fmt.Sprintf("www.tiktok.com. blocked by %s serial 2, owner *.tiktok.com.rpz.test.: *.tiktok.com", n.Entry()))
	code, out = runCmd("explain", "-config", cfg, "127.0.0.1", "capcut.com")
	assert.Equal(t, explainBlocked, code, out)
	assert.Contains(t, out, "capcut.com. blocked by "+list+" line 2 (sha256 ")

	// Restart with the primary and the web server down.
	p.stop(t, syscall.SIGTERM)
	n.Stop()
	web.Close()
	p = startBinary(t, "-config", cfg)
	assert.Equal(t, "NXDOMAIN", p.status(t, "lemon8.com"), "at once, from the disk copy")
	assert.Equal(t, "NXDOMAIN", p.status(t, "capcut.com"))
	status, body = httpStatus(t, ready)
	assert.Equal(t, http.StatusOK, status, "every list has its disk copy: %s", body)
	assert.Contains(t, body, "serving the last good copy")

	// The primary returns with a new serial, and says so.
	n.Restart(rpzZone(3, "tiktok.com CNAME .", "*.tiktok.com CNAME .", "douyin.com CNAME *.", "hypic.com CNAME ."))
	require.Eventually(t, func() bool { return p.status(t, "hypic.com") == "NXDOMAIN" }, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, "NOERROR", p.status(t, "lemon8.com"), "serial 3 no longer lists it")
	p.stop(t, syscall.SIGTERM)
}

// TestCheckFetchBadLinesOnce: `check -fetch` reports a remote list's bad
// lines once, beside a list file's, and -strict fails on them.
func TestCheckFetchBadLinesOnce(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "capcut.com\nbad..remote\n")
	}))
	t.Cleanup(web.Close)
	list := web.URL + "/bytedance.txt"
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:53"]
allowed_clients: ["127.0.0.0/8"]
policies:
  - name: government-devices
    clients: ["127.0.0.1/32"]
    block: ["%s", "local.txt"]
sources: {cache_dir: cache}
`, list), "local.txt": "tiktok.com\nbad..local\n"})
	cfg := filepath.Join(dir, "dnsfence.yaml")
	code, out := runCmd("check", "-config", cfg, "-fetch", "-strict")
	assert.Equal(t, 1, code, out)
	assert.Equal(t, 1, strings.Count(out, "bad..remote"), out)
	assert.Equal(t, 1, strings.Count(out, "bad..local"), out)
	assert.Contains(t, out, "2 warnings, 0 errors")
}

// TestServfailUntilReadyEndToEnd: the built binary with
// sources.servfail_until_ready and a list whose web server is down at a
// first start (no disk copy) answers the policy's clients SERVFAIL with
// EDE 14 naming the list, as dig shows it, where it would forward them
// without the setting; `check -fetch` says the list has no copy and the
// policy is not ready, and `explain` says SERVFAIL (exit code 4) where,
// without the setting, it fails for want of the list.
func TestServfailUntilReadyEndToEnd(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, asked := testUpstream(t)
	port := testnet.FreePort(t, "127.0.0.1")
	list := "http://" + testnet.RefusingAddr(t) + "/tiktok.txt" // nothing listens, held: no other process takes it
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:%d"]
upstreams: ["%s"]
http: ""
allowed_clients: ["127.0.0.0/8"]
policies:
  - name: government-devices
    clients: ["127.0.0.1/32"]
    block: ["%s"]
sources: {cache_dir: cache, servfail_until_ready: true}
`, port, upstream, list)})
	cfg := filepath.Join(dir, "dnsfence.yaml")

	code, out := runCmd("check", "-config", cfg, "-fetch")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "block "+list+": remote list, no copy (neither the network nor a disk copy gave it)")
	assert.Contains(t, out, "  not ready: SERVFAIL (EDE 14) to its clients for every name its other lists neither block nor allow until "+list+" has a copy (sources.servfail_until_ready)")

	code, out = runCmd("explain", "-config", cfg, "127.0.0.1", "www.example.org")
	assert.Equal(t, explainNotReady, code, out)
	assert.Contains(t, out, "sources.servfail_until_ready answers SERVFAIL for it")
	assert.Contains(t, out, "verdict: servfail (SERVFAIL, Extended DNS Error 14 (Not Ready))")
	code, out = runCmd("explain", "-config", cfg, "127.0.0.2", "www.example.org")
	assert.Equal(t, explainForwarded, code, "a client of no policy: %s", out)

	p := startBinary(t, "-config", cfg)
	out = p.dig(t, "www.example.org")
	assert.Contains(t, out, "status: SERVFAIL")
	assert.Contains(t, out, `EDE: 14 (Not Ready): (policy "government-devices" not ready: list `+list+" has no copy yet)")
	assert.Zero(t, asked.Load(), "no upstream asked")
}
