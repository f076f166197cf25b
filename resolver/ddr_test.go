package resolver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// designated is one SVCB record of a DDR answer, as a device reads it.
type designated struct {
	priority uint16
	target   string
	alpn     []string
	port     uint16
	hints    []netip.Addr
	dohpath  string
}

// readDesignation reads the SVCB records of r (RFC 9461's keys).
func readDesignation(t *testing.T, r *dns.Msg) []designated {
	t.Helper()
	var out []designated
	for _, rr := range r.Answer {
		svcb, ok := rr.(*dns.SVCB)
		require.True(t, ok, "an SVCB record: %s", rr)
		d := designated{priority: svcb.Priority, target: svcb.Target}
		for _, kv := range svcb.Value {
			switch v := kv.(type) {
			case *dns.SVCBAlpn:
				d.alpn = v.Alpn
			case *dns.SVCBPort:
				d.port = v.Port
			case *dns.SVCBIPv4Hint:
				for _, ip := range v.Hint {
					a, _ := netip.AddrFromSlice(ip.To4())
					d.hints = append(d.hints, a)
				}
			case *dns.SVCBIPv6Hint:
				for _, ip := range v.Hint {
					a, _ := netip.AddrFromSlice(ip)
					d.hints = append(d.hints, a)
				}
			case *dns.SVCBDoHPath:
				d.dohpath = v.Template
			default:
				t.Fatalf("an SvcParam a DNS SVCB record does not carry: %s", kv)
			}
		}
		out = append(out, d)
	}
	return out
}

// verifiedDiscovery is RFC 9462 §4.2's check of a designated resolver by a
// device that asked asked (the unencrypted resolver's address): the chain
// to the device's roots, for the target name, and asked among the
// certificate's IP addresses.
func verifiedDiscovery(roots *x509.CertPool, target string, asked netip.Addr, alpn string) *tls.Config {
	return &tls.Config{
		RootCAs: roots, ServerName: strings.TrimSuffix(target, "."), NextProtos: []string{alpn}, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, ip := range cs.PeerCertificates[0].IPAddresses {
				if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == asked {
					return nil
				}
			}
			return fmt.Errorf("the certificate does not carry %s, the address the device asked", asked)
		},
	}
}

// askDesignated asks m of the designated resolver d, at its first address
// hint, as a device that verified it would: over d's protocol, its DoH
// path from the template.
func askDesignated(d designated, cfg *tls.Config, from string, m *dns.Msg) (*dns.Msg, error) {
	if len(d.hints) == 0 {
		return nil, errors.New("no address hint")
	}
	addr := netip.AddrPortFrom(d.hints[0], d.port).String()
	switch d.alpn[0] {
	case listen.ALPNDoT:
		return askDoT(addr, from, cfg, m)
	case listen.ALPNHTTP2:
		path, ok := strings.CutSuffix(d.dohpath, "{?dns}")
		if !ok {
			return nil, fmt.Errorf("dohpath %q is no template with a dns variable", d.dohpath)
		}
		return askDoH("https://"+addr+path, from, cfg, m, false)
	case listen.ALPNDoQ:
		return askDoQ(addr, from, cfg, m)
	}
	return nil, fmt.Errorf("alpn %v", d.alpn)
}

// TestDDRDesignatesOwnListeners: a device given dnsfence by address asks
// `_dns.resolver.arpa SVCB` (RFC 9462 §4) and gets dnsfence's own DNS
// over HTTPS, TLS and QUIC listeners, on every transport it may ask on:
// one SVCB record each, in that order of priority, the certificate's host
// name as target, the alpn, the port each listens on, the address hint,
// DoH's path template (RFC 9461), and the target's address in the
// additional section; never the plain-HTTP DoH listener (its TLS is a
// proxy's). Each designated resolver passes a device's verified discovery
// (§4.2: the certificate for the target carries the address asked) and
// blocks for the device's policy as dnsfence does on UDP: the designation
// moves a government device to encrypted DNS, not past its policy.
func TestDDRDesignatesOwnListeners(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	ports := map[string]uint16{}
	for _, tr := range []string{listen.TLS, listen.HTTPS, listen.QUIC} {
		ports[tr] = netip.MustParseAddrPort(e.addrs[tr]).Port()
	}
	asked := netip.MustParseAddr("127.0.0.1")
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			for _, name := range []string{"_dns.resolver.arpa.", "_DNS.Resolver.ARPA.", `\095dns.resolver.arpa.`, "ANY"} {
				qtype := dns.TypeSVCB
				if name == "ANY" { // every record of the name: the same
					name, qtype = "_dns.resolver.arpa.", dns.TypeANY
				}
				r := ask(t, e.addr, "127.0.0.2", network, question(name, qtype, true))
				require.Equal(t, dns.RcodeSuccess, r.Rcode, name)
				assert.True(t, r.Authoritative, "dnsfence's own zone")
				assert.Empty(t, r.Ns, "an answer, not NODATA")
				got := readDesignation(t, r)
				require.Len(t, got, 3, name)
				for i, want := range []struct {
					alpn, transport string
				}{{"h2", listen.HTTPS}, {"dot", listen.TLS}, {"doq", listen.QUIC}} {
					d := got[i]
					assert.Equal(t, uint16(i+1), d.priority)
					assert.Equal(t, testServerName+".", d.target)
					assert.Equal(t, []string{want.alpn}, d.alpn)
					assert.Equal(t, ports[want.transport], d.port, want.transport)
					assert.Equal(t, []netip.Addr{asked}, d.hints)
					if want.transport == listen.HTTPS {
						assert.Equal(t, "/dns-query{?dns}", d.dohpath)
					} else {
						assert.Empty(t, d.dohpath)
					}
				}
				for _, rr := range r.Answer {
					assert.Equal(t, "_dns.resolver.arpa.", rr.Header().Name)
					assert.Equal(t, uint32(ddrTTL), rr.Header().Ttl)
				}
				var addrs []string
				for _, rr := range r.Extra {
					if a, ok := rr.(*dns.A); ok {
						assert.Equal(t, testServerName+".", a.Hdr.Name)
						addrs = append(addrs, a.A.String())
					}
				}
				assert.Equal(t, []string{"127.0.0.1"}, addrs, "the target's address, once")
				require.NotNil(t, r.IsEdns0(), "the OPT kept")
			}
		})
	}

	assert.Zero(t, up.count.Load(), "resolver.arpa is never forwarded")
	r := ask(t, e.addr, "127.0.0.2", "udp", question(ddrName, dns.TypeSVCB, true))
	for _, d := range readDesignation(t, r) {
		t.Run(d.alpn[0], func(t *testing.T) {
			cfg := verifiedDiscovery(p.pool, d.target, asked, d.alpn[0])
			blocked, err := askDesignated(d, cfg, "127.0.0.2", question("www.tiktok.com.", dns.TypeA, true))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeNameError, blocked.Rcode, "the government device's policy, over the designated resolver")
			before := up.count.Load()
			passed, err := askDesignated(d, cfg, "127.0.0.8", question("ddr-"+d.alpn[0]+".example.org.", dns.TypeA, true))
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeSuccess, passed.Rcode)
			require.Len(t, passed.Answer, 1)
			assert.Equal(t, before+1, up.count.Load())

			// A device that asked another address than the certificate
			// carries fails verified discovery (§4.2): the check above
			// is a real one.
			_, err = askDesignated(d, verifiedDiscovery(p.pool, d.target, netip.MustParseAddr("127.0.0.3"), d.alpn[0]),
				"127.0.0.2", question("www.tiktok.com.", dns.TypeA, true))
			assert.ErrorContains(t, err, "does not carry 127.0.0.3")
		})
	}

	// Other questions in the zone stay NODATA with the SOA, and the
	// designation is counted as a local answer.
	before := up.count.Load()
	for _, q := range []*dns.Msg{question(ddrName, dns.TypeA, true), question(ddrName, dns.TypeHTTPS, true),
		question("_dns.x.resolver.arpa.", dns.TypeSVCB, true), question("resolver.arpa.", dns.TypeSVCB, true)} {
		r := ask(t, e.addr, "127.0.0.2", "udp", q)
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, q.Question[0].String())
		assert.Empty(t, r.Answer, q.Question[0].String())
		require.Len(t, r.Ns, 1)
		assert.Equal(t, dns.TypeSOA, r.Ns[0].Header().Rrtype)
	}
	assert.Equal(t, before, up.count.Load(), "resolver.arpa is never forwarded")
	assert.Contains(t, scrape(t, e.registry), `dnsfence_queries_total{result="local",transport="udp"}`)

	// Over each encrypted transport too (a device already on one may ask),
	// but the plain-HTTP listener's: a proxy relays its requests, so the
	// address the device asked is not known and the loopback listeners
	// are not designated (TestDDRBehindAProxy).
	for _, a := range encryptedAskers(e) {
		r, err := a.ask("127.0.0.2", question(ddrName, dns.TypeSVCB, true))
		require.NoError(t, err, a.name)
		want := 3
		if strings.Contains(a.name, "behind a proxy") {
			want = 0
		}
		assert.Len(t, r.Answer, want, a.name)
	}
}

// TestDDROff: with ddr: false, or without an encrypted listener that
// dnsfence terminates TLS for, `_dns.resolver.arpa SVCB` is NODATA (RFC
// 9462 §4: designating none), never forwarded, and cached no longer than a
// designation (the SOA's TTL and MINIMUM 300 s, RFC 2308 §5), so that a
// device asks again soon once dnsfence designates; the zone's other
// negative answers keep RFC 6303's 10800 s.
func TestDDROff(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	for name, text := range map[string]string{
		"ddr false": strings.Replace(encryptedConfig(p), "blocked_ttl: 60", "blocked_ttl: 60\nddr: false", 1),
		"only plain http DoH": strings.Replace(testConfig, `listen: ["127.0.0.1:0"]`,
			`listen: ["127.0.0.1:0"]`+"\nlisten_https: [\"http://127.0.0.1:0\"]", 1),
		"no encrypted listener": testConfig,
	} {
		t.Run(name, func(t *testing.T) {
			e := startEncryptedFence(t, p, text, up.addr)
			r := ask(t, e.addr, "127.0.0.2", "udp", question(ddrName, dns.TypeSVCB, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.Empty(t, r.Answer)
			require.Len(t, r.Ns, 1)
			soa, ok := r.Ns[0].(*dns.SOA)
			require.True(t, ok, "the SOA: %s", r.Ns[0])
			assert.Equal(t, uint32(ddrTTL), soa.Hdr.Ttl)
			assert.Equal(t, uint32(ddrTTL), soa.Minttl)

			r = ask(t, e.addr, "127.0.0.2", "udp", question(ddrName, dns.TypeA, true))
			require.Len(t, r.Ns, 1)
			assert.Equal(t, uint32(localTTL), r.Ns[0].Header().Ttl, "another question of the zone")
		})
	}
	assert.Zero(t, up.count.Load())
}

// TestDDRHints: the address hint of each listener, for a query sent to an
// address: a listener bound to one address is designated at it; a
// wildcard one at the address the device asked, when it serves that
// address's family.
func TestDDRHints(t *testing.T) {
	a := netip.MustParseAddr
	for _, c := range []struct {
		bound, local string
		want         string // "" for no hint
	}{
		{"127.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"192.0.2.53", "127.0.0.1", "192.0.2.53"}, // the listener's own address, whatever was asked
		{"0.0.0.0", "192.0.2.7", "192.0.2.7"},
		{"0.0.0.0", "2001:db8::7", ""}, // 0.0.0.0 serves IPv4 only
		{"::", "2001:db8::7", "2001:db8::7"},
		{"::", "192.0.2.7", "192.0.2.7"}, // :: takes IPv4 too
		{"::", "::ffff:192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.53", "", "192.0.2.53"},
		{"::", "", ""}, // the address asked unknown
		{"::", "::", ""},
	} {
		var local netip.Addr
		if c.local != "" {
			local = a(c.local).Unmap()
		}
		got, ok := hintFor(a(c.bound), local)
		if c.want == "" {
			assert.False(t, ok, "%s asked at %s: %s", c.bound, c.local, got)
			continue
		}
		assert.True(t, ok, "%s asked at %s", c.bound, c.local)
		assert.Equal(t, a(c.want), got, "%s asked at %s", c.bound, c.local)
	}
}

// TestDDRTarget: the target is the certificate's first host name, not a
// wildcard; a certificate naming no host designates nothing.
func TestDDRTarget(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"DNS.Agency.Example"}, "dns.agency.example."},
		{[]string{"*.agency.example", "dns.agency.example"}, "dns.agency.example."},
		{[]string{"*.agency.example"}, ""},
		// A name of 256 octets, which no query can carry, is passed over.
		{[]string{strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 47) + ".agency.example", "dns.agency.example"}, "dns.agency.example."},
		{nil, ""},
	} {
		leaf := &x509.Certificate{DNSNames: c.names}
		got, ok := certHost(leaf)
		assert.Equal(t, c.want, got, "%v", c.names)
		assert.Equal(t, c.want != "", ok, "%v", c.names)
		d := &designation{endpoints: []listen.Endpoint{{Transport: listen.TLS, Addr: netip.MustParseAddrPort("192.0.2.53:853")}},
			leaf: func() *x509.Certificate { return leaf }}
		answer, _ := d.records(dns.ClassINET, netip.Addr{})
		assert.Equal(t, c.want != "", len(answer) == 1, "%v", c.names)
	}
}

// TestDDRWildcardListeners: listeners bound to wildcard addresses are
// designated at the address the device asked, learnt from the query
// itself on UDP (IP_PKTINFO, through the batched read loop) and TCP: a
// device that asked 127.0.0.2 or ::2 is sent back there, where its
// verified discovery expects the resolver (RFC 9462 §4.2, §4.3), not to
// the address routing picks. Go listens on 0.0.0.0 with a socket that
// takes IPv6 too (it reports [::]), so the DoH listener is designated at
// ::2 as well, where it answers (TestDDRHints has a socket of IPv4
// alone). It binds wildcard addresses and adds ::2 to lo, so it runs in a
// network namespace of its own.
func TestDDRWildcardListeners(t *testing.T) {
	if !testnet.InNetns(t, "addr add ::2/128 dev lo") {
		return
	}
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	text := strings.Replace(testConfig, `listen: ["127.0.0.1:0"]`, fmt.Sprintf(`listen: ["[::]:0"]
tls: {cert: %q, key: %q}
listen_tls: ["[::]:0"]
listen_https: ["0.0.0.0:0"]`, p.certFile, p.keyFile), 1)
	e := startEncryptedFence(t, p, text, up.addr)
	_, port, err := net.SplitHostPort(e.addr)
	require.NoError(t, err)
	dotPort := netip.MustParseAddrPort(e.addrs[listen.TLS]).Port()
	dohPort := netip.MustParseAddrPort(e.addrs[listen.HTTPS]).Port()
	for _, to := range []string{"127.0.0.1", "127.0.0.2", "::1", "::2"} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+" to "+to, func(t *testing.T) {
				from := "127.0.0.1"
				if strings.Contains(to, ":") {
					from = "::1"
				}
				var r *dns.Msg
				if network == "udp" {
					r = askConnected(t, net.JoinHostPort(to, port), from, question(ddrName, dns.TypeSVCB, true))
				} else {
					r = ask(t, net.JoinHostPort(to, port), from, "tcp", question(ddrName, dns.TypeSVCB, true))
				}
				got := readDesignation(t, r)
				require.Len(t, got, 2)
				assert.Equal(t, []string{"h2"}, got[0].alpn)
				assert.Equal(t, dohPort, got[0].port)
				assert.Equal(t, []string{"dot"}, got[1].alpn)
				assert.Equal(t, dotPort, got[1].port)
				for _, d := range got {
					require.Equal(t, []netip.Addr{netip.MustParseAddr(to)}, d.hints, d.alpn)
					// The hint is where the listener is.
					dl := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
					c, err := dl.Dial("tcp", netip.AddrPortFrom(d.hints[0], d.port).String())
					require.NoError(t, err, d.alpn)
					c.Close()
				}
			})
		}
	}
}

// TestDesignationCheck: `check` names the target devices are sent to, and
// warns when the designation cannot work as meant: a certificate naming
// no host (nothing designated), or one without an address of listen that
// devices may be given (they cannot verify it, RFC 9462 §4.2); not for
// wildcard and loopback addresses, nor with ddr: false or no encrypted
// listener.
func TestDesignationCheck(t *testing.T) {
	leaf := &x509.Certificate{DNSNames: []string{"dns.agency.example"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.53"), net.ParseIP("2001:db8::53")}}
	for _, c := range []struct {
		name, yaml string
		leaf       *x509.Certificate
		target     string
		warnings   []string
	}{
		{"every address in the certificate", `listen: ["10.0.0.53:53", "[2001:db8::53]:53", "127.0.0.1:53", "0.0.0.0:5353"]`, leaf,
			"dns.agency.example.", nil},
		{"an address missing", `listen: ["10.0.0.53:53", "10.0.0.54:53", "[::ffff:10.0.0.53]:5353"]`, leaf,
			"dns.agency.example.", []string{"ddr: listen address 10.0.0.54 is not in the certificate (tls.cert)"}},
		{"no host", `listen: ["10.0.0.53:53"]`, &x509.Certificate{DNSNames: []string{"*.agency.example"}, IPAddresses: leaf.IPAddresses},
			"", []string{"the TLS certificate (tls.cert) names no host"}},
		{"ddr false", "listen: [\"10.0.0.54:53\"]\nddr: false", leaf, "", nil},
		{"no encrypted listener", `listen: ["10.0.0.54:53"]`, nil, "", nil},
		{"a wildcard address, a certificate without addresses", `listen: ["0.0.0.0:53", "[::]:5353"]`,
			&x509.Certificate{DNSNames: leaf.DNSNames}, "dns.agency.example.", []string{
				"ddr: listen address 0.0.0.0:53 serves every address of the host, and the certificate (tls.cert) carries none",
				"ddr: listen address [::]:5353 serves every address of the host, and the certificate (tls.cert) carries none"}},
		{"encrypted listeners on loopback only", "listen: [\"10.0.0.53:53\", \"127.0.0.1:53\"]\nlisten_quic: [\"127.0.0.1:853\"]\nlisten_https: [\"[::1]:443\", \"http://10.0.0.53:80\"]",
			leaf, "dns.agency.example.", []string{"ddr: every encrypted listener is on a loopback address, so devices asking at listen address 10.0.0.53:53 are designated none"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := c.yaml + "\nupstreams: [\"192.0.2.53:53\"]\n"
			if c.leaf != nil {
				text += "tls: {cert: c.pem, key: k.pem}\n"
				if !strings.Contains(c.yaml, "listen_quic") {
					text += "listen_tls: [\"10.0.0.53:853\"]\n"
				}
			}
			cfg, err := config.Parse("c.yaml", []byte(text), nil)
			require.NoError(t, err)
			target, ws := DesignationCheck(cfg, c.leaf)
			assert.Equal(t, c.target, target)
			require.Len(t, ws, len(c.warnings))
			for i, w := range ws {
				assert.Contains(t, w.String(), "c.yaml: "+c.warnings[i])
			}
		})
	}
}

// TestDDRLoopbackListeners: a listener bound to a loopback address is
// designated only to a device that asked on loopback (a sidecar's own
// dnsfence): any other device would be sent to its own loopback.
func TestDDRLoopbackListeners(t *testing.T) {
	leaf := &x509.Certificate{DNSNames: []string{"dns.agency.example"}}
	d := &designation{leaf: func() *x509.Certificate { return leaf }, endpoints: []listen.Endpoint{
		{Transport: listen.TLS, Addr: netip.MustParseAddrPort("127.0.0.1:853")},
		{Transport: listen.TLS, Addr: netip.MustParseAddrPort("[::1]:853")},
		{Transport: listen.TLS, Addr: netip.MustParseAddrPort("10.0.0.53:853")},
		{Transport: listen.TLS, Addr: netip.MustParseAddrPort("[::]:8853")},
	}}
	hints := func(local string) []string {
		var asked netip.Addr
		if local != "" {
			asked = netip.MustParseAddr(local)
		}
		answer, _ := d.records(dns.ClassINET, asked)
		var out []string
		for i, rr := range answer {
			svcb := rr.(*dns.SVCB)
			assert.Equal(t, uint16(i+1), svcb.Priority, "priorities in order, none skipped")
			s := fmt.Sprint(svcb.Value[1]) // the port
			if len(svcb.Value) > 2 {
				s = fmt.Sprint(svcb.Value[2]) + ":" + s
			}
			out = append(out, s)
		}
		return out
	}
	assert.Equal(t, []string{"127.0.0.1:853", "::1:853", "10.0.0.53:853", "127.0.0.2:8853"}, hints("127.0.0.2"))
	assert.Equal(t, []string{"10.0.0.53:853", "10.0.0.9:8853"}, hints("10.0.0.9"))
	assert.Equal(t, []string{"10.0.0.53:853", "8853"}, hints(""), "the address asked unknown: no loopback listener, no hint for the wildcard one")
}

// TestDDRBehindAProxy: a query a proxy relayed does not say which address
// the device asked, but for PROXY protocol v2's destination: a DoH request
// on the plain-HTTP listener (a TLS-terminating proxy's) or naming its
// client in X-Forwarded-For came to dnsfence's side of the proxy, here
// loopback, and the device is not sent to dnsfence's loopback listeners;
// one from the device itself is (it asked on loopback). On DoT, a trusted
// proxy's PROXY header names the address the device asked.
func TestDDRBehindAProxy(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, proxiedEncryptedConfig(p), up.addr)
	ddr := question(ddrName, dns.TypeSVCB, true)
	viaHTTP := func(url, from string, header ...string) *dns.Msg {
		t.Helper()
		r, status, err := askDoHForwarded(url, from, p.clientTLS(), ddr, header...)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		return r
	}
	plain := "http://" + e.addrs["http"] + listen.DoHPath
	tlsURL := "https://" + e.addrs[listen.HTTPS] + listen.DoHPath
	for _, c := range []struct {
		name string
		r    *dns.Msg
		want int // SVCB records
	}{
		{"udp from the device", ask(t, e.addr, "127.0.0.2", "udp", ddr), 3},
		{"https from the device", viaHTTP(tlsURL, "127.0.0.2"), 3},
		{"plain http from a trusted proxy naming the device", viaHTTP(plain, "127.0.0.9", "X-Forwarded-For", "127.0.0.2"), 0},
		{"plain http from a proxy naming no one", viaHTTP(plain, "127.0.0.9"), 0},
		{"plain http from an untrusted peer", viaHTTP(plain, "127.0.0.8", "X-Forwarded-For", "127.0.0.2"), 0},
		{"https from a trusted proxy naming the device", viaHTTP(tlsURL, "127.0.0.9", "X-Forwarded-For", "127.0.0.2"), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			readDesignation(t, c.r)
			assert.Len(t, c.r.Answer, c.want)
			if c.want == 0 {
				require.Len(t, c.r.Ns, 1, "NODATA: %v", c.r)
				assert.Equal(t, dns.TypeSOA, c.r.Ns[0].Header().Rrtype)
				for _, rr := range c.r.Extra {
					assert.Equal(t, dns.TypeOPT, rr.Header().Rrtype, "no address for the target: %v", c.r)
				}
			}
		})
	}

	// DoT from a trusted proxy with PROXY v2: the header's destination is
	// the address the device asked.
	dot := func(dst string) *dns.Msg {
		t.Helper()
		r, err := askDoTOverProxy(e.addrs[listen.TLS], "127.0.0.9", "127.0.0.2", &net.TCPAddr{IP: net.ParseIP(dst), Port: 853},
			p.clientTLS(listen.ALPNDoT), ddr)
		require.NoError(t, err)
		return r
	}
	assert.Len(t, dot("127.0.0.1").Answer, 3, "the device asked the proxy on loopback")
	assert.Empty(t, dot("192.0.2.53").Answer, "the device asked the proxy at 192.0.2.53")
	assert.Zero(t, up.count.Load(), "resolver.arpa is never forwarded")
}

// TestDDRCheckAgreesWithServe: what `check` says is designated
// (DesignationCheck) is what a device asking dnsfence gets: with a
// certificate but only an http:// DoH listener, whose TLS a proxy holds,
// nothing is designated, and check says nothing either.
func TestDDRCheckAgreesWithServe(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	for _, c := range []struct {
		name, https string
		target      string // "" for none designated
	}{
		{"https", `["127.0.0.1:0"]`, testServerName + "."},
		{"only plain http", `["http://127.0.0.1:0"]`, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := startEncryptedFence(t, p, strings.Replace(testConfig, `listen: ["127.0.0.1:0"]`, fmt.Sprintf(`listen: ["127.0.0.1:0"]
tls: {cert: %q, key: %q}
listen_https: %s`, p.certFile, p.keyFile, c.https), 1), up.addr)
			r := ask(t, e.addr, "127.0.0.2", "udp", question(ddrName, dns.TypeSVCB, true))
			require.Equal(t, dns.RcodeSuccess, r.Rcode)
			var served string
			if got := readDesignation(t, r); len(got) > 0 {
				served = got[0].target
			}
			assert.Equal(t, c.target, served, "served")

			cfg, err := config.Load(filepath.Join(e.dir, "dnsfence.yaml"))
			require.NoError(t, err)
			leaf, err := cfg.CheckCertificate()
			require.NoError(t, err)
			target, ws := DesignationCheck(cfg, leaf)
			assert.Equal(t, c.target, target, "check")
			assert.Empty(t, ws)
		})
	}
}

// TestDDRLinkLocalListeners: a listener bound to an IPv6 link-local
// address answers on its own link only, and an address hint carries no
// zone: it is designated only to a device that asked on a link-local
// address (of the listener's link, where the query says: a TCP
// connection's local address has the zone, a datagram's IPV6_PKTINFO
// address does not), never to one that asked at an IPv4 or loopback
// address, which would be sent where it cannot connect. It adds fe80::53
// to lo, so it runs in a network namespace of its own.
func TestDDRLinkLocalListeners(t *testing.T) {
	if !testnet.InNetns(t, "addr add fe80::53/64 dev lo") {
		return
	}
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	text := strings.Replace(testConfig, `listen: ["127.0.0.1:0"]`, fmt.Sprintf(`listen: ["[::]:0"]
tls: {cert: %q, key: %q}
listen_tls: ["[fe80::53%%lo]:0", "127.0.0.1:0"]`, p.certFile, p.keyFile), 1)
	text = strings.Replace(text, `allowed_clients: ["127.0.0.0/28", "::1/128"]`, `allowed_clients: ["127.0.0.0/28", "::1/128", "fe80::/10"]`, 1)
	e := startEncryptedFence(t, p, text, up.addr)
	_, port, err := net.SplitHostPort(e.addr)
	require.NoError(t, err)
	for _, c := range []struct {
		to   string
		want []string // the hints, one record each
	}{
		{"127.0.0.1", []string{"127.0.0.1"}},
		{"fe80::53%lo", []string{"fe80::53"}},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+" to "+c.to, func(t *testing.T) {
				r := ask(t, net.JoinHostPort(c.to, port), "", network, question(ddrName, dns.TypeSVCB, true))
				var hints []string
				for _, d := range readDesignation(t, r) {
					for _, h := range d.hints {
						hints = append(hints, h.String())
					}
				}
				assert.Equal(t, c.want, hints, "%v", r)
			})
		}
	}
}

// TestDDRReachable: which listeners a device that asked an address can
// be sent to: a loopback one from loopback only, a link-local one from a
// link-local address of its family only, and of its link where both
// zones are known.
func TestDDRReachable(t *testing.T) {
	for _, c := range []struct {
		bound, local string // local "" when unknown
		want         bool
	}{
		{"10.0.0.53", "", true},
		{"10.0.0.53", "192.0.2.7", true},
		{"127.0.0.1", "127.0.0.2", true},
		{"127.0.0.1", "::1", true},
		{"::ffff:127.0.0.1", "10.0.0.9", false},
		{"127.0.0.1", "", false},
		{"fe80::53%eth0", "fe80::1%eth0", true},
		{"fe80::53%eth0", "fe80::1", true}, // the zone of a datagram's destination is not read
		{"fe80::53", "fe80::1%eth0", true},
		{"fe80::53%eth0", "fe80::1%eth1", false},
		{"fe80::53%eth0", "2001:db8::53", false},
		{"fe80::53%eth0", "10.0.0.53", false},
		{"fe80::53%eth0", "169.254.0.9", false},
		{"fe80::53%eth0", "", false},
		{"169.254.0.53", "169.254.0.9", true},
		{"169.254.0.53", "10.0.0.53", false},
		{"::ffff:169.254.0.53", "169.254.0.9", true}, // IPv4 both, however written
		{"169.254.0.53", "::ffff:169.254.0.9", true},
		{"::", "10.0.0.53", true},
	} {
		var local netip.Addr
		if c.local != "" {
			local = netip.MustParseAddr(c.local)
		}
		assert.Equal(t, c.want, !unreachable(netip.MustParseAddr(c.bound), local), "%s asked at %q", c.bound, c.local)
	}
}

// TestDDRAdditionalAddress: the target's A or AAAA record goes in the
// additional section only when every record's hint is that one address: a
// device prefers the target's addresses to the hints (RFC 9460 §7.3), so
// listeners on different addresses, or one without a hint, are left to
// their hints.
func TestDDRAdditionalAddress(t *testing.T) {
	leaf := &x509.Certificate{DNSNames: []string{"dns.agency.example"}}
	extra := func(local string, endpoints ...string) []string {
		d := &designation{leaf: func() *x509.Certificate { return leaf }}
		for _, e := range endpoints {
			d.endpoints = append(d.endpoints, listen.Endpoint{Transport: listen.TLS, Addr: netip.MustParseAddrPort(e)})
		}
		var asked netip.Addr
		if local != "" {
			asked = netip.MustParseAddr(local)
		}
		answer, extra := d.records(dns.ClassINET, asked)
		require.Len(t, answer, len(endpoints))
		var out []string
		for _, rr := range extra {
			assert.Equal(t, "dns.agency.example.", rr.Header().Name)
			out = append(out, strings.Join(strings.Fields(rr.String())[3:], " "))
		}
		return out
	}
	assert.Equal(t, []string{"A 10.0.0.53"}, extra("10.0.0.9", "10.0.0.53:853", "10.0.0.53:8853"))
	assert.Equal(t, []string{"A 10.0.0.9"}, extra("10.0.0.9", "[::]:853", "10.0.0.9:8853"))
	assert.Equal(t, []string{"AAAA 2001:db8::53"}, extra("2001:db8::9", "[2001:db8::53]:853"))
	assert.Empty(t, extra("10.0.0.9", "10.0.0.53:853", "10.0.0.54:853"), "two addresses")
	assert.Empty(t, extra("", "10.0.0.53:853", "[::]:853"), "one listener without a hint")
}

// TestDDRReloads: ddr takes effect at a reload, both ways, without a
// restart: the listeners keep serving, and are designated again once ddr
// is true again.
func TestDDRReloads(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	designations := func() int {
		r := ask(t, e.addr, "127.0.0.2", "udp", question(ddrName, dns.TypeSVCB, true))
		require.Equal(t, dns.RcodeSuccess, r.Rcode)
		return len(r.Answer)
	}
	require.Equal(t, 3, designations())
	reconfigure(t, e.fence, "blocked_ttl: 60", "blocked_ttl: 60\nddr: false")
	assert.Zero(t, designations(), "ddr: false")
	r, err := e.dotAsk("127.0.0.2", question("www.tiktok.com.", dns.TypeA, true))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "the listeners serve on")
	reconfigure(t, e.fence, "ddr: false", "ddr: true")
	assert.Equal(t, 3, designations(), "ddr: true again")
}

// TestCertificateWithoutHostWarned: a certificate that names no host
// (only an IP address) is verified by no client that connects by name and
// designates nothing: serve warns when it loads one, at start and at a
// reload, and not for one that names a host.
func TestCertificateWithoutHostWarned(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSignedPair(t, dir, "served", nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	core, logs := observer.New(zapcore.InfoLevel)
	cfgDir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf("upstreams: [\"127.0.0.1:53\"]\ntls: {cert: %q, key: %q}\nlisten_tls: [\"127.0.0.1:0\"]\n", certFile, keyFile)})
	cfg, err := config.Load(filepath.Join(cfgDir, "dnsfence.yaml"))
	require.NoError(t, err)
	cert, err := OpenCertificate(zap.New(core), cfg, NewMetrics(prometheus.NewRegistry()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cert.Close() })
	warned := func() int { return logs.FilterMessage(noHostDesignated).Len() }
	assert.Equal(t, 1, warned(), "at start")

	// A pair that names a host: reloaded, no warning.
	named := newTestPKI(t)
	replacePair(t, named.certFile, named.keyFile, certFile, keyFile)
	cert.Reload()
	require.Equal(t, []string{testServerName}, cert.Store.Leaf().DNSNames)
	assert.Equal(t, 1, warned(), "no warning for a certificate that names a host")

	// Back to one that names none: warned again.
	other, otherKey := selfSignedPair(t, dir, "other", nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	replacePair(t, other, otherKey, certFile, keyFile)
	cert.Reload()
	require.Empty(t, cert.Store.Leaf().DNSNames)
	assert.Equal(t, 2, warned(), "at the reload")
}

// selfSignedPair writes a self-signed pair for dnsNames and ips to
// dir/name.crt and dir/name.key (the certificate store checks a pair and
// its dates, not its chain).
func selfSignedPair(t *testing.T, dir, name string, dnsNames []string, ips []net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
		DNSNames: dnsNames, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile
}

// replacePair copies the pair certFile, keyFile over the served pair
// servedCert, servedKey, key first.
func replacePair(t *testing.T, certFile, keyFile, servedCert, servedKey string) {
	t.Helper()
	for _, f := range [][2]string{{keyFile, servedKey}, {certFile, servedCert}} {
		b, err := os.ReadFile(f[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f[1], b, 0o600))
	}
}

// TestDesignationWarnedAtReload: what `check` warns about the designation
// (DesignationCheck) serve logs too, for the certificate served when the
// listeners start and for each one a reload serves: a renewed certificate
// that lost the addresses devices are given leaves them unable to verify
// the designation (RFC 9462 §4.2), which was otherwise unseen until the
// next `check`.
func TestDesignationWarnedAtReload(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	text := strings.Replace(encryptedConfig(p), `listen: ["127.0.0.1:0"]`, `listen: ["0.0.0.0:0"]`, 1)
	text = strings.Replace(text, `listen_tls: ["127.0.0.1:0"]`, `listen_tls: ["0.0.0.0:0"]`, 1)
	e := startEncryptedFence(t, p, text, up.addr)
	const noAddress = "serves every address of the host, and the certificate (tls.cert) carries none"
	warned := func() int { return e.logs.FilterMessageSnippet(noAddress).Len() }
	assert.Zero(t, warned(), "the test pair carries 127.0.0.1 and 127.0.0.2")
	assert.Zero(t, e.logs.FilterMessageSnippet("ddr:").Len(), "no warning at start")

	// Renewed with the host name and no address.
	original, err := os.ReadFile(p.certFile)
	require.NoError(t, err)
	originalKey, err := os.ReadFile(p.keyFile)
	require.NoError(t, err)
	renewedCert, renewedKey := selfSignedPair(t, t.TempDir(), "renewed", []string{testServerName}, nil)
	replacePair(t, renewedCert, renewedKey, p.certFile, p.keyFile)
	e.cert.Reload()
	require.Empty(t, e.cert.Store.Leaf().IPAddresses, "the renewed pair is served")
	assert.Equal(t, 1, warned(), "at the reload")
	_, ws := DesignationCheck(e.handler.Snapshot().Config, e.cert.Store.Leaf())
	require.Len(t, ws, 1)
	assert.Equal(t, 1, e.logs.FilterMessage(ws[0].Msg).Len(), "serve logs what check says")

	// Back to a pair with the addresses: nothing more.
	require.NoError(t, os.WriteFile(p.keyFile, originalKey, 0o600))
	require.NoError(t, os.WriteFile(p.certFile, original, 0o600))
	e.cert.Reload()
	require.NotEmpty(t, e.cert.Store.Leaf().IPAddresses)
	assert.Equal(t, 1, warned(), "no warning for a pair that carries addresses")
}

// TestDDRListenersUntilRestart: the listeners running are designated, not
// the keys a reload read: a reload that drops listen_tls, listen_https and
// listen_quic leaves those listeners serving until a restart (a restart
// warning says so), and they stay designated.
func TestDDRListenersUntilRestart(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	reconfigure(t, e.fence, `listen_tls: ["127.0.0.1:0"]
listen_https: ["127.0.0.1:0", "http://127.0.0.1:0"]
listen_quic: ["127.0.0.1:0"]`, "")
	r := ask(t, e.addr, "127.0.0.2", "udp", question(ddrName, dns.TypeSVCB, true))
	assert.Len(t, r.Answer, 3, "the listeners serve on, designated")
	r, err := e.dotAsk("127.0.0.2", question("www.tiktok.com.", dns.TypeA, true))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "the DoT listener serves on")
}

// TestDDRDesignationLogged: once the encrypted listeners start, dnsfence
// says that it designates them, naming the target, when ddr is on; with
// ddr: false (TestDDROff), or a certificate that names no host, it
// designates none and says nothing of designating; the certificate is
// warned about once, where it is loaded (warnDesignation leaves that
// warning out).
func TestDDRDesignationLogged(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	const designating = "designating the encrypted listeners to devices that ask _dns.resolver.arpa SVCB (RFC 9462)"
	on := startEncryptedFence(t, p, encryptedConfig(p), up.addr)
	lines := on.logs.FilterMessage(designating).All()
	require.Len(t, lines, 1)
	assert.Equal(t, dns.Fqdn(testServerName), lines[0].ContextMap()["target"])

	off := startEncryptedFence(t, p, strings.Replace(encryptedConfig(p), "blocked_ttl: 60", "blocked_ttl: 60\nddr: false", 1), up.addr)
	assert.Empty(t, off.logs.FilterMessage(designating).All())

	// A certificate that names no host designates nothing
	// (TestCertificateWithoutHostWarned warns of it).
	noHost := *p
	noHost.certFile, noHost.keyFile = selfSignedPair(t, t.TempDir(), "served", nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	none := startEncryptedFence(t, &noHost, encryptedConfig(&noHost), up.addr)
	assert.Empty(t, none.logs.FilterMessage(designating).All())
	assert.Equal(t, 1, none.logs.FilterMessage(noHostDesignated).Len(), "warned once, where the certificate is loaded")
}
