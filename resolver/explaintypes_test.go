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
				assert.True(t, strings.HasSuffix(x.String(), "\nverdict: refused (REFUSED, Extended DNS Error 21 (Not Supported))\n"), x.String())
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

// TestExplainRPZActionsAsServed: explain gives the answer each RPZ
// trigger's action makes (TestRPZActions): the policy's action for CNAME .
// (NXDOMAIN, or REFUSED under action: refused), NODATA for CNAME *., no
// answer at all for rpz-drop., under either action, and the upstream's
// answer for each in shadow mode.
func TestExplainRPZActionsAsServed(t *testing.T) {
	snap := loadSnapshot(t, writeConfig(t, rpzActionsConfig, rpzActionsFiles, "127.0.0.1:53"), nil)
	const nodata = "NOERROR without records (NODATA): the RPZ trigger's action is CNAME *."
	const drop = "no answer at all: the RPZ trigger's action is rpz-drop"
	const shadow = "from upstream (shadow mode records a block)"
	for _, tc := range []struct {
		client, name, wantRcode string
	}{
		{"127.0.0.1", "tiktok.com.", "NXDOMAIN"},
		{"127.0.0.1", "douyin.com.", nodata},
		{"127.0.0.1", "bytedance.com.", drop},
		{"127.0.0.2", "tiktok.com.", "REFUSED"},
		{"127.0.0.2", "douyin.com.", nodata},
		{"127.0.0.2", "bytedance.com.", drop},
		{"127.0.0.4", "douyin.com.", shadow},
		{"127.0.0.4", "bytedance.com.", shadow},
	} {
		e := snap.Explain(netip.MustParseAddr(tc.client), tc.name, dns.TypeA)
		assert.Equal(t, tc.wantRcode, e.Rcode, "%s from %s", tc.name, tc.client)
	}
}
