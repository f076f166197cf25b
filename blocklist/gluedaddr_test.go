package blocklist

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAddressGluedToANameIsReported: a hosts line that lost the space after
// its address (`0.0.0.0stratum.wemineftc.com`, as hundreds of lines of a
// threat list once were, hagezi/dns-blocklists issue 1508) is a bad line
// naming the line to write: it was read silently as the name
// 0.0.0.0stratum.wemineftc.com, which nobody asks for, and the name meant
// was blocked nowhere.
func TestAddressGluedToANameIsReported(t *testing.T) {
	for _, tc := range []struct{ line, token, write string }{
		{"0.0.0.0stratum.wemineftc.com", "0.0.0.0stratum.wemineftc.com", "0.0.0.0 stratum.wemineftc.com"},
		{"127.0.0.1Tracker.Example.net", "127.0.0.1Tracker.Example.net", "127.0.0.1 Tracker.Example.net"},
		{"0.0.0.0tiktok.com.", "0.0.0.0tiktok.com.", "0.0.0.0 tiktok.com."},
		{"||0.0.0.0tiktok.com^", "||0.0.0.0tiktok.com^", "0.0.0.0 tiktok.com"},
		{"*.0.0.0.0tiktok.com", "*.0.0.0.0tiktok.com", "0.0.0.0 tiktok.com"},
		{"0.0.0.0 0.0.0.0tiktok.com", "0.0.0.0tiktok.com", "0.0.0.0 tiktok.com"},
		{"192.0.2.1-tiktok.com", "192.0.2.1-tiktok.com", "192.0.2.1 -tiktok.com"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			l, err := Parse("lists/threats.txt", []byte("capcut.com\n"+tc.line+"\n"))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrGluedAddress), "%v", err)
			assert.Equal(t, `lists/threats.txt:2: an address glued to a name (a hosts line without white space after its address; write "`+
				tc.write+`"): "`+tc.token+`"`, err.Error())
			assert.Equal(t, 1, l.Len(), "only capcut.com")
		})
	}
	// Names that merely start with digits and dots are names.
	for _, name := range []string{"0.0.0.0.example.org", "1.2.3.example.org", "360.cn", "1.2.3.4567.example", "10.0.0.1.nip.io", "0.0.0.0123.example"} {
		l, err := Parse("lists/l.txt", []byte(name+"\n0.0.0.0 "+name+"\n"))
		require.NoError(t, err, name)
		_, ok := l.Match(name)
		assert.True(t, ok, name)
	}
}
