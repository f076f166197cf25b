package resolver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSourceCountersSurviveRestart: a reload that changes a `sources`
// setting (here sources.refresh) restarts every remote list's source, and
// dnsfence_source_failures_total went back to 0 with it, as the new
// source counted from nothing: a counter reset on reload, which
// increase() over the reload reads as the failures lost. The series goes
// on from the count it had; a list the configuration drops loses it.
func TestSourceCountersSurviveRestart(t *testing.T) {
	srv := startListServer(t, map[string]string{"/tiktok.txt": "tiktok.com\n"})
	up := startUpstream(t, nil)
	list := srv.URL + "/tiktok.txt"
	f, dir := startOneURLFence(t, up.addr, list)
	failures := func() float64 {
		t.Helper()
		v, ok := metricValue(t, f.registry, "dnsfence_source_failures_total", "source", list)
		require.True(t, ok, "dnsfence_source_failures_total of %s", list)
		return v
	}
	srv.set("/tiktok.txt", "", "down")
	require.Eventually(t, func() bool { return failures() >= 2 }, 10*time.Second, 20*time.Millisecond)
	srv.set("/tiktok.txt", "", "") // no more failures, so the count stands still

	path := filepath.Join(dir, "dnsfence.yaml")
	cfg, err := os.ReadFile(path)
	require.NoError(t, err)
	before := failures()
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(cfg), "refresh: 1s", "refresh: 2s", 1)), 0o644))
	rem := f.handler.remote.Load()
	require.NoError(t, f.reloader.Reload(false))
	require.NotSame(t, rem, f.handler.remote.Load(), "the source restarted with its new refresh")
	assert.GreaterOrEqual(t, failures(), before, "dnsfence_source_failures_total across the restart")
}

// TestZoneTransferCountSurvivesRestart: dnsfence_source_transfers_total of
// a zone source goes on across a reload that restarts the source (a
// changed sources setting), from the transfers the stopped source made,
// as the failures do: the new source counts from nothing.
func TestZoneTransferCountSurvivesRestart(t *testing.T) {
	_, entry, f, _ := startHeldZone(t, false)
	axfrs := func() float64 {
		t.Helper()
		v, ok := metricValue(t, f.registry, "dnsfence_source_transfers_total", "source", entry, "type", "AXFR")
		require.True(t, ok, "dnsfence_source_transfers_total of %s", entry)
		return v
	}
	require.Equal(t, source.TransferAXFR, f.status(t, entry).LastTransfer)
	before := axfrs()
	require.GreaterOrEqual(t, before, 1.0)

	path := f.handler.Snapshot().Config.File
	cfg, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(cfg), "cache_dir: cache,", "cache_dir: cache, refresh: 2h,", 1)), 0o644))
	rem := f.handler.remote.Load()
	require.NoError(t, f.reloader.Reload(false))
	require.NotSame(t, rem, f.handler.remote.Load(), "the source restarted with its new refresh")
	// The new source's own count first: it may transfer meanwhile, which
	// only adds to the series read after it.
	own := float64(f.status(t, entry).Transfers[source.TransferAXFR])
	assert.GreaterOrEqual(t, axfrs(), before+own, "dnsfence_source_transfers_total across the restart")
}
