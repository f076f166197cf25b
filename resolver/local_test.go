package resolver

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUnderResolverArpa(t *testing.T) {
	for name, want := range map[string]bool{
		"resolver.arpa.":           true,
		"resolver.arpa":            true,
		"RESOLVER.Arpa.":           true,
		"_dns.resolver.arpa.":      true,
		"_DNS.RESOLVER.ARPA":       true,
		"a.b.c.resolver.arpa.":     true,
		`x\\.resolver.arpa.`:       true,  // the label `x\`, then resolver, arpa
		`x\.resolver.arpa.`:        false, // the label "x.resolver", then arpa
		`x\\\.resolver.arpa.`:      false,
		`\114esolver.arpa.`:        true,
		`_dns.resolver.\065RPA`:    true,
		`resolver\.arpa.`:          false, // one label
		`x.resolver\046arpa.`:      false, // \046 is a dot inside a label
		"xresolver.arpa.":          false,
		"resolver.arpa.example.":   false,
		"arpa.":                    false,
		"in-addr.arpa.":            false,
		"esolver.arpa.":            false,
		".":                        false,
		"":                         false,
		"_dns.resolver.arpa.net.":  false,
		"_dns.resolver-arpa.":      false,
		"www.tiktok.com.":          false,
		"use-application-dns.net.": false,
	} {
		assert.Equal(t, want, underResolverArpa(name), "%q", name)
	}
}

// TestResolverArpaServedLocally: resolver.arpa (RFC 9462 DDR) is answered
// from dnsfence's own empty zone and never forwarded (§6.5), on the wire
// path (UDP) and the message path (TCP, and UDP queries the wire path does
// not take), to every client it lets ask; the canary and the rest of the
// policy are unchanged.
func TestResolverArpaServedLocally(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		// What an upstream designating its own resolver would say.
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mustRR(`_dns.resolver.arpa. 300 IN SVCB 1 dns.upstream.example. alpn=dot ipv4hint=192.0.2.53`)}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	asked := func(t *testing.T, name string, qtype uint16, from, network string, edns bool) *dns.Msg {
		t.Helper()
		q := question(name, qtype, edns)
		r := ask(t, f.addr, from, network, q)
		require.Equal(t, q.Id, r.Id)
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.True(t, r.Response && r.RecursionAvailable && !r.Authoritative && !r.Truncated)
		assert.Equal(t, q.RecursionDesired, r.RecursionDesired)
		require.Len(t, r.Question, 1)
		assert.Equal(t, q.Question[0], r.Question[0], "question echoed as asked")
		assert.Equal(t, edns, r.IsEdns0() != nil, "an OPT only when the query had one (RFC 6891 §7)")
		return r
	}
	wantSOA := func(t *testing.T, rr dns.RR) {
		t.Helper()
		soa, ok := rr.(*dns.SOA)
		require.True(t, ok, "%v", rr)
		assert.Equal(t, "resolver.arpa.", soa.Hdr.Name)
		assert.Equal(t, uint16(dns.ClassINET), soa.Hdr.Class)
		assert.Equal(t, uint32(10800), soa.Hdr.Ttl)
		assert.Equal(t, uint32(10800), soa.Minttl, "RFC 6303 §3's negative TTL")
		assert.Equal(t, "resolver.arpa.", soa.Ns)
		assert.Equal(t, "nobody.invalid.", soa.Mbox)
	}
	clients := map[string]string{
		"a blocking policy": "127.0.0.1", "an exemption": "127.0.0.3", "no policy": "127.0.0.8",
		"action refused": "127.0.0.6",
	}
	for who, from := range clients {
		for _, network := range []string{"udp", "tcp"} {
			for _, edns := range []bool{true, false} {
				for _, name := range []string{"_dns.resolver.arpa.", "_DNS.Resolver.ARPA.", "resolver.arpa.", "x.y.resolver.arpa."} {
					for _, qtype := range []uint16{dns.TypeSVCB, dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS, dns.TypeTXT} {
						r := asked(t, name, qtype, from, network, edns)
						assert.Empty(t, r.Answer, "NODATA for %s %s from %s over %s", name, dns.TypeToString[qtype], who, network)
						require.Len(t, r.Ns, 1)
						wantSOA(t, r.Ns[0])
					}
				}
				// The apex's own SOA and NS are the zone's records.
				r := asked(t, "resolver.arpa.", dns.TypeSOA, from, network, edns)
				require.Len(t, r.Answer, 1)
				wantSOA(t, r.Answer[0])
				assert.Empty(t, r.Ns)
				r = asked(t, "Resolver.Arpa.", dns.TypeNS, from, network, edns)
				require.Len(t, r.Answer, 1)
				ns, ok := r.Answer[0].(*dns.NS)
				require.True(t, ok)
				assert.Equal(t, "resolver.arpa.", ns.Ns)
				assert.Equal(t, uint32(10800), ns.Hdr.Ttl)
			}
		}
	}
	assert.Zero(t, up.count.Load(), "nothing under resolver.arpa reaches an upstream")

	// Outside allowed_clients: REFUSED, as for any name.
	r := ask(t, f.addr, "127.0.0.20", "udp", question("_dns.resolver.arpa.", dns.TypeSVCB, true))
	assert.Equal(t, dns.RcodeRefused, r.Rcode)

	// Names that only look like it are forwarded as any other.
	for _, name := range []string{"resolver.arpa.example.", "xresolver.arpa."} {
		r := ask(t, f.addr, "127.0.0.8", "udp", question(name, dns.TypeSVCB, true))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.NotEmpty(t, r.Answer, name)
	}
	assert.Equal(t, int64(2), up.count.Load())

	body := scrape(t, f.registry)
	assert.Contains(t, body, `dnsfence_queries_total{result="local",transport="udp"} 176`+"\n")
	assert.Contains(t, body, `dnsfence_queries_total{result="local",transport="tcp"} 176`+"\n")
}

// TestExplainResolverArpa: `dnsfence explain` and the CHAOS explain say
// that resolver.arpa is answered here.
func TestExplainResolverArpa(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	e := f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.0.1"), "_dns.resolver.arpa", dns.TypeSVCB)
	assert.Equal(t, ResultLocal, e.Result)
	assert.False(t, e.Forwarded())
	text := e.String()
	assert.Contains(t, text, `policy "government-devices"`)
	assert.Contains(t, text, "never forwarded (RFC 9462 §6.1)")
	assert.Contains(t, text, "verdict: local (")
	assert.NotContains(t, text, "on no list")
}
