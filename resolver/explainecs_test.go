package resolver

import (
	"encoding/json"
	"fmt"
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

// TestExplainAnswerBlockedByAnotherPolicy: when a policy of Also blocks
// the answer (a CNAME into capcut.com, which strict blocks and gov does
// not), ExplainAnswer explains it under that policy as Explain does a
// name it blocks: the network is wider than strict's range, gov (which
// holds the whole network) decides beside it, and strict is not named
// twice. The explanation said "instead of no policy: no range holds the
// whole subnet" and named strict beside itself, gov not at all, in the
// text and in the JSON.
func TestExplainAnswerBlockedByAnotherPolicy(t *testing.T) {
	files := map[string]string{"lark.txt": "larksuite.com\n", "ip.rpz": rpzHead + "32.5.2.0.192.rpz-ip CNAME .\n"}
	maps.Copy(files, testFiles)
	snap := loadSnapshot(t, writeConfig(t, ecsNestedConfig, files, "127.0.0.1:53"), nil)
	id := Identity{Source: netip.MustParseAddr("127.0.0.2"), Client: netip.MustParsePrefix("10.1.2.0/24"), Via: IdentityECS}
	e := snap.ExplainFor(id, "cloaked.example.", dns.TypeA)
	require.Equal(t, ResultForwarded, e.Result, "the name itself is on no list")
	require.Equal(t, "gov", e.Range.Policy.Name)
	resp := new(dns.Msg)
	resp.SetQuestion("cloaked.example.", dns.TypeA)
	resp.Answer = []dns.RR{mustRR("cloaked.example. 300 IN CNAME capcut.com."), mustRR("capcut.com. 300 IN A 192.0.2.7")}
	snap.ExplainAnswer(&e, resp)
	require.Equal(t, ResultBlocked, e.Result)
	require.Equal(t, "strict", e.Range.Policy.Name, "the answer is blocked by strict")

	text := e.String()
	assert.Contains(t, text, "\n  subnet 10.1.2.0/24 is wider than range 10.1.2.0/26 (", text)
	assert.NotContains(t, text, "instead of", "gov holds the whole network, and decides too")
	assert.Regexp(t, `\n  and blocking policy "gov" from range 10\.0\.0\.0/8 \(\S+\): its devices may be in the subnet too`, text)
	assert.NotContains(t, text, `and blocking policy "strict"`, text)
	assert.Contains(t, text, "\n  under policy \"gov\": cloaked.example. is on no list of the policy\n", text)
	assert.Regexp(t, `\n    capcut\.com\. blocked by \S+bytedance\.txt:1: capcut\.com\n`, text)

	j, err := json.Marshal(e)
	require.NoError(t, err)
	var got struct {
		Policy struct{ Policy string } `json:"policy"`
		Also   []struct{ Policy string }
	}
	require.NoError(t, json.Unmarshal(j, &got))
	assert.Equal(t, "strict", got.Policy.Policy, "%s", j)
	require.Len(t, got.Also, 1, "%s", j)
	assert.Equal(t, "gov", got.Also[0].Policy, "%s", j)
}

// TestExplainNamesEveryOtherPolicy: the explanation for an ECS network
// names, beside the policy deciding, every other blocking policy that has
// a range inside the network (Also), in the configuration's order: strict
// and lab beside gov, which holds the network, for a name none blocks;
// gov (which holds it) and lab beside strict, for a name strict blocks.
// An IPv4 client written as an IPv4-mapped IPv6 address is explained as
// the IPv4 address.
func TestExplainNamesEveryOtherPolicy(t *testing.T) {
	files := map[string]string{"lark.txt": "larksuite.com\n"}
	maps.Copy(files, testFiles)
	snap := loadSnapshot(t, writeConfig(t, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.181.0/24", "10.0.0.0/8"]
trusted_proxies: ["127.0.181.2/32"]
policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: ["tiktok.txt"]
  - name: strict
    clients: ["10.1.2.0/26"]
    block: ["bytedance.txt"]
  - name: lab
    clients: ["10.1.2.128/26"]
    block: ["lark.txt"]
`, files, "127.0.0.1:53"), nil)
	id := Identity{Source: netip.MustParseAddr("127.0.181.2"), Client: netip.MustParsePrefix("10.1.2.0/24"), Via: IdentityECS}
	names := func(crs []ClientRange) []string {
		var out []string
		for _, cr := range crs {
			out = append(out, cr.Policy.Name)
		}
		return out
	}
	for _, tc := range []struct {
		qname, wantPolicy string
		wantWider         bool
		wantAlso          []string
	}{
		{"www.example.org.", "gov", false, []string{"strict", "lab"}},
		{"capcut.com.", "strict", true, []string{"gov", "lab"}},
	} {
		t.Run(tc.qname, func(t *testing.T) {
			e := snap.ExplainFor(id, tc.qname, dns.TypeA)
			assert.Equal(t, tc.wantPolicy, e.Range.Policy.Name)
			assert.Equal(t, tc.wantWider, e.Wider)
			assert.Equal(t, tc.wantAlso, names(e.Also))
			text := e.String()
			for _, p := range tc.wantAlso {
				assert.Contains(t, text, fmt.Sprintf("\n  and blocking policy %q from range ", p), text)
				assert.Contains(t, text, fmt.Sprintf("\n  under policy %q: %s ", p, tc.qname), text)
			}
		})
	}

	// A name in a local zone is answered before any list is asked: the
	// policies beside gov are named, with no decision of theirs.
	local := snap.ExplainFor(id, "onion.", dns.TypeA)
	require.Equal(t, ResultLocal, local.Result)
	j, err := json.Marshal(local)
	require.NoError(t, err)
	var got struct {
		Also []map[string]any
	}
	require.NoError(t, json.Unmarshal(j, &got))
	require.Len(t, got.Also, 2, "%s", j)
	for _, a := range got.Also {
		assert.NotContains(t, a, "decision", "%s", j)
	}

	// A client outside allowed_clients is allowed by no range.
	refused := snap.Explain(netip.MustParseAddr("192.0.2.1"), "capcut.com.", dns.TypeA)
	require.False(t, refused.Allowed)
	j, err = json.Marshal(refused)
	require.NoError(t, err)
	assert.NotContains(t, string(j), "allowed_by", "%s", j)

	e := snap.Explain(netip.MustParseAddr("::ffff:10.1.2.5"), "capcut.com.", dns.TypeA)
	assert.Equal(t, netip.MustParseAddr("10.1.2.5"), e.Client)
	require.Equal(t, ResultBlocked, e.Result)
	assert.Equal(t, "strict", e.Range.Policy.Name)
	assert.True(t, strings.HasPrefix(e.String(), "client 10.1.2.5\n"), e.String())
}

// TestExplainAnswerHops: ExplainAnswer names each record of the answer by
// the name it leads to: the target of an alias, for a client of no
// policy too; the address a response-IP trigger holds, and only that
// (an address no trigger holds leaves the record's name). The policy's
// own block of the answer keeps the ranges it beats. An explanation that
// is not forwarded (blocked) is left as it is: its client gets no
// upstream answer.
func TestExplainAnswerHops(t *testing.T) {
	files := map[string]string{"ip.rpz": rpzHead + "32.5.2.0.192.rpz-ip CNAME .\n"}
	maps.Copy(files, testFiles)
	snap := loadSnapshot(t, writeConfig(t, `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
allowed_clients: ["127.0.181.0/24"]
policies:
  - name: gov
    clients: ["127.0.181.1/32"]
    block: ["tiktok.txt", "ip.rpz"]
  - name: office
    clients: ["127.0.181.0/25"]
`, files, "127.0.0.1:53"), nil)
	gov, none := netip.MustParseAddr("127.0.181.1"), netip.MustParseAddr("127.0.181.200")
	answer := func(name string, rrs ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		for _, s := range rrs {
			m.Answer = append(m.Answer, mustRR("%s", s))
		}
		return m
	}
	hopNames := func(e Explanation) []string {
		var out []string
		for _, h := range e.Hops {
			out = append(out, h.Name)
		}
		return out
	}

	e := snap.Explain(gov, "www.tiktok.com.", dns.TypeA)
	snap.ExplainAnswer(&e, answer("www.tiktok.com.", "www.tiktok.com. 300 IN A 192.0.2.7"))
	assert.Empty(t, e.Hops, "blocked: no upstream answer")
	assert.Equal(t, "NXDOMAIN", e.Rcode)

	for _, tc := range []struct {
		client     netip.Addr
		name       string
		rrs        []string
		wantHops   []string
		wantResult string
	}{
		{none, "alias.example.", []string{"alias.example. 300 IN CNAME target.example.", "target.example. 300 IN A 192.0.2.7"},
			[]string{"target.example.", "target.example."}, ResultForwarded},
		{gov, "alias.example.", []string{"alias.example. 300 IN CNAME target.example.", "target.example. 300 IN A 192.0.2.7"},
			[]string{"target.example.", "target.example."}, ResultForwarded},
		{gov, "addr.example.", []string{"addr.example. 300 IN A 192.0.2.5"}, []string{"192.0.2.5"}, ResultBlocked},
	} {
		e := snap.Explain(tc.client, tc.name, dns.TypeA)
		require.Equal(t, ResultForwarded, e.Result)
		snap.ExplainAnswer(&e, answer(tc.name, tc.rrs...))
		assert.Equal(t, tc.wantHops, hopNames(e), "%s from %s", tc.name, tc.client)
		assert.Equal(t, tc.wantResult, e.Result, "%s from %s", tc.name, tc.client)
		if tc.client == gov {
			require.Len(t, e.Beaten, 1, "%s: gov's range beats office's", tc.name)
			assert.Equal(t, "office", e.Beaten[0].Policy.Name)
		}
		j, err := json.Marshal(e)
		require.NoError(t, err)
		var got struct {
			Answer []struct {
				Record   string
				Decision struct{ Name string }
			}
		}
		require.NoError(t, json.Unmarshal(j, &got))
		var names []string
		for _, h := range got.Answer {
			names = append(names, h.Decision.Name)
		}
		assert.Equal(t, tc.wantHops, names, "%s", j)
	}

	// One record, not inspected (no policy, or an exemption): said so.
	for _, client := range []netip.Addr{none, netip.MustParseAddr("127.0.181.100")} {
		e = snap.Explain(client, "plain.example.", dns.TypeA)
		snap.ExplainAnswer(&e, answer("plain.example.", "plain.example. 300 IN A 192.0.2.7"))
		assert.Contains(t, e.String(), "\n  the answer is not inspected: ", e.String())
	}
}
