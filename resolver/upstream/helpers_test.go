package upstream

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// NewForwarder is a Forwarder over upstreams with a per-try timeout;
// fastest tries the healthy upstreams by latency. Nothing is counted.
func NewForwarder(upstreams []string, timeout time.Duration, fastest bool) *Forwarder {
	f, err := New(upstreams, Options{Timeout: timeout, Fastest: fastest})
	if err != nil {
		panic(err)
	}
	return f
}

// testUpstream is a test upstream resolver on loopback, UDP and TCP on one
// port.
type testUpstream struct {
	addr    string
	servers []*dns.Server
	// answer builds the reply; the default answers A 192.0.2.1 for any name.
	answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg
}

// defaultAnswer is what a test upstream says unless told otherwise.
func defaultAnswer(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	switch q.Qtype {
	case dns.TypeA:
		m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.1", q.Name))
	case dns.TypeAAAA:
		m.Answer = append(m.Answer, mustRR("%s 300 IN AAAA 2001:db8::1", q.Name))
	case dns.TypeTXT:
		m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "upstream"`, q.Name))
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(4096, opt.Do())
	}
	return m
}

func mustRR(format string, args ...any) dns.RR {
	rr, err := dns.NewRR(fmt.Sprintf(format, args...))
	if err != nil {
		panic(err)
	}
	return rr
}

func (u *testUpstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	answer := u.answer
	if answer == nil {
		answer = defaultAnswer
	}
	if m := answer(w, r); m != nil {
		// Behave as a real server: compress, and fit UDP answers to the
		// size the query advertised.
		m.Compress = true
		if !tcp && !m.Truncated {
			size := dns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			m.Truncate(size)
		}
		_ = w.WriteMsg(m)
	}
}

// listenBoth opens UDP and TCP on the same loopback port.
func listenBoth(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	pc, ln, err := testnet.ListenBoth()
	require.NoError(t, err)
	return pc, ln
}

// startUpstream runs a test upstream on 127.0.0.1 until the test ends.
func startUpstream(t *testing.T, answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg) *testUpstream {
	t.Helper()
	return startUpstreamOn(t, "127.0.0.1", answer)
}

// startUpstreamOn is startUpstream on the loopback address ip, UDP and TCP
// on one free port.
func startUpstreamOn(t *testing.T, ip string, answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg) *testUpstream {
	t.Helper()
	pc, ln, err := testnet.ListenBothOn(ip)
	require.NoError(t, err)
	u := &testUpstream{addr: pc.LocalAddr().String(), answer: answer}
	u.servers = []*dns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}}
	testnet.Serve(t, u.servers...)
	return u
}

// silentUpstream is a UDP and TCP address that accepts queries and never
// answers: a dead upstream that makes every try time out.
func silentUpstream(t *testing.T) string {
	t.Helper()
	addr, _ := askedSilentUpstream(t)
	return addr
}

// askedSilentUpstream is silentUpstream, and asked, closed at the first
// UDP query it reads that is not a probe of the root.
func askedSilentUpstream(t *testing.T) (addr string, asked <-chan struct{}) {
	t.Helper()
	pc, ln := listenBoth(t)
	t.Cleanup(func() { pc.Close(); ln.Close() })
	ch := make(chan struct{})
	var once sync.Once
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) == nil && len(m.Question) == 1 && m.Question[0].Name != "." {
				once.Do(func() { close(ch) })
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return pc.LocalAddr().String(), ch
}

// closedPort is a loopback UDP/TCP port with nothing listening: queries to
// it fail at once with "connection refused". It is held until the test
// ends (testnet.RefusingAddr), so no other test process takes it.
func closedPort(t *testing.T) string { return testnet.RefusingAddr(t) }

// question builds a query with RD set, optionally with EDNS.
func question(name string, qtype uint16, edns bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	return m
}

// rcodeAnswer answers every query with rcode, and EDEs when the query has
// EDNS.
func rcodeAnswer(rcode int, edes ...*dns.EDNS0_EDE) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
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

// bigAnswer answers with TXT records making a 5,666-byte message (packed
// without compression) for any question.
func bigAnswer(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
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

// packed is m in wire form, uncompressed, as a raw UDP answer.
func packed(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// liedAnswer is the default answer for q with the address 6.6.6.6: what a
// spoofer would want a client to get.
func liedAnswer(q *dns.Msg) *dns.Msg {
	m := defaultAnswer(nil, q)
	m.Answer = []dns.RR{mustRR("%s 300 IN A 6.6.6.6", q.Question[0].Name)}
	return m
}

func rep(octet string, n int) string { return strings.Repeat(octet, n) }
