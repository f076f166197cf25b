package resolver

import (
	"bytes"
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

// The addresses of TestUnreadCacheCannotHold: dnsfence's listeners, a
// client whose policy blocks (its answers are inspected), and one in an
// exemption.
const (
	heldListen = "127.0.81.2"
	heldGov    = "127.0.81.10"
	heldExempt = "127.0.81.20"
)

// heldConfig serves every transport on heldListen; the %q are the test
// PKI's certificate and key.
const heldConfig = `listen: ["127.0.81.2:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.81.0/24"]
log: {queries: none}
tls: {cert: %q, key: %q}
listen_tls: ["127.0.81.2:0"]
listen_https: ["127.0.81.2:0", "http://127.0.81.2:0"]
listen_quic: ["127.0.81.2:0"]
policies:
  - name: government-devices
    clients: ["127.0.81.0/24"]
    block: ["tiktok.txt"]
  - name: exempt
    clients: ["127.0.81.20/32"]
`

// unreadWithExtras answers an HTTPS question as unreadHintAnswer does
// (an ipv6hint holding ::ffff:192.0.2.7, in the octets), with what the
// first label asks for besides: "ede", an Extended DNS Error (code 0,
// "upstream note") and an NSID option in its OPT record; "signed", an
// RRSIG over the HTTPS record and an NSEC in the authority section
// whatever the query's DO bit (an upstream that signs every answer), and
// an A record of the RRSIG's signer name, compressed against it.
func unreadWithExtras(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	if q.Qtype != dns.TypeHTTPS {
		return defaultAnswer(w, r)
	}
	m := new(dns.Msg).SetReply(r)
	m.RecursionAvailable = true
	m.Answer = []dns.RR{hintRecord(q.Name, 1, ".")}
	m.SetEdns0(1232, false)
	switch strings.ToLower(q.Name[:strings.IndexByte(q.Name, '.')]) {
	case "ede":
		m.IsEdns0().Option = []dns.EDNS0{
			&dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6e73"},
			&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: "upstream note"},
		}
	case "signed":
		m.Answer = append([]dns.RR{mustRR("%s 60 IN RRSIG HTTPS 8 3 60 20300101000000 20200101000000 1 signer.example.net. AAAA", q.Name)}, m.Answer...)
		m.Ns = []dns.RR{mustRR("%s 60 IN NSEC z.signer.example.net. RRSIG NSEC HTTPS", q.Name)}
		m.Extra = append([]dns.RR{mustRR("ns.signer.example.net. 60 IN A 192.0.2.53")}, m.Extra...)
	}
	m.Compress = true
	writeUnread(w, m)
	return nil
}

// TestUnreadCacheCannotHold: an answer miekg/dns does not read that the
// wire cache cannot take as it came is the upstream's answer all the
// same, which a client whose policy does not inspect it gets, over every
// transport, as it gets one read: its Extended DNS Error passed on (RFC
// 8914; its other options, an NSID, not: README's OPT row), and for a
// query without the DO bit none of its DNSSEC records (RFC 4035 §3.2.1:
// an RRSIG over the answer, an NSEC), the other records intact, their
// names compressed against a record left out among them; with DO, all of
// them. It is cached: the upstream is asked once. A client whose policy
// inspects it still gets SERVFAIL. Before, each was SERVFAIL (the
// upstream asked every time), and on the wire path (UDP) an expired
// answer was served stale for it instead.
func TestUnreadCacheCannotHold(t *testing.T) {
	needLoopback(t, heldListen, heldGov, heldExempt)
	p := newTestPKI(t)
	up := startUpstream(t, unreadWithExtras)
	e := startEncryptedFence(t, p, fmt.Sprintf(heldConfig, p.certFile, p.keyFile), up.addr)
	var askers, gov []diffAsker
	for _, a := range diffAskers(t, e, heldExempt) {
		if !a.proxied {
			askers = append(askers, a)
		}
	}
	for _, a := range diffAskers(t, e, heldGov) {
		if !a.proxied {
			gov = append(gov, a)
		}
	}
	t.Cleanup(func() {
		for _, a := range append(askers, gov...) {
			if a.close != nil {
				a.close()
			}
		}
	})
	type rec struct {
		section int
		rrtype  uint16
	}
	records := func(b []byte) []rec {
		q, ok := dnswire.ReadQuestion(b)
		require.True(t, ok)
		var out []rec
		require.True(t, dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
			if r.Type != dnswire.TypeOPT {
				out = append(out, rec{r.Section, r.Type})
			}
			return true
		}))
		return out
	}
	for _, a := range askers {
		for _, tc := range []struct {
			label string
			do    bool
			want  []rec
		}{
			{"ede", false, []rec{{dnswire.Answer, dns.TypeHTTPS}}},
			{"signed", false, []rec{{dnswire.Answer, dns.TypeHTTPS}, {dnswire.Additional, dns.TypeA}}},
			{"signed", true, []rec{{dnswire.Answer, dns.TypeRRSIG}, {dnswire.Answer, dns.TypeHTTPS},
				{dnswire.Authority, dns.TypeNSEC}, {dnswire.Additional, dns.TypeA}}},
		} {
			name := fmt.Sprintf("%s.%s-%t.example.org.", tc.label, a.name, tc.do)
			for i := range 2 { // the upstream's answer, then the cache's
				what := fmt.Sprintf("%s, %d", name, i)
				m := question(name, dns.TypeHTTPS, true)
				m.IsEdns0().SetDo(tc.do)
				q, err := m.Pack()
				require.NoError(t, err)
				b, err := a.ask(q)
				require.NoError(t, err, what)
				require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, what)
				if !assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what) {
					continue
				}
				assert.Equal(t, tc.want, records(b), "%s: the records", what)
				assert.True(t, bytes.Contains(b, net.ParseIP("::ffff:192.0.2.7").To16()), "%s: the upstream's HTTPS record", what)
				opts := rawOptions(t, b)
				if tc.label == "ede" {
					assert.Equal(t, append([]byte{0, 0}, "upstream note"...), opts[dns.EDNS0EDE], "%s: the upstream's EDE", what)
				} else {
					assert.Nil(t, opts[dns.EDNS0EDE], what)
				}
				assert.Nil(t, opts[dns.EDNS0NSID], "%s: no option but the EDE", what)
			}
			assert.Equal(t, 1, countQueries(up, name), "%s: cached", name)
		}
	}
	// A client whose policy inspects answers: SERVFAIL, fresh and cached.
	for _, a := range gov {
		q, err := question("ede."+a.name+"-gov.example.org.", dns.TypeHTTPS, true).Pack()
		require.NoError(t, err)
		b, err := a.ask(q)
		require.NoError(t, err, a.name)
		assert.Equal(t, dns.RcodeServerFailure, int(dnswire.Flags(b)&0xF), "%s: RCODE", a.name)
	}
}

// countQueries counts the queries u received for name.
func countQueries(u *testUpstream, name string) int {
	n := 0
	for _, q := range u.queries() {
		if strings.EqualFold(q.msg.Question[0].Name, name) {
			n++
		}
	}
	return n
}

// TestUnreadCacheCannotHoldRefreshesStale: such an answer (here with an
// Extended DNS Error) refreshes an expired answer, as TestUnreadAnswer-
// RefreshesStale has one that came as it is do: the client gets the
// upstream's answer, with its EDE, never the expired answer served stale
// (RFC 8767 §4) as if every upstream had failed. UDP (the wire path,
// the answer a whole datagram) and TCP. Before, over UDP the expired
// answer was served stale, and over TCP it was SERVFAIL.
func TestUnreadCacheCannotHoldRefreshesStale(t *testing.T) {
	needLoopback(t, unreadClient)
	mapped := net.ParseIP("::ffff:192.0.2.7").To16()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			var unread atomic.Bool
			up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Qtype != dns.TypeHTTPS || unread.Load() {
					return unreadWithExtras(w, r)
				}
				m := new(dns.Msg).SetReply(r)
				m.Answer = []dns.RR{mustRR("%s 60 IN HTTPS 1 . alpn=h2", r.Question[0].Name)}
				return m
			})
			f := govFence(t, "upstream_timeout: 1s\ncache: {max_ttl: 1, serve_stale: 1h}", up.addr)
			q := question("ede.svcb.example.", dns.TypeHTTPS, true)
			fresh := new(dns.Msg)
			require.NoError(t, fresh.Unpack(askOctets(t, f.addr, unreadClient, network, q)))
			require.Len(t, fresh.Answer, 1)

			unread.Store(true)
			var b []byte
			require.Eventually(t, func() bool {
				b = askOctets(t, f.addr, unreadClient, network, q)
				return bytes.Contains(b, mapped) || rawOptions(t, b)[dns.EDNS0EDE] != nil
			}, 10*time.Second, 50*time.Millisecond, "the cached answer expires")
			assert.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "RCODE")
			assert.True(t, bytes.Contains(b, mapped), "the upstream's answer, not the expired one served stale")
			assert.Equal(t, append([]byte{0, 0}, "upstream note"...), rawOptions(t, b)[dns.EDNS0EDE], "the upstream's EDE, not EDE 3")
		})
	}
}
