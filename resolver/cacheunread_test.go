package resolver

import (
	"fmt"
	"strings"
	"testing"

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
	up := startRulesUpstream(t, rulesAnswer(counter))
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
	up := startRulesUpstream(t, rulesAnswer(counter))
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
