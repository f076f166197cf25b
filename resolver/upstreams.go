package resolver

import (
	"errors"
	"fmt"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/upstream"
)

// ConnectUpstreams gives snap, which must not be published yet, the
// forwarder to the upstreams its configuration names: those written, with
// every resolv.conf path read for its nameservers (FallbackUpstreams for
// the embedded default when they name none). prev is the snapshot served
// until snap is published (nil at start): its forwarder is kept when the
// upstreams, upstream_timeout and upstream_strategy are unchanged, else
// the new one inherits what it learnt of the upstreams both name
// (upstream.Rebuild). Exchanges are counted into m (nil: not counted).
//
// Serve calls it for its first snapshot and the Reloader for each it
// publishes; whoever publishes snap then retires a forwarder that snap
// replaced (Reloader.ReloadFor does). It fails when no usable upstream is
// left or a resolv.conf cannot be read.
func ConnectUpstreams(snap, prev *Snapshot, m *Metrics) error {
	cfg := snap.Config
	addrs, err := cfg.ResolveUpstreams()
	if err != nil {
		return err
	}
	if len(addrs) == 0 && cfg.Embedded {
		addrs = FallbackUpstreams
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%s: upstreams: no usable upstream", cfg.File)
	}
	opts := upstream.Options{
		Timeout: cfg.UpstreamTimeout,
		Fastest: cfg.UpstreamStrategy == config.StrategyFastest,
	}
	if m != nil {
		opts.Metrics = m.upstreamMetrics
	}
	var old *upstream.Forwarder
	if prev != nil {
		old = prev.fwd
	}
	fwd, err := upstream.Rebuild(old, addrs, opts)
	if err != nil {
		return fmt.Errorf("%s: upstreams: %w", cfg.File, err)
	}
	snap.fwd = fwd
	return nil
}

// retireForwarder retires the forwarder of prev when next, now published,
// has another: queries that still hold prev finish on it, or go to next's,
// and its sockets close once they are done (upstream.Forwarder.Retire).
func retireForwarder(prev, next *Snapshot) {
	if prev != nil && prev.fwd != nil && prev.fwd != next.fwd {
		prev.fwd.Retire(next.fwd)
	}
}

// errNoForwarder is the readiness of a snapshot that no ConnectUpstreams
// gave a forwarder.
var errNoForwarder = errors.New("no upstreams connected")
