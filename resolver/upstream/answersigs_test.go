package upstream

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPlainAnswerSignatureRecords: checkAnswer's rules for the records
// that sign a message, over UDP and TCP. A TSIG in any section makes the
// answer malformed (no query dnsfence sends is signed, RFC 8945 §5.3); a
// SIG(0) last in the additional section is dropped (RFC 2931: it signs
// the message dnsfence then changes) and the answer taken; a SIG(0)
// anywhere else is malformed, as BIND reads it; a SIG covering a type is
// data, kept.
func TestPlainAnswerSignatureRecords(t *testing.T) {
	tsig := func() dns.RR {
		return &dns.TSIG{Hdr: dns.RR_Header{Name: "key.example.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: dns.HmacSHA256, TimeSigned: 1700000000, Fudge: 300, MACSize: 32,
			MAC: strings.Repeat("ab", 32), OrigId: 4242}
	}
	sig := func(covered uint16) dns.RR {
		return &dns.SIG{RRSIG: dns.RRSIG{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSIG, Class: dns.ClassANY},
			TypeCovered: covered, Algorithm: dns.RSASHA256, SignerName: "sig.example.", Signature: "AQID"}}
	}
	glue := func() dns.RR { return testnet.MustRR("ns.example. 300 IN A 192.0.2.53") }
	for _, tc := range []struct {
		name string
		// sign adds the records to the upstream's answer (A 192.0.2.1).
		sign func(m *dns.Msg)
		// malformed: the answer is refused; else taken with these
		// additional records' types.
		malformed bool
		extra     []uint16
		answers   int
	}{
		{name: "TSIG last in the additional section", sign: func(m *dns.Msg) { m.Extra = append(m.Extra, tsig()) }, malformed: true},
		{name: "TSIG in the answer section", sign: func(m *dns.Msg) { m.Answer = append(m.Answer, tsig()) }, malformed: true},
		{name: "TSIG in the authority section", sign: func(m *dns.Msg) { m.Ns = append(m.Ns, tsig()) }, malformed: true},
		{name: "SIG(0) last", sign: func(m *dns.Msg) { m.Extra = append(m.Extra, glue(), sig(0)) }, extra: []uint16{dns.TypeA}, answers: 1},
		{name: "SIG(0) alone in the additional section", sign: func(m *dns.Msg) { m.Extra = append(m.Extra, sig(0)) }, extra: []uint16{}, answers: 1},
		{name: "SIG(0) before another record", sign: func(m *dns.Msg) { m.Extra = append(m.Extra, sig(0), glue()) }, malformed: true},
		{name: "SIG(0) last of the answer section", sign: func(m *dns.Msg) { m.Answer = append(m.Answer, sig(0)) }, malformed: true},
		{name: "SIG(0) in the authority section", sign: func(m *dns.Msg) { m.Ns = append(m.Ns, sig(0)) }, malformed: true},
		{name: "SIG covering A, last", sign: func(m *dns.Msg) { m.Extra = append(m.Extra, sig(dns.TypeA)) }, extra: []uint16{dns.TypeSIG}, answers: 1},
		{name: "SIG covering A in the answer section", sign: func(m *dns.Msg) { m.Answer = append(m.Answer, sig(dns.TypeA)) }, extra: []uint16{}, answers: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, func(_ dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				m := defaultAnswer(nil, r)
				tc.sign(m)
				return m
			})
			p := NewPlain(up.addr, Options{Timeout: 2 * time.Second})
			t.Cleanup(func() { _ = p.Close() })
			for _, overTCP := range []bool{false, true} {
				q := question("signed.example.", dns.TypeA, false)
				var resp *dns.Msg
				var err error
				if overTCP {
					resp, err = p.ExchangeTCP(context.Background(), q)
				} else {
					resp, err = p.Exchange(context.Background(), q)
				}
				if tc.malformed {
					assert.ErrorIs(t, err, ErrAnswerMalformed, "over TCP %v", overTCP)
					assert.Nil(t, resp, "over TCP %v", overTCP)
					continue
				}
				require.NoError(t, err, "over TCP %v", overTCP)
				assert.Len(t, resp.Answer, tc.answers, "over TCP %v", overTCP)
				types := []uint16{}
				for _, rr := range resp.Extra {
					types = append(types, rr.Header().Rrtype)
				}
				assert.Equal(t, tc.extra, types, "over TCP %v: the additional section", overTCP)
			}
		})
	}
}
