package listen

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
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
	s := New(Config{Handler: h, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t)})
	tcp := newTCPServer(ln, s.cfg, s.log, s.admission, 4, s.counted(TCP), s.invalid(TCP), nil)
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
