package listen

import (
	"bytes"
	"encoding/binary"
	"fmt"
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
