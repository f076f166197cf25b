package upstream

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHealthCheckParts: the name and type of a health check as written,
// read canonical, and what is refused.
func TestHealthCheckParts(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// Three labels of 63 octets and one of n: a name whose wire form is
	// 3*64 + n+1 + 1 octets (RFC 1035 §3.1), n = 61 the longest allowed.
	long := func(n int) string { return strings.Repeat(label63+".", 3) + strings.Repeat("d", n) + "." }
	for _, tc := range []struct{ in, want, err string }{
		{in: ".", want: "."},
		{in: "Corp.Example", want: "corp.example."},
		{in: "corp.example.", want: "corp.example."},
		{in: `a\032b.corp.example.`, want: `a\032b.corp.example.`},
		// Unicode is written as the A-label the zone holds (RFC 5891
		// §5), never sent as its UTF-8 octets, a name no server has.
		{in: "Behörde.Example", want: "xn--behrde-yxa.example."},
		{in: "bücher.example.", want: "xn--bcher-kva.example."},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example."},
		{in: "caf\xe9.example", err: "not UTF-8"},
		{in: "\u0300a.example", err: "internationalised"},
		{in: "", err: "empty"},
		{in: "corp..example", err: "an empty label"},
		{in: label63 + ".example", want: label63 + ".example."},
		{in: label63 + "a.example", err: "a label over 63 octets"},
		{in: label63 + "..example", err: "an empty label"}, // the 63 octets before it are no label too long
		{in: long(61), want: long(61)},
		{in: long(62), err: "over 255 octets"}, // 256 octets, which dns.IsDomainName lets through
		{in: "corp example.", err: "white space"},
		{in: "corp.example.\n", err: "white space"},
		{in: string(make([]byte, 64)) + ".example.", err: "control character"},
		// A malformed escape, which miekg/dns would ask as another name
		// (`corp2.example.`, `a\231.example.`), is none (RFC 1035 §5.1).
		{in: `corp\2.example`, err: `"corp\\2.example" is not a domain name: \2 is no escape (RFC 1035 §5.1`},
		{in: `a\999.example`, err: `\999 is no escape`},
		{in: `a\256.example`, err: `\256 is no escape`},
		{in: `a\255.example`, want: `a\255.example.`},
		// A host pasted with a port or as a URL (DNS lets a label hold
		// `:` and `/`) is no name an upstream has: every probe would ask
		// one no zone holds.
		{in: "corp.example:53", err: `"corp.example:53" is not a domain name: a URL, a port, a path or a user is no part of one; did you mean corp.example?`},
		{in: "https://dc1.corp.example/", err: "did you mean dc1.corp.example?"},
		{in: "admin@corp.example.", err: "did you mean corp.example.?"},
		// RFC 2317's classless reverse delegation has a slash in its
		// first label, and escaped octets are taken as written.
		{in: "0/26.2.0.192.in-addr.arpa", want: "0/26.2.0.192.in-addr.arpa."},
		{in: `corp\:53.example`, want: `corp\:53.example.`},
	} {
		got, err := HealthCheckName(tc.in)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, "%q", tc.in)
			continue
		}
		assert.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
	// An empty name is said to be empty, not a name of an empty label
	// (an upstream_health_check name written as "").
	_, err := HealthCheckName("")
	assert.EqualError(t, err, "empty")
	// The name left is offered only when it is one itself.
	_, err = HealthCheckName("\u0300a.example:53")
	assert.EqualError(t, err, strconv.Quote("\u0300a.example:53")+" is not a domain name: a URL, a port, a path or a user is no part of one")
	// A name refused for neither a label nor its length (an escape cut
	// short) says no more than that it is none.
	_, err = HealthCheckName(`corp\`)
	assert.EqualError(t, err, `"corp\\" is not a domain name`)
	for _, tc := range []struct {
		in   string
		want uint16
		err  string
	}{
		{in: "NS", want: dns.TypeNS},
		{in: "soa", want: dns.TypeSOA},
		{in: "A", want: dns.TypeA},
		{in: "TXT", want: dns.TypeTXT},
		{in: "ANY", err: "RFC 8482"},
		{in: "AXFR", err: "zone transfer"},
		{in: "IXFR", err: "zone transfer"},
		{in: "OPT", err: "meta type"},
		{in: "TSIG", err: "a meta type (RFC 6895 §3.1: 128 to 255)"}, // not an obsolete one
		{in: "MAILA", err: "obsolete"},
		{in: "MF", err: "obsolete"},
		{in: "MD", err: "obsolete"},
		{in: "NXNAME", err: "meta type"}, // RFC 9824 §3.5: answered FORMERR
		{in: "SAO", err: "not a DNS record type"},
		{in: "", err: "not a DNS record type"},
	} {
		got, err := HealthCheckType(tc.in)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, "%q", tc.in)
			continue
		}
		assert.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
	// The meta and QTYPE range is 128 to 255 (RFC 6895 §3.1); the types
	// either side of it are data types, unassigned (127) or URI (256).
	for qtype, meta := range map[uint16]bool{127: false, 128: true, 255: true, 256: false} {
		_, ok := metaTypeWhy(qtype)
		assert.Equal(t, meta, ok, "%d", qtype)
	}
}

// TestRebuildHealthCheck: a reload that changes the health check makes
// the Forwarder anew, as one that changes upstream_timeout does, with
// what was learnt of the upstreams (down included) inherited; the root NS
// query left out or written out is the same check, and keeps it.
func TestRebuildHealthCheck(t *testing.T) {
	addrs := []string{"127.0.0.1:53", "127.0.0.2:53"}
	prev, err := New(addrs, Options{Timeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(prev.Close)
	assert.Equal(t, DefaultHealthCheck, prev.HealthCheck(), "none given: the root NS query")
	assert.Equal(t, ". NS", prev.HealthCheck().String())
	prev.upstreams[1].down.Store(true)

	same, err := Rebuild(prev, addrs, Options{Timeout: time.Second, HealthCheck: HealthCheck{Name: ".", Qtype: dns.TypeNS}})
	require.NoError(t, err)
	assert.Same(t, prev, same, "the root NS query written out is no change")

	corp := HealthCheck{Name: "corp.example.", Qtype: dns.TypeSOA}
	next, err := Rebuild(prev, addrs, Options{Timeout: time.Second, HealthCheck: corp})
	require.NoError(t, err)
	t.Cleanup(next.Close)
	require.NotSame(t, prev, next)
	assert.Equal(t, corp, next.HealthCheck())
	assert.Equal(t, []string{"127.0.0.2:53"}, next.Down(), "what was learnt is inherited")
	q := next.probeQuery()
	assert.Equal(t, []dns.Question{{Name: "corp.example.", Qtype: dns.TypeSOA, Qclass: dns.ClassINET}}, q.Question)
	assert.True(t, q.RecursionDesired)
	assert.NotNil(t, q.IsEdns0())
}
