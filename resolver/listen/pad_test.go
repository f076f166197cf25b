package listen

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoQFrame: doqFrame pads the answer to an unpadded query in its
// octets when its OPT record is its last record and has no Padding option
// (paddingRoom), and any other with an OPT record as padReply does, by
// parsing and packing it again; either way the answer is the same but for
// one Padding option that takes it to a multiple of 468 octets (RFC 8467
// §4.1), after its length (RFC 9250 §4.2). An answer without an OPT
// record, or one that padding would take past 65,535 octets, is left as
// it is.
func TestDoQFrame(t *testing.T) {
	reply := func(edit func(m *dns.Msg)) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("www.example.org.", dns.TypeA)
		m.Response, m.RecursionAvailable = true, true
		rr, err := dns.NewRR("www.example.org. 300 IN A 192.0.2.1")
		require.NoError(t, err)
		m.Answer = append(m.Answer, rr)
		m.SetEdns0(1232, true)
		if edit != nil {
			edit(m)
		}
		return m
	}
	glue, err := dns.NewRR("ns.example.org. 300 IN A 192.0.2.53")
	require.NoError(t, err)
	// txt is a TXT record of strings taking n octets of RDATA, n > 0.
	txt := func(n int) dns.RR {
		rr := &dns.TXT{Hdr: dns.RR_Header{Name: "www.example.org.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}}
		for ; n > 256; n -= 256 {
			rr.Txt = append(rr.Txt, string(make([]byte, 255)))
		}
		rr.Txt = append(rr.Txt, string(make([]byte, n-1)))
		return rr
	}
	tests := []struct {
		name     string
		m        *dns.Msg
		inOctets bool // paddingRoom takes it
		padded   bool
	}{
		{name: "OPT last, no option", m: reply(nil), inOctets: true, padded: true},
		{name: "OPT last, with an EDE", m: reply(func(m *dns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeBlocked, ExtraText: "x"})
		}), inOctets: true, padded: true},
		{name: "OPT before another additional record", m: reply(func(m *dns.Msg) { m.Extra = append(m.Extra, glue) }), padded: true},
		// The TXT record after the OPT record reads as one whole option:
		// a pointer (an option's code), TYPE TXT (its length 16), then
		// CLASS, TTL, RDLENGTH and 8 octets of RDATA.
		{name: "OPT before a record that reads as options", m: reply(func(m *dns.Msg) {
			m.Extra = append(m.Extra, &dns.TXT{Hdr: dns.RR_Header{Name: "www.example.org.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
				Txt: []string{"1234567"}})
		}), padded: true},
		{name: "OPT with a Padding option already", m: reply(func(m *dns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 7)})
		}), padded: true},
		// An upstream's padded answer with an EDE: the EDE is kept.
		{name: "OPT with an EDE and a Padding option already", m: reply(func(m *dns.Msg) {
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeStaleAnswer},
				&dns.EDNS0_PADDING{Padding: make([]byte, 7)})
		}), padded: true},
		// Packed again compressed, as it came: 40 owner names of 17
		// octets packed whole would take it blocks further.
		{name: "many records of one name, OPT not last", m: reply(func(m *dns.Msg) {
			for i := range 40 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "www.example.org.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
					A: []byte{192, 0, 2, byte(i + 2)}})
			}
			m.Extra = append(m.Extra, glue)
		}), padded: true},
		{name: "no OPT", m: reply(func(m *dns.Msg) { m.Extra = nil })},
		// 65,530 octets: 65,520 is the last multiple of 468 that fits.
		{name: "past 65,535 octets once padded", m: reply(func(m *dns.Msg) {
			m.Compress = true
			m.Answer = append(m.Answer, txt(1))
			m.Answer[len(m.Answer)-1] = txt(1 + 65530 - m.Len())
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.m.Compress = true
			b, err := tc.m.Pack()
			require.NoError(t, err)
			if !tc.padded && tc.m.IsEdns0() != nil {
				require.Equal(t, 65530, len(b))
			}
			_, _, ok := paddingRoom(b)
			assert.Equal(t, tc.inOctets, ok, "padded in the octets")
			frame := doqFrame(b)
			if tc.inOctets && !raceEnabled {
				// Whether or not the query was padded (every DoQ
				// client must pad its queries, RFC 9250 §5.4); and
				// padReply's answer to a padded query over DoT and
				// DoH alike.
				assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { doqFrame(b) }), "the frame is the one allocation")
				assert.Equal(t, 1.0, testing.AllocsPerRun(100, func() { padReply(true, b) }), "the padded answer is the one allocation")
			}
			if tc.padded {
				assert.Equal(t, frame[2:], padReply(true, b), "padReply pads as doqFrame does")
			}
			require.GreaterOrEqual(t, len(frame), 2)
			out := frame[2:]
			assert.Equal(t, len(out), int(binary.BigEndian.Uint16(frame)), "the length first")
			if !tc.padded {
				assert.Equal(t, b, out, "left as it was")
				return
			}
			assert.Zero(t, len(out)%responsePaddingBlock, "padded to %d octets", len(out))
			assert.Zero(t, len(out)%468, "padded to %d octets, not a multiple of RFC 8467's 468", len(out))
			assert.Less(t, len(out), len(b)+4+responsePaddingBlock, "padded past the next block")
			got := new(dns.Msg)
			require.NoError(t, got.Unpack(out))
			pads := 0
			for _, o := range got.IsEdns0().Option {
				if o.Option() == dns.EDNS0PADDING {
					pads++
				}
			}
			assert.Equal(t, 1, pads, "one Padding option")
			want := tc.m.Copy()
			for _, m := range []*dns.Msg{want, got} {
				opt := m.IsEdns0()
				opt.Option = slices.DeleteFunc(opt.Option, func(o dns.EDNS0) bool { return o.Option() == dns.EDNS0PADDING })
			}
			assert.Equal(t, want.String(), got.String(), "the same reply but for its padding")
		})
	}
}
