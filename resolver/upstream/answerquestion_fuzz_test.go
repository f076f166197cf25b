package upstream

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// foldedWire is the name n in wire form, uncompressed, with ASCII letters
// lowercased (RFC 4343: only those compare without regard to case), or
// nil when n does not pack.
func foldedWire(n string) []byte {
	b := make([]byte, 256)
	end, err := dns.PackDomainName(n, b, 0, nil, false)
	if err != nil {
		return nil
	}
	b = b[:end]
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

// FuzzAnswerQuestion feeds any answer raw to the checks a fixed query q
// goes through, over every path: UDP in wire form (checkUDPWire, the
// datagram's own checks or checkAsMessage's), UDP as a message
// (UnpackAnswer then checkDatagram, or checkUnread for a record miekg/dns
// does not read) and TCP as a message (checkAnswer, or checkUnread). An
// answer taken is a response with q's ID and opcode whose one question,
// read here from its octets on its own, is q's (the name equal without
// regard to ASCII case, RFC 4343; RFC 5452 §9.1); but over TCP a failure
// RCODE without a question section is taken (checkAnswer), and over UDP
// it never is (checkDatagram: asked again over TCP).
func FuzzAnswerQuestion(f *testing.F) {
	q := question("www.example.org.", dns.TypeA, true)
	q.Id = 0x1234
	qb := packed(q)
	for _, m := range []*dns.Msg{defaultAnswer(nil, q), liedAnswer(q), rcodeAnswer(dns.RcodeServerFailure)(nil, q)} {
		f.Add(packed(m))
		m.Question = nil
		f.Add(packed(m))
	}
	upper := defaultAnswer(nil, q)
	upper.Question[0].Name = "WWW.Example.ORG."
	f.Add(packed(upper))
	other := defaultAnswer(nil, q)
	other.Question[0].Name = "www.example.net."
	f.Add(packed(other))
	f.Add(unreadHintAnswer(f, q))
	// Two questions, the first q's, the second followed by what reads as
	// the rest of a record: read as one question and records, the answer
	// reads through (dnswire.Walk), but no client reads it so.
	two := []byte{0x12, 0x34, 0x81, 0x80, 0, 2, 0, 0, 0, 0, 0, 1}
	two = append(two, qb[dnswire.HeaderLen:dnswire.HeaderLen+len(foldedWire(q.Question[0].Name))+4]...)
	two = append(two, 6, 't', 'i', 'k', 't', 'o', 'k', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1)
	two = append(two, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	f.Add(two)
	f.Add([]byte{0x12, 0x34, 0x81, 0x82, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x12, 0x34, 0x81, 0x82, 0, 1, 0, 0, 0, 0, 0, 0})

	qname := foldedWire(q.Question[0].Name)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > upstreamBuf {
			return
		}
		// questionIs reports whether raw, read on its own, is a
		// response to q's one question.
		questionIs := func() bool {
			if len(raw) < dnswire.HeaderLen || dnswire.Flags(raw)&dnswire.FlagQR == 0 || dnswire.ID(raw) != q.Id ||
				dnswire.Opcode(dnswire.Flags(raw)) != q.Opcode || dnswire.QDCount(raw) != 1 {
				return false
			}
			name, off, err := dns.UnpackDomainName(raw, dnswire.HeaderLen)
			if err != nil || off+4 > len(raw) {
				return false
			}
			w := foldedWire(name)
			return w != nil && string(w) == string(qname) &&
				binary.BigEndian.Uint16(raw[off:]) == q.Question[0].Qtype && binary.BigEndian.Uint16(raw[off+2:]) == q.Question[0].Qclass
		}
		questionless := func(m *dns.Msg) bool {
			return m != nil && len(m.Question) == 0 && failureRcode(m.Rcode)
		}

		// UDP, wire form: a datagram without a whole header is
		// answeredWire's ErrAnswerMalformed before it is checked.
		wq := append([]byte(nil), qb...)
		var a WireAnswer
		var err error
		overTCP := false
		if len(raw) < dnswire.HeaderLen {
			err = ErrAnswerMalformed
		} else {
			a, err, overTCP = checkUDPWire(append([]byte(nil), raw...), wq, nil)
		}
		if err == nil && !overTCP {
			if !questionIs() {
				t.Fatalf("UDP wire path took an answer to another question (message %v): % x", a.Msg, raw)
			}
		} else if err != nil && !errors.Is(err, ErrAnswerUnusable) {
			t.Fatalf("UDP wire path: error of no kind: %v", err)
		}

		// As a message, UDP and TCP.
		for _, tcp := range []bool{false, true} {
			b := append([]byte(nil), raw...)
			if len(b) < dnswire.HeaderLen {
				continue
			}
			resp, err := UnpackAnswer(b)
			if err != nil {
				err = checkUnread(err, q.Id, q)
				var rd *RdataError
				if errors.As(err, &rd) {
					err = nil // taken as the zone's data (Plain.exchange)
				}
			} else if tcp {
				err = checkAnswer(resp, q)
			} else {
				err = checkDatagram(resp, q)
			}
			if err != nil {
				if !errors.Is(err, ErrAnswerUnusable) {
					t.Fatalf("tcp %v: error of no kind: %v", tcp, err)
				}
				continue
			}
			if tcp && questionless(resp) && dnswire.ID(raw) == q.Id && dnswire.Flags(raw)&dnswire.FlagQR != 0 {
				continue
			}
			if !questionIs() {
				t.Fatalf("tcp %v: took an answer to another question %v: % x", tcp, resp, raw)
			}
		}
	})
}
