package upstream

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedSilent is a UDP upstream that never answers and closes asked at
// the first query it reads that is not a probe of the root.
func gatedSilent(t *testing.T) (addr string, asked chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	asked = make(chan struct{})
	var once sync.Once
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) == nil && len(m.Question) == 1 && m.Question[0].Name != "." {
				once.Do(func() { close(asked) })
			}
		}
	}()
	return pc.LocalAddr().String(), asked
}

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
			bAddr, bAsked := gatedSilent(t)
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
