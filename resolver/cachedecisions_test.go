package resolver

import (
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The cache decisions' tests pin what the answer cache decides as a
// client sees it: which answers are cached, for how long, with which
// TTLs. They run dnsfence and its upstream on addresses of
// 127.0.145.0/24 of their own: dnsfence on decideListen, the upstream on
// decideUp, the client asking from decideClient.
const (
	decideListen = "127.0.145.2"
	decideUp     = "127.0.145.1"
	decideClient = "127.0.145.10"
)

// decideConfig is dnsfence's configuration for the cache decisions'
// tests (startFenceAt puts it on decideListen); %s is a cache block.
const decideConfig = `listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.145.0/24"]
log: {queries: none}
%s
`

// startDecideFence runs an upstream answering with answer on decideUp,
// and dnsfence forwarding to it with the cache block cache ("" for the
// defaults) on decideListen.
func startDecideFence(t *testing.T, cache string, answer func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg) (*fence, *testUpstream) {
	t.Helper()
	needLoopback(t, decideListen, decideUp, decideClient)
	up := startUpstreamAt(t, decideUp, answer)
	return startFenceAt(t, decideListen, sprintf(decideConfig, cache), nil, up.addr), up
}

// decideNetworks are the client transports of the cache decisions' tests:
// UDP and TCP, on the wire path, and "udp-msg", UDP on the message path
// (askDecide).
var decideNetworks = []string{"udp", "tcp", "udp-msg"}

// askDecide asks m of f from decideClient over network, a decideNetworks
// one: "udp-msg" is UDP with an EDNS option of local use, which the wire
// path does not take, so that the answer is forwarded and cached as a
// message (Cache.put), as rulesTransports' "udp-msg" is.
func askDecide(t *testing.T, f *fence, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	if network == "udp-msg" {
		m = m.Copy()
		if m.IsEdns0() == nil {
			m.SetEdns0(1232, false)
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}})
		network = "udp"
	}
	return ask(t, f.addr, decideClient, network, m)
}

// TestLargestTTLIsCachedForMaxTTL: a TTL of 2^31 - 1, the largest RFC 2181
// §8 allows, is a TTL, not one with its most significant bit set (read as
// 0, TestTTLWithHighBitIsZero): the answer is cached, its records and a
// negative answer's SOA cut to max_ttl, and the upstream asked once.
func TestLargestTTLIsCachedForMaxTTL(t *testing.T) {
	f, up := startDecideFence(t, "", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if strings.HasPrefix(q.Name, "nx") {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{mustRR("example.org. %d IN SOA ns.example.org. host.example.org. 1 3600 600 86400 %d",
				config.MaxTTL, config.MaxTTL)}
		} else {
			m.Answer = []dns.RR{mustRR("%s %d IN A 192.0.2.1", q.Name, config.MaxTTL)}
		}
		return m
	})
	for _, qname := range []string{"a.example.org.", "nx.example.org."} {
		for _, network := range decideNetworks {
			name := network + "." + qname
			before := up.count.Load()
			for pass := range 2 {
				r := askDecide(t, f, network, question(name, dns.TypeA, false))
				rrs := append(append([]dns.RR{}, r.Answer...), r.Ns...)
				require.Len(t, rrs, 1, "%s pass %d", name, pass)
				assertTTL(t, config.DefaultCacheMaxTTL, rrs[0], "%s pass %d", name, pass)
			}
			assert.Equal(t, before+1, up.count.Load(), "%s: cached", name)
		}
	}
}

// TestUncachedNegativeAnswerKeepsItsTTLs: a negative answer without an
// SOA is not cached (RFC 2308 §5), and has no cache lifetime to cut its
// records' TTLs to: the CNAME before the NXDOMAIN or NODATA reaches the
// client with the TTL its upstream gave it, every time, as an answer
// with a lifetime is cut to it (the SOA's MINIMUM, RFC 2308 §5).
func TestUncachedNegativeAnswerKeepsItsTTLs(t *testing.T) {
	f, up := startDecideFence(t, "", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		m.Answer = []dns.RR{mustRR("%s 3600 IN CNAME gone.example.org.", q.Name)}
		if strings.Contains(q.Name, "nx.") {
			m.Rcode = dns.RcodeNameError
		}
		if strings.Contains(q.Name, ".soa.") {
			m.Ns = []dns.RR{mustRR("example.org. 3600 IN SOA ns.example.org. h.example.org. 1 3600 600 86400 60")}
		}
		return m
	})
	tests := []struct {
		name   string
		rcode  int
		ttl    uint32 // the CNAME's, as the client gets it
		cached bool
	}{
		{name: "nodata.example.org.", rcode: dns.RcodeSuccess, ttl: 3600},
		{name: "nx.example.org.", rcode: dns.RcodeNameError, ttl: 3600},
		{name: "nodata.soa.example.org.", rcode: dns.RcodeSuccess, ttl: 60, cached: true},
		{name: "nx.soa.example.org.", rcode: dns.RcodeNameError, ttl: 60, cached: true},
	}
	for _, tc := range tests {
		for _, network := range decideNetworks {
			name := network + "." + tc.name
			before := up.count.Load()
			for pass := range 2 {
				r := askDecide(t, f, network, question(name, dns.TypeAAAA, false))
				assert.Equal(t, tc.rcode, r.Rcode, name)
				require.NotEmpty(t, r.Answer, name)
				assertTTL(t, tc.ttl, r.Answer[0], "%s pass %d", name, pass)
			}
			want := int64(2)
			if tc.cached {
				want = 1
			}
			assert.Equal(t, before+want, up.count.Load(), "%s: upstream queries for two askings", name)
		}
	}
}

// assertTTL asserts that rr carries ttl, or ttl aged by the few seconds
// a cache hit may have waited (a cached TTL counts down by the second).
func assertTTL(t *testing.T, ttl uint32, rr dns.RR, format string, args ...any) {
	t.Helper()
	got := rr.Header().Ttl
	assert.True(t, got <= ttl && got+5 >= ttl, "%s: TTL %d, want %d: %s", sprintf(format, args...), got, ttl, rr)
}

// TestUncachedYXDOMAINKeepsItsTTLs: an upstream's YXDOMAIN (RFC 6672 §2.2:
// the name a DNAME makes of the query's is too long) is passed on, not
// cached (RFC 2308 caches NXDOMAIN and NODATA only), and has no cache
// lifetime to cut its TTLs to: the DNAME reaches the client with its own
// TTL, every time.
func TestUncachedYXDOMAINKeepsItsTTLs(t *testing.T) {
	f, up := startDecideFence(t, "", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Rcode = dns.RcodeYXDomain
		m.Answer = []dns.RR{mustRR("example.org. 3600 IN DNAME a-long-target-name.example.net.")}
		return m
	})
	for _, network := range decideNetworks {
		name := network + ".too-long.example.org."
		before := up.count.Load()
		for pass := range 2 {
			r := askDecide(t, f, network, question(name, dns.TypeA, false))
			assert.Equal(t, dns.RcodeYXDomain, r.Rcode, name)
			require.Len(t, r.Answer, 1, name)
			assert.Equal(t, uint32(3600), r.Answer[0].Header().Ttl, "%s pass %d: %s", name, pass, r.Answer[0])
		}
		assert.Equal(t, before+2, up.count.Load(), "%s: not cached", name)
	}
}

// TestNegativeTTLIsTheFirstSOAs: the negative TTL of an answer whose
// authority section holds more than one SOA is bounded by the first's
// MINIMUM (RFC 2308 §5 speaks of one SOA), on both cache paths alike: a
// message path reading the last one, or the smallest of all, would cache
// the NXDOMAIN for less, and serve its SOAs with other TTLs, than the wire
// path does the same answer.
func TestNegativeTTLIsTheFirstSOAs(t *testing.T) {
	f, up := startDecideFence(t, "", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{
			mustRR("example.org. 3600 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 300"),
			mustRR("example.org. 3600 IN SOA ns.example.org. host.example.org. 2 3600 600 86400 60"),
		}
		return m
	})
	for _, network := range decideNetworks {
		name := network + ".nx.example.org."
		before := up.count.Load()
		for pass := range 2 {
			r := askDecide(t, f, network, question(name, dns.TypeA, false))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, name)
			require.Len(t, r.Ns, 2, name)
			for _, rr := range r.Ns {
				assertTTL(t, 300, rr, "%s pass %d", name, pass)
			}
		}
		assert.Equal(t, before+1, up.count.Load(), "%s: cached", name)
	}
}

// footprintAnswer is an answer to r of TXT records, the last one's string
// padded so that the answer's footprint (wireShape.footprint, as the wire
// path counts it: a string's octets count one each) is exactly want.
func footprintAnswer(t *testing.T, r *dns.Msg, want int) *dns.Msg {
	t.Helper()
	answer := func(records, pad int) (*dns.Msg, int) {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range records {
			text := ""
			if i == records-1 {
				text = strings.Repeat("x", pad)
			}
			m.Answer = append(m.Answer, mustRR("%s 300 IN TXT %q", r.Question[0].Name, text))
		}
		b, err := m.Pack()
		require.NoError(t, err)
		var w wireAnswer
		sh, ok := wireOf(b, &w)
		require.True(t, ok)
		return m, sh.footprint
	}
	records := 1
	for _, next := answer(records+1, 0); next <= want; _, next = answer(records+1, 0) {
		records++
	}
	_, base := answer(records, 0)
	m, got := answer(records, want-base)
	require.Equal(t, want, got)
	return m
}

// TestAnswerOfMaxFootprintIsCached: maxCachedFootprint is the largest
// footprint cached, on both paths: an answer of exactly that many bytes
// is cached, one of a byte more is forwarded every time.
func TestAnswerOfMaxFootprintIsCached(t *testing.T) {
	nameOf := func(network string, over bool) string {
		if over {
			return network + ".over.example.org."
		}
		return network + ".at.example.org."
	}
	answers := map[string][]dns.RR{} // each name's, made before the upstream runs
	for _, over := range []bool{false, true} {
		for _, network := range decideNetworks {
			name := nameOf(network, over)
			want := maxCachedFootprint
			if over {
				want++
			}
			answers[name] = footprintAnswer(t, question(name, dns.TypeTXT, true), want).Answer
		}
	}
	f, up := startDecideFence(t, "", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = answers[strings.ToLower(r.Question[0].Name)]
		return m
	})
	for _, over := range []bool{false, true} {
		for _, network := range decideNetworks {
			name := nameOf(network, over)
			before := up.count.Load()
			for range 2 {
				r := askDecide(t, f, network, question(name, dns.TypeTXT, true))
				require.Equal(t, dns.RcodeSuccess, r.Rcode, name)
				require.Len(t, r.Answer, len(answers[name]), name)
			}
			want := int64(1)
			if over {
				want = 2
			}
			assert.Equal(t, before+want, up.count.Load(), "%s: upstream queries for two askings", name)
		}
	}
}
