//go:build linux

package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	rawCalls = false // the servers run in this process: see rawCalls
	os.Exit(m.Run())
}

// askLog is the servers' shared record of the queries they got, in the
// order they came: benchlat asks one at a time, so it is the order asked.
type askLog struct {
	mu      sync.Mutex
	servers []string
	names   map[string][]string
}

// startAnswering runs a miekg/dns server on loopback that answers
// NXDOMAIN and records each query in log under name.
func startAnswering(t *testing.T, log *askLog, name string) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		log.mu.Lock()
		log.servers = append(log.servers, name)
		log.names[name] = append(log.names[name], r.Question[0].Name)
		log.mu.Unlock()
		_ = w.WriteMsg(new(dns.Msg).SetRcode(r, dns.RcodeNameError))
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// startRaw runs a UDP socket on loopback that gives each datagram read to
// answer, which writes what it returns back; nil answers nothing.
func startRaw(t *testing.T, answer func(q []byte) [][]byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			for _, a := range answer(b[:n]) {
				_, _ = pc.WriteTo(a, from)
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// reply is q made an answer (QR set), with its ID XORed with flip.
func reply(q []byte, flip uint16) []byte {
	a := append([]byte(nil), q...)
	a[0] ^= byte(flip >> 8)
	a[1] ^= byte(flip)
	a[2] |= 0x80
	return a
}

func writeQueries(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queries.txt")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// dialAll opens each server's socket from 127.0.0.1 with its timeout.
func dialAll(t *testing.T, list servers) {
	t.Helper()
	for _, s := range list {
		fd, err := dial(netip.MustParseAddr("127.0.0.1"), s.addr, s.timeout)
		require.NoError(t, err)
		s.fd = fd
	}
}

func TestServersTakeTurnsInRounds(t *testing.T) {
	queries, err := readQueries(writeQueries(t, "# names\na.example A\nb.example AAAA\n\nc.example\n"))
	require.NoError(t, err)
	require.Len(t, queries, 3)
	log := &askLog{names: map[string][]string{}}
	var list servers
	for _, name := range []string{"x", "y", "z"} {
		// A timeout no busy machine reaches: every query is answered.
		list = append(list, &server{name: name, addr: startAnswering(t, log, name), timeout: 5 * time.Second})
	}
	dialAll(t, list)
	require.NoError(t, run(list, queries, 2*time.Millisecond, 300*time.Millisecond, 7))

	log.mu.Lock()
	defer log.mu.Unlock()
	total := len(log.servers)
	// A query every 2 ms for 300 ms is 150, and a busy machine sends far
	// fewer (25 seen while other tests ran): the schedule is
	// TestScheduleStartsAgainAfterALongWait's, and this test needs only
	// rounds to compare (seed 7 draws a second order at the third).
	require.GreaterOrEqual(t, total, 12, "four rounds at least")
	for _, s := range list {
		assert.Len(t, s.rtts, s.sent, "%s: every query answered", s.name)
		assert.InDelta(t, total/3, s.sent, 1, "%s: a third of the queries", s.name)
		for _, d := range s.rtts {
			assert.Greater(t, d, time.Duration(0))
		}
		// Each server is asked the file's questions in its order, over again.
		want := []string{"a.example.", "b.example.", "c.example."}
		for i, name := range log.names[s.name] {
			assert.Equal(t, want[i%3], name, "%s: query %d", s.name, i)
		}
		fields := strings.Fields(s.summary())
		require.Len(t, fields, 8, s.summary())
		assert.Equal(t, s.name, fields[0])
		assert.Equal(t, "0", fields[3], "none lost")
	}
	// Every round of three asks each server once, in an order of its own.
	orders := map[string]bool{}
	for i := 0; i+3 <= total; i += 3 {
		round := log.servers[i : i+3]
		assert.ElementsMatch(t, []string{"x", "y", "z"}, round, "round %d", i/3)
		orders[strings.Join(round, "")] = true
	}
	assert.Greater(t, len(orders), 1, "the order is drawn anew, not fixed")
}

func TestLostQueries(t *testing.T) {
	queries, err := readQueries(writeQueries(t, "a.example A\n"))
	require.NoError(t, err)
	refused := netip.MustParseAddrPort(testnet.RefusingAddr(t)) // held: no other process takes it
	const timeout = 50 * time.Millisecond
	list := servers{
		{name: "silent", addr: startRaw(t, func([]byte) [][]byte { return nil }), timeout: timeout},
		// Answers with the wrong ID only, a late answer's look: skipped,
		// and the wait for the right one still ends at the timeout.
		{name: "stale", addr: startRaw(t, func(q []byte) [][]byte {
			return [][]byte{reply(q, 0x5555), reply(q, 0xAAAA), reply(q, 0x0F0F)}
		}), timeout: timeout},
		{name: "refused", addr: refused, timeout: timeout},
		// A late answer first, then the answer.
		{name: "late", addr: startRaw(t, func(q []byte) [][]byte { return [][]byte{reply(q, 1), reply(q, 0)} }), timeout: 5 * time.Second},
	}
	dialAll(t, list)
	began := time.Now()
	require.NoError(t, run(list, queries, time.Millisecond, 400*time.Millisecond, 1))
	took := time.Since(began)

	silent, stale, refusedSrv, late := list[0], list[1], list[2], list[3]
	for _, s := range []*server{silent, stale, refusedSrv} {
		assert.Positive(t, s.sent, s.name)
		assert.Empty(t, s.rtts, "%s: nothing answered", s.name)
		assert.Equal(t, s.name+" "+strconv.Itoa(s.sent)+" 0 "+strconv.Itoa(s.sent)+" 0 0 0 0", s.summary())
	}
	assert.Positive(t, late.sent)
	assert.Len(t, late.rtts, late.sent, "the late answer skipped, the answer counted")
	// Each lost query waited its 50 ms and the run stopped asking at
	// 400 ms: about four rounds, not the 400 slots of a millisecond, and
	// no slot made up afterwards.
	assert.LessOrEqual(t, silent.sent, 10, "slots missed while waiting are not made up")
	assert.Less(t, took, 400*time.Millisecond+2*timeout+time.Second, "the run ends after its duration")
}

func TestScheduleStartsAgainAfterALongWait(t *testing.T) {
	c := schedule{next: 1000, interval: 100, end: 2000}
	at, ok := c.slot(900) // early: the slot stands
	assert.True(t, ok)
	assert.Equal(t, int64(1000), at)
	at, _ = c.slot(1150) // late by less than a slot: sent at once, the timetable kept
	assert.Equal(t, int64(1100), at)
	at, _ = c.slot(1660) // a long wait: no slots made up, the timetable starts again
	assert.Equal(t, int64(1660), at)
	at, _ = c.slot(1661)
	assert.Equal(t, int64(1760), at)
	at, ok = c.slot(1800)
	assert.True(t, ok)
	assert.Equal(t, int64(1860), at)
	_, ok = c.slot(1900) // next would be 1960: still inside
	assert.True(t, ok)
	_, ok = c.slot(2000) // over
	assert.False(t, ok)
}

func TestPercentilesByNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	assert.Equal(t, 25*time.Millisecond, rank(d, 25))
	assert.Equal(t, 50*time.Millisecond, rank(d, 50))
	assert.Equal(t, 99*time.Millisecond, rank(d, 99))
	assert.Equal(t, time.Millisecond, rank(d[:1], 99))
	s := &server{name: "s", sent: 101, rtts: d}
	assert.Equal(t, "s 101 100 1 50.5000 25.0000 50.0000 99.0000", s.summary())
}

func TestIPv6(t *testing.T) {
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback here:", err)
	}
	pc.Close()
	log := &askLog{names: map[string][]string{}}
	pc6, err := net.ListenPacket("udp", "[::1]:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc6, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		log.mu.Lock()
		log.servers = append(log.servers, "v6")
		log.mu.Unlock()
		_ = w.WriteMsg(new(dns.Msg).SetRcode(r, dns.RcodeNameError))
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	s := &server{name: "v6", addr: netip.MustParseAddrPort(pc6.LocalAddr().String()), timeout: 5 * time.Second}
	s.fd, err = dial(netip.MustParseAddr("::1"), s.addr, s.timeout)
	require.NoError(t, err)
	queries, err := readQueries(writeQueries(t, "a.example A\n"))
	require.NoError(t, err)
	require.NoError(t, run(servers{s}, queries, 5*time.Millisecond, 50*time.Millisecond, 1))
	assert.Positive(t, s.sent)
	assert.Len(t, s.rtts, s.sent)
}

func TestQueryFileErrorsNameTheLine(t *testing.T) {
	_, err := readQueries(writeQueries(t, "a.example A\nb.example BOGUS\n"))
	assert.ErrorContains(t, err, "queries.txt:2: unknown type \"BOGUS\"")
	_, err = readQueries(writeQueries(t, "# nothing\n"))
	assert.ErrorContains(t, err, "no questions")
}

func TestOneAddressFamily(t *testing.T) {
	_, err := dial(netip.MustParseAddr("127.0.0.2"), netip.MustParseAddrPort("[::1]:53"), time.Second)
	assert.ErrorContains(t, err, "one address family")
	_, err = dial(netip.MustParseAddr("::1"), netip.MustParseAddrPort("127.0.0.1:53"), time.Second)
	assert.ErrorContains(t, err, "one address family")
}
