package listen

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// DoHPath is the URL path DNS over HTTPS is served on (RFC 8484 §4.1
// leaves it to the server; /dns-query is what every client defaults to).
const DoHPath = "/dns-query"

// DoHContentType is the media type of a DNS message over HTTP (RFC 8484
// §6).
const DoHContentType = "application/dns-message"

// maxDoHURI is the longest request target a DoH GET may have, in octets:
// RFC 9110 §4.1 asks servers to take at least 8000. A longer one gets 414
// URI Too Long; one that does not even fit in maxDoHHeaderBytes gets 431
// from net/http.
const maxDoHURI = 8000

// maxDoHHeaderBytes bounds a request's headers, request line included.
const maxDoHHeaderBytes = 16 << 10

// Defaults of DoHOptions.
const (
	DefaultDoHMaxConns          = 1000
	DefaultDoHMaxStreams        = 100
	DefaultDoHReadHeaderTimeout = 5 * time.Second
	DefaultDoHReadTimeout       = 10 * time.Second
	DefaultDoHWriteTimeout      = 20 * time.Second
	DefaultDoHIdleTimeout       = 60 * time.Second
)

// DoHOptions configures a DoHServer. Handler is required; a zero field
// takes the default named beside it.
type DoHOptions struct {
	// Handler answers the queries.
	Handler Handler
	// Count, when set, counts the requests the listener answers itself:
	// ResultBadRequest for every 4xx, "formerr" and "notimp" for the DNS
	// rejections of DESIGN.md §1 step 1, ResultDropped for a 503 after the
	// stop or past BodyBudget. Transport is HTTPS.
	Count Counter
	// Log gets net/http's own complaints (TLS handshake errors, panics)
	// at debug level. Nil: discarded.
	Log *zap.Logger
	// HandshakeFailed, when set, counts a connection whose TLS handshake
	// failed after the client sent something (Config.HandshakeFailed).
	HandshakeFailed func()
	// Closed, when set, counts a connection closed for what its client
	// did once admitted, by reason (Config.Closed).
	Closed func(reason string)
	// TLS is the server TLS configuration (ServerTLSConfig(store,
	// ALPNHTTP2, ALPNHTTP1)). Nil serves plain HTTP/1.1 and HTTP/2 with
	// prior knowledge (h2c), for an http:// listen address behind a
	// TLS-terminating proxy.
	TLS *tls.Config
	// Trusted reports whether a peer (unmapped, no zone) is a trusted
	// proxy, whose Forwarded or X-Forwarded-For header names the client.
	// Called per request, so a reload applies at once. Nil: nobody.
	Trusted func(netip.Addr) bool
	// Admit, when set, decides at accept whether a connection from peer
	// is served; release is called once when it closes. A refused
	// connection is reset at once.
	Admit func(peer netip.Addr) (release func(), ok bool)
	// MaxConns caps the connections open at once; at the cap the listener
	// is not accepted from, so new connections wait in the kernel's
	// backlog. Default DefaultDoHMaxConns.
	MaxConns int
	// MaxStreams is the HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS of each
	// connection: one client's connection cannot have more queries in
	// progress (RFC 9113 §5.1.2; streams beyond it are refused). Default
	// DefaultDoHMaxStreams.
	MaxStreams int
	// ReadHeaderTimeout bounds the TLS handshake and a request's headers;
	// a connection's first request must be in within twice it of the
	// accept, over HTTP/2 too (firstRequest). Default
	// DefaultDoHReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Default
	// DefaultDoHReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from its headers to the end of its
	// answer, the Handler's forwarding included. Default
	// DefaultDoHWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection with no request for that long.
	// Default DefaultDoHIdleTimeout.
	IdleTimeout time.Duration
	// BodyBudget bounds the octets of the POST bodies held while they
	// arrive, over all the listener's connections, past the first 512 of
	// each (queryBudget): a POST that would go past it is answered 503 and
	// counted dropped. Default DefaultQueryBudget.
	BodyBudget int64
}

// DoHServer serves DNS over HTTPS (RFC 8484) on DoHPath: GET with the
// query base64url-encoded (no padding) in dns=, and POST with an
// application/dns-message body, over HTTP/2 and HTTP/1.1 (without TLS,
// HTTP/2 with prior knowledge). Every answer is
// 200 with Content-Type application/dns-message and Cache-Control max-age
// from its TTLs, whatever its RCODE; requests that carry no usable query
// get 400, 404, 405, 413, 414 or 415.
type DoHServer struct {
	opt DoHOptions
	srv *http.Server
	// stopped is set by stopTaking: a request whose query ServeHTTP has
	// not taken by then gets 503, whatever connection it came on.
	stopped atomic.Bool
	// bodies holds the POST bodies arriving to opt.BodyBudget.
	bodies queryBudget
}

var _ http.Handler = (*DoHServer)(nil)

// NewDoHServer returns a DoHServer; Serve runs it.
func NewDoHServer(opt DoHOptions) *DoHServer {
	if opt.MaxConns <= 0 {
		opt.MaxConns = DefaultDoHMaxConns
	}
	if opt.MaxStreams <= 0 {
		opt.MaxStreams = DefaultDoHMaxStreams
	}
	if opt.ReadHeaderTimeout <= 0 {
		opt.ReadHeaderTimeout = DefaultDoHReadHeaderTimeout
	}
	if opt.ReadTimeout <= 0 {
		opt.ReadTimeout = DefaultDoHReadTimeout
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = DefaultDoHWriteTimeout
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = DefaultDoHIdleTimeout
	}
	if opt.BodyBudget <= 0 {
		opt.BodyBudget = DefaultQueryBudget
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	s := &DoHServer{opt: opt, bodies: queryBudget{max: opt.BodyBudget}}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(opt.TLS != nil)
	// Without TLS (a TLS-terminating proxy in front), HTTP/2 with prior
	// knowledge (h2c) too: a proxy that forwards the clients' HTTP/2 as
	// it is (HAProxy's proto h2, Envoy, Caddy's h2c://) speaks it, and it
	// is all Unbound's http-notls-downstream speaks. RFC 8484 §5.2: HTTP/2
	// is the minimum RECOMMENDED version for DoH.
	protocols.SetUnencryptedHTTP2(opt.TLS == nil)
	errLog, _ := zap.NewStdLogAt(opt.Log, zap.DebugLevel)
	s.srv = &http.Server{
		Handler:           s,
		TLSConfig:         opt.TLS,
		Protocols:         protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: opt.MaxStreams},
		ReadHeaderTimeout: opt.ReadHeaderTimeout,
		ReadTimeout:       opt.ReadTimeout,
		WriteTimeout:      opt.WriteTimeout,
		IdleTimeout:       opt.IdleTimeout,
		MaxHeaderBytes:    maxDoHHeaderBytes,
		ErrorLog:          errLog,
		ConnContext:       withCappedConn,
		ConnState:         s.connState,
	}
	return s
}

// connState counts, once net/http has closed it, a connection whose TLS
// handshake failed (handshakeFailed): net/http logs the failure, with no
// hook to count it. Not after the stop, which closes connections in their
// handshake too.
func (s *DoHServer) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed || s.opt.HandshakeFailed == nil || s.stopped.Load() {
		return
	}
	if tc, ok := c.(*tls.Conn); ok && handshakeFailed(tc) {
		s.opt.HandshakeFailed()
	}
}

// ParseDoHListen splits a listen_https address: "host:port" and
// "https://host:port" serve HTTPS, "http://host:port" plain HTTP (for a
// TLS-terminating proxy in front). It returns the host:port to listen on.
func ParseDoHListen(addr string) (hostport string, plain bool, err error) {
	if !strings.Contains(addr, "://") {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", false, fmt.Errorf("listen_https %q: %w", addr, err)
		}
		return addr, false, nil
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", false, fmt.Errorf("listen_https %q: %w", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.Port() == "" {
		return "", false, fmt.Errorf("listen_https %q: want host:port, https://host:port or http://host:port", addr)
	}
	return u.Host, u.Scheme == "http", nil
}

// Serve accepts connections on ln until Shutdown or Close, serving TLS
// when opt.TLS is set. It returns nil after Shutdown or Close, else the
// error that stopped it.
func (s *DoHServer) Serve(ln net.Listener) error {
	capped := newCappedListener(ln, s.opt.Log, s.opt.MaxConns, s.opt.Admit)
	capped.firstRequest = 2 * s.opt.ReadHeaderTimeout
	var err error
	if s.opt.TLS != nil {
		err = s.srv.ServeTLS(capped, "", "") // the certificate comes from TLSConfig
	} else {
		err = s.srv.Serve(capped)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, answers a request that arrives from now on
// 503 (stopTaking), lets the requests in progress finish (HTTP/2 clients
// get GOAWAY) and closes the connections, or gives up when ctx ends.
func (s *DoHServer) Shutdown(ctx context.Context) error {
	s.stopTaking()
	return s.srv.Shutdown(ctx)
}

// stopTaking answers every request whose query has not been taken yet
// (ServeHTTP checks before and after reading it) with 503 Service
// Unavailable and Connection: close (refuseStopped), without waiting.
// net/http's Shutdown alone does not stop a request that arrives on an
// open connection first: an HTTP/1.1 connection already reading its next
// request, or an HTTP/2 stream opened before the GOAWAY that Shutdown has
// the connection's goroutine send.
func (s *DoHServer) stopTaking() { s.stopped.Store(true) }

// Close closes the listener and every connection at once.
func (s *DoHServer) Close() error { return s.srv.Close() }

// ServeHTTP answers one DoH request.
func (s *DoHServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, _ := r.Context().Value(cappedConnKey{}).(*cappedConn)
	if conn != nil {
		conn.requested()
	}
	if s.stopped.Load() {
		s.refuseStopped(w)
		return
	}
	if r.URL.Path != DoHPath {
		http.NotFound(w, r)
		return
	}
	var msg []byte
	switch r.Method {
	case http.MethodGet:
		b, status, why := dohGETQuery(r)
		if status != 0 {
			s.refuse(w, status, why)
			return
		}
		msg = b
	case http.MethodPost:
		b, held, status, why := s.dohPOSTQuery(w, r)
		defer s.bodies.give(held)
		if why == whyBodyBusy {
			s.refuseBusy(w)
			return
		}
		if why == whyBodyUnread {
			s.refuseUnread(w)
			return
		}
		if status != 0 {
			s.refuse(w, status, why)
			return
		}
		msg = b
	default:
		w.Header().Set("Allow", "GET, POST")
		s.refuse(w, http.StatusMethodNotAllowed, "DNS over HTTPS takes GET and POST")
		return
	}
	remote, err := s.remoteAddr(r)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.stopped.Load() {
		// The stop came while the request was read (a POST's body): not
		// taken, as a TCP query half read at the stop is not.
		s.refuseStopped(w)
		return
	}
	chk := checkQuery(msg)
	if chk.req == nil && chk.reject == nil {
		s.refuse(w, http.StatusBadRequest, "not a DNS query")
		return
	}
	dw := &dohWriter{remote: remote, r: r}
	dw.received = msg
	if chk.reject != nil {
		answerReject(s.opt.Handler, dw, chk.reject, s.opt.Count)
	} else if resume := s.opt.Handler.ServeInline(dw, chk.req); resume != nil {
		resume()
	}
	reply, replyMsg := dw.held()
	if reply == nil && dw.writeFailed() {
		// The Handler's reply could not be taken: the server's fault.
		http.Error(w, "no answer", http.StatusInternalServerError)
		return
	}
	if reply == nil {
		// The Handler dropped the query (an RPZ rpz-drop trigger): over
		// HTTP something must be said, and it is a refusal by policy, not
		// a fault of the server (a 5xx), as dnsdist answers a query its
		// DropAction drops.
		http.Error(w, whyDropped, http.StatusForbidden)
		return
	}
	reply = padReply(paddedQuery(chk.req, msg), reply)
	if replyMsg == nil {
		replyMsg = new(dns.Msg)
		if replyMsg.Unpack(reply) != nil {
			replyMsg = new(dns.Msg) // no TTL known: max-age=0
		}
	}
	h := w.Header()
	h.Set("Content-Type", DoHContentType)
	h.Set("Content-Length", strconv.Itoa(len(reply)))
	// private: the answer is this client's (its policy decided it), and a
	// shared HTTP cache in front would hand it to others asking the same
	// URL (RFC 9111 §5.2.2.7; RFC 8484 §5.1 has GETs use ID 0, so one
	// question is one URL for everyone).
	h.Set("Cache-Control", "private, max-age="+strconv.FormatUint(uint64(cacheMaxAge(replyMsg)), 10))
	if conn != nil {
		// An HTTP/2 client that grants no flow-control credit for its
		// answers (RFC 9113 §5.2) while asking more: each would wait in
		// Write for the write timeout, up to MaxStreams of them.
		notReading := func() {
			if s.opt.Closed != nil {
				s.opt.Closed(ClosedNotReading)
			}
			// The socket, as the first-request timer closes it: net/http's
			// read fails and its close of conn gives the slot back once
			// its goroutines are done, not before.
			_ = conn.heardConn.Conn.Close()
		}
		if !conn.unread.take(len(reply), notReading) {
			return
		}
		defer conn.unread.done(len(reply))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(reply)
}

// dohGETQuery is the query of a GET: the dns parameter, base64url without
// padding (RFC 8484 §4.1, §6). A non-zero status says why there is none.
func dohGETQuery(r *http.Request) (msg []byte, status int, why string) {
	if len(r.RequestURI) > maxDoHURI {
		return nil, http.StatusRequestURITooLong, fmt.Sprintf("request target longer than %d octets", maxDoHURI)
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, http.StatusBadRequest, "bad query string"
	}
	v := q["dns"]
	switch {
	case len(v) == 0:
		return nil, http.StatusBadRequest, "missing dns parameter"
	case len(v) > 1:
		return nil, http.StatusBadRequest, "more than one dns parameter"
	case v[0] == "":
		return nil, http.StatusBadRequest, "empty dns parameter"
	case strings.ContainsAny(v[0], "\r\n="):
		// The decoder skips CR and LF; padding is not allowed (RFC 8484 §6).
		return nil, http.StatusBadRequest, "dns parameter is not base64url without padding"
	}
	msg, err = base64.RawURLEncoding.Strict().DecodeString(v[0])
	if err != nil {
		return nil, http.StatusBadRequest, "dns parameter is not base64url without padding"
	}
	return msg, 0, ""
}

// dohPOSTQuery is the query of a POST: its application/dns-message body of
// at most 65,535 octets (RFC 8484 §4.1, §6), and the octets of the budget
// it took (queryBudget.read), which the caller gives back once it has
// answered.
func (s *DoHServer) dohPOSTQuery(w http.ResponseWriter, r *http.Request) (msg []byte, held int64, status int, why string) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != DoHContentType {
		return nil, 0, http.StatusUnsupportedMediaType, "Content-Type must be " + DoHContentType
	}
	tooLarge := fmt.Sprintf("a DNS message is at most %d octets", dns.MaxMsgSize)
	if r.ContentLength > dns.MaxMsgSize {
		return nil, 0, http.StatusRequestEntityTooLarge, tooLarge
	}
	msg, held, err = s.bodies.read(http.MaxBytesReader(w, r.Body, dns.MaxMsgSize), dohFree)
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errQueryBudget):
		return nil, held, http.StatusServiceUnavailable, whyBodyBusy
	case errors.As(err, &mbe):
		return nil, held, http.StatusRequestEntityTooLarge, tooLarge
	case err != nil:
		return nil, held, http.StatusBadRequest, whyBodyUnread
	case len(msg) == 0:
		return nil, held, http.StatusBadRequest, "empty body"
	}
	return msg, held, 0, ""
}

// refuseStopped answers a request that came after stopTaking 503, counted
// as dropped (it gets no DNS answer). Connection: close ends an HTTP/1.1
// connection after it, and makes net/http send an HTTP/2 one's GOAWAY at
// once.
func (s *DoHServer) refuseStopped(w http.ResponseWriter) {
	s.count(ResultDropped)
	w.Header().Set("Connection", "close")
	http.Error(w, "server shutting down", http.StatusServiceUnavailable)
}

// refuse answers a request that carries no usable query, and counts it.
func (s *DoHServer) refuse(w http.ResponseWriter, status int, why string) {
	s.count(ResultBadRequest)
	http.Error(w, why, status)
}

// whyDropped is the body of the 403 to a query the Handler dropped.
const whyDropped = "query dropped by policy"

// whyBodyUnread is dohPOSTQuery's reason for a body that could not be
// read (refuseUnread).
const whyBodyUnread = "reading the body"

// whyBodyBusy is dohPOSTQuery's reason for a body past the listener's
// BodyBudget (refuseBusy).
const whyBodyBusy = "too many query octets being received; try again"

// refuseBusy answers 503 to a POST whose body would take the listener
// past its BodyBudget, counted as dropped (it gets no DNS answer), as
// Unbound resets the streams past http-query-buffer-size: a device that
// pads its queries to 468 octets (RFC 8467) never meets it.
func (s *DoHServer) refuseBusy(w http.ResponseWriter) {
	s.count(ResultDropped)
	http.Error(w, whyBodyBusy, http.StatusServiceUnavailable)
}

// refuseUnread answers 400 to a POST whose body could not be read, and
// counts it, unless the 400 cannot be sent: an HTTP/2 client that reset
// the stream (RST_STREAM) before its body ended, or whose connection
// ended, sent no bad request and gets no answer, as a DoQ client that
// cancels its stream (RFC 9250 §4.3.1) is not counted either. net/http
// has closed the stream by the time the body's read fails, so the flush
// fails.
func (s *DoHServer) refuseUnread(w http.ResponseWriter) {
	http.Error(w, whyBodyUnread, http.StatusBadRequest)
	if http.NewResponseController(w).Flush() == nil {
		s.count(ResultBadRequest)
	}
}

func (s *DoHServer) count(result string) {
	if s.opt.Count != nil {
		s.opt.Count(HTTPS, result)
	}
}

// remoteAddr is who is asking: the HTTP peer, or, when the peer is a
// trusted proxy that sent Forwarded or X-Forwarded-For, the client it
// names as a *ProxiedAddr. A trusted proxy's header that names no client
// address is an error (the request gets 400): the query is not answered
// for the wrong client.
func (s *DoHServer) remoteAddr(r *http.Request) (net.Addr, error) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil, fmt.Errorf("peer address %q: %w", r.RemoteAddr, err)
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap().WithZone(""), peer.Port())
	if s.opt.Trusted == nil || !s.opt.Trusted(peer.Addr()) {
		return net.TCPAddrFromAddrPort(peer), nil
	}
	client, ok, err := forwardedClient(r.Header, s.opt.Trusted)
	if err != nil {
		return nil, err
	}
	if !ok {
		return net.TCPAddrFromAddrPort(peer), nil
	}
	return &ProxiedAddr{TCPAddr: net.TCPAddrFromAddrPort(client), Proxy: peer}, nil
}

// forwardedClient finds the client in a trusted proxy's Forwarded (RFC
// 7239), X-Forwarded-For and X-Real-IP headers. Each proxy appends the
// address it saw, so a list is read from the right: the first entry that
// is not itself a trusted proxy is the client (entries further left may be
// anything the client wrote); when every entry is trusted, the leftmost.
// X-Real-IP is such a list of one entry, the address the nearest proxy saw
// (nginx's `proxy_set_header X-Real-IP $remote_addr`, as Technitium's and
// AdGuard Home's guides write it): a proxy set to write it alone had its
// devices' queries decided as its own, in no government range, and
// forwarded. ok is false when no header is present (an empty header
// line is none); an entry that is not an IP address ("unknown", an
// obfuscated node, garbage) is an error, and so is a Forwarded line that
// ends inside a quoted-string, which would hide what a proxy appended
// after it.
//
// When two headers are present, which one a proxy wrote is not known
// here: a proxy appends to one and passes the other through as the
// device sent it (nginx's $proxy_add_x_forwarded_for and HAProxy's
// forwardfor leave a Forwarded header alone, and a proxy that sets
// X-Real-IP alone passes a device's X-Forwarded-For through), so either
// may be the device's own choice of client. They must name the same
// client address (Forwarded's node is then the client: it may carry a
// port), or the request is an error (400). One exception: a header that
// names trusted proxies only, the same ones, in order, that end the other
// header's list (a chain whose nearer proxy writes X-Forwarded-For or
// X-Real-IP alone and whose farther one appends to both), names no
// client of its own; the other header's client is believed.
func forwardedClient(h http.Header, trusted func(netip.Addr) bool) (client netip.AddrPort, ok bool, err error) {
	var fwd, xff, xri []string
	for _, line := range h.Values("Forwarded") {
		elems, closed := splitQuoted(line, ',')
		if !closed {
			// Read as quoted text, what a proxy appended to this line
			// after the device's open quote would be lost, and the
			// device's own for= taken for the client.
			return client, false, errors.New("forwarded header: a quoted-string without its closing quote")
		}
		for _, elem := range elems {
			if strings.TrimSpace(elem) == "" {
				continue // an empty line, or a trailing comma
			}
			node, found := "", false
			pairs, _ := splitQuoted(elem, ';') // the line's quotes are closed, so each element's are
			for _, pair := range pairs {
				k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(k, "for") {
					node, found = unquote(v), true
				}
			}
			if !found {
				return client, false, errors.New("forwarded header: an element without for=")
			}
			fwd = append(fwd, node)
		}
	}
	for _, line := range h.Values("X-Forwarded-For") {
		for _, n := range strings.Split(line, ",") {
			if n = strings.TrimSpace(n); n != "" {
				xff = append(xff, n)
			}
		}
	}
	for _, line := range h.Values("X-Real-IP") {
		if n := strings.TrimSpace(line); n != "" {
			xri = append(xri, n) // one address a line: "a, b" is no address, an error
		}
	}
	believed := chain{}
	for _, hdr := range []struct {
		name  string
		nodes []string
	}{{"Forwarded", fwd}, {"X-Forwarded-For", xff}, {"X-Real-IP", xri}} {
		c, err := parseChain(hdr.nodes, trusted)
		if err != nil {
			return client, false, err
		}
		c.header = hdr.name
		if believed, err = bothName(believed, c); err != nil {
			return client, false, err
		}
	}
	if len(believed.nodes) == 0 {
		return client, false, nil
	}
	return believed.client(), true, nil
}

// bothName is the chain believed of a and b, two headers' chains (a the
// one believed of those read before b): the one that names a client when
// the other names only the trusted proxies that end it (or b is an
// X-Real-IP naming a trusted proxy, which a list passed on need not
// end with), else a when both name the same client address, else an
// error (see forwardedClient).
func bothName(a, b chain) (chain, error) {
	switch {
	case len(b.nodes) == 0:
		return a, nil
	case len(a.nodes) == 0:
		return b, nil
	case a.all && !b.all && b.endsWith(a.nodes):
		return b, nil
	case b.all && !a.all && (a.endsWith(b.nodes) || b.header == "X-Real-IP"):
		// An X-Real-IP naming a trusted proxy: the nearest proxy saw a
		// trusted one, which names the client in the list it appended
		// to, passed on with or without the nearest's entry (nginx's
		// X-Real-IP set, X-Forwarded-For left as it came).
		return a, nil
	case a.client().Addr() != b.client().Addr():
		return chain{}, fmt.Errorf("a trusted proxy's %s header names client %s and its %s %s", a.header, a.client().Addr(), b.header, b.client().Addr())
	}
	return a, nil
}

// chain is a forwarded-for list, parsed: at is the client's index (see
// forwardedClient).
type chain struct {
	nodes  []netip.AddrPort
	at     int
	all    bool   // every node is a trusted proxy
	header string // the header it was read from
}

// parseChain parses nodes and finds the client among them.
func parseChain(nodes []string, trusted func(netip.Addr) bool) (chain, error) {
	c := chain{nodes: make([]netip.AddrPort, len(nodes))}
	for i, n := range nodes {
		ap, err := parseNode(n)
		if err != nil {
			return chain{}, err
		}
		c.nodes[i] = ap
	}
	c.at = len(c.nodes) - 1
	for c.at > 0 && trusted(c.nodes[c.at].Addr()) {
		c.at--
	}
	c.all = len(c.nodes) > 0 && trusted(c.nodes[c.at].Addr())
	return c, nil
}

// client is the client the chain names (see forwardedClient).
func (c chain) client() netip.AddrPort { return c.nodes[c.at] }

// endsWith reports whether the trusted proxies after c's client end with
// the addresses of proxies, in order.
func (c chain) endsWith(proxies []netip.AddrPort) bool {
	after := c.nodes[c.at+1:]
	if len(proxies) > len(after) {
		return false
	}
	tail := after[len(after)-len(proxies):]
	for i, p := range proxies {
		if tail[i].Addr() != p.Addr() {
			return false
		}
	}
	return true
}

// parseNode parses one forwarded-for node: an IP address, optionally in
// brackets (IPv6) and with a port.
func parseNode(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), nil
	}
	t := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(t); err == nil {
		return netip.AddrPortFrom(a.Unmap().WithZone(""), 0), nil
	}
	return netip.AddrPort{}, fmt.Errorf("forwarded client %q is not an IP address", s)
}

// splitQuoted splits s at sep outside double-quoted strings (RFC 9110
// §5.6.4: a quoted-string runs to the next '"' not escaped by a
// backslash). closed is false when s ends inside a quoted-string: the
// header is malformed, and where the string was meant to end cannot be
// known.
func splitQuoted(s string, sep byte) (parts []string, closed bool) {
	quoted, escaped, start := false, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case escaped:
			escaped = false
		case c == '\\' && quoted:
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:]), !quoted
}

// unquote removes the quotes of an RFC 7230 quoted-string, and its
// backslash escapes.
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// heldReply keeps the one reply a Handler writes, for a listener that
// sends it when the Handler is done (an HTTP response, a QUIC stream).
type heldReply struct {
	mu    sync.Mutex
	reply []byte   // the first reply written; later ones are refused
	msg   *dns.Msg // reply parsed, when it came through WriteMsg
	// failed marks a reply written and not kept: it did not pack, or
	// was longer than 65,535 octets.
	failed bool
	// received is the message answered, as it came; set before the
	// Handler runs, never written after.
	received []byte
}

func (h *heldReply) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		h.mu.Lock()
		h.failed = true
		h.mu.Unlock()
		return err
	}
	return h.keep(b, m)
}

func (h *heldReply) Write(b []byte) (int, error) {
	if err := h.keep(append([]byte(nil), b...), nil); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h *heldReply) keep(b []byte, m *dns.Msg) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(b) > dns.MaxMsgSize {
		h.failed = true
		return errors.New("reply longer than 65,535 octets")
	}
	if h.reply != nil {
		return errors.New("a reply was already written")
	}
	h.reply, h.msg = b, m
	return nil
}

// held is the reply written, nil if none, and its parsed form when the
// Handler gave one.
func (h *heldReply) held() ([]byte, *dns.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reply, h.msg
}

// writeFailed reports whether the Handler wrote a reply that was not kept
// (WriteMsg's that did not pack, one over 65,535 octets): with no reply
// held, the query was not dropped but went unanswered by a fault.
func (h *heldReply) writeFailed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

// Received is the message as it came (Received): a signed NOTIFY's MAC
// covers it. It is the listener's until the request is answered.
func (h *heldReply) Received() []byte { return h.received }

func (h *heldReply) Close() error        { return nil }
func (h *heldReply) TsigStatus() error   { return nil }
func (h *heldReply) TsigTimersOnly(bool) {}
func (h *heldReply) Hijack()             {}

// dohWriter is the ResponseWriter of one DoH request.
type dohWriter struct {
	heldReply
	remote net.Addr
	r      *http.Request
}

var _ ResponseWriter = (*dohWriter)(nil)
var _ Received = (*dohWriter)(nil)
var _ dns.ConnectionStater = (*dohWriter)(nil)

func (w *dohWriter) Transport() string    { return HTTPS }
func (w *dohWriter) RemoteAddr() net.Addr { return w.remote }

// LocalAddr is the address the client sent the request to: its
// connection's local address, when the client connected itself. A request
// a proxy relayed went to the proxy's address, which is not known here:
// one on the plain-HTTP listener (only a TLS-terminating proxy in front
// uses it) or naming its client in Forwarded or X-Forwarded-For gets the
// unspecified address, as does one whose address net/http did not record.
// Discovery of Designated Resolvers hands out this address: the proxy's
// side of dnsfence, often loopback, would send the device elsewhere.
func (w *dohWriter) LocalAddr() net.Addr {
	if _, proxied := w.remote.(*ProxiedAddr); proxied || w.r.TLS == nil {
		return &net.TCPAddr{}
	}
	if a, ok := w.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return &net.TCPAddr{}
}

// ConnectionState is the request's TLS state; nil over plain HTTP.
func (w *dohWriter) ConnectionState() *tls.ConnectionState { return w.r.TLS }

// cappedListener accepts at most max connections open at once, each
// admitted by admit when it is set. At the cap Accept waits for a
// connection to close, so new ones wait in the kernel's backlog.
type cappedListener struct {
	net.Listener
	slots chan struct{}
	admit func(netip.Addr) (func(), bool)
	// firstRequest, when set, closes a connection that has not brought
	// its first request to ServeHTTP that long after its accept, as a
	// DNS over TCP connection without its first query is closed at
	// tcp_read_timeout (RFC 7766 §6.2.3: a server may close a connection
	// to free its resources). net/http bounds an HTTP/1.1 connection's
	// handshake and first request with ReadHeaderTimeout each, but waits
	// 10 s for an HTTP/2 client's preface whatever its timeouts, then
	// IdleTimeout for a request: a client could hold a place that long
	// without a query.
	firstRequest time.Duration
	closeOnce    sync.Once
	closed       chan struct{}
}

// newCappedListener caps ln's connections at max. Its Accept failures are
// waited out and logged to log (Patient), as the TCP listener's are.
func newCappedListener(ln net.Listener, log *zap.Logger, max int, admit func(netip.Addr) (func(), bool)) *cappedListener {
	return &cappedListener{Listener: Patient(ln, log), slots: make(chan struct{}, max), admit: admit, closed: make(chan struct{})}
}

// Accept returns the next connection admitted, once there is room for it.
// A failed Accept is waited out by the Patient listener below, so only the
// listener's close ends Serve.
func (l *cappedListener) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err // closed
		}
		release := func() {}
		if l.admit != nil {
			var peer netip.Addr
			if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
				peer = a.AddrPort().Addr().Unmap().WithZone("")
			}
			r, ok := l.admit(peer)
			if !ok {
				// Reset, not FIN: no TIME_WAIT kept for a refused peer.
				if tc, isTCP := c.(*net.TCPConn); isTCP {
					_ = tc.SetLinger(0)
				}
				c.Close()
				<-l.slots
				continue
			}
			release = r
		}
		cc := &cappedConn{heardConn: heardConn{Conn: c}, release: func() { release(); <-l.slots }}
		if l.firstRequest > 0 {
			// Closing the socket fails net/http's read, which then closes
			// cc and gives its place back.
			cc.silent = time.AfterFunc(l.firstRequest, func() { _ = c.Close() })
		}
		return cc, nil
	}
}

func (l *cappedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// cappedConn gives its slot back when closed, once, and notes whether
// the client sent anything (handshakeFailed).
type cappedConn struct {
	heardConn
	once    sync.Once
	release func()
	// silent, when set, closes the connection unless requested stops it
	// first (cappedListener.firstRequest).
	silent *time.Timer
	// unread counts the answers being written on the connection.
	unread unread
}

// requested records that a request of the connection reached ServeHTTP.
func (c *cappedConn) requested() {
	if c.silent != nil {
		c.silent.Stop()
	}
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.requested()
	c.once.Do(c.release)
	return err
}

// cappedConnKey is the request context key of the request's *cappedConn.
type cappedConnKey struct{}

// withCappedConn is the http.Server's ConnContext: it keeps the
// connection's *cappedConn (beneath TLS on https) in the context every
// request of the connection inherits, for ServeHTTP to mark it requested.
func withCappedConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*cappedConn); ok {
		return context.WithValue(ctx, cappedConnKey{}, cc)
	}
	return ctx
}
