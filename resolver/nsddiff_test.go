package resolver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// The differential test asks NSD, serving crafted zones on 127.0.68.1,
// each question directly and through dnsfence forwarding to it, and
// requires dnsfence's answer to be NSD's but for what README's "How a
// query is answered" changes on purpose: the header bits set by rule (AA
// clear, RA set, AD only for AD or DO), our OPT (buffer 1232, the
// client's DO, no option of the upstream's but its EDEs), DNSSEC records
// only for DO, every TTL at most the answer's cache lifetime and counting
// down in the cache, the answer fitted to the client's UDP size, the
// RCODEs README gives for meta-types, transfers, other classes, other
// EDNS versions and an upstream's failure (documentedAnswer). Two more
// differences are left alone, as every cache has them: a cached answer's
// record names are spelt as in the answer cached (the question is always
// the client's), and a TCP client may be given, from the cache, an
// answer whose additional section the upstream cut to fit dnsfence's UDP
// query.

// diffZone is the zone diff.test.: the cases of the differential test.
var diffZone = `$ORIGIN diff.test.
$TTL 3600
@ SOA ns1 hostmaster 1 7200 3600 1209600 300
@ NS ns1
@ NS ns2.other.test.
@ MX 10 mail
ns1 A 127.0.68.1
mail A 192.0.2.25
mail AAAA 2001:db8::25
www A 192.0.2.1
www AAAA 2001:db8::1
www TXT "hello" "world"
MiXeD.CaSe A 192.0.2.2
cname CNAME www
cname2 CNAME cname
cnamemx CNAME mail
outcname CNAME www.other.test.
outnx CNAME nothere.other.test.
loop1 CNAME loop2
loop2 CNAME loop1
dangling CNAME nowhere
dname DNAME other.test.
selfdname DNAME diff.test.
*.wild A 192.0.2.3
*.wild TXT "wild"
sub.*.wild A 192.0.2.4
host.wild AAAA 2001:db8::3
x.y.ent A 192.0.2.5
*.cwild CNAME www
deleg NS ns.deleg
deleg NS ns.other.test.
ns.deleg A 127.0.68.99
ns.deleg AAAA 2001:db8::99
srv._tcp SRV 10 60 5060 mail
caa CAA 0 issue "ca.example.net"
caa CAA 128 tbs "Unknown"
https HTTPS 1 . alpn="h2,h3" port=8443 ipv4hint=192.0.2.1 ipv6hint=2001:db8::1
https HTTPS 2 alt.other.test. alpn="h3" mandatory=alpn
svcb SVCB 0 www
naptr NAPTR 100 10 "S" "SIP+D2U" "" _sip._udp
_443._tcp TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
unk TYPE65000 \# 4 01020304
unkempty TYPE65001 \# 0
null TYPE10 \# 3 010203
a\000b A 192.0.2.6
a\.b A 192.0.2.7
a\\b A 192.0.2.8
sp\032ace A 192.0.2.9
at\@x A 192.0.2.80
paren\(x A 192.0.2.81
quote\"x A 192.0.2.82
semi\;x A 192.0.2.83
dollar\$x A 192.0.2.84
tab\009x A 192.0.2.85
del\127x A 192.0.2.86
hi\200x A 192.0.2.87
\065bc A 192.0.2.88
slash/x A 192.0.2.89
ptrodd PTR a\.b\000c.diff.test.
cnodd CNAME a\.b
emptytxt TXT ""
ttl0 0 A 192.0.2.10
ttlbig 2147483647 A 192.0.2.11
mixedttl 100 A 192.0.2.12
mixedttl 200 A 192.0.2.13
loc LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m
hinfo HINFO "cpu" "os"
lookalike CNAME tiktok.com
tiktok.com A 192.0.2.60
esc CNAME tiktok\.com
tiktok\.com A 192.0.2.61
co CNAME tiktok.co.
not CNAME nottiktok.com.
mxtk MX 10 mx.tiktok.com.
mxtk MX 20 mail
srvtk SRV 0 0 443 tiktok.com.
tk NS ns1.tiktok.com.
tk NS ns1
httpsself HTTPS 1 . alpn="h2"
svcalias SVCB 0 svcb
ptr PTR tiktok.com.
s DNAME ` + strings.Repeat("x", 60) + "." + strings.Repeat("y", 60) + "." + strings.Repeat("z", 60) + `.other.test.
sshfp SSHFP 4 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`

// otherZone is other.test.: targets of out-of-zone aliases.
var otherZone = `$ORIGIN other.test.
$TTL 600
@ SOA ns1 hostmaster 7 7200 3600 1209600 60
@ NS ns1
ns1 A 127.0.68.1
ns2 A 127.0.68.1
www A 192.0.2.10
alt A 192.0.2.11
ns A 127.0.68.98
`

// rootZone lets NSD answer the names of no zone of its (and dnsfence's
// health probe, the root NS query) rather than REFUSED.
var rootZone = `. 86400 IN SOA a.root.test. hostmaster.root.test. 1 1800 900 604800 86400
. 518400 IN NS a.root.test.
`

// signedZone is signed.test., signed at the test's start when BIND's
// tools are there.
var signedZone = `$ORIGIN signed.test.
$TTL 3600
@ SOA ns1 hostmaster 1 7200 3600 1209600 300
@ NS ns1
ns1 A 127.0.68.1
www A 192.0.2.40
www AAAA 2001:db8::40
cname CNAME www
*.wild A 192.0.2.41
deleg NS ns.deleg
ns.deleg A 127.0.68.97
secure NS ns.secure
secure DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.secure A 127.0.68.96
@ MX 10 mail
mail A 192.0.2.42
mail AAAA 2001:db8::42
mx MX 10 m1
mx MX 20 m2
mx MX 30 m3
mx MX 40 m4
mx MX 50 m5
mx MX 60 m6
m1 A 192.0.2.51
m1 AAAA 2001:db8::51
m2 A 192.0.2.52
m2 AAAA 2001:db8::52
m3 A 192.0.2.53
m3 AAAA 2001:db8::53
m4 A 192.0.2.54
m4 AAAA 2001:db8::54
m5 A 192.0.2.55
m5 AAAA 2001:db8::55
m6 A 192.0.2.56
m6 AAAA 2001:db8::56
`

// diffZones writes the zones and returns NSD's zone: clauses for them.
func diffZones(t *testing.T, dir string) (zones string, signed []string) {
	t.Helper()
	files := map[string]string{".": rootZone, "diff.test": diffZone, "other.test": otherZone}
	// Long names: 255 octets in all, and 254, each a label of 63 octets.
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "."
	files["diff.test"] += long + strings.Repeat("d", 51) + " A 192.0.2.50\n" + long + strings.Repeat("e", 50) + " A 192.0.2.51\n"
	// Large RRsets: past 512 octets, and past 1232.
	for i := range 40 {
		files["diff.test"] += fmt.Sprintf("mid A 192.0.2.%d\n", i+100)
	}
	for i := range 100 {
		files["diff.test"] += fmt.Sprintf("big A 198.51.100.%d\n", i)
		files["diff.test"] += fmt.Sprintf("bigmix AAAA 2001:db8::%x\n", i)
	}
	var many []string
	for i := range 120 {
		many = append(many, fmt.Sprintf("%q", strings.Repeat(string(rune('a'+i%26)), i%30)))
	}
	files["diff.test"] += "manytxt TXT " + strings.Join(many, " ") + "\n"
	files["diff.test"] += "bigmix A 192.0.2.77\n"
	// Past 4,096 octets (never cached), and near 64 KiB.
	for i := range 40 {
		files["diff.test"] += fmt.Sprintf("huge TXT \"%03d %s\"\n", i, strings.Repeat("h", 200))
	}
	for i := range 250 {
		files["diff.test"] += fmt.Sprintf("giant TXT \"%03d %s\"\n", i, strings.Repeat("g", 240))
	}
	names := []string{".", "diff.test", "other.test"}
	for _, zone := range []string{"signed.test", "nsec3.test"} {
		text := strings.ReplaceAll(signedZone, "signed.test.", zone+".")
		if f := signZone(t, dir, zone, text, zone == "nsec3.test"); f != "" {
			files[zone] = f
			names = append(names, zone)
			signed = append(signed, zone)
		}
	}
	var b strings.Builder
	for _, zone := range names {
		file := "z." + strings.Trim(zone, ".") + ".db"
		if zone == "." {
			file = "z.root.db"
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(files[zone]), 0o600))
		fmt.Fprintf(&b, "zone:\n\tname: %q\n\tzonefile: %s\n", zone, file)
	}
	return b.String(), signed
}

// signZone signs text as zone with a new ECDSA key (NSEC3 when nsec3) with
// dnssec-keygen and dnssec-signzone, returning the signed zone; "" when
// BIND's tools are not there.
func signZone(t *testing.T, dir, zone, text string, nsec3 bool) string {
	t.Helper()
	keygen, err1 := exec.LookPath("dnssec-keygen")
	signer, err2 := exec.LookPath("dnssec-signzone")
	if err1 != nil || err2 != nil {
		t.Logf("no dnssec-keygen or dnssec-signzone: %s not signed", zone)
		return ""
	}
	kdir := filepath.Join(dir, "keys-"+zone)
	require.NoError(t, os.Mkdir(kdir, 0o700))
	for _, args := range [][]string{{"-a", "ECDSAP256SHA256", "-K", kdir, "-f", "KSK", zone}, {"-a", "ECDSAP256SHA256", "-K", kdir, zone}} {
		out, err := exec.Command(keygen, args...).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	in := filepath.Join(kdir, "zone")
	require.NoError(t, os.WriteFile(in, []byte(text), 0o600))
	args := []string{"-S", "-K", kdir, "-d", kdir, "-o", zone, "-f", in + ".signed"}
	if nsec3 {
		args = append(args, "-3", "-", "-H", "0")
	}
	out, err := exec.Command(signer, append(args, in)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	signed, err := os.ReadFile(in + ".signed")
	require.NoError(t, err)
	return string(signed)
}

// startDiffNSD runs NSD on 127.0.68.1 serving the differential test's
// zones, and returns its address and the signed zones.
func startDiffNSD(t *testing.T) (string, []string) {
	t.Helper()
	bin := testnet.NeedProgram(t, "nsd", "nsd")
	const ip = "127.0.68.1"
	dir := t.TempDir()
	zones, signed := diffZones(t, dir)
	port := testnet.FreePort(t, ip)
	conf := filepath.Join(dir, "nsd.conf")
	extra := "\tminimal-responses: no\n\trefuse-any: no\n\trrl-ratelimit: 0\n\trrl-whitelist-ratelimit: 0\n"
	require.NoError(t, os.WriteFile(conf, []byte(testnet.NSDConf(ip, port, dir, 1, extra)+zones), 0o600))
	var proc testnet.Daemon
	proc.Start(t, dir, bin, "-d", "-c", conf)
	t.Cleanup(proc.Stop)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	if !assert.Eventually(t, func() bool {
		for _, zone := range []string{"diff.test.", "other.test."} {
			m, _, err := c.Exchange(question(zone, dns.TypeSOA, false), addr)
			if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond) {
		t.Fatalf("nsd does not serve its zones; its log:\n%s", proc.Log())
	}
	return addr, signed
}

// diffConfig is dnsfence's configuration for the differential test:
// 127.0.68.10 is in a blocking policy (whose answers are inspected),
// 127.0.68.11 in none.
const diffConfig = `
listen: ["127.0.68.2:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.68.0/24"]
policies:
  - name: government-devices
    clients: ["127.0.68.10/32"]
    block: ["tiktok.txt"]
`

// startDiffFence serves diffConfig on the wire path (wire) and on the
// message path only (msg), each on an address of 127.0.68.0/24 with a
// cache of its own.
func startDiffFence(t *testing.T, upstream string) (wire, msg string, taken func() int64) {
	t.Helper()
	path := writeConfig(t, diffConfig, map[string]string{"tiktok.txt": "tiktok.com\n"}, upstream)
	serve := func(ip string, wrap func(*Handler) listen.Handler) string {
		cfg, err := config.Load(path)
		require.NoError(t, err)
		snap, err := BuildSnapshot(cfg, nil)
		require.NoError(t, err)
		m := NewMetrics(prometheus.NewRegistry())
		require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
		log := zaptest.NewLogger(t)
		h := NewHandler(log, snap, m)
		srv := newServer(log, h, wrap(h))
		require.NoError(t, srv.Start([]string{ip + ":0"}))
		t.Cleanup(func() {
			_ = srv.Shutdown(t.Context())
			h.Snapshot().Forwarder().Close()
		})
		return srv.Addrs()[0]
	}
	var counted *wireCounted
	wire = serve("127.0.68.2", func(h *Handler) listen.Handler {
		counted = &wireCounted{Handler: h}
		return counted
	})
	msg = serve("127.0.68.3", func(h *Handler) listen.Handler { return messageOnly{h} })
	return wire, msg, counted.taken.Load
}

// diffQuery is one question of the differential test's corpus.
type diffQuery struct {
	name   string
	qtype  uint16
	qclass uint16 // 0: IN
}

// diffCorpus is the corpus: every case of diffZone and the signed zones.
func diffCorpus(signed []string) []diffQuery {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "."
	qs := []diffQuery{
		{name: "diff.test.", qtype: dns.TypeSOA},
		{name: "diff.test.", qtype: dns.TypeNS},
		{name: "diff.test.", qtype: dns.TypeMX},
		{name: "diff.test.", qtype: dns.TypeANY},
		{name: "DiFf.TeSt.", qtype: dns.TypeNS},
		{name: "www.diff.test.", qtype: dns.TypeA},
		{name: "WWW.Diff.Test.", qtype: dns.TypeA},
		{name: "www.diff.test.", qtype: dns.TypeAAAA},
		{name: "www.diff.test.", qtype: dns.TypeTXT},
		{name: "www.diff.test.", qtype: dns.TypeANY},
		{name: "www.diff.test.", qtype: dns.TypeMX},
		{name: "mixed.case.diff.test.", qtype: dns.TypeA},
		{name: "MIXED.CASE.DIFF.TEST.", qtype: dns.TypeA},
		{name: "nothere.diff.test.", qtype: dns.TypeA},
		{name: "NotHere.Diff.Test.", qtype: dns.TypeAAAA},
		{name: "case.diff.test.", qtype: dns.TypeA},
		{name: "cname.diff.test.", qtype: dns.TypeA},
		{name: "cname.diff.test.", qtype: dns.TypeCNAME},
		{name: "cname.diff.test.", qtype: dns.TypeMX},
		{name: "CName2.diff.test.", qtype: dns.TypeA},
		{name: "cnamemx.diff.test.", qtype: dns.TypeAAAA},
		{name: "outcname.diff.test.", qtype: dns.TypeA},
		{name: "outnx.diff.test.", qtype: dns.TypeA},
		{name: "loop1.diff.test.", qtype: dns.TypeA},
		{name: "dangling.diff.test.", qtype: dns.TypeA},
		{name: "dname.diff.test.", qtype: dns.TypeDNAME},
		{name: "www.dname.diff.test.", qtype: dns.TypeA},
		{name: "WWW.DName.diff.test.", qtype: dns.TypeA},
		{name: "nx.dname.diff.test.", qtype: dns.TypeA},
		{name: "x.selfdname.diff.test.", qtype: dns.TypeA},
		{name: "any.wild.diff.test.", qtype: dns.TypeA},
		{name: "any.wild.diff.test.", qtype: dns.TypeTXT},
		{name: "any.wild.diff.test.", qtype: dns.TypeAAAA},
		{name: "a.b.wild.diff.test.", qtype: dns.TypeA},
		{name: "*.wild.diff.test.", qtype: dns.TypeA},
		{name: "sub.*.wild.diff.test.", qtype: dns.TypeA},
		{name: "x.sub.*.wild.diff.test.", qtype: dns.TypeA},
		{name: "host.wild.diff.test.", qtype: dns.TypeA},
		{name: "x.host.wild.diff.test.", qtype: dns.TypeA},
		{name: "y.ent.diff.test.", qtype: dns.TypeA},
		{name: "ent.diff.test.", qtype: dns.TypeA},
		{name: "z.ent.diff.test.", qtype: dns.TypeA},
		{name: "foo.cwild.diff.test.", qtype: dns.TypeA},
		{name: "deleg.diff.test.", qtype: dns.TypeA},
		{name: "deleg.diff.test.", qtype: dns.TypeNS},
		{name: "www.deleg.diff.test.", qtype: dns.TypeA},
		{name: "ns.deleg.diff.test.", qtype: dns.TypeA},
		{name: "srv._tcp.diff.test.", qtype: dns.TypeSRV},
		{name: "caa.diff.test.", qtype: dns.TypeCAA},
		{name: "https.diff.test.", qtype: dns.TypeHTTPS},
		{name: "svcb.diff.test.", qtype: dns.TypeSVCB},
		{name: "naptr.diff.test.", qtype: dns.TypeNAPTR},
		{name: "_443._tcp.diff.test.", qtype: dns.TypeTLSA},
		{name: "unk.diff.test.", qtype: 65000},
		{name: "unkempty.diff.test.", qtype: 65001},
		{name: "unk.diff.test.", qtype: dns.TypeA},
		{name: "null.diff.test.", qtype: dns.TypeNULL},
		{name: "loc.diff.test.", qtype: dns.TypeLOC},
		{name: "hinfo.diff.test.", qtype: dns.TypeHINFO},
		{name: "sshfp.diff.test.", qtype: dns.TypeSSHFP},
		{name: `a\000b.diff.test.`, qtype: dns.TypeA},
		{name: `a\.b.diff.test.`, qtype: dns.TypeA},
		{name: `a\\b.diff.test.`, qtype: dns.TypeA},
		{name: `sp\032ace.diff.test.`, qtype: dns.TypeA},
		{name: `at\@x.diff.test.`, qtype: dns.TypeA},
		{name: `paren\(x.diff.test.`, qtype: dns.TypeA},
		{name: `quote\"x.diff.test.`, qtype: dns.TypeA},
		{name: `semi\;x.diff.test.`, qtype: dns.TypeA},
		{name: `dollar\$x.diff.test.`, qtype: dns.TypeA},
		{name: `tab\009x.diff.test.`, qtype: dns.TypeA},
		{name: `del\127x.diff.test.`, qtype: dns.TypeA},
		{name: `hi\200x.diff.test.`, qtype: dns.TypeA},
		{name: `HI\200X.diff.test.`, qtype: dns.TypeA},
		{name: `\065bc.diff.test.`, qtype: dns.TypeA},
		{name: `abc.diff.test.`, qtype: dns.TypeA},
		{name: `slash/x.diff.test.`, qtype: dns.TypeA},
		{name: `ptrodd.diff.test.`, qtype: dns.TypePTR},
		{name: `cnodd.diff.test.`, qtype: dns.TypeA},
		{name: `A\000B.diff.test.`, qtype: dns.TypeA},
		{name: "emptytxt.diff.test.", qtype: dns.TypeTXT},
		{name: "ttl0.diff.test.", qtype: dns.TypeA},
		{name: "ttlbig.diff.test.", qtype: dns.TypeA},
		{name: "mixedttl.diff.test.", qtype: dns.TypeA},
		{name: long + strings.Repeat("d", 51) + ".diff.test.", qtype: dns.TypeA},
		{name: long + strings.Repeat("e", 50) + ".diff.test.", qtype: dns.TypeA},
		{name: long + strings.Repeat("E", 50) + ".diff.test.", qtype: dns.TypeAAAA},
		{name: "mid.diff.test.", qtype: dns.TypeA},
		{name: "big.diff.test.", qtype: dns.TypeA},
		{name: "bigmix.diff.test.", qtype: dns.TypeAAAA},
		{name: "bigmix.diff.test.", qtype: dns.TypeANY},
		{name: "manytxt.diff.test.", qtype: dns.TypeTXT},
		{name: "mail.diff.test.", qtype: dns.TypeANY},
		{name: "www.diff.test.", qtype: dns.TypeA, qclass: dns.ClassANY},
		{name: "www.diff.test.", qtype: dns.TypeA, qclass: dns.ClassHESIOD},
		{name: "www.other.test.", qtype: dns.TypeA},
		// Names beside dnsfence's own zones and canaries, forwarded.
		{name: "localhost.diff.test.", qtype: dns.TypeA},
		{name: "xlocalhost.", qtype: dns.TypeA},
		{name: `localhost\..`, qtype: dns.TypeA},
		{name: `a.localhost\..`, qtype: dns.TypeA},
		{name: "invalid.diff.test.", qtype: dns.TypeA},
		{name: "xinvalid.", qtype: dns.TypeA},
		{name: `a\.invalid.`, qtype: dns.TypeA},
		{name: "onion.diff.test.", qtype: dns.TypeA},
		{name: "x.onion.diff.test.", qtype: dns.TypeA},
		{name: "xonion.", qtype: dns.TypeA},
		{name: `a\.onion.`, qtype: dns.TypeA},
		{name: `onion\000.`, qtype: dns.TypeA},
		{name: "resolver.arpa.diff.test.", qtype: dns.TypeA},
		{name: "xresolver.arpa.", qtype: dns.TypeA},
		{name: "_dns.resolver.arpax.", qtype: dns.TypeSVCB},
		{name: `resolver\.arpa.`, qtype: dns.TypeSOA},
		{name: "home.arpa.", qtype: dns.TypeSOA},
		{name: "x.home.arpa.", qtype: dns.TypeA},
		{name: "ipv4only.arpa.", qtype: dns.TypeAAAA},
		{name: "x.local.", qtype: dns.TypeA},
		{name: "test.", qtype: dns.TypeSOA},
		{name: "x.test.", qtype: dns.TypeA},
		{name: "1.0.0.10.in-addr.arpa.", qtype: dns.TypePTR},
		{name: "1.0.0.127.in-addr.arpa.", qtype: dns.TypePTR},
		{name: "x.alt.", qtype: dns.TypeA},
		{name: "use-application-dns.net.diff.test.", qtype: dns.TypeA},
		{name: "mask.icloud.com.diff.test.", qtype: dns.TypeA},
		{name: "x.explain.dnsfence.", qtype: dns.TypeTXT},
		{name: "explain.dnsfence.", qtype: dns.TypeTXT},
		{name: "dnsfence.", qtype: dns.TypeSOA},
		{name: "version.bind.", qtype: dns.TypeTXT},
		{name: "id.server.", qtype: dns.TypeTXT},
		{name: "tiktok.com.explain.dnsfence.", qtype: dns.TypeTXT},
		{name: "nottiktok.com.", qtype: dns.TypeA},
		{name: "tiktok.co.", qtype: dns.TypeA},
		{name: "tiktok.com.diff.test.", qtype: dns.TypeA},
		{name: `tiktok\.com.`, qtype: dns.TypeA},
		{name: `tiktok.com\000.`, qtype: dns.TypeA},
		{name: "lookalike.diff.test.", qtype: dns.TypeA},
		{name: "tiktok.com.diff.test.", qtype: dns.TypeA},
		{name: "esc.diff.test.", qtype: dns.TypeA},
		{name: "co.diff.test.", qtype: dns.TypeA},
		{name: "not.diff.test.", qtype: dns.TypeA},
		{name: "mxtk.diff.test.", qtype: dns.TypeMX},
		{name: "srvtk.diff.test.", qtype: dns.TypeSRV},
		{name: "www.tk.diff.test.", qtype: dns.TypeA},
		{name: "tk.diff.test.", qtype: dns.TypeNS},
		{name: "httpsself.diff.test.", qtype: dns.TypeHTTPS},
		{name: "svcalias.diff.test.", qtype: dns.TypeSVCB},
		{name: "ptr.diff.test.", qtype: dns.TypePTR},
		{name: "ptr.diff.test.", qtype: dns.TypeANY},
		{name: "huge.diff.test.", qtype: dns.TypeTXT},
		{name: "giant.diff.test.", qtype: dns.TypeTXT},
		{name: "a.s.diff.test.", qtype: dns.TypeA},
		{name: strings.Repeat("q", 63) + "." + strings.Repeat("r", 40) + ".s.diff.test.", qtype: dns.TypeA},
		{name: "nope.", qtype: dns.TypeA},
		{name: ".", qtype: dns.TypeNS},
	}
	for _, zone := range signed {
		qs = append(qs, []diffQuery{
			{name: zone + ".", qtype: dns.TypeDNSKEY},
			{name: zone + ".", qtype: dns.TypeSOA},
			{name: zone + ".", qtype: dns.TypeMX},
			{name: "mx." + zone + ".", qtype: dns.TypeMX},
			{name: zone + ".", qtype: dns.TypeNS},
			{name: zone + ".", qtype: dns.TypeANY},
			{name: "www." + zone + ".", qtype: dns.TypeA},
			{name: "Www." + zone + ".", qtype: dns.TypeAAAA},
			{name: "www." + zone + ".", qtype: dns.TypeMX},
			{name: "www." + zone + ".", qtype: dns.TypeRRSIG},
			{name: "www." + zone + ".", qtype: dns.TypeNSEC},
			{name: "cname." + zone + ".", qtype: dns.TypeA},
			{name: "nx." + zone + ".", qtype: dns.TypeA},
			{name: "x.wild." + zone + ".", qtype: dns.TypeA},
			{name: "x.wild." + zone + ".", qtype: dns.TypeTXT},
			{name: "www.deleg." + zone + ".", qtype: dns.TypeA},
			{name: "www.secure." + zone + ".", qtype: dns.TypeA},
			{name: "secure." + zone + ".", qtype: dns.TypeDS},
		}...)
	}
	// Types no query asks for (FORMERR), transfers (REFUSED), and the
	// classes dnsfence does not forward (REFUSED): README step 1 and 3.
	for _, t := range []uint16{0, dns.TypeOPT, 128, 200, dns.TypeTKEY, dns.TypeTSIG, dns.TypeIXFR, dns.TypeAXFR, dns.TypeMAILB, dns.TypeMAILA} {
		qs = append(qs, diffQuery{name: "www.diff.test.", qtype: t})
	}
	for _, c := range []uint16{dns.ClassNONE, dns.ClassCHAOS, 0, 5, 0xFF00} {
		qs = append(qs, diffQuery{name: "www.diff.test.", qtype: dns.TypeA, qclass: c})
	}
	return qs
}

// diffShape is how a question is asked: transport, EDNS and header bits.
type diffShape struct {
	net        string // udp or tcp
	edns       bool
	size       uint16
	do, cd, ad bool
	rd         bool
	options    []dns.EDNS0 // EDNS options of the query
	z          bool        // the header's Z bit
	odd        bool        // the header's AA, TC and RA bits, which a query does not set
	version    uint8       // the OPT's EDNS version
	flags      uint16      // the OPT's flags other than DO
}

func (s diffShape) String() string {
	out := s.net
	if s.edns {
		out += fmt.Sprintf(" edns %d", s.size)
		if s.do {
			out += " do"
		}
	} else {
		out += " no-edns"
	}
	if s.cd {
		out += " cd"
	}
	if s.ad {
		out += " ad"
	}
	if !s.rd {
		out += " no-rd"
	}
	for _, o := range s.options {
		out += fmt.Sprintf(" option%d", o.Option())
	}
	if s.z {
		out += " z"
	}
	if s.odd {
		out += " aa tc ra"
	}
	if s.version != 0 {
		out += fmt.Sprintf(" version %d", s.version)
	}
	if s.flags != 0 {
		out += fmt.Sprintf(" flags %#x", s.flags)
	}
	return out
}

// diffShapes are the ways each question is asked: UDP without EDNS and
// with buffers below 512, at 512, between, at 1232 and above; DO, CD and
// AD; RD clear; the header bits a query does not set; EDNS options that
// stay on the client's hop; an EDNS version dnsfence does not speak; TCP.
var diffShapes = []diffShape{
	{net: "udp", rd: true},
	{net: "udp", edns: true, size: 1232, rd: true},
	{net: "udp", edns: true, size: 1232, do: true, rd: true},
	{net: "udp", edns: true, size: 4096, do: true, cd: true, rd: true},
	{net: "udp", edns: true, size: 512, ad: true},
	{net: "udp", edns: true, size: 512, do: true, rd: true},
	{net: "udp", edns: true, size: 700, do: true, rd: true},
	{net: "udp", edns: true, size: 0, cd: true, rd: true},
	{net: "udp", ad: true, cd: true, rd: true},
	{net: "udp", edns: true, size: 1232, do: true, rd: true, odd: true, z: true, flags: 0x4001},
	{net: "udp", edns: true, size: 1232, rd: true, version: 1},
	{net: "udp", edns: true, size: 900, rd: true, options: []dns.EDNS0{
		&dns.EDNS0_NSID{Code: dns.EDNS0NSID},
		&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&dns.EDNS0_PADDING{Padding: make([]byte, 600)},
	}},
	{net: "tcp", rd: true},
	{net: "tcp", edns: true, size: 1232, do: true, rd: true},
	{net: "tcp", edns: true, size: 512, ad: true, rd: true, options: []dns.EDNS0{
		&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(198, 51, 100, 0).To4()},
		&dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2, 3}},
	}},
}

// rrKey is a record as compared: its text with TTL 0, without case: a
// cached answer's names are spelt as in the answer cached, which an
// upstream may have compressed against another query's spelling of the
// question (NSD does).
func rrKey(rr dns.RR) string {
	c := dns.Copy(rr)
	c.Header().Ttl = 0
	return strings.ToLower(c.String())
}

// diffRRsets counts the records of each RRset of rrs, by owner (without
// case), class and type; RRSIGs by the RRset they cover, with " RRSIG"
// after it.
func diffRRsets(rrs []dns.RR) map[string]int {
	n := map[string]int{}
	for _, rr := range rrs {
		h := rr.Header()
		k := fmt.Sprintf("%s %s %s", strings.ToLower(h.Name), dns.Class(h.Class), dns.Type(h.Rrtype))
		if sig, ok := rr.(*dns.RRSIG); ok {
			k = fmt.Sprintf("%s %s %s RRSIG", strings.ToLower(h.Name), dns.Class(h.Class), dns.Type(sig.TypeCovered))
		}
		n[k]++
	}
	return n
}

// sameQuestion reports whether a and b are the same question, the name's
// octets compared as they are (case too), not its presentation.
func sameQuestion(a, b dns.Question) bool {
	var wa, wb [256]byte
	na, erra := dns.PackDomainName(a.Name, wa[:], 0, nil, false)
	nb, errb := dns.PackDomainName(b.Name, wb[:], 0, nil, false)
	return erra == nil && errb == nil && string(wa[:na]) == string(wb[:nb]) && a.Qtype == b.Qtype && a.Qclass == b.Qclass
}

// compareSections reports how got differs from want, records compared as
// rrKey in order; TTLs must be at most want's and at least want's less
// aged seconds, every one at most life, the answer's cache lifetime.
// mayEnd: got may end before want does (an answer fitted to the client);
// maySkip: records of want may be missing anywhere (additional records
// left out for lack of room).
func compareSections(what string, want, got []dns.RR, life, aged uint32, mayEnd, maySkip bool) []string {
	var diffs []string
	i := 0
	for j, rr := range got {
		// Skip want's records that may have been left out (whole RRsets
		// only: diffAnswers checks).
		for i < len(want) && rrKey(want[i]) != rrKey(rr) && maySkip {
			i++
		}
		if i >= len(want) {
			diffs = append(diffs, fmt.Sprintf("%s: record %d %q not in the upstream's", what, j, rr.String()))
			return diffs
		}
		if rrKey(want[i]) != rrKey(rr) {
			diffs = append(diffs, fmt.Sprintf("%s: record %d is %q, upstream's %q", what, j, rr.String(), want[i].String()))
			return diffs
		}
		wt, gt := min(receivedTTL(want[i].Header().Ttl), life), rr.Header().Ttl
		if gt > wt || gt+aged+1 < wt {
			diffs = append(diffs, fmt.Sprintf("%s: record %d %q TTL %d, upstream's %d", what, j, rrKey(rr), gt, want[i].Header().Ttl))
		}
		i++
	}
	if !mayEnd && i < len(want) {
		diffs = append(diffs, fmt.Sprintf("%s: %d records of the upstream's left out, from %q", what, len(want)-i, want[i].String()))
	}
	return diffs
}

// diffAnswers compares dnsfence's answer got to the question m, asked in
// shape s, with the upstream's whole answer want to m, and returns the
// differences that README does not document; aged is how many seconds
// the answer may have been cached for.
func diffAnswers(m *dns.Msg, s diffShape, want, got *dns.Msg, aged uint32) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if got.Id != m.Id || !got.Response || got.Opcode != m.Opcode {
		add("header: id %d response %v opcode %d", got.Id, got.Response, got.Opcode)
	}
	if got.Authoritative {
		add("AA set")
	}
	if !got.RecursionAvailable {
		add("RA clear")
	}
	if got.RecursionDesired != m.RecursionDesired || got.CheckingDisabled != m.CheckingDisabled {
		add("RD %v CD %v, asked %v %v", got.RecursionDesired, got.CheckingDisabled, m.RecursionDesired, m.CheckingDisabled)
	}
	if got.AuthenticatedData != (want.AuthenticatedData && (s.ad || s.do)) {
		add("AD %v, upstream's %v", got.AuthenticatedData, want.AuthenticatedData)
	}
	if got.Zero {
		add("Z set")
	}
	if got.Rcode != want.Rcode {
		add("RCODE %s, upstream's %s", dns.RcodeToString[got.Rcode], dns.RcodeToString[want.Rcode])
		return diffs
	}
	if len(got.Question) != 1 || !sameQuestion(got.Question[0], m.Question[0]) {
		add("question %v, asked %v", got.Question, m.Question)
	}
	opt := got.IsEdns0()
	switch {
	case s.edns && opt == nil:
		add("no OPT")
	case !s.edns && opt != nil:
		add("OPT to a query without")
	case opt != nil:
		if opt.Version() != 0 || opt.UDPSize() != ednsSize || opt.Do() != s.do || opt.Z() != 0 {
			add("OPT version %d size %d DO %v", opt.Version(), opt.UDPSize(), opt.Do())
		}
		for _, o := range opt.Option {
			if _, ede := o.(*dns.EDNS0_EDE); !ede || len(want.IsEdns0().Option) == 0 {
				add("OPT option %s", o.String())
			}
		}
	}
	// The upstream's answer as dnsfence is to relay it: DNSSEC records
	// only for DO or when asked for, by their type or ANY (RFC 4035
	// §3.2.1).
	strip := func(rrs []dns.RR, answer bool) []dns.RR {
		if s.do {
			return rrs
		}
		var out []dns.RR
		for _, rr := range rrs {
			t, qtype := rr.Header().Rrtype, m.Question[0].Qtype
			if (t == dns.TypeRRSIG || t == dns.TypeNSEC || t == dns.TypeNSEC3) && !(answer && (t == qtype || qtype == dns.TypeANY)) {
				continue
			}
			out = append(out, rr)
		}
		return out
	}
	limit := 65535
	if s.net == "udp" {
		limit = dns.MinMsgSize
		if s.edns {
			limit = min(max(int(s.size), dns.MinMsgSize), ednsSize)
		}
	}
	full := want.Copy()
	full.Answer, full.Ns, full.Extra = strip(full.Answer, true), strip(full.Ns, false), strip(withoutOPT(full.Extra), false)
	if s.edns {
		full.SetEdns0(ednsSize, s.do)
	}
	full.Compress = true
	fits := full.Len() <= limit
	if got.Truncated && fits {
		add("TC set, the upstream's answer fits %d octets (%d)", limit, full.Len())
	}
	// Fitted to the client: sections may lose RRsets at their end (the
	// answer and authority sections with TC), additional records without.
	// Every record's TTL is at most the answer's cache lifetime (README's
	// TTLs row), and counts down in the cache.
	life := uint32(86400)
	if d, ok := cacheTTL(want, 0, 86400); ok {
		life = uint32(d / time.Second)
	}
	diffs = append(diffs, compareSections("answer", full.Answer, got.Answer, life, aged, got.Truncated, false)...)
	diffs = append(diffs, compareSections("authority", full.Ns, got.Ns, life, aged, got.Truncated || !fits && len(full.Answer) > 0, false)...)
	// The additional section may lack records wherever: the upstream's
	// answer to dnsfence's UDP query (buffer 1232) has no room for them,
	// and a TCP client is given that answer from the cache.
	diffs = append(diffs, compareSections("additional", withoutOPT(full.Extra), withoutOPT(got.Extra), life, aged, true, true)...)
	// Whole RRsets, each with its RRSIGs (RFC 2181 §9; README's TC row).
	for i, sec := range [][2][]dns.RR{{full.Answer, got.Answer}, {full.Ns, got.Ns}, {withoutOPT(full.Extra), withoutOPT(got.Extra)}} {
		if got.Truncated && i < 2 {
			continue
		}
		w, g := diffRRsets(sec[0]), diffRRsets(sec[1])
		for k, n := range g {
			if w[k] != n {
				add("section %d: RRset %s has %d records, upstream's %d", i, k, n, w[k])
			}
			if covered, sig := strings.CutSuffix(k, " RRSIG"); sig && w[covered] > 0 && g[covered] == 0 {
				add("section %d: %s without the RRset it covers", i, k)
			}
			if w[k+" RRSIG"] > 0 && g[k+" RRSIG"] == 0 {
				add("section %d: RRset %s without its RRSIGs", i, k)
			}
		}
	}
	if !got.Truncated && !fits && len(got.Answer)+len(got.Ns) < len(full.Answer)+len(full.Ns) {
		if len(got.Ns) < len(full.Ns) && len(full.Answer) > 0 && len(got.Answer) == len(full.Answer) {
			// the NS RRset beside a positive answer: left out without TC
		} else {
			add("records of the answer or authority left out without TC")
		}
	}
	return diffs
}

// documentedAnswer is the RCODE README gives, in place of the upstream's
// answer want, to the question m (and true), when it documents one.
func documentedAnswer(m, want *dns.Msg) (int, bool) {
	q := m.Question[0]
	switch {
	case m.IsEdns0() != nil && m.IsEdns0().Version() != 0:
		return dns.RcodeBadVers, true // before anything else (step 1)
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		return dns.RcodeRefused, true // zone transfers (step 1)
	case MetaQType(q.Qtype):
		return dns.RcodeFormatError, true // no query asks for it (step 1)
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassHESIOD && q.Qclass != dns.ClassANY:
		return dns.RcodeRefused, true // no zone data to forward (step 3)
	}
	switch want.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError, dns.RcodeYXDomain:
		return 0, false
	}
	return dns.RcodeServerFailure, true // an upstream's failure (step 7)
}

// diffServers are the two dnsfence a differential test asks, and the
// number of queries the wire path took.
type diffServers struct {
	wire, msg string
	taken     func() int64
}

// runDifferential asks each question of qs in each shape of diffShapes
// of servers, from a client in a blocking policy (127.0.68.10) and from
// one in none (127.0.68.11), twice (the second from the cache), and
// compares each answer with reference's, the upstream's answer to the
// question as asked in that shape (diffAnswers). direct, when not nil, is
// the upstream's answer to the question over UDP, which fits the client's
// size: dnsfence's must then carry the whole answer too. It reports
// every difference as an error, once for each question and shape, and
// returns the number of answers compared.
func runDifferential(t *testing.T, servers diffServers, qs []diffQuery, reference, direct func(m *dns.Msg, s diffShape) *dns.Msg) int {
	t.Helper()
	start := time.Now()
	compared := 0
	for _, q := range qs {
		for _, s := range diffShapes {
			m := new(dns.Msg)
			m.SetQuestion(q.name, q.qtype)
			if q.qclass != 0 {
				m.Question[0].Qclass = q.qclass
			}
			m.Id = dns.Id()
			m.RecursionDesired, m.CheckingDisabled, m.AuthenticatedData = s.rd, s.cd, s.ad
			m.Zero = s.z
			m.Authoritative, m.Truncated, m.RecursionAvailable = s.odd, s.odd, s.odd
			if s.edns {
				m.SetEdns0(s.size, s.do)
				m.IsEdns0().Option = s.options
				m.IsEdns0().SetVersion(s.version)
				m.IsEdns0().SetZ(s.flags)
			}
			want := reference(m, s)
			var fitted *dns.Msg
			if direct != nil && s.net == "udp" {
				fitted = direct(m, s)
			}
			var found []string
			var got *dns.Msg
			for _, server := range []string{servers.wire, servers.msg} {
				for _, from := range []string{"127.0.68.11", "127.0.68.10"} {
					for round := range 2 {
						r, err := exchange(server, from, s.net, m)
						compared++
						var diffs []string
						switch rcode, documented := documentedAnswer(m, want); {
						case err != nil:
							diffs = []string{"no answer: " + err.Error()}
						case documented:
							if r.Rcode != rcode {
								diffs = []string{fmt.Sprintf("RCODE %s, README's %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])}
							}
						default:
							aged := uint32(time.Since(start)/time.Second) + 1
							diffs = diffAnswers(m, s, want, r, aged)
							// An answer the upstream fits the client's
							// size whole fits dnsfence's too (at most
							// 1232).
							if fitted != nil && !fitted.Truncated && r.Truncated && (!s.edns || s.size <= ednsSize) && fitted.Rcode == want.Rcode {
								diffs = append(diffs, "TC set, where the upstream fits its answer to the client whole")
							}
						}
						if len(diffs) == 0 {
							continue
						}
						if got == nil {
							got = r
						}
						path := map[string]string{servers.wire: "wire", servers.msg: "message"}[server]
						found = append(found, fmt.Sprintf("[%s path, from %s, round %d] %s", path, from, round, strings.Join(diffs, "; ")))
					}
				}
			}
			if len(found) > 0 {
				t.Errorf("%s %s %s | %s:\n%s\nupstream:\n%s\ndnsfence:\n%s", q.name, dns.Class(m.Question[0].Qclass), dns.Type(q.qtype), s,
					strings.Join(found, "\n"), want, got)
			}
		}
	}
	assert.NotZero(t, servers.taken(), "the wire path took queries")
	return compared
}

// TestDifferentialAgainstNSD asks each question of diffCorpus, in each
// shape of diffShapes, of NSD directly and of dnsfence forwarding to it
// (runDifferential): dnsfence's answer is NSD's to the same question
// over TCP (its whole answer) but for what README documents.
func TestDifferentialAgainstNSD(t *testing.T) {
	nsd, signed := startDiffNSD(t)
	wire, msg, taken := startDiffFence(t, nsd)
	ask := func(network string) func(m *dns.Msg, _ diffShape) *dns.Msg {
		return func(m *dns.Msg, _ diffShape) *dns.Msg {
			r, err := exchange(nsd, "127.0.68.11", network, m)
			require.NoError(t, err, "nsd: %s", m.Question[0].String())
			return r
		}
	}
	start := time.Now()
	n := runDifferential(t, diffServers{wire: wire, msg: msg, taken: taken}, diffCorpus(signed), ask("tcp"), ask("udp"))
	t.Logf("%d answers compared in %v", n, time.Since(start))
}
