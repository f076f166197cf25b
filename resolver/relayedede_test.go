package resolver

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// manyEDEs is an upstream's 151 Extended DNS Errors: Network Error with a
// text, then codes that say nothing of DNSSEC (a SERVFAIL with those is
// not a failed validation, relayed as it is) over and over, 906 octets of
// options. The ones a client is given are the first of each code, three
// (maxRelayedEDEs): relayedCodes.
func manyEDEs() []*dns.EDNS0_EDE {
	edes := []*dns.EDNS0_EDE{{InfoCode: dns.ExtendedErrorCodeNetworkError, ExtraText: "upstream says why"}}
	codes := []uint16{0, 4, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24}
	for i := range 150 {
		edes = append(edes, &dns.EDNS0_EDE{InfoCode: codes[i%len(codes)]})
	}
	return edes
}

var relayedCodes = []uint16{dns.ExtendedErrorCodeNetworkError, 0, 4}

// TestRelayedEDEsBounded: an upstream's answer with 151 Extended DNS
// Errors (906 octets of options) gives the client the first of each code,
// three, as BIND passes on no more than 3 and ignores a code it holds, so
// that dnsfence's own options still fit a client of 512 octets. Before,
// every one was passed on and, over a client's UDP size even without
// their texts, shrinkOPT left out every option: the client lost the
// SERVFAIL's own EDE 22 saying why, a stale answer's EDE 3, the Client
// Subnet echo that scopes an answer (RFC 7871 §7.2.1) and the upstream's
// codes too; and an answer miekg/dns does not unpack came back as its
// header and question with TC set, though its records fit.
func TestRelayedEDEsBounded(t *testing.T) {
	codes := func(edes []*dns.EDNS0_EDE) []uint16 {
		var out []uint16
		for _, e := range edes {
			out = append(out, e.InfoCode)
		}
		return out
	}
	ask512 := func(t *testing.T, addr, from, network, name string, qtype uint16) *dns.Msg {
		t.Helper()
		q := question(name, qtype, true)
		q.IsEdns0().SetUDPSize(512)
		return ask(t, addr, from, network, q)
	}

	t.Run("answer", func(t *testing.T) {
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			m := defaultAnswer(w, r)
			if opt := m.IsEdns0(); opt != nil {
				for _, e := range manyEDEs() {
					opt.Option = append(opt.Option, e)
				}
			}
			return m
		})
		f := startFence(t, testConfig, testFiles, up.addr)
		for _, from := range []string{"127.0.0.1", "127.0.0.3"} { // a government device, and the press office
			for _, network := range []string{"udp", "tcp"} {
				for _, when := range []string{"fresh", "cached"} {
					what := fmt.Sprint(from, " ", network, " ", when)
					r := ask512(t, f.addr, from, network, "many"+strings.ReplaceAll(from, ".", "-")+".example.org.", dns.TypeA)
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, what)
					assert.False(t, r.Truncated, what)
					assert.Len(t, r.Answer, 1, what)
					edes := allEDEs(r)
					assert.Equal(t, relayedCodes, codes(edes), "%s: the first of each code, three", what)
					if len(edes) > 0 && network == "tcp" {
						assert.Equal(t, "upstream says why", edes[0].ExtraText, "%s: over TCP the text fits", what)
					}
				}
			}
		}
	})

	t.Run("SERVFAIL", func(t *testing.T) {
		up := startUpstream(t, rcodeAnswer(dns.RcodeServerFailure, manyEDEs()...))
		f := govFence(t, "upstream_timeout: 2s", up.addr)
		for _, network := range []string{"udp", "tcp"} {
			r := ask512(t, f.addr, "", network, "fail.example.org.", dns.TypeA)
			assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
			edes := allEDEs(r)
			assert.Equal(t, append(relayedCodes, dns.ExtendedErrorCodeNoReachableAuthority), codes(edes),
				"%s: the upstream's first three, then dnsfence's own, last", network)
		}
	})

	t.Run("served stale", func(t *testing.T) {
		var alive atomic.Bool
		alive.Store(true)
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if !alive.Load() {
				return nil
			}
			m := defaultAnswer(w, r)
			m.Answer = []dns.RR{mustRR("%s 1 IN A 192.0.2.1", r.Question[0].Name)}
			for _, e := range manyEDEs() {
				m.IsEdns0().Option = append(m.IsEdns0().Option, e)
			}
			return m
		})
		cfg := strings.Replace(testConfig, "upstream_timeout: 300ms",
			"upstream_timeout: 300ms\ncache: {serve_stale: 1h, stale_answer_client_timeout: 0s}", 1)
		f := startFence(t, cfg, testFiles, up.addr)
		r := ask512(t, f.addr, "127.0.0.1", "udp", "stale.example.org.", dns.TypeA)
		require.Len(t, r.Answer, 1)
		alive.Store(false)
		time.Sleep(1100 * time.Millisecond) // past its TTL
		r = ask512(t, f.addr, "127.0.0.1", "udp", "stale.example.org.", dns.TypeA)
		assert.Len(t, r.Answer, 1)
		assert.False(t, r.Truncated)
		assert.True(t, hasEDE(r, dns.ExtendedErrorCodeStaleAnswer), "dnsfence's own EDE 3 stays")
	})

	t.Run("answer miekg/dns does not unpack", func(t *testing.T) {
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			q := r.Question[0]
			if q.Qtype != dns.TypeHTTPS {
				return defaultAnswer(w, r)
			}
			m := new(dns.Msg)
			m.SetReply(r)
			m.RecursionAvailable = true
			m.Answer = append(m.Answer, mappedHintHTTPS(q.Name, 300))
			m.SetEdns0(1232, false)
			for _, e := range manyEDEs() {
				m.IsEdns0().Option = append(m.IsEdns0().Option, e)
			}
			return m
		})
		f := startFence(t, testConfig, testFiles, up.addr)
		for _, when := range []string{"fresh", "cached"} {
			m := question("unread.example.org.", dns.TypeHTTPS, true)
			m.IsEdns0().SetUDPSize(512)
			q, err := m.Pack()
			require.NoError(t, err)
			b := askRaw(t, f.addr, "127.0.0.3", q) // the press office: given in wire form
			require.LessOrEqual(t, len(b), 512, when)
			assert.Zero(t, dnswire.Flags(b)&dnswire.FlagTC, "%s: TC clear", when)
			assert.EqualValues(t, 1, dnswire.ANCount(b), "%s: the record", when)
			var got []uint16
			options, _, ok := dnswire.OPTData(b)
			require.True(t, ok, when)
			for len(options) > 0 {
				code, data, rest, whole := dnswire.NextOption(options)
				require.True(t, whole, when)
				if code == dns.EDNS0EDE {
					got = append(got, binary.BigEndian.Uint16(data))
				}
				options = rest
			}
			assert.Equal(t, relayedCodes, got, "%s: the first of each code, three", when)
		}
	})

	t.Run("Client Subnet echo", func(t *testing.T) {
		peerNeedAddrs(t)
		up := startUpstreamAt(t, peerUp, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			m := defaultAnswer(w, r)
			for _, e := range manyEDEs() {
				m.IsEdns0().Option = append(m.IsEdns0().Option, e)
			}
			return m
		})
		addr := startPeerFence(t, up.addr)
		for _, network := range []string{"udp", "tcp"} {
			q := question("ecs.example.org.", dns.TypeA, true)
			q.IsEdns0().SetUDPSize(512)
			subnet := []byte{198, 51, 100, 0}
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: subnet})
			r := ask(t, addr, peerProxy, network, q)
			require.Len(t, r.Answer, 1, network)
			echoed := findECS(r)
			require.NotNil(t, echoed, "%s: the Client Subnet echo stays", network)
			assert.EqualValues(t, 24, echoed.SourceScope, network)
			assert.Equal(t, relayedCodes, codes(allEDEs(r)), network)
		}
	})
}
