package resolver

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zapcore"
)

// TestSignedNotifyFromBIND: BIND signs its NOTIFY with the transfer key
// (`also-notify { ADDRESS key NAME; }`, as an operator who uses TSIG for
// everything writes it) and requires a signed answer. Answered unsigned,
// BIND took each NOTIFY for a failed one: it logged the failure and sent
// it again. Now the answer is signed, BIND logs no failure, and the
// change is served by IXFR as with an unsigned NOTIFY.
func TestSignedNotifyFromBIND(t *testing.T) {
	const zone = "rpz.test."
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	port := testnet.FreePort(t, "127.0.0.1")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, NotifyPort: port, Key: &key, IXFR: true, SignNotify: true, Debug: 3},
		testnet.RPZText(zone, 1, "tiktok.com CNAME ."))
	f := startSourceFence(t, zoneConfig(t, up.addr, p.Entry(), key), fmt.Sprintf("127.0.0.1:%d", port))
	const gov = "127.0.0.2"
	f.eventuallyRcode(t, gov, "tiktok.com.", dns.RcodeNameError, 5*time.Second)

	start := time.Now()
	p.SetZone(testnet.RPZText(zone, 2, "tiktok.com CNAME .", "capcut.com CNAME ."), 2)
	f.eventuallyRcode(t, gov, "capcut.com.", dns.RcodeNameError, 2*time.Second)
	t.Logf("change served %v after the zone file was rewritten", time.Since(start))
	st := f.status(t, p.Entry())
	assert.Positive(t, st.NotifiesAccepted)
	// At debug level 3 BIND logs the answer to each NOTIFY ("notify
	// response from 127.0.0.1#PORT: NOERROR"), or its failure ("notify to
	// 127.0.0.1#PORT failed: expected a TSIG or SIG(0)").
	// BIND logs the answer to each NOTIFY at debug level 3: "notify
	// response from 127.0.0.1#PORT: NOERROR", or, for an answer it does
	// not take, "notify to 127.0.0.1#PORT failed: expected a TSIG or
	// SIG(0)". The first NOTIFY, sent before dnsfence listened, failed
	// with "connection refused".
	response := fmt.Sprintf("notify response from 127.0.0.1#%d: NOERROR", port)
	require.Eventually(t, func() bool { return strings.Contains(p.Log(), response) }, 2*time.Second, 20*time.Millisecond,
		"BIND takes the answer to its signed NOTIFY")
	assert.NotContains(t, p.Log(), "expected a TSIG")
}

// TestSignedNotify sends signed NOTIFYs to a serving dnsfence from the
// primary's address, over UDP and TCP, as a TSIG client checks them (RFC
// 8945 §5.2, §5.3): the right key is acted on and answered signed over
// the NOTIFY's MAC; a key dnsfence does not have (by name, or by
// algorithm), a wrong MAC and a time outside the fudge get NOTAUTH with
// the TSIG error and are not acted on, counted refused and warned of once;
// a TSIG that is not the last record gets FORMERR.
func TestSignedNotify(t *testing.T) {
	const zone = "rpz.test."
	key, p, f := keyedZoneFence(t, zone)

	other := testnet.NewBINDKey(t, "xfr-key.").Secret
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			name      string
			keyName   string
			algorithm string
			secret    string // the signer's
			skew      time.Duration
			rcode     int
			tsigError uint16
			signed    bool // the answer carries a MAC
		}{
			{name: "right key", keyName: key.Name, algorithm: dns.HmacSHA256, secret: key.Secret,
				rcode: dns.RcodeSuccess, signed: true},
			{name: "key name in capitals", keyName: strings.ToUpper(key.Name), algorithm: dns.HmacSHA256, secret: key.Secret,
				rcode: dns.RcodeSuccess, signed: true},
			{name: "wrong secret", keyName: key.Name, algorithm: dns.HmacSHA256, secret: other,
				rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadSig},
			{name: "unknown key", keyName: "other-key.", algorithm: dns.HmacSHA256, secret: key.Secret,
				rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadKey},
			{name: "other algorithm", keyName: key.Name, algorithm: dns.HmacSHA512, secret: key.Secret,
				rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadKey},
			{name: "signed an hour ago", keyName: key.Name, algorithm: dns.HmacSHA256, secret: key.Secret, skew: -time.Hour,
				rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadTime, signed: true},
		} {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				before := f.status(t, p.Entry())
				q := new(dns.Msg)
				q.SetNotify(zone)
				signedAt := time.Now().Add(tc.skew).Unix()
				q.SetTsig(dns.Fqdn(tc.keyName), tc.algorithm, 300, signedAt)
				wire, mac, err := dns.TsigGenerate(q, tc.secret, "", false)
				require.NoError(t, err)
				exchange := map[string]func(*testing.T, string, []byte) []byte{"udp": rawExchange, "tcp": rawExchangeTCP}[network]
				answer := exchange(t, f.addr, wire)
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(answer))
				assert.Equal(t, dns.RcodeToString[tc.rcode], dns.RcodeToString[r.Rcode])
				assert.Equal(t, q.Id, r.Id)
				assert.Equal(t, dns.OpcodeNotify, r.Opcode)
				tsig := r.IsTsig()
				require.NotNil(t, tsig, "the answer to a signed NOTIFY ends in a TSIG (RFC 8945 §5.3)")
				assert.Equal(t, dns.RcodeToString[int(tc.tsigError)], dns.RcodeToString[int(tsig.Error)])
				assert.Equal(t, strings.ToLower(dns.Fqdn(tc.keyName)), strings.ToLower(tsig.Hdr.Name))
				assert.Equal(t, tc.algorithm, dns.CanonicalName(tsig.Algorithm))
				switch {
				case tc.rcode == dns.RcodeSuccess:
					// Signed over the NOTIFY's MAC, with the key the
					// NOTIFY named (§4.3.1).
					assert.NoError(t, dns.TsigVerify(answer, key.Secret, mac, false))
				case tc.signed:
					// miekg/dns verifies no NOTAUTH (ErrAuth): the MAC is
					// there, of the key's algorithm's length.
					assert.EqualValues(t, 32, tsig.MACSize, "a BADTIME answer is signed (§5.2.3)")
				default:
					assert.Zero(t, tsig.MACSize, "a BADKEY or BADSIG answer goes unsigned (§5.3.2)")
				}
				if tc.tsigError == dns.RcodeBadTime {
					other, err := hex.DecodeString(tsig.OtherData)
					require.NoError(t, err)
					require.Len(t, other, 6, "the server's time (§5.2.3)")
					assert.EqualValues(t, signedAt, tsig.TimeSigned, "the request's time")
					var now int64
					for _, b := range other {
						now = now<<8 | int64(b)
					}
					assert.InDelta(t, time.Now().Unix(), now, 5)
				}
				after := f.status(t, p.Entry())
				if tc.rcode == dns.RcodeSuccess {
					assert.True(t, r.Authoritative)
					assert.Equal(t, before.NotifiesAccepted+1, after.NotifiesAccepted, "acted on")
				} else {
					assert.Equal(t, before.NotifiesAccepted, after.NotifiesAccepted, "not acted on")
					assert.Equal(t, before.NotifiesRefused+1, after.NotifiesRefused, "counted refused")
				}
			})
		}
	}

	// A NOTIFY whose TSIG does not verify is warned of by its zone, once a
	// minute however many came (12 above), and counted.
	warned := f.logs.FilterMessageSnippet("NOTIFY not acted on: its TSIG does not verify").FilterLevelExact(zapcore.WarnLevel).AllUntimed()
	require.Len(t, warned, 1)
	assert.Equal(t, p.Entry(), warned[0].ContextMap()["source"])
	assert.Contains(t, warned[0].ContextMap()["error"], "xfr-key.", "names the key")
	v, _ := metricValue(t, f.registry, "dnsfence_source_notifies_total", "source", p.Entry(), "result", "refused")
	assert.Equal(t, 8.0, v, "the 8 that did not verify")

	t.Run("TSIG not last", func(t *testing.T) {
		q := new(dns.Msg)
		q.SetNotify(zone)
		q.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
		wire, _, err := dns.TsigGenerate(q, key.Secret, "", false)
		require.NoError(t, err)
		signed := new(dns.Msg)
		require.NoError(t, signed.Unpack(wire))
		signed.Extra = append(signed.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 1232}})
		before := f.status(t, p.Entry())
		r := ask(t, f.addr, "127.0.0.1", "udp", signed)
		assert.Equal(t, dns.RcodeToString[dns.RcodeFormatError], dns.RcodeToString[r.Rcode])
		assert.Equal(t, before.NotifiesAccepted, f.status(t, p.Entry()).NotifiesAccepted, "not acted on")
	})
}

// TestNotifyOverTCP: a zone's primary sits outside allowed_clients, and
// its NOTIFY may come over TCP (RFC 1996 §3.1; BIND sends it so after one
// went unanswered over UDP). Its connections were closed at accept, as
// any other peer's outside allowed_clients: now the primary's address is
// admitted, its NOTIFY taken, and its queries still REFUSED; another
// peer outside allowed_clients is still closed at accept.
func TestNotifyOverTCP(t *testing.T) {
	const zone = "rpz.test."
	_, p, f := keyedZoneFence(t, zone)

	before := f.status(t, p.Entry()).NotifiesAccepted
	m := new(dns.Msg)
	m.SetNotify(zone)
	r := ask(t, f.addr, "127.0.0.1", "tcp", m)
	assert.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode])
	assert.True(t, r.Authoritative)
	assert.Equal(t, before+1, f.status(t, p.Entry()).NotifiesAccepted)
	r = ask(t, f.addr, "127.0.0.1", "tcp", question("www.example.org.", dns.TypeA, true))
	assert.Equal(t, dns.RcodeToString[dns.RcodeRefused], dns.RcodeToString[r.Rcode], "the primary is no client")

	_, err := exchange(f.addr, "127.0.0.3", "tcp", question("www.example.org.", dns.TypeA, true))
	assert.Error(t, err, "closed at accept: neither a client nor the primary")
	v, _ := metricValue(t, f.registry, "dnsfence_connections_refused_total", "transport", "tcp", "reason", "not_allowed")
	assert.Equal(t, 1.0, v)
}

// keyedZoneFence starts BIND as the primary of zone, which blocks
// tiktok.com, with a TSIG key, and a dnsfence on 127.0.0.1 that transfers
// it with that key, once it blocks by it.
func keyedZoneFence(t *testing.T, zone string) (testnet.BINDKey, *testnet.BIND, *sourceFence) {
	t.Helper()
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: &key}, testnet.RPZText(zone, 1, "tiktok.com CNAME ."))
	f := startSourceFence(t, zoneConfig(t, up.addr, p.Entry(), key), "127.0.0.1:0")
	f.eventuallyRcode(t, "127.0.0.2", "tiktok.com.", dns.RcodeNameError, 5*time.Second)
	return key, p, f
}

// TestSignedNotifyOtherZone: a NOTIFY signed with sources.tsig for a zone
// no source pulls (one a reload removed, whose primary still notifies)
// was answered NOTIMP unsigned, as an unsigned one is: RFC 8945 §5.3 signs
// the answer to a request whose TSIG holds, and BIND takes an unsigned
// answer for a failed NOTIFY ("expected a TSIG or SIG(0)") and sends it
// again. It is answered NOTAUTH (as BIND answers a NOTIFY for a zone it
// does not serve), signed over its MAC; one signed with a key dnsfence
// does not have gets NOTAUTH with BADKEY, unsigned; an unsigned one is
// still NOTIMP. Nothing is acted on.
func TestSignedNotifyOtherZone(t *testing.T) {
	const zone = "rpz.test."
	key, p, f := keyedZoneFence(t, zone)
	before := f.status(t, p.Entry())
	for _, network := range []string{"udp", "tcp"} {
		exchange := map[string]func(*testing.T, string, []byte) []byte{"udp": rawExchange, "tcp": rawExchangeTCP}[network]
		for _, tc := range []struct {
			name      string
			keyName   string // none: unsigned
			rcode     int
			tsigError uint16
		}{
			{name: "right key", keyName: key.Name, rcode: dns.RcodeNotAuth, tsigError: dns.RcodeSuccess},
			{name: "unknown key", keyName: "other-key.", rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadKey},
			{name: "unsigned", rcode: dns.RcodeNotImplemented},
		} {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				q := new(dns.Msg)
				q.SetNotify("other.test.")
				wire, err := q.Pack()
				require.NoError(t, err)
				mac := ""
				if tc.keyName != "" {
					q.SetTsig(tc.keyName, dns.HmacSHA256, 300, time.Now().Unix())
					wire, mac, err = dns.TsigGenerate(q, key.Secret, "", false)
					require.NoError(t, err)
				}
				answer := exchange(t, f.addr, wire)
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(answer))
				assert.Equal(t, dns.RcodeToString[tc.rcode], dns.RcodeToString[r.Rcode])
				assert.Equal(t, q.Id, r.Id)
				tsig := r.IsTsig()
				if tc.keyName == "" {
					assert.Nil(t, tsig)
					return
				}
				require.NotNil(t, tsig, "the answer to a signed NOTIFY ends in a TSIG (RFC 8945 §5.3)")
				assert.Equal(t, dns.RcodeToString[int(tc.tsigError)], dns.RcodeToString[int(tsig.Error)])
				if tc.tsigError == dns.RcodeSuccess {
					// miekg/dns verifies no NOTAUTH (ErrAuth): the
					// MAC is signed again over the NOTIFY's, as BIND
					// checks it.
					assertSignedOver(t, r, key.Secret, mac)
				} else {
					assert.Zero(t, tsig.MACSize, "a BADKEY answer goes unsigned (§5.3.2)")
				}
			})
		}
	}
	after := f.status(t, p.Entry())
	assert.Equal(t, before.NotifiesAccepted, after.NotifiesAccepted, "nothing acted on")
	assert.Equal(t, before.NotifiesRefused, after.NotifiesRefused, "nor counted for rpz.test.")
}

// TestSignedNotifyTruncatedMAC: RFC 8945 §5.2.2.1 lets a signer truncate
// its MAC (BIND's hmac-sha256-128 keys do) to no less than 10 octets and
// half the algorithm's: such a MAC is checked over its length, and then,
// sources.tsig truncating none, is too short for local policy: NOTAUTH
// with BADTRUNC (§5.2.4), signed (§5.3.2). One of another length (0, 8,
// more than the algorithm's) is a format error: FORMERR. All of them were
// answered BADSIG, as a wrong key is, and a primary whose key truncates
// was warned of as one whose key differs. None is acted on.
func TestSignedNotifyTruncatedMAC(t *testing.T) {
	const zone = "rpz.test."
	key, p, f := keyedZoneFence(t, zone)
	other := testnet.NewBINDKey(t, "xfr-key.").Secret
	for _, network := range []string{"udp", "tcp"} {
		exchange := map[string]func(*testing.T, string, []byte) []byte{"udp": rawExchange, "tcp": rawExchangeTCP}[network]
		for _, tc := range []struct {
			name      string
			secret    string
			size      int // octets of the MAC kept
			rcode     int
			tsigError uint16
		}{
			{name: "16 of 32", secret: key.Secret, size: 16, rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadTrunc},
			{name: "20 of 32", secret: key.Secret, size: 20, rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadTrunc},
			{name: "16 of 32, other key", secret: other, size: 16, rcode: dns.RcodeNotAuth, tsigError: dns.RcodeBadSig},
			{name: "15 of 32", secret: key.Secret, size: 15, rcode: dns.RcodeFormatError},
			{name: "8 of 32", secret: key.Secret, size: 8, rcode: dns.RcodeFormatError},
			{name: "none", secret: key.Secret, size: 0, rcode: dns.RcodeFormatError},
			{name: "33", secret: key.Secret, size: 33, rcode: dns.RcodeFormatError},
		} {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				before := f.status(t, p.Entry())
				q := new(dns.Msg)
				q.SetNotify(zone)
				q.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
				wire, mac, err := dns.TsigGenerate(q, tc.secret, "", false)
				require.NoError(t, err)
				signed := new(dns.Msg)
				require.NoError(t, signed.Unpack(wire))
				mac = (mac + "ff")[:2*tc.size]
				signed.IsTsig().MAC, signed.IsTsig().MACSize = mac, uint16(tc.size)
				wire, err = signed.Pack()
				require.NoError(t, err)

				r := new(dns.Msg)
				require.NoError(t, r.Unpack(exchange(t, f.addr, wire)))
				assert.Equal(t, dns.RcodeToString[tc.rcode], dns.RcodeToString[r.Rcode])
				assert.Equal(t, signed.Id, r.Id)
				tsig := r.IsTsig()
				switch tc.tsigError {
				case 0:
					assert.Nil(t, tsig, "the message is dropped, FORMERR returned")
				case dns.RcodeBadSig:
					require.NotNil(t, tsig)
					assert.Equal(t, dns.RcodeToString[dns.RcodeBadSig], dns.RcodeToString[int(tsig.Error)])
					assert.Zero(t, tsig.MACSize, "unsigned (§5.3.2)")
				default:
					require.NotNil(t, tsig)
					assert.Equal(t, dns.RcodeToString[int(tc.tsigError)], dns.RcodeToString[int(tsig.Error)])
					// Signed over the truncated MAC (§5.2.2.1), as BIND
					// checks it: miekg/dns verifies no NOTAUTH.
					assertSignedOver(t, r, key.Secret, mac)
				}
				assert.Equal(t, before.NotifiesAccepted, f.status(t, p.Entry()).NotifiesAccepted, "not acted on")
			})
		}
	}
}

// TestSignedNotifyWrongKeyFromBIND: BIND signs its NOTIFY with a key
// whose secret differs from sources.tsig's. The answer, NOTAUTH with
// BADSIG and no MAC (RFC 8945 §5.3.2), carried a Time Signed of 0
// (miekg/dns's TsigGenerate writes 0 into an unsigned TSIG), which BIND
// checks first: it logged 'notify to ... failed: clocks are
// unsynchronized', sending an operator to look at the clocks where the
// key differs. The answer keeps the NOTIFY's time, and BIND logs the
// TSIG error; dnsfence answers BADSIG with the NOTIFY's time on UDP too.
func TestSignedNotifyWrongKeyFromBIND(t *testing.T) {
	const zone = "rpz.test."
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	bindKey := key
	bindKey.Secret = testnet.NewBINDKey(t, "xfr-key.").Secret
	port := testnet.FreePort(t, "127.0.0.1")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, NotifyPort: port, Key: &bindKey, IXFR: true, SignNotify: true, Debug: 3},
		testnet.RPZText(zone, 1, "tiktok.com CNAME ."))
	f := startSourceFence(t, zoneConfig(t, up.addr, p.Entry(), key), fmt.Sprintf("127.0.0.1:%d", port))
	p.SetZone(testnet.RPZText(zone, 2, "tiktok.com CNAME .", "capcut.com CNAME ."), 2)

	failed := fmt.Sprintf("notify to 127.0.0.1#%d failed: ", port)
	require.Eventually(t, func() bool {
		return strings.Count(p.Log(), failed) > strings.Count(p.Log(), failed+"connection refused")
	}, 5*time.Second, 20*time.Millisecond, "BIND's NOTIFY answered")
	assert.False(t, strings.Contains(p.Log(), "clocks are unsynchronized"), "BIND blames the clocks")
	assert.True(t, strings.Contains(p.Log(), failed+"tsig indicates error"), "BIND reads the TSIG error")

	q := new(dns.Msg)
	q.SetNotify(zone)
	signedAt := time.Now().Add(-time.Minute).Unix()
	q.SetTsig(key.Name, dns.HmacSHA256, 300, signedAt)
	wire, _, err := dns.TsigGenerate(q, bindKey.Secret, "", false)
	require.NoError(t, err)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(rawExchange(t, f.addr, wire)))
	require.NotNil(t, r.IsTsig())
	assert.Equal(t, dns.RcodeToString[dns.RcodeBadSig], dns.RcodeToString[int(r.IsTsig().Error)])
	assert.EqualValues(t, signedAt, r.IsTsig().TimeSigned, "the NOTIFY's time")
}

// TestSignedNotifyAnswerTooBigForUDP: a signed NOTIFY whose answer does
// not fit the primary's UDP size (a zone and a key name of some hundreds
// of octets each, and 512 octets) was answered with TC and its TSIG
// dropped, unsigned, where RFC 8945 §5.3 answers with the question and the
// TSIG alone, signed, TC set and NOERROR: the primary takes an unsigned
// answer for a failed NOTIFY. It is so answered when that fits (the OPT's
// 11 octets are what it saves), and with TC unsigned when even that does
// not.
func TestSignedNotifyAnswerTooBigForUDP(t *testing.T) {
	const zone = "rpz.test."
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	key.Name = strings.Repeat(strings.Repeat("k", 62)+".", 3) + "xfr-key."
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: &key}, testnet.RPZText(zone, 1, "tiktok.com CNAME ."))
	f := startSourceFence(t, zoneConfig(t, up.addr, p.Entry(), key), "127.0.0.1:0")
	f.eventuallyRcode(t, "127.0.0.2", "tiktok.com.", dns.RcodeNameError, 5*time.Second)

	// notify is a signed NOTIFY, with an OPT of 512, for a zone no source
	// pulls whose name is n octets long in wire form (answered NOTAUTH,
	// signed); answerLen the length of that answer with its OPT, or
	// without.
	notify := func(n int) (*dns.Msg, []byte, string) {
		var b strings.Builder
		for rest := n - 1; rest > 0; {
			l := min(rest-1, 50)
			if rest-(l+1) == 1 {
				l-- // no empty label before the root
			}
			b.WriteString(strings.Repeat("z", l) + ".")
			rest -= l + 1
		}
		q := new(dns.Msg)
		q.SetNotify(b.String())
		q.SetEdns0(512, false)
		q.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
		wire, mac, err := dns.TsigGenerate(q, key.Secret, "", false)
		require.NoError(t, err)
		return q, wire, mac
	}
	answerLen := func(q *dns.Msg, mac string, opt bool) int {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Extra = nil
		if opt {
			m.SetEdns0(dns.DefaultMsgSize, false)
		}
		m.SetTsig(key.Name, dns.HmacSHA256, 300, time.Now().Unix())
		wire, _, err := dns.TsigGenerate(m, key.Secret, mac, false)
		require.NoError(t, err)
		return len(wire)
	}
	var fitsBare, fitsNone int
	for n := 3; n <= 255 && (fitsBare == 0 || fitsNone == 0); n++ {
		q, _, mac := notify(n)
		with, without := answerLen(q, mac, true), answerLen(q, mac, false)
		if fitsBare == 0 && with > 512 && without <= 512 {
			fitsBare = n
		}
		if without > 512 {
			fitsNone = n
		}
	}
	require.NotZero(t, fitsBare, "a zone name whose answer fits without its OPT alone")
	require.NotZero(t, fitsNone, "a zone name whose answer fits in no form")

	q, wire, mac := notify(fitsBare)
	answer := rawExchange(t, f.addr, wire)
	assert.LessOrEqual(t, len(answer), 512)
	r := new(dns.Msg)
	require.NoError(t, r.Unpack(answer))
	assert.True(t, r.Truncated)
	assert.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode])
	assert.Equal(t, q.Question, r.Question)
	require.Len(t, r.Extra, 1, "the TSIG alone")
	tsig := r.IsTsig()
	require.NotNil(t, tsig)
	assertSignedOver(t, r, key.Secret, mac)

	_, wire, _ = notify(fitsNone)
	answer = rawExchange(t, f.addr, wire)
	assert.LessOrEqual(t, len(answer), 512)
	r = new(dns.Msg)
	require.NoError(t, r.Unpack(answer))
	assert.True(t, r.Truncated)
	assert.Nil(t, r.IsTsig(), "nothing signed fits: TC, and the primary asks over TCP")
}

// assertSignedOver checks that the TSIG ending r is signed with secret
// over the request's MAC (RFC 8945 §5.3), as BIND checks it: miekg/dns
// verifies no NOTAUTH (ErrAuth), so the MAC is computed again.
func assertSignedOver(t *testing.T, r *dns.Msg, secret, mac string) {
	t.Helper()
	again := r.Copy()
	got := again.IsTsig().MAC
	again.IsTsig().MAC, again.IsTsig().MACSize = "", 0
	_, want, err := dns.TsigGenerate(again, secret, mac, false)
	require.NoError(t, err)
	assert.Equal(t, want, got, "signed over the NOTIFY's MAC")
}

// TestNotifyAnswerEDNS: the answer to a NOTIFY with an OPT record carries
// dnsfence's OPT as every other answer does (README's header table): the
// buffer size of 1232, DO copied (RFC 3225 §3: the DO bit of the query
// MUST be copied in the response), version 0; and its header as every
// answer to an opcode other than QUERY: RD and CD copied, no RA. The
// zone sources' Notifier answered with a buffer of 4,096 and DO clear.
func TestNotifyAnswerEDNS(t *testing.T) {
	const zone = "rpz.test."
	_, _, f := keyedZoneFence(t, zone)
	for _, transport := range []string{"udp", "tcp"} {
		for _, do := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s do=%v", transport, do), func(t *testing.T) {
				m := new(dns.Msg)
				m.SetNotify(zone)
				m.CheckingDisabled = true
				m.RecursionDesired = true
				m.SetEdns0(4096, do)
				r := ask(t, f.addr, "127.0.0.1", transport, m)
				assert.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode])
				assert.Equal(t, dns.OpcodeNotify, r.Opcode)
				assert.True(t, r.CheckingDisabled, "CD copied (RFC 4035 §3.2.2)")
				assert.True(t, r.RecursionDesired, "RD copied (RFC 1035 §4.1.1)")
				assert.False(t, r.RecursionAvailable, "no RA but for QUERY")
				opt := r.IsEdns0()
				require.NotNil(t, opt, "an OPT for a query with one (RFC 6891 §7)")
				assert.Equal(t, do, opt.Do(), "DO copied (RFC 3225 §3)")
				assert.EqualValues(t, ednsSize, opt.UDPSize(), "dnsfence's buffer size")
				assert.Zero(t, opt.Version())
			})
		}
	}
}
