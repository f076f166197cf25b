package resolver

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBlockedAnswerFittedToASmallBuffer: a blocked answer packed on the
// wire path (NXDOMAIN, the SOA, EDE 15 whose text names the policy and the
// list's path) can be larger than a client's EDNS buffer of 512 for a long
// name blocked by a list of a long path. It is then built as a message
// and fitted as any answer is: the EDE's text left out first, the answer
// still NXDOMAIN with its SOA, within the 512 octets the client can read.
func TestBlockedAnswerFittedToASmallBuffer(t *testing.T) {
	up := startUpstream(t, nil)
	list := strings.Repeat("l", 200) + ".txt"
	f := startFence(t, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.0.0/28"]
log: {queries: none}
policies:
  - name: government-devices
    clients: ["127.0.0.1/32"]
    block: ["`+list+`"]
`, map[string]string{list: "tiktok.com\n"}, up.addr)
	label := strings.Repeat("a", 63)
	name := label + "." + label + "." + label + ".tiktok.com."
	m := question(name, dns.TypeA, false)
	m.SetEdns0(512, false)
	r := ask(t, f.addr, "127.0.0.1", "udp", m)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)
	require.Len(t, r.Ns, 1)
	assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype)
	assert.False(t, r.Truncated)
	assert.LessOrEqual(t, r.Len(), 512)
	if e := ede(r); assert.NotNil(t, e, "the code kept") {
		assert.Equal(t, dns.ExtendedErrorCodeBlocked, e.InfoCode)
		assert.Empty(t, e.ExtraText, "its text left out")
	}
	assert.Empty(t, up.queries(), "not forwarded")
}
