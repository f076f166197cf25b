package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdUntilBothReady makes every query that starts waiting for its answer
// wait until the answer has come and its context has ended, as a query
// whose goroutine waited for a CPU past its deadline finds them, until
// the test ends.
func holdUntilBothReady(t *testing.T) {
	t.Helper()
	prev := beforeAnswerWait
	beforeAnswerWait = func(ctx context.Context, answer <-chan []byte) {
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
			if len(answer) > 0 && ctx.Err() != nil {
				return
			}
		}
		t.Error("the answer and the deadline did not both come")
	}
	t.Cleanup(func() { beforeAnswerWait = prev })
}

// TestAnswerThatCameWithTheDeadlineIsTaken: an answer already read when
// the query's deadline has passed too is the query's, on UDP (both the
// message and the wire path's exchange) and on DNS over TLS: select picks
// either of two ready cases, and such a query failed "no answer in time"
// half the time (32 queries each here: every one is answered).
func TestAnswerThatCameWithTheDeadlineIsTaken(t *testing.T) {
	holdUntilBothReady(t)
	up := startUpstream(t, nil)
	m := &udpMux{addr: up.addr, timeout: 10 * time.Second}
	t.Cleanup(m.close)
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	dot := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	for _, path := range []string{"udp message", "udp wire", "dot"} {
		t.Run(path, func(t *testing.T) {
			for i := range 32 {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
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
