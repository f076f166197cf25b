package source

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// listServer is an HTTP server in the test whose answer can change.
type listServer struct {
	*httptest.Server
	mu          sync.Mutex
	body        []byte
	contentType string
	etag        string
	lastMod     string
	// conditional counts the requests that carried a validator, by
	// header; served counts 200 answers, notModified 304 answers.
	conditional map[string]int
	served      int
	notModified int
}

func newListServer(t *testing.T, body string) *listServer {
	t.Helper()
	s := &listServer{body: []byte(body), contentType: "text/plain; charset=utf-8", conditional: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *listServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
	if inm != "" {
		s.conditional["If-None-Match"]++
	}
	if ims != "" {
		s.conditional["If-Modified-Since"]++
	}
	if (s.etag != "" && inm == s.etag) || (s.etag == "" && s.lastMod != "" && ims == s.lastMod) {
		s.notModified++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if s.etag != "" {
		w.Header().Set("ETag", s.etag)
	}
	if s.lastMod != "" {
		w.Header().Set("Last-Modified", s.lastMod)
	}
	w.Header().Set("Content-Type", s.contentType)
	s.served++
	w.Write(s.body)
}

func (s *listServer) set(fn func(s *listServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

func (s *listServer) counts() (served, notModified int, conditional map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := map[string]int{}
	for k, v := range s.conditional {
		c[k] = v
	}
	return s.served, s.notModified, c
}

func testOptions(t *testing.T) Options {
	return Options{Refresh: 50 * time.Millisecond, CacheDir: t.TempDir(), MaxBytes: 1 << 20, Timeout: 5 * time.Second}
}

func TestURLConditionalGet(t *testing.T) {
	for _, tc := range []struct {
		name, etag, lastMod, header string
	}{
		{name: "etag", etag: `"v1"`, header: "If-None-Match"},
		{name: "last-modified", lastMod: "Mon, 02 Jan 2006 15:04:05 GMT", header: "If-Modified-Since"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newListServer(t, "tiktok.com\n")
			srv.set(func(s *listServer) { s.etag, s.lastMod = tc.etag, tc.lastMod })
			src, err := NewURL(srv.URL+"/tiktok.txt", testOptions(t))
			require.NoError(t, err)
			rec := run(t, src)

			c := rec.waitCount(t, 1)
			assert.Equal(t, KindBody, c.Kind)
			assert.Equal(t, "tiktok.com\n", string(c.Body))
			assert.Equal(t, sha256.Sum256([]byte("tiktok.com\n")), c.SHA256)
			assert.Equal(t, tc.etag, c.ETag)
			assert.Equal(t, tc.lastMod, c.LastModified)
			assert.False(t, c.FromCache)

			// The next polls are answered 304 and deliver nothing.
			require.Eventually(t, func() bool { _, nm, _ := srv.counts(); return nm >= 3 }, waitFor, tick)
			served, _, cond := srv.counts()
			assert.Equal(t, 1, served)
			assert.GreaterOrEqual(t, cond[tc.header], 3, "each poll after the first is conditional")
			assert.Equal(t, 1, rec.count(), "a 304 delivers nothing")
			st := src.Status()
			assert.True(t, st.HasContent)
			assert.NoError(t, st.LastError)
			assert.WithinDuration(t, time.Now(), st.LastSuccess, time.Second)
			assert.Equal(t, len("tiktok.com\n"), st.Bytes)

			// A changed list is fetched and delivered.
			srv.set(func(s *listServer) {
				s.body = []byte("tiktok.com\nbytedance.com\n")
				if s.etag != "" {
					s.etag = `"v2"`
				} else {
					s.lastMod = "Tue, 03 Jan 2006 15:04:05 GMT"
				}
			})
			c = rec.waitCount(t, 2)
			assert.Equal(t, "tiktok.com\nbytedance.com\n", string(c.Body))
			assert.Equal(t, 2, rec.count())
		})
	}
}

// TestURLUnchangedBodyNotRedelivered: a server that gives no validators
// answers every poll 200 with the same body; it is not delivered again.
func TestURLUnchangedBodyNotRedelivered(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	rec.waitCount(t, 1)
	require.Eventually(t, func() bool { served, _, _ := srv.counts(); return served >= 4 }, waitFor, tick)
	_, _, cond := srv.counts()
	assert.Empty(t, cond, "no validator to send")
	assert.Equal(t, 1, rec.count(), "the same bytes are not delivered again")
	waitStatus(t, src, func(st Status) bool { return st.LastError == nil && st.HasContent })
}

// TestURLNotModifiedWithoutValidatorsFails: a server that gave no ETag
// and no Last-Modified is asked unconditionally, so its 304 (a broken
// server or proxy) cannot mean "unchanged": each is a failed fetch, the
// copy held is kept, and the list is fetched again once the server
// answers 200.
func TestURLNotModifiedWithoutValidatorsFails(t *testing.T) {
	var notModified atomic.Bool
	var conditional, answered304 atomic.Int32
	body := atomic.Pointer[string]{}
	body.Store(new("tiktok.com\n"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
			conditional.Add(1)
		}
		if notModified.Load() {
			answered304.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(*body.Load()))
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	rec.waitCount(t, 1)

	notModified.Store(true)
	require.Eventually(t, func() bool { return answered304.Load() >= 1 && src.Status().ConsecutiveFailures >= 2 },
		waitFor, tick, "waiting for the 304s to be counted as failures")
	st := src.Status()
	require.ErrorIs(t, st.LastError, ErrStatus)
	assert.ErrorContains(t, st.LastError, "304 Not Modified to a request without validators")
	assert.Contains(t, st.LastError.Error(), srv.URL)
	assert.True(t, st.HasContent, "the copy held is kept")
	assert.Equal(t, 1, rec.count())
	assert.Zero(t, conditional.Load(), "no validator to send")

	// Fetch (check -fetch) asks unconditionally too.
	_, err = src.Fetch(t.Context())
	assert.ErrorContains(t, err, "304 Not Modified to a request without validators")

	// The list changes and the server answers 200 again: fetched and
	// delivered, and the failures end.
	body.Store(new("tiktok.com\nbytedance.com\n"))
	notModified.Store(false)
	c := rec.waitCount(t, 2)
	assert.Equal(t, "tiktok.com\nbytedance.com\n", string(c.Body))
	waitStatus(t, src, func(st Status) bool { return st.LastError == nil && st.ConsecutiveFailures == 0 })
}

func TestURLRefused(t *testing.T) {
	good := "tiktok.com\n"
	big := strings.Repeat("a.example\n", 200) // 2000 bytes; the limit below is 1000
	for _, tc := range []struct {
		name        string
		body        string
		contentType string
		pin         string // the pin in the entry; empty: none
		want        error
	}{
		{name: "pin mismatch", body: "tiktok.com\nevil\n", pin: hex.EncodeToString(sha256.New().Sum(nil)), want: ErrPin},
		{name: "html content type", body: "tiktok.com\n", contentType: "text/html; charset=utf-8", want: ErrHTML},
		{name: "xhtml content type", body: "tiktok.com\n", contentType: "application/xhtml+xml", want: ErrHTML},
		{name: "html doctype", body: "<!DOCTYPE html><html><body>Sign in</body></html>", want: ErrHTML},
		{name: "html after bom and space", body: "\ufeff \r\n\t<HTML><head></head></html>", want: ErrHTML},
		{name: "html tag", body: "<html>\ntiktok.com\n</html>", want: ErrHTML},
		{name: "binary nul", body: "tiktok.com\n\x00\x01\x02", want: ErrBinary},
		{name: "gzip bytes", body: "\x1f\x8b\x08\x00\x00\x00\x00\x00", want: ErrBinary},
		{name: "invalid utf-8", body: "tiktok.com\n\xff\xfe\n", want: ErrBinary},
		{name: "oversized", body: big, want: ErrTooBig},
		{name: "empty", body: "", want: ErrEmpty},
		{name: "blank lines", body: "\n\r\n \t\n", want: ErrEmpty},
		{name: "byte order mark alone", body: "\ufeff\n", want: ErrEmpty},
		{name: "not found", body: "", want: ErrStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newListServer(t, good)
			entry := srv.URL + "/list.txt"
			if tc.pin != "" {
				// The pin of the good body, so the first copy is accepted.
				sum := sha256.Sum256([]byte(good))
				entry += "#sha256=" + hex.EncodeToString(sum[:])
			}
			opt := testOptions(t)
			opt.MaxBytes = 1000
			src, err := NewURL(entry, opt)
			require.NoError(t, err)
			rec := run(t, src)
			require.Equal(t, good, string(rec.waitCount(t, 1).Body))

			srv.set(func(s *listServer) {
				s.body = []byte(tc.body)
				if tc.contentType != "" {
					s.contentType = tc.contentType
				}
				if tc.want == ErrStatus {
					s.Config.Handler = http.NotFoundHandler()
				}
			})
			st := waitError(t, src, tc.want)
			assert.Contains(t, st.LastError.Error(), srv.URL+"/list.txt", "the error names the URL")
			assert.Positive(t, st.Failures)
			assert.True(t, st.HasContent, "the last good copy stays")
			assert.Equal(t, sha256.Sum256([]byte(good)), st.SHA256)
			assert.Equal(t, 1, rec.count(), "a refused body is never delivered")

			// Nor is a refused body kept as the disk copy: a restart
			// delivers the good one.
			again, err := NewURL(entry, opt)
			require.NoError(t, err)
			c := run(t, again).waitCount(t, 1)
			assert.True(t, c.FromCache)
			assert.Equal(t, good, string(c.Body))
		})
	}
}

func TestURLRefusedAtStartLeavesNoContent(t *testing.T) {
	srv := newListServer(t, "<!doctype html><title>Portal</title>")
	src, err := NewURL(srv.URL+"/list.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	st := waitError(t, src, ErrHTML)
	assert.False(t, st.HasContent)
	assert.Equal(t, []string{src.Name()}, Missing([]Source{src}))
	assert.Equal(t, 0, rec.count())
}

// TestURLEmptyBodyRefused: a 200 with an empty body (a failed upload, a
// generator that wrote nothing) is no copy: at a first start the source
// has none, as when its server is down, so /readyz names it (Missing)
// where the empty list was served as the list, blocking nothing, with
// /readyz 200. Pi-hole's gravity takes an empty file the same way ("using
// cached one"). A list of only comments is a list, and empty.
func TestURLEmptyBodyRefused(t *testing.T) {
	srv := newListServer(t, "")
	src, err := NewURL(srv.URL+"/list.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	st := waitError(t, src, ErrEmpty)
	assert.Contains(t, st.LastError.Error(), "body is empty, not a list (0 bytes)")
	assert.False(t, st.HasContent)
	assert.Equal(t, []string{src.Name()}, Missing([]Source{src}))
	assert.Equal(t, 0, rec.count())

	srv.set(func(s *listServer) { s.body = []byte("# no names yet\n") })
	c := rec.waitCount(t, 1)
	assert.Equal(t, "# no names yet\n", string(c.Body))
	assert.Empty(t, Missing([]Source{src}))

	// Nor is an empty disk copy (kept before empty bodies were refused)
	// delivered at a restart with the server down.
	opt := testOptions(t)
	entry := srv.URL + "/old.txt"
	require.NoError(t, writeCache(cachePath(opt.CacheDir, entry), cacheMeta{Source: entry, Kind: "body", Fetched: time.Now()}, nil))
	srv.Close()
	restarted, err := NewURL(entry, opt)
	require.NoError(t, err)
	again := run(t, restarted)
	require.Eventually(t, func() bool { return errors.Is(restarted.Status().CacheError, ErrEmpty) }, waitFor, tick,
		"status: %+v", restarted.Status())
	assert.Equal(t, 0, again.count())
	assert.False(t, restarted.Status().HasContent)
}

func TestURLPinAccepted(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	sum := sha256.Sum256([]byte("tiktok.com\n"))
	src, err := NewURL(srv.URL+"/l.txt#sha256="+strings.ToUpper(hex.EncodeToString(sum[:])), testOptions(t))
	require.NoError(t, err)
	c := run(t, src).waitCount(t, 1)
	assert.Equal(t, sum, c.SHA256)
	assert.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), c.Version())
	assert.Equal(t, src.Name(), src.Status().Name)
	assert.Equal(t, KindBody, src.Status().Kind)
}

// TestURLOversizedNotReadPastLimit serves a body far over the limit, with
// and without a Content-Length, and checks it is refused without being
// read: the server manages to write little more than the limit and the
// socket buffers before the client hangs up.
func TestURLOversizedNotReadPastLimit(t *testing.T) {
	const limit = 64 << 10
	const total = 1 << 30 // 1 GiB, were it all read
	for _, tc := range []struct {
		name          string
		contentLength bool
	}{
		{name: "chunked"},
		{name: "content-length", contentLength: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var written atomic.Int64
			done := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				if tc.contentLength {
					w.Header().Set("Content-Length", strconv.Itoa(total))
				}
				chunk := []byte(strings.Repeat("a.example\n", 6554))
				for written.Load() < total {
					n, err := w.Write(chunk)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			t.Cleanup(srv.Close)
			opt := testOptions(t)
			opt.MaxBytes = limit
			src, err := NewURL(srv.URL+"/huge.txt", opt)
			require.NoError(t, err)
			_, err = src.Fetch(t.Context())
			require.ErrorIs(t, err, ErrTooBig)
			if tc.contentLength {
				assert.ErrorContains(t, err, fmt.Sprintf("Content-Length %d > %d", total, limit), "refused by its Content-Length, unread")
			}
			select {
			case <-done:
			case <-time.After(waitFor):
				t.Fatal("the server is still writing: the client did not hang up")
			}
			assert.Less(t, written.Load(), int64(32<<20), "the body was read far past the limit")
		})
	}
}

func TestURLRedirects(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/r/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			fmt.Fprintln(w, "tiktok.com")
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/r/%d", n-1), http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		redirects int
		want      error
	}{
		{redirects: 0},
		{redirects: 5},
		{redirects: 6, want: ErrRedirects},
		{redirects: 20, want: ErrRedirects},
	} {
		t.Run(strconv.Itoa(tc.redirects), func(t *testing.T) {
			src, err := NewURL(fmt.Sprintf("%s/r/%d", srv.URL, tc.redirects), testOptions(t))
			require.NoError(t, err)
			c, err := src.Fetch(t.Context())
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				assert.Contains(t, err.Error(), src.Name())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "tiktok.com\n", string(c.Body))
		})
	}
}

// TestURLRedirectOffLoopbackHTTPRefused: an http:// entry on loopback
// redirected to http:// off loopback is refused for that, not as
// "refusing to leave https": the chain never was https.
func TestURLRedirectOffLoopbackHTTPRefused(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("http://192.0.2.1/list.txt", http.StatusFound))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	_, err = src.Fetch(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "to http://192.0.2.1/list.txt: http:// is only for loopback hosts")
	assert.NotContains(t, err.Error(), "https")
}

func TestURLServerDownKeepsCopy(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	opt := testOptions(t)
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	rec := run(t, src)
	rec.waitCount(t, 1)
	srv.Close()

	require.Eventually(t, func() bool { return src.Status().ConsecutiveFailures >= 2 }, waitFor, tick)
	st := src.Status()
	require.Error(t, st.LastError)
	assert.Contains(t, st.LastError.Error(), srv.URL)
	assert.True(t, st.HasContent)
	assert.True(t, st.LastAttempt.After(st.LastSuccess), "asked since, in vain")
	assert.Equal(t, 1, rec.count())
	assert.Equal(t, "tiktok.com\n", string(rec.last().Body))
}

func TestURLRestartFromCacheWithServerDown(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	srv.set(func(s *listServer) { s.etag = `"abc"` })
	opt := testOptions(t)
	opt.Refresh = time.Hour
	entry := srv.URL + "/l.txt"
	first, err := NewURL(entry, opt)
	require.NoError(t, err)
	fetched := run(t, first).waitCount(t, 1).Fetched
	waitFile(t, cachePath(opt.CacheDir, entry))
	srv.Close()

	// A new source (a restart) with the server down delivers the disk
	// copy at once, with its validators.
	second, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec := run(t, second)
	c := rec.waitCount(t, 1)
	assert.True(t, c.FromCache)
	assert.Equal(t, "tiktok.com\n", string(c.Body))
	assert.Equal(t, `"abc"`, c.ETag)
	assert.True(t, c.Fetched.Equal(fetched), "the disk copy keeps its fetch time")
	require.Eventually(t, func() bool { return second.Status().LastError != nil }, waitFor, tick)
	st := second.Status()
	assert.True(t, st.HasContent)
	assert.True(t, st.FromCache)
	assert.Empty(t, Missing([]Source{second}))
}

// etagServer serves one list whose ETag may change while its body does
// not, as a CDN's can: a request naming an ETag of accept gets a 304 that
// names etag; any other gets the body, with etag.
type etagServer struct {
	*httptest.Server
	mu                  sync.Mutex
	etag                string
	lastMod             string // given with etag when set
	accept              []string
	served, notModified atomic.Int32
}

func newETagServer(t *testing.T, body string) *etagServer {
	s := &etagServer{etag: `"v1"`, accept: []string{`"v1"`}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		etag, lastMod, ok := s.etag, s.lastMod, slices.Contains(s.accept, r.Header.Get("If-None-Match"))
		s.mu.Unlock()
		w.Header().Set("ETag", etag)
		if lastMod != "" {
			w.Header().Set("Last-Modified", lastMod)
		}
		if ok {
			s.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		s.served.Add(1)
		w.Write([]byte(body))
	}))
	t.Cleanup(s.Close)
	return s
}

// set makes etag the server's ETag, answering 304 to those of accept.
func (s *etagServer) set(etag string, accept ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.etag, s.accept = etag, accept
}

// setLastModified makes lm the Last-Modified the server gives.
func (s *etagServer) setLastModified(lm string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastMod = lm
}

// TestURLNotModifiedValidatorsKeptOnDisk: a 304 that names a new ETag (a
// CDN that changed its validator, not the list) is checked with one whole
// fetch (TestURLNotModifiedWithAnotherETagIsFetched), whose same body
// updates the disk copy's validators and the status, so that a restart
// asks with the server's newest one rather than one it may no longer
// match (a whole download instead of a 304).
func TestURLNotModifiedValidatorsKeptOnDisk(t *testing.T) {
	srv := newETagServer(t, "tiktok.com\n")
	opt := testOptions(t)
	entry := srv.URL + "/l.txt"
	first, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec := run(t, first)
	assert.Equal(t, `"v1"`, rec.waitCount(t, 1).ETag)
	srv.set(`"v2"`, `"v1"`, `"v2"`)
	require.Eventually(t, func() bool {
		meta, _, err := readCache(cachePath(opt.CacheDir, entry), entry, "body")
		return err == nil && meta.ETag == `"v2"` && srv.notModified.Load() >= 2
	}, waitFor, tick, "the disk copy takes the 304's ETag")
	assert.Equal(t, 1, rec.count(), "a 304 delivers nothing")
	assert.Equal(t, `"v2"`, first.Status().Version, "the status reports the newest validator")

	// A restart delivers the disk copy with the new ETag, and its first
	// request, with "v2", is answered 304 (the old "v1" no longer would be).
	srv.set(`"v2"`, `"v2"`)
	served := srv.served.Load()
	second, err := NewURL(entry, opt)
	require.NoError(t, err)
	assert.Equal(t, `"v2"`, run(t, second).waitCount(t, 1).ETag)
	require.Eventually(t, func() bool { return second.Status().LastSuccess.After(time.Now().Add(-time.Second)) }, waitFor, tick)
	assert.EqualValues(t, 2, served, "two whole downloads by the first source: the list, and the check of the 304 naming \"v2\"")
	assert.Equal(t, served, srv.served.Load(), "none by the second")
}

// TestURLDiskCopyWrittenAgainAfterAFailedWrite: while the disk copy cannot
// be written (a directory stands where the file goes, which fails the
// rename even for root), a 304 names a new ETag; once the folder is
// writable again, the next unchanged poll writes the copy with it, and
// CacheError (dnsfence_source_cache_ok) clears, without waiting for the
// list to change.
func TestURLDiskCopyWrittenAgainAfterAFailedWrite(t *testing.T) {
	srv := newETagServer(t, "tiktok.com\n")
	opt := testOptions(t)
	core, logs := observer.New(zapcore.WarnLevel)
	opt.Log = zap.New(core)
	entry := srv.URL + "/l.txt"
	src, rec, path := deliveredAndKept(t, entry, opt)
	const writeFailed = "list source: keeping the disk copy failed"
	assert.Zero(t, logs.FilterMessage(writeFailed).Len(), "a write that succeeded")

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Mkdir(path, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(path, "x"), nil, 0o644))
	srv.set(`"v2"`, `"v1"`, `"v2"`)
	waitStatus(t, src, func(st Status) bool { return st.CacheError != nil })
	require.Eventually(t, func() bool { return logs.FilterMessage(writeFailed).Len() > 0 }, waitFor, tick)
	assert.Contains(t, logs.FilterMessage(writeFailed).All()[0].ContextMap()["error"], path)

	require.NoError(t, os.RemoveAll(path))
	require.Eventually(t, func() bool {
		meta, _, err := readCache(path, entry, "body")
		return err == nil && meta.ETag == `"v2"`
	}, waitFor, tick, "the disk copy is written once the folder is writable again")
	waitStatus(t, src, func(st Status) bool { return st.CacheError == nil })
	assert.Equal(t, 1, rec.count(), "nothing delivered again")
}

// TestURLNewValidatorsTakenAtOnce: an unchanged list whose validators
// change (a 304 naming a new Last-Modified, the same body with a new
// ETag) has them in the status and in the disk copy from the poll that
// brought them; a poll that brings none (a 304 naming those asked
// about) writes no disk copy. The polls are woken one at a time (the
// refresh is an hour).
func TestURLNewValidatorsTakenAtOnce(t *testing.T) {
	srv := newETagServer(t, "tiktok.com\n")
	older := time.Now().Add(-2 * time.Hour).UTC().Format(http.TimeFormat)
	newer := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	srv.setLastModified(older)
	opt := testOptions(t)
	opt.Refresh = time.Hour
	entry := srv.URL + "/l.txt"
	src, rec, path := deliveredAndKept(t, entry, opt)
	written, err := os.Stat(path)
	require.NoError(t, err)
	// poll wakes the source, waits for its poll to end, and returns the
	// disk copy's metadata and whether the poll wrote it.
	poll := func() (meta cacheMeta, rewritten bool) {
		t.Helper()
		since := time.Now()
		src.Wake()
		waitStatus(t, src, func(st Status) bool { return st.LastSuccess.After(since) })
		meta, _, err := readCache(path, entry, "body")
		require.NoError(t, err)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		rewritten, written = !os.SameFile(fi, written), fi
		return meta, rewritten
	}

	_, rewritten := poll()
	assert.False(t, rewritten, "a 304 naming the validators held")

	srv.set(`"v2"`, `"v1"`, `"v2"`) // a 304 naming "v2": fetched whole, the same body
	meta, rewritten := poll()
	assert.True(t, rewritten)
	assert.Equal(t, `"v2"`, meta.ETag)
	assert.Equal(t, `"v2"`, src.Status().Version)

	srv.setLastModified(newer) // a 304 to "v2" naming a newer time
	meta, rewritten = poll()
	assert.True(t, rewritten)
	assert.Equal(t, `"v2"`, meta.ETag)
	assert.Equal(t, newer, meta.LastModified)

	_, rewritten = poll()
	assert.False(t, rewritten, "a 304 naming the validators held")
	assert.Equal(t, 1, rec.count(), "nothing delivered again")
	assert.EqualValues(t, 2, srv.served.Load(), "the list, and the check of the 304 naming \"v2\"")
}

// TestURLWakeDuringAPollKept: a Wake that comes while Run is not waiting
// (a poll under way; here, before the first) is kept for the wait after
// it, which ends at once: a reload applied while the source was fetching
// still gets the poll Wake asks for. The refresh is an hour, so a second
// request comes of the Wake alone.
func TestURLWakeDuringAPollKept(t *testing.T) {
	srv := newETagServer(t, "tiktok.com\n")
	opt := testOptions(t)
	opt.Refresh = time.Hour
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	src.Wake()
	rec := run(t, src)
	rec.waitCount(t, 1)
	require.Eventually(t, func() bool { return srv.notModified.Load() == 1 }, waitFor, tick,
		"no second request: the Wake asked before the first poll ended was lost")
	assert.EqualValues(t, 1, srv.served.Load())
	assert.Equal(t, 1, rec.count(), "an unchanged list is not delivered again")
}

// TestURLWakeAlreadyAskedReturns: a Wake while one is still pending (two
// SIGHUPs applying the source's copy while a poll is under way) returns at
// once, the poll already asked for: it never blocks the reload that calls
// it.
func TestURLWakeAlreadyAskedReturns(t *testing.T) {
	src, err := NewURL("https://127.0.0.1:1/l.txt", testOptions(t))
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Wake()
		src.Wake()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a second Wake, with no Run taking the first, blocked")
	}
}

// TestStaleTempFilesRemoved: a process stopped mid-write (a crash, a kill
// -9) leaves the temporary files of a disk copy behind (a zone's records,
// .payload-*, and the copy, .tmp-*), tens of megabytes for a zone, and
// nothing removed them: a cache folder kept for years filled up. A write
// of a copy removes those last written over an hour ago, and leaves a
// recent one (another source, or another dnsfence sharing the folder, may
// be writing it) and files of other names.
func TestStaleTempFilesRemoved(t *testing.T) {
	srv := newETagServer(t, "tiktok.com\n")
	opt := testOptions(t)
	require.NoError(t, os.MkdirAll(opt.CacheDir, 0o750))
	stale := filepath.Join(opt.CacheDir, ".tmp-123")
	stalePayload := filepath.Join(opt.CacheDir, ".payload-789")
	recent := filepath.Join(opt.CacheDir, ".tmp-456")
	recentPayload := filepath.Join(opt.CacheDir, ".payload-012")
	other := filepath.Join(opt.CacheDir, "notes.txt")
	for _, f := range []string{stale, stalePayload, recent, recentPayload, other} {
		require.NoError(t, os.WriteFile(f, []byte("half a copy"), 0o600))
	}
	old := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(stale, old, old))
	require.NoError(t, os.Chtimes(stalePayload, old, old))
	require.NoError(t, os.Chtimes(other, old, old))
	entry := srv.URL + "/l.txt"
	src, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec := run(t, src)
	rec.waitCount(t, 1)
	waitFile(t, cachePath(opt.CacheDir, entry))
	assert.NoFileExists(t, stale)
	assert.NoFileExists(t, stalePayload, "a zone's records left by a write stopped half way")
	assert.FileExists(t, recent)
	assert.FileExists(t, recentPayload)
	assert.FileExists(t, other)
}

func TestURLCorruptCacheIgnored(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	opt := testOptions(t)
	entry := srv.URL + "/l.txt"
	_, _, path := deliveredAndKept(t, entry, opt)
	srv.Close()
	require.NoError(t, corrupt(path))

	core, logs := observer.New(zapcore.WarnLevel)
	opt.Log = zap.New(core)
	second, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec := run(t, second)
	require.Eventually(t, func() bool { return second.Status().CacheError != nil }, waitFor, tick)
	assert.Contains(t, second.Status().CacheError.Error(), "does not match its SHA-256")
	require.Eventually(t, func() bool { return logs.FilterMessage("list source: disk copy not used").Len() > 0 }, waitFor, tick,
		"the copy refused is logged")
	assert.Equal(t, 0, rec.count())
	assert.False(t, second.Status().HasContent)
}

// TestURLWithoutCacheDirKeepsNoDiskCopy: with no cache folder
// (Options.CacheDir empty) a source reads no disk copy and writes none,
// not one in the working directory, where an empty folder name puts a
// path: a copy found there is neither delivered nor replaced.
func TestURLWithoutCacheDirKeepsNoDiskCopy(t *testing.T) {
	t.Chdir(t.TempDir())
	srv := newListServer(t, "tiktok.com\n")
	entry := srv.URL + "/l.txt"
	stray := cachePath("", entry)
	require.NoError(t, writeCache(stray, cacheMeta{Source: entry, Kind: "body", Fetched: time.Now()}, []byte("douyin.com\n")))
	opt := testOptions(t)
	opt.CacheDir = ""
	src, err := NewURL(entry, opt)
	require.NoError(t, err)
	_, err = Cached(src)
	require.ErrorIs(t, err, ErrNoCopy)
	rec := &receiver{}
	stop := runWith(t, src, rec)
	c := rec.waitCount(t, 1)
	assert.Equal(t, "tiktok.com\n", string(c.Body), "the copy in the working directory is not read")
	assert.False(t, c.FromCache)
	stop() // Run returns after the copy it delivered would have been written
	_, body, err := readCache(stray, entry, "body")
	require.NoError(t, err)
	assert.Equal(t, "douyin.com\n", string(body), "nor written there")
	assert.NoError(t, src.Status().CacheError)
}

// TestURLDiskCopyCheckedAsABody: a disk copy is delivered only as a body
// fetched would be: one written before the URL was pinned, of another
// SHA-256 than its pin, is refused, and so is one over a max_bytes
// lowered since it was written; neither is served with the server down.
func TestURLDiskCopyCheckedAsABody(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	opt := testOptions(t)
	entry := srv.URL + "/l.txt"
	first, err := NewURL(entry, opt)
	require.NoError(t, err)
	run(t, first).waitCount(t, 1)
	waitFile(t, cachePath(opt.CacheDir, entry))
	srv.Close()

	other := sha256.Sum256([]byte("douyin.com\n"))
	small := opt
	small.MaxBytes = 4
	for _, tc := range []struct {
		name  string
		entry string
		opt   Options
		want  error
	}{
		{"pinned since", entry + "#sha256=" + hex.EncodeToString(other[:]), opt, ErrPin},
		{"max_bytes lowered since", entry, small, ErrTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewURL(tc.entry, tc.opt)
			require.NoError(t, err)
			rec := run(t, src)
			require.Eventually(t, func() bool { return src.Status().CacheError != nil }, waitFor, tick)
			assert.ErrorIs(t, src.Status().CacheError, tc.want)
			assert.Equal(t, 0, rec.count())
			assert.False(t, src.Status().HasContent)
		})
	}

	// A copy of max_bytes exactly is taken, as a body of that size is.
	atLimit := opt
	atLimit.MaxBytes = int64(len("tiktok.com\n"))
	src, err := NewURL(entry, atLimit)
	require.NoError(t, err)
	assert.True(t, run(t, src).waitCount(t, 1).FromCache)
}

// TestURLDiskCopyNotARegularFile: a named pipe (or a device) where the
// disk copy goes is refused unread, as a corrupt copy is, the list is
// fetched from its server, and its copy replaces the pipe. Opened as a file, the pipe held the source
// before its first fetch for good: its list blocked none of its names
// with the server up, and nothing was logged.
func TestURLDiskCopyNotARegularFile(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.70.1:0")
	require.NoError(t, err)
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "tiktok.com\n")
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	opt := testOptions(t)
	entry := srv.URL + "/l.txt"
	path := cachePath(opt.CacheDir, entry)
	require.NoError(t, syscall.Mkfifo(path, 0o600))

	src, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec := &receiver{}
	stop := runWith(t, src, rec)
	t.Cleanup(func() {
		// Release a reader stuck in open(2) on the pipe, if any, so
		// that Run can return.
		if f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		stop()
	})
	c := rec.waitCount(t, 1)
	assert.Equal(t, "tiktok.com\n", string(c.Body))
	assert.False(t, c.FromCache)
	// The copy fetched takes the pipe's place.
	waitStatus(t, src, func(st Status) bool { return st.HasContent && st.CacheError == nil })
	_, body, err := readCache(path, entry, "body")
	require.NoError(t, err)
	assert.Equal(t, "tiktok.com\n", string(body))
}

func TestURLRefusedByReceiver(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	opt := testOptions(t)
	entry := srv.URL + "/l.txt"
	src, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec := &receiver{refuse: errors.New("no valid entry")}
	runWith(t, src, rec)

	require.Eventually(t, func() bool { return src.Status().Failures >= 2 }, waitFor, tick)
	st := src.Status()
	assert.False(t, st.HasContent)
	assert.ErrorContains(t, st.LastError, "refused by the reload: no valid entry")
	assert.NoFileExists(t, cachePath(opt.CacheDir, entry), "a refused copy is never kept on disk")

	// Once the receiver accepts, the next poll delivers (unconditionally:
	// nothing was held).
	rec.setRefuse(nil)
	c := rec.waitCount(t, 1)
	assert.Equal(t, "tiktok.com\n", string(c.Body))
	waitFile(t, cachePath(opt.CacheDir, entry))
	waitStatus(t, src, func(st Status) bool { return st.HasContent && st.LastError == nil })
}

// bothNames is the list the refusal tests' server serves first, as "v1".
const bothNames = "tiktok.com\ndouyin.com\n"

// deliveredV1 is a list server serving bothNames with ETag "v1", and a
// URL source of it running until it has delivered that copy to rec.
func deliveredV1(t *testing.T) (srv *listServer, src *URL, rec *receiver) {
	t.Helper()
	srv = newListServer(t, bothNames)
	srv.set(func(s *listServer) { s.etag = `"v1"` })
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec = run(t, src)
	rec.waitCount(t, 1)
	return srv, src, rec
}

// refuseNext has rec refuse the copy the server serves next (douyin.com
// withdrawn, ETag "v2") until src counts the failure.
func refuseNext(t *testing.T, srv *listServer, src Source, rec *receiver) {
	t.Helper()
	rec.setRefuse(errors.New("held: the list shrank"))
	srv.set(func(s *listServer) { s.body, s.etag = []byte("tiktok.com\n"), `"v2"` })
	require.Eventually(t, func() bool { return src.Status().Failures >= 1 }, waitFor, tick)
}

// refuseThenGoBack is refuseNext; then the server goes back to the copy
// served before (bothNames, "v1") and rec accepts again.
func refuseThenGoBack(t *testing.T, srv *listServer, src Source, rec *receiver) {
	t.Helper()
	refuseNext(t, srv, src, rec)
	srv.set(func(s *listServer) { s.body, s.etag = []byte(bothNames), `"v1"` })
	rec.setRefuse(nil) // after the server went back: a poll under way may not deliver "v2" now
}

// TestURLRefusedThenUnchangedOffersTheCopyHeld: after a copy is refused
// (a reload guard holds it), a server that goes back to the copy served
// (a 304 to its validators) gets that copy delivered again, once, so that
// the receiver can drop the one it holds; later polls deliver nothing.
func TestURLRefusedThenUnchangedOffersTheCopyHeld(t *testing.T) {
	srv, src, rec := deliveredV1(t)

	refuseThenGoBack(t, srv, src, rec)

	c := rec.waitCount(t, 2)
	assert.Equal(t, "tiktok.com\ndouyin.com\n", string(c.Body), "the copy held, offered again")
	require.Eventually(t, func() bool { _, nm, _ := srv.counts(); return nm >= 3 }, waitFor, tick)
	assert.Equal(t, 2, rec.count(), "offered once")
	waitStatus(t, src, func(st Status) bool { return st.LastError == nil && st.HasContent })
}

// deliveredAndKept runs a source of entry with opt until it delivered a
// first copy and wrote its disk copy, whose path it returns.
func deliveredAndKept(t *testing.T, entry string, opt Options) (src *URL, rec *receiver, path string) {
	t.Helper()
	src, err := NewURL(entry, opt)
	require.NoError(t, err)
	rec = run(t, src)
	rec.waitCount(t, 1)
	path = cachePath(opt.CacheDir, entry)
	waitFile(t, path)
	return src, rec, path
}

// restartedWithDiskCopy runs a URL source of entry until it has written
// its disk copy into opt.CacheDir and stops it, then returns a new source
// of entry, as a restart makes one: the disk copy is its first delivery.
func restartedWithDiskCopy(t *testing.T, entry string, opt Options) *URL {
	t.Helper()
	first, err := NewURL(entry, opt)
	require.NoError(t, err)
	stop := runWith(t, first, &receiver{})
	waitFile(t, cachePath(opt.CacheDir, entry))
	stop()
	second, err := NewURL(entry, opt)
	require.NoError(t, err)
	return second
}

// TestURLReofferedDiskCopyIsTheServers: a disk copy that the server then
// confirms (a 304) is the server's copy; offered again after a refused
// one, it is not reported as the disk's.
func TestURLReofferedDiskCopyIsTheServers(t *testing.T) {
	srv := newListServer(t, "tiktok.com\ndouyin.com\n")
	srv.set(func(s *listServer) { s.etag = `"v1"` })
	opt := testOptions(t)
	second := restartedWithDiskCopy(t, srv.URL+"/l.txt", opt)
	rec := run(t, second)
	assert.True(t, rec.waitCount(t, 1).FromCache)
	waitStatus(t, second, func(st Status) bool { return !st.FromCache && st.LastError == nil })

	refuseThenGoBack(t, srv, second, rec)
	c := rec.waitCount(t, 2)
	assert.Equal(t, "tiktok.com\ndouyin.com\n", string(c.Body), "the copy held, offered again")
	assert.False(t, c.FromCache, "confirmed by the server before")
}

// TestURLRefusedDiskCopyNotHeld: a disk copy the receiver refuses at a
// restart (a reload guard holds it, a configuration that no longer takes
// it) is not the copy held: the source has no copy, and its next fetch
// asks unconditionally, so that the server's copy is delivered once the
// receiver takes one, though the server answers the disk copy's ETag 304.
// Held, the disk copy would be asked about with its ETag, answered 304
// and never delivered: the list served nothing, the source reported up.
func TestURLRefusedDiskCopyNotHeld(t *testing.T) {
	srv := newListServer(t, "tiktok.com\n")
	srv.set(func(s *listServer) { s.etag = `"v1"` })
	opt := testOptions(t)
	second := restartedWithDiskCopy(t, srv.URL+"/l.txt", opt)
	rec := &receiver{refuse: errors.New("held: the list shrank")}
	runWith(t, second, rec)
	st := waitStatus(t, second, func(st Status) bool { return st.Failures >= 2 })
	assert.False(t, st.HasContent, "a refused disk copy is no copy")
	assert.ErrorContains(t, st.LastError, "refused by the reload: held: the list shrank")

	rec.setRefuse(nil)
	c := rec.waitCount(t, 1)
	assert.Equal(t, "tiktok.com\n", string(c.Body))
	assert.False(t, c.FromCache, "the server's copy")
	waitStatus(t, second, func(st Status) bool { return st.HasContent && st.LastError == nil })
}

// TestURLCopyHeldRefusedAgainOfferedAgain: the copy held, offered again
// after a refused one (TestURLRefusedThenUnchangedOffersTheCopyHeld) and
// refused too (the reload refuses still), is a failure, and is offered
// again at each poll until it is taken, then no more.
func TestURLCopyHeldRefusedAgainOfferedAgain(t *testing.T) {
	srv, src, rec := deliveredV1(t)

	refuseNext(t, srv, src, rec)
	srv.set(func(s *listServer) { s.body, s.etag = []byte(bothNames), `"v1"` })
	_, nm, _ := srv.counts()
	failures := src.Status().Failures
	// A poll of "v2" may be under way: the failures after it are the copy
	// held's, answered 304 and refused again.
	require.Eventually(t, func() bool {
		_, n, _ := srv.counts()
		return n >= nm+2 && src.Status().Failures >= failures+3
	}, waitFor, tick, "status: %+v", src.Status())
	assert.ErrorContains(t, src.Status().LastError, fmt.Sprintf("copy (sha256:%x) refused by the reload", sha256.Sum256([]byte(bothNames))))
	assert.Equal(t, 1, rec.count())

	rec.setRefuse(nil)
	c := rec.waitCount(t, 2)
	assert.Equal(t, bothNames, string(c.Body), "the copy held, offered again")
	_, nm, _ = srv.counts()
	require.Eventually(t, func() bool { _, n, _ := srv.counts(); return n >= nm+3 }, waitFor, tick)
	assert.Equal(t, 2, rec.count(), "taken: offered no more")
	waitStatus(t, src, func(st Status) bool { return st.LastError == nil && st.HasContent })
}

// TestURLDeliveredAfterARefusalNotOfferedAgain: a copy refused by the
// receiver, then a newer one taken: the refusal is over, and the polls
// after it, answered 304, deliver nothing (the copy held is offered again
// only while the copy delivered last is a refused one), as for a zone
// (TestZoneDeliveredAfterARefusalNotOfferedAgain).
func TestURLDeliveredAfterARefusalNotOfferedAgain(t *testing.T) {
	srv, src, rec := deliveredV1(t)

	refuseNext(t, srv, src, rec)
	srv.set(func(s *listServer) { s.body, s.etag = []byte("tiktok.com\ndouyin.com\ncapcut.com\n"), `"v3"` })
	rec.setRefuse(nil)
	assert.Equal(t, "tiktok.com\ndouyin.com\ncapcut.com\n", string(rec.waitCount(t, 2).Body))
	_, nm, _ := srv.counts()
	require.Eventually(t, func() bool { _, n, _ := srv.counts(); return n >= nm+3 }, waitFor, tick)
	assert.Equal(t, 2, rec.count(), "\"v3\", held and unchanged, delivered again")
}

// TestURLStopClosesConnections: when Run returns, the source's idle
// keep-alive connection to the server is closed, not left for the
// transport's idle timeout (90 s) with its goroutines.
func TestURLStopClosesConnections(t *testing.T) {
	var open atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("tiktok.com\n"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := &receiver{}
	stop := runWith(t, src, rec)
	rec.waitCount(t, 1)
	require.Positive(t, open.Load())
	stop()
	assert.Eventually(t, func() bool { return open.Load() == 0 }, 2*time.Second, tick, "connections left open")
}

// TestURLStoppedMidFetchIsNoFailure: a source stopped while a fetch is
// under way (a reload that drops or changes it, a shutdown) ends without
// counting or logging the fetch it cancelled as a failure, which would
// read "list source failed; no copy yet, so its list blocks none of its
// names", at error level, at each such reload.
func TestURLStoppedMidFetchIsNoFailure(t *testing.T) {
	asked := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		<-r.Context().Done() // no answer until the client gives up
	}))
	t.Cleanup(srv.Close)
	core, logs := observer.New(zapcore.WarnLevel)
	opt := testOptions(t)
	opt.Log = zap.New(core)
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	stop := runWith(t, src, &receiver{})
	select {
	case <-asked:
	case <-time.After(waitFor):
		t.Fatal("the server was never asked")
	}
	stop()
	st := src.Status()
	assert.Zero(t, st.Failures, "last error: %v", st.LastError)
	assert.Zero(t, logs.Len(), "logged: %v", logs.All())
}

// TestRedact: the user information of an entry, whatever it holds, is
// replaced; nothing else of the entry changes, and an '@' after the host
// is not user information (RFC 3986 §3.2).
func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@lists.example.gov/l.txt":      "https://xxxxx@lists.example.gov/l.txt",
		"https://token@lists.example.gov/l.txt":        "https://xxxxx@lists.example.gov/l.txt",
		"https://a@b:c@lists.example.gov":              "https://xxxxx@lists.example.gov",
		"HTTPS://user:p w@lists.example.gov/l.txt#x":   "HTTPS://xxxxx@lists.example.gov/l.txt#x",
		"axfr://user:pw@192.0.2.1:53/rpz.example":      "axfr://xxxxx@192.0.2.1:53/rpz.example",
		"https://lists.example.gov/@team/l.txt":        "https://lists.example.gov/@team/l.txt",
		"https://lists.example.gov/l.txt?u=a@b":        "https://lists.example.gov/l.txt?u=a@b",
		"https://lists.example.gov/l.txt#sha256=ab@cd": "https://lists.example.gov/l.txt#sha256=ab@cd",
		"lists/tiktok@2.txt":                           "lists/tiktok@2.txt",
		"https://lists.example.gov/l.txt":              "https://lists.example.gov/l.txt",
	} {
		assert.Equal(t, want, blocklist.RedactURL(in), in)
	}
}

// TestClientName: a remote list as a blocked answer's EDE text names it,
// without user information, query string or fragment; a file path as it is.
func TestClientName(t *testing.T) {
	for in, want := range map[string]string{
		"https://lists.example.gov/l.txt?key=s3cr3t":            "https://lists.example.gov/l.txt",
		"https://lists.example.gov/l.txt?key=s3cr3t#sha256=00":  "https://lists.example.gov/l.txt",
		"https://lists.example.gov/l.txt#sha256=00":             "https://lists.example.gov/l.txt",
		"HTTPS://user:pw@lists.example.gov/l.txt?x=1":           "HTTPS://xxxxx@lists.example.gov/l.txt",
		"http://127.0.0.1:8080/export?token=s3cr3t&format=host": "http://127.0.0.1:8080/export",
		"axfr://192.0.2.1:53/rpz.example":                       "axfr://192.0.2.1:53/rpz.example",
		"https://lists.example.gov/a%3Fb.txt":                   "https://lists.example.gov/a%3Fb.txt",
		"https://lists.example.gov/l.txt":                       "https://lists.example.gov/l.txt",
		"lists/tiktok?.txt":                                     "lists/tiktok?.txt",
		"/etc/dnsfence/lists/tiktok.txt":                        "/etc/dnsfence/lists/tiktok.txt",
	} {
		assert.Equal(t, want, ClientName(in), in)
	}
}

// TestSourceErrorsHideCredentials: every error New returns for an entry
// with user information shows the entry redacted: the refusal of the
// credentials and any other problem found first (a URL that does not
// parse, a scheme, a zone source's form).
func TestSourceErrorsHideCredentials(t *testing.T) {
	const secret = "s3cr3t"
	for _, entry := range []string{
		"https://reader:" + secret + "@lists.example.gov/l.txt",
		"https://" + secret + "@lists.example.gov/l.txt",
		"http://reader:" + secret + "@lists.example.gov/l.txt",
		"https://reader:" + secret + "@lists.example.gov:99999/l.txt",
		"https://reader:" + secret + "\x7f@lists.example.gov/l.txt",
		"https://reader:" + secret + "@lists.example.gov/l.txt#sha256=00",
		"ftp://reader:" + secret + "@lists.example.gov/l.txt",
		"axfr://reader:" + secret + "@192.0.2.1/rpz.example",
		"axfr://reader:" + secret + "@192.0.2.1:0/rpz.example",
		// A '/', '?' or '#' in the password (base64 has '/'), unescaped:
		// url.Parse fails, reading the text before it as HOST:PORT.
		"https://reader:ab/" + secret + "@lists.example.gov/l.txt",
		"https://reader:ab?" + secret + "@lists.example.gov/l.txt",
		"https://reader:ab#" + secret + "@lists.example.gov/l.txt",
		"axfr://reader:ab/" + secret + "@192.0.2.1/rpz.example",
	} {
		t.Run(entry, func(t *testing.T) {
			_, err := New(entry, Options{})
			require.Error(t, err)
			assert.NotContains(t, err.Error(), secret)
			assert.Contains(t, err.Error(), "xxxxx@")
		})
	}
}

func TestNewURLErrors(t *testing.T) {
	for _, tc := range []struct{ entry, want string }{
		{"http://lists.example.gov/l.txt", "only for loopback"},
		{"https://lists.example.gov/l.txt#md5=00", "not #sha256="},
		{"https://lists.example.gov/l.txt#sha256=abcd", "not #sha256="},
		{"https://lists.example.gov/l.txt#" + strings.Repeat("ab", 32), "not #sha256="},
		{"https://lists.example.gov/l.txt#", "not #sha256="},
		{"https:///l.txt", "no host"},
		{"https://:443/l.txt", "no host"},
		{"https://user:pw@lists.example.gov/l.txt", "credentials"},
		{"ftp://lists.example.gov/l.txt", "not a remote source"},
		// No connection is ever made to these: the list would be served
		// empty (or its policy SERVFAIL) for good, where axfr:// and the
		// upstreams refuse the same port at load.
		{"https://lists.example.gov:0/l.txt", "bad port"},
		{"https://lists.example.gov:70000/l.txt", "bad port"},
		{"http://127.0.0.1:65536/l.txt", "bad port"},
		// Nor to hosts no fetch can reach (blocklist.Unusable): every
		// fetch would fail, and the list never load.
		{"https://[::a00:1]/l.txt", "the host ::a00:1 is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291), which no host has; write https://10.0.0.1/l.txt"},
		{"https://[::10.0.0.1]:8443/l.txt", "; write https://10.0.0.1:8443/l.txt"},
		{"https://[fe80::1]/l.txt", "the host fe80::1 is a link-local address, which a connection reaches only through the interface named after it, as in [fe80::1%25eth0]"},
		{"https://224.0.0.1/l.txt", "the host 224.0.0.1 is a multicast address, which no server answers from"},
		{"https://[ff05::1]/l.txt", "is a multicast address"},
		{"https://255.255.255.255/l.txt", "the host 255.255.255.255 is a broadcast address"},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			_, err := New(tc.entry, Options{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	for _, ok := range []string{"http://127.0.0.1:8080/l.txt", "http://[::1]/l.txt", "http://localhost/l.txt", "https://[fe80::1%25eth0]/l.txt", "https://169.254.1.1/l.txt",
		"https://lists.example.gov:1/l.txt", "https://lists.example.gov:65535/l.txt", "https://lists.example.gov:/l.txt",
		"HTTPS://lists.example.gov/l.txt#sha256=" + strings.Repeat("ab", 32)} {
		_, err := New(ok, Options{})
		assert.NoError(t, err, ok)
		assert.True(t, IsRemote(ok), ok)
	}
	// NewURL, called alone, refuses what New sends elsewhere.
	_, err := NewURL("ftp://lists.example.gov/l.txt", Options{})
	assert.ErrorContains(t, err, `scheme "ftp" is not https or http`)
	assert.False(t, IsRemote("lists/tiktok.txt"))
	assert.False(t, IsRemote("https:/x"))
}

// TestURLCutShortRefused: a body that ends in the middle of a line, when
// the copy held ends with a line end, is refused and the copy held kept:
// one a server sends until it closes the connection (no Content-Length,
// not chunked: HTTP sees it complete however short), and one whose
// Content-Length is short of the file (a file served while it is being
// written). Either, cut here, lost 40% of the list, within max_shrink, and
// added the name cut in two. The complete body is delivered at the
// next poll, and a list that never ends with a line end is not refused.
func TestURLCutShortRefused(t *testing.T) {
	const whole = "tiktok.com\ndouyin.com\nbytedance.com\ncapcut.com\nlemon8-app.com\n"
	cut := whole[:strings.Index(whole, "capcut")+4] // "…bytedance.com\ncapc"
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
	}{
		{name: "close-delimited", serve: func(w http.ResponseWriter) {
			conn, bw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n%s", cut)
			bw.Flush()
			conn.Close()
		}},
		{name: "content-length short", serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(len(cut)))
			w.Write([]byte(cut))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cutNow atomic.Bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if cutNow.Load() {
					tc.serve(w)
					return
				}
				w.Write([]byte(whole))
			}))
			t.Cleanup(srv.Close)
			src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
			require.NoError(t, err)
			rec := run(t, src)
			require.Equal(t, whole, string(rec.waitCount(t, 1).Body))

			cutNow.Store(true)
			st := waitError(t, src, ErrCutShort)
			assert.ErrorContains(t, st.LastError, `ending "capc"`)
			assert.Equal(t, sha256.Sum256([]byte(whole)), st.SHA256, "the copy held stays")
			assert.Equal(t, 1, rec.count(), "a body cut short is never delivered")

			cutNow.Store(false)
			waitStatus(t, src, func(st Status) bool { return st.LastError == nil && st.ConsecutiveFailures == 0 })
			assert.Equal(t, 1, rec.count(), "the complete body is the copy held: nothing to deliver")
		})
	}

	// Cut after its first octet, a body is cut short too.
	assert.True(t, cutShort([]byte("t"), []byte(whole)))

	t.Run("a list without a final line end", func(t *testing.T) {
		srv := newListServer(t, "tiktok.com\ndouyin.com")
		src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
		require.NoError(t, err)
		rec := run(t, src)
		rec.waitCount(t, 1)
		srv.set(func(s *listServer) { s.body = []byte("tiktok.com\ndouyin.com\ncapcut.com") })
		assert.Equal(t, "tiktok.com\ndouyin.com\ncapcut.com", string(rec.waitCount(t, 2).Body))
	})
}

// TestSourceFailureLoggedByCopy: a failed fetch is logged at warn level
// while the source holds a copy, which it keeps serving, and at error level
// while it holds none, saying that its list blocks none of its names: the
// log said "keeping the last good copy" of a copy there was not.
func TestSourceFailureLoggedByCopy(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	var up atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("tiktok.com\n"))
	}))
	t.Cleanup(srv.Close)
	opt := testOptions(t)
	opt.Log = zap.New(core)
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	rec := run(t, src)
	const noCopy = "list source failed; no copy yet, so its list blocks none of its names"
	require.Eventually(t, func() bool { return logs.FilterMessage(noCopy).Len() > 0 }, waitFor, tick)
	for _, l := range logs.FilterMessage(noCopy).All() {
		assert.Equal(t, zapcore.ErrorLevel, l.Level)
		assert.Equal(t, false, l.ContextMap()["has_copy"])
	}
	assert.Zero(t, logs.FilterMessage("list source failed; keeping the last good copy").Len())
	assert.Zero(t, logs.FilterMessage("list source: disk copy not used").Len(), "no disk copy yet is no failure")
	assert.NoError(t, src.Status().CacheError)

	up.Store(true)
	rec.waitCount(t, 1)
	up.Store(false)
	const kept = "list source failed; keeping the last good copy"
	require.Eventually(t, func() bool { return logs.FilterMessage(kept).Len() > 0 }, waitFor, tick)
	for _, l := range logs.FilterMessage(kept).All() {
		assert.Equal(t, zapcore.WarnLevel, l.Level)
		assert.Equal(t, true, l.ContextMap()["has_copy"])
	}

	// A zone whose primary does not answer, with no copy: the same.
	primary := testnet.RefusingAddr(t) // held, refusing: no other test process takes it
	zcore, zlogs := observer.New(zapcore.WarnLevel)
	zopt := testOptions(t)
	zopt.Log = zap.New(zcore)
	zsrc, err := New("axfr://"+primary+"/rpz.example.gov", zopt)
	require.NoError(t, err)
	run(t, zsrc)
	const zoneNoCopy = "zone source failed; no copy yet, so its list blocks none of its names"
	require.Eventually(t, func() bool { return zlogs.FilterMessage(zoneNoCopy).Len() > 0 }, waitFor, tick)
	assert.Equal(t, zapcore.ErrorLevel, zlogs.FilterMessage(zoneNoCopy).All()[0].Level)
}

// TestURLStalledBodyFails: a server that sends its headers and part of the
// body, then nothing, fails after Options.Timeout without a byte, counted
// and the copy held kept, not at the ten minutes a whole fetch may take,
// with nothing to see meanwhile; a slow body whose bytes keep coming within
// the timeout is read to its end.
func TestURLStalledBodyFails(t *testing.T) {
	const whole = "tiktok.com\ndouyin.com\n"
	var mode atomic.Int32 // 0 whole, 1 stalled, 2 slow
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 0:
			w.Write([]byte(whole))
		case 1:
			w.Header().Set("Content-Length", strconv.Itoa(len(whole)+len("capcut.com\n")))
			w.Write([]byte(whole))
			w.(http.Flusher).Flush()
			select { // and nothing more
			case <-release:
			case <-r.Context().Done():
			}
		case 2:
			pace := time.NewTicker(150 * time.Millisecond) // a line within the 400 ms timeout each
			defer pace.Stop()
			for _, line := range []string{"tiktok.com\n", "douyin.com\n", "capcut.com\n"} {
				<-pace.C
				w.Write([]byte(line))
				w.(http.Flusher).Flush()
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	opt := testOptions(t)
	opt.Timeout = 400 * time.Millisecond
	src, err := NewURL(srv.URL+"/l.txt", opt)
	require.NoError(t, err)
	rec := run(t, src)
	require.Equal(t, whole, string(rec.waitCount(t, 1).Body))

	mode.Store(1)
	st := waitError(t, src, ErrStalled)
	assert.ErrorContains(t, st.LastError, "no octet of it for 400ms")
	assert.Equal(t, sha256.Sum256([]byte(whole)), st.SHA256, "the copy held stays")
	assert.Equal(t, 1, rec.count())

	mode.Store(2)
	assert.Equal(t, "tiktok.com\ndouyin.com\ncapcut.com\n", string(rec.waitCount(t, 2).Body), "a slow body is read to its end")
}

// TestURLLastModifiedOfTheSameSecondNotUsed: a server that gives
// Last-Modified and no ETag (Go's http.FileServer, Python's http.server)
// and whose list changed again in the second its answer was sent (a
// generator writing the file while it was fetched) gives the same
// Last-Modified for both versions, to the second: asked If-Modified-Since
// that second, it answers 304 for good, and the later version was never
// fetched, until the list changed again. A Last-Modified less than a
// second before the answer's Date is a weak validator (RFC 9110 §8.8.2.2)
// and is not sent back; one at least a second before it is.
func TestURLLastModifiedOfTheSameSecondNotUsed(t *testing.T) {
	const second = "Mon, 02 Jan 2006 15:04:05 GMT"
	const later = "Mon, 02 Jan 2006 15:04:09 GMT"
	var mu sync.Mutex
	body, date := "tiktok.com\n", second
	var ims []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		ims = append(ims, r.Header.Get("If-Modified-Since"))
		w.Header().Set("Date", date)
		w.Header().Set("Last-Modified", second)
		// As Go's and Python's file servers compare, to the second.
		if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !t.Before(mustParseTime(second)) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	c := rec.waitCount(t, 1)
	assert.Equal(t, "tiktok.com\n", string(c.Body))
	assert.Empty(t, c.LastModified, "sent in the second it names: weak")

	// Changed in the same second; every later answer is sent seconds
	// after it.
	mu.Lock()
	body, date = "tiktok.com\nbytedance.com\n", later
	mu.Unlock()
	c = rec.waitCount(t, 2)
	assert.Equal(t, "tiktok.com\nbytedance.com\n", string(c.Body))
	assert.Equal(t, second, c.LastModified, "sent seconds after the second it names: strong")

	// Now asked If-Modified-Since, and answered 304.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ims[len(ims)-1] == second
	}, waitFor, tick)
	assert.Equal(t, 2, rec.count())
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, ims[1], "the first Last-Modified is not sent back")
}

func mustParseTime(s string) time.Time {
	t, err := http.ParseTime(s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestStrongLastModified: a Last-Modified is sent back only when it is
// at least a second before the answer's Date
// (TestURLLastModifiedOfTheSameSecondNotUsed), and never one that does
// not parse, or with no Date to weigh it against.
func TestStrongLastModified(t *testing.T) {
	const lm = "Mon, 02 Jan 2006 15:04:05 GMT"
	for _, tc := range []struct {
		lastModified, date, want string
	}{
		{lm, "Mon, 02 Jan 2006 15:04:06 GMT", lm},
		{lm, "Mon, 02 Jan 2006 16:00:00 GMT", lm},
		{lm, lm, ""},
		{lm, "Mon, 02 Jan 2006 15:04:04 GMT", ""},
		{lm, "", ""},
		{lm, "soon", ""},
		{"", "Mon, 02 Jan 2006 16:00:00 GMT", ""},
		{"last week", "Mon, 02 Jan 2006 16:00:00 GMT", ""},
	} {
		h := http.Header{}
		h.Set("Last-Modified", tc.lastModified)
		h.Set("Date", tc.date)
		assert.Equal(t, tc.want, strongLastModified(h), "Last-Modified %q, Date %q", tc.lastModified, tc.date)
	}
}

// TestURLOlderFileReplacingTheListIsFetched: a list served by a server
// with no ETag (Go's http.FileServer here; Python's http.server too) is
// replaced by a file whose modification time is older than the copy
// held's (a backup put back with `cp -p`, an `rsync -t` or a `tar x` of
// an earlier build): the server answers the If-Modified-Since of the copy
// held 304, as it answers any time at or after the file's, and the list
// was never fetched again (pi-hole/pi-hole#4422: a list edited and
// uploaded, "refuses to see that the list has changed"). The 304 carries
// the file's Last-Modified, which is not the one asked about: the list is
// then fetched whole at once.
func TestURLOlderFileReplacingTheListIsFetched(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "l.txt")
	now := time.Now()
	write := func(content string, mtime time.Time) {
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		require.NoError(t, os.Chtimes(path, mtime, mtime))
	}
	write("tiktok.com\n", now.Add(-time.Hour))
	var conditional atomic.Int64
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-Modified-Since") != "" {
			conditional.Add(1)
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	require.Equal(t, "tiktok.com\n", string(rec.waitCount(t, 1).Body))
	require.Eventually(t, func() bool { return conditional.Load() >= 2 }, waitFor, tick, "asked If-Modified-Since")

	write("tiktok.com\nbytedance.com\n", now.Add(-2*time.Hour))
	c := rec.waitCount(t, 2)
	assert.Equal(t, "tiktok.com\nbytedance.com\n", string(c.Body))
	waitStatus(t, src, func(st Status) bool { return st.LastError == nil })

	// The copy held now has the older Last-Modified: an unchanged file
	// is answered 304 and not delivered again.
	n := conditional.Load()
	require.Eventually(t, func() bool { return conditional.Load() >= n+3 }, waitFor, tick)
	assert.Equal(t, 2, rec.count())
}

// TestURLOther304WithoutETagIsFetched: as
// TestURLOlderFileReplacingTheListIsFetched, where the copy held has an
// ETag too, and what answers now gives none (a server replaced, a cache
// in front that drops ETags) and answers If-Modified-Since alone: its 304
// names the older file's Last-Modified, and says nothing of the ETag
// asked about. It was taken as "unchanged" for good.
func TestURLOther304WithoutETagIsFetched(t *testing.T) {
	const v1, v2 = "tiktok.com\n", "tiktok.com\nbytedance.com\n"
	held := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	older := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
	var replaced atomic.Bool
	var notModified atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !replaced.Load() {
			w.Header().Set("ETag", `"A"`)
			w.Header().Set("Last-Modified", held)
			if r.Header.Get("If-None-Match") == `"A"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Write([]byte(v1))
			return
		}
		w.Header().Set("Last-Modified", older.Format(http.TimeFormat))
		if ims, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !ims.Before(older) {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte(v2))
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	require.Equal(t, v1, string(rec.waitCount(t, 1).Body))

	replaced.Store(true)
	assert.Equal(t, v2, string(rec.waitCount(t, 2).Body))
	// The copy held now has the older time and no ETag: 304s again.
	n := notModified.Load()
	require.Eventually(t, func() bool { return notModified.Load() >= n+3 }, waitFor, tick)
	assert.Equal(t, 2, rec.count())
}

// TestOtherValidators: what otherLastModified and otherETag say of a 304
// (with header resp) to a request (with header req): whether it names
// another Last-Modified or ETag than the one asked about, so that the
// list is fetched whole (TestURLOlderFileReplacingTheListIsFetched,
// TestURLNotModifiedWithAnotherETagIsFetched).
func TestOtherValidators(t *testing.T) {
	const t1, t2 = "Mon, 02 Jan 2006 15:04:05 GMT", "Tue, 03 Jan 2006 15:04:05 GMT"
	const t1RFC850 = "Monday, 02-Jan-06 15:04:05 GMT" // t1, in the obsolete form
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		req, resp http.Header
		want      bool
	}{
		{"the time asked about", h("If-Modified-Since", t1), h("Last-Modified", t1), false},
		{"another time", h("If-Modified-Since", t1), h("Last-Modified", t2), true},
		{"the time asked about, in another form", h("If-Modified-Since", t1), h("Last-Modified", t1RFC850), false},
		{"no time asked about", h(), h("Last-Modified", t2), false},
		{"no time given", h("If-Modified-Since", t1), h(), false},
		{"an ETag asked about and given: it answers", h("If-None-Match", `"A"`, "If-Modified-Since", t1),
			h("ETag", `"A"`, "Last-Modified", t2), false},
		{"an ETag asked about, none given", h("If-None-Match", `"A"`, "If-Modified-Since", t1), h("Last-Modified", t2), true},
		{"an ETag given, none asked about", h("If-Modified-Since", t1), h("ETag", `"A"`, "Last-Modified", t2), true},
		{"times that do not parse, the same", h("If-Modified-Since", "yesterday"), h("Last-Modified", "yesterday"), false},
		{"times that do not parse, others", h("If-Modified-Since", "yesterday"), h("Last-Modified", "today"), true},
		{"a time that does not parse given", h("If-Modified-Since", t1), h("Last-Modified", "today"), true},
	} {
		assert.Equal(t, tc.want, otherLastModified(tc.req, tc.resp), "otherLastModified: %s", tc.name)
	}
	for _, tc := range []struct {
		asked, got string
		want       bool
	}{
		{`"A"`, `"A"`, false},
		{`"A"`, `"B"`, true},
		{`"A"`, `W/"A"`, false},
		{`W/"A"`, `"A"`, false},
		{`W/"A"`, `W/"B"`, true},
		{"", `"B"`, false},
		{`"A"`, "", false},
	} {
		assert.Equal(t, tc.want, otherETag(h("If-None-Match", tc.asked), h("ETag", tc.got)), "otherETag: %s, %s", tc.asked, tc.got)
	}
}

// TestURLRefetchAfterOther304StillRefusesCutShort: the whole fetch that
// follows a 304 naming another Last-Modified
// (TestURLOlderFileReplacingTheListIsFetched) is checked against the copy
// held as any fetch is: a body cut mid-line there (a file being written
// again, a connection closed early) is refused (ErrCutShort), never
// delivered. The refetch was made as if nothing were held, which skipped
// that check: the names after the cut were lost (up to max_shrink of them
// pass the shrink guard) and the name cut in two added.
func TestURLRefetchAfterOther304StillRefusesCutShort(t *testing.T) {
	const whole = "tiktok.com\ndouyin.com\nbytedance.com\ncapcut.com\n"
	cut := whole[:strings.Index(whole, "capcut")+4] // "…bytedance.com\ncapc"
	held := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	older := time.Now().Add(-2 * time.Hour).UTC().Format(http.TimeFormat)
	var replaced atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !replaced.Load():
			w.Header().Set("Last-Modified", held)
			w.Write([]byte(whole))
		case r.Header.Get("If-Modified-Since") != "":
			w.Header().Set("Last-Modified", older) // no ETag: 304 to any time at or after the file's
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Last-Modified", older)
			w.Header().Set("Content-Length", strconv.Itoa(len(cut)))
			w.Write([]byte(cut))
		}
	}))
	t.Cleanup(srv.Close)
	src, err := NewURL(srv.URL+"/l.txt", testOptions(t))
	require.NoError(t, err)
	rec := run(t, src)
	require.Equal(t, whole, string(rec.waitCount(t, 1).Body))

	replaced.Store(true)
	st := waitError(t, src, ErrCutShort)
	assert.ErrorContains(t, st.LastError, `ending "capc"`)
	assert.Equal(t, sha256.Sum256([]byte(whole)), st.SHA256, "the copy held stays")
	assert.Equal(t, 1, rec.count(), "a body cut short is never delivered")
}

// TestCutShortNamesTheLastLineEnd: the error of a body cut short names
// its last line, its last 40 octets of a longer one (a minified file of
// one line would put the whole body in the log).
func TestCutShortNamesTheLastLineEnd(t *testing.T) {
	long := strings.Repeat("x", 30) + strings.Repeat("y", 40)
	assert.Equal(t, strings.Repeat("y", 40), lastLine([]byte("tiktok.com\n"+long)))
	assert.Equal(t, "capc", lastLine([]byte("tiktok.com\ncapc")))
	assert.Equal(t, "capc", lastLine([]byte("capc")))
}
