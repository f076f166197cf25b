package resolver

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestRPZAgainstBIND loads each zone of a corpus of RPZ zones into BIND's
// named (a forwarding resolver with the zone as its response-policy zone)
// and into dnsfence (the zone as an .rpz block list), both forwarding to
// one NSD serving the names asked, and asks each the same questions: the
// decision (blocked or not, and how: NXDOMAIN, NODATA, no answer, or the
// answer passed through) must be BIND's, but where dnsfence decides
// otherwise as README says, or where the difference is a judgement still
// to be made (bindRPZDocumented: a difference listed there that goes away
// fails too, so that the list stays true). The lines dnsfence reports of
// each zone are checked too.
//
// Every server runs in a network namespace of the test's own (named
// listens on the addresses of interfaces only: 127.0.71.2 is added to its
// lo), on 127.0.71.0/24: NSD on .1, named on .2, dnsfence on .3. The
// questions of zone i come from 127.0.71.(11+i), which selects a view of
// named's and a policy of dnsfence's with the zone, and, for the answer
// unfiltered, from 127.0.71.(101+i), a view of named's without a policy.
func TestRPZAgainstBIND(t *testing.T) {
	namedBin := testnet.NeedProgram(t, "named", "bind9")
	nsdBin := testnet.NeedProgram(t, "nsd", "nsd")
	// named listens on the addresses of interfaces only.
	if !testnet.InNetns(t, "addr add 127.0.71.2/32 dev lo") {
		return
	}
	start := time.Now()

	up := startRootNSD(t, nsdBin, bindRPZUpstream)
	named := startRPZResolver(t, namedBin, up, bindRPZZones)
	f, warnings := startFenceRPZ(t, up, bindRPZZones)
	t.Logf("servers up in %v", time.Since(start).Round(time.Millisecond))

	type result struct {
		zone, name string
		qtype      uint16
		plain      string // unfiltered
		bind, fnce string
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	// The zones are asked at once, each its questions one after the
	// other, an ANY first of a name's (named answers ANY from its cache
	// when it holds any record of the name).
	for i, z := range bindRPZZones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, q := range z.ordered() {
				r := result{zone: z.name, name: q.name, qtype: q.qtype}
				r.plain = decisionOf(bindRPZPlain(i), named, q.name, q.qtype)
				done := make(chan struct{})
				go func() { // a drop costs each its timeout: the two wait at once
					r.bind = decisionOf(bindRPZClient(i), named, q.name, q.qtype)
					close(done)
				}()
				r.fnce = decisionOf(bindRPZClient(i), f.addr, q.name, q.qtype)
				<-done
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(results, func(a, b result) int {
		return strings.Compare(a.zone+" "+a.name+" "+dns.TypeToString[a.qtype], b.zone+" "+b.name+" "+dns.TypeToString[b.qtype])
	})
	differ := 0
	for _, r := range results {
		key := r.zone + " " + r.name + " " + dns.TypeToString[r.qtype]
		why, documented := bindRPZDocumented[key]
		mark := "  "
		if r.bind != r.fnce {
			differ++
			mark = "!="
		}
		t.Logf("%s %-60s plain %-28s bind %-28s dnsfence %s", mark, key, r.plain, r.bind, r.fnce)
		if r.plain == "drop" || r.plain == "SERVFAIL" || r.plain == "REFUSED" {
			t.Errorf("%s: named's view without a policy answers %s: the test's servers do not work", key, r.plain)
		}
		switch {
		case r.bind != r.fnce && !documented:
			t.Errorf("%s: BIND %s, dnsfence %s (unfiltered: %s)", key, r.bind, r.fnce, r.plain)
		case r.bind == r.fnce && documented:
			t.Errorf("%s: listed as a documented difference (%s), and both answer %s", key, why, r.bind)
		}
	}
	t.Logf("%d zones, %d queries, %d decisions differ (documented: %d); %v",
		len(bindRPZZones), len(results), differ, len(bindRPZDocumented), time.Since(start).Round(time.Millisecond))

	// What dnsfence reports and skips, file:line.
	for i, z := range bindRPZZones {
		file := fmt.Sprintf("z%d.rpz", i)
		var got []string
		for _, w := range warnings {
			if _, rest, ok := strings.Cut(w, string(filepath.Separator)+file+":"); ok {
				line, _, _ := strings.Cut(rest, ":")
				got = append(got, line)
			}
		}
		assert.Equal(t, z.skipped, got, "%s: the lines dnsfence reports", z.name)
	}
}

// bindRPZClient is the address zone i's questions come from, and
// bindRPZPlain the address they come from to a view of named's without a
// policy, whose cache is the zone's own.
func bindRPZClient(i int) string { return "127.0.71." + strconv.Itoa(11+i) }

func bindRPZPlain(i int) string { return "127.0.71." + strconv.Itoa(101+i) }

// decisionOf asks server (from the loopback address from, over UDP, RD set,
// with EDNS) and says what the answer decides: "drop" (no answer),
// "NXDOMAIN", "NODATA" (NOERROR and no record of the type asked at the end
// of the chain), "answer ..." with the records of that type (their data,
// sorted), "TC" or another RCODE.
func decisionOf(from, server, name string, qtype uint16) string {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: 1500 * time.Millisecond, UDPSize: 65535, Dialer: localDialer("udp", from)}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return "drop"
	}
	switch {
	case r.Truncated:
		return "TC"
	case r.Rcode == dns.RcodeNameError:
		return "NXDOMAIN"
	case r.Rcode != dns.RcodeSuccess:
		return dns.RcodeToString[r.Rcode]
	}
	var data []string
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == qtype || qtype == dns.TypeANY && rr.Header().Rrtype != dns.TypeCNAME {
			hdr := rr.Header().String()
			data = append(data, dns.TypeToString[rr.Header().Rrtype]+" "+strings.TrimPrefix(rr.String(), hdr))
		}
	}
	if len(data) == 0 {
		return "NODATA"
	}
	slices.Sort(data)
	return "answer " + strings.Join(data, ",")
}

// startRootNSD starts NSD serving zone as the root zone on 127.0.71.1,
// and returns its address: every name asked is in its zone, so that it
// follows each CNAME chain to its end as a recursive upstream would.
func startRootNSD(t *testing.T, bin, zone string) string {
	t.Helper()
	dir := t.TempDir()
	const ip = "127.0.71.1"
	port := testnet.FreePort(t, ip)
	conf := filepath.Join(dir, "nsd.conf")
	text := testnet.NSDConf(ip, port, dir, 1, "") + "zone:\n\tname: \".\"\n\tzonefile: root.db\n"
	require.NoError(t, os.WriteFile(conf, []byte(text), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "root.db"), []byte(zone), 0o600))
	var d testnet.Daemon
	d.Start(t, dir, bin, "-d", "-c", conf)
	t.Cleanup(d.Stop)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	waitAnswers(t, &d, "nsd", addr, ".")
	return addr
}

// startRPZResolver starts named on 127.0.71.2 as a forwarding resolver to
// upstream, and returns its address. Zone i is the response-policy zone
// rpz.test of the view of bindRPZClient(i); bindRPZPlain(i) has a view
// with none. Its root hints name 127.0.71.1 on port 53, where nothing
// listens, should it ever look past its forwarder.
func startRPZResolver(t *testing.T, bin, upstream string, zones []bindRPZZone) string {
	t.Helper()
	dir := t.TempDir()
	const ip = "127.0.71.2"
	port := testnet.FreePort(t, ip)
	upHost, upPort, err := net.SplitHostPort(upstream)
	require.NoError(t, err)
	var b strings.Builder
	fmt.Fprintf(&b, `options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	listen-on port %d { %s; };
	listen-on-v6 { none; };
	query-source address %s;
	recursion yes;
	allow-query { 127.0.71.0/24; };
	allow-recursion { 127.0.71.0/24; };
	forward only;
	forwarders { %s port %s; };
	dnssec-validation no;
	notify no;
	minimal-responses no;
};
controls { };
`, dir, filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"), port, ip, ip, upHost, upPort)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "root.hints"),
		[]byte(". 3600000 NS ns.root.\nns.root. 3600000 A 127.0.71.1\n"), 0o600))
	hints := `zone "." { type hint; file "root.hints"; };`
	for i, z := range zones {
		fmt.Fprintf(&b, "view \"plain%d\" { match-clients { %s; }; %s };\n", i, bindRPZPlain(i), hints)
		file := fmt.Sprintf("z%d.rpz", i)
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(z.zoneText(i)), 0o600))
		for name, text := range z.files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600))
		}
		policy, second := `zone "rpz.test";`, ""
		if z.second != "" {
			require.NoError(t, os.WriteFile(filepath.Join(dir, file+"2"), []byte(z.second), 0o600))
			policy += ` zone "rpz2.test";`
			second = fmt.Sprintf(`zone "rpz2.test" { type primary; file %q; };`, file+"2")
		}
		fmt.Fprintf(&b, `view "z%d" {
	match-clients { %s; };
	%s
	response-policy { %s } qname-wait-recurse no;
	zone "rpz.test" { type primary; file %q; };
	%s
};
`, i, bindRPZClient(i), hints, policy, file, second)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "named.conf"), []byte(b.String()), 0o600))
	var d testnet.Daemon
	d.Start(t, dir, bin, "-g", "-4", "-n", "1", "-c", filepath.Join(dir, "named.conf"))
	t.Cleanup(d.Stop)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	waitAnswers(t, &d, "named", addr, "ns.root.")
	return addr
}

// waitAnswers waits until the server at addr answers name's A (or SOA for
// the root) with NOERROR.
func waitAnswers(t *testing.T, d *testnet.Daemon, what, addr, name string) {
	t.Helper()
	qtype := dns.TypeA
	if name == "." {
		qtype = dns.TypeSOA
	}
	c := &dns.Client{Timeout: 500 * time.Millisecond, Dialer: localDialer("udp", bindRPZPlain(0))}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	if !assert.Eventually(t, func() bool {
		m, _, err := c.Exchange(q, addr)
		return err == nil && m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0
	}, 20*time.Second, 20*time.Millisecond) {
		t.Fatalf("%s did not answer %s; its log:\n%s", what, name, d.Log())
	}
}

// startFenceRPZ serves dnsfence on 127.0.71.3, forwarding to upstream, a
// policy for each zone's client blocking with the zone as zI.rpz. It
// returns the warnings of the snapshot, a line each.
func startFenceRPZ(t *testing.T, upstream string, zones []bindRPZZone) (*fence, []string) {
	t.Helper()
	files := map[string]string{}
	var b strings.Builder
	b.WriteString(`listen: ["127.0.71.3:0"]
upstreams: {{upstreams}}
upstream_timeout: 1s
allowed_clients: ["127.0.71.0/24"]
log: {queries: none}
policies:
`)
	for i, z := range zones {
		file := fmt.Sprintf("z%d.rpz", i)
		files[file] = z.zoneText(i)
		lists := fmt.Sprintf("%q", file)
		if z.second != "" {
			files["second-"+file] = z.second
			lists += fmt.Sprintf(", %q", "second-"+file)
		}
		fmt.Fprintf(&b, "  - name: z%d\n    clients: [%q]\n    block: [%s]\n", i, bindRPZClient(i)+"/32", lists)
	}
	path := writeConfig(t, b.String(), files, upstream)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	m := NewMetrics(prometheus.NewRegistry())
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	log := zap.NewNop()
	h := NewHandler(log, snap, m)
	srv := newServer(log, h, h)
	require.NoError(t, srv.Start([]string{"127.0.71.3:0"}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	var lines []string
	for _, w := range snap.Warnings {
		for _, e := range leafErrors(w) {
			lines = append(lines, e.Error())
		}
	}
	return &fence{addr: srv.Addrs()[0], handler: h, server: srv, dir: filepath.Dir(path)}, lines
}

type bindRPZQuery struct {
	name  string
	qtype uint16
}

// bindRPZZone is a zone of the corpus, the questions asked of it, and the
// lines dnsfence reports and skips (or keeps with a warning).
type bindRPZZone struct {
	name    string
	text    string
	queries []bindRPZQuery
	skipped []string
	files   map[string]string // more files beside the zone's, in named's folder
	// second, when set, is a second zone, rpz2.test, after the first in
	// named's response-policy and in the policy's block lists.
	second string
}

// zoneText is the zone as zone i of the corpus: {{client}} is its
// client's address as an rpz-client-ip trigger writes it.
func (z bindRPZZone) zoneText(i int) string {
	return strings.ReplaceAll(z.text, "{{client}}", strconv.Itoa(11+i)+".71.0.127")
}

// ordered is the zone's questions, those of type ANY first.
func (z bindRPZZone) ordered() []bindRPZQuery {
	q := slices.Clone(z.queries)
	slices.SortStableFunc(q, func(a, b bindRPZQuery) int {
		return cmp.Compare(b2i(a.qtype != dns.TypeANY), b2i(b.qtype != dns.TypeANY))
	})
	return q
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// qs is the questions for each name, of each type.
func qs(types []uint16, names ...string) []bindRPZQuery {
	var out []bindRPZQuery
	for _, n := range names {
		for _, t := range types {
			out = append(out, bindRPZQuery{dns.Fqdn(n), t})
		}
	}
	return out
}

var (
	typeA   = []uint16{dns.TypeA}
	typeAll = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeANY, dns.TypeDS, dns.TypeRRSIG}
)

const bindRPZHead = "$ORIGIN rpz.test.\n$TTL 60\n@ SOA ns.rpz.test. admin.rpz.test. 1 3600 600 86400 60\n@ NS localhost.\n"

// bindRPZUpstream is the root zone NSD serves: a name under each test
// domain exists (wildcards), CNAME chains, DNAME, addresses for the
// response-IP triggers, HTTPS records.
var bindRPZUpstream = `$ORIGIN .
$TTL 300
@ SOA ns.root. admin.root. 1 3600 600 86400 60
@ NS ns.root.
ns.root. A 127.0.71.1
localhost. A 127.0.0.1
ex. A 192.0.2.200
*.ex. A 192.0.2.200
*.ex. AAAA 2001:db8:ff::200
*.ex. TXT "w"
*.blk.ex. A 192.0.2.200
*.sub. A 192.0.2.200
okc.blk.ex. CNAME exact.ex.
c1.ch. CNAME c2.ch.
c2.ch. CNAME c3.ch.
c3.ch. A 203.0.113.3
cx.ch. CNAME exact.ex.
cn.ch. CNAME nodata.ex.
cd.ch. CNAME drop.ex.
cip.ch. CNAME v4a.ip.
cpass.ch. CNAME okc.blk.ex.
cwild.ch. CNAME x.blk.ex.
cent.ch. CNAME x.b.ent.ex.
pq.ch. CNAME exact.ex.
bl2.ex. CNAME c3.ch.
dn. DNAME ex.
dn2. DNAME ex.
v4a.ip. A 192.0.2.1
v4b.ip. A 198.51.100.7
v4c.ip. A 198.51.100.5
v4mix.ip. A 198.51.100.5
v4mix.ip. A 192.0.2.1
v4d.ip. A 198.18.5.5
v4h.ip. A 10.0.0.5
v4p.ip. A 192.0.2.1
v4o.ip. A 203.0.113.9
v6a.ip. AAAA 2001:db8::1
v6b.ip. AAAA 2001:db8:1::5
v6c.ip. AAAA 2001:db8:2::7
v6m.ip. AAAA ::ffff:192.0.2.1
v6n.ip. AAAA 64:ff9b::c000:201
v6o.ip. AAAA 2001:db8:3::1
svc.ip. HTTPS 1 . ipv4hint=192.0.2.1
svct.h. HTTPS 1 exact.ex. alpn=h2
svco.h. HTTPS 0 exact.ex.
svcok.h. HTTPS 1 . alpn=h2 ipv4hint=203.0.113.9
v6d.ip. AAAA 2001:db8:4::1
v6l.ip. AAAA ::1
v6z.ip. AAAA 2002::5
v6u.ip. AAAA 2001:db8::a
v4z.ip. A 192.0.2.7
tie.ip. A 192.0.2.9
tie.ip. A 198.51.100.5
tie6.ip. A 192.0.2.9
tie6.ip. AAAA ::1
mx.ip. MX 10 v4a.ip.
cpip.ch. CNAME v4p.ip.
gone.ip. CNAME v4a.ip.
m1.ch. CNAME m2.ch.
m2.ch. CNAME m3.ch.
m3.ch. A 203.0.113.3
d1.ch. CNAME d2.ch.
d2.ch. CNAME exact.ex.
*.rpz-ip. A 192.0.2.202
`

// Names at the limits of RFC 1035 §3.1: name246 is the longest name a
// trigger of zone rpz.test can be for (its owner is 255 octets), name255
// a 255-octet name below long.ex.
var (
	name246 = strings.Repeat("b", 49) + "." + label63("c") + "." + label63("d") + "." + label63("e") + ".ex."
	name255 = strings.Repeat("f", 53) + "." + label63("g") + "." + label63("h") + "." + label63("i") + ".long.ex."
)

// bindRPZSig is the signature of the signed zone's RRSIG records, which
// neither server verifies.
const bindRPZSig = "eiNTHjjuzHHrlsJKV9Gi8SXiDJKtnCBC7R6M1yx2zrs1YiAOoBkIQbVS fh7nh3JHTh0aIbiG6Hjqgos6KOUI8Q=="

// nameLong is a 255-octet name below a.b.c.ex (63-octet labels), for a
// *.a.b.c.ex trigger of 207 octets with the zone's name.
var nameLong = strings.Repeat("x", 58) + "." + label63("a") + "." + label63("b") + "." + label63("c") + ".ex."

func label63(c string) string { return strings.Repeat(c, 63) }

// bindRPZZones is the corpus.
var bindRPZZones = []bindRPZZone{
	{
		name: "qname",
		text: bindRPZHead + `exact.ex CNAME .
nodata.ex CNAME *.
drop.ex CNAME rpz-drop.
both.ex CNAME .
*.both.ex CNAME *.
*.blk.ex CNAME .
ok.blk.ex CNAME rpz-passthru.
okc.blk.ex CNAME rpz-passthru.
*.pass.ex CNAME rpz-passthru.
bad.pass.ex CNAME .
*.deep.ex CNAME .
*.in.deep.ex CNAME *.
*.ent.ex CNAME .
a.b.ent.ex CNAME .
bl2.ex CNAME .
*.dn CNAME .
pq.ch CNAME rpz-passthru.
gone.zz CNAME *.
`,
		queries: append(append(append(qs(typeAll, "exact.ex", "nodata.ex", "both.ex", "x.both.ex"),
			qs([]uint16{dns.TypeTXT}, "drop.ex")...),
			qs(typeA, "drop.ex", "EXACT.EX", "x.exact.ex", "x.nodata.ex",
				"blk.ex", "y.blk.ex", "ok.blk.ex", "x.ok.blk.ex", "a.b.blk.ex",
				"pass.ex", "z.pass.ex", "bad.pass.ex", "x.bad.pass.ex",
				"deep.ex", "a.deep.ex", "a.b.deep.ex", "in.deep.ex", "x.in.deep.ex", "x.y.in.deep.ex",
				"ent.ex", "c.ent.ex", "b.ent.ex", "x.b.ent.ex", "a.b.ent.ex", "x.a.b.ent.ex",
				"c1.ch", "cx.ch", "cn.ch", "cd.ch", "cip.ch", "cpass.ch", "cwild.ch", "cent.ch", "pq.ch", "bl2.ex",
				"dn", "exact.dn", "other.dn", "exact.dn2", "other.dn2", "okc.blk.ex", `*.blk.ex`, "gone.zz",
				`a\000b.y.blk.ex`, `x\.y.blk.ex`, `\042.blk.ex`, "Y.BLK.EX", `\*.ent.ex`, `b.\*.ent.ex`,
				"svct.h", "svco.h")...),
			qs([]uint16{dns.TypeHTTPS}, "svct.h", "svco.h")...),
		skipped: []string{"20"},
	},
	{
		name:    "cname-qtype",
		text:    bindRPZHead + "exact.ex CNAME .\nnodata.ex CNAME *.\n",
		queries: qs([]uint16{dns.TypeCNAME, dns.TypeA}, "cx.ch", "cn.ch", "exact.ex", "nodata.ex"),
	},
	{
		name:    "mapped",
		text:    bindRPZHead + "80.zz.rpz-ip CNAME .\n32.9.113.0.203.rpz-ip CNAME rpz-passthru.\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeAAAA}, "v4a.ip", "v4o.ip", "v6l.ip", "v6a.ip"),
	},
	{
		name:    "mapped96",
		text:    bindRPZHead + "96.0.0.ffff.zz.rpz-ip CNAME .\n104.0.c000.ffff.zz.rpz-ip CNAME *.\nnever.ex CNAME .\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeAAAA}, "v4o.ip", "v4a.ip", "v6m.ip", "v6a.ip"),
		skipped: []string{"5"},
	},
	{
		name:    "tie",
		text:    bindRPZHead + "32.9.2.0.192.rpz-ip CNAME .\n32.5.100.51.198.rpz-ip CNAME rpz-passthru.\n128.1.zz.rpz-ip CNAME rpz-passthru.\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeANY}, "tie.ip", "tie6.ip"),
	},
	{
		name:    "chain-mix",
		text:    bindRPZHead + "exact.ex CNAME .\n32.200.2.0.192.rpz-ip CNAME rpz-passthru.\nm2.ch CNAME *.\nm3.ch CNAME .\nd2.ch CNAME rpz-drop.\n",
		queries: qs(typeA, "cx.ch", "exact.ex", "m1.ch", "m2.ch", "m3.ch", "x.ex", "d1.ch"),
	},
	{
		name:    "qname-vs-ip",
		text:    bindRPZHead + "v4a.ip CNAME *.\n32.1.2.0.192.rpz-ip CNAME rpz-drop.\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeANY}, "v4a.ip", "cip.ch", "v4mix.ip", "gone.ip"),
	},
	{
		name: "escapes",
		text: bindRPZHead + `nod.esc.ex CNAME \*.
drp.esc.ex CNAME rpz\-drop.
up.esc.ex CNAME RPZ-DROP.
\*.wesc.ex CNAME .
\042.wesc2.ex CNAME .
*.pesc.ex CNAME .
ok.pesc.ex CNAME \114pz-passthru.
up.pesc.ex CNAME RPZ-PASSTHRU.
32.9.113.0.203.rpz\-ip CNAME .
32.1.2.0.192.\114PZ-IP CNAME *.
`,
		queries: qs(typeA, "nod.esc.ex", "drp.esc.ex", "up.esc.ex", "wesc.ex", "x.wesc.ex", "wesc2.ex", "x.wesc2.ex",
			"ok.pesc.ex", "up.pesc.ex", "x.pesc.ex", "v4o.ip", "v4a.ip", "32.9.113.0.203.rpz-ip"),
	},
	{
		name:    "soa-first",
		text:    "$TTL 60\nrpz.test. SOA ns.rpz.test. admin.rpz.test. 1 3600 600 86400 60\nrpz.test. NS localhost.\nsf.ex CNAME .\nex CNAME .\n$GENERATE 1-3 gen$.ex CNAME .\n",
		queries: qs(typeA, "sf.ex", "ex", "gen1.ex", "gen3.ex", "gen4.ex"),
	},
	{
		name:    "unnamed",
		text:    "$TTL 60\n@ SOA ns.rpz.test. admin.rpz.test. 1 3600 600 86400 60\n@ NS localhost.\nun.ex CNAME .\nfull.un.ex.rpz.test. CNAME .\n$INCLUDE inc.db\n",
		files:   map[string]string{"inc.db": "inc.ex CNAME .\n"},
		queries: qs(typeA, "un.ex", "full.un.ex", "inc.ex"),
		skipped: []string{"5", "6"},
	},
	{
		name:    "dname-owner",
		text:    bindRPZHead + "dn2 CNAME .\n",
		queries: qs(typeA, "dn2", "exact.dn2", "exact.ex"),
	},
	{
		name: "two-zones",
		text: bindRPZHead + `x1.ex CNAME .
y1.ex CNAME rpz-passthru.
*.w1.ex CNAME .
v4a.ip CNAME rpz-passthru.
`,
		second: strings.ReplaceAll(bindRPZHead, "rpz.test.", "rpz2.test.") + `x1.ex CNAME rpz-passthru.
y1.ex CNAME .
a.w1.ex CNAME rpz-passthru.
z1.ex CNAME *.
32.1.2.0.192.rpz-ip CNAME .
32.200.2.0.192.rpz-ip CNAME rpz-passthru.
`,
		queries: qs(typeA, "x1.ex", "y1.ex", "a.w1.ex", "b.w1.ex", "z1.ex", "v4a.ip", "v4mix.ip", "w1.ex"),
	},
	{
		name:    "relative-targets",
		text:    bindRPZHead + "reldrop.ex CNAME rpz-drop\nrelstar.ex CNAME *\nnever.ex CNAME .\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeTXT}, "reldrop.ex", "relstar.ex"),
		skipped: []string{"5", "6"},
	},
	{
		name:    "star",
		text:    bindRPZHead + "* CNAME .\nnever.ex CNAME .\n",
		queries: qs(typeA, "x.ex"),
		skipped: []string{"5"},
	},
	{
		name:    "chain",
		text:    bindRPZHead + "c2.ch CNAME .\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeTXT}, "c1.ch", "c2.ch", "c3.ch"),
	},
	{
		name: "respip",
		text: bindRPZHead + `32.1.2.0.192.rpz-ip CNAME .
24.0.100.51.198.rpz-ip CNAME *.
32.5.100.51.198.rpz-ip CNAME rpz-passthru.
112.0.c612.ffff.zz.rpz-ip CNAME .
24.1.0.0.10.rpz-ip CNAME .
128.1.zz.db8.2001.rpz-ip CNAME .
48.zz.1.db8.2001.rpz-ip CNAME .
64.0.0.0.0.0.2.db8.2001.rpz-ip CNAME rpz-drop.
v4p.ip CNAME rpz-passthru.
64.zz.4.db8.2001.rpz-ip CNAME rpz-drop.
128.1.zz.rpz-ip CNAME rpz-passthru.
64.zz.2002.rpz-ip CNAME .
128.A.zz.db8.2001.rpz-ip CNAME .
32.07.2.0.192.rpz-ip CNAME .
32.9.2.0.192.rpz-ip CNAME .
`,
		queries: append(append(qs([]uint16{dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypeTXT},
			"v4a.ip", "v4b.ip", "v4c.ip", "v4mix.ip", "v4d.ip", "v4h.ip", "v4p.ip", "v4o.ip",
			"v6a.ip", "v6b.ip", "v6c.ip", "v6m.ip", "v6n.ip", "v6o.ip", "cip.ch",
			"v6d.ip", "v6l.ip", "v6z.ip", "v6u.ip", "v4z.ip", "tie.ip", "tie6.ip", "cpip.ch"),
			qs([]uint16{dns.TypeHTTPS}, "svc.ip", "svcok.h")...),
			qs([]uint16{dns.TypeMX}, "mx.ip")...),
		skipped: []string{"9", "18"},
	},
	{
		name: "spelling",
		text: bindRPZHead + `MiXeD.Ex CNAME .
\116iktok.ex CNAME .
a\046b.ex CNAME .
a\000b.ex CNAME .
UPPER.EX CNAME *.
*.Wild.Ex CNAME .
full.ex.rpz.test. CNAME .
full2.ex.RPZ.Test. CNAME .
full3.ex.rpz.t\101st. CNAME .
nodot.ex.rpz.test CNAME .
outside.ex. CNAME .
$ORIGIN sub.rpz.test.
rel.ex CNAME .
$ORIGIN rpz.test.
*.long.ex CNAME .
` + name246 + `rpz.test. CNAME .
`,
		queries: qs(typeA, "mixed.ex", "MIXED.EX", "tiktok.ex", "TikTok.ex", `a\.b.ex`, "a.b.ex", `a\000b.ex`, `a\000B.ex`,
			"upper.ex", "x.wild.ex", "X.WILD.EX", "wild.ex", "full.ex", "full2.ex", "full3.ex", "nodot.ex", "outside.ex", "rel.ex", "rel.ex.sub",
			name255, name246, "x.long.ex", "long.ex"),
		skipped: []string{"7", "8", "14", "15"},
	},
	{
		name: "unsupported",
		text: bindRPZHead + `local.ex A 192.0.2.99
localtxt.ex TXT "local"
rew.ex CNAME c3.ch.
tcp.ex CNAME rpz-tcp-only.
nopass.ex CNAME rpz-passthru
self.ex CNAME self.ex.
dnm.ex DNAME ch.
ns.ex.rpz-nsdname CNAME .
*.ex.rpz-nsdname CNAME .
32.1.71.0.127.rpz-nsip CNAME .
32.1.71.0.127.rpz-ip CNAME rpz-passthru.
x.rpz-foo CNAME .
`,
		queries: qs([]uint16{dns.TypeA, dns.TypeTXT}, "local.ex", "localtxt.ex", "rew.ex", "tcp.ex", "nopass.ex", "self.ex",
			"dnm.ex", "c3.dnm.ex", "ns.ex", "x.ex", "x.rpz-foo"),
		skipped: []string{"5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "16"},
	},
	{
		name:    "apex",
		text:    bindRPZHead + "@ A 192.0.2.50\n@ TXT \"apex\"\n@ MX 10 localhost.\nexact.ex CNAME .\n",
		queries: qs([]uint16{dns.TypeA, dns.TypeSOA, dns.TypeNS, dns.TypeTXT, dns.TypeMX}, ".", "ex", "exact.ex"),
		skipped: []string{"5", "6", "7"},
	},
	{
		// An rpz-ip trigger of the first zone, and QNAME triggers of the
		// second for names whose answers it holds.
		name:    "zone-order-kinds",
		text:    bindRPZHead + "32.200.2.0.192.rpz-ip CNAME rpz-passthru.\n32.7.100.51.198.rpz-ip CNAME *.\n",
		second:  strings.ReplaceAll(bindRPZHead, "rpz.test.", "rpz2.test.") + "q2.ex CNAME .\nv4b.ip CNAME .\n",
		queries: qs(typeA, "q2.ex", "v4b.ip"),
	},
	{
		// A name of 255 octets below a *.name trigger: with rpz.test
		// after it, too long to look up.
		name:    "long-trim",
		text:    bindRPZHead + "*." + strings.TrimSuffix(nameLong[strings.IndexByte(nameLong, '.')+1:], ".") + " CNAME .\n",
		queries: qs(typeA, nameLong),
	},
	{
		// A signed policy zone: its DNSSEC records are no policy, and
		// neither server reports them.
		name: "signed",
		text: bindRPZHead + `@ RRSIG SOA 13 2 60 20300101000000 20260101000000 12345 rpz.test. ` + bindRPZSig + `
@ DNSKEY 257 3 13 AwEAAaetidLzsKWUt4swWR8yu0wPHPiUi8LUsAD0QPWU+wzt89epO6tH zkMBVDkC7qphQO2hTY4hHn9npWFRw5BYubE=
@ NSEC3PARAM 1 0 0 -
@ TYPE65534 \# 5 0D30390001
@ NSEC exact.ex.rpz.test. SOA NS RRSIG NSEC DNSKEY NSEC3PARAM TYPE65534
exact.ex CNAME .
exact.ex RRSIG CNAME 13 4 60 20300101000000 20260101000000 12345 rpz.test. ` + bindRPZSig + `
exact.ex NSEC *.blk.ex.rpz.test. CNAME RRSIG NSEC
*.blk.ex CNAME *.
*.blk.ex RRSIG CNAME 13 4 60 20300101000000 20260101000000 12345 rpz.test. ` + bindRPZSig + `
*.blk.ex NSEC rpz.test. CNAME RRSIG NSEC
`,
		queries: qs(typeA, "exact.ex", "x.blk.ex", "x.ex"),
	},
	{
		name:    "clientip",
		text:    bindRPZHead + "32.{{client}}.rpz-client-ip CNAME .\nnever.ex CNAME .\n",
		queries: qs(typeA, "x.ex"),
		skipped: []string{"5"},
	},
}

// bindRPZDocumented lists the questions where dnsfence decides otherwise
// than BIND 9.18, keyed "zone name TYPE", each group with its reason: what
// README says dnsfence does, or a judgement left to be made.
var bindRPZDocumented = reasons(
	[]string{"README (RPZ): local data, a CNAME to another name, rpz-passthru without its trailing dot, rpz-tcp-only. and client-IP triggers are reported and skipped; BIND answers with the local data (a DNAME is local data too), follows the CNAME, truncates, or blocks the client",
		"unsupported local.ex. A", "unsupported local.ex. TXT", "unsupported localtxt.ex. A", "unsupported localtxt.ex. TXT",
		"unsupported dnm.ex. A", "unsupported dnm.ex. TXT", "unsupported rew.ex. A", "unsupported rew.ex. TXT",
		"unsupported nopass.ex. A", "unsupported nopass.ex. TXT", "unsupported tcp.ex. A", "unsupported tcp.ex. TXT",
		"clientip x.ex. A"},
	[]string{"README (RPZ): a CNAME to another name is reported and skipped, rpz-drop and * written without their trailing dot below an $ORIGIN among them; BIND follows the CNAME, to rpz-drop.rpz.test. or, for *.rpz.test., the name asked below rpz.test., into the policy zone it serves, where the name does not exist",
		"relative-targets reldrop.ex. A", "relative-targets reldrop.ex. TXT", "relative-targets relstar.ex. A", "relative-targets relstar.ex. TXT"},
	[]string{"README (RPZ): an owner with an octet other than a letter, digit, - or _, and a *. wildcard of a single label, are reported and skipped, which BIND applies",
		`spelling a\.b.ex. A`, `spelling a\000b.ex. A`, `spelling a\000B.ex. A`, "qname other.dn. A"},
	[]string{"README (RPZ): a file that starts @ SOA with no $ORIGIN names no zone; an owner written in full is read as written (BIND: below the zone named.conf names); $INCLUDE is not read",
		"unnamed full.un.ex. A", "unnamed inc.ex. A"},
	[]string{"README (answer inspection): the targets of HTTPS and SVCB records and their address hints are inspected; BIND looks at CNAME and DNAME targets and A and AAAA records only",
		"qname svco.h. HTTPS", "qname svct.h. HTTPS", "respip svc.ip. HTTPS"},
	[]string{"README (RPZ): an address in the NAT64 Well-Known Prefix counts as the IPv4 address it holds",
		"respip v6n.ip. AAAA", "respip v6n.ip. ANY"},
	[]string{"README (answer inspection): every name an answer points at is inspected, the owner of each record and each CNAME and DNAME target, whatever the type asked; BIND follows a CNAME only for other types than CNAME, and looks at a DNAME's target, not its owner",
		"cname-qtype cn.ch. CNAME", "cname-qtype cx.ch. CNAME", "dname-owner exact.dn2. A"},
	[]string{"README (answer inspection): an allowed name in the middle of a chain is not blocked, but a later blocked name (or address) still blocks the answer; BIND stops at the first trigger in the chain, a passthru too",
		"qname cpass.ch. A", "respip cpip.ch. A"},
	[]string{"README (RPZ): one prefix has several spellings (zz or the zero groups written out, an IPv4 prefix as its IPv4-mapped IPv6 one), each applied; BIND warns that a spelling is not its canonical one and never applies it (it looks the prefix up by its canonical name)",
		"respip v4d.ip. A", "respip v4d.ip. ANY", "respip v6c.ip. AAAA", "respip v6c.ip. ANY",
		"mapped96 v4a.ip. A", "mapped96 v6m.ip. AAAA"},
	[]string{"README (RPZ): an rpz-passthru. beats the block entries of every list; BIND takes the trigger of the first zone in its response-policy order that has one",
		"two-zones x1.ex. A", "two-zones a.w1.ex. A"},
	[]string{"README (RPZ, where BIND answers otherwise): BIND lets an rpz-ip trigger of an earlier zone decide before a QNAME trigger of a later one; dnsfence applies QNAME triggers before it forwards",
		"zone-order-kinds q2.ex. A", "zone-order-kinds v4b.ip. A"},
	[]string{"README (RPZ, where BIND answers otherwise): BIND drops a long name's first labels until it fits below the policy zone's name, and the *.name trigger then misses it",
		"long-trim " + nameLong + " A"},
	[]string{"judgement: README says of two prefixes as long the one holding the smaller address decides (as the BIND ARM says); BIND's code takes the lexically smallest trigger name, its labels least significant first (32.5.100.51.198 before 32.9.2.0.192)",
		"respip tie.ip. A", "respip tie.ip. ANY", "tie tie.ip. A", "tie tie.ip. ANY"},
	[]string{"judgement: README says *.name blocks every name below name, the most specific trigger deciding; BIND looks the name up in the zone as DNS does (RFC 4592), so a wildcard does not apply to, or below, a name the zone holds (a trigger, an empty non-terminal above one, or the wildcard's own *.name)",
		"qname b.ent.ex. A", "qname x.b.ent.ex. A", "qname x.a.b.ent.ex. A", "qname in.deep.ex. A", "qname x.ok.blk.ex. A", "qname cent.ch. A",
		`qname b.\*.ent.ex. A`},
)

// reasons makes bindRPZDocumented from groups of a reason and its keys.
func reasons(groups ...[]string) map[string]string {
	m := map[string]string{}
	for _, g := range groups {
		for _, k := range g[1:] {
			m[k] = g[0]
		}
	}
	return m
}
