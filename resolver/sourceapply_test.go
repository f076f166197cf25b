package resolver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// appliedSourceFence is a dnsfence serving one remote list of 100 names
// (tiktok.com and tracker1-99.example), blocked for 127.0.0.1, refreshed
// once an hour: only the copies a test applies (applySource) change it.
// rs is the list's source, body a copy of it with n entries.
func appliedSourceFence(t *testing.T) (f *sourceFence, rs *runningSource, body func(n int) source.Content) {
	t.Helper()
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": names(99, "tiktok.com")})
	list := srv.URL + "/tiktok.txt"
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s"]
sources: {refresh: 1h, cache_dir: cache}
`, up.addr, list)})
	f = startSourceFence(t, dir, "127.0.0.1:0")
	f.reloader.mu.Lock()
	rs = f.reloader.sources[list]
	f.reloader.mu.Unlock()
	require.NotNil(t, rs)
	require.Equal(t, 100, f.handler.Snapshot().Lists[list].Len())
	return f, rs, func(n int) source.Content {
		return source.Content{Source: list, Kind: source.KindBody, Body: []byte(names(n-1, "tiktok.com"))}
	}
}

// TestSourceCopyRunsAfterReload: a remote list's copy applied runs
// AfterReload with the snapshot it published, as a reload of files does
// (serve tunes the GC target to the lists' new size there); a copy held
// by the guards publishes nothing and runs nothing.
func TestSourceCopyRunsAfterReload(t *testing.T) {
	f, rs, body := appliedSourceFence(t)
	var after []*Snapshot
	f.reloader.AfterReload = func(s *Snapshot) { after = append(after, s) }

	require.NoError(t, f.reloader.applySource(rs, body(60)))
	require.Len(t, after, 1)
	assert.Same(t, f.handler.Snapshot(), after[0], "the snapshot published")
	assert.Equal(t, 60, after[0].Lists[rs.src.Name()].Len())

	require.ErrorIs(t, f.reloader.applySource(rs, body(10)), ErrShrink)
	assert.Len(t, after, 1, "a held copy publishes nothing")
}

// TestSourceCopyAfterStopNotApplied: a copy a source delivers once Stop
// has begun (dnsfence shutting down) is refused with ErrStopping before
// anything is done with it: the list served stays, and one that shrank
// past reload.max_shrink is not held for a SIGHUP (nor named held by
// /readyz) by a dnsfence that is stopping.
func TestSourceCopyAfterStopNotApplied(t *testing.T) {
	f, rs, body := appliedSourceFence(t)
	f.reloader.Stop()
	require.ErrorIs(t, f.reloader.applySource(rs, body(60)), ErrStopping)
	assert.Equal(t, 100, f.handler.Snapshot().Lists[rs.src.Name()].Len())
	require.ErrorIs(t, f.reloader.applySource(rs, body(10)), ErrStopping)
	f.reloader.mu.Lock()
	assert.Nil(t, rs.pending, "nothing held")
	f.reloader.mu.Unlock()
	_, held := f.handler.held.Load(rs.src.Name())
	assert.False(t, held)
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.1", "tracker80.example."))
}

// TestSourceCopyStoppedWhileParsed: Stop comes while a copy is parsed
// (outside the Reloader's lock): the copy is not published, and the
// list served stays.
func TestSourceCopyStoppedWhileParsed(t *testing.T) {
	f, rs, body := appliedSourceFence(t)
	r := f.reloader
	r.mu.Lock() // applySource waits here, its reload counted
	done := make(chan error, 1)
	go func() { done <- r.applySource(rs, body(60)) }()
	require.Eventually(t, func() bool {
		r.stopMu.Lock()
		defer r.stopMu.Unlock()
		return r.running == 1
	}, 10*time.Second, 5*time.Millisecond, "applySource began")
	r.Stop()
	r.mu.Unlock()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrStopping)
	case <-time.After(10 * time.Second):
		t.Fatal("applySource did not return")
	}
	assert.Equal(t, 100, f.handler.Snapshot().Lists[rs.src.Name()].Len())
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.1", "tracker80.example."))
}

// TestSourceCopyOfADroppedSourceNotKept: a copy from a source that is no
// longer the one configured for its list (a reload removed the list, or
// moved it to another source) is refused and kept nowhere: the first
// snapshot does not serve it.
func TestSourceCopyOfADroppedSourceNotKept(t *testing.T) {
	log, _ := observed(t)
	_, r, rs, body := beforeFirstSnapshot(log, 0.5)
	dropped := &runningSource{src: failedSource{name: firstSnapshotSource}}
	err := r.applySource(dropped, body("tiktok.com\n"))
	require.ErrorContains(t, err, "the source is no longer configured")
	assert.Nil(t, dropped.list)
	assert.Nil(t, rs.list, "the configured source's list untouched")
}

// TestFetchSourcesRefusesWhatServeRefuses: `dnsfence check -fetch`
// builds each remote list's copy as serve does: a body of nothing but bad
// lines (JSON where the list was) is reported with the error serve
// refuses the copy with, and no list is given for it, while a good list
// beside it is built.
func TestFetchSourcesRefusesWhatServeRefuses(t *testing.T) {
	srv := startListServer(t, map[string]string{"/a.txt": "tiktok.com\n"})
	junk := startListServer(t, nil)
	junk.set("/b.txt", "", "junk")
	good, bad := srv.URL+"/a.txt", junk.URL+"/b.txt"
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsfence.yaml")
	writeOneListConfig(t, path, "127.0.194.9:53", good)
	text, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(text), `block: ["`+good+`"]`, `block: ["`+good+`", "`+bad+`"]`, 1)), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)

	reports, lists := FetchSources(t.Context(), cfg, false)
	require.Len(t, reports, 2)
	byName := map[string]SourceReport{}
	for _, r := range reports {
		byName[r.Name] = r
	}
	assert.NoError(t, byName[good].Err)
	assert.Equal(t, 1, byName[good].List.Len())
	assert.ErrorIs(t, byName[bad].Err, ErrOnlyBadLines)
	assert.Nil(t, byName[bad].List)
	assert.Contains(t, lists, good)
	assert.NotContains(t, lists, bad)
}
