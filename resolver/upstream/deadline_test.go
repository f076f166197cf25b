package upstream

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ioTimeout is the error of a read or write whose deadline passed.
var ioTimeout = &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}

func TestContextErr(t *testing.T) {
	assert.NoError(t, ContextErr(context.Background()))
	assert.NoError(t, ContextErr(testnet.WithLateTimer(t, time.Minute, time.Minute)), "the deadline is to come")
	assert.ErrorIs(t, ContextErr(testnet.WithLateTimer(t, -time.Millisecond, time.Minute)), context.DeadlineExceeded,
		"the deadline passed, the timer has not fired")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, ContextErr(cancelled), context.Canceled)
}

// TestExchangeRetryingAtTheDeadlineBeforeItsTimer: a DoT or DoQ try that
// failed at the query's deadline, before the query's context was done,
// ends the exchange with the deadline's error: it is not tried again on a
// new connection, and its error is not "the connection broke". Before, a
// write that timed out at the deadline broke its connection, was tried on
// a new one, and that try's timeout came back as "the connection broke:
// write tcp ...: i/o timeout" (CI, under -race).
func TestExchangeRetryingAtTheDeadlineBeforeItsTimer(t *testing.T) {
	tests := []struct {
		name string
		err  error // what the try returns
	}{
		{"connection broken by the timeout", &brokenConnError{err: ioTimeout}},
		{"a timeout", ioTimeout},
		{"the query's deadline too near to write", context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testnet.WithLateTimer(t, -time.Millisecond, time.Minute)
			tries := 0
			_, err := exchangeRetrying(ctx, time.Minute, "dns over tls", nil, nil, func(context.Context, *wireQuery) (*dns.Msg, error) {
				tries++
				return nil, tc.err
			})
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.NotErrorAs(t, err, new(*brokenConnError))
			assert.Equal(t, 1, tries, "tried again after the query's deadline")
		})
	}
}

// TestTimeoutAtTheDeadlineBeforeItsTimerCountsNot: a TCP exchange whose
// read timed out at the query's deadline, before the query's context was
// done, is the query's end, not a failure of the upstream: its health
// records nothing, as when the context ended first. The control, a
// timeout of the upstream's own (its upstream_timeout), is recorded.
func TestTimeoutAtTheDeadlineBeforeItsTimerCountsNot(t *testing.T) {
	f := NewForwarder([]string{silentUpstream(t)}, 300*time.Millisecond, false)
	t.Cleanup(f.Close)
	u := f.upstreams[0]
	outcomes := func() uint64 { return u.health.w.Load() >> 32 }

	ctx := testnet.WithLateTimer(t, 200*time.Millisecond, time.Minute)
	_, err := f.try(ctx, question("a.example.", dns.TypeA, false), u, true)
	require.Error(t, err)
	assert.True(t, isTimeout(err), "%v", err)
	assert.Zero(t, outcomes(), "a timeout at the query's own deadline was recorded against the upstream")

	_, err = f.try(context.Background(), question("b.example.", dns.TypeA, false), u, true)
	require.Error(t, err)
	assert.True(t, isTimeout(err), "%v", err)
	assert.EqualValues(t, 1, outcomes(), "the upstream's own timeout")
}
