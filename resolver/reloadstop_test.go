package resolver

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestReloaderWaitWithNoReloadUnderWay: after Stop, with no reload under
// way, Wait reports none, even when its context has ended: the stop of a
// dnsfence whose queries in flight took the whole shutdown budget calls
// it so. Before, Wait's select chose between the context's end and a
// goroutine's word that none was under way, and mostly took the first:
// "stopped with a reload still under way" was logged when none was.
func TestReloaderWaitWithNoReloadUnderWay(t *testing.T) {
	r := NewReloader(zap.NewNop(), NewHandler(zap.NewNop(), nil, nil), nil)
	r.Stop()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for range 200 {
		assert.NoError(t, r.Wait(ended))
	}
	assert.NoError(t, r.Wait(context.Background()))
}

// TestReloaderWaitForTheReloadUnderWay: Wait waits for a reload that
// began before Stop, until its context ends, and reports none once it
// has ended. A Wait already waiting when the reload ends (given 400 ms to
// be waiting) returns then, not at its context's end: the stop of a
// dnsfence waits for the reload, not for the shutdown budget.
func TestReloaderWaitForTheReloadUnderWay(t *testing.T) {
	r := NewReloader(zap.NewNop(), NewHandler(zap.NewNop(), nil, nil), nil)
	require.True(t, r.begin())
	r.Stop()
	assert.False(t, r.begin(), "none begins after Stop")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, r.Wait(ended), context.Canceled)
	waited := make(chan error, 1)
	go func() { waited <- r.Wait(context.Background()) }()
	time.Sleep(400 * time.Millisecond)
	select {
	case err := <-waited:
		t.Fatalf("Wait returned with the reload still under way: %v", err)
	default:
	}
	r.end()
	select {
	case err := <-waited:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once the reload ended")
	}
	assert.NoError(t, r.Wait(ended))
}

// TestReloadAfterStopLeavesTheOneUnderWayCounted: a reload asked for
// after Stop (a SIGHUP during the shutdown) applies nothing and returns
// ErrStopping, and does not end the count of the reloads under way: Wait
// still waits for the one that began before Stop. Before the check at
// ReloadFor's top, its deferred end ended a reload it never began, and
// Wait reported none under way while one still was.
func TestReloadAfterStopLeavesTheOneUnderWayCounted(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	path := f.handler.Snapshot().Config.File
	r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
	require.True(t, r.begin(), "a reload under way")
	r.Stop()
	before := f.handler.Snapshot()
	require.ErrorIs(t, r.ReloadFor(Trigger{Kind: TriggerSIGHUP}), ErrStopping)
	assert.Same(t, before, f.handler.Snapshot())
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, r.Wait(ended), context.Canceled, "the reload begun before Stop is still under way")
	r.end()
	assert.NoError(t, r.Wait(ended))
}

// TestReloadStoppedWhileBuildingNotApplied: Stop comes while a reload
// reads the configuration (the reload holds r.mu, Stop does not wait for
// it): the snapshot built is not published, ErrStopping is returned, and
// the forwarder the reload connected for a new upstream is closed, its
// upstream's metric series gone with it.
func TestReloadStoppedWhileBuildingNotApplied(t *testing.T) {
	up := startUpstream(t, nil)
	moved := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	path := f.handler.Snapshot().Config.File
	text, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(text), up.addr, moved.addr, 1)), 0o644))
	log, logs := observed(t)
	var r *Reloader
	r = NewReloader(log, f.handler, func() (*config.Config, error) {
		r.Stop() // during the reload, after its first check
		return config.Load(path)
	})
	before := f.handler.Snapshot()
	require.ErrorIs(t, r.Reload(false), ErrStopping)
	assert.Same(t, before, f.handler.Snapshot(), "nothing published")
	assert.Len(t, logs.FilterMessage("reload not applied: dnsfence is stopping").All(), 1)
	metrics := scrape(t, f.registry)
	assert.True(t, strings.Contains(metrics, `upstream="`+up.addr+`"`), "the upstream served")
	assert.False(t, strings.Contains(metrics, `upstream="`+moved.addr+`"`), "the forwarder built for the reload is closed")
}
