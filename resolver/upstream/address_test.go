package upstream

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address // text is filled in from in
	}{
		{"9.9.9.9", Address{Kind: KindPlain, Host: "9.9.9.9", Port: 53}},
		{"9.9.9.9:5353", Address{Kind: KindPlain, Host: "9.9.9.9", Port: 5353}},
		{"[2620:fe::fe]", Address{Kind: KindPlain, Host: "2620:fe::fe", Port: 53}},
		{"[2620:fe::fe]:53", Address{Kind: KindPlain, Host: "2620:fe::fe", Port: 53}},
		{"tls://9.9.9.9#dns.quad9.net", Address{Kind: KindTLS, Host: "9.9.9.9", Port: 853, ServerName: "dns.quad9.net"}},
		{"tls://9.9.9.9:8853#dns.quad9.net", Address{Kind: KindTLS, Host: "9.9.9.9", Port: 8853, ServerName: "dns.quad9.net"}},
		{"TLS://9.9.9.9:853#DNS.Quad9.net.", Address{Kind: KindTLS, Host: "9.9.9.9", Port: 853, ServerName: "dns.quad9.net"}},
		{"tls://[2620:fe::fe]:853#dns.quad9.net", Address{Kind: KindTLS, Host: "2620:fe::fe", Port: 853, ServerName: "dns.quad9.net"}},
		{"tls://[::ffff:9.9.9.9]:853#dns.quad9.net", Address{Kind: KindTLS, Host: "9.9.9.9", Port: 853, ServerName: "dns.quad9.net"}},
		{"tls://1.1.1.1#1.1.1.1", Address{Kind: KindTLS, Host: "1.1.1.1", Port: 853, ServerName: "1.1.1.1"}},
		{"quic://94.140.14.14#dns.adguard-dns.com", Address{Kind: KindQUIC, Host: "94.140.14.14", Port: 853, ServerName: "dns.adguard-dns.com"}},
		{"quic://94.140.14.14:784#dns.adguard-dns.com", Address{Kind: KindQUIC, Host: "94.140.14.14", Port: 784, ServerName: "dns.adguard-dns.com"}},
		{"https://9.9.9.9/dns-query#dns.quad9.net", Address{Kind: KindHTTPS, Host: "9.9.9.9", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}},
		{"https://dns.quad9.net/dns-query", Address{Kind: KindHTTPS, Host: "dns.quad9.net", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}},
		{"https://dns.quad9.net", Address{Kind: KindHTTPS, Host: "dns.quad9.net", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}},
		{"https://dns.example.net:8443/custom/path#pdns.example.gov", Address{Kind: KindHTTPS, Host: "dns.example.net", Port: 8443, Path: "/custom/path", ServerName: "pdns.example.gov"}},
		{"https://[2620:fe::fe]/dns-query#dns.quad9.net", Address{Kind: KindHTTPS, Host: "2620:fe::fe", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}},
		// DoH URI templates (RFC 8484 §3), processed without variables
		// for POST (§4.1).
		{"https://dns.quad9.net/dns-query{?dns}", Address{Kind: KindHTTPS, Host: "dns.quad9.net", Port: 443, Path: "/dns-query", ServerName: "dns.quad9.net"}},
		{"https://9.9.9.9:8443/dns-query{?dns}#dns.quad9.net", Address{Kind: KindHTTPS, Host: "9.9.9.9", Port: 8443, Path: "/dns-query", ServerName: "dns.quad9.net"}},
		{"https://dns.example.net/resolve{?dns,ct}", Address{Kind: KindHTTPS, Host: "dns.example.net", Port: 443, Path: "/resolve", ServerName: "dns.example.net"}},
		// ::1, :: and ::2 are no IPv4-compatible addresses (none embeds
		// an IPv4 unicast address).
		{"[::1]:53", Address{Kind: KindPlain, Host: "::1", Port: 53}},
		{"[::2]:53", Address{Kind: KindPlain, Host: "::2", Port: 53}},
		{"tls://[::1]:853#dns.example", Address{Kind: KindTLS, Host: "::1", Port: 853, ServerName: "dns.example"}},
		// An IPv4 link-local resolver needs no zone: AWS's.
		{"169.254.169.253:53", Address{Kind: KindPlain, Host: "169.254.169.253", Port: 53}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddress(tc.in)
			require.NoError(t, err)
			tc.want.text = tc.in
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.in, got.String(), "String is the address as written")
			// The canonical form parses back to the same address.
			got.text = ""
			again, err := ParseAddress(got.String())
			require.NoError(t, err, got.String())
			again.text = ""
			assert.Equal(t, got, again, got.String())
		})
	}
}

func TestParseAddressErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // in the error
	}{
		{"tls://9.9.9.9:853", "missing; write it after #: tls://9.9.9.9:853#dns.example.net"},
		{"https://9.9.9.9./dns-query", `"9.9.9.9." is an IP address with a trailing dot; write it without the dot`},
		{"https://0.0.0.0.", "an IP address with a trailing dot"},
		{"tls://9.9.9.9.:853#dns.quad9.net", "an IP address with a trailing dot"},
		{"tls://9.9.9.9:853#", "missing"},
		{"quic://9.9.9.9", "missing; write it after #"},
		{"https://9.9.9.9/dns-query", "missing; write it after #"},
		{"tls://dns.quad9.net:853", "the host is a name, not an IP address; tls upstreams are IP addresses, with the name after #: tls://IP:853#dns.quad9.net"},
		{"quic://dns.adguard-dns.com#dns.adguard-dns.com", "the host is a name"},
		{"dns.quad9.net:53", "the host is a name, not an IP address"},
		{"localhost", "is not IP:port"},
		{"sdns://AgcAAAAAAAAABzEuMC4wLjE", `unknown scheme "sdns"`},
		{"h3://dns.example/dns-query", `unknown scheme "h3"`},
		{"udp://9.9.9.9:53", "plain DNS upstreams are written without a scheme: 9.9.9.9:53"},
		{"tls://9.9.9.9:0#dns.quad9.net", `the port "0" is not a number from 1 to 65535`},
		{"quic://9.9.9.9:53#dns.quad9.net", "DNS over QUIC never uses port 53 (RFC 9250 §4.1.1): quic://9.9.9.9:853#dns.quad9.net"},
		{"quic://[2620:fe::fe]:53#dns.quad9.net", "never uses port 53"},
		{"tls://9.9.9.9:53#dns.quad9.net", "DNS over TLS never uses port 53 (RFC 7858 §3.1): tls://9.9.9.9:853#dns.quad9.net"},
		{"9.9.9.9:853", "port 853 carries DNS over TLS and QUIC, never plain DNS (RFC 7858 §3.1); write tls://9.9.9.9:853#dns.example.net for DNS over TLS, or 9.9.9.9:53 for plain DNS"},
		{"[2620:fe::fe]:853", "write tls://[2620:fe::fe]:853#dns.example.net for DNS over TLS, or [2620:fe::fe]:53 for plain DNS"},
		{"tls://[2620:fe::fe]:53#dns.quad9.net", "never uses port 53"},
		{"tls://9.9.9.9:70000#dns.quad9.net", `the port "70000"`},
		{"tls://9.9.9.9:#dns.quad9.net", `the port ""`},
		{"9.9.9.9:0", `the port "0"`},
		{"9.9.9.9:dns", `the port "dns"`},
		{"9.9.9.9:+53", `the port "+53"`},
		{"2620:fe::fe", "an IPv6 address goes in brackets"},
		{"::1:53", "an IPv6 address goes in brackets"},
		{"tls://2620:fe::fe#dns.quad9.net", "an IPv6 address goes in brackets: tls://[2620:fe::fe]#dns.quad9.net"},
		{"https://fe80::1%25eth0/dns-query", "not a URL"},
		{"tls://[fe80::1%25eth0]:853#dns.example", "zone"},
		{"[fe80::1%eth0]:53", "zone"},
		{"[fe80::1%eth0]", "zone"},
		{"[::1", "is not IP:port"},
		{"tls://9.9.9.9:853#not_a name", "is not a host name"},
		{"tls://9.9.9.9:853#-bad.example", "is not a host name"},
		// The certificate's name written with a port or as a URL: the
		// name alone offered.
		{"tls://9.9.9.9:853#dns.quad9.net:853", `"tls://9.9.9.9:853#dns.quad9.net:853": the name after # "dns.quad9.net:853": a URL, a port, a path or a user is no part of it; write tls://9.9.9.9:853#dns.quad9.net`},
		{"quic://9.9.9.9#https://dns.quad9.net/", "; write quic://9.9.9.9#dns.quad9.net"},
		{"https://9.9.9.9/dns-query#dns.quad9.net:443", "; write https://9.9.9.9/dns-query#dns.quad9.net"},
		{"tls://9.9.9.9#user@-bad.example", `the name after # "user@-bad.example" is not a host name`},
		{"tls://9.9.9.9#9.9.9.9:853", "; write tls://9.9.9.9#9.9.9.9"},
		{"tls://[2620:fe::fe]#[2620:fe::fe]:853", "; write tls://[2620:fe::fe]#2620:fe::fe"},
		{"tls://9.9.9.9:853/path#dns.quad9.net", "tls upstreams have no path"},
		{"https://dns.quad9.net/dns-query?dns=AAAB", "a query string"},
		{"https://dns.quad9.net/dns-query{?dns", "a URI template expression other than {?dns}"},
		{"https://dns.example.net/{tenant}/dns-query{?dns}", "a URI template expression other than {?dns}"},
		{"https:///dns-query#dns.quad9.net", "has no host"},
		{"https://dns..quad9.net/dns-query", "is not a host name"},
		{"", "is not IP:port"},
		// IPv4-compatible addresses (RFC 4291 §2.5.5.1, deprecated): no
		// host has one, and queries sent there go towards the IPv6
		// default route, to no server; the IPv4 address offered.
		{"[::10.0.0.1]:53", "::10.0.0.1 is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291), which no host has; write 10.0.0.1:53"},
		{"[::a00:1]", "; write 10.0.0.1"},
		{"tls://[::a00:1]:853#dns.example", "; write tls://10.0.0.1:853#dns.example"},
		{"https://[::10.0.0.1]/dns-query#dns.example", "; write https://10.0.0.1/dns-query#dns.example"},
		{"quic://[::a00:1]#dns.example", "; write quic://10.0.0.1#dns.example"},
		// Addresses no query can be exchanged with.
		{"[fe80::1]:53", "fe80::1 is a link-local address, which a query reaches only through the interface a zone (%eth0) names, and an IPv6 zone is not supported"},
		{"[fe80::1]", "is a link-local address"},
		{"tls://[fe80::1]:853#dns.example", "is a link-local address"},
		{"224.0.0.251:53", "224.0.0.251 is a multicast address, which no answer comes from"},
		{"[ff02::fb]", "is a multicast address"},
		{"https://[ff05::1]/dns-query#dns.example", "is a multicast address"},
		{"quic://239.1.1.1#dns.example", "is a multicast address"},
		{"255.255.255.255", "255.255.255.255 is the broadcast address, which no query is sent to"},
		{"[::ffff:255.255.255.255]:53", "is the broadcast address"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseAddress(tc.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), `"`+tc.in+`"`, "the error quotes what was written")
		})
	}
}

// TestParseAddressHidesCredentials: a user or password before the host
// is refused, and the error, printed at start and logged at every reload,
// shows the entry without it, parsed or not.
func TestParseAddressHidesCredentials(t *testing.T) {
	const secret = "s3cr3t"
	for _, in := range []string{
		"https://user:" + secret + "@dns.quad9.net/dns-query",
		"https://" + secret + "@dns.quad9.net/dns-query",
		"tls://user:" + secret + "@9.9.9.9:853#dns.quad9.net",
		"quic://" + secret + "@9.9.9.9#dns.quad9.net",
		"https://user:" + secret + " x@dns.quad9.net/dns-query", // not a URL
		"HTTPS://user:" + secret + "@[2620:fe::fe]:8443/dns-query",
		"https://user:ab/" + secret + "@dns.quad9.net/dns-query", // a '/' in the password
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseAddress(in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "a user or password")
			assert.Contains(t, err.Error(), "xxxxx@")
			assert.NotContains(t, err.Error(), secret)
		})
	}
}

// TestParseAddressUnboundPort: Unbound's IP@PORT in an encrypted
// upstream, which a URL reads as the user 9.9.9.9 at the host 853, is
// named as such with the address meant (the address shown: it is no
// secret), where any other text before @ is a user or password, hidden.
func TestParseAddressUnboundPort(t *testing.T) {
	for in, want := range map[string]string{
		"tls://9.9.9.9@853#dns.quad9.net":                      "tls://9.9.9.9:853#dns.quad9.net",
		"quic://[2620:fe::fe]@8853#dns.quad9.net":              "quic://[2620:fe::fe]:8853#dns.quad9.net",
		"https://9.9.9.9@443/dns-query#dns.quad9.net":          "https://9.9.9.9:443/dns-query#dns.quad9.net",
		"TLS://2620:fe::fe@853#dns.quad9.net":                  "TLS://[2620:fe::fe]:853#dns.quad9.net",
		"https://[::ffff:9.9.9.9]@443/dns-query#dns.quad9.net": "https://[::ffff:9.9.9.9]:443/dns-query#dns.quad9.net",
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseAddress(in)
			require.Error(t, err)
			assert.EqualError(t, err, fmt.Sprintf("%q: the port follows a colon (IP@PORT is Unbound's form); write %s", in, want))
			_, err = ParseAddress(want)
			assert.NoError(t, err, "the address offered is taken")
		})
	}
	// An address refused written either way is offered as nothing: its
	// error says why the form with a colon is refused too.
	for in, why := range map[string]string{
		"://0.0.0.0@0":                   `"://0.0.0.0@0": the port follows a colon (IP@PORT is Unbound's form), and so written: "://0.0.0.0:0": unknown scheme ""`,
		"tls://9.9.9.9@53#dns.quad9.net": `and so written: "tls://9.9.9.9:53#dns.quad9.net": DNS over TLS never uses port 53`,
		"quic://9.9.9.9@853":             `and so written: "quic://9.9.9.9:853": the name the upstream's certificate carries is missing`,
	} {
		_, err := ParseAddress(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), why, in)
		assert.NotContains(t, err.Error(), "; write "+strings.Replace(in, "@", ":", 1), in)
	}
	for _, in := range []string{"tls://9.9.9.9@dns.quad9.net#dns.quad9.net", "tls://user@9.9.9.9#dns.quad9.net", "tls://9.9.9.9@#dns.quad9.net"} {
		_, err := ParseAddress(in)
		require.Error(t, err, in)
		assert.Contains(t, err.Error(), "a user or password before @", in)
	}
}

// FuzzParseAddress: ParseAddress never panics, and an address it accepts
// has a canonical form that parses back to the same address.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"9.9.9.9", "9.9.9.9:53", "[2620:fe::fe]:53", "tls://9.9.9.9:853#dns.quad9.net",
		"https://dns.quad9.net/dns-query", "https://9.9.9.9/dns-query#dns.quad9.net",
		"quic://[2620:fe::fe]:853#dns.quad9.net", "tls://9.9.9.9", "https://[::1]:8443/p%20q#a.b",
		"https://a.b/%2F#c", "TLS://1.1.1.1#1.1.1.1", "https://dns.quad9.net/dns-query{?dns}",
		"https://9.9.9.9:8443/q{?dns,ct}#dns.quad9.net", "tls://9.9.9.9:853#dns.quad9.net:853",
		"quic://9.9.9.9#https://user@dns.quad9.net/x", "tls://9.9.9.9@853#dns.quad9.net",
		"tls://9.9.9.9#9.9.9.9:853", "tls://[2620:fe::fe]#[2620:fe::fe]:853",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			// The address an error offers as the one to write is taken.
			if _, fix, ok := strings.Cut(err.Error(), "; write "); ok && !strings.Contains(fix, " ") {
				if _, ferr := ParseAddress(fix); ferr != nil {
					t.Fatalf("%q: %v; the address offered is refused: %v", s, err, ferr)
				}
			}
			return
		}
		if a.String() != s {
			t.Fatalf("String() = %q, want %q", a.String(), s)
		}
		if a.Port == 0 || a.Host == "" || a.Kind != KindPlain && a.ServerName == "" {
			t.Fatalf("%q parsed to an incomplete %+v", s, a)
		}
		a.text = ""
		b, err := ParseAddress(a.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q: %v", a.String(), s, err)
		}
		b.text = ""
		if a != b {
			t.Fatalf("%q -> %+v -> %q -> %+v", s, a, a.String(), b)
		}
	})
}

// TestUnbracketedIPv6Readings: an IPv6 address written without brackets
// is refused with the upstream written with them, each way its host
// reads (the address whole, or an address and a port after its last
// colon), keeping the port, path and #NAME written. Before, the hint of
// https://::1:443/dns-query was https://[::1] (port and path dropped),
// and https://::1/dns-query said `":" is not an IP address`.
func TestUnbracketedIPv6Readings(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"https://::1:443/dns-query", `"https://::1:443/dns-query": an IPv6 address goes in brackets: https://[::1:443]/dns-query or https://[::1]:443/dns-query`},
		{"https://2001:db8::1/dns-query", `"https://2001:db8::1/dns-query": an IPv6 address goes in brackets: https://[2001:db8::1]/dns-query`},
		{"tls://2001:db8::1:853#dns.example", `"tls://2001:db8::1:853#dns.example": an IPv6 address goes in brackets: tls://[2001:db8::1:853]#dns.example or tls://[2001:db8::1]:853#dns.example`},
		{"quic://::1#dns.example", `"quic://::1#dns.example": an IPv6 address goes in brackets: quic://[::1]#dns.example`},
		{"::1:53", `"::1:53": an IPv6 address goes in brackets: [::1:53] or [::1:53]:PORT or [::1]:53`},
		{"2620:fe::fe", `"2620:fe::fe": an IPv6 address goes in brackets: [2620:fe::fe] or [2620:fe::fe]:PORT`},
	} {
		_, err := ParseAddress(tc.in)
		if assert.Error(t, err, tc.in) {
			assert.Equal(t, tc.want, err.Error())
		}
	}
}
