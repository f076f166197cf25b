package resolver

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

// refusedReasons are every value of the reason label, so each series exists
// (at zero) from the start.
var refusedReasons = []string{RefusedNotAllowed, RefusedPerClient}

// admission decides, at accept, which stream connections are served: TCP
// now, and DNS over TLS, HTTPS and QUIC when they come, which must call
// admit with their peer's address before reading a byte. One admission is
// shared by every listener of a Server, so the per-client cap counts a
// client's connections over all of them.
//
// The rules, in order, decided with the snapshot current at accept (so a
// reload applies to the next connection):
//
//  1. A trusted proxy is admitted on its own address, whatever
//     allowed_clients says, and without the per-client cap: it carries many
//     clients, each checked against allowed_clients per query from the
//     PROXY header it sends (identify). Only the global cap bounds it.
//  2. Any other peer outside allowed_clients is closed at once: it could
//     only ever be REFUSED, and held open it would take a slot an allowed
//     client needs.
//  3. A peer whose network (a /32 for IPv4, a /56 for IPv6, as the rate
//     limiter counts) already holds limits.tcp_connections_per_client
//     connections is closed at once, so that one client cannot take the
//     whole of limits.tcp_connections.
type admission struct {
	handler *Handler
	log     *zap.Logger

	mu sync.Mutex
	// open counts the admitted connections of each client network that are
	// still open; a network with none has no entry, so the map holds at
	// most limits.tcp_connections entries.
	open map[netip.Prefix]int
}

func newAdmission(h *Handler, log *zap.Logger) *admission {
	return &admission{handler: h, log: log, open: map[netip.Prefix]int{}}
}

// admitted is what an admitted connection carries.
type admitted struct {
	// release returns the connection's place; call it once, when the
	// connection closes.
	release func()
	// proxy: the peer is a trusted proxy, whose connection may open with a
	// PROXY protocol header naming the client.
	proxy bool
}

// admit decides for a new connection from peer on transport ("tcp"). When
// it is refused, the refusal is counted and logged at debug, and the
// caller closes the connection at once.
func (a *admission) admit(transport string, peer netip.Addr) (admitted, bool) {
	peer = peer.Unmap().WithZone("")
	snap := a.handler.Snapshot()
	reason := ""
	switch {
	case snap == nil:
		reason = RefusedNotAllowed // nothing loaded: nobody is allowed yet
	case snap.Trusted(peer):
		a.handler.metrics.connectionOpened(transport)
		var once sync.Once
		return admitted{release: func() { once.Do(func() { a.handler.metrics.connectionClosed(transport) }) }, proxy: true}, true
	case !snap.Allowed(peer):
		reason = RefusedNotAllowed
	default:
		key := limitKey(peer)
		a.mu.Lock()
		if a.open[key] < snap.Config.Limits.TCPConnectionsPerClient {
			a.open[key]++
			a.mu.Unlock()
			a.handler.metrics.connectionOpened(transport)
			var once sync.Once
			return admitted{release: func() { once.Do(func() { a.closed(transport, key) }) }}, true
		}
		a.mu.Unlock()
		reason = RefusedPerClient
	}
	a.handler.metrics.connectionRefused(transport, reason)
	if ce := a.log.Check(zap.DebugLevel, "connection refused at accept"); ce != nil {
		ce.Write(zap.String(logClient, peer.String()), zap.String(logTransport, transport), zap.String(logReason, reason))
	}
	return admitted{}, false
}

// closed returns the slot of a connection of the client network key.
func (a *admission) closed(transport string, key netip.Prefix) {
	a.mu.Lock()
	if a.open[key]--; a.open[key] <= 0 {
		delete(a.open, key)
	}
	a.mu.Unlock()
	a.handler.metrics.connectionClosed(transport)
}

// peerAddr is the IP address of a connection's remote end; the zero Addr
// when it has none.
func peerAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr()
	case *net.UDPAddr:
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}
