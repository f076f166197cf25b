package resolver

import (
	"bytes"
	"hash/crc32"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
)

// wireSeeds are queries of many shapes, packed.
func wireSeeds(f *testing.F) {
	testnet.Seed(f, "testdata/packets/*.bin")
	withOpts := question("opts.example.org.", dns.TypeA, true)
	withOpts.IsEdns0().Option = []dns.EDNS0{
		&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 0, 0, 0).To4()},
		&dns.EDNS0_PADDING{Padding: make([]byte, 12)},
	}
	// Options the listeners answer FORMERR (a cookie of 7 octets, a
	// Client Subnet with an octet past its prefix or a bit set past it)
	// and their well-formed neighbours (RFC 7873 §5.2.2, RFC 7871 §6).
	var optionSeeds []*dns.Msg
	for _, o := range []dns.EDNS0{
		&dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: []byte{1, 2, 3, 4, 5, 6, 7}},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: make([]byte, 16)},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: make([]byte, 41)},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1, 24, 0, 10, 20, 30, 4}},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1, 23, 0, 10, 20, 31}},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1, 24, 0, 10, 20, 30}},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 0, 0, 0}},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 2, 129, 0}},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0TCPKEEPALIVE, Data: []byte{0, 100}},
	} {
		m := question("opt.example.org.", dns.TypeA, true)
		m.IsEdns0().Option = []dns.EDNS0{o}
		optionSeeds = append(optionSeeds, m)
	}
	do := question("Do.Example.ORG.", dns.TypeAAAA, true)
	do.IsEdns0().SetDo()
	do.CheckingDisabled, do.AuthenticatedData = true, true
	for _, m := range append([]*dns.Msg{
		question("www.tiktok.com.", dns.TypeA, true),
		question("example.org.", dns.TypeHTTPS, false),
		question(".", dns.TypeNS, true),
		question(`x\.tiktok.com.`, dns.TypeTXT, true),
		question(strings.Repeat("a", 63)+"."+strings.Repeat("b", 63)+"."+strings.Repeat("c", 63)+"."+strings.Repeat("d", 61)+".", dns.TypeA, true),
		withOpts, do,
	}, optionSeeds...) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// An OPT whose RDLENGTH is not where the datagram ends: one octet
	// more (the options cut short), or one octet after it; an OPT whose
	// RDLENGTH is cut short.
	b, err := question("rdlength.example.org.", dns.TypeA, true).Pack()
	if err != nil {
		f.Fatal(err)
	}
	long := bytes.Clone(b)
	long[len(long)-1]++
	f.Add(long)
	f.Add(append(bytes.Clone(b), 0))
	f.Add(b[:len(b)-1]) // the OPT's fixed fields cut short
	// ARCOUNT 2 with no record after the question: the listener answers
	// FORMERR (dnswire.RecordsWhole).
	b, err = question("arcount.example.org.", dns.TypeA, false).Pack()
	if err != nil {
		f.Fatal(err)
	}
	b[11] = 2
	f.Add(b)
}

// FuzzReadWireQuery checks that the wire path takes only queries that the
// message path would answer as queries (they parse, opcode QUERY, one
// valid question of class IN, good EDNS), and reads them as miekg/dns does:
// the same question, cache key, EDNS and header bits.
func FuzzReadWireQuery(f *testing.F) {
	wireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var buf [maxNameText]byte
		wq, ok := readWireQuery(b, &buf)
		if !ok {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			t.Fatalf("the wire path took a query miekg/dns cannot unpack: %v", err)
		}
		// The listeners take it too: the wire path answers nothing
		// the message path would have answered FORMERR (options
		// dnswire.OptionSound calls malformed, records cut short).
		if req, _ := listen.AcceptMessage(b, listen.AcceptQuery, func([]byte, error) {}); req == nil {
			t.Fatalf("the wire path took a query the listener refuses: %s", m)
		}
		if m.Response || m.Opcode != dns.OpcodeQuery || len(m.Question) != 1 || !validQuestion(m.Question[0]) ||
			checkEDNS(m) != dns.RcodeSuccess || m.Question[0].Qclass != dns.ClassINET {
			t.Fatalf("the wire path took a query the message path refuses: %s", m)
		}
		q := m.Question[0]
		if _, explain := explainName(q); explain || q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR {
			t.Fatalf("the wire path took a query the message path answers itself: %s", m)
		}
		if got, want := wq.key(), keyOf(m); got != want {
			t.Fatalf("cache key %+v, want %+v", got, want)
		}
		a, want := wq.asked(), askedOf(m)
		if n, err := dns.PackDomainName(want.qname, buf[:], 0, nil, false); err != nil || !bytes.Equal(buf[:n], a.qnameWire) {
			t.Fatalf("QNAME %q, want %q", a.qnameWire, want.qname)
		}
		a.qnameWire, a.qname = nil, want.qname
		if !reflect.DeepEqual(a, want) {
			t.Fatalf("asked %+v, want %+v", a, want)
		}
		if wq.maxSize() != clientSize(m) {
			t.Fatalf("client size %d, want %d", wq.maxSize(), clientSize(m))
		}
		if wq.ecs != (findECS(m) != nil) {
			t.Fatalf("ECS %v, want %v", wq.ecs, findECS(m))
		}
		// The query sent upstream is upstreamQuery's, packed.
		up := new(dns.Msg)
		if err := up.Unpack(wq.upstreamQuery(nil)); err != nil {
			t.Fatalf("the upstream query does not unpack: %v", err)
		}
		if !up.AuthenticatedData || up.RecursionDesired != m.RecursionDesired || up.CheckingDisabled != m.CheckingDisabled ||
			up.Question[0] != q || up.IsEdns0() == nil || up.IsEdns0().Do() != dnssecOK(m) ||
			up.IsEdns0().UDPSize() != ednsSize || len(up.IsEdns0().Option) != 0 || len(up.Extra) != 1 {
			t.Fatalf("upstream query %s for %s", up, m)
		}
	})
}

// FuzzWirePath runs every packet through the wire path and through the
// message path of two handlers alike (a blocking policy; an upstream that
// refuses the connection) and requires the same answer, octet for octet.
// The wire path serves with a loop's answer memo, kept over the whole run,
// and every packet is served twice, the second time with another ID: a
// blocked answer the memo gives again is the message path's for that ID.
func FuzzWirePath(f *testing.F) {
	wireSeeds(f)
	path, loaded := fuzzConfig(f), time.Now()
	wireHandler := fuzzHandler(f, path, loaded)
	wire, msg := wireHandler, messageOnly{fuzzHandler(f, path, loaded)}
	memo := wireHandler.NewMemo()
	f.Cleanup(memo.Close)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		serve := func(h listen.Handler, pkt []byte) [][]byte {
			w := &memoRecorder{rawRecorder: rawRecorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}}
			if h == wire {
				w.memo = memo
			}
			if resume := listen.ServeDatagram(h, w, pkt, listen.AcceptQuery, func([]byte, error) {}, nil); resume != nil {
				resume()
			}
			return w.written
		}
		again := bytes.Clone(pkt)
		if len(again) >= 2 {
			again[0], again[1] = ^again[0], again[1]+1
		}
		for _, p := range [][]byte{pkt, again} {
			got, want := serve(wire, p), serve(msg, p)
			if len(got) != len(want) {
				t.Fatalf("%d answers on the wire path, %d on the message path", len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					a, b := new(dns.Msg), new(dns.Msg)
					_, _ = a.Unpack(got[i]), b.Unpack(want[i])
					t.Fatalf("wire path:\n%s\nmessage path:\n%s", a, b)
				}
			}
		}
	})
}

// memoRecorder is a rawRecorder with a loop's answer memo
// (listen.MemoWriter), or none.
type memoRecorder struct {
	rawRecorder
	memo listen.Memo
}

func (r *memoRecorder) Memo() listen.Memo { return r.memo }

// rawRecorder is a UDP ResponseWriter that keeps the answers' octets.
type rawRecorder struct {
	recorder
	remote  net.Addr
	written [][]byte
}

func (r *rawRecorder) RemoteAddr() net.Addr { return r.remote }
func (r *rawRecorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err == nil {
		r.written = append(r.written, b)
	}
	return err
}
func (r *rawRecorder) Write(b []byte) (int, error) {
	r.written = append(r.written, bytes.Clone(b))
	return len(b), nil
}

// FuzzWireAnswer reads any upstream answer as the wire cache does and
// checks it against miekg/dns's reading where both read it: the same
// records, RCODE and cache lifetime, and an answer marked as naming only
// the question (qnameOnly) does so.
func FuzzWireAnswer(f *testing.F) {
	for _, m := range []*dns.Msg{
		answerWith("a.example.org.", dns.TypeA, dns.RcodeSuccess,
			"a.example.org. 300 IN CNAME b.example.org.", "b.example.org. 100 IN A 192.0.2.1"),
		answerWith("x.example.org.", dns.TypeA, dns.RcodeNameError,
			"example.org. 900 IN SOA ns.example.org. h.example.org. 1 3600 600 86400 120"),
		answerWith("t.example.org.", dns.TypeTXT, dns.RcodeSuccess, `t.example.org. 60 IN TXT "hello"`),
		answerWith("m.example.org.", dns.TypeMX, dns.RcodeSuccess, `m.example.org. 60 IN MX 10 mx.example.org.`),
		answerWith("s.example.org.", dns.TypeHTTPS, dns.RcodeSuccess, `s.example.org. 60 IN HTTPS 1 . alpn=h2`),
		withSections(answerWith("g.example.org.", dns.TypeA, dns.RcodeSuccess, "g.example.org. 60 IN A 192.0.2.1"),
			[]string{"example.org. 60 IN NS ns1.tiktok.com."}, []string{"ns1.tiktok.com. 60 IN A 192.0.2.53"}),
	} {
		for _, edns := range []bool{false, true} {
			if edns {
				m.SetEdns0(1232, true)
			}
			m.Compress = true
			b, err := m.Pack()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	// Names that point into octets the wire path rewrites: the header,
	// a TTL (TestWirePointerIntoHeaderFailsClosed, ...IntoTTLFailsClosed).
	for _, name := range []string{"cloak.eq.example.", "ttl.eq.example."} {
		q, err := question(name, dns.TypeA, false).Pack()
		if err != nil {
			f.Fatal(err)
		}
		h, _ := headerPointerAnswer(q)
		f.Add(h)
		f.Add(ttlPointerAnswer(q))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		unpacked := m.Unpack(b) == nil
		var ttls []uint32
		var types []uint16
		if q, ok := dnswire.ReadQuestion(b); ok && dnswire.QDCount(b) == 1 && dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
			ttls, types = append(ttls, r.TTL), append(types, r.Type)
			return true
		}) && unpacked {
			var rrs []dns.RR
			for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
				rrs = append(rrs, sec...)
			}
			if len(rrs) != len(ttls) {
				t.Fatalf("dnswire read %d records, miekg/dns %d", len(ttls), len(rrs))
			}
			for i, rr := range rrs {
				if rr.Header().Ttl != ttls[i] || rr.Header().Rrtype != types[i] {
					t.Fatalf("record %d: dnswire %d TTL %d, miekg/dns %s", i, types[i], ttls[i], rr)
				}
			}
		}
		var w wireAnswer
		sh, ok := wireOf(bytes.Clone(b), &w)
		if !ok || !unpacked {
			return
		}
		if sh.rcode != m.Rcode {
			t.Fatalf("RCODE %d, miekg/dns %d", sh.rcode, m.Rcode)
		}
		for _, bounds := range [][2]uint32{{0, 86400}, {60, 3600}} {
			got, gotOK := sh.cacheTTL(bounds[0], bounds[1])
			want, wantOK := cacheTTL(m, bounds[0], bounds[1])
			if got != want || gotOK != wantOK {
				t.Fatalf("cache TTL %s %v, want %s %v", got, gotOK, want, wantOK)
			}
		}
		if w.qnameOnly {
			for _, rr := range m.Answer {
				if _, alias := aliasTarget(rr); alias || !blocklist.SameName(rr.Header().Name, m.Question[0].Name) {
					t.Fatalf("qnameOnly with %s", rr)
				}
			}
			// Nothing outside the answer section that scrub could leave out.
			for _, rr := range m.Ns {
				if !proofType(rrsetType(rr)) {
					t.Fatalf("qnameOnly with %s in the authority section", rr)
				}
			}
			for _, rr := range m.Extra {
				if rr.Header().Rrtype != dns.TypeOPT {
					t.Fatalf("qnameOnly with %s in the additional section", rr)
				}
			}
		}
		sameAsInspected(t, b, &w)
	})
}

// sameAsInspected checks that every client reads the answer held as w the
// way its inspection reads it (cacheEntry.message, the octets as
// received): whatever the client's ID and flags (appendCached rewrites
// them, and ARCOUNT with the client's OPT) and however the TTLs have aged
// (rewritten in place), the same question and records, TTLs aside. A name
// pointing into octets the wire path rewrites would read otherwise.
func sameAsInspected(t *testing.T, b []byte, w *wireAnswer) {
	stored := time.Unix(1_700_000_000, 0)
	e := &cacheEntry{wire: w, stored: stored, maxTTL: ^uint32(0), life: ^uint32(0)}
	want := e.message()
	if want == nil {
		return // not inspected: answered SERVFAIL (inspectEntry)
	}
	sum := crc32.ChecksumIEEE(b)
	// IDs that read as pointers: anywhere, into the header, at random.
	ids := []uint16{0xFFFF, 0xC000 | uint16(sum&0x3FFF), uint16(sum >> 16), 0xC000 | uint16(sum%dnswire.HeaderLen)}
	for i, id := range ids {
		a := asked{id: id, opcode: dns.OpcodeQuery, rd: i&1 == 0, cd: i&2 == 0, ad: i == 3, edns: i&1 == 1, do: i == 1,
			qnameWire: w.wire[dnswire.HeaderLen:w.qnameEnd], qtype: want.Question[0].Qtype, qclass: want.Question[0].Qclass}
		e.life = [...]uint32{^uint32(0), 30, sum, 0xC000_0000 | sum&0x3FFF}[i] // TTLs that read as pointers too
		now := stored.Add(time.Duration(sum%100_000+uint32(i)) * time.Second)
		out, ok := a.appendCached(nil, e, now, dns.MaxMsgSize)
		if !ok {
			if len(out) > dns.MaxMsgSize {
				return // our OPT does not fit
			}
			t.Fatalf("appendCached refused the answer to the question it holds")
		}
		got := new(dns.Msg)
		if err := got.Unpack(out); err != nil {
			t.Fatalf("ID %#04x: the client cannot read what was inspected: %v\ninspected:\n%s", id, err, want)
		}
		if g, w := recordsSansTTL(got), recordsSansTTL(want); g != w {
			t.Fatalf("ID %#04x: the client reads\n%s\nthe inspection read\n%s", id, g, w)
		}
	}
}

// recordsSansTTL is m's question and records (OPT aside), TTLs zeroed, as
// text.
func recordsSansTTL(m *dns.Msg) string {
	var sb strings.Builder
	for _, q := range m.Question {
		sb.WriteString(q.String() + "\n")
	}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			rr = dns.Copy(rr)
			rr.Header().Ttl = 0
			sb.WriteString(rr.String() + "\n")
		}
		sb.WriteString(";\n")
	}
	return sb.String()
}

// withSections adds authority and additional records to m.
func withSections(m *dns.Msg, ns, extra []string) *dns.Msg {
	for _, s := range ns {
		m.Ns = append(m.Ns, mustRR("%s", s))
	}
	for _, s := range extra {
		m.Extra = append(m.Extra, mustRR("%s", s))
	}
	return m
}
