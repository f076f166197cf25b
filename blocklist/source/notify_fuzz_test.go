package source

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
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
	// Truncated (RFC 8945 §5.2.2.1): FORMERR below 16 octets, BADTRUNC
	// from 16 to 31; and one octet too many, FORMERR.
	for _, size := range []int{0, 8, 10, 15, 16, 20, 31, 33} {
		for _, at := range []time.Time{now, now.Add(-time.Hour)} {
			m := new(dns.Msg)
			if err := m.Unpack(sign(key.Secret, "xfr-key.", dns.HmacSHA256, at)); err != nil {
				f.Fatal(err)
			}
			mac := m.IsTsig().MAC + "00"
			m.IsTsig().MAC, m.IsTsig().MACSize = mac[:2*size], uint16(size)
			b, err := m.Pack()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b, true)
		}
	}
	// Other zones, signed right and wrong; BADTIME either way of now.
	for _, zone := range []string{"other.test.", "RPZ.TEST.", "sub.rpz.test."} {
		q := new(dns.Msg)
		q.SetNotify(zone)
		q.SetTsig("xfr-key.", dns.HmacSHA256, 300, now.Unix())
		b, _, err := dns.TsigGenerate(q, key.Secret, "", false)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	f.Add(sign(key.Secret, "xfr-key.", dns.HmacSHA256, now.Add(301*time.Second)), true)
	f.Add(sign(key.Secret, "xfr-key.", dns.HmacSHA256, now.Add(-299*time.Second)), false)
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
		if rt := req.IsTsig(); rt != nil && rt.Algorithm == "" {
			// A TSIG without RDATA: the handler answers FORMERR
			// itself (badTSIG) and never gives it to the Notifier,
			// whose NOTAUTH would copy its empty algorithm name into
			// a TSIG no client can read.
			return
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
		signedAnswer := got.Error != dns.RcodeBadKey && got.Error != dns.RcodeBadSig // RFC 8945 §5.3.2
		if tsig == nil && m.Rcode != dns.RcodeNotAuth || signedAnswer && strings.ToLower(got.Hdr.Name) == "xfr-key." {
			// Signed over the request's MAC as it came, truncated or
			// not (RFC 8945 §5.2.4): BADTIME and BADTRUNC too.
			if err := answerVerifies(out, key.Secret, req.IsTsig().MAC); err != nil {
				t.Fatalf("the answer (TSIG error %s) to a NOTIFY does not verify: %v", dns.RcodeToString[int(got.Error)], err)
			}
		}
		// Packed, the TSIG says what Reply set: the request's time for
		// BADKEY, BADSIG and BADTIME, the error, Other Data.
		packed := new(dns.Msg)
		if err := packed.Unpack(out); err != nil || packed.IsTsig() == nil {
			t.Fatalf("the packed answer does not unpack with its TSIG: %v", err)
		}
		pt := packed.IsTsig()
		if pt.Error != got.Error || pt.OtherLen != got.OtherLen || pt.OtherData != got.OtherData ||
			pt.Fudge != got.Fudge || pt.OrigId != got.OrigId {
			t.Fatalf("packed TSIG %v, Reply's %v", pt, got)
		}
		if signedAnswer && pt.TimeSigned != got.TimeSigned && got.Error != dns.RcodeSuccess && got.Error != dns.RcodeBadTrunc {
			t.Fatalf("packed TSIG signed at %d, Reply's at %d (error %s)", pt.TimeSigned, got.TimeSigned, dns.RcodeToString[int(got.Error)])
		}
		if !signedAnswer && (pt.TimeSigned != req.IsTsig().TimeSigned || pt.MACSize != 0) {
			t.Fatalf("unsigned TSIG %v to a request signed at %d", pt, req.IsTsig().TimeSigned)
		}
	})
}

// answerVerifies checks the MAC of an answer as RFC 8945 §4.3 makes it,
// apart from miekg/dns (whose TsigVerify refuses any NOTAUTH message, and
// writes into the octets it checks): over the request's MAC (hex, as it
// came), the answer without its TSIG, its Original ID in place of its ID,
// and the TSIG's variables, with an hmac-sha256 key of secret (base64).
func answerVerifies(out []byte, secret, reqMAC string) error {
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		return err
	}
	t := m.IsTsig()
	if t == nil {
		return errors.New("no TSIG")
	}
	rr := make([]byte, dns.Len(t)+64)
	n, err := dns.PackRR(t, rr, 0, nil, false)
	if err != nil || n > len(out) || !bytes.Equal(out[len(out)-n:], rr[:n]) {
		return fmt.Errorf("the TSIG is not the answer's last %d octets: %v", n, err)
	}
	stripped := bytes.Clone(out[:len(out)-n])
	binary.BigEndian.PutUint16(stripped, t.OrigId)
	binary.BigEndian.PutUint16(stripped[10:], binary.BigEndian.Uint16(stripped[10:])-1)
	key, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		return err
	}
	prior, err := hex.DecodeString(reqMAC)
	if err != nil {
		return err
	}
	h := hmac.New(sha256.New, key)
	_ = binary.Write(h, binary.BigEndian, uint16(len(prior)))
	h.Write(prior)
	h.Write(stripped)
	name := make([]byte, 256)
	k, _ := dns.PackDomainName(dns.CanonicalName(t.Hdr.Name), name, 0, nil, false)
	h.Write(name[:k])
	h.Write([]byte{0, dns.ClassANY, 0, 0, 0, 0})
	k, _ = dns.PackDomainName(dns.CanonicalName(t.Algorithm), name, 0, nil, false)
	h.Write(name[:k])
	var vars [8]byte
	binary.BigEndian.PutUint64(vars[:], t.TimeSigned<<16|uint64(t.Fudge))
	h.Write(vars[:])
	other, err := hex.DecodeString(t.OtherData)
	if err != nil {
		return err
	}
	_ = binary.Write(h, binary.BigEndian, [2]uint16{t.Error, uint16(len(other))})
	h.Write(other)
	if got, err := hex.DecodeString(t.MAC); err != nil || !hmac.Equal(got, h.Sum(nil)) {
		return errors.New("wrong MAC")
	}
	return nil
}
