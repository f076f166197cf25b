package source

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// benchPrimary serves a large RPZ zone from memory for the benchmarks: the
// AXFR answer is packed once (so the primary's cost is writing bytes, as
// for a real primary with the zone loaded) and each IXFR answer is built
// from the serial asked: 100 changes, 50 records removed and 50 added.
type benchPrimary struct {
	addr string
	zone string
	axfr [][]byte // the AXFR answer's messages, ID 0

	mu     sync.Mutex
	serial uint32
}

// benchNames is how the zone's records are named: nameN.example.
func benchName(zone string, i int) string { return fmt.Sprintf("name%d.example.%s", i, zone) }

func benchCNAME(zone string, i int) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: benchName(zone, i), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "."}
}

func startBenchPrimary(b *testing.B, zone string, n int) *benchPrimary {
	b.Helper()
	p := &benchPrimary{zone: zone, serial: 1}
	soa := testSOA(zone, 1)
	q := new(dns.Msg)
	q.SetQuestion(zone, dns.TypeAXFR)
	answer := make([]dns.RR, 0, n+2)
	answer = append(answer, soa)
	for i := range n {
		answer = append(answer, benchCNAME(zone, i))
	}
	answer = append(answer, soa)
	for i := 0; i < len(answer); {
		end := min(i+2000, len(answer))
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative, m.Compress = true, true
		m.Answer = answer[i:end]
		wire, err := m.Pack()
		require.NoError(b, err)
		p.axfr = append(p.axfr, wire)
		i = end
	}
	pc, l := listenBoth(b)
	p.addr = l.Addr().String()
	testnet.Serve(b, &dns.Server{PacketConn: pc, Handler: p}, &dns.Server{Listener: l, Handler: p})
	return p
}

// next moves the zone on by one serial.
func (p *benchPrimary) next() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serial++
}

func (p *benchPrimary) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	p.mu.Lock()
	serial := p.serial
	p.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	switch q.Question[0].Qtype {
	case dns.TypeSOA:
		m.Answer = []dns.RR{testSOA(p.zone, serial)}
		w.WriteMsg(m)
	case dns.TypeAXFR:
		for _, wire := range p.axfr {
			out := append([]byte(nil), wire...)
			binary.BigEndian.PutUint16(out, q.Id)
			if _, err := w.Write(out); err != nil {
				return
			}
		}
	case dns.TypeIXFR:
		// From serial s to s+1: remove the 50 records added at s (the
		// first 50 of the zone for serial 1) and add 50 new ones.
		have := q.Ns[0].(*dns.SOA).Serial
		var steps []ixfrStep
		for s := have; s < serial; s++ {
			var st ixfrStep
			st.from, st.to = s, s+1
			for i := range 50 {
				st.del = append(st.del, benchCNAME(p.zone, removedAt(s, i)))
				st.add = append(st.add, benchCNAME(p.zone, addedAt(s+1, i)))
			}
			steps = append(steps, st)
		}
		m.Answer = ixfrAnswer(p.zone, steps...)
		m.Compress = true
		w.WriteMsg(m)
	}
}

// removedAt is the i-th record removed going to serial s+1: the records of
// the original zone, 50 a serial.
func removedAt(s uint32, i int) int { return int(s-1)*50 + i }

// addedAt is the i-th record added at serial s: beyond the original zone.
func addedAt(s uint32, i int) int { return 10_000_000 + int(s)*50 + i }

// BenchmarkZoneTransfer measures the source's half of a 1,000,000-record
// RPZ zone (nameN.example CNAME .) from a primary on loopback: an AXFR
// (SOA query, transfer, checks, the Content built and the zone indexed for
// later IXFRs), and an IXFR of 100 changes applied to it (SOA query,
// transfer, the delta planned, the whole new zone handed over, committed).
// The receiver's half (parsing the RPZ, swapping the snapshot) is not
// included.
func BenchmarkZoneTransfer(b *testing.B) {
	const n = 1_000_000
	const zone = "rpz.test."
	p := startBenchPrimary(b, zone, n)
	opt := Options{Refresh: time.Hour, MaxBytes: 256 << 20, Timeout: 30 * time.Second}
	count := func(c Content) error {
		if len(c.Records) < n {
			return fmt.Errorf("%d records", len(c.Records))
		}
		return nil
	}

	b.Run("AXFR-1M", func(b *testing.B) {
		b.ReportAllocs()
		var toDeliver time.Duration
		cpu := cpuTime()
		for b.Loop() {
			z, err := NewZone("axfr://"+p.addr+"/rpz.test", opt)
			require.NoError(b, err)
			start := time.Now()
			require.NoError(b, z.refresh(context.Background(), func(c Content) error {
				toDeliver += time.Since(start)
				return count(c)
			}))
			require.Equal(b, n, z.held.live)
		}
		b.ReportMetric(float64(toDeliver.Milliseconds())/float64(b.N), "ms-to-deliver/op")
		b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
	})

	b.Run("IXFR-100-changes", func(b *testing.B) {
		z, err := NewZone("axfr://"+p.addr+"/rpz.test", opt)
		require.NoError(b, err)
		require.NoError(b, z.refresh(context.Background(), count))
		held := heapMB()
		b.ReportAllocs()
		var toDeliver time.Duration
		cpu := cpuTime()
		for b.Loop() {
			p.next()
			var got Content
			start := time.Now()
			require.NoError(b, z.refresh(context.Background(), func(c Content) error {
				toDeliver += time.Since(start)
				got = c
				return count(c)
			}))
			require.Equal(b, TransferIXFR, got.Transfer)
			require.Equal(b, 50, got.Added)
			require.Equal(b, 50, got.Removed)
		}
		b.ReportMetric(float64(toDeliver.Microseconds())/1000/float64(b.N), "ms-to-deliver/op")
		b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		b.ReportMetric(held, "heap-MiB-zone-held")
	})
}

// cpuTime is the CPU time (user and system) the process has used: with
// other work on the machine, a steadier measure than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapMB is the live heap after a collection, in MiB.
func heapMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// BenchmarkZoneCache measures the disk copy of a 1,000,000-record zone:
// writing it (after each transfer, off the apply path) and reading it
// back (at start, before the network).
func BenchmarkZoneCache(b *testing.B) {
	const n = 1_000_000
	const zone = "rpz.test."
	records := make([]dns.RR, 0, n+1)
	records = append(records, testSOA(zone, 1))
	for i := range n {
		records = append(records, benchCNAME(zone, i))
	}
	opt := Options{CacheDir: b.TempDir()}
	z, err := NewZone("axfr://127.0.0.1/rpz.test", opt)
	require.NoError(b, err)
	c := &Content{Source: z.name, Kind: KindZone, Zone: zone, Serial: 1, Records: records, Fetched: time.Now()}

	b.Run("write-1M", func(b *testing.B) {
		cpu := cpuTime()
		for b.Loop() {
			z.writeCache(c)
			require.NoError(b, z.Status().CacheError)
		}
		b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
	})
	b.Run("read-1M", func(b *testing.B) {
		cpu := cpuTime()
		var toDeliver time.Duration
		for b.Loop() {
			var got int
			z.held = nil
			start := time.Now()
			z.loadCache(func(c Content) error { toDeliver += time.Since(start); got = len(c.Records); return nil })
			require.Equal(b, n+1, got)
		}
		b.ReportMetric(float64(toDeliver.Milliseconds())/float64(b.N), "ms-to-deliver/op")
		b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
	})
}
