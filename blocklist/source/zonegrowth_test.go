package source

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// manyNames returns n distinct RPZ records relative to zone.
func manyNames(zone, prefix string, n int) []dns.RR {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return cnames(zone, names...)
}

// An IXFR that adds more distinct owners than the zone copy's hash table
// has empty slots (2048 slots for a zone of one record) must still commit:
// zoneCopy.commit links every added record before it checks the load
// factor, so slot() probes a full table for ever.
func TestZoneCopyGrowsItsTableOnCommit(t *testing.T) {
	z := newZoneCopy(testSOA(testZone, 1), cnames(testZone, "a"))
	ch, err := z.plan([]ixfrDiff{{from: testSOA(testZone, 1), to: testSOA(testZone, 2), add: manyNames(testZone, "n", 3000)}})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		z.commit(ch)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("zoneCopy.commit of an IXFR adding 3000 owners did not return (hash table full, slot() spins)")
	}
	require.Equal(t, 3001, z.live)
}

// End to end: after such an IXFR is delivered, the source never takes
// another update (its Run goroutine spins in commit), so names the primary
// adds later are never blocked, and the status never records the success.
func TestZoneSourceGoesOnAfterALargeIXFR(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.ixfr = func(have uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, add: manyNames(testZone, "n", 3000)})
		}
	})
	poke(t, z)
	c := rec.waitCount(t, 2)
	require.Equal(t, TransferIXFR, c.Transfer)
	require.Len(t, c.Records, 3002)

	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 3)
		p.ixfr = func(have uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: 2, to: 3, add: cnames(testZone, "late-addition")})
		}
	})
	z.Notify(netipLoopback())
	require.Eventually(t, func() bool { return rec.count() >= 3 }, 5*time.Second, tick,
		"serial 3 never delivered: the source is stuck after the large IXFR; status serial %d", z.Status().Serial)
}

func netipLoopback() netip.Addr { return netip.MustParseAddr("127.0.0.1") }

// TestZoneCopyIndexesEveryRecordOfALargeIXFR: the records an IXFR adds
// past the point where the table grows are indexed too, each of them: an
// IXFR that later removes one finds it (not errNotExact, and an AXFR for
// nothing), and one that adds it again adds nothing (a record held twice
// would outlive its removal).
func TestZoneCopyIndexesEveryRecordOfALargeIXFR(t *testing.T) {
	z := newZoneCopy(testSOA(testZone, 1), cnames(testZone, "a"))
	added := manyNames(testZone, "n", 3000)
	ch, err := z.plan([]ixfrDiff{{from: testSOA(testZone, 1), to: testSOA(testZone, 2), add: added}})
	require.NoError(t, err)
	z.commit(ch)
	for _, rr := range added {
		require.GreaterOrEqual(t, z.find(rr, nil), int32(0), "%s not found in the zone held", rr.Header().Name)
	}
	// Another record at each owner: each owner's chain ends (one linked
	// twice, by the reindex and again, pointed to itself, and find spun).
	txts := make([]dns.RR, len(added))
	for i, rr := range added {
		txts[i] = &dns.TXT{Hdr: dns.RR_Header{Name: rr.Header().Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"x"}}
	}
	done := make(chan int)
	go func() {
		ch, err := z.plan([]ixfrDiff{{from: testSOA(testZone, 2), to: testSOA(testZone, 3), add: txts}})
		if err != nil {
			close(done)
			return
		}
		done <- len(ch.added)
	}()
	select {
	case n := <-done:
		require.Equal(t, len(txts), n)
	case <-time.After(10 * time.Second):
		t.Fatal("zoneCopy.plan did not return: an owner's chain does not end")
	}
	ch, err = z.plan([]ixfrDiff{{from: testSOA(testZone, 2), to: testSOA(testZone, 3),
		del: added[2999:], add: added[2998:2999]}})
	require.NoError(t, err, "the last record added is removed by IXFR")
	require.Empty(t, ch.added, "a record held, added again")
	z.commit(ch)
	require.Equal(t, 3000, z.live)
}
