package resolver

import (
	"encoding/binary"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// shapeConfig is a fence on 127.0.160.0/24 whose one policy blocks
// tiktok.txt for the clients of 127.0.160.0/25; those of the range's upper
// half are in no policy (an answer miekg/dns does not read is theirs).
const shapeConfig = `
listen: ["127.0.0.1:0"]
upstreams: {{upstreams}}
upstream_timeout: 2s
allowed_clients: ["127.0.160.0/24"]
log: {queries: all}
policies:
  - name: devices
    clients: ["127.0.160.0/25"]
    block: ["tiktok.txt"]
`

// startShapeFence serves shapeConfig on ip, with its wire path counting
// the queries it takes, against the upstream up.
func startShapeFence(t *testing.T, ip, up string) (*fence, *wireCounted) {
	t.Helper()
	var w *wireCounted
	f := startFenceAtServing(t, ip, zaptest.NewLogger(t), func(h *Handler) listen.Handler {
		w = &wireCounted{Handler: h}
		return w
	}, shapeConfig, testFiles, up)
	return f, w
}

// withOPTData is m packed with its OPT's RDATA replaced by data (RDLENGTH
// rdlength): options of any shape, whole or not.
func withOPTData(t *testing.T, m *dns.Msg, rdlength uint16, data []byte) []byte {
	t.Helper()
	require.NotNil(t, m.IsEdns0())
	b, err := m.Pack()
	require.NoError(t, err)
	require.Len(t, m.IsEdns0().Option, 0, "the OPT is the datagram's last 11 octets")
	binary.BigEndian.PutUint16(b[len(b)-2:], rdlength)
	return append(b, data...)
}

// TestWirePathTakesCommonQueries: the queries stub resolvers and dig
// send take the wire path (readWireQuery), and are answered there as the
// message path answers them: names in both cases with digits, '-' and
// '_' (every edge of the octets it reads as text); no OPT, or an OPT with
// no option, an empty NSID (dig +nsid), a cookie and padding together
// (dig's cookie, a padding client), and a query of maxWireQuery octets
// exactly, the largest it takes. One octet more is left to the listener.
func TestWirePathTakesCommonQueries(t *testing.T) {
	needLoopback(t, "127.0.160.1", "127.0.160.2", "127.0.160.3")
	up := startUpstreamAt(t, "127.0.160.2", nil)
	f, w := startShapeFence(t, "127.0.160.1", up.addr)

	nsid := question("nsid.example.org.", dns.TypeA, true)
	nsid.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_NSID{Code: dns.EDNS0NSID}}
	two := question("two-options.example.org.", dns.TypeA, true)
	two.IsEdns0().Option = []dns.EDNS0{
		&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&dns.EDNS0_PADDING{Padding: make([]byte, 7)},
	}
	// Padding of a length that makes the datagram n octets.
	padded := func(n int) []byte {
		m := question("padded.example.org.", dns.TypeA, true)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{}}
		b, err := m.Pack()
		require.NoError(t, err)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, n-len(b))}}
		b, err = m.Pack()
		require.NoError(t, err)
		require.Len(t, b, n)
		return b
	}
	for _, tc := range []struct {
		name  string
		q     []byte
		taken bool
	}{
		{"every edge of the name's octets", packed(question("AZaz09-_.Example.ORG.", dns.TypeA, false)), true},
		{"no OPT", packed(question("plain.example.org.", dns.TypeA, false)), true},
		{"OPT without options", packed(question("opt.example.org.", dns.TypeA, true)), true},
		{"empty NSID", packed(nsid), true},
		{"cookie and padding", packed(two), true},
		{"maxWireQuery octets", padded(maxWireQuery), true},
		{"one octet more", padded(maxWireQuery + 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := new(dns.Msg)
			require.NoError(t, req.Unpack(tc.q))
			before := w.taken.Load()
			b := askRaw(t, f.addr, "127.0.160.3", tc.q)
			assert.Equal(t, tc.taken, w.taken.Load() > before, "taken by the wire path")
			r := new(dns.Msg)
			require.NoError(t, r.Unpack(b))
			assert.Equal(t, req.Id, r.Id)
			assert.Equal(t, dns.RcodeSuccess, r.Rcode)
			assert.Equal(t, req.Question, r.Question)
			if assert.Len(t, r.Answer, 1) {
				assert.Equal(t, "192.0.2.1", r.Answer[0].(*dns.A).A.String())
			}
			assert.Equal(t, req.IsEdns0() != nil, r.IsEdns0() != nil, "an OPT for an OPT")
		})
	}
}

// TestWirePathLeavesCutOptions: a query whose OPT's options are not whole
// is the listener's, which answers it FORMERR as it answers any message
// miekg/dns cannot read (RFC 6891 §7): options claimed by RDLENGTH and
// not sent, an option header cut short (2 or 3 octets of its 4), an
// option's data one octet short. The wire path takes none of them, reads
// nothing past the datagram, and the fence answers the next query.
func TestWirePathLeavesCutOptions(t *testing.T) {
	needLoopback(t, "127.0.160.4", "127.0.160.5", "127.0.160.6")
	up := startUpstreamAt(t, "127.0.160.5", nil)
	f, w := startShapeFence(t, "127.0.160.4", up.addr)
	q := question("cut.example.org.", dns.TypeA, true)
	for _, tc := range []struct {
		name     string
		rdlength uint16
		data     []byte
	}{
		{"four octets claimed, none sent", 4, nil},
		{"half an option header", 2, []byte{0, byte(dns.EDNS0PADDING)}},
		{"three octets of an option header", 3, []byte{0, byte(dns.EDNS0PADDING), 0}},
		{"data one octet short", 6, []byte{0, byte(dns.EDNS0PADDING), 0, 3, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.taken.Load()
			b := askRaw(t, f.addr, "127.0.160.6", withOPTData(t, q, tc.rdlength, tc.data))
			assert.Equal(t, before, w.taken.Load(), "not the wire path's")
			require.GreaterOrEqual(t, len(b), 4)
			assert.Equal(t, q.Id, binary.BigEndian.Uint16(b))
			assert.Equal(t, dns.RcodeFormatError, int(b[3]&0xF), "FORMERR")
			r := ask(t, f.addr, "127.0.160.6", "udp", question("after.example.org.", dns.TypeA, true))
			assert.Equal(t, dns.RcodeSuccess, r.Rcode, "the fence still answers")
		})
	}
}

// TestWirePathTrailingOctetsDecided: a question with an octet after it
// and no OPT (ARCOUNT 0) is not the wire path's, which would read no name
// for it; the blocked name it asks is blocked whichever path answers it,
// and the name allowed is answered for itself.
func TestWirePathTrailingOctetsDecided(t *testing.T) {
	needLoopback(t, "127.0.160.7", "127.0.160.8", "127.0.160.9")
	up := startUpstreamAt(t, "127.0.160.8", nil)
	f, w := startShapeFence(t, "127.0.160.7", up.addr)
	for _, tc := range []struct {
		name  string
		rcode int
	}{
		{"www.tiktok.com.", dns.RcodeNameError},
		{"trailing.example.org.", dns.RcodeSuccess},
		{"www.tiktok.com.", dns.RcodeNameError},
	} {
		m := question(tc.name, dns.TypeA, false)
		before := w.taken.Load()
		b := askRaw(t, f.addr, "127.0.160.9", append(packed(m), 0))
		assert.Equal(t, before, w.taken.Load(), "%s: not the wire path's", tc.name)
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(b))
		assert.Equal(t, tc.rcode, r.Rcode, tc.name)
		assert.Equal(t, m.Question, r.Question, tc.name)
	}
	assert.Equal(t, 1, up.distinct(), "only the allowed name went upstream")
}

// TestWireQueryDOIsTheDOBit: the DO bit is the top bit of the OPT's flags
// (RFC 3225 §3); a query with every other flag of its OPT (Z) set and DO
// clear is no DNSSEC query: it is asked upstream without DO, and
// answered without it, as the message path reads it.
func TestWireQueryDOIsTheDOBit(t *testing.T) {
	needLoopback(t, "127.0.160.10", "127.0.160.11", "127.0.160.12")
	up := startUpstreamAt(t, "127.0.160.11", nil)
	f, w := startShapeFence(t, "127.0.160.10", up.addr)
	m := question("zbit.example.org.", dns.TypeA, true)
	m.IsEdns0().SetZ(0x7FFF) // every flag but DO
	b := askRaw(t, f.addr, "127.0.160.12", packed(m))
	assert.Equal(t, int64(1), w.taken.Load(), "the wire path's")
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(b))
	require.NotNil(t, r.IsEdns0())
	assert.False(t, r.IsEdns0().Do(), "no DO in the answer")
	var asked []*dns.Msg
	for _, s := range up.queries() {
		if s.msg.Question[0].Name != "." { // the root NS probe aside
			asked = append(asked, s.msg)
		}
	}
	require.Len(t, asked, 1)
	require.NotNil(t, asked[0].IsEdns0())
	assert.False(t, asked[0].IsEdns0().Do(), "no DO upstream")
}

// TestWireMissRDIsItsOwn: an answer to a query without RD (RFC 1035
// §4.1.1), which the upstream may give from what it holds, is cached
// apart from the answer to one with RD (cacheKey): on the wire path, the
// one does not answer the other, whichever comes first.
func TestWireMissRDIsItsOwn(t *testing.T) {
	needLoopback(t, "127.0.160.13", "127.0.160.14", "127.0.160.15")
	// The upstream recurses only when asked to; asked without RD, it has
	// nothing to give but an empty answer (with its zone's SOA: cached).
	up := startUpstreamAt(t, "127.0.160.14", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		if r.RecursionDesired {
			return defaultAnswer(w, r)
		}
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionDesired = false
		m.Ns = []dns.RR{mustRR("example.org. 60 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 60")}
		return m
	})
	f, w := startShapeFence(t, "127.0.160.13", up.addr)
	query := func(name string, rd bool) *dns.Msg {
		t.Helper()
		m := question(name, dns.TypeA, true)
		m.RecursionDesired = rd
		r := new(dns.Msg)
		require.NoError(t, r.Unpack(askRaw(t, f.addr, "127.0.160.15", packed(m))))
		assert.Equal(t, rd, r.RecursionDesired)
		return r
	}
	for _, first := range []bool{false, true} {
		name := "rd0.example.org."
		if first {
			name = "rd1.example.org."
		}
		r := query(name, first)
		r2 := query(name, !first)
		norec, rec := r, r2
		if first {
			norec, rec = r2, r
		}
		assert.Empty(t, norec.Answer, "%s: the answer without RD", name)
		assert.Len(t, rec.Answer, 1, "%s: the answer with RD", name)
		// Each again: from the cache now.
		assert.Empty(t, query(name, false).Answer, name)
		assert.Len(t, query(name, true).Answer, 1, name)
	}
	assert.Equal(t, 4, up.distinct(), "two names, each with RD and without")
	assert.Equal(t, int64(8), w.taken.Load())
}

// streamRecorder is a detachedRecorder of a TCP connection.
type streamRecorder struct{ *detachedRecorder }

func (streamRecorder) Transport() string { return listen.TCP }

// TestServeWireLeavesToTheListener: ServeWire takes only UDP queries,
// and only once the handler has a snapshot; it leaves the others to the
// listener (handled false, nothing written): a query over TCP, which the
// listeners send the message path only, and any query before the first
// snapshot (NewHandler with none, as dnsfence's main makes it; no
// listener starts without one, listen.Start needing its rules).
func TestServeWireLeavesToTheListener(t *testing.T) {
	needLoopback(t, "127.0.160.16", "127.0.160.17")
	up := startUpstreamAt(t, "127.0.160.17", nil)
	f, _ := startShapeFence(t, "127.0.160.16", up.addr)
	early := NewHandler(zaptest.NewLogger(t), nil, NewMetrics(prometheus.NewRegistry()))
	for _, tc := range []struct {
		name string
		h    *Handler
	}{
		{name: "tcp", h: f.handler},
		{name: "no snapshot", h: early},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newDetachedRecorder()
			var rw listen.ResponseWriter = w
			if tc.name == "tcp" {
				rw = streamRecorder{w}
			}
			var resume func()
			var handled bool
			require.NotPanics(t, func() {
				resume, handled = tc.h.ServeWire(rw, packed(question("left.example.org.", dns.TypeA, true)))
			})
			assert.False(t, handled, "the listener's")
			assert.Nil(t, resume)
			w.mu.Lock()
			defer w.mu.Unlock()
			assert.Empty(t, w.written)
			assert.Zero(t, w.detached)
		})
	}
	assert.Zero(t, up.distinct())
}

// TestWirePathLeavesOtherAdditionalRecords: a query whose one additional
// record is not an OPT (an owner other than the root; here one whose
// octets after its first would read as TYPE 41 and a whole option, were
// the root octet not checked) is the listener's: answered as the message
// path answers it, without EDNS.
func TestWirePathLeavesOtherAdditionalRecords(t *testing.T) {
	needLoopback(t, "127.0.160.66", "127.0.160.67", "127.0.160.68")
	up := startUpstreamAt(t, "127.0.160.67", nil)
	f, w := startShapeFence(t, "127.0.160.66", up.addr)
	q := question("additional.example.org.", dns.TypeA, false)
	b := packed(q)
	b[11] = 1 // ARCOUNT
	// Owner \000)X. (03 00 29 58 00), TYPE 65280, CLASS IN, TTL 0x0008000C
	// (as an OPT read from the owner's first octet: options to the end,
	// the first of code 12, padding), RDLENGTH 4, RDATA.
	b = append(b, 3, 0, 0x29, 'X', 0, 0xFF, 0, 0, 1, 0, 8, 0, 12, 0, 4, 1, 2, 3, 4)
	req := new(dns.Msg)
	require.NoError(t, req.Unpack(b), "a query miekg/dns reads")
	require.Nil(t, req.IsEdns0())
	got := new(dns.Msg)
	require.NoError(t, got.Unpack(askRaw(t, f.addr, "127.0.160.68", b)))
	assert.Zero(t, w.taken.Load(), "not the wire path's")
	assert.Equal(t, q.Question, got.Question)
	assert.Nil(t, got.IsEdns0(), "no OPT asked, none given")
}
