package source

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The interoperability tests run NSD and Knot DNS, the primaries other
// than BIND a network team runs, as the primary of an RPZ zone, each on a
// port of its own loopback address (127.0.49.0/24), with its files in a
// folder of the test's.

// daemon is a DNS server the test runs in the foreground, its output kept.
type daemon struct {
	t    testing.TB
	name string // for messages
	args []string
	dir  string
	ip   string
	port int
	zone string // apex, FQDN

	proc testnet.Daemon
}

func (d *daemon) addr() string { return net.JoinHostPort(d.ip, strconv.Itoa(d.port)) }

func (d *daemon) entry() string {
	return fmt.Sprintf("axfr://%s/%s", d.addr(), strings.TrimSuffix(d.zone, "."))
}

func (d *daemon) zoneFile() string { return filepath.Join(d.dir, "zone.db") }

// writeZone writes the zone file, newer than before (testnet.WriteNewer).
func (d *daemon) writeZone(text string) { testnet.WriteNewer(d.t, d.zoneFile(), text) }

// start runs the daemon and waits until it answers for the zone.
func (d *daemon) start() {
	d.t.Helper()
	d.proc.Start(d.t, d.dir, d.args...)
	d.waitSerial(0, false)
}

// stop stops the daemon (SIGTERM, then SIGKILL) and waits for it.
func (d *daemon) stop() { d.proc.Stop() }

func (d *daemon) logText() string { return d.proc.Log() }

// waitSerial waits until the daemon answers the zone's SOA (with serial,
// when exact).
func (d *daemon) waitSerial(serial uint32, exact bool) {
	d.t.Helper()
	testnet.WaitForSerial(d.t, d.name, d.addr(), d.zone, serial, exact, d.logText)
}

// signal sends sig to the daemon.
func (d *daemon) signal(sig os.Signal) { d.proc.Signal(d.t, sig) }

// run runs a control command of the daemon's, failing the test if it
// fails.
func (d *daemon) run(args ...string) {
	d.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	require.NoError(d.t, err, "%s: %s", strings.Join(args, " "), out)
}

// primaryConfig is how a test's NSD or Knot primary is set up.
type primaryConfig struct {
	ip   string // its loopback address, in 127.0.49.0/24
	port int    // 0: a free one
	zone string // apex, FQDN
	// key, when set, is the only way to transfer the zone; the NOTIFYs
	// are signed with it too.
	key *TSIG
	// notify, when set, is the HOST:PORT the primary sends NOTIFY to,
	// from notifySource when that is set.
	notify, notifySource string
}

// nsdPrimary is NSD serving one zone.
type nsdPrimary struct {
	*daemon
	conf string
}

// startNSD starts nsd for cfg serving zoneText, and waits until it
// answers.
func startNSD(t testing.TB, cfg primaryConfig, zoneText string) *nsdPrimary {
	t.Helper()
	bin := testnet.NeedProgram(t, "nsd", "nsd")
	d := &daemon{t: t, name: "nsd", dir: t.TempDir(), ip: cfg.ip, zone: cfg.zone}
	d.port = cfg.port
	if d.port == 0 {
		d.port = testnet.FreePort(t, cfg.ip)
	}
	p := &nsdPrimary{daemon: d, conf: filepath.Join(d.dir, "nsd.conf")}
	var b strings.Builder
	b.WriteString(testnet.NSDConf(cfg.ip, d.port, d.dir, 2, "\txfrd-reload-timeout: 0\n"))
	acl := "NOKEY"
	if k := cfg.key; k != nil {
		fmt.Fprintf(&b, "key:\n\tname: %q\n\talgorithm: %s\n\tsecret: %q\n", k.Name, strings.TrimSuffix(k.Algorithm, "."), k.Secret)
		acl = k.Name
	}
	fmt.Fprintf(&b, "zone:\n\tname: %q\n\tzonefile: zone.db\n\tprovide-xfr: 127.0.0.0/8 %s\n", strings.TrimSuffix(cfg.zone, "."), acl)
	if cfg.notify != "" {
		host, port, err := net.SplitHostPort(cfg.notify)
		require.NoError(t, err)
		fmt.Fprintf(&b, "\tnotify: %s@%s %s\n\tnotify-retry: 1\n", host, port, acl)
		if cfg.notifySource != "" {
			fmt.Fprintf(&b, "\toutgoing-interface: %s\n", cfg.notifySource)
		}
	}
	require.NoError(t, os.WriteFile(p.conf, []byte(b.String()), 0o600))
	d.args = []string{bin, "-d", "-c", p.conf}
	d.writeZone(zoneText)
	d.start()
	t.Cleanup(d.stop)
	return p
}

// setZone replaces the zone, has nsd reload it (SIGHUP: the zone files
// changed, which sends NOTIFY) and waits until it serves serial, and
// serves nothing else: NSD answers from the server processes it forks
// for the zone it reloaded while those of the zone before still run, until
// they take the word to quit. A check in that moment could read the old
// serial and transfer nothing (TestNotifyFromAnotherAddressOfNSD failed
// so in CI, its change never delivered), so the wait lasts until one of
// nsd's processes from before the reload has ended: its server, as its
// main process lives on.
func (p *nsdPrimary) setZone(text string, serial uint32) {
	p.t.Helper()
	before, err := p.proc.Descendants()
	require.NoError(p.t, err)
	p.writeZone(text)
	p.signal(syscall.SIGHUP)
	p.waitSerial(serial, true)
	var last atomic.Value // the error of the last look, a string
	if !assert.Eventually(p.t, func() bool {
		now, err := p.proc.Descendants()
		if err != nil {
			last.Store(err.Error())
			return false
		}
		for _, pid := range before {
			if !slices.Contains(now, pid) {
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond) {
		p.t.Fatalf("nsd's server of the zone before the reload still runs (last error: %v); its log:\n%s", last.Load(), p.logText())
	}
}

// knotPrimary is Knot DNS serving one zone.
type knotPrimary struct {
	*daemon
	ctl []string
}

// startKnot starts knotd for cfg serving zoneText, and waits until it
// answers. Knot keeps the differences between the versions of the zone
// file it loads (zonefile-load: difference) in its journal, and so
// answers IXFR with them.
func startKnot(t testing.TB, cfg primaryConfig, zoneText string) *knotPrimary {
	t.Helper()
	bin := testnet.NeedProgram(t, "knotd", "knot")
	control := testnet.NeedProgram(t, "knotc", "knot")
	d := &daemon{t: t, name: "knotd", dir: t.TempDir(), ip: cfg.ip, zone: cfg.zone}
	d.port = cfg.port
	if d.port == 0 {
		d.port = testnet.FreePort(t, cfg.ip)
	}
	conf := filepath.Join(d.dir, "knot.conf")
	sock := filepath.Join(d.dir, "knot.sock")
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n  listen: %s@%d\n  rundir: %q\n  pidfile: %q\n", cfg.ip, d.port, d.dir, filepath.Join(d.dir, "knot.pid"))
	fmt.Fprintf(&b, "control:\n  listen: %q\nlog:\n  - target: stderr\n    any: info\ndatabase:\n  storage: %q\n", sock, d.dir)
	keyRef := ""
	if k := cfg.key; k != nil {
		fmt.Fprintf(&b, "key:\n  - id: %s\n    algorithm: %s\n    secret: %s\n", k.Name, strings.TrimSuffix(k.Algorithm, "."), k.Secret)
		keyRef = "\n    key: " + k.Name
	}
	fmt.Fprintf(&b, "acl:\n  - id: xfr\n    address: 127.0.0.0/8\n    action: transfer%s\n", keyRef)
	notify := ""
	if cfg.notify != "" {
		host, port, err := net.SplitHostPort(cfg.notify)
		require.NoError(t, err)
		fmt.Fprintf(&b, "remote:\n  - id: fence\n    address: %s@%s%s\n", host, port, keyRef)
		if cfg.notifySource != "" {
			fmt.Fprintf(&b, "    via: %s\n", cfg.notifySource)
		}
		notify = "\n    notify: fence"
	}
	fmt.Fprintf(&b, `template:
  - id: default
    storage: %q
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    semantic-checks: off
zone:
  - domain: %s
    file: zone.db
    acl: xfr%s
`, d.dir, strings.TrimSuffix(cfg.zone, "."), notify)
	require.NoError(t, os.WriteFile(conf, []byte(b.String()), 0o600))
	d.args = []string{bin, "-c", conf}
	p := &knotPrimary{daemon: d, ctl: []string{control, "-c", conf, "-s", sock}}
	d.writeZone(zoneText)
	d.start()
	t.Cleanup(d.stop)
	return p
}

// setZone replaces the zone, has knotd reload it (which sends NOTIFY) and
// waits until it serves serial.
func (p *knotPrimary) setZone(text string, serial uint32) {
	p.t.Helper()
	p.writeZone(text)
	p.run(append(p.ctl, "zone-reload", strings.TrimSuffix(p.zone, "."))...)
	p.waitSerial(serial, true)
}

// interopPrimary is NSD or Knot as a test drives it.
type interopPrimary interface {
	entry() string
	setZone(text string, serial uint32)
	stop()
	logText() string
}

// TestZoneFromNSDAndKnot: NSD and Knot DNS, the primaries a network team
// runs besides BIND, serve an RPZ zone of some thousands of records with
// TSIG required (hmac-sha256, hmac-sha512). The source transfers it by
// AXFR; the zone changes and its serial wraps (RFC 1982: 4294967290 to 3
// is newer), the primary's signed NOTIFY (over UDP from NSD, over TCP from
// Knot) reaches the source's listener from the primary's address, and
// the change arrives by IXFR from Knot's journal (zonefile-load:
// difference), by an AXFR-style answer from NSD 4.6, which has no IXFR
// out. A key the primary does not have fails with ErrTSIG and no copy;
// the primary stopped, the zone held stays.
func TestZoneFromNSDAndKnot(t *testing.T) {
	const zone = "rpz.test."
	names := []string{"tiktok.com", "bytedance.com"}
	for i := range 3000 {
		names = append(names, fmt.Sprintf("name%d.example", i))
	}
	changed := append([]string{"douyin.com", "*.douyin.com"}, names[1:]...) // tiktok.com out
	for _, tc := range []struct {
		name, algorithm string
		start           func(t *testing.T, cfg primaryConfig, text string) interopPrimary
		ip              string
		wantTransfer    string
	}{
		{name: "nsd hmac-sha256", algorithm: "hmac-sha256", ip: "127.0.49.2", wantTransfer: TransferAXFR,
			start: func(t *testing.T, cfg primaryConfig, text string) interopPrimary { return startNSD(t, cfg, text) }},
		{name: "nsd hmac-sha512", algorithm: "hmac-sha512", ip: "127.0.49.2", wantTransfer: TransferAXFR,
			start: func(t *testing.T, cfg primaryConfig, text string) interopPrimary { return startNSD(t, cfg, text) }},
		{name: "knot hmac-sha256", algorithm: "hmac-sha256", ip: "127.0.49.4", wantTransfer: TransferIXFR,
			start: func(t *testing.T, cfg primaryConfig, text string) interopPrimary { return startKnot(t, cfg, text) }},
		{name: "knot hmac-sha512", algorithm: "hmac-sha512", ip: "127.0.49.4", wantTransfer: TransferIXFR,
			start: func(t *testing.T, cfg primaryConfig, text string) interopPrimary { return startKnot(t, cfg, text) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := newKey(t, "xfr-key.")
			key.Algorithm = tc.algorithm
			// The source's entry needs the primary's port, the primary
			// the listener's, which needs the source: a port chosen first.
			port := testnet.FreePort(t, tc.ip)
			src, err := NewZone(fmt.Sprintf("axfr://%s:%d/rpz.test", tc.ip, port), zoneTestOptions(t, key))
			require.NoError(t, err)
			notifyPort := serveNotify(t, NewNotifier([]Source{src}))
			cfg := primaryConfig{ip: tc.ip, port: port, zone: zone, key: key,
				notify: fmt.Sprintf("127.0.0.1:%d", notifyPort), notifySource: tc.ip}
			p := tc.start(t, cfg, rpzZone(zone, 4294967290, names...))
			require.Equal(t, src.Name(), p.entry())
			rec := run(t, src)

			c := rec.waitCount(t, 1)
			assert.Equal(t, TransferAXFR, c.Transfer)
			assert.Equal(t, uint32(4294967290), c.Serial)
			assert.Len(t, owners(c), len(names))

			// The NOTIFYs at the primary's start led to a check: the
			// next waits for the end of that second (NotifyInterval).
			p.setZone(rpzZone(zone, 3, changed...), 3)
			if !assert.Eventually(t, func() bool { return rec.count() >= 2 }, NotifyInterval+2*time.Second, tick,
				"the change did not arrive on the primary's NOTIFY") {
				t.Fatalf("status: %+v\nprimary's log:\n%s", src.Status(), p.logText())
			}
			c = rec.last()
			assert.Equal(t, uint32(3), c.Serial, "4294967290 to 3 is newer (RFC 1982)")
			assert.Equal(t, tc.wantTransfer, c.Transfer)
			assert.Equal(t, 2, c.Added)
			assert.Equal(t, 1, c.Removed)
			got := owners(c)
			assert.Len(t, got, len(changed))
			assert.Contains(t, got, "*.douyin.com")
			assert.NotContains(t, got, "tiktok.com")
			st := waitStatus(t, src, func(st Status) bool { return st.Serial == 3 })
			assert.Positive(t, st.NotifiesAccepted)
			assert.Zero(t, st.NotifiesRefused)
			assert.NoError(t, st.LastError)

			wrong := newKey(t, key.Name)
			wrong.Algorithm = key.Algorithm
			other, err := NewZone(p.entry(), zoneTestOptions(t, wrong))
			require.NoError(t, err)
			otherRec := run(t, other)
			ost := waitError(t, other, ErrTSIG)
			assert.ErrorContains(t, ost.LastError, "BADSIG")
			assert.False(t, ost.HasContent)
			assert.Zero(t, otherRec.count())

			p.stop()
			require.True(t, src.Notify(netip.MustParseAddr(tc.ip)))
			require.Eventually(t, func() bool { return src.Status().LastError != nil }, waitFor, tick)
			st = src.Status()
			assert.True(t, st.HasContent)
			assert.Equal(t, uint32(3), st.Serial, "the zone held stays")
			assert.Equal(t, 2, rec.count())
		})
	}
}
