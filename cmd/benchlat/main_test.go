package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answering is a miekg/dns server on loopback answering NXDOMAIN, which
// keeps the names asked, in order.
type answering struct {
	addr  netip.AddrPort
	mu    sync.Mutex
	names []string
}

func startAnswering(t *testing.T) *answering {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	a := &answering{addr: netip.MustParseAddrPort(pc.LocalAddr().String())}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		a.mu.Lock()
		a.names = append(a.names, r.Question[0].Name)
		a.mu.Unlock()
		_ = w.WriteMsg(new(dns.Msg).SetRcode(r, dns.RcodeNameError))
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return a
}

// silent is a UDP socket on loopback that reads and never answers.
func silent(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func writeQueries(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queries.txt")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

func TestServersTakeTurnsAndLossIsCounted(t *testing.T) {
	queries, err := readQueries(writeQueries(t, "# names\na.example A\nb.example AAAA\n\nc.example\n"))
	require.NoError(t, err)
	require.Len(t, queries, 3)
	ans := startAnswering(t)
	src := netip.MustParseAddr("127.0.0.1")
	list := servers{{name: "answers", addr: ans.addr}, {name: "silent", addr: silent(t)}}
	for _, s := range list {
		s.fd, err = dial(src, s.addr, 20*time.Millisecond)
		require.NoError(t, err)
	}
	// 40 slots of 5 ms, two servers: 20 queries each.
	require.NoError(t, run(list, queries, 5*time.Millisecond, 200*time.Millisecond, 7))

	answers, quiet := list[0], list[1]
	assert.Equal(t, 20, answers.sent)
	assert.Len(t, answers.rtts, 20, "every query to the answering server is answered")
	for _, d := range answers.rtts {
		assert.Greater(t, d, time.Duration(0))
		assert.Less(t, d, 20*time.Millisecond)
	}
	assert.Equal(t, 20, quiet.sent)
	assert.Empty(t, quiet.rtts, "no answer is no round trip")

	// Each server is asked the file's questions in its order, over again.
	ans.mu.Lock()
	defer ans.mu.Unlock()
	want := []string{"a.example.", "b.example.", "c.example."}
	for i, name := range ans.names {
		assert.Equal(t, want[i%3], name, "query %d", i)
	}

	fields := strings.Fields(answers.summary())
	require.Len(t, fields, 7, answers.summary())
	assert.Equal(t, []string{"answers", "20", "20", "0"}, fields[:4])
	assert.Equal(t, "silent 20 0 20 0 0 0", quiet.summary())
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
}
