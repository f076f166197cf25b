package listen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/net/ipv4"
)

// countingWire is echoWire that counts the queries it is given.
type countingWire struct {
	echoWire
	served *atomic.Int64
}

func (c countingWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	c.served.Add(1)
	return c.echoWire.ServeWire(w, b)
}

// ServeInline answers a TCP query, counted, with an empty reply.
func (c countingWire) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	c.served.Add(1)
	_ = w.WriteMsg(new(dns.Msg).SetReply(req))
	return nil
}

// TestUDPNothingReadAfterStopReading: a datagram sent once stopReading has
// returned is not answered. The read loop woken by the past deadline used
// to take a datagram that arrived before it ran again: in about one stop
// in forty here, the loop answered one more query (what SIGTERM's
// end-to-end test saw as a flake). The race needs the datagram to win, so
// the test stops a thousand loops.
func TestUDPNothingReadAfterStopReading(t *testing.T) {
	q := packedQuery(t)
	var served atomic.Int64
	h := countingWire{served: &served}
	for i := range 1000 {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		s := newUDPServer(pc, false, h, func(string, string) {}, zap.NewNop(), AcceptQuery, func([]byte, error) {})
		go s.serve()
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		if i%2 == 0 { // a loop that has read before, and one that has not
			_, err = c.Write(q)
			require.NoError(t, err)
			_, err = c.Read(make([]byte, 512))
			require.NoError(t, err)
		}
		before := served.Load()
		s.stopReading()
		_, err = c.Write(q)
		require.NoError(t, err)
		select {
		case <-s.done: // the loop has ended: whatever it read, it served before
		case <-time.After(10 * time.Second):
			t.Fatalf("stop %d: the read loop did not end", i)
		}
		require.Equal(t, before, served.Load(), "stop %d: a query sent after stopReading was taken", i)
		s.drain(nil)
		c.Close()
	}
}

// TestTCPNothingReadAfterStopAccepting is the same for an open TCP
// connection: a query written on it once stopAccepting has returned is not
// answered (takenBefore), where the connection's goroutine, woken by the
// past deadline, could read it.
func TestTCPNothingReadAfterStopAccepting(t *testing.T) {
	q := packedQuery(t)
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(q)))
	frame = append(frame, q...)
	var served atomic.Int64
	for i := range 300 {
		var addr string
		s := New(Config{
			Handler: countingWire{served: &served},
			Count:   func(string, string) {},
			Rules:   func() Rules { return fakeRules{} },
			Sockets: func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() },
			Log:     zap.NewNop(),
		})
		require.NoError(t, s.Start([]string{"127.0.0.1:0"}))
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Minute)))
		_, err = c.Write(frame) // one answered: the connection's loop waits in its read
		require.NoError(t, err)
		var length [2]byte
		_, err = io.ReadFull(c, length[:])
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, binary.BigEndian.Uint16(length[:])))
		require.NoError(t, err)
		before := served.Load()
		s.stopTaking()
		_, err = c.Write(frame)
		require.NoError(t, err)
		closeAfterServer(c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, s.Shutdown(ctx)) // the connection's loop has ended
		cancel()
		require.Equal(t, before, served.Load(), "stop %d: a query written after stopAccepting was taken", i)
		c.Close()
	}
}

// TestServerStopTakingEveryTransport: once stopTaking has returned (what
// SIGTERM's "stopped taking queries" line follows), a query asked on a
// connection opened and used before it is not answered, on any transport:
// DoT reads no further query, DoQ refuses the stream, DoH (HTTP/2 and
// plain HTTP/1.1) answers 503; none reaches the Handler. DoH used to go on
// answering until its Shutdown ran, after the line was logged, and an
// HTTP/2 stream opened before the GOAWAY is answered even then.
func TestServerStopTakingEveryTransport(t *testing.T) {
	e := newEncryptedSetup(t)
	dot, err := e.dialTLS(t, "127.0.0.1", nil)
	require.NoError(t, err)
	doq, err := (&doqSetup{ca: e.ca, addr: e.addrs[QUIC]}).dial(t)
	require.NoError(t, err)
	h2 := (&dohSetup{ca: e.ca}).client(false)
	h1 := &http.Client{Timeout: 5 * time.Second}
	dohURL := map[string]string{"h2": "https://" + e.addrs[HTTPS] + DoHPath, "h1": "http://" + e.addrs["http"] + DoHPath}
	dohClient := map[string]*http.Client{"h2": h2, "h1": h1}
	ask := map[string]func(name string) (*dns.Msg, error){
		TLS: func(name string) (*dns.Msg, error) {
			_ = dot.SetDeadline(time.Now().Add(2 * time.Second))
			return streamExchange(dot, query(name))
		},
		QUIC: func(name string) (*dns.Msg, error) { return doqExchange(doq, query(name)) },
	}
	for _, v := range []string{"h2", "h1"} {
		ask[v] = func(name string) (*dns.Msg, error) {
			resp, err := dohClient[v].Post(dohURL[v], DoHContentType, bytes.NewReader(mustPack(t, query(name))))
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				if v == "h1" {
					assert.True(t, resp.Close, "HTTP/1.1: the connection is closed after the refusal")
				}
				return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
			}
			if v == "h2" {
				assert.Equal(t, 2, resp.ProtoMajor)
			}
			m := new(dns.Msg)
			return m, m.Unpack(body)
		}
	}
	for tr, f := range ask {
		r, err := f("before-" + tr + ".blocked.test")
		require.NoError(t, err, tr)
		require.Equal(t, dns.RcodeNameError, r.Rcode, tr)
	}

	e.srv.stopTaking()
	for tr, f := range ask {
		r, err := f("after-" + tr + ".blocked.test")
		assert.Error(t, err, "%s: a query asked after stopTaking was answered: %v", tr, r)
		if strings.HasPrefix(tr, "h") {
			assert.ErrorContains(t, err, "503 Service Unavailable", tr)
		}
		_, seen := e.handler.seenFor("after-" + tr + ".blocked.test")
		assert.False(t, seen, "%s: the Handler was given a query asked after stopTaking", tr)
	}
	assert.Equal(t, 2, e.counts.get(HTTPS, ResultDropped), "each DoH refusal counted as dropped")
}

// TestDoHBodyAfterStopTaking: a POST whose headers came before stopTaking
// and whose body (the query) comes after is not answered: 503, as a TCP
// query half read at the stop is not taken.
func TestDoHBodyAfterStopTaking(t *testing.T) {
	e := newEncryptedSetup(t)
	c, err := net.DialTimeout("tcp", e.addrs["http"], 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	body := mustPack(t, query("late-body.blocked.test"))
	_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: dnsfence\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		DoHPath, DoHContentType, len(body))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // the handler waits for the body (if not, the stop refuses it sooner)
	e.srv.stopTaking()
	_, err = c.Write(body)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.True(t, resp.Close)
	_, seen := e.handler.seenFor("late-body.blocked.test")
	assert.False(t, seen, "the Handler was given the query")
}

// TestStopAnswersReachPipeliningClient: a client that pipelines a query
// after the stop, on a connection with one in flight, gets the answer to
// the one in flight and then the server's orderly close, on TCP and DoT.
// The connection used to be closed with the late query unread, which
// makes the kernel reset it (RFC 1122 §4.2.2.13): the answers still in
// the server's send queue, not yet reached a distant client, are thrown
// away, and some clients' systems drop those received but not read. Now
// it is closed as net/http closes one: the answers, a FIN (DoT:
// close_notify first), what the client sends meanwhile read and dropped,
// then the close.
func TestStopAnswersReachPipeliningClient(t *testing.T) {
	e := newEncryptedSetup(t)
	conns := map[string]net.Conn{}
	c, err := net.DialTimeout("tcp", e.addrs[UDP], 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	conns[TCP] = c
	rawTLS, err := net.DialTimeout("tcp", e.addrs[TLS], 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { rawTLS.Close() })
	seen := &eofSeen{Conn: rawTLS}
	tc := tls.Client(seen, clientTLS(e.ca, ALPNDoT))
	require.NoError(t, tc.SetDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, tc.Handshake())
	conns[TLS] = tc
	write := func(tr, name string) {
		_, err := conns[tr].Write(frames(t, query(name)))
		require.NoError(t, err, tr)
	}
	for tr, c := range conns {
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		write(tr, tr+".slow.test")
	}
	require.Eventually(t, func() bool { return e.up.waiting.Load() == 2 }, 5*time.Second, 5*time.Millisecond)
	e.srv.stopTaking()
	for tr := range conns {
		write(tr, "late-"+tr+".blocked.test")
	}
	time.Sleep(50 * time.Millisecond) // the late queries are in the server's kernel
	e.up.releaseSlow()
	time.Sleep(300 * time.Millisecond) // the connections are closed: a reset would be here
	for tr, c := range conns {
		var n uint16
		require.NoError(t, binary.Read(c, binary.BigEndian, &n), "%s: the answer in flight is read", tr)
		buf := make([]byte, n)
		_, err := io.ReadFull(c, buf)
		require.NoError(t, err, tr)
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(buf), tr)
		assert.Equal(t, tr+".slow.test.", r.Question[0].Name)
		_, err = c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, io.EOF, "%s: then the server's orderly close, nothing more", tr)
		if tr == TLS {
			// crypto/tls reads a FIN between records as io.EOF too: the
			// socket beneath must not have ended before close_notify.
			assert.False(t, seen.eof.Load(), "DoT: close_notify before the FIN")
			_, err = rawTLS.Read(make([]byte, 1))
			assert.ErrorIs(t, err, io.EOF, "DoT: the FIN after close_notify, not a reset")
		}
	}
}

// eofSeen is a connection that remembers whether a read met its end.
type eofSeen struct {
	net.Conn
	eof atomic.Bool
}

func (c *eofSeen) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if errors.Is(err, io.EOF) {
		c.eof.Store(true)
	}
	return n, err
}

// TestDoTNothingReadAfterStopAccepting is TestTCPNothingReadAfterStopAccepting
// on DNS over TLS, straight from the client and through a trusted proxy's
// PROXY v2 header: takenBefore sits above crypto/tls and the PROXY
// reader, so a record decrypted after the stop brings no query in.
func TestDoTNothingReadAfterStopAccepting(t *testing.T) {
	stops := 60
	if testing.Short() {
		stops = 10
	}
	for i := range stops {
		// A subtest each, so that each setup (its certificate store's
		// inotify instance among them) is released before the next.
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			e := newEncryptedSetup(t)
			var header *proxyproto.Header
			from := "127.0.0.1"
			if i%2 == 1 {
				from = "127.0.0.3" // proxyRules trust it
				header = &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
					SourceAddr:      &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000},
					DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 853}}
			}
			c, err := e.dialTLS(t, from, header)
			require.NoError(t, err)
			r, err := streamExchange(c, query("before.blocked.test")) // the connection's loop waits in its read
			require.NoError(t, err)
			require.Equal(t, dns.RcodeNameError, r.Rcode)
			e.srv.stopTaking()
			late := fmt.Sprintf("after-%d.blocked.test", i)
			_, err = c.Write(frames(t, query(late)))
			require.NoError(t, err)
			closeAfterServer(c)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			require.NoError(t, e.srv.Shutdown(ctx))
			cancel()
			_, seen := e.handler.seenFor(late)
			require.False(t, seen, "stop %d (from %s): a query written after stopAccepting was taken", i, from)
		})
	}
}

// gatedWire answers every query on a worker once release is closed.
type gatedWire struct {
	echoWire
	started chan struct{}
	release chan struct{}
}

func (g gatedWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	b[2] |= 0x80 // QR
	answer := append([]byte(nil), b...)
	return func() {
		g.started <- struct{}{}
		<-g.release
		_, _ = w.Write(answer)
	}, true
}

// TestUDPDrainCutShortEndsWriter: a drain whose deadline ends with a query
// still being answered closes the socket at once, and the goroutine that
// writes resumed answers ends once that query is given up, instead of
// waiting for more answers forever.
func TestUDPDrainCutShortEndsWriter(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	h := gatedWire{started: make(chan struct{}, 1), release: make(chan struct{})}
	s := newUDPServer(pc, false, h, func(string, string) {}, zap.NewNop(), AcceptQuery, func([]byte, error) {})
	go s.serve()
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(packedQuery(t))
	require.NoError(t, err)
	select {
	case <-h.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the query was not resumed")
	}
	s.stopReading()
	done := make(chan struct{})
	close(done)
	s.drain(done) // cut short: the query is still in progress
	close(h.release)
	select {
	case <-s.outDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer of resumed answers did not end")
	}
}

// TestCloseGentlyLingersThroughALateDeadline: stopAccepting sets its past
// read deadline on every connection as it reaches it, possibly after that
// connection's closeGently has begun to linger: the linger still lasts
// stopLinger, and the client then reads the FIN, no reset, even with a
// query sent during the linger.
func TestCloseGentlyLingersThroughALateDeadline(t *testing.T) {
	client, server := tcpPair(t, "127.0.0.1")
	c := &tcpConn{Conn: server}
	start := time.Now()
	lingered := make(chan time.Duration, 1)
	go func() {
		c.closeGently()
		lingered <- time.Since(start)
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, c.SetReadDeadline(time.Now())) // stopAccepting, late
	_, err := client.Write(packedQuery(t))            // a query pipelined after the stop
	require.NoError(t, err)
	d := <-lingered
	assert.GreaterOrEqual(t, d, stopLinger, "the linger was cut short")
	require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = client.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the FIN, not a reset")
}

// TestDoQQueryEndAfterStopTaking: a DoQ query whose stream began before
// stopTaking and whose end (the rest of the query and STREAM FIN) came
// after is not answered, as a TCP query half read at the stop is not.
func TestDoQQueryEndAfterStopTaking(t *testing.T) {
	e := newEncryptedSetup(t)
	_, st, rest := halfDoQQuery(t, e, "late-end.blocked.test")
	e.srv.stopTaking()
	// The stop ends the stream's read at once (TestDoQHalfQueryAtStop), so
	// the server's STOP_SENDING may reach the client before these: a write
	// or close of a canceled stream fails then, which is the same outcome.
	if _, err := st.Write(rest); err != nil {
		t.Logf("write after the stop: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Logf("close after the stop: %v", err)
	}
	out, err := io.ReadAll(st)
	assert.Error(t, err, "the stream is reset, not answered: %x", out)
	var se *quic.StreamError
	if assert.ErrorAs(t, err, &se) {
		assert.Equal(t, quic.StreamErrorCode(DoQNoError), se.ErrorCode)
	}
	_, seen := e.handler.seenFor("late-end.blocked.test")
	assert.False(t, seen, "the Handler was given the query")
	assert.Equal(t, 1, e.counts.get(QUIC, ResultDropped), "taken before the stop, dropped after it")
}

// TestDoQHalfQueryAtStop: a DoQ stream with half a query when stopTaking
// comes, and nothing more after, is ended at once (dropped, DOQ_NO_ERROR):
// it does not hold Shutdown until its read timeout, which then closed the
// whole connection as a protocol error.
func TestDoQHalfQueryAtStop(t *testing.T) {
	e := newEncryptedSetup(t)
	conn, st, _ := halfDoQQuery(t, e, "half.blocked.test")
	e.srv.stopTaking()
	// Well within the server's read timeout (proxyRules: 2 s), which
	// would end the read anyway.
	require.NoError(t, st.SetReadDeadline(time.Now().Add(time.Second)))
	_, err := io.ReadAll(st)
	var se *quic.StreamError
	if assert.ErrorAs(t, err, &se, "reset at the stop") {
		assert.Equal(t, quic.StreamErrorCode(DoQNoError), se.ErrorCode)
	}
	require.Eventually(t, func() bool { return e.counts.get(QUIC, ResultDropped) == 1 }, time.Second, time.Millisecond)
	assert.Zero(t, e.counts.get(QUIC, ResultBadRequest), "no protocol error")
	assert.NoError(t, conn.Context().Err(), "the connection stays open until Shutdown closes it")
}

// halfDoQQuery opens a DoQ stream to e and writes the first five octets
// of name's framed query, then waits until the server reads the stream;
// rest is the remainder of the query.
func halfDoQQuery(t *testing.T, e *encryptedSetup, name string) (conn *quic.Conn, st *quic.Stream, rest []byte) {
	t.Helper()
	conn, err := (&doqSetup{ca: e.ca, addr: e.addrs[QUIC]}).dial(t)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err = conn.OpenStreamSync(ctx)
	require.NoError(t, err)
	require.NoError(t, st.SetDeadline(time.Now().Add(5*time.Second)))
	framed := frames(t, query(name))
	_, err = st.Write(framed[:5])
	require.NoError(t, err)
	waitDoQReading(t, e.srv.doq[0].srv, 1)
	return conn, st, framed[5:]
}

// closeAfterServer reads c until the server closes it, then closes it, as
// a client does: a server stopped lingers for that close (closeGently).
func closeAfterServer(c net.Conn) {
	go func() {
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}()
}

// waitDoQReading waits until n streams of s are reading their query.
func waitDoQReading(t *testing.T, s *DoQServer, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.reading) == n
	}, 5*time.Second, time.Millisecond, "%d streams reading", n)
}

// TestDoQCloseDropsNothing: Close ends a half-read query with its
// connection; it is not counted as dropped, as a query the stop ended is.
func TestDoQCloseDropsNothing(t *testing.T) {
	e := newEncryptedSetup(t)
	halfDoQQuery(t, e, "closed.blocked.test")
	srv := e.srv.doq[0].srv
	require.NoError(t, srv.Close()) // waits for the stream's goroutine
	assert.Zero(t, e.counts.get(QUIC, ResultDropped))
	waitDoQReading(t, srv, 0)
}

// lateBatch is a BatchConn whose first read waits for release, then
// returns two queries, as the poller's read that returns after
// stopReading does; it writes with the socket's own.
type lateBatch struct {
	BatchConn
	q       []byte
	release chan struct{}
}

func (b *lateBatch) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	<-b.release
	for i := range 2 {
		ms[i].N = copy(ms[i].Buffers[0], b.q)
		ms[i].Addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}
	}
	return 2, nil
}

// TestUDPBatchReadAfterStopDroppedAndCounted: a batch whose read returns
// once stopReading has (the poller woken by the deadline took it) is not
// served, each datagram of it is counted dropped, and the loop ends.
func TestUDPBatchReadAfterStopDroppedAndCounted(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	var served atomic.Int64
	var dropped atomic.Int64
	count := func(transport, result string) {
		if transport == UDP && result == ResultDropped {
			dropped.Add(1)
		}
	}
	s := newUDPServer(pc, false, countingWire{served: &served}, count, zap.NewNop(), AcceptQuery, func([]byte, error) {})
	b := &lateBatch{BatchConn: s.batch, q: packedQuery(t), release: make(chan struct{})}
	s.batch = b
	go s.serve()
	s.stopReading()
	close(b.release)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the read loop did not end")
	}
	s.drain(nil)
	assert.Zero(t, served.Load(), "a query of the batch served")
	assert.Equal(t, int64(2), dropped.Load(), "the batch's datagrams counted dropped")
}

// TestUDPShutdownWaitsForTheBatchServed: a query the read loop is still
// answering inline when shutdown begins is answered, and Shutdown returns
// only then: drain waits for the loop to end before it closes the socket.
func TestUDPShutdownWaitsForTheBatchServed(t *testing.T) {
	h := &heldEcho{holding: make(chan struct{}), hold: make(chan struct{})}
	s, c := startWireUDP(t, h)
	_, err := c.Write(packedQuery(t))
	require.NoError(t, err)
	<-h.holding
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned while a query was being answered: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(h.hold)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Read(make([]byte, 512))
	require.NoError(t, err, "the answer to the query being answered when shutdown began")
	require.NoError(t, <-shut)
}

// TestUDPDrainClosesTheSocketAndEndsTheWorkers: once drain returns, the
// socket is closed, and the workers that resumed queries, idle, have
// ended rather than waiting out workerIdle.
func TestUDPDrainClosesTheSocketAndEndsTheWorkers(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	s := newUDPServer(pc, false, echoWire{resume: true}, func(string, string) {}, zap.NewNop(), AcceptQuery, func([]byte, error) {})
	go s.serve()
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	query, answer := packedQuery(t), make([]byte, 512)
	echoBurst(t, c, query, answer, 1) // resumed: a worker, idle once it has answered
	require.Len(t, s.workers.running, 1)
	s.stopReading()
	s.drain(nil)
	require.ErrorIs(t, pc.SetDeadline(time.Now()), net.ErrClosed, "the socket closed")
	require.Eventually(t, func() bool { return len(s.workers.running) == 0 }, workerIdle/2, time.Millisecond,
		"the idle worker ended")
}

// TestShutdownPastItsDeadlineClosesDoHConnections: as on TCP
// (TestShutdownPastItsDeadlineClosesConnections), a Shutdown whose
// deadline ends with a DNS over HTTPS query still waiting on its upstream
// closes the query's connection, rather than leave it open after Shutdown
// has returned.
func TestShutdownPastItsDeadlineClosesDoHConnections(t *testing.T) {
	e := newEncryptedSetup(t)
	c, err := net.DialTimeout("tcp", e.addrs["http"], 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	body := mustPack(t, query("doh.slow.test"))
	_, err = fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: dnsfence\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
		DoHPath, DoHContentType, len(body), body)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.up.waiting.Load() == 1 }, 10*time.Second, 5*time.Millisecond,
		"the query waits on its upstream")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, e.srv.Shutdown(ctx), context.DeadlineExceeded)
	// The upstream holds the query for 10 s: an answer within 5 s is none.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)
	assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "closed by the listener: %v", err)
}
