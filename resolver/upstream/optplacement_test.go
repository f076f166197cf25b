package upstream

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Addresses of TestOPTPlacement: 127.0.85.0/24.
const optPlacementIP = "127.0.85.1"

// rawOPT is an OPT record in wire form: the root, TYPE 41, a UDP size of
// 1232, no extended RCODE, version 0, no flags, and the options given.
func rawOPT(options ...byte) []byte {
	b := []byte{0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0}
	b = binary.BigEndian.AppendUint16(b, uint16(len(options)))
	return append(b, options...)
}

// withOPT is the answer b with the OPT record opt added as the last record
// of its section (0 answer, 1 authority, 2 additional); b's additional
// section must be empty when the section is another, so that the record
// can be appended at the end.
func withOPT(t testing.TB, b []byte, section int, opt []byte) []byte {
	t.Helper()
	count := 6 + 2*section
	if section < 2 {
		require.Zero(t, binary.BigEndian.Uint16(b[10:]), "no additional record after the %d section", section)
		if section == 0 {
			require.Zero(t, binary.BigEndian.Uint16(b[8:]), "no authority record after the answer section")
		}
	}
	b = append(b, opt...)
	binary.BigEndian.PutUint16(b[count:], binary.BigEndian.Uint16(b[count:])+1)
	return b
}

// optAnswer is defaultAnswer's answer to q, packed, without its OPT record
// when edns is false.
func optAnswer(t testing.TB, q *dns.Msg, edns bool) []byte {
	t.Helper()
	m := defaultAnswer(nil, q)
	if !edns {
		m.Extra = nil
	}
	b, err := m.Pack()
	require.NoError(t, err)
	return b
}

// TestOPTPlacement: an upstream answer with more than one OPT record, or
// one in its answer or authority section, breaks RFC 6891 §6.1.1 ("it MUST
// be the only OPT RR in that message", in the additional section): which
// one carries the upstream's EDNS cannot be told. It is a malformed answer
// on every transport and on both paths, as the wire path's walkAnswer
// already took it; before, the message path read whatever miekg/dns made of
// it, and a wire query read it as a message (checkAsMessage). A Forwarder
// asks the next upstream and counts the first as malformed, as Unbound
// refuses such an answer (FORMERR from its parser), but for two OPT records
// of one owner and UDP size, which it reads as one RRset.
func TestOPTPlacement(t *testing.T) {
	// An Extended DNS Error of one octet, which miekg/dns refuses: the
	// answer is read again without it (UnpackAnswer).
	shortEDE := []byte{0, 15, 0, 1, 0}
	cases := []struct {
		name   string
		answer func(t *testing.T, q *dns.Msg) []byte
		ok     bool
	}{
		{"one OPT", func(t *testing.T, q *dns.Msg) []byte { return optAnswer(t, q, true) }, true},
		{"one OPT with an EDE too short", func(t *testing.T, q *dns.Msg) []byte {
			return withOPT(t, optAnswer(t, q, false), 2, rawOPT(shortEDE...))
		}, true},
		{"two OPT records", func(t *testing.T, q *dns.Msg) []byte {
			return withOPT(t, optAnswer(t, q, true), 2, rawOPT())
		}, false},
		{"two OPT records, one with an EDE too short", func(t *testing.T, q *dns.Msg) []byte {
			return withOPT(t, optAnswer(t, q, true), 2, rawOPT(shortEDE...))
		}, false},
		{"an OPT in the answer section", func(t *testing.T, q *dns.Msg) []byte {
			return withOPT(t, optAnswer(t, q, false), 0, rawOPT())
		}, false},
		{"an OPT in the authority section", func(t *testing.T, q *dns.Msg) []byte {
			return withOPT(t, optAnswer(t, q, false), 1, rawOPT())
		}, false},
		{"two OPT records in an answer miekg/dns does not read", func(t *testing.T, q *dns.Msg) []byte {
			b := unreadHintAnswer(t, q) // without an OPT: q has none
			return withOPT(t, withOPT(t, b, 2, rawOPT()), 2, rawOPT())
		}, false},
	}
	pki := newPKI(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkMalformedOnEveryTransport(t, pki, "opt.example.", tc.answer, tc.ok)
		})
	}

	t.Run("Forwarder", func(t *testing.T) {
		for _, placement := range cases[2:6] {
			t.Run(placement.name, func(t *testing.T) {
				first := startUpstreamOn(t, optPlacementIP, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
					if r.Question[0].Name == "." {
						return defaultAnswer(w, r) // up, for the probes
					}
					_, _ = w.Write(placement.answer(t, r))
					return nil
				})
				second := startUpstreamOn(t, optPlacementIP, nil)
				paths := []struct {
					name string
					ask  func(f *Forwarder) (from string, err error)
				}{
					{"Forward", func(f *Forwarder) (string, error) {
						resp, from, err := f.Forward(context.Background(), question("a.opt.example.", dns.TypeA, true), false)
						if err == nil {
							assert.Len(t, resp.Answer, 1)
						}
						return from, err
					}},
					{"ForwardWire", func(f *Forwarder) (string, error) {
						a, from, err := f.ForwardWire(context.Background(), wireQuestion("b.opt.example.", dns.TypeA))
						if err == nil {
							assert.NotNil(t, a.Raw, "the answer in wire form")
						}
						return from, err
					}},
					{"StartWire", func(f *Forwarder) (string, error) {
						then := make(thenChan, 2)
						f.StartWire(wireQuestion("c.opt.example.", dns.TypeA), then, nil)
						r := then.wait(t)
						return r.from, r.err
					}},
				}
				for _, path := range paths {
					// A Forwarder each: the first upstream, failed, is
					// skipped while the second is up.
					reg := prometheus.NewRegistry()
					f, err := New([]string{first.addr, second.addr}, Options{Timeout: 2 * time.Second, Metrics: NewMetrics(reg)})
					require.NoError(t, err)
					from, err := path.ask(f)
					require.NoError(t, err, path.name)
					assert.Equal(t, second.addr, from, "%s: the next upstream's answer", path.name)
					assert.Equal(t, map[string]float64{kindMalformed: 1}, upstreamErrors(t, reg, first.addr), path.name)
					f.Close()
				}
			})
		}
	})
}
