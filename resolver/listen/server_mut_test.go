package listen

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// rejectTold is a fakeHandler that is also a RejectHandler: it answers each
// rejected message REFUSED in place of the listener's reply, as a rate
// limit's rules may, and notes what it was told.
// toldReject is what a RejectHandler was told of a rejected message.
type toldReject struct {
	transport, result string
	rcode             int
}

type rejectTold struct {
	fakeHandler
	mu   sync.Mutex
	told []toldReject
}

func (h *rejectTold) ServeReject(w ResponseWriter, reject *dns.Msg, result string) {
	h.mu.Lock()
	h.told = append(h.told, toldReject{w.Transport(), result, reject.Rcode})
	h.mu.Unlock()
	m := reject.Copy()
	m.Rcode = dns.RcodeRefused
	_ = w.WriteMsg(m)
}

// TestRejectHandlerAnswersRejects: a message a listener rejects before any
// query is parsed of it (NOTIMP for its opcode, FORMERR for two questions,
// BADVERS for an OPT of version 1) goes to a RejectHandler's ServeReject,
// with the listener's reply and its result, on UDP and TCP; what it
// writes is the one answer the client gets, and the listener counts
// nothing of it, leaving the counting to the Handler.
func TestRejectHandlerAnswersRejects(t *testing.T) {
	h := &rejectTold{fakeHandler: fakeHandler{release: make(chan struct{})}}
	var mu sync.Mutex
	var counted []string
	s := New(Config{Handler: h, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t),
		Count: func(transport, result string) {
			mu.Lock()
			defer mu.Unlock()
			counted = append(counted, transport+" "+result)
		}})
	require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := s.tcp[0].ln.Addr().String()

	notimp := txtQuery("fast.", 1)
	notimp.Opcode = dns.OpcodeStatus
	formerr := txtQuery("fast.", 2)
	formerr.Question = append(formerr.Question, formerr.Question[0])
	badvers := txtQuery("fast.", 3)
	badvers.Opcode = dns.OpcodeStatus
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)
	for _, transport := range []string{UDP, TCP} {
		t.Run(transport, func(t *testing.T) {
			h.mu.Lock()
			h.told = nil
			h.mu.Unlock()
			nc, err := net.Dial(transport, addr)
			require.NoError(t, err)
			t.Cleanup(func() { nc.Close() })
			require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
			c := &dns.Conn{Conn: nc}
			for _, m := range []*dns.Msg{notimp, formerr, badvers} {
				require.NoError(t, c.WriteMsg(m))
				r, err := c.ReadMsg()
				require.NoError(t, err)
				assert.Equal(t, m.Id, r.Id)
				assert.Equal(t, dns.RcodeRefused, r.Rcode, "the RejectHandler's answer to %d", m.Id)
			}
			// The next answer is the next query's: the listener wrote none.
			require.NoError(t, c.WriteMsg(txtQuery("fast.", 4)))
			r, err := c.ReadMsg()
			require.NoError(t, err)
			assert.Equal(t, uint16(4), r.Id, "an answer the listener wrote to a rejected message")
			h.mu.Lock()
			defer h.mu.Unlock()
			assert.Equal(t, []toldReject{{transport, ResultNotimp, dns.RcodeNotImplemented}, {transport, ResultFormerr, dns.RcodeFormatError},
				{transport, ResultBadvers, dns.RcodeBadVers}}, h.told)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, counted, "counted by the listener")
}

// TestServerCountsShortMessagesDropped: on UDP and TCP, a message shorter
// than a DNS header (12 octets) is dropped unanswered and counted
// dropped (any answer to it could be used to amplify); one of a whole
// header whose question is missing gets FORMERR, counted formerr where it
// is answered, and not dropped as well.
func TestServerCountsShortMessagesDropped(t *testing.T) {
	var mu sync.Mutex
	counted := map[string]int{}
	s := New(Config{Handler: &fakeHandler{}, Rules: func() Rules { return fakeRules{} }, Log: zaptest.NewLogger(t),
		Count: func(transport, result string) {
			mu.Lock()
			defer mu.Unlock()
			counted[transport+" "+result]++
		}})
	require.NoError(t, s.Start([]string{"127.0.191.1:0"}))
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := s.tcp[0].ln.Addr().String()
	header := txtQuery("fast.", 7)
	packed, err := header.Pack()
	require.NoError(t, err)
	header12 := packed[:12] // QDCOUNT 1, and no question
	for _, transport := range []string{UDP, TCP} {
		t.Run(transport, func(t *testing.T) {
			nc, err := net.Dial(transport, addr)
			require.NoError(t, err)
			t.Cleanup(func() { nc.Close() })
			require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
			c := &dns.Conn{Conn: nc}
			for _, m := range [][]byte{{0, 7, 0, 0}, packed[:11], header12} {
				_, err := c.Write(m) // framed on TCP
				require.NoError(t, err)
			}
			r, err := c.ReadMsg()
			require.NoError(t, err)
			assert.Equal(t, uint16(7), r.Id, "the first answer is the whole header's")
			assert.Equal(t, dns.RcodeFormatError, r.Rcode)
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return counted[transport+" "+ResultDropped] == 2 && counted[transport+" "+ResultFormerr] == 1
			}, 5*time.Second, 5*time.Millisecond, "the two short messages dropped, the header FORMERR")
		})
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, map[string]int{"udp dropped": 2, "udp formerr": 1, "tcp dropped": 2, "tcp formerr": 1}, counted)
}
