package resolver

import (
	"testing"

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
