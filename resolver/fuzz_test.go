package resolver

import (
	"net"
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
	"go.uber.org/zap"
)

// recorder is a dns.ResponseWriter that keeps what the handler writes, as
// it would go on the wire.
type recorder struct {
	remote  net.Addr
	written []*dns.Msg
	sizes   []int
}

func (r *recorder) Transport() string    { return listen.UDP }
func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = r.Write(b)
	return err
}
func (r *recorder) Write(b []byte) (int, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	r.written = append(r.written, m)
	r.sizes = append(r.sizes, len(b))
	return len(b), nil
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}

// chaosQuestion is a CHAOS TXT query for name.
func chaosQuestion(name string) *dns.Msg {
	m := question(name, dns.TypeTXT, false)
	m.Question[0].Qclass = dns.ClassCHAOS
	return m
}

// FuzzHandler feeds raw packets through the listener's accept step and the
// handler, the way the UDP listener does (ServeInline, then resume when it
// is returned), and checks that every accepted query gets exactly one
// answer that packs, carries the query's ID and fits the client's UDP
// size. A query carrying a TSIG never goes upstream (ServeInline answers
// it itself), and is answered NOTAUTH with an unsigned BADKEY TSIG, or
// FORMERR when the TSIG is misplaced (checkTSIGAnswer). Forwarding goes
// to a closed loopback port, so the pipeline runs to the end without
// waiting.
func FuzzHandler(f *testing.F) {
	testnet.Seed(f, "testdata/packets/*.bin")
	for _, m := range []*dns.Msg{
		question("www.tiktok.com.", dns.TypeA, true),
		question("example.org.", dns.TypeHTTPS, false),
		question(`x\.tiktok.com.`, dns.TypeTXT, true),
		question(strings.Repeat(`\001`, 63)+"."+strings.Repeat(`\255`, 63)+"."+strings.Repeat(`\000`, 63)+"."+strings.Repeat("a", 50)+".tiktok.com.", dns.TypeA, true),
		chaosQuestion(strings.Repeat(`\092`, 63) + ".tiktok.com.explain.dnsfence."),
		chaosQuestion(`x\.explain.dnsfence.`),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	path, loaded := fuzzConfig(f), time.Now()
	h := fuzzHandler(f, path, loaded)
	// The same policy with the actions whose blocked answer is not
	// NXDOMAIN: the DoH canary is answered NXDOMAIN whatever the action.
	byAction := map[config.Action]*Handler{}
	for _, action := range []config.Action{config.ActionNull, config.ActionRefused} {
		byAction[action] = fuzzHandler(f, withAction(f, path, action), loaded)
	}
	f.Add(packQuestion(f, question("use-application-dns.net.", dns.TypeA, true)))
	// Signed with TSIG (RFC 8945): as dig -y signs, and with the TSIG
	// before the OPT, or twice (§5.2: FORMERR).
	for _, m := range tsigQueries() {
		f.Add(packQuestion(f, m))
	}
	// Counts above the records the query holds (RFC 1035 §4.1.1): ARCOUNT
	// 2 with one OPT, ANCOUNT 1 with none.
	for at, n := range map[int]byte{10: 2, 7: 1} {
		b := packQuestion(f, question("example.org.", dns.TypeA, true))
		b[at] = n
		f.Add(b)
	}
	f.Add(packQuestion(f, question("Use-Application-DNS.net.", dns.TypeAAAA, false)))
	f.Add(packQuestion(f, question("x.use-application-dns.net.", dns.TypeHTTPS, true)))

	f.Fuzz(func(t *testing.T, pkt []byte) {
		// As the UDP listener does: accept or reject the raw packet, then
		// the inline step, and resume if it needs an upstream.
		w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5300}}
		req, reject := listen.AcceptMessage(pkt, listen.AcceptQuery, func([]byte, error) {})
		if reject != nil {
			if err := w.WriteMsg(reject); err != nil {
				t.Fatalf("reject does not pack: %v", err)
			}
			return
		}
		if req == nil {
			return // dropped
		}
		tsigs, tsigLast := tsigsOf(req)
		if resume := h.ServeInline(w, req); resume != nil {
			if tsigs > 0 {
				t.Fatalf("a query carrying a TSIG goes upstream: %s", req)
			}
			resume()
		}
		hdr := *req
		if len(w.written) != 1 {
			t.Fatalf("%d answers written, want 1", len(w.written))
		}
		resp := w.written[0]
		if resp.Id != hdr.Id || !resp.Response || resp.RecursionAvailable != (hdr.Opcode == dns.OpcodeQuery) {
			t.Fatalf("bad header: %s", resp)
		}
		if w.sizes[0] > clientSize(&hdr) && !resp.Truncated {
			t.Fatalf("answer of %d bytes over the client's %d without TC", w.sizes[0], clientSize(&hdr))
		}
		if resp.IsEdns0() != nil && !carriesOPT(&hdr) {
			t.Fatal("OPT in the answer to a query without EDNS")
		}
		checkTSIGAnswer(t, &hdr, resp, tsigs, tsigLast)
		if len(hdr.Question) != 1 || !isCanary(hdr.Question[0].Name) || resp.Rcode != dns.RcodeNameError {
			return
		}
		// The canary, blocked NXDOMAIN under action nxdomain: so under
		// every action.
		for action, ah := range byAction {
			req, _ := listen.AcceptMessage(pkt, listen.AcceptQuery, func([]byte, error) {})
			aw := &recorder{remote: w.remote}
			if resume := ah.ServeInline(aw, req); resume != nil {
				resume()
			}
			if len(aw.written) != 1 {
				t.Fatalf("action %s: %d answers written, want 1", action, len(aw.written))
			}
			if got := aw.written[0]; got.Rcode != dns.RcodeNameError || len(got.Answer) != 0 {
				t.Fatalf("the DoH canary %q under action %s: %s, %d answers; under nxdomain: NXDOMAIN", hdr.Question[0].Name, action, dns.RcodeToString[got.Rcode], len(got.Answer))
			}
		}
	})
}

// isCanary reports whether name is the DoH canary or a name under it.
func isCanary(name string) bool {
	name = strings.ToLower(dns.Fqdn(name))
	return name == "use-application-dns.net." || strings.HasSuffix(name, ".use-application-dns.net.")
}

// withAction writes beside the configuration at path one whose policy
// has action, and returns its path.
func withAction(f *testing.F, path string, action config.Action) string {
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(path), "c-"+string(action)+".yaml")
	if err := os.WriteFile(p, append(data, "    action: "+string(action)+"\n"...), 0o644); err != nil {
		f.Fatal(err)
	}
	return p
}

// packQuestion is m packed.
func packQuestion(f *testing.F, m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// carriesOPT reports whether m has an OPT record in any section: one
// outside the additional section is FORMERR, answered with an OPT (RFC
// 6891 §7), but it is no query without EDNS.
func carriesOPT(m *dns.Msg) bool {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				return true
			}
		}
	}
	return false
}

// FuzzECS checks that any EDNS Client Subnet option body either is rejected
// or names a canonical network no wider than its family allows.
func FuzzECS(f *testing.F) {
	testnet.Seed(f, "testdata/ecs/*.bin")
	f.Add([]byte{0, 1, 24, 0, 10, 1, 2})
	f.Add([]byte{0, 2, 56, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0})
	// A query whose OPT record ends the message, so the option can be
	// appended to its RDATA.
	tmpl, err := question("www.tiktok.com.", dns.TypeA, true).Pack()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1000 {
			return
		}
		pkt := append([]byte(nil), tmpl...)
		rdlen := 4 + len(data)
		pkt[len(pkt)-2], pkt[len(pkt)-1] = byte(rdlen>>8), byte(rdlen)
		pkt = append(pkt, 0, dns.EDNS0SUBNET, byte(len(data)>>8), byte(len(data)))
		pkt = append(pkt, data...)
		m := new(dns.Msg)
		if err := m.Unpack(pkt); err != nil {
			return
		}
		e := findECS(m)
		if e == nil {
			return
		}
		p, ok := ecsPrefix(e)
		if !ok {
			return
		}
		// Family 2 gives IPv4 only for IPv4-mapped IPv6 of /96 or longer,
		// 96 bits shorter.
		mapped := e.Family == 2 && p.Addr().Is4()
		bits := int(e.SourceNetmask)
		if mapped {
			bits -= 96
		}
		if !p.IsValid() || p.Masked() != p || p.Bits() != bits {
			t.Fatalf("ECS %v gave a bad prefix %s", e, p)
		}
		if e.Family == 1 && !p.Addr().Is4() {
			t.Fatalf("family %d gave %s", e.Family, p)
		}
		if mapped && (len(e.Address) != net.IPv6len || !netip.AddrFrom16([16]byte(e.Address)).Is4In6() || e.SourceNetmask < 96) {
			t.Fatalf("family 2 %v gave IPv4 %s", e, p)
		}
	})
}

// fuzzConfig writes testFiles and a configuration whose one policy blocks
// for every loopback client and whose upstream refuses connections, and
// returns the configuration's path.
func fuzzConfig(f *testing.F) string {
	return writeFuzzConfig(f, `upstreams: ["127.0.0.1:9"]
upstream_timeout: 100ms
log: {queries: none}
policies:
  - name: gov
    clients: ["127.0.0.0/8"]
    block: ["tiktok.txt"]
    allow: ["allow.txt"]
`)
}

// writeFuzzConfig writes testFiles and the configuration text into a
// folder of f's, and returns the configuration's path.
func writeFuzzConfig(f *testing.F, text string) string {
	dir := f.TempDir()
	for name, content := range testFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	path := filepath.Join(dir, "dnsfence.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		f.Fatal(err)
	}
	return path
}

// fuzzSnapshot loads the configuration at path and builds its snapshot.
func fuzzSnapshot(f *testing.F, path string) *Snapshot {
	cfg, err := config.Load(path)
	if err != nil {
		f.Fatal(err)
	}
	snap, err := BuildSnapshot(cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	return snap
}

// fuzzHandler serves the configuration at path, without metrics, with its
// snapshot loaded at loaded: handlers given one time give blocked answers
// with one SOA serial.
func fuzzHandler(f *testing.F, path string, loaded time.Time) *Handler {
	snap := fuzzSnapshot(f, path)
	snap.Loaded = loaded // before it is served: read-only from then on
	if err := ConnectUpstreams(nil, snap, nil, nil); err != nil {
		f.Fatal(err)
	}
	return NewHandler(zap.NewNop(), snap, nil)
}

// tsigQueries are A queries signed with TSIG (RFC 8945), with a key
// dnsfence does not know: the TSIG last, with and without EDNS; before the
// OPT; and twice.
func tsigQueries() []*dns.Msg {
	tsig := func() *dns.TSIG {
		return &dns.TSIG{Hdr: dns.RR_Header{Name: "key.example.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
			Algorithm: dns.HmacSHA256, TimeSigned: 1700000000, Fudge: 300, MACSize: 32,
			MAC: strings.Repeat("ab", 32), OrigId: 4242}
	}
	signed := question("example.org.", dns.TypeA, false)
	signed.Extra = append(signed.Extra, tsig())
	withOPT := question("example.org.", dns.TypeA, true)
	withOPT.Extra = append(withOPT.Extra, tsig())
	before := question("example.org.", dns.TypeA, true)
	before.Extra = append([]dns.RR{tsig()}, before.Extra...)
	twice := question("example.org.", dns.TypeA, false)
	twice.Extra = append(twice.Extra, tsig(), tsig())
	return []*dns.Msg{signed, withOPT, before, twice}
}

// tsigsOf is how many TSIG records req carries, in any section, and
// whether one of them is the last record of its additional section.
func tsigsOf(req *dns.Msg) (n int, last bool) {
	for _, sec := range [][]dns.RR{req.Answer, req.Ns, req.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeTSIG {
				n++
			}
		}
	}
	return n, len(req.Extra) > 0 && req.Extra[len(req.Extra)-1].Header().Rrtype == dns.TypeTSIG
}

// checkTSIGAnswer checks resp, the answer to req, which carries tsigs TSIG
// records (last one the last additional record when last): a query with
// one TSIG, last, gets NOTAUTH with an unsigned TSIG of error BADKEY for
// the query's key (RFC 8945 §5.2.1, §5.3.2), one with a TSIG elsewhere or
// more than one FORMERR (§5.2), unless an earlier check answers it (a
// malformed question or OPT, an opcode other than QUERY); none answers
// with a TSIG.
func checkTSIGAnswer(t *testing.T, req, resp *dns.Msg, tsigs int, last bool) {
	t.Helper()
	rtsig := resp.IsTsig()
	if tsigs == 0 {
		if rtsig != nil {
			t.Fatalf("a TSIG in the answer to an unsigned query: %s", resp)
		}
		return
	}
	switch resp.Rcode {
	case dns.RcodeFormatError, dns.RcodeNotImplemented, dns.RcodeBadVers:
		if rtsig != nil {
			t.Fatalf("%s with a TSIG: %s", dns.RcodeToString[resp.Rcode], resp)
		}
		return
	case dns.RcodeNotAuth:
	default:
		t.Fatalf("a query carrying %d TSIG records (last %v) answered %s: %s", tsigs, last, dns.RcodeToString[resp.Rcode], resp)
	}
	if tsigs != 1 || !last {
		t.Fatalf("NOTAUTH to a query carrying %d TSIG records (last %v), not FORMERR (RFC 8945 §5.2)", tsigs, last)
	}
	qtsig := req.Extra[len(req.Extra)-1].(*dns.TSIG)
	if rtsig == nil || rtsig.Error != dns.RcodeBadKey || rtsig.MACSize != 0 || rtsig.MAC != "" ||
		!strings.EqualFold(rtsig.Hdr.Name, qtsig.Hdr.Name) || rtsig.OrigId != qtsig.OrigId || rtsig.Algorithm != qtsig.Algorithm {
		t.Fatalf("NOTAUTH without the unsigned BADKEY TSIG for %v: %s", qtsig, resp)
	}
}
