package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProbeKeepsRefusingUpstreamDown: readiness and the recovery probe
// follow the rule queries follow: an upstream that answers only REFUSED is
// not an answering upstream.
func TestProbeKeepsRefusingUpstreamDown(t *testing.T) {
	bad := startUpstream(t, rcodeAnswer(dns.RcodeRefused))
	f := NewForwarder([]string{bad.addr}, time.Second, false)
	t.Cleanup(f.Close)
	err := f.Probe(context.Background())
	var re *RcodeError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, dns.RcodeRefused, re.Rcode)

	good := startUpstream(t, nil)
	g := NewForwarder([]string{bad.addr, good.addr}, time.Second, false)
	t.Cleanup(g.Close)
	assert.NoError(t, g.Probe(context.Background()))
}

// TestUpstreamFailureEDE: the client's EDE names every cause, once, in the
// order the upstreams were tried; its code is 22 unless a network error or
// an unusable answer was among them.
func TestUpstreamFailureEDE(t *testing.T) {
	servfail := startUpstream(t, rcodeAnswer(dns.RcodeServerFailure)).addr
	refused := startUpstream(t, rcodeAnswer(dns.RcodeRefused)).addr
	silent := silentUpstream(t)
	tests := []struct {
		name      string
		upstreams []string
		code      uint16
		text      string
		causes    string
	}{
		{name: "all silent", upstreams: []string{silent, silentUpstream(t)}, code: dns.ExtendedErrorCodeNoReachableAuthority,
			text: "no upstream answered in time", causes: "timeout"},
		{name: "servfail then silent", upstreams: []string{servfail, silent}, code: dns.ExtendedErrorCodeNoReachableAuthority,
			text: "upstream answered SERVFAIL; upstream did not answer in time", causes: "rcode_servfail,timeout"},
		{name: "servfail then refused", upstreams: []string{servfail, refused}, code: dns.ExtendedErrorCodeNoReachableAuthority,
			text: "upstream answered SERVFAIL; upstream answered REFUSED", causes: "rcode_servfail,rcode_refused"},
		{name: "closed port then refused", upstreams: []string{closedPort(t), refused}, code: dns.ExtendedErrorCodeNetworkError,
			text: "upstream unreachable: network error; upstream answered REFUSED", causes: "network,rcode_refused"},
		// One cause that is no timeout, and a timeout first with another
		// after it, are each said as they are: "no upstream answered in
		// time" only when every try timed out.
		{name: "all servfail", upstreams: []string{servfail, startUpstream(t, rcodeAnswer(dns.RcodeServerFailure)).addr},
			code: dns.ExtendedErrorCodeNoReachableAuthority, text: "upstream answered SERVFAIL", causes: "rcode_servfail"},
		{name: "silent then servfail", upstreams: []string{silent, servfail}, code: dns.ExtendedErrorCodeNoReachableAuthority,
			text: "upstream did not answer in time; upstream answered SERVFAIL", causes: "timeout,rcode_servfail"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := NewForwarder(tc.upstreams, 200*time.Millisecond, false)
			t.Cleanup(fw.Close)
			_, _, err := fw.Forward(context.Background(), question("x.example.org.", dns.TypeA, true), false)
			var ue *UpstreamError
			require.ErrorAs(t, err, &ue)
			assert.ErrorIs(t, err, ErrAllUpstreamsFailed)
			code, text := ue.EDE()
			assert.Equal(t, tc.code, code)
			assert.Equal(t, tc.text, text)
			assert.Equal(t, tc.causes, ue.Causes())
			assert.Equal(t, tc.causes == "timeout", ue.Timeout)
			assert.Equal(t, tc.causes == "rcode_servfail", ue.AllServfail(), "every upstream answered SERVFAIL")
		})
	}
	assert.False(t, new(UpstreamError).AllServfail(), "no failure is no SERVFAIL")
}

// TestFailureAnswerIsTheLast: the answer an UpstreamError keeps (Answer,
// whose Extended DNS Errors a client's SERVFAIL relays when it is a
// SERVFAIL) is the last upstream's failure answer, not the first's: a
// SERVFAIL's DNSSEC Bogus is not relayed when the next upstream answered
// REFUSED, and the second SERVFAIL's reason is the one kept.
func TestFailureAnswerIsTheLast(t *testing.T) {
	failing := func(rcode int, ede uint16) string {
		answer := rcodeAnswer(rcode, &dns.EDNS0_EDE{InfoCode: ede})
		return startUpstreamOn(t, "127.0.188.1", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if r.Question[0].Name == "." {
				return defaultAnswer(w, r) // the health check's probe stands
			}
			return answer(w, r)
		}).addr
	}
	bogus := failing(dns.RcodeServerFailure, dns.ExtendedErrorCodeDNSBogus)
	for _, tc := range []struct {
		name  string
		next  string
		rcode int
		ede   uint16
	}{
		{name: "then REFUSED", next: failing(dns.RcodeRefused, dns.ExtendedErrorCodeProhibited),
			rcode: dns.RcodeRefused, ede: dns.ExtendedErrorCodeProhibited},
		{name: "then another SERVFAIL", next: failing(dns.RcodeServerFailure, dns.ExtendedErrorCodeDNSKEYMissing),
			rcode: dns.RcodeServerFailure, ede: dns.ExtendedErrorCodeDNSKEYMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := NewForwarder([]string{bogus, tc.next}, 2*time.Second, false)
			t.Cleanup(fw.Close)
			_, _, err := fw.Forward(context.Background(), question("x.example.org.", dns.TypeA, true), false)
			var ue *UpstreamError
			require.ErrorAs(t, err, &ue)
			require.Len(t, ue.Errs, 2, "both upstreams asked: %v", err)
			require.NotNil(t, ue.Answer)
			assert.Equal(t, tc.rcode, ue.Answer.Rcode)
			require.NotNil(t, ue.Answer.IsEdns0())
			require.Len(t, ue.Answer.IsEdns0().Option, 1)
			assert.Equal(t, tc.ede, ue.Answer.IsEdns0().Option[0].(*dns.EDNS0_EDE).InfoCode)
		})
	}
}

// FuzzUpstreamAnswer feeds any datagram to a query waiting on an upstream
// socket: nothing panics; a datagram with another ID leaves the query
// waiting; one with its ID ends the wait at once, and is accepted only when
// it is a response to exactly the question asked, else it is an
// ErrAnswerUnusable kind. One with a record miekg/dns does not read
// (RdataError) is held to the same (checkUnread), read from its octets.
func FuzzUpstreamAnswer(f *testing.F) {
	q := question("www.example.org.", dns.TypeA, true)
	q.Id = 0x1234
	for _, m := range []*dns.Msg{defaultAnswer(nil, q), liedAnswer(q), rcodeAnswer(dns.RcodeRefused)(nil, q)} {
		f.Add(packed(m))
	}
	big := packed(bigAnswer(nil, q))
	f.Add(big)
	f.Add(big[:upstreamBuf])
	f.Add([]byte{0x12, 0x34, 0x81, 0x80})
	f.Add(unreadHintAnswer(f, q))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s := &upstreamSocket{pending: map[uint16]*waiter{}}
		w := &waiter{answer: make(chan []byte, 1)}
		s.pending[q.Id] = w
		s.issued[q.Id/64] |= 1 << (q.Id % 64)
		s.deliver(raw[:min(len(raw), upstreamBuf)], len(raw) > upstreamBuf, nil)
		if len(raw) < 12 || binary.BigEndian.Uint16(raw) != q.Id {
			if s.pending[q.Id] != w {
				t.Fatal("a datagram with another ID ended the wait")
			}
			return
		}
		var resp *dns.Msg
		var err error
		select {
		case b, ok := <-w.answer:
			if !ok {
				err = w.err
			} else if resp, err = UnpackAnswer(b); err == nil {
				err = checkAnswer(resp, q)
			}
		default:
			t.Fatal("a datagram with the query's ID left it waiting")
		}
		if err != nil {
			if !errors.Is(err, ErrAnswerUnusable) {
				t.Fatalf("error of no kind: %v", err)
			}
			var rd *RdataError
			if errors.As(err, &rd) && checkUnread(err, q.Id, q) == err {
				b := rd.Raw
				name, off, nerr := dns.UnpackDomainName(b, dnswire.HeaderLen)
				if dnswire.Flags(b)&dnswire.FlagQR == 0 || dnswire.ID(b) != q.Id || dnswire.QDCount(b) != 1 || nerr != nil ||
					off+4 > len(b) || !strings.EqualFold(name, q.Question[0].Name) ||
					binary.BigEndian.Uint16(b[off:]) != q.Question[0].Qtype || binary.BigEndian.Uint16(b[off+2:]) != q.Question[0].Qclass {
					t.Fatalf("accepted an unread answer for another question, or no answer: % x", b)
				}
			}
			return
		}
		if !resp.Response || resp.Id != q.Id {
			t.Fatalf("accepted a datagram that is no answer: %v", resp)
		}
		if len(resp.Question) == 0 && failureRcode(resp.Rcode) {
			return
		}
		if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Question[0].Name) ||
			resp.Question[0].Qtype != q.Question[0].Qtype || resp.Question[0].Qclass != q.Question[0].Qclass {
			t.Fatalf("accepted an answer for another question: %v", resp.Question)
		}
	})
}

// TestForwardComparesQuestionsInWireForm: the upstream's answer echoes the
// question in the form miekg/dns unpacks it; a question written with
// escapes (explain -resolve takes names as typed) or in another case is the
// same question, and a different one is still refused.
func TestForwardComparesQuestionsInWireForm(t *testing.T) {
	var other atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if other.Load() {
			m.Question[0].Name = "tiktok.com.example."
		}
		return m
	})
	fw := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(fw.Close)
	for _, name := range []string{`cl\101an.example.`, `CL\069AN.Example.`, `\099\108\101\097\110.example.`, rep(`\001`, 63) + ".example."} {
		resp, _, err := fw.Forward(t.Context(), question(name, dns.TypeA, false), false)
		require.NoError(t, err, name)
		assert.Equal(t, dns.RcodeSuccess, resp.Rcode, name)
		assert.Len(t, resp.Answer, 1, name)
	}
	other.Store(true)
	_, _, err := fw.Forward(t.Context(), question(`tiktok\.com.example.`, dns.TypeA, false), false)
	assert.Error(t, err, "an answer to another question")
}

// TestForwardRefusesAnswersToAnotherQuestion: an upstream answer is taken
// only as the response to the very question asked (RFC 5452 §9.1): not one
// whose question has another class, not the query itself sent back (QR
// clear), not one with a second question, not one of another opcode (RFC
// 1035 §4.1.1: copied from the query); over UDP in wire form and as a
// message, and over TCP. Each path checks the answer on its own, so each
// is asked.
func TestForwardRefusesAnswersToAnotherQuestion(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(m *dns.Msg)
	}{
		{"another class", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }},
		{"the query sent back", func(m *dns.Msg) { m.Response = false }},
		{"another opcode", func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }},
		{"a second question", func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "tiktok.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				m := defaultAnswer(w, r)
				if r.Question[0].Name != "." { // the health check's probe stands
					tc.edit(m)
				}
				return m
			})
			fw := NewForwarder([]string{up.addr}, 2*time.Second, false)
			t.Cleanup(fw.Close)
			for _, tcp := range []bool{false, true} {
				resp, _, err := fw.Forward(t.Context(), question("www.example.org.", dns.TypeA, true), tcp)
				assert.Equal(t, "mismatch", causes(err), "message path, TCP %v: %v", tcp, resp)
			}
			a, _, err := fw.ForwardWire(t.Context(), wireQuestion("www.example.org.", dns.TypeA))
			assert.Equal(t, "mismatch", causes(err), "wire path: %v", a)
		})
	}
}

// causes is the error kinds of err, an *UpstreamError (UpstreamError.Causes),
// or "" when err is none.
func causes(err error) string {
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		return ""
	}
	return ue.Causes()
}
