package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"go.yaml.in/yaml/v3"
)

// FuzzConfig feeds arbitrary bytes to the config parser: it must never
// panic, never accept a config without upstreams, report what it rejects as
// *Error lines in line order, each with a message and none with the
// decoder's or Go's words, and give the same result when a byte-order mark
// stands before the text.
func FuzzConfig(f *testing.F) {
	testnet.Seed(f, "testdata/config/*.yaml", "../../configs/dnsfence.yaml", "../../configs/default.yaml")
	f.Add([]byte("\ufeffupstreams: [\"127.0.0.1:53\"]\r\npolicies: []\r\n"))
	f.Add([]byte("\ufeff\ufeffupstreams: [\"127.0.0.1:53\"]\r\n"))
	f.Add([]byte("\ufeff"))
	tables, _ := filepath.Glob("testdata/config/messages/*.txt")
	for _, table := range tables {
		data, err := os.ReadFile(table)
		if err != nil {
			f.Fatal(err)
		}
		for _, sn := range strings.Split("\n"+string(data), "\n## ")[1:] {
			_, body, _ := strings.Cut(sn, "\n")
			f.Add([]byte(body))
		}
	}
	noFiles := func(string) ([]byte, error) { return nil, os.ErrNotExist }
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data, noFiles)
		if err == nil && len(cfg.Upstreams) == 0 {
			t.Fatal("a config without upstreams was accepted")
		}
		if err != nil {
			checkConfigErrors(t, err)
			checkErrorPlaces(t, blocklist.Text(data), err)
			_, _ = checkOffersTaken(t, "fuzz.yaml", "fuzz.yaml", data, err, noFiles)
		} else {
			checkNoClash(t, cfg)
			checkNoLoop(t, cfg)
			checkOneDocument(t, blocklist.Text(data))
			for key, d := range map[string]time.Duration{"upstream_timeout": cfg.UpstreamTimeout,
				"limits.tcp_read_timeout": cfg.Limits.TCPReadTimeout, "limits.tcp_idle_timeout": cfg.Limits.TCPIdleTimeout} {
				if d < time.Millisecond {
					t.Fatalf("accepted %s %v, under a millisecond", key, d)
				}
			}
		}
		if off := blocklist.InvalidUTF8(blocklist.Text(data)); off >= 0 && err == nil {
			t.Fatalf("a config with an octet that is not UTF-8 (offset %d) was accepted", off)
		}
		if bytes.HasPrefix(data, []byte("\ufeff")) {
			return
		}
		marked, merr := Parse("fuzz.yaml", append([]byte("\ufeff"), data...), noFiles)
		if fmt.Sprint(err) != fmt.Sprint(merr) {
			t.Fatalf("with a byte-order mark: %v, without: %v", merr, err)
		}
		if err == nil && !slices.Equal(cfg.Upstreams, marked.Upstreams) {
			t.Fatalf("with a byte-order mark: upstreams %v, without: %v", marked.Upstreams, cfg.Upstreams)
		}
	})
}

// checkErrorPlaces checks that every problem of a refused configuration
// names the file and a line of it (0 only for a key the file leaves out),
// and that a byte that is not UTF-8 is reported on its own line.
func checkErrorPlaces(t *testing.T, data []byte, err error) {
	t.Helper()
	list := joined(err)
	// YAML ends a line at a CR alone too (a classic Mac file), and names
	// its lines so; dnsfence's own line finding counts LFs.
	lines := 1 + bytes.Count(data, []byte{'\n'}) + bytes.Count(data, []byte{'\r'}) - bytes.Count(data, []byte("\r\n"))
	for _, e := range list {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("%T is not a *Error: %v", e, e)
		}
		if ce.File != "fuzz.yaml" {
			t.Fatalf("error names file %q: %v", ce.File, e)
		}
		if ce.Line < 0 || ce.Line > lines {
			t.Fatalf("error names line %d of %d: %v", ce.Line, lines, e)
		}
		if ce.Line == 0 && ce.Key == "" {
			t.Fatalf("error names neither a line nor a key: %v", e)
		}
		if strings.Contains(ce.Err.Error(), "is not UTF-8 text (octet") {
			off := blocklist.InvalidUTF8(data)
			if off < 0 {
				t.Fatalf("a not-UTF-8 error for valid UTF-8: %v", e)
			}
			if want := 1 + bytes.Count(data[:off], []byte{'\n'}); ce.Line != want {
				t.Fatalf("the octet at offset %d is on line %d, the error says %d: %v", off, want, ce.Line, e)
			}
			if want := fmt.Sprintf("(octet %02X)", data[off]); !strings.Contains(ce.Err.Error(), want) {
				t.Fatalf("the error does not name %s: %v", want, e)
			}
		}
	}
}

// socketOf is s as an address a listener binds, zone left out, and
// whether it is one with a port of its own (not 0).
func socketOf(s string) (netip.AddrPort, bool) {
	if host, port, ok := strings.Cut(s, ":"); ok && host == "" && !strings.Contains(port, ":") {
		s = "[::]:" + port
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}

// takes reports whether a listener on a (the port aside) takes b: the
// same address, or a wildcard every address (Go listens on 0.0.0.0 as on
// [::], with one dual-stack socket).
func takes(a, b netip.Addr) bool {
	return a == b || a.IsUnspecified()
}

// checkNoClash fails when an accepted configuration has two listeners of
// one transport on one port: bind would refuse the second.
func checkNoClash(t *testing.T, cfg *Config) {
	t.Helper()
	type sock struct {
		name string
		ap   netip.AddrPort
	}
	var tcp, udp []sock
	add := func(m *[]sock, key string, addrs []string) {
		for i, a := range addrs {
			if ap, ok := socketOf(a); ok {
				*m = append(*m, sock{fmt.Sprintf("%s[%d] %s", key, i, a), ap})
			}
		}
	}
	add(&tcp, "listen", cfg.Listen)
	add(&udp, "listen", cfg.Listen)
	add(&tcp, "listen_tls", cfg.ListenTLS)
	var https []string
	for _, a := range cfg.ListenHTTPS {
		if !strings.Contains(a, "://") {
			https = append(https, a)
		} else if _, rest, ok := strings.Cut(a, "://"); ok {
			https = append(https, strings.TrimSuffix(rest, "/"))
		}
	}
	add(&tcp, "listen_https", https)
	add(&udp, "listen_quic", cfg.ListenQUIC)
	if cfg.HTTP != nil {
		add(&tcp, "http", []string{*cfg.HTTP})
	} else {
		add(&tcp, "http (left out)", []string{DefaultHTTP})
	}
	for _, m := range [][]sock{tcp, udp} {
		for i := range m {
			for j := i + 1; j < len(m); j++ {
				a, b := m[i], m[j]
				if a.ap.Port() == b.ap.Port() && (takes(a.ap.Addr(), b.ap.Addr()) || takes(b.ap.Addr(), a.ap.Addr())) {
					t.Fatalf("accepted with two listeners on one port: %s and %s", a.name, b.name)
				}
			}
		}
	}
}

// checkNoLoop fails when an accepted configuration forwards to one of its
// own listeners of the upstream's transport.
func checkNoLoop(t *testing.T, cfg *Config) {
	t.Helper()
	for _, u := range cfg.Upstreams {
		if IsResolvConf(u) {
			continue
		}
		a, err := upstream.ParseAddress(u)
		if err != nil {
			continue
		}
		ip, err := netip.ParseAddr(a.Host)
		if err != nil {
			continue
		}
		ip = ip.Unmap().WithZone("")
		if ip == netip.IPv4Unspecified() {
			ip = netip.MustParseAddr("127.0.0.1") // where a datagram to it goes
		} else if ip == netip.IPv6Unspecified() {
			ip = netip.IPv6Loopback()
		}
		var addrs []string
		switch a.Kind {
		case upstream.KindPlain:
			addrs = cfg.Listen
		case upstream.KindTLS:
			addrs = cfg.ListenTLS
		case upstream.KindQUIC:
			addrs = cfg.ListenQUIC
		default:
			continue
		}
		for _, l := range addrs {
			lp, ok := socketOf(l)
			if !ok || lp.Port() != a.Port {
				continue
			}
			// Under a wildcard, 127.0.0.1 and ::1 only: another loopback
			// address may be translated elsewhere (Docker's 127.0.0.11).
			if lp.Addr() == ip || lp.Addr().IsUnspecified() && (ip == netip.MustParseAddr("127.0.0.1") || ip == netip.IPv6Loopback()) && takes(lp.Addr(), ip) {
				t.Fatalf("accepted upstream %q, which is its own listener %s", u, l)
			}
		}
	}
}

// checkOneDocument fails when a configuration accepted has a document
// after its first with anything in it, or one that does not parse:
// dnsfence reads the first alone, and would drop it unread.
func checkOneDocument(t *testing.T, data []byte) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; i < 1000; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		switch {
		case errors.Is(err, io.EOF):
			return
		case err != nil:
			t.Fatalf("accepted, though document %d does not parse: %v", i+1, err)
		case i > 0 && len(n.Content) > 0 && n.Content[0].Tag != "!!null":
			t.Fatalf("accepted, though document %d (line %d) is not empty", i+1, n.Content[0].Line)
		}
	}
}
