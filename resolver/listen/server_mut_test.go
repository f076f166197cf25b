package listen

import (
	"cmp"
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// rejectTold is a fakeHandler that is also a RejectHandler: it answers each
// rejected message REFUSED in place of the listener's reply, as a rate
// limit's rules may, and notes what it was told.
// toldReject is what a RejectHandler was told of a rejected message.
type toldReject struct {
	transport, result string
	rcode             int
}

type rejectTold struct {
	fakeHandler
	mu   sync.Mutex
	told []toldReject
}

func (h *rejectTold) ServeReject(w ResponseWriter, reject *dns.Msg, result string) {
	h.mu.Lock()
	h.told = append(h.told, toldReject{w.Transport(), result, reject.Rcode})
	h.mu.Unlock()
	m := reject.Copy()
	m.Rcode = dns.RcodeRefused
	_ = w.WriteMsg(m)
}

// TestRejectHandlerAnswersRejects: a message a listener rejects before any
// query is parsed of it (NOTIMP for its opcode, FORMERR for two questions,
// BADVERS for an OPT of version 1) goes to a RejectHandler's ServeReject,
// with the listener's reply and its result, on UDP and TCP; what it
// writes is the one answer the client gets, and the listener counts
// nothing of it, leaving the counting to the Handler.
func TestRejectHandlerAnswersRejects(t *testing.T) {
	h := &rejectTold{fakeHandler: fakeHandler{release: make(chan struct{})}}
	counted := &counts{}
	s := New(Config{Handler: h, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t), Count: counted.count})
	require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := s.tcp[0].ln.Addr().String()

	notimp := txtQuery("fast.", 1)
	notimp.Opcode = dns.OpcodeStatus
	formerr := txtQuery("fast.", 2)
	formerr.Question = append(formerr.Question, formerr.Question[0])
	badvers := txtQuery("fast.", 3)
	badvers.Opcode = dns.OpcodeStatus
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)
	for _, transport := range []string{UDP, TCP} {
		t.Run(transport, func(t *testing.T) {
			h.mu.Lock()
			h.told = nil
			h.mu.Unlock()
			nc, err := net.Dial(transport, addr)
			require.NoError(t, err)
			t.Cleanup(func() { nc.Close() })
			require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
			c := &dns.Conn{Conn: nc}
			for _, m := range []*dns.Msg{notimp, formerr, badvers} {
				require.NoError(t, c.WriteMsg(m))
				r, err := c.ReadMsg()
				require.NoError(t, err)
				assert.Equal(t, m.Id, r.Id)
				assert.Equal(t, dns.RcodeRefused, r.Rcode, "the RejectHandler's answer to %d", m.Id)
			}
			// The next answer is the next query's: the listener wrote none.
			require.NoError(t, c.WriteMsg(txtQuery("fast.", 4)))
			r, err := c.ReadMsg()
			require.NoError(t, err)
			assert.Equal(t, uint16(4), r.Id, "an answer the listener wrote to a rejected message")
			h.mu.Lock()
			defer h.mu.Unlock()
			assert.Equal(t, []toldReject{{transport, ResultNotimp, dns.RcodeNotImplemented}, {transport, ResultFormerr, dns.RcodeFormatError},
				{transport, ResultBadvers, dns.RcodeBadVers}}, h.told)
		})
	}
	assert.Empty(t, counted.all(), "counted by the listener")
}

// TestServerCountsShortMessagesDropped: on UDP and TCP, a message shorter
// than a DNS header (12 octets) is dropped unanswered and counted
// dropped (any answer to it could be used to amplify); one of a whole
// header whose question is missing gets FORMERR, counted formerr where it
// is answered, and not dropped as well.
func TestServerCountsShortMessagesDropped(t *testing.T) {
	counted := &counts{}
	s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t), Count: counted.count})
	require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := s.tcp[0].ln.Addr().String()
	header := txtQuery("fast.", 7)
	packed, err := header.Pack()
	require.NoError(t, err)
	header12 := packed[:12] // QDCOUNT 1, and no question
	for _, transport := range []string{UDP, TCP} {
		t.Run(transport, func(t *testing.T) {
			nc, err := net.Dial(transport, addr)
			require.NoError(t, err)
			t.Cleanup(func() { nc.Close() })
			require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
			c := &dns.Conn{Conn: nc}
			for _, m := range [][]byte{{0, 7, 0, 0}, packed[:11], header12} {
				_, err := c.Write(m) // framed on TCP
				require.NoError(t, err)
			}
			r, err := c.ReadMsg()
			require.NoError(t, err)
			assert.Equal(t, uint16(7), r.Id, "the first answer is the whole header's")
			assert.Equal(t, dns.RcodeFormatError, r.Rcode)
			require.Eventually(t, func() bool {
				return counted.get(transport, ResultDropped) == 2 && counted.get(transport, ResultFormerr) == 1
			}, 5*time.Second, 5*time.Millisecond, "the two short messages dropped, the header FORMERR")
		})
	}
	assert.Equal(t, map[string]int{"udp/dropped": 2, "udp/formerr": 1, "tcp/dropped": 2, "tcp/formerr": 1}, counted.all())
}

// TestServerFuncsLeftNil: the Config funcs a caller leaves nil do nothing
// (Config's doc) where a listener calls them: Count, for a response and a
// datagram shorter than a header that UDP drops; Closed, for a DNS over
// QUIC client that grants no credit for its answers while asking more;
// Resumed, for a DNS over QUIC listener opened again after its socket
// was closed under it. Called nil, each would panic the process.
func TestServerFuncsLeftNil(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	core, logs := observer.New(zapcore.InfoLevel)
	s := New(Config{Handler: &slowBigAnswers{}, Log: zap.New(core), Rules: func() Rules {
		return serverRules{serverLimits(func(l *Limits) { l.TCPPipeline = 64 })}
	}})
	s.reopenFirst = time.Nanosecond
	require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
	require.NoError(t, s.StartEncrypted(Encrypted{QUIC: []string{"127.0.191.1:0"}, Cert: store}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	doq := s.Endpoints()[0].Addr.String()

	t.Run("Count", func(t *testing.T) {
		nc, err := net.Dial("udp", s.tcp[0].ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { nc.Close() })
		require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
		c := &dns.Conn{Conn: nc, UDPSize: dns.MaxMsgSize} // slowBigAnswers' answers are not fitted
		resp := txtQuery("fast.", 1)
		resp.Response = true
		require.NoError(t, c.WriteMsg(resp))
		_, err = nc.Write([]byte{0, 2, 0, 0})
		require.NoError(t, err)
		require.NoError(t, c.WriteMsg(txtQuery("fast.", 3)))
		r, err := c.ReadMsg()
		require.NoError(t, err, "the query after the dropped datagrams answered")
		assert.Equal(t, uint16(3), r.Id)
	})
	t.Run("Closed", func(t *testing.T) {
		c := askDoQNotReading(t, ca, "127.0.191.2", doq)
		select {
		case <-c.Context().Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the connection not reading is still open")
		}
	})
	t.Run("Resumed", func(t *testing.T) {
		require.NoError(t, s.doq[0].socket().Close())
		require.Eventually(t, func() bool { return len(logs.FilterMessage("listener opened again").All()) == 1 },
			10*time.Second, 5*time.Millisecond)
		require.NoError(t, askDoQ(ca, doq), "answered at the same address")
	})
}

// TestServerUDPSocketsAndBuffers: Start opens one UDP socket a core at an
// address (GOMAXPROCS, two here and then one, which it reads and leaves as
// it was), all on its TCP listener's port; tells Config.Sockets of them
// once, with the buffers the kernel granted; logs the smallest granted
// beside what the limits asked; and warns of a buffer the kernel granted
// less of than asked (it caps SO_RCVBUF at twice net.core.rmem_max,
// SO_SNDBUF at twice wmem_max, without an error), naming the sysctl to
// raise, and only of that one. Linux grants twice what is asked below the
// cap, and the cap itself when asked for it.
func TestServerUDPSocketsAndBuffers(t *testing.T) {
	const small = 16 << 10
	sysctlInt := func(path string) int {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		require.NoError(t, err)
		return n
	}
	overRcv := 4 * sysctlInt("/proc/sys/net/core/rmem_max")
	overSnd := 4 * sysctlInt("/proc/sys/net/core/wmem_max")
	for _, tc := range []struct {
		name               string
		cores              int // GOMAXPROCS for the test; 0 for 2
		receive, send      int // the limits asked
		warnRcv, warnSnd   bool
		grantRcv, grantSnd int // the buffers granted, when known
	}{
		{name: "granted what was asked", receive: small, send: small, grantRcv: 2 * small, grantSnd: 2 * small},
		{name: "receive capped", receive: overRcv, send: small, warnRcv: true, grantRcv: overRcv / 2, grantSnd: 2 * small},
		{name: "send capped", receive: small, send: overSnd, warnSnd: true, grantRcv: 2 * small, grantSnd: overSnd / 2},
		{name: "receive granted at the cap, as asked", receive: overRcv / 2, send: small, grantRcv: overRcv / 2, grantSnd: 2 * small},
		{name: "send granted at the cap, as asked", receive: small, send: overSnd / 2, grantRcv: 2 * small, grantSnd: overSnd / 2},
		{name: "one core", cores: 1, receive: small, send: small, grantRcv: 2 * small, grantSnd: 2 * small},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cores := cmp.Or(tc.cores, 2)
			prev := runtime.GOMAXPROCS(cores)
			t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
			core, logs := observer.New(zapcore.InfoLevel)
			var told [][]UDPSocket
			limits := serverLimits(func(l *Limits) { l.UDPReceiveBuffer, l.UDPSendBuffer = tc.receive, tc.send })
			s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return serverRules{limits} }, Log: zap.New(core),
				Sockets: func(socks []UDPSocket) { told = append(told, socks) }})
			require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
			t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
			assert.Equal(t, cores, runtime.GOMAXPROCS(0), "GOMAXPROCS left as it was")

			require.Len(t, told, 1, "Config.Sockets told once")
			socks := told[0]
			require.Len(t, socks, cores, "one UDP socket a core")
			port := s.tcp[0].ln.Addr().(*net.TCPAddr).Port
			for _, so := range socks {
				assert.Equal(t, port, so.Conn.LocalAddr().(*net.UDPAddr).Port, "on the TCP listener's port")
				assert.Equal(t, tc.grantRcv, so.ReceiveBuffer)
				assert.Equal(t, tc.grantSnd, so.SendBuffer)
			}

			listening := logs.FilterMessage("listening").All()
			require.Len(t, listening, 1)
			assert.Equal(t, int64(cores), listening[0].ContextMap()["udp_sockets"])
			granted := logs.FilterMessage("UDP socket buffers").All()
			require.Len(t, granted, 1)
			assert.Equal(t, map[string]any{"receive_bytes": int64(tc.grantRcv), "send_bytes": int64(tc.grantSnd),
				"receive_asked": int64(tc.receive), "send_asked": int64(tc.send)}, granted[0].ContextMap())
			rcv := logs.FilterMessageSnippet("smaller UDP receive buffer").FilterMessageSnippet("net.core.rmem_max").All()
			snd := logs.FilterMessageSnippet("smaller UDP send buffer").FilterMessageSnippet("net.core.wmem_max").All()
			assert.Equal(t, tc.warnRcv, len(rcv) == 1, "receive buffer warning: %v", rcv)
			assert.Equal(t, tc.warnSnd, len(snd) == 1, "send buffer warning: %v", snd)
			assert.Len(t, logs.FilterLevelExact(zapcore.WarnLevel).All(), len(rcv)+len(snd), "no other warning")
		})
	}
}

// TestServerStartNoAddress: Start with no address opens nothing and
// succeeds, telling Config.Sockets of nothing, as a Server serving only
// the encrypted transports is started.
func TestServerStartNoAddress(t *testing.T) {
	told := 0
	s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t),
		Sockets: func([]UDPSocket) { told++ }})
	require.NoError(t, s.Start(nil))
	assert.Zero(t, told, "Config.Sockets told")
	assert.Empty(t, s.udp)
	assert.Empty(t, s.tcp)
	require.NoError(t, s.Shutdown(context.Background()))
}

// TestListenSharedOutOfDescriptors: listenShared that runs out of file
// descriptors (EMFILE) at the port probe, or at the group's second socket,
// returns that error at once, on port 0 too (only a port taken is
// picked again), and leaves none of the sockets it opened open. It lowers
// the process's descriptor limit, so it runs in a process (and a network
// namespace) of its own.
func TestListenSharedOutOfDescriptors(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	// fds are the numbers of the descriptors open.
	fds := func() []int {
		ents, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		var fds []int
		for _, e := range ents {
			n, err := strconv.Atoi(e.Name())
			require.NoError(t, err)
			fds = append(fds, n)
		}
		return fds // ReadDir's own among them, closed now
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the poller opened first
	require.NoError(t, err)
	ln.Close()
	// The kernel gives the lowest free number, and EMFILE from the limit
	// on: the numbers below the highest are filled, so that the next ones
	// open come after it.
	top := slices.Max(fds())
	for {
		fd, err := unix.Dup(0)
		require.NoError(t, err)
		if fd > top {
			unix.Close(fd)
			break
		}
		t.Cleanup(func() { unix.Close(fd) })
	}
	var lim unix.Rlimit
	require.NoError(t, unix.Getrlimit(unix.RLIMIT_NOFILE, &lim))
	t.Cleanup(func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim) })
	for _, tc := range []struct {
		name  string
		spare int // descriptors left: the TCP listener's, the probe's, the group's
	}{
		{name: "at the probe", spare: 1},
		{name: "at the group's second socket", spare: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(fds())
			low := lim
			low.Cur = uint64(top + 1 + tc.spare)
			require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &low))
			pcs, ln, err := listenShared("127.0.0.1:0", 2)
			require.NoError(t, unix.Setrlimit(unix.RLIMIT_NOFILE, &lim))
			require.ErrorIs(t, err, unix.EMFILE)
			assert.Nil(t, pcs)
			assert.Nil(t, ln)
			assert.Equal(t, before, len(fds()), "descriptors left open")
		})
	}
}

// TestStartAddressWithoutPort: Start fails for an address without a port,
// naming it, and opens nothing.
func TestStartAddressWithoutPort(t *testing.T) {
	s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
	err := s.Start([]string{"127.0.191.1"})
	var ae *net.AddrError
	require.ErrorAs(t, err, &ae)
	assert.ErrorContains(t, err, "listening on 127.0.191.1: ")
	assert.Equal(t, "missing port in address", ae.Err)
	assert.Empty(t, s.udp)
	assert.Empty(t, s.tcp)
}

// TestStartEncryptedFailureAnswersTCPInFlight: a StartEncrypted that fails
// closes the TCP listener Start opened as Shutdown does: the listener at
// once, and the connections once the queries they had read are answered;
// it returns only then, with every socket closed, and the answer in
// flight reaches its client.
func TestStartEncryptedFailureAnswersTCPInFlight(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{})}
	s := New(Config{Handler: h, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
	require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	addr := s.tcp[0].ln.Addr().String()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
	c := &dns.Conn{Conn: nc}
	require.NoError(t, c.WriteMsg(txtQuery("slow.", 5)))
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.transports) == 1
	}, 5*time.Second, 5*time.Millisecond, "the query read")

	failed := make(chan error, 1)
	go func() { failed <- s.StartEncrypted(Encrypted{TLS: []string{"127.0.191.1:0"}}) }()
	require.Eventually(t, func() bool {
		d, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			d.Close()
		}
		return err != nil
	}, 5*time.Second, 5*time.Millisecond, "the TCP listener closes")
	select {
	case err := <-failed:
		t.Fatalf("StartEncrypted returned with a TCP answer in flight: %v", err)
	default:
	}
	release()
	r, err := c.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(5), r.Id)
	select {
	case err := <-failed:
		require.ErrorIs(t, err, errNoCert)
	case <-time.After(10 * time.Second):
		t.Fatal("StartEncrypted did not return once the answer was written")
	}
	_, err = c.ReadMsg()
	assert.ErrorIs(t, err, io.EOF, "the connection closed")
}
