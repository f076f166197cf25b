package testnet

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
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
// address is added nodad, usable at once), and returns true: the caller
// goes on with the test. Without `unshare -rn` (no
// unprivileged user namespaces, no unshare or ip) t is skipped, and fails
// under CI=true.
func InNetns(t *testing.T, ipCommands ...string) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		for _, c := range append([]string{"link set lo up"}, ipCommands...) {
			args := strings.Fields(c)
			if len(args) > 2 && args[0] == "addr" && args[1] == "add" && strings.Contains(args[2], ":") {
				// An IPv6 address is tentative until duplicate address
				// detection, skipped on lo, is marked done by a kernel
				// worker; on a busy machine a bind to it came first and
				// failed ("cannot assign requested address"). nodad
				// adds it usable at once.
				args = append(args, "nodad")
			}
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", c, err, out)
			}
		}
		return true
	}
	if out, err := exec.Command("unshare", "-rn", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("needs a network namespace of its own, and `unshare -rn ip link set lo up` failed: %v: %s", err, bytes.TrimSpace(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI installs util-linux and iproute2: see .ci/run)")
		}
		t.Skip(msg)
	}
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
