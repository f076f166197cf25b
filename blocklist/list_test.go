package blocklist

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseForms(t *testing.T) {
	tests := []struct {
		name string
		line string
		want []string
	}{
		{name: "plain", line: "tiktok.com", want: []string{"tiktok.com"}},
		{name: "trailing dot", line: "tiktok.com.", want: []string{"tiktok.com"}},
		{name: "upper case", line: "TikTok.COM", want: []string{"tiktok.com"}},
		{name: "upper case A to Z", line: "AZ.Zone.EXAMPLE", want: []string{"az.zone.example"}},
		{name: "leading wildcard", line: "*.tiktok.com", want: []string{"tiktok.com"}},
		{name: "leading dot", line: ".tiktok.com", want: []string{"tiktok.com"}},
		{name: "adblock", line: "||tiktok.com^", want: []string{"tiktok.com"}},
		{name: "adblock important", line: "||tiktok.com^$important", want: []string{"tiktok.com"}},
		{name: "adblock important in capitals", line: "||tiktok.com^$IMPORTANT", want: []string{"tiktok.com"}},
		{name: "adblock important with an empty option", line: "||tiktok.com^$important,", want: []string{"tiktok.com"}},
		{name: "adblock important twice", line: "||*.tiktok.com^$important,Important", want: []string{"tiktok.com"}},
		{name: "adblock end anchor", line: "||tiktok.com^|", want: []string{"tiktok.com"}},
		{name: "adblock wildcard", line: "||*.tiktok.com^", want: []string{"tiktok.com"}},
		{name: "hosts one name", line: "0.0.0.0 tiktok.com", want: []string{"tiktok.com"}},
		{name: "hosts many names", line: "127.0.0.1\ttiktok.com  www.tiktokv.com", want: []string{"tiktok.com", "www.tiktokv.com"}},
		{name: "hosts ipv6", line: ":: tiktok.com", want: []string{"tiktok.com"}},
		// A hosts line's names take the leading `*.` and `.` a name alone
		// takes, meaning the same: Blocky's hostsFile users write
		// `192.168.1.152 *.cdn.blizzard.com` (0xERR0R/blocky#1837), and
		// hosts lists carry `.doubleclick.com` (pi-hole/pi-hole#1256).
		// Both were skipped as "invalid character"/"empty label", the
		// names they meant not blocked.
		{name: "hosts leading wildcard", line: "0.0.0.0 *.tiktok.com", want: []string{"tiktok.com"}},
		{name: "hosts leading dot", line: "0.0.0.0 .tiktok.com", want: []string{"tiktok.com"}},
		{name: "hosts leading forms among names", line: "127.0.0.1 *.tiktok.com .tiktokv.com douyin.com", want: []string{"tiktok.com", "tiktokv.com", "douyin.com"}},
		{name: "hosts localhost skipped", line: "127.0.0.1 localhost", want: nil},
		{name: "hosts Red Hat names skipped", line: "127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4", want: nil},
		{name: "hosts Red Hat IPv6 names skipped", line: "::1         localhost localhost.localdomain localhost6 localhost6.localdomain6", want: nil},
		{name: "hosts Red Hat name alone skipped", line: "127.0.0.1 localhost4.localdomain4", want: nil},
		{name: "hosts names skipped in any case", line: "127.0.0.1 LocalHost LOCALHOST.localdomain Broadcasthost", want: nil},
		// StevenBlack's hosts starts with these lines: every name is
		// skipped silently, none reported as a bad line (a single label,
		// an address alone).
		{name: "hosts StevenBlack's header skipped", line: "127.0.0.1 localhost\n127.0.0.1 localhost.localdomain\n127.0.0.1 local\n" +
			"255.255.255.255 broadcasthost\n::1 localhost\n::1 ip6-localhost\n::1 ip6-loopback\nfe80::1%lo0 localhost\n" +
			"ff00::0 ip6-localnet\nff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\nff02::3 ip6-allhosts\n0.0.0.0 0.0.0.0", want: nil},
		{name: "trailing comment", line: "tiktok.com # A: AGS", want: []string{"tiktok.com"}},
		{name: "hosts trailing comment", line: "0.0.0.0 tiktok.com  #[Tracking.Cookie]", want: []string{"tiktok.com"}},
		// Unicode white space is white space between fields and before a
		// comment, as it is around the line (a line copied from a web
		// page or a document carries no-break spaces).
		{name: "hosts no-break space", line: "0.0.0.0\u00a0tiktok.com", want: []string{"tiktok.com"}},
		{name: "hosts ideographic space between names", line: "0.0.0.0 tiktok.com\u3000www.tiktokv.com", want: []string{"tiktok.com", "www.tiktokv.com"}},
		{name: "comment after a no-break space", line: "tiktok.com\u00a0# TikTok", want: []string{"tiktok.com"}},
		{name: "hosts comment after a narrow no-break space", line: "0.0.0.0 tiktok.com\u202f#x", want: []string{"tiktok.com"}},
		// hosts(5): `#` starts a comment anywhere in a hosts line (glibc
		// cuts the line at it); the line was refused whole, its name not
		// blocked (found by a sweep of peer resolvers' issues).
		{name: "hosts comment glued to a name", line: "0.0.0.0 tiktok.com#ads douyin.com", want: []string{"tiktok.com"}},
		{name: "hosts comment glued to a second name", line: "0.0.0.0 tiktok.com capcut.com#", want: []string{"tiktok.com", "capcut.com"}},
		{name: "hosts fields apart by a vertical tab and a form feed", line: "0.0.0.0\vtiktok.com\fcapcut.com", want: []string{"tiktok.com", "capcut.com"}},
		{name: "comment line", line: "# tiktok.com", want: nil},
		{name: "adblock comment", line: "! Title: x", want: nil},
		{name: "adblock header", line: "[Adblock Plus 2.0]", want: nil},
		// A version after the syntax's name reads as no name: no
		// top-level domain is digits alone (RFC 3696 §2).
		{name: "adguard header with a version", line: "[AdGuard v1.0]", want: nil},
		{name: "ublock header with a version", line: "[uBlock Origin v1.2.3]", want: nil},
		{name: "unicode to punycode", line: "bücher.example", want: []string{"xn--bcher-kva.example"}},
		{name: "underscore", line: "_dmarc.tiktok.com", want: []string{"_dmarc.tiktok.com"}},
		{name: "digits but for the first octet", line: "a.1.2.3", want: []string{"a.1.2.3"}},
		{name: "hosts name of digits but for the first octet", line: "0.0.0.0 x1.2.3.4", want: []string{"x1.2.3.4"}},
		{name: "blank", line: "   ", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse("test.txt", []byte(tc.line+"\n"))
			require.NoError(t, err)
			var got []string
			for e := range l.All() {
				got = append(got, e.Name)
				assert.Equal(t, 1, e.Line)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestParseConditionalBranches: AdGuard's `!#if (condition)`, `!#else`
// and `!#endif` are comments, and the rules of every branch are read,
// whatever the condition (README: a list blocks at least what it blocks in
// any branch), as AdGuard Home reads them for DNS.
func TestParseConditionalBranches(t *testing.T) {
	l, err := Parse("test.txt", []byte("!#if (adguard_app_windows)\n||tiktok.com^\n!#else\n||douyin.com^\n!#endif\n!#if !adguard\ncapcut.com\n!#endif\n"))
	require.NoError(t, err, "the directives are no bad lines")
	var got []string
	for e := range l.All() {
		got = append(got, e.Name)
	}
	assert.ElementsMatch(t, []string{"tiktok.com", "douyin.com", "capcut.com"}, got)
}

func TestParseBadLines(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		wantErr error
		wantMsg string
	}{
		{name: "single label", line: "com", wantErr: ErrSingleLabel,
			wantMsg: `lists/x.txt:2: a single label would block a whole top-level domain: "com"`},
		{name: "empty label", line: "tiktok..com", wantErr: ErrEmptyLabel,
			wantMsg: `lists/x.txt:2: empty label: "tiktok..com"`},
		{name: "bad char", line: "tik$tok.com", wantErr: ErrBadChar},
		{name: "DEL", line: "\x7ftiktok.com", wantErr: ErrBadChar},
		{name: "a slash alone", line: "/", wantErr: ErrBadChar,
			wantMsg: `lists/x.txt:2: invalid character in name: "/"`},
		// UTS #46 refuses the character: the line is no name, not the
		// punycode of what is left of it.
		{name: "character IDNA refuses", line: "\u2488tiktok.com", wantErr: ErrIDNA},
		// The root, and dots alone, are no address: a name of empty labels.
		{name: "the root", line: ".", wantErr: ErrEmptyLabel,
			wantMsg: `lists/x.txt:2: empty label: "."`},
		{name: "dots alone", line: "..", wantErr: ErrEmptyLabel},
		{name: "the root, a comment after it", line: ". # every name", wantErr: ErrEmptyLabel},
		{name: "lone continuation octet 0x80", line: "tiktok\x80.com", wantErr: ErrNotUTF8Name},
		{name: "Latin-1 letter first", line: "\xe9cole.example", wantErr: ErrNotUTF8Name},
		{name: "Latin-1 letter", line: "caf\xe9.example", wantErr: ErrNotUTF8Name,
			wantMsg: `lists/x.txt:2: a name that is not UTF-8 text (a Latin-1 or Windows-1252 letter?); save the list as UTF-8: "caf\xe9.example"`},
		{name: "inner wildcard", line: "v*.tiktokcdn-eu.com", wantErr: ErrWildcard},
		// Chrome's pattern starts with a bracket and does not end with
		// one, a JSON array's last line ends with one: neither is a line
		// in brackets whole.
		{name: "Chrome's site pattern", line: "[*.]tiktok.com", wantErr: ErrWildcard,
			wantMsg: `lists/x.txt:2: wildcards are only allowed as a leading "*.": "[*.]tiktok.com"`},
		{name: "the last line of a JSON array", line: `"bytedance.com"]`, wantErr: ErrBadChar},
		{name: "adblock options", line: "||tiktok.com^$dnstype=AAAA", wantErr: ErrAdblockOptions},
		{name: "adblock options besides important", line: "||tiktok.com^$important,client=10.0.0.1", wantErr: ErrAdblockOptions},
		{name: "adblock empty options", line: "||tiktok.com^$,", wantErr: ErrAdblockOptions},
		{name: "adblock options alone", line: "||$client=10.0.0.1^", wantErr: ErrAdblockOptions},
		{name: "adblock badfilter", line: "||tiktok.com^$badfilter", wantErr: ErrAdblockOptions},
		{name: "adblock single pipe", line: "|tiktok.com^", wantErr: ErrAdblockForm,
			wantMsg: `lists/x.txt:2: adblock rules must have the form ||name^: "|tiktok.com^"`},
		{name: "adblock without pipes", line: "tiktok.com^", wantErr: ErrAdblockForm},
		{name: "adblock inner wildcard", line: "||*.*.tiktok.com^", wantErr: ErrWildcard},
		{name: "adblock without caret", line: "||tiktok.com", wantErr: ErrAdblockForm},
		{name: "adblock with a second caret", line: "||tiktok^.com^", wantErr: ErrAdblockForm},
		{name: "adblock with text after the caret", line: "||tiktok.com^x", wantErr: ErrAdblockForm},
		{name: "adblock single pipe without caret", line: "|tiktok.com", wantErr: ErrAdblockForm},
		{name: "hosts wildcard of a single label", line: "0.0.0.0 *.com", wantErr: ErrSingleLabel},
		{name: "hosts inner wildcard", line: "0.0.0.0 *.*.tiktok.com", wantErr: ErrWildcard},
		{name: "hosts two leading dots", line: "0.0.0.0 ..tiktok.com", wantErr: ErrEmptyLabel},
		{name: "hosts wildcard of an address", line: "0.0.0.0 *.10.0.0.1", wantErr: ErrAddrOnly},
		{name: "exception", line: "@@||tiktok.com^", wantErr: ErrException,
			wantMsg: `lists/x.txt:2: exception rules (@@) are not supported (to allow tiktok.com and the names below it, write tiktok.com in a list under a policy's allow, unless an $important rule of this list covers it, which ranks above the exception): "@@||tiktok.com^"`},
		{name: "dnsmasq directive of a single label", line: "local=/lan/", wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry: "local=/lan/"`},
		{name: "dnsmasq directive of every domain", line: "address=/#/0.0.0.0", wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry: "address=/#/0.0.0.0"`},
		{name: "unbound directive of a name with a port", line: `local-zone: "tiktok.com:443" refuse`, wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry: "local-zone: \"tiktok.com:443\" refuse"`},
		{name: "unbound directive in capitals", line: `local-zone: "TikTok.COM." always_nxdomain`, wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry (to block tiktok.com and the names below it, write tiktok.com): "local-zone: \"TikTok.COM.\" always_nxdomain"`},
		{name: "name of hexadecimal letters with a port", line: "ad.de:443", wantErr: ErrHostPart,
			wantMsg: `lists/x.txt:2: a port, a path or a user is no part of a name (write the name alone: ad.de): "ad.de:443"`},
		{name: "address with a port", line: "10.0.0.1:53", wantErr: ErrBadAddr},
		{name: "exception of an address", line: "@@||10.0.0.1^", wantErr: ErrException,
			wantMsg: `lists/x.txt:2: exception rules (@@) are not supported: "@@||10.0.0.1^"`},
		{name: "exception of no name", line: "@@/ads/", wantErr: ErrException,
			wantMsg: `lists/x.txt:2: exception rules (@@) are not supported: "@@/ads/"`},
		{name: "address alone", line: "10.0.0.1", wantErr: ErrAddrOnly},
		{name: "bad address", line: "300.1.1.1 tiktok.com", wantErr: ErrBadAddr},
		// A carriage return inside a line is no white space (blank): the
		// # after it starts no comment. It is named: a file whose lines
		// end in CR alone (classic Mac OS) is one line.
		{name: "carriage return before a #", line: "tiktok.com\r# x", wantErr: ErrLoneCR},
		{name: "lines that end in CR alone", line: "tiktok.com\rcapcut.com\rdouyin.com", wantErr: ErrLoneCR,
			wantMsg: `lists/x.txt:2: a carriage return inside the line: lines that end in CR alone (as classic Mac OS saved them) are one line here; save the file with LF or CRLF line ends: "tiktok.com"`},
		{name: "hosts lines that end in CR alone", line: "0.0.0.0 tiktok.com\r0.0.0.0 capcut.com", wantErr: ErrLoneCR,
			wantMsg: `lists/x.txt:2: a carriage return inside the line: lines that end in CR alone (as classic Mac OS saved them) are one line here; save the file with LF or CRLF line ends: "tiktok.com"`},
		// A CR after white space starts a field of the hosts line: it is
		// the CR still, not an invalid character of a name.
		{name: "hosts lines that end in white space and CR alone", line: "0.0.0.0 tiktok.com \r0.0.0.0 capcut.com", wantErr: ErrLoneCR,
			wantMsg: `lists/x.txt:2: a carriage return inside the line: lines that end in CR alone (as classic Mac OS saved them) are one line here; save the file with LF or CRLF line ends: "\r0.0.0.0"`},
		{name: "trailing text", line: "tiktok.com extra", wantErr: ErrTrailing,
			wantMsg: `lists/x.txt:2: unexpected text after the entry: "extra"`},
		{name: "cosmetic filter", line: "example.com##.ad", wantErr: ErrCosmetic,
			wantMsg: `lists/x.txt:2: an Adblock cosmetic rule (##, #@#, #$#, …) hides part of a web page and blocks no name: "example.com##.ad"`},
		{name: "cosmetic exception", line: "example.com#@#.ad", wantErr: ErrCosmetic},
		{name: "cosmetic filter of a one-letter name", line: "a##.ad", wantErr: ErrCosmetic},
		// hosts(5) and Blocky read a comment after a name's glued "#"; a
		// list line does not (a cosmetic rule is no name), and says so.
		{name: "comment glued to a name", line: "TikTok.com#ads", wantErr: ErrGluedComment,
			wantMsg: `lists/x.txt:2: a "#" glued to a name starts no comment (in a line that is not a hosts line, a comment starts the line or follows white space) (to block tiktok.com and the names below it, write tiktok.com, then white space before the #): "TikTok.com#ads"`},
		{name: "comment glued to an Adblock rule", line: "||tiktok.com^#ads", wantErr: ErrGluedComment},
		{name: "comment glued, more after it", line: "tiktok.com#ads and more", wantErr: ErrGluedComment},
		{name: "comment glued to no name", line: "tik$tok.com#ads", wantErr: ErrBadChar},
		{name: "cosmetic CSS rule", line: "example.com#$#body { padding: 0 }", wantErr: ErrCosmetic},
		{name: "scriptlet rule", line: "example.com#%#//scriptlet('abort-on-property-read', 'x')", wantErr: ErrCosmetic},
		{name: "long label", line: strings.Repeat("a", 64) + ".com", wantErr: ErrLongLabel},
		{name: "long name", line: strings.Repeat("abcdefghi.", 26) + "com", wantErr: ErrLongName},
		{name: "hosts bad name", line: "0.0.0.0 ok.example bad..example", wantErr: ErrEmptyLabel},
		{name: "URL of a site", line: "https://www.tiktok.com/@someone", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (write the name alone: www.tiktok.com): "https://www.tiktok.com/@someone"`},
		{name: "URL of a site root", line: "http://TikTok.com", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (write the name alone: TikTok.com): "http://TikTok.com"`},
		{name: "URL of a site whose host is no entry", line: "https://tik..tok.com/", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (write the name alone, e.g. tiktok.com): "https://tik..tok.com/"`},
		{name: "URL of a single-label host", line: "http://localhost/", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (write the name alone, e.g. tiktok.com): "http://localhost/"`},
		{name: "URL of a list", line: "https://example.org/lists/tiktok.txt", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (to use the list published there, name its URL in the policy's block or allow, as a list file is named there, not in a list): "https://example.org/lists/tiktok.txt"`},
		{name: "URL of an address", line: "http://192.0.2.7/", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (and lists hold names, not addresses): "http://192.0.2.7/"`},
		{name: "URL with an IPv6 address", line: "http://[2001:db8::1]/", wantErr: ErrURL},
		{name: "URL with its scheme cut", line: "://tiktok.com", wantErr: ErrURL},
		{name: "URL without a host", line: "https:///tiktok", wantErr: ErrURL,
			wantMsg: `lists/x.txt:2: a URL is not a list entry (write the name alone, e.g. tiktok.com): "https:///tiktok"`},
		{name: "empty regular expression", line: "//", wantErr: ErrRegex},
		// Other programs' syntax is named for what it is, not for the
		// first thing a name cannot have.
		{name: "regular expression", line: `/^ad[0-9]*\.tiktok\.com$/`, wantErr: ErrRegex,
			wantMsg: `lists/x.txt:2: regular expressions (/.../) are not supported (write the names they are meant to block): "/^ad[0-9]*\\.tiktok\\.com$/"`},
		{name: "regular expression with spaces and options", line: `/^ads? [0-9]/$important`, wantErr: ErrRegex},
		{name: "dnsmasq address", line: "address=/tiktok.com/0.0.0.0", wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry (to block tiktok.com and the names below it, write tiktok.com): "address=/tiktok.com/0.0.0.0"`},
		{name: "dnsmasq address of ::", line: "address=/tiktok.com/::", wantErr: ErrDirective},
		{name: "dnsmasq server", line: "server=/tiktok.com/", wantErr: ErrDirective},
		{name: "unbound local-zone", line: `local-zone: "tiktok.com." always_nxdomain`, wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry (to block tiktok.com and the names below it, write tiktok.com): "local-zone: \"tiktok.com.\" always_nxdomain"`},
		{name: "unbound local-data", line: `local-data: "tiktok.com A 0.0.0.0"`, wantErr: ErrDirective},
		{name: "unbound server clause", line: "server:", wantErr: ErrDirective,
			wantMsg: `lists/x.txt:2: a dnsmasq or unbound directive is not a list entry: "server:"`},
		{name: "zone record", line: "*.tiktok.com CNAME .", wantErr: ErrZoneRecord,
			wantMsg: `lists/x.txt:2: a DNS zone record is not a list entry (a Response Policy Zone is read from a file whose name ends in .rpz): "*.tiktok.com CNAME ."`},
		{name: "zone record with TTL and class", line: "tiktok.com 300 in cname rpz-passthru.", wantErr: ErrZoneRecord},
		{name: "zone SOA", line: "@ IN SOA ns. hostmaster. 1 3600 600 86400 60", wantErr: ErrZoneRecord},
		{name: "zone directive", line: "$TTL 300", wantErr: ErrZoneRecord},
		{name: "name with a port", line: "tiktok.com:443", wantErr: ErrHostPart,
			wantMsg: `lists/x.txt:2: a port, a path or a user is no part of a name (write the name alone: tiktok.com): "tiktok.com:443"`},
		{name: "v2fly prefix", line: "full:tiktok.com", wantErr: ErrBadChar},
		{name: "hosts IPv4 address with a zone", line: "0.0.0.0%lo0 tiktok.com", wantErr: ErrBadAddr,
			wantMsg: `lists/x.txt:2: invalid IP address: "0.0.0.0%lo0"`},
		// An AdGuard directive that pulls in another file's names: not a
		// comment, whose "!" it starts with.
		{name: "include directive", line: " !#include tiktok-extra.txt", wantErr: ErrInclude,
			wantMsg: `lists/x.txt:2: "!#include" is not followed (name the included list in the policy itself): "!#include tiktok-extra.txt"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := "good.example\n" + tc.line + "\nafter.example\n"
			l, err := Parse("lists/x.txt", []byte(data))
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.wantErr)
			var pe *ParseError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "lists/x.txt", pe.File)
			assert.Equal(t, 2, pe.Line)
			if tc.wantMsg != "" {
				assert.Equal(t, tc.wantMsg, err.Error())
			}
			// The bad line is skipped, never the rest of the file.
			assert.True(t, l.Contains("good.example"))
			assert.True(t, l.Contains("after.example"))
		})
	}
}

// TestParseAddressesAreNotNames: an address is reported however a list
// writes it, as a line of an address alone is; none is kept as a name of
// digits (which no query asks for, and which would count as an entry, so
// that a file of addresses alone loaded as a list blocking nothing).
func TestParseAddressesAreNotNames(t *testing.T) {
	data := strings.Join([]string{
		"||10.0.0.1^",                // 1: Adblock
		"*.10.0.0.2",                 // 2: leading wildcard
		"0.0.0.0 10.0.0.3",           // 3: hosts line, read the fast way
		"0.0.0.0 10.0.0.4 a.example", // 4: hosts line, read the general way
		"127.0.0.1  127.0.0.1",       // 5
		"\uff11\uff10.0.0.5",         // 6: full-width digits
		"||1.2.3^",                   // 7: digits that are no address
		"0.0.0.0 0.0.0.0",            // 8: a standard hosts name, skipped silently
		"||b.example^",               // 9
		"4.3.2.1.in-addr.arpa",       // 10: a name with digits
		"||2001:db8::1^",             // 11: IPv6
		"0.0.0.0 ::1",                // 12
		"",
	}, "\n")
	l, warn := Parse("lists/ips.txt", []byte(data))
	var got []string
	for e := range l.All() {
		got = append(got, fmt.Sprintf("%s:%d", e.Name, e.Line))
	}
	assert.Equal(t, []string{"a.example:4", "b.example:9", "4.3.2.1.in-addr.arpa:10"}, got)
	assert.EqualError(t, warn, strings.Join([]string{
		`lists/ips.txt:1: an address alone is not a domain name (to block the answers that hold 10.0.0.1, as Blocky reads an address in a denylist, write "32.1.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "||10.0.0.1^"`,
		`lists/ips.txt:2: an address alone is not a domain name (to block the answers that hold 10.0.0.2, as Blocky reads an address in a denylist, write "32.2.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "*.10.0.0.2"`,
		`lists/ips.txt:3: an address alone is not a domain name (to block the answers that hold 10.0.0.3, as Blocky reads an address in a denylist, write "32.3.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "10.0.0.3"`,
		`lists/ips.txt:4: an address alone is not a domain name (to block the answers that hold 10.0.0.4, as Blocky reads an address in a denylist, write "32.4.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "10.0.0.4"`,
		`lists/ips.txt:5: an address alone is not a domain name (to block the answers that hold 127.0.0.1, as Blocky reads an address in a denylist, write "32.1.0.0.127.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "127.0.0.1"`,
		`lists/ips.txt:6: an address alone is not a domain name (to block the answers that hold 10.0.0.5, as Blocky reads an address in a denylist, write "32.5.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "１０.0.0.5"`,
		`lists/ips.txt:7: invalid IP address: "||1.2.3^"`,
		`lists/ips.txt:11: an address alone is not a domain name (to block the answers that hold 2001:db8::1, as Blocky reads an address in a denylist, write "128.1.zz.db8.2001.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "||2001:db8::1^"`,
		`lists/ips.txt:12: an address alone is not a domain name (to block the answers that hold ::1, as Blocky reads an address in a denylist, write "128.1.zz.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "::1"`,
	}, "\n"))
	for _, n := range []string{"10.0.0.1", "10.0.0.2", "x.10.0.0.2", "10.0.0.3", "10.0.0.4", "127.0.0.1", "10.0.0.5", "1.2.3", "0.0.0.0"} {
		_, ok := l.Match(n)
		assert.False(t, ok, "%s matched", n)
	}
	for _, n := range []string{"a.example", "www.b.example", "4.3.2.1.in-addr.arpa"} {
		_, ok := l.Match(n)
		assert.True(t, ok, "%s not matched", n)
	}

	// A file of addresses alone has no entry: its owner is told it blocks
	// nothing (the resolver refuses a list of only bad lines).
	l, warn = Parse("lists/ips.txt", []byte("||10.0.0.1^\n0.0.0.0 10.0.0.3\n*.10.0.0.2\n"))
	assert.Equal(t, 0, l.Len())
	n, first := BadLines(warn)
	assert.Equal(t, 3, n)
	assert.EqualError(t, first, `lists/ips.txt:1: an address alone is not a domain name (to block the answers that hold 10.0.0.1, as Blocky reads an address in a denylist, write "32.1.0.0.10.rpz-ip CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): "||10.0.0.1^"`)
}

// TestParseAddressesOfEveryDigit: an address is told from a name by
// its digits and dots alone, 9 among them (`9.9.9.9`, `192.0.2.9` are
// addresses; `1.2.3.4.5x`, with a letter last, and `cafe.de`, of
// hexadecimal letters, are names), glued to a name too, and an IPv6
// address of hexadecimal letters, in either case, starts a hosts line; an
// IPv4-mapped
// address is named as the IPv4 address a policy zone matches, a zoned one
// without its zone; and a hosts line whose address is invalid blocks none
// of its names.
func TestParseAddressesOfEveryDigit(t *testing.T) {
	data := strings.Join([]string{
		"9.9.9.9",                     // 1: read the fast way
		"||192.0.2.9^",                // 2
		"0.0.0.0 192.0.2.9tiktok.com", // 3
		"9.9.9.9tiktok.com",           // 4
		"300.0.0.1 tiktok.com",        // 5
		"::ffff:10.0.0.9",             // 6
		"fe80::a%eth0",                // 7
		"192.0..1",                    // 8
		"cafe.de # a name of hexadecimal letters", // 9
		"1.2.3.4.5x",             // 10
		"fe80::a%lo0 tiktok.com", // 11: a hosts line of IPv6
		"FE80::B%lo0 capcut.com", // 12: in capitals
		"",
	}, "\n")
	l, warn := Parse("lists/ips.txt", []byte(data))
	assert.Equal(t, []string{"cafe.de@9", "1.2.3.4.5x@10", "tiktok.com@11", "capcut.com@12"}, entries(l))
	hold := func(line int, a, trigger, text string) string {
		return fmt.Sprintf(`lists/ips.txt:%d: an address alone is not a domain name (to block the answers that hold %s, as Blocky reads an address in a denylist, write "%s CNAME ." in a policy zone, a file ending .rpz; "CNAME rpz-passthru." there lets them through): %q`, line, a, trigger, text)
	}
	assert.EqualError(t, warn, strings.Join([]string{
		hold(1, "9.9.9.9", "32.9.9.9.9.rpz-ip", "9.9.9.9"),
		hold(2, "192.0.2.9", "32.9.2.0.192.rpz-ip", "||192.0.2.9^"),
		`lists/ips.txt:3: an address glued to a name (a hosts line without white space after its address; write "192.0.2.9 tiktok.com"): "192.0.2.9tiktok.com"`,
		`lists/ips.txt:4: an address glued to a name (a hosts line without white space after its address; write "9.9.9.9 tiktok.com"): "9.9.9.9tiktok.com"`,
		`lists/ips.txt:5: invalid IP address: "300.0.0.1"`,
		hold(6, "10.0.0.9", "32.9.0.0.10.rpz-ip", "::ffff:10.0.0.9"),
		hold(7, "fe80::a", "128.a.zz.fe80.rpz-ip", "fe80::a%eth0"),
		`lists/ips.txt:8: invalid IP address: "192.0..1"`,
	}, "\n"))
}

// TestParseErrorNamesFileAndLine: a bad line reads `file:line: what is
// wrong: "token"`, a skipped record of a policy zone `file:line: owner:
// what is wrong` (its first line too), and one of a zone transfer, which
// has no lines, `source owner: what is wrong`.
func TestParseErrorNamesFileAndLine(t *testing.T) {
	err := errors.New("what is wrong")
	for _, tc := range []struct {
		pe   ParseError
		want string
	}{
		{ParseError{File: "x.txt", Line: 1, Text: "tok", Err: err}, `x.txt:1: what is wrong: "tok"`},
		{ParseError{File: "x.rpz", Line: 1, Owner: "a.example.", Err: err}, "x.rpz:1: a.example.: what is wrong"},
		{ParseError{File: "x.rpz", Line: 7, Owner: "a.example.", Err: err}, "x.rpz:7: a.example.: what is wrong"},
		{ParseError{File: "axfr://192.0.2.53/rpz.example", Owner: "a.example.", Err: err}, "axfr://192.0.2.53/rpz.example a.example.: what is wrong"},
	} {
		assert.Equal(t, tc.want, tc.pe.Error())
	}
}

// TestAdblockRulesForDNS: the Adblock rules that mean, for a DNS name, a
// name and the names below it (AdGuard DNS filtering syntax) block them;
// those that mean something else are reported and block nothing.
func TestAdblockRulesForDNS(t *testing.T) {
	data := strings.Join([]string{
		"[Adblock Plus 2.0]",
		"||tiktok.com^$important",                // 2: ranks it above exceptions only
		"||*.tiktokcdn.com^",                     // 3: the names below tiktokcdn.com
		"||tiktokv.com^|",                        // 4: ^| ends the address as ^ does
		"||capcut.com^$dnstype=AAAA",             // 5: AAAA queries only
		"|lemon8.com^",                           // 6: lemon8.com alone
		"lark.com^",                              // 7: any name ending in lark.com
		"||pangle.io^$important,client=10.0.0.1", // 8: one client only
		"",
	}, "\n")
	l, warn := Parse("lists/adguard.txt", []byte(data))
	assert.EqualError(t, warn, strings.Join([]string{
		`lists/adguard.txt:5: adblock options ($...) are not supported: "||capcut.com^$dnstype=AAAA"`,
		`lists/adguard.txt:6: adblock rules must have the form ||name^: "|lemon8.com^"`,
		`lists/adguard.txt:7: adblock rules must have the form ||name^: "lark.com^"`,
		`lists/adguard.txt:8: adblock options ($...) are not supported: "||pangle.io^$important,client=10.0.0.1"`,
	}, "\n"))
	for query, want := range map[string]string{
		"tiktok.com":         "tiktok.com:2",
		"www.tiktok.com":     "tiktok.com:2",
		"p16.tiktokcdn.com":  "tiktokcdn.com:3",
		"tiktokcdn.com":      "tiktokcdn.com:3", // as `*.tiktokcdn.com` reads
		"api.tiktokv.com":    "tiktokv.com:4",
		"nottiktok.com":      "",
		"tiktok.com.example": "",
		"capcut.com":         "",
		"lemon8.com":         "",
		"lark.com":           "",
		"pangle.io":          "",
	} {
		got := ""
		if e, ok := l.Match(query); ok {
			got = fmt.Sprintf("%s:%d", e.Name, e.Line)
		}
		assert.Equal(t, want, got, query)
	}
}

// TestBracketLineReportedUnlessHeader: a line in brackets whole is an
// Adblock header and skipped; a line that only starts with `[` is no
// header, and is reported with its file and line, not skipped in silence:
// `[*.]capcut.com`, Chrome's pattern for capcut.com and the names below
// it, blocked nothing with no word.
func TestBracketLineReportedUnlessHeader(t *testing.T) {
	data := strings.Join([]string{
		"[Adblock Plus 2.0]", // 1: header
		"  [AdGuard]  ",      // 2: header
		"[*.]capcut.com",     // 3: Chrome's pattern
		"[::] lemon8.com",    // 4: a hosts line with its address in brackets
		"[||pangle.io^",      // 5: a stray bracket
		"||tiktok.com^",      // 6
		"",
	}, "\n")
	l, warn := Parse("lists/adguard.txt", []byte(data))
	assert.EqualError(t, warn, strings.Join([]string{
		`lists/adguard.txt:3: wildcards are only allowed as a leading "*.": "[*.]capcut.com"`,
		`lists/adguard.txt:4: unexpected text after the entry: "lemon8.com"`,
		`lists/adguard.txt:5: adblock rules must have the form ||name^: "[||pangle.io^"`,
	}, "\n"))
	assert.Equal(t, 1, l.Len())
	for query, want := range map[string]bool{
		"tiktok.com":     true,
		"www.tiktok.com": true,
		"capcut.com":     false,
		"lemon8.com":     false,
		"pangle.io":      false,
	} {
		_, ok := l.Match(query)
		assert.Equal(t, want, ok, query)
	}

	// A file of headers alone is an empty list, as before.
	l, warn = Parse("lists/adguard.txt", []byte("[Adblock Plus 2.0]\n[AdGuard]\n"))
	assert.NoError(t, warn)
	assert.Equal(t, 0, l.Len())
}

func TestParseReportsEveryBadLineBounded(t *testing.T) {
	var b strings.Builder
	for i := 0; i < maxReported+10; i++ {
		b.WriteString("bad..name\n")
	}
	b.WriteString("ok.example\n")
	l, err := Parse("junk.txt", []byte(b.String()))
	require.Error(t, err)
	assert.Equal(t, maxReported+1, strings.Count(err.Error(), "\n")+1)
	assert.Contains(t, err.Error(), "junk.txt: 10 more bad lines not shown")
	assert.Equal(t, 1, l.Len())
	n, first := BadLines(err)
	assert.Equal(t, maxReported+10, n, "those not shown counted too")
	assert.EqualError(t, first, `junk.txt:1: empty label: "bad..name"`)
}

// TestParseReportsLongLinesCut: the text of a bad line is kept and shown
// up to maxReportedText octets and its length. A list's line is as long
// as the list (a URL's body up to sources.max_bytes): 100 lines of one
// 600,000-octet token were kept whole, 60 MB in the warnings a snapshot
// holds, and logged as one line of 60 MB.
func TestParseReportsLongLinesCut(t *testing.T) {
	token := strings.Repeat("é", 300000) // 600,000 octets, no character cut in two
	var b strings.Builder
	b.WriteString("ok.example\n")
	const lines = 10
	for range lines {
		b.WriteString(token + "..example\n")
	}
	l, err := Parse("long.txt", []byte(b.String()))
	require.Error(t, err)
	assert.Equal(t, 1, l.Len())
	n, first := BadLines(err)
	assert.Equal(t, lines, n)
	require.NotNil(t, first)
	assert.LessOrEqual(t, len(first.Text), maxReportedText+32, "the text kept")
	assert.True(t, utf8.ValidString(first.Text), "cut at a character's start")
	assert.True(t, strings.HasPrefix(first.Text, token[:maxReportedText]))
	assert.True(t, strings.HasSuffix(first.Text, "… (600009 octets)"), first.Text[maxReportedText:])
	assert.Less(t, len(err.Error()), lines*(maxReportedText+100), "the text of every bad line shown")
}

func TestDuplicates(t *testing.T) {
	l, err := Parse("d.txt", []byte("a.example\n*.A.example\nb.example\n"))
	require.NoError(t, err)
	assert.Equal(t, 2, l.Len())
	assert.Equal(t, []Duplicate{{Name: "a.example", Line: 2, FirstLine: 1}}, l.Duplicates())
}

func TestMatch(t *testing.T) {
	l, err := Parse("lists/tiktok.txt", []byte(strings.Join([]string{
		"# TikTok",
		"tiktok.com",
		"tiktokv.com.edgekey.net",
		"www.deep.example",
		"deep.example",
		"xn--bcher-kva.example",
	}, "\n")))
	require.NoError(t, err)

	tests := []struct {
		name      string
		query     string
		wantEntry string
		wantLine  int
	}{
		{name: "exact", query: "tiktok.com", wantEntry: "tiktok.com", wantLine: 2},
		{name: "trailing dot", query: "tiktok.com.", wantEntry: "tiktok.com", wantLine: 2},
		{name: "subdomain", query: "www.tiktok.com.", wantEntry: "tiktok.com", wantLine: 2},
		{name: "deep subdomain", query: "a.b.c.d.e.tiktok.com", wantEntry: "tiktok.com", wantLine: 2},
		{name: "mixed case", query: "WwW.TikTok.CoM.", wantEntry: "tiktok.com", wantLine: 2},
		{name: "label scoped in shared zone", query: "x.tiktokv.com.edgekey.net.", wantEntry: "tiktokv.com.edgekey.net", wantLine: 3},
		{name: "most specific entry wins", query: "a.www.deep.example", wantEntry: "www.deep.example", wantLine: 4},
		{name: "idn", query: "www.xn--bcher-kva.example.", wantEntry: "xn--bcher-kva.example", wantLine: 6},
		{name: "look-alike prefix", query: "nottiktok.com."},
		{name: "look-alike suffix", query: "tiktok.com.example.org."},
		{name: "other tld", query: "tiktok.co."},
		{name: "shared parent", query: "edgekey.net."},
		{name: "sibling in shared zone", query: "other.edgekey.net."},
		{name: "parent of entry", query: "com."},
		{name: "root", query: "."},
		{name: "empty", query: ""},
		{name: "escaped dot is not a boundary", query: `x\.tiktok.com.`},
		{name: "escaped dot in entry label", query: `tiktok\.com.`},
		{name: "escaped backslash then dot", query: `x\\.tiktok.com.`, wantEntry: "tiktok.com", wantLine: 2},
		{name: "label of 63 escaped octets", query: strings.Repeat(`\001`, 63) + ".tiktok.com.", wantEntry: "tiktok.com", wantLine: 2},
		{name: "name of 255 octets", query: strings.Repeat(`\001`, 63) + "." + strings.Repeat(`\255`, 63) + "." + strings.Repeat(`\000`, 63) + "." + strings.Repeat("a", 50) + ".tiktok.com.", wantEntry: "tiktok.com", wantLine: 2},
		{name: "name too long to exist matches by its last labels", query: strings.Repeat("a.", 300) + "tiktok.com", wantEntry: "tiktok.com", wantLine: 2},
		{name: "decimal escapes spell the entry", query: `www.\116\105\107\116\111\107.com.`, wantEntry: "tiktok.com", wantLine: 2},
		{name: "escaped upper-case letters", query: `www.\084IKTOK.\C\O\M`, wantEntry: "tiktok.com", wantLine: 2},
		{name: "escaped letters in a deeper entry", query: `x.www.d\eep.\101xample`, wantEntry: "www.deep.example", wantLine: 4},
		{name: "escaped specials below an entry", query: `\(\)\"\;\ .tiktok.com`, wantEntry: "tiktok.com", wantLine: 2},
		{name: "label of 64 octets above an entry", query: strings.Repeat(`\001`, 64) + ".tiktok.com.", wantEntry: "tiktok.com", wantLine: 2},
		// Upper case sends the label to foldLabel, which stops at the 64th
		// octet; deep.example has a name below it, so the walk goes on to it.
		{name: "label of 64 upper-case octets above an entry with names below it", query: strings.Repeat("A", 64) + ".deep.example.", wantEntry: "deep.example", wantLine: 5},
		{name: "escaped dot ends the name", query: `tiktok.com\.`},
		{name: "control octet inside the entry label", query: `tik\000tok.com`},
		{name: "octet over 127 is no letter", query: `tiktok.co\205`},
		{name: "escaped dot joins entry labels under a zone", query: `tiktok\.com.example.`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := l.Match(tc.query)
			if tc.wantEntry == "" {
				assert.False(t, ok, "matched %q", e.Name)
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.wantEntry, e.Folded())
			assert.True(t, strings.HasSuffix(strings.TrimSuffix(tc.query, "."), e.Name),
				"Name %q is the query's own spelling of the entry", e.Name)
			assert.Equal(t, tc.wantLine, e.Line)
			assert.Equal(t, "lists/tiktok.txt", e.List.File())
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	l, err := Parse("t.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	long := strings.Repeat(`\001`, 63) + ".tiktok.com."
	allocs := testing.AllocsPerRun(100, func() {
		l.Match("A.B.WWW.TikTok.com.")
		l.Match("www.example.org.")
		l.Match(`www.\116iktok.com.`) // escaped octets, decoded in place
		l.Match(long)
	})
	assert.Zero(t, allocs)
}

func TestLargeListGrowsAndMatches(t *testing.T) {
	// Parse sizes the table from the line count; build one larger than that
	// estimate by putting many names on hosts lines, forcing growth.
	var b strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "0.0.0.0 a%d.example b%d.example c%d.example\n", i, i, i)
	}
	l, err := Parse("big.txt", []byte(b.String()))
	require.NoError(t, err)
	assert.Equal(t, 6000, l.Len())
	for i := 0; i < 2000; i++ {
		e, ok := l.Match(fmt.Sprintf("x.c%d.example.", i))
		require.True(t, ok)
		assert.Equal(t, i+1, e.Line)
	}
	_, ok := l.Match("d1.example")
	assert.False(t, ok)
}

func TestNormalizeName(t *testing.T) {
	n, err := NormalizeName("WWW.Bücher.Example.")
	require.NoError(t, err)
	assert.Equal(t, "www.xn--bcher-kva.example", n)
	_, err = NormalizeName("a..b")
	assert.ErrorIs(t, err, ErrEmptyLabel)
	// ToASCII, as explain converts a typed name, keeps a trailing dot.
	a, err := ToASCII("b\u00fccher.example.")
	require.NoError(t, err)
	assert.Equal(t, "xn--bcher-kva.example.", a)
}

func TestParseRanges(t *testing.T) {
	data := strings.Join([]string{
		"# government ranges",
		"10.0.0.0/8",
		"192.0.2.7        # a single host",
		"2001:db8::/32",
		"::ffff:198.51.100.0/120",
		"10.1.2.3/8",
		"not-an-ip",
		"10.0.0.0/33",
		"fe80::1%eth0",
		"10.0.0.0/8 extra",
		"172.16.0.0/12\u00a0# a comment after a no-break space",
		"10.0.0.0/-1",
		"2001:db8::/129",
		"::ffff:10.0.0.0/129",
		"10.0.0.0/x",
		"10.0.0.0/08",
		"fe80::%eth0/200",
	}, "\n")
	rf, err := ParseRanges("networks/gov.txt", []byte(data))
	require.Error(t, err)
	var got []string
	for _, r := range rf.Ranges {
		got = append(got, fmt.Sprintf("%s@%d", r.Prefix, r.Line))
	}
	assert.Equal(t, []string{"10.0.0.0/8@2", "192.0.2.7/32@3", "2001:db8::/32@4", "198.51.100.0/24@5", "172.16.0.0/12@11"}, got)
	assert.Equal(t, strings.Join([]string{
		`networks/gov.txt:6: prefix has host bits set, did you mean 10.0.0.0/8: "10.1.2.3/8"`,
		`networks/gov.txt:7: a name is not a client range (write its IP address or CIDR prefix): "not-an-ip"`,
		`networks/gov.txt:8: prefix length /33 is longer than an IPv4 address (at most /32): "10.0.0.0/33"`,
		`networks/gov.txt:9: a zone (%…) has no place in a client range: clients are matched by their address alone, did you mean fe80::1/128: "fe80::1%eth0"`,
		`networks/gov.txt:10: unexpected text after the entry: "extra"`,
		`networks/gov.txt:12: prefix length /-1 is negative (an IPv4 prefix is /0 to /32): "10.0.0.0/-1"`,
		`networks/gov.txt:13: prefix length /129 is longer than an IPv6 address (at most /128): "2001:db8::/129"`,
		`networks/gov.txt:14: prefix length /129 is longer than an IPv6 address (at most /128): "::ffff:10.0.0.0/129"`,
		`networks/gov.txt:15: the prefix length after the slash is missing or not a number: "10.0.0.0/x"`,
		`networks/gov.txt:16: a prefix length is written without leading zeros, did you mean 10.0.0.0/8: "10.0.0.0/08"`,
		`networks/gov.txt:17: a zone (%…) has no place in a client range: clients are matched by their address alone: "fe80::%eth0/200"`,
	}, "\n"), err.Error())
	assert.True(t, errors.Is(err, ErrHostBits))
	_, lengthErr := ParsePrefix("10.0.0.0/33")
	assert.ErrorIs(t, lengthErr, ErrBadRange, "a prefix length out of range is a bad range")
}

// TestParseRangesURL: a URL in a range file is named as one, not as a bad
// address (issue 17).
func TestParseRangesURL(t *testing.T) {
	rf, err := ParseRanges("networks/gov.txt", []byte("10.9.0.0/16\nhttps://example.org/gov-ranges.txt\n"))
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrRangeURL)
	assert.Equal(t, `networks/gov.txt:2: a URL is not a client range (write an IP address or CIDR prefix, e.g. 10.0.0.0/8; ranges at URLs are not supported yet): "https://example.org/gov-ranges.txt"`, err.Error())
	require.Len(t, rf.Ranges, 1, "the good line still loads")
}

// TestParseRangesSaysWhatIsWrong: a range line netip does not read is
// reported with what is wrong with it and, where one range is certainly
// meant, that range, as the configuration's clients are (they share
// ParsePrefix): a first-last range, a netmask, an IPv4 address of fewer
// than four parts (BIND's `10/8`), a zone, a length with a leading zero.
// A name with one dash is a name, not a first-last range.
func TestParseRangesSaysWhatIsWrong(t *testing.T) {
	tests := []struct {
		line string
		is   error
		want string
	}{
		{"10.0.0.0-10.0.0.255", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes), did you mean 10.0.0.0/24"},
		{"2001:db8::-2001:db8::ffff", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes), did you mean 2001:db8::/112"},
		{"::ffff:10.0.0.0-::ffff:10.0.0.255", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes), did you mean 10.0.0.0/24"},
		{"::10.0.0.0-::10.0.0.255", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes), did you mean 10.0.0.0/24"},
		{"::10.0.0.0-::a00:ff", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes), did you mean 10.0.0.0/24"},
		{"10.0.0.1-10.0.0.9", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes)"},
		{"10.0.0.255-10.0.0.0", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes)"},
		{"10.0.0.0-::1", ErrRangeDash, "a range written first-last is not read (write it as CIDR prefixes)"},
		{"gov-net", ErrRangeName, "a name is not a client range (write its IP address or CIDR prefix)"},
		{"10.0.0.0/8,10.1.0.0/16", ErrRangeList, "several ranges in one entry (write one range a line)"},
		{"10.0.0.0/8;10.1.0.0/16", ErrRangeList, "several ranges in one entry (write one range a line)"},
		{"10.1.2.3/255.255.255.0", ErrNetmask, "a netmask after the slash, where a CIDR prefix has a length, did you mean 10.1.2.0/24"},
		{"10.0.0.0/255.0.255.0", ErrNetmask, "a netmask after the slash, where a CIDR prefix has a length"},
		{"10/8", ErrShortIPv4, "an IPv4 address is four numbers (a.b.c.d), did you mean 10.0.0.0/8"},
		{"172.16/12", ErrShortIPv4, "an IPv4 address is four numbers (a.b.c.d), did you mean 172.16.0.0/12"},
		{"10.1/8", ErrShortIPv4, "an IPv4 address is four numbers (a.b.c.d)"},
		{"10.0.1", ErrShortIPv4, "an IPv4 address is four numbers (a.b.c.d)"},
		{"fe80::%eth0/64", ErrRangeZone, "a zone (%…) has no place in a client range: clients are matched by their address alone, did you mean fe80::/64"},
		{"10.0.0.0/", ErrLengthText, "the prefix length after the slash is missing or not a number"},
		{"10.0.0.0/8x", ErrLengthText, "the prefix length after the slash is missing or not a number"},
		{"10.0.0.1/032", ErrLengthZero, "a prefix length is written without leading zeros, did you mean 10.0.0.1/32"},
		{"10.0.0.0/00", ErrLengthZero, "a prefix length is written without leading zeros"},
		{"::ffff:10.0.0.0/95", ErrMappedShort, "an IPv4-mapped prefix (::ffff:a.b.c.d/n) is /96 or longer: a shorter one holds addresses that are not IPv4"},
		{"256.0.0.0/8", ErrBadRange, "not an IP address or CIDR prefix"},
		{"10.0.0.0/+8", ErrBadRange, "not an IP address or CIDR prefix"},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			rf, err := ParseRanges("ranges.txt", []byte("10.9.0.0/16\n"+tc.line+"\n"))
			require.Len(t, rf.Ranges, 1, "the good line still loads")
			assert.ErrorIs(t, err, tc.is)
			assert.EqualError(t, err, fmt.Sprintf("ranges.txt:2: %s: %q", tc.want, tc.line))
			_, meant, offered := strings.Cut(tc.want, ", did you mean ")
			e, typed := errors.AsType[*RangeMeantError](err)
			require.Equal(t, offered, typed, "a range offered is a RangeMeantError's")
			if typed {
				assert.Equal(t, meant, e.Meant.String())
			}
		})
	}
}

// TestParsePrefixSpacedList: ranges a configuration's clients entry holds
// apart by white space (a range file reads its first field only) are
// several ranges in one entry, as those apart by commas are, not a bad
// prefix length.
func TestParsePrefixSpacedList(t *testing.T) {
	_, err := ParsePrefix("10.0.0.0/8 10.1.0.0/16")
	assert.ErrorIs(t, err, ErrRangeList)
}

// TestParseReportsTextAtTheBound: a bad line's text of maxReportedText
// octets is kept whole; a longer one is cut at a character's start, which
// may leave none of it (a line of continuation octets, as a binary file
// that holds no NUL has), never a piece of a character.
func TestParseReportsTextAtTheBound(t *testing.T) {
	whole := strings.Repeat("a", maxReportedText-4) + "..ex"
	_, err := Parse("long.txt", []byte("ok.example\n"+whole+"\n"))
	_, first := BadLines(err)
	require.NotNil(t, first)
	assert.Equal(t, whole, first.Text)

	_, err = Parse("junk.txt", []byte("ok.example\n"+strings.Repeat("\x80", 1100)+"\n"))
	_, first = BadLines(err)
	require.NotNil(t, first)
	assert.ErrorIs(t, first, ErrNotUTF8Name)
	assert.Equal(t, "… (1100 octets)", first.Text)
}

// TestBadLinesOfAnotherError: an error that is no ParseError (one a
// caller joined to a file's) is one bad line of no file: counted, not
// skipped in any file.
func TestBadLinesOfAnotherError(t *testing.T) {
	other := errors.New("no such file")
	n, first := BadLines(other)
	assert.Equal(t, 1, n)
	assert.Nil(t, first)
	_, warn := Parse("x.txt", []byte("bad..name\nok.example\n"))
	n, first = BadLines(errors.Join(warn, other))
	assert.Equal(t, 2, n)
	require.NotNil(t, first)
	assert.Equal(t, 1, first.Line)
	assert.Equal(t, map[string]int{"x.txt": 1}, Skipped(errors.Join(warn, other)))
}

// TestBadLineHidesURLPassword: a URL pasted into a list or a client range
// file with a password or token before its @ is reported with it hidden,
// as everywhere a URL is written (README "Configuration errors"): the
// report goes to check's output, the journal and the log at every reload.
func TestBadLineHidesURLPassword(t *testing.T) {
	const secret = "hunter2"
	_, err := Parse("lists/x.txt", []byte("tiktok.com\nhttps://user:"+secret+"@lists.example.gov/tiktok.txt\n||https://tok:"+secret+"@example.org/l.txt^\n"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
	assert.Contains(t, err.Error(), `"https://xxxxx@lists.example.gov/tiktok.txt"`)
	_, first := BadLines(err)
	require.NotNil(t, first)
	assert.Equal(t, "https://xxxxx@lists.example.gov/tiktok.txt", first.Text, "the text kept, and logged, hides it too")
	_, err = ParseRanges("networks/gov.txt", []byte("10.9.0.0/16\nhttps://user:"+secret+"@example.org/gov-ranges.txt\n"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
	assert.Contains(t, err.Error(), `"https://xxxxx@example.org/gov-ranges.txt"`)
	// An RPZ record's reason quotes its data: a CNAME target.
	_, err = Parse("lists/x.rpz", []byte("$TTL 300\n@ SOA a. b. 1 1 1 1 1\n@ NS a.\nx.example CNAME .\ny.example CNAME https://user:"+secret+"@example.org/l.txt\n"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
	// A list of bad lines alone is refused whole, naming its first.
	_, err = Parse("lists/x.txt", []byte("https://user:"+secret+"@lists.example.gov/tiktok.txt\n"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secret)
}

// TestParseRangesReportsEveryLine: in a client range file only `#`
// starts a comment. A line a list would skip as an Adblock comment or
// header (`!`, `[`) is a range the operator wrote: each is reported as
// file:line with what was meant, never dropped without a word, and the
// good line beside it still loads.
func TestParseRangesReportsEveryLine(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string // the error; "" for a comment
	}{
		{name: "IPv6 prefix in brackets", line: "[2001:db8::]/32",
			want: `ranges.txt:2: a client range is written without brackets, did you mean 2001:db8::/32: "[2001:db8::]/32"`},
		{name: "IPv6 address in brackets", line: "[2001:db8::1]",
			want: `ranges.txt:2: a client range is written without brackets, did you mean 2001:db8::1/128: "[2001:db8::1]"`},
		{name: "IPv4 prefix in brackets", line: "[10.0.0.0/8]",
			want: `ranges.txt:2: a client range is written without brackets, did you mean 10.0.0.0/8: "[10.0.0.0/8]"`},
		{name: "bracketed with a comment", line: "  [2001:db8::]/32   # v6 devices",
			want: `ranges.txt:2: a client range is written without brackets, did you mean 2001:db8::/32: "[2001:db8::]/32"`},
		{name: "section header", line: "[section]",
			want: `ranges.txt:2: a name is not a client range (write its IP address or CIDR prefix): "[section]"`},
		{name: "adblock header", line: "[Adblock Plus 2.0]",
			want: `ranges.txt:2: not an IP address or CIDR prefix: "[Adblock Plus 2.0]"`},
		// Only the range in brackets, or a prefix length after them, is
		// offered: `[10.0.0.1]0` does not mean 10.0.0.10.
		{name: "brackets and a digit after them", line: "[10.0.0.1]0",
			want: `ranges.txt:2: not an IP address or CIDR prefix: "[10.0.0.1]0"`},
		{name: "brackets and host bits", line: "[10.1.2.3/8]",
			want: `ranges.txt:2: not an IP address or CIDR prefix: "[10.1.2.3/8]"`},
		{name: "negated range", line: "!10.0.0.0/8",
			want: `ranges.txt:2: "!" is neither a comment nor an exclusion in a client range file (comments start with "#"; to leave devices out, put their range in a policy of its own): "!10.0.0.0/8"`},
		{name: "adblock comment", line: "! press office",
			want: `ranges.txt:2: "!" is neither a comment nor an exclusion in a client range file (comments start with "#"; to leave devices out, put their range in a policy of its own): "! press office"`},
		{name: "IPv4-compatible address", line: "::10.0.0.1",
			want: `ranges.txt:2: an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client, did you mean 10.0.0.1/32: "::10.0.0.1"`},
		{name: "IPv4-compatible prefix", line: "::10.2.0.0/112",
			want: `ranges.txt:2: an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client, did you mean 10.2.0.0/16: "::10.2.0.0/112"`},
		{name: "unspecified address", line: "0.0.0.0",
			want: `ranges.txt:2: the unspecified address (0.0.0.0, ::) is every address only where a server listens; as a client range it matches no client, did you mean 0.0.0.0/0: "0.0.0.0"`},
		// In hex, as netip and Python's ipaddress print ::10.2.0.0/112.
		{name: "IPv4-compatible prefix in hex", line: "::a02:0/112",
			want: `ranges.txt:2: an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client, did you mean 10.2.0.0/16: "::a02:0/112"`},
		{name: "lines that end in CR alone", line: "10.2.0.0/16\r10.3.0.0/16",
			want: `ranges.txt:2: a carriage return inside the line: lines that end in CR alone (as classic Mac OS saved them) are one line here; save the file with LF or CRLF line ends: "10.2.0.0/16"`},
		{name: "comment", line: "# [2001:db8::]/32"},
		{name: "indented comment", line: "\t# !10.0.0.0/8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rf, err := ParseRanges("ranges.txt", []byte("10.1.0.0/16\n"+tc.line+"\n"))
			require.Len(t, rf.Ranges, 1, "the good line loads")
			assert.Equal(t, netip.MustParsePrefix("10.1.0.0/16"), rf.Ranges[0].Prefix)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tc.want)
			n, first := BadLines(err)
			assert.Equal(t, 1, n)
			require.NotNil(t, first)
			assert.Equal(t, 2, first.Line)
		})
	}
}

func TestParsePrefix(t *testing.T) {
	p, err := ParsePrefix("::ffff:10.0.0.1")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParsePrefix("10.0.0.1/32"), p)
	p, err = ParsePrefix("::1")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParsePrefix("::1/128"), p)
	// An IPv4-mapped prefix is the IPv4 prefix 96 bits shorter; one shorter
	// than /96 holds addresses that are not IPv4-mapped, and no IPv4 prefix
	// says it.
	p, err = ParsePrefix("::ffff:10.0.0.0/104")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParsePrefix("10.0.0.0/8"), p)
	p, err = ParsePrefix("::ffff:0.0.0.0/96")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParsePrefix("0.0.0.0/0"), p)
	_, err = ParsePrefix("::ffff:0.0.0.0/95")
	assert.ErrorIs(t, err, ErrMappedShort)
	_, meant := Meant("::ffff:0.0.0.0/95", err)
	assert.False(t, meant, "no range meant to name")
	// IPv4-compatible (::a.b.c.d) as an address and as a prefix of /96 and
	// longer, down to ::0.0.0.0/96, is no client's range, written with
	// dots or in hex; so are ::1 and :: written with dots, and every other
	// address of ::/96.
	for _, s := range []string{"::10.0.0.1", "::10.0.0.0/104", "::0.0.0.0/96",
		"::a00:1", "::a00:0/104", "::/96", "::/127", "::2", "::0.0.0.1", "::0.0.0.0"} {
		_, err = ParsePrefix(s)
		assert.ErrorIs(t, err, ErrIPv4Compatible, s)
	}
	for _, s := range []string{"::0.0.0.0/96", "::/96"} {
		_, err = ParsePrefix(s)
		assert.EqualError(t, err, "an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291) matches no client, did you mean 0.0.0.0/0", s)
	}
	// ::1 in hex is the loopback address.
	for _, s := range []string{"::1", "::1/128"} {
		p, err = ParsePrefix(s)
		require.NoError(t, err, s)
		assert.Equal(t, netip.MustParsePrefix("::1/128"), p, s)
	}
	// The unspecified address alone is every address only as a listen
	// address: no packet comes from it. Its network, /0, is meant.
	for s, meant := range map[string]string{"0.0.0.0": "0.0.0.0/0", "0.0.0.0/32": "0.0.0.0/0", "::ffff:0.0.0.0": "0.0.0.0/0",
		"::": "::/0", "::/128": "::/0"} {
		_, err = ParsePrefix(s)
		assert.ErrorIs(t, err, ErrUnspecified, s)
		e, ok := errors.AsType[*RangeMeantError](err)
		require.True(t, ok, s)
		assert.Equal(t, netip.MustParsePrefix(meant), e.Meant, s)
	}
	for _, s := range []string{"0.0.0.0/0", "::/0", "0.0.0.0/8"} {
		p, err = ParsePrefix(s)
		require.NoError(t, err, s)
		assert.Equal(t, netip.MustParsePrefix(s), p, s)
	}
	// Shorter than /96, the prefix holds more than the IPv4-compatible
	// addresses: it is the IPv6 range it says.
	p, err = ParsePrefix("::0.0.0.0/95")
	require.NoError(t, err)
	assert.Equal(t, netip.MustParsePrefix("::/95"), p)
}

// TestParsePrefixMeantIsTaken: the range an error names as meant ("did
// you mean 10.1.2.0/24?") is one ParsePrefix takes. An IPv4-compatible
// prefix with host bits (::10.1.2.3/120) was answered 10.1.2.3/24, itself
// refused for its host bits.
func TestParsePrefixMeantIsTaken(t *testing.T) {
	for s, want := range map[string]string{
		"::10.1.2.3/120":          "10.1.2.0/24",
		"::10.1.2.3":              "10.1.2.3/32",
		"::10.0.0.0/104":          "10.0.0.0/8",
		"::a01:203/120":           "10.1.2.0/24",
		"::0.0.0.0":               "0.0.0.0/0", // 0.0.0.0/32 is ErrUnspecified's
		"0.0.0.0/255.255.255.255": "0.0.0.0/0",
		"0.0.0.0-0.0.0.0":         "0.0.0.0/0",
		"10.1.2.3/24":             "10.1.2.0/24",
		"[10.0.0.0/8]":            "10.0.0.0/8",
		"[2001:db8::]/32":         "2001:db8::/32",
		"[2001:db8::1]":           "2001:db8::1/128",
		"2001:db8::1/32":          "2001:db8::/32",
		"::ffff:10.1.2.3/120":     "10.1.2.0/24", // IPv4-mapped: unmapped, then host bits
		// Two faults in one range, where the range meant by the second is
		// certain: a range with brackets or a zone is meant as it reads
		// without them. (Host bits beside another fault get no range
		// meant: TestParseRangesReportsEveryLine.)
		"[::10.0.0.1]":     "10.0.0.1/32",
		"[::a00:1]":        "10.0.0.1/32",
		"[0.0.0.0]":        "0.0.0.0/0",
		"::10.0.0.2%eth0":  "10.0.0.2/32",
		"::%eth0":          "::/0",
		"fe80::1%eth0/128": "fe80::1/128",
		"fe80::1%vlan-10":  "fe80::1/128", // a dash in the zone
		"fe80::1%br-lan":   "fe80::1/128",
		"::10.0.0.0/0120":  "10.0.0.0/24",
	} {
		_, err := ParsePrefix(s)
		require.Error(t, err, s)
		e, ok := errors.AsType[*RangeMeantError](err)
		if !assert.True(t, ok, "%s: %v names no range meant", s, err) {
			continue
		}
		assert.Equal(t, want, e.Meant.String(), s)
		assert.True(t, strings.HasSuffix(err.Error(), ", did you mean "+want), "%s: %v", s, err)
		_, err = ParsePrefix(e.Meant.String())
		assert.NoError(t, err, "%s: the range meant, %s, is refused", s, e.Meant)
	}
}

// TestSharedParents covers the label tree: parents stored once for many
// entries, an entry that was first only a parent of earlier entries, and
// parents that are not entries themselves.
func TestSharedParents(t *testing.T) {
	l, err := Parse("t.txt", []byte("a.tracker.example.com\nb.tracker.example.com\ntracker.example.com\nx.a.tracker.example.com\na.tracker.example.com\n"))
	require.NoError(t, err)
	assert.Equal(t, 4, l.Len())
	var names []string
	var lines []int
	for e := range l.All() {
		names = append(names, e.Name)
		lines = append(lines, e.Line)
	}
	assert.Equal(t, []string{"a.tracker.example.com", "b.tracker.example.com", "tracker.example.com", "x.a.tracker.example.com"}, names)
	assert.Equal(t, []int{1, 2, 3, 4}, lines)
	assert.Equal(t, []Duplicate{{Name: "a.tracker.example.com", Line: 5, FirstLine: 1}}, l.Duplicates())

	assert.True(t, l.Contains("tracker.example.com"))
	assert.False(t, l.Contains("example.com"), "a parent only, not an entry")
	assert.False(t, l.Contains("com"))
	assert.False(t, l.Contains("c.tracker.example.com"))

	assertMatches(t, l, map[string]string{
		"y.x.a.tracker.example.com.": "x.a.tracker.example.com", // the most specific entry
		"y.a.tracker.example.com.":   "a.tracker.example.com",
		"c.tracker.example.com.":     "tracker.example.com",
		"tracker.example.com.":       "tracker.example.com",
	})
	for _, query := range []string{"example.com.", "com.", "other.example.com.", "tracker.example.org."} {
		_, ok := l.Match(query)
		assert.False(t, ok, query)
	}
}

// assertMatches checks that each query name matches l at the entry given
// for it.
func assertMatches(t *testing.T, l *List, entries map[string]string) {
	t.Helper()
	for query, want := range entries {
		e, ok := l.Match(query)
		require.True(t, ok, query)
		assert.Equal(t, want, e.Name, query)
	}
}

// TestNodesKnowTheirChildren: a node's hasChildren bit is set exactly when
// another node has it as parent, in a small list, one whose table grew,
// and an RPZ zone's, since walk ends at a node without it: a bit missing
// would hide every longer entry below it.
func TestNodesKnowTheirChildren(t *testing.T) {
	var big strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&big, "0.0.0.0 a%d.example b.a%d.example c%d.example\n", i, i, i)
	}
	lists := map[string]func() (*List, error){
		"plain": func() (*List, error) {
			return Parse("t.txt", []byte("tiktok.com\nwww.deep.example\ndeep.example\nx.a.tracker.example.com\n"))
		},
		"grown": func() (*List, error) { return Parse("big.txt", []byte(big.String())) },
		"rpz": func() (*List, error) {
			return ParseRPZ("z.rpz", []byte("$ORIGIN rpz.example.\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\ntiktok.com CNAME .\n*.tiktok.com CNAME .\nwww.deep.example CNAME *.\n"))
		},
	}
	for name, parse := range lists {
		t.Run(name, func(t *testing.T) {
			l, err := parse()
			require.NoError(t, err)
			parents := map[uint32]bool{}
			for id := 1; id < len(l.nodes); id++ {
				parents[l.nodes[id].parent] = true
			}
			for id := range l.nodes {
				assert.Equal(t, parents[uint32(id)], l.nodes[id].n&hasChildren != 0, "node %d %q", id, l.label(uint32(id)))
				assert.LessOrEqual(t, int(l.nodes[id].size()), 63)
			}
		})
	}
	l, err := lists["grown"]()
	require.NoError(t, err)
	for i := 0; i < 2000; i += 97 {
		e, ok := l.Match(fmt.Sprintf("x.b.a%d.example.", i))
		require.True(t, ok)
		assert.Equal(t, fmt.Sprintf("b.a%d.example", i), e.Name, "past a%d.example, an entry with a child", i)
	}
}

// TestExceptionRuleOfManyAts reads a line of `@` (an exception rule of an
// exception rule, ...) of a megabyte, as a list at a URL can hold one up to
// sources.max_bytes: stripForm read it by recursing once for every `@@`, a
// frame each, so that 8 MB of `@` overflowed the goroutine stack (a fatal
// error, not a panic: the process ended). The stack is bounded here to 8
// MB, which the line overflows only by recursing.
func TestExceptionRuleOfManyAts(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(8 << 20))
	line := strings.Repeat("@", 1<<20) + "||tiktok.com^"
	l, err := Parse("ats.txt", []byte("||bytedance.com^\n"+line+"\n"))
	if !errors.Is(err, ErrException) {
		t.Fatalf("err = %v, want ErrException", err)
	}
	if l == nil || l.Len() != 1 {
		t.Fatalf("list = %v, want bytedance.com alone", l)
	}
}

// TestSkippedCountsEveryLine: Skipped counts the lines past the ones
// reported one by one, by file, and not the records applied as read
// (ParseError.Kept); a list ReadList reuses unchanged has the warnings of
// the list it stands for.
func TestSkippedCountsEveryLine(t *testing.T) {
	var b strings.Builder
	for range maxReported + 10 {
		b.WriteString("bad..name\n")
	}
	b.WriteString("ok.example\n")
	_, junk := Parse("junk.txt", []byte(b.String()))
	// An unnamed zone: an owner written in full is kept (a trigger, in
	// doubt), a passthru so written is skipped.
	var z strings.Builder
	z.WriteString("$TTL 300\n@ SOA localhost. root.localhost. 7 3600 600 86400 60\n  NS localhost.\n")
	for i := range maxReported + 5 {
		fmt.Fprintf(&z, "kept%d.example. CNAME .\n", i)
	}
	for i := range 7 {
		fmt.Fprintf(&z, "pass%d.example. CNAME rpz-passthru.\n", i)
	}
	l, zone := Parse("policy.rpz", []byte(z.String()))
	assert.Equal(t, maxReported+5, l.Len(), "the kept triggers")
	n, _ := BadLines(zone)
	assert.Equal(t, maxReported+12, n, "every report")
	assert.Equal(t, map[string]int{"junk.txt": maxReported + 10, "policy.rpz": 7}, Skipped(errors.Join(junk, zone)))
	// A file whose every report is of a record kept skips none: it is not
	// in the map.
	kept := z.String()[:strings.Index(z.String(), "pass0")]
	_, keptOnly := Parse("kept.rpz", []byte(kept))
	require.Error(t, keptOnly)
	assert.Equal(t, map[string]int{"junk.txt": maxReported + 10}, Skipped(errors.Join(junk, keptOnly)))
	assert.Empty(t, Skipped(nil))

	path := filepath.Join(t.TempDir(), "junk.txt")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	first, warn, err := ReadList(path, nil)
	require.NoError(t, err)
	require.Error(t, warn)
	again, warn, err := ReadList(path, first)
	require.NoError(t, err)
	assert.Same(t, first, again, "reused unchanged")
	assert.NoError(t, warn, "reported when it was read")
	assert.Equal(t, first.Warnings(), again.Warnings())
	assert.Equal(t, map[string]int{path: maxReported + 10}, Skipped(again.Warnings()))
}

// TestNewBadLine: a range file's bad line is new when its text was not
// there before as many times, wherever it moved and whatever else was
// fixed; past the lines reported one by one, the count tells.
func TestNewBadLine(t *testing.T) {
	warn := func(lines ...string) error {
		_, err := ParseRanges("gov.txt", []byte(strings.Join(append(lines, "10.9.0.0/16"), "\n")+"\n"))
		return err
	}
	for _, tc := range []struct {
		name     string
		old, now error
		first    string // "" for none
		ok       bool
	}{
		{name: "none", old: nil, now: nil},
		{name: "the same, moved", old: warn("10.0.0.0/33", "10.1.0.0/16"), now: warn("10.1.0.0/16", "10.0.0.0/33")},
		{name: "one fixed", old: warn("10.0.0.0/33"), now: nil},
		{name: "added", old: nil, now: warn("10.1.0.0/255.255.0.0"), first: `gov.txt:1: `, ok: true},
		{name: "added beside one there before", old: warn("10.0.0.0/33"), now: warn("10.0.0.0/33", "10.1.0.0/255.255.0.0"), first: `gov.txt:2: `, ok: true},
		{name: "one fixed, another broken", old: warn("10.0.0.0/33"), now: warn("10.1.0.0/255.255.0.0"), first: `gov.txt:1: `, ok: true},
		{name: "the same text once more", old: warn("10.0.0.0/33"), now: warn("10.0.0.0/33", "10.0.0.0/33"), first: `gov.txt:2: `, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, ok := NewBadLine(tc.old, tc.now)
			assert.Equal(t, tc.ok, ok)
			if tc.first == "" {
				assert.Nil(t, first)
			} else {
				require.NotNil(t, first)
				assert.True(t, strings.HasPrefix(first.Error(), tc.first), first.Error())
			}
		})
	}

	// Past maxReported, lines are counted, not named: a new one cannot be
	// ruled out, even at the same count (one fixed, another broken).
	many := func(n int) error {
		return warn(slices.Repeat([]string{"10.0.0.0/33"}, n)...)
	}
	first, ok := NewBadLine(many(maxReported), many(maxReported+1))
	assert.True(t, ok, "one more bad line than before")
	assert.Nil(t, first, "none of those reported is new")
	first, ok = NewBadLine(many(maxReported+1), many(maxReported+1))
	assert.True(t, ok, "a line past those named may be new")
	assert.Nil(t, first)
	_, ok = NewBadLine(many(maxReported), many(maxReported))
	assert.False(t, ok, "every line named, none new")
}

// TestBracketLineOnlyKnownHeaders: a line in brackets whole is skipped
// silently only when it is a list syntax's header ([Adblock …], [AdGuard
// …], [uBlock …]); any other, such as a JSON array pasted as a list or a
// name written as an INI section, held names the operator meant to block
// and was dropped without a word, a list of such lines loading empty.
func TestBracketLineOnlyKnownHeaders(t *testing.T) {
	data := strings.Join([]string{
		"[Adblock Plus 2.0]",              // 1: header
		"[AdGuard]",                       // 2: header
		"[uBlock Origin]",                 // 3: header
		"[adblock]",                       // 4: header, any case
		`["tiktok.com", "bytedance.com"]`, // 5: a JSON array
		"[capcut.com]",                    // 6: an INI section
		"[0.0.0.0 lemon8.com]",            // 7
		"||pangle.io^",                    // 8
		"[section]",                       // 9: no name, no header
		"[]",                              // 10
		"[ab]",                            // 11: shorter than a syntax's name
		"",
	}, "\n")
	l, warn := Parse("lists/pasted.txt", []byte(data))
	assert.EqualError(t, warn, strings.Join([]string{
		`lists/pasted.txt:5: a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …]) (write each name on a line of its own: tiktok.com): "[\"tiktok.com\", \"bytedance.com\"]"`,
		`lists/pasted.txt:6: a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …]) (write each name on a line of its own: capcut.com): "[capcut.com]"`,
		`lists/pasted.txt:7: a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …]) (write each name on a line of its own: lemon8.com): "[0.0.0.0 lemon8.com]"`,
		`lists/pasted.txt:9: a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …]): "[section]"`,
		`lists/pasted.txt:10: a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …]): "[]"`,
		`lists/pasted.txt:11: a line in brackets is neither an entry nor a list header ([Adblock …], [AdGuard …], [uBlock …]): "[ab]"`,
	}, "\n"))
	assert.Equal(t, 1, l.Len())

	// A JSON array alone is not an empty list: not one entry could be read.
	l, warn = Parse("lists/pasted.txt", []byte(`["tiktok.com","bytedance.com"]`+"\n"))
	n, first := BadLines(warn)
	assert.Equal(t, 0, l.Len())
	assert.Equal(t, 1, n)
	if assert.NotNil(t, first) {
		assert.ErrorIs(t, first, ErrBracketLine)
	}
}

// TestBracketHeaderHoldingAName: a line in brackets that starts like a
// list syntax's header but holds a name a list takes ([adguard.tiktok.com],
// [AdBlock tiktok.com]) was meant to block that name: it is reported as
// the other lines in brackets are, not skipped as a header. A header with
// a version, several syntaxes or a comment after it is still a header.
func TestBracketHeaderHoldingAName(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       string // the name the report says to write; "" for a header
		unnamed    bool   // reported naming no name
	}{
		{name: "Adblock Plus with a version", line: "[Adblock Plus 3.1.1]"},
		{name: "two syntaxes", line: "[Adblock Plus 2.0; AdGuard]"},
		{name: "uBlock in capitals", line: "[UBLOCK ORIGIN]"},
		{name: "a header and a comment", line: "[Adblock Plus 2.0] # from easylist"},
		{name: "a header with white space inside its brackets", line: "[ AdGuard ]"},
		{name: "a name starting adguard", line: "[adguard.tiktok.com]", want: "adguard.tiktok.com"},
		{name: "a name starting ublock", line: "[UBlock.TikTok.com]", want: "ublock.tiktok.com"},
		{name: "a syntax and a name", line: "[AdBlock tiktok.com]", want: "tiktok.com"},
		{name: "a header and an Adblock rule", line: "[Adblock Plus 2.0 ||douyin.com^]", want: "douyin.com"},
		// A name apart from the syntax by no white space, or in a field
		// that is no entry, is held all the same: reported, not skipped.
		{name: "a syntax, a colon and a name", line: "[adblock:tiktok.com]", unnamed: true},
		{name: "a syntax, a bar and a name", line: "[AdGuard|tiktok.com]", unnamed: true},
		{name: "a syntax and an exception rule", line: "[adguard @@||tiktok.com^]", unnamed: true},
		{name: "a syntax and a rule with options", line: "[AdGuard ||tiktok.com^$client=10.0.0.1]", unnamed: true},
		{name: "a syntax and a name with a glued comment", line: "[adblock tiktok.com#x]", unnamed: true},
		{name: "a syntax, a full-width comma and a name", line: "[AdGuard\uff0ctiktok.com]", unnamed: true},
		{name: "a syntax, a slash and a name", line: "[uBlock/bytedance.com]", unnamed: true},
		// A symbol IDNA maps to letters (circled, squared, ™, ㎏) is
		// written as a name's letter is, glued to the syntax or not.
		{name: "a syntax, a colon and a name with an ideographic full stop", line: "[adblock:tiktok\u3002com]", unnamed: true},
		{name: "a syntax, a colon and a circled name", line: "[adblock:\u24e3\u24d8\u24da\u24e3\u24de\u24da.\u24d2\u24de\u24dc]", unnamed: true},
		{name: "a syntax glued to a name ending in a circled letter", line: "[AdGuard\u24e3.com]", unnamed: true},
		{name: "a syntax and a squared name after a bar", line: "[uBlock|\U0001f130\U0001f130.\u33cf]", unnamed: true},
		// A character IDNA ignores (a soft hyphen from a web page, a
		// zero-width space) is read out of the name, as entryName reads
		// it: it splits no name.
		{name: "a syntax, a colon and a name with a soft hyphen", line: "[adblock:tiktok\u00ad.com]", unnamed: true},
		{name: "a syntax, a bar and a name with a zero-width space", line: "[AdGuard|bytedance\u200b.com]", unnamed: true},
		// A character IDNA refuses in a name (`⒈`, `⑴`, digits with a
		// stop or in parentheses) ends the name before it, as white
		// space would: the name after it is held all the same.
		{name: "a syntax and a name after a digit with a full stop", line: "[adblock: \u2488tiktok.com]", unnamed: true},
		{name: "a syntax and a name after a parenthesized digit", line: "[AdGuard\u2474bytedance.com]", unnamed: true},
		{name: "a syntax and a name with a combining accent", line: "[uBlock|tiktok\u0301.com]", unnamed: true},
		// A right-to-left letter is a name's character too, though IDNA
		// refuses it after a Latin letter in one label (RFC 5893's Bidi
		// rule): alone, it is a label.
		{name: "a syntax, a colon and a Hebrew name", line: "[adblock:\u05e9\u05dc\u05d5\u05dd.com]", unnamed: true},
		{name: "a syntax, a bar and an Arabic name", line: "[AdGuard|\u0645\u0648\u0642\u0639.com]", unnamed: true},
		{name: "a header with a check mark", line: "[Adblock Plus 2.0 \u2713]"},
		{name: "a header with a version ending in 9", line: "[uBlock Origin v1.59]"},
		{name: "a header with a dash", line: "[AdGuard \u2014 Base filter]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, warn := Parse("lists/x.txt", []byte(tc.line+"\n"))
			assert.Equal(t, 0, l.Len())
			if tc.want == "" && !tc.unnamed {
				assert.NoError(t, warn, "a header is skipped")
				return
			}
			require.ErrorIs(t, warn, ErrBracketLine)
			if !tc.unnamed {
				assert.ErrorContains(t, warn, "write each name on a line of its own: "+tc.want+")")
			}
		})
	}
}

// TestParseLastLine: an entry is read up to line 16,777,215, the last a
// list's entry can be on (its line is kept in 24 bits), by the general
// way as by the fast one; every line after it is reported, not read as an
// entry whose line would wrap around.
func TestParseLastLine(t *testing.T) {
	data := strings.Repeat("\n", maxLine-2) + "tiktok.com\n||douyin.com^\n||capcut.com^\nlemon8.com\n"
	l, err := Parse("long.txt", []byte(data))
	e, ok := l.Match("tiktok.com")
	require.True(t, ok)
	assert.Equal(t, maxLine-1, e.Line)
	e, ok = l.Match("douyin.com")
	require.True(t, ok, "the last line is read")
	assert.Equal(t, maxLine, e.Line)
	for _, name := range []string{"capcut.com", "lemon8.com"} {
		_, ok := l.Match(name)
		assert.False(t, ok, name)
	}
	assert.Equal(t, 2, l.Len())
	n, first := BadLines(err)
	assert.Equal(t, 2, n)
	require.NotNil(t, first)
	assert.ErrorIs(t, first, ErrTooManyLines)
	assert.Equal(t, maxLine+1, first.Line)
}

// TestParseNameOfMostLabelsTwice: a name of 127 labels, the most 253
// octets hold, written twice, is one entry and a duplicate, when the
// builder takes every label of the second from the first (builder.path,
// kept from the last name of the names added together before, queueLen),
// the 127th too.
func TestParseNameOfMostLabelsTwice(t *testing.T) {
	most := strings.TrimSuffix(strings.Repeat("a.", 127), ".")
	require.Len(t, most, maxName)
	var lines, want []string
	for i := range queueLen - 1 {
		lines = append(lines, fmt.Sprintf("n%d.example", i))
	}
	want = append(want, lines...)
	lines = append(lines, most, most)
	want = append(want, most)
	l, err := Parse("most.txt", []byte(strings.Join(lines, "\n")+"\n"))
	require.NoError(t, err)
	assert.Equal(t, queueLen, l.Len())
	assert.Equal(t, []Duplicate{{Name: most, Line: queueLen + 1, FirstLine: queueLen}}, l.Duplicates())
	e, ok := l.Match("x." + most)
	require.True(t, ok)
	assert.Equal(t, queueLen, e.Line)
	var all []string
	for e := range l.All() {
		all = append(all, e.Name)
	}
	assert.Equal(t, want, all)
}

// TestAllStopsWhenAsked: a caller that stops ranging over All or
// AllTriggers (a library caller taking the first entries) stops it, of a
// plain list and of an RPZ list: an iterator that went on would panic the
// range loop.
func TestAllStopsWhenAsked(t *testing.T) {
	plain, err := Parse("t.txt", []byte("0.0.0.0 tiktok.com capcut.com\nbytedance.com\n"))
	require.NoError(t, err)
	zone, err := ParseRPZ("z.rpz", []byte("$ORIGIN rpz.example.\n@ SOA ns. h. 1 1 1 1 1\n@ NS ns.\ntiktok.com CNAME .\ncapcut.com CNAME .\nbytedance.com CNAME .\n"))
	require.NoError(t, err)
	for _, l := range []*List{plain, zone} {
		var names []string
		for e := range l.All() {
			names = append(names, e.Name)
			if len(names) == 2 {
				break
			}
		}
		assert.Equal(t, []string{"tiktok.com", "capcut.com"}, names, l.File())
		names = nil
		for e := range l.AllTriggers() {
			names = append(names, e.Name)
			break
		}
		assert.Equal(t, []string{"tiktok.com"}, names, l.File())
	}
}
