package testnet

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDaemonDiesWithTest: a server a Daemon started is stopped when the
// test binary that started it dies without running its cleanups, as one
// killed at its timeout does. The test runs itself again as a child that
// starts a Daemon (sleep), prints its PID and exits at once; the sleep
// must be gone soon after.
func TestDaemonDiesWithTest(t *testing.T) {
	if os.Getenv("DNSFENCE_DIEWITH_CHILD") == "1" {
		var d Daemon
		d.Start(t, "", "sleep", "60") // the working folder: t.TempDir would outlive the exit
		d.mu.Lock()
		pid := d.cmd.Process.Pid
		d.mu.Unlock()
		os.Stdout.WriteString("PID " + strconv.Itoa(pid) + "\n")
		os.Exit(0) // no cleanup, no Stop
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDaemonDiesWithTest$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DNSFENCE_DIEWITH_CHILD=1")
	out, err := cmd.Output()
	require.NoError(t, err, "%s", out)
	_, after, ok := strings.Cut(string(out), "PID ")
	require.True(t, ok, "%s", out)
	pid, err := strconv.Atoi(strings.Fields(after)[0])
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		// Gone, or a zombie no one reaps yet (its parent is dead; init
		// reaps it): either way no longer running.
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err != nil || strings.Contains(string(stat), ") Z ")
	}, 5*time.Second, 10*time.Millisecond, "the daemon (pid %d) outlived its test", pid)
}
