package blocklist

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A list with no entries, whether it has no lines, only comments, or is
// no list at all (nil: a policy's list that did not load), matches no
// name and no address: it blocks nothing, and answers every lookup "no".
func TestEmptyListMatchesNothing(t *testing.T) {
	empty, err := Parse("empty.txt", []byte("# nothing yet\n"))
	require.NoError(t, err)
	require.Zero(t, empty.Len())
	for what, l := range map[string]*List{"empty": empty, "nil": nil} {
		for _, name := range []string{"tiktok.com.", "tiktok.com", ".", ""} {
			_, ok := l.Match(name)
			assert.False(t, ok, "%s list, Match(%q)", what, name)
			_, _, ok = l.MatchTrigger(name)
			assert.False(t, ok, "%s list, MatchTrigger(%q)", what, name)
			assert.False(t, l.Contains(name), "%s list, Contains(%q)", what, name)
		}
		_, _, ok := l.MatchIP(netip.MustParseAddr("192.0.2.1"))
		assert.False(t, ok, "%s list, MatchIP", what)
	}
}
