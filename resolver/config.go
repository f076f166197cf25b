package resolver

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"go.yaml.in/yaml/v3"
)

// Defaults for every key a deployment may leave out.
const (
	DefaultListen           = "127.0.0.1:5353"
	DefaultHTTP             = "127.0.0.1:9153"
	DefaultBlockedTTL       = 60
	DefaultUpstreamTimeout  = 2 * time.Second
	DefaultDebounce         = 200 * time.Millisecond
	DefaultMaxShrink        = 0.5
	DefaultUnreadyAfter     = 5 * time.Minute
	DefaultCacheSize        = 20000
	DefaultCacheMaxTTL      = 86400
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
	UpstreamStrategy string          `yaml:"upstream_strategy"`
	AllowedClients   []string        `yaml:"allowed_clients"`
	TrustedProxies   []string        `yaml:"trusted_proxies"`
	ExplainClients   []string        `yaml:"explain_clients"`
	BlockedTTL       uint32          `yaml:"blocked_ttl"`
	Policies         []PolicyConfig  `yaml:"policies"`
	Cache            CacheConfig     `yaml:"cache"`
	Log              LogConfig       `yaml:"log"`
	HTTP             *string         `yaml:"http"`
	Reload           ReloadConfig    `yaml:"reload"`
	RateLimit        RateLimitConfig `yaml:"rate_limit"`
	Limits           LimitsConfig    `yaml:"limits"`

	// File is the configuration file's path; relative paths in it resolve
	// against its folder.
	File string `yaml:"-"`
	// ReadFile reads the list and range files the configuration names;
	// os.ReadFile unless the configuration is the embedded default.
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
}

// PolicyConfig is one entry of `policies`.
type PolicyConfig struct {
	Name        string   `yaml:"name"`
	Clients     []string `yaml:"clients"`
	ClientFiles []string `yaml:"client_files"`
	Block       []string `yaml:"block"`
	Allow       []string `yaml:"allow"`
	Action      Action   `yaml:"action"`
	// DoHCanary answers NXDOMAIN for use-application-dns.net, the name
	// Firefox asks before turning on its own DNS-over-HTTPS. Default: on
	// for policies that block.
	DoHCanary *bool `yaml:"doh_canary"`

	clients []blocklist.Range
}

// CacheConfig bounds the answer cache.
type CacheConfig struct {
	SizeSet *int   `yaml:"size"` // entries; 0 turns the cache off
	MinTTL  uint32 `yaml:"min_ttl"`
	MaxTTL  uint32 `yaml:"max_ttl"`
	// Prefetch refreshes popular answers shortly before they expire.
	Prefetch bool `yaml:"prefetch"`
	// ServeStale keeps answers this long past their TTL, to serve (with
	// TTL 30 and EDE 3) when every upstream fails (RFC 8767); 0 is off.
	ServeStale time.Duration `yaml:"serve_stale"`

	// Size is SizeSet with the default applied.
	Size int `yaml:"-"`
}

// LogConfig selects the log level, encoding and per-query lines.
type LogConfig struct {
	Level   string `yaml:"level"`   // debug | info | warn | error
	Format  string `yaml:"format"`  // json | console
	Queries string `yaml:"queries"` // blocked | all | none
	Output  string `yaml:"output"`  // stderr (default) | stdout
	// AuditLimit caps the audit lines (blocked queries) per client per
	// minute, so a looping device cannot flood the log; 0 is no cap.
	// Counters stay exact.
	AuditLimit int `yaml:"audit_limit"`
}

// RateLimitConfig is the per-client token bucket: Rate queries a second
// with bursts of Burst, per /32 (IPv4) or /56 (IPv6). Rate 0 turns it off.
// Exempt networks (default loopback) are never limited.
type RateLimitConfig struct {
	Rate   float64  `yaml:"rate"`
	Burst  int      `yaml:"burst"`
	Exempt []string `yaml:"exempt"`

	exempt []netip.Prefix
}

// LimitsConfig bounds what one client connection can hold.
type LimitsConfig struct {
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

// ReloadConfig tunes hot reload.
type ReloadConfig struct {
	Debounce  time.Duration `yaml:"debounce"`
	MaxShrink *float64      `yaml:"max_shrink"`
	// UnreadyAfter turns /readyz to 503 once reloads have failed or been
	// held for this long: the state served is older than the files. 0 is
	// never. Default DefaultUnreadyAfter.
	UnreadyAfter *time.Duration `yaml:"unready_after"`
	// WriterWait is how long a changed file that a writer still holds open
	// must stay unchanged before it is applied anyway (the writer may never
	// close it). Default blocklist.DefaultWriterWait.
	WriterWait time.Duration `yaml:"writer_wait"`
}

// HTTPAddr is the metrics and health address, "" when disabled.
func (c *Config) HTTPAddr() string {
	if c.HTTP == nil {
		return DefaultHTTP
	}
	return *c.HTTP
}

// Path resolves a path written in the configuration against its folder.
func (c *Config) Path(p string) string {
	if c.Embedded || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// LoadConfig reads, decodes and validates a configuration file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(path, data, os.ReadFile)
}

// ParseConfig decodes and validates configuration content. file names it in
// errors and anchors its relative paths; readFile reads the files it names.
// Every problem found is reported, each as `file:line: key: what is wrong`.
func ParseConfig(file string, data []byte, readFile func(string) ([]byte, error)) (*Config, error) {
	return parseConfig(file, data, readFile, false)
}

// ParseEmbeddedConfig parses the built-in default configuration, whose
// files are compiled in and read with readFile, and whose upstreams may come
// from a resolv.conf that names none.
func ParseEmbeddedConfig(file string, data []byte, readFile func(string) ([]byte, error)) (*Config, error) {
	return parseConfig(file, data, readFile, true)
}

func parseConfig(file string, data []byte, readFile func(string) ([]byte, error), embedded bool) (*Config, error) {
	// The hash is of the raw bytes, as the file watcher sees them; the
	// decoder reads the text without a byte-order mark.
	sum := sha256.Sum256(data)
	data = blocklist.Text(data)
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(file, nil, err)
	}
	cfg := &Config{File: file, ReadFile: readFile, Embedded: embedded, Sum: sum}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true) // unknown keys are errors, each one reported
	var typeErrs error
	if err := strict.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, yamlError(file, &root, err)
		}
		// Type errors leave the rest decoded: validate it too, so that
		// every problem is reported at once.
		typeErrs = yamlError(file, &root, err)
	}
	// `action: null` is YAML's null literal, which decodes as no value at
	// all; take the plain word as written.
	for i := range cfg.Policies {
		if n := nodeAt(&root, []any{"policies", i, "action"}); n != nil && n.Tag == "!!null" && n.Value == "null" {
			cfg.Policies[i].Action = ActionNull
		}
	}
	cfg.applyDefaults()
	if err := errors.Join(typeErrs, cfg.validate(&root)); err != nil {
		return nil, err
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var yamlUnknown = regexp.MustCompile(`^field (\S+) not found in type \S+$`)

// yamlError rewrites the decoder's "line N: ..." messages as
// "file:N: key: ...".
func yamlError(file string, root *yaml.Node, err error) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var errs []error
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		if g := yamlLine.FindStringSubmatch(m); g != nil {
			what := g[2]
			if u := yamlUnknown.FindStringSubmatch(what); u != nil {
				what = fmt.Sprintf("unknown key %q", u[1])
			} else if line, _ := strconv.Atoi(g[1]); root != nil {
				if key := keyAtLine(root, line); key != "" {
					what = key + ": " + what
				}
			}
			errs = append(errs, fmt.Errorf("%s:%s: %s", file, g[1], what))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s", file, m))
	}
	return errors.Join(errs...)
}

func (c *Config) applyDefaults() {
	if len(c.Listen) == 0 {
		c.Listen = []string{DefaultListen}
	}
	c.UpstreamTimeout = cmp.Or(c.UpstreamTimeout, DefaultUpstreamTimeout)
	c.UpstreamStrategy = cmp.Or(c.UpstreamStrategy, StrategyFastest)
	if c.AllowedClients == nil {
		c.AllowedClients = DefaultAllowedClients
	}
	if c.ExplainClients == nil {
		c.ExplainClients = DefaultExplainClients
	}
	c.BlockedTTL = cmp.Or(c.BlockedTTL, DefaultBlockedTTL)
	for i := range c.Policies {
		c.Policies[i].Action = cmp.Or(c.Policies[i].Action, ActionNXDomain)
	}
	c.Cache.Size = DefaultCacheSize
	if c.Cache.SizeSet != nil {
		c.Cache.Size = *c.Cache.SizeSet
	}
	c.Cache.MaxTTL = cmp.Or(c.Cache.MaxTTL, DefaultCacheMaxTTL)
	c.Log.Level = cmp.Or(c.Log.Level, "info")
	c.Log.Format = cmp.Or(c.Log.Format, "json")
	c.Log.Output = cmp.Or(c.Log.Output, "stderr")
	c.Log.Queries = cmp.Or(c.Log.Queries, "blocked")
	if c.RateLimit.Rate == 0 && c.RateLimit.Burst == 0 {
		c.RateLimit.Rate = DefaultRate
	}
	c.RateLimit.Burst = cmp.Or(c.RateLimit.Burst, int(2*c.RateLimit.Rate))
	if c.RateLimit.Exempt == nil {
		c.RateLimit.Exempt = []string{"127.0.0.0/8", "::1/128"}
	}
	c.Limits.TCPConnections = cmp.Or(c.Limits.TCPConnections, DefaultTCPConnections)
	c.Limits.TCPConnectionsPerClient = cmp.Or(c.Limits.TCPConnectionsPerClient, DefaultTCPConnectionsPerClient)
	c.Limits.UDPReceiveBuffer = cmp.Or(c.Limits.UDPReceiveBuffer, DefaultUDPBuffer)
	c.Limits.UDPSendBuffer = cmp.Or(c.Limits.UDPSendBuffer, DefaultUDPBuffer)
	c.Limits.TCPReadTimeout = cmp.Or(c.Limits.TCPReadTimeout, DefaultTCPReadTimeout)
	c.Limits.TCPIdleTimeout = cmp.Or(c.Limits.TCPIdleTimeout, DefaultTCPIdleTimeout)
	c.Limits.TCPPipeline = cmp.Or(c.Limits.TCPPipeline, DefaultTCPPipeline)
	c.Limits.UpstreamInflight = cmp.Or(c.Limits.UpstreamInflight, DefaultUpstreamInflight)
	c.Reload.Debounce = cmp.Or(c.Reload.Debounce, DefaultDebounce)
	if c.Reload.MaxShrink == nil {
		v := DefaultMaxShrink
		c.Reload.MaxShrink = &v
	}
	if c.Reload.UnreadyAfter == nil {
		v := DefaultUnreadyAfter
		c.Reload.UnreadyAfter = &v
	}
	c.Reload.WriterWait = cmp.Or(c.Reload.WriterWait, blocklist.DefaultWriterWait)
}

// configErrors collects validation problems with the line of the key.
type configErrors struct {
	file string
	root *yaml.Node
	errs []error
}

// add records a problem at path (keys and sequence indexes).
func (e *configErrors) add(path []any, format string, args ...any) {
	line := lineOf(e.root, path)
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		e.errs = append(e.errs, fmt.Errorf("%s:%d: %s: %s", e.file, line, keyName(path), msg))
	} else {
		e.errs = append(e.errs, fmt.Errorf("%s: %s: %s", e.file, keyName(path), msg))
	}
}

func keyName(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch v := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(v)
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		}
	}
	return b.String()
}

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

// nodeAt returns the node at path, or nil when the file does not have it.
func nodeAt(root *yaml.Node, path []any) *yaml.Node {
	_, n := walk(root, path)
	return n
}

// walk follows path (mapping keys and sequence indexes) from the document
// root. It returns the line of the deepest node reached, and the node at
// path if the whole path exists.
func walk(root *yaml.Node, path []any) (int, *yaml.Node) {
	if root == nil || len(root.Content) == 0 {
		return 0, nil
	}
	n := root.Content[0]
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch v := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == v {
						line = n.Content[i].Line
						next = n.Content[i+1]
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

// validate checks every value and parses the address ranges; it reports all
// problems at once.
func (c *Config) validate(root *yaml.Node) error {
	errs := &configErrors{file: c.File, root: root}
	for i, l := range c.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			errs.add([]any{"listen", i}, "want host:port, got %q", l)
		} else if _, err := netip.ParseAddrPort(l); err != nil {
			errs.add([]any{"listen", i}, "want an IP address and port, got %q", l)
		}
	}
	if len(c.Upstreams) == 0 && !c.Embedded {
		errs.add([]any{"upstreams"}, "at least one upstream is required")
	}
	for i, u := range c.Upstreams {
		if isResolvConf(u) {
			continue
		}
		if _, err := netip.ParseAddrPort(u); err != nil {
			errs.add([]any{"upstreams", i}, "want IP:port (e.g. 9.9.9.9:53 or [2620:fe::fe]:53) or a resolv.conf path, got %q", u)
		}
	}
	if c.UpstreamStrategy != StrategyFastest && c.UpstreamStrategy != StrategyOrdered {
		errs.add([]any{"upstream_strategy"}, "want fastest or ordered, got %q", c.UpstreamStrategy)
	}
	if c.UpstreamTimeout < 0 {
		errs.add([]any{"upstream_timeout"}, "must be positive, got %s", c.UpstreamTimeout)
	}
	c.allowed = parsePrefixes(errs, "allowed_clients", c.AllowedClients)
	c.trusted = parsePrefixes(errs, "trusted_proxies", c.TrustedProxies)
	c.explain = parsePrefixes(errs, "explain_clients", c.ExplainClients)
	if c.HTTP != nil && *c.HTTP != "" {
		if _, _, err := net.SplitHostPort(*c.HTTP); err != nil {
			errs.add([]any{"http"}, "want host:port or empty to disable, got %q", *c.HTTP)
		}
	}

	names := map[string]int{}
	owner := map[netip.Prefix]string{}
	for i := range c.Policies {
		p := &c.Policies[i]
		at := func(rest ...any) []any { return append([]any{"policies", i}, rest...) }
		switch {
		case p.Name == "":
			errs.add(at("name"), "every policy needs a name")
		case names[p.Name] > 0:
			errs.add(at("name"), "duplicate policy name %q (also policies[%d])", p.Name, names[p.Name]-1)
		default:
			names[p.Name] = i + 1
		}
		switch p.Action {
		case ActionNXDomain, ActionRefused, ActionNull, ActionLog:
		default:
			errs.add(at("action"), "want nxdomain, refused, null or log, got %q", p.Action)
		}
		for j, s := range p.Clients {
			pfx, err := blocklist.ParsePrefix(s)
			if err != nil {
				errs.add(at("clients", j), "%v: %q", err, s)
				continue
			}
			if other, dup := owner[pfx]; dup {
				errs.add(at("clients", j), "%s is already a range of policy %q; the same range in two policies is ambiguous", pfx, other)
				continue
			}
			owner[pfx] = p.Name
			p.clients = append(p.clients, blocklist.Range{Prefix: pfx, File: c.File, Line: lineOf(root, at("clients", j))})
		}
		if len(p.Clients) == 0 && len(p.ClientFiles) == 0 {
			errs.add(at("clients"), "policy %q has no clients or client_files", p.Name)
		}
		for _, files := range []struct {
			key   string
			paths []string
		}{{"client_files", p.ClientFiles}, {"block", p.Block}, {"allow", p.Allow}} {
			key := files.key
			for j, f := range files.paths {
				if f == "" {
					errs.add(at(key, j), "empty path")
				} else if c.ReadFile != nil && !c.Embedded {
					if _, err := os.Stat(c.Path(f)); errors.Is(err, fs.ErrNotExist) {
						errs.add(at(key, j), "file does not exist: %s", c.Path(f))
					} else if err != nil {
						errs.add(at(key, j), "%v", err)
					}
				}
			}
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs.add([]any{"log", "level"}, "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Output {
	case "stderr", "stdout":
	default:
		errs.add([]any{"log", "output"}, "want stderr or stdout, got %q", c.Log.Output)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		errs.add([]any{"log", "format"}, "want json or console, got %q", c.Log.Format)
	}
	switch c.Log.Queries {
	case "blocked", "all", "none":
	default:
		errs.add([]any{"log", "queries"}, "want blocked, all or none, got %q", c.Log.Queries)
	}
	c.RateLimit.exempt = parsePrefixes(errs, "rate_limit.exempt", c.RateLimit.Exempt)
	if c.RateLimit.Rate < 0 {
		errs.add([]any{"rate_limit", "rate"}, "must not be negative, got %g", c.RateLimit.Rate)
	}
	if c.RateLimit.Burst < 1 && c.RateLimit.Rate > 0 {
		errs.add([]any{"rate_limit", "burst"}, "must be at least 1 when rate is set, got %d", c.RateLimit.Burst)
	}
	for _, l := range []struct {
		key string
		bad bool
	}{
		{"tcp_connections", c.Limits.TCPConnections < 1},
		{"tcp_connections_per_client", c.Limits.TCPConnectionsPerClient < 1},
		{"tcp_read_timeout", c.Limits.TCPReadTimeout <= 0},
		{"tcp_idle_timeout", c.Limits.TCPIdleTimeout <= 0},
		{"tcp_pipeline", c.Limits.TCPPipeline < 1},
		{"upstream_inflight", c.Limits.UpstreamInflight < 1},
	} {
		if l.bad {
			errs.add([]any{"limits", l.key}, "must be positive")
		}
	}
	for _, b := range []struct {
		key  string
		size int
	}{{"udp_receive_buffer", c.Limits.UDPReceiveBuffer}, {"udp_send_buffer", c.Limits.UDPSendBuffer}} {
		if b.size < minUDPBuffer || b.size > maxUDPBuffer {
			errs.add([]any{"limits", b.key}, "want %d to %d bytes, got %d", minUDPBuffer, maxUDPBuffer, b.size)
		}
	}
	if c.Log.AuditLimit < 0 {
		errs.add([]any{"log", "audit_limit"}, "must not be negative, got %d", c.Log.AuditLimit)
	}
	if c.Cache.Size < 0 {
		errs.add([]any{"cache", "size"}, "must not be negative, got %d", c.Cache.Size)
	}
	if c.Cache.ServeStale < 0 {
		errs.add([]any{"cache", "serve_stale"}, "must not be negative, got %s", c.Cache.ServeStale)
	}
	if c.Cache.MinTTL > c.Cache.MaxTTL {
		errs.add([]any{"cache", "min_ttl"}, "min_ttl %d is above max_ttl %d", c.Cache.MinTTL, c.Cache.MaxTTL)
	}
	if s := *c.Reload.MaxShrink; s < 0 || s > 1 {
		errs.add([]any{"reload", "max_shrink"}, "want a fraction from 0 to 1, got %s", strconv.FormatFloat(s, 'g', -1, 64))
	}
	if c.Reload.Debounce < 0 {
		errs.add([]any{"reload", "debounce"}, "must be positive, got %s", c.Reload.Debounce)
	}
	if *c.Reload.UnreadyAfter < 0 {
		errs.add([]any{"reload", "unready_after"}, "must not be negative (0 is never), got %s", *c.Reload.UnreadyAfter)
	}
	if c.Reload.WriterWait < 0 {
		errs.add([]any{"reload", "writer_wait"}, "must be positive, got %s", c.Reload.WriterWait)
	}
	return errors.Join(errs.errs...)
}

func parsePrefixes(errs *configErrors, key string, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		p, err := blocklist.ParsePrefix(s)
		if err != nil {
			errs.add([]any{key, i}, "%v: %q", err, s)
			continue
		}
		out = append(out, p)
	}
	return out
}

// isResolvConf reports an upstream written as a path to a resolv.conf file,
// as CoreDNS's `forward . /etc/resolv.conf` does.
func isResolvConf(u string) bool {
	return strings.HasPrefix(u, "/") || strings.HasPrefix(u, "./")
}

// ResolveUpstreams expands resolv.conf paths into their nameservers (port
// 53), leaving out any that is dnsfence itself: one of its listen addresses,
// or any loopback address when it listens on a wildcard address on port 53.
func (c *Config) ResolveUpstreams() ([]string, error) {
	self := map[netip.AddrPort]bool{}
	wildcard53 := false
	for _, l := range c.Listen {
		if ap, err := netip.ParseAddrPort(l); err == nil {
			self[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
			wildcard53 = wildcard53 || (ap.Addr().IsUnspecified() && ap.Port() == 53)
		}
	}
	var out []string
	for _, u := range c.Upstreams {
		if !isResolvConf(u) {
			out = append(out, u)
			continue
		}
		data, err := os.ReadFile(u)
		if err != nil {
			return nil, fmt.Errorf("reading upstreams: %w", err)
		}
		for _, line := range blocklist.Lines(string(data)) {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "nameserver" {
				continue
			}
			a, err := netip.ParseAddr(f[1])
			if err != nil || a.Zone() != "" {
				continue
			}
			ap := netip.AddrPortFrom(a.Unmap(), 53)
			if self[ap] || (wildcard53 && ap.Addr().IsLoopback()) {
				continue
			}
			out = append(out, ap.String())
		}
	}
	return out, nil
}
