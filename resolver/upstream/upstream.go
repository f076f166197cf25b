// Package upstream forwards queries to upstream resolvers over plain DNS,
// TLS, HTTPS and QUIC behind one interface, with health, failover and
// connection reuse (DESIGN.md §7, §8).
package upstream

import (
	"context"

	"github.com/miekg/dns"
)

// Transport exchanges queries with one upstream resolver.
type Transport interface {
	// Exchange sends q and returns the upstream's answer, matched to q by
	// ID and question. q is not modified: a copy is sent when its ID,
	// EDNS options or padding must change, and the answer carries q's ID.
	// Exchange returns ctx's error when ctx ends first, and an error
	// wrapping net.ErrClosed after Close.
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
	// Address is the upstream as configured, for logs and metrics:
	// "9.9.9.9:53", "tls://9.9.9.9:853#dns.quad9.net".
	Address() string
	// Close closes the transport's connections; queries in flight fail.
	Close() error
}
