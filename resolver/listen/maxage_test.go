package listen

import (
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCacheMaxAgeNegativeAfterCNAME: a CNAME whose target does not
// exist is a negative answer for the target (RFC 2308 §2.1, §5): its
// freshness is bounded by the SOA MINIMUM as much as a plain NXDOMAIN's.
// cacheMaxAge applies MINIMUM only when the answer section is empty.
func TestCacheMaxAgeNegativeAfterCNAME(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		require.NoError(t, err)
		return r
	}
	soa := rr("example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 60")

	plain := new(dns.Msg)
	plain.Rcode = dns.RcodeNameError
	plain.Ns = []dns.RR{soa}
	assert.Equal(t, uint32(60), cacheMaxAge(plain), "plain NXDOMAIN")

	chained := new(dns.Msg)
	chained.Rcode = dns.RcodeNameError
	chained.Answer = []dns.RR{rr("www.example. 3600 IN CNAME gone.example.")}
	chained.Ns = []dns.RR{soa}
	assert.Equal(t, uint32(60), cacheMaxAge(chained), "NXDOMAIN after a CNAME")

	nodata := new(dns.Msg)
	nodata.Answer = []dns.RR{rr("www.example. 3600 IN CNAME host.example.")}
	nodata.Ns = []dns.RR{soa}
	assert.Equal(t, uint32(60), cacheMaxAge(nodata), "NODATA after a CNAME")
}
