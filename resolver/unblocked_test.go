package resolver

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// movesConfig is rangesConfig with a second blocking policy whose range
// file the government range may be moved into: what that policy blocks
// and allows is filled in by each case.
const movesConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
policies:
  - name: government-devices
    client_files: ["networks.txt"]
    block: ["tiktok.txt", "bytedance.txt"]
  - name: team
    client_files: ["team.txt"]
    {{team}}
`

// Devices moved to a blocking policy whose RPZ list blocks tiktok.com
// alone (no `*.tiktok.com`) keep the apex blocked and lose every name
// below it, which the government policy's plain entry blocked: the move
// is held, and the devices' www.tiktok.com stays blocked until SIGHUP.
func TestRangeMovedToAnApexOnlyBlockIsHeld(t *testing.T) {
	const ip = "127.0.174.1"
	up := startUpstreamAt(t, ip, nil)
	files := rangesFiles("127.0.174.0/24\n")
	files["team.txt"] = "127.0.0.40/32\n"
	files["apex.rpz"] = rpzHead + "tiktok.com CNAME .\n"
	f := startFenceAt(t, ip, strings.Replace(movesConfig, "{{team}}", `block: ["apex.rpz", "bytedance.txt"]`, 1), files, up.addr)
	r := reloaderOf(f)
	require.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.174.5", "www.tiktok.com."))

	writeAtomic(t, filepath.Join(f.dir, "team.txt"), "127.0.0.40/32\n127.0.174.0/25\n")
	err := r.Reload(false)
	require.ErrorIs(t, err, ErrExempted)
	assert.Contains(t, err.Error(), "127.0.174.0/25 of policy team takes devices of 127.0.174.0/24 out of blocking policy government-devices")
	assert.Contains(t, err.Error(), "1 *.names no longer blocked, first *.tiktok.com")
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.174.5", "www.tiktok.com."), "government device released at once")

	require.NoError(t, r.Reload(true), "SIGHUP applies it")
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.174.5", "www.tiktok.com."))
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.174.5", "tiktok.com."))
}
