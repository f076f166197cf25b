package resolver

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
)

// FuzzCacheSizeBound builds answers around the cache's bound from records
// whose names compress in many ways (the question's, names under it, a
// name of their own, CNAME targets), a filler TXT bringing the answer
// packed compressed near maxCachedAnswer octets: tooLargeToCache agrees
// with len(Pack()) of the compressed message and with the heap it holds
// (footprint), and put caches the answer it returns exactly when that
// packs to maxCachedAnswer octets or fewer and takes maxCachedFootprint
// bytes or fewer as a message, whatever Compress the message came with.
func FuzzCacheSizeBound(f *testing.F) {
	f.Add([]byte{0, 0, 3, 10})
	f.Add([]byte{1, 0, 3, 10})
	f.Add([]byte{0xff, 1, 4, 100, 2, 7, 3, 200, 4, 9})
	f.Add([]byte{0x80, 0, 2, 255, 2, 255, 1, 3, 0, 1})
	f.Add([]byte{0x7f, 3, 5, 30, 3, 6, 31, 4, 250})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		delta, compress := int(int8(data[0])), data[1]&1 != 0
		const name = "big.example.org."
		m := question(name, dns.TypeTXT, false)
		m.Response = true
		owner := func(b byte) string {
			switch b % 4 {
			case 0:
				return name
			case 1:
				return fmt.Sprintf("x%d.%s", b, name)
			case 2:
				return fmt.Sprintf("n%d.other.example.net.", b)
			}
			return fmt.Sprintf("%s.%s", strings.Repeat("y", int(b%63)+1), name)
		}
		hdr := func(n string, rrtype uint16) dns.RR_Header {
			return dns.RR_Header{Name: n, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 300}
		}
		for ops := data[2:]; len(ops) >= 2 && len(m.Answer) < 64; ops = ops[2:] {
			switch ops[0] % 3 {
			case 0:
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(owner(ops[1]), dns.TypeTXT), Txt: []string{strings.Repeat("t", int(ops[1]))}})
			case 1:
				m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(owner(ops[1]), dns.TypeCNAME), Target: owner(ops[1] + 1)})
			case 2:
				m.Ns = append(m.Ns, &dns.NS{Hdr: hdr(owner(ops[1]), dns.TypeNS), Ns: owner(ops[1] >> 2)})
			}
		}
		m.Compress = true
		base := m.Len()
		// A filler TXT of strings of 255: each string one octet more.
		room := maxCachedAnswer + delta - base - (len(name) + 2 + 10) // compressed owner: a pointer
		if room > 0 {
			var txt []string
			for room > 0 {
				n := min(room-1, 255)
				if n < 0 {
					break
				}
				txt = append(txt, strings.Repeat("f", n))
				room -= n + 1
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: txt})
		}
		m.Compress = compress
		packed := func(msg *dns.Msg) int {
			c := msg.Copy()
			c.Compress = true
			b, err := c.Pack()
			if err != nil {
				t.Fatalf("packing: %v", err)
			}
			return len(b)
		}
		// The heap the answer takes as a message: footprint, which
		// FuzzCacheFootprintPaths and TestHeldBoundsTheHeap check
		// against what miekg/dns holds.
		heap := footprint
		size := packed(m)
		if got, want := tooLargeToCache(m), size > maxCachedAnswer || heap(m) > maxCachedFootprint; got != want {
			t.Fatalf("tooLargeToCache %v for an answer of %d octets packed (Len %d), %d bytes as a message", got, size, m.Len(), heap(m))
		}
		c := NewCache(config.Cache{Size: 100, MaxTTL: 86400})
		key := keyOf(m)
		served := c.put(key, m, time.Now())
		_, hit := c.t.get(key)
		if n := packed(served); hit != (n <= maxCachedAnswer && heap(served) <= maxCachedFootprint) {
			t.Fatalf("an answer of %d octets packed (%d as given), %d bytes as a message, cached: %v", n, size, heap(served), hit)
		}
	})
}
