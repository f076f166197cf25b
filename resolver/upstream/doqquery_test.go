package upstream

import (
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
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

	twoQuestionsFail(t, tr)
	assert.Zero(t, srv.connections(), "nothing dialled")

	q := clientQuery("keepalive.example.", false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option,
		&dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE},
		&dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	codes := sentOptionCodes(t, tr, q, srv.queries)
	assert.NotContains(t, codes, uint16(dns.EDNS0TCPKEEPALIVE))
	assert.Contains(t, codes, uint16(dns.EDNS0NSID))
}
