package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// readmeDefaultRow is one row of README's configuration table whose
// default is a single YAML value: | `key` | `value` | meaning |.
var readmeDefaultRow = regexp.MustCompile("^\\| `([a-z_.\\[\\]]+)` \\| `([^`]+)` \\|")

// TestREADMEDefaults checks the default column of README's configuration
// table: for each key whose default is one YAML value, a configuration
// that writes the key with that value loads to the same setting as one
// that leaves the key out.
func TestREADMEDefaults(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t.txt"), []byte("tiktok.com\n"), 0o644))
	load := func(top, policy string) *Config {
		t.Helper()
		text := "upstreams: [\"127.0.0.1:53\"]\n" + top +
			"policies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    block: [t.txt]\n" + policy
		path := filepath.Join(dir, "c.yaml")
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		c, err := Load(path)
		require.NoError(t, err, "%s", text)
		return c
	}
	left := load("", "")
	checked := 0
	for _, line := range strings.Split(string(b), "\n") {
		m := readmeDefaultRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key, value := m[1], m[2]
		if name, ok := strings.CutPrefix(key, "policies[]."); ok {
			written := load("", "    "+name+": "+value+"\n")
			assert.Equal(t, settingOf(t, left.Policies[0], name), settingOf(t, written.Policies[0], name), "README's default of %s", key)
		} else {
			written := load(key+": "+value+"\n", "")
			if key == "http" { // left out, the field is nil and HTTPAddr the default
				assert.Equal(t, left.HTTPAddr(), written.HTTPAddr(), "README's default of %s", key)
			} else {
				assert.Equal(t, settingOf(t, *left, key), settingOf(t, *written, key), "README's default of %s", key)
			}
		}
		checked++
	}
	assert.GreaterOrEqual(t, checked, 15, "README's configuration table rows with a default")
}

// settingOf is the field of v (a struct) whose YAML name is key, pointers
// followed, with an empty list as nil.
func settingOf(t *testing.T, v any, key string) any {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		if name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("yaml"), ","); name == key {
			f := rv.Field(i)
			for f.Kind() == reflect.Pointer && !f.IsNil() {
				f = f.Elem()
			}
			if f.Kind() == reflect.Slice && f.Len() == 0 {
				return nil
			}
			return f.Interface()
		}
	}
	t.Fatalf("no setting %q", key)
	return nil
}

// TestREADMEYAMLBlocks: every YAML block of README.md is YAML a reader can
// paste (an unquoted "::1/128" in a flow list is not).
func TestREADMEYAMLBlocks(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	blocks := strings.Split(string(b), "```yaml\n")[1:]
	require.NotEmpty(t, blocks)
	for _, block := range blocks {
		block, _, _ = strings.Cut(block, "```")
		var v any
		assert.NoError(t, yaml.Unmarshal([]byte(block), &v), "README's YAML block:\n%s", block)
	}
}
