package testnet

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestDaemonLogged: a line the process writes a moment after the test
// asks for it is found; one it never writes is not, after the wait.
func TestDaemonLogged(t *testing.T) {
	var d Daemon
	d.Start(t, t.TempDir(), "sh", "-c", "sleep 0.4; echo AXFR started; exec sleep 30")
	t.Cleanup(d.Stop)
	assert.NotContains(t, d.Log(), "AXFR started", "not yet written")
	assert.True(t, d.Logged("AXFR started"))
	assert.False(t, d.Logged("AXFR ended"))
}
