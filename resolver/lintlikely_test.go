package resolver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lintWith is every warning of the configuration text (with the files)
// whose message holds about, as "line: message".
func lintWith(t *testing.T, text string, files map[string]string, about string) []string {
	t.Helper()
	snap, err := buildConfig(t, text, files)
	require.NoError(t, err)
	var got []string
	for _, w := range snap.Lint() {
		if strings.Contains(w.Msg, about) {
			require.Equal(t, snap.Config.File, w.File)
			got = append(got, strings.TrimPrefix(w.String(), w.File+":"))
		}
	}
	return got
}

// TestLintRateUnderOneQueryASecond: a rate_limit.rate under one query a
// second lets almost none of a device's queries through (every query past
// it is dropped unanswered; serve with `rate: 0.5, burst: 1` answered the
// first of four queries and dropped three), and check said "0 warnings"
// of it; a burst of 1 drops the AAAA query a device sends with the A
// (serve with `rate: 200, burst: 1` answered the A alone, three times of
// three), warned of at the burst's line. rate 0 (off, as documented, with
// any burst), a burst of 2, and the defaults are not warned of.
func TestLintRateUnderOneQueryASecond(t *testing.T) {
	for _, tc := range []struct {
		name, limit string
		want        []string
	}{
		{"half", "rate_limit: {rate: 0.5, burst: 1}\n", []string{
			"2: rate_limit.rate: 0.5 is under one query a second a client: a device asks several names for each page or app it opens (an A and an AAAA query each), and every query past its rate is dropped unanswered, so almost none gets through; give queries a second, e.g. rate: 200 (the default), or rate: 0 to turn rate limiting off"}},
		{"tiny, on its own line", "rate_limit:\n  burst: 3\n  rate: 0.001\n", []string{
			"4: rate_limit.rate: 0.001 is under one query a second a client: a device asks several names for each page or app it opens (an A and an AAAA query each), and every query past its rate is dropped unanswered, so almost none gets through; give queries a second, e.g. rate: 200 (the default), or rate: 0 to turn rate limiting off"}},
		{"burst of one", "rate_limit: {rate: 200,\n  burst: 1}\n", []string{
			"3: rate_limit.burst: 1 lets a client ask one query at a time: a device sends the A and the AAAA query for a name together, and the second is dropped unanswered, so the device waits out its timeout; give 2 or more, e.g. burst: 400 (twice the rate, as when left out)"}},
		{"burst of one at one a second", "rate_limit: {rate: 1, burst: 1}\n", []string{
			"2: rate_limit.burst: 1 lets a client ask one query at a time: a device sends the A and the AAAA query for a name together, and the second is dropped unanswered, so the device waits out its timeout; give 2 or more, e.g. burst: 2 (twice the rate, as when left out)"}},
		{"burst of two", "rate_limit: {rate: 1, burst: 2}\n", nil},
		{"off", "rate_limit: {rate: 0}\n", nil},
		{"off, burst 0", "rate_limit: {rate: 0, burst: 0}\n", nil},
		{"default", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lintWith(t, `upstreams: ["127.0.0.1:53"]
`+tc.limit+`policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [tiktok.txt]
`, map[string]string{"tiktok.txt": "tiktok.com\n"}, "rate_limit.")
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestLintMaxBytesUnderAURLList: a sources.max_bytes under 4 KiB with a
// list at a URL is a unit slip (64 meant as MiB, 1024 as KiB): serve with
// `max_bytes: 1024` refused a 2,492-byte list ("body is over
// sources.max_bytes") and blocked none of its names, and check said
// "0 warnings". 4096 and more, and a zone transfer alone (a few triggers
// transfer in a few hundred bytes), are not warned of.
func TestLintMaxBytesUnderAURLList(t *testing.T) {
	const url, zone = "https://lists.example.invalid/bytedance.txt", "axfr://192.0.2.1/rpz.example"
	for _, tc := range []struct {
		name, sources string
		lists         []string
		want          []string
	}{
		{"KiB as bytes", "sources:\n  cache_dir: cache\n  max_bytes: 1024\n", []string{url}, []string{
			"4: sources.max_bytes: 1024 bytes is under 4 KiB, and https://lists.example.invalid/bytedance.txt is a list at a URL: a body over it is refused, so the list blocks none of its names until it has a copy that fits, then keeps its last; give the size in bytes, not KiB or MiB, e.g. max_bytes: 67108864 (64 MiB, the default)"}},
		{"MiB as bytes, beside a zone", "sources: {cache_dir: cache, max_bytes: 4095}\n", []string{zone, url}, []string{
			"2: sources.max_bytes: 4095 bytes is under 4 KiB, and https://lists.example.invalid/bytedance.txt is a list at a URL: a body over it is refused, so the list blocks none of its names until it has a copy that fits, then keeps its last; give the size in bytes, not KiB or MiB, e.g. max_bytes: 67108864 (64 MiB, the default)"}},
		{"a page", "sources: {cache_dir: cache, max_bytes: 4096}\n", []string{url}, nil},
		{"a zone alone", "sources: {cache_dir: cache, max_bytes: 1024}\n", []string{zone}, nil},
		{"no remote list", "sources: {max_bytes: 64}\n", nil, nil},
		{"default", "sources: {cache_dir: cache}\n", []string{url}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lintWith(t, `upstreams: ["127.0.0.1:53"]
`+tc.sources+`policies:
  - name: gov
    clients: ["10.0.0.0/8"]
    block: [`+strings.Join(append([]string{"tiktok.txt"}, tc.lists...), ", ")+`]
`, map[string]string{"tiktok.txt": "tiktok.com\n", "cache/.keep": ""}, "max_bytes")
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestLintBroadcastListener: a listener on 255.255.255.255 (also written
// IPv4-mapped) in listen, listen_tls, listen_https (TLS or http://) or
// listen_quic is a warning at its line: serve bound every one of them and
// logged "listening", and check said nothing, but devices ask a host's own
// address and no TCP connection is made to a broadcast address. A
// subnet's last address (10.0.0.255) is not warned of: the text does not
// say its subnet.
func TestLintBroadcastListener(t *testing.T) {
	pki := newTestPKI(t)
	const tail = ": 255.255.255.255 is the broadcast address, no address of this host: serve binds it, but devices send their queries to a host's own address, and no TCP connection is made to a broadcast address; e.g. "
	got := lintWith(t, fmt.Sprintf(`listen: ["127.0.0.1:5300", "[::ffff:255.255.255.255]:5301", "10.0.0.255:5302"]
listen_tls:
  - "127.0.0.1:8853"
  - "255.255.255.255:8853"
listen_https: ["255.255.255.255:8443", "http://255.255.255.255:8080"]
listen_quic: ["255.255.255.255:8853"]
tls: {cert: %q, key: %q}
trusted_proxies: ["127.0.0.1"]
upstreams: ["127.0.0.1:53"]
policies:
  - name: gov
    clients: ["10.0.0.0/8", "fc00::/7"]
    block: [tiktok.txt]
`, pki.certFile, pki.keyFile), map[string]string{"tiktok.txt": "tiktok.com\n"}, "broadcast")
	assert.Equal(t, []string{
		"1: listen[1]: [::ffff:255.255.255.255]:5301" + tail + "0.0.0.0:5301 for every address of the host, or the host's own address",
		"4: listen_tls[1]: 255.255.255.255:8853" + tail + "0.0.0.0:8853 for every address of the host, or the host's own address",
		"5: listen_https[0]: 255.255.255.255:8443" + tail + "0.0.0.0:8443 for every address of the host, or the host's own address",
		"5: listen_https[1]: http://255.255.255.255:8080" + tail + "0.0.0.0:8080 for every address of the host, or the host's own address",
		"6: listen_quic[0]: 255.255.255.255:8853" + tail + "0.0.0.0:8853 for every address of the host, or the host's own address",
	}, got)
}

// TestLintPlainUpstreamAtOwnTLSListener: a plain upstream at one of
// dnsfence's own listen_tls addresses (or 127.0.0.1 on the port of a
// wildcard one) is a warning at its line: serve with upstreams
// ["127.0.203.1:8853"] beside listen_tls ["127.0.203.1:8853"] got
// "connection refused" on UDP and answered SERVFAIL, and check said
// nothing. Another loopback address under a wildcard (Docker's
// 127.0.0.11), another port, and a tls:// upstream (a loop, refused) are
// not warned of.
func TestLintPlainUpstreamAtOwnTLSListener(t *testing.T) {
	pki := newTestPKI(t)
	got := lintWith(t, fmt.Sprintf(`listen_tls: ["127.0.0.2:8853", "0.0.0.0:9853"]
tls: {cert: %q, key: %q}
upstreams:
  - "127.0.0.2:8853"
  - "127.0.0.2:8854"
  - "127.0.0.1:9853"
  - "127.0.0.11:9853"
  - "[::ffff:127.0.0.2]:8853"
  - "quic://127.0.0.2:8853#dns.example.net"
policies:
  - name: gov
    clients: ["10.0.0.0/8", "fc00::/7"]
    block: [tiktok.txt]
`, pki.certFile, pki.keyFile), map[string]string{"tiktok.txt": "tiktok.com\n"}, "own DNS over TLS")
	const tail = "dnsfence holds only its TCP port, so whatever answers on UDP there is another server, or nothing, and an answer retried over TCP meets TLS; give the resolvers dnsfence forwards to"
	assert.Equal(t, []string{
		`4: upstreams[0]: "127.0.0.2:8853": plain DNS to dnsfence's own DNS over TLS listener (listen_tls[0] 127.0.0.2:8853): ` + tail,
		`6: upstreams[2]: "127.0.0.1:9853": plain DNS to dnsfence's own DNS over TLS listener (listen_tls[1] 0.0.0.0:9853): ` + tail,
		`8: upstreams[4]: "[::ffff:127.0.0.2]:8853": plain DNS to dnsfence's own DNS over TLS listener (listen_tls[0] 127.0.0.2:8853): ` + tail,
	}, got)
}
