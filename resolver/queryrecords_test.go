package resolver

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// strayRecordsQuery is a query of one question, a 244-octet name, and
// then as many records as fit in size octets in its answer section, each
// owned by a pointer to the question's name, of type MINFO and with two
// more pointers to it for RDATA (RFC 1035 §3.3.7; 16 octets a record, 3
// names of 244 octets unpacked): what CoreDNS's GHSA-mrg3-qvqr-jw29
// (CVE-2026-82399) sent, a message whose section counts are read before
// anything checks them. Its OPT, if edns, comes last.
func strayRecordsQuery(size int, edns bool) []byte {
	b := make([]byte, 12, size)
	binary.BigEndian.PutUint16(b[0:], 0x4242)
	binary.BigEndian.PutUint16(b[2:], 1<<8) // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	for range 4 {
		b = append(b, 60)
		for range 60 {
			b = append(b, 'a')
		}
	}
	b = append(b, 0, 0, 1, 0, 1) // the root, A, IN
	opt := []byte{0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0}
	if !edns {
		opt = nil
	}
	rr := []byte{0xc0, 12, 0, byte(dns.TypeMINFO), 0, 1, 0, 0, 0, 0, 0, 4, 0xc0, 12, 0xc0, 12}
	n := 0
	for len(b)+len(rr)+len(opt) <= size {
		b = append(b, rr...)
		n++
	}
	binary.BigEndian.PutUint16(b[6:], uint16(n))
	if edns {
		b = append(b, opt...)
		binary.BigEndian.PutUint16(b[10:], 1)
	}
	return b
}

// allocatedBy is how many bytes the process allocated while f ran.
func allocatedBy(f func()) uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	f()
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc - before
}

// TestStrayRecordsRejectedBeforeParsing: a query has at most one record
// in its answer section (a NOTIFY's SOA), one in its authority section
// (an IXFR's SOA) and two in its additional section (its OPT and a
// TSIG). A message that counts more is answered FORMERR from its header,
// over UDP from any source and over TCP, without its records being
// unpacked: a 4,096-octet datagram of 250 records cost 216 KB of
// allocation and 0.65 ms of CPU, 60 times a query's, and a 65,535-octet
// TCP message 3.7 MB and 7.5 ms, before the FORMERR it was always going
// to get.
func TestStrayRecordsRejectedBeforeParsing(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)
	for _, edns := range []bool{true, false} {
		udp := strayRecordsQuery(4096, edns)
		c, err := net.Dial("udp", f.addr)
		require.NoError(t, err)
		defer c.Close()
		const n = 20
		buf := make([]byte, 65535)
		var reply *dns.Msg
		perQuery := allocatedBy(func() {
			for range n {
				_, err := c.Write(udp)
				require.NoError(t, err)
				require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
				k, err := c.Read(buf)
				require.NoError(t, err)
				reply = new(dns.Msg)
				require.NoError(t, reply.Unpack(buf[:k]))
			}
		}) / n
		t.Logf("UDP, %d octets, %d records, EDNS %v: %d bytes allocated a query", len(udp), binary.BigEndian.Uint16(udp[6:]), edns, perQuery)
		assert.Equal(t, dns.RcodeFormatError, reply.Rcode)
		assert.Equal(t, uint16(0x4242), reply.Id)
		assert.Equal(t, edns, reply.IsEdns0() != nil, "an OPT answers an OPT (RFC 6891 §7)")
		assert.Less(t, perQuery, uint64(32<<10), "the records were unpacked")
	}

	tcp := strayRecordsQuery(65535, true)
	perQuery := allocatedBy(func() {
		for range 5 {
			c, err := net.Dial("tcp", f.addr)
			require.NoError(t, err)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			_, err = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(tcp))), tcp...))
			require.NoError(t, err)
			var l [2]byte
			_, err = io.ReadFull(c, l[:])
			require.NoError(t, err)
			b := make([]byte, binary.BigEndian.Uint16(l[:]))
			_, err = io.ReadFull(c, b)
			require.NoError(t, err)
			c.Close()
			reply := new(dns.Msg)
			require.NoError(t, reply.Unpack(b))
			assert.Equal(t, dns.RcodeFormatError, reply.Rcode)
		}
	}) / 5
	t.Logf("TCP, %d octets: %d bytes allocated a query", len(tcp), perQuery)
	// The message itself is read into memory of its own (64 KiB).
	assert.Less(t, perQuery, uint64(256<<10), "the records were unpacked")
}
