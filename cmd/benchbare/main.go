// Command benchbare is the benchmark's ceiling for a Go DNS server: a bare
// miekg/dns responder that answers every query NXDOMAIN with an SOA, as
// dnsfence's blocked path does, with no policy, lists or logging.
//
// With -batch it is the floor of dnsfence's own UDP loop instead: the
// same batched reads and writes (listen.NewBatchConn: recvmmsg and
// sendmmsg, up to 64 datagrams a call) and the same NXDOMAIN with an SOA,
// built straight in wire form from the query's header and question, with
// nothing looked at. What dnsfence spends over it on a blocked query is
// its policy, its answer and its counting; what it spends is the Go
// runtime's and the kernel's.
package main

import (
	"errors"
	"flag"
	"log"
	"net"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:5398", "UDP address")
	batch := flag.Bool("batch", false, "answer in wire form in batches, as dnsfence's UDP loop reads and writes")
	flag.Parse()
	if *batch {
		log.Fatal(serveBatches(*addr))
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		m.RecursionAvailable = true
		m.Ns = []dns.RR{soa()}
		_ = w.WriteMsg(m)
	})
	log.Fatal((&dns.Server{Addr: *addr, Net: "udp", Handler: h}).ListenAndServe())
}

// soa is the blocked answer's SOA, as dnsfence gives it for tiktok.com.
func soa() *dns.SOA {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: "tiktok.com.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:  "blocked.dnsfence.invalid.", Mbox: "hostmaster.dnsfence.invalid.",
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60,
	}
}

// batchSize is dnsfence's UDP batch (listen's udpBatch).
const batchSize = 64

// serveBatches answers on addr until reading fails for good.
func serveBatches(addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return err
	}
	rr := make([]byte, 256)
	n, err := dns.PackRR(soa(), rr, 0, nil, false)
	if err != nil {
		return err
	}
	rr = rr[:n]
	conn := listen.NewBatchConn(pc)
	in := make([]ipv4.Message, batchSize)
	out := make([]ipv4.Message, 0, batchSize)
	answers := make([][]byte, batchSize)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 1232)}
		answers[i] = make([]byte, 0, 1232)
	}
	for {
		n, err := conn.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		out = out[:0]
		for i := range n {
			if a := answer(answers[i][:0], in[i].Buffers[0][:in[i].N], rr); a != nil {
				answers[i] = a
				out = append(out, ipv4.Message{Buffers: answers[i : i+1], Addr: in[i].Addr})
			}
		}
		for len(out) > 0 {
			sent, err := conn.WriteBatch(out, 0)
			if err != nil {
				sent = 1 // skip the one that failed
			}
			out = out[sent:]
		}
	}
}

// answer appends to b the NXDOMAIN answer to the query q: its header with
// QR and RA set, its question, and rr in the authority section; nil
// for a datagram with no whole question.
func answer(b, q, rr []byte) []byte {
	if len(q) < dnswire.HeaderLen || dnswire.Flags(q)&dnswire.FlagQR != 0 {
		return nil
	}
	question, ok := dnswire.ReadQuestion(q)
	if !ok {
		return nil
	}
	b = append(b, q[0], q[1], 0x80|q[2]&0x01, 0x80|dns.RcodeNameError, 0, 1, 0, 0, 0, 1, 0, 0)
	b = append(b, q[dnswire.HeaderLen:question.End]...)
	return append(b, rr...)
}
