package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lameDuckFiles is govFiles with the metrics and health endpoint on a
// free loopback port, returned as httpAddr, and shutdown_delay set to
// delay.
func lameDuckFiles(t *testing.T, upstream, delay string) (dir, httpAddr string) {
	t.Helper()
	httpAddr = "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1"))
	dir = testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: "%s"
shutdown_delay: %s
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, upstream, httpAddr, delay),
		"lists/tiktok.txt": "tiktok.com\n",
	})
	return dir, httpAddr
}

// startNotifying runs the binary on config with NOTIFY_SOCKET set, as
// systemd runs a Type=notify unit; next reads its next notification,
// waiting 30 s at most. out holds its stdout and stderr.
func startNotifying(t *testing.T, config string) (cmd *exec.Cmd, done <-chan error, out *testnet.SyncBuffer, next func() string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	notes, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { notes.Close() })
	cmd = exec.Command(binary(t), "-config", config)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	out = new(testnet.SyncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	done = runProcess(t, cmd)
	next = func() string {
		t.Helper()
		require.NoError(t, notes.SetReadDeadline(time.Now().Add(30*time.Second)))
		buf := make([]byte, 4096)
		n, err := notes.Read(buf)
		require.NoError(t, err, "dnsfence's output:\n%s", out)
		return string(buf[:n])
	}
	return cmd, done, out, next
}

// getStatus is the status code and body of a GET of url.
func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// TestShutdownDelayAnswersWhileTakenOut: with shutdown_delay, a SIGTERM
// turns /readyz 503 at once and dnsfence goes on answering, on UDP and
// TCP, blocked and forwarded names alike, for the delay; then it stops
// taking queries and exits 0. A Kubernetes Service (the shipped
// Deployment) or a load balancer probing /readyz takes the instance out
// meanwhile: without it, the queries they still sent to a stopping
// instance got no answer, and their clients waited out a timeout (5 s
// for glibc) at every rollout, as CoreDNS's were before its health
// lameduck (coredns/deployment#199). A second SIGTERM ends the wait.
func TestShutdownDelayAnswersWhileTakenOut(t *testing.T) {
	upstream, _ := testUpstream(t)

	t.Run("answers for the delay", func(t *testing.T) {
		const delay = 2 * time.Second
		dir, httpAddr := lameDuckFiles(t, upstream, delay.String())
		p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
		require.Eventually(t, func() bool {
			code, _ := getStatus(t, "http://"+httpAddr+"/readyz")
			return code == http.StatusOK
		}, 10*time.Second, 20*time.Millisecond)

		signalled := time.Now()
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.waitLine(t, "answering for shutdown_delay with /readyz 503, so that load balancers take this instance out first; another SIGTERM or SIGINT stops at once")
		code, body := getStatus(t, "http://"+httpAddr+"/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, code, body)
		code, _ = getStatus(t, "http://"+httpAddr+"/healthz")
		assert.Equal(t, http.StatusOK, code, "liveness holds while it answers")

		for _, transport := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: transport, Timeout: time.Second}
			m := new(dns.Msg)
			m.SetQuestion("www.example.org.", dns.TypeA)
			r, _, err := c.Exchange(m, p.addr)
			if assert.NoError(t, err, "%s: a query after SIGTERM, within shutdown_delay, is answered", transport) {
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, transport)
				assert.Len(t, r.Answer, 1, transport)
			}
			m.SetQuestion("www.tiktok.com.", dns.TypeA)
			r, _, err = c.Exchange(m, p.addr) // from 127.0.0.1, in the government range
			if assert.NoError(t, err, transport) {
				assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s: still blocked", transport)
			}
		}
		assert.Less(t, time.Since(signalled), delay, "the asks above took the whole delay: nothing was checked within it")

		p.waitLine(t, "stopped taking queries; answering those in flight")
		assert.GreaterOrEqual(t, time.Since(signalled), delay, "stopped taking queries before shutdown_delay")
		p.exited(t, syscall.SIGTERM)
	})

	t.Run("systemd's stop timeout is extended over the delay", func(t *testing.T) {
		// Under the shipped unit (TimeoutStopSec=15s) a delay of 30 s and
		// the drain after it would be killed mid-way: dnsfence asks
		// systemd for the delay, the drain ((upstreams + 1) ×
		// upstream_timeout) and stopSlack, from the signal on.
		dir, _ := lameDuckFiles(t, upstream, "30s")
		cmd, done, out, next := startNotifying(t, filepath.Join(dir, "dnsfence.yaml"))
		for next() != "READY=1" {
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		assert.Equal(t, "STOPPING=1", next())
		want := 30*time.Second + 2*2*time.Second + stopSlack // one upstream, upstream_timeout 2 s
		assert.Equal(t, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", want.Microseconds()), next())
		stopsAtOnce(t, cmd, done, out, "in its shutdown_delay, at a second SIGTERM")
	})

	t.Run("systemd's stop timeout is extended over the drain without a delay", func(t *testing.T) {
		// No shutdown_delay, but one upstream with upstream_timeout 8s:
		// the drain, (1 + 1) × 8 s, outlasts the shipped unit's
		// TimeoutStopSec=15s by itself, and systemd killed dnsfence in the
		// middle of it, the queries in flight unanswered, the stop failed.
		dir := testnet.WriteTree(t, map[string]string{
			"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: 8s
http: ""
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, upstream),
			"lists/tiktok.txt": "tiktok.com\n",
		})
		cmd, done, out, next := startNotifying(t, filepath.Join(dir, "dnsfence.yaml"))
		for next() != "READY=1" {
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		assert.Equal(t, "STOPPING=1", next())
		want := 2*8*time.Second + stopSlack // one upstream, upstream_timeout 8 s, no delay
		assert.Equal(t, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", want.Microseconds()), next())
		select {
		case err := <-done:
			assert.NoError(t, err, "SIGTERM exits 0: %s", out)
		case <-time.After(30 * time.Second):
			t.Fatalf("dnsfence did not stop on SIGTERM: %s", out)
		}
	})

	t.Run("a second SIGTERM stops at once", func(t *testing.T) {
		dir, _ := lameDuckFiles(t, upstream, "1h")
		p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.waitLine(t, "answering for shutdown_delay with /readyz 503, so that load balancers take this instance out first; another SIGTERM or SIGINT stops at once")
		p.stop(t, syscall.SIGTERM)
		// And says so, with the signal that ended the wait.
		lines := drain(p.lines)
		i := slices.IndexFunc(lines, func(m map[string]any) bool { return m["msg"] == "stopping at once" })
		require.GreaterOrEqual(t, i, 0, `no "stopping at once" line: %v`, lines)
		assert.Equal(t, "terminated", lines[i]["signal"])
	})
}
