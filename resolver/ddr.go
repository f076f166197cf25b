package resolver

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Discovery of Designated Resolvers (RFC 9462). A device given dnsfence by
// address (DHCP, router advertisement) asks it `_dns.resolver.arpa SVCB`
// to learn which encrypted resolvers stand for it, and moves to one it can
// verify: the certificate must carry the address the device asked (§4.2),
// or (§4.3) the designated resolver have that same private address.
// dnsfence designates its own DNS over HTTPS, TLS and QUIC listeners, so
// that the queries of such devices are encrypted on the wire and still go
// through the same policies (a device is the same peer address on every
// transport).

// ddrName is the name a device asks (RFC 9462 §4).
const ddrName = "_dns.resolver.arpa."

// ddrTTL is the TTL of the designation's records, in seconds: short, so
// that a device learns a listener or certificate change (ddr turned off,
// a restart on other ports) within minutes, where the local zones' other
// records keep RFC 6303's three hours.
const ddrTTL = 300

// DoH's path template (RFC 9461 §5, RFC 6570): the path dnsfence serves
// DNS over HTTPS on, with the `dns` variable of a GET.
const ddrDoHPath = listen.DoHPath + "{?dns}"

// designation is what dnsfence designates: its encrypted listeners and the
// certificate they serve, set once they listen (Server.StartEncrypted).
type designation struct {
	endpoints []listen.Endpoint
	// leaf is the certificate the listeners serve now (it reloads).
	leaf func() *x509.Certificate
}

// designate records the encrypted listeners dnsfence designates, and the
// certificate they serve: from then on `_dns.resolver.arpa SVCB` is
// answered with them, unless the configuration's ddr is false.
func (h *Handler) designate(endpoints []listen.Endpoint, cert *listen.CertStore) {
	if len(endpoints) == 0 || cert == nil {
		return
	}
	h.designated.Store(&designation{endpoints: endpoints, leaf: cert.Leaf})
	if snap := h.Snapshot(); snap == nil || !snap.Config.Designates() {
		return
	}
	// A certificate naming no host is warned about where it is loaded
	// (Certificate.warnNoHost), at start and at each reload.
	if target, ok := certHost(cert.Leaf()); ok {
		h.log.Info("designating the encrypted listeners to devices that ask _dns.resolver.arpa SVCB (RFC 9462)",
			zap.String("target", target))
	}
}

// warnDesignation logs what DesignationCheck (`check`) warns about the
// designation with the configuration in force and leaf, the certificate
// served, when the listeners start and at each certificate reload: a
// renewed certificate that lost a `listen` address leaves devices given
// it unable to verify the designation (RFC 9462 §4.2). A certificate
// naming no host is logged by Certificate.warnNoHost, ddr on or off.
func (h *Handler) warnDesignation(leaf *x509.Certificate) {
	snap := h.Snapshot()
	if snap == nil {
		return
	}
	_, ws := DesignationCheck(snap.Config, leaf)
	for _, w := range ws {
		if w.Msg != noHostDesignated {
			h.log.Warn(w.Msg, zap.Strings("names", leaf.DNSNames), zap.Stringers("addresses", leaf.IPAddresses))
		}
	}
}

// noHostDesignated says that a certificate naming no host is verified by
// no client that connects by name and designates nothing, when it is
// loaded and in `check`.
const noHostDesignated = "the TLS certificate (tls.cert) names no host in its subjectAltName: clients that connect by name cannot verify it, and no encrypted resolver is designated (ddr): devices asking _dns.resolver.arpa SVCB get NODATA (RFC 9462 §4); add the listeners' DNS name to it"

// isDDRQuestion reports whether q asks for the designated resolvers: an
// SVCB question for `_dns.resolver.arpa`, however spelt, or an ANY
// question, whose answer holds every record of the name.
func isDDRQuestion(q dns.Question) bool {
	return (q.Qtype == dns.TypeSVCB || q.Qtype == dns.TypeANY) && blocklist.SameName(q.Name, ddrName)
}

// localReply is the answer of a query for a name in one of dnsfence's own
// zones (q.out.local): the zone's own records, or for
// `_dns.resolver.arpa SVCB` the designated resolvers when there are any.
func (h *Handler) localReply(q *query, req *dns.Msg) *dns.Msg {
	m := q.out.local.reply(req)
	question := req.Question[0]
	if !isDDRQuestion(question) {
		return m
	}
	// Not designating (yet, or now): the NODATA is cached as long as a
	// designation would be (RFC 2308 §5: the SOA's TTL and MINIMUM), not
	// the zone's three hours, so that a device asks again soon after
	// dnsfence starts designating (encrypted listeners start after the
	// plain ones; ddr turned back on).
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Hdr.Ttl, soa.Minttl = ddrTTL, ddrTTL
		}
	}
	d := h.designated.Load()
	// The listeners running decide what is designated, not the keys a
	// reload read: listen_tls, listen_https and listen_quic take effect at
	// a restart (a reload that drops them leaves them serving).
	if d == nil || !q.snap.Config.DDR {
		return m
	}
	var local netip.Addr
	if q.w != nil {
		// IPv4 unmapped, with its zone (a link-local address's interface).
		local = listen.AddrPortOf(q.w.LocalAddr()).Addr().Unmap()
	}
	answer, extra := d.records(recordClass(question.Qclass), local)
	if len(answer) == 0 {
		return m
	}
	m.Answer, m.Ns = answer, nil
	m.Extra = append(extra, m.Extra...)
	return m
}

// records are the designation's SVCB records for a query sent to the
// address local (the zero Addr when unknown), of class class, one for each
// listener the device can reach (unreachable) in the order DNS over
// HTTPS, TLS, QUIC (SvcPriority 1, 2, …:
// HTTPS first, which every DDR client speaks), and the target's A or AAAA
// record for the additional section when every record's hint is one
// address (RFC 9462 §4: SHOULD, to spare the device a lookup). None when the certificate names
// no host to be the target (TargetName, which the device verifies the
// certificate against, RFC 9461 §5).
func (d *designation) records(class uint16, local netip.Addr) (answer, extra []dns.RR) {
	target, ok := certHost(d.leaf())
	if !ok {
		return nil, nil
	}
	hdr := func(name string, rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: rrtype, Class: class, Ttl: ddrTTL}
	}
	// shared is the one address every record's hint gives, if they agree
	// (sharedOK).
	var shared netip.Addr
	sharedOK := true
	for _, transport := range [...]string{listen.HTTPS, listen.TLS, listen.QUIC} {
		for _, e := range d.endpoints {
			if e.Transport != transport || unreachable(e.Addr.Addr(), local) {
				continue
			}
			rr := &dns.SVCB{Hdr: hdr(ddrName, dns.TypeSVCB), Priority: uint16(len(answer) + 1), Target: target}
			rr.Value = append(rr.Value, &dns.SVCBAlpn{Alpn: []string{alpnOf(transport)}},
				&dns.SVCBPort{Port: e.Addr.Port()})
			if hint, ok := hintFor(e.Addr.Addr(), local); ok {
				if hint.Is4() {
					rr.Value = append(rr.Value, &dns.SVCBIPv4Hint{Hint: []net.IP{hint.AsSlice()}})
				} else {
					rr.Value = append(rr.Value, &dns.SVCBIPv6Hint{Hint: []net.IP{hint.AsSlice()}})
				}
				if !shared.IsValid() {
					shared = hint
				}
				sharedOK = sharedOK && hint == shared
			} else {
				sharedOK = false
			}
			if transport == listen.HTTPS {
				rr.Value = append(rr.Value, &dns.SVCBDoHPath{Template: ddrDoHPath})
			}
			answer = append(answer, rr)
		}
	}
	// The target's address, when it is every listener's: a device prefers
	// the target's A and AAAA records to the hints (RFC 9460 §7.3), so
	// listeners on different addresses are left to their hints.
	switch {
	case !sharedOK || !shared.IsValid():
	case shared.Is4():
		extra = []dns.RR{&dns.A{Hdr: hdr(target, dns.TypeA), A: shared.AsSlice()}}
	default:
		extra = []dns.RR{&dns.AAAA{Hdr: hdr(target, dns.TypeAAAA), AAAA: shared.AsSlice()}}
	}
	return answer, extra
}

// alpnOf is the SVCB alpn of a transport (RFC 9461 §4.1; §5 for DNS over
// HTTPS, which dnsfence serves on HTTP/2).
func alpnOf(transport string) string {
	switch transport {
	case listen.HTTPS:
		return listen.ALPNHTTP2
	case listen.QUIC:
		return listen.ALPNDoQ
	}
	return listen.ALPNDoT
}

// unreachable reports whether a listener bound to bound cannot be reached
// by a device that asked local (the zero Addr when unknown): one on a
// loopback address, unless the device asked on loopback itself (a
// sidecar's, or a laptop's own dnsfence); one on a link-local address,
// which answers on its own link only and whose hint carries no zone,
// unless the device asked on a link-local address of the same family, on
// that link where both zones are known (a TCP connection's local address
// has one, a datagram's IP_PKTINFO destination none).
func unreachable(bound, local netip.Addr) bool {
	bound, local = bound.Unmap(), local.Unmap()
	switch {
	case bound.IsLoopback():
		return !local.IsLoopback()
	case bound.IsLinkLocalUnicast():
		sameLink := local.IsLinkLocalUnicast() && local.Is4() == bound.Is4() &&
			(bound.Zone() == "" || local.Zone() == "" || bound.Zone() == local.Zone())
		return !sameLink
	}
	return false
}

// hintFor is the address hint of a listener bound to bound, for a query
// sent to local: bound itself when it is one address; for a wildcard
// listener, the address the device asked, which the listener serves (the
// designated resolver shares it: RFC 9462 §4.3's opportunistic discovery
// works too), when known and of a family it serves (0.0.0.0 serves IPv4
// only, :: both). ok is false when no address can be given: the device
// then looks up the target's own.
func hintFor(bound, local netip.Addr) (netip.Addr, bool) {
	bound = bound.Unmap()
	if !bound.IsUnspecified() {
		return bound, bound.IsValid()
	}
	if !local.IsValid() || local.IsUnspecified() || (bound.Is4() && !local.Is4()) {
		return netip.Addr{}, false
	}
	return local, true
}

// certHost is the designated resolvers' TargetName: the first host name
// (no wildcard) of the certificate's subjectAltName, lowercase with its
// trailing dot; ok is false when it names none.
func certHost(leaf *x509.Certificate) (string, bool) {
	if leaf == nil {
		return "", false
	}
	for _, name := range leaf.DNSNames {
		if name == "" || strings.HasPrefix(name, "*") {
			continue
		}
		if blocklist.IsDomainName(name) {
			return dns.Fqdn(strings.ToLower(name)), true
		}
	}
	return "", false
}

// DesignationCheck is `check`'s look at what dnsfence designates (the
// ddr key) with cfg and its certificate leaf (nil without tls.cert): the
// target name devices are sent to ("" when none is designated), and
// warnings when the designation cannot work as meant: a certificate that
// names no host (nothing designated), lacks an address of `listen`
// that devices may be given and must find in it to verify the
// designation (RFC 9462 §4.2; without it only devices on the same private
// address use it, unverified, §4.3), or carries no address at all while
// `listen` has a wildcard one; and encrypted listeners all on loopback
// while `listen` is not (devices are designated none). Loopback `listen`
// addresses are not looked at.
func DesignationCheck(cfg *config.Config, leaf *x509.Certificate) (target string, ws []Warning) {
	if !cfg.Designates() || leaf == nil {
		return "", nil
	}
	target, ok := certHost(leaf)
	if !ok {
		return "", []Warning{{File: cfg.File, Msg: noHostDesignated}}
	}
	// The encrypted listeners with TLS: if every one is on loopback, a
	// device asking at any other address is designated none.
	encryptedLoopback := !slices.ContainsFunc(cfg.TLSListeners(), func(a string) bool {
		ap, err := netip.ParseAddrPort(a)
		return err != nil || !ap.Addr().Unmap().IsLoopback()
	})
	for _, l := range cfg.Listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			continue
		}
		addr := ap.Addr().Unmap()
		switch {
		case addr.IsLoopback():
		case encryptedLoopback:
			ws = append(ws, Warning{File: cfg.File, Msg: fmt.Sprintf("ddr: every encrypted listener is on a loopback address, so devices asking at listen address %s are designated none (RFC 9462); listen_tls, listen_https or listen_quic on an address they reach does, or set ddr: false", l)})
		case addr.IsUnspecified() && len(leaf.IPAddresses) == 0:
			ws = append(ws, Warning{File: cfg.File, Msg: fmt.Sprintf("ddr: listen address %s serves every address of the host, and the certificate (tls.cert) carries none: devices cannot verify the encrypted resolvers it designates (RFC 9462 §4.2), and only those on a private address use them unverified (§4.3); add the addresses devices are given to its subjectAltName, or set ddr: false", l)})
		case addr.IsUnspecified() || slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool {
			a, _ := netip.AddrFromSlice(ip)
			return a.Unmap() == addr
		}):
		default:
			ws = append(ws, Warning{File: cfg.File, Msg: fmt.Sprintf("ddr: listen address %s is not in the certificate (tls.cert): devices given it cannot verify the encrypted resolvers it designates (RFC 9462 §4.2), and only those on a private address use them unverified (§4.3); add it to the certificate's subjectAltName, or set ddr: false", addr)})
		}
	}
	return target, ws
}
