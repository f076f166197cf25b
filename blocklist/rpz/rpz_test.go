package rpz

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// result is what a zone handed to its Handler.
type result struct {
	zone     Zone
	triggers []Trigger
	problems []Problem
}

func parse(t *testing.T, text string) result {
	t.Helper()
	var r result
	z, err := Parse("test.rpz", strings.NewReader(text), r.handler())
	require.NoError(t, err)
	r.zone = z
	return r
}

func (r *result) handler() Handler {
	return Handler{
		Trigger: func(t Trigger) { r.triggers = append(r.triggers, t) },
		Problem: func(p Problem) { r.problems = append(r.problems, p) },
	}
}

// triggersAt is each trigger handed over as name@line, in order.
func (r *result) triggersAt() []string {
	var at []string
	for _, tr := range r.triggers {
		at = append(at, tr.Name+"@"+strconv.Itoa(tr.Line))
	}
	return at
}

// syntaxAt is each problem handed over as line:token, in order, each
// asserted a syntax problem (ErrSyntax) whose message holds msg when msg
// is not empty.
func (r *result) syntaxAt(t *testing.T, msg string) []string {
	t.Helper()
	var at []string
	for _, p := range r.problems {
		assert.ErrorIs(t, p.Err, ErrSyntax)
		if msg != "" {
			assert.ErrorContains(t, p.Err, msg)
		}
		at = append(at, strconv.Itoa(p.Line)+":"+p.Token)
	}
	return at
}

const head = "$TTL 300\n@ SOA localhost. root.localhost. 42 3600 600 86400 60\n  NS localhost.\n"

func TestParseTriggers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		record string
		want   Trigger
	}{
		{"nxdomain", "tiktok.com CNAME .", Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: NXDOMAIN}},
		{"wildcard", "*.tiktok.com CNAME .", Trigger{Owner: "*.tiktok.com.rpz.test.", Name: "tiktok.com", Wildcard: true, Action: NXDOMAIN}},
		{"nodata", "tiktok.com CNAME *.", Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: NODATA}},
		{"wildcard nodata", "*.tiktok.com CNAME *.", Trigger{Owner: "*.tiktok.com.rpz.test.", Name: "tiktok.com", Wildcard: true, Action: NODATA}},
		{"escaped wildcard", `\*.tiktok.com CNAME .`, Trigger{Owner: `\*.tiktok.com.rpz.test.`, Name: "tiktok.com", Wildcard: true, Action: NXDOMAIN}},
		{"decimal-escaped wildcard", `\042.tiktok.com CNAME .`, Trigger{Owner: `\042.tiktok.com.rpz.test.`, Name: "tiktok.com", Wildcard: true, Action: NXDOMAIN}},
		{"passthru", "ok.tiktok.com CNAME rpz-passthru.", Trigger{Owner: "ok.tiktok.com.rpz.test.", Name: "ok.tiktok.com", Action: Passthru}},
		{"drop", "tiktok.com CNAME rpz-drop.", Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: Drop}},
		{"upper-case target", "tiktok.com CNAME RPZ-PASSTHRU.", Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: Passthru}},
		{"escaped nodata target", `tiktok.com CNAME \*.`, Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: NODATA}},
		{"decimal-escaped nodata target", `tiktok.com CNAME \042.`, Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: NODATA}},
		{"escaped drop target", `tiktok.com CNAME rpz\-drop.`, Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: Drop}},
		{"escaped passthru target", `ok.tiktok.com CNAME \114PZ-passthru.`, Trigger{Owner: "ok.tiktok.com.rpz.test.", Name: "ok.tiktok.com", Action: Passthru}},
		{"absolute owner", "tiktok.com.rpz.test. 60 IN CNAME .", Trigger{Owner: "tiktok.com.rpz.test.", Name: "tiktok.com", Action: NXDOMAIN}},
		{"owner case and escapes kept", `WWW.\116ik\084ok.com CNAME .`, Trigger{Owner: `WWW.\116ik\084ok.com.rpz.test.`, Name: `WWW.\116ik\084ok.com`, Action: NXDOMAIN}},
		{"escaped dot kept in its label", `a\.b.example CNAME .`, Trigger{Owner: `a\.b.example.rpz.test.`, Name: `a\.b.example`, Action: NXDOMAIN}},
		{"single label exact", "localhost CNAME .", Trigger{Owner: "localhost.rpz.test.", Name: "localhost", Action: NXDOMAIN}},
		{"ipv4 host", "32.1.2.0.192.rpz-ip CNAME .", Trigger{Owner: "32.1.2.0.192.rpz-ip.rpz.test.", Prefix: netip.MustParsePrefix("192.0.2.1/32"), Action: NXDOMAIN}},
		{"ipv4 /24", "24.0.2.0.192.rpz-ip CNAME *.", Trigger{Owner: "24.0.2.0.192.rpz-ip.rpz.test.", Prefix: netip.MustParsePrefix("192.0.2.0/24"), Action: NODATA}},
		{"ipv6 host", "128.1.zz.db8.2001.rpz-ip CNAME rpz-drop.", Trigger{Owner: "128.1.zz.db8.2001.rpz-ip.rpz.test.", Prefix: netip.MustParsePrefix("2001:db8::1/128"), Action: Drop}},
		{"ipv6 /48 passthru", "48.zz.db8.2001.RPZ-IP CNAME rpz-passthru.", Trigger{Owner: "48.zz.db8.2001.RPZ-IP.rpz.test.", Prefix: netip.MustParsePrefix("2001:db8::/48"), Action: Passthru}},
		{"escaped rpz-ip label", `32.1.2.0.192.rpz\-ip CNAME .`, Trigger{Owner: `32.1.2.0.192.rpz\-ip.rpz.test.`, Prefix: netip.MustParsePrefix("192.0.2.1/32"), Action: NXDOMAIN}},
		{"decimal-escaped rpz-ip label", `32.1.2.0.192.\114PZ-IP CNAME *.`, Trigger{Owner: `32.1.2.0.192.\114PZ-IP.rpz.test.`, Prefix: netip.MustParsePrefix("192.0.2.1/32"), Action: NODATA}},
		{"escaped address digits", `32.\049.2.0.192.rpz-ip CNAME .`, Trigger{Owner: `32.\049.2.0.192.rpz-ip.rpz.test.`, Prefix: netip.MustParsePrefix("192.0.2.1/32"), Action: NXDOMAIN}},
		{"escaped zz", `48.\zz.db8.2001.rpz-ip CNAME .`, Trigger{Owner: `48.\zz.db8.2001.rpz-ip.rpz.test.`, Prefix: netip.MustParsePrefix("2001:db8::/48"), Action: NXDOMAIN}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parse(t, "$ORIGIN rpz.test.\n"+head+tc.record+"\n")
			assert.Empty(t, r.problems)
			require.Len(t, r.triggers, 1)
			tc.want.Line = 5
			assert.Equal(t, tc.want, r.triggers[0])
			assert.Equal(t, Zone{Origin: "rpz.test.", Serial: 42, SOA: true, Triggers: 1}, r.zone)
		})
	}
}

// TestParseUnsupported checks that every trigger and action dnsfence does
// not apply is reported with its line and owner and skipped, and that the
// records around it still apply.
func TestParseUnsupported(t *testing.T) {
	for _, tc := range []struct {
		name   string
		record string
		owner  string
		want   error
		text   string // in the error's text
	}{
		{"local data A", "tiktok.com A 192.0.2.1", "tiktok.com.rpz.test.", ErrLocalData, "(A record"},
		{"local data AAAA", "tiktok.com AAAA 2001:db8::1", "tiktok.com.rpz.test.", ErrLocalData, "(AAAA record"},
		{"local data TXT", `tiktok.com TXT "blocked"`, "tiktok.com.rpz.test.", ErrLocalData, "(TXT record"},
		{"local data at a wildcard", "*.tiktok.com A 192.0.2.1", "*.tiktok.com.rpz.test.", ErrLocalData, "(A record"},
		{"local data at an IP trigger", "32.1.2.0.192.rpz-ip A 192.0.2.2", "32.1.2.0.192.rpz-ip.rpz.test.", ErrLocalData, "(A record"},
		{"rewrite", "tiktok.com CNAME walled-garden.example.", "tiktok.com.rpz.test.", ErrRewrite, "walled-garden.example."},
		{"rewrite to a wildcard", "tiktok.com CNAME *.garden.example.", "tiktok.com.rpz.test.", ErrRewrite, "*.garden.example."},
		{"rewrite to a top-level name", "tiktok.com CNAME garden.", "tiktok.com.rpz.test.", ErrRewrite, "garden."},
		{"rewrite to an rpz- name below a domain", "tiktok.com CNAME rpz-drop.example.", "tiktok.com.rpz.test.", ErrRewrite, "rpz-drop.example."},
		{"old passthru form", "tiktok.com CNAME tiktok.com.", "tiktok.com.rpz.test.", ErrRewrite, "write rpz-passthru."},
		{"tcp-only", "tiktok.com CNAME rpz-tcp-only.", "tiktok.com.rpz.test.", ErrTCPOnly, ""},
		{"escaped tcp-only", `tiktok.com CNAME rpz-tcp\-only.`, "tiktok.com.rpz.test.", ErrTCPOnly, ""},
		{"escaped dot in the target", `tiktok.com CNAME rpz-drop\..`, "tiktok.com.rpz.test.", ErrUnknownAction, `rpz-drop\..`},
		{"unknown action", "tiktok.com CNAME rpz-nope.", "tiktok.com.rpz.test.", ErrUnknownAction, "rpz-nope."},
		{"NSDNAME", "ns1.tiktok.com.rpz-nsdname CNAME .", "ns1.tiktok.com.rpz-nsdname.rpz.test.", ErrNSDNAME, ""},
		{"NSDNAME wildcard", "*.tiktok.com.rpz-nsdname CNAME .", "*.tiktok.com.rpz-nsdname.rpz.test.", ErrNSDNAME, ""},
		{"NSIP", "32.1.2.0.192.rpz-nsip CNAME .", "32.1.2.0.192.rpz-nsip.rpz.test.", ErrNSIP, ""},
		{"client IP", "24.0.0.0.10.rpz-client-ip CNAME .", "24.0.0.0.10.rpz-client-ip.rpz.test.", ErrClientIP, ""},
		{"escaped NSDNAME label", `ns1.tiktok.com.rpz\-nsdname CNAME .`, `ns1.tiktok.com.rpz\-nsdname.rpz.test.`, ErrNSDNAME, ""},
		{"escaped NSIP label", `32.1.2.0.192.\114pz-nsip CNAME .`, `32.1.2.0.192.\114pz-nsip.rpz.test.`, ErrNSIP, ""},
		{"escaped client-IP label", `24.0.0.0.10.rpz-client\-ip CNAME .`, `24.0.0.0.10.rpz-client\-ip.rpz.test.`, ErrClientIP, ""},
		{"escaped unknown rpz label", `x.rpz\-foo CNAME .`, `x.rpz\-foo.rpz.test.`, ErrUnknownLabel, `rpz\-foo`},
		{"escaped dot in an IP trigger", `32.1.2\.0.192.rpz-ip CNAME .`, `32.1.2\.0.192.rpz-ip.rpz.test.`, ErrAddress, "dot inside a label"},
		{"unknown rpz label", "x.rpz-foo CNAME .", "x.rpz-foo.rpz.test.", ErrUnknownLabel, "rpz-foo"},
		{"bad IP trigger", "33.1.2.0.192.rpz-ip CNAME .", "33.1.2.0.192.rpz-ip.rpz.test.", ErrPrefixLength, "/33"},
		{"IP trigger without a prefix", "rpz-ip CNAME .", "rpz-ip.rpz.test.", ErrPrefixLength, "no prefix before rpz-ip"},
		{"escaped dot in an IP trigger, named", `32.1.2\.0.192.rpz-ip CNAME .`, `32.1.2\.0.192.rpz-ip.rpz.test.`, ErrAddress, `"32.1.2\\.0.192" has a dot inside a label`},
		{"wildcard inside", "a.*.tiktok.com CNAME .", "a.*.tiktok.com.rpz.test.", ErrWildcard, ""},
		{"wildcard below a wildcard", "*.*.tiktok.com CNAME .", "*.*.tiktok.com.rpz.test.", ErrWildcard, ""},
		{"top-level wildcard", "*.com CNAME .", "*.com.rpz.test.", ErrWideWildcard, ""},
		{"root wildcard", "* CNAME .", "*.rpz.test.", ErrWideWildcard, ""},
		{"escaped wildcard inside", `a.\*.tiktok.com CNAME .`, `a.\*.tiktok.com.rpz.test.`, ErrWildcard, ""},
		{"escaped top-level wildcard", `\*.com CNAME .`, `\*.com.rpz.test.`, ErrWideWildcard, ""},
		{"escaped root wildcard", `\042 CNAME .`, `\042.rpz.test.`, ErrWideWildcard, ""},
		{"apex data", "@ TXT \"v=1\"", "rpz.test.", ErrApexData, "TXT"},
		{"a second SOA", "@ SOA localhost. root.localhost. 43 3600 600 86400 60", "rpz.test.", ErrSecondSOA, "serial 42 is kept"},
		{"class CH", "tiktok.com CH CNAME .", "tiktok.com.rpz.test.", ErrClass, "CH"},
		{"outside the zone", "tiktok.com. CNAME .", "tiktok.com.", ErrOutsideZone, ""},
		{"NS below the apex", "sub NS ns.example.", "sub.rpz.test.", ErrLocalData, "(NS record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parse(t, "$ORIGIN rpz.test.\n"+head+"before.example CNAME .\n"+tc.record+"\nafter.example CNAME rpz-drop.\n")
			require.Len(t, r.problems, 1)
			p := r.problems[0]
			assert.Equal(t, 6, p.Line)
			assert.Equal(t, tc.owner, p.Owner)
			assert.ErrorIs(t, p.Err, tc.want)
			assert.Contains(t, p.Err.Error(), tc.text)
			require.Len(t, r.triggers, 2, "the records around it apply")
			assert.Equal(t, "before.example", r.triggers[0].Name)
			assert.Equal(t, 5, r.triggers[0].Line)
			assert.Equal(t, "after.example", r.triggers[1].Name)
			assert.Equal(t, Drop, r.triggers[1].Action)
			assert.Equal(t, 7, r.triggers[1].Line)
			assert.Equal(t, 2, r.zone.Triggers)
			assert.Equal(t, 1, r.zone.Problems)
		})
	}
}

// TestParseLines checks the line of every record and problem through the
// forms a zone file takes: comments, blank lines, records over several
// lines, directives, CRLF line ends, byte-order marks, and lines the zone
// parser cannot read, after which it resumes.
func TestParseLines(t *testing.T) {
	text := "\ufeff; an RPZ zone\r\n" + // 1
		"$ORIGIN rpz.test.\r\n" + // 2
		"$TTL 300\r\n" + // 3
		"@ SOA localhost. root.localhost. ( ; over lines\r\n" + // 4
		"   7 ; serial\r\n" + // 5
		"   3600 600 86400 60 )\r\n" + // 6
		"  NS localhost.\r\n" + // 7
		"\r\n" + // 8
		"a.example CNAME . ; a comment ( not a brace\r\n" + // 9
		"b.example ( CNAME\r\n" + // 10
		"   . )\r\n" + // 11
		"\ufeffc.example CNAME .\r\n" + // 12: a file joined with cat
		"d.example IN CNAME bad bad\r\n" + // 13: garbage after rdata
		"e.example CNAME .\r\n" + // 14
		"f.example BOGUS .\r\n" + // 15: unknown type
		"g.example CNAME (\r\n" + // 16
		"   bad junk )\r\n" + // 17
		"h.example CNAME .\r\n" + // 18
		"$INCLUDE /etc/passwd\r\n" + // 19
		"$ORIGIN sub.example.rpz.test.\r\n" + // 20
		"i CNAME .\r\n" + // 21
		"\"x \"quoted;( CNAME .\r\n" + // 22: quotes that do not pair up on the line
		"j CNAME .\r\n" + // 23
		"k CNAME ." // 24, no line end
	r := parse(t, text)
	got := r.triggersAt()
	assert.Equal(t, []string{"a.example@9", "b.example@10", "c.example@12", "e.example@14", "h.example@18",
		"i.sub.example@21", "j.sub.example@23", "k.sub.example@24"}, got)
	bad := r.syntaxAt(t, "")
	assert.Equal(t, []string{"13:bad", "15:BOGUS", "17:junk", "19:/etc/passwd", `22:"`}, bad, "%v", r.problems)
	assert.Equal(t, Zone{Origin: "rpz.test.", Serial: 7, SOA: true, Triggers: 8, Problems: 5}, r.zone)
}

// TestParseBadEscapes: a line with an escape RFC 1035 §5.1 does not allow
// (a backslash before a digit begins \DDD, three decimal digits of value
// 0 to 255) is a syntax problem on its line, reported once with the
// escape as written, and skipped: the zone parser reads `\2.` as `2` and
// wraps `\999` to `\231`, names other than those written (BIND refuses
// the zone). The escape may be in the owner, the target, inside quotes,
// across parentheses or at the end of the text; the lines around it, and
// escapes that are whole, are read as before.
func TestParseBadEscapes(t *testing.T) {
	text := "$ORIGIN rpz.test.\n" + // 1
		head + // 2-4
		"corp\\2.example CNAME .\n" + // 5
		"a.example CNAME .\n" + // 6
		"x\\256.example CNAME .\n" + // 7
		"ok\\065.example CNAME .\n" + // 8: A
		"b.example CNAME rpz-\\100rop.\n" + // 9: rpz-drop.
		"c.example CNAME rpz-\\10rop.\n" + // 10
		"d.example ( CNAME\n" + // 11
		"  \\2. )\n" + // 12
		"e\\.dot.example CNAME .\n" + // 13: an escaped dot
		"f.example TXT \"\\1x\"\n" + // 14
		"g\\\\2.example CNAME .\n" + // 15: an escaped backslash, then 2
		"h.example CNAME . ; \\2 in a comment\n" + // 16
		"i.example CNAME x\\25" // 17, no line end
	r := parse(t, text)
	got := r.triggersAt()
	assert.Equal(t, []string{"a.example@6", `ok\065.example@8`, "b.example@9", `e\.dot.example@13`, `g\\2.example@15`, "h.example@16"}, got)
	bad := r.syntaxAt(t, "a malformed escape (RFC 1035 §5.1")
	assert.Equal(t, []string{`5:\2`, `7:\256`, `10:\10`, `11:\2`, `14:\1`, `17:\25`}, bad)
	assert.Equal(t, 6, r.zone.Problems)
}

// TestParseBadEscapeOwners: a record that leaves out its owner repeats
// that of the record before, and a relative owner ends in the $ORIGIN in
// effect; when either was written with an escape RFC 1035 §5.1 does not
// allow, the owner is not the name written, and the record is a syntax
// problem on its own line, skipped, as the line that wrote it is.
func TestParseBadEscapeOwners(t *testing.T) {
	text := "$ORIGIN rpz.test.\n" + // 1
		head + // 2-4
		"x\\2.example CNAME .\n" + // 5
		"  CNAME rpz-passthru.\n" + // 6: owner x\2.example, repeated
		"a.example CNAME .\n" + // 7
		"$ORIGIN sub\\2.rpz.test.\n" + // 8
		"y CNAME .\n" + // 9: owner y.sub\2.rpz.test.
		"$ORIGIN rpz.test.\n" + // 10
		"b.example CNAME .\n" // 11
	r := parse(t, text)
	got := r.triggersAt()
	assert.Equal(t, []string{"a.example@7", "b.example@11"}, got)
	bad := r.syntaxAt(t, "a malformed escape (RFC 1035 §5.1")
	assert.Equal(t, []string{`5:\2`, `6:\2`, `9:\2`}, bad)
	assert.Equal(t, 3, r.zone.Problems)
}

// TestParseFollowsTheLexer: the line reader follows the text as the zone
// lexer reads it, so that each record is given the line it starts on, and
// a parser made after a syntax error goes on with the next logical line
// and the $ORIGIN then in effect: a directive after a comment line,
// relative to the one before (or to the root), `@`, or apart from its
// name by a tab; a `$ORIGIN` with no name or an invalid one, which changes
// nothing (at the end of the text too); a `)` with none open; a `(` or
// `;` inside quotes; a quote left open; a name that starts with a digit
// after a blank line (no escape); fields apart by tabs; a \DDD cut short
// by the end of the text; and a record in parentheses the failed parser
// read ahead into.
func TestParseFollowsTheLexer(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		triggers   []string // name@line
		problems   []string // line:token (syntax) or line:owner
		errs       []error
	}{
		{"$ORIGIN after a comment line", "$ORIGIN rpz.test.\na CNAME bad bad\n; a comment\n$ORIGIN sub.rpz.test.\nb CNAME bad bad\nc CNAME .\n",
			[]string{"c.sub@6"}, []string{"2:bad", "5:bad"}, []error{ErrSyntax, ErrSyntax}},
		{"relative $ORIGIN", "$ORIGIN rpz.test.\n$ORIGIN sub\nb CNAME bad bad\nc CNAME .\n",
			[]string{"c.sub@4"}, []string{"3:bad"}, []error{ErrSyntax}},
		{"relative $ORIGIN below the root", "$ORIGIN .\n$ORIGIN rpz\na CNAME bad bad\nb CNAME .\n",
			[]string{"b.rpz@4"}, []string{"3:bad"}, []error{ErrSyntax}},
		{"$ORIGIN @", "$ORIGIN @\na CNAME .\n",
			[]string{"a@2"}, nil, nil},
		{"$ORIGIN @ after a name", "$ORIGIN rpz.test.\n$ORIGIN @\nb CNAME bad bad\nc CNAME .\n",
			[]string{"c@4"}, []string{"3:bad"}, []error{ErrSyntax}},
		{"$ORIGIN and a tab", "$ORIGIN\trpz.test.\n$ORIGIN\tsub.rpz.test.\nb CNAME bad bad\nc CNAME .\n",
			[]string{"c.sub@4"}, []string{"3:bad"}, []error{ErrSyntax}},
		{"an invalid $ORIGIN, which changes nothing", "$ORIGIN rpz.test.\n$ORIGIN a..b\nb CNAME bad bad\nc CNAME .\n",
			[]string{"c@4"}, []string{"2:a..b", "3:bad"}, []error{ErrSyntax, ErrSyntax}},
		{"$ORIGIN with no name", "$ORIGIN rpz.test.\n$ORIGIN\na CNAME .\n",
			[]string{"a@3"}, []string{"2:$ORIGIN"}, []error{ErrSyntax}},
		{"$ORIGIN with no name at the end", "$ORIGIN rpz.test.\na CNAME .\n$ORIGIN",
			[]string{"a@2"}, []string{"3:$ORIGIN"}, []error{ErrSyntax}},
		{"$ORIGIN with a comment alone", "$ORIGIN rpz.test.\n$ORIGIN ; none\na CNAME .\n",
			[]string{"a@3"}, []string{"2:\n"}, []error{ErrSyntax}},
		{"a closing parenthesis with none open", "$ORIGIN rpz.test.\na CNAME . )\nb CNAME .\nc CNAME .\n",
			[]string{"b@3", "c@4"}, []string{"2:extra closing brace"}, []error{ErrSyntax}},
		{"a parenthesis inside quotes", "$ORIGIN rpz.test.\na TXT \"(\"\nb CNAME .\n",
			[]string{"b@3"}, []string{"2:a.rpz.test."}, []error{ErrLocalData}},
		{"a parenthesis inside quotes after an error", "$ORIGIN rpz.test.\na CNAME bad bad\nb TXT \"(\"\nc CNAME .\n",
			[]string{"c@4"}, []string{"2:bad", "3:b.rpz.test."}, []error{ErrSyntax, ErrLocalData}},
		{"a quote left open", "$ORIGIN rpz.test.\n\"q\n;(\nb CNAME .\n",
			[]string{"b@4"}, []string{`2:"`}, []error{ErrSyntax}},
		{"a name that starts with a digit after a blank line", "$ORIGIN rpz.test.\na CNAME .\n\n7eleven.example CNAME .\n",
			[]string{"a@2", "7eleven.example@4"}, nil, nil},
		{"tabs between the fields", "$ORIGIN rpz.test.\na CNAME .\nb\tCNAME\t.\n",
			[]string{"a@2", "b@3"}, nil, nil},
		{"an escape of one digit at the end", "$ORIGIN rpz.test.\na CNAME .\nb CNAME x\\2",
			[]string{"a@2"}, []string{`3:\2`}, []error{ErrSyntax}},
		{"a record in parentheses read ahead", "$ORIGIN rpz.test.\na CNAME\nb ( CNAME\n . )\nc CNAME .\n",
			[]string{"b@3", "c@5"}, []string{"2:\n"}, []error{ErrSyntax}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parse(t, tc.text)
			assert.Equal(t, tc.triggers, r.triggersAt())
			var problems []string
			var errs []error
			for _, p := range r.problems {
				what := p.Token
				if p.Owner != "" {
					what = p.Owner
				}
				problems = append(problems, strconv.Itoa(p.Line)+":"+what)
				errs = append(errs, p.Err)
			}
			assert.Equal(t, tc.problems, problems)
			require.Len(t, errs, len(tc.errs))
			for i, want := range tc.errs {
				assert.ErrorIs(t, errs[i], want, "problem %d", i)
			}
		})
	}
}

// TestParseNoTarget checks a CNAME without a target: a syntax error, before
// a line end and at the end of the text.
func TestParseNoTarget(t *testing.T) {
	r := parse(t, "$ORIGIN rpz.test.\na.example CNAME\nb.example CNAME .\nc.example CNAME")
	require.Len(t, r.triggers, 1)
	assert.Equal(t, "b.example", r.triggers[0].Name)
	assert.Equal(t, 3, r.triggers[0].Line)
	require.Len(t, r.problems, 2)
	assert.Equal(t, 2, r.problems[0].Line)
	assert.ErrorIs(t, r.problems[0].Err, ErrSyntax)
	assert.Equal(t, 4, r.problems[1].Line)
	assert.ErrorIs(t, r.problems[1].Err, ErrSyntax)
}

// TestParseNoOwner checks a first record that leaves out its owner name:
// there is no owner before it to repeat.
func TestParseNoOwner(t *testing.T) {
	r := parse(t, "  CNAME .\na.example CNAME .\n  CNAME *.\n")
	require.Len(t, r.problems, 1)
	assert.Equal(t, Problem{Line: 1, Err: ErrNoOwner}, r.problems[0])
	assert.Equal(t, []Trigger{
		{Owner: "a.example.", Line: 2, Name: "a.example", Action: NXDOMAIN},
		{Owner: "a.example.", Line: 3, Name: "a.example", Action: NODATA},
	}, r.triggers)
}

func TestParseOrigin(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		origin     string
		names      []string
	}{
		{"SOA owner", "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5\ntiktok.com.rpz.example.gov. CNAME .\n", "rpz.example.gov.", []string{"tiktok.com"}},
		{"SOA owner in upper case", "RPZ.Example.GOV. 60 SOA a. b. 1 2 3 4 5\ntiktok.com.rpz.example.gov. CNAME .\n", "rpz.example.gov.", []string{"tiktok.com"}},
		{"first $ORIGIN without SOA", "$ORIGIN rpz.example.gov.\ntiktok.com CNAME .\n$ORIGIN tiktok.com.rpz.example.gov.\nwww CNAME .\n", "rpz.example.gov.", []string{"tiktok.com", "www.tiktok.com"}},
		{"relative $ORIGIN", "$ORIGIN rpz.example.gov.\n@ 60 SOA a. b. 1 2 3 4 5\n$ORIGIN tiktok.com\nwww CNAME .\n", "rpz.example.gov.", []string{"www.tiktok.com"}},
		{"no origin at all: the root", "tiktok.com CNAME .\n*.tiktok.com. CNAME .\n", ".", []string{"tiktok.com", "tiktok.com"}},
		{"relative names and @ at the root", "@ 60 SOA a. b. 1 2 3 4 5\n@ NS a.\ntiktok.com CNAME .\n", ".", []string{"tiktok.com"}},
		{"SOA owner in full, names relative to it", "rpz.example.gov. 60 SOA a. b. 1 2 3 4 5\n@ NS a.\ntiktok.com CNAME .\n*.tiktok.com CNAME .\n", "rpz.example.gov.", []string{"tiktok.com", "tiktok.com"}},
		{"relative $ORIGIN with none before", "$ORIGIN tiktok.com\nwww CNAME .\n", "tiktok.com.", []string{"www"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parse(t, tc.text)
			assert.Empty(t, r.problems)
			assert.Equal(t, tc.origin, r.zone.Origin)
			var names []string
			for _, tr := range r.triggers {
				names = append(names, tr.Name)
			}
			assert.Equal(t, tc.names, names)
		})
	}
}

// TestParseUnnamedZone: a file whose SOA is owned by @ with no $ORIGIN
// does not name its zone; BIND takes the name from named.conf, reads a
// relative owner below it, as dnsfence does (below the root), and an owner
// written in full as itself, which dnsfence cannot tell from a name below
// the root. Such an owner (`tiktok.com.rpz.example.gov.`, which BIND reads
// as the trigger for tiktok.com; `bytedance.com.`, which BIND ignores as
// outside the zone) was taken silently as the trigger for the name it
// spells. It still is, so that a block stays a block (fail closed: the
// review of the first fix, which skipped it, found bytedance.com forwarded
// after an upgrade), and is reported as kept, naming the fix; a passthru
// written so is skipped, since it would let a name through. A relative
// CNAME target is read below the root as before (`CNAME rpz-drop` is the
// drop action).
func TestParseUnnamedZone(t *testing.T) {
	r := parse(t, head+"douyin.com CNAME .\ntiktok.com.rpz.example.gov. CNAME .\n*.tiktok.com.rpz.example.gov. CNAME .\n"+
		"bytedance.com CNAME rpz-drop\ncapcut.com. CNAME .\nok.capcut.com. CNAME rpz-passthru.\n")
	assert.Equal(t, ".", r.zone.Origin)
	assert.Equal(t, []Trigger{
		{Owner: "douyin.com.", Line: 4, Name: "douyin.com", Action: NXDOMAIN},
		{Owner: "tiktok.com.rpz.example.gov.", Line: 5, Name: "tiktok.com.rpz.example.gov", Action: NXDOMAIN},
		{Owner: "*.tiktok.com.rpz.example.gov.", Line: 6, Name: "tiktok.com.rpz.example.gov", Wildcard: true, Action: NXDOMAIN},
		{Owner: "bytedance.com.", Line: 7, Name: "bytedance.com", Action: Drop},
		{Owner: "capcut.com.", Line: 8, Name: "capcut.com", Action: NXDOMAIN},
	}, r.triggers)
	require.Len(t, r.problems, 4)
	for i, want := range []struct {
		owner string
		line  int
		kept  bool
		text  string
	}{
		{"tiktok.com.rpz.example.gov.", 5, true, "not skipped: read as written, a trigger for tiktok.com.rpz.example.gov, so that it blocks"},
		{"*.tiktok.com.rpz.example.gov.", 6, true, "a trigger for the names below tiktok.com.rpz.example.gov"},
		{"capcut.com.", 8, true, "a trigger for capcut.com,"},
		{"ok.capcut.com.", 9, false, "put $ORIGIN with the zone's name before the SOA"},
	} {
		p := r.problems[i]
		assert.Equal(t, want.line, p.Line, want.owner)
		assert.Equal(t, want.owner, p.Owner)
		assert.Equal(t, want.kept, p.Kept, want.owner)
		assert.ErrorIs(t, p.Err, ErrUnnamedZone)
		assert.Contains(t, p.Err.Error(), want.text)
	}
}

// TestParseUnnamedZoneOriginAfterSOA: an $ORIGIN given after an SOA owned
// by @ does not name the zone (the SOA already stands at the apex BIND takes
// from named.conf), so an owner written relative below it is reported as one
// written in full is (and kept as written); the report must say so, and
// name the fix, $ORIGIN before the SOA: it said "written in full (ending in
// a dot)" of an owner written without one, and "add $ORIGIN" to a file that
// has one.
func TestParseUnnamedZoneOriginAfterSOA(t *testing.T) {
	r := parse(t, head+"$ORIGIN rpz.example.gov.\ntiktok.com CNAME .\n")
	assert.Equal(t, []Trigger{{Owner: "tiktok.com.rpz.example.gov.", Line: 5, Name: "tiktok.com.rpz.example.gov", Action: NXDOMAIN}}, r.triggers)
	require.Len(t, r.problems, 1)
	p := r.problems[0]
	assert.Equal(t, "tiktok.com.rpz.example.gov.", p.Owner)
	assert.True(t, p.Kept)
	assert.ErrorIs(t, p.Err, ErrUnnamedZone)
	assert.Contains(t, p.Err.Error(), "or below an $ORIGIN given after the SOA")
	assert.Contains(t, p.Err.Error(), "put $ORIGIN with the zone's name before the SOA")
}

// TestParseOwnerEndsInZoneTwice: an owner meant in full and written
// without its trailing dot (`tiktok.com.rpz.example.gov` in zone
// rpz.example.gov) is read below the zone, as BIND reads it, and so
// triggers for tiktok.com.rpz.example.gov.rpz.example.gov, which no query
// meets. In a file whose SOA comes first written in full, dnsfence read it
// as the trigger for tiktok.com until owners written relative were read
// below that SOA (22f1d9b), and then forwarded tiktok.com without a word:
// it is reported now, under an $ORIGIN too, naming the fix.
func TestParseOwnerEndsInZoneTwice(t *testing.T) {
	for _, zone := range []string{
		"rpz.example.gov. SOA localhost. root.localhost. 1 3600 600 86400 60\n",
		"$ORIGIN rpz.example.gov.\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n",
		"$ORIGIN RPZ.Example.GOV.\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n",
	} {
		r := parse(t, zone+"  NS localhost.\ndouyin.com CNAME .\ntiktok.com.rpz.example.gov CNAME .\n*.TikTok.com.RPZ.example.gov CNAME .\nrpz.example.gov CNAME .\n")
		assert.Equal(t, []string{"douyin.com"}, triggerNames(r.triggers), zone)
		require.Len(t, r.problems, 3, zone)
		for _, p := range r.problems {
			assert.ErrorIs(t, p.Err, ErrOriginTwice, zone)
		}
	}
	// A transfer's owners are in full: the same owner there is the same
	// mistake made in the primary's file.
	rr, err := dns.NewRR("tiktok.com.rpz.example.gov.rpz.example.gov. 300 IN CNAME .")
	require.NoError(t, err)
	var r result
	FromRecords("rpz.example.gov.", []dns.RR{rr}, r.handler())
	assert.Empty(t, r.triggers)
	require.Len(t, r.problems, 1)
	assert.ErrorIs(t, r.problems[0].Err, ErrOriginTwice)
}

func triggerNames(ts []Trigger) []string {
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return names
}

// TestParseRelativePassthru: `CNAME rpz-passthru` without its trailing
// dot is to BIND a CNAME to a name below the zone, never the passthru
// action, in a zone named by its SOA, by $ORIGIN or by named.conf alone:
// it is reported, where a file whose SOA comes first written in full took
// it as passthru since 22f1d9b, and one starting `@ SOA` always did. The
// blocking targets written so stay actions (rpz-drop: the drop action,
// TestParseUnnamedZone).
func TestParseRelativePassthru(t *testing.T) {
	for _, zone := range []string{
		"rpz.example.gov. SOA localhost. root.localhost. 1 3600 600 86400 60\n",
		"@ SOA localhost. root.localhost. 1 3600 600 86400 60\n",
		"$ORIGIN rpz.example.gov.\n@ SOA localhost. root.localhost. 1 3600 600 86400 60\n",
	} {
		r := parse(t, zone+"ok.tiktok.com CNAME rpz-passthru\nok.capcut.com CNAME rpz-passthru.\n")
		var got []string
		for _, tr := range r.triggers {
			got = append(got, tr.Name+" "+tr.Action.String())
		}
		require.Len(t, r.problems, 1, zone)
		assert.Contains(t, got, "ok.capcut.com passthru", zone)
		assert.NotContains(t, got, "ok.tiktok.com passthru", zone)
		assert.Contains(t, r.problems[0].Owner, "ok.tiktok.com.", zone)
		if !strings.HasPrefix(zone, "$ORIGIN") { // there: a rewrite to rpz-passthru.rpz.example.gov., as before
			assert.ErrorIs(t, r.problems[0].Err, ErrRelativePassthru, zone)
		}
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	_, err := Parse("x.rpz", &failingReader{"a.example CNAME .\n", boom}, Handler{})
	assert.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "reading x.rpz")
}

// failingReader returns text, then err.
type failingReader struct {
	text string
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.text == "" {
		return 0, r.err
	}
	n := copy(p, r.text)
	r.text = r.text[n:]
	return n, nil
}

func TestFromRecords(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		require.NoError(t, err)
		return r
	}
	soa := rr("RPZ.example.gov. 60 SOA a. b. 9 2 3 4 5")
	var r result
	z := FromRecords("rpz.Example.gov", []dns.RR{
		soa,
		rr("rpz.example.gov. 60 NS a."),
		rr("tiktok.com.rpz.example.gov. 60 CNAME ."),
		rr("*.TikTok.com.RPZ.example.gov. 60 CNAME *."),
		rr("allowed.example.rpz.example.gov. 60 CNAME rpz-passthru."), // a transfer's target is in full: a passthru
		rr("x.rpz.example.gov. 60 A 192.0.2.1"),
		nil,
		rr("tiktok.com. 60 CNAME ."),
		rr("24.0.2.0.192.rpz-ip.rpz.example.gov. 60 CNAME ."),
		&dns.CNAME{Hdr: dns.RR_Header{Name: "empty.rpz.example.gov.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET}},
		soa,
	}, r.handler())
	assert.Equal(t, Zone{Origin: "rpz.example.gov.", Serial: 9, SOA: true, Triggers: 4, Problems: 3}, z)
	assert.Equal(t, []Trigger{
		{Owner: "tiktok.com.rpz.example.gov.", Name: "tiktok.com", Action: NXDOMAIN},
		{Owner: "*.TikTok.com.RPZ.example.gov.", Name: "TikTok.com", Wildcard: true, Action: NODATA},
		{Owner: "allowed.example.rpz.example.gov.", Name: "allowed.example", Action: Passthru},
		{Owner: "24.0.2.0.192.rpz-ip.rpz.example.gov.", Prefix: netip.MustParsePrefix("192.0.2.0/24"), Action: NXDOMAIN},
	}, r.triggers)
	require.Len(t, r.problems, 3)
	assert.Equal(t, Problem{Owner: "x.rpz.example.gov.", Err: r.problems[0].Err}, r.problems[0], "a transfer has no lines")
	assert.ErrorIs(t, r.problems[0].Err, ErrLocalData)
	assert.ErrorIs(t, r.problems[1].Err, ErrOutsideZone)
	assert.Equal(t, Problem{Owner: "empty.rpz.example.gov.", Err: ErrNoTarget}, r.problems[2])

	// A record that says it is an SOA but is no *dns.SOA has no serial.
	z = FromRecords("rpz.example.gov.", []dns.RR{&dns.RFC3597{Hdr: dns.RR_Header{Name: "rpz.example.gov.", Rrtype: dns.TypeSOA, Class: dns.ClassINET}}}, Handler{})
	assert.Equal(t, Zone{Origin: "rpz.example.gov."}, z)
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action][2]string{
		NXDOMAIN: {"NXDOMAIN", "."}, NODATA: {"NODATA", "*."}, Drop: {"drop", "rpz-drop."}, Passthru: {"passthru", "rpz-passthru."},
	} {
		assert.Equal(t, want[0], a.String())
		assert.Equal(t, want[1], a.Target())
	}
	assert.Equal(t, "action(9)", Action(9).String())
}

func TestRelative(t *testing.T) {
	for _, tc := range []struct {
		owner, origin, want string
		ok                  bool
	}{
		{"a.b.rpz.example.", "rpz.example.", "a.b", true},
		{"rpz.example.", "rpz.example.", "", true},
		{"A.B.RPZ.Example.", "rpz.example.", "A.B", true},
		{`a.\114pz.example.`, "rpz.example.", "a", true},
		{`a.rpz.ex\097mple.`, "RPZ.example.", "a", true},
		{`a\.rpz.example.`, "rpz.example.", `a\.rpz.example`, false},
		{`a\.rpz.example.`, "example.", `a\.rpz`, true},
		{`a\\.rpz.example.`, "rpz.example.", `a\\`, true}, // an escaped backslash, then a dot
		{`a\\\.rpz.example.`, "rpz.example.", "", false},  // an escaped backslash, then an escaped dot
		{"a.xrpz.example.", "rpz.example.", "", false},
		{"example.", "rpz.example.", "", false},
		{"a.example.", ".", "a.example", true},
		{".", ".", "", true},
		{".", "example.", "", false},
		{"a.example", "example.", "", false},
	} {
		got, ok := relative(tc.owner, tc.origin)
		assert.Equal(t, tc.ok, ok, "%s in %s", tc.owner, tc.origin)
		if tc.ok {
			assert.Equal(t, tc.want, got, "%s in %s", tc.owner, tc.origin)
		}
		if !strings.Contains(tc.owner+tc.origin, `\`) {
			assert.Equal(t, dns.IsFqdn(tc.owner) && dns.IsSubDomain(tc.origin, tc.owner), ok, "agrees with miekg/dns: %s in %s", tc.owner, tc.origin)
		}
	}
}

// TestParseSignedZone reads a DNSSEC-signed policy zone (a primary with
// dnssec-policy or inline-signing, or dnssec-signzone's output): its
// DNSSEC records (RRSIG and NSEC at every owner, NSEC3 at hashed owners,
// DNSKEY, CDS, CDNSKEY, NSEC3PARAM, ZONEMD and BIND's private signing
// records at the apex) are the zone's own, as its SOA and NS are, and
// are read silently, as BIND reads them: no policy, nothing reported.
// Of a signed zone's triggers, each would else be reported two or three
// times, and every IXFR (the apex SOA's RRSIG changes with each serial)
// would report records and so never apply as a change. The same types
// elsewhere (a DNSKEY or CDS below the apex) stay local data, reported.
func TestParseSignedZone(t *testing.T) {
	const sig = " 13 3 300 20300101000000 20260101000000 12345 rpz.test. " +
		"eiNTHjjuzHHrlsJKV9Gi8SXiDJKtnCBC7R6M1yx2zrs1YiAOoBkIQbVS fh7nh3JHTh0aIbiG6Hjqgos6KOUI8Q=="
	const key = "AwEAAaetidLzsKWUt4swWR8yu0wPHPiUi8LUsAD0QPWU+wzt89epO6tH zkMBVDkC7qphQO2hTY4hHn9npWFRw5BYubE="
	r := parse(t, "$ORIGIN rpz.test.\n"+head+`@ RRSIG SOA`+sig+`
@ RRSIG NS`+sig+`
@ DNSKEY 257 3 13 `+key+`
@ RRSIG DNSKEY`+sig+`
@ CDS 12345 13 2 0B5A0A7A4F1C3A0D3B6E1B9D5B8A0B6E1C1D1E1F2A2B2C2D2E2F3A3B3C3D3E3F
@ CDNSKEY 257 3 13 `+key+`
@ NSEC3PARAM 1 0 0 -
@ ZONEMD 1 1 1 A0B1C2D3E4F5061728394A5B6C7D8E9FA0B1C2D3E4F5061728394A5B6C7D8E9FA0B1C2D3E4F5061728394A5B6C7D8E9F
@ TYPE65534 \# 5 0D30390001
@ NSEC tiktok.com.rpz.test. SOA NS RRSIG NSEC DNSKEY
tiktok.com CNAME .
tiktok.com RRSIG CNAME`+sig+`
tiktok.com NSEC *.tiktok.com.rpz.test. CNAME RRSIG NSEC
*.tiktok.com CNAME *.
*.tiktok.com RRSIG CNAME`+sig+`
32.1.2.0.192.rpz-ip CNAME rpz-drop.
32.1.2.0.192.rpz-ip RRSIG CNAME`+sig+`
32.1.2.0.192.rpz-ip NSEC rpz.test. CNAME RRSIG NSEC
2vptu5timamqttgl4luu9kg21e0aor3s NSEC3 1 0 0 - 2vptu5timamqttgl4luu9kg21e0aor3t CNAME RRSIG
2vptu5timamqttgl4luu9kg21e0aor3s RRSIG NSEC3`+sig+`
sub DNSKEY 257 3 13 `+key+`
sub CDS 12345 13 2 0B5A0A7A4F1C3A0D3B6E1B9D5B8A0B6E1C1D1E1F2A2B2C2D2E2F3A3B3C3D3E3F
`)
	var owners []string
	for _, p := range r.problems {
		assert.ErrorIs(t, p.Err, ErrLocalData)
		owners = append(owners, strconv.Itoa(p.Line)+" "+p.Owner)
	}
	assert.Equal(t, []string{"25 sub.rpz.test.", "26 sub.rpz.test."}, owners, "only the DNSKEY and CDS below the apex")
	require.Len(t, r.triggers, 3)
	assert.Equal(t, Trigger{Owner: "tiktok.com.rpz.test.", Line: 15, Name: "tiktok.com", Action: NXDOMAIN}, r.triggers[0])
	assert.Equal(t, Trigger{Owner: "*.tiktok.com.rpz.test.", Line: 18, Name: "tiktok.com", Wildcard: true, Action: NODATA}, r.triggers[1])
	assert.Equal(t, netip.MustParsePrefix("192.0.2.1/32"), r.triggers[2].Prefix)
	assert.True(t, r.zone.SOA)
}

// TestParseUnnamedZoneAddressTrigger: a response-IP trigger written in
// full in a zone of no name is kept as written, and the report names the
// prefix it triggers for, as the operator wrote it in the owner's reversed
// labels.
func TestParseUnnamedZoneAddressTrigger(t *testing.T) {
	r := parse(t, head+"24.0.2.0.192.rpz-ip. CNAME .\n")
	require.Len(t, r.triggers, 1)
	assert.Equal(t, netip.MustParsePrefix("192.0.2.0/24"), r.triggers[0].Prefix)
	require.Len(t, r.problems, 1)
	p := r.problems[0]
	assert.True(t, p.Kept)
	assert.ErrorIs(t, p.Err, ErrUnnamedZone)
	assert.Contains(t, p.Err.Error(), "not skipped: read as written, a trigger for 192.0.2.0/24, so that it blocks")
}
