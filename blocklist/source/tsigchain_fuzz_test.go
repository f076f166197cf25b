package source

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// chainMsg is one message of a transfer as a fuzzed primary sends it: the
// message without its TSIG (body, with its ID and counts as sent), and,
// when signed, its TSIG's fields and the TSIG record's octets.
type chainMsg struct {
	body    []byte
	signed  bool
	mac     []byte
	time    uint64
	tsigRR  []byte
	flipped bool // an octet changed after signing
}

// wire is the message as sent: the body and the TSIG, ARCOUNT counting it.
func (m chainMsg) wire() []byte {
	b := bytes.Clone(m.body)
	if m.signed {
		b = append(b, m.tsigRR...)
		binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
	}
	return b
}

const (
	chainKeyName = "chain-key."
	chainZone    = "chain.test."
	chainFudge   = 300
)

// chainMAC is the MAC of RFC 8945 §4.3: of the first message of an
// answer (full) over the request's MAC, the message and all the TSIG
// variables; of a later one over the MAC before it, the unsigned messages
// since (§5.3.1, as received), the message and the timers alone.
func chainMAC(secret, prior, unsigned, body []byte, t uint64, full bool) []byte {
	h := hmac.New(sha256.New, secret)
	_ = binary.Write(h, binary.BigEndian, uint16(len(prior)))
	h.Write(prior)
	h.Write(unsigned)
	h.Write(body)
	var timers [8]byte
	binary.BigEndian.PutUint64(timers[:], t<<16|chainFudge)
	if full {
		name, _ := hex.DecodeString("09636861696e2d6b657900") // chain-key.
		h.Write(name)
		h.Write([]byte{0, 255, 0, 0, 0, 0})                      // CLASS ANY, TTL 0
		alg, _ := hex.DecodeString("0b686d61632d73686132353600") // hmac-sha256.
		h.Write(alg)
		h.Write(timers[:])
		h.Write([]byte{0, 0, 0, 0}) // error, other length
		return h.Sum(nil)
	}
	h.Write(timers[:])
	return h.Sum(nil)
}

// sign gives m a TSIG of mac and t.
func (m *chainMsg) sign(mac []byte, t uint64) {
	m.signed, m.mac, m.time = true, mac, t
	sig := &dns.TSIG{Hdr: dns.RR_Header{Name: chainKeyName, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, TimeSigned: t, Fudge: chainFudge, MACSize: uint16(len(mac)),
		MAC: hex.EncodeToString(mac), OrigId: binary.BigEndian.Uint16(m.body)}
	buf := make([]byte, 512)
	n, _ := dns.PackRR(sig, buf, 0, nil, false)
	m.tsigRR = buf[:n]
}

// chainPlan says how the fuzzed primary answers: which messages it signs
// (runs), and what happens to them after signing.
type chainPlan struct {
	runs     []byte // each: 1+b&0x7f messages, signed when the top bit is clear
	shift    int16  // seconds off the time of message shiftAt
	shiftAt  int
	swapA    int // two messages (not the first, nor the last) sent in each other's place
	swapB    int
	drop     int // a message (not the first, nor the last) not sent; -1: none
	flipAt   int // a message with an octet changed after signing; -1: none
	flipOff  int
	flipMask byte
}

// refChainAccepts is RFC 8945 §5.3.1 for the messages as received (no
// octet changed): the first signed over the request's MAC, each later
// signed one over the MAC before it and the unsigned messages between, as
// received, at most 100 unsigned in a row (BIND's count), the last signed,
// and each time within the fudge of now.
func refChainAccepts(secret, reqMAC []byte, msgs []chainMsg, now uint64) (bool, string) {
	prior, unsigned, count := reqMAC, []byte(nil), 0
	for i, m := range msgs {
		if !m.signed {
			if i == 0 {
				return false, "the first unsigned"
			}
			if count++; count > maxUnsigned {
				return false, "too many unsigned in a row"
			}
			unsigned = append(unsigned, m.body...)
			continue
		}
		if want := chainMAC(secret, prior, unsigned, m.body, m.time, i == 0); !hmac.Equal(want, m.mac) {
			return false, fmt.Sprintf("message %d does not verify", i)
		}
		if d := int64(now) - int64(m.time); d > chainFudge || -d > chainFudge {
			return false, fmt.Sprintf("message %d: time off by %d s", i, d)
		}
		prior, unsigned, count = m.mac, nil, 0
	}
	if count > 0 {
		return false, "the last unsigned"
	}
	return true, ""
}

// chainPrimary serves one AXFR a connection as its plan says, keeping
// what it sent for the reference.
type chainPrimary struct {
	secret []byte
	plan   chainPlan
	reqMAC []byte
	sent   []chainMsg
	done   chan struct{}
}

func (p *chainPrimary) serve(c net.Conn) {
	defer close(p.done)
	defer c.Close()
	dc := &dns.Conn{Conn: c}
	buf := make([]byte, dns.MaxMsgSize)
	n, err := dc.Read(buf)
	q := new(dns.Msg)
	if err != nil || q.Unpack(buf[:n]) != nil || q.IsTsig() == nil || len(q.Question) != 1 {
		return
	}
	p.reqMAC, _ = hex.DecodeString(q.IsTsig().MAC)
	var signed []bool
	for _, b := range p.plan.runs {
		for range 1 + int(b&0x7f) {
			signed = append(signed, b&0x80 == 0)
		}
	}
	signed = signed[:min(len(signed), 300)]
	if len(signed) == 0 {
		signed = []bool{true}
	}
	n = len(signed)
	soa := testSOA(chainZone, 7)
	now := uint64(time.Now().Unix())
	msgs := make([]chainMsg, n)
	prior, unsigned := p.reqMAC, []byte(nil)
	for i := range msgs {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Authoritative = true
		if i > 0 {
			r.Question = nil
		}
		if i == 0 {
			r.Answer = append(r.Answer, soa)
		}
		r.Answer = append(r.Answer, cname(chainZone, fmt.Sprintf("n%d", i)))
		if i == n-1 {
			r.Answer = append(r.Answer, soa)
		}
		body, err := r.Pack()
		if err != nil {
			return
		}
		msgs[i].body = body
		if !signed[i] {
			unsigned = append(unsigned, body...)
			continue
		}
		t := now
		if i == p.plan.shiftAt {
			t = uint64(int64(now) + int64(p.plan.shift))
		}
		msgs[i].sign(chainMAC(p.secret, prior, unsigned, body, t, i == 0), t)
		prior, unsigned = msgs[i].mac, nil
	}
	if a, b := p.plan.swapA, p.plan.swapB; a > 0 && b > 0 && a < n-1 && b < n-1 {
		msgs[a], msgs[b] = msgs[b], msgs[a]
	}
	if d := p.plan.drop; d > 0 && d < n-1 {
		msgs = append(msgs[:d], msgs[d+1:]...)
	}
	out := make([][]byte, len(msgs))
	for i := range msgs {
		out[i] = msgs[i].wire()
		if i == p.plan.flipAt && p.plan.flipMask != 0 {
			// An octet of the message before its TSIG, or of its MAC:
			// the TSIG's names are read without regard to case (RFC
			// 8945 §4.3.3: in canonical form), so a flip of their case
			// changes nothing.
			off := p.plan.flipOff % (len(msgs[i].body) + len(msgs[i].mac))
			if off >= len(msgs[i].body) {
				off += len(msgs[i].tsigRR) - len(msgs[i].mac) - 6 // the MAC, before Original ID, Error, Other Len
			}
			out[i][off] ^= p.plan.flipMask
			msgs[i].flipped = true
		}
	}
	p.sent = msgs
	for _, b := range out {
		if _, err := dc.Write(b); err != nil {
			return
		}
	}
	// Done: the client reads the end of the stream after the last
	// message, and closes.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = c.Read(make([]byte, 1))
}

// FuzzZoneTSIGChain: a zone transfer of any number of messages, signed
// or not as the input says, some in each other's place, one dropped, one
// signed at another time, one with an octet changed after signing, is
// taken iff RFC 8945 §5.3.1 (refChainAccepts) takes it; the error of one
// refused for its signatures alone is ErrTSIG; nothing panics.
func FuzzZoneTSIGChain(f *testing.F) {
	f.Add([]byte{0}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))                        // one message
	f.Add([]byte{9}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))                        // ten signed
	f.Add([]byte{0, 0x80 | 98, 0}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))          // 99 unsigned between
	f.Add([]byte{0, 0x80 | 99, 0}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))          // 100 unsigned
	f.Add([]byte{0, 0x80 | 100, 0}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))         // 101 unsigned
	f.Add([]byte{0, 0x80 | 5}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))              // the last unsigned
	f.Add([]byte{0x80, 3}, int16(0), 0, 0, 0, -1, -1, 0, byte(0))                  // the first unsigned
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(0), 0, 2, 3, -1, -1, 0, byte(0))      // two unsigned swapped
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(0), 0, 0, 0, 3, -1, 0, byte(0))       // an unsigned one dropped
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(0), 0, 0, 0, 5, -1, 0, byte(0))       // a signed one dropped
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(400), 5, 0, 0, -1, -1, 0, byte(0))    // BADTIME
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(-200), 9, 0, 0, -1, -1, 0, byte(0))   // within the fudge
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(0), 0, 0, 0, -1, 3, 40, byte(0x20))   // an unsigned one changed
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(0), 0, 0, 0, -1, 5, 1000, byte(0x01)) // a signed one changed
	f.Add([]byte{0, 0x83, 0, 0x83, 0}, int16(0), 0, 0, 0, -1, 0, 1, byte(0x01))    // the first's ID
	f.Add([]byte{0x7f, 0x7f, 0x80 | 50, 0}, int16(0), 0, 0, 0, -1, -1, 0, byte(0)) // long

	secret := bytes.Repeat([]byte{0x5a}, 32)
	key := &TSIG{Name: chainKeyName, Algorithm: dns.HmacSHA256, Secret: base64.StdEncoding.EncodeToString(secret)}
	l, err := net.Listen("tcp", "127.0.52.28:0")
	if err != nil {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { l.Close() })
	conns := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			conns <- c
		}
	}()
	client := &xfrClient{zone: chainZone, tsig: key, timeout: 2 * time.Second, maxBytes: 64 << 20}

	f.Fuzz(func(t *testing.T, runs []byte, shift int16, shiftAt, swapA, swapB, drop, flipAt, flipOff int, flipMask byte) {
		if len(runs) > 16 || flipOff < 0 {
			return
		}
		p := &chainPrimary{secret: secret, done: make(chan struct{}),
			plan: chainPlan{runs: runs, shift: shift, shiftAt: shiftAt, swapA: swapA, swapB: swapB, drop: drop,
				flipAt: flipAt, flipOff: flipOff, flipMask: flipMask}}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		served := make(chan struct{})
		go func() {
			defer close(served)
			select {
			case c, ok := <-conns:
				if ok {
					p.serve(c)
				}
			case <-ctx.Done():
			}
		}()
		res, err := client.transfer(ctx, l.Addr().String(), nil, nil)
		cancel()
		<-served
		if p.sent == nil {
			t.Fatalf("the primary sent nothing: %v", err)
		}
		flipped := false
		for _, m := range p.sent {
			flipped = flipped || m.flipped
		}
		ok, why := refChainAccepts(secret, p.reqMAC, p.sent, uint64(time.Now().Unix()))
		switch {
		case flipped && err == nil:
			t.Fatalf("a transfer with an octet changed after signing taken (%d messages)", len(p.sent))
		case flipped:
		case ok && err != nil:
			t.Fatalf("a transfer RFC 8945 takes refused: %v", err)
		case !ok && err == nil:
			t.Fatalf("a transfer RFC 8945 refuses (%s) taken: %d records", why, len(res.rrs))
		case !ok && !errors.Is(err, ErrTSIG):
			t.Fatalf("refused (%s) but not as a TSIG failure: %v", why, err)
		}
	})
}
