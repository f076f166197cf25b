package resolver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// The cache rules' tests run dnsfence and its upstream on addresses of
// 127.0.77.0/24 of their own: the listeners on rulesListen (the wire path)
// and rulesMsgListen (the message path only, a cache of its own), the
// upstream on rulesUp, and two clients: rulesGov, whose policy blocks (its
// answers are inspected), and rulesExempt, whose policy does not.
const (
	rulesListen    = "127.0.77.2"
	rulesMsgListen = "127.0.77.3"
	rulesUp        = "127.0.77.1"
	rulesGov       = "127.0.77.10"
	rulesExempt    = "127.0.77.20"
)

// rulesConfig is dnsfence's configuration for the cache rules' tests;
// the %q are the test PKI's certificate and key, %s extra top-level lines
// (a cache block).
const rulesConfig = `listen: ["%s:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.77.0/24"]
blocked_ttl: 60
log: {queries: none}
tls: {cert: %q, key: %q}
listen_tls: ["%[1]s:0"]
listen_https: ["%[1]s:0"]
listen_quic: ["%[1]s:0"]
%[4]s
policies:
  - name: government-devices
    clients: ["127.0.77.0/24"]
    block: ["tiktok.txt"]
  - name: exempt
    clients: ["127.0.77.20/32"]
`

// rulesNeedAddrs skips the test where 127.0.77.0/24 is not loopback.
func rulesNeedAddrs(t *testing.T) {
	t.Helper()
	needLoopback(t, rulesListen, rulesMsgListen, rulesUp, rulesGov, rulesExempt)
}

// startRulesFence serves rulesConfig (with extra lines) on ip with every
// listener, the queries served by wrap(h) (nil: h).
func startRulesFence(t *testing.T, p *testPKI, ip, extra string, wrap func(*Handler) listen.Handler, upstream string) *encryptedFence {
	t.Helper()
	dir := testnet.WriteTree(t, testFiles)
	text := fmt.Sprintf(rulesConfig, ip, p.certFile, p.keyFile, extra)
	path := filepath.Join(dir, "dnsfence.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(text, "{{upstreams}}", `["`+upstream+`"]`)), 0o644))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	log := zaptest.NewLogger(t)
	h := NewHandler(log, snap, m)
	cert, err := OpenCertificate(log, cfg, m)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cert.Close() })
	var serve listen.Handler = h
	if wrap != nil {
		serve = wrap(h)
	}
	srv := newServer(log, h, serve)
	require.NoError(t, srv.Start(cfg.Listen))
	require.NoError(t, srv.StartEncrypted(cfg, cert))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	e := &encryptedFence{fence: &fence{addr: srv.Addrs()[0], handler: h, server: srv, dir: dir, registry: reg}, pki: p,
		addrs: map[string]string{}, cert: cert}
	for _, ep := range srv.ln.Endpoints() {
		e.addrs[ep.Transport] = ep.Addr.String()
	}
	return e
}

// rulesTransport asks a query over one client transport of the fences.
type rulesTransport struct {
	name string
	ask  func(from string, m *dns.Msg) (*dns.Msg, error)
}

// rulesTransports are the client transports: UDP on the wire path
// ("udp") and on the message path ("udp-msg", the same fence and cache:
// an EDNS option of local use the wire path does not take sends it
// there), TCP, DoT, DoH and DoQ. Each query of DoT, DoH and DoQ opens a
// connection of its own, as before, but resumes a session of the ones
// before (RFC 8446 §2.2; no early data) with X25519 alone: the full
// handshakes, with the certificate's check and X25519MLKEM768, were a
// third of TestCacheRulesEveryTransport's CPU time under -race (2,808
// handshakes), and what these tests check is the answers, not the
// handshake (the encrypted listeners' own tests check that, with every
// key exchange the client offers by default).
func rulesTransports(e *encryptedFence) []rulesTransport {
	tlsFor := func(alpn ...string) *tls.Config {
		c := e.pki.clientTLS(alpn...)
		c.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		c.CurvePreferences = []tls.CurveID{tls.X25519}
		return c
	}
	dot, doh, doq := tlsFor(listen.ALPNDoT), tlsFor(), tlsFor(listen.ALPNDoQ)
	return []rulesTransport{
		{"udp", func(from string, m *dns.Msg) (*dns.Msg, error) { return exchange(e.addr, from, "udp", m) }},
		{"udp-msg", func(from string, m *dns.Msg) (*dns.Msg, error) {
			m = m.Copy()
			if m.IsEdns0() == nil {
				m.SetEdns0(1232, false)
			}
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}})
			return exchange(e.addr, from, "udp", m)
		}},
		{"tcp", func(from string, m *dns.Msg) (*dns.Msg, error) { return exchange(e.addr, from, "tcp", m) }},
		{"dot", func(from string, m *dns.Msg) (*dns.Msg, error) { return askDoT(e.addrs[listen.TLS], from, dot, m) }},
		{"doh", func(from string, m *dns.Msg) (*dns.Msg, error) {
			return askDoH("https://"+e.addrs[listen.HTTPS]+listen.DoHPath, from, doh, m, false)
		}},
		{"doq", func(from string, m *dns.Msg) (*dns.Msg, error) { return askDoQ(e.addrs[listen.QUIC], from, doq, m) }},
	}
}

// rulesCounter counts the upstream's queries by question name (lower
// case), type, class, and DO and CD bits. A query sent again over UDP
// with the same ID (README's Resend: one the upstream had not answered
// within at least 150 ms, which a loaded machine can take) is counted
// once, as testUpstream.distinct counts it: it is the same query, not
// another asking of the upstream.
type rulesCounter struct {
	mu   sync.Mutex
	n    map[string]int
	sent map[rulesSent]bool
	// again are the keys of which one ID came twice: a resend, or a
	// second query whose random ID happened to be the first's (1 time in
	// 65,536), which the count cannot tell apart.
	again map[string]bool
}

// rulesSent is one query as rulesCounter tells resends apart: its key,
// ID and transport.
type rulesSent struct {
	key string
	id  uint16
	tcp bool
}

func (c *rulesCounter) key(name string, qtype, qclass uint16, do, cd bool) string {
	return fmt.Sprintf("%s/%d/%d/%t/%t", strings.ToLower(name), qtype, qclass, do, cd)
}

// add counts r, received by the upstream from w's remote address.
func (c *rulesCounter) add(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	do := r.IsEdns0() != nil && r.IsEdns0().Do()
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	key := c.key(q.Name, q.Qtype, q.Qclass, do, r.CheckingDisabled)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n, c.sent, c.again = map[string]int{}, map[rulesSent]bool{}, map[string]bool{}
	}
	if sent := (rulesSent{key, r.Id, tcp}); !c.sent[sent] {
		c.sent[sent] = true
		c.n[key]++
	} else {
		c.again[key] = true
	}
}

// resent reports whether one ID of the key's queries came twice, so that
// get may count two queries as one.
func (c *rulesCounter) resent(name string, qtype, qclass uint16, do, cd bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.again[c.key(name, qtype, qclass, do, cd)]
}

func (c *rulesCounter) get(name string, qtype, qclass uint16, do, cd bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[c.key(name, qtype, qclass, do, cd)]
}

// rulesTTL is a TTL with its most significant bit set: 0 (RFC 2181 §8).
const rulesTTL = 1<<31 | 300

// rulesAnswer answers r by the first label of its name (any case): the
// upstream of the cache rules' tests.
func rulesAnswer(counter *rulesCounter) func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
	return func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		counter.add(w, r)
		q := r.Question[0]
		name := q.Name
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		do := r.IsEdns0() != nil && r.IsEdns0().Do()
		soa := func(ttl, minimum uint32) dns.RR {
			return mustRR("example.org. %d IN SOA ns.example.org. host.example.org. 1 3600 600 86400 %d", ttl, minimum)
		}
		a := func(ttl uint32, addr string) dns.RR {
			return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: q.Qclass, Ttl: ttl}, A: net.ParseIP(addr)}
		}
		switch label := strings.ToLower(name[:strings.IndexByte(name, '.')]); label {
		case "split": // RFC 2181 §5.2: one RRset, two TTLs
			m.Answer = []dns.RR{a(300, "192.0.2.1"), a(100, "192.0.2.2")}
		case "topbit": // RFC 2181 §8
			m.Answer = []dns.RR{a(rulesTTL, "192.0.2.1")}
		case "topbitmix":
			m.Answer = []dns.RR{a(300, "192.0.2.1"), a(rulesTTL, "192.0.2.2")}
		case "zero":
			m.Answer = []dns.RR{a(0, "192.0.2.1")}
		case "high":
			m.Answer = []dns.RR{a(2000000, "192.0.2.1")}
		case "cname":
			m.Answer = []dns.RR{mustRR("%s 300 IN CNAME target.example.org.", name), mustRR("target.example.org. 100 IN A 192.0.2.3")}
		case "nx":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa(3600, 60)}
		case "nxlow":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa(30, 900)}
		case "nxtopbit":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa(rulesTTL, 900)}
		case "nxnosoa":
			m.Rcode = dns.RcodeNameError
		case "nodata":
			m.Ns = []dns.RR{soa(3600, 45)}
		case "nodatanosoa":
		case "big", "medium": // 2,600 or 800 octets
			n := 40
			if label == "medium" {
				n = 12
			}
			for i := range n {
				m.Answer = append(m.Answer, mustRR(`%s 300 IN TXT "%s"`, name, strings.Repeat(string(rune('a'+i%26)), 60)))
			}
			m.Ns = []dns.RR{mustRR("example.org. 300 IN NS ns.example.org.")}
			m.Extra = []dns.RR{mustRR("ns.example.org. 300 IN A 192.0.2.53")}
		case "unread", "unreadbig": // an HTTPS RRset miekg/dns does not unpack (unreadHintAnswer)
			n := 1
			if label == "unreadbig" {
				n = 12 // about 900 octets
			}
			for i := range n {
				rr := hintRecord(name, uint16(i+1), fmt.Sprintf("svc%d.example.net.", i))
				rr.Hdr.Ttl = 300
				rr.Value = append([]dns.SVCBKeyValue{&dns.SVCBAlpn{Alpn: []string{"h2", "h3"}}}, rr.Value...)
				m.Answer = append(m.Answer, rr)
			}
			if opt := r.IsEdns0(); opt != nil {
				m.SetEdns0(1232, do)
			}
			m.Compress = true
			writeUnread(w, m)
			return nil
		case "signed": // an upstream that signs whatever the DO bit
			m.Answer = []dns.RR{a(300, "192.0.2.1"),
				mustRR("%s 300 IN RRSIG A 13 3 300 20300101000000 20200101000000 12345 example.org. dGVzdA==", name)}
		case "cd": // another answer with checking disabled
			addr := "192.0.2.1"
			if r.CheckingDisabled {
				addr = "192.0.2.66"
			}
			m.Answer = []dns.RR{a(300, addr)}
		case "class":
			addr := "192.0.2.1"
			if q.Qclass != dns.ClassINET {
				addr = "192.0.2.77"
			}
			m.Answer = []dns.RR{a(300, addr)}
		default:
			m.Answer = []dns.RR{a(300, "192.0.2.1")}
		}
		if opt := r.IsEdns0(); opt != nil {
			m.SetEdns0(1232, do)
		}
		return m
	}
}

// rulesScenario is what the upstream answers a name of one first label,
// and what every answer dnsfence gives for it must be: its RCODE, how many
// answer records, the largest TTL any record may carry (an answer's records
// all carry one TTL, RFC 2181 §5.2), whether the TTL is 0, and whether the
// second asking is answered from the cache.
type rulesScenario struct {
	label   string
	qtype   uint16
	rcode   int
	answers int
	ns      int
	maxTTL  uint32
	zero    bool
	cached  bool
}

var rulesScenarios = []rulesScenario{
	{label: "plain", qtype: dns.TypeA, answers: 1, maxTTL: 300, cached: true},
	{label: "split", qtype: dns.TypeA, answers: 2, maxTTL: 100, cached: true},
	{label: "topbit", qtype: dns.TypeA, answers: 1, zero: true},
	{label: "topbitmix", qtype: dns.TypeA, answers: 2, zero: true},
	{label: "zero", qtype: dns.TypeA, answers: 1, zero: true},
	{label: "high", qtype: dns.TypeA, answers: 1, maxTTL: 86400, cached: true},
	{label: "cname", qtype: dns.TypeA, answers: 2, maxTTL: 100, cached: true},
	{label: "nx", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: 1, maxTTL: 60, cached: true},
	{label: "nxlow", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: 1, maxTTL: 30, cached: true},
	{label: "nxtopbit", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: 1, zero: true},
	{label: "nxnosoa", qtype: dns.TypeA, rcode: dns.RcodeNameError},
	{label: "nodata", qtype: dns.TypeAAAA, ns: 1, maxTTL: 45, cached: true},
	{label: "nodatanosoa", qtype: dns.TypeAAAA},
}

// checkRulesAnswer checks r against sc.
func checkRulesAnswer(t *testing.T, sc rulesScenario, r *dns.Msg, what string) {
	t.Helper()
	assert.Equal(t, sc.rcode, r.Rcode, "%s: rcode", what)
	assert.False(t, r.Truncated, "%s: TC", what)
	assert.Len(t, r.Answer, sc.answers, "%s: answer records", what)
	assert.Len(t, r.Ns, sc.ns, "%s: authority records", what)
	ttl := int64(-1)
	for _, rr := range append(append([]dns.RR{}, r.Answer...), r.Ns...) {
		h := rr.Header()
		if ttl < 0 {
			ttl = int64(h.Ttl)
		}
		assert.Equal(t, ttl, int64(h.Ttl), "%s: one TTL for every record (RFC 2181 §5.2): %s", what, rr)
		if sc.zero {
			assert.Zero(t, h.Ttl, "%s: TTL 0: %s", what, rr)
		} else {
			assert.LessOrEqual(t, h.Ttl, sc.maxTTL, "%s: at most %d: %s", what, sc.maxTTL, rr)
			assert.Positive(t, h.Ttl, "%s: a fresh answer's TTL: %s", what, rr)
		}
	}
}

// TestCacheRulesEveryTransport asks each scenario's name over one client
// transport (a miss), then over another (a hit, or a second miss for an
// answer that is not cached), from a client whose policy blocks and from
// an exempt one, and checks both answers: the TTLs (RFC 2181 §5.2 and §8,
// RFC 2308 §5, the min_ttl and max_ttl clamps, TTL 0) and whether the
// upstream was asked again.
func TestCacheRulesEveryTransport(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	clamped := func(sc rulesScenario) rulesScenario {
		// min_ttl 120, max_ttl 200: every TTL raised to 120 (a TTL 0, one
		// read as 0, and a negative answer's too) or cut to 200.
		if sc.ns == 0 && sc.rcode == dns.RcodeNameError || sc.label == "nodatanosoa" {
			return sc
		}
		sc.zero, sc.cached, sc.maxTTL = false, true, 120
		if sc.label == "plain" || sc.label == "high" {
			sc.maxTTL = 200
		}
		return sc
	}
	zero := func(sc rulesScenario) rulesScenario {
		// max_ttl 0: TTL 0, nothing cached.
		if sc.answers+sc.ns > 0 {
			sc.zero = true
		}
		sc.cached = false
		return sc
	}
	for _, cfg := range []struct {
		name  string
		cache string
		want  func(rulesScenario) rulesScenario
	}{
		{"defaults", "", func(sc rulesScenario) rulesScenario { return sc }},
		{"clamped", "cache: {min_ttl: 120, max_ttl: 200}", clamped},
		{"max_ttl 0", "cache: {max_ttl: 0}", zero},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			counter := &rulesCounter{}
			up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
			e := startRulesFence(t, p, rulesListen, cfg.cache, nil, up.addr)
			trs := rulesTransports(e)
			for _, sc := range rulesScenarios {
				sc := cfg.want(sc)
				t.Run(sc.label, func(t *testing.T) {
					// The scenarios' names are their own, and so are their
					// upstream queries (counter's keys): they run side by
					// side, on the fence and upstream of their cache
					// configuration, which stop once they are all done.
					t.Parallel()
					for _, from := range []string{rulesGov, rulesExempt} {
						for _, miss := range trs {
							for _, hit := range trs {
								for again := 0; ; again++ {
									name := fmt.Sprintf("%s.%s-%s.%s.example.org.", sc.label, miss.name, hit.name, strings.ReplaceAll(from, ".", "-"))
									if again > 0 {
										name = fmt.Sprintf("%s.again%d.%s", sc.label, again, strings.TrimPrefix(name, sc.label+"."))
									}
									what := fmt.Sprintf("%s then %s from %s", miss.name, hit.name, from)
									m := question(name, sc.qtype, true)
									r, err := miss.ask(from, m)
									require.NoError(t, err, what)
									checkRulesAnswer(t, sc, r, what+": the miss")
									r, err = hit.ask(from, m)
									require.NoError(t, err, what)
									checkRulesAnswer(t, sc, r, what+": the hit")
									want := 2
									if sc.cached {
										want = 1
									}
									got := counter.get(name, sc.qtype, dns.ClassINET, false, false)
									if got < want && again < 3 && counter.resent(name, sc.qtype, dns.ClassINET, false, false) {
										// One ID came twice: a resend, counted
										// once, or the second query's random ID
										// was the first's. Which, the count
										// cannot tell: the pair is asked again
										// under a name of its own.
										continue
									}
									assert.Equal(t, want, got, "%s: upstream queries", what)
									break
								}
							}
						}
					}
				})
			}
		})
	}
}

// rulesPairs calls f for every (miss, hit) pair of the transports, from
// each client, with a name of its own under label.
func rulesPairs(t *testing.T, trs []rulesTransport, label string, f func(t *testing.T, name string, miss, hit rulesTransport, from string)) {
	t.Helper()
	for _, from := range []string{rulesGov, rulesExempt} {
		for _, miss := range trs {
			for _, hit := range trs {
				name := fmt.Sprintf("%s.%s-%s.%s.example.org.", label, miss.name, hit.name, strings.ReplaceAll(from, ".", "-"))
				t.Run(miss.name+"-"+hit.name+"-"+from, func(t *testing.T) { f(t, name, miss, hit, from) })
			}
		}
	}
}

// rrTypes lists the types of rrs, OPT aside.
func rrTypes(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, dns.TypeToString[rr.Header().Rrtype])
		}
	}
	return out
}

// TestCacheRulesKeys: an answer cached for one query is not given to a
// query it does not answer: one without the DO bit gets no RRSIG from an
// upstream that signs whatever the bit, one with it gets the RRSIG even
// after a query without it filled the cache (RFC 4035 §3.2.1); CD
// (§3.2.2) and the class keep answers apart; and another spelling of the
// name is answered from the cache with the question as the client spelled
// it (RFC 4343).
func TestCacheRulesKeys(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
	e := startRulesFence(t, p, rulesListen, "", nil, up.addr)
	trs := rulesTransports(e)
	t.Run("do", func(t *testing.T) {
		for _, doFirst := range []bool{false, true} {
			rulesPairs(t, trs, fmt.Sprintf("signed.do%t", doFirst), func(t *testing.T, name string, miss, hit rulesTransport, from string) {
				for i, do := range []bool{doFirst, !doFirst} {
					tr := []rulesTransport{miss, hit}[i]
					m := question(name, dns.TypeA, true)
					m.IsEdns0().SetDo(do)
					r, err := tr.ask(from, m)
					require.NoError(t, err)
					want := []string{"A"}
					if do {
						want = []string{"A", "RRSIG"}
					}
					assert.Equal(t, want, rrTypes(r.Answer), "%s DO %t", tr.name, do)
					require.NotNil(t, r.IsEdns0())
					assert.Equal(t, do, r.IsEdns0().Do(), "%s: DO echoed", tr.name)
				}
				assert.Equal(t, 1, counter.get(name, dns.TypeA, dns.ClassINET, false, false), "asked once without DO")
				assert.Equal(t, 1, counter.get(name, dns.TypeA, dns.ClassINET, true, false), "asked once with DO")
			})
		}
	})
	t.Run("cd", func(t *testing.T) {
		rulesPairs(t, trs, "cd", func(t *testing.T, name string, miss, hit rulesTransport, from string) {
			for i, cd := range []bool{false, true, false, true} {
				tr := []rulesTransport{miss, hit}[i%2]
				m := question(name, dns.TypeA, true)
				m.CheckingDisabled = cd
				r, err := tr.ask(from, m)
				require.NoError(t, err)
				want := "192.0.2.1"
				if cd {
					want = "192.0.2.66"
				}
				require.Len(t, r.Answer, 1, "%s CD %t", tr.name, cd)
				assert.Equal(t, want, r.Answer[0].(*dns.A).A.String(), "%s CD %t", tr.name, cd)
				assert.Equal(t, cd, r.CheckingDisabled, "%s: CD copied", tr.name)
			}
		})
	})
	t.Run("class", func(t *testing.T) {
		rulesPairs(t, trs, "class", func(t *testing.T, name string, miss, hit rulesTransport, from string) {
			for i, class := range []uint16{dns.ClassINET, dns.ClassHESIOD, dns.ClassINET, dns.ClassHESIOD} {
				tr := []rulesTransport{miss, hit}[i%2]
				m := question(name, dns.TypeA, true)
				m.Question[0].Qclass = class
				r, err := tr.ask(from, m)
				require.NoError(t, err)
				want := "192.0.2.1"
				if class != dns.ClassINET {
					want = "192.0.2.77"
				}
				require.Len(t, r.Answer, 1, "%s class %d", tr.name, class)
				assert.Equal(t, want, r.Answer[0].(*dns.A).A.String(), "%s class %d", tr.name, class)
				assert.Equal(t, class, r.Question[0].Qclass)
			}
		})
	})
	t.Run("case", func(t *testing.T) {
		rulesPairs(t, trs, "case", func(t *testing.T, name string, miss, hit rulesTransport, from string) {
			upper := strings.ToUpper(name[:1]) + name[1:4] + strings.ToUpper(name[4:])
			for i, n := range []string{name, upper} {
				tr := []rulesTransport{miss, hit}[i]
				r, err := tr.ask(from, question(n, dns.TypeA, true))
				require.NoError(t, err)
				assert.Equal(t, n, r.Question[0].Name, "%s: the question as the client spelled it", tr.name)
				require.Len(t, r.Answer, 1)
				assert.Equal(t, name, r.Answer[0].Header().Name, "%s: the owner as the upstream spelled it first", tr.name)
			}
			assert.Equal(t, 1, counter.get(name, dns.TypeA, dns.ClassINET, false, false), "one upstream query")
		})
	})
}

// askUDPRaw asks m over UDP from from and returns the answer and its
// length on the wire.
func askUDPRaw(server, from string, m *dns.Msg) (*dns.Msg, int, error) {
	b, err := m.Pack()
	if err != nil {
		return nil, 0, err
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(server)))
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		return nil, 0, err
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil, 0, err
	}
	r := new(dns.Msg)
	return r, n, r.Unpack(buf[:n])
}

// TestCacheRulesClientSize: an answer cached whole (over TCP, or after a
// truncated UDP answer from the upstream) is fitted to each UDP client's
// size when it is a hit (its EDNS buffer, 512 without EDNS), with TC set
// as answer records are left out (RFC 1035 §4.2.1, RFC 6891 §6.2.3), and
// given whole over every other transport.
func TestCacheRulesClientSize(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
	e := startRulesFence(t, p, rulesListen, "", nil, up.addr)
	type sizedTransport struct {
		rulesTransport
		limit int // the client's UDP size; 0: a stream
	}
	var all []sizedTransport
	for _, tr := range rulesTransports(e) {
		if !strings.HasPrefix(tr.name, "udp") {
			all = append(all, sizedTransport{rulesTransport: tr})
		}
	}
	for _, size := range []uint16{0, 512, 1232} {
		for _, msgPath := range []bool{false, true} {
			if size == 0 && msgPath {
				continue // the option that takes the message path needs EDNS
			}
			name := fmt.Sprintf("udp%d", size)
			if msgPath {
				name += "-msg"
			}
			all = append(all, sizedTransport{rulesTransport{name, func(from string, m *dns.Msg) (*dns.Msg, error) {
				m = m.Copy()
				m.Extra = nil
				if size != 0 {
					m.SetEdns0(size, false)
				}
				if msgPath {
					m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}})
				}
				r, n, err := askUDPRaw(e.addr, from, m)
				if err == nil && n > max(int(size), 512) {
					return r, fmt.Errorf("%d octets over UDP to a client of %d", n, max(size, 512))
				}
				return r, err
			}}, max(int(size), 512)})
		}
	}
	for _, tc := range []struct {
		label   string
		records int
		octets  int // about
	}{{"big", 40, 2600}, {"medium", 12, 800}} {
		t.Run(tc.label, func(t *testing.T) {
			for _, from := range []string{rulesGov, rulesExempt} {
				for _, miss := range all {
					for _, hit := range all {
						name := fmt.Sprintf("%s.%s-%s.%s.example.org.", tc.label, miss.name, hit.name, strings.ReplaceAll(from, ".", "-"))
						for _, tr := range []sizedTransport{miss, hit} {
							what := fmt.Sprintf("%s then %s from %s: %s", miss.name, hit.name, from, tr.name)
							r, err := tr.ask(from, question(name, dns.TypeTXT, true))
							require.NoError(t, err, what)
							if tr.limit == 0 || tr.limit > tc.octets {
								assert.False(t, r.Truncated, "%s: TC", what)
								assert.Len(t, r.Answer, tc.records, "%s: every record", what)
							} else {
								assert.True(t, r.Truncated, "%s: TC: %d answer records", what, len(r.Answer))
								assert.Less(t, len(r.Answer), tc.records, "%s", what)
							}
						}
					}
				}
			}
		})
	}
}

// TestCacheRulesServeStale: once every upstream fails, an expired answer
// inside serve_stale is given over every transport, to both clients,
// with TTL 30 on every record (an NXDOMAIN's and a NODATA's SOA too) and
// EDE 3, or 19 for an NXDOMAIN (RFC 8767 §4, RFC 8914 §4.4, §4.20); the
// DO bit still decides the RRSIGs (RFC 4035 §3.2.1).
func TestCacheRulesServeStale(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	var failing sync.Map // names whose queries get SERVFAIL: all, once "fail" is stored
	good := rulesAnswer(counter)
	up := startUpstreamAt(t, rulesUp, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if _, ok := failing.Load("fail"); ok && r.Question[0].Name != "." {
			counter.add(w, r)
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
			return m
		}
		return good(w, r)
	})
	e := startRulesFence(t, p, rulesListen, "cache: {max_ttl: 1, serve_stale: 1h, stale_refresh_time: 0s, stale_answer_client_timeout: 0s}", nil, up.addr)
	trs := rulesTransports(e)
	type staleCase struct {
		label   string
		qtype   uint16
		do      bool
		rcode   int
		answers []string
		ns      []string
		ede     uint16
	}
	cases := []staleCase{
		{label: "plain", qtype: dns.TypeA, answers: []string{"A"}, ede: dns.ExtendedErrorCodeStaleAnswer},
		{label: "cname", qtype: dns.TypeA, answers: []string{"CNAME", "A"}, ede: dns.ExtendedErrorCodeStaleAnswer},
		{label: "nx", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: []string{"SOA"}, ede: dns.ExtendedErrorCodeStaleNXDOMAINAnswer},
		{label: "nodata", qtype: dns.TypeAAAA, ns: []string{"SOA"}, ede: dns.ExtendedErrorCodeStaleAnswer},
		{label: "signed", qtype: dns.TypeA, answers: []string{"A"}, ede: dns.ExtendedErrorCodeStaleAnswer},
		{label: "signed", qtype: dns.TypeA, do: true, answers: []string{"A", "RRSIG"}, ede: dns.ExtendedErrorCodeStaleAnswer},
	}
	nameOf := func(c staleCase, tr rulesTransport, from string) string {
		return fmt.Sprintf("%s.do%t-%s.%s.example.org.", c.label, c.do, tr.name, strings.ReplaceAll(from, ".", "-"))
	}
	askCase := func(c staleCase, tr rulesTransport, from string) (*dns.Msg, error) {
		m := question(nameOf(c, tr, from), c.qtype, true)
		m.IsEdns0().SetDo(c.do)
		return tr.ask(from, m)
	}
	for _, c := range cases {
		for _, tr := range trs {
			for _, from := range []string{rulesGov, rulesExempt} {
				r, err := askCase(c, tr, from)
				require.NoError(t, err)
				require.Equal(t, c.rcode, r.Rcode, "%s %s: the fresh answer", c.label, tr.name)
				require.Empty(t, allEDEs(r))
			}
		}
	}
	failing.Store("fail", true)
	require.Eventually(t, func() bool {
		r, err := askCase(cases[0], trs[0], rulesGov)
		return err == nil && len(allEDEs(r)) > 0
	}, 10*time.Second, 50*time.Millisecond, "the answers expire")
	for _, c := range cases {
		for _, tr := range trs {
			for _, from := range []string{rulesGov, rulesExempt} {
				what := fmt.Sprintf("%s DO %t over %s from %s", c.label, c.do, tr.name, from)
				var r *dns.Msg
				require.Eventually(t, func() bool {
					var err error
					r, err = askCase(c, tr, from)
					return err == nil && (len(allEDEs(r)) > 0 || r.Rcode == dns.RcodeServerFailure)
				}, 10*time.Second, 50*time.Millisecond, "%s: expires", what)
				assert.Equal(t, c.rcode, r.Rcode, what)
				assert.Equal(t, c.answers, rrTypes(r.Answer), what)
				assert.Equal(t, c.ns, rrTypes(r.Ns), what)
				for _, rr := range append(append([]dns.RR{}, r.Answer...), r.Ns...) {
					assert.Equal(t, uint32(30), rr.Header().Ttl, "%s: %s", what, rr)
				}
				edes := allEDEs(r)
				if assert.Len(t, edes, 1, what) {
					assert.Equal(t, c.ede, edes[0].InfoCode, what)
				}
				assert.Equal(t, c.do, r.IsEdns0().Do(), what)
			}
		}
	}
}

// TestCacheRulesCountDown: a cached answer's TTLs count down on the hits,
// over every transport alike: never above the TTL a hit before it gave,
// never 0 while the answer is fresh. Every name's miss is asked first, so
// that the second their TTLs take to count down is waited for once, not
// once a name.
func TestCacheRulesCountDown(t *testing.T) {
	rulesNeedAddrs(t)
	p := newTestPKI(t)
	counter := &rulesCounter{}
	up := startUpstreamAt(t, rulesUp, rulesAnswer(counter))
	e := startRulesFence(t, p, rulesListen, "", nil, up.addr)
	trs := rulesTransports(e)
	type countDown struct {
		label string
		qtype uint16
		ttl   uint32
	}
	scenarios := []countDown{{"split", dns.TypeA, 100}, {"nx", dns.TypeA, 60}, {"nodata", dns.TypeAAAA, 45}, {"cname", dns.TypeA, 100}}
	nameOf := func(sc countDown, from string) string {
		return fmt.Sprintf("%s.countdown.%s.example.org.", sc.label, strings.ReplaceAll(from, ".", "-"))
	}
	ttlOf := func(t *testing.T, sc countDown, from string, tr rulesTransport) uint32 {
		t.Helper()
		r, err := tr.ask(from, question(nameOf(sc, from), sc.qtype, true))
		require.NoError(t, err, tr.name)
		rrs := append(append([]dns.RR{}, r.Answer...), r.Ns...)
		require.NotEmpty(t, rrs, tr.name)
		ttl := rrs[0].Header().Ttl
		for _, rr := range rrs {
			assert.Equal(t, ttl, rr.Header().Ttl, "%s: one TTL: %s", tr.name, rr)
		}
		return ttl
	}
	misses := map[string]uint32{} // the miss's TTL, by name
	for _, sc := range scenarios {
		for _, from := range []string{rulesGov, rulesExempt} {
			misses[nameOf(sc, from)] = ttlOf(t, sc, from, trs[0])
		}
	}
	for _, sc := range scenarios {
		t.Run(sc.label, func(t *testing.T) {
			for _, from := range []string{rulesGov, rulesExempt} {
				name := nameOf(sc, from)
				last := misses[name]
				assert.Equal(t, sc.ttl, last, "the miss")
				require.Eventually(t, func() bool { return ttlOf(t, sc, from, trs[0]) < sc.ttl }, 5*time.Second, 50*time.Millisecond, "counts down")
				for range 2 {
					for _, tr := range trs {
						ttl := ttlOf(t, sc, from, tr)
						assert.LessOrEqual(t, ttl, last, "%s: never up", tr.name)
						assert.Less(t, ttl, sc.ttl, "%s: counted down", tr.name)
						assert.Positive(t, ttl, tr.name)
						last = ttl
					}
				}
				assert.Equal(t, 1, counter.get(name, sc.qtype, dns.ClassINET, false, false))
			}
		})
	}
}
