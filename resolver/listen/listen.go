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

// Received is a ResponseWriter that keeps the octets of its message as
// they came, while Handler.ServeInline runs: what a TSIG's MAC covers (RFC
// 8945 §4.3), which the message unpacked does not keep. Every listener's
// writer has it: UDP's, TCP's (DNS over TLS too), DoH's and DoQ's.
type Received interface {
	// Received returns the message's octets, which belong to the
	// listener: nil once ServeInline returned.
	Received() []byte
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

// RejectHandler is a Handler that also answers the messages a listener
// rejects before any query is parsed of them: an opcode other than QUERY
// (NOTIMP), a question count other than one or a body that does not parse
// (FORMERR). Its rules for every answer (the per-client rate limit) then
// hold for these too: a flood of malformed datagrams from spoofed sources
// gets no more answers than one of queries would.
type RejectHandler interface {
	Handler
	// ServeReject answers a rejected message: reject is the listener's
	// reply to it, which carries the query's ID, opcode, RD bit and OPT
	// record (RFC 6891 §7), and result its Counter result (ResultFormerr,
	// ResultNotimp). It writes reject to w, or what its rules make of it
	// instead (nothing, or another RCODE), and counts what it did: the
	// listener counts nothing of it.
	ServeReject(w ResponseWriter, reject *dns.Msg, result string)
}

// answerReject answers a message the listener rejected with reject (a
// FORMERR or NOTIMP of AcceptMessage or checkQuery): through h when it is
// a RejectHandler, else written here and counted with count (nil counts
// nothing).
func answerReject(h Handler, w ResponseWriter, reject *dns.Msg, count Counter) {
	result := ResultFormerr
	switch reject.Rcode {
	case dns.RcodeNotImplemented:
		result = ResultNotimp
	case dns.RcodeBadVers:
		result = ResultBadvers
	}
	if rh, ok := h.(RejectHandler); ok {
		rh.ServeReject(w, reject, result)
		return
	}
	if count != nil {
		count(w.Transport(), result)
	}
	_ = w.WriteMsg(reject)
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
