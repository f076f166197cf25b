package listen

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUDPReceiveDrops makes the kernel drop datagrams on a socket with the
// smallest receive buffer that is not read, and checks that the counter
// reads them from /proc: every datagram sent is either read or counted.
func TestUDPReceiveDrops(t *testing.T) {
	if _, err := os.Stat("/proc/net/udp"); err != nil {
		t.Skip("no /proc/net/udp")
	}
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer rx.Close()
	info, err := setUDPBuffers(rx, 1, 1<<16) // the kernel rounds up to its minimum, a few KiB
	require.NoError(t, err)
	require.NotZero(t, info.Inode)
	d := NewDropCounter()
	assert.Zero(t, d.Total(), "no sockets yet")
	d.Add(info.Inode)
	assert.Zero(t, d.Total(), "nothing dropped yet")

	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer tx.Close()
	const sent = 200
	payload := make([]byte, 1000)
	for range sent {
		_, err := tx.Write(payload)
		require.NoError(t, err)
	}
	received := 0
	buf := make([]byte, 2000)
	require.Eventually(t, func() bool {
		for {
			_ = rx.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := rx.Read(buf); err != nil {
				break
			}
			received++
		}
		return received+int(d.Total()) == sent
	}, 5*time.Second, 10*time.Millisecond, "every datagram is read or counted as dropped")
	assert.Greater(t, int(d.Total()), sent/2, "a buffer of a few KiB holds a few datagrams of 1000 bytes")
	assert.Positive(t, received)

	// Once the socket is closed the count stays: a counter never goes down.
	before := d.Total()
	rx.Close()
	assert.Equal(t, before, d.Total())
}

func TestParseProcUDPDrops(t *testing.T) {
	const table = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  304: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17
  305: 0100007F:A1B3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 5
`
	for _, tc := range []struct {
		name    string
		table   string
		want    map[uint64]uint64
		wantErr bool
	}{
		{name: "ours only", table: table, want: map[uint64]uint64{4242: 17}},
		{name: "header only", table: strings.SplitAfter(table, "\n")[0], want: map[uint64]uint64{}},
		{name: "short line", table: table + "  306: 0100007F:A1B4\n", want: map[uint64]uint64{4242: 17}, wantErr: true},
		// A line of 12 fields has no drops column (index 12): an error,
		// not an index out of range.
		{name: "no drops column", table: table + "  306: 0100007F:A1B4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000\n",
			want: map[uint64]uint64{4242: 17}, wantErr: true},
		{name: "inode not a number", table: table + "  306: 0100007F:A1B4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 x 2 0000000000000000 3\n",
			want: map[uint64]uint64{4242: 17}, wantErr: true},
		{name: "drops not a number", table: table + "  306: 0100007F:A1B4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9999 2 0000000000000000 -1\n",
			want: map[uint64]uint64{4242: 17}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[uint64]uint64{}
			err := parseProcUDPDrops(strings.NewReader(tc.table), map[uint64]bool{4242: true, 9999: true}, got)
			if tc.wantErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestSetUDPBuffersReadsWhatWasGranted: setUDPBuffers asks for both
// buffers and returns what the kernel granted, read back: Linux doubles a
// size under net.core.rmem_max (wmem_max) for its bookkeeping, so 16 KiB
// and 24 KiB asked read 32 KiB and 48 KiB. A closed socket's sizes cannot
// be read: an error, not zeros taken for sizes.
func TestSetUDPBuffersReadsWhatWasGranted(t *testing.T) {
	if _, err := os.Stat("/proc/net/udp"); err != nil {
		t.Skip("not Linux")
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 189, 1)})
	require.NoError(t, err)
	defer c.Close()
	info, err := setUDPBuffers(c, 16<<10, 24<<10)
	require.NoError(t, err)
	assert.Equal(t, 32<<10, info.ReceiveBuffer)
	assert.Equal(t, 48<<10, info.SendBuffer)
	assert.NotZero(t, info.Inode)
	assert.Same(t, c, info.Conn)

	require.NoError(t, c.Close())
	_, err = UDPSocketOf(c)
	assert.Error(t, err)
	_, err = setUDPBuffers(c, 16<<10, 24<<10)
	assert.ErrorContains(t, err, "setting the UDP receive buffer")
}

// TestDropCounterClosesItsTables: each read of the counter closes the
// /proc tables it opened; a scrape every few seconds would otherwise use
// up the process's file descriptors.
func TestDropCounterClosesItsTables(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd")
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 189, 1)})
	require.NoError(t, err)
	defer c.Close()
	info, err := UDPSocketOf(c)
	require.NoError(t, err)
	d := NewDropCounter()
	d.Add(info.Inode)
	open := func() int {
		fds, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		return len(fds)
	}
	before := open()
	for range 100 {
		d.Total()
	}
	assert.Less(t, open(), before+50, "descriptors open after 100 reads")
}

// TestDropCounterCountsEverySocketAdded: the counter sums the drops of
// every socket added, not only the last one's: a second listening socket
// added must not stop the first's drops being counted.
func TestDropCounterCountsEverySocketAdded(t *testing.T) {
	if _, err := os.Stat("/proc/net/udp"); err != nil {
		t.Skip("no /proc/net/udp")
	}
	var inodes []uint64
	var first *net.UDPConn
	for range 2 {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 189, 1)})
		require.NoError(t, err)
		defer c.Close()
		info, err := setUDPBuffers(c, 1, 1<<16)
		require.NoError(t, err)
		inodes = append(inodes, info.Inode)
		if first == nil {
			first = c
		}
	}
	d := NewDropCounter()
	for _, inode := range inodes {
		d.Add(inode)
	}

	tx, err := net.DialUDP("udp", nil, first.LocalAddr().(*net.UDPAddr))
	require.NoError(t, err)
	defer tx.Close()
	payload := make([]byte, 1000)
	for range 200 { // unread, into a receive buffer of a few KiB
		_, err := tx.Write(payload)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return d.Total() > 0 }, 5*time.Second, 10*time.Millisecond,
		"the first socket's drops counted")
}
