package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestServeLogsCheckWarningsCapped: serve logs check's warnings at start
// (logLint), one line each, and a list of many duplicate entries (lists
// concatenated) has a warning each: 5,000 lines at every start, which
// journald cuts at 10,000 in 30 s, dropping the lines after them. The
// first maxLintLogged of each file are logged, then one line with the
// count of the rest.
func TestServeLogsCheckWarningsCapped(t *testing.T) {
	dir, logs := loggedLint(t, 5000)
	lines := logs.FilterMessage("likely mistake in the configuration (check -strict fails on it)").All()
	assert.Equal(t, maxLintLogged, len(lines), "lines logged")
	rest := logs.FilterMessage("more likely mistakes in the configuration not logged; dnsfence check lists them").All()
	require.Len(t, rest, 1)
	assert.Equal(t, filepath.Join(dir, "lists/tiktok.txt"), rest[0].ContextMap()["file"])
	assert.EqualValues(t, 5000-maxLintLogged, rest[0].ContextMap()["not_logged"])
}

// loggedLint is what logLint logs, at warn level, of a configuration
// (in dir) whose one list file has n names written twice: n warnings of
// check's, one a duplicate.
func loggedLint(t *testing.T, n int) (dir string, logs *observer.ObservedLogs) {
	t.Helper()
	var list strings.Builder
	for i := range n {
		fmt.Fprintf(&list, "name%d.tiktok.com\n", i)
	}
	dir = testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": `
listen: ["127.0.72.1:0"]
upstreams: ["127.0.72.9:53"]
http: ""
policies:
  - name: government-devices
    clients: ["127.0.72.0/30"]
    block: [lists/tiktok.txt]
`,
		"lists/tiktok.txt": list.String() + list.String(),
	})
	cfg, err := config.Load(filepath.Join(dir, "dnsfence.yaml"))
	require.NoError(t, err)
	snap, err := resolver.BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	require.Len(t, snap.Lint(), n, "check's warnings: one a duplicate")
	core, logs := observer.New(zap.WarnLevel)
	logLint(zap.New(core), snap)
	return dir, logs
}

// TestServeLogsCheckWarningsCapAtItsEdge: a file with maxLintLogged
// warnings has each logged and no line of more; one more warning is the
// line of 1 not logged.
func TestServeLogsCheckWarningsCapAtItsEdge(t *testing.T) {
	for _, n := range []int{maxLintLogged, maxLintLogged + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			_, logs := loggedLint(t, n)
			assert.Equal(t, maxLintLogged, logs.FilterMessage("likely mistake in the configuration (check -strict fails on it)").Len())
			rest := logs.FilterMessage("more likely mistakes in the configuration not logged; dnsfence check lists them").All()
			if n == maxLintLogged {
				assert.Empty(t, rest, "every warning logged")
				return
			}
			require.Len(t, rest, 1)
			assert.EqualValues(t, n-maxLintLogged, rest[0].ContextMap()["not_logged"])
		})
	}
}
