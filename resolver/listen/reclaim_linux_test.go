package listen

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// TestAdmissionReclaimsFinishedConnections: a client at
// limits.tcp_connections_per_client that closes a connection and opens
// the next at once is admitted, though the closed connection's read loop
// has not run yet to read the close. Before, it was reset at accept: a
// client churning 32 connections at dnsfence's default cap, each for one
// query over TCP, had 9.5-10.5 % of its queries fail on a reset and
// 3-5 % more at connect, on two busy cores (none after, in 50,000). A
// connection its client may still want
// something of keeps its place: one with a query left unread or one
// waiting on its upstream, one whose read loop is busy, one still open.
func TestAdmissionReclaimsFinishedConnections(t *testing.T) {
	// fill admits the four connections fakeRules lets one client hold,
	// running no read loop for them: as loops the scheduler has not run
	// yet, each about to wait for a query. connect admits one more so.
	fill := func(t *testing.T) (connect func() (net.Conn, *tcpConn), clients []net.Conn, conns []*tcpConn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { ln.Close() })
		s := New(Config{Handler: &bigAnswers{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
		tcp := newTCPServer(ln, s.cfg, s.log, s.admission, 100, s.counted(TCP), s.invalid(TCP), nil)
		connect = func() (net.Conn, *tcpConn) {
			client, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			t.Cleanup(func() { client.Close() })
			c, err := ln.Accept()
			require.NoError(t, err)
			conn := tcp.admit(c)
			if conn != nil {
				conn.waiting.Store(true)
				t.Cleanup(func() { conn.Close(); conn.release() })
			}
			return client, conn
		}
		for range (fakeRules{}).Limits().TCPConnectionsPerClient {
			client, conn := connect()
			require.NotNil(t, conn)
			clients, conns = append(clients, client), append(conns, conn)
		}
		_, conn := connect()
		require.Nil(t, conn, "at the cap, with all four open")
		return connect, clients, conns
	}
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	q, err := m.Pack()
	require.NoError(t, err)
	frame := append([]byte{0, byte(len(q))}, q...)
	// awaitState waits until the kernel has the client's close of conn:
	// its FIN (CLOSE_WAIT) or its reset (CLOSE).
	awaitState := func(t *testing.T, conn *tcpConn, state uint8) {
		require.Eventually(t, func() bool {
			var got uint8
			require.NoError(t, conn.raw.Control(func(fd uintptr) {
				if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
					got = info.State
				}
			}))
			return got == state
		}, 5*time.Second, time.Millisecond)
	}

	t.Run("the read loop waits once its answers are sent", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		tcp := serveTCP(t, ln, &bigAnswers{}, fakeRules{})
		client, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer client.Close()
		_, err = client.Write(frame)
		require.NoError(t, err)
		readFrame(t, client)
		// Set before the answer went: a client that closes once it has
		// its answer finds the connection finished.
		tcp.mu.Lock()
		defer tcp.mu.Unlock()
		require.Len(t, tcp.conns, 1)
		for conn := range tcp.conns {
			require.True(t, conn.waiting.Load())
		}
	})

	t.Run("closed by its client", func(t *testing.T) {
		connect, clients, conns := fill(t)
		require.NoError(t, clients[0].Close())
		awaitState(t, conns[0], unix.BPF_TCP_CLOSE_WAIT)
		_, conn := connect()
		require.NotNil(t, conn, "the closed connection's place")
		// Its read loop, when it runs, gives back no second place.
		conns[0].release()
		_, conn = connect()
		require.Nil(t, conn)
	})

	t.Run("reset by its client", func(t *testing.T) {
		connect, clients, conns := fill(t)
		require.NoError(t, clients[1].(*net.TCPConn).SetLinger(0))
		require.NoError(t, clients[1].Close())
		awaitState(t, conns[1], unix.BPF_TCP_CLOSE)
		_, conn := connect()
		require.NotNil(t, conn)
	})

	t.Run("a query left unread", func(t *testing.T) {
		connect, clients, conns := fill(t)
		// Half-closed after its query: the client may still read the answer.
		_, err := clients[2].Write(frame)
		require.NoError(t, err)
		require.NoError(t, clients[2].(*net.TCPConn).CloseWrite())
		awaitState(t, conns[2], unix.BPF_TCP_CLOSE_WAIT)
		_, conn := connect()
		require.Nil(t, conn)
	})

	t.Run("a query waiting on its upstream", func(t *testing.T) {
		connect, clients, conns := fill(t)
		conns[3].began()
		require.NoError(t, clients[3].Close())
		awaitState(t, conns[3], unix.BPF_TCP_CLOSE_WAIT)
		_, conn := connect()
		require.Nil(t, conn)
		conns[3].answered(time.Minute)
		_, conn = connect()
		require.NotNil(t, conn, "answered, it is finished")
	})

	t.Run("its answers not yet sent", func(t *testing.T) {
		connect, clients, conns := fill(t)
		// Half-closed after its queries, answered inline and held for the
		// read loop's send: the client may still read the answers.
		conns[0].hold()
		require.NoError(t, conns[0].writeFrame(q))
		require.NoError(t, clients[0].(*net.TCPConn).CloseWrite())
		awaitState(t, conns[0], unix.BPF_TCP_CLOSE_WAIT)
		_, conn := connect()
		require.Nil(t, conn, "answers held")
		// send under way: a client slow to read them holds up its write.
		conns[0].writeMu.Lock()
		_, conn = connect()
		conns[0].writeMu.Unlock()
		require.Nil(t, conn, "answers being written")
		conns[0].send()
		_, conn = connect()
		require.NotNil(t, conn, "sent, it is finished")
	})

	t.Run("its read loop busy", func(t *testing.T) {
		connect, clients, conns := fill(t)
		conns[0].waiting.Store(false) // a query of its buffer being answered
		require.NoError(t, clients[0].Close())
		awaitState(t, conns[0], unix.BPF_TCP_CLOSE_WAIT)
		_, conn := connect()
		require.Nil(t, conn)
	})
}

// TestDoTReclaimLeavesNoQueryUnread: a DNS over TLS client that sent two
// queries, each in a TLS record of its own, and closed its end without
// close_notify, keeps the connection's place while the second is still
// to be read: crypto/tls took both records from the socket with the
// first, so the kernel has nothing unread and the client's FIN, and the
// read loop, its buffer empty, is about to read the second from TLS.
func TestDoTReclaimLeavesNoQueryUnread(t *testing.T) {
	ca := newTestCA(t)
	files, _ := writePair(t, ca)
	store, _ := startStore(t, files, time.Hour)
	ln, err := net.Listen("tcp", "127.0.84.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	s := New(Config{Handler: &bigAnswers{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
	dot := newTCPServer(ln, s.cfg, s.log, s.admission, 100, s.counted(TLS), s.invalid(TLS), ServerTLSConfig(store, ALPNDoT))
	connect := func() (*net.TCPConn, *net.TCPConn, *tcpConn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { client.Close() })
		c, err := ln.Accept()
		require.NoError(t, err)
		conn := dot.admit(c)
		if conn != nil {
			t.Cleanup(func() { conn.Close(); conn.release() })
		}
		return client.(*net.TCPConn), c.(*net.TCPConn), conn
	}
	for range (fakeRules{}).Limits().TCPConnectionsPerClient - 1 {
		_, _, conn := connect()
		require.NotNil(t, conn)
	}
	raw, accepted, conn := connect()
	require.NotNil(t, conn)
	first, second := frames(t, txtQuery("a.example.", 1)), frames(t, txtQuery("b.example.", 2))

	read := make(chan []byte, 1)
	go func() { // the read loop's: the handshake, then the first query
		b := make([]byte, len(first))
		_, _ = io.ReadFull(conn, b)
		read <- b
	}()
	bc := &batchConn{Conn: raw}
	client := tls.Client(bc, clientTLS(ca, ALPNDoT))
	require.NoError(t, client.Handshake())
	bc.batching = true
	_, err = client.Write(first)
	require.NoError(t, err)
	_, err = client.Write(second)
	require.NoError(t, err)
	require.NoError(t, bc.flush(), "both records in one segment")
	require.NoError(t, raw.CloseWrite()) // a FIN, no close_notify
	select {
	case b := <-read:
		require.Equal(t, first, b)
	case <-time.After(10 * time.Second):
		t.Fatal("the first query was not read")
	}
	conn.waiting.Store(true) // its buffer empty, the read loop is about to read again
	require.Eventually(t, func() bool {
		var state uint8
		sc, err := accepted.SyscallConn()
		require.NoError(t, err)
		require.NoError(t, sc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				state = info.State
			}
		}))
		return state == unix.BPF_TCP_CLOSE_WAIT
	}, 5*time.Second, time.Millisecond)

	_, _, next := connect()
	assert.Nil(t, next, "the second query is still to be read and answered")
	b := make([]byte, len(second))
	_, err = io.ReadFull(conn, b)
	require.NoError(t, err)
	assert.Equal(t, second, b, "the query left in TLS's buffer")
}

// batchConn holds what is written to it, once batching, until flush
// writes it all at once.
type batchConn struct {
	net.Conn
	batching bool
	held     []byte
}

func (c *batchConn) Write(b []byte) (int, error) {
	if !c.batching {
		return c.Conn.Write(b)
	}
	c.held = append(c.held, b...)
	return len(b), nil
}

func (c *batchConn) flush() error {
	_, err := c.Conn.Write(c.held)
	c.held = nil
	return err
}
