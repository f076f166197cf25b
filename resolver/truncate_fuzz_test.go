package resolver

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// truncateSeeds are upstream answers of the shapes truncate meets: a
// positive answer with the zone's NS RRset (signed or not) beside it, an
// MX with its exchange's A RRset as additional records, a negative answer,
// a wildcard answer's NSEC, RRsets whose records are not next to each
// other, character-strings of escaped octets, and a long Extended DNS
// Error text.
func truncateSeeds(f *testing.F) {
	rr := func(format string, args ...any) dns.RR {
		r, err := dns.NewRR(fmt.Sprintf(format, args...))
		if err != nil {
			f.Fatal(err)
		}
		return r
	}
	sig := func(covered string) dns.RR {
		return rr("example.org. 300 IN RRSIG %s 13 2 300 20300101000000 20200101000000 12345 example.org. "+
			"dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdA==", covered)
	}
	add := func(m *dns.Msg, ede string) {
		if ede != "" {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: ede}}
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		for _, limit := range []uint16{0, 100, 400} {
			f.Add(b, limit, false)
			f.Add(b, limit, true)
		}
	}
	ns := func(n int) []dns.RR {
		var out []dns.RR
		for i := range n {
			out = append(out, rr("example.org. 300 IN NS %s.ns.example.org.", strings.Repeat(string(rune('a'+i)), 40)))
		}
		return out
	}

	m := question("a.example.org.", dns.TypeA, false)
	for i := range 30 {
		m.Answer = append(m.Answer, rr("a.example.org. 300 IN A 192.0.2.%d", i+1))
	}
	m.Ns = ns(3)
	add(m, "")

	m = question("mx.example.org.", dns.TypeMX, false)
	m.Answer = []dns.RR{rr("mx.example.org. 300 IN MX 10 x.example.org.")}
	m.Ns = append(ns(6), sig("NS"))
	m.Extra = []dns.RR{rr("glue.example.org. 300 IN A 192.0.2.99")}
	for i := range 30 {
		m.Extra = append(m.Extra, rr("x.example.org. 300 IN A 192.0.2.%d", i+1))
	}
	m.Extra = append(m.Extra, sig("A"))
	add(m, "")

	m = question("none.example.org.", dns.TypeA, false)
	m.Rcode = dns.RcodeNameError
	m.Ns = []dns.RR{rr("example.org. 300 IN SOA ns.example.org. host.example.org. 1 2 3 4 5"), sig("SOA")}
	for i := range 8 {
		m.Ns = append(m.Ns, rr("%c.example.org. 300 IN NSEC %c.example.org. A NS SOA MX TXT AAAA RRSIG NSEC DNSKEY", 'a'+i, 'b'+i), sig("NSEC"))
	}
	add(m, "")

	// Records of one RRset apart: the NS RRset, and the A RRset, each split
	// by another RRset.
	m = question("apart.example.org.", dns.TypeMX, false)
	m.Answer = []dns.RR{rr("apart.example.org. 300 IN MX 10 x.example.org.")}
	m.Ns = append(append(ns(3), rr("example.org. 300 IN DS 1 13 2 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")), ns(8)[3:]...)
	for i := range 20 {
		m.Extra = append(m.Extra, rr("x.example.org. 300 IN A 192.0.2.%d", i+1), rr("x.example.org. 300 IN AAAA 2001:db8::%d", i+1))
	}
	add(m, "")

	// An upstream's answer with a TSIG last, which upstreamReply keeps for
	// a client without EDNS.
	m = question("a.example.org.", dns.TypeA, false)
	for i := range 40 {
		m.Answer = append(m.Answer, rr("a.example.org. 300 IN A 192.0.2.%d", i+1))
	}
	m.Extra = []dns.RR{&dns.TSIG{Hdr: dns.RR_Header{Name: "key.example.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, TimeSigned: 1700000000, Fudge: 300, MACSize: 32, MAC: strings.Repeat("ab", 32)}}
	add(m, "")

	// Character-strings miekg/dns holds escaped (255 octets of \001 are
	// 1,020 characters), which dns.Msg.Len counts as held.
	m = question("txt.example.org.", dns.TypeTXT, false)
	for i := range 8 {
		m.Answer = append(m.Answer, rr(`txt.example.org. 300 IN TXT "%s%03d"`, strings.Repeat(`\001`, 252), i))
	}
	m.Ns = ns(2)
	m.Extra = []dns.RR{rr(`x.example.org. 300 IN HINFO "%s" "\"\\"`, strings.Repeat(`\200`, 200))}
	add(m, "")

	m = question("stale.example.org.", dns.TypeA, false)
	for i := range 10 {
		m.Answer = append(m.Answer, rr("stale.example.org. 300 IN A 192.0.2.%d", i+1))
	}
	add(m, strings.Repeat("the upstream's text ", 25))
}

// longestPacked is m with the longest run of its records (the answer
// section's first, then the authority's, then the additional's, but its
// OPT) that packs into limit octets, compressed, beside its header, its
// question and opt (when not nil, last), found by packing one run after
// another.
func longestPacked(m *dns.Msg, opt *dns.OPT, limit int) *dns.Msg {
	all := append(append(slices.Clone(m.Answer), m.Ns...), notOPT(m.Extra)...)
	ref := *m
	ref.Compress = true
	keep := func(n int) {
		ref.Answer = slices.Clone(all[:min(n, len(m.Answer))])
		ref.Ns = slices.Clone(all[min(n, len(m.Answer)):min(n, len(m.Answer)+len(m.Ns))])
		ref.Extra = slices.Clone(all[min(n, len(m.Answer)+len(m.Ns)):n])
		if opt != nil {
			c := *opt
			c.Option = slices.Clone(opt.Option)
			ref.Extra = append(ref.Extra, &c)
		}
	}
	n := 0
	for ; n < len(all); n++ {
		keep(n + 1)
		if b, err := ref.Pack(); err != nil || len(b) > limit {
			break
		}
	}
	keep(n)
	return &ref
}

// notOPT is rrs without its OPT records, in a new slice.
func notOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// FuzzTruncate fits an upstream answer, as upstreamReply makes it the
// client's, to a client's size as write does, and checks truncate against
// a reference that keeps, as miekg/dns's Truncate does, the longest run of
// records that fits, and the OPT, but measures each run packed
// (longestPacked), not by dns.Msg.Len as Truncate does, which counts an
// escaped character-string up to four times its octets and a padded
// base64 field up to 2 octets over: the answer packs into the limit; the
// OPT stays; TC
// is set exactly when an answer record, or an authority record of no NS
// RRset or of an answer without answer records, was left out (RFC 2181
// §9), and then no Extended DNS Error keeps its text (RFC 8914 §2: texts
// go before records); with TC set the records kept are Truncate's; with
// TC clear they are Truncate's but for every RRset of which a record did
// not fit, left out whole (§9: "the entire RRSet that will not fit in the response should
// be omitted"), its RRSIGs with it.
func FuzzTruncate(f *testing.F) {
	truncateSeeds(f)
	f.Fuzz(func(t *testing.T, pkt []byte, limit uint16, edns bool) {
		up := new(dns.Msg)
		if err := up.Unpack(pkt); err != nil {
			return
		}
		if _, err := up.Pack(); err != nil {
			return // not an answer an upstream could give us
		}
		req := new(dns.Msg)
		req.Question = up.Question
		if edns {
			req.SetEdns0(1232, false)
		}
		m := upstreamReply(req, up)
		m.Compress = true
		lim := dns.MinMsgSize + int(limit)%(ednsSize+1-dns.MinMsgSize)
		if b, err := m.Pack(); err != nil || len(b) <= lim {
			return // write leaves it alone
		}
		orig := *m
		orig.Answer, orig.Ns, orig.Extra = slices.Clone(m.Answer), slices.Clone(m.Ns), notOPT(m.Extra)
		var origOPT *dns.OPT
		if o := m.IsEdns0(); o != nil {
			c := *o
			c.Option = slices.Clone(o.Option)
			origOPT = &c
		}

		truncate(m, lim)

		b, err := m.Pack()
		if err != nil {
			t.Fatalf("the truncated answer does not pack: %v", err)
		}
		if len(b) > lim {
			t.Fatalf("%d octets over the limit of %d (TC %v, %d/%d/%d records)", len(b), lim, m.Truncated, len(m.Answer), len(m.Ns), len(m.Extra))
		}
		if tsig := orig.IsTsig(); tsig != nil {
			// Set aside, the rest fitted beside it: last, or left out
			// with TC set.
			if m.IsTsig() != tsig && (!m.Truncated || m.IsTsig() != nil) {
				t.Fatalf("the TSIG is neither kept last nor left out with TC set: TC %v, %v", m.Truncated, m.Extra)
			}
			return
		}
		opt := m.IsEdns0()
		if (opt != nil) != (origOPT != nil) {
			t.Fatalf("OPT %v, the answer's %v (RFC 6891 §7)", opt, origOPT)
		}
		if opt != nil && m.Extra[len(m.Extra)-1] != dns.RR(opt) {
			t.Fatal("the OPT is not the last record")
		}

		// The reference: the longest run of the answer's records that
		// packs into lim beside the OPT truncate sent (its Extended DNS
		// Errors' texts may have gone), each run packed to be measured.
		ref := longestPacked(&orig, opt, lim)
		refExtra := notOPT(ref.Extra)

		lostRequired := len(ref.Answer) < len(orig.Answer)
		for _, rr := range orig.Ns[len(ref.Ns):] {
			if len(orig.Answer) == 0 || rrsetType(rr) != dns.TypeNS {
				lostRequired = true
			}
		}
		if want := orig.Truncated || lostRequired; m.Truncated != want {
			t.Fatalf("TC %v, want %v: %d of %d answer records, %d of %d authority records fit (%v)",
				m.Truncated, want, len(ref.Answer), len(orig.Answer), len(ref.Ns), len(orig.Ns), orig.Ns[len(ref.Ns):])
		}
		if lostRequired && hasEDEText(m) {
			t.Fatalf("a required record left out (TC %v) while an Extended DNS Error kept its text: texts go first (RFC 8914 §2)", m.Truncated)
		}
		same := func(section string, got, want []dns.RR) {
			t.Helper()
			if len(got) != len(want) {
				t.Fatalf("%s: %d records kept, want %d (TC %v):\n%v\nwant\n%v", section, len(got), len(want), m.Truncated, got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s: record %d is %v, want %v", section, i, got[i], want[i])
				}
			}
		}
		same("answer", m.Answer, ref.Answer)
		if m.Truncated {
			same("authority", m.Ns, ref.Ns)
			same("additional", notOPT(m.Extra), refExtra)
			return
		}
		// TC clear: every RRset with a record that did not fit goes whole.
		whole := func(kept, all []dns.RR) []dns.RR {
			cut := map[rrsetKey]bool{}
			for _, rr := range all[len(kept):] {
				cut[keyOfRRset(rr)] = true
			}
			var out []dns.RR
			for _, rr := range kept {
				if !cut[keyOfRRset(rr)] {
					out = append(out, rr)
				}
			}
			return out
		}
		same("authority", m.Ns, whole(ref.Ns, orig.Ns))
		same("additional", notOPT(m.Extra), whole(refExtra, orig.Extra))
	})
}
