package testnet

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRefusingAddrRefusesAndHolds(t *testing.T) {
	addr := RefusingAddr(t)

	c, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write([]byte("query"))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 64))
	assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "UDP: %v", err)

	_, err = net.DialTimeout("tcp", addr, 5*time.Second)
	assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "TCP: %v", err)

	// Held: nothing else binds it, on either transport.
	_, err = net.ListenPacket("udp", addr)
	assert.Error(t, err, "UDP port taken")
	_, err = net.Listen("tcp", addr)
	assert.Error(t, err, "TCP port taken")
}

// TestFreePortOutsideEphemeralRange: FreePort's port is one no port-0 bind
// or connect of another process is given (named's NOTIFY source, another
// test package's listener), and is free for both UDP and TCP.
func TestFreePortOutsideEphemeralRange(t *testing.T) {
	lo, hi := portsOutsideEphemeral()
	if lo == hi {
		t.Skip("the ephemeral range leaves too few ports outside it")
	}
	for range 20 {
		port := FreePort(t, "127.0.0.1")
		require.GreaterOrEqual(t, port, lo)
		require.Less(t, port, hi)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		u, err := net.ListenPacket("udp", addr)
		require.NoError(t, err)
		l.Close()
		u.Close()
	}
}

// TestUDPBoundHere: a UDP socket of this process is found by its
// address, IPv4 and IPv6, and not once it is closed.
func TestUDPBoundHere(t *testing.T) {
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		pc, err := net.ListenPacket("udp", network)
		if err != nil {
			t.Skipf("%s: %v", network, err)
		}
		addr := pc.LocalAddr().String()
		assert.True(t, UDPBoundHere(t, addr), addr)
		require.NoError(t, pc.Close())
		assert.False(t, UDPBoundHere(t, addr), addr)
	}
}

// TestIPv6AddressAddedIsDelivered: an IPv6 address InNetns adds takes a
// datagram at once. Each of 40 addresses is added as InNetns adds one and
// asked at once: before runIP waited for the local route, a datagram to an
// address whose route the kernel had not yet inserted was dropped (about 1
// address in 30), and a test's first query to ::2 went unanswered.
func TestIPv6AddressAddedIsDelivered(t *testing.T) {
	if !InNetns(t) {
		return
	}
	for i := range 40 {
		addr := "::1:" + strconv.FormatInt(int64(i+1), 16)
		runIP(t, "addr add "+addr+"/128 dev lo")
		pc, err := net.ListenPacket("udp", net.JoinHostPort(addr, "0"))
		require.NoError(t, err, addr)
		c, err := net.Dial("udp", pc.LocalAddr().String())
		require.NoError(t, err, addr)
		_, err = c.Write([]byte("probe"))
		require.NoError(t, err, addr)
		require.NoError(t, pc.SetReadDeadline(time.Now().Add(time.Second)))
		n, _, err := pc.ReadFrom(make([]byte, 16))
		assert.NoError(t, err, "%s: the datagram was not delivered", addr)
		assert.Equal(t, 5, n, addr)
		c.Close()
		pc.Close()
	}
}
