package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Daemon is a server process a test runs in the foreground (named, nsd,
// knotd), its output kept for Log. The zero Daemon is stopped; it is safe
// for concurrent use.
type Daemon struct {
	mu  sync.Mutex
	cmd *exec.Cmd
	log bytes.Buffer // guarded by mu, written by the process's output
}

// Start runs args[0] with args[1:] in the folder dir, failing t when it
// cannot be started; its output from now on is Log's. Start a stopped
// Daemon only.
func (d *Daemon) Start(t testing.TB, dir string, args ...string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log.Reset()
	d.cmd = exec.Command(args[0], args[1:]...)
	d.cmd.Dir = dir
	d.cmd.Stdout, d.cmd.Stderr = (*daemonOutput)(d), (*daemonOutput)(d)
	DieWithTest(d.cmd)
	if err := d.cmd.Start(); err != nil {
		d.cmd = nil
		t.Fatalf("starting %s: %v", args[0], err)
	}
}

// Stop stops the process (SIGTERM, then SIGKILL after 10 s) and waits for
// it; a stopped Daemon is left as it is.
func (d *Daemon) Stop() {
	d.mu.Lock()
	cmd := d.cmd
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Signal sends sig to the running process, failing t when there is none
// or the signal cannot be sent.
func (d *Daemon) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		t.Fatal("signal to a daemon that is not running")
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Descendants are the process IDs of the running process's children,
// theirs, and so on (Linux's /proc/PID/task/PID/children: the processes
// a main thread started; nsd's server processes are its grandchildren), in
// no order. It fails when none is running or a list cannot be read but
// for a process that ended meanwhile. It does not fail a test, so that a
// condition polled on a goroutine of its own (assert.Eventually) may call
// it.
func (d *Daemon) Descendants() ([]int, error) {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil {
		return nil, errors.New("descendants of a daemon that is not running")
	}
	var pids []int
	for todo := []int{cmd.Process.Pid}; len(todo) > 0; {
		pid := todo[0]
		todo = todo[1:]
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if errors.Is(err, fs.ErrNotExist) && pid != cmd.Process.Pid {
			continue // ended since its parent's list was read
		}
		if err != nil {
			return nil, fmt.Errorf("children of %d: %w", pid, err)
		}
		for _, f := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("children of %d: %q: %w", pid, b, err)
			}
			pids = append(pids, n)
			todo = append(todo, n)
		}
	}
	return pids, nil
}

// Log is what the process wrote to its stdout and stderr since Start.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// Logged reports whether text is in the log within 5 s. A daemon writes
// a line as it acts or after (named logs "AXFR started" as it sends the
// zone), and the line reaches the log through a pipe, so a line asked for
// the moment its act is seen may not be there yet.
func (d *Daemon) Logged(text string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(d.Log(), text) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// daemonOutput writes a Daemon's output into its log under its lock.
type daemonOutput Daemon

func (o *daemonOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.log.Write(p)
}

// SyncBuffer is a bytes.Buffer that a process's output and the test may
// use at once (exec.Cmd's Stdout and Stderr, read while it runs).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
