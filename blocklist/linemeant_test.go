package blocklist

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lineMeantCases are the bad lines whose message offers the line meant,
// one of each kind, with the line offered.
var lineMeantCases = []struct {
	name, line string
	err        error
	meant      string
}{
	{"glued address", "0.0.0.0tiktok.com", ErrGluedAddress, "0.0.0.0 tiktok.com"},
	{"glued address in a hosts line", "0.0.0.0 1.2.3.4TikTok.com", ErrGluedAddress, "1.2.3.4 TikTok.com"},
	{"path", "tiktok.com/@user", ErrHostPart, "tiktok.com"},
	{"port in adblock", "||TikTok.com:443^", ErrHostPart, "tiktok.com"},
	{"address alone", "10.0.0.1", ErrAddrOnly, "32.1.0.0.10.rpz-ip CNAME ."},
	{"IPv6 address in adblock", "||2001:db8::1^", ErrAddrOnly, "128.1.zz.db8.2001.rpz-ip CNAME ."},
	{"URL", "https://www.tiktok.com/@x", ErrURL, "www.tiktok.com"},
	{"glued comment", "TikTok.com#ads", ErrGluedComment, "tiktok.com"},
	{"dnsmasq", "address=/tiktok.com/0.0.0.0", ErrDirective, "tiktok.com"},
	{"unbound", `local-zone: "tiktok.com" always_nxdomain`, ErrDirective, "tiktok.com"},
	{"exception", "@@||tiktok.com^", ErrException, "tiktok.com"},
	// Two faults, each fix certain: the hint of the one, read as the
	// other is fixed.
	{"exception with a port", "@@||TikTok.com:443^", ErrException, "tiktok.com"},
	{"exception with a path", "@@tiktok.com/@user", ErrException, "tiktok.com"},
	{"exception with a glued comment", "@@||TikTok.com^#ads", ErrException, "tiktok.com"},
	{"glued address and comment", "0.0.0.0TikTok.com#ads", ErrGluedAddress, "0.0.0.0 TikTok.com"},
	{"brackets", `["tiktok.com", "x.com"]`, ErrBracketLine, "tiktok.com"},
}

// TestLineMeant: each bad line that offers a line is a LineMeantError
// naming it, and the line offered is taken and blocks what it says
// (checkMeant).
func TestLineMeant(t *testing.T) {
	for _, tc := range lineMeantCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.txt", []byte(tc.line+"\n"))
			pes := parseErrors(err)
			require.Len(t, pes, 1, "%v", err)
			e, ok := errors.AsType[*LineMeantError](pes[0].Err)
			require.True(t, ok, "%v", err)
			assert.ErrorIs(t, e, tc.err)
			assert.Equal(t, tc.meant, e.Meant)
			checkMeant(t, pes[0], e)
		})
	}
}
