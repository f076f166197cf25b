package listen

import (
	"context"
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// laterWire is a WireHandler that answers every query later, as the
// upstream reader answers a cache miss: it detaches the writer, queues the
// answer and asks for a flush after the batch; the flush hands the queued
// answers to then.
type laterWire struct {
	then func([]laterAnswer)
	// hold, when set, holds the first query until it is closed, so that
	// the datagrams sent meanwhile wait in the socket for one batch.
	hold     chan struct{}
	held     sync.Once
	mu       sync.Mutex
	queued   []laterAnswer
	flushes  []int // how many answers each flush took
	detached chan struct{}
}

type laterAnswer struct {
	w ResponseWriter
	b []byte
}

func (*laterWire) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (h *laterWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	if h.hold != nil {
		h.held.Do(func() { <-h.hold })
	}
	answer := append([]byte(nil), b...)
	answer[2] |= 0x80 // QR
	w.(Detacher).Detach()
	h.mu.Lock()
	h.queued = append(h.queued, laterAnswer{w, answer})
	h.mu.Unlock()
	w.(Batcher).AfterBatch(h)
	w.(Batcher).AfterBatch(h) // twice: flushed once
	if h.detached != nil {
		h.detached <- struct{}{}
	}
	return nil, true
}

func (h *laterWire) Flush() {
	h.mu.Lock()
	queued := h.queued
	h.queued = nil
	h.flushes = append(h.flushes, len(queued))
	h.mu.Unlock()
	h.then(queued)
}

// answerAfter writes the answers from a goroutine of its own after delay,
// and says each Done.
func answerAfter(delay time.Duration) func([]laterAnswer) {
	return func(queued []laterAnswer) {
		go func() {
			time.Sleep(delay)
			for _, a := range queued {
				_, _ = a.w.Write(a.b)
				a.w.(Detacher).Done()
			}
		}()
	}
}

// TestUDPDetachedAnsweredAfterBatch: queries a handler detaches are
// answered later, each once, with the client's address kept although the
// loop reuses the slot; a Flusher asked for by a batch's queries is
// flushed once per batch, after it is read through.
func TestUDPDetachedAnsweredAfterBatch(t *testing.T) {
	h := &laterWire{then: answerAfter(0), hold: make(chan struct{})}
	_, c := startWireUDP(t, h)
	// Bursts small enough for the socket's receive buffer, however slow
	// the loop (-race).
	const rounds, burst, n = 5, 40, 5 * 40
	buf := make([]byte, 512)
	for r := range rounds {
		sent := map[uint16]bool{}
		for i := range burst {
			m := new(dns.Msg)
			m.SetQuestion("later.example.org.", dns.TypeA)
			m.Id = uint16(1000 + r*burst + i)
			b, err := m.Pack()
			require.NoError(t, err)
			_, err = c.Write(b)
			require.NoError(t, err)
			sent[m.Id] = true
		}
		if r == 0 {
			close(h.hold) // the loop held its first query: the rest of the burst is read in one batch
		}
		for range burst {
			k, err := c.Read(buf)
			require.NoError(t, err)
			m := new(dns.Msg)
			require.NoError(t, m.Unpack(buf[:k]))
			assert.True(t, m.Response)
			require.True(t, sent[m.Id], "an answer to a query sent, once: %d", m.Id)
			delete(sent, m.Id)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	total := 0
	for _, k := range h.flushes {
		assert.Positive(t, k, "a flush only after a batch that asked for it")
		total += k
	}
	assert.Equal(t, n, total)
	assert.Less(t, len(h.flushes), n, "one flush for a batch of queries, not one a query")
}

// TestUDPShutdownWaitsForDetached: a query detached when shutdown begins
// still gets its answer, and Shutdown returns only once it is Done.
func TestUDPShutdownWaitsForDetached(t *testing.T) {
	answered := make(chan struct{}) // closed once the answer is written, before Done
	slow := func(queued []laterAnswer) {
		go func() {
			time.Sleep(300 * time.Millisecond)
			for _, a := range queued {
				_, _ = a.w.Write(a.b)
				close(answered)
				a.w.(Detacher).Done()
			}
		}()
	}
	h := &laterWire{then: slow, detached: make(chan struct{}, 1)}
	s, c := startWireUDP(t, h)
	m := new(dns.Msg)
	m.SetQuestion("draining.example.org.", dns.TypeA)
	b, err := m.Pack()
	require.NoError(t, err)
	_, err = c.Write(b)
	require.NoError(t, err)
	<-h.detached

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	buf := make([]byte, 512)
	k, err := c.Read(buf)
	require.NoError(t, err, "the answer still goes out while draining")
	got := new(dns.Msg)
	require.NoError(t, got.Unpack(buf[:k]))
	assert.Equal(t, m.Id, got.Id)
	require.NoError(t, <-shut)
	select {
	case <-answered:
	default:
		t.Fatal("Shutdown returned before the detached query was Done")
	}
}

// flushOnce is a Batcher that keeps each Flusher once.
type flushOnce struct{ flushers []Flusher }

func (b *flushOnce) AfterBatch(f Flusher) {
	for _, g := range b.flushers {
		if g == f {
			return
		}
	}
	b.flushers = append(b.flushers, f)
}

// TestUDPAnswersWithinABatch: answers written within another goroutine's
// batch (Within) go out only when that batch is flushed, all together,
// and their queries are Done only then: a shutdown meanwhile waits.
func TestUDPAnswersWithinABatch(t *testing.T) {
	const n = 5
	out := make(chan laterAnswer, n)
	h := &laterWire{then: func(queued []laterAnswer) {
		for _, a := range queued {
			out <- a
		}
	}}
	s, c := startWireUDP(t, h)
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion("within.example.org.", dns.TypeA)
		m.Id = uint16(100 + i)
		b, err := m.Pack()
		require.NoError(t, err)
		_, err = c.Write(b)
		require.NoError(t, err)
	}
	var batch flushOnce
	for range n {
		a := <-out
		d := a.w.(Detacher)
		d.Within(&batch)
		_, err := a.w.Write(a.b)
		require.NoError(t, err)
		d.Done()
	}
	require.Len(t, batch.flushers, 1, "one flush for the answers of one listener")

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	buf := make([]byte, 512)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	_, err := c.Read(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "nothing goes out before the batch is flushed")
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned before the answers were sent: %v", err)
	default:
	}

	batch.flushers[0].Flush()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	for range n {
		k, err := c.Read(buf)
		require.NoError(t, err)
		m := new(dns.Msg)
		require.NoError(t, m.Unpack(buf[:k]))
		assert.True(t, m.Response)
	}
	require.NoError(t, <-shut)
}

// TestUDPAnswersWithinBatchesOneAfterAnother: answers written within
// another goroutine's batches go out batch after batch, each at its
// batch's flush, however many one batch holds (more than one sendmmsg
// takes: the queue is sent whenever it is full), and each flush says Done
// the queries of its own batch only, those whose answer was dropped (Done
// with nothing written) too: once every batch is flushed, Shutdown returns
// at once.
func TestUDPAnswersWithinBatchesOneAfterAnother(t *testing.T) {
	out := make(chan laterAnswer, 2*udpBatch)
	h := &laterWire{then: func(queued []laterAnswer) {
		for _, a := range queued {
			out <- a
		}
	}}
	s, c := startWireUDP(t, h)
	buf := make([]byte, 512)
	id := uint16(0)
	// round sends n queries and answers them within one batch of its own,
	// but for the last dropped, whose queries are only said Done.
	round := func(n, dropped int) {
		t.Helper()
		sent := map[uint16]bool{}
		for range n {
			id++
			_, err := c.Write(packedQueryOf(t, "within.example.org.", id))
			require.NoError(t, err)
			sent[id] = true
		}
		var batch flushOnce
		for i := range n {
			a := <-out
			d := a.w.(Detacher)
			d.Within(&batch)
			if i < n-dropped {
				_, err := a.w.Write(a.b)
				require.NoError(t, err)
			} else {
				delete(sent, binary.BigEndian.Uint16(a.b))
			}
			d.Done()
		}
		require.Len(t, batch.flushers, 1, "one flush for the batch, whatever it wrote")
		batch.flushers[0].Flush()
		for range len(sent) {
			k, err := c.Read(buf)
			require.NoError(t, err)
			m := new(dns.Msg)
			require.NoError(t, m.Unpack(buf[:k]))
			require.True(t, sent[m.Id], "an answer to a query of the batch, once: %d", m.Id)
			delete(sent, m.Id)
		}
	}
	round(udpBatch+6, 0)
	round(3, 1)
	round(2, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx), "every query said Done once its batch was flushed")
}

// detachedNowWire is a WireHandler that detaches every query and answers
// it there and then, before ServeWire returns: with Write when its ID is
// odd, with WriteMsg when even.
type detachedNowWire struct{}

func (detachedNowWire) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (detachedNowWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	answer := append([]byte(nil), b...)
	answer[2] |= 0x80 // QR
	d := w.(Detacher)
	d.Detach()
	if binary.BigEndian.Uint16(answer)%2 == 1 {
		_, _ = w.Write(answer)
	} else if m := new(dns.Msg); m.Unpack(answer) == nil {
		_ = w.WriteMsg(m)
	}
	d.Done()
	return nil, true
}

// TestUDPDetachedAnswerSentOnce: a query detached and answered before its
// ServeWire returns is answered once, by the writer, whether with Write
// or WriteMsg, and not with the batch too. Queries go one at a time: the
// writer sends in order, and the batch before the next is read, so a
// second answer to one would be read in place of the next's.
func TestUDPDetachedAnswerSentOnce(t *testing.T) {
	_, c := startWireUDP(t, detachedNowWire{})
	buf := make([]byte, 512)
	for id := uint16(1); id <= 4; id++ {
		_, err := c.Write(packedQueryOf(t, "now.example.org.", id))
		require.NoError(t, err)
		k, err := c.Read(buf)
		require.NoError(t, err)
		got := new(dns.Msg)
		require.NoError(t, got.Unpack(buf[:k]))
		require.Equal(t, id, got.Id, "the answer to query %d, the one before answered once", id)
		assert.True(t, got.Response)
	}
}

// receivedHandler is a Handler that sends on inline the octets its writer's
// Received gives while ServeInline runs, and on resumed those it gives
// when the resume runs, then answers; its ServeWire leaves every query to
// ServeInline.
type receivedHandler struct{ inline, resumed chan []byte }

func (receivedHandler) ServeWire(ResponseWriter, []byte) (func(), bool) { return nil, false }

func (h receivedHandler) ServeInline(w ResponseWriter, req *dns.Msg) func() {
	h.inline <- append([]byte(nil), w.(Received).Received()...)
	return func() {
		h.resumed <- w.(Received).Received()
		_ = w.WriteMsg(new(dns.Msg).SetReply(req))
	}
}

// TestUDPReceivedWhileServed: a UDP writer's Received is the datagram as
// it came while ServeInline runs (what a NOTIFY's TSIG is verified over),
// and nil once it has returned: the slot's buffer is read into again.
func TestUDPReceivedWhileServed(t *testing.T) {
	h := receivedHandler{inline: make(chan []byte, 1), resumed: make(chan []byte, 1)}
	_, c := startWireUDP(t, h)
	q := packedQuery(t)
	_, err := c.Write(q)
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 512))
	require.NoError(t, err)
	assert.Equal(t, q, <-h.inline, "Received while ServeInline runs")
	assert.Nil(t, <-h.resumed, "Received once ServeInline has returned")
}
