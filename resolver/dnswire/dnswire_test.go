package dnswire

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNameEnd(t *testing.T) {
	label63 := append([]byte{63}, strings.Repeat("a", 63)...)
	long := func(labels int) []byte { // labels of 63 octets, then the root
		var b []byte
		for range labels {
			b = append(b, label63...)
		}
		return append(b, 0)
	}
	// Each msg follows a header of zeros, h octets: offsets count from
	// its end, pointers from the message's start.
	const h = HeaderLen
	tests := []struct {
		name string
		msg  []byte
		// prior are the offsets of the names read before, with the same
		// Labels: the only ones a pointer may point into.
		prior []int
		off   int
		end   int
		ok    bool
		// miekgOK: miekg/dns reads it, though it points elsewhere.
		miekgOK bool
	}{
		{name: "root", msg: []byte{0}, end: 1, ok: true},
		{name: "two labels", msg: []byte{1, 'a', 2, 'b', 'c', 0, 9}, end: 6, ok: true},
		{name: "pointer back", msg: []byte{1, 'a', 0, 1, 'b', 0xC0, h + 0}, prior: []int{0}, off: 3, end: 7, ok: true},
		{name: "pointer to a later label of a prior name", msg: []byte{1, 'a', 1, 'b', 0, 0xC0, h + 2}, prior: []int{0}, off: 5, end: 7, ok: true},
		{name: "pointer through a prior pointer", msg: []byte{1, 'a', 0, 1, 'b', 0xC0, h + 0, 0xC0, h + 3}, prior: []int{0, 3}, off: 7, end: 9, ok: true},
		{name: "pointer to a name not read", msg: []byte{1, 'a', 0, 1, 'b', 0xC0, h + 0}, off: 3, miekgOK: true},
		{name: "pointer into a label", msg: []byte{2, 1, 'b', 0, 0xC0, h + 1}, prior: []int{0}, off: 4, miekgOK: true},
		{name: "pointer to a prior name's root", msg: []byte{1, 'a', 0, 0xC0, h + 2}, prior: []int{0}, off: 3, miekgOK: true},
		{name: "pointer to a prior pointer", msg: []byte{1, 'a', 0, 1, 'b', 0xC0, h + 0, 0xC0, h + 5}, prior: []int{0, 3}, off: 7, miekgOK: true},
		{name: "pointer forward", msg: []byte{0xC0, h + 2, 1, 'a', 0}, prior: []int{2}, miekgOK: true},
		{name: "pointer into the header", msg: []byte{1, 'a', 0, 0xC0, 0}, prior: []int{0}, off: 3, miekgOK: true},
		{name: "pointer to its own label", msg: []byte{1, 'a', 0xC0, h + 0}},
		{name: "pointer to itself", msg: []byte{0xC0, h + 0}},
		{name: "pointer loop", msg: []byte{0xC0, h + 2, 0xC0, h + 0}},
		{name: "pointer past the end", msg: []byte{0xC0, h + 9}},
		{name: "pointer cut short", msg: []byte{0xC0}},
		{name: "label past the end", msg: []byte{5, 'a', 'b'}},
		{name: "label one octet past the end", msg: []byte{3, 'a', 'b'}},
		{name: "label two octets past the end", msg: []byte{4, 'a', 'b'}},
		{name: "no root", msg: []byte{1, 'a'}},
		{name: "label type 0x40", msg: []byte{0x41, 0}},
		{name: "label type 0x80", msg: []byte{0x81, 0}},
		{name: "253 octets of text", msg: append(long(3), 0), end: 193, ok: true},
		{name: "255 octets", msg: append(append(long(3)[:192], append([]byte{61}, strings.Repeat("b", 61)...)...), 0), end: 255, ok: true},
		{name: "256 octets", msg: append(append(long(3)[:192], append([]byte{62}, strings.Repeat("b", 62)...)...), 0)},
		{name: "five long labels", msg: long(5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := append(make([]byte, h), tc.msg...)
			msg = msg[:len(msg):len(msg)] // no octet past its end to read
			var seen Labels
			seen.Reset(len(msg))
			for _, off := range tc.prior {
				_, r := nameEnd(msg, h+off, &seen)
				require.Equal(t, read, r, "the name at %d", off)
			}
			end, r := nameEnd(msg, h+tc.off, &seen)
			assert.Equal(t, tc.ok, r == read)
			if tc.ok {
				assert.Equal(t, h+tc.end, end)
			}
			// miekg/dns agrees on what is a name, and reads more.
			_, mend, err := dns.UnpackDomainName(msg, h+tc.off)
			assert.Equal(t, tc.ok || tc.miekgOK, err == nil, "miekg/dns: %v", err)
			if err == nil && tc.ok {
				assert.Equal(t, h+tc.end, mend)
			}
		})
	}
}

// TestWalkShortOrMisplaced: Walk and PointsIntoHeader read no message
// shorter than a header, and no question end before the header's or past
// the message's, whatever the caller (PointsIntoHeader is asked where
// ReadQuestion failed, its Question zero); before, a message shorter than
// a header panicked (its counts read past its end).
func TestWalkShortOrMisplaced(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	b, err := m.Pack()
	require.NoError(t, err)
	for _, c := range []struct {
		msg  []byte
		qend int
	}{{b[:5], 0}, {b[:HeaderLen-1], HeaderLen}, {b, 0}, {b, HeaderLen - 1}, {b, len(b) + 1}} {
		assert.NotPanics(t, func() {
			assert.False(t, Walk(c.msg, c.qend, func(Record) bool { return true }), "%d octets, qend %d", len(c.msg), c.qend)
			assert.False(t, PointsIntoHeader(c.msg, c.qend), "%d octets, qend %d", len(c.msg), c.qend)
		})
	}
	q, ok := ReadQuestion(b)
	require.True(t, ok)
	assert.True(t, Walk(b, q.End, func(Record) bool { return true }))

	// An answer with ID 0 and no flag, whose header read from offset 0
	// would be a record (owner the root, TYPE 0, RDLENGTH 0): with qend
	// misplaced, no record reaches fn. Nor with qend after the question
	// (at the second of two records, one counted), where the rest would
	// read as the record counted.
	rr, err := dns.NewRR("www.example.org. 60 IN A 192.0.2.1")
	require.NoError(t, err)
	m.Id, m.RecursionDesired = 0, false
	m.Answer = []dns.RR{rr}
	one, err := m.Pack()
	require.NoError(t, err)
	q, ok = ReadQuestion(one)
	require.True(t, ok)
	two := append(append([]byte(nil), one...), one[q.End:]...) // the record twice, ANCOUNT 1
	for _, c := range []struct {
		msg  []byte
		qend int
	}{{one, 0}, {one, HeaderLen - 1}, {two, len(one)}} {
		assert.False(t, Walk(c.msg, c.qend, func(r Record) bool {
			t.Errorf("qend %d: a record at %d handed to fn", c.qend, r.Off)
			return true
		}), "%d octets, qend %d", len(c.msg), c.qend)
	}

	// A message of no question (qend HeaderLen): its records read.
	hdr := append([]byte(nil), one[:HeaderLen]...)
	hdr[5] = 0 // QDCOUNT
	assert.True(t, Walk(append(hdr, one[q.End:]...), HeaderLen, func(Record) bool { return true }), "no question, one record")
	hdr[7] = 0 // ANCOUNT
	assert.True(t, Walk(hdr, HeaderLen, func(Record) bool { return true }), "a header alone")
}

// TestWalkUnreadTypes: a record of a type whose names miekg/dns reads
// and Walk does not (HIP, IPSECKEY, AMTRELAY, TKEY, TSIG) is not read,
// even when its RDATA is one name and nothing else, which Walk could read
// but miekg/dns would not take as that type.
func TestWalkUnreadTypes(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	m.Response = true
	b, err := m.Pack()
	require.NoError(t, err)
	b[7] = 1 // ANCOUNT
	for _, typ := range []uint16{typeHIP, typeIPSECKEY, typeAMTRELAY, typeTKEY, typeTSIG} {
		for _, rdata := range [][]byte{{0}, {0xC0, HeaderLen}} { // the root; the question's name
			msg := append(append([]byte(nil), b...), 0xC0, HeaderLen, byte(typ>>8), byte(typ), 0, ClassINET, 0, 0, 0, 60, 0, byte(len(rdata)))
			msg = append(msg, rdata...)
			q, ok := ReadQuestion(msg)
			require.True(t, ok)
			assert.False(t, Walk(msg, q.End, func(Record) bool { return true }), "type %d, RDATA % x", typ, rdata)
		}
	}
}

// TestWalkNAPTRCutShort: a NAPTR record whose character-strings run past
// the message's end, as its last record, is not read, and no octet past
// the end is read.
func TestWalkNAPTRCutShort(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeNAPTR)
	m.Response = true
	b, err := m.Pack()
	require.NoError(t, err)
	b[7] = 1 // ANCOUNT
	for _, rdata := range [][]byte{
		{0, 100, 0, 10, 5, 'a'},         // FLAGS past the end
		{0, 100, 0, 10, 1, 'a', 9},      // SERVICES
		{0, 100, 0, 10, 0, 0},           // no REGEXP
		{0, 100, 0, 10, 0, 0, 200, 'x'}, // REGEXP
		{0, 100, 0, 10, 0, 0, 0},        // no REPLACEMENT
	} {
		msg := append(append([]byte(nil), b...), 0xC0, HeaderLen, 0, typeNAPTR, 0, ClassINET, 0, 0, 0, 60, 0, byte(len(rdata)))
		msg = append(msg, rdata...)
		msg = msg[:len(msg):len(msg)]
		q, ok := ReadQuestion(msg)
		require.True(t, ok)
		assert.NotPanics(t, func() {
			assert.False(t, Walk(msg, q.End, func(Record) bool { return true }), "RDATA % x", rdata)
		})
	}
}

// TestWalkSIGCutShort: a SIG record whose RDATA is too short to hold its
// TYPE COVERED (0 or 1 octets, the one octet a root name's), as the last
// record of the message, is not
// read (rdataLayout takes it as a SIG(0)) and reads no octet past the
// message's end.
func TestWalkSIGCutShort(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeSIG)
	m.Response = true
	b, err := m.Pack()
	require.NoError(t, err)
	b[7] = 1 // ANCOUNT
	for _, rdata := range [][]byte{{}, {0}, {1}} {
		msg := append(append([]byte(nil), b...), 0xC0, HeaderLen, 0, typeSIG, 0, ClassINET, 0, 0, 0, 60, 0, byte(len(rdata)))
		msg = append(msg, rdata...)
		q, ok := ReadQuestion(msg)
		require.True(t, ok)
		assert.NotPanics(t, func() {
			assert.False(t, Walk(msg, q.End, func(Record) bool { return true }), "RDATA of %d octets", len(rdata))
		})
	}
}

// TestWalkSIG0: a SIG record covering no type, a SIG(0) (RFC 2931 §3),
// is not read, wherever its TYPE COVERED octets are zero (the
// message path drops it); one covering a type reads.
func TestWalkSIG0(t *testing.T) {
	for _, covered := range []uint16{0, dns.TypeA, 0x0100} {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		m.Response = true
		sig := &dns.SIG{RRSIG: dns.RRSIG{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSIG, Class: dns.ClassANY},
			TypeCovered: covered, Algorithm: dns.RSASHA256, SignerName: "example.org.", Signature: "AQID"}}
		m.Extra = []dns.RR{sig}
		b, err := m.Pack()
		require.NoError(t, err)
		q, ok := ReadQuestion(b)
		require.True(t, ok)
		assert.Equal(t, covered != 0, Walk(b, q.End, func(Record) bool { return true }), "TYPE COVERED %d", covered)
	}
}

// aliasChain is an answer to www.example.org. A: a CNAME to
// web.example.org. and its A record.
func aliasChain(t *testing.T) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeA)
	m.Response = true
	for _, s := range []string{"www.example.org. 300 IN CNAME web.example.org.", "web.example.org. 60 IN A 192.0.2.1"} {
		rr, err := dns.NewRR(s)
		require.NoError(t, err)
		m.Answer = append(m.Answer, rr)
	}
	return m
}

func TestWalk(t *testing.T) {
	m := aliasChain(t)
	soa, err := dns.NewRR("example.org. 900 IN SOA ns.example.org. host.example.org. 1 2 3 4 120")
	require.NoError(t, err)
	m.Ns = []dns.RR{soa}
	m.SetEdns0(1232, true)
	m.Compress = true
	b, err := m.Pack()
	require.NoError(t, err)

	q, ok := ReadQuestion(b)
	require.True(t, ok)
	assert.Equal(t, uint16(dns.TypeA), q.Type)
	var got []Record
	require.True(t, Walk(b, q.End, func(r Record) bool { got = append(got, r); return true }))
	require.Len(t, got, 4)
	for i, want := range []struct {
		sec   int
		typ   uint16
		class uint16
		ttl   uint32
	}{{Answer, TypeCNAME, ClassINET, 300}, {Answer, TypeA, ClassINET, 60}, {Authority, TypeSOA, ClassINET, 900}, {Additional, TypeOPT, 1232, 1 << 15}} {
		assert.Equal(t, want.sec, got[i].Section, i)
		assert.Equal(t, want.typ, got[i].Type, i)
		assert.Equal(t, want.class, got[i].Class, i)
		assert.Equal(t, want.ttl, got[i].TTL, i)
	}
	assert.Equal(t, uint32(120), SOAMinimum(b, got[2]))
	assert.Equal(t, len(b), got[3].End)

	// Cut short (no octet after the cut to read), or with bytes after the
	// last record: not read.
	for n := got[1].RdOff; n < len(b); n++ {
		assert.NotPanics(t, func() {
			assert.False(t, Walk(b[:n:n], q.End, func(Record) bool { return true }), "cut to %d", n)
		})
	}
	assert.False(t, Walk(append(b, 0), q.End, func(Record) bool { return true }))
	// An A record of 3 octets: not read.
	bad := append([]byte(nil), b...)
	bad[got[1].RdOff-1] = 3
	assert.False(t, Walk(bad, q.End, func(Record) bool { return true }))
	// A name pointing into the header, or into a TTL: octets the wire
	// path rewrites, where no name is. Not read; the first is malformed.
	for _, tc := range []struct {
		name   string
		to     int
		header bool
	}{{"header", 0, true}, {"flags", 2, true}, {"ttl", got[0].TTLOff, false}, {"rdata", got[1].RdOff, false}} {
		bad := append([]byte(nil), b...)
		bad[got[1].Off], bad[got[1].Off+1] = 0xC0|byte(tc.to>>8), byte(tc.to)
		assert.False(t, Walk(bad, q.End, func(Record) bool { return true }), tc.name)
		assert.Equal(t, tc.header, PointsIntoHeader(bad, q.End), tc.name)
	}
	assert.False(t, PointsIntoHeader(b, q.End))
	// fn ends the walk.
	n := 0
	assert.False(t, Walk(b, q.End, func(Record) bool { n++; return n < 2 }))
	assert.Equal(t, 2, n)
}

// TestReadQuestionCutShort: a question reads only whole, its name, QTYPE
// and QCLASS; a message cut anywhere before QCLASS ends does not read,
// and is not read past its end.
func TestReadQuestionCutShort(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeAAAA)
	b, err := m.Pack()
	require.NoError(t, err)
	q, ok := ReadQuestion(b)
	require.True(t, ok)
	assert.Equal(t, Question{NameEnd: len(b) - 4, End: len(b), Type: TypeAAAA, Class: ClassINET}, q)
	for n := range len(b) {
		assert.NotPanics(t, func() {
			_, ok := ReadQuestion(b[:n])
			assert.False(t, ok, "%d of %d octets", n, len(b))
		})
	}
	// A label longer than 63 octets, or of a reserved kind (0x40, 0x80),
	// or a compression pointer (0xC0): not a question's name.
	for _, c := range []byte{64, 0x41, 0x81, 0xC0} {
		bad := append([]byte(nil), b...)
		bad[HeaderLen] = c
		_, ok := ReadQuestion(bad)
		assert.False(t, ok, "a label starting %#x", c)
	}
}

// TestReadQuestionLimits: a question's name reads with labels of up to 63
// octets and up to 255 octets in all (RFC 1035 §2.3.4), as miekg/dns
// reads it; a label of 64, or a name of 256, does not, though the
// message holds every octet the name claims and a QTYPE and QCLASS
// after it.
func TestReadQuestionLimits(t *testing.T) {
	label := func(n int) []byte { return append([]byte{byte(n)}, strings.Repeat("a", n)...) }
	name := func(labels ...int) (b []byte) {
		for _, n := range labels {
			b = append(b, label(n)...)
		}
		return append(b, 0)
	}
	for _, tc := range []struct {
		name  string
		qname []byte
		ok    bool
	}{
		{"a label of 63", name(63), true},
		{"a label of 64", name(64), false},
		{"255 octets", name(63, 63, 63, 61), true},
		{"256 octets", name(63, 63, 63, 62), false},
		{"256 octets in short labels", name(63, 63, 63, 30, 31), false},
	} {
		msg := append(make([]byte, HeaderLen), tc.qname...)
		msg[5] = 1 // QDCOUNT
		msg = append(msg, 0, TypeA, 0, ClassINET)
		q, ok := ReadQuestion(msg)
		assert.Equal(t, tc.ok, ok, tc.name)
		if ok {
			assert.Equal(t, Question{NameEnd: len(msg) - 4, End: len(msg), Type: TypeA, Class: ClassINET}, q, tc.name)
		}
		err := new(dns.Msg).Unpack(msg)
		assert.Equal(t, tc.ok, err == nil, "%s: miekg/dns: %v", tc.name, err)
	}
}

// TestRecordsWhole: a message holds every question and record its counts
// say only when each is whole (a question's QTYPE and QCLASS, a record's
// fixed fields and RDATA); cut anywhere inside one, it does not, and
// nothing past its end is read.
// Octets after the last record are not looked at.
func TestRecordsWhole(t *testing.T) {
	m := aliasChain(t)
	// A record in each other section: every count counts.
	ns, err := dns.NewRR("example.org. 300 IN NS ns.example.org.")
	require.NoError(t, err)
	glue, err := dns.NewRR("ns.example.org. 300 IN A 192.0.2.53")
	require.NoError(t, err)
	m.Ns, m.Extra = []dns.RR{ns}, []dns.RR{glue}
	m.Compress = true
	b, err := m.Pack()
	require.NoError(t, err)
	m.Answer, m.Ns, m.Extra = nil, nil, nil
	question, err := m.Pack() // the question alone
	require.NoError(t, err)
	for _, b := range [][]byte{b, question} {
		assert.True(t, RecordsWhole(b))
		assert.True(t, RecordsWhole(append(append([]byte(nil), b...), 0, 0)), "octets after the last record")
		for n := range len(b) {
			assert.NotPanics(t, func() {
				assert.False(t, RecordsWhole(b[:n]), "%d of %d octets", n, len(b))
			})
		}
	}
}

// TestSkipName: SkipName steps over labels by their lengths alone and
// stops at the root or after a pointer; it stops, not loops, at a label
// of a reserved kind, and reports a name cut short.
func TestSkipName(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		end  int
		ok   bool
	}{
		{name: "root", b: []byte{0}, end: 1, ok: true},
		{name: "labels", b: []byte{1, 'a', 2, 'b', 'c', 0, 9}, end: 6, ok: true},
		{name: "labels then pointer", b: []byte{1, 'a', 0xC0, 12, 9}, end: 4, ok: true},
		{name: "pointer cut short", b: []byte{1, 'a', 0xC0}},
		{name: "pointer at the end", b: []byte{1, 'a', 0xC0, 12}, end: 4, ok: true},
		{name: "pointer past 255", b: []byte{0xC1, 12, 9}, end: 2, ok: true},
		{name: "label type 0x40", b: []byte{0x41, 'a', 0}},
		{name: "label type 0x80", b: []byte{1, 'a', 0x81, 'b', 0}},
		{name: "no root", b: []byte{1, 'a'}},
		{name: "label past the end", b: []byte{5, 'a', 0}},
		{name: "empty", b: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end, ok := SkipName(tc.b, 0)
			assert.Equal(t, tc.ok, ok)
			if tc.ok {
				assert.Equal(t, tc.end, end)
			}
		})
	}
}

func TestEqualFold(t *testing.T) {
	assert.True(t, EqualFold([]byte("\x03WwW\x00"), []byte("\x03www\x00")))
	assert.False(t, EqualFold([]byte("\x03www\x00"), []byte("\x03wwx\x00")))
	assert.False(t, EqualFold([]byte("\x01a\x00"), []byte("\x01a\x01b\x00")))
	// Only ASCII letters fold: '[' (0x5B) is not '{' (0x7B), nor '@' (0x40)
	// '`' (0x60); 'A' and 'Z', at either end of the letters, do.
	assert.False(t, EqualFold([]byte("\x01[\x00"), []byte("\x01{\x00")))
	assert.False(t, EqualFold([]byte("\x01@\x00"), []byte("\x01`\x00")))
	assert.True(t, EqualFold([]byte("\x02AZ\x00"), []byte("\x02az\x00")))
	assert.True(t, EqualFold([]byte("\x02az\x00"), []byte("\x02AZ\x00")))
}

// TestWithoutOptions: the copy keeps the options keep takes, in order, and
// the rest of the message as it was (a record after the OPT too); an OPT of
// another version keeps none; a message without an OPT, or whose options
// run past its RDATA, has no copy. HasOption sees an option of any data,
// even one cut short.
func TestWithoutOptions(t *testing.T) {
	msg := func(version uint8, opts ...dns.EDNS0) []byte {
		m := new(dns.Msg)
		m.SetQuestion("a.example.", dns.TypeA)
		m.Id, m.Response = 1, true
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}}}
		m.SetEdns0(1232, true)
		m.IsEdns0().SetVersion(version)
		m.IsEdns0().Option = opts
		m.Extra = append(m.Extra, &dns.TXT{Hdr: dns.RR_Header{Name: "b.example.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"after"}})
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}
	expire := &dns.EDNS0_LOCAL{Code: dns.EDNS0EXPIRE, Data: []byte{0, 0, 1}}
	ede := &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus, ExtraText: "bogus"}
	short := &dns.EDNS0_LOCAL{Code: dns.EDNS0EDE, Data: []byte{6}}
	keepEDE := func(code uint16, data []byte) bool { return code == dns.EDNS0EDE && len(data) >= 2 }

	b := msg(0, expire, ede, short)
	assert.Error(t, new(dns.Msg).Unpack(b), "miekg/dns refuses the EXPIRE and the short EDE")
	assert.True(t, HasOption(b, dns.EDNS0EXPIRE))
	assert.False(t, HasOption(b, dns.EDNS0PADDING))
	rest, ok := WithoutOptions(b, keepEDE)
	require.True(t, ok)
	assert.Equal(t, msg(0, ede), rest, "the EDE kept, the rest as it was")
	assert.False(t, HasOption(rest, dns.EDNS0EXPIRE))

	rest, ok = WithoutOptions(msg(1, expire, ede), keepEDE)
	require.True(t, ok)
	assert.Equal(t, msg(1), rest, "another version's options: none kept")

	noOPT := msg(0)
	noOPT[11] = 0 // ARCOUNT 0: the OPT and the TXT are trailing octets
	_, ok = WithoutOptions(noOPT, keepEDE)
	assert.False(t, ok, "no OPT")
	bad := msg(0, ede)
	off, ok := FindOPT(bad)
	require.True(t, ok)
	_, ok = WithoutOptions(bad[:off+12], keepEDE)
	assert.False(t, ok, "the RDATA cut short")
	bad[off+10+3]++ // the EDE's OPTION-LENGTH runs past the RDATA
	_, ok = WithoutOptions(bad, keepEDE)
	assert.False(t, ok, "an option past the RDATA")
	assert.True(t, HasOption(bad, dns.EDNS0EDE), "an option cut short is seen")
	assert.True(t, HasOption(bad[:off+14], dns.EDNS0EDE), "and one past the message's end")
	assert.False(t, HasOption(bad[:off+13], dns.EDNS0EDE), "but not a code cut short")
	_, ok = FindOPT(bad[:HeaderLen-1])
	assert.False(t, ok, "no whole header")
	// Cut inside the OPT's fixed fields (TYPE to RDLENGTH): no OPT.
	good := msg(0, ede)
	for n := off; n < off+10; n++ {
		assert.NotPanics(t, func() {
			_, ok := FindOPT(good[:n])
			assert.False(t, ok, "%d octets of the OPT's fixed fields", n-off)
			assert.False(t, HasOption(good[:n], dns.EDNS0EDE), "%d octets of the OPT's fixed fields", n-off)
		})
	}
}

// TestWithout: the records left out go, and every record kept reads as
// it did, whatever its names pointed at (compressed against a record left
// out: the RRSIG's signer name, the NSEC's next name), the counts of
// each section set.
func TestWithout(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.org.", dns.TypeMX)
	m.Response = true
	for _, s := range []string{
		"www.example.org. 300 IN RRSIG MX 8 3 300 20300101000000 20200101000000 1 sig.example.net. AAAA",
		"www.example.org. 300 IN MX 10 mail.sig.example.net.",
		"www.example.org. 300 IN HTTPS 1 svc.sig.example.net. alpn=h2",
		"www.example.org. 300 IN NAPTR 100 10 \"s\" \"SIP+D2U\" \"\" _sip._udp.sig.example.net.",
		"www.example.org. 300 IN A 192.0.2.1",
	} {
		rr, err := dns.NewRR(s)
		require.NoError(t, err)
		m.Answer = append(m.Answer, rr)
	}
	for _, s := range []string{
		"example.org. 300 IN NSEC next.sig.example.net. A RRSIG",
		"example.org. 300 IN SOA ns.next.sig.example.net. host.example.org. 1 3600 600 86400 60",
	} {
		rr, err := dns.NewRR(s)
		require.NoError(t, err)
		m.Ns = append(m.Ns, rr)
	}
	m.SetEdns0(1232, false)
	m.Compress = true
	b, err := m.Pack()
	require.NoError(t, err)
	q, ok := ReadQuestion(b)
	require.True(t, ok)
	require.True(t, Walk(b, q.End, func(Record) bool { return true }))

	out, ok := Without(b, func(r Record) bool { return r.Type == typeRRSIG || r.Type == typeNSEC })
	require.True(t, ok)
	got := new(dns.Msg)
	require.NoError(t, got.Unpack(out))
	want := m.Copy()
	want.Answer, want.Ns = want.Answer[1:], want.Ns[1:]
	assert.Equal(t, want.String(), got.String())

	all, ok := Without(b, func(Record) bool { return false })
	require.True(t, ok)
	require.NoError(t, got.Unpack(all))
	assert.Equal(t, m.String(), got.String(), "nothing left out")

	_, ok = Without(b[:len(b)-1], func(Record) bool { return false })
	assert.False(t, ok, "a message Walk does not read")
	noQuestion := append([]byte(nil), b...)
	noQuestion[HeaderLen] = 0xC0 // a pointer where the question's name starts
	_, ok = Without(noQuestion, func(Record) bool { return false })
	assert.False(t, ok, "a message of no question ReadQuestion reads")
}

// TestWithoutLongest: Without gives a message of up to 65,535 octets,
// its names written out in full: a message of 65,529 octets whose
// pointers are 6 octets shorter than their names comes out as 65,535
// octets; of 65,530, it would be 65,536, and there is none. A pointer to
// an offset from 256 on (a first octet 0xC1) is followed like any.
func TestWithoutLongest(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("a.", dns.TypeA)
	m.Response = true
	head, err := m.Pack()
	require.NoError(t, err)
	// opaque is a record owned by a pointer to the question's name (2
	// octets for 3) with pad octets of RDATA.
	opaque := func(msg []byte, pad int) []byte {
		msg = append(msg, 0xC0, HeaderLen, 0xFF, 0, 0, ClassINET, 0, 0, 0, 60, byte(pad>>8), byte(pad))
		return append(msg, make([]byte, pad)...)
	}
	// message is the question, an opaque record, a record owned by b.a.
	// (the label b at 300), another opaque record, and a record owned by
	// a pointer to the label b.
	label := 300
	message := func(size int) []byte {
		msg := append([]byte(nil), head...)
		msg[7] = 4 // ANCOUNT
		msg = opaque(msg, label-len(head)-12)
		require.Len(t, msg, label)
		msg = append(msg, 1, 'b', 0xC0, HeaderLen, 0, TypeA, 0, ClassINET, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
		msg = opaque(msg, size-len(msg)-12-16)
		return append(msg, 0xC0|byte(label>>8), byte(label), 0, TypeA, 0, ClassINET, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2)
	}
	keep := func(Record) bool { return false }
	// Names in full: 1 more octet for each opaque record's owner, 1 for
	// b.a.'s, 3 for the last owner's.
	for _, size := range []int{400, 0xFFFF - 6, 0xFFFF - 5} {
		msg := message(size)
		require.Len(t, msg, size)
		out, ok := Without(msg, keep)
		if size+6 > 0xFFFF {
			assert.False(t, ok, "%d octets, %d in full", size, size+6)
			continue
		}
		require.True(t, ok, "%d octets, %d in full", size, size+6)
		assert.Len(t, out, size+6)
		got := new(dns.Msg)
		require.NoError(t, got.Unpack(out))
		assert.Equal(t, "b.a.", got.Answer[3].Header().Name, "the owner through a pointer to %d", label)
	}
}

// TestRecordHeld: a record's Held is its names as the strings miekg/dns
// unpacks them into (a name's text, escapes and all, through the
// pointers it is compressed to), 10 for its fixed fields, and its other
// RDATA as held (held.go), for records whose names compress to pointers,
// in the owner and the RDATA.
func TestRecordHeld(t *testing.T) {
	const zone = "a-rather-long-label.example.org."
	const odd = `\001\.\"x\255.` + zone // labels of octets miekg/dns escapes
	names := func(rr dns.RR) int {
		n := len(rr.Header().Name) + 10
		switch rr := rr.(type) {
		case *dns.A:
			return n + 4
		case *dns.AAAA:
			return n + 16
		case *dns.CNAME:
			return n + len(rr.Target)
		case *dns.MX:
			return n + 2 + len(rr.Mx)
		case *dns.NS:
			return n + len(rr.Ns)
		case *dns.SOA:
			return n + len(rr.Ns) + len(rr.Mbox) + 20
		case *dns.MINFO:
			return n + len(rr.Rmail) + len(rr.Email)
		case *dns.SRV:
			return n + 6 + len(rr.Target)
		case *dns.TXT:
			for _, s := range rr.Txt {
				n += len(s)
			}
			return n + stringHeader*len(rr.Txt) // two strings: a slice of 2
		case *dns.HTTPS:
			return n + 2 + len(rr.Target) + svcParam + len("h2") + 2*stringHeader // alpn=h2, a slice grown to 2
		case *dns.NSEC:
			return n + len(rr.NextDomain) + 2*typeBit // A AAAA
		}
		return -1
	}
	rrs := []string{
		zone + " 60 IN A 192.0.2.1",
		odd + " 60 IN AAAA 2001:db8::1",
		"www." + zone + " 60 IN CNAME " + odd,
		zone + " 60 IN MX 10 mail." + zone,
		odd + " 60 IN NS ns1." + odd,
		zone + " 60 IN SOA ns1." + zone + " hostmaster." + zone + " 1 2 3 4 5",
		zone + " 60 IN MINFO r." + zone + " e." + odd,
		"_sip._tcp." + zone + " 60 IN SRV 1 2 5060 sip." + zone,
		zone + " 60 IN TXT \"" + zone + "\" \"\"",
		zone + " 60 IN HTTPS 1 svc." + zone + " alpn=h2",
		zone + " 60 IN NSEC next." + odd + " A AAAA",
	}
	var answer []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		require.NoError(t, err, s)
		answer = append(answer, rr)
	}
	m, b, got, qend := anyAnswer(t, zone, true, answer...)
	i := 0
	require.True(t, Walk(b, qend, func(r Record) bool {
		assert.Equal(t, names(got.Answer[i]), r.Held, "%s (%d octets compressed)", rrs[i], r.End-r.Off)
		i++
		return true
	}))
	require.Equal(t, len(rrs), i)
	u := m.Copy()
	u.Compress = false
	assert.Less(t, len(b), u.Len(), "the names compressed")
}

// TestOwnStruct: ownStruct knows every type miekg/dns unpacks into a
// struct of its own, and no other.
func TestOwnStruct(t *testing.T) {
	for typ := range 1 << 16 {
		_, own := dns.TypeToRR[uint16(typ)]
		assert.Equal(t, own, ownStruct(uint16(typ)), "type %d", typ)
	}
}

// TestWalkLongMessages: Walk reads a message longer than a UDP datagram
// (TCP, up to 65,535 octets) as it reads a short one: a pointer to a
// label written past the 4,160 octets Labels marks without allocating,
// or near the end of a message of exactly 4,160, reads; a pointer to an
// octet inside that label does not; a label at offset 16,384, where no
// pointer can reach (14 bits), is read and not marked. Walk allocates
// nothing for a message of up to 4,160 octets.
func TestWalkLongMessages(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	m.Response = true
	head, err := m.Pack()
	require.NoError(t, err)
	// message is a header and the question, an opaque record of pad
	// octets, a record owned by b.example.org. (the label b written at
	// the returned offset) and one owned by a pointer to b's label.
	message := func(pad int) (msg []byte, label int) {
		msg = append([]byte(nil), head...)
		msg[7] = 3 // ANCOUNT
		msg = append(msg, 0xC0, HeaderLen, 0xFF, 0, 0, ClassINET, 0, 0, 0, 60, byte(pad>>8), byte(pad))
		msg = append(msg, make([]byte, pad)...)
		label = len(msg)
		msg = append(msg, 1, 'b', 0xC0, HeaderLen, 0, TypeA, 0, ClassINET, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
		msg = append(msg, 0xC0|byte(label>>8), byte(label), 0, TypeA, 0, ClassINET, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2)
		return msg, label
	}
	fixed := len(head) + 12 + 18 + 16 // all but the padding
	const inline = 4160               // the package's promise
	for _, size := range []int{inline - 1, inline, inline + 1, inline + 64, 9000, 1<<14 - 1} {
		msg, label := message(size - fixed)
		require.Len(t, msg, size)
		require.Less(t, label, maxPointerTarget)
		var owners []string
		assert.True(t, Walk(msg, len(head), func(r Record) bool {
			name, _, err := dns.UnpackDomainName(msg, r.Off)
			require.NoError(t, err)
			owners = append(owners, name)
			return true
		}), "%d octets", size)
		assert.Equal(t, []string{"example.org.", "b.example.org.", "b.example.org."}, owners, "%d octets", size)
		// No allocation up to 4,160 octets (the package's promise), one
		// (the marks) past that.
		allocs := testing.AllocsPerRun(10, func() { Walk(msg, len(head), func(Record) bool { return true }) })
		assert.Equal(t, float64(min(1, max(0, size-inline))), allocs, "%d octets", size)
		bad := append([]byte(nil), msg...)
		bad[len(bad)-15]++ // the pointer to the octet after b's length instead
		assert.False(t, Walk(bad, len(head), func(Record) bool { return true }), "%d octets, a pointer into a label", size)
	}
	// The label b at offset 16,384: the pointer to it reads as one to 0,
	// the header.
	msg, label := message(maxPointerTarget - len(head) - 12)
	require.Equal(t, maxPointerTarget, label)
	assert.NotPanics(t, func() {
		assert.False(t, Walk(msg, len(head), func(Record) bool { return true }))
		assert.True(t, PointsIntoHeader(msg, len(head)))
	})
	// Without the last record, it reads.
	msg[7] = 2
	msg = msg[:len(msg)-16]
	assert.NotPanics(t, func() {
		assert.True(t, Walk(msg, len(head), func(Record) bool { return true }))
	})
}

// TestWalkPointerChain: a name reached through 126 compression pointers,
// each to a label of a name before it, reads, as miekg/dns reads it; one
// reached through 127 does not, though its labels take 254 octets, and
// miekg/dns refuses it too (too many compression pointers).
func TestWalkPointerChain(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("x.", dns.TypeA)
	m.Response = true
	head, err := m.Pack()
	require.NoError(t, err)
	// Owner k is the label x, then a pointer to owner k-1 (owner 0 the
	// question's name): k pointers, k+1 labels.
	msg := append([]byte(nil), head...)
	record := func(msg []byte, owner ...byte) []byte {
		msg = append(msg, owner...)
		msg = append(msg, 0, TypeA, 0, ClassINET, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
		binary.BigEndian.PutUint16(msg[6:], binary.BigEndian.Uint16(msg[6:])+1) // ANCOUNT
		return msg
	}
	prev := HeaderLen
	for range 126 {
		off := len(msg)
		msg = record(msg, 1, 'x', 0xC0|byte(prev>>8), byte(prev))
		prev = off
	}
	// Then, owned by a pointer to owner 126: 127 pointers.
	over := record(append([]byte(nil), msg...), 0xC0|byte(prev>>8), byte(prev))
	for _, tc := range []struct {
		name string
		msg  []byte
		ok   bool
	}{{"126 pointers", msg, true}, {"127 pointers", over, false}} {
		n := 0
		assert.Equal(t, tc.ok, Walk(tc.msg, len(head), func(Record) bool { n++; return true }), tc.name)
		assert.Equal(t, 126, n, "%s: records handed to fn", tc.name) // not the 127th
		err := new(dns.Msg).Unpack(tc.msg)
		assert.Equal(t, tc.ok, err == nil, "%s: miekg/dns: %v", tc.name, err)
	}
}

// TestOpcode: Opcode reads the four OPCODE bits of a header's flags as
// miekg/dns reads them, for every opcode and with every other bit set.
func TestOpcode(t *testing.T) {
	for op := range 16 {
		for _, other := range []uint16{0, 0x87FF} {
			m := new(dns.Msg)
			m.SetQuestion("example.org.", dns.TypeA)
			b, err := m.Pack()
			require.NoError(t, err)
			binary.BigEndian.PutUint16(b[2:], uint16(op)<<11|other)
			h := new(dns.Msg)
			require.NoError(t, h.Unpack(b))
			assert.Equal(t, h.Opcode, Opcode(Flags(b)), "opcode %d, other bits %#x", op, other)
		}
	}
}

// TestOPTOctets: FindOPT, OPTData, NextOption, RecordsWhole and
// WithoutOptions, which read a message's OPT from its octets alone, find
// it after records of every section (RDATA of any length, an A record
// before it in the additional section, owners compressed to pointers
// past 255), and take the commonest OPT, of no option, as the last
// octets of a query, but not an OPT in the authority section; OPTData's
// RDATA stops where RDLENGTH says, before the record after the OPT, and
// its VERSION is the record's.
func TestOPTOctets(t *testing.T) {
	rrs := func(ss ...string) (out []dns.RR) {
		for _, s := range ss {
			rr, err := dns.NewRR(s)
			require.NoError(t, err)
			out = append(out, rr)
		}
		return out
	}
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeTXT)
	m.Response, m.Compress = true, true
	m.Answer = rrs(`a.example. 60 IN TXT "`+strings.Repeat("x", 250)+`" "`+strings.Repeat("y", 50)+`"`, "b.example. 60 IN A 192.0.2.1")
	m.Ns = rrs("b.example. 60 IN NS ns.b.example.", "b.example. 60 IN NS ns2.b.example.")
	m.Extra = rrs("ns.b.example. 60 IN A 192.0.2.53")
	m.SetEdns0(1232, true)
	opt := m.IsEdns0()
	opt.SetVersion(1)
	opt.Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: 65001, Data: []byte("abc")}, &dns.EDNS0_LOCAL{Code: 65002}}
	m.Extra = append(m.Extra, &dns.TXT{Hdr: dns.RR_Header{Name: "c.example.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"after"}})
	b, err := m.Pack()
	require.NoError(t, err)
	// The second NS record's owner: a pointer past 255.
	q, ok := ReadQuestion(b)
	require.True(t, ok)
	var recs []Record
	require.True(t, Walk(b, q.End, func(r Record) bool { recs = append(recs, r); return true }))
	require.Len(t, recs, 7)
	require.Equal(t, byte(0xC1), b[recs[3].Off], "a pointer past 255")
	want := recs[5]
	require.Equal(t, uint16(TypeOPT), want.Type)

	off, ok := FindOPT(b)
	require.True(t, ok)
	assert.Equal(t, want.TTLOff-4, off)
	assert.True(t, RecordsWhole(b))
	rdata, version, ok := OPTData(b)
	require.True(t, ok)
	assert.Equal(t, uint8(1), version)
	optRDATA := []byte{0xFD, 0xE9, 0, 3, 'a', 'b', 'c', 0xFD, 0xEA, 0, 0}
	assert.Equal(t, optRDATA, rdata)
	assert.Equal(t, b[want.RdOff:want.End], rdata)
	assert.True(t, HasOption(b, 65002))
	assert.False(t, HasOption(b, 65003))

	// An OPT without options, the last octets of a query.
	query := new(dns.Msg)
	query.SetQuestion("a.example.", dns.TypeA)
	query.SetEdns0(1232, false)
	qb, err := query.Pack()
	require.NoError(t, err)
	off, ok = FindOPT(qb)
	require.True(t, ok)
	assert.Equal(t, len(qb)-10, off)
	assert.True(t, RecordsWhole(qb))
	rdata, version, ok = OPTData(qb)
	assert.True(t, ok)
	assert.Empty(t, rdata)
	assert.Zero(t, version)
	rest, ok := WithoutOptions(qb, func(uint16, []byte) bool { return true })
	assert.True(t, ok)
	assert.Equal(t, qb, rest)
	// The OPT counted in the authority section: none in the additional.
	inAuthority := append([]byte(nil), qb...)
	inAuthority[9], inAuthority[11] = 1, 0 // NSCOUNT, ARCOUNT
	_, ok = FindOPT(inAuthority)
	assert.False(t, ok, "an OPT in the authority section")
	// A header alone, counting nothing: whole.
	hdr := make([]byte, HeaderLen)
	assert.True(t, RecordsWhole(hdr), "a header counting nothing")
	// No OPT: none.
	_, _, ok = OPTData(hdr)
	assert.False(t, ok)
	// An octet after the last option: not whole options.
	stray := append(append([]byte(nil), qb...), 0)
	stray[len(stray)-2] = 1 // RDLENGTH
	_, ok = WithoutOptions(stray, func(uint16, []byte) bool { return true })
	assert.False(t, ok, "an octet after the last option")
}

// TestNextOption: NextOption splits an option off by its OPTION-LENGTH,
// an option of no data too, and takes nothing shorter than a code and a
// length, or a length running past rdata.
func TestNextOption(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rdata      []byte
		code       uint16
		data, rest []byte
		ok         bool
	}{
		{name: "none"},
		{name: "1 octet", rdata: []byte{0}},
		{name: "3 octets", rdata: []byte{0, 10, 0}},
		{name: "no data", rdata: []byte{0, 10, 0, 0}, code: 10, data: []byte{}, rest: []byte{}, ok: true},
		{name: "data, then another", rdata: []byte{0, 10, 0, 2, 'a', 'b', 0, 8}, code: 10, data: []byte("ab"), rest: []byte{0, 8}, ok: true},
		{name: "data past the end", rdata: []byte{0, 10, 0, 3, 'a', 'b'}},
	} {
		assert.NotPanics(t, func() {
			code, data, rest, ok := NextOption(tc.rdata)
			assert.Equal(t, tc.ok, ok, tc.name)
			if tc.ok {
				assert.Equal(t, tc.code, code, tc.name)
				assert.Equal(t, tc.data, data, tc.name)
				assert.Equal(t, tc.rest, rest, tc.name)
			}
		}, tc.name)
	}
}

// anyAnswer is an answer to zone's ANY question holding rrs, compressed
// when compress: the message, its octets, what miekg/dns unpacks of them,
// and the end of its question (ReadQuestion).
func anyAnswer(t *testing.T, zone string, compress bool, rrs ...dns.RR) (m *dns.Msg, b []byte, got *dns.Msg, qend int) {
	t.Helper()
	m = new(dns.Msg)
	m.SetQuestion(zone, dns.TypeANY)
	m.Response, m.Compress = true, compress
	m.Answer = rrs
	b, err := m.Pack()
	require.NoError(t, err)
	got = new(dns.Msg)
	require.NoError(t, got.Unpack(b))
	q, ok := ReadQuestion(b)
	require.True(t, ok)
	return m, b, got, q.End
}
