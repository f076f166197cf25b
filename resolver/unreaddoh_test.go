package resolver

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unreadDoHUpstream serves DNS over HTTPS on 127.0.0.1 with p's pair
// until the test ends, answering as unreadHintAnswer does, in octets, with
// the Age header age; it returns its https:// address, named
// testServerName (a fence trusts it with upstream_ca: p.caFile).
func unreadDoHUpstream(t *testing.T, p *testPKI, age string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 65535))
			q := new(dns.Msg)
			if err != nil || q.Unpack(body) != nil {
				http.Error(w, "no query", http.StatusBadRequest)
				return
			}
			rec := &octetsWriter{}
			if m := unreadHintAnswer(rec, q); m != nil { // not an HTTPS question below svcb.example.
				rec.b, err = m.Pack()
				require.NoError(t, err)
			}
			w.Header().Set("Content-Type", "application/dns-message")
			w.Header().Set("Age", age)
			_, _ = w.Write(rec.b)
		}),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("https://%s/dns-query#%s", ln.Addr(), testServerName)
}

// TestUnreadDoHAge: an answer miekg/dns does not read that came from a
// DNS over HTTPS upstream with an Age header has its TTLs shortened by it
// (RFC 8484 §5.1: "DoH clients MUST account for the Age response header
// field's value when calculating the DNS TTL of a response"), as a
// readable one has: its HTTPS record of TTL 60, 50 s in an HTTP cache, is
// cached and given with TTL 10 to a client whose policy does not inspect
// it, over UDP and TCP. Before, it kept TTL 60, cached six times as long
// as its upstream allowed.
func TestUnreadDoHAge(t *testing.T) {
	needLoopback(t, unreadClient)
	p := newTestPKI(t)
	up := unreadDoHUpstream(t, p, "50")
	f := govFence(t, fmt.Sprintf("upstream_timeout: 2s\nupstream_ca: %q", p.caFile), up)
	for _, network := range []string{"udp", "tcp"} {
		for i := range 2 { // the upstream's answer, then the cache's
			what := fmt.Sprintf("%s, %d", network, i)
			b := askOctets(t, f.addr, unreadClient, network, question(network+".svcb.example.", dns.TypeHTTPS, true))
			require.GreaterOrEqual(t, len(b), dnswire.HeaderLen, what)
			require.Equal(t, dns.RcodeSuccess, int(dnswire.Flags(b)&0xF), "%s: RCODE", what)
			require.EqualValues(t, 1, dnswire.ANCount(b), "%s: the HTTPS record", what)
			q, ok := dnswire.ReadQuestion(b)
			require.True(t, ok, what)
			require.True(t, dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
				if r.Type == dns.TypeHTTPS {
					assert.LessOrEqual(t, r.TTL, uint32(10), "%s: TTL 60 aged 50 s", what)
					assert.GreaterOrEqual(t, r.TTL, uint32(8), "%s: TTL 60 aged 50 s", what)
				}
				return true
			}), what)
		}
	}
}
