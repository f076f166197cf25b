package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPackQueryPadding: every query is padded to a multiple of 128 octets
// (RFC 8467 §4.1), whatever its length, keeping the client's EDNS and
// replacing a Padding option it already had; the query itself is not
// changed.
func TestPackQueryPadding(t *testing.T) {
	cookie := &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}
	for _, tc := range []struct {
		name          string
		q             func() *dns.Msg
		dropKeepalive bool
		wantOptions   []uint16 // the OPT's options in order, Padding last
		wantSize      uint16
	}{
		{"no edns", func() *dns.Msg { return clientQuery("a.example.", true) }, false, []uint16{dns.EDNS0PADDING}, ednsNoOPTSize},
		{"edns", func() *dns.Msg { return clientQuery("a.example.", false) }, false, []uint16{dns.EDNS0PADDING}, 1232},
		{"cookie kept", func() *dns.Msg {
			q := clientQuery("a.example.", false)
			q.IsEdns0().Option = append(q.IsEdns0().Option, cookie)
			return q
		}, false, []uint16{dns.EDNS0COOKIE, dns.EDNS0PADDING}, 1232},
		{"client padding replaced", func() *dns.Msg {
			q := clientQuery("a.example.", false)
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 300)})
			return q
		}, false, []uint16{dns.EDNS0PADDING}, 1232},
		{"keepalive dropped for doq", func() *dns.Msg {
			q := clientQuery("a.example.", false)
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
			return q
		}, true, []uint16{dns.EDNS0PADDING}, 1232},
		{"keepalive kept for dot", func() *dns.Msg {
			q := clientQuery("a.example.", false)
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
			return q
		}, false, []uint16{dns.EDNS0TCPKEEPALIVE, dns.EDNS0PADDING}, 1232},
		{"exactly one block before padding", func() *dns.Msg {
			// 12 header + name + 4 + 11 OPT + 4 option header = 128 with a
			// 97-octet name: no padding octets needed, the option still sent.
			q := new(dns.Msg)
			q.SetQuestion(strings.Repeat("a", 63)+"."+strings.Repeat("b", 31)+".", dns.TypeA)
			q.SetEdns0(1232, false)
			return q
		}, false, []uint16{dns.EDNS0PADDING}, 1232},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q()
			q.Id = 4242
			before := q.String()
			wq, err := packPadded(q, tc.dropKeepalive)
			require.NoError(t, err)
			assert.Equal(t, before, q.String(), "q is not modified")
			assert.Zero(t, len(wq.wire)%queryPaddingBlock, "%d octets", len(wq.wire))
			sent := new(dns.Msg)
			require.NoError(t, sent.Unpack(wq.wire))
			assert.Zero(t, sent.Id)
			assert.Equal(t, q.Question, sent.Question)
			opt := sent.IsEdns0()
			require.NotNil(t, opt)
			var codes []uint16
			for _, o := range opt.Option {
				codes = append(codes, o.Option())
			}
			assert.Equal(t, tc.wantOptions, codes)
			assert.Equal(t, tc.wantSize, opt.UDPSize())
			assert.Equal(t, q.IsEdns0() != nil && q.IsEdns0().Do(), opt.Do())
			assert.Equal(t, q.IsEdns0() != nil, wq.hadOPT)
			// withID frames it and sets the ID, leaving wire as it was.
			framed := wq.withID(0xabcd, true)
			assert.Equal(t, len(wq.wire), int(framed[0])<<8|int(framed[1]))
			assert.Equal(t, []byte{0xab, 0xcd}, framed[2:4])
			assert.Equal(t, wq.wire[2:], framed[4:])
			assert.Equal(t, []byte{0, 0}, wq.wire[:2])
		})
	}
}

// TestPackQueryLengths: padding fills the block for query lengths across
// several blocks.
func TestPackQueryLengths(t *testing.T) {
	for n := 1; n <= 63; n++ {
		for _, labels := range []int{1, 2, 3} {
			name := strings.Repeat(strings.Repeat("x", n)+".", labels)
			for _, noEDNS := range []bool{false, true} {
				wq, err := packPadded(clientQuery(name, noEDNS), false)
				require.NoError(t, err)
				assert.Zero(t, len(wq.wire)%queryPaddingBlock, "%s: %d octets", name, len(wq.wire))
			}
		}
	}
}

// TestWireAnswer: an answer is checked against the query and loses what
// belonged to the encrypted hop.
func TestWireAnswer(t *testing.T) {
	q := clientQuery("a.example.", false)
	q.Id = 99
	wq, err := packPadded(q, true)
	require.NoError(t, err)
	noEDNS := clientQuery("a.example.", true)
	noEDNS.Id = 99
	wqNoEDNS, err := packPadded(noEDNS, false)
	require.NoError(t, err)
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		require.NoError(t, err)
		return b
	}
	reply := func(from *dns.Msg, id uint16, edit func(*dns.Msg)) []byte {
		m := answerWithA(from)
		m.Id = id
		if edit != nil {
			edit(m)
		}
		return pack(m)
	}
	for _, tc := range []struct {
		name    string
		wq      *wireQuery
		b       []byte
		id      uint16
		wantErr string
	}{
		{"good", wq, reply(q, 7, nil), 7, ""},
		{"another ID", wq, reply(q, 8, nil), 7, "answer with ID 8 to a query with ID 7"},
		{"another name", wq, reply(clientQuery("b.example.", false), 7, nil), 7, "answer for another question"},
		{"same name in other case", wq, reply(clientQuery("A.EXAMPLE.", false), 7, nil), 7, ""},
		{"another type", wq, reply(q, 7, func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), 7, "answer for another question"},
		{"another class", wq, reply(q, 7, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), 7, "answer for another question"},
		{"a second question", wq, reply(q, 7, func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "tiktok.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}), 7, "answer for another question"},
		{"not a response", wq, reply(q, 7, func(m *dns.Msg) { m.Response = false }), 7, "a query came back"},
		{"servfail without question", wq, reply(q, 7, func(m *dns.Msg) { m.Rcode = dns.RcodeServerFailure; m.Question = nil }), 7, ""},
		{"noerror without question", wq, reply(q, 7, func(m *dns.Msg) { m.Question = nil }), 7, "answer for another question"},
		{"truncated message", wq, reply(q, 7, nil)[:20], 7, "malformed answer"},
		{"keepalive over doq", wq, reply(q, 7, func(m *dns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE, Timeout: 100})
		}), 7, "edns-tcp-keepalive"},
		{"keepalive of one octet over doq", wq, reply(q, 7, func(m *dns.Msg) {
			// Left out of the answer as parsed (UnpackAnswer), still seen.
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0TCPKEEPALIVE, Data: []byte{1}})
		}), 7, "edns-tcp-keepalive"},
		{"EXPIRE of 3 octets", wq, reply(q, 7, func(m *dns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0EXPIRE, Data: []byte{0, 0, 1}})
		}), 7, ""},
		{"no edns asked", wqNoEDNS, reply(clientQuery("a.example.", false), 7, nil), 7, ""},
		{"no edns asked, extended rcode", wqNoEDNS, reply(clientQuery("a.example.", false), 7, func(m *dns.Msg) { m.Rcode = dns.RcodeBadCookie }), 7, "extended RCODE 23"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.wq.answer(tc.b, tc.id)
			if tc.wantErr != "" {
				assert.ErrorIs(t, err, ErrProtocol)
				assert.ErrorContains(t, err, tc.wantErr)
				assert.Nil(t, resp)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, uint16(99), resp.Id, "the caller's ID")
			assert.Nil(t, paddingOf(resp))
			if tc.wq.hadOPT {
				assert.NotNil(t, resp.IsEdns0())
			} else {
				assert.Nil(t, resp.IsEdns0(), "the OPT added for padding is taken out")
			}
		})
	}
}

func TestLoadRoots(t *testing.T) {
	pki := newPKI(t)
	ca, err := os.ReadFile(pki.caFile)
	require.NoError(t, err)
	_, key := pki.files("good")
	keyPEM, err := os.ReadFile(key)
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	for _, tc := range []struct {
		name    string
		file    string
		wantErr string
	}{
		{"pem", pki.caFile, ""},
		{"bom and crlf", write("bom.pem", append([]byte("\ufeff"), []byte(strings.ReplaceAll(string(ca), "\n", "\r\n"))...)), ""},
		{"system only", "", ""},
		{"missing", filepath.Join(dir, "nope.pem"), "reading upstream_ca"},
		{"empty", write("empty.pem", nil), "no PEM certificate in it"},
		{"key, not certificate", write("key.pem", append(append([]byte{}, ca...), keyPEM...)), "PEM block 2 is a EC PRIVATE KEY, not a CERTIFICATE"},
		{"bad certificate", write("bad.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")), "PEM block 1"},
		// pem.Decode passes over a block that does not decode: each
		// bundle was loaded with the roots around the broken block.
		{"cut short", write("cut.pem", append(append([]byte{}, ca...), ca[:len(ca)/2]...)), "PEM block 2 does not decode"},
		{"END line missing, a root after", write("noend.pem", []byte(strings.Replace(string(ca), "-----END CERTIFICATE-----", "", 1)+string(ca))),
			"PEM block 1 does not decode"},
		{"base64 broken, a root after", write("b64.pem", []byte(strings.Replace(string(ca), "\n", "\n!!!!\n", 2)+string(ca))),
			"PEM block 1 does not decode"},
		{"text between roots", write("text.pem", []byte("# first\n"+string(ca)+"# second\n"+string(ca))), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := LoadRoots(tc.file)
			if tc.wantErr != "" {
				assert.ErrorContains(t, err, tc.wantErr)
				assert.Nil(t, pool)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, pool)
		})
	}
}
