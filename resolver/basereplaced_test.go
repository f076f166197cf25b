package resolver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// guardSteps applies each edit as a reload does (held or applied, peaks
// kept), returning the error of each step.
type guardSteps struct {
	t    *testing.T
	path string
	s    *Snapshot
}

func newGuardSteps(t *testing.T, conf string, files map[string]string) *guardSteps {
	path := writeConfig(t, conf, files, "127.0.0.1:1")
	return &guardSteps{t: t, path: path, s: loadSnapshot(t, path, nil)}
}

func (g *guardSteps) step(force bool, edit map[string]string) error {
	g.t.Helper()
	for name, content := range edit {
		require.NoError(g.t, os.WriteFile(filepath.Join(filepath.Dir(g.path), name), []byte(content), 0o644))
	}
	next := loadSnapshot(g.t, g.path, g.s)
	if err := errors.Join(heldChanges(g.s, next)...); err != nil && !force {
		return err
	}
	next.keepPeaks(g.s, force)
	g.s = next
	return nil
}

// Entries of a list moved to another list of the policy, then dropped
// from there: the first list lost 60 of its 90 entries of the last SIGHUP,
// each reload within max_shrink of every list it changed.
func TestBaseLostThroughAnotherListIsHeld(t *testing.T) {
	a := strings.SplitAfter(namesUnder("a", 90), "\n")
	g := newGuardSteps(t, rangesConfig, map[string]string{
		"networks.txt": "127.2.0.0/16\n", "tiktok.txt": namesUnder("a", 90), "bytedance.txt": namesUnder("x", 200)})
	require.NoError(t, g.step(false, map[string]string{
		"tiktok.txt":    namesUnder("b", 60) + strings.Join(a[60:], ""),
		"bytedance.txt": namesUnder("x", 200) + strings.Join(a[:60], ""),
	}), "a reorganisation: a0..a59 still blocked by bytedance.txt")
	err := g.step(false, map[string]string{"bytedance.txt": namesUnder("x", 200)})
	require.ErrorIs(t, err, ErrShrink, "60 of tiktok.txt's 90 entries of the last SIGHUP no longer block")
}

