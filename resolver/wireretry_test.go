package resolver

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWireTCPRetryFreshID: a wire query whose UDP answer is truncated is
// asked again over TCP with a fresh ID, as the message path asks it
// (upstreamQuery: queryIDs.next()), never with the constant ID 0 of the
// packed query (STYLE.md: "a fresh ID upstream"; RFC 5452 §4.3).
func TestWireTCPRetryFreshID(t *testing.T) {
	up := startUpstream(t, equivalenceAnswer)
	f := startFence(t, testConfig, testFiles, up.addr)
	for i := range 3 {
		r := ask(t, f.addr, "127.0.0.4", "udp", question(fmt.Sprintf("big.n%d.eq.example.", i), dns.TypeTXT, true))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
	}
	var ids []uint16
	for _, s := range up.queries() {
		if s.tcp {
			ids = append(ids, s.msg.Id)
		}
	}
	require.Len(t, ids, 3, "each truncated answer asked again over TCP")
	// A random ID is 0 once in 65,536; the packed query's constant 0
	// always.
	zeros := 0
	for _, id := range ids {
		if id == 0 {
			zeros++
		}
	}
	assert.LessOrEqual(t, zeros, 1, "TCP retry IDs %v", ids)
	assert.False(t, ids[0] == ids[1] && ids[1] == ids[2], "TCP retry IDs %v", ids)
}
