package resolver

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// poisoningHandler serves the wire path through h and, once ServeWire has
// returned, overwrites what the listener and the pools hand out again: the
// datagram (the listener's read buffer, when ServeWire took it), a name
// buffer (nameBufs) and an answer buffer (answerBufs). On the loop's
// goroutine the pools usually give back the very buffer just put, so that
// anything still reading one of them afterwards reads 0xEE.
type poisoningHandler struct{ *Handler }

func (p poisoningHandler) ServeWire(w listen.ResponseWriter, b []byte) (func(), bool) {
	resume, handled := p.Handler.ServeWire(w, b)
	if handled {
		for i := range b {
			b[i] = 0xEE
		}
	}
	nb := nameBufs.Get().(*[maxNameText]byte)
	for i := range nb {
		nb[i] = 0xEE
	}
	nameBufs.Put(nb)
	ab := answerBufs.Get().(*[]byte)
	full := (*ab)[:cap(*ab)]
	for i := range full {
		full[i] = 0xEE
	}
	answerBufs.Put(ab)
	return resume, handled
}

// TestMixedWireLoadReadsNoReusedMemory: a mix of every path a wire query takes
// (blocked inline, packed and as a message; cache hits with prefetch;
// misses started with StartWire, joined, truncated and asked again over
// TCP, failed with SERVFAIL; names in mixed case), from several clients at
// once, with the listener's datagram, the name buffers and the answer
// buffers overwritten after every ServeWire and every reused query's
// memory overwritten (leftpool_test's init). Every answer, every audit
// line and every cache key is checked against what was asked: none may
// hold another query's bytes.
func TestMixedWireLoadReadsNoReusedMemory(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		name := strings.ToLower(r.Question[0].Name)
		_, tcp := w.RemoteAddr().(*net.TCPAddr)
		m := new(dns.Msg)
		m.SetReply(r)
		switch {
		case strings.HasPrefix(name, "sf"):
			m.Rcode = dns.RcodeServerFailure
			return m
		case strings.HasPrefix(name, "tc") && !tcp:
			m.Truncated = true
			return m
		}
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
			A: nameAddress(name)})
		return m
	})
	cfg := strings.Replace(testConfig, "log: {queries: all}", "log: {queries: all, audit_limit: 0}\ncache: {prefetch: true}", 1)
	// Reused memory is this test's subject, not timeouts: 540 queries from
	// six clients at once under -race met testConfig's 300 ms
	// upstream_timeout once in a full run (a forwarded name without an
	// answer), as TestManyRecordAnswersBoundedInTheCache's did.
	cfg = strings.Replace(cfg, "upstream_timeout: 300ms", "upstream_timeout: 5s", 1)
	core, logs := observer.New(zap.InfoLevel)
	f := startFenceServing(t, zap.New(core), cfg, testFiles, func(h *Handler) listen.Handler { return poisoningHandler{h} }, up.addr)
	h, addr := f.handler, f.addr

	type asked struct {
		name, from string
		check      func(t *testing.T, name string, got *dns.Msg)
	}
	forwarded := func(t *testing.T, name string, got *dns.Msg) {
		if assert.Len(t, got.Answer, 1, name) {
			a, ok := got.Answer[0].(*dns.A)
			if assert.True(t, ok, name) {
				assert.Equal(t, nameAddress(strings.ToLower(name)).String(), a.A.String(), name)
				assert.Equal(t, name, a.Hdr.Name, name)
			}
		}
	}
	rcode := func(want int) func(t *testing.T, name string, got *dns.Msg) {
		return func(t *testing.T, name string, got *dns.Msg) { assert.Equal(t, want, got.Rcode, name) }
	}
	var mu sync.Mutex
	sent := map[string]bool{}
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Go(func() {
			for r := range 10 {
				pad := strings.Repeat("p", (c*7+r*3)%40) // names of many lengths
				for _, q := range []asked{
					{fmt.Sprintf("s%d.example.org.", r%3), "127.0.0.3", forwarded},               // shared: joined, then hits
					{fmt.Sprintf("u%s%d-%d.example.org.", pad, c, r), "127.0.0.3", forwarded},    // a miss of its own
					{fmt.Sprintf("MiXeD%d-%d.Example.ORG.", c, r), "127.0.0.3", forwarded},       // mixed case
					{fmt.Sprintf("tc%d-%d.example.org.", c, r), "127.0.0.3", forwarded},          // truncated: TCP
					{fmt.Sprintf("sf%d-%d.example.org.", c, r), "127.0.0.3", rcode(2)},           // SERVFAIL
					{fmt.Sprintf("x%s%d-%d.tiktok.com.", pad, c, r), "127.0.0.1", rcode(3)},      // blocked inline, packed
					{fmt.Sprintf("n%s%d-%d.tiktok.com.", pad, c, r), "127.0.0.7", rcode(0)},      // blocked inline, null
					{fmt.Sprintf("a%s%d-%d.ads.tiktok.com.", pad, c, r), "127.0.0.1", forwarded}, // allowed: entry logged
					{fmt.Sprintf("s%d.example.org.", r%3), "127.0.0.1", forwarded},               // hit for another policy
				} {
					mu.Lock()
					sent[strings.ToLower(q.name)] = true
					mu.Unlock()
					m := question(q.name, dns.TypeA, r%2 == 0)
					got, err := exchange(addr, q.from, "udp", m)
					if !assert.NoError(t, err, q.name) {
						continue
					}
					assert.Equal(t, m.Id, got.Id, q.name)
					if assert.Len(t, got.Question, 1, q.name) {
						assert.Equal(t, q.name, got.Question[0].Name)
					}
					q.check(t, q.name, got)
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // prefetches and late answers

	// Every audit line names a query that was asked, and its entry is a
	// suffix of that name.
	lines := logs.FilterMessage("query").All()
	require.NotEmpty(t, lines)
	for i, l := range lines {
		m := l.ContextMap()
		qname, _ := m[logQName].(string)
		assert.True(t, sent[qname], "line %d: qname %q was never asked", i, qname)
		if entry, ok := m[logEntry].(string); ok {
			assert.True(t, strings.HasSuffix(strings.TrimSuffix(qname, "."), entry), "line %d: entry %q of %q", i, entry, qname)
		}
	}

	// Every cache key is its entry's question, and its sum its own.
	tbl := h.cache.Load().t
	n := 0
	for i := range tbl.shards {
		s := &tbl.shards[i]
		s.mu.Lock()
		for _, slot := range s.ring {
			n++
			msg := slot.e.message()
			if !assert.NotNil(t, msg, "key %q", slot.key.name) || !assert.Len(t, msg.Question, 1) {
				continue
			}
			assert.Equal(t, strings.ToLower(msg.Question[0].Name), slot.key.name)
			assert.True(t, sent[slot.key.name], "key %q was never asked", slot.key.name)
			assert.Equal(t, cacheKeySum(slot.key), slot.key.sum, "key %q", slot.key.name)
			if idx, ok := s.index[slot.key.sum]; assert.True(t, ok, "key %q", slot.key.name) {
				assert.Equal(t, slot.key, s.ring[idx].key)
			}
		}
		s.mu.Unlock()
	}
	t.Logf("%d audit lines, %d cache entries, %d reused queries, upstream %d queries", len(lines), n, leftReused.Load(), up.count.Load())
}
