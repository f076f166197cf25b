package upstream

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHAgeUnreadAnswer: an answer miekg/dns does not read, which the
// caller gets in octets (RdataError.Raw), is aged by its Age header in
// those octets as one it reads is (TestDoHAge, TestDoHAgeNegative): every
// TTL less the age, down to 0; an SOA of the authority section first
// brought down to its MINIMUM (RFC 2308 §5), an SOA of another section
// not; a TTL with its top bit set and OPT's flags left as they came. With
// no usable Age, no octet changes.
func TestDoHAgeUnreadAnswer(t *testing.T) {
	pki := newPKI(t)
	type ttls struct {
		https, answerSOA, authoritySOA, extra, topBit uint32
	}
	for _, tc := range []struct {
		name string
		age  string // the Age field; "": none
		want ttls
	}{
		{"no age", "", ttls{300, 3600, 3600, 100, 1 << 31}},
		{"not a number", "soon", ttls{300, 3600, 3600, 100, 1 << 31}},
		{"age 1", "1", ttls{299, 3599, 299, 99, 1 << 31}},
		{"age 250", "250", ttls{50, 3350, 50, 0, 1 << 31}},
		{"age past every ttl", "86400", ttls{0, 0, 0, 0, 1 << 31}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startDoH(t, pki.good, answerWithA)
			srv.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				q := dohQuery(r)
				if q == nil {
					return false
				}
				w.Header().Set("Content-Type", "application/dns-message")
				if tc.age != "" {
					w.Header().Set("Age", tc.age)
				}
				_, _ = w.Write(unreadAgedAnswer(t, q))
				return true
			})
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			q := clientQuery("a.svcb.example.", false)
			q.Question[0].Qtype = dns.TypeHTTPS
			resp, err := tr.Exchange(context.Background(), q)
			assert.Nil(t, resp)
			rd, ok := errors.AsType[*RdataError](err)
			require.True(t, ok, "an RdataError: %v", err)

			var got ttls
			var optTTL uint32
			var seen int
			qs, ok := dnswire.ReadQuestion(rd.Raw)
			require.True(t, ok)
			require.True(t, dnswire.Walk(rd.Raw, qs.End, func(r dnswire.Record) bool {
				seen++
				switch {
				case r.Type == dns.TypeHTTPS:
					got.https = r.TTL
				case r.Type == dns.TypeSOA && r.Section == dnswire.Answer:
					got.answerSOA = r.TTL
				case r.Type == dns.TypeSOA && r.Section == dnswire.Authority:
					got.authoritySOA = r.TTL
					assert.Equal(t, uint32(300), dnswire.SOAMinimum(rd.Raw, r), "the MINIMUM is left as signed")
				case r.Type == dns.TypeA && r.TTL >= 1<<31:
					got.topBit = r.TTL
				case r.Type == dns.TypeA:
					got.extra = r.TTL
				case r.Type == dns.TypeOPT:
					optTTL = r.TTL
				}
				return true
			}))
			assert.Equal(t, 6, seen, "the records")
			assert.Equal(t, tc.want, got)
			assert.Equal(t, uint32(0x8000), optTTL, "OPT's flags (DO) are not aged")
		})
	}
}

// unreadAgedAnswer is the answer to q, an HTTPS question, in octets that
// miekg/dns does not unpack (an ipv6hint holding an IPv4-mapped address,
// as unreadHintAnswer writes): the HTTPS record with TTL 300 and an SOA
// with TTL 3600 in the answer section, an SOA with TTL 3600 and MINIMUM
// 300 in the authority section, and in the additional section an A whose
// TTL has its top bit set, an A with TTL 100 after it, and OPT with DO.
func unreadAgedAnswer(t testing.TB, q *dns.Msg) []byte {
	t.Helper()
	m := new(dns.Msg).SetReply(q)
	m.Answer = []dns.RR{
		hintedHTTPS(q.Question[0].Name, 300),
		testnet.MustRR("svcb.example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 300"),
	}
	m.Ns = []dns.RR{testnet.MustRR("example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 300")}
	top := testnet.MustRR("b.example. 100 IN A 192.0.2.2")
	top.Header().Ttl = 1 << 31
	m.Extra = []dns.RR{top, testnet.MustRR("a.example. 100 IN A 192.0.2.1")}
	m.SetEdns0(1232, true)
	return unreadPacked(t, m)
}
