package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServesOnWhenTheLogPipeBreaks: the log's reader going away (journald
// stopped, a `dnsfence | tee` whose tee ended, a log shipper's pipe)
// leaves dnsfence answering. A Go program dies of SIGPIPE at its first
// write to a broken standard output or error, whatever signal disposition
// it was started with (systemd's IgnoreSIGPIPE=yes included), and systemd
// counts that death a clean exit, so the shipped unit's Restart=on-failure
// did not start it again: the department's resolver was gone, with not a
// line said (prometheus/node_exporter#587, hashicorp/consul#1688). Both
// outputs are broken here, stdout (log.output) and stderr.
func TestServesOnWhenTheLogPipeBreaks(t *testing.T) {
	upstream, _ := testUpstream(t)
	addr := "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1"))
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["%s"]
upstreams: ["%s"]
http: ""
log: {queries: all, output: stdout}
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, addr, upstream),
		"lists/tiktok.txt": "tiktok.com\n",
	})
	cmd := exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml"))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})

	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"msg":"dnsfence started"`) {
				close(started)
				return
			}
		}
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("dnsfence exited before it started: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dnsfence did not start")
	}
	// The readers go away: every later log line meets a broken pipe.
	require.NoError(t, stdout.Close())
	require.NoError(t, stderr.Close())

	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	for i := range 5 {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("q%d.example.org.", i), dns.TypeA) // each logged: log.queries all
		r, _, err := c.Exchange(m, addr)
		require.NoError(t, err, "query %d after the log pipe broke", i)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		m.SetQuestion("www.tiktok.com.", dns.TypeA)
		r, _, err = c.Exchange(m, addr)
		require.NoError(t, err, "blocked query %d after the log pipe broke", i)
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
	}
	select {
	case err := <-done:
		t.Fatalf("dnsfence exited when its log pipe broke: %v", err)
	default:
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		assert.NoError(t, err, "SIGTERM exits 0")
	case <-time.After(15 * time.Second):
		t.Fatal("dnsfence did not stop on SIGTERM")
	}
}
