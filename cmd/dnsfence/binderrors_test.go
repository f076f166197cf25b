package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBindErrorsSayWhatToDo: an address dnsfence cannot listen on stops
// its start (exit 1) with an error that says what to do, for the three
// ways a deployment meets: the port held by another server (a second
// dnsfence, systemd-resolved's stub, dnsmasq), an address no interface
// has (a VIP on the backup node, an interface not up yet at boot), and a
// port below 1024 without CAP_NET_BIND_SERVICE (non-root, as in a
// container). Before, each said only the kernel's words ("bind: address
// already in use", "cannot assign requested address", "permission
// denied"), the most asked question of every peer's tracker, for the DNS
// listeners and the metrics endpoint alike.
func TestBindErrorsSayWhatToDo(t *testing.T) {
	upstream, _ := testUpstream(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { held.Close() })
	heldPort := strconv.Itoa(held.Addr().(*net.TCPAddr).Port)
	free := func() string { return "127.0.0.1:" + strconv.Itoa(testnet.FreePort(t, "127.0.0.1")) }

	for _, tc := range []struct {
		name, listen, http string
		want               []string
	}{
		{"DNS port held", "127.0.0.1:" + heldPort, "", []string{"address already in use", "another process holds the port", "ss -lntup 'sport = :" + heldPort + "'"}},
		{"metrics port held", free(), "127.0.0.1:" + heldPort, []string{"address already in use", "ss -lntup 'sport = :" + heldPort + "'"}},
		{"address on no interface", "192.0.2.1:5353", "", []string{"cannot assign requested address", "no interface of this host has that address", "0.0.0.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testnet.WriteTree(t, map[string]string{
				"dnsfence.yaml": fmt.Sprintf("listen: [%q]\nupstreams: [%q]\nhttp: %q\npolicies:\n  - name: gov\n    clients: [\"127.0.0.0/30\"]\n    block: [lists/tiktok.txt]\n",
					tc.listen, upstream, tc.http),
				"lists/tiktok.txt": "tiktok.com\n",
			})
			code, out := runToExit(t, exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml")))
			assert.Equal(t, 1, code, out)
			for _, w := range tc.want {
				assert.Contains(t, out, w)
			}
		})
	}

	// A configuration file gets none of the embedded default's leniency
	// (laptopFriendly): an address it names that no interface has stops
	// the start even beside one that works, rather than serving without
	// it.
	t.Run("address on no interface beside one that works", func(t *testing.T) {
		dir := testnet.WriteTree(t, map[string]string{
			"dnsfence.yaml": fmt.Sprintf("listen: [%q, \"192.0.2.1:5353\"]\nupstreams: [%q]\nhttp: \"\"\npolicies:\n  - name: gov\n    clients: [\"127.0.0.0/30\"]\n    block: [lists/tiktok.txt]\n",
				free(), upstream),
			"lists/tiktok.txt": "tiktok.com\n",
		})
		code, out := runToExit(t, exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml")))
		assert.Equal(t, 1, code, out)
		assert.Contains(t, out, "cannot assign requested address")
		assert.NotContains(t, out, "not listening on an address this machine lacks")
	})

	// The encrypted listeners open after the plain ones: one that cannot
	// stops the start all the same (exit 1), said the same way. No test
	// held one before: a start that went on serving without it passed.
	t.Run("DNS over TLS port held", func(t *testing.T) {
		ca := newE2ECA(t, "dnsfence bind CA")
		dir := testnet.WriteTree(t, map[string]string{"lists/tiktok.txt": "tiktok.com\n"})
		ca.issue(t, filepath.Join(dir, "certs"), "dnsfence", e2eServerName)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), fmt.Appendf(nil,
			"listen: [%q]\nupstreams: [%q]\nhttp: \"\"\ntls: {cert: certs/dnsfence.crt, key: certs/dnsfence.key}\nlisten_tls: [%q]\npolicies:\n  - name: gov\n    clients: [\"127.0.0.0/30\"]\n    block: [lists/tiktok.txt]\n",
			free(), upstream, "127.0.0.1:"+heldPort), 0o644))
		code, out := runToExit(t, exec.Command(binary(t), "-config", filepath.Join(dir, "dnsfence.yaml")))
		assert.Equal(t, 1, code, out)
		for _, w := range []string{"starting the encrypted listeners", "address already in use", "ss -lntup 'sport = :" + heldPort + "'"} {
			assert.Contains(t, out, w)
		}
	})

	t.Run("port below 1024 as non-root", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the binary as another user")
		}
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("setpriv (util-linux) is not installed")
		}
		// A folder the unprivileged user can read, with the binary and the
		// configuration in it.
		dir, err := os.MkdirTemp("", "dnsfence-nonroot")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dir) })
		require.NoError(t, os.Chmod(dir, 0o755))
		bin, err := os.ReadFile(binary(t))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence"), bin, 0o755))
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "lists"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "lists", "tiktok.txt"), []byte("tiktok.com\n"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), fmt.Appendf(nil,
			"listen: [\"127.0.0.1:54\"]\nupstreams: [%q]\nhttp: \"\"\npolicies:\n  - name: gov\n    clients: [\"127.0.0.0/30\"]\n    block: [lists/tiktok.txt]\n", upstream), 0o644))
		code, out := runToExit(t, exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
			filepath.Join(dir, "dnsfence"), "-config", filepath.Join(dir, "dnsfence.yaml")))
		assert.Equal(t, 1, code, out)
		assert.Contains(t, out, "permission denied")
		assert.Contains(t, out, "CAP_NET_BIND_SERVICE")
		assert.Contains(t, out, "net.ipv4.ip_unprivileged_port_start")
	})
}

// runToExit runs cmd to its exit, at most 30 s, and returns its exit code
// and its output (stdout and stderr).
func runToExit(t *testing.T, cmd *exec.Cmd) (int, string) {
	t.Helper()
	var out testnet.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := runProcess(t, cmd)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("still running after 30 s: %s", &out)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}
