package source

import (
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnpackWholeQuestionCutShort: a message from the primary that ends
// within the question its header counts, after the name or after QTYPE,
// is errRecordsCut (RFC 1035 §4.1.1), as one that ends before a record
// is. miekg/dns reads such a last question as one, its QCLASS (and
// QTYPE) 0, and returns no error: the counts matched, and an SOA answer
// so cut, holding no record, was taken and checked (check compares the
// name and QTYPE only) as a whole one.
func TestUnpackWholeQuestionCutShort(t *testing.T) {
	q := new(dns.Msg).SetQuestion("rpz.test.", dns.TypeSOA)
	r := new(dns.Msg).SetReply(q)
	wire, err := r.Pack()
	require.NoError(t, err)
	m, err := unpackWhole(wire)
	require.NoError(t, err, "whole")
	require.Len(t, m.Question, 1)
	for _, cut := range []int{2, 4} { // QCLASS; QTYPE and QCLASS
		_, err := unpackWhole(wire[:len(wire)-cut])
		assert.ErrorIs(t, err, errRecordsCut, "cut %d octets short", cut)
	}
	// Two questions counted, the second cut after its name.
	two := append(append([]byte(nil), wire...), 3, 'r', 'p', 'z', 4, 't', 'e', 's', 't', 0)
	two[5] = 2
	_, err = unpackWhole(two)
	assert.ErrorIs(t, err, errRecordsCut, "second question cut after its name")
}
