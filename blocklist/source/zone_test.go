package source

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/blocklist"
	"github.com/dnsfence/dnsfence/blocklist/rpz"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testZone = "rpz.test."

// startZone starts a Zone source for the fake primary p with opt and
// returns it and its receiver.
func startZone(t *testing.T, p *fakePrimary, opt Options) (*Zone, *receiver) {
	t.Helper()
	z, err := NewZone("axfr://"+p.addr+"/"+strings.TrimSuffix(p.zone, "."), opt)
	require.NoError(t, err)
	return z, run(t, z)
}

// poke asks the source to look at once, as a NOTIFY from the primary does.
func poke(t *testing.T, z *Zone) {
	t.Helper()
	require.True(t, z.Notify(netip.MustParseAddr("127.0.0.1")))
}

func qtypes(ts ...uint16) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = dns.TypeToString[t]
	}
	return out
}

func TestZoneIXFRSequences(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	c := rec.waitCount(t, 1)
	require.Equal(t, []string{"a", "b", "c"}, owners(c))

	// 1 → 2 removes a and adds d; 2 → 3 removes d again, adds e, and
	// adds b, already there (kept once). Net: a removed, e added.
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 3)
		p.ixfr = func(have uint32) []dns.RR {
			return ixfrAnswer(testZone,
				ixfrStep{from: 1, to: 2, del: cnames(testZone, "a"), add: cnames(testZone, "d")},
				ixfrStep{from: 2, to: 3, del: cnames(testZone, "d"), add: cnames(testZone, "e", "b")})
		}
	})
	poke(t, z)
	c = rec.waitCount(t, 2)
	assert.Equal(t, TransferIXFR, c.Transfer)
	assert.Equal(t, uint32(3), c.Serial)
	assert.Equal(t, []string{"b", "c", "e"}, owners(c))
	assert.Len(t, c.Records, 4, "the SOA and three records")
	assert.Equal(t, 1, c.Added)
	assert.Equal(t, 1, c.Removed)
	assert.Equal(t, qtypes(dns.TypeSOA, dns.TypeAXFR, dns.TypeSOA, dns.TypeIXFR), qtypes(p.asked()...))

	// The earlier copy is untouched: the receiver may still serve it.
	assert.Equal(t, []string{"a", "b", "c"}, owners(rec.got[0]))

	// A further IXFR applies to the zone as changed.
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 4)
		p.ixfr = func(have uint32) []dns.RR {
			require.Equal(t, uint32(3), have)
			return ixfrAnswer(testZone, ixfrStep{from: 3, to: 4, del: cnames(testZone, "b", "c"), add: cnames(testZone, "f")})
		}
	})
	poke(t, z)
	c = rec.waitCount(t, 3)
	assert.Equal(t, []string{"e", "f"}, owners(c))
	assert.Equal(t, 1, c.Added)
	assert.Equal(t, 2, c.Removed)
}

func TestZoneIXFRFallbacks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(p *fakePrimary)
		// wantAsked are the QTYPEs asked for the change.
		wantAsked []uint16
		wantType  string
	}{
		{
			name:      "not implemented",
			setup:     func(p *fakePrimary) { p.ixfrRcode = dns.RcodeNotImplemented },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name:      "format error",
			setup:     func(p *fakePrimary) { p.ixfrRcode = dns.RcodeFormatError },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		// A primary that serves AXFR alone may refuse IXFR or fail it, or
		// take it for a query of an unknown type: BIND's secondary asks
		// for an AXFR after any of them.
		{
			name:      "refused",
			setup:     func(p *fakePrimary) { p.ixfrRcode = dns.RcodeRefused },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name:      "server failure",
			setup:     func(p *fakePrimary) { p.ixfrRcode = dns.RcodeServerFailure },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name:      "not authoritative, no TSIG error",
			setup:     func(p *fakePrimary) { p.ixfrRcode = dns.RcodeNotAuth },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name:      "no record: IXFR unknown",
			setup:     func(p *fakePrimary) { p.ixfr = func(uint32) []dns.RR { return nil } },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name: "condensed: the new SOA alone",
			setup: func(p *fakePrimary) {
				p.ixfr = func(uint32) []dns.RR { return []dns.RR{testSOA(testZone, 2)} }
			},
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name: "removes a record not held",
			setup: func(p *fakePrimary) {
				p.ixfr = func(uint32) []dns.RR {
					return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, del: cnames(testZone, "zzz"), add: cnames(testZone, "d")})
				}
			},
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name: "starts from another serial",
			setup: func(p *fakePrimary) {
				p.ixfr = func(uint32) []dns.RR {
					return ixfrAnswer(testZone, ixfrStep{from: 7, to: 2, del: cnames(testZone, "a"), add: cnames(testZone, "d")})
				}
			},
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR, dns.TypeAXFR},
			wantType:  TransferAXFR,
		},
		{
			name:      "AXFR-style answer",
			setup:     func(p *fakePrimary) { p.ixfr = nil },
			wantAsked: []uint16{dns.TypeSOA, dns.TypeIXFR},
			wantType:  TransferAXFR,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c"), nil)
			z, rec := startZone(t, p, zoneTestOptions(t, nil))
			rec.waitCount(t, 1)
			p.update(func(p *fakePrimary) {
				p.soa = testSOA(testZone, 2)
				p.records = cnames(testZone, "b", "c", "d")
				p.queries = nil
				tc.setup(p)
			})
			poke(t, z)
			c := rec.waitCount(t, 2)
			assert.Equal(t, tc.wantType, c.Transfer)
			assert.Equal(t, uint32(2), c.Serial)
			assert.Equal(t, []string{"b", "c", "d"}, owners(c))
			assert.Equal(t, 1, c.Added)
			assert.Equal(t, 1, c.Removed)
			assert.Equal(t, qtypes(tc.wantAsked...), qtypes(p.asked()...))
		})
	}
}

func TestZoneUpToDateAsksSOAOnly(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	for range 3 {
		poke(t, z)
	}
	require.Eventually(t, func() bool { return len(p.asked()) >= 3 }, waitFor, tick)
	require.Eventually(t, func() bool { return !z.Status().LastSuccess.IsZero() }, waitFor, tick)
	for _, q := range p.asked()[2:] {
		assert.Equal(t, "SOA", dns.TypeToString[q], "an unchanged serial costs an SOA query, no transfer")
	}
	assert.Equal(t, 1, rec.count())
}

func TestZoneFailuresKeepTheZone(t *testing.T) {
	key := newKey(t, "xfr-key.")
	for _, tc := range []struct {
		name  string
		key   *TSIG
		setup func(p *fakePrimary)
		want  string
		is    error
	}{
		{name: "cut off", setup: func(p *fakePrimary) { p.cutAfter = 1 }, want: "cut off"},
		{name: "cut off with tsig", key: key, setup: func(p *fakePrimary) {
			p.records = cnames(testZone, "a", "b", "c", "d", "e", "f", "g")
			p.cutAfter = 2
		}, want: "cut off"},
		{name: "a message counting a record it does not hold", setup: func(p *fakePrimary) {
			p.records = cnames(testZone, "a", "b", "c", "d", "e", "f", "g")
			p.overcount = 2
		}, want: "ends before the records its header counts"},
		{name: "an answer for another class", setup: func(p *fakePrimary) { p.xfrClass = dns.ClassCHAOS },
			want: "answer is for another question"},
		{name: "a message with TC set over TCP", setup: func(p *fakePrimary) {
			p.records = cnames(testZone, "a", "b", "c", "d", "e", "f", "g")
			p.xfrTC = 2
		}, want: "AXFR: message 2 has TC set over TCP"},
		{name: "the first message with TC set over TCP", setup: func(p *fakePrimary) { p.xfrTC = 1 },
			want: "AXFR: message 1 has TC set over TCP"},
		{name: "over max_bytes", setup: func(p *fakePrimary) {
			p.records = cnames(testZone, strings.Split(strings.Repeat("x,", 400)+"y", ",")...)
		}, want: "max_bytes"},
		{name: "unsigned answer", key: key, setup: func(p *fakePrimary) { p.unsigned = true }, want: "not signed", is: ErrTSIG},
		{name: "answer signed with another secret", key: key, setup: func(p *fakePrimary) { p.forged = true }, want: "does not verify", is: ErrTSIG},
		{name: "answer's MAC truncated", key: key, setup: func(p *fakePrimary) { p.truncateMAC = 16 },
			want: "answer's MAC is truncated to 16 octets of hmac-sha256.'s 32 (RFC 8945 §5.2.2.1); sources.tsig takes the whole MAC only", is: ErrTSIG},
		{name: "serial older", setup: func(p *fakePrimary) { p.soa = testSOA(testZone, 0) }, want: "older than the 1 held"},
		{name: "refused", setup: func(p *fakePrimary) { p.ixfrRcode, p.axfrRcode = dns.RcodeRefused, dns.RcodeRefused }, want: "AXFR: primary answered REFUSED"},
		{name: "answer signed with another key name", key: key, setup: func(p *fakePrimary) { p.signName = "other-key." },
			want: `answer signed with key "other-key.", not "xfr-key."`, is: ErrTSIG},
		{name: "answer signed with another algorithm", key: key, setup: func(p *fakePrimary) { p.signAlg = dns.HmacSHA512 },
			want: "answer signed with algorithm hmac-sha512., not hmac-sha256.", is: ErrTSIG},
		{name: "an SOA answer that does not unpack", setup: func(p *fakePrimary) { p.udpSOAUnreadable = true },
			want: "SOA query: answer: bad question name: dns: too many compression pointers"},
		{name: "an SOA answer not authoritative", setup: func(p *fakePrimary) { p.soaNotAuth = true },
			want: "is not authoritative for rpz.test."},
		{name: "an SOA answer without the SOA", setup: func(p *fakePrimary) { p.soaNoAnswer = true },
			want: "holds no SOA for rpz.test."},
		{name: "a transfer without its opening SOA", setup: func(p *fakePrimary) { p.noOpeningSOA = true },
			want: "AXFR: answer does not start with the zone's SOA but a.rpz.test."},
		{name: "an SOA of another zone among the records", setup: func(p *fakePrimary) {
			p.records = append(cnames(testZone, "a"), testSOA("other.test.", 2), cname(testZone, "b"))
		}, want: "AXFR: record 3: SOA of other.test., not of rpz.test."},
		{name: "an SOA of the zone with another serial among the records", setup: func(p *fakePrimary) {
			p.records = append(cnames(testZone, "a"), testSOA(testZone, 7), cname(testZone, "b"))
		}, want: "AXFR: closing SOA has serial 7, the opening one 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var secret map[string]string
			if tc.key != nil {
				secret = map[string]string{tc.key.Name: tc.key.Secret}
			}
			p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c", "d", "e", "f"), secret)
			p.perMessage = 2
			opt := zoneTestOptions(t, tc.key)
			opt.MaxBytes = 4000
			z, rec := startZone(t, p, opt)
			rec.waitCount(t, 1)
			p.update(func(p *fakePrimary) {
				p.soa = testSOA(testZone, 2)
				p.records = cnames(testZone, "a", "b")
				tc.setup(p)
			})
			poke(t, z)
			require.Eventually(t, func() bool { return z.Status().LastError != nil }, waitFor, tick)
			st := z.Status()
			assert.ErrorContains(t, st.LastError, tc.want)
			assert.ErrorContains(t, st.LastError, z.Name(), "the error names the source")
			if tc.is != nil {
				assert.ErrorIs(t, st.LastError, tc.is)
			}
			assert.Equal(t, 1, rec.count(), "nothing is delivered")
			assert.Equal(t, uint32(1), st.Serial, "the zone held is kept")
			assert.True(t, st.HasContent)
			assert.Equal(t, 1, st.ConsecutiveFailures)

			// Once the primary behaves, the next look picks the change up.
			p.update(func(p *fakePrimary) {
				p.cutAfter, p.unsigned, p.forged, p.truncateMAC, p.ixfrRcode, p.axfrRcode, p.overcount, p.xfrClass, p.xfrTC = 0, false, false, 0, 0, 0, 0, 0, 0
				p.soaNotAuth, p.soaNoAnswer, p.noOpeningSOA, p.signName, p.signAlg = false, false, false, "", ""
				p.udpSOAUnreadable = false
				p.soa = testSOA(testZone, 3)
				p.records = cnames(testZone, "a", "b")
			})
			poke(t, z)
			c := rec.waitCount(t, 2)
			assert.Equal(t, uint32(3), c.Serial)
			assert.Equal(t, []string{"a", "b"}, owners(c))
			assert.Equal(t, 4, c.Removed)
			require.Eventually(t, func() bool { return z.Status().LastError == nil }, waitFor, tick)
		})
	}
}

func TestZoneRefusedByReceiver(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	opt := zoneTestOptions(t, nil)
	z, err := NewZone("axfr://"+p.addr+"/rpz.test", opt)
	require.NoError(t, err)
	rec := &receiver{refuse: errors.New("no trigger applies")}
	runWith(t, z, rec)
	require.Eventually(t, func() bool { return z.Status().Failures >= 1 }, waitFor, tick)
	st := z.Status()
	assert.False(t, st.HasContent)
	assert.ErrorContains(t, st.LastError, "refused by the reload: no trigger applies")
	assert.NoFileExists(t, cachePath(opt.CacheDir, z.Name()))

	rec.setRefuse(nil)
	poke(t, z)
	c := rec.waitCount(t, 1)
	assert.Equal(t, TransferAXFR, c.Transfer, "nothing was held: a full transfer")
	waitFile(t, cachePath(opt.CacheDir, z.Name()))
}

func TestZoneRestartFromCache(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a", `we\.ird`, "*.b"), nil)
	opt := zoneTestOptions(t, nil)
	z, err := NewZone("axfr://"+p.addr+"/rpz.test", opt)
	require.NoError(t, err)
	rec := &receiver{}
	stop := runWith(t, z, rec)
	first := rec.waitCount(t, 1)
	waitFile(t, cachePath(opt.CacheDir, z.Name()))
	stop()

	// The restarted source delivers the disk copy before any network, and
	// then transfers by IXFR from it.
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 6)
		p.ixfr = func(have uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: have, to: 6, add: cnames(testZone, "c")})
		}
	})
	again, rec2 := startZone(t, p, opt)
	c := rec2.waitCount(t, 1)
	assert.True(t, c.FromCache)
	assert.Equal(t, TransferCache, c.Transfer)
	assert.Equal(t, uint32(5), c.Serial)
	assert.Equal(t, owners(first), owners(c))
	require.Len(t, c.Records, len(first.Records))
	for i := range c.Records {
		assert.True(t, dns.IsDuplicate(first.Records[i], c.Records[i]), "record %d: %s != %s", i, first.Records[i], c.Records[i])
	}
	c = rec2.waitCount(t, 2)
	assert.Equal(t, TransferIXFR, c.Transfer)
	assert.Equal(t, []string{"*.b", "a", "c", `we\.ird`}, owners(c))
	waitStatus(t, again, func(st Status) bool { return !st.FromCache && st.Serial == 6 })
}

// TestZoneDiskCopyWrittenAgainAfterAFailedWrite: the first transfer's disk
// copy cannot be written (a directory stands where the file goes, which
// fails the rename even for root); once the folder is writable again, the
// next check, which finds the zone current, writes the zone held, and
// CacheError (dnsfence_source_cache_ok) clears. Before, nothing was
// written until the serial changed, and a restart with the primary down
// had no copy to serve.
func TestZoneDiskCopyWrittenAgainAfterAFailedWrite(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a", "b"), nil)
	opt := zoneTestOptions(t, nil)
	z, err := NewZone("axfr://"+p.addr+"/rpz.test", opt)
	require.NoError(t, err)
	path := cachePath(opt.CacheDir, z.Name())
	require.NoError(t, os.MkdirAll(path, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(path, "x"), nil, 0o644))
	rec := &receiver{}
	stop := runWith(t, z, rec)
	first := rec.waitCount(t, 1)
	waitStatus(t, z, func(st Status) bool { return st.CacheError != nil })

	require.NoError(t, os.RemoveAll(path))
	poke(t, z)
	waitStatus(t, z, func(st Status) bool { return st.CacheError == nil && st.LastError == nil })
	waitFile(t, path)
	stop()
	assert.Equal(t, 1, rec.count(), "the zone is current: nothing delivered again")

	// A restart delivers that disk copy before any network.
	_, rec2 := startZone(t, p, opt)
	c := rec2.waitCount(t, 1)
	assert.True(t, c.FromCache)
	assert.Equal(t, uint32(5), c.Serial)
	assert.Equal(t, owners(first), owners(c))
	assert.True(t, c.Fetched.Equal(first.Fetched), "the disk copy keeps the zone's fetch time")
}

func TestZoneCorruptCacheIgnored(t *testing.T) {
	p := startFakePrimary(t, testZone, 5, cnames(testZone, "a"), nil)
	opt := zoneTestOptions(t, nil)
	z, rec := startZone(t, p, opt)
	rec.waitCount(t, 1)
	path := cachePath(opt.CacheDir, z.Name())
	waitFile(t, path)
	require.NoError(t, corrupt(path))

	again, rec2 := startZone(t, p, opt)
	c := rec2.waitCount(t, 1)
	assert.False(t, c.FromCache, "the corrupt disk copy is not delivered; the network's is")
	assert.Equal(t, TransferAXFR, c.Transfer)
	assert.Equal(t, 1, rec2.count())
	waitStatus(t, again, func(st Status) bool { return st.Transfers[TransferAXFR] == 1 && st.HasContent })
}

// TestNotifyFromOtherAddressRefused sends real NOTIFY messages to a
// Notifier listening on 127.0.0.1: from the primary's address (127.0.0.1)
// and from another loopback address (127.0.0.2, bindable on Linux, where
// all of 127.0.0.0/8 is the loopback).
func TestNotifyFromOtherAddressRefused(t *testing.T) {
	z, err := NewZone("axfr://127.0.0.1:5300/rpz.test", Options{})
	require.NoError(t, err)
	port := serveNotify(t, NewNotifier([]Source{z}))
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	notify := func(from, zone string, qtype uint16, opcode int) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetNotify(zone)
		q.Question[0].Qtype = qtype
		q.Opcode = opcode
		c := &dns.Client{Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}}
		m, _, err := c.Exchange(q, server)
		require.NoError(t, err)
		assert.Equal(t, q.Id, m.Id)
		assert.True(t, m.Response)
		return m
	}
	for _, tc := range []struct {
		name       string
		from, zone string
		qtype      uint16
		opcode     int
		rcode      int
		acted      bool
	}{
		{name: "from the primary", from: "127.0.0.1", zone: "rpz.test.", qtype: dns.TypeSOA, opcode: dns.OpcodeNotify, rcode: dns.RcodeSuccess, acted: true},
		{name: "from the primary, name in capitals", from: "127.0.0.1", zone: "RPZ.Test.", qtype: dns.TypeSOA, opcode: dns.OpcodeNotify, rcode: dns.RcodeSuccess, acted: true},
		{name: "from another address", from: "127.0.0.2", zone: "rpz.test.", qtype: dns.TypeSOA, opcode: dns.OpcodeNotify, rcode: dns.RcodeRefused},
		{name: "for another zone", from: "127.0.0.1", zone: "other.test.", qtype: dns.TypeSOA, opcode: dns.OpcodeNotify, rcode: dns.RcodeNotAuth},
		{name: "not SOA", from: "127.0.0.1", zone: "rpz.test.", qtype: dns.TypeA, opcode: dns.OpcodeNotify, rcode: dns.RcodeNotImplemented},
		{name: "a query", from: "127.0.0.1", zone: "rpz.test.", qtype: dns.TypeSOA, opcode: dns.OpcodeQuery, rcode: dns.RcodeNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := z.Status()
			m := notify(tc.from, tc.zone, tc.qtype, tc.opcode)
			assert.Equal(t, dns.RcodeToString[tc.rcode], dns.RcodeToString[m.Rcode])
			assert.Equal(t, tc.opcode, m.Opcode)
			require.Len(t, m.Question, 1)
			assert.Equal(t, tc.zone, m.Question[0].Name)
			assert.Equal(t, tc.acted, m.Authoritative)
			// Run is not running: the wake-up stays in the channel.
			assert.Equal(t, tc.acted, len(z.notify) == 1, "a check was asked for")
			select {
			case <-z.notify:
			default:
			}
			after := z.Status()
			if tc.opcode == dns.OpcodeNotify && tc.qtype == dns.TypeSOA && tc.zone != "other.test." {
				assert.Equal(t, tc.acted, after.NotifiesAccepted == before.NotifiesAccepted+1)
				assert.Equal(t, !tc.acted, after.NotifiesRefused == before.NotifiesRefused+1)
			}
		})
	}

	// Direct calls: an IPv4-mapped source is its IPv4 address; a message
	// that is no NOTIFY is left to the caller.
	n := NewNotifier([]Source{z})
	q := new(dns.Msg)
	q.SetNotify("rpz.test.")
	m := n.Reply(netip.MustParseAddr("::ffff:127.0.0.1"), q, nil)
	require.NotNil(t, m)
	assert.Equal(t, dns.RcodeSuccess, m.Rcode)
	q.Opcode = dns.OpcodeQuery
	assert.Nil(t, n.Reply(netip.MustParseAddr("127.0.0.1"), q, nil))
	q.Opcode = dns.OpcodeNotify
	q.Question = append(q.Question, q.Question[0])
	assert.Equal(t, dns.RcodeFormatError, n.Reply(netip.MustParseAddr("127.0.0.1"), q, nil).Rcode)
}

// TestZoneNotifyFloodRateLimited: NOTIFYs from the primary's address
// (anyone can forge its source address over UDP) sent back to back over
// real sockets lead to at most one SOA query a second (NotifyInterval),
// not one each; the NOTIFYs inside a second are not lost (a check follows
// when the second is over), and a NOTIFY after the burst still brings a
// new serial.
func TestZoneNotifyFloodRateLimited(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	// The first look is over (its disk copy written): Run waits, ready to
	// act on a NOTIFY at once.
	waitStatus(t, z, func(st Status) bool { return !st.LastSuccess.IsZero() })
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(serveNotify(t, NewNotifier([]Source{z}))))
	c := &dns.Client{Timeout: 2 * time.Second}
	conn, err := c.Dial(server)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	notify := func() {
		t.Helper()
		q := new(dns.Msg)
		q.SetNotify(testZone)
		m, _, err := c.ExchangeWithConn(q, conn)
		require.NoError(t, err)
		require.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[m.Rcode], "accepted")
	}
	soaQueries := func() int {
		n := 0
		for _, qt := range p.asked() {
			if qt == dns.TypeSOA {
				n++
			}
		}
		return n
	}
	before := soaQueries()

	// The first NOTIFY after a quiet time is acted on at once; then 200
	// more come back to back.
	start := time.Now()
	notify()
	require.Eventually(t, func() bool { return soaQueries()-before >= 1 }, waitFor, tick, "the first NOTIFY is acted on")
	for range 200 {
		notify()
	}
	during := soaQueries() - before
	elapsed := time.Since(start)
	// One check at once, then at most one a second: a bound that grows
	// with the time all this took, so a slow machine does not fail it.
	assert.LessOrEqual(t, during, 1+int(elapsed/NotifyInterval), "SOA queries for 201 NOTIFYs in %v", elapsed)
	assert.Equal(t, uint64(201), z.Status().NotifiesAccepted)

	// The NOTIFYs that came inside the second are not lost: one more
	// check follows.
	require.Eventually(t, func() bool { return soaQueries()-before >= 2 }, waitFor, tick,
		"waiting for the check the burst's NOTIFYs asked for")

	// The zone changes and the primary sends one more NOTIFY: the check
	// it asks for (perhaps at the end of a second) picks up the serial.
	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.records = cnames(testZone, "a", "b", "c")
	})
	notify()
	got := rec.waitCount(t, 2)
	assert.Equal(t, uint32(2), got.Serial)
	assert.Equal(t, []string{"a", "b", "c"}, owners(got))
	assert.Equal(t, uint64(202), z.Status().NotifiesAccepted)
}

func TestNewZoneErrors(t *testing.T) {
	// A name of 256 octets in wire form, one more than RFC 1035 allows,
	// which dns.IsDomainName takes (miekg/dns#1552).
	long := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("b", 62)
	for _, tc := range []struct {
		entry string
		tsig  *TSIG
		want  string
	}{
		{entry: "axfr://127.0.0.1", want: "want one zone name"},
		{entry: "axfr://127.0.0.1/", want: "want one zone name"},
		{entry: "axfr://127.0.0.1/a/b", want: "want one zone name"},
		{entry: "axfr:///rpz.test", want: "no primary host"},
		{entry: "axfr://127.0.0.1:0/rpz.test", want: "bad port"},
		{entry: "axfr://127.0.0.1:70000/rpz.test", want: "bad port"},
		{entry: "axfr://127.0.0.1/rpz.test?x=1", want: "nothing more"},
		{entry: "axfr://127.0.0.1/rpz.test#x", want: "nothing more"},
		{entry: "axfr://127.0.0.1/.", want: "not a domain name"},
		{entry: "axfr://127.0.0.1/rpz..test", want: "not a domain name"},
		{entry: "axfr://127.0.0.1/" + long, want: "not a domain name"},
		{entry: "axfr://127.0.0.1/rpz.test", tsig: &TSIG{Name: long, Algorithm: "hmac-sha256", Secret: "YWJj"}, want: "tsig: name:"},
		// miekg/dns would sign with key k\231. (RFC 1035 §5.1: \DDD is 0 to 255).
		{entry: "axfr://127.0.0.1/rpz.test", tsig: &TSIG{Name: `k\999.`, Algorithm: "hmac-sha256", Secret: "YWJj"}, want: "tsig: name:"},
		{entry: `axfr://127.0.0.1/rpz\2.test`, want: "not a domain name"},
		{entry: "axfr://127.0.0.1/rpz.test", tsig: &TSIG{Name: "k.", Algorithm: "hmac-md5", Secret: "YWJj"}, want: "algorithm"},
		{entry: "axfr://127.0.0.1/rpz.test", tsig: &TSIG{Name: "k.", Algorithm: "hmac-sha256", Secret: "not base64!"}, want: "secret"},
		{entry: "axfr://127.0.0.1/rpz.test", tsig: &TSIG{Algorithm: "hmac-sha256", Secret: "YWJj"}, want: "tsig: name: empty"},
		// Primaries no transfer can reach (blocklist.Unusable).
		{entry: "axfr://[::a00:1]/rpz.test", want: "the host ::a00:1 is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291), which no host has; write axfr://10.0.0.1/rpz.test"},
		{entry: "axfr://[fe80::1]:5300/rpz.test", want: "is a link-local address"},
		{entry: "axfr://239.1.1.1/rpz.test", want: "is a multicast address"},
		{entry: "axfr://255.255.255.255/rpz.test", want: "is a broadcast address"},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			_, err := New(tc.entry, Options{TSIG: tc.tsig})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), tc.entry)
		})
	}
	// A link-local primary with its interface is reached.
	_, err := NewZone("axfr://[fe80::1%25eth0]/rpz.test", Options{})
	require.NoError(t, err)
	// 255 octets, the most there is, are a name.
	_, err = NewZone("axfr://127.0.0.1/"+long[1:], Options{TSIG: &TSIG{Name: long[1:], Algorithm: "hmac-sha256", Secret: "YWJj"}})
	require.NoError(t, err)
	z, err := NewZone("AXFR://[::1]/RPZ.Test.", Options{TSIG: &TSIG{Name: "Xfr-Key", Algorithm: "HMAC-SHA256.", Secret: "YWJj"}})
	require.NoError(t, err)
	assert.Equal(t, "rpz.test.", z.Origin())
	assert.Equal(t, "xfr-key.", z.client.tsig.Name)
	assert.Equal(t, dns.HmacSHA256, z.client.tsig.Algorithm)
	assert.Equal(t, "53", z.port)
}

func TestSerialNewer(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		want bool
	}{
		{2, 1, true},
		{1, 2, false},
		{1, 1, false},
		{0, 0xffffffff, true}, // wrapped
		{0xffffffff, 0, false},
		{0x80000000, 0, false}, // exactly half way: undefined, not newer
		{0x7fffffff, 0, true},
	} {
		assert.Equal(t, tc.want, serialNewer(tc.a, tc.b), "%d vs %d", tc.a, tc.b)
	}
}

func TestInZone(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"rpz.test.", true},
		{"RPZ.Test.", true},
		{"a.rpz.test.", true},
		{"*.a.b.rpz.test.", true},
		{"xrpz.test.", false},
		{`a\.rpz.test.`, false},   // one label "a.rpz", then "test"
		{`a\\.rpz.test.`, true},   // the label `a\`, then the zone
		{`a\046rpz.test.`, false}, // \046 is a dot inside a label
		{"test.", false},
		{"rpz.test.example.", false},
	} {
		assert.Equal(t, tc.want, inZone(tc.name, "rpz.test."), tc.name)
		assert.Equal(t, dns.IsSubDomain("rpz.test.", tc.name), inZone(tc.name, "rpz.test."), "as miekg/dns says: %s", tc.name)
	}
	assert.True(t, inZone("anything.", "."))
}

// TestZoneRepeatedRecordRemovedOnce: a primary whose zone holds a record
// twice (a database row repeated: PowerDNS issue 5494, duplicates in a
// gmysql backend's AXFR), the same owner, type, class and RDATA, in any
// case and with any TTL, is one record (RFC 2181 §5). An IXFR that turns
// the passthru at ok into a block removes it once; the zone held, the
// copy delivered and the disk copy a restart serves hold the block alone.
// Before, the repeat stayed: the zone held ok's passthru next to its
// block, and a list built from the whole zone (a restart from the disk
// copy) kept the passthru, which beats every block.
func TestZoneRepeatedRecordRemovedOnce(t *testing.T) {
	passthru := func(owner string, ttl uint32) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: owner + "." + testZone, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
			Target: "rpz-passthru."}
	}
	for _, tc := range []struct {
		name   string
		repeat dns.RR
	}{
		{name: "the same record", repeat: passthru("ok", 60)},
		{name: "another TTL", repeat: passthru("ok", 300)},
		{name: "another case", repeat: passthru("OK", 60)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startFakePrimary(t, testZone, 1, []dns.RR{cname(testZone, "a"), passthru("ok", 60), tc.repeat}, nil)
			opt := zoneTestOptions(t, nil)
			z, rec := startZone(t, p, opt)
			rec.waitCount(t, 1)
			p.update(func(p *fakePrimary) {
				p.soa = testSOA(testZone, 2)
				p.ixfr = func(have uint32) []dns.RR {
					return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, del: []dns.RR{passthru("ok", 60)}, add: cnames(testZone, "ok")})
				}
			})
			poke(t, z)
			c := rec.waitCount(t, 2)
			assert.Equal(t, TransferIXFR, c.Transfer)
			assert.Equal(t, []string{"a", "ok"}, owners(c))
			assert.Equal(t, 1, c.Removed)
			for _, rr := range c.Records {
				if cn, ok := rr.(*dns.CNAME); ok {
					assert.NotEqual(t, "rpz-passthru.", cn.Target, "left in the zone: %s", rr)
				}
			}
			l, _ := blocklist.FromZone(z.Name(), [32]byte{}, len(c.Records), func(h rpz.Handler) (rpz.Zone, error) {
				return rpz.FromRecords(c.Zone, c.Records, h), nil
			})
			_, tr, ok := l.MatchTrigger("ok")
			require.True(t, ok)
			assert.Equal(t, blocklist.ActionNXDOMAIN, tr.Action, "ok, built whole from the zone")

			var disk *Content
			require.Eventually(t, func() bool {
				c, err := z.readCopy()
				disk = c
				return err == nil && c.Serial == 2
			}, waitFor, tick, "waiting for the disk copy of serial 2")
			assert.Equal(t, []string{"a", "ok"}, owners(*disk), "the disk copy a restart serves")
		})
	}
}

// TestZoneManyRecordsOfOneOwner: the repeats of a zone held are dropped
// in time linear in its records, an owner with many of them too (a
// primary's TXT or A records at one name). Compared pair by pair, the
// 30,000 records of one owner here took half a minute, at every AXFR and
// every start from the disk copy, the zone source doing nothing else
// meanwhile. The repeats among them are still dropped (another TTL,
// another case of the owner), and a record that differs in its RDATA's
// case alone (TXT, compared exactly) is not one.
func TestZoneManyRecordsOfOneOwner(t *testing.T) {
	const n = 30000
	txt := func(owner string, ttl uint32, text string) dns.RR {
		return &dns.TXT{Hdr: dns.RR_Header{Name: owner + "." + testZone, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
			Txt: []string{text}}
	}
	rrs := make([]dns.RR, 0, n+3)
	for i := range n {
		rrs = append(rrs, txt("big", 60, "r"+strconv.Itoa(i)))
	}
	rrs = append(rrs, txt("big", 300, "r7"), txt("BIG", 60, "r9"), txt("big", 60, "R7"))
	done := make(chan *zoneCopy, 1)
	go func() { done <- newZoneCopy(testSOA(testZone, 1), rrs) }()
	var z *zoneCopy
	require.Eventually(t, func() bool {
		select {
		case z = <-done:
			return true
		default:
			return false
		}
	}, 5*time.Second, 10*time.Millisecond, "the zone of %d records of one owner is not held within 5 s", n)
	assert.Equal(t, n+1, z.live, "the two repeats dropped, R7 kept")
	assert.Equal(t, []bool{true, true, false}, z.dead[n:])
	assert.False(t, z.dead[7])
	assert.False(t, z.dead[9])
}

// TestSOAQueryResentOverUDP: one datagram lost, the SOA query's or its
// answer's, cost the query's whole timeout and then the SOA retry
// interval before the zone was checked again. The query is sent again
// after 2 s (doubling) within its timeout, and the answer to the second
// is taken.
func TestSOAQueryResentOverUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	asked := make(chan int, 4)
	go func() {
		buf := make([]byte, dns.MaxMsgSize)
		for i := 1; ; i++ {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			asked <- i
			if i == 1 {
				continue // lost
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			r := new(dns.Msg).SetReply(q)
			r.Authoritative = true
			r.Answer = []dns.RR{testSOA(testZone, 7)}
			b, _ := r.Pack()
			_, _ = pc.WriteTo(b, from)
		}
	}()
	c := xfrClient{zone: testZone, timeout: 10 * time.Second, maxBytes: DefaultMaxBytes}
	began := time.Now()
	soa, err := c.querySOA(t.Context(), pc.LocalAddr().String())
	require.NoError(t, err)
	assert.Equal(t, uint32(7), soa.Serial)
	assert.Less(t, time.Since(began), 5*time.Second, "answered after one resend, not the timeout")
	assert.Len(t, asked, 2, "asked twice")
}

// TestZoneSOAOverTCPWhenUDPFails: a primary reached over TCP alone (a
// firewall that lets zone transfers through and drops UDP) never answered
// the SOA query, sent over UDP only, so the zone was never transferred,
// not even at start: its policy blocked none of its names. BIND's
// secondary asks over TCP when the UDP queries fail (named.conf
// try-tcp-refresh, yes by default), and transfers.
func TestZoneSOAOverTCPWhenUDPFails(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	p.update(func(p *fakePrimary) { p.dropUDP = true })
	opt := zoneTestOptions(t, nil)
	opt.Timeout = 500 * time.Millisecond
	z, rec := startZone(t, p, opt)
	c := rec.waitCount(t, 1)
	assert.Equal(t, uint32(1), c.Serial)
	assert.Equal(t, []string{"a"}, owners(c))

	p.update(func(p *fakePrimary) {
		p.soa = testSOA(testZone, 2)
		p.records = cnames(testZone, "a", "b")
	})
	poke(t, z)
	c = rec.waitCount(t, 2)
	assert.Equal(t, uint32(2), c.Serial)
	assert.Equal(t, []string{"a", "b"}, owners(c))
	assert.NoError(t, z.Status().LastError)
}

// TestZoneBrokenIXFRFollowedByAXFR: an IXFR that breaks off under way (a
// primary or a middlebox that drops a long answer:
// TechnitiumSoftware/DnsServer#1885) or that cannot be read was an error
// and the next look asked the same IXFR again, so the zone never moved on
// while the primary served it whole to an AXFR. BIND's secondary follows
// any failed IXFR with an AXFR (xfrin_fail: DNS_R_BADIXFR); a TSIG error
// is still not followed (TestZoneFailuresKeepTheZone).
func TestZoneBrokenIXFRFollowedByAXFR(t *testing.T) {
	for _, tc := range []struct {
		name string
		ixfr func(have uint32) []dns.RR
		cut  int
	}{
		{name: "cut off", cut: 1, ixfr: func(uint32) []dns.RR {
			return ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, del: cnames(testZone, "c", "d", "e", "f")})
		}},
		{name: "sequences out of order", ixfr: func(uint32) []dns.RR {
			a := ixfrAnswer(testZone, ixfrStep{from: 1, to: 2, del: cnames(testZone, "c", "d", "e", "f")})
			return append(a[:len(a)-1], testSOA(testZone, 7), testSOA(testZone, 2))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b", "c", "d", "e", "f"), nil)
			p.perMessage = 2
			z, rec := startZone(t, p, zoneTestOptions(t, nil))
			rec.waitCount(t, 1)
			p.update(func(p *fakePrimary) {
				p.soa = testSOA(testZone, 2)
				p.records = cnames(testZone, "a", "b")
				p.ixfr, p.ixfrCutAfter = tc.ixfr, tc.cut
			})
			poke(t, z)
			c := rec.waitCount(t, 2)
			assert.Equal(t, TransferAXFR, c.Transfer)
			assert.Equal(t, uint32(2), c.Serial)
			assert.Equal(t, []string{"a", "b"}, owners(c))
			assert.Equal(t, 4, c.Removed)
			var types []string
			for _, q := range p.asked() {
				types = append(types, dns.TypeToString[q])
			}
			assert.Equal(t, []string{"IXFR", "AXFR"}, types[len(types)-2:], "the IXFR, then the AXFR in the same look")
			require.Eventually(t, func() bool { return z.Status().LastError == nil }, waitFor, tick)
		})
	}
}

// TestZoneSOAAnswerOfAHeaderAlone: an answer to the SOA query that is a
// header alone, its QDCOUNT still counting the question (as some servers
// send a failure or a truncated answer: miekg/dns reads it as a header,
// without a question), is read by its header, as the upstream answers
// are (a header alone is no message cut short): one with TC set is asked
// again over TCP, and the zone transferred; a REFUSED is the primary's
// refusal, which the error names. Taken for a message that ends before
// the question its header counts, the first never reached TCP, and the
// second said nothing of the refusal.
func TestZoneSOAAnswerOfAHeaderAlone(t *testing.T) {
	t.Run("truncated", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
		p.update(func(p *fakePrimary) { p.udpSOAHeader = &headerOnly{truncated: true} })
		z, rec := startZone(t, p, zoneTestOptions(t, nil))
		c := rec.waitCount(t, 1)
		assert.Equal(t, uint32(1), c.Serial)
		assert.Equal(t, []string{"a"}, owners(c))
		assert.NoError(t, z.Status().LastError)
	})
	t.Run("truncated over TCP too", func(t *testing.T) {
		// TCP has no larger transport to ask over: a TC answer there is
		// unusable, as an upstream's is (ErrAnswerTruncated), and BIND
		// says "truncated TCP response" of one.
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
		p.update(func(p *fakePrimary) { p.udpSOAHeader, p.tcpSOATC = &headerOnly{truncated: true}, true })
		z, rec := startZone(t, p, zoneTestOptions(t, nil))
		require.Eventually(t, func() bool { return z.Status().LastError != nil }, waitFor, tick)
		assert.ErrorContains(t, z.Status().LastError, "SOA query: answer has TC set over TCP")
		assert.Zero(t, rec.count(), "nothing is delivered")
		assert.NotContains(t, p.asked(), dns.TypeAXFR, "no transfer follows")
	})
	t.Run("refused", func(t *testing.T) {
		p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
		p.update(func(p *fakePrimary) { p.udpSOAHeader = &headerOnly{rcode: dns.RcodeRefused} })
		z, rec := startZone(t, p, zoneTestOptions(t, nil))
		require.Eventually(t, func() bool { return z.Status().LastError != nil }, waitFor, tick)
		assert.ErrorContains(t, z.Status().LastError, "SOA query: primary answered REFUSED")
		assert.Zero(t, rec.count(), "nothing is delivered")
	})
}

// TestZoneSOAQueryIgnoresStrayDatagrams: over UDP, a datagram with
// another ID than the SOA query's answers some other query (a late answer
// to one sent before, or a spoofer's guess) and is ignored whatever it
// holds, as exchange says; one that ends before the records its header
// counts ended the query with an error instead, and the look with it,
// since it was unpacked before its ID was looked at.
func TestZoneSOAQueryIgnoresStrayDatagrams(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	p.update(func(p *fakePrimary) { p.strayUDP = true })
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	c := rec.waitCount(t, 1)
	assert.Equal(t, uint32(1), c.Serial)
	assert.NoError(t, z.Status().LastError)
	assert.Equal(t, qtypes(dns.TypeSOA, dns.TypeAXFR), qtypes(p.asked()...), "answered over UDP: not asked again over TCP")
}

// TestZoneSOAQueryFloodedWithStrayDatagrams: over UDP, sixteen datagrams
// with another ID than the SOA query's before its answer (a flood of
// spoofed answers guessing the ID) end the wait as no answer, and the
// query is asked again over TCP, as for a lost one: the flood does not
// keep the zone from being checked.
func TestZoneSOAQueryFloodedWithStrayDatagrams(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	p.update(func(p *fakePrimary) { p.strays = 16 })
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	c := rec.waitCount(t, 1)
	assert.Equal(t, uint32(1), c.Serial)
	assert.NoError(t, z.Status().LastError)
	assert.Equal(t, qtypes(dns.TypeSOA, dns.TypeSOA, dns.TypeAXFR), qtypes(p.asked()...), "asked again over TCP")
}

// TestZoneSOATruncatedAndCutShort: an answer to the SOA query over UDP
// with TC set that ends before the records its header counts (the SOA
// counted, not held: a truncating server or middlebox may cut a datagram
// so and leave the counts) is truncated all the same, and asked again over
// TCP; nothing of it is used. Taken for a message that ends before its
// records, it failed the look, where it was asked again over TCP before
// the count check (5eba6ef), as Unbound goes to TCP on TC before reading
// the records.
func TestZoneSOATruncatedAndCutShort(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a"), nil)
	p.update(func(p *fakePrimary) { p.udpSOACut = true })
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	c := rec.waitCount(t, 1)
	assert.Equal(t, uint32(1), c.Serial)
	assert.NoError(t, z.Status().LastError)
	assert.Equal(t, qtypes(dns.TypeSOA, dns.TypeSOA, dns.TypeAXFR), qtypes(p.asked()...), "asked again over TCP")
}

// TestZoneIXFRAnsweredWithAnEmptyZone: an IXFR answered AXFR-style with a
// zone of its SOA alone (the new SOA twice: every record removed) is that
// zone, whole, read at its closing SOA (RFC 1995 §4: the answer is an
// AXFR's), not a condensed answer waited on until the read times out and
// followed by an AXFR.
func TestZoneIXFRAnsweredWithAnEmptyZone(t *testing.T) {
	p := startFakePrimary(t, testZone, 1, cnames(testZone, "a", "b"), nil)
	z, rec := startZone(t, p, zoneTestOptions(t, nil))
	rec.waitCount(t, 1)
	p.update(func(p *fakePrimary) {
		p.soa, p.records, p.queries = testSOA(testZone, 2), nil, nil
	})
	poke(t, z)
	c := rec.waitCount(t, 2)
	assert.Equal(t, TransferAXFR, c.Transfer)
	assert.Equal(t, uint32(2), c.Serial)
	assert.Empty(t, owners(c))
	assert.Equal(t, 2, c.Removed)
	assert.Equal(t, qtypes(dns.TypeSOA, dns.TypeIXFR), qtypes(p.asked()...))
}
