package upstream

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHAddressNotLookedUp: a DoH upstream written with an IP address
// connects to it; Options.Resolve (the plain upstreams, which may not read
// an address as a name) is asked only for a host name.
func TestDoHAddressNotLookedUp(t *testing.T) {
	pki := newPKI(t)
	srv := startDoH(t, pki.good, answerWithA)
	opts := pki.testOptions(t)
	opts.Resolve = func(_ context.Context, host string) ([]netip.Addr, error) {
		t.Errorf("%s looked up", host)
		return nil, errors.New("no lookups here")
	}
	tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
}
