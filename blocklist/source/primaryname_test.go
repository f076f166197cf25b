package source

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// namedPrimary is a Zone source's lookup of its primary's name, answering
// from addrs, or err.
type namedPrimary struct {
	mu    sync.Mutex
	addrs []netip.Addr
	err   error
	asked []string
}

func (n *namedPrimary) set(err error, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.err, n.addrs = err, nil
	for _, a := range addrs {
		n.addrs = append(n.addrs, netip.MustParseAddr(a))
	}
}

func (n *namedPrimary) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.asked = append(n.asked, host)
	return append([]netip.Addr(nil), n.addrs...), n.err
}

func (n *namedPrimary) hosts() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.asked...)
}

// TestZonePrimaryByName: a primary given by name (axfr://NAME:PORT/ZONE)
// is resolved at each look; its addresses, an IPv4-mapped one as its IPv4
// address, are where the zone is pulled from, tried in turn until one
// answers, and the addresses a NOTIFY is taken from. A name that does not
// resolve fails the look (and `check`'s Fetch) with an error naming it,
// the zone held kept; a transfer from each address failing names each.
func TestZonePrimaryByName(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
	_, port, err := net.SplitHostPort(p.addr)
	require.NoError(t, err)
	// Nothing listens on these (the fake primary is on 127.0.0.1): a
	// transfer from them is refused at once.
	dead1, dead2 := "127.0.193.1", "127.0.193.2"
	z, err := NewZone("axfr://primary.test:"+port+"/rpz.test", zoneTestOptions(t, nil))
	require.NoError(t, err)
	names := &namedPrimary{}
	z.lookup = names.lookup
	names.set(nil, dead1, "::ffff:127.0.0.1")

	t.Run("fetch tries each address", func(t *testing.T) {
		c, err := z.Fetch(t.Context())
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b"}, owners(c))
		assert.Equal(t, []string{"primary.test"}, names.hosts())
	})
	t.Run("fetch from no address that answers", func(t *testing.T) {
		names.set(nil, dead1, dead2)
		_, err := z.Fetch(t.Context())
		require.Error(t, err)
		assert.ErrorContains(t, err, z.Name())
		assert.ErrorContains(t, err, net.JoinHostPort(dead1, port)+": AXFR: ")
		assert.ErrorContains(t, err, net.JoinHostPort(dead2, port)+": AXFR: ")
	})
	t.Run("fetch with a name that does not resolve", func(t *testing.T) {
		nxdomain := errors.New("no such host")
		names.set(nxdomain)
		_, err := z.Fetch(t.Context())
		assert.ErrorIs(t, err, nxdomain)
		assert.ErrorContains(t, err, z.Name()+": resolving primary primary.test: no such host")
	})

	notifyFrom := netip.MustParseAddr("127.0.0.1")
	names.set(nil, "::ffff:127.0.0.1")
	rec := &receiver{}
	runWith(t, z, rec)
	c := rec.waitCount(t, 1)
	assert.Equal(t, []string{"a", "b"}, owners(c))
	looked := z.Status().LastSuccess
	assert.True(t, z.Notify(notifyFrom), "a NOTIFY from the address the name resolved to is the primary's")
	assert.False(t, z.Notify(netip.MustParseAddr(dead1)), "nor from one it resolves to no more")
	// The look that NOTIFY started ends (serial 1, not changed) before the
	// name and the zone change below: on a slow machine it resolved the
	// name before the change and read the SOA after it, and transferred
	// serial 2.
	waitStatus(t, z, func(st Status) bool { return st.LastSuccess.After(looked) })

	// The name stops resolving: the look fails, naming it; the zone held
	// stays.
	nxdomain := errors.New("no such host")
	names.set(nxdomain)
	p.update(func(p *fakePrimary) { p.soa = testSOA(testZone, 2) })
	require.True(t, z.Notify(notifyFrom))
	st := waitStatus(t, z, func(st Status) bool { return st.LastError != nil })
	assert.ErrorIs(t, st.LastError, nxdomain)
	assert.ErrorContains(t, st.LastError, z.Name()+": resolving primary primary.test")
	assert.Equal(t, uint32(1), st.Serial)
	assert.True(t, st.HasContent)
	assert.Equal(t, 1, rec.count())
}

// TestZoneFetchEndsWithItsContext: a transfer whose primary stops
// sending under way, its connection open, ends when the context of
// Fetch (`dnsfence check`'s) does, with the context's error: a
// deadline, not a connection cut off (the IXFR a deadline ended is not
// followed by an AXFR that would meet it again).
func TestZoneFetchEndsWithItsContext(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c"), nil)
	stalled := make(chan struct{})
	t.Cleanup(func() { close(stalled) })
	p.update(func(p *fakePrimary) { p.perMessage, p.stallAfter, p.stalled = 2, 1, stalled })
	z, err := NewZone("axfr://"+p.addr+"/rpz.test", zoneTestOptions(t, nil))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	_, err = z.Fetch(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "AXFR: context deadline exceeded")
}
