package resolver

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestURLHeldCopyDroppedWhenServerGoesBack: a URL list that shrinks past
// reload.max_shrink is held; when the server then goes back to the copy
// served (the same bytes: a 304 to the conditional GET), no copy is held
// any more (metric, /readyz), a later SIGHUP, sent for any reason, does
// not apply the copy the server stopped serving, and the list served
// stays the server's.
func TestURLHeldCopyDroppedWhenServerGoesBack(t *testing.T) {
	up := startUpstream(t, nil)
	v1 := names(8, "tiktok.com", "douyin.com")
	srv := startListServer(t, map[string]string{"/tiktok.txt": v1})
	list := srv.URL + "/tiktok.txt"
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": heldSourceConfig(up.addr, fmt.Sprintf(`block: [%q]`, list))})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."))

	// A truncated list for a moment: held, the full list still served.
	srv.set("/tiktok.txt", "tiktok.com\n", "")
	require.Eventually(t, func() bool { _, held := f.handler.held.Load(list); return held }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."))

	// The server goes back to the list served; a poll confirms it.
	srv.set("/tiktok.txt", v1, "")
	restored := time.Now()
	require.Eventually(t, func() bool {
		st := f.status(t, list)
		return st.LastError == nil && st.LastSuccess.After(restored)
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, sha256.Sum256([]byte(v1)), f.status(t, list).SHA256, "the source serves v1")

	_, held := f.handler.held.Load(list)
	assert.False(t, held, "the server serves the copy served again: no newer copy is held")
	v, _ := metricValue(t, f.registry, "dnsfence_source_held", "source", list)
	assert.Zero(t, v, "dnsfence_source_held")
	_, why := f.ready(t)
	assert.NotContains(t, why, "held by reload.max_shrink", "/readyz")

	// A SIGHUP (for an unrelated edit, say) must not apply the truncated
	// copy the server no longer serves.
	require.NoError(t, f.reloader.Reload(true))
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."),
		"SIGHUP applied a held copy that the server had already withdrawn")
	// Nor does the list served drift from the source's copy for good:
	// the polls (304 to v1's ETag) never deliver v1 again.
	assert.Eventually(t, func() bool {
		v, _ := metricValue(t, f.registry, "dnsfence_source_entries", "source", list)
		return v == 10
	}, 4*time.Second, 50*time.Millisecond, "the list served stays the withdrawn copy while the source reports v1 (sha256 %x)",
		f.status(t, list).SHA256)
}

// TestConfigErrorsHideListCredentials: a list URL with credentials is
// refused, and every error the configuration reports about it (all are
// reported at once, printed at start and logged at every reload that reads
// the file) shows it redacted: the refusal itself, cache_dir required
// "(ENTRY here)", a scheme that is not fetched, a client range file that
// is a URL. (TestSourceErrorsHideCredentials covers source.New's own.)
func TestConfigErrorsHideListCredentials(t *testing.T) {
	const secret = "s3cr3t-token"
	const url = "https://reader:" + secret + "@lists.example.gov/tiktok.txt"
	for name, tc := range map[string]struct{ policy, sources string }{
		"refused":         {`block: ["` + url + `"]`, "sources: {cache_dir: cache}"},
		"no cache_dir":    {`block: ["` + url + `"]`, ""},
		"ftp list":        {`block: ["ftp://reader:` + secret + `@lists.example.gov/tiktok.txt"]`, "sources: {cache_dir: cache}"},
		"client file URL": {`client_files: ["` + url + `"]`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    %s
%s
`, tc.policy, tc.sources)})
			_, err := config.Load(filepath.Join(dir, "dnsfence.yaml"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "xxxxx@", "the entry is named, redacted")
			assert.NotContains(t, err.Error(), secret)
		})
	}
}

// TestZoneHeldCopyDroppedWhenSerialGoesBack is the zone form of
// TestURLHeldCopyDroppedWhenServerGoesBack: a zone that
// shrinks past reload.max_shrink (serial 2) is held; the primary then
// goes back to the zone held (serial 1 again, a reverted zone file), so
// nothing is held any more, and a SIGHUP does not apply the withdrawn
// copy.
func TestZoneHeldCopyDroppedWhenSerialGoesBack(t *testing.T) {
	p, entry, f, full := startHeldZone(t, true)
	const gov = "127.0.0.2"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."))

	p.SetZone(testnet.RPZText(heldZone, 2, "tiktok.com CNAME ."), 2)
	notifyFrom(t, f.addr, "127.0.0.1", heldZone)
	require.Eventually(t, func() bool { _, held := f.handler.held.Load(entry); return held }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."), "the full zone still served")

	p.SetZone(testnet.RPZText(heldZone, 1, full...), 1)
	notifyFrom(t, f.addr, "127.0.0.1", heldZone)
	require.Eventually(t, func() bool { _, held := f.handler.held.Load(entry); return !held }, 5*time.Second, 20*time.Millisecond,
		"the primary serves the zone held again: nothing newer is held")
	v, _ := metricValue(t, f.registry, "dnsfence_source_held", "source", entry)
	assert.Zero(t, v, "dnsfence_source_held")
	require.NoError(t, f.reloader.Reload(true))
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."), "SIGHUP applied a withdrawn copy")
	assert.Equal(t, uint32(1), f.status(t, entry).Serial)
}

// TestZoneHeldCopyAppliedBySIGHUPBecomesTheSources: a zone copy a guard
// held (serial 2: most triggers gone, one added) and SIGHUP applied
// becomes the source's own at once: its serial, and the disk copy a
// restart with the primary down serves, which else kept serial 1 (the
// new block missing, the names gone still blocked) until the SOA's retry
// interval, 600 s here, as sources.refresh is an hour. named sends no
// NOTIFY of its own: the one NOTIFY the test sends leads to one check,
// whose copy is held, and none is asked for after it.
func TestZoneHeldCopyAppliedBySIGHUPBecomesTheSources(t *testing.T) {
	p, entry, f, _ := startHeldZone(t, false)
	const gov = "127.0.0.2"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."))

	p.SetZone(testnet.RPZText(heldZone, 2, "tiktok.com CNAME .", "capcut.com CNAME ."), 2)
	notifyFrom(t, f.addr, "127.0.0.1", heldZone)
	require.Eventually(t, func() bool { _, held := f.handler.held.Load(entry); return held }, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, f.reloader.Reload(true))
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "capcut.com."), "SIGHUP applies serial 2")
	require.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "douyin.com."))
	assert.True(t, logged(f.logs, "list source copy applied by SIGHUP", map[string]any{logList: entry}), "the held copy's apply is logged")

	var src source.Source
	for _, s := range f.handler.remote.Load().srcs {
		if s.Name() == entry {
			src = s
		}
	}
	require.NotNil(t, src)
	assert.Eventually(t, func() bool { return f.status(t, entry).Serial == 2 }, 10*time.Second, 20*time.Millisecond,
		"the source's serial after SIGHUP applied serial 2: %d", f.status(t, entry).Serial)
	assert.Eventually(t, func() bool {
		c, err := source.Cached(src)
		return err == nil && c.Serial == 2
	}, 10*time.Second, 20*time.Millisecond, "the disk copy a restart serves")
	assert.Eventually(t, func() bool {
		return logged(f.logs, "list source copy is the one served", map[string]any{logList: entry, "version": "serial 2"})
	}, 10*time.Second, 20*time.Millisecond, "the copy delivered again is taken as the one served, not applied again")
	assert.Empty(t, f.logs.FilterMessage("list source applied").FilterField(zap.String(logList, entry)).All(),
		"never applied as a new copy: SIGHUP applied it ('list source copy applied by SIGHUP'), and the copy delivered again is taken")
	_, held := f.handler.held.Load(entry)
	assert.False(t, held)
}

// TestURLAllowListGrowthHeld: a remote allow list's new copy that allows
// a name the policy blocks is held like a shrinking block list's: the
// copy served stays, dnsfence_source_held says so, SIGHUP applies it. An
// entry that allows nothing blocked applies at once.
func TestURLAllowListGrowthHeld(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/allow.txt": "ads.tiktok.com\n"})
	list := srv.URL + "/allow.txt"
	dir := testnet.WriteTree(t, map[string]string{"tiktok.txt": "tiktok.com\n",
		"dnsfence.yaml": heldSourceConfig(up.addr, fmt.Sprintf("block: [\"tiktok.txt\"]\n    allow: [%q]", list))})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	require.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "ads.tiktok.com."))
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "www.tiktok.com."))

	srv.set("/allow.txt", "ads.tiktok.com\nexample.org\n", "")
	require.Eventually(t, func() bool {
		v, _ := metricValue(t, f.registry, "dnsfence_source_entries", "source", list)
		return v == 2
	}, 10*time.Second, 20*time.Millisecond, "an entry that allows nothing blocked applies")

	srv.set("/allow.txt", "ads.tiktok.com\nexample.org\nwww.tiktok.com\n", "")
	require.Eventually(t, func() bool { _, held := f.handler.held.Load(list); return held }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "www.tiktok.com."), "the government device released")
	v, _ := metricValue(t, f.registry, "dnsfence_source_held", "source", list)
	assert.Equal(t, 1.0, v, "dnsfence_source_held")

	require.NoError(t, f.reloader.Reload(true))
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.tiktok.com."), "SIGHUP applies it")
}

// heldSourceConfig is the configuration of the held-copy tests: policy
// gov for 127.0.0.1 with lists (its block and allow keys), sources polled
// every second into cache/.
func heldSourceConfig(upstream, lists string) string {
	return fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: [%q]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.0/28"]
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    %s
sources: {refresh: 1s, cache_dir: cache}
`, upstream, lists)
}

// heldZone is the RPZ zone of the held-zone tests.
const heldZone = "rpz.test."

// startHeldZone starts a BIND primary of heldZone at serial 1 with the
// triggers full (tiktok.com, douyin.com and 8 more: a copy keeping one
// is past reload.max_shrink), named's own NOTIFYs sent to dnsfence's
// port when notify is set, and a dnsfence taking the zone over TSIG; it
// returns the primary, the list entry naming it, dnsfence and full.
func startHeldZone(t *testing.T, notify bool) (*testnet.BIND, string, *sourceFence, []string) {
	t.Helper()
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	port := testnet.FreePort(t, "127.0.0.1")
	full := []string{"tiktok.com CNAME .", "douyin.com CNAME ."}
	for i := range 8 {
		full = append(full, fmt.Sprintf("n%d.example CNAME .", i))
	}
	b := &testnet.BIND{Zone: heldZone, Key: &key}
	if notify {
		b.NotifyPort = port
	}
	p := testnet.StartBIND(t, b, testnet.RPZText(heldZone, 1, full...))
	entry := p.Entry()
	return p, entry, startSourceFence(t, zoneConfig(t, up.addr, entry, key), fmt.Sprintf("127.0.0.1:%d", port)), full
}

// TestHeldMarkGoesWithItsSource: a remote list whose newest copy a guard
// holds, taken out of the configuration (by SIGHUP: its names leave the
// policy), leaves no held mark behind, for its copy is gone with it; a
// later configuration naming the list again starts from what its source
// delivers, not from a mark /readyz and dnsfence_source_held would show
// for a copy nobody holds.
func TestHeldMarkGoesWithItsSource(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": names(8, "tiktok.com", "douyin.com")})
	list := srv.URL + "/tiktok.txt"
	dir := testnet.WriteTree(t, map[string]string{"tiktok.txt": "tiktok.com\n",
		"dnsfence.yaml": heldSourceConfig(up.addr, fmt.Sprintf(`block: ["tiktok.txt", %q]`, list))})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	srv.set("/tiktok.txt", "tiktok.com\n", "")
	require.Eventually(t, func() bool { _, held := f.handler.held.Load(list); return held }, 5*time.Second, 20*time.Millisecond)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), []byte(heldSourceConfig(up.addr, `block: ["tiktok.txt"]`)), 0o600))
	require.NoError(t, f.reloader.Reload(true))
	require.Equal(t, dns.RcodeSuccess, f.rcode(t, "127.0.0.1", "douyin.com."), "the list is out of the policy")

	// Named again while its server is down and its disk copy is gone: the
	// new source has no copy, so nothing clears a mark left behind, and
	// what dnsfence_source_held and /readyz say comes from the mark alone.
	srv.set("/tiktok.txt", "", "down")
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "cache")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"),
		[]byte(heldSourceConfig(up.addr, fmt.Sprintf(`block: ["tiktok.txt", %q]`, list))), 0o600))
	require.NoError(t, f.reloader.Reload(true))
	require.Eventually(t, func() bool { return f.status(t, list).LastError != nil }, 5*time.Second, 20*time.Millisecond,
		"the source named again asks its server")
	v, ok := metricValue(t, f.registry, "dnsfence_source_held", "source", list)
	require.True(t, ok, "the source named again is exported")
	assert.Zero(t, v, "dnsfence_source_held: no copy of the source named again is held")
	_, why := f.ready(t)
	assert.NotContains(t, why, "held by reload.max_shrink", "/readyz")
}
