package resolver

import (
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nat64Answer answers with the addresses a DNS64 resolver synthesizes
// (RFC 6147) for a name whose only A record is inside a listed IPv4
// prefix: the IPv4 address embedded in the NAT64 Well-Known Prefix
// 64:ff9b::/96 (RFC 6052 §2.1).
func nat64Answer(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	switch q.Name {
	case "dns64.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN AAAA 64:ff9b::198.51.100.7", q.Name))
	case "dns64-hint.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN HTTPS 1 . alpn=h2 ipv6hint=64:ff9b::c633:6408", q.Name))
	case "dns64-pass.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN AAAA 64:ff9b::198.51.100.9", q.Name))
	case "dns64-clean.example.net.":
		m.Answer = append(m.Answer, mustRR("%s 300 IN AAAA 64:ff9b::192.0.2.1", q.Name),
			mustRR("%s 300 IN AAAA 64:ff9b:1::198.51.100.7", q.Name)) // not the Well-Known Prefix
	default:
		m.Answer = append(m.Answer, mustRR("%s 300 IN A 192.0.2.1", q.Name))
	}
	return m
}

// TestResponseIPTriggersSeeNAT64: on an IPv6-only network behind NAT64
// (RFC 6146), a DNS64 upstream answers a name that has only an A record
// with an AAAA record in 64:ff9b::/96 holding that IPv4 address, and the
// device reaches the IPv4 address through the translator. A response-IP
// trigger for an IPv4 prefix blocks such an address as it blocks the A
// record itself (and IPv4-mapped addresses); a passthru prefix lets it
// stand, and a NAT64 prefix other than the Well-Known one, whose format
// dnsfence cannot know, is left alone.
func TestResponseIPTriggersSeeNAT64(t *testing.T) {
	up := startUpstream(t, nat64Answer)
	f := startFence(t, respIPConfig, respIPFiles, up.addr)
	for _, tc := range []struct {
		name    string
		qtype   uint16
		blocked bool
	}{
		{"dns64.example.net.", dns.TypeAAAA, true},
		{"dns64-hint.example.net.", dns.TypeHTTPS, true},
		{"dns64-pass.example.net.", dns.TypeAAAA, false},
		{"dns64-clean.example.net.", dns.TypeAAAA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, network := range []string{"udp", "tcp", "udp"} { // the last from the cache
				r := ask(t, f.addr, "127.0.0.1", network, question(tc.name, tc.qtype, true))
				if !tc.blocked {
					assert.Equal(t, dns.RcodeSuccess, r.Rcode, network)
					assert.NotEmpty(t, r.Answer, network)
					continue
				}
				assert.Equal(t, dns.RcodeNameError, r.Rcode, network)
				assert.Empty(t, r.Answer, network)
				require.NotNil(t, ede(r), network)
				assert.Equal(t, dns.ExtendedErrorCodeBlocked, ede(r).InfoCode, network)
			}
			r := ask(t, f.addr, "127.0.0.3", "udp", question(tc.name, tc.qtype, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the press office gets the plain answer")
			assert.NotEmpty(t, r.Answer)
		})
	}
}
