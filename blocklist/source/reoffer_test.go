package source

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneRefusedCopyOfferedAgain: a newer zone (serial 2) is refused by
// the receiver; the primary goes back to serial 1, the zone held: it is
// offered again once, with the records of serial 1, and later checks
// deliver nothing. Refused as an IXFR, the zone held kept its records and
// they are offered, with no transfer; refused as a whole transfer (the
// IXFR answered AXFR-style, or the AXFR that follows an IXFR refused), the
// records were let go first, and serial 1 is transferred whole again.
func TestZoneRefusedCopyOfferedAgain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ixfr      bool
		ixfrRcode int // of the IXFR for serial 2; an AXFR follows
		transfer  string
		transfers map[string]uint64
	}{
		{name: "whole transfer refused", transfer: TransferAXFR, transfers: map[string]uint64{TransferAXFR: 2}},
		{name: "AXFR after an IXFR refused, refused", ixfrRcode: dns.RcodeRefused, transfer: TransferAXFR,
			transfers: map[string]uint64{TransferAXFR: 2}},
		{name: "IXFR refused", ixfr: true, transfer: TransferHeld, transfers: map[string]uint64{TransferAXFR: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
			z, rec := startZone(t, p, zoneTestOptions(t, nil))
			rec.waitCount(t, 1)
			since := waitStatus(t, z, func(st Status) bool { return st.HasContent }).VersionSince

			rec.setRefuse(errors.New("held: the zone shrank"))
			p.update(func(p *fakePrimary) {
				p.soa, p.records, p.ixfrRcode = testSOA(testZone, 2), cnames(testZone, "a"), tc.ixfrRcode
				if tc.ixfr {
					p.ixfr = func(uint32) []dns.RR {
						return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, del: cnames(testZone, "b")})
					}
				}
			})
			poke(t, z)
			require.Eventually(t, func() bool { return z.Status().Failures >= 1 }, waitFor, tick)
			assert.Equal(t, 1, rec.count())

			rec.setRefuse(nil)
			p.update(func(p *fakePrimary) {
				p.soa, p.records, p.ixfr, p.ixfrRcode = testSOA(testZone, 1), cnames(testZone, "a", "b"), nil, 0
			})
			poke(t, z)
			c := rec.waitCount(t, 2)
			assert.Equal(t, uint32(1), c.Serial)
			assert.Equal(t, tc.transfer, c.Transfer)
			assert.Equal(t, []string{"a", "b"}, owners(c))
			for range 3 {
				poke(t, z)
			}
			time.Sleep(300 * time.Millisecond)
			assert.Equal(t, 2, rec.count(), "offered once")
			st := waitStatus(t, z, func(st Status) bool { return st.LastError == nil })
			assert.Equal(t, uint32(1), st.Serial)
			assert.Equal(t, tc.transfers, st.Transfers, "a transfer is counted only when one was made")
			assert.True(t, st.VersionSince.Equal(since), "serial 1 was first fetched at %v, not %v", since, st.VersionSince)
			assert.True(t, c.Fetched.Equal(since), "the copy offered again was fetched at %v, not %v", since, c.Fetched)
		})
	}
}

// TestZoneReofferOlderTransferRefused: a whole copy (serial 6) is refused
// by the receiver, so the records of serial 5 are let go; the primary's
// SOA goes back to 5, the zone held, and the zone is transferred whole
// again to offer it, but the transfer answers with serial 4 (a transfer
// view out of step with the SOA query's). Serial 4 is older than the
// zone held: it is not delivered, and the look is a failure.
func TestZoneReofferOlderTransferRefused(t *testing.T) {
	p, z, rec := refusedOnce(t, 5)
	p.update(func(p *fakePrimary) {
		p.soa, p.xfrSOA, p.records = testSOA(testZone, 5), testSOA(testZone, 4), cnames(testZone, "a")
	})
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().Failures >= 2 || rec.count() >= 2 }, waitFor, tick)
	st := z.Status()
	assert.ErrorContains(t, st.LastError, "older than the 5 held")
	assert.Equal(t, 1, rec.count(), "serial 4 is not delivered over serial 5")
	assert.Equal(t, uint32(5), st.Serial)

	// The transfer view catches up: the zone held is offered again.
	p.update(func(p *fakePrimary) { p.xfrSOA, p.records = nil, cnames(testZone, "a", "b") })
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, uint32(5), c.Serial)
	assert.Equal(t, []string{"a", "b"}, owners(c))
}

// TestZoneTransferNotNewerRefused: the primary's SOA says serial 6 over
// the 5 held, but its transfer answers with serial 5, then 4 (a transfer
// view out of step with the SOA query's): neither is delivered over the
// zone held, and the look is a failure each time.
func TestZoneTransferNotNewerRefused(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a", "b"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	for i, serial := range []uint32{5, 4} {
		p.update(func(p *fakePrimary) {
			p.soa, p.xfrSOA, p.records = testSOA(testZone, 6), testSOA(testZone, serial), cnames(testZone, "a")
		})
		poke(t, z)
		require.Eventually(t, func() bool { return z.Status().Failures >= uint64(i+1) || rec.count() >= 2 }, waitFor, tick)
		st := z.Status()
		assert.ErrorContains(t, st.LastError, "not newer than the 5 held")
		assert.Equal(t, 1, rec.count(), "serial %d is not delivered over serial 5", serial)
		assert.Equal(t, uint32(5), st.Serial)
	}
}

// TestZoneNewSerialNeverBesideTheErrorItEnded: after a failed look (the
// transfer older than the primary's SOA, as a primary's old server process
// serves one while its new one answers the SOA query), the zone that then
// arrives is recorded in the same Status update as the success that clears
// the failure: a reader polling Status (the /readyz note, the metrics)
// never sees the new serial beside the old error. It saw them together
// while the copy was written to disk, between the two updates (an NSD
// interop run under load read the new serial with the error still set).
func TestZoneNewSerialNeverBesideTheErrorItEnded(t *testing.T) {
	names := make([]string, 5000)
	for i := range names {
		names[i] = fmt.Sprintf("name%d", i)
	}
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)

	p.update(func(p *fakePrimary) {
		p.soa, p.xfrSOA, p.records = testSOA(testZone, 6), testSOA(testZone, 5), cnames(testZone, names...)
	})
	poke(t, z)
	st := waitStatus(t, z, func(st Status) bool { return st.LastError != nil })
	require.Equal(t, uint32(5), st.Serial)

	p.update(func(p *fakePrimary) { p.xfrSOA = nil })
	poke(t, z)
	deadline := time.Now().Add(waitFor)
	for st = z.Status(); st.Serial != 6; st = z.Status() {
		require.True(t, time.Now().Before(deadline), "serial 6 never arrived: %+v", st)
	}
	assert.NoError(t, st.LastError, "serial 6 recorded beside the error of the look before")
}

// TestZoneDeliveredAfterARefusalNotOfferedAgain: a copy refused by the
// receiver (serial 2), then a newer one taken (serial 3): the refusal is
// over, and a later look that finds serial 3 still delivers nothing (the
// zone held is offered again only while the copy delivered last is a
// refused one).
func TestZoneDeliveredAfterARefusalNotOfferedAgain(t *testing.T) {
	p, z, rec := refusedOnce(t, 1)
	p.update(func(p *fakePrimary) { p.soa, p.records = testSOA(testZone, 3), cnames(testZone, "a", "c") })
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, uint32(3), c.Serial)
	last := waitStatus(t, z, func(st Status) bool { return st.LastError == nil && st.Serial == 3 }).LastSuccess

	poke(t, z)
	waitStatus(t, z, func(st Status) bool { return st.LastSuccess.After(last) })
	assert.Equal(t, 2, rec.count(), "serial 3, held and unchanged, delivered again")
}

// TestZoneReofferTransferFailed: a whole copy (serial 6) is refused by
// the receiver, so the records of serial 5 are let go; the primary's SOA
// goes back to 5, the zone held, and the transfer that would offer it
// again fails (REFUSED): the look is a failure naming it, nothing is
// delivered, and the zone held stays serial 5; once the primary
// transfers again, serial 5 is offered.
func TestZoneReofferTransferFailed(t *testing.T) {
	p, z, rec := refusedOnce(t, 5)
	p.update(func(p *fakePrimary) {
		p.soa, p.records, p.axfrRcode = testSOA(testZone, 5), cnames(testZone, "a", "b"), dns.RcodeRefused
	})
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().Failures >= 2 || rec.count() >= 2 }, waitFor, tick)
	st := z.Status()
	assert.ErrorContains(t, st.LastError, "AXFR: primary answered REFUSED")
	assert.Equal(t, 1, rec.count(), "nothing is offered without its records")
	assert.Equal(t, uint32(5), st.Serial)

	p.update(func(p *fakePrimary) { p.axfrRcode = 0 })
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, uint32(5), c.Serial)
	assert.Equal(t, TransferAXFR, c.Transfer)
	assert.Equal(t, []string{"a", "b"}, owners(c))
}

// refusedOnce starts a zone source whose primary has serial held (owners
// a and b), taken by the receiver; the receiver then refuses the whole
// copy of serial held+1 (owner a alone), so that the records of the zone
// held are let go, and takes copies again from then on.
func refusedOnce(t *testing.T, held uint32) (*fakePrimary, *Zone, *receiver) {
	t.Helper()
	p := startFakePrimary(t, testZone, held, cnames(testZone, "a", "b"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)

	rec.setRefuse(errors.New("held: the zone shrank"))
	p.update(func(p *fakePrimary) { p.soa, p.records = testSOA(testZone, held+1), cnames(testZone, "a") })
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().Failures >= 1 }, waitFor, tick)

	rec.setRefuse(nil)
	return p, z, rec
}
