package resolver

import (
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExplainNamesEachPolicyOnce: when a policy of Also blocks, explain
// lists the blocking policy holding the network (decided first) and then
// alsoDeciding's ranges, which hold a range of that same policy when it
// also has one inside the network: "and blocking policy gov" and "under
// policy gov" twice.
func TestExplainNamesEachPolicyOnce(t *testing.T) {
	files := map[string]string{"lark.txt": "larksuite.com\n", "ip.rpz": rpzHead + "32.5.2.0.192.rpz-ip CNAME .\n"}
	maps.Copy(files, testFiles)
	conf := strings.Replace(ecsNestedConfig, `clients: ["10.0.0.0/8", "127.0.0.3/32"]`, `clients: ["10.0.0.0/8", "10.1.2.200/32"]`, 1)
	path := writeConfig(t, conf, files, "127.0.0.1:53")
	snap := loadSnapshot(t, path, nil)
	id := Identity{Source: netip.MustParseAddr("127.0.0.2"), Client: netip.MustParsePrefix("10.1.2.0/24"), Via: IdentityECS}
	e := snap.ExplainFor(id, "larksuite.com.", dns.TypeA)
	require.Equal(t, ResultBlocked, e.Result)
	require.Equal(t, "strict", e.Range.Policy.Name)
	var names []string
	for _, cr := range e.Also {
		names = append(names, cr.Policy.Name)
	}
	assert.Equal(t, []string{"gov"}, names)
	assert.Equal(t, 1, strings.Count(e.String(), `under policy "gov"`), e.String())
}
