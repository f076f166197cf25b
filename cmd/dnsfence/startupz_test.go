package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStartupzOnceListenersAnswer: /startupz is 503 while dnsfence loads
// its lists (here waiting for a writer to finish one), as /healthz is 200
// (liveness must not restart a slow start), and 200 once every listener
// answers: the probe a native sidecar's startupProbe needs, since its
// app starts the moment the probe passes and asks its first names at
// once. On /healthz, the shipped sidecar's probe, the app started while
// dnsfence still loaded its lists, and its first queries met a closed
// port (refused at once: no name resolved).
func TestStartupzOnceListenersAnswer(t *testing.T) {
	upstream, _ := testUpstream(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1"))
	dnsAddr := "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1"))
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: [%q]
upstreams: [%q]
http: %q
reload: {writer_wait: 30s}
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: [lists/tiktok.txt]
`, dnsAddr, upstream, httpAddr),
		"lists/tiktok.txt": "tiktok.com\n",
	})
	cmd, done, out, writer := startWhileListWritten(t, dir)

	client := &http.Client{Timeout: time.Second}
	get := func(path string) (int, string) {
		resp, err := client.Get("http://" + httpAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	require.Eventually(t, func() bool { code, _ := get("/healthz"); return code == http.StatusOK },
		20*time.Second, 20*time.Millisecond, "the endpoint answers while the start waits: %s", out)
	code, body := get("/startupz")
	assert.Equal(t, http.StatusServiceUnavailable, code, "not started while the lists load: %s", body)
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	_, _, err := c.Exchange(m, dnsAddr)
	require.Error(t, err, "no DNS yet: what the probe must say")

	_, err = writer.WriteString("tok.com\n")
	require.NoError(t, err)
	require.NoError(t, writer.Close())
	require.Eventually(t, func() bool { code, _ := get("/startupz"); return code == http.StatusOK },
		20*time.Second, 20*time.Millisecond, "started once the list is whole: %s", out)
	// Once it says started, every listener answers.
	r, _, err := c.Exchange(m, dnsAddr)
	require.NoError(t, err, "DNS answers once /startupz is 200")
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	m.SetQuestion("www.tiktok.com.", dns.TypeA)
	r, _, err = c.Exchange(m, dnsAddr)
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "blocked with the whole list")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		assert.NoError(t, err, "SIGTERM exits 0: %s", out)
	case <-time.After(15 * time.Second):
		t.Fatalf("dnsfence did not stop: %s", out)
	}
}
