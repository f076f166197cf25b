package resolver

import (
	"net/netip"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// Two owner names of one zone spell the same response-IP prefix with
// different actions: rpz-passthru. first, then CNAME . (a conflict: built
// whole, the first is kept and the second reported). An IXFR that deletes
// the passthru spelling leaves the NXDOMAIN one alone in the zone: built
// whole, the prefix is blocked. The IXFR's change applied to the list
// held must not leave it unblocked: the delta does not fit the list
// exactly (the zone holds another record for the prefix), so the list
// must be built whole.
func TestIXFRDeletingTheWinnerOfAConflictingSpelling(t *testing.T) {
	const zone = "rpz.test."
	const name = "axfr://127.0.0.1:53/rpz.test"
	pass := &dns.CNAME{Hdr: dns.RR_Header{Name: "24.0.2.0.192.rpz-ip." + zone, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60},
		Target: "rpz-passthru."}
	block := spellingCNAME("120.200.c000.ffff.zz.rpz-ip." + zone)
	addr := netip.MustParseAddr("192.0.2.7")

	c1 := source.Content{Source: name, Kind: source.KindZone, Zone: zone, Serial: 1,
		Records: []dns.RR{spellingSOA(zone, 1), pass, block}, Transfer: source.TransferAXFR}
	base, _, _, err := buildSourceList(name, c1, nil)
	require.NoError(t, err)
	_, tr, ok := base.MatchIP(addr)
	a := tr.Action
	require.True(t, ok)
	require.Equal(t, blocklist.ActionPassthru, a, "serial 1: the first spelling, passthru, wins")

	c2 := source.Content{Source: name, Kind: source.KindZone, Zone: zone, Serial: 2,
		Records: []dns.RR{spellingSOA(zone, 2), block}, Transfer: source.TransferIXFR, Removed: 1,
		Delta: &source.Delta{From: 1, Removed: []dns.RR{pass}}}
	whole, _, _, err := buildSourceList(name, c2, nil)
	require.NoError(t, err)
	_, tr, ok = whole.MatchIP(addr)
	a = tr.Action
	require.True(t, ok, "serial 2 built whole blocks 192.0.2.0/24")
	require.Equal(t, blocklist.ActionNXDOMAIN, a)

	l, _, how, err := buildSourceList(name, c2, base)
	require.NoError(t, err)
	_, tr, ok = l.MatchIP(addr)
	a = tr.Action
	require.True(t, ok && a == blocklist.ActionNXDOMAIN,
		"serial 2 built by %s from serial 1 does not block 192.0.2.0/24 (match %t, action %v), though the zone holds %s", how, ok, a, block.Header().Name)
}
