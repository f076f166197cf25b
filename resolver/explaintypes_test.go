package resolver

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExplainTypesAsServed: explain says what the server answers for the
// types it answers before any policy. A zone transfer (AXFR, IXFR) from an
// allowed client is REFUSED with Extended DNS Error 21 whatever its policy
// would decide for the name; explain called a blocked name's AXFR "blocked
// (NXDOMAIN)" and another's "forwarded". A meta type (OPT, TSIG, 128-248)
// is FORMERR: MetaQType, which explain's command refuses, says which.
func TestExplainTypesAsServed(t *testing.T) {
	up := startUpstream(t, defaultAnswer)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, from := range []string{"127.0.0.1", "127.0.0.3", "127.0.0.9"} { // blocking policy, non-blocking one, no policy
		for _, name := range []string{"www.tiktok.com.", "example.org."} {
			for _, qtype := range []uint16{dns.TypeAXFR, dns.TypeIXFR} {
				r := ask(t, f.addr, from, "tcp", question(name, qtype, true))
				x := f.handler.Snapshot().Explain(netip.MustParseAddr(from), name, qtype)
				assert.Equal(t, dns.RcodeRefused, r.Rcode, "%s %s from %s", name, dns.Type(qtype), from)
				e := ede(r)
				require.NotNil(t, e, "%s %s from %s", name, dns.Type(qtype), from)
				assert.Equal(t, ResultRefused, x.Result, "%s %s from %s", name, dns.Type(qtype), from)
				assert.True(t, x.ZoneTransfer)
				assert.Equal(t, "REFUSED, Extended DNS Error 21 (Not Supported)", x.Rcode)
				assert.EqualValues(t, dns.ExtendedErrorCodeNotSupported, e.InfoCode)
				assert.Contains(t, x.String(), "a zone transfer: refused before any policy")
				assert.NotContains(t, x.String(), "blocked by")
			}
		}
	}
	for qtype := range uint16(256) {
		m := question("example.org.", qtype, true)
		r := ask(t, f.addr, "127.0.0.1", "udp", m)
		if MetaQType(qtype) {
			assert.Equal(t, dns.RcodeFormatError, r.Rcode, "%s", dns.Type(qtype))
		} else {
			assert.NotEqual(t, dns.RcodeFormatError, r.Rcode, "%s", dns.Type(qtype))
		}
	}
	assert.True(t, strings.HasPrefix(f.handler.Snapshot().Explain(netip.MustParseAddr("127.0.0.1"), "www.tiktok.com.", dns.TypeA).Rcode, "NXDOMAIN"))
}
