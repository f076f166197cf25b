package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
)

// Kind is the protocol an upstream speaks.
type Kind uint8

// Upstream kinds, by the scheme of their address (DESIGN.md §8).
const (
	KindPlain Kind = iota // "IP:PORT": DNS over UDP, TCP on truncation (RFC 1035, RFC 7766)
	KindTLS               // "tls://IP:PORT#NAME": DNS over TLS (RFC 7858)
	KindHTTPS             // "https://HOST:PORT/PATH#NAME": DNS over HTTPS (RFC 8484)
	KindQUIC              // "quic://IP:PORT#NAME": DNS over QUIC (RFC 9250)
)

// String names the kind as metric labels and logs do: plain, tls, https,
// quic.
func (k Kind) String() string {
	switch k {
	case KindPlain:
		return "plain"
	case KindTLS:
		return "tls"
	case KindHTTPS:
		return "https"
	case KindQUIC:
		return "quic"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Default ports, the one definition of each that config and lint use too:
// 53 for plain DNS (RFC 1035 §4.2), 853 for DNS over TLS and QUIC (RFC
// 7858 §3.1, RFC 9250 §4.1.1), 443 for DNS over HTTPS (RFC 8484 §3's URI
// templates are https: URIs, whose default port is 443, RFC 9110 §4.2.2).
const (
	PlainPort = 53
	DoTPort   = 853
	DoHPort   = 443
	DoQPort   = 853
)

// dohDefaultPath is the path of an https upstream written without one, the
// one RFC 8484 §4.1.1's examples and every public resolver use.
const dohDefaultPath = "/dns-query"

// ErrPlainOnEncryptedPort is a plain upstream on port 853, the port of DNS
// over TLS and QUIC: "DNS clients and servers MUST NOT use port 853 to
// transport cleartext DNS messages" (RFC 7858 §3.1).
var ErrPlainOnEncryptedPort = errors.New("port 853 carries DNS over TLS and QUIC, never plain DNS (RFC 7858 §3.1)")

// ErrIPv4Compatible is an upstream at an IPv4-compatible IPv6 address
// (blocklist.IPv4Compatible): sent towards the IPv6 default route, its
// queries reach no server, and every try fails.
var ErrIPv4Compatible = errors.New("an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291), which no host has")

// Address is a parsed upstream address.
type Address struct {
	Kind Kind
	// Host is where to connect: an IP address (no brackets, no zone for
	// the encrypted kinds), or for HTTPS also a host name, looked up
	// through Options.Resolve when a connection is made.
	Host string
	Port uint16
	// Path is the HTTPS URL's path ("/dns-query"); "" for the other kinds.
	Path string
	// ServerName is the name the upstream's certificate must carry: the
	// name after '#', or for HTTPS the URL's host when that is a name. It is
	// sent as TLS SNI and, for HTTPS, as the request's authority. "" for
	// plain upstreams.
	ServerName string

	text string // as written, for Address() in logs and metrics
}

// String is the address as it was written, or for an Address built by hand
// its canonical form ("tls://9.9.9.9:853#dns.quad9.net").
func (a Address) String() string {
	if a.text != "" {
		return a.text
	}
	hp := a.HostPort()
	switch a.Kind {
	case KindTLS, KindQUIC:
		return a.Kind.String() + "://" + hp + "#" + a.ServerName
	case KindHTTPS:
		s := "https://" + hp + a.Path
		if a.ServerName != a.Host {
			s += "#" + a.ServerName
		}
		return s
	}
	return hp
}

// withoutQueryTemplate is rest, the part of a DoH upstream after
// "https://", with each form-style query expression of a URI template
// ("{?dns}", RFC 6570 §3.2.8) taken out: the DoH URI template that
// browsers' settings and resolver lists give
// (https://dns.example/dns-query{?dns}, RFC 8484 §3) is processed without
// variables for POST, the method dnsfence sends with (RFC 8484 §4.1), and
// such an expression without a value expands to nothing. Any other
// expression ("{tenant}") is left, for ParseAddress to refuse.
func withoutQueryTemplate(rest string) string {
	var b strings.Builder
	for {
		before, expr, ok := strings.Cut(rest, "{?")
		if !ok {
			break
		}
		_, after, ok := strings.Cut(expr, "}")
		if !ok {
			break
		}
		b.WriteString(before)
		rest = after
	}
	b.WriteString(rest)
	return b.String()
}

// HostPort is Host and Port joined for net.Dial: "9.9.9.9:853",
// "[2620:fe::fe]:853", "dns.quad9.net:443".
func (a Address) HostPort() string {
	return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port)))
}

// ParseAddress parses one entry of `upstreams` (DESIGN.md §8):
//
//	IP or IP:PORT                        plain DNS, port 53 (never 853)
//	tls://IP[:PORT]#NAME                 DNS over TLS, port 853 (never 53)
//	https://HOST[:PORT][/PATH][#NAME]    DNS over HTTPS, port 443, path /dns-query
//	                                     (a URI template's {?dns} taken out)
//	quic://IP[:PORT]#NAME                DNS over QUIC, port 853 (never 53)
//
// An IPv6 address goes in brackets ("[2620:fe::fe]:853"). NAME is the name
// the upstream's certificate must carry; an https URL whose host is a name
// needs none (the host is the name), every other encrypted upstream does.
// Schemes are matched without regard to case. The error says what is wrong
// with s and how it would be written.
func ParseAddress(s string) (Address, error) {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		return parsePlain(s)
	}
	if fix, ok := atPort(scheme, rest); ok {
		if _, err := ParseAddress(fix); err != nil {
			// Offered only when taken: "://0.0.0.0@0" is no upstream
			// written either way.
			return Address{}, fmt.Errorf("%q: the port follows a colon (IP@PORT is Unbound's form), and so written: %w", s, err)
		}
		return Address{}, fmt.Errorf("%q: the port follows a colon (IP@PORT is Unbound's form); write %s", s, fix)
	}
	// A user or password before the host is refused first, and the
	// error shows it redacted: every later error quotes s.
	if shown := blocklist.RedactURL(s); shown != s {
		return Address{}, fmt.Errorf("%q: a user or password before @ is not supported", shown)
	}
	var a Address
	switch strings.ToLower(scheme) {
	case "tls":
		a = Address{Kind: KindTLS, Port: DoTPort}
	case "https":
		a = Address{Kind: KindHTTPS, Port: DoHPort}
	case "quic":
		a = Address{Kind: KindQUIC, Port: DoQPort}
	case "udp", "tcp", "dns":
		return Address{}, fmt.Errorf("%q: plain DNS upstreams are written without a scheme: %s", s, rest)
	default:
		return Address{}, fmt.Errorf("%q: unknown scheme %q; give tls://IP:PORT#NAME, https://HOST/dns-query, quic://IP:PORT#NAME or IP:PORT for plain DNS", s, scheme)
	}
	if a.Kind == KindHTTPS {
		rest = withoutQueryTemplate(rest)
		if strings.ContainsAny(rest, "{}") {
			return Address{}, fmt.Errorf("%q: a URI template expression other than {?dns} has no value to take (RFC 8484 §4.1); write the URL the server answers at", s)
		}
	}
	if err := unbracketed(s, scheme+"://", rest); err != nil {
		return Address{}, err
	}
	u, err := url.Parse("x://" + rest)
	if err != nil {
		return Address{}, fmt.Errorf("%q is not a URL: %w", s, urlReason(err))
	}
	if u.RawQuery != "" || u.ForceQuery {
		return Address{}, fmt.Errorf("%q: a query string (?...) is not supported; queries are sent by POST", s)
	}
	host := u.Hostname()
	if host == "" {
		return Address{}, fmt.Errorf("%q has no host", s)
	}
	if p := u.Port(); p != "" || strings.HasSuffix(u.Host, ":") {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return Address{}, fmt.Errorf("%q: the port %q is not a number from 1 to 65535", s, p)
		}
		a.Port = uint16(n)
	}
	ip, ipErr := netip.ParseAddr(host)
	switch {
	case ipErr != nil && strings.HasSuffix(host, ".") && isAddr(strings.TrimSuffix(host, ".")):
		// An address with a name's trailing dot would be looked up as a
		// name (https) or refused as one (tls, quic).
		return Address{}, fmt.Errorf("%q: %q is an IP address with a trailing dot; write it without the dot", s, host)
	case ipErr == nil && ip.Zone() != "":
		return Address{}, fmt.Errorf("%q: an IPv6 zone (%%%s) is not supported", s, ip.Zone())
	case ipErr == nil && ip.Is6() && !strings.HasPrefix(u.Host, "["):
		return Address{}, fmt.Errorf("%q: an IPv6 address goes in brackets: %s://[%s]", s, a.Kind, host)
	case ipErr == nil:
		if v4, ok := blocklist.IPv4Compatible(ip); ok {
			return Address{}, fmt.Errorf("%q: %s is %w; write %s", s, host, ErrIPv4Compatible, strings.Replace(s, "["+host+"]", v4.String(), 1))
		}
		if err := unreachable(ip); err != nil {
			return Address{}, fmt.Errorf("%q: %s %w", s, host, err)
		}
		a.Host = ip.Unmap().String()
	case strings.Contains(host, ":"):
		return Address{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	case a.Kind != KindHTTPS:
		return Address{}, fmt.Errorf("%q: the host is a name, not an IP address; %s upstreams are IP addresses, with the name after #: %s://IP:%d#%s", s, a.Kind, a.Kind, a.Port, host)
	default:
		name, err := serverName(host)
		if err != nil {
			return Address{}, fmt.Errorf("%q: the host %w", s, err)
		}
		a.Host = name
		a.ServerName = name
	}
	if a.Kind == KindHTTPS {
		a.Path = u.EscapedPath()
		if a.Path == "" {
			a.Path = dohDefaultPath
		}
	} else if u.Path != "" && u.Path != "/" {
		return Address{}, fmt.Errorf("%q: %s upstreams have no path (%s)", s, a.Kind, u.Path)
	}
	switch frag := u.Fragment; {
	case frag == "" && a.ServerName == "":
		return Address{}, fmt.Errorf("%q: the name the upstream's certificate carries is missing; write it after #: %s://%s#dns.example.net", s, a.Kind, strings.TrimSuffix(rest, "#"))
	case frag != "":
		name, err := serverName(frag)
		if err != nil {
			if meant, ok := serverNameMeant(frag); ok {
				before, _, _ := strings.Cut(s, "#")
				return Address{}, fmt.Errorf("%q: the name after # %q: a URL, a port, a path or a user is no part of it; write %s#%s", s, frag, before, meant)
			}
			return Address{}, fmt.Errorf("%q: the name after # %w", s, err)
		}
		a.ServerName = name
	}
	if a.Kind == KindQUIC && a.Port == PlainPort {
		// "DoQ connections MUST NOT use UDP port 53" (RFC 9250 §4.1.1): it
		// would send QUIC to a plain DNS server, or be taken for DNS there.
		return Address{}, fmt.Errorf("%q: DNS over QUIC never uses port 53 (RFC 9250 §4.1.1): quic://%s#%s",
			s, net.JoinHostPort(a.Host, strconv.Itoa(DoQPort)), a.ServerName)
	}
	if a.Kind == KindTLS && a.Port == PlainPort {
		// DNS over TLS on a port other than 853: "Such another port MUST
		// NOT be port 53" (RFC 7858 §3.1), to keep TLS and cleartext DNS
		// apart and downgrades out.
		return Address{}, fmt.Errorf("%q: DNS over TLS never uses port 53 (RFC 7858 §3.1): tls://%s#%s",
			s, net.JoinHostPort(a.Host, strconv.Itoa(DoTPort)), a.ServerName)
	}
	a.text = s
	return a, nil
}

// atPort is scheme://rest written with its port after a colon, when rest
// is Unbound's IP@PORT ("tls://9.9.9.9@853#dns.quad9.net", which a URL
// reads as the user 9.9.9.9 at the host 853); false for any other rest.
func atPort(scheme, rest string) (fix string, ok bool) {
	end := strings.IndexAny(rest, "/#?")
	if end < 0 {
		end = len(rest)
	}
	host, port, found := strings.Cut(rest[:end], "@")
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if !found || err != nil || port == "" || strings.Trim(port, "0123456789") != "" {
		return "", false
	}
	return scheme + "://" + net.JoinHostPort(ip.String(), port) + rest[end:], true
}

// parsePlain parses a plain DNS upstream: IP, [IPv6], IP:PORT or
// [IPv6]:PORT.
func parsePlain(s string) (Address, error) {
	bare := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		bare = s[1 : len(s)-1]
	}
	if ip, err := netip.ParseAddr(bare); err == nil {
		switch {
		case ip.Zone() != "":
			return Address{}, fmt.Errorf("%q: an IPv6 zone (%%%s) is not supported", s, ip.Zone())
		case ip.Is6() && bare == s:
			return Address{}, unbracketed(s, "", s)
		}
		if v4, ok := blocklist.IPv4Compatible(ip); ok {
			return Address{}, fmt.Errorf("%q: %s is %w; write %s", s, bare, ErrIPv4Compatible, v4)
		}
		if err := unreachable(ip); err != nil {
			return Address{}, fmt.Errorf("%q: %s %w", s, bare, err)
		}
		return Address{Kind: KindPlain, Host: ip.Unmap().String(), Port: PlainPort, text: s}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Address{}, fmt.Errorf("%q is not IP:port", s)
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil && host != "" && !strings.Contains(host, ":") && strings.Trim(host, "0123456789.") != "":
		return Address{}, fmt.Errorf("%q: the host is a name, not an IP address; plain upstreams are IP addresses", s)
	case err != nil:
		return Address{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	case ip.Zone() != "":
		return Address{}, fmt.Errorf("%q: an IPv6 zone (%%%s) is not supported", s, ip.Zone())
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 { // base 10: digits only, no sign
		return Address{}, fmt.Errorf("%q: the port %q is not a number from 1 to 65535", s, port)
	}
	if v4, ok := blocklist.IPv4Compatible(ip); ok {
		return Address{}, fmt.Errorf("%q: %s is %w; write %s", s, host, ErrIPv4Compatible, net.JoinHostPort(v4.String(), port))
	}
	if err := unreachable(ip); err != nil {
		return Address{}, fmt.Errorf("%q: %s %w", s, host, err)
	}
	if n == DoTPort {
		// Most likely DNS over TLS meant, its scheme left out: the
		// queries would leave in cleartext, to a port where none is
		// answered.
		return Address{}, fmt.Errorf("%q: %w; write tls://%s#dns.example.net for DNS over TLS, or %s for plain DNS",
			s, ErrPlainOnEncryptedPort, s, net.JoinHostPort(host, strconv.Itoa(PlainPort)))
	}
	return Address{Kind: KindPlain, Host: ip.Unmap().String(), Port: uint16(n), text: s}, nil
}

// unreachable says why ip, an upstream's address without a zone, is
// none a query can be exchanged with (blocklist.Unusable, whose
// IPv4-compatible addresses ParseAddress refuses before, with the one
// meant), or nil: an IPv6 link-local address, which a socket reaches only
// through the interface a zone names (and zones are not supported); a
// multicast address, which no answer comes from (a resolver answers from
// its own unicast address, which no try takes as the answer); the
// limited broadcast address, which the kernel sends no datagram to.
func unreachable(ip netip.Addr) error {
	switch kind := blocklist.Unusable(ip); kind {
	case blocklist.UnusableLinkLocal: // a zone is refused before
		return &UnreachableError{kind, "is a link-local address, which a query reaches only through the interface a zone (%eth0) names, and an IPv6 zone is not supported; give a global or unique local (fd00::/8) address of the resolver"}
	case blocklist.UnusableMulticast:
		return &UnreachableError{kind, "is a multicast address, which no answer comes from (a resolver answers from an address of its own); give the resolver's unicast address"}
	case blocklist.UnusableBroadcast:
		return &UnreachableError{kind, "is the broadcast address, which no query is sent to; give the resolver's address"}
	}
	return nil
}

// ErrUnreachable is an upstream address no query can be exchanged with
// (unreachable says which and why): every try would fail. Its error says
// what to give instead.
var ErrUnreachable = errors.New("no query can be exchanged with the address")

// UnreachableError is unreachable's reason; errors.Is(err,
// ErrUnreachable).
type UnreachableError struct {
	// Kind names the kind of address in a few words: "multicast".
	Kind   string
	reason string
}

func (e *UnreachableError) Error() string        { return e.reason }
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// isAddr reports whether s is an IP address.
func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// serverNameMeant is the name a certificate carries that frag, which
// serverName refuses, was meant to be: a name written with a port, a
// path, a user or as a URL (`dns.quad9.net:853`,
// `https://dns.quad9.net/`: blocklist.HostMeant), or an address with its
// port (`9.9.9.9:853`, for an IP address SAN); false for any other frag,
// or when what is left is no such name either.
func serverNameMeant(frag string) (string, bool) {
	host, _ := blocklist.HostMeant(frag)
	if ap, err := netip.ParseAddrPort(frag); err == nil {
		host = ap.Addr().String()
	}
	if _, err := serverName(host); host == "" || err != nil {
		return "", false
	}
	return host, true
}

// serverName checks a name a certificate is to carry: a host name (without
// its trailing dot, lowercased) or an IP address (for a certificate with
// IP address SANs).
func serverName(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.String(), nil
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("%q is not a host name", s)
	}
	for _, label := range strings.Split(name, ".") {
		if !isLabel(label) {
			return "", fmt.Errorf("%q is not a host name: label %q", s, label)
		}
	}
	return name, nil
}

// isLabel reports a host name label: letters, digits and hyphens, not
// starting or ending with a hyphen (RFC 1123 §2.1), 63 octets at most.
// Underscores are allowed, as some private names carry them.
func isLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// urlReason is the part of a url.Parse error that says what is wrong,
// without the URL it repeats.
func urlReason(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// unbracketed is the error for s, an upstream whose host (in rest, s
// after its scheme://, up to the first "/", "?" or "#") is an IPv6
// address written without brackets (RFC 3986 §3.2.2): s written with
// them, each way the host reads, for "::1:853" is both the address
// ::1:853 and ::1 with port 853 (the address alone with a PORT of one's
// own for a plain upstream, whose port is optional); nil when the host is
// no such address.
func unbracketed(s, scheme, rest string) error {
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host, tail := rest[:end], rest[end:]
	var ways []string
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() && ip.Zone() == "" {
		ways = append(ways, scheme+"["+host+"]"+tail)
		if scheme == "" {
			ways = append(ways, "["+host+"]:PORT")
		}
	}
	if i, ok := Bracketless(host); ok && !strings.Contains(host, "%") {
		ways = append(ways, scheme+"["+host[:i]+"]"+host[i:]+tail)
	}
	if len(ways) == 0 {
		return nil
	}
	return fmt.Errorf("%q: an IPv6 address goes in brackets: %s", s, strings.Join(ways, " or "))
}

// Bracketless reads s as an IPv6 address and a port after its last colon,
// written without the brackets RFC 3986 §3.2.2 asks for ("::1:53" for
// [::1]:53): i is that colon's index. ok is false when s does not so read:
// fewer than two colons, no IPv6 address before the last (a zone is
// allowed), or no port from 1 to 65535 in digits after it.
func Bracketless(s string) (i int, ok bool) {
	i = strings.LastIndexByte(s, ':')
	if i <= 0 || strings.Count(s, ":") < 2 {
		return 0, false
	}
	port := s[i+1:]
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 { // base 10: digits only
		return 0, false
	}
	a, err := netip.ParseAddr(s[:i])
	return i, err == nil && a.Is6()
}
