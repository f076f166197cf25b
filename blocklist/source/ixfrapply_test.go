package source

import (
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
)

// TestZoneIXFRAddsRecordsOfOneOwner: an IXFR that adds two records of one
// owner (RPZ local data: an A and an AAAA) adds both; a record added is
// "already there" only when it is the same record (RFC 1995: owner, type,
// class and RDATA), not another of its owner.
func TestZoneIXFRAddsRecordsOfOneOwner(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	a := testnet.MustRR("x.%s 60 IN A 192.0.2.1", testZone)
	aaaa := testnet.MustRR("x.%s 60 IN AAAA 2001:db8::1", testZone)
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.ixfr = func(uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, add: []dns.RR{a, aaaa}})
		}
	})
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, TransferIXFR, c.Transfer)
	assert.Equal(t, 2, c.Added)
	assert.Equal(t, []string{"A", "AAAA"}, rrtypesOf(c, "x."+testZone))
}

// TestZoneIXFRAddOfTheFirstRecordHeld: an IXFR that adds a record the zone
// holds already adds nothing (a record is in a zone once), whatever its
// place in the zone held, the first included; a later IXFR that removes
// it then removes it from the zone, not one of two copies.
func TestZoneIXFRAddOfTheFirstRecordHeld(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.ixfr = func(uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, add: cnames(testZone, "a", "c")})
		}
	})
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, TransferIXFR, c.Transfer)
	assert.Equal(t, 1, c.Added)
	assert.Equal(t, []string{"a", "b", "c"}, owners(c))

	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 3)
		p.ixfr = func(uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: 2, to: 3, del: cnames(testZone, "a")})
		}
	})
	poke(t, z)
	c = rec.waitCount(t, 3)
	assert.Equal(t, TransferIXFR, c.Transfer)
	assert.Equal(t, []string{"b", "c"}, owners(c), "a, removed by the IXFR, is still in the zone")
}

// rrtypesOf returns the types of the records of c at owner, in order.
func rrtypesOf(c Content, owner string) []string {
	var out []string
	for _, rr := range c.Records {
		if rr.Header().Name == owner {
			out = append(out, dns.TypeToString[rr.Header().Rrtype])
		}
	}
	return out
}
