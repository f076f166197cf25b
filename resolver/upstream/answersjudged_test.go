package upstream

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAnswerRcodesNotFailedOver: NOERROR, NXDOMAIN and YXDOMAIN are
// answers (failureRcode), returned from the first upstream as they came,
// over the message path and the wire path: a YXDOMAIN is the answer to a
// query whose DNAME substitution made a name too long (RFC 6672 §2.2), not
// a failure of the upstream to fail over from. The other RCODEs' failover
// is TestFailoverOnFailureRcodes's (package resolver).
func TestAnswerRcodesNotFailedOver(t *testing.T) {
	for _, rcode := range []int{dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeYXDomain} {
		t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
			first := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name == "." {
					return defaultAnswer(w, r) // the health check
				}
				return rcodeAnswer(rcode)(w, r)
			})
			second := startUpstream(t, nil)
			f := NewForwarder([]string{first.addr, second.addr}, 2*time.Second, false)
			t.Cleanup(f.Close)

			resp, from, err := f.Forward(context.Background(), clientQuery("x.dname.example.", false), false)
			require.NoError(t, err)
			assert.Equal(t, first.addr, from)
			assert.Equal(t, rcode, resp.Rcode)

			a, from, err := f.ForwardWire(context.Background(), wireQuestion("x.dname.example.", dns.TypeA))
			require.NoError(t, err)
			assert.Equal(t, first.addr, from)
			assert.Equal(t, rcode, a.Rcode)
			assert.Empty(t, f.Down(), "no failure of the upstream")
		})
	}
}

// TestRefusedNoRecursionJudgedByRD: a REFUSED to a query without RD
// speaks of the query (refusedNoRecursion: Unbound refuses RD=0 to a
// client without allow_snoop) and is no failure of the upstream even when
// the next upstream answers it; a REFUSED to a recursive query that the
// next upstream answers is a failure of the one that refused (an
// access-control leaving dnsfence out), and marks it down. The answer's
// RD is the query's (RFC 1035 §4.1.1).
func TestRefusedNoRecursionJudgedByRD(t *testing.T) {
	for _, rd := range []bool{false, true} {
		t.Run(map[bool]string{false: "RD clear", true: "RD set"}[rd], func(t *testing.T) {
			refusing := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name == "." || r.RecursionDesired != rd {
					return defaultAnswer(w, r) // the health check, and the other kind of query
				}
				return rcodeAnswer(dns.RcodeRefused)(w, r)
			})
			second := startUpstream(t, nil)
			f := NewForwarder([]string{refusing.addr, second.addr}, 2*time.Second, false)
			t.Cleanup(f.Close)
			f.started.Store(true) // no probes: the refusing upstream is asked first

			for range 4 {
				q := clientQuery("snoop.example.", false)
				q.RecursionDesired = rd
				_, from, err := f.Forward(context.Background(), q, false)
				require.NoError(t, err)
				require.Equal(t, second.addr, from, "answered by the second upstream")
				if rd {
					break // the first refusal, another upstream answering, marks it down
				}
			}
			if rd {
				assert.Equal(t, []string{refusing.addr}, f.Down(), "refusing recursion is a failure of the upstream")
			} else {
				assert.Empty(t, f.Down(), "refusing a query without RD is no failure")
			}
		})
	}
}

// TestFailedValidationNotAFailureWhenAnotherAnswers: a validator's
// SERVFAIL whose Extended DNS Error says the data failed DNSSEC
// validation (RFC 8914 codes 1, 2 and 5 to 12) is no failure of the
// validator even when the next upstream, which may not validate, answers
// the query (failedValidation): clients asking for bogus names cannot
// have every query sent to the upstream that does not validate. A
// SERVFAIL with another EDE, or none, that the next upstream answers is a
// failure of the upstream that gave it.
func TestFailedValidationNotAFailureWhenAnotherAnswers(t *testing.T) {
	validation := []uint16{
		dns.ExtendedErrorCodeUnsupportedDNSKEYAlgorithm, dns.ExtendedErrorCodeUnsupportedDSDigestType,
		dns.ExtendedErrorCodeDNSSECIndeterminate, dns.ExtendedErrorCodeDNSBogus,
		dns.ExtendedErrorCodeSignatureExpired, dns.ExtendedErrorCodeSignatureNotYetValid,
		dns.ExtendedErrorCodeDNSKEYMissing, dns.ExtendedErrorCodeRRSIGsMissing,
		dns.ExtendedErrorCodeNoZoneKeyBitSet, dns.ExtendedErrorCodeNSECMissing,
	}
	for _, code := range append(validation, dns.ExtendedErrorCodeNoReachableAuthority) {
		t.Run(dns.ExtendedErrorCodeToString[code], func(t *testing.T) {
			validator := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if r.Question[0].Name == "." {
					return defaultAnswer(w, r) // the health check
				}
				return rcodeAnswer(dns.RcodeServerFailure, &dns.EDNS0_EDE{InfoCode: code})(w, r)
			})
			second := startUpstream(t, nil)
			f := NewForwarder([]string{validator.addr, second.addr}, 2*time.Second, false)
			t.Cleanup(f.Close)
			f.started.Store(true) // no probes: the validator is asked first

			_, from, err := f.Forward(context.Background(), clientQuery("bogus.example.", false), false)
			require.NoError(t, err)
			require.Equal(t, second.addr, from)
			if code == dns.ExtendedErrorCodeNoReachableAuthority {
				assert.Equal(t, []string{validator.addr}, f.Down(), "a SERVFAIL another upstream answered is a failure")
			} else {
				assert.Empty(t, f.Down(), "a failed validation is no failure of the validator")
			}
		})
	}
}

// TestAnswerEDEsBounded: an answer is read with its first three distinct
// Extended DNS Errors (maxAnswerEDEs, firstEDEs), the repeats and the rest
// dropped, however many it carries: a SERVFAIL with six is relayed with
// three, not read into a panic.
func TestAnswerEDEsBounded(t *testing.T) {
	codes := []uint16{6, 6, 9, 22, 23, 7}
	var edes []*dns.EDNS0_EDE
	for _, c := range codes {
		edes = append(edes, &dns.EDNS0_EDE{InfoCode: c, ExtraText: "x"})
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			return defaultAnswer(w, r)
		}
		return rcodeAnswer(dns.RcodeServerFailure, edes...)(w, r)
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	for _, tcp := range []bool{false, true} {
		_, _, err := f.Forward(context.Background(), clientQuery("edes.example.", false), tcp)
		var ue *UpstreamError
		require.ErrorAs(t, err, &ue)
		require.NotNil(t, ue.Answer, "tcp %v", tcp)
		require.NotNil(t, ue.Answer.IsEdns0(), "tcp %v", tcp)
		var got []uint16
		for _, o := range ue.Answer.IsEdns0().Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				got = append(got, e.InfoCode)
			}
		}
		assert.Equal(t, []uint16{6, 9, 22}, got, "tcp %v", tcp)
	}
}

// TestUnpackAnswerEDEsLeftOut: UnpackAnswer keeps in an answer's OPT
// record the first Extended DNS Error of each of its first maxAnswerEDEs
// INFO-CODEs and its other options, in their order, and nothing in place
// of those it leaves out (firstEDEs): the option list is the options kept.
func TestUnpackAnswerEDEsLeftOut(t *testing.T) {
	m := new(dns.Msg).SetRcode(new(dns.Msg).SetQuestion("edes.example.", dns.TypeA), dns.RcodeServerFailure)
	m.SetEdns0(1232, false)
	nsid := &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6e73"}
	opt := m.IsEdns0()
	opt.Option = []dns.EDNS0{nsid}
	for _, c := range []uint16{6, 6, 9, 22, 23, 7} {
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: c, ExtraText: "x"})
	}
	b, err := m.Pack()
	require.NoError(t, err)

	got, err := UnpackAnswer(b)
	require.NoError(t, err)
	require.NotNil(t, got.IsEdns0())
	var kept []string
	for _, o := range got.IsEdns0().Option {
		switch o := o.(type) {
		case *dns.EDNS0_EDE:
			kept = append(kept, fmt.Sprintf("EDE %d", o.InfoCode))
		case nil:
			kept = append(kept, "nil")
		default:
			kept = append(kept, fmt.Sprintf("option %d", o.Option()))
		}
	}
	assert.Equal(t, []string{"option 3", "EDE 6", "EDE 9", "EDE 22"}, kept)
}

// TestUnpackAnswerReparseKeepsEDEs: an answer miekg/dns refuses for the
// data of an option dnsfence does not read (an EXPIRE of 3 octets) is
// parsed again without it (answerOption), keeping its Extended DNS
// Errors, one without EXTRA-TEXT (its 2-octet INFO-CODE alone) as one
// with; an EDE too short for its INFO-CODE says nothing and is left out.
func TestUnpackAnswerReparseKeepsEDEs(t *testing.T) {
	m := new(dns.Msg).SetRcode(new(dns.Msg).SetQuestion("expire.example.", dns.TypeA), dns.RcodeServerFailure)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = []dns.EDNS0{
		&dns.EDNS0_LOCAL{Code: dns.EDNS0EXPIRE, Data: []byte{0, 0, 1}},
		&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0EDE, Data: []byte{0}},
		&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeNoReachableAuthority, ExtraText: "x"},
	}
	b, err := m.Pack()
	require.NoError(t, err)
	require.Error(t, new(dns.Msg).Unpack(b), "miekg/dns refuses the EXPIRE")

	got, err := UnpackAnswer(b)
	require.NoError(t, err)
	require.NotNil(t, got.IsEdns0())
	var codes []uint16
	for _, o := range got.IsEdns0().Option {
		e, ok := o.(*dns.EDNS0_EDE)
		require.True(t, ok, "only the EDEs kept: %v", o)
		codes = append(codes, e.InfoCode)
	}
	assert.Equal(t, []uint16{dns.ExtendedErrorCodeDNSBogus, dns.ExtendedErrorCodeNoReachableAuthority}, codes)
}

// TestRdataErrorRawOptions: an answer miekg/dns does not read for the
// data of a record (RdataError, relayed by the wire path) keeps in Raw the
// options of its OPT record as an answer that reads keeps them: the
// hop's own (padding, edns-tcp-keepalive) left out, the first Extended
// DNS Error of each of the first maxAnswerEDEs INFO-CODEs kept, and the
// later ones left out; an EDE too short to hold an INFO-CODE, and every
// other option, kept as they came, in their order.
func TestRdataErrorRawOptions(t *testing.T) {
	b := unreadHintAnswer(t, new(dns.Msg).SetQuestion("svc.example.", dns.TypeHTTPS))
	ede := func(code uint16) dns.EDNS0 { return &dns.EDNS0_EDE{InfoCode: code} } // 2 octets: no EXTRA-TEXT
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(1232)
	opt.Option = []dns.EDNS0{
		&dns.EDNS0_LOCAL{Code: dns.EDNS0NSID, Data: []byte("ns")},
		&dns.EDNS0_PADDING{Padding: make([]byte, 4)},
		ede(6),
		&dns.EDNS0_LOCAL{Code: dns.EDNS0EDE, Data: []byte{0}}, // too short for an INFO-CODE
		ede(6),
		ede(9),
		&dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE, Timeout: 100},
		ede(22),
		ede(23),
	}
	packed := make([]byte, 128)
	n, err := dns.PackRR(opt, packed, 0, nil, false)
	require.NoError(t, err)
	b = append(b, packed[:n]...)
	b[11]++ // ARCOUNT

	_, err = UnpackAnswer(b)
	var re *RdataError
	require.ErrorAs(t, err, &re)
	type option struct {
		code uint16
		data string
	}
	var got []option
	_, ok := dnswire.WithoutOptions(re.Raw, func(code uint16, data []byte) bool {
		got = append(got, option{code, string(data)})
		return true
	})
	require.True(t, ok, "Raw has its OPT record")
	assert.Equal(t, []option{
		{dns.EDNS0NSID, "ns"},
		{dns.EDNS0EDE, "\x00\x06"},
		{dns.EDNS0EDE, "\x00"},
		{dns.EDNS0EDE, "\x00\x09"},
		{dns.EDNS0EDE, "\x00\x16"},
	}, got)
}

// TestUnreadFailureKeepsItsHeader: a SERVFAIL with a record miekg/dns
// does not read is judged as the same answer read would be (asReadable):
// its RCODE, and its header, question and OPT kept in the error's answer
// (headerOnly), so that the Extended DNS Error it carries (a validator's
// DNSSEC Bogus) reaches the client and judges the upstream's health.
func TestUnreadFailureKeepsItsHeader(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			return defaultAnswer(w, r)
		}
		b := unreadHintAnswer(t, r)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus}}
		// The unread answer's records, under a SERVFAIL header and an OPT.
		b[3] = b[3]&^0xF | dns.RcodeServerFailure
		opt := make([]byte, 64)
		n, err := dns.PackRR(m.IsEdns0(), opt, 0, nil, false)
		require.NoError(t, err)
		b = append(b, opt[:n]...)
		b[11]++ // ARCOUNT
		_, _ = w.Write(b)
		return nil
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	q, errs := forwardHTTPSBothWays(t, f)
	for i, ue := range errs {
		tcp := i == 1
		assert.Equal(t, "rcode_servfail", ue.Causes(), "tcp %v", tcp)
		require.NotNil(t, ue.Answer, "the header, question and OPT kept (tcp %v)", tcp)
		assert.Equal(t, dns.RcodeServerFailure, ue.Answer.Rcode)
		assert.Equal(t, q.Question, ue.Answer.Question)
		require.NotNil(t, ue.Answer.IsEdns0())
		require.Len(t, ue.Answer.IsEdns0().Option, 1)
		assert.Equal(t, uint16(dns.ExtendedErrorCodeDNSBogus), ue.Answer.IsEdns0().Option[0].(*dns.EDNS0_EDE).InfoCode)
	}
}

// TestTruncatedStreamAnswerUnusableOnTheWirePath: an answer with TC set
// over TCP, after a truncated UDP answer, is cut short with nothing larger
// to ask over (RFC 1035 §4.2.2), on the wire path as on the message path:
// a failure of the upstream (ErrAnswerTruncated), never relayed as if
// whole.
func TestTruncatedStreamAnswerUnusableOnTheWirePath(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		if r.Question[0].Name != "." {
			m.Answer = nil
			m.Truncated = true // over UDP and TCP alike
		}
		return m
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	_, _, err := f.ForwardWire(context.Background(), wireQuestion("cut.example.", dns.TypeA))
	assert.Equal(t, "truncated", causes(err), "wire path: %v", err)
	_, _, err = f.Forward(context.Background(), clientQuery("cut.example.", false), false)
	assert.Equal(t, "truncated", causes(err), "message path: %v", err)
}

// TestCallerGoneIsNoFailure: a try that the caller's giving up ended (its
// context cancelled: the client went away) says nothing of the upstream
// (record): no failure in its window, and it is not marked down.
func TestCallerGoneIsNoFailure(t *testing.T) {
	addr, asked := askedSilentUpstream(t)
	f := NewForwarder([]string{addr}, 5*time.Second, false)
	t.Cleanup(f.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := f.Forward(ctx, clientQuery("gone.example.", false), false)
		done <- err
	}()
	<-asked
	cancel()
	require.Error(t, <-done)
	w := f.upstreams[0].health.w.Load()
	assert.Zero(t, w>>32, "nothing recorded in its window")
	assert.Empty(t, f.Down())
}

// TestExtendedRcodeIsAFailure: an answer whose RCODE is extended by its
// OPT record (BADVERS, 16: RFC 6891 §6.1.3, low bits 0 in the header) is
// read as that RCODE on the wire path as on the message path: a failure
// RCODE, never the NOERROR its header's four bits say.
func TestExtendedRcodeIsAFailure(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			return defaultAnswer(w, r)
		}
		return rcodeAnswer(dns.RcodeBadVers)(w, r)
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	_, _, err := f.ForwardWire(context.Background(), wireQuestion("badvers.example.", dns.TypeA))
	assert.Equal(t, "rcode_badvers", causes(err), "wire path: %v", err)
	then := make(thenChan, 2)
	f.StartWire(wireQuestion("badvers.example.", dns.TypeA), then, nil)
	r := then.wait(t)
	assert.Equal(t, "rcode_badvers", causes(r.err), "started: %v", r.err)
	_, _, err = f.Forward(context.Background(), clientQuery("badvers.example.", false), false)
	assert.Equal(t, "rcode_badvers", causes(err), "message path: %v", err)
}

// TestStartedFailureChecksHealth: a started query (StartWire) to the
// only upstream that gets a SERVFAIL has the upstream's health checked
// (unansweredQueryFailure: the health check, the root NS query, asked
// once), as a forwarded query's does: an upstream that SERVFAILs every
// query is found broken by the check it fails.
func TestStartedFailureChecksHealth(t *testing.T) {
	var checks atomic.Int32
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			checks.Add(1)
		}
		return rcodeAnswer(dns.RcodeServerFailure)(w, r)
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	then := make(thenChan, 2)
	f.StartWire(wireQuestion("servfail.example.", dns.TypeA), then, nil)
	r := then.wait(t)
	require.Equal(t, "rcode_servfail", causes(r.err))
	require.Eventually(t, func() bool { return checks.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the health check asked")
	require.Eventually(t, func() bool { return len(f.Down()) == 1 }, 10*time.Second, 5*time.Millisecond,
		"down: it failed the check too")
}

// unreadTruncatedForwarder is a Forwarder of one upstream that answers
// every question but the root's with an answer miekg/dns does not read
// (unreadHintAnswer), TC set and RCODE rcode.
func unreadTruncatedForwarder(t *testing.T, rcode int) *Forwarder {
	t.Helper()
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			return defaultAnswer(w, r)
		}
		b := unreadHintAnswer(t, r)
		b[2] |= 0x02 // TC
		b[3] = b[3]&^0xF | byte(rcode)
		_, _ = w.Write(b)
		return nil
	})
	f := NewForwarder([]string{up.addr}, 2*time.Second, false)
	t.Cleanup(f.Close)
	return f
}

// TestUnreadTruncatedAnswerIsTruncated: an answer with a record miekg/dns
// does not read and TC set, over UDP and then over TCP too, is cut short
// (asReadable: RdataError.answer), on the message path and the wire path:
// ErrAnswerTruncated, never taken as the upstream's whole answer.
func TestUnreadTruncatedAnswerIsTruncated(t *testing.T) {
	f := unreadTruncatedForwarder(t, dns.RcodeSuccess)
	_, errs := forwardHTTPSBothWays(t, f)
	for i, ue := range errs {
		tcp := i == 1
		assert.Equal(t, "truncated", ue.Causes(), "tcp %v", tcp)
		assert.False(t, ue.Answered(), "tcp %v", tcp)
	}
	_, _, err := f.ForwardWire(context.Background(), wireQuestion("a.svcb.example.", dns.TypeHTTPS))
	var ue *UpstreamError
	require.ErrorAs(t, err, &ue)
	assert.Equal(t, "truncated", ue.Causes(), "wire path")
	assert.False(t, ue.Answered(), "wire path")
}

// TestUnreadTruncatedFailureIsItsRcode: an answer with a record
// miekg/dns does not read, TC set and a failure RCODE, over UDP and then
// over TCP too, is judged by its RCODE first, as exchange judges the same
// answer read (asReadable: "the RCODE first"), on the message path and
// the wire path: a SERVFAIL, every upstream's (AllServfail: cached
// briefly, EDE 22), its header kept, not an answer cut short, which is
// counted against the upstream's health and told the client as EDE 23.
func TestUnreadTruncatedFailureIsItsRcode(t *testing.T) {
	f := unreadTruncatedForwarder(t, dns.RcodeServerFailure)
	q, errs := forwardHTTPSBothWays(t, f)
	for i, ue := range errs {
		tcp := i == 1
		assert.Equal(t, "rcode_servfail", ue.Causes(), "tcp %v", tcp)
		assert.True(t, ue.AllServfail(), "tcp %v", tcp)
		code, _ := ue.EDE()
		assert.Equal(t, uint16(dns.ExtendedErrorCodeNoReachableAuthority), code, "tcp %v", tcp)
		if assert.NotNil(t, ue.Answer, "the header and question kept (tcp %v)", tcp) {
			assert.Equal(t, dns.RcodeServerFailure, ue.Answer.Rcode)
			assert.Equal(t, q.Question, ue.Answer.Question)
		}
	}
	_, _, err := f.ForwardWire(context.Background(), wireQuestion("a.svcb.example.", dns.TypeHTTPS))
	assert.Equal(t, "rcode_servfail", causes(err), "wire path: %v", err)
}

// forwardHTTPSBothWays asks f for a.svcb.example. HTTPS (the question
// unreadHintAnswer answers with a record miekg/dns does not read) on the
// message path, over UDP and then over TCP, each try failing; it returns
// the question and the two tries' *UpstreamError, UDP's first.
func forwardHTTPSBothWays(t *testing.T, f *Forwarder) (*dns.Msg, [2]*UpstreamError) {
	t.Helper()
	q := clientQuery("a.svcb.example.", false)
	q.Question[0].Qtype = dns.TypeHTTPS
	var errs [2]*UpstreamError
	for i, tcp := range []bool{false, true} {
		_, _, err := f.Forward(context.Background(), q, tcp)
		require.ErrorAs(t, err, &errs[i], "tcp %v", tcp)
	}
	return q, errs
}

// TestUnansweredQueryChecksEveryUpstream: a query every upstream of
// several answered SERVFAIL leaves their health as it was and has each
// checked (judgeQueryFailure, unansweredQueryFailure), as a query of one
// upstream does (TestStartedFailureChecksHealth): else upstreams that
// SERVFAIL every name, the health check's too, stayed up for good.
func TestUnansweredQueryChecksEveryUpstream(t *testing.T) {
	var checks [2]atomic.Int32
	var addrs []string
	for i := range checks {
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if r.Question[0].Name == "." {
				checks[i].Add(1)
			}
			return rcodeAnswer(dns.RcodeServerFailure)(w, r)
		})
		addrs = append(addrs, up.addr)
	}
	f := NewForwarder(addrs, 2*time.Second, false)
	t.Cleanup(f.Close)
	f.started.Store(true) // no first probes: the checks are the query's
	_, _, err := f.Forward(context.Background(), clientQuery("servfail.example.", false), false)
	require.Equal(t, "rcode_servfail", causes(err))
	for i := range checks {
		require.Eventually(t, func() bool { return checks[i].Load() >= 1 }, 10*time.Second, 5*time.Millisecond, "upstream %d checked", i)
	}
	require.Eventually(t, func() bool { return len(f.Down()) == 2 }, 10*time.Second, 5*time.Millisecond, "down: each failed its check")
}

// TestSilentUpstreamTimeoutsFail: while an upstream's last health check
// timed out (silent), each query it leaves unanswered is a failure of it
// (unansweredQueryFailure), so that it is marked down at the pace of the
// queries, not of one check an upstream_timeout.
func TestSilentUpstreamTimeoutsFail(t *testing.T) {
	f := NewForwarder([]string{silentUpstream(t)}, 100*time.Millisecond, false)
	t.Cleanup(f.Close)
	u := f.upstreams[0]
	for range 3 {
		f.succeeded(u, time.Now(), time.Millisecond) // it answered before
	}
	u.silent.Store(true) // and then its check timed out (askHealth)
	for i := range 4 {
		require.False(t, u.down.Load(), "down after %d timeouts", i)
		_, _, err := f.Forward(context.Background(), clientQuery("silent.example.", false), false)
		require.Equal(t, "timeout", causes(err))
	}
	assert.True(t, u.down.Load(), "four timeouts after three answers: over half its window failed")
}

// TestOneHealthCheckAtATime: an upstream's health is checked by one
// check at a time (checkHealth): queries it answers SERVFAIL past
// checkEvery apart, while a check waits on an upstream silent to it, ask
// no second check before the first ends.
func TestOneHealthCheckAtATime(t *testing.T) {
	var mu sync.Mutex
	ids := map[uint16]bool{} // a check's datagram is resent (resendPolicy): counted once
	checks := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids)
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.Question[0].Name == "." {
			mu.Lock()
			ids[r.Id] = true
			mu.Unlock()
			return nil // silent to the check: it waits its whole timeout
		}
		return rcodeAnswer(dns.RcodeServerFailure)(w, r)
	})
	f := NewForwarder([]string{up.addr}, 3*time.Second, false)
	t.Cleanup(f.Close)
	for i := range 4 {
		if i > 0 {
			time.Sleep(checkEvery + 50*time.Millisecond)
		}
		_, _, err := f.Forward(context.Background(), clientQuery("servfail.example.", false), false)
		require.Equal(t, "rcode_servfail", causes(err))
	}
	require.Eventually(t, func() bool { return checks() >= 1 }, 10*time.Second, 5*time.Millisecond, "checked")
	time.Sleep(50 * time.Millisecond) // a second check, if one was sent, has arrived
	assert.Equal(t, 1, checks(), "checks while the first waits out its 3 s")
}

// TestFailureJudgements: how each kind of failed try is judged: by the
// query's end (mayBeOfTheQuery: a SERVFAIL, a REFUSED or NOTIMP to a
// recursive query other than ANY, a timeout), as the query's own
// (ofTheQuery: a declined ANY, a REFUSED without RD), and whether a
// SERVFAIL is a failed validation (an Extended DNS Error of DNSSEC, RFC
// 8914). The answers are built here; the tests above see each over a
// socket.
func TestFailureJudgements(t *testing.T) {
	answer := func(rcode int, qtype uint16, rd bool, ede ...uint16) *RcodeError {
		m := new(dns.Msg)
		m.SetQuestion("judged.example.", qtype)
		m.Response, m.Rcode, m.RecursionDesired = true, rcode, rd
		if ede != nil {
			m.SetEdns0(1232, false)
			opt := m.IsEdns0()
			for _, code := range ede {
				opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: code})
			}
		}
		return &RcodeError{Rcode: rcode, Answer: m}
	}
	tests := []struct {
		name                               string
		err                                error
		declinedANY, refusedNoRD, declined bool
		failedValidation, mayBe, ofQuery   bool
	}{
		{name: "SERVFAIL without EDNS", err: answer(dns.RcodeServerFailure, dns.TypeA, true), mayBe: true},
		{name: "SERVFAIL, DNSSEC Bogus", err: answer(dns.RcodeServerFailure, dns.TypeA, true, dns.ExtendedErrorCodeDNSBogus), failedValidation: true, mayBe: true},
		{name: "SERVFAIL, Signature Expired after another EDE", err: answer(dns.RcodeServerFailure, dns.TypeA, true, dns.ExtendedErrorCodeNoReachableAuthority, dns.ExtendedErrorCodeSignatureExpired), failedValidation: true, mayBe: true},
		{name: "SERVFAIL, No Reachable Authority", err: answer(dns.RcodeServerFailure, dns.TypeA, true, dns.ExtendedErrorCodeNoReachableAuthority), mayBe: true},
		{name: "SERVFAIL to ANY", err: answer(dns.RcodeServerFailure, dns.TypeANY, true), mayBe: true},
		{name: "REFUSED with a DNSSEC EDE", err: answer(dns.RcodeRefused, dns.TypeA, true, dns.ExtendedErrorCodeDNSBogus), declined: true, mayBe: true},
		{name: "REFUSED", err: answer(dns.RcodeRefused, dns.TypeA, true), declined: true, mayBe: true},
		{name: "REFUSED without an answer", err: &RcodeError{Rcode: dns.RcodeRefused}, declined: true, mayBe: true},
		{name: "REFUSED without RD", err: answer(dns.RcodeRefused, dns.TypeA, false), refusedNoRD: true, ofQuery: true},
		{name: "NOTIMP", err: answer(dns.RcodeNotImplemented, dns.TypeHTTPS, true), declined: true, mayBe: true},
		{name: "NOTIMP without RD", err: answer(dns.RcodeNotImplemented, dns.TypeA, false), declined: true, mayBe: true},
		{name: "NOTIMP to ANY", err: answer(dns.RcodeNotImplemented, dns.TypeANY, true), declinedANY: true, ofQuery: true},
		{name: "REFUSED to ANY", err: answer(dns.RcodeRefused, dns.TypeANY, true), declinedANY: true, ofQuery: true},
		{name: "FORMERR", err: answer(dns.RcodeFormatError, dns.TypeA, true)},
		{name: "FORMERR to ANY", err: answer(dns.RcodeFormatError, dns.TypeANY, true)},
		{name: "timeout", err: context.DeadlineExceeded, mayBe: true},
		// A timeout while datagrams no query could take came (stray,
		// udpMux) is of that kind: the upstream sent something.
		{name: "timeout with stray datagrams", err: fmt.Errorf("%w: %w", ErrAnswerWrongID, context.DeadlineExceeded)},
		{name: "malformed", err: ErrAnswerMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.declinedANY, declinedANY(tc.err), "declinedANY")
			assert.Equal(t, tc.refusedNoRD, refusedNoRecursion(tc.err), "refusedNoRecursion")
			assert.Equal(t, tc.declined, declinedTheQuery(tc.err), "declinedTheQuery")
			assert.Equal(t, tc.failedValidation, failedValidation(tc.err), "failedValidation")
			assert.Equal(t, tc.mayBe, mayBeOfTheQuery(tc.err), "mayBeOfTheQuery")
			assert.Equal(t, tc.ofQuery, ofTheQuery(tc.err), "ofTheQuery")
		})
	}
}
