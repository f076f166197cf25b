package resolver

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWireOfOneQuestionOnly: the wire cache holds only an answer of one
// question (QDCOUNT 1), whatever octets follow the header: one counting
// none or two, whose question and records otherwise read, is not held,
// and one shorter than a header is not read at all.
func TestWireOfOneQuestionOnly(t *testing.T) {
	b, err := answerWith("q.example.org.", dns.TypeA, dns.RcodeSuccess, "q.example.org. 60 IN A 192.0.2.1").Pack()
	require.NoError(t, err)
	var w wireAnswer
	_, ok := wireOf(append([]byte(nil), b...), &w)
	require.True(t, ok, "QDCOUNT 1")
	for _, qd := range []byte{0, 2} {
		c := append([]byte(nil), b...)
		c[5] = qd
		_, ok := wireOf(c, &w)
		assert.False(t, ok, "QDCOUNT %d", qd)
	}
	for n := range 12 {
		assert.NotPanics(t, func() {
			_, ok := wireOf(append([]byte(nil), b[:n]...), &w)
			assert.False(t, ok, "%d octets", n)
		})
	}
}

// TestAppendOptionTwice: options added to the OPT that ends an answer one
// after the other (an upstream's EDEs, then a stale answer's or a Client
// Subnet echo) all count in its RDLENGTH, whatever the OPT's flags.
func TestAppendOptionTwice(t *testing.T) {
	m := answerWith("o.example.org.", dns.TypeA, dns.RcodeSuccess, "o.example.org. 60 IN A 192.0.2.1")
	m.SetEdns0(ednsSize, true)
	b, err := m.Pack()
	require.NoError(t, err)
	first := &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: "first"}
	second := &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer}
	for _, o := range []*dns.EDNS0_EDE{first, second} {
		option := binary.BigEndian.AppendUint16(nil, dns.EDNS0EDE)
		option = binary.BigEndian.AppendUint16(option, uint16(2+len(o.ExtraText)))
		option = binary.BigEndian.AppendUint16(option, o.InfoCode)
		b = appendOption(b, append(option, o.ExtraText...))
	}
	got := new(dns.Msg)
	require.NoError(t, got.Unpack(b))
	require.NotNil(t, got.IsEdns0())
	assert.Equal(t, []dns.EDNS0{first, second}, got.IsEdns0().Option)
}

// TestTruncatedCachedCountsNoRecord: an answer from the cache cut to its
// header and question for a UDP client too small for it counts no record
// in any section, however many it had: 300 answer records (ANCOUNT's high
// octet set) and one in each other section counted 0 after the cut, TC
// set, with the client's OPT alone when it asked with EDNS.
func TestTruncatedCachedCountsNoRecord(t *testing.T) {
	var rrs []string
	for i := range 300 {
		rrs = append(rrs, fmt.Sprintf("many.example.org. 60 IN A 192.0.2.%d", i%250+1))
	}
	m := answerWith("many.example.org.", dns.TypeA, dns.RcodeSuccess, rrs...)
	ns, err := dns.NewRR("example.org. 60 IN NS ns.example.org.")
	require.NoError(t, err)
	glue, err := dns.NewRR("ns.example.org. 60 IN A 192.0.2.253")
	require.NoError(t, err)
	m.Ns, m.Extra = []dns.RR{ns}, []dns.RR{glue}
	m.Compress = true
	b, err := m.Pack()
	require.NoError(t, err)
	var w wireAnswer
	_, ok := wireOf(append([]byte(nil), b...), &w)
	require.True(t, ok)
	e := &cacheEntry{wire: &w}
	for _, edns := range []bool{false, true} {
		a := asked{id: m.Id, opcode: dns.OpcodeQuery, edns: edns}
		got := a.truncatedCached(append([]byte(nil), b...), e, nil, 512)
		counts := 0
		if edns {
			counts = 1 // ARCOUNT: the OPT
		}
		assert.Equal(t, []byte{0, 0, 0, 0, 0, byte(counts)}, got[6:dnswire.HeaderLen], "edns %v: ANCOUNT, NSCOUNT, ARCOUNT", edns)
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(got), "edns %v", edns)
		assert.True(t, r.Truncated, "edns %v", edns)
		assert.Equal(t, m.Question, r.Question, "edns %v", edns)
		assert.Empty(t, r.Answer, "edns %v", edns)
		assert.Empty(t, r.Ns, "edns %v", edns)
		assert.Equal(t, edns, r.IsEdns0() != nil, "edns %v: the client's OPT alone", edns)
		assert.Len(t, r.Extra, counts, "edns %v", edns)
	}
}

// TestWireOfQuestionCutShort: an answer counting one question that is cut
// short inside it (its name, type or class) is not held, and nothing past
// it is read.
func TestWireOfQuestionCutShort(t *testing.T) {
	b, err := answerWith("cut.example.org.", dns.TypeA, dns.RcodeSuccess).Pack()
	require.NoError(t, err)
	require.Len(t, b, dnswire.HeaderLen+len("cut.example.org.")+1+4, "a question only")
	var w wireAnswer
	for n := dnswire.HeaderLen; n < len(b); n++ {
		assert.NotPanics(t, func() {
			_, ok := wireOf(append([]byte(nil), b[:n]...), &w)
			assert.False(t, ok, "%d octets", n)
		})
	}
	_, ok := wireOf(append([]byte(nil), b...), &w)
	assert.True(t, ok, "whole")
}

// TestAppendEDECodes: every Extended DNS Error is cut to its INFO-CODE,
// whatever the length of its text (one octet too), and every other
// option, of any length, is left whole (RFC 8914 §2); a tail that is no
// whole option (one octet here) is left as it is.
func TestAppendEDECodes(t *testing.T) {
	var options []byte
	add := func(code uint16, data []byte) {
		options = binary.BigEndian.AppendUint16(options, code)
		options = binary.BigEndian.AppendUint16(options, uint16(len(data)))
		options = append(options, data...)
	}
	add(dns.EDNS0EDE, []byte{0, 3, 'x'})
	add(dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 192, 0, 2})
	add(dns.EDNS0EDE, []byte{0, 18})
	add(dns.EDNS0EDE, append([]byte{0, 0}, "a longer text"...))
	add(dns.EDNS0NSID, []byte{'n', 's'})
	var want []byte
	for _, o := range []struct {
		code uint16
		data []byte
	}{
		{dns.EDNS0EDE, []byte{0, 3}}, {dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 192, 0, 2}}, {dns.EDNS0EDE, []byte{0, 18}},
		{dns.EDNS0EDE, []byte{0, 0}}, {dns.EDNS0NSID, []byte{'n', 's'}},
	} {
		want = binary.BigEndian.AppendUint16(want, o.code)
		want = binary.BigEndian.AppendUint16(want, uint16(len(o.data)))
		want = append(want, o.data...)
	}
	options, want = append(options, 7), append(want, 7)
	assert.Equal(t, want, appendEDECodes(nil, options))
}

// TestTruncatedCachedKeepsTheFlags: an answer from the cache cut to its
// header and question keeps every header bit it had (QR, RD, RA, AD and
// the RCODE, an NXDOMAIN here) and its ID, with TC set beside them.
func TestTruncatedCachedKeepsTheFlags(t *testing.T) {
	m := answerWith("flags.example.org.", dns.TypeA, dns.RcodeNameError)
	m.Id, m.RecursionDesired, m.RecursionAvailable, m.AuthenticatedData = 0xBEEF, true, true, true
	m.Ns = []dns.RR{mustRR("example.org. 60 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 60")}
	b, err := m.Pack()
	require.NoError(t, err)
	var w wireAnswer
	_, ok := wireOf(append([]byte(nil), b...), &w)
	require.True(t, ok)
	a := asked{id: m.Id, opcode: dns.OpcodeQuery, rd: true}
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(a.truncatedCached(append([]byte(nil), b...), &cacheEntry{wire: &w}, nil, 512)))
	assert.Equal(t, m.Id, r.Id)
	assert.True(t, r.Response)
	assert.True(t, r.Truncated)
	assert.True(t, r.RecursionDesired)
	assert.True(t, r.RecursionAvailable)
	assert.True(t, r.AuthenticatedData)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	assert.Equal(t, m.Question, r.Question)
}

// TestTruncatedCachedFitsTheLimitExactly: the upstream's Extended DNS
// Errors stay whole, texts and all, in an answer cut to its question when
// that makes it the client's limit to the octet; one octet less, and
// their texts go (RFC 8914 §2).
func TestTruncatedCachedFitsTheLimitExactly(t *testing.T) {
	b, err := answerWith("exact.example.org.", dns.TypeA, dns.RcodeSuccess, "exact.example.org. 60 IN A 192.0.2.1").Pack()
	require.NoError(t, err)
	var w wireAnswer
	_, ok := wireOf(append([]byte(nil), b...), &w)
	require.True(t, ok)
	text := "an upstream's text"
	w.edes = binary.BigEndian.AppendUint16(nil, dns.EDNS0EDE)
	w.edes = binary.BigEndian.AppendUint16(w.edes, uint16(2+len(text)))
	w.edes = append(binary.BigEndian.AppendUint16(w.edes, dns.ExtendedErrorCodeOther), text...)
	e := &cacheEntry{wire: &w}
	a := asked{opcode: dns.OpcodeQuery, edns: true}
	whole := a.truncatedCached(append([]byte(nil), b...), e, nil, 65535)
	edeOf := func(b []byte) *dns.EDNS0_EDE {
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(b))
		return ede(r)
	}
	require.NotNil(t, edeOf(whole))
	require.Equal(t, text, edeOf(whole).ExtraText)
	got := a.truncatedCached(append([]byte(nil), b...), e, nil, len(whole))
	assert.Len(t, got, len(whole))
	if e := edeOf(got); assert.NotNil(t, e) {
		assert.Equal(t, text, e.ExtraText, "the limit to the octet")
	}
	got = a.truncatedCached(append([]byte(nil), b...), e, nil, len(whole)-1)
	if e := edeOf(got); assert.NotNil(t, e) {
		assert.Empty(t, e.ExtraText, "one octet less")
		assert.Equal(t, dns.ExtendedErrorCodeOther, e.InfoCode)
	}
}
