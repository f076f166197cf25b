package resolver

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNotifyThroughAProxyJudgedByThePeer: a NOTIFY is taken from a zone's
// primary by the packet's own source address, the socket peer. Over a
// connection that opened with a trusted proxy's PROXY header, that peer
// is the proxy: a proxy at the primary's address has its NOTIFY taken
// whatever client its header names, and a header naming the primary from
// a proxy elsewhere does not make its NOTIFY the primary's (REFUSED).
func TestNotifyThroughAProxyJudgedByThePeer(t *testing.T) {
	const zone = "rpz.test."
	up := startUpstream(t, nil)
	key := testnet.NewBINDKey(t, "xfr-key.")
	p := testnet.StartBIND(t, &testnet.BIND{Zone: zone, Key: &key}, testnet.RPZText(zone, 1, "tiktok.com CNAME ."))
	entry := p.Entry()
	dir := testnet.WriteTree(t, map[string]string{"dnsfence.yaml": fmt.Sprintf(`
upstreams: ["%s"]
upstream_timeout: 500ms
allowed_clients: ["127.0.0.2/32", "127.0.194.5/32"]
trusted_proxies: ["127.0.0.1/32", "127.0.194.3/32"]
log: {queries: blocked}
policies:
  - name: gov
    clients: ["127.0.0.2/32"]
    block: ["%s"]
sources: {cache_dir: cache, tsig: %s}
`, up.addr, entry, tsigYAML(key))})
	f := startSourceFence(t, dir, "127.0.0.1:0")
	f.eventuallyRcode(t, "127.0.0.2", "tiktok.com.", dns.RcodeNameError, 5*time.Second)

	notifyVia := func(proxy, client string) *dns.Msg {
		t.Helper()
		c := dialFrom(t, f.addr, proxy)
		h := &proxyproto.Header{
			Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr:      &net.TCPAddr{IP: net.ParseIP(client), Port: 40000},
			DestinationAddr: c.RemoteAddr(),
		}
		_, err := h.WriteTo(c)
		require.NoError(t, err)
		m := new(dns.Msg)
		m.SetNotify(zone)
		r, err := askOn(c, m)
		require.NoError(t, err)
		return r
	}

	st := f.status(t, entry)
	r := notifyVia("127.0.0.1", "127.0.194.5")
	assert.Equal(t, dns.RcodeToString[dns.RcodeSuccess], dns.RcodeToString[r.Rcode], "the proxy is at the primary's address")
	assert.Equal(t, st.NotifiesAccepted+1, f.status(t, entry).NotifiesAccepted)

	r = notifyVia("127.0.194.3", "127.0.0.1")
	assert.Equal(t, dns.RcodeToString[dns.RcodeRefused], dns.RcodeToString[r.Rcode], "a header naming the primary is no NOTIFY of the primary")
	assert.Equal(t, st.NotifiesRefused+1, f.status(t, entry).NotifiesRefused)
}
