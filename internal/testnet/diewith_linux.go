package testnet

import (
	"os/exec"
	"syscall"
)

// DieWithTest has the process cmd starts sent SIGTERM when the test
// binary that started it dies (prctl PR_SET_PDEATHSIG, set by
// SysProcAttr.Pdeathsig): a test killed at its timeout, whose cleanups
// never run, leaves no server behind. The signal follows the OS thread
// that starts the process; no test here locks a goroutine to its thread,
// so the runtime never ends that thread before the test binary ends.
// Call it before cmd.Start.
func DieWithTest(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}
