package main

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestForeignSignalsIgnored: SIGUSR1 and SIGUSR2, which end a Go program
// by default and which operators send other resolvers (CoreDNS reloads on
// SIGUSR1, dnsmasq logs its statistics on it and reopens its log on
// SIGUSR2), are logged at warn and ignored: dnsfence keeps answering,
// blocked and forwarded names alike, reloads nothing, and SIGTERM still
// stops it with status 0.
func TestForeignSignalsIgnored(t *testing.T) {
	upstream, count := testUpstream(t)
	dir := govFiles(t, upstream, "")
	p := startBinary(t, "-config", filepath.Join(dir, "dnsfence.yaml"))
	p.waitLine(t, "dnsfence started")

	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	for i, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2} {
		require.NoError(t, p.cmd.Process.Signal(sig))
		line := p.waitLine(t, "signal ignored: SIGHUP reloads (and applies what the guards hold), SIGTERM stops")
		assert.Equal(t, "warn", line["level"])
		assert.Equal(t, sig.String(), line["signal"])

		m := new(dns.Msg)
		m.SetQuestion("www.tiktok.com.", dns.TypeA)
		r, _, err := c.Exchange(m, p.addr)
		require.NoError(t, err, "a blocked name after %v", sig)
		assert.Equal(t, dns.RcodeNameError, r.Rcode, "blocked after %v", sig)
		before := count.Load()
		m.SetQuestion(fmt.Sprintf("after-%d.example.org.", i), dns.TypeA) // a name not cached
		r, _, err = c.Exchange(m, p.addr)
		require.NoError(t, err, "a forwarded name after %v", sig)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, "forwarded after %v", sig)
		assert.Greater(t, count.Load(), before, "asked upstream after %v", sig)
	}
	for _, l := range drain(p.lines) {
		assert.NotContains(t, l["msg"], "reload", "a foreign signal reloads nothing: %v", l)
	}
	p.stop(t, syscall.SIGTERM)
}
