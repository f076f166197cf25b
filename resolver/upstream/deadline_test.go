package upstream

import (
	"context"
	"io"
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

// TestExchangeRetryingPastAnotherQuerysCutWrite: a connection broken
// because another query's frame was cut at that query's deadline (a
// *writeCutError) is no try of the queries in flight on it: they go to a
// new connection as often as that happens, until their own deadline. Any
// other broken connection is tried once more, no more. Before, a query
// whose second connection broke so returned "the connection broke: write
// tcp ...: i/o timeout" before its own deadline (CI, under -race,
// TestDoTWriteEndsAtTheQueryDeadline).
func TestExchangeRetryingPastAnotherQuerysCutWrite(t *testing.T) {
	cut := &brokenConnError{err: &writeCutError{ioTimeout}}
	broken := &brokenConnError{err: io.ErrUnexpectedEOF}
	answer := new(dns.Msg)
	tests := []struct {
		name    string
		errs    []error // what each try returns; past the last, an answer
		wantErr error   // nil: the answer
		tries   int
	}{
		{"cut three times, then answered", []error{cut, cut, cut}, nil, 4},
		{"cut, broken, cut, then answered", []error{cut, broken, cut}, nil, 4},
		{"broken twice", []error{broken, broken}, broken, 2},
		{"cut, then broken twice", []error{cut, broken, broken}, broken, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			resp, err := exchangeRetrying(context.Background(), time.Minute, "dns over tls", nil, nil, func(context.Context, *wireQuery) (*dns.Msg, error) {
				tries++
				if tries <= len(tc.errs) {
					return nil, tc.errs[tries-1]
				}
				return answer, nil
			})
			if tc.wantErr == nil {
				require.NoError(t, err)
				assert.Same(t, answer, resp)
			} else {
				assert.ErrorIs(t, err, tc.wantErr)
			}
			assert.Equal(t, tc.tries, tries)
		})
	}

	// The query whose own frame was cut ends at its deadline.
	ctx := testnet.WithLateTimer(t, -time.Millisecond, time.Minute)
	tries := 0
	_, err := exchangeRetrying(ctx, time.Minute, "dns over tls", nil, nil, func(context.Context, *wireQuery) (*dns.Msg, error) {
		tries++
		return nil, cut
	})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 1, tries)
}

// TestTimeoutAtTheDeadlineBeforeItsTimerCountsNot: a TCP exchange whose
// read timed out at the query's deadline, before the query's context was
// done, is the query's end, not a failure of the upstream: its health
// records nothing, as when the context ended first. The control, a
// timeout of the upstream's own (its upstream_timeout), is left to the
// query's end (timedOut): with no other upstream to answer it, the
// upstream's root NS query is asked, and its timeout is recorded.
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
	assert.Zero(t, outcomes(), "the upstream's own timeout waits for the query's end")
	f.unansweredQueryFailure(u, err) // as Forward does with its only upstream
	require.Eventually(t, func() bool { return outcomes() == 1 }, 5*time.Second, 10*time.Millisecond,
		"the root NS query's own timeout")
}

// TestCallerGoneAsksNoHealthCheck: with one upstream, a query whose
// client gave up before the upstream's own timeout (its context's
// deadline first) asks no root NS check of the upstream's health, on the
// message and the wire paths: its timeout says nothing of the upstream
// (callerGaveUp). The control, the upstream's own timeout, asks one.
func TestCallerGoneAsksNoHealthCheck(t *testing.T) {
	paths := map[string]func(ctx context.Context, f *Forwarder) error{
		"message": func(ctx context.Context, f *Forwarder) error {
			_, _, err := f.Forward(ctx, question("a.example.", dns.TypeA, true), false)
			return err
		},
		"wire": func(ctx context.Context, f *Forwarder) error {
			_, _, err := f.ForwardWire(ctx, packed(question("a.example.", dns.TypeA, true)))
			return err
		},
	}
	for name, forward := range paths {
		t.Run(name, func(t *testing.T) {
			f := NewForwarder([]string{silentUpstream(t)}, 300*time.Millisecond, false)
			t.Cleanup(f.Close)
			u := f.upstreams[0]

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			require.Error(t, forward(ctx, f))
			assert.Zero(t, u.checked.Load(), "a check was asked for a client that had gone")

			require.Error(t, forward(context.Background(), f))
			assert.NotZero(t, u.checked.Load(), "the upstream's own timeout asks a check")
		})
	}
}
