package listen

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// scriptedBody is a query arriving on a stream: its octets in chunks of
// size, ending with io.EOF or fail, on the last chunk's read (withLast) or
// on the read after it.
type scriptedBody struct {
	rest     []byte
	size     int
	fail     error
	withLast bool
}

func (s *scriptedBody) Read(p []byte) (int, error) {
	end := io.EOF
	if s.fail != nil {
		end = s.fail
	}
	if len(s.rest) == 0 {
		return 0, end
	}
	n := copy(p, s.rest[:min(len(s.rest), s.size)])
	s.rest = s.rest[n:]
	if len(s.rest) == 0 && s.withLast {
		return n, end
	}
	return n, nil
}

var errStreamReset = errors.New("stream reset")

// FuzzQueryBudget drives one DoH listener's query budget with queries read
// directly (as DoQ's streams read theirs), given back in any order, and
// POSTs through ServeHTTP, each ending on EOF or a read error, with or
// without its last octets: the budget held is never negative nor past its
// bound, always the sum of what the reads took and were not given back
// (so zero once all are), unchanged by a POST once it is answered,
// whichever way it was (answered, 503, 400, 413, 415); a query of
// queryFree octets or less never takes from it, and a read takes at most
// twice the octets it holds.
func FuzzQueryBudget(f *testing.F) {
	// POSTs answered, cut short, with the body's end on its last octets,
	// and of no Content-Type.
	f.Add([]byte{255, 0x05, 0x40, 0x85, 0x40, 0x45, 0x40, 0xc5, 0x40, 0x05, 0x41})
	// Queries holding most of the budget, a POST refused 503 past it, and
	// one answered once they are given back.
	f.Add([]byte{255, 0x01, 0xff, 0x01, 0xff, 0x01, 0x40, 0x05, 0xff, 0x04, 0x00, 0x05, 0xff, 0x04, 0x00, 0x04, 0x00})
	// Reads ending in a reset, one over the budget, and a small query.
	f.Add([]byte{8, 0x02, 0x40, 0x03, 0xff, 0x04, 0x01, 0x00, 0x1f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		max := int64(queryFree) + int64(data[0])*64
		s := NewDoHServer(DoHOptions{Handler: &fakeHandler{}, BodyBudget: max, Trusted: trustNone})
		b := &s.bodies
		var outstanding []int64
		sum := func() (n int64) {
			for _, o := range outstanding {
				n += o
			}
			return n
		}
		check := func(what string) {
			t.Helper()
			if h := b.held.Load(); h < 0 || h > max || h != sum() {
				t.Fatalf("after %s: held %d of %d, with %v taken and not given back", what, h, max, outstanding)
			}
		}
		for ops := data[1:]; len(ops) >= 2; ops = ops[2:] {
			kind, arg := ops[0]&7%6, ops[1]
			body := &scriptedBody{rest: bytes.Repeat([]byte{byte(arg)}, int(arg)*16), size: int(ops[0]>>3)*8 + 1}
			length := int64(len(body.rest))
			switch kind {
			case 0, 1, 2, 3:
				body.withLast = kind&1 != 0
				if kind >= 2 {
					body.fail = errStreamReset
				}
				want := bytes.Clone(body.rest)
				before := b.held.Load()
				msg, taken, err := b.read(body, dohFree)
				outstanding = append(outstanding, taken)
				switch {
				case taken < 0 || taken > 0 && taken > 2*length-queryFree:
					t.Fatalf("a read of %d octets took %d", length, taken)
				case length <= queryFree && taken != 0:
					t.Fatalf("a query of %d octets took %d", length, taken)
				case errors.Is(err, errQueryBudget) && length <= queryFree:
					t.Fatalf("a query of %d octets over the budget", length)
				case errors.Is(err, errQueryBudget) && before+2*length-queryFree <= max:
					t.Fatalf("a query of %d octets over the budget with %d of %d held", length, before, max)
				case err == nil && kind >= 2:
					t.Fatalf("a stream reset read as the query %x", msg)
				case err == nil && !bytes.Equal(msg, want):
					t.Fatalf("read %d octets, want %d", len(msg), len(want))
				}
				check("a read")
			case 4:
				if len(outstanding) > 0 {
					i := int(arg) % len(outstanding)
					b.give(outstanding[i])
					outstanding = append(outstanding[:i], outstanding[i+1:]...)
				}
				check("a give")
			case 5:
				body.withLast = ops[0]&0x40 != 0
				if ops[0]&0x80 != 0 {
					body.fail = errStreamReset
				}
				r := httptest.NewRequest(http.MethodPost, DoHPath, io.NopCloser(body))
				r.ContentLength = -1
				if arg&1 == 0 {
					r.Header.Set("Content-Type", DoHContentType)
				}
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				check("a POST answered " + http.StatusText(w.Code))
			}
		}
		for _, o := range outstanding {
			b.give(o)
		}
		outstanding = nil
		check("giving back every read's")
		if h := b.held.Load(); h != 0 {
			t.Fatalf("held %d with every read given back", h)
		}
	})
}
