package listen

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// seed adds every file matching the patterns to the fuzz corpus.
func seed(f *testing.F, patterns ...string) {
	for _, pattern := range patterns {
		paths, err := filepath.Glob(pattern)
		if err != nil || len(paths) == 0 {
			f.Fatalf("no seeds match %s (%v)", pattern, err)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

// FuzzProxyHeader feeds arbitrary bytes to a TCP connection from a trusted
// proxy: whatever the PROXY header says, the server must not crash, and a
// client it names must be a plain, unzoned address.
func FuzzProxyHeader(f *testing.F) {
	seed(f, "testdata/proxy/*.bin")
	f.Fuzz(func(t *testing.T, data []byte) {
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			_, _ = client.Write(data)
			client.Close()
		}()
		pc := proxyproto.NewConn(server, proxyproto.WithPolicy(proxyproto.USE))
		c := &tcpConn{Conn: pc}
		buf := make([]byte, 512)
		_, _ = pc.Read(buf) // consumes the header, if any
		addr := c.remoteAddr()
		if pa, ok := addr.(*ProxiedAddr); ok {
			a := pa.AddrPort().Addr()
			if !a.IsValid() || a.Zone() != "" {
				t.Fatalf("PROXY header gave client %v", addr)
			}
		}
	})
}
