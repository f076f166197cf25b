package upstream

import (
	"net"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// questionlessFailureFirst answers every UDP query first with a datagram
// an off-path sender could forge knowing only the socket's port and one
// of the IDs waiting on it: its ID, rcode and no question section; then,
// 20 ms later, with the upstream's own answer. Over TCP only the
// upstream answers.
func questionlessFailureFirst(rcode int) func(dns.ResponseWriter, *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
			spoof := new(dns.Msg)
			spoof.SetRcode(r, rcode)
			spoof.Question = nil
			_ = w.WriteMsg(spoof)
			time.Sleep(20 * time.Millisecond)
		}
		return defaultAnswer(w, r)
	}
}

// TestQuestionlessFailureDatagramAskedOverTCP: over UDP, a failure answer
// without a question section matches its query by ID alone
// (checkDatagram); it is asked again over TCP, on the message path
// (Forward) and the wire path (ForwardWire) alike, and the upstream's
// answer is returned, not a failure. The upstream is not judged by it.
func TestQuestionlessFailureDatagramAskedOverTCP(t *testing.T) {
	for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented, dns.RcodeFormatError} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			up := startUpstream(t, questionlessFailureFirst(rcode))
			f := NewForwarder([]string{up.addr}, 2*time.Second, false)
			defer f.Close()
			resp, _, err := f.Forward(t.Context(), question("message.example.", dns.TypeA, true), false)
			require.NoError(t, err, "message path")
			assert.Equal(t, dns.RcodeSuccess, resp.Rcode, "message path")
			assert.Len(t, resp.Answer, 1, "message path")

			a, _, err := f.ForwardWire(t.Context(), wireQuestion("wire.example.", dns.TypeA))
			require.NoError(t, err, "wire path")
			rcodeOf := a.Rcode
			if a.Msg != nil {
				rcodeOf = a.Msg.Rcode
			} else {
				assert.Equal(t, 1, int(dnswire.ANCount(a.Raw)), "wire path")
			}
			assert.Equal(t, dns.RcodeSuccess, rcodeOf, "wire path")
			assert.False(t, f.upstreams[0].down.Load(), "the upstream judged by a forged datagram")
		})
	}
}

// TestQuestionlessFailureOverTCPIsTheAnswer: the same failure over TCP,
// which no off-path sender can write into, is the upstream's, failed
// over as checkAnswer takes it: a server that leaves the question out
// of its failures is still told apart by its RCODE.
func TestQuestionlessFailureOverTCPIsTheAnswer(t *testing.T) {
	up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		m.Question = nil
		return m
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	defer f.Close()
	for _, overTCP := range []bool{false, true} {
		start := time.Now()
		_, _, err := f.Forward(t.Context(), question("refused.example.", dns.TypeA, true), overTCP)
		require.Error(t, err, "over TCP %v", overTCP)
		assert.Contains(t, err.Error(), "answered REFUSED", "over TCP %v", overTCP)
		assert.Less(t, time.Since(start), time.Second, "on the answer, not a timeout")
	}
}
