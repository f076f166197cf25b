package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"go.uber.org/zap"
)

// UpstreamAddresses is what cfg's upstreams forward to, as written with
// every resolv.conf path read for its nameservers on port 53, leaving out
// dnsfence itself (config.ResolveUpstreams); FallbackUpstreams for the
// embedded default when they name none. It fails, as serve and `check`
// do, when a resolv.conf cannot be read or no upstream is left.
func UpstreamAddresses(cfg *config.Config) ([]string, error) {
	addrs, err := cfg.ResolveUpstreams()
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 && cfg.Embedded {
		addrs = FallbackUpstreams
	}
	if len(addrs) > 0 {
		if err := systemLookupLoops(cfg, addrs); err != nil {
			return nil, err
		}
		return addrs, nil
	}
	var confs []string
	for _, u := range cfg.Upstreams {
		if config.IsResolvConf(u) {
			confs = append(confs, u)
		}
	}
	self, zoned := cfg.ResolvConfLeftOut()
	hint := ""
	for _, ap := range self {
		if !cfg.PlainUpstreamLoops(ap) {
			// Written as an upstream, it is taken as another server
			// (config's checkLoop): Docker's embedded DNS is one. A
			// listen address of dnsfence's own (127.0.0.53:53) is not.
			hint = fmt.Sprintf(" (a nameserver at another loopback address, such as Docker's embedded DNS at 127.0.0.11, is taken as another server when written so: upstreams: [%q])", ap.String())
			break
		}
	}
	what := "no nameserver but dnsfence itself (its listen addresses, or any loopback address when it listens on a wildcard address on port 53)"
	if len(zoned) > 0 {
		// The nameservers the forwarder refuses, by why, in the order
		// each why first comes.
		var whys []string
		byWhy := map[string][]string{}
		for _, ap := range zoned {
			_, err := upstream.ParseAddress(ap.String())
			why := "with an IPv6 zone"
			if ue, ok := errors.AsType[*upstream.UnreachableError](err); ok {
				why = ue.Kind
			} else if errors.Is(err, upstream.ErrIPv4Compatible) {
				why = "IPv4-compatible (::a.b.c.d, deprecated by RFC 4291)"
			}
			if byWhy[why] == nil {
				whys = append(whys, why)
			}
			byWhy[why] = append(byWhy[why], ap.Addr().String())
		}
		refused := make([]string, len(whys))
		for i, why := range whys {
			refused[i] = strings.Join(byWhy[why], ", ") + ", " + why
		}
		what = fmt.Sprintf("no nameserver dnsfence forwards to: %s, which upstreams do not support", strings.Join(refused, "; "))
		if len(self) > 0 {
			what += ", and dnsfence itself"
		}
	}
	return nil, fmt.Errorf("%s: upstreams: no usable upstream: %s names %s; give the upstream resolvers as IP:port%s",
		cfg.File, strings.Join(confs, " and "), what, hint)
}

// ConnectUpstreams gives snap, which must not be published yet, the
// forwarder to the upstreams its configuration names: those written, with
// every resolv.conf path read for its nameservers (FallbackUpstreams for
// the embedded default when they name none). prev is the snapshot served
// until snap is published (nil at start): its forwarder is kept when the
// upstreams, upstream_timeout, upstream_strategy and the parsed
// upstream_health_check are unchanged, else the new one (probing with the
// new health check) inherits what it learnt of the upstreams both name
// (upstream.Rebuild). Exchanges are counted into m (nil: not counted), and
// an upstream marked down or back up is logged to log (nil: not logged).
//
// Encrypted upstreams (tls://, https://, quic://) are verified against the
// system's roots plus upstream_ca (whose file the reloads then watch: a
// renewed bundle makes the forwarder anew), and an https upstream written with a
// host name is looked up through the plain upstreams of the list (the
// system's resolver when there are none) each time it connects; a reload
// makes its transport anew, so the name is looked up again.
//
// Serve calls it for its first snapshot and the Reloader for each it
// publishes; whoever publishes snap then retires a forwarder that snap
// replaced (Reloader.ReloadFor does). It fails when no usable upstream is
// left, a resolv.conf cannot be read, or upstream_ca cannot be loaded.
func ConnectUpstreams(log *zap.Logger, snap, prev *Snapshot, m *Metrics) error {
	cfg := snap.Config
	addrs, err := UpstreamAddresses(cfg)
	if err != nil {
		return err
	}
	opts := upstream.Options{
		Timeout:     cfg.UpstreamTimeout,
		Fastest:     cfg.UpstreamStrategy == config.StrategyFastest,
		HealthCheck: cfg.HealthCheck(),
		Log:         log,
	}
	var plain []string
	encrypted := false
	for _, a := range addrs {
		if pa, err := upstream.ParseAddress(a); err == nil && pa.Kind == upstream.KindPlain {
			plain = append(plain, pa.HostPort())
		} else if err == nil {
			encrypted = true
		}
	}
	if encrypted {
		ca := ""
		if cfg.UpstreamCA != "" {
			ca = cfg.Path(cfg.UpstreamCA)
		}
		opts.RootCAs, snap.caSum, err = upstream.LoadRootsSum(ca)
		if snap.caSum != ([32]byte{}) {
			snap.caFile = ca // read, if not parsed: see Snapshot.caFile
		}
		if err != nil {
			return fmt.Errorf("%s: upstream_ca: %w", cfg.File, err)
		}
		if len(plain) > 0 {
			opts.Resolve = lookupThrough(plain, cfg.UpstreamTimeout)
		}
	}
	if m != nil {
		opts.Metrics = m.upstreamMetrics
	}
	var old *upstream.Forwarder
	if prev != nil {
		old = prev.fwd
	}
	fwd, err := upstream.Rebuild(old, addrs, opts)
	if err != nil {
		return fmt.Errorf("%s: upstreams: %w", cfg.File, err)
	}
	snap.fwd = fwd
	return nil
}

// systemResolvConf is the resolv.conf the system resolver reads (a
// variable for tests).
var systemResolvConf = "/etc/resolv.conf"

// systemLookupLoops is the error of a configuration whose https upstream
// is written with a host name that only the system resolver can look up
// (there is no plain upstream to ask) while that resolver is dnsfence
// alone (config.SystemResolverIsSelf), as in a container whose
// resolv.conf names the dnsfence beside it: each connection's lookup
// would come back to dnsfence, wait for that same upstream, and time out,
// and every forwarded query fail. A name the hosts file gives an address
// (inHostsFile) is found there first, and is no such loop.
func systemLookupLoops(cfg *config.Config, addrs []string) error {
	var named []upstream.Address
	for _, a := range addrs {
		pa, err := upstream.ParseAddress(a)
		if err != nil {
			continue
		}
		if pa.Kind == upstream.KindPlain {
			return nil // the names are looked up through it (lookupThrough)
		}
		if pa.Kind == upstream.KindHTTPS {
			named = append(named, pa)
		}
	}
	for _, pa := range named {
		if _, err := netip.ParseAddr(pa.Host); err == nil || inHostsFile(pa.Host) {
			continue
		}
		// The first host the system resolver must look up decides: the
		// resolver is the same for every one.
		if !cfg.SystemResolverIsSelf(systemResolvConf) {
			return nil
		}
		return fmt.Errorf("%s: upstreams: %s names a host only the system resolver can look up, and %s names no resolver but dnsfence itself: "+
			"the lookup would come back to dnsfence and never be answered; write the upstream's address (https://IP/dns-query#%s), "+
			"or add a plain upstream to look the name up", cfg.File, pa.String(), systemResolvConf, pa.Host)
	}
	return nil
}

// inHostsFile reports whether the hosts file (/etc/hosts) gives name an
// address: Go's own resolver is asked with every DNS exchange failing, so
// that only the file can answer.
func inHostsFile(name string) bool {
	r := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errNoDNS
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	return err == nil && len(addrs) > 0
}

// errNoDNS is inHostsFile's resolver's every DNS exchange.
var errNoDNS = errors.New("no DNS: the hosts file only")

// retireForwarder retires the forwarder of prev when next, now published,
// has another: queries that still hold prev finish on it, or go to next's,
// and its sockets close once they are done (upstream.Forwarder.Retire).
func retireForwarder(prev, next *Snapshot) {
	if prev != nil && prev.fwd != nil && prev.fwd != next.fwd {
		prev.fwd.Retire(next.fwd)
	}
}

// errNoForwarder is the readiness of a snapshot that no ConnectUpstreams
// gave a forwarder.
var errNoForwarder = errors.New("no upstreams connected")

// lookupThrough is the Options.Resolve of an https upstream written with
// a host name: its A and AAAA records asked of the plain upstreams, one
// after another until one answers or the lookup's deadline passes
// (upstream.ContextErr). Each lookup makes its own transports and closes
// them: it runs only when a connection to the upstream is made.
func lookupThrough(plain []string, timeout time.Duration) func(ctx context.Context, host string) ([]netip.Addr, error) {
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		var errs []error
		for _, addr := range plain {
			t := upstream.NewPlain(addr, upstream.Options{Timeout: timeout})
			ips, err := lookupOn(ctx, t, host)
			_ = t.Close()
			if err == nil {
				return ips, nil
			}
			errs = append(errs, fmt.Errorf("asking %s: %w", addr, err))
			if upstream.ContextErr(ctx) != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}

// lookupOn asks t for host's A and AAAA records at once and returns the
// addresses of both answers (IPv4 first); an answer whose RCODE is not
// NOERROR, or two without an address, is an error.
func lookupOn(ctx context.Context, t upstream.Transport, host string) ([]netip.Addr, error) {
	types := []uint16{dns.TypeA, dns.TypeAAAA}
	answers := make([]*dns.Msg, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	for i, qtype := range types {
		wg.Go(func() {
			q := new(dns.Msg)
			q.SetQuestion(dns.Fqdn(host), qtype)
			q.SetEdns0(1232, false)
			answers[i], errs[i] = t.Exchange(ctx, q)
		})
	}
	wg.Wait()
	var ips []netip.Addr
	for i, m := range answers {
		if errs[i] != nil {
			continue
		}
		if m.Rcode != dns.RcodeSuccess {
			errs[i] = fmt.Errorf("%s %s: %s", host, dns.TypeToString[types[i]], dns.RcodeToString[m.Rcode])
			continue
		}
		for _, rr := range m.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				ip, _ := netip.AddrFromSlice(rr.A.To4())
				ips = append(ips, ip)
			case *dns.AAAA:
				ip, _ := netip.AddrFromSlice(rr.AAAA.To16())
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) == 0 {
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s has no address", host)
	}
	return ips, nil
}
