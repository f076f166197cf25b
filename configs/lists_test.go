package configs

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/publicsuffix"
)

var shippedLists = []string{"lists/tiktok.txt", "lists/bytedance.txt", "lists/bytedance-cloud.txt", "lists/doh-bypass.txt"}

// doNotBlock reads the reference's "do not block" names.
func doNotBlock(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../testdata/do-not-block.txt")
	require.NoError(t, err)
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, names)
	return names
}

func TestShippedListsAreSafe(t *testing.T) {
	hazards := doNotBlock(t)
	for _, path := range shippedLists {
		t.Run(filepath.Base(path), func(t *testing.T) {
			l, err := blocklist.LoadFile(path, path)
			require.NoError(t, err, "every line parses")
			require.Greater(t, l.Len(), 10)
			assert.Empty(t, l.Duplicates())
			for e := range l.All() {
				suffix, _ := publicsuffix.PublicSuffix(e.Name)
				assert.NotEqual(t, suffix, e.Name, "%s:%d: %s is a public suffix", path, e.Line, e.Name)
			}
			for _, h := range hazards {
				// An entry matching a hazard means the entry equals it or
				// is a parent of it.
				if e, ok := l.Match(h); ok {
					t.Errorf("%s:%d: entry %s blocks %s from the do-not-block table", path, e.Line, e.Name, h)
				}
			}
		})
	}
}

func TestShippedListsCarryEvidence(t *testing.T) {
	for _, path := range shippedLists {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		for i, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			_, comment, ok := strings.Cut(line, "#")
			assert.True(t, ok && strings.Contains(comment, ":"), "%s:%d: entry without an evidence comment", path, i+1)
		}
	}
}

func TestShippedListsBlockTheObvious(t *testing.T) {
	tiktok, err := blocklist.LoadFile("lists/tiktok.txt", "lists/tiktok.txt")
	require.NoError(t, err)
	for _, name := range []string{"www.tiktok.com", "api16-normal-c-useast1a.tiktokv.com", "p16-sign.tiktokcdn-us.com", "v16m.tiktokcdn.com", "musical.ly", "x.tiktokv.com.edgekey.net"} {
		_, ok := tiktok.Match(name)
		assert.True(t, ok, name)
	}
	for _, name := range []string{"nottiktok.com", "akamaized.net", "a.akamaized.net", "edgekey.net", "fastly.net", "app-measurement.com", "kuaishou.com", "example.org"} {
		e, ok := tiktok.Match(name)
		assert.False(t, ok, "%s matched by %s", name, e.Name)
	}
	bytedance, err := blocklist.LoadFile("lists/bytedance.txt", "lists/bytedance.txt")
	require.NoError(t, err)
	_, ok := bytedance.Match("www.capcut.com")
	assert.True(t, ok)
}

func TestEmbeddedFilesMatchShipped(t *testing.T) {
	for _, path := range []string{"lists/tiktok.txt", "lists/bytedance.txt", "lists/bytedance-cloud.txt", DefaultName} {
		embedded, err := FS.ReadFile(path)
		require.NoError(t, err)
		onDisk, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, onDisk, embedded, path)
	}
}
