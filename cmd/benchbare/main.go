// Command benchbare is the benchmark's ceiling for a Go DNS server: a bare
// miekg/dns responder that answers every query NXDOMAIN with an SOA, as
// dnsfence's blocked path does, with no policy, lists or logging.
package main

import (
	"flag"
	"log"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:5398", "UDP address")
	flag.Parse()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		m.RecursionAvailable = true
		m.Ns = []dns.RR{&dns.SOA{
			Hdr: dns.RR_Header{Name: "tiktok.com.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
			Ns:  "blocked.dnsfence.invalid.", Mbox: "hostmaster.dnsfence.invalid.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60,
		}}
		_ = w.WriteMsg(m)
	})
	log.Fatal((&dns.Server{Addr: *addr, Net: "udp", Handler: h}).ListenAndServe())
}
