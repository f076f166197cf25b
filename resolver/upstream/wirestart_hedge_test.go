package upstream

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHedgingStopsOnceAnswered: with three upstreams, a query whose first
// try answers after the hedge to the second was sent (and before the
// second answers) is done: nothing more is sent, for ForwardWire and for a
// started query alike (whose hedges went on to the third upstream before
// settle stopped them).
func TestHedgingStopsOnceAnswered(t *testing.T) {
	for _, started := range []bool{false, true} {
		name := "ForwardWire"
		if started {
			name = "StartWire"
		}
		t.Run(name, func(t *testing.T) {
			bAddr, bAsked := askedSilentUpstream(t)
			a := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name != "." {
					<-bAsked // answers only once the hedge to b is out
				}
				return defaultAnswer(w, r)
			})
			var third atomic.Int64
			c := startUpstream(t, countingAnswer(&third))
			f := NewForwarder([]string{a.addr, bAddr, c.addr}, 2*time.Second, false)
			defer f.Close()
			q := wireQuestion("hedge-after.example.org.", dns.TypeA)
			var r wireResult
			if started {
				then := make(thenChan, 2)
				f.StartWire(q, then, nil)
				r = then.wait(t)
			} else {
				var err error
				r.a, r.from, err = f.ForwardWire(context.Background(), q)
				r.err = err
			}
			require.NoError(t, r.err)
			assert.Equal(t, a.addr, r.from)
			time.Sleep(4 * hedgeFloor)
			assert.Zero(t, third.Load(), "the query was answered by the first upstream: the third must not be asked")
		})
	}
}
