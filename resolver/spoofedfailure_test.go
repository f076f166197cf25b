package resolver

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// spoofedFailureFirst is an upstream behind which an off-path attacker
// races every UDP answer: before the upstream's own answer, a datagram
// from the upstream's address and port with the query's ID arrives
// carrying rcode, no question section and an Extended DNS Error of the
// attacker's text (DNSpooq, CVE-2020-25684/25686: a reply matched by ID
// and port alone; TuDoor: a resolver that takes the first unverifiable
// response instead of waiting for the real one). Over TCP, which an
// off-path sender cannot inject into, only the upstream answers.
func spoofedFailureFirst(rcode int) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			spoof := new(dns.Msg)
			spoof.SetRcode(r, rcode)
			spoof.Question = nil
			spoof.SetEdns0(1232, false)
			spoof.IsEdns0().Option = append(spoof.IsEdns0().Option,
				&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus, ExtraText: "spoofed: visit evil.example"})
			_ = w.WriteMsg(spoof)
			time.Sleep(20 * time.Millisecond)
		}
		return defaultAnswer(w, r)
	}
}

// TestSpoofedQuestionlessFailureIsNotTheAnswer: a UDP datagram with a
// failure RCODE and no question section names no query: it matches one
// by its ID alone, so that with the many queries a socket has waiting
// each guess of an off-path sender hits one of them (RFC 5452 §9.1: ID,
// question and source must match). It is no answer until TCP says so:
// the client gets the upstream's real answer, never a SERVFAIL with the
// spoofer's Extended DNS Error, and the upstream is not failed over.
func TestSpoofedQuestionlessFailureIsNotTheAnswer(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented, dns.RcodeFormatError} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			up := startUpstream(t, spoofedFailureFirst(rcode))
			f := govFence(t, "upstream_timeout: 2s", up.addr)
			for i, edns := range []bool{true, false} {
				name := fmt.Sprintf("n%d.example.org.", i)
				r := ask(t, f.addr, "127.0.0.1", "udp", question(name, dns.TypeA, edns))
				require.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: %s", name, r)
				require.Len(t, r.Answer, 1, "%s", name)
				assert.Nil(t, ede(r), "%s: the spoofer's Extended DNS Error relayed", name)
				// Asked again: the answer is cached, not a cached failure.
				r = ask(t, f.addr, "127.0.0.1", "udp", question(name, dns.TypeA, edns))
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s again: %s", name, r)
			}
			// Over TCP from the client, and through the message path (a
			// client outside every policy, whose answer is not
			// inspected, and one whose is), the same.
			for _, c := range []struct{ from, network string }{{"127.0.0.1", "tcp"}, {"127.1.0.1", "udp"}} {
				name := fmt.Sprintf("%s.%s.example.org.", c.network, c.from)
				r := ask(t, f.addr, c.from, c.network, question(name, dns.TypeA, true))
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: %s", name, r)
			}
			// With a second upstream, the first is not failed over: the
			// second is asked nothing but its probes.
			second := startUpstream(t, nil)
			two := govFence(t, "upstream_timeout: 2s\nupstream_strategy: ordered", up.addr, second.addr)
			for i := range 5 {
				r := ask(t, two.addr, "127.0.0.1", "udp", question(fmt.Sprintf("two%d.example.org.", i), dns.TypeA, true))
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s", r)
			}
			assert.Zero(t, clientQueries(second), "failed over on a spoofed datagram")
		})
	}
}
