package resolver

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// heldUpstreamAt is a test upstream on ip that holds its answers to the
// names under "held." until letGo (at the test's end at the latest), and
// answers the others at once, with answer (nil: testUpstream's default).
func heldUpstreamAt(t *testing.T, ip string, answer func(dns.ResponseWriter, *dns.Msg) *dns.Msg) (*testUpstream, func()) {
	t.Helper()
	if answer == nil {
		answer = defaultAnswer
	}
	release := make(chan struct{})
	up := startUpstreamAt(t, ip, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if strings.HasPrefix(r.Question[0].Name, "held.") {
			<-release
		}
		return answer(w, r)
	})
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the upstream's shutdown
	return up, letGo
}

// TestWireMissCountedOnce: a UDP miss the listener sends upstream
// (startWire) is one cache miss in dnsfence_cache_lookups_total, and its
// answer, from the cache then, one hit.
func TestWireMissCountedOnce(t *testing.T) {
	needLoopback(t, "127.0.160.20", "127.0.160.21", "127.0.160.22")
	up := startUpstreamAt(t, "127.0.160.21", nil)
	f, w := startShapeFence(t, "127.0.160.20", up.addr)
	for range 2 {
		r := ask(t, f.addr, "127.0.160.22", "udp", question("counted.example.org.", dns.TypeA, true))
		require.Len(t, r.Answer, 1)
	}
	assert.Equal(t, int64(2), w.taken.Load(), "the wire path's")
	assert.Equal(t, 1, up.distinct())
	for result, want := range map[string]float64{"miss": 1, "hit": 1} {
		got, _ := metricValue(t, f.registry, "dnsfence_cache_lookups_total", "result", result)
		assert.Equal(t, want, got, result)
	}
}

// TestWireJoinersHoldNoSlot: a UDP miss that finds an identical one's
// upstream query under way (startWire's joinWire) gives back the upstream
// slot it took to try, and waits for that query's answer on a worker:
// with limits.upstream_inflight 2 and one query holding a slot, a third,
// other query still has the second, and is asked upstream; none is
// answered SERVFAIL (errOverloaded), and every slot is free at the end.
func TestWireJoinersHoldNoSlot(t *testing.T) {
	needLoopback(t, "127.0.160.23", "127.0.160.24", "127.0.160.25")
	up, letGo := heldUpstreamAt(t, "127.0.160.24", nil)
	cfg := strings.Replace(shapeConfig, "upstream_timeout: 2s", "upstream_timeout: 5s\nlimits: {upstream_inflight: 2}", 1)
	f := startFenceAt(t, "127.0.160.23", cfg, testFiles, up.addr)
	answers := make(chan *dns.Msg, 3)
	send := func(name string) {
		go func() {
			r, err := exchange(f.addr, "127.0.160.25", "udp", question(name, dns.TypeA, true))
			assert.NoError(t, err, name)
			answers <- r
		}()
	}
	send("held.example.org.")
	require.Eventually(t, func() bool { return up.distinct() == 1 }, 5*time.Second, time.Millisecond, "the first is upstream")
	send("held.example.org.")
	require.Eventually(t, func() bool { return f.handler.waiting.Load() == 1 }, 5*time.Second, time.Millisecond,
		"the second joined the first's call, on a worker")
	send("held.other.example.org.")
	require.Eventually(t, func() bool { return up.distinct() == 2 }, 5*time.Second, time.Millisecond,
		"the third took the second slot and is upstream")
	letGo()
	for range 3 {
		select {
		case r := <-answers:
			if assert.NotNil(t, r) {
				assert.Equal(t, dns.RcodeSuccess, r.Rcode, r.Question)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a query was never answered")
		}
	}
	require.Eventually(t, func() bool { return f.handler.slots.used.Load() == 0 }, 5*time.Second, time.Millisecond,
		"every slot given back")
}

// TestWireMissLogNamesItsUpstream: the query line of a UDP miss answered
// in wire form (forwardedWire) names the upstream that answered, as the
// message path's (TCP, forwarded) does; the hit after it names the cache.
func TestWireMissLogNamesItsUpstream(t *testing.T) {
	needLoopback(t, "127.0.160.26", "127.0.160.27", "127.0.160.28")
	up := startUpstreamAt(t, "127.0.160.27", nil)
	core, logs := observer.New(zapcore.InfoLevel)
	f := startFenceAtServing(t, "127.0.160.26", zap.New(core), nil, shapeConfig, testFiles, up.addr)
	networks := []string{"udp", "tcp"}
	for _, network := range networks {
		for range 2 {
			r := ask(t, f.addr, "127.0.160.28", network, question(network+".logged.example.org.", dns.TypeA, true))
			require.Len(t, r.Answer, 1)
		}
	}
	lines := logs.FilterMessage("query").All()
	require.Len(t, lines, 4)
	for i, network := range networks {
		assert.Equal(t, up.addr, lines[2*i].ContextMap()[logUpstream], "the miss over %s", network)
		assert.Equal(t, upstreamCache, lines[2*i+1].ContextMap()[logUpstream], "the hit over %s", network)
	}
}

// TestTruncatedHitAgedToTheQuery: a cached answer too large for a client
// without EDNS (512 octets) is fitted to it as a message, aged to the
// query, not to when the answer was stored: its TTLs count down as the
// whole answer's do for a client it fits.
func TestTruncatedHitAgedToTheQuery(t *testing.T) {
	needLoopback(t, "127.0.160.29", "127.0.160.30", "127.0.160.31")
	up := startUpstreamAt(t, "127.0.160.30", func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 40 {
			m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.%d", r.Question[0].Name, i+1))
		}
		return m
	})
	f := startFenceAt(t, "127.0.160.29", shapeConfig, testFiles, up.addr)
	const name = "many.example.org."
	whole := ask(t, f.addr, "127.0.160.31", "udp", question(name, dns.TypeA, true))
	require.Len(t, whole.Answer, 40, "fits 1232 octets")
	require.Equal(t, uint32(300), whole.Answer[0].Header().Ttl, "the miss")
	// Once a second has passed, the hit that fits is aged.
	require.Eventually(t, func() bool {
		r := ask(t, f.addr, "127.0.160.31", "udp", question(name, dns.TypeA, true))
		return len(r.Answer) == 40 && r.Answer[0].Header().Ttl < 300
	}, 5*time.Second, 50*time.Millisecond, "the cached answer ages")
	r := ask(t, f.addr, "127.0.160.31", "udp", question(name, dns.TypeA, false))
	assert.True(t, r.Truncated, "over 512 octets")
	require.NotEmpty(t, r.Answer, "fitted record by record")
	for _, rr := range r.Answer {
		assert.Less(t, rr.Header().Ttl, uint32(300), "aged: %s", rr)
	}
	assert.Equal(t, 1, up.distinct())
}

// TestUnreadStaleAtTimerIsTheOneAnswer: a UDP query whose expired
// cached answer miekg/dns does not read (an HTTPS record whose ipv6hint
// holds an IPv4-mapped address) is answered stale by its client response
// timer (clientTimer.fire, from the entry's wire form), and that is its
// only answer: the refresh, once the upstream answers, is cached and
// sends the client nothing more (claim), as for an answer that reads.
func TestUnreadStaleAtTimerIsTheOneAnswer(t *testing.T) {
	needLoopback(t, "127.0.160.32", "127.0.160.33", "127.0.160.134")
	up := startHoldingUpstreamAt(t, "127.0.160.33", nil, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{mappedHintHTTPS(r.Question[0].Name, 0)}
		return m
	})
	cfg := strings.Replace(shapeConfig, "upstream_timeout: 2s",
		"upstream_timeout: 5s\ncache: {serve_stale: 1h, stale_answer_client_timeout: 400ms}", 1)
	f := startFenceAt(t, "127.0.160.32", cfg, testFiles, up.addr)
	q := question("timer.example.org.", dns.TypeHTTPS, true)
	require.EqualValues(t, 1, dnswire.ANCount(askRaw(t, f.addr, "127.0.160.134", packed(q))), "the fresh answer")
	awaitExpired(t, f.handler, q)
	up.hold()

	raddr, err := net.ResolveUDPAddr("udp", f.addr)
	require.NoError(t, err)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.160.134")}, raddr)
	require.NoError(t, err)
	defer c.Close()
	before := up.distinct()
	_, err = c.Write(packed(q))
	require.NoError(t, err)
	buf := make([]byte, 65535)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := c.Read(buf)
	require.NoError(t, err)
	b := buf[:n]
	assert.EqualValues(t, 1, dnswire.ANCount(b), "the stale answer")
	assert.Equal(t, append([]byte{0, byte(dns.ExtendedErrorCodeStaleAnswer)}, staleText...), rawOptions(t, b)[dns.EDNS0EDE],
		"served stale: EDE 3 and its text (RFC 8914 §4.4)")
	require.Eventually(t, func() bool { return up.distinct() == before+1 }, 5*time.Second, time.Millisecond,
		"the refresh went upstream")

	up.letGo()
	require.Eventually(t, func() bool {
		e, _ := f.handler.cache.Load().get(keyOf(q), time.Now())
		return e != nil && testutilGauge(t, f, "dnsfence_inflight_queries") == 0
	}, 5*time.Second, 10*time.Millisecond, "the refresh is cached and ended")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(400*time.Millisecond)))
	n, err = c.Read(buf)
	assert.Error(t, err, "no second answer: %d octets", n)
}

// TestWireAnswerOfOtherOwnersInspected: an upstream's answer whose answer
// section holds, beside the record of the name asked, one owned by
// another name (a blocked one here, of as many octets as the name asked)
// is no answer of the question name only (wireAnswer.qnameOnly,
// ownedBy), whether the upstream compressed its names or not ("flat."):
// it is inspected, on the wire path as on the message path, and the
// blocked name's record reaches no client of the blocking policy. Both
// paths give the same answer, miss and hit.
func TestWireAnswerOfOtherOwnersInspected(t *testing.T) {
	needLoopback(t, "127.0.160.40", "127.0.160.41", "127.0.160.42", "127.0.160.43")
	up := startUpstreamAt(t, "127.0.160.42", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		name := r.Question[0].Name
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", name), mustRR("www12.tiktok.com. 300 IN A 192.0.2.66")}
		if strings.HasPrefix(strings.ToLower(name), "flat.") {
			_ = w.WriteMsg(m) // uncompressed: testUpstream would compress it
			return nil
		}
		return m
	})
	wire, w := startShapeFence(t, "127.0.160.40", up.addr)
	msg := startFenceAtServing(t, "127.0.160.41", zaptest.NewLogger(t), func(h *Handler) listen.Handler { return messageOnly{h} },
		shapeConfig, testFiles, up.addr)
	names := []string{"same.example.org.", "same.example.org.", "flat.example.org.", "flat.example.org.", "FLAT.example.org."}
	require.Len(t, packed(question("www12.tiktok.com.", dns.TypeA, false)), len(packed(question(names[0], dns.TypeA, false))),
		"names of as many octets")
	for _, name := range names {
		q := question(name, dns.TypeA, true)
		got := ask(t, wire.addr, "127.0.160.43", "udp", q)
		want := ask(t, msg.addr, "127.0.160.43", "udp", q)
		assert.Equal(t, want.Rcode, got.Rcode, name)
		for _, rr := range append(got.Answer, got.Ns...) {
			if a, ok := rr.(*dns.A); ok {
				assert.NotEqual(t, "192.0.2.66", a.A.String(), "%s: the blocked name's record", name)
			}
		}
		// A blocked answer's SOA serial is its fence's load time in
		// seconds, which the two fences' starts may straddle.
		withoutLoadTime(t, wire, got)
		withoutLoadTime(t, msg, want)
		assert.Equal(t, want.Answer, got.Answer, name)
		assert.Equal(t, want.Ns, got.Ns, name)
	}
	assert.Equal(t, int64(len(names)), w.taken.Load(), "the wire path's")
}

// withoutLoadTime sets to 0 what in m, f's answer, is of the moment and
// not of the answer: every TTL, and a blocked answer's SOA serial (after
// checking it is f's load time in seconds).
func withoutLoadTime(t *testing.T, f *fence, m *dns.Msg) {
	t.Helper()
	for _, rr := range append(m.Answer, m.Ns...) {
		rr.Header().Ttl = 0
		if soa, ok := rr.(*dns.SOA); ok && soa.Mbox == soaRname {
			assert.Equal(t, uint32(f.handler.Snapshot().Loaded.Unix()), soa.Serial, "the serial is the load time")
			soa.Serial = 0
		}
	}
}

// TestWireAnswerOPTBeforeARecord: an upstream's answer whose OPT record is
// not the last of its additional section (RFC 6891 §6.1.1 puts it
// anywhere there) is not one the wire cache holds in wire form (wireOf
// cuts the OPT off the end only): the client gets the upstream's records
// after the OPT all the same, with its own OPT, miss and hit.
func TestWireAnswerOPTBeforeARecord(t *testing.T) {
	needLoopback(t, "127.0.160.44", "127.0.160.45", "127.0.160.46")
	up := startUpstreamAt(t, "127.0.160.45", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		name := r.Question[0].Name
		m.Answer = []dns.RR{mustRR("%s 300 IN MX 10 mx.example.org.", name)}
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(1232)
		m.Extra = []dns.RR{opt, mustRR("mx.example.org. 300 IN A 192.0.2.25")}
		_ = w.WriteMsg(m) // as it is: testUpstream's Truncate would move the OPT last
		return nil
	})
	f, w := startShapeFence(t, "127.0.160.44", up.addr)
	for range 2 {
		q := question("optfirst.example.org.", dns.TypeMX, true)
		b := askRaw(t, f.addr, "127.0.160.46", packed(q))
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(b), "the answer reads")
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Len(t, r.Answer, 1)
		require.NotNil(t, r.IsEdns0(), "the client's OPT")
		var glue []string
		for _, rr := range r.Extra {
			if a, ok := rr.(*dns.A); ok {
				glue = append(glue, a.Hdr.Name+" "+a.A.String())
			}
		}
		assert.Equal(t, []string{"mx.example.org. 192.0.2.25"}, glue)
	}
	assert.Equal(t, int64(2), w.taken.Load(), "the wire path's")
	assert.Equal(t, 1, up.distinct(), "the hit from the cache")
}

// TestLeftQueriesReusedAfterTheirTimer: a UDP query answered stale by its
// client response timer, whose refresh then comes in, is reused
// (leftPool) without its timer: the misses that reuse it, which have no
// timer of their own (no expired answer), are answered by their upstream
// side, not held off as if their timer had answered them (claim).
func TestLeftQueriesReusedAfterTheirTimer(t *testing.T) {
	needLoopback(t, "127.0.160.51", "127.0.160.52", "127.0.160.53")
	up := startHoldingUpstreamAt(t, "127.0.160.52", func(q dns.Question) bool { return strings.HasPrefix(q.Name, "stale") }, nil)
	cfg := strings.Replace(shapeConfig, "upstream_timeout: 2s",
		"upstream_timeout: 5s\ncache: {serve_stale: 1h, stale_answer_client_timeout: 200ms}", 1)
	f := startFenceAt(t, "127.0.160.51", cfg, testFiles, up.addr)
	const timed = 4
	var stale []*dns.Msg
	for i := range timed {
		q := question(fmt.Sprintf("stale%d.example.org.", i), dns.TypeA, true)
		require.Len(t, ask(t, f.addr, "127.0.160.53", "udp", q).Answer, 1)
		stale = append(stale, q)
	}
	awaitExpired(t, f.handler, stale...)
	up.hold()
	var wg sync.WaitGroup
	for _, q := range stale {
		wg.Go(func() {
			r, err := exchange(f.addr, "127.0.160.53", "udp", q)
			if assert.NoError(t, err) {
				assert.NotNil(t, ede(r), "answered stale by the timer")
			}
		})
	}
	wg.Wait()
	before := leftReused.Load()
	up.letGo()
	require.Eventually(t, func() bool {
		return leftReused.Load()-before >= timed && testutilGauge(t, f, "dnsfence_inflight_queries") == 0
	}, 5*time.Second, 10*time.Millisecond, "the refreshes came in, and their queries were put back for reuse")
	for i := range 40 {
		name := fmt.Sprintf("after%d.example.org.", i)
		r, err := exchange(f.addr, "127.0.160.53", "udp", question(name, dns.TypeA, true))
		require.NoError(t, err, name)
		assert.Len(t, r.Answer, 1, name)
	}
}

// TestWireDonePanicServfail: a panic where the upstream socket's reader
// hands a UDP miss its answer (WireDone; here the store, in a cache with
// no table, standing in for any bug there) answers the query SERVFAIL,
// as a panic anywhere else in its handling does; the reader's goroutine
// recovers it, the process serves on, and the upstream slot is given
// back.
func TestWireDonePanicServfail(t *testing.T) {
	needLoopback(t, "127.0.160.54", "127.0.160.55", "127.0.160.56")
	up, letGo := heldUpstreamAt(t, "127.0.160.55", nil)
	f, w := startShapeFence(t, "127.0.160.54", up.addr)
	answer := make(chan *dns.Msg, 1)
	go func() {
		r, err := exchange(f.addr, "127.0.160.56", "udp", question("held.example.org.", dns.TypeA, true))
		assert.NoError(t, err)
		answer <- r
	}()
	require.Eventually(t, func() bool { return up.distinct() == 1 }, 5*time.Second, time.Millisecond, "the miss is upstream")
	cache := f.handler.cache.Load()
	f.handler.cache.Store(&Cache{cfg: cache.cfg}) // no table: storing the answer panics
	letGo()
	var r *dns.Msg
	select {
	case r = <-answer:
	case <-time.After(5 * time.Second):
		t.Fatal("the query was never answered")
	}
	f.handler.cache.Store(cache)
	require.NotNil(t, r)
	assert.Equal(t, int64(1), w.taken.Load(), "the wire path's")
	assert.Equal(t, dns.RcodeServerFailure, r.Rcode)
	if e := ede(r); assert.NotNil(t, e) {
		assert.Equal(t, internalError, e.ExtraText)
	}
	require.Eventually(t, func() bool { return f.handler.slots.used.Load() == 0 }, 5*time.Second, time.Millisecond,
		"the slot given back")
	r = ask(t, f.addr, "127.0.160.56", "udp", question("after.example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the fence serves on")
}

// withinRecorder is a detachedRecorder that keeps the batches its answer
// was put within (listen.Detacher's Within) and whether it had been
// written by then.
type withinRecorder struct {
	*detachedRecorder
	within []listen.Batcher
	early  bool // Within came after a write
}

func (r *withinRecorder) Within(b listen.Batcher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.within = append(r.within, b)
	r.early = r.early || len(r.written) > 0
}

// TestWireDoneWritesWithinItsBatch: the upstream socket's reader writes
// the answer of a UDP miss it hands over (WireDone) within the batch of
// answers it read together, one Within with that batch before the write,
// so that the answer goes out with the batch's others (one sendmmsg).
func TestWireDoneWritesWithinItsBatch(t *testing.T) {
	needLoopback(t, "127.0.160.57", "127.0.160.58")
	up := startUpstreamAt(t, "127.0.160.58", nil)
	f, _ := startShapeFence(t, "127.0.160.57", up.addr)
	w := &withinRecorder{detachedRecorder: newDetachedRecorder()}
	w.remote = &net.UDPAddr{IP: net.ParseIP("127.0.160.59"), Port: 5300} // a client shapeConfig allows
	resume, handled := f.handler.ServeWire(w, packed(question("batched.example.org.", dns.TypeA, true)))
	require.True(t, handled)
	require.Nil(t, resume, "no worker: the upstream's reader answers")
	w.flush()
	got := w.answers(t, 1)
	require.Len(t, got, 1)
	assert.Equal(t, dns.RcodeSuccess, got[0].Rcode)
	w.mu.Lock()
	defer w.mu.Unlock()
	require.Len(t, w.within, 1, "one Within")
	assert.NotNil(t, w.within[0], "the reader's batch")
	assert.False(t, w.early, "before the write")
}

// TestWireMissUpstreamQueryCounts: the datagram a UDP miss sends upstream
// (wireQuery.upstreamQuery) counts what it holds, to the octet: one
// question, no answer or authority record, one additional record (the
// OPT), which ends the datagram; an upstream that checks the counts, as
// real servers do (miekg/dns reads past an ARCOUNT too large), answers it.
func TestWireMissUpstreamQueryCounts(t *testing.T) {
	needLoopback(t, "127.0.160.60", "127.0.160.61", "127.0.160.62")
	pc, err := net.ListenPacket("udp", "127.0.160.61:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	got := make(chan []byte, 4)
	testnet.EachDatagram(pc, func(b []byte, from net.Addr) {
		q := new(dns.Msg)
		if q.Unpack(b) != nil || len(q.Question) != 1 || q.Question[0].Name == "." {
			return // the root NS probe
		}
		got <- append([]byte(nil), b...)
		if a, err := defaultAnswer(nil, q).Pack(); err == nil {
			_, _ = pc.WriteTo(a, from)
		}
	})
	f, w := startShapeFence(t, "127.0.160.60", pc.LocalAddr().String())
	r := ask(t, f.addr, "127.0.160.62", "udp", question("counts.example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Equal(t, int64(1), w.taken.Load(), "the wire path's")
	var b []byte
	select {
	case b = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("nothing went upstream")
	}
	require.Greater(t, len(b), dnswire.HeaderLen)
	assert.Equal(t, []byte{0, 1, 0, 0, 0, 0, 0, 1}, b[4:dnswire.HeaderLen], "QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT")
	q, ok := dnswire.ReadQuestion(b)
	require.True(t, ok)
	records := 0
	end := q.End
	require.True(t, dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		records++
		assert.EqualValues(t, dnswire.TypeOPT, r.Type)
		end = r.End
		return true
	}))
	assert.Equal(t, 1, records)
	assert.Equal(t, len(b), end, "the OPT ends the datagram")
}

// TestWireAnswerSOAOnlyFromAnSOA: only an SOA record of the authority
// section bounds a cached answer's lifetime by its MINIMUM (RFC 2308 §5,
// wireOf): an SOA asked for, in the answer section, is an answer like any
// other, whatever its MINIMUM (1 here), and so is an address whose last
// octets would read as a small MINIMUM (2001:db8::1). The hits a second
// later come from the cache, aged, not from the upstream.
func TestWireAnswerSOAOnlyFromAnSOA(t *testing.T) {
	needLoopback(t, "127.0.160.63", "127.0.160.64", "127.0.160.65")
	up := startUpstreamAt(t, "127.0.160.64", func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		name := r.Question[0].Name
		if r.Question[0].Qtype == dns.TypeSOA {
			m.Answer = []dns.RR{mustRR("%s 300 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 1", name)}
		} else {
			m.Answer = []dns.RR{mustRR("%s 300 IN AAAA 2001:db8::1", name)}
		}
		return m
	})
	f, w := startShapeFence(t, "127.0.160.63", up.addr)
	questions := []*dns.Msg{question("six.example.org.", dns.TypeAAAA, true), question("zone.example.org.", dns.TypeSOA, true)}
	for _, q := range questions {
		require.Len(t, ask(t, f.addr, "127.0.160.65", "udp", q).Answer, 1)
	}
	stored := time.Now()
	require.Eventually(t, func() bool { return time.Since(stored) > 1500*time.Millisecond }, 5*time.Second, 50*time.Millisecond)
	for _, q := range questions {
		r := ask(t, f.addr, "127.0.160.65", "udp", q)
		require.Len(t, r.Answer, 1)
		assert.Greater(t, r.Answer[0].Header().Ttl, uint32(250), "aged from 300: %s", r.Answer[0])
	}
	assert.Equal(t, len(questions), up.distinct(), "the hits from the cache")
	assert.Equal(t, int64(2*len(questions)), w.taken.Load(), "the wire path's")
}
