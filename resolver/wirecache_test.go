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
