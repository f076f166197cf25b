package listen

import (
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// echoWire is a WireHandler that answers every query from its wire form:
// it sets QR in the listener's buffer and writes it back, inline
// allocating nothing; with resume set, from a resume, as a query that
// waits on an upstream is answered, allocating only that resume: a
// closure over w and its copy of the answer (two allocations). What a run of it allocates
// beyond that is the UDP loop's own.
type echoWire struct{ resume bool }

func (echoWire) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (e echoWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	b[2] |= 0x80 // QR
	if !e.resume {
		_, _ = w.Write(b)
		return nil, true
	}
	var answer struct {
		b [64]byte
		n int
	}
	answer.n = copy(answer.b[:], b)
	return func() { _, _ = w.Write(answer.b[:answer.n]) }, true
}

// startEchoUDP serves h on a loopback UDP socket and returns a client
// connected to it.
func startEchoUDP(tb testing.TB, h echoWire) *net.UDPConn {
	_, c := startWireUDP(tb, h)
	return c
}

// startWireUDP serves h on a loopback UDP socket and returns the server
// and a client connected to it, with a minute to work.
func startWireUDP(tb testing.TB, h WireHandler) (*Server, *net.UDPConn) {
	return startWireUDPAt(tb, h, "127.0.0.1:0", "", "")
}

// startWireUDPAt is startWireUDP on the listen address given, with the
// client connected to host at its port ("": the address listened on), from
// the address from ("": the one the kernel picks).
func startWireUDPAt(tb testing.TB, h WireHandler, listen, from, host string) (*Server, *net.UDPConn) {
	var addr string
	s := New(Config{
		Handler: h,
		Count:   func(string, string) {},
		Rules:   func() Rules { return fakeRules{} },
		Sockets: func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() },
		Log:     zap.NewNop(),
	})
	require.NoError(tb, s.Start([]string{listen}))
	tb.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	ua, err := net.ResolveUDPAddr("udp", addr)
	require.NoError(tb, err)
	if host != "" {
		ua.IP = net.ParseIP(host)
	}
	var local *net.UDPAddr
	if from != "" {
		local = &net.UDPAddr{IP: net.ParseIP(from)}
	}
	c, err := net.DialUDP("udp", local, ua)
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	require.NoError(tb, c.SetDeadline(time.Now().Add(time.Minute)))
	return s, c
}

// echoBurst sends n copies of query and reads their n answers.
func echoBurst(tb testing.TB, c *net.UDPConn, query, answer []byte, n int) {
	for range n {
		if _, err := c.Write(query); err != nil {
			tb.Fatal(err)
		}
	}
	for range n {
		if _, err := c.Read(answer); err != nil {
			tb.Fatal(err)
		}
	}
}

func packedQuery(tb testing.TB) []byte {
	return packedQueryOf(tb, "www.example.com.", 0)
}

// packedQueryOf is a packed A query for name with the ID id.
func packedQueryOf(tb testing.TB, name string, id uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	b, err := m.Pack()
	require.NoError(tb, err)
	return b
}

// TestUDPLoopAllocatesNothingInline: a query answered inline costs the UDP
// loop no allocation, read and answer included; each answer once cost one
// (its one-element [][]byte for sendmmsg), which under load grew the heap
// by the garbage the GC target allows (8 MB with a million-entry list).
// The client's own sends and reads allocate nothing either, so the whole
// process is counted: 2,000 queries may leave a few allocations of the
// runtime's, not one a query.
func TestUDPLoopAllocatesNothingInline(t *testing.T) {
	c := startEchoUDP(t, echoWire{})
	query, answer := packedQuery(t), make([]byte, 512)
	echoBurst(t, c, query, answer, 32) // warm: the loop's buffers, the poller
	allocs := burstMallocs(t, c, query, answer, 2000)
	require.Less(t, allocs, uint64(100), "allocations over 2,000 queries answered inline")
}

// switchingEcho is echoWire, resuming its queries while resume is set.
type switchingEcho struct{ resume *atomic.Bool }

func (switchingEcho) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (h switchingEcho) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	return echoWire{resume: h.resume.Load()}.ServeWire(w, b)
}

// TestUDPLoopAllocatesNothingInlineAfterResumes: a slot whose query was
// resumed, and so left the batch with its writer, gets a new writer once,
// which it keeps: the queries answered inline in it later cost the loop no
// allocation, as in a slot that never lost one
// (TestUDPLoopAllocatesNothingInline).
func TestUDPLoopAllocatesNothingInlineAfterResumes(t *testing.T) {
	h := switchingEcho{resume: new(atomic.Bool)}
	h.resume.Store(true)
	_, c := startWireUDP(t, h)
	query, answer := packedQuery(t), make([]byte, 512)
	echoBurst(t, c, query, answer, 20) // resumed: the slots of a burst lose their writers
	h.resume.Store(false)
	echoBurst(t, c, query, answer, 32) // warm: the new writers, the poller
	allocs := burstMallocs(t, c, query, answer, 2000)
	require.Less(t, allocs, uint64(100), "allocations over 2,000 queries answered inline")
}

// BenchmarkUDPLoopInline is one query answered inline through the real UDP
// loop (recvmmsg, the handler, sendmmsg) from a loopback client sending
// bursts of 16; allocs/op is the loop's.
func BenchmarkUDPLoopInline(b *testing.B) {
	c := startEchoUDP(b, echoWire{})
	query, answer := packedQuery(b), make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		echoBurst(b, c, query, answer, 16)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16), "ns/query")
}

// TestUDPLoopAllocationsOfAResume: a query answered from a resume, off the
// loop (as one that waits on an upstream), costs the UDP loop one
// allocation: the slot's new writer. Its copy of the client's address and
// of the answer cost three more before (a UDPAddr, its IP, the answer's
// bytes), and the writer's batch one. The handler's resume is the other
// two allocations a query here (a memory profile shows the split).
func TestUDPLoopAllocationsOfAResume(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops sync.Pool's buffers at random: allocations are counted without it")
	}
	c := startEchoUDP(t, echoWire{resume: true})
	query, answer := packedQuery(t), make([]byte, 512)
	echoBurst(t, c, query, answer, 64) // warm: workers, the writer, outBufs
	const queries = 2000
	perQuery := float64(burstMallocs(t, c, query, answer, queries)) / queries
	require.Less(t, perQuery, 3.2, "allocations a query: the writer, and the handler's resume and its answer")
}

// BenchmarkUDPLoopResume is a query answered from a resume through the
// real UDP loop, its worker and its writer, from a loopback client sending
// one query at a time. The handler's resume is two of allocs/op.
func BenchmarkUDPLoopResume(b *testing.B) {
	c := startEchoUDP(b, echoWire{resume: true})
	query, answer := packedQuery(b), make([]byte, 512)
	echoBurst(b, c, query, answer, 64)
	b.ReportAllocs()
	for b.Loop() {
		echoBurst(b, c, query, answer, 1)
	}
}

// TestUDPLoopWildcardAnswersFromTheAddressAsked: on a socket bound to
// 0.0.0.0 or [::], answers leave from the address each query was sent to
// (a client's connected socket takes no other), those written in the
// loop's batch and those written by the writer for a resume alike; and
// that costs no allocation: the loop's allocations are those of a socket
// bound to one address (TestUDPLoopAllocatesNothingInline,
// TestUDPLoopAllocationsOfAResume). It binds wildcard addresses and adds
// ::2 to lo, so it runs in a network namespace of its own.
func TestUDPLoopWildcardAnswersFromTheAddressAsked(t *testing.T) {
	if !testnet.InNetns(t, "addr add ::2/128 dev lo") {
		return
	}
	tests := []struct {
		name   string
		listen string
		from   string // the client's address, which the kernel's routing answers from
		to     string // the address asked
	}{
		{name: "IPv4", listen: "0.0.0.0:0", from: "127.0.0.1", to: "127.0.0.2"},
		{name: "IPv6", listen: "[::]:0", from: "::1", to: "::2"},
		{name: "IPv4 on IPv6", listen: "[::]:0", from: "127.0.0.1", to: "127.0.0.2"},
	}
	query, answer := packedQuery(t), make([]byte, 512)
	for _, tc := range tests {
		t.Run(tc.name+", inline", func(t *testing.T) {
			_, c := startWireUDPAt(t, echoWire{}, tc.listen, tc.from, tc.to)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			echoBurst(t, c, query, answer, 32) // warm: the loop's buffers, the poller
			allocs := burstMallocs(t, c, query, answer, 2000)
			t.Logf("%d allocations over 2,000 queries", allocs)
			assert.Less(t, allocs, uint64(100), "allocations over 2,000 queries answered inline")
		})
		t.Run(tc.name+", resumed", func(t *testing.T) {
			_, c := startWireUDPAt(t, echoWire{resume: true}, tc.listen, tc.from, tc.to)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			echoBurst(t, c, query, answer, 64) // warm: workers, the writer, outBufs
			const queries = 2000
			mallocs := burstMallocs(t, c, query, answer, queries)
			if raceEnabled {
				return // the race detector drops sync.Pool's buffers at random: allocations are counted without it
			}
			perQuery := float64(mallocs) / queries
			t.Logf("%.2f allocations a query", perQuery)
			assert.Less(t, perQuery, 3.2, "allocations a query: the writer, and the handler's resume and its answer")
		})
	}
}

// burstMallocs asks c for n answers in bursts of 20 (echoBurst) and returns
// the allocations the whole process made meanwhile (runtime.MemStats'
// Mallocs: the client's sends and reads allocate nothing).
func burstMallocs(t testing.TB, c *net.UDPConn, query, answer []byte, n int) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n / 20 {
		echoBurst(t, c, query, answer, 20)
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// TestUDPWriteMsgPacksIntoItsBuffer: an answer written with WriteMsg, as
// the Handler writes its blocked, local and SERVFAIL answers, is packed
// into the buffer its writer holds, allocating nothing: inline the slot's,
// and, once the query has left the batch, one of outBufs, which the writer
// returns once sent. PackBuffer packs into the length of the buffer it is
// given, not its capacity: given buf[:0], it made a new buffer for every
// answer.
func TestUDPWriteMsgPacksIntoItsBuffer(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", dns.TypeA)
	m.Response = true // uncompressed: a compressed pack makes its map of names
	want, err := m.Pack()
	require.NoError(t, err)

	slot := make([]byte, 0, udpReadBuf)
	w := &udpWriter{buf: slot}
	inline := testing.AllocsPerRun(100, func() { require.NoError(t, w.WriteMsg(m)) })
	require.Equal(t, want, w.packed)
	assert.Same(t, &slot[:1][0], &w.packed[0], "packed into the slot's buffer")
	assert.Zero(t, inline, "allocations of an answer written inline")

	if raceEnabled {
		t.Skip("the race detector drops sync.Pool's buffers at random: allocations are counted without it")
	}
	s := &udpServer{out: make(chan outPacket, 1)}
	w = &udpWriter{s: s, alone: true}
	var got []byte
	alone := testing.AllocsPerRun(100, func() {
		require.NoError(t, w.WriteMsg(m))
		p := <-s.out // as the writer takes it, sends it and returns its buffer
		got = append(got[:0], *p.buf...)
		outBufs.Put(p.buf)
	})
	require.Equal(t, want, got)
	assert.Zero(t, alone, "allocations of an answer written once the query left the batch")
}

// localAddrWire is a WireHandler that echoes every query, as echoWire does,
// and sends on got the LocalAddr its writer gives.
type localAddrWire struct{ got chan net.Addr }

func (localAddrWire) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (h localAddrWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	h.got <- w.LocalAddr()
	b[2] |= 0x80 // QR
	_, _ = w.Write(b)
	return nil, true
}

// TestUDPLocalAddrIsTheAddressAsked: a UDP writer's LocalAddr, which DDR
// answers name, is the address the query was sent to, with the socket's
// port: on a socket bound to 0.0.0.0 or [::], the datagram's destination
// (IP_PKTINFO), not the wildcard; on one bound to an address, that
// address. It binds wildcard addresses and adds ::2 to lo, so it runs in
// a network namespace of its own.
func TestUDPLocalAddrIsTheAddressAsked(t *testing.T) {
	if !testnet.InNetns(t, "addr add ::2/128 dev lo") {
		return
	}
	tests := []struct {
		name   string
		listen string
		from   string // the client's address
		to     string // the address asked
	}{
		{name: "IPv4 wildcard", listen: "0.0.0.0:0", from: "127.0.0.1", to: "127.0.0.2"},
		{name: "IPv6 wildcard", listen: "[::]:0", from: "::1", to: "::2"},
		{name: "IPv4 on IPv6 wildcard", listen: "[::]:0", from: "127.0.0.1", to: "127.0.0.2"},
		{name: "IPv4 address", listen: "127.0.0.3:0", from: "127.0.0.1"},
	}
	query, answer := packedQuery(t), make([]byte, 512)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := localAddrWire{got: make(chan net.Addr, 1)}
			_, c := startWireUDPAt(t, h, tc.listen, tc.from, tc.to)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			echoBurst(t, c, query, answer, 1)
			asked := AddrPortOf(c.RemoteAddr())
			got := AddrPortOf(<-h.got)
			assert.Equal(t, asked.Addr().Unmap(), got.Addr().Unmap(), "the address asked")
			assert.Equal(t, asked.Port(), got.Port(), "the socket's port")
		})
	}
}

// heldEcho is echoWire inline, but for the first query, which it holds
// until hold is closed, once it has said so on holding.
type heldEcho struct {
	holding, hold chan struct{}
	once          sync.Once
}

func (*heldEcho) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (h *heldEcho) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	h.once.Do(func() {
		close(h.holding)
		<-h.hold
	})
	return echoWire{}.ServeWire(w, b)
}

// TestUDPFullBatchAnswered: a batch of udpBatch queries, as many as one
// recvmmsg reads, all answered inline, are all answered with one
// sendmmsg's batch, on a socket bound to an address and on one bound to
// 0.0.0.0, whose answers carry their source. The loop holds its first
// query while the rest wait in the socket, so that they are read
// together. It binds 0.0.0.0, so it runs in a network namespace of its
// own.
func TestUDPFullBatchAnswered(t *testing.T) {
	if !testnet.InNetns(t) {
		return
	}
	for _, listen := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		t.Run(listen, func(t *testing.T) {
			h := &heldEcho{holding: make(chan struct{}), hold: make(chan struct{})}
			_, c := startWireUDPAt(t, h, listen, "127.0.0.1", "127.0.0.1")
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			send := func(id uint16) {
				_, err := c.Write(packedQueryOf(t, "full.example.org.", id))
				require.NoError(t, err)
			}
			send(0)
			<-h.holding
			for id := range uint16(udpBatch) {
				send(1 + id)
			}
			close(h.hold)
			buf := make([]byte, 512)
			seen := map[uint16]bool{}
			for range 1 + udpBatch {
				k, err := c.Read(buf)
				require.NoError(t, err, "answers read: %d", len(seen))
				m := new(dns.Msg)
				require.NoError(t, m.Unpack(buf[:k]))
				require.False(t, seen[m.Id], "one answer a query: %d", m.Id)
				seen[m.Id] = true
			}
		})
	}
}
