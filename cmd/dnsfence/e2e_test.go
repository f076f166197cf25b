package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The end-to-end tests build the real binary and drive it with dig, the way
// a user does.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// TestMain removes the binary the end-to-end tests built. The binary is
// built with -race, whose runtime sleeps atexit_sleep_ms (1 s by default)
// before a process that still has goroutines exits, so that they may run
// into a race first: the runs of it slept for half of this package's
// time (164 s in all, 82 s at 100 ms, 2 cores). They get 100 ms (GORACE,
// unless it sets atexit_sleep_ms): dnsfence waits for its servers and
// reloads before it returns from main (the SIGTERM tests hold it to
// that), so the goroutines left then are idle ones, and a race report
// still fails a run (its exit status, 66, and its stderr).
func TestMain(m *testing.M) {
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=100"))
	}
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// builtBinary, when set in the environment, is the path of a dnsfence
// binary already built: a test run again in a network namespace of its own
// (testnet.InNetns) takes its parent's rather than build one more.
const builtBinary = "DNSFENCE_TEST_BINARY"

// binary builds dnsfence once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(builtBinary); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dnsfence-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "dnsfence")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// testUpstream answers A 192.0.2.1 for every name, on UDP, and counts the
// queries it receives: a query dnsfence sent again (the same ID and
// question, its resend of one unanswered within 150 ms, which a loaded
// machine can cause) once.
func testUpstream(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	count := new(atomic.Int64)
	var mu sync.Mutex
	type sent struct {
		id uint16
		q  dns.Question
	}
	seen := map[sent]bool{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		mu.Lock()
		if s := (sent{r.Id, r.Question[0]}); !seen[s] {
			seen[s] = true
			count.Add(1)
		}
		mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	return serveUDP(t, h), count
}

// serveUDP runs h on a loopback UDP port until the test ends.
func serveUDP(t *testing.T, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: h})
	return pc.LocalAddr().String()
}

// process is a running dnsfence binary.
type process struct {
	cmd   *exec.Cmd
	addr  string // the UDP/TCP address it listens on
	lines chan map[string]any
	done  chan error
	// early are the log lines before the "listening" line.
	early []map[string]any
}

// startBinary runs the binary with args and waits until it listens.
func startBinary(t *testing.T, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	testnet.DieWithTest(cmd)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, lines: make(chan map[string]any, 1000), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	deadline := time.After(30 * time.Second)
	for p.addr == "" {
		select {
		case m := <-p.lines:
			if m["msg"] == "listening" {
				p.addr, _ = m["address"].(string)
			} else {
				p.early = append(p.early, m)
			}
		case err := <-p.done:
			for len(p.lines) > 0 {
				p.early = append(p.early, <-p.lines)
			}
			t.Fatalf("dnsfence exited before listening: %v; its log: %v", err, p.early)
		case <-deadline:
			t.Fatal("dnsfence did not start listening")
		}
	}
	if len(args) > 0 && !testnet.InsideNetns() {
		// Another test's dnsfence, or a CI run beside this one, may hold a
		// default address, a fixed port: that one's start then fails.
		for _, m := range p.early {
			if m["msg"] == "http endpoint listening" && m["address"] == config.DefaultHTTP {
				t.Errorf("dnsfence serves HTTP on the default %s, a fixed port: give the test's configuration http: \"127.0.0.1:0\"", config.DefaultHTTP)
			}
		}
		if p.addr == config.DefaultListen {
			t.Errorf("dnsfence serves DNS on the default %s, a fixed port: give the test's configuration listen: [\"127.0.0.1:0\"]", config.DefaultListen)
		}
	}
	return p
}

// waitLine waits for a log line with the given message, or with any of
// them when there are more.
func (p *process) waitLine(t *testing.T, msgs ...string) map[string]any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-p.lines:
			if msg, _ := m["msg"].(string); slices.Contains(msgs, msg) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q log line", msgs)
		}
	}
}

// stop sends sig and waits, at most 15 s, for an exit with status 0.
func (p *process) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
	p.exited(t, sig)
}

// exited waits, at most 15 s, for the exit with status 0 that sig, sent
// before, asks for.
func (p *process) exited(t *testing.T, sig syscall.Signal) {
	t.Helper()
	select {
	case err := <-p.done:
		assert.NoError(t, err, "%v exits 0", sig)
	case <-time.After(15 * time.Second):
		t.Fatalf("dnsfence did not stop on %v", sig)
	}
}

// status is the RCODE dig shows for name, as dig spells it (NOERROR,
// NXDOMAIN, …).
func (p *process) status(t *testing.T, name string) string {
	t.Helper()
	out := p.dig(t, name)
	i := strings.Index(out, "status: ")
	require.GreaterOrEqual(t, i, 0, out)
	return strings.TrimSuffix(strings.Fields(out[i+len("status: "):])[0], ",")
}

// dig runs dig against the process and returns its output.
func (p *process) dig(t *testing.T, args ...string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(p.addr)
	require.NoError(t, err)
	return runDig(t, append([]string{"@" + host, "-p", port, "+time=3", "+tries=1"}, args...)...)
}

// digReadItsQuery is what dig prints when the message it read has no QR
// bit: its own query, which dnsfence never sends.
const digReadItsQuery = ";; Warning: query response not set"

// runDig runs dig with args and returns its output, failing the test if
// dig fails. dig (BIND 9.18's) sets SO_REUSEPORT on its UDP socket and
// lets the kernel pick the port: Linux picks among the ephemeral ports
// without regard to a group of the same user holding one with
// SO_REUSEPORT, as dnsfence's UDP sockets do (3,000 picks beside 2,840
// such ports landed on 324 of them, a tenth, as the ports' share of the
// range's 28,232), so once in about 28,000 digs dig's port is the port of
// the dnsfence it asks, when a test listens on port 0. Its socket, connected
// to that port from that port, then reads its own query back: "status:
// NOERROR", no qr flag, rc 0. CI saw exactly that
// (TestEndToEndFailClosed, "NOERROR" for a blocked name). Such a run is
// dig's, not dnsfence's: dig is run again, three times at most, so that a
// dnsfence answering without QR still fails.
func runDig(t *testing.T, args ...string) string {
	t.Helper()
	var out []byte
	for range 3 {
		var err error
		out, err = exec.Command("dig", args...).CombinedOutput()
		require.NoError(t, err, "dig %v: %s", args, out)
		if !strings.Contains(string(out), digReadItsQuery) {
			return string(out)
		}
	}
	t.Fatalf("dig %v read a message without QR three times: %s", args, out)
	return ""
}

// govFiles writes the smallest blocking configuration, listening on a
// free port, forwarding to upstream, with extra lines before its policy
// (e.g. "upstream_timeout: 5s\n"), and lists/tiktok.txt blocking
// tiktok.com for 127.0.0.0/30; it returns the folder.
func govFiles(t *testing.T, upstream, extra string) string {
	t.Helper()
	return testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
%spolicies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, upstream, extra),
		"lists/tiktok.txt": "tiktok.com\n",
	})
}

func TestEndToEndWithDig(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, count := testUpstream(t)
	dir := govFiles(t, upstream, "")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))

	out := p.dig(t, "www.tiktok.com")
	assert.Contains(t, out, "status: NXDOMAIN")
	assert.Contains(t, out, "flags: qr rd ra;")
	assert.Regexp(t, `tiktok\.com\.\s+60\s+IN\s+SOA\s+blocked\.dnsfence\.invalid\. hostmaster\.dnsfence\.invalid\. \d+ 3600 600 86400 60`, out)
	assert.Contains(t, out, "EDE: 15 (Blocked)")
	assert.Contains(t, out, `government-devices`)
	assert.Zero(t, count.Load(), "blocked query never reaches the upstream")

	audit := p.waitLine(t, "query")
	assert.Equal(t, "blocked", audit["result"])
	assert.Equal(t, "127.0.0.1", audit["client"])
	assert.Equal(t, "www.tiktok.com.", audit["qname"])
	assert.Equal(t, "A", audit["qtype"])
	assert.Equal(t, "government-devices", audit["policy"])
	assert.Equal(t, "tiktok.com", audit["entry"])
	assert.EqualValues(t, 1, audit["line"])

	out = p.dig(t, "+tcp", "www.tiktok.com", "HTTPS")
	assert.Contains(t, out, "status: NXDOMAIN")

	// Explain from the affected machine.
	out = p.dig(t, "CH", "TXT", "www.tiktok.com.explain.dnsfence.")
	assert.Contains(t, out, "status: NOERROR")
	assert.Contains(t, out, "verdict: blocked (NXDOMAIN)")
	assert.Contains(t, out, "tiktok.txt:1: tiktok.com")

	// resolver.arpa (RFC 9462 DDR) is dnsfence's own empty zone, for every
	// client: no upstream designates its encrypted resolver to a device,
	// and without encrypted listeners dnsfence designates none either: a
	// NODATA cached 300 s, as long as a designation (TestDDREndToEnd has
	// one), where the zone's other names keep RFC 6303's 10800 s; onion
	// and localhost are answered here too.
	for _, from := range []string{"127.0.0.1", "127.0.1.1"} {
		out = p.dig(t, "-b", from, "_dns.resolver.arpa", "SVCB")
		assert.Contains(t, out, "status: NOERROR")
		assert.Contains(t, out, "ANSWER: 0, AUTHORITY: 1")
		assert.Regexp(t, `resolver\.arpa\.\s+300\s+IN\s+SOA\s+resolver\.arpa\. nobody\.invalid\. 1 3600 1200 604800 300`, out)
	}
	out = p.dig(t, "_dns.resolver.arpa", "TXT")
	assert.Regexp(t, `resolver\.arpa\.\s+10800\s+IN\s+SOA\s+resolver\.arpa\. nobody\.invalid\. 1 3600 1200 604800 10800`, out)
	out = p.dig(t, "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion")
	assert.Contains(t, out, "status: NXDOMAIN", "RFC 7686 §2")
	out = p.dig(t, "+tcp", "localhost", "AAAA")
	assert.Regexp(t, `localhost\.\s+10800\s+IN\s+AAAA\s+::1`, out)
	assert.Zero(t, count.Load(), "no local zone's name reaches the upstream")

	// A source outside the government range passes.
	out = p.dig(t, "-b", "127.0.1.1", "www.tiktok.com")
	assert.Contains(t, out, "status: NOERROR")
	assert.Regexp(t, `www\.tiktok\.com\.\s+300\s+IN\s+A\s+192\.0\.2\.1`, out)
	assert.EqualValues(t, 1, count.Load())

	p.stop(t, syscall.SIGTERM)
}

// TestEmbeddedDefault runs `dnsfence` with no flags, exactly as README's
// first command, and checks that dig shows a block at once, and README's
// dig session as dnsfence prints it. Only blocked
// names are asked: anything else would be forwarded to the machine's real
// resolvers, which tests never contact.
func TestEmbeddedDefault(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	if c, err := net.ListenPacket("udp", "127.0.0.1:5353"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("127.0.0.1:5353 is taken: %v", err)
		}
		t.Skipf("127.0.0.1:5353 is taken: %v", err)
	} else {
		c.Close()
	}
	httpFree := true
	if ln, err := net.Listen("tcp", "127.0.0.1:9153"); err != nil {
		httpFree = false // the default then warns and serves DNS without it
	} else {
		ln.Close()
	}
	p := startBinary(t)
	assert.Equal(t, "127.0.0.1:5353", p.addr)
	out := p.dig(t, "www.tiktok.com")
	assert.Contains(t, out, "status: NXDOMAIN")
	assert.Contains(t, out, "EDE: 15 (Blocked)")
	out = p.dig(t, "www.capcut.com")
	assert.Contains(t, out, "status: NXDOMAIN", "the ByteDance list is built in too")
	checkREADMEDigSession(t, p)
	// README: ::1 is in the government range and served; metrics answer on
	// 127.0.0.1:9153.
	if c, err := net.ListenPacket("udp", "[::1]:0"); err == nil {
		c.Close()
		out := runDig(t, "@::1", "-p", "5353", "+time=3", "+tries=1", "www.tiktok.com")
		assert.Contains(t, out, "status: NXDOMAIN")
	}
	if httpFree {
		resp, err := http.Get("http://127.0.0.1:9153/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Contains(t, string(body), "dnsfence_queries_total")
	}
	p.stop(t, syscall.SIGINT)
}

func TestCheckAndExplainCommands(t *testing.T) {
	bin := binary(t)
	dir := testnet.WriteTree(t, map[string]string{
		"good.yaml": `
upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["tiktok.txt"]
  - name: press
    clients: ["10.20.30.0/24"]
`,
		"tiktok.txt": "# tiktok\ntiktok.com\n",
		"bad.yaml": `
upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["bad.txt"]
`,
		"bad.txt": "ok.example\nbad..example\n",
	})
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := run("check", "-config", filepath.Join(dir, "good.yaml"))
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "tiktok.txt: 1 entries")
	assert.True(t, strings.HasSuffix(out, "ok\n"))

	// Serve skips the bad line and starts: check agrees, and -strict fails.
	out, code = run("check", "-config", filepath.Join(dir, "bad.yaml"))
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "bad.txt:2: empty label: \"bad..example\"")
	out, code = run("check", "-strict", "-config", filepath.Join(dir, "bad.yaml"))
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "bad.txt:2: empty label: \"bad..example\"")

	out, code = run("explain", "-config", filepath.Join(dir, "good.yaml"), "10.1.1.1", "WWW.TikTok.com")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "tiktok.txt:2: tiktok.com")
	assert.Contains(t, out, "verdict: blocked")

	out, code = run("explain", "-config", filepath.Join(dir, "good.yaml"), "10.20.30.4", "www.tiktok.com")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, `beats wider range 10.0.0.0/8 of policy "gov"`)
	assert.Contains(t, out, "verdict: forwarded")
}

// TestEndToEndReload edits the lists of a running binary the ways operators
// do and checks with dig that each change is served, that a collapse is held
// until SIGHUP, and that a broken config is held until fixed.
func TestEndToEndReload(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, _ := testUpstream(t)
	var big strings.Builder
	big.WriteString("tiktok.com\n")
	for i := 0; i < 99; i++ {
		fmt.Fprintf(&big, "h%d.example\n", i)
	}
	config := fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
reload: {debounce: 50ms}
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: ["lists/tiktok.txt"]
`, upstream)
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": config, "lists/tiktok.txt": big.String()})
	list := filepath.Join(dir, "lists", "tiktok.txt")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	status := func(name string) string { return p.status(t, name) }
	waitStatus := func(name, want string) {
		t.Helper()
		require.Eventually(t, func() bool { return status(name) == want }, 15*time.Second, 20*time.Millisecond,
			"%s never became %s", name, want)
	}
	assert.Equal(t, "NXDOMAIN", status("h5.example"))
	assert.Equal(t, "NOERROR", status("added.example"))

	// An editor's atomic save.
	tmp := list + ".swp"
	require.NoError(t, os.WriteFile(tmp, []byte(big.String()+"added.example\n"), 0o644))
	require.NoError(t, os.Rename(tmp, list))
	waitStatus("added.example", "NXDOMAIN")
	reloaded := p.waitLine(t, "list reloaded")
	assert.EqualValues(t, 1, reloaded["added"])

	// A collapse to two entries is held...
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nadded.example\n"), 0o644))
	held := p.waitLine(t, "reload held, keeping the last good state: SIGHUP applies it once the files are complete")
	assert.Equal(t, "warn", held["level"])
	assert.Contains(t, held["error"], "101 to 2 entries")
	assert.Equal(t, "NXDOMAIN", status("h5.example"))
	// ...until SIGHUP accepts it.
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	waitStatus("h5.example", "NOERROR")
	assert.Equal(t, "NXDOMAIN", status("added.example"))

	// A broken config is held; its fix is applied.
	cfgPath := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(config+"bogus: 1\n"), 0o644))
	failed := p.waitLine(t, "reload failed, keeping the last good state")
	assert.Equal(t, "error", failed["level"])
	assert.Contains(t, failed["error"], `unknown key "bogus"`)
	assert.Equal(t, "NXDOMAIN", status("added.example"))
	// A fix that also empties the policy's block lists switches the ban
	// off: held until SIGHUP, like a collapse.
	require.NoError(t, os.WriteFile(cfgPath, []byte(strings.Replace(config, `block: ["lists/tiktok.txt"]`, `block: []`, 1)), 0o644))
	held = p.waitLine(t, "reload held, keeping the last good state: SIGHUP applies it once the files are complete")
	assert.Contains(t, held["error"], `policy "government-devices" no longer blocks`)
	assert.Equal(t, "NXDOMAIN", status("added.example"))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	waitStatus("added.example", "NOERROR")

	p.stop(t, syscall.SIGTERM)
}

// chainUpstream answers from a table of names to records (UDP).
func chainUpstream(t *testing.T, answers map[string][]string) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		for _, s := range answers[strings.ToLower(r.Question[0].Name)] {
			rr, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	return serveUDP(t, h)
}

// serveOutcome runs the binary on config until it listens (true) or exits
// (false), and returns what it logged. A start refused must exit 1, which
// systemd's Restart=on-failure restarts and a shell's `&&` stops at, and a
// start stopped by SIGTERM 0: before, the code was not looked at, and a
// refusal that exited 0 (a clean stop to systemd) passed.
func serveOutcome(t *testing.T, config string) (bool, string) {
	t.Helper()
	cmd := exec.Command(binary(t), "-config", config)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var out strings.Builder
	listening := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), `"msg":"listening"`) {
				listening <- true
				sent = true
			}
		}
		if !sent {
			listening <- false
		}
	}()
	var started bool
	select {
	case started = <-listening:
	case <-time.After(30 * time.Second):
		t.Fatal("dnsfence neither listened nor exited")
	}
	if started {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	err = cmd.Wait()
	if started {
		assert.NoError(t, err, "SIGTERM exits 0")
	} else {
		// The reader is done: it said false once stderr ended.
		assert.Equal(t, 1, cmd.ProcessState.ExitCode(), "a start refused exits 1: %s", out.String())
	}
	return started, out.String()
}

// TestCheckAgreesWithServe runs check and serve on the same inputs, broken
// in every way the loaders know, and asserts they agree: check exits 0
// exactly when serve starts (the systemd unit runs check before every start
// and reload, so a disagreement fails a reload the running copy would have
// taken, or passes one it refuses).
func TestCheckAgreesWithServe(t *testing.T) {
	const base = `
listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:53"]
http: ""
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    client_files: ["ranges.txt"]
    block: ["block.txt"]
    allow: ["allow.txt"]
`
	good := map[string]string{
		"block.txt":  "tiktok.com\n",
		"allow.txt":  "ads.tiktok.com\n",
		"ranges.txt": "10.1.0.0/16\n",
	}
	for _, tc := range []struct {
		name    string
		config  string            // replaces base when set
		files   map[string]string // over good
		starts  bool
		mention string // what both must name
	}{
		{name: "clean", starts: true},
		{name: "junk line in a block list", files: map[string]string{"block.txt": "tiktok.com\nbad..example\n"}, starts: true, mention: "block.txt:2"},
		{name: "junk line in an allow list", files: map[string]string{"allow.txt": "ads.tiktok.com\n||x.example^$third-party\n"}, starts: true, mention: "allow.txt:2"},
		{name: "bad line in a range file beside a good one", files: map[string]string{"ranges.txt": "10.1.0.0/16\n10.1.2.3/8\n"}, starts: true, mention: "ranges.txt:2"},
		{name: "range in brackets in a range file", files: map[string]string{"ranges.txt": "10.1.0.0/16\n[2001:db8::]/32\n"}, starts: true, mention: "ranges.txt:2: a client range is written without brackets, did you mean 2001:db8::/32"},
		{name: "negated range in a range file", files: map[string]string{"ranges.txt": "10.1.0.0/16\n!10.2.0.0/16\n"}, starts: true, mention: "ranges.txt:2"},
		{name: "block list of only bad lines (a web page)", files: map[string]string{"block.txt": "<!DOCTYPE html>\n<html><body><pre>tiktok.com</pre></body></html>\n"},
			mention: "block.txt: not one entry could be read, only 2 bad lines, the first "},
		{name: "allow list of only bad lines", files: map[string]string{"allow.txt": "||x.example^$third-party\n"}, mention: "allow.txt: not one entry could be read, only 1 bad line"},
		{name: "block list of comments only", files: map[string]string{"block.txt": "# to be filled in\n"}, starts: true},
		{name: "empty allow list", files: map[string]string{"allow.txt": ""}, starts: true},
		{name: "missing block list", files: map[string]string{"block.txt": ""}, config: strings.Replace(base, "block.txt", "missing.txt", 1), mention: "missing.txt"},
		{name: "missing range file", config: strings.Replace(base, "ranges.txt", "missing-ranges.txt", 1), mention: "missing-ranges.txt"},
		{name: "unknown key", config: base + "bogus_key: 1\n", mention: "bogus_key"},
		{name: "yaml syntax", config: base + "cache: {size: [\n", mention: "dnsfence.yaml"},
		{name: "bad inline range", config: strings.Replace(base, `"10.0.0.0/8"`, `"10.0.0.0/33"`, 1), mention: "10.0.0.0/33"},
		{name: "same range in two policies", config: base + "  - name: other\n    clients: [\"10.0.0.0/8\"]\n", mention: "10.0.0.0/8"},
		{name: "policy range outside allowed_clients", config: strings.Replace(base, `"10.0.0.0/8"`, `"198.51.100.0/24"`, 1), mention: "198.51.100.0/24"},
		{name: "range file range outside allowed_clients", files: map[string]string{"ranges.txt": "2001:db8:10::/48\n"}, mention: "2001:db8:10::/48"},
		{name: "bad log level", config: base + "log: {level: loud}\n", mention: "log.level"},
		{name: "bad action", config: strings.Replace(base, `block: ["block.txt"]`, "block: [\"block.txt\"]\n    action: drop", 1), mention: "action"},
		{name: "no upstream", config: strings.Replace(base, `upstreams: ["127.0.0.1:53"]`, `upstreams: []`, 1), mention: "upstreams"},
		{name: "resolv.conf naming no nameserver", files: map[string]string{"resolv.conf": "search example.org\n"},
			config: strings.Replace(base, `upstreams: ["127.0.0.1:53"]`, `upstreams: ["./resolv.conf"]`, 1), mention: "./resolv.conf names no nameserver"},
		{name: "resolv.conf beside the configuration", files: map[string]string{"resolv.conf": "nameserver 127.0.0.1\n"},
			config: strings.Replace(base, `upstreams: ["127.0.0.1:53"]`, `upstreams: ["./resolv.conf"]`, 1), starts: true},
		{name: "resolv.conf saved as UTF-16", files: map[string]string{"resolv.conf": "\xFF\xFEn\x00s\x00\r\x00\n\x00"},
			config: strings.Replace(base, `upstreams: ["127.0.0.1:53"]`, `upstreams: ["./resolv.conf"]`, 1), mention: "resolv.conf:1: not UTF-8 text"},
		{name: "block list saved as UTF-16", files: map[string]string{"block.txt": "\xFF\xFEt\x00i\x00k\x00t\x00o\x00k\x00.\x00c\x00o\x00m\x00\r\x00\n\x00"}, mention: "block.txt:1: not UTF-8 text"},
		{name: "range file with a NUL octet", files: map[string]string{"ranges.txt": "10.1.0.0/16\n10.2\x00.0.0/16\n"}, mention: "ranges.txt:2: not UTF-8 text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{}
			for k, v := range good {
				files[k] = v
			}
			for k, v := range tc.files {
				files[k] = v
			}
			files["dnsfence.yaml"] = cmp.Or(tc.config, base)
			dir := testnet.WriteTree(t, files)
			config := filepath.Join(dir, "dnsfence.yaml")

			code, checkOut := runCmd("check", "-config", config)
			started, serveOut := serveOutcome(t, config)
			assert.Equal(t, tc.starts, started, "serve: %s", serveOut)
			assert.Equal(t, started, code == 0, "check exit %d while serve started=%v\ncheck: %s\nserve: %s", code, started, checkOut, serveOut)
			if tc.mention != "" {
				assert.Contains(t, checkOut, tc.mention)
				assert.Contains(t, serveOut, tc.mention)
			}
			if started && tc.mention != "" {
				code, out := runCmd("check", "-strict", "-config", config)
				assert.Equal(t, 1, code, "a skipped line fails check -strict: %s", out)
			}
		})
	}
}

// TestEndToEndProtocolWithDig replays issue 10's dig commands against the
// built binary: EDNS version 1 without negotiation is BADVERS (RFC 6891
// §6.1.3), and a cached answer never carries AD to a client that set
// neither AD nor DO, nor AA at all.
func TestEndToEndProtocolWithDig(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable, m.Authoritative, m.AuthenticatedData = true, true, true
		rr, _ := dns.NewRR(r.Question[0].Name + " 300 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(1232, opt.Do())
		}
		_ = w.WriteMsg(m)
	})
	upstream := serveUDPAndTCP(t, h)
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
policies:
  - name: gov
    clients: ["127.0.0.0/30"]
    block: ["tiktok.txt"]
`, upstream),
		"tiktok.txt": "tiktok.com\n",
	})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	out := p.dig(t, "+edns=1", "+noednsneg", "example.org")
	assert.Contains(t, out, "status: BADVERS")
	out = p.dig(t, "+adflag", "x.example")
	assert.Regexp(t, `flags: qr rd ra ad;`, out)
	out = p.dig(t, "+noadflag", "+noedns", "x.example")
	assert.Contains(t, out, "flags: qr rd ra;", "no AD (RFC 6840 §5.8) and no AA from the cache")
	// dig sets AD in its queries by default; with AD off, AD stays off.
	out = p.dig(t, "+cdflag", "+noadflag", "y.example")
	assert.Regexp(t, `flags: qr rd ra cd;`, out, "CD copied (RFC 4035 §3.2.2)")
	// ISC genreport's "opcode" test: NOTIMP, and no RA, which means
	// nothing but for QUERY (as BIND answers), nor AA or AD.
	out = p.dig(t, "+opcode=15", "+header-only", "+noedns", "+norec", "+noadflag")
	assert.Contains(t, out, "status: NOTIMP")
	assert.Regexp(t, `flags: qr;`, out, "no RA on an answer to another opcode than QUERY")
}

// TestLogOutputStdout: `log.output: stdout` (the container configuration's
// choice) writes the log to standard output and nothing to standard error.
func TestLogOutputStdout(t *testing.T) {
	upstream, _ := testUpstream(t)
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf("listen: [\"127.0.0.1:0\"]\nupstreams: [%q]\nhttp: \"\"\nlog: {output: stdout}\n", upstream),
	})
	cmd := exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	listening, drained := make(chan struct{}), make(chan struct{})
	noPolicies := false // read once listening is closed
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			noPolicies = noPolicies || strings.Contains(sc.Text(), `"level":"warn"`) && strings.Contains(sc.Text(), `"msg":"no policies: every query is forwarded"`)
			if strings.Contains(sc.Text(), `"msg":"listening"`) {
				close(listening)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case <-listening:
	case <-time.After(30 * time.Second):
		t.Fatal("no listening line on stdout")
	}
	// The configuration has no policies: said at start.
	assert.True(t, noPolicies, "no warning that every query is forwarded")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	<-drained // Wait closes the pipe: read it to the end first
	require.NoError(t, cmd.Wait())
	assert.Empty(t, stderr.String(), "nothing on stderr")
}

// TestLogFormatConsole: `log.format: console` (for people, the README
// says) writes zap's console lines, the level and the message as words
// and the fields after them, not the JSON every other test reads. No test
// asked for it: JSON written in its place passed.
func TestLogFormatConsole(t *testing.T) {
	upstream, _ := testUpstream(t)
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf("listen: [\"127.0.0.1:0\"]\nupstreams: [%q]\nhttp: \"\"\nlog: {format: console}\n", upstream),
	})
	cmd := exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml"))
	testnet.DieWithTest(cmd)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	started, drained := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "dnsfence started") {
				started <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case line := <-started:
		assert.False(t, json.Valid([]byte(line)), "a JSON line: %s", line)
		assert.Contains(t, line, "\tINFO\t")
		assert.Contains(t, line, `"version": "dnsfence `)
	case <-time.After(30 * time.Second):
		t.Fatal("no started line on stderr")
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	<-drained // Wait closes the pipe: read it to the end first
	require.NoError(t, cmd.Wait())
}

// TestServeLogsWhatItLoaded: serve logs at start what check prints: each
// list with its entries and sha256, each policy with its clients, and each
// skipped line of a list at warn, naming its file and line, for the audit
// trail. No test read those lines: a start that logged none passed.
func TestServeLogsWhatItLoaded(t *testing.T) {
	upstream, _ := testUpstream(t)
	dir := govFiles(t, upstream, "")
	list := filepath.Join(dir, "lists", "tiktok.txt")
	require.NoError(t, os.WriteFile(list, []byte("tiktok.com\nbad..example\n"), 0o644))
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	byMsg := map[string]map[string]any{}
	for _, m := range p.early {
		if msg, _ := m["msg"].(string); byMsg[msg] == nil {
			byMsg[msg] = m
		}
	}
	// Each line has its time under "time", ISO 8601 (the journal's and
	// a log shipper's), not zap's default "ts" in epoch seconds.
	if m := byMsg["list loaded"]; m != nil {
		assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d{4})$`, m["time"])
	}
	if m := byMsg["skipped bad lines"]; assert.NotNil(t, m, "%v", p.early) {
		assert.Equal(t, "warn", m["level"])
		assert.Contains(t, m["error"], list+`:2: empty label: "bad..example"`)
	}
	if m := byMsg["list loaded"]; assert.NotNil(t, m, "%v", p.early) {
		assert.Equal(t, list, m["list"])
		assert.Equal(t, 1.0, m["entries"])
		assert.Len(t, m["list_sha256"], 64)
	}
	if m := byMsg["policy"]; assert.NotNil(t, m, "%v", p.early) {
		assert.Equal(t, "government-devices", m["policy"])
		assert.Equal(t, []any{"127.0.0.0/30"}, m["clients"])
		assert.Equal(t, "nxdomain", m["action"])
	}
	assert.Nil(t, byMsg["no policies: every query is forwarded"])
	// The GC target set for the lists loaded (tuneGC, as after each
	// reload), but under a GOGC of the operator's.
	if os.Getenv("GOGC") == "" {
		if m := byMsg["memory"]; assert.NotNil(t, m, "%v", p.early) {
			assert.Positive(t, m["heap_live_bytes"])
			assert.Positive(t, m["gc_percent"])
		}
	}
	assert.Nil(t, byMsg["http endpoint listening"], `http: "" serves no endpoint`)
	p.stop(t, syscall.SIGTERM)

	// A clean stop says it began, with the signal, and that it ended, and
	// warns of nothing: no reload was under way, no query in flight.
	var msgs []string
	stopping := -1
	for _, m := range drain(p.lines) {
		msg, _ := m["msg"].(string)
		if strings.Contains(msg, "likely mistake") {
			continue // the start's lint runs beside serving: its lines may come late
		}
		if msg == "stopping" {
			stopping = len(msgs)
			assert.Equal(t, "terminated", m["signal"])
		}
		if stopping >= 0 {
			assert.Equal(t, "info", m["level"], "after SIGTERM: %v", m)
		}
		msgs = append(msgs, msg)
	}
	require.GreaterOrEqual(t, stopping, 0, "no stopping line: %q", msgs)
	assert.Equal(t, "stopped", msgs[len(msgs)-1], "the last line: %q", msgs)
	// No shutdown_delay: no wait answering with /readyz 503, nor a line
	// of one.
	assert.False(t, slices.ContainsFunc(msgs, func(msg string) bool { return strings.HasPrefix(msg, "answering for shutdown_delay") }),
		"without shutdown_delay: %q", msgs)
}

// TestServeLogsCheckWarnings: a block list emptied while dnsfence was
// stopped blocks nothing after a start, where a running dnsfence would
// have held it: serve has no state before it to hold the change against,
// and logged only "list loaded" with 0 entries at info. It now logs
// check's warnings at start, this one naming the file and line of the
// configuration that names the list.
func TestServeLogsCheckWarnings(t *testing.T) {
	up, _ := testUpstream(t)
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml":       blockingConfig(up, "lists/tiktok.txt", "lists/bytedance.txt"),
		"lists/tiktok.txt":    "tiktok.com\n",
		"lists/bytedance.txt": "# emptied by a sync\n",
	})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	// Logged once the listeners are open; every line of the run counted.
	const lint = "likely mistake in the configuration (check -strict fails on it)"
	first := p.waitLine(t, lint)
	p.stop(t, syscall.SIGTERM)
	assert.False(t, slices.ContainsFunc(p.early, func(m map[string]any) bool { return m["msg"] == lint }),
		"logged before the listeners opened: a million-entry list's lint took 0.37 s of its start")
	warned := []map[string]any{first}
	for _, m := range slices.Concat(p.early, drain(p.lines)) {
		if m["msg"] == lint {
			warned = append(warned, m)
		}
	}
	require.Len(t, warned, 1, "%v", warned)
	assert.Equal(t, "warn", warned[0]["level"])
	assert.Equal(t, filepath.Join(dir, "dnsfence.yaml"), warned[0]["file"])
	assert.EqualValues(t, 10, warned[0]["line"])
	assert.Equal(t, `block list lists/bytedance.txt of policy "government-devices" holds no entry: it blocks nothing`, warned[0]["warning"])
}

// drain returns the lines left on lines, without waiting.
func drain(lines <-chan map[string]any) []map[string]any {
	var out []map[string]any
	for {
		select {
		case m := <-lines:
			out = append(out, m)
		default:
			return out
		}
	}
}

// TestReadConfigCutByAnUnseenWriter: a configuration written in place
// by a writer /proc does not show (ProtectProc=invisible), caught cut
// mid-line, does not parse. serve reads a configuration as soon as no
// writer holds it (Start checks it again after the lists are read); one
// that does not parse is read again once its content is steady over the
// default debounce, and is an error only then.
func TestReadConfigCutByAnUnseenWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsfence.yaml")
	whole := `
listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:53"]
http: ""
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block: [tiktok.txt]
`
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "tiktok.txt"), []byte("tiktok.com\n"), 0o644))
	cut := len(whole) - len("ok.txt]\n")
	require.NoError(t, os.WriteFile(path, []byte(whole[:cut]), 0o644))
	go func() {
		// Within the default debounce of the first read.
		time.Sleep(config.DefaultDebounce / 4)
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err == nil {
			_, _ = f.WriteString(whole[cut:])
			_ = f.Close()
		}
	}()
	var stderr strings.Builder
	cfg, sig, err := readConfig(path, make(chan os.Signal), &stderr)
	require.NoError(t, err)
	require.Nil(t, sig)
	require.Len(t, cfg.Policies, 1)
	assert.Equal(t, []string{"tiktok.txt"}, cfg.Policies[0].Block)
	assert.Empty(t, stderr.String())

	// A configuration that stays broken is still an error, after the wait.
	require.NoError(t, os.WriteFile(path, []byte(whole[:cut]), 0o644))
	_, _, err = readConfig(path, make(chan os.Signal), &stderr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
}

// blockingConfig is a configuration that forwards to upstream and whose
// one policy blocks lists for 127.0.0.0/30, its block list written one
// item a line, last, so that a test may add to it.
func blockingConfig(upstream string, lists ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
policies:
  - name: government-devices
    clients: ["127.0.0.0/30"]
    block:
`, upstream)
	for _, l := range lists {
		fmt.Fprintf(&b, "      - %s\n", l)
	}
	return b.String()
}

// TestServeWaitsForAConfigBeingWritten starts the binary while its
// configuration is being written in place, cut after its first block
// list, the writer holding the file open. It was read as it was: the
// second list, past the cut, blocked nothing. serve now reads it once the
// writer is done, and both lists block.
func TestServeWaitsForAConfigBeingWritten(t *testing.T) {
	binary(t) // built before the writer's pause starts
	up, _ := testUpstream(t)
	dir := testnet.WriteTree(t, map[string]string{
		"lists/tiktok.txt":    "tiktok.com\n",
		"lists/bytedance.txt": "capcut.com\n",
	})
	conf := filepath.Join(dir, "dnsfence.yaml")
	text := blockingConfig(up, "lists/tiktok.txt")
	writer, err := os.OpenFile(conf, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { writer.Close() })
	_, err = writer.WriteString(text)
	require.NoError(t, err)
	go func() {
		time.Sleep(time.Second)
		_, _ = writer.WriteString("      - lists/bytedance.txt\n")
		_ = writer.Close()
	}()
	p := startBinary(t, "-config", conf)
	var policy map[string]any
	for _, m := range p.early {
		if m["msg"] == "policy" {
			policy = m
		}
	}
	require.NotNil(t, policy, "%v", p.early)
	assert.Equal(t, []any{"lists/tiktok.txt", "lists/bytedance.txt"}, policy["block"],
		"the configuration read at start, not a reload after it")
	assert.Equal(t, "NXDOMAIN", p.status(t, "tiktok.com"))
	assert.Equal(t, "NXDOMAIN", p.status(t, "capcut.com"), "the list past the cut")
	p.stop(t, syscall.SIGTERM)
}

// TestRunDigReadsAgainAfterItsOwnQuery: runDig knows this dig's output for
// its own query read back, and runs dig again. The server echoes the first
// query as it came, as the kernel gives dig its own datagram, and answers
// the second.
func TestRunDigReadsAgainAfterItsOwnQuery(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	var queries atomic.Int64
	addr := serveUDP(t, dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		if queries.Add(1) == 1 {
			_ = w.WriteMsg(q) // the query itself, QR clear
			return
		}
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		_ = w.WriteMsg(m)
	}))
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	out := runDig(t, "@"+host, "-p", port, "+time=3", "+tries=1", "www.tiktok.com")
	assert.Contains(t, out, "status: NXDOMAIN")
	assert.NotContains(t, out, digReadItsQuery)
	assert.EqualValues(t, 2, queries.Load())
}
