package resolver

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCacheRulesUnreadTooBig: an answer miekg/dns does not unpack, given
// as the upstream sent it to a client whose policy does not inspect it
// (README, Answer inspection), that is larger than a UDP client's size
// is cut to its header and question with TC set (RFC 1035 §4.2.1, RFC
// 2181 §9), so that the client asks again over TCP and gets it whole: the
// first answer and the cache's hits alike, on the wire path and the
// message path. It was SERVFAIL (EDE 23): the answer was to be fitted to
// the client as a message, which it cannot be made into.
func TestCacheRulesUnreadTooBig(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
	e := startRulesFence(t, p, rulesListen, "", nil, up.addr)
	udp := func(size uint16, msgPath bool) rulesTransport {
		name := fmt.Sprintf("udp%d", size)
		if msgPath {
			name += "-msg"
		}
		return rulesTransport{name, func(from string, m *dns.Msg) (*dns.Msg, error) {
			m = m.Copy()
			m.Extra = nil
			if size != 0 {
				m.SetEdns0(size, false)
			}
			if msgPath {
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}})
			}
			r, n, err := askUDPRaw(e.addr, from, m)
			if err == nil && n > max(int(size), 512) {
				return r, fmt.Errorf("%d octets over UDP to a client of %d", n, max(size, 512))
			}
			return r, err
		}}
	}
	all := []rulesTransport{udp(0, false), udp(512, false), udp(512, true), udp(1232, false), udp(1232, true)}
	for _, tr := range rulesTransports(e) {
		if !strings.HasPrefix(tr.name, "udp") {
			all = append(all, tr)
		}
	}
	for _, miss := range all {
		for _, hit := range all {
			name := fmt.Sprintf("unreadbig.%s-%s.example.org.", miss.name, hit.name)
			for _, tr := range []rulesTransport{miss, hit} {
				what := fmt.Sprintf("%s then %s: %s", miss.name, hit.name, tr.name)
				r, err := tr.ask(rulesExempt, question(name, dns.TypeHTTPS, true))
				if strings.HasPrefix(tr.name, "udp0") || strings.HasPrefix(tr.name, "udp512") {
					require.NoError(t, err, what)
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s: %s, EDE %v", what, dns.RcodeToString[r.Rcode], allEDEs(r))
					assert.True(t, r.Truncated, "%s: TC", what)
					assert.Equal(t, name, r.Question[0].Name, what)
					assert.Empty(t, r.Answer, what)
					assert.Empty(t, r.Ns, what)
					assert.Equal(t, tr.name != "udp0", r.IsEdns0() != nil, "%s: OPT only when the query had one", what)
					continue
				}
				// The whole answer, which the client's miekg/dns does not
				// unpack either.
				require.ErrorContains(t, err, "ipv6", what)
			}
			assert.Equal(t, 1, counter.get(name, dns.TypeHTTPS, dns.ClassINET, false, false), "%s then %s: cached", miss.name, hit.name)
		}
	}
}

// TestCacheRulesUnreadOtherSpelling: an answer miekg/dns does not unpack,
// given as the upstream sent it to a client whose policy does not inspect
// it, is given from the cache to a client that spells the name otherwise
// (DNS 0x20) too, with the question as that client spelled it (RFC 4343,
// README's case of names), over every transport. It was SERVFAIL: the
// question was to be set in a message, which the answer cannot be made
// into.
func TestCacheRulesUnreadOtherSpelling(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
	e := startRulesFence(t, p, rulesListen, "", nil, up.addr)
	// Asked in octets: the client's miekg/dns does not unpack the answer
	// either.
	var askers []diffAsker
	for _, a := range diffAskers(t, e, rulesExempt) {
		if !a.proxied {
			askers = append(askers, a)
		}
	}
	for _, miss := range askers {
		for _, hit := range askers {
			name := fmt.Sprintf("unread.%s-%s.example.org.", miss.name, hit.name)
			for _, ask := range []struct {
				a    diffAsker
				name string
			}{{miss, name}, {hit, "UnReAd" + name[len("unread"):]}} {
				what := fmt.Sprintf("%s then %s: %s asks %s", miss.name, hit.name, ask.a.name, ask.name)
				q, err := question(ask.name, dns.TypeHTTPS, true).Pack()
				require.NoError(t, err)
				b, err := ask.a.ask(q)
				require.NoError(t, err, what)
				require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, what)
				assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what)
				assert.EqualValues(t, 1, dnswire.ANCount(b), "%s: the HTTPS record", what)
				got, _, err := dns.UnpackDomainName(b, dnswire.HeaderLen)
				require.NoError(t, err, what)
				assert.Equal(t, ask.name, got, "%s: the question as the client spelled it", what)
			}
			assert.Equal(t, 1, counter.get(name, dns.TypeHTTPS, dns.ClassINET, false, false), "%s then %s: cached", miss.name, hit.name)
		}
	}
}

// rawOptions are the EDNS options of the answer b, by code.
func rawOptions(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	off, ok := dnswire.FindOPT(b)
	if !ok {
		return nil
	}
	out := map[uint16][]byte{}
	rd := off + 10
	end := rd + int(binary.BigEndian.Uint16(b[off+8:]))
	for o := rd; o+4 <= end; {
		code, n := binary.BigEndian.Uint16(b[o:]), int(binary.BigEndian.Uint16(b[o+2:]))
		out[code] = b[o+4 : o+4+n]
		o += 4 + n
	}
	return out
}

// TestCacheRulesUnreadECS: the answer to a query whose client a trusted
// proxy names by EDNS Client Subnet echoes the option, the scope the
// whole source prefix (RFC 7871 §7.2.1, README), an answer miekg/dns does
// not unpack too, on its first answer and from the cache, over every
// transport. The first answer left the option out, and the cache's hits
// were SERVFAIL: the option was echoed into a message, which the answer
// cannot be made into. An answer that unpacks is the reference.
func TestCacheRulesUnreadECS(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
	e := startRulesFence(t, p, rulesListen, `trusted_proxies: ["127.0.77.9/32"]`, nil, up.addr)
	var askers []diffAsker
	for _, a := range diffAskers(t, e, "127.0.77.9") {
		if !a.proxied {
			askers = append(askers, a)
		}
	}
	// Too big for a UDP client of 512 octets: cut with TC, the option
	// echoed all the same.
	m := question("unreadbig.ecs.example.org.", dns.TypeHTTPS, false)
	m.SetEdns0(512, false)
	m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.ParseIP(rulesExempt).To4()}}
	for i := range 2 {
		r, n, err := askUDPRaw(e.addr, "127.0.77.9", m)
		require.NoError(t, err)
		assert.LessOrEqual(t, n, 512)
		assert.True(t, r.Truncated, "%d: TC: %v", i, r)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%d", i)
		if e := findECS(r); assert.NotNil(t, e, "%d: ECS echoed", i) {
			assert.Equal(t, uint8(32), e.SourceScope)
		}
	}
	for _, label := range []string{"plain", "unread"} {
		for _, miss := range askers {
			for _, hit := range askers {
				name := fmt.Sprintf("%s.ecs.%s-%s.example.org.", label, miss.name, hit.name)
				for i, a := range []diffAsker{miss, hit} {
					what := fmt.Sprintf("%s: %s then %s: %d %s", label, miss.name, hit.name, i, a.name)
					m := question(name, dns.TypeHTTPS, true)
					if label == "plain" {
						m.Question[0].Qtype = dns.TypeA
					}
					m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.ParseIP(rulesExempt).To4()}}
					q, err := m.Pack()
					require.NoError(t, err)
					b, err := a.ask(q)
					require.NoError(t, err, what)
					assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what)
					assert.EqualValues(t, 1, dnswire.ANCount(b), what)
					// Family 1, source and scope /32, the address.
					assert.Equal(t, []byte{0, 1, 32, 32, 127, 0, 77, 20}, rawOptions(t, b)[dns.EDNS0SUBNET], "%s: ECS echoed", what)
				}
			}
		}
	}
}

// TestCacheRulesUnreadServeStale: an expired answer miekg/dns does not
// unpack is served stale like any other once every upstream fails, to a
// client whose policy does not inspect it, over every transport: every
// TTL 30, EDE 3 (RFC 8767 §4, RFC 8914 §4.4); and, for
// stale_refresh_time after that failure, without asking the upstreams
// (RFC 8767 §5). It was SERVFAIL: the stale answer was made as a message,
// which the answer cannot be made into.
func TestCacheRulesUnreadServeStale(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	var failing atomic.Bool
	good := rulesAnswer(counter)
	up := startUpstreamAt(t, rulesUp, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if failing.Load() && r.Question[0].Name != "." {
			counter.add(w, r)
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
			return m
		}
		return good(w, r)
	})
	e := startRulesFence(t, p, rulesListen, "cache: {max_ttl: 1, serve_stale: 1h, stale_refresh_time: 1h, stale_answer_client_timeout: 0s}", nil, up.addr)
	var askers []diffAsker
	for _, a := range diffAskers(t, e, rulesExempt) {
		if !a.proxied {
			askers = append(askers, a)
		}
	}
	ask := func(a diffAsker, name string) []byte {
		q, err := question(name, dns.TypeHTTPS, true).Pack()
		require.NoError(t, err)
		b, err := a.ask(q)
		require.NoError(t, err, a.name)
		require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, a.name)
		return b
	}
	nameOf := func(a diffAsker) string { return "unread.stale-" + a.name + ".example.org." }
	for _, a := range askers {
		b := ask(a, nameOf(a))
		require.EqualValues(t, 1, dnswire.ANCount(b), "%s: the fresh answer", a.name)
	}
	failing.Store(true)
	for _, a := range askers {
		name := nameOf(a)
		var b []byte
		require.Eventually(t, func() bool {
			b = ask(a, name)
			return rawOptions(t, b)[dns.EDNS0EDE] != nil
		}, 10*time.Second, 50*time.Millisecond, "%s: expires", a.name)
		asked := counter.get(name, dns.TypeHTTPS, dns.ClassINET, false, false)
		for i := range 2 { // the failed refresh, then held off the upstreams
			if i == 1 {
				b = ask(a, name)
			}
			what := fmt.Sprintf("%s, %d", a.name, i)
			assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what)
			assert.EqualValues(t, 1, dnswire.ANCount(b), "%s: the HTTPS record", what)
			assert.Equal(t, []byte{0, byte(dns.ExtendedErrorCodeStaleAnswer)}, rawOptions(t, b)[dns.EDNS0EDE][:2], "%s: EDE 3", what)
			q, ok := dnswire.ReadQuestion(b)
			require.True(t, ok, what)
			require.True(t, dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
				if r.Type != dnswire.TypeOPT {
					assert.EqualValues(t, 30, r.TTL, "%s: TTL", what)
				}
				return true
			}), what)
		}
		assert.Equal(t, asked, counter.get(name, dns.TypeHTTPS, dns.ClassINET, false, false), "%s: stale_refresh_time holds the upstreams off", a.name)
	}
}

// TestUnreadWithOptionsKeepsCompression: an answer miekg/dns does not
// unpack whose OPT record, last, carries options (an upstream's Extended
// DNS Error) is given in the upstream's own compression (README, step 9),
// its OPT replaced by dnsfence's with the EDE passed on: no longer than
// the upstream sent it, fresh and from the cache. Before, it was rebuilt
// with every name written out (dnswire.Without, which a record left out
// needs), and 33 records the upstream sent in 1,182 octets came to the
// client in 1,710: to a UDP client of 1,232 cut to its header with TC
// set, though the upstream had fit it.
func TestUnreadWithOptionsKeepsCompression(t *testing.T) {
	var sent atomic.Int64
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		if q.Qtype != dns.TypeHTTPS {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		m.Answer = []dns.RR{hintRecord(q.Name, 1, ".")}
		for i := range 32 {
			m.Answer = append(m.Answer, mustRR("%s 60 IN AAAA 2001:db8::%x", q.Name, i+1))
		}
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: strings.Repeat("z", 200)}}
		m.Compress = true
		b, err := m.Pack()
		require.NoError(t, err)
		sent.Store(int64(len(b)))
		writeUnread(w, m)
		return nil
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		name := network + ".unread.example.org."
		for i := range 2 { // the upstream's answer, then the cache's
			what := fmt.Sprintf("%s, %d", network, i)
			b := askOctets(t, f.addr, "127.0.0.3", network, question(name, dns.TypeHTTPS, true)) // the press office: not inspected
			require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, what)
			assert.LessOrEqual(t, len(b), int(sent.Load()), "%s: no longer than the upstream sent it", what)
			assert.Zero(t, dnswire.Flags(b)&dnswire.FlagTC, "%s: TC clear", what)
			assert.EqualValues(t, 33, dnswire.ANCount(b), "%s: every record", what)
			assert.Equal(t, append([]byte{0, 0}, strings.Repeat("z", 200)...), rawOptions(t, b)[dns.EDNS0EDE], "%s: the upstream's EDE", what)
		}
		assert.Equal(t, 1, countQueries(up, name), "%s: cached", network)
	}
}
