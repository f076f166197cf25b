// Package testnet holds loopback helpers for tests.
package testnet

import (
	"net"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// RefusingAddr returns a 127.0.0.1 address ("127.0.0.1:PORT") whose port
// refuses UDP datagrams (ICMP port unreachable: a connected client reads
// ECONNREFUSED) and TCP connections (RST) until the test ends.
//
// The port stays held meanwhile, by a UDP socket connected to itself (the
// kernel finds no socket for datagrams from anyone else) and a TCP socket
// bound but not listening, neither with SO_REUSEADDR or SO_REUSEPORT, so
// no other socket can bind it. A port closed to free it could be taken by
// another test process running beside (go test runs packages at once)
// and answer: a benchlat test saw exactly that in CI.
func RefusingAddr(t testing.TB) string {
	t.Helper()
	for range 10 {
		udp, err := socket(unix.SOCK_DGRAM)
		if err != nil {
			t.Fatal(err)
		}
		loopback := [4]byte{127, 0, 0, 1}
		port := 0
		if err = unix.Bind(udp, &unix.SockaddrInet4{Addr: loopback}); err == nil {
			var sa unix.Sockaddr
			if sa, err = unix.Getsockname(udp); err == nil {
				port = sa.(*unix.SockaddrInet4).Port
				err = unix.Connect(udp, sa) // to itself: nobody else's datagram is its
			}
		}
		if err != nil {
			unix.Close(udp)
			t.Fatal(err)
		}
		tcp, err := socket(unix.SOCK_STREAM)
		if err != nil {
			unix.Close(udp)
			t.Fatal(err)
		}
		if err := unix.Bind(tcp, &unix.SockaddrInet4{Addr: loopback, Port: port}); err != nil {
			unix.Close(udp) // the port is taken on TCP: another one
			unix.Close(tcp)
			continue
		}
		t.Cleanup(func() {
			unix.Close(udp)
			unix.Close(tcp)
		})
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	t.Fatal("no loopback port free on both UDP and TCP in 10 tries")
	return ""
}

// socket is an IPv4 socket of type typ, closed on exec (SOCK_CLOEXEC is
// not on every system).
func socket(typ int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}
