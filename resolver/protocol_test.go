package resolver

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// vouchingUpstream answers like defaultAnswer with every header bit a
// forwarder must not pass on blindly set: AA, and AD when the query set AD
// or DO (as a validating resolver does, RFC 6840 §5.7).
func vouchingUpstream(t *testing.T) *testUpstream {
	t.Helper()
	return startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		m.Authoritative = true
		m.AuthenticatedData = r.AuthenticatedData || (r.IsEdns0() != nil && r.IsEdns0().Do())
		m.CheckingDisabled = false // a careless upstream: CD is the forwarder's to copy
		return m
	})
}

// TestForwardedHeaderBits checks every header bit and EDNS field of a
// forwarded answer, cold and from the cache (packed from its wire form, and
// through the general path for another spelling of the name), for every
// combination of the query's RD, AD, CD, EDNS and DO (DESIGN.md §10).
func TestForwardedHeaderBits(t *testing.T) {
	up := vouchingUpstream(t)
	f := startFence(t, testConfig, testFiles, up.addr)

	type flags struct{ rd, ad, cd, edns, do bool }
	var combos []flags
	for i := range 32 {
		c := flags{rd: i&1 != 0, ad: i&2 != 0, cd: i&4 != 0, edns: i&8 != 0, do: i&16 != 0}
		if c.do && !c.edns {
			continue // DO lives in the OPT record
		}
		combos = append(combos, c)
	}
	for _, transport := range []string{"udp", "tcp"} {
		for i, c := range combos {
			name := fmt.Sprintf("bits%d-%s.example.org.", i, transport)
			t.Run(fmt.Sprintf("%s rd=%v ad=%v cd=%v edns=%v do=%v", transport, c.rd, c.ad, c.cd, c.edns, c.do), func(t *testing.T) {
				for _, pass := range []struct {
					name  string
					qname string
				}{
					{"cold", name},
					{"cached", name},
					{"cached other spelling", strings.ToUpper(name)},
				} {
					req := question(pass.qname, dns.TypeA, c.edns)
					req.RecursionDesired = c.rd
					req.AuthenticatedData = c.ad
					req.CheckingDisabled = c.cd
					if c.do {
						req.IsEdns0().SetDo()
					}
					r := ask(t, f.addr, "", transport, req)
					require.Equal(t, dns.RcodeSuccess, r.Rcode, pass.name)
					require.Len(t, r.Answer, 1, pass.name)
					assert.Equal(t, req.Id, r.Id, pass.name)
					assert.Equal(t, req.Question, r.Question, "%s: question as asked", pass.name)
					assert.True(t, r.Response, "%s: QR", pass.name)
					assert.Equal(t, dns.OpcodeQuery, r.Opcode, pass.name)
					assert.False(t, r.Authoritative, "%s: AA is never set by a forwarder", pass.name)
					assert.False(t, r.Truncated, "%s: TC", pass.name)
					assert.Equal(t, c.rd, r.RecursionDesired, "%s: RD copied", pass.name)
					assert.True(t, r.RecursionAvailable, "%s: RA", pass.name)
					assert.False(t, r.Zero, "%s: Z", pass.name)
					assert.Equal(t, c.ad || c.do, r.AuthenticatedData, "%s: AD only when the query set AD or DO", pass.name)
					assert.Equal(t, c.cd, r.CheckingDisabled, "%s: CD copied", pass.name)
					opt := r.IsEdns0()
					if !c.edns {
						assert.Nil(t, opt, "%s: no OPT without EDNS in the query", pass.name)
						continue
					}
					require.NotNil(t, opt, pass.name)
					assert.Equal(t, uint16(ednsSize), opt.UDPSize(), "%s: our buffer size", pass.name)
					assert.Equal(t, c.do, opt.Do(), "%s: DO copied", pass.name)
					assert.Equal(t, uint8(0), opt.Version(), pass.name)
				}
			})
		}
	}

	t.Run("upstream queries ask for AD and copy CD", func(t *testing.T) {
		for _, q := range up.queries() {
			assert.True(t, q.msg.AuthenticatedData, "AD set upstream (RFC 6840 §5.7)")
		}
		req := question("cd-upstream.example.org.", dns.TypeA, false)
		req.CheckingDisabled = true
		ask(t, f.addr, "", "udp", req)
		seen := up.queries()
		assert.True(t, seen[len(seen)-1].msg.CheckingDisabled)
	})
}

// TestADFromCacheNeedsADOrDO is the reported leak: an answer cached for a
// query with AD must not carry AD to a later client that set neither AD nor
// DO.
func TestADFromCacheNeedsADOrDO(t *testing.T) {
	up := vouchingUpstream(t)
	f := startFence(t, testConfig, testFiles, up.addr)
	first := question("x.example.", dns.TypeA, false)
	first.AuthenticatedData = true
	r := ask(t, f.addr, "", "udp", first)
	require.True(t, r.AuthenticatedData)
	second := question("x.example.", dns.TypeA, false)
	r = ask(t, f.addr, "", "udp", second)
	assert.False(t, r.AuthenticatedData)
	assert.EqualValues(t, 1, up.count.Load(), "the second answer came from the cache")
}

// TestBlockedAndOwnAnswersHeaderBits: dnsfence's own answers follow the
// same header rules: CD and RD copied, AA and AD clear, RA set.
func TestBlockedAndOwnAnswersHeaderBits(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name, from, qname string
		qtype             uint16
		rcode             int
		network           string
	}{
		{"blocked nxdomain", "127.0.0.1", "www.tiktok.com.", dns.TypeA, dns.RcodeNameError, "tcp"},
		{"blocked refused", "127.0.0.6", "www.tiktok.com.", dns.TypeA, dns.RcodeRefused, "tcp"},
		{"blocked null", "127.0.0.7", "www.tiktok.com.", dns.TypeA, dns.RcodeSuccess, "tcp"},
		// Over TCP a client outside allowed_clients is closed at accept
		// (TestConnectionAdmission): the REFUSED answer is UDP's.
		{"not allowed", "127.0.0.20", "example.org.", dns.TypeA, dns.RcodeRefused, "udp"},
		{"zone transfer", "127.0.0.1", "example.org.", dns.TypeAXFR, dns.RcodeRefused, "tcp"},
	} {
		for _, edns := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s edns=%v", tc.name, edns), func(t *testing.T) {
				req := question(tc.qname, tc.qtype, edns)
				req.AuthenticatedData = true
				req.CheckingDisabled = true
				r := ask(t, f.addr, tc.from, tc.network, req)
				assert.Equal(t, tc.rcode, r.Rcode)
				assert.True(t, r.Response)
				assert.False(t, r.Authoritative)
				assert.False(t, r.AuthenticatedData)
				assert.True(t, r.CheckingDisabled)
				assert.True(t, r.RecursionDesired)
				assert.True(t, r.RecursionAvailable)
			})
		}
	}
}

// unknownEDNSFlag is a bit of the OPT record's flags (its TTL's low 16
// bits) that no RFC assigns: only DO (0x8000) is (RFC 3225, RFC 6891
// §6.1.4).
const unknownEDNSFlag = 0x0080

// TestUnknownFlagsCleared: the header's Z bit (RFC 1035 §4.1.1: "Must be
// zero in all queries and responses") and an EDNS flag no RFC assigns (RFC
// 6891 §6.1.4: set to zero by senders, ignored by receivers), set by the
// client and by the upstream, are clear in dnsfence's answers, cold and
// from the cache, on the wire path (UDP) and the message path (UDP with an
// option the wire path leaves alone, and TCP), and in its own answers (a
// block); the client's are not passed upstream either, and DO is still
// copied.
func TestUnknownFlagsCleared(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		m.Zero = true
		if opt := m.IsEdns0(); opt != nil {
			opt.Hdr.Ttl |= unknownEDNSFlag
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	withOption := func(m *dns.Msg) {
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}}}
	}
	for _, tc := range []struct {
		name    string
		network string
		edit    func(*dns.Msg)
	}{
		{"udp wire path", "udp", func(*dns.Msg) {}},
		{"udp message path", "udp", withOption},
		{"tcp", "tcp", func(*dns.Msg) {}},
	} {
		for _, do := range []bool{false, true} {
			qname := fmt.Sprintf("flags-%s-%v.example.org.", strings.ReplaceAll(tc.name, " ", "-"), do)
			for _, pass := range []struct{ name, qname string }{
				{"cold", qname}, {"cached", qname}, {"blocked", "www.tiktok.com."},
			} {
				t.Run(fmt.Sprintf("%s do=%v %s", tc.name, do, pass.name), func(t *testing.T) {
					req := question(pass.qname, dns.TypeA, true)
					req.Zero = true
					req.IsEdns0().Hdr.Ttl |= unknownEDNSFlag
					if do {
						req.IsEdns0().SetDo()
					}
					tc.edit(req)
					before := up.count.Load()
					r := ask(t, f.addr, "", tc.network, req)
					if pass.name == "blocked" {
						assert.Equal(t, dns.RcodeNameError, r.Rcode)
					} else {
						assert.Equal(t, dns.RcodeSuccess, r.Rcode)
						assert.Len(t, r.Answer, 1)
					}
					if pass.name == "cached" {
						assert.Equal(t, before, up.count.Load(), "answered from the cache")
					}
					assert.False(t, r.Zero, "Z")
					opt := r.IsEdns0()
					require.NotNil(t, opt)
					assert.Equal(t, do, opt.Do(), "DO copied")
					assert.Zero(t, opt.Hdr.Ttl&0xFFFF&^0x8000, "no EDNS flag but DO: %#04x", opt.Hdr.Ttl&0xFFFF)
				})
			}
		}
	}
	for _, q := range up.queries() {
		assert.False(t, q.msg.Zero, "%s: Z sent upstream", q.msg.Question[0].Name)
		if opt := q.msg.IsEdns0(); opt != nil {
			assert.Zero(t, opt.Hdr.Ttl&unknownEDNSFlag, "%s: the client's EDNS flag sent upstream", q.msg.Question[0].Name)
		}
	}
}

// rawExchange sends b over UDP to server and returns the raw answer.
func rawExchange(t *testing.T, server string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", server)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(b)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return buf[:n]
}

// rawExchangeTCP sends b over one TCP connection to server and returns the
// raw answer.
func rawExchangeTCP(t *testing.T, server string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", server)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(3*time.Second)))
	_, err = c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
	require.NoError(t, err)
	var n [2]byte
	_, err = io.ReadFull(c, n[:])
	require.NoError(t, err)
	buf := make([]byte, int(n[0])<<8|int(n[1]))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	return buf
}

// TestQuestionCutShortIsFormerr: a question is QNAME, QTYPE and QCLASS
// (RFC 1035 §4.1.2); a query that ends before its QCLASS, or its QTYPE, is
// a format error (§4.1.1), on UDP and TCP, and nothing goes upstream. miekg/dns unpacks such a question with
// QCLASS (or QTYPE) 0, and a query cut after its QTYPE was forwarded as a
// question of class 0 that the client never asked.
func TestQuestionCutShortIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	whole, err := question("example.org.", dns.TypeA, false).Pack()
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		cut  int // octets taken off the end
	}{
		{"no QCLASS", 2},
		{"no QTYPE nor QCLASS", 4},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				b := whole[:len(whole)-tc.cut]
				r := askFormerr(t, f.addr, transport, b)
				assert.True(t, r.Response)
				assert.Empty(t, r.Answer)
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestRecordsCutShortIsFormerr: the header's ANCOUNT, NSCOUNT and ARCOUNT
// give the number of records in each section (RFC 1035 §4.1.1); a query
// that ends before the records they count is a format error, as NSD,
// Unbound and dnsdist answer it, on UDP and TCP, and nothing goes upstream.
// miekg/dns stops reading records where the message ends, whatever the
// counts said, and such a query was answered as if it had none (a query
// whose OPT was lost, answered as one without EDNS). The FORMERR carries
// an OPT when the query's is there (RFC 6891 §7).
func TestRecordsCutShortIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	plain, err := question("example.org.", dns.TypeA, false).Pack()
	require.NoError(t, err)
	withOPT, err := question("example.org.", dns.TypeA, true).Pack()
	require.NoError(t, err)
	count := func(b []byte, at, n int) []byte {
		b = bytes.Clone(b)
		b[at], b[at+1] = byte(n>>8), byte(n)
		return b
	}
	for _, tc := range []struct {
		name string
		b    []byte
		edns bool
	}{
		{"ANCOUNT 1, no record", count(plain, 6, 1), false},
		{"NSCOUNT 1, no record", count(plain, 8, 1), false},
		{"ARCOUNT 1, no record", count(plain, 10, 1), false},
		{"ARCOUNT 2, one OPT", count(withOPT, 10, 2), true},
		{"OPT cut in its fixed fields", withOPT[:len(withOPT)-3], false},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				r := askFormerr(t, f.addr, transport, tc.b)
				assert.True(t, r.Response)
				assert.Empty(t, r.Answer)
				assert.Equal(t, tc.edns, r.IsEdns0() != nil, "an OPT when the query's is there")
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestTSIGQueryIsNotAuth: dnsfence shares a TSIG key with no client, and
// a forwarder that does not know the key must forward the message
// unchanged with its TSIG (RFC 8945 §5.5), which dnsfence never does (its
// own ID and OPT go upstream); so a signed query is answered as by a
// server that does not know the key (§5.2.1): NOTAUTH with an unsigned
// TSIG (MAC size 0, §5.3.2) of error BADKEY, the TSIG last (§4.2), on UDP
// and TCP, with and without EDNS, and nothing goes upstream. NSD answers
// so, and dnsdist passes the query on to an upstream that does.
func TestTSIGQueryIsNotAuth(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	const key = "client-key."
	for _, edns := range []bool{false, true} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("edns %v %s", edns, transport), func(t *testing.T) {
				req := question("example.org.", dns.TypeA, edns)
				req.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
				b, _, err := dns.TsigGenerate(req, "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "", false)
				require.NoError(t, err)
				r := rawAsk(t, f.addr, transport, b)
				assert.Equal(t, dns.RcodeNotAuth, r.Rcode, dns.RcodeToString[r.Rcode])
				assert.Equal(t, req.Id, r.Id)
				assert.Empty(t, r.Answer)
				tsig := r.IsTsig()
				require.NotNil(t, tsig, "a TSIG, the last record")
				assert.Equal(t, key, tsig.Hdr.Name)
				assert.Equal(t, dns.HmacSHA256, tsig.Algorithm)
				assert.Equal(t, uint16(dns.RcodeBadKey), tsig.Error)
				assert.Zero(t, tsig.MACSize, "unsigned")
				assert.Equal(t, req.Id, tsig.OrigId)
				assert.Equal(t, edns, r.IsEdns0() != nil)
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
	for _, transport := range []string{"udp", "tcp"} {
		assert.Equal(t, 2.0, queriesCounted(t, f, ResultRefused, transport), "the NOTAUTHs over %s counted as refused", transport)
	}
}

// TestMisplacedTSIGIsFormerr: a TSIG record must be the last record of
// the additional section, and there is at most one (RFC 8945 §5.2): a
// query with a TSIG before its OPT, in another section, or with two, is
// dropped and answered FORMERR, unsigned, with an OPT when it has one (RFC
// 6891 §7), on UDP and TCP, and nothing goes upstream. Found by
// FuzzHandler.
func TestMisplacedTSIGIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	tsig := func() dns.RR {
		return &dns.TSIG{Hdr: dns.RR_Header{Name: "client-key.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: dns.HmacSHA256, TimeSigned: uint64(time.Now().Unix()), Fudge: 300, MACSize: 32,
			MAC: strings.Repeat("ab", 32), OrigId: 7}
	}
	for _, tc := range []struct {
		name  string
		edns  bool
		place func(m *dns.Msg)
	}{
		{name: "before the OPT", edns: true, place: func(m *dns.Msg) { m.Extra = append([]dns.RR{tsig()}, m.Extra...) }},
		{name: "two", place: func(m *dns.Msg) { m.Extra = append(m.Extra, tsig(), tsig()) }},
		{name: "in the authority section", place: func(m *dns.Msg) { m.Ns = append(m.Ns, tsig()) }},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				req := question("example.org.", dns.TypeA, tc.edns)
				tc.place(req)
				b, err := req.Pack()
				require.NoError(t, err)
				r := askFormerr(t, f.addr, transport, b)
				assert.Empty(t, r.Answer)
				assert.Nil(t, r.IsTsig(), "unsigned")
				assert.Equal(t, tc.edns, r.IsEdns0() != nil)
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
	for _, transport := range []string{"udp", "tcp"} {
		assert.Equal(t, 3.0, queriesCounted(t, f, ResultFormerr, transport), "counted as FORMERR over %s", transport)
	}
}

// TestTSIGWithoutRDATAIsFormerr: a TSIG record whose RDLENGTH is 0 has no
// algorithm name, time or MAC: the query cannot be interpreted (RFC 1035
// §4.1.1), and gets FORMERR, unsigned, on UDP and TCP, with and without
// EDNS; nothing goes upstream. Its NOTAUTH copied the missing algorithm
// name into a TSIG that packed without one, which no client could read.
// Found by FuzzHandler.
func TestTSIGWithoutRDATAIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, edns := range []bool{false, true} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("edns %v %s", edns, transport), func(t *testing.T) {
				req := question("example.org.", dns.TypeA, edns)
				b, err := req.Pack()
				require.NoError(t, err)
				// key. TSIG ANY, TTL 0, RDLENGTH 0: the last record.
				b = append(b, 3, 'k', 'e', 'y', 0, 0, byte(dns.TypeTSIG), 0, byte(dns.ClassANY), 0, 0, 0, 0, 0, 0)
				b[11]++ // ARCOUNT
				r := askFormerr(t, f.addr, transport, b)
				assert.Nil(t, r.IsTsig(), "unsigned")
				assert.Equal(t, edns, r.IsEdns0() != nil)
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestQuestionNamePointerIsFormerr: a compression pointer refers to a
// prior occurrence of a name (RFC 1035 §4.1.4), and a query's only
// question has none before it; a QNAME with a pointer, forward past the
// question or back into the header (whose ID and flags would be read as
// labels), is a format error, on UDP and TCP, as Unbound answers it, and
// nothing goes upstream.
func TestQuestionNamePointerIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	header := func(id uint16) []byte {
		return []byte{byte(id >> 8), byte(id), 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		// example.org. spelt after the question, which points at it.
		{"forward", append(append(header(0x1234), 0xC0, 18, 0, 1, 0, 1), 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0)},
		// www. then the rest of the name forward.
		{"forward after a label", append(append(header(0x1234), 3, 'w', 'w', 'w', 0xC0, 22, 0, 1, 0, 1), 3, 'o', 'r', 'g', 0)},
		// ID 0x0161 and the flags read as the labels "a" and "\000".
		{"into the header", append(header(0x0161), 0xC0, 0, 0, 1, 0, 1)},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				r := askFormerr(t, f.addr, transport, tc.b)
				assert.Empty(t, r.Answer)
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestEDNSVersionAndOPTCount: RFC 6891 §6.1.1 and §6.1.3, on both
// transports, from every kind of client, before anything else is decided.
func TestEDNSVersionAndOPTCount(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name  string
		msg   func() *dns.Msg
		rcode int
	}{
		{"version 1 is BADVERS", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, true)
			m.IsEdns0().SetVersion(1)
			return m
		}, dns.RcodeBadVers},
		{"version 255 is BADVERS", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, true)
			m.IsEdns0().SetVersion(255)
			return m
		}, dns.RcodeBadVers},
		{"a blocked name with version 1 is BADVERS", func() *dns.Msg {
			m := question("www.tiktok.com.", dns.TypeA, true)
			m.IsEdns0().SetVersion(1)
			return m
		}, dns.RcodeBadVers},
		{"two OPT records are FORMERR", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, true)
			m.SetEdns0(4096, true)
			m.Extra = append(m.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 512}})
			return m
		}, dns.RcodeFormatError},
		{"an OPT owned by another name than the root is FORMERR", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, true)
			m.IsEdns0().Hdr.Name = "example.org."
			return m
		}, dns.RcodeFormatError},
		{"an OPT in the authority section is FORMERR", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, false)
			m.Ns = append(m.Ns, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
			return m
		}, dns.RcodeFormatError},
		{"an OPT with DO in the authority section is FORMERR, with DO", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, false)
			opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}}
			opt.SetDo()
			m.Ns = append(m.Ns, opt)
			return m
		}, dns.RcodeFormatError},
		// RFC 6891 §7: an answer to a query with an OPT carries one,
		// whatever its RCODE; a FORMERR without one says "no EDNS here",
		// and the client falls back to plain DNS. The listener's own
		// rejections too, for a query it does not take or cannot parse.
		{"no question with EDNS is FORMERR", func() *dns.Msg {
			m := new(dns.Msg)
			m.Id = 4242
			m.SetEdns0(1232, true)
			return m
		}, dns.RcodeFormatError},
		{"two questions with EDNS are FORMERR", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, true)
			m.Question = append(m.Question, dns.Question{Name: "example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			return m
		}, dns.RcodeFormatError},
		{"UPDATE with EDNS is NOTIMP", func() *dns.Msg {
			m := question("example.org.", dns.TypeSOA, true)
			m.Opcode = dns.OpcodeUpdate
			return m
		}, dns.RcodeNotImplemented},
		{"a malformed Client Subnet option is FORMERR", func() *dns.Msg {
			m := question("example.org.", dns.TypeA, true)
			// FAMILY 3 is no address family (RFC 7871 §6).
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 3, 0, 0}}}
			return m
		}, dns.RcodeFormatError},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			for _, from := range []string{"127.0.0.1", "127.0.0.8"} {
				t.Run(fmt.Sprintf("%s %s from %s", tc.name, transport, from), func(t *testing.T) {
					m := tc.msg()
					var r *dns.Msg
					if transport == "udp" {
						b, err := m.Pack()
						require.NoError(t, err)
						r = new(dns.Msg)
						require.NoError(t, r.Unpack(rawExchange(t, f.addr, b)))
					} else {
						r = ask(t, f.addr, from, transport, m)
					}
					assert.Equal(t, tc.rcode, r.Rcode, dns.RcodeToString[r.Rcode])
					assert.Equal(t, m.Id, r.Id)
					assert.Empty(t, r.Answer)
					opt := r.IsEdns0()
					if tc.rcode == dns.RcodeBadVers {
						require.NotNil(t, opt, "BADVERS needs an OPT to carry it")
						assert.Equal(t, uint8(0), opt.Version(), "the version we speak")
					}
					require.NotNil(t, opt, "the query had an OPT: so has its answer (RFC 6891 §7)")
					assert.Equal(t, uint8(0), opt.Version())
					asked := m.IsEdns0()
					if asked == nil {
						asked = m.Ns[0].(*dns.OPT)
					}
					assert.Equal(t, asked.Do(), opt.Do(), "DO copied (RFC 3225 §3)")
				})
			}
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
	// Counted as answered: BADVERS apart from FORMERR (three queries of
	// BADVERS, seven of FORMERR, one of NOTIMP, each from two sources).
	for _, transport := range []string{"udp", "tcp"} {
		assert.Equal(t, 6.0, queriesCounted(t, f, ResultBadvers, transport), transport)
		assert.Equal(t, 14.0, queriesCounted(t, f, ResultFormerr, transport), transport)
		assert.Equal(t, 2.0, queriesCounted(t, f, ResultNotimp, transport), transport)
	}
}

// TestHandlerAloneAnswersQuestionCountsFormerr: the Handler is a
// dns.Handler, and called without dnsfence's listeners, which answer these
// themselves, it still answers a query of no question or of two FORMERR
// (RFC 9619 §4), of EDNS version 1 too: the question count is decided
// before the version, as the listeners decide it. Nothing goes upstream.
func TestHandlerAloneAnswersQuestionCountsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	two := func(version uint8) *dns.Msg {
		m := question("example.org.", dns.TypeA, true)
		m.Question = append(m.Question, dns.Question{Name: "example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		m.IsEdns0().SetVersion(version)
		return m
	}
	none := question("example.org.", dns.TypeA, true)
	none.Question = nil
	for name, m := range map[string]*dns.Msg{"no question": none, "two questions": two(0), "two questions, EDNS version 1": two(1)} {
		w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
		f.handler.ServeDNS(w, m)
		if assert.Len(t, w.written, 1, "%s: one answer", name) {
			assert.Equal(t, dns.RcodeFormatError, w.written[0].Rcode, "%s: %s", name, dns.RcodeToString[w.written[0].Rcode])
			assert.Equal(t, m.Id, w.written[0].Id, name)
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestTTLClampsFirstAnswer: max_ttl and min_ttl bound the first answer as
// they bound later cache hits, positive and negative (the SOA's TTL).
func TestTTLClampsFirstAnswer(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case strings.HasPrefix(q.Name, "nx"):
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{mustRR("example.org. 3600 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 3600")}
		case strings.HasPrefix(q.Name, "short"):
			m.Answer = []dns.RR{mustRR("%s 1 IN A 192.0.2.1", q.Name)}
		case strings.HasPrefix(q.Name, "chain"):
			m.Answer = []dns.RR{mustRR("%s 300 IN CNAME b.example.org.", q.Name), mustRR("b.example.org. 100 IN A 192.0.2.1")}
		default:
			m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.1", q.Name)}
		}
		return m
	})
	for _, tc := range []struct {
		name, cache, qname string
		want               uint32
	}{
		{"max_ttl bounds an answer", "{max_ttl: 3}", "a.example.org.", 3},
		{"max_ttl bounds the SOA of an NXDOMAIN", "{max_ttl: 3}", "nx.example.org.", 3},
		{"min_ttl raises a short TTL", "{min_ttl: 10}", "short.example.org.", 10},
		{"every record gets the answer's lifetime", "{}", "chain.example.org.", 100},
		{"clamped with the cache off", "{size: 0, max_ttl: 3}", "a.example.org.", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := strings.Replace(testConfig, "blocked_ttl: 60", "blocked_ttl: 60\ncache: "+tc.cache, 1)
			f := startFence(t, cfg, testFiles, up.addr)
			for _, pass := range []string{"first", "cached"} {
				for _, transport := range []string{"udp", "tcp"} {
					r := ask(t, f.addr, "", transport, question(tc.qname, dns.TypeA, true))
					rrs := append(append([]dns.RR{}, r.Answer...), r.Ns...)
					require.NotEmpty(t, rrs)
					for _, rr := range rrs {
						// A cache hit a second later may be one lower.
						assert.LessOrEqual(t, rr.Header().Ttl, tc.want, "%s %s: %s", pass, transport, rr)
						assert.GreaterOrEqual(t, rr.Header().Ttl+1, tc.want, "%s %s: %s", pass, transport, rr)
					}
				}
			}
		})
	}
}

// TestRepliesCompressed: every forwarded answer goes out with its names
// compressed, cold and cached, and the upstream's Extended DNS Errors reach
// the client (README: "Answers").
func TestRepliesCompressed(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := defaultAnswer(w, r)
		q := r.Question[0]
		m.Answer = nil
		for i := range 4 {
			m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.%d", q.Name, i+1))
		}
		m.Ns = []dns.RR{mustRR("example.org. 300 IN NS ns1.example.org."), mustRR("example.org. 300 IN NS ns2.example.org.")}
		if opt := m.IsEdns0(); opt != nil {
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeForgedAnswer, ExtraText: "upstream says"})
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, edns := range []bool{false, true} {
		for _, pass := range []string{"cold", "cached"} {
			t.Run(fmt.Sprintf("edns=%v %s", edns, pass), func(t *testing.T) {
				req := question(fmt.Sprintf("a.long.name.under.example.org.%v.", edns), dns.TypeA, edns)
				b, err := req.Pack()
				require.NoError(t, err)
				raw := rawExchange(t, f.addr, b)
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(raw))
				require.Len(t, r.Answer, 4)
				plain := r.Copy()
				plain.Compress = false
				packedPlain, err := plain.Pack()
				require.NoError(t, err)
				r.Compress = true
				packed, err := r.Pack()
				require.NoError(t, err)
				assert.Less(t, len(raw), len(packedPlain), "shorter than uncompressed")
				assert.LessOrEqual(t, len(raw), len(packed), "as short as miekg/dns compresses it")
				if edns {
					e := ede(r)
					require.NotNil(t, e, "the upstream's EDE is passed on")
					assert.Equal(t, dns.ExtendedErrorCodeForgedAnswer, e.InfoCode)
				}
			})
		}
	}
}

// TestTTLWithHighBitIsZero: a TTL received with its most significant bit
// set is read as zero (RFC 2181 §8), as Unbound reads it: the record is
// passed on with TTL 0 and the answer is not cached, rather than kept for
// max_ttl. Cold and again, on the wire path (UDP) and the message path
// (TCP), for an answer record and for a negative answer's SOA.
func TestTTLWithHighBitIsZero(t *testing.T) {
	const high = 1<<31 + 1
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if strings.HasPrefix(q.Name, "nx") {
			m.Rcode = dns.RcodeNameError
			soa := mustRR("example.org. 300 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 300")
			soa.Header().Ttl = high
			m.Ns = []dns.RR{soa}
		} else {
			a := mustRR("%s 300 IN A 192.0.2.1", q.Name)
			a.Header().Ttl = high
			m.Answer = []dns.RR{a}
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(1232, opt.Do())
		}
		return m
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, qname := range []string{"a.example.org.", "nx.example.org."} {
		for _, transport := range []string{"udp", "tcp"} {
			before := up.count.Load()
			for pass := range 2 {
				r := ask(t, f.addr, "", transport, question(qname, dns.TypeA, true))
				rrs := append(append([]dns.RR{}, r.Answer...), r.Ns...)
				require.Len(t, rrs, 1, "%s %s", qname, transport)
				assert.Zero(t, rrs[0].Header().Ttl, "%s %s pass %d: %s", qname, transport, pass, rrs[0])
			}
			assert.Equal(t, before+2, up.count.Load(), "%s %s: not cached", qname, transport)
		}
	}
}

// TestBlockedAnswerInTheQuestionsClass: the records of a blocked answer
// are of the class asked (RFC 1034 §4.3.2 answers from the zone of the
// query's class; RFC 2181 §5.1 keeps a response to one class), so that
// BIND-based clients do not reject a CHAOS or HESIOD query's NXDOMAIN as
// malformed; QCLASS ANY, a class no record has (RFC 1035 §3.2.5), gets IN.
// Both packers: the NXDOMAIN packed straight to bytes (appendBlocked) and
// the null action's message (blockedReply).
func TestBlockedAnswerInTheQuestionsClass(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		class, want uint16
		from        string
		qtype       uint16
	}{
		{dns.ClassCHAOS, dns.ClassCHAOS, "127.0.0.1", dns.TypeA},
		{dns.ClassHESIOD, dns.ClassHESIOD, "127.0.0.1", dns.TypeTXT},
		{dns.ClassANY, dns.ClassINET, "127.0.0.1", dns.TypeA},
		{dns.ClassCHAOS, dns.ClassCHAOS, "127.0.0.7", dns.TypeTXT}, // null action: NODATA with the SOA
		{dns.ClassCHAOS, dns.ClassCHAOS, "127.0.0.7", dns.TypeA},   // null action: 0.0.0.0
		{dns.ClassANY, dns.ClassINET, "127.0.0.7", dns.TypeA},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			name := fmt.Sprintf("%s %s from %s %s", dns.ClassToString[tc.class], dns.TypeToString[tc.qtype], tc.from, transport)
			t.Run(name, func(t *testing.T) {
				m := question("www.tiktok.com.", tc.qtype, true)
				m.Question[0].Qclass = tc.class
				r := ask(t, f.addr, tc.from, transport, m)
				assert.Equal(t, m.Question, r.Question)
				rrs := append(append([]dns.RR{}, r.Answer...), r.Ns...)
				require.Len(t, rrs, 1, r.String())
				assert.Equal(t, tc.want, rrs[0].Header().Class, "%s", rrs[0])
			})
		}
	}
	assert.Zero(t, up.count.Load(), "blocked: nothing went upstream")
}

// TestUnservedClassesRefused: a query of a class no zone data is in (NONE,
// 0, unassigned, private use) gets REFUSED with EDE 21 from dnsfence
// itself, as a CHAOS query does, on UDP and TCP, and is never forwarded:
// the upstream's REFUSED to it counted against the upstream's health, so
// that any client could have the upstreams marked down. IN, HS and ANY
// are forwarded; a blocked name is blocked in any class.
func TestUnservedClassesRefused(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		for _, class := range []uint16{0, dns.ClassNONE, 2, 5, 253, 256, 65280, 65535} {
			m := question("example.org.", dns.TypeA, true)
			m.Question[0].Qclass = class
			r := ask(t, f.addr, "127.0.0.9", network, m)
			assert.Equal(t, dns.RcodeRefused, r.Rcode, "%s: class %d", network, class)
			if edes := allEDEs(r); assert.Len(t, edes, 1, "%s: class %d", network, class) {
				assert.Equal(t, dns.ExtendedErrorCodeNotSupported, edes[0].InfoCode)
			}
			assert.Equal(t, m.Question, r.Question)
		}
		assert.Zero(t, up.count.Load(), "%s: nothing forwarded", network)
		assert.Equal(t, 8.0, queriesCounted(t, f, ResultRefused, network), "%s: counted as refused", network)
	}
	for _, class := range []uint16{dns.ClassINET, dns.ClassHESIOD, dns.ClassANY} {
		m := question("example.org.", dns.TypeA, true)
		m.Question[0].Qclass = class
		ask(t, f.addr, "127.0.0.9", "udp", m)
	}
	assert.Equal(t, int64(3), up.count.Load(), "IN, HS and ANY forwarded")
	m := question("www.tiktok.com.", dns.TypeA, true)
	m.Question[0].Qclass = dns.ClassNONE
	assert.Equal(t, dns.RcodeNameError, ask(t, f.addr, "127.0.0.1", "udp", m).Rcode, "blocked in any class")
}

// askFormerr sends the raw query b to addr over transport (udp or tcp),
// and checks that the answer is a FORMERR to b's ID, which it returns.
func askFormerr(t *testing.T, addr, transport string, b []byte) *dns.Msg {
	t.Helper()
	r := rawAsk(t, addr, transport, b)
	assert.Equal(t, dns.RcodeFormatError, r.Rcode, dns.RcodeToString[r.Rcode])
	assert.Equal(t, dnswire.ID(b), r.Id)
	return r
}

// rawAsk sends the raw query b to addr over transport (udp or tcp) and
// returns the answer, which must parse.
func rawAsk(t *testing.T, addr, transport string, b []byte) *dns.Msg {
	t.Helper()
	var raw []byte
	if transport == "udp" {
		raw = rawExchange(t, addr, b)
	} else {
		raw = rawExchangeTCP(t, addr, b)
	}
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(raw), "the answer parses")
	return r
}

// withOption is a query for name with EDNS and the one option code with
// data, packed.
func withOption(t *testing.T, name string, code uint16, data []byte) []byte {
	t.Helper()
	m := question(name, dns.TypeA, true)
	m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: code, Data: data}}
	b, err := m.Pack()
	require.NoError(t, err)
	return b
}

// TestMalformedCookieIsFormerr: a COOKIE option is a Client Cookie of 8
// octets, alone or with a Server Cookie of 8 to 32; one shorter than 8,
// of 9 to 15 or longer than 40 octets MUST get FORMERR (RFC 7873 §5.2.2),
// on UDP (the wire path and the message path) and TCP, and nothing goes
// upstream. miekg/dns unpacks a cookie of any length, and such a query
// was forwarded as if it had none. Well-formed cookies are forwarded.
func TestMalformedCookieIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	cookie := func(n int) []byte { return bytes.Repeat([]byte{0xC0}, n) }
	for _, n := range []int{0, 1, 7, 9, 12, 15, 41, 64} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("%d octets %s", n, transport), func(t *testing.T) {
				r := askFormerr(t, f.addr, transport, withOption(t, "cookie.example.org.", dns.EDNS0COOKIE, cookie(n)))
				assert.Empty(t, r.Answer)
				assert.NotNil(t, r.IsEdns0(), "the query had an OPT: so has its answer (RFC 6891 §7)")
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
	for _, n := range []int{8, 16, 24, 40} {
		for _, transport := range []string{"udp", "tcp"} {
			name := fmt.Sprintf("cookie%d-%s.example.org.", n, transport)
			r := rawAsk(t, f.addr, transport, withOption(t, name, dns.EDNS0COOKIE, cookie(n)))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "a cookie of %d octets over %s: %s", n, transport, dns.RcodeToString[r.Rcode])
		}
	}
	assert.Equal(t, int64(8), up.count.Load(), "the well-formed ones went upstream")
}

// TestMalformedSubnetIsFormerr: a Client Subnet option's ADDRESS holds
// exactly the octets its SOURCE PREFIX-LENGTH needs, with no bit set past
// it (RFC 7871 §6: too many octets or bits past the prefix SHOULD get
// FORMERR). miekg/dns read any address length and masked it, so that a
// trusted proxy's malformed option named a network it did not write, and
// an untrusted client's was forwarded. Now each gets FORMERR, from a
// trusted proxy, a device and a government device alike, on UDP and TCP,
// and nothing goes upstream; well-formed options still decide as before.
func TestMalformedSubnetIsFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, identityConfig, map[string]string{"tiktok.txt": "tiktok.com\n"}, up.addr)
	subnet := func(data ...byte) *dns.Msg {
		m := question("www.tiktok.com.", dns.TypeA, true)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: data}}
		return m
	}
	for _, tc := range []struct {
		name string
		m    *dns.Msg
	}{
		{"bits past the prefix: 10.20.30.4/24", subnet(0, 1, 24, 0, 10, 20, 30, 4)},
		{"bits past the prefix: 10.20.31.0/23", subnet(0, 1, 23, 0, 10, 20, 31)},
		{"too many octets: 10.0.0.0/8 in four", subnet(0, 1, 8, 0, 10, 0, 0, 0)},
		{"too many octets: /0 with an address", subnet(0, 1, 0, 0, 10)},
		{"too few octets: /24 in one", subnet(0, 1, 24, 0, 10)},
		{"too many octets: IPv6 /32 in sixteen", subnet(0, 2, 32, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"family 0 with an address", subnet(0, 0, 0, 0, 10)},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			for _, from := range []string{"127.0.0.2", "127.0.0.1", "127.0.0.3"} {
				t.Run(fmt.Sprintf("%s %s from %s", tc.name, transport, from), func(t *testing.T) {
					r := ask(t, f.addr, from, transport, tc.m)
					assert.Equal(t, dns.RcodeFormatError, r.Rcode, dns.RcodeToString[r.Rcode])
					assert.Equal(t, tc.m.Id, r.Id)
					assert.Empty(t, r.Answer)
					assert.NotNil(t, r.IsEdns0(), "the query had an OPT: so has its answer (RFC 6891 §7)")
				})
			}
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
	for _, tc := range []struct {
		name  string
		m     *dns.Msg
		rcode int
	}{
		{"10.20.30.0/24, the exemption", subnet(0, 1, 24, 0, 10, 20, 30), dns.RcodeSuccess},
		{"10.20.16.0/20, in the government range", subnet(0, 1, 20, 0, 10, 20, 16), dns.RcodeNameError},
		{"10.1.2.3/32", subnet(0, 1, 32, 0, 10, 1, 2, 3), dns.RcodeNameError},
		// A network wider than the government range gets its policy.
		{"IPv4 /0, any client", subnet(0, 1, 0, 0), dns.RcodeNameError},
		{"family 0 /0, any client", subnet(0, 0, 0, 0), dns.RcodeNameError},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			r := ask(t, f.addr, "127.0.0.2", transport, tc.m)
			assert.Equal(t, tc.rcode, r.Rcode, "%s over %s from the trusted proxy: %s", tc.name, transport, dns.RcodeToString[r.Rcode])
		}
	}
}

// TestStrayRecordsAreFormerr: a query with a record in its answer or
// authority section, or one other than the OPT (and a TSIG) in its
// additional section, gets FORMERR, as Unbound and NSD answer it, on UDP
// and TCP, with an OPT when the query had one, and nothing goes upstream.
// Such a query was forwarded for its question, its records dropped.
func TestStrayRecordsAreFormerr(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		require.NoError(t, err)
		return r
	}
	for _, tc := range []struct {
		name string
		msg  func() *dns.Msg
	}{
		{"an A record in the answer section", func() *dns.Msg {
			m := question("stray.example.org.", dns.TypeA, true)
			m.Answer = []dns.RR{rr("stray.example.org. 60 IN A 192.0.2.1")}
			return m
		}},
		{"an NS record in the authority section", func() *dns.Msg {
			m := question("stray.example.org.", dns.TypeA, true)
			m.Ns = []dns.RR{rr("example.org. 60 IN NS ns.example.org.")}
			return m
		}},
		{"an A record beside the OPT", func() *dns.Msg {
			m := question("stray.example.org.", dns.TypeA, true)
			m.Extra = append([]dns.RR{rr("ns.example.org. 60 IN A 192.0.2.1")}, m.Extra...)
			return m
		}},
		{"an A record in the additional section without EDNS", func() *dns.Msg {
			m := question("stray.example.org.", dns.TypeA, false)
			m.Extra = []dns.RR{rr("ns.example.org. 60 IN A 192.0.2.1")}
			return m
		}},
		{"a blocked name with an A record in the answer section", func() *dns.Msg {
			m := question("www.tiktok.com.", dns.TypeA, true)
			m.Answer = []dns.RR{rr("www.tiktok.com. 60 IN A 192.0.2.1")}
			return m
		}},
		{"an IXFR with an A record in the authority section", func() *dns.Msg {
			m := question("example.org.", dns.TypeIXFR, true)
			m.Ns = []dns.RR{rr("example.org. 60 IN A 192.0.2.1")}
			return m
		}},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				m := tc.msg()
				b, err := m.Pack()
				require.NoError(t, err)
				r := askFormerr(t, f.addr, transport, b)
				assert.Empty(t, r.Answer)
				assert.Equal(t, m.IsEdns0() != nil, r.IsEdns0() != nil, "an OPT when the query had one (RFC 6891 §7)")
			})
		}
	}
	for _, transport := range []string{"udp", "tcp"} {
		assert.Equal(t, 6.0, queriesCounted(t, f, ResultFormerr, transport), "counted as FORMERR over %s", transport)
	}
	// An IXFR carries the client's SOA in its authority section (RFC
	// 1995 §3): it is refused as a zone transfer, as before.
	ixfr := new(dns.Msg)
	ixfr.SetIxfr("example.org.", 1, "ns.example.org.", "hostmaster.example.org.")
	ixfr.SetEdns0(1232, false)
	r := ask(t, f.addr, "", "tcp", ixfr)
	assert.Equal(t, dns.RcodeRefused, r.Rcode, "an IXFR with its SOA: %s", dns.RcodeToString[r.Rcode])
	if e := ede(r); assert.NotNil(t, e, "the refusal says why") {
		assert.Equal(t, dns.ExtendedErrorCodeNotSupported, e.InfoCode)
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestBadVersionBeforeOptions: a query whose OPT is of a VERSION other
// than 0 gets BADVERS (RFC 6891 §6.1.3), whatever its options hold: they
// are that version's, and BIND answers BADVERS before it reads any. A
// COOKIE of 2 octets, a Client Subnet with a bit past its prefix (dig
// +edns=1 +cookie=0102, +ednsopt=8:0001180001) and, over TCP, an
// edns-tcp-keepalive with a TIMEOUT in such an OPT got FORMERR, the
// listener checking them by version 0's rules before the handler saw the
// version, so that the client was not told to fall back to version 0.
// Nothing goes upstream; the same options in a version 0 OPT still get
// FORMERR.
func TestBadVersionBeforeOptions(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	query := func(version uint8, code uint16, data ...byte) *dns.Msg {
		m := question("version.example.org.", dns.TypeA, true)
		m.IsEdns0().SetVersion(version)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: code, Data: data}}
		return m
	}
	for _, tc := range []struct {
		name       string
		code       uint16
		data       []byte
		transports []string
	}{
		{"a cookie of 2 octets", dns.EDNS0COOKIE, []byte{1, 2}, []string{"udp", "tcp"}},
		{"a subnet with a bit past its prefix", dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 1, 2, 3, 4}, []string{"udp", "tcp"}},
		{"a keepalive with a TIMEOUT", dns.EDNS0TCPKEEPALIVE, []byte{0, 100}, []string{"tcp"}},
	} {
		for _, transport := range tc.transports {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				r := ask(t, f.addr, "", transport, query(1, tc.code, tc.data...))
				assert.Equal(t, dns.RcodeBadVers, r.Rcode, "version 1: %s", dns.RcodeToString[r.Rcode])
				if assert.NotNil(t, r.IsEdns0()) {
					assert.Zero(t, r.IsEdns0().Version(), "the answer says the version spoken")
				}
				r = ask(t, f.addr, "", transport, query(0, tc.code, tc.data...))
				assert.Equal(t, dns.RcodeFormatError, r.Rcode, "version 0: %s", dns.RcodeToString[r.Rcode])
			})
		}
	}
	assert.Zero(t, up.count.Load(), "nothing went upstream")
}

// TestRecursionAvailableOnlyForQuery: RA says recursion is available for
// QUERY, the one opcode dnsfence recurses for; an answer to any other
// opcode (NOTIMP to IQUERY, STATUS, UPDATE, DSO or an unassigned one, the
// NOTIMP or BADVERS to a NOTIFY for no zone source, and the BADVERS to one
// with an OPT of another version) has RA clear, as BIND sets it only for
// QUERY (ns_client_send; Unbound's NOTIMP only echoes the query's own
// bits, RA among them), and as ISC's genreport
// (ednscomp) checks its "opcode" and "opcodeflg" tests: `dig +opcode=15
// +header-only` got NOTIMP with RA set, which genreport reports as "ra".
// AA, AD and Z stay clear, and QUERY keeps RA, on UDP and TCP, from the
// listener (the header's rejections) and the Handler (the NOTIFY) alike.
func TestRecursionAvailableOnlyForQuery(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	header := func(bits uint16, b ...byte) []byte {
		h := []byte{0x12, 0x34, byte(bits >> 8), byte(bits), 0, 0, 0, 0, 0, 0, 0, 0}
		return append(h, b...)
	}
	const allFlags = 1<<10 | 1<<9 | 1<<8 | 1<<7 | 1<<6 | 1<<5 | 1<<4 // AA TC RD RA Z AD CD
	withOpcode := func(opcode int, edns bool, version uint8) []byte {
		m := question("opcode.example.org.", dns.TypeSOA, edns)
		m.Opcode = opcode
		if edns {
			m.IsEdns0().SetVersion(version)
		}
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}
	for _, tc := range []struct {
		name   string
		b      []byte
		opcode int
		rcode  int
	}{
		{"genreport opcode: opcode 15, header only", header(15 << 11), 15, dns.RcodeNotImplemented},
		{"genreport opcodeflg: opcode 15, every flag", header(15<<11 | allFlags), 15, dns.RcodeNotImplemented},
		{"IQUERY", withOpcode(dns.OpcodeIQuery, false, 0), dns.OpcodeIQuery, dns.RcodeNotImplemented},
		{"STATUS with EDNS", withOpcode(dns.OpcodeStatus, true, 0), dns.OpcodeStatus, dns.RcodeNotImplemented},
		{"UPDATE with EDNS", withOpcode(dns.OpcodeUpdate, true, 0), dns.OpcodeUpdate, dns.RcodeNotImplemented},
		{"opcode 15 with EDNS version 1", withOpcode(15, true, 1), 15, dns.RcodeBadVers},
		{"NOTIFY for no zone source", withOpcode(dns.OpcodeNotify, false, 0), dns.OpcodeNotify, dns.RcodeNotImplemented},
		{"NOTIFY with EDNS version 1", withOpcode(dns.OpcodeNotify, true, 1), dns.OpcodeNotify, dns.RcodeBadVers},
		{"QUERY keeps RA", withOpcode(dns.OpcodeQuery, true, 0), dns.OpcodeQuery, dns.RcodeSuccess},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				raw := rawExchange
				if transport == "tcp" {
					raw = rawExchangeTCP
				}
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(raw(t, f.addr, tc.b)))
				assert.Equal(t, tc.rcode, r.Rcode, "%s", dns.RcodeToString[r.Rcode])
				assert.Equal(t, tc.opcode, r.Opcode, "opcode echoed")
				assert.True(t, r.Response, "QR")
				assert.Equal(t, tc.opcode == dns.OpcodeQuery, r.RecursionAvailable, "RA only for QUERY")
				assert.False(t, r.Authoritative, "AA")
				assert.False(t, r.AuthenticatedData, "AD")
				assert.False(t, r.Zero, "Z")
			})
		}
	}
	for _, q := range up.queries() {
		assert.Equal(t, dns.OpcodeQuery, q.msg.Opcode, "only a QUERY goes upstream: %s", q.msg.Question[0].Name)
	}
}

// TestQueryHeaderBitsOfAnswersIgnored: a query's header bits that only an
// answer sets (TC, RA, AA, an RCODE) and octets after the last record its
// header counts change nothing: the query is answered as without them,
// NOERROR with the upstream's record, on UDP and TCP, and the answer's
// bits are set by rule. ISC genreport's "tc" test (`+tcflag`) and its
// "aa" test expect NOERROR, as BIND answers; Unbound answers FORMERR to a
// query with TC set, which genreport reports. Trailing octets are
// ignored as BIND (which logs them) and Unbound do.
func TestQueryHeaderBitsOfAnswersIgnored(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, tc := range []struct {
		name     string
		edit     func(m *dns.Msg)
		trailing []byte
	}{
		{name: "TC set", edit: func(m *dns.Msg) { m.Truncated = true }},
		{name: "RA set", edit: func(m *dns.Msg) { m.RecursionAvailable = true }},
		{name: "AA set", edit: func(m *dns.Msg) { m.Authoritative = true }},
		{name: "RCODE REFUSED", edit: func(m *dns.Msg) { m.Rcode = dns.RcodeRefused }},
		{name: "trailing octets", edit: func(*dns.Msg) {}, trailing: []byte{1, 2, 3, 4}},
	} {
		for _, edns := range []bool{false, true} {
			for _, transport := range []string{"udp", "tcp"} {
				t.Run(fmt.Sprintf("%s edns=%v %s", tc.name, edns, transport), func(t *testing.T) {
					qname := fmt.Sprintf("bits-%s-%v-%s.example.org.", strings.ReplaceAll(tc.name, " ", "-"), edns, transport)
					m := question(qname, dns.TypeA, edns)
					tc.edit(m)
					b, err := m.Pack()
					require.NoError(t, err)
					b = append(b, tc.trailing...)
					raw := rawExchange
					if transport == "tcp" {
						raw = rawExchangeTCP
					}
					r := new(dns.Msg)
					require.NoError(t, r.Unpack(raw(t, f.addr, b)))
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s", dns.RcodeToString[r.Rcode])
					require.Len(t, r.Answer, 1)
					assert.Equal(t, m.Question, r.Question)
					assert.False(t, r.Truncated, "TC")
					assert.False(t, r.Authoritative, "AA")
					assert.True(t, r.RecursionAvailable, "RA")
					assert.Equal(t, edns, r.IsEdns0() != nil, "an OPT only for a query with one")
				})
			}
		}
	}
}

// TestCheckingDisabledCopiedIntoRejections: RFC 4035 §3.2.2 has the name
// server copy CD from a query into its response, whatever the response;
// BIND (dns_message_reply keeps RD and CD) and Unbound do so in their
// FORMERR, NOTIMP and BADVERS too. The listeners' own rejections copied RD
// but not CD, where the Handler's copy both: a query with CD set and two
// questions, a malformed cookie, a question cut short, or an unknown
// opcode got its FORMERR or NOTIMP with CD clear, and one with two OPT
// records its FORMERR with CD set. Every rejection, on UDP and TCP, now
// copies both, and sets no AD.
func TestCheckingDisabledCopiedIntoRejections(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	const rd, cd, ad = 1 << 8, 1 << 4, 1 << 5
	pack := func(edit func(m *dns.Msg)) []byte {
		m := question("cd.example.org.", dns.TypeA, true)
		edit(m)
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}
	withFlags := func(b []byte, rdSet bool) []byte {
		b = bytes.Clone(b)
		b[2], b[3] = b[2]&^1, b[3]|(cd|ad)
		if rdSet {
			b[2] |= rd >> 8
		}
		return b
	}
	whole := pack(func(*dns.Msg) {})
	for _, tc := range []struct {
		name  string
		b     []byte
		rcode int
	}{
		{"no question", pack(func(m *dns.Msg) { m.Question = nil }), dns.RcodeFormatError},
		{"two questions", pack(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), dns.RcodeFormatError},
		{"a cookie of 7 octets", pack(func(m *dns.Msg) {
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: []byte{1, 2, 3, 4, 5, 6, 7}}}
		}), dns.RcodeFormatError},
		{"records cut short", whole[:len(whole)-2], dns.RcodeFormatError},
		{"opcode 15", pack(func(m *dns.Msg) { m.Opcode = 15 }), dns.RcodeNotImplemented},
		{"opcode 15, EDNS version 1", pack(func(m *dns.Msg) { m.Opcode = 15; m.IsEdns0().SetVersion(1) }), dns.RcodeBadVers},
		{"two OPT records (the Handler's)", pack(func(m *dns.Msg) { m.Extra = append(m.Extra, m.Extra[0]) }), dns.RcodeFormatError},
	} {
		for _, rdSet := range []bool{false, true} {
			for _, transport := range []string{"udp", "tcp"} {
				t.Run(fmt.Sprintf("%s rd=%v %s", tc.name, rdSet, transport), func(t *testing.T) {
					raw := rawExchange
					if transport == "tcp" {
						raw = rawExchangeTCP
					}
					b := raw(t, f.addr, withFlags(tc.b, rdSet))
					require.GreaterOrEqual(t, len(b), 12)
					r := new(dns.Msg)
					require.NoError(t, r.Unpack(b))
					assert.Equal(t, tc.rcode, r.Rcode, "%s", dns.RcodeToString[r.Rcode])
					assert.True(t, r.CheckingDisabled, "CD copied (RFC 4035 §3.2.2)")
					assert.Equal(t, rdSet, r.RecursionDesired, "RD copied")
					assert.False(t, r.AuthenticatedData, "AD")
				})
			}
		}
	}
	assert.Zero(t, up.distinct(), "nothing went upstream")
}

// TestNameLimitsInQuestion: a question name of 255 octets with labels of
// 63 is a name (RFC 1035 §2.3.4, §3.1) and is answered, its question
// echoed octet for octet; one of 256 octets, a label whose length octet
// says 64 (the 0x40 label type RFC 6891 §5 retired) or 128 (0x80,
// reserved), is no name, and the query gets FORMERR and goes nowhere, on
// UDP and TCP, as BIND and Unbound answer.
func TestNameLimitsInQuestion(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	// name is a wire name of total octets, labels of 63 but the last.
	name := func(total int) []byte {
		var b []byte
		for left := total - 1; left > 0; {
			n := min(63, left-1)
			b = append(b, byte(n))
			b = append(b, bytes.Repeat([]byte{'x'}, n)...)
			left -= n + 1
		}
		return append(b, 0)
	}
	query := func(qname []byte) []byte {
		b := []byte{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
		b = append(b, qname...)
		return append(b, 0, byte(dns.TypeA), 0, byte(dns.ClassINET))
	}
	label := func(length byte) []byte {
		b := append([]byte{length}, bytes.Repeat([]byte{'y'}, int(length&0x3F))...)
		return append(b, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0)
	}
	for _, tc := range []struct {
		name  string
		qname []byte
		rcode int
	}{
		{"255 octets", name(255), dns.RcodeSuccess},
		{"a label of 63", label(63), dns.RcodeSuccess},
		{"256 octets", name(256), dns.RcodeFormatError},
		{"a label of 64 (type 0x40)", label(64), dns.RcodeFormatError},
		{"a label of type 0x80", label(0x80 | 5), dns.RcodeFormatError},
	} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(tc.name+" "+transport, func(t *testing.T) {
				raw := rawExchange
				if transport == "tcp" {
					raw = rawExchangeTCP
				}
				b := raw(t, f.addr, query(tc.qname))
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(b))
				assert.Equal(t, tc.rcode, r.Rcode, "%s", dns.RcodeToString[r.Rcode])
				if tc.rcode == dns.RcodeSuccess {
					require.Len(t, r.Answer, 1)
					assert.Equal(t, tc.qname, b[12:12+len(tc.qname)], "the question echoed octet for octet")
				} else {
					assert.Empty(t, r.Answer)
				}
			})
		}
	}
	for _, q := range up.queries() {
		// In presentation form one octet shorter than on the wire (a dot
		// for each length octet, none for the root's), so 254 at most:
		// 255 is the 256-octet name.
		wire := len(q.msg.Question[0].Name) + 1
		assert.LessOrEqual(t, wire, 255, "only names went upstream")
	}
}
