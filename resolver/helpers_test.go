package resolver

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// testUpstream is a test upstream resolver on loopback, UDP and TCP on one
// port.
type testUpstream struct {
	addr    string
	servers []*dns.Server
	// count is the queries received, both transports, a query sent again
	// over UDP (the same ID and question: dnsfence's resend of one its
	// upstream was slow to answer, resendPolicy) once: on a loaded
	// machine an answer can pass the 150 ms resend delay, and a test
	// counting what went upstream counts queries, not datagrams.
	count     atomic.Int64
	datagrams atomic.Int64 // queries received, resends too
	mu        sync.Mutex
	seen      []seenQuery
	sent      map[sentQuery]bool // what seen holds, as count tells them apart
	clients   int                // count less the root NS queries: distinct
	// answer builds the reply; the default answers A 192.0.2.1 for any name.
	answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg
}

type seenQuery struct {
	msg *dns.Msg
	tcp bool
}

// distinct counts the queries received for clients as count counts them
// (a query sent again over UDP once). The root NS query is not counted:
// dnsfence asks it on its own, at moments of its own (a probe; the health
// check a SERVFAIL has it make, on a goroutine of its own, checkHealth),
// as clientQueries leaves it out.
func (u *testUpstream) distinct() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.clients
}

// sentQuery is one query as testUpstream tells a resend from a new query:
// its ID, transport and question.
type sentQuery struct {
	id  uint16
	tcp bool
	q   dns.Question
}

func (u *testUpstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	u.datagrams.Add(1)
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	var q dns.Question
	if len(r.Question) > 0 {
		q = r.Question[0]
	}
	u.mu.Lock()
	u.seen = append(u.seen, seenQuery{msg: r.Copy(), tcp: tcp})
	if u.sent == nil {
		u.sent = map[sentQuery]bool{}
	}
	if s := (sentQuery{r.Id, tcp, q}); !u.sent[s] || tcp {
		// No query is sent again over TCP: one there is a new query,
		// whatever its ID.
		u.sent[s] = true
		u.count.Add(1)
		if q.Name != "." {
			u.clients++
		}
	}
	u.mu.Unlock()
	answer := u.answer
	if answer == nil {
		answer = defaultAnswer
	}
	if m := answer(w, r); m != nil {
		// Behave as a real server: compress, and fit UDP answers to the
		// size the query advertised. miekg/dns's Truncate measures by
		// dns.Msg.Len, which counts an escaped character-string up to
		// four times its octets: an answer that packs into the size is
		// sent whole.
		m.Compress = true
		if !tcp && !m.Truncated {
			size := dns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			if b, err := m.Pack(); err != nil || len(b) > size {
				m.Truncate(size)
			}
		}
		_ = w.WriteMsg(m)
	}
}

// queries returns what the upstream has received so far.
func (u *testUpstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

// startUpstream runs a test upstream on 127.0.0.1 until the test ends.
func startUpstream(t *testing.T, answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg) *testUpstream {
	t.Helper()
	return startUpstreamAt(t, "127.0.0.1", answer)
}

// startUpstreamAt is startUpstream on the loopback address ip, UDP and TCP
// on one free port.
func startUpstreamAt(t *testing.T, ip string, answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg) *testUpstream {
	t.Helper()
	u := &testUpstream{answer: answer}
	pc, ln, err := testnet.ListenBothOn(ip)
	require.NoError(t, err)
	u.addr = pc.LocalAddr().String()
	u.servers = []*dns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}}
	testnet.Serve(t, u.servers...)
	return u
}

// needLoopback skips the test where one of ips is not a loopback address
// it can listen on (127.0.0.0/8 is not all loopback on every system).
func needLoopback(t *testing.T, ips ...string) {
	t.Helper()
	for _, ip := range ips {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("%s is not a loopback address here: %v", ip, err)
		}
		ln.Close()
	}
}

// stop shuts the upstream down: it no longer answers.
func (u *testUpstream) stop() {
	for _, srv := range u.servers {
		_ = srv.Shutdown()
	}
}

// silentUpstream is a UDP and TCP address that accepts queries and never
// answers: a dead upstream that makes every try time out.
func silentUpstream(t *testing.T) string {
	t.Helper()
	addr, _ := silentUpstreamStop(t)
	return addr
}

// silentUpstreamStop is silentUpstream and a function that closes its
// sockets before the test ends (at its end at the latest): queries still
// waiting on it then fail at the port's ICMP unreachable, not at their
// timeout.
func silentUpstreamStop(t *testing.T) (string, func()) {
	t.Helper()
	pc, ln, err := testnet.ListenBoth()
	require.NoError(t, err)
	stop := sync.OnceFunc(func() { pc.Close(); ln.Close() })
	t.Cleanup(stop)
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return pc.LocalAddr().String(), stop
}

// closedPort is a loopback UDP/TCP port with nothing listening: queries to
// it fail at once with "connection refused". It is held until the test
// ends (testnet.RefusingAddr), so no other test process takes it.
func closedPort(t *testing.T) string { return testnet.RefusingAddr(t) }

// fence is a running dnsfence under test.
type fence struct {
	addr     string
	handler  *Handler
	server   *Server
	dir      string
	registry *prometheus.Registry
}

// startFence writes files into a temporary folder, writes text (with
// {{upstream}} replaced by the given upstream addresses) and serves it on a
// free loopback port until the test ends.
func startFence(t *testing.T, text string, files map[string]string, upstreams ...string) *fence {
	t.Helper()
	return startFenceLog(t, zaptest.NewLogger(t), text, files, upstreams...)
}

// writeConfig writes files and, as dnsfence.yaml beside them, text with
// {{upstreams}} replaced by the upstreams; it returns the configuration's
// path.
func writeConfig(t *testing.T, text string, files map[string]string, upstreams ...string) string {
	t.Helper()
	dir := testnet.WriteTree(t, files)
	quoted := make([]string, len(upstreams))
	for i, u := range upstreams {
		quoted[i] = `"` + u + `"`
	}
	text = strings.ReplaceAll(text, "{{upstreams}}", "["+strings.Join(quoted, ", ")+"]")
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// startFenceLog is startFence with a given logger.
func startFenceLog(t *testing.T, log *zap.Logger, text string, files map[string]string, upstreams ...string) *fence {
	t.Helper()
	return startFenceServing(t, log, text, files, nil, upstreams...)
}

// startFenceServing is startFenceLog with the listener serving wrap(h)
// rather than the handler h itself (wrap nil: h).
func startFenceServing(t *testing.T, log *zap.Logger, text string, files map[string]string, wrap func(*Handler) listen.Handler, upstreams ...string) *fence {
	t.Helper()
	f, warnings := launchFence(t, log, writeConfig(t, text, files, upstreams...), wrap)
	require.Empty(t, warnings)
	return f
}

// startFenceWarned is startFence for lists with bad lines: it returns
// what was reported of them, a line each (file:line: what), in order.
func startFenceWarned(t *testing.T, text string, files map[string]string, upstreams ...string) (*fence, []string) {
	t.Helper()
	f, warnings := launchFence(t, zaptest.NewLogger(t), writeConfig(t, text, files, upstreams...), nil)
	var lines []string
	for _, w := range warnings {
		for _, e := range leafErrors(w) {
			lines = append(lines, e.Error())
		}
	}
	return f, lines
}

// launchFence serves the configuration at path as startFenceServing does,
// returning the snapshot's warnings.
func launchFence(t *testing.T, log *zap.Logger, path string, wrap func(*Handler) listen.Handler) (*fence, []error) {
	t.Helper()
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	h := NewHandler(log, snap, m)
	var serve listen.Handler = h
	if wrap != nil {
		serve = wrap(h)
	}
	srv := newServer(log, h, serve)
	require.NoError(t, srv.Start([]string{"127.0.0.1:0"}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	return &fence{addr: srv.Addrs()[0], handler: h, server: srv, dir: filepath.Dir(path), registry: reg}, snap.Warnings
}

// ask sends m from the given loopback source address ("" for 127.0.0.1)
// over net ("udp" or "tcp") and returns the answer.
func ask(t *testing.T, server, from, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := exchange(server, from, network, m)
	require.NoError(t, err)
	return r
}

func exchange(server, from, network string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	if from != "" {
		ip := net.ParseIP(from)
		if network == "tcp" {
			c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		} else {
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: ip}}
		}
	}
	r, _, err := c.Exchange(m, server)
	return r, err
}

// queriesCounted is dnsfence_queries_total for result over transport: the
// queries f answered so, as its metrics and audit lines count them.
func queriesCounted(t *testing.T, f *fence, result, transport string) float64 {
	t.Helper()
	n, _ := metricValue(t, f.registry, "dnsfence_queries_total", "result", result, "transport", transport)
	return n
}

// ede returns the Extended DNS Error of m, if any.
func ede(m *dns.Msg) *dns.EDNS0_EDE {
	opt := m.IsEdns0()
	if opt == nil {
		return nil
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			return e
		}
	}
	return nil
}

func readFileOS(p string) ([]byte, error) { return os.ReadFile(p) }

func netipMustParse(s string) netip.Addr { return netip.MustParseAddr(s) }

// startHeldFence serves testConfig (plus extra config lines) against an
// upstream that holds every answer until release is closed, with an
// upstream timeout long enough to wait for it.
func startHeldFence(t *testing.T, extra string) (*fence, *testUpstream, chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		<-release
		return defaultAnswer(w, r)
	})
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 5s\n"+extra, 1)
	return startFence(t, cfg, testFiles, up.addr), up, release
}

// startSlowUpstream starts an upstream that holds its answers to names
// under "slow." until letGo is called (at the test's end at the latest),
// and answers the others at once.
func startSlowUpstream(t *testing.T) (up *testUpstream, letGo func()) {
	t.Helper()
	release := make(chan struct{})
	up = startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if strings.HasPrefix(r.Question[0].Name, "slow.") {
			<-release
		}
		return defaultAnswer(w, r)
	})
	var once sync.Once
	letGo = func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the upstream's shutdown
	return up, letGo
}

// testForwarder is a forwarder to upstreams with a per-try timeout; fastest
// tries the healthy upstreams by latency. Nothing is counted.
func testForwarder(upstreams []string, timeout time.Duration, fastest bool) *upstream.Forwarder {
	f, err := upstream.New(upstreams, upstream.Options{Timeout: timeout, Fastest: fastest})
	if err != nil {
		panic(err)
	}
	return f
}

// findECS returns the message's first EDNS Client Subnet option, if any.
func findECS(req *dns.Msg) *dns.EDNS0_SUBNET {
	e, _ := ecsOptions(req)
	return e
}

// leafErrors flattens errors joined with errors.Join.
func leafErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leafErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// The tests' queries and their upstreams' answers, shared with the other
// package's tests (testnet).
var (
	question      = testnet.Question
	mustRR        = testnet.MustRR
	defaultAnswer = testnet.DefaultAnswer
	rcodeAnswer   = testnet.RcodeAnswer
	bigAnswer     = testnet.BigAnswer
	liedAnswer    = testnet.LiedAnswer
	packed        = testnet.Packed
)

// mappedHintHTTPS is the record `name ttl IN HTTPS 1 . ipv6hint=::ffff:192.0.2.1`
// as RDATA octets: miekg/dns will not unpack it (an IPv4-mapped address
// where it reads an IPv6 one), and so it makes an answer dnsfence gives in
// wire form (README, Answer inspection).
func mappedHintHTTPS(name string, ttl uint32) *dns.RFC3597 {
	return &dns.RFC3597{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: ttl},
		Rdata: "000100" + "0006" + "0010" + "00000000000000000000ffffc0000201"}
}
