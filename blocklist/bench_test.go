package blocklist

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
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
