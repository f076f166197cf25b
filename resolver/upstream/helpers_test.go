package upstream

import (
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
	testnet.EachDatagram(pc, func(b []byte, _ net.Addr) {
		m := new(dns.Msg)
		if m.Unpack(b) == nil && len(m.Question) == 1 && m.Question[0].Name != "." {
			once.Do(func() { close(ch) })
		}
	})
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

func rep(octet string, n int) string { return strings.Repeat(octet, n) }

// The tests' queries and their upstreams' answers, shared with the other
// package's tests (testnet).
var (
	question      = testnet.Question
	defaultAnswer = testnet.DefaultAnswer
	rcodeAnswer   = testnet.RcodeAnswer
	bigAnswer     = testnet.BigAnswer
	liedAnswer    = testnet.LiedAnswer
	packed        = testnet.Packed
)
