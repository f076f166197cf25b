package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cancelKey holds, in a query's context, the function that ends it.
type cancelKey struct{}

// endWhenAnswered is a beforeWait that holds a query until its answer has
// come, then ends its context (from cancelKey): the query then finds both
// ready, as one whose goroutine waited for a CPU past its deadline finds
// them, its answer come in time.
func endWhenAnswered(t *testing.T) func(ctx context.Context, answer <-chan []byte) {
	return func(ctx context.Context, answer <-chan []byte) {
		for end := time.Now().Add(5 * time.Second); len(answer) == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Error("no answer came")
				break
			}
		}
		ctx.Value(cancelKey{}).(context.CancelFunc)()
	}
}

// TestAnswerThatCameWithTheDeadlineIsTaken: an answer already read when
// the query's context has ended too is the query's, on UDP (both the
// message and the wire path's exchange) and on DNS over TLS: select picks
// either of two ready cases, and such a query failed "no answer in time"
// half the time (32 queries each here: every one is answered).
func TestAnswerThatCameWithTheDeadlineIsTaken(t *testing.T) {
	up := startUpstream(t, nil)
	m := &udpMux{addr: up.addr, timeout: 10 * time.Second, beforeWait: endWhenAnswered(t)}
	t.Cleanup(m.close)
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	dot := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	_, err := dot.Exchange(context.Background(), clientQuery("dial.example.", false))
	require.NoError(t, err, "the connection is up before any query is held")
	dot.(*dotTransport).beforeWait = endWhenAnswered(t)
	for _, path := range []string{"udp message", "udp wire", "dot"} {
		t.Run(path, func(t *testing.T) {
			for i := range 32 {
				ctx, cancel := context.WithCancel(context.Background())
				ctx = context.WithValue(ctx, cancelKey{}, cancel)
				q := question("in-time.example.", dns.TypeA, false)
				var err error
				switch path {
				case "udp message":
					var resp *dns.Msg
					if resp, err = m.exchange(ctx, q); err == nil {
						assert.Len(t, resp.Answer, 1)
					}
				case "udp wire":
					var raw []byte
					if raw, err = m.exchangeWire(ctx, packed(q)); err == nil {
						assert.Greater(t, len(raw), 12)
					}
				default:
					var resp *dns.Msg
					if resp, err = dot.Exchange(ctx, clientQuery("in-time.example.", false)); err == nil {
						assert.Len(t, resp.Answer, 1)
					}
				}
				cancel()
				require.NoError(t, err, "query %d", i)
			}
		})
	}
}
