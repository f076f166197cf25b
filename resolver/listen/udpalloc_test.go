package listen

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// echoWire is a WireHandler that answers every query inline from its wire
// form, allocating nothing: it sets QR in the listener's buffer and writes
// it back. What a run of it allocates is the UDP loop's own.
type echoWire struct{}

func (echoWire) ServeInline(ResponseWriter, *dns.Msg) func() { return nil }

func (echoWire) ServeWire(w ResponseWriter, b []byte) (func(), bool) {
	b[2] |= 0x80 // QR
	_, _ = w.Write(b)
	return nil, true
}

// startEchoUDP serves echoWire on a loopback UDP socket and returns a
// client connected to it.
func startEchoUDP(tb testing.TB) *net.UDPConn {
	var addr string
	s := New(Config{
		Handler: echoWire{},
		Count:   func(string, string) {},
		Rules:   func() Rules { return fakeRules{} },
		Sockets: func(socks []UDPSocket) { addr = socks[0].Conn.LocalAddr().String() },
		Log:     zap.NewNop(),
	})
	require.NoError(tb, s.Start([]string{"127.0.0.1:0"}))
	tb.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	ua, err := net.ResolveUDPAddr("udp", addr)
	require.NoError(tb, err)
	c, err := net.DialUDP("udp", nil, ua)
	require.NoError(tb, err)
	tb.Cleanup(func() { c.Close() })
	require.NoError(tb, c.SetDeadline(time.Now().Add(time.Minute)))
	return c
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
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", dns.TypeA)
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
	c := startEchoUDP(t)
	query, answer := packedQuery(t), make([]byte, 512)
	echoBurst(t, c, query, answer, 32) // warm: the loop's buffers, the poller
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		echoBurst(t, c, query, answer, 20)
	}
	runtime.ReadMemStats(&after)
	allocs := after.Mallocs - before.Mallocs
	require.Less(t, allocs, uint64(100), "allocations over 2,000 queries answered inline")
}

// BenchmarkUDPLoopInline is one query answered inline through the real UDP
// loop (recvmmsg, the handler, sendmmsg) from a loopback client sending
// bursts of 16; allocs/op is the loop's.
func BenchmarkUDPLoopInline(b *testing.B) {
	c := startEchoUDP(b)
	query, answer := packedQuery(b), make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		echoBurst(b, c, query, answer, 16)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16), "ns/query")
}
