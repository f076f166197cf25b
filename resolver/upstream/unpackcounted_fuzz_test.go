package upstream

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// countedExactly reports whether miekg/dns unpacks b with exactly the
// questions and records its header counts, each question whole: miekg/dns
// reads a last question that ends after its name or QTYPE as one (QCLASS
// or both 0), so the questions are walked here too, with miekg/dns's own
// name reader (dns.UnpackDomainName).
func countedExactly(b []byte) bool {
	m := new(dns.Msg)
	if m.Unpack(b) != nil {
		return false
	}
	if len(m.Question) != int(dnswire.QDCount(b)) || len(m.Answer) != int(dnswire.ANCount(b)) ||
		len(m.Ns) != int(dnswire.NSCount(b)) || len(m.Extra) != int(dnswire.ARCount(b)) {
		return false
	}
	_, ok := questionsEnd(b)
	return ok
}

// questionsEnd is the offset after the question section of b, read with
// dns.UnpackDomainName; ok is false when b ends before the last question's
// QTYPE and QCLASS do, or a name does not read.
func questionsEnd(b []byte) (off int, ok bool) {
	off = dnswire.HeaderLen
	for range dnswire.QDCount(b) {
		_, end, err := dns.UnpackDomainName(b, off)
		if err != nil || end+4 > len(b) {
			return 0, false
		}
		off = end + 4
	}
	return off, true
}

// headerOnlyWire is the message headerOnly hands to unpackMsg for raw, as
// its doc says it: raw's header with no answer or authority record, its
// one question (uncompressed: dnswire.ReadQuestion) and, when raw's first
// OPT is whole, that OPT owned by the root; nil when raw has no whole
// question. Written here from the doc, not from the code, for
// FuzzUnpackCounted to check that unpackMsg reads it without calling
// headerOnly again.
func headerOnlyWire(raw []byte) []byte {
	q, ok := dnswire.ReadQuestion(raw)
	if !ok {
		return nil
	}
	b := slices.Clone(raw[:q.End])
	binary.BigEndian.PutUint16(b[6:], 0)
	binary.BigEndian.PutUint16(b[8:], 0)
	binary.BigEndian.PutUint16(b[10:], 0)
	if off, ok := dnswire.FindOPT(raw); ok {
		if end := off + 10 + int(binary.BigEndian.Uint16(raw[off+8:])); end <= len(raw) {
			b = append(append(b, 0), raw[off:end]...)
			binary.BigEndian.PutUint16(b[10:], 1)
		}
	}
	return b
}

// FuzzUnpackCounted holds unpackMsg, and so UnpackAnswer, to miekg/dns on
// any message b with a whole header: an answer is taken only when
// miekg/dns reads b, or its copy without the options dnsfence does not
// read (dnswire.WithoutOptions), with exactly the questions and records
// its header counts (RFC 1035 §4.1.1); or b is a header alone (read with
// no question or record); or b has TC set and one whole question, read
// then as that question and an OPT at most, without the records it cut.
// An answer refused as cut short (errRecordsCut) is one miekg/dns does not
// read whole. headerOnly, on any b, never panics, hands unpackMsg a
// message whose records are whole, so that it never calls itself through
// unpackMsg more than once, and reads b's one question (QDCOUNT 1) and an
// OPT at most.
func FuzzUnpackCounted(f *testing.F) {
	q := question("www.example.org.", dns.TypeA, true)
	q.Id = 0x1234
	whole := packed(defaultAnswer(nil, q))
	f.Add(whole)
	f.Add(whole[:dnswire.HeaderLen]) // a header alone, its counts kept
	f.Add(whole[:len(whole)-1])      // the OPT cut short
	qEnd := dnswire.HeaderLen + len("\x03www\x07example\x03org\x00") + 4
	f.Add(whole[:qEnd])   // an A record and an OPT counted, not held
	f.Add(whole[:qEnd-2]) // the question cut after its QTYPE
	f.Add(whole[:qEnd-4]) // the question cut after its name
	tc := slices.Clone(whole)
	tc[2] |= dnswire.FlagTC >> 8
	f.Add(tc[:qEnd])   // truncated: the question alone, records counted
	f.Add(tc[:qEnd+3]) // truncated: a record begun
	f.Add(tc[:qEnd-2]) // truncated, the question itself cut
	// Truncated and cut after its OPT: an A record counted after it
	// (the OPT first of the additional section, then the A).
	m := defaultAnswer(nil, q)
	m.Truncated = true
	m.Answer = nil
	m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "www.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}})
	tcOPT := packed(m)
	f.Add(tcOPT[:len(tcOPT)-4])
	// An EXPIRE option of 3 octets, which miekg/dns refuses and dnsfence
	// does not read (answerOption): whole once without it.
	e := defaultAnswer(nil, q)
	e.SetEdns0(1232, false)
	e.IsEdns0().Option = append(e.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0EXPIRE, Data: []byte{0, 0, 1}})
	f.Add(packed(e))
	f.Add(unreadHintAnswer(f, q))
	f.Add([]byte{0x12, 0x34, 0x83, 0x80, 0, 2, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0, 1}) // TC, two questions counted, one held

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < dnswire.HeaderLen || len(b) > dns.MaxMsgSize {
			return
		}
		in := slices.Clone(b)
		exact := countedExactly(b)
		if !exact {
			if rest, ok := dnswire.WithoutOptions(b, answerOption); ok {
				exact = countedExactly(rest)
			}
		}
		tcOneQuestion := false
		if _, ok := questionsEnd(b); ok && dnswire.Flags(b)&dnswire.FlagTC != 0 && dnswire.QDCount(b) == 1 {
			tcOneQuestion = true
		}

		m, err := unpackMsg(b)
		if !slices.Equal(b, in) {
			t.Fatalf("unpackMsg wrote into its input: % x, was % x", b, in)
		}
		switch {
		case err != nil:
			if errors.Is(err, errRecordsCut) && exact {
				t.Fatalf("refused as cut short a message miekg/dns reads whole (%v): % x", err, b)
			}
		case len(b) == dnswire.HeaderLen:
			if len(m.Question)+len(m.Answer)+len(m.Ns)+len(m.Extra) != 0 {
				t.Fatalf("a header alone read with questions or records %v: % x", m, b)
			}
		case exact:
			if len(m.Question) != int(dnswire.QDCount(b)) || len(m.Answer) != int(dnswire.ANCount(b)) ||
				len(m.Ns) != int(dnswire.NSCount(b)) || len(m.Extra) != int(dnswire.ARCount(b)) {
				t.Fatalf("read with other counts than its header's %v: % x", m, b)
			}
		case tcOneQuestion:
			if len(m.Answer) != 0 || len(m.Ns) != 0 || len(m.Question) != 1 {
				t.Fatalf("a truncated answer cut short read with answer or authority records, or not its question %v: % x", m, b)
			}
			name, off, _ := dns.UnpackDomainName(b, dnswire.HeaderLen)
			if m.Question[0].Name != name || m.Question[0].Qtype != binary.BigEndian.Uint16(b[off:]) ||
				m.Question[0].Qclass != binary.BigEndian.Uint16(b[off+2:]) {
				t.Fatalf("a truncated answer cut short read with another question %v: % x", m, b)
			}
			for _, rr := range m.Extra {
				if rr.Header().Rrtype != dns.TypeOPT || len(m.Extra) > 1 {
					t.Fatalf("a truncated answer cut short read with records but one OPT %v: % x", m, b)
				}
			}
			if !m.Truncated {
				t.Fatalf("a truncated answer cut short read without TC %v: % x", m, b)
			}
		default:
			t.Fatalf("took a message miekg/dns does not read whole, neither a header alone nor truncated with one whole question %v: % x", m, b)
		}

		// headerOnly: no panic, and what it hands unpackMsg is whole, or
		// not one unpackMsg reads through headerOnly (TC and one
		// question): no second call.
		h := headerOnly(b)
		if !slices.Equal(b, in) {
			t.Fatalf("headerOnly wrote into its input: % x, was % x", b, in)
		}
		inner := headerOnlyWire(b)
		if inner == nil {
			if h != nil {
				t.Fatalf("headerOnly read a message without a whole question %v: % x", h, b)
			}
			return
		}
		if len(inner) > dnswire.HeaderLen && !dnswire.RecordsWhole(inner) &&
			dnswire.Flags(inner)&dnswire.FlagTC != 0 && dnswire.QDCount(inner) == 1 {
			t.Fatalf("headerOnly would call itself again on % x, of % x", inner, b)
		}
		if h == nil {
			return
		}
		if len(h.Answer) != 0 || len(h.Ns) != 0 || len(h.Extra) > 1 || len(h.Extra) == 1 && h.Extra[0].Header().Rrtype != dns.TypeOPT {
			t.Fatalf("headerOnly read records but one OPT %v: % x", h, b)
		}
		rq, _ := dnswire.ReadQuestion(b)
		name, _, _ := dns.UnpackDomainName(b, dnswire.HeaderLen)
		if dnswire.QDCount(b) != 1 || len(h.Question) != 1 || h.Question[0].Name != name ||
			h.Question[0].Qtype != rq.Type || h.Question[0].Qclass != rq.Class {
			t.Fatalf("headerOnly read other than the one question of a message of QDCOUNT 1 %v: % x", h, b)
		}
	})
}
