package main

import (
	"go/parser"
	"go/token"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPackageDocNamesEveryCommand: the command's package documentation
// (`go doc ./cmd/dnsfence`) has a usage line for every command, and each
// flag it shows is one the command has. Its list lacked health, which
// the Docker image's HEALTHCHECK runs.
func TestPackageDocNamesEveryCommand(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	require.NoError(t, err)
	require.NotNil(t, f.Doc)
	usage := map[string]string{} // command name -> the rest of its usage line
	line := regexp.MustCompile(`^\tdnsfence (\[?)([a-z]+)\]? ?(.*)$`)
	for l := range strings.Lines(f.Doc.Text()) {
		if g := line.FindStringSubmatch(strings.TrimRight(l, "\n")); g != nil {
			usage[g[2]] = g[3]
		}
	}
	flagName := regexp.MustCompile(`\[-([a-z]+)`)
	for _, c := range commands {
		rest, ok := usage[c.name]
		if !assert.True(t, ok, "the package doc has no usage line for %q", c.name) {
			continue
		}
		for _, g := range flagName.FindAllStringSubmatch(rest, -1) {
			require.NotNil(t, c.flags, "%s: the doc shows -%s, and the command has no flags", c.name, g[1])
			assert.NotNil(t, c.flags().Lookup(g[1]), "%s: the doc shows -%s, a flag the command does not have", c.name, g[1])
		}
	}
	assert.Len(t, usage, len(commands), "a usage line for a command that does not exist: %v", usage)
}
