package resolver

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testConfig: 127.0.0.1-3 and ::1 are government devices (with 127.0.0.5
// from a range file), 127.0.0.3 is the exempt press office, 127.0.0.6 and
// .7 are refused/null policies, 127.0.0.8 is allowed but in no policy,
// 127.0.0.20 is not allowed at all.
const testConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 300ms
allowed_clients: ["127.0.0.0/28", "::1/128"]
blocked_ttl: 60
log: {queries: all}
policies:
  - name: government-devices
    clients: ["127.0.0.0/30", "::1/128"]
    client_files: ["networks.txt"]
    block: ["tiktok.txt", "bytedance.txt"]
    allow: ["allow.txt"]
  - name: press-office
    clients: ["127.0.0.3/32"]
  - name: refusing
    clients: ["127.0.0.6/32"]
    block: ["tiktok.txt"]
    action: refused
  - name: nulling
    clients: ["127.0.0.7/32"]
    block: ["tiktok.txt"]
    action: null
`

var testFiles = map[string]string{
	"networks.txt":  "# more government devices\n127.0.0.5\n",
	"tiktok.txt":    "# TikTok\ntiktok.com\ntiktokcdn.com\ntiktokv.com.edgekey.net\n",
	"bytedance.txt": "||capcut.com^\n",
	"allow.txt":     "ads.tiktok.com\nallowed-chain.tiktokcdn.com\n",
}

func TestBlockedAnswer(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)

	t.Run("nxdomain without edns", func(t *testing.T) {
		req := question("www.TikTok.com.", dns.TypeA, false)
		req.Id = 4711
		r := ask(t, f.addr, "", "udp", req)
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		assert.Equal(t, uint16(4711), r.Id)
		assert.True(t, r.Response)
		assert.True(t, r.RecursionDesired, "RD copied")
		assert.True(t, r.RecursionAvailable, "RA set")
		assert.False(t, r.Authoritative)
		assert.Equal(t, req.Question, r.Question, "question echoed as asked")
		assert.Empty(t, r.Answer)
		require.Len(t, r.Ns, 1)
		soa, ok := r.Ns[0].(*dns.SOA)
		require.True(t, ok)
		assert.Equal(t, "tiktok.com.", soa.Hdr.Name, "SOA owned by the matched entry")
		assert.Equal(t, uint32(60), soa.Hdr.Ttl)
		assert.Equal(t, uint32(60), soa.Minttl)
		assert.Nil(t, r.IsEdns0(), "no OPT when the query had none")
	})

	t.Run("rd clear is copied", func(t *testing.T) {
		req := question("tiktok.com.", dns.TypeA, false)
		req.RecursionDesired = false
		r := ask(t, f.addr, "", "udp", req)
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		assert.False(t, r.RecursionDesired)
		assert.True(t, r.RecursionAvailable)
	})

	t.Run("edns gets EDE 15 naming policy and list", func(t *testing.T) {
		r := ask(t, f.addr, "", "udp", question("a.b.tiktokcdn.com.", dns.TypeAAAA, true))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		require.NotNil(t, r.IsEdns0())
		e := ede(r)
		require.NotNil(t, e)
		assert.Equal(t, dns.ExtendedErrorCodeBlocked, e.InfoCode)
		assert.Contains(t, e.ExtraText, `"government-devices"`)
		assert.Contains(t, e.ExtraText, "tiktok.txt")
		assert.Equal(t, "tiktokcdn.com.", r.Ns[0].Header().Name)
	})

	t.Run("every query type", func(t *testing.T) {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeMX,
			dns.TypeTXT, dns.TypeANY, dns.TypeCNAME, dns.TypeNS, dns.TypeSOA, dns.TypeSRV, dns.TypePTR, dns.TypeCAA,
			// DNSSEC's types, answered from the parent's side by a recursive
			// resolver (Unbound's local-zone let a DS query through,
			// NLnetLabs/unbound#1405), and types no RFC names.
			dns.TypeDS, dns.TypeDNSKEY, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNULL, 65280, 65534} {
			r := ask(t, f.addr, "", "udp", question("api.capcut.com.", qt, true))
			assert.Equal(t, dns.RcodeNameError, r.Rcode, dns.TypeToString[qt])
		}
	})

	t.Run("tcp", func(t *testing.T) {
		r := ask(t, f.addr, "", "tcp", question("tiktok.com.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
	})

	t.Run("ipv6 client", func(t *testing.T) {
		f6 := startFenceOn(t, "[::1]:0", up.addr)
		r := ask(t, f6.addr, "::1", "udp", question("tiktok.com.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
	})

	t.Run("client from range file", func(t *testing.T) {
		r := ask(t, f.addr, "127.0.0.5", "udp", question("tiktok.com.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
	})

	assert.Zero(t, up.count.Load(), "a blocked query is never sent upstream")
}

// startFenceOn serves testConfig on a given listen address.
func startFenceOn(t *testing.T, listen string, upstreams ...string) *fence {
	t.Helper()
	f := startFence(t, testConfig, testFiles, upstreams...)
	srv := NewServer(f.handler.log, f.handler)
	require.NoError(t, srv.Start([]string{listen}))
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	return &fence{addr: srv.Addrs()[0], handler: f.handler, server: srv, registry: f.registry}
}

func TestIPv4MappedClientMatchesIPv4Ranges(t *testing.T) {
	up := startUpstream(t, nil)
	// A dual-stack wildcard socket sees IPv4 clients as ::ffff:a.b.c.d.
	f := startFenceOn(t, "[::]:0", up.addr)
	_, port, err := net.SplitHostPort(f.addr)
	require.NoError(t, err)
	r := ask(t, net.JoinHostPort("127.0.0.1", port), "127.0.0.1", "udp", question("tiktok.com.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	r = ask(t, net.JoinHostPort("127.0.0.1", port), "127.0.0.20", "udp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeRefused, r.Rcode)
}

func TestPolicySelection(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	tests := []struct {
		name      string
		from      string
		qname     string
		wantRcode int
		wantEDE   uint16
		wantUp    bool // the query reached the upstream
	}{
		{name: "government device, blocked name", from: "127.0.0.2", qname: "tiktok.com.", wantRcode: dns.RcodeNameError, wantEDE: dns.ExtendedErrorCodeBlocked},
		{name: "government device, look-alike", from: "127.0.0.1", qname: "nottiktok.com.", wantRcode: dns.RcodeSuccess, wantUp: true},
		{name: "government device, suffix look-alike", from: "127.0.0.1", qname: "tiktok.com.example.org.", wantRcode: dns.RcodeSuccess, wantUp: true},
		{name: "government device, other tld", from: "127.0.0.1", qname: "tiktok.co.", wantRcode: dns.RcodeSuccess, wantUp: true},
		{name: "government device, allowed name beats block", from: "127.0.0.1", qname: "x.ads.tiktok.com.", wantRcode: dns.RcodeSuccess, wantUp: true},
		{name: "press office exemption is narrower", from: "127.0.0.3", qname: "www.tiktok.com.", wantRcode: dns.RcodeSuccess, wantUp: true},
		{name: "no policy, forwarded untouched", from: "127.0.0.8", qname: "m.tiktok.com.", wantRcode: dns.RcodeSuccess, wantUp: true},
		{name: "not allowed", from: "127.0.0.20", qname: "example.org.", wantRcode: dns.RcodeRefused, wantEDE: dns.ExtendedErrorCodeProhibited},
		{name: "not allowed, blocked name", from: "127.0.0.20", qname: "tiktok.com.", wantRcode: dns.RcodeRefused, wantEDE: dns.ExtendedErrorCodeProhibited},
		{name: "refused action", from: "127.0.0.6", qname: "tiktok.com.", wantRcode: dns.RcodeRefused, wantEDE: dns.ExtendedErrorCodeBlocked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := up.count.Load()
			r := ask(t, f.addr, tc.from, "udp", question(tc.qname, dns.TypeA, true))
			assert.Equal(t, tc.wantRcode, r.Rcode, dns.RcodeToString[r.Rcode])
			if tc.wantEDE != 0 {
				e := ede(r)
				require.NotNil(t, e)
				assert.Equal(t, tc.wantEDE, e.InfoCode)
			}
			if tc.wantUp {
				assert.Equal(t, before+1, up.count.Load())
				require.Len(t, r.Answer, 1)
				assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			} else {
				assert.Equal(t, before, up.count.Load(), "must not reach the upstream")
			}
		})
	}
	t.Run("refused without edns has no OPT", func(t *testing.T) {
		r := ask(t, f.addr, "127.0.0.20", "udp", question("example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeRefused, r.Rcode)
		assert.Nil(t, r.IsEdns0())
		assert.True(t, r.RecursionAvailable)
	})
}

func TestNullAction(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	tests := []struct {
		qtype    uint16
		wantData string
	}{
		{qtype: dns.TypeA, wantData: "0.0.0.0"},
		{qtype: dns.TypeAAAA, wantData: "::"},
		{qtype: dns.TypeMX},
		{qtype: dns.TypeHTTPS},
	}
	for _, tc := range tests {
		t.Run(dns.TypeToString[tc.qtype], func(t *testing.T) {
			r := ask(t, f.addr, "127.0.0.7", "udp", question("www.tiktok.com.", tc.qtype, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			require.NotNil(t, ede(r))
			if tc.wantData == "" {
				assert.Empty(t, r.Answer, "NODATA")
				require.Len(t, r.Ns, 1)
				assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype)
				return
			}
			require.Len(t, r.Answer, 1)
			assert.Equal(t, uint32(60), r.Answer[0].Header().Ttl)
			assert.Equal(t, "www.tiktok.com.", r.Answer[0].Header().Name)
			switch rr := r.Answer[0].(type) {
			case *dns.A:
				assert.Equal(t, tc.wantData, rr.A.String())
			case *dns.AAAA:
				assert.Equal(t, tc.wantData, rr.AAAA.String())
			}
		})
	}
	assert.Zero(t, up.count.Load())
}

// TestNullActionOnCloakedAnswer: an answer blocked for the CNAME it
// holds (CNAME cloaking) takes the policy's null action too, A 0.0.0.0
// and AAAA :: owned by the question name, NODATA for other types (Pi-hole
// FTL took NXDOMAIN there whatever its blocking mode, pi-hole/FTL#990),
// fresh and from the cache; the refusing policy's answer is REFUSED.
func TestNullActionOnCloakedAnswer(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, mustRR("cloaked.example. 300 IN CNAME edge.tiktokcdn.com."))
		switch r.Question[0].Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, mustRR("edge.tiktokcdn.com. 300 IN A 192.0.2.7"))
		case dns.TypeAAAA:
			m.Answer = append(m.Answer, mustRR("edge.tiktokcdn.com. 300 IN AAAA 2001:db8::7"))
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		qtype    uint16
		wantData string
	}{{dns.TypeA, "0.0.0.0"}, {dns.TypeAAAA, "::"}, {dns.TypeTXT, ""}} {
		for i := range 2 { // fresh, then from the cache
			what := fmt.Sprintf("%s #%d", dns.TypeToString[tc.qtype], i)
			r := ask(t, f.addr, "127.0.0.7", "udp", question("cloaked.example.", tc.qtype, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, what)
			require.NotNil(t, ede(r), what)
			assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode, what)
			if tc.wantData == "" {
				assert.Empty(t, r.Answer, what)
				require.Len(t, r.Ns, 1, what)
				assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype, what)
				continue
			}
			require.Len(t, r.Answer, 1, what)
			assert.Equal(t, "cloaked.example.", r.Answer[0].Header().Name, what)
			switch rr := r.Answer[0].(type) {
			case *dns.A:
				assert.Equal(t, tc.wantData, rr.A.String(), what)
			case *dns.AAAA:
				assert.Equal(t, tc.wantData, rr.AAAA.String(), what)
			}
		}
		r := ask(t, f.addr, "127.0.0.6", "udp", question("cloaked.example.", tc.qtype, true))
		assert.Equal(t, dns.RcodeRefused, r.Rcode, dns.TypeToString[tc.qtype])
	}
}

func TestCNAMECloaking(t *testing.T) {
	chain := map[string][]string{
		"cloaked.example.":    {"cloaked.example. 300 IN CNAME edge.tiktokv.com.edgekey.net.", "edge.tiktokv.com.edgekey.net. 20 IN A 192.0.2.7"},
		"deep.example.":       {"deep.example. 300 IN CNAME hop.example.", "hop.example. 300 IN CNAME p16.tiktokcdn.com.", "p16.tiktokcdn.com. 60 IN A 192.0.2.8"},
		"dname.example.":      {"example. 300 IN DNAME tiktok.com.", "dname.example. 300 IN CNAME dname.tiktok.com.", "dname.tiktok.com. 60 IN A 192.0.2.9"},
		"allowedhop.example.": {"allowedhop.example. 300 IN CNAME allowed-chain.tiktokcdn.com.", "allowed-chain.tiktokcdn.com. 60 IN A 192.0.2.10"},
		"clean.example.":      {"clean.example. 300 IN CNAME cdn.example.net.", "cdn.example.net. 60 IN A 192.0.2.11"},
		"ads.tiktok.com.":     {"ads.tiktok.com. 300 IN CNAME ads.tiktokcdn.com.", "ads.tiktokcdn.com. 60 IN A 192.0.2.12"},
	}
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, s := range chain[strings.ToLower(r.Question[0].Name)] {
			m.Answer = append(m.Answer, mustRR("%s", s))
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	tests := []struct {
		name      string
		from      string
		qname     string
		wantBlock bool
	}{
		{name: "cname into a label-scoped shared-zone name", qname: "cloaked.example.", wantBlock: true},
		{name: "blocked name deep in the chain", qname: "deep.example.", wantBlock: true},
		{name: "dname into a blocked zone", qname: "dname.example.", wantBlock: true},
		{name: "allowed name in the chain is not blocked", qname: "allowedhop.example."},
		{name: "clean chain", qname: "clean.example."},
		{name: "allowed question name exempts its chain", qname: "ads.tiktok.com."},
		{name: "exempt client gets the chain", from: "127.0.0.3", qname: "cloaked.example."},
		{name: "client in no policy gets the chain", from: "127.0.0.8", qname: "deep.example."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(t, f.addr, tc.from, "udp", question(tc.qname, dns.TypeA, true))
			if !tc.wantBlock {
				assert.Equal(t, dns.RcodeSuccess, r.Rcode)
				assert.Len(t, r.Answer, len(chain[tc.qname]))
				return
			}
			assert.Equal(t, dns.RcodeNameError, r.Rcode)
			assert.Empty(t, r.Answer, "no part of the cloaked answer leaks")
			require.Len(t, r.Ns, 1)
			assert.Equal(t, tc.qname, r.Ns[0].Header().Name, "SOA at the question name, inside its bailiwick")
			e := ede(r)
			require.NotNil(t, e)
			assert.Equal(t, dns.ExtendedErrorCodeBlocked, e.InfoCode)
		})
	}
}

func TestForwarding(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)

	t.Run("fresh id upstream, client id restored, question and bits kept", func(t *testing.T) {
		ids := map[uint16]bool{}
		for i := 0; i < 3; i++ {
			req := question("Example.ORG.", dns.TypeA, false)
			req.Id = 1234
			req.CheckingDisabled = true
			r := ask(t, f.addr, "", "udp", req)
			assert.Equal(t, uint16(1234), r.Id)
			assert.Equal(t, req.Question, r.Question)
			assert.True(t, r.RecursionAvailable)
			assert.Nil(t, r.IsEdns0(), "no OPT to a client that sent none")
			seen := up.queries()
			last := seen[len(seen)-1].msg
			ids[last.Id] = true
			assert.True(t, last.CheckingDisabled)
			assert.True(t, last.RecursionDesired)
			opt := last.IsEdns0()
			require.NotNil(t, opt, "upstream query carries EDNS")
			assert.Equal(t, uint16(1232), opt.UDPSize())
		}
		assert.False(t, len(ids) == 1 && ids[1234], "upstream IDs are fresh")
	})

	t.Run("client options stay on the client's hop", func(t *testing.T) {
		req := question("example.org.", dns.TypeA, true)
		opt := req.IsEdns0()
		opt.SetDo()
		opt.Option = append(opt.Option,
			&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.ParseIP("198.51.100.0").To4()},
			&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		r := ask(t, f.addr, "", "udp", req)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.NotNil(t, r.IsEdns0())
		assert.True(t, r.IsEdns0().Do())
		seen := up.queries()
		last := seen[len(seen)-1].msg.IsEdns0()
		require.NotNil(t, last)
		assert.True(t, last.Do(), "DO bit forwarded")
		assert.Empty(t, last.Option, "no ECS or cookie upstream")
	})

	t.Run("tcp query goes upstream over tcp", func(t *testing.T) {
		r := ask(t, f.addr, "", "tcp", question("tcp.example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		seen := up.queries()
		assert.True(t, seen[len(seen)-1].tcp)
	})
}

func TestTruncatedUpstreamRetriedOverTCP(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Answer = nil
			m.Truncated = true
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	r := ask(t, f.addr, "", "udp", question("big.example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.False(t, r.Truncated)
	require.Len(t, r.Answer, 1)
	seen := up.queries()
	require.Len(t, seen, 2)
	assert.False(t, seen[0].tcp)
	assert.True(t, seen[1].tcp)
}

func TestTruncationToClientSize(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		n := 60
		if strings.HasPrefix(r.Question[0].Name, "more") {
			n = 100 // 1,645 octets with an OPT: over the 1,232 dnsfence advertises
		}
		for i := 0; i < n; i++ {
			m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.%d", r.Question[0].Name, i))
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	tests := []struct {
		name      string
		qname     string // "": many.example.org., 60 A records
		edns      uint16 // 0: no EDNS
		network   string
		wantTC    bool
		wantMax   int
		wantCount int
	}{
		{name: "no edns is 512", network: "udp", wantTC: true, wantMax: 512},
		{name: "edns 1232", edns: 1232, network: "udp", wantTC: false, wantMax: 1232, wantCount: 60},
		{name: "edns below 512 means 512", edns: 100, network: "udp", wantTC: true, wantMax: 512},
		{name: "edns above 1232 means 1232", qname: "more.example.org.", edns: 4096, network: "udp", wantTC: true, wantMax: 1232},
		// A name with a '+' takes the message path (readWireQuery): the
		// same sizes.
		{name: "message path, no edns is 512", qname: "many+m.example.org.", network: "udp", wantTC: true, wantMax: 512},
		{name: "message path, edns below 512 means 512", qname: "many+m.example.org.", edns: 100, network: "udp", wantTC: true, wantMax: 512},
		{name: "message path, edns above 1232 means 1232", qname: "more+m.example.org.", edns: 4096, network: "udp", wantTC: true, wantMax: 1232},
		{name: "tcp is never truncated", network: "tcp", wantTC: false, wantMax: 65535, wantCount: 60},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			qname := tc.qname
			if qname == "" {
				qname = "many.example.org."
			}
			req := question(qname, dns.TypeA, false)
			if tc.edns > 0 {
				req.SetEdns0(tc.edns, false)
			}
			r := ask(t, f.addr, "", tc.network, req)
			assert.Equal(t, tc.wantTC, r.Truncated)
			r.Compress = true // as it came over the wire
			packed, err := r.Pack()
			require.NoError(t, err)
			assert.LessOrEqual(t, len(packed), tc.wantMax)
			if tc.wantTC {
				// Fitted to the size, not below it: one more A record
				// (16 octets, its owner compressed) would not fit.
				assert.Greater(t, len(packed), tc.wantMax-16, "the answer fills the client's size")
			}
			if tc.wantCount > 0 {
				assert.Len(t, r.Answer, tc.wantCount)
			}
		})
	}
}

// TestTruncationLeavesExtraWithoutTC: an answer whose answer section fits
// the client's size and whose additional records do not goes out without
// those records and without TC (RFC 2181 §9: TC is not set merely for
// lack of room for extra information; the client would ask again over
// TCP for nothing), cold and cached, without EDNS and with a 512-octet
// buffer; an authority section cut short sets TC.
func TestTruncationLeavesExtraWithoutTC(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		name := r.Question[0].Name
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.example.org.", name)}
		for i := range 12 {
			rr := mustRR(`mx.example.org. 300 IN TXT "%s"`, strings.Repeat(string(rune('a'+i)), 40))
			if strings.HasPrefix(name, "authority.") {
				m.Ns = append(m.Ns, rr)
			} else {
				m.Extra = append(m.Extra, rr)
			}
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name   string
		qname  string
		edns   bool
		wantTC bool
	}{
		{name: "additional, no edns", qname: "additional.example.org.", wantTC: false},
		{name: "additional, edns 512", qname: "additional.example.net.", edns: true, wantTC: false},
		{name: "authority, no edns", qname: "authority.example.org.", wantTC: true},
		{name: "authority, edns 512", qname: "authority.example.net.", edns: true, wantTC: true},
	} {
		for _, pass := range []string{"cold", "cached"} {
			t.Run(tc.name+" "+pass, func(t *testing.T) {
				r := askMX512(t, f.addr, tc.qname, tc.edns, false)
				assert.Equal(t, dns.RcodeSuccess, r.Rcode)
				require.Len(t, r.Answer, 1, "the answer section fits")
				assert.Equal(t, tc.wantTC, r.Truncated)
				assert.Equal(t, tc.edns, r.IsEdns0() != nil, "the OPT stays when records go (RFC 6891 §7)")
			})
		}
	}
}

// TestTruncationLeavesAuthorityNSWithoutTC: the NS RRset an upstream puts
// in the authority section of a positive answer is extra information, not
// part of the answer (RFC 1034 §6.2.1's example answer has an empty
// authority section), so leaving it out for lack of room sets no TC (RFC
// 2181 §9: TC only when an RRset required as part of the response could not
// be included; NSD, Unbound and dnsdist answer so), cold and cached, without
// EDNS and with a 512-octet buffer. With no answer records the authority
// section is the answer's substance (a referral's NS, a negative answer's
// SOA), and cutting it sets TC, as does cutting any other authority record
// (an NSEC proving a wildcard answer, RFC 4035 §3.1.3.3).
func TestTruncationLeavesAuthorityNSWithoutTC(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		name := r.Question[0].Name
		m.Answer = nil
		if !strings.HasPrefix(name, "noanswer.") {
			m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.example.org.", name)}
		}
		for i := range 12 {
			m.Ns = append(m.Ns, mustRR("example.org. 300 IN NS %s.ns.example.org.", strings.Repeat(string(rune('a'+i)), 40)))
		}
		if strings.HasPrefix(name, "signed.") {
			m.Ns = append(m.Ns, mustRR("example.org. 300 IN RRSIG NS 13 2 300 20300101000000 20200101000000 12345 example.org. "+
				"dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdA=="))
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name     string
		qname    string
		edns, do bool
		answers  int
		wantTC   bool
	}{
		{name: "NS, no edns", qname: "ns.example.org.", answers: 1, wantTC: false},
		{name: "NS, edns 512", qname: "ns.example.net.", edns: true, answers: 1, wantTC: false},
		{name: "NS and its RRSIG, edns 512 DO", qname: "signed.example.org.", edns: true, do: true, answers: 1, wantTC: false},
		{name: "no answer, NS, no edns", qname: "noanswer.example.org.", answers: 0, wantTC: true},
	} {
		for _, pass := range []string{"cold", "cached"} {
			t.Run(tc.name+" "+pass, func(t *testing.T) {
				r := askMX512(t, f.addr, tc.qname, tc.edns, tc.do)
				assert.Equal(t, dns.RcodeSuccess, r.Rcode)
				require.Len(t, r.Answer, tc.answers, "the answer section fits")
				assert.Equal(t, tc.wantTC, r.Truncated)
				if !tc.wantTC {
					assert.Empty(t, r.Ns, "with TC clear an RRset that does not fit is left out whole (RFC 2181 §9)")
				}
				assert.Equal(t, tc.edns, r.IsEdns0() != nil, "the OPT stays when records go (RFC 6891 §7)")
			})
		}
	}
}

// TestTruncationLeavesAdditionalRRsetWhole: an additional RRset that does
// not fit whole in the client's size is left out whole, with TC clear (RFC
// 2181 §9: "the entire RRSet that will not fit in the response should be
// omitted, and the reply sent as is, with the TC bit clear"; NSD and
// dnsdist answer so), while the RRsets before it that fit stay, cold and
// cached, without EDNS and with a 512-octet buffer. A part of an RRset
// with TC clear would be taken for all of it.
func TestTruncationLeavesAdditionalRRsetWhole(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.example.org.", r.Question[0].Name)}
		m.Extra = append([]dns.RR{mustRR("glue.example.org. 300 IN A 192.0.2.99")}, m.Extra...)
		for i := range 30 {
			m.Extra = append(m.Extra, mustRR("mx.example.org. 300 IN A 192.0.2.%d", i+1))
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, edns := range []bool{false, true} {
		for _, pass := range []string{"cold", "cached"} {
			t.Run(fmt.Sprintf("edns %v %s", edns, pass), func(t *testing.T) {
				r := askMX512(t, f.addr, fmt.Sprintf("whole-%v.example.org.", edns), edns, false)
				require.Len(t, r.Answer, 1, "the answer section fits")
				assert.False(t, r.Truncated, "additional records left out set no TC")
				var extra []string
				for _, rr := range r.Extra {
					if rr.Header().Rrtype != dns.TypeOPT {
						extra = append(extra, rr.Header().Name)
					}
				}
				assert.Equal(t, []string{"glue.example.org."}, extra, "the RRset that fits stays, the one that does not goes whole")
				assert.Equal(t, edns, r.IsEdns0() != nil, "the OPT stays when records go (RFC 6891 §7)")
			})
		}
	}
}

func TestUpstreamFailover(t *testing.T) {
	up := startUpstream(t, nil)

	t.Run("dead first upstream", func(t *testing.T) {
		f := startFence(t, testConfig, testFiles, silentUpstream(t), up.addr)
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1)
	})

	t.Run("refusing port first", func(t *testing.T) {
		f := startFence(t, testConfig, testFiles, closedPort(t), up.addr)
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	})

	t.Run("all silent is SERVFAIL with EDE 22", func(t *testing.T) {
		f := startFence(t, testConfig, testFiles, silentUpstream(t), silentUpstream(t))
		start := time.Now()
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
		assert.True(t, r.RecursionAvailable)
		e := ede(r)
		require.NotNil(t, e)
		assert.Equal(t, dns.ExtendedErrorCodeNoReachableAuthority, e.InfoCode)
		// Two tries of 300 ms; generous bound for a busy machine.
		assert.Less(t, time.Since(start), 3*time.Second)
	})

	t.Run("all refusing is SERVFAIL with EDE 23", func(t *testing.T) {
		f := startFence(t, testConfig, testFiles, closedPort(t))
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
		assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
		e := ede(r)
		require.NotNil(t, e)
		assert.Equal(t, dns.ExtendedErrorCodeNetworkError, e.InfoCode)
	})

	t.Run("servfail without edns has no OPT", func(t *testing.T) {
		f := startFence(t, testConfig, testFiles, closedPort(t))
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
		assert.Nil(t, r.IsEdns0())
	})

	t.Run("answer for another question is discarded", func(t *testing.T) {
		liar := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			m := defaultAnswer(w, r)
			m.Question[0].Name = "other.example."
			return m
		})
		f := startFence(t, testConfig, testFiles, liar.addr, up.addr)
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1)
		assert.Equal(t, "example.org.", r.Answer[0].Header().Name)
	})
}

func TestMalformedRequests(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)

	send := func(t *testing.T, pkt []byte) []byte {
		c, err := net.Dial("udp", f.addr)
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write(pkt)
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return nil
		}
		return buf[:n]
	}
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}

	rejected := []struct {
		name      string
		msg       func() *dns.Msg
		wantRcode int
	}{
		{name: "qdcount 0 is FORMERR", wantRcode: dns.RcodeFormatError, msg: func() *dns.Msg {
			m := new(dns.Msg)
			m.Id = 7
			return m
		}},
		{name: "qdcount 2 is FORMERR", wantRcode: dns.RcodeFormatError, msg: func() *dns.Msg {
			m := question("a.example.", dns.TypeA, false)
			m.Question = append(m.Question, dns.Question{Name: "b.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			return m
		}},
		{name: "notify is NOTIMP", wantRcode: dns.RcodeNotImplemented, msg: func() *dns.Msg {
			m := question("example.org.", dns.TypeSOA, false)
			m.Opcode = dns.OpcodeNotify
			return m
		}},
		{name: "update is NOTIMP", wantRcode: dns.RcodeNotImplemented, msg: func() *dns.Msg {
			m := question("example.org.", dns.TypeSOA, false)
			m.Opcode = dns.OpcodeUpdate
			return m
		}},
	}
	for _, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.msg()
			resp := send(t, pack(m))
			require.NotNil(t, resp)
			r := new(dns.Msg)
			require.NoError(t, r.Unpack(resp))
			assert.Equal(t, tc.wantRcode, r.Rcode)
			assert.Equal(t, m.Id, r.Id)
			assert.Equal(t, m.Opcode, r.Opcode, "opcode echoed")
		})
	}
	t.Run("unparseable header is dropped", func(t *testing.T) {
		assert.Nil(t, send(t, []byte{1, 2, 3, 4, 5}))
	})
	t.Run("a response is dropped", func(t *testing.T) {
		m := question("example.org.", dns.TypeA, false)
		m.Response = true
		assert.Nil(t, send(t, pack(m)))
	})
	t.Run("truncated question is FORMERR", func(t *testing.T) {
		b := pack(question("example.org.", dns.TypeA, false))
		resp := send(t, b[:len(b)-3])
		require.NotNil(t, resp)
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(resp))
		assert.Equal(t, dns.RcodeFormatError, r.Rcode)
	})
	t.Run("opt as qtype is FORMERR", func(t *testing.T) {
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeOPT, false))
		assert.Equal(t, dns.RcodeFormatError, r.Rcode)
	})
	t.Run("zone transfer is refused", func(t *testing.T) {
		r := ask(t, f.addr, "", "tcp", question("example.org.", dns.TypeAXFR, false))
		assert.Equal(t, dns.RcodeRefused, r.Rcode)
	})
	assert.Zero(t, up.count.Load())

	t.Run("still serving", func(t *testing.T) {
		r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	})

	t.Run("rejects are counted", func(t *testing.T) {
		srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
		defer srv.Close()
		_, body := get(t, srv.URL+"/metrics")
		for _, want := range []string{
			`dnsfence_queries_total{result="formerr",transport="udp"} 4`, // qdcount 0 and 2, truncated question, OPT qtype
			`dnsfence_queries_total{result="notimp",transport="udp"} 2`,
			`dnsfence_queries_total{result="dropped",transport="udp"} 2`, // short header, a response
			`dnsfence_queries_total{result="refused",transport="tcp"} 1`,
			`dnsfence_queries_total{result="forwarded",transport="udp"} 1`,
		} {
			assert.Contains(t, body, want+"\n")
		}
	})
}

// panicList is a List whose Match panics, standing in for any bug below
// the handler.
type panicList struct{}

func (panicList) Match(string) (blocklist.Entry, bool) { panic("boom") }
func (panicList) File() string                         { return "panic.txt" }

func TestPanicBecomesServfail(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	snap, err := BuildSnapshot(f.handler.Snapshot().Config, nil)
	require.NoError(t, err)
	require.NoError(t, ConnectUpstreams(nil, snap, f.handler.Snapshot(), nil))
	p := snap.Policies[0]
	p.Block = append([]List{panicList{}}, p.Block...)
	f.handler.Store(snap)

	r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
	r = ask(t, f.addr, "", "tcp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
	// The process serves on: a client outside the policy is answered.
	r = ask(t, f.addr, "127.0.0.8", "udp", question("example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
}

func TestShutdownFinishesInFlightQueries(t *testing.T) {
	f, up, release := startHeldFence(t, "")

	type result struct {
		r   *dns.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := exchange(f.addr, "", "udp", question("slow.example.org.", dns.TypeA, false))
		done <- result{r, err}
	}()
	require.Eventually(t, func() bool { return up.count.Load() == 1 }, 5*time.Second, 5*time.Millisecond)

	stopped := make(chan error, 1)
	go func() { stopped <- f.server.Shutdown(t.Context()) }()
	close(release)
	res := <-done
	require.NoError(t, res.err)
	assert.Equal(t, dns.RcodeSuccess, res.r.Rcode)
	require.NoError(t, <-stopped)

	_, err := exchange(f.addr, "", "tcp", question("after.example.org.", dns.TypeA, false))
	assert.Error(t, err, "no longer listening")
}

func TestQueryLogModes(t *testing.T) {
	up := startUpstream(t, nil)
	tests := []struct {
		mode        string
		wantResults []string
	}{
		{mode: "blocked", wantResults: []string{ResultBlocked}},
		{mode: "all", wantResults: []string{ResultBlocked, ResultForwarded, ResultRefused}},
		{mode: "none"},
	}
	for _, tc := range tests {
		t.Run(tc.mode, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: "+tc.mode+"}", 1)
			f := startFenceLog(t, zap.New(core), cfg, testFiles, up.addr)
			ask(t, f.addr, "", "udp", question("www.tiktok.com.", dns.TypeHTTPS, false))
			ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, false))
			ask(t, f.addr, "127.0.0.20", "udp", question("example.org.", dns.TypeA, false))
			var results []string
			for _, e := range logs.FilterMessage("query").All() {
				results = append(results, e.ContextMap()[logResult].(string))
			}
			assert.Equal(t, tc.wantResults, results)
			if tc.mode == "none" {
				return
			}
			audit := logs.FilterMessage("query").All()[0].ContextMap()
			assert.Equal(t, "127.0.0.1", audit[logClient])
			assert.Equal(t, "www.tiktok.com.", audit[logQName])
			assert.Equal(t, "HTTPS", audit[logQType])
			assert.Equal(t, "government-devices", audit[logPolicy])
			assert.Equal(t, "127.0.0.0/30", audit[logRange])
			assert.Equal(t, IdentityTransport, audit[logIdentity], "which source gave the identity")
			assert.Equal(t, filepath.Join(f.dir, "tiktok.txt"), audit[logList])
			assert.EqualValues(t, 2, audit[logListLine])
			assert.Equal(t, "tiktok.com", audit[logEntry])
			assert.Len(t, audit[logListHash], 64)
		})
	}
}

// TestPackedBlockedAnswerMatchesMessage checks the hand-packed blocked
// answer against the message blockedReply builds, field by field.
func TestPackedBlockedAnswerMatchesMessage(t *testing.T) {
	l, err := blocklist.Parse("lists/tiktok.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	for _, action := range []config.Action{config.ActionNXDomain, config.ActionRefused} {
		p := &Policy{Name: "gov", Action: action, Block: []List{l}}
		for _, tc := range []struct {
			name        string
			qname       string
			qtype       uint16
			edns, do    bool
			rd, cd      bool
			chain       bool
			decidedName string
		}{
			{name: "plain", qname: "www.tiktok.com.", qtype: dns.TypeA, rd: true},
			{name: "edns do cd", qname: "WWW.TikTok.COM.", qtype: dns.TypeHTTPS, edns: true, do: true, cd: true},
			{name: "no rd", qname: "tiktok.com.", qtype: dns.TypeAAAA, edns: true},
			{name: "escaped", qname: `a\.b.tiktok.com.`, qtype: dns.TypeTXT, edns: true},
			{name: "chain", qname: "Cloaked.Example.", qtype: dns.TypeA, edns: true, chain: true, decidedName: "x.tiktok.com."},
			{name: "label of 63 escaped octets", qname: strings.Repeat(`\001`, 63) + ".tiktok.com.", qtype: dns.TypeA, edns: true},
			{name: "name of 255 octets", qname: strings.Repeat(`\001`, 63) + "." + strings.Repeat(`\255`, 63) + "." + strings.Repeat(`\000`, 63) + "." + strings.Repeat("a", 50) + ".tiktok.com.", qtype: dns.TypeA, edns: true},
			{name: "escaped entry", qname: `www.\084\105KTOK.com.`, qtype: dns.TypeA},
			{name: "chain to an escaped name", qname: strings.Repeat(`\001`, 63) + ".example.", qtype: dns.TypeA, chain: true, decidedName: `\001.\116iktok.com.`},
		} {
			t.Run(string(action)+"/"+tc.name, func(t *testing.T) {
				req := question(tc.qname, tc.qtype, tc.edns)
				req.Id = 0xBEEF
				req.RecursionDesired, req.CheckingDisabled = tc.rd, tc.cd
				if tc.do {
					req.IsEdns0().SetDo()
				}
				name := tc.qname
				if tc.decidedName != "" {
					name = tc.decidedName
				}
				d := p.Decide(name)
				require.True(t, d.Blocked)
				want := blockedReply(req, p, d, 60, 12345, tc.chain)
				rcode := dns.RcodeNameError
				if action == config.ActionRefused {
					rcode = dns.RcodeRefused
				}
				b, ok := appendBlocked(nil, req, rcode, soaOwner(tc.qname, d, tc.chain), 60, 12345, p.BlockedText(l.File()), 512)
				require.True(t, ok)
				got := new(dns.Msg)
				require.NoError(t, got.Unpack(b))
				wantWire, err := want.Pack()
				require.NoError(t, err)
				wantMsg := new(dns.Msg)
				require.NoError(t, wantMsg.Unpack(wantWire))
				assert.Equal(t, wantMsg.String(), got.String())
				assert.Equal(t, wantMsg.MsgHdr, got.MsgHdr)
			})
		}
	}
}

// TestSOAOwner: the owner of a blocked answer's SOA is the matched entry,
// lowercase and fully qualified, taken from the question without a copy
// when the question is lowercase; for a chain block, the question name.
func TestSOAOwner(t *testing.T) {
	l, err := blocklist.Parse("lists/tiktok.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	p := &Policy{Name: "gov", Action: config.ActionNXDomain, Block: []List{l}}
	for _, tc := range []struct {
		qname, decided string
		chain          bool
		want           string
	}{
		{qname: "www.tiktok.com.", decided: "www.tiktok.com.", want: "tiktok.com."},
		{qname: "tiktok.com.", decided: "tiktok.com.", want: "tiktok.com."},
		{qname: "WWW.TikTok.COM.", decided: "WWW.TikTok.COM.", want: "tiktok.com."},
		{qname: "Cloaked.Example.", decided: "x.tiktok.com.", chain: true, want: "cloaked.example."},
		{qname: `www.\116iktok.com.`, decided: `www.\116iktok.com.`, want: "tiktok.com."},
		{qname: `www.\084IKTOK.com.`, decided: `www.\084IKTOK.com.`, want: "tiktok.com."},
		{qname: strings.Repeat(`\001`, 63) + ".TikTok.com.", decided: strings.Repeat(`\001`, 63) + ".TikTok.com.", want: "tiktok.com."},
		{qname: strings.Repeat(`\001`, 63) + ".Example.", decided: `\116iktok.com.`, chain: true, want: strings.Repeat(`\001`, 63) + ".example."},
	} {
		d := p.Decide(tc.decided)
		require.True(t, d.Blocked, tc.decided)
		assert.Equal(t, tc.want, soaOwner(tc.qname, d, tc.chain), tc.qname)
	}
	d := p.Decide("www.tiktok.com.")
	assert.Zero(t, testing.AllocsPerRun(100, func() { soaOwner("www.tiktok.com.", d, false) }))
}

// TestAppendOwnerAsCompressName: the SOA owner found as the question's
// suffix without packing it is octet for octet what packing it and
// compressing it against the question gave: a pointer where the question
// spells the owner exactly, the packed name where it does not (another
// case, not on a label boundary, escapes, the root).
func TestAppendOwnerAsCompressName(t *testing.T) {
	cases := [][2]string{
		{"www.tiktok.com.", "tiktok.com."},
		{"tiktok.com.", "tiktok.com."},
		{"WWW.TikTok.COM.", "tiktok.com."},
		{"www.tiktok.COM.", "tiktok.com."},
		{"xtiktok.com.", "tiktok.com."},
		{"tiktok.com.", "www.tiktok.com."},
		{"a.b.", "b."},
		{"a.b.", "."},
		{"example.", "tiktok.com."},
		{`a\.b.tiktok.com.`, "tiktok.com."},
		{`www.\116iktok.com.`, `\116iktok.com.`},
		{`www.tiktok.com.`, `\116iktok.com.`},
		{`a.b\.c.`, `b\.c.`},
		{"abc.def.", "abcxdef."}, // as long as a suffix, another name
		{`a.b\.c.`, "b.c."},      // one label with a dot octet, not two
		{`x.b\.c.d.`, "b.c.d."},
		{`\..`, ".."},
		{"x.ab.c.", "ab-c."},
		{strings.Repeat(`\001`, 63) + ".tiktok.com.", "tiktok.com."},
		{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) + ".", strings.Repeat("d", 61) + "."},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		labels := make([]string, 1+rng.IntN(5))
		for i := range labels {
			l := make([]byte, 1+rng.IntN(6))
			for j := range l {
				l[j] = "abcXYZ-"[rng.IntN(7)]
			}
			labels[i] = string(l)
		}
		qname := strings.Join(labels, ".") + "."
		owner := strings.Join(labels[rng.IntN(len(labels)):], ".") + "."
		if rng.IntN(2) == 0 {
			owner = strings.ToLower(owner)
		}
		cases = append(cases, [2]string{qname, owner})
	}
	header := make([]byte, 12)
	for _, c := range cases {
		qname, owner := c[0], c[1]
		b, err := appendName(bytes.Clone(header), qname)
		require.NoError(t, err, qname)
		qend := len(b)
		want, wantErr := appendName(bytes.Clone(b), owner)
		got, err := appendOwner(bytes.Clone(b), owner, len(header), qend)
		if wantErr != nil { // an owner that does not pack is no pointer either
			require.Error(t, err, "question %s, owner %s", qname, owner)
			continue
		}
		require.NoError(t, err)
		want = compressName(want, qend, len(header), qend)
		require.Equal(t, want, got, "question %s, owner %s", qname, owner)
	}
}

// TestMetaQTypesAreFormerr: a question for a meta-TYPE no query asks for
// (0, OPT, TSIG, TKEY, MAILA, MAILB, and 128-248, RFC 6895 §3.1) gets
// FORMERR from dnsfence itself, as Unbound and NSD answer it, on UDP (the
// wire path) and TCP, and is never forwarded: an upstream's FORMERR to it
// would count against the upstream's health, so that any client could
// have the upstreams marked down. ANY and ordinary types are forwarded.
func TestMetaQTypesAreFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		for _, qtype := range []uint16{0, dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeMAILA, dns.TypeMAILB, 128, 200, 248} {
			r := ask(t, f.addr, "127.0.0.9", network, question("example.org.", qtype, true))
			assert.Equal(t, dns.RcodeFormatError, r.Rcode, "%s: type %d", network, qtype)
		}
		assert.Zero(t, up.count.Load(), "%s: nothing forwarded", network)
	}
	for _, qtype := range []uint16{dns.TypeANY, dns.TypeA, 127, 65280} {
		r := ask(t, f.addr, "127.0.0.9", "udp", question("example.org.", qtype, true))
		assert.NotEqual(t, dns.RcodeFormatError, r.Rcode, "type %d is forwarded", qtype)
	}
	assert.Equal(t, int64(4), up.count.Load(), "ANY, A, 127 and a private-use type forwarded")
}

// askMX512 asks addr over UDP for qname's MX as a client of 512 octets
// would (with edns, an OPT of buffer size 512 and do; else none), checks
// that the answer fits them, and returns it.
func askMX512(t *testing.T, addr, qname string, edns, do bool) *dns.Msg {
	t.Helper()
	req := question(qname, dns.TypeMX, false)
	if edns {
		req.SetEdns0(512, do)
	}
	b, err := req.Pack()
	require.NoError(t, err)
	raw := rawExchange(t, addr, b)
	assert.LessOrEqual(t, len(raw), 512)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(raw))
	return r
}
