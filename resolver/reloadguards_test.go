package resolver

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// settled waits until the watcher applied or held one more reload.
func settledStatus(t *testing.T, r *Reloader) ReloadStatus {
	t.Helper()
	require.Eventually(t, func() bool { st := r.Status(); return st.Successes+st.Failures > 0 }, 10*time.Second, 5*time.Millisecond)
	return r.Status()
}

// A government range file whose only /16 is rewritten to another /16
// loses every address it covered, but the count of ranges and of addresses
// is the same: the guard compares counts, not what was lost.
func TestRangeFileMovedIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles("127.2.0.0/16\n"), up.addr)
	r := watching(t, f, zap.NewNop())
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))
	writeAtomic(t, filepath.Join(f.dir, "networks.txt"), "127.3.0.0/16\n")
	st := settledStatus(t, r)
	assert.ErrorIs(t, st.Err, ErrRangeShrink, "every government address of the file was lost")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")
}

// A range file that grew since the last start, then had what it grew by
// replaced by as many other addresses, loses those devices: the count of
// ranges and of addresses is the same, and every address of the file at
// the start is still there, but three quarters of what the running state
// covers is gone in one reload (IPv4 and IPv6 alike).
func TestRangesGrownThenMovedAreHeld(t *testing.T) {
	up := startUpstream(t, nil)
	for _, tc := range []struct{ family, base, grown, moved, lost, gone string }{
		{"IPv4", "127.2.0.0/24\n", "127.2.1.0/24\n127.2.2.0/24\n127.2.3.0/24\n", "127.2.4.0/24\n127.2.5.0/24\n127.2.6.0/24\n",
			"IPv4 addresses no longer covered 768 of 1024", "127.2.1.1"},
		{"IPv6", "127.2.0.0/24\nfd00:0::/64\n", "fd00:1::/64\nfd00:2::/64\nfd00:3::/64\n", "fd00:4::/64\nfd00:5::/64\nfd00:6::/64\n",
			"IPv6 addresses no longer covered", "fd00:1::1"},
	} {
		t.Run(tc.family, func(t *testing.T) {
			conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8", "fd00::/8"]`, 1)
			f := startFence(t, conf, rangesFiles(tc.base), up.addr)
			path := f.handler.Snapshot().Config.File
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
			networks := filepath.Join(f.dir, "networks.txt")
			writeAtomic(t, networks, tc.base+tc.grown)
			require.NoError(t, r.Reload(false), "the file grows")
			writeAtomic(t, networks, tc.base+tc.moved)
			err := r.Reload(false)
			require.ErrorIs(t, err, ErrRangeShrink, "three of the four ranges replaced")
			assert.Contains(t, err.Error(), tc.lost)
			_, ok := f.handler.Snapshot().PolicyFor(netip.MustParseAddr(tc.gone))
			assert.True(t, ok, "the devices of the ranges replaced keep their policy")
		})
	}
}

// An exempt policy's range file (or the configuration) gains a range
// narrower than a government range: longest prefix wins, so those devices
// leave the blocking policy at once. Nothing guards it.
func TestExemptionInsideABlockingRangeIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, `    clients: ["127.0.0.3/32"]`, `    client_files: ["press.txt"]`, 1)
	t.Run("exempt range file grows", func(t *testing.T) {
		files := rangesFiles("127.2.0.0/16\n")
		files["press.txt"] = "127.0.0.3/32\n"
		f := startFence(t, conf, files, up.addr)
		r := watching(t, f, zap.NewNop())
		require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))
		writeAtomic(t, filepath.Join(f.dir, "press.txt"), "127.0.0.3/32\n127.2.0.0/17\n")
		st := settledStatus(t, r)
		assert.ErrorIs(t, st.Err, ErrHeld, "half the government /16 moves to an exempt policy")
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")
	})
	t.Run("config adds an exempt policy inside a government range", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles("127.2.0.0/16\n"), up.addr)
		r := watching(t, f, zap.NewNop())
		path := filepath.Join(f.dir, "dnsfence.yaml")
		old, err := os.ReadFile(path)
		require.NoError(t, err)
		writeAtomic(t, path, string(old)+"  - name: contractors\n    clients: [\"127.2.0.0/17\"]\n")
		st := settledStatus(t, r)
		assert.ErrorIs(t, st.Err, ErrHeld)
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")
	})
}

// The configuration swaps a block list for a new file that a writer still
// holds open, half written, in the folder of the configuration or in a
// folder not watched before. The watcher's reload applies nothing while
// the writer holds it, and watches the new file for its close; SIGHUP must
// wait for the new file, but it waited only for the running state's files
// and applied the half-written list, and a writer in a folder that was not
// watched was not seen at all.
func TestSIGHUPWaitsForANewListBeingWritten(t *testing.T) {
	up := startUpstream(t, nil)
	for _, list := range []string{"tiktok2.txt", "new/tiktok2.txt"} {
		t.Run(list, func(t *testing.T) {
			files := rangesFiles(fourRanges)
			files["tiktok.txt"] = "tiktok.com\ntiktokv.com\n"
			f := startFence(t, rangesConfig, files, up.addr)
			core, logs := observer.New(zap.InfoLevel)
			r := watching(t, f, zap.New(core))
			r.sighupWait = 300 * time.Millisecond

			require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(f.dir, list)), 0o755))
			w, err := os.OpenFile(filepath.Join(f.dir, list), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			require.NoError(t, err)
			defer w.Close()
			_, err = w.WriteString("tiktok.com\n") // tiktokv.com still to come
			require.NoError(t, err)
			path := filepath.Join(f.dir, "dnsfence.yaml")
			old, err := os.ReadFile(path)
			require.NoError(t, err)
			writeAtomic(t, path, strings.Replace(string(old), `"tiktok.txt"`, `"`+list+`"`, 1))
			require.Eventually(t, func() bool {
				return logs.FilterMessage("files changed but a writer still holds them open: applying once it closes them").
					FilterField(zap.Strings(logFiles, []string{filepath.Join(f.dir, list)})).Len() > 0
			}, 10*time.Second, 5*time.Millisecond, "the watcher does not wait for the new list's writer")
			assert.Zero(t, r.Status().Successes+r.Status().Failures, "a reload applied or held the half-written list")

			err = r.Reload(true)
			assert.ErrorIs(t, err, ErrIncomplete, "SIGHUP applied a list a writer still holds open")
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktokv.com."), "half-written list served")

			// A writer that finishes while SIGHUP waits for the new list:
			// SIGHUP applies the complete list, not refuses it.
			r.sighupWait = 10 * time.Second
			go func() {
				time.Sleep(200 * time.Millisecond) // SIGHUP waiting by then, most often
				_, _ = w.WriteString("tiktokv.com\n")
				_ = w.Close()
			}()
			require.NoError(t, r.Reload(true), "SIGHUP did not wait for the new list's writer")
			require.Contains(t, f.handler.Snapshot().Lists, filepath.Join(f.dir, list))
			assert.Equal(t, 2, f.handler.Snapshot().Lists[filepath.Join(f.dir, list)].Len(), "the whole list")
		})
	}
}

// TestCoverageKept: the addresses two sets of ranges both cover, each once,
// however the ranges nest or overlap within a set.
func TestCoverageKept(t *testing.T) {
	ranges := func(ps ...string) []blocklist.Range {
		out := make([]blocklist.Range, len(ps))
		for i, p := range ps {
			out[i] = blocklist.Range{Prefix: netip.MustParsePrefix(p)}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		old, rf []string
		want4   float64
		want6   float64
	}{
		{"moved", []string{"127.2.0.0/16"}, []string{"127.3.0.0/16"}, 0, 0},
		{"narrowed", []string{"10.0.0.0/8"}, []string{"10.1.0.0/16", "10.2.0.0/16", "11.0.0.0/8"}, 2 << 16, 0},
		{"widened", []string{"10.1.0.0/16", "10.2.0.0/16"}, []string{"10.0.0.0/8"}, 2 << 16, 0},
		{"nested on both sides", []string{"10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24"}, []string{"10.1.0.0/16", "10.1.2.0/24", "192.0.2.128/25"}, 1<<16 + 128, 0},
		{"ipv6 apart", []string{"2001:db8::/32", "10.0.0.0/24"}, []string{"2001:db8:1::/48", "10.0.0.0/25"}, 128, 1 << 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v4, v6 := coverageKept(ranges(tc.old...), ranges(tc.rf...))
			assert.Equal(t, tc.want4, v4)
			assert.Equal(t, tc.want6, v6)
		})
	}
}

// reloaderOf is a Reloader of f without a watcher: Reload(false) is the
// watcher's reload, Reload(true) SIGHUP's, one at a time.
func reloaderOf(f *fence) *Reloader {
	path := f.handler.Snapshot().Config.File
	return NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
}

// lineEdits returns edit for f: it writes f's configuration as it is now
// (call it before any edit: as it started) with line, which it must hold,
// replaced by new, and reloads it, as SIGHUP does when force.
func lineEdits(t *testing.T, f *fence, line string) (edit func(new string, force bool) error) {
	t.Helper()
	r := reloaderOf(f)
	path := filepath.Join(f.dir, "dnsfence.yaml")
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(good), line)
	return func(new string, force bool) error {
		t.Helper()
		writeAtomic(t, path, strings.Replace(string(good), line, new, 1))
		return r.Reload(force)
	}
}

// askByECS asks f for name's A record over UDP from the forwarder's
// address, with an ECS option naming device (/32), and returns the RCODE.
func askByECS(t *testing.T, f *fence, forwarder, device, name string) int {
	t.Helper()
	m := withECS(question(name, dns.TypeA, true), device+"/32")
	return ask(t, f.addr, forwarder, "udp", m).Rcode
}

// namesUnder is n distinct list lines under the domain suffix.
func namesUnder(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s%d.example\n", prefix, i)
	}
	return b.String()
}

// allowConfig is rangesConfig with an allow list on the government policy,
// as configs/dnsfence.yaml ships it.
var allowConfig = strings.Replace(rangesConfig, `    block: ["tiktok.txt", "bytedance.txt"]`,
	`    block: ["tiktok.txt", "bytedance.txt"]`+"\n"+`    allow: ["allow.txt"]`, 1)

// A block list's guard counts the entries that no longer block, not the
// entries left: a list overwritten by another of the same size (`cp
// bytedance.txt tiktok.txt`, a symlink retargeted) loses every name it
// blocked, and a list edited entry by entry within max_shrink is applied.
func TestBlockListReplacedIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"] = "tiktok.com\n" + namesUnder("tt", 9)
	f := startFence(t, rangesConfig, files, up.addr)
	r := reloaderOf(f)
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))

	writeAtomic(t, filepath.Join(f.dir, "tiktok.txt"), namesUnder("other", 10)) // 10 entries to 10 others
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrShrink, "10 of 10 entries no longer block")
	assert.Contains(t, err.Error(), "10 of its 10 entries no longer block in policy government-devices")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")

	// Four of ten swapped for others: under max_shrink (half), applied.
	writeAtomic(t, filepath.Join(f.dir, "tiktok.txt"), "tiktok.com\n"+namesUnder("tt", 5)+namesUnder("new", 4))
	require.NoError(t, r.Reload(false))
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "new3.example."))
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.2.5.1", "tt8.example."))
}

// An allow entry beats every block entry: an allow list grown over the
// block lists (the block list copied over it, or a slip: `tiktok.com`
// for `ads.tiktok.com`), or one added to a blocking policy, takes names
// out of the block as surely as a block list emptied. Any such name is
// held, as an exemption range is; an allow entry that allows nothing the
// policy blocked, and an allow list that shrinks (blocking more), apply
// at once; SIGHUP applies what is held.
func TestAllowListGrowthOverTheBlockIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	allowFiles := func() map[string]string {
		files := rangesFiles("127.2.0.0/16\n")
		files["allow.txt"] = "ads.tiktok.com\nx.tiktok.com\n"
		return files
	}
	t.Run("allow list grows over a block entry", func(t *testing.T) {
		f := startFence(t, allowConfig, allowFiles(), up.addr)
		r := reloaderOf(f)
		require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))
		require.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.2.5.1", "ads.tiktok.com."))
		path := filepath.Join(f.dir, "allow.txt")

		writeAtomic(t, path, "ads.tiktok.com\nx.tiktok.com\nexample.org\n") // allows nothing blocked
		require.NoError(t, r.Reload(false))

		writeAtomic(t, path, "ads.tiktok.com\nx.tiktok.com\nexample.org\ntiktok.com\n")
		err := r.Reload(false)
		require.ErrorIs(t, err, ErrExempted)
		assert.Contains(t, err.Error(), "policy government-devices: ")
		assert.Contains(t, err.Error(), "tiktok.com (allowed by "+path+":4)")
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")

		// An entry below a block entry: only that name is allowed, and
		// still held.
		writeAtomic(t, path, "ads.tiktok.com\nx.tiktok.com\nexample.org\nwww.tiktok.com\n")
		require.ErrorIs(t, r.Reload(false), ErrExempted)
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))

		require.NoError(t, r.Reload(true), "SIGHUP applies it")
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))
	})
	t.Run("allow list shrinks", func(t *testing.T) {
		f := startFence(t, allowConfig, allowFiles(), up.addr)
		r := reloaderOf(f)
		writeAtomic(t, filepath.Join(f.dir, "allow.txt"), "")
		require.NoError(t, r.Reload(false), "an allow list emptied blocks more")
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "ads.tiktok.com."))
	})
	t.Run("configuration adds an allow list", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles("127.2.0.0/16\n"), up.addr)
		r := reloaderOf(f)
		path := filepath.Join(f.dir, "dnsfence.yaml")
		old, err := os.ReadFile(path)
		require.NoError(t, err)
		// A slip that names the block list itself.
		writeAtomic(t, path, strings.Replace(string(old), `    block: ["tiktok.txt", "bytedance.txt"]`,
			`    block: ["tiktok.txt", "bytedance.txt"]`+"\n"+`    allow: ["tiktok.txt"]`, 1))
		require.ErrorIs(t, r.Reload(false), ErrExempted)
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")
	})
}

// An RPZ block list's triggers turned from `CNAME .` to `CNAME
// rpz-passthru.` (one sed over the zone, or the primary's zone edited so)
// keep the list's size, and a passthru entry beats the block entries of
// every other list of the policy: bytedance.txt's `tiktok.com` too.
func TestRPZTriggersTurnedPassthruAreHeld(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, `block: ["tiktok.txt", "bytedance.txt"]`, `block: ["tiktok.rpz", "bytedance.txt"]`, 1)
	files := rangesFiles("127.2.0.0/16\n")
	delete(files, "tiktok.txt")
	files["bytedance.txt"] = "capcut.com\ntiktok.com\n"
	files["tiktok.rpz"] = rpzHead + "tiktok.com CNAME .\n*.tiktok.com CNAME .\nbytedance.com CNAME .\n*.bytedance.com CNAME .\n"
	f := startFence(t, conf, files, up.addr)
	r := reloaderOf(f)
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))
	path := filepath.Join(f.dir, "tiktok.rpz")

	// One trigger of four: under max_shrink, but an allow all the same.
	writeAtomic(t, path, rpzHead+"tiktok.com CNAME .\n*.tiktok.com CNAME rpz-passthru.\nbytedance.com CNAME .\n*.bytedance.com CNAME .\n")
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrExempted)
	assert.Contains(t, err.Error(), "*.tiktok.com (allowed by "+path+":6)")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")

	// The same trigger removed instead: the plain list still blocks the
	// names below tiktok.com, so nothing is lost.
	writeAtomic(t, path, rpzHead+"tiktok.com CNAME .\nbytedance.com CNAME .\n*.bytedance.com CNAME .\n")
	require.NoError(t, r.Reload(false))
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))
}

// A range added to another blocking policy that lets more through (the
// README's carve-out for a team that must keep an app: a policy with an
// allow list) takes devices out of the government policy as an exemption
// range does: held. A range added to a blocking policy that blocks as
// much is not.
func TestRangeMovedToABlockingPolicyThatBlocksLessIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	conf := rangesConfig + `  - name: social-media-team
    client_files: ["social.txt"]
    block: ["bytedance.txt"]
    allow: ["tiktok.txt"]
  - name: stricter
    client_files: ["stricter.txt"]
    block: ["tiktok.txt", "bytedance.txt", "more.txt"]
`
	files := rangesFiles("127.2.0.0/16\n")
	files["social.txt"] = "127.0.0.40/32\n"
	files["stricter.txt"] = "127.0.0.41/32\n"
	files["more.txt"] = "example.net\n"
	f := startFence(t, conf, files, up.addr)
	r := reloaderOf(f)
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."))

	writeAtomic(t, filepath.Join(f.dir, "stricter.txt"), "127.0.0.41/32\n127.2.128.0/17\n")
	require.NoError(t, r.Reload(false), "devices moved to a policy that blocks more")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.200.1", "example.net."))

	writeAtomic(t, filepath.Join(f.dir, "social.txt"), "127.0.0.40/32\n127.2.0.0/17\n")
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrExempted, "half the government /16 moves to a policy that allows TikTok")
	assert.Contains(t, err.Error(), "127.2.0.0/17 of policy social-media-team takes devices of 127.2.0.0/16 out of blocking policy government-devices")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.5.1", "www.tiktok.com."), "government device released at once")
}

// Two client settings take devices out of a blocking policy without
// touching its ranges: trusted_proxies grown over a government range (a
// device there could name any client by ECS, a PROXY header or
// Forwarded) and allowed_clients narrowed over one (its devices get
// REFUSED and turn to another resolver). Both are held; a proxy outside
// every blocking range, and allowed_clients narrowed elsewhere, apply.
func TestClientSettingsWidenedAreHeld(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles("127.2.0.0/16\n"), up.addr)
	r := reloaderOf(f)
	path := filepath.Join(f.dir, "dnsfence.yaml")
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	edit := func(old, new string) error {
		t.Helper()
		require.Contains(t, string(good), old)
		writeAtomic(t, path, strings.Replace(string(good), old, new, 1))
		return r.Reload(false)
	}
	const allowed = `allowed_clients: ["127.0.0.0/8"]`

	err = edit(allowed, allowed+"\n"+`trusted_proxies: ["127.2.3.0/24"]`)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "trusted_proxies 127.2.3.0/24 overlaps range 127.2.0.0/16 of blocking policy government-devices")
	m := withECS(question("www.tiktok.com.", dns.TypeA, true), "127.0.0.9/32")
	assert.Equal(t, dns.RcodeNameError, ask(t, f.addr, "127.2.3.4", "udp", m).Rcode, "the government device names a client in no policy")
	// A network wider than the range, holding all of it, is held as one
	// inside it is, and the error names the range (the first blocking
	// range inside the proxies' network).
	err = edit(allowed, allowed+"\n"+`trusted_proxies: ["127.2.0.0/15"]`)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "trusted_proxies 127.2.0.0/15 overlaps range 127.2.0.0/16 of blocking policy government-devices")
	assert.Equal(t, dns.RcodeNameError, ask(t, f.addr, "127.2.3.4", "udp", m).Rcode, "not trusted: still decided as the government device")

	err = edit(allowed, `allowed_clients: ["127.0.0.0/15", "127.2.0.0/17"]`)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "allowed_clients no longer holds all of range 127.2.0.0/16 of blocking policy government-devices")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.200.1", "www.tiktok.com."), "still answered, still blocked")

	require.NoError(t, edit(allowed, allowed+"\n"+`trusted_proxies: ["127.9.0.1/32"]`), "a proxy outside every blocking range")
	// The proxy trusted above stays trusted and allowed: withdrawn, its
	// trust or its place in allowed_clients is held too
	// (TestTrustWithdrawnFromAForwarderIsHeld).
	require.NoError(t, edit(allowed, `allowed_clients: ["127.0.0.0/14", "127.9.0.1/32"]`+"\n"+`trusted_proxies: ["127.9.0.1/32"]`), "allowed_clients narrowed outside every blocking range")
}

// snapshotsOf builds a snapshot from conf and files, then one from edit's
// files over it, as a reload does, without holding anything.
func snapshotsOf(t *testing.T, conf string, files, edit map[string]string) (prev, next *Snapshot) {
	t.Helper()
	path := writeConfig(t, conf, files, "127.0.0.1:1")
	prev = loadSnapshot(t, path, nil)
	for name, content := range edit {
		require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), name), []byte(content), 0o644))
	}
	return prev, loadSnapshot(t, path, prev)
}

// loadSnapshot builds the snapshot of the configuration at path over prev
// (nil: a start), as a reload does, without holding anything.
func loadSnapshot(t *testing.T, path string, prev *Snapshot) *Snapshot {
	t.Helper()
	cfg, err := config.Load(path)
	require.NoError(t, err)
	s, err := BuildSnapshot(cfg, prev)
	require.NoError(t, err)
	return s
}

const rpzGuardConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
policies:
  - name: government-devices
    clients: ["127.2.0.0/16"]
    block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]
`

// The guard asks every name and address two policies decide alike: a
// response-IP trigger's prefix is not its first address alone (a
// narrower trigger may decide that one), and a plain entry is not its
// name alone (an RPZ passthru for the apex may allow that one, the names
// below still blocked). Each edit here allows what was blocked only past
// a narrower entry, and is held.
func TestNestedEntriesAllowedAreHeld(t *testing.T) {
	base := map[string]string{
		"tiktok.txt": "tiktok.com\n",
		"cdn.rpz":    rpzHead + "tiktok.com CNAME rpz-passthru.\n24.0.2.0.192.rpz-ip CNAME .\n25.0.2.0.192.rpz-ip CNAME .\n",
		"allow.rpz":  rpzHead + "press.example CNAME rpz-passthru.\n",
		"allow.txt":  "press.example\n",
	}
	tests := []struct {
		name, file, content, allowed string
	}{
		{"a /24 turned passthru under a /25 still blocked", "cdn.rpz",
			rpzHead + "tiktok.com CNAME rpz-passthru.\n24.0.2.0.192.rpz-ip CNAME rpz-passthru.\n25.0.2.0.192.rpz-ip CNAME .\n", "answer address 192.0.2.128"},
		{"an allowed /24 over a /25 blocked", "allow.rpz",
			rpzHead + "press.example CNAME rpz-passthru.\n24.0.2.0.192.rpz-ip CNAME rpz-passthru.\n", "answer address 192.0.2.0"},
		{"an allow entry for an apex only the RPZ let through", "allow.txt",
			"press.example\ntiktok.com\n", "*.tiktok.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prev, next := snapshotsOf(t, rpzGuardConfig, base, map[string]string{tc.file: tc.content})
			err := errors.Join(heldChanges(prev, next)...)
			require.ErrorIs(t, err, ErrExempted)
			assert.Contains(t, err.Error(), tc.allowed+" (allowed by ")
		})
	}
	t.Run("a /25 turned passthru inside a blocked /24", func(t *testing.T) {
		prev, next := snapshotsOf(t, rpzGuardConfig, base, map[string]string{"cdn.rpz": rpzHead +
			"tiktok.com CNAME rpz-passthru.\n24.0.2.0.192.rpz-ip CNAME .\n25.128.2.0.192.rpz-ip CNAME rpz-passthru.\n"})
		err := errors.Join(heldChanges(prev, next)...)
		require.ErrorIs(t, err, ErrExempted)
		assert.Contains(t, err.Error(), "answer address 192.0.2.128 (allowed by ")
	})
}

// A zone source's IXFR updates its list in place of a walk (Update), and
// the guard reads the update's own changes (Delta): the triggers removed
// and added. Triggers replaced past max_shrink, or one turned passthru,
// are held as a file's would be; a small change is not.
func TestZoneUpdateGuarded(t *testing.T) {
	const zone = "rpz.example.gov."
	records := func(lines ...string) func(rpz.Handler) {
		return func(h rpz.Handler) {
			var rrs []dns.RR
			for _, l := range lines {
				r, err := dns.NewRR(l)
				require.NoError(t, err)
				rrs = append(rrs, r)
			}
			rpz.FromRecords(zone, rrs, h)
		}
	}
	trig := func(name, target string) string { return name + "." + zone + " 300 IN CNAME " + target }
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]`, `block: ["zone.rpz"]`, 1)
	body := rpzHead + "tiktok.com CNAME .\n*.tiktok.com CNAME .\ncapcut.com CNAME .\nlemon8.com CNAME .\n"
	path := writeConfig(t, conf, map[string]string{"zone.rpz": body}, "127.0.0.1:1")
	prev := loadSnapshot(t, path, nil)
	name := filepath.Join(filepath.Dir(path), "zone.rpz")
	l := prev.Lists[name]
	update := func(remove, add []string) error {
		t.Helper()
		n, err := l.Update([32]byte{9}, 8, records(remove...), records(add...))
		require.NoError(t, err)
		return errors.Join(heldChanges(prev, prev.withList(name, n))...)
	}
	err := update([]string{trig("tiktok.com", "."), trig("*.tiktok.com", "."), trig("capcut.com", ".")},
		[]string{trig("a.example", "."), trig("b.example", "."), trig("c.example", ".")})
	require.ErrorIs(t, err, ErrShrink, "three of four triggers replaced")
	assert.Contains(t, err.Error(), "3 of its 4 entries no longer block")

	err = update([]string{trig("*.tiktok.com", ".")}, []string{trig("*.tiktok.com", "rpz-passthru.")})
	require.ErrorIs(t, err, ErrExempted)
	assert.Contains(t, err.Error(), "*.tiktok.com (allowed by ")

	assert.NoError(t, update([]string{trig("lemon8.com", ".")}, []string{trig("douyin.com", ".")}), "one of four replaced")
}

// An IXFR that only removes a blocking `*.` trigger from a list that has
// passthru triggers leaves the names below it to a passthru above it in
// the list, names another list's entries hold apart from the removed
// trigger's probe: b.rpz's `*.tiktok.cdn.example` passthru allowed the
// probe "*.tiktok.cdn.example" before, while www.tiktok.cdn.example
// (b.rpz's own exact trigger) was blocked and is allowed now by a.rpz's
// `*.cdn.example` passthru. Held by the update's path (Delta) as by a
// file edit's.
func TestZoneUpdateRemovingAWildcardUnderAPassthruIsHeld(t *testing.T) {
	const zone = "rpz.example.gov."
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]`, `block: ["a.rpz", "b.rpz"]`, 1)
	aBody := rpzHead + "*.cdn.example CNAME rpz-passthru.\n*.tiktok.cdn.example CNAME .\ncapcut.com CNAME .\n"
	bBody := rpzHead + "*.tiktok.cdn.example CNAME rpz-passthru.\nwww.tiktok.cdn.example CNAME .\n"
	path := writeConfig(t, conf, map[string]string{"a.rpz": aBody, "b.rpz": bBody}, "127.0.0.1:1")
	prev := loadSnapshot(t, path, nil)
	name := filepath.Join(filepath.Dir(path), "a.rpz")
	l := prev.Lists[name]
	rr, err := dns.NewRR("*.tiktok.cdn.example." + zone + " 300 IN CNAME .")
	require.NoError(t, err)
	n, err := l.Update([32]byte{9}, 8, func(h rpz.Handler) { rpz.FromRecords(zone, []dns.RR{rr}, h) }, func(rpz.Handler) {})
	require.NoError(t, err)
	next := prev.withList(name, n)

	was, now := policyNamed(prev, "government-devices"), policyNamed(next, "government-devices")
	require.True(t, was.Decide("www.tiktok.cdn.example").Blocked)
	require.True(t, now.Decide("www.tiktok.cdn.example").Allowed, "www.tiktok.cdn.example is allowed after the IXFR")

	err = errors.Join(heldChanges(prev, next)...)
	assert.ErrorIs(t, err, ErrExempted, "IXFR (Delta path): www.tiktok.cdn.example allowed now, not held")

	// The same change as a file edit (no Delta) is held.
	require.NoError(t, os.WriteFile(name, []byte(rpzHead+"*.cdn.example CNAME rpz-passthru.\ncapcut.com CNAME .\n"), 0o644))
	assert.ErrorIs(t, errors.Join(heldChanges(prev, loadSnapshot(t, path, prev))...), ErrExempted, "file edit path")
}

// A response-IP trigger removed counts once against its list however
// many address boundaries it decided: the addresses just past another
// list's /32s inside a removed /16 are boundaries too, and counted each
// they read one trigger of four as five of four no longer blocking
// (ErrShrink).
func TestAddressTriggerRemovedCountsOnce(t *testing.T) {
	conf := strings.Replace(rpzGuardConfig, `block: ["tiktok.txt", "cdn.rpz"]
    allow: ["allow.rpz", "allow.txt"]`, `block: ["a.rpz", "b.rpz"]`, 1)
	a := "a.example CNAME .\nb.example CNAME .\nc.example CNAME .\n"
	b := rpzHead + "32.1.0.0.10.rpz-ip CNAME .\n32.3.0.0.10.rpz-ip CNAME .\n32.5.0.0.10.rpz-ip CNAME .\n32.7.0.0.10.rpz-ip CNAME .\n"
	prev, next := snapshotsOf(t, conf, map[string]string{"a.rpz": rpzHead + "16.0.0.0.10.rpz-ip CNAME .\n" + a, "b.rpz": b},
		map[string]string{"a.rpz": rpzHead + a})
	err := errors.Join(heldChanges(prev, next)...)
	assert.NoError(t, err, "one response-IP trigger of four removed")
}

// Cuts that each stay within max_shrink are held once they add up past
// it: each change is measured against the most the file held since the
// last start or SIGHUP as well as against the state running. SIGHUP
// accepts the cut and measures from there on.
func TestShrinkAddsUpUntilSIGHUP(t *testing.T) {
	up := startUpstream(t, nil)
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"] = names(99, "tiktok.com") // 100 entries
	f := startFence(t, rangesConfig, files, up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	list := filepath.Join(f.dir, "tiktok.txt")
	networks := filepath.Join(f.dir, "networks.txt")
	const gov = "127.2.100.1" // in the /16 and the /17, not the /18
	blocked := func(name string) bool { return rcodeOf(t, f.addr, gov, name) == dns.RcodeNameError }
	entries := func() int { return f.handler.Snapshot().Lists[list].Len() }

	writeAtomic(t, list, names(59, "tiktok.com"))
	require.NoError(t, r.Reload(false), "100 to 60: within max_shrink")
	require.Equal(t, 60, entries())

	writeAtomic(t, list, names(34, "tiktok.com"))
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrShrink, "60 to 35 is within max_shrink, 100 to 35 is not")
	assert.Contains(t, err.Error(), list+": change held: list shrank more than reload.max_shrink allows: 60 to 35 entries, 100 at most since the last start or SIGHUP (max_shrink 0.5)")
	assert.Equal(t, 60, entries(), "held")
	assert.True(t, blocked("tracker50.example."))

	// A change to another file neither resets the peak nor gets past it.
	writeAtomic(t, networks, "127.2.0.0/17\n")
	require.ErrorIs(t, r.Reload(false), ErrShrink, "the list's cut is still held")
	writeAtomic(t, list, names(59, "tiktok.com"))
	require.NoError(t, r.Reload(false), "the list as it was, and half of the range file's addresses")
	assert.True(t, blocked("tracker50.example."))

	writeAtomic(t, networks, "127.2.0.0/18\n")
	err = r.Reload(false)
	require.ErrorIs(t, err, ErrRangeShrink, "32768 to 16384 is within max_shrink, 65536 to 16384 is not")
	assert.Contains(t, err.Error(), networks+": change held: client range file shrank more than reload.max_shrink allows: IPv4 addresses covered 32768 to 16384, 65536 at most since the last start or SIGHUP (max_shrink 0.5)")
	assert.True(t, blocked("www.tiktok.com."), "the device outside the /18 is still covered")

	// SIGHUP accepts both and measures from there.
	writeAtomic(t, list, names(34, "tiktok.com"))
	require.NoError(t, r.Reload(true))
	assert.Equal(t, 35, entries())
	assert.False(t, blocked("www.tiktok.com."), "SIGHUP applied the /18")
	writeAtomic(t, list, names(19, "tiktok.com"))
	require.NoError(t, r.Reload(false), "35 to 20: within max_shrink of what SIGHUP accepted")
	assert.Equal(t, 20, entries())
	writeAtomic(t, networks, "127.2.0.0/19\n")
	require.NoError(t, r.Reload(false), "16384 to 8192")
}

// A remote list's copies add up as files do: the peak is kept across the
// copies a source applies, and SIGHUP (which applies the one held)
// starts it again.
func TestSourceShrinkAddsUpUntilSIGHUP(t *testing.T) {
	f, rs, body := appliedSourceFence(t)
	list := rs.src.Name()
	entries := func() int { return f.handler.Snapshot().Lists[list].Len() }
	require.Equal(t, 100, entries())

	require.NoError(t, f.reloader.applySource(rs, body(60)))
	require.Equal(t, 60, entries())
	err := f.reloader.applySource(rs, body(35))
	require.ErrorIs(t, err, ErrShrink)
	assert.Contains(t, err.Error(), "60 to 35 entries, 100 at most since the last start or SIGHUP")
	assert.Equal(t, 60, entries(), "held")
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.1", "tracker50.example."))

	require.NoError(t, f.reloader.Reload(true))
	assert.Equal(t, 35, entries(), "SIGHUP applied the copy held")
	require.NoError(t, f.reloader.applySource(rs, body(20)), "35 to 20")
	assert.Equal(t, 20, entries())
}

// A list file replaced by a named pipe that no one writes held the
// watcher in its open(2) for ever: no later change was seen, and a SIGHUP
// waited on the reload's lock. Now the pipe's reload fails after
// blocklist.PipeIdle, keeping the last good state, and the next change
// applies.
func TestNamedPipeListDoesNotStopReloads(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, reloadConfig, testFiles, up.addr)
	r := watching(t, f, zaptest.NewLogger(t))
	list := filepath.Join(f.dir, "tiktok.txt")
	toNamedPipe(t, list, 300*time.Millisecond)
	st := settledStatus(t, r)
	require.Error(t, st.Err)
	assert.Contains(t, st.Err.Error(), "nothing was written to the named pipe")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "", "www.tiktok.com."), "the last good list")

	done := make(chan error, 1)
	go func() { done <- r.Reload(true) }()
	select {
	case err := <-done:
		require.Error(t, err, "SIGHUP does not apply a pipe nobody writes")
	case <-time.After(20 * time.Second):
		t.Fatal("SIGHUP still waiting after 20s")
	}

	require.NoError(t, os.Remove(list))
	writeAtomic(t, list, testFiles["tiktok.txt"]+"lemon8-app.com\n")
	require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "", "lemon8-app.com.") == dns.RcodeNameError },
		10*time.Second, 10*time.Millisecond, "the next change applies")
}

// TestRangeMovesAddUpUntilSIGHUP: the peaks hold cuts that each stay
// within max_shrink once they add up past it, but measured only sizes. A
// range file whose networks are moved a quarter at a time keeps its size,
// and each move (a quarter of what it covers) was measured against the
// state running alone: four reloads, none held, took every device of
// 127.2.0.0/16 out of the blocking policy. Now a move is measured against
// the ranges of the last start or SIGHUP too.
func TestRangeMovesAddUpUntilSIGHUP(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles("127.2.0.0/18\n127.2.64.0/18\n127.2.128.0/18\n127.2.192.0/18\n"), up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	networks := filepath.Join(f.dir, "networks.txt")
	steps := []string{
		"127.3.0.0/18\n127.2.64.0/18\n127.2.128.0/18\n127.2.192.0/18\n",
		"127.3.0.0/18\n127.3.64.0/18\n127.2.128.0/18\n127.2.192.0/18\n",
		"127.3.0.0/18\n127.3.64.0/18\n127.3.128.0/18\n127.2.192.0/18\n",
		"127.3.0.0/18\n127.3.64.0/18\n127.3.128.0/18\n127.3.192.0/18\n",
	}
	var err error
	for _, s := range steps {
		writeAtomic(t, networks, s)
		if err = r.Reload(false); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrHeld, "every device of 127.2.0.0/16 out of the blocking policy, a quarter a reload")
	assert.Contains(t, err.Error(), "IPv4 addresses no longer covered 49152 of the 65536 covered at the last start or SIGHUP")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.128.1", "tiktok.com."), "a device of the third quarter, still blocked")
	require.NoError(t, r.Reload(true), "SIGHUP accepts the move")
	writeAtomic(t, networks, steps[3])
	require.NoError(t, r.Reload(false), "the last quarter, against what SIGHUP accepted")
}

// TestIPv6RangeMovesAddUpUntilSIGHUP is TestRangeMovesAddUpUntilSIGHUP
// for IPv6 ranges, measured apart from IPv4: a quarter moved a reload is
// held once more than max_shrink of the addresses covered at the last
// start or SIGHUP are gone (half is not more), and a range only added,
// which loses nothing, applies however far the file moved before (with a
// looser max_shrink then).
func TestIPv6RangeMovesAddUpUntilSIGHUP(t *testing.T) {
	up := startUpstream(t, nil)
	lines := func(ranges ...string) string { return strings.Join(ranges, "\n") + "\n" }
	a, b, c, d := "fd00:82::/112", "fd00:82::1:0/112", "fd00:82::2:0/112", "fd00:82::3:0/112"
	a2, b2, c2, e := "fd00:83::/112", "fd00:83::1:0/112", "fd00:83::2:0/112", "fd00:84::/112"
	conf6 := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8", "fd00::/8"]`, 1)
	f := startFence(t, conf6, rangesFiles(lines(a, b, c, d)), up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	networks := filepath.Join(f.dir, "networks.txt")
	blocked := func(client string) string {
		return f.handler.Snapshot().Explain(netip.MustParseAddr(client), "tiktok.com", dns.TypeA).Rcode
	}

	writeAtomic(t, networks, lines(a2, b, c, d))
	require.NoError(t, r.Reload(false), "a quarter moved")
	writeAtomic(t, networks, lines(a2, b2, c, d))
	require.NoError(t, r.Reload(false), "half moved since the start: not more than max_shrink 0.5")
	writeAtomic(t, networks, lines(a2, b2, c2, d))
	heldAt := time.Now()
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrRangeShrink, "three quarters moved since the start")
	st := r.Status()
	assert.True(t, st.Held)
	assert.False(t, st.Time.Before(heldAt), "the status is the held reload's")
	assert.False(t, st.FailingSince.Before(heldAt), "failing since the held reload, not the one applied before it")
	assert.Contains(t, err.Error(), "IPv6 addresses no longer covered 196608 of the 262144 covered at the last start or SIGHUP")
	assert.Equal(t, "NXDOMAIN", blocked("fd00:82::2:1"), "a device of the third quarter, still blocked")

	// The third move under max_shrink 0.8, then 0.5 again: a range added
	// loses nothing.
	conf, err := os.ReadFile(path)
	require.NoError(t, err)
	loose := strings.Replace(string(conf), "reload: {debounce: 20ms}", "reload: {debounce: 20ms, max_shrink: 0.8}", 1)
	require.NotEqual(t, string(conf), loose)
	writeAtomic(t, networks, lines(a2, b2, c, d))
	writeAtomic(t, path, loose)
	require.NoError(t, r.Reload(false))
	writeAtomic(t, networks, lines(a2, b2, c2, d))
	require.NoError(t, r.Reload(false), "three quarters, within max_shrink 0.8")
	writeAtomic(t, path, string(conf))
	require.NoError(t, r.Reload(false))
	writeAtomic(t, networks, lines(a2, b2, c2, d, e))
	require.NoError(t, r.Reload(false), "a range added")
	assert.Equal(t, "NXDOMAIN", blocked("fd00:84::1"))
	require.NoError(t, r.Reload(true), "SIGHUP")
	st = r.Status()
	assert.True(t, st.OK)
	assert.False(t, st.Held)

	// Moves after SIGHUP add up against the ranges it accepted.
	a3, b3, c3 := "fd00:85::/112", "fd00:85::1:0/112", "fd00:85::2:0/112"
	writeAtomic(t, networks, lines(a3, b2, c2, d, e))
	require.NoError(t, r.Reload(false), "a fifth moved since SIGHUP")
	writeAtomic(t, networks, lines(a3, b3, c2, d, e))
	require.NoError(t, r.Reload(false), "two fifths")
	writeAtomic(t, networks, lines(a3, b3, c3, d, e))
	heldAt = time.Now()
	err = r.Reload(false)
	require.ErrorIs(t, err, ErrRangeShrink, "three fifths moved since SIGHUP")
	assert.False(t, r.Status().FailingSince.Before(heldAt), "failing since this hold, not the one SIGHUP ended")
	assert.Contains(t, err.Error(), "IPv6 addresses no longer covered 196608 of the 327680 covered at the last start or SIGHUP")
}

// TestRangeCountCutsAddUpFromTheStart: a client range file whose ranges
// lie inside one of them loses ranges, not addresses, when they are cut:
// cuts each within max_shrink of the state running add up against what
// the file held at start (10 ranges), from the first reload on.
func TestRangeCountCutsAddUpFromTheStart(t *testing.T) {
	up := startUpstream(t, nil)
	ranges := []string{"127.4.0.0/24"}
	for i := 1; i <= 9; i++ {
		ranges = append(ranges, fmt.Sprintf("127.4.0.%d/32", i))
	}
	lines := func(rs []string) string { return strings.Join(rs, "\n") + "\n" }
	f := startFence(t, rangesConfig, rangesFiles(lines(ranges)), up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	networks := filepath.Join(f.dir, "networks.txt")
	writeAtomic(t, networks, lines(ranges[:6]))
	require.NoError(t, r.Reload(false), "10 to 6 ranges, within max_shrink 0.5")
	writeAtomic(t, networks, lines(ranges[:4]))
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrRangeShrink)
	assert.Contains(t, err.Error(), "6 to 4 ranges, 10 at most since the last start or SIGHUP")
}

// TestRangeCutsAddUpAgainstThePeakAfterGrowth: a client range file that
// grew since the last start or SIGHUP has its peak raised by the growth:
// cuts each within max_shrink of the state running add up against the
// most it held, not against what it held at start.
func TestRangeCutsAddUpAgainstThePeakAfterGrowth(t *testing.T) {
	up := startUpstream(t, nil)
	var ranges []string
	for i := range 8 {
		ranges = append(ranges, fmt.Sprintf("127.6.0.%d/30", 4*i))
	}
	lines := func(n int) string { return strings.Join(ranges[:n], "\n") + "\n" }
	f := startFence(t, rangesConfig, rangesFiles(lines(4)), up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	networks := filepath.Join(f.dir, "networks.txt")
	writeAtomic(t, networks, lines(8))
	require.NoError(t, r.Reload(false), "4 ranges added")
	writeAtomic(t, networks, lines(5))
	require.NoError(t, r.Reload(false), "8 to 5 ranges, within max_shrink 0.5")
	writeAtomic(t, networks, lines(3))
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrRangeShrink, "5 to 3 ranges: 3 of the 8 held since the start")
	assert.Contains(t, err.Error(), "5 to 3 ranges, 8 at most since the last start or SIGHUP")
}

// TestSingleAddressMovesAddUp: a range file of single addresses moved one
// a reload loses one address each time, and the moves add up against the
// addresses covered at start as larger ranges' do, IPv4 and IPv6 alike.
func TestSingleAddressMovesAddUp(t *testing.T) {
	up := startUpstream(t, nil)
	for _, tc := range []struct{ family, from, to string }{
		{"IPv4", "127.5.0.%d/32", "127.5.1.%d/32"},
		{"IPv6", "fd00:5::%d/128", "fd00:5:1::%d/128"},
	} {
		t.Run(tc.family, func(t *testing.T) {
			lines := func(moved int) string {
				var b strings.Builder
				for i := 1; i <= 4; i++ {
					format := tc.from
					if i <= moved {
						format = tc.to
					}
					fmt.Fprintf(&b, format+"\n", i)
				}
				return b.String()
			}
			conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8", "fd00::/8"]`, 1)
			f := startFence(t, conf, rangesFiles(lines(0)), up.addr)
			path := f.handler.Snapshot().Config.File
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
			networks := filepath.Join(f.dir, "networks.txt")
			writeAtomic(t, networks, lines(1))
			require.NoError(t, r.Reload(false), "one address of four moved")
			writeAtomic(t, networks, lines(2))
			require.NoError(t, r.Reload(false), "two: not more than max_shrink 0.5")
			writeAtomic(t, networks, lines(3))
			err := r.Reload(false)
			require.ErrorIs(t, err, ErrRangeShrink, "three of the four addresses of the start moved, one a reload")
			assert.Contains(t, err.Error(), tc.family+" addresses no longer covered 3 of the 4 covered at the last start or SIGHUP")
		})
	}
}

// TestListReplacementAddsUpUntilSIGHUP: a block list whose entries are
// replaced a third at a time keeps its size, so its peak never sees it,
// and each step's entries that no longer block are within max_shrink of
// the state running: three reloads took every name blocked at start out
// of the block, none held. The entries replaced since the last start or
// SIGHUP now add up against the most the list had; SIGHUP accepts the
// change and counts again from there.
func TestListReplacementAddsUpUntilSIGHUP(t *testing.T) {
	up := startUpstream(t, nil)
	files := rangesFiles("127.2.0.0/16\n")
	files["tiktok.txt"] = namesUnder("a", 90)
	f := startFence(t, rangesConfig, files, up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	list := filepath.Join(f.dir, "tiktok.txt")
	a := strings.SplitAfter(namesUnder("a", 90), "\n")
	var err error
	for _, s := range []string{
		namesUnder("b", 30) + strings.Join(a[30:], ""),
		namesUnder("b", 60) + strings.Join(a[60:], ""),
		namesUnder("b", 90),
	} {
		writeAtomic(t, list, s)
		if err = r.Reload(false); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrShrink, "a third a reload: the second is held")
	assert.Contains(t, err.Error(), list+": change held: list shrank more than reload.max_shrink allows: 60 of the 90 entries it had at the last start or SIGHUP no longer block in policy government-devices (replaced, not only removed; max_shrink 0.5)")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.0.1", "a89.example."), "a name of the last third, still blocked")

	require.NoError(t, r.Reload(true), "SIGHUP accepts the second step")
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.2.0.1", "a30.example."))
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.0.1", "b59.example."))
	running := strings.SplitAfter(namesUnder("b", 60)+strings.Join(a[60:], ""), "\n")
	writeAtomic(t, list, namesUnder("c", 30)+strings.Join(running[30:], ""))
	require.NoError(t, r.Reload(false), "a third replaced since the SIGHUP")
}

// TestGrowthBelowThePeakApplies: a list or range file cut with the guards
// off (max_shrink 0) or looser stays below the most it held since the
// last start or SIGHUP once they are on again. Entries or ranges then
// added were held as a shrink (`1 to 2 entries, 6 at most since the last
// start or SIGHUP`, `IPv4 addresses covered 4 to 8, 88 at most …`; a
// range file moved with the guards off: `IPv4 addresses no longer covered
// 88 of the 88 covered at the last start or SIGHUP`), and every later
// change with them, until SIGHUP: what narrows what devices reach must
// apply at once. FuzzReloadSequence found it. A file edited below the
// peak without losing anything (a comment added) is not held either.
func TestGrowthBelowThePeakApplies(t *testing.T) {
	for _, tc := range []struct {
		name        string
		file        string
		cut, grown  string
		cutShrink   float64 // max_shrink while the file is cut
		grownShrink float64 // max_shrink when it grows
		client      string  // a government device
		qname       string  // blocked for it only once the file grew
	}{
		{name: "block list, guards off", file: "a.txt", cut: "n0.example\n", grown: "n0.example\nn3.example\n",
			cutShrink: 0, grownShrink: 0.5, client: "127.0.82.17", qname: "n3.example"},
		{name: "block list, max_shrink lowered", file: "a.txt", cut: "n0.example\nn1.example\nn2.example\n",
			grown: "n0.example\nn1.example\nn2.example\nn3.example\n", cutShrink: 0.5, grownShrink: 0.25, client: "127.0.82.17", qname: "n3.example"},
		{name: "range file, guards off", file: modelRanges, cut: "127.0.82.20/30\n", grown: "127.0.82.20/30\n127.0.82.24/30\n",
			cutShrink: 0, grownShrink: 0.5, client: "127.0.82.25", qname: "n0.example"},
		{name: "range file moved, guards off", file: modelRanges, cut: "127.0.82.192/26\n127.0.82.24/30\n",
			grown: "127.0.82.192/26\n127.0.82.24/30\n127.0.82.28/30\n", cutShrink: 0, grownShrink: 0.5, client: "127.0.82.29", qname: "n0.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := startModel(t, 2) // a.txt of 6 entries, ranges.txt of 4 ranges (88 addresses), max_shrink 0.5
			cfg := run.model.cfg
			cfg.maxShrink = tc.cutShrink
			run.writeConfig(cfg)
			require.NoError(t, run.r.Reload(false))
			run.write(tc.file, modelFile{content: []byte(tc.cut)})
			require.NoError(t, run.r.Reload(false), "the cut is within max_shrink %g", tc.cutShrink)
			cfg.maxShrink = tc.grownShrink
			run.writeConfig(cfg)
			require.NoError(t, run.r.Reload(false))

			// As many entries or ranges as the state running, the same
			// ones, a comment added: nothing shrank, however far below
			// the peak.
			run.write(tc.file, modelFile{content: []byte(tc.cut + "# edited\n")})
			require.NoError(t, run.r.Reload(false), "the same entries, below the peak")
			run.write(tc.file, modelFile{content: []byte(tc.grown)})
			require.NoError(t, run.r.Reload(false), "what was added is held")
			assert.Equal(t, "NXDOMAIN", run.h.Snapshot().Explain(netip.MustParseAddr(tc.client), tc.qname, dns.TypeA).Rcode)
			held, _ := metricValue(t, run.reg, "dnsfence_reload_held")
			assert.Zero(t, held)
		})
	}
}

// TestTrustWithdrawnFromAForwarderIsHeld: a forwarder in trusted_proxies
// names its devices by ECS (or a balancer names them by PROXY headers or
// Forwarded); taken out of trusted_proxies, every query it relays is
// decided for its own address, and one in no blocking range lets every
// government device behind it reach TikTok. That is held, as
// allowed_clients no longer holding a blocking range is; SIGHUP accepts
// it. A proxy whose own address a blocking policy holds is held too: a
// load balancer there loses its devices, whose connections open with a
// PROXY header. A proxy still trusted that allowed_clients no longer
// holds has its devices refused: held too.
func TestTrustWithdrawnFromAForwarderIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	const trusted = `trusted_proxies: ["127.9.0.1/32", "127.0.1.77/32"]`
	conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8"]`+"\n"+trusted, 1)
	f := startFence(t, conf, rangesFiles("127.2.0.0/16\n"), up.addr)
	edit := lineEdits(t, f, trusted)
	editBoth := lineEdits(t, f, `allowed_clients: ["127.0.0.0/8"]`+"\n"+trusted)
	viaForwarder := func() int { return askByECS(t, f, "127.9.0.1", "127.2.3.4", "www.tiktok.com.") }
	require.Equal(t, dns.RcodeNameError, viaForwarder(), "the forwarder names a government device")

	err := edit(`trusted_proxies: ["127.0.1.77/32"]`, false)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "trusted_proxies no longer holds 127.9.0.1/32")
	assert.Equal(t, dns.RcodeNameError, viaForwarder(), "held: still read by its ECS")

	err = edit(`trusted_proxies: ["127.9.0.1/32"]`, false)
	require.ErrorIs(t, err, ErrRemoved, "a proxy inside a blocking range: a balancer's connections with PROXY headers would fail")
	assert.Contains(t, err.Error(), "trusted_proxies no longer holds 127.0.1.77/32")
	assert.NotContains(t, err.Error(), "127.9.0.1")

	require.NoError(t, edit(`trusted_proxies: ["127.9.0.0/24", "127.0.1.77/32"]`, false), "trust widened outside every blocking range")
	require.NoError(t, edit(`trusted_proxies: ["127.9.0.0/25", "127.9.0.128/25", "127.0.1.77/32"]`, false), "the same proxies, written as two halves")
	require.NoError(t, edit(`trusted_proxies: ["127.9.0.0/24", "127.0.1.77/32"]`, false))
	err = edit(`trusted_proxies: ["127.9.0.0/25", "127.0.1.77/32"]`, false)
	require.ErrorIs(t, err, ErrRemoved, "narrowed")
	assert.Contains(t, err.Error(), "trusted_proxies no longer holds 127.9.0.0/24")

	// Still trusted, but no longer allowed: its devices would be refused.
	err = editBoth(`allowed_clients: ["127.0.0.0/13"]`+"\n"+`trusted_proxies: ["127.9.0.0/24", "127.0.1.77/32"]`, false)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "allowed_clients no longer holds all of trusted proxy 127.9.0.0/24")
	assert.Equal(t, dns.RcodeNameError, viaForwarder(), "held: still allowed")

	err = edit(`trusted_proxies: []`, false)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "trusted_proxies no longer holds 127.9.0.0/24")
	require.NoError(t, edit(`trusted_proxies: []`, true), "SIGHUP accepts it")
	assert.Equal(t, dns.RcodeSuccess, viaForwarder(), "accepted: the forwarder is itself")
}

// TestTrustWithdrawnWhereNothingBlocksIsApplied: with no blocking policy
// (a log-only one), a proxy taken out of trusted_proxies, or out of
// allowed_clients, takes nobody out of a block, so the reload is not held.
func TestTrustWithdrawnWhereNothingBlocksIsApplied(t *testing.T) {
	files := map[string]string{"tiktok.txt": "tiktok.com\n"}
	config := func(allowed, trusted string, blocks bool) string {
		text := "listen: [\"127.0.0.1:0\"]\nupstreams: [\"127.0.0.1:53\"]\nallowed_clients: " + allowed + "\n" +
			"trusted_proxies: " + trusted + "\npolicies:\n  - name: p\n    clients: [\"127.2.0.0/16\"]\n    block: [tiktok.txt]\n"
		if !blocks {
			text += "    action: log\n"
		}
		return text
	}
	for _, tc := range []struct {
		name                   string
		allowed, trusted       string // after the edit
		heldWithBlockingPolicy string
	}{
		{"trust withdrawn", `["127.0.0.0/8"]`, `[]`, "trusted_proxies no longer holds 127.9.0.1/32"},
		{"proxy no longer allowed", `["127.0.0.0/14"]`, `["127.9.0.1/32"]`, "allowed_clients no longer holds all of trusted proxy 127.9.0.1/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, blocks := range []bool{false, true} {
				prev, next := snapshotsOf(t, config(`["127.0.0.0/8"]`, `["127.9.0.1/32"]`, blocks), files,
					map[string]string{"dnsfence.yaml": config(tc.allowed, tc.trusted, blocks)})
				errs := clientsWidened(prev, next)
				if !blocks {
					assert.Empty(t, errs, "a log-only policy")
					continue
				}
				require.Len(t, errs, 1, "the control: a blocking policy")
				assert.ErrorIs(t, errs[0], ErrRemoved)
				assert.ErrorContains(t, errs[0], tc.heldWithBlockingPolicy)
			}
		})
	}
}

// TestForwarderWithdrawnFromTrustAndAllowedIsHeld: a forwarder inside a
// blocking range that allowed_clients holds part of (its devices, in
// another range, ask through it by ECS), taken out of trusted_proxies and
// allowed_clients in one edit, has every query it relays REFUSED, and the
// government devices behind it turn to another resolver, which does not
// block. That is held as either edit alone is; SIGHUP accepts it. Before,
// neither guard saw it: the forwarder's own address is blocked (so its
// trust went unheld), the range was never all allowed, and the check of
// allowed_clients looked only at the proxies still trusted.
func TestForwarderWithdrawnFromTrustAndAllowedIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	const (
		before = `allowed_clients: ["127.2.0.0/16", "127.0.0.3/32", "127.0.1.0/25"]` + "\n" + `trusted_proxies: ["127.0.1.77/32"]`
		after  = `allowed_clients: ["127.2.0.0/16", "127.0.0.3/32", "127.0.1.0/26"]` + "\n" + `trusted_proxies: []`
	)
	conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, before, 1)
	f := startFence(t, conf, rangesFiles("127.2.0.0/16\n"), up.addr)
	edit := lineEdits(t, f, before)
	viaForwarder := func() int { return askByECS(t, f, "127.0.1.77", "127.2.3.4", "www.tiktok.com.") }
	require.Equal(t, dns.RcodeNameError, viaForwarder(), "the forwarder names a government device")

	err := edit(after, false)
	require.ErrorIs(t, err, ErrRemoved)
	assert.Contains(t, err.Error(), "allowed_clients no longer holds all of trusted proxy 127.0.1.77/32")
	assert.Equal(t, dns.RcodeNameError, viaForwarder(), "held: still trusted and allowed")

	require.NoError(t, edit(after, true), "SIGHUP accepts it")
	assert.Equal(t, dns.RcodeRefused, viaForwarder(), "accepted: the forwarder is refused")
}

// TestTrustWithdrawnWhereverTheProxyIsHeld: trusted_proxies narrowed off
// a proxy is held wherever the proxy's own address is, since no address
// tells what it is. A load balancer inside a blocking range whose
// connections open with a PROXY header has them fail once it is no
// longer trusted: its devices turn to another resolver. A forwarder in a
// blocking policy that blocks less than its devices' (tiktok.txt only,
// where theirs blocks bytedance.txt too) has them decided by its own:
// they reach CapCut. A proxy range that two blocking ranges hold half
// each is held the same. SIGHUP applies each. Before, the first was
// applied silently.
func TestTrustWithdrawnWhereverTheProxyIsHeld(t *testing.T) {
	up := startUpstream(t, nil)
	const trusted = `trusted_proxies: ["127.0.1.77/32", "127.9.0.1/32", "127.2.0.0/16"]`
	conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8"]`+"\n"+trusted, 1)
	conf += "  - name: lobby\n    clients: [\"127.9.0.0/24\"]\n    block: [\"tiktok.txt\"]\n"
	f := startFence(t, conf, rangesFiles("127.2.0.0/17\n127.2.128.0/17\n"), up.addr)
	edit := lineEdits(t, f, trusted)
	viaBalancer := func() error {
		t.Helper()
		_, err := askOverProxy(t, f.addr, "127.0.1.77", "127.2.3.4", question("www.example.org.", dns.TypeA, true))
		return err
	}
	viaForwarder := func() int { return askByECS(t, f, "127.9.0.1", "127.2.3.4", "www.capcut.com.") }
	require.NoError(t, viaBalancer(), "the balancer's connections")
	require.Equal(t, dns.RcodeNameError, viaForwarder(), "the forwarder names a government device")

	for _, tc := range []struct{ name, trusted, withdrawn string }{
		{"a balancer in a blocking range", `["127.9.0.1/32", "127.2.0.0/16"]`, "127.0.1.77/32"},
		{"a forwarder in a lesser block", `["127.0.1.77/32", "127.2.0.0/16"]`, "127.9.0.1/32"},
		{"proxies two blocking ranges hold half each", `["127.0.1.77/32", "127.9.0.1/32"]`, "127.2.0.0/16"},
	} {
		err := edit("trusted_proxies: "+tc.trusted, false)
		require.ErrorIs(t, err, ErrRemoved, tc.name)
		assert.Contains(t, err.Error(), "trusted_proxies no longer holds "+tc.withdrawn, tc.name)
	}
	require.NoError(t, viaBalancer(), "held: the balancer is still trusted")
	assert.Equal(t, dns.RcodeNameError, viaForwarder(), "held: the forwarder's ECS is still read")

	require.NoError(t, edit(`trusted_proxies: ["127.2.0.0/16"]`, true), "SIGHUP accepts it")
	assert.Error(t, viaBalancer(), "accepted: a PROXY header from a peer not trusted is no DNS message")
	assert.Equal(t, dns.RcodeSuccess, viaForwarder(), "accepted: the forwarder is itself, in lobby")
}

// TestRangeLostToANewBadLineIsHeld (found by a sweep of peer resolvers'
// issues: CoreDNS's acl and Unbound's access-control refuse a bad
// netblock): a government range edited into one that does not parse
// (a netmask for a prefix length) was skipped as a bad line, with a
// warning, and the reload applied: 1 range of 5 is within max_shrink, and
// the devices of that /25 were no longer blocked. Such an edit is held
// now, however few addresses it loses, naming the line; SIGHUP accepts
// it. A range taken out on purpose (no new bad line) applies as before,
// and so does a new bad line that loses no address.
func TestRangeLostToANewBadLineIsHeld(t *testing.T) {
	const five = "127.2.0.0/24\n127.2.1.0/24\n127.2.2.0/24\n127.2.3.0/24\n127.2.4.0/25\n"
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8", "2001:db8::/32", "2001:db9::/32"]`, 1)
	start := func(t *testing.T, networks string) (*fence, *Reloader) {
		t.Helper()
		f, _ := startFenceWarned(t, conf, rangesFiles(networks), up.addr)
		r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) {
			return config.Load(filepath.Join(f.dir, "dnsfence.yaml"))
		})
		require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.4.9", "www.tiktok.com."))
		return f, r
	}
	edit := func(t *testing.T, f *fence, networks string) {
		t.Helper()
		writeAtomic(t, filepath.Join(f.dir, "networks.txt"), networks)
	}

	t.Run("a range written wrong", func(t *testing.T) {
		f, r := start(t, five)
		edit(t, f, strings.Replace(five, "127.2.4.0/25", "127.2.4.0/255.255.255.128", 1))
		err := r.Reload(false)
		require.ErrorIs(t, err, ErrRangeBadLine)
		assert.ErrorIs(t, err, ErrHeld)
		path := filepath.Join(f.dir, "networks.txt")
		assert.Contains(t, err.Error(), path+": change held: client range file lost addresses beside a new bad line: "+
			"IPv4 addresses no longer covered 128 of 1152, beside "+path+`:5: `)
		assert.Contains(t, err.Error(), `"127.2.4.0/255.255.255.128"; SIGHUP accepts it`)
		assert.True(t, r.Status().Held)
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.4.9", "www.tiktok.com."), "its devices still blocked")
		require.NoError(t, r.Reload(true), "SIGHUP accepts it")
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.2.4.9", "www.tiktok.com."))
	})
	// A bad line there before names nothing: the error names the new one,
	// and one fixed in the same edit does not make up for it.
	for _, tc := range []struct{ name, before, after string }{
		{"beside a bad line there before", "10.0.0.0/33\n" + five,
			"10.0.0.0/33\n" + strings.Replace(five, "127.2.4.0/25", "127.2.4.0/255.255.255.128", 1)},
		{"while a bad line there before is fixed", five + "10.0.0.0/33\n",
			strings.Replace(five, "127.2.4.0/25", "127.2.4.0/255.255.255.128", 1)},
	} {
		t.Run("a range written wrong "+tc.name, func(t *testing.T) {
			f, r := start(t, tc.before)
			edit(t, f, tc.after)
			err := r.Reload(false)
			require.ErrorIs(t, err, ErrRangeBadLine)
			path := filepath.Join(f.dir, "networks.txt")
			line := strings.Count(tc.after[:strings.Index(tc.after, "/255.")], "\n") + 1
			assert.Contains(t, err.Error(), fmt.Sprintf("beside %s:%d: ", path, line), "the new bad line")
			assert.Contains(t, err.Error(), `"127.2.4.0/255.255.255.128"; SIGHUP accepts it`)
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.4.9", "www.tiktok.com."), "its devices still blocked")
		})
	}
	// Past the 100 bad lines reported one by one, lines are counted, not
	// named: one fixed there and a range written wrong after it leave the
	// count as it was. Before, that was no new bad line, and the range's
	// devices left their policy.
	t.Run("a range written wrong past the bad lines named", func(t *testing.T) {
		bad := strings.Repeat("10.0.0.0/33\n", 100)
		f, r := start(t, bad+"10.0.1.0/33\n"+five)
		edit(t, f, bad+strings.Replace(five, "127.2.4.0/25", "127.2.4.0/255.255.255.128", 1))
		err := r.Reload(false)
		require.ErrorIs(t, err, ErrRangeBadLine)
		assert.Contains(t, err.Error(), "IPv4 addresses no longer covered 128 of 1152, beside a bad line past those reported one by one; SIGHUP accepts it")
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.4.9", "www.tiktok.com."), "its devices still blocked")
	})
	t.Run("IPv6", func(t *testing.T) {
		f, r := start(t, five+"2001:db8::/33\n2001:db8:8000::/48\n")
		edit(t, f, five+"2001:db8::/33\n2001:db8:8000::/ 48\n2001:db9::/32\n")
		err := r.Reload(false)
		require.ErrorIs(t, err, ErrRangeBadLine, "a range moved too: the new one does not make up for the lost one")
		assert.Contains(t, err.Error(), "IPv6 addresses no longer covered")
	})
	for _, tc := range []struct{ name, before, after string }{
		{"a range taken out", five, strings.Replace(five, "127.2.4.0/25\n", "", 1)},
		{"a bad line there before", five + "10.0.0.0/33\n", strings.Replace(five, "127.2.4.0/25\n", "", 1) + "10.0.0.0/33\n"},
		{"a new bad line, no address lost", five, five + "127.2.9.0/255.255.255.0\n"},
	} {
		t.Run(tc.name+" applies", func(t *testing.T) {
			f, r := start(t, tc.before)
			edit(t, f, tc.after)
			require.NoError(t, r.Reload(false))
			lost := !strings.Contains(tc.after, "127.2.4.0/25\n")
			assert.Equal(t, lost, rcodeOf(t, f.addr, "127.2.4.9", "www.tiktok.com.") == dns.RcodeSuccess)
		})
	}
}

// TestMaxShrinkIsTheShareLost: reload.max_shrink is the share of a list's
// entries, or of a range file's addresses, that a reload may take away:
// with 0.2 a cut of 15 % applies and one of 40 % is held; with 0.8 a cut of
// 70 % applies and one of 95 % is held. (The default, 0.5, is its own
// complement, so it alone cannot tell the share lost from the share kept.)
func TestMaxShrinkIsTheShareLost(t *testing.T) {
	for _, tc := range []struct {
		maxShrink         string
		applied, held     int  // entries of the list after a cut from 100
		halfRangesApplied bool // the /16 cut to a /17: 50 % of the addresses
	}{
		{maxShrink: "0.2", applied: 85, held: 60, halfRangesApplied: false},
		{maxShrink: "0.8", applied: 30, held: 5, halfRangesApplied: true},
	} {
		t.Run(tc.maxShrink, func(t *testing.T) {
			up := startUpstream(t, nil)
			files := rangesFiles("127.2.0.0/16\n")
			files["tiktok.txt"] = names(99, "tiktok.com") // 100 entries
			conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, max_shrink: "+tc.maxShrink+"}", 1)
			f := startFence(t, conf, files, up.addr)
			path := f.handler.Snapshot().Config.File
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
			list := filepath.Join(f.dir, "tiktok.txt")
			entries := func() int { return f.handler.Snapshot().Lists[list].Len() }

			writeAtomic(t, list, names(tc.applied-1, "tiktok.com"))
			require.NoError(t, r.Reload(false), "100 to %d entries: within max_shrink %s", tc.applied, tc.maxShrink)
			require.Equal(t, tc.applied, entries())

			writeAtomic(t, list, names(tc.held-1, "tiktok.com"))
			require.ErrorIs(t, r.Reload(false), ErrShrink, "100 to %d entries: past max_shrink %s", tc.held, tc.maxShrink)
			assert.Equal(t, tc.applied, entries(), "held")
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.100.1", fmt.Sprintf("tracker%d.example.", tc.applied-2)))

			writeAtomic(t, list, names(tc.applied-1, "tiktok.com"))
			writeAtomic(t, filepath.Join(f.dir, "networks.txt"), "127.2.0.0/17\n")
			err := r.Reload(false)
			if tc.halfRangesApplied {
				require.NoError(t, err, "half the addresses: within max_shrink %s", tc.maxShrink)
			} else {
				require.ErrorIs(t, err, ErrRangeShrink, "half the addresses: past max_shrink %s", tc.maxShrink)
			}
			assert.Equal(t, tc.halfRangesApplied, rcodeOf(t, f.addr, "127.2.200.1", "www.tiktok.com.") == dns.RcodeSuccess,
				"a device in the half cut off is blocked until a cut is applied")
		})
	}
}

// TestGuardsTurnedOffFromMaxShrinkOne: reload.max_shrink 1 lets a list
// shrink to nothing, but the guards against protection taken out of the
// configuration still hold. A write that sets max_shrink 0 (every guard
// off) and takes a block list out of a blocking policy is measured with
// the stricter of the two settings, 1: held, as from any other.
func TestGuardsTurnedOffFromMaxShrinkOne(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, max_shrink: 1}", 1)
	f := startFence(t, conf, rangesFiles("127.2.0.0/16\n"), up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	off := strings.Replace(string(good), "max_shrink: 1}", "max_shrink: 0}", 1)
	off = strings.Replace(off, `block: ["tiktok.txt", "bytedance.txt"]`, `block: ["tiktok.txt"]`, 1)
	require.NotEqual(t, string(good), off)
	writeAtomic(t, path, off)
	err = r.Reload(false)
	require.ErrorIs(t, err, ErrRemoved, "the guards turned off in the write that takes a list out")
	assert.Contains(t, err.Error(), "bytedance.txt removed from policy")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.0.1", "capcut.com."), "held: still blocked")
	require.NoError(t, r.Reload(true), "SIGHUP accepts it")
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.2.0.1", "capcut.com."))
}

// TestMaxShrinkChangedInTheSameWrite: a reload measures its cuts with the
// stricter of the running and the new reload.max_shrink, so that a write
// that loosens the guard does not let its own cut through, and one that
// tightens it holds a cut the old value allowed. Either way the new value
// applies once the write is accepted.
func TestMaxShrinkChangedInTheSameWrite(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		entries        int // of the list cut from 100
		want           string
	}{
		{name: "loosened", from: "0.2", to: "0.9", entries: 20, want: "100 to 20 entries (max_shrink 0.2)"},
		{name: "tightened", from: "0.5", to: "0.1", entries: 70, want: "100 to 70 entries (max_shrink 0.1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, nil)
			files := rangesFiles("127.2.0.0/16\n")
			files["tiktok.txt"] = names(99, "tiktok.com") // 100 entries
			conf := func(maxShrink string) string {
				return strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, max_shrink: "+maxShrink+"}", 1)
			}
			f := startFence(t, conf(tc.from), files, up.addr)
			path := f.handler.Snapshot().Config.File
			r := NewReloader(zaptest.NewLogger(t), f.handler, func() (*config.Config, error) { return config.Load(path) })
			list := filepath.Join(f.dir, "tiktok.txt")
			good, err := os.ReadFile(path)
			require.NoError(t, err)

			writeAtomic(t, path, strings.Replace(string(good), "max_shrink: "+tc.from, "max_shrink: "+tc.to, 1))
			writeAtomic(t, list, names(tc.entries-1, "tiktok.com"))
			err = r.Reload(false)
			require.ErrorIs(t, err, ErrShrink)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, 100, f.handler.Snapshot().Lists[list].Len(), "held")
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.2.0.1", "tracker90.example."))

			require.NoError(t, r.Reload(true), "SIGHUP accepts it")
			assert.Equal(t, tc.entries, f.handler.Snapshot().Lists[list].Len())
		})
	}
}
