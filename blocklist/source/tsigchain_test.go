package source

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sparsePrimary answers an AXFR in many messages, signing only those
// signed says (RFC 8945 §5.3.1: the first and the last, and at least every
// hundredth, as NSD's older versions and Microsoft DNS sign): each signed
// message after the first covers, after the MAC before it, the unsigned
// messages in between, as received.
type sparsePrimary struct {
	key     *TSIG
	zone    string
	records []dns.RR // every record but the SOA
	// signed reports whether message i (from 0) of n is signed.
	signed func(i, n int) bool
	// tamper, when >= 0, is a message sent with a record other than the
	// one its signature covers.
	tamper int
}

func (p *sparsePrimary) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	ts := q.IsTsig()
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if ts == nil || w.TsigStatus() != nil {
		m.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(m)
		return
	}
	soa := testSOA(p.zone, 1)
	if q.Question[0].Qtype == dns.TypeSOA {
		m.Answer = []dns.RR{soa}
		m.SetTsig(ts.Hdr.Name, ts.Algorithm, 300, time.Now().Unix())
		_ = w.WriteMsg(m)
		return
	}
	all := append(append([]dns.RR{soa}, p.records...), soa)
	var chunks [][]dns.RR
	for i := 0; i < len(all); i += 10 {
		chunks = append(chunks, all[i:min(i+10, len(all))])
	}
	secret, _ := base64.StdEncoding.DecodeString(p.key.Secret)
	mac := ts.MAC
	var unsigned []byte // the messages since the last signed one
	for i, rrs := range chunks {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Authoritative = true
		r.Answer = rrs
		if i > 0 {
			r.Question = nil
		}
		if i == 0 {
			r.SetTsig(ts.Hdr.Name, ts.Algorithm, 300, time.Now().Unix())
			wire, first, err := dns.TsigGenerate(r, p.key.Secret, mac, false)
			if err != nil {
				return
			}
			mac = first
			_, _ = w.Write(wire)
			continue
		}
		wire, err := r.Pack()
		if err != nil {
			return
		}
		if !p.signed(i, len(chunks)) {
			unsigned = append(unsigned, wire...)
			if i == p.tamper {
				r.Answer = append([]dns.RR{cname(p.zone, "forged")}, rrs[1:]...)
				wire, _ = r.Pack()
			}
			_, _ = w.Write(wire)
			continue
		}
		// RFC 8945 §4.3.1 and §5.3.1: the MAC before, the unsigned
		// messages, this one, and its timers alone.
		now := uint64(time.Now().Unix())
		prior, _ := hex.DecodeString(mac)
		sum := chainMAC(secret, prior, unsigned, wire, now, false)
		sig := &dns.TSIG{Hdr: dns.RR_Header{Name: ts.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: ts.Algorithm, TimeSigned: now, Fudge: chainFudge, MACSize: uint16(len(sum)), MAC: hex.EncodeToString(sum), OrigId: r.Id}
		buf := make([]byte, 512)
		n, err := dns.PackRR(sig, buf, 0, nil, false)
		if err != nil {
			return
		}
		wire = append(wire, buf[:n]...)
		binary.BigEndian.PutUint16(wire[10:], binary.BigEndian.Uint16(wire[10:])+1) // ARCOUNT
		_, _ = w.Write(wire)
		mac, unsigned = sig.MAC, nil
	}
}

// TestZoneTSIGUnsignedMessages: a primary may sign only some messages of a
// transfer, the first and the last among them (RFC 8945 §5.3.1: a client
// MUST accept up to 99 in a row without a TSIG; BIND takes 100); the
// signed one after them covers them, so one changed on the way fails, as
// do 101 unsigned in a row and an unsigned last message. dnsfence took
// every unsigned message for a TSIG failure: such a primary's zone never
// arrived.
func TestZoneTSIGUnsignedMessages(t *testing.T) {
	key := newKey(t, "xfr-key.")
	names := make([]string, 2500) // 251 messages of 10 records
	for i := range names {
		names[i] = fmt.Sprintf("name%d.example", i)
	}
	for _, tc := range []struct {
		name   string
		signed func(i, n int) bool
		tamper int
		want   string // "": transfers
	}{
		{name: "every message signed", signed: func(i, n int) bool { return true }},
		{name: "every 100th signed, and the last", signed: func(i, n int) bool { return i%100 == 0 || i == n-1 }},
		{name: "the first and the last signed, 99 between",
			signed: func(i, n int) bool { return i == 0 || i >= 100 }},
		{name: "100 in a row unsigned, as BIND takes them", signed: func(i, n int) bool { return i == 0 || i > 100 }},
		{name: "101 in a row unsigned", signed: func(i, n int) bool { return i == 0 || i > 101 },
			want: "more than 100 messages in a row not signed"},
		{name: "the last unsigned", signed: func(i, n int) bool { return i%50 == 0 && i != n-1 },
			want: "the last message is not signed"},
		{name: "the last alone unsigned", signed: func(i, n int) bool { return i != n-1 },
			want: "the last message is not signed"},
		{name: "an unsigned message changed on the way", signed: func(i, n int) bool { return i%100 == 0 || i == n-1 },
			tamper: 42, want: "answer does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tamper == 0 {
				tc.tamper = -1
			}
			p := &sparsePrimary{key: key, zone: testZone, records: cnames(testZone, names...), signed: tc.signed, tamper: tc.tamper}
			pc, l := listenBoth(t)
			secrets := map[string]string{key.Name: key.Secret}
			testnet.Serve(t,
				&dns.Server{PacketConn: pc, Handler: p, TsigSecret: secrets},
				&dns.Server{Listener: l, Handler: p, TsigSecret: secrets, ReadTimeout: 5 * time.Second})
			z, err := NewZone("axfr://"+l.Addr().String()+"/rpz.test", zoneTestOptions(t, key))
			require.NoError(t, err)
			rec := run(t, z)
			if tc.want == "" {
				c := rec.waitCount(t, 1)
				assert.Len(t, owners(c), len(names))
				assert.NoError(t, z.Status().LastError)
				return
			}
			st := waitError(t, z, ErrTSIG)
			assert.ErrorContains(t, st.LastError, tc.want)
			assert.False(t, st.HasContent)
			assert.Zero(t, rec.count(), "nothing delivered")
		})
	}
}
