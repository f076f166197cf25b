package listen

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	proxyproto "github.com/pires/go-proxyproto"
)

// proxyPeer is a connection from a trusted proxy at a TCP address: a pipe
// whose RemoteAddr is what a TCP listener's connection gives.
type proxyPeer struct {
	net.Conn
	peer *net.TCPAddr
}

func (p proxyPeer) RemoteAddr() net.Addr { return p.peer }

// headerSource is the client a PROXY header names, read from its octets
// apart from the library that parses it: ok is false for a header that
// names no client (v2 LOCAL, UNSPEC or UNIX; v1 UNKNOWN), so that the
// connection's client is the proxy itself.
func headerSource(data []byte) (client netip.AddrPort, ok bool) {
	const sig = "\r\n\r\n\x00\r\nQUIT\n"
	if len(data) >= 16 && string(data[:12]) == sig {
		if data[12]&0x0f != 0x01 { // LOCAL: the proxy speaks for itself
			return netip.AddrPort{}, false
		}
		body := data[16:]
		switch data[13] {
		case 0x11, 0x12: // TCP and UDP over IPv4
			if len(body) < 12 {
				return netip.AddrPort{}, false
			}
			ip := netip.AddrFrom4([4]byte(body[:4]))
			return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[8:10])), true
		case 0x21, 0x22: // TCP and UDP over IPv6
			if len(body) < 36 {
				return netip.AddrPort{}, false
			}
			ip := netip.AddrFrom16([16]byte(body[:16]))
			return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[32:34])), true
		}
		return netip.AddrPort{}, false
	}
	line, _, found := bytes.Cut(data, []byte("\r\n"))
	if !found {
		return netip.AddrPort{}, false
	}
	fields := strings.Split(string(line), " ")
	if len(fields) != 6 || fields[0] != "PROXY" || (fields[1] != "TCP4" && fields[1] != "TCP6") {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(fields[2])
	if err != nil {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(fields[4], 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, uint16(port)), true
}

// FuzzProxyHeader feeds arbitrary bytes to a TCP connection from a trusted
// proxy: whatever the PROXY header says, the server must not crash, and a
// header the library accepts names as the client exactly the source it
// gives for a TCP or UDP family (a proxy relays a UDP client's query over
// TCP with UDP in the header, as dnsdist does), and the proxy itself for
// LOCAL, UNSPEC and UNIX: never an address the header does not hold.
func FuzzProxyHeader(f *testing.F) {
	testnet.Seed(f, "testdata/proxy/*.bin")
	v2 := func(cmd, fam byte, addrs []byte) []byte {
		h := []byte("\r\n\r\n\x00\r\nQUIT\n")
		h = append(h, cmd, fam, byte(len(addrs)>>8), byte(len(addrs)))
		return append(h, addrs...)
	}
	four := []byte{10, 1, 2, 3, 127, 0, 0, 1, 0x0f, 0xa0, 0, 53}
	six := append(append(netip.MustParseAddr("2001:db8::7").AsSlice(), netip.IPv6Loopback().AsSlice()...), 0x0f, 0xa0, 0, 53)
	f.Add(v2(0x21, 0x11, four))
	f.Add(v2(0x21, 0x12, four))
	f.Add(v2(0x21, 0x21, six))
	f.Add(v2(0x21, 0x22, six))
	f.Add(v2(0x20, 0x12, four))
	f.Add(v2(0x21, 0x00, nil))
	f.Add(v2(0x21, 0x31, make([]byte, 216)))
	f.Add([]byte("PROXY TCP6 2001:db8::7 ::1 4000 53\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	proxy := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
	f.Fuzz(func(t *testing.T, data []byte) {
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			_, _ = client.Write(data)
			client.Close()
		}()
		pc := proxyproto.NewConn(proxyPeer{Conn: server, peer: proxy}, proxyproto.WithPolicy(proxyproto.USE))
		c := &tcpConn{Conn: pc}
		buf := make([]byte, 512)
		_, _ = pc.Read(buf) // consumes the header, if any
		addr := c.remoteAddr()
		if pc.ProxyHeader() == nil {
			if addr != proxy {
				t.Fatalf("no PROXY header, yet client %v, not the proxy %v", addr, proxy)
			}
			return
		}
		want, named := headerSource(data)
		if !named {
			if addr != proxy {
				t.Fatalf("header names no client (%x), yet client %v, not the proxy %v", data[:min(len(data), 16)], addr, proxy)
			}
			return
		}
		pa, ok := addr.(*ProxiedAddr)
		if !ok {
			t.Fatalf("header names client %v, got %v (%T)", want, addr, addr)
		}
		got := pa.AddrPort()
		if got.Addr().Unmap() != want.Addr().Unmap() || got.Port() != want.Port() || got.Addr().Zone() != "" {
			t.Fatalf("header names client %v, got %v", want, got)
		}
		if pa.Proxy != proxy.AddrPort() {
			t.Fatalf("proxy %v, want %v", pa.Proxy, proxy.AddrPort())
		}
	})
}
