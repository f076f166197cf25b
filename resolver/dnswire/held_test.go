package dnswire

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heldModel is what the RDATA of rr takes unpacked by miekg/dns v1.1.73,
// as held.go counts it, from the fields of rr unpacked (not from its
// octets): its strings' lengths (text, hexadecimal, base64, base32),
// typeBit a type of a bitmap, the fixed fields as their octets; rdlen is
// its RDATA's octets, for the types counted at OpaqueFactor an octet. ok
// is false for a type the model does not cover.
func heldModel(rr dns.RR, rdlen int) (held int, ok bool) {
	// strs is a list of character-strings appended one at a time: their
	// text, a string header each in a slice grown by doubling.
	// A string with an octet escaped is held in a buffer grown as it is
	// written, three times its text at most.
	strs := func(ss []string) int {
		n := 0
		for _, s := range ss {
			if strings.Contains(s, `\`) {
				n += 3 * len(s)
			} else {
				n += len(s)
			}
		}
		return n + stringHeader*(1<<bits.Len(uint(max(len(ss), 1)-1)))
	}
	bitmap := func(types []uint16) int { return typeBit * len(types) }
	switch rr := rr.(type) {
	case *dns.TXT:
		return strs(rr.Txt), true
	case *dns.SPF:
		return strs(rr.Txt), true
	case *dns.AVC:
		return strs(rr.Txt), true
	case *dns.NINFO:
		return strs(rr.ZSData), true
	case *dns.RESINFO:
		return strs(rr.Txt), true
	case *dns.HINFO:
		return len(rr.Cpu) + len(rr.Os), true
	case *dns.DNSKEY:
		return 4 + len(rr.PublicKey), true
	case *dns.CDNSKEY:
		return 4 + len(rr.PublicKey), true
	case *dns.KEY:
		return 4 + len(rr.PublicKey), true
	case *dns.RKEY:
		return 4 + len(rr.PublicKey), true
	case *dns.OPENPGPKEY:
		return len(rr.PublicKey), true
	case *dns.DHCID:
		return len(rr.Digest), true
	case *dns.CERT:
		return 5 + len(rr.Certificate), true
	case *dns.ZONEMD:
		return 6 + len(rr.Digest), true
	case *dns.LOC:
		return 16, true
	case *dns.URI:
		return 4 + len(rr.Target), true
	case *dns.CAA:
		return 1 + len(rr.Tag) + len(rr.Value), true
	case *dns.DS:
		return 4 + len(rr.Digest), true
	case *dns.CDS:
		return 4 + len(rr.Digest), true
	case *dns.TA:
		return 4 + len(rr.Digest), true
	case *dns.DLV:
		return 4 + len(rr.Digest), true
	case *dns.TLSA:
		return 3 + len(rr.Certificate), true
	case *dns.SMIMEA:
		return 3 + len(rr.Certificate), true
	case *dns.SSHFP:
		return 2 + len(rr.FingerPrint), true
	case *dns.CSYNC:
		return 6 + bitmap(rr.TypeBitMap), true
	case *dns.NSEC3PARAM:
		return 5 + len(rr.Salt), true
	case *dns.NSEC3:
		return 6 + len(rr.Salt) + len(rr.NextDomain) + bitmap(rr.TypeBitMap), true
	case *dns.NSEC:
		return len(rr.NextDomain) + bitmap(rr.TypeBitMap), true
	case *dns.RRSIG:
		return 18 + len(rr.SignerName) + len(rr.Signature), true
	case *dns.SIG:
		return 18 + len(rr.SignerName) + len(rr.Signature), true
	case *dns.PX:
		return 2 + len(rr.Map822) + len(rr.Mapx400), true
	case *dns.NAPTR:
		return 4 + len(rr.Flags) + len(rr.Service) + len(rr.Regexp) + len(rr.Replacement), true
	case *dns.HTTPS:
		return 2 + len(rr.Target) + svcbModel(rr.Value), true
	case *dns.SVCB:
		return 2 + len(rr.Target) + svcbModel(rr.Value), true
	case *dns.RFC3597:
		return len(rr.Rdata), true // hexadecimal
	case *dns.APL, *dns.EUI48, *dns.GPOS:
		return OpaqueFactor * rdlen, true
	}
	return 0, false
}

// svcbModel is what SvcParams take unpacked: svcParam each, and an ALPN
// list's IDs as strings in a slice with room for one every 4 octets of
// the value (at least twice their number), an address hint's addresses
// as net.IP values (a slice header and the address), a port its 2
// octets, no-default-alpn none.
func svcbModel(kvs []dns.SVCBKeyValue) int {
	n := 0
	for _, kv := range kvs {
		n += svcParam
		switch kv := kv.(type) {
		case *dns.SVCBAlpn:
			octets := 0
			for _, id := range kv.Alpn {
				n += len(id)
				octets += 1 + len(id)
			}
			n += stringHeader * max(octets/4, 2*len(kv.Alpn))
		case *dns.SVCBIPv4Hint:
			n += (24 + 4 + 4) * len(kv.Hint)
		case *dns.SVCBIPv6Hint:
			n += (24 + 16) * len(kv.Hint)
		case *dns.SVCBPort:
			n += 2
		case *dns.SVCBNoDefaultAlpn:
		default:
			panic("no model of " + kv.Key().String())
		}
	}
	return n
}

// TestRDATAHeld: Record.Held of a record of each type held.go models
// (rdataHeld, tailHeld) is its owner's text, 10, and its RDATA as
// heldModel counts it from the record miekg/dns unpacks: each type's
// fixed fields, its fields held as text (hexadecimal, base64, base32,
// character-strings), its type bitmap, its SvcParams or EDNS options.
// SIG, PX and NAPTR records read their names after fixed fields of 18,
// 2, and 4 octets and three character-strings (rdataLayout).
// Before, only TestRecordHeld's few types were counted exactly; a Held
// that overcounted (or undercounted below what TestHeldBoundsTheHeap
// measures) the others passed.
func TestRDATAHeld(t *testing.T) {
	const zone = "example.org."
	b64 := "AwEAAagAIKlVZrpC6Ia7gEzahOR+9W29euxhJhVVLOyQbSEW0O8gcCjFFVQUTf6v58fLjwBd0YI0EzrAcQqBGCzh/RStIoO8g0NfnfL2MTJRkxoXbfDaUeVPQuYEhg37NZWAJQ9VnMVDxP/VHL496M/QZxkjf5/Efucp2gaDX6RS6CXpoY68LsvPVjR0ZSwzz1apAzvN9dlzEheX7ICJBBtuA6G3LQpzW5hOA2hzCTMjJPJ8LbqF6dsV6DoBQzgul0sGIcGOYl7OyQdXfZ57relSQageu+ipAdTTJ25AsRTAoub8ONGcLmqrAmRLKBP1dfwhYB4N7knNnulqQxA+Uk1ihz0="
	digest := "E2D3C916F6DEEAC73294E8268FB5885044A833FC5459588F4A9184CFC41A5766"
	rrs := []string{
		zone + ` 60 IN TXT "v=spf1 -all"`,
		zone + ` 60 IN TXT "a" "bc" "def"`, // three strings: a slice of 4
		zone + ` 60 IN TXT "` + strings.Repeat("x", 200) + `"`,
		zone + ` 60 IN TXT "say \"hi\"" "\009tab" "plain"`, // escaped: \" and \009
		zone + ` 60 IN SPF "v=spf1 include:example.net -all" "x"`,
		zone + ` 60 IN AVC "app-name:WOLFGANG|app-class:OAM|business=yes"`,
		zone + ` 60 IN NINFO "first" "second" "third" "fourth" "fifth"`, // five: a slice of 8
		zone + ` 60 IN RESINFO "qnamemin" "exterr=15,16,17" "infourl=https://resolver.example.com/guide"`,
		zone + ` 60 IN HINFO "INTEL-386" "UNIX"`,
		zone + ` 60 IN DNSKEY 257 3 8 ` + b64,
		zone + ` 60 IN CDNSKEY 257 3 8 ` + b64,
		zone + ` 60 IN KEY 256 3 8 ` + b64,
		zone + ` 60 IN RKEY 0 3 8 ` + b64,
		zone + ` 60 IN OPENPGPKEY ` + b64,
		zone + ` 60 IN DHCID AAIBY2/AuCccgoJbsaxcQc9TUapptP69lOjxfNuVAA2kjEA=`,
		zone + ` 60 IN CERT PKIX 12 8 ` + b64,
		zone + ` 60 IN ZONEMD 2018031500 1 1 ` + digest + digest[:32],
		zone + ` 60 IN LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m`,
		zone + ` 60 IN URI 10 1 "https://www.example.org/path/to/something"`,
		zone + ` 60 IN CAA 0 issue "ca.example.net; account=230123"`,
		zone + ` 60 IN CAA 128 iodef "mailto:security@example.org"`,
		zone + ` 60 IN DS 60485 5 2 ` + digest,
		zone + ` 60 IN CDS 60485 5 2 ` + digest,
		zone + ` 60 IN TA 60485 5 1 ` + digest[:40],
		zone + ` 60 IN DLV 60485 5 2 ` + digest,
		"_443._tcp." + zone + ` 60 IN TLSA 3 1 1 ` + digest,
		zone + ` 60 IN SMIMEA 3 1 1 ` + digest,
		zone + ` 60 IN SSHFP 4 2 ` + digest,
		zone + ` 60 IN CSYNC 66 3 A NS AAAA`,
		zone + ` 60 IN NSEC3PARAM 1 0 10 AABBCCDD`,
		zone + ` 60 IN NSEC3 1 1 10 AABBCCDD 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR A NS SOA MX TXT AAAA RRSIG DNSKEY NSEC3PARAM`,
		zone + ` 60 IN NSEC3 1 0 0 - 2T7B4G4VSA5SMI47K61MV5BV1A22BOJR A RRSIG`,
		zone + ` 60 IN NSEC host.` + zone + ` A MX RRSIG NSEC TYPE1234`,
		zone + ` 60 IN RRSIG A 8 2 86400 20250101000000 20240101000000 60485 ` + zone + " " + b64,
		zone + ` 60 IN SIG A 8 2 86400 20250101000000 20240101000000 60485 ` + zone + " " + b64,
		zone + ` 60 IN PX 10 net2.` + zone + ` PRMD-net2.ADMD-p400.C-it.`,
		zone + ` 60 IN NAPTR 100 10 "S" "SIP+D2U" "!^.*$!sip:info@example.org!" _sip._udp.` + zone,
		zone + ` 60 IN NAPTR 100 10 "" "" "" .`,
		zone + ` 60 IN HTTPS 1 . alpn=h3,h2,http/1.1 port=8443 ipv4hint=192.0.2.1,192.0.2.2,192.0.2.3 ipv6hint=2001:db8::1,2001:db8::2,2001:db8::3`,
		"_dns." + zone + ` 60 IN SVCB 1 dns.` + zone + ` alpn=dot no-default-alpn port=853`,
		zone + ` 60 IN SVCB 1 . alpn=` + strings.Repeat("x", 60) + `,y`, // long IDs: room every 4 octets
		zone + ` 60 IN TYPE65280 \# 5 0102030405`,
		zone + ` 60 IN APL 1:192.0.2.0/24 !2:2001:db8::/32`,
		zone + ` 60 IN EUI48 00-00-5e-00-53-2a`,
	}
	for i, s := range rrs {
		rr, err := dns.NewRR(s)
		require.NoError(t, err, s)
		t.Run(fmt.Sprintf("%d %s", i, dns.TypeToString[rr.Header().Rrtype]), func(t *testing.T) {
			_, b, got, qend := anyAnswer(t, zone, false, rr)
			n := 0
			require.True(t, Walk(b, qend, func(r Record) bool {
				n++
				want, ok := heldModel(got.Answer[0], r.End-r.RdOff)
				require.True(t, ok, "no model of %T", got.Answer[0])
				assert.Equal(t, len(got.Answer[0].Header().Name)+10+want, r.Held)
				return true
			}))
			assert.Equal(t, 1, n)
		})
	}
}

// TestOPTHeld: an OPT record holds ednsOption an option and twice its
// data (hexadecimal), a Report-Channel option (RFC 9567) four times its
// data and one (the agent domain as text, \DDD at most); data after the
// last whole option is counted at OpaqueFactor an octet.
func TestOPTHeld(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	m.Response = true
	m.SetEdns0(1232, true)
	agent := []byte("\x05agent\x07example\x00")
	opt := m.IsEdns0()
	opt.Option = append(opt.Option,
		&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&dns.EDNS0_LOCAL{Code: 65001, Data: []byte("abc")},
		&dns.EDNS0_LOCAL{Code: dns.EDNS0REPORTING, Data: agent})
	b, err := m.Pack()
	require.NoError(t, err)
	want := ednsOption + 2*8 + ednsOption + 2*3 + ednsOption + 4*len(agent) + 1
	q, ok := ReadQuestion(b)
	require.True(t, ok)
	held := func(b []byte) (held int) {
		require.True(t, Walk(b, q.End, func(r Record) bool {
			require.Equal(t, uint16(TypeOPT), r.Type)
			held = r.Held - 1 - 10 // the root's "." and the fixed fields
			return true
		}))
		return held
	}
	assert.Equal(t, want, held(b))
	// Octets after the last whole option: 3 (less than a code and a
	// length), then 6 (an option whose length runs past the RDATA).
	for _, tail := range [][]byte{{0, 1, 2}, {0, 9, 0, 5, 1, 2}} {
		c := append(append([]byte(nil), b...), tail...)
		binary.BigEndian.PutUint16(c[q.End+9:], binary.BigEndian.Uint16(c[q.End+9:])+uint16(len(tail)))
		assert.Equal(t, want+OpaqueFactor*len(tail), held(c), "% x", tail)
	}
}

// TestRDATAHeldMalformed: RDATA of a type held.go models that is not of
// the type's form (a character-string, a type bitmap window, a salt, a
// hash or an SvcParam running past the RDATA; fixed fields cut short; a
// LOC or NSEC3PARAM of another length), which miekg/dns does not unpack
// as the type, is counted at OpaqueFactor an octet, the fixed fields or
// whole SvcParams before it as they are; an ALPN value that is no list
// of IDs at two string headers an octet.
func TestRDATAHeldMalformed(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeANY)
	m.Response = true
	head, err := m.Pack()
	require.NoError(t, err)
	q, ok := ReadQuestion(head)
	require.True(t, ok)
	head[7] = 1 // ANCOUNT
	// held is the Held of the record of type typ and RDATA rd, less its
	// owner (a pointer to the question's name, example.org.) and its fixed
	// fields.
	held := func(typ uint16, rd []byte) (held int) {
		b := append(append([]byte(nil), head...), 0xC0, HeaderLen, byte(typ>>8), byte(typ), 0, ClassINET, 0, 0, 0, 60, byte(len(rd)>>8), byte(len(rd)))
		b = append(b, rd...)
		n := 0
		require.True(t, Walk(b, q.End, func(r Record) bool { n++; held = r.Held - len("example.org.") - 10; return true }), "type %d % x", typ, rd)
		require.Equal(t, 1, n)
		return held
	}
	bitmapAandAAAA := []byte{0, 4, 0x40, 0, 0, 8} // window 0: A (1), AAAA (28)
	for _, tc := range []struct {
		name string
		typ  uint16
		rd   []byte
		want int
	}{
		{"TXT string past the end", typeTXT, []byte{1, 'a', 3, 'b'}, OpaqueFactor * 4},
		{"TXT string one octet past the end", typeTXT, []byte{1, 'a', 2, 'b'}, OpaqueFactor * 4},
		{"TXT of no string", typeTXT, nil, stringHeader},
		{"HINFO of one string", typeHINFO, []byte{1, 'a'}, OpaqueFactor * 2},
		{"HINFO of three strings", typeHINFO, []byte{1, 'a', 1, 'b', 1, 'c'}, OpaqueFactor * 6},
		{"DNSKEY of 3 octets", typeDNSKEY, []byte{1, 0, 3}, OpaqueFactor * 3},
		{"DNSKEY of 4 octets", typeDNSKEY, []byte{1, 0, 3, 8}, 4},
		{"CERT of 4 octets", typeCERT, []byte{0, 1, 0, 0}, OpaqueFactor * 4},
		{"CERT of 5 octets and 1", typeCERT, []byte{0, 1, 0, 0, 8, 0xFF}, 5 + 4},
		{"ZONEMD of 5 octets", typeZONEMD, []byte{0, 0, 0, 1, 1}, OpaqueFactor * 5},
		{"URI of 3 octets", typeURI, []byte{0, 1, 0}, OpaqueFactor * 3},
		{"URI of no target", typeURI, []byte{0, 1, 0, 1}, 4},
		{"DS of 3 octets", typeDS, []byte{0, 1, 8}, OpaqueFactor * 3},
		{"TLSA of 2 octets", typeTLSA, []byte{3, 1}, OpaqueFactor * 2},
		{"TLSA of 3 octets and 2", typeTLSA, []byte{3, 1, 1, 0xAB, 0xCD}, 3 + 4},
		{"SSHFP of 1 octet", typeSSHFP, []byte{4}, OpaqueFactor * 1},
		{"SSHFP of 2 octets and 3", typeSSHFP, []byte{4, 2, 1, 2, 3}, 2 + 6},
		{"LOC of 15 octets", typeLOC, make([]byte, 15), OpaqueFactor * 15},
		{"LOC of 17 octets", typeLOC, make([]byte, 17), OpaqueFactor * 17},
		{"CAA of 1 octet", typeCAA, []byte{0}, OpaqueFactor * 1},
		{"CAA of an empty tag", typeCAA, []byte{0, 0}, 1},
		{"CAA tag past the end", typeCAA, []byte{0, 5, 'i', 's', 's', 'u'}, OpaqueFactor * 6},
		{"CAA tag to the end", typeCAA, []byte{0, 5, 'i', 's', 's', 'u', 'e'}, 1 + 5},
		{"CSYNC of 5 octets", typeCSYNC, make([]byte, 5), OpaqueFactor * 5},
		{"CSYNC of no bitmap", typeCSYNC, make([]byte, 6), 6},
		{"CSYNC window past the end", typeCSYNC, append(make([]byte, 6), 0, 2, 0x40), 6 + OpaqueFactor*3},
		{"CSYNC window of no length octet", typeCSYNC, append(make([]byte, 6), 0), 6 + OpaqueFactor*1},
		// RFC 4034 §4.1.2: a window holds 1 to 32 octets, the windows in
		// increasing order; miekg/dns refuses every other bitmap.
		{"CSYNC window of no octets", typeCSYNC, append(make([]byte, 6), 0, 0), 6 + OpaqueFactor*2},
		{"CSYNC windows of no octets", typeCSYNC, append(make([]byte, 6), 0, 0, 1, 0), 6 + OpaqueFactor*4},
		{"CSYNC window of 33 octets", typeCSYNC, append(append(make([]byte, 6), 0, 33), make([]byte, 33)...), 6 + OpaqueFactor*35},
		{"CSYNC window of 32 octets", typeCSYNC, append(append(make([]byte, 6), 0, 32), append(make([]byte, 31), 1)...), 6 + typeBit},
		{"CSYNC windows out of order", typeCSYNC, append(make([]byte, 6), 1, 1, 0x40, 0, 1, 0x40), 6 + OpaqueFactor*6},
		{"CSYNC window twice", typeCSYNC, append(make([]byte, 6), 0, 1, 0x40, 0, 1, 0x40), 6 + OpaqueFactor*6},
		{"CSYNC windows in order", typeCSYNC, append(make([]byte, 6), 0, 1, 0x40, 1, 1, 0x40), 6 + 2*typeBit},
		{"NSEC3PARAM salt past the end", typeNSEC3PARAM, []byte{1, 0, 0, 10, 2, 0xAA}, OpaqueFactor * 6},
		{"NSEC3PARAM octets after the salt", typeNSEC3PARAM, []byte{1, 0, 0, 10, 1, 0xAA, 0}, OpaqueFactor * 7},
		{"NSEC3PARAM of no salt", typeNSEC3PARAM, []byte{1, 0, 0, 10, 0}, 5},
		{"NSEC3PARAM of 4 octets", typeNSEC3PARAM, []byte{1, 0, 0, 10}, OpaqueFactor * 4},
		{"NSEC3 of 4 octets", typeNSEC3, []byte{1, 0, 0, 10}, OpaqueFactor * 4},
		{"NSEC3 salt to the end", typeNSEC3, []byte{1, 0, 0, 10, 1, 0xAA}, OpaqueFactor * 6},
		{"NSEC3 of no salt, hash or bitmap", typeNSEC3, []byte{1, 0, 0, 10, 0, 0}, 6},
		{"NSEC3 hash past the end", typeNSEC3, []byte{1, 0, 0, 10, 1, 0xAA, 3, 1, 2}, OpaqueFactor * 9},
		{"NSEC3 hash to the end", typeNSEC3, []byte{1, 0, 0, 10, 1, 0xAA, 2, 1, 2}, 6 + 2 + 4},
		{"NSEC3 bitmap", typeNSEC3, append([]byte{1, 0, 0, 10, 1, 0xAA, 2, 1, 2}, bitmapAandAAAA...), 6 + 2 + 4 + 2*typeBit},
		{"NSEC3 bitmap window past the end", typeNSEC3, []byte{1, 0, 0, 10, 0, 1, 9, 0, 3, 0x40}, 6 + 0 + 2 + OpaqueFactor*3},
		{"NSEC bitmap window past the end", typeNSEC, []byte{0, 0, 2, 0x40}, 1 + OpaqueFactor*3},
		{"NSEC bitmap windows", typeNSEC, append([]byte{0}, append(bitmapAandAAAA, 1, 1, 0x81)...), 1 + 4*typeBit},
		{"SVCB of one octet after the target", typeSVCB, []byte{0, 1, 0, 0}, 2 + 1 + OpaqueFactor*1},
		{"SVCB no-default-alpn last", typeSVCB, []byte{0, 1, 0, 0, 2, 0, 0}, 2 + 1 + svcParam},
		{"SVCB param of 3 octets", typeSVCB, []byte{0, 1, 0, 0, 1, 0}, 2 + 1 + OpaqueFactor*3},
		{"SVCB param past the end", typeSVCB, []byte{0, 1, 0, 0, 3, 0, 2, 0x01}, 2 + 1 + OpaqueFactor*5},
		{"SVCB port then a param past the end", typeSVCB, []byte{0, 1, 0, 0, 3, 0, 2, 1, 187, 0, 3, 0, 2, 0x01}, 2 + 1 + svcParam + 2 + OpaqueFactor*5},
		{"SVCB ALPN not a list", typeSVCB, []byte{0, 1, 0, 0, 1, 0, 3, 5, 'h', '2'}, 2 + 1 + svcParam + 3*2*stringHeader},
		{"SVCB ipv4hint of 5 octets", typeSVCB, []byte{0, 1, 0, 0, 4, 0, 5, 192, 0, 2, 1, 9}, 2 + 1 + svcParam + 1*32},
		{"SVCB ipv6hint of 17 octets", typeSVCB, append([]byte{0, 1, 0, 0, 6, 0, 17}, make([]byte, 17)...), 2 + 1 + svcParam + 1*40},
		{"SVCB ipv6hint of 30 octets", typeSVCB, append([]byte{0, 1, 0, 0, 6, 0, 30}, make([]byte, 30)...), 2 + 1 + svcParam + 1*40},
	} {
		assert.Equal(t, tc.want, held(tc.typ, tc.rd), tc.name)
	}
}

// TestAppendedList: the slice of count strings appended one at a time
// takes a string header for each of a power of two at least count, up to
// 256; past that, twice count (Go's append growing it by less than
// twice).
func TestAppendedList(t *testing.T) {
	for count, want := range map[int]int{0: 1, 1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 129: 256, 255: 256, 256: 256, 257: 514, 1000: 2000} {
		assert.Equal(t, stringHeader*want, appendedList(count), "%d strings", count)
	}
}

// TestTextLengths: the characters n octets take as hexadecimal, padded
// base64 (RFC 4648 §4) and unpadded base32 (§7), as Go's encoders write
// them (which miekg/dns uses).
func TestTextLengths(t *testing.T) {
	for n := range 70 {
		b := make([]byte, n)
		assert.Equal(t, len(hex.EncodeToString(b)), hexLen(n), "hex of %d", n)
		assert.Equal(t, len(base64.StdEncoding.EncodeToString(b)), base64Len(n), "base64 of %d", n)
		assert.Equal(t, len(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), base32Len(n), "base32 of %d", n)
	}
}

// TestEscapes: an octet of a label, or of a character-string, is held in
// as many characters as miekg/dns writes it in: \DDD outside printable
// ASCII, \X for the characters special there, itself otherwise.
func TestEscapes(t *testing.T) {
	for c := range 256 {
		name, _, err := dns.UnpackDomainName([]byte{1, byte(c), 0}, 0)
		require.NoError(t, err)
		assert.Equal(t, len(name)-1, int(labelText[c]), "%q in a label", name)
		rr := &dns.TXT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"x"}}
		b := make([]byte, 64)
		n, err := dns.PackRR(rr, b, 0, nil, false)
		require.NoError(t, err)
		b[n-1] = byte(c) // the string's one octet
		got, _, err := dns.UnpackRR(b[:n], 0)
		require.NoError(t, err)
		assert.Equal(t, len(got.(*dns.TXT).Txt[0]), int(stringText[c]), "%q in a character-string", got.(*dns.TXT).Txt[0])
	}
}
