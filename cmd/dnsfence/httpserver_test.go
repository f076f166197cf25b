package main

import (
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestHTTPEndpointBoundsHeaders: a request whose header is larger than
// any scrape or probe sends is refused with 431, not read into memory up
// to net/http's default of 1 MiB; an ordinary one is served.
func TestHTTPEndpointBoundsHeaders(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	stop, err := serveHTTP(zap.New(core), "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	require.NoError(t, err)
	defer stop()
	listening := logs.FilterMessage("http endpoint listening").All()
	require.Len(t, listening, 1)
	url := "http://" + listening[0].ContextMap()["address"].(string) + "/metrics"

	get := func(header string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		req.Header.Set("X-Padding", header)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get("scrape"))
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, get(strings.Repeat("x", 64<<10)))
}

// enobufsListener fails its first Accept with ENOBUFS, which net/http does
// not count as temporary.
type enobufsListener struct {
	net.Listener
	failed atomic.Bool
}

func (l *enobufsListener) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENOBUFS)}
	}
	return l.Listener.Accept()
}

// TestHTTPEndpointOutlivesAcceptFailures: one accept(2) failing with
// ENOBUFS (the kernel short of buffers a moment) stopped the /metrics,
// /healthz and /readyz endpoint for good, logged "http endpoint stopped",
// while dnsfence served on: every scrape and probe after it failed. The
// failure is now waited out and logged at warn level, and the endpoint
// answers.
func TestHTTPEndpointOutlivesAcceptFailures(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	core, logs := observer.New(zap.InfoLevel)
	stop := serveHTTPOn(zap.New(core), &enobufsListener{Listener: inner}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	defer stop()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + inner.Addr().String() + "/healthz")
	require.NoError(t, err, "served after the failed accept")
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	warned := logs.FilterMessage("accepting a TCP connection").All()
	require.Len(t, warned, 1)
	assert.Equal(t, zap.WarnLevel, warned[0].Level)
	assert.Contains(t, warned[0].ContextMap()["error"], "no buffer space")
	assert.Empty(t, logs.FilterMessage("http endpoint stopped").All())
}

// TestHTTPEndpointStopIsNoError: the endpoint's ordinary stop (serve's
// at SIGTERM) logs no "http endpoint stopped" error, as net/http returns
// ErrServerClosed then (checked once the stop has returned, which waits
// for the server's goroutine); a listener closed under the server, which
// no stop asked for, is logged at error level.
func TestHTTPEndpointStopIsNoError(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	c := &http.Client{Timeout: 5 * time.Second}

	ln, err := net.Listen("tcp", "127.0.168.30:0")
	require.NoError(t, err)
	core, logs := observer.New(zap.InfoLevel)
	stop := serveHTTPOn(zap.New(core), ln, ok)
	resp, err := c.Get("http://" + ln.Addr().String() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	stop()
	assert.Empty(t, logs.FilterMessage("http endpoint stopped").All(), "an ordinary stop")
	assert.Empty(t, logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zap.WarnLevel }).All())

	ln, err = net.Listen("tcp", "127.0.168.30:0")
	require.NoError(t, err)
	core, logs = observer.New(zap.InfoLevel)
	stop = serveHTTPOn(zap.New(core), ln, ok)
	require.NoError(t, ln.Close()) // under the server, as no stop does
	require.Eventually(t, func() bool { return logs.FilterMessage("http endpoint stopped").Len() > 0 }, 10*time.Second, 5*time.Millisecond,
		"a listener closed under the server")
	stop()
	stopped := logs.FilterMessage("http endpoint stopped").All()
	require.Len(t, stopped, 1)
	assert.Equal(t, zap.ErrorLevel, stopped[0].Level)
	assert.Contains(t, stopped[0].ContextMap()["error"], "use of closed network connection")
}

// TestHTTPEndpointTakenPort: the http address held by another program
// stops the start of a configuration file (an error line, ok false), but
// not the embedded default's, which serves DNS without the endpoint (the
// port may be taken on a laptop) and says so at warn.
func TestHTTPEndpointTakenPort(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.168.70:0")
	require.NoError(t, err)
	defer held.Close()
	addr := held.Addr().String()
	h := http.NotFoundHandler()

	core, logs := observer.New(zap.InfoLevel)
	stop, ok := startHTTPEndpoint(zap.New(core), &config.Config{Embedded: true, HTTP: &addr}, h)
	require.True(t, ok, "the embedded default starts without it")
	stop()
	warned := logs.FilterMessage("metrics and health endpoint not started: the embedded default serves DNS without it").All()
	if assert.Len(t, warned, 1, "%v", logs.All()) {
		assert.Equal(t, zap.WarnLevel, warned[0].Level)
		assert.Equal(t, addr, warned[0].ContextMap()["address"])
		assert.Contains(t, warned[0].ContextMap()["error"], "address already in use")
	}

	core, logs = observer.New(zap.InfoLevel)
	_, ok = startHTTPEndpoint(zap.New(core), &config.Config{HTTP: &addr}, h)
	assert.False(t, ok, "a configuration file's start stops")
	failed := logs.FilterMessage("starting the HTTP endpoint").All()
	if assert.Len(t, failed, 1, "%v", logs.All()) {
		assert.Equal(t, zap.ErrorLevel, failed[0].Level)
	}
	assert.Empty(t, logs.FilterMessage("metrics and health endpoint not started: the embedded default serves DNS without it").All())
}
