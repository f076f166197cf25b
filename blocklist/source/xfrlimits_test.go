package source

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneTransferMaxBytesBoundary: sources.max_bytes is the most a
// transfer may take: one of exactly that many octets of messages is
// taken, one of an octet more refused.
func TestZoneTransferMaxBytesBoundary(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c", "d", "e"), nil)
	p.perMessage = 2
	c := xfrClient{zone: testZone, timeout: 2 * time.Second, maxBytes: 1 << 20}
	res, err := c.transfer(context.Background(), p.addr, nil, nil)
	require.NoError(t, err)
	require.Len(t, res.rrs, 5)

	c.maxBytes = res.bytes
	again, err := c.transfer(context.Background(), p.addr, nil, nil)
	require.NoError(t, err, "a transfer of exactly max_bytes")
	assert.Equal(t, res.bytes, again.bytes)
	assert.Len(t, again.rrs, 5)

	c.maxBytes = res.bytes - 1
	_, err = c.transfer(context.Background(), p.addr, nil, nil)
	assert.ErrorContains(t, err, "AXFR: more than sources.max_bytes")
}
