package blocklist

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestIsDomainName: a name a query can carry has labels of 1 to 63 octets
// and 255 octets in all in wire form (RFC 1035 §3.1), the root label
// counted whether or not the name ends in a dot, an escape counted as the
// one octet it stands for. dns.IsDomainName takes names of 256 and 257
// octets (miekg/dns issue 1552); explain, DDR's target name and a zone
// source's zone and key names took them with it.
func TestIsDomainName(t *testing.T) {
	// labels of 63 octets and one of n, with their dots: the wire form is
	// the text's length plus 2 (the first length octet and the root).
	name := func(n int) string {
		return strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", n)
	}
	for _, c := range []struct {
		name string
		want bool
	}{
		{name(61), true},        // 253 characters: 255 octets
		{name(61) + ".", true},  // the same, fully qualified
		{name(62), false},       // 256 octets
		{name(62) + ".", false}, // the same, fully qualified
		{name(63), false},       // 257 octets
		{strings.Repeat("a", 63) + ".tiktok.com", true},
		{strings.Repeat("a", 64) + ".tiktok.com", false},
		{"www..tiktok.com", false},
		{`www.\116iktok.com`, true},
		{strings.Repeat(`\097`, 63) + ".tiktok.com", true}, // an escape is one octet
		{".", true},
		{"", false},
		// \DDD is three digits of value 0 to 255 (RFC 1035 §5.1):
		// miekg/dns read these as `2`, `\231` and `\000`.
		{`corp\2.example`, false},
		{`a\999.example`, false},
		{`a\256.example`, false},
		{`a\255.example`, true},
		{`a\\2.example`, true}, // a quoted backslash, then a 2
	} {
		assert.Equal(t, c.want, IsDomainName(c.name), "%d characters: %.40q", len(c.name), c.name)
	}
}

// TestBadEscape: the escapes RFC 1035 §5.1 does not allow, as written:
// a backslash before a digit begins \DDD, three decimal digits of value
// 0 to 255; before any other byte it quotes it. dig refuses each of them
// ("bad escape"), as BIND's name parser does.
func TestBadEscape(t *testing.T) {
	for _, c := range []struct{ name, bad string }{
		{`corp\2.example`, `\2`},
		{`corp\25.example`, `\25`},
		{`a\999.example`, `\999`},
		{`a\256`, `\256`},
		{`a.b\0`, `\0`},
		{`a\\\2x.example`, `\2`}, // a quoted backslash, then an escape
		{`\065\3`, `\3`},
	} {
		bad, ok := BadEscape(c.name)
		assert.True(t, ok, "%s", c.name)
		assert.Equal(t, c.bad, bad, "%s", c.name)
		assert.False(t, IsDomainName(c.name), "%s", c.name)
	}
	for _, name := range []string{`a\255.example`, `a\000.example`, `\0659`, `a\.b.example`, `a\\2.example`, `www.tiktok.com`, `corp\`, ``} {
		bad, ok := BadEscape(name)
		assert.False(t, ok, "%s: %s", name, bad)
	}
}
