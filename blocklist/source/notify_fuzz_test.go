package source

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzNotifyTSIG sends any message, as the octets that came, to a
// Notifier whose one zone has a TSIG key, from the primary's address or
// another, as the resolver's handler does (Verify, Reply, Pack), and
// checks: nothing panics; a message that is no NOTIFY request gets no
// answer; the answer to a signed NOTIFY ends in a TSIG of the same key
// name, but the FORMERR to one whose MAC is of a length RFC 8945
// §5.2.2.1 rules out for the key; a signed NOTIFY that does not verify is answered NOTAUTH and not
// acted on; a NOTIFY is acted on only from the primary's address, and
// then answered NOERROR; the answer to one that verified is signed over
// its MAC with the key, so that the primary takes it; Pack never fails on
// an answer Reply built.
func FuzzNotifyTSIG(f *testing.F) {
	key := newKey(f, "xfr-key.")
	z, err := NewZone("axfr://127.0.0.1:5300/rpz.test", Options{TSIG: key})
	if err != nil {
		f.Fatal(err)
	}
	n := NewNotifier([]Source{z})
	sign := func(secret, name, alg string, at time.Time) []byte {
		q := new(dns.Msg)
		q.SetNotify("rpz.test.")
		q.SetEdns0(1232, false)
		q.SetTsig(name, alg, 300, at.Unix())
		b, _, err := dns.TsigGenerate(q, secret, "", false)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	now := time.Now()
	f.Add(sign(key.Secret, "xfr-key.", dns.HmacSHA256, now), true)
	f.Add(sign(key.Secret, "XFR-KEY.", dns.HmacSHA256, now), false)
	f.Add(sign(newKey(f, "x.").Secret, "xfr-key.", dns.HmacSHA256, now), true)
	f.Add(sign(key.Secret, "other.", dns.HmacSHA256, now), true)
	f.Add(sign(key.Secret, "xfr-key.", dns.HmacSHA1, now), true)
	f.Add(sign(key.Secret, "xfr-key.", dns.HmacSHA256, now.Add(-time.Hour)), true)
	for _, size := range []int{0, 8, 16} { // truncated (RFC 8945 §5.2.2.1)
		m := new(dns.Msg)
		if err := m.Unpack(sign(key.Secret, "xfr-key.", dns.HmacSHA256, now)); err != nil {
			f.Fatal(err)
		}
		m.IsTsig().MAC, m.IsTsig().MACSize = m.IsTsig().MAC[:2*size], uint16(size)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	unsigned := new(dns.Msg)
	unsigned.SetNotify("rpz.test.")
	b, _ := unsigned.Pack()
	f.Add(b, true)

	primary, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	f.Fuzz(func(t *testing.T, wire []byte, fromPrimary bool) {
		req := new(dns.Msg)
		if req.Unpack(wire) != nil {
			return
		}
		from := other
		if fromPrimary {
			from = primary
		}
		select { // a wake-up an earlier input left
		case <-z.notify:
		default:
		}
		var tsig error
		signed := req.IsTsig() != nil
		if signed {
			kept := string(wire)
			tsig = n.Verify(req, wire)
			if string(wire) != kept {
				t.Fatal("Verify wrote into the octets it was given")
			}
		}
		before := z.Status().NotifiesAccepted
		m := n.Reply(from, req, tsig)
		if req.Opcode != dns.OpcodeNotify || req.Response {
			if m != nil {
				t.Fatalf("an answer to opcode %d, QR %v", req.Opcode, req.Response)
			}
			return
		}
		acted := z.Status().NotifiesAccepted != before
		if acted != (len(z.notify) == 1) {
			t.Fatalf("counted accepted %v, woke the source %v", acted, len(z.notify) == 1)
		}
		if acted && (from != primary || m.Rcode != dns.RcodeSuccess || signed && tsig != nil) {
			t.Fatalf("acted on from %s, rcode %s, signed %v, check %v", from, dns.RcodeToString[m.Rcode], signed, tsig)
		}
		if !signed {
			return
		}
		if rt := req.IsTsig(); m.Rcode == dns.RcodeFormatError {
			// Only for a MAC of the key, name and algorithm, whose
			// length is outside 16 to 32 octets (RFC 8945 §5.2.2.1 for
			// hmac-sha256): the message is dropped, FORMERR unsigned.
			if strings.ToLower(rt.Hdr.Name) != "xfr-key." || dns.CanonicalName(rt.Algorithm) != dns.HmacSHA256 ||
				rt.MACSize >= 16 && rt.MACSize <= 32 || m.IsTsig() != nil {
				t.Fatalf("FORMERR for a MAC of %d octets of key %s, %s, answer signed %v", rt.MACSize, rt.Hdr.Name, rt.Algorithm, m.IsTsig() != nil)
			}
			return
		}
		got := m.IsTsig()
		if got == nil || got.Hdr.Name != req.IsTsig().Hdr.Name {
			t.Fatalf("the answer to a signed NOTIFY ends in %v", got)
		}
		if tsig != nil && m.Rcode != dns.RcodeNotAuth {
			t.Fatalf("a TSIG that did not verify (%v) answered %s", tsig, dns.RcodeToString[m.Rcode])
		}
		out, err := n.Pack(m, req)
		if err != nil {
			t.Fatalf("packing the answer: %v", err)
		}
		if tsig == nil && m.Rcode != dns.RcodeNotAuth {
			if err := dns.TsigVerify(out, key.Secret, req.IsTsig().MAC, false); err != nil {
				t.Fatalf("the answer to a verified NOTIFY does not verify: %v", err)
			}
		}
	})
}
