// Command benchprobe waits for a DNS server to answer as it should: it asks
// one question over UDP every few milliseconds until the answer has the
// RCODE wanted, then exits 0 (1 when the time allowed runs out). The
// benchmark starts every server and takes its ready time with it: dig, a
// process started for every try, adds its own start (about 30 ms here) and
// the time between tries to every figure.
package main

import (
	"flag"
	"log"
	"net"
	"os"
	"time"

	"github.com/miekg/dns"
)

func main() {
	server := flag.String("server", "127.0.0.1:5301", "the server's UDP address, on loopback")
	source := flag.String("source", "127.0.0.2", "the address to ask from, on loopback")
	name := flag.String("name", "w1.tiktok.com.", "the QNAME to ask (type A)")
	rcode := flag.String("rcode", "NXDOMAIN", "the RCODE the answer must have")
	every := flag.Duration("every", 5*time.Millisecond, "time between tries, and how long each waits for its answer")
	limit := flag.Duration("timeout", 60*time.Second, "how long to keep trying")
	flag.Parse()
	want, ok := dns.StringToRcode[*rcode]
	if !ok {
		log.Fatalf("unknown RCODE %q", *rcode)
	}
	host, _, err := net.SplitHostPort(*server)
	if err != nil {
		log.Fatal(err)
	}
	src := net.ParseIP(*source)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || src == nil || !src.IsLoopback() {
		log.Fatalf("the benchmark probe asks on loopback only, not %s from %s", *server, *source)
	}
	c := &dns.Client{Net: "udp", Timeout: *every, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: src}, Timeout: *every}}
	q := new(dns.Msg).SetQuestion(dns.Fqdn(*name), dns.TypeA)
	for end := time.Now().Add(*limit); time.Now().Before(end); {
		next := time.Now().Add(*every)
		if r, _, err := c.Exchange(q, *server); err == nil && r.Rcode == want {
			os.Exit(0)
		}
		time.Sleep(time.Until(next))
	}
	log.Printf("%s did not answer %s for %s in %v", *server, *rcode, *name, *limit)
	os.Exit(1)
}
