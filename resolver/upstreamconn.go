package resolver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Limits on one upstream UDP socket. Many queries share a socket, told
// apart by ID, so that a cache miss costs no socket of its own; renewing the
// socket keeps the source port changing, half of what makes a spoofed
// answer hard to guess (RFC 5452).
const (
	socketMaxQueries = 1000
	socketMaxAge     = 10 * time.Second
)

var errSocketClosed = errors.New("upstream socket closed")

// udpMux sends queries to one upstream over a shared connected UDP socket:
// a connected socket only receives datagrams from the upstream's address,
// and a reader goroutine hands each answer to the query with its ID.
// Answers whose ID no query is waiting for (late or spoofed) are dropped.
type udpMux struct {
	addr string
	mu   sync.Mutex
	cur  *upstreamSocket
}

// upstreamSocket is one connected socket and the queries waiting on it.
type upstreamSocket struct {
	conn net.Conn
	born time.Time

	mu      sync.Mutex
	pending map[uint16]chan []byte
	sent    int
	dead    bool // read failed: no more queries
	retired bool // replaced: closes once its last query is answered
}

// register picks the socket for a new query, renewing it when it is old,
// used up or dead, and registers ch under a query ID free on it. Both happen
// under m.mu, so a socket is never retired between being picked and being
// waited on.
func (m *udpMux) register(ch chan []byte) (*upstreamSocket, uint16, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.cur
	if s != nil {
		s.mu.Lock()
		ok := !s.dead && s.sent < socketMaxQueries && time.Since(s.born) < socketMaxAge
		s.mu.Unlock()
		if !ok {
			s.retire()
			s = nil
		}
	}
	if s == nil {
		c, err := net.Dial("udp", m.addr)
		if err != nil {
			return nil, 0, err
		}
		s = &upstreamSocket{conn: c, born: time.Now(), pending: map[uint16]chan []byte{}}
		go s.read()
		m.cur = s
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return nil, 0, errSocketClosed
	}
	s.sent++
	id := dns.Id()
	for s.pending[id] != nil {
		id = dns.Id()
	}
	s.pending[id] = ch
	return s, id, nil
}

// close retires the current socket: it closes once its last query is
// answered. Used when the upstreams change.
func (m *udpMux) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil {
		m.cur.retire()
		m.cur = nil
	}
}

// exchange sends q with a query ID free on the socket (q.Id is set to it)
// and waits for the answer until ctx ends.
func (m *udpMux) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	ch := make(chan []byte, 1)
	s, id, err := m.register(ch)
	if err != nil {
		return nil, err
	}
	q.Id = id
	b, err := q.Pack()
	if err == nil {
		_, err = s.conn.Write(b)
	}
	if err != nil {
		s.forget(id)
		return nil, err
	}
	select {
	case raw, ok := <-ch:
		if !ok {
			return nil, errSocketClosed
		}
		r := new(dns.Msg)
		if err := r.Unpack(raw); err != nil {
			return nil, err
		}
		return r, nil
	case <-ctx.Done():
		s.forget(id)
		return nil, ctx.Err()
	}
}

// upstreamBatch is how many answers one recvmmsg may read from an upstream
// socket, each up to upstreamBuf bytes: the upstream is asked for at most
// ednsSize, so a larger datagram is not an answer to us.
const (
	upstreamBatch = 16
	upstreamBuf   = 4096
)

// read delivers answers to waiting queries, reading whatever has arrived
// with one system call, until the socket fails or is closed; then every
// waiting query is told.
func (s *upstreamSocket) read() {
	uc, _ := s.conn.(*net.UDPConn)
	var batch batchConn
	if a, ok := s.conn.LocalAddr().(*net.UDPAddr); ok && uc != nil {
		if a.IP.To4() != nil {
			batch = ipv4.NewPacketConn(uc)
		} else {
			batch = ipv6.NewPacketConn(uc)
		}
	}
	msgs := make([]ipv4.Message, upstreamBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, upstreamBuf)}
	}
	for {
		var n int
		var err error
		if batch != nil {
			n, err = batch.ReadBatch(msgs, 0)
		} else {
			msgs[0].N, err = s.conn.Read(msgs[0].Buffers[0])
			n = 1
		}
		if err != nil {
			s.mu.Lock()
			s.dead = true
			for id, ch := range s.pending {
				close(ch)
				delete(s.pending, id)
			}
			s.mu.Unlock()
			s.conn.Close()
			return
		}
		for i := 0; i < n; i++ {
			if s.deliver(msgs[i].Buffers[0][:msgs[i].N], msgs[i].Flags&unix.MSG_TRUNC != 0) {
				s.conn.Close() // retired and drained: ends this loop
			}
		}
	}
}

// deliver hands one answer to the query waiting for its ID, and reports
// whether the socket is retired with nothing left to wait for. An answer
// cut short by the buffer is dropped: its query times out and moves on.
func (s *upstreamSocket) deliver(b []byte, truncated bool) bool {
	if len(b) < 12 {
		return false
	}
	id := binary.BigEndian.Uint16(b)
	s.mu.Lock()
	ch := s.pending[id]
	if ch != nil && !truncated {
		delete(s.pending, id)
	} else {
		ch = nil
	}
	done := s.retired && len(s.pending) == 0
	s.mu.Unlock()
	if ch != nil {
		ch <- bytes.Clone(b)
	}
	return done
}

// forget stops waiting for id.
func (s *upstreamSocket) forget(id uint16) {
	s.mu.Lock()
	delete(s.pending, id)
	done := s.retired && len(s.pending) == 0
	s.mu.Unlock()
	if done {
		s.conn.Close()
	}
}

// retire takes the socket out of use; it closes once nothing waits on it.
func (s *upstreamSocket) retire() {
	s.mu.Lock()
	s.retired = true
	done := len(s.pending) == 0
	s.mu.Unlock()
	if done {
		s.conn.Close()
	}
}
