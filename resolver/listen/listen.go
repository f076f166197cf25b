// Package listen owns dnsfence's sockets: batched UDP, TCP, and the
// encrypted transports (TLS, HTTPS, QUIC). A listener reads bytes, hands a
// parsed query to a Handler and writes the reply it is given; it knows
// nothing of policy (DESIGN.md §7).
package listen

import (
	"net"
	"net/netip"

	"github.com/miekg/dns"
)

// Transport names, as used in metric labels, logs and audit lines.
const (
	UDP   = "udp"
	TCP   = "tcp"
	TLS   = "tls"   // DNS over TLS, RFC 7858
	HTTPS = "https" // DNS over HTTPS, RFC 8484
	QUIC  = "quic"  // DNS over QUIC, RFC 9250
)

// ResponseWriter is where one query's reply goes.
type ResponseWriter interface {
	dns.ResponseWriter
	// Transport is the transport the query came over: one of UDP, TCP,
	// TLS, HTTPS or QUIC. Every transport but UDP takes replies of up to
	// 65,535 bytes; a UDP reply is fitted to the client's EDNS size.
	Transport() string
}

// Handler answers the queries a listener reads.
type Handler interface {
	// ServeInline answers req when it can without waiting on an upstream
	// (a blocked name, a cache hit, an error), writing the one reply to w,
	// and returns nil. Otherwise it returns resume, which finishes the
	// answer (forwarding, then one write to w); the listener calls it
	// exactly once, where waiting is fine: off the UDP read loop, or on the
	// query's own goroutine. A query may also be dropped (no reply at all),
	// for example over a rate limit on UDP.
	ServeInline(w ResponseWriter, req *dns.Msg) (resume func())
}

// Counter counts a query a listener answers or drops itself, before the
// Handler sees it: transport is one of the names above, result a query
// result such as "dropped" or "formerr".
type Counter func(transport, result string)

// ProxiedAddr is the RemoteAddr of a query whose client address a trusted
// proxy gave (PROXY protocol v2 on TCP or TLS, Forwarded or
// X-Forwarded-For on HTTPS): the embedded address is the client's, Proxy
// the address of the proxy that said so.
type ProxiedAddr struct {
	*net.TCPAddr
	Proxy netip.AddrPort
}
