package listen

import (
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"
)

// Why a connection was closed at accept: the `reason` label of
// dnsfence_connections_refused_total.
const (
	// RefusedNotAllowed: the peer is outside allowed_clients and is not a
	// trusted proxy.
	RefusedNotAllowed = "not_allowed"
	// RefusedPerClient: the peer's network already holds
	// limits.tcp_connections_per_client connections.
	RefusedPerClient = "per_client_limit"
)

// RefusedReasons are every reason a connection is closed at accept, so that
// each series of a counter by reason can exist (at zero) from the start.
func RefusedReasons() []string { return []string{RefusedNotAllowed, RefusedPerClient} }

// ClosedNotReading is the reason of dnsfence_connections_closed_total for a
// connection whose client left its answers unread: a write blocked for
// the write timeout, or more answers waiting than the listener holds for
// one connection.
const ClosedNotReading = "not_reading"

// ClosedReasons are every reason a connection is closed after admission,
// so that each series of the counter exists (at zero) from the start.
func ClosedReasons() []string { return []string{ClosedNotReading} }

// Log field keys of the listeners, the same as the resolver's.
const (
	logClient    = "client"
	logTransport = "transport"
	logReason    = "reason"
)

// admission decides, at accept, which stream connections are served: TCP
// now, and DNS over TLS, HTTPS and QUIC when they come, which must call
// admit with their peer's address before reading a byte. One admission is
// shared by every listener of a Server, so the per-client cap counts a
// client's connections over all of them.
//
// The rules, in order, decided with the Rules current at accept (so a
// reload applies to the next connection):
//
//  1. A trusted proxy is admitted on its own address, whatever
//     allowed_clients says, and without the per-client cap: it carries many
//     clients, each checked against allowed_clients per query from the
//     PROXY header it sends. Only the global cap bounds it.
//  2. Any other peer outside allowed_clients is closed at once: it could
//     only ever be REFUSED, and held open it would take a slot an allowed
//     client needs.
//  3. A peer whose network (a /32 for IPv4, a /56 for IPv6, as the rate
//     limiter counts) already holds limits.tcp_connections_per_client
//     connections is closed at once, so that one client cannot take the
//     whole of limits.tcp_connections. Before that, the connections of
//     that network its client has finished with are counted no more
//     (reclaim): closed by the client, nothing left to read or answer,
//     their goroutines not yet run to see it.
type admission struct {
	rules       func() Rules
	connections func(transport string, delta int)
	refused     func(transport, reason string)
	log         *zap.Logger

	mu sync.Mutex
	// clients are the admitted connections of each client network that
	// are still open; a network with none has no entry, so the map holds
	// at most limits.tcp_connections entries.
	clients map[netip.Prefix]*clientConns
}

// clientConns are the open connections of one client network.
type clientConns struct {
	open int
	// finished holds, for those of them that can tell (slot.reclaimable),
	// whether their client has finished with them.
	finished map[*slot]func() bool
}

// slot is one admitted connection's place in its client network's count.
type slot struct {
	a         *admission
	transport string
	key       netip.Prefix
	once      sync.Once
	released  bool // under a.mu
}

// release returns the place, once: when the connection closes, or
// earlier when reclaim finds its client finished with it.
func (s *slot) release() { s.once.Do(func() { s.a.closed(s) }) }

// reclaimable lets reclaim ask finished whether the connection's client
// has finished with it, for as long as it holds its place. finished must
// not block: reclaim runs on an accept.
func (s *slot) reclaimable(finished func() bool) {
	s.a.mu.Lock()
	defer s.a.mu.Unlock()
	if c := s.a.clients[s.key]; c != nil && !s.released {
		if c.finished == nil {
			c.finished = map[*slot]func() bool{}
		}
		c.finished[s] = finished
	}
}

// newAdmission admits by cfg's Rules, counting into cfg's Connections
// and Refused.
func newAdmission(cfg Config) *admission {
	return &admission{rules: cfg.Rules, connections: cfg.Connections, refused: cfg.Refused, log: cfg.Log,
		clients: map[netip.Prefix]*clientConns{}}
}

// admitted is what an admitted connection carries.
type admitted struct {
	// release returns the connection's place; call it once, when the
	// connection closes.
	release func()
	// proxy: the peer is a trusted proxy, whose connection may open with a
	// PROXY protocol header naming the client.
	proxy bool
	// slot is the connection's place under the per-client cap; nil for a
	// trusted proxy's, which has none.
	slot *slot
}

// admit decides for a new connection from peer on transport (TCP). When
// it is refused, the refusal is counted and logged at debug, and the
// caller closes the connection at once.
func (a *admission) admit(transport string, peer netip.Addr) (admitted, bool) {
	peer = peer.Unmap().WithZone("")
	var rules Rules
	if a.rules != nil {
		rules = a.rules()
	}
	reason := ""
	switch {
	case rules == nil:
		reason = RefusedNotAllowed // nothing loaded: nobody is allowed yet
	case rules.Trusted(peer):
		a.connections(transport, 1)
		var once sync.Once
		return admitted{release: func() { once.Do(func() { a.connections(transport, -1) }) }, proxy: true}, true
	case !rules.Allowed(peer):
		reason = RefusedNotAllowed
	default:
		key := ClientNetwork(peer)
		limit := rules.Limits().TCPConnectionsPerClient
		s := a.take(transport, key, limit)
		if s == nil && a.reclaim(key) {
			s = a.take(transport, key, limit)
		}
		if s != nil {
			a.connections(transport, 1)
			return admitted{release: s.release, slot: s}, true
		}
		reason = RefusedPerClient
	}
	a.refused(transport, reason)
	if ce := a.log.Check(zap.DebugLevel, "connection refused at accept"); ce != nil {
		ce.Write(zap.String(logClient, peer.String()), zap.String(logTransport, transport), zap.String(logReason, reason))
	}
	return admitted{}, false
}

// take gives a connection on transport a place among the client network
// key's, unless it already holds limit; nil then.
func (a *admission) take(transport string, key netip.Prefix, limit int) *slot {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.clients[key]
	if c == nil {
		c = &clientConns{}
	}
	if c.open >= limit {
		return nil
	}
	c.open++
	a.clients[key] = c
	return &slot{a: a, transport: transport, key: key}
}

// reclaim releases the place of one of the client network key's
// connections whose client has finished with it, and reports whether it
// found one. A client that closes a connection and opens the next at once (a
// stub resolver retrying truncated answers over TCP, a connection a
// query) would otherwise find its closed ones still counted until their
// goroutines run to read the close, and be refused at its cap: about a
// tenth of the connections of 32 churning at once, on two busy cores
// (TestAdmissionReclaimsFinishedConnections).
func (a *admission) reclaim(key netip.Prefix) bool {
	a.mu.Lock()
	var slots []*slot
	var finished []func() bool
	if c := a.clients[key]; c != nil {
		for s, f := range c.finished {
			slots = append(slots, s)
			finished = append(finished, f)
		}
	}
	a.mu.Unlock()
	// Asked without the lock: each asks the kernel.
	for i, s := range slots {
		if finished[i]() {
			s.release()
			if ce := a.log.Check(zap.DebugLevel, "a connection its client has closed counted no more"); ce != nil {
				ce.Write(zap.String(logClient, key.String()))
			}
			return true
		}
	}
	return false
}

// closed returns s's place.
func (a *admission) closed(s *slot) {
	a.mu.Lock()
	s.released = true
	if c := a.clients[s.key]; c != nil {
		delete(c.finished, s)
		if c.open--; c.open <= 0 {
			delete(a.clients, s.key)
		}
	}
	a.mu.Unlock()
	a.connections(s.transport, -1)
}

// ClientNetwork is the network one client is counted as: a /32 for IPv4, a
// /56 for IPv6 (an end site's usual assignment), for the per-client
// connection cap and rate limits.
func ClientNetwork(a netip.Addr) netip.Prefix {
	bits := 32
	if a.Is6() {
		bits = 56
	}
	p, _ := a.Prefix(bits)
	return p
}

// peerAddr is the IP address of a connection's remote end; the zero Addr
// when it has none.
func peerAddr(a net.Addr) netip.Addr { return AddrPortOf(a).Addr() }

// AddrPortOf is the address and port of a socket's net.Addr (a
// *net.TCPAddr or *net.UDPAddr, as listeners and connections give them),
// as it is (IPv4-mapped, zone kept); the zero AddrPort for any other.
func AddrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
