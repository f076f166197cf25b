package source

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestZoneTransferMaxBytesBoundary: sources.max_bytes is the most a
// transfer may take: one of exactly that many octets of messages is
// taken, one of an octet more refused.
func TestZoneTransferMaxBytesBoundary(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c", "d", "e"), nil)
	p.perMessage = 2
	c := xfrClient{zone: testZone, timeout: 2 * time.Second, maxBytes: 1 << 20}
	res, err := c.transfer(context.Background(), p.addr, nil, nil)
	require.NoError(t, err)
	require.Len(t, res.rrs, 5)

	c.maxBytes = res.bytes
	again, err := c.transfer(context.Background(), p.addr, nil, nil)
	require.NoError(t, err, "a transfer of exactly max_bytes")
	assert.Equal(t, res.bytes, again.bytes)
	assert.Len(t, again.rrs, 5)

	c.maxBytes = res.bytes - 1
	_, err = c.transfer(context.Background(), p.addr, nil, nil)
	assert.ErrorContains(t, err, "AXFR: more than sources.max_bytes")
}

// TestZoneQueriesAskNoRecursion: the SOA query, the IXFR and the AXFR go
// to the primary with RD clear, as a secondary's do (BIND's and NSD's):
// the primary answers from its own zone, and one that also recurses
// must not answer an SOA query for the zone from elsewhere.
func TestZoneQueriesAskNoRecursion(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.records = cnames(testZone, "a", "b")
		p.ixfrRcode = dns.RcodeRefused // IXFR, then AXFR
	})
	poke(t, z)
	rec.waitCount(t, 2)
	p.mu.Lock()
	defer p.mu.Unlock()
	require.Equal(t, qtypes(dns.TypeSOA, dns.TypeAXFR, dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR), qtypes(p.queries...))
	for i, rd := range p.recursion {
		assert.False(t, rd, "query %d (%s) has RD set", i+1, dns.TypeToString[p.queries[i]])
	}
}

// TestZoneIXFRErrorsSayIXFR: an IXFR's failure is named an IXFR's, not an
// AXFR's, so that the operator can tell which of the two the primary
// fails (the last error of a look whose IXFR no AXFR follows, as one
// with a TSIG error, is the IXFR's).
func TestZoneIXFRErrorsSayIXFR(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	p.ixfrRcode = dns.RcodeRefused
	c := xfrClient{zone: testZone, timeout: 2 * time.Second, maxBytes: 1 << 20}
	_, err := c.transfer(context.Background(), p.addr, testSOA(testZone, 1), nil)
	assert.EqualError(t, err, "IXFR: primary answered REFUSED")
	p.update(func(p *fakePrimary) { p.ixfrRcode, p.axfrRcode = 0, dns.RcodeRefused })
	_, err = c.transfer(context.Background(), p.addr, nil, nil)
	assert.EqualError(t, err, "AXFR: primary answered REFUSED")
}

// TestZoneEmptyTransferAnswerNamed: a transfer answered NOERROR with no
// record at all is errNoIXFR for an IXFR (a primary that takes IXFR for a
// query of an unknown type), and for an AXFR a message without records,
// not a primary without IXFR.
func TestZoneEmptyTransferAnswerNamed(t *testing.T) {
	pc, l := listenBoth(t)
	empty := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		_ = w.WriteMsg(m)
	})
	testnet.Serve(t, &dns.Server{PacketConn: pc, Handler: empty}, &dns.Server{Listener: l, Handler: empty})
	c := xfrClient{zone: testZone, timeout: 2 * time.Second, maxBytes: 1 << 20}
	_, err := c.transfer(context.Background(), l.Addr().String(), testSOA(testZone, 1), nil)
	assert.ErrorIs(t, err, errNoIXFR)
	assert.ErrorContains(t, err, "IXFR: ")
	_, err = c.transfer(context.Background(), l.Addr().String(), nil, nil)
	assert.EqualError(t, err, "AXFR: message 1 has no records")
	assert.False(t, errors.Is(err, errNoIXFR))
}

// TestZoneSmallestTransferFloorsMaxBytes: sources.max_bytes below the
// smallest transfer of a zone (smallestTransfer: the question and the
// SOA record twice, in one message, signed when sources.tsig is set)
// refuses every transfer of it, so NewZone, which the configuration's
// validation calls as serve does, refuses it: check passed
// `max_bytes: 64`, and serve's every transfer was refused. An empty zone
// whose SOA names the root, compressed, is exactly that small: taken at
// the floor. A signed one is larger; both are floors for their kind.
func TestZoneSmallestTransferFloorsMaxBytes(t *testing.T) {
	key := newKey(t, "xfr-key.")
	for _, tc := range []struct {
		name string
		key  *TSIG
	}{{"unsigned", nil}, {"signed", key}} {
		t.Run(tc.name, func(t *testing.T) {
			var secret map[string]string
			if tc.key != nil {
				secret = map[string]string{tc.key.Name: tc.key.Secret}
			}
			p := startFakePrimary(t, testZone, 1, nil, secret)
			p.update(func(p *fakePrimary) { p.soa.Ns, p.soa.Mbox = ".", "." })
			norm, err := tc.key.normalize()
			require.NoError(t, err)
			least := smallestTransfer(testZone, norm)

			c := xfrClient{zone: testZone, tsig: norm, timeout: 2 * time.Second, maxBytes: least}
			res, err := c.transfer(context.Background(), p.addr, nil, nil)
			require.NoError(t, err, "the smallest transfer, at max_bytes")
			if tc.key == nil {
				assert.Equal(t, least, res.bytes, "no transfer is smaller")
			} else {
				assert.GreaterOrEqual(t, res.bytes, least, "no transfer is smaller")
			}

			opt := zoneTestOptions(t, tc.key)
			opt.MaxBytes = least - 1
			_, err = NewZone("axfr://"+p.addr+"/"+testZone, opt)
			assert.ErrorContains(t, err, fmt.Sprintf("sources.max_bytes %d is below %d bytes, the smallest transfer of zone %s", least-1, least, testZone))
			opt.MaxBytes = least
			_, err = NewZone("axfr://"+p.addr+"/"+testZone, opt)
			assert.NoError(t, err)
		})
	}
}
