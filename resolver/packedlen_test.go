package resolver

import (
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// escapedShapes are answers whose character-strings miekg/dns holds
// escaped (a byte outside printable ASCII as \DDD, `"` and `\` as \" and
// \\), n records of each: dns.Msg.Len counts the escapes, up to four times
// the octets the strings pack into.
var escapedShapes = []struct {
	name  string
	qtype uint16
	rr    func(owner string, i int) dns.RR
}{
	{"TXT of 255 octets 1", dns.TypeTXT, func(owner string, i int) dns.RR {
		return mustRR(`%s 300 IN TXT "%s%03d"`, owner, strings.Repeat(`\001`, 252), i)
	}},
	{"TXT of quotes and backslashes", dns.TypeTXT, func(owner string, i int) dns.RR {
		return mustRR(`%s 300 IN TXT "%s%03d"`, owner, strings.Repeat(`\"\\`, 126), i)
	}},
	{"HINFO", dns.TypeHINFO, func(owner string, i int) dns.RR {
		return mustRR(`%s 300 IN HINFO "%s%03d" "%s"`, owner, strings.Repeat(`\200`, 125), i, strings.Repeat(`\\`, 125))
	}},
	{"NAPTR", dns.TypeNAPTR, func(owner string, i int) dns.RR {
		return mustRR(`%s 300 IN NAPTR %d 10 "%s" "E2U+sip" "%s" .`, owner, i, strings.Repeat(`\001`, 100), strings.Repeat(`\255`, 140))
	}},
}

// escapedUpstream answers a question of an escapedShapes name
// ("<shape>-<n>.escaped.example.org.") with n records of the shape, the
// answer packed as a server would: whole over TCP, and over UDP when it
// fits the query's size, else with TC set and no records. It writes the
// answer itself: the test upstream's fitting is miekg/dns's Truncate,
// Len-based.
func escapedUpstream(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	var shape, n int
	if _, err := fmt.Sscanf(r.Question[0].Name, "s%d-%d.", &shape, &n); err != nil {
		return defaultAnswer(w, r)
	}
	m := escapedAnswer(r, shape, n)
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && len(b) > size {
		m.Answer, m.Truncated = nil, true
		if b, err = m.Pack(); err != nil {
			return nil
		}
	}
	_, _ = w.Write(b)
	return nil
}

// escapedAnswer is the answer to r of n records of escapedShapes[shape].
func escapedAnswer(r *dns.Msg, shape, n int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable, m.Compress = true, true
	for i := range n {
		m.Answer = append(m.Answer, escapedShapes[shape].rr(r.Question[0].Name, i))
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
	}
	return m
}

// askUDP sends q to server over UDP and returns the answer and the octets
// the datagram had.
func askUDP(t *testing.T, server string, q *dns.Msg) (*dns.Msg, int) {
	t.Helper()
	b, err := q.Pack()
	require.NoError(t, err)
	c, err := net.Dial("udp", server)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = c.Write(b)
	require.NoError(t, err)
	buf := make([]byte, dns.MaxMsgSize)
	n, err := c.Read(buf)
	require.NoError(t, err)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(buf[:n]))
	return r, n
}

// TestEscapedStringsFitUDP (RFC 2181 §9, RFC 6891 §7): an answer whose
// character-strings miekg/dns holds escaped reaches a UDP client of 1,232
// octets whole, without TC, when it packs into 1,232 octets, on the wire
// path and the message path, from the upstream and from the cache; one
// that does not is cut to as many records as pack into the 1,232 octets,
// never more, with TC set. Measured before: four TXT records of 255
// octets 1 (1,130 octets packed, 4,154 as dns.Msg.Len counts them)
// reached the client of the message path with TC set and one record (326
// octets), as did four HINFO and four NAPTR records, four TXT records of
// quotes and backslashes (2,138 by Len) with two; an answer of five
// records, on either path, was cut to one or two where two or three fit.
func TestEscapedStringsFitUDP(t *testing.T) {
	up := startUpstream(t, escapedUpstream)
	f := startFence(t, testConfig, testFiles, up.addr)
	const size = 1232
	for shape, s := range escapedShapes {
		for _, path := range []string{"wire path", "message path"} {
			t.Run(s.name+", "+path, func(t *testing.T) {
				// n records that pack into size octets, and n+1 that do not.
				n := 1
				for {
					q := question(fmt.Sprintf("s%d-%d.escaped.example.org.", shape, n+1), s.qtype, true)
					if b, err := escapedAnswer(q, shape, n+1).Pack(); err != nil || len(b) > size {
						break
					}
					n++
				}
				for _, records := range []int{n, n + 1} {
					name := fmt.Sprintf("s%d-%d.%s.escaped.example.org.", shape, records, path[:4])
					q := question(name, s.qtype, true)
					if path == "message path" {
						// An option of no meaning: the wire path leaves
						// the query to the message path.
						q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_LOCAL{Code: dns.EDNS0LOCALSTART, Data: []byte{1}}}
					}
					for _, from := range []string{"upstream", "cache"} {
						q.Id = dns.Id()
						r, octets := askUDP(t, f.addr, q)
						assert.LessOrEqual(t, octets, size, "%d records from the %s: over the client's size", records, from)
						require.Equal(t, dns.RcodeSuccess, r.Rcode)
						if records == n {
							assert.False(t, r.Truncated, "%d records from the %s, %d octets whole: TC set", records, from, octets)
							assert.Equal(t, n, len(r.Answer), "%d records from the %s: records kept", records, from)
							continue
						}
						assert.True(t, r.Truncated, "%d records from the %s: TC clear", records, from)
						// As many as fit: the answer with one more record
						// kept does not.
						more := r.Copy()
						more.Answer = escapedAnswer(q, shape, len(r.Answer)+1).Answer
						b, err := more.Pack()
						require.NoError(t, err)
						assert.Greater(t, len(b), size, "%d records from the %s: %d kept, %d fit", records, from, len(r.Answer), len(r.Answer)+1)
					}
				}
			})
		}
	}
}

// TestOvercountedAnswerCachedTCP: an answer that packs into
// maxCachedAnswer octets is cached over TCP (the message path) as over UDP
// (the wire path, which counts octets), however much over dns.Msg.Len
// counts it: here by an RRSIG's base64 signature of 64 octets, which Len
// counts as 66 (base64.DecodedLen of its 88 characters, two of them
// padding). (An answer of escaped character-strings Len counts as over
// maxCachedAnswer takes more than maxCachedFootprint of the heap, and is
// not cached for that.) Measured before: an answer of 4,096 octets,
// 4,098 by Len, was asked upstream for every query over TCP.
func TestOvercountedAnswerCachedTCP(t *testing.T) {
	const name = "signed.escaped.example.org."
	sig := mustRR("%s 300 IN RRSIG TXT 13 4 300 20300101000000 20200101000000 12345 example.org. %s",
		name, base64.StdEncoding.EncodeToString(make([]byte, 64)))
	// TXT records of 255 octets and one of rest, and the RRSIG: the
	// longest such answer that packs into maxCachedAnswer octets.
	answer := func(r *dns.Msg, rest int) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Compress = true
		for range 14 {
			m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "%s"`, name, strings.Repeat("a", 255)))
		}
		m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "%s"`, name, strings.Repeat("b", rest)), sig)
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(1232, opt.Do())
		}
		return m
	}
	q := question(name, dns.TypeTXT, true)
	q.IsEdns0().SetDo() // the RRSIG kept (RFC 3225 §3)
	rest := 255
	for ; rest > 0; rest-- {
		if b, err := answer(q, rest).Pack(); err == nil && len(b) <= maxCachedAnswer {
			break
		}
	}
	m := answer(q, rest)
	b, err := m.Pack()
	require.NoError(t, err)
	require.Greater(t, m.Len(), maxCachedAnswer, "dns.Msg.Len counts the signature's padding")
	require.LessOrEqual(t, footprint(m), maxCachedFootprint)
	t.Logf("%d octets packed, %d by Len", len(b), m.Len())

	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp || r.Question[0].Name != name {
			return defaultAnswer(w, r) // over UDP: Truncate sets TC
		}
		b, err := answer(r, rest).Pack()
		if err == nil {
			_, _ = w.Write(b)
		}
		return nil
	})
	f := startFence(t, testConfig, testFiles, up.addr)
	for range 3 {
		q.Id = dns.Id()
		r := ask(t, f.addr, "", "tcp", q)
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		require.Equal(t, len(m.Answer), len(r.Answer), "records")
	}
	assert.Equal(t, 1, up.distinct(), "asked upstream once, then answered from the cache")
}
