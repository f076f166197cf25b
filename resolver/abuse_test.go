package resolver

import (
	"fmt"
	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestExplainNeedsAllowedClients: a source outside allowed_clients gets
// REFUSED for every query, the CHAOS explain query too, whatever
// explain_clients holds (the default, all of loopback, does): never a
// large TXT answer to an unallowed source.
func TestExplainNeedsAllowedClients(t *testing.T) {
	up := startUpstream(t, defaultAnswer)
	f := startFence(t, testConfig, testFiles, up.addr)
	q := new(dns.Msg)
	q.SetQuestion("www.tiktok.com.explain.dnsfence.", dns.TypeTXT)
	q.Question[0].Qclass = dns.ClassCHAOS
	q.SetEdns0(1232, false)
	wire, _ := q.Pack()
	r, err := exchange(f.addr, "127.0.0.20", "udp", q) // outside 127.0.0.0/28
	require.NoError(t, err)
	t.Logf("query %d octets, answer %d octets, rcode %s", len(wire), r.Len(), dns.RcodeToString[r.Rcode])
	assert.Equal(t, dns.RcodeRefused, r.Rcode, "unallowed source got an explanation: %v", r.Answer)
	assert.LessOrEqual(t, r.Len(), len(wire)+32, "answer to an unallowed source much larger than its query")
}

// TestUnallowedGetsOnlyRefused: an unallowed source gets REFUSED (or
// FORMERR/NOTIMP, or nothing) for other kinds of query, over UDP and TCP,
// and never an answer much larger than its query.
func TestUnallowedGetsOnlyRefused(t *testing.T) {
	up := startUpstream(t, defaultAnswer)
	f := startFence(t, testConfig, testFiles, up.addr)
	// warm the cache for an allowed client
	_, err := exchange(f.addr, "127.0.0.3", "udp", question("cached.example.", dns.TypeA, true))
	require.NoError(t, err)
	axfr := question("example.com.", dns.TypeAXFR, true)
	ecs := question("cached.example.", dns.TypeA, true)
	ecs.IsEdns0().Option = append(ecs.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.ParseIP("127.0.0.1").To4()})
	for _, name := range []string{"www.tiktok.com.", "cached.example."} {
		for _, m := range []*dns.Msg{question(name, dns.TypeA, true), question(name, dns.TypeANY, false), axfr, ecs} {
			wire, _ := m.Pack()
			r, err := exchange(f.addr, "127.0.0.20", "udp", m)
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeRefused, r.Rcode, "%s", m.Question[0].String())
			assert.Empty(t, r.Answer)
			t.Logf("%s: query %d answer %d %s", m.Question[0].String(), len(wire), r.Len(), dns.RcodeToString[r.Rcode])
		}
	}
	assert.Equal(t, 8.0, queriesCounted(t, f, ResultRefused, "udp"), "every refusal counted as refused")
	// TCP: the connection is closed at accept
	_, err = exchange(f.addr, "127.0.0.20", "tcp", question("cached.example.", dns.TypeA, false))
	assert.Error(t, err)
}

// TestIdenticalMissesBounded: a flood of identical cache
// misses against a slow upstream. Only the first takes an upstream slot;
// each other one waits on a goroutine of its own (wirequery.go ServeWire
// -> startWire returns false for a joiner -> udpServer.workers.run, which
// past udpWorkers starts an unbounded goroutine per job, udp.go run). So
// goroutines grow with the query rate times the upstream timeout,
// whatever limits.upstream_inflight says.
func TestIdenticalMissesBounded(t *testing.T) {
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nrate_limit: {rate: 0}\nlimits: {upstream_inflight: 4}", 1)
	cfg = strings.Replace(cfg, "upstream_timeout: 300ms", "upstream_timeout: 4s", 1)
	up, stop := silentUpstreamStop(t)
	f := startFence(t, cfg, testFiles, up)
	// Before the fence's shutdown, which would otherwise wait for the
	// upstream queries in flight to reach their 4 s timeout.
	t.Cleanup(stop)
	before := runtime.NumGoroutine()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer conn.Close()
	dst, _ := net.ResolveUDPAddr("udp", f.addr)
	const n = 3000
	start := time.Now()
	for i := 0; i < n && time.Since(start) < 2*time.Second; i++ {
		m := question("same.example.", dns.TypeA, false)
		m.Id = uint16(i)
		b, _ := m.Pack()
		_, _ = conn.WriteTo(b, dst)
		if i%200 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	grown := runtime.NumGoroutine() - before
	t.Logf("%d identical misses in %v: %d goroutines more", n, time.Since(start), grown)
	assert.Less(t, grown, 2048+100, "goroutines not bounded by upstream_inflight nor the worker pool")
}

// TestUniqueMissesPastTheLimitServfail: past upstream_inflight a unique miss
// gets SERVFAIL at once, and the operator is told: an "upstreams failed"
// warning naming the overload and no upstream (none was asked), one for
// the burst rather than one a query.
func TestUniqueMissesPastTheLimitServfail(t *testing.T) {
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nrate_limit: {rate: 0}\nlimits: {upstream_inflight: 4}", 1)
	cfg = strings.Replace(cfg, "upstream_timeout: 300ms", "upstream_timeout: 4s", 1)
	up, stop := silentUpstreamStop(t)
	core, logs := observer.New(zap.WarnLevel)
	f := startFenceLog(t, zap.New(core), cfg, testFiles, up)
	// Before the fence's shutdown, which would otherwise wait for the
	// upstream queries in flight to reach their 4 s timeout.
	t.Cleanup(stop)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer conn.Close()
	// Room for every answer before the first is read: at the default
	// 208 KiB the kernel kept 256 (each datagram costs ~830 octets of
	// buffer) and dropped the rest whenever the server answered them all
	// before this goroutine read (seen with GOMAXPROCS=1 under load).
	require.NoError(t, conn.SetReadBuffer(1<<20))
	dst, _ := net.ResolveUDPAddr("udp", f.addr)
	const n = 300
	for i := 0; i < n; i++ {
		m := question(fmt.Sprintf("u%d.example.", i), dns.TypeA, false)
		b, _ := m.Pack()
		_, _ = conn.WriteTo(b, dst)
	}
	var servfail atomic.Int32
	buf := make([]byte, 4096)
	for {
		// A second from the last answer: the SERVFAILs come at once, the
		// upstream (silent) never answers the four it holds.
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		k, _, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		var r dns.Msg
		if r.Unpack(buf[:k]) == nil && r.Rcode == dns.RcodeServerFailure {
			servfail.Add(1)
		}
	}
	assert.GreaterOrEqual(t, int(servfail.Load()), n-4-10)
	lines := logs.FilterMessage("upstreams failed").AllUntimed()
	// One a warnEvery (10 s); the burst takes about a second.
	require.NotEmpty(t, lines, "the overload never logged")
	assert.LessOrEqual(t, len(lines), 2, "a line a query")
	for _, l := range lines {
		c := l.ContextMap()
		assert.Equal(t, "too many upstream queries in flight", c["error"])
		assert.NotContains(t, c, logUpstream, "no upstream was asked")
	}
}

// TestRateLimitDropsUDPRefusesTCP: over the limit, UDP gets no
// answer and TCP REFUSED; rotating source ports does not help. Each is
// counted as what it got, and the client is named in one warning (at most
// one a minute); under log.queries: all the answers get audit lines and
// the drops none. A client in rate_limit.exempt is never limited.
func TestRateLimitDropsUDPRefusesTCP(t *testing.T) {
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\nrate_limit: {rate: 0.001, burst: 3, exempt: [127.0.0.3/32]}", 1)
	require.Contains(t, cfg, "log: {queries: all}")
	up := startUpstream(t, defaultAnswer)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), cfg, testFiles, up.addr)
	answered := func(from string) int {
		n := 0
		for i := 0; i < 10; i++ { // each exchange uses a new source port
			// 500 ms: an answer is a blocked name's, at once; a drop
			// costs the wait.
			c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}}
			if _, _, err := c.Exchange(question("www.tiktok.com.", dns.TypeA, false), f.addr); err == nil {
				n++
			}
		}
		return n
	}
	assert.Equal(t, 3, answered("127.0.0.1"))
	r, err := exchange(f.addr, "127.0.0.1", "tcp", question("www.tiktok.com.", dns.TypeA, false))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeRefused, r.Rcode)
	assert.Equal(t, 7.0, queriesCounted(t, f, ResultDropped, "udp"), "the UDP queries over the limit counted as dropped")
	assert.Equal(t, 1.0, queriesCounted(t, f, ResultRefused, "tcp"), "the TCP one counted as refused")
	var audited []any
	for _, l := range logs.FilterMessage("query").All() {
		if c := l.ContextMap(); c[logClient] == "127.0.0.1" {
			audited = append(audited, c[logResult])
		}
	}
	assert.Equal(t, []any{ResultBlocked, ResultBlocked, ResultBlocked, ResultRefused}, audited,
		"under log.queries: all the answers are logged, the UDP queries over the limit are not (README)")
	assert.Equal(t, 10, answered("127.0.0.3"), "exempt")
	warned := logs.FilterMessage("client over its rate limit").All()
	if assert.Len(t, warned, 1, "one warning for the eight queries over the limit") {
		assert.Equal(t, "127.0.0.1", warned[0].ContextMap()[logClient])
	}
	assert.Zero(t, logs.FilterMessage(unallowedOverLimit).Len(), "no source outside allowed_clients asked")
}

// unallowedOverLimit is the warning that sources outside allowed_clients
// are over the rate limit they share.
const unallowedOverLimit = "sources outside allowed_clients over the rate limit they share"

// TestUnallowedSourcesShareOneBucket: sources outside allowed_clients, as
// a flood of spoofed ones would be, share one bucket of the rate limit:
// none takes a bucket of its own (a flood of them would fill the limiter,
// and every allowed client new to it would then share the overflow bucket
// with the flood and be dropped), and the REFUSED answers they are sent
// in all are held to the one rate, whatever number of addresses they
// come from, so that dnsfence reflects no more towards forty spoofed
// victims than towards one. Allowed clients keep buckets of their own.
func TestUnallowedSourcesShareOneBucket(t *testing.T) {
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: none}\nrate_limit: {rate: 0.001, burst: 3, exempt: []}", 1)
	up := startUpstream(t, defaultAnswer)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceLog(t, zap.New(core), cfg, testFiles, up.addr)
	server, err := net.ResolveUDPAddr("udp", f.addr)
	require.NoError(t, err)
	wire, err := question("www.example.com.", dns.TypeA, true).Pack()
	require.NoError(t, err)
	const sources = 40
	conns := make([]*net.UDPConn, 0, sources)
	for i := range sources { // 127.0.0.20 to 127.0.0.59: outside 127.0.0.0/28
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(20+i))})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		_, err = c.WriteToUDP(wire, server)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	deadline := time.Now().Add(time.Second)
	refused := 0
	buf := make([]byte, 1500)
	for _, c := range conns {
		_ = c.SetReadDeadline(deadline)
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		var r dns.Msg
		require.NoError(t, r.Unpack(buf[:n]))
		assert.Equal(t, dns.RcodeRefused, r.Rcode)
		refused++
	}
	t.Logf("%d unallowed sources, %d REFUSED answers", sources, refused)
	assert.LessOrEqual(t, refused, 3, "REFUSED answers past the burst of one bucket")
	held := 0
	lim := f.handler.limiter.Load()
	for i := range lim.shards {
		s := &lim.shards[i]
		s.mu.Lock()
		held += len(s.buckets)
		s.mu.Unlock()
	}
	assert.Zero(t, held, "unallowed sources took buckets of the rate limit")
	answered := 0
	for range 3 {
		if r, err := exchange(f.addr, "127.0.0.1", "udp", question("www.example.com.", dns.TypeA, false)); err == nil && r.Rcode == dns.RcodeSuccess {
			answered++
		}
	}
	assert.Equal(t, 3, answered, "an allowed client's own burst")
	// One warning for the bucket they share (at most one a minute), none
	// naming a client of its own.
	assert.Eventually(t, func() bool { return logs.FilterMessage(unallowedOverLimit).Len() > 0 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, logs.FilterMessage(unallowedOverLimit).Len())
	assert.Zero(t, logs.FilterMessage("client over its rate limit").Len())
}

// TestRateLimitHoldsRejectedMessages: the FORMERR and NOTIMP the listener
// answers a message with before any query is parsed of it (no question,
// a body that does not parse, an opcode other than QUERY) take tokens of
// the client's rate limit like every other answer: past the burst they
// are dropped on UDP, the client's well-formed queries share the bucket,
// and over TCP such a message gets REFUSED. Sources outside
// allowed_clients share their one bucket for these too, so a flood of
// malformed datagrams from spoofed sources is not reflected one for one.
// Before, every one of them was answered.
func TestRateLimitHoldsRejectedMessages(t *testing.T) {
	const burst, sent = 3, 10
	cfg := strings.Replace(testConfig, "log: {queries: all}", fmt.Sprintf("log: {queries: none}\nrate_limit: {rate: 0.001, burst: %d, exempt: []}", burst), 1)
	up := startUpstream(t, defaultAnswer)
	f := startFence(t, cfg, testFiles, up.addr)
	server, err := net.ResolveUDPAddr("udp", f.addr)
	require.NoError(t, err)
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}
	noQuestion := pack(&dns.Msg{MsgHdr: dns.MsgHdr{Id: 7}})
	full := pack(question("example.org.", dns.TypeA, false))
	cutShort := full[:len(full)-3]
	update := question("example.org.", dns.TypeSOA, false)
	update.Opcode = dns.OpcodeUpdate
	notimp := pack(update)

	// answers sends each packet from a socket of its own on source, and
	// returns the answers that came, by RCODE; none comes within half a
	// second of the last.
	answers := func(t *testing.T, source net.IP, pkts ...[]byte) map[int]int {
		t.Helper()
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: source})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		for _, p := range pkts {
			_, err := c.WriteToUDP(p, server)
			require.NoError(t, err)
		}
		got := map[int]int{}
		buf := make([]byte, 1500)
		for {
			require.NoError(t, c.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
			n, err := c.Read(buf)
			if err != nil {
				return got
			}
			var r dns.Msg
			require.NoError(t, r.Unpack(buf[:n]))
			got[r.Rcode]++
		}
	}
	repeat := func(p []byte, n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = p
		}
		return out
	}

	for _, tc := range []struct {
		name   string
		client string // in allowed_clients, a bucket of its own
		pkt    []byte
		rcode  int
	}{
		{name: "no question: FORMERR", client: "127.0.0.8", pkt: noQuestion, rcode: dns.RcodeFormatError},
		{name: "body does not parse: FORMERR", client: "127.0.0.9", pkt: cutShort, rcode: dns.RcodeFormatError},
		{name: "opcode UPDATE: NOTIMP", client: "127.0.0.10", pkt: notimp, rcode: dns.RcodeNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := net.ParseIP(tc.client)
			assert.Equal(t, map[int]int{tc.rcode: burst}, answers(t, ip, repeat(tc.pkt, sent)...),
				"the burst is answered, the rest dropped")
			assert.Empty(t, answers(t, ip, full), "a well-formed query shares the bucket the rejects spent")

			c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}).Dial("tcp", f.addr)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			dc := &dns.Conn{Conn: c}
			_, err = dc.Write(tc.pkt)
			require.NoError(t, err)
			r, err := dc.ReadMsg()
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeRefused, r.Rcode, "over the limit on TCP: REFUSED")
		})
	}

	t.Run("spoofed sources outside allowed_clients", func(t *testing.T) {
		conns := make([]*net.UDPConn, 2*sent)
		for i := range conns { // 127.0.0.20 to 127.0.0.39
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(20+i))})
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			_, err = c.WriteToUDP(noQuestion, server)
			require.NoError(t, err)
			conns[i] = c
		}
		// Each socket is read on its own, all at once: a read whose
		// deadline has passed fails without looking for an answer.
		rcodes := make(chan int, len(conns))
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				buf := make([]byte, 1500)
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				var r dns.Msg
				if assert.NoError(t, r.Unpack(buf[:n])) {
					rcodes <- r.Rcode
				}
			})
		}
		wg.Wait()
		close(rcodes)
		got := map[int]int{}
		for rcode := range rcodes {
			got[rcode]++
		}
		assert.Equal(t, map[int]int{dns.RcodeFormatError: burst}, got, "one bucket for them all")
	})

	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	defer srv.Close()
	_, body := get(t, srv.URL+"/metrics")
	for _, want := range []string{
		fmt.Sprintf(`dnsfence_ratelimited_total{transport="udp"} %d`, 3*(sent-burst+1)+2*sent-burst),
		`dnsfence_ratelimited_total{transport="tcp"} 3`,
		fmt.Sprintf(`dnsfence_queries_total{result="formerr",transport="udp"} %d`, 3*burst),
		fmt.Sprintf(`dnsfence_queries_total{result="notimp",transport="udp"} %d`, burst),
		fmt.Sprintf(`dnsfence_queries_total{result="dropped",transport="udp"} %d`, 3*(sent-burst+1)+2*sent-burst),
		`dnsfence_queries_total{result="refused",transport="tcp"} 3`,
	} {
		assert.Contains(t, body, want+"\n")
	}
}
