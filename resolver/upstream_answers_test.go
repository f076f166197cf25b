package resolver

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// govConfig is one policy, gov, over 127.0.0.0/24, blocking lists/tiktok.txt;
// %s is replaced by extra top-level config lines.
const govConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/8"]
log: {queries: all}
%s
policies:
  - name: gov
    clients: ["127.0.0.0/24"]
    block: [lists/tiktok.txt]
`

var govFiles = map[string]string{"lists/tiktok.txt": "tiktok.com\n"}

func govFence(t *testing.T, extra string, upstreams ...string) *fence {
	t.Helper()
	return startFence(t, fmt.Sprintf(govConfig, extra), govFiles, upstreams...)
}

// rcodeAnswer answers every query with rcode, and EDEs when the query has
// EDNS.
func rcodeAnswer(rcode int, edes ...*dns.EDNS0_EDE) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		m.RecursionAvailable = true
		if r.IsEdns0() != nil {
			m.SetEdns0(1232, false)
			for _, e := range edes {
				m.IsEdns0().Option = append(m.IsEdns0().Option, e)
			}
		}
		return m
	}
}

// clientQueries counts the queries an upstream received other than the
// probes (the root NS query).
func clientQueries(u *testUpstream) int {
	n := 0
	for _, q := range u.queries() {
		if q.msg.Question[0].Name != "." {
			n++
		}
	}
	return n
}

// probes counts the probe queries (root NS) an upstream received.
func probes(u *testUpstream) int {
	n := 0
	for _, q := range u.queries() {
		if q.msg.Question[0].Name == "." {
			n++
		}
	}
	return n
}

// upstreamErrors reads dnsfence_upstream_errors_total for upstream, by
// kind, leaving out the kinds still at zero (every kind's series exists from
// the start).
func upstreamErrors(t *testing.T, reg *prometheus.Registry, upstream string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "dnsfence_upstream_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if v := m.GetCounter().GetValue(); labels["upstream"] == upstream && v != 0 {
				out[labels["kind"]] = v
			}
		}
	}
	return out
}

// allEDEs is every Extended DNS Error of m.
func allEDEs(m *dns.Msg) []*dns.EDNS0_EDE {
	var out []*dns.EDNS0_EDE
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				out = append(out, e)
			}
		}
	}
	return out
}

func hasEDE(m *dns.Msg, code uint16) bool {
	for _, e := range allEDEs(m) {
		if e.InfoCode == code {
			return true
		}
	}
	return false
}

var failureRcodes = []struct {
	name  string
	rcode int
	kind  string
}{
	{name: "SERVFAIL", rcode: dns.RcodeServerFailure, kind: "rcode_servfail"},
	{name: "REFUSED", rcode: dns.RcodeRefused, kind: "rcode_refused"},
	{name: "NOTIMP", rcode: dns.RcodeNotImplemented, kind: "rcode_notimp"},
	{name: "FORMERR", rcode: dns.RcodeFormatError, kind: "rcode_formerr"},
	{name: "BADVERS", rcode: dns.RcodeBadVers, kind: "rcode_badvers"},
}

// TestFailoverOnFailureRcodes: an upstream answering SERVFAIL, REFUSED or
// NOTIMP is failed over like a dead one, with either strategy; it counts as
// failing (marked down, and its probe, answered the same way, keeps it
// down), so fastest does not pick it first because it answers fast.
func TestFailoverOnFailureRcodes(t *testing.T) {
	for _, strategy := range []string{config.StrategyOrdered, config.StrategyFastest} {
		for _, rc := range failureRcodes {
			t.Run(strategy+"/"+rc.name, func(t *testing.T) {
				t.Parallel()
				bad := startUpstream(t, rcodeAnswer(rc.rcode))
				good := startUpstream(t, nil)
				f := govFence(t, "upstream_timeout: 2s\nupstream_strategy: "+strategy, bad.addr, good.addr)
				askAll := func(prefix string, n int) {
					for i := 0; i < n; i++ {
						start := time.Now()
						r := ask(t, f.addr, "", "udp", question(fmt.Sprintf("%s%d.example.org.", prefix, i), dns.TypeA, true))
						assert.Equal(t, dns.RcodeSuccess, r.Rcode)
						if assert.Len(t, r.Answer, 1) {
							assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
						}
						assert.Empty(t, allEDEs(r))
						assert.Less(t, time.Since(start), time.Second, "failover on an answer, not on a timeout")
					}
				}
				askAll("a", 8)
				assert.Equal(t, 1, clientQueries(bad), "asked once, then marked down and skipped")
				assert.Equal(t, []string{bad.addr}, f.handler.Snapshot().Forwarder().Down())
				assert.Equal(t, map[string]float64{rc.kind: 1}, upstreamErrors(t, f.registry, bad.addr))

				// Its probe gets the same answer: it stays down.
				require.Eventually(t, func() bool { return probes(bad) >= 1 }, 5*time.Second, 20*time.Millisecond)
				askAll("b", 4)
				assert.Equal(t, 1, clientQueries(bad), "the probe's answer did not bring it back")
				assert.Equal(t, []string{bad.addr}, f.handler.Snapshot().Forwarder().Down())
				assert.GreaterOrEqual(t, clientQueries(good), 12)
			})
		}
	}
}

// TestAllUpstreamsAnswerFailureRcodes: when every upstream answers SERVFAIL,
// REFUSED or NOTIMP, each is asked once and the client gets SERVFAIL (never
// the upstream's REFUSED or NOTIMP, which speak of the upstream's dealings
// with dnsfence) with EDE 22 naming the RCODE, and the last upstream's own
// EDEs after it when it answered SERVFAIL (except the stale ones, 3 and 19).
// An all-SERVFAIL failure is cached briefly (RFC 9520); the others are not.
func TestAllUpstreamsAnswerFailureRcodes(t *testing.T) {
	bogus := &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus, ExtraText: "upstream says bogus"}
	stale := &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: "upstream says stale"}
	for _, rc := range failureRcodes {
		t.Run(rc.name, func(t *testing.T) {
			a := startUpstream(t, rcodeAnswer(rc.rcode, bogus, stale))
			b := startUpstream(t, rcodeAnswer(rc.rcode, bogus, stale))
			f := govFence(t, "upstream_timeout: 2s\nupstream_strategy: ordered", a.addr, b.addr)

			start := time.Now()
			r := ask(t, f.addr, "", "udp", question("fail.example.org.", dns.TypeA, true))
			assert.Less(t, time.Since(start), time.Second)
			assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
			assert.True(t, r.RecursionAvailable)
			assert.Empty(t, r.Answer)
			edes := allEDEs(r)
			require.NotEmpty(t, edes)
			assert.Equal(t, uint16(dns.ExtendedErrorCodeNoReachableAuthority), edes[0].InfoCode)
			assert.Equal(t, "upstream answered "+rc.name, edes[0].ExtraText)
			assert.False(t, hasEDE(r, dns.ExtendedErrorCodeStaleAnswer), "EDE 3 only on a stale answer")
			assert.Equal(t, rc.rcode == dns.RcodeServerFailure, hasEDE(r, dns.ExtendedErrorCodeDNSBogus),
				"a SERVFAIL's own EDE is relayed, a REFUSED's or NOTIMP's is not")
			assert.Equal(t, 1, clientQueries(a))
			assert.Equal(t, 1, clientQueries(b))
			for _, u := range []*testUpstream{a, b} {
				assert.Equal(t, map[string]float64{rc.kind: 1}, upstreamErrors(t, f.registry, u.addr))
			}

			// Asked again: the SERVFAIL comes from the cache, the same; the
			// others are asked again.
			again := ask(t, f.addr, "", "udp", question("fail.example.org.", dns.TypeA, true))
			again.Id = r.Id
			assert.Equal(t, r.String(), again.String())
			wantAsked := 2
			if rc.rcode == dns.RcodeServerFailure {
				wantAsked = 1
			}
			assert.Equal(t, wantAsked, clientQueries(a))

			// Without EDNS: SERVFAIL, no OPT.
			r = ask(t, f.addr, "", "tcp", question("plain.example.org.", dns.TypeA, false))
			assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
			assert.Nil(t, r.IsEdns0())
		})
	}
}

// craftedUpstream answers UDP queries with the bytes craft makes of each
// (nil: no answer), from a raw socket, and TCP queries as a well-behaved
// server with answer (nil: the TCP side is closed, so a TCP query fails at
// once). tcp counts the TCP queries.
func craftedUpstream(t *testing.T, craft func(q *dns.Msg) []byte, answer func(dns.ResponseWriter, *dns.Msg) *dns.Msg) (addr string, tcp *testUpstream) {
	t.Helper()
	pc, ln, err := listenBoth("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	serveDatagrams(pc, func(b []byte) []byte {
		q := new(dns.Msg)
		if q.Unpack(b) != nil {
			return nil
		}
		return craft(q)
	})
	tcp = &testUpstream{answer: answer, addr: pc.LocalAddr().String()}
	if answer == nil {
		ln.Close()
		return tcp.addr, tcp
	}
	srv := &dns.Server{Listener: ln, Handler: tcp}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return tcp.addr, tcp
}

// serveDatagrams answers, until pc is closed, each datagram pc reads with
// the octets answer makes of it (nil: no answer).
func serveDatagrams(pc net.PacketConn, answer func(q []byte) []byte) {
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if a := answer(buf[:n]); a != nil {
				_, _ = pc.WriteTo(a, from)
			}
		}
	}()
}

// bigAnswer answers with TXT records making a 5,666-byte message (packed
// without compression) for any question.
func bigAnswer(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	txt := &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}}
	m.Answer = []dns.RR{txt}
	for m.Len() < 5666 {
		txt.Txt = append(txt.Txt, strings.Repeat("x", min(255, 5666-m.Len()-1)))
	}
	if m.Len() != 5666 {
		panic(fmt.Sprintf("big answer is %d bytes", m.Len()))
	}
	return m
}

// packed is m in wire form, uncompressed, as a raw UDP answer.
func packed(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// liedAnswer is the default answer for q with the address 6.6.6.6: what a
// spoofer would want a client to get.
func liedAnswer(q *dns.Msg) *dns.Msg {
	m := defaultAnswer(nil, q)
	m.Answer = []dns.RR{mustRR("%s 300 IN A 6.6.6.6", q.Question[0].Name)}
	return m
}

// TestUnusableUDPAnswerIsAskedOverTCP: a UDP answer whose ID a query waits
// for but that is too big for the receive buffer (5,666 bytes without TC),
// does not parse, or answers another question ends that wait at once and
// the same upstream is asked over TCP: the client gets the right answer
// fast, the metric names the cause (never timeout), and the upstream stays
// up. The bad datagram is never accepted.
func TestUnusableUDPAnswerIsAskedOverTCP(t *testing.T) {
	tests := []struct {
		name   string
		qtype  uint16
		craft  func(q *dns.Msg) []byte
		answer func(dns.ResponseWriter, *dns.Msg) *dns.Msg
		kind   string
	}{
		{name: "garbage after the header", qtype: dns.TypeA, kind: "malformed", answer: defaultAnswer,
			craft: func(q *dns.Msg) []byte {
				b := packed(liedAnswer(q))
				return append(b[:12:12], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)
			}},
		{name: "answer cut short", qtype: dns.TypeA, kind: "malformed", answer: defaultAnswer,
			craft: func(q *dns.Msg) []byte { b := packed(liedAnswer(q)); return b[:len(b)-3] }},
		{name: "wrong question", qtype: dns.TypeA, kind: "mismatch", answer: defaultAnswer,
			craft: func(q *dns.Msg) []byte {
				m := liedAnswer(q)
				m.Question[0].Name = "other.example."
				m.Answer[0].Header().Name = "other.example."
				return packed(m)
			}},
		{name: "wrong type", qtype: dns.TypeA, kind: "mismatch", answer: defaultAnswer,
			craft: func(q *dns.Msg) []byte { m := liedAnswer(q); m.Question[0].Qtype = dns.TypeAAAA; return packed(m) }},
		{name: "not a response", qtype: dns.TypeA, kind: "mismatch", answer: defaultAnswer,
			craft: func(q *dns.Msg) []byte { m := liedAnswer(q); m.Response = false; return packed(m) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, tcp := craftedUpstream(t, tc.craft, tc.answer)
			f := govFence(t, "upstream_timeout: 2s", addr)
			want := tc.answer(nil, question("x.example.org.", tc.qtype, false)).Answer

			start := time.Now()
			r := ask(t, f.addr, "", "udp", question("x.example.org.", tc.qtype, true))
			assert.Less(t, time.Since(start), time.Second, "no wait for a timeout")
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.False(t, r.Truncated)
			require.Len(t, r.Answer, len(want))
			assert.Equal(t, want[0].String(), r.Answer[0].String(), "the TCP answer, never the bad datagram")
			assert.Empty(t, allEDEs(r))
			assert.Equal(t, map[string]float64{tc.kind: 1}, upstreamErrors(t, f.registry, addr))
			if assert.Len(t, tcp.queries(), 1, "the upstream's TCP side was asked") {
				assert.True(t, tcp.queries()[0].tcp)
			}
			assert.Empty(t, f.handler.Snapshot().Forwarder().Down(), "the upstream answered over TCP: it is up")
		})
	}

	t.Run("too big: TC for the client over UDP, then whole over TCP", func(t *testing.T) {
		addr, tcp := craftedUpstream(t, func(q *dns.Msg) []byte { return packed(bigAnswer(nil, q)) }, bigAnswer)
		f := govFence(t, "upstream_timeout: 2s", addr)
		start := time.Now()
		r := ask(t, f.addr, "", "udp", question("big.example.org.", dns.TypeTXT, true))
		assert.Less(t, time.Since(start), time.Second)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.True(t, r.Truncated, "over the client's 1232 bytes")
		r = ask(t, f.addr, "", "tcp", question("big.example.org.", dns.TypeTXT, true))
		assert.False(t, r.Truncated)
		require.Len(t, r.Answer, 1)
		assert.Equal(t, bigAnswer(nil, question("big.example.org.", dns.TypeTXT, false)).Answer[0].String(), r.Answer[0].String())
		if assert.Len(t, tcp.queries(), 1, "the upstream's TCP side was asked; the client's TCP retry is a cache hit") {
			assert.True(t, tcp.queries()[0].tcp)
		}
		assert.Equal(t, map[string]float64{"too_big": 1}, upstreamErrors(t, f.registry, addr))
		assert.Empty(t, f.handler.Snapshot().Forwarder().Down())
	})
}

// TestUnusableAnswerErrors: when the TCP side fails too, or the datagram
// could not be given to the query at all (an ID never sent, a datagram too
// short for a header), the client's SERVFAIL, the error kind and the metric
// name the cause, not a timeout.
func TestUnusableAnswerErrors(t *testing.T) {
	tests := []struct {
		name     string
		craft    func(q *dns.Msg) []byte
		fast     bool // the answer ends the wait; else the query waits out its timeout
		kind     string
		is       error
		wantText string
	}{
		{name: "too big, TCP closed", fast: true, kind: "too_big", is: upstream.ErrAnswerTooBig,
			craft:    func(q *dns.Msg) []byte { return packed(bigAnswer(nil, q)) },
			wantText: "upstream answer unusable: too big for UDP"},
		{name: "garbage, TCP closed", fast: true, kind: "malformed", is: upstream.ErrAnswerMalformed,
			craft:    func(q *dns.Msg) []byte { return append(packed(q)[:12:12], 0xc0, 0xff) },
			wantText: "upstream answer unusable: malformed"},
		{name: "wrong question, TCP closed", fast: true, kind: "mismatch", is: upstream.ErrAnswerMismatch,
			craft:    func(q *dns.Msg) []byte { m := liedAnswer(q); m.Question[0].Name = "other.example."; return packed(m) },
			wantText: "upstream answer unusable: not for the question asked"},
		{name: "wrong ID", kind: "wrong_id", is: upstream.ErrAnswerWrongID,
			craft:    func(q *dns.Msg) []byte { m := liedAnswer(q); m.Id ^= 0x5a5a; return packed(m) },
			wantText: "upstream answer unusable: query ID never sent"},
		{name: "datagram shorter than a header", kind: "malformed", is: upstream.ErrAnswerMalformed,
			craft:    func(q *dns.Msg) []byte { return packed(q)[:5] },
			wantText: "upstream answer unusable: malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := craftedUpstream(t, tc.craft, nil)
			f := govFence(t, "upstream_timeout: 500ms", addr)
			start := time.Now()
			r := ask(t, f.addr, "", "udp", question("x.example.org.", dns.TypeA, true))
			if tc.fast {
				assert.Less(t, time.Since(start), 400*time.Millisecond, "no wait for a timeout")
			}
			assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
			assert.Empty(t, r.Answer)
			e := ede(r)
			require.NotNil(t, e)
			assert.Equal(t, uint16(dns.ExtendedErrorCodeNetworkError), e.InfoCode)
			assert.Equal(t, tc.wantText, e.ExtraText)
			assert.Equal(t, map[string]float64{tc.kind: 1}, upstreamErrors(t, f.registry, addr))

			// The error itself, from the Forwarder.
			fw := testForwarder([]string{addr}, 500*time.Millisecond, false)
			t.Cleanup(fw.Close)
			_, _, err := fw.Forward(context.Background(), question("y.example.org.", dns.TypeA, true), false)
			var ue *upstream.UpstreamError
			require.ErrorAs(t, err, &ue)
			require.Len(t, ue.Errs, 1)
			assert.ErrorIs(t, ue.Errs[0], tc.is)
			assert.ErrorIs(t, ue.Errs[0], upstream.ErrAnswerUnusable)
			assert.False(t, ue.Timeout, "an answer came: not a timeout")
			assert.Equal(t, tc.kind, ue.Causes())
		})
	}

	t.Run("late answers are not wrong IDs", func(t *testing.T) {
		// An upstream that answers every query after the timeout: each
		// answer is late (its ID was sent), so the error is a timeout.
		// A query sent again (a resend, the same question) is not the
		// next query: it draws no answer.
		var held atomic.Pointer[dns.Msg]
		addr, _ := craftedUpstream(t, func(q *dns.Msg) []byte {
			if prev := held.Load(); prev != nil && prev.Question[0] == q.Question[0] {
				return nil
			}
			prev := held.Swap(q)
			if prev == nil {
				return nil
			}
			return packed(defaultAnswer(nil, prev)) // the previous query's answer
		}, nil)
		fw := testForwarder([]string{addr}, 200*time.Millisecond, false)
		t.Cleanup(fw.Close)
		for i := 0; i < 3; i++ {
			_, _, err := fw.Forward(context.Background(), question(fmt.Sprintf("l%d.example.org.", i), dns.TypeA, false), false)
			var ue *upstream.UpstreamError
			require.ErrorAs(t, err, &ue)
			assert.True(t, ue.Timeout)
			assert.Equal(t, "timeout", ue.Causes())
			assert.NotErrorIs(t, err, upstream.ErrAnswerWrongID)
		}
	})
}

// Modes of modeUpstream.
const (
	modeGood int32 = iota
	modeServfail
	modeRefused
	modeNotimp
	modeSilent
)

// modeUpstream answers as mode says: the default answer, an RCODE, or
// nothing at all.
func modeUpstream(t *testing.T, mode *atomic.Int32) *testUpstream {
	return startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		switch mode.Load() {
		case modeServfail:
			return rcodeAnswer(dns.RcodeServerFailure)(w, r)
		case modeRefused:
			return rcodeAnswer(dns.RcodeRefused)(w, r)
		case modeNotimp:
			return rcodeAnswer(dns.RcodeNotImplemented)(w, r)
		case modeSilent:
			return nil
		}
		return defaultAnswer(w, r)
	})
}

// TestServeStaleOnEveryFailure: once an answer has expired, any failure of
// every upstream (a SERVFAIL, a REFUSED or NOTIMP, no answer at all) serves
// it stale (RFC 8767): NOERROR, TTL 30, EDE 3; a failure never replaces it
// in the cache. EDE 3 is on nothing else: not on fresh answers or cache
// hits, not on the SERVFAIL once the stale window has passed.
func TestServeStaleOnEveryFailure(t *testing.T) {
	const name = "stale.example.org."
	isStale := func(t *testing.T, r *dns.Msg) {
		t.Helper()
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		if assert.Len(t, r.Answer, 1) {
			assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			assert.Equal(t, uint32(30), r.Answer[0].Header().Ttl)
		}
		edes := allEDEs(r)
		if assert.Len(t, edes, 1) {
			assert.Equal(t, uint16(dns.ExtendedErrorCodeStaleAnswer), edes[0].InfoCode)
		}
	}
	isFresh := func(t *testing.T, r *dns.Msg) {
		t.Helper()
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Len(t, r.Answer, 1)
		assert.False(t, hasEDE(r, dns.ExtendedErrorCodeStaleAnswer), "a fresh answer is not stale")
	}
	// expire waits, with mode set to fail, until name's answer is no longer
	// fresh in the cache, and returns the first answer past it.
	expire := func(t *testing.T, f *fence) *dns.Msg {
		t.Helper()
		var r *dns.Msg
		require.Eventually(t, func() bool {
			var err error
			r, err = exchange(f.addr, "", "udp", question(name, dns.TypeA, true))
			return err == nil && (r.Rcode != dns.RcodeSuccess || len(allEDEs(r)) > 0)
		}, 10*time.Second, 50*time.Millisecond)
		return r
	}

	t.Run("every kind of failure serves stale", func(t *testing.T) {
		var mode atomic.Int32
		up := modeUpstream(t, &mode)
		// stale_refresh_time 0: every query asks the upstreams first
		// (TestStaleRefreshTime has the wait between).
		f := govFence(t, "upstream_timeout: 300ms\ncache: {max_ttl: 1, serve_stale: 1h, stale_refresh_time: 0s}", up.addr)
		isFresh(t, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true)))
		isFresh(t, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true))) // a hit

		mode.Store(modeServfail)
		isStale(t, expire(t, f))
		for _, m := range []struct {
			name string
			mode int32
		}{{"dead", modeSilent}, {"refused", modeRefused}, {"notimp", modeNotimp}, {"servfail again", modeServfail}} {
			mode.Store(m.mode)
			before := clientQueries(up)
			isStale(t, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true)))
			assert.Greater(t, clientQueries(up), before, "%s: the upstream was asked first", m.name)
		}

		// Recovered: fresh again, without EDE 3.
		mode.Store(modeGood)
		require.Eventually(t, func() bool {
			r, err := exchange(f.addr, "", "udp", question(name, dns.TypeA, true))
			return err == nil && r.Rcode == dns.RcodeSuccess && len(allEDEs(r)) == 0
		}, 10*time.Second, 50*time.Millisecond)
		isFresh(t, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true)))
	})

	t.Run("past the stale window: SERVFAIL without EDE 3", func(t *testing.T) {
		var mode atomic.Int32
		up := modeUpstream(t, &mode)
		f := govFence(t, "upstream_timeout: 300ms\ncache: {max_ttl: 1, serve_stale: 1s}", up.addr)
		isFresh(t, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true)))
		mode.Store(modeServfail)
		var r *dns.Msg
		require.Eventually(t, func() bool {
			var err error
			r, err = exchange(f.addr, "", "udp", question(name, dns.TypeA, true))
			return err == nil && r.Rcode == dns.RcodeServerFailure
		}, 10*time.Second, 50*time.Millisecond)
		assert.Empty(t, r.Answer)
		assert.False(t, hasEDE(r, dns.ExtendedErrorCodeStaleAnswer))
		e := ede(r)
		require.NotNil(t, e)
		assert.Equal(t, uint16(dns.ExtendedErrorCodeNoReachableAuthority), e.InfoCode)
		mode.Store(modeSilent)
		r = ask(t, f.addr, "", "udp", question(name, dns.TypeA, true))
		assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
		assert.False(t, hasEDE(r, dns.ExtendedErrorCodeStaleAnswer), "a cached SERVFAIL is never served stale")
	})

	t.Run("without serve_stale: SERVFAIL without EDE 3", func(t *testing.T) {
		var mode atomic.Int32
		up := modeUpstream(t, &mode)
		f := govFence(t, "upstream_timeout: 300ms\ncache: {max_ttl: 1}", up.addr)
		isFresh(t, ask(t, f.addr, "", "udp", question(name, dns.TypeA, true)))
		mode.Store(modeServfail)
		r := expire(t, f)
		assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
		assert.False(t, hasEDE(r, dns.ExtendedErrorCodeStaleAnswer))
	})
}

// TestStaleRefreshTime: once every upstream failed to refresh an expired
// answer, it is served stale at once, without asking them, for
// stale_refresh_time (RFC 8767 §5: refresh from failing upstreams at most
// every 30 s), whatever the path the query takes (UDP, TCP; the wire and
// message forms); then one query asks them again. A stale NXDOMAIN carries
// EDE 19, any other stale answer EDE 3 (RFC 8914 §4.20, §4.4); the policy
// still applies to both.
func TestStaleRefreshTime(t *testing.T) {
	var mode atomic.Int32
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if mode.Load() == modeSilent {
			return nil
		}
		if q := r.Question[0]; strings.HasPrefix(q.Name, "nx.") {
			m := rcodeAnswer(dns.RcodeNameError)(w, r)
			m.Ns = []dns.RR{mustRR("example.org. 1 IN SOA ns.example.org. h.example.org. 1 3600 600 86400 1")}
			return m
		}
		return defaultAnswer(w, r)
	})
	f := govFence(t, "upstream_timeout: 300ms\ncache: {max_ttl: 1, serve_stale: 1h, stale_refresh_time: 3s}", up.addr)
	questions := []*dns.Msg{
		question("stale.example.org.", dns.TypeA, true),
		question("nx.example.org.", dns.TypeA, true),
		question("noedns.example.org.", dns.TypeAAAA, false),
	}
	for _, q := range questions {
		r := ask(t, f.addr, "", "udp", q)
		require.Empty(t, allEDEs(r), "fresh")
	}
	mode.Store(modeSilent)
	time.Sleep(1100 * time.Millisecond) // past max_ttl
	// The first query of each waits for the upstream's timeout, then is
	// answered stale.
	for _, q := range questions {
		before := clientQueries(up)
		isStaleAnswer(t, q, ask(t, f.addr, "", "udp", q))
		assert.Greater(t, clientQueries(up), before, "%s: the upstream was asked", q.Question[0].Name)
	}
	// Every later one is answered stale at once, over UDP and TCP.
	before := clientQueries(up)
	for _, network := range []string{"udp", "tcp", "udp"} {
		for _, q := range questions {
			start := time.Now()
			isStaleAnswer(t, q, ask(t, f.addr, "", network, q))
			assert.Less(t, time.Since(start), 300*time.Millisecond, "%s over %s: no upstream timeout waited for", q.Question[0].Name, network)
		}
	}
	assert.Equal(t, before, clientQueries(up), "within stale_refresh_time the upstream is not asked")
	stale, _ := metricValue(t, f.registry, "dnsfence_cache_lookups_total", "result", "stale")
	assert.Equal(t, float64(3+9), stale, "each counted a stale lookup")

	// The policy applies to a stale answer as to any.
	r := ask(t, f.addr, "", "udp", question("tiktok.com.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	assert.True(t, hasEDE(r, dns.ExtendedErrorCodeBlocked))

	// Past stale_refresh_time the next query asks again (and, the upstream
	// still silent, is answered stale); the one after it does not.
	require.Eventually(t, func() bool {
		ask(t, f.addr, "", "udp", questions[0])
		return clientQueries(up) > before
	}, 10*time.Second, 100*time.Millisecond)
	after := clientQueries(up)
	isStaleAnswer(t, questions[0], ask(t, f.addr, "", "udp", questions[0]))
	assert.Equal(t, after, clientQueries(up), "failed again: another wait")

	// Recovered: once the wait is over, a fresh answer.
	mode.Store(modeGood)
	require.Eventually(t, func() bool {
		r, err := exchange(f.addr, "", "udp", questions[0])
		return err == nil && len(allEDEs(r)) == 0 && len(r.Answer) == 1
	}, 10*time.Second, 100*time.Millisecond)
}

// isStaleAnswer asserts that r, the answer to q, is a stale one (RFC
// 8767): TTL 30, EDE 19 "Stale NXDOMAIN Answer" for an NXDOMAIN (q's name
// starts with "nx."), else EDE 3 "Stale Answer" (RFC 8914 §4.20, §4.4),
// and no EDNS for a query without.
func isStaleAnswer(t *testing.T, q, r *dns.Msg) {
	t.Helper()
	switch {
	case q.IsEdns0() == nil:
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Nil(t, r.IsEdns0(), "no EDNS asked, none given")
	case strings.HasPrefix(q.Question[0].Name, "nx."):
		assert.Equal(t, dns.RcodeNameError, r.Rcode)
		if edes := allEDEs(r); assert.Len(t, edes, 1) {
			assert.Equal(t, uint16(dns.ExtendedErrorCodeStaleNXDOMAINAnswer), edes[0].InfoCode, "EDE 19")
		}
		if assert.Len(t, r.Ns, 1) {
			assert.Equal(t, uint32(30), r.Ns[0].Header().Ttl)
		}
		return
	default:
		if edes := allEDEs(r); assert.Len(t, edes, 1) {
			assert.Equal(t, uint16(dns.ExtendedErrorCodeStaleAnswer), edes[0].InfoCode, "EDE 3")
		}
	}
	if assert.Len(t, r.Answer, 1) {
		assert.Equal(t, uint32(30), r.Answer[0].Header().Ttl)
	}
}

// TestCacheFailureNeverDisplacesAnswer: a cached SERVFAIL never replaces an
// answer that is fresh or may be served stale, and is never served stale
// itself.
func TestCacheFailureNeverDisplacesAnswer(t *testing.T) {
	now := time.Now()
	c := NewCache(config.Cache{Size: 10, MaxTTL: 60, ServeStale: time.Hour})
	key := keyOf(question("x.example.org.", dns.TypeA, false))
	good := answerWith("x.example.org.", dns.TypeA, dns.RcodeSuccess, "x.example.org. 60 IN A 192.0.2.1")
	fail := answerWith("x.example.org.", dns.TypeA, dns.RcodeServerFailure)

	c.put(key, good, now)
	c.putFailure(key, fail, now.Add(time.Second))
	e, _ := c.get(key, now.Add(2*time.Second))
	require.NotNil(t, e, "fresh answer kept")
	assert.Equal(t, dns.RcodeSuccess, e.msg.Rcode)

	later := now.Add(10 * time.Minute) // expired, inside the stale window
	c.putFailure(key, fail, later)
	st := c.stale(key, later.Add(time.Second), true)
	require.NotNil(t, st, "stale answer kept")
	assert.Equal(t, dns.RcodeSuccess, st.Rcode)

	other := keyOf(question("y.example.org.", dns.TypeA, false))
	c.putFailure(other, fail, now)
	e, _ = c.get(other, now.Add(time.Second))
	require.NotNil(t, e, "with no answer to keep, the failure is cached briefly")
	assert.Equal(t, dns.RcodeServerFailure, e.msg.Rcode)
	assert.Nil(t, c.stale(other, now.Add(time.Minute), true), "a SERVFAIL is never served stale")
}

// TestCachedServfailCountsAsServfail: while every upstream's SERVFAIL is
// cached, each client that gets it is counted as a SERVFAIL, not as a
// forwarded answer (the SERVFAIL-ratio alert reads that counter).
func TestCachedServfailCountsAsServfail(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for range 3 {
		r := ask(t, f.addr, "127.0.0.8", "udp", question("failing.example.", dns.TypeA, false))
		require.Equal(t, dns.RcodeServerFailure, r.Rcode)
	}
	srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, time.Minute))
	defer srv.Close()
	_, body := get(t, srv.URL+"/metrics")
	assert.Contains(t, body, `dnsfence_queries_total{result="servfail",transport="udp"} 3`+"\n")
	assert.Contains(t, body, `dnsfence_queries_total{result="forwarded",transport="udp"} 0`+"\n")
	assert.Less(t, up.count.Load(), int64(3), "the later SERVFAILs came from the cache")
}

// noEDNSUpstream answers as a server without EDNS does (RFC 6891 §7): a
// query with an OPT record gets FORMERR with no OPT, the question echoed
// unless noQuestion; a query without one the default answer.
func noEDNSUpstream(noQuestion bool) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.IsEdns0() == nil {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		m.RecursionAvailable = true
		if noQuestion {
			m.Question = nil
		}
		return m
	}
}

// TestUpstreamFormerrIsNotTheClients: an upstream's FORMERR says it could
// not read dnsfence's query (our OPT record, to a server without EDNS),
// not the client's, which dnsfence read and checked: it is failed over as
// SERVFAIL, REFUSED and NOTIMP are, the next upstream answers, and when
// none does the client gets SERVFAIL, never FORMERR (RFC 1035 §4.1.1:
// FORMERR is "unable to interpret the query"; RFC 6891 §7).
func TestUpstreamFormerrIsNotTheClients(t *testing.T) {
	for _, noQuestion := range []bool{false, true} {
		t.Run(fmt.Sprintf("question left out %v", noQuestion), func(t *testing.T) {
			bad := startUpstream(t, noEDNSUpstream(noQuestion))
			good := startUpstream(t, nil)
			f := govFence(t, "upstream_timeout: 2s\nupstream_strategy: ordered", bad.addr, good.addr)
			only := govFence(t, "upstream_timeout: 2s", bad.addr)
			i := 0
			for _, network := range []string{"udp", "tcp"} {
				for _, edns := range []bool{true, false} {
					i++
					name := fmt.Sprintf("n%d.example.org.", i)
					start := time.Now()
					r := ask(t, f.addr, "", network, question(name, dns.TypeA, edns))
					assert.Less(t, time.Since(start), time.Second, "failed over on the answer, not on a timeout")
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s edns %v: the second upstream's answer", network, edns)
					if assert.Len(t, r.Answer, 1) {
						assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
					}

					r = ask(t, only.addr, "", network, question(name, dns.TypeA, edns))
					assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "%s edns %v: the client's query was well formed", network, edns)
					if edns {
						e := ede(r)
						if assert.NotNil(t, e) {
							assert.Equal(t, uint16(dns.ExtendedErrorCodeNoReachableAuthority), e.InfoCode)
							assert.Equal(t, "upstream answered FORMERR", e.ExtraText)
						}
					}
				}
			}
			assert.GreaterOrEqual(t, upstreamErrors(t, f.registry, bad.addr)["rcode_formerr"], 1.0)
			assert.Contains(t, f.handler.Snapshot().Forwarder().Down(), bad.addr)
		})
	}
}

// truncatedAnswer is the default answer for r with TC set: a server that
// cut it short, over TCP as over UDP.
func truncatedAnswer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := defaultAnswer(w, r)
	m.Truncated = true
	return m
}

// TestTruncatedStreamAnswerIsUnusable: an upstream answer with TC set that
// came over TCP (the retry of a truncated UDP answer, or a query that came
// over TCP) is cut short with no larger transport left to ask: it is
// unusable, failed over to the next upstream, and never relayed as a
// whole answer (the client's TC is dnsfence's own, set only when it cuts
// the answer, RFC 1035 §4.1.1, §4.2.2) nor cached. With no upstream left
// the client gets SERVFAIL naming the cause.
func TestTruncatedStreamAnswerIsUnusable(t *testing.T) {
	craft := func(q *dns.Msg) []byte {
		m := truncatedAnswer(nil, q)
		m.Answer = nil
		return packed(m)
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			bad, tcp := craftedUpstream(t, craft, truncatedAnswer)
			good := startUpstream(t, nil)
			f := govFence(t, "upstream_timeout: 2s\nupstream_strategy: ordered", bad, good.addr)
			only := govFence(t, "upstream_timeout: 2s", bad)

			r := ask(t, f.addr, "", network, question("cut.example.org.", dns.TypeA, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.False(t, r.Truncated)
			require.Len(t, r.Answer, 1)
			assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			assert.Equal(t, 1, clientQueries(good), "the next upstream was asked")
			assert.Contains(t, f.handler.Snapshot().Forwarder().Down(), bad)

			for i := range 2 {
				r = ask(t, only.addr, "", network, question("cut.example.org.", dns.TypeA, true))
				assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "ask %d: a cut answer is no whole one", i)
				assert.False(t, r.Truncated)
				assert.Empty(t, r.Answer)
				if e := ede(r); assert.NotNil(t, e) {
					assert.Equal(t, uint16(dns.ExtendedErrorCodeNetworkError), e.InfoCode)
					assert.Contains(t, e.ExtraText, "truncated")
				}
			}
			assert.GreaterOrEqual(t, len(tcp.queries()), 3, "asked over TCP each time: nothing was cached")
			assert.GreaterOrEqual(t, upstreamErrors(t, only.registry, bad)["truncated"], 1.0)
		})
	}
}
