//go:build !linux

package testnet

import "os/exec"

// DieWithTest does nothing where the system has no parent-death signal
// (it is Linux's prctl PR_SET_PDEATHSIG): a test killed at its timeout
// may leave its server running there.
func DieWithTest(cmd *exec.Cmd) {}
