package resolver

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkLintAllowOver is lintAllowOver of a policy with an RPZ feed of
// 1,000,000 triggers, 1,000 of them `*.` rpz-passthru., beside a plain
// DoH-bypass list with some entries below those passthrus (the warnings)
// and a small allow list: every block trigger of the feed is a candidate,
// and a passthru trigger makes each one more than an allow list lookup.
// peak-MB is the most the heap's objects grew over the call, sampled
// every millisecond (GOGC as set); warnings is how many it gave, which
// must not change with the walk's cost.
func BenchmarkLintAllowOver(b *testing.B) {
	snap := lintBenchSnapshot(b)
	var n int
	var peak uint64
	for b.Loop() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		runtime.GC()
		metrics.Read(sample)
		base := sample[0].Value.Uint64()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var high uint64
		wg.Go(func() {
			s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				metrics.Read(s)
				high = max(high, s[0].Value.Uint64())
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
		n = len(snap.lintAllowOver())
		close(stop)
		wg.Wait()
		if high > base {
			peak = max(peak, high-base)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
	b.ReportMetric(float64(n), "warnings")
}

// lintBenchSnapshot builds the snapshot of BenchmarkLintAllowOver.
func lintBenchSnapshot(b testing.TB) *Snapshot {
	b.Helper()
	var feed strings.Builder
	feed.WriteString("$TTL 300\n@ SOA ns.rpz.example. admin.rpz.example. 1 3600 600 86400 300\n@ NS ns.rpz.example.\n")
	for i := range 1000 {
		fmt.Fprintf(&feed, "*.cdn%d.example CNAME rpz-passthru.\n", i)
	}
	for i := range 999000 {
		wild := ""
		if i%2 == 1 {
			wild = "*."
		}
		fmt.Fprintf(&feed, "%shost-%d.tracker%d.example CNAME .\n", wild, i, i%5000)
	}
	var doh strings.Builder
	for i := range 100 {
		fmt.Fprintf(&doh, "dns%d.cdn%d.example\n", i, i*7)
		fmt.Fprintf(&doh, "doh%d.resolver.example\n", i)
	}
	snap, err := buildConfig(b, `upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [feed.rpz, doh.txt]
    allow: [allow.txt]
`, map[string]string{"feed.rpz": feed.String(), "doh.txt": doh.String(), "allow.txt": "mail.tracker1.example\n"})
	if err != nil {
		b.Fatal(err)
	}
	return snap
}
