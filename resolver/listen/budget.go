package listen

import (
	"errors"
	"io"
	"sync/atomic"
)

// DefaultQueryBudget is the default BodyBudget of DoHOptions and
// DoQOptions: as Unbound's http-query-buffer-size.
const DefaultQueryBudget = 4 << 20

// queryFree is the room for a query arriving on a DoH or DoQ stream that
// is taken out of no budget (queryBudget): a query that is not padded out
// of the way fits, so that queries as devices send them never wait on one
// another.
const queryFree = 512

// dohFree and doqFree are queryBudget.read's free room for a query of
// queryFree octets over DoH (a POST body) and DoQ (its stream, which
// holds its length first, RFC 9250 §4.2).
const (
	dohFree = queryFree
	doqFree = 2 + queryFree
)

// queryBudget bounds the octets of the queries one DoH or DoQ listener
// holds while they arrive, over all its connections, past the first
// queryFree of each. A listener may have MaxConns connections of
// MaxStreams streams, each with a query of up to 65,535 octets arriving
// until ReadTimeout: without it, 60 connections that started 64 such
// queries each and never ended them held 212 MB of heap over DoH (about
// 3.5 GB at 1,000 connections), where Unbound holds the partial queries
// of all its HTTP/2 streams together to http-query-buffer-size, 4 MB.
type queryBudget struct {
	max  int64        // octets; above 0
	held atomic.Int64 // octets taken, at most max
}

// errQueryBudget is read's error for a query that would take its
// listener past its budget.
var errQueryBudget = errors.New("the listener holds as many query octets as it may")

// read reads r to its end. Its first free octets take no budget; the
// room for more is taken from b as the query grows, and taken is how much
// was: the caller gives it back (give) once it no longer holds the query,
// errQueryBudget or not. free is the room for a query of queryFree octets
// with its framing (dohFree, doqFree). A full buffer grows only once an
// octet more has come: a stream that ends on a read after its last octets
// (an HTTP/2 body's END_STREAM in a frame of its own, a QUIC FIN) would
// otherwise take room for octets that never come, a query of exactly
// queryFree octets (or 1,024, 2,048, …) the budget it is meant never to
// wait on.
func (b *queryBudget) read(r io.Reader, free int) (msg []byte, taken int64, err error) {
	buf := make([]byte, 0, free)
	var one [1]byte
	for {
		into := buf[len(buf):cap(buf)]
		if len(buf) == cap(buf) {
			into = one[:]
		}
		n, err := r.Read(into)
		if n > 0 && len(buf) == cap(buf) {
			grow := int64(cap(buf))
			if b.held.Add(grow) > b.max {
				b.held.Add(-grow)
				return nil, taken, errQueryBudget
			}
			taken += grow
			more := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(more, buf)
			buf = append(more, one[0])
		} else {
			buf = buf[:len(buf)+n]
		}
		if errors.Is(err, io.EOF) {
			return buf, taken, nil
		}
		if err != nil {
			return nil, taken, err
		}
	}
}

// give gives back n octets read took.
func (b *queryBudget) give(n int64) { b.held.Add(-n) }
