package upstream

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTruncatedUDPAnswerAskedOverTCP: a UDP answer with TC set (the
// upstream's 5,666-octet answer cut to the 1,232 octets the query
// advertised) is asked again over TCP on the message path (Forward,
// Plain.Exchange), and the whole answer is returned, not the truncated
// one (RFC 1035 §4.2.2, RFC 7766 §5). Only the wire path was tested.
func TestTruncatedUDPAnswerAskedOverTCP(t *testing.T) {
	var overTCP atomic.Int32
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
			overTCP.Add(1)
		}
		return bigAnswer(w, r)
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)

	resp, from, err := f.Forward(context.Background(), clientQuery("big.example.", false), false)
	require.NoError(t, err)
	assert.Equal(t, up.addr, from)
	assert.False(t, resp.Truncated, "the whole answer, over TCP")
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, 5666, bigAnswer(nil, clientQuery("big.example.", false)).Len(), "the answer asked for")
	assert.Equal(t, int32(1), overTCP.Load(), "asked over TCP once, after the truncated UDP answer")
	assert.Greater(t, resp.Len(), 4096, "more than any UDP answer")
}

// TestStraysWhileTimingOutNotAskedOverTCP: a UDP query that gets only
// datagrams no query can take (wrong IDs: an off-path spoofer's, or a
// broken upstream's) times out as a timeout does; it is not asked again
// over TCP once its whole timeout is spent, which would have a spoofer
// double every query's wait and move it to the connection it chose.
// Only an unusable answer that ended the wait at once is asked over TCP
// (Plain.exchange).
func TestStraysWhileTimingOutNotAskedOverTCP(t *testing.T) {
	pc, ln := listenBoth(t)
	t.Cleanup(func() { pc.Close(); ln.Close() })
	var overTCP atomic.Int32
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		overTCP.Add(1)
		_ = w.WriteMsg(defaultAnswer(w, r))
	})}
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() { _ = tcp.Shutdown() })
	testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil {
			return
		}
		m := defaultAnswer(nil, q)
		m.Id ^= 0x8000 // no query's
		if a, err := m.Pack(); err == nil {
			_, _ = pc.WriteTo(a, from)
		}
	})
	addr := pc.LocalAddr().String()
	p := NewPlain(addr, Options{Timeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = p.Close() })

	_, err := p.Exchange(context.Background(), clientQuery("stray.example.", false))
	require.Error(t, err)
	assert.True(t, isTimeout(err), "a timeout: %v", err)
	assert.ErrorIs(t, err, ErrAnswerWrongID, "naming the strays: %v", err)
	assert.Zero(t, overTCP.Load(), "not asked again over TCP after its timeout")
}
