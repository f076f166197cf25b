package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVersionNamesTheBuild: `dnsfence version` says what `go version -m`
// reads from the binary: the module version, the commit it was built
// from, its time and whether the tree had changes (when the build recorded
// them: -buildvcs), and the Go release. An operator asked which build a
// device runs answers with it.
func TestVersionNamesTheBuild(t *testing.T) {
	bin := binary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	info, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(info)), "\n")
	_, goVersion, ok := strings.Cut(lines[0], ": ")
	require.True(t, ok, "go version -m: %s", info)
	want := "dnsfence"
	for _, l := range lines[1:] {
		f := strings.Split(strings.TrimSpace(l), "\t")
		switch {
		case f[0] == "mod" && len(f) >= 3:
			want += " " + f[2]
		case f[0] == "build" && len(f) == 2 && strings.HasPrefix(f[1], "vcs."):
			want += " " + f[1]
		}
	}
	want += " " + goVersion
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	require.NoError(t, err)
	assert.Equal(t, want, strings.TrimSpace(string(out)))
}
