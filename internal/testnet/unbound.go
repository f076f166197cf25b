package testnet

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// StartUnboundDoT runs an Unbound serving DNS over TLS only, on a free
// port of 127.0.0.1, with the certificate and key in certFile and keyFile
// (PEM), answering from local data only, so that it never asks anything:
// localZone (a FQDN, such as "example.") is a static zone holding the
// records of localData (presentation format, one a line), and any other
// name in it is NXDOMAIN. It returns "127.0.0.1:PORT" once Unbound answers
// a query over TLS (localZone's SOA), and stops it at the end of the test;
// its output and log are in the test's log when the test failed. Without
// unbound the test is skipped (failed under CI=true: NeedProgram).
//
// A TCP connection accepted is not enough: Unbound listens before it
// serves (it opens its ports, then sets up its modules and TLS), and the
// kernel completes connections meanwhile. Under -race on a busy machine
// that took up to 13 s ("init module" to "start of service" in its log),
// and the test's first queries, each within its 5 s timeout, timed out
// on a TLS handshake Unbound had not begun.
func StartUnboundDoT(t testing.TB, certFile, keyFile, localZone string, localData ...string) string {
	t.Helper()
	bin := NeedProgram(t, "unbound", "unbound")
	dir := t.TempDir()
	port := FreePort(t, "127.0.0.1")
	conf := filepath.Join(dir, "unbound.conf")
	logFile := filepath.Join(dir, "unbound.log")
	var data bytes.Buffer
	for _, rr := range localData {
		fmt.Fprintf(&data, "\tlocal-data: %q\n", rr)
	}
	text := fmt.Sprintf(`server:
	verbosity: 1
	num-threads: 1
	interface: 127.0.0.1@%[1]d
	tls-port: %[1]d
	do-ip6: no
	do-udp: no
	tls-service-key: %[2]q
	tls-service-pem: %[3]q
	username: ""
	chroot: ""
	directory: %[4]q
	pidfile: ""
	use-syslog: no
	logfile: %[5]q
	access-control: 127.0.0.0/8 allow
	module-config: "iterator"
	so-reuseport: no
	incoming-num-tcp: 64
	local-zone: %[6]q static
%[7]sremote-control:
	control-enable: no
`, port, keyFile, certFile, dir, logFile, localZone, data.String())
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out SyncBuffer
	cmd := exec.Command(bin, "-d", "-c", conf)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &out
	DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting unbound: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	logs := func() string {
		logged, _ := os.ReadFile(logFile)
		return out.String() + "\n" + string(logged)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("unbound output:\n%s", logs())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Whether Unbound serves, not whom its certificate names: the tests
	// check that over the transport they test.
	c := &dns.Client{Net: "tcp-tls", Timeout: 2 * time.Second, TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(localZone), dns.TypeSOA)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("unbound exited:\n%s", logs())
		default:
		}
		if _, _, err := c.Exchange(q, addr); err == nil {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("unbound did not answer over TLS on %s:\n%s", addr, logs())
		}
	}
}
