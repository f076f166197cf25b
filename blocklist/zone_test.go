package blocklist

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const zoneHead = "$ORIGIN rpz.example.gov.\n$TTL 300\n@ SOA localhost. root.localhost. 2026010100 3600 600 86400 60\n  NS localhost.\n"

// zoneList parses an RPZ zone made of zoneHead and records, one a line
// from line 5; it fails on any problem.
func zoneList(t *testing.T, records ...string) *List {
	t.Helper()
	l, err := Parse("policy.rpz", []byte(zoneHead+strings.Join(records, "\n")+"\n"))
	require.NoError(t, err)
	return l
}

func TestRPZMatch(t *testing.T) {
	l := zoneList(t,
		"tiktok.com CNAME .", // 5
		"*.tiktok.com CNAME .",
		"ok.tiktok.com CNAME rpz-passthru.",
		"*.ok.tiktok.com CNAME *.",
		"nodata.example CNAME *.", // 9
		"*.below.example CNAME rpz-drop.",
		`\098ytedance.COM CNAME .`, // an escaped owner: bytedance.com
		"*.deep.a.example CNAME rpz-passthru.",
		"*.a.example CNAME .", // 13
		"x.wild.example CNAME rpz-drop.",
		"*.wild.example CNAME *.", // a wildcard after the exact trigger of the same node... of another node
		"*.both.example CNAME *.",
		"both.example CNAME rpz-drop.", // 17: the exact trigger after the wildcard of the same name
	)
	for _, tc := range []struct {
		qname    string
		name     string // the entry's name; "" for no match
		action   Action
		wildcard bool
		line     int
	}{
		{"tiktok.com.", "tiktok.com", ActionNXDOMAIN, false, 5},
		{"TikTok.COM", "TikTok.COM", ActionNXDOMAIN, false, 5},
		{"www.tiktok.com.", "tiktok.com", ActionNXDOMAIN, true, 6},
		{"a.b.c.tiktok.com.", "tiktok.com", ActionNXDOMAIN, true, 6},
		{"ok.tiktok.com.", "ok.tiktok.com", ActionPassthru, false, 7},
		{"x.ok.tiktok.com.", "ok.tiktok.com", ActionNODATA, true, 8},
		{"nodata.example.", "nodata.example", ActionNODATA, false, 9},
		{"x.nodata.example.", "", 0, false, 0}, // an exact trigger does not cover the names below
		{"below.example.", "", 0, false, 0},    // a wildcard does not cover its own name
		{"x.below.example.", "below.example", ActionDrop, true, 10},
		{"bytedance.com.", "bytedance.com", ActionNXDOMAIN, false, 11},
		{`\098ytedance.com.`, `\098ytedance.com`, ActionNXDOMAIN, false, 11},
		{"www.bytedance.com.", "", 0, false, 0},
		{"x.deep.a.example.", "deep.a.example", ActionPassthru, true, 12}, // the longer wildcard wins
		{"deep.a.example.", "a.example", ActionNXDOMAIN, true, 13},
		{"x.a.example.", "a.example", ActionNXDOMAIN, true, 13},
		{"a.example.", "", 0, false, 0},
		{"x.wild.example.", "x.wild.example", ActionDrop, false, 14}, // exact beats wildcard
		{"y.wild.example.", "wild.example", ActionNODATA, true, 15},
		{"y.x.wild.example.", "wild.example", ActionNODATA, true, 15},
		{"both.example.", "both.example", ActionDrop, false, 17},
		{"x.both.example.", "both.example", ActionNODATA, true, 16},
		{"example.", "", 0, false, 0},
		{"rpz.example.gov.", "", 0, false, 0},
		{"tiktok\\.com.", "", 0, false, 0},
	} {
		t.Run(tc.qname, func(t *testing.T) {
			e, tr, ok := l.MatchTrigger(tc.qname)
			m, mok := l.Match(tc.qname)
			assert.Equal(t, ok, mok)
			assert.Equal(t, e, m, "Match gives the entry MatchTrigger gives")
			if tc.name == "" {
				assert.False(t, ok, "matched %+v", e)
				return
			}
			require.True(t, ok)
			assert.Equal(t, Entry{List: l, Name: tc.name, Line: tc.line}, e)
			assert.Equal(t, Trigger{Action: tc.action, Wildcard: tc.wildcard}, tr)
		})
	}
	assert.True(t, l.HasPassthru())
	assert.False(t, l.HasIPTriggers())
	assert.Equal(t, "rpz.example.gov.", l.Origin())
	serial, ok := l.Serial()
	assert.True(t, ok)
	assert.Equal(t, uint32(2026010100), serial)
	assert.Equal(t, 13, l.Len())
}

// TestPlainListActions checks that plain lists are unchanged: every entry
// blocks with NXDOMAIN, matches its name and the names below it, and the
// RPZ accessors say there is nothing of RPZ.
func TestPlainListActions(t *testing.T) {
	l, err := Parse("plain.txt", []byte("tiktok.com\n"))
	require.NoError(t, err)
	for _, q := range []string{"tiktok.com", "www.tiktok.com"} {
		e, tr, ok := l.MatchTrigger(q)
		require.True(t, ok)
		assert.Equal(t, Entry{List: l, Name: "tiktok.com", Line: 1}, e)
		assert.Equal(t, Trigger{Action: ActionNXDOMAIN}, tr)
		assert.Empty(t, e.Owner(tr))
		_, isIP := e.Prefix()
		assert.False(t, isIP)
	}
	for e, tr := range l.AllTriggers() {
		assert.Equal(t, Entry{List: l, Name: "tiktok.com", Line: 1}, e)
		assert.Equal(t, Trigger{}, tr)
	}
	assert.False(t, l.HasPassthru())
	assert.False(t, l.HasIPTriggers())
	assert.Empty(t, l.Origin())
	_, ok := l.Serial()
	assert.False(t, ok)
	_, _, ok = l.MatchIP(netip.MustParseAddr("192.0.2.1"))
	assert.False(t, ok)
	var nilList *List
	_, _, ok = nilList.MatchIP(netip.MustParseAddr("192.0.2.1"))
	assert.False(t, ok)
	_, _, ok = nilList.MatchTrigger("tiktok.com")
	assert.False(t, ok)
}

func TestMatchIP(t *testing.T) {
	l := zoneList(t,
		"24.0.2.0.192.rpz-ip CNAME .", // 5
		"32.7.2.0.192.rpz-ip CNAME rpz-passthru.",
		"16.0.0.168.192.rpz-ip CNAME *.",
		"48.zz.db8.2001.rpz-ip CNAME .", // 8
		"128.1.zz.db8.2001.rpz-ip CNAME rpz-drop.",
		"64.zz.1.0.db8.2001.rpz-ip CNAME rpz-passthru.", // 10
		"tiktok.com CNAME .",
	)
	for _, tc := range []struct {
		addr   string
		prefix string // "" for no match
		action Action
		line   int
	}{
		{"192.0.2.1", "192.0.2.0/24", ActionNXDOMAIN, 5},
		{"192.0.2.255", "192.0.2.0/24", ActionNXDOMAIN, 5},
		{"192.0.2.7", "192.0.2.7/32", ActionPassthru, 6}, // the longest prefix wins
		{"::ffff:192.0.2.7", "192.0.2.7/32", ActionPassthru, 6},
		{"192.168.44.1", "192.168.0.0/16", ActionNODATA, 7},
		{"192.0.3.1", "", 0, 0},
		{"2001:db8::2", "2001:db8::/48", ActionNXDOMAIN, 8},
		{"2001:db8::1", "2001:db8::1/128", ActionDrop, 9},
		{"2001:db8:0:1::5", "2001:db8:0:1::/64", ActionPassthru, 10},
		{"2001:db8:1::1", "", 0, 0},
		{"fe80::1%eth0", "", 0, 0},
		{"2001:db8::2%eth0", "2001:db8::/48", ActionNXDOMAIN, 8},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			e, tr, ok := l.MatchIP(netip.MustParseAddr(tc.addr))
			if tc.prefix == "" {
				assert.False(t, ok, "matched %+v", e)
				return
			}
			require.True(t, ok)
			p := netip.MustParsePrefix(tc.prefix)
			assert.Equal(t, Entry{List: l, Name: tc.prefix, Line: tc.line}, e)
			assert.Equal(t, Trigger{Action: tc.action}, tr)
			got, isIP := e.Prefix()
			assert.True(t, isIP)
			assert.Equal(t, p, got)
			assert.Equal(t, rpz.IPTrigger(p)+".rpz.example.gov.", e.Owner(tr))
		})
	}
	assert.True(t, l.HasIPTriggers())
	assert.True(t, l.HasPassthru())
	_, ok := l.Match("192.0.2.1")
	assert.False(t, ok, "a response-IP trigger is no name entry")
}

// TestMatchIPMappedIPv6Prefix: an IPv6 prefix shorter than /96 that holds
// all of ::ffff:0:0/96 holds every IPv4 address, as RPZ (BIND) matches an
// IPv4 address as the IPv4-mapped address it stands for; an IPv4 prefix
// holding the address is longer and wins. One that holds only part of
// the IPv6 space below it (2001:db8::/32) holds no IPv4 address.
func TestMatchIPMappedIPv6Prefix(t *testing.T) {
	l := zoneList(t,
		"80.zz.rpz-ip CNAME .", // 5: ::/80
		"24.0.2.0.192.rpz-ip CNAME rpz-passthru.",
		"32.zz.db8.2001.rpz-ip CNAME *.",
	)
	for _, tc := range []struct {
		addr   string
		prefix string // "" for no match
		action Action
	}{
		{"198.51.100.1", "::/80", ActionNXDOMAIN},
		{"::ffff:198.51.100.1", "::/80", ActionNXDOMAIN},
		{"0.0.0.1", "::/80", ActionNXDOMAIN},
		{"192.0.2.1", "192.0.2.0/24", ActionPassthru},
		{"::1", "::/80", ActionNXDOMAIN},
		{"2001:db8::1", "2001:db8::/32", ActionNODATA},
		{"2001:db9::1", "", 0},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			e, tr, ok := l.MatchIP(netip.MustParseAddr(tc.addr))
			if tc.prefix == "" {
				assert.False(t, ok, "matched %+v", e)
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.prefix, e.Name)
			assert.Equal(t, tc.action, tr.Action)
		})
	}
	only6 := zoneList(t, "32.zz.db8.2001.rpz-ip CNAME .", "96.zz.rpz-ip CNAME .") // ::/96 holds no mapped address
	_, _, ok := only6.MatchIP(netip.MustParseAddr("198.51.100.1"))
	assert.False(t, ok)
	// ::fffe:0:0/95, one bit shorter than ::ffff:0:0/96, holds it too.
	wide := zoneList(t, "95.0.0.fffe.zz.rpz-ip CNAME .")
	e, _, ok := wide.MatchIP(netip.MustParseAddr("198.51.100.1"))
	require.True(t, ok)
	assert.Equal(t, "::fffe:0:0/95", e.Name)
	allocs := testing.AllocsPerRun(100, func() { l.MatchIP(netip.MustParseAddr("198.51.100.1")) })
	assert.Zero(t, allocs)

	// Added by an IXFR, it holds every IPv4 address as if built whole.
	x := transferList(t, rrs(t, "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5", "32.zz.db8.2001.rpz-ip.rpz.example.gov. 60 CNAME ."))
	u, err := x.Update([32]byte{}, 2, feed(nil), feed(rrs(t, "80.zz.rpz-ip.rpz.example.gov. 60 CNAME rpz-drop.")))
	require.NoError(t, err)
	e, tr, ok := u.MatchIP(netip.MustParseAddr("198.51.100.1"))
	require.True(t, ok)
	assert.Equal(t, "::/80", e.Name)
	assert.Equal(t, ActionDrop, tr.Action)
	_, _, ok = x.MatchIP(netip.MustParseAddr("198.51.100.1"))
	assert.False(t, ok, "the list updated is unchanged")
}

func TestRPZMatchDoesNotAllocate(t *testing.T) {
	l := zoneList(t, "24.0.2.0.192.rpz-ip CNAME .", "48.zz.db8.2001.rpz-ip CNAME .")
	for _, a := range []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("::ffff:192.0.2.1")} {
		allocs := testing.AllocsPerRun(100, func() { l.MatchIP(a) })
		assert.Zero(t, allocs, "%s", a)
	}
	rl := zoneList(t, "tiktok.com CNAME .", "*.tiktok.com CNAME *.", "both.example CNAME .", "*.both.example CNAME rpz-drop.")
	for _, q := range []string{"tiktok.com.", "www.tiktok.com.", "www.example.org.", "x.both.example"} {
		allocs := testing.AllocsPerRun(100, func() { rl.Match(q) })
		assert.Zero(t, allocs, "Match %s", q)
		allocs = testing.AllocsPerRun(100, func() { rl.MatchTrigger(q) })
		assert.Zero(t, allocs, "MatchTrigger %s", q)
	}
}

// TestRPZProblems checks that every unsupported record of an .rpz file is
// reported as file:line: owner: what is wrong, that the rest applies, and
// that the reports are ParseErrors (as the skipped-lines metric counts
// them).
func TestRPZProblems(t *testing.T) {
	text := zoneHead +
		"a.example CNAME .\n" + // 5
		"b.example A 192.0.2.1\n" +
		"c.example CNAME garden.example.\n" +
		"ns.example.rpz-nsdname CNAME .\n" +
		"32.1.2.0.192.rpz-nsip CNAME .\n" + // 9
		"24.0.0.0.10.rpz-client-ip CNAME .\n" +
		"d.example CNAME rpz-tcp-only.\n" +
		"33.1.2.0.192.rpz-ip CNAME .\n" +
		"24.1.2.0.192.rpz-ip CNAME .\n" + // 13
		"128.1.zz.db8.zz.2001.rpz-ip CNAME .\n" +
		`a\.b.example CNAME .` + "\n" +
		"a.example CNAME rpz-passthru.\n" +
		"e.example IN CNAME . junk\n" + // 17
		"f.example CNAME rpz-drop.\n" +
		"24.0.2.0.192.rpz-ip CNAME .\n" +
		"a.example CNAME .\n" + // 20: a duplicate
		"rpz-ip CNAME .\n" +
		"g.example CNAME rpz-foo.example.\n" +
		`h\.rpz.example.gov CNAME .` + "\n" +
		"tiktok.com:443 CNAME .\n" + // 24: a name with a port, or a user
		"*.user@capcut.com CNAME .\n"
	l, err := Parse("lists/policy.rpz", []byte(text))
	require.Error(t, err)
	var lines []string
	for _, e := range leaves(err) {
		var pe *ParseError
		require.ErrorAs(t, e, &pe)
		assert.Equal(t, "lists/policy.rpz", pe.File)
		lines = append(lines, e.Error())
	}
	assert.Equal(t, []string{
		`lists/policy.rpz:6: b.example.rpz.example.gov.: local data is not supported (A record; the actions are CNAME ., *., rpz-passthru. and rpz-drop.)`,
		`lists/policy.rpz:7: c.example.rpz.example.gov.: a CNAME to another name (a rewrite) is not supported (the actions are CNAME ., *., rpz-passthru. and rpz-drop.): garden.example.`,
		`lists/policy.rpz:8: ns.example.rpz-nsdname.rpz.example.gov.: NSDNAME triggers (rpz-nsdname) are not supported`,
		`lists/policy.rpz:9: 32.1.2.0.192.rpz-nsip.rpz.example.gov.: NSIP triggers (rpz-nsip) are not supported`,
		`lists/policy.rpz:10: 24.0.0.0.10.rpz-client-ip.rpz.example.gov.: client-IP triggers (rpz-client-ip) are not supported: the policy's clients choose who is blocked`,
		`lists/policy.rpz:11: d.example.rpz.example.gov.: the rpz-tcp-only action is not supported`,
		`lists/policy.rpz:12: 33.1.2.0.192.rpz-ip.rpz.example.gov.: bad prefix length in rpz-ip trigger: /33 is longer than the 32 bits of 192.0.2.1`,
		`lists/policy.rpz:13: 24.1.2.0.192.rpz-ip.rpz.example.gov.: rpz-ip prefix has host bits set: 192.0.2.1/24, did you mean 192.0.2.0/24`,
		`lists/policy.rpz:14: 128.1.zz.db8.zz.2001.rpz-ip.rpz.example.gov.: bad zz in rpz-ip trigger: it stands for one run of zero groups of an IPv6 address, once`,
		`lists/policy.rpz:15: a\.b.example.rpz.example.gov.: invalid character in name`,
		`lists/policy.rpz:16: a.example.rpz.example.gov.: a second trigger for this owner with another action; the block is kept (line 5): a block beats an rpz-passthru. at one owner`,
		`lists/policy.rpz:17: zone syntax: garbage after rdata: "junk"`,
		`lists/policy.rpz:21: rpz-ip.rpz.example.gov.: bad prefix length in rpz-ip trigger: no prefix before rpz-ip`,
		`lists/policy.rpz:22: g.example.rpz.example.gov.: a CNAME to another name (a rewrite) is not supported (the actions are CNAME ., *., rpz-passthru. and rpz-drop.): rpz-foo.example.`,
		`lists/policy.rpz:23: h\.rpz.example.gov.rpz.example.gov.: invalid character in name`,
		`lists/policy.rpz:24: tiktok.com:443.rpz.example.gov.: a port, a path or a user is no part of a name (write the name alone: tiktok.com)`,
		`lists/policy.rpz:25: *.user@capcut.com.rpz.example.gov.: a port, a path or a user is no part of a name (write the name alone: *.capcut.com)`,
	}, lines)
	assert.Equal(t, []Duplicate{{Name: "a.example", Line: 20, FirstLine: 5}}, l.Duplicates())
	var got []string
	for e, tr := range l.AllTriggers() {
		got = append(got, fmt.Sprintf("%s@%d %v", e.Owner(tr), e.Line, tr.Action))
	}
	assert.Equal(t, []string{"a.example.rpz.example.gov.@5 NXDOMAIN", "f.example.rpz.example.gov.@18 drop", "24.0.2.0.192.rpz-ip.rpz.example.gov.@19 NXDOMAIN"}, got)
}

// leaves flattens joined errors.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

func TestRPZProblemsBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(zoneHead)
	for i := range 150 {
		fmt.Fprintf(&b, "h%d.example A 192.0.2.1\n", i)
	}
	b.WriteString("ok.example CNAME .\n")
	l, err := Parse("junk.rpz", []byte(b.String()))
	require.Error(t, err)
	assert.Len(t, leaves(err), maxReported+1)
	assert.Contains(t, err.Error(), "junk.rpz: 50 more bad lines not shown")
	assert.Equal(t, 1, l.Len())
	n, first := BadLines(err)
	assert.Equal(t, 150, n)
	require.NotNil(t, first)
	assert.Equal(t, "h0.example.rpz.example.gov.", first.Owner)
}

// TestRPZAllAndContains checks All in zone order (name and response-IP
// triggers, with actions) and Contains for every name All gives.
func TestRPZAllAndContains(t *testing.T) {
	l := zoneList(t,
		"*.b.example CNAME *.",
		"a.example CNAME rpz-drop.",
		"24.0.2.0.192.rpz-ip CNAME .",
		"b.example CNAME rpz-passthru.",
		"48.zz.db8.2001.rpz-ip CNAME rpz-passthru.",
	)
	var got []string
	for e, tr := range l.AllTriggers() {
		got = append(got, fmt.Sprintf("%s@%d %v wildcard=%v %s", e.Name, e.Line, tr.Action, tr.Wildcard, e.Owner(tr)))
		assert.True(t, l.Contains(e.Name), e.Name)
	}
	var all []Entry
	for e := range l.All() {
		all = append(all, e)
	}
	assert.Len(t, all, 5, "All yields the entries AllTriggers yields")
	assert.Equal(t, []string{
		"b.example@5 NODATA wildcard=true *.b.example.rpz.example.gov.",
		"a.example@6 drop wildcard=false a.example.rpz.example.gov.",
		"192.0.2.0/24@7 NXDOMAIN wildcard=false 24.0.2.0.192.rpz-ip.rpz.example.gov.",
		"b.example@8 passthru wildcard=false b.example.rpz.example.gov.",
		"2001:db8::/48@9 passthru wildcard=false 48.zz.db8.2001.rpz-ip.rpz.example.gov.",
	}, got)
	assert.False(t, l.Contains("example"))
	assert.False(t, l.Contains("192.0.3.0/24"))
	assert.False(t, l.Contains("not/a/prefix"))
	assert.Equal(t, 5, l.Len())
}

// TestRPZFromRecords builds a list from the records of a zone transfer:
// problems name the source and the owner (a transfer has no lines), and
// entries are named by their owner.
func TestRPZFromRecords(t *testing.T) {
	var rrs []dns.RR
	for _, s := range []string{
		"rpz.example.gov. 60 SOA a. b. 77 2 3 4 5",
		"rpz.example.gov. 60 NS a.",
		"tiktok.com.rpz.example.gov. 60 CNAME .",
		`*.\116iktokv.com.rpz.example.gov. 60 CNAME .`,
		"x.rpz.example.gov. 60 TXT hello",
		"24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME rpz-drop.",
		"rpz.example.gov. 60 SOA a. b. 77 2 3 4 5",
	} {
		rr, err := dns.NewRR(s)
		require.NoError(t, err)
		rrs = append(rrs, rr)
	}
	const src = "axfr://127.0.0.1:5353/rpz.example.gov"
	l, err := FromZone(src, [32]byte{1}, len(rrs), func(h rpz.Handler) (rpz.Zone, error) {
		return rpz.FromRecords("rpz.example.gov.", rrs, h), nil
	})
	require.Error(t, err)
	assert.Equal(t, src+" x.rpz.example.gov.: local data is not supported (TXT record; the actions are CNAME ., *., rpz-passthru. and rpz-drop.)", err.Error())
	var pe *ParseError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, ParseError{File: src, Text: "x.rpz.example.gov.", Owner: "x.rpz.example.gov.", Err: pe.Err}, *pe)
	assert.Equal(t, src, l.File())
	assert.Equal(t, [32]byte{1}, l.Sum())
	serial, ok := l.Serial()
	assert.True(t, ok)
	assert.Equal(t, uint32(77), serial)

	e, tr, ok := l.MatchTrigger("www.tiktokv.com.")
	require.True(t, ok)
	assert.Equal(t, "*.tiktokv.com.rpz.example.gov.", e.Owner(tr))
	assert.Equal(t, 2, e.Line, "the trigger's position in the transfer")
	e, tr, ok = l.MatchIP(netip.MustParseAddr("192.0.2.9"))
	require.True(t, ok)
	assert.Equal(t, ActionDrop, tr.Action)
	assert.Equal(t, "24.0.2.0.192.rpz-ip.rpz.example.gov.", e.Owner(tr))

	boom := errors.New("transfer cut off")
	l, err = FromZone(src, [32]byte{}, 0, func(h rpz.Handler) (rpz.Zone, error) { return rpz.Zone{}, boom })
	assert.Nil(t, l)
	assert.ErrorIs(t, err, boom)
}

// TestRPZFileForms checks that a name ending in .rpz, in any case, is read
// as RPZ, that the zone saved the Windows way (byte-order mark, CRLF) reads
// the same, and that a .txt list is not read as RPZ.
func TestRPZFileForms(t *testing.T) {
	text := zoneHead + "tiktok.com CNAME .\n*.tiktok.com CNAME *.\n24.0.2.0.192.rpz-ip CNAME .\n"
	want := []string{"tiktok.com@5", "tiktok.com@6", "192.0.2.0/24@7"}
	for _, name := range []string{"a.rpz", "lists/B.RPZ", "c.Rpz"} {
		l, err := Parse(name, []byte(text))
		require.NoError(t, err, name)
		assert.Equal(t, want, entries(l), name)
		win, _ := windowsSaved([]byte(text))
		wl, err := Parse(name, win)
		require.NoError(t, err, name)
		assert.Equal(t, want, entries(wl), name)
		assert.NotEqual(t, l.Sum(), wl.Sum(), "the hash is of the raw bytes")
	}
	_, err := Parse("zone.txt", []byte(text))
	assert.Error(t, err, "a .txt list is not RPZ")
	_, err = Parse(".rpz", []byte("tiktok.com\n"))
	assert.NoError(t, err, "a file named only .rpz is a plain list")
}

// TestWatchRPZFile checks that an .rpz list is watched like any list: a
// change is reported, and the new content parses to the new triggers.
func TestWatchRPZFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.rpz")
	v1 := zoneHead + "a.example CNAME .\n"
	v2 := zoneHead + "a.example CNAME .\nb.example CNAME rpz-passthru.\n"
	require.NoError(t, os.WriteFile(path, []byte(v1), 0o644))
	rec := startWatch(t, path)
	require.NoError(t, os.WriteFile(path+".tmp", []byte(v2), 0o644))
	require.NoError(t, os.Rename(path+".tmp", path))
	eventually(t, rec, v2)
	got, _ := rec.last()
	l, err := Parse(path, []byte(got))
	require.NoError(t, err)
	_, tr, ok := l.MatchTrigger("b.example")
	require.True(t, ok)
	assert.Equal(t, ActionPassthru, tr.Action)
}

// TestRPZOwnerAtRoot checks an RPZ file with no $ORIGIN or SOA: owners
// are the names themselves.
func TestRPZOwnerAtRoot(t *testing.T) {
	l, err := Parse("bare.rpz", []byte("tiktok.com CNAME .\n*.tiktok.com. CNAME .\n32.1.2.0.192.rpz-ip CNAME .\n"))
	require.NoError(t, err)
	e, tr, ok := l.MatchTrigger("www.tiktok.com")
	require.True(t, ok)
	assert.Equal(t, "*.tiktok.com.", e.Owner(tr))
	e, tr, ok = l.MatchIP(netip.MustParseAddr("192.0.2.1"))
	require.True(t, ok)
	assert.Equal(t, "32.1.2.0.192.rpz-ip.", e.Owner(tr))
	assert.Equal(t, ".", l.Origin())
	_, ok = l.Serial()
	assert.False(t, ok)
}

// TestRPZGenerate checks $GENERATE: every record it makes is a trigger
// on the directive's line.
func TestRPZGenerate(t *testing.T) {
	l := zoneList(t, "$GENERATE 1-3 host$.example CNAME .", "other.example CNAME *.")
	assert.Equal(t, []string{"host1.example@5", "host2.example@5", "host3.example@5", "other.example@6"}, entries(l))
}

// TestRPZGenerateBounded: the $GENERATE directives of a file may make
// maxGenerated records beyond one a directive, one directive's whole
// range; a file past it is refused whole, naming the directive's line,
// as a body over sources.max_bytes is. Before, twenty lines of a list
// server's body made 1,310,720 triggers (44 MB of heap), and a few
// thousand would exhaust memory at every fetch.
func TestRPZGenerateBounded(t *testing.T) {
	full := []string{"$GENERATE 0-65535 a$.example CNAME .", "$GENERATE 1-2 b$.example CNAME ."} // lines 5, 6
	l := zoneList(t, append(full, "c.example CNAME .")...)
	assert.Equal(t, 65536+2+1, l.Len(), "the bound itself is read")
	_, ok := l.Match("a65535.example.")
	assert.True(t, ok)

	l, err := Parse("policy.rpz", []byte(zoneHead+strings.Join(append(full, "$GENERATE 1-2 d$.example CNAME ."), "\n")+"\n"))
	assert.True(t, l == nil, "no list")
	require.ErrorIs(t, err, rpz.ErrGenerated)
	assert.ErrorContains(t, err, "policy.rpz:7: $GENERATE directives made more than 65536 records in the file; refused")

	bomb := zoneHead + strings.Repeat("$GENERATE 0-65535 x$.example CNAME .\n", 2000)
	l, err = Parse("bomb.rpz", []byte(bomb))
	assert.True(t, l == nil, "no list")
	require.ErrorIs(t, err, rpz.ErrGenerated)
	assert.ErrorContains(t, err, "bomb.rpz:6: ")
}

// TestWriteRPZ writes plain lists as a zone and reads it back: every name
// gets the verdict the lists give it (allow beats block), through the
// zone's own precedence.
func TestWriteRPZ(t *testing.T) {
	parse := func(name, text string) *List {
		l, err := Parse(name, []byte(text))
		require.NoError(t, err)
		return l
	}
	block := []*List{
		parse("lists/a.txt", "tiktok.com\nbytedance.com\nlark.example\nx.allowed.example\n"),
		parse("b.txt", "tiktok.com\ncapcut.com\n0.0.0.0 pangle.example\n"),
	}
	allow := []*List{parse("allow.txt", "feishu.lark.example\nallowed.example\n")}
	var b strings.Builder
	require.NoError(t, WriteRPZ(&b, ZoneHeader{Serial: 7, Comment: []string{"made by a test"}}, block, allow))
	assert.Equal(t, `; made by a test
$TTL 300
@ IN SOA localhost. hostmaster.localhost. 7 3600 600 604800 300
  IN NS localhost.

; allow.txt (allow): 2 entries, each as NAME and *.NAME
feishu.lark.example CNAME rpz-passthru.
*.feishu.lark.example CNAME rpz-passthru.
allowed.example CNAME rpz-passthru.
*.allowed.example CNAME rpz-passthru.

; a.txt (block): 3 entries, each as NAME and *.NAME
tiktok.com CNAME .
*.tiktok.com CNAME .
bytedance.com CNAME .
*.bytedance.com CNAME .
lark.example CNAME .
*.lark.example CNAME .

; b.txt (block): 2 entries, each as NAME and *.NAME
capcut.com CNAME .
*.capcut.com CNAME .
pangle.example CNAME .
*.pangle.example CNAME .
`, b.String())
	zone := parse("zone.rpz", b.String())
	serial, _ := zone.Serial()
	assert.Equal(t, uint32(7), serial)
	verdict := func(name string) string {
		for _, l := range allow {
			if _, ok := l.Match(name); ok {
				return "allow"
			}
		}
		for _, l := range block {
			if _, ok := l.Match(name); ok {
				return "block"
			}
		}
		return ""
	}
	for _, q := range []string{"tiktok.com", "www.tiktok.com", "capcut.com", "a.b.capcut.com", "lark.example", "www.lark.example",
		"feishu.lark.example", "a.feishu.lark.example", "allowed.example", "x.allowed.example", "y.x.allowed.example",
		"pangle.example", "example", "other.example", "com"} {
		want := verdict(q)
		got := ""
		if _, tr, ok := zone.MatchTrigger(q); ok {
			got = map[Action]string{ActionNXDOMAIN: "block", ActionPassthru: "allow"}[tr.Action]
		}
		assert.Equal(t, want, got, q)
	}
	assert.Error(t, WriteRPZ(&b, ZoneHeader{}, []*List{zone}, nil), "an RPZ list is a zone already")
}

// TestRPZWildcardLines checks the line of each trigger of a name that has
// both its own and a `*.` trigger, in every order and distance: the near
// ones are kept beside the node, the others apart.
func TestRPZWildcardLines(t *testing.T) {
	l := zoneList(t,
		"a.example CNAME .", // 5
		"*.a.example CNAME *.",
		"*.b.example CNAME .",
		"b.example CNAME rpz-drop.",
		"c.example CNAME .", // 9
		"filler1.example CNAME .",
		"*.c.example CNAME .",
		"e.example CNAME .", // 12
		"filler2.example CNAME .",
		"filler3.example CNAME .",
		"filler4.example CNAME .",
		"*.e.example CNAME rpz-passthru.", // 16
		"*.f.example CNAME .",
		"filler5.example CNAME .",
		"filler6.example CNAME .",
		"f.example CNAME *.", // 20
	)
	for _, tc := range []struct {
		qname string
		line  int
		tr    Trigger
	}{
		{"a.example", 5, Trigger{Action: ActionNXDOMAIN}},
		{"x.a.example", 6, Trigger{Action: ActionNODATA, Wildcard: true}},
		{"x.b.example", 7, Trigger{Action: ActionNXDOMAIN, Wildcard: true}},
		{"b.example", 8, Trigger{Action: ActionDrop}},
		{"c.example", 9, Trigger{Action: ActionNXDOMAIN}},
		{"x.c.example", 11, Trigger{Action: ActionNXDOMAIN, Wildcard: true}},
		{"e.example", 12, Trigger{Action: ActionNXDOMAIN}},
		{"x.e.example", 16, Trigger{Action: ActionPassthru, Wildcard: true}},
		{"x.f.example", 17, Trigger{Action: ActionNXDOMAIN, Wildcard: true}},
		{"f.example", 20, Trigger{Action: ActionNODATA}},
	} {
		e, tr, ok := l.MatchTrigger(tc.qname)
		require.True(t, ok, tc.qname)
		assert.Equal(t, tc.line, e.Line, tc.qname)
		assert.Equal(t, tc.tr, tr, tc.qname)
		m, _ := l.Match(tc.qname)
		assert.Equal(t, tc.line, m.Line, "Match %s", tc.qname)
	}
	var lines []int
	for e := range l.All() {
		lines = append(lines, e.Line)
	}
	assert.Equal(t, []int{5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, lines)
	assert.Len(t, l.wildLine, 2, "only the far wildcards are kept apart")

	// A block that beats an rpz-passthru. at the same owner is reported
	// at its own line, a wildcard's as a name's.
	beat, _ := Parse("policy.rpz", []byte(zoneHead+strings.Join([]string{
		"*.g.example CNAME rpz-passthru.", // 5
		"*.g.example CNAME .",
		"h.example CNAME rpz-passthru.",
		"h.example CNAME *.",
	}, "\n")+"\n"))
	for _, tc := range []struct {
		qname string
		line  int
		tr    Trigger
	}{
		{"x.g.example", 6, Trigger{Action: ActionNXDOMAIN, Wildcard: true}},
		{"h.example", 8, Trigger{Action: ActionNODATA}},
	} {
		e, tr, ok := beat.MatchTrigger(tc.qname)
		require.True(t, ok, tc.qname)
		assert.Equal(t, tc.line, e.Line, tc.qname)
		assert.Equal(t, tc.tr, tr, tc.qname)
	}
}

// TestRPZLastLine: a policy zone's trigger is read up to line 16,777,215,
// the last a list's entry can be on (its line is kept in 24 bits); a
// trigger on a later line is reported, not read with a line that would
// wrap around.
func TestRPZLastLine(t *testing.T) {
	l, err := FromZone("long.rpz", [32]byte{}, 2, func(h rpz.Handler) (rpz.Zone, error) {
		h.Trigger(rpz.Trigger{Owner: "tiktok.com", Line: maxLine, Name: "tiktok.com"})
		h.Trigger(rpz.Trigger{Owner: "douyin.com", Line: maxLine + 1, Name: "douyin.com"})
		return rpz.Zone{Origin: "."}, nil
	})
	e, ok := l.Match("tiktok.com")
	require.True(t, ok)
	assert.Equal(t, maxLine, e.Line)
	_, ok = l.Match("douyin.com")
	assert.False(t, ok)
	assert.Equal(t, 1, l.Len())
	n, first := BadLines(err)
	assert.Equal(t, 1, n)
	require.NotNil(t, first)
	assert.ErrorIs(t, first, ErrTooManyLines)
	assert.Equal(t, maxLine+1, first.Line)
}

// TestRPZHasPassthru: a policy zone has a passthru when one of its
// triggers, a name's or a response IP's, is rpz-passthru., and only then.
func TestRPZHasPassthru(t *testing.T) {
	for _, tc := range []struct {
		records []string
		want    bool
	}{
		{[]string{"tiktok.com CNAME .", "*.douyin.com CNAME *.", "capcut.com CNAME rpz-drop.", "24.0.2.0.192.rpz-ip CNAME ."}, false},
		{[]string{"ok.tiktok.com CNAME rpz-passthru."}, true},
		{[]string{"*.ok.tiktok.com CNAME rpz-passthru."}, true},
		{[]string{"tiktok.com CNAME .", "24.0.2.0.192.rpz-ip CNAME rpz-passthru."}, true},
	} {
		assert.Equal(t, tc.want, zoneList(t, tc.records...).HasPassthru(), "%q", tc.records)
	}
}

// TestRPZSecondSOA: a zone file with a second SOA record at its apex
// (BIND refuses it) takes its serial from the first, and reports the
// second, by its line, as the bad line it is (it was taken without a word).
func TestRPZSecondSOA(t *testing.T) {
	l, err := Parse("policy.rpz", []byte(zoneHead+"@ SOA localhost. root.localhost. 2026010200 3600 600 86400 60\ntiktok.com CNAME .\n"))
	n, first := BadLines(err)
	assert.Equal(t, 1, n)
	if assert.NotNil(t, first) {
		assert.ErrorIs(t, first, rpz.ErrSecondSOA)
		assert.Equal(t, strings.Count(zoneHead, "\n")+1, first.Line)
	}
	_, ok := l.Match("tiktok.com")
	assert.True(t, ok, "the file's triggers apply")
	serial, ok := l.Serial()
	require.True(t, ok)
	assert.Equal(t, uint32(2026010100), serial)
}

// TestRPZDuplicateWildcardNamed: a `*.` trigger written twice is a
// duplicate named with its `*.`, as the file has it, not as the name
// itself (which may be a trigger of its own).
func TestRPZDuplicateWildcardNamed(t *testing.T) {
	l := zoneList(t, "*.tiktok.com CNAME .", "tiktok.com CNAME .", "*.tiktok.com CNAME .")
	assert.Equal(t, []Duplicate{{Name: "*.tiktok.com", Line: 7, FirstLine: 5}}, l.Duplicates())
}
