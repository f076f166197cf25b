package listen

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// askFunc asks qname over a new connection and returns the serial of the
// certificate the server presented and the answer's RCODE.
type askFunc func(qname string) (serial int64, rcode int, err error)

// TestCertRotationUnderLoad replaces the certificate pair while clients
// keep asking over new connections: new handshakes present the new
// certificate, and no query fails, over DoT, DoH and DoQ.
func TestCertRotationUnderLoad(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (*testCA, certFiles, int64, askFunc)
	}{
		{"tls", func(t *testing.T) (*testCA, certFiles, int64, askFunc) {
			d := newDoTSetup(t, 2*time.Second)
			return d.ca, d.files, d.serial, func(qname string) (int64, int, error) {
				c, err := tls.Dial("tcp", d.addr, clientTLS(d.ca, ALPNDoT))
				if err != nil {
					return 0, 0, err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				r, err := streamExchange(c, query(qname))
				if err != nil {
					return 0, 0, err
				}
				return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), r.Rcode, nil
			}
		}},
		{"https", func(t *testing.T) (*testCA, certFiles, int64, askFunc) {
			d := newDoHSetup(t, false, nil)
			return d.ca, d.files, d.serial, func(qname string) (int64, int, error) {
				tr := &http.Transport{TLSClientConfig: clientTLS(d.ca), ForceAttemptHTTP2: true, DisableKeepAlives: true}
				defer tr.CloseIdleConnections()
				c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
				b, err := query(qname).Pack()
				if err != nil {
					return 0, 0, err
				}
				resp, err := c.Post(d.url, DoHContentType, bytes.NewReader(b))
				if err != nil {
					return 0, 0, err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					return 0, 0, err
				}
				if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
					return 0, 0, fmt.Errorf("%s over HTTP/%d", resp.Status, resp.ProtoMajor)
				}
				r := new(dns.Msg)
				if err := r.Unpack(body); err != nil {
					return 0, 0, err
				}
				return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), r.Rcode, nil
			}
		}},
		{"quic", func(t *testing.T) (*testCA, certFiles, int64, askFunc) {
			d := newDoQSetup(t, nil)
			return d.ca, d.files, d.serial, func(qname string) (int64, int, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := quic.DialAddr(ctx, d.addr, clientTLS(d.ca, ALPNDoQ), &quic.Config{})
				if err != nil {
					return 0, 0, err
				}
				defer c.CloseWithError(0, "")
				r, err := doqExchange(c, query(qname))
				if err != nil {
					return 0, 0, err
				}
				return c.ConnectionState().TLS.PeerCertificates[0].SerialNumber.Int64(), r.Rcode, nil
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ca, files, oldSerial, ask := tc.setup(t)
			var (
				stop              = make(chan struct{})
				wg                sync.WaitGroup
				answered, onNew   atomic.Int64
				mu                sync.Mutex
				failures          []error
				newSerial         atomic.Int64
				wrongSerialOrCode []string
			)
			const workers = 4
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 5000 { // bounded; stopped long before
						select {
						case <-stop:
							return
						default:
						}
						qname, want := fmt.Sprintf("w%d-%d.example.org", w, i), dns.RcodeSuccess
						if i%2 == 0 {
							qname, want = fmt.Sprintf("w%d-%d.blocked.test", w, i), dns.RcodeNameError
						}
						serial, rcode, err := ask(qname)
						mu.Lock()
						switch {
						case err != nil:
							failures = append(failures, err)
						case rcode != want || (serial != oldSerial && serial != newSerial.Load()):
							wrongSerialOrCode = append(wrongSerialOrCode, fmt.Sprintf("%s: rcode %d serial %d", qname, rcode, serial))
						default:
							answered.Add(1)
							if serial == newSerial.Load() {
								onNew.Add(1)
							}
						}
						mu.Unlock()
					}
				}()
			}
			require.Eventually(t, func() bool { return answered.Load() >= 20 }, 10*time.Second, 10*time.Millisecond)

			c, k, serial := ca.issue(t, leafOpts{})
			newSerial.Store(serial)
			renameOver(t, files.key, k)
			renameOver(t, files.cert, c)
			require.Eventually(t, func() bool { return onNew.Load() >= 20 }, 10*time.Second, 10*time.Millisecond,
				"new handshakes present the new certificate")
			close(stop)
			wg.Wait()

			mu.Lock()
			defer mu.Unlock()
			assert.Empty(t, failures, "no query failed")
			assert.Empty(t, wrongSerialOrCode)
			s, rcode, err := ask("last.blocked.test")
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeNameError, rcode)
			assert.Equal(t, serial, s)
		})
	}
}

// TestPaddedAnswers: an answer to a padded query is padded to a multiple
// of 468 octets (RFC 7830, RFC 8467 §4.1) over DoH and DoQ; an answer to an
// unpadded one is not over DoH, and is over DoQ, which pads every answer
// (RFC 9250 §5.4, TestDoQPadsEveryAnswer).
func TestPaddedAnswers(t *testing.T) {
	padded := func(name string) *dns.Msg {
		m := query(name)
		m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_PADDING{Padding: make([]byte, 40)})
		return m
	}
	doh := newDoHSetup(t, false, nil)
	doq := newDoQSetup(t, nil)
	qc, err := doq.dial(t)
	require.NoError(t, err)
	rawDoQ := func(m *dns.Msg) []byte {
		b := mustPack(t, m)
		out, err := doqRaw(qc, append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...), false)
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(out), 2)
		return out[2:]
	}
	rawDoH := func(m *dns.Msg) []byte {
		resp, err := doh.client(false).Post(doh.url, DoHContentType, bytes.NewReader(mustPack(t, m)))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		return b
	}
	for _, tr := range []struct {
		name string
		ask  func(*dns.Msg) []byte
	}{{"https", rawDoH}, {"quic", rawDoQ}} {
		for _, qname := range []string{"p.blocked.test", "p.example.org"} {
			t.Run(tr.name+" "+qname, func(t *testing.T) {
				b := tr.ask(padded(qname))
				assert.Zero(t, len(b)%responsePaddingBlock, "length %d", len(b))
				r := new(dns.Msg)
				require.NoError(t, r.Unpack(b))
				assert.True(t, hasPadding(r))
				assert.Equal(t, dns.Fqdn(qname), r.Question[0].Name)

				b = tr.ask(query(qname))
				r = new(dns.Msg)
				require.NoError(t, r.Unpack(b))
				if tr.name == "quic" {
					assert.Zero(t, len(b)%responsePaddingBlock, "length %d", len(b))
					assert.True(t, hasPadding(r))
				} else {
					assert.NotZero(t, len(b)%responsePaddingBlock)
					assert.False(t, hasPadding(r))
				}
			})
		}
	}
}

// TestCacheMaxAge is RFC 8484 §5.1's freshness lifetime.
func TestCacheMaxAge(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		require.NoError(t, err)
		return r
	}
	tests := []struct {
		name string
		msg  *dns.Msg
		want uint32
	}{
		{"smallest answer TTL", &dns.Msg{Answer: []dns.RR{rr("a. 300 IN CNAME b."), rr("b. 30 IN A 192.0.2.1"), rr("b. 600 IN A 192.0.2.2")}}, 30},
		{"authority counts too", &dns.Msg{Answer: []dns.RR{rr("a. 300 IN A 192.0.2.1")}, Ns: []dns.RR{rr("a. 100 IN NS ns.a.")}}, 100},
		{"additional does not", &dns.Msg{Answer: []dns.RR{rr("a. 300 IN A 192.0.2.1")}, Extra: []dns.RR{rr("ns.a. 5 IN A 192.0.2.9")}}, 300},
		{"negative: SOA MINIMUM below its TTL", &dns.Msg{Ns: []dns.RR{rr("a. 3600 IN SOA ns. h. 1 2 3 4 60")}}, 60},
		{"negative: SOA TTL below its MINIMUM", &dns.Msg{Ns: []dns.RR{rr("a. 30 IN SOA ns. h. 1 2 3 4 900")}}, 30},
		{"SOA MINIMUM not used with answers", &dns.Msg{Answer: []dns.RR{rr("a. 300 IN SOA ns. h. 1 2 3 4 5")}}, 300},
		{"no records", &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeServerFailure}}, 0},
		{"NODATA after a CNAME without an SOA", &dns.Msg{Question: []dns.Question{{Name: "a.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET}},
			Answer: []dns.RR{rr("a. 300 IN CNAME b.")}}, 0},
		{"NXDOMAIN after a CNAME without an SOA", &dns.Msg{MsgHdr: dns.MsgHdr{Rcode: dns.RcodeNameError},
			Question: []dns.Question{{Name: "a.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}, Answer: []dns.RR{rr("a. 300 IN CNAME b.")}}, 0},
		{"the CNAME asked for", &dns.Msg{Question: []dns.Question{{Name: "a.", Qtype: dns.TypeCNAME, Qclass: dns.ClassINET}},
			Answer: []dns.RR{rr("a. 300 IN CNAME b.")}}, 300},
		{"ANY", &dns.Msg{Question: []dns.Question{{Name: "a.", Qtype: dns.TypeANY, Qclass: dns.ClassINET}},
			Answer: []dns.RR{rr("a. 300 IN CNAME b.")}}, 300},
		{"zero TTL", &dns.Msg{Answer: []dns.RR{rr("a. 0 IN A 192.0.2.1")}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, cacheMaxAge(tc.msg))
		})
	}
}

// TestParseDoHListen: the forms of a listen_https address.
func TestParseDoHListen(t *testing.T) {
	tests := []struct {
		in       string
		hostport string
		plain    bool
		err      bool
	}{
		{in: "127.0.0.1:443", hostport: "127.0.0.1:443"},
		{in: "[::1]:8443", hostport: "[::1]:8443"},
		{in: "https://127.0.0.1:443", hostport: "127.0.0.1:443"},
		{in: "http://127.0.0.1:8080", hostport: "127.0.0.1:8080", plain: true},
		{in: "http://127.0.0.1:8080/", hostport: "127.0.0.1:8080", plain: true},
		{in: "http://127.0.0.1", err: true},
		{in: "http://127.0.0.1:8080/dns", err: true},
		{in: "ftp://127.0.0.1:21", err: true},
		{in: "127.0.0.1", err: true},
		{in: "http://[::1:8080", err: true}, // url.Parse fails
		{in: "http://user@127.0.0.1:8080", err: true},
		{in: "http://127.0.0.1:8080/?dns=x", err: true},
		{in: "http://127.0.0.1:8080/#f", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			hp, plain, err := ParseDoHListen(tc.in)
			if tc.err {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.hostport, hp)
			assert.Equal(t, tc.plain, plain)
		})
	}
}
