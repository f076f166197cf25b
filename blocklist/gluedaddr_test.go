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
		{"0.0.0.0bücher.example", "0.0.0.0bücher.example", "0.0.0.0 bücher.example"},
		// Glued as read: a zero-width space or a soft hyphen between
		// them, or full-width digits (which IDNA maps away, as a hosts
		// line's address is read so spelled), made the entry
		// 0.0.0.0tiktok.com, silently.
		{"0.0.0.0\u200btiktok.com", `0.0.0.0\u200btiktok.com`, "0.0.0.0 tiktok.com"},
		{"127.0.0.1\u00adTikTok.com", `127.0.0.1\u00adTikTok.com`, "127.0.0.1 tiktok.com"},
		{"０.０.０.０tiktok.com", "０.０.０.０tiktok.com", "0.0.0.0 tiktok.com"},
		{"0.0.0.0 ０.０.０.０ｔｉｋｔｏｋ．ｃｏｍ", "０.０.０.０ｔｉｋｔｏｋ．ｃｏｍ", "0.0.0.0 tiktok.com"},
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
	// A name glued to an address that is no list entry itself is told
	// so, and no line is offered: "write "0.0.0.0 tik..tok.com"" offered
	// a line that is refused in turn.
	for _, tc := range []struct {
		line, want string
		err        error
	}{
		{"0.0.0.0tik..tok.com", `l.txt:1: an address glued to a name (a hosts line without white space after its address), and "tik..tok.com": empty label: "0.0.0.0tik..tok.com"`, ErrEmptyLabel},
		{"0.0.0.0localhost", `l.txt:1: an address glued to a name (a hosts line without white space after its address), and "localhost": a single label would block a whole top-level domain: "0.0.0.0localhost"`, ErrSingleLabel},
		// The line meant is a hosts file's standard entry, which a list
		// skips: "write "127.0.0.1 localhost.localdomain"" offered a line
		// that blocks nothing.
		{"127.0.0.1localhost.localdomain", `l.txt:1: an address glued to a name (a hosts line without white space after its address, its name localhost.localdomain a standard entry of a hosts file, which a list skips): "127.0.0.1localhost.localdomain"`, ErrGluedAddress},
		{"0.0.0.0Localhost4.Localdomain4", `l.txt:1: an address glued to a name (a hosts line without white space after its address, its name Localhost4.Localdomain4 a standard entry of a hosts file, which a list skips): "0.0.0.0Localhost4.Localdomain4"`, ErrGluedAddress},
	} {
		_, err := Parse("l.txt", []byte(tc.line+"\n"))
		require.Error(t, err, tc.line)
		assert.True(t, errors.Is(err, ErrGluedAddress), "%s: %v", tc.line, err)
		assert.True(t, errors.Is(err, tc.err), "%s: %v", tc.line, err)
		assert.Equal(t, tc.want, err.Error())
		assert.NotContains(t, err.Error(), "write", tc.line)
	}
	// What follows an address but no name could start with is no name
	// glued to it: told what it is, never to write "10.0.0.0 /8" (a
	// client range in a list) or "1.2.3.4 #c".
	for _, tc := range []struct{ line, want string }{
		{"10.0.0.0/8", "l.txt:1: invalid character in name"},
		{"1.2.3.4#c", "l.txt:1: invalid character in name"},
		{"0.0.0.0,tiktok.com", "l.txt:1: invalid character in name"},
		{"127.0.0.1@tiktok.com", "l.txt:1: a port, a path or a user is no part of a name (write the name alone: tiktok.com)"},
	} {
		_, err := Parse("l.txt", []byte(tc.line+"\n"))
		require.Error(t, err, tc.line)
		assert.False(t, errors.Is(err, ErrGluedAddress), "%s: %v", tc.line, err)
		assert.Contains(t, err.Error(), tc.want, tc.line)
	}
	// Names that merely start with digits and dots are names, and so are
	// those whose fourth label goes on with a hyphen or an underscore
	// (`1-tiktok`), which a lost space does not leave.
	for _, name := range []string{"0.0.0.0.example.org", "1.2.3.example.org", "360.cn", "1.2.3.4567.example", "10.0.0.1.nip.io", "0.0.0.0123.example",
		"192.0.2.1-tiktok.com", "1.2.3.4_x.example"} {
		l, err := Parse("lists/l.txt", []byte(name+"\n0.0.0.0 "+name+"\n"))
		require.NoError(t, err, name)
		_, ok := l.Match(name)
		assert.True(t, ok, name)
	}
}
