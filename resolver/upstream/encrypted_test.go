package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newEncryptedTransport parses s and builds its transport, closed at the end of
// the test.
func newEncryptedTransport(t *testing.T, s string, opts Options) Transport {
	t.Helper()
	addr, err := ParseAddress(s)
	require.NoError(t, err)
	tr, err := newEncrypted(addr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// paddingOf is the EDNS(0) Padding option of m, if any.
func paddingOf(m *dns.Msg) *dns.EDNS0_PADDING {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if p, ok := o.(*dns.EDNS0_PADDING); ok {
				return p
			}
		}
	}
	return nil
}

// TestEncryptedAnswer checks each kind's answer against what the upstream
// said and what the client asked: the client's ID back, the answer
// section, EDNS as the client had it with no Padding of the upstream's, and
// upstream-side a padded query (RFC 8467) with the ID the protocol wants.
func TestEncryptedAnswer(t *testing.T) {
	pki := newPKI(t)
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, pki.good, answerWithA)
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			for _, tc := range []struct {
				name   string
				qname  string
				noEDNS bool
			}{
				{"edns", "a.example.", false},
				{"no edns", "b.example.", true},
				{"long name", "a-long-label-to-make-the-query-longer-than-one-block.and-another-label-as-long-as-that-one.example.", false},
				{"escaped name", `a\.b\(c\001.example.`, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					q := clientQuery(tc.qname, tc.noEDNS)
					q.Id = 0xbeef
					before := q.String()
					resp, err := tr.Exchange(context.Background(), q)
					require.NoError(t, err)
					assert.Equal(t, before, q.String(), "the caller's query is not modified")
					assert.Equal(t, uint16(0xbeef), resp.Id, "the client's ID is restored")
					assert.True(t, resp.Response)
					assert.Equal(t, dns.RcodeSuccess, resp.Rcode)
					require.Len(t, resp.Question, 1)
					assert.Equal(t, q.Question[0], resp.Question[0])
					require.Len(t, resp.Answer, 1)
					assert.Equal(t, "192.0.2.1", resp.Answer[0].(*dns.A).A.String())
					if tc.noEDNS {
						assert.Nil(t, resp.IsEdns0(), "an OPT added for padding is not passed on")
					} else {
						require.NotNil(t, resp.IsEdns0())
						assert.True(t, resp.IsEdns0().Do(), "DO is the client's")
						assert.Nil(t, paddingOf(resp), "the upstream's padding is not passed on")
					}

					got := srv.queries()
					require.NotEmpty(t, got)
					wire := got[len(got)-1]
					assert.Zero(t, len(wire)%queryPaddingBlock, "query of %d octets is padded to a multiple of %d", len(wire), queryPaddingBlock)
					sent := new(dns.Msg)
					require.NoError(t, sent.Unpack(wire))
					assert.NotNil(t, paddingOf(sent), "the query carries a Padding option")
					assert.Equal(t, q.Question, sent.Question)
					require.NotNil(t, sent.IsEdns0())
					assert.Equal(t, !tc.noEDNS, sent.IsEdns0().Do())
					if k.name != "tls" {
						assert.Zero(t, sent.Id, "DoH and DoQ queries carry ID 0 (RFC 8484 §4.1, RFC 9250 §4.2.1)")
					}
				})
			}
		})
	}
}

// TestDoTFreshIDs: each DoT query goes out with an ID of its own, not the
// client's, so that a pipelined connection tells answers apart.
func TestDoTFreshIDs(t *testing.T) {
	pki := newPKI(t)
	srv := startDoT(t, pki.good, serveFrames(answerWithA))
	tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
	for i := range 20 {
		q := clientQuery(fmt.Sprintf("n%d.example.", i), false)
		q.Id = 7
		resp, err := tr.Exchange(context.Background(), q)
		require.NoError(t, err)
		assert.Equal(t, uint16(7), resp.Id)
	}
	ids := map[uint16]bool{}
	for _, b := range srv.queries() {
		ids[uint16(b[0])<<8|uint16(b[1])] = true
	}
	assert.Greater(t, len(ids), 15, "20 queries went out with %d distinct IDs", len(ids))
	assert.False(t, len(ids) == 1 && ids[7], "the client's ID was sent upstream")
}

// TestEncryptedCertificate: a certificate for another name, or from a root
// that is not trusted, is an error of its own kind, never an answer, and no
// query reaches the server.
func TestEncryptedCertificate(t *testing.T) {
	pki := newPKI(t)
	for _, k := range encryptedKinds {
		for _, tc := range []struct {
			name  string
			cert  tls.Certificate
			x509  any // the x509 error inside the verification error
			roots bool
		}{
			{"wrong name", pki.wrongName, new(x509.HostnameError), true},
			{"untrusted root", pki.untrusted, new(x509.UnknownAuthorityError), true},
			{"system roots only", pki.good, new(x509.UnknownAuthorityError), false},
		} {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				srv := k.start(t, tc.cert, answerWithA)
				opts := pki.testOptions(t)
				if !tc.roots {
					opts.RootCAs = nil
				}
				tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
				resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
				require.Error(t, err)
				assert.Nil(t, resp)
				var cve *tls.CertificateVerificationError
				assert.ErrorAs(t, err, &cve, "%v", err)
				assert.ErrorAs(t, err, tc.x509, "%v", err)
				assert.False(t, isTimeout(err))
				assert.NotErrorIs(t, err, ErrProtocol)
				assert.Empty(t, srv.queries(), "no query is sent over an unverified connection")
			})
		}
	}
}

// TestEncryptedTimeout: an upstream that never answers ends the exchange
// at the caller's deadline, or at Options.Timeout, with an error that says
// timeout.
func TestEncryptedTimeout(t *testing.T) {
	pki := newPKI(t)
	never := func(*dns.Msg) *dns.Msg { return nil }
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, pki.good, never)
			t.Run("ctx deadline", func(t *testing.T) {
				tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				start := time.Now()
				resp, err := tr.Exchange(ctx, clientQuery("a.example.", false))
				assert.Nil(t, resp)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Less(t, time.Since(start), 3*time.Second)
			})
			t.Run("options timeout", func(t *testing.T) {
				opts := pki.testOptions(t)
				opts.Timeout = 300 * time.Millisecond
				tr := newEncryptedTransport(t, srv.upstream(testServerName), opts)
				start := time.Now()
				resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
				assert.Nil(t, resp)
				assert.True(t, isTimeout(err), "%v", err)
				assert.Less(t, time.Since(start), 3*time.Second)
			})
			t.Run("cancelled", func(t *testing.T) {
				tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() {
					_, err := tr.Exchange(ctx, clientQuery("a.example.", false))
					done <- err
				}()
				require.Eventually(t, func() bool { return len(srv.queries()) > 0 }, 5*time.Second, 5*time.Millisecond)
				cancel()
				select {
				case err := <-done:
					assert.ErrorIs(t, err, context.Canceled)
				case <-time.After(5 * time.Second):
					t.Fatal("Exchange did not return after its ctx was cancelled")
				}
			})
		})
	}
}

// TestEncryptedReuse: queries, one after another and many at once, share
// one kept connection (DoT pipelining, HTTP/2 streams, QUIC streams).
func TestEncryptedReuse(t *testing.T) {
	pki := newPKI(t)
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, pki.good, answerWithA)
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			for i := range 10 {
				resp, err := tr.Exchange(context.Background(), clientQuery(fmt.Sprintf("s%d.example.", i), false))
				require.NoError(t, err)
				assert.Len(t, resp.Answer, 1)
			}
			assert.Equal(t, 1, srv.connections(), "sequential queries use one connection")
			var wg sync.WaitGroup
			errs := make(chan error, 10)
			for i := range 10 {
				wg.Go(func() {
					q := clientQuery(fmt.Sprintf("c%d.example.", i), false)
					resp, err := tr.Exchange(context.Background(), q)
					if err == nil && (len(resp.Answer) != 1 || resp.Question[0].Name != q.Question[0].Name) {
						err = fmt.Errorf("wrong answer for %s: %v", q.Question[0].Name, resp)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				assert.NoError(t, err)
			}
			assert.Equal(t, 1, srv.connections(), "10 queries at once fit on the kept connection")
			assert.Len(t, srv.queries(), 20)
		})
	}
}

// TestEncryptedClose: after Close, Exchange fails with ErrClosed (a
// net.ErrClosed), and so does a query in flight at the time.
func TestEncryptedClose(t *testing.T) {
	pki := newPKI(t)
	never := func(*dns.Msg) *dns.Msg { return nil }
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, pki.good, never)
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			done := make(chan error, 1)
			go func() {
				_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
				done <- err
			}()
			require.Eventually(t, func() bool { return len(srv.queries()) > 0 }, 5*time.Second, 5*time.Millisecond)
			require.NoError(t, tr.Close())
			select {
			case err := <-done:
				assert.ErrorIs(t, err, ErrClosed)
			case <-time.After(5 * time.Second):
				t.Fatal("a query in flight did not end at Close")
			}
			_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, err, net.ErrClosed)
		})
	}
}

// TestEncryptedRefused: a TCP port nothing listens on refuses the
// connection, and the error says so (ErrConnRefused), for DoT and DoH.
func TestEncryptedRefused(t *testing.T) {
	addr := testnet.RefusingAddr(t)
	for _, s := range []string{
		"tls://" + addr + "#" + testServerName,
		"https://" + addr + "/dns-query#" + testServerName,
	} {
		t.Run(s, func(t *testing.T) {
			tr := newEncryptedTransport(t, s, Options{Timeout: 5 * time.Second})
			resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			assert.Nil(t, resp)
			assert.ErrorIs(t, err, ErrConnRefused)
			assert.False(t, isTimeout(err))
		})
	}
}

// TestNewTransportPlain: plain upstreams are not built by newEncrypted.
func TestNewTransportPlain(t *testing.T) {
	addr, err := ParseAddress("192.0.2.1:53")
	require.NoError(t, err)
	tr, err := newEncrypted(addr, Options{})
	assert.Nil(t, tr)
	assert.ErrorContains(t, err, "encrypted upstreams only")
}

// TestEncryptedResumption: a connection made again after the upstream
// closed the last one resumes the TLS session (RFC 8446 §2.2), saving a
// round trip and the certificate exchange.
func TestEncryptedResumption(t *testing.T) {
	pki := newPKI(t)
	for _, k := range encryptedKinds {
		t.Run(k.name, func(t *testing.T) {
			srv := k.start(t, pki.good, answerWithA)
			tr := newEncryptedTransport(t, srv.upstream(testServerName), pki.testOptions(t))
			_, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			require.NoError(t, err)
			srv.closeAll()
			resp, err := tr.Exchange(context.Background(), clientQuery("b.example.", false))
			require.NoError(t, err)
			assert.Len(t, resp.Answer, 1)
			assert.Equal(t, 2, srv.connections())
			require.Eventually(t, func() bool { return len(srv.resumed()) == 2 }, 5*time.Second, 5*time.Millisecond)
			assert.Equal(t, []bool{false, true}, srv.resumed(), "the second handshake resumed the first session")
		})
	}
}

// TestEncryptedStalledHandshake: an upstream that takes the connection but
// never completes the handshake costs a timeout, not a hang.
func TestEncryptedStalledHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() }) // held open, never answered
		}
	}()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	go func() { // reads the QUIC Initial packets, answers none
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	for _, s := range []string{
		"tls://" + ln.Addr().String() + "#" + testServerName,
		"https://" + ln.Addr().String() + "/dns-query#" + testServerName,
		"quic://" + pc.LocalAddr().String() + "#" + testServerName,
	} {
		t.Run(s, func(t *testing.T) {
			tr := newEncryptedTransport(t, s, Options{Timeout: 300 * time.Millisecond})
			start := time.Now()
			resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
			assert.Nil(t, resp)
			assert.True(t, isTimeout(err), "%v", err)
			assert.Less(t, time.Since(start), 3*time.Second)
		})
	}
}

// TestDoTOldTLS: an upstream that offers no TLS version above 1.1 is not
// used.
func TestDoTOldTLS(t *testing.T) {
	pki := newPKI(t)
	addr := serveTLS(t, &tls.Config{
		Certificates: []tls.Certificate{pki.good},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS11,
	}, func(c net.Conn) { _, _ = readFrame(c) })
	tr := newEncryptedTransport(t, "tls://"+addr+"#"+testServerName, pki.testOptions(t))
	resp, err := tr.Exchange(context.Background(), clientQuery("a.example.", false))
	assert.Nil(t, resp)
	assert.ErrorContains(t, err, "protocol version")
}

// TestForwarderEncryptedFailover: in one upstreams list with plain ones, an
// encrypted upstream whose certificate does not verify (wrong name,
// untrusted root) never answers: the Forwarder fails over to the next
// upstream, and counts the failure as kind "certificate"; a good one
// answers through the same Forwarder.
func TestForwarderEncryptedFailover(t *testing.T) {
	pki := newPKI(t)
	plain := plainTestUpstream(t, func(q *dns.Msg) *dns.Msg {
		m := answerWithA(q)
		m.Answer[0].(*dns.A).A = net.IPv4(192, 0, 2, 99)
		return m
	})
	for _, k := range encryptedKinds {
		for _, tc := range []struct {
			name string
			cert tls.Certificate
			from int // the upstream that answers: 0 the encrypted one, 1 the plain one
			kind string
		}{
			{"good", pki.good, 0, ""},
			{"wrong name", pki.wrongName, 1, kindCertificate},
			{"untrusted root", pki.untrusted, 1, kindCertificate},
		} {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				srv := k.start(t, tc.cert, answerWithA)
				reg := prometheus.NewRegistry()
				opts := pki.testOptions(t)
				opts.Metrics = NewMetrics(reg)
				enc := srv.upstream(testServerName)
				f, err := New([]string{enc, plain}, opts)
				require.NoError(t, err)
				t.Cleanup(f.Close)
				// No exploring probes: the plain upstream measured first
				// would take the query, and a probe's failure marks the
				// encrypted one down before the query tries it. And no
				// hedge within a slow first handshake (-race, a busy
				// machine): not measured yet, the encrypted upstream is
				// hedged after hedgeFloor (150 ms); measured at 1 s,
				// after a quarter of the timeout.
				f.started.Store(true)
				f.upstreams[0].rtt.Store(int64(time.Second))
				resp, from, err := f.Forward(context.Background(), clientQuery("a.example.", false), false)
				require.NoError(t, err)
				assert.Equal(t, []string{enc, plain}[tc.from], from)
				require.Len(t, resp.Answer, 1)
				want := net.IPv4(192, 0, 2, 99)
				if tc.from == 0 {
					want = answerWithA(clientQuery("a.example.", false)).Answer[0].(*dns.A).A
				}
				assert.True(t, want.Equal(resp.Answer[0].(*dns.A).A), "answer %v", resp.Answer[0])
				if tc.kind == "" {
					assert.Empty(t, upstreamErrors(t, reg, enc))
				} else {
					assert.Equal(t, map[string]float64{tc.kind: 1}, upstreamErrors(t, reg, enc))
					assert.Empty(t, srv.queries(), "no query is sent over an unverified connection")
				}
			})
		}
	}
}

// TestTLSAlertIsProtocolKind: an encrypted upstream that ends the handshake
// with a TLS alert (no ALPN protocol in common: a DoT server that speaks
// only h2, a DoQ server of a draft's "doq-i02"; a TLS version it does not
// take) is counted as kind "protocol", the upstream breaking its
// transport's rules, not "network", which says the path to it failed and
// sends an operator to the firewall (DnsfenceUpstreamsDown's runbook).
func TestTLSAlertIsProtocolKind(t *testing.T) {
	pki := newPKI(t)
	tlsServer := func(cfg *tls.Config) string {
		return "tls://" + serveTLS(t, cfg, func(c net.Conn) { _ = c.(*tls.Conn).Handshake() }) + "#" + testServerName
	}
	quicServer := func(alpn string) string {
		ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.good}, NextProtos: []string{alpn}}, &quic.Config{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ln.Close() })
		return "quic://" + ln.Addr().String() + "#" + testServerName
	}
	for _, tc := range []struct{ name, upstream string }{
		{"DoT, ALPN h2 only", tlsServer(&tls.Config{Certificates: []tls.Certificate{pki.good}, NextProtos: []string{"h2"}})},
		{"DoT, TLS 1.1 at most", tlsServer(&tls.Config{Certificates: []tls.Certificate{pki.good}, MaxVersion: tls.VersionTLS11})},
		{"DoQ, ALPN doq-i02 only", quicServer("doq-i02")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			opts := pki.testOptions(t)
			opts.Metrics = NewMetrics(reg)
			f, err := New([]string{tc.upstream}, opts)
			require.NoError(t, err)
			t.Cleanup(f.Close)
			_, _, err = f.Forward(context.Background(), clientQuery("a.example.", false), false)
			require.Error(t, err)
			var ue *UpstreamError
			require.ErrorAs(t, err, &ue)
			assert.Equal(t, "protocol", ue.Causes(), "%v", err)
		})
	}
}

// serveTLS accepts TLS connections with cfg on a loopback port until the
// test ends, handing each to handle on its own goroutine and closing it
// after; it returns the address.
func serveTLS(t *testing.T, cfg *tls.Config, handle func(net.Conn)) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
