package listen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/net/ipv4"
)

// countingListener counts the writes on the connections it accepts.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// startTCP serves the fake handler over plain TCP on a counting listener.
func startTCP(t *testing.T, h *fakeHandler) (*countingListener, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := &countingListener{Listener: inner}
	serveTCP(t, ln, h, fakeRules{})
	return ln, inner.Addr().String()
}

// frames packs each query with its two-octet length (RFC 1035 §4.2.2).
func frames(t *testing.T, qs ...*dns.Msg) []byte {
	var b []byte
	for _, q := range qs {
		wire, err := q.Pack()
		require.NoError(t, err)
		b = binary.BigEndian.AppendUint16(b, uint16(len(wire)))
		b = append(b, wire...)
	}
	return b
}

func txtQuery(name string, id uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeTXT)
	m.Id = id
	return m
}

// TestTCPAnswersOneReadTogether: the answers to the queries a client sends
// in one segment, answered inline, leave in one write, all of them, in
// order; a query whose frame is not yet whole holds back none of the
// answers before it; an answer from a resume still goes out on its own.
func TestTCPAnswersOneReadTogether(t *testing.T) {
	h := &fakeHandler{release: make(chan struct{})}
	ln, addr := startTCP(t, h)
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	conn := &dns.Conn{Conn: c}

	const n = 20
	var qs []*dns.Msg
	for i := range n {
		qs = append(qs, txtQuery("fast.", uint16(100+i)))
	}
	_, err = c.Write(frames(t, qs...))
	require.NoError(t, err)
	for i := range n {
		r, err := conn.ReadMsg()
		require.NoError(t, err)
		assert.Equal(t, uint16(100+i), r.Id, "inline answers keep the queries' order")
		assert.Equal(t, "fast.", r.Question[0].Name)
	}
	assert.LessOrEqual(t, ln.writes.Load(), int64(2), "%d answers to one read in one write (two if the read was split)", n)

	// A whole query, then the first octet of the next: the first is
	// answered while the second is incomplete.
	next := frames(t, txtQuery("fast.", 2))
	_, err = c.Write(append(frames(t, txtQuery("fast.", 1)), next[0]))
	require.NoError(t, err)
	r, err := conn.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(1), r.Id)
	_, err = c.Write(next[1:])
	require.NoError(t, err)
	r, err = conn.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(2), r.Id)

	// A resume's answer, written while the read loop waits for input.
	before := ln.writes.Load()
	_, err = c.Write(frames(t, txtQuery("slow.", 3)))
	require.NoError(t, err)
	close(h.release)
	r, err = conn.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(3), r.Id)
	assert.Equal(t, before+1, ln.writes.Load())
}

// roomyRules allow every loopback peer, up to 1,000 connections each.
type roomyRules struct{}

func (roomyRules) Allowed(peer netip.Addr) bool { return peer.IsLoopback() }
func (roomyRules) Trusted(netip.Addr) bool      { return false }
func (roomyRules) Limits() Limits {
	return Limits{TCPConnections: 1000, TCPConnectionsPerClient: 1000, TCPPipeline: 4, TCPReadTimeout: 30 * time.Second,
		TCPIdleTimeout: 30 * time.Second, UDPReceiveBuffer: 1 << 16, UDPSendBuffer: 1 << 16}
}

// bigAnswers answers every query inline; "big." gets a TXT answer of about
// 30,000 octets. It counts the queries it is given.
type bigAnswers struct{ calls atomic.Int32 }

func (h *bigAnswers) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	h.calls.Add(1)
	m := new(dns.Msg)
	m.SetReply(req)
	if req.Question[0].Name == "big." {
		var txt []string
		for range 120 {
			txt = append(txt, strings.Repeat("x", 250))
		}
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "big.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: txt}}
	}
	_ = w.WriteMsg(m)
	return nil
}

// serveTCP serves h over plain TCP on ln, under rules, until the test
// ends.
func serveTCP(t *testing.T, ln net.Listener, h Handler, rules Rules) *tcpServer {
	t.Helper()
	s := New(Config{Handler: h, Rules: func() Rules { return rules }, Log: zaptest.NewLogger(t)})
	tcp := newTCPServer(ln, s.cfg, s.log, s.admission, rules.Limits().TCPConnections, s.counted(TCP), s.invalid(TCP), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tcp.serve()
	}()
	t.Cleanup(func() {
		tcp.stopAccepting()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tcp.drain(ctx.Done())
		<-done
	})
	return tcp
}

// readFrame reads one length-prefixed message from c.
func readFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	var l [2]byte
	_, err := io.ReadFull(c, l[:])
	require.NoError(t, err)
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err = io.ReadFull(c, b)
	require.NoError(t, err)
	return b
}

// heapInUse is the heap in use after the garbage is collected, in octets.
func heapInUse() int64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// TestTCPIdleConnectionKeepsLittle: a connection that once carried a
// 65,535-octet message and a 30,000-octet answer does not keep buffers of
// that size while it idles: a client holding many connections open cannot
// pin memory that way.
func TestTCPIdleConnectionKeepsLittle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serveTCP(t, ln, &bigAnswers{}, roomyRules{})
	const n = 200
	small := frames(t, txtQuery("fast.", 1))
	big := frames(t, txtQuery("big.", 2))
	huge := make([]byte, 2+65535) // a header of zeros and junk: FORMERR
	binary.BigEndian.PutUint16(huge, 65535)
	var conns []net.Conn
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		_, err = c.Write(small)
		require.NoError(t, err)
		readFrame(t, c)
		conns = append(conns, c)
	}
	base := heapInUse()
	for _, c := range conns {
		_, err := c.Write(huge)
		require.NoError(t, err)
		r := readFrame(t, c)
		require.Equal(t, byte(dns.RcodeFormatError), r[3]&0xF)
		_, err = c.Write(big)
		require.NoError(t, err)
		require.Greater(t, len(readFrame(t, c)), 29000)
	}
	per := (heapInUse() - base) / n
	assert.Less(t, per, int64(4<<10), "octets kept per idle connection after a 65,535-octet query and a 30,000-octet answer")
}

// failingListener's connections fail every write, closing the connection,
// as a write to a client that stopped reading does once it times out.
type failingListener struct{ net.Listener }

func (l failingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return failingConn{c}, nil
}

type failingConn struct{ net.Conn }

func (c failingConn) Write([]byte) (int, error) {
	c.Conn.Close()
	return 0, errors.New("write timed out")
}

// TestTCPStopsAfterWriteFailure: once an answer cannot be written, the
// connection is closed and the queries still in its read buffer are not
// handed to the handler (no rate-limit tokens, metrics, audit lines or
// upstream queries for a connection that is gone).
func TestTCPStopsAfterWriteFailure(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &bigAnswers{}
	tcp := serveTCP(t, failingListener{inner}, h, roomyRules{})
	c, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var qs []*dns.Msg
	for i := range 100 {
		qs = append(qs, txtQuery("big.", uint16(i))) // each answer past tcpOutMax: written at once
	}
	_, err = c.Write(frames(t, qs...))
	require.NoError(t, err)
	// The connection is served before it is waited for to end: an accept
	// not yet registered is no connection ended.
	require.Eventually(t, func() bool { return h.calls.Load() > 0 }, 10*time.Second, 5*time.Millisecond, "a query is answered")
	require.Eventually(t, func() bool {
		tcp.mu.Lock()
		defer tcp.mu.Unlock()
		return len(tcp.conns) == 0
	}, 10*time.Second, 5*time.Millisecond, "the connection ends")
	assert.LessOrEqual(t, h.calls.Load(), int32(2), "queries handled after the write failed")
}

// shortIdleRules are roomyRules with an idle timeout short enough to pass
// within a test.
type shortIdleRules struct{ roomyRules }

const shortIdle = 200 * time.Millisecond

func (shortIdleRules) Limits() Limits {
	l := roomyRules{}.Limits()
	l.TCPIdleTimeout = shortIdle
	return l
}

// TestTCPIdleTimeoutStartsAfterLastAnswer: a connection is idle only once
// every query read on it is answered (RFC 7766 §3, RFC 1035 §4.2.2), so a
// query sent while an earlier one waits on its upstream longer than the
// idle timeout is read and answered, and the connection closes idle
// timeout after the last answer, not after the last query.
func TestTCPIdleTimeoutStartsAfterLastAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &fakeHandler{release: make(chan struct{})}
	serveTCP(t, ln, h, shortIdleRules{})
	release := sync.OnceFunc(func() { close(h.release) })
	t.Cleanup(release) // before the server's: its drain waits for the slow query
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	conn := &dns.Conn{Conn: c}

	_, err = c.Write(frames(t, txtQuery("slow.", 1)))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.transports) == 1
	}, 5*time.Second, time.Millisecond, "the slow query is read")
	pace := time.NewTicker(shortIdle)
	defer pace.Stop()
	for range 3 {
		<-pace.C // the slow query outlasts the idle timeout
	}
	_, err = c.Write(frames(t, txtQuery("fast.", 2)))
	require.NoError(t, err, "the connection is not idle while a query waits")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	r, err := conn.ReadMsg()
	require.NoError(t, err, "a query sent while another waits is answered")
	assert.Equal(t, uint16(2), r.Id)
	release()
	r, err = conn.ReadMsg()
	require.NoError(t, err)
	assert.Equal(t, uint16(1), r.Id)

	// Idle now: closed after the idle timeout, with nothing more sent.
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the idle connection is closed")
}

// acceptErrListener fails its first fails Accepts with errno (EMFILE when
// unset, as a process out of file descriptors does), noting when each was
// asked, then accepts.
type acceptErrListener struct {
	net.Listener
	fails int
	errno syscall.Errno
	mu    sync.Mutex
	asked []time.Time
}

func (l *acceptErrListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.asked = append(l.asked, time.Now())
	n := len(l.asked)
	l.mu.Unlock()
	if n <= l.fails {
		errno := l.errno
		if errno == 0 {
			errno = syscall.EMFILE
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	return l.Listener.Accept()
}

// failedFor is the time from the first failed Accept to the last.
func (l *acceptErrListener) failedFor(t *testing.T) time.Duration {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Greater(t, len(l.asked), l.fails)
	return l.asked[l.fails-1].Sub(l.asked[0])
}

// TestTCPAcceptFailuresBackOff: while Accept keeps failing (out of file
// descriptors until connections close), the listener waits longer after
// each failure, 5 ms doubling to a second, rather than retrying (and
// logging a warning) every 10 ms; once Accept works again the client
// waiting in the backlog is served.
func TestTCPAcceptFailuresBackOff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	const fails = 8
	ln := &acceptErrListener{Listener: inner, fails: fails}
	serveTCP(t, ln, &fakeHandler{}, fakeRules{})

	c, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Write(frames(t, txtQuery("fast.", 1)))
	require.NoError(t, err)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(readFrame(t, c)))
	assert.Equal(t, uint16(1), r.Id, "served once Accept works")

	// Waits of 5, 10, 20, 40, 80, 160 and 320 ms between the failures.
	assert.GreaterOrEqual(t, ln.failedFor(t), 600*time.Millisecond,
		"%d failed Accepts are not retried every 10 ms", fails)
}

// TestDoHAcceptFailuresBackOff: a DNS over HTTPS listener whose Accept
// fails keeps accepting, waiting longer after each failure, and says so at
// warn level, as the TCP and DoT listeners do
// (TestTCPAcceptFailuresBackOff). net/http said it at debug level only
// ("http: Accept error: … too many open files; retrying in 5ms", through
// the server's ErrorLog), so a DoH listener out of file descriptors was
// silent in the log where TCP's warned; and it gave up for good on an
// error it does not count as temporary (ENOBUFS, ENOMEM, EPERM from
// accept(2)): Serve returned, the listener took no connection again while
// dnsfence ran on, /readyz 200 and DDR still designating it.
func TestDoHAcceptFailuresBackOff(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENOBUFS} {
		t.Run(errno.Error(), func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			const fails = 8
			ln := &acceptErrListener{Listener: inner, fails: fails, errno: errno}
			srv := NewDoHServer(DoHOptions{Handler: &fakeHandler{}, Trusted: trustNone, Log: zap.New(core)})
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			t.Cleanup(func() {
				_ = srv.Close()
				assert.NoError(t, <-served)
			})

			q := base64.RawURLEncoding.EncodeToString(mustPack(t, query("fast.")))
			c := &http.Client{Timeout: 5 * time.Second}
			resp, err := c.Get("http://" + inner.Addr().String() + DoHPath + "?dns=" + q)
			require.NoError(t, err, "served once Accept works")
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)

			warned := logs.FilterMessage("accepting a TCP connection").All()
			require.NotEmpty(t, warned, "the failures are logged at warn level")
			assert.Contains(t, warned[0].ContextMap()["error"], errno.Error())
			assert.Less(t, len(warned), fails+1, "one line a failure at most")
			// Waits of 5, 10, 20, 40, 80, 160 and 320 ms between the failures.
			assert.GreaterOrEqual(t, ln.failedFor(t), 600*time.Millisecond,
				"%d failed Accepts are not retried every 10 ms", fails)
		})
	}
}

// failingBatch fails with ENOMEM each read (counted from 1) that fails
// reports, noting when each read was asked, and reads the others from the
// socket.
type failingBatch struct {
	BatchConn
	fails func(n int) bool
	mu    sync.Mutex
	asked []time.Time
}

// firstFailing is a failingBatch's fails for its first n reads.
func firstFailing(n int) func(int) bool { return func(read int) bool { return read <= n } }

func (b *failingBatch) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	b.mu.Lock()
	b.asked = append(b.asked, time.Now())
	n := len(b.asked)
	b.mu.Unlock()
	if b.fails(n) {
		return 0, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvmmsg", syscall.ENOMEM)}
	}
	return b.BatchConn.ReadBatch(ms, flags)
}

// askedTimes is when each read was asked, so far.
func (b *failingBatch) askedTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.asked)
}

// TestUDPReadFailuresBackOff: a UDP socket whose read keeps failing (the
// kernel out of memory for it) is read again after a wait that grows, as
// a failing TCP or DoH Accept is (TestTCPAcceptFailuresBackOff,
// TestDoHAcceptFailuresBackOff), not at once: the loop read again straight
// away, so an error that lasts spun a core and wrote a warn line for each
// try, thousands a second. Once reading works the query waiting is
// answered, and a stop during a wait ends the loop at once.
func TestUDPReadFailuresBackOff(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	const fails = 8
	var fb *failingBatch
	c := serveUDPThrough(t, zap.New(core), func(b BatchConn) BatchConn {
		fb = &failingBatch{BatchConn: b, fails: firstFailing(fails)}
		return fb
	})
	_, err := c.Write(packedQuery(t))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 512))
	require.NoError(t, err, "answered once reading works")

	asked := fb.askedTimes()
	require.Greater(t, len(asked), fails)
	// Waits of 5, 10, 20, 40, 80, 160 and 320 ms between the failures.
	assert.GreaterOrEqual(t, asked[fails-1].Sub(asked[0]), 600*time.Millisecond,
		"%d failed reads are not retried at once", fails)
	assert.Len(t, logs.FilterMessage("reading UDP").All(), fails, "one warn line a failure")

	// A stop while the loop waits out a failure ends it then.
	pc2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	s2 := newUDPServer(pc2, false, echoWire{}, func(string, string) {}, zap.NewNop(), AcceptQuery, func([]byte, error) {})
	fb2 := &failingBatch{BatchConn: s2.batch, fails: firstFailing(1000)}
	s2.batch = fb2
	go s2.serve()
	require.Eventually(t, func() bool { return len(fb2.askedTimes()) >= 8 }, 5*time.Second, 5*time.Millisecond)
	stopped := time.Now()
	s2.stopReading()
	select {
	case <-s2.done:
		assert.Less(t, time.Since(stopped), 500*time.Millisecond, "the wait ends at the stop")
	case <-time.After(5 * time.Second):
		t.Fatal("the read loop did not end at the stop")
	}
	s2.drain(nil)
}

// slowBigAnswers answers every query from a resume (as a cache miss is)
// with a TXT answer of about 60,000 octets, and keeps what each answer's
// write returned.
type slowBigAnswers struct {
	mu   sync.Mutex
	errs []error
}

func (h *slowBigAnswers) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	return func() {
		m := new(dns.Msg)
		m.SetReply(req)
		var txt []string
		for range 240 {
			txt = append(txt, strings.Repeat("x", 250))
		}
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: txt}}
		err := w.WriteMsg(m)
		h.mu.Lock()
		h.errs = append(h.errs, err)
		h.mu.Unlock()
	}
}

// pipelineRules are roomyRules with limits.tcp_pipeline at its default.
type pipelineRules struct{ roomyRules }

func (pipelineRules) Limits() Limits {
	l := roomyRules{}.Limits()
	l.TCPPipeline = 64
	return l
}

// TestTCPClientNotReadingIsClosed: a client that pipelines queries with
// large answers and reads none of them has its connection closed once
// unreadMax of answers wait to be written, counted as not_reading; the
// answers are not held for the write timeout (10 s), up to
// limits.tcp_pipeline of 64 KiB each, which let 32 such connections of
// one client hold 128 MiB (the sidecar deployment's whole memory limit).
func TestTCPClientNotReadingIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &slowBigAnswers{}
	rules := pipelineRules{}
	s := New(Config{Handler: h, Rules: func() Rules { return rules }, Log: zaptest.NewLogger(t)})
	closed := &closedLog{}
	s.cfg.Closed = closed.add
	tcp := newTCPServer(ln, s.cfg, s.log, s.admission, rules.Limits().TCPConnections, s.counted(TCP), s.invalid(TCP), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tcp.serve()
	}()
	t.Cleanup(func() {
		tcp.stopAccepting()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tcp.drain(ctx.Done())
		<-done
	})

	// A small receive buffer: the server's writes block after a few
	// tens of kilobytes rather than megabytes.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var qs []*dns.Msg
	for i := range 64 {
		qs = append(qs, txtQuery("big.", uint16(i)))
	}
	_, err = c.Write(frames(t, qs...))
	require.NoError(t, err)

	// Closed for not reading first: the server may not have registered
	// the connection yet, and an unregistered one is not one ended.
	closed.wait(t, 20*time.Second)
	require.Eventually(t, func() bool {
		tcp.mu.Lock()
		defer tcp.mu.Unlock()
		return len(tcp.conns) == 0
	}, 20*time.Second, 5*time.Millisecond, "the connection ends")
	h.mu.Lock()
	notReading := 0
	for _, err := range h.errs {
		if errors.Is(err, errNotReading) {
			notReading++
		}
	}
	h.mu.Unlock()
	assert.Positive(t, notReading, "answers past unreadMax dropped at once, not held for the write timeout")
	assert.Equal(t, []string{TCP + " " + ClosedNotReading}, closed.all(), "counted once")
}

// cutListener's connections run every write deadline 50 times faster
// (tcpWriteTimeout's 10 s is 200 ms) and count the writes that reach the
// open socket after a write failed: once a TLS record is cut part way,
// nothing more may go on the stream.
type cutListener struct {
	net.Listener
	afterCut atomic.Int64
}

func (l *cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: c, afterCut: &l.afterCut}, nil
}

type cutConn struct {
	net.Conn
	afterCut *atomic.Int64
	cut      atomic.Bool // a write failed
	closed   atomic.Bool
}

func (c *cutConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		t = time.Now().Add(time.Until(t) / 50)
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *cutConn) Write(b []byte) (int, error) {
	if c.cut.Load() && !c.closed.Load() {
		c.afterCut.Add(1)
	}
	n, err := c.Conn.Write(b)
	if err != nil {
		c.cut.Store(true)
	}
	return n, err
}

func (c *cutConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// TestDoTWriteTimeoutClosesBeneathTLS: a DNS over TLS answer whose write
// times out (a client that reads nothing) leaves a TLS record cut part
// way, so the socket beneath TLS is closed at once: crypto/tls's Close
// would first append close_notify to the cut record, garbage to the
// client, after waiting up to 5 s for room in a send buffer the client
// does not empty, holding the connection, its slot and its writeMu (the
// mistake the upstream DoT transport's 3f45b5e fixed on its side).
func TestDoTWriteTimeoutClosesBeneathTLS(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	inner, err := net.Listen("tcp", "127.0.29.1:0")
	require.NoError(t, err)
	ln := &cutListener{Listener: inner}
	rules := roomyRules{}
	s := New(Config{Handler: &slowBigAnswers{}, Rules: func() Rules { return rules }, Log: zaptest.NewLogger(t)})
	closed := &closedLog{}
	s.cfg.Closed = closed.add
	dot := newTCPServer(ln, s.cfg, s.log, s.admission, rules.Limits().TCPConnections, s.counted(TLS), s.invalid(TLS),
		ServerTLSConfig(store, ALPNDoT))
	done := make(chan struct{})
	go func() {
		defer close(done)
		dot.serve()
	}()
	t.Cleanup(func() {
		dot.stopAccepting()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dot.drain(ctx.Done())
		<-done
	})

	// A small receive buffer, never read: an answer's write blocks.
	d := &tls.Dialer{NetDialer: &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}, Config: clientTLS(ca, ALPNDoT)}
	c, err := d.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var qs []*dns.Msg
	for i := range 64 { // 4 MB of answers, at most tcp_pipeline (4) waiting: under unreadMax
		qs = append(qs, txtQuery("big.", uint16(i)))
	}
	_, err = c.Write(frames(t, qs...))
	require.NoError(t, err)

	// Closed first: the server may not have registered the connection
	// yet, and an unregistered one is not one ended.
	closed.wait(t, 10*time.Second)
	require.Eventually(t, func() bool {
		dot.mu.Lock()
		defer dot.mu.Unlock()
		return len(dot.conns) == 0
	}, 10*time.Second, 5*time.Millisecond, "the connection ends")
	assert.Zero(t, ln.afterCut.Load(), "writes on the socket after the answer's write was cut")
	assert.Equal(t, []string{TLS + " " + ClosedNotReading}, closed.all(), "counted once")
}

// closedLog records the connections a listener closed for their client
// (Config.Closed, and the DoH and DoQ servers' Closed), "transport reason"
// or the reason alone.
type closedLog struct {
	mu      sync.Mutex
	reasons []string
}

func (l *closedLog) add(transport, reason string) { l.addReason(transport + " " + reason) }

func (l *closedLog) addReason(reason string) {
	l.mu.Lock()
	l.reasons = append(l.reasons, reason)
	l.mu.Unlock()
}

func (l *closedLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reasons)
}

// wait waits up to limit for a connection to be closed for its client.
func (l *closedLog) wait(t *testing.T, limit time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return len(l.all()) > 0 }, limit, 5*time.Millisecond,
		"the connection is closed for the answers left unread")
}

// TestUnreadTake: unread takes answers up to unreadMax octets waiting,
// exactly that many included; past it the answer is not counted and
// notReading runs, once however many are refused; octets given back
// (done) make room again.
func TestUnreadTake(t *testing.T) {
	var u unread
	calls := 0
	notReading := func() { calls++ }
	require.True(t, u.take(unreadMax-1, notReading))
	require.True(t, u.take(1, notReading), "unreadMax octets waiting")
	assert.False(t, u.take(1, notReading))
	assert.Equal(t, 1, calls, "notReading runs at the first refusal")
	assert.False(t, u.take(1, notReading))
	assert.Equal(t, 1, calls, "notReading runs once")
	u.done(unreadMax - 1)
	u.done(1)
	assert.True(t, u.take(unreadMax, notReading), "the refused octets were not counted, the ones done given back")
	assert.Equal(t, 1, calls)
}

// TestWriteFrameBound: a TCP or DoT answer of 65,535 octets, the most
// the two-octet length can give (RFC 7766 §8, RFC 1035 §4.2.2), goes out
// whole with its length; one octet more is refused with an error and
// nothing written, rather than sent under a length wrapped to 0.
func TestWriteFrameBound(t *testing.T) {
	client, server := tcpPair(t, "127.0.163.30")
	c := &tcpConn{Conn: server}
	defer c.Close()

	assert.Error(t, c.writeFrame(make([]byte, dns.MaxMsgSize+1)))
	longest := bytes.Repeat([]byte{7}, dns.MaxMsgSize)
	require.NoError(t, c.writeFrame(longest))
	require.NoError(t, client.SetReadDeadline(time.Now().Add(5*time.Second)))
	got := make([]byte, 2+dns.MaxMsgSize)
	_, err := io.ReadFull(client, got)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xff, 0xff}, got[:2], "the length of the one frame written")
	assert.Equal(t, longest, got[2:])
}

// TestTCPAnswersOverAMebibyteOnOneConnection: a TCP client that reads
// its answers gets more than unreadMax octets of them on one connection:
// each answer's octets are given back once written.
func TestTCPAnswersOverAMebibyteOnOneConnection(t *testing.T) {
	big := bigOctets()
	_, addr := startServerAt(t, "127.0.163.31:0", Config{Handler: big, Rules: func() Rules {
		return limitRules{Limits{TCPConnections: 4, TCPConnectionsPerClient: 4, TCPPipeline: 4,
			TCPReadTimeout: 5 * time.Second, TCPIdleTimeout: 5 * time.Second}}
	}})
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	co := &dns.Conn{Conn: c}
	total := 0
	for total <= 2*unreadMax {
		q := new(dns.Msg)
		q.SetQuestion("big.example.org.", dns.TypeTXT)
		require.NoError(t, co.WriteMsg(q))
		r, err := co.ReadMsg()
		require.NoError(t, err, "after %d octets of answers", total)
		total += r.Len()
	}
}

// TestTCPMessageCutShortUnanswered: a connection that ends inside a
// message, fewer octets come than its length gives, gets no answer for
// it: the octets that came are no message (RFC 7766 §8).
func TestTCPMessageCutShortUnanswered(t *testing.T) {
	h := remoteRecorder{remotes: make(chan net.Addr, 1)}
	c := dialServedTCP(t, "127.0.163.42", h)
	frame := frames(t, txtQuery("fast.", 1))
	_, err := c.Write(frame[:len(frame)-5])
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err, "the server closes its side")
	assert.Empty(t, got, "no answer")
	select {
	case a := <-h.remotes:
		t.Fatalf("the Handler was asked for %v", a)
	default:
	}
}

// TestTCPKeepaliveTimeoutFormerr: a query over TCP whose
// edns-tcp-keepalive option carries a TIMEOUT is answered FORMERR by the
// listener, the Handler not asked (RFC 7828 §3.2.1); one with the option
// empty, as a client sends it, is the Handler's.
func TestTCPKeepaliveTimeoutFormerr(t *testing.T) {
	h := remoteRecorder{remotes: make(chan net.Addr, 2)}
	c := dialServedTCP(t, "127.0.163.43", h)
	for _, tc := range []struct {
		timeout uint16
		rcode   int
	}{{timeout: 100, rcode: dns.RcodeFormatError}, {timeout: 0, rcode: dns.RcodeSuccess}} {
		q := query("keepalive.example.org")
		q.Id = 7 + tc.timeout
		q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE, Timeout: tc.timeout})
		_, err := c.Write(frames(t, q))
		require.NoError(t, err)
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(readFrame(t, c)))
		assert.Equal(t, q.Id, r.Id)
		assert.Equal(t, tc.rcode, r.Rcode, "TIMEOUT %d", tc.timeout)
	}
	assert.Len(t, h.remotes, 1, "only the query without a TIMEOUT reached the Handler")
}

// tcpPair is a connected pair of TCP connections on the loopback address
// ip, closed when the test ends: client's and the server's accepted one.
func tcpPair(t *testing.T, ip string) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { server.Close() })
	return client, server
}

// bigOctets answers every query, as octets, with one TXT record of 200
// strings of 255 octets: answers of about 51 KB, twenty-one of which pass
// unreadMax (1 MiB).
func bigOctets() octetsHandler {
	return octetsHandler{reply: func(req *dns.Msg) []byte {
		m := new(dns.Msg)
		m.SetReply(req)
		txt := &dns.TXT{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}}
		for range 200 {
			txt.Txt = append(txt.Txt, strings.Repeat("x", 255))
		}
		m.Answer = append(m.Answer, txt)
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		return b
	}}
}

// dialServedTCP serves h over plain TCP on the loopback address ip (one
// connection a client, 10 s timeouts) and returns a connection to it,
// closed when the test ends.
func dialServedTCP(t *testing.T, ip string, h Handler) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	require.NoError(t, err)
	serveTCP(t, ln, h, limitRules{Limits{TCPConnections: 8, TCPConnectionsPerClient: 1, TCPPipeline: 4,
		TCPReadTimeout: 10 * time.Second, TCPIdleTimeout: 10 * time.Second}})
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestUDPReadWaitsStartOverAfterARead: a read that works ends a run of
// failed ones, and the wait after the next failure starts again from 5
// ms, not from the last run's longest (up to acceptRetryMax, a second),
// which would hold every query that arrives meanwhile.
func TestUDPReadWaitsStartOverAfterARead(t *testing.T) {
	// Reads 1 to 8 fail (waits of 5 ms to 640 ms), 9 takes the first
	// query, 10 fails, 11 takes the second.
	const first, again = 8, 10
	var fb *failingBatch
	c := serveUDPThrough(t, zap.NewNop(), func(b BatchConn) BatchConn {
		fb = &failingBatch{BatchConn: b, fails: func(n int) bool { return n <= first || n == again }}
		return fb
	})
	for range 2 {
		_, err := c.Write(packedQuery(t))
		require.NoError(t, err)
		_, err = c.Read(make([]byte, 512))
		require.NoError(t, err)
	}
	asked := fb.askedTimes()
	require.Greater(t, len(asked), again)
	assert.Less(t, asked[again].Sub(asked[again-1]), 500*time.Millisecond,
		"the wait after a failure that follows a read")
}

// serveUDPThrough serves echoWire on a UDP socket of 127.0.0.1 whose
// batch reads and writes go through wrap (given the server's own), logging
// to log, until the test ends; it returns a client connected to it, with
// a deadline 10 s away.
func serveUDPThrough(t *testing.T, log *zap.Logger, wrap func(BatchConn) BatchConn) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	s := newUDPServer(pc, false, echoWire{}, func(string, string) {}, log, AcceptQuery, func([]byte, error) {})
	s.batch = wrap(s.batch)
	go s.serve()
	t.Cleanup(func() {
		s.stopReading()
		s.drain(nil)
	})
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c
}
