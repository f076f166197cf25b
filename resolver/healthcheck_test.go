package resolver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/upstream"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// internalOnly is a test upstream that answers as an internal-only
// resolver does (no root hints, no forwarders: Windows DNS with its root
// hints removed, a BIND with only internal zones): SERVFAIL to `. NS`,
// corp.example.'s SOA, and every other name as defaultAnswer does. While
// broken is set it answers REFUSED to everything, so that it is marked
// down.
type internalOnly struct {
	*testUpstream
	broken atomic.Bool
	root   atomic.Int64 // `. NS` queries received
	check  atomic.Int64 // `corp.example. SOA` queries received
}

// corpCheck is the health check an internal-only upstream answers.
const corpCheck = `upstream_health_check: {name: "corp.example.", type: SOA}`

func startInternalOnly(t *testing.T) *internalOnly {
	t.Helper()
	u := &internalOnly{}
	u.testUpstream = startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) *dns.Msg {
		q := r.Question[0]
		root := q.Name == "." && q.Qtype == dns.TypeNS
		soa := strings.EqualFold(q.Name, "corp.example.") && q.Qtype == dns.TypeSOA
		switch {
		case root:
			u.root.Add(1)
		case soa:
			u.check.Add(1)
		}
		m := new(dns.Msg)
		switch {
		case u.broken.Load():
			m.SetRcode(r, dns.RcodeRefused)
		case root:
			m.SetRcode(r, dns.RcodeServerFailure)
		case soa:
			m.SetReply(r)
			m.RecursionAvailable = true
			rr, err := dns.NewRR("corp.example. 3600 IN SOA dc1.corp.example. hostmaster.corp.example. 1 900 600 86400 3600")
			if err != nil {
				panic(err)
			}
			m.Answer = []dns.RR{rr}
		default:
			return defaultAnswer(w, r)
		}
		return m
	})
	return u
}

// TestReadyzHealthCheckOfInternalOnlyUpstream: with an internal-only
// upstream, the only one, and no client asking, /readyz is 503 as long as
// its probe asks the root NS query (what the sweep measured: behind a
// Kubernetes Service such a pod never gets the queries that would make
// it ready), and 200 once upstream_health_check names a name the
// upstream answers, which the probe then asks in place of the root's.
func TestReadyzHealthCheckOfInternalOnlyUpstream(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		wantCode    int
		wantBody    string
	}{
		{name: "the root NS query by default", extra: "",
			wantCode: http.StatusServiceUnavailable, wantBody: "nor the health check . NS (upstream_health_check): "},
		{name: "an AD domain's SOA", extra: corpCheck,
			wantCode: http.StatusOK, wantBody: "ready: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startInternalOnly(t)
			f := govFence(t, tc.extra, up.addr)
			srv := httptest.NewServer(HTTPHandler(f.handler, f.registry, DefaultReadyWindow))
			t.Cleanup(srv.Close)

			code, body := get(t, srv.URL+"/readyz")
			assert.Equal(t, tc.wantCode, code, body)
			assert.Contains(t, body, tc.wantBody)
			if tc.extra == "" {
				assert.Contains(t, body, "answered SERVFAIL")
				assert.Positive(t, up.root.Load(), "the root NS query asked")
				assert.Zero(t, up.check.Load())
			} else {
				assert.Zero(t, up.root.Load(), "the root NS query is asked no more")
				assert.Positive(t, up.check.Load(), "the health check asked")
			}
			assert.Equal(t, up.root.Load()+up.check.Load(), up.count.Load(), "no query but the probes: no client asked")
		})
	}
}

// TestHealthCheckBringsBackInternalOnlyUpstream: of two internal-only
// upstreams, the second, marked down while it refused everything, comes
// back once its probe of upstream_health_check's name is answered; its
// REFUSED to that question kept it down meanwhile, as to the root NS
// query. With the root NS query (the default) it stays down for good
// while the first answers every query, as the sweep measured, until a
// reload sets upstream_health_check: the new forwarder probes it with
// the new question and it comes back.
func TestHealthCheckBringsBackInternalOnlyUpstream(t *testing.T) {
	const extra = "upstream_strategy: ordered\nupstream_timeout: 1s"
	var asked atomic.Int64
	// answered asks f a name of its own and reports whether it was
	// answered NOERROR (safe off the test's goroutine, as Eventually runs
	// its condition).
	answered := func(f *fence) bool {
		r, err := exchange(f.addr, "", "udp", question(fmt.Sprintf("q%d.example.org.", asked.Add(1)), dns.TypeA, true))
		return err == nil && r.Rcode == dns.RcodeSuccess
	}
	// markDown has f mark second down, first up: first answers every
	// query, second refuses everything.
	markDown := func(t *testing.T, f *fence, first, second *internalOnly) {
		t.Helper()
		second.broken.Store(true)
		require.Eventually(t, func() bool {
			// The first query starts the forwarder, which explores both
			// (the root NS query marks first down too); a later one brings
			// first back.
			return answered(f) && slices.Equal(f.handler.Snapshot().Forwarder().Down(), []string{second.addr})
		}, 10*time.Second, 50*time.Millisecond, "the refusing upstream marked down, the other up")
	}

	t.Run("upstream_health_check names the upstreams' own name", func(t *testing.T) {
		first, second := startInternalOnly(t), startInternalOnly(t)
		f := govFence(t, extra+"\n"+corpCheck, first.addr, second.addr)
		markDown(t, f, first, second)
		checks := second.check.Load()
		require.Eventually(t, func() bool { return second.check.Load() >= checks+2 }, 10*time.Second, 20*time.Millisecond)
		assert.Contains(t, f.handler.Snapshot().Forwarder().Down(), second.addr, "a REFUSED to the health check fails it")

		second.broken.Store(false)
		require.Eventually(t, func() bool { return len(f.handler.Snapshot().Forwarder().Down()) == 0 },
			10*time.Second, 20*time.Millisecond, "back up once its probe of corp.example. SOA is answered")
		assert.Zero(t, first.root.Load()+second.root.Load(), "the root NS query is never asked")
	})

	t.Run("the root NS query, then a reload that sets upstream_health_check", func(t *testing.T) {
		first, second := startInternalOnly(t), startInternalOnly(t)
		f := govFence(t, extra, first.addr, second.addr)
		markDown(t, f, first, second)
		second.broken.Store(false)
		probed := second.root.Load()
		require.Eventually(t, func() bool { return second.root.Load() >= probed+3 }, 10*time.Second, 20*time.Millisecond,
			"probed with the root NS query")
		require.True(t, answered(f), "answered by the first")
		assert.Equal(t, []string{second.addr}, f.handler.Snapshot().Forwarder().Down(),
			"still down: its probe's root NS query is answered SERVFAIL, while it answers every other name")

		before := f.handler.Snapshot().Forwarder()
		path := f.handler.Snapshot().Config.File
		text := fmt.Sprintf(govConfig, extra+"\n"+corpCheck)
		text = strings.ReplaceAll(text, "{{upstreams}}", fmt.Sprintf("[%q, %q]", first.addr, second.addr))
		require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
		r := NewReloader(zap.NewNop(), f.handler, func() (*config.Config, error) { return config.Load(path) })
		require.NoError(t, r.Reload(false))
		after := f.handler.Snapshot().Forwarder()
		require.NotSame(t, before, after, "a new forwarder for the new health check")
		assert.Equal(t, "corp.example. SOA", after.HealthCheck().String())
		assert.Contains(t, after.Down(), second.addr, "what was learnt is kept")

		require.True(t, answered(f), "starts the new forwarder: it probes the down upstream")
		require.Eventually(t, func() bool { return len(f.handler.Snapshot().Forwarder().Down()) == 0 },
			10*time.Second, 20*time.Millisecond, "back up once its probe of corp.example. SOA is answered")
		assert.Positive(t, second.check.Load())
	})
}

// TestHealthCheckTypeIsAsked: every type upstream_health_check takes is
// one dnsfence itself forwards (not MetaQType, which it, as Unbound and
// NSD, answers FORMERR): a type an upstream answers FORMERR would fail
// every probe of every upstream, keeping them down and /readyz 503. Each
// mnemonic miekg/dns knows is tried, so that a meta type it learns later
// (NXNAME, 128, RFC 9824) is held to the same rule.
func TestHealthCheckTypeIsAsked(t *testing.T) {
	for s, qtype := range dns.StringToType {
		got, err := upstream.HealthCheckType(s)
		if err != nil {
			continue
		}
		assert.Equal(t, qtype, got, s)
		assert.False(t, MetaQType(got), "%s (%d) is taken as the health check's type, but dnsfence answers it FORMERR", s, got)
		assert.NotContains(t, []uint16{dns.TypeAXFR, dns.TypeIXFR, dns.TypeANY}, got, s)
	}
}
