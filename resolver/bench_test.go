package resolver

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// benchSnapshot builds a snapshot with a 100,000-entry list, n policy
// prefixes, and a loopback upstream that is never reached by the blocked
// and cache-hit benchmarks.
func benchSnapshot(b testing.TB, prefixes int, upstream string) *Snapshot {
	b.Helper()
	dir := b.TempDir()
	var list strings.Builder
	list.WriteString("tiktok.com\n")
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&list, "host-%d.tracker%d.example.com\n", i, i%1000)
	}
	var ranges strings.Builder
	for i := 0; i < prefixes; i++ {
		fmt.Fprintf(&ranges, "10.%d.%d.0/24\n", i/256%256, i%256)
		if i >= 65536 {
			fmt.Fprintf(&ranges, "2001:db8:%x::/48\n", i)
		}
	}
	files := map[string]string{"big.txt": list.String(), "ranges.txt": ranges.String(), "allow.txt": "ads.tiktok.com\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`upstreams: ["%s"]
log: {queries: none}
rate_limit: {rate: 0}
policies:
  - name: gov
    clients: ["127.0.0.0/8"]
    client_files: ["ranges.txt"]
    block: ["big.txt"]
    allow: ["allow.txt"]
`, upstream)
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	snap, err := BuildSnapshot(c, nil)
	if err != nil {
		b.Fatal(err)
	}
	return snap
}

func BenchmarkPolicyLookup(b *testing.B) {
	for _, n := range []int{100, 100000} {
		snap := benchSnapshot(b, n, "127.0.0.1:9")
		client := netip.MustParseAddr("10.0.2.3")
		b.Run(fmt.Sprintf("prefixes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := snap.PolicyFor(client); !ok {
					b.Fatal("no policy")
				}
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	snap := benchSnapshot(b, 100, "127.0.0.1:9")
	pol, _ := snap.PolicyFor(netip.MustParseAddr("127.0.0.1"))
	for _, name := range []string{"www.tiktok.com.", "a.b.c.example.org."} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pol.Policy.Decide(name)
			}
		})
	}
}

func BenchmarkBlockedReply(b *testing.B) {
	snap := benchSnapshot(b, 100, "127.0.0.1:9")
	pol, _ := snap.PolicyFor(netip.MustParseAddr("127.0.0.1"))
	req := question("www.tiktok.com.", dns.TypeA, true)
	d := pol.Policy.Decide("www.tiktok.com.")
	buf := make([]byte, 0, 512)
	b.Run("message", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := blockedReply(req, pol.Policy, d, 60, 1, false)
			if _, err := m.PackBuffer(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("packed", func(b *testing.B) {
		b.ReportAllocs()
		text := pol.Policy.BlockedText(d.Entry.List.File())
		for b.Loop() {
			if _, ok := appendBlocked(buf[:0], req, dns.RcodeNameError, soaOwner(req.Question[0].Name, d, false), 60, 1, text, 512); !ok {
				b.Fatal("does not fit")
			}
		}
	})
}

// BenchmarkHandler runs the whole pipeline (identity, rate limit, policy,
// list match, cache, answer, pack) without sockets, as ServeDNS.
func BenchmarkHandler(b *testing.B) {
	u := &testUpstream{}
	pc, ln, err := testnet.ListenBoth()
	if err != nil {
		b.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	srv := &dns.Server{PacketConn: pc, Handler: u}
	go func() { _ = srv.ActivateAndServe() }()
	b.Cleanup(func() { _ = srv.Shutdown(); ln.Close() })

	snap := benchSnapshot(b, 100, u.addr)
	if err := ConnectUpstreams(nil, snap, nil, nil); err != nil {
		b.Fatal(err)
	}
	h := NewHandler(zap.NewNop(), snap, nil)
	w := &discardWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
	for _, bc := range inlinePaths() {
		h.ServeDNS(w, bc.req) // warm the cache
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.ServeDNS(w, bc.req)
			}
		})
	}
	// Every name new: one upstream exchange over the loopback socket each.
	// The figures include the in-process test upstream's own work.
	b.Run("cache-miss", func(b *testing.B) { serveMisses(b, h, w) })
}

// serveMisses asks h a new name at each iteration (500,000 names), over
// the message path.
func serveMisses(b *testing.B, h *Handler, w dns.ResponseWriter) {
	names := make([]string, 500_000)
	for i := range names {
		names[i] = "m" + strconv.Itoa(i) + ".example.net."
	}
	req := question(names[0], dns.TypeA, true)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		req.Question[0].Name = names[i%len(names)]
		i++
		h.ServeDNS(w, req)
	}
}

// discardWriter packs answers, as a socket would, and drops them.
type discardWriter struct {
	recorder
	remote net.Addr
	buf    []byte
}

func (d *discardWriter) RemoteAddr() net.Addr { return d.remote }
func (d *discardWriter) Write(b []byte) (int, error) {
	d.buf = append(d.buf[:0], b...)
	return len(b), nil
}
func (d *discardWriter) WriteMsg(m *dns.Msg) error {
	var err error
	d.buf, err = m.PackBuffer(d.buf[:0])
	return err
}

// memoWriter is discardWriter with a UDP read loop's answer memo, as the
// listener's writer gives it (listen.MemoWriter): the second of two
// queries alike is answered from it.
type memoWriter struct {
	discardWriter
	memo listen.Memo
}

func (m *memoWriter) Memo() listen.Memo { return m.memo }

// benchWriters are the writers the inline paths are served through:
// without a memo (every query read and decided) and with one.
func benchWriters(b *testing.B, h *Handler) []struct {
	name string
	w    listen.ResponseWriter
} {
	remote := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}
	memo := h.NewMemo()
	b.Cleanup(memo.Close)
	return []struct {
		name string
		w    listen.ResponseWriter
	}{
		{"", &discardWriter{remote: remote}},
		{"memo/", &memoWriter{discardWriter: discardWriter{remote: remote}, memo: memo}},
	}
}

func BenchmarkMatchList(b *testing.B) {
	l, err := blocklist.Parse("b.txt", []byte("tiktok.com\n"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l.Match("a.b.www.tiktok.com.")
	}
}

// rawUpstream answers every UDP query on loopback with one A record (TTL
// 3600) built straight from the query's bytes, allocating nothing, so that
// a cache-miss benchmark measures the resolver and not its upstream.
func rawUpstream(b testing.TB) string {
	b.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	for range 4 { // a few readers, so that it keeps up with a parallel benchmark
		go func() {
			in := make([]byte, 4096)
			out := make([]byte, 0, 4096)
			for {
				n, addr, err := pc.ReadFromUDPAddrPort(in)
				if err != nil {
					return
				}
				out = rawAnswer(out[:0], in[:n])
				if out != nil {
					_, _ = pc.WriteToUDPAddrPort(out, addr)
				}
			}
		}()
	}
	return pc.LocalAddr().String()
}

// rawAnswer is the answer to the query q: its header with QR, RA and RD as
// asked, its question, one A record 192.0.2.1 pointing at the question,
// and an OPT of 1232 octets when q has one.
func rawAnswer(out, q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += 1 + int(q[end])
	}
	end += 5 // root, type, class
	if end > len(q) {
		return nil
	}
	edns := q[11] == 1
	out = append(out, q[0], q[1], q[2]|0x80, 0x80, 0, 1, 0, 1, 0, 0, 0, 0)
	if edns {
		out[11] = 1
	}
	out = append(out, q[12:end]...)
	out = append(out, 0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 192, 0, 2, 1)
	if edns {
		out = append(out, 0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0)
	}
	return out
}

// serveBytes is what the UDP listener does with one datagram: the query is
// parsed and answered inline, and resumed at once when it needs an
// upstream.
func serveBytes(h *Handler, w listen.ResponseWriter, b []byte) {
	if resume := listen.ServeDatagram(h, w, b, listen.AcceptQuery, func([]byte, error) {}, nil); resume != nil {
		resume()
	}
}

// BenchmarkServeUDP is one UDP query as a listener serves it, from the
// datagram's bytes to the answer's: parsing, the pipeline with metrics
// counted, and packing. cache-miss asks a loopback upstream that costs
// next to nothing (rawUpstream), one name new each query.
func BenchmarkServeUDP(b *testing.B) {
	h := wireBenchHandler(b)
	w := &discardWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
	for _, bw := range benchWriters(b, h) {
		for _, bc := range inlinePaths() {
			p := packed(bc.req)
			serveBytes(h, bw.w, p) // warm the cache
			serveBytes(h, bw.w, p) // and the memo: a cache hit is kept at its first hit
			b.Run(bw.name+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					serveBytes(h, bw.w, p)
				}
			})
		}
	}
	b.Run("cache-miss", func(b *testing.B) {
		const n = 1 << 19
		queries := make([][]byte, n)
		for i := range queries {
			queries[i] = packed(question("m"+strconv.Itoa(i)+".example.net.", dns.TypeA, true))
		}
		i := 0
		b.ReportAllocs()
		start := cpuTime()
		for b.Loop() {
			serveBytes(h, w, queries[i%n])
			i++
		}
		reportCPU(b, start)
	})
}

// BenchmarkServeUDPCold is BenchmarkServeUDP's inline paths with caches
// emptied before every query, as an idle server's are when a query wakes
// it. Between queries a sweep writes a buffer a cache line at a time:
// "core" 4 MiB, which empties the core's own caches (L1 and L2) and leaves
// the shared last level, as a core that ran other processes between two
// queries has them; "all" 64 MiB, which empties the last level and the
// TLBs too. cold-ns/op is the query's own time (the sweep is not counted:
// ns/op is mostly the sweep); "nothing" is the time of the clock reads
// alone, to subtract. It is the measure of what a query costs at a low
// rate, where BenchmarkServeUDP's warm figure is a fraction of it (issue
// 14, the latency goal).
func BenchmarkServeUDPCold(b *testing.B) {
	h := wireBenchHandler(b)
	writers := benchWriters(b, h)
	paths := inlinePaths()
	paths = append(paths, struct {
		name string
		req  *dns.Msg
	}{"nothing", nil})
	for _, sweep := range []struct {
		name string
		size int
	}{{"core", 4 << 20}, {"all", 64 << 20}} {
		buf := make([]byte, sweep.size)
		for _, bw := range writers {
			for _, bc := range paths {
				w := bw.w
				var p []byte
				if bc.req != nil {
					p = packed(bc.req)
					serveBytes(h, w, p) // the answer is cached
					serveBytes(h, w, p) // and kept in the memo
				}
				b.Run(sweep.name+"/"+bw.name+bc.name, func(b *testing.B) {
					var spent time.Duration
					n := 0
					for b.Loop() {
						n++
						for i := 0; i < len(buf); i += 64 {
							buf[i]++
						}
						start := time.Now()
						if p != nil {
							serveBytes(h, w, p)
						}
						spent += time.Since(start)
					}
					b.ReportMetric(float64(spent.Nanoseconds())/float64(n), "cold-ns/op")
				})
			}
		}
	}
}

// BenchmarkServeUDPMissParallel is the cache-miss path of BenchmarkServeUDP
// with 32 queries in flight per core, as a busy listener has them: its
// ns/op is the cost of one miss at that concurrency, not one round trip.
func BenchmarkServeUDPMissParallel(b *testing.B) {
	h := wireBenchHandler(b)
	queries := missQueries(b)
	n := int64(len(queries))
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
		for pb.Next() {
			serveBytes(h, w, queries[next.Add(1)%n])
		}
	})
	reportCPU(b, start)
}

// BenchmarkServeUDPMissStarted is the cache-miss path as the UDP listener
// takes it with one plain upstream: batches of 16 misses sent from the
// caller's goroutine (startWire), one flush a batch, and each answered by
// the upstream socket's reader (WireDone). Its ns/op and allocs/op are one
// miss's, with 16 in flight.
func BenchmarkServeUDPMissStarted(b *testing.B) {
	const batch = 16
	h := wireBenchHandler(b)
	queries := missQueries(b)
	w := &batchWriter{discardWriter: discardWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}},
		done: make(chan struct{}, batch)}
	i := 0
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		serveBytes(h, w, queries[i%len(queries)])
		if i++; i%batch == 0 {
			w.endBatch(b, batch)
		}
	}
	w.endBatch(b, i%batch)
	reportCPU(b, start)
}

// batchWriter is a discardWriter that the queries of a batch share, as the
// UDP listener's loop does its slots, and that can be detached
// (listen.Detacher, listen.Batcher).
type batchWriter struct {
	discardWriter
	mu       sync.Mutex
	detached int
	flushers []listen.Flusher
	done     chan struct{}
	timeout  *time.Timer
}

func (w *batchWriter) Detach()               { w.detached++ }
func (w *batchWriter) Done()                 { w.done <- struct{}{} }
func (w *batchWriter) Within(listen.Batcher) {}
func (w *batchWriter) AfterBatch(f listen.Flusher) {
	if !slices.Contains(w.flushers, f) {
		w.flushers = append(w.flushers, f)
	}
}
func (w *batchWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.discardWriter.Write(b)
}
func (w *batchWriter) WriteMsg(m *dns.Msg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.discardWriter.WriteMsg(m)
}

// endBatch flushes what the batch gathered and waits for its detached
// queries, n at most, to be answered.
func (w *batchWriter) endBatch(b *testing.B, n int) {
	for _, f := range w.flushers {
		f.Flush()
	}
	w.flushers = w.flushers[:0]
	if w.timeout == nil {
		w.timeout = time.NewTimer(time.Hour)
	}
	w.timeout.Reset(5 * time.Second) // one timer: the benchmark's allocations are the path's
	for range min(n, w.detached) {
		select {
		case <-w.done:
		case <-w.timeout.C:
			b.Fatal("a started miss was never answered")
		}
	}
	w.detached = 0
}

// inlinePaths are the queries the Handler and ServeUDP benchmarks answer
// without an upstream, once the cache is warm: a name under a blocked
// entry, a list entry itself, and a cached name.
func inlinePaths() []struct {
	name string
	req  *dns.Msg
} {
	return []struct {
		name string
		req  *dns.Msg
	}{
		{"blocked", question("www.tiktok.com.", dns.TypeA, true)},
		{"blocked-list-entry", question("host-500.tracker500.example.com.", dns.TypeAAAA, false)},
		{"cache-hit", question("example.org.", dns.TypeA, true)},
	}
}

// wireBenchHandler is the handler of the ServeUDP benchmarks: a 100-entry
// list, metrics, and the raw loopback upstream connected.
func wireBenchHandler(b testing.TB) *Handler {
	snap := benchSnapshot(b, 100, rawUpstream(b))
	m := NewMetrics(prometheus.NewRegistry())
	if err := ConnectUpstreams(nil, snap, nil, m); err != nil {
		b.Fatal(err)
	}
	return NewHandler(zap.NewNop(), snap, m)
}

// missQueriesOnce holds the queries of BenchmarkServeUDPMissParallel,
// packed once: a million names, each asked once per benchmark run.
var missQueriesOnce = sync.OnceValues(func() ([][]byte, error) {
	queries := make([][]byte, 1<<20)
	for i := range queries {
		p, err := question("p"+strconv.Itoa(i)+".example.net.", dns.TypeA, true).Pack()
		if err != nil {
			return nil, err
		}
		queries[i] = p
	}
	return queries, nil
})

func missQueries(b *testing.B) [][]byte {
	q, err := missQueriesOnce()
	if err != nil {
		b.Fatal(err)
	}
	return q
}
