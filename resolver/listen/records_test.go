package listen

import (
	"bytes"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRecordsCutShortRejected: a query that ends before the records its
// ANCOUNT, NSCOUNT or ARCOUNT count (RFC 1035 §4.1.1) gets FORMERR from
// every listener, the plain ones (AcceptMessage) and the encrypted ones
// (checkQuery), with an OPT when the query's is there (RFC 6891 §7); a
// whole query is taken. miekg/dns unpacks such a query as one without the
// missing records.
func TestRecordsCutShortRejected(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	plain, err := q.Pack()
	require.NoError(t, err)
	q.SetEdns0(1232, false)
	withOPT, err := q.Pack()
	require.NoError(t, err)
	count := func(b []byte, at, n int) []byte {
		b = bytes.Clone(b)
		b[at], b[at+1] = byte(n>>8), byte(n)
		return b
	}
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	invalid := func([]byte, error) {}
	for _, tc := range []struct {
		name       string
		b          []byte
		formerr    bool
		formerrOPT bool
	}{
		{name: "whole", b: plain},
		{name: "whole with OPT", b: withOPT},
		{name: "ANCOUNT 1, no record", b: count(plain, 6, 1), formerr: true},
		{name: "NSCOUNT 1, no record", b: count(plain, 8, 1), formerr: true},
		{name: "ARCOUNT 1, no record", b: count(plain, 10, 1), formerr: true},
		{name: "ARCOUNT 2, one OPT", b: count(withOPT, 10, 2), formerr: true, formerrOPT: true},
		{name: "OPT's RDATA cut short", b: append(count(withOPT, len(withOPT)-2, 4), 0, 8), formerr: true, formerrOPT: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, reject := AcceptMessage(tc.b, accept, invalid)
			chk := checkQuery(tc.b)
			for name, got := range map[string]struct{ req, reject *dns.Msg }{
				"plain": {req, reject}, "encrypted": {chk.req, chk.reject},
			} {
				if !tc.formerr {
					assert.NotNil(t, got.req, name)
					assert.Nil(t, got.reject, name)
					continue
				}
				assert.Nil(t, got.req, name)
				require.NotNil(t, got.reject, name)
				assert.Equal(t, dns.RcodeFormatError, got.reject.Rcode, name)
				assert.Equal(t, tc.formerrOPT, got.reject.IsEdns0() != nil, name+": an OPT when the query's is there")
				assert.True(t, got.reject.RecursionAvailable, name+": RA, as in every reply of dnsfence's")
			}
		})
	}
}
