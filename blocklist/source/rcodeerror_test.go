package source

import (
	"errors"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
)

// TestRcodeErrorNamesTheTSIGError: an answer's RCODE error (the look's
// LastError, logged) names the TSIG error the primary gave, by its RFC
// 8945 name, or by its number for one without (19 BADMODE, 20 BADNAME and
// 21 BADALG are TKEY's, RFC 2930), never an empty name; it is ErrTSIG
// only with a TSIG error.
func TestRcodeErrorNamesTheTSIGError(t *testing.T) {
	const differs = ": the key (sources.tsig) differs from the primary's"
	for _, tc := range []struct {
		err  rcodeError
		want string
		tsig bool
	}{
		{rcodeError{what: "AXFR", rcode: dns.RcodeRefused}, "AXFR: primary answered REFUSED", false},
		{rcodeError{what: "SOA query", rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadSig}, "SOA query: primary answered NOTAUTH with TSIG error BADSIG" + differs, true},
		{rcodeError{what: "IXFR", rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadTrunc}, "IXFR: primary answered NOTAUTH with TSIG error BADTRUNC" + differs, true},
		{rcodeError{what: "AXFR", rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadAlg}, "AXFR: primary answered NOTAUTH with TSIG error 21" + differs, true},
	} {
		assert.Equal(t, tc.want, tc.err.Error())
		assert.Equal(t, tc.tsig, errors.Is(&tc.err, ErrTSIG), tc.want)
	}
}
