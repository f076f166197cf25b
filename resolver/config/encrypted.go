package config

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
)

// validateEncrypted checks the keys of DESIGN.md §8: the encrypted listen
// addresses, the certificate they need, and upstream_ca. The certificate
// pair's content is not read here (CheckCertificate does, at start and in
// `check`): a renewal half-written on disk must not fail the reload of a
// list, and the running listeners keep their pair until a good one comes.
func (c *Config) validateEncrypted(errs *configErrors) {
	needs := "" // the first key whose listener needs a certificate
	for _, l := range []struct {
		key   string
		addrs []string
		port  uint16
		rfc   string // the section that keeps the transport off port 53
	}{{"listen_tls", c.ListenTLS, upstream.DoTPort, "RFC 7858 §3.1"}, {"listen_https", c.ListenHTTPS, upstream.DoHPort, ""},
		{"listen_quic", c.ListenQUIC, upstream.DoQPort, "RFC 9250 §4.1.1"}} {
		for i, a := range l.addrs {
			at := []any{l.key, i}
			hostport, plain := a, false
			if l.key == "listen_https" && strings.Contains(a, "://") {
				hp, p, err := listen.ParseDoHListen(a)
				if err != nil {
					errs.add(at, "%q: want host:port, https://host:port, or http://host:port for plain HTTP behind a TLS-terminating proxy; %s", a, example(at))
					continue
				}
				hostport, plain = hp, p
			}
			if msg, fix := addrPortProblem(hostport, l.port, true); fix != "" {
				if hostport != a && strings.Contains(a, hostport) {
					// http://[::a00:1]:8080 is meant as http://10.0.0.1:8080,
					// not as 10.0.0.1:8080, which is https.
					fix = strings.Replace(a, hostport, fix, 1)
				}
				errs.add(at, "%s; write %s", msg, fix)
				continue
			} else if msg != "" {
				errs.add(at, "%s; give IP:port, %s (an IPv6 address in brackets: [::1]:%d)", msg, example(at), l.port)
				continue
			}
			switch ap, _ := netip.ParseAddrPort(hostport); {
			case ap.Port() == upstream.PlainPort && l.rfc != "":
				// "DoQ connections MUST NOT use UDP port 53" (RFC 9250
				// §4.1.1), and DNS over TLS's port "MUST NOT be port 53"
				// (RFC 7858 §3.1), as tls:// and quic:// upstreams never
				// use it: a device's plain DNS to that address would meet
				// a TLS or QUIC listener.
				errs.add(at, "%s: DNS over %s never uses port 53 (%s), the port of plain DNS; write %s",
					a, protocolOf(l.key), l.rfc, netip.AddrPortFrom(ap.Addr(), l.port))
			case ap.Port() == upstream.DoTPort && plain:
				// DNS over plain HTTP is cleartext DNS: "DNS clients and
				// servers MUST NOT use port 853 to transport cleartext
				// DNS messages" (RFC 7858 §3.1).
				errs.add(at, "%s: port 853 carries DNS over TLS and QUIC, never cleartext DNS, which plain HTTP is (RFC 7858 §3.1); give the http:// listener another port, e.g. http://%s",
					a, netip.AddrPortFrom(ap.Addr(), 8080))
			}
			if needs == "" && !plain {
				needs = l.key
			}
		}
	}
	c.checkSharedPorts(errs)

	c.tlsLine = lineOf(errs.root, []any{"tls", "cert"})
	cert, key := c.TLS.Cert, c.TLS.Key
	switch {
	case cert == "" && key == "" && needs != "":
		errs.add([]any{needs}, "DNS over %s needs a server certificate: set tls.cert and tls.key, %s", protocolOf(needs), example([]any{"tls"}))
	case cert == "" && key != "":
		errs.add([]any{"tls", "key"}, "tls.key is set but not tls.cert; give both, %s", example([]any{"tls"}))
	case cert != "" && key == "":
		errs.add([]any{"tls", "cert"}, "tls.cert is set but not tls.key; give both, %s", example([]any{"tls"}))
	}
	for _, f := range []struct{ key, path string }{{"cert", cert}, {"key", key}, {"", c.UpstreamCA}} {
		at := []any{"tls", f.key}
		if f.key == "" {
			at = []any{"upstream_ca"}
		}
		if f.path == "" || c.ReadFile == nil || c.Embedded {
			continue
		}
		if fi, err := os.Stat(c.Path(f.path)); err != nil {
			errs.add(at, "%s; give the path of a PEM file (relative paths start at the configuration file's folder)", fileProblem(c.Path(f.path), err))
			continue
		} else if fi.IsDir() {
			errs.add(at, "%q is a folder; give the path of a PEM file in it, %s", c.Path(f.path), exampleIn(at, f.path, c.Path(f.path)))
			continue
		}
		if f.key == "" {
			if _, err := upstream.LoadRoots(c.Path(f.path)); err != nil {
				errs.add(at, "%s; give a PEM file of CA certificates", strings.TrimPrefix(err.Error(), "upstream_ca "))
			}
		}
	}
}

// checkSharedPorts reports two listeners of one transport on one address:
// listen (UDP and TCP), listen_tls, listen_https and the http endpoint
// share TCP ports, and listen and listen_quic UDP ones. The same address
// twice in one key clashes too, and so does a wildcard address (0.0.0.0
// or [::], each one dual-stack socket in Go) with any other on its port:
// bind refuses the second socket, and `check` would have said ok
// (unbound-checkconf: "present twice, cannot bind same ports twice").
// Port 0 picks a free port for each, so it never clashes.
func (c *Config) checkSharedPorts(errs *configErrors) {
	type owner struct {
		ap  netip.AddrPort
		key string
		i   int // -1: a key of one value (http)
	}
	var tcp, udp []owner
	reported := map[string]bool{} // listen's TCP and UDP clash once
	take := func(m *[]owner, key string, i int, s string) {
		ap, err := netip.ParseAddrPort(s)
		if host, port, ok := strings.Cut(s, ":"); err != nil && host == "" && isDigits(port) && ok {
			ap, err = netip.ParseAddrPort("[::]:" + port) // http: ":9153", every address
		}
		if err != nil || ap.Port() == 0 {
			return // reported above, or a free port each
		}
		// The zone stays on a link-local address: one on two interfaces
		// ([fe80::1%eth0]:53, [fe80::1%eth1]:53) is two sockets, each
		// bound to its interface, that bind lets share a port. Of any
		// other address (::1) the kernel reads no zone: [::1%lo]:53 is
		// the socket of [::1]:53, which bind refuses a second time.
		a := ap.Addr().Unmap()
		if !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() {
			a = a.WithZone("")
		}
		ap = netip.AddrPortFrom(a, ap.Port())
		at := []any{key, i}
		if i < 0 {
			at = []any{key}
		}
		defer func() { *m = append(*m, owner{ap, key, i}) }()
		for _, o := range *m {
			if o.ap.Port() != ap.Port() || !sameSocket(o.ap.Addr(), ap.Addr()) {
				continue
			}
			k := fmt.Sprint(at)
			if reported[k] {
				return
			}
			reported[k] = true
			name := fmt.Sprintf("%s[%d]", o.key, o.i)
			if o.i < 0 {
				name = o.key
			}
			switch {
			case key == "http" && c.HTTP == nil:
				errs.add(at, "the endpoint's default address %s (http left out) is on the port of %s %s: two listeners cannot share one port; set http to another address (http: \"127.0.0.1:9154\"), or \"\" to turn the endpoint off", s, name, o.ap)
			case o.ap == ap:
				errs.add(at, "%s is also %s: two listeners cannot share one port; give each its own", s, name)
			case o.ap.Addr().IsUnspecified():
				errs.add(at, "%s: %s %s already takes port %d on every address; two listeners cannot share one port: leave this one out, or give it its own port", s, name, o.ap, ap.Port())
			default:
				errs.add(at, "%s takes port %d on every address, %s of %s included; two listeners cannot share one port: leave %s out, or give it its own port", s, ap.Port(), o.ap, name, name)
			}
			return
		}
	}
	for i, a := range c.Listen {
		take(&tcp, "listen", i, a)
		take(&udp, "listen", i, a)
	}
	for i, a := range c.ListenTLS {
		take(&tcp, "listen_tls", i, a)
	}
	for i, a := range c.ListenHTTPS {
		if hp, _, err := listen.ParseDoHListen(a); err == nil {
			take(&tcp, "listen_https", i, hp)
		}
	}
	for i, a := range c.ListenQUIC {
		take(&udp, "listen_quic", i, a)
	}
	if c.HTTP != nil && *c.HTTP != "" {
		take(&tcp, "http", -1, *c.HTTP)
	} else if c.HTTP == nil && !c.Embedded {
		// Left out, the endpoint serves on its default address, and
		// clashes there as written (the embedded default goes on
		// without it).
		take(&tcp, "http", -1, DefaultHTTP)
	}
}

// sameSocket reports whether sockets bound to a and b on one port clash:
// the same address, or a wildcard and any other address. Go listens on a
// wildcard of either family, 0.0.0.0 as [::], with one dual-stack socket
// (net: favoriteAddrFamily), which takes every address of both: beside
// 0.0.0.0:53, bind refuses [::1]:53 as it refuses 127.0.0.1:53.
func sameSocket(a, b netip.Addr) bool {
	return a == b || a.IsUnspecified() || b.IsUnspecified()
}

// protocolOf names the protocol of an encrypted listen key.
func protocolOf(key string) string {
	switch key {
	case "listen_tls":
		return "TLS"
	case "listen_https":
		return "HTTPS"
	}
	return "QUIC"
}

// CheckCertificate reads the tls pair as the listeners load it
// (listen.CheckPair: the chain parses, the key is the leaf's, the leaf has
// not expired and may serve TLS, the pair serves a TLS 1.3 handshake) and
// returns the leaf. With no tls.cert
// it returns nil, nil. The error is an *Error at tls.cert's line:
// "dnsfence.yaml:3: tls.cert: why". serve calls it before listening and
// `check` prints the expiry of the leaf it returns.
func (c *Config) CheckCertificate() (leaf *x509.Certificate, err error) {
	if c.TLS.Cert == "" {
		return nil, nil
	}
	leaf, err = listen.CheckPair(c.Path(c.TLS.Cert), c.Path(c.TLS.Key))
	if err != nil {
		return nil, &Error{File: c.File, Line: c.tlsLine, Key: "tls.cert", Err: err}
	}
	return leaf, nil
}

// Encrypted reports whether any encrypted listener is configured.
func (c *Config) Encrypted() bool {
	return len(c.ListenTLS)+len(c.ListenHTTPS)+len(c.ListenQUIC) > 0
}

// Designates reports whether dnsfence designates its own encrypted
// listeners to devices that ask `_dns.resolver.arpa SVCB` (the ddr key,
// RFC 9462 §4): unless ddr is false, whenever it has one it terminates
// TLS for. An http:// DoH listener is not one (a proxy in front holds its
// TLS), so `check` does not promise a designation that serve never makes.
func (c *Config) Designates() bool {
	return c.DDR && len(c.TLSListeners()) > 0
}

// TLSListeners are the "host:port" addresses of the encrypted listeners
// dnsfence terminates TLS for: listen_tls, listen_https but its http://
// ones, listen_quic, in that order.
func (c *Config) TLSListeners() []string {
	var out []string
	out = append(out, c.ListenTLS...)
	for _, a := range c.ListenHTTPS {
		if hostport, plain, err := listen.ParseDoHListen(a); err == nil && !plain {
			out = append(out, hostport)
		}
	}
	return append(out, c.ListenQUIC...)
}
