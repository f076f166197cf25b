package source

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrTSIG marks a TSIG failure (RFC 8945): the primary refused our key
// (BADKEY, BADSIG, BADTIME), or its answer was unsigned or did not verify.
// Either side holds the wrong key; the zone held is kept.
var ErrTSIG = errors.New("tsig")

// transferLimit bounds a whole zone transfer in time, on top of the
// per-read timeout and Options.MaxBytes.
const transferLimit = 10 * time.Minute

// tsigFudge is the time skew allowed on signed messages (RFC 8945 §10
// recommends 300 s).
const tsigFudge = 300

// tsigErrors names the TSIG errors of RFC 8945 §5.2.
var tsigErrors = map[uint16]string{16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC"}

// rcodeError is an answer with an RCODE other than NOERROR.
type rcodeError struct {
	what    string // "SOA query", "AXFR", "IXFR"
	rcode   int
	tsigErr uint16
}

func (e *rcodeError) Error() string {
	s := fmt.Sprintf("%s: primary answered %s", e.what, dns.RcodeToString[e.rcode])
	if e.tsigErr != 0 {
		name := tsigErrors[e.tsigErr]
		if name == "" {
			name = fmt.Sprint(e.tsigErr)
		}
		s += " with TSIG error " + name + ": the key (sources.tsig) differs from the primary's"
	}
	return s
}

// Is makes a TSIG error errors.Is(err, ErrTSIG).
func (e *rcodeError) Is(target error) bool { return target == ErrTSIG && e.tsigErr != 0 }

// xfrClient asks a primary about one zone.
type xfrClient struct {
	zone     string // apex, lowercase FQDN
	tsig     *TSIG  // normalized; nil: none
	timeout  time.Duration
	maxBytes int64
}

// pack returns m in wire form, signed when a key is set, and the MAC that
// the answer's signature chains to.
func (c *xfrClient) pack(m *dns.Msg) (wire []byte, mac string, err error) {
	if c.tsig == nil {
		wire, err = m.Pack()
		return wire, "", err
	}
	m.SetTsig(c.tsig.Name, c.tsig.Algorithm, tsigFudge, time.Now().Unix())
	wire, mac, err = dns.TsigGenerate(m, c.tsig.Secret, "", false)
	if err != nil {
		return nil, "", fmt.Errorf("%w: signing: %w", ErrTSIG, err)
	}
	return wire, mac, nil
}

// maxUnsigned is how many messages of a transfer in a row may come
// without a TSIG, the first and the last always signed: RFC 8945 §5.3.1
// has a client accept up to 99 between two signed ones, and BIND takes
// 100 (NSD 103), for a primary that counts the signed one among them.
const maxUnsigned = 100

// tsigChain follows the signatures of one exchange's answers (RFC 8945
// §5.3.1): the first chains to the request's MAC, each later signed one
// to the signed one before and the unsigned messages between them.
type tsigChain struct {
	mac      string // the MAC the next signed message chains to
	unsigned []byte // the unsigned messages since it, as received, back to back
	count    int    // how many they are
}

// check verifies an answer: its ID and flags, its RCODE, its question
// (the first message's: QNAME, QTYPE and QCLASS the query's, as RFC 5452
// §9.1 has a resolver match an answer), and, when a key is set, its
// signature: the first answer (later false) must be signed and
// chains to the request's MAC; a later message of a transfer may come
// unsigned, up to maxUnsigned in a row, and the next signed one covers
// them (RFC 8945 §5.3.1). chain is the state of the signatures so far,
// updated.
func (c *xfrClient) check(what string, q, m *dns.Msg, wire []byte, chain *tsigChain, later bool) error {
	if m.Id != q.Id || !m.Response || m.Opcode != dns.OpcodeQuery {
		return fmt.Errorf("%s: answer does not match the query (ID %d, QR %t, opcode %d)", what, m.Id, m.Response, m.Opcode)
	}
	ts := m.IsTsig()
	if m.Rcode != dns.RcodeSuccess {
		e := &rcodeError{what: what, rcode: m.Rcode}
		if ts != nil {
			e.tsigErr = ts.Error
		}
		return e
	}
	// A signed answer too big for UDP may come TC with no question, the
	// TSIG alone (BIND 9.18 answers so, RFC 8945 §5.3 has the question
	// kept): querySOA asks again over TCP.
	truncated := m.Truncated && len(m.Question) == 0 && len(m.Answer) == 0 && len(m.Ns) == 0
	if !later && !truncated && (len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, q.Question[0].Name) ||
		m.Question[0].Qtype != q.Question[0].Qtype || m.Question[0].Qclass != q.Question[0].Qclass) {
		return fmt.Errorf("%s: answer is for another question", what)
	}
	if c.tsig == nil {
		return nil
	}
	if ts == nil {
		if !later {
			return fmt.Errorf("%s: %w: answer is not signed", what, ErrTSIG)
		}
		if chain.count == maxUnsigned {
			return fmt.Errorf("%s: %w: more than %d messages in a row not signed", what, ErrTSIG, maxUnsigned)
		}
		chain.unsigned = append(chain.unsigned, wire...)
		chain.count++
		return nil
	}
	if !strings.EqualFold(ts.Hdr.Name, c.tsig.Name) {
		return fmt.Errorf("%s: %w: answer signed with key %q, not %q", what, ErrTSIG, ts.Hdr.Name, c.tsig.Name)
	}
	alg := dns.CanonicalName(ts.Algorithm)
	if alg != c.tsig.Algorithm {
		return fmt.Errorf("%s: %w: answer signed with algorithm %s, not %s", what, ErrTSIG, alg, c.tsig.Algorithm)
	}
	v := hmacTSIG{secret: c.tsig.Secret, unsigned: chain.unsigned}
	if chain.mac != "" {
		v.at = 2 + len(chain.mac)/2
	}
	if full := macSize(alg); int(ts.MACSize) < full {
		// RFC 8945 §5.2.2.1 lets a key truncate its MAC; sources.tsig
		// truncates none, and takes none truncated, as a BIND secondary
		// whose key is whole does (BADTRUNC). A BIND primary whose key
		// truncates answers a whole MAC with a whole one.
		return fmt.Errorf("%s: %w: answer's MAC is truncated to %d octets of %s's %d (RFC 8945 §5.2.2.1); sources.tsig takes the whole MAC only",
			what, ErrTSIG, ts.MACSize, alg, full)
	}
	if err := dns.TsigVerifyWithProvider(wire, v, chain.mac, later); err != nil {
		return fmt.Errorf("%s: %w: answer does not verify: %w", what, ErrTSIG, err)
	}
	chain.mac, chain.unsigned, chain.count = ts.MAC, chain.unsigned[:0], 0
	return nil
}

// hmacTSIG is the HMAC of a key in base64, as miekg/dns computes it, with
// two additions. For a signed message of a transfer that follows unsigned
// ones (RFC 8945 §5.3.1), miekg/dns gives it the MAC chained to (its
// length first), the message and the timers, and the unsigned messages
// go between the MAC and the message (at, unsigned; none for a single
// message). And Verify checks a MAC truncated as §5.2.2.1 allows over its
// length (miekg/dns takes a whole MAC only, and says BADSIG of a truncated
// one): the callers judge the truncation itself.
type hmacTSIG struct {
	secret   string
	at       int // where the unsigned messages go: the octets of the MAC chained to
	unsigned []byte
}

func (c hmacTSIG) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	secret, err := base64.StdEncoding.DecodeString(c.secret)
	if err != nil {
		return nil, err
	}
	alg := hashOf(t.Algorithm)
	if alg == nil {
		return nil, dns.ErrKeyAlg
	}
	h := hmac.New(alg, secret)
	h.Write(msg[:c.at])
	h.Write(c.unsigned)
	h.Write(msg[c.at:])
	return h.Sum(nil), nil
}

func (c hmacTSIG) Verify(msg []byte, t *dns.TSIG) error {
	want, err := c.Generate(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || len(got) == 0 || len(got) > len(want) || !hmac.Equal(got, want[:len(got)]) {
		return dns.ErrSig
	}
	return nil
}

// dial connects to addr over network, closing the connection when ctx is
// done.
func (c *xfrClient) dial(ctx context.Context, network, addr string) (*dns.Conn, func(), error) {
	d := net.Dialer{Timeout: c.timeout}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	return &dns.Conn{Conn: nc}, func() { stop(); nc.Close() }, nil
}

// querySOA asks the primary at addr for the zone's SOA, over UDP and again
// over TCP when the answer is truncated. The answer must be authoritative.
func (c *xfrClient) querySOA(ctx context.Context, addr string) (*dns.SOA, error) {
	q := new(dns.Msg)
	q.SetQuestion(c.zone, dns.TypeSOA)
	q.RecursionDesired = false
	m, err := c.exchange(ctx, "udp", addr, q)
	var lostErr *unansweredError
	switch {
	case err == nil && m.Truncated:
		m, err = c.exchange(ctx, "tcp", addr, q)
	case errors.As(err, &lostErr) && ctx.Err() == nil:
		// No answer over UDP (a firewall that lets only TCP through to
		// the primary, as zone transfers need): ask over TCP, as BIND's
		// secondary does (try-tcp-refresh, yes by default), rather than
		// never transfer the zone at all.
		udpErr := err
		if m, err = c.exchange(ctx, "tcp", addr, q); err != nil {
			err = fmt.Errorf("%w (over UDP: %v)", err, udpErr)
		}
	}
	if err != nil {
		return nil, err
	}
	if !m.Authoritative {
		return nil, fmt.Errorf("SOA query: %s is not authoritative for %s", addr, c.zone)
	}
	for _, rr := range m.Answer {
		if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, c.zone) {
			return soa, nil
		}
	}
	return nil, fmt.Errorf("SOA query: answer from %s holds no SOA for %s", addr, c.zone)
}

// unreachedError is a transfer that never began: no connection to the
// primary could be had.
type unreachedError struct{ err error }

func (e *unreachedError) Error() string { return e.err.Error() }
func (e *unreachedError) Unwrap() error { return e.err }

// unansweredError is an SOA query that got no answer: it could not be
// sent, or nothing (or nothing with its ID) came back in time.
type unansweredError struct{ err error }

func (e *unansweredError) Error() string { return e.err.Error() }
func (e *unansweredError) Unwrap() error { return e.err }

// unanswered wraps a failure to send q or to hear an answer.
func unanswered(format string, args ...any) error {
	return &unansweredError{fmt.Errorf(format, args...)}
}

// exchange sends q and reads its answer. Over UDP a datagram with another
// ID is ignored whatever it holds, read or not (it answers some earlier
// query), within the timeout; the answer with q's ID is unpacked
// (unpackWhole) and checked (check), but for one with TC set that ends
// before the records its header counts, returned as a header with TC set
// alone (a truncated answer: querySOA asks again over TCP, as Unbound
// falls back to TCP on TC before reading the records).
// An error that no answer came is an *unansweredError.
func (c *xfrClient) exchange(ctx context.Context, network, addr string, q *dns.Msg) (*dns.Msg, error) {
	q.Id = dns.Id()
	q.Extra = nil
	co, closeConn, err := c.dial(ctx, network, addr)
	if err != nil {
		return nil, unanswered("SOA query: %w", err)
	}
	defer closeConn()
	wire, mac, err := c.pack(q)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(c.timeout)
	co.SetDeadline(deadline)
	if _, err := co.Write(wire); err != nil {
		return nil, unanswered("SOA query: %w", err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	resend := soaResendFirst
	for range 16 {
		if network == "udp" {
			co.SetReadDeadline(earliest(time.Now().Add(resend), deadline))
		}
		n, err := co.Read(buf)
		if lost(err) && network == "udp" && time.Now().Before(deadline) {
			// The query or its answer was lost: the same query again.
			if _, err := co.Write(wire); err != nil {
				return nil, unanswered("SOA query: %w", err)
			}
			resend *= 2
			continue
		}
		if err != nil {
			return nil, unanswered("SOA query: %w", err)
		}
		if network == "udp" && (n < 2 || binary.BigEndian.Uint16(buf) != q.Id) {
			continue // by its ID, before its body: what it holds is another query's
		}
		m, err := unpackWhole(buf[:n])
		if errors.Is(err, errRecordsCut) && network == "udp" && buf[2]&flagTC != 0 {
			// Truncated, and cut short as a truncating server or
			// middlebox may leave a datagram: querySOA asks again over
			// TCP, and nothing of it is used.
			return &dns.Msg{MsgHdr: dns.MsgHdr{Id: q.Id, Response: true, Truncated: true}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("SOA query: answer: %w", err)
		}
		if err := c.check("SOA query", q, m, buf[:n], &tsigChain{mac: mac}, false); err != nil {
			return nil, err
		}
		if m.Truncated && network == "tcp" {
			return nil, errTCOverTCP("SOA query: answer")
		}
		return m, nil
	}
	return nil, unanswered("SOA query: no answer with ID %d", q.Id)
}

// errTCOverTCP is the error for a message over TCP with TC set, what
// naming it ("SOA query: answer", "AXFR: message 2"). TC says records
// were left out (RFC 1035 §4.1.1; RFC 2181 §9: the client asks again over
// a transport that allows a larger message), and TCP has none larger to
// ask over: a transfer applied without them would unblock the names they
// trigger. It is refused, as the upstream path refuses such an answer
// (ErrAnswerTruncated) and BIND's secondary does ("truncated TCP
// response").
func errTCOverTCP(what string) error {
	return fmt.Errorf("%s has TC set over TCP: truncated where nothing larger is left to ask over; refused", what)
}

// soaResendFirst is how long an SOA query over UDP waits for its answer
// before it is sent again, doubling each time, within the query's timeout
// (Options.Timeout): one datagram lost, of the query or its answer, cost
// the whole timeout and then the SOA retry interval (minutes to hours)
// before the zone was checked again. BIND and NSD send their refresh
// queries again within seconds too.
const soaResendFirst = 2 * time.Second

// msgHeaderLen is the length of a DNS message header (RFC 1035 §4.1.1).
const msgHeaderLen = 12

// flagTC is the TC bit in the third octet of a message (RFC 1035 §4.1.1).
const flagTC = 0x02

// errRecordsCut is a message from the primary that ends before the
// questions and records its header counts (RFC 1035 §4.1.1).
var errRecordsCut = errors.New("the message ends before the records its header counts (RFC 1035 §4.1.1)")

// unpackWhole unpacks the message wire from the primary, as miekg/dns
// does, but one that ends before the questions and records its header
// counts is errRecordsCut: miekg/dns reads such a message as far as it
// goes and returns no error, and a transfer message counting a record it
// did not hold was applied as a zone without that record (a name the
// primary lists, left unblocked), as an SOA answer counting its SOA and
// ending before it read as NODATA. BIND's and Unbound's parsers refuse
// such a message (FORMERR). A message that is a header alone (12 octets,
// RFC 1035 §4.1.1) is read as miekg/dns reads it, without a question or
// record, as the upstream answers are: a failure or a truncated answer
// some servers send so, which check takes by its RCODE (a REFUSED is
// named as such) and querySOA by its TC bit (asked again over TCP); a
// NOERROR one still fails, answering no question or holding no record.
// A question counts only with its QTYPE and QCLASS (questionsWhole).
func unpackWhole(wire []byte) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(wire); err != nil {
		return nil, err
	}
	if len(wire) == msgHeaderLen {
		return m, nil
	}
	count := func(at int) int { return int(binary.BigEndian.Uint16(wire[at:])) }
	if len(m.Question) != count(4) || len(m.Answer) != count(6) || len(m.Ns) != count(8) || len(m.Extra) != count(10) ||
		!questionsWhole(wire) {
		return nil, errRecordsCut
	}
	return m, nil
}

// questionsWhole reports whether the message wire, which miekg/dns
// unpacked, holds each question its QDCOUNT counts with its QTYPE and
// QCLASS (RFC 1035 §4.1.2): miekg/dns reads a last question that ends
// after its name, or after its QTYPE, as one, its QCLASS (or both) 0, and
// returns no error, so the counts alone do not tell it cut short.
func questionsWhole(wire []byte) bool {
	off := msgHeaderLen
	for range binary.BigEndian.Uint16(wire[4:]) {
		_, end, err := dns.UnpackDomainName(wire, off)
		if err != nil || end+4 > len(wire) {
			return false
		}
		off = end + 4
	}
	return true
}

// lost reports whether err is a read that timed out.
func lost(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// earliest is the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// errNoIXFR is an IXFR answered NOERROR with no record at all: the answer
// of a primary that does not know IXFR and takes it for a query of an
// unknown type (BIND's secondary takes it so, and asks for an AXFR).
var errNoIXFR = errors.New("answer holds no record: the primary does not know IXFR")

// xfrResult is what a zone transfer brought.
type xfrResult struct {
	// kind is TransferAXFR or TransferIXFR; "" when an IXFR found the zone
	// held up to date.
	kind string
	soa  *dns.SOA
	// rrs are the zone's records but the SOA (AXFR); diffs the sequences
	// of an IXFR.
	rrs   []dns.RR
	diffs []ixfrDiff
	// condensed is set when an IXFR was answered with the new SOA alone:
	// the primary has a newer zone but sends no difference (RFC 1995 §4),
	// so an AXFR is needed.
	condensed bool
	// dropped counts records outside the zone, ignored.
	dropped int
	bytes   int64
}

// transfer pulls the zone from the primary at addr over TCP: an AXFR (RFC
// 5936) when have is nil, else an IXFR (RFC 1995) from have's serial, whose
// answer may be the differences, the whole zone AXFR-style, or have's SOA
// alone (nothing changed). The answer is read whole before anything is
// returned: a transfer cut off, over Options.MaxBytes or that does not
// verify returns an error and nothing else. whole, when not nil, is called
// as soon as the answer turns out to be the whole zone: at an AXFR's first
// record, or an IXFR's answered AXFR-style.
func (c *xfrClient) transfer(ctx context.Context, addr string, have *dns.SOA, whole func()) (*xfrResult, error) {
	what := TransferAXFR
	q := new(dns.Msg)
	q.SetQuestion(c.zone, dns.TypeAXFR)
	if have != nil {
		what = TransferIXFR
		q.SetQuestion(c.zone, dns.TypeIXFR)
		q.Ns = []dns.RR{have}
	}
	q.RecursionDesired = false
	ctx, cancel := context.WithTimeout(ctx, transferLimit)
	defer cancel()
	co, closeConn, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &unreachedError{fmt.Errorf("%s: %w", what, err)}
	}
	defer closeConn()
	wire, mac, err := c.pack(q)
	if err != nil {
		return nil, err
	}
	co.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := co.Write(wire); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	chain := tsigChain{mac: mac}
	p := xfrParser{zone: c.zone, ixfr: have != nil, whole: whole}
	if have != nil {
		p.have = have.Serial
	}
	buf := make([]byte, dns.MaxMsgSize)
	for msgs := 0; !p.done; msgs++ {
		co.SetReadDeadline(time.Now().Add(c.timeout))
		n, err := co.Read(buf)
		if err != nil {
			if p.ixfr && p.state == stateIXFRSecond {
				// The new SOA alone, and the connection closed: condensed.
				p.res.condensed = true
				return &p.res, nil
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", what, ctx.Err())
			}
			return nil, fmt.Errorf("%s: cut off after %d messages, %d records: %w", what, msgs, p.n, err)
		}
		if p.res.bytes += int64(n); p.res.bytes > c.maxBytes {
			return nil, fmt.Errorf("%s: more than sources.max_bytes (%d bytes) transferred; refused", what, c.maxBytes)
		}
		m, err := unpackWhole(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("%s: message %d: %w", what, msgs+1, err)
		}
		if err := c.check(what, q, m, buf[:n], &chain, msgs > 0); err != nil {
			return nil, err
		}
		if m.Truncated {
			return nil, errTCOverTCP(fmt.Sprintf("%s: message %d", what, msgs+1))
		}
		for _, rr := range m.Answer {
			if p.done {
				return nil, fmt.Errorf("%s: records after the closing SOA", what)
			}
			if err := p.add(rr); err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		if len(m.Answer) == 0 {
			if p.ixfr && msgs == 0 {
				return nil, fmt.Errorf("%s: %w", what, errNoIXFR)
			}
			return nil, fmt.Errorf("%s: message %d has no records", what, msgs+1)
		}
		if p.done && chain.count > 0 {
			return nil, fmt.Errorf("%s: %w: the last message is not signed", what, ErrTSIG)
		}
	}
	return &p.res, nil
}

// Parser states: what the next record of the answer is.
const (
	stateFirst      = iota // the opening SOA
	stateIXFRSecond        // an IXFR answer's second record: it says which form
	stateAXFR              // a record of the zone, or the closing SOA
	stateDel               // a record removed, or the SOA the sequence leads to
	stateAdd               // a record added, or the SOA of the next sequence or the closing one
)

// xfrParser reads the records of an AXFR or IXFR answer, in order.
type xfrParser struct {
	zone  string
	ixfr  bool
	have  uint32 // the serial held, for an IXFR
	whole func() // told that the answer is the whole zone; may be nil
	state int
	n     int // records read
	done  bool
	res   xfrResult
}

func (p *xfrParser) add(rr dns.RR) error {
	p.n++
	soa, isSOA := rr.(*dns.SOA)
	if isSOA && !strings.EqualFold(soa.Hdr.Name, p.zone) {
		return fmt.Errorf("record %d: SOA of %s, not of %s", p.n, soa.Hdr.Name, p.zone)
	}
	switch p.state {
	case stateFirst:
		if !isSOA {
			return fmt.Errorf("answer does not start with the zone's SOA but %s", rr.Header().String())
		}
		p.res.soa = soa
		p.res.kind = TransferAXFR
		p.state = stateAXFR
		if !p.ixfr && p.whole != nil {
			p.whole()
		}
		if p.ixfr {
			p.state = stateIXFRSecond
			if !serialNewer(soa.Serial, p.have) {
				// The zone held is current (or the primary's is older):
				// the answer is this SOA alone.
				p.res.kind = ""
				p.done = true
			}
		}
	case stateIXFRSecond:
		switch {
		case isSOA && soa.Serial == p.res.soa.Serial:
			p.done = true // AXFR-style: a zone of its SOA alone
		case isSOA:
			p.res.kind = TransferIXFR
			if soa.Serial != p.have {
				return fmt.Errorf("IXFR starts from serial %d, not the %d held: %w", soa.Serial, p.have, errNotExact)
			}
			p.res.diffs = append(p.res.diffs, ixfrDiff{from: soa})
			p.state = stateDel
		default:
			p.state = stateAXFR
			if p.whole != nil {
				p.whole()
			}
			p.zoneRecord(rr)
		}
	case stateAXFR:
		if isSOA {
			if soa.Serial != p.res.soa.Serial {
				return fmt.Errorf("closing SOA has serial %d, the opening one %d", soa.Serial, p.res.soa.Serial)
			}
			p.done = true
			return nil
		}
		p.zoneRecord(rr)
	case stateDel:
		d := &p.res.diffs[len(p.res.diffs)-1]
		if isSOA {
			d.to = soa
			p.state = stateAdd
			return nil
		}
		if p.inZone(rr) {
			d.del = append(d.del, rr)
		}
	case stateAdd:
		d := &p.res.diffs[len(p.res.diffs)-1]
		if !isSOA {
			if p.inZone(rr) {
				d.add = append(d.add, rr)
			}
			return nil
		}
		if soa.Serial != d.to.Serial {
			return fmt.Errorf("IXFR sequence to serial %d followed by one from %d", d.to.Serial, soa.Serial)
		}
		if soa.Serial == p.res.soa.Serial {
			p.done = true
			return nil
		}
		p.res.diffs = append(p.res.diffs, ixfrDiff{from: soa})
		p.state = stateDel
	}
	return nil
}

// zoneRecord keeps a record of an AXFR-style answer, dropping one outside
// the zone.
func (p *xfrParser) zoneRecord(rr dns.RR) {
	if p.inZone(rr) {
		p.res.rrs = append(p.res.rrs, rr)
	}
}

// inZone reports whether rr's owner is in the zone, counting the records
// dropped for not being.
func (p *xfrParser) inZone(rr dns.RR) bool {
	if inZone(rr.Header().Name, p.zone) {
		return true
	}
	p.res.dropped++
	return false
}

// inZone reports whether name (presentation form, fully qualified) is zone
// (lowercase) or below it, comparing ASCII case-insensitively: the name
// ends with the zone, and the zone starts a label there (the dot before it
// is not an escaped `\.`, a dot inside a label).
func inZone(name, zone string) bool {
	if zone == "." {
		return true
	}
	n := len(name) - len(zone)
	if n < 0 || !strings.EqualFold(name[n:], zone) {
		return false
	}
	if n == 0 {
		return true
	}
	if name[n-1] != '.' {
		return false
	}
	backslashes := 0
	for i := n - 2; i >= 0 && name[i] == '\\'; i-- {
		backslashes++
	}
	return backslashes%2 == 0
}

// serialNewer reports whether serial a is newer than b in serial number
// arithmetic (RFC 1982 §3.2): the zone's serial wraps at 2^32.
func serialNewer(a, b uint32) bool {
	return a != b && a-b < 1<<31
}
