package resolver

import (
	"crypto/rand"
	"encoding/base64"
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

// The zone transfer tests run BIND's named as the primary of an RPZ zone,
// on a port of 127.0.0.1, with its files in a folder of the test's.

// tsigKey is a TSIG key as BIND and the configuration write it.
type tsigKey struct{ name, algorithm, secret string }

func newTSIGKey(t testing.TB) tsigKey {
	secret := make([]byte, 32)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	return tsigKey{name: "xfr-key.", algorithm: "hmac-sha256", secret: base64.StdEncoding.EncodeToString(secret)}
}

// yaml is the key as the sources.tsig value.
func (k tsigKey) yaml() string {
	return fmt.Sprintf("{name: %s, algorithm: %s, secret: %q}", k.name, k.algorithm, k.secret)
}

// bindPrimary is a named serving one zone on 127.0.0.1.
type bindPrimary struct {
	t          testing.TB
	dir, bin   string
	port       int
	zone       string // FQDN
	notifyPort int    // also-notify target on 127.0.0.1; 0: none
	key        *tsigKey
	ixfr       bool // ixfr-from-differences
	signNotify bool // also-notify with the key: NOTIFYs signed
	debug      int  // named's -d: 3 logs the answer to each NOTIFY

	proc testnet.Daemon
}

// startBIND starts named for zone with zoneText and waits until it
// answers.
func startBIND(t testing.TB, p *bindPrimary, zoneText string) *bindPrimary {
	t.Helper()
	p.t, p.dir, p.bin = t, t.TempDir(), testnet.NeedProgram(t, "named", "bind9")
	if p.port == 0 {
		p.port = testnet.FreePort(t, "127.0.0.1")
	}
	p.writeConfig()
	p.writeZone(zoneText)
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *bindPrimary) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// entry is the list entry that transfers the zone.
func (p *bindPrimary) entry() string {
	return fmt.Sprintf("axfr://%s/%s", p.addr(), strings.TrimSuffix(p.zone, "."))
}

func (p *bindPrimary) writeConfig() {
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
		map[bool]string{true: "yes", false: "no"}[p.ixfr])
	transfer := "any;"
	if k := p.key; k != nil {
		fmt.Fprintf(&b, "key %q { algorithm %s; secret %q; };\n", k.name, k.algorithm, k.secret)
		transfer = fmt.Sprintf("key %q;", k.name)
	}
	notify := ""
	if p.notifyPort != 0 {
		notify = fmt.Sprintf("also-notify { 127.0.0.1 port %d; };", p.notifyPort)
		if p.signNotify {
			notify = fmt.Sprintf("also-notify { 127.0.0.1 port %d key %q; };", p.notifyPort, p.key.name)
		}
	}
	fmt.Fprintf(&b, "zone %q { type primary; file %q; allow-transfer { %s }; %s };\n",
		strings.TrimSuffix(p.zone, "."), p.zoneFile(), transfer, notify)
	require.NoError(p.t, os.WriteFile(filepath.Join(p.dir, "named.conf"), []byte(b.String()), 0o600))
}

func (p *bindPrimary) zoneFile() string { return filepath.Join(p.dir, "zone.db") }

// writeZone writes the zone file, newer than before (testnet.WriteNewer).
func (p *bindPrimary) writeZone(text string) { testnet.WriteNewer(p.t, p.zoneFile(), text) }

// start runs named in the foreground and waits until it answers.
func (p *bindPrimary) start() {
	p.t.Helper()
	p.proc.Start(p.t, p.dir, p.bin, "-g", "-4", "-n", "1", "-d", strconv.Itoa(p.debug), "-c", filepath.Join(p.dir, "named.conf"))
	p.waitSerial(0, false)
}

// stop stops named (SIGTERM, then SIGKILL) and waits for it.
func (p *bindPrimary) stop() { p.proc.Stop() }

func (p *bindPrimary) logText() string { return p.proc.Log() }

// restart starts a stopped named with a new zone file, as an operator who
// replaced the file while it was down: the journal of the old one goes.
func (p *bindPrimary) restart(text string) {
	p.t.Helper()
	require.NoError(p.t, os.RemoveAll(p.zoneFile()+".jnl"))
	p.writeZone(text)
	p.start()
}

// setZone replaces the zone, has named reload it (which sends NOTIFY) and
// waits until it serves serial.
func (p *bindPrimary) setZone(text string, serial uint32) {
	p.t.Helper()
	p.writeZone(text)
	p.proc.Signal(p.t, syscall.SIGHUP)
	p.waitSerial(serial, true)
}

// waitSerial waits until named answers the zone's SOA (with serial, when
// exact).
func (p *bindPrimary) waitSerial(serial uint32, exact bool) {
	p.t.Helper()
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion(p.zone, dns.TypeSOA)
	if !assert.Eventually(p.t, func() bool {
		m, _, err := c.Exchange(q, p.addr())
		if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
			return false
		}
		soa, ok := m.Answer[0].(*dns.SOA)
		return ok && (!exact || soa.Serial == serial)
	}, 20*time.Second, 20*time.Millisecond) {
		p.t.Fatalf("named did not serve %s serial %d; its log:\n%s", p.zone, serial, p.logText())
	}
}

// rpzText is an RPZ zone at serial holding records, one a line, relative to
// the zone.
func rpzText(zone string, serial uint32, records ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n@ IN SOA ns.%s admin.%s %d 3600 600 86400 60\n@ IN NS ns.%s\nns IN A 127.0.0.1\n",
		zone, zone, zone, serial, zone)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}
