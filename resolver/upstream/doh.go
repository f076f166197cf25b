package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
)

// dohMediaType is the media type of DNS messages in DoH (RFC 8484 §6).
const dohMediaType = "application/dns-message"

// HTTP connection upkeep for DoH.
const (
	// dohIdleTimeout closes a connection that carried no request for so long.
	dohIdleTimeout = 60 * time.Second
	// dohPingAfter is how long a connection may stay silent before an
	// HTTP/2 PING checks it is still there, so that a dead connection is
	// found before a query is lost on it.
	dohPingAfter = 15 * time.Second
	// dohHTTP1Conns is how many connections an upstream that speaks only
	// HTTP/1.1 gets: the queries in flight to it at once, as each
	// connection carries one request at a time.
	dohHTTP1Conns = 16
)

// HTTPStatusError is a DoH answer whose HTTP status is not a success
// (2xx, RFC 8484 §4.2.1). It is an ErrProtocol.
type HTTPStatusError struct {
	Status int // the HTTP status code: 404, 502...
}

func (e *HTTPStatusError) Error() string {
	return fmt.Sprintf("http status %d %s", e.Status, http.StatusText(e.Status))
}

// Unwrap makes an HTTPStatusError an ErrProtocol.
func (e *HTTPStatusError) Unwrap() error { return ErrProtocol }

// dohTransport sends queries to one DNS-over-HTTPS upstream (RFC 8484) as
// POST requests of application/dns-message with ID 0 (§4.1), over HTTP/2
// where the upstream offers it (RFC 8484 §5.2), many queries as streams of
// one kept connection. The request goes to https://NAME[:PORT]/PATH, NAME
// being the name the certificate must carry; the connection goes to the
// address's host (an IP, or a name looked up through Options.Resolve). Only
// an answer with a 2xx status, content type application/dns-message and a
// body of at most 65,535 octets is taken; redirects are not followed. An
// answer's TTLs are shortened by its Age header (RFC 8484 §5.1). A query on
// a kept connection that breaks is sent once more on a new one. An upstream
// that answers over HTTP/1.1, which has no streams, gets up to
// dohHTTP1Conns connections from then on, so that a query waiting for a
// slow answer does not hold up every other.
type dohTransport struct {
	addr Address
	url  string
	tr   *http.Transport // HTTP/2 over one connection (HTTP/1.1 until http1 is set)
	// tr1 is HTTP/1.1 alone over up to dohHTTP1Conns connections, used once
	// the upstream answered over HTTP/1.1 (http1 set).
	tr1     *http.Transport
	http1   atomic.Bool
	timeout time.Duration
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	life    context.Context // ends at Close: ends the requests in flight
	stop    context.CancelFunc

	// mu guards conns, every connection dial made that is not closed yet,
	// for Close to close: net/http keeps a connection whose request was
	// cancelled in its idle pool, and goes on with a dial (and its TLS
	// handshake) after the request that started it ended.
	mu     sync.Mutex
	conns  map[*dohConn]struct{}
	closed bool
	// failed is the last connection attempt's error (a dial or a TLS
	// handshake), and failedAt when it came; nil once one succeeds. The
	// queries that began before it get it instead of trying again in
	// turn (dialTLS), as the query that made it does: each its share of
	// one failure of the upstream (sharedFailure). Guarded by mu.
	failed   error
	failedAt time.Time
	// connectedAt is when the last connection attempt succeeded: an
	// attempt that began before it and fails after it (another connection
	// of tr1's, a slow lookup) is shared with no one, as the upstream has
	// answered since. Guarded by mu.
	connectedAt time.Time
}

// dohStartKey is the context key of the time an Exchange began, which
// dialTLS reads from the context net/http dials with.
type dohStartKey struct{}

// dohConn is a connection of a dohTransport, which Close closes.
type dohConn struct {
	net.Conn
	t    *dohTransport
	once sync.Once
	// answered is when a response last came in on the connection (the
	// connect's end before the first). HTTP/2 PINGs are answered below
	// the requests, so a server that no longer answers them on a
	// connection keeps it from being found dead.
	answered lastAnswer
}

// Close closes the connection and forgets it.
func (c *dohConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

func newDoH(addr Address, opts Options) *dohTransport {
	life, stop := context.WithCancel(context.Background())
	authority := addr.ServerName
	if addr.Port != DoHPort {
		authority = net.JoinHostPort(authority, strconv.Itoa(int(addr.Port)))
	} else if ip, err := netip.ParseAddr(authority); err == nil && ip.Is6() {
		authority = "[" + authority + "]"
	}
	t := &dohTransport{
		addr:    addr,
		url:     "https://" + authority + addr.Path,
		timeout: opts.Timeout,
		resolve: opts.Resolve,
		life:    life,
		stop:    stop,
		conns:   map[*dohConn]struct{}{},
	}
	if t.resolve == nil {
		t.resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	tlsConf := clientTLS(addr.ServerName, opts.RootCAs, "h2", "http/1.1")
	t.tr = &http.Transport{
		Proxy:             nil, // never HTTPS_PROXY from the environment
		DialTLSContext:    t.dialTLS(tlsConf),
		ForceAttemptHTTP2: true,
		// One connection: queries that arrive together before it is up
		// wait for it rather than each dialling its own, and then share
		// it as HTTP/2 streams. (HTTP/2 still opens another when the
		// upstream's MAX_CONCURRENT_STREAMS is reached; an upstream that
		// answers over HTTP/1.1 is asked through tr1 from then on.)
		MaxConnsPerHost:        1,
		IdleConnTimeout:        dohIdleTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  dohPingAfter,
			PingTimeout:      opts.Timeout,
			WriteByteTimeout: opts.Timeout,
		},
	}
	tls1 := tlsConf.Clone() // the same session cache: a new connection resumes
	tls1.NextProtos = []string{"http/1.1"}
	var h1 http.Protocols
	h1.SetHTTP1(true)
	t.tr1 = &http.Transport{
		Proxy:                  nil,
		DialTLSContext:         t.dialTLS(tls1),
		Protocols:              &h1,
		MaxConnsPerHost:        dohHTTP1Conns,
		MaxIdleConnsPerHost:    dohHTTP1Conns,
		IdleConnTimeout:        dohIdleTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
	return t
}

// Address is the upstream as configured:
// "https://9.9.9.9/dns-query#dns.quad9.net".
func (t *dohTransport) Address() string { return t.addr.String() }

// dialTLS is the DialTLSContext of a transport with the TLS configuration
// conf: dial, then the TLS handshake, within the upstream timeout. Queries
// that wait together for a connection (behind MaxConnsPerHost) are handed
// one at a time to it by net/http; when an attempt fails, those that began
// before it get its error rather than each making one of their own, as the
// queries waiting for a DoT or DoQ dial do.
func (t *dohTransport) dialTLS(conf *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		start, _ := ctx.Value(dohStartKey{}).(time.Time)
		t.mu.Lock()
		failed := t.failed
		if failed != nil && !t.failedAt.After(start) {
			failed = nil // from before this query: try again
		}
		t.mu.Unlock()
		if failed != nil {
			return nil, failed // one failed attempt is one failure of the upstream
		}
		// net/http dials on after the request is cancelled (for a later
		// one to use); the handshake is bounded here, as
		// TLSHandshakeTimeout would have done.
		ctx, cancel := context.WithTimeout(ctx, t.timeout)
		defer cancel()
		began := time.Now()
		conn, err := t.dial(ctx, network, addr)
		if err == nil {
			tc := tls.Client(conn, conf)
			if err = tc.HandshakeContext(ctx); err == nil {
				t.mu.Lock()
				t.failed, t.connectedAt = nil, time.Now()
				t.mu.Unlock()
				return tc, nil
			}
			_ = conn.Close()
		}
		t.mu.Lock()
		if !t.connectedAt.After(began) {
			err = new(sharedFailure).share(err)
			t.failed, t.failedAt = err, time.Now()
		}
		t.mu.Unlock()
		return nil, err
	}
}

// dial connects to the upstream's host: its IP, or each address its name
// has in turn until one answers. The address net/http asks for (the
// server name) is only the key of its connection pool.
func (t *dohTransport) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(t.addr.Host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		if addrs, err = t.resolve(ctx, t.addr.Host); err != nil {
			return nil, fmt.Errorf("looking up %s: %w", t.addr.Host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("looking up %s: no address", t.addr.Host)
		}
	}
	var d net.Dialer
	var errs []error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, netip.AddrPortFrom(a.Unmap(), t.addr.Port).String())
		if err == nil {
			return t.keep(conn)
		}
		errs = append(errs, err)
		if ContextErr(ctx) != nil {
			break
		}
	}
	return nil, typedDialError(errors.Join(errs...))
}

// keep adds conn to the connections Close closes, or closes it when the
// transport is closed.
func (t *dohTransport) keep(conn net.Conn) (net.Conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = conn.Close()
		return nil, ErrClosed
	}
	c := &dohConn{Conn: conn, t: t}
	c.answered.mark(time.Now())
	t.conns[c] = struct{}{}
	return c, nil
}

// Exchange sends q and waits for its answer (see Transport and
// dohTransport). Errors are those listed at ErrProtocol.
func (t *dohTransport) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if t.life.Err() != nil {
		return nil, ErrClosed
	}
	wq, err := packPadded(q, false)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	defer context.AfterFunc(t.life, cancel)()
	ctx = context.WithValue(ctx, dohStartKey{}, time.Now())
	var broken error
	for try := 0; ; try++ {
		resp, gotConn, err := t.post(ctx, wq)
		switch {
		case err == nil:
			return resp, nil
		case t.life.Err() != nil:
			return nil, ErrClosed
		case ContextErr(ctx) != nil:
			return nil, exchangeCtxError(ctx, "dns over https", broken)
		case !gotConn || errors.Is(err, ErrProtocol) || errors.Is(err, ErrAnswerRdata) || try == 1:
			// No connection (refused, a bad certificate), or the upstream
			// answered (a record miekg/dns does not read is the zone's):
			// nothing a new connection would change.
			return nil, err
		}
		broken = err
	}
}

// post sends one request. gotConn reports that it got as far as a
// connection (with its TLS handshake done): an error after that is the
// connection breaking or the upstream's answer being unusable. A request
// whose whole timeout passed with no response read on its connection, its
// own or another's, closes the connection: the upstream stopped answering
// on it, and the next query dials anew rather than time out on it too
// (requests still in flight on it are sent once more on the new one).
func (t *dohTransport) post(ctx context.Context, wq *wireQuery) (_ *dns.Msg, gotConn bool, err error) {
	var got atomic.Bool
	var conn atomic.Pointer[dohConn]
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			got.Store(true)
			if tc, ok := info.Conn.(*tls.Conn); ok {
				if c, ok := tc.NetConn().(*dohConn); ok {
					conn.Store(c)
				}
			}
		},
	})
	defer func() {
		if c := conn.Load(); err != nil && c != nil && errors.Is(ContextErr(ctx), context.DeadlineExceeded) && c.answered.silent(time.Now(), t.timeout) {
			_ = c.Close()
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(wq.wire))
	if err != nil {
		return nil, false, fmt.Errorf("dns over https: %w", err)
	}
	req.Header.Set("Content-Type", dohMediaType)
	req.Header.Set("Accept", dohMediaType)
	tr := t.tr
	if t.http1.Load() {
		tr = t.tr1
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, got.Load(), fmt.Errorf("dns over https: %w", typedDialError(err))
	}
	defer resp.Body.Close()
	if c := conn.Load(); c != nil {
		c.answered.mark(time.Now())
	}
	if resp.ProtoMajor == 1 && !t.http1.Load() {
		// No HTTP/2 here: from now on, a connection per query in flight.
		t.http1.Store(true)
		t.tr.CloseIdleConnections()
	}
	// Any 2xx: "A successful HTTP response with a 2xx status code ... is
	// used for any valid DNS response" (RFC 8484 §4.2.1).
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
		return nil, true, fmt.Errorf("dns over https: %w", &HTTPStatusError{Status: resp.StatusCode})
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != dohMediaType {
		return nil, true, fmt.Errorf("dns over https: %w: content type %q, not %s", ErrProtocol, resp.Header.Get("Content-Type"), dohMediaType)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxStreamMessage+1))
	if err != nil {
		return nil, true, fmt.Errorf("dns over https: reading the answer: %w", err)
	}
	if len(body) > maxStreamMessage {
		return nil, true, fmt.Errorf("dns over https: %w: answer body over %d octets", ErrProtocol, maxStreamMessage)
	}
	m, err := wq.answer(body, 0)
	if rd, unread := errors.AsType[*RdataError](err); unread {
		// An answer miekg/dns does not read is aged in its octets.
		if age := httpAge(resp.Header.Get("Age")); age > 0 {
			ageWire(rd.Raw, age)
		}
	}
	if err != nil {
		return nil, true, fmt.Errorf("dns over https: %w", err)
	}
	if age := httpAge(resp.Header.Get("Age")); age > 0 {
		ageTTLs(m, age)
	}
	return m, true, nil
}

// httpAge is the seconds an Age header field value says an answer spent in
// HTTP caches (RFC 9111 §5.1): its delta-seconds, 2^31 when larger (§1.2.2),
// and 0 when there is none or it is not a number of seconds.
func httpAge(v string) uint32 {
	v = strings.TrimSpace(v)
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > 1<<31 { // only digits: the error is too many of them
		return 1 << 31
	}
	return uint32(n)
}

// ageTTLs takes age seconds off the TTL of every record of m, down to 0
// (RFC 8484 §5.1: "DoH clients MUST account for the Age response header
// field's value [RFC7234] when calculating the DNS TTL of a response"):
// they were that old when they arrived. OPT is no record with a TTL (its
// TTL field holds flags), and a TTL with its top bit set is left for the
// cache to read as 0 (RFC 2181 §8). The TTL of an SOA in the authority
// section is first brought down to its MINIMUM: a negative answer holds
// for the smaller of the two (RFC 2308 §5), and the age is taken off that,
// or an NXDOMAIN 250 s old with MINIMUM 300 would deny the name for 300 s
// more rather than 50. The MINIMUM itself is left as the zone signed it
// (an RRSIG covers it, not the TTL), as a resolver's cache counts a
// negative answer down in the SOA's TTL.
func ageTTLs(m *dns.Msg, age uint32) {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok && soa.Hdr.Ttl < 1<<31 {
			soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			h := rr.Header()
			if h.Rrtype == dns.TypeOPT || h.Ttl >= 1<<31 {
				continue
			}
			h.Ttl -= min(h.Ttl, age)
		}
	}
}

// ageWire is ageTTLs for the answer b in wire form, which dnswire.Walk
// reads through (an RdataError's): the TTLs in its octets.
func ageWire(b []byte, age uint32) {
	q, ok := dnswire.ReadQuestion(b)
	if !ok {
		return
	}
	dnswire.Walk(b, q.End, func(r dnswire.Record) bool {
		ttl := r.TTL
		if r.Type == dnswire.TypeOPT || ttl >= 1<<31 {
			return true
		}
		if r.Section == dnswire.Authority && r.Type == dnswire.TypeSOA {
			ttl = min(ttl, dnswire.SOAMinimum(b, r))
		}
		binary.BigEndian.PutUint32(b[r.TTLOff:], ttl-min(ttl, age))
		return true
	})
}

// Close closes the connections, those in use and those still being made
// too; queries in flight get ErrClosed.
func (t *dohTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := make([]*dohConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	t.stop()
	for _, c := range conns {
		_ = c.Close()
	}
	t.tr.CloseIdleConnections()
	t.tr1.CloseIdleConnections()
	return nil
}
