package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHelpGoesToStdout: help that is asked for (-h, -help, --help, `help
// COMMAND`) is printed on stdout with exit 0, for every command, so that
// `dnsfence check --help | grep strict` and `dnsfence explain -h | less`
// show it, as `dnsfence --help` did; a command line that is wrong gets
// the error and the usage on stderr with exit 2 and nothing on stdout.
// Before, a command's own -h went to stderr (the flag package's usage
// function, which serves both), unlike the top level's. The built binary
// is run, so that the streams are the process's.
func TestHelpGoesToStdout(t *testing.T) {
	bin := binary(t)
	runBin := func(args ...string) (code int, stdout, stderr string) {
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), out.String(), errOut.String()
		}
		require.NoError(t, err, "%v", args)
		return 0, out.String(), errOut.String()
	}
	for _, cmd := range []string{"serve", "check", "explain", "health", "version"} {
		for _, flag := range []string{"-h", "-help", "--help"} {
			args := []string{cmd, flag}
			code, stdout, stderr := runBin(args...)
			assert.Equal(t, 0, code, "%v", args)
			assert.True(t, strings.HasPrefix(stdout, "usage: dnsfence "+cmd), "%v: the usage on stdout, got %q", args, stdout)
			assert.Empty(t, stderr, "%v: nothing on stderr", args)
		}
		code, stdout, stderr := runBin("help", cmd)
		assert.Equal(t, 0, code, "help %s", cmd)
		assert.True(t, strings.HasPrefix(stdout, "usage: dnsfence "+cmd), "help %s: the usage on stdout, got %q", cmd, stdout)
		assert.Empty(t, stderr, "help %s", cmd)
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"-config", "x.yaml", "-h"}} {
		code, stdout, stderr := runBin(args...)
		assert.Equal(t, 0, code, "%v", args)
		assert.Contains(t, stdout, "usage: dnsfence", "%v: the usage on stdout", args)
		assert.Empty(t, stderr, "%v", args)
	}
	for _, cmd := range []string{"serve", "check", "explain", "health"} {
		args := []string{cmd, "-bogus"}
		code, stdout, stderr := runBin(args...)
		assert.Equal(t, 2, code, "%v", args)
		assert.Empty(t, stdout, "%v: nothing on stdout for a wrong command line", args)
		assert.Contains(t, stderr, "flag provided but not defined: -bogus", "%v", args)
		assert.Contains(t, stderr, "usage: dnsfence "+cmd, "%v: the usage with the error", args)
	}
}
