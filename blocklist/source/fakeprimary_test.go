package source

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// fakePrimary is a DNS primary in the test (miekg/dns on 127.0.0.1 port 0,
// UDP and TCP) serving one zone from memory, with knobs for the answers a
// real primary gives rarely: crafted IXFR answers, cut-off transfers,
// unsigned answers.
type fakePrimary struct {
	addr string
	zone string

	mu      sync.Mutex
	soa     *dns.SOA
	records []dns.RR // the zone but its SOA
	// ixfr, when set, returns the answer records to an IXFR from serial
	// have; nil answers AXFR-style (the whole zone).
	ixfr func(have uint32) []dns.RR
	// ixfrRcode, when set, is the RCODE of every IXFR answer;
	// axfrRcode of every AXFR answer.
	ixfrRcode, axfrRcode int
	// cutAfter, when > 0, closes a transfer's connection after that many
	// messages, before the closing SOA.
	cutAfter int
	// ixfrCutAfter is cutAfter for IXFR answers alone.
	ixfrCutAfter int
	// overcount, when > 0, sends the transfer message of that number (1
	// the first) without its last record, its ANCOUNT still counting it:
	// a message that ends before the records its header counts.
	overcount int
	// xfrClass, when set, is the QCLASS of the question a transfer
	// answers with (the query's otherwise).
	xfrClass uint16
	// xfrTC, when > 0, sets TC on the transfer message of that number (1
	// the first), which comes over TCP all the same.
	xfrTC int
	// tcpSOATC sets TC on the answers to an SOA query over TCP.
	tcpSOATC bool
	// unsigned answers signed queries without a signature.
	unsigned bool
	// forged signs answers with another secret than the key's.
	forged bool
	// truncateMAC, when > 0, truncates the MAC of its answers to that
	// many octets (RFC 8945 §5.2.2.1).
	truncateMAC int
	// perMessage is how many records each transfer message holds.
	perMessage int
	// xfrSOA, when set, is the SOA its transfers answer with instead of
	// soa (a transfer view out of step with the SOA query's).
	xfrSOA *dns.SOA
	// dropUDP drops every query that comes over UDP, as a firewall that
	// lets only TCP through to the primary does.
	dropUDP bool
	// udpSOAHeader, when set, answers an SOA query over UDP with a
	// message that is a header alone, as some servers send a failure or a
	// truncated answer: the reply's header with this RCODE and TC bit, its
	// QDCOUNT still 1.
	udpSOAHeader *headerOnly
	// udpSOACut answers an SOA query over UDP with TC set and the SOA
	// counted but not held: a truncated answer cut short, as a truncating
	// server or middlebox may leave one.
	udpSOACut bool
	// strayUDP sends before each answer to an SOA query over UDP a
	// datagram with another ID that ends before the SOA its header counts:
	// a late or stray answer to another query, cut short.
	strayUDP bool
	// strays, when > 0, is how many such datagrams it sends (strayUDP:
	// one).
	strays int
	// soaNotAuth answers SOA queries with AA clear, as a resolver that is
	// not the zone's primary does; soaNoAnswer answers them without the
	// SOA (NODATA).
	soaNotAuth, soaNoAnswer bool
	// udpSOAUnreadable answers an SOA query over UDP with a message of
	// its ID that does not unpack (its question's name a compression
	// pointer to itself).
	udpSOAUnreadable bool
	// noOpeningSOA leaves the opening SOA out of its transfers.
	noOpeningSOA bool
	// stallAfter, when > 0, stops a transfer after that many messages,
	// its connection held open, until stalled is closed.
	stallAfter int
	stalled    chan struct{}
	// signName and signAlg, when set, are the key name and algorithm its
	// signed answers carry instead of the query's (signed with the
	// query's key's secret all the same).
	signName, signAlg string
	// queries are the QTYPEs asked, in order; recursion their RD bits.
	queries   []uint16
	recursion []bool
}

// headerOnly is the RCODE and TC bit of an answer that is a header alone.
type headerOnly struct {
	rcode     int
	truncated bool
}

// startFakePrimary serves zone (apex FQDN) at serial with records; secret,
// when set, is the TSIG key (name: secret) it verifies and signs with.
func startFakePrimary(t testing.TB, zone string, serial uint32, records []dns.RR, secret map[string]string) *fakePrimary {
	t.Helper()
	p := &fakePrimary{zone: zone, soa: testSOA(zone, serial), records: records, perMessage: 100}
	pc, l := listenBoth(t)
	p.addr = l.Addr().String()
	var tp dns.TsigProvider
	if secret != nil {
		tp = fakeTSIG{p: p, secret: secret}
	}
	testnet.Serve(t,
		&dns.Server{PacketConn: pc, Handler: p, TsigProvider: tp},
		&dns.Server{Listener: l, Handler: p, TsigProvider: tp, ReadTimeout: 5 * time.Second})
	return p
}

// fakeTSIG is the fake primary's HMAC-SHA256 TSIG (RFC 8945 §4.3): it
// verifies with the key's secret and signs with it too, unless the primary
// is set to forge.
type fakeTSIG struct {
	p      *fakePrimary
	secret map[string]string
}

func (f fakeTSIG) mac(msg []byte, t *dns.TSIG, forged bool) ([]byte, error) {
	return f.macWith(msg, f.secret[t.Hdr.Name], forged)
}

func (f fakeTSIG) macWith(msg []byte, secret string, forged bool) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil || len(raw) == 0 {
		return nil, dns.ErrSecret
	}
	if forged {
		raw = append(raw, 'x')
	}
	h := hmac.New(sha256.New, raw)
	h.Write(msg)
	return h.Sum(nil), nil
}

func (f fakeTSIG) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	// Called from ServeDNS's write, which holds p.mu.
	secret := f.secret[t.Hdr.Name]
	if f.p.signName != "" && t.Hdr.Name == f.p.signName {
		for _, s := range f.secret { // the key's, under another name
			secret = s
		}
	}
	mac, err := f.macWith(msg, secret, f.p.forged)
	if err == nil && f.p.truncateMAC > 0 {
		mac = mac[:f.p.truncateMAC]
	}
	return mac, err
}

func (f fakeTSIG) Verify(msg []byte, t *dns.TSIG) error {
	want, err := f.mac(msg, t, false)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(got, want) {
		return dns.ErrSig
	}
	return nil
}

// listenBoth listens on one port of 127.0.0.1 for both UDP and TCP.
func listenBoth(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	pc, l, err := testnet.ListenBoth()
	require.NoError(t, err)
	return pc, l
}

func testSOA(zone string, serial uint32) *dns.SOA {
	return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + zone, Mbox: "admin." + zone, Serial: serial, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
}

// cname returns the RPZ record `name CNAME .` for name relative to zone.
func cname(zone, name string) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: name + "." + zone, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "."}
}

func cnames(zone string, names ...string) []dns.RR {
	out := make([]dns.RR, len(names))
	for i, n := range names {
		out[i] = cname(zone, n)
	}
	return out
}

func (p *fakePrimary) update(fn func(p *fakePrimary)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn(p)
}

func (p *fakePrimary) asked() []uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint16(nil), p.queries...)
}

func (p *fakePrimary) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(q.Question) != 1 {
		return
	}
	qt := q.Question[0].Qtype
	p.queries = append(p.queries, qt)
	p.recursion = append(p.recursion, q.RecursionDesired)
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	if udp && p.dropUDP {
		return
	}
	sign := func(m *dns.Msg) {
		if ts := q.IsTsig(); ts != nil && w.TsigStatus() == nil && !p.unsigned {
			name, alg := ts.Hdr.Name, ts.Algorithm
			if p.signName != "" {
				name = p.signName
			}
			if p.signAlg != "" {
				alg = p.signAlg
			}
			m.SetTsig(name, alg, 300, time.Now().Unix())
		}
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if q.IsTsig() != nil && w.TsigStatus() != nil {
		m.Rcode = dns.RcodeNotAuth
		w.WriteMsg(m)
		return
	}
	switch qt {
	case dns.TypeSOA:
		if h := p.udpSOAHeader; h != nil && udp {
			m.Rcode, m.Truncated = h.rcode, h.truncated
			if b, err := m.Pack(); err == nil {
				_, _ = w.Write(b[:12])
			}
			return
		}
		if udp && p.udpSOAUnreadable {
			b := make([]byte, 12, 18)
			binary.BigEndian.PutUint16(b, m.Id)
			b[2] = 0x84                          // QR, AA
			binary.BigEndian.PutUint16(b[4:], 1) // QDCOUNT
			b = append(b, 0xc0, 12, 0, 6, 0, 1)  // a pointer to itself, SOA, IN
			_, _ = w.Write(b)
			return
		}
		if udp && p.udpSOACut {
			m.Truncated = true
			if b, err := m.Pack(); err == nil {
				binary.BigEndian.PutUint16(b[6:], 1) // the SOA, not held
				_, _ = w.Write(b)
			}
			return
		}
		if udp && (p.strayUDP || p.strays > 0) {
			if b, err := m.Pack(); err == nil {
				binary.BigEndian.PutUint16(b, m.Id+1)
				binary.BigEndian.PutUint16(b[6:], 1) // the SOA, not held
				for range max(p.strays, 1) {
					_, _ = w.Write(b)
				}
			}
		}
		m.Answer = []dns.RR{p.soa}
		if p.soaNoAnswer {
			m.Answer = nil
		}
		m.Authoritative = !p.soaNotAuth
		m.Truncated = !udp && p.tcpSOATC
		sign(m)
		w.WriteMsg(m)
		return
	case dns.TypeAXFR, dns.TypeIXFR:
	default:
		m.Rcode = dns.RcodeRefused
		w.WriteMsg(m)
		return
	}
	xs := p.soa
	if p.xfrSOA != nil {
		xs = p.xfrSOA
	}
	answer := append(append([]dns.RR{xs}, p.records...), xs)
	if p.noOpeningSOA {
		answer = answer[1:]
	}
	if qt == dns.TypeAXFR && p.axfrRcode != 0 {
		m.Rcode = p.axfrRcode
		sign(m)
		w.WriteMsg(m)
		return
	}
	if qt == dns.TypeIXFR {
		if p.ixfrRcode != 0 {
			m.Rcode = p.ixfrRcode
			sign(m)
			w.WriteMsg(m)
			return
		}
		if p.ixfr != nil {
			answer = p.ixfr(q.Ns[0].(*dns.SOA).Serial)
		}
		if len(answer) == 0 {
			// A primary that does not know IXFR: NODATA, its SOA in
			// the authority section.
			m.Ns = []dns.RR{p.soa}
			sign(m)
			w.WriteMsg(m)
			return
		}
	}
	for i, msgs := 0, 0; i < len(answer); msgs++ {
		if p.stallAfter > 0 && msgs == p.stallAfter {
			stalled := p.stalled
			p.mu.Unlock()
			<-stalled
			p.mu.Lock()
			return
		}
		if p.cutAfter > 0 && msgs == p.cutAfter || qt == dns.TypeIXFR && p.ixfrCutAfter > 0 && msgs == p.ixfrCutAfter {
			w.Close() // cut off before the closing SOA
			return
		}
		end := min(i+p.perMessage, len(answer))
		r := new(dns.Msg)
		r.SetReply(q)
		r.Authoritative = true
		r.Compress = true
		r.Answer = answer[i:end]
		r.Truncated = p.xfrTC == msgs+1
		if msgs > 0 {
			r.Question = nil
		} else if p.xfrClass != 0 {
			r.Question[0].Qclass = p.xfrClass
		}
		if p.overcount == msgs+1 {
			r.Answer = r.Answer[:len(r.Answer)-1]
			b, err := r.Pack()
			if err != nil {
				return
			}
			binary.BigEndian.PutUint16(b[6:], binary.BigEndian.Uint16(b[6:])+1)
			if _, err := w.Write(b); err != nil {
				return
			}
			i = end
			continue
		}
		sign(r)
		if err := w.WriteMsg(r); err != nil {
			return
		}
		w.TsigTimersOnly(true)
		i = end
	}
}

// ixfrAnswer builds an IXFR answer: the new SOA, then for each step its
// removals and additions between the SOAs, then the new SOA again.
func ixfrAnswer(zone string, steps ...ixfrStep) []dns.RR {
	last := steps[len(steps)-1].to
	out := []dns.RR{testSOA(zone, last)}
	for _, s := range steps {
		out = append(out, testSOA(zone, s.from))
		out = append(out, s.del...)
		out = append(out, testSOA(zone, s.to))
		out = append(out, s.add...)
	}
	return append(out, testSOA(zone, last))
}

type ixfrStep struct {
	from, to uint32
	del, add []dns.RR
}
