package resolver

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestUpstreamServfailWarnThrottled: an upstream that answers SERVFAIL to
// every query gets one "upstreams failed" line for a burst of failed
// queries, not one a query; the next line, once the interval has passed,
// says how many were suppressed, so that lines written plus suppressed are
// every SERVFAIL.
func TestUpstreamServfailWarnThrottled(t *testing.T) {
	const n = 40
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m
	})
	core, logs := observer.New(zap.WarnLevel)
	f := startFenceLog(t, zap.New(core), quietConfig(""), govFiles, up.addr)
	for i := range n {
		// Distinct names: a cached SERVFAIL would answer a repeat without
		// asking the upstream.
		r := ask(t, f.addr, "", "udp", question(fmt.Sprintf("burst%d.example.org.", i), dns.TypeA, true))
		require.Equal(t, dns.RcodeServerFailure, r.Rcode)
	}
	lines := logs.FilterMessage("upstreams failed").All()
	require.Len(t, lines, 1, "one line for the burst; before the throttle, one a query")
	assert.Contains(t, lines[0].ContextMap()[logCause], "servfail", "the cause is the upstream's SERVFAIL")
	assert.NotContains(t, lines[0].ContextMap(), logSuppressed, "nothing suppressed before the first line")

	f.handler.upstreamWarn.setEvery(time.Millisecond)
	require.Eventually(t, func() bool {
		r, err := exchange(f.addr, "", "udp", question("after.example.org.", dns.TypeA, true))
		require.NoError(t, err)
		require.Equal(t, dns.RcodeServerFailure, r.Rcode)
		return logs.FilterMessage("upstreams failed").Len() == 2
	}, 5*time.Second, 10*time.Millisecond)
	last := logs.FilterMessage("upstreams failed").All()[1].ContextMap()
	assert.EqualValues(t, n-1, last[logSuppressed], "the burst's other failures, counted")
	assert.Contains(t, last[logUpstream], up.addr, "the line names the upstream")
}
