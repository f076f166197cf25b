package resolver

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/require"
)

// The transport differential: one corpus of awkward questions, asked of
// one dnsfence over every client transport (UDP, TCP, DoT, DoH by GET and
// POST over HTTP/2, HTTP/1.1 and h2c, DoQ) from one client, with the
// upstream reached over each upstream transport (UDP/TCP, tls://,
// https://, quic://). dnsfence promises the same answer on each: the test
// takes out only what a transport itself changes (each normalisation below
// says which RFC allows it) and reports every other difference.

// Client addresses: all in 127.0.75.0/24, a range of the test's own.
const (
	diffListen = "127.0.75.1"  // dnsfence's listeners
	diffUp     = "127.0.75.2"  // the crafted upstream, every transport
	diffGov    = "127.0.75.10" // a government device: its policy blocks
	diffExempt = "127.0.75.20" // an exemption: a narrower policy, no lists
	diffID     = 0x5a5a        // every query's ID but DoQ's (RFC 9250 §4.2.1: 0)
)

const transportDiffConfig = `listen: ["127.0.75.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
upstream_ca: %q
allowed_clients: ["127.0.75.0/24"]
blocked_ttl: 60
log: {queries: none}
tls: {cert: %q, key: %q}
listen_tls: ["127.0.75.1:0"]
listen_https: ["127.0.75.1:0", "http://127.0.75.1:0"]
listen_quic: ["127.0.75.1:0"]
policies:
  - name: government-devices
    clients: ["127.0.75.0/24"]
    block: ["tiktok.txt"]
  - name: exempt
    clients: ["127.0.75.20/32"]
`

// diffSOA is the crafted zone's SOA.
const diffSOA = "d.example. 300 IN SOA ns.d.example. host.d.example. 1 3600 600 86400 120"

// diffSeen is one query the crafted upstream received.
type diffSeen struct {
	q   *dns.Msg
	via string // udp, tcp, tls, https, quic
	tc  bool   // the answer was truncated (UDP): asked again over TCP
}

// diffUpstream is the crafted upstream: what it answers depends on the
// question name past its first label (the label the test varies per
// transport so that each transport's first query is a cache miss).
type diffUpstream struct {
	mu   sync.Mutex
	seen map[string][]diffSeen // by lower-case question name
	// addrs of each upstream transport, as an upstreams entry.
	addrs map[string]string
}

// craft answers q as the crafted zone says.
func (u *diffUpstream) craft(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	qq := q.Question[0]
	name := qq.Name
	base := strings.ToLower(name)
	if i := strings.IndexByte(base, '.'); i > 0 && i < len(base)-1 {
		base = base[i+1:]
	}
	opt := q.IsEdns0()
	do := opt != nil && opt.Do()
	rr := func(f string, a ...any) { m.Answer = append(m.Answer, mustRR(f, a...)) }
	soa := func() { m.Ns = append(m.Ns, mustRR("%s", diffSOA)) }
	var ede *dns.EDNS0_EDE
	switch base {
	case "nx.d.example.":
		m.Rcode = dns.RcodeNameError
		soa()
	case "nodata.d.example.":
		soa()
	case "chain.d.example.":
		rr("%s 300 IN CNAME c1.d.example.", name)
		rr("c1.d.example. 300 IN CNAME c2.d.example.")
		rr("c2.d.example. 300 IN A 192.0.2.7")
	case "cloak.d.example.":
		rr("%s 300 IN CNAME www.tiktok.com.", name)
		rr("www.tiktok.com. 300 IN A 192.0.2.66")
	case "big600.d.example.", "big1300.d.example.", "big5000.d.example.":
		var size int
		_, _ = fmt.Sscanf(base, "big%d.", &size)
		for i := range size/100 + 1 { // a count of the size, not of the name's length
			rr(`%s 300 IN TXT "%03d %s"`, name, i, strings.Repeat("t", 90))
		}
		m.Extra = append(m.Extra, mustRR("ns.d.example. 300 IN A 192.0.2.53"))
	case "ede.d.example.":
		rr("%s 300 IN A 192.0.2.3", name)
		ede = &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer, ExtraText: "crafted"}
	case "edefail.d.example.":
		m.Rcode = dns.RcodeServerFailure
		ede = &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeDNSBogus, ExtraText: "crafted bogus"}
	case "signed.d.example.":
		rr("%s 300 IN A 192.0.2.4", name)
		rr("%s 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 12345 d.example. dGVzdHNpZ25hdHVyZQ==", name)
		m.AuthenticatedData = do || q.AuthenticatedData
	case "signednx.d.example.":
		m.Rcode = dns.RcodeNameError
		soa()
		m.Ns = append(m.Ns,
			mustRR("d.example. 300 IN RRSIG SOA 13 2 300 20300101000000 20200101000000 12345 d.example. dGVzdHNpZ25hdHVyZQ=="),
			mustRR("c.d.example. 300 IN NSEC e.d.example. A RRSIG NSEC"),
			mustRR("c.d.example. 300 IN RRSIG NSEC 13 3 300 20300101000000 20200101000000 12345 d.example. dGVzdHNpZ25hdHVyZQ=="))
		m.AuthenticatedData = do || q.AuthenticatedData
	case "any.d.example.":
		rr("%s 300 IN A 192.0.2.5", name)
		rr("%s 300 IN AAAA 2001:db8::5", name)
		rr("%s 300 IN MX 10 mx.d.example.", name)
		rr(`%s 300 IN TXT "any"`, name)
	case "svc.d.example.":
		switch qq.Qtype {
		case dns.TypeHTTPS:
			rr(`%s 300 IN HTTPS 1 . alpn="h3,h2" ipv4hint=192.0.2.8 ipv6hint=2001:db8::8`, name)
		case dns.TypeSVCB:
			rr(`%s 300 IN SVCB 1 svc-target.d.example. port=8443 alpn=dot`, name)
			m.Extra = append(m.Extra, mustRR("svc-target.d.example. 300 IN A 192.0.2.9"))
		}
	case "txtmany.d.example.":
		s := make([]string, 60)
		for i := range s {
			s[i] = fmt.Sprintf(`"s%02d \"quoted\" \\ %s"`, i, strings.Repeat("m", 12))
		}
		rr(`%s 300 IN TXT %s`, name, strings.Join(s, " "))
	case "aa.d.example.":
		rr("%s 300 IN A 192.0.2.10", name)
		m.Authoritative = true
	case "svccloak.d.example.":
		rr(`%s 300 IN HTTPS 1 www.tiktok.com. alpn=h2`, name)
	case "tcalways.d.example.":
		rr("%s 300 IN A 192.0.2.11", name)
		m.Truncated = true
	case "shortttl.d.example.":
		rr("%s 7 IN CNAME c3.d.example.", name)
		rr("c3.d.example. 300 IN A 192.0.2.12")
	case "nxttl.d.example.":
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, mustRR("d.example. 900 IN SOA ns.d.example. host.d.example. 1 3600 600 86400 30"))
	case "cloakcase.d.example.":
		rr("%s 300 IN CNAME WWW.TikTok.COM.", name)
		rr("WWW.TikTok.COM. 300 IN A 192.0.2.67")
	case "mappedhint.d.example.":
		m.Answer = append(m.Answer, mappedHintHTTPS(name, 300))
	case "unknown.d.example.":
		rr(`%s 300 IN TYPE65280 \# 4 deadbeef`, name)
	default:
		switch qq.Qtype {
		case dns.TypeA:
			rr("%s 300 IN A 192.0.2.1", name)
		case dns.TypeAAAA:
			rr("%s 300 IN AAAA 2001:db8::1", name)
		case dns.TypeTXT:
			rr(`%s 300 IN TXT "upstream"`, name)
		default:
			soa()
		}
	}
	if opt != nil {
		m.SetEdns0(4096, do)
		if ede != nil {
			m.IsEdns0().Option = append(m.IsEdns0().Option, ede)
		}
	}
	return m
}

// serve records q, arriving over via, and returns the crafted answer, fitted
// to the query's size over UDP and padded over an encrypted transport when
// the query was (RFC 8467 §4.1).
func (u *diffUpstream) serve(q *dns.Msg, via string) *dns.Msg {
	m := u.craft(q)
	// Compressed, as servers answer; but not an answer dnsfence cannot
	// read, which it passes on in wire form with the upstream's own
	// compression (README, step 9): so that its octets are the same over
	// every upstream transport (miekg/dns compresses a truncated UDP answer
	// otherwise than a TCP one).
	m.Compress = !slices.ContainsFunc(m.Answer, func(rr dns.RR) bool { _, ok := rr.(*dns.RFC3597); return ok })
	if via == "udp" {
		size := dns.MinMsgSize
		if opt := q.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	if via != "udp" && via != "tcp" {
		if qo := q.IsEdns0(); qo != nil && slices.ContainsFunc(qo.Option, func(o dns.EDNS0) bool { return o.Option() == dns.EDNS0PADDING }) {
			if mo := m.IsEdns0(); mo != nil {
				n := m.Len() + 4
				mo.Option = append(mo.Option, &dns.EDNS0_PADDING{Padding: make([]byte, (468-n%468)%468)})
			}
		}
	}
	if len(q.Question) == 1 && q.Question[0].Name != "." {
		u.mu.Lock()
		k := diffNameKey(q.Question[0].Name)
		// A UDP query sent again unanswered (the same ID, on a machine
		// slow enough to pass the resend delay: resendPolicy) is one
		// query, as testUpstream.distinct counts it.
		resend := via == "udp" && slices.ContainsFunc(u.seen[k], func(s diffSeen) bool { return s.via == via && s.q.Id == q.Id })
		if !resend {
			u.seen[k] = append(u.seen[k], diffSeen{q: q.Copy(), via: via, tc: m.Truncated})
		}
		u.mu.Unlock()
	}
	return m
}

// asked returns what the upstream received for name.
func (u *diffUpstream) asked(name string) []diffSeen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen[diffNameKey(name)])
}

// diffNameKey is name as the upstream reads it off the wire, lower-case:
// one presentation of the octets however the test spelled them.
func diffNameKey(name string) string {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	b, err := m.Pack()
	if err == nil && m.Unpack(b) == nil {
		name = m.Question[0].Name
	}
	return strings.ToLower(name)
}

// startDiffUpstream serves the crafted zone on diffUp over UDP and TCP (one
// port), DoT, DoH (HTTP/2, GET and POST) and DoQ, with p's certificate.
func startDiffUpstream(t *testing.T, p *testPKI) *diffUpstream {
	t.Helper()
	u := &diffUpstream{seen: map[string][]diffSeen{}, addrs: map[string]string{}}
	plain := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		via := "udp"
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			via = "tcp"
		}
		_ = w.WriteMsg(u.serve(r, via))
	})
	dot := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { _ = w.WriteMsg(u.serve(r, "tls")) })
	var pc net.PacketConn
	var ln net.Listener
	for range 10 {
		l, err := net.Listen("tcp", diffUp+":0")
		require.NoError(t, err)
		if pc, err = net.ListenPacket("udp", l.Addr().String()); err == nil {
			ln = l
			break
		}
		l.Close()
	}
	require.NotNil(t, ln, "a port of %s free for UDP and TCP", diffUp)
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: plain}, &dns.Server{Listener: ln, Handler: plain})
	u.addrs["udp"] = ln.Addr().String()

	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	require.NoError(t, err)
	tln, err := net.Listen("tcp", diffUp+":0")
	require.NoError(t, err)
	testnet.Serve(t, &dns.Server{Listener: tls.NewListener(tln, &tls.Config{Certificates: []tls.Certificate{cert},
		NextProtos: []string{"dot"}, MinVersion: tls.VersionTLS12}), Net: "tcp-tls", Handler: dot})
	u.addrs["tls"] = "tls://" + tln.Addr().String() + "#" + testServerName

	hln, err := net.Listen("tcp", diffUp+":0")
	require.NoError(t, err)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b []byte
		var err error
		if r.Method == http.MethodGet {
			b, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
		} else {
			b, err = io.ReadAll(io.LimitReader(r.Body, 65536))
		}
		q := new(dns.Msg)
		if err != nil || q.Unpack(b) != nil {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		out, err := u.serve(q, "https").Pack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", listen.DoHContentType)
		_, _ = w.Write(out)
	}))
	hs.Listener.Close()
	hs.Listener = hln
	hs.EnableHTTP2 = true
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	u.addrs["https"] = "https://" + hln.Addr().String() + listen.DoHPath + "#" + testServerName

	qln, err := quic.ListenAddr(diffUp+":0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"doq"},
		MinVersion: tls.VersionTLS13}, &quic.Config{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = qln.Close() })
	go func() {
		for {
			conn, err := qln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					st, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					go func() {
						b, err := io.ReadAll(io.LimitReader(st, 65538))
						q := new(dns.Msg)
						if err != nil || len(b) < 2 || q.Unpack(b[2:]) != nil {
							st.CancelWrite(0)
							return
						}
						out, err := u.serve(q, "quic").Pack()
						if err != nil {
							st.CancelWrite(0)
							return
						}
						_, _ = st.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
						_ = st.Close()
					}()
				}
			}()
		}
	}()
	u.addrs["quic"] = "quic://" + qln.Addr().String() + "#" + testServerName
	return u
}

// diffAsker asks over one client transport, keeping its connection. It
// takes and gives octets: a query is sent as packed (a TSIG record as it
// is, unsigned), and an answer's length is its length on the wire.
type diffAsker struct {
	name    string
	stream  bool // not UDP: no size limit
	secure  bool // the device's hop is encrypted: padded answers (RFC 8467)
	proxied bool // on the http:// listener, behind a TLS-terminating proxy
	doq     bool
	ask     func(b []byte) ([]byte, error)
	close   func()
	// maxAge is the last DoH answer's Cache-Control max-age.
	maxAge *int
}

// diffAskers are the client transports of e, for a client at from.
func diffAskers(t *testing.T, e *encryptedFence, from string) []diffAsker {
	t.Helper()
	var out []diffAsker
	udp := func(b []byte) ([]byte, error) {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(e.addr)))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		return buf[:n], err
	}
	tcp := func(b []byte) ([]byte, error) {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", e.addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return diffFramed(c, b)
	}
	out = append(out, diffAsker{name: "udp", ask: udp}, diffAsker{name: "tcp", stream: true, ask: tcp})
	// DoT on one kept connection, redialled when dnsfence closed it.
	var dot net.Conn
	dotAsk := func(b []byte) ([]byte, error) {
		for try := 0; ; try++ {
			if dot == nil {
				d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
				c, err := tls.DialWithDialer(d, "tcp", e.addrs[listen.TLS], e.pki.clientTLS(listen.ALPNDoT))
				if err != nil {
					return nil, err
				}
				dot = c
			}
			_ = dot.SetDeadline(time.Now().Add(5 * time.Second))
			r, err := diffFramed(dot, b)
			if err == nil || try > 0 {
				return r, err
			}
			dot.Close()
			dot = nil
		}
	}
	out = append(out, diffAsker{name: "dot", stream: true, secure: true, ask: dotAsk, close: func() {
		if dot != nil {
			dot.Close()
		}
	}})
	// DoH: HTTP/2 and HTTP/1.1 over TLS, h2c and HTTP/1.1 in the clear.
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	h2 := &http.Transport{DialContext: d.DialContext, TLSClientConfig: e.pki.clientTLS(), ForceAttemptHTTP2: true}
	h1 := &http.Transport{DialContext: d.DialContext, TLSClientConfig: e.pki.clientTLS(), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	h2c := &http.Transport{DialContext: d.DialContext, Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	plain := &http.Transport{DialContext: d.DialContext}
	secureURL := "https://" + e.addrs[listen.HTTPS] + listen.DoHPath
	plainURL := "http://" + e.addrs["http"] + listen.DoHPath
	for _, v := range []struct {
		name   string
		tr     *http.Transport
		url    string
		major  int
		get    bool
		secure bool
	}{ // secure: https://; the others are the proxied http:// listener's
		{"doh-h2-get", h2, secureURL, 2, true, true},
		{"doh-h2-post", h2, secureURL, 2, false, true},
		{"doh-h1-get", h1, secureURL, 1, true, true},
		{"doh-h1-post", h1, secureURL, 1, false, true},
		// The http:// listener serves a TLS-terminating proxy (README,
		// Encrypted DNS): the device's own hop is encrypted, so its answers
		// are padded as on https:// (RFC 8467 §4.1).
		{"h2c-get", h2c, plainURL, 2, true, false},
		{"h2c-post", h2c, plainURL, 2, false, false},
		{"http1-post", plain, plainURL, 1, false, false},
	} {
		c := &http.Client{Transport: v.tr, Timeout: 5 * time.Second}
		maxAge := new(int)
		out = append(out, diffAsker{name: v.name, stream: true, secure: true, proxied: !v.secure, close: v.tr.CloseIdleConnections, maxAge: maxAge,
			ask: func(b []byte) ([]byte, error) { return diffDoH(c, v.url, v.major, v.get, b, maxAge) }})
	}
	// DoQ on one kept connection, a stream a query.
	var qc *quic.Conn
	var qt *quic.Transport
	doqAsk := func(b []byte) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if qc == nil || qc.Context().Err() != nil {
			if qt == nil {
				pc, err := net.ListenPacket("udp", net.JoinHostPort(from, "0"))
				if err != nil {
					return nil, err
				}
				qt = &quic.Transport{Conn: pc}
			}
			raddr, err := net.ResolveUDPAddr("udp", e.addrs[listen.QUIC])
			if err != nil {
				return nil, err
			}
			if qc, err = qt.Dial(ctx, raddr, e.pki.clientTLS(listen.ALPNDoQ), &quic.Config{}); err != nil {
				return nil, err
			}
		}
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			return nil, err
		}
		q := slices.Clone(b)
		q[0], q[1] = 0, 0 // RFC 9250 §4.2.1
		_ = st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return nil, err
		}
		_ = st.Close()
		got, err := io.ReadAll(st)
		if err != nil {
			return nil, err
		}
		if len(got) < 2 || int(binary.BigEndian.Uint16(got)) != len(got)-2 {
			return nil, fmt.Errorf("not one framed answer: %d octets", len(got))
		}
		return got[2:], nil
	}
	out = append(out, diffAsker{name: "doq", stream: true, secure: true, doq: true, ask: doqAsk, close: func() {
		if qc != nil {
			_ = qc.CloseWithError(0, "")
		}
		if qt != nil {
			_ = qt.Close()
			_ = qt.Conn.Close()
		}
	}})
	t.Cleanup(func() {
		for _, a := range out {
			if a.close != nil {
				a.close()
			}
		}
	})
	return out
}

// diffFramed writes b on c with its two-octet length (RFC 1035 §4.2.2,
// RFC 7858 §3.3) and reads one answer so framed.
func diffFramed(c net.Conn, b []byte) ([]byte, error) {
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
		return nil, err
	}
	var n [2]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return nil, err
	}
	r := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err := io.ReadFull(c, r)
	return r, err
}

// diffDoH asks b at url by GET or POST, and checks the HTTP version.
func diffDoH(c *http.Client, url string, major int, get bool, b []byte, maxAge *int) ([]byte, error) {
	resp, body, err := dohRoundTrip(c, url, get, b)
	if err != nil {
		return nil, err
	}
	if resp.ProtoMajor != major {
		return nil, fmt.Errorf("over %s, not HTTP/%d", resp.Proto, major)
	}
	*maxAge = -1
	_, _ = fmt.Sscanf(resp.Header.Get("Cache-Control"), "private, max-age=%d", maxAge)
	return body, nil
}

// diffAsk asks m over a and returns the answer's view.
func diffAsk(a diffAsker, m *dns.Msg) (diffView, error) {
	b, err := m.Pack()
	if err != nil {
		return diffView{}, err
	}
	out, err := a.ask(b)
	if err != nil {
		return diffView{}, err
	}
	r := new(dns.Msg)
	if err := r.Unpack(out); err != nil {
		// An answer miekg/dns does not read (an exempt client gets the
		// upstream's as it is): compared by its octets, the ID and the
		// varied label aside.
		if len(out) < 12 {
			return diffView{}, err
		}
		// Its padding (DoQ pads every answer in its octets, RFC 9250
		// §5.4) noted apart, as viewOf notes it.
		wire, padded := len(out), dnswire.HasOption(out, dns.EDNS0PADDING)
		if padded {
			rest, ok := dnswire.WithoutOptions(out, func(code uint16, _ []byte) bool { return code != dns.EDNS0PADDING })
			if !ok {
				return diffView{}, err
			}
			out = rest
		}
		_, opt := dnswire.FindOPT(out)
		v := diffView{id: binary.BigEndian.Uint16(out), tc: out[2]&2 != 0, size: len(out), wire: wire, padded: padded, opt: opt, maxAge: -1}
		v.text = fmt.Sprintf("unread (%v):\n%x\n", err, diffWireLabel.ReplaceAll(out[2:], []byte("q$1-X")))
		if a.maxAge != nil {
			v.maxAge = *a.maxAge
		}
		return v, nil
	}
	v := viewOf(r)
	v.wire = len(out)
	v.maxAge = -1
	if a.maxAge != nil {
		v.maxAge = *a.maxAge
	}
	return v, nil
}

// diffQuestion is one question of the corpus. name is under the label the
// test varies ("q7-dot." + name).
type diffQuestion struct {
	name   string
	qtype  uint16
	client string           // diffGov or diffExempt
	edns   int              // EDNS buffer size; 0 for no EDNS
	mod    func(m *dns.Msg) // anything else about the query
	cached bool             // a second ask is a cache hit: nothing upstream
	// doqClosed: DoQ answers none, it closes the connection with
	// DOQ_PROTOCOL_ERROR (RFC 9250 §5.5.2: edns-tcp-keepalive is not for
	// DoQ), where every other transport answers.
	doqClosed bool
	// ddr: Discovery of Designated Resolvers (RFC 9462), whose answer
	// depends on where the device asked (see diffOne).
	ddr bool
	// exact: asked as named, without the varied label (a name of
	// dnsfence's own that a label would change).
	exact bool
}

func transportCorpus() []diffQuestion {
	opt := func(o dns.EDNS0) func(*dns.Msg) {
		return func(m *dns.Msg) { m.IsEdns0().Option = append(m.IsEdns0().Option, o) }
	}
	do := func(m *dns.Msg) { m.IsEdns0().SetDo() }
	g, x := diffGov, diffExempt
	return []diffQuestion{
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, cached: true},
		{name: "plain.d.example.", qtype: dns.TypeA, client: x, edns: 1232, cached: true},
		{name: "nx.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "nx.d.example.", qtype: dns.TypeA, client: g, cached: true},
		{name: "nodata.d.example.", qtype: dns.TypeAAAA, client: g, edns: 1232, cached: true},
		{name: "chain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "cloak.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "cloak.d.example.", qtype: dns.TypeA, client: g, cached: true},
		{name: "cloak.d.example.", qtype: dns.TypeA, client: x, edns: 1232, cached: true},
		{name: "big600.d.example.", qtype: dns.TypeTXT, client: g, edns: 1232, cached: true},
		{name: "big600.d.example.", qtype: dns.TypeTXT, client: g, cached: true},
		{name: "big1300.d.example.", qtype: dns.TypeTXT, client: g, edns: 4096, cached: true},
		{name: "big1300.d.example.", qtype: dns.TypeTXT, client: g, edns: 1232, cached: true},
		// Over 4,096 octets: never cached (README, cache), whatever the
		// transport.
		{name: "big5000.d.example.", qtype: dns.TypeTXT, client: g, edns: 65535},
		{name: "big5000.d.example.", qtype: dns.TypeTXT, client: g, edns: 512},
		{name: "big5000.d.example.", qtype: dns.TypeTXT, client: x, edns: 4096},
		{name: "ede.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "ede.d.example.", qtype: dns.TypeA, client: g, cached: true},
		{name: "edefail.d.example.", qtype: dns.TypeA, client: g, edns: 1232},
		{name: "signed.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: do, cached: true},
		{name: "signed.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "signed.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.AuthenticatedData = true }, cached: true},
		{name: "signed.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { do(m); m.CheckingDisabled = true }, cached: true},
		{name: "signednx.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: do, cached: true},
		{name: "signednx.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "any.d.example.", qtype: dns.TypeANY, client: g, edns: 1232, cached: true},
		{name: "svc.d.example.", qtype: dns.TypeHTTPS, client: g, edns: 1232, cached: true},
		{name: "svc.d.example.", qtype: dns.TypeSVCB, client: g, edns: 1232, cached: true},
		{name: "txtmany.d.example.", qtype: dns.TypeTXT, client: g, edns: 1232, cached: true},
		{name: "unknown.d.example.", qtype: 65280, client: g, edns: 1232, cached: true},
		{name: `w\.e\032i\(rd\255.d.example.`, qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "MiXeD.D.Example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true,
			mod: opt(&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(198, 51, 100, 0).To4()})},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true,
			mod: opt(&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true,
			mod: func(m *dns.Msg) {
				m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 128-(m.Len()+4)%128)})
			}},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true,
			mod: opt(&dns.EDNS0_LOCAL{Code: 65001, Data: []byte("unknown")})},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.IsEdns0().SetVersion(1) }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true, mod: func(m *dns.Msg) { m.RecursionDesired = false }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, cached: true, mod: func(m *dns.Msg) { m.CheckingDisabled = true }},
		{name: "plain.d.example.", qtype: dns.TypeSOA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeStatus }},
		{name: "plain.d.example.", qtype: dns.TypeSOA, client: g, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }},
		{name: "plain.d.example.", qtype: dns.TypeSOA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify; m.IsEdns0().SetVersion(1) }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "two.d.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}},
		{name: "plain.d.example.", qtype: dns.TypeAXFR, client: g, edns: 1232},
		{name: "plain.d.example.", qtype: dns.TypeOPT, client: g, edns: 1232},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232,
			mod: opt(&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 8, Address: net.IPv4(198, 51, 100, 0).To4()})},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: opt(&dns.EDNS0_LOCAL{Code: dns.EDNS0COOKIE, Data: []byte{1, 2, 3}})},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true, mod: opt(&dns.EDNS0_LOCAL{Code: dns.EDNS0EDE, Data: []byte{0}})},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }},
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true, mod: func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassANY }},
		// Without a TIMEOUT: ignored over UDP, taken over TCP and TLS (RFC
		// 7828 §3.2.1), a protocol error over QUIC.
		{name: "plain.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true, doqClosed: true,
			mod: opt(&dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})},
		{name: "cloakcase.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "mappedhint.d.example.", qtype: dns.TypeHTTPS, client: g, edns: 1232, cached: true},
		{name: "mappedhint.d.example.", qtype: dns.TypeHTTPS, client: x, edns: 1232, cached: true},
		{name: "aa.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "svccloak.d.example.", qtype: dns.TypeHTTPS, client: g, edns: 1232, cached: true},
		{name: "svccloak.d.example.", qtype: dns.TypeHTTPS, client: x, edns: 1232, cached: true},
		{name: "tcalways.d.example.", qtype: dns.TypeA, client: g, edns: 1232},
		{name: "shortttl.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "nxttl.d.example.", qtype: dns.TypeA, client: g, edns: 1232, cached: true},
		{name: "_dns.resolver.arpa.", qtype: dns.TypeSVCB, client: g, edns: 1232, exact: true, ddr: true},
		{name: "localhost.", qtype: dns.TypeA, client: g, edns: 1232},
		{name: "onion.", qtype: dns.TypeA, client: g, edns: 1232},
		{name: "d.example.", qtype: dns.TypeA, client: g, edns: 1232, mod: func(m *dns.Msg) { m.SetTsig("key.", dns.HmacSHA256, 300, 1764800000) }},
		{name: "signed.d.example.", qtype: dns.TypeA, client: g, edns: 512, mod: do, cached: true},
		{name: "big1300.d.example.", qtype: dns.TypeTXT, client: g, edns: 1232, mod: do, cached: true},
		{name: "www.tiktok.com.", qtype: dns.TypeA, client: g, edns: 1232},
		{name: "www.tiktok.com.", qtype: dns.TypeA, client: g},
		{name: "www.tiktok.com.", qtype: dns.TypeTXT, client: g, edns: 1232, mod: do},
		{name: "www.TikTok.com.", qtype: dns.TypeHTTPS, client: g, edns: 1232},
		{name: "www.tiktok.com.", qtype: dns.TypeA, client: x, edns: 1232, cached: true},
		{name: "www.tiktok.com.", qtype: dns.TypeA, client: x, cached: true},
	}
}

// diffMsg builds q's query under label.
func diffMsg(q diffQuestion, label string) *dns.Msg {
	m := new(dns.Msg)
	name := label + "." + q.name
	if q.exact {
		name = q.name
	}
	m.SetQuestion(name, q.qtype)
	m.Id = diffID
	if q.edns > 0 {
		m.SetEdns0(uint16(q.edns), false)
	}
	if q.mod != nil {
		q.mod(m)
	}
	return m
}

// diffLabel matches the label the test varies; diffWireLabel matches it
// on the wire, with its length octet.
var (
	diffLabel     = regexp.MustCompile(`(?i)\bq(\d+)-[a-z0-9-]+\.`)
	diffWireLabel = regexp.MustCompile(`[\x01-\x3f]q(\d+)-[a-z0-9-]+`)
)

// diffView is an answer as compared: its text with the varied label made
// one, TTLs apart, and what the transport may change noted apart.
type diffView struct {
	text    string   // header, question, sections, OPT without padding
	ttls    []uint32 // each record's, in order
	records []string // each record's text, TTL 0, for subsets
	size    int      // octets packed, padding left out
	id      uint16
	tc      bool
	padded  bool
	opt     bool // it has an OPT record
	wire    int  // octets as received (diffAsk)
	maxAge  int  // DoH's Cache-Control max-age; -1 for other transports
}

func viewOf(r *dns.Msg) diffView {
	v := diffView{id: r.Id, tc: r.Truncated, opt: r.IsEdns0() != nil}
	var b strings.Builder
	h := r.MsgHdr
	fmt.Fprintf(&b, "opcode %s rcode %s qr %t aa %t rd %t ra %t z %t ad %t cd %t\n", dns.OpcodeToString[h.Opcode],
		dns.RcodeToString[h.Rcode], h.Response, h.Authoritative, h.RecursionDesired, h.RecursionAvailable, h.Zero,
		h.AuthenticatedData, h.CheckingDisabled)
	for _, q := range r.Question {
		fmt.Fprintf(&b, "question %s\n", diffLabel.ReplaceAllString(q.String(), "q$1-X."))
	}
	c := r.Copy()
	for si, sec := range [][]dns.RR{c.Answer, c.Ns, c.Extra} {
		for _, rr := range sec {
			if o, ok := rr.(*dns.OPT); ok {
				var opts []string
				for _, e := range o.Option {
					if e.Option() == dns.EDNS0PADDING {
						v.padded = true
						continue
					}
					opts = append(opts, fmt.Sprintf("%d=%s", e.Option(), e.String()))
				}
				sort.Strings(opts)
				fmt.Fprintf(&b, "opt version %d do %t size %d z %#x options %v\n", o.Version(), o.Do(), o.UDPSize(), o.Z(), opts)
				continue
			}
			v.ttls = append(v.ttls, rr.Header().Ttl)
			rr.Header().Ttl = 0
			s := fmt.Sprintf("%d %s", si, diffLabel.ReplaceAllString(rr.String(), "q$1-X."))
			v.records = append(v.records, s)
			fmt.Fprintln(&b, s)
		}
	}
	v.text = b.String()
	if o := c.IsEdns0(); o != nil {
		o.Option = slices.DeleteFunc(o.Option, func(e dns.EDNS0) bool { return e.Option() == dns.EDNS0PADDING })
	}
	c.Compress = true
	v.size = c.Len()
	return v
}

// diffReport collects divergences, each once.
type diffReport struct {
	mu    sync.Mutex
	seen  map[string]bool
	lines []string
}

func (d *diffReport) add(format string, a ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := fmt.Sprintf(format, a...)
	if !d.seen[s] {
		d.seen[s] = true
		d.lines = append(d.lines, s)
	}
}

// diffResult is one question's answer over one transport in one phase.
type diffResult struct {
	view     diffView
	upstream string // what went upstream for it
	err      error
}

// upstreamView is what went upstream for name: each query's flags and EDNS
// but its padding, ID and transport (RFC 8467 pads only the encrypted
// hops; RFC 9250 §4.2.1 zeroes DoQ's ID), and the number of queries that
// got a whole answer (a truncated UDP answer is asked again over TCP).
func upstreamView(u *diffUpstream, name string) string {
	var whole int
	var flags []string
	for _, s := range u.asked(name) {
		if !s.tc {
			whole++
		}
		q := s.q
		f := fmt.Sprintf("opcode %d rd %t cd %t ad %t", q.Opcode, q.RecursionDesired, q.CheckingDisabled, q.AuthenticatedData)
		if o := q.IsEdns0(); o != nil {
			var opts []uint16
			for _, e := range o.Option {
				if e.Option() != dns.EDNS0PADDING {
					opts = append(opts, e.Option())
				}
			}
			f += fmt.Sprintf(" edns v%d do %t options %v", o.Version(), o.Do(), opts)
		}
		if !slices.Contains(flags, f) {
			flags = append(flags, f)
		}
	}
	return fmt.Sprintf("%d whole answers; %s", whole, strings.Join(flags, " | "))
}

// runDiff asks the corpus of one fence over every client transport and
// returns the results by question, phase ("miss", "hit", and with shared
// "shared") and transport.
func runDiff(t *testing.T, e *encryptedFence, u *diffUpstream, corpus []diffQuestion, shared bool) map[string]diffResult {
	askers := map[string][]diffAsker{diffGov: diffAskers(t, e, diffGov), diffExempt: diffAskers(t, e, diffExempt)}
	out := map[string]diffResult{}
	for i, q := range corpus {
		for _, a := range askers[q.client] {
			label := fmt.Sprintf("q%d-%s", i, a.name)
			for _, phase := range []string{"miss", "hit"} {
				m := diffMsg(q, label)
				v, err := diffAsk(a, m)
				res := diffResult{view: v, err: err}
				if phase == "hit" {
					res.upstream = upstreamView(u, m.Question[0].Name)
				}
				out[fmt.Sprintf("%d/%s/%s", i, phase, a.name)] = res
			}
		}
		if !shared {
			continue
		}
		// The one name over every transport: the first fills the cache,
		// the others are served from it.
		label := fmt.Sprintf("q%d-shared", i)
		for _, a := range askers[q.client] {
			v, err := diffAsk(a, diffMsg(q, label))
			res := diffResult{view: v, err: err}
			out[fmt.Sprintf("%d/shared/%s", i, a.name)] = res
		}
		out[fmt.Sprintf("%d/shared-upstream", i)] = diffResult{upstream: upstreamView(u, label+"."+q.name)}
	}
	return out
}

// compareTransports reports where a client transport's answer differs from
// TCP's (the transport that changes nothing: no size limit, no padding, the
// ID echoed).
func compareTransports(rep *diffReport, up string, corpus []diffQuestion, askers []diffAsker, res map[string]diffResult, phases []string) {
	for i, q := range corpus {
		qd := fmt.Sprintf("q%d %s %s edns=%d from %s", i, q.name, dns.TypeToString[q.qtype], q.edns, q.client)
		for _, phase := range phases {
			ref := res[fmt.Sprintf("%d/%s/tcp", i, phase)]
			if ref.err != nil {
				rep.add("[up %s] %s %s: tcp: %v", up, qd, phase, ref.err)
				continue
			}
			for _, a := range askers {
				got := res[fmt.Sprintf("%d/%s/%s", i, phase, a.name)]
				if a.doq && q.doqClosed {
					if got.err == nil || !strings.Contains(got.err.Error(), "Application error 0x2 (remote)") {
						rep.add("[up %s] %s %s: %s: %v, want the connection closed with DOQ_PROTOCOL_ERROR", up, qd, phase, a.name, got.err)
					}
					continue
				}
				if got.err != nil {
					rep.add("[up %s] %s %s: %s: %v", up, qd, phase, a.name, got.err)
					continue
				}
				diffOne(rep, fmt.Sprintf("[up %s] %s %s: %s", up, qd, phase, a.name), q, a, ref.view, got.view)
			}
		}
		// DoH's Cache-Control: the same max-age (RFC 8484 §5.1: the
		// answer's smallest TTL) whatever the method and HTTP version, but
		// for the seconds between two asks.
		for _, phase := range phases {
			ref := res[fmt.Sprintf("%d/%s/doh-h2-post", i, phase)]
			for _, a := range askers {
				got := res[fmt.Sprintf("%d/%s/%s", i, phase, a.name)]
				if a.maxAge == nil || got.err != nil || ref.err != nil {
					continue
				}
				if d := got.view.maxAge - ref.view.maxAge; d > 2 || d < -2 || got.view.maxAge < 0 {
					rep.add("[up %s] %s %s: %s: max-age %d, doh-h2-post's %d", up, qd, phase, a.name, got.view.maxAge, ref.view.maxAge)
				}
			}
		}
		// Cache behaviour: the second ask of each transport's name went
		// nowhere, and each miss sent upstream what TCP's did.
		refUp := res[fmt.Sprintf("%d/hit/tcp", i)].upstream
		if q.cached && !strings.HasPrefix(refUp, "1 whole") {
			rep.add("[up %s] %s: asked twice over tcp, upstream got %s", up, qd, refUp)
		}
		for _, a := range askers {
			got := res[fmt.Sprintf("%d/hit/%s", i, a.name)].upstream
			if got != refUp && !(a.doq && q.doqClosed) {
				rep.add("[up %s] %s: upstream for %s: %s; for tcp: %s", up, qd, a.name, got, refUp)
			}
		}
		if sh, ok := res[fmt.Sprintf("%d/shared-upstream", i)]; ok && q.cached && !strings.HasPrefix(sh.upstream, "1 whole") {
			rep.add("[up %s] %s: one name over every transport went upstream: %s", up, qd, sh.upstream)
		}
	}
}

// diffOne compares got, over a, with ref, TCP's answer to the same query.
func diffOne(rep *diffReport, where string, q diffQuestion, a diffAsker, ref, got diffView) {
	// The ID: RFC 9250 §4.2.1 has DoQ's 0, which the query was too; every
	// other transport echoes the query's (RFC 1035 §4.1.1; RFC 8484 §4.1
	// has the DoH client choose it, and the server answer with it).
	wantID := uint16(diffID)
	if a.doq {
		wantID = 0
	}
	if got.id != wantID {
		rep.add("%s: ID %#x, want %#x", where, got.id, wantID)
	}
	// Padding: RFC 7830 §3 and RFC 8467 §4.1: a responder pads an
	// encrypted answer to a query that was padded, in blocks of 468;
	// never on plain UDP or TCP (RFC 7830 §6, to an observer it hides
	// nothing). DoQ pads every answer with an OPT record (RFC 9250 §5.4).
	// Taken out of the comparison, checked here.
	qPadded := diffQueryPadded(q)
	if want := qPadded && a.secure || a.doq && got.opt; got.padded != want {
		rep.add("%s: padded %t, want %t (query padded %t, encrypted %t, DoQ %t, an OPT %t)", where, got.padded, want, qPadded, a.secure, a.doq, got.opt)
	}
	if got.padded && got.wire%468 != 0 {
		rep.add("%s: padded to %d octets, not a multiple of 468 (RFC 8467 §4.1)", where, got.wire)
	}
	// UDP: fitted to the client's buffer (RFC 1035 §4.2.1, RFC 6891 §7,
	// at most 1232 as dnsfence's README has it), with TC when an answer or
	// authority record is left out (RFC 2181 §9), additional records left
	// out without it.
	if !a.stream {
		limit := dns.MinMsgSize
		if q.edns > 0 {
			limit = min(max(q.edns, dns.MinMsgSize), 1232)
		}
		if ref.size > limit {
			if got.size > limit {
				rep.add("%s: %d octets over UDP, past the client's %d", where, got.size, limit)
			}
			cutNeeded := false
			for _, r := range ref.records {
				if !slices.Contains(got.records, r) && (r[0] == '0' || r[0] == '1') {
					cutNeeded = true
				}
			}
			for _, r := range got.records {
				if !slices.Contains(ref.records, r) {
					rep.add("%s: record %q over UDP is not in TCP's answer", where, r)
				}
			}
			if got.tc != cutNeeded {
				rep.add("%s: TC %t over UDP, an answer or authority record left out: %t", where, got.tc, cutNeeded)
			}
			if diffHeaderOPT(got.text) != diffHeaderOPT(ref.text) {
				rep.add("%s: header or OPT differs over UDP:\n%s\nwant (tcp):\n%s", where, diffHeaderOPT(got.text), diffHeaderOPT(ref.text))
			}
			return
		}
	}
	if got.tc {
		rep.add("%s: TC set, the answer (%d octets) fits", where, got.size)
	}
	// DDR on the http:// listener: the request came to the proxy's side
	// of dnsfence, not to the address the device asked, so no loopback
	// listener is designated to it (README, Encrypted DNS, "Devices that
	// find it themselves"; RFC 9462 §4 designates what the device can
	// reach): NODATA with resolver.arpa's SOA where the others get the
	// listeners.
	if q.ddr && a.proxied {
		if !strings.Contains(got.text, "rcode NOERROR") || strings.Contains(got.text, "\n0 ") ||
			!strings.Contains(got.text, "\n1 resolver.arpa.\t0\tIN\tSOA") {
			rep.add("%s: not the NODATA of a proxied request:\n%s", where, got.text)
		}
		return
	}
	if got.text != ref.text {
		rep.add("%s: differs from tcp:\n%s", where, lineDiff(ref.text, got.text))
		return
	}
	// TTLs: the same, but for the seconds between two asks (a cache hit
	// counts its entry's age down).
	for k := range got.ttls {
		if d := int64(ref.ttls[k]) - int64(got.ttls[k]); d > 2 || d < -2 {
			rep.add("%s: TTL of record %d %d, tcp's %d", where, k, got.ttls[k], ref.ttls[k])
		}
	}
}

var (
	diffSerial   = regexp.MustCompile(`(dnsfence\.invalid\. )\d+`)
	diffListPath = regexp.MustCompile(`list /[^ )]*/`)
	diffPort     = regexp.MustCompile(`port="\d+"`)
)

// diffPerFence is a view's text without what differs from one fence to
// another: the blocked answer's SOA serial, the list's folder and the
// ports of its listeners.
func diffPerFence(text string) string {
	text = diffPort.ReplaceAllString(text, `port="PORT"`) // DDR: each fence's listeners
	return diffListPath.ReplaceAllString(diffSerial.ReplaceAllString(text, "${1}SERIAL"), "list LISTS/")
}

// lineDiff is the lines of want that got lacks (-) and the lines of got
// that want lacks (+).
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(the same lines in another order)\n" + got
	}
	return b.String()
}

// diffHeaderOPT is a view's header, question and OPT lines, TC aside.
func diffHeaderOPT(text string) string {
	var keep []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "opcode ") || strings.HasPrefix(l, "question ") || strings.HasPrefix(l, "opt ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// diffQueryPadded says whether q's query carries a padding option.
func diffQueryPadded(q diffQuestion) bool {
	m := diffMsg(q, "q0-x")
	o := m.IsEdns0()
	return o != nil && slices.ContainsFunc(o.Option, func(e dns.EDNS0) bool { return e.Option() == dns.EDNS0PADDING })
}

// TestTransportDifferential asks the corpus over every client transport of
// a dnsfence, once for each upstream transport, and fails with every
// divergence no transport explains. Each is compared with TCP's answer to
// the same query (and, for each encrypted upstream, with the answer the
// same client transport got with the upstream over UDP/TCP): RCODE, every
// header flag, the question, each section's records, TTLs within the
// seconds between two asks, the OPT record and its options but padding;
// and what went upstream for each name (flags, EDNS, options but padding,
// how many whole answers: the cache's behaviour). The divergences it
// found are fixed: a NOTIFY's NOTIMP without its question over DoH and DoQ
// (checkQuery sends a NOTIFY to the Handler as AcceptQuery does), and an
// answer with a record miekg/dns does not read, which an exempt client got
// as the upstream sent it only over UDP from a plain upstream, SERVFAIL
// (the upstream asked twice, nothing cached) everywhere else
// (Handler.ask and storeWire cache it, forwardedWire answers it).
func TestTransportDifferential(t *testing.T) {
	if testing.Short() {
		t.Skip("the transport differential asks some thousands of questions")
	}
	for _, ip := range []string{diffListen, diffUp, diffGov, diffExempt} {
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("%s is not a loopback address here (only 127.0.0.1 is on some systems): %v", ip, err)
		}
		ln.Close()
	}
	start := time.Now()
	p := newTestPKI(t)
	u := startDiffUpstream(t, p)
	corpus := transportCorpus()
	rep := &diffReport{seen: map[string]bool{}}
	all := map[string]map[string]diffResult{}
	var transports, answers int
	for _, up := range []string{"udp", "tls", "https", "quic"} {
		cfg := fmt.Sprintf(transportDiffConfig, p.caFile, p.certFile, p.keyFile)
		e := startEncryptedFence(t, p, cfg, u.addrs[up])
		u.mu.Lock()
		clear(u.seen) // the names are the same for each fence
		u.mu.Unlock()
		for _, tr := range []string{listen.TLS, listen.HTTPS, "http", listen.QUIC} {
			require.NotEmpty(t, e.addrs[tr], "listening on %s", tr)
		}
		// The cache across transports once, with the upstream over
		// UDP/TCP: it is the client's side, whatever the upstream's.
		phases := []string{"miss", "hit"}
		if up == "udp" {
			phases = append(phases, "shared")
		}
		res := runDiff(t, e, u, corpus, up == "udp")
		askers := diffAskers(t, e, diffGov)
		compareTransports(rep, up, corpus, askers, res, phases)
		all[up] = res
		transports = len(askers)
		answers += len(corpus) * len(askers) * len(phases)
	}
	// The upstream's transport: the same answers, over every client
	// transport, as with the upstream over UDP/TCP.
	for _, up := range []string{"tls", "https", "quic"} {
		for k, got := range all[up] {
			ref := all["udp"][k]
			if ref.err != nil || got.err != nil {
				continue
			}
			// Each fence's blocked answers carry its own SOA serial and
			// list path (the time and folder of its start).
			if diffPerFence(got.view.text) != diffPerFence(ref.view.text) {
				rep.add("[up %s vs udp] %s: differs:\n%s", up, k, lineDiff(diffPerFence(ref.view.text), diffPerFence(got.view.text)))
			}
			if got.upstream != ref.upstream {
				rep.add("[up %s vs udp] %s: upstream %s; over udp %s", up, k, got.upstream, ref.upstream)
			}
		}
	}
	t.Logf("%d questions × %d client transports × %d upstream transports, a miss and a hit each, one name over every transport once: %d answers, in %s",
		len(corpus), transports, len(all), answers, time.Since(start).Round(time.Millisecond))
	for _, l := range rep.lines {
		t.Error(l)
	}
}
