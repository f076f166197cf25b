package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnreadAnswerChecked: an answer with a record miekg/dns does not read
// (an HTTPS ipv6hint holding an IPv4-mapped address), which a client whose
// answer needs no inspection gets as the upstream sent it, is held to what
// an answer miekg/dns reads is held to, over every transport: a response,
// with the ID it was sent with, the query's opcode and question (RFC 1035
// §4.1.1, §7.3). One that is not is unusable, never an RdataError, and the
// RdataError of one that is carries the caller's ID. Before, over TCP, DoT,
// DoH and DoQ the ID was not compared at all, and the question only by the
// Handler.
func TestUnreadAnswerChecked(t *testing.T) {
	type mutation func(t *testing.T, q *dns.Msg) []byte
	answered := func(t *testing.T, q *dns.Msg) []byte { return unreadHintAnswer(t, q) }
	cases := []struct {
		name   string
		answer mutation
		ok     bool
		udp    bool // asked over UDP too: the socket drops a wrong ID unread
	}{
		{"answers", answered, true, true},
		{"wrong ID", func(t *testing.T, q *dns.Msg) []byte {
			b := unreadHintAnswer(t, q)
			binary.BigEndian.PutUint16(b, q.Id+1)
			return b
		}, false, false},
		{"another question", func(t *testing.T, q *dns.Msg) []byte {
			other := q.Copy()
			other.Question[0].Name = "other.svcb.example."
			return unreadHintAnswer(t, other)
		}, false, true},
		{"not a response", func(t *testing.T, q *dns.Msg) []byte {
			b := unreadHintAnswer(t, q)
			b[2] &^= 0x80
			return b
		}, false, true},
		{"another opcode", func(t *testing.T, q *dns.Msg) []byte {
			b := unreadHintAnswer(t, q)
			b[2] |= dns.OpcodeStatus << 3
			return b
		}, false, true},
	}
	pki := newPKI(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, tr := range unreadTransports(t, pki, tc.answer) {
				if tr.name == "udp" && !tc.udp {
					continue
				}
				t.Run(tr.name, func(t *testing.T) {
					q := clientQuery("a.svcb.example.", false)
					q.Question[0].Qtype = dns.TypeHTTPS
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					resp, err := tr.exchange(ctx, q)
					assert.Nil(t, resp)
					var rd *RdataError
					if !tc.ok {
						assert.False(t, errors.As(err, &rd), "no RdataError: %v", err)
						assert.True(t, errors.Is(err, ErrAnswerUnusable) || errors.Is(err, ErrProtocol), "unusable: %v", err)
						return
					}
					require.ErrorAs(t, err, &rd)
					assert.True(t, rd.answer(), "a whole answer")
					assert.Equal(t, q.Id, dnswire.ID(rd.Raw), "the caller's ID")
				})
			}
		})
	}
}

// unreadTransport is one way to ask the upstream of TestUnreadAnswerChecked.
type unreadTransport struct {
	name     string
	exchange func(context.Context, *dns.Msg) (*dns.Msg, error)
}

// unreadTransports serves answer's octets, made for each query as it came
// (its ID, DoH's and DoQ's 0), over plain UDP and TCP, DoT, DoH and DoQ,
// and returns a transport to each.
func unreadTransports(t *testing.T, pki *testPKI, answer func(*testing.T, *dns.Msg) []byte) []unreadTransport {
	t.Helper()
	plain := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		_, _ = w.Write(answer(t, r))
		return nil
	})
	p := NewPlain(plain.addr, Options{Timeout: 2 * time.Second})
	t.Cleanup(func() { _ = p.Close() })

	dot := startDoT(t, pki.good, func(s *dotTestServer, conn net.Conn) {
		defer conn.Close()
		for {
			b, err := readFrame(conn)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(b) != nil {
				return
			}
			a := answer(t, q)
			if _, err := conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...)); err != nil {
				return
			}
		}
	})
	doh := startDoH(t, pki.good, func(q *dns.Msg) *dns.Msg { return nil })
	doh.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
		body, err := io.ReadAll(io.LimitReader(r.Body, 65536))
		q := new(dns.Msg)
		if err != nil || q.Unpack(body) != nil {
			http.Error(w, "no query", http.StatusBadRequest)
			return true
		}
		w.Header().Set("Content-Type", "application/dns-message")
		_, _ = w.Write(answer(t, q))
		return true
	})
	doq := startDoQ(t, pki.good, func(s *doqTestServer, conn *quic.Conn, str *quic.Stream) {
		q, ok := readDoQQuery(s, conn, str)
		if !ok {
			return
		}
		a := answer(t, q)
		_, _ = str.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(a))), a...))
		_ = str.Close()
	})
	opts := pki.testOptions(t)
	return []unreadTransport{
		{"udp", p.Exchange},
		{"tcp", p.ExchangeTCP},
		{"dot", newEncryptedTransport(t, dot.upstream(testServerName), opts).Exchange},
		{"doh", newEncryptedTransport(t, doh.upstream(testServerName), opts).Exchange},
		{"doq", newEncryptedTransport(t, doq.upstream(testServerName), opts).Exchange},
	}
}

// checkMalformedOnEveryTransport asks the question qname of each of
// unreadTransports, answered with answer: with ok, the answer comes back
// holding its one answer record; else it is refused as malformed (an
// error wrapping ErrAnswerMalformed, or ErrProtocol on the encrypted
// transports), never returned, nor as an RdataError to relay.
func checkMalformedOnEveryTransport(t *testing.T, pki *testPKI, qname string, answer func(*testing.T, *dns.Msg) []byte, ok bool) {
	t.Helper()
	for _, tr := range unreadTransports(t, pki, answer) {
		t.Run(tr.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := tr.exchange(ctx, clientQuery(qname, false))
			if ok {
				require.NoError(t, err)
				assert.Len(t, resp.Answer, 1)
				return
			}
			assert.Nil(t, resp, "relayed as an answer")
			var rd *RdataError
			assert.False(t, errors.As(err, &rd), "not an answer to relay: %v", err)
			assert.True(t, errors.Is(err, ErrAnswerMalformed) || errors.Is(err, ErrProtocol), "malformed: %v", err)
		})
	}
}
