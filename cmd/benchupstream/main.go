// Command benchupstream is the benchmark's upstream: an authoritative-style
// responder on loopback that answers A 192.0.2.1 (TTL 3600) for any name,
// so that the cache-miss path measures the resolver, not a real network.
//
// Over UDP it reads up to 64 queries with one recvmmsg and sends their
// answers with one sendmmsg (resolver/listen's batches), parsing and
// packing with miekg/dns: the harness runs it on the load generator's
// core, and miekg/dns's server, a goroutine a datagram, took about 17 µs
// of that core a query, so that on the miss path the load generator and
// the upstream, not the server, were the limit. TCP (for an answer a
// resolver asks again over TCP) is miekg/dns's server.
package main

import (
	"flag"
	"log"
	"net"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

// udpBatch is how many queries one recvmmsg reads, and answers one
// sendmmsg sends.
const udpBatch = 64

func main() {
	addr := flag.String("listen", "127.0.0.1:5399", "UDP and TCP address")
	flag.Parse()
	if ip := net.ParseIP(mustHost(*addr)); ip == nil || !ip.IsLoopback() {
		log.Fatalf("the benchmark upstream listens on loopback only, not %s", *addr)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { _ = w.WriteMsg(answer(r)) })
	go func() { log.Fatal((&dns.Server{Addr: *addr, Net: "tcp", Handler: h}).ListenAndServe()) }()
	ua, err := net.ResolveUDPAddr("udp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(serveUDP(pc))
}

// answer is the reply to r: A 192.0.2.1 for an A question, no answer for
// any other type, with an OPT of 1232 octets and r's DO bit when r has one.
func answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
		m.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600},
			A:   net.IPv4(192, 0, 2, 1),
		}}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
	}
	return m
}

// serveUDP answers the queries that come to pc, a batch at a time, until
// it cannot read; a datagram that is not a query is dropped.
func serveUDP(pc *net.UDPConn) error {
	_ = pc.SetReadBuffer(4 << 20) // best effort: the kernel caps it
	b := listen.NewBatchConn(pc)
	in := make([]ipv4.Message, udpBatch)
	out := make([]ipv4.Message, udpBatch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, dns.MaxMsgSize)}
		out[i].Buffers = [][]byte{make([]byte, 0, 4096)}
	}
	q := new(dns.Msg)
	for {
		n, err := b.ReadBatch(in, 0)
		if err != nil {
			return err
		}
		k := 0
		for i := range n {
			if q.Unpack(in[i].Buffers[0][:in[i].N]) != nil || q.Response {
				continue
			}
			buf := out[k].Buffers[0]
			wire, err := answer(q).PackBuffer(buf[:cap(buf)])
			if err != nil {
				continue
			}
			out[k].Buffers[0], out[k].Addr = wire, in[i].Addr
			k++
		}
		for sent := 0; sent < k; {
			m, err := b.WriteBatch(out[sent:k], 0)
			if err != nil {
				m = 1 // that answer is lost, as a datagram may be
			}
			sent += m
		}
	}
}

func mustHost(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		log.Fatal(err)
	}
	return h
}
