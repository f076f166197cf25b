package resolver

import (
	"net/http"
	"testing"

	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDoHRealIPNamesTheClient: a trusted proxy that names the device in
// X-Real-IP alone (nginx's `proxy_set_header X-Real-IP $remote_addr`, as
// Technitium's and AdGuard Home's guides write it) has the government
// device blocked: its queries were decided as the proxy's own, in no
// policy, and www.tiktok.com was forwarded. Beside X-Forwarded-For it must
// name the same client (a proxy that sets X-Real-IP passes the device's
// own X-Forwarded-For through), else 400; an untrusted peer's is ignored.
func TestDoHRealIPNamesTheClient(t *testing.T) {
	up := startUpstream(t, nil)
	p := newTestPKI(t)
	e := startEncryptedFence(t, p, proxiedEncryptedConfig(p), up.addr)
	doh := func(from string, header ...string) (*dns.Msg, int) {
		t.Helper()
		r, status, err := askDoHForwarded("http://"+e.addrs["http"]+listen.DoHPath, from, nil, question("www.tiktok.com.", dns.TypeA, true), header...)
		require.NoError(t, err)
		return r, status
	}
	r, status := doh("127.0.0.9", "X-Real-IP", "127.0.0.2")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "a trusted proxy names a government device")
	r, status = doh("127.0.0.9", "X-Real-IP", "127.0.0.8")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "a trusted proxy names another client")
	r, status = doh("127.0.0.8", "X-Real-IP", "127.0.0.2")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, dns.RcodeSuccess, r.Rcode, "an untrusted peer's header is ignored")
	_, status = doh("127.0.0.9", "X-Real-IP", "127.0.0.2", "X-Forwarded-For", "127.0.0.8")
	assert.Equal(t, http.StatusBadRequest, status, "the device's own X-Forwarded-For, passed through, names another client")
	r, status = doh("127.0.0.9", "X-Real-IP", "127.0.0.2", "X-Forwarded-For", "127.0.0.8, 127.0.0.2")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, dns.RcodeNameError, r.Rcode, "headers that agree name the government device")
}
