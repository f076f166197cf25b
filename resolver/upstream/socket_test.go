package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// muxReading is a mux of a 5 s timeout whose socket, connected to addr,
// is read on the batched path (recvmmsg) when batched, else one datagram
// a read (the path of systems without batched reads).
func muxReading(t *testing.T, addr string, batched bool) *udpMux {
	t.Helper()
	c, err := net.Dial("udp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	s := &upstreamSocket{conn: c, born: time.Now(), timeout: 5 * time.Second, pending: map[uint16]*waiter{}}
	if batched {
		s.batch = listen.NewBatchConn(c.(*net.UDPConn))
	}
	go s.read()
	return &udpMux{addr: addr, timeout: 5 * time.Second, cur: s}
}

// TestUpstreamSocketTooBigDatagram: the mux's reader gives a datagram over
// its buffer to the query with its ID as ErrAnswerTooBig at once, on the
// batched (recvmmsg, MSG_TRUNC) path and on the one-datagram path (read
// length over the buffer).
func TestUpstreamSocketTooBigDatagram(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			require.NoError(t, err)
			t.Cleanup(func() { pc.Close() })
			go func() {
				buf := make([]byte, 512)
				n, from, err := pc.ReadFrom(buf)
				if err != nil || n < 12 {
					return
				}
				big := make([]byte, upstreamBuf+1)
				copy(big, buf[:2]) // its ID
				_, _ = pc.WriteTo(big, from)
			}()
			m := muxReading(t, pc.LocalAddr().String(), batched)
			start := time.Now()
			_, err = m.exchange(context.Background(), question("big.example.org.", dns.TypeA, false))
			assert.ErrorIs(t, err, ErrAnswerTooBig)
			assert.Less(t, time.Since(start), time.Second)
		})
	}
}

// TestUpstreamSocketRenewalLosesNoQuery runs many concurrent exchanges over
// one upstream's shared socket while it is renewed every socketMaxQueries
// queries: a query picked for a socket must never see it closed under it.
func TestUpstreamSocketRenewalLosesNoQuery(t *testing.T) {
	up := startUpstream(t, nil)
	m := &udpMux{addr: up.addr, timeout: 5 * time.Second}
	defer m.close()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := m.exchange(ctx, question("renew.example.org.", dns.TypeA, false))
				cancel()
				if err != nil || len(r.Answer) != 1 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	assert.Zero(t, failed.Load(), "3,000 exchanges across three socket renewals")
}

func TestClosedForwarderReleasesItsSockets(t *testing.T) {
	up := startUpstream(t, nil)
	before := runtime.NumGoroutine()
	for i := 0; i < 10; i++ {
		f := NewForwarder([]string{up.addr}, time.Second, true)
		_, _, err := f.Forward(context.Background(), question("x.example.org.", dns.TypeA, false), false)
		require.NoError(t, err)
		f.Close()
	}
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+1 }, 5*time.Second, 10*time.Millisecond,
		"every replaced forwarder's socket reader ends")
}

// TestClosedMuxSocketsClose: a query that reaches an upstream's sockets after
// the Forwarder was closed (an old configuration's, during a reload) gets a
// socket of its own, which closes once the query is done with it.
func TestClosedMuxSocketsClose(t *testing.T) {
	up := startUpstream(t, nil)
	m := &udpMux{addr: up.addr, timeout: 5 * time.Second}
	m.close()
	r, err := m.exchange(context.Background(), question("late.example.org.", dns.TypeA, false))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Nil(t, m.cur, "no socket is kept for later queries")

	w := &waiter{answer: make(chan []byte, 1)}
	s, _, err := m.register(w, make([]byte, 12), time.Now())
	require.NoError(t, err)
	assert.Nil(t, m.cur)
	s.forget(w.id, w, nil)
	_, err = s.conn.Write([]byte{0})
	assert.ErrorIs(t, err, net.ErrClosed, "closed once nothing waits on it")
}

// TestExpireEndsOnlyTheLateRegistration: expire collects a late query,
// then its answer comes before expire ends it; the exchange takes the
// answer and its waiter, pooled, is registered again by the next wire
// exchange, here under the same ID on the same socket. expire must then
// leave the new registration alone: ending it would fail a fresh query
// with "no answer in time" at once.
func TestExpireEndsOnlyTheLateRegistration(t *testing.T) {
	s := &upstreamSocket{timeout: time.Second, pending: map[uint16]*waiter{}}
	w := &waiter{answer: make(chan []byte, 1)}
	const id = 0x1234
	s.mu.Lock()
	s.wait(id, w, nil, time.Now())
	s.mu.Unlock()

	late, _ := s.late(time.Now().Add(time.Hour)) // expire's first half: w is late
	require.Len(t, late, 1)
	answer := []byte{0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}
	s.deliver(answer, false, nil) // the answer comes meanwhile
	select {
	case b, ok := <-w.answer:
		require.True(t, ok)
		assert.Equal(t, answer, b)
	default:
		require.Fail(t, "the answer was not delivered")
	}
	s.mu.Lock()
	s.wait(id, w, nil, time.Now()) // the pooled waiter's next exchange
	s.mu.Unlock()
	for _, q := range late { // expire's second half
		s.end(q.id, q.w, &q.gen, q.err, nil)
	}

	stillWaits(t, s, id, w)
}

// TestSendFailureEndsOnlyItsRegistration: a query answered (by a spoofed
// or early answer) before its queued datagram is sent, whose pooled waiter
// is then registered again under the same ID, is left waiting when that
// old datagram's send fails: the failure is the old registration's.
func TestSendFailureEndsOnlyItsRegistration(t *testing.T) {
	s := &upstreamSocket{timeout: time.Second, pending: map[uint16]*waiter{}}
	w := &waiter{answer: make(chan []byte, 1)}
	const id = 0x4321
	q := []byte{0x43, 0x21, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}
	s.mu.Lock()
	s.wait(id, w, q, time.Now())
	s.enqueue(id, w, q)
	queued := s.queue[0]
	s.mu.Unlock()

	answer := []byte{0x43, 0x21, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}
	s.deliver(answer, false, nil) // answered before its datagram went out
	<-w.answer
	w.answer = make(chan []byte, 1)
	s.mu.Lock()
	s.wait(id, w, q, time.Now()) // the pooled waiter's next exchange, same ID
	s.mu.Unlock()

	assert.False(t, s.sendFailed(queued, errors.New("message too long")))
	stillWaits(t, s, id, w)

	// The registration that queued it does end on a failed send.
	s.mu.Lock()
	s.enqueue(id, w, q)
	queued = s.queue[len(s.queue)-1]
	s.mu.Unlock()
	assert.False(t, s.sendFailed(queued, errors.New("message too long")))
	_, ok := <-w.answer
	assert.False(t, ok)
	assert.EqualError(t, w.err, "message too long")
}

// stillWaits checks that w is registered under id on s, and not ended.
func stillWaits(t *testing.T, s *upstreamSocket, id uint16, w *waiter) {
	t.Helper()
	s.mu.Lock()
	assert.Same(t, w, s.pending[id], "the new registration still waits")
	s.mu.Unlock()
	select {
	case _, ok := <-w.answer:
		assert.Fail(t, "the new registration was ended", "open %v, err %v", ok, w.err)
	default:
	}
}

// TestPlainWithoutResendTimesOutOnTime: a Plain made alone (NewPlain, as
// lookupThrough makes one), which sends a query once (no resendPolicy),
// ends the wait of a query its silent upstream never answers about its
// timeout after sending it, though the caller's context has no deadline:
// its socket's reader sweeps every tenth of the timeout (sweepEvery).
func TestPlainWithoutResendTimesOutOnTime(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, asked := askedSilentUpstream(t)
	p := NewPlain(addr, Options{Timeout: timeout})
	t.Cleanup(func() { _ = p.Close() })
	start := time.Now()
	_, err := p.Exchange(context.Background(), question("silent.example.", dns.TypeA, true))
	elapsed := time.Since(start)
	<-asked
	assert.ErrorIs(t, err, errNoAnswer)
	assert.GreaterOrEqual(t, elapsed, timeout)
	assert.Less(t, elapsed, timeout+timeout/10+400*time.Millisecond, "the wait outlived its timeout by more than a sweep")
}

// TestUpstreamSocketReceiveBuffer: each upstream socket asks the kernel
// for upstreamReceiveBuffer octets of receive buffer, which Linux caps at
// net.core.rmem_max and doubles for its bookkeeping (socket(7),
// SO_RCVBUF): up to socketMaxQueries answers may arrive on it at once.
func TestUpstreamSocketReceiveBuffer(t *testing.T) {
	data, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skipf("no net.core.rmem_max here: %v", err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	m := &udpMux{addr: silentUpstream(t), timeout: time.Second}
	s, err := newUpstreamSocket(m)
	require.NoError(t, err)
	t.Cleanup(s.retire)
	raw, err := s.conn.(*net.UDPConn).SyscallConn()
	require.NoError(t, err)
	var size int
	var sockErr error
	require.NoError(t, raw.Control(func(fd uintptr) { size, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }))
	require.NoError(t, sockErr)
	assert.GreaterOrEqual(t, size, 2*min(upstreamReceiveBuffer, rmemMax))
}

// TestRenewedSocketCloses: a socket replaced for its age (socketFor) is
// retired, and with no query waiting on it closes at once, its source
// port released; the next query goes out on the new socket.
func TestRenewedSocketCloses(t *testing.T) {
	up := startUpstreamOn(t, "127.0.158.5", nil)
	m := &udpMux{addr: up.addr, timeout: 5 * time.Second}
	t.Cleanup(m.close)
	current := func() *upstreamSocket {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.cur
	}
	_, err := m.exchange(context.Background(), question("old.example.org.", dns.TypeA, false))
	require.NoError(t, err)
	old := current()
	old.mu.Lock()
	old.born = old.born.Add(-socketMaxAge)
	old.mu.Unlock()

	_, err = m.exchange(context.Background(), question("new.example.org.", dns.TypeA, false))
	require.NoError(t, err)
	renewed := current()
	require.NotSame(t, old, renewed, "the socket's age is up: a new one")
	oldAddr := old.conn.LocalAddr().String()
	require.Eventually(t, func() bool { return !testnet.UDPBoundHere(t, oldAddr) }, 5*time.Second, 10*time.Millisecond,
		"the replaced socket %s closes", oldAddr)
	assert.True(t, testnet.UDPBoundHere(t, renewed.conn.LocalAddr().String()), "the new socket stays open")
}

// TestStraysBeforeAQueryNotItsCause: a query that times out says that
// datagrams no query could take arrived while it waited only for those
// that arrived after it was registered (waiter.straysAt): a stray the
// socket read before, during another query, is not this query's cause,
// and its error is errNoAnswer alone, not of ErrAnswerWrongID's kind.
func TestStraysBeforeAQueryNotItsCause(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.158.6:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil || len(q.Question) != 1 || q.Question[0].Name != "first.example.org." {
			return // the second query is never answered
		}
		stray := new(dns.Msg).SetReply(q)
		stray.Id = q.Id + 1 // an ID the socket never sent: a stray
		_, _ = pc.WriteTo(packed(stray), from)
		_, _ = pc.WriteTo(packed(new(dns.Msg).SetReply(q)), from)
	})
	m := &udpMux{addr: pc.LocalAddr().String(), timeout: 300 * time.Millisecond}
	t.Cleanup(m.close)
	_, err = m.exchange(context.Background(), question("first.example.org.", dns.TypeA, false))
	require.NoError(t, err, "answered after the stray")
	m.mu.Lock()
	s := m.cur
	m.mu.Unlock()
	s.mu.Lock()
	strays := s.strays
	s.mu.Unlock()
	require.Equal(t, 1, strays, "the stray, read before the answer, counted")

	_, err = m.exchange(context.Background(), question("second.example.org.", dns.TypeA, false))
	assert.ErrorIs(t, err, errNoAnswer)
	assert.NotErrorIs(t, err, ErrAnswerWrongID, "the stray came before the query")
}

// TestShortDatagramCountedAsStray: a datagram too short to carry a query
// ID (under a 12-octet header) goes to no query and is counted as a stray
// of ErrAnswerMalformed's kind: the query that then times out says so,
// one datagram, as well as that its answer did not come. A header alone,
// 12 octets, is its query's answer, and no stray.
func TestShortDatagramCountedAsStray(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.158.7:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil || len(q.Question) != 1 {
			return
		}
		if q.Question[0].Name == "header.example.org." {
			_, _ = pc.WriteTo(packed(new(dns.Msg).SetRcode(q, dns.RcodeServerFailure))[:12], from)
			return
		}
		_, _ = pc.WriteTo(make([]byte, 11), from) // a header one octet short
	})
	m := &udpMux{addr: pc.LocalAddr().String(), timeout: 300 * time.Millisecond}
	t.Cleanup(m.close)

	r, err := m.exchange(context.Background(), question("header.example.org.", dns.TypeA, false))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
	m.mu.Lock()
	s := m.cur
	m.mu.Unlock()
	s.mu.Lock()
	strays, waiting := s.strays, len(s.pending)
	s.mu.Unlock()
	assert.Zero(t, strays, "a header alone is an answer, no stray")
	assert.Zero(t, waiting, "its query waits no more")

	_, err = m.exchange(context.Background(), question("short.example.org.", dns.TypeA, false))
	assert.ErrorIs(t, err, errNoAnswer)
	assert.ErrorIs(t, err, ErrAnswerMalformed)
	assert.ErrorContains(t, err, "meanwhile 1 datagrams no query could take")
}

// TestRetiredSocketClosesAfterItsLastQuery: a socket retired while
// queries wait on it (close: the upstreams changed) stays open for each
// of them, delivering their answers, and closes once the last is
// answered.
func TestRetiredSocketClosesAfterItsLastQuery(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.158.8:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	type held struct {
		q    *dns.Msg
		from net.Addr
	}
	queries := make(chan held, 2)
	testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) == nil && len(q.Question) == 1 {
			queries <- held{q, from}
		}
	})
	answer := func(h held) {
		_, err := pc.WriteTo(packed(new(dns.Msg).SetReply(h.q)), h.from)
		require.NoError(t, err)
	}
	m := &udpMux{addr: pc.LocalAddr().String(), timeout: 5 * time.Second}
	t.Cleanup(m.close)
	done := map[string]<-chan error{}
	for _, name := range []string{"a.retired.example.org.", "b.retired.example.org."} {
		done[name] = exchangeInBackground(context.Background(), m, "message", name)
	}
	first, second := <-queries, <-queries
	s := current(m)
	addr := s.conn.LocalAddr().String()
	m.close() // retires s, two queries waiting on it

	answer(first)
	require.NoError(t, <-done[first.q.Question[0].Name])
	assert.True(t, testnet.UDPBoundHere(t, addr), "open while a query waits on it")
	answer(second)
	assert.NoError(t, <-done[second.q.Question[0].Name], "answered on the retired socket")
	require.Eventually(t, func() bool { return !testnet.UDPBoundHere(t, addr) }, 5*time.Second, 10*time.Millisecond,
		"closed once its last query is answered")
}

// TestOversizeDatagramFailsAloneInItsBatch: a datagram the kernel refuses
// to send (over UDP's 65,507 octets: EMSGSIZE) ends its own query's wait
// at once with the error, and the datagrams queued after it in the same
// sendmmsg are still sent and answered.
func TestOversizeDatagramFailsAloneInItsBatch(t *testing.T) {
	up := startUpstreamOn(t, "127.0.158.9", nil)
	m := &udpMux{addr: up.addr, timeout: 5 * time.Second}
	t.Cleanup(m.close)
	big := make([]byte, 70000)
	copy(big, packed(question("big.example.org.", dns.TypeA, false)))
	wBig := &waiter{answer: make(chan []byte, 1)}
	s, lead, err := m.register(wBig, big, time.Now())
	require.NoError(t, err)
	require.True(t, lead)
	wSmall := &waiter{answer: make(chan []byte, 1)}
	next, lead, err := m.register(wSmall, packed(question("small.example.org.", dns.TypeA, false)), time.Now())
	require.NoError(t, err)
	require.Same(t, s, next)
	require.False(t, lead, "queued behind the first")
	require.NotNil(t, s.batch, "sent with sendmmsg")

	s.Flush()
	_, ok := <-wBig.answer
	assert.False(t, ok, "no answer to the oversize datagram")
	assert.ErrorIs(t, wBig.err, syscall.EMSGSIZE)
	select {
	case raw, ok := <-wSmall.answer:
		require.True(t, ok, "the datagram after it: %v", wSmall.err)
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(raw))
		assert.Equal(t, "small.example.org.", r.Question[0].Name)
	case <-time.After(5 * time.Second):
		t.Fatal("the datagram queued after the oversize one was not answered")
	}
}

// TestUnpackableQueryFails: a query that does not pack (a label over 63
// octets, RFC 1035 §2.3.4) is the exchange's error, at once: no socket is
// dialled and no datagram sent for it.
func TestUnpackableQueryFails(t *testing.T) {
	m := &udpMux{addr: silentUpstream(t), timeout: time.Second}
	t.Cleanup(m.close)
	_, err := m.exchange(context.Background(), question(strings.Repeat("a", 64)+".example.", dns.TypeA, false))
	assert.Error(t, err)
	assert.Nil(t, current(m), "no socket dialled")
}

// TestUpstreamSocketDatagramOfItsBufferSize: a datagram of exactly
// upstreamBuf octets fits the reader's buffer and is its query's answer,
// never ErrAnswerTooBig (which is for one over it,
// TestUpstreamSocketTooBigDatagram), on both reading paths.
func TestUpstreamSocketDatagramOfItsBufferSize(t *testing.T) {
	for _, batched := range []bool{true, false} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			pc, err := net.ListenPacket("udp", "127.0.158.10:0")
			require.NoError(t, err)
			t.Cleanup(func() { pc.Close() })
			testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
				q := new(dns.Msg)
				if q.Unpack(b) != nil || len(q.Question) != 1 {
					return
				}
				r := new(dns.Msg).SetReply(q)
				r.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}}}
				for r.Len() < upstreamBuf-255 {
					r.Answer[0].(*dns.TXT).Txt = append(r.Answer[0].(*dns.TXT).Txt, strings.Repeat("x", 254))
				}
				txt := r.Answer[0].(*dns.TXT)
				txt.Txt = append(txt.Txt, strings.Repeat("x", upstreamBuf-r.Len()-1))
				_, _ = pc.WriteTo(packed(r), from)
			})
			m := muxReading(t, pc.LocalAddr().String(), batched)
			r, err := m.exchange(context.Background(), question("fits.example.org.", dns.TypeTXT, false))
			require.NoError(t, err)
			require.Len(t, r.Answer, 1)
			n, err := r.Pack()
			require.NoError(t, err)
			assert.Len(t, n, upstreamBuf, "the answer as it came")
		})
	}
}
