package resolver

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A list's new copy replaces the old one in every policy that uses it
// (Snapshot.withList, Policy.compile): the old copy's response-IP triggers,
// block and passthru alike, stop deciding, and a copy without any stops
// the inspection of answers. A policy copied from the snapshot before
// starts from its lists alone, not from what the old policy had compiled.
func TestNewCopyReplacesTheOldCopysAddressTriggers(t *testing.T) {
	path := writeConfig(t, rpzGuardConfig, map[string]string{
		"tiktok.txt": "tiktok.com\n",
		"cdn.rpz":    rpzHead + "32.1.0.0.10.rpz-ip CNAME .\n32.2.0.0.10.rpz-ip CNAME .\n",
		"allow.rpz":  rpzHead + "32.3.0.0.10.rpz-ip CNAME rpz-passthru.\nallowed.example CNAME rpz-passthru.\n",
		"allow.txt":  "ads.tiktok.com\n",
	}, "127.0.0.1:1")
	s := loadSnapshot(t, path, nil)
	dir := filepath.Dir(path)
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	p := s.Policies[0]
	require.True(t, p.InspectsAddresses())
	d, ok := p.DecideAddress(a("10.0.0.1"))
	require.True(t, ok && d.Blocked, "the first copy's trigger blocks")

	parse := func(file, body string) *blocklist.List {
		l, err := blocklist.ParseRPZ(filepath.Join(dir, file), []byte(rpzHead+body))
		require.NoError(t, err)
		return l
	}
	// cdn.rpz's new copy blocks 10.0.0.3 and no longer 10.0.0.1; allow.rpz's
	// no longer lets 10.0.0.3 through.
	next := s.withList(filepath.Join(dir, "cdn.rpz"), parse("cdn.rpz", "32.3.0.0.10.rpz-ip CNAME .\n"))
	require.NotNil(t, next)
	next = next.withList(filepath.Join(dir, "allow.rpz"), parse("allow.rpz", "allowed.example CNAME rpz-passthru.\n"))
	require.NotNil(t, next)
	np := next.Policies[0]
	_, ok = np.DecideAddress(a("10.0.0.1"))
	assert.False(t, ok, "a trigger the new copy no longer has decides nothing")
	d, ok = np.DecideAddress(a("10.0.0.3"))
	assert.True(t, ok && d.Blocked, "the allow list's old passthru no longer beats the block")

	// A copy with no response-IP trigger at all: nothing is inspected.
	none := next.withList(filepath.Join(dir, "cdn.rpz"), parse("cdn.rpz", "cdn.example CNAME .\n"))
	require.NotNil(t, none)
	assert.False(t, none.Policies[0].InspectsAddresses(), "no list has response-IP triggers")
	_, ok = none.Policies[0].DecideAddress(a("10.0.0.3"))
	assert.False(t, ok)

	// The snapshot copied from is unchanged.
	d, ok = p.DecideAddress(a("10.0.0.1"))
	assert.True(t, ok && d.Blocked)
}
