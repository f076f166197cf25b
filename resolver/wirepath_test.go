package resolver

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// messageOnly is a Handler without its wire path: every query is parsed
// by the listener and answered on the message path.
type messageOnly struct{ h *Handler }

func (m messageOnly) ServeInline(w listen.ResponseWriter, req *dns.Msg) func() {
	return m.h.ServeInline(w, req)
}

// wireCounted is a Handler whose wire path counts what it takes.
type wireCounted struct {
	*Handler
	taken atomic.Int64
}

func (w *wireCounted) ServeWire(rw listen.ResponseWriter, b []byte) (func(), bool) {
	resume, handled := w.Handler.ServeWire(rw, b)
	if handled {
		w.taken.Add(1)
	}
	return resume, handled
}

// wirePair is the same configuration served twice, with a cache each: on
// the wire path (wire, which counts the queries it takes) and on the
// message path only (msg).
type wirePair struct {
	wire, msg string
	taken     *atomic.Int64
}

// startWirePair serves text (testConfig's form) twice against upstreams.
func startWirePair(t *testing.T, text string, upstreams ...string) wirePair {
	t.Helper()
	path := writeConfig(t, text, testFiles, upstreams...)
	// One load time for both: a blocked answer's SOA serial is the
	// snapshot's load time in seconds, which two loads may straddle.
	loaded := time.Now()
	serve := func(wrap func(*Handler) listen.Handler) string {
		cfg, err := config.Load(path)
		require.NoError(t, err)
		snap, err := BuildSnapshot(cfg, nil)
		require.NoError(t, err)
		snap.Loaded = loaded // before it is served: read-only from then on
		m := NewMetrics(prometheus.NewRegistry())
		require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
		log := zaptest.NewLogger(t)
		h := NewHandler(log, snap, m)
		var addr string
		srv := listen.New(listen.Config{Handler: wrap(h), Rules: func() listen.Rules { return listenRules{snap: h.Snapshot(), h: h} }, Log: log,
			Sockets: func(socks []listen.UDPSocket) { addr = socks[0].Conn.LocalAddr().String() }})
		require.NoError(t, srv.Start([]string{"127.0.0.1:0"}))
		t.Cleanup(func() {
			_ = srv.Shutdown(t.Context())
			h.Snapshot().Forwarder().Close()
		})
		return addr
	}
	var p wirePair
	p.wire = serve(func(h *Handler) listen.Handler {
		w := &wireCounted{Handler: h}
		p.taken = &w.taken
		return w
	})
	p.msg = serve(func(h *Handler) listen.Handler { return messageOnly{h} })
	return p
}

// askRaw sends the datagram q from the loopback address from to server and
// returns the answer's bytes.
// memoRounds are the times a query is asked in the tests that compare
// the wire path with the message path: a cache miss, a hit, then two
// more, the last of which a loop's answer memo answers (answerMemo) on a
// listener of two UDP sockets (the kernel gives each query to one of them
// by its source port, and each loop keeps its own).
var memoRounds = []string{"miss", "hit", "memo", "memo again"}

func askRaw(t *testing.T, server, from string, q []byte) []byte {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", server)
	require.NoError(t, err)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, raddr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write(q)
	require.NoError(t, err)
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return buf[:n]
}

// ttlsZeroed returns a copy of the message b with every record's TTL (OPT
// aside) zeroed, and the TTLs it had.
func ttlsZeroed(t *testing.T, b []byte) ([]byte, []uint32) {
	t.Helper()
	out := bytes.Clone(b)
	q, ok := dnswire.ReadQuestion(out)
	require.True(t, ok, "the answer has a question")
	var ttls []uint32
	require.True(t, dnswire.Walk(out, q.End, func(r dnswire.Record) bool {
		if r.Type != dnswire.TypeOPT {
			ttls = append(ttls, r.TTL)
			binary.BigEndian.PutUint32(out[r.TTLOff:], 0)
		}
		return true
	}), "dnswire reads the answer")
	return out, ttls
}

// equivalenceAnswer is the upstream of TestWirePathMatchesMessagePath: the
// first label of the question says what it answers. It compresses every
// answer as miekg/dns packs one (dnsfence's message path repacks answers
// so, its wire path passes them on as they came), except "uncompressed",
// which the test upstream sends as it does: without compression when it
// fits.
func equivalenceAnswer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := equivalenceMsg(r)
	if strings.HasPrefix(r.Question[0].Name, "uncompressed.") {
		return m
	}
	m.Compress = true
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
		m.Compress = true // Truncate clears it for an answer that fits
	}
	_ = w.WriteMsg(m)
	return nil
}

func equivalenceMsg(r *dns.Msg) *dns.Msg {
	q := r.Question[0]
	name := q.Name
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	soa := mustRR("eq.example. 900 IN SOA ns.eq.example. host.eq.example. 1 3600 600 86400 120")
	label := strings.ToLower(name[:strings.IndexByte(name, '.')])
	switch label {
	case "cname":
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME b.eq.example.", name), mustRR("b.eq.example. 200 IN CNAME c.eq.example."),
			mustRR("c.eq.example. 100 IN A 192.0.2.7")}
	case "nx":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	case "nodata":
		m.Ns = []dns.RR{soa}
	case "ad":
		m.AuthenticatedData = true
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.8", name)}
	case "big":
		for i := range 60 {
			m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "%s"`, name, strings.Repeat(string(rune('a'+i%26)), 40)))
		}
	case "extra":
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.eq.example.", name)}
		m.Ns = []dns.RR{mustRR("eq.example. 3000 IN NS ns.eq.example.")}
		m.Extra = []dns.RR{mustRR("mx.eq.example. 400 IN A 192.0.2.25"), mustRR("ns.eq.example. 500 IN AAAA 2001:db8::53")}
	case "chain":
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME www.tiktok.com.", name), mustRR("www.tiktok.com. 300 IN A 192.0.2.66")}
	case "https":
		m.Answer = []dns.RR{mustRR("%s 300 IN HTTPS 1 tiktokcdn.com. alpn=h2", name)}
	case "svcb":
		m.Answer = []dns.RR{mustRR("%s 300 IN SVCB 1 tiktokcdn.com. alpn=h2", name)}
	case "lone":
		m.Answer = []dns.RR{mustRR("%s 300 IN CNAME www.tiktok.com.", name)}
	case "dname":
		m.Answer = []dns.RR{mustRR("%s 300 IN DNAME tiktok.com.", name)}
	case "sf":
		m.Rcode = dns.RcodeServerFailure
	case "upper":
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.9", strings.ToUpper(name))}
	default:
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name)}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
		if label == "ede" {
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: "from upstream"}}
		}
	}
	return m
}

// TestWirePathMatchesMessagePath asks the same queries of the wire path
// and of the message path, each with its own cache, twice (a miss, then a
// hit), and requires the same answer to the octet, TTLs aside (which may
// have aged a second apart); and the same query upstream, ID aside.
func TestWirePathMatchesMessagePath(t *testing.T) {
	up := startUpstream(t, equivalenceAnswer)
	text := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 2s\ntrusted_proxies: [\"127.0.0.9/32\"]", 1)
	p := startWirePair(t, text, up.addr)
	cookie := &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}
	ecs := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(198, 51, 100, 0).To4()}
	padding := &dns.EDNS0_PADDING{Padding: make([]byte, 40)}
	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		from     string // 127.0.0.1: a blocking policy; 127.0.0.4: none; 127.0.0.9: a trusted proxy
		edns     bool
		do, ad   bool
		cd       bool
		norecurs bool
		size     uint16 // the EDNS buffer; 0: 1232
		options  []dns.EDNS0
		wantWire bool // the wire path takes it
		rcode    int
		tc       bool
		// encoding: the wire path passes the upstream's encoding on, the
		// message path its own: the same message, other octets.
		encoding bool
	}{
		{name: "a no edns", qname: "a.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", wantWire: true},
		{name: "a edns", qname: "a2.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "a edns do", qname: "a3.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, do: true, wantWire: true},
		{name: "ad upstream, do asked", qname: "ad.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, do: true, wantWire: true},
		{name: "ad upstream, ad asked", qname: "ad.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", ad: true, wantWire: true},
		{name: "ad upstream, neither asked", qname: "ad.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "cd and no rd", qname: "a4.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, cd: true, norecurs: true, wantWire: true},
		{name: "cname chain", qname: "cname.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "cname chain, policy inspects", qname: "cname.eq.example.", qtype: dns.TypeA, from: "127.0.0.1", edns: true, wantWire: true},
		{name: "nxdomain with soa", qname: "nx.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		{name: "nodata with soa", qname: "nodata.eq.example.", qtype: dns.TypeAAAA, from: "127.0.0.1", wantWire: true},
		{name: "additional records", qname: "extra.eq.example.", qtype: dns.TypeMX, from: "127.0.0.1", edns: true, wantWire: true},
		{name: "truncated upstream, tcp", qname: "big.eq.example.", qtype: dns.TypeTXT, from: "127.0.0.4", edns: true, wantWire: true, tc: true},
		{name: "truncated upstream, no edns", qname: "big.eq.example.", qtype: dns.TypeTXT, from: "127.0.0.4", wantWire: true, tc: true},
		{name: "fits a large buffer", qname: "extra2.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, size: 4096, wantWire: true},
		{name: "small buffer", qname: "a5.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, size: 100, wantWire: true},
		{name: "upstream ede", qname: "ede.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "upstream servfail", qname: "sf.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true, rcode: dns.RcodeServerFailure},
		{name: "blocked", qname: "www.tiktok.com.", qtype: dns.TypeA, from: "127.0.0.1", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		{name: "blocked no edns mixed case", qname: "WwW.TikTok.com.", qtype: dns.TypeAAAA, from: "127.0.0.1", wantWire: true, rcode: dns.RcodeNameError},
		{name: "blocked refused action", qname: "tiktok.com.", qtype: dns.TypeA, from: "127.0.0.6", edns: true, wantWire: true, rcode: dns.RcodeRefused},
		{name: "blocked null action", qname: "tiktok.com.", qtype: dns.TypeA, from: "127.0.0.7", edns: true, wantWire: true},
		{name: "blocked by cname chain", qname: "chain.eq.example.", qtype: dns.TypeA, from: "127.0.0.1", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		{name: "chain unblocked for another policy", qname: "chain.eq.example.", qtype: dns.TypeA, from: "127.0.0.3", edns: true, wantWire: true},
		{name: "blocked by https target", qname: "https.eq.example.", qtype: dns.TypeHTTPS, from: "127.0.0.1", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		// An alias owned by the question name, alone in the answer: its
		// target is inspected all the same (aliasType).
		{name: "blocked by svcb target", qname: "svcb.eq.example.", qtype: dns.TypeSVCB, from: "127.0.0.1", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		{name: "blocked by a lone cname", qname: "lone.eq.example.", qtype: dns.TypeA, from: "127.0.0.1", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		{name: "blocked by dname target", qname: "dname.eq.example.", qtype: dns.TypeA, from: "127.0.0.1", edns: true, wantWire: true, rcode: dns.RcodeNameError},
		{name: "lone cname unblocked for another policy", qname: "lone.eq.example.", qtype: dns.TypeA, from: "127.0.0.3", edns: true, wantWire: true},
		{name: "client spells it otherwise", qname: "MiXeD.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "upstream spells it otherwise", qname: "upper.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "cookie stripped", qname: "cookie.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, options: []dns.EDNS0{cookie}, wantWire: true},
		{name: "padding stripped", qname: "pad.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, options: []dns.EDNS0{padding}, wantWire: true},
		{name: "ecs from a client stripped", qname: "ecs.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, options: []dns.EDNS0{ecs}, wantWire: true},
		{name: "ecs from a trusted proxy", qname: "ecs2.eq.example.", qtype: dns.TypeA, from: "127.0.0.9", edns: true, options: []dns.EDNS0{ecs}},
		{name: "refused client", qname: "a6.eq.example.", qtype: dns.TypeA, from: "127.0.0.20", edns: true, wantWire: true, rcode: dns.RcodeRefused},
		{name: "chaos explain", qname: "tiktok.com.explain.dnsfence.", qtype: dns.TypeTXT, from: "127.0.0.1", edns: true},
		{name: "escaped name", qname: `we\.ird.eq.example.`, qtype: dns.TypeA, from: "127.0.0.4", edns: true},
		{name: "root", qname: ".", qtype: dns.TypeNS, from: "127.0.0.4", edns: true, wantWire: true},
		{name: "uncompressed upstream", qname: "uncompressed.eq.example.", qtype: dns.TypeA, from: "127.0.0.4", edns: true, wantWire: true, encoding: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := question(tc.qname, tc.qtype, false)
			if tc.qtype == dns.TypeTXT && strings.HasSuffix(tc.qname, "explain.dnsfence.") {
				m.Question[0].Qclass = dns.ClassCHAOS
			}
			m.Id = 0x5a5a
			m.RecursionDesired = !tc.norecurs
			m.AuthenticatedData, m.CheckingDisabled = tc.ad, tc.cd
			if tc.edns {
				size := tc.size
				if size == 0 {
					size = 1232
				}
				m.SetEdns0(size, tc.do)
				m.IsEdns0().Option = tc.options
			}
			q, err := m.Pack()
			require.NoError(t, err)
			for _, round := range memoRounds {
				before := p.taken.Load()
				wire := askRaw(t, p.wire, tc.from, q)
				msg := askRaw(t, p.msg, tc.from, q)
				if tc.wantWire {
					assert.Equal(t, before+1, p.taken.Load(), "%s: the wire path took it", round)
				} else {
					assert.Equal(t, before, p.taken.Load(), "%s: the message path took it", round)
				}
				w, wttls := ttlsZeroed(t, wire)
				g, gttls := ttlsZeroed(t, msg)
				a, b := new(dns.Msg), new(dns.Msg)
				require.NoError(t, a.Unpack(w))
				require.NoError(t, b.Unpack(g))
				assert.Equal(t, b.String(), a.String(), "%s: the same message", round)
				if !tc.encoding {
					assert.Equal(t, g, w, "%s: the same answer, octet for octet", round)
				}
				require.Len(t, wttls, len(gttls))
				for i := range wttls {
					assert.InDelta(t, gttls[i], wttls[i], 1, "%s: TTL %d", round, i)
				}
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(wire))
				assert.Equal(t, tc.rcode, r.Rcode, round)
				assert.Equal(t, tc.tc, r.Truncated, round)
				assert.Equal(t, m.Id, r.Id)
			}
		})
	}
	// Both paths sent the same queries upstream, ID aside: our EDNS only
	// (1232, the client's DO bit), no cookie, padding or Client Subnet,
	// AD set, RD and CD as asked. Each went with an ID of its own, drawn
	// at random (RFC 5452 §4.3), over UDP and TCP alike: never the wire
	// form's constant 0 (the few TCP retries: a random ID is 0 once in
	// 65,536), and of some seventy 16-bit IDs, two are 0 or three
	// collide about once in a million runs.
	seen := map[string][][]byte{}
	ids, zeros := map[uint16]int{}, 0
	var queries []seenQuery
	for _, s := range up.queries() {
		// The upstream's SERVFAIL had dnsfence check its health with the
		// root NS query (checkHealth), AD clear: not a client's query.
		if s.msg.Question[0].Name == "." && !s.msg.AuthenticatedData {
			continue
		}
		queries = append(queries, s)
	}
	for _, s := range queries {
		ids[s.msg.Id]++
		if s.msg.Id == 0 {
			zeros++
		}
		if s.tcp {
			assert.NotZero(t, s.msg.Id, "the ID of a query over TCP: %s", s.msg.Question[0].Name)
		}
	}
	assert.LessOrEqual(t, zeros, 1, "upstream queries with ID 0")
	assert.GreaterOrEqual(t, len(ids), len(queries)-2, "distinct upstream query IDs: %v", ids)
	for _, s := range queries {
		c := s.msg.Copy()
		c.Id = 0
		b, err := c.Pack()
		require.NoError(t, err)
		key := strings.ToLower(c.Question[0].Name) + dns.Type(c.Question[0].Qtype).String()
		if s.tcp {
			key += "/tcp"
		}
		seen[key] = append(seen[key], b)
		if opt := s.msg.IsEdns0(); opt != nil {
			assert.Empty(t, opt.Option, "no client option goes upstream: %s", key)
			assert.Equal(t, uint16(ednsSize), opt.UDPSize(), key)
		}
		assert.True(t, s.msg.AuthenticatedData, key)
	}
	for key, qs := range seen {
		if strings.HasPrefix(key, "ad.") || strings.HasPrefix(key, "big.") {
			continue // asked in several shapes
		}
		for _, b := range qs[1:] {
			assert.Equal(t, qs[0], b, "the same query upstream from both paths: %s", key)
		}
	}
}

// TestWireQueryPanicServfail: a wire query whose handling panicked gets
// the SERVFAIL the message path gives one (servfailReply), to the octet,
// packed from what readWireQuery read: the recover must not itself panic
// when the datagram does not unpack (query.request panics by design
// then). The datagrams here are cut so that miekg/dns cannot unpack them.
func TestWireQueryPanicServfail(t *testing.T) {
	f := startFence(t, testConfig, testFiles, startUpstream(t, nil).addr)
	tests := []struct {
		name   string
		edns   bool
		do, ad bool // the query's DO and AD: the SERVFAIL vouches for nothing
		cut    int  // octets cut off the datagram after readWireQuery read it
	}{
		{name: "edns", edns: true, cut: 1},
		{name: "no edns", cut: 3},
		{name: "edns do ad", edns: true, do: true, ad: true, cut: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := question("Panic.Example.org.", dns.TypeAAAA, tc.edns)
			m.Id, m.CheckingDisabled, m.AuthenticatedData = 0xBEEF, true, tc.ad
			if tc.do {
				m.IsEdns0().SetDo()
			}
			b, err := m.Pack()
			require.NoError(t, err)
			var buf [maxNameText]byte
			wq, ok := readWireQuery(b, &buf)
			require.True(t, ok)
			wq.b = wq.b[:len(wq.b)-tc.cut]
			require.Error(t, new(dns.Msg).Unpack(wq.b), "the cut datagram does not unpack")
			w := &rawRecorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
			q := &query{w: w, transport: listen.UDP, wire: wq}

			require.NotPanics(t, func() { f.handler.failed(q, "test panic") })
			want, err := servfailReply(m, dns.ExtendedErrorCodeOther, internalError).Pack()
			require.NoError(t, err)
			require.Len(t, w.written, 1)
			assert.Equal(t, want, w.written[0])
		})
	}
}

// TestMessagePathWaitingLimit: a query the message path leaves waiting on
// an upstream (ServeInline) while waitingLimit queries already wait is
// answered SERVFAIL at once, "too many upstream queries in flight", and
// goes nowhere, as on the wire path; below the limit it is forwarded.
func TestMessagePathWaitingLimit(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFenceServing(t, zaptest.NewLogger(t), testConfig, testFiles,
		func(h *Handler) listen.Handler { return messageOnly{h} }, up.addr)
	limit := waitingLimit(f.handler.Snapshot())
	f.handler.waiting.Store(limit)
	r := ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
	if e := ede(r); assert.NotNil(t, e) {
		assert.Equal(t, "too many upstream queries in flight", e.ExtraText)
	}
	assert.Empty(t, up.queries(), "nothing forwarded")
	assert.Equal(t, limit, f.handler.waiting.Load(), "the query refused is not counted")

	f.handler.waiting.Store(0)
	r = ask(t, f.addr, "", "udp", question("example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Len(t, up.queries(), 1)
	require.Eventually(t, func() bool { return f.handler.waiting.Load() == 0 }, 5*time.Second, 5*time.Millisecond)
}
