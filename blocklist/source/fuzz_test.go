package source

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fuzzRR returns record k of a small alphabet: 16 owner names (some in
// capitals, the same name as another), two RPZ actions each.
func fuzzRR(k byte) dns.RR {
	names := []string{"a", "b", "c", "A", "d.e", "*.f", `g\.h`, "i", "j", "k", "l", "m", "n", "o", "p", "q"}
	targets := []string{".", "rpz-passthru."}
	rr := cname(testZone, names[k&15])
	rr.(*dns.CNAME).Target = targets[(k>>4)&1]
	rr.Header().Ttl = uint32(k >> 5) // the TTL never makes two records differ
	return rr
}

// fuzzKey is a record as RFC 1995 compares it: owner (any case), type and
// RDATA, the TTL aside.
func fuzzKey(rr dns.RR) string {
	return strings.ToLower(rr.Header().Name) + " " + rr.(*dns.CNAME).Target
}

func keysOf(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if _, ok := rr.(*dns.SOA); !ok {
			out = append(out, fuzzKey(rr))
		}
	}
	slices.Sort(out)
	return out
}

// FuzzIXFRApply applies random IXFR answers to random zones and compares
// the outcome with a plain set model: a record to remove must be there
// (else the IXFR does not apply and an AXFR is needed), a record added is
// in the zone once.
func FuzzIXFRApply(f *testing.F) {
	f.Add([]byte{0x0f, 0x00, 0x01, 0x82, 0xff, 0x03, 0x84})
	f.Add([]byte{0xff, 0xff, 0x01, 0x81, 0xff, 0x81, 0x01})
	f.Add([]byte{0x00, 0x00, 0x85, 0x85, 0xff, 0x05})
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0x80}) // a removed, then added back as it was
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xa0}) // a removed, then added back with another TTL
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 || len(data) > 200 {
			return
		}
		// The zone: the records of the first two bytes' bits. The model
		// maps each record (as RFC 1995 compares them) to its TTL.
		model := map[string]uint32{}
		var base []dns.RR
		for k := range 16 {
			if data[k/8]&(1<<(k%8)) != 0 {
				rr := fuzzRR(byte(k))
				if _, dup := model[fuzzKey(rr)]; !dup {
					model[fuzzKey(rr)] = rr.Header().Ttl
					base = append(base, rr)
				}
			}
		}
		z := newZoneCopy(testSOA(testZone, 1), slices.Clone(base))
		before := maps.Clone(model)
		// The answer: 0xff starts the next sequence; bit 7 adds, else
		// removes, record (byte & 0x7f) of the alphabet.
		diffs := []ixfrDiff{{from: testSOA(testZone, 1), to: testSOA(testZone, 2)}}
		for _, b := range data[2:] {
			d := &diffs[len(diffs)-1]
			switch {
			case b == 0xff:
				n := d.to.Serial
				diffs = append(diffs, ixfrDiff{from: testSOA(testZone, n), to: testSOA(testZone, n+1)})
			case b&0x80 != 0:
				d.add = append(d.add, fuzzRR(b&0x7f))
			default:
				d.del = append(d.del, fuzzRR(b))
			}
		}
		// Each sequence removes its records, then adds its own: a record
		// to remove must be there; one added that is there is kept as it
		// is.
		exact := true
		for _, d := range diffs {
			for _, rr := range d.del {
				if _, ok := model[fuzzKey(rr)]; !ok {
					exact = false
				}
				delete(model, fuzzKey(rr))
			}
			for _, rr := range d.add {
				if _, ok := model[fuzzKey(rr)]; !ok {
					model[fuzzKey(rr)] = rr.Header().Ttl
				}
			}
		}
		ch, err := z.plan(diffs)
		if !exact {
			require.ErrorIs(t, err, errNotExact)
			return
		}
		require.NoError(t, err)
		want := slices.Sorted(maps.Keys(model))
		got := z.preview(ch)
		require.Equal(t, want, keysOf(got))
		for _, rr := range got[1:] {
			require.Equal(t, model[fuzzKey(rr)], rr.Header().Ttl, "TTL of %s", rr)
		}
		require.Equal(t, uint32(len(diffs)+1), got[0].(*dns.SOA).Serial)
		// Added and removed count records, their TTL included.
		added, removed := 0, 0
		for k, ttl := range model {
			if old, ok := before[k]; !ok || old != ttl {
				added++
			}
		}
		for k, ttl := range before {
			if now, ok := model[k]; !ok || now != ttl {
				removed++
			}
		}
		assert.Equal(t, added, len(ch.added), "added")
		assert.Equal(t, removed, len(ch.removed), "removed")
		require.Equal(t, keysOf(base), keysOf(z.records()), "plan and preview change nothing")
		z.commit(ch)
		require.Equal(t, want, keysOf(z.records()))
		for _, rr := range z.records()[1:] {
			require.GreaterOrEqual(t, z.find(rr, nil), int32(0), "every record held is found: %s", rr)
		}
	})
}

// TestZoneCopyCompacts removes enough records for the zone held to be
// compacted and checks that it still finds and lists them right.
func TestZoneCopyCompacts(t *testing.T) {
	var rrs []dns.RR
	for i := range 5000 {
		rrs = append(rrs, cname(testZone, fmt.Sprintf("n%d", i)))
	}
	z := newZoneCopy(testSOA(testZone, 1), slices.Clone(rrs))
	ch, err := z.plan([]ixfrDiff{{from: testSOA(testZone, 1), to: testSOA(testZone, 2), del: rrs[:3000],
		add: cnames(testZone, "new1", "new2")}})
	require.NoError(t, err)
	z.commit(ch)
	assert.Len(t, z.rrs, 2002, "compacted: the removed records are gone")
	assert.Equal(t, 2002, z.live)
	got := z.records()
	assert.Len(t, got, 2003)
	assert.Equal(t, uint32(2), got[0].(*dns.SOA).Serial)
	for _, rr := range got[1:] {
		assert.GreaterOrEqual(t, z.find(rr, nil), int32(0))
	}
	for _, rr := range rrs[:3000] {
		assert.Equal(t, int32(-1), z.find(rr, nil))
	}
}

// TestZoneCopyRelease: a zone held that lets its records go before a
// whole zone replaces it still counts the records the new zone keeps
// (owner names in any case, TTLs aside, as RFC 1995 compares records),
// and plans no IXFR.
func TestZoneCopyRelease(t *testing.T) {
	var rrs []dns.RR
	for i := range 3000 {
		rrs = append(rrs, cname(testZone, fmt.Sprintf("n%d", i)))
	}
	rrs = append(rrs, &dns.TXT{Hdr: dns.RR_Header{Name: "t." + testZone, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"x"}})
	z := newZoneCopy(testSOA(testZone, 1), slices.Clone(rrs))
	// The new zone: 1000 records gone, 10 new, one kept with another TTL
	// and an upper-case owner, the TXT kept.
	next := slices.Clone(rrs[1000:])
	moved := cname(testZone, "n1500").(*dns.CNAME)
	moved.Hdr.Name, moved.Hdr.Ttl = strings.ToUpper(moved.Hdr.Name), 300
	next[500] = moved
	next = append(next, cnames(testZone, "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9")...)
	want := z.overlap(next)
	assert.Equal(t, 2001, want, "2000 CNAMEs and the TXT kept")
	z.release()
	assert.True(t, z.released)
	assert.Nil(t, z.rrs, "the records are let go")
	assert.Equal(t, 3001, z.live)
	assert.Equal(t, uint32(1), z.soa.Serial)
	assert.Equal(t, want, z.overlap(next), "the fingerprints count as the records did")
	_, err := z.plan([]ixfrDiff{{from: testSOA(testZone, 1), to: testSOA(testZone, 2), add: cnames(testZone, "b")}})
	assert.ErrorIs(t, err, errNotExact, "no IXFR applies to records let go")
	assert.Equal(t, int32(-1), z.find(rrs[0], nil))
}

// FuzzEntry checks that an entry is parsed without a panic, and that one
// accepted as a zone names a zone and a port.
func FuzzEntry(f *testing.F) {
	for _, s := range []string{"axfr://127.0.0.1/rpz.test", "axfr://[::1]:5353/Rpz.Test.", "https://x.example/l.txt#sha256=" + strings.Repeat("0", 64),
		"http://127.0.0.1:8080/l", "axfr://h/a/b", "https://%zz", "axfr://1.2.3.4:99999/z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, entry string) {
		src, err := New(entry, Options{})
		if err != nil {
			return
		}
		require.True(t, IsRemote(entry))
		require.Equal(t, entry, src.Name())
		if z, ok := src.(*Zone); ok {
			require.True(t, strings.HasSuffix(z.Origin(), "."))
			require.Equal(t, strings.ToLower(z.Origin()), z.Origin())
			require.NotEmpty(t, z.port)
		}
	})
}

// FuzzUnpackZone reads random disk copies without a panic.
func FuzzUnpackZone(f *testing.F) {
	var buf bytes.Buffer
	err := writeZone(&buf, append([]dns.RR{testSOA(testZone, 1)}, cnames(testZone, "a", "b")...))
	payload := buf.Bytes()
	require.NoError(f, err)
	f.Add(payload)
	f.Add(payload[:len(payload)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		soa, rrs, err := unpackZone(data, testZone)
		if err == nil {
			require.NotNil(t, soa)
			for _, rr := range rrs {
				require.NotNil(t, rr)
			}
		}
	})
}
