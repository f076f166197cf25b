// Package source brings lists from beyond one machine (DESIGN.md §9): a
// URL polled with conditional GET, or an RPZ zone pulled from a DNS primary
// by AXFR/IXFR (RFC 5936, RFC 1995) on its SOA timers and on NOTIFY (RFC
// 1996), signed with TSIG (RFC 8945). A source delivers content; it does
// not parse list formats or RPZ: the receiver does, exactly as it does for a
// changed file, and either swaps the result in or refuses it.
//
// Every remote source keeps its last good copy, in memory and in
// Options.CacheDir, so that a fetch or transfer that fails never takes a
// list away, and a restart with the network down delivers the disk copy at
// once.
//
// miekg/dns stays inside this package (STYLE.md): zone content crosses the
// seam as []dns.RR for blocklist/rpz.FromRecords, and nothing else of the
// DNS library does.
package source

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Source is a remote list: a URL or a zone transfer.
//
// Run fetches at once and then on the source's own schedule until ctx is
// done, calling deliver (on Run's goroutine, one call at a time) each time
// a new complete copy has arrived. deliver validates and applies the
// content exactly as for a changed list file and returns nil once it is
// served, or an error to refuse it: a refused copy is counted as a failure,
// never written to the cache, and the source keeps offering its previous
// copy's version to the server (so the next poll or transfer tries again).
//
// Run is called once per source. Status may be called at any time from
// any goroutine.
type Source interface {
	// Name is the list entry as configured (a URL with its pin, or
	// axfr://HOST[:PORT]/ZONE): the name reloads, logs, metrics, `check`
	// and `explain` use for the list.
	Name() string
	// Run delivers the disk copy (if any) at once, then fetches from the
	// network at start and on the source's schedule, until ctx is done.
	Run(ctx context.Context, deliver func(Content) error)
	// Fetch fetches one copy from the network, ignoring the cache and the
	// copy held, and changes no state: for `dnsfence check`.
	Fetch(ctx context.Context) (Content, error)
	// Status says how the source is doing, for metrics and /readyz.
	Status() Status
	// Wake asks Run to fetch again at once: the copy it delivered last,
	// which the reload refused (a guard held it), has been applied since
	// (SIGHUP), and is to become the copy held and on disk. It never
	// blocks (the reload calls it holding its lock), may be called from
	// any goroutine, and does nothing to a source whose Run has not
	// started or has returned but ask for a fetch at its start; two calls
	// before Run wakes ask for one fetch.
	Wake()
}

// Kind says which half of a Content is set.
type Kind int

const (
	// KindBody is a URL's body: a list in any list format (or RPZ text).
	KindBody Kind = iota + 1
	// KindZone is a whole zone's records, from a zone transfer.
	KindZone
)

// Transfer types reported in Content.Transfer and Status.LastTransfer.
const (
	TransferAXFR  = "AXFR"  // a full transfer (RFC 5936), or an AXFR-style answer to IXFR
	TransferIXFR  = "IXFR"  // an incremental transfer (RFC 1995)
	TransferCache = "cache" // the copy read from Options.CacheDir at start
	// TransferHeld is the zone held, offered again: the copy refused after
	// it is no longer the primary's (its serial went back to the one held).
	TransferHeld = "held"
)

// Content is one complete copy of a source's content: always the whole
// list or zone, never a part of it, so the receiver can build its list from
// it alone.
type Content struct {
	// Source is the Name of the source that delivered it.
	Source string
	Kind   Kind
	// FromCache is set for the copy read from the cache directory at start,
	// until the network confirms it.
	FromCache bool
	// Fetched is when this copy was fetched from the network (for a disk
	// copy: when it was originally fetched).
	Fetched time.Time

	// Body is the URL's body (KindBody), unmodified: SHA256 is its hash,
	// which a `#sha256=` pin matched. ETag and LastModified are the
	// validators the server gave with it (empty when it gave none).
	Body         []byte
	SHA256       [32]byte
	ETag         string
	LastModified string

	// Zone is the zone's apex (KindZone), lowercase and fully qualified.
	Zone string
	// Serial is the zone's SOA serial.
	Serial uint32
	// Records are every record of the zone, the SOA first and no
	// trailing SOA; for an IXFR the previous zone with the delta applied.
	// Records out of the zone sent by the primary are dropped. The slice and
	// the records are the receiver's to keep: the source never changes them.
	Records []dns.RR
	// Transfer is how the zone arrived: TransferAXFR, TransferIXFR or
	// TransferCache.
	Transfer string
	// Added and Removed count the records (the SOA aside) this copy adds
	// to and removes from the previous one the source delivered; both 0
	// for the first copy.
	Added, Removed int
	// Delta is set for a copy that arrived by IXFR: the records it
	// removed from and added to the copy of serial Delta.From, which the
	// source delivered before, so that a receiver holding what it built
	// from that copy can apply the change alone instead of reading
	// Records whole (a handful of changes to a zone of a million records).
	// Records is the whole zone all the same.
	Delta *Delta
}

// Delta is the difference between two copies of a zone (RFC 1995): the
// zone at serial From, less Removed, plus Added, is the zone of the
// Content that carries it. Neither holds the SOA.
type Delta struct {
	From           uint32
	Removed, Added []dns.RR
}

// Version is the content's version as logs and the audit line show it:
// "serial N" for a zone, "sha256:HEX" for a body.
func (c Content) Version() string {
	if c.Kind == KindZone {
		return "serial " + strconv.FormatUint(uint64(c.Serial), 10)
	}
	return "sha256:" + hex.EncodeToString(c.SHA256[:])
}

// Status is a snapshot of a source's health, for metrics and /readyz.
type Status struct {
	Name string
	Kind Kind
	// HasContent is set once a copy (from the network or the disk) has
	// been delivered and accepted: /readyz waits for every source to have
	// one.
	HasContent bool
	// FromCache is set while the copy served is the disk copy, not yet
	// confirmed or replaced from the network.
	FromCache bool
	// Version is the served copy's ETag (a body's, or its SHA-256 when the
	// server gave no ETag) or zone serial, as text; VersionSince is when
	// that version was first fetched from the network.
	Version      string
	VersionSince time.Time
	// Serial is the served zone's SOA serial; SHA256 the served body's
	// hash.
	Serial uint32
	SHA256 [32]byte
	// Bytes is the served body's size; Records the served zone's record
	// count, its SOA included.
	Bytes   int
	Records int
	// LastTransfer is how the served zone last changed: TransferAXFR,
	// TransferIXFR or TransferCache.
	LastTransfer string

	// LastAttempt is when the network was last asked; LastSuccess when it
	// last answered with a copy or with "not changed".
	LastAttempt time.Time
	LastSuccess time.Time
	// LastError is the last failure (nil after a success) and
	// LastErrorTime when it happened. Failures counts every failure since
	// start: a fetch, a transfer, a refused body, a copy the receiver
	// refused; ConsecutiveFailures those since the last success.
	LastError           error
	LastErrorTime       time.Time
	Failures            uint64
	ConsecutiveFailures int

	// Transfers counts the zone transfers applied, by type (TransferAXFR,
	// TransferIXFR); NotifiesAccepted and NotifiesRefused count NOTIFY
	// messages from the primary's address and from others, and those
	// whose TSIG did not verify (Notifier).
	Transfers        map[string]uint64
	NotifiesAccepted uint64
	NotifiesRefused  uint64
	// CacheError is the last failure to write or read the disk copy (nil
	// once a write succeeded): the source still works, but a restart would
	// start without content.
	CacheError error
}

// Missing returns the names of the sources that have no content yet, in
// order: /readyz is not ready while it is not empty.
func Missing(srcs []Source) []string {
	var out []string
	for _, s := range srcs {
		if !s.Status().HasContent {
			out = append(out, s.Name())
		}
	}
	return out
}

// Options are the `sources` settings of the configuration, shared by every
// remote source.
type Options struct {
	// Refresh is how often a URL is polled, and the longest a zone waits
	// between SOA checks whatever its SOA says (sources.refresh). Default
	// DefaultRefresh.
	Refresh time.Duration
	// CacheDir keeps each source's last good copy (sources.cache_dir);
	// empty: no disk copy.
	CacheDir string
	// MaxBytes bounds a URL body and a zone transfer's total message size
	// (sources.max_bytes). Default DefaultMaxBytes.
	MaxBytes int64
	// TSIG signs zone transfer requests and SOA queries and is required on
	// their answers (sources.tsig); nil: none.
	TSIG *TSIG
	// Timeout bounds the wait for an HTTP answer's headers and for each
	// octet of its body, an SOA query, and each read of a zone transfer;
	// a whole fetch or transfer is bounded by ten minutes and MaxBytes.
	// Default DefaultTimeout.
	Timeout time.Duration
	// Log receives warnings (a failed fetch or transfer) and lifecycle
	// lines; nil: none.
	Log *zap.Logger
}

// Defaults of Options.
const (
	DefaultRefresh  = time.Hour
	DefaultMaxBytes = 64 << 20
	DefaultTimeout  = 30 * time.Second
)

func (o Options) withDefaults() Options {
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return o
}

// TSIG is a transaction signature key (RFC 8945): sources.tsig.
type TSIG struct {
	// Name is the key's name, e.g. "xfr-key." (made fully qualified).
	Name string
	// Algorithm is hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384 or
	// hmac-sha512 (with or without the trailing dot).
	Algorithm string
	// Secret is the key in base64, as in BIND's `key` statement.
	Secret string
}

// tsigAlgorithms are the algorithms miekg/dns signs and verifies.
var tsigAlgorithms = map[string]string{
	"hmac-sha1": dns.HmacSHA1, "hmac-sha224": dns.HmacSHA224, "hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384, "hmac-sha512": dns.HmacSHA512,
}

// normalize returns the key with its name and algorithm in canonical form
// (lowercase, fully qualified), or an error naming the bad field.
func (k *TSIG) normalize() (*TSIG, error) {
	if k == nil {
		return nil, nil
	}
	var errs []error
	for i, err := range [3]error(k.problems()) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", [...]string{"name", "algorithm", "secret"}[i], err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tsig: %w", err)
	}
	name := strings.ToLower(dns.Fqdn(k.Name))
	alg := tsigAlgorithms[strings.TrimSuffix(strings.ToLower(k.Algorithm), ".")]
	return &TSIG{Name: name, Algorithm: alg, Secret: k.Secret}, nil
}

func (k *TSIG) problems() [3]error {
	name, alg, secret := k.Problems()
	return [3]error{name, alg, secret}
}

// Problems says what is wrong with each field of the key, nil for a field
// that is right: the name must be a domain name, the algorithm one of
// hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384 or hmac-sha512, and the
// secret base64 (RFC 4648 §4). The configuration reports each at its own
// key, so the errors do not name the field.
func (k *TSIG) Problems() (name, algorithm, secret error) {
	switch n := dns.Fqdn(k.Name); {
	case k.Name == "" || n == ".":
		name = errors.New("empty")
	default:
		if !presname.IsDomainName(n) {
			name = fmt.Errorf("%q is not a domain name", k.Name)
		}
	}
	if _, ok := tsigAlgorithms[strings.TrimSuffix(strings.ToLower(k.Algorithm), ".")]; !ok {
		algorithm = fmt.Errorf("%q is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", k.Algorithm)
	}
	secret = checkBase64(k.Secret)
	return name, algorithm, secret
}

// New returns the source for a list entry that IsRemote: a URL
// (https://..., http:// to a loopback host) or axfr://HOST[:PORT]/ZONE.
// It checks the entry and the options and returns an error naming what is
// wrong; it starts nothing.
func New(entry string, opt Options) (Source, error) {
	switch {
	case hasScheme(entry, "axfr"):
		return NewZone(entry, opt)
	case hasScheme(entry, "https"), hasScheme(entry, "http"):
		return NewURL(entry, opt)
	}
	return nil, fmt.Errorf("%s: not a remote source (https://, http:// or axfr://)", blocklist.RedactURL(entry))
}

// hostProblem says why host, the host of a remote entry, is no address a
// fetch or transfer can reach (blocklist.Unusable), with the entry meant
// when there is one, or nil: a name, or an address that may answer.
func hostProblem(entry, host string) error {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	switch kind := blocklist.Unusable(a); kind {
	case "":
		return nil
	case blocklist.UnusableCompatible:
		v4, _ := blocklist.IPv4Compatible(a)
		return fmt.Errorf("the host %s is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291), which no host has; write %s",
			host, strings.Replace(entry, "["+host+"]", v4.String(), 1))
	case blocklist.UnusableLinkLocal:
		return fmt.Errorf("the host %s is a link-local address, which a connection reaches only through the interface named after it, as in [%s%%25eth0]", host, host)
	default:
		return fmt.Errorf("the host %s is a %s address, which no server answers from", host, kind)
	}
}

// ClientName is entry as an answer to a client names it (the EDE text of a
// blocked answer): Redact's, without the query string and the fragment,
// which may hold a token (https://lists.example/tiktok.txt?key=SECRET)
// and tell a client nothing it needs. A file path is returned as it is.
func ClientName(entry string) string {
	if !IsRemote(entry) {
		return entry
	}
	shown := blocklist.RedactURL(entry)
	if i := strings.IndexAny(shown, "?#"); i >= 0 {
		shown = shown[:i]
	}
	return shown
}

// parseEntry parses a remote entry as a URL; its error names the entry
// redacted, as every error of NewURL and NewZone does (url.Parse's own
// quotes the whole entry).
func parseEntry(entry string) (*url.URL, error) {
	u, err := url.Parse(entry)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s: %w", blocklist.RedactURL(entry), err)
	}
	return u, nil
}

// IsRemote reports whether a list entry names a remote source rather than
// a file: it starts with https://, http:// or axfr:// (any case).
func IsRemote(entry string) bool {
	return hasScheme(entry, "https") || hasScheme(entry, "http") || hasScheme(entry, "axfr")
}

func hasScheme(entry, scheme string) bool {
	return len(entry) > len(scheme)+3 && strings.EqualFold(entry[:len(scheme)], scheme) &&
		entry[len(scheme):len(scheme)+3] == "://"
}

// tracker holds a source's Status behind a lock: Run's goroutine writes it,
// Status reads it from any goroutine.
type tracker struct {
	mu sync.Mutex
	st Status // guarded by mu
}

func (t *tracker) status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	if st.Transfers != nil {
		st.Transfers = make(map[string]uint64, len(t.st.Transfers))
		for k, v := range t.st.Transfers {
			st.Transfers[k] = v
		}
	}
	return st
}

func (t *tracker) update(fn func(st *Status)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fn(&t.st)
}

// cacheFailing reports whether the last write or read of the disk copy
// failed (Status.CacheError): the disk copy is not the copy held, and is
// written again at the next chance.
func (t *tracker) cacheFailing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.CacheError != nil
}

// attempt records that the network is being asked.
func (t *tracker) attempt(now time.Time) { t.update(func(st *Status) { st.LastAttempt = now }) }

// failed records a failure.
func (t *tracker) failed(now time.Time, err error) {
	t.update(func(st *Status) {
		st.LastError, st.LastErrorTime = err, now
		st.Failures++
		st.ConsecutiveFailures++
	})
}

// succeeded records that the network answered (with a copy, or "not
// changed"): the copy served is confirmed. fresh, when not nil, is the
// new copy the receiver accepted from that answer, recorded in the same
// update (served), so that no reader of Status sees the new copy beside
// the failure it ended (a serial that arrived, with the error of the
// transfer that did not bring it).
func (t *tracker) succeeded(now time.Time, fresh *Content) {
	t.update(func(st *Status) {
		if fresh != nil {
			st.served(fresh)
		}
		st.LastSuccess = now
		st.LastError = nil
		st.ConsecutiveFailures = 0
		st.FromCache = false
	})
}

// served records the copy the receiver accepted.
func (t *tracker) served(c *Content) { t.update(func(st *Status) { st.served(c) }) }

// served records in st the copy c the receiver accepted.
func (st *Status) served(c *Content) {
	st.HasContent = true
	st.FromCache = c.FromCache
	st.VersionSince = c.Fetched
	switch c.Kind {
	case KindBody:
		st.SHA256, st.Bytes = c.SHA256, len(c.Body)
		st.Version = c.ETag
		if st.Version == "" {
			st.Version = "sha256:" + hex.EncodeToString(c.SHA256[:])
		}
	case KindZone:
		st.Serial, st.Records = c.Serial, len(c.Records)
		st.Version = strconv.FormatUint(uint64(c.Serial), 10)
		st.LastTransfer = c.Transfer
		if c.Transfer != TransferCache {
			if st.Transfers == nil {
				st.Transfers = map[string]uint64{}
			}
			st.Transfers[c.Transfer]++
		}
	}
}

func (t *tracker) cacheResult(err error) { t.update(func(st *Status) { st.CacheError = err }) }

// refusedError wraps the receiver's refusal of a copy.
func refusedError(c *Content, err error) error {
	return fmt.Errorf("%s: copy (%s) refused by the reload: %w", c.Source, c.Version(), err)
}

// NoCopyRetry is the longest a source without a copy waits between two
// tries, whatever sources.refresh says: while it has none its list blocks
// none of its names (or, with sources.servfail_until_ready, its policies'
// clients get SERVFAIL), so a server or primary back up is not left
// unasked for a refresh that may be an hour. A fleet of instances asks a
// server that is down once a minute each at most.
const NoCopyRetry = time.Minute

// noCopyRetry is the cap retryAfter applies: NoCopyRetry, lowered by tests
// so that it shows within seconds.
var noCopyRetry = NoCopyRetry

// retryAfter is how long a source waits after a failed try: *backoff,
// which starts at a second and doubles with each failure in a row, at most
// refresh, and at most NoCopyRetry while the source has no copy
// (hasCopy false). It doubles *backoff for the next failure; the caller
// sets it back to a second after a success.
func retryAfter(backoff *time.Duration, refresh time.Duration, hasCopy bool) time.Duration {
	next := min(*backoff, refresh)
	if !hasCopy {
		next = min(next, noCopyRetry)
	}
	*backoff = min(2**backoff, refresh)
	return next
}

// jitter is d less a random part of it, a tenth at most: the instances
// of a fleet started together (a deployment, a power cut) would otherwise
// ask one list server or primary in step at every refresh and every
// retry while it is down. Never more than d, so that the bounds of
// retryAfter and soaTimer hold, and a server's Retry-After is applied
// after it (honourRetryAfter).
func jitter(d time.Duration) time.Duration {
	if d < 10 {
		return d
	}
	return d - rand.N(d/10)
}

// jitterWait is jitter as Run calls it: a test sees through it that each
// wait goes through jitter.
var jitterWait = jitter

// wait blocks for d or until ctx is done or wake fires; it reports false
// when ctx is done, and woken when wake fired.
func wait(ctx context.Context, d time.Duration, wake <-chan struct{}) (ok, woken bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return true, false
	case <-wake:
		return true, true
	}
}

// logFailed logs a failed fetch or transfer of the source name, a list
// or zone (kind): "<kind> source failed; <kept>" at warn level while it
// has a copy, served still; at error level while it has none, since its
// list then serves empty and blocks none of its names (the fail-closed
// table of README.md).
func logFailed(log *zap.Logger, kind, kept, name string, err error, hasCopy bool) {
	fields := []zap.Field{zap.String("source", name), zap.Error(err), zap.Bool("has_copy", hasCopy)}
	if hasCopy {
		log.Warn(kind+" source failed; "+kept, fields...)
		return
	}
	log.Error(kind+" source failed; no copy yet, so its list blocks none of its names", fields...)
}
