package source

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// shortSOA is testSOA with timers of seconds: refresh and retry 1 s,
// expire 2 s.
func shortSOA(serial uint32) *dns.SOA { return timedSOA(serial, 1, 1, 2) }

// timedSOA is testSOA with the timers refresh, retry and expire (seconds).
func timedSOA(serial, refresh, retry, expire uint32) *dns.SOA {
	soa := testSOA(testZone, serial)
	soa.Refresh, soa.Retry, soa.Expire = refresh, retry, expire
	return soa
}

// takenAt100 starts a fake primary of testZone (records a, b and c) at
// serial 100 with the SOA soa gives, and a Zone with opt that has taken
// it.
func takenAt100(t *testing.T, soa func(serial uint32) *dns.SOA, opt Options) (*fakePrimary, *Zone, *receiver) {
	t.Helper()
	p := startFakePrimary(t, testZone, 100, cnames(testZone, "a", "b", "c"), nil)
	p.update(func(p *fakePrimary) { p.soa = soa(100) })
	z, rec := startZone(t, p, opt)
	require.Equal(t, uint32(100), rec.waitCount(t, 1).Serial)
	return p, z, rec
}

// TestZoneSerialBackTakenAfterExpire: a primary whose serial went back
// (its zone re-created with serial 5 where 100 was held) was refused at
// every look for as long as dnsfence ran, and after a restart too (the
// disk copy held 100): the zone held was served for good, and the
// primary's changes never arrived, with no way but deleting the disk copy.
// BIND and Knot take such a primary's zone once their copy has expired.
// dnsfence now keeps the zone held for the held SOA's expire from the
// first look that found the serial older, then transfers the primary's
// zone whole; a look in between that finds the held serial again starts
// the wait afresh, and the reload guards still judge what is transferred.
func TestZoneSerialBackTakenAfterExpire(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	opt := zoneTestOptions(t, nil)
	opt.Log = zap.New(core)
	p, z, rec := takenAt100(t, shortSOA, opt)

	// Back at 5: refused, with the time it will be taken.
	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(5), cnames(testZone, "a", "d") })
	began := time.Now()
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().LastError != nil }, waitFor, tick)
	assert.ErrorContains(t, z.Status().LastError, "primary has serial 5, older than the 100 held; keeping the zone held, until ")
	assert.ErrorContains(t, z.Status().LastError, "(the held SOA's expire, 2s)")
	assert.Equal(t, 1, rec.count())

	// Back at 100 before the expire: the wait ends; at 5 again, it
	// starts afresh.
	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(100), cnames(testZone, "a", "b", "c") })
	require.Eventually(t, func() bool { return z.Status().LastError == nil }, waitFor, tick)
	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(5), cnames(testZone, "a", "d") })
	again := time.Now()
	require.Eventually(t, func() bool { return z.Status().LastError != nil }, waitFor, tick)

	c := rec.waitCount(t, 2)
	assert.GreaterOrEqual(t, time.Since(again), 2*time.Second, "taken an expire after the second look found it older")
	assert.GreaterOrEqual(t, time.Since(began), 2*time.Second)
	assert.Equal(t, uint32(5), c.Serial)
	assert.Equal(t, TransferAXFR, c.Transfer)
	assert.Equal(t, []string{"a", "d"}, owners(c))
	assert.Equal(t, 1, c.Added)
	assert.Equal(t, 2, c.Removed)
	require.Eventually(t, func() bool { return z.Status().Serial == 5 && z.Status().LastError == nil }, waitFor, tick)
	lines := logs.FilterMessage("zone primary's serial went back and stayed back for the held SOA's expire; transferring its zone whole").AllUntimed()
	require.Len(t, lines, 1)
	assert.EqualValues(t, 5, lines[0].ContextMap()["serial"])
	assert.EqualValues(t, 100, lines[0].ContextMap()["held_serial"])

	// The disk copy is the primary's zone now (written just after the
	// Status update): a restart serves 5.
	require.Eventually(t, func() bool {
		copied, err := z.readCopy()
		return err == nil && copied.Serial == 5
	}, waitFor, tick)
}

// TestZoneSerialBackStillGuarded: the zone a primary whose serial went
// back is transferred once the expire has passed goes through the reload
// guards as any other: refused (a max_shrink), the zone held is kept and
// served, and the look is a failure.
func TestZoneSerialBackStillGuarded(t *testing.T) {
	p, z, rec := takenAt100(t, shortSOA, zoneTestOptions(t, nil))
	refused := errors.New("shrank past max_shrink")
	rec.setRefuse(refused)

	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(5), cnames(testZone, "a") })
	require.Eventually(t, func() bool {
		err := z.Status().LastError
		return err != nil && errors.Is(err, refused)
	}, 4*waitFor, tick, "the whole zone is offered once the expire has passed, and refused")
	assert.Equal(t, 1, rec.count())
	assert.Equal(t, uint32(100), z.Status().Serial, "the zone held is kept")
}

// TestZoneSerialBackWaitsAgainAfterTake: once a primary whose serial went
// back had its zone taken (5 where 100 was held), a look that found its
// serial gone back again (3) took that zone at once, with no wait: the
// time of the first look that found 5 older than 100 was kept after 5
// became the zone held, and its expire had long passed. The wait counts
// from the first look that finds the serial older than the zone held,
// which is now 5: 3 is refused for the expire again.
func TestZoneSerialBackWaitsAgainAfterTake(t *testing.T) {
	p, z, rec := takenAt100(t, shortSOA, zoneTestOptions(t, nil))

	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(5), cnames(testZone, "a", "d") })
	poke(t, z)
	require.Equal(t, uint32(5), rec.waitCount(t, 2).Serial)
	require.Eventually(t, func() bool { return z.Status().Serial == 5 && z.Status().LastError == nil }, waitFor, tick)

	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(3), cnames(testZone, "e") })
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().LastError != nil || rec.count() > 2 }, waitFor, tick)
	assert.Equal(t, 2, rec.count(), "serial 3 is not taken at once")
	assert.ErrorContains(t, z.Status().LastError, "primary has serial 3, older than the 5 held; keeping the zone held, until ")
	assert.Equal(t, uint32(5), z.Status().Serial)
}

// serialBack starts a fake primary of testZone at serial 100 whose SOA
// has the timers refresh, retry and expire (seconds), has a Zone take it,
// then has the primary's serial go back to 5 and the Zone look: the look
// must keep serial 100 and say until when. It returns the Zone.
func serialBack(t *testing.T, refresh, retry, expire uint32) *Zone {
	t.Helper()
	timed := func(serial uint32) *dns.SOA { return timedSOA(serial, refresh, retry, expire) }
	p, z, rec := takenAt100(t, timed, zoneTestOptions(t, nil))

	p.update(func(p *fakePrimary) { p.soa, p.records = timed(5), cnames(testZone, "a", "d") })
	poke(t, z)
	require.Eventually(t, func() bool { return z.Status().LastError != nil || rec.count() > 1 }, waitFor, tick)
	assert.Equal(t, 1, rec.count(), "serial 5 is not taken at once")
	assert.ErrorContains(t, z.Status().LastError, "primary has serial 5, older than the 100 held; keeping the zone held, until ")
	assert.Equal(t, uint32(100), z.Status().Serial)
	return z
}

// TestZoneSerialBackWaitDoesNotOverflow: the wait for a primary whose
// serial went back is at least the held SOA's refresh plus retry; summed
// in uint32, a refresh of 4294967295 and a retry of 1 made it 0 (with an
// expire of 0), and the older zone was taken at the first look that found
// it. The sum does not wrap now.
func TestZoneSerialBackWaitDoesNotOverflow(t *testing.T) {
	serialBack(t, 4294967295, 1, 0)
}

// TestZoneSerialBackWaitClamped: a held SOA whose expire is 4294967295
// (136 years) kept a primary whose serial went back refused for as long as
// dnsfence ran, as before the wait was added, though BIND, whose clamp the
// wait follows, takes its zone after 24 weeks at most. The wait is now
// clamped as BIND clamps it: the error says 24 weeks.
func TestZoneSerialBackWaitClamped(t *testing.T) {
	z := serialBack(t, 1, 1, 4294967295)
	assert.ErrorContains(t, z.Status().LastError, "(the held SOA's expire, 4032h0m0s)")
}

// TestZoneSerialBackZeroTimersStillWait: a held SOA whose refresh, retry
// and expire are all 0 made the wait for a primary whose serial went back
// none at all: an older serial seen at a single look (a stale primary
// behind a load balancer, answering once) was taken at that look, the
// step back the serial check is there to stop. A zero refresh or retry
// now counts as the time dnsfence waits between looks for it
// (sources.refresh), as it does for its looks.
func TestZoneSerialBackZeroTimersStillWait(t *testing.T) {
	z := serialBack(t, 0, 0, 0)
	assert.ErrorContains(t, z.Status().LastError, "(the held SOA's expire, 2h0m0s)")
}

// TestZoneSerialBackWaitEndsAtANewerSerial: a look that finds the
// primary's serial newer than the zone held ends the wait for one whose
// serial went back, even when that newer zone is not taken (its transfers
// fail): a later look that finds the serial gone back again waits the
// held SOA's expire afresh, not from the first look that found it older.
func TestZoneSerialBackWaitEndsAtANewerSerial(t *testing.T) {
	p, z, rec := takenAt100(t, shortSOA, zoneTestOptions(t, nil))
	p.update(func(p *fakePrimary) { p.soa, p.records = shortSOA(5), cnames(testZone, "a", "d") })
	began := time.Now()
	poke(t, z)
	waitStatus(t, z, func(st Status) bool {
		return st.LastError != nil && strings.Contains(st.LastError.Error(), "primary has serial 5, older than the 100 held")
	})

	// Newer than the zone held, but its transfers fail.
	p.update(func(p *fakePrimary) {
		p.soa, p.ixfrRcode, p.axfrRcode = shortSOA(101), dns.RcodeRefused, dns.RcodeRefused
	})
	waitStatus(t, z, func(st Status) bool {
		return st.LastError != nil && strings.Contains(st.LastError.Error(), "AXFR: primary answered REFUSED")
	})
	time.Sleep(time.Until(began.Add(2*time.Second + 100*time.Millisecond))) // the expire since 5 was first seen

	p.update(func(p *fakePrimary) { p.soa, p.ixfrRcode, p.axfrRcode = shortSOA(5), 0, 0 })
	require.Eventually(t, func() bool {
		err := z.Status().LastError
		return rec.count() > 1 || err != nil && strings.Contains(err.Error(), "primary has serial 5, older than the 100 held")
	}, waitFor, tick)
	assert.Equal(t, 1, rec.count(), "serial 5 taken at once, on the wait begun before serial 101")
	assert.Equal(t, uint32(100), z.Status().Serial)
}
