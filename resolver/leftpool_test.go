package resolver

import (
	"fmt"
	"hash/fnv"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// leftReused counts the wireLeft structs put back for reuse in this test
// binary.
var leftReused atomic.Int64

func init() {
	// Every wireLeft is overwritten before it is reused, in every test of
	// the package: anything that reads one after its release (an upstream
	// datagram, a name, a joiner's result) reads nonsense, which the tests
	// of the wire path see as a wrong or missing answer.
	releasedLeft = func(l *wireLeft) {
		for i := range l.mem {
			l.mem[i] = 0xEE
		}
		leftReused.Add(1)
	}
}

// nameAddress is the address the upstream of
// TestLeftQueriesReusedAfterTheirAnswer gives name: its own, so that an
// answer given for another name shows.
func nameAddress(name string) net.IP {
	h := fnv.New32a()
	h.Write([]byte(name))
	s := h.Sum32()
	return net.IPv4(10, byte(s>>16), byte(s>>8), byte(s))
}

// nameAnswer answers each question, after delay, with nameAddress of its
// name and a TTL of 1 s.
func nameAnswer(delay time.Duration) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		time.Sleep(delay)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
			A: nameAddress(q.Name)})
		return m
	}
}

// TestLeftQueriesReusedAfterTheirAnswer: misses that went out with
// StartWire are reused once answered (leftPool), and no answer is the
// worse for it. Clients ask, at once and over and over, names of which
// several are in flight together (the later ones join the first one's
// call, and read its result after it is answered) and names asked once;
// the upstream answers each name with an address of its own after a
// delay, and every client checks its answer's ID, question and address.
// The memory of every reused query is overwritten first (init).
func TestLeftQueriesReusedAfterTheirAnswer(t *testing.T) {
	up := startUpstream(t, nameAnswer(20*time.Millisecond))
	// Not a test of timeouts: 96 queries delayed 20 ms each at once
	// outlast testConfig's 300 ms on a loaded machine.
	fc := startFence(t, strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 5s", 1), testFiles, up.addr)
	srv := NewServer(fc.handler.log, fc.handler)
	require.NoError(t, srv.Start([]string{"127.0.0.1:0"}))
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	addr := srv.Addrs()[0]
	before := leftReused.Load()
	const clients, rounds = 8, 12
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for r := range rounds {
				// Shared names, asked by every client each round (one
				// asks, the others join), then one of the client's own.
				for _, name := range []string{
					fmt.Sprintf("shared%d.example.org.", r),
					fmt.Sprintf("own%d-%d.example.org.", c, r),
				} {
					m := question(name, dns.TypeA, r%2 == 0)
					got, err := exchange(addr, "127.0.0.3", "udp", m)
					if !assert.NoError(t, err, name) {
						continue
					}
					require.Len(t, got.Question, 1, name)
					assert.Equal(t, name, got.Question[0].Name)
					assert.Equal(t, m.Id, got.Id)
					if assert.Len(t, got.Answer, 1, name) {
						assert.Equal(t, nameAddress(name).String(), got.Answer[0].(*dns.A).A.String(), name)
					}
				}
			}
		})
	}
	wg.Wait()
	assert.Positive(t, leftReused.Load()-before, "the answered misses were reused")
}

// TestLeftQueriesReusedWithHedges: a query whose first upstream is slower
// than its hedge delay is answered by the second, and reused, while its
// first try still waits on its socket; that try's late answer comes
// after and must touch nothing of the query (StartWire's tries work on a
// copy when there is more than one upstream). Every answer is checked as
// in TestLeftQueriesReusedAfterTheirAnswer.
func TestLeftQueriesReusedWithHedges(t *testing.T) {
	// The first upstream answers after the largest hedge delay, a quarter
	// of the timeout; the second at once.
	slow, fast := startUpstream(t, nameAnswer(350*time.Millisecond)), startUpstream(t, nameAnswer(0))
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 1s\nupstream_strategy: ordered", 1)
	fc := startFence(t, cfg, testFiles, slow.addr, fast.addr)
	srv := NewServer(fc.handler.log, fc.handler)
	require.NoError(t, srv.Start([]string{"127.0.0.1:0"}))
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	addr := srv.Addrs()[0]
	before := leftReused.Load()
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Go(func() {
			for r := range 4 {
				name := fmt.Sprintf("hedged%d-%d.example.org.", c, r)
				m := question(name, dns.TypeA, true)
				got, err := exchange(addr, "127.0.0.3", "udp", m)
				if !assert.NoError(t, err, name) {
					continue
				}
				assert.Equal(t, m.Id, got.Id)
				if assert.Len(t, got.Answer, 1, name) {
					assert.Equal(t, nameAddress(name).String(), got.Answer[0].(*dns.A).A.String(), name)
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(400 * time.Millisecond) // the slow upstream's late answers
	assert.Positive(t, leftReused.Load()-before, "the answered misses were reused")
	assert.Positive(t, fast.count.Load(), "hedged to the second upstream")
}

// TestAuditLineOwnsItsText: the audit line of a wire query keeps its name
// and the matched entry's text (a slice of the name) as copies, whether or
// not the query was unpacked on its way: the name is in memory a later
// query reuses (the listener's buffer for a query answered inline, the
// left query's own, from leftPool, for one that went upstream), and a log
// core may keep a field (zaptest/observer does). The names grow, so that
// the entry of one is elsewhere in the next.
func TestAuditLineOwnsItsText(t *testing.T) {
	servfail := func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		return m
	}
	shadow := strings.Replace(testConfig, "action: null", "action: log", 1)
	for _, tc := range []struct {
		name, config, client, entry string
		rcode                       int
		left                        bool // the queries go upstream, and are reused
		names                       func(i int) string
	}{
		// Blocked inline by the nulling policy: the answer is built as a
		// message, so the query was unpacked.
		{"null block inline", testConfig, "127.0.0.7", "tiktok.com", dns.RcodeSuccess, false,
			func(i int) string { return strings.Repeat("n", i+1) + ".tiktok.com." }},
		// Blocked by the same policy in shadow mode (action: log): logged,
		// forwarded, and unpacked for the upstreams' SERVFAIL.
		{"shadow block upstream", shadow, "127.0.0.7", "tiktok.com", dns.RcodeServerFailure, true,
			func(i int) string { return strings.Repeat("s", i+1) + ".tiktok.com." }},
		// Allowed by an entry of government-devices' allow list, logged
		// with log.queries: all.
		{"allow entry upstream", shadow, "127.0.0.1", "ads.tiktok.com", dns.RcodeServerFailure, true,
			func(i int) string { return strings.Repeat("a", i+1) + ".ads.tiktok.com." }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, servfail)
			core, logs := observer.New(zap.InfoLevel)
			f := startFenceLog(t, zap.New(core), tc.config, testFiles, up.addr)
			before := leftReused.Load()
			const n = 8
			for i := range n {
				m := question(tc.names(i), dns.TypeA, true)
				got, err := exchange(f.addr, tc.client, "udp", m)
				require.NoError(t, err)
				require.Equal(t, tc.rcode, got.Rcode)
			}
			if tc.left {
				require.Positive(t, leftReused.Load()-before, "the misses went out with StartWire and were reused")
			}
			lines := logs.FilterMessage("query").All()
			require.Len(t, lines, n)
			for i, l := range lines {
				m := l.ContextMap()
				assert.Equal(t, tc.names(i), m[logQName], "line %d", i)
				assert.Equal(t, tc.entry, m[logEntry], "line %d", i)
			}
		})
	}
}

// TestLeftQueriesReusedOnEveryUpstreamPath: with one plain upstream,
// where StartWire sends the query from the left query's own memory (upq
// in l.mem), the paths that read it are all done before the query is
// reused: joiners of a call (shared names), an
// answer truncated over UDP and asked again over TCP on a goroutine
// (wireTry.answered), a SERVFAIL (putFailure with q.request()), a slow
// answer sent again by the socket's resend (waiter.packet is upq) whose
// second answer comes late, and no answer at all (the sweep's timeout).
// Every answer's ID, question and content is checked.
func TestLeftQueriesReusedOnEveryUpstreamPath(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		name := r.Question[0].Name
		_, tcp := w.RemoteAddr().(*net.TCPAddr)
		m := new(dns.Msg)
		m.SetReply(r)
		switch {
		case strings.HasPrefix(name, "lost"):
			return nil
		case strings.HasPrefix(name, "sf"):
			m.Rcode = dns.RcodeServerFailure
			return m
		case strings.HasPrefix(name, "tc") && !tcp:
			m.Truncated = true
			return m
		case strings.HasPrefix(name, "slow"):
			time.Sleep(120 * time.Millisecond)
		}
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
			A: nameAddress(name)})
		return m
	})
	f := startFenceOn(t, "127.0.0.1:0", up.addr)
	before := leftReused.Load()
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Go(func() {
			for r := range 3 {
				for _, name := range []string{
					fmt.Sprintf("ok%d.example.org.", r), fmt.Sprintf("ok%d-%d.example.org.", c, r),
					fmt.Sprintf("tc%d.example.org.", r), fmt.Sprintf("sf%d-%d.example.org.", c, r),
					fmt.Sprintf("slow%d.example.org.", r), fmt.Sprintf("lost%d.example.org.", r),
				} {
					m := question(name, dns.TypeA, r%2 == 0)
					got, err := exchange(f.addr, "127.0.0.3", "udp", m)
					if !assert.NoError(t, err, name) {
						continue
					}
					assert.Equal(t, m.Id, got.Id, name)
					if assert.Len(t, got.Question, 1, name) {
						assert.Equal(t, name, got.Question[0].Name)
					}
					switch {
					case strings.HasPrefix(name, "sf"), strings.HasPrefix(name, "lost"):
						assert.Equal(t, dns.RcodeServerFailure, got.Rcode, name)
					default:
						if assert.Len(t, got.Answer, 1, name) {
							assert.Equal(t, nameAddress(name).String(), got.Answer[0].(*dns.A).A.String(), name)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // late answers to resent queries
	assert.Positive(t, leftReused.Load()-before)
	tcp := 0
	for _, q := range up.queries() {
		if q.tcp {
			tcp++
		}
	}
	t.Logf("upstream: %d datagrams, %d distinct (the rest resends), %d over TCP; %d reused", up.datagrams.Load(), up.distinct(), tcp, leftReused.Load()-before)
}
