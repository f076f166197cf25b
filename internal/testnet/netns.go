package testnet

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// netnsEnv marks the test binary run again inside a network namespace of
// its own: its value is the name of the test run there.
const netnsEnv = "DNSFENCE_TEST_NETNS"

// InNetns runs the top-level test t inside a network namespace of its own,
// where it may bind wildcard addresses (0.0.0.0, [::]) and add addresses
// to lo without touching the host's network: the rule elsewhere is
// loopback only. Called outside, it runs the test binary again under
// `unshare -rn` for t alone, reports that run as t's result and returns
// false: the caller returns. Called inside, it brings lo up, runs each of
// the ip commands given (such as "addr add ::2/128 dev lo"; an IPv6
// address is added nodad and waited for until datagrams to it are
// delivered), and returns true: the caller
// goes on with the test. Without `unshare -rn` (no
// unprivileged user namespaces, no unshare or ip) t is skipped, and fails
// under CI=true.
func InNetns(t *testing.T, ipCommands ...string) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		for _, c := range append([]string{"link set lo up"}, ipCommands...) {
			runIP(t, c)
		}
		return true
	}
	NeedNetns(t)
	cmd := exec.Command("unshare", "-rn", os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace of its own:\n%s", out)
	switch {
	case err != nil:
		t.Fatalf("the test failed in its network namespace: %v", err)
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name())):
		t.Skip("skipped in its network namespace")
	case !bytes.Contains(out, []byte("--- PASS: "+t.Name())):
		t.Fatal("the test did not run in its network namespace")
	}
	return false
}

// NeedNetns skips t, or fails it under CI=true, where this machine gives
// no network namespace of its own (`unshare -rn`: no unprivileged user
// namespaces, no unshare or ip). InNetns asks it first; a test that
// prepares something costly for its run in the namespace asks it before
// that.
func NeedNetns(t *testing.T) {
	t.Helper()
	out, err := exec.Command("unshare", "-rn", "ip", "link", "set", "lo", "up").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("needs a network namespace of its own, and `unshare -rn ip link set lo up` failed: %v: %s", err, bytes.TrimSpace(out))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI installs util-linux and iproute2: see .ci/run)")
	}
	t.Skip(msg)
}

// runIP runs the ip command c (its arguments, space-separated) in the
// network namespace. An IPv6 address added is added nodad and waited for
// (waitLocalRoute): it is tentative until duplicate address detection,
// skipped on lo, is marked done by a kernel worker, and on a busy machine
// a bind to it came first and failed ("cannot assign requested address").
func runIP(t *testing.T, c string) {
	t.Helper()
	args := strings.Fields(c)
	v6 := len(args) > 2 && args[0] == "addr" && args[1] == "add" && strings.Contains(args[2], ":")
	if v6 {
		args = append(args, "nodad")
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", c, err, out)
	}
	if v6 {
		waitLocalRoute(t, strings.Split(args[2], "/")[0])
	}
}

// waitLocalRoute waits, for at most 10 seconds, until the kernel has the
// local route of the IPv6 address addr just added. An address added nodad
// can be bound at once, but its local route (table local) is inserted
// later by the same kernel worker that ends duplicate address detection;
// until then a datagram sent to it leaves by its prefix route, comes back
// in on lo and is dropped as not local (seen in 1 of 30 tries on an idle
// machine: a test's first query to ::2 went unanswered).
func waitLocalRoute(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "-6", "route", "show", "table", "local", addr).CombinedOutput()
		if err != nil {
			t.Fatalf("ip -6 route show table local %s: %v: %s", addr, err, out)
		}
		if bytes.HasPrefix(bytes.TrimSpace(out), []byte("local ")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no local route for %s 10 s after it was added", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// InsideNetns reports whether this test binary is the run of a test in a
// network namespace of its own (InNetns), where fixed ports are its alone.
func InsideNetns() bool { return os.Getenv(netnsEnv) != "" }
