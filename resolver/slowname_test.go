package resolver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSlowNameLeavesHealth: upstreams that answer every name but those of
// one zone, which they take longer than upstream_timeout to give up on
// (a recursive resolver still trying a zone whose name servers do not
// answer, or tinydns, which never answers a name it has no data for),
// are not marked down by clients asking names of that zone again and
// again: each query times out on every upstream and gets SERVFAIL with
// EDE 22, and the first upstream keeps answering other names first; one
// upstream alone is not marked down either. CoreDNS marked its upstream
// bad for such timeouts (coredns/coredns#1091: `ANY isc.org` timing out
// at 8.8.8.8; #1504: tinydns), and its maintainer refused a change that
// did so again ("It marks the upstream as dead; which is wrong",
// coredns/coredns#1834). Before, 40 of them marked both upstreams down
// (a warning each, DnsfenceUpstreamsDown, and no resend of a lost
// datagram to the only upstream while it was down). A silent upstream
// beside one that answers is still marked down (TestUpstreamFailover),
// and so is one whose root NS query times out too
// (TestSilentOnlyUpstreamStillMarkedDown). UDP (the wire path) and TCP.
func TestSlowNameLeavesHealth(t *testing.T) {
	slowOne := func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if dns.IsSubDomain("slow.example.", r.Question[0].Name) {
			return nil // never answered within the timeout
		}
		return defaultAnswer(w, r)
	}
	askSlow := func(t *testing.T, f *fence) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				r, err := exchange(f.addr, "", []string{"udp", "tcp"}[i%2], question(fmt.Sprintf("n%d.slow.example.", i), dns.TypeA, true))
				if assert.NoError(t, err) {
					assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
					if e := ede(r); assert.NotNil(t, e) {
						assert.Equal(t, dns.ExtendedErrorCodeNoReachableAuthority, e.InfoCode)
					}
				}
			})
			if i%10 == 9 {
				wg.Wait() // ten at a time: within the retry budget, as devices beaconing would be
			}
		}
		wg.Wait()
	}

	t.Run("two upstreams", func(t *testing.T) {
		first, second := startUpstream(t, slowOne), startUpstream(t, slowOne)
		f := govFence(t, "upstream_timeout: 300ms\nupstream_strategy: ordered", first.addr, second.addr)
		require.Equal(t, dns.RcodeSuccess, ask(t, f.addr, "", "udp", question("warm.example.org.", dns.TypeA, true)).Rcode)
		askSlow(t, f)
		assert.Empty(t, f.handler.Snapshot().Forwarder().Down(), "a name the upstreams are slow on is no failure of theirs")
		assert.NotZero(t, upstreamErrors(t, f.registry, first.addr)["timeout"], "each timeout is still counted")
		before := clientQueries(second)
		r := ask(t, f.addr, "", "udp", question("a.example.org.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Equal(t, before, clientQueries(second), "the first upstream still answers A")
	})
	t.Run("one upstream", func(t *testing.T) {
		only := startUpstream(t, slowOne)
		f := govFence(t, "upstream_timeout: 300ms", only.addr)
		require.Equal(t, dns.RcodeSuccess, ask(t, f.addr, "", "udp", question("warm.example.org.", dns.TypeA, true)).Rcode)
		askSlow(t, f)
		assert.Empty(t, f.handler.Snapshot().Forwarder().Down(), "the only upstream, slow on one zone")
	})
}

// TestSilentOnlyUpstreamStillMarkedDown: an upstream that answers nothing
// at all, the root NS query of its health check neither, is marked down
// though its clients' timeouts leave its health to that check
// (TestSlowNameLeavesHealth).
func TestSilentOnlyUpstreamStillMarkedDown(t *testing.T) {
	f := govFence(t, "upstream_timeout: 200ms", silentUpstream(t))
	require.Eventually(t, func() bool {
		_, _ = exchange(f.addr, "", "udp", question("a.example.org.", dns.TypeA, true))
		return len(f.handler.Snapshot().Forwarder().Down()) == 1
	}, 30*time.Second, 10*time.Millisecond)
}

// TestUpstreamGoneSilentMarkedDownByItsQueries: an upstream that answered
// and then goes silent (its host gone, a firewall dropping its answers) is
// marked down at the pace of its clients' timeouts once one check of its
// health has timed out too, not at the pace of one check an
// upstream_timeout: after twenty answers, eighty queries ten at a time
// (1.6 s of timeouts at 200ms) mark the only upstream down. Counting only
// the checks, it took 17 of them (3.4 s here, 34 s at the default 2 s),
// and these queries left it up.
func TestUpstreamGoneSilentMarkedDownByItsQueries(t *testing.T) {
	var silent atomic.Bool
	only := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if silent.Load() {
			return nil
		}
		return defaultAnswer(w, r)
	})
	f := govFence(t, "upstream_timeout: 200ms", only.addr)
	for i := range 20 {
		require.Equal(t, dns.RcodeSuccess, ask(t, f.addr, "", "udp", question(fmt.Sprintf("n%d.example.org.", i), dns.TypeA, true)).Rcode)
	}
	silent.Store(true)
	var wg sync.WaitGroup
	for i := range 80 {
		wg.Go(func() {
			_, _ = exchange(f.addr, "", "udp", question(fmt.Sprintf("s%d.example.org.", i), dns.TypeA, true))
		})
		if i%10 == 9 {
			wg.Wait()
		}
	}
	wg.Wait()
	assert.Equal(t, []string{only.addr}, f.handler.Snapshot().Forwarder().Down())
}
