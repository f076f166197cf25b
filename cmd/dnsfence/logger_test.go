package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestNewLoggerKeepsEveryLine: serve's logger writes every line, at the
// level the configuration names: no sampling (zap's production default
// keeps 100 lines of one message a second, then one in 100, and the
// audit trail's query lines are all one message), lines at log.level
// debug from the first, and an error line without a stack trace (a
// goroutine dump in the journal, for a message that says what is wrong).
func TestNewLoggerKeepsEveryLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsfence.log")
	log, level, err := newLogger(config.Log{Level: "debug", Format: "json", Output: path})
	require.NoError(t, err)
	assert.Equal(t, zap.DebugLevel, level.Level())
	const n = 1000 // within a second: sampled, 100 of them and 9 more
	for i := range n {
		log.Info("query", zap.Int("i", i))
	}
	log.Debug("connection refused at accept")
	log.Error("loading lists, ranges and upstreams", zap.Error(errors.New("lists/tiktok.txt: no such file")))
	require.NoError(t, log.Sync())

	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	count := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		msg, _ := m["msg"].(string)
		count[msg]++
		if m["level"] == "error" {
			assert.NotContains(t, m, "stacktrace", "an error line: %s", sc.Text())
		}
	}
	require.NoError(t, sc.Err())
	assert.Equal(t, map[string]int{"query": n, "connection refused at accept": 1, "loading lists, ranges and upstreams": 1}, count)
}
