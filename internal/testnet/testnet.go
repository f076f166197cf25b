// Package testnet holds loopback helpers for tests.
package testnet

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Serve starts each server (its PacketConn or Listener already set: see
// ListenBoth), returns once each is serving, and shuts them down when the
// test ends.
func Serve(t testing.TB, servers ...*dns.Server) {
	t.Helper()
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
}

// ServeQuestions is a bare UDP upstream on 127.0.0.1 (no TCP side, no
// miekg/dns server) until the test ends: it reads each query sent to it
// and hands those that unpack with one question to serve, with the socket
// and the sender to answer (or not); it returns the socket.
func ServeQuestions(t testing.TB, serve func(pc net.PacketConn, q *dns.Msg, from net.Addr)) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) == nil && len(q.Question) == 1 {
			serve(pc, q, from)
		}
	})
	return pc
}

// EachDatagram hands each datagram pc reads, and its sender, to fn, on a
// goroutine of its own, until a read fails (pc closed). b is the read's
// octets, in a buffer of 65,535 octets the next read reuses: fn copies
// what it keeps.
func EachDatagram(pc net.PacketConn, fn func(b []byte, from net.Addr)) {
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			fn(buf[:n], from)
		}
	}()
}

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
		loopback := [4]byte{127, 0, 0, 1}
		tcp, err := socket(unix.SOCK_STREAM)
		if err != nil {
			t.Fatal(err)
		}
		port := 0
		if err = unix.Bind(tcp, &unix.SockaddrInet4{Addr: loopback}); err == nil {
			var sa unix.Sockaddr
			if sa, err = unix.Getsockname(tcp); err == nil {
				port = sa.(*unix.SockaddrInet4).Port
			}
		}
		if err != nil {
			unix.Close(tcp)
			t.Fatal(err)
		}
		udp, err := socket(unix.SOCK_DGRAM)
		if err != nil {
			unix.Close(tcp)
			t.Fatal(err)
		}
		sa := &unix.SockaddrInet4{Addr: loopback, Port: port}
		if err := unix.Bind(udp, sa); err != nil {
			unix.Close(udp) // the port is taken on UDP: another one
			unix.Close(tcp)
			continue
		}
		if err := unix.Connect(udp, sa); err != nil { // to itself: nobody else's datagram is its
			unix.Close(udp)
			unix.Close(tcp)
			t.Fatal(err)
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

// ListenBoth listens on one port of 127.0.0.1 for both UDP and TCP until
// the caller closes them: a test upstream's (ListenBothOn).
func ListenBoth() (net.PacketConn, net.Listener, error) { return ListenBothOn("127.0.0.1") }

// ListenBothOn listens on one port of the loopback address ip for both UDP
// and TCP until the caller closes them. The kernel picks the port for
// TCP, where it is most often taken (an outgoing connection's port is held
// for a minute after it closes, in TIME_WAIT, against any listener), and
// the UDP socket then binds it, another pick when a UDP socket has it.
func ListenBothOn(ip string) (net.PacketConn, net.Listener, error) {
	for try := 0; ; try++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, nil, err
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			return pc, ln, nil
		}
		ln.Close()
		if try >= 10 {
			return nil, nil, err
		}
	}
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

// UDPBoundHere reports whether a socket of this process is bound to the
// UDP address addr ("127.0.0.1:5353", "[::1]:853"), from the kernel's
// table of UDP sockets (/proc/net/udp and udp6) and this process's file
// descriptors (/proc/self/fd). A test asking whether a socket it closed
// let its address go cannot bind the address itself to find out: once
// freed, an ephemeral port may be taken at once by any other process's
// socket (another package's tests, run in parallel), and the bind fails
// though the socket closed.
func UDPBoundHere(t testing.TB, addr string) bool {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatalf("UDPBoundHere: %v", err)
	}
	ip := ap.Addr().Unmap()
	table := "/proc/net/udp6"
	if ip.Is4() {
		table = "/proc/net/udp"
	}
	// The address as the table writes it: each 4-octet word of the IP
	// in host (little-endian) order, then the port, in hex.
	var want strings.Builder
	for b := ip.AsSlice(); len(b) > 0; b = b[4:] {
		fmt.Fprintf(&want, "%08X", binary.LittleEndian.Uint32(b))
	}
	fmt.Fprintf(&want, ":%04X", ap.Port())
	text, err := os.ReadFile(table)
	if err != nil {
		t.Fatalf("UDPBoundHere: %v", err)
	}
	inodes := map[string]bool{}
	for line := range strings.Lines(string(text)) {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
		if f := strings.Fields(line); len(f) > 9 && f[1] == want.String() {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("UDPBoundHere: %v", err)
	}
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && inodes[link] {
			return true
		}
	}
	return false
}
