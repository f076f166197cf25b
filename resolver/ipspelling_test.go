package resolver

import (
	"net/netip"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

func spellingSOA(zone string, serial uint32) *dns.SOA {
	return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + zone, Mbox: "admin." + zone, Serial: serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
}

func spellingCNAME(owner string) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "."}
}

// Two owner names of one zone spell the same response-IP prefix
// (192.0.2.0/24 as IPv4, and as the IPv4-mapped IPv6 ::ffff:192.0.2.0/120;
// zz and 0-padded IPv6 groups alias the same way). Built whole, the second
// is a duplicate and the prefix is blocked while either record is in the
// zone. An IXFR that deletes one of them must leave the prefix blocked, as
// a whole rebuild of the same zone (restart, AXFR) does.
func TestIXFRDeletingOneSpellingKeepsTheIPTrigger(t *testing.T) {
	const zone = "rpz.test."
	const name = "axfr://127.0.0.1:53/rpz.test"
	v4 := spellingCNAME("24.0.2.0.192.rpz-ip." + zone)
	mapped := spellingCNAME("120.200.c000.ffff.zz.rpz-ip." + zone)
	addr := netip.MustParseAddr("192.0.2.7")

	c1 := source.Content{Source: name, Kind: source.KindZone, Zone: zone, Serial: 1,
		Records: []dns.RR{spellingSOA(zone, 1), v4, mapped}, Transfer: source.TransferAXFR}
	base, _, _, err := buildSourceList(name, c1, nil)
	require.NoError(t, err)
	_, _, ok := base.MatchIP(addr)
	require.True(t, ok, "serial 1 blocks 192.0.2.0/24")

	c2 := source.Content{Source: name, Kind: source.KindZone, Zone: zone, Serial: 2,
		Records: []dns.RR{spellingSOA(zone, 2), mapped}, Transfer: source.TransferIXFR, Removed: 1,
		Delta: &source.Delta{From: 1, Removed: []dns.RR{v4}}}
	whole, _, _, err := buildSourceList(name, c2, nil)
	require.NoError(t, err)
	_, _, ok = whole.MatchIP(addr)
	require.True(t, ok, "serial 2 built whole still blocks 192.0.2.0/24")

	l, _, how, err := buildSourceList(name, c2, base)
	require.NoError(t, err)
	_, _, ok = l.MatchIP(addr)
	require.True(t, ok, "serial 2 built by %s from serial 1 no longer blocks 192.0.2.0/24, though the zone still holds %s", how, mapped.Header().Name)
}
