package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/resolver"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/miekg/dns"
)

// loadSnapshot loads the configuration and everything it names, as serve
// does at startup. Remote lists are empty unless fetch: then each is
// fetched once (with diskCopy, read from its disk copy when the network
// fails), and what was found of each is returned.
func loadSnapshot(configPath string, fetch, diskCopy bool) (*resolver.Snapshot, []resolver.SourceReport, error) {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, nil, err
	}
	var reports []resolver.SourceReport
	var lists map[string]*blocklist.List
	if fetch {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		reports, lists = resolver.FetchSources(ctx, cfg, diskCopy)
	}
	snap, err := resolver.BuildSnapshotWith(cfg, nil, lists)
	return snap, reports, err
}

// fetchTimeout bounds `check -fetch` and `explain` fetching remote lists.
const fetchTimeout = 2 * time.Minute

// sourceSummary says what was fetched of a remote list, for check.
func sourceSummary(r resolver.SourceReport) string {
	c := r.Content
	if r.List == nil {
		return fmt.Sprintf("source %s: not fetched: %v", r.Name, r.Err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "source %s: ", r.Name)
	if r.DiskCopy {
		fmt.Fprintf(&b, "the network failed (%v); disk copy of %s: ", r.Err, c.Fetched.UTC().Format(time.RFC3339))
	} else {
		b.WriteString("fetched: ")
	}
	if c.Kind == source.KindZone {
		fmt.Fprintf(&b, "zone %s serial %d, %d records, %d entries", c.Zone, c.Serial, r.Size, r.List.Len())
	} else {
		fmt.Fprintf(&b, "%d bytes, %d entries, sha256 %s", r.Size, r.List.Len(), r.List.Hash()[:16])
		if c.ETag != "" {
			fmt.Fprintf(&b, ", ETag %s", c.ETag)
		}
	}
	return b.String()
}

// checkOptions are check's flags.
type checkOptions struct {
	fs     *flag.FlagSet
	config *string
	strict *bool
	fetch  *bool
}

func checkFlags() checkOptions {
	fs := flag.NewFlagSet("dnsfence check", flag.ContinueOnError)
	return checkOptions{
		fs:     fs,
		config: configFlag(fs),
		strict: fs.Bool("strict", false, "exit 1 on warnings too (skipped list or range lines, likely mistakes): for a team's CI"),
		fetch: fs.Bool("fetch", false, "fetch each remote list (URL or zone transfer) once, check it as serve would and report it;\n"+
			"a source that fails is a warning, and its disk copy in sources.cache_dir is read and reported, as serve starts from it"),
	}
}

// runCheck loads everything exactly as serve does at startup, prints the
// policies, ranges and list sizes, every skipped line and every likely
// mistake. It exits 0 when serve would start with this configuration (the
// systemd unit runs it before every start and reload), 1 when serve would
// refuse it, each problem as file:line: reason; with -strict, warnings
// exit 1 as well.
func runCheck(args []string, stdout, stderr io.Writer) int {
	opts := checkFlags()
	rest, code, done := parseCommand("check", opts.fs, args, stdout, stderr)
	if done {
		return code
	}
	if !noArguments("check", rest, "give the configuration with -config", stderr) {
		return 2
	}
	configPath := opts.config
	// With -fetch, a list the network does not give is read from its disk
	// copy, as serve starts from it.
	snap, reports, err := loadSnapshot(*configPath, *opts.fetch, true)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	cfg := snap.Config
	// The certificate pair, as serve reads it before listening.
	leaf, err := cfg.CheckCertificate()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// The upstreams as serve reads them (a resolv.conf's nameservers),
	// none asked.
	upstreams, err := resolver.UpstreamAddresses(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "config %s\n", cfg.File)
	fmt.Fprintf(stdout, "listen %s\n", strings.Join(cfg.Listen, " "))
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"listen_tls", cfg.ListenTLS}, {"listen_https", cfg.ListenHTTPS}, {"listen_quic", cfg.ListenQUIC}} {
		if len(l.addrs) > 0 {
			fmt.Fprintf(stdout, "%s %s\n", l.key, strings.Join(l.addrs, " "))
		}
	}
	if leaf != nil {
		left := time.Until(leaf.NotAfter)
		fmt.Fprintf(stdout, "tls.cert %s: expires %s (in %d days)\n", cfg.Path(cfg.TLS.Cert),
			leaf.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
	}
	designated, ddrWarnings := resolver.DesignationCheck(cfg, leaf)
	if designated != "" {
		fmt.Fprintf(stdout, "ddr _dns.resolver.arpa SVCB designates %s (RFC 9462)\n", designated)
	}
	fmt.Fprintf(stdout, "upstreams %s\n", strings.Join(cfg.Upstreams, " "))
	if !slices.Equal(upstreams, cfg.Upstreams) {
		fmt.Fprintf(stdout, "  forwards to %s\n", strings.Join(upstreams, " "))
	}
	if cfg.UpstreamCA != "" {
		fmt.Fprintf(stdout, "upstream_ca %s\n", cfg.Path(cfg.UpstreamCA))
	}
	// The question the upstreams' health and /readyz are judged by: an
	// internal-only upstream that answers the root's SERVFAIL is down and
	// the instance unready until it names a name of its own.
	fmt.Fprintf(stdout, "upstream_health_check %s\n", cfg.HealthCheck())
	fmt.Fprintf(stdout, "allowed_clients %s\n", strings.Join(cfg.AllowedClients, " "))
	fetched := map[string]bool{} // remote lists a copy was read of
	for _, r := range reports {
		fetched[r.Name] = r.List != nil
	}
	for i, p := range cfg.Policies {
		fmt.Fprintf(stdout, "policy %q %s\n", p.Name, snap.Policies[i].Kind())
		for _, cr := range snap.PolicyTable().AllSorted() {
			if cr.Policy.Name == p.Name {
				fmt.Fprintf(stdout, "  range %s (%s:%d)\n", cr.Range.Prefix, cr.Range.File, cr.Range.Line)
			}
		}
		for _, kind := range []struct {
			key   string
			lists []string
		}{{"block", p.Block}, {"allow", p.Allow}} {
			for _, f := range kind.lists {
				l := snap.Lists[cfg.Path(f)]
				switch {
				case config.IsRemote(f) && !*opts.fetch:
					fmt.Fprintf(stdout, "  %s %s: remote list, not fetched (check -fetch fetches it once)\n", kind.key, f)
				case config.IsRemote(f) && !fetched[f]:
					fmt.Fprintf(stdout, "  %s %s: remote list, no copy (neither the network nor a disk copy gave it)\n", kind.key, f)
				case config.IsRemote(f):
					fmt.Fprintf(stdout, "  %s %s: remote list, %d entries\n", kind.key, f, l.Len())
				default:
					fmt.Fprintf(stdout, "  %s %s: %d entries, sha256 %s\n", kind.key, l.File(), l.Len(), l.Hash()[:16])
				}
			}
		}
		if pol := snap.Policies[i]; *opts.fetch && !pol.Ready() {
			verb := "has"
			if len(pol.NotReady()) > 1 {
				verb = "have"
			}
			fmt.Fprintf(stdout, "  not ready: SERVFAIL (EDE 14) to its clients for every name its other lists neither block nor allow until %s %s a copy (sources.servfail_until_ready)\n",
				strings.Join(pol.NotReady(), ", "), verb)
		}
	}
	for _, r := range reports {
		fmt.Fprintln(stdout, sourceSummary(r))
	}
	// Skipped lines first, as serve logs them, then the likely mistakes.
	var warnings []string
	for _, w := range snap.Warnings {
		for line := range strings.SplitSeq(w.Error(), "\n") {
			warnings = append(warnings, line+" (line skipped)")
		}
	}
	for _, r := range reports {
		// The bad lines of a copy read are in the snapshot's warnings.
		if r.Err != nil {
			warnings = append(warnings, fmt.Sprintf("remote list %s: %v", r.Name, r.Err))
		}
	}
	for _, w := range append(snap.Lint(), ddrWarnings...) {
		warnings = append(warnings, w.String())
	}
	for _, w := range warnings {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%d warnings, 0 errors\n", len(warnings))
	if *opts.strict && len(warnings) > 0 {
		fmt.Fprintf(stdout, "failing: -strict and %d warnings\n", len(warnings))
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// explainOptions are explain's flags.
type explainOptions struct {
	fs      *flag.FlagSet
	config  *string
	resolve *bool
	json    *bool
	proxy   *string
}

func explainFlags() explainOptions {
	fs := flag.NewFlagSet("dnsfence explain", flag.ContinueOnError)
	return explainOptions{
		fs:      fs,
		config:  configFlag(fs),
		resolve: fs.Bool("resolve", false, "also ask the upstreams and explain the answer's CNAME/DNAME chain hop by hop"),
		json:    fs.Bool("json", false, "print the explanation as JSON"),
		proxy: fs.String("proxy", "", "for a CLIENT network (10.1.2.0/24): the trusted proxy whose EDNS Client Subnet option names it\n"+
			"(default: the first address of trusted_proxies)"),
	}
}

// Exit codes of explain, for scripts.
const (
	explainForwarded = 0 // the client gets the upstream's answer (also allowed and shadow verdicts), or dnsfence's own (local: resolver.arpa, onion, invalid, localhost)
	explainBlocked   = 1 // the policy blocks it
	explainError     = 2 // bad arguments, or the configuration does not load
	explainRefused   = 3 // the client is outside allowed_clients, or the type is a zone transfer
	explainNotReady  = 4 // SERVFAIL: a remote block list of the policy has no copy (sources.servfail_until_ready)
)

// explainCode is the exit code of an explanation's result.
func explainCode(e resolver.Explanation) int {
	switch e.Result {
	case resolver.ResultBlocked:
		return explainBlocked
	case resolver.ResultRefused:
		return explainRefused
	case resolver.ResultServfail:
		return explainNotReady
	}
	return explainForwarded
}

// notHostName says what is wrong with a NAME pasted as a URL, a host and
// port, a path or with white space (`https://www.tiktok.com/@user`,
// `www.tiktok.com:443`), "" for any other: DNS lets a label hold those
// octets, so the name would be explained as one no list holds,
// "forwarded", which reads as "not blocked" to a script, as for an empty
// label. A name written with \ escapes is taken as written.
func notHostName(s string) string {
	host, parts := blocklist.HostMeant(s)
	if strings.Contains(s, `\`) || !parts {
		return ""
	}
	msg := fmt.Sprintf("%q is not a domain name: a URL, a port, a path or white space is no part of one", s)
	if _, err := blocklist.ToASCII(host); host != "" && err == nil {
		return msg + "; did you mean " + host + "?"
	}
	return msg + "; e.g. www.tiktok.com"
}

// runExplain prints the decision for one client and name and every reason;
// the exit code is the verdict (explainForwarded and the others).
func runExplain(args []string, stdout, stderr io.Writer) int {
	opts := explainFlags()
	fs := opts.fs
	rest, code, done := parseCommand("explain", fs, args, stdout, stderr)
	if done {
		return code
	}
	if len(rest) < 2 || len(rest) > 3 {
		got := "no arguments"
		switch len(rest) {
		case 0:
		case 1:
			got = fmt.Sprintf("1 argument (%s)", rest[0])
		default:
			got = fmt.Sprintf("%d arguments (%s)", len(rest), strings.Join(rest, " "))
		}
		fmt.Fprintf(stderr, "dnsfence explain: %s; give CLIENT NAME [TYPE]\n\n", got)
		c, _ := commandNamed("explain")
		commandUsage(stderr, c)
		return explainError
	}
	configPath, resolve, asJSON := opts.config, opts.resolve, opts.json
	client, subnet, err := explainClient(rest[0])
	if err != nil {
		fmt.Fprintf(stderr, "dnsfence explain: client: %v\n", err)
		return explainError
	}
	qtype := dns.TypeA
	if len(rest) == 3 {
		t, ok := queryType(rest[2])
		if !ok {
			fmt.Fprintf(stderr, "dnsfence explain: unknown query type %q (e.g. A, AAAA, HTTPS, or TYPE65 by number)\n", rest[2])
			return explainError
		}
		if resolver.MetaQType(t) {
			// Answered FORMERR before anything else (Handler's step 1):
			// nothing to explain.
			fmt.Fprintf(stderr, "dnsfence explain: %s is a meta type, which no question may ask (RFC 6895 §3.1): dnsfence answers FORMERR to one and forwards nothing\n", dns.Type(t))
			return explainError
		}
		qtype = t
	}
	// Asked first: `bücher.example:443` is a name with a port, before
	// the colon is a rune no internationalised name may hold.
	if msg := notHostName(rest[1]); msg != "" {
		fmt.Fprintf(stderr, "dnsfence explain: name: %s\n", msg)
		return explainError
	}
	// A name typed in Unicode is asked in DNS, and listed, in its ASCII
	// form: convert it as the lists convert their entries.
	name, err := blocklist.ToASCII(rest[1])
	if err != nil {
		fmt.Fprintf(stderr, "dnsfence explain: name: %v\n", err)
		return explainError
	}
	// A name no query can carry (an empty label, over 255 octets) is no
	// question: "forwarded" for www..tiktok.com would read as "not
	// blocked" to a script (dig: "is not a legal name").
	if esc, bad := blocklist.BadEscape(name); bad {
		fmt.Fprintf(stderr, "dnsfence explain: name: %q is not a domain name: %s is no escape (RFC 1035 §5.1: a backslash before a digit begins \\DDD, three decimal digits from 000 to 255, as dig reads it); e.g. www.tiktok.com\n", rest[1], esc)
		return explainError
	}
	if !blocklist.IsDomainName(name) {
		fmt.Fprintf(stderr, "dnsfence explain: name: %q is not a domain name (an empty label, a label over 63 octets, or over 255 octets in all); e.g. www.tiktok.com\n", rest[1])
		return explainError
	}
	// Remote lists are fetched once (from their disk copies when the
	// network fails): the decision needs every list.
	snap, reports, err := loadSnapshot(*configPath, true, true)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return explainError
	}
	for _, r := range reports {
		switch {
		case r.List == nil && snap.AnswersServfail(r.Name):
			// The decision is known without it: its policies' clients
			// get SERVFAIL for the names their other lists leave.
			fmt.Fprintf(stderr, "note: remote list %s: neither the network nor a disk copy gave it (%v); sources.servfail_until_ready answers SERVFAIL for it\n", r.Name, r.Err)
		case r.List == nil:
			fmt.Fprintf(stderr, "dnsfence explain: remote list %s: neither the network nor a disk copy gave it: %v\n", r.Name, r.Err)
			return explainError
		case r.DiskCopy:
			fmt.Fprintf(stderr, "note: remote list %s: from its disk copy of %s; the network failed: %v\n",
				r.Name, r.Content.Fetched.UTC().Format(time.RFC3339), r.Err)
		}
	}
	var e resolver.Explanation
	if subnet.IsValid() {
		proxy, err := explainProxy(snap.Config, *opts.proxy)
		if err != nil {
			fmt.Fprintf(stderr, "dnsfence explain: %v\n", err)
			return explainError
		}
		e = snap.ExplainFor(resolver.Identity{Source: proxy, Client: subnet, Via: resolver.IdentityECS}, name, qtype)
	} else {
		e = snap.Explain(client, name, qtype)
	}
	if name != rest[1] {
		e.Typed = rest[1]
	}
	if *resolve && e.Forwarded() {
		req := new(dns.Msg)
		req.SetQuestion(e.Name, qtype)
		if err := resolver.ConnectUpstreams(nil, snap, nil, nil); err != nil {
			fmt.Fprintf(stderr, "resolve: %v\n", err)
			return explainError
		}
		defer snap.Forwarder().Close()
		resp, _, err := snap.Forwarder().Forward(context.Background(), req, false)
		if err != nil {
			fmt.Fprintf(stderr, "resolve: %v\n", err)
			return explainError
		}
		snap.ExplainAnswer(&e, resp)
	}
	if *asJSON {
		out, err := json.MarshalIndent(e, "", "  ")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return explainError
		}
		fmt.Fprintln(stdout, string(out))
		return explainCode(e)
	}
	fmt.Fprint(stdout, e.String())
	return explainCode(e)
}

// explainClient reads explain's CLIENT: an address, or a network (CIDR)
// as a trusted proxy's EDNS Client Subnet option names one, read as
// client ranges are (blocklist.ParsePrefix: IPv4-mapped forms as IPv4;
// host bits, brackets and IPv4-compatible forms refused with the range
// meant). subnet is valid for a network only. An address's zone
// (`fe80::1%eth0`) is dropped, as the listeners drop a peer's.
func explainClient(arg string) (client netip.Addr, subnet netip.Prefix, err error) {
	addr := arg
	if a, err := netip.ParseAddr(arg); err == nil && a.Zone() != "" {
		// Read without its zone, as written (`::10.1.2.3` keeps its
		// dotted form, which ParsePrefix refuses).
		addr, _, _ = strings.Cut(arg, "%")
	}
	p, err := blocklist.ParsePrefix(addr)
	if err != nil {
		if msg, ok := blocklist.Meant(arg, err); ok {
			return netip.Addr{}, netip.Prefix{}, errors.New(msg)
		}
		if err == blocklist.ErrBadRange || errors.Is(err, blocklist.ErrRangeName) {
			return netip.Addr{}, netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a network (10.1.2.0/24); the order is CLIENT NAME, e.g. dnsfence explain 10.1.2.3 www.tiktok.com", arg)
		}
		return netip.Addr{}, netip.Prefix{}, fmt.Errorf("%q: %v; a network is its first address and a length, e.g. 10.1.2.0/24", arg, err)
	}
	if !strings.Contains(arg, "/") {
		return p.Addr(), netip.Prefix{}, nil
	}
	return p.Addr(), p, nil
}

// explainProxy is the trusted proxy a network is explained as coming
// from: proxy, which must be in trusted_proxies (another's ECS option is
// not believed), or the first address of trusted_proxies.
func explainProxy(cfg *config.Config, proxy string) (netip.Addr, error) {
	trusted := cfg.TrustedPrefixes()
	if proxy == "" {
		if len(trusted) == 0 {
			return netip.Addr{}, fmt.Errorf("a network is named only by a trusted proxy's EDNS Client Subnet option, and %s has no trusted_proxies: "+
				"explain one address (10.1.2.3), or list the forwarder in trusted_proxies", cfg.File)
		}
		return trusted[0].Addr(), nil
	}
	a, err := netip.ParseAddr(proxy)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("-proxy: %w", err)
	}
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("-proxy %s is not in trusted_proxies: the EDNS Client Subnet option it sends is not believed", a)
}

// queryType reads a query type as dig takes one: its mnemonic in any case
// (AAAA, https), or TYPE and its number for any type (TYPE65, RFC 3597
// §5), 1 to 65535.
func queryType(s string) (uint16, bool) {
	s = strings.ToUpper(s)
	if t, ok := dns.StringToType[s]; ok {
		return t, true
	}
	digits, ok := strings.CutPrefix(s, "TYPE")
	n, err := strconv.ParseUint(digits, 10, 16)
	return uint16(n), ok && err == nil && n > 0
}
