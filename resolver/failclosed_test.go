package resolver

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// rangesConfig: the government policy covers 127.0.1.0/24 inline and the
// ranges of networks.txt; 127.0.0.3 is an exempt press office.
const rangesConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
log: {queries: none}
reload: {debounce: 20ms}
policies:
  - name: government-devices
    clients: ["127.0.1.0/24"]
    client_files: ["networks.txt"]
    block: ["tiktok.txt", "bytedance.txt"]
  - name: press-office
    clients: ["127.0.0.3/32"]
`

// fourRanges are four government ranges of 4 addresses each.
const fourRanges = "127.0.0.8/30\n127.0.0.12/30\n127.0.0.16/30\n127.0.0.20/30\n"

func rangesFiles(networks string) map[string]string {
	return map[string]string{"networks.txt": networks, "tiktok.txt": "tiktok.com\n", "bytedance.txt": "capcut.com\n"}
}

// heldWait waits for the watcher to hold a reload and returns its status.
func heldWait(t *testing.T, r *Reloader, before uint64) ReloadStatus {
	t.Helper()
	require.Eventually(t, func() bool { return r.Status().Failures > before }, 10*time.Second, 5*time.Millisecond,
		"the change was neither held nor failed")
	return r.Status()
}

// TestHeldThenFailedReloadIsAFailure: a reload that fails after a held
// one is a failure in the metrics as in the reloader's status:
// dnsfence_reload_held goes back to 0 (DnsfenceReloadFailing fires, not
// DnsfenceReloadHeld, whose SIGHUP would not apply the held change), and
// /readyz names the failure.
func TestHeldThenFailedReloadIsAFailure(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	r := watching(t, f, zap.NewNop())
	path := filepath.Join(f.dir, "networks.txt")

	require.NoError(t, os.WriteFile(path, nil, 0o644))
	st := heldWait(t, r, 0)
	require.True(t, st.Held)
	_, body := get(t, srv.URL+"/metrics")
	require.Contains(t, body, "\ndnsfence_reload_held 1\n")

	// The configuration broken beside it: a plain failure.
	conf := f.handler.Snapshot().Config.File
	b, err := os.ReadFile(conf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(conf, append(b, "upstream_timeout: soon\n"...), 0o644))
	st = heldWait(t, r, st.Failures)
	require.False(t, st.Held, "%v", st.Err)
	assert.Contains(t, st.Err.Error(), "upstream_timeout")
	_, body = get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_reload_held 0\n", "the status says failed, not held")
	assert.Contains(t, body, "\ndnsfence_reload_ok 0\n")
	assert.Contains(t, body, "dnsfence_reloads_total{result=\"failure\"} 1\n")
}

// TestHeldReloadAcceptedIsOKAgain: dnsfence_reload_ok is 1 from the first
// load, 0 while a fail-closed guard holds a change, and 1 again once SIGHUP
// applies it, with dnsfence_reload_held back to 0 and the last success's
// time moved on: an alert on reload_ok == 0 clears when the operator has
// accepted the change, and not before.
func TestHeldReloadAcceptedIsOKAgain(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
	r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) {
		return config.Load(f.handler.Snapshot().Config.File)
	})
	gauge := func(name string) float64 {
		t.Helper()
		v, ok := metricValue(t, f.registry, name)
		require.True(t, ok, name)
		return v
	}
	assert.Equal(t, 1.0, gauge("dnsfence_reload_ok"), "the first load applied")
	assert.Equal(t, 0.0, gauge("dnsfence_reload_held"))
	loaded := gauge("dnsfence_reload_last_success_timestamp_seconds")
	assert.Equal(t, float64(f.handler.Snapshot().Loaded.Unix()), loaded)

	require.NoError(t, os.WriteFile(filepath.Join(f.dir, "networks.txt"), nil, 0o644))
	require.ErrorIs(t, r.Reload(false), ErrHeld)
	assert.Equal(t, 0.0, gauge("dnsfence_reload_ok"))
	assert.Equal(t, 1.0, gauge("dnsfence_reload_held"))
	assert.Equal(t, loaded, gauge("dnsfence_reload_last_success_timestamp_seconds"), "nothing applied")

	require.NoError(t, r.Reload(true))
	assert.Equal(t, 1.0, gauge("dnsfence_reload_ok"), "SIGHUP applied the change held")
	assert.Equal(t, 0.0, gauge("dnsfence_reload_held"))
	assert.Equal(t, float64(f.handler.Snapshot().Loaded.Unix()), gauge("dnsfence_reload_last_success_timestamp_seconds"))
	success, _ := metricValue(t, f.registry, "dnsfence_reloads_total", "result", "success")
	held, _ := metricValue(t, f.registry, "dnsfence_reloads_total", "result", "held")
	assert.Equal(t, []float64{1, 1}, []float64{success, held}, "one success, one held")
}

// TestCleanFilesCountNoSkippedLines: dnsfence_skipped_lines is 0 for a
// range file and a list with no bad line, from the first load, and back to
// 0 once the bad line a reload skipped is fixed: a count left over would
// send the operator looking for a line that is not there.
func TestCleanFilesCountNoSkippedLines(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
	r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) {
		return config.Load(f.handler.Snapshot().Config.File)
	})
	networks, list := filepath.Join(f.dir, "networks.txt"), filepath.Join(f.dir, "tiktok.txt")
	skipped := func(file string) float64 {
		t.Helper()
		v, ok := metricValue(t, f.registry, "dnsfence_skipped_lines", "file", file)
		require.True(t, ok, file)
		return v
	}
	assert.Equal(t, 0.0, skipped(networks))
	assert.Equal(t, 0.0, skipped(list))

	// A bad line added beside the four ranges loses none of them: applied.
	require.NoError(t, os.WriteFile(networks, []byte(fourRanges+"127.0.0.25/30\n"), 0o644))
	require.NoError(t, r.Reload(false))
	assert.Equal(t, 1.0, skipped(networks))

	require.NoError(t, os.WriteFile(networks, []byte(fourRanges), 0o644))
	require.NoError(t, r.Reload(false))
	assert.Equal(t, 0.0, skipped(networks), "the bad line fixed")
	assert.Equal(t, 0.0, skipped(list))
}

// TestRangeFileShrinkIsHeld empties or shrinks a government range file
// while serving: the change is held (a warn line, dnsfence_reload_held),
// government devices stay blocked over a real socket, and SIGHUP applies
// it. A small edit applies at once and names the ranges it moved.
func TestRangeFileShrinkIsHeld(t *testing.T) {
	tests := []struct {
		name    string
		before  string // networks.txt at start
		after   string // what it becomes
		client  string // a government device the change would release; "" for none this test can be
		wantErr string
	}{
		{name: "emptied", before: fourRanges, after: "", client: "127.0.0.9",
			wantErr: "4 to 0 ranges, IPv4 addresses covered 16 to 0"},
		{name: "emptied by truncation to comments", before: fourRanges, after: "# to be filled in\n", client: "127.0.0.21",
			wantErr: "4 to 0 ranges"},
		{name: "four ranges to one", before: fourRanges, after: "127.0.0.8/30\n", client: "127.0.0.13",
			wantErr: "4 to 1 ranges, IPv4 addresses covered 16 to 4"},
		{name: "a /16 to a /24: one line still", before: "127.2.0.0/16\n", after: "127.2.0.0/24\n", client: "127.2.5.1",
			wantErr: "IPv4 addresses covered 65536 to 256"},
		{name: "every IPv6 range gone, IPv4 kept", before: "127.0.0.8/30\n::1/128\n", after: "127.0.0.8/30\n", client: "", // served on IPv4 only
			wantErr: "IPv6 addresses covered 1 to 0"},
		{name: "a typo loses the only range but one", before: "127.2.0.0/16\n127.0.0.8/30\n", after: "127.2.0.1/16\n127.0.0.8/30\n", client: "127.2.5.1",
			wantErr: "IPv4 addresses covered 65540 to 4"},
	}
	up := startUpstream(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := strings.Replace(rangesConfig, `allowed_clients: ["127.0.0.0/8"]`, `allowed_clients: ["127.0.0.0/8", "::1/128"]`, 1)
			f := startFence(t, conf, rangesFiles(tc.before), up.addr)
			srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
			t.Cleanup(srv.Close)
			core, logs := observer.New(zap.InfoLevel)
			r := watching(t, f, zap.New(core))
			blocked := func() int {
				if tc.client == "" {
					return dns.RcodeNameError
				}
				return rcodeOf(t, f.addr, tc.client, "www.tiktok.com.")
			}
			require.Equal(t, dns.RcodeNameError, blocked())

			path := filepath.Join(f.dir, "networks.txt")
			require.NoError(t, os.WriteFile(path, []byte(tc.after), 0o644))
			st := heldWait(t, r, 0)
			require.ErrorIs(t, st.Err, ErrRangeShrink)
			assert.ErrorIs(t, st.Err, ErrHeld)
			assert.True(t, st.Held)
			assert.Contains(t, st.Err.Error(), path+": change held: client range file shrank more than reload.max_shrink allows: "+tc.wantErr)
			assert.Equal(t, dns.RcodeNameError, blocked(), "government device still blocked")
			assert.Zero(t, st.Successes)

			held := logs.FilterMessageSnippet("reload held").All()
			require.Len(t, held, 1)
			assert.Equal(t, zapcore.WarnLevel, held[0].Level)
			assert.Equal(t, TriggerFiles, held[0].ContextMap()[logTrigger])
			assert.Empty(t, logs.FilterMessage("reloaded").All())
			_, body := get(t, srv.URL+"/metrics")
			assert.Contains(t, body, "\ndnsfence_reload_held 1\n")
			assert.Contains(t, body, "\ndnsfence_reload_ok 0\n")
			assert.Contains(t, body, "dnsfence_reloads_total{result=\"held\"} 1\n")
			code, body := get(t, srv.URL+"/readyz")
			assert.Equal(t, http.StatusOK, code, "held for less than reload.unready_after")
			assert.Contains(t, body, "reloads have been held for")
			assert.Contains(t, body, tc.wantErr)

			// SIGHUP accepts it, and says so.
			require.NoError(t, r.Reload(true))
			if tc.client != "" {
				assert.Equal(t, dns.RcodeSuccess, blocked(), "the shrink applied")
			}
			accepted := logs.FilterMessage("SIGHUP applied changes that a reload holds").All()
			require.Len(t, accepted, 1)
			assert.Equal(t, zapcore.WarnLevel, accepted[0].Level)
			assert.Contains(t, accepted[0].ContextMap()["error"], tc.wantErr)
			_, body = get(t, srv.URL+"/metrics")
			assert.Contains(t, body, "\ndnsfence_reload_held 0\n")
		})
	}

	t.Run("a small edit applies and names the ranges it moved", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
		core, logs := observer.New(zap.InfoLevel)
		r := watching(t, f, zap.New(core))
		writeAtomic(t, filepath.Join(f.dir, "networks.txt"), "127.0.0.8/30\n127.0.0.12/30\n127.0.0.16/30\n127.0.0.24/30\n")
		// The status is published after the log line: wait for it.
		require.Eventually(t, func() bool { return r.Status().Successes == 1 }, 10*time.Second, 5*time.Millisecond)
		assert.Equal(t, 1, logs.FilterMessage("reloaded").Len())
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.21", "www.tiktok.com."))
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.25", "www.tiktok.com."))
		changed := logs.FilterMessage("policy ranges changed").All()
		require.Len(t, changed, 1)
		ctx := changed[0].ContextMap()
		assert.Equal(t, "government-devices", ctx[logPolicy])
		assert.Equal(t, true, ctx["blocking"])
		assert.EqualValues(t, 5, ctx["ranges"])
		assert.EqualValues(t, 1, ctx["added"])
		assert.EqualValues(t, 1, ctx["removed"])
		assert.Equal(t, []any{"127.0.0.24/30"}, ctx[logAddedRanges])
		assert.Equal(t, []any{"127.0.0.20/30"}, ctx[logRemovedRanges])
	})
}

// TestRangeFileBadLineRule pins the rule for bad range lines: a bad line in
// a range file is skipped as a bad list line is (a warn line naming
// file:line, dnsfence_skipped_lines, and check -strict fails on it); a
// reload whose new bad line loses addresses the file covered is held
// however few they are (ErrRangeBadLine: a range written wrong, not one
// taken out), and SIGHUP accepts it; the loss of ranges counts against
// reload.max_shrink too; the same typo inline in the configuration is a
// configuration error that keeps the last good state.
func TestRangeFileBadLineRule(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	path := filepath.Join(f.dir, "networks.txt")

	// One of four lines broken: a quarter of the ranges, under max_shrink,
	// but lost to a bad line: held, its devices still blocked.
	writeAtomic(t, path, "127.0.0.8/30\n127.0.0.13/30\n127.0.0.16/30\n127.0.0.20/30\n")
	st := heldWait(t, r, 0)
	assert.ErrorIs(t, st.Err, ErrRangeBadLine)
	assert.Contains(t, st.Err.Error(), path+`:2: prefix has host bits set, did you mean 127.0.0.12/30: "127.0.0.13/30"`)
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.13", "www.tiktok.com."), "held: the range still applies")
	require.NoError(t, r.Reload(true), "SIGHUP accepts it")
	warn := logs.FilterMessage("skipped bad lines").All()
	require.Len(t, warn, 2, "the held reload's, and SIGHUP's")
	for _, w := range warn {
		assert.Equal(t, zapcore.WarnLevel, w.Level)
		assert.Equal(t, path+`:2: prefix has host bits set, did you mean 127.0.0.12/30: "127.0.0.13/30"`, w.ContextMap()["error"])
	}
	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, fmt.Sprintf("dnsfence_skipped_lines{file=%q} 1\n", path))
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.13", "www.tiktok.com."), "the bad line's range is not applied")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.17", "www.tiktok.com."), "the good lines are")

	// Three of four broken: the ranges lost are held like any shrink.
	writeAtomic(t, path, "127.0.0.8/30\n127.0.0.13/30\n127.0.0.17/30\n127.0.0.21/30\n")
	st = heldWait(t, r, st.Failures)
	assert.ErrorIs(t, st.Err, ErrRangeShrink)
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.17", "www.tiktok.com."))

	// The same typo inline is a configuration error: nothing applies.
	conf := filepath.Join(f.dir, "dnsfence.yaml")
	good, err := os.ReadFile(conf)
	require.NoError(t, err)
	writeAtomic(t, path, "127.0.0.8/30\n127.0.0.12/30\n127.0.0.16/30\n127.0.0.20/30\n")
	require.Eventually(t, func() bool { return r.Status().Successes == 2 }, 10*time.Second, 5*time.Millisecond)
	writeAtomic(t, conf, strings.Replace(string(good), `clients: ["127.0.1.0/24"]`, `clients: ["127.0.1.1/24"]`, 1))
	st = heldWait(t, r, st.Failures)
	assert.False(t, st.Held, "a configuration error, not a held change")
	assert.Contains(t, st.Err.Error(), `policies[0].clients[0]: "127.0.1.1/24" has host bits set; did you mean 127.0.1.0/24?`)
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.1.9", "www.tiktok.com."))
}

// TestConfigRemovalIsHeld rewrites the configuration of a running resolver
// so that it takes something away from the blocking policy: each change is
// held (warn, ErrRemoved), government devices stay blocked, and SIGHUP
// applies it. A change that takes nothing away applies at once.
func TestConfigRemovalIsHeld(t *testing.T) {
	tests := []struct {
		name    string
		old     string // in rangesConfig
		new     string
		client  string // a device the change releases (SIGHUP shows it)
		name2   string // a name the change unblocks for it
		wantErr string
	}{
		{name: "blocking policy removed", old: "  - name: government-devices\n    clients: [\"127.0.1.0/24\"]\n    client_files: [\"networks.txt\"]\n    block: [\"tiktok.txt\", \"bytedance.txt\"]\n",
			new: "", client: "127.0.1.9", name2: "www.tiktok.com.", wantErr: `blocking policy "government-devices" removed`},
		{name: "block lists emptied", old: `block: ["tiktok.txt", "bytedance.txt"]`, new: `block: []`,
			client: "127.0.1.9", name2: "www.tiktok.com.", wantErr: `policy "government-devices" no longer blocks (action nxdomain, 0 block lists)`},
		{name: "action log (shadow mode)", old: `block: ["tiktok.txt", "bytedance.txt"]`, new: "block: [\"tiktok.txt\", \"bytedance.txt\"]\n    action: log",
			client: "127.0.1.9", name2: "www.tiktok.com.", wantErr: `policy "government-devices" no longer blocks (action log, 3 block lists)`},
		{name: "a block list removed", old: `block: ["tiktok.txt", "bytedance.txt"]`, new: `block: ["tiktok.txt"]`,
			client: "127.0.1.9", name2: "capcut.com.", wantErr: `bytedance.txt removed from policy "government-devices"`},
		{name: "doh canary turned off", old: `block: ["tiktok.txt", "bytedance.txt"]`, new: "block: [\"tiktok.txt\", \"bytedance.txt\"]\n    doh_canary: false",
			client: "127.0.1.9", name2: "use-application-dns.net.", wantErr: `block list builtin:doh-canary removed from policy "government-devices"`},
		{name: "an inline range removed", old: `clients: ["127.0.1.0/24"]`, new: `clients: ["127.0.1.0/25"]`,
			client: "127.0.1.200", name2: "www.tiktok.com.", wantErr: `range 127.0.1.0/24 removed from policy "government-devices"`},
		{name: "a client file removed", old: `client_files: ["networks.txt"]`, new: `client_files: []`,
			client: "127.0.0.9", name2: "www.tiktok.com.", wantErr: `networks.txt removed from policy "government-devices"`},
		{name: "renamed: the old policy is removed", old: `name: government-devices`, new: `name: gov`,
			client: "", wantErr: `blocking policy "government-devices" removed`},
		{name: "the guard turned off in the same write", old: "reload: {debounce: 20ms}", new: "reload: {debounce: 20ms, max_shrink: 0}\npolicies: []\nx_policies:",
			client: "127.0.1.9", name2: "www.tiktok.com.", wantErr: `blocking policy "government-devices" removed`},
	}
	up := startUpstream(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
			core, logs := observer.New(zap.InfoLevel)
			r := watching(t, f, zap.New(core))
			conf := filepath.Join(f.dir, "dnsfence.yaml")
			good, err := os.ReadFile(conf)
			require.NoError(t, err)
			require.Contains(t, string(good), tc.old)
			changed := strings.Replace(string(good), tc.old, tc.new, 1)
			if strings.Contains(changed, "x_policies:") {
				// Every policy dropped along with the guard: keep the
				// YAML valid by dropping the rest of the file.
				changed = changed[:strings.Index(changed, "x_policies:")]
			}
			writeAtomic(t, conf, changed)
			st := heldWait(t, r, 0)
			require.ErrorIs(t, st.Err, ErrRemoved, "%v", st.Err)
			assert.Contains(t, st.Err.Error(), tc.wantErr)
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.1.9", "www.tiktok.com."), "still blocked")
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "capcut.com."), "still blocked")
			held := logs.FilterMessageSnippet("reload held").All()
			require.Len(t, held, 1)
			assert.Equal(t, zapcore.WarnLevel, held[0].Level)

			require.NoError(t, r.Reload(true))
			if tc.client != "" {
				assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, tc.client, tc.name2), "SIGHUP applied it")
			}
		})
	}

	t.Run("a change that takes nothing away applies", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
		r := watching(t, f, zap.NewNop())
		conf := filepath.Join(f.dir, "dnsfence.yaml")
		good, err := os.ReadFile(conf)
		require.NoError(t, err)
		writeAtomic(t, conf, strings.Replace(string(good), `clients: ["127.0.1.0/24"]`, `clients: ["127.0.1.0/24", "127.0.2.0/24"]`, 1))
		require.Eventually(t, func() bool { return r.Status().Successes == 1 }, 10*time.Second, 5*time.Millisecond)
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.2.9", "www.tiktok.com."))
		assert.Zero(t, r.Status().Failures)
	})
}

// TestPausedWriterIsNotApplied writes a list and the configuration the
// way a script that pauses does: part, a pause well past the debounce,
// the rest, then close. Nothing is applied while the writer holds the file
// (the names at its end stay blocked); the complete file is applied once,
// when it closes.
func TestPausedWriterIsNotApplied(t *testing.T) {
	up := startUpstream(t, nil)
	var full strings.Builder
	full.WriteString("tiktok.com\n")
	for i := 1; i < 100; i++ {
		fmt.Fprintf(&full, "h%d.example\n", i)
	}
	files := rangesFiles(fourRanges)
	files["tiktok.txt"] = full.String()

	t.Run("list", func(t *testing.T) {
		f := startFence(t, rangesConfig, files, up.addr)
		core, logs := observer.New(zap.InfoLevel)
		r := watching(t, f, zap.New(core))
		list := filepath.Join(f.dir, "tiktok.txt")
		lines := strings.SplitAfter(full.String(), "\n")
		w, err := os.OpenFile(list, os.O_TRUNC|os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = w.WriteString(strings.Join(lines[:60], "")) // 40 % gone: under max_shrink
		require.NoError(t, err)

		// 25 debounce periods: the change settles many times over.
		require.Never(t, func() bool {
			return rcodeOf(t, f.addr, "127.0.0.9", "h99.example.") != dns.RcodeNameError || r.Status().Successes+r.Status().Failures > 0
		}, 500*time.Millisecond, 20*time.Millisecond, "half a list was applied")
		require.Eventually(t, func() bool {
			return logs.FilterMessageSnippet("a writer still holds them open").Len() == 1
		}, 10*time.Second, 5*time.Millisecond, "the watcher never said it waits for the writer")

		_, err = w.WriteString(strings.Join(lines[60:], "") + "new.example\n")
		require.NoError(t, err)
		require.NoError(t, w.Close())
		require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "127.0.0.9", "new.example.") == dns.RcodeNameError },
			10*time.Second, 10*time.Millisecond)
		// The status is published after the log lines: wait for it.
		require.Eventually(t, func() bool { return r.Status().Successes == 1 }, 10*time.Second, 5*time.Millisecond)
		reloaded := logs.FilterMessage("list reloaded").All()
		require.Len(t, reloaded, 1, "applied once, complete")
		ctx := reloaded[0].ContextMap()
		assert.EqualValues(t, 101, ctx["entries"])
		assert.EqualValues(t, 1, ctx["added"])
		assert.EqualValues(t, 0, ctx["removed"])
		assert.Equal(t, []any{"new.example"}, ctx[logAddedEntries])
		assert.EqualValues(t, 1, r.Status().Successes)
		assert.Zero(t, r.Status().Failures)
	})

	t.Run("configuration", func(t *testing.T) {
		f := startFence(t, rangesConfig, files, up.addr)
		core, logs := observer.New(zap.InfoLevel)
		r := watching(t, f, zap.New(core))
		conf := filepath.Join(f.dir, "dnsfence.yaml")
		good, err := os.ReadFile(conf)
		require.NoError(t, err)
		next := strings.Replace(string(good), "log: {queries: none}", "log: {queries: none}\nblocked_ttl: 30", 1)
		cut := strings.Index(next, "policies:")
		w, err := os.OpenFile(conf, os.O_TRUNC|os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = w.WriteString(next[:cut]) // valid YAML with no policy at all
		require.NoError(t, err)

		require.Never(t, func() bool {
			return r.Status().Successes+r.Status().Failures > 0 || len(f.handler.Snapshot().Policies) == 0
		}, 500*time.Millisecond, 20*time.Millisecond, "half a configuration was read")
		require.Eventually(t, func() bool {
			return logs.FilterMessageSnippet("a writer still holds them open").Len() == 1
		}, 10*time.Second, 5*time.Millisecond, "the watcher never said it waits for the writer")

		_, err = w.WriteString(next[cut:])
		require.NoError(t, err)
		require.NoError(t, w.Close())
		require.Eventually(t, func() bool { return f.handler.Snapshot().Config.BlockedTTL == 30 }, 10*time.Second, 5*time.Millisecond)
		assert.Len(t, f.handler.Snapshot().Policies, 2)
		assert.Zero(t, r.Status().Failures, "nothing held or failed: the half was never read")
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."))
	})
}

// TestWriterThatNeverClosesIsAppliedLoudly holds a changed list open for
// good: after reload.writer_wait without a change the list is applied,
// with a warning naming the file.
func TestWriterThatNeverClosesIsAppliedLoudly(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, writer_wait: 300ms}", 1)
	f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
	core, logs := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	list := filepath.Join(f.dir, "tiktok.txt")
	w, err := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	wrote := time.Now()
	_, err = w.WriteString("new.example\n")
	require.NoError(t, err)
	// The status is published after the log line: wait for it.
	require.Eventually(t, func() bool { return r.Status().Successes == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 1, logs.FilterMessage("reloaded").Len())
	assert.GreaterOrEqual(t, time.Since(wrote), 300*time.Millisecond, "applied before reload.writer_wait")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "new.example."))
	warn := logs.FilterMessage("applying files a writer still holds open: unchanged for reload.writer_wait").All()
	require.Len(t, warn, 1)
	assert.Equal(t, zapcore.WarnLevel, warn[0].Level)
	assert.Equal(t, []any{list}, warn[0].ContextMap()[logFiles])
	assert.EqualValues(t, 1, r.Status().Successes)
}

// TestWriterWaitChangedByAReloadIsTheWatchers: reload.writer_wait edited
// in a running configuration is the watcher's from that reload on: a list
// a writer holds open, unchanged for the new writer_wait (300ms), is
// applied, not left for the 10 minutes the configuration said before.
func TestWriterWaitChangedByAReloadIsTheWatchers(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, writer_wait: 10m}", 1)
	f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
	r := watching(t, f, zap.NewNop())
	path := f.handler.Snapshot().Config.File
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	writeAtomic(t, path, strings.Replace(string(b), "writer_wait: 10m", "writer_wait: 300ms", 1))
	require.Eventually(t, func() bool { return f.handler.Snapshot().Config.Reload.WriterWait == 300*time.Millisecond },
		10*time.Second, 5*time.Millisecond)
	list := filepath.Join(f.dir, "tiktok.txt")
	w, err := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	_, err = w.WriteString("new.example\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "127.0.0.9", "new.example.") == dns.RcodeNameError },
		10*time.Second, 10*time.Millisecond, "the list a writer holds, applied after the new writer_wait")
	assert.Zero(t, r.Status().Failures)
}

// TestSIGHUPNotRefusedForAnIdleWriter: a process that has had a list open
// for writing since before dnsfence watched its folder, and writes nothing
// (a shell's `exec 3>>list`, a tool that opens its files read-write), is
// found in /proc and taken for a writer. The watcher gives such a writer
// up once the list has stayed unchanged for reload.writer_wait, but only
// when another file changes; SIGHUP waited for it to close the file and
// was refused for as long as it ran (counted as a failed reload, /readyz
// unready after reload.unready_after), the list unchanged since before the
// start.
func TestSIGHUPNotRefusedForAnIdleWriter(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, writer_wait: 300ms}", 1)
	f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
	testnet.HoldOpen(t, filepath.Join(f.dir, "tiktok.txt"), ">>")
	r := watching(t, f, zap.NewNop())
	r.sighupWait = 300 * time.Millisecond

	require.Eventually(t, func() bool { return r.Reload(true) == nil }, 10*time.Second, 5*time.Millisecond,
		"SIGHUP refused while a process that never wrote the list holds it open")
	assert.Zero(t, r.Status().Failures)
}

// TestSIGHUPWaitsForCompleteFiles sends SIGHUP (Reload(true)) while a
// writer holds a truncated list open: the reload waits for the writer
// instead of publishing an empty list, and applies the complete file once
// it closes; a writer that outlasts the wait gets the reload refused,
// loudly, with the last good state kept.
func TestSIGHUPWaitsForCompleteFiles(t *testing.T) {
	up := startUpstream(t, nil)
	const full = "tiktok.com\ntiktokv.com\nnew.example\n"

	// published records the entries of every list state ever served.
	published := func(r *Reloader, list string) func() []int {
		var mu sync.Mutex
		var sizes []int
		r.AfterReload = func(s *Snapshot) {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, s.Lists[list].Len())
		}
		return func() []int { mu.Lock(); defer mu.Unlock(); return append([]int(nil), sizes...) }
	}

	t.Run("the writer finishes within the wait", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
		core, logs := observer.New(zap.InfoLevel)
		r := watching(t, f, zap.New(core))
		list := filepath.Join(f.dir, "tiktok.txt")
		sizes := published(r, list)

		w, err := os.OpenFile(list, os.O_TRUNC|os.O_WRONLY, 0)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- r.Reload(true) }()
		require.Never(t, func() bool { return len(done) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
			"SIGHUP reloaded while a writer held a truncated list")
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."))
		_, err = w.WriteString(full)
		require.NoError(t, err)
		require.NoError(t, w.Close())
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			require.FailNow(t, "SIGHUP never returned")
		}
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "new.example."))
		for _, n := range sizes() {
			assert.Equal(t, 3, n, "only the complete list was ever served")
		}
		// The watcher may apply it too once the writer closes; SIGHUP's
		// reload is logged either way.
		require.NotEmpty(t, logs.FilterMessage("reloaded").FilterField(zap.String(logTrigger, TriggerSIGHUP)).All())
	})

	t.Run("the writer outlasts the wait", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
		core, logs := observer.New(zap.InfoLevel)
		r := watching(t, f, zap.New(core))
		r.sighupWait = 300 * time.Millisecond
		list := filepath.Join(f.dir, "tiktok.txt")
		sizes := published(r, list)

		w, err := os.OpenFile(list, os.O_TRUNC|os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = w.WriteString("tiktok.com\ntiktokv.com\n")
		require.NoError(t, err)
		err = r.Reload(true)
		require.ErrorIs(t, err, ErrIncomplete)
		assert.ErrorIs(t, err, ErrHeld)
		// The refusal names the writer: this test's process.
		assert.Contains(t, err.Error(), fmt.Sprintf("%s: still being written: a writer still holds it open after 300ms (by pid %d (", list, os.Getpid()))
		refused := logs.FilterMessage("SIGHUP reload refused, keeping the last good state: a file is still being written").All()
		require.Len(t, refused, 1)
		assert.Equal(t, zapcore.WarnLevel, refused[0].Level)
		assert.Equal(t, TriggerSIGHUP, refused[0].ContextMap()[logTrigger])
		assert.True(t, r.Status().Held)
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "www.tiktok.com."), "the last good list still serves")
		assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.9", "tiktokv.com."), "the half-written one does not")
		assert.Empty(t, sizes())

		// The writer finishes: the watcher applies the complete list.
		_, err = w.WriteString("new.example\n")
		require.NoError(t, err)
		require.NoError(t, w.Close())
		require.Eventually(t, func() bool { return rcodeOf(t, f.addr, "127.0.0.9", "new.example.") == dns.RcodeNameError },
			10*time.Second, 10*time.Millisecond)
		// AfterReload runs just after the new snapshot serves.
		require.Eventually(t, func() bool { return len(sizes()) > 0 }, 10*time.Second, 10*time.Millisecond)
		assert.Equal(t, []int{3}, sizes())
	})
}

// TestFilesChangingWhileEveryReloadReadsThemIsLoud rewrites the
// configuration (complete each time, as a configuration-management run
// that stamps the time in a comment does) while every reload reads the
// files: each reload applied nothing, logged at info, counted nothing and
// left /readyz ready, so that a block entry added beside it was never
// applied, for as long as the rewrites went on, and no one was told. Once
// reloads have applied nothing for this for reload.writer_wait, each is a
// failed reload: logged at error, counted, and named by /readyz.
func TestFilesChangingWhileEveryReloadReadsThemIsLoud(t *testing.T) {
	up := startUpstream(t, nil)
	conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, writer_wait: 300ms}", 1)
	f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	path := f.handler.Snapshot().Config.File
	loads := 0
	r.mu.Lock()
	load := r.load
	r.load = func() (*config.Config, error) {
		cfg, err := load()
		loads++
		b, rerr := os.ReadFile(path)
		if assert.NoError(t, rerr) {
			writeAtomic(t, path, fmt.Sprintf("%s# run %d\n", b, loads))
		}
		return cfg, err
	}
	r.mu.Unlock()

	writeAtomic(t, filepath.Join(f.dir, "bytedance.txt"), "capcut.com\nlemon8-app.com\n")
	st := heldWait(t, r, 0)
	assert.False(t, st.Held)
	require.ErrorIs(t, st.Err, ErrReadMidWrite)
	assert.ErrorIs(t, st.Err, errStillChanging, "said to have gone on for reload.writer_wait")
	assert.Contains(t, st.Err.Error(), path)
	assert.Zero(t, st.Successes, "a read caught mid-write was applied")
	failed := logs.FilterMessage("reload failed, keeping the last good state").All()
	require.NotEmpty(t, failed)
	assert.Equal(t, zapcore.ErrorLevel, failed[0].Level)
	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, "\ndnsfence_reload_ok 0\n")
	_, body = get(t, srv.URL+"/readyz")
	assert.Contains(t, body, "files changed while the reload read them")
}

// TestReadsCaughtMidWriteCountAgainAfterAnApply: reloads of the watcher
// that read files mid-write are a failure only once they have gone on,
// one after another, for reload.writer_wait. A reload that applies ends
// such a run: a file caught mid-write once, well after an earlier one
// that was applied since, is waited for again, not taken for a run that
// has lasted since the first (a failed reload, logged at error, counted
// and named by /readyz, for a write that took a moment).
func TestReadsCaughtMidWriteCountAgainAfterAnApply(t *testing.T) {
	up := startUpstream(t, nil)
	const wait = 2 * time.Second
	conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, writer_wait: 2s}", 1)
	f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
	core, logs := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	path := f.handler.Snapshot().Config.File
	var rewrites atomic.Int32 // loads left that rewrite the configuration as they read it
	r.mu.Lock()
	load := r.load
	r.load = func() (*config.Config, error) {
		cfg, err := load()
		if rewrites.Add(-1) >= 0 {
			b, rerr := os.ReadFile(path)
			if assert.NoError(t, rerr) {
				writeAtomic(t, path, fmt.Sprintf("%s# rewritten\n", b))
			}
		}
		return cfg, err
	}
	r.mu.Unlock()
	caught := func() int { return len(logs.FilterMessageSnippet("files changed while they were read").All()) }
	bytedance := filepath.Join(f.dir, "bytedance.txt")
	for i, content := range []string{"capcut.com\nlemon8-app.com\n", "capcut.com\nlemon8-app.com\nbytedance.com\n"} {
		before, caughtBefore := r.Status().Successes, caught()
		rewrites.Store(1)
		writeAtomic(t, bytedance, content)
		require.Eventually(t, func() bool { st := r.Status(); return st.OK && st.Successes > before }, 10*time.Second, 5*time.Millisecond,
			"edit %d applied once the configuration settled", i)
		require.Greater(t, caught(), caughtBefore, "edit %d: the reload read the configuration mid-write", i)
		if i == 0 {
			time.Sleep(wait + wait/2) // longer than reload.writer_wait since the first read caught mid-write
		}
	}
	assert.Zero(t, r.Status().Failures)
	assert.Empty(t, logs.FilterMessageSnippet("reload failed").All())
}

// TestWriterStartingWhileReloadReads starts a writer on a list in place
// after the files were found complete and before the reload reads them
// (a large list parsed first leaves it a second): the reload read a
// half-written list, which it applied (a quarter of the list gone, within
// reload.max_shrink) or, on SIGHUP, applied whatever its size, so that
// tiktok.com was forwarded to government devices while the writer held
// the file. Now such a reload applies nothing; the watcher applies the
// complete file once the writer closes it, and SIGHUP is refused.
func TestWriterStartingWhileReloadReads(t *testing.T) {
	up := startUpstream(t, nil)
	const full = "a.example\nb.example\nc.example\ntiktok.com\n"
	tests := []struct {
		name    string
		partial string // what the writer has written when the reload reads
		loadAt  int    // the configuration load the writer starts after
		reload  func(t *testing.T, r *Reloader, dir string) error
	}{
		{name: "a change the watcher reports", partial: "a.example\nb.example\nc.example\n", loadAt: 1,
			reload: func(t *testing.T, r *Reloader, dir string) error {
				writeAtomic(t, filepath.Join(dir, "bytedance.txt"), "capcut.com\nlemon8-app.com\n")
				return nil
			}},
		// SIGHUP's wait loads the configuration first, for the files it
		// names; the build loads it again.
		{name: "SIGHUP", partial: "a.example\n", loadAt: 2,
			reload: func(t *testing.T, r *Reloader, _ string) error { return r.Reload(true) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := rangesFiles(fourRanges)
			files["tiktok.txt"] = full
			f := startFence(t, rangesConfig, files, up.addr)
			core, logs := observer.New(zap.InfoLevel)
			r := watching(t, f, zap.New(core))
			list := filepath.Join(f.dir, "tiktok.txt")
			var mu sync.Mutex
			var sizes []int // entries of every tiktok.txt served
			r.AfterReload = func(s *Snapshot) {
				mu.Lock()
				defer mu.Unlock()
				sizes = append(sizes, s.Lists[list].Len())
			}
			writer := writeDuringLoad(t, r, list, tc.partial, tc.loadAt)
			err := tc.reload(t, r, f.dir)
			w := writer()
			if tc.loadAt == 2 {
				require.ErrorIs(t, err, ErrIncomplete)
				assert.ErrorIs(t, err, ErrReadMidWrite)
				assert.Contains(t, err.Error(), fmt.Sprintf("%s: a writer holds it open (by pid %d (", list, os.Getpid()), "the refusal names neither the reason nor the writer")
				assert.Len(t, logs.FilterMessage("SIGHUP reload refused, keeping the last good state: a file is still being written").All(), 1)
			} else {
				require.Eventually(t, func() bool {
					return logs.FilterMessage("files changed while they were read: applying them once they settle").Len() > 0 || r.Status().Successes+r.Status().Failures > 0
				}, 10*time.Second, 5*time.Millisecond, "the reload never ended")
			}
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."), "the half-written list was served")
			assert.Zero(t, r.Status().Successes)

			_, err = w.WriteString(full[len(tc.partial):])
			require.NoError(t, err)
			require.NoError(t, w.Close())
			if tc.loadAt == 2 {
				require.NoError(t, r.Reload(true), "SIGHUP again, the writer done")
			} else {
				require.Eventually(t, func() bool { return r.Status().Successes > 0 }, 10*time.Second, 5*time.Millisecond,
					"the watcher never applied the complete file")
			}
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."))
			if tc.loadAt == 1 {
				assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "lemon8-app.com."))
			}
			mu.Lock()
			defer mu.Unlock()
			for _, n := range sizes {
				assert.Equal(t, 4, n, "only the complete list was ever served")
			}
		})
	}
}

// TestReadyzAfterReloadTrouble: /readyz names a failing or held reload in
// its body, stays 200 for reload.unready_after, then turns 503 saying
// why, and is 200 again once a reload applies.
func TestReadyzAfterReloadTrouble(t *testing.T) {
	up := startUpstream(t, nil)
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		fix     func(t *testing.T, dir string, r *Reloader)
		what    string
		err     string
	}{
		{name: "failed", what: "failed", err: `unknown key "bogus"`,
			breakIt: func(t *testing.T, dir string) {
				conf := filepath.Join(dir, "dnsfence.yaml")
				good, err := os.ReadFile(conf)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(conf+".good", good, 0o644))
				writeAtomic(t, conf, string(good)+"bogus: 1\n")
			},
			fix: func(t *testing.T, dir string, _ *Reloader) {
				good, err := os.ReadFile(filepath.Join(dir, "dnsfence.yaml.good"))
				require.NoError(t, err)
				writeAtomic(t, filepath.Join(dir, "dnsfence.yaml"), string(good)+"blocked_ttl: 30\n")
			}},
		{name: "held", what: "been held", err: "4 to 0 ranges",
			breakIt: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "networks.txt"), nil, 0o644))
			},
			fix: func(t *testing.T, _ string, r *Reloader) { require.NoError(t, r.Reload(true)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, unready_after: 500ms}", 1)
			f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
			srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
			t.Cleanup(srv.Close)
			r := watching(t, f, zap.NewNop())
			code, body := get(t, srv.URL+"/readyz")
			require.Equal(t, http.StatusOK, code)
			assert.NotContains(t, body, "reloads have")

			tc.breakIt(t, f.dir)
			heldWait(t, r, 0)
			code, body = get(t, srv.URL+"/readyz")
			assert.Equal(t, http.StatusOK, code, "not yet unready_after")
			assert.Contains(t, body, "ready: ")
			assert.Contains(t, body, "reloads have "+tc.what+" for ")
			assert.Contains(t, body, tc.err)
			require.Eventually(t, func() bool {
				code, _ := get(t, srv.URL+"/readyz")
				return code == http.StatusServiceUnavailable
			}, 10*time.Second, 20*time.Millisecond)
			_, body = get(t, srv.URL+"/readyz")
			assert.True(t, strings.HasPrefix(body, "not ready: reloads have "+tc.what+" for "), body)
			assert.Contains(t, body, "serving the state loaded at ")
			assert.Contains(t, body, tc.err)
			assert.Contains(t, body, "reload.unready_after is 500ms")
			assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.9", "tiktok.com."), "still serving")

			tc.fix(t, f.dir, r)
			require.Eventually(t, func() bool {
				code, _ := get(t, srv.URL+"/readyz")
				return code == http.StatusOK
			}, 10*time.Second, 20*time.Millisecond)
			_, body = get(t, srv.URL+"/readyz")
			assert.NotContains(t, body, "reloads have")
		})
	}

	t.Run("unready_after 0 is never", func(t *testing.T) {
		conf := strings.Replace(rangesConfig, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, unready_after: 0s}", 1)
		f := startFence(t, conf, rangesFiles(fourRanges), up.addr)
		srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
		t.Cleanup(srv.Close)
		// Reloads failing for a day.
		f.handler.reload.Store(&ReloadStatus{Err: ErrShrink, Held: true, FailingSince: time.Now().Add(-24 * time.Hour)})
		code, body := get(t, srv.URL+"/readyz")
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, "reloads have been held for 24h0m0s")
	})

	t.Run("default", func(t *testing.T) {
		f := startFence(t, rangesConfig, rangesFiles(fourRanges), up.addr)
		assert.Equal(t, 5*time.Minute, f.handler.Snapshot().Config.Reload.UnreadyAfter)
		srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
		t.Cleanup(srv.Close)
		f.handler.reload.Store(&ReloadStatus{Err: ErrShrink, Held: true, FailingSince: time.Now().Add(-4 * time.Minute)})
		code, _ := get(t, srv.URL+"/readyz")
		assert.Equal(t, http.StatusOK, code)
		f.handler.reload.Store(&ReloadStatus{Err: ErrShrink, Held: true, FailingSince: time.Now().Add(-6 * time.Minute)})
		code, body := get(t, srv.URL+"/readyz")
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Contains(t, body, "not ready: reloads have been held for 6m0s")
	})
}

// TestReloadAuditTrail checks what each reload says about itself: the
// trigger (the files seen changing, or SIGHUP), the entries and ranges
// added and removed (the first 20 of each, exact counts), and the
// configuration keys that changed.
func TestReloadAuditTrail(t *testing.T) {
	up := startUpstream(t, nil)
	files := rangesFiles(fourRanges)
	// Two entries kept: a list whose only entry goes is held.
	files["tiktok.txt"] = "tiktok.com\nkept1.example\nkept2.example\n"
	f := startFence(t, rangesConfig, files, up.addr)
	core, logs := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	list := filepath.Join(f.dir, "tiktok.txt")
	conf := filepath.Join(f.dir, "dnsfence.yaml")
	networks := filepath.Join(f.dir, "networks.txt")
	waitReloads := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return logs.FilterMessage("reloaded").Len() == n }, 10*time.Second, 5*time.Millisecond)
	}
	last := func(msg string) map[string]any {
		t.Helper()
		all := logs.FilterMessage(msg).All()
		require.NotEmpty(t, all, msg)
		return all[len(all)-1].ContextMap()
	}

	// 25 entries added, one of the three there removed.
	var b strings.Builder
	var added []any
	for i := range 25 {
		fmt.Fprintf(&b, "n%02d.example\n", i)
		if i < 20 {
			added = append(added, fmt.Sprintf("n%02d.example", i))
		}
	}
	writeAtomic(t, list, b.String()+"kept1.example\nkept2.example\n")
	waitReloads(1)
	l := last("list reloaded")
	assert.Equal(t, list, l[logList])
	assert.EqualValues(t, 25, l["added"])
	assert.EqualValues(t, 1, l["removed"])
	assert.Equal(t, added, l[logAddedEntries], "the first 20, in file order")
	assert.Equal(t, []any{"tiktok.com"}, l[logRemovedEntry])
	rl := last("reloaded")
	assert.Equal(t, TriggerFiles, rl[logTrigger])
	assert.Equal(t, []any{list}, rl[logFiles])
	assert.EqualValues(t, 1, rl["lists_changed"])
	assert.Empty(t, rl[logConfigChanged])

	// Ranges and configuration in one save each.
	writeAtomic(t, networks, fourRanges+"127.0.0.24/30\n")
	waitReloads(2)
	pr := last("policy ranges changed")
	assert.Equal(t, []any{"127.0.0.24/30"}, pr[logAddedRanges])
	assert.Empty(t, pr[logRemovedRanges])
	assert.Equal(t, []any{networks}, last("reloaded")[logFiles])

	good, err := os.ReadFile(conf)
	require.NoError(t, err)
	next := strings.Replace(string(good), "log: {queries: none}", "log: {queries: none}\nblocked_ttl: 30", 1)
	next = strings.Replace(next, "reload: {debounce: 20ms}", "reload: {debounce: 20ms, max_shrink: 0.6}", 1)
	next = strings.Replace(next, `clients: ["127.0.1.0/24"]`, `clients: ["127.0.1.0/24", "127.0.2.0/24"]`, 1)
	next += "  - name: new-team\n    clients: [\"127.0.3.0/24\"]\n"
	writeAtomic(t, conf, next)
	waitReloads(3)
	rl = last("reloaded")
	assert.Equal(t, []any{"blocked_ttl", "reload.max_shrink", "policies[government-devices].clients", "policies[new-team] added"},
		rl[logConfigChanged])
	assert.Equal(t, []any{conf}, rl[logFiles])
	assert.EqualValues(t, 2, rl["policies_ranges_changed"])

	// SIGHUP says so.
	require.NoError(t, r.Reload(true))
	rl = last("reloaded")
	assert.Equal(t, TriggerSIGHUP, rl[logTrigger])
	assert.NotContains(t, rl, logFiles)
	assert.Empty(t, rl[logConfigChanged])
}

// TestReloadConfigKeys: reload.unready_after and reload.writer_wait, their
// defaults, and the values refused.
func TestReloadConfigKeys(t *testing.T) {
	base := "upstreams: [\"127.0.0.1:53\"]\n"
	tests := []struct {
		name         string
		reload       string
		unreadyAfter time.Duration
		writerWait   time.Duration
		err          string
	}{
		{name: "defaults", unreadyAfter: 5 * time.Minute, writerWait: 30 * time.Second},
		{name: "set", reload: "reload: {unready_after: 90s, writer_wait: 2s}", unreadyAfter: 90 * time.Second, writerWait: 2 * time.Second},
		{name: "never unready", reload: "reload: {unready_after: 0s}", unreadyAfter: 0, writerWait: 30 * time.Second},
		{name: "negative unready_after", reload: "reload: {unready_after: -1s}", err: "c.yaml:2: reload.unready_after: -1s is negative; give 0s (never) or a positive duration, e.g. unready_after: 5m"},
		{name: "negative writer_wait", reload: "reload: {writer_wait: -1s}", err: "c.yaml:2: reload.writer_wait: -1s is negative; give a positive duration, e.g. writer_wait: 30s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("c.yaml", []byte(base+tc.reload+"\n"), os.ReadFile)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.unreadyAfter, cfg.Reload.UnreadyAfter)
			assert.Equal(t, tc.writerWait, cfg.Reload.WriterWait)
		})
	}
}

// TestReadyzWhileStopping: from the moment shutdown begins (Stopping),
// /readyz answers 503 and says why, so that a load balancer takes the
// instance out, while queries are still answered.
func TestReadyzWhileStopping(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	t.Cleanup(srv.Close)
	code, body := get(t, srv.URL+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	f.handler.Stopping()
	code, body = get(t, srv.URL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "not ready: shutting down")
	assert.Contains(t, body, "queries are answered through shutdown_delay", "it says queries are still answered")
	r := ask(t, f.addr, "127.0.0.1", "udp", question("www.example.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "queries are still answered")
}

// writeDuringLoad makes r's loadAt-th load of the configuration from now
// (1 for the first) start a writer on path in place, as a writer that
// starts on a file after the files were found complete and before the
// reload reads it: path truncated, partial written, the file held open
// until the writer watch has seen it. The func returned waits (10 s at
// most) for that writer and returns it, to be finished by the test; it is
// closed when the test ends.
func writeDuringLoad(t *testing.T, r *Reloader, path, partial string, loadAt int) func() *os.File {
	t.Helper()
	writer := make(chan *os.File, 1)
	loads := 0
	r.mu.Lock()
	load := r.load
	r.load = func() (*config.Config, error) {
		cfg, err := load()
		if loads++; loads == loadAt {
			w, werr := os.OpenFile(path, os.O_TRUNC|os.O_WRONLY, 0)
			if assert.NoError(t, werr) {
				_, werr = w.WriteString(partial)
				assert.NoError(t, werr)
				writer <- w
				// The writer watch has seen it open.
				assert.Eventually(t, func() bool {
					return len(blocklist.Unsettled(r.watcher, map[string][32]byte{path: sha256.Sum256([]byte(partial))})) == 1
				}, 5*time.Second, time.Millisecond)
			}
		}
		return cfg, err
	}
	r.mu.Unlock()
	return func() *os.File {
		t.Helper()
		select {
		case w := <-writer:
			t.Cleanup(func() { w.Close() })
			return w
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no reload read the files")
			return nil
		}
	}
}

// TestReloadAuditTrailRPZ checks the entries a reload of an RPZ list says
// were added and removed: its triggers, each with its action, so that a
// trigger whose action changed (a block turned NODATA or drop, or let
// through) and a name that keeps its `*.name` but loses its own trigger
// (no longer blocked itself) are in the audit trail, where a comparison
// of names alone saw no change.
func TestReloadAuditTrailRPZ(t *testing.T) {
	up := startUpstream(t, nil)
	const conf = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
log: {queries: none}
reload: {debounce: 20ms}
policies:
  - name: gov
    clients: ["127.0.1.0/24"]
    block: ["policy.rpz"]
`
	keep := "k1.example CNAME .\nk2.example CNAME .\nk3.example CNAME .\n"
	f := startFence(t, conf, map[string]string{"policy.rpz": rpzHead + keep + `a.example CNAME .
b.example CNAME .
*.b.example CNAME .
c.example CNAME .
d.example CNAME .
24.0.2.0.192.rpz-ip CNAME .
`}, up.addr)
	core, logs := observer.New(zap.InfoLevel)
	r := watching(t, f, zap.New(core))
	writeAtomic(t, filepath.Join(f.dir, "policy.rpz"), rpzHead+keep+`a.example CNAME .
*.b.example CNAME .
c.example CNAME *.
d.example CNAME .
*.d.example CNAME .
24.0.2.0.192.rpz-ip CNAME rpz-drop.
`)
	require.Eventually(t, func() bool { return r.Status().Successes == 1 }, 10*time.Second, 5*time.Millisecond)
	reloaded := logs.FilterMessage("list reloaded").All()
	require.Len(t, reloaded, 1)
	l := reloaded[0].ContextMap()
	assert.EqualValues(t, 3, l["added"])
	assert.EqualValues(t, 3, l["removed"])
	assert.Equal(t, []any{"c.example (action NODATA)", "*.d.example", "192.0.2.0/24 (action drop)"}, l[logAddedEntries], "in file order")
	assert.Equal(t, []any{"b.example", "c.example", "192.0.2.0/24"}, l[logRemovedEntry])
}

// TestRangeFileRepeatingAnotherPolicysRangeIsRefused: a client file that
// lists a range another policy already has (inline here, which config
// validation cannot see into the file for) is refused at build, as an
// inline range in two policies is: the device would be in whichever
// policy was read last, silently out of the other.
func TestRangeFileRepeatingAnotherPolicysRangeIsRefused(t *testing.T) {
	path := writeConfig(t, rangesConfig, rangesFiles("127.0.0.8/30\n127.0.0.3/32\n"), closedPort(t))
	cfg, err := config.Load(path)
	require.NoError(t, err, "config validation does not read client files")
	_, err = BuildSnapshot(cfg, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `range 127.0.0.3/32 of policy "press-office" is already a range of policy "government-devices" (`)
	assert.Contains(t, err.Error(), "networks.txt:2); the same range in two policies is ambiguous")
}
