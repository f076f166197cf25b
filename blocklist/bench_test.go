package blocklist

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
)

// bigList is the content of an n-entry list of realistic names.
func bigList(n int) []byte {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "host-%d.tracker%d.example.com\n", i, i%1000)
	}
	return []byte(b.String())
}

func BenchmarkMatch(b *testing.B) {
	l, err := Parse("bench.txt", bigList(100000))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, qname string }{
		{"hit-exact", "host-500.tracker500.example.com."},
		{"hit-subdomain", "a.b.c.host-500.tracker500.example.com."},
		{"miss", "www.example.org."},
		{"miss-upper-deep", "A.B.C.D.E.F.WWW.EXAMPLE.ORG."},
		{"hit-escaped-63", strings.Repeat(`\001`, 63) + ".host-500.tracker500.example.com."},
		{"hit-escaped-letters", `a.\104ost-500.tracker500.\069XAMPLE.com.`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Match(bc.qname)
			}
		})
	}
}

// BenchmarkParse1M loads a 1,000,000-entry list and reports the heap the
// loaded list keeps (list-MB) besides the time to parse it.
func BenchmarkParse1M(b *testing.B) {
	data := bigList(1000000)
	listMB, entries := heapOfList(b, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("big.txt", data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(listMB, "list-MB")
	b.ReportMetric(float64(entries), "entries")
}

// BenchmarkParseHosts1M parses the names of BenchmarkParse1M in hosts
// form with a comment (`0.0.0.0 NAME # c`), the general way's field by
// field reading (nextField) that the plain names' fast way passes by.
func BenchmarkParseHosts1M(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 1000000; i++ {
		fmt.Fprintf(&sb, "0.0.0.0 host-%d.tracker%d.example.com # c\n", i, i%1000)
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("hosts.txt", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadList1M reads and parses the 1,000,000-entry list of
// BenchmarkParse1M from a file, a piece at a time, as dnsfence loads it.
func BenchmarkReadList1M(b *testing.B) {
	data := bigList(1000000)
	path := filepath.Join(b.TempDir(), "big.txt")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := ReadList(path, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// heapOfList parses data once and returns the heap the list keeps, in MB.
func heapOfList(b *testing.B, data []byte) (float64, int) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := Parse("big.txt", data)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(l)
	return float64(after.HeapAlloc-before.HeapAlloc) / 1e6, l.Len()
}

// bigZone is the text of an n-record RPZ zone of realistic names: exact
// triggers, with a wildcard for every tenth.
func bigZone(n int) []byte {
	var b strings.Builder
	b.WriteString("$ORIGIN rpz.example.gov.\n$TTL 300\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n  NS localhost.\n")
	for i := 0; i < n; i++ {
		if i%10 == 9 {
			fmt.Fprintf(&b, "*.host-%d.tracker%d.example.com CNAME *.\n", i-1, (i-1)%1000)
			continue
		}
		fmt.Fprintf(&b, "host-%d.tracker%d.example.com CNAME .\n", i, i%1000)
	}
	return []byte(b.String())
}

func BenchmarkMatchRPZ(b *testing.B) {
	l, err := Parse("bench.rpz", bigZone(100000))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, qname string }{
		{"hit-exact", "host-500.tracker500.example.com."},
		{"hit-wildcard", "a.b.c.host-508.tracker508.example.com."},
		{"miss-below-exact", "a.host-500.tracker500.example.com."},
		{"miss", "www.example.org."},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Match(bc.qname)
			}
		})
	}
}

func BenchmarkMatchIP(b *testing.B) {
	var z strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&z, "24.0.%d.%d.10.rpz-ip CNAME .\n", i%256, i/256)
		fmt.Fprintf(&z, "48.zz.%x.db8.2001.rpz-ip CNAME .\n", i)
	}
	l, err := Parse("bench.rpz", []byte(z.String()))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, addr string }{
		{"hit-v4", "10.20.7.9"},
		{"hit-v6", "2001:db8:1f::1"},
		{"miss-v4", "192.0.2.1"},
		{"miss-v6", "2001:db9::1"},
	} {
		a := netip.MustParseAddr(bc.addr)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.MatchIP(a)
			}
		})
	}
}

// BenchmarkParseRPZ1M reads a 1,000,000-record RPZ zone file and reports
// the heap the list keeps (list-MB).
func BenchmarkParseRPZ1M(b *testing.B) {
	data := bigZone(1000000)
	listMB, entries := heapOf(b, func() (*List, error) { return Parse("big.rpz", data) })
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse("big.rpz", data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(listMB, "list-MB")
	b.ReportMetric(float64(entries), "entries")
}

// BenchmarkFromRecords1M builds a list from the 1,000,000 records of a
// zone transfer, handed over one by one (rpz.FromSeq).
func BenchmarkFromRecords1M(b *testing.B) {
	const zone = "rpz.example.gov."
	rrs := make([]dns.RR, 0, 1000002)
	rrs = append(rrs, &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Serial: 1})
	for i := 0; i < 1000000; i++ {
		rrs = append(rrs, &dns.CNAME{Hdr: dns.RR_Header{Name: fmt.Sprintf("host-%d.tracker%d.example.com.%s", i, i%1000, zone), Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: "."})
	}
	build := func() (*List, error) {
		return FromZone("axfr://bench/"+zone, [32]byte{}, len(rrs), func(h rpz.Handler) (rpz.Zone, error) {
			return rpz.FromRecords(zone, rrs, h), nil
		})
	}
	listMB, entries := heapOf(b, build)
	for b.Loop() {
		if _, err := build(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(listMB, "list-MB")
	b.ReportMetric(float64(entries), "entries")
}

// heapOf builds a list once and returns the heap it keeps, in MB.
func heapOf(b *testing.B, build func() (*List, error)) (float64, int) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := build()
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(l)
	return float64(after.HeapAlloc-before.HeapAlloc) / 1e6, l.Len()
}

// BenchmarkInvalidUTF8 reads a 4 MB list that is valid UTF-8, as every
// fetched list and configuration is checked.
func BenchmarkInvalidUTF8(b *testing.B) {
	data := []byte(strings.Repeat("tiktok.com\n0.0.0.0 bücher.example\n", 4<<20/34))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if InvalidUTF8(data) != -1 {
			b.Fatal("valid UTF-8 reported invalid")
		}
	}
}
