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
// different actions: rpz-passthru. and CNAME . (a conflict: built whole,
// the block is kept whichever comes first, and the other reported). An
// IXFR that deletes one spelling leaves the other alone in the zone, which
// built whole then decides: deleting the passthru leaves the prefix
// blocked, deleting the block leaves it passed. The IXFR's change applied
// to the list held must give what the zone built whole gives: the delta
// does not fit the list exactly (the zone holds another record for the
// prefix), so the list must be built whole.
func TestIXFRDeletingASpellingOfAConflict(t *testing.T) {
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
	require.True(t, ok)
	require.Equal(t, blocklist.ActionNXDOMAIN, tr.Action, "serial 1: the block wins, though the passthru comes first")

	for _, tc := range []struct {
		deleted, kept dns.RR
		want          blocklist.Action
	}{
		{deleted: pass, kept: block, want: blocklist.ActionNXDOMAIN},
		{deleted: block, kept: pass, want: blocklist.ActionPassthru},
	} {
		c2 := source.Content{Source: name, Kind: source.KindZone, Zone: zone, Serial: 2,
			Records: []dns.RR{spellingSOA(zone, 2), tc.kept}, Transfer: source.TransferIXFR, Removed: 1,
			Delta: &source.Delta{From: 1, Removed: []dns.RR{tc.deleted}}}
		whole, _, _, err := buildSourceList(name, c2, nil)
		require.NoError(t, err)
		_, tr, ok = whole.MatchIP(addr)
		require.True(t, ok, "serial 2 built whole matches 192.0.2.0/24")
		require.Equal(t, tc.want, tr.Action)

		l, _, how, err := buildSourceList(name, c2, base)
		require.NoError(t, err)
		_, tr, ok = l.MatchIP(addr)
		require.True(t, ok && tr.Action == tc.want,
			"serial 2 built by %s from serial 1 (match %t, action %v), though the zone holds %s alone: want %v", how, ok, tr.Action, tc.kept.Header().Name, tc.want)
	}
}
