package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestResendBacksOff: the sweep sends an unanswered query again at its
// resend delay, then after twice and four times as long, at most
// maxResends times and never past its deadline; each time from a copy of
// the datagram, which its query may reuse once answered.
func TestResendBacksOff(t *testing.T) {
	const delay = 150 * time.Millisecond
	for _, tc := range []struct {
		timeout time.Duration
		resends []time.Duration // when each resend is due, from registration
	}{
		{2 * time.Second, []time.Duration{delay, 3 * delay, 7 * delay}},  // 150, 450, 1050 ms: maxResends
		{time.Second, []time.Duration{delay, 3 * delay}},                 // the next, at 1050 ms, is past the deadline
		{400 * time.Millisecond, []time.Duration{delay}},                 // the next, at 450 ms, is past the deadline
		{10 * time.Second, []time.Duration{delay, 3 * delay, 7 * delay}}, // maxResends, with time left
	} {
		t.Run(tc.timeout.String(), func(t *testing.T) {
			count := 0
			s := &upstreamSocket{timeout: tc.timeout, pending: map[uint16]*waiter{},
				resend: &resendPolicy{delay: func() (time.Duration, bool) { return delay, true }, count: func() { count++ }}}
			w := &waiter{answer: make(chan []byte, 1)}
			packet := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
			s.mu.Lock()
			s.wait(0x1234, w, packet, time.Now())
			s.mu.Unlock()
			born := w.deadline.Add(-tc.timeout)

			var sent []time.Duration
			for at := time.Duration(0); at < tc.timeout; at += time.Millisecond {
				late, again := s.late(born.Add(at))
				require.Empty(t, late, "not late before its deadline")
				for _, q := range again {
					assert.Equal(t, uint16(0x1234), q.id)
					assert.Same(t, w, q.w)
					assert.Equal(t, packet, q.b)
					q.b[2] = 0xff // the copy's, not the query's
					assert.Equal(t, byte(1), packet[2])
					sent = append(sent, at)
				}
			}
			assert.Equal(t, tc.resends, sent)
			assert.LessOrEqual(t, len(sent), maxResends)
			late, again := s.late(w.deadline)
			assert.Len(t, late, 1, "late at its deadline")
			assert.Empty(t, again, "a late query is not sent again")
		})
	}

	t.Run("no policy: sent once", func(t *testing.T) {
		s := &upstreamSocket{timeout: time.Second, pending: map[uint16]*waiter{}}
		w := &waiter{answer: make(chan []byte, 1)}
		s.mu.Lock()
		s.wait(1, w, []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, time.Now())
		s.mu.Unlock()
		_, again := s.late(w.deadline.Add(-time.Millisecond))
		assert.Empty(t, again)
		assert.Nil(t, w.packet, "no datagram kept")
	})
}

// questionLog records the IDs each question came with, in order.
type questionLog struct {
	mu   sync.Mutex
	seen map[dns.Question][]uint16
}

func newQuestionLog() *questionLog { return &questionLog{seen: map[dns.Question][]uint16{}} }

// record logs r and returns how many datagrams its question has come in,
// r's included.
func (l *questionLog) record(r *dns.Msg) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := r.Question[0]
	l.seen[q] = append(l.seen[q], r.Id)
	return len(l.seen[q])
}

// ids are the IDs the A question for name came with.
func (l *questionLog) ids(name string) []uint16 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[dns.Question{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}]
}

// dropFirst answers every query but the first datagram of each question:
// an upstream whose first answer, or query, was lost on the way.
func (l *questionLog) dropFirst(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	if l.record(r) == 1 {
		return nil
	}
	return defaultAnswer(w, r)
}

// TestResendRecoversLostDatagram: with one plain upstream, a query whose
// first datagram goes unanswered is sent again, with the same ID, after
// the resend delay, and answered well before its timeout: by Forward (a
// message), ForwardWire and StartWire. Each resend is counted, reason
// resend; a query answered in time is sent once.
func TestResendRecoversLostDatagram(t *testing.T) {
	d := newQuestionLog()
	up := startUpstream(t, d.dropFirst)
	reg := prometheus.NewRegistry()
	f, err := New([]string{up.addr}, Options{Timeout: 5 * time.Second, Metrics: NewMetrics(reg)})
	require.NoError(t, err)
	defer f.Close()

	asks := map[string]func(name string) error{
		"Forward": func(name string) error {
			r, _, err := f.Forward(context.Background(), question(name, dns.TypeA, true), false)
			if err == nil && len(r.Answer) != 1 {
				err = fmt.Errorf("answer: %v", r)
			}
			return err
		},
		"ForwardWire": func(name string) error {
			q := wireQuestion(name, dns.TypeA)
			a, _, err := f.ForwardWire(context.Background(), q)
			if err == nil && binary.BigEndian.Uint16(a.Raw) != 0x1234 {
				err = fmt.Errorf("answer ID %#x", binary.BigEndian.Uint16(a.Raw))
			}
			return err
		},
		"StartWire": func(name string) error {
			then := make(thenChan, 2)
			f.StartWire(wireQuestion(name, dns.TypeA), then, nil)
			r := then.wait(t)
			if r.err == nil && !bytes.Equal(r.a.Raw[:2], []byte{0x12, 0x34}) {
				r.err = fmt.Errorf("answer ID %x", r.a.Raw[:2])
			}
			return r.err
		},
	}
	for _, path := range []string{"Forward", "ForwardWire", "StartWire"} {
		t.Run(path, func(t *testing.T) {
			name := path + ".resend.example.org."
			start := time.Now()
			require.NoError(t, asks[path](name))
			took := time.Since(start)
			assert.GreaterOrEqual(t, took, hedgeFloor, "answered by the resend, which waits its delay")
			ids := d.ids(name)
			require.Len(t, ids, 2, "sent twice")
			assert.Equal(t, ids[0], ids[1], "a resend has the first datagram's ID")
		})
	}
	assert.Equal(t, map[string]float64{retryResend: 3}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", up.addr, "reason"))

	// A second datagram of each question is answered at once: sent once.
	for _, path := range []string{"Forward", "ForwardWire", "StartWire"} {
		name := path + ".resend.example.org."
		require.NoError(t, asks[path](name))
		assert.Len(t, d.ids(name), 3, "%s: one more datagram", path)
	}
	time.Sleep(2 * hedgeFloor) // a resend, if one were due, has been sent
	for _, path := range []string{"Forward", "ForwardWire", "StartWire"} {
		assert.Len(t, d.ids(path+".resend.example.org."), 3, "%s: answered in time, not sent again", path)
	}
	assert.Equal(t, map[string]float64{retryResend: 3}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", up.addr, "reason"))
}

// TestResendAnswersBothTaken: when both the first datagram and the resend
// are answered, the first answer is the query's and the other is dropped
// as late: not a stray, so a later timeout on the socket does not report
// wrong IDs.
func TestResendAnswersBothTaken(t *testing.T) {
	log := newQuestionLog()
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if log.record(r) == 1 {
			time.Sleep(hedgeFloor * 2) // answered, after the resend went out
		}
		return defaultAnswer(w, r)
	})
	f := NewForwarder([]string{up.addr}, 5*time.Second, false)
	defer f.Close()
	q := wireQuestion("both.example.org.", dns.TypeA)
	_, _, err := f.ForwardWire(context.Background(), q)
	require.NoError(t, err)
	p := f.upstreams[0].t.(*Plain)
	require.Eventually(t, func() bool { return len(log.ids("both.example.org.")) == 2 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(hedgeFloor * 2) // the first datagram's answer has come back
	p.mux.mu.Lock()
	s := p.mux.cur
	p.mux.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Zero(t, s.strays, "the second answer is late, not a stray")
	assert.Empty(t, s.pending)
}

// TestResendOnlyWithoutAnotherUpUpstream: with a second upstream up, a
// slow try is hedged to it (forward.go), not sent again to the same
// upstream; with the second one down, it is sent again.
func TestResendOnlyWithoutAnotherUpUpstream(t *testing.T) {
	d := newQuestionLog()
	a := startUpstream(t, d.dropFirst)
	b := startUpstream(t, nil)
	reg := prometheus.NewRegistry()
	f, err := New([]string{a.addr, b.addr}, Options{Timeout: 2 * time.Second, Metrics: NewMetrics(reg)})
	require.NoError(t, err)
	defer f.Close()
	ask := func(name string) wireResult {
		then := make(thenChan, 2)
		f.StartWire(wireQuestion(name, dns.TypeA), then, nil)
		return then.wait(t)
	}

	r := ask("two.example.org.")
	require.NoError(t, r.err)
	assert.Equal(t, b.addr, r.from, "hedged to the second upstream")
	time.Sleep(3 * hedgeFloor) // past when a resend would have gone
	assert.Len(t, d.ids("two.example.org."), 1, "the first upstream was asked once")
	assert.Empty(t, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", a.addr, "reason"))

	f.upstreams[1].down.Store(true) // as its health would judge it after failures
	r = ask("one-up.example.org.")
	require.NoError(t, r.err)
	assert.Equal(t, a.addr, r.from, "answered by the resend to the one upstream up")
	ids := d.ids("one-up.example.org.")
	require.Len(t, ids, 2)
	assert.Equal(t, ids[0], ids[1])
	assert.Equal(t, map[string]float64{retryResend: 1}, upstreamCounts(t, reg, "dnsfence_upstream_retries_total", a.addr, "reason"))
}

// TestResendBudget: one sweep sends again at most a fifth of the queries
// waiting on the socket (never fewer than retryFloor); the others go in
// the next sweeps, each once.
func TestResendBudget(t *testing.T) {
	const n = 200
	s := &upstreamSocket{timeout: 2 * time.Second, pending: map[uint16]*waiter{},
		resend: &resendPolicy{delay: func() (time.Duration, bool) { return hedgeFloor, true }, count: func() {}}}
	s.mu.Lock()
	for id := range uint16(n) {
		s.wait(id, &waiter{answer: make(chan []byte, 1)}, []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, time.Now())
	}
	s.mu.Unlock()
	due := time.Now().Add(hedgeFloor) // every one due: registered before now
	sent := map[uint16]int{}
	for sweep := 0; len(sent) < n; sweep++ {
		require.Less(t, sweep, n/(n/retryShare)+1, "every query sent again within the sweeps the budget allows")
		_, again := s.late(due)
		assert.Len(t, again, n/retryShare, "a fifth of the %d waiting", n)
		for _, q := range again {
			sent[q.id]++
		}
	}
	for id, times := range sent {
		assert.Equal(t, 1, times, "query %d sent again once", id)
	}

	small := &upstreamSocket{timeout: 2 * time.Second, pending: map[uint16]*waiter{}, resend: s.resend}
	small.mu.Lock()
	for id := range uint16(10) {
		small.wait(id, &waiter{answer: make(chan []byte, 1)}, []byte{0, byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, time.Now())
	}
	small.mu.Unlock()
	_, again := small.late(time.Now().Add(hedgeFloor)) // due: registered before now
	assert.Len(t, again, 10, "fewer than retryFloor waiting: all of them")
}

// TestNoResendToADownUpstream: an upstream judged down is not sent more
// datagrams: whether lost or overloaded, more would not help.
func TestNoResendToADownUpstream(t *testing.T) {
	f := NewForwarder([]string{silentUpstream(t)}, time.Second, false)
	defer f.Close()
	u := f.upstreams[0]
	_, ok := f.resendDelay(u)
	assert.True(t, ok, "the only upstream, up")
	u.down.Store(true)
	_, ok = f.resendDelay(u)
	assert.False(t, ok, "the only upstream, down")
}

// TestResendToAClosedPortFailsAtOnce: an upstream that read the query and
// then closed its port draws an ICMP port unreachable for the resend; the
// query then fails at once with it, rather than waiting out its timeout.
func TestResendToAClosedPortFailsAtOnce(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() {
		buf := make([]byte, 65535)
		_, _, _ = pc.ReadFrom(buf) // the query, unanswered
		pc.Close()
	}()
	const timeout = 5 * time.Second
	f := NewForwarder([]string{pc.LocalAddr().String()}, timeout, false)
	defer f.Close()
	start := time.Now()
	_, _, err = f.ForwardWire(context.Background(), wireQuestion("closed.example.org.", dns.TypeA))
	took := time.Since(start)
	var ue *UpstreamError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, kindNetwork, ue.Causes())
	assert.Contains(t, err.Error(), syscall.ECONNREFUSED.Error())
	assert.GreaterOrEqual(t, took, hedgeFloor, "after the resend")
	assert.Less(t, took, timeout/2, "not the whole timeout")
}
