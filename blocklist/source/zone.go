package source

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/internal/presname"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Zone is an RPZ zone pulled from a DNS primary, as a secondary server
// pulls it: an AXFR at start (RFC 5936); then an SOA query every SOA
// refresh (every SOA retry after a failure), both capped by
// Options.Refresh, and on a NOTIFY from the primary's address (RFC 1996,
// see Notify): at once, but at most once a second; a newer serial (RFC
// 1982) is fetched by IXFR from the serial held (RFC 1995), which the
// primary may answer with the differences, the whole zone or, when
// unchanged, its SOA alone; an IXFR answered with an RCODE other than
// NOERROR (a TSIG error aside) or with no record, or whose differences do
// not fit the zone held, is followed by an AXFR. With Options.TSIG every
// query is signed and every answer must carry a signature that verifies
// (RFC 8945; of a transfer, the first and last messages, and at least
// every hundredth, §5.3.1). A transfer that fails, is cut off, is over
// Options.MaxBytes or does not verify changes nothing: the zone held is
// kept.
//
// The SOA expire timer does not empty the zone: the zone held is served
// through any outage of the primary, as the list it is (failing closed),
// with the source's Status saying how old it is. It ends one wait alone: a
// primary whose serial went back (its zone re-created, or its serial reset
// on purpose) is refused for the held SOA's expire (at least refresh plus
// retry, a zero one counting as Options.Refresh, at most 24 weeks, as
// BIND clamps it), counted from the first look that found it
// older, and then taken at its word by AXFR, as a BIND or Knot secondary
// takes it once its copy has expired, but without the time between in
// which those serve no zone. The reload guards judge that transfer as any
// other (a zone that shrank past max_shrink is held). A restart counts the
// wait afresh.
type Zone struct {
	name   string // the entry as configured
	zone   string // apex, lowercase FQDN
	host   string // the primary: an IP address or a host name
	port   string
	opt    Options
	client xfrClient
	track  tracker
	// notify wakes Run for an SOA check; buffered, so a NOTIFY during a
	// check, or inside NotifyInterval of the last it acted on, asks for
	// one more.
	notify chan struct{}
	// lookup resolves a primary given by name.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)

	mu sync.Mutex
	// primaries are the addresses the primary was last reached at: a
	// NOTIFY from any other is refused. Guarded by mu.
	primaries []netip.Addr
	// warned limits the warnings of NOTIFYs not acted on to one a
	// NotifyWarnInterval for each reason (notifyNotPrimary,
	// notifyBadTSIG). Guarded by mu.
	warned [2]notifyWarning

	// held is the zone served, owned by Run's goroutine.
	held *zoneCopy
	// refused is set while the newest copy delivered was refused (a
	// reload guard holds it until SIGHUP): Run's goroutine's.
	refused bool
	// olderSince is when a look first found the primary's serial older
	// than the zone held, zero while it is not: Run's goroutine's.
	olderSince time.Time
}

var _ Source = (*Zone)(nil)

// NewZone returns the source for entry, axfr://HOST[:PORT]/ZONE (the port
// defaults to 53; HOST is an IP address or a name), or an error saying what
// is wrong with it or with Options.TSIG.
func NewZone(entry string, opt Options) (*Zone, error) {
	u, err := parseEntry(entry)
	if err != nil {
		return nil, err
	}
	shown := blocklist.RedactURL(entry)
	if !strings.EqualFold(u.Scheme, "axfr") {
		return nil, fmt.Errorf("%s: scheme %q is not axfr", shown, u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s: want axfr://HOST[:PORT]/ZONE and nothing more", shown)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, fmt.Errorf("%s: no primary host", shown)
	}
	if port == "" {
		port = "53"
	} else if !validPort(port) {
		return nil, fmt.Errorf("%s: bad port %q (1 to 65535)", shown, port)
	}
	if err := hostProblem(entry, host); err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	zone := strings.TrimPrefix(u.Path, "/")
	if zone == "" || strings.Contains(zone, "/") {
		return nil, fmt.Errorf("%s: want one zone name after the host, axfr://HOST[:PORT]/ZONE", shown)
	}
	if !presname.IsDomainName(zone) || dns.Fqdn(zone) == "." {
		return nil, fmt.Errorf("%s: zone %q is not a domain name", shown, zone)
	}
	zone = strings.ToLower(dns.Fqdn(zone))
	opt = opt.withDefaults()
	key, err := opt.TSIG.normalize()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", shown, err)
	}
	if least := smallestTransfer(zone, key); opt.MaxBytes < least {
		signed := ""
		if key != nil {
			signed = ", signed with sources.tsig"
		}
		return nil, fmt.Errorf("%s: sources.max_bytes %d is below %d bytes, the smallest transfer of zone %s (the question and the SOA record twice%s): every transfer would be refused; give %d or more",
			shown, opt.MaxBytes, least, zone, signed, least)
	}
	z := &Zone{name: entry, zone: zone, host: host, port: port, opt: opt,
		client: xfrClient{zone: zone, tsig: key, timeout: opt.Timeout, maxBytes: opt.MaxBytes},
		notify: make(chan struct{}, 1),
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}}
	if a, err := netip.ParseAddr(host); err == nil {
		z.primaries = []netip.Addr{a.Unmap()}
	}
	z.track.st = Status{Name: entry, Kind: KindZone}
	return z, nil
}

// smallestTransfer is the fewest octets of messages a transfer of zone
// can take (Options.MaxBytes counts them): one message of the question,
// and the zone's SOA record opening and closing the zone, its names the
// root and compressed, with no record between (an empty policy zone),
// signed with key when it is not nil. A zone's transfer is never
// smaller, so MaxBytes below it refuses every one.
func smallestTransfer(zone string, key *TSIG) int64 {
	m := new(dns.Msg)
	m.SetQuestion(zone, dns.TypeAXFR)
	m.Response = true
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET}, Ns: ".", Mbox: "."}
	m.Answer = []dns.RR{soa, soa}
	if key != nil {
		n := macSize(key.Algorithm)
		m.Extra = []dns.RR{&dns.TSIG{Hdr: dns.RR_Header{Name: key.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: key.Algorithm, MACSize: uint16(n), MAC: strings.Repeat("00", n)}}
	}
	m.Compress = true
	return int64(m.Len())
}

// Name returns the entry as configured.
func (z *Zone) Name() string { return z.name }

// Origin returns the zone's apex, lowercase and fully qualified.
func (z *Zone) Origin() string { return z.zone }

// Status returns the source's health.
func (z *Zone) Status() Status { return z.track.status() }

// Notify is told of a NOTIFY for the zone (RFC 1996) that came from the
// address from. It reports whether from is the primary's (an address the
// primary was reached at), and if so asks Run for an SOA check: at once,
// unless a NOTIFY led to one less than NotifyInterval ago; then the check
// is made when that interval is over, one for all the NOTIFYs that came
// inside it. A NOTIFY is only ever a hint to look, so a forged one costs
// at most one SOA query, and a stream of them (forged from the primary's
// address: UDP, authenticated by its source address only) one a second.
// One from another address changes nothing here: the Notifier counts it
// refused and warns of it (rejectNotify) when no source of the zone takes
// it, since two sources may pull the zone from two primaries.
func (z *Zone) Notify(from netip.Addr) bool {
	if !z.primary(from) {
		return false
	}
	z.track.update(func(st *Status) { st.NotifiesAccepted++ })
	select {
	case z.notify <- struct{}{}:
	default: // a check is already asked for
	}
	return true
}

// Wake asks Run for an SOA check as a NOTIFY does, but for no NOTIFY: the
// copy it delivered last and a reload refused (held by a guard) has been
// applied since (SIGHUP), and the check transfers and delivers it again,
// so that it becomes the zone held, written to the disk copy and
// reported, rather than at the SOA's retry interval (up to
// Options.Refresh), until when a restart with the primary down would
// serve the zone from before the change applied.
func (z *Zone) Wake() {
	select {
	case z.notify <- struct{}{}:
	default: // a check is already asked for
	}
}

// rejectNotify is told of a NOTIFY for the zone, from the address from,
// that no source acts on, for reason (notifyNotPrimary, or notifyBadTSIG
// with Notifier.Verify's err): it is counted refused and warned of.
func (z *Zone) rejectNotify(reason int, from netip.Addr, err error) {
	z.track.update(func(st *Status) { st.NotifiesRefused++ })
	z.warnNotify(reason, from, err)
}

// Why a NOTIFY was not acted on: the index of Zone.warned.
const (
	notifyNotPrimary = iota // from an address not the primary's
	notifyBadTSIG           // signed, and the signature does not verify
)

// NotifyWarnInterval is the least time between two warnings of a zone's
// NOTIFYs not acted on for one reason. RFC 1996 §3.10 has a NOTIFY from a
// host not the zone's primary logged, which tells the operator of a
// primary that sends its NOTIFYs from another address than the one its
// secondaries know (BIND without notify-source, Knot without a remote's
// via, NSD without outgoing-interface, on a host of several addresses)
// why its changes wait for the zone's refresh; a flood of NOTIFYs forged
// over UDP costs a line a minute.
const NotifyWarnInterval = time.Minute

// notifyWarning is when NOTIFYs not acted on for one reason were last
// logged, and how many were not logged since.
type notifyWarning struct {
	last      time.Time
	notLogged int
}

// warnNotify logs a NOTIFY from the address from that is not acted on for
// why, unless one was logged for why less than NotifyWarnInterval ago.
func (z *Zone) warnNotify(why int, from netip.Addr, err error) {
	now := time.Now()
	z.mu.Lock()
	w := &z.warned[why]
	if !w.last.IsZero() && now.Sub(w.last) < NotifyWarnInterval {
		w.notLogged++
		z.mu.Unlock()
		return
	}
	notLogged := w.notLogged
	w.last, w.notLogged = now, 0
	primaries := make([]string, len(z.primaries))
	for i, a := range z.primaries {
		primaries[i] = a.String()
	}
	z.mu.Unlock()
	fields := []zap.Field{zap.String("source", z.name), zap.String("from", from.String()),
		zap.Strings("primary", primaries), zap.Int("not_logged_since", notLogged)}
	switch why {
	case notifyNotPrimary:
		z.opt.Log.Warn("NOTIFY refused: not from an address of the zone's primary; the primary must send it from one "+
			"(BIND notify-source, Knot remote via, NSD outgoing-interface)", fields...)
	case notifyBadTSIG:
		z.opt.Log.Warn("NOTIFY not acted on: its TSIG does not verify with sources.tsig", append(fields, zap.Error(err))...)
	}
}

// primary reports whether addr is one the primary was last reached at.
func (z *Zone) primary(addr netip.Addr) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Contains(z.primaries, addr.Unmap())
}

// Run delivers the disk copy at once, then checks the primary at start and
// on the SOA's timers (each wait less up to a tenth: jitter) and NOTIFY
// (at most once a NotifyInterval, see Notify) until ctx is done. After a copy refused by deliver, a primary
// back at the serial held delivers the zone held again, once (reoffer).
func (z *Zone) Run(ctx context.Context, deliver func(Content) error) {
	z.loadCache(deliver)
	backoff := time.Second
	// notified is when the last check a NOTIFY asked for began.
	var notified time.Time
	for {
		var next time.Duration
		err := z.refresh(ctx, deliver)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			z.track.failed(time.Now(), err)
			logFailed(z.opt.Log, "zone", "keeping the zone held", z.name, err, z.held != nil)
		}
		switch {
		case z.held == nil:
			// Nothing to serve yet: look again soon, backing off.
			next = retryAfter(&backoff, z.opt.Refresh, false)
		case err != nil:
			next = soaTimer(z.held.soa.Retry, z.opt.Refresh)
		default:
			backoff = time.Second
			next = soaTimer(z.held.soa.Refresh, z.opt.Refresh)
		}
		if !waitNotify(ctx, jitterWait(next), z.notify, &notified) {
			return
		}
	}
}

// NotifyInterval is the least time between two SOA checks of one zone
// that NOTIFYs ask for. Without it a stream of NOTIFYs forged from the
// primary's address had dnsfence query the primary as fast as it answered
// (thousands a second on a LAN). BIND limits the same (serial-query-rate,
// 20 a second for all its zones); a change a NOTIFY announces waits a
// second at most.
const NotifyInterval = time.Second

// waitNotify blocks for d or until ctx is done or notify fires, as wait
// does; woken by notify less than NotifyInterval after *notified, it
// waits for the rest of that interval (the wake-up is kept, not dropped),
// and it sets *notified to when it returns for a NOTIFY.
func waitNotify(ctx context.Context, d time.Duration, notify <-chan struct{}, notified *time.Time) bool {
	if ok, woken := wait(ctx, d, notify); !ok || !woken {
		return ok
	}
	if rest := time.Until(notified.Add(NotifyInterval)); rest > 0 {
		if ok, _ := wait(ctx, rest, nil); !ok {
			return false
		}
	}
	*notified = time.Now()
	return true
}

// soaTimer returns an SOA timer (seconds) capped by limit; a zero timer
// means limit.
func soaTimer(secs uint32, limit time.Duration) time.Duration {
	if d := time.Duration(secs) * time.Second; d > 0 && d < limit {
		return d
	}
	return limit
}

// Fetch transfers the whole zone once by AXFR, changing no state.
func (z *Zone) Fetch(ctx context.Context) (Content, error) {
	addrs, err := z.addresses(ctx)
	if err != nil {
		return Content{}, fmt.Errorf("%s: %w", z.name, err)
	}
	var errs []error
	for _, addr := range addrs {
		res, err := z.client.transfer(ctx, addr, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		return Content{Source: z.name, Kind: KindZone, Fetched: time.Now(), Zone: z.zone, Serial: res.soa.Serial,
			Records: append([]dns.RR{res.soa}, res.rrs...), Transfer: TransferAXFR}, nil
	}
	return Content{}, fmt.Errorf("%s: %w", z.name, errors.Join(errs...))
}

// addresses returns the primary's addresses as HOST:PORT, resolving a
// name, and keeps them for Notify.
func (z *Zone) addresses(ctx context.Context) ([]string, error) {
	z.mu.Lock()
	ips := z.primaries
	z.mu.Unlock()
	if _, err := netip.ParseAddr(z.host); err != nil {
		lctx, cancel := context.WithTimeout(ctx, z.opt.Timeout)
		defer cancel()
		found, err := z.lookup(lctx, z.host)
		if err != nil || len(found) == 0 {
			return nil, fmt.Errorf("resolving primary %s: %w", z.host, err)
		}
		for i := range found {
			found[i] = found[i].Unmap()
		}
		z.mu.Lock()
		z.primaries = found
		z.mu.Unlock()
		ips = found
	}
	out := make([]string, len(ips))
	for i, a := range ips {
		out[i] = net.JoinHostPort(a.String(), z.port)
	}
	return out, nil
}

// refresh checks the primary's serial and, when it is newer than the one
// held (or nothing is held), transfers and delivers the zone. It tries
// each of the primary's addresses until one answers.
func (z *Zone) refresh(ctx context.Context, deliver func(Content) error) error {
	now := time.Now()
	z.track.attempt(now)
	addrs, err := z.addresses(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", z.name, err)
	}
	var errs []error
	for _, addr := range addrs {
		c, commit, err := z.pull(ctx, addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: primary %s: %w", z.name, addr, err))
			continue
		}
		if c == nil && z.refused && z.held != nil {
			// The primary's serial went back to the zone held: the copy
			// refused is no longer the primary's, and the zone held is
			// offered again, so that the reload drops the copy it holds.
			c, commit, err = z.reoffer(ctx, addr)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: primary %s: %w", z.name, addr, err))
				continue
			}
		}
		if c != nil {
			if err := deliver(*c); err != nil {
				z.refused = true
				return refusedError(c, err)
			}
			z.refused = false
			commit()
			// A new zone held: a serial older than it is waited for
			// from the first look that finds it so, not from one that
			// found a serial older than the zone it replaced.
			z.olderSince = time.Time{}
			if c.Transfer == TransferHeld { // served and on disk already
				z.track.succeeded(now, nil)
				return nil
			}
			z.track.succeeded(now, c)
			z.writeCache(c)
			return nil
		}
		z.track.succeeded(now, nil)
		if z.track.cacheFailing() {
			z.writeHeld(ctx, addr) // the disk copy is not the zone held: again
		}
		return nil
	}
	return errors.Join(errs...)
}

// pull asks the primary at addr for the zone's SOA and, when its serial is
// newer than the one held, transfers the zone. It returns the new content
// and the function that makes it the zone held, or nil when the zone held
// is current.
func (z *Zone) pull(ctx context.Context, addr string) (*Content, func(), error) {
	soa, err := z.client.querySOA(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	var have *dns.SOA
	if z.held != nil {
		have = z.held.soa
		switch {
		case serialNewer(soa.Serial, have.Serial):
			z.olderSince = time.Time{}
		case soa.Serial == have.Serial:
			z.olderSince = time.Time{}
			return nil, nil, nil
		default:
			if err := z.older(soa.Serial); err != nil {
				return nil, nil, err
			}
			have = nil // the primary's zone, whole, whatever its serial
		}
	}
	// A whole zone in answer to the IXFR, or in the AXFR after it: the
	// records held are no use for it, and letting them go first keeps two
	// copies of a large zone from being held at once (release keeps what
	// counting the changes needs).
	res, err := z.client.transfer(ctx, addr, have, z.releaseHeld)
	var ch *zoneChange
	if err == nil && res.kind == TransferIXFR {
		ch, err = z.held.plan(res.diffs)
	}
	var unreached *unreachedError
	if have != nil && (err == nil && res.condensed ||
		err != nil && !errors.Is(err, ErrTSIG) && !errors.As(err, &unreached) && ctx.Err() == nil &&
			!errors.Is(err, context.DeadlineExceeded)) {
		// The primary cannot give differences that fit the zone held, or
		// will not give them, or its IXFR failed under way: take the
		// whole zone. A failed IXFR is followed by an AXFR, as BIND's
		// secondary follows it (xfrin_fail: DNS_R_BADIXFR): one answered
		// with any RCODE (NOTIMP and FORMERR from a primary without IXFR,
		// REFUSED or SERVFAIL from one that serves AXFR alone), cut off
		// or timed out under way (a middlebox that drops a long answer),
		// unreadable, out of order or over sources.max_bytes; not one
		// with a TSIG error, nor one that never connected or ran out of
		// time, which an AXFR would meet again. The AXFR's own answer
		// decides. The records held go once it brings a zone, not
		// before: an AXFR refused too keeps them.
		res, err = z.client.transfer(ctx, addr, nil, z.releaseHeld)
	}
	if err != nil {
		return nil, nil, err
	}
	if res.kind == "" || have != nil && !serialNewer(res.soa.Serial, have.Serial) {
		// The SOA query said the primary has a newer zone, its transfer
		// that it has not: a primary out of step with itself (a load
		// balancer in front of primaries that differ), or the zone
		// changed back in between. The zone held is kept, and the look
		// is a failure, so that a zone never refreshed does not report a
		// success at every look; the next look asks again.
		return nil, nil, fmt.Errorf("primary's SOA has serial %d, but its transfer serial %d, not newer than the %d held; keeping the zone held",
			soa.Serial, res.soa.Serial, have.Serial)
	}
	c := &Content{Source: z.name, Kind: KindZone, Fetched: time.Now(), Zone: z.zone, Serial: res.soa.Serial, Transfer: res.kind}
	var commit func()
	if res.kind == TransferIXFR {
		c.Records = z.held.preview(ch)
		c.Added, c.Removed = len(ch.added), len(ch.removed)
		c.Delta = &Delta{From: z.held.soa.Serial, Added: slices.Clone(ch.added), Removed: make([]dns.RR, 0, len(ch.removed))}
		for _, pos := range slices.Sorted(maps.Keys(ch.removed)) {
			c.Delta.Removed = append(c.Delta.Removed, z.held.rrs[pos])
		}
		held := z.held
		commit = func() { held.commit(ch) }
	} else {
		c.Records = make([]dns.RR, 0, len(res.rrs)+1)
		c.Records = append(append(c.Records, res.soa), res.rrs...)
		if z.held != nil {
			same := z.held.overlap(res.rrs)
			c.Added, c.Removed = len(res.rrs)-same, z.held.live-same
		}
		commit = func() { z.held = newZoneCopy(res.soa, res.rrs) }
	}
	if res.dropped > 0 {
		z.opt.Log.Warn("zone transfer held records outside the zone; dropped", zap.String("source", z.name),
			zap.Int("dropped", res.dropped))
	}
	return c, commit, nil
}

// The most a zone's SOA timers (seconds) count for in the wait for a
// primary whose serial went back, as BIND clamps them (DNS_MAX_REFRESH,
// DNS_MAX_RETRY, DNS_MAX_EXPIRE in lib/dns/zone.c).
const (
	maxSOARefresh = 4 * 7 * 24 * 3600  // 4 weeks
	maxSOARetry   = 2 * 7 * 24 * 3600  // 2 weeks
	maxSOAExpire  = 24 * 7 * 24 * 3600 // 24 weeks
)

// older judges a primary whose serial is older than the zone held's:
// an error that keeps the zone held until the held SOA's expire (at least
// its refresh plus retry, at most 24 weeks) has passed since the first look that found it
// older; then nil, with a warning, and the zone is transferred whole.
func (z *Zone) older(serial uint32) error {
	held := z.held.soa
	// Clamped as BIND clamps the timers of a zone it pulls (refresh at
	// most 4 weeks, retry 2, expire from their sum to 24 weeks), so that
	// an expire of 4294967295 (136 years) does not keep the zone held
	// for good; summed in uint64: in uint32 a refresh of 4294967295 and
	// a retry of 1 are 0.
	// A zero refresh or retry counts as the time dnsfence waits between
	// looks for it (soaTimer: sources.refresh), as BIND's counts as its
	// min-refresh-time and min-retry-time: with all three timers 0 the
	// wait was none, and an older serial seen at one look (a stale
	// primary behind a load balancer, once) was taken at that look.
	timer := func(secs, most uint32) uint64 {
		if secs == 0 {
			return uint64(z.opt.Refresh / time.Second)
		}
		return uint64(min(secs, most))
	}
	least := timer(held.Refresh, maxSOARefresh) + timer(held.Retry, maxSOARetry)
	expire := time.Duration(min(max(uint64(held.Expire), least), maxSOAExpire)) * time.Second
	now := time.Now()
	if z.olderSince.IsZero() {
		z.olderSince = now
	}
	if at := z.olderSince.Add(expire); now.Before(at) {
		return fmt.Errorf("primary has serial %d, older than the %d held; keeping the zone held, until %s if the primary keeps it (the held SOA's expire, %s)",
			serial, held.Serial, at.UTC().Format(time.RFC3339), expire)
	}
	z.opt.Log.Warn("zone primary's serial went back and stayed back for the held SOA's expire; transferring its zone whole",
		zap.String("source", z.name), zap.Uint32("serial", serial), zap.Uint32("held_serial", held.Serial),
		zap.Time("older_since", z.olderSince), zap.Duration("expire", expire))
	return nil
}

// reoffer is the zone held as content to deliver again, and the function
// that makes it the zone held: its own records, or, when they were let go
// for a whole transfer that was then refused (zoneCopy.release), the
// primary's zone transferred whole again from addr.
func (z *Zone) reoffer(ctx context.Context, addr string) (*Content, func(), error) {
	if !z.held.released {
		return z.heldContent(), func() {}, nil
	}
	res, err := z.client.transfer(ctx, addr, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	if held := z.held.soa.Serial; res.soa.Serial != held && !serialNewer(res.soa.Serial, held) {
		// The SOA query said the zone held, the transfer an older one (a
		// primary out of step with itself): never a step back.
		return nil, nil, fmt.Errorf("primary's SOA has serial %d, but its transfer serial %d, older than the %d held; keeping the zone held",
			held, res.soa.Serial, held)
	}
	c := &Content{Source: z.name, Kind: KindZone, Fetched: time.Now(), Zone: z.zone, Serial: res.soa.Serial, Transfer: TransferAXFR,
		Records: append([]dns.RR{res.soa}, res.rrs...)}
	if c.Serial == z.held.soa.Serial {
		c.Fetched = z.track.status().VersionSince // the version held, fetched again
	}
	return c, func() { z.held = newZoneCopy(res.soa, res.rrs) }, nil
}

// heldContent is the zone held as content (TransferHeld), its records not
// let go: fetched when its version was first served.
func (z *Zone) heldContent() *Content {
	return &Content{Source: z.name, Kind: KindZone, Fetched: z.track.status().VersionSince, Zone: z.zone,
		Serial: z.held.soa.Serial, Transfer: TransferHeld, Records: z.held.records()}
}

// releaseHeld lets the records of the zone held go before a whole zone
// replaces it (zoneCopy.release).
func (z *Zone) releaseHeld() {
	if z.held != nil {
		z.held.release()
	}
}

// loadCache delivers the disk copy of the zone, if there is one.
func (z *Zone) loadCache(deliver func(Content) error) {
	c, err := z.readCopy()
	if errors.Is(err, ErrNoCopy) {
		return
	}
	if err != nil {
		z.track.cacheResult(err)
		z.opt.Log.Warn("zone source: disk copy not used", zap.String("source", z.name), zap.Error(err))
		return
	}
	if err := deliver(*c); err != nil {
		z.track.failed(time.Now(), refusedError(c, err))
		return
	}
	z.held = newZoneCopy(c.Records[0].(*dns.SOA), slices.Clone(c.Records[1:]))
	z.track.served(c)
}

// readCopy reads the disk copy of the zone and checks it; ErrNoCopy when
// there is none.
func (z *Zone) readCopy() (*Content, error) {
	if z.opt.CacheDir == "" {
		return nil, ErrNoCopy
	}
	meta, payload, err := readCache(cachePath(z.opt.CacheDir, z.name), z.name, zoneKind)
	if err != nil {
		return nil, err
	}
	soa, rrs, err := unpackZone(payload, z.zone)
	if err == nil && soa.Serial != meta.Serial {
		err = fmt.Errorf("disk copy: SOA serial %d, metadata says %d", soa.Serial, meta.Serial)
	}
	if err != nil {
		return nil, err
	}
	records := make([]dns.RR, 0, len(rrs)+1)
	records = append(append(records, soa), rrs...)
	return &Content{Source: z.name, Kind: KindZone, FromCache: true, Fetched: meta.Fetched, Zone: z.zone,
		Serial: soa.Serial, Records: records, Transfer: TransferCache}, nil
}

// zoneKind is the cache kind of a zone: its records in DNS wire form (RFC
// 1035 §4.1.3, names uncompressed), one after another, the SOA first.
// Wire form reads back exactly and ten times faster than master file text,
// so a restart is served at once even for a zone of a million records.
const zoneKind = "zone-wire"

// unpackZone reads a zone written by writeCache.
func unpackZone(payload []byte, zone string) (*dns.SOA, []dns.RR, error) {
	var soa *dns.SOA
	var rrs []dns.RR
	for off := 0; off < len(payload); {
		rr, next, err := dns.UnpackRR(payload, off)
		if err != nil {
			return nil, nil, fmt.Errorf("disk copy: record at offset %d: %w", off, err)
		}
		off = next
		if soa == nil {
			s, isSOA := rr.(*dns.SOA)
			if !isSOA || !strings.EqualFold(s.Hdr.Name, zone) {
				return nil, nil, errors.New("disk copy: does not start with the zone's SOA")
			}
			soa = s
			continue
		}
		rrs = append(rrs, rr)
	}
	if soa == nil {
		return nil, nil, errors.New("disk copy: empty")
	}
	return soa, rrs, nil
}

// writeZone writes records to w in the form unpackZone reads, one at a
// time.
func writeZone(w io.Writer, records []dns.RR) error {
	scratch := make([]byte, dns.MaxMsgSize)
	for _, rr := range records {
		n, err := dns.PackRR(rr, scratch, 0, nil, false)
		if err != nil {
			return fmt.Errorf("packing %s: %w", rr.Header().Name, err)
		}
		if _, err := w.Write(scratch[:n]); err != nil {
			return err
		}
	}
	return nil
}

// writeCache keeps c as the zone's disk copy. The records are packed once,
// into a file of their own while their hash is taken (the metadata line,
// which holds it, comes first), then copied behind that line: the payload
// is never held whole in memory.
func (z *Zone) writeCache(c *Content) {
	if z.opt.CacheDir == "" {
		return
	}
	err := z.writeCacheFile(c)
	z.track.cacheResult(err)
	if err != nil {
		z.opt.Log.Warn("zone source: keeping the disk copy failed", zap.String("source", z.name), zap.Error(err))
	}
}

// writeHeld writes the zone held to the disk copy. When its records were
// let go for a whole transfer that did not come (zoneCopy.release: cut
// off, refused), the zone is transferred whole again from addr, as
// reoffer does, and held and written only if it is the version held,
// record for record (the fingerprints release kept): a newer one is the
// next look's to deliver, and one of the serial held with other records
// (a zone edited without a new serial) is not the zone served. So a disk
// copy that could not be written is written once the disk is back, not at
// the primary's next serial (a restart with the primary down meanwhile
// starts without the list). The transfer's failure is logged and left to
// the next look.
func (z *Zone) writeHeld(ctx context.Context, addr string) {
	if z.held == nil {
		return
	}
	if !z.held.released {
		z.writeCache(z.heldContent())
		return
	}
	c, commit, err := z.reoffer(ctx, addr)
	if err != nil {
		z.opt.Log.Warn("zone source: transferring the zone held again for its disk copy failed",
			zap.String("source", z.name), zap.String("primary", addr), zap.Error(err))
		return
	}
	if c.Serial != z.held.soa.Serial {
		return // a newer zone: the next look's to deliver
	}
	if same := z.held.overlap(c.Records[1:]); same != z.held.live || same != len(c.Records)-1 {
		// The primary's zone of this serial is not the one served (edited
		// without a new serial): held or written, it would be what the
		// next IXFR's differences are applied to here, and the list a
		// restart serves, while the resolver applies them to the zone it
		// serves.
		z.opt.Log.Warn("zone source: the primary's zone of the serial held is not the one served; its disk copy waits for the next serial",
			zap.String("source", z.name), zap.String("primary", addr), zap.Uint32("serial", c.Serial),
			zap.Int("served", z.held.live), zap.Int("transferred", len(c.Records)-1), zap.Int("same", same))
		return
	}
	commit()
	z.writeCache(c)
}

func (z *Zone) writeCacheFile(c *Content) error {
	path := cachePath(z.opt.CacheDir, z.name)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	payload, err := os.CreateTemp(filepath.Dir(path), payloadPattern)
	if err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	defer func() {
		payload.Close()
		os.Remove(payload.Name())
	}()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(payload, h), 1<<20)
	if err := writeZone(w, c.Records); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	return writeCacheWith(path, cacheMeta{Source: z.name, Kind: zoneKind, Fetched: c.Fetched, Zone: z.zone, Serial: c.Serial},
		[32]byte(h.Sum(nil)), func(w io.Writer) error {
			if _, err := payload.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err := io.Copy(w, payload)
			return err
		})
}
