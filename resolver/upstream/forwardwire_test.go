package upstream

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
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

// TestWireUnreadServfailFailsOver: a SERVFAIL over UDP with a record
// miekg/dns does not read is, on the wire path as on the message path
// (TestUnreadFailureKeepsItsHeader), the SERVFAIL it says (usableWire:
// asReadable), with its header and question kept, and is failed over
// from: not the upstream's whole answer.
func TestWireUnreadServfailFailsOver(t *testing.T) {
	unreadServfail := func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			return defaultAnswer(w, r)
		}
		b := unreadHintAnswer(t, r)
		b[3] = b[3]&^0xF | dns.RcodeServerFailure
		_, _ = w.Write(b)
		return nil
	}
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started %v", started), func(t *testing.T) {
			up := startUpstreamOn(t, "127.0.185.7", unreadServfail)
			f := NewForwarder([]string{up.addr}, 2*time.Second, false)
			defer f.Close()
			q := wireQuestion("a.svcb.example.", dns.TypeHTTPS)
			r, _ := askWire(t, f, q, started)
			var ue *UpstreamError
			require.ErrorAs(t, r.err, &ue)
			assert.Equal(t, "rcode_servfail", ue.Causes())
			assert.Nil(t, ue.Unread, "no whole answer")
			require.NotNil(t, ue.Answer, "the header and question kept")
			assert.Equal(t, dns.RcodeServerFailure, ue.Answer.Rcode)
			require.Len(t, ue.Answer.Question, 1)
			assert.Equal(t, "a.svcb.example.", ue.Answer.Question[0].Name)

			next := startUpstreamOn(t, "127.0.185.7", nil)
			g := NewForwarder([]string{up.addr, next.addr}, 2*time.Second, false)
			defer g.Close()
			r, _ = askWire(t, g, wireQuestion("a.svcb.example.", dns.TypeHTTPS), started)
			require.NoError(t, r.err, "failed over")
			assert.Equal(t, next.addr, r.from)
		})
	}
}

// TestWireSocketNotMade: a wire query whose UDP socket cannot be made
// (udpMux.register: the dial fails) fails with the dial's error, started
// or forwarded, and is failed over from: it is never sent on no socket.
func TestWireSocketNotMade(t *testing.T) {
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started %v", started), func(t *testing.T) {
			up := startUpstreamOn(t, "127.0.185.8", nil)
			f := NewForwarder([]string{up.addr}, time.Second, false)
			defer f.Close()
			f.upstreams[0].t.(*Plain).mux.addr = "127.0.185.8:99999" // no such port: the dial fails
			r, _ := askWire(t, f, wireQuestion("nosocket.example.org.", dns.TypeA), started)
			var ue *UpstreamError
			require.ErrorAs(t, r.err, &ue)
			assert.ErrorContains(t, r.err, "invalid port")
			assert.Empty(t, r.from)

			next := startUpstreamOn(t, "127.0.185.8", nil)
			g := NewForwarder([]string{up.addr, next.addr}, time.Second, false)
			defer g.Close()
			g.upstreams[0].t.(*Plain).mux.addr = "127.0.185.8:99999"
			r, _ = askWire(t, g, wireQuestion("nosocket.example.org.", dns.TypeA), started)
			require.NoError(t, r.err, "failed over")
			assert.Equal(t, next.addr, r.from)
		})
	}
}

// TestWireStraysWhileTimingOutNotAskedOverTCP: a wire query, started or
// forwarded, that gets only datagrams no query can take (wrong IDs) times
// out, and is not asked again over TCP once its whole timeout is spent
// (checkUDPWire), as on the message path
// (TestStraysWhileTimingOutNotAskedOverTCP): only an unusable answer that
// ended the wait at once is.
func TestWireStraysWhileTimingOutNotAskedOverTCP(t *testing.T) {
	pc, ln, err := testnet.ListenBothOn("127.0.185.9")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close(); ln.Close() })
	var overTCP atomic.Int32
	tcp := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		overTCP.Add(1)
		_ = w.WriteMsg(defaultAnswer(w, r))
	})}
	testnet.Serve(t, tcp)
	testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil || q.Question[0].Name == "." {
			return
		}
		m := defaultAnswer(nil, q)
		m.Id ^= 0x8000 // no query's
		if a, err := m.Pack(); err == nil {
			_, _ = pc.WriteTo(a, from)
		}
	})
	f := NewForwarder([]string{pc.LocalAddr().String()}, 300*time.Millisecond, false)
	defer f.Close()
	for _, started := range []bool{false, true} {
		r, _ := askWire(t, f, wireQuestion("stray.example.org.", dns.TypeA), started)
		require.Error(t, r.err, "started %v: answered over TCP", started)
		assert.ErrorContains(t, r.err, "no answer in time", "started %v", started)
		assert.Equal(t, "wrong_id", causes(r.err), "started %v: naming the strays", started)
		assert.Zero(t, overTCP.Load(), "started %v: not asked again over TCP after its timeout", started)
	}
}

// TestWireNamePointingIntoHeaderIsMalformed: a UDP answer whose record
// owner is a compression pointer into the header (where the ID is) is
// malformed on the wire path (checkWire: dnswire.PointsIntoHeader), not
// unpacked as a message that reads the ID as a name (miekg/dns does: with
// the ID 0 it is the root) and taken: the client would read the same
// octets under its own ID as another name. No TCP is listening: the retry
// over TCP fails too.
func TestWireNamePointingIntoHeaderIsMalformed(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.185.10:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	testnet.EachDatagram(pc, func(q []byte, from net.Addr) {
		qq, ok := dnswire.ReadQuestion(q)
		if !ok {
			return
		}
		b := append([]byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, q[dnswire.HeaderLen:qq.End]...)
		// <pointer to 0, the ID> A 192.0.2.66
		b = append(b, 0xC0, 0x00, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 66)
		_, _ = pc.WriteTo(b, from)
	})
	f := NewForwarder([]string{pc.LocalAddr().String()}, time.Second, false)
	defer f.Close()
	for _, started := range []bool{false, true} {
		q := wireQuestion("pointer.example.org.", dns.TypeA)
		binary.BigEndian.PutUint16(q, 0) // its own ID, back in the answer when it is checked: the root name
		r, _ := askWire(t, f, q, started)
		require.Error(t, r.err, "started %v: the answer was taken: %v", started, r.a.Msg)
		assert.ErrorContains(t, r.err, "a name points into the header", "started %v", started)
	}
}

// TestWireTCPRetryHasFreshID: a wire query asked again over TCP after a
// truncated UDP answer goes with a fresh ID (queryMessage, RFC 5452 §4.3),
// not the query's own, which the wire path packs as a constant; the
// answer still comes back with the query's own.
func TestWireTCPRetryHasFreshID(t *testing.T) {
	var tcpIDs sync.Map
	up := startUpstreamOn(t, "127.0.185.11", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
			tcpIDs.Store(r.Id, true)
		}
		return bigAnswer(w, r)
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	defer f.Close()
	for _, started := range []bool{false, true} {
		r, _ := askWire(t, f, wireQuestion("big.example.org.", dns.TypeTXT), started)
		require.NoError(t, r.err)
		require.NotNil(t, r.a.Msg, "started %v: asked again over TCP", started)
		assert.Equal(t, uint16(0x1234), r.a.Msg.Id, "started %v: the query's own ID", started)
	}
	n := 0
	tcpIDs.Range(func(id, _ any) bool {
		n++
		assert.NotEqual(t, uint16(0x1234), id, "a TCP query sent with the query's own ID")
		return true
	})
	assert.NotZero(t, n, "asked over TCP")
}

// TestWireUnusableDatagramCountedWhenTCPAnswers: a wire query whose UDP
// answer is unusable at once (another question: ErrAnswerMismatch) is
// asked again over TCP, and when TCP answers, the upstream's misbehaving
// datagram is still counted (dnsfence_upstream_errors_total, kind
// mismatch), as on the message path: checkUDPWire hands the UDP error on
// to exchangeTCP.
func TestWireUnusableDatagramCountedWhenTCPAnswers(t *testing.T) {
	up := startUpstreamOn(t, "127.0.185.12", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp && r.Question[0].Name != "." {
			m.Question[0].Name = "another.example.org."
		}
		return m
	})
	for _, started := range []bool{false, true} {
		t.Run(fmt.Sprintf("started %v", started), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			f, err := New([]string{up.addr}, Options{Timeout: 2 * time.Second, Metrics: NewMetrics(reg)})
			require.NoError(t, err)
			defer f.Close()
			r, _ := askWire(t, f, wireQuestion("mismatch.example.org.", dns.TypeA), started)
			require.NoError(t, r.err)
			require.NotNil(t, r.a.Msg, "answered over TCP")
			assert.Equal(t, map[string]float64{kindMismatch: 1},
				upstreamCounts(t, reg, "dnsfence_upstream_errors_total", up.addr, "kind"), "the datagram counted")
		})
	}
}
