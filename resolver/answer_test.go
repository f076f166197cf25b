package resolver

import (
	"bytes"
	"encoding/binary"
	"strings"
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

// TestRuleBuiltAnswerOPT: whatever OPT and header bits the builder of an
// answer gave it, ruleBuiltAnswer leaves the OPT of every answer of
// dnsfence's (our buffer size, version 0, no flag but the query's DO,
// RFC 6891 §6.1.3, RFC 3225 §3) and the header of replyHeader (no AD, as
// no upstream vouched for the data), keeping the builder's AA.
func TestRuleBuiltAnswerOPT(t *testing.T) {
	tests := []struct {
		name   string
		do, ad bool
	}{
		{name: "query without DO"},
		{name: "query with DO", do: true},
		{name: "query with AD", ad: true},
		{name: "query with DO and AD", do: true, ad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := question("zone.example.", dns.TypeSOA, true)
			req.Opcode = dns.OpcodeNotify
			req.AuthenticatedData = tc.ad
			req.IsEdns0().SetDo(tc.do)
			m := new(dns.Msg)
			m.SetReply(req)
			m.Authoritative, m.AuthenticatedData = true, true
			m.SetEdns0(dns.DefaultMsgSize, !tc.do)
			opt := m.IsEdns0()
			opt.SetVersion(1)
			opt.Hdr.Ttl |= 0x7FFF // every flag but DO (RFC 6891 §6.1.4, Z)

			ruleBuiltAnswer(req, m)
			assert.True(t, m.Authoritative, "the builder decides AA")
			assert.False(t, m.AuthenticatedData)
			opt = m.IsEdns0()
			require.NotNil(t, opt)
			assert.Equal(t, uint16(ednsSize), opt.UDPSize())
			assert.Zero(t, opt.Version())
			assert.Equal(t, tc.do, opt.Do())
			assert.Zero(t, opt.Hdr.Ttl&0x7FFF, "flags other than DO")
		})
	}
}

// TestSuffixAt: suffixAt finds the owner in the question name at a label
// boundary when the question spells it octet for octet, so that
// appendOwner points to it without packing it, and refuses any other
// owner: another spelling, no label boundary, escapes, the root.
func TestSuffixAt(t *testing.T) {
	tests := []struct {
		name, qname, owner string
		off                int
		ok                 bool
	}{
		{name: "parent", qname: "www.tiktok.com.", owner: "tiktok.com.", off: 4, ok: true},
		{name: "itself", qname: "tiktok.com.", owner: "tiktok.com.", off: 0, ok: true},
		{name: "top-level domain", qname: "www.tiktok.com.", owner: "com.", off: 11, ok: true},
		{name: "one octet labels", qname: "a.b.", owner: "b.", off: 2, ok: true},
		{name: "label of 63", qname: "x." + strings.Repeat("a", 63) + ".", owner: strings.Repeat("a", 63) + ".", off: 2, ok: true},
		{name: "another case", qname: "www.TikTok.com.", owner: "tiktok.com."},
		{name: "no label boundary", qname: "xtiktok.com.", owner: "tiktok.com."},
		{name: "longer than the question", qname: "tiktok.com.", owner: "www.tiktok.com."},
		{name: "not a suffix", qname: "www.tiktok.com.", owner: "tiktok.org."},
		{name: "root", qname: "a.b.", owner: "."},
		{name: "not fully qualified", qname: "www.tiktok.com.", owner: "tiktok.com"},
		{name: "escaped", qname: "www.tiktok.com.", owner: `\116iktok.com.`},
		{name: "a label with a dot octet", qname: `a.b\.c.`, owner: "b.c."},
		{name: "escape spelling the octets of a backslash label", qname: `x.\\a.`, owner: `\a.`},
		{name: "empty label", qname: "b.c.", owner: ".c."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := appendName(nil, tc.qname)
			require.NoError(t, err)
			off, ok := suffixAt(w, tc.owner)
			assert.Equal(t, tc.ok, ok)
			if tc.ok {
				assert.Equal(t, tc.off, off)
			}
		})
	}
}

// TestOwnerPointerWithin14Bits: a compression pointer holds an offset of
// 14 bits (RFC 1035 §4.1.4): the SOA owner points to the question's
// suffix at offset 0x3FFF, the last it can reach, and is packed whole
// when the suffix is at 0x4000, whether appendOwner finds it (suffixAt)
// or compressName does (an owner spelt with an escape).
func TestOwnerPointerWithin14Bits(t *testing.T) {
	const qname = "www.tiktok.com." // tiktok.com. 4 octets in
	tests := []struct {
		name    string
		owner   string
		suffix  int // offset of the question's tiktok.com.
		pointer bool
	}{
		{name: "last offset a pointer reaches", owner: "tiktok.com.", suffix: 0x3FFF, pointer: true},
		{name: "first offset beyond it", owner: "tiktok.com.", suffix: 0x4000},
		{name: "escaped, last offset a pointer reaches", owner: `\116iktok.com.`, suffix: 0x3FFF, pointer: true},
		{name: "escaped, first offset beyond it", owner: `\116iktok.com.`, suffix: 0x4000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			qstart := tc.suffix - 4
			b, err := appendName(make([]byte, qstart), qname)
			require.NoError(t, err)
			qend := len(b)
			got, err := appendOwner(bytes.Clone(b), tc.owner, qstart, qend)
			require.NoError(t, err)
			want := binary.BigEndian.AppendUint16(bytes.Clone(b), 0xC000|uint16(tc.suffix))
			if !tc.pointer {
				want, err = appendName(bytes.Clone(b), "tiktok.com.")
				require.NoError(t, err)
			}
			assert.Equal(t, want[qend:], got[qend:])
		})
	}
}

// TestAppendBlockedFitsMaxSize: appendBlocked reports whether the answer
// it appended, not what b held before it, fits maxSize octets: an answer
// of exactly maxSize does, with one octet less it does not.
func TestAppendBlockedFitsMaxSize(t *testing.T) {
	req := question("www.tiktok.com.", dns.TypeA, true)
	whole, ok := appendBlocked(nil, req, dns.RcodeNameError, "tiktok.com.", 60, 1, "blocked", dns.MaxMsgSize)
	require.True(t, ok)
	for _, prefix := range [][]byte{nil, make([]byte, 100)} {
		b, ok := appendBlocked(bytes.Clone(prefix), req, dns.RcodeNameError, "tiktok.com.", 60, 1, "blocked", len(whole))
		assert.True(t, ok, "after %d octets: an answer of maxSize fits", len(prefix))
		assert.Equal(t, whole, b[len(prefix):])
		_, ok = appendBlocked(bytes.Clone(prefix), req, dns.RcodeNameError, "tiktok.com.", 60, 1, "blocked", len(whole)-1)
		assert.False(t, ok, "after %d octets: an answer one octet over maxSize does not fit", len(prefix))
	}
}

// TestAppendNameError: a name that is no domain name on the wire (an
// empty label, a label of 64 octets, more than 255 octets) is an error,
// and b comes back as it was, so that no half-packed name is sent.
func TestAppendNameError(t *testing.T) {
	for _, name := range []string{"a..b.", strings.Repeat("a", 64) + ".", strings.Repeat("abc.", 64)} {
		prefix := []byte{1, 2, 3}
		b, err := appendName(bytes.Clone(prefix), name)
		assert.Error(t, err, name)
		assert.Equal(t, prefix, b, name)
	}
}
