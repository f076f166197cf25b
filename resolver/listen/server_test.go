package listen

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// fakeHandler answers "fast." inline and "slow." from resume, which waits
// for release; it records the transport of each query.
type fakeHandler struct {
	release    chan struct{}
	mu         sync.Mutex
	transports []string
}

func (h *fakeHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	h.mu.Lock()
	h.transports = append(h.transports, w.Transport())
	h.mu.Unlock()
	answer := func() {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
			Txt: []string{w.Transport()}}}
		_ = w.WriteMsg(m)
	}
	if req.Question[0].Name != "slow." {
		answer()
		return nil
	}
	return func() {
		<-h.release
		answer()
	}
}

// fakeRules allow every loopback peer and trust none.
type fakeRules struct{}

func (fakeRules) Allowed(peer netip.Addr) bool { return peer.IsLoopback() }
func (fakeRules) Trusted(netip.Addr) bool      { return false }
func (fakeRules) Limits() Limits {
	return Limits{TCPConnections: 4, TCPConnectionsPerClient: 4, TCPPipeline: 4, TCPReadTimeout: 5 * time.Second,
		TCPIdleTimeout: 5 * time.Second, UDPReceiveBuffer: 1 << 16, UDPSendBuffer: 1 << 16}
}

// TestServerServesAHandler: the listeners give each query to the Handler's
// ServeInline and run the resume it returns off the read loop, so a query
// answered inline is not held up behind one waiting on its resume, on UDP
// and on one pipelined TCP connection; what the listener drops itself is
// counted; Shutdown waits for the resumes in flight.
func TestServerServesAHandler(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{})}
	var mu sync.Mutex
	counted := map[[2]string]int{}
	var addr string
	s := New(Config{
		Handler: h,
		Count: func(transport, result string) {
			mu.Lock()
			counted[[2]string{transport, result}]++
			mu.Unlock()
		},
		Rules:   func() Rules { return fakeRules{} },
		Sockets: func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() },
		Log:     zaptest.NewLogger(t),
	})
	require.NoError(t, s.Start([]string{"127.0.0.1:0"}))
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(func() {
		release()
		_ = s.Shutdown(context.Background())
	})

	query := func(name string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeTXT)
		return m
	}

	// UDP: the slow query waits on its resume; the fast one is answered.
	uc, err := net.Dial("udp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { uc.Close() })
	udp := &dns.Conn{Conn: uc}
	require.NoError(t, uc.SetDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, udp.WriteMsg(query("slow.")))
	require.NoError(t, udp.WriteMsg(query("fast.")))
	r, err := udp.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, "fast.", r.Question[0].Name, "answered inline, before the slow one")

	// TCP: the same on one pipelined connection.
	tc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { tc.Close() })
	tcp := &dns.Conn{Conn: tc}
	require.NoError(t, tc.SetDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, tcp.WriteMsg(query("slow.")))
	require.NoError(t, tcp.WriteMsg(query("fast.")))
	r, err = tcp.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, "fast.", r.Question[0].Name, "answered before the slow one on the same connection")

	// A response is dropped by the listener itself, and counted.
	resp := query("fast.")
	resp.Response = true
	require.NoError(t, udp.WriteMsg(resp))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return counted[[2]string{UDP, ResultDropped}] == 1
	}, 5*time.Second, 5*time.Millisecond)

	// Shutdown waits for the two resumes in flight, which then answer.
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, 5*time.Millisecond, "the TCP listener closes")
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned with resumes in flight: %v", err)
	default:
	}
	release()
	for _, c := range []*dns.Conn{udp, tcp} {
		r, err := c.ReadMsg()
		require.NoError(t, err)
		assert.Equal(t, "slow.", r.Question[0].Name)
		require.Len(t, r.Answer, 1)
	}
	require.NoError(t, <-stopped)
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.ElementsMatch(t, []string{UDP, UDP, TCP, TCP}, h.transports)
}

// TestListenSharedPortZeroAmidTCP: port 0 finds a port free for TCP too
// on a machine whose TCP ports are mostly held (by outgoing connections
// in TIME_WAIT, which block a listener's bind: a CI run failed to start a
// test's server so, "listen tcp 127.0.0.1:35584: bind: address already
// in use", after eleven UDP picks). In a network namespace of its own the
// kernel picks from 100 ports, 90 of them held by TCP sockets bound
// without SO_REUSEADDR; 50 starts on port 0 must all succeed. Picking the
// UDP port first, a start failed within the first five in each of three
// runs.
func TestListenSharedPortZeroAmidTCP(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	require.NoError(t, os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40099"), 0o644))
	held := 0
	for port := 40000; port < 40100 && held < 90; port++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		require.NoError(t, err)
		t.Cleanup(func() { unix.Close(fd) })
		if unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}) == nil {
			held++
		}
	}
	require.Equal(t, 90, held)
	for i := range 50 {
		pcs, ln, err := listenShared("127.0.0.1:0", 2)
		require.NoError(t, err, "start %d", i)
		port := pcs[0].LocalAddr().(*net.UDPAddr).Port
		assert.Equal(t, port, ln.Addr().(*net.TCPAddr).Port)
		for _, pc := range pcs {
			assert.Equal(t, port, pc.LocalAddr().(*net.UDPAddr).Port)
			pc.Close()
		}
		ln.Close()
	}
}

// TestListenSharedJoinsNoOtherGroup: a port another process of the same
// user holds with SO_REUSEPORT (a second dnsfence started by mistake, a
// server of another kind) is not joined: the start fails, "address already
// in use", before a UDP socket of the group is bound. At a fixed port the
// group bound first: beside a UDP-only holder it started and shared the
// port's queries with it, and a second dnsfence answered a share of the
// first one's queries until its TCP bind failed. The holder is on the
// wildcard address, which 127.0.0.1 conflicts with, so that its port-0
// pick joins no group of a test running beside (see the test below).
func TestListenSharedJoinsNoOtherGroup(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	held, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:0")
	require.NoError(t, err)
	defer held.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(held.LocalAddr().(*net.UDPAddr).Port))
	pcs, ln, err := listenShared(addr, 2)
	if err == nil {
		for _, pc := range pcs {
			pc.Close()
		}
		ln.Close()
	}
	require.ErrorIs(t, err, unix.EADDRINUSE, "joined the group holding %s", addr)

	// A dnsfence holding the port (its group and TCP): a second one fails.
	first, firstLn, err := listenShared(freeAddr(t), 2)
	require.NoError(t, err)
	defer func() {
		for _, pc := range first {
			pc.Close()
		}
		firstLn.Close()
	}()
	_, _, err = listenShared(firstLn.Addr().String(), 2)
	require.ErrorIs(t, err, unix.EADDRINUSE)
	var op *net.OpError
	require.ErrorAs(t, err, &op)
	assert.Equal(t, "tcp", op.Net, "failed at the TCP bind, before holding a UDP socket")
}

// freeAddr is a loopback address with a port free for TCP and UDP.
func freeAddr(t *testing.T) string {
	t.Helper()
	pcs, ln, err := listenShared("127.0.0.1:0", 1)
	require.NoError(t, err)
	pcs[0].Close()
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestListenSharedPortZeroJoinsNoOtherGroup: port 0 takes a port no socket
// holds. 500 sockets of another group (as another process of the same
// user would hold them, with SO_REUSEPORT) take 500 of the 28,000 or so
// ports the kernel picks from; in 300 starts on port 0 none may land on
// one of theirs. When the group's first socket let the kernel pick its
// port with SO_REUSEPORT set, about five of the 300 did, and shared that
// port's queries with the other group.
//
// The other groups hold the wildcard address (as a server of another kind
// often does), which conflicts with 127.0.0.1 all the same: held on
// 127.0.0.1, their port-0 picks joined the groups of the servers other
// packages' tests run meanwhile (the kernel's pick passes over no port a
// group of the same user holds with SO_REUSEPORT), and took half of those
// servers' queries. On the wildcard address they take none: the kernel
// gives a datagram to the socket bound to its destination address first.
func TestListenSharedPortZeroJoinsNoOtherGroup(t *testing.T) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return errors.Join(err, serr)
	}}
	foreign := map[int]bool{}
	for range 500 {
		pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:0")
		require.NoError(t, err)
		t.Cleanup(func() { pc.Close() })
		foreign[pc.LocalAddr().(*net.UDPAddr).Port] = true
	}
	for range 300 {
		pcs, ln, err := listenShared("127.0.0.1:0", 2)
		require.NoError(t, err)
		port := pcs[0].LocalAddr().(*net.UDPAddr).Port
		for _, pc := range pcs {
			assert.Equal(t, port, pc.LocalAddr().(*net.UDPAddr).Port)
			pc.Close()
		}
		ln.Close()
		require.False(t, foreign[port], "port %d is another group's", port)
	}
}

// TestStartWithoutRules: before any rules are loaded (no Rules func, or
// one that returns nil), Start and StartEncrypted fail with errNoRules and
// open no socket: nothing would be admitted.
func TestStartWithoutRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules func() Rules
	}{
		{name: "no Rules func"},
		{name: "no rules loaded yet", rules: func() Rules { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{Handler: &fakeHandler{}, Rules: tc.rules, Log: zaptest.NewLogger(t)})
			require.ErrorIs(t, s.Start([]string{"127.0.184.1:0"}), errNoRules)
			require.ErrorIs(t, s.StartEncrypted(Encrypted{HTTPS: []string{"http://127.0.184.1:0"}}), errNoRules)
			assert.Empty(t, s.udp, "no UDP socket opened")
			assert.Empty(t, s.tcp, "no TCP listener opened")
			assert.Empty(t, s.doh, "no DoH listener opened")
		})
	}
}

// TestStartFailureClosesWhatItOpened: Start fails at an address it cannot
// bind, naming it, and closes the UDP and TCP sockets it opened at the
// addresses before: the address is bound no more, and a new listener
// can take it.
func TestStartFailureClosesWhatItOpened(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.184.1:0")
	require.NoError(t, err)
	defer held.Close()
	s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
	err = s.Start([]string{"127.0.184.2:0", held.Addr().String()})
	require.ErrorIs(t, err, unix.EADDRINUSE)
	assert.ErrorContains(t, err, "listening on "+held.Addr().String())

	require.Len(t, s.tcp, 1, "the first address was opened")
	addr := s.tcp[0].ln.Addr().String()
	assert.False(t, testnet.UDPBoundHere(t, addr), "a UDP socket at the first address was left open")
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err, "the TCP listener at the first address was left open")
	ln.Close()
}

// TestStartEncryptedFailureClosesWhatItOpened: StartEncrypted fails at a
// DNS over QUIC address it cannot bind, naming it, and closes the DNS over
// HTTPS and QUIC listeners it opened before: their addresses are bound no
// more.
func TestStartEncryptedFailureClosesWhatItOpened(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	held, err := net.ListenPacket("udp", "127.0.184.1:0")
	require.NoError(t, err)
	defer held.Close()
	var stopped atomic.Int32
	s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t),
		Stopped: func(string, string, error) { stopped.Add(1) }})
	err = s.StartEncrypted(Encrypted{HTTPS: []string{"127.0.184.2:0"}, QUIC: []string{"127.0.184.2:0", held.LocalAddr().String()}, Cert: store})
	require.ErrorIs(t, err, unix.EADDRINUSE)
	assert.ErrorContains(t, err, "listening on "+held.LocalAddr().String())

	opened := map[string]string{}
	for _, e := range s.Endpoints() {
		opened[e.Transport] = e.Addr.String()
	}
	require.Len(t, opened, 2, "the DoH and the first DoQ listener were opened: %v", opened)
	ln, err := net.Listen("tcp", opened[HTTPS])
	require.NoError(t, err, "the DoH listener was left open")
	ln.Close()
	assert.False(t, testnet.UDPBoundHere(t, opened[QUIC]), "the DoQ socket was left open")
	// The close was asked for: no listener stopped on its own
	// (TestDoQServeAfterCloseIsNoFailure).
	assert.Zero(t, stopped.Load(), "Config.Stopped told")
}

// TestStartEncryptedRefusals: StartEncrypted fails, naming the address,
// for a TLS listener of each transport without a certificate, a DNS over
// TLS or HTTPS address it cannot bind, and a DNS over HTTPS address it
// cannot read; the UDP and TCP sockets Start opened before are closed.
// A start that went on without the listener would serve its clients
// nothing while dnsfence said it started.
func TestStartEncryptedRefusals(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	held, err := net.Listen("tcp", "127.0.186.1:0")
	require.NoError(t, err)
	defer held.Close()
	const free = "127.0.186.2:0"
	for _, tc := range []struct {
		name    string
		enc     Encrypted
		is      error  // the error wrapped, or nil
		names   string // the address the error names
		message string // what the error says of it
	}{
		{name: "DoT without a certificate", enc: Encrypted{TLS: []string{free}}, is: errNoCert, names: free},
		{name: "DoH without a certificate", enc: Encrypted{HTTPS: []string{"https://" + free}}, is: errNoCert, names: "https://" + free},
		{name: "DoQ without a certificate", enc: Encrypted{QUIC: []string{free}}, is: errNoCert, names: free},
		{name: "DoT address held", enc: Encrypted{TLS: []string{held.Addr().String()}, Cert: store}, is: unix.EADDRINUSE,
			names: held.Addr().String()},
		{name: "DoH address held", enc: Encrypted{HTTPS: []string{"http://" + held.Addr().String()}}, is: unix.EADDRINUSE,
			names: "http://" + held.Addr().String()},
		{name: "DoH address unread", enc: Encrypted{HTTPS: []string{"ftp://" + free}, Cert: store}, names: "ftp://" + free,
			message: "want host:port, https://host:port or http://host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
			require.NoError(t, s.Start([]string{free}))
			plain := s.tcp[0].ln.Addr().String()
			err := s.StartEncrypted(tc.enc)
			require.Error(t, err, "started without its listener")
			if tc.is != nil {
				assert.ErrorIs(t, err, tc.is)
			}
			assert.ErrorContains(t, err, "listening on "+tc.names)
			assert.ErrorContains(t, err, tc.message)
			assert.Empty(t, s.Endpoints(), "an encrypted listener opened")
			assert.False(t, testnet.UDPBoundHere(t, plain), "Start's UDP socket left open")
			ln, err := net.Listen("tcp", plain)
			require.NoError(t, err, "Start's TCP listener left open")
			ln.Close()
		})
	}
}
