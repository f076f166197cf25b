package upstream

import (
	"context"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQQueryPacked: a query goes out over DNS over QUIC without
// edns-tcp-keepalive (RFC 9250 §5.5.2: a DoQ client MUST NOT send it) and
// with its other EDNS options, and one that cannot be packed (two
// questions) fails before anything is sent or dialled, as over DoT
// (TestDoTQueryPacked).
func TestDoQQueryPacked(t *testing.T) {
	pki := newPKI(t)
	srv := startDoQ(t, pki.good, serveDoQ(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))

	two := clientQuery("one.example.", false)
	two.Question = append(two.Question, dns.Question{Name: "two.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	resp, err := tr.Exchange(context.Background(), two)
	assert.Nil(t, resp)
	assert.ErrorContains(t, err, "2 questions")
	assert.Zero(t, srv.connections(), "nothing dialled")

	q := clientQuery("keepalive.example.", false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option,
		&dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE},
		&dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	_, err = tr.Exchange(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, srv.queries(), 1)
	sent := new(dns.Msg)
	require.NoError(t, sent.Unpack(srv.queries()[0]))
	var codes []uint16
	if o := sent.IsEdns0(); assert.NotNil(t, o) {
		for _, e := range o.Option {
			codes = append(codes, e.Option())
		}
	}
	assert.NotContains(t, codes, uint16(dns.EDNS0TCPKEEPALIVE))
	assert.Contains(t, codes, uint16(dns.EDNS0NSID))
}
