package source

import (
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestZoneTransferDropsRecordsOutsideTheZone: a primary whose transfer
// holds records whose owners are not in the zone (a shared database, a
// misconfigured or hostile primary) has them dropped, in an AXFR and in an
// IXFR's additions and removals alike, and the drop is logged with their
// count: a record outside the zone is no trigger of it, and kept it would
// be read as one below the apex, or remove one.
func TestZoneTransferDropsRecordsOutsideTheZone(t *testing.T) {
	outside := func(name string) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "."}
	}
	core, logs := observer.New(zapcore.WarnLevel)
	opt := zoneTestOptions(t, nil)
	opt.Log = zap.New(core)
	records := append(cnames(testZone, "a", "b"), outside("evil.example."), outside("xrpz.test."), outside(`a\.rpz.test.`))
	p := startFakePrimary(t, testZone, 1, records, nil)
	z, rec := startZone(t, p, opt)

	c := rec.waitCount(t, 1)
	assert.Equal(t, TransferAXFR, c.Transfer)
	assert.Equal(t, []string{"a", "b"}, owners(c))
	assert.Len(t, c.Records, 3, "the SOA and the two records of the zone")
	dropped := logs.FilterMessage("zone transfer held records outside the zone; dropped").All()
	require.Len(t, dropped, 1)
	assert.Equal(t, int64(3), dropped[0].ContextMap()["dropped"])
	assert.Equal(t, z.Name(), dropped[0].ContextMap()["source"])

	// An IXFR removing and adding records outside the zone.
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.ixfr = func(have uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: have, to: 2,
				del: []dns.RR{cname(testZone, "b"), outside("evil.example.")},
				add: []dns.RR{cname(testZone, "c"), outside("other.example."), outside("xrpz.test.")}})
		}
	})
	poke(t, z)
	c = rec.waitCount(t, 2)
	assert.Equal(t, TransferIXFR, c.Transfer)
	assert.Equal(t, []string{"a", "c"}, owners(c))
	require.Len(t, c.Delta.Added, 1)
	assert.Equal(t, "c."+testZone, c.Delta.Added[0].Header().Name)
	require.Len(t, c.Delta.Removed, 1)
	assert.Equal(t, "b."+testZone, c.Delta.Removed[0].Header().Name)
	dropped = logs.FilterMessage("zone transfer held records outside the zone; dropped").All()
	require.Len(t, dropped, 2)
	assert.Equal(t, int64(3), dropped[1].ContextMap()["dropped"])
}
