package resolver

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRemoteListSwappedForAnother: a configuration that names a remote
// list in place of another (the list moved to a new host) was applied
// with the new list empty, its source started only once the snapshot was
// published: after SIGHUP the old list's names were answered for the
// seconds of the first fetch, and for good with the new host
// unreachable, /readyz the only sign. (The watcher holds such an edit, as
// it holds every block list taken out of a policy.) A reload now starts the
// sources of the lists it adds and waits for their first copies (up to
// StartWait) before it reads the configuration, and SIGHUP refuses a
// change the guards hold when one of them still has no copy.
func TestRemoteListSwappedForAnother(t *testing.T) {
	up := startUpstream(t, nil)
	body := names(8, "tiktok.com", "douyin.com")
	srv := startListServer(t, map[string]string{"/a.txt": body, "/b.txt": body, "/c.txt": body})
	// A port nothing listens on: its list's fetch fails at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	down := "http://" + ln.Addr().String() + "/d.txt"
	require.NoError(t, ln.Close())

	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	configure := func(url string) {
		require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s"]
sources: {refresh: 1h, cache_dir: cache}
`, up.addr, url)), 0o644))
	}
	configure(srv.URL + "/a.txt")
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))

	t.Run("SIGHUP", func(t *testing.T) {
		configure(srv.URL + "/b.txt")
		require.NoError(t, f.reloader.Reload(true))
		assert.Equal(t, 10, f.handler.Snapshot().Lists[srv.URL+"/b.txt"].Len(), "served with its first copy")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."), "right after the reload")
		assert.Equal(t, srv.URL+"/b.txt", f.status(t, srv.URL+"/b.txt").Name, "the source /readyz and the metrics see")
	})

	t.Run("an edit: held as a list removed, then SIGHUP", func(t *testing.T) {
		configure(srv.URL + "/c.txt")
		require.ErrorIs(t, f.reloader.Reload(false), ErrRemoved)
		require.NoError(t, f.reloader.Reload(true))
		assert.Equal(t, 10, f.handler.Snapshot().Lists[srv.URL+"/c.txt"].Len(), "served with its first copy")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
	})

	t.Run("SIGHUP to a list with no copy: refused", func(t *testing.T) {
		configure(down)
		err := f.reloader.Reload(true)
		require.ErrorIs(t, err, ErrNoCopy)
		assert.Contains(t, err.Error(), down+" (")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."), "the running state kept")
		assert.NotEmpty(t, f.logs.FilterMessage("SIGHUP reload refused, keeping the last good state: a remote list it adds has no copy yet").All())
		f.reloader.mu.Lock()
		_, running := f.reloader.sources[down]
		f.reloader.mu.Unlock()
		assert.False(t, running, "the refused list's source stopped again")

		// Without the unreachable list, the change is the operator's.
		configure(srv.URL + "/a.txt")
		require.NoError(t, f.reloader.Reload(true))
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
	})
}
