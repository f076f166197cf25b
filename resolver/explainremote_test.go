package resolver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestExplainJSONNamesTheRemoteCopy: explain's JSON names the copy of a
// remote list an entry is on, as a line number cannot: the SHA-256 of a
// URL list's body, the serial of a zone transfer's zone (and no line, the
// transfer numbering its triggers in order). Its text says what a
// trigger's own action (NODATA, drop) does, which the policy's blocked
// answer does not.
func TestExplainJSONNamesTheRemoteCopy(t *testing.T) {
	const url = "https://lists.example.gov/tiktok.txt"
	const zone = "rpz.test."
	const axfr = "axfr://127.0.0.1:53/rpz.test"
	dir := testnet.WriteTree(t, map[string]string{"local.txt": "example.com\n"})
	cfg, err := config.Parse(filepath.Join(dir, "dnsfence.yaml"), []byte(fmt.Sprintf(`
listen: ["127.0.0.1:5353"]
upstreams: ["127.0.0.1:5300"]
allowed_clients: ["10.0.0.0/8"]
explain_clients: ["10.0.0.0/8"]
policies:
  - name: gov
    clients: ["10.1.1.0/24"]
    block: ["%s", "%s", local.txt]
sources: {cache_dir: cache}
`, url, axfr)), os.ReadFile)
	require.NoError(t, err)
	byURL, err := blocklist.Parse(url, []byte("tiktok.com\n"))
	require.NoError(t, err)
	byZone, _, _, err := buildSourceList(axfr, source.Content{Source: axfr, Kind: source.KindZone, Zone: zone, Serial: 7,
		Records: []dns.RR{spellingSOA(zone, 7), spellingCNAME("capcut.com." + zone),
			&dns.CNAME{Hdr: dns.RR_Header{Name: "nodata.example." + zone, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "*."},
			&dns.CNAME{Hdr: dns.RR_Header{Name: "drop.example." + zone, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: "rpz-drop."}}, Transfer: source.TransferAXFR}, nil)
	require.NoError(t, err)
	s, err := BuildSnapshotWith(cfg, nil, map[string]*blocklist.List{url: byURL, axfr: byZone})
	require.NoError(t, err)

	a := netip.MustParseAddr("10.1.1.1")
	explain := func(name string) Explanation {
		return s.ExplainFor(Identity{Source: a, Client: netip.PrefixFrom(a, 32)}, name, dns.TypeA)
	}
	entry := func(name string) map[string]any {
		t.Helper()
		j, err := json.Marshal(explain(name))
		require.NoError(t, err)
		var got struct {
			Decision struct {
				Blocked bool           `json:"blocked"`
				Entry   map[string]any `json:"entry"`
			} `json:"decision"`
		}
		require.NoError(t, json.Unmarshal(j, &got))
		require.True(t, got.Decision.Blocked, "%s", j)
		return got.Decision.Entry
	}
	e := entry("www.tiktok.com.")
	assert.Equal(t, url, e["list"])
	assert.Equal(t, byURL.Hash(), e["sha256"])
	assert.NotContains(t, e, "serial")
	assert.EqualValues(t, 1, e["line"])

	e = entry("capcut.com.")
	assert.Equal(t, axfr, e["list"])
	assert.EqualValues(t, 7, e["serial"])
	assert.NotContains(t, e, "line")
	assert.NotContains(t, e, "sha256")

	e = entry("example.com.")
	assert.NotContains(t, e, "serial")
	assert.NotContains(t, e, "sha256")
	assert.EqualValues(t, 1, e["line"])

	for name, note := range map[string]string{
		"nodata.example.": "nodata.example. blocked by " + axfr + " serial 7, owner nodata.example.rpz.test.: nodata.example (action NODATA: CNAME *.)\n",
		"drop.example.":   "drop.example. blocked by " + axfr + " serial 7, owner drop.example.rpz.test.: drop.example (action drop: rpz-drop.)\n",
		"capcut.com.":     "capcut.com. blocked by " + axfr + " serial 7, owner capcut.com.rpz.test.: capcut.com\n",
	} {
		text := explain(name).String()
		assert.Contains(t, text, note, text)
	}
}
