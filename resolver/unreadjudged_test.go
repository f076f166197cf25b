package resolver

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unreadAnswerWith is unreadHintAnswer's answer to r, an HTTPS question
// below svcb.example., with its RCODE set to rcode and TC set when tc, in
// the octets: an answer with a record miekg/dns does not read that is no
// whole answer. Other questions get defaultAnswer's.
func unreadAnswerWith(rcode int, tc bool) func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		if q.Qtype != dns.TypeHTTPS || !dns.IsSubDomain("svcb.example.", q.Name) {
			return defaultAnswer(w, r)
		}
		rec := &octetsWriter{ResponseWriter: w}
		unreadHintAnswer(rec, r)
		b := rec.b
		b[3] = b[3]&^0xF | byte(rcode)
		if tc {
			b[2] |= 0x02
		}
		_, _ = w.Write(b)
		return nil
	}
}

// octetsWriter keeps what is written to it rather than sending it.
type octetsWriter struct {
	dns.ResponseWriter
	b []byte
}

func (w *octetsWriter) Write(b []byte) (int, error) {
	w.b = append([]byte(nil), b...)
	return len(b), nil
}

// TestUnreadNotWholeJudgedAsRead: an upstream answer with a record
// miekg/dns does not read (an HTTPS ipv6hint holding an IPv4-mapped
// address) that is no whole answer is counted and judged as the same
// answer read would be: one with TC set over TCP (a query that came over
// TCP, or the retry of a truncated datagram) is `truncated` and a failure
// of its upstream, one whose RCODE is SERVFAIL `rcode_servfail`, a
// failure of its upstream when another upstream answers the query, and
// cached briefly when every upstream answers so (RFC 9520), one whose
// RCODE is REFUSED `rcode_refused` and a failure of its upstream. In each
// case the next upstream is asked and answers. Before, each was counted
// as `malformed`, left its upstream's health as it was (the name's owner
// wrote the record, not the TC bit or the RCODE), and a SERVFAIL from
// every upstream was asked again at once. UDP (the wire path) and TCP.
func TestUnreadNotWholeJudgedAsRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rcode int
		tc    bool
		kind  string
	}{
		{"truncated", dns.RcodeSuccess, true, "truncated"},
		{"SERVFAIL", dns.RcodeServerFailure, false, "rcode_servfail"},
		{"REFUSED", dns.RcodeRefused, false, "rcode_refused"},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				bad := startUpstream(t, unreadAnswerWith(tc.rcode, tc.tc))
				good := startUpstream(t, nil)
				f := govFence(t, "upstream_timeout: 2s\nupstream_strategy: ordered", bad.addr, good.addr)
				i := 0
				require.Eventually(t, func() bool { // the queries go on
					i++
					r := ask(t, f.addr, "", network, question(fmt.Sprintf("n%d.svcb.example.", i), dns.TypeHTTPS, true))
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the next upstream's answer")
					assert.False(t, r.Truncated)
					return slices.Contains(f.handler.Snapshot().Forwarder().Down(), bad.addr)
				}, 10*time.Second, 10*time.Millisecond, "a failure of the upstream: marked down")
				assert.Positive(t, clientQueries(good), "the next upstream was asked")
				errs := upstreamErrors(t, f.registry, bad.addr)
				assert.Positive(t, errs[tc.kind], "counted as %s: %v", tc.kind, errs)
				assert.Len(t, errs, 1, "counted as %s only: %v", tc.kind, errs)

				if tc.rcode != dns.RcodeServerFailure {
					return
				}
				// Every upstream's SERVFAIL: cached briefly, as one read.
				only := startUpstream(t, unreadAnswerWith(tc.rcode, tc.tc))
				o := govFence(t, "upstream_timeout: 2s", only.addr)
				for i := range 2 {
					r := ask(t, o.addr, "", network, question("b.svcb.example.", dns.TypeHTTPS, true))
					assert.Equal(t, dns.RcodeServerFailure, r.Rcode, "%d", i)
					if e := ede(r); assert.NotNil(t, e, "%d", i) {
						assert.Contains(t, e.ExtraText, "upstream answered SERVFAIL", "%d", i)
					}
				}
				assert.Equal(t, 1, clientQueries(only), "the SERVFAIL of every upstream is cached briefly")
				assert.Equal(t, map[string]float64{"rcode_servfail": 1}, upstreamErrors(t, o.registry, only.addr))
			})
		}
	}
}
