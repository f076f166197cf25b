package blocklist

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHostMeant: a name pasted with the parts of a URL or an address around
// it is the name without them, as written; text with none of those parts,
// or none that is a name once they are dropped, offers none.
func TestHostMeant(t *testing.T) {
	for _, tc := range []struct {
		s, host string
		parts   bool
	}{
		{"www.tiktok.com", "", false},
		{"tiktok", "", false},
		{"www.tiktok.com:443", "www.tiktok.com", true},
		{"www.tiktok.com:", "www.tiktok.com", true},
		{"www.TikTok.com/@user", "www.TikTok.com", true},
		{"user@tiktok.com", "tiktok.com", true},
		{"user@www.tiktok.com:8080/x?y#z", "www.tiktok.com", true},
		{"tiktok.com:443/path", "tiktok.com", true},
		{"tiktok.com?x=1", "tiktok.com", true},
		{"tiktok.com#frag", "tiktok.com", true},
		{" tiktok.com ", "tiktok.com", true},
		{"https://www.tiktok.com/@user", "www.tiktok.com", true},
		{"http://user@www.TikTok.com:8080/x?y#z", "www.TikTok.com", true},
		{"https://", "", true},
		{"https:///path", "", true},
		{"[2001:db8::1]:443", "", true},
		{"www tiktok com", "", true},
		{"full:tiktok.com", "", true}, // v2fly's prefix, not a port
		{"tiktok.com:https", "", true},
		{"tik..tok.com:443", "", true},
		{"localhost:8080", "", true},
		{"10.0.0.1:53", "", true},
		{"https://192.0.2.1/x", "", true},
		{"tiktok.:443", "", true},
		// RFC 2317's classless reverse delegation writes a slash in a label.
		{"0/26.2.0.192.in-addr.arpa", "", true},
		{"www.tiktok.com.:443", "www.tiktok.com.", true},
	} {
		host, parts := HostMeant(tc.s)
		assert.Equal(t, tc.host, host, "%q", tc.s)
		assert.Equal(t, tc.parts, parts, "%q", tc.s)
	}
}

// TestListLineWithHostParts: a list line, a hosts line's name or an
// Adblock rule written with a port, a path, a query or a user is a bad line
// that names the entry to write, where it said only "invalid character in
// name"; a line whose name is no entry once they are dropped says what it
// said.
func TestListLineWithHostParts(t *testing.T) {
	for _, tc := range []struct{ line, token, write string }{
		{"www.tiktok.com:443", "www.tiktok.com:443", "www.tiktok.com"},
		{"WWW.TikTok.com:", "WWW.TikTok.com:", "www.tiktok.com"},
		{"tiktok.com/@user", "tiktok.com/@user", "tiktok.com"},
		{"tiktok.com?x=1", "tiktok.com?x=1", "tiktok.com"},
		{"user@tiktok.com", "user@tiktok.com", "tiktok.com"},
		{"*.tiktok.com:443", "*.tiktok.com:443", "tiktok.com"},
		{"||tiktok.com:443^", "||tiktok.com:443^", "tiktok.com"},
		{"0.0.0.0 tiktok.com:443", "tiktok.com:443", "tiktok.com"},
		{"0.0.0.0 capcut.com douyin.com/x", "douyin.com/x", "douyin.com"},
		{"bücher.example:443", "bücher.example:443", "xn--bcher-kva.example"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			l, err := Parse("lists/x.txt", []byte("lemon8-app.com\n"+tc.line+"\n"))
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrHostPart), "%v", err)
			assert.Equal(t, `lists/x.txt:2: a port, a path or a user is no part of a name (write the name alone: `+tc.write+`): "`+tc.token+`"`, err.Error())
			_, blocked := l.Match(tc.write)
			assert.False(t, blocked, "the line blocks nothing")
		})
	}
	for _, tc := range []struct {
		line string
		err  error
	}{
		{"tiktok:443", ErrBadChar}, // tiktok alone would be ErrSingleLabel
		{"tik..tok.com:443", ErrEmptyLabel},
		{"[2001:db8::1]:443", ErrBadChar},
		{"full:tiktok.com", ErrBadChar},
	} {
		_, err := Parse("lists/x.txt", []byte(tc.line+"\n"))
		require.Error(t, err, tc.line)
		assert.True(t, errors.Is(err, tc.err), "%s: %v", tc.line, err)
		assert.False(t, errors.Is(err, ErrHostPart), "%s: %v", tc.line, err)
		assert.NotContains(t, err.Error(), "write", tc.line)
	}
}
