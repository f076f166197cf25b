package resolver

import (
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHeaderFlagsAsPacked: the second header word headerFlags packs for
// the answers built without a message is the one miekg/dns packs for the
// same header, bit for bit: each flag, the opcode and the RCODE alone,
// and all of them at once.
func TestHeaderFlagsAsPacked(t *testing.T) {
	tests := []struct {
		name string
		hdr  dns.MsgHdr
	}{
		{name: "none"},
		{name: "qr", hdr: dns.MsgHdr{Response: true}},
		{name: "aa", hdr: dns.MsgHdr{Authoritative: true}},
		{name: "tc", hdr: dns.MsgHdr{Truncated: true}},
		{name: "rd", hdr: dns.MsgHdr{RecursionDesired: true}},
		{name: "ra", hdr: dns.MsgHdr{RecursionAvailable: true}},
		{name: "z", hdr: dns.MsgHdr{Zero: true}},
		{name: "ad", hdr: dns.MsgHdr{AuthenticatedData: true}},
		{name: "cd", hdr: dns.MsgHdr{CheckingDisabled: true}},
		{name: "opcode NOTIFY", hdr: dns.MsgHdr{Opcode: dns.OpcodeNotify}},
		{name: "opcode 15", hdr: dns.MsgHdr{Opcode: 15}},
		{name: "rcode NXDOMAIN", hdr: dns.MsgHdr{Rcode: dns.RcodeNameError}},
		{name: "rcode 15", hdr: dns.MsgHdr{Rcode: 15}},
		{name: "all", hdr: dns.MsgHdr{
			Response: true, Opcode: 15, Authoritative: true, Truncated: true, RecursionDesired: true,
			RecursionAvailable: true, Zero: true, AuthenticatedData: true, CheckingDisabled: true, Rcode: 15,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := (&dns.Msg{MsgHdr: tc.hdr}).Pack()
			require.NoError(t, err)
			assert.Equal(t, binary.BigEndian.Uint16(b[2:]), headerFlags(&tc.hdr))
		})
	}
}
