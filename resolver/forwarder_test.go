package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// TestReloadRetiresForwarderAfterItsQueries: a reload that changes the
// upstreams publishes a new forwarder with the snapshot; a query in flight
// on the old one still gets the old upstream's answer, later queries go to
// the new upstream, and the old forwarder's socket stays open while the
// query waits on it and closes once it is answered.
func TestReloadRetiresForwarderAfterItsQueries(t *testing.T) {
	release := make(chan struct{})
	source := make(chan string, 1) // where the old upstream's query came from
	old := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		select {
		case source <- w.RemoteAddr().String():
		default:
		}
		<-release
		m := defaultAnswer(w, r)
		m.Answer = []dns.RR{mustRR("%s 300 IN A 192.0.2.7", r.Question[0].Name)}
		return m
	})
	next := startUpstream(t, nil)
	cfg := strings.Replace(testConfig, "upstream_timeout: 300ms", "upstream_timeout: 5s", 1)
	f := startFence(t, cfg, testFiles, old.addr)
	before := f.handler.Snapshot().Forwarder()

	type result struct {
		r   *dns.Msg
		err error
	}
	inFlight := make(chan result, 1)
	go func() {
		r, err := exchange(f.addr, "127.0.0.8", "udp", question("held.example.org.", dns.TypeA, false))
		inFlight <- result{r, err}
	}()
	var oldSocket string
	select {
	case oldSocket = <-source:
	case <-time.After(5 * time.Second):
		t.Fatal("the old upstream was not asked")
	}

	path := filepath.Join(f.dir, "dnsfence.yaml")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(data), old.addr, next.addr, 1)), 0o644))
	require.NoError(t, NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) }).Reload(false))
	after := f.handler.Snapshot().Forwarder()
	require.NotSame(t, before, after, "a new forwarder with the new snapshot")
	assert.Equal(t, []string{next.addr}, after.Upstreams())

	r := ask(t, f.addr, "127.0.0.8", "udp", question("fresh.example.org.", dns.TypeA, false))
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	if assert.Len(t, r.Answer, 1) {
		assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String(), "from the new upstream")
	}
	assert.Equal(t, int64(1), old.count.Load(), "the old upstream gets no new query")
	assert.True(t, testnet.UDPBoundHere(t, oldSocket), "the old forwarder's socket is open while a query waits on it")

	close(release)
	res := <-inFlight
	require.NoError(t, res.err)
	assert.Equal(t, dns.RcodeSuccess, res.r.Rcode, "the query in flight during the reload is answered")
	if assert.Len(t, res.r.Answer, 1) {
		assert.Equal(t, "192.0.2.7", res.r.Answer[0].(*dns.A).A.String(), "by the upstream it was sent to")
	}
	require.Eventually(t, func() bool { return !testnet.UDPBoundHere(t, oldSocket) }, 5*time.Second, 10*time.Millisecond,
		"the old forwarder's socket closes once its query is answered")
}

// TestBuildSnapshotReadsNoResolvConf: BuildSnapshot (what check and
// explain load) reads the configuration and its lists only: upstreams
// written as a resolv.conf path are read when a snapshot is connected to
// serve (ConnectUpstreams, at start and by the reloader), and a reload
// whose resolv.conf cannot be used keeps the running state and forwarder.
func TestBuildSnapshotReadsNoResolvConf(t *testing.T) {
	tests := []struct {
		name    string
		resolv  string // the resolv.conf once the configuration is loaded; "" removes it
		wantErr string
	}{
		{name: "resolv.conf removed", wantErr: "reading upstreams"},
		{name: "no nameserver in it", resolv: "# nothing here\nsearch example.org\n", wantErr: "no usable upstream"},
		{name: "only a nameserver with a zone", resolv: "nameserver fe80::1%eth0\n", wantErr: "no usable upstream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, nil)
			f := startFence(t, testConfig, testFiles, up.addr)
			serving := f.handler.Snapshot()
			rc := filepath.Join(f.dir, "resolv.conf")
			require.NoError(t, os.WriteFile(rc, []byte("nameserver 127.0.0.1\n"), 0o644))
			path := filepath.Join(f.dir, "dnsfence.yaml")
			require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(testConfig, "{{upstreams}}", `["`+rc+`"]`)), 0o644))
			cfg, err := config.Load(path)
			require.NoError(t, err)
			if tc.resolv == "" {
				require.NoError(t, os.Remove(rc))
			} else {
				require.NoError(t, os.WriteFile(rc, []byte(tc.resolv), 0o644))
			}

			snap, err := BuildSnapshot(cfg, nil)
			require.NoError(t, err, "BuildSnapshot does not read resolv.conf")
			assert.Len(t, snap.Policies, 4)
			assert.Nil(t, snap.Forwarder(), "nor build a forwarder")
			err = ConnectUpstreams(nil, snap, nil, nil)
			assert.ErrorContains(t, err, tc.wantErr)
			assert.Nil(t, snap.Forwarder())

			// A reload to it fails and keeps what serves.
			r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
			if tc.resolv == "" {
				// The configuration no longer loads: its validation finds
				// the file missing. Loaded before, it fails to connect.
				r = NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return cfg, nil })
			}
			assert.ErrorContains(t, r.Reload(false), tc.wantErr)
			assert.Same(t, serving, f.handler.Snapshot())
			reply := ask(t, f.addr, "127.0.0.8", "udp", question("still.example.org.", dns.TypeA, false))
			assert.Equal(t, dns.RcodeSuccess, reply.Rcode, "the running forwarder still serves")
			assert.Len(t, reply.Answer, 1)
			assert.Equal(t, int64(1), up.count.Load())
		})
	}
}

// TestHTTPSUpstreamWhoseLookupWouldLoopIsRefused: an https upstream
// written with a host name, with no plain upstream to look it up, is looked
// up by the system resolver; when the resolv.conf says that resolver is
// dnsfence alone (a sidecar's), the lookup would come back to dnsfence and
// every forwarded query time out. Such a configuration is refused, naming
// the fix; a system resolver elsewhere, an address, a name in /etc/hosts
// or a plain upstream beside it is taken.
func TestHTTPSUpstreamWhoseLookupWouldLoopIsRefused(t *testing.T) {
	dir := t.TempDir()
	resolvConf := filepath.Join(dir, "resolv.conf")
	prev := systemResolvConf
	systemResolvConf = resolvConf
	t.Cleanup(func() { systemResolvConf = prev })
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t.txt"), []byte("tiktok.com\n"), 0o644))
	connect := func(t *testing.T, listen, upstreams string) error {
		t.Helper()
		path := filepath.Join(dir, "dnsfence.yaml")
		text := fmt.Sprintf("listen: %s\nupstreams: %s\npolicies:\n  - name: gov\n    clients: [\"10.0.0.0/8\"]\n    block: [t.txt]\n", listen, upstreams)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		cfg, err := config.Load(path)
		require.NoError(t, err)
		snap, err := BuildSnapshot(cfg, nil)
		require.NoError(t, err)
		err = ConnectUpstreams(nil, snap, nil, nil)
		if err == nil {
			t.Cleanup(snap.Forwarder().Close)
		}
		return err
	}
	for _, tc := range []struct {
		name, resolv, listen, upstreams, wantErr string
	}{
		{"resolv.conf names dnsfence", "nameserver 127.0.0.1\n", `["127.0.0.1:53"]`, `["https://dns.test/dns-query"]`,
			"names a host only the system resolver can look up, and " + resolvConf + " names no resolver but dnsfence itself"},
		{"a wildcard on 53 and a loopback nameserver", "nameserver 127.0.0.53\n", `["0.0.0.0:53"]`, `["https://dns.test/dns-query"]`,
			"https://IP/dns-query#dns.test"},
		{"no nameserver, dnsfence on [::1]:53", "search example.org\n", `["[::1]:53"]`, `["https://dns.test/dns-query"]`,
			"names no resolver but dnsfence itself"},
		{"another resolver", "nameserver 127.0.0.1\nnameserver 127.0.0.2\n", `["127.0.0.1:53"]`, `["https://dns.test/dns-query"]`, ""},
		// A zone is refused in upstreams, but the system resolver asks
		// a link-local nameserver with one.
		{"a link-local resolver with a zone", "nameserver fe80::1%eth0\n", `["[::1]:53"]`, `["https://dns.test/dns-query"]`, ""},
		{"dnsfence on another port", "nameserver 127.0.0.1\n", `["127.0.0.1:5353"]`, `["https://dns.test/dns-query"]`, ""},
		{"an address", "nameserver 127.0.0.1\n", `["127.0.0.1:53"]`, `["https://127.0.0.2/dns-query#dns.test"]`, ""},
		{"a name /etc/hosts holds", "nameserver 127.0.0.1\n", `["127.0.0.1:53"]`, `["https://localhost/dns-query"]`, ""},
		{"a plain upstream to ask", "nameserver 127.0.0.1\n", `["127.0.0.1:53"]`, `["https://dns.test/dns-query", "127.0.0.2:53"]`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "a name /etc/hosts holds" && !hostsFileNames("localhost") {
				t.Skip("this machine's /etc/hosts does not name localhost")
			}
			require.NoError(t, os.WriteFile(resolvConf, []byte(tc.resolv), 0o644))
			err := connect(t, tc.listen, tc.upstreams)
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.wantErr)
		})
	}
}

// hostsFileNames reports whether a line of /etc/hosts gives name an
// address: read here, not asked of inHostsFile, which the test that skips
// without one checks.
func hostsFileNames(name string) bool {
	data, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) > 1 && slices.Contains(f[1:], name) {
			return true
		}
	}
	return false
}

// hostsFirst reports whether the system's resolver reads /etc/hosts
// before it asks a DNS server (nsswitch.conf's hosts line starts with
// files), so that a test looking up a name /etc/hosts holds sends no
// query off the machine.
func hostsFirst() bool {
	data, err := os.ReadFile("/etc/nsswitch.conf")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) > 1 && f[0] == "hosts:" {
			return f[1] == "files"
		}
	}
	return false
}

// TestLookupThroughStopsAtTheDeadlineBeforeItsTimer: the lookup of an
// https upstream's host asks the plain upstreams one after another, and
// stops at the lookup's deadline. A first upstream that timed out at the
// deadline, before the context's own timer fired, ends the lookup: the
// next one is not asked with the deadline already passed. Before, it was
// asked (one datagram wasted, its timeout added to the error).
func TestLookupThroughStopsAtTheDeadlineBeforeItsTimer(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })
	next, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = next.Close() })

	// The first upstream's own timeout ends its wait just after the
	// lookup's deadline; the context's timer has not fired by then.
	ctx := testnet.WithLateTimer(t, 100*time.Millisecond, time.Minute)
	lookup := lookupThrough([]string{silent.LocalAddr().String(), next.LocalAddr().String()}, 300*time.Millisecond)
	_, err = lookup(ctx, "dns.test")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), next.LocalAddr().String(), "the second upstream was asked")

	require.NoError(t, next.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	n, _, err := next.ReadFrom(make([]byte, 512))
	assert.Error(t, err, "the second upstream got a query (%d octets) after the lookup's deadline", n)
}

// TestLookupThroughAnswers: the lookup of an https upstream's host asks a
// plain upstream for its A and AAAA records, each with RD and EDNS (1232
// octets, DO clear), and takes the addresses of both answers, IPv4 first.
// An answer whose RCODE is not NOERROR is an error naming it, its records
// unused; two answers without an address are an error too. The sockets the
// lookup made are closed once it returns.
func TestLookupThroughAnswers(t *testing.T) {
	needLoopback(t, "127.0.158.1")
	a := func(name string) dns.RR { return mustRR("%s 60 IN A 192.0.2.7", name) }
	aaaa := func(name string) dns.RR { return mustRR("%s 60 IN AAAA 2001:db8::7", name) }
	for _, tc := range []struct {
		name    string
		records func(qname string, qtype uint16) []dns.RR
		rcode   int
		want    []netip.Addr
		err     string
	}{
		{name: "both", records: func(n string, qt uint16) []dns.RR {
			if qt == dns.TypeA {
				return []dns.RR{a(n)}
			}
			return []dns.RR{aaaa(n)}
		}, want: []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}},
		{name: "IPv6 only", records: func(n string, qt uint16) []dns.RR {
			if qt == dns.TypeAAAA {
				return []dns.RR{aaaa(n)}
			}
			return nil
		}, want: []netip.Addr{netip.MustParseAddr("2001:db8::7")}},
		{name: "no address", records: func(string, uint16) []dns.RR { return nil }, err: "dns.test has no address"},
		{name: "SERVFAIL with records", records: func(n string, _ uint16) []dns.RR { return []dns.RR{a(n), aaaa(n)} },
			rcode: dns.RcodeServerFailure, err: "dns.test A: SERVFAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked := make(chan *dns.Msg, 4)
			sources := make(chan string, 4)
			up := startUpstreamAt(t, "127.0.158.1", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				asked <- r.Copy()
				sources <- w.RemoteAddr().String()
				m := new(dns.Msg)
				m.SetRcode(r, tc.rcode)
				m.Answer = tc.records(r.Question[0].Name, r.Question[0].Qtype)
				return m
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got, err := lookupThrough([]string{up.addr}, time.Second)(ctx, "dns.test")
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				assert.Empty(t, got)
			} else {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
			}

			require.Equal(t, int64(2), up.count.Load(), "A and AAAA asked, once each")
			var qtypes []uint16
			for range 2 {
				q := <-asked
				qtypes = append(qtypes, q.Question[0].Qtype)
				assert.True(t, q.RecursionDesired)
				if opt := q.IsEdns0(); assert.NotNil(t, opt, "EDNS") {
					assert.Equal(t, uint16(1232), opt.UDPSize())
					assert.False(t, opt.Do(), "DO")
				}
				src := <-sources
				require.Eventually(t, func() bool { return !testnet.UDPBoundHere(t, src) }, 5*time.Second, 10*time.Millisecond,
					"the lookup's socket %s is closed once it returns", src)
			}
			assert.ElementsMatch(t, []uint16{dns.TypeA, dns.TypeAAAA}, qtypes)
		})
	}
}

// TestUpstreamAddresses: a resolv.conf written as the upstreams is read
// for its nameservers on port 53. The embedded default falls back to
// FallbackUpstreams when it names none usable, and only then; a
// configuration file fails, and its error, where dnsfence listens on a
// wildcard address, offers the first loopback nameserver it left out as
// itself written as an upstream.
func TestUpstreamAddresses(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	path := filepath.Join(dir, "dnsfence.yaml")
	text := fmt.Sprintf("listen: [\"0.0.0.0:53\"]\nupstreams: [%q]\nallowed_clients: [\"10.0.0.0/8\"]\n", rc)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	for _, tc := range []struct {
		name, resolv string
		embedded     bool
		want         []string
		err          string
	}{
		{name: "the embedded default, no nameserver", resolv: "search example.org\n", embedded: true, want: FallbackUpstreams},
		{name: "the embedded default, only dnsfence", resolv: "nameserver 127.0.0.1\n", embedded: true, want: FallbackUpstreams},
		{name: "the embedded default, one nameserver", resolv: "nameserver 192.0.2.53\n", embedded: true, want: []string{"192.0.2.53:53"}},
		{name: "a file, no nameserver", resolv: "search example.org\n", err: "names no nameserver but dnsfence itself"},
		// A link-local nameserver with its zone is no upstream the
		// forwarder takes: said as such, not as dnsfence itself.
		{name: "a file, a nameserver with a zone", resolv: "nameserver fe80::1%eth0\n",
			err: "resolv.conf names no nameserver dnsfence forwards to: fe80::1%eth0, with an IPv6 zone, which upstreams do not support; give the upstream resolvers as IP:port"},
		{name: "a file, a nameserver with a zone and dnsfence", resolv: "nameserver 127.0.0.1\nnameserver fe80::1%eth0\n",
			err: "names no nameserver dnsfence forwards to: fe80::1%eth0, with an IPv6 zone, which upstreams do not support, and dnsfence itself; give"},
		// An IPv4-compatible nameserver is refused by the forwarder
		// (upstream.ErrIPv4Compatible): left out as a zoned one is, so
		// that check says what serve would fail on.
		{name: "a file, an IPv4-compatible nameserver", resolv: "nameserver ::10.0.0.1\n",
			err: "resolv.conf names no nameserver dnsfence forwards to: ::a00:1, IPv4-compatible (::a.b.c.d, deprecated by RFC 4291), which upstreams do not support; give the upstream resolvers as IP:port"},
		{name: "a file, a nameserver with a zone and an IPv4-compatible one", resolv: "nameserver fe80::1%eth0\nnameserver ::a00:1\n",
			err: "names no nameserver dnsfence forwards to: fe80::1%eth0, with an IPv6 zone; ::a00:1, IPv4-compatible (::a.b.c.d, deprecated by RFC 4291), which upstreams do not support; give"},
		{name: "a file, nameservers no query can be exchanged with", resolv: "nameserver fe80::1\nnameserver ff02::fb\nnameserver fe80::2\n",
			err: "names no nameserver dnsfence forwards to: fe80::1, fe80::2, link-local without a zone; ff02::fb, multicast, which upstreams do not support; give"},
		{name: "a file, two loopback nameservers", resolv: "nameserver 127.0.0.11\nnameserver 127.0.0.12\n",
			err: `is taken as another server when written so: upstreams: ["127.0.0.11:53"])`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(rc, []byte(tc.resolv), 0o644))
			var cfg *config.Config
			var err error
			if tc.embedded {
				cfg, err = config.ParseEmbedded("embedded:dnsfence.yaml", []byte(text), os.ReadFile)
			} else {
				cfg, err = config.Load(path)
			}
			require.NoError(t, err)
			got, err := UpstreamAddresses(cfg)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
