package listen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
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
				assert.True(t, got.reject.RecursionAvailable, name+": RA, as in every reply to a QUERY")
			}
		})
	}
}

// TestMalformedOptionsRejected: a query whose COOKIE option is not 8, nor
// 16 to 40 octets (RFC 7873 §5.2.2), or whose Client Subnet address has
// other octets than its prefix needs or bits past it (RFC 7871 §6), gets
// FORMERR, with an OPT, from every
// listener: the plain ones (AcceptMessage: UDP, TCP, DNS over TLS) and
// the encrypted ones (checkQuery: HTTPS, QUIC). Well-formed ones pass.
func TestMalformedOptionsRejected(t *testing.T) {
	withOption := func(code uint16, data []byte) []byte {
		q := new(dns.Msg)
		q.SetQuestion("example.org.", dns.TypeA)
		q.SetEdns0(1232, false)
		q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: code, Data: data}}
		b, err := q.Pack()
		require.NoError(t, err)
		return b
	}
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	invalid := func([]byte, error) {}
	for _, tc := range []struct {
		name    string
		b       []byte
		formerr bool
	}{
		{name: "client cookie", b: withOption(dns.EDNS0COOKIE, make([]byte, 8))},
		{name: "client and server cookie", b: withOption(dns.EDNS0COOKIE, make([]byte, 16))},
		{name: "longest cookie", b: withOption(dns.EDNS0COOKIE, make([]byte, 40))},
		{name: "empty cookie", b: withOption(dns.EDNS0COOKIE, nil), formerr: true},
		{name: "client cookie of 7", b: withOption(dns.EDNS0COOKIE, make([]byte, 7)), formerr: true},
		{name: "server cookie of 1", b: withOption(dns.EDNS0COOKIE, make([]byte, 9)), formerr: true},
		{name: "server cookie of 7", b: withOption(dns.EDNS0COOKIE, make([]byte, 15)), formerr: true},
		{name: "server cookie of 33", b: withOption(dns.EDNS0COOKIE, make([]byte, 41)), formerr: true},
		{name: "subnet 192.0.2.0/24", b: withOption(dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 192, 0, 2})},
		{name: "subnet 2001:db8::/33", b: withOption(dns.EDNS0SUBNET, []byte{0, 2, 33, 0, 0x20, 1, 0xd, 0xb8, 0})},
		{name: "subnet family 0", b: withOption(dns.EDNS0SUBNET, []byte{0, 0, 0, 0})},
		{name: "subnet bits past the prefix", b: withOption(dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 192, 0, 2, 1}), formerr: true},
		{name: "subnet bits past the prefix in its last octet", b: withOption(dns.EDNS0SUBNET, []byte{0, 2, 33, 0, 0x20, 1, 0xd, 0xb8, 0x40}), formerr: true},
		{name: "subnet too many octets", b: withOption(dns.EDNS0SUBNET, []byte{0, 1, 8, 0, 10, 0, 0, 0}), formerr: true},
		{name: "subnet too few octets", b: withOption(dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 10}), formerr: true},
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
				assert.NotNil(t, got.reject.IsEdns0(), name+": an OPT, as the query had")
			}
		})
	}
}

// TestOptionsOfOtherVersionsNotRead: the options of an OPT of a VERSION
// other than 0 are not checked by version 0's rules on any listener
// (AcceptMessage: UDP, TCP, DNS over TLS; checkQuery: HTTPS, QUIC;
// keepaliveTimeout: TCP, DNS over TLS): the query goes to the Handler,
// which answers BADVERS (RFC 6891 §6.1.3). Such a query with a COOKIE of
// 2 octets got FORMERR from the listener.
func TestOptionsOfOtherVersionsNotRead(t *testing.T) {
	query := func(version uint8, code uint16, data []byte) []byte {
		q := new(dns.Msg)
		q.SetQuestion("example.org.", dns.TypeA)
		q.SetEdns0(1232, false)
		q.IsEdns0().SetVersion(version)
		q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: code, Data: data}}
		b, err := q.Pack()
		require.NoError(t, err)
		return b
	}
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	invalid := func([]byte, error) {}
	for _, version := range []uint8{1, 255} {
		b := query(version, dns.EDNS0COOKIE, []byte{1, 2})
		req, reject := AcceptMessage(b, accept, invalid)
		assert.NotNil(t, req, "version %d: plain", version)
		assert.Nil(t, reject, "version %d: plain", version)
		chk := checkQuery(b)
		assert.NotNil(t, chk.req, "version %d: encrypted", version)
		assert.Nil(t, chk.reject, "version %d: encrypted", version)
		assert.False(t, keepaliveTimeout(query(version, dns.EDNS0TCPKEEPALIVE, []byte{0, 100})), "version %d", version)
	}
	_, reject := AcceptMessage(query(0, dns.EDNS0COOKIE, []byte{1, 2}), accept, invalid)
	assert.NotNil(t, reject, "version 0: FORMERR")
	assert.True(t, keepaliveTimeout(query(0, dns.EDNS0TCPKEEPALIVE, []byte{0, 100})), "version 0")
}

// TestBodyFormerrWhateverVersion: a query whose header is taken but whose
// body is not (its records cut short, its question's name a pointer, a
// record that does not unpack) gets FORMERR from every listener, the
// plain ones (AcceptMessage) and the encrypted ones (checkQuery), whatever
// the VERSION of its OPT: BADVERS answers the rejections by header
// (headerReject) and the Handler's, not a body the listener could not
// read. The plain listeners answered BADVERS to such a query of version 1
// (fuzzed: FuzzRecordsWhole/6a94ab8c218a192a), the encrypted ones FORMERR.
func TestBodyFormerrWhateverVersion(t *testing.T) {
	query := func(version uint8, edit func(m *dns.Msg)) []byte {
		q := new(dns.Msg)
		q.SetQuestion("example.org.", dns.TypeA)
		if edit != nil {
			edit(q)
		}
		q.SetEdns0(1232, false)
		q.IsEdns0().SetVersion(version)
		b, err := q.Pack()
		require.NoError(t, err)
		return b
	}
	cutShort := func(version uint8) []byte {
		b := query(version, nil)
		b[11] = 2 // ARCOUNT 2, the OPT alone there
		return b
	}
	pointer := func(version uint8) []byte {
		b := query(version, nil)
		return append(append(b[:12:12], 0xC0, 12), b[12+len("\x07example\x03org\x00"):]...)
	}
	badRecord := func(version uint8) []byte {
		return query(version, func(m *dns.Msg) {
			m.Answer = []dns.RR{&dns.RFC3597{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET}, Rdata: "0102"}}
		})
	}
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	invalid := func([]byte, error) {}
	for _, tc := range []struct {
		name  string
		query func(version uint8) []byte
	}{
		{name: "ARCOUNT 2, one OPT", query: cutShort},
		{name: "question's name a pointer", query: pointer},
		{name: "an A record of 2 octets", query: badRecord},
	} {
		for _, version := range []uint8{0, 1, 255} {
			t.Run(fmt.Sprintf("%s, version %d", tc.name, version), func(t *testing.T) {
				b := tc.query(version)
				req, reject := AcceptMessage(b, accept, invalid)
				chk := checkQuery(b)
				for name, got := range map[string]struct{ req, reject *dns.Msg }{
					"plain": {req, reject}, "encrypted": {chk.req, chk.reject},
				} {
					assert.Nil(t, got.req, name)
					require.NotNil(t, got.reject, name)
					assert.Equal(t, dns.RcodeFormatError, got.reject.Rcode, name+": FORMERR, not BADVERS (16)")
					assert.NotNil(t, got.reject.IsEdns0(), name+": an OPT, as the query's")
				}
				assert.Equal(t, resultFormerr, chk.result)
			})
		}
	}
}

// TestTooManyRecordsRejectedFromTheHeader: a message counting more
// records than a query holds (tooManyRecords) is answered FORMERR from
// its header, by the plain listeners (AcceptQuery, through AcceptMessage)
// and the encrypted ones (checkQuery: HTTPS, QUIC), BADVERS when its OPT
// is of another version, without its records being unpacked: 65,535
// octets of MINFO records, each of 16 octets and 3 names of 244 unpacked,
// cost 3.7 MB before. The counts a query may have still reach the
// Handler.
func TestTooManyRecordsRejectedFromTheHeader(t *testing.T) {
	name := strings.Repeat(strings.Repeat("a", 60)+".", 4)
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.SetEdns0(1232, false)
	b, err := q.Pack()
	require.NoError(t, err)
	records := b[:len(b)-11] // the OPT, last, is put back after the records
	opt := b[len(b)-11:]
	rr := []byte{0xc0, 12, 0, byte(dns.TypeMINFO), 0, 1, 0, 0, 0, 0, 0, 4, 0xc0, 12, 0xc0, 12}
	n := 0
	for len(records)+len(rr)+len(opt) <= dns.MaxMsgSize {
		records = append(records, rr...)
		n++
	}
	many := append(records, opt...)
	binary.BigEndian.PutUint16(many[6:], uint16(n))
	badvers := bytes.Clone(many)
	badvers[len(badvers)-5] = 1 // the OPT's VERSION
	invalid := func([]byte, error) {}
	for _, tc := range []struct {
		name  string
		b     []byte
		rcode int
	}{{"version 0", many, dns.RcodeFormatError}, {"version 1", badvers, dns.RcodeBadVers}} {
		var req, reject *dns.Msg
		var chk queryCheck
		allocated := testing.AllocsPerRun(5, func() {
			req, reject = AcceptMessage(tc.b, AcceptQuery, invalid)
			chk = checkQuery(tc.b)
		})
		for tr, got := range map[string]struct{ req, reject *dns.Msg }{
			"plain": {req, reject}, "encrypted": {chk.req, chk.reject},
		} {
			assert.True(t, got.req == nil, "%s %s: taken as a query", tc.name, tr)
			require.NotNil(t, got.reject, "%s %s", tc.name, tr)
			assert.Equal(t, tc.rcode, got.reject.Rcode, "%s %s", tc.name, tr)
			assert.NotNil(t, got.reject.IsEdns0(), "%s %s: an OPT answers an OPT", tc.name, tr)
		}
		assert.Less(t, allocated, float64(100), "%s: %d records unpacked", tc.name, n)
	}
	// What a query may hold: a NOTIFY's SOA, an IXFR's SOA, an OPT and a
	// TSIG. Counted, they reach the parse (here cut short: FORMERR for
	// that, with the question's records missing).
	for _, counts := range [][3]uint16{{1, 0, 0}, {0, 1, 0}, {0, 0, 2}, {1, 1, 2}} {
		dh := dns.Header{Qdcount: 1, Ancount: counts[0], Nscount: counts[1], Arcount: counts[2]}
		assert.Equal(t, dns.MsgAccept, AcceptQuery(dh), "%v", counts)
	}
	for _, counts := range [][3]uint16{{2, 0, 0}, {0, 2, 0}, {0, 0, 3}} {
		dh := dns.Header{Qdcount: 1, Ancount: counts[0], Nscount: counts[1], Arcount: counts[2]}
		assert.Equal(t, dns.MsgReject, AcceptQuery(dh), "%v", counts)
	}
}

// TestAcceptMessageReplies: what AcceptMessage, with AcceptQuery, makes of
// a message: one shorter than a header is dropped unanswered, and invalid
// is told (the Server counts it dropped); a whole header is enough to be
// answered, FORMERR for a question count of 0; a message of two
// questions is FORMERR whatever the VERSION of its OPT (RFC 9619 §4); a
// reply copies RD as the query has it, clear too (RFC 1035 §4.1.1), and
// carries an OPT only when the query does, with the query's DO bit (RFC
// 6891 §7, RFC 3225 §3); and a query with an option miekg/dns refuses to
// unpack (an EXPIRE of one octet) is taken without it, the Client Subnet
// beside it kept (unpackQuery); one that does not parse without its
// options either is FORMERR, and invalid is told; so is a question whose
// name is a compression pointer (questionSound), which miekg/dns follows.
func TestAcceptMessageReplies(t *testing.T) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}
	query := func(edit func(*dns.Msg)) []byte {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		edit(m)
		return pack(m)
	}
	withOPT := func(do bool, version uint8) func(*dns.Msg) {
		return func(m *dns.Msg) {
			m.SetEdns0(1232, do)
			m.IsEdns0().SetVersion(version)
		}
	}
	none := func(*dns.Msg) {}
	noQuestion := func(edit func(*dns.Msg)) []byte {
		return query(func(m *dns.Msg) { m.Question = nil; edit(m) })
	}
	ecs := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: []byte{192, 0, 2, 0}}
	expireOf1 := query(func(m *dns.Msg) {
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{ecs, &dns.EDNS0_LOCAL{Code: dns.EDNS0EXPIRE, Data: []byte{1}}}
	})
	// An A record whose RDLENGTH is 3: whole by its length
	// (dnswire.RecordsWhole), but no A record; with an OPT, so that
	// unpackQuery parses it again without its options, and fails again.
	aOf3 := query(func(m *dns.Msg) {
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "a.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(192, 0, 2, 1)})
		m.SetEdns0(1232, false)
	})
	i := bytes.Index(aOf3, []byte{0, 4, 192, 0, 2, 1}) // the A's RDLENGTH and RDATA
	require.Positive(t, i)
	aOf3 = append(append(aOf3[:i:i], 0, 3, 192, 0, 2), aOf3[i+6:]...)
	// A question whose name is a pointer to the header: miekg/dns reads
	// it from the ID, whose first octet 0 reads as the root.
	pointer := query(func(m *dns.Msg) { m.Id = 7 })
	pointer = append(append(pointer[:12:12], 0xC0, 0), pointer[12+len("\x07example\x03org\x00"):]...)
	unpacked := new(dns.Msg)
	require.NoError(t, unpacked.Unpack(pointer), "miekg/dns takes the pointer")
	require.Equal(t, ".", unpacked.Question[0].Name)
	for _, tc := range []struct {
		name    string
		b       []byte
		rcode   int   // of the reject; -1: none
		taken   bool  // a req
		invalid error // what invalid is told, if anything
		rd      bool  // the reject's RD
		opt     bool  // the reject carries an OPT
		do      bool  // and its DO bit
	}{
		{name: "11 octets", b: noQuestion(none)[:11], rcode: -1, invalid: dns.ErrShortRead},
		{name: "a header alone", b: noQuestion(none), rcode: dns.RcodeFormatError, rd: true},
		{name: "a header alone, RD clear", b: noQuestion(func(m *dns.Msg) { m.RecursionDesired = false }), rcode: dns.RcodeFormatError},
		{name: "no question, an OPT", b: noQuestion(withOPT(false, 0)), rcode: dns.RcodeFormatError, rd: true, opt: true},
		{name: "no question, an OPT with DO", b: noQuestion(withOPT(true, 0)), rcode: dns.RcodeFormatError, rd: true, opt: true, do: true},
		{name: "no question, an OPT with a Z bit, no DO", b: noQuestion(func(m *dns.Msg) {
			withOPT(false, 0)(m)
			m.IsEdns0().SetZ(0x0100)
		}), rcode: dns.RcodeFormatError, rd: true, opt: true},
		{name: "no question, an OPT of version 1", b: noQuestion(withOPT(true, 1)), rcode: dns.RcodeBadVers, rd: true, opt: true, do: true},
		{name: "two questions, an OPT of version 1", b: query(func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			withOPT(false, 1)(m)
		}), rcode: dns.RcodeFormatError, rd: true, opt: true},
		{name: "an EXPIRE of one octet beside a Client Subnet", b: expireOf1, rcode: -1, taken: true},
		{name: "the question's name a pointer to the header", b: pointer, rcode: dns.RcodeFormatError, invalid: dns.ErrBuf, rd: true},
		{name: "an A record of 3 octets beside an OPT", b: aOf3, rcode: dns.RcodeFormatError, invalid: dns.ErrBuf, rd: true, opt: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var told []error
			req, reject := AcceptMessage(tc.b, AcceptQuery, func(_ []byte, err error) { told = append(told, err) })
			if tc.invalid != nil {
				assert.Equal(t, []error{tc.invalid}, told, "invalid told")
			} else {
				assert.Empty(t, told, "invalid told")
			}
			if !tc.taken {
				assert.Nil(t, req)
			} else if assert.NotNil(t, req) {
				require.NotNil(t, req.IsEdns0())
				opts := req.IsEdns0().Option
				require.Len(t, opts, 1, "the Client Subnet kept, the EXPIRE left out")
				got, ok := opts[0].(*dns.EDNS0_SUBNET)
				require.True(t, ok, "the Client Subnet kept: %v", opts[0])
				assert.Equal(t, "192.0.2.0/24", fmt.Sprintf("%v/%d", got.Address, got.SourceNetmask))
			}
			if tc.rcode < 0 {
				assert.Nil(t, reject)
				return
			}
			require.NotNil(t, reject)
			assert.Equal(t, tc.rcode, reject.Rcode)
			assert.Equal(t, binary.BigEndian.Uint16(tc.b), reject.Id)
			assert.Equal(t, tc.rd, reject.RecursionDesired, "RD")
			opt := reject.IsEdns0()
			if !tc.opt {
				assert.Nil(t, opt, "an OPT, where the query has none")
				return
			}
			require.NotNil(t, opt, "no OPT, where the query has one")
			assert.Equal(t, tc.do, opt.Do(), "DO")
		})
	}
}
