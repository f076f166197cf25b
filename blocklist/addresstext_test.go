package blocklist

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRangeSpelledAsANameIsRead: a client range written with characters no
// reader tells from its ASCII (a zero-width space or joiner, a word
// joiner, a soft hyphen, a byte-order mark or a bidirectional mark, all
// Unicode format characters; full-width digits and punctuation, as an
// input method in full-width mode types them; an ideographic full stop,
// full-width or halfwidth)
// is that range, as the same characters in a list's name are read
// (normalizeEntry, UTS #46): it was a bad line, skipped, and the devices
// of a government range copied from a web page went unblocked.
func TestRangeSpelledAsANameIsRead(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"10.1.0.0/16\u200b", "10.1.0.0/16"},
		{"\u200b10.2.0.0/16", "10.2.0.0/16"},
		{"10.3.0.\u200d0/16", "10.3.0.0/16"},
		{"10.4.0.0\u2060/16", "10.4.0.0/16"},
		{"10.5.0.0/1\u00ad6", "10.5.0.0/16"},
		{"10.6.0.0/16\ufeff", "10.6.0.0/16"},
		{"\u200e10.7.0.0/16\u200f", "10.7.0.0/16"},
		{"１０.８.０.０／１６", "10.8.0.0/16"},
		{"10．9．0．0", "10.9.0.0/32"},
		{"10。10。0。0/16", "10.10.0.0/16"},
		{"10\uff6111\uff610\uff610/16", "10.11.0.0/16"}, // the halfwidth ideographic full stop
		{"ｆｄ００：：／８", "fd00::/8"},
		{"2001:db8::\u200b/32", "2001:db8::/32"},
	} {
		t.Run(fmt.Sprintf("%+q", tc.line), func(t *testing.T) {
			rf, err := ParseRanges("networks/gov.txt", []byte("# gov\n"+tc.line+"\n"))
			require.NoError(t, err)
			require.Len(t, rf.Ranges, 1)
			assert.Equal(t, tc.want, rf.Ranges[0].Prefix.String())
			assert.Equal(t, 2, rf.Ranges[0].Line)
			p, err := ParsePrefix(tc.line)
			require.NoError(t, err, "the configuration's ranges are read alike")
			assert.Equal(t, tc.want, p.String())
		})
	}
	// What is still no range stays a bad line, named as written (the
	// zero-width space left out: the length read is /160).
	_, err := ParseRanges("networks/gov.txt", []byte("10.11.0.0/16\u200b0\n１０.１.２.３/８\n"))
	require.Error(t, err)
	assert.Equal(t, "networks/gov.txt:1: prefix length /160 is longer than an IPv4 address (at most /32): \"10.11.0.0/16\\u200b0\"\n"+
		"networks/gov.txt:2: prefix has host bits set, did you mean 10.0.0.0/8: \"１０.１.２.３/８\"", err.Error())
}

// TestHostsAddressSpelledAsANameIsRead: a hosts line whose address carries
// those characters blocks its names, as the same line with the address in
// ASCII does: it was a bad line ("unexpected text after the entry"),
// blocking nothing, while the names beside it in other lines, spelled
// alike, were read.
func TestHostsAddressSpelledAsANameIsRead(t *testing.T) {
	lines := []string{
		"０.０.０.０ tiktok.com",
		"0.0.0.0\u200b capcut.com",
		"\u200b127.0.0.1\tdouyin.com lemon8.com",
		"0\u00ad.0.0.0 pangle.io",
		"::\u200b tiktokv.com",
		"：： tiktokcdn.com",
	}
	data := ""
	for _, l := range lines {
		data += l + "\n"
	}
	l, err := Parse("lists/hosts.txt", []byte(data))
	require.NoError(t, err)
	for name, line := range map[string]int{"tiktok.com": 1, "capcut.com": 2, "douyin.com": 3, "lemon8.com": 3, "pangle.io": 4, "tiktokv.com": 5, "tiktokcdn.com": 6} {
		e, ok := l.Match("www." + name)
		if assert.True(t, ok, name) {
			assert.Equal(t, line, e.Line, name)
		}
	}
	assert.Equal(t, 7, l.Len())

	// An address alone so written is still an address alone.
	_, err = Parse("lists/hosts.txt", []byte("tiktok.com\n０.０.０.０\n"))
	assert.ErrorIs(t, err, ErrAddrOnly)
}
