package testnet

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// The answers of the tests' upstreams (miekg/dns handlers that return the
// message to send, nil for none), shared by the resolver and upstream
// tests.

// DefaultAnswer is what a test upstream says unless told otherwise: A
// 192.0.2.1, AAAA 2001:db8::1 or TXT "upstream" for any name (TTL 300),
// NODATA for other types, EDNS with 4,096 octets and the query's DO when
// the query has EDNS.
func DefaultAnswer(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	switch q.Qtype {
	case dns.TypeA:
		m.Answer = append(m.Answer, MustRR("%s 300 IN A 192.0.2.1", q.Name))
	case dns.TypeAAAA:
		m.Answer = append(m.Answer, MustRR("%s 300 IN AAAA 2001:db8::1", q.Name))
	case dns.TypeTXT:
		m.Answer = append(m.Answer, MustRR(`%s 300 IN TXT "upstream"`, q.Name))
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(4096, opt.Do())
	}
	return m
}

// MustRR is the record fmt.Sprintf(format, args...) spells in
// presentation form; it panics where miekg/dns cannot read it.
func MustRR(format string, args ...any) dns.RR {
	rr, err := dns.NewRR(fmt.Sprintf(format, args...))
	if err != nil {
		panic(err)
	}
	return rr
}

// Question is a query for name and qtype with RD set, with EDNS (1,232
// octets, DO clear) when edns.
func Question(name string, qtype uint16, edns bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	return m
}

// RcodeAnswer answers every query with rcode, and edes when the query has
// EDNS.
func RcodeAnswer(rcode int, edes ...*dns.EDNS0_EDE) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		m.RecursionAvailable = true
		if r.IsEdns0() != nil {
			m.SetEdns0(1232, false)
			for _, e := range edes {
				m.IsEdns0().Option = append(m.IsEdns0().Option, e)
			}
		}
		return m
	}
}

// BigAnswer answers any question with TXT records making a 5,666-octet
// message (packed without compression).
func BigAnswer(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	txt := &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}}
	m.Answer = []dns.RR{txt}
	for m.Len() < 5666 {
		txt.Txt = append(txt.Txt, strings.Repeat("x", min(255, 5666-m.Len()-1)))
	}
	if m.Len() != 5666 {
		panic(fmt.Sprintf("big answer is %d bytes", m.Len()))
	}
	return m
}

// Packed is m in wire form, uncompressed, as a raw UDP answer; it panics
// where m does not pack.
func Packed(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// LiedAnswer is the default answer for q with the address 6.6.6.6: what a
// spoofer would want a client to get.
func LiedAnswer(q *dns.Msg) *dns.Msg {
	m := DefaultAnswer(nil, q)
	m.Answer = []dns.RR{MustRR("%s 300 IN A 6.6.6.6", q.Question[0].Name)}
	return m
}
