package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// holdingUpstream is a UDP upstream that records every query it reads
// (the question name and the source port it came from) and holds its
// answers until released; then it answers those held, and every later
// query at once, with the default answer.
type holdingUpstream struct {
	pc net.PacketConn

	mu       sync.Mutex
	ports    map[string]map[int]bool // question name: source ports it came from
	held     []heldQuery
	released bool
}

type heldQuery struct {
	q    *dns.Msg
	from net.Addr
}

func startHoldingUpstream(t *testing.T) *holdingUpstream {
	t.Helper()
	u := &holdingUpstream{ports: map[string]map[int]bool{}}
	u.mu.Lock() // u.pc is set before the first query is served
	defer u.mu.Unlock()
	u.pc = testnet.ServeQuestions(t, func(_ net.PacketConn, q *dns.Msg, from net.Addr) {
		u.mu.Lock()
		name := q.Question[0].Name
		if u.ports[name] == nil {
			u.ports[name] = map[int]bool{}
		}
		u.ports[name][from.(*net.UDPAddr).Port] = true
		if !u.released {
			u.held = append(u.held, heldQuery{q, from})
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
		u.answer(heldQuery{q, from})
	})
	return u
}

func (u *holdingUpstream) answer(h heldQuery) {
	_, _ = u.pc.WriteTo(packed(defaultAnswer(nil, h.q)), h.from)
}

// release answers the queries held, and from then on every query at once.
func (u *holdingUpstream) release() {
	u.mu.Lock()
	held := u.held
	u.held, u.released = nil, true
	u.mu.Unlock()
	for _, h := range held {
		u.answer(h)
	}
}

// seen reports whether every name in names came from at least ports
// source ports.
func (u *holdingUpstream) seen(names []string, ports int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range names {
		if len(u.ports[n]) < ports {
			return false
		}
	}
	return true
}

// spoofPortUnreachable sends, over a raw socket, what an off-path sender
// forges: an ICMP port unreachable (RFC 792, type 3 code 3) to the local
// address of a mux socket, quoting the IPv4 and UDP header of a datagram
// from that socket to its upstream. The kernel matches the quote to the
// connected socket by its four addresses and ports alone and keeps
// ECONNREFUSED for it. It skips the test without the privilege a raw
// socket needs (CAP_NET_RAW).
func spoofPortUnreachable(t *testing.T, local, remote *net.UDPAddr) {
	t.Helper()
	c, err := icmp.ListenPacket("ip4:icmp", "127.0.0.1")
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		t.Skipf("a raw ICMP socket needs CAP_NET_RAW: %v", err)
	}
	require.NoError(t, err)
	defer c.Close()
	quote := make([]byte, ipv4.HeaderLen+8)
	ip := ipv4.Header{Version: 4, Len: ipv4.HeaderLen, TotalLen: len(quote) + 30, TTL: 64, Protocol: 17,
		Src: local.IP.To4(), Dst: remote.IP.To4()}
	h, err := ip.Marshal()
	require.NoError(t, err)
	// Marshal writes TotalLen in host order on some systems (an old BSD
	// convention); the quote is read in network order.
	binary.BigEndian.PutUint16(h[2:4], uint16(ip.TotalLen))
	copy(quote, h)
	udp := quote[ipv4.HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:2], uint16(local.Port))
	binary.BigEndian.PutUint16(udp[2:4], uint16(remote.Port))
	binary.BigEndian.PutUint16(udp[4:6], 8+30)
	msg := icmp.Message{Type: ipv4.ICMPTypeDestinationUnreachable, Code: 3, Body: &icmp.DstUnreach{Data: quote}}
	b, err := msg.Marshal(nil)
	require.NoError(t, err)
	_, err = c.WriteTo(b, &net.IPAddr{IP: local.IP})
	require.NoError(t, err)
}

// TestSocketErrorMovesWaitingQueries: an ICMP port unreachable for a mux
// socket (a forged one, since the upstream's port is open and its answers
// are on their way) ends that socket, and its waiting queries are sent
// again once, each from a new socket (another source port) under a new
// ID: they get the upstream's answers, on the message path and the wire
// path alike, each move counted as a resend. Before, every query waiting
// on the socket failed at once with "connection refused": one forged
// datagram failed up to 1,000 queries. A socket error on the socket they
// moved to fails them, at once: only the first error is taken for a
// possible forgery. "icmp" forges the ICMP message over a raw socket (as
// root); "injected" hands the error to the socket as its reader does, for
// a test run without that privilege.
func TestSocketErrorMovesWaitingQueries(t *testing.T) {
	for _, how := range []string{"icmp", "injected"} {
		for _, second := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/second error %v", how, second), func(t *testing.T) {
				testSocketErrorMoves(t, how, second)
			})
		}
	}
}

func testSocketErrorMoves(t *testing.T, how string, second bool) {
	const n, timeout = 8, 5 * time.Second
	up := startHoldingUpstream(t)
	var moves atomic.Int32
	m := &udpMux{addr: up.pc.LocalAddr().String(), timeout: timeout,
		resend: &resendPolicy{delay: func() (time.Duration, bool) { return time.Hour, true }, count: func() { moves.Add(1) }}}
	t.Cleanup(m.close)

	type outcome struct {
		name string
		err  error
		took time.Duration
	}
	out := make(chan outcome, n)
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("q%d.example.org.", i)
		go func() {
			start := time.Now()
			q := question(names[i], dns.TypeA, false)
			q.Id = uint16(0x100 + i)
			var err error
			if i%2 == 0 {
				var resp *dns.Msg
				if resp, err = m.exchange(context.Background(), q); err == nil &&
					(resp.Id != q.Id || len(resp.Answer) != 1 || resp.Answer[0].Header().Name != names[i]) {
					err = fmt.Errorf("message path: wrong answer %v", resp)
				}
			} else {
				var raw []byte
				if raw, err = m.exchangeWire(context.Background(), packed(q)); err == nil {
					resp := new(dns.Msg)
					if uerr := resp.Unpack(raw); uerr != nil || resp.Id != q.Id || len(resp.Answer) != 1 || resp.Answer[0].Header().Name != names[i] {
						err = fmt.Errorf("wire path: wrong answer %v (%v)", resp, uerr)
					}
				}
			}
			out <- outcome{names[i], err, time.Since(start)}
		}()
	}
	require.Eventually(t, func() bool { return up.seen(names, 1) }, 2*time.Second, time.Millisecond, "the queries reach the upstream")

	// fail gives the current socket a socket error, as the kernel does
	// on an ICMP port unreachable, and returns it.
	fail := func() *upstreamSocket {
		s := current(m)
		require.NotNil(t, s)
		switch how {
		case "icmp":
			spoofPortUnreachable(t, s.conn.LocalAddr().(*net.UDPAddr), s.conn.RemoteAddr().(*net.UDPAddr))
		default:
			s.fail(syscall.ECONNREFUSED)
		}
		return s
	}
	first := fail()
	// Every query is asked again, from another port.
	moved := assert.Eventually(t, func() bool { return up.seen(names, 2) }, 2*time.Second, time.Millisecond,
		"every query asked again from a new source port")
	first.mu.Lock()
	assert.True(t, first.dead, "the socket that had the error is ended")
	first.mu.Unlock()
	if moved {
		assert.Equal(t, int32(n), moves.Load(), "each move counted as a resend")
	}
	if second && moved {
		next := fail()
		assert.NotSame(t, first, next)
		for range n {
			o := <-out
			assert.ErrorIs(t, o.err, syscall.ECONNREFUSED, "%s: a moved query fails on its second socket error", o.name)
			assert.Less(t, o.took, timeout/2, "%s: at once, not after the timeout", o.name)
		}
		return
	}
	up.release()
	for range n {
		o := <-out
		assert.NoError(t, o.err, "%s: its answer, not the forged error", o.name)
		assert.Less(t, o.took, timeout/2, o.name)
	}
}

// TestMovedQueryForgottenWhereItWaits: a query whose context ends after a
// socket error moved it stops waiting on the socket it moved to, not only
// on the one it was registered on (udpMux.forget): nothing is left
// waiting there for its deadline.
func TestMovedQueryForgottenWhereItWaits(t *testing.T) {
	up := startHoldingUpstream(t)
	m := &udpMux{addr: up.pc.LocalAddr().String(), timeout: 5 * time.Second}
	t.Cleanup(m.close)
	for _, path := range []string{"message", "wire"} {
		t.Run(path, func(t *testing.T) {
			name := path + ".forget.example.org."
			ctx, cancel := context.WithCancel(context.Background())
			done := exchangeInBackground(ctx, m, path, name)
			require.Eventually(t, func() bool { return up.seen([]string{name}, 1) }, 2*time.Second, time.Millisecond)
			first := current(m)
			first.fail(syscall.ECONNREFUSED)
			require.Eventually(t, func() bool { return up.seen([]string{name}, 2) }, 2*time.Second, time.Millisecond)
			cancel()
			assert.ErrorIs(t, <-done, context.Canceled)
			next := current(m)
			require.NotSame(t, first, next)
			next.mu.Lock()
			defer next.mu.Unlock()
			assert.Empty(t, next.pending, "the moved query still waits")
		})
	}
}

// TestSocketErrorMovesStartedQueries: queries StartWire sent (their
// waiter's taker is the try, on the socket's reader) are moved by a
// socket error as exchanges are, and WireDone gets the upstream's
// answers; the upstream is not judged by the error.
func TestSocketErrorMovesStartedQueries(t *testing.T) {
	for _, how := range []string{"icmp", "injected"} {
		t.Run(how, func(t *testing.T) {
			const n = 6
			up := startHoldingUpstream(t)
			f := NewForwarder([]string{up.pc.LocalAddr().String()}, 5*time.Second, false)
			defer f.Close()
			thens := make([]thenChan, n)
			names := make([]string, n)
			for i := range n {
				names[i] = fmt.Sprintf("started%d.example.org.", i)
				thens[i] = make(thenChan, 2)
				f.StartWire(wireQuestion(names[i], dns.TypeA), thens[i], nil)
			}
			require.Eventually(t, func() bool { return up.seen(names, 1) }, 2*time.Second, time.Millisecond)
			m := f.upstreams[0].t.(*Plain).mux
			s := current(m)
			if how == "icmp" {
				spoofPortUnreachable(t, s.conn.LocalAddr().(*net.UDPAddr), s.conn.RemoteAddr().(*net.UDPAddr))
			} else {
				s.fail(syscall.ECONNREFUSED)
			}
			assert.Eventually(t, func() bool { return up.seen(names, 2) }, 2*time.Second, time.Millisecond,
				"every query asked again from a new source port")
			up.release()
			for _, then := range thens {
				r := then.wait(t)
				require.NoError(t, r.err)
				resp := r.a.Msg
				if resp == nil {
					resp = new(dns.Msg)
					require.NoError(t, resp.Unpack(r.a.Raw))
				}
				assert.Equal(t, uint16(0x1234), resp.Id, "the query's own ID")
				assert.Len(t, resp.Answer, 1)
			}
			assert.False(t, f.upstreams[0].down.Load(), "the upstream judged by a forged ICMP message")
		})
	}
}

// TestQueryForgottenWhileMovingIsNotMoved: a query whose context ends
// while a socket error is moving its socket's queries (taken off the
// socket, not yet on the next: fail, move) is not moved. Before, forget
// found it on the ended socket, where it no longer waited, and move then
// registered it on the next socket and sent it again for nobody: a
// datagram the upstream answered in vain, and a wait held there until
// its deadline.
func TestQueryForgottenWhileMovingIsNotMoved(t *testing.T) {
	for _, path := range []string{"message", "wire"} {
		t.Run(path, func(t *testing.T) {
			up := startHoldingUpstream(t)
			m := &udpMux{addr: up.pc.LocalAddr().String(), timeout: 5 * time.Second}
			t.Cleanup(m.close)
			name := path + ".forgotten.example.org."
			ctx, cancel := context.WithCancel(context.Background())
			done := exchangeInBackground(ctx, m, path, name)
			require.Eventually(t, func() bool { return up.seen([]string{name}, 1) }, 2*time.Second, time.Millisecond)
			m.beforeMove = func() {
				cancel()
				assert.ErrorIs(t, <-done, context.Canceled)
			}
			first := current(m)
			first.fail(syscall.ECONNREFUSED)

			next := current(m)
			if next != nil && next != first { // none dialled: nothing was moved
				next.mu.Lock()
				assert.Empty(t, next.pending, "the forgotten query was moved: it waits on the next socket")
				next.mu.Unlock()
			}
			// A query sent afterwards reaches the upstream; by then a
			// datagram of the forgotten one, sent before it, would have too.
			up.release()
			resp, err := m.exchange(context.Background(), question("after."+name, dns.TypeA, false))
			require.NoError(t, err)
			assert.Len(t, resp.Answer, 1)
			assert.False(t, up.seen([]string{name}, 2), "the forgotten query was sent again")
		})
	}
}

// TestMovedQueryKeepsItsResends: the datagram a move sends is one of the
// query's resends (maxResends), not the first of a new set: a query moved
// after its last resend is not sent again after the move, and one moved
// before any is sent again at most maxResends times in all; either keeps
// the deadline it was registered with (a move gives it no more time).
// Before, the move started its count over, and a query could be sent
// 1+3+1+3 times.
func TestMovedQueryKeepsItsResends(t *testing.T) {
	for _, tc := range []struct {
		name      string
		delay     time.Duration // the resend delay
		before    int           // resends on the first socket
		resends   int           // counted once moved
		sendsMore bool          // resent again after the move
	}{
		{name: "moved before any resend", delay: 2 * time.Second, before: 0, resends: 1, sendsMore: true},
		{name: "moved after its last resend", delay: time.Millisecond, before: maxResends, resends: maxResends + 1, sendsMore: false},
		// The move's datagram is its last resend: resent at 150 and 450 ms,
		// moved before the third, due at 1050 ms.
		{name: "moved after its next to last resend", delay: 150 * time.Millisecond, before: maxResends - 1, resends: maxResends, sendsMore: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startHoldingUpstream(t)
			m := &udpMux{addr: up.pc.LocalAddr().String(), timeout: 10 * time.Second,
				resend: &resendPolicy{delay: func() (time.Duration, bool) { return tc.delay, true }, count: func() {}}}
			t.Cleanup(m.close)
			name := "resends.example.org."
			done := make(chan error, 1)
			go func() {
				_, err := m.exchange(context.Background(), question(name, dns.TypeA, false))
				done <- err
			}()
			require.Eventually(t, func() bool { return up.seen([]string{name}, 1) }, 2*time.Second, time.Millisecond)
			first := current(m)
			require.Eventually(t, func() bool {
				resends := -1
				only(first, func(w *waiter) { resends = w.resends })
				return resends == tc.before
			}, 2*time.Second, time.Millisecond, "resent on the first socket")
			var deadline time.Time
			require.True(t, only(first, func(w *waiter) { deadline = w.deadline }))
			first.fail(syscall.ECONNREFUSED)
			require.Eventually(t, func() bool { return up.seen([]string{name}, 2) }, 2*time.Second, time.Millisecond, "moved")
			next := current(m)
			require.True(t, only(next, func(w *waiter) {
				assert.Equal(t, tc.resends, w.resends, "the move counted as one of its resends")
				assert.Equal(t, tc.sendsMore, w.packet != nil, "sent again after the move")
				assert.Equal(t, deadline, w.deadline, "the move keeps the query's deadline")
			}), "the query waits on the next socket")
			up.release()
			require.NoError(t, <-done)
		})
	}
}

// TestQueryPastItsDeadlineIsNotMoved: a query whose deadline has passed by
// the time a socket error moves its socket's queries (fail, move) fails
// with the error, as the ended socket's sweep would have failed it, and
// is not sent again: before, move sent its datagram from the next socket,
// counted a resend, and the query failed a sweep later for nothing.
//
// The deadline passes while the query is off every socket, where no
// sweep ends it: beforeMove, on fail's goroutine, which alone holds the
// query then, makes it the moment it runs. Before, the query had a
// 300 ms timeout and beforeMove slept past it, which needed the query to
// be registered, sent, seen by the upstream and taken off by fail within
// those 300 ms; under -race beside other work the sweep ended it first
// ("no answer in time", 2 runs of 40, and 2 of 40 again with 1 s), and
// the query after it, with the same timeout, timed out too (2 of 40).
func TestQueryPastItsDeadlineIsNotMoved(t *testing.T) {
	const timeout = 10 * time.Second // no sweep ends either query: their deadlines are the test's
	up := startHoldingUpstream(t)
	var moves atomic.Int32
	m := &udpMux{addr: up.pc.LocalAddr().String(), timeout: timeout,
		resend: &resendPolicy{delay: func() (time.Duration, bool) { return time.Hour, true }, count: func() { moves.Add(1) }}}
	t.Cleanup(m.close)
	name := "late.example.org."
	done := exchangeInBackground(context.Background(), m, "message", name)
	require.Eventually(t, func() bool { return up.seen([]string{name}, 1) }, 2*time.Second, time.Millisecond)
	first := current(m)
	var late *waiter
	require.True(t, only(first, func(w *waiter) { late = w }), "the query waits on its socket")
	m.beforeMove = func() { late.deadline = time.Now() } // its deadline passes off every socket
	first.fail(syscall.ECONNREFUSED)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	case <-time.After(5 * time.Second):
		t.Fatal("the query past its deadline still waits")
	}
	assert.Zero(t, moves.Load(), "no move counted")
	// A query sent afterwards reaches the upstream; by then a datagram of
	// the late one, sent before it, would have too.
	up.release()
	resp, err := m.exchange(context.Background(), question("after."+name, dns.TypeA, false))
	require.NoError(t, err)
	assert.Len(t, resp.Answer, 1)
	assert.False(t, up.seen([]string{name}, 2), "the query past its deadline was sent again")
}

// exchangeInBackground asks m for name's A record in a goroutine, by
// exchange (path "message") or exchangeWire (any other), and returns the
// channel its error arrives on.
func exchangeInBackground(ctx context.Context, m *udpMux, path, name string) <-chan error {
	done := make(chan error, 1)
	go func() {
		var err error
		if path == "message" {
			_, err = m.exchange(ctx, question(name, dns.TypeA, false))
		} else {
			_, err = m.exchangeWire(ctx, packed(question(name, dns.TypeA, false)))
		}
		done <- err
	}()
	return done
}

// only calls f with the one query waiting on s, under s's lock, and
// reports whether there was one.
func only(s *upstreamSocket, f func(w *waiter)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.pending {
		f(w)
		return true
	}
	return false
}

// current is m's current socket, read under its lock.
func current(m *udpMux) *upstreamSocket {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur
}

// TestSocketErrorKinds: the errors a send or read reports for the socket
// rather than a datagram (socketError) are the ICMP unreachables the
// kernel keeps for it: port (ECONNREFUSED), host (EHOSTUNREACH) and
// network (ENETUNREACH), as a send returns them; a datagram's own error
// (too large, no buffer space) is not one.
func TestSocketErrorKinds(t *testing.T) {
	sent := func(errno syscall.Errno) error {
		return &net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendmmsg", errno)}
	}
	for errno, want := range map[syscall.Errno]bool{
		syscall.ECONNREFUSED: true,
		syscall.EHOSTUNREACH: true,
		syscall.ENETUNREACH:  true,
		syscall.EMSGSIZE:     false,
		syscall.ENOBUFS:      false,
	} {
		assert.Equal(t, want, socketError(sent(errno)), "%v", errno)
	}
}

// TestSendSocketErrorMovesQueries: a socket error that a send reports
// (sendFailed: the kernel gives a kept ICMP error to whichever call comes
// next) ends the socket as a read's does: it is closed, and the queries
// waiting on it are moved to another socket, where they count as
// registrations, and asked again, not left to wait out their timeout.
func TestSendSocketErrorMovesQueries(t *testing.T) {
	up := startHoldingUpstream(t)
	m := &udpMux{addr: up.pc.LocalAddr().String(), timeout: 5 * time.Second}
	t.Cleanup(m.close)
	names := []string{"a.send.example.org.", "b.send.example.org."}
	var done []<-chan error
	for _, name := range names {
		done = append(done, exchangeInBackground(context.Background(), m, "message", name))
	}
	require.Eventually(t, func() bool { return up.seen(names, 1) }, 2*time.Second, time.Millisecond, "the queries reach the upstream")

	s := current(m)
	s.mu.Lock()
	var q queuedQuery
	for id, w := range s.pending {
		q = queuedQuery{id: id, w: w, gen: w.gen}
		break
	}
	s.mu.Unlock()
	assert.True(t, s.sendFailed(q, &net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendmmsg", syscall.ECONNREFUSED)}),
		"the socket is done for")
	s.mu.Lock()
	assert.True(t, s.dead, "the socket that had the error is ended")
	s.mu.Unlock()
	assert.Eventually(t, func() bool { return up.seen(names, 2) }, 2*time.Second, time.Millisecond,
		"every query asked again from a new source port")
	oldAddr := s.conn.LocalAddr().String()
	assert.Eventually(t, func() bool { return !testnet.UDPBoundHere(t, oldAddr) }, 2*time.Second, time.Millisecond,
		"the ended socket %s is closed", oldAddr)
	next := current(m)
	require.NotSame(t, s, next)
	next.mu.Lock()
	assert.Equal(t, len(names), next.sent, "the moved queries count against the new socket's socketMaxQueries")
	next.mu.Unlock()
	up.release()
	for i, d := range done {
		assert.NoError(t, <-d, names[i])
	}
}
