package resolver

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
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
// holds open, half written. The swap is held (a list left the policy);
// SIGHUP must wait for the new file, but it waits only for the running
// state's files and applies the half-written list.
func TestSIGHUPWaitsForANewListBeingWritten(t *testing.T) {
	up := startUpstream(t, nil)
	files := rangesFiles(fourRanges)
	files["tiktok.txt"] = "tiktok.com\ntiktokv.com\n"
	f := startFence(t, rangesConfig, files, up.addr)
	core, _ := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	r.sighupWait = 300 * time.Millisecond

	w, err := os.OpenFile(filepath.Join(f.dir, "tiktok2.txt"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	defer w.Close()
	_, err = w.WriteString("tiktok.com\n") // tiktokv.com still to come
	require.NoError(t, err)
	path := filepath.Join(f.dir, "dnsfence.yaml")
	old, err := os.ReadFile(path)
	require.NoError(t, err)
	writeAtomic(t, path, strings.Replace(string(old), `"tiktok.txt"`, `"tiktok2.txt"`, 1))
	st := settledStatus(t, r)
	require.ErrorIs(t, st.Err, ErrRemoved)

	err = r.Reload(true)
	assert.ErrorIs(t, err, ErrIncomplete, "SIGHUP applied a list a writer still holds open")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktokv.com."), "half-written list served")
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
