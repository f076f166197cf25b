package blocklist

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRPZIPTriggerConflictsSayWhichIsKept: a response-IP trigger's
// conflicts are reported as a QNAME trigger's are, each ParseError saying
// whether its record was applied (Kept): a block that replaces an
// rpz-passthru at the same prefix is, a second block action or a passthru
// after a block is not. The same prefix with the same action, here in
// another spelling, is a Duplicate of the first line.
func TestRPZIPTriggerConflictsSayWhichIsKept(t *testing.T) {
	l, err := Parse("policy.rpz", []byte(zoneHead+strings.Join([]string{
		"24.0.2.0.192.rpz-ip CNAME rpz-passthru.",      // 5
		"24.0.2.0.192.rpz-ip CNAME .",                  // 6: kept over line 5
		"32.9.2.0.192.rpz-ip CNAME .",                  // 7
		"32.9.2.0.192.rpz-ip CNAME rpz-drop.",          // 8: skipped, the first block kept
		"32.8.2.0.192.rpz-ip CNAME *.",                 // 9
		"32.8.2.0.192.rpz-ip CNAME rpz-passthru.",      // 10: skipped, the block kept
		"128.1.zz.db8.2001.rpz-ip CNAME .",             // 11
		"128.1.0.0.0.0.0.db8.2001.rpz-ip CNAME .",      // 12: a duplicate of line 11
		"a.example CNAME rpz-passthru.",                // 13
		"a.example CNAME .",                            // 14: kept over line 13, as line 6
		"b.example CNAME .",                            // 15
		"b.example CNAME rpz-drop.",                    // 16: skipped, as line 8
		"128.1.zz.db8.2001.rpz-ip CNAME rpz-passthru.", // 17: skipped, as line 10
	}, "\n")+"\n"))
	require.Error(t, err)
	kept := map[int]bool{}
	for _, e := range leaves(err) {
		var pe *ParseError
		require.True(t, errors.As(e, &pe), "%v", e)
		require.ErrorIs(t, pe, ErrConflict)
		kept[pe.Line] = pe.Kept
	}
	assert.Equal(t, map[int]bool{6: true, 8: false, 10: false, 14: true, 16: false, 17: false}, kept)
	assert.Equal(t, []Duplicate{{Name: "2001:db8::1/128", Line: 12, FirstLine: 11}}, l.Duplicates())
	for addr, want := range map[string]Action{"192.0.2.1": ActionNXDOMAIN, "192.0.2.9": ActionNXDOMAIN, "192.0.2.8": ActionNODATA, "2001:db8::1": ActionNXDOMAIN} {
		_, tr, ok := l.MatchIP(netip.MustParseAddr(addr))
		require.True(t, ok, addr)
		assert.Equal(t, want, tr.Action, addr)
	}
}

// TestEntryPrefixOfNoResponseIPTrigger: Prefix is false, and does not
// panic, for an entry of no list (the zero Entry of a decision that
// matched nothing), an entry of a plain list and a QNAME trigger of an
// RPZ list that has response-IP triggers too.
func TestEntryPrefixOfNoResponseIPTrigger(t *testing.T) {
	plain, err := Parse("names.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	pe, ok := plain.Match("tiktok.com.")
	require.True(t, ok)
	l := zoneList(t, "24.0.2.0.192.rpz-ip CNAME .", "tiktok.com CNAME .")
	ze, ok := l.Match("tiktok.com.")
	require.True(t, ok)
	for name, e := range map[string]Entry{"zero": {}, "plain": pe, "QNAME trigger": ze} {
		var p netip.Prefix
		require.NotPanics(t, func() { p, ok = e.Prefix() }, name)
		assert.False(t, ok, name)
		assert.False(t, p.IsValid(), name)
	}
}

// TestUpdateRemovingThePrefixHoldingIPv4: once a transfer removes the
// only IPv6 prefix holding all of ::ffff:0:0/96 (`80.zz.rpz-ip`, which
// holds every IPv4 address to RPZ), an IPv4 address that no IPv4 prefix
// holds is matched by nothing, as in the list built from the zone without
// it; the IPv4 prefix still matches.
func TestUpdateRemovingThePrefixHoldingIPv4(t *testing.T) {
	base := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"80.zz.rpz-ip.rpz.example.gov. 60 CNAME .",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME rpz-passthru.",
	)
	old := transferList(t, base)
	_, _, ok := old.MatchIP(netip.MustParseAddr("198.51.100.1"))
	require.True(t, ok, "::/80 holds every IPv4 address")
	l, err := old.Update([32]byte{2}, 2, feed(base[1:2]), feed(nil))
	require.NoError(t, err)
	want := transferList(t, []dns.RR{base[0], base[2]})
	addrs := []string{"198.51.100.1", "192.0.2.1", "::1", "::ffff:198.51.100.1"}
	assert.Equal(t, verdicts(want, nil, addrs), verdicts(l, nil, addrs))
	e, tr, ok := l.MatchIP(netip.MustParseAddr("198.51.100.1"))
	assert.False(t, ok, "matched %+v %+v", e, tr)
	_, tr, ok = l.MatchIP(netip.MustParseAddr("192.0.2.1"))
	assert.True(t, ok)
	assert.Equal(t, ActionPassthru, tr.Action)
	// Nothing left holds ::ffff:0:0/96: an IPv4 miss costs one lookup
	// again, as in the list transferred without it.
	assert.False(t, l.ipsMapped)
	assert.Equal(t, want.ipsMapped, l.ipsMapped)
	assert.True(t, old.ipsMapped, "the list the update started from is unchanged")

	// Removing one of two such prefixes leaves the flag set.
	two := rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"80.zz.rpz-ip.rpz.example.gov. 60 CNAME .",
		"64.zz.rpz-ip.rpz.example.gov. 60 CNAME .",
	)
	l, err = transferList(t, two).Update([32]byte{3}, 2, feed(two[1:2]), feed(nil))
	require.NoError(t, err)
	assert.True(t, l.ipsMapped)
	_, _, ok = l.MatchIP(netip.MustParseAddr("198.51.100.1"))
	assert.True(t, ok, "::/64 holds every IPv4 address")
}
