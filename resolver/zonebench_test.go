package resolver

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestMain lets the test binary be the zone primary of
// BenchmarkZoneSource1M, in a process of its own so that its memory is not
// counted as dnsfence's.
func TestMain(m *testing.M) {
	if n := os.Getenv("DNSFENCE_BENCH_PRIMARY"); n != "" {
		records, err := strconv.Atoi(n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		runBenchPrimary(records)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const benchZone = "rpz.bench."

func benchRecord(i int) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: fmt.Sprintf("host-%d.tracker%d.example.com.%s", i, i%1000, benchZone),
		Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "."}
}

func benchSOA(serial uint32) *dns.SOA {
	return &dns.SOA{Hdr: dns.RR_Header{Name: benchZone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "localhost.", Mbox: "admin." + benchZone, Serial: serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
}

// benchPrimary serves an RPZ zone of n records from memory: serial s holds
// the records n0 = 50*(s-1) .. n-1 and the 50 added at each serial after
// the first (added(s, i) = n + 50*s + i), so that going from s to s+1
// removes 50 records and adds 50: 100 changes an IXFR. The AXFR answer is
// packed when the serial changes, as a real primary has its zone loaded.
type benchPrimary struct {
	n int

	mu       sync.Mutex
	serial   uint32
	axfr     [][]byte
	axfrOnly bool // IXFR answered NOTIMP: the secondary falls back to AXFR
}

func (p *benchPrimary) records(serial uint32) []dns.RR {
	out := make([]dns.RR, 0, p.n+1)
	for i := 50 * int(serial-1); i < p.n; i++ {
		out = append(out, benchRecord(i))
	}
	for s := uint32(2); s <= serial; s++ {
		for i := range 50 {
			out = append(out, benchRecord(p.n+50*int(s)+i))
		}
	}
	return out
}

// pack packs the AXFR answer of serial.
func (p *benchPrimary) pack(serial uint32) [][]byte {
	q := new(dns.Msg)
	q.SetQuestion(benchZone, dns.TypeAXFR)
	answer := append([]dns.RR{benchSOA(serial)}, p.records(serial)...)
	answer = append(answer, benchSOA(serial))
	var out [][]byte
	for i := 0; i < len(answer); {
		end := min(i+1000, len(answer))
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative, m.Compress = true, true
		m.Answer = answer[i:end]
		wire, err := m.Pack()
		if err != nil {
			panic(err)
		}
		out = append(out, wire)
		i = end
	}
	return out
}

func (p *benchPrimary) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	p.mu.Lock()
	serial, axfr, axfrOnly := p.serial, p.axfr, p.axfrOnly
	p.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	switch q.Question[0].Qtype {
	case dns.TypeSOA:
		m.Answer = []dns.RR{benchSOA(serial)}
		_ = w.WriteMsg(m)
	case dns.TypeAXFR:
		for _, wire := range axfr {
			out := append([]byte(nil), wire...)
			binary.BigEndian.PutUint16(out, q.Id)
			if _, err := w.Write(out); err != nil {
				return
			}
		}
	case dns.TypeIXFR:
		if axfrOnly {
			m.Rcode = dns.RcodeNotImplemented
			_ = w.WriteMsg(m)
			return
		}
		have := q.Ns[0].(*dns.SOA).Serial
		m.Answer = []dns.RR{benchSOA(serial)}
		for s := have; s < serial; s++ {
			m.Answer = append(m.Answer, benchSOA(s))
			for i := range 50 {
				m.Answer = append(m.Answer, benchRecord(50*int(s-1)+i))
			}
			m.Answer = append(m.Answer, benchSOA(s+1))
			for i := range 50 {
				m.Answer = append(m.Answer, benchRecord(p.n+50*int(s+1)+i))
			}
		}
		m.Answer = append(m.Answer, benchSOA(serial))
		m.Compress = true
		_ = w.WriteMsg(m)
	}
}

// runBenchPrimary serves the zone on a port of 127.0.0.1 (printed first)
// and takes commands a line on stdin: "next" moves the zone to the next
// serial, "axfr-only" refuses IXFR from then on; each is answered "ok"
// once done.
func runBenchPrimary(n int) {
	p := &benchPrimary{n: n, serial: 1}
	p.axfr = p.pack(1)
	pc, ln, err := testnet.ListenBoth()
	if err != nil {
		panic(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: p}, {Listener: ln, Handler: p}} {
		go func() { _ = srv.ActivateAndServe() }()
	}
	fmt.Println(pc.LocalAddr().String())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "next":
			p.mu.Lock()
			serial := p.serial + 1
			p.mu.Unlock()
			axfr := p.pack(serial)
			p.mu.Lock()
			p.serial, p.axfr = serial, axfr
			p.mu.Unlock()
		case "axfr-only":
			p.mu.Lock()
			p.axfrOnly = true
			p.mu.Unlock()
		}
		fmt.Println("ok")
	}
}

// procStatus reads a field of /proc/self/status, in KiB.
func procStatus(b *testing.B, field string) float64 {
	data, err := os.ReadFile("/proc/self/status")
	require.NoError(b, err)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			require.NoError(b, err)
			return v
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeak starts the peak RSS (VmHWM) afresh (proc(5), clear_refs 5).
func resetPeak(b *testing.B) {
	require.NoError(b, os.WriteFile("/proc/self/clear_refs", []byte("5"), 0))
}

// tuneGCAsServe does what serve does after each load (cmd/dnsfence
// tuneGC): return memory to the system, and let garbage add about 8 MiB
// to the live heap.
func tuneGCAsServe() {
	debug.FreeOSMemory()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	live := sample[0].Value.Uint64()
	if live > 0 {
		debug.SetGCPercent(int(min(100, max(20, 100*(8<<20)/live))))
	}
}

// BenchmarkZoneSource1M measures a 1,000,000-record RPZ zone pulled from a
// primary on loopback (another process) and applied to a serving
// dnsfence: the first AXFR and its apply (serve's start), an IXFR of 100
// changes applied after a NOTIFY, and an AXFR that replaces the whole
// zone; with the peak RSS of each swap (VmHWM, reset before it) against
// the steady RSS with the zone loaded. Run it with -benchtime=1x.
func BenchmarkZoneSource1M(b *testing.B) {
	const n = 1_000_000
	primary := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	primary.Env = append(os.Environ(), "DNSFENCE_BENCH_PRIMARY="+strconv.Itoa(n))
	stdin, err := primary.StdinPipe()
	require.NoError(b, err)
	stdout, err := primary.StdoutPipe()
	require.NoError(b, err)
	primary.Stderr = os.Stderr
	require.NoError(b, primary.Start())
	b.Cleanup(func() { stdin.Close(); _ = primary.Wait() })
	lines := bufio.NewScanner(stdout)
	require.True(b, lines.Scan(), "the primary's address")
	addr := lines.Text()
	command := func(c string) {
		_, err := io.WriteString(stdin, c+"\n")
		require.NoError(b, err)
		require.True(b, lines.Scan())
		require.Equal(b, "ok", lines.Text())
	}
	entry := "axfr://" + addr + "/" + strings.TrimSuffix(benchZone, ".")
	notify := func(f *sourceFence) {
		m := new(dns.Msg)
		m.SetNotify(benchZone)
		r, err := exchange(f.addr, "127.0.0.1", "udp", m)
		require.NoError(b, err)
		require.Equal(b, dns.RcodeSuccess, r.Rcode)
	}

	var axfrStart, ixfr, axfrSwap time.Duration
	var cpuStart, cpuIXFR, cpuSwap time.Duration
	var steady, peakIXFR, peakAXFR float64
	for b.Loop() {
		dir := b.TempDir()
		require.NoError(b, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), []byte(fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:9"]
log: {queries: none, level: warn}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s"]
sources: {cache_dir: cache, max_bytes: 268435456}
`, entry)), 0o644))
		start, cpu := time.Now(), cpuTime()
		core, logs := observer.New(zap.InfoLevel)
		f := startSourceFenceLog(b, zap.New(core), logs, dir, "127.0.0.1:0")
		defer func() {
			for _, e := range logs.FilterMessage("list source applied").All() {
				b.Logf("%v", e.ContextMap())
			}
		}()
		axfrStart += time.Since(start)
		cpuStart += cpuTime() - cpu
		f.reloader.AfterReload = func(*Snapshot) { tuneGCAsServe() }
		serial := func() uint32 {
			s, _ := f.handler.Snapshot().Lists[entry].Serial()
			return s
		}
		require.Equal(b, uint32(1), serial())
		require.Equal(b, n, f.handler.Snapshot().Lists[entry].Len())
		cache := waitCache(b, dir, time.Time{})
		tuneGCAsServe()
		runtime.GC()
		steady += procStatus(b, "VmRSS")

		// IXFR of 100 changes, after the primary's NOTIFY.
		command("next")
		resetPeak(b)
		start, cpu = time.Now(), cpuTime()
		ixfrNotified := start
		notify(f)
		waitFor(b, func() bool { return serial() == 2 })
		ixfr += time.Since(start)
		cpuIXFR += cpuTime() - cpu
		waitCache(b, dir, cache)
		peakIXFR += procStatus(b, "VmHWM")
		require.Equal(b, n, f.handler.Snapshot().Lists[entry].Len())

		// A whole new zone by AXFR.
		command("axfr-only")
		command("next")
		// NOTIFYs lead to one check a second at most: the swap is timed
		// from a NOTIFY acted on at once, as after a quiet second.
		time.Sleep(time.Until(ixfrNotified.Add(source.NotifyInterval)))
		tuneGCAsServe()
		resetPeak(b)
		start, cpu = time.Now(), cpuTime()
		cache = time.Now()
		notify(f)
		waitFor(b, func() bool { return serial() == 3 })
		axfrSwap += time.Since(start)
		cpuSwap += cpuTime() - cpu
		waitCache(b, dir, cache)
		peakAXFR += procStatus(b, "VmHWM")
		require.Equal(b, n, f.handler.Snapshot().Lists[entry].Len())
		f.stop()
	}
	N := float64(b.N)
	b.ReportMetric(float64(axfrStart.Milliseconds())/N, "ms-axfr-start")
	b.ReportMetric(float64(ixfr.Microseconds())/1000/N, "ms-ixfr-100")
	b.ReportMetric(float64(axfrSwap.Milliseconds())/N, "ms-axfr-swap")
	b.ReportMetric(float64(cpuStart.Milliseconds())/N, "cpu-ms-axfr-start")
	b.ReportMetric(float64(cpuIXFR.Microseconds())/1000/N, "cpu-ms-ixfr-100")
	b.ReportMetric(float64(cpuSwap.Milliseconds())/N, "cpu-ms-axfr-swap")
	b.ReportMetric(steady/1024/N, "MiB-rss-steady")
	b.ReportMetric(peakIXFR/1024/N, "MiB-rss-peak-ixfr")
	b.ReportMetric(peakAXFR/1024/N, "MiB-rss-peak-axfr")
	b.ReportMetric(peakIXFR/steady, "peak-ixfr/steady")
	b.ReportMetric(peakAXFR/steady, "peak-axfr/steady")
}

// waitFor polls ok every millisecond, for at most a minute.
func waitFor(b *testing.B, ok func() bool) {
	deadline := time.Now().Add(time.Minute)
	for !ok() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitCache waits until the source's disk copy in dir/cache is written
// after since, and returns its modification time: the swap is over once
// the copy is on disk.
func waitCache(b *testing.B, dir string, since time.Time) time.Time {
	var mtime time.Time
	waitFor(b, func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "cache", "*.cache"))
		if len(files) != 1 {
			return false
		}
		fi, err := os.Stat(files[0])
		if err != nil {
			return false
		}
		mtime = fi.ModTime()
		return mtime.After(since)
	})
	return mtime
}
