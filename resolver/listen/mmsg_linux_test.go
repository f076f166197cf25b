package listen

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TestRawBatchRoundTrip sends a batch from one socket to two others with
// sendmmsg and reads it back with recvmmsg, on IPv4 and IPv6: payloads,
// source addresses and ports, and the truncation flag of a datagram larger
// than its buffer.
func TestRawBatchRoundTrip(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			listen := func() *net.UDPConn {
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(host)})
				require.NoError(t, err)
				t.Cleanup(func() { c.Close() })
				return c
			}
			from, to1, to2 := listen(), listen(), listen()
			w, err := newRawBatch(from)
			require.NoError(t, err)
			var out []ipv4.Message
			for i := 0; i < 6; i++ {
				to := to1
				if i%2 == 1 {
					to = to2
				}
				out = append(out, ipv4.Message{Buffers: [][]byte{fmt.Appendf(nil, "datagram %d", i)}, Addr: to.LocalAddr()})
			}
			out = append(out, ipv4.Message{Buffers: [][]byte{make([]byte, 100)}, Addr: to1.LocalAddr()})
			n, err := w.WriteBatch(out, 0)
			require.NoError(t, err)
			require.Equal(t, len(out), n)

			for k, to := range []*net.UDPConn{to1, to2} {
				r, err := newRawBatch(to)
				require.NoError(t, err)
				in := make([]ipv4.Message, 8)
				for i := range in {
					in[i].Buffers = [][]byte{make([]byte, 50)}
				}
				var got []string
				truncated := 0
				for len(got)+truncated < 3+(1-k) { // to1 also has the large one
					n, err := r.ReadBatch(in, 0)
					require.NoError(t, err)
					for _, m := range in[:n] {
						assert.Equal(t, from.LocalAddr().String(), m.Addr.String())
						if m.Flags&unix.MSG_TRUNC != 0 {
							truncated++
							continue
						}
						got = append(got, string(m.Buffers[0][:m.N]))
					}
				}
				if k == 0 {
					assert.Equal(t, []string{"datagram 0", "datagram 2", "datagram 4"}, got)
					assert.Equal(t, 1, truncated)
				} else {
					assert.Equal(t, []string{"datagram 1", "datagram 3", "datagram 5"}, got)
				}
			}
		})
	}
}

func TestRawBatchRejectsIPv6OnIPv4Socket(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer c.Close()
	w, err := newRawBatch(c)
	require.NoError(t, err)
	_, err = w.WriteBatch([]ipv4.Message{{Buffers: [][]byte{[]byte("x")}, Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 53}}}, 0)
	assert.ErrorIs(t, err, errAddrFamily)
}

func TestMmsghdrSize(t *testing.T) {
	// The kernel's struct mmsghdr is 64 bytes on 64-bit Linux, 32 on 32-bit.
	assert.EqualValues(t, 8*unsafe.Sizeof(uintptr(0)), unsafe.Sizeof(mmsghdr{}))
}

// TestRawBatchSendsUpToABadAddress: a message whose address cannot be
// written fails alone, after the messages before it are sent.
func TestRawBatchSendsUpToABadAddress(t *testing.T) {
	from, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer from.Close()
	to, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer to.Close()
	w, err := newRawBatch(from)
	require.NoError(t, err)
	ms := []ipv4.Message{
		{Buffers: [][]byte{[]byte("one")}, Addr: to.LocalAddr()},
		{Buffers: [][]byte{[]byte("bad")}, Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 53}},
		{Buffers: [][]byte{[]byte("two")}, Addr: to.LocalAddr()},
	}
	n, err := w.WriteBatch(ms, 0)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	_, err = w.WriteBatch(ms[1:], 0)
	assert.ErrorIs(t, err, errAddrFamily)
	n, err = w.WriteBatch(ms[2:], 0)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	buf := make([]byte, 10)
	for _, want := range []string{"one", "two"} {
		k, _, err := to.ReadFromUDP(buf)
		require.NoError(t, err)
		assert.Equal(t, want, string(buf[:k]))
	}
}

// TestRawBatchReadsWithChangingBatches: ReadBatch sets a header again only
// when its buffer changed or the kernel wrote to it. Reads of one buffer
// set, then of a shorter buffer (truncation), a new buffer, fewer and then
// more messages each give the payload, size, flags and sender of every
// datagram, from senders of different ports.
func TestRawBatchReadsWithChangingBatches(t *testing.T) {
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	to := listen()
	senders := []*net.UDPConn{listen(), listen(), listen()}
	r, err := newRawBatch(to)
	require.NoError(t, err)
	in := make([]ipv4.Message, 4)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 64)}
	}
	// read sends one datagram from each of the senders named and reads
	// them back with in[:k].
	seq := 0
	read := func(k int, from ...int) {
		t.Helper()
		want := map[string]string{}
		for _, s := range from {
			seq++
			p := fmt.Sprintf("datagram %02d from %d", seq, s)
			_, err := senders[s].WriteTo([]byte(p), to.LocalAddr())
			require.NoError(t, err)
			want[p] = senders[s].LocalAddr().String()
		}
		for got := 0; got < len(from); {
			n, err := r.ReadBatch(in[:k], 0)
			require.NoError(t, err)
			require.LessOrEqual(t, n, k)
			for _, m := range in[:n] {
				b := m.Buffers[0]
				require.LessOrEqual(t, m.N, len(b), "read into the buffer given, not past it")
				if m.Flags&unix.MSG_TRUNC != 0 {
					require.Equal(t, len(b), m.N, "a truncated datagram fills its buffer")
					for p, addr := range want {
						if p[:len(b)] == string(b[:m.N]) {
							assert.Equal(t, addr, m.Addr.String())
							delete(want, p)
							break
						}
					}
				} else {
					p := string(b[:m.N])
					require.Contains(t, want, p)
					assert.Equal(t, want[p], m.Addr.String(), p)
					delete(want, p)
				}
				got++
			}
		}
		assert.Empty(t, want)
	}
	read(4, 0, 1, 2)
	read(4, 2, 1, 0, 1)
	// One datagram: only the first header is the kernel's since. The third
	// is then given a shorter buffer: its datagram is truncated, flagged.
	read(4, 0)
	in[2].Buffers[0] = in[2].Buffers[0][:6]
	read(4, 0, 1, 2)
	read(4, 1)
	// Another buffer, then fewer messages, then all again.
	in[2].Buffers[0] = make([]byte, 64)
	read(4, 1, 1, 1, 1)
	read(1, 2, 0)
	read(4, 0, 1, 2, 2)
}

// TestBatchReadDontWait: ReadBatch with MSG_DONTWAIT fails at once with
// EAGAIN on a socket with nothing queued, even with no read deadline,
// and reads what is queued, both as rawBatch makes the call and as
// x/net's (the other systems'), so that a reader can take what arrived
// before it acts on the time (the upstream sockets' sweep). rawBatch
// ignored the flag before: the read waited for a datagram.
func TestBatchReadDontWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(*net.UDPConn) BatchConn
	}{
		{"raw", func(c *net.UDPConn) BatchConn {
			b, err := newRawBatch(c)
			require.NoError(t, err)
			return b
		}},
		{"x/net", xnetBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer c.Close()
			b := tc.make(c)
			in := make([]ipv4.Message, 4)
			for i := range in {
				in[i].Buffers = [][]byte{make([]byte, 50)}
			}
			done := make(chan error, 1)
			go func() {
				_, err := b.ReadBatch(in, unix.MSG_DONTWAIT)
				done <- err
			}()
			select {
			case err := <-done:
				assert.ErrorIs(t, err, unix.EAGAIN)
			case <-time.After(5 * time.Second):
				_ = c.Close() // ends the read
				t.Fatal("the read waited for a datagram")
			}

			for i := range 2 {
				_, err := c.WriteTo(fmt.Appendf(nil, "datagram %d", i), c.LocalAddr())
				require.NoError(t, err)
			}
			var got []string
			for len(got) < 2 {
				n, err := b.ReadBatch(in, unix.MSG_DONTWAIT)
				require.NoError(t, err, "queued datagrams are read")
				for _, m := range in[:n] {
					got = append(got, string(m.Buffers[0][:m.N]))
				}
			}
			assert.Equal(t, []string{"datagram 0", "datagram 1"}, got)
			_, err = b.ReadBatch(in, unix.MSG_DONTWAIT)
			assert.ErrorIs(t, err, unix.EAGAIN, "nothing left")
		})
	}
}

// TestRawBatchLinkLocal: WriteBatch sends to a link-local address
// (fe80::/10, which is reached only through its interface) through the
// interface its zone names, by number (as ReadBatch gives a sender's) or
// by name (an upstream configured as fe80::1%eth0): without it the send
// fails. ReadBatch gives a link-local sender's zone as its interface's
// number. It binds [::] and adds a link-local address to lo, so it runs
// in a network namespace of its own.
func TestRawBatchLinkLocal(t *testing.T) {
	if !testnet.InNetns(t, "addr add fe80::190:2/64 dev lo") {
		return
	}
	lo, err := net.InterfaceByName("lo")
	require.NoError(t, err)
	listen := func(a *net.UDPAddr) *net.UDPConn {
		c, err := net.ListenUDP("udp6", a)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		return c
	}
	// The sender is bound to no address and no interface: a socket bound
	// to either sends through it whatever the zone.
	from := listen(&net.UDPAddr{IP: net.IPv6unspecified})
	to := listen(&net.UDPAddr{IP: net.ParseIP("fe80::190:2"), Zone: "lo"})
	w, err := newRawBatch(from)
	require.NoError(t, err)
	r, err := newRawBatch(to)
	require.NoError(t, err)
	dst := func(zone string) *net.UDPAddr {
		return &net.UDPAddr{IP: net.ParseIP("fe80::190:2"), Port: to.LocalAddr().(*net.UDPAddr).Port, Zone: zone}
	}
	// Each from the address asked, as a wildcard listener sends its
	// answers (putSrc): the kernel takes a link-local source only with
	// the interface it is on.
	src := make([]byte, srcOOBSize)
	src = src[:putSrc(src, netip.MustParseAddr("fe80::190:2"))]
	n, err := w.WriteBatch([]ipv4.Message{
		{Buffers: [][]byte{[]byte("by number")}, Addr: dst(strconv.Itoa(lo.Index)), OOB: src},
		{Buffers: [][]byte{[]byte("by name")}, Addr: dst("lo"), OOB: src},
	}, 0)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	// A zone that names no interface fails as the kernel fails it.
	_, err = w.WriteBatch([]ipv4.Message{{Buffers: [][]byte{[]byte("nowhere")}, Addr: dst("nosuch0"), OOB: src}}, 0)
	assert.ErrorIs(t, err, unix.EINVAL)

	in := make([]ipv4.Message, 2)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 50)}
	}
	var got []string
	for len(got) < 2 {
		n, err := r.ReadBatch(in, 0)
		require.NoError(t, err)
		for _, m := range in[:n] {
			got = append(got, string(m.Buffers[0][:m.N]))
			a := m.Addr.(*net.UDPAddr)
			assert.True(t, a.IP.IsLinkLocalUnicast(), a.IP)
			assert.Equal(t, from.LocalAddr().(*net.UDPAddr).Port, a.Port)
			assert.Equal(t, strconv.Itoa(lo.Index), a.Zone, "the interface's number")
		}
	}
	assert.Equal(t, []string{"by number", "by name"}, got)
}

// TestRawBatchWritesOnAConnectedSocket: on a connected socket (an
// upstream's) a message with no address, nil or a nil *net.UDPAddr, goes
// to the socket's peer; an empty batch sends nothing and fails nothing.
func TestRawBatchWritesOnAConnectedSocket(t *testing.T) {
	to, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 190, 1)})
	require.NoError(t, err)
	defer to.Close()
	from, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 190, 1)}, to.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer from.Close()
	w, err := newRawBatch(from)
	require.NoError(t, err)
	n, err := w.WriteBatch(nil, 0)
	require.NoError(t, err)
	assert.Zero(t, n)
	n, err = w.WriteBatch([]ipv4.Message{
		{Buffers: [][]byte{[]byte("no address")}},
		{Buffers: [][]byte{[]byte("nil address")}, Addr: (*net.UDPAddr)(nil)},
	}, 0)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.NoError(t, to.SetDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 20)
	for _, want := range []string{"no address", "nil address"} {
		k, peer, err := to.ReadFromUDP(buf)
		require.NoError(t, err)
		assert.Equal(t, want, string(buf[:k]))
		assert.Equal(t, from.LocalAddr().String(), peer.String())
	}
}

// TestRawBatchReadsIntoNewBuffersOfTheSameSize: a message given another
// buffer or another OOB of the size of the one before gets its datagram
// and its control messages there, not in the old one: ReadBatch sets a
// header again when its buffer's address changed, not only its length,
// also for a message the kernel did not write in the read before; and the
// sender is the one it was (127.0.190.2, whose octets differ).
func TestRawBatchReadsIntoNewBuffersOfTheSameSize(t *testing.T) {
	to, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 190, 1)})
	require.NoError(t, err)
	defer to.Close()
	turnOn(t, to, unix.IPPROTO_IP, unix.IP_PKTINFO)
	from, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 190, 2)}, to.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer from.Close()
	require.NoError(t, to.SetDeadline(time.Now().Add(5*time.Second)))
	r, err := newRawBatch(to)
	require.NoError(t, err)

	in := make([]ipv4.Message, 2)
	for i := range in {
		in[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 64)}, OOB: make([]byte, dstOOBSize)}
	}
	seq := 0
	// read sends k datagrams and reads them, checking each message read.
	read := func(k int, renewed string) {
		t.Helper()
		var want []string
		for range k {
			seq++
			want = append(want, fmt.Sprintf("datagram %d", seq))
			_, err := from.Write([]byte(want[len(want)-1]))
			require.NoError(t, err)
		}
		var got []string
		for len(got) < k {
			n, err := r.ReadBatch(in, 0)
			require.NoError(t, err)
			for _, m := range in[:n] {
				got = append(got, string(m.Buffers[0][:m.N]))
				assert.Equal(t, from.LocalAddr().String(), m.Addr.String(), "the sender")
				assert.Equal(t, netip.MustParseAddr("127.0.190.1"), dstOf(m.OOB[:m.NN]), "the destination, %s", renewed)
			}
		}
		assert.Equal(t, want, got, renewed)
	}
	for _, renew := range []string{"buffer", "OOB", "both"} {
		read(1, "") // the kernel writes the first message's header alone
		switch renew {
		case "buffer":
			in[1].Buffers[0] = make([]byte, 64)
		case "OOB":
			in[1].OOB = make([]byte, dstOOBSize)
		case "both":
			in[1].Buffers[0], in[1].OOB = make([]byte, 64), make([]byte, dstOOBSize)
		}
		read(2, "the second message's "+renew+" renewed")
	}
}

// TestRawBatchNothingQueuedAllocatesNothing: a ReadBatch with
// MSG_DONTWAIT that finds nothing queued fails with EAGAIN and allocates
// nothing: an upstream socket's reader looks so before each sweep, and
// meets it every time no answer came.
func TestRawBatchNothingQueuedAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates: allocations are counted without it")
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 190, 1)})
	require.NoError(t, err)
	defer c.Close()
	b, err := newRawBatch(c)
	require.NoError(t, err)
	in := []ipv4.Message{{Buffers: [][]byte{make([]byte, 64)}}}
	allocs := testing.AllocsPerRun(100, func() {
		_, err = b.ReadBatch(in, unix.MSG_DONTWAIT)
	})
	require.ErrorIs(t, err, unix.EAGAIN)
	assert.Zero(t, allocs, "allocations of a read that finds nothing queued")
}

// turnOn sets the socket option level/opt of c to 1.
func turnOn(t *testing.T, c *net.UDPConn, level, opt int) {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) }))
	require.NoError(t, serr)
}
