package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
)

// TestRemoteListBadLinesLoggedOnce: a remote list's bad lines are logged
// once at start, by its source as it reads the copy (naming the list),
// not a second time among the snapshot's warnings (logSnapshot), as a
// local list's are.
func TestRemoteListBadLinesLoggedOnce(t *testing.T) {
	web := serveWebAt(t, "127.0.168.40", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "capcut.com\nbad..capcut.example\n")
	})
	defer web.Close()
	list := web.URL + "/bytedance.txt"
	dir := testnet.WriteTree(t, map[string]string{
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.168.41:0"]
upstreams: ["127.0.168.42:53"]
http: ""
policies:
  - name: government-devices
    clients: ["127.0.168.40/30"]
    block: [lists/tiktok.txt, %q]
sources: {cache_dir: cache}
`, list),
		"lists/tiktok.txt": "tiktok.com\nbad..tiktok.example\n",
	})
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	p.stop(t, syscall.SIGTERM)
	var remote, local []map[string]any
	for _, m := range p.early { // all before the listeners open
		if m["msg"] != "skipped bad lines" {
			continue
		}
		e, _ := m["error"].(string)
		if strings.Contains(e, "bad..capcut.example") {
			remote = append(remote, m)
		}
		if strings.Contains(e, "bad..tiktok.example") {
			local = append(local, m)
		}
	}
	if assert.Len(t, remote, 1, "the remote list's bad line: %v", p.early) {
		assert.Equal(t, list, remote[0]["list"], "logged by its source")
	}
	assert.Len(t, local, 1, "the local list's bad line: %v", p.early)
}
