package resolver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// TestReloadPicksUpAFileTheFailedConfigNames: a configuration edit that
// names a file not there yet (a new list, a new range file, in a folder
// not there yet either) fails its reload, and the last good state stays
// (DESIGN §4). Creating the file is the fix, and the watcher must pick it
// up: dnsfence watched only the files of the state served, so the file
// the failed configuration named was never looked at, and the new list
// stayed unapplied (its names unblocked) until another edit or SIGHUP. In
// Kubernetes the configuration and the lists are often two ConfigMaps,
// which kubelet swaps independently (coredns/coredns#8016 is the same
// layout): the configuration naming a list may land before the list.
// A new list whose content fails the reload (a web page saved under its
// name) is the same case: its fix was never seen either.
func TestReloadPicksUpAFileTheFailedConfigNames(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, reloadConfig, testFiles, up.addr)
	r := watching(t, f, zaptest.NewLogger(t))
	conf := filepath.Join(f.dir, "dnsfence.yaml")
	failures := func() uint64 { return r.Status().Failures }

	// edit replaces old with new in the configuration, and waits for the
	// reload it starts to fail.
	edit := func(t *testing.T, old, new, errText string) {
		t.Helper()
		good, err := os.ReadFile(conf)
		require.NoError(t, err)
		require.Contains(t, string(good), old)
		before := failures()
		writeAtomic(t, conf, strings.Replace(string(good), old, new, 1))
		require.Eventually(t, func() bool { return failures() > before }, 10*time.Second, 10*time.Millisecond)
		assert.ErrorContains(t, r.Status().Err, errText)
	}

	t.Run("a list created after the configuration naming it", func(t *testing.T) {
		edit(t, `block: ["tiktok.txt", "bytedance.txt"]`, `block: ["tiktok.txt", "bytedance.txt", "later.txt"]`,
			`file "`+filepath.Join(f.dir, "later.txt")+`" does not exist`)
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "", "later.example."))
		writeAtomic(t, filepath.Join(f.dir, "later.txt"), "later.example\n")
		require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "", "later.example.") == dns.RcodeNameError },
			10*time.Second, 10*time.Millisecond)
		assert.Eventually(t, func() bool { return r.Status().OK }, 5*time.Second, time.Millisecond)
	})

	t.Run("a list created in a folder made after the configuration", func(t *testing.T) {
		edit(t, `"later.txt"]`, `"later.txt", "new/deeper/deep.txt"]`, "deep.txt")
		deeper := filepath.Join(f.dir, "new", "deeper")
		require.NoError(t, os.MkdirAll(deeper, 0o755))
		writeAtomic(t, filepath.Join(deeper, "deep.txt"), "deep.example\n")
		require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "", "deep.example.") == dns.RcodeNameError },
			10*time.Second, 10*time.Millisecond)
		assert.Eventually(t, func() bool { return r.Status().OK }, 5*time.Second, time.Millisecond)
	})

	t.Run("a client range file created after the configuration naming it", func(t *testing.T) {
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."))
		edit(t, `client_files: ["networks.txt"]`, `client_files: ["networks.txt", "more-networks.txt"]`, "more-networks.txt")
		writeAtomic(t, filepath.Join(f.dir, "more-networks.txt"), "127.0.0.9\n")
		require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com.") == dns.RcodeNameError },
			10*time.Second, 10*time.Millisecond)
	})

	t.Run("a new list that fails the reload, then fixed", func(t *testing.T) {
		page := filepath.Join(f.dir, "page.txt")
		require.NoError(t, os.WriteFile(page, []byte(htmlPage), 0o644))
		edit(t, `"new/deeper/deep.txt"]`, `"new/deeper/deep.txt", "page.txt"]`, page+": not one entry could be read")
		writeAtomic(t, page, "page.example\n")
		require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "", "page.example.") == dns.RcodeNameError },
			10*time.Second, 10*time.Millisecond)
	})
}

// TestReloadPicksUpTheFixOfAHeldNewList: a configuration edit adding an
// allow list that allows a name a blocking policy blocks is held (see
// Hot reload). Taking the name out of that list is a fix as much as a
// SIGHUP is, and must be seen: the list, named by no state served, was
// not watched, and the edit stayed held, every list of the change
// unapplied, until another edit or SIGHUP.
func TestReloadPicksUpTheFixOfAHeldNewList(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, reloadConfig, testFiles, up.addr)
	r := watching(t, f, zaptest.NewLogger(t))
	conf := filepath.Join(f.dir, "dnsfence.yaml")
	extra := filepath.Join(f.dir, "extra-allow.txt")
	require.NoError(t, os.WriteFile(extra, []byte("capcut.com\npress.example\n"), 0o644))
	more := filepath.Join(f.dir, "more.txt")
	require.NoError(t, os.WriteFile(more, []byte("more.example\n"), 0o644))

	good, err := os.ReadFile(conf)
	require.NoError(t, err)
	edited := strings.Replace(string(good), `allow: ["allow.txt"]`, `allow: ["allow.txt", "extra-allow.txt"]`, 1)
	edited = strings.Replace(edited, `block: ["tiktok.txt", "bytedance.txt"]`, `block: ["tiktok.txt", "bytedance.txt", "more.txt"]`, 1)
	require.NotEqual(t, string(good), edited)
	writeAtomic(t, conf, edited)
	require.Eventually(t, func() bool { return r.Status().Held }, 10*time.Second, 10*time.Millisecond)
	assert.ErrorIs(t, r.Status().Err, ErrHeld)
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "capcut.com."), "held: still blocked")
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "", "more.example."), "held: nothing of the change applied")

	writeAtomic(t, extra, "press.example\n")
	require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "", "more.example.") == dns.RcodeNameError },
		10*time.Second, 10*time.Millisecond)
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "capcut.com."))
	assert.Eventually(t, func() bool { return r.Status().OK }, 5*time.Second, time.Millisecond)
}
