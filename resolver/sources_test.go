package resolver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// sourceFence is a dnsfence serving with remote lists: its Reloader runs
// the sources as serve does.
type sourceFence struct {
	addr     string
	handler  *Handler
	reloader *Reloader
	registry *prometheus.Registry
	logs     *observer.ObservedLogs
	stop     func()
}

// startSourceFence serves the configuration at dir/dnsfence.yaml on
// listen (127.0.0.1:0 for any port) until the test ends or stop.
func startSourceFence(t *testing.T, dir, listen string) *sourceFence {
	t.Helper()
	log, logs := observed(t)
	return startSourceFenceLog(t, log, logs, dir, listen)
}

// startSourceFenceLog is startSourceFence with a given logger.
func startSourceFenceLog(t testing.TB, log *zap.Logger, logs *observer.ObservedLogs, dir, listen string) *sourceFence {
	t.Helper()
	path := filepath.Join(dir, "dnsfence.yaml")
	cfg, err := config.Load(path)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := NewHandler(log, nil, m)
	r := NewReloader(log, h, func() (*config.Config, error) { return config.Load(path) })
	ctx, cancel := context.WithCancel(context.Background())
	_, err = r.Start(ctx, cfg)
	require.NoError(t, err)
	srv := NewServer(log, h)
	require.NoError(t, srv.Start([]string{listen}))
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
			h.Snapshot().Forwarder().Close()
			// The sources end before the test's folders go: those
			// running, and those dropped by a reload, which may still be
			// writing a disk copy.
			if !r.sourcesStopped(10 * time.Second) {
				t.Errorf("the remote list sources did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return &sourceFence{addr: srv.Addrs()[0], handler: h, reloader: r, registry: reg, logs: logs, stop: stop}
}

// status is the source called name's status.
func (f *sourceFence) status(t *testing.T, name string) source.Status {
	t.Helper()
	rem := f.handler.remote.Load()
	require.NotNil(t, rem)
	for _, s := range rem.srcs {
		if s.Name() == name {
			return s.Status()
		}
	}
	t.Fatalf("no source %s", name)
	return source.Status{}
}

// ready is /readyz's verdict and reason.
func (f *sourceFence) ready(t *testing.T) (bool, string) {
	t.Helper()
	return f.handler.ready(t.Context(), DefaultReadyWindow)
}

// rcode is the RCODE of name asked from from over UDP.
func (f *sourceFence) rcode(t *testing.T, from, name string) int {
	t.Helper()
	return ask(t, f.addr, from, "udp", question(name, dns.TypeA, true)).Rcode
}

// eventuallyRcode waits until name gets rcode from from.
func (f *sourceFence) eventuallyRcode(t *testing.T, from, name string, rcode int, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return f.rcode(t, from, name) == rcode }, within, 20*time.Millisecond,
		"%s from %s: want %s", name, from, dns.RcodeToString[rcode])
}

// logged reports whether a line with msg whose fields hold every pair of
// want was logged.
func logged(logs *observer.ObservedLogs, msg string, want map[string]any) bool {
	for _, e := range logs.FilterMessage(msg).All() {
		f := e.ContextMap()
		ok := true
		for k, v := range want {
			if fmt.Sprint(f[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// listServer serves list bodies as a web server does, with ETags and
// conditional GET, or misbehaves as told.
type listServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies map[string]string // by path
	mode   string            // "": serve; "html", "big", "down", "junk"
	// conditional counts the 304 answers, requests every request.
	conditional, requests atomic.Int64
}

func startListServer(t *testing.T, bodies map[string]string) *listServer {
	s := &listServer{bodies: bodies}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *listServer) set(path, body, mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if body != "" {
		s.bodies[path] = body
	}
	s.mode = mode
}

func (s *listServer) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	body, mode := s.bodies[r.URL.Path], s.mode
	s.mu.Unlock()
	switch mode {
	case "html":
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!DOCTYPE html><html><body>Sign in to the network</body></html>")
		return
	case "big":
		fmt.Fprint(w, strings.Repeat("tiktok.com\n", 1000))
		return
	case "down":
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	case "junk":
		fmt.Fprint(w, `{"lists": ["this is json", "not a list"]}`+"\n"+`{"more": 1}`+"\n")
		return
	}
	sum := sha256.Sum256([]byte(body))
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		s.conditional.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprint(w, body)
}

// names is a list of n names besides those given.
func names(n int, extra ...string) string {
	var b strings.Builder
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	for i := range n {
		fmt.Fprintf(&b, "tracker%d.example\n", i)
	}
	return b.String()
}

// TestURLSource: lists fetched by URL block as files do; a change is
// applied, a 304 keeps the list, and a copy that is HTML, too big, not a
// list at all, pinned otherwise, or not served keeps the last good copy
// blocking while the log, the metrics and /readyz say so; a copy that
// shrinks too much is held until SIGHUP; an RPZ body's unsupported
// records are reported with their owners and skipped; a restart with the
// server down blocks at once from sources.cache_dir.
func TestURLSource(t *testing.T) {
	up := startUpstream(t, nil)
	v1 := names(8, "tiktok.com", "douyin.com")
	pinned := "capcut.com\n"
	pinSum := sha256.Sum256([]byte(pinned))
	srv := startListServer(t, map[string]string{
		"/tiktok.txt": v1,
		"/pinned.txt": pinned,
		"/policy.rpz": rpzHead + `lemon8.com CNAME .
x.example CNAME .
ns1.example.rpz-nsdname CNAME .
32.1.0.0.127.rpz-client-ip CNAME .
local.example A 192.0.2.1
rewrite.example CNAME walled.garden.example.
`,
	})
	list := srv.URL + "/tiktok.txt"
	pin := srv.URL + "/pinned.txt?key=s3cr3t#sha256=" + hex.EncodeToString(pinSum[:])
	rpzURL := srv.URL + "/policy.rpz"
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.0/28"]
log: {queries: blocked}
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s", "%s", "%s"]
sources: {refresh: 1s, cache_dir: cache, max_bytes: 4096}
`, up.addr, list, pin, rpzURL)})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	const gov = "127.0.0.1"

	t.Run("blocks", func(t *testing.T) {
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "www.tiktok.com."), "in the first snapshot")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "capcut.com."))
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "lemon8.com."))
		assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "www.example.org."))
		ready, why := f.ready(t)
		assert.True(t, ready, why)
		line, ok := auditLine(f.logs, "www.tiktok.com.")
		require.True(t, ok)
		sum := sha256.Sum256([]byte(v1))
		assert.Equal(t, list, line[logList])
		assert.EqualValues(t, 1, line[logListLine])
		assert.Equal(t, hex.EncodeToString(sum[:]), line[logListHash], "the body's SHA-256")
		v, _ := metricValue(t, f.registry, "dnsfence_source_entries", "source", list)
		assert.Equal(t, 10.0, v)
		v, _ = metricValue(t, f.registry, "dnsfence_source_has_content", "source", list)
		assert.Equal(t, 1.0, v)
		age, ok := metricValue(t, f.registry, "dnsfence_source_content_age_seconds", "source", list)
		assert.True(t, ok, "the age of the copy served, for alerts on a source that stopped answering")
		assert.GreaterOrEqual(t, age, 0.0)
		v, ok = metricValue(t, f.registry, "dnsfence_source_last_success_timestamp_seconds", "source", list)
		assert.True(t, ok)
		assert.Greater(t, v, float64(time.Now().Add(-time.Minute).Unix()))
		// The EDE text every blocked client reads names a remote list
		// without its query string (a token, here) or fragment.
		r := ask(t, f.addr, gov, "udp", question("capcut.com.", dns.TypeA, true))
		require.Equal(t, dns.RcodeNameError, r.Rcode)
		e15 := ede(r)
		require.NotNil(t, e15)
		assert.Equal(t, `blocked by policy "gov", list `+srv.URL+"/pinned.txt", e15.ExtraText)
		assert.NotContains(t, r.String(), "s3cr3t")
		// So does the CHAOS explain answer (explain_clients: loopback).
		r = ask(t, f.addr, gov, "udp", chaosQuestion("capcut.com.explain.dnsfence."))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		assert.Contains(t, r.String(), srv.URL+"/pinned.txt line 1")
		assert.NotContains(t, r.String(), "s3cr3t")
		assert.Contains(t, f.handler.Snapshot().Explain(netipMustParse(gov), "capcut.com.", dns.TypeA).String(), pin,
			"dnsfence explain, the operator's, names the whole entry")
		e := f.handler.Snapshot().Explain(netipMustParse(gov), "www.tiktok.com.", dns.TypeA)
		assert.Contains(t, e.String(), fmt.Sprintf("www.tiktok.com. blocked by %s line 1 (sha256 %s): tiktok.com", list, hex.EncodeToString(sum[:])))
	})

	t.Run("unsupported RPZ records are reported and skipped", func(t *testing.T) {
		require.Eventually(t, func() bool { return logged(f.logs, "skipped bad lines", map[string]any{logList: rpzURL}) }, time.Second, 10*time.Millisecond)
		var text string
		for _, e := range f.logs.FilterMessage("skipped bad lines").All() {
			if e.ContextMap()[logList] == rpzURL {
				text = fmt.Sprint(e.ContextMap()["error"])
			}
		}
		for _, owner := range []string{"ns1.example.rpz-nsdname.rpz.example.gov.", "32.1.0.0.127.rpz-client-ip.rpz.example.gov.",
			"local.example.rpz.example.gov.", "rewrite.example.rpz.example.gov."} {
			assert.Contains(t, text, owner)
		}
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "x.example."), "the rest applies")
	})

	t.Run("304 keeps the list", func(t *testing.T) {
		require.Eventually(t, func() bool { return srv.conditional.Load() > 0 }, 5*time.Second, 20*time.Millisecond)
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."))
		assert.NoError(t, f.status(t, list).LastError)
	})

	t.Run("a change is applied", func(t *testing.T) {
		srv.set("/tiktok.txt", names(8, "tiktok.com", "douyin.com", "hypic.com"), "")
		f.eventuallyRcode(t, gov, "hypic.com.", dns.RcodeNameError, 5*time.Second)
		require.Eventually(t, func() bool {
			return logged(f.logs, "list source applied", map[string]any{logList: list, "added": 1, "removed": 0})
		}, time.Second, 10*time.Millisecond)
	})

	for _, tc := range []struct{ mode, why string }{
		{"html", "HTML"},
		{"big", "max_bytes"},
		{"junk", "not one entry"},
		{"down", "503"},
	} {
		t.Run("a copy "+tc.mode+" keeps the last good copy", func(t *testing.T) {
			before := f.status(t, list).Failures
			srv.set("/tiktok.txt", "", tc.mode)
			require.Eventually(t, func() bool { return f.status(t, list).Failures > before }, 5*time.Second, 20*time.Millisecond)
			assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "hypic.com."), "still blocks")
			st := f.status(t, list)
			assert.ErrorContains(t, st.LastError, tc.why)
			ready, why := f.ready(t)
			assert.True(t, ready, "a last good copy is served: %s", why)
			assert.Contains(t, why, "remote list "+list+": serving the last good copy")
			v, _ := metricValue(t, f.registry, "dnsfence_source_failures_total", "source", list)
			assert.GreaterOrEqual(t, v, float64(st.Failures))
			srv.set("/tiktok.txt", "", "")
		})
	}

	t.Run("a pinned copy that changes is refused", func(t *testing.T) {
		srv.set("/pinned.txt", "capcut.com\nother.example\n", "")
		require.Eventually(t, func() bool { return errors.Is(f.status(t, pin).LastError, source.ErrPin) }, 5*time.Second, 20*time.Millisecond)
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "capcut.com."))
		assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "other.example."), "never applied")
	})

	t.Run("a copy that shrinks too much is held until SIGHUP", func(t *testing.T) {
		require.Eventually(t, func() bool { return f.status(t, list).LastError == nil }, 5*time.Second, 20*time.Millisecond)
		srv.set("/tiktok.txt", "tiktok.com\n", "")
		require.Eventually(t, func() bool {
			_, held := f.handler.held.Load(list)
			return held
		}, 5*time.Second, 20*time.Millisecond)
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "douyin.com."), "held: still blocked")
		v, _ := metricValue(t, f.registry, "dnsfence_source_held", "source", list)
		assert.Equal(t, 1.0, v)
		ready, why := f.ready(t)
		assert.True(t, ready)
		assert.Contains(t, why, "held by reload.max_shrink until SIGHUP")
		assert.True(t, logged(f.logs, "list source copy held, keeping the list served: SIGHUP applies it", map[string]any{logList: list}))

		require.NoError(t, f.reloader.Reload(true))
		assert.Equal(t, dns.RcodeSuccess, f.rcode(t, gov, "douyin.com."), "SIGHUP applied it")
		assert.Equal(t, dns.RcodeNameError, f.rcode(t, gov, "tiktok.com."))
		v, _ = metricValue(t, f.registry, "dnsfence_source_held", "source", list)
		assert.Zero(t, v)
	})

	t.Run("a restart with the server down blocks from the disk copy", func(t *testing.T) {
		require.Eventually(t, func() bool {
			_, err := os.Stat(filepath.Join(dir, "cache"))
			return err == nil
		}, 5*time.Second, 20*time.Millisecond)
		f.stop()
		srv.Close()
		g := startSourceFence(t, dir, "127.0.0.1:0")
		assert.Equal(t, dns.RcodeNameError, g.rcode(t, gov, "tiktok.com."), "at once")
		assert.Equal(t, dns.RcodeNameError, g.rcode(t, gov, "capcut.com."))
		assert.Equal(t, dns.RcodeNameError, g.rcode(t, gov, "lemon8.com."))
		v, _ := metricValue(t, g.registry, "dnsfence_source_from_cache", "source", list)
		assert.Equal(t, 1.0, v)
		ready, why := g.ready(t)
		assert.True(t, ready, why)
	})
}

// TestSourceCopyBeforeTheFirstSnapshotIsGuarded: a copy that comes before
// the first snapshot (the disk copy read at start, then the network's,
// while Start still waits for another source) is held by
// reload.max_shrink against the copy held, as it would be a moment later:
// whether the guard applies does not hang on timing.
func TestSourceCopyBeforeTheFirstSnapshotIsGuarded(t *testing.T) {
	log, logs := observed(t)
	h, r, rs, body := beforeFirstSnapshot(log, 0.5)
	const name = firstSnapshotSource

	disk := body(names(99, "tiktok.com"))
	disk.FromCache = true
	require.NoError(t, r.applySource(rs, disk))
	require.Equal(t, 100, rs.list.Len())

	err := r.applySource(rs, body("tiktok.com\n"))
	require.ErrorIs(t, err, ErrShrink)
	assert.Equal(t, 100, rs.list.Len(), "the disk copy stays the one the first snapshot serves")
	require.NotNil(t, rs.pending, "SIGHUP applies it")
	_, held := h.held.Load(name)
	assert.True(t, held)
	assert.True(t, logged(logs, "list source copy held, keeping the list served: SIGHUP applies it", map[string]any{logList: name}))

	require.NoError(t, r.applySource(rs, body(names(79, "tiktok.com"))), "within max_shrink")
	assert.Equal(t, 80, rs.list.Len())
	assert.Nil(t, rs.pending)
	_, held = h.held.Load(name)
	assert.False(t, held)

	// Another cut within max_shrink of the one before, but not of the
	// 100 the disk copy had: the cuts add up as they do after the start.
	err = r.applySource(rs, body(names(44, "tiktok.com")))
	require.ErrorIs(t, err, ErrShrink)
	assert.Contains(t, err.Error(), "80 to 45 entries, 100 at most since the last start or SIGHUP")
	assert.Equal(t, 80, rs.list.Len())
}

// TestSourceCopyBeforeTheFirstSnapshotGuardsOff: with reload.max_shrink 0
// (the guards off) a copy that comes before the first snapshot is taken
// however much it shrank, as it is after: nothing is held, no list is
// marked held for /readyz and dnsfence_source_held.
func TestSourceCopyBeforeTheFirstSnapshotGuardsOff(t *testing.T) {
	log, _ := observed(t)
	h, r, rs, body := beforeFirstSnapshot(log, 0) // the guards off
	const name = firstSnapshotSource
	disk := body(names(99, "tiktok.com"))
	disk.FromCache = true
	require.NoError(t, r.applySource(rs, disk))
	require.NoError(t, r.applySource(rs, body("tiktok.com\n")), "the guards are off")
	assert.Equal(t, 1, rs.list.Len())
	assert.Nil(t, rs.pending)
	_, held := h.held.Load(name)
	assert.False(t, held)
}

// firstSnapshotSource is beforeFirstSnapshot's remote list.
const firstSnapshotSource = "https://lists.example.gov/tiktok.txt"

// beforeFirstSnapshot is a Reloader, with its Handler, that is starting
// (no first snapshot yet) with one remote list source, firstSnapshotSource,
// under a configuration of reload.max_shrink maxShrink; body is a copy of
// that source holding the text s.
func beforeFirstSnapshot(log *zap.Logger, maxShrink float64) (h *Handler, r *Reloader, rs *runningSource, body func(s string) source.Content) {
	h = NewHandler(log, nil, NewMetrics(prometheus.NewRegistry()))
	r = NewReloader(log, h, nil)
	cfg := &config.Config{}
	cfg.Reload.MaxShrink = maxShrink
	rs = &runningSource{src: failedSource{name: firstSnapshotSource}}
	r.mu.Lock()
	r.sources, r.startCfg = map[string]*runningSource{firstSnapshotSource: rs}, cfg
	r.mu.Unlock()
	return h, r, rs, func(s string) source.Content {
		return source.Content{Source: firstSnapshotSource, Kind: source.KindBody, Body: []byte(s)}
	}
}

// startOneURLFence starts a dnsfence whose one policy, for 127.0.0.1,
// blocks the list at the URL list, refreshed every second with its disk
// copy in the folder's cache, forwarding to upstream; dir is its folder.
func startOneURLFence(t *testing.T, upstream, list string) (f *sourceFence, dir string) {
	t.Helper()
	dir = testnet.WriteTree(t, map[string]string{"dnsfence.yaml": oneURLConfig(upstream, list, false)})
	return startSourceFence(t, dir, "127.0.0.1:0"), dir
}

// oneURLConfig is startOneURLFence's configuration, with
// sources.servfail_until_ready set to untilReady and the allow lists
// given, if any.
func oneURLConfig(upstream, list string, untilReady bool, allow ...string) string {
	allowed := ""
	if len(allow) > 0 {
		quoted := make([]string, len(allow))
		for i, a := range allow {
			quoted[i] = fmt.Sprintf("%q", a)
		}
		allowed = "    allow: [" + strings.Join(quoted, ", ") + "]\n"
	}
	return fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
allowed_clients: ["127.0.0.0/28"]
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s"]
%ssources: {refresh: 1s, cache_dir: cache, servfail_until_ready: %t}
`, upstream, list, allowed, untilReady)
}

// TestDiskCopyFailingNamedByReadyz: while a source's disk copy cannot be
// written (a file stands where sources.cache_dir was), /readyz stays 200
// but names the list and why, as it names files it cannot watch: the list
// served still blocks, but a restart while the server is down would start
// without it. Before, only dnsfence_source_cache_ok said so. Once the
// folder is back, the next check writes the copy and the note goes.
func TestDiskCopyFailingNamedByReadyz(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": names(8, "tiktok.com")})
	list := srv.URL + "/tiktok.txt"
	f, dir := startOneURLFence(t, up.addr, list)
	ready, why := f.ready(t)
	require.True(t, ready, why)
	require.NotContains(t, why, list)
	cacheOK := func() float64 {
		v, ok := metricValue(t, f.registry, "dnsfence_source_cache_ok", "source", list)
		require.True(t, ok, "dnsfence_source_cache_ok exported")
		return v
	}
	assert.Equal(t, 1.0, cacheOK())

	cache := filepath.Join(dir, "cache")
	require.NoError(t, os.RemoveAll(cache))
	require.NoError(t, os.WriteFile(cache, []byte("not a folder\n"), 0o600))
	srv.set("/tiktok.txt", names(8, "tiktok.com", "douyin.com"), "")
	f.eventuallyRcode(t, "127.0.0.1", "douyin.com.", dns.RcodeNameError, 5*time.Second)
	require.Eventually(t, func() bool { return f.status(t, list).CacheError != nil }, 5*time.Second, 20*time.Millisecond)
	ready, why = f.ready(t)
	assert.True(t, ready, "the list served still blocks: %s", why)
	assert.Contains(t, why, "remote list "+list+": no disk copy of the copy served in sources.cache_dir")
	assert.Equal(t, 0.0, cacheOK())

	require.NoError(t, os.Remove(cache))
	require.Eventually(t, func() bool {
		ready, why := f.ready(t)
		return ready && !strings.Contains(why, list)
	}, 5*time.Second, 20*time.Millisecond)
}

// TestEmptyListBodyAtStartIsNoCopy: a list server that answers 200 with
// an empty body when dnsfence first starts (no disk copy yet) gives the
// list no copy, as a server that is down does: /readyz is 503 naming it
// and the log says it blocks none of its names. It was taken as the list,
// blocking nothing, with /readyz 200 and an info line "list source
// loaded" with 0 entries. The server's real list is applied as soon as
// it serves it.
func TestEmptyListBodyAtStartIsNoCopy(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/tiktok.txt": ""})
	list := srv.URL + "/tiktok.txt"
	f, _ := startOneURLFence(t, up.addr, list)
	ready, why := f.ready(t)
	assert.False(t, ready, "an empty body is no copy of the list: %s", why)
	assert.Contains(t, why, "remote lists without a copy")
	assert.Contains(t, why, list)
	assert.NotContains(t, why, "SERVFAIL", "sources.servfail_until_ready is off: no policy answers SERVFAIL")
	assert.ErrorIs(t, f.status(t, list).LastError, source.ErrEmpty)
	assert.True(t, logged(f.logs, "list source failed; no copy yet, so its list blocks none of its names", map[string]any{"source": list, "has_copy": false}))

	srv.set("/tiktok.txt", names(8, "tiktok.com"), "")
	f.eventuallyRcode(t, "127.0.0.1", "www.tiktok.com.", dns.RcodeNameError, 5*time.Second)
	require.Eventually(t, func() bool { ready, _ := f.ready(t); return ready }, 5*time.Second, 20*time.Millisecond)
}

// TestSkippedLinesKept: dnsfence_skipped_lines counts every bad line of
// each list, those past the hundred reported one by one included, and
// keeps counting them while the list is served: a remote list's from its
// first copy, a list reused unchanged by a reload (which does not report
// its bad lines again), a copy applied later.
func TestSkippedLinesKept(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/l.txt": "tiktok.com\nbad..name\n"})
	list := srv.URL + "/l.txt"
	many := "capcut.com\n" + strings.Repeat("bad..name\n", 150)
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
listen: ["127.0.0.1:0"]
upstreams: ["%s"]
allowed_clients: ["127.0.0.0/28"]
policies:
  - name: gov
    clients: ["127.0.0.1/32"]
    block: ["%s", "many.txt", "other.txt"]
sources: {refresh: 1s, cache_dir: cache}
`, up.addr, list), "many.txt": many, "other.txt": "douyin.com\n"})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	manyPath, other := filepath.Join(dir, "many.txt"), filepath.Join(dir, "other.txt")
	skipped := func(file string) float64 {
		t.Helper()
		v, ok := metricValue(t, f.registry, "dnsfence_skipped_lines", "file", file)
		require.True(t, ok, file)
		return v
	}
	assert.Equal(t, 1.0, skipped(list), "the remote list's first copy")
	assert.Equal(t, 150.0, skipped(manyPath), "past the hundred reported")
	assert.Equal(t, 0.0, skipped(other))

	require.NoError(t, os.WriteFile(other, []byte("douyin.com\nlemon8.com\nx..y\n"), 0o644))
	reported := len(f.logs.FilterMessage("skipped bad lines").All())
	require.NoError(t, f.reloader.Reload(false))
	assert.Equal(t, 1.0, skipped(list), "a remote list kept by a reload")
	assert.Equal(t, 150.0, skipped(manyPath), "a list reused unchanged")
	assert.Equal(t, 1.0, skipped(other))
	again := f.logs.FilterMessage("skipped bad lines").All()[reported:]
	require.Len(t, again, 1, "only the file that changed is reported")
	assert.Contains(t, fmt.Sprint(again[0].ContextMap()["error"]), other+":3:")
	assert.Equal(t, dns.RcodeNameError, f.rcode(t, "127.0.0.1", "lemon8.com."))

	// A copy applied later: its bad lines replace the first copy's.
	srv.set("/l.txt", "tiktok.com\nbad..name\nx..y\nz..w\n", "")
	require.Eventually(t, func() bool { return skipped(list) == 3 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, 150.0, skipped(manyPath))
}

// TestHeldCopyBadLinesLoggedOnce: the bad lines of a remote list's copy
// are logged once, by its source when the copy is read, also when a guard
// holds the copy and SIGHUP applies it later: the reload reads no copy
// anew (the copy held was logged when it came), and counts its bad lines.
func TestHeldCopyBadLinesLoggedOnce(t *testing.T) {
	up := startUpstream(t, nil)
	srv := startListServer(t, map[string]string{"/l.txt": names(40, "tiktok.com")})
	list := srv.URL + "/l.txt"
	f, _ := startOneURLFence(t, up.addr, list)
	badLines := func() int {
		n := 0
		for _, e := range f.logs.FilterMessage("skipped bad lines").All() {
			if strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "held..bad") {
				n++
			}
		}
		return n
	}
	srv.set("/l.txt", "tiktok.com\nheld..bad\n", "")
	require.Eventually(t, func() bool {
		_, held := f.handler.held.Load(list)
		return held
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, 1, badLines(), "logged by the source as it read the copy")

	require.NoError(t, f.reloader.Reload(true))
	assert.Equal(t, dns.RcodeSuccess, f.rcode(t, "127.0.0.1", "tracker1.example."), "SIGHUP applied the copy held")
	assert.Equal(t, 1, badLines(), "not logged again by the reload that applies it")
	v, ok := metricValue(t, f.registry, "dnsfence_skipped_lines", "file", list)
	require.True(t, ok)
	assert.Equal(t, 1.0, v)
}
