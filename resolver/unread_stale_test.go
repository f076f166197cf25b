package resolver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// startFenceAt is startFence with every listener on ip's port 0 (the
// configuration's listen key included).
func startFenceAt(t *testing.T, ip, text string, files map[string]string, upstreams ...string) *fence {
	t.Helper()
	return startFenceAtServing(t, ip, zaptest.NewLogger(t), nil, text, files, upstreams...)
}

// startFenceAtServing is startFenceAt with the logger log, and with the
// listeners serving wrap(h) rather than the handler h itself (wrap nil:
// h).
func startFenceAtServing(t *testing.T, ip string, log *zap.Logger, wrap func(*Handler) listen.Handler, text string, files map[string]string, upstreams ...string) *fence {
	t.Helper()
	at := net.JoinHostPort(ip, "0")
	text = strings.ReplaceAll(text, "127.0.0.1:0", at)
	path := writeConfig(t, text, files, upstreams...)
	cfg, err := config.Load(path)
	require.NoError(t, err)
	snap, err := BuildSnapshot(cfg, nil)
	require.NoError(t, err)
	require.Empty(t, snap.Warnings)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	require.NoError(t, ConnectUpstreams(nil, snap, nil, m))
	h := NewHandler(log, snap, m)
	var serve listen.Handler = h
	if wrap != nil {
		serve = wrap(h)
	}
	srv := newServer(log, h, serve)
	require.NoError(t, srv.Start([]string{at}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		h.Snapshot().Forwarder().Close()
	})
	return &fence{addr: srv.Addrs()[0], handler: h, server: srv, dir: filepath.Dir(path), registry: reg}
}

// askOctets sends q to server over network from the address from and
// returns the answer's octets, which miekg/dns need not read.
func askOctets(t *testing.T, server, from, network string, q *dns.Msg) []byte {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	} else {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial(network, server)
	require.NoError(t, err)
	defer c.Close()
	co := &dns.Conn{Conn: c, UDPSize: 65535}
	require.NoError(t, co.SetDeadline(time.Now().Add(5*time.Second)))
	require.NoError(t, co.WriteMsg(q))
	b, err := co.ReadMsgHeader(nil)
	require.NoError(t, err)
	return b
}

// TestUnreadAnswerRefreshesStale: an upstream's whole answer with a record
// miekg/dns does not read is its answer to the query (README, Answer
// inspection), as a readable one is: it refreshes an expired answer, which
// a client in no policy then gets as the upstream sent it, never the
// expired one served stale as if every upstream had failed (RFC 8767 §4).
// Over TCP (the message path) and over UDP after a truncated datagram
// (the wire path's retry over TCP), as the wire path takes such an answer
// that came whole over UDP.
func TestUnreadAnswerRefreshesStale(t *testing.T) {
	mapped := net.ParseIP("::ffff:192.0.2.7").To16()
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			var unread atomic.Bool
			up := startUpstreamAt(t, "127.0.78.3", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
				q := r.Question[0]
				if q.Qtype != dns.TypeHTTPS || !unread.Load() {
					m := new(dns.Msg).SetReply(r)
					m.RecursionAvailable = true
					if q.Qtype == dns.TypeHTTPS {
						m.Answer = []dns.RR{hintRecord(q.Name, 1, ".")}
					}
					return m
				}
				if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
					m := new(dns.Msg).SetReply(r)
					m.Truncated = true // asked again over TCP
					return m
				}
				return unreadHintAnswer(w, r)
			})
			f := startFenceAt(t, "127.0.78.3", fmt.Sprintf(govConfig, "upstream_timeout: 1s\ncache: {max_ttl: 1, serve_stale: 1h}"), govFiles, up.addr)
			q := question("a.svcb.example.", dns.TypeHTTPS, true)
			const client = "127.0.78.4" // in no policy: gets the answer as it came
			fresh := new(dns.Msg)
			require.NoError(t, fresh.Unpack(askOctets(t, f.addr, client, network, q)))
			require.Len(t, fresh.Answer, 1)

			unread.Store(true)
			var b []byte
			require.Eventually(t, func() bool {
				b = askOctets(t, f.addr, client, network, q)
				m := new(dns.Msg)
				return m.Unpack(b) != nil || hasEDE(m, dns.ExtendedErrorCodeStaleAnswer)
			}, 10*time.Second, 50*time.Millisecond, "the cached answer expires")
			assert.True(t, bytes.Contains(b, mapped), "the upstream's answer, not the expired one served stale")
			assert.False(t, bytes.Contains(b, unreadHint), "not the expired answer")
		})
	}
}

// TestUnreadStaleAnswerInspected: an answer miekg/dns does not read that
// points a government device at a blocked name (an HTTPS record whose
// target is www.tiktok.com) is inspected when it is served stale as when
// it is fresh or a cache hit: a device whose policy inspects answers never
// gets it (the answer cannot be inspected, so it is a failure), while a
// client in no policy gets it stale, as the upstream sent it.
func TestUnreadStaleAnswerInspected(t *testing.T) {
	blocked := []byte("\x03www\x06tiktok\x03com\x00")
	var failing atomic.Bool
	up := startUpstreamAt(t, "127.0.78.3", func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		m := new(dns.Msg).SetReply(r)
		m.RecursionAvailable = true
		switch {
		case q.Qtype != dns.TypeHTTPS:
		case failing.Load():
			m.Rcode = dns.RcodeServerFailure
		default:
			m.Answer = []dns.RR{hintRecord(q.Name, 1, "www.tiktok.com.")}
			writeUnread(w, m)
			return nil
		}
		return m
	})
	f := startFenceAt(t, "127.0.78.3", fmt.Sprintf(govConfig, "upstream_timeout: 1s\ncache: {max_ttl: 1, serve_stale: 1h}"), govFiles, up.addr)
	q := question("a.svcb.example.", dns.TypeHTTPS, true)
	const gov, other = "127.0.0.9", "127.0.78.4"
	stale := func() float64 {
		v, _ := metricValue(t, f.registry, "dnsfence_cache_lookups_total", "result", "stale")
		return v
	}
	require.True(t, bytes.Contains(askOctets(t, f.addr, other, "udp", q), blocked), "the answer as the upstream sent it")
	for _, network := range []string{"udp", "tcp"} {
		assert.False(t, bytes.Contains(askOctets(t, f.addr, gov, network, q), blocked), "a cache hit, %s", network)
	}

	failing.Store(true)
	require.Eventually(t, func() bool {
		before := stale()
		b := askOctets(t, f.addr, other, "udp", q)
		return stale() > before && bytes.Contains(b, blocked)
	}, 10*time.Second, 50*time.Millisecond, "the cached answer expires and is served stale")
	for _, network := range []string{"udp", "tcp"} {
		before := stale()
		b := askOctets(t, f.addr, gov, network, q)
		assert.Greater(t, stale(), before, "served from the stale entry, %s", network)
		assert.False(t, bytes.Contains(b, blocked), "served stale, %s", network)
		m := new(dns.Msg)
		if assert.NoError(t, m.Unpack(b), network) {
			assert.Empty(t, m.Answer, network)
		}
	}
}
