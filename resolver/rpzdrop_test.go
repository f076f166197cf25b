package resolver

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dnsfence/dnsfence/resolver/listen"
)

// TestRPZDropOverDoHAndDoQ: a query an rpz-drop trigger drops gets no DNS
// answer over the transports that must say something: DoH answers HTTP
// 403 "query dropped by policy" (a refusal by policy, as dnsdist answers
// a query it drops; never a 5xx, a fault of the server) over HTTP/2 by
// GET and POST and over plain HTTP, and DoQ resets the query's stream
// with DOQ_INTERNAL_ERROR (RFC 9250 §4.3). Each is counted dropped on its
// transport and audited with action drop.
func TestRPZDropOverDoHAndDoQ(t *testing.T) {
	p := newTestPKI(t)
	rpz := filepath.Join(t.TempDir(), "drop.rpz")
	require.NoError(t, os.WriteFile(rpz, []byte(rpzHead+"bytedance.com CNAME rpz-drop.\n"), 0o644))
	text := strings.Replace(encryptedConfig(p), `block: ["tiktok.txt", "bytedance.txt"]`,
		fmt.Sprintf(`block: ["tiktok.txt", "bytedance.txt", %q]`, rpz), 1)
	up := startUpstream(t, nil)
	e := startEncryptedFence(t, p, text, up.addr)
	drop := question("bytedance.com.", dns.TypeA, true)

	for _, c := range []struct {
		name       string
		get, plain bool
	}{{"POST", false, false}, {"GET", true, false}, {"plain HTTP", false, true}} {
		_, err := e.dohWire("127.0.0.1", drop, c.get, c.plain)
		assert.EqualError(t, err, fmt.Sprintf("http status %d: query dropped by policy\n", http.StatusForbidden), c.name)
	}
	_, err := e.doqWire("127.0.0.1", drop)
	var reset *quic.StreamError
	if assert.True(t, errors.As(err, &reset), "%v", err) {
		assert.Equal(t, quic.StreamErrorCode(listen.DoQInternalError), reset.ErrorCode)
		assert.True(t, reset.Remote)
	}

	// The listeners go on answering.
	r, err := e.dohAsk("127.0.0.1", question("example.org.", dns.TypeA, true), false, false)
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode)
	r, err = e.doqAsk("127.0.0.1", question("www.tiktok.com.", dns.TypeA, true))
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNameError, r.Rcode)

	for transport, want := range map[string]float64{listen.HTTPS: 3, listen.QUIC: 1} {
		dropped, _ := metricValue(t, e.registry, "dnsfence_queries_total", "transport", transport, "result", ResultDropped)
		assert.Equal(t, want, dropped, transport)
	}
	audited := func() []map[string]any {
		var lines []map[string]any
		for _, l := range e.logs.FilterMessage("query").All() {
			if f := l.ContextMap(); f[logQName] == "bytedance.com." {
				lines = append(lines, f)
			}
		}
		return lines
	}
	require.Eventually(t, func() bool { return len(audited()) == 4 }, 2*time.Second, 10*time.Millisecond)
	for _, f := range audited() {
		assert.Equal(t, ResultDropped, f[logResult])
		assert.Equal(t, "drop", f[logAction])
		assert.NotContains(t, f, logRcode, "no answer, no RCODE")
	}
}
