package upstream

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNS over TLS connection pool (RFC 7858, with RFC 7766's pipelining).
const (
	// dotPoolSize is how many connections are kept to one upstream.
	dotPoolSize = 4
	// dotPipeline is how many queries may be in flight on each connection
	// before another is opened (while there are fewer than dotPoolSize):
	// one connection carries all but bursts.
	dotPipeline = 16
	// dotMaxInflight bounds the query IDs taken on one connection, by
	// queries in flight and by abandoned ones whose answer may still come.
	dotMaxInflight = 1024
	// dotAbandonedFor is how long the ID of an abandoned query stays
	// taken: an answer later than that is not coming.
	dotAbandonedFor = 30 * time.Second
	// dotIdleTimeout closes a connection nothing was read from for that
	// long (RFC 7766 §6.2.3: clients close idle connections; servers will).
	dotIdleTimeout = 20 * time.Second
)

// dotTransport sends queries to one DNS-over-TLS upstream over a small
// pool of kept connections, many queries in flight on each, told apart by
// ID and answered in any order (RFC 7766 §6.2.1.1). Each query gets a fresh
// random ID, unique on its connection; the caller's ID is put back in the
// answer. A query in flight on a connection that breaks (the upstream
// closes it, a reset, a failed write) is sent once more on another.
type dotTransport struct {
	addr    Address
	tls     *tls.Config
	timeout time.Duration
	life    context.Context // ends at Close: stops dials in progress
	stop    context.CancelFunc

	mu     sync.Mutex
	conns  []*dotConn // live or being dialled; a broken one removes itself
	closed bool

	// beforeWait is udpMux.beforeWait for the queries of t's connections.
	beforeWait func(ctx context.Context, answer <-chan []byte)
}

// dotConn is one connection of the pool.
type dotConn struct {
	t     *dotTransport
	ready chan struct{} // closed when the dial ended: conn or err is set
	conn  *tls.Conn     // set under mu before ready closes, read after
	err   error         // why the dial failed
	// failure makes err one failure of the upstream, whatever the number
	// of queries that waited for the dial.
	failure sharedFailure

	// wturn is the turn to write, one frame at a time: a channel, so that
	// a query whose deadline comes while another's frame is being written
	// stops waiting then.
	wturn chan struct{}

	mu sync.Mutex
	// waiting holds the channel of each query in flight by its ID. A nil
	// channel is a query abandoned (its ctx ended) whose ID stays taken
	// until its answer comes or dotAbandonedFor passes, so that a late
	// answer is never taken for another query's.
	waiting     map[uint16]chan []byte
	abandoned   int                  // nil entries in waiting
	abandonedAt map[uint16]time.Time // when each was abandoned
	load        int                  // queries between pick and release
	broken      error                // why the connection is no longer used; set once
	// lastRead is when the last frame came in (the dial's end before the
	// first), for silent.
	lastRead time.Time
	ids      *rand.ChaCha8
}

// brokenConnError is a connection that broke with the query in flight: the
// query is tried once more on another connection.
type brokenConnError struct{ err error }

func (e *brokenConnError) Error() string {
	if errors.Is(e.err, io.EOF) {
		return "the upstream closed the connection"
	}
	return "the connection broke: " + e.err.Error()
}

func (e *brokenConnError) Unwrap() error { return e.err }

// writeCutError is what broke a DoT connection on which a query's frame
// was cut part way by that query's own deadline: dnsfence's doing, not the
// upstream's. A TLS connection whose write timed out writes no more
// (crypto/tls), so every query in flight on it must go to another one; the
// deadline was theirs to wait for, not this one, so such a break is no try
// of theirs (exchangeRetrying). Under -race on a busy machine, a query
// whose second connection broke so came back as "the connection broke:
// write tcp ...: i/o timeout" before its own deadline (CI,
// TestDoTWriteEndsAtTheQueryDeadline).
type writeCutError struct{ err error }

func (e *writeCutError) Error() string {
	return "another query's frame was cut at its deadline: " + e.err.Error()
}

func (e *writeCutError) Unwrap() error { return e.err }

func newDoT(addr Address, opts Options) *dotTransport {
	life, stop := context.WithCancel(context.Background())
	return &dotTransport{
		addr:    addr,
		tls:     clientTLS(addr.ServerName, opts.RootCAs, "dot"),
		timeout: opts.Timeout,
		life:    life,
		stop:    stop,
	}
}

// Address is the upstream as configured: "tls://9.9.9.9:853#dns.quad9.net".
func (t *dotTransport) Address() string { return t.addr.String() }

// Exchange sends q and waits for its answer (see Transport and
// dotTransport). Errors are those listed at ErrProtocol.
func (t *dotTransport) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	wq, err := packPadded(q, false)
	if err != nil {
		return nil, err
	}
	return exchangeRetrying(ctx, t.timeout, "dns over tls", wq, nil, t.try)
}

// try sends the query on one connection of the pool and waits for its
// answer.
func (t *dotTransport) try(ctx context.Context, wq *wireQuery) (*dns.Msg, error) {
	c, err := t.pick()
	if err != nil {
		return nil, err
	}
	defer c.release()
	select {
	case <-c.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c.err != nil {
		return nil, c.failure.share(c.err)
	}
	id, ch, err := c.register()
	if err != nil {
		return nil, err
	}
	if started, err := c.write(ctx, wq.withID(id, true)); err != nil {
		if !started {
			// Its deadline came (or was too close: minWriteTime) while
			// another frame was being written: nothing of it went out.
			c.forget(id)
			return nil, err
		}
		return nil, c.brokenError()
	}
	if t.beforeWait != nil {
		t.beforeWait(ctx, ch)
	}
	select {
	case b, ok := <-ch:
		return c.answered(wq, id, b, ok)
	case <-ctx.Done():
		select {
		case b, ok := <-ch: // came in time, the goroutine late (udpMux.wait)
			return c.answered(wq, id, b, ok)
		default:
		}
		c.abandon(id)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.silent() {
			// Not one frame for a whole timeout, this query's answer or
			// another's: the upstream stopped answering on this connection
			// (its TCP still up). The next query dials anew rather than
			// time out here too, as would every query until dotPipeline
			// of them were abandoned.
			c.fail(errSilent)
		}
		return nil, ctx.Err()
	}
}

// answered is the answer b to the query wq, sent on c with the ID id, or
// c's error when its channel closed (ok false: c broke).
func (c *dotConn) answered(wq *wireQuery, id uint16, b []byte, ok bool) (*dns.Msg, error) {
	if !ok {
		return nil, c.brokenError()
	}
	return wq.answer(b, id)
}

// errSilent breaks a connection on which a query's whole timeout passed
// with nothing read.
var errSilent = errors.New("no answer on the connection for a whole timeout")

// silent reports whether nothing was read on c for a whole timeout (since
// it was dialled, for one that has read nothing yet): a query that timed
// out finds its connection silent only when no answer came in all that
// time, not when the dial took part of its time.
func (c *dotConn) silent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.lastRead) >= c.t.timeout
}

// pick chooses the connection for a query: the least loaded, or a new one
// when every connection has dotPipeline queries in flight and the pool has
// room. The query counts in the connection's load until release.
func (t *dotTransport) pick() (*dotConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	var best *dotConn
	bestLoad := 0
	now := time.Now()
	for _, c := range t.conns {
		c.mu.Lock()
		if c.abandoned >= dotPipeline {
			c.expireAbandoned(now)
		}
		load, usable := c.load+c.abandoned, c.broken == nil && len(c.waiting) < dotMaxInflight
		c.mu.Unlock()
		if usable && (best == nil || load < bestLoad) {
			best, bestLoad = c, load
		}
	}
	if best == nil || bestLoad >= dotPipeline && len(t.conns) < dotPoolSize {
		if len(t.conns) >= dotPoolSize {
			return nil, fmt.Errorf("dns over tls: %d queries in flight on each of %d connections", dotMaxInflight, dotPoolSize)
		}
		var seed [32]byte
		_, _ = crand.Read(seed[:]) // never fails on Linux (Go 1.24+ crashes instead)
		best = &dotConn{t: t, ready: make(chan struct{}), wturn: make(chan struct{}, 1), waiting: map[uint16]chan []byte{},
			ids: rand.NewChaCha8(seed)}
		t.conns = append(t.conns, best)
		go best.dial()
	}
	best.mu.Lock()
	best.load++
	best.mu.Unlock()
	return best, nil
}

// remove takes c out of the pool.
func (t *dotTransport) remove(c *dotConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conns = slices.DeleteFunc(t.conns, func(x *dotConn) bool { return x == c })
}

// Close closes every connection; queries in flight get ErrClosed.
func (t *dotTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conns := slices.Clone(t.conns)
	t.mu.Unlock()
	// Each connection fails with ErrClosed before the dials are stopped,
	// so that a query waiting on a dial gets ErrClosed, not the dial's
	// own cancellation (dial keeps the error a connection failed with).
	for _, c := range conns {
		c.fail(ErrClosed)
	}
	t.stop()
	return nil
}

// dial connects, with the TLS handshake, within the transport's timeout;
// the queries waiting for c are woken when it is done.
func (c *dotConn) dial() {
	defer close(c.ready)
	ctx, cancel := context.WithTimeout(c.t.life, c.t.timeout)
	defer cancel()
	d := tls.Dialer{Config: c.t.tls}
	conn, err := d.DialContext(ctx, "tcp", c.t.addr.HostPort())
	c.mu.Lock()
	switch {
	case c.broken != nil: // closed while dialling
		if conn != nil {
			_ = conn.Close()
		}
		c.err = c.broken
	case err != nil:
		c.err = fmt.Errorf("connecting over tls: %w", typedDialError(err))
		c.broken = c.err
	default:
		c.conn = conn.(*tls.Conn)
		c.lastRead = time.Now()
		c.extendDeadline()
		go c.read()
	}
	failed := c.conn == nil
	c.mu.Unlock()
	if failed {
		c.t.remove(c)
	}
}

// extendDeadline pushes the read deadline past both the idle timeout and
// the query timeout. c.mu is held.
func (c *dotConn) extendDeadline() {
	_ = c.conn.SetReadDeadline(time.Now().Add(max(dotIdleTimeout, c.t.timeout)))
}

// read hands each answer to the query waiting for its ID, until the
// connection fails or is idle for dotIdleTimeout. An answer to an
// abandoned query is dropped; one with an ID no query on the connection
// was sent with, or a frame too short to hold a DNS header, breaks the
// connection. It closes the connection when it ends
// (fail wakes it): crypto/tls's Close sends close_notify (RFC 8446 §6.1)
// and waits up to 5 s for room to, which an upstream that reads nothing
// does not make; that wait is this goroutine's, not a query's.
func (c *dotConn) read() {
	defer c.conn.Close()
	var hdr [2]byte
	for {
		if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
			c.fail(err)
			return
		}
		n := int(hdr[0])<<8 | int(hdr[1])
		if n < 12 {
			c.fail(fmt.Errorf("%w: a %d-octet frame, too short for a DNS message", ErrProtocol, n))
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.conn, b); err != nil {
			c.fail(err)
			return
		}
		id := uint16(b[0])<<8 | uint16(b[1])
		c.mu.Lock()
		if c.broken != nil { // fail's deadline must not be pushed back
			c.mu.Unlock()
			return
		}
		ch, ok := c.waiting[id]
		if !ok {
			// No query on c was sent with this ID, in flight or abandoned
			// (an answer later than dotAbandonedFor too): the upstream's
			// side answers something other than our queries, a proxy that
			// mixes up its backends' IDs. Every query on c would time out,
			// the frames keeping c from being found silent: it is given up,
			// and its queries sent once more on another.
			c.mu.Unlock()
			c.fail(fmt.Errorf("%w: an answer with ID %d, which no query on the connection has", ErrProtocol, id))
			return
		}
		c.lastRead = time.Now()
		delete(c.waiting, id)
		if ch == nil {
			c.abandoned--
			delete(c.abandonedAt, id)
		}
		c.extendDeadline()
		c.mu.Unlock()
		if ch != nil {
			ch <- b // buffered: never blocks
		}
	}
}

// register takes a random query ID free on c for a query, and the channel
// its answer comes on.
func (c *dotConn) register() (uint16, chan []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return 0, nil, c.brokenErrorLocked()
	}
	// At most dotMaxInflight of 65,536 IDs are taken (a few more when
	// queries race for the last ones): a free one comes within a few draws.
	for range 1 << 16 {
		id := uint16(c.ids.Uint64())
		if _, taken := c.waiting[id]; taken {
			continue
		}
		ch := make(chan []byte, 1)
		c.waiting[id] = ch
		c.extendDeadline()
		return id, ch, nil
	}
	return 0, nil, fmt.Errorf("dns over tls: no free query ID on the connection")
}

// write sends one framed query by the query's own deadline (ctx's, which
// exchangeRetrying sets no later than upstream_timeout after the query
// began), not a timeout counted from the write: a write that starts late
// (after a slow dial, or behind another frame) must not make the query
// outlast its timeout. started is false when the deadline came before
// the query's turn to write: nothing was written, and the connection is
// as good as before. A write that fails, or ends at the deadline part
// written, breaks the connection (fail; a TLS connection whose write
// timed out writes no more).
func (c *dotConn) write(ctx context.Context, b []byte) (started bool, err error) {
	select {
	case c.wturn <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-c.wturn }()
	if ctx.Err() != nil { // the turn and the deadline came together
		return false, ctx.Err()
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.t.timeout)
	}
	if time.Until(deadline) < minWriteTime {
		// No time to write in: a write that times out, even before its
		// first octet went, leaves a TLS connection that writes no more
		// (crypto/tls), and every query pipelined on it fails with it.
		return false, context.DeadlineExceeded
	}
	_ = c.conn.SetWriteDeadline(deadline)
	if _, err = c.conn.Write(b); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Cut at this query's deadline (SetWriteDeadline's error, not
			// the kernel's ETIMEDOUT): the others on c go elsewhere
			// without its counting as one of their tries.
			c.fail(&writeCutError{err})
		} else {
			c.fail(err)
		}
		// A record cut part way: the stream can carry nothing more, not
		// even close_notify, which read's Close would append to the cut
		// record after waiting up to 5 s for room. The socket beneath TLS
		// is closed now (after fail, so that err is what broke c).
		_ = c.conn.NetConn().Close()
	}
	return true, err
}

// minWriteTime is the least time before its deadline in which a DoT query
// is still written: a frame goes out in microseconds when the connection
// takes it, and one that would be cut off by its deadline breaks the
// connection for every query on it.
const minWriteTime = 5 * time.Millisecond

// forget frees the ID of a query that was never sent.
func (c *dotConn) forget(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.waiting[id]; ok && ch != nil {
		delete(c.waiting, id)
	}
}

// abandon gives up on the query with ID id, keeping its ID taken until its
// answer comes.
func (c *dotConn) abandon(id uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.waiting[id]; ok && ch != nil {
		c.waiting[id] = nil
		c.abandoned++
		if c.abandonedAt == nil {
			c.abandonedAt = map[uint16]time.Time{}
		}
		c.abandonedAt[id] = time.Now()
	}
}

// expireAbandoned frees the IDs of queries abandoned more than
// dotAbandonedFor before now, so that a connection whose upstream leaves
// some queries unanswered does not run out of IDs. c.mu is held.
func (c *dotConn) expireAbandoned(now time.Time) {
	for id, at := range c.abandonedAt {
		if now.Sub(at) > dotAbandonedFor {
			delete(c.abandonedAt, id)
			delete(c.waiting, id)
			c.abandoned--
		}
	}
}

// release ends a query's part in c's load.
func (c *dotConn) release() {
	c.mu.Lock()
	c.load--
	c.mu.Unlock()
}

// fail marks c broken by err, wakes every query waiting on it and takes it
// out of the pool, without waiting: read, woken by a read deadline in the
// past, closes the connection.
func (c *dotConn) fail(err error) {
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return
	}
	c.broken = err
	for _, ch := range c.waiting {
		if ch != nil {
			close(ch)
		}
	}
	c.waiting = nil
	if c.conn != nil {
		_ = c.conn.SetReadDeadline(time.Now()) // wakes read, which closes it
	}
	c.mu.Unlock()
	c.t.remove(c)
}

// brokenError is the error for a query whose connection broke.
func (c *dotConn) brokenError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.brokenErrorLocked()
}

func (c *dotConn) brokenErrorLocked() error {
	if errors.Is(c.broken, ErrClosed) {
		return ErrClosed
	}
	return &brokenConnError{err: c.broken}
}
