// Command benchupstream is the benchmark's upstream: an authoritative-style
// responder on loopback that answers A 192.0.2.1 (TTL 3600) for any name,
// so that the cache-miss path measures the resolver, not a real network.
package main

import (
	"flag"
	"log"
	"net"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:5399", "UDP and TCP address")
	flag.Parse()
	if ip := net.ParseIP(mustHost(*addr)); ip == nil || !ip.IsLoopback() {
		log.Fatalf("the benchmark upstream listens on loopback only, not %s", *addr)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
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
		_ = w.WriteMsg(m)
	})
	go func() { log.Fatal((&dns.Server{Addr: *addr, Net: "tcp", Handler: h}).ListenAndServe()) }()
	log.Fatal((&dns.Server{Addr: *addr, Net: "udp", Handler: h, UDPSize: 65535}).ListenAndServe())
}

func mustHost(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		log.Fatal(err)
	}
	return h
}
