package main

import (
	"fmt"
	"net"
	"os"
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

// TestSystemdNotifiedOnceServing: run as a unit of Type=notify (systemd
// sets NOTIFY_SOCKET), dnsfence says READY=1 once every listener answers,
// and STOPPING=1 at SIGTERM. It said nothing, so the shipped unit was
// Type=simple and the units ordered after nss-lookup.target started while
// it still loaded its lists (TestSystemdUnitStartedOnceServing). Here the
// plain and the DNS over TLS listeners are on fixed ports, so that the
// test asks them the moment READY=1 arrives, with no log line to wait for.
func TestSystemdNotifiedOnceServing(t *testing.T) {
	upstream, _ := testUpstream(t)
	ca := newE2ECA(t, "dnsfence notify CA")
	dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n"})
	ca.issue(t, filepath.Join(dir, "certs"), "dnsfence", e2eServerName)
	plain := "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1"))
	dot := "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), fmt.Appendf(nil, `
listen: [%q]
upstreams: [%q]
http: ""
tls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}
listen_tls: [%q]
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, plain, upstream, dot), 0o644))

	sock := filepath.Join(t.TempDir(), "notify")
	notes, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer notes.Close()
	cmd := exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml"))
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	done := runProcess(t, cmd)
	next := func(want string) {
		t.Helper()
		require.NoError(t, notes.SetReadDeadline(time.Now().Add(30*time.Second)))
		buf := make([]byte, 4096)
		n, err := notes.Read(buf)
		require.NoError(t, err, "no %s from dnsfence; its output:\n%s", want, &out)
		assert.Equal(t, want, string(buf[:n]))
	}

	// Start's waits may outlast the unit's TimeoutStartSec: writer_wait
	// (30 s) + 10 s for remote lists + a minute.
	next("EXTEND_TIMEOUT_USEC=100000000")
	next("READY=1")
	blocked := new(dns.Msg)
	blocked.SetQuestion("www.tiktok.com.", dns.TypeA)
	for _, c := range []struct {
		net, addr string
		client    *dns.Client
	}{
		{"udp", plain, &dns.Client{Net: "udp", Timeout: 2 * time.Second}},
		{"tcp", plain, &dns.Client{Net: "tcp", Timeout: 2 * time.Second}},
		{"tls", dot, &dns.Client{Net: "tcp-tls", Timeout: 2 * time.Second, TLSConfig: ca.clientTLS("dot")}},
	} {
		r, _, err := c.client.Exchange(blocked, c.addr)
		if assert.NoError(t, err, "%s: asked the moment READY=1 came", c.net) {
			assert.Equal(t, dns.RcodeNameError, r.Rcode, c.net)
		}
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	next("STOPPING=1")
	select {
	case err := <-done:
		assert.NoError(t, err, "SIGTERM exits 0")
	case <-time.After(15 * time.Second):
		t.Fatal("dnsfence did not stop on SIGTERM")
	}
}

// TestSdNotify: the NOTIFY_SOCKET forms systemd sets, a socket file and an
// abstract socket ("@…"); none set sends nothing; anything else is an
// error, not a datagram sent somewhere else.
func TestSdNotify(t *testing.T) {
	file := filepath.Join(t.TempDir(), "notify")
	abstract := fmt.Sprintf("@dnsfence-notify-test-%d", os.Getpid())
	for _, path := range []string{file, abstract} {
		t.Run(path[:1], func(t *testing.T) {
			c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, sdNotify(path, "READY=1"))
			require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			require.NoError(t, err)
			assert.Equal(t, "READY=1", string(buf[:n]))
		})
	}
	assert.NoError(t, sdNotify("", "READY=1"), "not run by systemd")
	assert.ErrorContains(t, sdNotify("vsock:2:1234", "READY=1"), `NOTIFY_SOCKET "vsock:2:1234": not a socket path or an abstract socket name`)
	assert.Error(t, sdNotify(filepath.Join(t.TempDir(), "none"), "READY=1"), "no socket there")
}

// TestSystemdNotifyFailureServesOn: a NOTIFY_SOCKET nothing listens on is
// logged at warn with the state that was not sent, and dnsfence serves all
// the same (notifySystemd: not fatal; systemd says the start timed out).
// No test sent to a socket that fails: a failure said nowhere passed.
func TestSystemdNotifyFailureServesOn(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, _ := testUpstream(t)
	dir := govFiles(t, upstream, "")
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "none"))
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	m := p.waitLine(t, "telling systemd")
	assert.Equal(t, "warn", m["level"])
	assert.Equal(t, "READY=1", m["state"])
	assert.Contains(t, m["error"], "none")
	assert.Equal(t, "NXDOMAIN", p.status(t, "www.tiktok.com"))
	p.stop(t, syscall.SIGTERM)
}
