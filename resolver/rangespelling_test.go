package resolver

import (
	"maps"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
)

// TestRangeFileLineWithInvisibleCharacterBlocks: a government device named
// in a range file by a line that carries a zero-width space (copied from
// a web page or a chat) or is typed in full-width digits is blocked, as
// the same characters in a list's name are read: the line was skipped as
// bad (a warning) and the device's TikTok queries were forwarded. So is
// a device named by a hosts-format list's address so written, whose names
// blocked nothing.
func TestRangeFileLineWithInvisibleCharacterBlocks(t *testing.T) {
	up := startUpstream(t, nil)
	files := maps.Clone(testFiles)
	files["networks.txt"] = "# more government devices\n127.0.0.5\u200b\n１２７.０.０.９\n"
	files["bytedance.txt"] = "０.０.０.０ capcut.com\n0.0.0.0\u200b lemon8.com\n"
	f := startFence(t, testConfig, files, up.addr)
	for _, client := range []string{"127.0.0.5", "127.0.0.9"} {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, client, "www.tiktok.com."), client)
	}
	for _, name := range []string{"www.capcut.com.", "lemon8.com."} {
		assert.Equal(t, dns.RcodeNameError, rcodeOf(t, f.addr, "127.0.0.1", name), name)
	}
	assert.Equal(t, dns.RcodeSuccess, rcodeOf(t, f.addr, "127.0.0.8", "www.tiktok.com."), "a device in no range is forwarded")
	assert.Equal(t, 1, up.distinct(), "only the query of the device in no range went upstream")
}
