package upstream

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countedMore is the answer b with the count at offset at (6 ANCOUNT, 8
// NSCOUNT, 10 ARCOUNT) one more than the records b holds: a message that
// ends before the records its header counts.
func countedMore(b []byte, at int) []byte {
	binary.BigEndian.PutUint16(b[at:], binary.BigEndian.Uint16(b[at:])+1)
	return b
}

// TestAnswerEndingBeforeItsRecords: an upstream answer that ends before
// the records its header counts (RFC 1035 §4.1.1) is malformed on every
// transport and on both paths, as the listeners take such a query
// (FORMERR) and as Unbound's parser takes such an answer (FORMERR).
// miekg/dns stops reading where the message ends, whatever the counts:
// an answer counting one A record and ending after its question was
// relayed as NODATA, one counting two and holding one as the one, and
// one counting an OPT record it did not hold as an answer without EDNS,
// each a message the upstream did not send whole. Found comparing
// dnsfence with dnsdist 1.7, which relays such an answer as it came.
func TestAnswerEndingBeforeItsRecords(t *testing.T) {
	cases := []struct {
		name   string
		answer func(t *testing.T, q *dns.Msg) []byte
		ok     bool
	}{
		{"whole", func(t *testing.T, q *dns.Msg) []byte { return optAnswer(t, q, false) }, true},
		{"one answer counted, none held", func(t *testing.T, q *dns.Msg) []byte {
			m := defaultAnswer(nil, q)
			m.Answer, m.Extra = nil, nil
			b, err := m.Pack()
			require.NoError(t, err)
			return countedMore(b, 6)
		}, false},
		{"two answers counted, one held", func(t *testing.T, q *dns.Msg) []byte {
			return countedMore(optAnswer(t, q, false), 6)
		}, false},
		{"an authority record counted, none held", func(t *testing.T, q *dns.Msg) []byte {
			return countedMore(optAnswer(t, q, false), 8)
		}, false},
		{"an additional record counted, none held", func(t *testing.T, q *dns.Msg) []byte {
			return countedMore(optAnswer(t, q, false), 10)
		}, false},
		{"an OPT held, one more additional counted", func(t *testing.T, q *dns.Msg) []byte {
			return countedMore(optAnswer(t, q, true), 10)
		}, false},
	}
	pki := newPKI(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkMalformedOnEveryTransport(t, pki, "cut.example.", tc.answer, tc.ok)
			t.Run("Forwarder", func(t *testing.T) {
				up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
					if r.Question[0].Name == "." {
						return defaultAnswer(w, r) // the health check's probe stands
					}
					_, _ = w.Write(tc.answer(t, r))
					return nil
				})
				fw := NewForwarder([]string{up.addr}, 2*time.Second, false)
				t.Cleanup(fw.Close)
				want := "malformed"
				if tc.ok {
					want = ""
				}
				for _, tcp := range []bool{false, true} {
					resp, _, err := fw.Forward(t.Context(), question("a.cut.example.", dns.TypeA, true), tcp)
					assert.Equal(t, want, causes(err), "message path, TCP %v: %v", tcp, resp)
				}
				a, _, err := fw.ForwardWire(t.Context(), wireQuestion("b.cut.example.", dns.TypeA))
				assert.Equal(t, want, causes(err), "wire path: %v", a)
			})
		})
	}
}

// TestAnswerOfAHeaderAlone: an answer that is a header alone, its QDCOUNT
// still counting the question (a failure some servers send so: miekg/dns
// reads it as a header, without a question), is no answer ending before
// the records its header counts (TestAnswerEndingBeforeItsRecords): it is
// read by its header, a REFUSED the upstream's refusal on every transport
// (over UDP asked again over TCP first, as any question-less failure:
// checkDatagram), and a Forwarder counts it as one (rcode_refused), not
// as malformed.
func TestAnswerOfAHeaderAlone(t *testing.T) {
	headerAlone := func(t *testing.T, q *dns.Msg) []byte {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeRefused)
		b, err := m.Pack()
		require.NoError(t, err)
		require.Equal(t, uint16(1), binary.BigEndian.Uint16(b[4:]), "QDCOUNT")
		return b[:12]
	}
	for _, tr := range unreadTransports(t, newPKI(t), headerAlone) {
		t.Run(tr.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := tr.exchange(ctx, clientQuery("header.example.", false))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeRefused, resp.Rcode)
			assert.Empty(t, resp.Question)
		})
	}
	t.Run("Forwarder", func(t *testing.T) {
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
			if r.Question[0].Name == "." {
				return defaultAnswer(w, r) // the health check's probe stands
			}
			_, _ = w.Write(headerAlone(t, r))
			return nil
		})
		fw := NewForwarder([]string{up.addr}, 2*time.Second, false)
		t.Cleanup(fw.Close)
		for _, tcp := range []bool{false, true} {
			resp, _, err := fw.Forward(t.Context(), question("a.header.example.", dns.TypeA, true), tcp)
			assert.Equal(t, "rcode_refused", causes(err), "message path, TCP %v: %v", tcp, resp)
		}
		a, _, err := fw.ForwardWire(t.Context(), wireQuestion("b.header.example.", dns.TypeA))
		assert.Equal(t, "rcode_refused", causes(err), "wire path: %v", a)
	})
}

// TestTruncatedDatagramEndingBeforeItsRecords: a UDP answer with TC set
// that ends before the records its header counts (cut at a record's end
// or inside one, as a server or a middlebox truncating the datagram
// leaves it) is a truncated answer, asked again over TCP and not counted
// as an error, on both paths, as one that holds what it counts is: its
// records are never used. Unbound falls back to TCP on TC before parsing
// the datagram ("this discards partial UDP contents", serviced_udp_callback).
// Taken for malformed, it was counted as such (upstream errors
// kind="malformed") although TCP answered. Read as its header, question
// and OPT alone (headerOnly), it is so whatever its counts say and
// wherever it was cut: inside its OPT record's options (whose RDATA
// length then runs past the datagram's end), or counting 256 answers or
// more (ANCOUNT's high octet; left so, the header alone counted records
// it did not hold, and was read as a truncated message again, and so on).
func TestTruncatedDatagramEndingBeforeItsRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  bool // an OPT record with 128 octets of padding, last in the datagram
		cut  func(b []byte) []byte
	}{
		{name: "at a record's end", cut: func(b []byte) []byte { return countedMore(b, 6) }},
		{name: "inside a record", cut: func(b []byte) []byte { return b[:len(b)-2] }},
		{name: "inside its OPT record's options", opt: true, cut: func(b []byte) []byte { return b[:len(b)-100] }},
		{name: "counting 256 answers more", cut: func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[6:], binary.BigEndian.Uint16(b[6:])+256)
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				if _, udp := w.RemoteAddr().(*net.UDPAddr); !udp || r.Question[0].Name == "." {
					return defaultAnswer(w, r)
				}
				m := defaultAnswer(nil, r)
				m.Truncated, m.Extra = true, nil
				if tc.opt {
					m.SetEdns0(1232, false)
					m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, 128)}}
				}
				b, err := m.Pack()
				require.NoError(t, err)
				_, _ = w.Write(tc.cut(b))
				return nil
			})
			reg := prometheus.NewRegistry()
			f, err := New([]string{up.addr}, Options{Timeout: 2 * time.Second, Metrics: NewMetrics(reg)})
			require.NoError(t, err)
			t.Cleanup(f.Close)
			resp, _, err := f.Forward(t.Context(), question("a.tc.example.", dns.TypeA, true), false)
			require.NoError(t, err, "message path")
			assert.Len(t, resp.Answer, 1, "message path: TCP's answer")
			a, _, err := f.ForwardWire(t.Context(), wireQuestion("b.tc.example.", dns.TypeA))
			require.NoError(t, err, "wire path")
			require.NotNil(t, a.Msg, "wire path: TCP's answer")
			assert.Len(t, a.Msg.Answer, 1, "wire path: TCP's answer")
			assert.Empty(t, upstreamErrors(t, reg, up.addr), "no error: a truncated answer, asked again over TCP")
		})
	}
}
