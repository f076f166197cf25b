package resolver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// asked counts the queries u received for name, over both transports.
func (u *testUpstream) asked(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, s := range u.seen {
		if len(s.msg.Question) == 1 && strings.EqualFold(s.msg.Question[0].Name, name) {
			n++
		}
	}
	return n
}

// TestServfailUntilReady: with sources.servfail_until_ready, BIND's
// response-policy servfail-until-ready, a policy whose remote block list
// has no copy yet (a first start, its server down) answers its clients
// SERVFAIL with Extended DNS Error 14 (Not Ready, RFC 8914 §4.15) naming
// the list without its query string, on the wire path (UDP) and the
// message path (TCP), and asks no upstream; a name its other lists block
// is blocked, one its allow list allows is forwarded. Clients of no
// policy, of a policy whose lists are all there, and of a shadow-mode
// policy are answered as ever. `explain` says why. Once the list has a
// copy, its names are blocked and the rest forwarded. Without the
// setting, the same list blocks none of its names until its first copy
// (TestEmptyListBodyAtStartIsNoCopy).
func TestServfailUntilReady(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": names(8, "tiktok.com")})
	srv.set("", "", "down")
	list := srv.URL + "/tiktok.txt?token=s3cr3t"
	dir := testnet.WriteTree(t, map[string]string{
		"lists/local.txt": "capcut.com\n",
		"lists/allow.txt": "allowed.example\n",
		"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
allowed_clients: ["127.0.0.0/28"]
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s", lists/local.txt]
    allow: [lists/allow.txt]
  - name: ready
    clients: ["127.0.0.3/32"]
    block: [lists/local.txt]
  - name: shadow
    clients: ["127.0.0.4/32"]
    block: ["%s"]
    action: log
sources: {refresh: 1s, cache_dir: cache, servfail_until_ready: true}
`, up.addr, list, list),
	})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov, none, ready, shadow = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
	ok, why := f.ready(t)
	require.False(t, ok, "no copy yet: %s", why)
	assert.Contains(t, why, `meanwhile SERVFAIL to the clients of policy "gov" (sources.servfail_until_ready)`)
	const notReady = "policy not ready: SERVFAIL to its clients for every name its other lists neither block nor allow, until its remote block lists have a copy (sources.servfail_until_ready)"
	assert.True(t, logged(f.logs, notReady, map[string]any{"policy": "gov", "lists": []string{list}}))
	assert.Len(t, f.logs.FilterMessage(notReady).All(), 1, "the shadow policy answers nothing itself: it is ready")

	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{network + ".gov.example.org.", "www.tiktok.com."} {
			r := ask(t, f.addr, gov, network, question(name, dns.TypeA, true))
			require.Equal(t, dns.RcodeServerFailure, r.Rcode, "%s over %s", name, network)
			e := ede(r)
			require.NotNil(t, e, "%s over %s", name, network)
			assert.Equal(t, dns.ExtendedErrorCodeNotReady, e.InfoCode)
			assert.Equal(t, `policy "gov" not ready: list `+srv.URL+"/tiktok.txt has no copy yet", e.ExtraText)
			assert.Zero(t, up.asked(name), "%s: no upstream asked", name)
		}
		assert.Equal(t, dns.RcodeNameError, ask(t, f.addr, gov, network, question("capcut.com.", dns.TypeA, true)).Rcode,
			"blocked by the list that is there")
		assert.Equal(t, dns.RcodeSuccess, ask(t, f.addr, gov, network, question("allowed.example.", dns.TypeA, true)).Rcode,
			"allowed: allow beats every block, that list's too")
		for _, from := range []string{none, ready, shadow} {
			r := ask(t, f.addr, from, network, question("www.example.org.", dns.TypeA, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "from %s over %s", from, network)
		}
	}
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, ready, "capcut.com."))

	e := f.handler.Snapshot().Explain(netip.MustParseAddr(gov), "www.example.org.", dns.TypeA)
	assert.Equal(t, ResultServfail, e.Result)
	assert.Contains(t, e.String(), `policy "gov" is not ready: remote block list `+list+" has no copy yet")
	assert.Contains(t, e.String(), "verdict: servfail (SERVFAIL, Extended DNS Error 14 (Not Ready))")
	assert.NotContains(t, e.ClientString(), "s3cr3t", "a client's explain names the list without its token")
	j, err := json.Marshal(e)
	require.NoError(t, err)
	assert.Contains(t, string(j), `"not_ready":["`+list+`"]`)
	assert.Contains(t, string(j), `"verdict":"servfail"`)
	r := ask(t, f.addr, gov, "tcp", chaosQuestion("www.example.org.explain.dnsfence."))
	require.Equal(t, dns.RcodeSuccess, r.Rcode)
	assert.Contains(t, r.String(), "is not ready")
	assert.NotContains(t, r.String(), "s3cr3t")

	srv.set("", "", "")
	f.eventuallyRcode(t, gov, "www.tiktok.com.", dns.RcodeNameError, 5*time.Second)
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.example.org."), "the list has a copy: forwarded")
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "capcut.com."))
	require.Eventually(t, func() bool { ok, _ := f.ready(t); return ok }, 5*time.Second, 20*time.Millisecond)
	assert.True(t, logged(f.logs, "policy ready: its remote block lists have a copy", map[string]any{"policy": "gov"}))
	v, _ := metricValue(t, f.registry, "dnsfence_queries_total", "transport", "udp", "result", ResultServfail)
	assert.GreaterOrEqual(t, v, 2.0, "counted as SERVFAIL (and eventuallyRcode's tries before the copy)")
	v, _ = metricValue(t, f.registry, "dnsfence_queries_total", "transport", "tcp", "result", ResultServfail)
	assert.GreaterOrEqual(t, v, 2.0, "counted as SERVFAIL on the message path too")
	assert.Equal(t, ResultForwarded, f.handler.Snapshot().Explain(netip.MustParseAddr(gov), "www.example.org.", dns.TypeA).Result)
}

// TestServfailUntilReadyDecision: the decision behind TestServfailUntilReady
// for a client network a trusted proxy names, wider than the not-ready
// policy's range (Snapshot.alsoDeciding): its devices may be in that
// range, so that policy's readiness decides too (fail closed), as its
// blocks do. The copy arriving (Snapshot.withList) makes the policy ready,
// and the setting turned off serves the list empty, as before it.
func TestServfailUntilReadyDecision(t *testing.T) {
	const list = notReadyList
	build := func(t *testing.T, untilReady bool) *Snapshot {
		t.Helper()
		s, err := BuildSnapshotWith(notReadyConfig(t, untilReady), nil, nil)
		require.NoError(t, err)
		return s
	}
	proxy := netip.MustParseAddr("10.9.9.9")
	cases := []struct {
		client netip.Prefix
		name   string
		want   string
	}{
		{netip.MustParsePrefix("10.1.1.7/32"), "www.example.org.", ResultServfail},
		{netip.MustParsePrefix("10.1.2.7/32"), "www.example.org.", ResultForwarded},
		{netip.MustParsePrefix("10.1.2.7/32"), "capcut.com.", ResultBlocked},
		{netip.MustParsePrefix("10.1.0.0/16"), "www.example.org.", ResultServfail}, // wider than gov's range
		{netip.MustParsePrefix("10.1.0.0/16"), "capcut.com.", ResultBlocked},
		{netip.MustParsePrefix("10.2.0.0/16"), "www.example.org.", ResultForwarded},
	}
	s := build(t, true)
	for _, tc := range cases {
		o := s.decide(proxy, tc.client, tc.name)
		assert.Equal(t, tc.want, o.result, "%s for %s", tc.name, tc.client)
		if o.result == ResultServfail {
			assert.Equal(t, "gov", o.policy.Policy.Name, "%s for %s", tc.name, tc.client)
		}
	}

	copied, err := blocklist.Parse(list, []byte("tiktok.com\n"))
	require.NoError(t, err)
	ready := s.withList(list, copied)
	require.NotNil(t, ready)
	for _, tc := range cases {
		want := tc.want
		if want == ResultServfail {
			want = ResultForwarded
		}
		assert.Equal(t, want, ready.decide(proxy, tc.client, tc.name).result, "with a copy: %s for %s", tc.name, tc.client)
	}
	assert.Equal(t, ResultBlocked, ready.decide(proxy, netip.MustParsePrefix("10.1.0.0/16"), "www.tiktok.com.").result)
	assert.Equal(t, ResultServfail, s.decide(proxy, netip.MustParsePrefix("10.1.1.7/32"), "www.example.org.").result,
		"the snapshot withList copied is unchanged")

	off := build(t, false)
	for _, tc := range cases {
		want := tc.want
		if want == ResultServfail {
			want = ResultForwarded
		}
		assert.Equal(t, want, off.decide(proxy, tc.client, tc.name).result, "without the setting: %s for %s", tc.name, tc.client)
	}
}

// TestServfailUntilReadyTurnedOff: turning sources.servfail_until_ready off
// while a policy's remote block list has no copy would serve that list
// empty, its names unblocked: the edit is held as taking a block list out
// of the policy is (ErrRemoved), and SIGHUP applies it. Turned off once the
// list has a copy, it takes nothing away and is applied at once.
func TestServfailUntilReadyTurnedOff(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": names(8, "tiktok.com")})
	srv.set("", "", "down")
	list := srv.URL + "/tiktok.txt"
	text := func(untilReady bool) string { return oneURLConfig(up.addr, list, untilReady) }
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": text(true)})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	write := func(untilReady bool) {
		t.Helper()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), []byte(text(untilReady)), 0o644))
	}
	require.Equal(t, dns.RcodeServerFailure, f.rcode(t, gov, "www.example.org."))

	write(false)
	err := f.reloader.Reload(false)
	require.ErrorIs(t, err, ErrRemoved)
	assert.ErrorContains(t, err, `sources.servfail_until_ready turned off while remote block list `+list+` has no copy: policy "gov" would serve it empty, its names unblocked`)
	assert.Equal(t, dns.RcodeServerFailure, f.rcode(t, gov, "www.example.org."), "held")
	assert.True(t, f.handler.Snapshot().Config.Sources.ServfailUntilReady)

	require.NoError(t, f.reloader.Reload(true), "SIGHUP applies it")
	assert.Empty(t, f.logs.FilterMessage("policy ready: its remote block lists have a copy").All(),
		"the list has no copy: the setting was turned off")
	assert.True(t, logged(f.logs, "policy no longer answers SERVFAIL for its remote block lists without a copy: they block none of their names until their first copy",
		map[string]any{"policy": "gov", "lists": []string{list}}))
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.example.org."), "the list served empty")
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.tiktok.com."), "the list served empty")

	write(true)
	require.NoError(t, f.reloader.Reload(false), "turned on: nothing taken away")
	assert.Equal(t, dns.RcodeServerFailure, f.rcode(t, gov, "www.example.org."))

	srv.set("", "", "")
	f.eventuallyRcode(t, gov, "www.tiktok.com.", dns.RcodeNameError, 5*time.Second)
	write(false)
	require.NoError(t, f.reloader.Reload(false), "turned off with the list there: nothing taken away")
	assert.False(t, f.handler.Snapshot().Config.Sources.ServfailUntilReady)
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.example.org."))
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "www.tiktok.com."))
}

// TestServfailUntilReadySwapToListWithoutCopy: SIGHUP refuses a change the
// guards hold while a list it adds has no copy, rather than serve that
// list empty (TestRemoteListSwappedForAnother); with
// sources.servfail_until_ready the list is not served empty but answered
// SERVFAIL until its copy, so SIGHUP applies the change: a list moved to
// a host that is down blocks, fail closed, from the moment it is applied,
// and by its names once the host is up.
func TestServfailUntilReadySwapToListWithoutCopy(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/a.txt": names(8, "tiktok.com")})
	moved := startListServer(t, map[string]string{"/b.txt": names(8, "tiktok.com", "douyin.com")})
	moved.set("", "", "down")
	dir := t.TempDir()
	configure := func(list string) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), []byte(oneURLConfig(up.addr, list, true)), 0o644))
	}
	configure(srv.URL + "/a.txt")
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
	require.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "douyin.com."))

	configure(moved.URL + "/b.txt")
	require.ErrorIs(t, f.reloader.Reload(false), ErrRemoved, "an edit: held as a list taken out")
	require.NoError(t, f.reloader.Reload(true), "SIGHUP: applied, the new list not ready")
	assert.Equal(t, dns.RcodeServerFailure, f.rcode(t, gov, "tiktok.com."))
	assert.Equal(t, dns.RcodeServerFailure, f.rcode(t, gov, "douyin.com."))

	moved.set("", "", "")
	f.eventuallyRcode(t, gov, "douyin.com.", dns.RcodeNameError, 5*time.Second)
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.example.org."))
}

// TestServfailUntilReadyExplainWider: a client network a trusted proxy
// names, whose own policy (office, holding the whole network) allows the
// name, is answered SERVFAIL because the not-ready policy gov has a range
// inside it and neither blocks nor allows the name. The explanation is of
// gov, and must give gov's decision on the name (on no list), not
// office's allow as if gov allowed it, and say that the network is wider
// than gov's range.
func TestServfailUntilReadyExplainWider(t *testing.T) {
	s, err := BuildSnapshotWith(notReadyConfig(t, true), nil, nil)
	require.NoError(t, err)

	id := Identity{Source: netip.MustParseAddr("10.9.9.9"), Client: netip.MustParsePrefix("10.1.0.0/16"), Via: IdentityECS}
	o := s.decide(id.Source, id.Client, "allowed.example.")
	require.Equal(t, ResultServfail, o.result, "gov's devices may be in the network, and gov is not ready")
	require.Equal(t, "gov", o.policy.Policy.Name)
	assert.False(t, o.decision.Allowed, "the decision is gov's, which allows nothing: %+v", o.decision)
	assert.True(t, o.wider, "gov decides for a range inside the network")

	e := s.ExplainFor(id, "allowed.example.", dns.TypeA)
	text := e.String()
	assert.Contains(t, text, `subnet 10.1.0.0/16 is wider than range 10.1.1.0/24 (`, text)
	assert.Contains(t, text, "allowed.example. is on no list of the policy\n", text)
	assert.Contains(t, text, `under policy "office": allowed.example. allowed by`, text)
	assert.Contains(t, text, "verdict: servfail (SERVFAIL, Extended DNS Error 14 (Not Ready))", text)
	j, err := json.Marshal(e)
	require.NoError(t, err)
	var got struct {
		Decision struct {
			Allowed bool `json:"allowed"`
		} `json:"decision"`
	}
	require.NoError(t, json.Unmarshal(j, &got))
	assert.False(t, got.Decision.Allowed, "gov's decision: %s", j)
}

// TestBuildSnapshotKeepsNoCopy: BuildSnapshot, which takes the remote
// lists of the snapshot before (a Reloader with no sources running),
// keeps a list that had no copy as one without: its empty stand-in is
// no copy, and the policy stays not ready.
func TestBuildSnapshotKeepsNoCopy(t *testing.T) {
	cfg := notReadyConfig(t, true)
	first, err := BuildSnapshotWith(cfg, nil, nil)
	require.NoError(t, err)
	require.False(t, first.Policies[0].Ready())
	next, err := BuildSnapshot(cfg, first)
	require.NoError(t, err)
	assert.False(t, next.Policies[0].Ready(), "still no copy")
	assert.Equal(t, ResultServfail, next.decide(netip.MustParseAddr("10.1.1.1"), netip.MustParsePrefix("10.1.1.1/32"), "www.example.org.").result)
	assert.Equal(t, ResultForwarded, next.decide(netip.MustParseAddr("10.1.2.1"), netip.MustParsePrefix("10.1.2.1/32"), "www.example.org.").result,
		"office is ready")
}

// TestBuildSnapshotKeepsRemoteCopies: BuildSnapshot of a Reloader with no
// sources running takes the copies of the remote lists the snapshot before
// holds: a reload of the files keeps blocking what the remote list blocks,
// and the policy stays ready.
func TestBuildSnapshotKeepsRemoteCopies(t *testing.T) {
	cfg := notReadyConfig(t, true)
	l, err := blocklist.Parse(notReadyList, []byte("tiktok.com\n"))
	require.NoError(t, err)
	first, err := BuildSnapshotWith(cfg, nil, map[string]*blocklist.List{notReadyList: l})
	require.NoError(t, err)
	require.True(t, first.Policies[0].Ready())
	next, err := BuildSnapshot(cfg, first)
	require.NoError(t, err)
	assert.True(t, next.Policies[0].Ready(), "the copy kept")
	assert.Same(t, l, next.Lists[notReadyList])
	assert.Equal(t, ResultBlocked, next.decide(netip.MustParseAddr("10.1.1.1"), netip.MustParsePrefix("10.1.1.1/32"), "www.tiktok.com.").result)
}

// notReadyList is the remote block list of notReadyConfig: never fetched.
const notReadyList = "https://lists.example.gov/tiktok.txt"

// notReadyConfig is a configuration whose policy gov (10.1.1.0/24) blocks
// notReadyList, with sources.servfail_until_ready set to untilReady, inside
// policy office (10.1.0.0/16), which blocks capcut.com and allows
// allowed.example from files; 10.9.9.9 is a trusted proxy, and every
// client may ask explain questions.
func notReadyConfig(t *testing.T, untilReady bool) *config.Config {
	t.Helper()
	dir := testnet.WriteTree(t, map[string]string{
		"lists/local.txt": "capcut.com\n",
		"lists/allow.txt": "allowed.example\n",
	})
	cfg, err := config.Parse(filepath.Join(dir, "dnsfence.yaml"), []byte(fmt.Sprintf(`
listen: ["127.0.0.1:53"]
upstreams: ["127.0.0.1:5300"]
allowed_clients: ["10.0.0.0/8"]
trusted_proxies: ["10.9.9.9"]
explain_clients: ["10.0.0.0/8"]
policies:
  - name: gov
    clients: ["10.1.1.0/24"]
    block: ["%s"]
  - name: office
    clients: ["10.1.0.0/16"]
    block: [lists/local.txt]
    allow: [lists/allow.txt]
sources: {cache_dir: cache, servfail_until_ready: %t}
`, notReadyList, untilReady)), os.ReadFile)
	require.NoError(t, err)
	return cfg
}

// TestNotReadyText: the EDE text of a not-ready policy names its lists
// as a blocked answer names one (no query string), three at most, and
// how many more: it goes in every SERVFAIL of the policy, over UDP too.
func TestNotReadyText(t *testing.T) {
	assert.Equal(t, `policy "gov" not ready: list https://a.example/l.txt has no copy yet`,
		notReadyText("gov", []string{"https://a.example/l.txt?token=s3cr3t"}))
	assert.Equal(t, `policy "gov" not ready: lists https://a.example/1, https://a.example/2 have no copy yet`,
		notReadyText("gov", []string{"https://a.example/1", "https://a.example/2"}))
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("https://lists.example.gov/feeds/list-%02d.txt", i))
	}
	assert.Equal(t, `policy "gov" not ready: lists https://lists.example.gov/feeds/list-00.txt, https://lists.example.gov/feeds/list-01.txt, https://lists.example.gov/feeds/list-02.txt have no copy yet (and 1 more list)`,
		notReadyText("gov", many[:4]), "one more: a list")
	text := notReadyText("gov", many)
	assert.Equal(t, `policy "gov" not ready: lists https://lists.example.gov/feeds/list-00.txt, https://lists.example.gov/feeds/list-01.txt, https://lists.example.gov/feeds/list-02.txt have no copy yet (and 37 more lists)`, text)
}

// TestServfailUntilReadySIGHUPAllowListWithoutCopy: sources.servfail_until_ready
// answers SERVFAIL for a remote block list without a copy, not for an
// allow list: SIGHUP still refuses a change the guards hold while an
// allow list it adds has no copy, rather than serve that list empty (its
// names blocked, though the change allows them), as without the setting.
// It was applied, the allow list served empty.
func TestServfailUntilReadySIGHUPAllowListWithoutCopy(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/a.txt": names(8, "tiktok.com"), "/b.txt": names(8, "tiktok.com")})
	down := "http://" + testnet.RefusingAddr(t) + "/allow.txt" // nothing listens: its fetch fails at once
	dir := t.TempDir()
	configure := func(block string, allow ...string) {
		t.Helper()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dnsfence.yaml"), []byte(oneURLConfig(up.addr, block, true, allow...)), 0o644))
	}
	configure(srv.URL + "/a.txt")
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"
	require.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))

	configure(srv.URL+"/b.txt", down)
	require.ErrorIs(t, f.reloader.Reload(false), ErrRemoved, "an edit: held as a list taken out")
	err := f.reloader.Reload(true)
	require.ErrorIs(t, err, ErrNoCopy, "SIGHUP: the allow list would be served empty")
	assert.Contains(t, err.Error(), down+" (")
	assert.Equal(t, srv.URL+"/a.txt", f.handler.Snapshot().Config.Policies[0].Block[0], "the running state kept")
}
