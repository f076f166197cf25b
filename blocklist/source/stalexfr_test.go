package source

import (
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneTransferBehindTheSOAIsAFailure: the primary's SOA says serial 2,
// but its transfers answer from serial 1 still (a load balancer in front
// of primaries out of step, a transfer view that lags): the zone held is
// never refreshed. The source must say so (a failure in Status, hence in
// dnsfence_source_last_success and /readyz), not report a success at
// every look while it serves serial 1.
func TestZoneTransferBehindTheSOAIsAFailure(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	first := waitStatus(t, z, func(st Status) bool { return !st.LastSuccess.IsZero() }).LastSuccess
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.ixfr = func(have uint32) []dns.RR { return []dns.RR{testSOA(testZone, 1)} } // "you are current"
	})
	time.Sleep(10 * time.Millisecond)
	poke(t, z)
	require.Eventually(t, func() bool {
		st := z.Status()
		return st.LastError != nil || st.LastSuccess.After(first)
	}, waitFor, tick)
	st := z.Status()
	assert.Equal(t, uint32(1), st.Serial)
	assert.Error(t, st.LastError, "serial 1 served while the primary's SOA says 2, and the status says all is well")
	assert.Equal(t, first, st.LastSuccess, "last success moved on without a refresh")
}
