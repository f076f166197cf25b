package blocklist

import (
	"net/url"
	"regexp"
	"strings"
)

// RedactURL is entry, a URL, as an error, a log line or a metric may show
// it: the user information before the host (scheme://USER:PASSWORD@HOST/...),
// a secret whether it is a name, a password or a token, replaced by
// "xxxxx". In a URL the authority ends at the first '/', '?' or '#'
// (RFC 3986 §3.2); an entry that does not parse as one (a password with
// a '/' in it, written unescaped) shows nothing before its last '@'.
func RedactURL(entry string) string {
	scheme, rest, ok := strings.Cut(entry, "://")
	if !ok {
		return entry
	}
	authority := rest // unparsed, where it ends is not known: all of it may be
	if _, err := url.Parse(entry); err == nil {
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			authority = rest[:i]
		}
	}
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return entry
	}
	return scheme + "://xxxxx@" + rest[at+1:]
}

// RedactURLs is s with the user information of every URL in it
// (scheme://USER:PASSWORD@HOST/…) hidden as RedactURL hides it: text a
// message quotes as written (a URL where an address, a path or a number
// belongs in the configuration, a URL on a line of a list or client range
// file) may carry a password or a token, and the message goes to stderr,
// the journal and, at a reload, the log.
func RedactURLs(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	s = quotedUserinfo.ReplaceAllString(s, "${1}xxxxx@")
	return urlInText.ReplaceAllStringFunc(s, RedactURL)
}

// urlInText is a URL in a message, up to the white space or quotation
// mark after it.
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'“”‘’]+`)

// quotedUserinfo is a URL's user information holding a ' (RFC 3986
// allows one in a password, a sub-delim), which urlInText, ending at the
// quotation mark, cuts short of its @: "https://user:pa'ss@host/" would
// be shown whole. User information holds no /, ?, # or @, so the match
// ends at the first @ and never runs from one URL into another.
var quotedUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^\s"“”‘’/?#@]*'[^\s"“”‘’/?#@]*@`)
