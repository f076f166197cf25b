package resolver

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Red-team cases that held when tried against a running dnsfence and that
// no other test pins down.

// TestRedTeamProxyHeaderInsideAProxiedConnection: a trusted proxy's
// connection opens with a PROXY header naming a government device; a
// second header after it (one the device wrote, passed on by a load
// balancer that prepends its own) names the exempt press office. Only the
// first is believed: the second is read as DNS, which it is not, so the
// device gets no answer for www.tiktok.com (or a block), and nothing of
// it reaches the upstream.
func TestRedTeamProxyHeaderInsideAProxiedConnection(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, identityConfig, testFiles, up.addr)

	c, err := proxiedConn(f.addr, "127.0.0.2", "10.1.2.3", proxyproto.TCPv4, nil)
	require.NoError(t, err)
	defer c.Close()
	own := c.RemoteAddr().(*net.TCPAddr)
	inner := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP("10.20.30.4"), Port: 40001}, DestinationAddr: own}
	_, err = inner.WriteTo(c)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(2*time.Second)))
	dc := &dns.Conn{Conn: c}
	require.NoError(t, dc.WriteMsg(question("www.tiktok.com.", dns.TypeA, false)))
	if r, err := dc.ReadMsg(); err == nil {
		assert.NotEqual(t, dns.RcodeSuccess, r.Rcode, "an answer for the client the second header named: %s", r)
	}
	for _, q := range up.queries() {
		assert.NotContains(t, strings.ToLower(q.msg.Question[0].Name), "tiktok", "forwarded: %s", q.msg.Question[0].Name)
	}
}

// TestRedTeamPipelinedQueriesOfOneID: a government device pipelines
// queries on one TCP connection, all with the same ID, blocked names
// between names that are forwarded (and answered out of order, as each
// completes). Every answer is its own question's: a blocked name's is the
// block, a forwarded name's holds records of that name only.
func TestRedTeamPipelinedQueriesOfOneID(t *testing.T) {
	up := startUpstream(t, nil)
	f := startFence(t, testConfig, testFiles, up.addr)

	const n = 40
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).Dial("tcp", f.addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	dc := &dns.Conn{Conn: c}
	for i := range n {
		name := fmt.Sprintf("host%d.example.org.", i)
		if i%2 == 1 {
			name = fmt.Sprintf("v%d.TikTok.com.", i)
		}
		m := question(name, []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeHTTPS}[i%4], i%3 == 0)
		m.Id = 7
		require.NoError(t, dc.WriteMsg(m))
	}
	asked := map[string]bool{}
	for range n {
		r, err := dc.ReadMsg()
		require.NoError(t, err)
		require.Len(t, r.Question, 1)
		assert.Equal(t, uint16(7), r.Id)
		q := r.Question[0]
		asked[strings.ToLower(q.Name)] = true
		if strings.HasSuffix(strings.ToLower(q.Name), "tiktok.com.") {
			assert.Equal(t, dns.RcodeNameError, r.Rcode, "%s", r)
			assert.Empty(t, r.Answer)
			continue
		}
		assert.Equal(t, dns.RcodeSuccess, r.Rcode, "%s", r)
		for _, rr := range r.Answer {
			assert.True(t, strings.EqualFold(rr.Header().Name, q.Name), "a record of another question in %s's answer: %s", q.Name, rr)
		}
	}
	assert.Len(t, asked, n, "each query answered once")
}
