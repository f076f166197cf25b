package resolver

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/dnsfence/dnsfence/blocklist/source"
	"github.com/dnsfence/dnsfence/resolver/listen"
	"github.com/dnsfence/dnsfence/resolver/upstream"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultReadyWindow is how recently an upstream must have answered for
// /readyz to say ready without probing.
const DefaultReadyWindow = 30 * time.Second

// HTTPHandler serves /metrics, /healthz, /startupz and /readyz.
//
// /healthz: the process serves (200 as long as it can answer HTTP), from
// before the lists load, so that a liveness probe never restarts a start
// that waits for a list being written or a remote list's first copy.
// /startupz: 200 once every listener answers DNS (Handler.Serving), 503
// before, and 503 again while a listener that only a restart brings back
// has stopped serving on its own (Handler.started): what a startup probe
// waits for, a native sidecar's above all,
// whose app starts once it passes and asks its first names at once (on
// /healthz it started while dnsfence loaded its lists, and its queries
// were refused by a closed port). Upstreams do not count: an upstream
// down at a pod's start shows as SERVFAIL, not as an app that never
// starts.
// /readyz: 200 once every configured list and range file has loaded, every
// remote list has a copy (from the network or its disk copy), and an
// upstream answered within the ready window (a quiet resolver probes its
// upstreams on demand, each asked the health check, upstream_health_check:
// the root NS set by default, which an internal-only upstream may answer
// SERVFAIL or REFUSED); 503 with the reason otherwise. It is 503 too once
// reloads have failed or been held for reload.unready_after: the state
// served is older than the files, and the body says why; and 503 from the
// moment the process starts shutting down (Handler.Stopping), and once a
// listener has stopped serving on its own (Handler.ListenerStopped). A ready answer
// names a reload failing or held for less time, the remote lists served
// from a last good copy or whose disk copy cannot be kept, and the files
// that are not watched for changes, if any.
func HTTPHandler(h *Handler, gatherer prometheus.Gatherer, readyWindow time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /startupz", func(w http.ResponseWriter, _ *http.Request) {
		started, reason := h.started()
		if !started {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, reason)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, reason := h.ready(r.Context(), readyWindow)
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, reason)
	})
	return mux
}

// ListenerStopped records that the transport's listener at addr stopped
// serving for err (listen.Config.Stopped): /readyz answers 503, naming it,
// until it serves again (ListenerResumed; a DNS over QUIC listener is
// opened again) or a restart, so that a load balancer or an anycast health
// check takes out an instance whose DNS over QUIC or HTTPS clients get no
// answer, where it said ready while the error log alone told.
func (h *Handler) ListenerStopped(transport, addr string, err error) {
	remedy := "restart dnsfence"
	if transport == listen.QUIC {
		remedy = "it is being opened again"
	}
	h.listenersMu.Lock()
	defer h.listenersMu.Unlock()
	if h.listenersStopped == nil {
		h.listenersStopped = map[string]string{}
	}
	h.listenersStopped[transport+" "+addr] = fmt.Sprintf("the %s listener on %s stopped: %v; %s", transport, addr, err, remedy)
}

// ListenerResumed records that the transport's listener at addr, which
// ListenerStopped told of, serves again (listen.Config.Resumed).
func (h *Handler) ListenerResumed(transport, addr string) {
	h.listenersMu.Lock()
	defer h.listenersMu.Unlock()
	delete(h.listenersStopped, transport+" "+addr)
}

// started reports, for /startupz, whether every listener answers DNS,
// and why not: not yet (Handler.Serving), or a listener stopped serving
// on its own that only a restart brings back (ListenerStopped; a DNS over
// QUIC one is opened again by itself and does not count). The image's
// Docker HEALTHCHECK asks /startupz, and Swarm or autoheal restart an
// unhealthy container: the restart such a listener's log line asks for,
// which /readyz, no longer asked there, used to get.
func (h *Handler) started() (bool, string) {
	if !h.serving.Load() {
		return false, "not started: loading the lists and client ranges, opening the listeners"
	}
	if stopped := h.stoppedListeners(false); stopped != "" {
		return false, "not serving: " + stopped
	}
	return true, "started: every listener answers"
}

// stoppedListeners is why each listener that stopped serving on its own
// stopped (ListenerStopped), sorted and joined by "; ", "" when none
// has: with withQUIC false, a DNS over QUIC listener, which is opened
// again by itself, is left out.
func (h *Handler) stoppedListeners(withQUIC bool) string {
	h.listenersMu.Lock()
	defer h.listenersMu.Unlock()
	var stopped []string
	for key, why := range h.listenersStopped {
		if withQUIC || !strings.HasPrefix(key, listen.QUIC+" ") {
			stopped = append(stopped, why)
		}
	}
	slices.Sort(stopped)
	return strings.Join(stopped, "; ")
}

// ready reports readiness and why.
func (h *Handler) ready(ctx context.Context, window time.Duration) (bool, string) {
	if h.stopping.Load() {
		return false, "not ready: shutting down: queries are answered through shutdown_delay, then the listeners close and those in flight finish"
	}
	snap := h.Snapshot()
	if snap == nil {
		return false, "not ready: lists and client ranges are still loading"
	}
	if stopped := h.stoppedListeners(true); stopped != "" {
		return false, "not ready: " + stopped
	}
	reloadTrouble := ""
	if st := h.reload.Load(); st != nil && !st.OK && !st.FailingSince.IsZero() {
		what := "failed"
		if st.Held {
			what = "been held"
		}
		failing := time.Since(st.FailingSince).Round(time.Second)
		reloadTrouble = fmt.Sprintf("reloads have %s for %s (since %s), serving the state loaded at %s: %v",
			what, failing, st.FailingSince.UTC().Format(time.RFC3339), snap.Loaded.UTC().Format(time.RFC3339), st.Err)
		if after := snap.Config.Reload.UnreadyAfter; after > 0 && time.Since(st.FailingSince) >= after {
			return false, fmt.Sprintf("not ready: %s; reload.unready_after is %s", reloadTrouble, after)
		}
	}
	missing, sourceTrouble := h.sourceReadiness()
	if missing != "" {
		return false, "not ready: " + missing
	}
	fwd := snap.Forwarder()
	if fwd == nil {
		return false, fmt.Sprintf("not ready: %v", errNoForwarder)
	}
	if last := fwd.LastAnswer(); last.IsZero() || time.Since(last) > window {
		if err := h.probe(ctx, fwd); err != nil {
			return false, fmt.Sprintf("not ready: no upstream answered in the last %s, nor the health check %s (upstream_health_check): %v", window, fwd.HealthCheck(), err)
		}
	}
	reason := fmt.Sprintf("ready: %s, %s, upstreams down: %d of %d",
		count(len(snap.Lists), "list", "lists"), count(len(snap.Policies), "policy", "policies"), len(fwd.Down()), len(fwd.Upstreams()))
	if reloadTrouble != "" {
		reason += "; " + reloadTrouble
	}
	if sourceTrouble != "" {
		// Still ready: the last good copy of each list is served.
		reason += "; " + sourceTrouble
	}
	if u := h.unwatched.Load(); u != nil && len(*u) > 0 {
		// Still ready: the loaded state is served; only edits wait.
		reason += fmt.Sprintf("; files not watched (edits apply at the once-a-minute look, or on SIGHUP): %s", strings.Join(*u, " "))
	}
	return true, reason
}

// probe probes fwd's upstreams for /readyz, each asked fwd's health check
// (upstream.Forwarder.Probe). Requests at once share one
// probe, so that readiness checks, however many, never send the upstreams
// more than one probe each at a time; it runs for the upstream timeout at
// most, whoever of its askers gives up.
func (h *Handler) probe(ctx context.Context, fwd *upstream.Forwarder) error {
	ch := h.readyProbes.DoChan(fmt.Sprintf("%p", fwd), func() (any, error) {
		pctx, cancel := context.WithTimeout(context.Background(), fwd.Timeout())
		defer cancel()
		return nil, fwd.Probe(pctx)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sourceReadiness says which remote lists have no copy yet (missing, which
// makes /readyz not ready), and which serve their last good copy because
// their server fails or their newest copy was refused or held, or whose
// disk copy cannot be kept (trouble, which does not).
func (h *Handler) sourceReadiness() (missing, trouble string) {
	rem := h.remote.Load()
	if rem == nil {
		return "", ""
	}
	if names := source.Missing(rem.srcs); len(names) > 0 {
		var none []string
		for _, src := range rem.srcs {
			if st := src.Status(); slices.Contains(names, st.Name) {
				why := "no copy yet"
				if st.LastError != nil {
					why = fmt.Sprintf("no copy yet, last error: %v", st.LastError)
				}
				none = append(none, fmt.Sprintf("%s (%s)", st.Name, why))
			}
		}
		missing = "remote lists without a copy (from the network or sources.cache_dir): " + strings.Join(none, "; ")
		if snap := h.state.Load(); snap != nil {
			var held []string
			for _, p := range snap.Policies {
				if !p.Ready() {
					held = append(held, fmt.Sprintf("%q", p.Name))
				}
			}
			if len(held) > 0 {
				missing += "; meanwhile SERVFAIL to the clients of policy " + strings.Join(held, ", ") + " (sources.servfail_until_ready)"
			}
		}
		return missing, ""
	}
	var notes []string
	for _, src := range rem.srcs {
		st := src.Status()
		if _, held := h.held.Load(st.Name); held {
			notes = append(notes, fmt.Sprintf("remote list %s: its newest copy is held by reload.max_shrink until SIGHUP; serving version %s", st.Name, st.Version))
		} else if st.LastError != nil {
			notes = append(notes, fmt.Sprintf("remote list %s: serving the last good copy (version %s, fetched %s) after %d failures: %v",
				st.Name, st.Version, st.VersionSince.UTC().Format(time.RFC3339), st.ConsecutiveFailures, st.LastError))
		}
		if st.CacheError != nil {
			// Served all the same; a restart while the server is down
			// would start without the list (dnsfence_source_cache_ok 0).
			notes = append(notes, fmt.Sprintf("remote list %s: no disk copy of the copy served in sources.cache_dir (a restart while its server is down would start without it): %v", st.Name, st.CacheError))
		}
	}
	return "", strings.Join(notes, "; ")
}

// count writes n with its noun: one (n is 1) or many.
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
