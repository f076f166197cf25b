package dnswire

import (
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// FuzzWithout: for any message Walk reads through and any records left
// out (leaveOut, a bit a record, the 64th wrapping round), Without gives
// the question as it was and each record kept, in order, with its names
// written out in full: the names miekg/dns reads (UnpackDomainName,
// packed again uncompressed), the other octets as they were, and its
// counts; Walk reads it through. It fails only for a message Walk does
// not read, or when the names in full make a record's RDATA or the
// message longer than 65,535 octets.
func FuzzWithout(f *testing.F) {
	for _, rrs := range [][]string{
		{"www.example.org. 300 IN RRSIG MX 8 3 300 20300101000000 20200101000000 1 sig.example.net. AAAA",
			"www.example.org. 300 IN MX 10 mail.sig.example.net.",
			"www.example.org. 300 IN HTTPS 1 svc.sig.example.net. alpn=h2",
			"www.example.org. 300 IN NAPTR 100 10 \"s\" \"SIP+D2U\" \"\" _sip._udp.sig.example.net.",
			"www.example.org. 300 IN A 192.0.2.1",
			"example.org. 300 IN NSEC next.sig.example.net. A RRSIG",
			"example.org. 300 IN SOA ns.next.sig.example.net. host.example.org. 1 3600 600 86400 60"},
		{"www.example.org. 60 IN CNAME a.www.example.org.", "a.www.example.org. 60 IN AAAA 2001:db8::1",
			"a.www.example.org. 60 IN TXT \"x\"", "_s._tcp.www.example.org. 60 IN SRV 1 2 3 a.www.example.org.",
			"www.example.org. 60 IN RP a.www.example.org. b.www.example.org.", "www.example.org. 60 IN PX 1 a.www.example.org. x.example.org."},
	} {
		m := new(dns.Msg)
		m.SetQuestion("www.example.org.", dns.TypeMX)
		m.Response = true
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			require.NoError(f, err)
			m.Answer = append(m.Answer, rr)
		}
		m.SetEdns0(1232, true)
		m.Compress = true
		b, err := m.Pack()
		require.NoError(f, err)
		for _, leaveOut := range []uint64{0, 1, 0x55, 0xAA, ^uint64(0)} {
			f.Add(b, leaveOut)
		}
	}
	f.Fuzz(func(t *testing.T, msg []byte, leaveOut uint64) {
		q, ok := ReadQuestion(msg)
		if !ok {
			return
		}
		if !Walk(msg, q.End, func(Record) bool { return true }) {
			_, ok := Without(msg, func(Record) bool { return false })
			require.False(t, ok, "a message Walk does not read")
			return
		}
		var kept []Record
		i := 0
		out, ok := Without(msg, func(r Record) bool {
			drop := leaveOut>>(i%64)&1 == 1
			i++
			if !drop {
				kept = append(kept, r)
			}
			return drop
		})

		want := append([]byte(nil), msg[:q.End]...)
		var counts [4]uint16
		fits := true
		for _, r := range kept {
			want, _ = appendFullName(t, want, msg, r.Off)
			want = append(want, msg[r.TTLOff-4:r.TTLOff+4]...)
			rdata := fullRdata(t, msg, r)
			fits = fits && len(rdata) <= 0xFFFF
			want = binary.BigEndian.AppendUint16(want, uint16(len(rdata)))
			want = append(want, rdata...)
			counts[r.Section]++
		}
		if !fits || len(want) > 0xFFFF {
			require.False(t, ok, "longer than a message may be")
			return
		}
		require.True(t, ok)
		for sec := Answer; sec <= Additional; sec++ {
			binary.BigEndian.PutUint16(want[4+2*sec:], counts[sec])
		}
		require.Equal(t, want, out)
		n := 0
		require.True(t, Walk(out, q.End, func(Record) bool { n++; return true }), "Walk reads it")
		require.Equal(t, len(kept), n)
	})
}

// appendFullName appends the name at off in msg, as miekg/dns reads it,
// uncompressed, and returns where it ends in msg.
func appendFullName(t *testing.T, out, msg []byte, off int) ([]byte, int) {
	name, end, err := dns.UnpackDomainName(msg, off)
	require.NoError(t, err, "a name Walk read")
	b := make([]byte, 256)
	n, err := dns.PackDomainName(name, b, 0, nil, false)
	require.NoError(t, err)
	return append(out, b[:n]...), end
}

// fullRdata is r's RDATA with the names rdataLayout places in it written
// out in full.
func fullRdata(t *testing.T, msg []byte, r Record) []byte {
	skip, names, _, res := rdataLayout(msg, r)
	require.Equal(t, read, res, "a record Walk read")
	if names == 0 {
		return append([]byte(nil), msg[r.RdOff:r.End]...)
	}
	b := append([]byte(nil), msg[r.RdOff:r.RdOff+skip]...)
	off := r.RdOff + skip
	for range names {
		b, off = appendFullName(t, b, msg[:r.End], off)
	}
	return append(b, msg[off:r.End]...)
}
