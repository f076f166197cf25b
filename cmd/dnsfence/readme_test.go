package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeExample is one command of a console block of README.md and the
// output shown under it.
type readmeExample struct {
	line    int // README.md's line of the command
	command string
	output  []string
}

// readmeExamples reads README.md's console blocks into their commands
// (the lines after "$ ") and outputs, and the YAML blocks whose first line
// names a file ("# bad.yaml") into files, by name.
func readmeExamples(t *testing.T) (examples []readmeExample, files map[string]string) {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	files = map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		lang, ok := strings.CutPrefix(lines[i], "```")
		if !ok || lang == "" {
			continue
		}
		start := i + 1
		for i++; i < len(lines) && lines[i] != "```"; i++ {
		}
		block := lines[start:i]
		switch {
		case lang == "yaml" && len(block) > 0 && strings.HasPrefix(block[0], "# ") && strings.HasSuffix(block[0], ".yaml"):
			// The file as a reader copies it, its name's comment line included.
			files[strings.TrimPrefix(block[0], "# ")] = strings.Join(block, "\n") + "\n"
		case lang == "console":
			for j, l := range block {
				if cmd, ok := strings.CutPrefix(l, "$ "); ok {
					examples = append(examples, readmeExample{line: start + j + 1, command: cmd})
				} else if len(examples) > 0 {
					ex := &examples[len(examples)-1]
					ex.output = append(ex.output, l)
				}
			}
		}
	}
	return examples, files
}

// embeddedBlocks reports whether digArgs, what a README dig command asks
// after its server and port, is a name alone that the embedded default
// blocks for 127.0.0.1, as `dnsfence explain` says: a query for anything
// else would be forwarded to the machine's real resolvers.
func embeddedBlocks(t *testing.T, digArgs []string) bool {
	t.Helper()
	if len(digArgs) != 1 || strings.HasPrefix(digArgs[0], "+") || strings.HasPrefix(digArgs[0], "-") {
		return false
	}
	_, out := runCmd("explain", "127.0.0.1", digArgs[0]) // its exit code says blocked or not, as its output does
	return strings.Contains(out, "\nverdict: blocked")
}

// readmeBlockAfter is the text of README's first fenced block of language
// lang (```lang) after the first occurrence of marker, without its fences;
// the test fails when README has none.
func readmeBlockAfter(t *testing.T, marker, lang string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(b), marker)
	require.True(t, ok, "README: %q", marker)
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	require.True(t, ok, "README: a ```%s block after %q", lang, marker)
	block, _, _ := strings.Cut(rest, "```")
	return block
}

// TestREADMECommands runs README's `./dnsfence check` and `./dnsfence
// explain` examples as a reader would (the binary built as README's
// Commands says), from the repository's root with the YAML
// files README shows, and checks that the output and exit code (`echo $?`)
// are what README shows, line for line.
func TestREADMECommands(t *testing.T) {
	bin := binary(t)
	examples, files := readmeExamples(t)
	dir := t.TempDir()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	require.NoError(t, os.Symlink(filepath.Join(root, "configs"), filepath.Join(dir, "configs")))
	for name, text := range files {
		// A file of its own in the folder, never one through configs/.
		require.True(t, filepath.IsLocal(name) && !strings.ContainsRune(name, '/'), "README's YAML file %q", name)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	ran, code := 0, -1
	for _, ex := range examples {
		args := strings.Fields(ex.command)
		switch {
		case len(args) > 0 && args[0] == "dnsfence":
			t.Errorf("README.md:%d: %s: a newcomer has no dnsfence on PATH; write ./dnsfence, as the Commands section builds it", ex.line, ex.command)
		case len(args) > 1 && args[0] == "./dnsfence" && (args[1] == "check" || args[1] == "explain"):
			cmd := exec.Command(bin, args[1:]...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			code = 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, strings.Join(ex.output, "\n"), strings.TrimSuffix(string(out), "\n"),
				"README.md:%d: %s", ex.line, ex.command)
			ran++
		case ex.command == "echo $?" && code >= 0:
			require.Len(t, ex.output, 1, "README.md:%d", ex.line)
			assert.Equal(t, ex.output[0], strconv.Itoa(code), "README.md:%d: the exit code of the command before", ex.line)
		}
	}
	assert.GreaterOrEqual(t, ran, 3, "README's check and explain examples")
}

// checkREADMEDigSession checks README's dig session against dnsfence
// serving the embedded default at p: each `dig … CH TXT …explain…` shows
// what dnsfence answers, each other `dig @127.0.0.1 -p 5353 …` too from
// its HEADER line on (the ID and a blocked answer's SOA serial aside), and the audit line shown for the block names the
// list's line, entry and SHA-256 as they are.
func checkREADMEDigSession(t *testing.T, p *process) {
	t.Helper()
	examples, _ := readmeExamples(t)
	explained, answered := 0, 0
	for _, ex := range examples {
		args := strings.Fields(ex.command)
		if len(args) < 5 || args[0] != "dig" || args[1] != "@127.0.0.1" || args[2] != "-p" {
			continue
		}
		explain := strings.Contains(ex.command, ".explain.dnsfence.")
		if !explain && !embeddedBlocks(t, args[4:]) {
			// The embedded default's upstream is the machine's real
			// resolver: only a name it blocks is asked, whatever README
			// shows its answer to be.
			t.Errorf("README.md:%d: %s: not a name alone that the embedded default blocks; only such names are asked of it", ex.line, ex.command)
			continue
		}
		out := p.dig(t, args[4:]...) // after "dig @127.0.0.1 -p 5353": p's address
		if explain {
			assert.Equal(t, strings.Join(ex.output, "\n"), strings.TrimSuffix(out, "\n"), "README.md:%d: %s", ex.line, ex.command)
			explained++
			continue
		}
		assert.Equal(t, digMasked(ex.output), digMasked(digFromHeader(out, len(ex.output))), "README.md:%d: %s", ex.line, ex.command)
		answered++
	}
	assert.GreaterOrEqual(t, explained, 1, "README's explain queries")
	assert.GreaterOrEqual(t, answered, 1, "README's blocked answer")

	line, _, _ := strings.Cut(readmeBlockAfter(t, "one audit line for the block", "json"), "\n")
	var shown struct {
		List   string `json:"list"`
		Line   int    `json:"line"`
		Entry  string `json:"entry"`
		SHA256 string `json:"list_sha256"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &shown))
	list, err := os.ReadFile(filepath.Join("../../configs", shown.List))
	require.NoError(t, err)
	sum := sha256.Sum256(list)
	prefix := strings.TrimSuffix(shown.SHA256, "…")
	assert.GreaterOrEqual(t, len(prefix), 8, "README's list_sha256 %q", shown.SHA256)
	assert.True(t, strings.HasPrefix(hex.EncodeToString(sum[:]), prefix),
		"README's list_sha256 %s is not %s's", shown.SHA256, shown.List)
	at := strings.Split(string(list), "\n")
	require.True(t, shown.Line >= 1 && shown.Line <= len(at), "README's audit line: line %d of %s", shown.Line, shown.List)
	assert.Equal(t, shown.Entry, strings.Fields(at[shown.Line-1])[0], "README's audit line: %s line %d", shown.List, shown.Line)
}

// fuzzTarget is the name of a native fuzz target in a test file.
var fuzzTarget = regexp.MustCompile(`(?m)^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)`)

// TestREADMEFuzzTargets: README's Fuzzing section names every fuzz target
// of the repository (the list had fallen behind by 28 of them), so that a
// reader who runs them, or asks what is fuzzed, finds them all; and it
// names none that is gone.
func TestREADMEFuzzTargets(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "\n### Fuzzing\n")
	require.True(t, ok, "README's Fuzzing section")
	section, _, _ = strings.Cut(section, "\n## ")
	found := map[string]bool{}
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range fuzzTarget.FindAllStringSubmatch(string(text), -1) {
			found[m[1]] = true
			assert.Contains(t, section, "`"+m[1]+"`", "README's Fuzzing section does not name %s (%s)", m[1], path)
		}
		return nil
	})
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(found), 18, "fuzz targets found")
	for _, m := range regexp.MustCompile("`(Fuzz[A-Za-z0-9_]+)`").FindAllStringSubmatch(section, -1) {
		assert.True(t, found[m[1]], "README's Fuzzing section names %s, which no test file has", m[1])
	}
}
