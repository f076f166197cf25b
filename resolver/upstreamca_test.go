package resolver

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// restartableDoH is a DNS over HTTPS upstream that can be started again on
// its address with another certificate, as a server is restarted with a
// renewed one: the connections to the one before end with it.
type restartableDoH struct {
	t    *testing.T
	addr string
	srv  *listen.DoHServer
}

// startRestartableDoH serves answerA(answer) over DNS over HTTPS with the
// pair of p on a free loopback port until the test ends.
func startRestartableDoH(t *testing.T, p *testPKI, answer string) *restartableDoH {
	t.Helper()
	d := &restartableDoH{t: t, addr: "127.0.0.1:0"}
	d.serve(p, answer)
	t.Cleanup(func() { _ = d.srv.Close() })
	return d
}

// serve serves on d's address with p's pair, closing the server before.
func (d *restartableDoH) serve(p *testPKI, answer string) {
	d.t.Helper()
	if d.srv != nil {
		require.NoError(d.t, d.srv.Close())
	}
	store, err := listen.NewCertStore(p.certFile, p.keyFile, listen.CertOptions{})
	require.NoError(d.t, err)
	ln, err := net.Listen("tcp", d.addr)
	require.NoError(d.t, err)
	d.addr = ln.Addr().String()
	d.srv = listen.NewDoHServer(listen.DoHOptions{Handler: answerA(answer),
		TLS: listen.ServerTLSConfig(store, listen.ALPNHTTP2, listen.ALPNHTTP1)})
	srv := d.srv
	go func() { _ = srv.Serve(ln) }()
}

// TestUpstreamCARenewedInPlace: an upstream_ca bundle renewed in place (an
// internal CA rotated: the new root added to the file before the
// upstreams' certificates are reissued under it, as trust-manager or
// config management does) reaches the encrypted upstreams without a
// SIGHUP, as the configuration and its lists do. Before, the file was read
// only at start and at reloads something else set off: once the upstream
// served its reissued certificate, every query to it was SERVFAIL
// ("x509: certificate signed by unknown authority") until a SIGHUP or a
// restart, while tls.cert, the lists and the configuration itself were
// all picked up on their own.
func TestUpstreamCARenewedInPlace(t *testing.T) {
	old, renewed := newTestPKI(t), newTestPKI(t) // two CAs, each with a pair for dns.test
	up := startRestartableDoH(t, old, "192.0.2.41")

	dir := t.TempDir()
	bundle := filepath.Join(dir, "upstream-ca.pem")
	oldCA, err := os.ReadFile(old.caFile)
	require.NoError(t, err)
	newCA, err := os.ReadFile(renewed.caFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bundle, oldCA, 0o644))

	cfg := strings.Replace(reloadConfig, "upstream_timeout: 300ms",
		fmt.Sprintf("upstream_timeout: 2s\nupstream_ca: %q", bundle), 1)
	f := startFence(t, cfg, testFiles, "https://"+up.addr+"/dns-query#"+testServerName)
	core, logs := observer.New(zap.InfoLevel)
	watching(t, f, zap.New(core))

	askA := func(name string) *dns.Msg {
		return ask(t, f.addr, "127.0.0.8", "udp", question(name, dns.TypeA, true))
	}
	r := askA("before.example.")
	require.Equal(t, dns.RcodeSuccess, r.Rcode, "the upstream's certificate verifies against the first CA")
	require.Len(t, r.Answer, 1)

	// The new root joins the bundle, then the upstream comes back with a
	// certificate the new CA issued.
	writeAtomic(t, bundle, string(oldCA)+string(newCA))
	up.serve(renewed, "192.0.2.42")

	var last *dns.Msg
	ok := assert.Eventually(t, func() bool {
		last = askA(fmt.Sprintf("after-%d.example.", time.Now().UnixNano()))
		return last.Rcode == dns.RcodeSuccess
	}, 10*time.Second, 50*time.Millisecond, "the renewed bundle verifies the reissued certificate, without a SIGHUP")
	if !ok {
		t.Logf("last answer: %v", last)
		return
	}
	require.Len(t, last.Answer, 1)
	assert.Equal(t, "192.0.2.42", last.Answer[0].(*dns.A).A.String(), "answered by the restarted upstream")
	reloaded := logs.FilterMessage("reloaded").All()
	require.NotEmpty(t, reloaded, "the bundle's change is a reload")
	assert.Contains(t, fmt.Sprint(reloaded[len(reloaded)-1].ContextMap()["files"]), "upstream-ca.pem", "the reload names the file that changed")
	assert.Equal(t, true, reloaded[len(reloaded)-1].ContextMap()["upstream_ca_changed"], "the reload says what changed")
}

// caFence is a watched fence forwarding to a DoH upstream whose
// certificate pCA's root verifies; bundle is its upstream_ca file
// (upstream-ca.pem, in the configuration's folder), and other the root of
// another CA, for bundles that hold more than one.
type caFence struct {
	*fence
	r          *Reloader
	logs       *observer.ObservedLogs
	bundle     string
	pCA, other []byte
}

// startCAFence starts a caFence whose upstream answers A with answer and
// whose bundle holds bundle(pCA, other) at start, and checks that a
// query is forwarded.
func startCAFence(t *testing.T, bundle func(pCA, other []byte) string, answer string) *caFence {
	t.Helper()
	p, o := newTestPKI(t), newTestPKI(t)
	up, err := startDoH(t, p, "127.0.0.1:0", answerA(answer))
	require.NoError(t, err)
	other, err := os.ReadFile(o.caFile)
	require.NoError(t, err)
	pCA, err := os.ReadFile(p.caFile)
	require.NoError(t, err)
	files := maps.Clone(testFiles)
	files["upstream-ca.pem"] = bundle(pCA, other)
	cfg := strings.Replace(reloadConfig, "upstream_timeout: 300ms", "upstream_timeout: 2s\nupstream_ca: upstream-ca.pem", 1)
	f := startFence(t, cfg, files, "https://"+up+"/dns-query#"+testServerName)
	core, logs := observer.New(zap.InfoLevel)
	c := &caFence{fence: f, r: watching(t, f, zap.New(core)), logs: logs, bundle: filepath.Join(f.dir, "upstream-ca.pem"), pCA: pCA, other: other}
	require.Equal(t, dns.RcodeSuccess, c.askA(t).Rcode, "the bundle verifies the upstream")
	return c
}

// askA asks a name not asked before (no cache hit) from a government
// device.
func (c *caFence) askA(t *testing.T) *dns.Msg {
	t.Helper()
	return ask(t, c.addr, "127.0.0.8", "udp", question(fmt.Sprintf("q-%d.example.", time.Now().UnixNano()), dns.TypeA, true))
}

// TestUpstreamCACaughtMidWrite starts a writer on the upstream_ca bundle
// in place after the files were found complete and before the reload
// reads it: the reload's check for files caught mid-write covered the
// configuration, lists and range files, read before the upstreams are
// connected, but not the bundle, read after, so that the half-written
// bundle (its first root whole, the second cut short, which PEM decoding
// then passed over) was applied: the upstreams' forwarder was made anew
// without the root that verifies them, and every forwarded query was
// SERVFAIL until the writer finished. Now such a reload applies nothing
// and counts no failure (a bundle being written is not a broken one),
// and the watcher applies the complete bundle once the writer closes it.
func TestUpstreamCACaughtMidWrite(t *testing.T) {
	c := startCAFence(t, func(pCA, other []byte) string { return string(other) + string(pCA) }, "192.0.2.43")
	r := c.r
	full := string(c.other) + string(c.pCA)
	partial := string(c.other) + string(c.pCA[:len(c.pCA)/2])

	writer := writeDuringLoad(t, r, c.bundle, partial, 1)
	writeAtomic(t, filepath.Join(c.dir, "bytedance.txt"), "capcut.com\nlemon8-app.com\n")
	w := writer()
	require.Eventually(t, func() bool {
		return c.logs.FilterMessage("files changed while they were read: applying them once they settle").Len() > 0 ||
			r.Status().Successes+r.Status().Failures > 0
	}, 10*time.Second, 5*time.Millisecond, "the reload never ended")
	assert.Zero(t, r.Status().Successes, "a bundle caught mid-write was applied")
	assert.Zero(t, r.Status().Failures, "a bundle caught mid-write is no broken bundle: %v", r.Status().Err)
	last := c.askA(t)
	assert.Equal(t, dns.RcodeSuccess, last.Rcode, "forwarded with the half-written bundle's roots: %v", last)

	_, err := w.WriteString(full[len(partial):])
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.Eventually(t, func() bool { return r.Status().Successes > 0 }, 10*time.Second, 5*time.Millisecond,
		"the watcher never applied the complete bundle")
	assert.Equal(t, dns.RcodeSuccess, c.askA(t).Rcode)
	assert.Equal(t, dns.RcodeNameError, rcodeOf(t, c.addr, "127.0.0.1", "lemon8-app.com."), "the list edit applied with it")
}

// TestUpstreamCACutShortRefused: a renewed upstream_ca bundle whose last
// root is cut short (a copy that died halfway, a disk that filled up) is
// refused as any broken file is, and the bundle before keeps verifying
// the upstreams. Before, PEM decoding passed over the cut block without
// an error: the reload applied the roots before the cut alone, made the
// forwarder anew without the root that verifies the upstream, and every
// forwarded query was SERVFAIL (EDE 23) where the reload should have
// failed, loudly, and changed nothing.
func TestUpstreamCACutShortRefused(t *testing.T) {
	c := startCAFence(t, func(pCA, _ []byte) string { return string(pCA) }, "192.0.2.44")
	r := c.r

	// Another root first, then the one that verifies the upstream, cut.
	writeAtomic(t, c.bundle, string(c.other)+string(c.pCA[:len(c.pCA)/2]))
	require.Eventually(t, func() bool { return r.Status().Successes+r.Status().Failures > 0 }, 10*time.Second, 5*time.Millisecond,
		"no reload for the bundle's change")
	st := r.Status()
	assert.Zero(t, st.Successes, "the cut-short bundle was applied")
	require.Error(t, st.Err)
	assert.Contains(t, st.Err.Error(), "PEM block 2 does not decode")
	assert.NotEmpty(t, c.logs.FilterMessage("reload failed, keeping the last good state").All())
	last := c.askA(t)
	assert.Equal(t, dns.RcodeSuccess, last.Rcode, "the bundle before still verifies the upstream: %v", last)
}

// TestConnectUpstreamsRefusesABrokenCA: an upstream_ca bundle that no
// longer loads when the upstreams are connected (replaced after the
// configuration validated it) fails ConnectUpstreams, naming the key, and
// gives the snapshot no forwarder: the encrypted upstreams are never
// verified against the system's roots alone.
func TestConnectUpstreamsRefusesABrokenCA(t *testing.T) {
	p := newTestPKI(t)
	pCA, err := os.ReadFile(p.caFile)
	require.NoError(t, err)
	path := writeConfig(t, "listen: [\"127.0.158.4:0\"]\nupstreams: {{upstreams}}\nupstream_ca: upstream-ca.pem\nallowed_clients: [\"10.0.0.0/8\"]\n",
		map[string]string{"upstream-ca.pem": string(pCA)}, "tls://127.0.158.4:853#"+testServerName)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "upstream-ca.pem"), []byte("not a PEM file\n"), 0o644))

	err = ConnectUpstreams(nil, snap, nil, nil)
	if snap.Forwarder() != nil {
		t.Cleanup(snap.Forwarder().Close)
	}
	assert.ErrorContains(t, err, "upstream_ca")
	assert.Nil(t, snap.Forwarder())
}
