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

// TestForwardWireNoWireUpstream: ForwardWire with an upstream that takes
// no query in wire form (DoT here) returns ErrNoWire, having sent nothing
// to the plain one before it: the caller forwards a message instead.
func TestForwardWireNoWireUpstream(t *testing.T) {
	var asked atomic.Int64
	plain := startUpstreamOn(t, "127.0.185.6", countingAnswer(&asked))
	f := NewForwarder([]string{plain.addr, "tls://127.0.185.6:853#dns.example.net"}, time.Second, false)
	defer f.Close()
	a, from, err := f.ForwardWire(context.Background(), wireQuestion("nowire.example.org.", dns.TypeA))
	require.ErrorIs(t, err, ErrNoWire)
	assert.Empty(t, from)
	assert.Equal(t, WireAnswer{}, a)
	assert.Zero(t, asked.Load(), "nothing sent")
	letGo(t, f)
}

// TestForwardWireRetired: ForwardWire on a Forwarder retired with a
// successor (a query that loaded the old snapshot just before a reload)
// is answered by the successor; with none, it fails as closed.
func TestForwardWireRetired(t *testing.T) {
	up := startUpstreamOn(t, "127.0.185.6", nil)
	next := NewForwarder([]string{up.addr}, time.Second, false)
	defer next.Close()
	f := NewForwarder([]string{up.addr}, time.Second, false)
	f.Retire(next)
	a, from, err := f.ForwardWire(context.Background(), wireQuestion("retired.example.org.", dns.TypeA))
	require.NoError(t, err, "asked by the successor")
	assert.Equal(t, up.addr, from)
	assert.NotNil(t, a.Raw)

	closed := NewForwarder([]string{up.addr}, time.Second, false)
	closed.Close()
	_, _, err = closed.ForwardWire(context.Background(), wireQuestion("closed.example.org.", dns.TypeA))
	assert.ErrorIs(t, err, errClosed)
}
