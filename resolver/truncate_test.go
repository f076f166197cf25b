package resolver

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTruncateLeavesSplitRRsetWhole: an RRset whose records are not next
// to each other in a section (RFC 2181 §5: an RRset is every record of one
// owner, class and type, wherever it stands) and of which one record does
// not fit is left out whole when TC stays clear (§9), the records of it
// before another RRset too: a part of it with TC clear is taken for all
// of it. The RRsets that fit stay. Found by FuzzTruncate.
func TestTruncateLeavesSplitRRsetWhole(t *testing.T) {
	ns := func(i int) dns.RR {
		return mustRR("example.org. 300 IN NS %s.ns.example.org.", strings.Repeat(string(rune('a'+i)), 40))
	}
	ds := mustRR("example.org. 300 IN DS 1 13 2 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
	t.Run("authority NS", func(t *testing.T) {
		m := question("apart.example.org.", dns.TypeMX, false)
		m.Response = true
		m.Answer = []dns.RR{mustRR("apart.example.org. 300 IN MX 10 x.example.org.")}
		m.Ns = []dns.RR{ns(0), ns(1), ns(2), ds}
		for i := 3; i < 12; i++ {
			m.Ns = append(m.Ns, ns(i))
		}
		truncate(m, 512)
		require.Len(t, m.Answer, 1)
		assert.False(t, m.Truncated, "only the NS RRset beside the answer goes")
		assert.Equal(t, []dns.RR{ds}, m.Ns, "the NS RRset goes whole, its first three records too")
	})
	t.Run("additional A", func(t *testing.T) {
		m := question("apart.example.org.", dns.TypeMX, true)
		m.Response = true
		m.Answer = []dns.RR{mustRR("apart.example.org. 300 IN MX 10 x.example.org.")}
		glue := mustRR("glue.example.org. 300 IN A 192.0.2.99")
		m.Extra = []dns.RR{glue}
		for i := range 20 {
			m.Extra = append(m.Extra, mustRR("x.example.org. 300 IN A 192.0.2.%d", i+1), mustRR("x.example.org. 300 IN AAAA 2001:db8::%d", i+1))
		}
		m.SetEdns0(1232, false) // the OPT last, as upstreamReply puts it
		truncate(m, 512)
		b, err := m.Pack()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b), 512)
		assert.False(t, m.Truncated)
		require.NotNil(t, m.IsEdns0(), "the OPT stays (RFC 6891 §7)")
		assert.Equal(t, []dns.RR{glue, m.IsEdns0()}, m.Extra, "the A and AAAA RRsets of x go whole")
	})
}

// TestTruncateShrinksOPTBeforeCutting: an answer whose OPT alone, with an
// upstream's long Extended DNS Error text, does not fit the client's size
// beside the header and question keeps the records that fit once the
// texts are gone (RFC 8914 §2: they are for people, not for resolution),
// with TC clear when all of them do (RFC 2181 §9), and the EDE's code.
// Found by FuzzTruncate.
func TestTruncateShrinksOPTBeforeCutting(t *testing.T) {
	for _, n := range []int{10, 40} {
		t.Run(fmt.Sprint(n, " records"), func(t *testing.T) {
			m := question("stale.example.org.", dns.TypeA, false)
			m.Response = true
			for i := range n {
				m.Answer = append(m.Answer, mustRR("stale.example.org. 300 IN A 192.0.2.%d", i+1))
			}
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: strings.Repeat("the upstream's text ", 25)}}
			truncate(m, 512)
			b, err := m.Pack()
			require.NoError(t, err)
			assert.LessOrEqual(t, len(b), 512)
			fit := min(n, (512-12-23-11-6)/16) // header, question, OPT and EDE code, A records of a compressed name
			assert.Len(t, m.Answer, fit, "the records that fit beside the OPT without the text")
			assert.Equal(t, n > fit, m.Truncated)
			require.NotNil(t, m.IsEdns0(), "the OPT stays (RFC 6891 §7)")
			require.Len(t, m.IsEdns0().Option, 1)
			assert.Equal(t, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer}, m.IsEdns0().Option[0], "the EDE's code stays, its text goes")
		})
	}
}

// TestTruncateFitsTSIGAnswer: miekg/dns's Truncate leaves a message whose
// last record is a TSIG as it is; truncate fits the rest beside it, keeps
// it last when it fits, and leaves it out with TC set when it does not,
// so that no answer is over the client's size: the NOTAUTH to a signed
// query of a client without EDNS whose TSIG names a long key and
// algorithm (RFC 8945 §5.2.1), and an upstream's answer with a TSIG last
// (upstreamReply keeps it). Found while writing FuzzTruncate.
func TestTruncateFitsTSIGAnswer(t *testing.T) {
	long := strings.Repeat(strings.Repeat("k", 63)+".", 3)
	tsig := func(name string) *dns.TSIG {
		return &dns.TSIG{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: "x" + long, TimeSigned: 1700000000, Fudge: 300, Error: dns.RcodeBadKey}
	}
	t.Run("NOTAUTH of long names", func(t *testing.T) {
		m := question(strings.Repeat("q", 63)+"."+long, dns.TypeA, false)
		m.Response, m.Rcode = true, dns.RcodeNotAuth
		m.Extra = []dns.RR{tsig("a" + long)}
		require.Greater(t, m.Len(), 512)
		truncate(m, 512)
		b, err := m.Pack()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b), 512)
		assert.True(t, m.Truncated, "the TSIG left out: the client asks again over TCP")
		assert.Nil(t, m.IsTsig())
	})
	t.Run("EDE codes left out for the TSIG", func(t *testing.T) {
		// A NOTAUTH whose TSIG, beside its header, question and an empty
		// OPT, fits 512 octets, but not with the codes of its Extended
		// DNS Errors as well: the options go (shrinkOPT), the TSIG stays,
		// and TC is clear; kept, they would have pushed the TSIG out.
		m := question("a.example.org.", dns.TypeA, true)
		m.Response, m.Rcode = true, dns.RcodeNotAuth
		sig := tsig(long)
		sig.Algorithm = long
		m.Extra = append(m.Extra, sig)
		_, err := m.Pack()
		require.NoError(t, err)
		opt := m.IsEdns0()
		require.NotNil(t, opt)
		for fitsIn(m, 512) {
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeNotAuthoritative})
		}
		options := opt.Option
		opt.Option = nil
		require.True(t, fitsIn(m, 512), "without options, the answer fits whole")
		opt.Option = options
		truncate(m, 512)
		b, err := m.Pack()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b), 512)
		assert.False(t, m.Truncated, "nothing the answer requires was left out")
		assert.NotNil(t, m.IsTsig(), "the TSIG kept, last")
		require.NotNil(t, m.IsEdns0())
		assert.Empty(t, m.IsEdns0().Option, "the options left out")
	})
	for _, limit := range []int{512, 1232} {
		t.Run(fmt.Sprint("answer with a TSIG last, ", limit), func(t *testing.T) {
			m := question("a.example.org.", dns.TypeA, false)
			m.Response = true
			for i := range 100 {
				m.Answer = append(m.Answer, mustRR("a.example.org. 300 IN A 192.0.2.%d", i+1))
			}
			sig := tsig("key.example.")
			sig.Algorithm = dns.HmacSHA256
			m.Extra = []dns.RR{sig}
			m.Compress = true
			truncate(m, limit)
			b, err := m.Pack()
			require.NoError(t, err)
			assert.LessOrEqual(t, len(b), limit)
			assert.True(t, m.Truncated, "answer records cut")
			assert.NotEmpty(t, m.Answer)
			if limit > 512 {
				// Truncate fits nothing to less than 512 octets: at 512 the
				// TSIG finds no room beside the records, and TC is set.
				assert.NotNil(t, m.IsTsig(), "the TSIG fits beside what was kept, last")
			}
		})
	}
}

// TestEDETextsGoBeforeRecords: an answer that fits the client's UDP size
// without the texts of its Extended DNS Errors keeps every record, with TC
// clear and the EDE codes, when the texts would push it over: they are for
// people, not for resolution (RFC 8914 §2), and a record of the answer
// left out sets TC (RFC 2181 §9), which costs the client a TCP retry for
// words. Measured with dig +bufsize=1232 before the fix: 40 AAAA records
// (1,183 octets) served stale came back as 39 of them with TC set, for
// dnsfence's own EDE 3 text, and an upstream's answer of 20 A records
// with a 900-octet EDE text as 17 with TC set, though the same answers
// with the text too long for the OPT alone (a 512-octet client) kept
// every record (TestTruncateShrinksOPTBeforeCutting).
func TestEDETextsGoBeforeRecords(t *testing.T) {
	aaaas := func(name string, ttl uint32) []dns.RR {
		var rrs []dns.RR
		for i := range 40 {
			rrs = append(rrs, mustRR("%s %d IN AAAA 2001:db8::%x", name, ttl, i+1))
		}
		return rrs
	}
	check := func(t *testing.T, r *dns.Msg, records int, code uint16) {
		t.Helper()
		assert.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.False(t, r.Truncated, "every record fits once the texts are gone: no TC")
		assert.Len(t, r.Answer, records)
		e := ede(r)
		require.NotNil(t, e, "the EDE code stays")
		assert.Equal(t, code, e.InfoCode)
		assert.Empty(t, e.ExtraText, "its text goes")
	}

	t.Run("served stale", func(t *testing.T) {
		var alive atomic.Bool
		alive.Store(true)
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if !alive.Load() {
				return nil
			}
			m := defaultAnswer(w, r)
			if r.Question[0].Qtype == dns.TypeAAAA {
				m.Answer = aaaas(r.Question[0].Name, 1)
			}
			return m
		})
		cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\ncache: {serve_stale: 1h}", 1)
		f := startFence(t, cfg, testFiles, up.addr)
		for _, from := range []string{"127.0.0.1", "127.0.0.3"} { // a government device, and the press office: no inspection
			name := "stale" + strings.ReplaceAll(from, ".", "-") + ".example.org."
			r := ask(t, f.addr, from, "udp", question(name, dns.TypeAAAA, true))
			require.Len(t, r.Answer, 40)
			require.False(t, r.Truncated, "fresh, the answer fits 1,232 octets")
			alive.Store(false)
			time.Sleep(1100 * time.Millisecond) // past its TTL
			r = ask(t, f.addr, from, "udp", question(name, dns.TypeAAAA, true))
			check(t, r, 40, dns.ExtendedErrorCodeStaleAnswer)
			alive.Store(true)
		}
	})

	t.Run("upstream's text", func(t *testing.T) {
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			m := defaultAnswer(w, r)
			m.Answer = nil
			for i := range 20 {
				m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.%d", r.Question[0].Name, i+1))
			}
			if opt := m.IsEdns0(); opt != nil {
				opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: strings.Repeat("y", 900)})
			}
			return m
		})
		f := startFence(t, testConfig, testFiles, up.addr)
		for _, from := range []string{"127.0.0.1", "127.0.0.3"} {
			for range 2 { // fresh, then from the cache
				r := ask(t, f.addr, from, "udp", question("text.example.org.", dns.TypeA, true))
				check(t, r, 20, dns.ExtendedErrorCodeOther)
			}
			r := ask(t, f.addr, from, "tcp", question("text.example.org.", dns.TypeA, true))
			require.NotNil(t, ede(r))
			assert.Len(t, ede(r).ExtraText, 900, "over TCP the text fits")
			assert.Len(t, r.Answer, 20)
		}
	})
}

// TestEDETextsGoBeforeRecordsUnread: TestEDETextsGoBeforeRecords for an
// answer miekg/dns does not unpack (an HTTPS ipv6hint holding an
// IPv4-mapped address, README's Answer inspection), given in wire form to
// a client whose policy does not inspect it: one that fits the client's
// UDP size once its Extended DNS Errors' texts are gone is given whole,
// codes kept, not cut to its header and question with TC set (which is
// left for one that does not fit even so). Before, an answer of 33
// records (983 octets) with an upstream's 200-octet EDE text came back
// empty with TC set to a client of 1,000, fresh and from the cache, and
// so did one served stale, for dnsfence's own EDE 3 text. One that fits
// without them to the octet is given whole too, and one that fits with
// them to the octet keeps them.
func TestEDETextsGoBeforeRecordsUnread(t *testing.T) {
	var failing atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		if q.Qtype != dns.TypeHTTPS {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg)
		if failing.Load() {
			m.SetRcode(r, dns.RcodeServerFailure)
			return m
		}
		m.SetReply(r)
		m.RecursionAvailable = true
		m.Answer = append(m.Answer, mappedHintHTTPS(q.Name, 1))
		records := 32 // 983 octets: over the client's 1,000 with an EDE's text
		if strings.HasPrefix(q.Name, "over") {
			records = 60 // over 1,000 octets without the text too
		}
		for i := range records {
			m.Answer = append(m.Answer, mustRR("%s 1 IN AAAA 2001:db8::%x", q.Name, i+1))
		}
		m.SetEdns0(1232, false)
		if strings.Contains(q.Name, "text") {
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: strings.Repeat("z", 200)}}
		}
		m.Compress = true
		return m
	})
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 300ms\ncache: {serve_stale: 1h, stale_answer_client_timeout: 0s}", 1)
	f := startFence(t, cfg, testFiles, up.addr)
	askSized := func(name string, size uint16) []byte {
		t.Helper()
		m := question(name, dns.TypeHTTPS, true)
		m.IsEdns0().SetUDPSize(size)
		q, err := m.Pack()
		require.NoError(t, err)
		b := askRaw(t, f.addr, "127.0.0.3", q)
		require.LessOrEqual(t, len(b), int(size), "over UDP to a client of %d", size)
		return b
	}
	ask1000 := func(name string) []byte {
		t.Helper()
		return askSized(name, 1000) // under the upstream's 1,232: its answer comes over UDP
	}
	edeOf := func(b []byte) []byte { return rawOptions(t, b)[dns.EDNS0EDE] }
	whole := func(what string, b []byte, records int, code uint16) {
		t.Helper()
		assert.Zero(t, dnswire.Flags(b)&dnswire.FlagTC, "%s: TC clear", what)
		assert.EqualValues(t, records, dnswire.ANCount(b), "%s: every record", what)
		assert.Equal(t, binary.BigEndian.AppendUint16(nil, code), edeOf(b), "%s: the EDE's code, without its text", what)
	}
	for range 2 { // fresh, then from the cache
		whole("upstream's text", ask1000("text.example.org."), 33, dns.ExtendedErrorCodeOther)
		b := ask1000("overtext.example.org.")
		assert.NotZero(t, dnswire.Flags(b)&dnswire.FlagTC, "too big without the text: TC")
		assert.Zero(t, dnswire.ANCount(b), "too big without the text: its header and question")
	}
	// A client whose size is, to the octet, the answer's without the text
	// gets it whole.
	exact := len(ask1000("text.example.org."))
	whole("upstream's text, to the octet", askSized("text.example.org.", uint16(exact)), 33, dns.ExtendedErrorCodeOther)
	// And one whose size is the answer's with the text gets the text.
	withText := len(askSized("text.example.org.", 1232))
	b := askSized("text.example.org.", uint16(withText))
	assert.Equal(t, withText, len(b), "with its text, to the octet")
	assert.Len(t, edeOf(b), 2+200, "with its text, to the octet: the EDE's code and text")
	require.EqualValues(t, 33, dnswire.ANCount(ask1000("stale.example.org.")), "fresh, the answer fits")
	failing.Store(true)
	time.Sleep(1100 * time.Millisecond) // past its TTL
	whole("served stale", ask1000("stale.example.org."), 33, dns.ExtendedErrorCodeStaleAnswer)
}

// TestTruncateEDETextsOnlyForRequiredRecords: the texts of an answer's
// Extended DNS Errors go (shrinkOPT) only when the OPT is over the limit
// or they would leave out a record the answer requires (RFC 8914 §2: for
// people, not for resolution). An answer that fits once records of the
// additional section, extra information, are left out (TC clear, RFC 2181
// §9) keeps them; one whose answer records are cut drops them, and the
// OPT's other options (an NSID here) stay, beside the EDE's code.
func TestTruncateEDETextsOnlyForRequiredRecords(t *testing.T) {
	const text = "answer from cache past its TTL"
	t.Run("additional records cut", func(t *testing.T) {
		m := question("mx.example.org.", dns.TypeMX, true)
		m.Response = true
		m.Answer = []dns.RR{mustRR("mx.example.org. 300 IN MX 10 x.example.org.")}
		m.Extra = nil
		for i := range 30 {
			m.Extra = append(m.Extra, mustRR("x.example.org. 300 IN A 192.0.2.%d", i+1))
		}
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: text}}
		require.False(t, fitsIn(m, 512))
		truncate(m, 512)
		b, err := m.Pack()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b), 512)
		assert.False(t, m.Truncated, "only extra information left out")
		assert.Len(t, m.Answer, 1)
		require.Len(t, m.Extra, 1, "the A RRset of x goes whole, the OPT stays")
		e := ede(m)
		require.NotNil(t, e)
		assert.Equal(t, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: text}, e,
			"the text stays: leaving it out gains no record the answer requires")
	})
	t.Run("answer records cut, beside another option", func(t *testing.T) {
		m := question("a.example.org.", dns.TypeA, true)
		m.Response = true
		for i := range 40 {
			m.Answer = append(m.Answer, mustRR("a.example.org. 300 IN A 192.0.2.%d", i+1))
		}
		nsid := &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "6e7331"}
		m.IsEdns0().Option = []dns.EDNS0{nsid, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: text}}
		truncate(m, 512)
		b, err := m.Pack()
		require.NoError(t, err)
		assert.LessOrEqual(t, len(b), 512)
		assert.True(t, m.Truncated, "answer records left out")
		require.NotNil(t, m.IsEdns0())
		assert.Equal(t, []dns.EDNS0{nsid, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer}}, m.IsEdns0().Option,
			"the NSID kept, the EDE's text gone, its code kept")
	})
}
