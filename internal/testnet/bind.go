package testnet

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

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// BINDKey is a TSIG key as named.conf's key statement writes it.
type BINDKey struct {
	Name      string // fully qualified, e.g. "xfr-key."
	Algorithm string // as named.conf names it: hmac-sha256, hmac-sha256-128 (RFC 8945 §5.2.2.1: the MAC cut to 128 bits)
	Secret    string // base64
}

// BIND is a BIND named, run by a test, serving one zone as its primary on
// a port of 127.0.0.1 (IPv4 only), with its configuration and files in a
// folder of the test's. The fields are how StartBIND sets it up.
type BIND struct {
	Port int    // of 127.0.0.1; 0: a free one (FreePort)
	Zone string // apex, fully qualified
	// NotifyPort, when set, is a port of 127.0.0.1 that named sends NOTIFY
	// to (also-notify), besides nobody else (notify explicit).
	NotifyPort int
	// Key, when set, is the only way to transfer the zone.
	Key *BINDKey
	// SignNotify signs the NOTIFYs to NotifyPort with Key.
	SignNotify bool
	// IXFR makes named keep a journal of the differences between zone
	// file versions (ixfr-from-differences), and so answer IXFR with them.
	IXFR bool
	// Debug is named's -d: 3 logs the answer to each NOTIFY.
	Debug int

	t        testing.TB
	dir, bin string
	proc     Daemon
}

// StartBIND starts named as b says, serving zoneText, and waits until it
// answers for the zone; it is stopped when t ends. The test is skipped
// where named is not installed (NeedProgram).
func StartBIND(t testing.TB, b *BIND, zoneText string) *BIND {
	t.Helper()
	b.t, b.dir, b.bin = t, t.TempDir(), NeedProgram(t, "named", "bind9")
	if b.Port == 0 {
		b.Port = FreePort(t, "127.0.0.1")
	}
	b.WriteConfig()
	b.WriteZone(zoneText)
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Addr is named's address, 127.0.0.1:Port.
func (b *BIND) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.Port)) }

// Entry is the dnsfence list entry that transfers the zone from named.
func (b *BIND) Entry() string {
	return fmt.Sprintf("axfr://%s/%s", b.Addr(), strings.TrimSuffix(b.Zone, "."))
}

// WriteConfig writes named.conf from b's fields, as StartBIND does; named
// reads it again at its next Start or SetZone (a key changed under it).
func (b *BIND) WriteConfig() {
	var c strings.Builder
	fmt.Fprintf(&c, `options {
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
`, b.dir, filepath.Join(b.dir, "named.pid"), filepath.Join(b.dir, "session.key"), b.Port,
		map[bool]string{true: "yes", false: "no"}[b.IXFR])
	transfer := "any;"
	if k := b.Key; k != nil {
		fmt.Fprintf(&c, "key %q { algorithm %s; secret %q; };\n", k.Name, k.Algorithm, k.Secret)
		transfer = fmt.Sprintf("key %q;", k.Name)
	}
	notify := ""
	if b.NotifyPort != 0 {
		notify = fmt.Sprintf("also-notify { 127.0.0.1 port %d; };", b.NotifyPort)
		if b.SignNotify {
			notify = fmt.Sprintf("also-notify { 127.0.0.1 port %d key %q; };", b.NotifyPort, b.Key.Name)
		}
	}
	fmt.Fprintf(&c, "zone %q { type primary; file %q; allow-transfer { %s }; %s };\n",
		strings.TrimSuffix(b.Zone, "."), b.zoneFile(), transfer, notify)
	require.NoError(b.t, os.WriteFile(filepath.Join(b.dir, "named.conf"), []byte(c.String()), 0o600))
}

// zoneFile is the path of the zone's file.
func (b *BIND) zoneFile() string { return filepath.Join(b.dir, "zone.db") }

// WriteZone writes the zone file, newer than before (WriteNewer); named
// reads it at its next start or reload.
func (b *BIND) WriteZone(text string) { WriteNewer(b.t, b.zoneFile(), text) }

// Start runs named in the foreground (-g: logs to stderr, kept for Log)
// and waits until it answers for the zone. Start a stopped named only.
func (b *BIND) Start() {
	b.t.Helper()
	b.proc.Start(b.t, b.dir, b.bin, "-g", "-4", "-n", "1", "-d", strconv.Itoa(b.Debug), "-c", filepath.Join(b.dir, "named.conf"))
	b.waitSerial(0, false)
}

// Stop stops named (SIGTERM, then SIGKILL) and waits for it to exit.
func (b *BIND) Stop() { b.proc.Stop() }

// Log is what named has logged since its last start.
func (b *BIND) Log() string { return b.proc.Log() }

// Logged reports whether text is in named's log within 5 s (Daemon.Logged).
func (b *BIND) Logged(text string) bool { return b.proc.Logged(text) }

// Restart starts a stopped named with a new zone file, as an operator who
// replaced the file while it was down: the journal of the old one goes.
func (b *BIND) Restart(text string) {
	b.t.Helper()
	require.NoError(b.t, os.RemoveAll(b.zoneFile()+".jnl"))
	b.WriteZone(text)
	b.Start()
}

// SetZone replaces the zone, has named reload it (which sends NOTIFY) and
// waits until it serves serial.
func (b *BIND) SetZone(text string, serial uint32) {
	b.t.Helper()
	b.WriteZone(text)
	b.proc.Signal(b.t, syscall.SIGHUP)
	b.waitSerial(serial, true)
}

// waitSerial waits until named answers the zone's SOA (with serial, when
// exact), and fails the test with named's log after 20 s.
func (b *BIND) waitSerial(serial uint32, exact bool) {
	b.t.Helper()
	WaitForSerial(b.t, "named", b.Addr(), b.Zone, serial, exact, b.Log)
}

// WaitForSerial waits until the primary at addr, a server called name,
// answers zone's SOA (with serial, when exact), and fails t after 20 s
// with the server's log (what log returns).
func WaitForSerial(t testing.TB, name, addr, zone string, serial uint32, exact bool, log func() string) {
	t.Helper()
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion(zone, dns.TypeSOA)
	if !assert.Eventually(t, func() bool {
		m, _, err := c.Exchange(q, addr)
		if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
			return false
		}
		soa, ok := m.Answer[0].(*dns.SOA)
		return ok && (!exact || soa.Serial == serial)
	}, 20*time.Second, 20*time.Millisecond) {
		t.Fatalf("%s did not serve %s serial %d; its log:\n%s", name, zone, serial, log())
	}
}

// RPZText is the text of an RPZ zone (fully qualified) at serial, with an
// SOA, an NS and its address, and records, one a line, relative to the
// zone.
func RPZText(zone string, serial uint32, records ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 60\n@ IN SOA ns.%s admin.%s %d 3600 600 86400 60\n@ IN NS ns.%s\nns IN A 127.0.0.1\n",
		zone, zone, zone, serial, zone)
	for _, r := range records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// NewBINDKey is a key named name for hmac-sha256 with a random secret of
// 32 octets.
func NewBINDKey(t testing.TB, name string) BINDKey {
	secret := make([]byte, 32)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	return BINDKey{Name: name, Algorithm: "hmac-sha256", Secret: base64.StdEncoding.EncodeToString(secret)}
}
