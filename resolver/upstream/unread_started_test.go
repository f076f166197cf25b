package upstream

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// truncatedThenUnread answers an HTTPS question with TC set and no
// record over UDP, and over TCP with an HTTPS record miekg/dns does not
// read (unreadHintAnswer): a whole answer, the upstream's, that the wire
// path gets as an RdataError after its retry over TCP.
func truncatedThenUnread(t *testing.T) func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Qtype != dns.TypeHTTPS {
			return defaultAnswer(w, r)
		}
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			m := new(dns.Msg).SetReply(r)
			m.Truncated = true
			return m
		}
		_, _ = w.Write(unreadHintAnswer(t, r))
		return nil
	}
}

// TestUnreadAnswerEndsStartedQuery: a started wire query (StartWire) ends
// with an upstream's whole answer that miekg/dns does not read, as
// ForwardWire's does (forwardHedged): the first upstream's, which came
// over TCP after a truncated datagram, is the query's answer and the next
// upstream is not asked; the hedge's, while the first try is still in
// flight, ends the query at once rather than waiting out the first try's
// timeout.
func TestUnreadAnswerEndsStartedQuery(t *testing.T) {
	t.Run("first try", func(t *testing.T) {
		for _, started := range []bool{false, true} {
			name := "ForwardWire"
			if started {
				name = "StartWire"
			}
			t.Run(name, func(t *testing.T) {
				first := startUpstreamOn(t, "127.0.78.1", truncatedThenUnread(t))
				var asked atomic.Int64
				second := startUpstreamOn(t, "127.0.78.1", countingAnswer(&asked))
				f := NewForwarder([]string{first.addr, second.addr}, 8*time.Second, false)
				defer f.Close()
				// No hedge while the first try is under way: its hedge
				// delay is a quarter of the timeout.
				f.upstreams[0].rtt.Store(int64(time.Hour))
				q := wireQuestion("a.svcb.example.", dns.TypeHTTPS)
				var r wireResult
				if started {
					then := make(thenChan, 2)
					f.StartWire(q, then, nil)
					r = then.wait(t)
				} else {
					r.a, r.from, r.err = f.ForwardWire(context.Background(), q)
				}
				var ue *UpstreamError
				require.ErrorAs(t, r.err, &ue, "the first upstream's answer, from %q", r.from)
				assert.NotNil(t, ue.Unread)
				assert.Equal(t, first.addr, ue.UnreadFrom)
				assert.Zero(t, asked.Load(), "the first upstream answered: the second is not asked")
			})
		}
	})

	t.Run("hedge", func(t *testing.T) {
		hedged := make(chan struct{})
		var once sync.Once
		silent := startUpstreamOn(t, "127.0.78.1", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if r.Question[0].Name == "." {
				return defaultAnswer(w, r) // up, for the probes
			}
			once.Do(func() { close(hedged) })
			return nil
		}).addr
		second := startUpstreamOn(t, "127.0.78.1", truncatedThenUnread(t))
		f := NewForwarder([]string{silent, second.addr}, time.Minute, false)
		defer f.Close()
		then := make(thenChan, 2)
		f.StartWire(wireQuestion("b.svcb.example.", dns.TypeHTTPS), then, nil)
		<-hedged
		r := then.wait(t) // within 5 s: not after the first try's minute
		var ue *UpstreamError
		require.ErrorAs(t, r.err, &ue)
		assert.NotNil(t, ue.Unread)
		assert.Equal(t, second.addr, ue.UnreadFrom)
	})
}

// TestUnreadAnswerOverTCPHasQueryID: a wire query's answer with a record
// miekg/dns does not read that came over TCP after a truncated datagram
// carries the query's own ID (UpstreamError.Unread: "with the query's ID"),
// as an answer read over TCP does (exchangeTCPWire), not the fresh one the
// retry over TCP was sent with. ForwardWire and StartWire alike.
func TestUnreadAnswerOverTCPHasQueryID(t *testing.T) {
	up := startUpstreamOn(t, "127.0.78.2", truncatedThenUnread(t))
	f := NewForwarder([]string{up.addr}, 5*time.Second, false)
	defer f.Close()
	for _, started := range []bool{false, true} {
		q := wireQuestion("id.svcb.example.", dns.TypeHTTPS)
		var err error
		if started {
			then := make(thenChan, 2)
			f.StartWire(q, then, nil)
			err = then.wait(t).err
		} else {
			_, _, err = f.ForwardWire(context.Background(), q)
		}
		var ue *UpstreamError
		require.ErrorAs(t, err, &ue)
		require.NotNil(t, ue.Unread)
		assert.Equal(t, uint16(0x1234), dnswire.ID(ue.Unread), "started %v: the query's own ID", started)
	}
}
