package upstream

import (
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
)

// TestHeaderOnlyOneQuestion: headerOnly reads a message of QDCOUNT 1
// only. Of one counting no question, it read the octets after the header
// as a question all the same and kept QDCOUNT 0, so that miekg/dns read
// them, and the OPT after them, as records: an A record in the additional
// section, or an OPT whose fields were the question's; of one counting two
// questions, the OPT as the second question. unpackMsg and asReadable
// call it for a message of one question only (walkAnswer), so no answer
// came so; headerOnly's doc promises its header, question and OPT alone.
func TestHeaderOnlyOneQuestion(t *testing.T) {
	q := []byte{1, 'a', 0, 0, 1, 0, 1}                 // a. A IN
	opt := []byte{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0} // root OPT, 4096, no options
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"no question counted, an OPT", append([]byte{0x12, 0x34, 0x81, 0x82, 0, 0, 0, 0, 0, 0, 0, 1}, opt...)},
		{"no question counted, one held", append(append([]byte{0x12, 0x34, 0x81, 0x82, 0, 0, 0, 0, 0, 0, 0, 2}, q...), append([]byte{0, 0, 0, 0, 0, 0}, opt...)...)},
		{"two questions counted", append(append(append([]byte{0x12, 0x34, 0x81, 0x82, 0, 2, 0, 0, 0, 0, 0, 1}, q...), q...), opt...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m := headerOnly(tc.raw); m != nil {
				assert.Failf(t, "read", "a message of QDCOUNT %d read as %v", dnswire.QDCount(tc.raw), m)
			}
		})
	}
	// One question: its header, question and OPT.
	raw := append(append([]byte{0x12, 0x34, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 1}, q...), opt...)
	m := headerOnly(raw)
	if assert.NotNil(t, m) {
		assert.Equal(t, []dns.Question{{Name: "a.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}, m.Question)
		assert.NotNil(t, m.IsEdns0())
		assert.Len(t, m.Extra, 1)
	}
}
