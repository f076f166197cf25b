package testnet

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a port of ip (a loopback address) free for both UDP and
// TCP at the time of the call, for a server the test starts as a process
// (named, nsd, knotd), which cannot be handed a socket.
//
// The port is outside the kernel's ephemeral range (ip_local_port_range),
// from which every port-0 bind and connect of every process is given one:
// of the test processes go test runs beside this one, of dig, and of
// named, which picks its source ports at random in that range with
// SO_REUSEPORT. A port picked there and closed could be taken before the
// server binds it (named then shares its UDP port with another test's
// SO_REUSEPORT group, or fails its TCP bind), and a named whose NOTIFY
// source port happened to be the port of the dnsfence it notifies (one
// in about 28,000) read its own NOTIFY, which never reached dnsfence.
// Outside the range only another FreePort can pick the port, and each
// picks at random among some 20,000.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	lo, hi := portsOutsideEphemeral()
	for range 100 {
		port := 0
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			if port != 0 && errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			t.Fatalf("listening on %s: %v", ip, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
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

// portsOutsideEphemeral returns the ports [lo, hi) FreePort picks from:
// 10000 up to the start of the kernel's ephemeral range (32768 by
// default), or above its end when it starts too low; lo == hi when
// neither leaves 2,000 ports (FreePort then lets the kernel pick, as
// before).
func portsOutsideEphemeral() (lo, hi int) {
	first, last := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			a, errA := strconv.Atoi(f[0])
			z, errZ := strconv.Atoi(f[1])
			if errA == nil && errZ == nil {
				first, last = a, z
			}
		}
	}
	switch {
	case first-10000 >= 2000:
		return 10000, first
	case 65536-(last+1) >= 2000:
		return last + 1, 65536
	}
	return 0, 0
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

// WriteTree writes files (path relative to the folder: content) under a
// new temporary folder of t's, making the folders they need, and returns
// the folder.
func WriteTree(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Seed adds every file matching the patterns (filepath.Glob) to f's
// corpus, whole; a pattern that matches nothing fails f.
func Seed(f *testing.F, patterns ...string) {
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

// HoldOpen starts a shell that opens path on descriptor 3 with redirect
// (">>" to append, "<" to read, as sh writes them), writes nothing, and
// keeps it open until the test ends; it returns once the file is open.
// A process other than the test's, as /proc shows a list's writer or
// reader.
func HoldOpen(t testing.TB, path, redirect string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", `exec 3`+redirect+`"$0" && echo open && exec sleep 600`, path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "open\n" {
		t.Fatalf("holding %s open: %q, %v", path, line, err)
	}
	return cmd
}

// InotifyInstances counts the inotify instances the process holds open
// (Linux: /proc/self/fd), so that a test can see a watcher closed; -1
// where /proc does not say.
func InotifyInstances() int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == "anon_inode:inotify" {
			n++
		}
	}
	return n
}
