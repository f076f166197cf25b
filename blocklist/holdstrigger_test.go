package blocklist

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHoldsTriggerOfNothing: HoldsTrigger of an RPZ list says false for
// an empty name, for any name of a list with no trigger, for a prefix of
// a list with no response-IP trigger, and for a name with a slash that is
// no prefix; the reload's count of triggers added and removed
// (resolver's diff of two copies of a zone) asks it of every trigger.
func TestHoldsTriggerOfNothing(t *testing.T) {
	names := transferList(t, rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"tiktok.com.rpz.example.gov. 60 CNAME ."))
	ips := transferList(t, rrs(t,
		"rpz.example.gov. 60 SOA a. b. 1 2 3 4 5",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME ."))
	empty := transferList(t, rrs(t, "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5"))
	require.True(t, names.IsRPZ())
	require.True(t, empty.IsRPZ())
	nx := Trigger{Action: ActionNXDOMAIN}
	assert.True(t, names.HoldsTrigger("tiktok.com", nx))
	assert.True(t, ips.HoldsTrigger("192.0.2.0/24", nx))

	assert.False(t, names.HoldsTrigger("", nx), "an empty name")
	assert.False(t, empty.HoldsTrigger("tiktok.com", nx), "a list without triggers")
	assert.False(t, empty.HoldsTrigger("", nx), "a list without triggers, an empty name")
	assert.NotPanics(t, func() {
		assert.False(t, names.HoldsTrigger("192.0.2.0/24", nx), "a prefix of a list without response-IP triggers")
	})
	assert.False(t, ips.HoldsTrigger("192.0.2.0/33", nx), "no prefix")
	assert.False(t, ips.HoldsTrigger("tiktok.com/24", nx), "no prefix")
}
