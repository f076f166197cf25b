package testnet

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// FreePort returns a port of ip (a loopback address) free for both UDP and
// TCP at the time of the call, for a server the test starts as a process
// (named, nsd, knotd), which cannot be handed a socket.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listening on %s: %v", ip, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatalf("no port of %s free for both UDP and TCP", ip)
	return 0
}

// WriteNewer writes text to the file at path with a modification time
// later than the file's before and at least a second after now, so that a
// server that reloads a file only when its time moved on (named, nsd,
// knotd compare whole seconds) sees every write, even several within one
// second.
func WriteNewer(t testing.TB, path, text string) {
	t.Helper()
	mtime := time.Now().Add(time.Second)
	if st, err := os.Stat(path); err == nil && !mtime.After(st.ModTime()) {
		mtime = st.ModTime().Add(time.Second)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}
