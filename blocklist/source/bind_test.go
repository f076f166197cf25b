package source

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bindConfig is how a test's BIND primary is set up.
type bindConfig struct {
	// port is the port of 127.0.0.1 named listens on; 0: a free one.
	port int
	zone string // apex, FQDN
	// notifyPort, when set, is a port of 127.0.0.1 that BIND sends NOTIFY
	// to (also-notify), besides nobody else (notify explicit).
	notifyPort int
	// key, when set, is the only way to transfer the zone.
	key *TSIG
	// keyAlgorithm, when set, is key's algorithm as named.conf gives
	// it, where it differs from key.Algorithm (hmac-sha256-128: the
	// MAC truncated to 128 bits, RFC 8945 §5.2.2.1).
	keyAlgorithm string
	// ixfrFromDifferences makes BIND keep a journal of the differences
	// between zone file versions, and so answer IXFR with them.
	ixfrFromDifferences bool
}

// bindPrimary is a BIND `named` serving one zone on 127.0.0.1, run by the
// test, with its configuration and files in a folder of the test's.
type bindPrimary struct {
	t    testing.TB
	dir  string
	port int
	cfg  bindConfig
	bin  string

	proc testnet.Daemon
}

// startBIND starts named for cfg serving zoneText, and waits until it
// answers.
func startBIND(t testing.TB, cfg bindConfig, zoneText string) *bindPrimary {
	t.Helper()
	p := &bindPrimary{t: t, dir: t.TempDir(), port: cfg.port, cfg: cfg, bin: testnet.NeedProgram(t, "named", "bind9")}
	if p.port == 0 {
		p.port = testnet.FreePort(t, "127.0.0.1")
	}
	p.writeConfig(cfg.key)
	p.writeZone(zoneText)
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *bindPrimary) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

func (p *bindPrimary) entry() string {
	return fmt.Sprintf("axfr://%s/%s", p.addr(), strings.TrimSuffix(p.cfg.zone, "."))
}

// writeConfig writes named.conf; key is the key the primary requires for
// transfers (nil: anyone may transfer).
func (p *bindPrimary) writeConfig(key *TSIG) {
	var b strings.Builder
	fmt.Fprintf(&b, `options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify explicit;
	notify-source 127.0.0.1;
	notify-delay 0;
	ixfr-from-differences %s;
	max-ixfr-ratio unlimited;
};
controls { };
`, p.dir, filepath.Join(p.dir, "named.pid"), filepath.Join(p.dir, "session.key"), p.port,
		map[bool]string{true: "yes", false: "no"}[p.cfg.ixfrFromDifferences])
	transfer := "any;"
	if key != nil {
		alg := key.Algorithm
		if p.cfg.keyAlgorithm != "" {
			alg = p.cfg.keyAlgorithm
		}
		fmt.Fprintf(&b, "key %q { algorithm %s; secret %q; };\n", key.Name, alg, key.Secret)
		transfer = fmt.Sprintf("key %q;", key.Name)
	}
	notify := ""
	if p.cfg.notifyPort != 0 {
		notify = fmt.Sprintf("also-notify { 127.0.0.1 port %d; };", p.cfg.notifyPort)
	}
	fmt.Fprintf(&b, "zone %q { type primary; file %q; allow-transfer { %s }; %s };\n",
		strings.TrimSuffix(p.cfg.zone, "."), p.zoneFile(), transfer, notify)
	require.NoError(p.t, os.WriteFile(filepath.Join(p.dir, "named.conf"), []byte(b.String()), 0o600))
}

func (p *bindPrimary) zoneFile() string { return filepath.Join(p.dir, "zone.db") }

// writeZone writes the zone file, newer than before (testnet.WriteNewer).
func (p *bindPrimary) writeZone(text string) { testnet.WriteNewer(p.t, p.zoneFile(), text) }

// start runs named in the foreground (-g: logs to stderr, kept for
// logText) and waits until it answers for the zone.
func (p *bindPrimary) start() {
	p.t.Helper()
	p.proc.Start(p.t, p.dir, p.bin, "-g", "-4", "-n", "1", "-c", filepath.Join(p.dir, "named.conf"))
	p.waitSerial(0, false)
}

// stop stops named (SIGTERM, then SIGKILL) and waits for it to exit.
func (p *bindPrimary) stop() { p.proc.Stop() }

// logText returns what named has logged.
func (p *bindPrimary) logText() string { return p.proc.Log() }

// reload makes named re-read its configuration and zone (SIGHUP).
func (p *bindPrimary) reload() { p.proc.Signal(p.t, syscall.SIGHUP) }

// setZone replaces the zone and waits until named serves serial.
func (p *bindPrimary) setZone(text string, serial uint32) {
	p.t.Helper()
	p.writeZone(text)
	p.reload()
	p.waitSerial(serial, true)
}

// waitSerial waits until named answers the zone's SOA (with serial, when
// exact).
func (p *bindPrimary) waitSerial(serial uint32, exact bool) {
	p.t.Helper()
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion(p.cfg.zone, dns.TypeSOA)
	if !assert.Eventually(p.t, func() bool {
		m, _, err := c.Exchange(q, p.addr())
		if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
			return false
		}
		soa, ok := m.Answer[0].(*dns.SOA)
		return ok && (!exact || soa.Serial == serial)
	}, 20*time.Second, 20*time.Millisecond) {
		p.t.Fatalf("named did not serve %s serial %d; its log:\n%s", p.cfg.zone, serial, p.logText())
	}
}

// rpzZone returns the text of an RPZ zone at serial with a CNAME . record
// for each name (relative to the zone).
func rpzZone(zone string, serial uint32, names ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n@ IN SOA ns.%s admin.%s %d 3600 600 86400 60\n@ IN NS ns.%s\nns IN A 127.0.0.1\n",
		zone, zone, zone, serial, zone)
	for _, n := range names {
		fmt.Fprintf(&b, "%s CNAME .\n", n)
	}
	return b.String()
}
