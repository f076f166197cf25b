package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEndToEndFailClosed drives the real binary with dig through the two
// ways a running ban used to switch itself off: the government range file
// emptied while serving (held: a warn line, devices still blocked), and a
// SIGHUP sent while a writer holds a truncated list open (the reload waits
// for the writer and applies the complete list, never an empty one).
func TestEndToEndFailClosed(t *testing.T) {
	testnet.NeedProgram(t, "dig", "bind9-dnsutils")
	upstream, _ := testUpstream(t)
	const ranges = "127.0.0.0/30\n127.0.0.4/30\n127.0.0.8/30\n127.0.0.12/30\n"
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
http: ""
reload: {debounce: 50ms}
policies:
  - name: government-devices
    clients: ["127.0.1.0/24"]
    client_files: ["networks/government.txt"]
    block: ["lists/tiktok.txt"]
`, upstream),
		"networks/government.txt": ranges,
		"lists/tiktok.txt":        "tiktok.com\n",
	})
	networks := filepath.Join(dir, "networks", "government.txt")
	list := filepath.Join(dir, "lists", "tiktok.txt")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	status := func(name string) string { return p.status(t, name) }
	require.Equal(t, "NXDOMAIN", status("www.tiktok.com"), "127.0.0.1 is a government device")

	// `: > networks/government.txt` while serving.
	require.NoError(t, os.Truncate(networks, 0))
	held := p.waitLine(t, "reload held, keeping the last good state: SIGHUP applies it once the files are complete")
	assert.Equal(t, "warn", held["level"])
	assert.Equal(t, "files", held["trigger"])
	assert.Contains(t, held["error"], networks+": change held: client range file shrank more than reload.max_shrink allows: 4 to 0 ranges")
	assert.Equal(t, "NXDOMAIN", status("www.tiktok.com"), "still blocked")
	require.NoError(t, os.WriteFile(networks, []byte(ranges), 0o644))
	p.waitLine(t, "reloaded")

	// SIGHUP while a writer holds the list truncated and half written.
	w, err := os.OpenFile(list, os.O_TRUNC|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = w.WriteString("tik")
	require.NoError(t, err)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Never(t, func() bool { return status("www.tiktok.com") != "NXDOMAIN" }, 500*time.Millisecond, 50*time.Millisecond,
		"the half-written list was served")
	_, err = w.WriteString("tok.com\nnew.example\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	reloaded := p.waitLine(t, "list reloaded")
	assert.EqualValues(t, 2, reloaded["entries"], "the complete list, never an empty one")
	assert.Equal(t, []any{"new.example"}, reloaded["added_entries"])
	assert.Equal(t, "NXDOMAIN", status("new.example"))
	assert.Equal(t, "NXDOMAIN", status("www.tiktok.com"))

	p.stop(t, syscall.SIGTERM)
}
