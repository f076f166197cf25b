package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/source"
)

// Defaults of the `sources` section (DESIGN.md §9).
const (
	DefaultSourceRefresh  = source.DefaultRefresh
	DefaultSourceMaxBytes = source.DefaultMaxBytes
)

// Sources are the settings shared by every remote list source: a `block`
// or `allow` entry that is a URL (https://..., http:// to a loopback host)
// or a zone transfer (axfr://HOST[:PORT]/ZONE).
type Sources struct {
	// Refresh is how often a URL is polled (conditional GET), and the
	// longest a zone waits between SOA checks. Default 1h.
	Refresh time.Duration `yaml:"refresh"`
	// CacheDir keeps the last good copy of each remote source, so that a
	// restart without network still blocks. Required when a remote source
	// is configured; relative to the configuration file's folder.
	CacheDir string `yaml:"cache_dir"`
	// MaxBytes refuses a URL body, or a zone transfer, over this many
	// bytes. Default 64 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// TSIG signs zone transfers and SOA queries, and is required on their
	// answers (RFC 8945).
	TSIG *TSIG `yaml:"tsig"`
	// ServfailUntilReady answers SERVFAIL (Extended DNS Error 14, Not
	// Ready) to the clients of a policy while one of its remote block
	// lists has no copy yet (none on disk in CacheDir, its server or
	// primary unreachable), for every name the policy's other lists
	// neither block nor allow, rather than forward names that list may
	// hold: BIND's response-policy `servfail-until-ready`. Default false:
	// such a list blocks none of its names until its first copy.
	ServfailUntilReady bool `yaml:"servfail_until_ready"`
}

// TSIG is a transaction signature key, as BIND's `key` statement gives it.
type TSIG struct {
	Name      string `yaml:"name"`      // e.g. xfr-key.
	Algorithm string `yaml:"algorithm"` // hmac-sha256 (default), hmac-sha1, hmac-sha224, hmac-sha384, hmac-sha512
	Secret    string `yaml:"secret"`    // base64
}

// DefaultTSIGAlgorithm is the algorithm of a key that names none: what
// BIND's tsig-keygen makes.
const DefaultTSIGAlgorithm = "hmac-sha256"

// IsRemote reports whether a `block` or `allow` entry names a remote
// source (https://, http:// or axfr://) rather than a file.
func IsRemote(entry string) bool { return source.IsRemote(entry) }

// RemoteLists are the distinct remote entries of every policy's block and
// allow lists, in file order.
func (c *Config) RemoteLists() []string {
	var out []string
	for _, p := range c.Policies {
		for _, e := range slices.Concat(p.Block, p.Allow) {
			if IsRemote(e) && !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	return out
}

// SourceOptions are the source.Options of the `sources` section, without a
// logger.
func (c *Config) SourceOptions() source.Options {
	opt := source.Options{Refresh: c.Sources.Refresh, MaxBytes: c.Sources.MaxBytes}
	if c.Sources.CacheDir != "" {
		opt.CacheDir = c.Path(c.Sources.CacheDir)
	}
	if k := c.Sources.TSIG; k != nil {
		opt.TSIG = &source.TSIG{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
	}
	return opt
}

// applySourceDefaults fills in the keys of `sources` the file leaves out;
// written is applyDefaults'.
func (c *Config) applySourceDefaults(written func(path ...any) bool) {
	orDefault(&c.Sources.Refresh, DefaultSourceRefresh, written("sources", "refresh"))
	orDefault(&c.Sources.MaxBytes, DefaultSourceMaxBytes, written("sources", "max_bytes"))
	if k := c.Sources.TSIG; k != nil && k.Algorithm == "" {
		k.Algorithm = DefaultTSIGAlgorithm
	}
}

// validateSources checks the `sources` section; the remote entries
// themselves are checked where they are written (validatePolicyFiles).
func (c *Config) validateSources(errs *configErrors) {
	at := func(key ...any) []any { return append([]any{"sources"}, key...) }
	if c.Sources.Refresh < 0 {
		errs.add(at("refresh"), "%s is negative; give a positive duration, %s", errs.written(at("refresh"), c.Sources.Refresh), example(at("refresh")))
	} else if c.Sources.Refresh < time.Second {
		errs.add(at("refresh"), "%s is under a second: every remote list would be fetched all the time; %s", errs.written(at("refresh"), c.Sources.Refresh), example(at("refresh")))
	}
	if c.Sources.MaxBytes < 1 {
		errs.add(at("max_bytes"), "%d is below 1; give a size in bytes, %s", c.Sources.MaxBytes, example(at("max_bytes")))
	}
	if k := c.Sources.TSIG; k != nil {
		key := source.TSIG{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret}
		name, alg, secret := key.Problems()
		zones := slices.ContainsFunc(c.RemoteLists(), func(e string) bool { return strings.HasPrefix(strings.ToLower(e), "axfr://") })
		// A field left out is only missing once a zone transfer needs the
		// key; a field given is checked always.
		if name != nil && (k.Name != "" || zones) {
			errs.add(at("tsig", "name"), "%v; give the key's name as the primary names it, %s", name, example(at("tsig", "name")))
		}
		if alg != nil {
			errs.add(at("tsig", "algorithm"), "%v", alg)
		}
		if secret != nil && (k.Secret != "" || zones) {
			errs.add(at("tsig", "secret"), "%v; give the base64 secret of the key, as in BIND's key statement (tsig-keygen prints one), %s", secret, example(at("tsig", "secret")))
		}
	}
	remote := c.RemoteLists()
	dir := c.Sources.CacheDir
	switch {
	case dir == "" && len(remote) > 0:
		// At the first remote list's line: the key is not in the file.
		errs.addLine(c.remoteLine(errs, remote[0]), at("cache_dir"), "required with remote lists (%s here): it keeps the last good copy of each, so that a restart without network still blocks; %s", blocklist.RedactURL(remote[0]), example(at("cache_dir")))
	case dir != "" && c.ReadFile != nil && !c.Embedded:
		fi, err := os.Stat(c.Path(dir))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Made at the first copy.
		case err != nil:
			errs.add(at("cache_dir"), "%s; give a folder dnsfence may write, %s", fileProblem(c.Path(dir), err), example(at("cache_dir")))
		case !fi.IsDir():
			errs.add(at("cache_dir"), "%q is not a folder; give a folder dnsfence may write, %s", c.Path(dir), example(at("cache_dir")))
		}
	}
}

// validateRemote checks a remote `block` or `allow` entry at path with the
// `sources` settings, as the source itself will (source.New): it starts
// nothing. A key with a problem is said at its own keys (validateSources)
// and left out here; a right one is kept, as a zone's smallest transfer,
// which sources.max_bytes must hold, holds its signature.
func (c *Config) validateRemote(errs *configErrors, path []any, entry string) {
	opt := c.SourceOptions()
	if k := opt.TSIG; k != nil {
		if name, alg, secret := k.Problems(); name != nil || alg != nil || secret != nil {
			opt.TSIG = nil
		}
	}
	if _, err := source.New(entry, opt); err != nil {
		shown := blocklist.RedactURL(entry)
		msg := strings.TrimPrefix(err.Error(), shown+": ")
		errs.add(path, "%q: %s", shown, msg)
		return
	}
	c.checkSelfSource(errs, path, entry)
}

// checkSelfSource reports a remote entry, valid, whose host and port are
// one of dnsfence's own TCP listeners (loopIndex, as checkLoop matches
// an upstream): listen, listen_tls, listen_https or the http endpoint. A
// zone transfer runs over TCP, and dnsfence serves none (it answers
// AXFR and IXFR REFUSED, and is authoritative for no zone), nor does
// any of its listeners serve a list: every transfer or fetch would fail,
// and the list never load.
func (c *Config) checkSelfSource(errs *configErrors, path []any, entry string) {
	u, err := url.Parse(entry)
	if err != nil {
		return
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return // a name
	}
	scheme := strings.ToLower(u.Scheme)
	port, err := strconv.ParseUint(cmp.Or(u.Port(), map[string]string{"axfr": "53", "http": "80", "https": "443"}[scheme]), 10, 16)
	if err != nil {
		return
	}
	ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
	serves, try, want := "no list", "fetch", "the list's server"
	if scheme == "axfr" {
		serves, try, want = "no zone transfer", "transfer", "the zone's primary"
	}
	dohTLS, dohPlain := c.dohListeners()
	doh := make([]string, len(dohTLS))
	for i := range doh {
		doh[i] = cmp.Or(dohTLS[i], dohPlain[i])
	}
	for _, o := range []struct {
		key            string
		addrs, written []string
	}{{"listen", c.Listen, c.Listen}, {"listen_tls", c.ListenTLS, c.ListenTLS}, {"listen_https", doh, c.ListenHTTPS}, {"http", c.httpListener(), []string{c.HTTPAddr()}}} {
		if j := loopIndex(o.addrs, ap); j >= 0 {
			name := fmt.Sprintf("%s[%d] %s", o.key, j, o.written[j])
			if o.key == "http" {
				name = "http " + o.written[j]
			}
			errs.add(path, "%q: %s is dnsfence's own listener (%s), which serves %s: every %s would fail; give %s", blocklist.RedactURL(entry), ap, name, serves, try, want)
			return
		}
	}
}

// remoteLine is the line where the remote list entry is first written.
func (c *Config) remoteLine(errs *configErrors, entry string) int {
	for i, p := range c.Policies {
		for _, key := range []string{"block", "allow"} {
			list := p.Block
			if key == "allow" {
				list = p.Allow
			}
			if j := slices.Index(list, entry); j >= 0 {
				return lineOf(errs.root, []any{"policies", i, key, j})
			}
		}
	}
	return 0
}
