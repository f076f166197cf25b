package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"go.uber.org/zap"
)

// MaxRedirects is how many HTTP redirects a URL source follows; one more is
// an error.
const MaxRedirects = 5

// Reasons a URL's body is refused, for errors.Is. The copy held before is
// kept.
var (
	ErrPin       = errors.New("body does not match its #sha256= pin")
	ErrTooBig    = errors.New("body is over sources.max_bytes")
	ErrHTML      = errors.New("body is an HTML page, not a list")
	ErrBinary    = errors.New("body is binary, not a text list")
	ErrRedirects = fmt.Errorf("more than %d redirects", MaxRedirects)
	ErrStatus    = errors.New("unexpected HTTP status")
	ErrCutShort  = errors.New("body is cut short: its last line has no line end, as the copy held's has")
	ErrEmpty     = errors.New("body is empty, not a list")
	ErrStalled   = errors.New("body stalled")
	ErrEncoding  = errors.New("body is in a Content-Encoding that is not decoded")
	ErrTooSlow   = errors.New("answer too slow")
)

// fetchLimit is the longest a whole fetch may take, redirects, headers
// and body: transferLimit, lowered by tests so that it shows within
// seconds.
var fetchLimit = transferLimit

// URL is a list fetched over HTTP(S): at start and every Options.Refresh,
// with a conditional GET (RFC 9110 §13: If-None-Match with the ETag,
// If-Modified-Since with the Last-Modified the server gave), so an
// unchanged list costs a 304; a 304 to a request that sent no validator
// (the server gave none) is an error, and the copy held kept; a 304 that
// names another ETag or Last-Modified than the one asked about is
// followed by an unconditional fetch. A body is refused, and the copy
// held kept, when it is over Options.MaxBytes (not read past the limit),
// empty (see checkText), an HTML page (Content-Type text/html or
// application/xhtml+xml, or a body that starts with markup), binary (a
// NUL byte or invalid UTF-8), in a Content-Encoding other than the gzip
// the transport asks for and decodes, or compressed still once that is
// decoded (ErrEncoding), cut short (its last
// line has no line end while the copy held's has: see cutShort), or does
// not match the entry's `#sha256=HEX` pin.
// Redirects are followed up to MaxRedirects times, never from https to
// http.
//
// http:// is accepted for loopback hosts only (tests, a local mirror):
// anything else travels in the clear and could be altered on the way.
type URL struct {
	name string // the entry as configured
	key  string // the URL without its fragment
	// cacheKey names the disk copy: key, and the pin when there is one,
	// so that the same URL listed pinned and unpinned (or with two pins)
	// keeps a disk copy per entry, neither overwriting the other's.
	cacheKey string
	url      *url.URL // without its fragment
	pin      *[32]byte
	opt      Options
	client   *http.Client
	track    tracker

	// held is the copy served, owned by Run's goroutine.
	held *Content
	// refused is set while the newest copy delivered was refused (a
	// reload guard holds it until SIGHUP): Run's goroutine's.
	refused bool
	// wake asks Run to poll at once (Wake).
	wake chan struct{}
}

var _ Source = (*URL)(nil)

// NewURL returns the source for entry, https://HOST/PATH[#sha256=HEX] (or
// http:// to a loopback host), or an error saying what is wrong with it.
func NewURL(entry string, opt Options) (*URL, error) {
	u, err := parseEntry(entry)
	if err != nil {
		return nil, err
	}
	shown := blocklist.RedactURL(entry)
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("%s: scheme %q is not https or http", shown, u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%s: no host", shown)
	}
	if port := u.Port(); port != "" && !validPort(port) {
		// url.Parse takes any digits: 0 or 70000 would fail every fetch,
		// and the list be served empty for good.
		return nil, fmt.Errorf("%s: bad port %q (1 to 65535)", shown, port)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: credentials in a list URL would be logged; not supported", shown)
	}
	if err := hostProblem(entry, u.Hostname()); err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("%s: http:// is only for loopback hosts; use https://", shown)
	}
	s := &URL{name: entry, opt: opt.withDefaults(), wake: make(chan struct{}, 1)}
	if frag := u.Fragment; frag != "" || strings.HasSuffix(entry, "#") {
		hexSum, ok := strings.CutPrefix(frag, "sha256=")
		sum, err := hex.DecodeString(hexSum)
		if !ok || err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("%s: fragment %q is not #sha256= and 64 hex digits", shown, frag)
		}
		s.pin = (*[32]byte)(sum)
	}
	u.Fragment, u.RawFragment = "", ""
	s.url, s.key, s.cacheKey = u, u.String(), u.String()
	if s.pin != nil {
		s.cacheKey += "#sha256=" + hex.EncodeToString(s.pin[:])
	}
	s.track.st = Status{Name: entry, Kind: KindBody}
	// Options.Timeout bounds the wait for the answer's headers; the whole
	// fetch, a body of up to max_bytes on a slow link, gets fetchLimit
	// (fetch's context, whose cause names it).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = s.opt.Timeout
	s.client = &http.Client{Transport: tr, CheckRedirect: checkRedirect}
	return s, nil
}

// checkRedirect follows at most MaxRedirects redirects, only to https or
// http (a Location of file:, ftp: or any other scheme is refused by its
// scheme, as NewURL refuses the entry), never to http once a hop was
// https, and to http only on a loopback host. Its errors name the first
// URL, the target and what is wrong.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRedirects {
		return fmt.Errorf("redirected to %s: %w", req.URL.Redacted(), ErrRedirects)
	}
	from, to := via[0].URL.Redacted(), req.URL.Redacted()
	switch scheme := req.URL.Scheme; {
	case scheme != "https" && scheme != "http":
		return fmt.Errorf("redirected from %s to %s: scheme %q is not https or http", from, to, scheme)
	case scheme == "http" && slices.ContainsFunc(via, func(r *http.Request) bool { return r.URL.Scheme == "https" }):
		return fmt.Errorf("redirected from %s to %s: refusing to leave https", from, to)
	case scheme == "http" && !loopbackHost(req.URL.Hostname()):
		// The chain never was https: http:// is refused off loopback, as
		// NewURL refuses such an entry.
		return fmt.Errorf("redirected from %s to %s: http:// is only for loopback hosts", from, to)
	}
	return nil
}

// validPort reports whether port, the digits of a URL's port, is a TCP
// port a connection can be made to: 1 to 65535.
func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Name returns the entry as configured.
func (s *URL) Name() string { return s.name }

// Status returns the source's health.
func (s *URL) Status() Status { return s.track.status() }

// Run delivers the disk copy at once, then fetches at start and every
// Options.Refresh (each wait less up to a tenth: jitter; sooner, backing
// off from a second, after a failure;
// every NoCopyRetry at most while it has no copy: retryAfter; after a 429
// or 503 with a Retry-After, no sooner than it asks, within those bounds:
// honourRetryAfter) until ctx is done. After a copy refused by deliver,
// an unchanged list (a 304, the same bytes) delivers the copy held again,
// once.
func (s *URL) Run(ctx context.Context, deliver func(Content) error) {
	// A stopped source (a reload that drops or changes it) leaves no
	// keep-alive connection behind for the transport's idle timeout.
	defer s.client.CloseIdleConnections()
	s.loadCache(deliver)
	backoff := time.Second
	for {
		next := jitterWait(s.opt.Refresh)
		if err := s.poll(ctx, deliver); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.track.failed(time.Now(), err)
			logFailed(s.opt.Log, "list", "keeping the last good copy", s.name, err, s.held != nil)
			next = honourRetryAfter(jitterWait(retryAfter(&backoff, s.opt.Refresh, s.held != nil)), err, s.opt.Refresh, s.held != nil)
		} else {
			backoff = time.Second
		}
		if ok, _ := wait(ctx, next, s.wake); !ok {
			return
		}
	}
}

// Wake asks Run to poll at once: the copy it delivered last and a reload
// refused (held by a guard) has been applied since (SIGHUP), and the
// poll delivers it again, so that it becomes the copy held, written to
// the disk copy and reported, rather than after the retry backoff, which
// reaches Options.Refresh after repeated refusals.
func (s *URL) Wake() {
	select {
	case s.wake <- struct{}{}:
	default: // a poll is already asked for
	}
}

// Fetch fetches the body once, unconditionally.
func (s *URL) Fetch(ctx context.Context) (Content, error) {
	c, _, err := s.fetch(ctx, nil)
	if err != nil {
		return Content{}, err
	}
	return *c, nil
}

// poll fetches once (conditionally when a copy is held) and delivers a
// changed body.
func (s *URL) poll(ctx context.Context, deliver func(Content) error) error {
	now := time.Now()
	s.track.attempt(now)
	c, notModified, err := s.fetch(ctx, s.held)
	if err != nil {
		return err
	}
	if notModified || (s.held != nil && c.SHA256 == s.held.SHA256) {
		// Unchanged (a 304, or the same bytes from a server that ignores
		// conditional requests): the copy held is confirmed, with the
		// newest validators, which the status reports and the disk copy
		// keeps too, so that a restart asks with them.
		s.held.FromCache = false // the disk copy, if it was one, is the server's
		etag, lastModified := s.held.ETag, s.held.LastModified
		if c.ETag != "" {
			s.held.ETag = c.ETag
		}
		if c.LastModified != "" {
			s.held.LastModified = c.LastModified
		}
		validators := s.held.ETag != etag || s.held.LastModified != lastModified
		if validators {
			s.track.served(s.held)
		}
		if validators || s.track.cacheFailing() {
			s.writeCache(s.held)
		}
		if s.refused {
			// The copy refused is no longer the server's: the one held is
			// offered again, so that the reload drops the copy it holds
			// (a SIGHUP would apply it) and stops reporting it.
			if err := deliver(*s.held); err != nil {
				return refusedError(s.held, err)
			}
			s.refused = false
		}
		s.track.succeeded(now, nil)
		return nil
	}
	if err := deliver(*c); err != nil {
		s.refused = true
		return refusedError(c, err)
	}
	s.refused = false
	s.held = c
	s.track.succeeded(now, c)
	s.writeCache(c)
	return nil
}

// fetch GETs the URL, conditionally on held's validators when held is not
// nil. It returns the checked body, or notModified for a 304 to a request
// that sent a validator; a 304 to one that sent none is an error.
func (s *URL) fetch(ctx context.Context, held *Content) (c *Content, notModified bool, err error) {
	// A server that sends a byte within every Options.Timeout, and so is
	// never stalled, ends here: its error says so, where the client's
	// own timeout read "context deadline exceeded (Client.Timeout or
	// context cancellation while reading body)".
	ctx, stopSlow := context.WithTimeoutCause(ctx, fetchLimit,
		fmt.Errorf("%w: not whole after %v, the most a fetch may take", ErrTooSlow, fetchLimit))
	defer stopSlow()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.key, nil)
	if err != nil {
		return nil, false, fmt.Errorf("fetching %s: %w", s.name, err)
	}
	req.Header.Set("User-Agent", "dnsfence")
	if held != nil {
		if held.ETag != "" {
			req.Header.Set("If-None-Match", held.ETag)
		}
		if held.LastModified != "" {
			req.Header.Set("If-Modified-Since", held.LastModified)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrTooSlow) {
			err = cause
		}
		return nil, false, fmt.Errorf("fetching %s: %w", s.name, err)
	}
	defer resp.Body.Close()
	refuse := func(err error) (*Content, bool, error) {
		return nil, false, fmt.Errorf("fetching %s: refused: %w", s.name, err)
	}
	conditional := req.Header.Get("If-None-Match") != "" || req.Header.Get("If-Modified-Since") != ""
	switch {
	case resp.StatusCode == http.StatusNotModified && conditional:
		if otherLastModified(req.Header, resp.Header) || otherETag(req.Header, resp.Header) {
			// Not modified since the time asked about, but modified
			// all the same: the file now served is older than the copy
			// held's (a backup put back with `cp -p`, an `rsync -t` of
			// an earlier build), and a server with no ETag answers 304
			// to any If-Modified-Since at or after its time; or "not
			// modified" with an ETag other than the one asked about (a
			// cache or proxy that answers 304 to any If-None-Match).
			// Asked with that, it would answer 304 for good: fetch it
			// whole, held without its validators, so that the body is
			// still checked against it (cutShort).
			resp.Body.Close()
			unconditional := *held
			unconditional.ETag, unconditional.LastModified = "", ""
			return s.fetch(ctx, &unconditional)
		}
		return &Content{ETag: resp.Header.Get("ETag"), LastModified: strongLastModified(resp.Header)}, true, nil
	case resp.StatusCode == http.StatusNotModified:
		// Not modified since nothing: a broken server or proxy (RFC 9110
		// §15.4.5: a 304 answers a conditional request). Taken as
		// "unchanged", the list would never be fetched again.
		return refuse(fmt.Errorf("%w %s to a request without validators (no If-None-Match or If-Modified-Since sent)",
			ErrStatus, resp.Status))
	case resp.StatusCode != http.StatusOK:
		err := fmt.Errorf("%w %s", ErrStatus, resp.Status)
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), answered(resp.Header)); ok &&
			(resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			err = &retryAfterError{err: fmt.Errorf("%w (Retry-After %v)", err, d), after: d}
		}
		return refuse(err)
	}
	if ce := strings.Join(resp.Header.Values("Content-Encoding"), ", "); ce != "" && !strings.EqualFold(ce, "identity") {
		// The transport asks for gzip alone and decodes it, removing
		// the header: what is left is an encoding it did not ask for
		// (deflate, br, zstd, gzip twice), whose bytes are no list.
		return refuse(fmt.Errorf("%w: Content-Encoding %q (only gzip is asked for)", ErrEncoding, ce))
	}
	if resp.ContentLength > s.opt.MaxBytes {
		return refuse(fmt.Errorf("%w: Content-Length %d > %d", ErrTooBig, resp.ContentLength, s.opt.MaxBytes))
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && (mt == "text/html" || mt == "application/xhtml+xml") {
		return refuse(fmt.Errorf("%w (Content-Type %s)", ErrHTML, mt))
	}
	// Read one byte past the limit, and no more, to tell "at the limit"
	// from "over it"; at the largest limit, none past it: MaxBytes+1
	// would wrap to a negative limit, which reads nothing, and every body
	// was refused as empty.
	limit := s.opt.MaxBytes
	if limit < math.MaxInt64 {
		limit++
	}
	body, err := io.ReadAll(io.LimitReader(newStallReader(resp.Body, s.opt.Timeout, cancel), limit))
	if err != nil {
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, ErrStalled) || errors.Is(cause, ErrTooSlow):
			err = cause
		case errors.Is(err, io.ErrUnexpectedEOF) && resp.Uncompressed:
			err = fmt.Errorf("%w: the gzip stream ended before its end", err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			// Content-Length not reached, or no last chunk.
			err = fmt.Errorf("%w: the connection ended before the body did", err)
		}
		return nil, false, fmt.Errorf("fetching %s: reading body: %w (%s)", s.name, err, readSoFar(len(body), resp))
	}
	if int64(len(body)) > s.opt.MaxBytes {
		return refuse(fmt.Errorf("%w: more than %d bytes", ErrTooBig, s.opt.MaxBytes))
	}
	if magic := blocklist.CompressedFile(body); magic != "" && resp.Uncompressed {
		// Compressed again under the gzip the transport decoded (a .gz
		// file the server compressed once more, or a second
		// Content-Encoding line the transport removed with the first):
		// checkText would say it came with no Content-Encoding.
		return refuse(fmt.Errorf("%w: decoded from gzip, a %s file still (encoded twice)", ErrEncoding, magic))
	}
	if err := checkText(body); err != nil {
		return refuse(err)
	}
	sum := sha256.Sum256(body)
	if s.pin != nil && sum != *s.pin {
		return refuse(fmt.Errorf("%w: got %x", ErrPin, sum))
	}
	if s.pin == nil && held != nil && cutShort(body, held.Body) {
		return refuse(fmt.Errorf("%w (%d bytes, ending %q)", ErrCutShort, len(body), lastLine(body)))
	}
	return &Content{Source: s.name, Kind: KindBody, Fetched: time.Now(), Body: body, SHA256: sum,
		ETag: resp.Header.Get("ETag"), LastModified: strongLastModified(resp.Header)}, false, nil
}

// retryAfterError is a 429 or 503 answer with a Retry-After: the server
// asks not to be asked again for after (RFC 9110 §10.2.3, RFC 6585 §4).
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// parseRetryAfter parses a Retry-After value (RFC 9110 §10.2.3): a
// number of seconds, or an HTTP-date, taken from now (the answer's Date:
// answered). A number of more
// seconds than 2^31 is 2^31 (68 years; RFC 9111 §1.2.2 has a cache take
// a delta-seconds too great so), which honourRetryAfter bounds. It
// reports false for an empty or malformed value, and for a delay that is
// not positive (0, a date in the past).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	const most = 1 << 31
	if n, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		return time.Duration(min(n, most)) * time.Second, n > 0
	}
	t, err := http.ParseTime(v)
	if err != nil || !t.After(now) {
		return 0, false
	}
	return t.Sub(now).Round(time.Second), true
}

// answered is when the server says it answered: its Date (RFC 9110
// §6.6.1), the clock a Retry-After's HTTP-date is written in, so that a
// server whose clock is off from ours still gets the delay it asked for;
// now when the answer has no valid Date.
func answered(h http.Header) time.Time {
	if t, err := http.ParseTime(h.Get("Date")); err == nil {
		return t
	}
	return time.Now()
}

// honourRetryAfter is the wait after err: next, the backoff's, or the
// Retry-After the server asked for when err carries one and it is
// longer, at most refresh (the source asks no less often than when all
// is well) and, while the source has no copy, at most NoCopyRetry (a
// server's wish does not leave a list unserved longer than an outage
// would).
func honourRetryAfter(next time.Duration, err error, refresh time.Duration, hasCopy bool) time.Duration {
	var ra *retryAfterError
	if !errors.As(err, &ra) {
		return next
	}
	limit := refresh
	if !hasCopy {
		limit = min(limit, noCopyRetry)
	}
	return max(next, min(ra.after, limit))
}

// readSoFar says how much of resp's body came before it failed, n
// octets, for an error: of its Content-Length when it has one, decoded
// when the transport decoded gzip.
func readSoFar(n int, resp *http.Response) string {
	switch {
	case resp.Uncompressed:
		return fmt.Sprintf("%d octets decoded", n)
	case resp.ContentLength >= 0:
		return fmt.Sprintf("%d of its Content-Length %d octets read", n, resp.ContentLength)
	}
	return fmt.Sprintf("%d octets read", n)
}

// otherLastModified reports whether a 304 answer (with header resp) to a
// request (with header req) that asked If-Modified-Since names a
// Last-Modified other than the time asked about: the representation is
// not the one held. A 304 that gives an ETag to If-None-Match says the
// ETag held matches (otherETag), whatever its Last-Modified; one with no
// ETag answered the date alone (a server that gives no ETag now: RFC
// 9110 §15.4.5 has a 304 carry the ETag a 200 would).
func otherLastModified(req, resp http.Header) bool {
	asked, got := req.Get("If-Modified-Since"), resp.Get("Last-Modified")
	if req.Get("If-None-Match") != "" && resp.Get("ETag") != "" || asked == "" || got == "" {
		return false
	}
	a, errA := http.ParseTime(asked)
	g, errG := http.ParseTime(got)
	if errA != nil || errG != nil {
		return asked != got
	}
	return !a.Equal(g)
}

// otherETag reports whether a 304 answer (with header resp) to a request
// (with header req) that asked If-None-Match gives an ETag whose
// opaque-tag is not the one asked about: the representation is not the
// one held (RFC 9110 §15.4.5: a 304 carries the ETag a 200 would).
// Compared weakly (RFC 9110 §8.8.3.2): W/"x" is "x".
func otherETag(req, resp http.Header) bool {
	asked, got := req.Get("If-None-Match"), resp.Get("ETag")
	if asked == "" || got == "" {
		return false
	}
	return strings.TrimPrefix(asked, "W/") != strings.TrimPrefix(got, "W/")
}

// strongLastModified is the answer's Last-Modified when it may be sent back
// as If-Modified-Since, else "": when it is at least a second before the
// answer's Date (RFC 9110 §8.8.2.2). Last-Modified counts seconds, so a
// list that changed again in the second its answer was sent (a generator
// writing the file while it was fetched) keeps that Last-Modified: asked
// If-Modified-Since that second, the server (one with no ETag: Go's
// http.FileServer, Python's http.server) answers 304 for good, and the
// later version is never fetched until the list changes again. Without
// it the next fetch is unconditional, and the same bytes are not
// delivered again.
func strongLastModified(h http.Header) string {
	lm := h.Get("Last-Modified")
	modified, err := http.ParseTime(lm)
	if err != nil {
		return ""
	}
	date, err := http.ParseTime(h.Get("Date"))
	if err != nil || date.Sub(modified) < time.Second {
		return ""
	}
	return lm
}

// stallReader reads a body, and cancels its request (stop) when no octet
// of it arrived for idle: a server that sends its headers, then stalls,
// fails after Options.Timeout, as one that sends no headers does, not at
// fetchLimit (ten minutes) with its source's failure unseen meanwhile.
// A slow body that keeps coming is read to its end.
type stallReader struct {
	r     io.Reader
	idle  time.Duration
	timer *time.Timer
}

func newStallReader(r io.Reader, idle time.Duration, stop context.CancelCauseFunc) *stallReader {
	return &stallReader{r: r, idle: idle, timer: time.AfterFunc(idle, func() {
		stop(fmt.Errorf("%w: no octet of it for %v", ErrStalled, idle))
	})}
}

func (s *stallReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if n > 0 {
		s.timer.Reset(s.idle)
	}
	if err != nil {
		s.timer.Stop()
	}
	return n, err
}

// cutShort reports whether body looks cut off in the middle of a line: it
// does not end with a line end, and held, the copy served, does. HTTP
// frames a body that a server sends until it closes the connection
// (neither Content-Length nor chunked), or whose Content-Length it took
// from a file being written, as complete however short it is; such a body
// cut mid-line would lose the names after the cut (up to max_shrink of
// them pass the shrink guard) and add the cut name. A list that never
// ends with a line end is not refused for it.
func cutShort(body, held []byte) bool {
	return len(body) > 0 && body[len(body)-1] != '\n' && len(held) > 0 && held[len(held)-1] == '\n'
}

// lastLine is the end of body's last line, for an error.
func lastLine(body []byte) string {
	line := body[bytes.LastIndexByte(body, '\n')+1:]
	if len(line) > 40 {
		line = line[len(line)-40:]
	}
	return string(line)
}

// checkText refuses a body that is no text list: empty, binary (a
// compressed file, a UTF-16 or UTF-32 byte order mark, a NUL octet,
// invalid UTF-8: the error names which, and its line) or markup (an HTML
// page: a captive portal, an error page, a web view of the file instead of
// the raw file). No list format starts with '<'. An empty body (no octet
// but white space and a byte order mark) is what a failed upload, a
// generator that wrote nothing or a server's error served with 200 leaves,
// as Pi-hole's gravity takes it ("Received empty file, using cached one"):
// taken as the list, it would be a first start's list that blocks nothing
// with /readyz 200. A list meant to be empty says so with a comment line.
func checkText(body []byte) error {
	if len(bytes.TrimSpace(bytes.TrimPrefix(body, []byte("\ufeff")))) == 0 {
		return fmt.Errorf("%w (%d bytes)", ErrEmpty, len(body))
	}
	if magic := blocklist.CompressedFile(body); magic != "" {
		return fmt.Errorf("%w: a %s file (it starts % X), served without a Content-Encoding that says so", ErrBinary, magic, body[:min(len(body), 4)])
	}
	var notText *blocklist.NotTextError
	if errors.As(blocklist.CheckText("body", body), &notText) {
		// The reason a list file gets: a UTF-16 or UTF-32 byte order
		// mark, or a NUL octet (UTF-16 without one).
		return fmt.Errorf("%w: line %d: %s", ErrBinary, notText.Line, notText.Reason)
	}
	if i := blocklist.InvalidUTF8(body); i >= 0 {
		return fmt.Errorf("%w: line %d: invalid UTF-8 (octet %#02x at offset %d)", ErrBinary,
			1+bytes.Count(body[:i], []byte{'\n'}), body[i], i)
	}
	if start := blocklist.Markup(body); start != "" {
		return fmt.Errorf("%w: starts with %q", ErrHTML, start)
	}
	return nil
}

// loadCache delivers the disk copy, if there is one that still matches
// the pin.
func (s *URL) loadCache(deliver func(Content) error) {
	c, err := s.readCopy()
	if errors.Is(err, ErrNoCopy) {
		return
	}
	if err != nil {
		s.track.cacheResult(err)
		s.opt.Log.Warn("list source: disk copy not used", zap.String("source", s.name), zap.Error(err))
		return
	}
	if err := deliver(*c); err != nil {
		s.track.failed(time.Now(), refusedError(c, err))
		return
	}
	s.held = c
	s.track.served(c)
}

// readCopy reads the disk copy and checks it as a fetched body is
// checked; ErrNoCopy when there is none.
func (s *URL) readCopy() (*Content, error) {
	if s.opt.CacheDir == "" {
		return nil, ErrNoCopy
	}
	meta, body, err := readCache(cachePath(s.opt.CacheDir, s.cacheKey), s.cacheKey, "body")
	if errors.Is(err, ErrNoCopy) && s.cacheKey != s.key {
		// Written before disk copies were kept per pin: the URL's own,
		// used when it still matches the pin.
		meta, body, err = readCache(cachePath(s.opt.CacheDir, s.key), s.key, "body")
	}
	if err != nil {
		return nil, err
	}
	err = checkText(body)
	sum := sha256.Sum256(body)
	if err == nil && s.pin != nil && sum != *s.pin {
		err = fmt.Errorf("disk copy: %w", ErrPin)
	}
	if err == nil && int64(len(body)) > s.opt.MaxBytes {
		err = fmt.Errorf("disk copy: %w", ErrTooBig)
	}
	if err != nil {
		return nil, err
	}
	return &Content{Source: s.name, Kind: KindBody, FromCache: true, Fetched: meta.Fetched, Body: body,
		SHA256: sum, ETag: meta.ETag, LastModified: meta.LastModified}, nil
}

func (s *URL) writeCache(c *Content) {
	if s.opt.CacheDir == "" {
		return
	}
	err := writeCache(cachePath(s.opt.CacheDir, s.cacheKey), cacheMeta{Source: s.cacheKey, Kind: "body", Fetched: c.Fetched,
		ETag: c.ETag, LastModified: c.LastModified}, c.Body)
	s.track.cacheResult(err)
	if err != nil {
		s.opt.Log.Warn("list source: keeping the disk copy failed", zap.String("source", s.name), zap.Error(err))
	}
}
