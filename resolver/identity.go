package resolver

import (
	"net"
	"net/netip"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
)

// Where a client's identity came from, as logged.
const (
	IdentityTransport = "transport" // the packet's source address
	IdentityECS       = "ecs"       // EDNS Client Subnet from a trusted proxy
	IdentityProxy     = "proxy"     // PROXY protocol v2 from a trusted proxy
)

// Identity is who a query is decided for.
type Identity struct {
	// Source is the transport peer: the client itself, or the trusted proxy
	// that forwarded the query. allowed_clients applies to it. A client
	// named by a PROXY header or a DoH Forwarded or X-Forwarded-For header
	// is its own Source: allowed_clients applies to it, as to a client
	// that asks directly.
	Source netip.Addr
	// Peer is the address the query came from: Source, or the proxy that
	// sent a PROXY or Forwarded header; when ECS named the client, the
	// forwarder that wrote the option (Source). The audit line's "source".
	Peer netip.Addr
	// Client is the network policies are matched against: a single address
	// (/32 or /128), or the shorter prefix an ECS option gave.
	Client netip.Prefix
	// Via says which of the above named the client.
	Via string
	// ECS is the option that named the client, echoed in the answer so that
	// an ECS-aware cache in the forwarder keeps answers per subnet.
	ECS *dns.EDNS0_SUBNET
	// ManyECS: a trusted proxy's query carried more than one ECS option,
	// which name no one client: it is refused (Handler.answerInline).
	ManyECS bool
}

// hostPrefix is the single-address prefix of a.
func hostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

// identify works out who is asking. The transport source counts unless it
// is a trusted proxy: then a PROXY protocol header (a listen.ProxiedAddr)
// or an EDNS Client Subnet option names the client. ECS from anyone else
// is ignored, but from a client a PROXY, Forwarded or X-Forwarded-For
// header names that is itself a trusted proxy (a department forwarder
// behind a load balancer), whose message it is as much as if it had
// asked directly. A trusted proxy's query with more than one ECS option is
// ManyECS: RFC 7871 says nothing of it, and BIND takes the first, but a
// forwarder that passes a device's own option on ahead of the one it adds
// would let the device pick its policy.
func identify(snap *Snapshot, w dns.ResponseWriter, req *dns.Msg) Identity {
	id, believeECS := peerIdentity(snap, w)
	if !believeECS {
		return id
	}
	ecs, n := ecsOptions(req)
	if n > 1 {
		id.ManyECS = true
		return id
	}
	if ecs != nil {
		if p, ok := ecsPrefix(ecs); ok {
			// The audit line's source is the forwarder that wrote the
			// option, behind whichever proxy named it.
			id.Client, id.Via, id.ECS, id.Peer = p, IdentityECS, ecs, id.Source
		}
	}
	return id
}

// peerIdentity is identify's answer before it reads the query: who the
// transport peer is, and whether an ECS option in the query would name the
// client instead (believeECS: the peer, or the client a trusted proxy's
// PROXY, Forwarded or X-Forwarded-For header named, is a trusted proxy).
// The second matters as much as the first: a forwarder behind a load
// balancer that speaks PROXY protocol, or behind a DoH reverse proxy,
// asked for its devices by ECS, and its own address, in no blocking
// range, decided their queries, which were forwarded; over UDP, past the
// same load balancer without a header, they were blocked.
func peerIdentity(snap *Snapshot, w dns.ResponseWriter) (id Identity, believeECS bool) {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		id.Source = a.AddrPort().Addr().Unmap().WithZone("")
	case *net.TCPAddr:
		id.Source = a.AddrPort().Addr().Unmap().WithZone("")
	case *listen.ProxiedAddr:
		// The listener believes PROXY headers from trusted proxies only.
		id.Source = a.AddrPort().Addr().Unmap().WithZone("")
		id.Peer = a.Proxy.Addr().Unmap().WithZone("")
		id.Client, id.Via = hostPrefix(id.Source), IdentityProxy
		return id, snap.Trusted(id.Source)
	}
	id.Peer = id.Source
	id.Client, id.Via = hostPrefix(id.Source), IdentityTransport
	return id, snap.Trusted(id.Source)
}

// transportOf is the transport a query came over: the listener's word
// when w is a listen.ResponseWriter, else UDP for a UDP peer and TCP for
// any other.
func transportOf(w dns.ResponseWriter) string {
	if lw, ok := w.(listen.ResponseWriter); ok {
		return lw.Transport()
	}
	if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
		return listen.UDP
	}
	return listen.TCP
}

// ecsOptions returns the query's first EDNS Client Subnet option, if any,
// and how many it has.
func ecsOptions(req *dns.Msg) (first *dns.EDNS0_SUBNET, n int) {
	opt := req.IsEdns0()
	if opt == nil {
		return nil, 0
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_SUBNET); ok {
			if first == nil {
				first = e
			}
			n++
		}
	}
	return first, n
}

// ecsPrefix is the network an ECS option names: its address masked to the
// source prefix length. Options that are malformed for their family (RFC
// 7871 §6) are rejected. An IPv4 network written as IPv4-mapped IPv6
// (::ffff:192.0.2.0/120, as a dual-stack proxy may see its IPv4 clients)
// is that IPv4 network, as a mapped source address is on every transport
// (DESIGN.md §1.2): else no IPv4 range would hold it. FAMILY 0 with no
// address (dig's +subnet=0, where RFC 7871 §7.1.2 asks for the
// transport's family) is ::/0: any device, which PolicyForClient reads
// as either family.
func ecsPrefix(e *dns.EDNS0_SUBNET) (netip.Prefix, bool) {
	var addr netip.Addr
	bits := int(e.SourceNetmask)
	switch e.Family {
	case 0:
		if bits != 0 {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
	case 1:
		a, ok := netip.AddrFromSlice(e.Address)
		if !ok || e.SourceNetmask > 32 {
			return netip.Prefix{}, false
		}
		addr = a.Unmap()
		if !addr.Is4() {
			return netip.Prefix{}, false
		}
	case 2:
		a, ok := netip.AddrFromSlice(e.Address)
		if !ok || e.SourceNetmask > 128 || len(e.Address) != net.IPv6len {
			return netip.Prefix{}, false
		}
		addr = a
		if a.Is4In6() && bits >= 96 {
			addr, bits = a.Unmap(), bits-96
		}
	default:
		return netip.Prefix{}, false
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, false
	}
	return p, true
}

// echoECS adds the client's ECS option to an answer with the scope the
// decision was made for (RFC 7871 §7.2.1): the whole source prefix, or 0
// for an answer that is every client's alike (anyClient: a local zone's),
// which the proxy may then cache once for all.
func echoECS(m *dns.Msg, ecs *dns.EDNS0_SUBNET, anyClient bool) {
	opt := m.IsEdns0()
	if ecs == nil || opt == nil {
		return
	}
	scope := ecs.SourceNetmask
	if anyClient {
		scope = 0
	}
	opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{
		Code:          dns.EDNS0SUBNET,
		Family:        ecs.Family,
		SourceNetmask: ecs.SourceNetmask,
		SourceScope:   scope,
		Address:       ecs.Address,
	})
}
