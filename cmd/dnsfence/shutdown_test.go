package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSIGTERMStopsTakingQueriesFirst (issue 17 item 4): after SIGTERM the
// binary answers no new query, answers the one in flight, and exits 0.
func TestSIGTERMStopsTakingQueriesFirst(t *testing.T) {
	upstream, count, releaseAll := heldUpstream(t)
	dir := govFiles(t, upstream, "upstream_timeout: 5s\n")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))

	// The query in flight comes over TCP: before the fix, the TCP listener
	// drained first while UDP went on answering.
	inflight := askInFlight(p)
	require.Eventually(t, func() bool { return count.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLine(t, "stopped taking queries; answering those in flight")

	// A blocked name needs no upstream: before the fix it was answered at
	// once while TCP drained.
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	m := new(dns.Msg)
	m.SetQuestion("www.tiktok.com.", dns.TypeA)
	_, _, err := c.Exchange(m, p.addr)
	require.Error(t, err, "no answer once SIGTERM has stopped the listeners")
	var ne net.Error
	assert.ErrorAs(t, err, &ne)
	_, err = net.DialTimeout("tcp", p.addr, time.Second)
	assert.Error(t, err, "the TCP listener is closed")

	releaseAll()
	got := <-inflight
	require.NoError(t, got.err, "the query in flight is answered")
	assert.Equal(t, dns.RcodeSuccess, got.r.Rcode)
	assert.Len(t, got.r.Answer, 1)
	p.exited(t, syscall.SIGTERM)
	assert.Equal(t, int64(1), count.Load(), "nothing new reached the upstream")
}

// heldUpstream is a loopback upstream, over UDP and TCP, that counts the
// queries it gets and answers each (an A record) only once release is
// called; release may be called more than once, and is at the end of the
// test, before the upstream's shutdown.
func heldUpstream(t *testing.T) (addr string, count *atomic.Int64, release func()) {
	t.Helper()
	held := make(chan struct{})
	var once sync.Once
	count = new(atomic.Int64)
	addr = serveUDPAndTCP(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		count.Add(1)
		<-held
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	}))
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release) // runs before serveUDPAndTCP's shutdown
	return addr, count, release
}

// serveUDPAndTCP runs h on one loopback port over UDP and TCP until the
// test ends.
func serveUDPAndTCP(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, ln, err := testnet.ListenBoth()
	require.NoError(t, err)
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h})
	return pc.LocalAddr().String()
}

// TestSIGTERMDuringSIGHUPReload: a SIGTERM that comes while a SIGHUP
// reload waits for a writer to finish a list (up to 5 s), with a second
// SIGHUP already queued, stops dnsfence at once. Before the fix the reload
// ran in the signal loop and the signal channel held one signal: the
// queued SIGHUP filled it, the SIGTERM was dropped, and dnsfence went on
// serving until it was killed (Kubernetes' grace period, systemd's
// TimeoutStopSec), with /readyz 200 and no draining.
func TestSIGTERMDuringSIGHUPReload(t *testing.T) {
	upstream, _ := testUpstream(t)
	dir := govFiles(t, upstream, "")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))

	// A writer holds the list open mid-write: SIGHUP waits for it.
	w, err := os.OpenFile(filepath.Join(dir, "lists", "tiktok.txt"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	_, err = w.WriteString("bytedance.com\n")
	require.NoError(t, err)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitLine(t, "SIGHUP: reloading everything")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP)) // systemctl reload, twice
	time.Sleep(200 * time.Millisecond)
	sent := time.Now()
	p.stop(t, syscall.SIGTERM)
	assert.Less(t, time.Since(sent), 4*time.Second, "SIGTERM waited for the SIGHUP reload")
}

// TestShutdownWaitsAsLongAsTheRunningConfigurationSays: the time SIGTERM
// gives the queries in flight (every upstream's timeout, and one more) is
// the configuration's serving then, not the one dnsfence started with.
// Before the fix a reload that raised upstream_timeout from 1 s to 6 s
// still cut a query in flight after 2 s.
func TestShutdownWaitsAsLongAsTheRunningConfigurationSays(t *testing.T) {
	upstream, count, releaseAll := heldUpstream(t)
	config := `
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: %s
http: ""
`
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(config, upstream, "1s")})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), []byte(fmt.Sprintf(config, upstream, "6s")), 0o644))
	p.waitLine(t, "reloaded")

	inflight := askInFlight(p)
	require.Eventually(t, func() bool { return count.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLine(t, "stopped taking queries; answering those in flight")
	time.Sleep(3 * time.Second) // past the 2 s the first configuration allowed, within the 12 s of the second
	releaseAll()
	assert.NoError(t, (<-inflight).answered(), "the query in flight is answered")
	p.exited(t, syscall.SIGTERM)
}

// Reload outcomes, as the reloader logs them.
const (
	lineReloaded   = "reloaded"
	lineNotApplied = "reload not applied: dnsfence is stopping"
	lineFailed     = "reload failed, keeping the last good state"
)

// TestSIGTERMDropsTheReloadUnderWay: a SIGHUP reload still reading a list
// (a named pipe whose writer has not written yet) when SIGTERM comes
// applies nothing once it has read it, even though the stop is still
// answering a query in flight. Before, it published its snapshot after
// the listeners had stopped: a state no query was answered with, built
// while dnsfence was going away.
func TestSIGTERMDropsTheReloadUnderWay(t *testing.T) {
	upstream, count, releaseAll := heldUpstream(t)
	config, list := pipedListConfig(t, upstream, "5s")
	p := startBinary(t, "-config", config)

	inflight := askInFlight(p)
	require.Eventually(t, func() bool { return count.Load() == 1 }, 10*time.Second, 5*time.Millisecond)

	w := startPipeWriter(t, list, "tiktok.com\nbytedance.com\n")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	w.waitOpened(t) // the reload reads the list
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.waitLine(t, "stopped taking queries; answering those in flight")
	w.write()
	outcome := p.waitLine(t, lineReloaded, lineNotApplied, lineFailed)
	assert.Equal(t, lineNotApplied, outcome["msg"], "the reload's outcome after SIGTERM: %v", outcome)
	assert.Equal(t, "sighup", outcome["trigger"])

	releaseAll()
	assert.NoError(t, (<-inflight).answered(), "the query in flight is answered")
	p.exited(t, syscall.SIGTERM)
}

// TestSIGTERMWaitsForTheReloadUnderWay: once the listeners have answered
// the queries in flight, the stop waits for a SIGHUP reload still reading
// a list, which then applies nothing; it waits no longer than the
// shutdown budget ((upstreams + 1) × upstream_timeout), though a named
// pipe may hold the reload for blocklist.PipeIdle (10 s). Before, the
// process exited under the reload.
func TestSIGTERMWaitsForTheReloadUnderWay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string // upstream_timeout: the budget is twice it
		written bool   // the list's writer writes once the listeners are done
		want    []string
	}{
		{"read within the budget", "5s", true, []string{lineNotApplied, "stopped"}},
		{"not read within the budget", "1s", false,
			[]string{"stopped with a reload still under way; it applies nothing", "stopped"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream, _ := testUpstream(t)
			config, list := pipedListConfig(t, upstream, tc.timeout)
			p := startBinary(t, "-config", config)
			w := startPipeWriter(t, list, "tiktok.com\nbytedance.com\n")
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
			w.waitOpened(t)
			sent := time.Now()
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			p.waitLine(t, "stopped taking queries; answering those in flight")
			if tc.written {
				w.write()
			}
			for _, msg := range tc.want {
				p.waitLine(t, msg)
			}
			p.exited(t, syscall.SIGTERM)
			assert.Less(t, time.Since(sent), 8*time.Second, "the stop waited past its budget")
		})
	}
}

// pipedListConfig writes a configuration forwarding to upstream with
// upstream_timeout timeout, whose blocking policy's list is a named pipe
// (the test skips where there are none), and starts the writer that
// gives dnsfence's start the list (tiktok.com). It returns the
// configuration's path and the list's.
func pipedListConfig(t *testing.T, upstream, timeout string) (config, list string) {
	t.Helper()
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: %s
http: ""
reload: {debounce: 50ms}
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, upstream, timeout)})
	list = filepath.Join(dir, "lists", "tiktok.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(list), 0o755))
	if err := syscall.Mkfifo(list, 0o644); err != nil {
		t.Skip("no named pipes here:", err)
	}
	startPipeWriter(t, list, "tiktok.com\n").write()
	return filepath.Join(dir, "dnsfence.yaml"), list
}

// pipeWriter writes a list into a named pipe once dnsfence opens it to
// read it, and once the test says so.
type pipeWriter struct {
	opened  chan struct{} // closed once a reader has opened the pipe
	release chan struct{} // closed by write
	once    sync.Once
}

// startPipeWriter starts a writer of content into the named pipe at path:
// it opens the pipe, which waits for a reader, and writes once write is
// called (at once if it was before). A writer still waiting when the test
// ends is let go.
func startPipeWriter(t *testing.T, path, content string) *pipeWriter {
	t.Helper()
	w := &pipeWriter{opened: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(path, os.O_WRONLY, 0) // waits for a reader
		if err != nil {
			return
		}
		defer f.Close()
		close(w.opened)
		select {
		case <-w.release:
			_, _ = f.WriteString(content)
		case <-t.Context().Done():
		}
	}()
	t.Cleanup(func() {
		select {
		case <-w.opened:
		default:
			// Still in open(2): a reader of our own lets it through.
			if r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
				defer r.Close()
			}
		}
		<-done
	})
	return w
}

// waitOpened waits, 10 s at most, until a reader has opened the pipe.
func (w *pipeWriter) waitOpened(t *testing.T) {
	t.Helper()
	select {
	case <-w.opened:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing opened the named pipe to read it")
	}
}

// write lets the writer write and close the pipe.
func (w *pipeWriter) write() { w.once.Do(func() { close(w.release) }) }

// TestDoneWithinPrefersDone: the stop's wait for the SIGHUP goroutine
// finds it done when it is, even after the shutdown budget ran out (the
// queries in flight took it all); it times out only when it is not done.
// Before, a select of the two chose at random, and the stop warned of a
// reload under way when none was.
func TestDoneWithinPrefersDone(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	assert.False(t, doneWithin(ended, done))
	close(done)
	for range 200 {
		assert.True(t, doneWithin(ended, done))
	}
}

// inFlightResult is what a query asked by askInFlight got.
type inFlightResult struct {
	r   *dns.Msg
	err error
}

// answered is the error of a query in flight that got no NOERROR answer.
func (res inFlightResult) answered() error {
	if res.err == nil && res.r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("answered %s", dns.RcodeToString[res.r.Rcode])
	}
	return res.err
}

// askInFlight asks p for slow.example.org over TCP, a query a held
// upstream (heldUpstream) keeps in flight, and delivers what it gets.
func askInFlight(p *process) <-chan inFlightResult {
	inflight := make(chan inFlightResult, 1)
	go func() {
		c := &dns.Client{Net: "tcp", Timeout: 20 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("slow.example.org.", dns.TypeA)
		r, _, err := c.Exchange(m, p.addr)
		inflight <- inFlightResult{r, err}
	}()
	return inflight
}

// TestSIGTERMWhileStartWaitsForAWriter: at start dnsfence waits, before
// it reads them, for the lists a writer holds open, for up to
// reload.writer_wait (30 s by default), and for the remote lists' first
// copies for up to 10 s more. A SIGTERM then (systemctl stop, a container
// stopped, a redeploy) went unheeded for the whole wait: dnsfence went on
// to open its listeners and only then stopped, past systemd's 15 s
// TimeoutStopSec and Docker's 10 s, which kill it. It now stops at once,
// with status 0, without serving.
func TestSIGTERMWhileStartWaitsForAWriter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.72.1:0")
	require.NoError(t, err)
	httpAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.72.1:0"]
upstreams: ["127.0.72.9:53"]
http: %q
reload: {writer_wait: 30s}
policies:
  - name: government-devices
    clients: ["127.0.72.0/30"]
    block: [lists/tiktok.txt]
`, httpAddr),
		"lists/tiktok.txt": "tiktok.com\n",
	})
	cmd, done, out, _ := startWhileListWritten(t, dir)
	// The metrics endpoint answers before the lists load: /readyz says
	// not ready while Start waits for the writer.
	client := &http.Client{Timeout: time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 20*time.Second, 20*time.Millisecond, "dnsfence waiting for the writer: %s", out)

	stopsAtOnce(t, cmd, done, out, "while it waited for a writer")
	assert.NotContains(t, out.String(), `"msg":"dnsfence started"`, "stopped without serving")
	assert.Contains(t, out.String(), `"msg":"stopping before serving","signal":"terminated"`, "the stop is said")
}

// startWhileListWritten runs the binary on dir/dnsfence.yaml while a
// writer holds dir/lists/tiktok.txt open, half written, until the test
// ends or it closes writer: its start waits for the writer
// (reload.writer_wait). out holds its stderr.
func startWhileListWritten(t *testing.T, dir string) (cmd *exec.Cmd, done <-chan error, out *testnet.SyncBuffer, writer *os.File) {
	t.Helper()
	writer, err := os.OpenFile(filepath.Join(dir, "lists/tiktok.txt"), os.O_WRONLY|os.O_TRUNC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { writer.Close() })
	_, err = writer.WriteString("tik")
	require.NoError(t, err)
	cmd = exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml"))
	out = new(testnet.SyncBuffer)
	cmd.Stderr = out
	return cmd, runProcess(t, cmd), out, writer
}

// TestSIGTERMWhileServeWaitsForTheConfig: serve waits for a configuration
// a writer holds open (up to 30 s) before it reads it; a SIGTERM
// meanwhile stops it at once, exit 0, without serving, within systemd's
// TimeoutStopSec.
func TestSIGTERMWhileServeWaitsForTheConfig(t *testing.T) {
	bin := binary(t)
	dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n"})
	conf := filepath.Join(dir, "dnsfence.yaml")
	writer, err := os.OpenFile(conf, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { writer.Close() })
	_, err = writer.WriteString("listen: [\"127.0.72.1:0\"]\nupstreams: [\"127.0.72.9:53\"]\n")
	require.NoError(t, err)

	cmd := exec.Command(bin, "-config", conf)
	var out testnet.SyncBuffer
	cmd.Stderr = &out
	done := runProcess(t, cmd)
	time.Sleep(2 * time.Second) // well into the wait: the writer holds the file for 30 s
	stopsAtOnce(t, cmd, done, &out, "while it waited for the configuration")
	assert.Contains(t, out.String(), "stopping before serving: terminated")
	assert.NotContains(t, out.String(), `"msg":"listening"`, "stopped without serving")
}

// runProcess starts cmd and returns where its Wait's result arrives; a
// process still running when the test ends is killed and waited for.
func runProcess(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		done <- err
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return done
}

// stopsAtOnce sends SIGTERM to cmd, which runProcess runs (done), and
// checks that it exits 0 within 5 s, well within systemd's
// TimeoutStopSec; out is its output, for the messages, and while says
// what it was doing.
func stopsAtOnce(t *testing.T, cmd *exec.Cmd, done <-chan error, out fmt.Stringer, while string) {
	t.Helper()
	sent := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		assert.NoError(t, err, "SIGTERM exits 0: %s", out)
		assert.Less(t, time.Since(sent), 5*time.Second)
	case <-time.After(10 * time.Second):
		t.Fatalf("dnsfence did not stop on SIGTERM %s: %s", while, out)
	}
}
