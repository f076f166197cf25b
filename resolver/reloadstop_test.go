package resolver

import (
	"context"
	"testing"
	"time"

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
// has ended.
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
	r.end()
	select {
	case err := <-waited:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once the reload ended")
	}
	assert.NoError(t, r.Wait(ended))
}
