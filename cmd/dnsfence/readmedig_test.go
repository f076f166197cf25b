package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADMEDigSessionForwarded runs README's "nothing leaving the
// machine" set-up as its three lines say (the benchmark's upstream on its
// port, the sed that points the embedded default's configuration at it,
// dnsfence on the result), and checks the dig
// session against it, line for line from dig's HEADER line on (the
// message ID, and the blocked answer's SOA serial, which are new each
// time, aside). checkREADMEDigSession checks the session's other dig
// answers and its audit line against the embedded default; the forwarded
// answer had no test. The set-up binds README's fixed ports (5399, 5353, 9153), so it
// runs in a network namespace of its own.
func TestREADMEDigSessionForwarded(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	if os.Getenv(builtUpstream) == "" {
		// Built here, once: the run in the namespace takes both by path.
		// Not built for nothing where no namespace can be had.
		testnet.NeedNetns(t)
		up := filepath.Join(t.TempDir(), "benchupstream")
		out, err := exec.Command("go", "build", "-o", up, "../benchupstream").CombinedOutput()
		require.NoError(t, err, "go build: %s", out)
		t.Setenv(builtUpstream, up)
		t.Setenv(builtBinary, binary(t))
	}
	if !testnet.InNetns(t) {
		return
	}
	up := os.Getenv(builtUpstream)
	block := readmeBlockAfter(t, "with nothing leaving the machine", "sh")
	steps := strings.Split(strings.TrimSpace(block), "\n")
	require.Len(t, steps, 3, "README's local set-up: the upstream, the sed, dnsfence")

	// go run ./cmd/benchupstream -listen ADDR &
	upArgs, ok := strings.CutPrefix(steps[0], "go run ./cmd/benchupstream ")
	require.True(t, ok, "README's first step: %s", steps[0])
	upArgs, ok = strings.CutSuffix(upArgs, " &")
	require.True(t, ok, "README's first step runs in the background: %s", steps[0])
	dir := t.TempDir()
	upCmd := exec.Command(up, strings.Fields(upArgs)...)
	require.NoError(t, upCmd.Start())
	t.Cleanup(func() { _ = upCmd.Process.Kill(); _ = upCmd.Wait() })

	// The sed, run as written from a folder whose configs/ holds the
	// repository's default.yaml and lists.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "configs"), 0o755))
	for _, name := range []string{"default.yaml", "lists"} {
		abs, err := filepath.Abs(filepath.Join("../../configs", name))
		require.NoError(t, err)
		require.NoError(t, os.Symlink(abs, filepath.Join(dir, "configs", name)))
	}
	require.True(t, strings.HasPrefix(steps[1], "sed "), "README's second step: %s", steps[1])
	sed := exec.Command("sh", "-c", steps[1])
	sed.Dir = dir
	out, err := sed.CombinedOutput()
	require.NoError(t, err, "%s: %s", steps[1], out)
	local, err := os.ReadFile(filepath.Join(dir, "configs", "local.yaml"))
	require.NoError(t, err)
	require.NotContains(t, string(local), "/etc/resolv.conf", "the sed points the upstream at the benchmark's server")

	// go run ./cmd/dnsfence -config FILE, FILE taken from the folder.
	args, ok := strings.CutPrefix(steps[2], "go run ./cmd/dnsfence ")
	require.True(t, ok, "README's third step: %s", steps[2])
	fields := strings.Fields(args)
	require.Equal(t, []string{"-config", "configs/local.yaml"}, fields)
	waitUDPAnswers(t, strings.Fields(upArgs)[1])
	p := startBinary(t, "-config", filepath.Join(dir, fields[1]))
	require.Equal(t, "127.0.0.1:5353", p.addr)

	examples, _ := readmeExamples(t)
	seen := 0
	for _, ex := range examples {
		args := strings.Fields(ex.command)
		if len(args) < 3 || args[0] != "dig" || args[1] != "-b" || args[2] != "127.0.1.1" {
			continue // README shows the others against the embedded default: checkREADMEDigSession
		}
		require.Contains(t, ex.command, "@127.0.0.1 -p 5353", "README.md:%d", ex.line)
		got := runDig(t, append(args[1:], "+time=3", "+tries=1")...)
		assert.Equal(t, digMasked(ex.output), digMasked(digFromHeader(got, len(ex.output))), "README.md:%d: %s", ex.line, ex.command)
		seen++
	}
	assert.Equal(t, 1, seen, "README's dig session's forwarded answer")
}

// builtUpstream passes to TestREADMEDigSessionForwarded's run in its
// network namespace the path of the benchupstream binary built before it.
const builtUpstream = "DNSFENCE_TEST_BENCHUPSTREAM"

// digFromHeader is n lines of dig's output from its HEADER line on.
func digFromHeader(out string, n int) []string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ";; ->>HEADER<<-") {
			return lines[i:min(i+n, len(lines))]
		}
	}
	return nil
}

// digVaries matches what differs in every run of dig against dnsfence: the
// message ID, and the SOA serial of a blocked answer.
var digVaries = regexp.MustCompile(`(id: |hostmaster\.dnsfence\.invalid\. )\d+`)

// digMasked is lines with digVaries' numbers replaced by N.
func digMasked(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = digVaries.ReplaceAllString(l, "${1}N")
	}
	return out
}

// waitUDPAnswers waits, at most 10 s, until something answers a DNS query
// over UDP at addr.
func waitUDPAnswers(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := exchangeFrom("udp", "127.0.0.1", addr, "ready.example.", 200*time.Millisecond); err == nil {
			return
		}
		require.True(t, time.Now().Before(deadline), "nothing answers at %s", addr)
	}
}
