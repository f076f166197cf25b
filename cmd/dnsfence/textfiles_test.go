package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// windows saves text the way a Windows editor does: a UTF-8 byte-order mark
// first and CRLF line ends.
func windows(text string) string { return "\ufeff" + strings.ReplaceAll(text, "\n", "\r\n") }

// TestEndToEndWindowsFiles serves a configuration, a hosts-format list and
// a client range file saved on Windows, the reported case: a government
// device in the range on the byte-order mark's line asks, with dig, for the
// name on the list's byte-order mark line, and gets NXDOMAIN.
func TestEndToEndWindowsFiles(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, count := testUpstream(t)
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": windows(fmt.Sprintf(`listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
policies:
  - name: gov
    client_files: ["networks/gov.txt"]
    block: ["lists/tiktok.txt"]
`, upstream)),
		"lists/tiktok.txt": windows("0.0.0.0 tiktok.com\n0.0.0.0 tiktokv.com\n"),
		"networks/gov.txt": windows("127.0.0.0/24\n"),
	})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))

	out := p.dig(t, "-b", "127.0.0.9", "www.tiktok.com")
	assert.Contains(t, out, "status: NXDOMAIN")
	assert.Contains(t, out, "EDE: 15 (Blocked)")
	assert.Zero(t, count.Load(), "a blocked query never reaches the upstream")
	out = p.dig(t, "-b", "127.0.1.9", "www.tiktok.com")
	assert.Contains(t, out, "status: NOERROR", "outside the range")

	p.stop(t, syscall.SIGTERM)
}

// TestNoUsableRangeRefusesToStart checks that serve and check refuse a
// policy whose only client file yields no range, naming the file and its
// bad line, instead of serving a ban that applies to no device.
func TestNoUsableRangeRefusesToStart(t *testing.T) {
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": `listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:9"]
http: ""
policies:
  - name: gov
    client_files: ["gov.txt"]
    block: ["tiktok.txt"]
`,
		"tiktok.txt": "tiktok.com\n",
		"gov.txt":    "# government devices\n10.0.0.0/33\n",
	})
	gov := filepath.Join(dir, "gov.txt")
	for _, args := range [][]string{{"-config"}, {"check", "-config"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(binary(t), append(args, filepath.Join(dir, "dnsfence.yaml"))...)
			done := make(chan struct{})
			var out []byte
			var err error
			go func() { out, err = cmd.CombinedOutput(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatal("dnsfence started serving")
			}
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, string(out))
			assert.Equal(t, 1, ee.ExitCode())
			text := strings.ReplaceAll(string(out), `\"`, `"`) // serve logs JSON
			assert.Contains(t, text, gov+`: not one entry could be read, only 1 bad line, the first `)
			assert.Contains(t, text, gov+`:2: prefix length /33 is longer than an IPv4 address (at most /32): "10.0.0.0/33"; refusing it`)
		})
	}
}
