package source

import (
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneSOATimersCappedByRefresh: the SOA's refresh timer sets the wait
// between looks, capped by sources.refresh, and a timer of 0 counts as
// sources.refresh (soaTimer): an SOA refresh of a week does not leave the
// zone unchecked past sources.refresh, and one of 0 does not have the
// source query the primary again without a pause.
func TestZoneSOATimersCappedByRefresh(t *testing.T) {
	t.Run("over sources.refresh", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
		p.update(func(p *fakePrimary) { p.soa = timedSOA(1, 604800, 604800, 2419200) })
		opt := zoneTestOptions(t, nil)
		opt.Refresh = 50 * time.Millisecond
		_, rec := startZone(t, p, opt)
		rec.waitCount(t, 1)
		require.Eventually(t, func() bool { return len(p.asked()) >= 4 }, waitFor, tick,
			"the zone is looked at again after sources.refresh; asked %v", qtypes(p.asked()...))
	})
	t.Run("zero", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
		p.update(func(p *fakePrimary) { p.soa = timedSOA(1, 0, 0, 86400) })
		z, rec := startZone(t, p, zoneTestOptions(t, nil))
		rec.waitCount(t, 1)
		waitStatus(t, z, func(st Status) bool { return !st.LastSuccess.IsZero() })
		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, qtypes(dns.TypeSOA, dns.TypeAXFR), qtypes(p.asked()...),
			"an SOA refresh of 0 waits sources.refresh (an hour), not nothing")
	})
}

// TestZoneSOATimerIsNotANotify: the end of an SOA timer is not a NOTIFY,
// and is not held to NotifyInterval: a zone whose timer is sources.refresh
// (50 ms here) is looked at every 50 ms, twenty times in a second, not
// once a second. Taken for a NOTIFY, each timer's end began the
// interval, and a short refresh was stretched to a second.
func TestZoneSOATimerIsNotANotify(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	opt := zoneTestOptions(t, nil)
	opt.Refresh = 50 * time.Millisecond
	_, rec := startZone(t, p, opt)
	rec.waitCount(t, 1)
	// Ten checks take half a second at the refresh (a few under -race on
	// a busy machine); at NotifyInterval's pace, ten seconds, twice
	// waitFor.
	require.Eventually(t, func() bool { return len(p.asked()) >= 12 }, waitFor, tick,
		"SOA checks at the refresh; asked %v", qtypes(p.asked()...))
}
