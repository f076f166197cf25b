package upstream

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseAddressEdges: entries at the edges of what ParseAddress takes,
// refused with the reason, or taken: host names at their length limits
// (253 octets, labels of 63, RFC 1035 §2.3.4) and with every kind of
// character a label may hold; a port that does not fit 16 bits; an
// IPv6 address without brackets in a URL; a
// URI template outside https; the reason a URL does not parse, without
// the URL repeated.
func TestParseAddressEdges(t *testing.T) {
	name253 := strings.Repeat("a.", 126) + "a"
	label63 := strings.Repeat("a", 63)
	for _, tc := range []struct {
		in   string
		want string // in the error; "" for none
	}{
		{"tls://9.9.9.9#" + name253, ""},
		{"tls://9.9.9.9#" + name253 + "a", "is not a host name"},
		{"tls://9.9.9.9#" + label63 + ".example", ""},
		{"tls://9.9.9.9#" + label63 + "a.example", "is not a host name"},
		{"tls://9.9.9.9#.", `the name after # "." is not a host name`},
		{"tls://9.9.9.9#az09-_.example", ""},
		{"tls://9.9.9.9#*x.example", `is not a host name: label "*x"`},
		{"tls://9.9.9.9#x*.example", `is not a host name: label "x*"`},
		{"9.9.9.9:65536", `the port "65536" is not a number from 1 to 65535`},
		{":53", `"" is not an IP address`},
		{"tls://::1#dns.example", `an IPv6 address goes in brackets: tls://[::1]#dns.example`},
		{"https://::1:443/dns-query", "an IPv6 address goes in brackets"},
		{"tls://9.9.9.9{?dns}#dns.quad9.net", "is not a URL"},
		{"tls://dns.example@853#dns.example", "a user or password before @ is not supported"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			a, err := ParseAddress(tc.in)
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.in, a.String())
				return
			}
			require.Error(t, err, "taken as %+v", a)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "invalid IP", "an address made of no address")
		})
	}
	t.Run("URL reason", func(t *testing.T) {
		const in = "https://fe80::1%25eth0/dns-query" // no IPv6 address, however read
		_, err := ParseAddress(in)
		assert.EqualError(t, err, `"`+in+`" is not a URL: invalid port ":1%25eth0" after host`)
	})
}

// TestAddressStringCanonical: an Address not parsed from text is written
// in its shortest form: an https URL names its server after # only when
// the name is not its host.
func TestAddressStringCanonical(t *testing.T) {
	for _, tc := range []struct {
		a    Address
		want string
	}{
		{Address{Kind: KindHTTPS, Host: "dns.quad9.net", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}, "https://dns.quad9.net:443/dns-query"},
		{Address{Kind: KindHTTPS, Host: "9.9.9.9", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}, "https://9.9.9.9:443/dns-query#dns.quad9.net"},
		{Address{Kind: KindTLS, Host: "9.9.9.9", Port: 853, ServerName: "dns.quad9.net"}, "tls://9.9.9.9:853#dns.quad9.net"},
		{Address{Kind: KindPlain, Host: "9.9.9.9", Port: 53}, "9.9.9.9:53"},
	} {
		assert.Equal(t, tc.want, tc.a.String())
	}
}
