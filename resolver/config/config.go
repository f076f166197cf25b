package config

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"go.yaml.in/yaml/v3"
)

// Defaults for every key a deployment may leave out.
const (
	DefaultListen           = "127.0.0.1:5353"
	DefaultHTTP             = "127.0.0.1:9153"
	DefaultBlockedTTL       = 60 // seconds
	DefaultUpstreamTimeout  = 2 * time.Second
	DefaultDebounce         = 200 * time.Millisecond
	DefaultMaxShrink        = 0.5
	DefaultUnreadyAfter     = 5 * time.Minute
	DefaultCacheSize        = 20000
	DefaultCacheMaxTTL      = 86400            // seconds
	DefaultStaleRefreshTime = 30 * time.Second // RFC 8767 §5's failure recheck timer
	DefaultRate             = 200
	DefaultTCPConnections   = 1000
	DefaultTCPReadTimeout   = 2 * time.Second
	DefaultTCPIdleTimeout   = 10 * time.Second
	DefaultTCPPipeline      = 64
	DefaultUpstreamInflight = 1000
	// DefaultTCPConnectionsPerClient leaves room for about 30 clients to
	// fill tcp_connections. RFC 7766 §6.2.2 asks a client for no more than
	// one connection for its regular queries, so 32 only bites a host that
	// hoards them. dnsdist (setMaxTCPConnectionsPerClient) and Unbound
	// (tcp-connection-limit, which closes a connection over the limit at
	// once, as dnsfence does) have the cap but leave it off by default, and
	// nothing stops one client from holding all the connections then.
	DefaultTCPConnectionsPerClient = 32
	// DefaultUDPBuffer is the receive and send buffer asked for each UDP
	// socket. The kernel charges a small datagram about 2 KiB against it:
	// its usual 208 KiB (net.core.rmem_default) holds about 100 queries
	// waiting to be read, 1 ms at 100,000 queries a second, while 4 MiB
	// (which the kernel doubles) holds about 4,000, enough to ride out a
	// few tens of milliseconds without CPU. The kernel grants at most twice
	// net.core.rmem_max (wmem_max for sending).
	DefaultUDPBuffer = 4 << 20
	// DefaultStaleAnswerClientTimeout is RFC 8767 §5's client response
	// timer, the 1.8 s it recommends (as Unbound's
	// serve-expired-client-timeout).
	DefaultStaleAnswerClientTimeout = 1800 * time.Millisecond
)

// Bounds of limits.udp_receive_buffer and udp_send_buffer, in bytes: below
// one large datagram the socket is useless, and setsockopt takes a C int.
const (
	minUDPBuffer = 4096
	maxUDPBuffer = 1 << 30
)

// DefaultAllowedClients are loopback and the private ranges: dnsfence is
// never an open resolver unless told to be.
var DefaultAllowedClients = []string{
	"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
}

// Upstream strategies.
const (
	StrategyFastest = "fastest"
	StrategyOrdered = "ordered"
)

// DefaultExplainClients may ask the CHAOS explain query: loopback only.
var DefaultExplainClients = []string{"127.0.0.0/8", "::1/128"}

// Action is what a policy answers for a blocked name.
type Action string

// The actions a policy can take.
const (
	ActionNXDomain Action = "nxdomain"
	ActionRefused  Action = "refused"
	ActionNull     Action = "null"
	// ActionLog is shadow mode: decide and record as a block would, but
	// forward the query. Teams roll a policy out in shadow mode first.
	ActionLog Action = "log"
)

// Config is the YAML configuration file, after defaults are applied.
type Config struct {
	Listen          []string      `yaml:"listen"`
	Upstreams       []string      `yaml:"upstreams"`
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// UpstreamStrategy orders the healthy upstreams: "fastest" by measured
	// latency (default), "ordered" as written.
	UpstreamStrategy string `yaml:"upstream_strategy"`
	// UpstreamHealthCheck is the question every probe of an upstream's
	// health and /readyz's probe ask (upstream.HealthCheck says which
	// probes, and how the answer is judged): the root NS set by default;
	// a name of its own for an internal-only upstream that answers the
	// root SERVFAIL or REFUSED. Parsed by validate (HealthCheck).
	UpstreamHealthCheck HealthCheck `yaml:"upstream_health_check"`
	AllowedClients      []string    `yaml:"allowed_clients"`
	TrustedProxies      []string    `yaml:"trusted_proxies"`
	ExplainClients      []string    `yaml:"explain_clients"`
	// BlockedTTL is the TTL and SOA MINIMUM of blocked answers, in seconds
	// (RFC 2308 negative caching).
	BlockedTTL uint32   `yaml:"blocked_ttl"`
	Policies   []Policy `yaml:"policies"`
	Cache      Cache    `yaml:"cache"`
	Log        Log      `yaml:"log"`
	HTTP       *string  `yaml:"http"`
	// ShutdownDelay is how long, from SIGTERM or SIGINT, dnsfence goes on
	// answering with /readyz 503 before its listeners stop taking queries
	// (CoreDNS's health lameduck): a Kubernetes Service, or a load
	// balancer probing /readyz, takes the instance out meanwhile, where
	// queries it still sends an instance that stopped get no answer and
	// their clients wait out a timeout. 0 (the default) stops at once.
	ShutdownDelay time.Duration `yaml:"shutdown_delay"`
	Reload        Reload        `yaml:"reload"`
	RateLimit     RateLimit     `yaml:"rate_limit"`
	Limits        Limits        `yaml:"limits"`
	Sources       Sources       `yaml:"sources"`

	// TLS is the server certificate of every encrypted listener
	// (DESIGN.md §8).
	TLS TLS `yaml:"tls"`
	// ListenTLS are the addresses served with DNS over TLS (RFC 7858).
	ListenTLS []string `yaml:"listen_tls"`
	// ListenHTTPS are the addresses served with DNS over HTTPS (RFC 8484):
	// "host:port" and "https://host:port" over TLS, "http://host:port"
	// without it, for a TLS-terminating proxy in front.
	ListenHTTPS []string `yaml:"listen_https"`
	// ListenQUIC are the addresses served with DNS over QUIC (RFC 9250).
	ListenQUIC []string `yaml:"listen_quic"`
	// DDR answers `_dns.resolver.arpa SVCB` with the encrypted listeners
	// above that dnsfence terminates TLS for (RFC 9462 §4, Discovery of
	// Designated Resolvers), so that devices given dnsfence by address
	// move to them; NODATA when false. Default: true.
	DDR bool `yaml:"ddr"`
	// UpstreamCA is a PEM file of extra roots that encrypted upstreams'
	// certificates are verified against, besides the system's.
	UpstreamCA string `yaml:"upstream_ca"`

	// File is the configuration file's path; relative paths in it resolve
	// against its folder.
	File string `yaml:"-"`
	// ReadFile reads the range files the configuration names, and the
	// list files of the embedded default (the others are read in pieces,
	// blocklist.ReadList); blocklist.ReadFile (os.ReadFile that never
	// waits long for a named pipe) unless the configuration is the
	// embedded default.
	ReadFile func(path string) ([]byte, error) `yaml:"-"`
	// Embedded marks the built-in default, whose files are compiled in.
	Embedded bool `yaml:"-"`
	// Sum is the SHA-256 of the configuration file's raw bytes (a
	// byte-order mark included), as sha256sum prints it.
	Sum [32]byte `yaml:"-"`

	// allowed, trusted and the policies' clients, parsed by validate.
	allowed []netip.Prefix
	trusted []netip.Prefix
	explain []netip.Prefix
	// tlsLine is the line of tls.cert, for CheckCertificate's error.
	tlsLine int
	// lines are the lines of the entries of allowed_clients, listen,
	// listen_https, listen_tls, listen_quic and upstreams, and of the
	// values rate_limit.rate, rate_limit.burst and sources.max_bytes
	// written, by key (Line; 0: a default).
	lines map[string][]int
	// healthCheck is UpstreamHealthCheck, parsed by validate.
	healthCheck upstream.HealthCheck
}

// HealthCheck is `upstream_health_check` as written: Name a domain name
// (a trailing dot optional), Type the mnemonic of an RR type (any case).
// Left out, each is the root NS query's: "." and "NS".
type HealthCheck struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
}

// Default upstream_health_check: the root NS set, `. IN NS`.
const (
	DefaultHealthCheckName = "."
	DefaultHealthCheckType = "NS"
)

// TLS names the server certificate chain and its private key, both PEM.
// Relative paths resolve against the configuration file's folder.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Policy is one entry of `policies`.
type Policy struct {
	Name        string   `yaml:"name"`
	Clients     []string `yaml:"clients"`
	ClientFiles []string `yaml:"client_files"`
	Block       []string `yaml:"block"`
	Allow       []string `yaml:"allow"`
	Action      Action   `yaml:"action"`
	// DoHCanary answers NXDOMAIN for use-application-dns.net, the name
	// Firefox asks before turning on its own DNS-over-HTTPS, and for
	// mask.icloud.com and mask-h2.icloud.com, which Apple devices ask
	// before using iCloud Private Relay. Default: on for policies that
	// block.
	DoHCanary *bool `yaml:"doh_canary"`

	clients []blocklist.Range
	// lines holds the configuration file's line of each entry of
	// client_files, block and allow, by key, for messages about them.
	lines map[string][]int
}

// Cache bounds the answer cache.
type Cache struct {
	Size   int    `yaml:"size"`    // entries; 0 turns the cache off
	MinTTL uint32 `yaml:"min_ttl"` // seconds; every record TTL is raised to it
	MaxTTL uint32 `yaml:"max_ttl"` // seconds; every record TTL is cut to it
	// Prefetch refreshes popular answers shortly before they expire.
	Prefetch bool `yaml:"prefetch"`
	// ServeStale keeps answers this long past their TTL, to serve (with
	// TTL 30, and EDE 3, or EDE 19 for an NXDOMAIN) when every upstream
	// fails (RFC 8767); 0 is off.
	ServeStale time.Duration `yaml:"serve_stale"`
	// StaleRefreshTime is how long after every upstream failed to refresh
	// an expired answer that answer is served stale at once, without
	// asking them again (RFC 8767 §5's failure recheck timer, BIND's
	// stale-refresh-time); 0 asks them on every query.
	StaleRefreshTime time.Duration `yaml:"stale_refresh_time"`
	// StaleAnswerClientTimeout is how long a query whose cached answer has
	// expired, but may still be served stale, waits for the upstreams to
	// refresh it before it is answered stale, the refresh going on in the
	// background (RFC 8767 §5's client response timer; Unbound's
	// serve-expired-client-timeout, BIND's stale-answer-client-timeout);
	// 0 waits for the upstreams. It matters only with ServeStale.
	StaleAnswerClientTimeout time.Duration `yaml:"stale_answer_client_timeout"`
}

// Log selects the log level, encoding and per-query lines.
type Log struct {
	Level   string `yaml:"level"`   // debug | info | warn | error
	Format  string `yaml:"format"`  // json | console
	Queries string `yaml:"queries"` // blocked | all | none
	Output  string `yaml:"output"`  // stderr (default) | stdout
	// AuditLimit caps the audit lines (blocked queries) per client per
	// minute, so a looping device cannot flood the log; 0 is no cap.
	// Counters stay exact.
	AuditLimit int `yaml:"audit_limit"`
}

// RateLimit is the per-client token bucket: Rate queries a second
// with bursts of Burst, per /32 (IPv4) or /56 (IPv6). Rate 0 turns it off.
// Exempt networks (default loopback) are never limited.
type RateLimit struct {
	Rate   float64  `yaml:"rate"`
	Burst  int      `yaml:"burst"`
	Exempt []string `yaml:"exempt"`

	exempt []netip.Prefix
}

// Limits bounds what one client connection can hold.
type Limits struct {
	TCPConnections int           `yaml:"tcp_connections"`  // open TCP connections at once
	TCPReadTimeout time.Duration `yaml:"tcp_read_timeout"` // to read a whole query
	TCPIdleTimeout time.Duration `yaml:"tcp_idle_timeout"` // between queries on one connection
	TCPPipeline    int           `yaml:"tcp_pipeline"`     // queries in flight on one connection
	// TCPConnectionsPerClient bounds the open TCP connections of one client
	// network (a /32, or a /56 for IPv6); a connection over it is closed
	// at accept. Trusted proxies are not bounded by it: they carry many
	// clients. Read at each accept, so a reload applies to new connections.
	// Default 32 (DefaultTCPConnectionsPerClient says why).
	TCPConnectionsPerClient int `yaml:"tcp_connections_per_client"`
	// UpstreamInflight bounds the queries waiting on upstreams at once;
	// past it a cache miss gets SERVFAIL at once instead of piling up.
	UpstreamInflight int `yaml:"upstream_inflight"`
	// UDPReceiveBuffer and UDPSendBuffer are the kernel buffers, in bytes,
	// asked for each listening UDP socket (SO_RCVBUF, SO_SNDBUF): queries
	// that arrive while the receive buffer is full are dropped by the
	// kernel (counted in dnsfence_udp_receive_drops_total). The kernel
	// doubles the value for its bookkeeping and caps it at twice
	// net.core.rmem_max (wmem_max); what it granted is logged at start and
	// exported as dnsfence_udp_socket_buffer_bytes. Applied at start only.
	// Default 4 MiB each; from 4096 to 1 GiB.
	UDPReceiveBuffer int `yaml:"udp_receive_buffer"`
	UDPSendBuffer    int `yaml:"udp_send_buffer"`
}

// Reload tunes hot reload.
type Reload struct {
	Debounce  time.Duration `yaml:"debounce"`
	MaxShrink float64       `yaml:"max_shrink"` // 0 turns the guard off
	// UnreadyAfter turns /readyz to 503 once reloads have failed or been
	// held for this long: the state served is older than the files. 0 is
	// never. Default DefaultUnreadyAfter.
	UnreadyAfter time.Duration `yaml:"unready_after"`
	// WriterWait is how long a changed file that a writer still holds open
	// must stay unchanged before it is applied anyway (the writer may never
	// close it). Default blocklist.DefaultWriterWait.
	WriterWait time.Duration `yaml:"writer_wait"`
}

// AllowedPrefixes are the allowed_clients ranges, parsed, in file order.
func (c *Config) AllowedPrefixes() []netip.Prefix { return slices.Clone(c.allowed) }

// AllowedLine is the configuration file's line of AllowedPrefixes()[i]
// (Line of allowed_clients: a configuration that loads parsed every
// entry), 0 for a default range.
func (c *Config) AllowedLine(i int) int { return c.Line("allowed_clients", i) }

// Line is the configuration file's line of entry i of the top-level list
// key, "allowed_clients", "listen", "listen_https", "listen_tls",
// "listen_quic" or "upstreams" (as written, the defaults of
// allowed_clients having none, before resolv.conf paths are expanded), or,
// with i 0, of the value "rate_limit.rate", "rate_limit.burst" or
// "sources.max_bytes" when the file writes it: 0 when unknown (a
// configuration not from a file, a default, or another key).
func (c *Config) Line(key string, i int) int {
	if i < 0 || i >= len(c.lines[key]) {
		return 0
	}
	return c.lines[key][i]
}

// TrustedPrefixes are the trusted_proxies ranges, parsed, in file order.
func (c *Config) TrustedPrefixes() []netip.Prefix { return slices.Clone(c.trusted) }

// HealthCheck is the question the upstreams' health probes and /readyz's
// probe ask: upstream_health_check, parsed (lower case, fully qualified;
// the root NS set when the file leaves it out). A Config not validated
// has the zero HealthCheck, which upstream.Options takes as
// upstream.DefaultHealthCheck.
func (c *Config) HealthCheck() upstream.HealthCheck { return c.healthCheck }

// ExplainPrefixes are the explain_clients ranges, parsed, in file order.
func (c *Config) ExplainPrefixes() []netip.Prefix { return slices.Clone(c.explain) }

// ExemptPrefixes are the rate_limit.exempt ranges, parsed, in file order.
func (r *RateLimit) ExemptPrefixes() []netip.Prefix { return slices.Clone(r.exempt) }

// ClientRanges are the policy's inline clients, parsed, each with the
// configuration file and line it was written on (its client_files are read
// when the snapshot is built).
func (p *Policy) ClientRanges() []blocklist.Range { return slices.Clone(p.clients) }

// Line is the configuration file's line of entry i of the policy's key
// (client_files, block or allow), 0 when unknown (a configuration not
// from a file).
func (p *Policy) Line(key string, i int) int {
	if i < 0 || i >= len(p.lines[key]) {
		return 0
	}
	return p.lines[key][i]
}

// HTTPAddr is the metrics and health address, "" when disabled.
func (c *Config) HTTPAddr() string {
	if c.HTTP == nil {
		return DefaultHTTP
	}
	return *c.HTTP
}

// Path resolves a path written in the configuration against its folder. A
// remote list (IsRemote) is returned as written: it names no file; so is
// "", a path left out (tls.cert without tls), which is not the folder.
func (c *Config) Path(p string) string {
	if p == "" || c.Embedded || filepath.IsAbs(p) || c.File == "" || IsRemote(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// LoadSteady calls load, which reads the configuration file at path,
// once no process /proc shows holds the file open for writing, and, when
// load fails on a regular file, once more when the file's content is
// stable over quiet (blocklist.WaitCompleteUnwatched): a writer /proc
// does not show (the shipped unit's ProtectProc=invisible) may have been
// caught mid-write, the configuration cut at a line. Either wait gives up
// after writerWait, tells gaveUp (which may be nil) why, and the file is
// read as it is. A named pipe is read once: a second read would take its
// writer's next write, or wait for one. It returns load's result, or
// ctx's error if ctx ends during a wait.
func LoadSteady(ctx context.Context, path string, quiet, writerWait time.Duration, load func() (*Config, error), gaveUp func(error)) (*Config, error) {
	waited := func(err error) error {
		if err != nil && ctx.Err() == nil && gaveUp != nil {
			gaveUp(err)
		}
		return ctx.Err()
	}
	if err := waited(blocklist.WaitUnheld(ctx, []string{path}, quiet, writerWait)); err != nil {
		return nil, err
	}
	cfg, err := load()
	if fi, serr := os.Stat(path); err == nil || serr != nil || !fi.Mode().IsRegular() {
		return cfg, err
	}
	if err := waited(blocklist.WaitCompleteUnwatched(ctx, []string{path}, quiet, writerWait)); err != nil {
		return nil, err
	}
	return load()
}

// Load reads, decodes and validates a configuration file, as Parse does.
// A file that cannot be read is an *Error too, without a line or key
// ("dnsfence.yaml: reading the configuration: no such file or directory"),
// wrapping the reason (errors.Is(err, fs.ErrNotExist) for a missing file).
func Load(path string) (*Config, error) {
	data, err := blocklist.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is the Error's File already
		}
		return nil, &Error{File: path, Err: fmt.Errorf("reading the configuration: %w", err)}
	}
	return Parse(path, data, blocklist.ReadFile)
}

// Parse decodes and validates configuration content. file names it in
// errors and anchors its relative paths; readFile reads the range files it
// names (list files are read a piece at a time, blocklist.ReadList).
// Every problem found is reported at once: the error joins one *Error
// per problem, in line order, each "file:line: key: what is wrong; an
// example of right". Durations need a unit ("2s"; a bare 2 is an error),
// and unknown keys, keys given twice and values of the wrong YAML type are
// errors.
func Parse(file string, data []byte, readFile func(string) ([]byte, error)) (*Config, error) {
	return parse(file, data, readFile, false, true)
}

// ParseEmbedded parses the built-in default configuration, whose
// files are compiled in and read with readFile, and whose upstreams may come
// from a resolv.conf that names none.
func ParseEmbedded(file string, data []byte, readFile func(string) ([]byte, error)) (*Config, error) {
	return parse(file, data, readFile, true, true)
}

// parse is Parse; weigh says whether to weighOffers (not when parsing the
// configuration with an offered value in).
func parse(file string, data []byte, readFile func(string) ([]byte, error), embedded, weigh bool) (*Config, error) {
	// The hash is of the raw bytes, as the file watcher sees them; the
	// decoder reads the text without a byte-order mark.
	sum := sha256.Sum256(data)
	if err := blocklist.CheckText(file, data); err != nil {
		var nt *blocklist.NotTextError
		if errors.As(err, &nt) {
			return nil, &Error{File: file, Line: nt.Line, Err: fmt.Errorf("%w: %s", blocklist.ErrNotText, nt.Reason)}
		}
		return nil, &Error{File: file, Err: err}
	}
	data = blocklist.Text(data)
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(file, data, err)
	}
	// A second document (after ---) would be dropped unread: its keys
	// must not look applied when they are not. Every document after the
	// first is read, so that one after an empty one (--- ... ---) is
	// found too; each Decode reads at least one line.
	for range bytes.Count(data, []byte{'\n'}) + 1 {
		var next yaml.Node
		if err := dec.Decode(&next); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, yamlError(file, data, err)
		} else if len(next.Content) > 0 && next.Content[0].Tag != "!!null" {
			n := next.Content[0]
			if n.Kind == yaml.MappingNode && len(n.Content) > 0 {
				n = n.Content[0]
			}
			return nil, &Error{File: file, Line: n.Line, Err: fmt.Errorf("a second YAML document (after ---), which dnsfence would ignore: %s; keep one document: move its keys into the first and delete the ---", blocklist.RedactURLs(lineText(data, n.Line)))}
		}
	}
	cfg := &Config{File: file, ReadFile: readFile, Embedded: embedded, Sum: sum}
	errs := &configErrors{file: file, root: &root}
	// Wrong YAML types, unknown and repeated keys, in plain words; the
	// decoder below then fills in everything else.
	badMerge := checkShape(errs, &root)
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true) // unknown keys are errors, each one reported
	if err := strict.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			if badMerge || len(errs.errs) > 0 {
				return nil, errs.err() // the shape check has said it at its line
			}
			return nil, yamlError(file, data, err)
		}
		// Type errors leave the rest decoded: validate it too, so that
		// every problem is reported at once. checkShape has said what
		// each one is; the decoder's words are the fallback.
		if len(errs.errs) == 0 {
			errs.decoderErrors(te)
		}
	}
	// `action: null` is YAML's null literal, which decodes as no value at
	// all; take the plain word as written. Null and NULL are that literal
	// too: taken as written, they are told, as NXDOMAIN is, to be
	// written null, where as no value they were nxdomain without a word.
	for i := range cfg.Policies {
		if n := nodeAt(&root, []any{"policies", i, "action"}); n != nil && n.Tag == "!!null" && strings.EqualFold(n.Value, "null") {
			cfg.Policies[i].Action = Action(n.Value)
		}
	}
	// A key with no value (`upstream_timeout:`, `~`, `null`) is left out.
	cfg.applyDefaults(func(path ...any) bool {
		n := nodeAt(&root, path)
		return n != nil && n.Tag != "!!null"
	})
	cfg.validate(errs)
	if weigh && len(errs.errs) > 0 {
		weighOffers(errs.errs, data, &root, func(data []byte) error {
			_, err := parse(file, data, readFile, embedded, false)
			return err
		})
	}
	if problems := errs.sorted(); len(problems) > 0 {
		return nil, &InvalidError{errs: problems, Files: cfg.LocalFiles()}
	}
	return cfg, nil
}

// InvalidError is a configuration that was read but did not validate:
// its problems, each an *Error (Error and Unwrap are those of their
// errors.Join), and the files it names. A reload it fails watches those
// files (resolver.Reloader), so that creating the list a configuration
// edit names before the list is there, or fixing it, is seen and
// applied, though nothing of that configuration was.
type InvalidError struct {
	errs []error
	// Files are the local files the configuration names, as LocalFiles
	// gives them.
	Files []string
}

func (e *InvalidError) Error() string { return errors.Join(e.errs...).Error() }

// Unwrap returns the problems, as errors.Join's error does.
func (e *InvalidError) Unwrap() []error { return e.errs }

// LocalFiles are the files on this machine that c names: PolicyFiles,
// and the upstream_ca bundle, as Path resolves it. A resolv.conf named as
// upstreams is left out: it is read at each reload, not watched.
func (c *Config) LocalFiles() []string {
	files := c.PolicyFiles()
	if !c.Embedded && c.UpstreamCA != "" && !strings.Contains(c.UpstreamCA, "://") {
		files = append(files, c.Path(c.UpstreamCA))
	}
	return files
}

// PolicyFiles are the files a snapshot of c reads: the configuration file
// itself, and its policies' client files and list files (not URLs or zone
// transfers), each as Path resolves it; none for the embedded default.
// Paths that are empty or URLs of a scheme dnsfence does not fetch (a
// configuration error: c did not validate) are left out.
func (c *Config) PolicyFiles() []string {
	if c.Embedded {
		return nil
	}
	files := []string{c.File}
	for _, pc := range c.Policies {
		for _, f := range slices.Concat(pc.ClientFiles, pc.Block, pc.Allow) {
			if f != "" && !strings.Contains(f, "://") {
				files = append(files, c.Path(f))
			}
		}
	}
	return files
}

// applyDefaults fills in every key the file leaves out. A key written is
// taken as written, 0 included: `rate_limit: {rate: 0}` turns limiting off
// as documented, and a 0 where none makes sense (`upstream_timeout: 0s`,
// `limits: {tcp_connections: 0}`) is reported by validate rather than
// quietly replaced with the default. written reports whether the file
// has the key at path.
func (c *Config) applyDefaults(written func(path ...any) bool) {
	// Not written and empty: a listen given by a merge key (<<) is not
	// in the mapping as written, but it is decoded.
	if !written("listen") && len(c.Listen) == 0 {
		c.Listen = []string{DefaultListen}
	}
	orDefault(&c.UpstreamTimeout, DefaultUpstreamTimeout, written("upstream_timeout"))
	c.UpstreamStrategy = cmp.Or(c.UpstreamStrategy, StrategyFastest)
	// Written empty (`name: ""`), a part is an error (validate), not the
	// root's without a word.
	if hc := &c.UpstreamHealthCheck; hc.Name == "" && !written("upstream_health_check", "name") {
		hc.Name = DefaultHealthCheckName
	}
	if hc := &c.UpstreamHealthCheck; hc.Type == "" && !written("upstream_health_check", "type") {
		hc.Type = DefaultHealthCheckType
	}
	if c.AllowedClients == nil {
		c.AllowedClients = DefaultAllowedClients
	}
	if c.ExplainClients == nil {
		c.ExplainClients = DefaultExplainClients
	}
	orDefault(&c.BlockedTTL, DefaultBlockedTTL, written("blocked_ttl"))
	if !written("ddr") {
		c.DDR = true
	}
	for i := range c.Policies {
		c.Policies[i].Action = cmp.Or(c.Policies[i].Action, ActionNXDomain)
	}
	orDefault(&c.Cache.Size, DefaultCacheSize, written("cache", "size"))
	orDefault(&c.Cache.MaxTTL, DefaultCacheMaxTTL, written("cache", "max_ttl"))
	orDefault(&c.Cache.StaleRefreshTime, DefaultStaleRefreshTime, written("cache", "stale_refresh_time"))
	orDefault(&c.Cache.StaleAnswerClientTimeout, DefaultStaleAnswerClientTimeout, written("cache", "stale_answer_client_timeout"))
	c.Log.Level = cmp.Or(c.Log.Level, "info")
	c.Log.Format = cmp.Or(c.Log.Format, "json")
	c.Log.Output = cmp.Or(c.Log.Output, "stderr")
	c.Log.Queries = cmp.Or(c.Log.Queries, "blocked")
	orDefault(&c.RateLimit.Rate, DefaultRate, written("rate_limit", "rate"))
	orDefault(&c.RateLimit.Burst, int(2*c.RateLimit.Rate), written("rate_limit", "burst"))
	if c.RateLimit.Exempt == nil {
		c.RateLimit.Exempt = []string{"127.0.0.0/8", "::1/128"}
	}
	orDefault(&c.Limits.TCPConnections, DefaultTCPConnections, written("limits", "tcp_connections"))
	orDefault(&c.Limits.TCPConnectionsPerClient, DefaultTCPConnectionsPerClient, written("limits", "tcp_connections_per_client"))
	orDefault(&c.Limits.UDPReceiveBuffer, DefaultUDPBuffer, written("limits", "udp_receive_buffer"))
	orDefault(&c.Limits.UDPSendBuffer, DefaultUDPBuffer, written("limits", "udp_send_buffer"))
	orDefault(&c.Limits.TCPReadTimeout, DefaultTCPReadTimeout, written("limits", "tcp_read_timeout"))
	orDefault(&c.Limits.TCPIdleTimeout, DefaultTCPIdleTimeout, written("limits", "tcp_idle_timeout"))
	orDefault(&c.Limits.TCPPipeline, DefaultTCPPipeline, written("limits", "tcp_pipeline"))
	orDefault(&c.Limits.UpstreamInflight, DefaultUpstreamInflight, written("limits", "upstream_inflight"))
	orDefault(&c.Reload.Debounce, DefaultDebounce, written("reload", "debounce"))
	orDefault(&c.Reload.MaxShrink, DefaultMaxShrink, written("reload", "max_shrink"))
	orDefault(&c.Reload.UnreadyAfter, DefaultUnreadyAfter, written("reload", "unready_after"))
	orDefault(&c.Reload.WriterWait, blocklist.DefaultWriterWait, written("reload", "writer_wait"))
	c.applySourceDefaults(written)
}

// orDefault sets *v to def unless the file has the key (written).
func orDefault[T any](v *T, def T, written bool) {
	if !written {
		*v = def
	}
}

// Error is one problem in a configuration file: where it is, which
// key, and what is wrong with an example of a right value. Parse
// returns every problem of a file at once, joined in line order.
type Error struct {
	File string
	Line int    // 1-based; 0 when the key is not in the file at all
	Key  string // full key path, e.g. "policies[1].action"; for a YAML syntax error the key written on the line, if any
	Err  error

	path []any // Key as keys and sequence indexes, for weighOffers
}

// Error is "file:line: key: what is wrong; how to write it right".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// configErrors collects the problems of one file with their lines.
type configErrors struct {
	file string
	root *yaml.Node
	errs []*Error
	// skip holds key paths whose value the shape check rejected: what
	// validate would say about them (or below them) is a consequence.
	skip []string
}

// add records a problem at path (keys and sequence indexes), at the line
// of its value, or of its deepest ancestor in the file.
func (e *configErrors) add(path []any, format string, args ...any) {
	e.addLine(lineOf(e.root, path), path, format, args...)
}

// addLine records a problem at path on a given line, unless the value at
// path or above it was already rejected.
func (e *configErrors) addLine(line int, path []any, format string, args ...any) {
	key := keyName(path)
	for _, s := range e.skip {
		if key == s || s == "" || strings.HasPrefix(key, s) && (key[len(s)] == '.' || key[len(s)] == '[') {
			return
		}
	}
	e.record(line, path, format, args...)
}

// record adds a problem whatever was rejected before.
func (e *configErrors) record(line int, path []any, format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = blocklist.RedactURLs(s)
		}
	}
	e.errs = append(e.errs, &Error{File: e.file, Line: line, Key: keyName(path), Err: fmt.Errorf(format, args...), path: slices.Clone(path)})
}

// err joins the problems in line order; those about keys missing from the
// file come last.
func (e *configErrors) err() error { return errors.Join(e.sorted()...) }

// sorted returns the problems by line, those of no line (0) last; none
// when there are none.
func (e *configErrors) sorted() []error {
	slices.SortStableFunc(e.errs, func(a, b *Error) int {
		return cmp.Compare(uint(a.Line-1), uint(b.Line-1)) // line 0 wraps to the end
	})
	errs := make([]error, len(e.errs))
	for i, ce := range e.errs {
		errs[i] = ce
	}
	return errs
}

// keyName writes a path as a user reads it: "policies[1].action". A key
// that is not a plain word is quoted.
func keyName(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch v := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			if !plainKey.MatchString(v) {
				v = strconv.Quote(v)
			}
			b.WriteString(v)
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		}
	}
	return b.String()
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// lineOf finds the line of the node at path, or of its deepest ancestor
// present in the file (a default value has no line of its own).
func lineOf(root *yaml.Node, path []any) int {
	line, _ := walk(root, path)
	return line
}

// keyAtLine names the deepest key written on line, e.g. "policies[0].name".
func keyAtLine(root *yaml.Node, line int) string {
	var found string
	var visit func(n *yaml.Node, path []any)
	visit = func(n *yaml.Node, path []any) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				visit(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := append(append([]any(nil), path...), n.Content[i].Value)
				if n.Content[i].Line == line {
					found = keyName(k)
				}
				visit(n.Content[i+1], k)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				visit(c, append(append([]any(nil), path...), i))
			}
		}
	}
	visit(root, nil)
	return found
}

// weighOffers tries the value each problem offers ("...; write
// 127.0.0.1:53", "...; did you mean 10.0.0.0/8?") where it was written,
// reparsing the configuration, data as root was read from, with it; one
// that is refused in turn is taken back, and the problem says what is
// wrong with both ("-030 has a leading zero, which YAML reads as octal
// (-24), and -30 is negative; ..."), rather than sending a user round in
// a circle. Of "write A for X, or B for Y", A is weighed. A problem of
// the file as written that the reparse has too (a key given twice) is
// none of the offer's doing. Each offer weighed is a parse of the whole
// file: the first weighable(len(data)) are, so that a file of thousands
// of mistakes, or a large one, is read in a bounded time.
func weighOffers(problems []*Error, data []byte, root *yaml.Node, reparse func([]byte) error) {
	had := map[string]bool{}    // the keys with a problem as written
	before := map[string]bool{} // the problems as written, with their lines
	for _, p := range problems {
		had[p.Key] = true
		before[p.Error()] = true
	}
	weighed, most := 0, weighable(len(data))
	for _, p := range problems {
		if p.path == nil {
			continue
		}
		// A refusal may offer a value of its own ("has no port, and
		// [::%00]:53: a zone ...; write [::]:53"): weighed in turn.
		for range maxRounds {
			if weighed == most {
				return
			}
			reparsed, refused := refuseOffer(p, data, root, reparse, had, before)
			if reparsed {
				weighed++
			}
			if !refused {
				break
			}
		}
	}
}

// maxRounds is how many offers weighOffers weighs for one problem: its
// own, and those the refusals of it offer.
const maxRounds = 3

// refuseOffer weighs the value p offers: reparsed is whether it was
// tried (a reparse of the file with it), refused whether it was refused,
// p then saying why in place of the offer.
func refuseOffer(p *Error, data []byte, root *yaml.Node, reparse func([]byte) error, had, before map[string]bool) (reparsed, refused bool) {
	msg := p.Err.Error()
	fix, at, ok := offeredValue(msg)
	if !ok {
		return false, false
	}
	text, ok := withValue(data, root, p.path, p.Line, fix)
	if !ok {
		return false, false
	}
	var invalid *InvalidError
	if !errors.As(reparse(text), &invalid) {
		return true, false
	}
	// Refused at its key, or where nothing was wrong before (the range
	// meant is the next item of the list: "listed twice").
	for _, e := range invalid.errs {
		again, ok := e.(*Error)
		if !ok || before[again.Error()] {
			continue
		}
		switch {
		case again.Key == p.Key:
			p.Err = fmt.Errorf("%s, and %s", msg[:at], again.Err)
			return true, true
		case !had[again.Key]:
			// What is said at another key is said of it, as its
			// own words ("leave this one out") mean that one.
			where := cmp.Or(again.Key, "the file")
			p.Err = fmt.Errorf("%s, and with %s here, %s would be wrong: %s", msg[:at], fix, where, again.Err)
			return true, true
		}
	}
	return true, false
}

// maxWeighed is how many offers weighOffers weighs in one file (the
// refusals' own offers among them), and maxWeighedBytes how much text
// their reparses read, all told: a file of 370 kB (20,000 clients)
// parses in about 0.15 s, and had 32 offers weighed in 5 s.
const (
	maxWeighed      = 32
	maxWeighedBytes = 1 << 20
)

// weighable is how many offers weighOffers weighs in a file of size
// bytes: maxWeighed, fewer in a file so large that their reparses would
// read more than maxWeighedBytes, and always one.
func weighable(size int) int {
	return max(1, min(maxWeighed, maxWeighedBytes/max(size, 1)))
}

// offeredValue is the value a problem's message offers, and the index in
// msg of the words offering it: after its last "; write ", the first of
// alternatives ("A for X, or B"), or in "; did you mean X?". ok is false
// when what follows is prose ("write it as CIDR prefixes") or the value
// is a key's name ("unknown key ...; did you mean action?").
func offeredValue(msg string) (fix string, at int, ok bool) {
	if strings.HasPrefix(msg, "key ") || strings.HasPrefix(msg, "unknown key ") {
		return "", 0, false
	}
	if at = strings.LastIndex(msg, "; write "); at >= 0 {
		fix = strings.TrimPrefix(msg[at+len("; write "):], "the number without quotes: ")
		fix, _, _ = strings.Cut(fix, " for ")
		fix, _, _ = strings.Cut(fix, ", or ")
	} else if at = strings.LastIndex(msg, "; did you mean "); at >= 0 {
		fix, _, _ = strings.Cut(msg[at+len("; did you mean "):], "?")
	}
	return fix, at, at >= 0 && fix != "" && !strings.Contains(fix, " ")
}

// withValue is data, the text root was read from, with the scalar at path
// written v instead, as YAML reads v (60 a number, "gov" the text gov,
// [::1]:53 text): plain when that is a number, a boolean or null (60,
// -30), else in double quotes ("127.0.0.1:53"). Every other
// byte is kept, so that the lines of what the text says are those of
// data. ok is false when the scalar at path is not on line (a key given
// twice: path finds the first), or is not one withValue can find the
// end of (a tagged, block or multi-line scalar).
func withValue(data []byte, root *yaml.Node, path []any, line int, v string) (text []byte, ok bool) {
	n := nodeOnLine(root, path, line)
	if n == nil || n.Kind != yaml.ScalarNode || n.Line < 1 || n.Column < 1 {
		return nil, false
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if n.Line > len(lines) {
		return nil, false
	}
	l := string(lines[n.Line-1])
	start := 0 // n.Column counts characters, not bytes
	for range n.Column - 1 {
		_, size := utf8.DecodeRuneInString(l[start:])
		if size == 0 {
			return nil, false
		}
		start += size
	}
	end := scalarEnd(l, start, n)
	if end < 0 {
		return nil, false
	}
	// v as YAML reads it: 60 a number, "gov" the text gov, [::1]:53 text.
	value, written := v, strconv.Quote(v)
	var doc yaml.Node
	if yaml.Unmarshal([]byte(v), &doc) == nil && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.ScalarNode {
		c := doc.Content[0]
		value, written = c.Value, strconv.Quote(c.Value)
		if c.Style == 0 && (c.Tag == "!!int" || c.Tag == "!!float" || c.Tag == "!!bool" || c.Tag == "!!null") {
			written = c.Value
		}
	}
	var b bytes.Buffer
	for _, l := range lines[:n.Line-1] {
		b.Write(l)
	}
	b.WriteString(l[:start] + written + l[end:])
	for _, l := range lines[n.Line:] {
		b.Write(l)
	}
	// What the text now says at path must be v, on the same line.
	doc = yaml.Node{}
	if yaml.Unmarshal(b.Bytes(), &doc) != nil {
		return nil, false
	}
	if m := nodeOnLine(&doc, path, line); m == nil || m.Kind != yaml.ScalarNode || m.Value != value {
		return nil, false
	}
	return b.Bytes(), true
}

// nodeOnLine is the node at path that is on line, of those a key given
// twice leads to (nodeAt follows the first), or nil when none is.
func nodeOnLine(root *yaml.Node, path []any, line int) *yaml.Node {
	if root == nil || len(root.Content) == 0 {
		return nil
	}
	// Each step takes one element of path: the recursion ends, an alias
	// loop or not.
	var find func(n *yaml.Node, path []any) *yaml.Node
	find = func(n *yaml.Node, path []any) *yaml.Node {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if len(path) == 0 {
			if n.Line == line {
				return n
			}
			return nil
		}
		switch v := path[0].(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == v {
						if m := find(n.Content[i+1], path[1:]); m != nil {
							return m
						}
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && v < len(n.Content) {
				return find(n.Content[v], path[1:])
			}
		}
		return nil
	}
	return find(root.Content[0], path)
}

// scalarEnd is the byte index in l, a line, just past the scalar n that
// starts at l[start:], or -1 when the scalar does not end on l as n
// holds it (n.Value, read plain or in quotes).
func scalarEnd(l string, start int, n *yaml.Node) int {
	rest := l[start:]
	switch n.Style {
	case yaml.DoubleQuotedStyle:
		for i := 1; i < len(rest); i++ {
			switch rest[i] {
			case '\\':
				i++
			case '"':
				return start + i + 1
			}
		}
	case yaml.SingleQuotedStyle:
		for i := 1; i < len(rest); i++ {
			if rest[i] == '\'' {
				if i+1 < len(rest) && rest[i+1] == '\'' {
					i++
					continue
				}
				return start + i + 1
			}
		}
	case 0:
		// A plain scalar ends at a comment or the line's end, and in a
		// flow collection ([a, b], {k: v}) at its next indicator too.
		block := strings.TrimRight(rest, "\r\n")
		if i := strings.Index(block, " #"); i >= 0 {
			block = block[:i]
		}
		if i := strings.Index(block, "\t#"); i >= 0 {
			block = block[:i]
		}
		flow := block
		if i := strings.IndexAny(flow, ",]}"); i >= 0 {
			flow = flow[:i]
		}
		for _, s := range []string{flow, block} {
			if s = strings.TrimRight(s, " \t"); s == n.Value {
				return start + len(s)
			}
		}
	}
	return -1
}

// nodeAt returns the node at path, or nil when the file does not have it.
func nodeAt(root *yaml.Node, path []any) *yaml.Node {
	_, n := walk(root, path)
	return n
}

// walk follows path (mapping keys, those a merge key (<<) gives too, and
// sequence indexes) from the document root. It returns the line of the
// deepest node reached, and the node at path if the whole path exists.
func walk(root *yaml.Node, path []any) (int, *yaml.Node) {
	if root == nil || len(root.Content) == 0 {
		return 0, nil
	}
	n := root.Content[0]
	line := 0 // a key missing from the top level has no line
	for _, p := range path {
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		var next *yaml.Node
		switch v := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				// A key given by a merge key (<<) is written too, at
				// its line in the merged mapping, as the decoder reads it.
				for _, kv := range mappingPairs(n) {
					if kv[0].Value == v {
						line = kv[0].Line
						next = kv[1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && v < len(n.Content) {
				next = n.Content[v]
			}
		}
		if next == nil {
			return line, nil
		}
		n = next
		line = n.Line
	}
	return line, n
}

// validate checks every value the shape check let through and parses the
// address ranges, one section of the file at a time. Each problem goes to
// errs as "key: what is wrong; an example of right".
func (c *Config) validate(errs *configErrors) {
	c.validateListen(errs)
	c.validateEncrypted(errs)
	c.validateUpstreams(errs)
	c.lines = map[string][]int{}
	for key, entries := range map[string][]string{"allowed_clients": c.AllowedClients, "listen": c.Listen, "listen_https": c.ListenHTTPS, "listen_tls": c.ListenTLS, "listen_quic": c.ListenQUIC, "upstreams": c.Upstreams} {
		for i := range entries {
			c.lines[key] = append(c.lines[key], lineOf(errs.root, []any{key, i}))
		}
	}
	for _, path := range [][]any{{"rate_limit", "rate"}, {"rate_limit", "burst"}, {"sources", "max_bytes"}} {
		if nodeAt(errs.root, path) != nil {
			c.lines[fmt.Sprintf("%s.%s", path...)] = []int{lineOf(errs.root, path)}
		}
	}
	c.allowed = parsePrefixes(errs, []any{"allowed_clients"}, c.AllowedClients)
	c.trusted = parsePrefixes(errs, []any{"trusted_proxies"}, c.TrustedProxies)
	c.explain = parsePrefixes(errs, []any{"explain_clients"}, c.ExplainClients)
	c.validatePolicies(errs)
	c.validateCache(errs)
	c.validateLog(errs)
	c.validateLimits(errs)
	c.validateReload(errs)
	c.validateSources(errs)
	if at := []any{"shutdown_delay"}; c.ShutdownDelay < 0 {
		errs.add(at, "%s is negative; give 0s (stop at once) or a positive duration, %s", errs.written(at, c.ShutdownDelay), example(at))
	}
}

// MaxTTL is the largest TTL a DNS record can carry: RFC 2181 §8 keeps the
// top bit of the 32-bit field clear.
const MaxTTL = 1<<31 - 1

func (c *Config) validateListen(errs *configErrors) {
	if len(c.Listen) == 0 {
		// `listen: []` is written, not left out: serving the default
		// 127.0.0.1:5353 beside the encrypted listeners would be a
		// surprise, and no listener at all serves nothing.
		errs.add([]any{"listen"}, "[] is no address to serve DNS on; leave the key out for the default %s, or give addresses, %s", DefaultListen, example([]any{"listen"}))
	}
	for i, l := range c.Listen {
		at := []any{"listen", i}
		if key, value, ok := encryptedListen(l); ok {
			// `listen: ["tls://0.0.0.0:853"]`: listen serves plain DNS
			// alone; each encrypted transport has a key of its own.
			how := "DNS over " + protocolOf(key)
			if strings.HasPrefix(strings.ToLower(l), "http://") {
				how = "DNS over HTTP behind a TLS-terminating proxy"
			}
			errs.add(at, "%q: listen serves plain DNS; serve %s with %s: [%q]", l, how, key, value)
			continue
		}
		if msg, fix := addrPortProblem(l, 53, true); fix != "" {
			errs.add(at, "%s; write %s", msg, fix)
		} else if msg != "" {
			errs.add(at, "%s; give IP:port, %s (an IPv6 address in brackets: [::1]:53)", msg, example(at))
		} else if ap, err := netip.ParseAddrPort(l); err == nil && ap.Port() == upstream.DoTPort {
			errs.add(at, "%s: %v; serve DNS over TLS there with listen_tls, or give listen another port, e.g. %s",
				l, upstream.ErrPlainOnEncryptedPort, netip.AddrPortFrom(ap.Addr(), upstream.PlainPort))
		}
	}
	if c.HTTP == nil || *c.HTTP == "" {
		return
	}
	h := *c.HTTP
	_, port, err := net.SplitHostPort(h)
	switch {
	case err != nil && isDigits(h):
		errs.add([]any{"http"}, "%q is a port alone; write 127.0.0.1:%s, or :%s for every address", h, h, h)
	case err != nil:
		errs.add([]any{"http"}, "%q is not host:port; %s, or \"\" to turn the endpoint off", h, example([]any{"http"}))
	case !validPort(port, true):
		errs.add([]any{"http"}, "%q: the port is not a number from 0 to 65535; %s", h, example([]any{"http"}))
	default:
		if ap, err := netip.ParseAddrPort(h); err == nil {
			if problem, fix := addrProblem(h, ap, true); fix != "" {
				errs.add([]any{"http"}, "%s; write %s", problem, fix)
			} else if problem != "" {
				errs.add([]any{"http"}, "%s; %s, or \"\" to turn the endpoint off", problem, example([]any{"http"}))
			}
		}
	}
}

func (c *Config) validateUpstreams(errs *configErrors) {
	if len(c.Upstreams) == 0 && !c.Embedded {
		errs.add([]any{"upstreams"}, "at least one upstream is required; add %s", example([]any{"upstreams"}))
	}
	for i, u := range c.Upstreams {
		at := []any{"upstreams", i}
		if IsResolvConf(u) {
			if _, err := os.Stat(c.Path(u)); err != nil && !c.Embedded && c.ReadFile != nil {
				where := ""
				if !filepath.IsAbs(u) {
					where = " (relative paths start at the configuration file's folder)"
				}
				errs.add(at, "%s; give the path of a resolv.conf file%s, or IP:port, %s", fileProblem(u, err), where, example(at))
			}
			continue
		}
		if strings.Contains(u, "://") {
			// tls://, https:// and quic:// (DESIGN.md §8), as the
			// forwarder reads them.
			if a, err := upstream.ParseAddress(u); err != nil {
				errs.add(at, "%v", err)
			} else {
				c.checkLoop(errs, at, strconv.Quote(u), a)
			}
			continue
		}
		if fix, ok := unboundTLS(u); ok {
			if _, err := upstream.ParseAddress(fix); err != nil {
				errs.add(at, "%q is Unbound's form of a DNS over TLS upstream (IP@PORT#NAME), here %v", u, err)
			} else {
				errs.add(at, "%q is Unbound's form of a DNS over TLS upstream (IP@PORT#NAME); write %s", u, fix)
			}
			continue
		}
		shown := strconv.Quote(u)
		if a, ok := portless(u); ok {
			// A plain upstream written without its port is on port 53
			// (RFC 1035 §4.2), as CoreDNS's forward, Unbound's
			// forward-addr and Blocky's upstreams take one; written so
			// from here on (the forwarder, check and the metrics' labels),
			// but quoted as written in what is said about it.
			u = netip.AddrPortFrom(a, 53).String()
			c.Upstreams[i] = u
			shown += " (port 53)"
		}
		// A value offered that is dnsfence's own listen address is
		// taken back by weighOffers, checkLoop refusing it.
		msg, fix := addrPortProblem(u, 53, false)
		switch {
		case fix != "":
			errs.add(at, "%s; write %s", msg, fix)
		case strings.HasSuffix(u, ".conf") || strings.Contains(u, "/"):
			// `resolv.conf`, `etc/resolv.conf`: a path, as
			// IsResolvConf does not take it.
			errs.add(at, "%q is not IP:port; give IP:port, %s, or a resolv.conf path starting with / or ./ (./%s beside the configuration file)", u, example(at), u)
		case strings.Contains(msg, " is a name"):
			errs.add(at, "%s; upstreams are IP addresses (dnsfence does not look its upstreams up), %s", msg, example(at))
		case msg != "":
			errs.add(at, "%s; give IP:port, %s (an IPv6 address in brackets: [2620:fe::fe]:53), or a resolv.conf path starting with / or ./", msg, example(at))
		default:
			// What the forwarder refuses at start (an IPv6 zone, port
			// 853) is refused here, with its line, so that check says it
			// too.
			if a, err := upstream.ParseAddress(u); errors.Is(err, upstream.ErrPlainOnEncryptedPort) || errors.Is(err, upstream.ErrUnreachable) {
				errs.add(at, "%v", err) // it says what to write
			} else if err != nil {
				errs.add(at, "%v; give IP:port, %s", err, example(at))
			} else {
				c.checkLoop(errs, at, shown, a)
			}
		}
	}
	if c.UpstreamStrategy != StrategyFastest && c.UpstreamStrategy != StrategyOrdered {
		errs.add([]any{"upstream_strategy"}, "%s", enumProblem(c.UpstreamStrategy, "a strategy", StrategyFastest, StrategyOrdered))
	}
	errs.positive([]any{"upstream_timeout"}, c.UpstreamTimeout)
	errs.underMillisecond([]any{"upstream_timeout"}, c.UpstreamTimeout, noNetworkCrossing)
	c.validateHealthCheck(errs)
}

// validateHealthCheck parses upstream_health_check into c.healthCheck:
// a name upstream.HealthCheckName takes and a type HealthCheckType takes,
// each reported at its own key.
func (c *Config) validateHealthCheck(errs *configErrors) {
	hc := c.UpstreamHealthCheck
	name, nameErr := upstream.HealthCheckName(hc.Name)
	switch at := []any{"upstream_health_check", "name"}; {
	case nameErr == nil:
	case strings.HasSuffix(nameErr.Error(), "?"): // "did you mean corp.example?"
		errs.add(at, "%v", nameErr)
	default:
		errs.add(at, "%v; give a name every upstream always answers (an internal-only resolver: a name of its own zones, such as your AD domain), %s", nameErr, example(at))
	}
	qtype, typeErr := upstream.HealthCheckType(hc.Type)
	if at := []any{"upstream_health_check", "type"}; typeErr != nil {
		errs.add(at, "%v; give the type of a record the name has, such as SOA, NS or A, %s", typeErr, example(at))
	}
	if nameErr == nil && typeErr == nil {
		c.healthCheck = upstream.HealthCheck{Name: name, Qtype: qtype}
	}
}

func (c *Config) validatePolicies(errs *configErrors) {
	if c.BlockedTTL > MaxTTL {
		errs.add([]any{"blocked_ttl"}, "%d is above %d, the largest TTL (RFC 2181 §8), %s", c.BlockedTTL, MaxTTL, example([]any{"blocked_ttl"}))
	}
	names := map[string]int{}
	owner := map[netip.Prefix]int{}
	for i := range c.Policies {
		p := &c.Policies[i]
		at := func(rest ...any) []any { return append([]any{"policies", i}, rest...) }
		switch first, dup := names[strings.ToLower(p.Name)]; {
		case strings.TrimSpace(p.Name) == "":
			errs.add(at("name"), "every policy needs a name; %s", example(at("name")))
		case strings.TrimSpace(p.Name) != p.Name:
			// The name is the policy's identity across reloads and in
			// the audit line, the EDE text and the metrics: "gov " and
			// "gov" would be two policies that read as one.
			errs.add(at("name"), "%q has white space at its start or end; write %q", p.Name, strings.TrimSpace(p.Name))
		case strings.ContainsFunc(p.Name, unicode.IsControl):
			errs.add(at("name"), "%q holds a control character (a line break, a tab), which would break the log line, the EDE text and check's output; give a name on one line, %s", p.Name, example(at("name")))
		case dup && c.Policies[first].Name == p.Name:
			errs.add(at("name"), "%q is already the name of policies[%d]; give each policy its own name", p.Name, first)
		case dup:
			// Two policies that read as one in a log search, a
			// dashboard's label filter or an EDE text read aloud.
			errs.add(at("name"), "%q differs from %q, the name of policies[%d], in case only; give each policy a name of its own", p.Name, c.Policies[first].Name, first)
		default:
			names[strings.ToLower(p.Name)] = i
		}
		switch p.Action {
		case ActionNXDomain, ActionRefused, ActionNull, ActionLog:
		default:
			errs.add(at("action"), "%s", enumProblem(string(p.Action), "an action", "nxdomain", "refused", "null", "log"))
		}
		for j, s := range p.Clients {
			pfx, err := blocklist.ParsePrefix(s)
			if err != nil {
				errs.add(at("clients", j), "%s", orClientFiles(prefixProblem(s, err, at("clients", j))))
				continue
			}
			if other, dup := owner[pfx]; dup && other == i {
				errs.add(at("clients", j), "%s is listed twice in policy %q's clients: keep it once", pfx, p.Name)
				continue
			} else if dup {
				errs.add(at("clients", j), "%s is already a range of policy %q; the same range in two policies is ambiguous: keep it in one", pfx, c.Policies[other].Name)
				continue
			}
			owner[pfx] = i
			p.clients = append(p.clients, blocklist.Range{Prefix: pfx, File: c.File, Line: lineOf(errs.root, at("clients", j))})
		}
		if len(p.Clients) == 0 && len(p.ClientFiles) == 0 {
			name := "this policy"
			if p.Name != "" {
				name = fmt.Sprintf("policy %q", p.Name)
			}
			errs.add(at("clients"), "%s has no clients or client_files; %s", name, example(at("clients")))
		}
		c.validatePolicyFiles(errs, i)
	}
}

// validatePolicyFiles checks that the files a policy names exist.
func (c *Config) validatePolicyFiles(errs *configErrors, i int) {
	p := &c.Policies[i]
	for _, files := range []struct {
		key   string
		paths []string
	}{{"client_files", p.ClientFiles}, {"block", p.Block}, {"allow", p.Allow}} {
		for j, f := range files.paths {
			at := []any{"policies", i, files.key, j}
			if p.lines == nil {
				p.lines = map[string][]int{}
			}
			p.lines[files.key] = append(p.lines[files.key], lineOf(errs.root, at))
			switch {
			case f == "":
				errs.add(at, "empty path; give a file path, %s", example(at))
			case files.key != "client_files" && IsRemote(f):
				c.validateRemote(errs, at, f)
			case strings.Contains(f, "://"):
				if files.key == "client_files" {
					errs.add(at, "%q is a URL; client range files are read from disk only: give a file path, %s", blocklist.RedactURL(f), example(at))
				} else {
					errs.add(at, "%q: only https://, http:// (to a loopback host) and axfr:// lists are fetched; give one of those or a file path, %s", blocklist.RedactURL(f), example(at))
				}
			case c.ReadFile != nil && !c.Embedded:
				if fi, err := os.Stat(c.Path(f)); err != nil {
					errs.add(at, "%s; give the path of a file (relative paths start at the configuration file's folder)", fileProblem(c.Path(f), err))
				} else if fi.IsDir() {
					errs.add(at, "%q is a folder; give the path of a file in it, %s", c.Path(f), exampleIn(at, f, c.Path(f)))
				} else if err := canOpen(c.Path(f), fi); err != nil {
					// A file dnsfence's user may not read (chmod 600 by
					// another user) is said here, with its key and line,
					// not later by the list reader with neither.
					errs.add(at, "%s; give the path of a file the user dnsfence runs as can read", fileProblem(c.Path(f), err))
				}
			}
		}
	}
}

func (c *Config) validateCache(errs *configErrors) {
	at := func(key string) []any { return []any{"cache", key} }
	if c.Cache.Size < 0 {
		errs.add(at("size"), "%d is negative; give 0 (no cache) or more entries, %s", c.Cache.Size, example(at("size")))
	}
	for _, ttl := range []struct {
		key string
		v   uint32
	}{{"min_ttl", c.Cache.MinTTL}, {"max_ttl", c.Cache.MaxTTL}} {
		if ttl.v > MaxTTL {
			errs.add(at(ttl.key), "%d is above %d, the largest TTL (RFC 2181 §8), %s", ttl.v, MaxTTL, example(at(ttl.key)))
		}
	}
	if c.Cache.MinTTL > c.Cache.MaxTTL {
		def := ""
		if nodeAt(errs.root, at("max_ttl")) == nil {
			def = " (the default)"
		}
		errs.add(at("min_ttl"), "min_ttl %d is above max_ttl %d%s; lower min_ttl or raise max_ttl", c.Cache.MinTTL, c.Cache.MaxTTL, def)
	}
	for _, d := range []struct {
		key, off string
		v        time.Duration
	}{
		{"serve_stale", "off", c.Cache.ServeStale},
		{"stale_refresh_time", "ask on every query", c.Cache.StaleRefreshTime},
		{"stale_answer_client_timeout", "wait for the upstreams", c.Cache.StaleAnswerClientTimeout},
	} {
		if d.v < 0 {
			errs.add(at(d.key), "%s is negative; give 0s (%s) or a positive duration, %s", errs.written(at(d.key), d.v), d.off, example(at(d.key)))
		}
	}
}

func (c *Config) validateLog(errs *configErrors) {
	for _, e := range []struct {
		key, v, what string
		values       []string
	}{
		{"level", c.Log.Level, "a log level", []string{"debug", "info", "warn", "error"}},
		{"format", c.Log.Format, "a log format", []string{"json", "console"}},
		{"queries", c.Log.Queries, "a choice of query lines", []string{"blocked", "all", "none"}},
		{"output", c.Log.Output, "a log output", []string{"stderr", "stdout"}},
	} {
		if !slices.Contains(e.values, e.v) {
			errs.add([]any{"log", e.key}, "%s", enumProblem(e.v, e.what, e.values...))
		}
	}
	if c.Log.AuditLimit < 0 {
		at := []any{"log", "audit_limit"}
		errs.add(at, "%d is negative; give 0 (no cap) or more lines a minute, %s", c.Log.AuditLimit, example(at))
	}
}

func (c *Config) validateLimits(errs *configErrors) {
	c.RateLimit.exempt = parsePrefixes(errs, []any{"rate_limit", "exempt"}, c.RateLimit.Exempt)
	rate, burst := []any{"rate_limit", "rate"}, []any{"rate_limit", "burst"}
	switch r := c.RateLimit.Rate; {
	case math.IsNaN(r) || math.IsInf(r, 0):
		errs.add(rate, "%s is not a number of queries a second; give 0 (off) or more, %s", errs.written(rate, r), example(rate))
	case r < 0:
		errs.add(rate, "%s is negative; give 0 (off) or more queries a second, %s", errs.written(rate, r), example(rate))
	case nodeAt(errs.root, burst) == nil && c.RateLimit.Burst < 1 && r > 0:
		errs.add(burst, "the default burst, twice the rate, is %d; give a burst of 1 or more, %s", c.RateLimit.Burst, example(burst))
	case c.RateLimit.Burst < 0 && r == 0:
		errs.add(burst, "%d is negative; give 0 or more queries (rate limiting is off: rate 0), %s", c.RateLimit.Burst, example(burst))
	case c.RateLimit.Burst < 1 && r > 0:
		errs.add(burst, "%d is below 1; a rate limit needs a burst of 1 query or more, %s", c.RateLimit.Burst, example(burst))
	}
	for _, l := range []struct {
		key string
		n   int
	}{
		{"tcp_connections", c.Limits.TCPConnections},
		{"tcp_connections_per_client", c.Limits.TCPConnectionsPerClient},
		{"tcp_pipeline", c.Limits.TCPPipeline},
		{"upstream_inflight", c.Limits.UpstreamInflight},
	} {
		if at := []any{"limits", l.key}; l.n < 1 {
			errs.add(at, "%d is below 1; give 1 or more, %s", l.n, example(at))
		}
	}
	for _, l := range []struct {
		key string
		d   time.Duration
	}{{"tcp_read_timeout", c.Limits.TCPReadTimeout}, {"tcp_idle_timeout", c.Limits.TCPIdleTimeout}} {
		errs.positive([]any{"limits", l.key}, l.d)
		errs.underMillisecond([]any{"limits", l.key}, l.d, noNetworkCrossing)
	}
	for _, b := range []struct {
		key  string
		size int
	}{{"udp_receive_buffer", c.Limits.UDPReceiveBuffer}, {"udp_send_buffer", c.Limits.UDPSendBuffer}} {
		if at := []any{"limits", b.key}; b.size < minUDPBuffer || b.size > maxUDPBuffer {
			errs.add(at, "%d bytes is outside %d to %d; %s", b.size, minUDPBuffer, maxUDPBuffer, example(at))
		}
	}
}

func (c *Config) validateReload(errs *configErrors) {
	at := []any{"reload", "max_shrink"}
	switch s := c.Reload.MaxShrink; {
	case s > 1 && s <= 100 && s == math.Trunc(s):
		errs.add(at, "%s is not a fraction from 0 to 1; for %s%% write %s (0 turns the check off)",
			strconv.FormatFloat(s, 'g', -1, 64), strconv.FormatFloat(s, 'g', -1, 64), strconv.FormatFloat(s/100, 'g', -1, 64))
	case !(s >= 0 && s <= 1): // NaN too
		errs.add(at, "%s is not a fraction from 0 to 1; %s (0 turns the check off)", errs.written(at, s), example(at))
	}
	// A quiet period of 0 would read a file between two writes, and so
	// would one under a millisecond.
	errs.positive([]any{"reload", "debounce"}, c.Reload.Debounce)
	errs.underMillisecond([]any{"reload", "debounce"}, c.Reload.Debounce,
		"a quiet period that short reads a file between two writes of one save, as 0 would")
	if at := []any{"reload", "unready_after"}; c.Reload.UnreadyAfter < 0 {
		errs.add(at, "%s is negative; give 0s (never) or a positive duration, %s", errs.written(at, c.Reload.UnreadyAfter), example(at))
	}
	errs.positive([]any{"reload", "writer_wait"}, c.Reload.WriterWait)
	errs.underMillisecond([]any{"reload", "writer_wait"}, c.Reload.WriterWait,
		"a file its writer still holds open would be applied at the writer's first pause, half-written, as with 0")
}

// parsePrefixes parses the address ranges of the list at path.
func parsePrefixes(errs *configErrors, path []any, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		at := append(slices.Clip(path), i)
		p, err := blocklist.ParsePrefix(s)
		if err != nil {
			errs.add(at, "%s", prefixProblem(s, err, at))
			continue
		}
		out = append(out, p)
	}
	return out
}

// orClientFiles adds to problem, a policy's inline range's prefixProblem,
// the other place ranges may be written: as a sentence of its own after a
// question ("did you mean 10.0.0.0/8?").
func orClientFiles(problem string) string {
	if strings.HasSuffix(problem, "?") {
		return problem + " Or list a file of ranges in client_files"
	}
	return problem + ", or list a file of ranges in client_files"
}

// prefixProblem says why s is not an address range and how to write one.
func prefixProblem(s string, err error, at []any) string {
	ex := example(at)
	if msg, ok := blocklist.Meant(s, err); ok {
		return msg
	}
	length, badLength := errors.AsType[*blocklist.PrefixLengthError](err)
	switch {
	case errors.Is(err, blocklist.ErrRangeURL):
		return fmt.Sprintf("%q is a URL; give an IP address or CIDR prefix, %s", s, ex)
	case badLength && length.Bits < 0:
		return fmt.Sprintf("%q: /%d is negative; a prefix length of an IPv%d address is from /0 to /%d, %s", s, length.Bits, length.Version(), length.Max, ex)
	case badLength:
		return fmt.Sprintf("%q: /%d is longer than an IPv%d address (at most /%d); %s", s, length.Bits, length.Version(), length.Max, ex)
	case errors.Is(err, blocklist.ErrRangeDash):
		return fmt.Sprintf("%q is a range with -; write it as CIDR prefixes, %s", s, ex)
	case errors.Is(err, blocklist.ErrRangeName):
		return fmt.Sprintf("%q is a name; give an IP address or CIDR prefix, %s", s, ex)
	case errors.Is(err, blocklist.ErrRangeList):
		return fmt.Sprintf("%q holds several ranges; give each as an item of its own, %s", s, ex)
	case err == blocklist.ErrBadRange:
		return fmt.Sprintf("%q is not an IP address or CIDR prefix; give one, %s", s, ex)
	}
	return fmt.Sprintf("%q: %v; %s", s, err, ex)
}

// addrPortProblem says why s is not an IP address and port, or "" when it
// is one, with the value that was likely meant when there is one ("" if
// not). A port is needed: 0 only if anyPort; def is suggested.
func addrPortProblem(s string, def uint16, anyPort bool) (problem, fix string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if i, ok := upstream.Bracketless(s); ok {
			return fmt.Sprintf("%q: an IPv6 address goes in brackets before the port", s), "[" + s[:i] + "]:" + s[i+1:]
		}
		if a, ok := portless(s); ok {
			return fmt.Sprintf("%q has no port", s), netip.AddrPortFrom(a, def).String()
		}
		return notAddrPort(s, def, anyPort)
	}
	_, aerr := netip.ParseAddr(host)
	switch {
	case host == "" || host == "*":
		return fmt.Sprintf("%q has no IP address", s), fmt.Sprintf("0.0.0.0:%s for every IPv4 address, [::]:%s for every IPv6 one", port, port)
	case strings.EqualFold(host, "localhost"):
		return fmt.Sprintf("%q: localhost is a name, not an IP address", s), "127.0.0.1:" + port
	case aerr != nil && blocklist.NameLike(host):
		return fmt.Sprintf("%q: the host is a name, not an IP address", s), ""
	case !validPort(port, anyPort):
		return fmt.Sprintf("%q: the port is not a number from %d to 65535", s, map[bool]int{true: 0, false: 1}[anyPort]), ""
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not IP:port", s), ""
	}
	if problem, fix := addrProblem(s, ap, anyPort); problem != "" {
		return problem, fix
	}
	if a := ap.Addr(); a.Zone() != "" && !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() && !a.IsLoopback() {
		// Linux reads a zone only of an address whose scope is the link
		// or the host (fe80::/10, ::1): [::%eth0] is [::], every address,
		// which the checks that compare addresses (a forwarding loop, two
		// listeners on one port) must see as such.
		return fmt.Sprintf("%q: a zone (%%%s) names the interface of a link-local or loopback address only (fe80::/10, ::1), and %s is neither", s, a.Zone(), a.WithZone("")),
			netip.AddrPortFrom(a.WithZone(""), ap.Port()).String()
	}
	return "", ""
}

// addrProblem says why ap, the IP:port s (a listener's when listener,
// else an upstream's), is an address no socket can use, with the one
// likely meant ("" if none), or "" when it is not such an address: an
// IPv4-compatible one (blocklist.IPv4Compatible), which no host has, so
// that a listener on it cannot bind and an upstream at it never answers;
// and for a listener, a link-local IPv6 address without its zone, which
// bind refuses (EINVAL: the address is one on every link), and a
// multicast address, which no query is sent to (bind refuses an IPv6
// one, and Go binds the wildcard address 0.0.0.0 for an IPv4 one, every
// address of the host): blocklist.Unusable's kinds but the broadcast
// address, which a listener binds (lint warns of it).
// upstream.ParseAddress refuses an upstream of those.
func addrProblem(s string, ap netip.AddrPort, listener bool) (problem, fix string) {
	a := ap.Addr().Unmap() // [::ffff:169.254.1.1] is IPv4 link-local, which needs no zone
	switch kind := blocklist.Unusable(a); {
	case kind == blocklist.UnusableCompatible:
		v4, _ := blocklist.IPv4Compatible(a)
		return fmt.Sprintf("%q: %s is %v", s, a.WithZone(""), upstream.ErrIPv4Compatible),
			netip.AddrPortFrom(v4, ap.Port()).String()
	case !listener:
	case kind == blocklist.UnusableLinkLocal:
		return fmt.Sprintf("%q: %s is a link-local address, which a socket binds only with its interface, written after %%: [%s%%eth0]:%d", s, a, a, ap.Port()), ""
	case kind == blocklist.UnusableMulticast:
		return fmt.Sprintf("%q: %s is a multicast address, which a listener cannot take (bind refuses an IPv6 one, and Go listens on every address of the host for an IPv4 one)", s, a.WithZone("")), ""
	}
	return "", ""
}

// unboundTLS is the tls:// upstream u means when u is written as
// Unbound's forward-addr of a DNS over TLS upstream, IP@PORT#NAME or
// IP#NAME (unbound.conf(5): forward-tls-upstream), in dnsfence's form
// (which ParseAddress may still refuse: port 53); false for any other u.
func unboundTLS(u string) (fix string, ok bool) {
	hostPort, name, found := strings.Cut(u, "#")
	if !found || !blocklist.NameLike(name) {
		return "", false
	}
	host, port, withPort := strings.Cut(hostPort, "@")
	a, ok := portless(host)
	if !ok {
		return "", false
	}
	hostPort = a.String()
	switch {
	case withPort:
		hostPort = net.JoinHostPort(hostPort, port)
	case a.Is6():
		hostPort = "[" + hostPort + "]"
	}
	return "tls://" + hostPort + "#" + name, true
}

// encryptedListen is the key of the encrypted listener l, a listen
// address written with a scheme, is meant for, and l as that key takes it
// (listen_https takes https:// and http://; listen_tls and listen_quic an
// address alone); false for any other l.
func encryptedListen(l string) (key, value string, ok bool) {
	scheme, rest, found := strings.Cut(l, "://")
	if !found {
		return "", "", false
	}
	switch strings.ToLower(scheme) {
	case "tls":
		return "listen_tls", rest, true
	case "quic":
		return "listen_quic", rest, true
	case "https", "http":
		return "listen_https", l, true
	}
	return "", "", false
}

// notAddrPort is addrPortProblem's answer for s, which has no port after
// a colon and is no address alone: the port after another separator
// (Unbound's IP@PORT, dnsmasq's IP#PORT: fixed to IP:PORT), several
// addresses in one, a port alone (a listener's, anyPort, fixed to one on
// 127.0.0.1), localhost (fixed to 127.0.0.1 on def), a name, or a scheme
// (fixed to the address after it).
func notAddrPort(s string, def uint16, anyPort bool) (problem, fix string) {
	if i := strings.LastIndexAny(s, "@#"); i > 0 && validPort(s[i+1:], anyPort) {
		if a, ok := portless(s[:i]); ok {
			port, _ := strconv.ParseUint(s[i+1:], 10, 16)
			return fmt.Sprintf("%q: the port follows a colon (IP@PORT is Unbound's form, IP#PORT dnsmasq's)", s),
				netip.AddrPortFrom(a, uint16(port)).String()
		}
	}
	scheme, rest, schemed := strings.Cut(s, "://")
	switch {
	case len(strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) })) > 1:
		return fmt.Sprintf("%q is several addresses in one item", s), ""
	case isDigits(s) && anyPort:
		return fmt.Sprintf("%q is a port alone", s), fmt.Sprintf("127.0.0.1:%s, or 0.0.0.0:%s for every IPv4 address", s, s)
	case isDigits(s):
		return fmt.Sprintf("%q is a port alone", s), ""
	case strings.EqualFold(s, "localhost"):
		return fmt.Sprintf("%q is a name, not an IP address", s), netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), def).String()
	case schemed:
		if problem, _ := addrPortProblem(rest, def, anyPort); problem == "" {
			return fmt.Sprintf("%q: an address here is written without a scheme (%s://)", s, scheme), rest
		}
		return fmt.Sprintf("%q: an address here is written without a scheme (%s://)", s, scheme), ""
	case blocklist.NameLike(s):
		return fmt.Sprintf("%q is a name, not an IP address", s), ""
	}
	return fmt.Sprintf("%q is not IP:port", s), ""
}

// portless is the address s is when s is an IP address alone, without a
// port ("9.9.9.9", "2620:fe::fe", "[2620:fe::fe]"); false for anything
// else, and for an IPv6 address whose last group reads as a port
// (upstream.Bracketless: "::1:53" is more likely ::1 and port 53).
func portless(s string) (netip.Addr, bool) {
	// An address with its port is none: ParseAddr below would read
	// "[fe80::1%eth0]:53" as fe80::1 in the zone "eth0]:53".
	if _, _, err := net.SplitHostPort(s); err == nil {
		return netip.Addr{}, false
	}
	if _, ok := upstream.Bracketless(s); ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.Addr{}, false
	}
	// With its port it must read as IP:port, as it is written from then
	// on: netip takes any zone, "]0" too, which no IP:port holds ("::%]0"
	// was offered "[::%]0]:53", itself offered "[::%]0]:53]:53", ...).
	_, _, err = net.SplitHostPort(netip.AddrPortFrom(a, 53).String())
	return a, err == nil
}

// positive reports the duration d of the key at path unless it is above
// zero: a timeout or a wait of 0 has no meaning, and the default applies
// only to a key left out.
func (e *configErrors) positive(path []any, d time.Duration) {
	switch {
	case d < 0:
		e.add(path, "%s is negative; give a positive duration, %s", e.written(path, d), example(path))
	case d == 0:
		e.add(path, "%s is not a duration; give a positive one, or leave the key out for the default, %s", e.written(path, d), example(path))
	}
}

// noNetworkCrossing is why a timeout of a network exchange (an upstream
// try, reading a TCP query) is not under a millisecond: every upstream
// try, or every TCP, DoT and DoH query, would fail.
const noNetworkCrossing = "no query or answer crosses a network in it"

// underMillisecond reports a duration above zero and under a millisecond
// where one does nothing it is there for, why saying what: a network
// timeout (noNetworkCrossing) or a reload guard's wait (reload.debounce,
// reload.writer_wait: the guard as good as off, as 0 would turn it). The
// likely slip is the unit (2us for 2s, 200us for 200ms). 0 and negatives
// are positive's.
func (e *configErrors) underMillisecond(path []any, d time.Duration, why string) {
	if d > 0 && d < time.Millisecond {
		e.add(path, "%s is under a millisecond: %s (a slip of the unit?); %s", e.written(path, d), why, example(path))
	}
}

// written is the value at path as the file writes it ("-1m", not
// "-1m0s"), or v formatted when the file does not have it.
func (e *configErrors) written(path []any, v any) string {
	if n := nodeAt(e.root, path); n != nil && n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return fmt.Sprint(v)
}

// validPort reports a decimal port number, 0 allowed only if zero.
func validPort(port string, zero bool) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && (n > 0 || zero) // base 10: digits only, no sign
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// fileProblem says why a file named in the configuration cannot be used,
// err being os.Stat's or os.Open's error for it: "file "x" does not
// exist", or "file "x" cannot be read: REASON", the path said once (a
// *fs.PathError's own path left out).
func fileProblem(path string, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("file %q does not exist", path)
	}
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		err = pe.Err
	}
	return fmt.Sprintf("file %q cannot be read: %v", path, err)
}

// canOpen reports why the file at path, described by fi, cannot be
// opened for reading (no permission; a socket). A named pipe is not
// opened: that would wait for its writer here.
func canOpen(path string, fi fs.FileInfo) error {
	if fi.Mode()&fs.ModeNamedPipe != 0 {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// enumProblem says that v is not one of values, with the one it most
// likely misspells.
func enumProblem(v, what string, values ...string) string {
	list := strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
	if guess := cmp.Or(Closest(v, values), affixMatch(v, values)); guess != "" {
		return fmt.Sprintf("%q is not %s; did you mean %s? (one of %s)", v, what, guess, list)
	}
	return fmt.Sprintf("%q is not %s; give %s", v, what, list)
}

// IsResolvConf reports an upstream written as a path to a resolv.conf file,
// as CoreDNS's `forward . /etc/resolv.conf` does.
func IsResolvConf(u string) bool {
	return strings.HasPrefix(u, "/") || strings.HasPrefix(u, "./")
}

// ResolveUpstreams expands resolv.conf paths (relative to the
// configuration file's folder, as every path) into their nameservers (port
// 53), leaving out any that is dnsfence itself: one of its listen addresses,
// or any loopback address when it listens on a wildcard address on port 53.
func (c *Config) ResolveUpstreams() ([]string, error) {
	var out []string
	for _, u := range c.Upstreams {
		if !IsResolvConf(u) {
			out = append(out, u)
			continue
		}
		servers, _, _, err := c.resolvConfServers(c.Path(u))
		if err != nil {
			return nil, fmt.Errorf("reading upstreams: %w", err)
		}
		for _, ap := range servers {
			out = append(out, ap.String())
		}
	}
	return out, nil
}

// ResolvConfLeftOut is the nameservers, on port 53, of the
// configuration's resolv.conf upstreams that ResolveUpstreams leaves out:
// those that are dnsfence itself (isSelf), and those the forwarder
// refuses (upstream.ParseAddress), zoned: an IPv6 zone (fe80::1%eth0),
// which it does not support, an IPv4-compatible address
// (upstream.ErrIPv4Compatible), or one no query can be exchanged with
// (upstream.ErrUnreachable: link-local without a zone, multicast,
// broadcast); those of a file that cannot be read are not known.
func (c *Config) ResolvConfLeftOut() (self, zoned []netip.AddrPort) {
	for _, u := range c.Upstreams {
		if IsResolvConf(u) {
			_, s, z, _ := c.resolvConfServers(c.Path(u))
			self, zoned = append(self, s...), append(zoned, z...)
		}
	}
	return self, zoned
}

// resolvConfServers is the nameservers of the resolv.conf at path, on
// port 53, but dnsfence itself (isSelf) and those the forwarder refuses
// (upstream.ParseAddress: a zone, an IPv4-compatible address, one no
// query can be exchanged with): the first, those that are dnsfence
// (self), and those it refuses (zoned).
func (c *Config) resolvConfServers(path string) (others, self, zoned []netip.AddrPort, err error) {
	servers, err := resolvConfNameservers(path)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, ap := range servers {
		_, refused := upstream.ParseAddress(ap.String())
		switch {
		case refused != nil:
			zoned = append(zoned, ap)
		case c.isSelf(ap):
			self = append(self, ap)
		default:
			others = append(others, ap)
		}
	}
	return others, self, zoned, nil
}

// maxNameservers is how many nameservers of a resolv.conf a stub
// resolver asks: the first three (resolv.conf(5): MAXNS; Go's net reads
// no more either), a fourth never.
const maxNameservers = 3

// resolvConfNameservers is every nameserver of the resolv.conf at path,
// on port 53, as a stub resolver (Go's, glibc's) reads them: the IP
// address of each nameserver line, IPv4-mapped ones unmapped, a zone
// kept; a line whose value is no IP address is left out.
func resolvConfNameservers(path string) ([]netip.AddrPort, error) {
	data, err := blocklist.ReadFile(path)
	if err == nil {
		err = blocklist.CheckText(path, data)
	}
	if err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	for _, line := range blocklist.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
		}
	}
	return out, nil
}

// isSelf reports whether ap is dnsfence itself: one of its listen
// addresses, or a loopback address when it listens on a wildcard address
// of ap's port (selfIndex).
func (c *Config) isSelf(ap netip.AddrPort) bool { return selfIndex(c.Listen, ap) >= 0 }

// checkLoop reports an upstream that is one of dnsfence's own listeners
// of its transport (plain: listen, tls://: listen_tls, quic://:
// listen_quic), or a loopback address of one listening on a wildcard
// address: every query forwarded to it would come back to dnsfence, a
// forwarding loop that answers SERVFAIL after upstream_timeout (CoreDNS's
// loop plugin stops the server for it). A resolv.conf naming dnsfence
// has that nameserver left out (isSelf); one written here is a mistake.
// Under a wildcard address only 127.0.0.1 and ::1 are taken for
// dnsfence: another loopback address written here may be a service that
// address translation sends elsewhere before any socket sees it (Docker's
// embedded DNS at 127.0.0.11:53 in a user-defined network). shown is the
// upstream as the error quotes it: as written, with the port assumed.
func (c *Config) checkLoop(errs *configErrors, at []any, shown string, a upstream.Address) {
	ip, err := netip.ParseAddr(a.Host)
	if err != nil {
		return // a DoH upstream by name
	}
	ap := netip.AddrPortFrom(ip.Unmap(), a.Port)
	key, addrs := "listen", c.Listen
	var written []string // the listen addresses as written, when not addrs
	switch a.Kind {
	case upstream.KindTLS:
		key, addrs = "listen_tls", c.ListenTLS
	case upstream.KindQUIC:
		key, addrs = "listen_quic", c.ListenQUIC
	case upstream.KindHTTPS:
		// A DoH listener's address without its path; an http:// one
		// (behind a balancer) is no TLS server to loop through.
		key, addrs, written = "listen_https", nil, c.ListenHTTPS
		for _, l := range c.ListenHTTPS {
			hp, plain, err := listen.ParseDoHListen(l)
			if err != nil || plain {
				hp = "" // keeps the indexes; errors are validateEncrypted's
			}
			addrs = append(addrs, hp)
		}
	case upstream.KindPlain:
	default:
		return
	}
	if j := loopIndex(addrs, ap); j >= 0 {
		if written != nil {
			addrs = written
		}
		errs.add(at, "%s is dnsfence itself (%s[%d] %s): every query forwarded there would come back, a forwarding loop; give the resolvers dnsfence forwards to", shown, key, j, addrs[j])
		return
	}
	c.checkOwnListener(errs, at, shown, a.Kind, ap)
}

// dohListeners is the host:port of each listen_https entry, in
// tlsAddrs for a DNS over HTTPS listener and in plainAddrs for an
// http:// one (a TLS-terminating proxy's backend), "" in the other and
// for an entry that is not read (reported at its key).
func (c *Config) dohListeners() (tlsAddrs, plainAddrs []string) {
	tlsAddrs = make([]string, len(c.ListenHTTPS))
	plainAddrs = make([]string, len(c.ListenHTTPS))
	for i, l := range c.ListenHTTPS {
		if hp, plain, err := listen.ParseDoHListen(l); err == nil && plain {
			plainAddrs[i] = hp
		} else if err == nil {
			tlsAddrs[i] = hp
		}
	}
	return tlsAddrs, plainAddrs
}

// httpListener is the http endpoint's address as loopIndex matches a
// listener's, "[::]:PORT" for ":PORT" (every address), or nil when the
// endpoint is off.
func (c *Config) httpListener() []string {
	h := c.HTTPAddr()
	if h == "" {
		return nil
	}
	if host, port, ok := strings.Cut(h, ":"); ok && host == "" && isDigits(port) {
		h = "[::]:" + port
	}
	return []string{h}
}

// transportName names what an upstream of kind k speaks.
var transportName = map[upstream.Kind]string{
	upstream.KindPlain: "plain DNS", upstream.KindTLS: "DNS over TLS",
	upstream.KindHTTPS: "DNS over HTTPS", upstream.KindQUIC: "DNS over QUIC",
}

// checkOwnListener reports an upstream of kind k at ap that is one of
// dnsfence's own listeners of another protocol on the socket the upstream
// is asked on (UDP first for plain DNS, UDP for DNS over QUIC, TCP for
// DNS over TLS and HTTPS): a plain upstream at listen_quic, a tls:// one
// at listen, listen_https or the http endpoint, and so on. dnsfence holds
// that socket, so every try meets a listener that speaks another
// protocol, and fails (a timeout, or "no application protocol": DoT's
// ALPN is dot, DoH's h2 and http/1.1). Addresses are matched as
// checkLoop matches them (loopIndex).
func (c *Config) checkOwnListener(errs *configErrors, at []any, shown string, k upstream.Kind, ap netip.AddrPort) {
	type listeners struct {
		key, speaks string
		addrs       []string // "" where the key's entry is of another kind
	}
	dohTLS, dohPlain := c.dohListeners()
	plain := listeners{"listen", "plain DNS", c.Listen}
	http := listeners{"http", "HTTP (the metrics and health endpoint)", c.httpListener()}
	var others []listeners
	switch k {
	case upstream.KindPlain:
		others = []listeners{{"listen_quic", "DNS over QUIC", c.ListenQUIC}}
	case upstream.KindQUIC:
		others = []listeners{plain}
	case upstream.KindTLS:
		others = []listeners{plain, {"listen_https", "DNS over HTTPS", dohTLS}, {"listen_https", "plain HTTP (behind a TLS-terminating proxy)", dohPlain}, http}
	case upstream.KindHTTPS:
		others = []listeners{plain, {"listen_tls", "DNS over TLS", c.ListenTLS}, {"listen_https", "plain HTTP (behind a TLS-terminating proxy)", dohPlain}, http}
	}
	for _, o := range others {
		if j := loopIndex(o.addrs, ap); j >= 0 {
			name := fmt.Sprintf("%s[%d] %s", o.key, j, o.addrs[j])
			if o.key == "http" {
				name = "http " + c.HTTPAddr()
			} else if o.key == "listen_https" {
				name = fmt.Sprintf("%s[%d] %s", o.key, j, c.ListenHTTPS[j])
			}
			errs.add(at, "%s is dnsfence's own listener (%s), which speaks %s, not %s: every query forwarded there would fail; give the resolvers dnsfence forwards to", shown, name, o.speaks, transportName[k])
			return
		}
	}
}

// loopIndex is the index of the listen address of addrs that an upstream
// written as ap would be (checkLoop), or -1: selfIndex's, but under a
// wildcard address only for 127.0.0.1 and ::1.
func loopIndex(addrs []string, ap netip.AddrPort) int {
	to := sentTo(ap.Addr())
	if j := selfIndex(addrs, ap); j >= 0 && (!wildcard(addrs[j]) || to == localhost4 || to == netip.IPv6Loopback()) {
		return j
	}
	return -1
}

// PlainUpstreamLoops reports whether ap, written in upstreams as a plain
// upstream, would be refused as dnsfence itself (checkLoop): one of its
// listen addresses, or 127.0.0.1 or ::1 on the port of a wildcard one. A
// resolv.conf nameserver left out as dnsfence (isSelf) that does not loop
// so (another loopback address under a wildcard, such as Docker's
// embedded DNS) is taken as another server when written there.
func (c *Config) PlainUpstreamLoops(ap netip.AddrPort) bool {
	return loopIndex(c.Listen, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())) >= 0
}

// PlainUpstreamAtTLS is the index of the listen_tls address that ap,
// written in upstreams as a plain upstream, would reach as checkLoop
// matches addresses (loopIndex), or -1. It is not refused: dnsfence holds
// only the TCP port there, so what answers on UDP may be another server.
func (c *Config) PlainUpstreamAtTLS(ap netip.AddrPort) int {
	return loopIndex(c.ListenTLS, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
}

// selfIndex is the index of the listen address of addrs that ap reaches
// (the same address and port, or a loopback address of either family on
// the port of a wildcard address), or -1. Go listens on 0.0.0.0 as on
// [::], with one dual-stack socket (net: favoriteAddrFamily), so ::1
// reaches a listener on 0.0.0.0 too; on a host without IPv6 there is no
// ::1 to forward to. An upstream at 0.0.0.0 or [::] is the host itself
// (sentTo).
func selfIndex(addrs []string, ap netip.AddrPort) int {
	a := sentTo(ap.Addr())
	for j, l := range addrs {
		if lp, err := netip.ParseAddrPort(l); err == nil && lp.Port() == ap.Port() && lp.Port() != 0 {
			la := lp.Addr().Unmap()
			if sameHost(la, a) || la.IsUnspecified() && a.IsLoopback() {
				return j
			}
		}
	}
	return -1
}

// sentTo is the address a datagram to a reaches: 127.0.0.1 or [::1] for
// 0.0.0.0 or [::] (the host itself, as Linux and the BSDs route it), a
// otherwise.
func sentTo(a netip.Addr) netip.Addr {
	switch {
	case a.IsUnspecified() && a.Is4():
		return localhost4
	case a.IsUnspecified():
		return netip.IPv6Loopback()
	}
	return a
}

var localhost4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// wildcard reports whether the listen address l is 0.0.0.0 or [::].
func wildcard(l string) bool {
	lp, err := netip.ParseAddrPort(l)
	return err == nil && lp.Addr().IsUnspecified()
}

// sameHost reports whether a and b are one address, a zone written on
// one of them alone aside: [::1%lo]:53 is the listener [::1]:53 reaches.
// Two zones that differ are two interfaces (fe80::1%eth0, fe80::1%eth1).
func sameHost(a, b netip.Addr) bool {
	if a.Zone() == "" || b.Zone() == "" {
		return a.WithZone("") == b.WithZone("")
	}
	return a == b
}

// SystemResolverIsSelf reports whether the system resolver that the
// resolv.conf at path describes is dnsfence alone: every nameserver it
// names is dnsfence itself, or it names none and dnsfence listens on
// 127.0.0.1:53 or [::1]:53, where a resolver goes then. A name dnsfence
// asks the system to look up would come back to dnsfence. A nameserver
// with a zone (fe80::1%eth0), which upstreams leave out, is one the
// system resolver asks: dnsfence only when it is a listen address of
// dnsfence's, zone and all. Only the first maxNameservers are asked, as
// a stub resolver asks them. A file that cannot be read says nothing:
// false.
func (c *Config) SystemResolverIsSelf(path string) bool {
	servers, err := resolvConfNameservers(path)
	if err != nil {
		return false
	}
	servers = servers[:min(len(servers), maxNameservers)]
	if len(servers) == 0 {
		return c.isSelf(netip.MustParseAddrPort("127.0.0.1:53")) || c.isSelf(netip.MustParseAddrPort("[::1]:53"))
	}
	for _, ap := range servers {
		if !c.isSelf(ap) {
			return false
		}
	}
	return true
}
