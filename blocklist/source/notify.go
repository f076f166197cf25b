package source

import (
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Notifier answers DNS NOTIFY (RFC 1996) for the zone sources it was built
// with, and tells the matching source to check its primary at once. It is
// safe for concurrent use and holds no state of its own: build a new one
// when the set of sources changes.
//
// The answer to a NOTIFY:
//   - from an address of the zone's primary: NOERROR, AA set, the question
//     echoed (RFC 1996 §4.7), and the source checks the primary's SOA (at
//     once, or at the end of the second after the last check a NOTIFY
//     asked for: see Zone.Notify);
//   - from any other address: REFUSED, and nothing happens;
//   - for a zone no source pulls: NOTAUTH (as BIND answers);
//   - with a question count other than 1: FORMERR; with a QTYPE other than
//     SOA or a class other than IN: NOTIMP.
//
// A NOTIFY is authenticated by its source address only (TSIG on it is not
// checked): it is a hint to look, and the look itself, the SOA query and
// the transfer, is signed and verified when sources.tsig is set.
type Notifier struct {
	zones map[string][]*Zone // by apex
}

var _ dns.Handler = (*Notifier)(nil)

// NewNotifier returns a Notifier for the Zone sources among srcs.
func NewNotifier(srcs []Source) *Notifier {
	n := &Notifier{zones: map[string][]*Zone{}}
	for _, s := range srcs {
		if z, ok := s.(*Zone); ok {
			n.zones[z.zone] = append(n.zones[z.zone], z)
		}
	}
	return n
}

// Reply answers the NOTIFY req, which came from the address from, and acts
// on it. from must be the packet's own source address (the socket peer),
// never an address the message names (EDNS Client Subnet, PROXY,
// Forwarded): it is all that authenticates a NOTIFY. It returns nil when req is not a NOTIFY (opcode 4): the caller
// answers that as it answers any other opcode.
func (n *Notifier) Reply(from netip.Addr, req *dns.Msg) *dns.Msg {
	if req.Opcode != dns.OpcodeNotify || req.Response {
		return nil
	}
	m := new(dns.Msg)
	m.SetReply(req)
	if req.IsEdns0() != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	if len(req.Question) != 1 {
		m.Question = nil
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	if q.Qtype != dns.TypeSOA || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	zones := n.zones[strings.ToLower(q.Name)]
	if len(zones) == 0 {
		m.Rcode = dns.RcodeNotAuth
		return m
	}
	accepted := false
	for _, z := range zones {
		if z.Notify(from) {
			accepted = true
		}
	}
	if !accepted {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	return m
}

// ServeDNS answers a NOTIFY on a listener of its own (a dns.Server);
// any other query gets NOTIMP, and a response is dropped.
func (n *Notifier) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if req.Response {
		return // never answer an answer
	}
	var from netip.Addr
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		from = a.AddrPort().Addr()
	case *net.TCPAddr:
		from = a.AddrPort().Addr()
	}
	m := n.Reply(from.Unmap(), req)
	if m == nil {
		m = new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
	}
	w.WriteMsg(m)
}
